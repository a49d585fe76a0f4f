//! `memaudit eval`: loss and accuracy of a run's newest checkpoint on its validation data.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_engine::train::evaluate;
use serde_json::json;

use super::train::flatten_for;
use crate::Ctx;
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

/// A saved run (the experiments library's: its training config, data settings, tokenizer and
/// newest checkpoint), read back by `eval`, `export`, `sample` and the measurements of saved
/// runs. Its errors name the setting `run`, which the CLI reports as `--run`.
pub use memaudit_experiments::saved_run::{SavedRun, load_run};

pub fn run(args: &Args, _ctx: &Ctx) -> Result<Report> {
    let saved = load_run(&args.run)?;
    let prepared = flatten_for(
        &saved.config.model,
        memaudit_experiments::train::prepare_with(&saved.data, saved.tokenizer.clone())?,
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
