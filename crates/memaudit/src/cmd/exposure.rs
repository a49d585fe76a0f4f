//! `memaudit exposure`: exposure of the canaries of a saved run (The Secret Sharer, Carlini et
//! al. 2019): exact rank over all of R by the trie walk when |R| is within the limit, TF
//! Privacy's interpolation over reference candidates, and the skew-normal extrapolation.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::exposure::{self, ExposureConfig};

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
