//! Typed errors. Every variant names the file (and line, byte or flag where there is one) and, where
//! it helps, says what to do; the CLI prints the `Display` text as its one-line error.

use std::path::PathBuf;

/// Everything that can go wrong reading, tokenizing or fetching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: no such file or folder", .path.display())]
    NotFound { path: PathBuf },

    #[error("{}: is a folder; give the path of a file", .path.display())]
    IsADirectory { path: PathBuf },

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: invalid UTF-8 at line {line}, byte {byte} (offset in the file); convert the file to UTF-8",
        .path.display()
    )]
    InvalidUtf8 {
        path: PathBuf,
        line: usize,
        byte: usize,
    },

    #[error("{}: the corpus is empty (no text{})", .path.display(), if *.folder { " in any file of the folder" } else { "" })]
    EmptyCorpus { path: PathBuf, folder: bool },

    #[error("{}: not an IDX file: {reason}", .path.display())]
    BadIdx { path: PathBuf, reason: String },

    #[error("{}: truncated: expected {expected} bytes of {what}, found {found}", .path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },

    #[error("{}: line {line}: {reason}", .path.display())]
    BadCsv {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("{}: {reason}", .path.display())]
    BadNpy { path: PathBuf, reason: String },

    #[error("{}: {reason}", .path.display())]
    BadFormat { path: PathBuf, reason: String },

    #[error("vocabulary: {0}")]
    BadVocab(String),

    #[error("token {token:?} (at token {position}) is not in the vocabulary and it has no <unk>")]
    UnknownToken { token: String, position: usize },

    #[error("token id {id} is outside the vocabulary (size {size})")]
    UnknownId { id: u32, size: usize },

    #[error("{0}")]
    InvalidArgument(String),

    #[error(
        "{}: MD5 {actual} does not match the pinned {expected}{}",
        .path.display(),
        if .hint.is_empty() { String::new() } else { format!("; {}", .hint) }
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
        hint: String,
    },

    #[error("{dataset}: {reason}")]
    Fetch { dataset: String, reason: String },
}

/// Shorthand for this crate's results.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Map an I/O error on `path` to the most telling variant (missing file, folder, other).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::NotFound => DataError::NotFound { path },
            std::io::ErrorKind::IsADirectory => DataError::IsADirectory { path },
            _ => DataError::Io { path, source },
        }
    }
}
