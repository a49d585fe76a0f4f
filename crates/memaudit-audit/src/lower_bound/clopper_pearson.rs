//! The Clopper-Pearson lower bound (Jagielski, Ullman & Oprea 2020, "Auditing Differentially
//! Private Machine Learning"; Nasr et al. 2021, "Adversary Instantiation").
//!
//! (eps, delta)-DP implies TPR <= e^eps FPR + delta for every test. With p1 a lower confidence
//! bound on the TPR and p0 an upper one on the FPR, both holding together with probability
//! 1 - alpha, eps >= ln((p1 - delta) / p0).
//!
//! - One-sided (default, JAX Privacy's `epsilon_clopper_pearson(one_sided=True)`): one-sided
//!   exact bounds, each at alpha/2, so that both hold with probability 1 - alpha.
//! - Two-sided (Jagielski et al.'s `audit_2020` code): two-sided exact intervals with alpha/2 per
//!   side; when p0 + p1 > 1 the roles swap, (p0, p1) -> (1 - p1, 1 - p0), i.e. the bound uses
//!   DP's other inequality, TNR <= e^eps FNR + delta, which is the stronger one when the test
//!   misses few members (their Appendix A; JAX Privacy's `one_sided=False` takes the max of
//!   both inequalities instead).
//!
//! Both give the same p1 and p0 at a threshold; the two-sided option differs by the swap.

use super::binomial::{clopper_pearson_lower, clopper_pearson_upper};
use super::error::Result;
use super::thresholds::{CanaryScores, ConfusionCounts};
use super::{LowerBoundConfig, tested_thresholds};

/// The Clopper-Pearson bound and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ClopperPearsonBound {
    /// max(0, ln((p1 - delta) / p0) / k) at the best threshold.
    pub epsilon_lower_bound: f64,
    /// Best threshold in the caller's units (None when no threshold gives a positive bound).
    pub threshold: Option<f64>,
    /// Counts at that threshold.
    pub counts: Option<ConfusionCounts>,
    /// p1: the lower confidence bound on the TPR used (after any swap).
    pub tpr_lower: f64,
    /// p0: the upper confidence bound on the FPR used (after any swap).
    pub fpr_upper: f64,
    /// Whether the two-sided swap was applied at that threshold.
    pub swapped: bool,
    /// Two-sided intervals (Jagielski et al.) rather than one-sided.
    pub two_sided: bool,
    /// k, the group size the bound was divided by.
    pub group_size: u32,
    /// Thresholds tested (Bonferroni divisor).
    pub thresholds_tested: usize,
    /// Significance per threshold (split in two, one half per rate).
    pub significance_per_threshold: f64,
}

/// (eps, p1, p0, swapped) at one threshold with `significance` for the pair of intervals.
fn epsilon_at(
    c: &ConfusionCounts,
    significance: f64,
    delta: f64,
    two_sided: bool,
    group_size: u32,
) -> (f64, f64, f64, bool) {
    let per_rate = significance / 2.0;
    let mut p1 = clopper_pearson_lower(c.true_positives, c.n_in(), per_rate);
    let mut p0 = clopper_pearson_upper(c.false_positives, c.n_out(), per_rate);
    let mut swapped = false;
    if two_sided && p0 + p1 > 1.0 {
        (p0, p1) = (1.0 - p1, 1.0 - p0);
        swapped = true;
    }
    let eps = if p1 > delta && p0 > 0.0 {
        (((p1 - delta) / p0).ln() / group_size as f64).max(0.0)
    } else {
        0.0
    };
    (eps, p1, p0, swapped)
}

/// The Clopper-Pearson lower bound on eps (see the module docs).
pub fn clopper_pearson_bound(
    scores: &CanaryScores,
    config: &LowerBoundConfig,
) -> Result<ClopperPearsonBound> {
    config.validate()?;
    let (candidates, per_threshold) = tested_thresholds(scores, config);
    let mut best = ClopperPearsonBound {
        epsilon_lower_bound: 0.0,
        threshold: None,
        counts: None,
        tpr_lower: 0.0,
        fpr_upper: 1.0,
        swapped: false,
        two_sided: config.two_sided,
        group_size: config.group_size,
        thresholds_tested: candidates.len(),
        significance_per_threshold: per_threshold,
    };
    for c in &candidates {
        let (eps, p1, p0, swapped) = epsilon_at(
            c,
            per_threshold,
            config.delta,
            config.two_sided,
            config.group_size,
        );
        if eps > best.epsilon_lower_bound {
            best.epsilon_lower_bound = eps;
            best.threshold = Some(scores.external_threshold(c.threshold));
            best.counts = Some(*c);
            best.tpr_lower = p1;
            best.fpr_upper = p0;
            best.swapped = swapped;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower_bound::{ScoreDirection, ThresholdChoice};

    fn separated() -> CanaryScores {
        CanaryScores::new(&[1.0; 500], &[0.0; 500], ScoreDirection::HigherIsMember).unwrap()
    }

    // Jagielski et al.'s audit_2020 test: 500 IN scores 1, 500 OUT 0, threshold 0.5, alpha 0.01,
    // two-sided: eps = 4.541915810224092 (k = 1) and 2.27095790511 (k = 2). Closed form here:
    // p1 = 0.005^(1/500), p0 = 1 - p1, so the only error is the bisection's 1e-15 relative in
    // p0 (about 1e-13 in eps); tolerance 1e-12.
    #[test]
    fn jagielski_two_sided_explicit_threshold() {
        let mut c = LowerBoundConfig {
            significance: 0.01,
            threshold: ThresholdChoice::Explicit(0.5),
            two_sided: true,
            ..LowerBoundConfig::default()
        };
        let b = clopper_pearson_bound(&separated(), &c).unwrap();
        assert!(
            (b.epsilon_lower_bound - 4.541915810224092).abs() < 1e-12,
            "{b:?}"
        );
        assert_eq!(b.threshold, Some(0.5));
        assert!(!b.swapped);
        c.group_size = 2;
        let b = clopper_pearson_bound(&separated(), &c).unwrap();
        // The reference is printed to 12 significant digits: tolerance 1e-11.
        assert!(
            (b.epsilon_lower_bound - 2.27095790511).abs() < 1e-11,
            "{b:?}"
        );
    }

    // JAX Privacy: the same data, every frontier threshold (3 of them) with Bonferroni, one-sided:
    // 4.352386 (printed to 7 digits; tolerance 5e-7).
    #[test]
    fn jax_privacy_bonferroni_frontier() {
        let c = LowerBoundConfig {
            significance: 0.01,
            ..LowerBoundConfig::default()
        };
        let b = clopper_pearson_bound(&separated(), &c).unwrap();
        assert_eq!(b.thresholds_tested, 3);
        assert!((b.epsilon_lower_bound - 4.352386).abs() < 5e-7, "{b:?}");
        assert_eq!(b.threshold, Some(1.0));
    }

    #[test]
    fn identical_scores_give_zero() {
        let s =
            CanaryScores::new(&[0.3; 200], &[0.3; 200], ScoreDirection::HigherIsMember).unwrap();
        for two_sided in [false, true] {
            let c = LowerBoundConfig {
                two_sided,
                ..LowerBoundConfig::default()
            };
            let b = clopper_pearson_bound(&s, &c).unwrap();
            assert_eq!(b.epsilon_lower_bound, 0.0);
            assert_eq!(b.threshold, None);
        }
    }

    #[test]
    fn two_sided_swap_uses_the_other_inequality() {
        // Every IN canary scores 1, half the OUT ones too: at threshold 0.5, TPR = 1 and FPR =
        // 1/2, so p0 + p1 > 1 and the swap bounds TNR <= e^eps FNR instead: ln((1 - p0)/(1 - p1)).
        // References (SciPy 1.17.1 beta.ppf(0.995, 251, 250) = 0.5583686272333883):
        // swapped 3.735232701817111, unswapped 0.5721392777005161; tolerance 1e-9 (the CP
        // bisection's 1e-15 relative, amplified by 1/(1 - p0) ~ 2 and 1/(1 - p1) ~ 100).
        let mut outs = vec![1.0; 250];
        outs.extend([0.0; 250]);
        let s = CanaryScores::new(&[1.0; 500], &outs, ScoreDirection::HigherIsMember).unwrap();
        let mut c = LowerBoundConfig {
            significance: 0.01,
            threshold: ThresholdChoice::Explicit(0.5),
            ..LowerBoundConfig::default()
        };
        let b = clopper_pearson_bound(&s, &c).unwrap();
        assert!(!b.swapped);
        assert!(
            (b.epsilon_lower_bound - 0.5721392777005161).abs() < 1e-9,
            "{b:?}"
        );
        c.two_sided = true;
        let b = clopper_pearson_bound(&s, &c).unwrap();
        assert!(b.swapped);
        assert!(
            (b.epsilon_lower_bound - 3.735232701817111).abs() < 1e-9,
            "{b:?}"
        );
    }

    #[test]
    fn delta_lowers_the_bound() {
        let c0 = LowerBoundConfig::default();
        let c1 = LowerBoundConfig {
            delta: 0.1,
            ..LowerBoundConfig::default()
        };
        let b0 = clopper_pearson_bound(&separated(), &c0)
            .unwrap()
            .epsilon_lower_bound;
        let b1 = clopper_pearson_bound(&separated(), &c1)
            .unwrap()
            .epsilon_lower_bound;
        assert!(b1 < b0 && b1 > 0.0, "{b0} {b1}");
    }
}
