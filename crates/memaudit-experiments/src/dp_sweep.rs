//! `dp-sweep` as an experiment: "Three Tools for Practical DP ML" (van der Veen et al. 2018),
//! tool 3 (large-batch training). At one fixed epsilon, delta and number of epochs, train at
//! each batch size B with the noise multiplier recalibrated for that B (more steps at small B
//! need more noise per step; fewer, larger steps allow a larger sigma but a smaller sigma C / B
//! on the averaged gradient), the learning rate scaled with B, and measure test accuracy.

use std::path::PathBuf;

use memaudit_engine::ledger::steps_per_epoch;
use memaudit_engine::optim::OptimizerConfig;
use memaudit_engine::privacy;
use memaudit_engine::train::{Silent, Trainer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::ExperimentConfig;
use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::{MetricsRow, Observer};
use crate::optim::OptimSettings;
use crate::rundir::{Reuse, RunDir};
use crate::train::{
    ModelSettings, PrivacySettings, RunShape, assemble_train_config, flatten_for, prepare,
    privacy_config_at,
};

/// A sweep over batch sizes at one epsilon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSweepConfig {
    pub data: DataSettings,
    pub model: ModelSettings,
    pub optim: OptimSettings,
    /// `target_epsilon` is required: the epsilon every batch size is trained at.
    pub privacy: PrivacySettings,
    /// Batch sizes to train at.
    pub batch_sizes: Vec<usize>,
    /// The batch size at which `optim.lr` applies; other sizes scale it (`lr_scaling`).
    pub base_batch: usize,
    /// How the learning rate follows the batch size: linear, sqrt or none.
    pub lr_scaling: String,
    pub epochs: usize,
    /// `None`: drawn at random and recorded.
    pub seed: Option<u64>,
    /// Run folder (run.json, one checkpoint folder per batch size).
    pub out: PathBuf,
    /// Overwrite a folder that holds another run.
    pub force: bool,
}

impl Default for DpSweepConfig {
    fn default() -> Self {
        Self {
            data: DataSettings::default(),
            model: ModelSettings::default(),
            optim: OptimSettings::default(),
            privacy: PrivacySettings::default(),
            batch_sizes: vec![64, 256, 1024],
            base_batch: 256,
            lr_scaling: "sqrt".into(),
            epochs: 5,
            seed: None,
            out: PathBuf::new(),
            force: false,
        }
    }
}

impl DpSweepConfig {
    /// The factor of the learning rate at batch size `b`.
    fn lr_factor(&self, b: usize) -> Result<f32> {
        let r = b as f64 / self.base_batch as f64;
        Ok(match self.lr_scaling.as_str() {
            "linear" => r,
            "sqrt" => r.sqrt(),
            "none" => 1.0,
            s => return invalid("lr_scaling", s, "use linear, sqrt or none"),
        } as f32)
    }
}

impl ExperimentConfig for DpSweepConfig {
    const NAME: &'static str = "dp-sweep";

    fn validate(&self) -> Result<()> {
        if self.privacy.target_epsilon.is_none() {
            return invalid(
                "privacy.target_epsilon",
                "(none)",
                "dp-sweep needs a target epsilon (the epsilon every batch size is trained at)",
            );
        }
        self.privacy.validate()?;
        if let Some(m) = self.privacy.max_epsilon {
            return invalid(
                "privacy.max_epsilon",
                m,
                "does not apply to dp-sweep: every batch size is calibrated to the target epsilon",
            );
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return invalid(
                "batch_sizes",
                format!("{:?}", self.batch_sizes),
                "give one or more sizes >= 1",
            );
        }
        if self.epochs == 0 {
            return invalid("epochs", 0, "must be at least 1");
        }
        if self.base_batch == 0 {
            return invalid("base_batch", 0, "must be at least 1");
        }
        if self.out.as_os_str().is_empty() {
            return invalid("out", "\"\"", "give the run folder");
        }
        self.data.validate()?;
        self.lr_factor(1)?;
        Ok(())
    }
}

/// One batch size's run.
#[derive(Clone, Debug, Serialize)]
pub struct BatchRow {
    pub batch_size: usize,
    pub steps: u64,
    pub noise_multiplier: f64,
    /// sigma C / B: the noise on the averaged gradient.
    pub noise_on_mean_gradient: f64,
    pub lr: f32,
    pub test_accuracy: Num,
    pub test_loss: Option<Num>,
    pub epsilon: Num,
    pub seconds: f64,
}

/// The sweep. Serialised, it is `memaudit dp-sweep --json` (and run.json's `results`).
#[derive(Clone, Debug, Serialize)]
pub struct DpSweepResult {
    pub target_epsilon: f64,
    pub delta: f64,
    pub results: Vec<BatchRow>,
    pub run: String,
    /// The data's name, the base learning rate and the accountant (for rendering).
    #[serde(skip)]
    pub data_name: String,
    #[serde(skip)]
    pub base_lr: f32,
}

/// Train at every batch size.
pub fn run(cfg: &DpSweepConfig, observer: &mut dyn Observer) -> Result<DpSweepResult> {
    cfg.validate()?;
    let target = cfg.privacy.target_epsilon.unwrap_or(f64::NAN);
    let sampling = cfg.privacy.sampling()?;
    let prepared = prepare(&cfg.data)?;
    let model_cfg = cfg.model.config(&prepared.input)?;
    let prepared = flatten_for(&model_cfg, prepared);
    let model = model_cfg.build()?;
    let n = prepared.train.len();
    if let Some(&b) = cfg.batch_sizes.iter().find(|&&b| b > n) {
        return invalid(
            "batch_sizes",
            b,
            format!("is larger than the training set ({n} examples)"),
        );
    }
    let seed = cfg
        .seed
        .unwrap_or_else(|| rand::Rng::random(&mut rand::rng()));
    let accountant = cfg.privacy.accountant()?;
    let base_optim = cfg.optim.optimizer("optim")?;
    // What the run folder records as its configuration.
    let cfg_json = json!({ "data": cfg.data, "model": model_cfg, "optimizer": base_optim, "target_epsilon": target, "delta": cfg.privacy.delta, "batch_sizes": cfg.batch_sizes, "epochs": cfg.epochs, "lr_scaling": cfg.lr_scaling, "base_batch": cfg.base_batch });
    let mut rd = RunDir::open(
        &cfg.out,
        "dp-sweep",
        &cfg_json,
        Some(seed),
        Reuse {
            force: cfg.force,
            resume: false,
        },
    )?;
    // Large logical batches run as chunks of 512 unless the settings say otherwise.
    let privacy_settings = PrivacySettings {
        physical_batch: Some(cfg.privacy.physical_batch.unwrap_or(512)),
        ..cfg.privacy.clone()
    };
    let mut rows = Vec::new();
    for (k, &b) in cfg.batch_sizes.iter().enumerate() {
        // A safe point: nothing of this batch size is written yet (the sweep starts afresh on
        // a rerun; it has no resume).
        if observer.cancelled() {
            return Err(ExperimentError::cancelled(format!("before batch size {b}")));
        }
        observer.progress("dp-sweep", k as u64, cfg.batch_sizes.len() as u64);
        let spe = steps_per_epoch(sampling, n as u64, b as u64);
        let steps = spe * cfg.epochs as u64;
        // Calibrated to the guarantee of this sampling (shuffled: no amplification).
        let sigma = privacy::calibrate_planned(
            sampling,
            n as u64,
            b as u64,
            cfg.epochs as u64,
            cfg.privacy.delta,
            target,
            accountant,
        )
        .map_err(|e| ExperimentError::Invalid {
            field: "batch_sizes".into(),
            value: b.to_string(),
            reason: e.to_string(),
        })?;
        let mut optimizer = base_optim.clone();
        let lr = optimizer.lr() * cfg.lr_factor(b)?;
        match &mut optimizer {
            OptimizerConfig::Sgd { lr: l, .. }
            | OptimizerConfig::Adam { lr: l, .. }
            | OptimizerConfig::RmsProp { lr: l, .. } => *l = lr,
        }
        // The library's one assembly of the engine's config, at this batch size's noise and
        // learning rate (`max_epsilon` is refused by `validate`: every size is calibrated).
        let train_cfg = assemble_train_config(
            &privacy_settings,
            &cfg.optim,
            optimizer,
            Some(privacy_config_at(&privacy_settings, &model, sigma)?),
            &model_cfg,
            n,
            RunShape {
                epochs: cfg.epochs,
                batch_size: b,
                seed,
            },
        )?;
        observer.note(&format!(
            "batch {b}: noise multiplier {sigma:.4} for epsilon {target} over {steps} steps, lr {lr}"
        ));
        let started = std::time::Instant::now();
        let mut t = Trainer::new(train_cfg, n, Some(&rd.file(&format!("batch-{b}"))), false)?;
        t.run(prepared.train.as_ref(), None, &mut Silent)?;
        let eval = match prepared.valid.as_deref() {
            Some(v) => Some(t.evaluate(v)?),
            None => None,
        };
        let eps = t.epsilon()?.unwrap_or(f64::NAN);
        let secs = started.elapsed().as_secs_f64();
        let acc = eval.map_or(f64::NAN, |e| e.accuracy);
        observer.note(&format!(
            "batch {b}: test accuracy {}, epsilon {} ({secs:.0}s)",
            crate::num::fmt(acc),
            crate::num::fmt(eps)
        ));
        observer.metrics(&MetricsRow {
            stage: format!("batch {b}"),
            epoch: cfg.epochs as f64,
            step: Some(steps),
            values: vec![
                ("noise_multiplier", Some(sigma)),
                ("test_accuracy", Some(acc)),
                ("epsilon", Some(eps)),
            ],
        });
        rows.push(BatchRow {
            batch_size: b,
            steps,
            noise_multiplier: sigma,
            noise_on_mean_gradient: sigma * cfg.privacy.clip() / b as f64,
            lr,
            test_accuracy: Num(acc),
            test_loss: eval.map(|e| Num(e.loss)),
            epsilon: Num(eps),
            seconds: secs,
        });
    }
    let result = DpSweepResult {
        target_epsilon: target,
        delta: cfg.privacy.delta,
        results: rows,
        run: rd.path.display().to_string(),
        data_name: prepared.name.clone(),
        base_lr: base_optim.lr(),
    };
    rd.set("results", serde_json::to_value(&result)?)?;
    rd.finish("completed")?;
    Ok(result)
}
