//! Training as a library: the `train` experiment ([`TrainExperimentConfig`], [`run()`]), and what
//! every training experiment shares: the settings, the one builder of the engine's
//! `TrainConfig` ([`plan::train_config`]), the data of a run ([`prepare()`]) and training into a
//! run folder ([`folder::train_in_folder`]).

pub mod folder;
pub mod plan;
pub mod prepare;
pub mod run;
pub mod settings;

pub use folder::{
    AUDIT_SIGNIFICANCE, METRIC_COLUMNS, METRICS_CSV, TrainHooks, TrainRun, TrainSummary,
    WhiteBoxAudit, train_in_folder,
};
pub use plan::{
    PrivacyStatement, assemble_train_config, build_model, check_training_memory, privacy_config,
    privacy_config_at, statement, train_config,
};
pub use prepare::{Prepared, flatten_for, prepare, prepare_with};
pub use run::{TrainExperimentConfig, TrainResult, TrainRunHooks, run, run_with};
pub use settings::{InputShape, ModelSettings, PrivacySettings, RunSettings, RunShape};
