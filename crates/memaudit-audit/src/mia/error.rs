//! Typed errors of membership inference. Every message names the array (or config field) and,
//! for shape problems, the shape found and the shape expected, so a score file from elsewhere
//! can be fixed without reading the code.

use thiserror::Error;

/// Every error of the `mia` module.
#[derive(Debug, Error)]
pub enum MiaError {
    #[error("score file {path}: missing array `{array}` ({what})")]
    MissingArray {
        path: String,
        array: &'static str,
        what: &'static str,
    },
    #[error("array `{array}` has shape {found:?}, expected {expected}")]
    Shape {
        array: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("array `{array}` (shape {shape:?}) has dtype {found}, expected {expected}")]
    Dtype {
        array: String,
        shape: Vec<usize>,
        found: String,
        expected: &'static str,
    },
    #[error(
        "array `{array}` (shape {shape:?}) is stored in Fortran order; save it with np.ascontiguousarray"
    )]
    FortranOrder { array: String, shape: Vec<usize> },
    #[error("array `{array}` (shape {shape:?}) holds a non-finite value at index {index:?}")]
    NonFinite {
        array: String,
        shape: Vec<usize>,
        index: Vec<usize>,
    },
    #[error(
        "example {example} has no {side} shadow model in `shadow_in` (shape {shape:?}); {attack} needs at least one per example: train more shadow models, or drop the example, or set the LiRA fallback to the column mean"
    )]
    NoShadow {
        example: usize,
        side: &'static str,
        attack: &'static str,
        shape: Vec<usize>,
    },
    #[error("{attack} needs array `{array}`, which the input does not have ({what})")]
    InputMissing {
        attack: &'static str,
        array: &'static str,
        what: &'static str,
    },
    #[error("unknown attack {name:?}; use one of {known} or all")]
    UnknownAttack { name: String, known: String },
    #[error("unknown signal_kind {found:?}; use logit_confidence, probability or log_likelihood")]
    UnknownSignalKind { found: String },
    #[error("mia config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("{what}: {reason}")]
    InvalidInput { what: String, reason: String },
    #[error("score file {path}: {reason}")]
    Npz { path: String, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("zip archive {path}: {source}")]
    Zip {
        path: String,
        #[source]
        source: zip::result::ZipError,
    },
}

/// Results of the `mia` module.
pub type Result<T> = std::result::Result<T, MiaError>;
