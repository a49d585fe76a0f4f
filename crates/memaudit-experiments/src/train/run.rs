//! `train` as an experiment: train a model, plain or with DP-SGD, into a run folder, with the
//! sanity checks before private training and the audits a run may carry: the white-box Dirac
//! gradient canaries (Nasr et al. 2023, `white_box_canaries`) and the black-box one-run audit
//! (Steinke et al. 2023, `audit_canaries`), whose lower bounds on epsilon the audit pipeline
//! reads.

use memaudit_engine::audit_canaries::FaultInjection;
use memaudit_engine::augment::ShiftAugment;
use memaudit_engine::train::{MidwayHook, Trainer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::folder::{TrainHooks, TrainRun, TrainSummary, train_in_folder};
use super::plan::train_config;
use super::prepare::{flatten_for, prepare};
use super::settings::{InputShape, ModelSettings, PrivacySettings, RunSettings};
use crate::audit_canaries::{self, BlackBoxAudit};
use crate::config::ExperimentConfig;
use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};
use crate::observer::Observer;
use crate::optim::OptimSettings;
use crate::sanity::{self, SanityChecks};

/// A training run. Defaults are the CLI's (`memaudit train --print-config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainExperimentConfig {
    pub data: DataSettings,
    pub model: ModelSettings,
    pub optim: OptimSettings,
    pub privacy: PrivacySettings,
    pub run: RunSettings,
    /// Training-time augmentation of image batches: `shift` (each image moved by a random +-2
    /// px per step and example) or `none`.
    pub augment: Option<String>,
    /// Skip the sanity checks before private training.
    pub no_sanity_checks: bool,
    /// White-box audit (Nasr et al. 2023): M Dirac gradient canaries of norm C, each included
    /// with probability 1/2; private Poisson runs with one clip bound.
    pub white_box_canaries: Option<usize>,
    /// Black-box one-run audit (Steinke et al. 2023): M canaries (mislabelled examples for
    /// classifiers, random windows for language models), each included with probability 1/2.
    pub audit_canaries: Option<usize>,
    /// The audit's self-test only: scale the noise actually added by this factor while the
    /// accountant keeps the stated multiplier (a broken run on purpose; the CLI also asks for
    /// MEMAUDIT_ALLOW_FAULT_INJECTION=1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_noise_scale: Option<f64>,
}

impl ExperimentConfig for TrainExperimentConfig {
    const NAME: &'static str = "train";

    fn validate(&self) -> Result<()> {
        self.privacy.validate()?;
        self.run.validate()?;
        self.data.validate()?;
        if let Some(a) = &self.augment
            && !["shift", "none"].contains(&a.as_str())
        {
            return invalid("augment", a, "use shift or none");
        }
        if let Some(f) = self.fault_noise_scale
            && !(f > 0.0 && f.is_finite() && self.privacy.is_private())
        {
            return invalid(
                "fault_noise_scale",
                f,
                "needs a private run and a factor > 0",
            );
        }
        Ok(())
    }
}

/// A finished training run. Serialised, it is `memaudit train --json` (the summary run.json
/// records as `results`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainResult {
    #[serde(flatten)]
    pub summary: TrainSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub black_box_audit: Option<BlackBoxAudit>,
    /// The sanity checks before private training (also in run.json as `sanity_checks`).
    #[serde(skip)]
    pub sanity: Option<SanityChecks>,
    /// The epochs' numbers and the engine's configuration (for rendering).
    #[serde(skip)]
    pub training: TrainRun,
    /// The white-box canaries with their inclusion bits and scores (the audit pipeline bounds
    /// them at its own Bonferroni level).
    #[serde(skip)]
    pub white_box_canaries: Option<memaudit_engine::audit_canaries::DiracCanaries>,
}

/// Sees the sanity checks before training starts.
pub type SanityHook<'a> = Box<dyn FnMut(&SanityChecks) + 'a>;

/// What a caller may add to a run.
#[derive(Default)]
pub struct TrainRunHooks<'a> {
    /// Called half way through the n-th checkpoint the trainer writes (crash tests).
    pub checkpoint_midway: Option<MidwayHook>,
    /// Sees the sanity checks before training starts (the CLI prints them there).
    pub on_sanity: Option<SanityHook<'a>>,
}

/// Train as `cfg` says.
pub fn run(cfg: &TrainExperimentConfig, observer: &mut dyn Observer) -> Result<TrainResult> {
    run_with(cfg, observer, TrainRunHooks::default())
}

/// The engine's augmentation for this input.
fn augmentation(cfg: &TrainExperimentConfig, input: &InputShape) -> Result<Option<ShiftAugment>> {
    match (cfg.augment.as_deref(), input) {
        (None | Some("none"), _) => Ok(None),
        (
            Some(a),
            InputShape::Image {
                channels,
                height,
                width,
                ..
            },
        ) => ShiftAugment::new(ShiftAugment::DEFAULT_MAX_SHIFT, *channels, *height, *width)
            .map(Some)
            .map_err(|e| ExperimentError::Invalid {
                field: "augment".into(),
                value: a.into(),
                reason: e.to_string(),
            }),
        (Some(a), _) => invalid(
            "augment",
            a,
            format!(
                "data.data {} is not an image dataset (shifts apply to images: digits, mnist, fashion-mnist)",
                cfg.data.data
            ),
        ),
    }
}

/// [`run`] with the caller's hooks.
pub fn run_with(
    cfg: &TrainExperimentConfig,
    observer: &mut dyn Observer,
    mut hooks: TrainRunHooks<'_>,
) -> Result<TrainResult> {
    cfg.validate()?;
    let prepared = prepare(&cfg.data)?;
    let model_cfg = cfg.model.config(&prepared.input)?;
    if let Some(s) = model_cfg.gpt_shape()
        && cfg.data.seq_len > s.n_ctx
    {
        return invalid(
            "data.seq_len",
            cfg.data.seq_len,
            format!(
                "is longer than the GPT's positional table (model.gpt_context {})",
                s.n_ctx
            ),
        );
    }
    let prepared = flatten_for(&model_cfg, prepared);
    let model = model_cfg.build()?;
    let seed = cfg.run.seed();
    // Audit canaries join the training set before N is counted (they are training examples).
    let (prepared, black_box) = audit_canaries::insert_into(prepared, cfg.audit_canaries, seed)?;
    let n = prepared.train.len();
    if cfg.run.batch_size == 0 || cfg.run.batch_size > n {
        return invalid(
            "run.batch_size",
            cfg.run.batch_size,
            format!("must be between 1 and the training set size {n}"),
        );
    }
    let train_cfg = train_config(
        &cfg.privacy,
        &cfg.optim,
        cfg.run.shape(seed),
        &model,
        &model_cfg,
        n,
        observer,
    )?;
    if let Some(m) = cfg.white_box_canaries {
        memaudit_engine::train::check_white_box_audit(&train_cfg, m, model.num_params()).map_err(
            |e| ExperimentError::Invalid {
                field: "white_box_canaries".into(),
                value: m.to_string(),
                reason: e.to_string(),
            },
        )?;
    }
    let augment = augmentation(cfg, &prepared.input)?;
    // What must match for a resume.
    let mut run_cfg = json!({
        "train": train_cfg,
        "data": cfg.data,
        "white_box_canaries": cfg.white_box_canaries,
        "fault_noise_scale": cfg.fault_noise_scale,
        "augment": cfg.augment,
    });
    if let Some(m) = cfg.audit_canaries {
        run_cfg["audit_canaries"] = json!(m);
    }
    let mut rd =
        crate::rundir::RunDir::open(&cfg.run.out, "train", &run_cfg, Some(seed), cfg.run.reuse())?;
    if let Some(tok) = &prepared.tokenizer {
        let path = rd.file("tokenizer.json");
        tok.save(&path).map_err(|e| ExperimentError::InFile {
            path: path.clone(),
            message: format!("saving the tokenizer: {e}"),
        })?;
    }
    let sanity = match prepared.valid.as_deref() {
        Some(v) if !cfg.no_sanity_checks && !rd.resuming => {
            sanity::run(&train_cfg, n, v, observer)?
        }
        _ => None,
    };
    if let Some(s) = &sanity {
        if let Some(h) = hooks.on_sanity.as_mut() {
            h(s);
        }
        rd.set("sanity_checks", serde_json::to_value(s)?)?;
    }
    if let Some(c) = &black_box {
        audit_canaries::save_manifest(&rd, c, prepared.tokenizer.as_ref(), None)?;
    }
    let mut trainer = Trainer::new(train_cfg.clone(), n, Some(&rd.checkpoints()), rd.resuming)?;
    trainer.set_augment(augment);
    if let Some(h) = hooks.checkpoint_midway.take() {
        trainer.set_checkpoint_midway_hook(h);
    }
    if trainer.noise_is_seeded() {
        observer.note("note: the DP noise is seeded from --seed (--seeded-noise): anyone with the seed can regenerate it; use only for reproducible research");
    }
    if let Some(m) = cfg.white_box_canaries {
        trainer
            .set_white_box_audit(m)
            .map_err(|e| ExperimentError::Invalid {
                field: "white_box_canaries".into(),
                value: m.to_string(),
                reason: e.to_string(),
            })?;
    }
    if let Some(f) = cfg.fault_noise_scale {
        let fault = FaultInjection::NoiseScale(f);
        observer.note(&format!("warning: {}", fault.describe()));
        trainer
            .inject_fault_for_audit_self_test(fault)
            .map_err(|e| ExperimentError::Invalid {
                field: "fault_noise_scale".into(),
                value: f.to_string(),
                reason: e.to_string(),
            })?;
    }
    let training = train_in_folder(
        &mut rd,
        &mut trainer,
        prepared.train.as_ref(),
        prepared.valid.as_deref(),
        &prepared.name,
        TrainHooks::default(),
        observer,
    )?;
    let black_box_audit = match &black_box {
        Some(c) => {
            observer.note(&format!("scoring {} audit canaries", c.manifest.m()));
            let a = audit_canaries::audit(
                &rd,
                &trainer,
                c,
                prepared.tokenizer.as_ref(),
                cfg.privacy.delta,
            )?;
            let mut results = serde_json::to_value(&training.summary)?;
            results["black_box_audit"] = serde_json::to_value(&a)?;
            rd.set("results", results)?;
            Some(a)
        }
        None => None,
    };
    rd.finish("completed")?;
    Ok(TrainResult {
        summary: training.summary.clone(),
        black_box_audit,
        sanity,
        training,
        white_box_canaries: trainer.white_box_canaries().cloned(),
    })
}
