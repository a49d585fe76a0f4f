//! Typed errors of the memorization-dynamics measurements. Messages name the offending setting
//! and say what to do.

use thiserror::Error;

/// Every error of [`crate::dynamics`].
#[derive(Debug, Error)]
pub enum DynamicsError {
    /// A setting outside its range (`what` names it, e.g. "noise fraction").
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The model cannot be probed by LASS / CSR: it is not a softmax classifier over dense inputs.
    #[error(
        "{model} is not a softmax classifier over dense inputs; critical samples (LASS) need one (an MLP or a CNN on images)"
    )]
    NotAClassifier { model: String },
    /// An error of the training engine.
    #[error(transparent)]
    Engine(#[from] memaudit_engine::EngineError),
}

pub type Result<T> = std::result::Result<T, DynamicsError>;

pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> DynamicsError {
    DynamicsError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}
