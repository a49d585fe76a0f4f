//! `memaudit eval`: loss and accuracy of a run's newest checkpoint on its validation data. The
//! experiment is `memaudit_experiments::eval`; this file turns the flags into its config and
//! renders its result.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::NullObserver;
use memaudit_experiments::eval::{self, EvalConfig};

use super::experiment::{self, ConfigFlags, Resolved};
use crate::Ctx;
use crate::output::{Report, fmt_f64};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder written by `memaudit train`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Evaluate on the training split instead of the validation split.
    #[arg(long)]
    pub train_split: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// A saved run (the experiments library's: its training config, data settings, tokenizer and
/// newest checkpoint), read back by `export` and the measurements of saved runs. Its errors
/// name the setting `run`, which the CLI reports as `--run`.
pub use memaudit_experiments::saved_run::{SavedRun, load_run};

/// The flags as the experiment's config.
fn config(args: &Args) -> EvalConfig {
    EvalConfig {
        run: args.run.clone(),
        train_split: args.train_split,
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&args.config, config(args), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r =
        eval::run(&cfg, &mut NullObserver).map_err(|e| experiment::cli_error(e, &args.config))?;
    let mut text = format!(
        "{} loss {} ({} examples, step {})",
        r.split,
        fmt_f64(r.loss.get()),
        r.examples,
        r.step
    );
    if let (Some(ppl), Some(bits)) = (r.perplexity, r.bits_per_token) {
        text += &format!(
            ", perplexity {}, {} bits per token",
            fmt_f64(ppl.get()),
            fmt_f64(bits.get())
        );
    }
    text += &format!(", accuracy {}", fmt_f64(r.accuracy.get()));
    Ok(Report::new(text, serde_json::to_value(&r)?))
}
