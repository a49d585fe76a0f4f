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
    /// a caller can name its own flag or file key for it; other settings the reason names are
    /// spelt the same way (`model.gpt_context 16`).
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
    // Issue 13 phase 2 (train, secret-sharer, exposure, extract, dp-sweep).
    /// A file of a run (its folder, manifest, logs) that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose content does not fit what the experiment needs (a manifest of another run,
    /// a log cut short); `message` says what to do.
    #[error("{}: {message}", path.display())]
    InFile { path: PathBuf, message: String },
    /// A step of a protocol that cannot go on (`what` names the step and the setting to change).
    #[error("{what}")]
    Protocol { what: String },
    /// An audit measurement (exposure, extraction, lower bounds) failed; `stage` says which.
    #[error("{stage}: {source}")]
    Audit {
        stage: String,
        #[source]
        source: Box<memaudit_audit::AuditError>,
    },
    /// A lower bound on epsilon (the white-box or black-box audit a run carries) failed.
    #[error("{stage}: {source}")]
    LowerBound {
        stage: String,
        #[source]
        source: Box<memaudit_audit::lower_bound::LowerBoundError>,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The attacks' own errors (memaudit-attacks: a secret that does not fit, a bad image).
    #[error(transparent)]
    Attack(Box<memaudit_attacks::AttackError>),
    /// The observer asked the experiment to stop ([`crate::Observer::cancelled`]); `at` names
    /// the safe point it stopped at. Every atomic unit finished before it is kept, so a rerun
    /// resumes there.
    #[error("cancelled {at}; rerun to resume from the last completed unit")]
    Cancelled { at: String },
    /// A config given as a value (a Python dict, JSON) that does not fit the experiment's
    /// config: `key` is the dotted path of the offending field where there is one.
    #[error("config{}: {message}", key.as_ref().map_or(String::new(), |k| format!(".{k}")))]
    ConfigValue {
        key: Option<String>,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ExperimentError {
    /// An audit error at `stage` (`"exposure before training"`, `"extraction"`).
    pub fn audit(stage: impl Into<String>, source: memaudit_audit::AuditError) -> Self {
        Self::Audit {
            stage: stage.into(),
            source: Box::new(source),
        }
    }

    /// The experiment stopped at the safe point `at` because its observer asked it to.
    pub fn cancelled(at: impl Into<String>) -> Self {
        Self::Cancelled { at: at.into() }
    }

    /// A protocol step that cannot go on.
    pub fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol { what: what.into() }
    }
}

/// A lower bound computed from score files (`memaudit lower-bound`): the stage is the command.
impl From<memaudit_audit::lower_bound::LowerBoundError> for ExperimentError {
    fn from(e: memaudit_audit::lower_bound::LowerBoundError) -> Self {
        Self::LowerBound {
            stage: crate::lower_bound::STAGE.into(),
            source: Box::new(e),
        }
    }
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

impl From<memaudit_attacks::AttackError> for ExperimentError {
    fn from(e: memaudit_attacks::AttackError) -> Self {
        Self::Attack(Box::new(e))
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
