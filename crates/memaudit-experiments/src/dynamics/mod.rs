//! Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017): the studies as
//! experiments, one module each, on top of the measurements in `memaudit_audit::dynamics`.
//!
//! Migrated so far: [`easy_hard`] (§3.1, Fig. 1) and [`sensitivity`] (§3.2, Fig. 3). `curves`,
//! `capacity`, `csr` and `regularizers` still live in the CLI (phase 2).

pub mod easy_hard;
pub mod sensitivity;

use memaudit_audit::dynamics::{NoiseKind, TrainSpec};
use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};
use crate::optim::OptimSettings;

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
