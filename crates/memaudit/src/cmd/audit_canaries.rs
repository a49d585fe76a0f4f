//! `--audit-canaries M` for `train` and `secret-sharer`: the black-box one-run audit a run
//! carries. The engine makes and inserts the canaries (`black_box_canaries.rs`: mislabelled
//! examples for classifiers, random windows for language models, each included with
//! probability 1/2); memaudit-audit bounds their scores (`lower_bound::black_box`). This module
//! only wires the flag, writes the manifest (`audit_canaries.json`) and renders the result.

use anyhow::Result;
use memaudit_audit::lower_bound::{BlackBoxAuditResult, black_box_audit};
use memaudit_data::Tokenizer;
use memaudit_engine::black_box_canaries::{
    AuditCanaries, AuditCanary, insert_mislabelled, insert_random_windows,
};
use memaudit_engine::datasets::TokenWindowDataset;
use memaudit_engine::train::{Dataset, Trainer};
use serde_json::{Value, json};

use super::args::InputShape;
use super::train::{Prepared, TrainHooks, train_with_report_hooks};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::rundir::RunDir;

/// The manifest in the run folder.
pub const MANIFEST_FILE: &str = "audit_canaries.json";
/// Each bound of the black-box audit holds with probability at least 1 - this.
pub const AUDIT_SIGNIFICANCE: f64 = 0.05;
/// Canaries scored per forward pass.
const SCORE_CHUNK: usize = 256;

/// Insert `m` canaries (when given) into a prepared training set, seeded by `seed`: the
/// training set is replaced by the one with the included canaries, so every later count of N
/// (the trainer, its sampler, the accountant) includes them. `--audit-canaries` names the flag in
/// errors (exit code 2).
pub fn insert_into(
    prepared: Prepared,
    m: Option<usize>,
    seed: u64,
) -> Result<(Prepared, Option<AuditCanaries>)> {
    let Some(m) = m else {
        return Ok((prepared, None));
    };
    let flag = |e: memaudit_engine::EngineError| user(format!("--audit-canaries {m}: {e}"));
    let (train, canaries) = match &prepared.input {
        InputShape::Image { classes, .. }
        | InputShape::Flat { classes, .. }
        | InputShape::Sparse { classes, .. } => {
            insert_mislabelled(prepared.train, *classes, m, seed).map_err(flag)?
        }
        InputShape::Tokens { .. } => {
            let tok = prepared
                .tokenizer
                .as_ref()
                .ok_or_else(|| user("--audit-canaries: a text run without a tokenizer"))?;
            let window = window_of(prepared.train.as_ref())?;
            insert_random_windows(prepared.train, window, &canary_vocabulary(tok), m, seed)
                .map_err(flag)?
        }
    };
    Ok((Prepared { train, ..prepared }, Some(canaries)))
}

/// The same for the Secret Sharer's windows: returns the training set and its size N.
pub fn insert_windows(
    train: TokenWindowDataset,
    m: Option<usize>,
    tok: &Tokenizer,
    seed: u64,
) -> Result<(Box<dyn Dataset>, usize, Option<AuditCanaries>)> {
    let Some(m) = m else {
        let n = train.len();
        return Ok((Box::new(train), n, None));
    };
    let window = train.window;
    let (train, canaries) =
        insert_random_windows(Box::new(train), window, &canary_vocabulary(tok), m, seed)
            .map_err(|e| user(format!("--audit-canaries {m}: {e}")))?;
    let n = train.len();
    Ok((train, n, Some(canaries)))
}

/// The window length W of a language-model training set.
fn window_of(train: &dyn Dataset) -> Result<usize> {
    match train.batch(&[0]).input {
        memaudit_engine::Value::Tokens(t) => Ok(t.seq_len),
        _ => Err(user("--audit-canaries: the text data is not token windows")),
    }
}

/// Random-window canaries draw from every token but the unknown and end-of-sequence markers:
/// those never occur as plain text, so a window of them would be trivially unusual.
fn canary_vocabulary(tok: &Tokenizer) -> Vec<u32> {
    let special = [tok.unk_id(), tok.eos_id()];
    (0..tok.len() as u32)
        .filter(|id| !special.contains(&Some(*id)))
        .collect()
}

/// Write the manifest: what every canary is, whether it was trained on, and (after training)
/// its score.
pub fn save_manifest(
    rd: &RunDir,
    canaries: &AuditCanaries,
    tok: Option<&Tokenizer>,
    scores: Option<&[f64]>,
) -> Result<()> {
    let m = &canaries.manifest;
    let list: Vec<Value> = m
        .canaries
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            v["index"] = json!(k);
            v["included"] = json!(m.included[k]);
            if let (AuditCanary::RandomWindow { tokens }, Some(t)) = (c, tok) {
                v["text"] = t.decode(tokens).map(Value::String).unwrap_or(Value::Null);
            }
            if let Some(s) = scores {
                v["score"] = num(s[k]);
            }
            v
        })
        .collect();
    let doc = json!({
        "kind": m.kind,
        "seed": m.seed,
        "m": m.m(),
        "included": m.n_included(),
        "inclusion": "each canary independently with probability 1/2 (seeded)",
        "score": m.score,
        "canaries": list,
    });
    crate::rundir::write_atomic(
        &rd.file(MANIFEST_FILE),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )
}

/// The audit of a trained run, rendered.
pub struct BlackBoxAudit {
    pub json: Value,
    pub text: String,
}

/// Score every canary with the trained model, rewrite the manifest with the scores, and bound
/// them at the run's `delta` against its ledger's epsilon (infinite for a run without noise
/// or without DP: no claim).
pub fn audit(
    rd: &RunDir,
    trainer: &Trainer,
    canaries: &AuditCanaries,
    tok: Option<&Tokenizer>,
    delta: f64,
) -> Result<BlackBoxAudit> {
    let scores = canaries
        .scores(&trainer.model, &trainer.params, SCORE_CHUNK)
        .map_err(|e| user(format!("black-box audit: scoring the canaries: {e}")))?;
    save_manifest(rd, canaries, tok, Some(&scores))?;
    let claimed = trainer.epsilon()?.unwrap_or(f64::INFINITY);
    let result = black_box_audit(
        &scores,
        &canaries.manifest.included,
        claimed,
        delta,
        AUDIT_SIGNIFICANCE,
    )
    .map_err(|e| user(format!("black-box audit: {e}")))?;
    let private = trainer.config.privacy.is_some();
    let json = audit_json(&result, canaries, private);
    let text = audit_text(&result, canaries, private);
    Ok(BlackBoxAudit { json, text })
}

fn audit_json(a: &BlackBoxAuditResult, c: &AuditCanaries, private: bool) -> Value {
    json!({
        "m": a.m,
        "included": a.included,
        "canary_kind": c.manifest.kind,
        "score": c.manifest.score,
        "delta": a.delta,
        "two_m_delta": a.two_m_delta,
        "significance": a.significance,
        "method": a.method,
        "epsilon_lower_bound": num(a.epsilon_lower_bound),
        "claimed_epsilon": num(a.claimed_epsilon),
        "private": private,
        "exceeds_claim": a.exceeds_claim,
        "auroc": num(a.auroc),
        "results": a.bounds.iter().map(|b| json!({
            "method": b.method,
            "epsilon_lower_bound": num(b.epsilon_lower_bound),
            "assumes_gaussian_tradeoff": b.assumes_gaussian_tradeoff,
            "guesses": b.guesses,
            "correct_guesses": b.correct_guesses,
        })).collect::<Vec<_>>(),
        "warnings": a.warnings,
        "manifest": MANIFEST_FILE,
    })
}

fn audit_text(a: &BlackBoxAuditResult, c: &AuditCanaries, private: bool) -> String {
    let what = match c.manifest.kind.as_str() {
        "mislabelled" => "mislabelled-example canaries",
        _ => "random-window canaries",
    };
    let mut t = format!(
        "Black-box audit (one run, Steinke et al. 2023): {} {what} ({} included), delta {} (2*m*delta = {}), AUROC {}; lower bounds on epsilon, each at significance {}:\n",
        a.m,
        a.included,
        a.delta,
        fmt_f64(a.two_m_delta),
        fmt_f64(a.auroc),
        a.significance
    );
    for b in &a.bounds {
        t += &format!(
            "  {:<16} {}  ({} of {} guessed IN right){}\n",
            b.method,
            fmt_f64(b.epsilon_lower_bound),
            b.correct_guesses,
            b.guesses,
            if b.assumes_gaussian_tradeoff {
                "  (assumes a Gaussian trade-off curve; not used for the verdict)"
            } else {
                ""
            }
        );
    }
    t += &if !private {
        "not a private run: there is no claimed epsilon; the bound measures how much the model memorised its canaries.".to_string()
    } else if a.claimed_epsilon.is_infinite() {
        "claimed epsilon: inf (clipping without noise): any bound is consistent with it."
            .to_string()
    } else if a.exceeds_claim {
        format!(
            "REFUTED: the one-run lower bound {} exceeds the claimed epsilon {} (significance {}): this run does NOT deliver its privacy guarantee; on a run that clips and adds the stated noise this is a bug.",
            fmt_f64(a.epsilon_lower_bound),
            fmt_f64(a.claimed_epsilon),
            a.significance
        )
    } else {
        format!(
            "consistent with the claim: the one-run bound {} is at most the claimed epsilon {} ({:.0}% of it; a black-box audit of the final model is expected to be far below the claim).",
            fmt_f64(a.epsilon_lower_bound),
            fmt_f64(a.claimed_epsilon),
            100.0 * a.epsilon_lower_bound / a.claimed_epsilon
        )
    };
    for w in &a.warnings {
        t += &format!("\nwarning: {w}");
    }
    t
}

/// `memaudit train` with `--audit-canaries`: train (writing what `train_with_report` writes),
/// then audit and add the result to the text, the JSON, run.json and report.html.
pub fn train_and_audit(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    canaries: &AuditCanaries,
    delta: f64,
) -> Result<Report> {
    let outcome = train_with_report_hooks(
        ctx,
        rd,
        trainer,
        prepared,
        n,
        TrainHooks {
            epoch: None,
            step: None,
            logs: None,
            write_html: false,
            finish_run: false,
        },
        "memaudit train",
    )?;
    ctx.note(format!("scoring {} audit canaries", canaries.manifest.m()));
    let a = audit(rd, trainer, canaries, prepared.tokenizer.as_ref(), delta)?;
    let mut summary = outcome.summary;
    summary["black_box_audit"] = a.json.clone();
    rd.set("results", summary.clone())?;
    let mut html = outcome.html;
    html.heading("Black-box audit");
    html.pre(&a.text);
    html.write(&rd.file("report.html"))?;
    rd.finish("completed")?;
    Ok(Report::new(
        with_section(&outcome.report.text, &a.text),
        summary,
    ))
}

/// `text` with `section` before its closing "run folder:" lines.
pub fn with_section(text: &str, section: &str) -> String {
    match text.rfind("\n\nrun folder:") {
        Some(i) => format!("{}\n\n{section}{}", &text[..i], &text[i..]),
        None => format!("{text}\n\n{section}"),
    }
}
