//! `memaudit eval`: loss and accuracy of a run's newest checkpoint on its validation data.

use std::path::PathBuf;

use anyhow::{Context, Result};
use memaudit_data::Tokenizer;
use memaudit_engine::checkpoint;
use memaudit_engine::train::{TrainConfig, evaluate};
use serde_json::json;

use super::train::{flatten_for, prepare_with};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder written by `memaudit train`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Evaluate on the training split instead of the validation split.
    #[arg(long)]
    pub train_split: bool,
}

/// A saved run: its training config, data flags, tokenizer and newest checkpoint.
pub struct SavedRun {
    pub config: TrainConfig,
    pub data: DataArgs,
    pub tokenizer: Option<Tokenizer>,
    pub checkpoint: checkpoint::Checkpoint,
}

pub fn load_run(dir: &std::path::Path) -> Result<SavedRun> {
    let rj = dir.join("run.json");
    let text = std::fs::read(&rj).map_err(|_| {
        user(format!(
            "--run {}: no run.json (not a memaudit run folder)",
            dir.display()
        ))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| user(format!("{}: not valid JSON: {e}", rj.display())))?;
    let cfg = v["config"]
        .get("train")
        .cloned()
        .ok_or_else(|| user(format!("{}: holds no training run", rj.display())))?;
    let config: TrainConfig = serde_json::from_value(cfg)
        .map_err(|e| user(format!("{}: unreadable training config: {e}", rj.display())))?;
    let data: DataArgs = serde_json::from_value(v["config"]["data"].clone())
        .map_err(|e| user(format!("{}: unreadable data flags: {e}", rj.display())))?;
    let tp = dir.join("tokenizer.json");
    let tokenizer = if tp.exists() {
        Some(Tokenizer::load(&tp).with_context(|| format!("loading {}", tp.display()))?)
    } else {
        None
    };
    let checkpoint = checkpoint::load_latest(&dir.join("checkpoints"))
        .map_err(|e| user(e.to_string()))?
        .ok_or_else(|| user(format!("--run {}: no checkpoint yet", dir.display())))?;
    if checkpoint.state.model != config.model {
        return Err(user(format!(
            "{}: the checkpoint's model differs from run.json's",
            dir.display()
        )));
    }
    // NaN or infinite weights make every number computed from them NaN ("valid loss nan", exit
    // 0); the trainer never saves such a checkpoint, so the file was damaged or written by
    // something else.
    if checkpoint.params.iter().any(|x| !x.is_finite()) {
        let layer = config
            .model
            .build()
            .ok()
            .and_then(|m| {
                m.first_nonfinite_layer(&checkpoint.params)
                    .map(str::to_string)
            })
            .map_or(String::new(), |l| format!(" (first in layer {l})"));
        return Err(user(format!(
            "--run {}: checkpoint {} holds non-finite weights{layer}; nothing computed from it would mean anything (retrain, or resume from an earlier checkpoint)",
            dir.display(),
            checkpoint.path.display()
        )));
    }
    Ok(SavedRun {
        config,
        data,
        tokenizer,
        checkpoint,
    })
}

pub fn run(args: &Args, _ctx: &Ctx) -> Result<Report> {
    let saved = load_run(&args.run)?;
    let prepared = flatten_for(
        &saved.config.model,
        prepare_with(&saved.data, saved.tokenizer.clone())?,
    );
    let model = saved.config.model.build()?;
    let (split, data) = if args.train_split {
        ("train", prepared.train.as_ref())
    } else {
        (
            "valid",
            prepared
                .valid
                .as_deref()
                .ok_or_else(|| user("this dataset has no validation split"))?,
        )
    };
    let r = evaluate(&model, &saved.checkpoint.params, data, 256)?;
    let lm = saved.tokenizer.is_some();
    let mut j = json!({
        "run": args.run.display().to_string(),
        "split": split,
        "examples": data.len(),
        "step": saved.checkpoint.state.step,
        "loss": num(r.loss),
        "accuracy": num(r.accuracy),
    });
    let mut text = format!(
        "{split} loss {} ({} examples, step {})",
        fmt_f64(r.loss),
        data.len(),
        saved.checkpoint.state.step
    );
    if lm {
        // Per-token cross-entropy in nats: perplexity exp(loss), bits per token loss / ln 2.
        j["perplexity"] = num(r.loss.exp());
        j["bits_per_token"] = num(r.loss / std::f64::consts::LN_2);
        text += &format!(
            ", perplexity {}, {} bits per token",
            fmt_f64(r.loss.exp()),
            fmt_f64(r.loss / std::f64::consts::LN_2)
        );
    }
    text += &format!(", accuracy {}", fmt_f64(r.accuracy));
    Ok(Report::new(text, j))
}
