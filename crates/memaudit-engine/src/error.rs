//! Typed errors of the engine.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("invalid configuration: {0}")]
    Config(String),
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
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, EngineError>;
