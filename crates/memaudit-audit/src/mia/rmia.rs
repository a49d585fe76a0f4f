//! RMIA, the relative membership inference attack (Zarifzadeh, Liu, Shokri, ICML 2024).
//!
//! Signal Pr(x | θ) (a probability; the mean over queries when there are several). Pr(x) is the
//! mean over reference models: online, all of them (IN and OUT for x); offline, only the OUT ones,
//! corrected for the missing IN half by Pr(x) = ((1 + a) mean_OUT(x) + (1 - a)) / 2.
//! Score(x) = the fraction of population points z (no model trained on them) with
//! [Pr(x|θ) / Pr(x)] / [Pr(z|θ) / Pr(z)] > gamma.
//!
//! Pr(z) uses exactly the reference models that Pr(x) uses (for offline, x's OUT set, with the
//! same `a` correction): ML Privacy Meter v2 takes the top-k of 2k OUT values for z, which biases
//! Pr(z) upward relative to Pr(x); that quirk is designed out here. Everything is in log space so
//! sequence likelihoods of LMs do not underflow.
//!
//! `a` (offline): fixed when given; 0.3 (the authors') with fewer than 2 reference models;
//! otherwise tuned on 0, 0.1, ..., 1 by attacking one reference model with the others and keeping
//! the `a` of highest AUC.

use std::collections::HashMap;
use std::f64::consts::LN_2;

use serde::{Deserialize, Serialize};

use memaudit_accounting::special::log_add;

use super::config::RmiaConfig;
use super::data::ScoreSet;
use super::error::{MiaError, Result};
use super::metrics::Roc;
use super::signals::log_mean_exp;

/// Which RMIA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RmiaVariant {
    Online,
    Offline,
}

/// How `a` was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "how")]
pub enum AChoice {
    /// Given in the config.
    Fixed { a: f64 },
    /// Too few reference models (or no usable split) to tune on.
    Default { a: f64, reason: String },
    /// Tuned: AUC of each grid value attacking `reference` with the others.
    Tuned {
        a: f64,
        reference: usize,
        grid: Vec<(f64, f64)>,
    },
}

impl AChoice {
    /// The `a` in use.
    pub fn a(&self) -> f64 {
        match self {
            AChoice::Fixed { a } | AChoice::Default { a, .. } | AChoice::Tuned { a, .. } => *a,
        }
    }
}

/// RMIA's scores and, offline, how `a` was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmiaOutput {
    #[serde(skip)]
    pub scores: Vec<f64>,
    pub a: Option<AChoice>,
    pub population: usize,
}

/// log Pr(point | model): the mean probability over queries, in log space.
fn log_pr(set: &ScoreSet, values: impl Iterator<Item = f64>) -> f64 {
    let kind = set.signal_kind();
    let lp: Vec<f64> = values.map(|v| kind.log_probability(v)).collect();
    log_mean_exp(&lp)
}

/// log Pr(x) from the log-probabilities of the chosen reference models.
fn log_pr_reference(ref_lp: &[f64], variant: RmiaVariant, a: f64) -> f64 {
    let m = log_mean_exp(ref_lp);
    match variant {
        RmiaVariant::Online => m,
        RmiaVariant::Offline => log_add((1.0 + a).ln() + m, (1.0 - a).ln()) - LN_2,
    }
}

/// Scores for one `a`; `None` for an example with no reference model of the needed kind.
fn scores_with_a(
    set: &ScoreSet,
    variant: RmiaVariant,
    a: f64,
    gamma: f64,
) -> Result<Vec<Option<f64>>> {
    let pop = set.population().ok_or(MiaError::InputMissing {
        attack: "rmia",
        array: "population_target",
        what: "population points no model trained on",
    })?;
    let (n, q, k, nz) = (set.n(), set.queries(), set.shadows(), pop.n);
    let pop_target: Vec<f64> = (0..nz)
        .map(|z| log_pr(set, (0..q).map(|j| pop.target[z * q + j])))
        .collect();
    let pop_ref: Vec<Vec<f64>> = (0..k)
        .map(|m| {
            (0..nz)
                .map(|z| log_pr(set, (0..q).map(|j| pop.shadow[(m * nz + z) * q + j])))
                .collect()
        })
        .collect();
    // Sorted log ratios of the population under one set of reference models (cached per set).
    let mut sorted_z: HashMap<Vec<bool>, Vec<f64>> = HashMap::new();
    let ln_gamma = gamma.ln();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let refs: Vec<bool> = (0..k)
            .map(|m| variant == RmiaVariant::Online || !set.is_in(m, i))
            .collect();
        if !refs.iter().any(|r| *r) {
            out.push(None);
            continue;
        }
        let ref_lp: Vec<f64> = (0..k)
            .filter(|&m| refs[m])
            .map(|m| log_pr(set, (0..q).map(|j| set.shadow(m, i, j))))
            .collect();
        let target_lp = log_pr(set, (0..q).map(|j| set.target(i, j)));
        let ratio_x = target_lp - log_pr_reference(&ref_lp, variant, a);
        let zs = sorted_z.entry(refs.clone()).or_insert_with(|| {
            let mut v: Vec<f64> = (0..nz)
                .map(|z| {
                    let lp: Vec<f64> = (0..k).filter(|&m| refs[m]).map(|m| pop_ref[m][z]).collect();
                    pop_target[z] - log_pr_reference(&lp, variant, a)
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v
        });
        // LR(x, z) > gamma  <=>  log ratio_z < log ratio_x - ln gamma.
        let below = zs.partition_point(|&r| r < ratio_x - ln_gamma);
        out.push(Some(below as f64 / nz as f64));
    }
    Ok(out)
}

fn choose_a(set: &ScoreSet, cfg: &RmiaConfig) -> Result<AChoice> {
    if let Some(a) = cfg.a {
        return Ok(AChoice::Fixed { a });
    }
    let k = set.shadows();
    if k < 2 {
        return Ok(AChoice::Default {
            a: cfg.a_few_references,
            reason: format!("{k} reference model(s): nothing to tune on"),
        });
    }
    let r = cfg.tuning_reference.min(k - 1);
    let loo = set.leave_one_out(r)?;
    let member = loo.target_in().unwrap_or(&[]).to_vec();
    let mut grid = Vec::with_capacity(11);
    for step in 0..=10 {
        let a = step as f64 / 10.0;
        let scores = scores_with_a(&loo, RmiaVariant::Offline, a, cfg.gamma)?;
        // Only examples with an OUT reference among the others can be scored.
        let (s, m): (Vec<f64>, Vec<bool>) = scores
            .iter()
            .zip(&member)
            .filter_map(|(s, m)| s.map(|s| (s, *m)))
            .unzip();
        match Roc::new(&s, &m) {
            Ok(roc) => grid.push((a, roc.auc())),
            Err(_) => {
                return Ok(AChoice::Default {
                    a: cfg.a_few_references,
                    reason: format!(
                        "attacking reference model {r} with the other {} leaves no example of one class with an OUT reference (complementary pairs with one pair)",
                        k - 1
                    ),
                });
            }
        }
    }
    // The first a of the highest AUC (ties keep the smaller a).
    let (a, _) = grid
        .iter()
        .copied()
        .fold((f64::NAN, f64::NEG_INFINITY), |best, (a, auc)| {
            if auc > best.1 { (a, auc) } else { best }
        });
    Ok(AChoice::Tuned {
        a,
        reference: r,
        grid,
    })
}

/// RMIA on a score set (population points required).
pub fn rmia(set: &ScoreSet, variant: RmiaVariant, cfg: &RmiaConfig) -> Result<RmiaOutput> {
    let attack = match variant {
        RmiaVariant::Online => "rmia-online",
        RmiaVariant::Offline => "rmia-offline",
    };
    let pop = set.population().ok_or(MiaError::InputMissing {
        attack,
        array: "population_target",
        what: "the target's signal on population points no model trained on",
    })?;
    if set.shadows() == 0 {
        return Err(MiaError::InputMissing {
            attack,
            array: "shadow",
            what: "at least one reference model",
        });
    }
    let choice = match variant {
        RmiaVariant::Online => None,
        RmiaVariant::Offline => Some(choose_a(set, cfg)?),
    };
    let a = choice.as_ref().map_or(0.0, AChoice::a);
    let scores = scores_with_a(set, variant, a, cfg.gamma)?;
    let scores = scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or(MiaError::NoShadow {
                example: i,
                side: "OUT",
                attack,
                shape: vec![set.shadows(), set.n()],
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(RmiaOutput {
        scores,
        a: choice,
        population: pop.n,
    })
}

#[cfg(test)]
mod tests {
    use super::super::data::Population;
    use super::super::signals::SignalKind;
    use super::*;

    fn probability_set(
        target: Vec<f64>,
        shadow: Vec<f64>,
        shadow_in: Vec<bool>,
        k: usize,
    ) -> ScoreSet {
        let n = target.len();
        ScoreSet::new(n, 1, target, k, shadow, shadow_in, SignalKind::Probability).unwrap()
    }

    #[test]
    fn online_score_by_hand() {
        // One reference model. x: target 0.8, reference 0.4 -> ratio 2.
        // Population z: target/reference = 0.5/0.5 (1), 0.2/0.4 (0.5), 0.9/0.3 (3).
        // gamma 1: ratio_x / ratio_z > 1 for z = 1 and 0.5 -> 2/3. gamma 2: only 0.5 -> 1/3.
        let set = probability_set(vec![0.8], vec![0.4], vec![true], 1)
            .with_population(Population {
                n: 3,
                target: vec![0.5, 0.2, 0.9],
                shadow: vec![0.5, 0.4, 0.3],
            })
            .unwrap();
        for (gamma, want) in [(1.0, 2.0 / 3.0), (2.0, 1.0 / 3.0)] {
            let cfg = RmiaConfig {
                gamma,
                ..RmiaConfig::default()
            };
            let out = rmia(&set, RmiaVariant::Online, &cfg).unwrap();
            assert!(
                (out.scores[0] - want).abs() < 1e-15,
                "gamma {gamma}: {:?}",
                out.scores
            );
        }
    }

    #[test]
    fn offline_uses_the_same_out_models_for_x_and_z() {
        // Two reference models; x0 is IN model 0 (OUT set {1}), x1 is IN model 1 (OUT set {0}).
        // Model 0 is generous on z (0.9), model 1 stingy (0.1); the target gives z 0.3.
        // With a = 1, Pr(.) = mean_OUT. x0: ratio 0.5/0.5 = 1 against ratio_z 0.3/0.1 = 3 (lose);
        // x1: ratio 0.5/0.5 = 1 against ratio_z 0.3/0.9 = 1/3 (win). Pooling all OUT values for z
        // (as a top-k would) gives both the same Pr(z) and the same score.
        let set = probability_set(
            vec![0.5, 0.5],
            vec![0.2, 0.5, 0.5, 0.2],
            vec![true, false, false, true],
            2,
        )
        .with_population(Population {
            n: 1,
            target: vec![0.3],
            shadow: vec![0.9, 0.1],
        })
        .unwrap();
        let cfg = RmiaConfig {
            gamma: 1.0,
            a: Some(1.0),
            ..RmiaConfig::default()
        };
        let out = rmia(&set, RmiaVariant::Offline, &cfg).unwrap();
        assert_eq!(out.scores, vec![0.0, 1.0]);
        assert_eq!(out.a, Some(AChoice::Fixed { a: 1.0 }));
    }

    #[test]
    fn offline_a_correction_matches_the_formula() {
        // One OUT reference 0.2, a = 0.3: Pr(x) = (1.3 x 0.2 + 0.7) / 2 = 0.48.
        let lp = log_pr_reference(&[0.2f64.ln()], RmiaVariant::Offline, 0.3);
        assert!((lp.exp() - 0.48).abs() < 1e-15);
        let lp = log_pr_reference(&[0.2f64.ln(), 0.4f64.ln()], RmiaVariant::Online, 0.3);
        assert!((lp.exp() - 0.3).abs() < 1e-15);
    }

    #[test]
    fn a_is_fixed_with_one_reference_and_missing_population_is_named() {
        let set = probability_set(vec![0.5], vec![0.5], vec![false], 1);
        let err = rmia(&set, RmiaVariant::Offline, &RmiaConfig::default()).unwrap_err();
        assert!(err.to_string().contains("population_target"));
        let set = set
            .with_population(Population {
                n: 1,
                target: vec![0.5],
                shadow: vec![0.5],
            })
            .unwrap();
        let out = rmia(&set, RmiaVariant::Offline, &RmiaConfig::default()).unwrap();
        assert!(matches!(out.a, Some(AChoice::Default { a, .. }) if a == 0.3));
    }
}
