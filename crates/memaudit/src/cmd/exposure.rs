//! `memaudit exposure`: exposure of the canaries of a saved run (The Secret Sharer, Carlini et
//! al. 2019): exact rank over all of R by the trie walk when |R| is within the limit, TF
//! Privacy's interpolation over reference candidates, and the skew-normal extrapolation.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::exposure::{self, ExposureConfig};
use serde_json::json;

use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use super::secret_sharer::{ExposureArgs, summary_text};
use crate::Ctx;
use crate::output::{Report, fmt_f64};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `memaudit secret-sharer` run folder (or any language-model run, with --manifest).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// A canary manifest (canaries.json) to audit instead of the run's own; its token ids must
    /// match the run's vocabulary.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub exposure: ExposureArgs,
    /// Draw --references new reference candidates with this seed instead of using the run's
    /// saved ones.
    #[arg(long, value_name = "S")]
    pub reference_seed: Option<u64>,
    /// Exact exposure of --secret over all candidates of this template, each rendered and
    /// tokenized whole (any run without a manifest; the way to audit a byte-level BPE run such
    /// as an imported GPT-2, whose merges join slot symbols). |R| is capped by --exact-limit.
    #[arg(
        long = "canary",
        value_name = "TEMPLATE",
        requires = "secrets",
        conflicts_with = "manifest"
    )]
    pub template: Option<String>,
    /// A secret (a candidate text of --canary) to rank; repeat for several.
    #[arg(long = "secret", value_name = "TEXT", requires = "template")]
    pub secrets: Vec<String>,
    /// Scale-out: run one shard of the exact-rank walk (see docs/scale-out.md).
    #[command(flatten)]
    pub scale: super::scale::ShardArgs,
    #[command(flatten)]
    pub config: ConfigFlags,
}

impl Args {
    /// The flags as the experiment's config.
    pub fn settings(&self) -> ExposureConfig {
        ExposureConfig {
            run: self.run.clone(),
            manifest: self.manifest.clone(),
            exposure: self.exposure.settings(),
            reference_seed: self.reference_seed,
        }
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.scale.requested() {
        args.exposure.validate()?;
        return super::exposure_shard::run(args, ctx);
    }
    // A byte-level BPE run's canaries are scored rendered whole (docs/transformers.md).
    if let Some(t) = &args.template {
        let (saved, _lm, tok) = super::sample::load_lm(&args.run)?;
        return secrets_rendered_whole(args, t, &saved, &tok);
    }
    let cfg = match experiment::resolve(&args.config, args.settings(), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let mut observer = CliObserver::new("exposure", ctx);
    let r =
        exposure::run(&cfg, &mut observer).map_err(|e| experiment::cli_error(e, &args.config))?;
    drop(observer);
    let (set, a) = (&r.set, &r.audit);
    let mut text = format!(
        "exposure of {:?} (log2|R| = {:.2}) at step {}:\n{}\n",
        r.template,
        r.log2_space,
        r.step,
        summary_text(&r.by_repetitions, r.exact)
    );
    text += "id          repetitions  log-perplexity  rank        exact    interpolated  extrapolated\n";
    for (i, c) in set.manifest.canaries.iter().enumerate() {
        let rank = a.m.ranks.as_ref().map(|r| r[i]);
        text += &format!(
            "{:<10}  {:>11}  {:>14.3}  {:>10}  {:>7}  {:>12.3}  {:>12}\n",
            c.id,
            c.repetitions,
            a.m.log_perplexity[i],
            rank.map_or("-".into(), |r| r.rank.to_string()),
            rank.map_or("-".into(), |r| format!("{:.3}", r.exposure)),
            a.m.interpolated[i],
            fmt_f64(a.m.extrapolated[i]),
        );
    }
    text += &format!("({:.1}s)", r.seconds);
    Ok(Report::new(text, serde_json::to_value(&r)?))
}

/// `--canary T --secret S`: exact exposure with every candidate rendered and tokenized whole.
fn secrets_rendered_whole(
    args: &Args,
    template: &str,
    saved: &super::eval::SavedRun,
    tok: &memaudit_data::Tokenizer,
) -> Result<Report> {
    use memaudit_experiments::rendered;
    let lib = |e: memaudit_experiments::ExperimentError| experiment::cli_error(e, &args.config);
    let rc = rendered::candidates(template, tok, args.exposure.exact_limit, "exact_limit")
        .map_err(lib)?;
    let rows = rendered::exposures(
        &saved.config.model,
        &saved.checkpoint.params,
        &rc,
        tok,
        &args.secrets,
    )
    .map_err(lib)?;
    let mut text = format!(
        "exact exposure of {:?} (log2|R| = {:.2}, every candidate tokenized whole) at step {}:\n",
        rc.template().source(),
        rc.space().log2_size(),
        saved.checkpoint.state.step
    );
    text += "secret                log-perplexity  rank        exposure  tokens\n";
    for r in &rows {
        text += &format!(
            "{:<20}  {:>14}  {:>10}  {:>8}  {}\n",
            r["secret"].as_str().unwrap_or_default(),
            fmt_f64(r["log_perplexity"].as_f64().unwrap_or(f64::NAN)),
            r["rank"].as_str().unwrap_or_default(),
            fmt_f64(r["exposure"].as_f64().unwrap_or(f64::NAN)),
            r["tokens"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(Report::new(
        text.trim_end().to_string(),
        json!({
            "run": args.run.display().to_string(),
            "step": saved.checkpoint.state.step,
            "template": rc.template().source(),
            "log2_space": rc.space().log2_size(),
            "exact": true,
            "tokenization": rendered::describe(&rc),
            "secrets": rows,
        }),
    ))
}
