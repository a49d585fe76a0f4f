//! Privacy auditing with one training run (Steinke, Nasr & Jagielski, NeurIPS 2023,
//! arXiv 2305.08846), guessing IN only (k- = 0), as JAX Privacy's `epsilon_one_run`.
//!
//! m canaries are each included in training independently with probability 1/2. The auditor
//! guesses IN for the r canaries scoring at or above a threshold; v of the guesses are right.
//! Under the null "the training is (eps, delta)-DP", with q = e^eps / (1 + e^eps):
//!
//!   beta  = P[Bin(r, q) >= v]
//!   alpha = max_{i = 1..v} (1/i) P[v - i <= Bin(r, q) < v]
//!   p     = min(1, beta + 2 m delta alpha)                      (their Theorem 3.3 / Prop. 5.2)
//!
//! The bound is the largest eps whose p-value is still at most the significance. The delta term
//! grows with m: with many canaries a positive delta can cost the whole bound, so every result
//! states m, delta and 2 m delta and warns when 2 m delta is not small.

use super::binomial::binomial_sf_at_least;
use super::error::Result;
use super::thresholds::{CanaryScores, ConfusionCounts};
use super::{
    LowerBoundConfig, LowerBoundWarning, TWO_M_DELTA_WARN_ABOVE, largest_rejected_epsilon,
    tested_thresholds,
};
use memaudit_accounting::special::ln_gamma;

/// A one-run bound (also the f-DP variant's result) and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct OneRunBound {
    /// The largest eps rejected at the significance.
    pub epsilon_lower_bound: f64,
    /// The threshold of the guesses, caller's units (None when no threshold gives a bound).
    pub threshold: Option<f64>,
    /// Counts at that threshold.
    pub counts: Option<ConfusionCounts>,
    /// r: canaries guessed IN at that threshold.
    pub guesses: u64,
    /// v: right guesses.
    pub correct_guesses: u64,
    /// m: all canaries (IN + OUT).
    pub m: u64,
    /// The delta tested.
    pub delta: f64,
    /// 2 m delta, the weight of the one-run p-value's delta term.
    pub two_m_delta: f64,
    /// Thresholds tested (Bonferroni divisor).
    pub thresholds_tested: usize,
    /// Significance per threshold.
    pub significance_per_threshold: f64,
    /// What a reader should know (2 m delta not small, or it zeroed the bound).
    pub warnings: Vec<LowerBoundWarning>,
}

/// q = e^eps / (1 + e^eps), the chance a guess is right under eps-DP with inclusion prob. 1/2.
pub(crate) fn logistic(eps: f64) -> f64 {
    1.0 / (1.0 + (-eps).exp())
}

/// alpha = max_{i=1..v} (1/i) P[v - i <= Bin(r, q) <= v - 1], the delta term's weight.
///
/// Sums the pmf downward from v - 1 in a scaled linear domain (rescaled when it grows large, so
/// nothing underflows or overflows), and stops once no later i can beat the best: below the
/// mode the pmf ratios pmf(j-1)/pmf(j) = j(1-q) / ((r-j+1) q) fall with j, so the rest of the
/// sum is at most term * rho / (1 - rho), and (sum + rest)/(i + 1) bounds every later ratio.
fn one_run_alpha(r: u64, v: u64, q: f64) -> f64 {
    if v == 0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 0.0; // Bin(r, 1) = r >= v: nothing below v.
    }
    if q <= 0.0 {
        return 1.0 / v as f64; // Bin(r, 0) = 0: P[0 <= X < v] = 1, best at i = v.
    }
    let (rf, top) = (r as f64, (v - 1) as f64);
    // log pmf(v - 1); the running values are pmf / exp(log_scale).
    let mut log_scale = ln_gamma(rf + 1.0) - ln_gamma(top + 1.0) - ln_gamma(rf - top + 1.0)
        + top * q.ln()
        + (rf - top) * (-q).ln_1p();
    let odds_out = (1.0 - q) / q;
    let mut term = 1.0; // pmf(j) / exp(log_scale), j = v - i
    let mut sum = 0.0;
    let mut best = 0.0_f64;
    for i in 1..=v {
        let j = v - i;
        sum += term;
        best = best.max(sum / i as f64);
        if j == 0 {
            break;
        }
        let ratio = j as f64 * odds_out / (rf - j as f64 + 1.0); // pmf(j-1)/pmf(j)
        let next = term * ratio;
        if ratio < 1.0 {
            let rest = next / (1.0 - ratio);
            if (sum + rest) / (i + 1) as f64 <= best {
                break;
            }
        }
        term = next;
        if term > 1e200 {
            // Rescale everything by the same factor (best only matters relative to sum).
            let f = 1e-200;
            term *= f;
            sum *= f;
            best *= f;
            log_scale += 200.0 * std::f64::consts::LN_10;
        }
    }
    (best.ln() + log_scale).exp()
}

/// The one-run p-value of v right guesses out of r among m canaries under (eps, delta)-DP.
pub fn one_run_p_value(m: u64, guesses: u64, correct: u64, eps: f64, delta: f64) -> f64 {
    let q = logistic(eps);
    let beta = binomial_sf_at_least(correct, guesses, q);
    if delta == 0.0 {
        return beta;
    }
    let alpha = one_run_alpha(guesses, correct, q);
    (beta + 2.0 * m as f64 * delta * alpha).min(1.0)
}

/// The largest eps >= `start` at which `correct` of `guesses` among m canaries still reject
/// (eps, delta)-DP at `significance` (`start` itself if none does).
fn one_run_epsilon_from(
    start: f64,
    m: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    significance: f64,
) -> f64 {
    // Cheap first: with delta = 0 the p-value is smaller; if even that does not reject, stop.
    if one_run_p_value(m, guesses, correct, start, 0.0) > significance {
        return start;
    }
    largest_rejected_epsilon(start, |eps| {
        one_run_p_value(m, guesses, correct, eps, delta) <= significance
    })
}

/// The scalar one-run bound: m canaries, r guesses, v right, at (delta, significance).
pub fn one_run_epsilon(m: u64, guesses: u64, correct: u64, delta: f64, significance: f64) -> f64 {
    one_run_epsilon_from(0.0, m, guesses, correct, delta, significance)
}

/// The scan shared by the one-run methods: over the tested thresholds in order of decreasing
/// raw precision, skipping a threshold whose precision v/r is at most q of the best eps so far
/// (with v <= r q, P[Bin(r, q) >= v] >= 1/2 >= significance: it cannot reject that eps), and
/// asking `epsilon_from(start, r, v, per_threshold_significance)` for the rest.
pub(crate) fn scan_thresholds(
    scores: &CanaryScores,
    config: &LowerBoundConfig,
    epsilon_from: impl Fn(f64, u64, u64, f64) -> f64,
) -> OneRunBound {
    let (candidates, per_threshold) = tested_thresholds(scores, config);
    let m = scores.m();
    let mut order: Vec<&ConfusionCounts> = candidates.iter().filter(|c| c.guesses() > 0).collect();
    let precision = |c: &ConfusionCounts| c.true_positives as f64 / c.guesses() as f64;
    order.sort_by(|a, b| precision(b).total_cmp(&precision(a)));
    let mut best = OneRunBound {
        epsilon_lower_bound: 0.0,
        threshold: None,
        counts: None,
        guesses: 0,
        correct_guesses: 0,
        m,
        delta: config.delta,
        two_m_delta: 2.0 * m as f64 * config.delta,
        thresholds_tested: candidates.len(),
        significance_per_threshold: per_threshold,
        warnings: Vec::new(),
    };
    for c in order {
        if precision(c) <= logistic(best.epsilon_lower_bound) {
            continue;
        }
        let eps = epsilon_from(
            best.epsilon_lower_bound,
            c.guesses(),
            c.true_positives,
            per_threshold,
        );
        if eps > best.epsilon_lower_bound {
            best.epsilon_lower_bound = eps;
            best.threshold = Some(scores.external_threshold(c.threshold));
            best.counts = Some(*c);
            best.guesses = c.guesses();
            best.correct_guesses = c.true_positives;
        }
    }
    best
}

/// The one-run lower bound over the configured thresholds (see the module docs). Works at
/// delta = 0 too.
pub fn one_run_bound(scores: &CanaryScores, config: &LowerBoundConfig) -> Result<OneRunBound> {
    config.validate()?;
    let (m, delta) = (scores.m(), config.delta);
    let mut b = scan_thresholds(scores, config, |start, r, v, sig| {
        one_run_epsilon_from(start, m, r, v, delta, sig)
    });
    if b.two_m_delta > TWO_M_DELTA_WARN_ABOVE {
        b.warnings
            .push(LowerBoundWarning::TwoMDeltaNotSmall { m, delta });
    }
    if b.epsilon_lower_bound == 0.0 && delta > 0.0 {
        let at_zero = scan_thresholds(scores, config, |start, r, v, sig| {
            one_run_epsilon_from(start, m, r, v, 0.0, sig)
        });
        if at_zero.epsilon_lower_bound > 0.0 {
            b.warnings.push(LowerBoundWarning::TwoMDeltaZeroedBound {
                m,
                delta,
                bound_at_delta_zero: at_zero.epsilon_lower_bound,
            });
        }
    }
    Ok(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lower_bound::binomial::binomial_cdf;
    use crate::lower_bound::{LowerBoundMethod, ScoreDirection};

    // The golden vectors (auditing.md section 3) are printed to 5-7 significant digits and come
    // from SciPy's brentq with xtol 1e-6; our search stops at 1e-9. Tolerance: 2e-6 absolute
    // for the 6-7 digit values (brentq's tolerance plus the last printed digit), 1e-5 for the
    // 5-digit ones.

    #[test]
    fn scalar_vectors() {
        let cases: [(u64, u64, u64, f64, f64, f64, f64); 6] = [
            (20000, 3376, 2807, 1e-6, 0.05 / 386.0, 1.133460, 2e-6),
            (20000, 4666, 4499, 1e-6, 0.05 / 374.0, 2.311945, 2e-6),
            (20000, 8233, 8223, 1e-6, 0.05 / 140.0, 4.395568, 2e-6),
            (1000, 100, 90, 1e-5, 0.05, 1.62614, 1e-5),
            (1000, 1000, 750, 1e-5, 0.05, 0.97636, 1e-5),
            (10000, 1000, 1000, 1e-5, 0.05, 5.52934, 1e-5),
        ];
        for (m, r, v, delta, sig, want, tol) in cases {
            let got = one_run_epsilon(m, r, v, delta, sig);
            assert!(
                (got - want).abs() < tol,
                "({m},{r},{v},{delta},{sig}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn all_right_at_delta_zero_is_logit_of_the_root() {
        // p = q^r, so eps = logit(p^(1/r)); r = 100, p = 0.05 -> 3.4930 (4 decimals).
        let got = one_run_epsilon(1000, 100, 100, 0.0, 0.05);
        let p: f64 = 0.05_f64.powf(0.01);
        let exact = (p / (1.0 - p)).ln();
        assert!((got - exact).abs() < 2e-9, "{got} vs {exact}");
        assert!((got - 3.4930).abs() < 5e-5);
    }

    #[test]
    fn alpha_matches_the_definition_summed_naively() {
        // Against the literal max over i of (P[X <= v-1] - P[X <= v-i-1]) / i with exact tails;
        // tolerance 1e-9 relative (the cdf differences lose digits where both are near 1).
        for (r, v, eps) in [
            (100, 90, 1.6),
            (1000, 750, 0.97),
            (3376, 2807, 1.13),
            (50, 1, 0.1),
        ] {
            let q = logistic(eps);
            let mut naive = 0.0_f64;
            for i in 1..=v {
                let hi = binomial_cdf(v - 1, r, q);
                let lo = if v > i {
                    binomial_cdf(v - i - 1, r, q)
                } else {
                    0.0
                };
                naive = naive.max((hi - lo) / i as f64);
            }
            let fast = one_run_alpha(r, v, q);
            assert!(
                ((fast - naive) / naive).abs() < 1e-9,
                "{r} {v}: {fast} vs {naive}"
            );
        }
    }

    /// Deterministic normals Phi^-1((i + 1/2)/n) + mu, 10,000 IN and 10,000 OUT (mu = 0).
    pub(crate) fn jax_scores(mu: f64) -> CanaryScores {
        let normals = |shift: f64| -> Vec<f64> {
            (0..10_000)
                .map(|i| {
                    let p = (i as f64 + 0.5) / 10_000.0;
                    let z = if p > 0.5 {
                        -memaudit_accounting::special::norm_ppf_from_log((-p).ln_1p())
                    } else {
                        memaudit_accounting::special::norm_ppf_from_log(p.ln())
                    };
                    z + shift
                })
                .collect()
        };
        CanaryScores::new(&normals(mu), &normals(0.0), ScoreDirection::HigherIsMember).unwrap()
    }

    // JAX Privacy tests/auditing_test.py: significance 0.05, delta 1e-6, k- = 0, Bonferroni over
    // the frontier. Tolerance 2e-6 (brentq xtol 1e-6 plus the printed digits).
    #[test]
    fn jax_privacy_deterministic_normals() {
        let c = LowerBoundConfig {
            delta: 1e-6,
            ..LowerBoundConfig::default()
        };
        for (mu, want) in [(0.0, 0.0), (1.0, 1.13346), (2.0, 2.311945), (4.0, 4.395568)] {
            let b = one_run_bound(&jax_scores(mu), &c).unwrap();
            assert!(
                (b.epsilon_lower_bound - want).abs() < 2e-6,
                "mu {mu}: {} vs {want} ({b:?})",
                b.epsilon_lower_bound
            );
            assert_eq!(b.m, 20_000);
            assert!((b.two_m_delta - 0.04).abs() < 1e-15);
        }
        // The scalar vectors' Bonferroni divisors are these data's frontier sizes.
        assert_eq!(jax_scores(1.0).frontier().len(), 386);
    }

    /// m canaries, each IN with probability 1/2, scored by randomized response at `eps`: the
    /// score is the inclusion bit, flipped with probability 1/(1 + e^eps). That release is exactly
    /// eps-DP (delta = 0) per canary, so no valid bound may exceed eps (beyond the significance).
    fn randomized_response(m: usize, eps: f64, seed: u64) -> CanaryScores {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let keep = logistic(eps);
        let (mut scores, mut included) = (Vec::with_capacity(m), Vec::with_capacity(m));
        for _ in 0..m {
            let inc: bool = rng.random_bool(0.5);
            let bit = if rng.random_bool(keep) { inc } else { !inc };
            scores.push(if bit { 1.0 } else { 0.0 });
            included.push(inc);
        }
        CanaryScores::from_inclusion(&scores, &included, ScoreDirection::HigherIsMember).unwrap()
    }

    #[test]
    fn bounds_on_an_exactly_eps_dp_release_stay_below_eps_and_come_close() {
        // The sanity law of an audit, on a mechanism whose epsilon is known exactly. Seeds fixed;
        // each bound fails with probability <= 0.05, so a failure here would be a 5% event per
        // (seed, method) for a correct implementation, and a certain one for a broken one.
        // Measured: eps 1 -> one-run 0.939, CP 0.934; eps 2 -> 1.965, 1.974; eps 4 -> 3.787, 3.779.
        let c = LowerBoundConfig::default();
        for (eps, seed) in [(1.0, 1), (2.0, 2), (4.0, 3)] {
            let s = randomized_response(20_000, eps, seed);
            let one = one_run_bound(&s, &c).unwrap().epsilon_lower_bound;
            let cp = crate::lower_bound::clopper_pearson_bound(&s, &c)
                .unwrap()
                .epsilon_lower_bound;
            assert!(one <= eps && one > 0.85 * eps, "eps {eps}: one-run {one}");
            assert!(
                cp <= eps && cp > 0.85 * eps,
                "eps {eps}: Clopper-Pearson {cp}"
            );
        }
    }

    #[test]
    fn gaussian_methods_can_exceed_eps_on_a_non_gaussian_mechanism() {
        // Randomized response at eps = 1 is exactly (1, 0)-DP but its trade-off curve is not
        // Gaussian: GDP and f-DP bound the eps of the Gaussian mechanism that would explain the
        // guesses, which is larger. This pins the documented assumption
        // (`LowerBoundMethod::assumes_gaussian_tradeoff`), while the distribution-free bounds
        // stay below 1.
        let s = randomized_response(20_000, 1.0, 1);
        let c = LowerBoundConfig {
            delta: 1e-5,
            ..LowerBoundConfig::default()
        };
        let gdp = crate::lower_bound::gdp_bound(&s, &c)
            .unwrap()
            .epsilon_lower_bound;
        let fdp = crate::lower_bound::one_run_fdp_bound(&s, &c)
            .unwrap()
            .epsilon_lower_bound;
        let one = one_run_bound(&s, &c).unwrap().epsilon_lower_bound;
        assert!(gdp > 2.0 && fdp > 1.0, "gdp {gdp} f-DP {fdp}");
        assert!(one <= 1.0, "one-run {one}");
        assert!(LowerBoundMethod::Gdp.assumes_gaussian_tradeoff());
        assert!(!LowerBoundMethod::OneRun.assumes_gaussian_tradeoff());
    }

    #[test]
    fn two_m_delta_warning_only_when_not_small() {
        let c = LowerBoundConfig {
            delta: 1e-5,
            ..LowerBoundConfig::default()
        };
        // m = 200,000 at delta 1e-5: 2 m delta = 4.
        let mut ins = vec![1.0; 10];
        ins.extend(vec![0.0; 99_990]);
        let s =
            CanaryScores::new(&ins, &vec![0.0; 100_000], ScoreDirection::HigherIsMember).unwrap();
        let b = one_run_bound(&s, &c).unwrap();
        assert_eq!(b.two_m_delta, 2.0 * 200_000.0 * 1e-5);
        assert!(
            b.warnings
                .iter()
                .any(|w| matches!(w, LowerBoundWarning::TwoMDeltaNotSmall { m: 200_000, .. })),
            "{:?}",
            b.warnings
        );
        // m = 1000 at delta 1e-6: 2 m delta = 0.002, no warning, positive bound.
        let c = LowerBoundConfig {
            delta: 1e-6,
            ..LowerBoundConfig::default()
        };
        let s =
            CanaryScores::new(&[1.0; 100], &[0.0; 900], ScoreDirection::HigherIsMember).unwrap();
        let b = one_run_bound(&s, &c).unwrap();
        assert!(b.epsilon_lower_bound > 0.0);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    }

    #[test]
    fn delta_term_can_zero_the_bound_and_says_so() {
        // 10 perfect guesses among 100,000 canaries at delta 1e-5 (2 m delta = 2).
        let mut outs = vec![0.0; 99_990];
        outs.push(-1.0);
        let s = CanaryScores::new(&[1.0; 10], &outs, ScoreDirection::HigherIsMember).unwrap();
        let c = LowerBoundConfig {
            delta: 1e-5,
            ..LowerBoundConfig::default()
        };
        let b = one_run_bound(&s, &c).unwrap();
        assert_eq!(b.epsilon_lower_bound, 0.0, "{b:?}");
        assert!(
            b.warnings
                .iter()
                .any(|w| matches!(w, LowerBoundWarning::TwoMDeltaZeroedBound { bound_at_delta_zero, .. } if *bound_at_delta_zero > 0.0)),
            "{:?}",
            b.warnings
        );
    }
}
