//! One exposure measurement of every canary of a set (exact rank over all of R by the trie walk,
//! TF Privacy's interpolation over references, the skew-normal extrapolation), the attacker's
//! extraction search, and the per-repetition summary.

use memaudit_audit::{
    ExactRank, ExposureRecord, ExtractOptions, ExtractedCandidate, Extraction, IncrementalLm,
    RenderedCandidates, Scorer, SkewNormal, StopReason, WalkOptions, WalkStats, best_of_scores,
    extract, fit_skew_normal, interpolation_exposures,
};
use memaudit_engine::{EngineError, ModelConfig};
use serde::Serialize;

use super::canaries::{CanarySet, CanaryTokens};
use crate::error::{ExperimentError, Result};
use crate::num::Num;

/// Chance exposure: the mean exposure of a candidate that was never inserted, `E[-log2 U]`.
pub const CHANCE_EXPOSURE: f64 = std::f64::consts::LOG2_E;

/// One exposure measurement of every canary of a set.
#[derive(Clone)]
pub struct Measurement {
    /// Per canary (manifest order), bits.
    pub log_perplexity: Vec<f64>,
    pub interpolated: Vec<f64>,
    pub extrapolated: Vec<f64>,
    /// Per canary, when exact ranks were computed.
    pub ranks: Option<Vec<ExactRank>>,
    pub reference_scores: Vec<f64>,
    pub fit: SkewNormal,
    pub fit_converged: bool,
    pub walk: Option<WalkStats>,
    pub seconds: f64,
}

/// Trie-walk batching within about 64 MB of states and log-probabilities per depth: the
/// default chunk for recurrent states (a few hundred floats), fewer rows for a transformer's
/// key/value cache (tens of thousands).
pub fn walk_options(lm: &dyn IncrementalLm) -> WalkOptions {
    const BUDGET_BYTES: usize = 64 << 20;
    let row = 4 * (lm.state_width() + lm.vocab_size());
    WalkOptions {
        chunk_rows: (BUDGET_BYTES / row.max(1))
            .clamp(64, memaudit_audit::scoring::DEFAULT_CHUNK_ROWS),
        ..WalkOptions::default()
    }
}

/// Incremental inference sized for the canaries: a GPT's key/value cache holds the longest
/// sequence the scorer and the extraction read (conditioning plus every scored token).
pub fn lm_for_canaries(
    cfg: &ModelConfig,
    params: &[f32],
    set: &CanarySet,
) -> memaudit_engine::Result<Box<dyn IncrementalLm>> {
    let tokens = set.tpl.max_tokens();
    if let Some(shape) = cfg.gpt_shape()
        && tokens > shape.n_ctx
    {
        return Err(EngineError::Config(format!(
            "the canary reads {tokens} tokens, longer than the GPT's positional table of {} (--gpt-context)",
            shape.n_ctx
        )));
    }
    cfg.incremental_lm_with_context(params, tokens)
}

/// Exposure of every canary: log-perplexities, TF's interpolation and the skew-normal
/// extrapolation over the references, and (with `exact`) exact ranks by one streaming trie walk
/// (a BPE run: by one scoring of every candidate rendered whole).
pub fn measure(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
) -> memaudit_audit::Result<Measurement> {
    measure_scored(lm, set, exact, exact_limit).map(|(m, _)| m)
}

/// [`measure`], also returning every candidate's score when a BPE run's exact ranks scored
/// them all (the extraction reuses them).
fn measure_scored(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
) -> memaudit_audit::Result<(Measurement, Option<Vec<f64>>)> {
    let started = std::time::Instant::now();
    let secrets = set.secrets();
    let (log_perplexity, reference_scores, ranks, walk, all) = match &set.tpl {
        CanaryTokens::Trie(tpl) => {
            let scorer = Scorer::new(lm, tpl, walk_options(lm))?;
            let (ranks, walk) = if exact {
                let r = scorer.exact_ranks(&secrets, exact_limit)?;
                (Some(r.ranks), Some(r.stats))
            } else {
                (None, None)
            };
            (
                scorer.log_perplexities(&secrets)?,
                scorer.log_perplexities(&set.references)?,
                ranks,
                walk,
                None,
            )
        }
        CanaryTokens::Rendered(rc) => {
            let (lp, refs, ranks, all) = score_rendered(lm, rc, set, exact, exact_limit)?;
            (lp, refs, ranks, None, all)
        }
    };
    let interpolated = interpolation_exposures(&log_perplexity, &reference_scores)?;
    let fit = fit_skew_normal(&reference_scores)?;
    let extrapolated = log_perplexity
        .iter()
        .map(|&p| fit.dist.exposure(p))
        .collect();
    Ok((
        Measurement {
            log_perplexity,
            interpolated,
            extrapolated,
            ranks,
            reference_scores,
            fit: fit.dist,
            fit_converged: fit.converged,
            walk,
            seconds: started.elapsed().as_secs_f64(),
        },
        all,
    ))
}

/// Scores of a BPE run's canaries and references, and (with `exact`) their ranks: every
/// candidate is then scored once and everything is read from those scores (returned too);
/// without, only the canaries and the references are scored.
#[allow(clippy::type_complexity)]
fn score_rendered(
    lm: &dyn IncrementalLm,
    rc: &RenderedCandidates,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
) -> memaudit_audit::Result<(Vec<f64>, Vec<f64>, Option<Vec<ExactRank>>, Option<Vec<f64>>)> {
    let rows = walk_options(lm).chunk_rows;
    let secrets = set.secrets();
    if !exact {
        return Ok((
            rc.log_perplexities(lm, &secrets, rows)?,
            rc.log_perplexities(lm, &set.references, rows)?,
            None,
            None,
        ));
    }
    let size = rc.space().size();
    if size > exact_limit {
        return Err(memaudit_audit::AuditError::SpaceAboveLimit {
            size,
            limit: exact_limit,
        });
    }
    let all = rc.all_scores(lm, rows)?;
    let pick = |ix: &[u128]| ix.iter().map(|&i| all[i as usize]).collect::<Vec<f64>>();
    let ranks = rc.ranks_from_scores(&all, &secrets)?;
    Ok((
        pick(&secrets),
        pick(&set.references),
        Some(ranks),
        Some(all),
    ))
}

impl Measurement {
    /// One record per canary for the exposure log.
    pub fn records(&self, set: &CanarySet, epoch: u32, step: u64) -> Vec<ExposureRecord> {
        set.manifest
            .canaries
            .iter()
            .enumerate()
            .map(|(i, c)| ExposureRecord {
                epoch,
                step,
                canary_id: c.id.clone(),
                repetitions: c.repetitions,
                log_perplexity: self.log_perplexity[i],
                rank: self.ranks.as_ref().map(|r| r[i].rank as u64),
                exposure_exact: self.ranks.as_ref().map(|r| r[i].exposure),
                exposure_interpolated: Some(self.interpolated[i]),
                exposure_extrapolated: Some(self.extrapolated[i]),
            })
            .collect()
    }
}

/// The extraction settings of a search.
#[derive(Clone, Copy, Debug)]
pub struct ExtractSettings {
    pub budget: u64,
    pub top: usize,
    pub batch: usize,
    pub beam: Option<usize>,
}

/// Per canary: found among the top candidates within the budget, and at what cost.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CanaryExtraction {
    pub extracted: bool,
    /// 1-based position in the search's output (= exact rank up to ties), when returned.
    pub position: Option<u64>,
    /// Expansions (LM rows queried) when it came out, or the whole search's when it did not.
    pub expansions: u64,
}

/// The attacker's search: best-first (Dijkstra) over the template's slots, the `top` most
/// likely candidates within the budget. Every canary's cost is the expansions at which it came
/// out (a search that stops at it costs exactly that, the order being deterministic), so one
/// search serves all canaries of the template.
///
/// A BPE run has no trie to search: every candidate is scored rendered whole (exact, best first),
/// which costs [`RenderedCandidates::lm_rows`] expansions; a budget below that returns nothing
/// (stop `budget`), and [`rendered_extraction_cost`] lets callers refuse it up front.
pub fn extract_canaries(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    s: &ExtractSettings,
) -> memaudit_audit::Result<(Extraction, Vec<CanaryExtraction>)> {
    extract_scored(lm, set, s, None)
}

/// The expansions (LM rows) a BPE run's extraction costs, `None` for a trie search (whose cost
/// depends on the model).
pub fn rendered_extraction_cost(set: &CanarySet) -> Option<u64> {
    set.tpl.rendered().map(RenderedCandidates::lm_rows)
}

/// [`extract_canaries`], reusing every candidate's scores when a BPE run's measurement has them.
fn extract_scored(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    s: &ExtractSettings,
    scores: Option<&[f64]>,
) -> memaudit_audit::Result<(Extraction, Vec<CanaryExtraction>)> {
    let search = match &set.tpl {
        CanaryTokens::Trie(tpl) => {
            let scorer = Scorer::new(lm, tpl, walk_options(lm))?;
            trie_search(&scorer, s)?
        }
        CanaryTokens::Rendered(rc) => rendered_search(lm, rc, s, scores)?,
    };
    let per = per_canary(set, &search);
    Ok((search, per))
}

/// The exact extraction of a BPE run: every candidate scored, the `top` best returned. Its cost
/// is the same for every candidate (all are scored before any is returned).
fn rendered_search(
    lm: &dyn IncrementalLm,
    rc: &RenderedCandidates,
    s: &ExtractSettings,
    scores: Option<&[f64]>,
) -> memaudit_audit::Result<Extraction> {
    let cost = rc.lm_rows();
    let size = rc.space().size();
    if cost > s.budget {
        return Ok(Extraction {
            candidates: Vec::new(),
            expansions: 0,
            lm_calls: 0,
            target_position: None,
            stop: StopReason::Budget,
            exact: true,
            peak_frontier: 0,
        });
    }
    let rows = walk_options(lm).chunk_rows;
    let owned;
    let scores = match scores {
        Some(v) => v,
        None => {
            owned = rc.all_scores(lm, rows)?;
            &owned
        }
    };
    let best = best_of_scores(scores, s.top);
    // Batched calls of one scoring: the conditioning's, then per batch of `rows` candidates one
    // per scored token of its longest candidate but the first.
    let mut lm_calls = rc.conditioning().len() as u64;
    let all: Vec<u128> = (0..size).collect();
    for chunk in all.chunks(rows.max(1)) {
        let longest = chunk
            .iter()
            .map(|&i| rc.scored_tokens(i).map_or(0, <[u32]>::len))
            .max()
            .unwrap_or(0);
        lm_calls += longest.saturating_sub(1) as u64;
    }
    Ok(Extraction {
        candidates: best
            .into_iter()
            .map(|(index, log_perplexity)| ExtractedCandidate {
                index,
                log_perplexity,
                expansions: cost,
            })
            .collect(),
        expansions: cost,
        lm_calls,
        target_position: None,
        stop: if (s.top as u128) < size {
            StopReason::CandidateLimit
        } else {
            StopReason::Exhausted
        },
        exact: true,
        peak_frontier: 0,
    })
}

/// The best-first search over a trie.
fn trie_search<'a>(
    scorer: &Scorer<'a, dyn IncrementalLm + 'a>,
    s: &ExtractSettings,
) -> memaudit_audit::Result<Extraction> {
    extract(
        scorer,
        &ExtractOptions {
            batch: s.batch,
            max_candidates: s.top,
            max_expansions: Some(s.budget),
            beam: s.beam,
            target: None,
            stop_at_target: false,
        },
    )
}

/// Where each canary of the set came out of a search.
fn per_canary(set: &CanarySet, search: &Extraction) -> Vec<CanaryExtraction> {
    set.manifest
        .canaries
        .iter()
        .map(|c| {
            match search
                .candidates
                .iter()
                .position(|x| x.index == c.secret_index)
            {
                Some(p) => CanaryExtraction {
                    extracted: true,
                    position: Some(p as u64 + 1),
                    expansions: search.candidates[p].expansions,
                },
                None => CanaryExtraction {
                    extracted: false,
                    position: None,
                    expansions: search.expansions,
                },
            }
        })
        .collect()
}

/// The final audit of a set: one measurement and (optionally) the extraction search.
#[derive(Clone)]
pub struct Audit {
    pub m: Measurement,
    pub extraction: Option<(Extraction, Vec<CanaryExtraction>)>,
    pub extract_settings: Option<ExtractSettings>,
    pub extract_seconds: f64,
}

/// Measure the exposure of every canary of `set` and (with `extraction`) run the search.
pub fn audit(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
    extraction: Option<ExtractSettings>,
) -> Result<Audit> {
    let (m, scores) = measure_scored(lm, set, exact, exact_limit)
        .map_err(|e| ExperimentError::audit("measuring exposure", e))?;
    let t = std::time::Instant::now();
    let ex = match &extraction {
        Some(s) => Some(
            extract_scored(lm, set, s, scores.as_deref())
                .map_err(|e| ExperimentError::audit("extraction", e))?,
        ),
        None => None,
    };
    Ok(Audit {
        m,
        extraction: ex,
        extract_settings: extraction,
        extract_seconds: t.elapsed().as_secs_f64(),
    })
}

/// Exposures of one repetition count.
#[derive(Clone, Debug, Serialize)]
pub struct RepSummary {
    pub repetitions: u32,
    pub canaries: usize,
    #[serde(serialize_with = "crate::num::ser_opt_f64")]
    pub exposure_mean: Option<f64>,
    #[serde(serialize_with = "crate::num::ser_opt_f64")]
    pub exposure_sd: Option<f64>,
    #[serde(serialize_with = "crate::num::ser_f64")]
    pub interpolated_mean: f64,
    /// Median: a few extrapolated exposures can be huge or infinite.
    #[serde(serialize_with = "crate::num::ser_f64")]
    pub extrapolated_median: f64,
    #[serde(serialize_with = "crate::num::ser_f64")]
    pub log_perplexity_mean: f64,
    pub extracted: Option<usize>,
    pub expansions_median: Option<u64>,
}

/// One canary's numbers: the `canaries` array of the results.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryResult {
    pub id: String,
    pub text: String,
    pub repetitions: u32,
    /// Exact exposure (`None` when exact ranks were not computed).
    pub exposure: Option<Num>,
    pub exposure_extrapolated: Num,
    pub exposure_interpolated: Num,
    pub rank: Option<u64>,
    pub log_perplexity: Num,
    /// `None` when extraction was not run (extract budget 0, `memaudit exposure`).
    pub extracted: Option<bool>,
    pub expansions: Option<u64>,
    pub extract_position: Option<u64>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

impl Audit {
    /// Per repetition count, ascending (0: the held-out canaries).
    pub fn summary(&self, set: &CanarySet) -> Vec<RepSummary> {
        set.repetition_counts()
            .into_iter()
            .map(|r| {
                let idx: Vec<usize> = set
                    .manifest
                    .canaries
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.repetitions == r)
                    .map(|(i, _)| i)
                    .collect();
                let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
                let exact = self.m.ranks.as_ref().map(|rk| {
                    let e: Vec<f64> = idx.iter().map(|&i| rk[i].exposure).collect();
                    mean_sd(&e)
                });
                let ex = self.extraction.as_ref().map(|(_, per)| {
                    let found = idx.iter().filter(|&&i| per[i].extracted).count();
                    let mut costs: Vec<u64> = idx.iter().map(|&i| per[i].expansions).collect();
                    costs.sort_unstable();
                    (found, costs[costs.len() / 2])
                });
                RepSummary {
                    repetitions: r,
                    canaries: idx.len(),
                    exposure_mean: exact.map(|e| e.0),
                    exposure_sd: exact.map(|e| e.1),
                    interpolated_mean: mean_sd(&pick(&self.m.interpolated)).0,
                    extrapolated_median: memaudit_engine::stats::median(&pick(
                        &self.m.extrapolated,
                    )),
                    log_perplexity_mean: mean_sd(&pick(&self.m.log_perplexity)).0,
                    extracted: ex.map(|e| e.0),
                    expansions_median: ex.map(|e| e.1),
                }
            })
            .collect()
    }

    /// Every canary's numbers, in manifest order.
    pub fn canaries(&self, set: &CanarySet) -> Vec<CanaryResult> {
        set.manifest
            .canaries
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rank = self.m.ranks.as_ref().map(|r| r[i]);
                let ex = self.extraction.as_ref().map(|(_, per)| per[i]);
                CanaryResult {
                    id: c.id.clone(),
                    text: c.text.clone(),
                    repetitions: c.repetitions,
                    exposure: rank.map(|r| Num(r.exposure)),
                    exposure_extrapolated: Num(self.m.extrapolated[i]),
                    exposure_interpolated: Num(self.m.interpolated[i]),
                    rank: rank.map(|r| r.rank as u64),
                    log_perplexity: Num(self.m.log_perplexity[i]),
                    extracted: ex.map(|e| e.extracted),
                    expansions: ex.map(|e| e.expansions),
                    extract_position: ex.and_then(|e| e.position),
                }
            })
            .collect()
    }
}
