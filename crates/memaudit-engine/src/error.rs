//! Typed errors of the engine.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// One setting of a configuration out of its range; `field` is the config field's name, so
    /// a caller can name its own flag for it.
    #[error("{field} = {value}: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error(
        "non-finite {what} at step {step} in {layer}; training stopped (the last good checkpoint is kept)"
    )]
    NonFinite {
        what: String,
        step: u64,
        layer: String,
    },
    /// The accountant refused an event or failed to compute epsilon.
    #[error("accounting: {0}")]
    Accounting(#[from] memaudit_accounting::AccountingError),
    /// A job that certainly does not fit in the memory the machine has left.
    #[error(
        "{what} needs at least {} of memory, but {} is available",
        crate::memory::format_bytes(*needed),
        crate::memory::format_bytes(*available)
    )]
    OutOfMemory {
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, EngineError>;
