//! The black-box one-run audit a training run carries (Steinke, Nasr, Jagielski 2023), for
//! `train` and `secret-sharer` (`audit_canaries = M`). The engine makes and inserts the canaries
//! (`black_box_canaries.rs`: mislabelled examples for classifiers, random windows for language
//! models, each included with probability 1/2); memaudit-audit bounds their scores
//! (`lower_bound::black_box`). This module inserts them before N is counted, writes the manifest
//! (`audit_canaries.json`) and returns the typed result; the CLI renders it.

use memaudit_audit::lower_bound::{BlackBoxAuditResult, black_box_audit};
use memaudit_data::Tokenizer;
use memaudit_engine::black_box_canaries::{
    AuditCanaries, AuditCanary, insert_mislabelled, insert_random_windows,
};
use memaudit_engine::datasets::TokenWindowDataset;
use memaudit_engine::train::{Dataset, Trainer};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{ExperimentError, Result};
use crate::num::Num;
use crate::rundir::{RunDir, write_atomic};
use crate::train::{InputShape, Prepared};

/// The manifest in the run folder.
pub const MANIFEST_FILE: &str = "audit_canaries.json";
/// Each bound of the black-box audit holds with probability at least 1 - this.
pub const AUDIT_SIGNIFICANCE: f64 = 0.05;
/// Canaries scored per forward pass.
const SCORE_CHUNK: usize = 256;

/// An engine error of the canaries, naming the setting `audit_canaries`.
fn setting(m: usize) -> impl FnOnce(memaudit_engine::EngineError) -> ExperimentError {
    move |e| ExperimentError::Invalid {
        field: "audit_canaries".into(),
        value: m.to_string(),
        reason: e.to_string(),
    }
}

/// Insert `m` canaries (when given) into a prepared training set, seeded by `seed`: the
/// training set is replaced by the one with the included canaries, so every later count of N
/// (the trainer, its sampler, the accountant) includes them.
pub fn insert_into(
    prepared: Prepared,
    m: Option<usize>,
    seed: u64,
) -> Result<(Prepared, Option<AuditCanaries>)> {
    let Some(m) = m else {
        return Ok((prepared, None));
    };
    let (train, canaries) = match &prepared.input {
        InputShape::Image { classes, .. }
        | InputShape::Flat { classes, .. }
        | InputShape::Sparse { classes, .. } => {
            insert_mislabelled(prepared.train, *classes, m, seed).map_err(setting(m))?
        }
        InputShape::Tokens { .. } => {
            let tok = prepared.tokenizer.as_ref().ok_or_else(|| {
                ExperimentError::protocol("audit canaries: a text run without a tokenizer")
            })?;
            let window = window_of(prepared.train.as_ref())?;
            insert_random_windows(prepared.train, window, &canary_vocabulary(tok), m, seed)
                .map_err(setting(m))?
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
            .map_err(setting(m))?;
    let n = train.len();
    Ok((train, n, Some(canaries)))
}

/// The window length W of a language-model training set.
fn window_of(train: &dyn Dataset) -> Result<usize> {
    match train.batch(&[0]).input {
        memaudit_engine::Value::Tokens(t) => Ok(t.seq_len),
        _ => Err(ExperimentError::protocol(
            "audit canaries: the text data is not token windows",
        )),
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
                v["score"] = serde_json::to_value(Num(s[k])).unwrap_or(Value::Null);
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
    write_atomic(
        &rd.file(MANIFEST_FILE),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )
}

/// One bound of the black-box audit.
#[derive(Clone, Debug, Serialize)]
pub struct BlackBoxBoundRow {
    pub method: &'static str,
    pub epsilon_lower_bound: Num,
    pub assumes_gaussian_tradeoff: bool,
    pub guesses: u64,
    pub correct_guesses: u64,
}

/// The black-box audit of a trained run: the `black_box_audit` of the results.
#[derive(Clone, Debug, Serialize)]
pub struct BlackBoxAudit {
    pub m: u64,
    pub included: u64,
    pub canary_kind: String,
    pub score: String,
    pub delta: f64,
    pub two_m_delta: f64,
    pub significance: f64,
    pub method: &'static str,
    pub epsilon_lower_bound: Num,
    pub claimed_epsilon: Num,
    pub private: bool,
    pub exceeds_claim: bool,
    pub auroc: Num,
    pub results: Vec<BlackBoxBoundRow>,
    pub warnings: Vec<String>,
    /// The manifest's file name in the run folder.
    pub manifest: &'static str,
    /// The audit library's result (for rendering).
    #[serde(skip)]
    pub result: BlackBoxAuditResult,
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
        .map_err(|e| {
            ExperimentError::protocol(format!("black-box audit: scoring the canaries: {e}"))
        })?;
    save_manifest(rd, canaries, tok, Some(&scores))?;
    let claimed = trainer.epsilon()?.unwrap_or(f64::INFINITY);
    let a = black_box_audit(
        &scores,
        &canaries.manifest.included,
        claimed,
        delta,
        AUDIT_SIGNIFICANCE,
    )
    .map_err(|source| ExperimentError::LowerBound {
        stage: "black-box audit".into(),
        source: Box::new(source),
    })?;
    Ok(BlackBoxAudit {
        m: a.m,
        included: a.included,
        canary_kind: canaries.manifest.kind.clone(),
        score: canaries.manifest.score.clone(),
        delta: a.delta,
        two_m_delta: a.two_m_delta,
        significance: a.significance,
        method: a.method,
        epsilon_lower_bound: Num(a.epsilon_lower_bound),
        claimed_epsilon: Num(a.claimed_epsilon),
        private: trainer.config.privacy.is_some(),
        exceeds_claim: a.exceeds_claim,
        auroc: Num(a.auroc),
        results: a
            .bounds
            .iter()
            .map(|b| BlackBoxBoundRow {
                method: b.method,
                epsilon_lower_bound: Num(b.epsilon_lower_bound),
                assumes_gaussian_tradeoff: b.assumes_gaussian_tradeoff,
                guesses: b.guesses,
                correct_guesses: b.correct_guesses,
            })
            .collect(),
        warnings: a.warnings.clone(),
        manifest: MANIFEST_FILE,
        result: a,
    })
}
