//! `memaudit demo`: the audit pipeline (`memaudit audit`, issue 18) on the embedded corpus (Moby
//! Dick) with no fetch: a plain and a DP-SGD character LSTM (epsilon 8 by default) with
//! canaries `my pin is {digits:4}` inserted 1, 4, 16 and 64 times; exact exposure (|R| = 10^4),
//! extraction, a small membership inference (LOSS, LiRA, RMIA with two shadow pairs), and the
//! white-box and one-run lower bounds, compared with each variant's claim in one verdict. One
//! report: `<out>/report.html`; the config it ran is `<out>/audit.toml`, so `memaudit audit
//! --config <out>/audit.toml --out <out>` reruns it (skipping every finished stage).
//!
//! `--quick` is a seconds-long smoke run of the same stages. The config is
//! `memaudit_experiments::pipeline::config::demo`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memaudit_experiments::pipeline::{self, LoadedConfig, PipelineOptions};
use serde_json::{Value, json};

use super::audit::summary_text;
use super::experiment::{CliObserver, ConfigFlags, cli_error};
use crate::Ctx;
use crate::error::user;
use crate::output::Report;

/// Marker file that says a folder is the demo's own (and may be reused by the next demo).
const MARKER: &str = "demo.json";
/// The config the demo ran, in its folder.
const CONFIG_FILE: &str = "audit.toml";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The demo's folder. A folder from a previous demo is reused (finished stages whose inputs
    /// did not change are skipped); any other non-empty folder is refused.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub out: PathBuf,
    /// A tiny run (seconds): the same stages on 400 windows and a small model.
    #[arg(long)]
    pub quick: bool,
    /// Epsilon of the private model (delta 1e-5, Poisson sampling, RDP accounting).
    #[arg(long, default_value_t = 8.0, value_name = "EPS")]
    pub epsilon: f64,
    /// Epochs of each model (default 8; 1 with --quick).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Seed of everything (canaries, initialisation, batches, DP noise, shadow splits).
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
}

/// Make `out` the demo's folder: create it, or reuse it when a previous demo left it; refuse a
/// folder that holds anything else (nothing in it is touched).
fn claim_folder(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(user(format!(
            "--out {}: exists and is not a folder; choose another --out",
            out.display()
        )));
    }
    if out.is_dir() {
        let nonempty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
        let marker: Option<Value> = std::fs::read(out.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let ours = marker
            .as_ref()
            .and_then(|m| m.get("command"))
            .and_then(Value::as_str)
            == Some("demo");
        if nonempty && !ours {
            return Err(user(format!(
                "--out {}: holds something other than a memaudit demo; choose another --out (the demo only reuses its own folder)",
                out.display()
            )));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::rundir::write_atomic(
        &out.join(MARKER),
        serde_json::to_string_pretty(&json!({"command": "demo", "status": "running"}))?.as_bytes(),
    )?;
    Ok(())
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if !(args.epsilon > 0.0 && args.epsilon.is_finite()) {
        return Err(user(format!(
            "--epsilon must be positive and finite, got {}",
            args.epsilon
        )));
    }
    if args.epochs == Some(0) {
        return Err(user("--epochs must be at least 1"));
    }
    let cfg = pipeline::config::demo(args.quick, args.epsilon, args.epochs, args.seed);
    claim_folder(&args.out)?;
    let path = args.out.join(CONFIG_FILE);
    let text = format!(
        "# The audit `memaudit demo{}` ran; rerun it with `memaudit audit --config {} --out {}`.\n{}",
        if args.quick { " --quick" } else { "" },
        path.display(),
        args.out.display(),
        memaudit_experiments::config::to_toml(&cfg)?
    );
    crate::rundir::write_atomic(&path, text.as_bytes())?;
    let flags = ConfigFlags {
        config: Some(path.clone()),
        print_config: false,
    };
    let loaded = LoadedConfig::parse(text, &path).map_err(|e| cli_error(e, &flags))?;
    let mut obs = CliObserver::new("demo", ctx);
    let opts = PipelineOptions {
        out: args.out.clone(),
        before_commit: None,
    };
    let results = pipeline::run(&loaded, opts, &pipeline::backend::Libraries, &mut obs)
        .map_err(|e| cli_error(e, &flags))?;
    obs.finish();
    let mut json = serde_json::to_value(&results)?;
    json["report"] = json!(args.out.join(pipeline::stages::REPORT_FILE));
    json["config_file"] = json!(path);
    crate::rundir::write_atomic(
        &args.out.join(MARKER),
        serde_json::to_string_pretty(&json!({"command": "demo", "status": "completed"}))?
            .as_bytes(),
    )?;
    Ok(Report::new(summary_text(&results, &args.out), json))
}
