//! Auditing f-DP in one run (Mahloujifar, Melis & Chaudhuri 2024, arXiv 2410.22235), guessing
//! IN only, as JAX Privacy's `epsilon_one_run_fdp`.
//!
//! Same experiment and guesses as [`super::one_run`], but the null hypothesis is a trade-off
//! curve rather than (eps, delta) alone: "the training is at least as private as the Gaussian
//! mechanism calibrated to (eps, delta)", i.e. f = G_mu with mu = 1/sigma(eps, delta) (Balle &
//! Wang's exact calibration). Because a whole curve constrains the guesses, not one point of it,
//! the same counts certify a much larger eps than the (eps, delta) test.
//!
//! The test is the paper's recursion with a cap on the guesses ("audit_rh_with_cap"): starting
//! from the significance spread over the v right and r - v wrong guesses,
//!   r_v = tau v / m,  h_v = tau (r - v) / m,
//! and stepping i = v-1, ..., 0:
//!   h_i = max(h_{i+1}, f^-1-blow-up(r_{i+1})),   r_i = min(1, r_{i+1} + i/(r - i) (h_i - h_{i+1})),
//! where the inverse blow-up of G_mu is x -> Phi(Phi^-1(x) - mu). The claim is rejected when
//! r_0 + h_0 > r/m (the masses needed exceed what the guesses can carry). The recursion stops
//! early once h stops changing (then nothing changes any more).

use memaudit_accounting::gaussian_sigma_for_epsilon_delta;
use memaudit_accounting::special::{ndtr, norm_ppf_from_log};

use super::error::{LowerBoundError, Result};
use super::one_run::{OneRunBound, scan_thresholds};
use super::thresholds::CanaryScores;
use super::{LowerBoundConfig, largest_rejected_epsilon};

/// x -> Phi(Phi^-1(x) - mu), the inverse blow-up of the Gaussian trade-off curve G_mu.
fn gaussian_blow_up_inverse(x: f64, mu: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    ndtr(norm_ppf_from_log(x.ln()) - mu)
}

/// True when `correct` of `guesses` among m canaries reject "as private as the Gaussian
/// mechanism at (eps, delta)" at `significance`.
fn fdp_rejects(
    m: u64,
    guesses: u64,
    correct: u64,
    eps: f64,
    delta: f64,
    significance: f64,
) -> bool {
    let sigma = gaussian_sigma_for_epsilon_delta(eps, delta);
    let mu = if sigma == 0.0 {
        f64::INFINITY
    } else {
        1.0 / sigma
    };
    let mf = m as f64;
    let mut r = significance * correct as f64 / mf;
    let mut h = significance * (guesses - correct) as f64 / mf;
    for i in (0..correct).rev() {
        let h_next = h.max(gaussian_blow_up_inverse(r, mu));
        if h_next == h {
            break;
        }
        let i = i as f64;
        r = (r + i / (guesses as f64 - i) * (h_next - h)).min(1.0);
        h = h_next;
    }
    r + h > guesses as f64 / mf
}

/// The largest eps >= `start` whose Gaussian f-DP claim the counts reject (or `start`).
fn fdp_epsilon_from(
    start: f64,
    m: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    significance: f64,
) -> f64 {
    largest_rejected_epsilon(start, |eps| {
        fdp_rejects(m, guesses, correct, eps, delta, significance)
    })
}

/// The scalar f-DP one-run bound: m canaries, r guesses, v right. Needs delta > 0.
pub fn one_run_fdp_epsilon(
    m: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    significance: f64,
) -> f64 {
    fdp_epsilon_from(0.0, m, guesses, correct, delta, significance)
}

/// The f-DP one-run lower bound over the configured thresholds. Needs delta > 0 (no Gaussian
/// mechanism is (eps, 0)-DP).
pub fn one_run_fdp_bound(scores: &CanaryScores, config: &LowerBoundConfig) -> Result<OneRunBound> {
    config.validate()?;
    if config.delta == 0.0 {
        return Err(LowerBoundError::NeedsPositiveDelta {
            method: "one-run-fdp",
        });
    }
    let (m, delta) = (scores.m(), config.delta);
    Ok(scan_thresholds(scores, config, |start, r, v, sig| {
        fdp_epsilon_from(start, m, r, v, delta, sig)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower_bound::one_run::tests::jax_scores;

    // JAX Privacy tests/auditing_test.py, f-DP variant: deterministic normals, 10,000 IN and
    // 10,000 OUT, significance 0.05, delta 1e-6: 0, 2.164749, 4.7218075, 9.133752 for mu = 0, 1,
    // 2, 4. Tolerance 2e-6: SciPy's brentq stops at xtol 1e-6, the references are printed to 7-8
    // digits, and sigma(eps, delta) is solved to 1e-14 relative here (1e-12 in dp_accounting).
    #[test]
    fn jax_privacy_deterministic_normals_fdp() {
        let c = LowerBoundConfig {
            delta: 1e-6,
            ..LowerBoundConfig::default()
        };
        for (mu, want) in [
            (0.0, 0.0),
            (1.0, 2.164749),
            (2.0, 4.7218075),
            (4.0, 9.133752),
        ] {
            let b = one_run_fdp_bound(&jax_scores(mu), &c).unwrap();
            assert!(
                (b.epsilon_lower_bound - want).abs() < 2e-6,
                "mu {mu}: {} vs {want} ({b:?})",
                b.epsilon_lower_bound
            );
        }
    }

    #[test]
    fn fdp_is_at_least_the_one_run_bound_on_the_same_counts() {
        // A whole trade-off curve constrains more than one (eps, delta) point.
        for (m, r, v) in [(1000, 100, 90), (20000, 3376, 2807)] {
            let plain = crate::lower_bound::one_run_epsilon(m, r, v, 1e-5, 0.05);
            let fdp = one_run_fdp_epsilon(m, r, v, 1e-5, 0.05);
            assert!(fdp >= plain, "{m} {r} {v}: f-DP {fdp} < one-run {plain}");
        }
    }

    #[test]
    fn fdp_refuses_delta_zero() {
        let s = CanaryScores::new(
            &[1.0],
            &[0.0],
            crate::lower_bound::ScoreDirection::HigherIsMember,
        )
        .unwrap();
        assert!(matches!(
            one_run_fdp_bound(&s, &LowerBoundConfig::default()),
            Err(LowerBoundError::NeedsPositiveDelta { .. })
        ));
    }
}
