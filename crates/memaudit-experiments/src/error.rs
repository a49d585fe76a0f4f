//! Typed errors of the experiments: configuration files (naming the file, line and key),
//! settings out of range (naming the config field), and the algorithm crates' own errors, kept
//! as sources rather than flattened to strings.

use std::path::PathBuf;

use thiserror::Error;

/// Every error of an experiment's configuration or run.
#[derive(Debug, Error)]
pub enum ExperimentError {
    /// A configuration file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file whose extension says neither TOML nor JSON.
    #[error("{}: a configuration file must end in .toml or .json", path.display())]
    ConfigFormat { path: PathBuf },
    /// A configuration file that does not parse or does not fit the experiment's config: `line`
    /// (1-based, where the parser knows it) and `key` (the dotted path of the offending field,
    /// where there is one) locate it.
    #[error("{}{}{}: {message}", path.display(), line.map_or(String::new(), |l| format!(" line {l}")), key.as_ref().map_or(String::new(), |k| format!(", key `{k}`")))]
    ConfigFile {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting out of its range. `field` is the config field's dotted path (`mlp.hidden`), so
    /// a caller can name its own flag or file key for it.
    #[error("{field} {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// A dataset that is not in the data cache yet (`field` names the setting that chose it).
    #[error("{field} {name}: run `memaudit data fetch --only {name}` first")]
    MissingData {
        field: String,
        name: String,
        #[source]
        source: Box<memaudit_data::DataError>,
    },
    /// An algorithm crate refused what a setting asked for (a file that does not parse, a
    /// target epsilon no noise reaches, a cache of another format): `field` is the setting's
    /// config path, `source` the crate's own error.
    #[error("{field}: {source}")]
    Setting {
        field: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// One model of an experiment (a shadow model, an attack's model) failed: `what` says which.
    #[error("{what}: {source}")]
    Model {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The effective configuration could not be written (as TOML or JSON).
    #[error("writing the configuration: {0}")]
    WriteConfig(String),
    // The algorithm crates' errors, boxed: they are large, and every `Result` of this crate
    // would carry their size.
    #[error(transparent)]
    Dynamics(Box<memaudit_audit::dynamics::DynamicsError>),
    #[error(transparent)]
    Engine(Box<memaudit_engine::EngineError>),
    #[error(transparent)]
    Data(Box<memaudit_data::DataError>),
    #[error(transparent)]
    Mia(Box<memaudit_audit::mia::MiaError>),
    /// The audit pipeline's own errors (bounds, accounting, stage files).
    #[error(transparent)]
    Pipeline(Box<crate::pipeline::PipelineError>),
}

impl From<crate::pipeline::PipelineError> for ExperimentError {
    fn from(e: crate::pipeline::PipelineError) -> Self {
        Self::Pipeline(Box::new(e))
    }
}

impl From<memaudit_audit::mia::MiaError> for ExperimentError {
    fn from(e: memaudit_audit::mia::MiaError) -> Self {
        Self::Mia(Box::new(e))
    }
}

impl From<memaudit_audit::dynamics::DynamicsError> for ExperimentError {
    fn from(e: memaudit_audit::dynamics::DynamicsError) -> Self {
        Self::Dynamics(Box::new(e))
    }
}

impl From<memaudit_engine::EngineError> for ExperimentError {
    fn from(e: memaudit_engine::EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl From<memaudit_data::DataError> for ExperimentError {
    fn from(e: memaudit_data::DataError) -> Self {
        Self::Data(Box::new(e))
    }
}

pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

/// `Err(ExperimentError::Invalid { .. })` for a field.
pub fn invalid<T>(
    field: impl Into<String>,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> Result<T> {
    Err(ExperimentError::Invalid {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    })
}
