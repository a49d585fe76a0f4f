//! Canaries scored with every candidate rendered and tokenized whole
//! (`memaudit_audit::rendered`): the way a byte-level BPE run (an imported GPT-2) is audited,
//! since its merges join slot symbols (docs/transformers.md, "Canaries under BPE").
//! `memaudit exposure --canary T --secret S` and `memaudit extract --canary T` on such runs.
//! Errors name the settings by their flag names (`canary`, `secret`, `exact_limit`, `budget`).

use memaudit_audit::{CanaryTemplate, CanaryTokenizer, IncrementalLm, RenderedCandidates};
use memaudit_data::{Tokenizer, TokenizerKind};
use memaudit_engine::ModelConfig;
use serde_json::{Value, json};

use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::secret_sharer::{VocabTokenizer, parse_template, separator};

/// An audit-library failure while scoring rendered candidates.
fn scoring(e: memaudit_audit::AuditError) -> ExperimentError {
    ExperimentError::audit("rendered scoring", e)
}

/// Rows per batched LM step when scoring rendered candidates, at most.
const CHUNK_ROWS: usize = 1024;
/// Memory for one batch's states and log-probabilities (a GPT's key/value cache per row).
const CHUNK_BYTES: usize = 64 << 20;

/// The run's incremental LM sized for these canaries: a GPT's key/value cache holds the
/// conditioning plus the longest candidate, not the whole positional table (GPT-2's 1024
/// positions would make every row 75 MB). Returns the LM and the rows per batch.
pub fn scoring_lm(
    model: &ModelConfig,
    params: &[f32],
    rc: &RenderedCandidates,
) -> Result<(Box<dyn IncrementalLm>, usize)> {
    let tokens = rc.conditioning().len() + rc.scored_lengths().1;
    if let Some(g) = model.gpt_shape()
        && tokens > g.n_ctx
    {
        return invalid(
            "canary",
            format!("{:?}", rc.template().source()),
            format!(
                "the context and a candidate take {tokens} tokens, more than the model's {} positions",
                g.n_ctx
            ),
        );
    }
    let lm = model.incremental_lm_with_context(params, tokens)?;
    let row_bytes = 4 * (lm.state_width() + lm.vocab_size());
    let rows = (CHUNK_BYTES / row_bytes.max(1)).clamp(1, CHUNK_ROWS);
    Ok((lm, rows))
}

/// Every candidate of `--canary` under the run's tokenizer, read after its line separator
/// (`<|endoftext|>` for GPT-2). Character and word vocabularies refuse text outside them (never
/// the unknown token); BPE covers every byte. `limit` caps |R| (`limit_field` names its setting).
pub fn candidates(
    template: &str,
    tok: &Tokenizer,
    limit: u128,
    limit_field: &str,
) -> Result<RenderedCandidates> {
    let source = template;
    let template: CanaryTemplate = parse_template(template)?;
    let context = [separator(tok)?];
    let encode = |text: &str| match tok.kind() {
        TokenizerKind::Bpe => tok.encode(text).map_err(|e| e.to_string()),
        _ => VocabTokenizer(tok).encode_literal(text),
    };
    RenderedCandidates::new(&template, &context, &encode, limit).map_err(|e| match e {
        memaudit_audit::AuditError::SpaceAboveLimit { size, limit } => ExperimentError::Invalid {
            field: limit_field.to_string(),
            value: limit.to_string(),
            reason: format!(
                "the canary has {size} candidates, and every candidate is rendered, tokenized and scored"
            ),
        },
        e => ExperimentError::Invalid {
            field: "canary".into(),
            value: format!("{source:?}"),
            reason: e.to_string(),
        },
    })
}

/// Exact exposure of `secrets` (candidate texts) over all of R: one row per secret as JSON.
pub fn exposures(
    model: &ModelConfig,
    params: &[f32],
    rc: &RenderedCandidates,
    tok: &Tokenizer,
    secrets: &[String],
) -> Result<Vec<Value>> {
    let tpl = rc.template();
    let indices = secrets
        .iter()
        .map(|s| {
            tpl.candidate_index(s)
                .ok_or_else(|| ExperimentError::Invalid {
                    field: "secret".into(),
                    value: format!("{s:?}"),
                    reason: format!("not a candidate of --canary {:?}", tpl.source()),
                })
        })
        .collect::<Result<Vec<u128>>>()?;
    let (lm, rows) = scoring_lm(model, params, rc)?;
    let ranks = rc
        .exact_ranks(lm.as_ref(), &indices, rows)
        .map_err(scoring)?;
    secrets
        .iter()
        .zip(&ranks)
        .map(|(s, r)| {
            let tokens = rc.canary_tokens(r.index).map_err(scoring)?;
            Ok(json!({
                "secret": s,
                "index": r.index.to_string(),
                "tokens": tokens.iter().map(|&t| tok.token(t).unwrap_or("?")).collect::<Vec<_>>(),
                "log_perplexity": Num(r.log_perplexity),
                "rank": r.rank.to_string(),
                "exposure": Num(r.exposure),
            }))
        })
        .collect()
}

/// The `top` most likely candidates, exactly (every candidate scored).
pub fn most_likely(
    model: &ModelConfig,
    params: &[f32],
    rc: &RenderedCandidates,
    top: usize,
) -> Result<Vec<(String, f64)>> {
    let (lm, rows) = scoring_lm(model, params, rc)?;
    let best = rc.best(lm.as_ref(), top, rows).map_err(scoring)?;
    best.into_iter()
        .map(|(i, s)| Ok((rc.template().render(i).map_err(scoring)?, s)))
        .collect()
}

/// What the JSON reports about how candidates were tokenized.
pub fn describe(rc: &RenderedCandidates) -> Value {
    let (lo, hi) = rc.scored_lengths();
    json!({
        "method": "rendered: every candidate tokenized whole and scored after the tokens all share",
        "conditioning_tokens": rc.conditioning().len(),
        "scored_tokens_min": lo,
        "scored_tokens_max": hi,
    })
}
