//! Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017): the studies as
//! experiments, one module each, on top of the measurements in `memaudit_audit::dynamics`.
//!
//! Migrated so far: [`easy_hard`] (§3.1, Fig. 1), [`sensitivity`] (§3.2, Fig. 3), [`capacity`]
//! (§3.3, Figs. 5-6), [`curves`] (§4, Figs. 5-7), [`regularizers`] (§5, Figs. 10-11) and
//! [`csr`] (the critical sample ratio of a saved run, §4).

pub mod capacity;
pub mod csr;
pub mod curves;
pub mod easy_hard;
pub mod regularizers;
pub mod sensitivity;

use memaudit_audit::dynamics::{LassConfig, NoiseKind, TrainSpec};
use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};
use crate::observer::Observer;
use crate::optim::OptimSettings;

/// Inside a study's per-epoch (per-run) callback: the error that stops the measurement when
/// the observer asks to ([`Observer::cancelled`]). The studies write nothing but their result,
/// so every callback is a safe point; [`stopped`] reports the error as
/// [`ExperimentError::Cancelled`].
fn poll(observer: &dyn Observer) -> memaudit_audit::dynamics::Result<()> {
    if observer.cancelled() {
        return Err(memaudit_audit::dynamics::DynamicsError::Invalid {
            what: "the study".into(),
            reason: "cancelled by the caller".into(),
        });
    }
    Ok(())
}

/// A measurement's error: `Cancelled` (at `stage`) when the observer asked to stop, the
/// error itself otherwise.
fn stopped(
    e: memaudit_audit::dynamics::DynamicsError,
    observer: &dyn Observer,
    stage: &str,
) -> ExperimentError {
    if observer.cancelled() {
        ExperimentError::cancelled(format!("in {stage}"))
    } else {
        e.into()
    }
}

/// The MLP of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpSettings {
    /// Hidden layer sizes (the paper: 4096,4096).
    pub hidden: Vec<usize>,
    /// relu, tanh or sigmoid.
    pub activation: String,
    /// Dropout after each hidden layer.
    pub dropout: f32,
    /// Dropout on the input.
    pub input_dropout: f32,
}

impl Default for MlpSettings {
    fn default() -> Self {
        Self {
            hidden: vec![512, 512],
            activation: "relu".into(),
            dropout: 0.0,
            input_dropout: 0.0,
        }
    }
}

impl MlpSettings {
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return invalid(
                "mlp.hidden",
                format!("{:?}", self.hidden),
                "give one or more non-zero layer sizes, e.g. 512,512",
            );
        }
        for (field, p) in [
            ("mlp.dropout", self.dropout),
            ("mlp.input_dropout", self.input_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return invalid(field, p, "must be in [0, 1)");
            }
        }
        activation(&self.activation, "mlp.activation")?;
        Ok(())
    }

    pub fn model(&self, input: usize, classes: usize) -> Result<ModelConfig> {
        self.validate()?;
        Ok(ModelConfig::Mlp {
            input,
            hidden: self.hidden.clone(),
            classes,
            activation: activation(&self.activation, "mlp.activation")?,
            dropout: self.dropout,
            input_dropout: self.input_dropout,
        })
    }
}

/// relu, tanh or sigmoid.
pub fn activation(name: &str, field: &str) -> Result<ActivationKind> {
    match name {
        "relu" => Ok(ActivationKind::Relu),
        "tanh" => Ok(ActivationKind::Tanh),
        "sigmoid" => Ok(ActivationKind::Sigmoid),
        a => invalid(field, a, "use relu, tanh or sigmoid"),
    }
}

/// Data kinds by name: real, randy, randx.
pub fn noise_kinds(list: &[String], field: &str) -> Result<Vec<NoiseKind>> {
    if list.is_empty() {
        return invalid(field, "[]", "give at least one of real, randy, randx");
    }
    list.iter()
        .map(|k| NoiseKind::parse(k).or_else(|_| invalid(field, k, "use real, randy or randx")))
        .collect()
}

/// The training run of a study: the MLP, the optimizer and its schedule, on `n` examples.
pub fn train_spec(
    model: ModelConfig,
    optim: &OptimSettings,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    n: usize,
) -> Result<TrainSpec> {
    if epochs == 0 {
        return invalid("epochs", 0, "must be at least 1");
    }
    if batch_size == 0 || batch_size > n {
        return invalid(
            "batch_size",
            batch_size,
            format!("must be between 1 and the training set size {n}"),
        );
    }
    let optimizer = optim.optimizer("optim")?;
    let built = model.build()?;
    // Refuse a model that cannot fit before any training starts.
    let p = built.num_params();
    memaudit_engine::memory::check_fits(
        &format!("training {p} parameters (weights, gradient, optimizer state)"),
        memaudit_engine::memory::training_bytes(p, &optimizer, false),
        memaudit_engine::memory::available_bytes(),
    )
    .map_err(|e| ExperimentError::Invalid {
        field: "mlp.hidden".into(),
        value: format!("{p} parameters"),
        reason: format!("{e}; use a smaller model"),
    })?;
    Ok(TrainSpec {
        model,
        optimizer,
        // Shuffled full batches (the dynamics trainer's batching): the one steps-per-epoch rule.
        schedule: optim.schedule(
            "optim",
            memaudit_engine::ledger::steps_per_epoch(
                memaudit_engine::sampler::SamplingMode::Shuffle,
                n as u64,
                batch_size as u64,
            ),
            epochs,
        )?,
        epochs,
        batch_size,
        seed,
        input_noise: 0.0,
        adversarial: None,
    })
}

/// LASS (Langevin Adversarial Sample Search, Arpit et al. §4) in 0-255 pixel units: inputs are
/// scaled to [0, 1], so `lass_r = 0.3` searches the box of radius 0.3/255 (the paper's values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LassSettings {
    /// Radius r of the infinity-box (pixel units out of 255).
    pub lass_r: f64,
    /// Gradient-sign step alpha (pixel units).
    pub lass_alpha: f64,
    /// Langevin noise scale beta (pixel units).
    pub lass_beta: f64,
    pub lass_max_iter: usize,
    /// Stop when an iteration marks fewer new critical samples than this (the authors' 20).
    pub lass_min_new: usize,
}

impl Default for LassSettings {
    fn default() -> Self {
        Self {
            lass_r: 0.3,
            lass_alpha: 0.25,
            lass_beta: 0.2,
            lass_max_iter: 100,
            lass_min_new: 20,
        }
    }
}

impl LassSettings {
    /// The search in the engine's units; `section` is this group's path in its config.
    pub fn config(&self, section: &str) -> Result<LassConfig> {
        if !(self.lass_r > 0.0 && self.lass_r.is_finite()) {
            return invalid(
                format!("{section}.lass_r"),
                self.lass_r,
                "the LASS radius r must be > 0 (the paper's is 0.3, in 0-255 pixel units)",
            );
        }
        for (field, v) in [
            ("lass_alpha", self.lass_alpha),
            ("lass_beta", self.lass_beta),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return invalid(format!("{section}.{field}"), v, "must be >= 0");
            }
        }
        if self.lass_max_iter == 0 {
            return invalid(format!("{section}.lass_max_iter"), 0, "must be at least 1");
        }
        Ok(LassConfig {
            alpha: (self.lass_alpha / 255.0) as f32,
            beta: (self.lass_beta / 255.0) as f32,
            radius: (self.lass_r / 255.0) as f32,
            max_iter: self.lass_max_iter,
            min_new_critical: self.lass_min_new,
            clip: Some((0.0, 1.0)),
            batch: 500,
        })
    }
}
