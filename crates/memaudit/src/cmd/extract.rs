//! `memaudit extract`: the attacker's side of The Secret Sharer (Carlini et al. 2019, §8): the
//! most likely completions of a canary template under a saved language model, by exact
//! best-first (Dijkstra) search over the slots (or a beam-limited variant), with its cost in
//! expanded trie nodes. With the run's canary manifest, inserted canaries are marked.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_audit::CanaryManifest;
use serde_json::json;

use super::sample::load_lm;
use super::secret_sharer::{
    CanarySet, ExtractSettings, MANIFEST_FILE, extract_canaries, parse_template, tokenize_template,
};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

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
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.top == 0 || args.budget == 0 || args.batch == 0 || args.beam == Some(0) {
        return Err(user(
            "--top, --budget, --batch and --beam must be at least 1",
        ));
    }
    let (saved, lm, tok) = load_lm(&args.run)?;
    if tok.kind() == memaudit_data::TokenizerKind::Bpe {
        return extract_rendered(args, &saved, &tok);
    }
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| args.run.join(MANIFEST_FILE));
    let has_manifest = manifest_path.is_file();
    let set = match (&args.template, has_manifest) {
        (None, false) => {
            return Err(user(format!(
                "--run {}: no canary manifest; give the template to complete with --canary",
                args.run.display()
            )));
        }
        (None, true) => CanarySet::load(&args.run, Some(&manifest_path), &tok)?,
        (Some(t), _) => {
            let template = parse_template(t)?;
            let tpl = tokenize_template(&template, &tok, "")?;
            // Mark the run's canaries when they share the template.
            let manifest = if has_manifest {
                let m = CanarySet::load(&args.run, Some(&manifest_path), &tok)?;
                (m.manifest.template == template.source()).then_some(m.manifest)
            } else {
                None
            };
            let manifest = manifest.unwrap_or_else(|| CanaryManifest {
                format_version: memaudit_audit::canaries::MANIFEST_VERSION,
                template: template.source().to_string(),
                seed: 0,
                space_size: template.space().size(),
                log2_space: template.space().log2_size(),
                window: 0,
                context_tokens: tpl.context().to_vec(),
                terminator_tokens: Vec::new(),
                canaries: Vec::new(),
            });
            CanarySet {
                tpl,
                manifest,
                references: Vec::new(),
            }
        }
    };
    ctx.note(format!(
        "searching the {} candidates of {:?} for the {} most likely (budget {} expansions)",
        set.tpl.space().size(),
        set.manifest.template,
        args.top,
        args.budget
    ));
    let started = std::time::Instant::now();
    let (search, per) = extract_canaries(
        lm.as_ref(),
        &set,
        &ExtractSettings {
            budget: args.budget,
            top: args.top,
            batch: args.batch,
            beam: args.beam,
        },
    )
    .map_err(|e| user(e.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    let by_index: std::collections::HashMap<u128, &memaudit_audit::Canary> = set
        .manifest
        .canaries
        .iter()
        .map(|c| (c.secret_index, c))
        .collect();
    let mut text = format!(
        "most likely completions of {:?} (|R| = {}) at step {}:\n",
        set.manifest.template,
        set.tpl.space().size(),
        saved.checkpoint.state.step
    );
    let mut cands = Vec::new();
    for (k, c) in search.candidates.iter().enumerate() {
        let canary = by_index.get(&c.index);
        text += &format!(
            "{:>4}. {:?}  {:.3} bits  (after {} expansions){}\n",
            k + 1,
            set.render(c.index),
            c.log_perplexity,
            c.expansions,
            canary.map_or(String::new(), |x| format!(
                "  <- canary {} ({} insertions)",
                x.id, x.repetitions
            ))
        );
        cands.push(json!({
            "text": set.render(c.index),
            "log_perplexity": num(c.log_perplexity),
            "expansions": c.expansions,
            "canary": canary.map(|x| x.id.clone()),
            "repetitions": canary.map(|x| x.repetitions),
        }));
    }
    text += &format!(
        "search: {} expansions, {} LM calls, stopped: {:?}{} ({seconds:.1}s)",
        search.expansions,
        search.lm_calls,
        search.stop,
        if search.exact { "" } else { ", beam-limited" }
    );
    let canaries: Vec<_> = set
        .manifest
        .canaries
        .iter()
        .zip(&per)
        .map(|(c, e)| {
            json!({
                "id": c.id,
                "text": c.text,
                "repetitions": c.repetitions,
                "extracted": e.extracted,
                "position": e.position,
                "expansions": e.expansions,
            })
        })
        .collect();
    if !canaries.is_empty() {
        let found = per.iter().filter(|e| e.extracted).count();
        text += &format!(
            "\n{found} of {} canaries among the {} most likely candidates",
            per.len(),
            args.top
        );
    }
    Ok(Report::new(
        text,
        json!({
            "run": args.run.display().to_string(),
            "template": set.manifest.template,
            "log2_space": set.tpl.space().log2_size(),
            "expansions": search.expansions,
            "lm_calls": search.lm_calls,
            "stop": search.stop,
            "exact": search.exact,
            "candidates": cands,
            "canaries": canaries,
            "seconds": seconds,
        }),
    ))
}

/// A byte-level BPE run: its merges join slot symbols, so the trie search does not apply; every
/// candidate is rendered, tokenized whole and scored (exact), with |R| capped by --budget.
fn extract_rendered(
    args: &Args,
    saved: &super::eval::SavedRun,
    tok: &memaudit_data::Tokenizer,
) -> Result<Report> {
    use super::rendered;
    let template = args.template.as_deref().ok_or_else(|| {
        user(format!(
            "--run {}: a BPE run; give the template to complete with --canary",
            args.run.display()
        ))
    })?;
    let started = std::time::Instant::now();
    let rc = rendered::candidates(template, tok, args.budget as u128, "--budget")?;
    let best = rendered::most_likely(&saved.config.model, &saved.checkpoint.params, &rc, args.top)?;
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
