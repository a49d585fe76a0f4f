//! `memaudit audit --config audit.toml`: the audit pipeline (issue 18). One TOML file describes
//! the data, the model, the training variants, the canaries and the audits; the stages run (or
//! are skipped when their unit is complete with the same input hash) and `results.json` and
//! `report.html` land in `--out`. `--example` prints a commented config that runs as it is (`--example dataset`: one on a
//! classifier dataset).
//! The pipeline is `memaudit_experiments::pipeline`; this file parses flags and renders.

use std::path::{Path, PathBuf};

use anyhow::Result;
use memaudit_experiments::pipeline::{
    self, AuditResults, EXAMPLE, EXAMPLE_DATASET, LoadedConfig, PipelineOptions,
};
use serde_json::json;

use super::experiment::{CliObserver, ConfigFlags, cli_error};
use crate::Ctx;
use crate::error::user;
use crate::output::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The audit's configuration (TOML; `--example` prints one that runs as it is).
    #[arg(long, value_name = "FILE.toml", required_unless_present = "example")]
    pub config: Option<PathBuf>,
    /// Print a commented example configuration and exit: `text` (the default; a character LSTM
    /// on the embedded corpus with the Secret Sharer's canaries) or `dataset` (an MLP on the
    /// built-in digits).
    #[arg(long, value_name = "KIND", num_args = 0..=1, default_missing_value = "text",
          value_parser = ["text", "dataset"])]
    pub example: Option<String>,
    /// Output folder: stages/ (one atomic unit per stage), shadow-cache/, results.json and
    /// report.html. Rerunning into the same folder skips every finished stage.
    #[arg(long, value_name = "DIR", default_value = "runs/audit")]
    pub out: PathBuf,
}

/// Crash tests only, and only with MEMAUDIT_ALLOW_FAULT_INJECTION=1:
/// `MEMAUDIT_TEST_KILL_IN_STAGE=STAGE` (e.g. `train/dp`) aborts the process once that stage's
/// output is written into its temporary folder and before it is committed, as a kill -9 there
/// would (no destructor runs).
fn kill_hook() -> Result<Option<pipeline::store::BeforeCommit<'static>>> {
    let Ok(stage) = std::env::var("MEMAUDIT_TEST_KILL_IN_STAGE") else {
        return Ok(None);
    };
    if std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1") {
        return Err(user(
            "MEMAUDIT_TEST_KILL_IN_STAGE kills the process on purpose for crash tests: it needs MEMAUDIT_ALLOW_FAULT_INJECTION=1",
        ));
    }
    Ok(Some(Box::new(move |name: &str, _tmp: &Path| {
        if name == stage {
            std::process::abort();
        }
    })))
}

/// The terminal summary: one line per variant, the verdict, the caveat, where things are.
pub fn summary_text(r: &AuditResults, out: &Path) -> String {
    let mut t = String::new();
    for line in &r.summary {
        t += &format!("{line}\n");
    }
    t += &format!("\nverdict: {}\n", r.verdict.line);
    if let Some(c) = &r.selection_caveat {
        t += &format!("{c}\n");
    }
    let ran = r
        .run
        .stages
        .iter()
        .filter(|s| s.status == pipeline::store::StageStatus::Ran)
        .count();
    t += &format!(
        "\n{} stages ({ran} ran, {} up to date) in {:.0} s\nresults: {}\nreport:  {}",
        r.run.stages.len(),
        r.run.stages.len() - ran,
        r.run.seconds,
        out.join(pipeline::stages::RESULTS_FILE).display(),
        out.join(pipeline::stages::REPORT_FILE).display()
    );
    t
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if let Some(kind) = &args.example {
        let example = match kind.as_str() {
            "dataset" => EXAMPLE_DATASET,
            _ => EXAMPLE,
        };
        return Ok(Report::new(
            example.trim_end(),
            json!({ "example": example }),
        ));
    }
    let Some(path) = &args.config else {
        return Err(user(
            "--config FILE.toml: give the audit's configuration (or --example)",
        ));
    };
    let flags = ConfigFlags {
        config: Some(path.clone()),
        print_config: false,
    };
    let loaded = LoadedConfig::read(path).map_err(|e| cli_error(e, &flags))?;
    let hook = kill_hook()?;
    let opts = PipelineOptions {
        out: args.out.clone(),
        before_commit: hook,
    };
    let mut obs = CliObserver::new("audit", ctx);
    let backend = pipeline::backend::Libraries;
    let results =
        pipeline::run(&loaded, opts, &backend, &mut obs).map_err(|e| cli_error(e, &flags))?;
    obs.finish();
    let json = serde_json::to_value(&results)?;
    Ok(Report::new(summary_text(&results, &args.out), json))
}
