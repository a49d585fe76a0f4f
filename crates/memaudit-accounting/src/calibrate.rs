//! Noise calibration: the smallest noise multiplier whose epsilon meets a target.

use crate::error::{AccountingError, Result, check_delta, invalid};
use crate::event::DpEvent;
use crate::{AccountantKind, epsilon_for};

/// Calibration stops when the bracket [lo, hi] satisfies hi / lo - 1 <= this.
pub const CALIBRATION_RELATIVE_TOLERANCE: f64 = 1e-4;
/// The search gives up above this noise multiplier.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e6;
/// Below this noise multiplier the search stops going down (the target is met with ~no noise).
pub const MIN_NOISE_MULTIPLIER: f64 = 1e-6;

/// A calibrated noise multiplier and its epsilon (always <= the target).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// The noise multiplier: within 1e-4 (relative) of the smallest one meeting the target.
    pub noise_multiplier: f64,
    /// Its epsilon.
    pub epsilon: f64,
}

/// Finds the smallest sigma (to [`CALIBRATION_RELATIVE_TOLERANCE`]) with
/// `epsilon_of(sigma) <= target_epsilon`, by doubling then geometric bisection; epsilon is
/// assumed non-increasing in sigma. The returned sigma always meets the target (it is the
/// upper end of the final bracket), so it never overshoots.
///
/// A PLD too large to build (only at tiny sigma) means the accountant cannot evaluate that
/// sigma. The search then stops at the smallest sigma it could evaluate that meets the target
/// instead of bisecting towards the edge of what is computable: that edge says nothing about
/// the target, and each evaluation near it is the slowest there is (a huge target such as 1e300
/// once spent 46 s there). So with the PLD accountant the answer can be up to 2x the true
/// smallest sigma when that sigma is too small to evaluate.
pub fn calibrate(
    mut epsilon_of: impl FnMut(f64) -> Result<f64>,
    target_epsilon: f64,
) -> Result<Calibration> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(invalid(
            "target_epsilon",
            target_epsilon,
            "must be a finite number > 0",
        ));
    }
    // None: the accountant cannot evaluate this sigma.
    let mut eval = |sigma: f64| -> Result<Option<f64>> {
        match epsilon_of(sigma) {
            Err(AccountingError::PldTooLarge { .. }) => Ok(None),
            other => other.map(Some),
        }
    };
    let mut hi = 1.0;
    let mut eps_hi = eval(hi)?.unwrap_or(f64::INFINITY);
    let mut lo;
    if eps_hi > target_epsilon {
        loop {
            lo = hi;
            hi *= 2.0;
            if hi > MAX_NOISE_MULTIPLIER {
                return Err(AccountingError::CalibrationFailed {
                    target_epsilon,
                    max_noise_multiplier: lo,
                    epsilon_at_max: eps_hi,
                });
            }
            eps_hi = eval(hi)?.unwrap_or(f64::INFINITY);
            if eps_hi <= target_epsilon {
                break;
            }
        }
    } else {
        loop {
            lo = hi / 2.0;
            if lo < MIN_NOISE_MULTIPLIER {
                return Ok(Calibration {
                    noise_multiplier: hi,
                    epsilon: eps_hi,
                });
            }
            match eval(lo)? {
                None => {
                    return Ok(Calibration {
                        noise_multiplier: hi,
                        epsilon: eps_hi,
                    });
                }
                Some(e) if e > target_epsilon => break,
                Some(e) => {
                    hi = lo;
                    eps_hi = e;
                }
            }
        }
    }
    while hi / lo - 1.0 > CALIBRATION_RELATIVE_TOLERANCE {
        let mid = (lo * hi).sqrt();
        match eval(mid)? {
            Some(e) if e <= target_epsilon => {
                hi = mid;
                eps_hi = e;
            }
            Some(_) => lo = mid,
            None => break,
        }
    }
    Ok(Calibration {
        noise_multiplier: hi,
        epsilon: eps_hi,
    })
}

/// The smallest noise multiplier for which `event_for_sigma(sigma)` is (target_epsilon,
/// delta)-DP under the chosen accountant (add-or-remove-one neighbours, default settings).
pub fn calibrate_noise(
    event_for_sigma: impl Fn(f64) -> DpEvent,
    delta: f64,
    target_epsilon: f64,
    kind: AccountantKind,
) -> Result<Calibration> {
    check_delta(delta)?;
    calibrate(
        |sigma| Ok(epsilon_for(&event_for_sigma(sigma), delta, kind)?.epsilon),
        target_epsilon,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_threshold_of_a_known_function() {
        // epsilon = 3 / sigma: the smallest sigma with epsilon <= 1.5 is 2.
        let c = calibrate(|s| Ok(3.0 / s), 1.5).unwrap();
        assert!(c.epsilon <= 1.5);
        assert!(
            c.noise_multiplier >= 2.0 && c.noise_multiplier <= 2.0 * (1.0 + 1e-4),
            "{c:?}"
        );
        let c = calibrate(|s| Ok(3.0 / s), 1e3).unwrap();
        assert!(
            c.noise_multiplier >= 3e-3 && c.noise_multiplier <= 3e-3 * 1.0001,
            "{c:?}"
        );
    }

    #[test]
    fn stops_at_the_edge_of_what_the_accountant_can_evaluate() {
        // Below sigma 0.1 the "PLD" cannot be built; every evaluable sigma meets a huge target.
        // The search must stop at the smallest evaluable power of two, not bisect towards 0.1.
        let mut calls = 0;
        let c = calibrate(
            |s| {
                calls += 1;
                if s < 0.1 {
                    Err(AccountingError::PldTooLarge {
                        points: 1 << 40,
                        limit: 1 << 30,
                    })
                } else {
                    Ok(1.0 / s)
                }
            },
            1e300,
        )
        .unwrap();
        assert_eq!(c.noise_multiplier, 0.125, "{c:?}");
        // sigma = 1, 1/2, 1/4, 1/8 and the refused 1/16.
        assert_eq!(calls, 5);
    }

    #[test]
    fn reports_unreachable_targets() {
        let err = calibrate(|_| Ok(f64::INFINITY), 1.0).unwrap_err();
        assert!(
            matches!(err, AccountingError::CalibrationFailed { .. }),
            "{err}"
        );
        assert!(calibrate(|s| Ok(1.0 / s), 0.0).is_err());
        assert!(calibrate(|s| Ok(1.0 / s), f64::NAN).is_err());
    }
}
