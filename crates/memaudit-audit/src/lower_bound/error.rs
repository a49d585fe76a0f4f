//! Typed errors of the lower-bound library. Messages name the input and say what is allowed.

use std::path::PathBuf;

use thiserror::Error;

/// Which canary score set an input error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreSide {
    /// Canaries that were trained on (members).
    In,
    /// Canaries that were held out.
    Out,
}

impl std::fmt::Display for ScoreSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScoreSide::In => "IN (member)",
            ScoreSide::Out => "OUT (non-member)",
        })
    }
}

/// Every error of the lower-bound computations and score-file reading.
#[derive(Debug, Error)]
pub enum LowerBoundError {
    #[error(
        "the {side} canary scores are empty; every bound needs at least one IN and one OUT score"
    )]
    EmptyScores { side: ScoreSide },
    #[error("{side} canary score #{index} is {value}; every score must be a finite number")]
    NonFiniteScore {
        side: ScoreSide,
        index: usize,
        value: f64,
    },
    #[error("significance must be in (0, 0.5], got {0}")]
    Significance(f64),
    #[error("delta must be in [0, 1), got {0}")]
    Delta(f64),
    #[error(
        "the {method} bound needs delta > 0 (with delta = 0 it is infinite for any signal); pass the delta of the guarantee being audited"
    )]
    NeedsPositiveDelta { method: &'static str },
    #[error("the explicit threshold must be a number, got {0}")]
    Threshold(f64),
    #[error("group size must be at least 1, got {0}")]
    GroupSize(u32),
    #[error(
        "group size {0} > 1 is only supported with delta = 0 (Jagielski et al.'s ln(p1/p0)/k; group privacy also inflates delta)"
    )]
    GroupSizeWithDelta(u32),
    #[error("{scores} canary scores but {bits} inclusion bits; give one bit per canary")]
    InclusionLength { scores: usize, bits: usize },
    #[error("FPR must be in [0, 1], got {0}")]
    Fpr(f64),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    ScoreLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    ScoreFile { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Npy {
        path: PathBuf,
        #[source]
        source: memaudit_data::DataError,
    },
}

/// Result of the lower-bound library.
pub type Result<T> = std::result::Result<T, LowerBoundError>;
