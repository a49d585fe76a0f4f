//! Typed errors of the accountants.

use crate::event::NeighboringRelation;

/// Everything the accountants can refuse. Messages name the parameter and say what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountingError {
    /// A number outside its domain (NaN, negative noise, q outside [0, 1], ...).
    #[error("invalid {name} = {value}: {requirement}")]
    InvalidParameter {
        /// The parameter, as the caller named it (e.g. `delta`, `orders[3]`).
        name: String,
        /// The offending value.
        value: f64,
        /// What is allowed.
        requirement: String,
    },
    /// The accountant cannot handle this event under this neighbouring relation.
    #[error("the {accountant} accountant does not support {event} under {relation}: {reason}")]
    Unsupported {
        /// `RDP` or `PLD`.
        accountant: &'static str,
        /// The event's kind (and parameters where helpful).
        event: String,
        /// The accountant's neighbouring relation.
        relation: NeighboringRelation,
        /// Why, and what to use instead.
        reason: String,
    },
    /// The discretised privacy loss distribution would not fit the memory limit.
    #[error(
        "the PLD would need {points} grid points (limit {limit}); epsilon is very large here: use \
         the RDP accountant or a coarser value_discretization_interval"
    )]
    PldTooLarge {
        /// Points the grid would need.
        points: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Composition counts multiplied past u64.
    #[error("the total number of compositions overflows a 64-bit counter")]
    CountOverflow,
    /// No noise multiplier in the searched range reaches the target.
    #[error(
        "no noise multiplier up to {max_noise_multiplier} gives epsilon <= {target_epsilon} \
         (epsilon there: {epsilon_at_max}); raise the target epsilon or delta, or reduce the steps"
    )]
    CalibrationFailed {
        /// The target.
        target_epsilon: f64,
        /// The largest noise multiplier tried.
        max_noise_multiplier: f64,
        /// Its epsilon.
        epsilon_at_max: f64,
    },
}

/// Shorthand for the crate's results.
pub type Result<T> = std::result::Result<T, AccountingError>;

pub(crate) fn invalid(
    name: impl Into<String>,
    value: f64,
    requirement: impl Into<String>,
) -> AccountingError {
    AccountingError::InvalidParameter {
        name: name.into(),
        value,
        requirement: requirement.into(),
    }
}

/// delta must be in (0, 1).
pub(crate) fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(invalid("delta", delta, "must be in (0, 1)"))
    }
}

/// epsilon must be finite and >= 0.
pub(crate) fn check_epsilon(epsilon: f64) -> Result<()> {
    if epsilon >= 0.0 && epsilon.is_finite() {
        Ok(())
    } else {
        Err(invalid("epsilon", epsilon, "must be a finite number >= 0"))
    }
}
