//! `memaudit secret-sharer`: The Secret Sharer (Carlini, Liu, Erlingsson, Kos, Song, USENIX
//! Security 2019) end to end: draw canaries from a template, insert each `r` times into the
//! training text, train a language model (plain or DP-SGD), track the canaries' exposure during
//! training, then measure their exposure (exact rank over all of R by the trie walk, TF Privacy's
//! interpolation over references, the skew-normal extrapolation) and try to extract them by
//! shortest-path search. Everything goes into the run folder and one report.
//!
//! Also the pieces `exposure`, `extract` and `demo` reuse: the model's tokenizer as a canary
//! tokenizer, the canary set of a run, one exposure measurement, the extraction of every canary
//! by one best-first search, and the report sections.

use std::cell::RefCell;
use std::path::Path;

use anyhow::{Context, Result};
use memaudit_audit::{
    CanaryManifest, CanaryTemplate, CanaryTokenizer, ExactRank, ExposureLog, ExposureRecord,
    ExtractOptions, Extraction, IncrementalLm, Scorer, SkewNormal, TokenizedTemplate, WalkOptions,
    WalkStats, extract, fit_skew_normal, generate_canaries, insert_canaries,
    interpolation_exposures, sample_references,
};
use memaudit_data::{Tokenizer, TokenizerKind};
use memaudit_engine::datasets::TokenWindowDataset;
use memaudit_engine::train::{Dataset, EpochInfo, StepInfo, TrainConfig, Trainer};
use memaudit_engine::{EngineError, Model, ModelConfig};
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{Value, json};

use super::args::{InputShape, ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::train::{Prepared, TrainHooks, train_with_report_hooks};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{self, Report, fmt_f64, num, opt_num};
use crate::report::{self, Series};
use crate::rundir::RunDir;

/// Chance exposure: the mean exposure of a candidate that was never inserted, `E[-log2 U]`.
pub const CHANCE_EXPOSURE: f64 = std::f64::consts::LOG2_E;

/// File names in a secret-sharer run folder.
pub const MANIFEST_FILE: &str = "canaries.json";
pub const REFERENCES_FILE: &str = "references.json";
pub const EXPOSURE_CSV: &str = "exposure.csv";
pub const EXPOSURE_JSON: &str = "exposure.json";
pub const RESULTS_FILE: &str = "secret_sharer.json";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training text (the same as --data): a UTF-8 file or folder, `embedded`, or a fetched
    /// corpus such as `ptb`.
    #[arg(long, value_name = "PATH|embedded", conflicts_with = "data")]
    pub corpus: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub canary: CanaryArgs,
    #[command(flatten)]
    pub exposure: ExposureArgs,
    #[command(flatten)]
    pub extraction: ExtractionArgs,
    #[command(flatten)]
    pub tracking: TrackingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which canaries, how many, how often.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct CanaryArgs {
    /// Canary template with typed slots: {digits:N}, {letters:N}, {alphabet=SYMBOLS:N}.
    #[arg(
        long = "canary",
        value_name = "TEMPLATE",
        default_value = "the random number is {digits:9}"
    )]
    pub template: String,
    /// Canaries per repetition count.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub canaries: usize,
    /// Repetition counts, comma-separated: each of the K canaries of a count is inserted that
    /// many times.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,4,16",
        value_name = "R,..."
    )]
    pub repetitions: Vec<u32>,
    /// Canaries drawn like the others but never inserted: their exposure is chance (1/ln 2 =
    /// 1.44 bits on average).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub held_out: usize,
    /// Add the canary's characters (or words) to the vocabulary when the corpus lacks them. Word
    /// models always get the slot symbols as tokens.
    #[arg(long)]
    pub extend_vocab: bool,
    /// Seed of the canaries, their insertion points and the references (default: --seed).
    #[arg(long, value_name = "S")]
    pub canary_seed: Option<u64>,
    /// Black-box one-run audit (Steinke et al. 2023), apart from the Secret Sharer's canaries: M
    /// random windows, each included with probability 1/2 (seeded by the canary seed; manifest
    /// in audit_canaries.json); after training, the one-run lower bound on epsilon from their
    /// log-likelihoods at the run's delta, next to the accountant's epsilon.
    #[arg(long, value_name = "M")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_canaries: Option<usize>,
}

/// How exposure is measured.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ExposureArgs {
    /// auto (exact when |R| <= --exact-limit, else from references only), exact (refuse when
    /// |R| is above the limit) or sampled (references only).
    #[arg(long = "exposure", default_value = "auto", value_name = "METHOD")]
    pub method: String,
    /// Exact exposure (rank over all of R by the trie walk) when |R| is at most this; raise it to
    /// go further (a 10^9 space is a long CPU run: see `memaudit bench exposure`). 1e7 and
    /// 10^7 are accepted.
    #[arg(long, default_value = "10000000", value_parser = parse_count, value_name = "N")]
    pub exact_limit: u128,
    /// Reference candidates for the sampled exposures (TF Privacy's interpolation and the
    /// skew-normal extrapolation); capped at |R| minus the canaries.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub references: usize,
}

/// How extraction is tried.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ExtractionArgs {
    /// Extraction budget: trie nodes the best-first search may expand (LM rows queried); 0 skips
    /// extraction.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub extract_budget: u64,
    /// A canary counts as extracted when the search returns it among this many most likely
    /// candidates.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub extract_top: usize,
    /// Nodes expanded per batched LM query of the search.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub extract_batch: usize,
    /// Keep at most this many frontier entries (approximate search with bounded memory).
    #[arg(long, value_name = "N")]
    pub extract_beam: Option<usize>,
}

/// Exposure during training.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct TrackingArgs {
    /// Measure exposure every N optimizer steps as well as after every epoch (0: epochs only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub track_every: u64,
    /// Exact ranks while tracking only when |R| is at most this (each costs one trie walk).
    #[arg(long, default_value = "1000000", value_parser = parse_count, value_name = "N")]
    pub track_exact_limit: u128,
}

/// A count such as `10000000`, `10_000_000`, `1e7` or `10^7`.
pub fn parse_count(s: &str) -> std::result::Result<u128, String> {
    let t = s.trim().replace('_', "");
    let bad = || format!("{s:?} is not a count (write e.g. 10000000, 1e7 or 10^7)");
    if let Some((b, e)) = t.split_once('^') {
        let b: u128 = b.parse().map_err(|_| bad())?;
        let e: u32 = e.parse().map_err(|_| bad())?;
        return b.checked_pow(e).ok_or_else(bad);
    }
    if let Some((m, e)) = t.split_once(['e', 'E']) {
        let m: u128 = m.parse().map_err(|_| bad())?;
        let e: u32 = e.parse().map_err(|_| bad())?;
        return 10u128
            .checked_pow(e)
            .and_then(|p| p.checked_mul(m))
            .ok_or_else(bad);
    }
    t.parse().map_err(|_| bad())
}

/// How the exact rank is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExactMode {
    Auto,
    Required,
    Off,
}

impl ExposureArgs {
    pub fn mode(&self) -> Result<ExactMode> {
        match self.method.as_str() {
            "auto" => Ok(ExactMode::Auto),
            "exact" => Ok(ExactMode::Required),
            "sampled" => Ok(ExactMode::Off),
            m => Err(user(format!("--exposure {m}: use auto, exact or sampled"))),
        }
    }

    /// Whether exact ranks are computed for a space of `size`; an error when they are required
    /// and the space is above the limit.
    pub fn exact_for(&self, size: u128) -> Result<bool> {
        match self.mode()? {
            ExactMode::Off => Ok(false),
            ExactMode::Auto => Ok(size <= self.exact_limit),
            ExactMode::Required if size <= self.exact_limit => Ok(true),
            ExactMode::Required => Err(user(format!(
                "--exposure exact: the canary's randomness space has {size} candidates, above --exact-limit {}; raise --exact-limit (the trie walk scores ~10^5-10^6 candidates per second here, see `memaudit bench exposure`) or use --exposure sampled",
                self.exact_limit
            ))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.mode()?;
        if self.references < 2 {
            return Err(user(
                "--references must be at least 2 (the skew-normal fit needs a sample)",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The model's vocabulary as a canary tokenizer
// ---------------------------------------------------------------------------------------------

/// A saved `Tokenizer` as the audit library's `CanaryTokenizer`: a character model maps every
/// character to its own token; a word model maps the literal text to words and every slot symbol
/// to the one-character token. Nothing maps to the unknown token: a canary outside the
/// vocabulary is an error naming the character or word.
pub struct VocabTokenizer<'a>(pub &'a Tokenizer);

/// Why a BPE vocabulary cannot be a `CanaryTokenizer` (docs/transformers.md, "Canaries under
/// BPE"): the trie walk needs one token per slot symbol, and byte-level BPE merges digit runs.
pub const BPE_TRIE_REFUSAL: &str = "a byte-level BPE vocabulary merges characters across slot positions (GPT-2 merges runs of digits), so a canary is not one token per symbol and the trie walk does not apply; score its candidates rendered whole (memaudit_audit::rendered, docs/transformers.md)";

impl CanaryTokenizer for VocabTokenizer<'_> {
    fn encode_literal(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        match self.0.kind() {
            TokenizerKind::Char => text.chars().map(|c| self.encode_symbol(c)).collect(),
            TokenizerKind::Word => text
                .split_whitespace()
                .map(|w| {
                    self.0
                        .id(w)
                        .filter(|&id| Some(id) != self.0.unk_id())
                        .ok_or_else(|| format!("word {w:?} is not in the word model's vocabulary"))
                })
                .collect(),
            TokenizerKind::Bpe => Err(BPE_TRIE_REFUSAL.into()),
        }
    }

    fn encode_symbol(&self, symbol: char) -> std::result::Result<u32, String> {
        if self.0.kind() == TokenizerKind::Bpe {
            return Err(BPE_TRIE_REFUSAL.into());
        }
        let id = self
            .0
            .id(&symbol.to_string())
            .filter(|&id| Some(id) != self.0.unk_id());
        id.ok_or_else(|| match self.0.kind() {
            TokenizerKind::Char => {
                format!("character {symbol:?} is not in the character model's vocabulary")
            }
            TokenizerKind::Word | TokenizerKind::Bpe => {
                format!("slot symbol {symbol:?} is not a token of the word model's vocabulary")
            }
        })
    }
}

/// The line separator token: what precedes an inserted canary (the scoring context) and what
/// follows it. `\n` for characters, `<eos>` for words.
pub fn separator(tok: &Tokenizer) -> Result<u32> {
    match tok.kind() {
        TokenizerKind::Char => tok.id("\n").ok_or_else(|| {
            user("the corpus has no line breaks: canaries are inserted at line starts, so the text needs several lines")
        }),
        TokenizerKind::Word => tok
            .eos_id()
            .ok_or_else(|| user("the word vocabulary has no <eos> token")),
        // GPT-2 starts documents after <|endoftext|>; without it, the newline's single token.
        TokenizerKind::Bpe => tok
            .eos_id()
            .or_else(|| match tok.encode("\n").ok()?.as_slice() {
                &[t] => Some(t),
                _ => None,
            })
            .ok_or_else(|| user("the BPE vocabulary has neither <|endoftext|> nor a newline token")),
    }
}

/// Tokens a vocabulary needs for a template: its characters (character models) or its literal
/// words and slot symbols (word models).
fn template_tokens(tpl: &CanaryTemplate, kind: TokenizerKind, literal: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in tpl.segments() {
        if let memaudit_audit::Segment::Literal(text) = seg
            && literal
        {
            match kind {
                TokenizerKind::Char => out.extend(text.chars().map(String::from)),
                TokenizerKind::Word => out.extend(text.split_whitespace().map(String::from)),
                TokenizerKind::Bpe => {}
            }
        }
    }
    for symbols in tpl.position_symbols() {
        out.extend(symbols.iter().map(|c| c.to_string()));
    }
    out.sort();
    out.dedup();
    out
}

/// Parse `--canary` (errors name the flag and the column).
pub fn parse_template(text: &str) -> Result<CanaryTemplate> {
    CanaryTemplate::parse(text).map_err(|e| user(format!("--canary: {e}")))
}

/// The template in the model's tokens, conditioned on the line separator. `hint` is appended to
/// a vocabulary error (what the user can do about it).
pub fn tokenize_template(
    tpl: &CanaryTemplate,
    tok: &Tokenizer,
    hint: &str,
) -> Result<TokenizedTemplate> {
    let sep = separator(tok)?;
    TokenizedTemplate::new(tpl, &VocabTokenizer(tok), &[sep])
        .map_err(|e| user(format!("--canary: {e}{hint}")))
}

// ---------------------------------------------------------------------------------------------
// The canaries of a run
// ---------------------------------------------------------------------------------------------

/// A run's canaries: the template in tokens, the manifest and the reference candidates.
pub struct CanarySet {
    pub tpl: TokenizedTemplate,
    pub manifest: CanaryManifest,
    pub references: Vec<u128>,
}

impl CanarySet {
    pub fn secrets(&self) -> Vec<u128> {
        self.manifest.secret_indices()
    }

    /// Distinct repetition counts, ascending (0 = held out).
    pub fn repetition_counts(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self
            .manifest
            .canaries
            .iter()
            .map(|c| c.repetitions)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Candidate text of index `i`.
    pub fn render(&self, i: u128) -> String {
        self.tpl
            .template()
            .render(i)
            .unwrap_or_else(|_| format!("#{i}"))
    }

    /// Load the set saved in a run folder (`canaries.json`, `references.json`), checking that it
    /// belongs to this run's model: the template re-tokenised with the run's vocabulary must give
    /// the manifest's token ids.
    pub fn load(run: &Path, manifest_path: Option<&Path>, tok: &Tokenizer) -> Result<Self> {
        let mp = manifest_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| run.join(MANIFEST_FILE));
        if !mp.is_file() {
            return Err(user(format!(
                "{}: no canary manifest (is --run a `memaudit secret-sharer` run? For another run give --manifest or --canary)",
                mp.display()
            )));
        }
        let manifest = CanaryManifest::load(&mp).map_err(|e| user(e.to_string()))?;
        let template = CanaryTemplate::parse(&manifest.template)
            .map_err(|e| user(format!("{}: {e}", mp.display())))?;
        let tpl = TokenizedTemplate::new(&template, &VocabTokenizer(tok), &manifest.context_tokens)
            .map_err(|e| {
                user(format!(
                    "{}: the canaries do not fit the model of --run ({e}); the manifest belongs to a run with another vocabulary",
                    mp.display()
                ))
            })?;
        for c in &manifest.canaries {
            let ids = tpl
                .canary_tokens(c.secret_index)
                .map_err(|e| user(format!("{}: canary {}: {e}", mp.display(), c.id)))?;
            if ids != c.token_ids {
                return Err(user(format!(
                    "{}: canary {} has other token ids under the vocabulary of --run {}: the manifest belongs to a run from a different model",
                    mp.display(),
                    c.id,
                    run.display()
                )));
            }
        }
        let rp = mp.with_file_name(REFERENCES_FILE);
        let references = if rp.is_file() {
            let text = std::fs::read_to_string(&rp)
                .with_context(|| format!("reading {}", rp.display()))?;
            let v: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| user(format!("{}: not a list of candidates: {e}", rp.display())))?;
            v.iter()
                .map(|s| {
                    s.parse::<u128>()
                        .ok()
                        .filter(|&i| i < template.space().size())
                        .ok_or_else(|| {
                            user(format!(
                                "{}: {s:?} is not a candidate of the template",
                                rp.display()
                            ))
                        })
                })
                .collect::<Result<Vec<u128>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            tpl,
            manifest,
            references,
        })
    }

    /// Draw `count` references (capped at the candidates left), replacing the current ones.
    pub fn draw_references(&mut self, count: usize, seed: u64) -> Result<usize> {
        let secrets = self.secrets();
        let left = self
            .tpl
            .space()
            .size()
            .saturating_sub(secrets.len() as u128);
        let count = (count as u128).min(left) as usize;
        self.references = sample_references(self.tpl.space(), count, &secrets, seed)
            .map_err(|e| user(e.to_string()))?;
        Ok(count)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        self.manifest
            .save(&dir.join(MANIFEST_FILE))
            .map_err(|e| user(e.to_string()))?;
        // Indices as strings: they are u128 and JSON readers often stop at 2^53.
        let refs: Vec<String> = self.references.iter().map(|r| r.to_string()).collect();
        crate::rundir::write_atomic(
            &dir.join(REFERENCES_FILE),
            serde_json::to_string(&refs)?.as_bytes(),
        )
    }
}

/// Independent seeds for the canaries' random streams (the engine's one seed-mixing function).
pub use memaudit_engine::sampler::mix_seed as derive_seed;

// ---------------------------------------------------------------------------------------------
// Measuring exposure
// ---------------------------------------------------------------------------------------------

/// One exposure measurement of every canary of a set.
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

/// Exposure of every canary: log-perplexities, TF's interpolation and the skew-normal
/// extrapolation over the references, and (with `exact`) exact ranks by one streaming trie walk.
pub fn measure(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
) -> memaudit_audit::Result<Measurement> {
    let started = std::time::Instant::now();
    let scorer = Scorer::new(lm, &set.tpl, walk_options(lm))?;
    let secrets = set.secrets();
    let log_perplexity = scorer.log_perplexities(&secrets)?;
    let reference_scores = scorer.log_perplexities(&set.references)?;
    let interpolated = interpolation_exposures(&log_perplexity, &reference_scores)?;
    let fit = fit_skew_normal(&reference_scores)?;
    let extrapolated = log_perplexity
        .iter()
        .map(|&p| fit.dist.exposure(p))
        .collect();
    let (ranks, walk) = if exact {
        let r = scorer.exact_ranks(&secrets, exact_limit)?;
        (Some(r.ranks), Some(r.stats))
    } else {
        (None, None)
    };
    Ok(Measurement {
        log_perplexity,
        interpolated,
        extrapolated,
        ranks,
        reference_scores,
        fit: fit.dist,
        fit_converged: fit.converged,
        walk,
        seconds: started.elapsed().as_secs_f64(),
    })
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

impl ExtractionArgs {
    pub fn settings(&self) -> Result<Option<ExtractSettings>> {
        if self.extract_budget == 0 {
            return Ok(None);
        }
        if self.extract_top == 0 || self.extract_batch == 0 || self.extract_beam == Some(0) {
            return Err(user(
                "--extract-top, --extract-batch and --extract-beam must be at least 1",
            ));
        }
        Ok(Some(ExtractSettings {
            budget: self.extract_budget,
            top: self.extract_top,
            batch: self.extract_batch,
            beam: self.extract_beam,
        }))
    }
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
pub fn extract_canaries(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    s: &ExtractSettings,
) -> memaudit_audit::Result<(Extraction, Vec<CanaryExtraction>)> {
    let scorer = Scorer::new(lm, &set.tpl, walk_options(lm))?;
    let search = extract(
        &scorer,
        &ExtractOptions {
            batch: s.batch,
            max_candidates: s.top,
            max_expansions: Some(s.budget),
            beam: s.beam,
            target: None,
            stop_at_target: false,
        },
    )?;
    let per = set
        .manifest
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
        .collect();
    Ok((search, per))
}

/// The final audit of a set: one measurement and (optionally) the extraction search.
pub struct Audit {
    pub m: Measurement,
    pub extraction: Option<(Extraction, Vec<CanaryExtraction>)>,
    pub extract_settings: Option<ExtractSettings>,
    pub extract_seconds: f64,
}

pub fn audit(
    lm: &dyn IncrementalLm,
    set: &CanarySet,
    exact: bool,
    exact_limit: u128,
    extraction: Option<ExtractSettings>,
) -> Result<Audit> {
    let m = measure(lm, set, exact, exact_limit).map_err(|e| user(e.to_string()))?;
    let t = std::time::Instant::now();
    let ex = match &extraction {
        Some(s) => Some(extract_canaries(lm, set, s).map_err(|e| user(e.to_string()))?),
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
    #[serde(serialize_with = "output::ser_opt_f64")]
    pub exposure_mean: Option<f64>,
    #[serde(serialize_with = "output::ser_opt_f64")]
    pub exposure_sd: Option<f64>,
    #[serde(serialize_with = "output::ser_f64")]
    pub interpolated_mean: f64,
    /// Median: a few extrapolated exposures can be huge or infinite.
    #[serde(serialize_with = "output::ser_f64")]
    pub extrapolated_median: f64,
    #[serde(serialize_with = "output::ser_f64")]
    pub log_perplexity_mean: f64,
    pub extracted: Option<usize>,
    pub expansions_median: Option<u64>,
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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl Audit {
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
                    extrapolated_median: median(pick(&self.m.extrapolated)),
                    log_perplexity_mean: mean_sd(&pick(&self.m.log_perplexity)).0,
                    extracted: ex.map(|e| e.0),
                    expansions_median: ex.map(|e| e.1),
                }
            })
            .collect()
    }

    /// The `canaries` array of the JSON contract (plus the interpolated exposure, the
    /// log-perplexity and the search position).
    pub fn canaries_json(&self, set: &CanarySet) -> Vec<Value> {
        set.manifest
            .canaries
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rank = self.m.ranks.as_ref().map(|r| r[i]);
                let ex = self.extraction.as_ref().map(|(_, per)| per[i]);
                json!({
                    "id": c.id,
                    "text": c.text,
                    "repetitions": c.repetitions,
                    "exposure": rank.map(|r| num(r.exposure)),
                    "exposure_extrapolated": num(self.m.extrapolated[i]),
                    "exposure_interpolated": num(self.m.interpolated[i]),
                    "rank": rank.map(|r| r.rank as u64),
                    "log_perplexity": num(self.m.log_perplexity[i]),
                    // null when extraction was not run (--extract-budget 0, `memaudit exposure`)
                    "extracted": ex.map(|e| e.extracted),
                    "expansions": ex.map(|e| e.expansions),
                    "extract_position": ex.and_then(|e| e.position),
                })
            })
            .collect()
    }
}

/// Plain-text table of the summary.
pub fn summary_text(summary: &[RepSummary], exact: bool) -> String {
    let mut t = String::from(if exact {
        "repetitions  canaries  exposure (exact)   interpolated  extrapolated (median)  extracted  cost (median expansions)\n"
    } else {
        "repetitions  canaries  interpolated  extrapolated (median)  extracted  cost (median expansions)\n"
    });
    for s in summary {
        let label = if s.repetitions == 0 {
            "0 (held out)".to_string()
        } else {
            s.repetitions.to_string()
        };
        let ex = s
            .extracted
            .map_or("-".into(), |e| format!("{e}/{}", s.canaries));
        let cost = s.expansions_median.map_or("-".into(), |c| c.to_string());
        if exact {
            t += &format!(
                "{label:>12}  {:>8}  {:>7} ± {:<7}  {:>12}  {:>21}  {ex:>9}  {cost:>24}\n",
                s.canaries,
                s.exposure_mean.map_or("-".into(), |m| format!("{m:.2}")),
                s.exposure_sd.map_or("-".into(), |m| format!("{m:.2}")),
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
            );
        } else {
            t += &format!(
                "{label:>12}  {:>8}  {:>12}  {:>21}  {ex:>9}  {cost:>24}\n",
                s.canaries,
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
            );
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Report sections
// ---------------------------------------------------------------------------------------------

/// Mean exposure per repetition count over training (exact where every record has it, else the
/// extrapolated median... mean of finite values), x in epochs.
pub fn exposure_series(log: &ExposureLog, reps: &[u32], steps_per_epoch: u64) -> Vec<Series> {
    let exact = !log.records.is_empty() && log.records.iter().all(|r| r.exposure_exact.is_some());
    let mut out = Vec::new();
    for &r in reps {
        let mut by_step: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        for rec in log.records.iter().filter(|x| x.repetitions == r) {
            let v = if exact {
                rec.exposure_exact
            } else {
                rec.exposure_interpolated
            };
            if let Some(v) = v.filter(|v| v.is_finite()) {
                by_step.entry(rec.step).or_default().push(v);
            }
        }
        let pts = by_step
            .into_iter()
            .map(|(s, v)| {
                (
                    s as f64 / steps_per_epoch.max(1) as f64,
                    v.iter().sum::<f64>() / v.len() as f64,
                )
            })
            .collect();
        let name = if r == 0 {
            "held out (never inserted)".to_string()
        } else {
            format!("{r} insertions")
        };
        out.push(Series::line(&name, pts));
    }
    out
}

/// Sections for one audited model: the summary table, exposure during training, the reference
/// histogram with the fitted skew-normal, the per-canary table and the search's output.
#[allow(clippy::too_many_arguments)]
pub fn report_sections(
    html: &mut report::Report,
    label: &str,
    set: &CanarySet,
    a: &Audit,
    log: &ExposureLog,
    steps_per_epoch: u64,
) {
    let exact = a.m.ranks.is_some();
    let summary = a.summary(set);
    html.heading(&format!("{label}exposure by repetition count"));
    html.para(&format!(
        "Exposure = log2|R| - log2 rank, in bits (|R| = {}, log2|R| = {:.2}). Chance (never inserted) is 1/ln 2 = 1.44 bits on average. {} Interpolation: TF Privacy's estimate over {} references (at most log2 {} = {:.1} bits). Extrapolation: the skew-normal fitted to the references' log-perplexities.{}",
        set.tpl.space().size(),
        set.tpl.space().log2_size(),
        if exact {
            "Exact: the rank over all of R (trie walk)."
        } else {
            "Exact ranks were not computed (|R| above the exact limit)."
        },
        set.references.len(),
        set.references.len(),
        (set.references.len() as f64).log2(),
        match &a.extract_settings {
            Some(s) => format!(
                " Extracted: returned among the {} most likely candidates by the best-first search within {} expansions; cost = expansions (LM rows queried, batches of {}) until it came out.",
                s.top, s.budget, s.batch
            ),
            None => " Extraction was not run.".into(),
        }
    ));
    let mut head = vec!["repetitions", "canaries"];
    if exact {
        head.push("exposure (exact), mean ± sd");
    }
    head.extend([
        "interpolated, mean",
        "extrapolated, median",
        "log-perplexity, mean",
        "extracted",
        "cost, median expansions",
    ]);
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            let mut r = vec![
                if s.repetitions == 0 {
                    "0 (held out)".into()
                } else {
                    s.repetitions.to_string()
                },
                s.canaries.to_string(),
            ];
            if exact {
                r.push(format!(
                    "{:.2} ± {:.2}",
                    s.exposure_mean.unwrap_or(f64::NAN),
                    s.exposure_sd.unwrap_or(f64::NAN)
                ));
            }
            r.extend([
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
                format!("{:.2}", s.log_perplexity_mean),
                s.extracted
                    .map_or("-".into(), |e| format!("{e}/{}", s.canaries)),
                s.expansions_median.map_or("-".into(), |c| c.to_string()),
            ]);
            r
        })
        .collect();
    html.table(&head, &rows);

    if !log.records.is_empty() {
        let reps = set.repetition_counts();
        let mut series = exposure_series(log, &reps, steps_per_epoch);
        let xmax = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        series.push(Series {
            name: "chance (1.44 bits)".into(),
            points: vec![(0.0, CHANCE_EXPOSURE), (xmax, CHANCE_EXPOSURE)],
            markers: false,
            scatter: false,
        });
        let exact_log = log.records.iter().all(|r| r.exposure_exact.is_some());
        html.svg(&report::chart(
            &format!("{label}exposure during training"),
            "epoch",
            if exact_log {
                "mean exposure, exact (bits)"
            } else {
                "mean exposure, interpolated (bits)"
            },
            &series,
        ));
    }

    let fit = a.m.fit;
    let pdf = move |x: f64| fit.pdf(x);
    let mut marks: Vec<(String, f64)> = Vec::new();
    for s in &summary {
        let name = if s.repetitions == 0 {
            "held-out canaries (mean)".to_string()
        } else {
            format!("{}-insertion canaries (mean)", s.repetitions)
        };
        marks.push((name, s.log_perplexity_mean));
    }
    html.svg(&report::histogram(
        &format!(
            "{label}log-perplexity of {} reference candidates",
            a.m.reference_scores.len()
        ),
        "log-perplexity of the secret part (bits)",
        &a.m.reference_scores,
        60,
        Some(("fitted skew-normal", &pdf)),
        &marks,
    ));
    html.para(&format!(
        "Skew-normal fit (maximum likelihood, scipy's procedure): shape {:.4}, loc {:.4}, scale {:.4}{}.",
        fit.shape,
        fit.loc,
        fit.scale,
        if a.m.fit_converged {
            ""
        } else {
            " (the optimiser stopped at its iteration limit, as scipy would warn)"
        }
    ));

    let rows: Vec<Vec<String>> = set
        .manifest
        .canaries
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let rank = a.m.ranks.as_ref().map(|r| r[i]);
            let ex = a.extraction.as_ref().map(|(_, p)| p[i]);
            vec![
                c.id.clone(),
                c.text.clone(),
                c.repetitions.to_string(),
                format!("{:.2}", a.m.log_perplexity[i]),
                rank.map_or("-".into(), |r| r.rank.to_string()),
                rank.map_or("-".into(), |r| format!("{:.2}", r.exposure)),
                format!("{:.2}", a.m.interpolated[i]),
                fmt_f64(a.m.extrapolated[i]),
                ex.map_or("-".into(), |e| {
                    if e.extracted {
                        format!("yes (#{})", e.position.unwrap_or(0))
                    } else {
                        "no".into()
                    }
                }),
                ex.map_or("-".into(), |e| e.expansions.to_string()),
            ]
        })
        .collect();
    html.heading(&format!("{label}every canary"));
    html.table(
        &[
            "id",
            "canary",
            "repetitions",
            "log-perplexity",
            "rank",
            "exposure (exact)",
            "interpolated",
            "extrapolated",
            "extracted",
            "expansions",
        ],
        &rows,
    );

    if let Some((search, _)) = &a.extraction {
        html.heading(&format!(
            "{label}extraction: the search's most likely candidates"
        ));
        html.para(&format!(
            "Best-first (Dijkstra) search over the slots: {} expansions in {} batched LM calls, stopped: {:?}{}.",
            search.expansions,
            search.lm_calls,
            search.stop,
            if search.exact { "" } else { ", beam-limited (approximate)" }
        ));
        let by_index: std::collections::HashMap<u128, &str> = set
            .manifest
            .canaries
            .iter()
            .map(|c| (c.secret_index, c.id.as_str()))
            .collect();
        let rows: Vec<Vec<String>> = search
            .candidates
            .iter()
            .enumerate()
            .map(|(k, c)| {
                vec![
                    (k + 1).to_string(),
                    set.render(c.index),
                    format!("{:.2}", c.log_perplexity),
                    by_index.get(&c.index).map_or("-".into(), |s| s.to_string()),
                    c.expansions.to_string(),
                ]
            })
            .collect();
        html.table(
            &[
                "#",
                "candidate",
                "log-perplexity",
                "inserted canary",
                "expansions when found",
            ],
            &rows,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Everything a secret-sharer run needs (the flags, resolved).
pub struct Job<'a> {
    pub data: DataArgs,
    pub canary: &'a CanaryArgs,
    pub exposure: &'a ExposureArgs,
    pub extraction: &'a ExtractionArgs,
    pub tracking: &'a TrackingArgs,
    pub model: &'a ModelArgs,
    pub optim: &'a OptimArgs,
    pub privacy: &'a PrivacyArgs,
    pub run: &'a RunArgs,
}

/// What a finished run hands back (the demo combines two of them).
pub struct Outcome {
    pub report: Report,
    pub set: CanarySet,
    pub audit: Audit,
    pub log: ExposureLog,
    pub epochs: Vec<EpochInfo>,
    pub config: TrainConfig,
    pub epsilon: Option<f64>,
    pub valid_loss: Option<f64>,
    pub steps_per_epoch: u64,
    pub params: Vec<f32>,
    pub tokenizer: Tokenizer,
    pub statement: Option<String>,
}

/// Checks on the flags alone (before any data is read or anything written).
pub fn validate(job: &Job<'_>) -> Result<CanaryTemplate> {
    job.privacy.validate()?;
    job.exposure.validate()?;
    job.extraction.settings()?;
    if job.run.epochs == 0 {
        return Err(user("--epochs must be at least 1"));
    }
    let tpl = parse_template(&job.canary.template)?;
    if job.canary.canaries == 0 {
        return Err(user("--canaries must be at least 1"));
    }
    if job.canary.repetitions.is_empty() || job.canary.repetitions.contains(&0) {
        return Err(user(
            "--repetitions: give counts of at least 1, e.g. 1,4,16 (never-inserted canaries come from --held-out)",
        ));
    }
    let mut reps = job.canary.repetitions.clone();
    reps.sort_unstable();
    if reps.windows(2).any(|w| w[0] == w[1]) {
        return Err(user("--repetitions: each count once, e.g. 1,4,16"));
    }
    job.exposure.exact_for(tpl.space().size())?;
    if !job.data.is_text() || job.data.is_image() {
        return Err(user(format!(
            "--corpus {}: the Secret Sharer needs a text corpus (a path, embedded, ptb, ...)",
            job.data.data
        )));
    }
    Ok(tpl)
}

/// Train with canaries, track and audit them, write the run folder.
pub fn run_job(job: &Job<'_>, ctx: &Ctx, title: &str, write_html: bool) -> Result<Outcome> {
    let template = validate(job)?;
    let data = &job.data;
    let corpus = data.text()?;
    let level_kind = match data.level.as_str() {
        "char" => TokenizerKind::Char,
        "word" => TokenizerKind::Word,
        l => return Err(user(format!("--level {l}: use char or word"))),
    };
    // Word models get the slot symbols as tokens (PTB has no digits as words); with
    // --extend-vocab, every token of the template.
    let extra = match (level_kind, job.canary.extend_vocab) {
        (_, true) => template_tokens(&template, level_kind, true),
        (TokenizerKind::Word, false) => template_tokens(&template, level_kind, false),
        (TokenizerKind::Char | TokenizerKind::Bpe, false) => Vec::new(),
    };
    let tok = data.tokenizer(&corpus, &extra)?;
    let tpl = tokenize_template(
        &template,
        &tok,
        "; add --extend-vocab to add the canary's characters to the vocabulary",
    )?;
    let sep = separator(&tok)?;
    let seed = job.run.seed();
    let cseed = job.canary.canary_seed.unwrap_or(seed);

    // Canaries, held-out canaries, insertion.
    let mut manifest = generate_canaries(
        &tpl,
        &job.canary.repetitions,
        job.canary.canaries,
        &[sep],
        cseed,
    )
    .map_err(|e| user(format!("--canaries/--repetitions: {e}")))?;
    if job.canary.held_out > 0 {
        let taken = manifest.secret_indices();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(cseed, 3));
        let held = tpl
            .space()
            .sample_distinct(job.canary.held_out, &taken, &mut rng)
            .map_err(|e| user(format!("--held-out: {e}")))?;
        for (i, idx) in held.into_iter().enumerate() {
            manifest.canaries.push(memaudit_audit::Canary {
                id: format!("r0-{i}"),
                text: tpl
                    .template()
                    .render(idx)
                    .map_err(|e| user(e.to_string()))?,
                token_ids: tpl.canary_tokens(idx).map_err(|e| user(e.to_string()))?,
                secret_index: idx,
                repetitions: 0,
                positions: Vec::new(),
            });
        }
    }
    let w = data.seq_len;
    let mut stream = tok.encode(&corpus.train)?;
    if let Some(m) = data.max_train {
        // Keep whole lines up to about --max-train windows; canaries are inserted into what is
        // kept (so every insertion is trained on).
        let cut = m.saturating_mul(w);
        if stream.len() > cut + 1 {
            let end = stream[..cut]
                .iter()
                .rposition(|&t| t == sep)
                .map_or(cut + 1, |i| i + 1);
            stream.truncate(end);
        }
    }
    // Line starts, away from the last two windows: insertions there could fall into the
    // trailing partial window, which is never trained on.
    let limit = stream.len().saturating_sub(2 * w);
    let bounds: Vec<usize> = stream[..limit]
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == sep)
        .map(|(i, _)| i + 1)
        .filter(|&b| b < limit)
        .collect();
    let stream = insert_canaries(&stream, &bounds, w, &mut manifest, derive_seed(cseed, 1))
        .map_err(|e| user(format!("--canary/--seq-len/--repetitions: {e}")))?;
    let train = TokenWindowDataset::new(stream, w)?;
    let n = train.len();
    let covered = n * w + 1;
    for c in &manifest.canaries {
        if let Some(&p) = c
            .positions
            .iter()
            .find(|&&p| p + c.token_ids.len() + 1 > covered)
        {
            return Err(user(format!(
                "internal: canary {} at {p} lies outside the training windows",
                c.id
            )));
        }
    }
    // Audit canaries join the training windows before N is counted (they are training examples).
    let (train, n, black_box) =
        super::audit_canaries::insert_windows(train, job.canary.audit_canaries, &tok, cseed)?;
    let mut valid_tokens = tok.encode(&corpus.valid)?;
    if let Some(m) = data.max_train {
        valid_tokens.truncate(m * w + 1);
    }
    let valid = TokenWindowDataset::new(valid_tokens, w)?;
    let mut set = CanarySet {
        tpl,
        manifest,
        references: Vec::new(),
    };
    let n_refs = set.draw_references(job.exposure.references, derive_seed(cseed, 2))?;
    if n_refs < job.exposure.references {
        ctx.note(format!(
            "note: {n_refs} references (all candidates that are not canaries; --references asked for {})",
            job.exposure.references
        ));
    }
    if n_refs < 2 {
        return Err(user(
            "--canary: the randomness space leaves fewer than 2 reference candidates; use a larger slot space",
        ));
    }

    // Model and trainer.
    let model_cfg = job.model.config(&InputShape::Tokens { vocab: tok.len() })?;
    if !matches!(
        model_cfg,
        ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. }
    ) {
        return Err(user(
            "--model: the Secret Sharer needs a language model (lstm, gru or gpt)",
        ));
    }
    if let Some(s) = model_cfg.gpt_shape()
        && w > s.n_ctx
    {
        return Err(user(format!(
            "--seq-len {w} is longer than the GPT's positional table (--gpt-context {})",
            s.n_ctx
        )));
    }
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    if job.run.batch_size == 0 || job.run.batch_size > n {
        return Err(user(format!(
            "--batch-size {} must be between 1 and the number of training windows {n}",
            job.run.batch_size
        )));
    }
    let cfg = super::train::train_config(
        job.privacy,
        job.optim,
        job.run,
        &model,
        &model_cfg,
        n,
        seed,
        ctx,
    )?;
    let steps_per_epoch = super::train::steps_per_epoch(cfg.sampling, n, cfg.batch_size);
    let exact_final = job.exposure.exact_for(set.tpl.space().size())?;
    let exact_track = exact_final && set.tpl.space().size() <= job.tracking.track_exact_limit;
    let extract_settings = job.extraction.settings()?;
    let run_cfg = json!({
        "train": cfg,
        "data": data,
        "canary": job.canary,
        "exposure": job.exposure,
        "extraction": job.extraction,
        "tracking": job.tracking,
    });
    let mut rd = RunDir::open(
        &job.run.out,
        "secret-sharer",
        &run_cfg,
        Some(seed),
        job.run.reuse(),
    )?;
    tok.save(&rd.file("tokenizer.json"))
        .context("saving the tokenizer")?;
    set.save(&rd.path)?;
    if let Some(c) = &black_box {
        super::audit_canaries::save_manifest(&rd, c, Some(&tok), None)?;
    }
    let mut trainer = Trainer::new(cfg.clone(), n, Some(&rd.checkpoints()), rd.resuming)
        .map_err(|e| user(e.to_string()))?;
    if trainer.noise_is_seeded() {
        ctx.note("note: the DP noise is seeded from --seed (--seeded-noise): anyone with the seed can regenerate it; use only for reproducible research");
    }
    let inserted: usize = set
        .manifest
        .canaries
        .iter()
        .map(|c| c.repetitions as usize)
        .sum();
    ctx.note(format!(
        "{} canaries of {:?} (|R| = {}, log2|R| = {:.1}): {} inserted {} times in all, {} held out; {} training windows of {w} tokens; {} references",
        set.manifest.canaries.len(),
        set.manifest.template,
        set.tpl.space().size(),
        set.tpl.space().log2_size(),
        set.manifest
            .canaries
            .iter()
            .filter(|c| c.repetitions > 0)
            .count(),
        inserted,
        job.canary.held_out,
        n,
        set.references.len()
    ));

    // Exposure during training. The log is stored in every checkpoint with metrics.csv: a resume
    // restores it from the checkpoint it starts from (rows measured after it are dropped and
    // measured again by the resumed run), and never re-measures step 0 with trained weights.
    let csv_path = rd.file(EXPOSURE_CSV);
    let log = if trainer.resumed_from.is_some() {
        restore_exposure_log(&csv_path, &trainer)?
    } else {
        let lm = lm_for_canaries(&model_cfg, &trainer.params, &set)?;
        let m = measure(
            lm.as_ref(),
            &set,
            exact_track,
            job.tracking.track_exact_limit,
        )
        .map_err(|e| user(format!("exposure before training: {e}")))?;
        let mut log = ExposureLog::default();
        for r in m.records(&set, 0, 0) {
            log.push(r);
        }
        write_exposure_csv(&log, &csv_path).map_err(|e| user(e.to_string()))?;
        log
    };
    let tracker = RefCell::new(Tracker {
        set: &set,
        model: model_cfg.clone(),
        exact: exact_track,
        exact_limit: job.tracking.track_exact_limit,
        log,
        csv: csv_path.clone(),
        quiet: ctx.quiet || ctx.json,
    });
    let epoch_hook = |e: &EpochInfo, _m: &Model, p: &[f32]| {
        tracker.borrow_mut().record(e.epoch as u32, e.step, p)
    };
    let logs_hook = || {
        let bytes = tracker
            .borrow()
            .log
            .to_csv_bytes()
            .map_err(|e| EngineError::Config(e.to_string()))?;
        Ok(vec![(EXPOSURE_CSV.to_string(), bytes)])
    };
    let every = job.tracking.track_every;
    let step_hook = |s: &StepInfo, _m: &Model, p: &[f32]| {
        if every > 0
            && s.step.is_multiple_of(every)
            && !s.step.is_multiple_of(s.steps_per_epoch.max(1))
        {
            tracker.borrow_mut().record(s.epoch as u32, s.step, p)
        } else {
            Ok(())
        }
    };
    let prepared = Prepared {
        name: corpus.name.clone(),
        train,
        valid: Some(Box::new(valid)),
        input: InputShape::Tokens { vocab: tok.len() },
        tokenizer: Some(tok.clone()),
    };
    let outcome = train_with_report_hooks(
        ctx,
        &mut rd,
        &mut trainer,
        &prepared,
        n,
        TrainHooks {
            epoch: Some(Box::new(epoch_hook)),
            step: Some(Box::new(step_hook)),
            logs: Some(Box::new(logs_hook)),
            write_html: false,
            finish_run: false,
        },
        title,
    )?;
    let log = tracker.into_inner().log;
    log.write_json(&rd.file(EXPOSURE_JSON))
        .map_err(|e| user(e.to_string()))?;

    // The final audit.
    ctx.note(format!(
        "measuring exposure{} of {} canaries{}",
        if exact_final {
            " (exact, trie walk over R)"
        } else {
            ""
        },
        set.manifest.canaries.len(),
        if extract_settings.is_some() {
            " and extracting"
        } else {
            ""
        }
    ));
    let lm = lm_for_canaries(&model_cfg, &trainer.params, &set)?;
    let a = audit(
        lm.as_ref(),
        &set,
        exact_final,
        job.exposure.exact_limit,
        extract_settings,
    )?;
    let epsilon = trainer.epsilon()?;
    let valid_loss = outcome.epochs.last().and_then(|e| e.valid_loss);
    let summary = a.summary(&set);
    let canaries = a.canaries_json(&set);
    let results = json!({
        "log2_space": set.tpl.space().log2_size(),
        "space_size": set.tpl.space().size().to_string(),
        "epsilon": epsilon.map(num),
        "valid_loss": valid_loss.map(num),
        "references": set.references.len(),
        "skew_normal": {"shape": a.m.fit.shape, "loc": a.m.fit.loc, "scale": a.m.fit.scale, "converged": a.m.fit_converged},
        "by_repetitions": summary,
        "canaries": canaries,
        "exact_walk": a.m.walk,
        "measure_seconds": a.m.seconds,
        "extract_seconds": a.extract_seconds,
        "extraction": a.extraction.as_ref().map(|(s, _)| json!({
            "expansions": s.expansions,
            "lm_calls": s.lm_calls,
            "stop": s.stop,
            "exact": s.exact,
            "top": s.candidates.iter().map(|c| json!({
                "text": set.render(c.index),
                "log_perplexity": num(c.log_perplexity),
                "expansions": c.expansions,
            })).collect::<Vec<_>>(),
        })),
    });
    crate::rundir::write_atomic(
        &rd.file(RESULTS_FILE),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    let mut run_results = outcome.summary.clone();
    run_results["secret_sharer"] = json!({
        "log2_space": set.tpl.space().log2_size(),
        "by_repetitions": summary,
    });
    let black_box_audit = match &black_box {
        Some(c) => Some(super::audit_canaries::audit(
            &rd,
            &trainer,
            c,
            Some(&tok),
            job.privacy.delta,
        )?),
        None => None,
    };
    if let Some(a) = &black_box_audit {
        run_results["black_box_audit"] = a.json.clone();
    }
    rd.set("results", run_results)?;

    let mut html = outcome.html;
    html.heading("The Secret Sharer");
    html.para(&format!(
        "Canary template {:?}: {} canaries per repetition count {:?} inserted at random line starts of the training text (each insertion inside one {w}-token training window), and {} never-inserted canaries drawn the same way. Exposure was measured before training and after every epoch{}.",
        set.manifest.template,
        job.canary.canaries,
        job.canary.repetitions,
        job.canary.held_out,
        if every > 0 {
            format!(" and every {every} steps")
        } else {
            String::new()
        }
    ));
    report_sections(&mut html, "", &set, &a, &log, steps_per_epoch);
    if let Some(b) = &black_box_audit {
        html.heading("Black-box audit");
        html.pre(&b.text);
    }
    if write_html {
        html.write(&rd.file("report.html"))?;
    }
    rd.finish("completed")?;

    let statement = super::train::statement_text(&cfg, trainer.ledger(), n)?.map(|s| s.0);
    let mut text = format!(
        "{}\n\nexposure of {:?} (log2|R| = {:.2}) after {} epochs{}{}:\n{}",
        outcome
            .report
            .text
            .split("\n\nrun folder:")
            .next()
            .unwrap_or(""),
        set.manifest.template,
        set.tpl.space().log2_size(),
        trainer.epoch,
        valid_loss.map_or(String::new(), |v| format!(", valid loss {}", fmt_f64(v))),
        epsilon.map_or(String::new(), |e| format!(", epsilon {}", fmt_f64(e))),
        summary_text(&summary, exact_final)
    );
    if let Some((s, _)) = &a.extraction {
        text += &format!(
            "extraction: {} expansions, the {} most likely candidates: {}\n",
            s.expansions,
            s.candidates.len(),
            s.candidates
                .iter()
                .take(5)
                .map(|c| format!("{:?}", set.render(c.index)))
                .collect::<Vec<_>>()
                .join(", ")
                + if s.candidates.len() > 5 { ", ..." } else { "" }
        );
    }
    if let Some(b) = &black_box_audit {
        text += &format!("\n{}\n", b.text);
    }
    text += &format!(
        "\nrun folder: {}\nreport: {}",
        rd.path.display(),
        rd.file("report.html").display()
    );
    let json = json!({
        "log2_space": set.tpl.space().log2_size(),
        "epsilon": epsilon.map(num),
        "valid_loss": opt_num(valid_loss),
        "canaries": a.canaries_json(&set),
        "run": rd.path.display().to_string(),
        "report": rd.file("report.html").display().to_string(),
        "by_repetitions": summary,
    });
    let mut json = json;
    if let Some(b) = &black_box_audit {
        json["black_box_audit"] = b.json.clone();
    }
    Ok(Outcome {
        report: Report::new(text, json),
        set,
        audit: a,
        log,
        epochs: outcome.epochs,
        config: cfg,
        epsilon,
        valid_loss,
        steps_per_epoch,
        params: trainer.params.clone(),
        tokenizer: tok,
        statement,
    })
}

/// Exposure every epoch (and every N steps), kept in memory and in exposure.csv.
struct Tracker<'s> {
    set: &'s CanarySet,
    model: ModelConfig,
    exact: bool,
    exact_limit: u128,
    log: ExposureLog,
    csv: std::path::PathBuf,
    quiet: bool,
}

impl Tracker<'_> {
    fn record(&mut self, epoch: u32, step: u64, params: &[f32]) -> memaudit_engine::Result<()> {
        let lm = lm_for_canaries(&self.model, params, self.set)?;
        let m = measure(lm.as_ref(), self.set, self.exact, self.exact_limit)
            .map_err(|e| EngineError::Config(format!("exposure tracking at step {step}: {e}")))?;
        let recs = m.records(self.set, epoch, step);
        if !self.quiet {
            let mut parts = Vec::new();
            for r in self.set.repetition_counts() {
                let v: Vec<f64> = recs
                    .iter()
                    .filter(|x| x.repetitions == r)
                    .filter_map(|x| x.exposure_exact.or(x.exposure_interpolated))
                    .collect();
                parts.push(format!(
                    "{}: {:.2}",
                    if r == 0 {
                        "held out".to_string()
                    } else {
                        format!("x{r}")
                    },
                    v.iter().sum::<f64>() / v.len().max(1) as f64
                ));
            }
            eprintln!(
                "  exposure at step {step} ({}): {} ({:.1}s)",
                if self.exact { "exact" } else { "interpolated" },
                parts.join(", "),
                m.seconds
            );
        }
        for r in recs {
            self.log.push(r);
        }
        write_exposure_csv(&self.log, &self.csv).map_err(|e| EngineError::Config(format!("{e:#}")))
    }
}

/// exposure.csv, rewritten whole and atomically (a crash leaves the old or the new file).
fn write_exposure_csv(log: &ExposureLog, path: &Path) -> Result<()> {
    let bytes = log.to_csv_bytes()?;
    crate::rundir::write_atomic(path, &bytes)
}

/// The exposure log a resumed run continues: the copy in the checkpoint it resumes from (the
/// folder's exposure.csv is rewritten to it). A checkpoint written before logs were stored with
/// checkpoints falls back to the folder's file without its rows past the checkpoint, and refuses
/// a file it cannot read rather than losing the history.
fn restore_exposure_log(csv_path: &Path, trainer: &Trainer) -> Result<ExposureLog> {
    let log = match trainer.resumed_log(EXPOSURE_CSV) {
        Some(bytes) => ExposureLog::from_csv_bytes(bytes, "the checkpoint's exposure.csv")
            .map_err(|e| user(format!("{e}; start the run again with --force")))?,
        None => {
            let mut log = ExposureLog::read_csv(csv_path).map_err(|e| {
                user(format!(
                    "{e}: its checkpoint predates stored logs, so the exposure history cannot be restored; start the run again with --force"
                ))
            })?;
            log.records.retain(|r| r.step <= trainer.step);
            log
        }
    };
    if !log.records.iter().any(|r| r.step == 0) {
        return Err(user(format!(
            "{}: the exposure history lacks its measurement before training; start the run again with --force",
            csv_path.display()
        )));
    }
    write_exposure_csv(&log, csv_path)?;
    Ok(log)
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let mut data = args.data.clone();
    if let Some(c) = &args.corpus {
        data.data = c.clone();
    }
    let job = Job {
        data,
        canary: &args.canary,
        exposure: &args.exposure,
        extraction: &args.extraction,
        tracking: &args.tracking,
        model: &args.model,
        optim: &args.optim,
        privacy: &args.privacy,
        run: &args.run,
    };
    Ok(run_job(&job, ctx, "memaudit secret-sharer", true)?.report)
}

/// Incremental inference sized for the canaries: a GPT's key/value cache holds the longest
/// sequence the scorer and the extraction read (conditioning plus every scored token).
fn lm_for_canaries(
    cfg: &ModelConfig,
    params: &[f32],
    set: &CanarySet,
) -> memaudit_engine::Result<Box<dyn IncrementalLm>> {
    let tokens = set.tpl.conditioning().len() + set.tpl.steps().len();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_in_several_notations() {
        assert_eq!(parse_count("10000000"), Ok(10_000_000));
        assert_eq!(parse_count("10_000_000"), Ok(10_000_000));
        assert_eq!(parse_count("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_count("10^9"), Ok(1_000_000_000));
        assert_eq!(parse_count("3e2"), Ok(300));
        assert!(parse_count("1.5e3").is_err());
        assert!(parse_count("ten").is_err());
        assert!(parse_count("10^99").is_err());
    }

    #[test]
    fn vocab_tokenizer_never_maps_to_unknown() {
        let tok = Tokenizer::char_from_text("ab 12\n", true).unwrap();
        let t = VocabTokenizer(&tok);
        assert_eq!(t.encode_literal("ab").unwrap().len(), 2);
        let err = t.encode_symbol('7').unwrap_err();
        assert!(err.contains("'7'"), "{err}");
        // The unknown token itself is not a canary symbol either.
        assert!(t.encode_symbol(memaudit_data::tokenizer::CHAR_UNK).is_err());
        let w = Tokenizer::word_from_text("the pin is\n", &Default::default()).unwrap();
        let t = VocabTokenizer(&w);
        assert_eq!(t.encode_literal(" the  pin is ").unwrap().len(), 3);
        assert!(t.encode_literal("the code").unwrap_err().contains("code"));
    }
}
