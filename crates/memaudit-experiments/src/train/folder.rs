//! Training into a run folder: the trainer's loop with `metrics.csv` (stored in every
//! checkpoint, restored on a resume), the caller's own logs in the same checkpoints, the privacy
//! statement from the ledger, the white-box audit a run carried, and the run's summary in
//! `run.json`. Rendering (text, HTML) is the caller's.

use memaudit_audit::lower_bound::{WhiteBoxAuditResult, white_box_audit};
use memaudit_engine::checkpoint::LogFile;
use memaudit_engine::ledger::steps_per_epoch;
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{Dataset, EpochInfo, StepInfo, StopReason, TrainObserver, Trainer};
use memaudit_engine::{Model, ModelConfig};
use serde::Serialize;

use super::plan::{PrivacyStatement, statement};
use crate::error::{ExperimentError, Result};
use crate::num::{Num, opt};
use crate::observer::{MetricsRow, Observer};
use crate::rundir::{MetricsCsv, RunDir, parse_metrics};

/// The metrics log's file name, in the run folder and in each checkpoint.
pub const METRICS_CSV: &str = "metrics.csv";

pub const METRIC_COLUMNS: [&str; 11] = [
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "epsilon",
    "epsilon_if_poisson",
    "clip_bound",
    "clipped_fraction",
    "seconds",
];

/// Family-wise significance of the white-box audit's verdict.
pub const AUDIT_SIGNIFICANCE: f64 = 0.05;

/// A per-epoch hook: sees the epoch's numbers, the model and its parameters.
pub type EpochHook<'a> =
    Box<dyn FnMut(&EpochInfo, &Model, &[f32]) -> memaudit_engine::Result<()> + 'a>;

/// A per-step hook (e.g. exposure every N steps).
pub type StepHook<'a> =
    Box<dyn FnMut(&StepInfo, &Model, &[f32]) -> memaudit_engine::Result<()> + 'a>;

/// The caller's own logs (their whole history so far), stored in every checkpoint with
/// `metrics.csv` so that a resume restores them consistently with it.
pub type LogsHook<'a> = Box<dyn FnMut() -> memaudit_engine::Result<Vec<LogFile>> + 'a>;

/// What a caller adds to the loop.
#[derive(Default)]
pub struct TrainHooks<'a> {
    /// Runs after each epoch (after the metrics row, before the epoch's checkpoint).
    pub epoch: Option<EpochHook<'a>>,
    /// Runs after each optimizer step.
    pub step: Option<StepHook<'a>>,
    /// The caller's logs to store in each checkpoint.
    pub logs: Option<LogsHook<'a>>,
}

/// The white-box audit as the results carry it (non-finite numbers as strings).
#[derive(Clone, Debug, Serialize)]
pub struct WhiteBoxAudit {
    pub canaries: u64,
    pub included: u64,
    pub claimed_epsilon: Num,
    pub delta: f64,
    pub significance: f64,
    pub two_m_delta: f64,
    pub auroc: Num,
    pub results: Vec<AuditBoundRow>,
    pub verdict_bound: Num,
    pub refuted: bool,
    pub warnings: Vec<String>,
    /// The audit library's result (for rendering).
    #[serde(skip)]
    pub result: WhiteBoxAuditResult,
}

/// One lower bound of an audit.
#[derive(Clone, Debug, Serialize)]
pub struct AuditBoundRow {
    pub method: String,
    pub epsilon_lower_bound: Num,
    pub assumes_gaussian_tradeoff: bool,
}

impl From<WhiteBoxAuditResult> for WhiteBoxAudit {
    fn from(a: WhiteBoxAuditResult) -> Self {
        Self {
            canaries: a.canaries,
            included: a.included,
            claimed_epsilon: Num(a.claimed_epsilon),
            delta: a.delta,
            significance: a.significance,
            two_m_delta: a.two_m_delta,
            auroc: Num(a.auroc),
            results: a
                .bounds
                .iter()
                .map(|b| AuditBoundRow {
                    method: b.method.to_string(),
                    epsilon_lower_bound: Num(b.epsilon_lower_bound),
                    assumes_gaussian_tradeoff: b.assumes_gaussian_tradeoff,
                })
                .collect(),
            verdict_bound: Num(a.verdict_bound),
            refuted: a.refuted,
            warnings: a.warnings.clone(),
            result: a,
        }
    }
}

/// A finished training run's summary: the `results` of run.json and `memaudit train --json`.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub run: String,
    pub data: String,
    pub model: ModelConfig,
    pub parameters: usize,
    pub epochs: u64,
    pub steps: u64,
    pub seed: u64,
    pub stop_reason: StopReason,
    pub train_loss: Option<Num>,
    pub valid_loss: Option<Num>,
    pub valid_accuracy: Option<Num>,
    pub private: bool,
    pub epsilon: Option<Num>,
    pub epsilon_if_poisson: Option<Num>,
    pub delta: Option<f64>,
    pub noise_multiplier: Option<f64>,
    pub noise_seeded: bool,
    pub sampling: SamplingMode,
    pub privacy_statement: Option<PrivacyStatement>,
    pub white_box_audit: Option<WhiteBoxAudit>,
    pub fault_injected: Option<String>,
}

/// What training into a folder hands back: the summary and the epochs' numbers (the whole
/// history on a resume).
#[derive(Clone, Debug)]
pub struct TrainRun {
    pub summary: TrainSummary,
    pub epochs: Vec<EpochInfo>,
    /// The engine's configuration the run trained with.
    pub config: memaudit_engine::train::TrainConfig,
    pub training_examples: usize,
}

/// The observer the trainer sees: metrics.csv, the caller's observer and hooks.
struct FolderObserver<'o, 'a> {
    observer: &'o mut dyn Observer,
    metrics: MetricsCsv,
    epochs: Vec<EpochInfo>,
    total: u64,
    hooks: TrainHooks<'a>,
    /// The caller's observer asked to stop at a step ([`Observer::cancelled`]).
    cancelled: bool,
}

impl TrainObserver for FolderObserver<'_, '_> {
    fn on_step(&mut self, info: &StepInfo, m: &Model, p: &[f32]) -> memaudit_engine::Result<()> {
        self.observer.progress("train", info.step, self.total);
        // Between steps is a safe point: the run's atomic units are its checkpoints (written
        // at epoch ends, never during a step), so stopping here loses only the steps since the
        // last one, which a resume trains again. The engine's error only unwinds the trainer;
        // `train_in_folder` reports it as `Cancelled`.
        if self.observer.cancelled() {
            self.cancelled = true;
            return Err(memaudit_engine::EngineError::Config(
                "cancelled by the caller".into(),
            ));
        }
        match self.hooks.step.as_mut() {
            Some(h) => h(info, m, p),
            None => Ok(()),
        }
    }

    fn on_epoch(&mut self, e: &EpochInfo, m: &Model, p: &[f32]) -> memaudit_engine::Result<()> {
        let f = |x: f64| Some(x);
        let values = [
            f(e.epoch as f64),
            f(e.step as f64),
            f(e.train_loss),
            f(e.train_accuracy),
            e.valid_loss,
            e.valid_accuracy,
            e.epsilon,
            e.epsilon_if_poisson,
            e.clip_bound,
            e.clipped_fraction,
            f(e.seconds),
        ];
        self.metrics
            .append(&values)
            .map_err(|err| memaudit_engine::EngineError::Config(err.to_string()))?;
        let mut line = format!("epoch {}: train loss {:.4}", e.epoch, e.train_loss);
        if let Some(v) = e.valid_loss {
            line += &format!(", valid loss {v:.4}");
        }
        if let Some(a) = e.valid_accuracy {
            line += &format!(", valid accuracy {a:.4}");
        }
        if let Some(eps) = e.epsilon {
            line += &format!(", epsilon {}", crate::num::fmt(eps));
        }
        line += &format!(" ({:.1}s)", e.seconds);
        self.observer.note(&line);
        self.observer.metrics(&MetricsRow {
            stage: "train".into(),
            epoch: e.epoch as f64,
            step: Some(e.step),
            values: METRIC_COLUMNS[2..]
                .iter()
                .copied()
                .zip(values[2..].iter().copied())
                .collect(),
        });
        self.epochs.push(e.clone());
        match self.hooks.epoch.as_mut() {
            Some(h) => h(e, m, p),
            None => Ok(()),
        }
    }

    fn checkpoint_logs(&mut self) -> memaudit_engine::Result<Vec<LogFile>> {
        let mut logs = vec![(METRICS_CSV.into(), self.metrics.contents().into_bytes())];
        if let Some(h) = self.hooks.logs.as_mut() {
            logs.extend(h()?);
        }
        Ok(logs)
    }
}

/// Train `trainer` on `train` (validating on `valid`) into the run folder `rd`: metrics.csv,
/// checkpoints with the logs, and `results` in run.json; the folder is not marked completed
/// (callers with more work after training do that). `data` names the data in the summary.
pub fn train_in_folder(
    rd: &mut RunDir,
    trainer: &mut Trainer,
    train: &dyn Dataset,
    valid: Option<&dyn Dataset>,
    data: &str,
    hooks: TrainHooks<'_>,
    observer: &mut dyn Observer,
) -> Result<TrainRun> {
    let cfg = trainer.config.clone();
    let n = train.len();
    let total = steps_per_epoch(cfg.sampling, n as u64, cfg.batch_size as u64) * cfg.epochs as u64;
    // A resumed run continues the logs its checkpoint holds (the whole history, for the report
    // and the results even when nothing is left to train).
    let (metrics, epochs) = if trainer.resumed_from.is_some() {
        restore_metrics(rd, trainer)?
    } else {
        (
            MetricsCsv::open(&rd.file(METRICS_CSV), &METRIC_COLUMNS, false)?,
            Vec::new(),
        )
    };
    if let Some(from) = &trainer.resumed_from {
        observer.note(&format!(
            "resuming from {} (epoch {}, step {})",
            from.display(),
            trainer.epoch,
            trainer.step
        ));
        if trainer.epoch >= cfg.epochs as u64 {
            observer.note(&format!(
                "the run has already trained its {} epochs: nothing to train; its results are recomputed from its last checkpoint (give a larger --epochs to continue it)",
                trainer.epoch
            ));
        }
    }
    let mut folder = FolderObserver {
        observer,
        metrics,
        epochs,
        total,
        hooks,
        cancelled: false,
    };
    let stop = trainer.run(train, valid, &mut folder);
    if folder.cancelled {
        return Err(ExperimentError::cancelled(format!(
            "at training step {} (the last checkpoint is kept)",
            trainer.step
        )));
    }
    let stop = stop?;
    let FolderObserver {
        observer, epochs, ..
    } = folder;
    if stop == StopReason::PrivacyBudget {
        observer.note(&format!(
            "stopped at step {}: the next step would exceed --max-epsilon",
            trainer.step
        ));
    }
    let statement = statement(&cfg, trainer.ledger(), n)?;
    let eps = trainer.epsilon()?;
    let eps_if_poisson = trainer.epsilon_if_poisson()?;
    // The white-box audit the run carried, bounded at the run's own delta and compared with its
    // claim (memaudit-audit's `white_box_audit`); and the self-test's fault, said everywhere.
    let audit = match (trainer.white_box_canaries(), eps, cfg.privacy.as_ref()) {
        (Some(c), Some(e), Some(p)) => Some(WhiteBoxAudit::from(
            white_box_audit(c, e, p.delta, AUDIT_SIGNIFICANCE).map_err(|source| {
                ExperimentError::LowerBound {
                    stage: "white-box audit".into(),
                    source: Box::new(source),
                }
            })?,
        )),
        _ => None,
    };
    let fault = trainer.injected_fault().map(|f| f.describe());
    let last = epochs.last().cloned();
    let summary = TrainSummary {
        run: rd.path.display().to_string(),
        data: data.to_string(),
        model: cfg.model.clone(),
        parameters: trainer.model.num_params(),
        epochs: trainer.epoch,
        steps: trainer.step,
        seed: cfg.seed,
        stop_reason: stop,
        train_loss: last.as_ref().map(|e| Num(e.train_loss)),
        valid_loss: opt(last.as_ref().and_then(|e| e.valid_loss)),
        valid_accuracy: opt(last.as_ref().and_then(|e| e.valid_accuracy)),
        private: cfg.privacy.is_some(),
        epsilon: opt(eps),
        epsilon_if_poisson: opt(eps_if_poisson),
        delta: cfg.privacy.as_ref().map(|p| p.delta),
        noise_multiplier: cfg.privacy.as_ref().map(|p| p.noise_multiplier),
        noise_seeded: trainer.noise_is_seeded(),
        sampling: cfg.sampling,
        privacy_statement: statement,
        white_box_audit: audit,
        fault_injected: fault,
    };
    rd.set("results", serde_json::to_value(&summary)?)?;
    Ok(TrainRun {
        summary,
        epochs,
        config: cfg,
        training_examples: n,
    })
}

/// One `metrics.csv` row back as the epoch it logged (exact: rows are written with shortest
/// round-trip formatting).
fn epoch_from_row(row: &std::collections::HashMap<String, Option<f64>>) -> Result<EpochInfo> {
    let get = |k: &str| row.get(k).copied().flatten();
    let need = |k: &str| {
        get(k).ok_or_else(|| ExperimentError::protocol(format!("metrics.csv: a row has no {k}")))
    };
    Ok(EpochInfo {
        epoch: need("epoch")? as u64,
        step: need("step")? as u64,
        train_loss: need("train_loss")?,
        train_accuracy: need("train_accuracy")?,
        valid_loss: get("valid_loss"),
        valid_accuracy: get("valid_accuracy"),
        epsilon: get("epsilon"),
        epsilon_if_poisson: get("epsilon_if_poisson"),
        clip_bound: get("clip_bound"),
        clipped_fraction: get("clipped_fraction"),
        seconds: get("seconds").unwrap_or(f64::NAN),
    })
}

/// The metrics log a resumed run continues, and its epochs (the whole history, for the report
/// and the results): the copy stored in the checkpoint resumed from, so rows logged after that
/// checkpoint are dropped (the resumed run logs them again). A checkpoint written before logs were
/// stored with checkpoints falls back to the folder's file, without its rows past the checkpoint.
fn restore_metrics(rd: &RunDir, trainer: &Trainer) -> Result<(MetricsCsv, Vec<EpochInfo>)> {
    let path = rd.file(METRICS_CSV);
    let history = match trainer.resumed_log(METRICS_CSV) {
        Some(b) => b.to_vec(),
        None => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let header = METRIC_COLUMNS.join(",");
            let mut kept = format!("{header}\n");
            if text.lines().next() == Some(header.as_str()) {
                for line in text.lines().skip(1) {
                    let step = line.split(',').nth(1).and_then(|c| c.parse::<u64>().ok());
                    if step.is_some_and(|s| s <= trainer.step) {
                        kept += line;
                        kept.push('\n');
                    }
                }
            }
            kept.into_bytes()
        }
    };
    let metrics = MetricsCsv::restore(&path, &METRIC_COLUMNS, &history)?;
    let epochs = parse_metrics(&metrics.contents())
        .and_then(|rows| rows.iter().map(epoch_from_row).collect::<Result<Vec<_>>>())
        .map_err(|e| ExperimentError::InFile {
            path: path.clone(),
            message: format!("the stored metrics: {e}"),
        })?;
    Ok((metrics, epochs))
}
