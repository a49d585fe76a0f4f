//! `eval` as an experiment: the loss and accuracy of a saved run's newest checkpoint on its
//! validation (or training) split, and for language models the perplexity and bits per token
//! of that loss.

use std::path::PathBuf;

use memaudit_engine::train::evaluate;
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{Result, invalid};
use crate::num::Num;
use crate::observer::Observer;
use crate::saved_run::load_run;
use crate::train::{flatten_for, prepare_with};

/// Examples per forward batch: memory only, the metrics do not depend on it.
const EVAL_BATCH: usize = 256;

/// The evaluation of a saved run (`memaudit eval`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// A run folder written by `train` (or any experiment that trains one).
    pub run: PathBuf,
    /// Evaluate on the training split instead of the validation split.
    pub train_split: bool,
}

impl ExperimentConfig for EvalConfig {
    const NAME: &'static str = "eval";

    fn validate(&self) -> Result<()> {
        if self.run.as_os_str().is_empty() {
            return invalid("run", "\"\"", "give the run folder");
        }
        Ok(())
    }
}

/// The metrics of a checkpoint. Serialised, it is `memaudit eval --json`.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub run: String,
    /// `valid` or `train`.
    pub split: String,
    pub examples: usize,
    /// The optimizer step of the checkpoint evaluated.
    pub step: u64,
    /// Mean cross-entropy in nats (per token for language models).
    pub loss: Num,
    pub accuracy: Num,
    /// exp(loss), for language models only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<Num>,
    /// loss / ln 2, for language models only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_token: Option<Num>,
}

/// Evaluate the newest checkpoint of `cfg.run`.
pub fn run(cfg: &EvalConfig, _observer: &mut dyn Observer) -> Result<EvalResult> {
    cfg.validate()?;
    let saved = load_run(&cfg.run)?;
    let prepared = flatten_for(
        &saved.config.model,
        prepare_with(&saved.data, saved.tokenizer.clone())?,
    );
    let model = saved.config.model.build()?;
    let (split, data) = if cfg.train_split {
        ("train", prepared.train.as_ref())
    } else {
        let Some(valid) = prepared.valid.as_deref() else {
            return invalid(
                "train_split",
                false,
                "this dataset has no validation split (evaluate on the training split: `train_split`)",
            );
        };
        ("valid", valid)
    };
    let r = evaluate(&model, &saved.checkpoint.params, data, EVAL_BATCH)?;
    // Language models: per-token cross-entropy in nats, so perplexity exp(loss) and bits per
    // token loss / ln 2.
    let lm = saved.tokenizer.is_some();
    Ok(EvalResult {
        run: cfg.run.display().to_string(),
        split: split.into(),
        examples: data.len(),
        step: saved.checkpoint.state.step,
        loss: Num(r.loss),
        accuracy: Num(r.accuracy),
        perplexity: lm.then(|| Num(r.loss.exp())),
        bits_per_token: lm.then(|| Num(r.loss / std::f64::consts::LN_2)),
    })
}
