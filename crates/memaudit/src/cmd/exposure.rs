//! `memaudit exposure`: exposure of the canaries of a saved run (The Secret Sharer, Carlini et
//! al. 2019): exact rank over all of R by the trie walk when |R| is within the limit, TF
//! Privacy's interpolation over reference candidates, and the skew-normal extrapolation.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::sample::load_lm;
use super::secret_sharer::{CanarySet, ExposureArgs, audit, summary_text};
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
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    args.exposure.validate()?;
    if args.scale.requested() {
        return super::exposure_shard::run(args, ctx);
    }
    let (saved, lm, tok) = load_lm(&args.run)?;
    let mut set = CanarySet::load(&args.run, args.manifest.as_deref(), &tok)?;
    let exact = args.exposure.exact_for(set.tpl.space().size())?;
    if set.references.is_empty() || args.reference_seed.is_some() {
        let n = set.draw_references(args.exposure.references, args.reference_seed.unwrap_or(0))?;
        if n < 2 {
            return Err(crate::error::user(
                "the randomness space leaves fewer than 2 reference candidates",
            ));
        }
    }
    ctx.note(format!(
        "{} canaries of {:?}, |R| = {}, {} references{}",
        set.manifest.canaries.len(),
        set.manifest.template,
        set.tpl.space().size(),
        set.references.len(),
        if exact {
            ", exact ranks by the trie walk"
        } else {
            ""
        }
    ));
    let a = audit(lm.as_ref(), &set, exact, args.exposure.exact_limit, None)?;
    let summary = a.summary(&set);
    let mut text = format!(
        "exposure of {:?} (log2|R| = {:.2}) at step {}:\n{}\n",
        set.manifest.template,
        set.tpl.space().log2_size(),
        saved.checkpoint.state.step,
        summary_text(&summary, exact)
    );
    text += "id          repetitions  log-perplexity  rank        exact    interpolated  extrapolated\n";
    for (i, c) in set.manifest.canaries.iter().enumerate() {
        let r = a.m.ranks.as_ref().map(|r| r[i]);
        text += &format!(
            "{:<10}  {:>11}  {:>14.3}  {:>10}  {:>7}  {:>12.3}  {:>12}\n",
            c.id,
            c.repetitions,
            a.m.log_perplexity[i],
            r.map_or("-".into(), |r| r.rank.to_string()),
            r.map_or("-".into(), |r| format!("{:.3}", r.exposure)),
            a.m.interpolated[i],
            fmt_f64(a.m.extrapolated[i]),
        );
    }
    text += &format!("({:.1}s)", a.m.seconds);
    Ok(Report::new(
        text,
        json!({
            "run": args.run.display().to_string(),
            "step": saved.checkpoint.state.step,
            "template": set.manifest.template,
            "log2_space": set.tpl.space().log2_size(),
            "exact": exact,
            "references": set.references.len(),
            "skew_normal": {"shape": a.m.fit.shape, "loc": a.m.fit.loc, "scale": a.m.fit.scale, "converged": a.m.fit_converged},
            "by_repetitions": summary,
            "canaries": a.canaries(&set),
            "seconds": a.m.seconds,
        }),
    ))
}
