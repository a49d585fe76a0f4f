//! The optimizer settings of an experiment, as the CLI's optimizer flags spell them, and their
//! translation into the engine's [`OptimizerConfig`] and [`Schedule`].

use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::{EngineError, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};

/// Optimizer, learning rate and schedule (the `--optimizer`, `--lr`, ... flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSettings {
    /// sgd, adam or rmsprop (`None`: sgd for the classifiers of the experiments).
    pub optimizer: Option<String>,
    /// Learning rate (`None`: 0.1 for sgd, 0.001 for adam and rmsprop).
    pub lr: Option<f32>,
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 weight decay (coupled, as PyTorch).
    pub weight_decay: f32,
    /// constant, cosine or step.
    pub schedule: String,
    /// step schedule: multiply the rate by `gamma` every this many epochs.
    pub step_every: usize,
    pub gamma: f32,
}

impl Default for OptimSettings {
    fn default() -> Self {
        Self {
            optimizer: None,
            lr: None,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            schedule: "constant".into(),
            step_every: 10,
            gamma: 0.1,
        }
    }
}

impl OptimSettings {
    /// The optimizer of a classifier: SGD at 0.1 unless the settings say otherwise.
    pub fn optimizer(&self, section: &str) -> Result<OptimizerConfig> {
        self.optimizer_with(section, "sgd", 1e-3)
    }

    /// The optimizer for `model`: language models default to Adam at 0.003. With SGD at 0.1
    /// the 2x200 LSTM stayed near the unigram loss after 2 epochs on plain-English corpora of
    /// 0.7 MB and its canaries showed almost no exposure; Adam at 0.003 learns and memorises on
    /// every corpus measured (docs/secret-sharer.md, "Defaults"). Transformers diverge at 0.003
    /// more often: Adam at the usual 0.001. Classifiers keep SGD at 0.1, which the digits/MNIST
    /// runs were tuned with.
    pub fn optimizer_for(&self, section: &str, model: &ModelConfig) -> Result<OptimizerConfig> {
        match model {
            ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } => {
                self.optimizer_with(section, "adam", 3e-3)
            }
            ModelConfig::Gpt { .. } => self.optimizer_with(section, "adam", 1e-3),
            _ => self.optimizer(section),
        }
    }

    /// `default` when no optimizer is named; `adam_lr` when Adam runs without a rate.
    pub fn optimizer_with(
        &self,
        section: &str,
        default: &str,
        adam_lr: f32,
    ) -> Result<OptimizerConfig> {
        let cfg = match self.optimizer.as_deref().unwrap_or(default) {
            "sgd" => OptimizerConfig::Sgd {
                lr: self.lr.unwrap_or(0.1),
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            },
            "adam" => OptimizerConfig::Adam {
                lr: self.lr.unwrap_or(adam_lr),
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
            "rmsprop" => OptimizerConfig::RmsProp {
                lr: self.lr.unwrap_or(1e-3),
                alpha: 0.99,
                eps: 1e-8,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
            o => {
                return invalid(
                    format!("{section}.optimizer"),
                    o,
                    "use sgd, adam or rmsprop",
                );
            }
        };
        cfg.validate().map_err(|e| match e {
            EngineError::InvalidField {
                field,
                value,
                reason,
            } => ExperimentError::Invalid {
                field: format!("{section}.{field}"),
                value,
                reason: reason.to_string(),
            },
            e => e.into(),
        })?;
        Ok(cfg)
    }

    /// The learning-rate schedule over `epochs` of `steps_per_epoch` steps.
    pub fn schedule(&self, section: &str, steps_per_epoch: u64, epochs: usize) -> Result<Schedule> {
        let schedule = match self.schedule.as_str() {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine {
                total: steps_per_epoch * epochs as u64,
                min_factor: 0.0,
            },
            "step" => Schedule::Step {
                every: steps_per_epoch * self.step_every as u64,
                gamma: self.gamma,
            },
            s => {
                return invalid(
                    format!("{section}.schedule"),
                    s,
                    "use constant, cosine or step",
                );
            }
        };
        schedule.validate().map_err(|e| match e {
            // The schedule counts steps; the setting counts epochs.
            EngineError::InvalidField { field: "every", .. } => ExperimentError::Invalid {
                field: format!("{section}.step_every"),
                value: self.step_every.to_string(),
                reason: "must be at least 1 (epochs between rate decays)".into(),
            },
            EngineError::InvalidField {
                field: "gamma",
                reason,
                ..
            } => ExperimentError::Invalid {
                field: format!("{section}.gamma"),
                value: self.gamma.to_string(),
                reason: reason.into(),
            },
            e => e.into(),
        })?;
        Ok(schedule)
    }
}
