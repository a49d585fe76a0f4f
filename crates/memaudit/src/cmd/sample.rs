//! `memaudit sample`: text from a saved language model. The experiment (the generation loop
//! through the model's incremental inference) is `memaudit_experiments::sample`; this file turns
//! the flags into its config and renders its result.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::NullObserver;
use memaudit_experiments::sample::{self, SampleConfig};

use super::experiment::{self, ConfigFlags, Resolved};
use crate::Ctx;
use crate::output::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder of a language model (`memaudit train` on text, `memaudit secret-sharer`).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Text the sample continues (default: the start of a line).
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub prefix: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub length: usize,
    /// Softmax temperature: p ~ exp(log p / T); 0 always takes the most likely token.
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    pub temperature: f64,
    /// Seed of the draws (default: drawn at random and reported).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Independent samples.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub count: usize,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// The incremental LM and tokenizer of a saved run, or an error saying why it is not one (the
/// experiments library's).
pub use memaudit_experiments::saved_run::load_lm;

/// The flags as the experiment's config.
fn config(args: &Args) -> SampleConfig {
    SampleConfig {
        run: args.run.clone(),
        prefix: args.prefix.clone(),
        length: args.length,
        temperature: args.temperature,
        seed: args.seed,
        count: args.count,
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&args.config, config(args), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r =
        sample::run(&cfg, &mut NullObserver).map_err(|e| experiment::cli_error(e, &args.config))?;
    if cfg.seed.is_none() {
        ctx.note(format!(
            "seed {} (pass --seed {} to draw the same text)",
            r.seed, r.seed
        ));
    }
    Ok(Report::new(
        r.samples.join("\n\n----\n\n"),
        serde_json::to_value(&r)?,
    ))
}
