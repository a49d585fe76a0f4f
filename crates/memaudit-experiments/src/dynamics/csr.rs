//! The critical sample ratio of a saved run's model (Arpit et al. 2017, §4): LASS on the first
//! `csr_size` test examples of the data the run was trained on (`memaudit dynamics csr`).

use std::path::PathBuf;

use memaudit_audit::dynamics::{self, LassConfig};
use memaudit_engine::ModelConfig;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::LassSettings;
use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;

/// `memaudit dynamics csr`. Defaults are the CLI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsrConfig {
    /// A run folder written by `memaudit train`.
    pub run: PathBuf,
    /// Validation examples to probe.
    pub csr_size: usize,
    pub lass: LassSettings,
    /// Seeds LASS's Langevin noise.
    pub seed: u64,
}

impl Default for CsrConfig {
    fn default() -> Self {
        Self {
            run: PathBuf::new(),
            csr_size: 1000,
            lass: LassSettings::default(),
            seed: 0,
        }
    }
}

impl ExperimentConfig for CsrConfig {
    const NAME: &'static str = "dynamics csr";

    fn validate(&self) -> Result<()> {
        self.lass.config("lass")?;
        if self.csr_size == 0 {
            return invalid("csr_size", 0, "LASS needs at least 1 validation example");
        }
        if self.run.as_os_str().is_empty() {
            return invalid(
                "run",
                "\"\"",
                "give a run folder written by `memaudit train`",
            );
        }
        Ok(())
    }
}

/// The critical sample ratio of a run. Serialised, it is `memaudit dynamics csr --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CsrResult {
    pub run: PathBuf,
    /// The data the run was trained on.
    #[serde(skip)]
    pub data: String,
    pub examples: usize,
    pub critical: usize,
    pub csr: Num,
    pub iterations: usize,
    pub new_per_iteration: Vec<usize>,
    pub lass: LassConfig,
    pub seconds: f64,
    /// The checkpoint's step.
    pub step: u64,
}

/// A model LASS cannot probe, named as the run's.
fn not_dense(cfg: &CsrConfig, e: dynamics::DynamicsError) -> ExperimentError {
    ExperimentError::Invalid {
        field: "run".into(),
        value: cfg.run.display().to_string(),
        reason: e.to_string(),
    }
}

/// LASS on the run's newest checkpoint.
pub fn run(cfg: &CsrConfig, observer: &mut dyn Observer) -> Result<CsrResult> {
    cfg.validate()?;
    let lass = cfg.lass.config("lass")?;
    // Refuse a model LASS cannot probe before reading its weights.
    let declared = std::fs::read(cfg.run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            serde_json::from_value::<ModelConfig>(v["config"]["train"]["model"].clone()).ok()
        });
    if let Some(m) = declared {
        dynamics::require_dense_classifier(&m).map_err(|e| not_dense(cfg, e))?;
    }
    let saved = crate::saved_run::load_run(&cfg.run)?;
    dynamics::require_dense_classifier(&saved.config.model).map_err(|e| not_dense(cfg, e))?;
    if !saved.data.is_image() {
        return invalid(
            "run",
            cfg.run.display(),
            format!(
                "trained on --data {}, not images in [0, 1]; LASS's radius is defined for pixels",
                saved.data.data
            ),
        );
    }
    let img = saved.data.images()?;
    let model = saved.config.model.build()?;
    let mut valid = img
        .test
        .subset(&(0..cfg.csr_size.min(img.test.labels.len())).collect::<Vec<_>>());
    if matches!(saved.config.model, ModelConfig::Mlp { .. }) {
        valid.example_shape = vec![valid.per_example()];
    }
    observer.note(&format!(
        "LASS on {} validation examples of {}",
        valid.labels.len(),
        saved.data.data
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let started = std::time::Instant::now();
    let o = dynamics::lass(
        &model,
        &saved.checkpoint.params,
        &valid.x,
        &valid.example_shape,
        &lass,
        &mut rng,
    )?;
    Ok(CsrResult {
        run: cfg.run.clone(),
        data: saved.data.data.clone(),
        examples: valid.labels.len(),
        critical: o.critical.iter().filter(|&&c| c).count(),
        csr: Num(o.csr()),
        iterations: o.iterations,
        new_per_iteration: o.new_per_iteration,
        lass,
        seconds: started.elapsed().as_secs_f64(),
        step: saved.checkpoint.state.step,
    })
}
