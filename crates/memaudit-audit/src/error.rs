//! Typed errors of the audit library. Messages name the offending input and say what to do.

use thiserror::Error;

/// A canary template that cannot be parsed. `column` is the 1-based character position.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "canary template {template:?} has no slot; add one such as {{digits:9}}, {{letters:5}} or {{alphabet=ABC:4}}"
    )]
    NoSlot { template: String },
    #[error(
        "canary template {template:?}, column {column}: unknown slot type {kind:?}; use digits, letters or alphabet=SYMBOLS"
    )]
    UnknownSlotType {
        template: String,
        column: usize,
        kind: String,
    },
    #[error("canary template {template:?}, column {column}: {reason}")]
    Malformed {
        template: String,
        column: usize,
        reason: String,
    },
    #[error(
        "canary template {template:?}: the randomness space has more than 2^128 candidates; use fewer slot positions"
    )]
    SpaceTooLarge { template: String },
}

/// Every error of the audit library.
#[derive(Debug, Error)]
pub enum AuditError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("canary tokenisation: {0}")]
    Tokenize(String),
    #[error(
        "the language model needs at least one token before the first slot to score it; pass a context token (e.g. the line separator) or put literal text before the slot"
    )]
    EmptyContext,
    #[error("token id {token} is outside the model's vocabulary of {vocab} tokens")]
    TokenOutOfVocab { token: u32, vocab: usize },
    #[error("candidate index {index} is outside the randomness space of {size} candidates")]
    IndexOutOfSpace { index: u128, size: u128 },
    #[error(
        "the randomness space has {size} candidates, above the exact limit of {limit}; raise the limit (e.g. --exact-limit) or use the sampled/extrapolated exposure"
    )]
    SpaceAboveLimit { size: u128, limit: u128 },
    #[error(
        "cannot draw {requested} distinct candidates from a space of {size} with {excluded} excluded; use a larger slot space or fewer canaries/references"
    )]
    NotEnoughCandidates {
        requested: u128,
        size: u128,
        excluded: u128,
    },
    #[error("canary insertion: {0}")]
    Insertion(String),
    #[error("{what}: {reason}")]
    InvalidInput { what: String, reason: String },
    #[error("skew-normal fit: {0}")]
    Fit(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error(transparent)]
    Mia(#[from] crate::mia::MiaError),
}

pub type Result<T> = std::result::Result<T, AuditError>;

pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> AuditError {
    AuditError::InvalidInput {
        what: what.into(),
        reason: reason.into(),
    }
}
