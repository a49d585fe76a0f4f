//! `memaudit bench exposure`: exact exposure over 10^6 six-digit candidates with the 2x200
//! character LSTM (PTB's 50-character vocabulary), the speed target (<= 2 s on the
//! 2-core machine), and the projected time for the paper's 10^9 space.
//!
//! Three timings, medians over repeats:
//! - the full trie walk (`Scorer::all_scores`: every candidate scored, nothing pruned), the
//!   number to compare with PyTorch's depth-by-depth walk;
//! - exact ranks of 100 secrets (`Scorer::exact_ranks`, what `memaudit exposure` runs: the same
//!   walk, streaming, with subtrees above the largest secret's score pruned);
//! - scoring candidates one by one (each its own sequence after the shared conditioning), the
//!   rate PyTorch's per-candidate loop is quoted at.
//!
//! `--export DIR` writes the weights (safetensors, our names = PyTorch's `nn.LSTM` layout: see
//! `memaudit-engine`'s `models/lm.rs`), the token ids and check scores for
//! `scripts/bench_exposure_torch.py`, which runs the same model and walk in PyTorch and prints
//! the ratios.

use memaudit_engine::stats::median;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use memaudit_audit::scoring::DEFAULT_CHUNK_ROWS;
use memaudit_audit::{Scorer, WalkOptions};
use memaudit_data::Tokenizer;
use memaudit_engine::checkpoint::{self, CheckpointState};
use memaudit_engine::optim::OptimizerState;
use memaudit_engine::{IncrementalLm, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::secret_sharer::{parse_template, tokenize_template};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

/// The target for 10^6 candidates, seconds.
pub const TARGET_SECONDS: f64 = 2.0;

/// The 50 characters of PTB's training text (`ptb.train.txt`).
pub const PTB_CHARS: &str = "\n #$&'*-./0123456789<>N\\abcdefghijklmnopqrstuvwxyz";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Digits of the canary's slot: |R| = 10^digits (the paper's PTB canaries have 9).
    #[arg(long, default_value_t = 6, value_name = "D")]
    pub digits: u32,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Score with the weights of this language-model run (its vocabulary must hold the
    /// template) instead of a random 2x200 character LSTM.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Write the weights, token ids and check scores here for scripts/bench_exposure_torch.py.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Rows per batched LM step of the walk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS, value_name = "N")]
    pub chunk_rows: usize,
    /// Candidates scored each as its own sequence, for the per-candidate rate.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub per_candidate: usize,
    /// Seed of the random weights and the secrets.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// A smoke run: 4 digits, one repeat, 2,000 per-candidate scores.
    #[arg(long)]
    pub quick: bool,
}

/// LM rows of a full walk over `digits` digit positions: 10 + 100 + ... + 10^(digits-1).
fn walk_rows(digits: u32) -> f64 {
    (1..digits).map(|d| 10f64.powi(d as i32)).sum()
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let digits = if args.quick { 4 } else { args.digits };
    let repeats = if args.quick { 1 } else { args.repeats };
    let per_candidate = if args.quick {
        2_000
    } else {
        args.per_candidate
    };
    if !(2..=9).contains(&digits) || repeats == 0 || args.chunk_rows == 0 {
        return Err(user(
            "--digits must be 2-9, --repeats and --chunk-rows at least 1",
        ));
    }
    let (cfg, params, tok, source) = match &args.run {
        Some(dir) => {
            let (saved, _, tok) = super::sample::load_lm(dir)?;
            (
                saved.config.model.clone(),
                saved.checkpoint.params.clone(),
                tok,
                format!("weights of {}", dir.display()),
            )
        }
        None => {
            let tok = Tokenizer::char_from_text(PTB_CHARS, false)?;
            let cfg = ModelConfig::LstmLm {
                vocab: tok.len(),
                embed: 32,
                hidden: 200,
                layers: 2,
                dropout: 0.0,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
            let params = cfg.build()?.init_params(&mut rng);
            (cfg, params, tok, "random weights".to_string())
        }
    };
    let template = parse_template(&format!("the random number is {{digits:{digits}}}"))?;
    let tpl = tokenize_template(&template, &tok, "")?;
    // A GPT's key/value cache holds the conditioning and the digits, not its whole positional
    // table (as the Secret Sharer sizes it); recurrent models ignore the length.
    let lm: Box<dyn IncrementalLm> =
        cfg.incremental_lm_with_context(&params, tpl.conditioning().len() + digits as usize)?;
    let size = template.space().size();
    let scorer = Scorer::new(
        lm.as_ref(),
        &tpl,
        WalkOptions {
            chunk_rows: args.chunk_rows,
            parallel_tasks: 1,
        },
    )
    .map_err(|e| user(e.to_string()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0xC0FFEE);
    let secrets: Vec<u128> = (0..100).map(|_| rng.random_range(0..size)).collect();
    let singles: Vec<u128> = (0..per_candidate)
        .map(|_| rng.random_range(0..size))
        .collect();
    ctx.note(format!(
        "{} ({}), {} candidates, {} rayon threads, chunks of {} rows, {repeats} repeats",
        super::train::model_name(&cfg),
        source,
        size,
        rayon::current_num_threads(),
        args.chunk_rows
    ));

    let (mut t_walk, mut t_exact, mut t_single) = (Vec::new(), Vec::new(), Vec::new());
    let mut all = None;
    let mut ranks = None;
    let mut single = None;
    for r in 0..repeats {
        let t = Instant::now();
        let a = scorer.all_scores(size).map_err(|e| user(e.to_string()))?;
        t_walk.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let rk = scorer
            .exact_ranks(&secrets, size)
            .map_err(|e| user(e.to_string()))?;
        t_exact.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s = scorer
            .log_perplexities(&singles)
            .map_err(|e| user(e.to_string()))?;
        t_single.push(t.elapsed().as_secs_f64());
        ctx.note(format!(
            "repeat {}: full walk {:.3} s, exact ranks of 100 secrets {:.3} s, {} single candidates {:.3} s",
            r + 1,
            t_walk[r],
            t_exact[r],
            per_candidate,
            t_single[r]
        ));
        all = Some(a);
        ranks = Some(rk);
        single = Some(s);
    }
    let (all, ranks, single) = (all.unwrap(), ranks.unwrap(), single.unwrap());

    // Agreement: the walk (fused parent products) against one-by-one scoring (plain steps);
    // the streaming ranks against counting the walk's stored scores at or below each secret's
    // one-by-one score (what the streaming count does, its own leaf counted once).
    let max_diff = singles
        .iter()
        .zip(&single)
        .map(|(&i, s)| (all.scores[i as usize] - s).abs())
        .fold(0.0, f64::max);
    let mut sorted = all.scores.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let rank_mismatch = ranks
        .ranks
        .iter()
        .filter(|r| {
            let below = sorted.partition_point(|&x| x <= r.log_perplexity) as u128;
            let own_counted = all.scores[r.index as usize] <= r.log_perplexity;
            r.rank != below + u128::from(!own_counted)
        })
        .count();
    let walk_all = t_walk.clone();
    let walk = median(&t_walk);
    let exact = median(&t_exact);
    let single_rate = per_candidate as f64 / median(&t_single);
    let rows = all.stats.lm_rows as f64;
    let projected_1e9 = walk * walk_rows(9) / walk_rows(digits);
    let mut text = format!(
        "exact exposure over {size} candidates ({}):\n  full trie walk (every candidate scored): {walk:.3} s, {:.0} LM rows, {:.0} rows/s, {:.2} M candidates/s\n  exact ranks of 100 secrets (pruned walk): {exact:.3} s\n  one candidate at a time: {single_rate:.0} candidates/s ({:.1} s for all {size})\n  projected full walk over 10^9 candidates: {:.0} s ({:.1} min)\n  agreement: walk vs one-by-one scores within {max_diff:.2e} bits; streaming ranks differing from counting the stored scores: {rank_mismatch} of 100",
        source,
        rows,
        rows / walk,
        size as f64 / walk / 1e6,
        size as f64 / single_rate,
        projected_1e9,
        projected_1e9 / 60.0,
    );
    if digits == 6 && args.run.is_none() {
        text += &format!(
            "\n  target: <= {TARGET_SECONDS} s for 10^6: {}",
            if walk <= TARGET_SECONDS {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    let mut j = json!({
        "model": cfg,
        "weights": source,
        "candidates": size as u64,
        "digits": digits,
        "threads": rayon::current_num_threads(),
        "chunk_rows": args.chunk_rows,
        "repeats": repeats,
        "walk_seconds": num(walk),
        "walk_seconds_each": walk_all,
        "walk_lm_rows": all.stats.lm_rows,
        "rows_per_second": num(rows / walk),
        "exact_ranks_seconds": num(exact),
        "per_candidate_per_second": num(single_rate),
        "projected_1e9_seconds": num(projected_1e9),
        "target_seconds": TARGET_SECONDS,
        "max_score_difference_bits": num(max_diff),
        "rank_mismatches": rank_mismatch,
    });
    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--export {}: cannot create", dir.display()))?;
        let model = cfg.build()?;
        let ck = checkpoint::save(
            &dir.join("weights"),
            model.param_specs(),
            &params,
            &OptimizerState {
                step: 0,
                buffers: Vec::new(),
            },
            &CheckpointState {
                format: checkpoint::CHECKPOINT_FORMAT,
                model: cfg.clone(),
                step: 0,
                epoch: 0,
                optimizer_buffers: Vec::new(),
                trainer: serde_json::Value::Null,
            },
        )?;
        let check: Vec<u128> = singles.iter().take(2000).copied().collect();
        let export = json!({
            "model": cfg,
            "weights": ck.join("model.safetensors").display().to_string(),
            "conditioning": tpl.conditioning(),
            "slot_tokens": tpl.steps().iter().map(|s| s.tokens.clone()).collect::<Vec<_>>(),
            "digits": digits,
            "check_indices": check.iter().map(|&i| i as u64).collect::<Vec<_>>(),
            "check_scores": check.iter().map(|&i| all.scores[i as usize]).collect::<Vec<_>>(),
            "secrets": secrets.iter().map(|&i| i as u64).collect::<Vec<_>>(),
            "secret_ranks": ranks.ranks.iter().map(|r| r.rank as u64).collect::<Vec<_>>(),
            "memaudit": j.clone(),
        });
        let p = dir.join("bench.json");
        crate::rundir::write_atomic(&p, serde_json::to_string_pretty(&export)?.as_bytes())?;
        j["export"] = json!(p.display().to_string());
        text += &format!("\n  exported to {}", p.display());
    }
    Ok(Report::new(text, j))
}
