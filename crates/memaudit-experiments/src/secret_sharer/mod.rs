//! The Secret Sharer (Carlini, Liu, Erlingsson, Kos, Song, USENIX Security 2019) end to end:
//! draw canaries from a template, insert each `r` times into the training text, train a
//! language model (plain or DP-SGD), track the canaries' exposure during training, then measure
//! their exposure (exact rank over all of R by the trie walk, TF Privacy's interpolation over
//! references, the skew-normal extrapolation) and try to extract them by shortest-path search.
//!
//! [`run`] takes a [`SecretSharerConfig`] and returns a [`SecretSharerResult`]; it writes the run
//! folder (`run.out`): run.json, metrics.csv, exposure.csv/json, canaries.json, references.json,
//! secret_sharer.json, the tokenizer and the checkpoints, whose logs make a killed run resumable
//! (`run.resume`). Reports (text, HTML) are the caller's.
//!
//! Also the pieces `exposure`, `extract` and `demo` reuse: the model's tokenizer as a canary
//! tokenizer and the canary set of a run ([`canaries`]), one exposure measurement and the
//! extraction of every canary by one best-first search ([`measure`](mod@measure)).

pub mod canaries;
pub mod measure;
mod run;

use serde::{Deserialize, Serialize};

pub use canaries::{
    CanarySet, CanaryTokens, MANIFEST_FILE, REFERENCES_FILE, VocabTokenizer, derive_seed,
    insertion_separator, parse_template, render_candidates, separator, template_tokens,
    tokenize_template,
};
pub use measure::{
    Audit, CHANCE_EXPOSURE, CanaryExtraction, CanaryResult, ExtractSettings, Measurement,
    RepSummary, audit, extract_canaries, lm_for_canaries, measure, rendered_extraction_cost,
    walk_options,
};
pub use run::{
    EXPOSURE_CSV, EXPOSURE_JSON, RESULTS_FILE, RunHooks, SecretSharerDetail, SecretSharerResult,
    run, run_with,
};

use crate::config::ExperimentConfig;
use crate::datasets::DataSettings;
use crate::error::{Result, invalid};
use crate::optim::OptimSettings;
use crate::train::{ModelSettings, PrivacySettings, RunSettings};

/// Which canaries, how many, how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanarySettings {
    /// Canary template with typed slots: {digits:N}, {letters:N}, {alphabet=SYMBOLS:N}.
    pub template: String,
    /// Canaries per repetition count.
    pub canaries: usize,
    /// Repetition counts: each of the canaries of a count is inserted that many times.
    pub repetitions: Vec<u32>,
    /// Canaries drawn like the others but never inserted: their exposure is chance (1/ln 2 =
    /// 1.44 bits on average).
    pub held_out: usize,
    /// Add the canary's characters (or words) to the vocabulary when the corpus lacks them. Word
    /// models always get the slot symbols as tokens.
    pub extend_vocab: bool,
    /// Seed of the canaries, their insertion points and the references (`None`: the run's seed).
    pub canary_seed: Option<u64>,
    /// Black-box one-run audit (Steinke et al. 2023), apart from the Secret Sharer's canaries: M
    /// random windows, each included with probability 1/2 (seeded by the canary seed); after
    /// training, the one-run lower bound on epsilon from their log-likelihoods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_canaries: Option<usize>,
}

impl Default for CanarySettings {
    fn default() -> Self {
        Self {
            template: "the random number is {digits:9}".into(),
            canaries: 4,
            repetitions: vec![1, 4, 16],
            held_out: 20,
            extend_vocab: false,
            canary_seed: None,
            audit_canaries: None,
        }
    }
}

/// How exposure is measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureSettings {
    /// auto (exact when |R| <= `exact_limit`, else from references only), exact (refuse when
    /// |R| is above the limit) or sampled (references only).
    pub method: String,
    /// Exact exposure (rank over all of R by the trie walk) when |R| is at most this.
    pub exact_limit: u64,
    /// Reference candidates for the sampled exposures (TF Privacy's interpolation and the
    /// skew-normal extrapolation); capped at |R| minus the canaries.
    pub references: usize,
}

impl Default for ExposureSettings {
    fn default() -> Self {
        Self {
            method: "auto".into(),
            exact_limit: 10_000_000,
            references: 16384,
        }
    }
}

/// How the exact rank is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExactMode {
    Auto,
    Required,
    Off,
}

impl ExposureSettings {
    pub fn mode(&self) -> Result<ExactMode> {
        match self.method.as_str() {
            "auto" => Ok(ExactMode::Auto),
            "exact" => Ok(ExactMode::Required),
            "sampled" => Ok(ExactMode::Off),
            m => invalid("exposure.method", m, "use auto, exact or sampled"),
        }
    }

    /// Whether exact ranks are computed for a space of `size`; an error when they are required
    /// and the space is above the limit.
    pub fn exact_for(&self, size: u128) -> Result<bool> {
        let limit = u128::from(self.exact_limit);
        match self.mode()? {
            ExactMode::Off => Ok(false),
            ExactMode::Auto => Ok(size <= limit),
            ExactMode::Required if size <= limit => Ok(true),
            ExactMode::Required => invalid(
                "exposure.exact_limit",
                self.exact_limit,
                format!(
                    "exact exposure was asked for, and the canary's randomness space has {size} candidates, above the limit; raise the exact limit (the trie walk scores ~10^5-10^6 candidates per second here, see `memaudit bench exposure`) or use sampled exposure"
                ),
            ),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.mode()?;
        if self.references < 2 {
            return invalid(
                "exposure.references",
                self.references,
                "must be at least 2 (the skew-normal fit needs a sample)",
            );
        }
        Ok(())
    }
}

/// How extraction is tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionSettings {
    /// Extraction budget: trie nodes the best-first search may expand (LM rows queried); 0 skips
    /// extraction.
    pub extract_budget: u64,
    /// A canary counts as extracted when the search returns it among this many most likely
    /// candidates.
    pub extract_top: usize,
    /// Nodes expanded per batched LM query of the search.
    pub extract_batch: usize,
    /// Keep at most this many frontier entries (approximate search with bounded memory).
    pub extract_beam: Option<usize>,
}

impl Default for ExtractionSettings {
    fn default() -> Self {
        Self {
            extract_budget: 100_000,
            extract_top: 10,
            extract_batch: 64,
            extract_beam: None,
        }
    }
}

impl ExtractionSettings {
    /// The search's settings, or `None` when extraction is off (budget 0).
    pub fn settings(&self) -> Result<Option<ExtractSettings>> {
        if self.extract_budget == 0 {
            return Ok(None);
        }
        for (field, v) in [
            ("extraction.extract_top", Some(self.extract_top)),
            ("extraction.extract_batch", Some(self.extract_batch)),
            ("extraction.extract_beam", self.extract_beam),
        ] {
            if v == Some(0) {
                return invalid(field, 0, "must be at least 1");
            }
        }
        Ok(Some(ExtractSettings {
            budget: self.extract_budget,
            top: self.extract_top,
            batch: self.extract_batch,
            beam: self.extract_beam,
        }))
    }
}

/// Exposure during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSettings {
    /// Measure exposure every N optimizer steps as well as after every epoch (0: epochs only).
    pub track_every: u64,
    /// Exact ranks while tracking only when |R| is at most this (each costs one trie walk).
    pub track_exact_limit: u64,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        Self {
            track_every: 0,
            track_exact_limit: 1_000_000,
        }
    }
}

/// A Secret Sharer experiment. Defaults are the CLI's (`memaudit secret-sharer --print-config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSharerConfig {
    /// The training text (`data.data`: a UTF-8 file or folder, `embedded`, or a fetched corpus
    /// such as `ptb`) and its tokenisation.
    pub data: DataSettings,
    pub canary: CanarySettings,
    pub exposure: ExposureSettings,
    pub extraction: ExtractionSettings,
    pub tracking: TrackingSettings,
    /// A language model: lstm (default), gru or gpt.
    pub model: ModelSettings,
    pub optim: OptimSettings,
    pub privacy: PrivacySettings,
    pub run: RunSettings,
}

impl ExperimentConfig for SecretSharerConfig {
    const NAME: &'static str = "secret-sharer";

    fn validate(&self) -> Result<()> {
        self.privacy.validate()?;
        self.exposure.validate()?;
        self.extraction.settings()?;
        self.data.validate()?;
        self.run.validate()?;
        let tpl = parse_template(&self.canary.template)?;
        if self.canary.canaries == 0 {
            return invalid("canary.canaries", 0, "must be at least 1");
        }
        let reps = &self.canary.repetitions;
        if reps.is_empty() || reps.contains(&0) {
            return invalid(
                "canary.repetitions",
                format!("{reps:?}"),
                "give counts of at least 1, e.g. 1,4,16 (never-inserted canaries come from held_out)",
            );
        }
        let mut sorted = reps.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return invalid(
                "canary.repetitions",
                format!("{reps:?}"),
                "each count once, e.g. 1,4,16",
            );
        }
        self.exposure.exact_for(tpl.space().size())?;
        if self.data.level == "bpe" && tpl.space().size() > u128::from(self.exposure.exact_limit) {
            return invalid(
                "exposure.exact_limit",
                self.exposure.exact_limit,
                format!(
                    "a byte-level BPE run renders, tokenizes and holds every candidate (merges join slot symbols, so there is no trie to walk), and the canary has {}; raise the limit or use a smaller slot space",
                    tpl.space().size()
                ),
            );
        }
        if !self.data.is_text() || self.data.is_image() {
            return invalid(
                "data.data",
                &self.data.data,
                "the Secret Sharer needs a text corpus (a path, embedded, ptb, ...)",
            );
        }
        if self.data.level == "bpe" && self.data.tokenizer.is_none() {
            return invalid(
                "data.level",
                "bpe",
                "a byte-level BPE is read from a file: give it with --tokenizer (a Hugging Face tokenizer file)",
            );
        }
        if !["char", "word", "bpe"].contains(&self.data.level.as_str()) {
            return invalid(
                "data.level",
                &self.data.level,
                "use char, word or bpe (with --tokenizer)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExperimentError;
    use crate::config::{from_toml_str, to_toml};

    fn field_of(e: ExperimentError) -> String {
        match e {
            ExperimentError::Invalid { field, .. } => field,
            e => panic!("not a settings error: {e}"),
        }
    }

    #[test]
    fn the_defaults_round_trip_through_toml() {
        let mut cfg = SecretSharerConfig::default();
        cfg.run.out = "runs/x".into();
        cfg.exposure.exact_limit = 1_000_000_000;
        let text = to_toml(&cfg).unwrap();
        let back: SecretSharerConfig = from_toml_str(&text, "x.toml".as_ref()).unwrap();
        assert_eq!(back, cfg);
        back.validate().unwrap();
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        let base = || {
            let mut c = SecretSharerConfig::default();
            c.run.out = "runs/x".into();
            c
        };
        let mut c = base();
        c.canary.repetitions = vec![0, 4];
        assert_eq!(field_of(c.validate().unwrap_err()), "canary.repetitions");
        let mut c = base();
        c.canary.template = "no slot".into();
        assert_eq!(field_of(c.validate().unwrap_err()), "canary.template");
        // |R| = 10^9 above an exact limit of 10^6 while exact exposure is demanded.
        let mut c = base();
        (c.exposure.method, c.exposure.exact_limit) = ("exact".into(), 1_000_000);
        assert_eq!(field_of(c.validate().unwrap_err()), "exposure.exact_limit");
        let mut c = base();
        c.data.data = "digits".into();
        assert_eq!(field_of(c.validate().unwrap_err()), "data.data");
        let mut c = base();
        c.run.out = "".into();
        assert_eq!(field_of(c.validate().unwrap_err()), "run.out");
    }

    #[test]
    fn a_bpe_level_needs_its_tokenizer_and_a_space_it_can_hold() {
        let bpe = || {
            let mut c = SecretSharerConfig::default();
            c.run.out = "runs/x".into();
            c.data.level = "bpe".into();
            c.data.tokenizer = Some("tok/tokenizer.json".into());
            c.canary.template = "my pin is {digits:4}".into();
            c
        };
        bpe().validate().unwrap();
        // The tokenizer travels through the config file.
        let text = to_toml(&bpe()).unwrap();
        assert!(
            text.contains("tokenizer = \"tok/tokenizer.json\""),
            "{text}"
        );
        let back: SecretSharerConfig = from_toml_str(&text, "x.toml".as_ref()).unwrap();
        assert_eq!(back, bpe());
        let mut c = bpe();
        c.data.tokenizer = None;
        assert_eq!(field_of(c.validate().unwrap_err()), "data.level");
        let mut c = bpe();
        c.data.level = "char".into();
        assert_eq!(field_of(c.validate().unwrap_err()), "data.tokenizer");
        // Every candidate is rendered and held: |R| = 10^9 is above the default 10^7 limit.
        let mut c = bpe();
        c.canary.template = "my pin is {digits:9}".into();
        assert_eq!(field_of(c.validate().unwrap_err()), "exposure.exact_limit");
        // A char config does not mention a tokenizer at all.
        let mut c = bpe();
        (c.data.level, c.data.tokenizer) = ("char".into(), None);
        assert!(!to_toml(&c).unwrap().contains("tokenizer"));
    }
}
