//! The Gaussian-DP lower bound (Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini &
//! Terzis 2023, "Tight Auditing of Differentially Private Machine Learning"; JAX Privacy's
//! `epsilon_from_gdp`).
//!
//! mu-GDP means every test has FNR >= Phi(Phi^-1(1 - FPR) - mu) (Dong, Roth & Su 2019). With
//! exact upper confidence bounds on FPR and FNR at every tested threshold (Bonferroni over the
//! 2n intervals), mu >= Phi^-1(1 - FPR_ub) - Phi^-1(FNR_ub); the largest such value, clamped at
//! 0, is a lower bound on mu, and the eps of mu-GDP at delta (Dong et al., Cor. 2.13: delta =
//! Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)) a lower bound on eps *if the mechanism's
//! trade-off curve is Gaussian* (as DP-SGD's nearly is). Far tighter than Clopper-Pearson on
//! Gaussian-like scores; not a distribution-free bound.
//!
//! Deviation from JAX Privacy, on purpose: JAX takes max |mu|, counting a negative mu as the
//! reversed test. But the upper bounds of a rate are not bounds of the reversed test's rates:
//! with few canaries FPR_ub + FNR_ub > 1 for any scores, and |mu| then certifies a positive eps
//! from nothing (10 scores a side from one distribution: eps 10.95 at delta 1e-6, see the
//! tests; JAX Privacy pull request #270 reports the same). Here mu is clamped at 0
//! (auditing.md section 3); the reverse direction is not audited.

use memaudit_accounting::gaussian_epsilon_for_delta;
use memaudit_accounting::special::norm_ppf_from_log;

use super::binomial::clopper_pearson_upper;
use super::error::{LowerBoundError, Result};
use super::thresholds::{CanaryScores, ConfusionCounts};
use super::{LowerBoundConfig, ThresholdChoice};

/// The GDP bound and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct GdpBound {
    /// The eps of mu-GDP at delta, mu = `mu_lower_bound`.
    pub epsilon_lower_bound: f64,
    /// The lower confidence bound on mu.
    pub mu_lower_bound: f64,
    /// The threshold that gave mu, caller's units (None when mu = 0).
    pub threshold: Option<f64>,
    /// Counts at that threshold.
    pub counts: Option<ConfusionCounts>,
    /// Upper confidence bound on the FPR there.
    pub fpr_upper: f64,
    /// Upper confidence bound on the FNR there.
    pub fnr_upper: f64,
    /// Thresholds tested (2 intervals each).
    pub thresholds_tested: usize,
    /// Significance of each interval: significance / (2 n).
    pub significance_per_interval: f64,
}

/// Phi^-1(p) for p in (0, 1), accurate in both tails.
fn norm_ppf(p: f64) -> f64 {
    if p > 0.5 {
        -norm_ppf_from_log((-p).ln_1p())
    } else {
        norm_ppf_from_log(p.ln())
    }
}

/// The GDP lower bound on eps (see the module docs). Needs delta > 0.
pub fn gdp_bound(scores: &CanaryScores, config: &LowerBoundConfig) -> Result<GdpBound> {
    config.validate()?;
    let delta = config.delta;
    if delta == 0.0 {
        return Err(LowerBoundError::NeedsPositiveDelta { method: "gdp" });
    }
    let candidates = match config.threshold {
        ThresholdChoice::Explicit(t) => vec![scores.counts_at(t)],
        ThresholdChoice::ParetoFrontier => scores.frontier(),
    };
    let per_interval = config.significance / (2 * candidates.len()) as f64;
    let mut best = GdpBound {
        epsilon_lower_bound: 0.0,
        mu_lower_bound: 0.0,
        threshold: None,
        counts: None,
        fpr_upper: 1.0,
        fnr_upper: 1.0,
        thresholds_tested: candidates.len(),
        significance_per_interval: per_interval,
    };
    for c in &candidates {
        let fpr_ub = clopper_pearson_upper(c.false_positives, c.n_out(), per_interval);
        let fnr_ub = clopper_pearson_upper(c.false_negatives, c.n_in(), per_interval);
        // A rate bound at 1 - delta or above leaves no room for a test (JAX Privacy's filter).
        if fpr_ub.max(fnr_ub) >= 1.0 - delta {
            continue;
        }
        let mu = -norm_ppf(fpr_ub) - norm_ppf(fnr_ub);
        if mu > best.mu_lower_bound {
            best.mu_lower_bound = mu;
            best.threshold = Some(scores.external_threshold(c.threshold));
            best.counts = Some(*c);
            best.fpr_upper = fpr_ub;
            best.fnr_upper = fnr_ub;
        }
    }
    if best.mu_lower_bound > 0.0 {
        best.epsilon_lower_bound = gaussian_epsilon_for_delta(1.0 / best.mu_lower_bound, delta);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower_bound::ScoreDirection;

    #[test]
    fn norm_ppf_matches_known_quantiles() {
        // Phi^-1(0.975) = 1.959963984540054 (SciPy), symmetric; tolerance 1e-13 (the accounting
        // crate's stated accuracy for norm_ppf_from_log).
        assert!((norm_ppf(0.975) - 1.959963984540054).abs() < 1e-13);
        assert!((norm_ppf(0.025) + 1.959963984540054).abs() < 1e-13);
        assert!(norm_ppf(0.5).abs() < 1e-15);
    }

    /// Deterministic normal scores Phi^-1((i + 1/2)/n) + shift (JAX Privacy's test data).
    pub(crate) fn deterministic_normals(n: usize, shift: f64) -> Vec<f64> {
        (0..n)
            .map(|i| norm_ppf((i as f64 + 0.5) / n as f64) + shift)
            .collect()
    }

    #[test]
    fn gdp_recovers_mu_of_gaussian_scores_from_below() {
        // IN ~ N(mu, 1), OUT ~ N(0, 1) is exactly mu-GDP: the bound must stay below the eps of
        // mu-GDP and come close with 10,000 canaries a side.
        let out = deterministic_normals(10_000, 0.0);
        for mu in [1.0, 2.0] {
            let s = CanaryScores::new(
                &deterministic_normals(10_000, mu),
                &out,
                ScoreDirection::HigherIsMember,
            )
            .unwrap();
            let c = LowerBoundConfig {
                delta: 1e-5,
                ..LowerBoundConfig::default()
            };
            let b = gdp_bound(&s, &c).unwrap();
            let truth = gaussian_epsilon_for_delta(1.0 / mu, 1e-5);
            assert!(
                b.mu_lower_bound < mu && b.mu_lower_bound > 0.8 * mu,
                "{b:?}"
            );
            assert!(
                b.epsilon_lower_bound < truth && b.epsilon_lower_bound > 0.7 * truth,
                "{b:?} vs {truth}"
            );
        }
    }

    #[test]
    fn identical_or_few_scores_certify_nothing() {
        // Ten IN and ten OUT scores drawn from the same N(0, 1) (NumPy default_rng(1), rounded).
        // On the 4 frontier thresholds the CP upper bounds at 0.05/8 give mu = -0.70 and -1.99
        // (JAX Privacy's formula, recomputed with SciPy 1.17.1); JAX's max |mu| = 1.993 would
        // certify eps = 10.95 at delta 1e-6 from pure noise. The clamp at 0 certifies nothing.
        let ins = [
            0.346, 0.822, 0.33, -1.303, 0.905, 0.446, -0.537, 0.581, 0.365, 0.294,
        ];
        let outs = [
            0.028, 0.547, -0.736, -0.163, -0.482, 0.599, 0.04, -0.292, -0.782, -0.257,
        ];
        let s = CanaryScores::new(&ins, &outs, ScoreDirection::HigherIsMember).unwrap();
        assert_eq!(s.frontier().len(), 4);
        let c = LowerBoundConfig {
            delta: 1e-6,
            ..LowerBoundConfig::default()
        };
        let b = gdp_bound(&s, &c).unwrap();
        assert_eq!(b.epsilon_lower_bound, 0.0, "{b:?}");
        assert_eq!(b.threshold, None);
        let same =
            CanaryScores::new(&[0.5; 300], &[0.5; 300], ScoreDirection::HigherIsMember).unwrap();
        assert_eq!(gdp_bound(&same, &c).unwrap().epsilon_lower_bound, 0.0);
    }

    #[test]
    fn gdp_refuses_delta_zero() {
        let s = CanaryScores::new(&[1.0], &[0.0], ScoreDirection::HigherIsMember).unwrap();
        assert!(matches!(
            gdp_bound(&s, &LowerBoundConfig::default()),
            Err(LowerBoundError::NeedsPositiveDelta { .. })
        ));
    }
}
