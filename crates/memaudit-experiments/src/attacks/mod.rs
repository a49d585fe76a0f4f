//! Song, Ristenpart and Shmatikov's malicious training algorithms ("Machine Learning Models that
//! Remember Too Much", CCS 2017) end to end, as experiments: `memaudit attack lsb`,
//! `correlation`, `sign` and `capacity`.
//!
//! Each attack trains a conventional model and a malicious one with the same data, model,
//! optimizer and seed (LSB encoding needs no malicious training: it post-processes the
//! conventional model). It then decodes the secret from the malicious model, as the attacker
//! would, and reports both accuracies, the capacity used, the decoding quality next to the
//! mean-image guess and to the same decoder run on the conventional model (the control).
//!
//! Run folder: `OUT/run.json` (the typed result as `results`), `OUT/recovered.png` (the grid of
//! originals next to recovered images), and `OUT/conventional/` and `OUT/malicious/`, each an
//! ordinary training run (`metrics.csv`, checkpoints) that `memaudit eval --run` reads and that
//! [`AttackSettings::conventional`] can reuse in later attacks. The HTML reports are the
//! caller's: [`AttackHooks::training_report`] renders each model's, and the attack's own is
//! rendered from the typed result (which carries the grid as SVG).
//!
//! - [`lsb`]: attack A, LSB encoding (white box, post-processing).
//! - [`regulariser`]: attacks B and C, correlated value and sign encoding (white box, a malicious
//!   penalty added through the engine's `ParamPenalty` hook).
//! - [`capacity`]: attack D, capacity abuse (black box, synthetic examples whose labels spell
//!   the secret).

pub mod capacity;
pub mod lsb;
pub mod regulariser;
pub mod secrets;
pub mod task;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};
use crate::optim::OptimSettings;
use crate::train::{ModelSettings, PrivacySettings, RunSettings};

pub use capacity::{CapacityConfig, CapacityResult};
pub use lsb::{LsbConfig, LsbResult};
pub use regulariser::{
    CorrelationConfig, Encoding, RegulariserConfig, RegulariserResult, SignConfig,
};
pub use task::{AttackHooks, Scale, TrainedModel, model_name};

/// What every attack shares: data, secret, model, training, privacy and the run folder. Field
/// names are the CLI's flags (`secret_count` for `--secret-count`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackSettings {
    /// Training data: mnist, fashion-mnist, digits (8x8, quick runs) or imdb (bag-of-words
    /// logistic regression; lsb and sign only).
    pub dataset: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training examples (a quick run; the report states the scale).
    pub max_train: Option<usize>,
    /// imdb: TF-IDF features of the logistic regression (the paper's 10^5).
    pub features: usize,
    /// What to smuggle out: train-images, lfw, imdb or a folder of PNG images of one size
    /// (`None`: train-images, or imdb for the imdb dataset).
    pub secret: Option<String>,
    /// Images (or documents) to encode (`None`: as many as the attack's capacity holds).
    pub secret_count: Option<usize>,
    /// Reuse the conventional model of this earlier run folder instead of training it.
    pub conventional: Option<PathBuf>,
    /// Image pairs (original, recovered) in the report's grid.
    pub grid_images: usize,
    pub model: ModelSettings,
    pub optim: OptimSettings,
    pub privacy: PrivacySettings,
    pub run: RunSettings,
}

impl Default for AttackSettings {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            data_dir: None,
            max_train: None,
            features: 100_000,
            secret: None,
            secret_count: None,
            conventional: None,
            grid_images: 40,
            model: ModelSettings::default(),
            optim: OptimSettings::default(),
            privacy: PrivacySettings::default(),
            run: RunSettings::default(),
        }
    }
}

/// The config section of the shared settings (errors name `common.secret_count`).
pub(crate) const COMMON: &str = "common";

/// An error of the shared settings' own checks (`privacy.clip`), named under `common.`.
pub(crate) fn in_common(e: ExperimentError) -> ExperimentError {
    match e {
        ExperimentError::Invalid {
            field,
            value,
            reason,
        } if !field.starts_with("common.") => ExperimentError::Invalid {
            field: format!("{COMMON}.{field}"),
            value,
            reason,
        },
        ExperimentError::Setting { field, source } if !field.starts_with("common.") => {
            ExperimentError::Setting {
                field: format!("{COMMON}.{field}"),
                source,
            }
        }
        e => e,
    }
}

impl AttackSettings {
    /// Checks that need no data (so a bad setting fails before anything is loaded).
    pub fn validate(&self) -> Result<()> {
        self.privacy.validate().map_err(in_common)?;
        self.run.validate().map_err(in_common)?;
        if self.max_train == Some(0) {
            return invalid("common.max_train", 0, "must be at least 1");
        }
        if self.secret_count == Some(0) {
            return invalid("common.secret_count", 0, "must be at least 1");
        }
        if self.grid_images == 0 {
            return invalid("common.grid_images", 0, "must be at least 1");
        }
        if self.features == 0 {
            return invalid("common.features", 0, "must be at least 1");
        }
        Ok(())
    }

    /// The data settings of the training runs (recorded in their run.json, which `memaudit
    /// eval` and `--conventional` read back).
    pub fn data(&self) -> crate::datasets::DataSettings {
        crate::datasets::DataSettings {
            data: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            max_train: self.max_train,
            ..Default::default()
        }
    }

    /// The seed: the given one, else the one recorded by the run being resumed, else a fresh one.
    pub fn seed(&self) -> u64 {
        if let Some(s) = self.run.seed {
            return s;
        }
        if self.run.resume {
            let recorded = std::fs::read(self.run.out.join("run.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["seed"].as_u64());
            if let Some(s) = recorded {
                return s;
            }
        }
        self.run.seed()
    }
}

/// Accuracy difference in percentage points (conventional - malicious).
pub(crate) fn drop_points(conv: f64, mal: f64) -> f64 {
    (conv - mal) * 100.0
}

#[cfg(test)]
mod tests;
