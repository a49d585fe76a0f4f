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
/// upper end of the final bracket), so it never overshoots. A PLD too large to build counts as
/// "target not met" (such PLDs only arise at tiny sigma).
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
    let mut eval = |sigma: f64| -> Result<f64> {
        match epsilon_of(sigma) {
            Err(AccountingError::PldTooLarge { .. }) => Ok(f64::INFINITY),
            other => other,
        }
    };
    let mut hi = 1.0;
    let mut eps_hi = eval(hi)?;
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
            eps_hi = eval(hi)?;
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
            let e = eval(lo)?;
            if e > target_epsilon {
                break;
            }
            hi = lo;
            eps_hi = e;
        }
    }
    while hi / lo - 1.0 > CALIBRATION_RELATIVE_TOLERANCE {
        let mid = (lo * hi).sqrt();
        let e = eval(mid)?;
        if e <= target_epsilon {
            hi = mid;
            eps_hi = e;
        } else {
            lo = mid;
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
