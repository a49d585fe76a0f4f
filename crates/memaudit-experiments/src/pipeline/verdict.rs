//! The verdict: does any empirical lower bound on epsilon exceed what its variant claims?
//!
//! Like is compared with like:
//!
//! - **The run's own delta.** Every bound is computed at the delta of the variant's ledger, and
//!   compared with the ledger's epsilon at that delta.
//! - **Groups.** A Secret Sharer canary inserted r times is r protected windows: a bound from
//!   those canaries bounds the epsilon of a group of r windows, so it is compared with the group
//!   epsilon for r windows (group privacy over the run's own Poisson-sampled Gaussian mechanism,
//!   [`memaudit_accounting::statement`], at the same delta), not with epsilon. The one-run and
//!   white-box canaries are single windows (group size 1).
//! - **Several tests.** Every bound of every variant is one test of "the claim holds". With m
//!   bounds each computed at significance alpha / m (Bonferroni), the probability that any bound
//!   of a correct DP run exceeds its claim is at most alpha: the verdict's family-wise
//!   significance. "Broken" is said only when a bound exceeds its claim; a correct DP run is
//!   called broken with probability at most alpha, and the report says loudly when it happens.
//!
//! The bounds:
//!
//! - **one-run / white-box** (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1)
//!   Training Run"): m canaries each included with probability 1/2, scored after training; the
//!   one-run bound of [`memaudit_audit::lower_bound::black_box_audit`], valid for every mechanism.
//! - **extraction** (The Secret Sharer's canaries, per repetition count r): each canary is a
//!   uniform draw from the template's space R, so a model trained without it ranks it among the
//!   top k with probability exactly p0 = k / |R|; under (eps_r, delta)-DP for groups of r windows
//!   a model trained with it does so with probability at most e^eps_r p0 + delta. Over K canaries
//!   the expected number extracted is then at most K (e^eps_r p0 + delta), whatever the
//!   dependence between canaries (linearity of expectation), and by Markov's inequality
//!   P[X >= x] <= K (e^eps_r p0 + delta) / x. Rejecting every eps_r with that tail at most
//!   alpha' gives the bound eps_r >= ln((x alpha' / K - delta) / p0) (0 when the argument is not
//!   above 1). Weaker than a binomial tail, but it needs no independence between canaries that
//!   share one training run.

use memaudit_accounting::AccountantKind;
use memaudit_accounting::statement::{StatementParams, privacy_statement};
use memaudit_audit::lower_bound::black_box_audit;
use serde::{Deserialize, Serialize};

use super::PipelineError;
use crate::num::Num;

/// What a variant claims: the ledger's epsilon at its delta, and the mechanism's parameters for
/// group privacy. `None` parameters: no DP (epsilon infinite for every group).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub epsilon: Num,
    pub delta: f64,
    pub mechanism: Option<Mechanism>,
}

/// The DP-SGD run's parameters, as its ledger records them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mechanism {
    /// Training windows N.
    pub dataset_size: u64,
    /// Expected batch size B.
    pub batch_size: u64,
    pub epochs: f64,
    /// Noisy steps run.
    pub steps: u64,
    pub noise_multiplier: f64,
}

impl Claim {
    /// No privacy claim (a plain or regularised variant); bounds are still computed at `delta`.
    pub fn none(delta: f64) -> Self {
        Self {
            epsilon: Num(f64::INFINITY),
            delta,
            mechanism: None,
        }
    }

    /// The claimed epsilon for a group of `r` windows at the run's delta: the ledger's epsilon
    /// for r = 1, group privacy of the Poisson-sampled Gaussian (RDP accounting, Vadhan 2017
    /// Lemma 2.2 with TF Privacy's line search over the example delta) for r > 1.
    pub fn group_epsilon(&self, r: u32) -> Result<f64, PipelineError> {
        let Some(m) = &self.mechanism else {
            return Ok(f64::INFINITY);
        };
        if r <= 1 {
            return Ok(self.epsilon.0);
        }
        let s = privacy_statement(&StatementParams {
            dataset_size: m.dataset_size,
            batch_size: m.batch_size,
            epochs: m.epochs,
            steps: Some(m.steps),
            noise_multiplier: m.noise_multiplier,
            delta: self.delta,
            used_microbatching: false,
            max_examples_per_user: Some(r as u64),
            accountant: AccountantKind::Rdp,
        })?;
        Ok(s.user_epsilon_poisson.unwrap_or(f64::INFINITY))
    }
}

/// The raw evidence of one bound, kept by the audit stages so that the verdict can compute every
/// bound at the Bonferroni level of the whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// Canaries each included with probability 1/2, their scores (higher: member) and inclusion.
    OneRun {
        scores: Vec<Num>,
        included: Vec<bool>,
    },
    /// Secret Sharer canaries inserted `repetitions` times: `extracted` of `canaries` were among
    /// the `top` most likely of the `space_size` candidates.
    Extraction {
        repetitions: u32,
        canaries: u64,
        extracted: u64,
        top: u64,
        space_size: f64,
    },
}

impl Evidence {
    /// Windows one canary occupies (the group size of the claim it is compared with).
    pub fn group_size(&self) -> u32 {
        match self {
            Evidence::OneRun { .. } => 1,
            Evidence::Extraction { repetitions, .. } => *repetitions,
        }
    }
}

/// One bound to report: which variant, which audit, its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundInput {
    pub variant: String,
    /// `white-box`, `one-run` or `extraction r=16`.
    pub audit: String,
    pub evidence: Evidence,
}

/// A bound, its claim, and whether it exceeds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundOutcome {
    pub variant: String,
    pub audit: String,
    /// Windows per canary: the claim is the group epsilon for this many windows.
    pub group_size: u32,
    /// The lower bound on (group) epsilon, at `delta`, holding with probability at least
    /// 1 - significance_per_bound.
    pub epsilon_lower_bound: Num,
    /// The claim it is compared with (infinite: no claim).
    pub claimed_epsilon: Num,
    pub delta: f64,
    pub exceeds_claim: bool,
}

/// The verdict over every bound of every variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// alpha: the probability that a correct DP run is called broken is at most this.
    pub family_significance: f64,
    /// m: bounds reported (Bonferroni divisor).
    pub bounds_reported: usize,
    /// alpha / m.
    pub significance_per_bound: f64,
    pub bounds: Vec<BoundOutcome>,
    /// Some bound exceeds its claim.
    pub broken: bool,
    /// Variants with a bound above their claim.
    pub broken_variants: Vec<String>,
    /// The verdict line of the report.
    pub line: String,
}

/// The extraction bound on eps_r (see the module docs): 0 when nothing was extracted or the
/// evidence is too weak.
pub fn extraction_bound(
    canaries: u64,
    extracted: u64,
    top: u64,
    space_size: f64,
    delta: f64,
    significance: f64,
) -> f64 {
    if canaries == 0 || extracted == 0 || space_size.is_nan() || space_size <= 0.0 {
        return 0.0;
    }
    let p0 = (top as f64 / space_size).min(1.0);
    let arg = (extracted as f64 * significance / canaries as f64 - delta) / p0;
    if arg > 1.0 { arg.ln() } else { 0.0 }
}

/// Compute every bound at `family_significance / m` and compare each with its variant's claim.
/// `claim_of(variant)` gives the variant's claim.
pub fn verdict(
    inputs: &[BoundInput],
    claim_of: &dyn Fn(&str) -> Option<Claim>,
    family_significance: f64,
) -> Result<Verdict, PipelineError> {
    let m = inputs.len();
    let per = family_significance / m.max(1) as f64;
    let mut bounds = Vec::with_capacity(m);
    for b in inputs {
        let claim = claim_of(&b.variant).ok_or_else(|| {
            PipelineError::Internal(format!(
                "bound {} of variant {} has no claim",
                b.audit, b.variant
            ))
        })?;
        let r = b.evidence.group_size();
        let claimed = claim.group_epsilon(r)?;
        let lower = match &b.evidence {
            Evidence::OneRun { scores, included } => {
                let s: Vec<f64> = scores.iter().map(|x| x.0).collect();
                black_box_audit(&s, included, claimed, claim.delta, per)?.epsilon_lower_bound
            }
            Evidence::Extraction {
                canaries,
                extracted,
                top,
                space_size,
                ..
            } => extraction_bound(*canaries, *extracted, *top, *space_size, claim.delta, per),
        };
        bounds.push(BoundOutcome {
            variant: b.variant.clone(),
            audit: b.audit.clone(),
            group_size: r,
            epsilon_lower_bound: Num(lower),
            claimed_epsilon: Num(claimed),
            delta: claim.delta,
            exceeds_claim: lower > claimed,
        });
    }
    let mut broken_variants: Vec<String> = Vec::new();
    for b in bounds.iter().filter(|b| b.exceeds_claim) {
        if !broken_variants.contains(&b.variant) {
            broken_variants.push(b.variant.clone());
        }
    }
    let broken = !broken_variants.is_empty();
    let line = if m == 0 {
        "No lower bounds were computed (audits.lower_bounds and extraction are off): nothing to compare with the claims.".to_string()
    } else if broken {
        format!(
            "BROKEN: a lower bound exceeds the claimed epsilon of {} ({} bounds, each at significance {:.2e}; family-wise significance {}). A correct DP-SGD run is called broken with probability at most {}: check the clipping, the noise and the accounting.",
            broken_variants.join(", "),
            m,
            per,
            family_significance,
            family_significance
        )
    } else {
        format!(
            "No lower bound exceeds its claim: {m} bounds (each at significance {per:.2e}, Bonferroni; family-wise significance {family_significance}) are consistent with every variant's claimed epsilon (group epsilon for canaries repeated r times)."
        )
    };
    Ok(Verdict {
        family_significance,
        bounds_reported: m,
        significance_per_bound: per,
        bounds,
        broken,
        broken_variants,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn dp_claim(eps: f64) -> Claim {
        Claim {
            epsilon: Num(eps),
            delta: 1e-5,
            mechanism: Some(Mechanism {
                dataset_size: 2000,
                batch_size: 100,
                epochs: 3.0,
                steps: 60,
                noise_multiplier: 1.0,
            }),
        }
    }

    fn one_run(variant: &str, m: usize, signal: f64, seed: u64) -> BoundInput {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let included: Vec<bool> = (0..m).map(|_| rng.random_bool(0.5)).collect();
        let scores = included
            .iter()
            .map(|&i| Num(rng.random::<f64>() + if i { signal } else { 0.0 }))
            .collect();
        BoundInput {
            variant: variant.into(),
            audit: "one-run".into(),
            evidence: Evidence::OneRun { scores, included },
        }
    }

    #[test]
    fn group_epsilon_grows_with_the_group_and_plain_claims_nothing() {
        let c = dp_claim(1.0);
        let e1 = c.group_epsilon(1).unwrap();
        let e4 = c.group_epsilon(4).unwrap();
        let e16 = c.group_epsilon(16).unwrap();
        assert_eq!(e1, 1.0, "r = 1 is the ledger's own epsilon");
        assert!(e4 > 1.0 && e16 > e4, "{e4} {e16}");
        assert!(Claim::none(1e-5).group_epsilon(4).unwrap().is_infinite());
    }

    #[test]
    fn extraction_bound_follows_markov_and_is_zero_without_evidence() {
        // 3 of 3 extracted among the top 10 of 10^4 at alpha' = 0.05: ln(0.05 / 1e-3) = ln 50.
        let b = extraction_bound(3, 3, 10, 1e4, 0.0, 0.05);
        assert!((b - 50f64.ln()).abs() < 1e-12, "{b}");
        assert_eq!(extraction_bound(3, 0, 10, 1e4, 1e-5, 0.05), 0.0);
        // A space so small that chance alone extracts: no bound.
        assert_eq!(extraction_bound(3, 3, 10, 20.0, 1e-5, 0.05), 0.0);
        // Delta large against x alpha / K: no bound.
        assert_eq!(extraction_bound(3, 1, 10, 1e4, 0.1, 0.05), 0.0);
    }

    #[test]
    fn bonferroni_divides_the_significance_over_every_reported_bound() {
        let inputs: Vec<BoundInput> = (0..4).map(|i| one_run("dp", 200, 0.0, i)).collect();
        let v = verdict(&inputs, &|_| Some(dp_claim(2.0)), 0.05).unwrap();
        assert_eq!(v.bounds_reported, 4);
        assert!((v.significance_per_bound - 0.0125).abs() < 1e-15);
        assert!(!v.broken, "{}", v.line);
        assert!(
            v.line.contains("family-wise significance 0.05"),
            "{}",
            v.line
        );
    }

    #[test]
    fn a_correct_dp_run_is_never_called_broken_by_scores_without_signal() {
        // Scores independent of inclusion: what a correct run at a small epsilon looks like.
        for seed in 0..20 {
            let inputs = vec![
                one_run("dp", 256, 0.0, seed),
                BoundInput {
                    variant: "dp".into(),
                    audit: "extraction r=16".into(),
                    evidence: Evidence::Extraction {
                        repetitions: 16,
                        canaries: 3,
                        extracted: 0,
                        top: 10,
                        space_size: 1e4,
                    },
                },
            ];
            let v = verdict(&inputs, &|_| Some(dp_claim(0.5)), 0.05).unwrap();
            assert!(!v.broken, "seed {seed}: {}", v.line);
        }
    }

    #[test]
    fn a_bound_above_the_claim_is_broken_and_plain_variants_never_are() {
        // Perfectly separated scores: the one-run bound is far above epsilon 0.1.
        let strong = one_run("dp", 1000, 10.0, 7);
        let v = verdict(
            std::slice::from_ref(&strong),
            &|_| Some(dp_claim(0.1)),
            0.05,
        )
        .unwrap();
        assert!(v.broken && v.broken_variants == ["dp"], "{:?}", v.bounds);
        assert!(v.line.starts_with("BROKEN"), "{}", v.line);
        let plain = BoundInput {
            variant: "plain".into(),
            ..strong
        };
        let v = verdict(&[plain], &|_| Some(Claim::none(1e-5)), 0.05).unwrap();
        assert!(!v.broken);
        assert!(v.bounds[0].epsilon_lower_bound.0 > 1.0);
        assert!(v.bounds[0].claimed_epsilon.0.is_infinite());
    }

    #[test]
    fn repeated_canaries_are_compared_with_the_group_epsilon() {
        // 3 of 3 canaries repeated 16 times extracted from a 10^9 space: eps_16 >= ln(0.05/3*3
        // / 1e-8) ~ 15.4 at alpha' = 0.05: above epsilon 1 but below the group epsilon for 16
        // windows of a run whose epsilon is 2, so not broken.
        let inputs = vec![BoundInput {
            variant: "dp".into(),
            audit: "extraction r=16".into(),
            evidence: Evidence::Extraction {
                repetitions: 16,
                canaries: 3,
                extracted: 3,
                top: 10,
                space_size: 1e9,
            },
        }];
        let claim = dp_claim(2.0);
        let group = claim.group_epsilon(16).unwrap();
        let v = verdict(&inputs, &|_| Some(claim.clone()), 0.05).unwrap();
        let b = &v.bounds[0];
        assert_eq!(b.group_size, 16);
        assert_eq!(b.claimed_epsilon.0, group);
        // Above the claim for one window, so comparing with epsilon would say "broken"...
        assert!(b.epsilon_lower_bound.0 > 2.0, "{:?}", b);
        // ...but a canary of 16 windows is covered only by the group epsilon.
        assert!(
            group > b.epsilon_lower_bound.0 && !b.exceeds_claim && !v.broken,
            "{group} {b:?}"
        );
    }
}
