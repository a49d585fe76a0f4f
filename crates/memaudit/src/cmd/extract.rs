//! `memaudit extract`: the attacker's side of The Secret Sharer (Carlini et al. 2019, §8): the
//! most likely completions of a canary template under a saved language model, by exact
//! best-first (Dijkstra) search over the slots (or a beam-limited variant), with its cost in
//! expanded trie nodes. With the run's canary manifest, inserted canaries are marked. The search
//! runs in `memaudit_experiments::extract`; this module converts the flags and renders.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::extract::{self, ExtractConfig};

use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A language-model run folder (`memaudit secret-sharer`, or `memaudit train` on text).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// The template to complete (default: the run's canary template), e.g. "my pin is
    /// {digits:4}".
    #[arg(long = "canary", value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// A canary manifest whose canaries are marked in the output (default: the run's).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Candidates to return, most likely first.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top: usize,
    /// Budget: trie nodes the search may expand (LM rows queried).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub budget: u64,
    /// Nodes expanded per batched LM query.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,
    /// Keep at most this many frontier entries (approximate search, bounded memory).
    #[arg(long, value_name = "N")]
    pub beam: Option<usize>,
    #[command(flatten)]
    pub config: ConfigFlags,
}

impl Args {
    /// The flags as the experiment's config.
    pub fn settings(&self) -> ExtractConfig {
        ExtractConfig {
            run: self.run.clone(),
            template: self.template.clone(),
            manifest: self.manifest.clone(),
            top: self.top,
            budget: self.budget,
            batch: self.batch,
            beam: self.beam,
        }
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    // A byte-level BPE run: every candidate rendered and scored whole (docs/transformers.md).
    // Only the tokenizer is read to tell (a run's checkpoint can be large).
    let tokenizer = args.run.join("tokenizer.json");
    // A BPE secret-sharer run (a canary manifest) goes through the library's search, which
    // scores its candidates rendered whole too and marks the inserted canaries.
    let manifest = args.manifest.is_some()
        || args
            .run
            .join(memaudit_experiments::secret_sharer::MANIFEST_FILE)
            .is_file();
    let bpe = args.config.config.is_none()
        && !manifest
        && memaudit_data::Tokenizer::load(&tokenizer)
            .is_ok_and(|t| t.kind() == memaudit_data::TokenizerKind::Bpe);
    if bpe {
        if args.top == 0 || args.budget == 0 || args.batch == 0 || args.beam == Some(0) {
            return Err(user(
                "--top, --budget, --batch and --beam must be at least 1",
            ));
        }
        let (saved, _lm, tok) = super::sample::load_lm(&args.run)?;
        return extract_rendered(args, &saved, &tok);
    }
    let cfg = match experiment::resolve(&args.config, args.settings(), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let mut observer = CliObserver::new("extract", ctx);
    let r =
        extract::run(&cfg, &mut observer).map_err(|e| experiment::cli_error(e, &args.config))?;
    drop(observer);
    let mut text = format!(
        "most likely completions of {:?} (|R| = {}) at step {}:\n",
        r.template, r.space_size, r.step
    );
    for (k, c) in r.candidates.iter().enumerate() {
        text += &format!(
            "{:>4}. {:?}  {:.3} bits  (after {} expansions){}\n",
            k + 1,
            c.text,
            c.log_perplexity.0,
            c.expansions,
            match (&c.canary, c.repetitions) {
                (Some(id), Some(reps)) => format!("  <- canary {id} ({reps} insertions)"),
                _ => String::new(),
            }
        );
    }
    text += &format!(
        "search: {} expansions, {} LM calls, stopped: {:?}{} ({:.1}s)",
        r.expansions,
        r.lm_calls,
        r.stop,
        if r.exact { "" } else { ", beam-limited" },
        r.seconds
    );
    if !r.canaries.is_empty() {
        let found = r.canaries.iter().filter(|e| e.extracted).count();
        text += &format!(
            "\n{found} of {} canaries among the {} most likely candidates",
            r.canaries.len(),
            cfg.top
        );
    }
    Ok(Report::new(text, serde_json::to_value(&r)?))
}

/// A byte-level BPE run: its merges join slot symbols, so the trie search does not apply; every
/// candidate is rendered, tokenized whole and scored (exact), with |R| capped by --budget.
fn extract_rendered(
    args: &Args,
    saved: &super::eval::SavedRun,
    tok: &memaudit_data::Tokenizer,
) -> Result<Report> {
    use memaudit_experiments::rendered;
    let lib = |e: memaudit_experiments::ExperimentError| experiment::cli_error(e, &args.config);
    let template = args.template.as_deref().ok_or_else(|| {
        user(format!(
            "--run {}: a BPE run; give the template to complete with --canary",
            args.run.display()
        ))
    })?;
    let started = std::time::Instant::now();
    let rc = rendered::candidates(template, tok, args.budget as u128, "budget").map_err(lib)?;
    let best = rendered::most_likely(&saved.config.model, &saved.checkpoint.params, &rc, args.top)
        .map_err(lib)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut text = format!(
        "most likely completions of {:?} (|R| = {}, every candidate tokenized whole) at step {}:\n",
        template,
        rc.space().size(),
        saved.checkpoint.state.step
    );
    for (k, (t, s)) in best.iter().enumerate() {
        text += &format!("{:>4}. {t:?}  {s:.3} bits\n", k + 1);
    }
    text += &format!("({seconds:.1}s)");
    Ok(Report::new(
        text,
        json!({
            "run": args.run.display().to_string(),
            "template": template,
            "log2_space": rc.space().log2_size(),
            "exact": true,
            "tokenization": rendered::describe(&rc),
            "candidates": best.iter().map(|(t, s)| json!({"text": t, "log_perplexity": num(*s)})).collect::<Vec<_>>(),
            "seconds": seconds,
        }),
    ))
}
