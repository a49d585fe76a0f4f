//! [`AuditConfig`]: the one TOML file of `memaudit audit` (data, model, training variants,
//! canaries, audits), its checks, and [`EXAMPLE`], the commented config `memaudit audit
//! --example` prints.
//!
//! Errors name the file, the line and the key. Parse and type errors come from
//! [`crate::config::from_toml_str`]; the checks after parsing ([`AuditConfig::validate`] and
//! [`Backend::preflight`](super::stages::Backend::preflight), which needs the data) return [`ExperimentError::Invalid`] with the
//! field's dotted path, which [`LoadedConfig::locate`] turns into the file's line and key.

use std::path::{Path, PathBuf};

use memaudit_audit::CanaryTemplate;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};

pub use super::example::{EXAMPLE, EXAMPLE_DATASET, demo};

/// The whole audit: what data, which model, which training variants, which canaries, which
/// audits. Missing keys take the values of `Default` (the one place defaults are defined).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seed of everything: canaries, initialisation, batches, DP noise, shadow splits.
    pub seed: u64,
    pub data: DataSection,
    pub model: ModelSection,
    /// Training settings every variant shares (a variant may override some).
    pub training: TrainingSection,
    /// The training recipes to compare; at least one.
    pub variants: Vec<Variant>,
    pub canaries: CanarySection,
    pub audits: AuditsSection,
}

/// The data: the text the language models are trained on, or (`dataset`) the images a
/// classifier is trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// `embedded` (built in), a fetched corpus (`ptb`, `moby-dick`, ...), or a path to a UTF-8
    /// text file or folder of one's own.
    pub corpus: String,
    /// A classifier dataset instead of a text corpus: `digits` (built in), `mnist` or
    /// `fashion-mnist` (fetched into the data cache). Absent (the default): the text of
    /// `corpus`. Skipped when absent so that a text config's stage keys stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    pub data_dir: Option<PathBuf>,
    /// Tokenisation: `char` or `word`.
    pub level: String,
    /// Tokens per training window (one window = one example, the unit DP protects).
    pub seq_len: usize,
    /// Fraction of the text held out for validation.
    pub valid_fraction: f64,
    /// Use at most this many training windows (`None`: all).
    pub max_train: Option<usize>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            corpus: "embedded".into(),
            dataset: None,
            data_dir: None,
            level: "char".into(),
            seq_len: 64,
            valid_fraction: 0.1,
            max_train: None,
        }
    }
}

/// The model: a language model on text (`lstm`, `gru`, `gpt`), a classifier on a dataset
/// (`mlp`, `tutorial-cnn`, `groupnorm-cnn`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Text: `lstm`, `gru` or `gpt` (the GPT-2-architecture decoder of secret-sharer). A
    /// dataset: `mlp`, `tutorial-cnn` (the Opacus tutorial's CNN) or `groupnorm-cnn`.
    pub kind: String,
    /// Embedding width (lstm, gru); the model width of a gpt (its MLP is 4x wider).
    pub embed: usize,
    /// Recurrent units per layer (lstm, gru); units per hidden layer of an mlp.
    pub hidden: usize,
    /// Stacked recurrent layers (lstm, gru: 1-3); hidden layers of an mlp (1-3); transformer
    /// blocks of a gpt (1-12).
    pub layers: usize,
    /// gpt only: attention heads (must divide `embed`; default 4). Skipped when absent, as are
    /// all optional keys added after the first version, so older configs keep their stage keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// gpt only: positions in the learned positional table, at least `data.seq_len` (default
    /// 128).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

/// The language models `model.kind` accepts with a text corpus.
pub const TEXT_MODELS: [&str; 3] = ["lstm", "gru", "gpt"];
/// The classifiers `model.kind` accepts with `data.dataset`.
pub const DATASET_MODELS: [&str; 3] = ["mlp", "tutorial-cnn", "groupnorm-cnn"];
/// The datasets `data.dataset` accepts (a user's own .npz is not supported by the training
/// library yet).
pub const DATASETS: [&str; 3] = crate::datasets::IMAGE_SETS;
/// The GPT's attention heads and positional table when `model.heads` / `model.context` are
/// absent (the library's defaults, as `memaudit secret-sharer --model gpt` uses them).
pub const GPT_DEFAULT_HEADS: usize = 4;
pub const GPT_DEFAULT_CONTEXT: usize = 128;
/// Membership-inference attacks that read token-level losses (language models only).
const LM_ONLY_ATTACKS: [&str; 2] = ["min-k", "zlib"];

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            kind: "lstm".into(),
            embed: 32,
            hidden: 128,
            layers: 1,
            heads: None,
            context: None,
        }
    }
}

/// Optimisation settings shared by the variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub epochs: usize,
    pub batch_size: usize,
    /// `adam` or `sgd`.
    pub optimizer: String,
    pub lr: f64,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            epochs: 8,
            batch_size: 32,
            optimizer: "adam".into(),
            lr: 0.003,
        }
    }
}

/// One training recipe: plain, DP-SGD (a `[variants.dp]` table), or regularised (dropout,
/// weight decay); the shared training settings can be overridden per variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Variant {
    /// A short name (letters, digits, `-`, `_`), unique among the variants; it names the
    /// variant's stages and folders.
    pub name: String,
    /// DP-SGD settings; absent: no privacy claim (epsilon infinite).
    pub dp: Option<DpSection>,
    /// Dropout between layers and before the output.
    pub dropout: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
}

impl Default for Variant {
    fn default() -> Self {
        Self {
            name: "plain".into(),
            dp: None,
            dropout: 0.0,
            weight_decay: 0.0,
            epochs: None,
            batch_size: None,
            lr: None,
        }
    }
}

/// DP-SGD: per-example clipping and Gaussian noise, with the noise calibrated to a target
/// epsilon (or given).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSection {
    /// The epsilon to calibrate the noise to (at `delta`); with `noise_multiplier` also set, the
    /// epsilon that noise must reach (the audit refuses to start otherwise).
    pub target_epsilon: Option<f64>,
    /// The noise multiplier (instead of calibrating it to `target_epsilon`).
    pub noise_multiplier: Option<f64>,
    /// The most noise this recipe tolerates (beyond it the model does not learn): a target
    /// epsilon that needs more is refused before anything trains.
    pub max_noise_multiplier: Option<f64>,
    pub delta: f64,
    /// Per-example clipping norm.
    pub clip: f64,
    /// `poisson` (the accountant's assumption) or `shuffle`.
    pub sampling: String,
    /// `rdp` or `pld`.
    pub accountant: String,
}

impl Default for DpSection {
    fn default() -> Self {
        Self {
            target_epsilon: None,
            noise_multiplier: None,
            max_noise_multiplier: None,
            delta: 1e-5,
            clip: 1.0,
            sampling: "poisson".into(),
            accountant: "rdp".into(),
        }
    }
}

/// The Secret Sharer's canaries (Carlini et al. 2019).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanarySection {
    /// Template with typed slots: {digits:N}, {letters:N}, {alphabet=SYMBOLS:N}.
    pub template: String,
    /// Canaries per repetition count.
    pub per_repetition: usize,
    /// Repetition counts: each canary of a count is inserted that many times.
    pub repetitions: Vec<u32>,
    /// Canaries drawn like the others but never inserted (the chance baseline).
    pub held_out: usize,
    /// Add the template's characters to the vocabulary when the corpus lacks them (otherwise a
    /// template the vocabulary cannot write is refused).
    pub extend_vocab: bool,
}

impl Default for CanarySection {
    fn default() -> Self {
        Self {
            template: "my pin is {digits:4}".into(),
            per_repetition: 3,
            repetitions: vec![1, 4, 16, 64],
            held_out: 50,
            extend_vocab: false,
        }
    }
}

/// Which audits run on every variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditsSection {
    pub exposure: ExposureSection,
    pub extraction: ExtractionSection,
    /// Membership inference with shadow models; absent: not run.
    pub mia: Option<MiaSection>,
    pub lower_bounds: LowerBoundSection,
}

impl Default for AuditsSection {
    fn default() -> Self {
        Self {
            exposure: ExposureSection::default(),
            extraction: ExtractionSection::default(),
            mia: Some(MiaSection::default()),
            lower_bounds: LowerBoundSection::default(),
        }
    }
}

/// How exposure is measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureSection {
    /// `auto` (exact rank over all of R when |R| <= exact_limit), `exact` or `sampled`.
    pub method: String,
    pub exact_limit: u64,
    /// Reference candidates for the sampled exposures and the skew-normal fit.
    pub references: usize,
}

impl Default for ExposureSection {
    fn default() -> Self {
        Self {
            method: "auto".into(),
            exact_limit: 10_000_000,
            references: 4096,
        }
    }
}

/// Extraction by best-first search over the template's slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionSection {
    /// Trie nodes the search may expand; 0 skips extraction.
    pub budget: u64,
    /// A canary counts as extracted when it is among this many most likely candidates.
    pub top: usize,
}

impl Default for ExtractionSection {
    fn default() -> Self {
        Self {
            budget: 20_000,
            top: 10,
        }
    }
}

/// Membership inference against each variant, with shadow language models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiaSection {
    /// Attacks: loss, lira-online, lira-offline, rmia-online, rmia-offline, min-k, zlib.
    pub attacks: Vec<String>,
    /// Shadow models in complementary pairs (2 x this many models).
    pub shadow_pairs: usize,
    /// Epochs of every shadow model.
    pub epochs: usize,
    /// Batch size of every shadow model (each trains on half of the pool).
    pub batch_size: usize,
}

impl Default for MiaSection {
    fn default() -> Self {
        Self {
            attacks: vec!["loss".into(), "lira-online".into(), "rmia-online".into()],
            shadow_pairs: 2,
            epochs: 2,
            batch_size: 32,
        }
    }
}

/// Empirical lower bounds on epsilon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowerBoundSection {
    /// White-box audit (Dirac canary gradients inserted during training, each with probability
    /// 1/2; Steinke et al. 2023): this many canaries; 0 skips it.
    pub white_box_canaries: usize,
    /// Black-box one-run audit (random windows each included with probability 1/2, scored by
    /// their log-likelihood after training): this many canaries; 0 skips it.
    pub one_run_canaries: usize,
    /// Family-wise significance of the verdict: the probability that a correct DP run is called
    /// broken is at most this (Bonferroni over every reported bound).
    pub significance: f64,
}

impl Default for LowerBoundSection {
    fn default() -> Self {
        Self {
            white_box_canaries: 256,
            one_run_canaries: 256,
            significance: 0.05,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        let plain = Variant::default();
        let dp = Variant {
            name: "dp-eps8".into(),
            dp: Some(DpSection {
                target_epsilon: Some(8.0),
                ..DpSection::default()
            }),
            batch_size: Some(128),
            ..Variant::default()
        };
        Self {
            seed: 1,
            data: DataSection::default(),
            model: ModelSection::default(),
            training: TrainingSection::default(),
            variants: vec![plain, dp],
            canaries: CanarySection::default(),
            audits: AuditsSection::default(),
        }
    }
}

/// The attacks `audits.mia.attacks` accepts.
pub const MIA_ATTACKS: [&str; 7] = [
    "loss",
    "lira-online",
    "lira-offline",
    "rmia-online",
    "rmia-offline",
    "min-k",
    "zlib",
];

fn positive(field: String, x: f64) -> Result<()> {
    if x > 0.0 && x.is_finite() {
        Ok(())
    } else {
        invalid(field, x, "must be a finite number > 0")
    }
}

impl Variant {
    pub fn epochs(&self, t: &TrainingSection) -> usize {
        self.epochs.unwrap_or(t.epochs)
    }
    pub fn batch_size(&self, t: &TrainingSection) -> usize {
        self.batch_size.unwrap_or(t.batch_size)
    }
    pub fn lr(&self, t: &TrainingSection) -> f64 {
        self.lr.unwrap_or(t.lr)
    }
    /// plain, dp or regularised (what the report calls it).
    pub fn kind(&self) -> &'static str {
        match (&self.dp, self.dropout > 0.0 || self.weight_decay > 0.0) {
            (Some(_), _) => "dp",
            (None, true) => "regularised",
            (None, false) => "plain",
        }
    }

    fn validate(&self, at: &str) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return invalid(
                format!("{at}.name"),
                format!("{:?}", self.name),
                "use letters, digits, - and _ (it names the variant's folders)",
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid(format!("{at}.dropout"), self.dropout, "must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return invalid(
                format!("{at}.weight_decay"),
                self.weight_decay,
                "must be a finite number >= 0",
            );
        }
        if self.epochs == Some(0) {
            return invalid(format!("{at}.epochs"), 0, "must be at least 1");
        }
        if self.batch_size == Some(0) {
            return invalid(format!("{at}.batch_size"), 0, "must be at least 1");
        }
        if let Some(lr) = self.lr {
            positive(format!("{at}.lr"), lr)?;
        }
        if let Some(dp) = &self.dp {
            let at = format!("{at}.dp");
            if let Some(e) = dp.target_epsilon {
                positive(format!("{at}.target_epsilon"), e)?;
            }
            if let Some(s) = dp.noise_multiplier {
                positive(format!("{at}.noise_multiplier"), s)?;
            }
            if let Some(s) = dp.max_noise_multiplier {
                positive(format!("{at}.max_noise_multiplier"), s)?;
            }
            match (dp.target_epsilon, dp.noise_multiplier) {
                (Some(_), _) | (None, Some(_)) => {}
                (None, None) => {
                    return invalid(
                        format!("{at}.target_epsilon"),
                        "(missing)",
                        "a DP variant needs target_epsilon (or noise_multiplier)",
                    );
                }
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return invalid(format!("{at}.delta"), dp.delta, "must be in (0, 1)");
            }
            positive(format!("{at}.clip"), dp.clip)?;
            if !["poisson", "shuffle"].contains(&dp.sampling.as_str()) {
                return invalid(
                    format!("{at}.sampling"),
                    &dp.sampling,
                    "use poisson or shuffle",
                );
            }
            if !["rdp", "pld"].contains(&dp.accountant.as_str()) {
                return invalid(format!("{at}.accountant"), &dp.accountant, "use rdp or pld");
            }
        }
        Ok(())
    }
}

impl AuditConfig {
    /// Whether the data is a classifier dataset (`data.dataset`) rather than a text corpus.
    pub fn is_dataset(&self) -> bool {
        self.data.dataset.is_some()
    }

    /// The keys that do not apply to this config's data and model, with the reason: written in
    /// the file, each is an error ([`LoadedConfig::parse`]) rather than silently ignored. With
    /// a dataset the Secret Sharer's text canaries, exposure and extraction do not apply.
    pub fn inapplicable_keys(&self) -> Vec<(&'static str, &'static str)> {
        const DATASET: &str = "does not apply to a classifier dataset (data.dataset)";
        let mut keys = Vec::new();
        if self.is_dataset() {
            keys.push(("data.corpus", "excludes data.dataset: give one of them"));
            for k in [
                "data.level",
                "data.seq_len",
                "data.valid_fraction",
                "model.embed",
                "audits.exposure",
                "audits.extraction",
            ] {
                keys.push((k, DATASET));
            }
            keys.push((
                "canaries",
                "the Secret Sharer's canaries are text templates and do not apply to a classifier dataset (data.dataset); its one-run audit inserts relabelled examples (audits.lower_bounds.one_run_canaries)",
            ));
        }
        if self.model.kind != "gpt" {
            keys.push(("model.heads", "applies to model.kind = \"gpt\" only"));
            keys.push(("model.context", "applies to model.kind = \"gpt\" only"));
        } else {
            keys.push((
                "model.hidden",
                "does not apply to a gpt (its MLP is 4 x model.embed wide)",
            ));
        }
        keys
    }

    /// Every check that needs no data; errors name the field's dotted path.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        if d.corpus.is_empty() {
            return invalid(
                "data.corpus",
                "\"\"",
                "name a corpus (embedded, ptb, ...) or a file",
            );
        }
        if !["char", "word"].contains(&d.level.as_str()) {
            return invalid("data.level", &d.level, "use char or word");
        }
        if d.seq_len < 2 {
            return invalid("data.seq_len", d.seq_len, "must be at least 2");
        }
        if !(d.valid_fraction > 0.0 && d.valid_fraction < 1.0) {
            return invalid("data.valid_fraction", d.valid_fraction, "must be in (0, 1)");
        }
        if d.max_train.is_some_and(|m| m < 2) {
            return invalid(
                "data.max_train",
                d.max_train.unwrap_or(0),
                "must be at least 2",
            );
        }
        if let Some(ds) = &d.dataset
            && !DATASETS.contains(&ds.as_str())
        {
            return invalid(
                "data.dataset",
                ds,
                format!(
                    "use {} (or drop it and give data.corpus for text)",
                    DATASETS.join(", ")
                ),
            );
        }
        let m = &self.model;
        let models: &[&str] = if self.is_dataset() {
            &DATASET_MODELS
        } else {
            &TEXT_MODELS
        };
        if !models.contains(&m.kind.as_str()) {
            let data = if self.is_dataset() {
                "a classifier for data.dataset"
            } else {
                "a language model for the text corpus"
            };
            return invalid(
                "model.kind",
                &m.kind,
                format!("use {} ({data})", models.join(", ")),
            );
        }
        if m.embed == 0 {
            return invalid("model.embed", 0, "must be at least 1");
        }
        if m.hidden == 0 {
            return invalid("model.hidden", 0, "must be at least 1");
        }
        if m.kind == "gpt" {
            if !(1..=12).contains(&m.layers) {
                return invalid("model.layers", m.layers, "a gpt takes 1 to 12 blocks");
            }
            let heads = m.heads.unwrap_or(GPT_DEFAULT_HEADS);
            if heads == 0 || !m.embed.is_multiple_of(heads) {
                return invalid(
                    "model.heads",
                    heads,
                    format!("must be at least 1 and divide model.embed ({})", m.embed),
                );
            }
            let context = m.context.unwrap_or(GPT_DEFAULT_CONTEXT);
            if context < d.seq_len {
                return invalid(
                    "model.context",
                    context,
                    format!(
                        "must be at least data.seq_len ({}): the gpt reads a whole window",
                        d.seq_len
                    ),
                );
            }
        } else if !(1..=3).contains(&m.layers) {
            return invalid("model.layers", m.layers, "must be 1, 2 or 3");
        }
        let t = &self.training;
        if t.epochs == 0 {
            return invalid("training.epochs", 0, "must be at least 1");
        }
        if t.batch_size == 0 {
            return invalid("training.batch_size", 0, "must be at least 1");
        }
        if !["adam", "sgd"].contains(&t.optimizer.as_str()) {
            return invalid("training.optimizer", &t.optimizer, "use adam or sgd");
        }
        positive("training.lr".into(), t.lr)?;
        if self.variants.is_empty() {
            return invalid("variants", "[]", "give at least one [[variants]] table");
        }
        for (i, v) in self.variants.iter().enumerate() {
            v.validate(&format!("variants[{i}]"))?;
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return invalid(
                    format!("variants[{i}].name"),
                    format!("{:?}", v.name),
                    "another variant has this name",
                );
            }
        }
        let c = &self.canaries;
        // With a dataset the canaries are not used (and not written: see inapplicable_keys).
        if let Err(e) = CanaryTemplate::parse(&c.template) {
            return invalid(
                "canaries.template",
                format!("{:?}", c.template),
                e.to_string(),
            );
        }
        if c.per_repetition == 0 {
            return invalid("canaries.per_repetition", 0, "must be at least 1");
        }
        if c.repetitions.is_empty() || c.repetitions.contains(&0) {
            return invalid(
                "canaries.repetitions",
                format!("{:?}", c.repetitions),
                "give one or more counts >= 1",
            );
        }
        let a = &self.audits;
        if !["auto", "exact", "sampled"].contains(&a.exposure.method.as_str()) {
            return invalid(
                "audits.exposure.method",
                &a.exposure.method,
                "use auto, exact or sampled",
            );
        }
        if a.exposure.references < 2 {
            return invalid(
                "audits.exposure.references",
                a.exposure.references,
                "must be at least 2",
            );
        }
        if a.extraction.budget > 0 && a.extraction.top == 0 {
            return invalid("audits.extraction.top", 0, "must be at least 1");
        }
        if let Some(mia) = &a.mia {
            if mia.attacks.is_empty() {
                return invalid("audits.mia.attacks", "[]", "name at least one attack");
            }
            for (i, at) in mia.attacks.iter().enumerate() {
                if !MIA_ATTACKS.contains(&at.as_str()) {
                    return invalid(
                        format!("audits.mia.attacks[{i}]"),
                        at,
                        format!("use one of {}", MIA_ATTACKS.join(", ")),
                    );
                }
                if self.is_dataset() && LM_ONLY_ATTACKS.contains(&at.as_str()) {
                    return invalid(
                        format!("audits.mia.attacks[{i}]"),
                        at,
                        "reads token losses of a language model; a classifier is attacked on its logit confidence with loss, lira-* or rmia-*",
                    );
                }
            }
            if mia.shadow_pairs == 0 {
                return invalid(
                    "audits.mia.shadow_pairs",
                    0,
                    "must be at least 1 (2 shadow models)",
                );
            }
            if mia.epochs == 0 {
                return invalid("audits.mia.epochs", 0, "must be at least 1");
            }
            if mia.batch_size == 0 {
                return invalid("audits.mia.batch_size", 0, "must be at least 1");
            }
        }
        let s = a.lower_bounds.significance;
        if !(s > 0.0 && s < 1.0) {
            return invalid("audits.lower_bounds.significance", s, "must be in (0, 1)");
        }
        for (k, m) in [
            ("white_box_canaries", a.lower_bounds.white_box_canaries),
            ("one_run_canaries", a.lower_bounds.one_run_canaries),
        ] {
            if m == 1 {
                return invalid(
                    format!("audits.lower_bounds.{k}"),
                    m,
                    "use 0 (off) or at least 2",
                );
            }
        }
        Ok(())
    }
}

/// A config as read from its file: the text is kept so that errors found after parsing can be
/// located in it.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: AuditConfig,
    pub path: PathBuf,
    pub text: String,
}

impl LoadedConfig {
    /// Read and parse `path` (TOML); parse and type errors name the file, line and key.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(text, path)
    }

    /// Parse `text` (read from `path`, named in errors) and check it ([`AuditConfig::validate`]).
    pub fn parse(text: String, path: &Path) -> Result<Self> {
        let config: AuditConfig = crate::config::from_toml_str(&text, path)?;
        let loaded = Self {
            config,
            path: path.to_path_buf(),
            text,
        };
        loaded.config.validate().map_err(|e| loaded.locate(e))?;
        for (key, reason) in loaded.config.inapplicable_keys() {
            if key_written(&loaded.text, key) {
                return Err(loaded.locate(ExperimentError::Invalid {
                    field: key.to_string(),
                    value: format!("[{key}]"),
                    reason: reason.to_string(),
                }));
            }
        }
        Ok(loaded)
    }

    /// A setting's error ([`ExperimentError::Invalid`], whose field is a dotted key path) as an
    /// error naming this file, the key's line and the key; other errors pass unchanged.
    pub fn locate(&self, e: ExperimentError) -> ExperimentError {
        let ExperimentError::Invalid {
            field,
            value,
            reason,
        } = &e
        else {
            return e;
        };
        let line = key_line(&self.text, field);
        let message = format!("{value}: {reason}");
        let key = Some(field.clone());
        ExperimentError::ConfigFile {
            path: self.path.clone(),
            line,
            key,
            message,
            source: Box::new(e),
        }
    }
}

/// Split a dotted key path (`variants[1].dp.target_epsilon`) into keys and indices.
fn segments(field: &str) -> Vec<Result<&str, usize>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Ok(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                out.push(Err(i));
            }
        }
    }
    out
}

/// The 1-based line of `field` in the TOML `text`: the line of the deepest key of the path that
/// is written in the file (a key left at its default is located at its table).
pub fn key_line(text: &str, field: &str) -> Option<usize> {
    find_key(text, field).map(|(line, _)| line)
}

/// Whether every key of the dotted path `field` is written in the TOML `text`.
pub fn key_written(text: &str, field: &str) -> bool {
    find_key(text, field).is_some_and(|(_, whole)| whole)
}

/// The line of the deepest key of `field` written in `text`, and whether that is the whole path.
fn find_key(text: &str, field: &str) -> Option<(usize, bool)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let line_of = |at: usize| {
        text.as_bytes()[..at.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    };
    let mut best: Option<usize> = None;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    let segs = segments(field);
    let mut found = 0;
    for seg in &segs {
        match seg {
            Ok(name) => {
                let t = match (table, value.map(|v| v.get_ref())) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == *name) else {
                    break;
                };
                best = Some(k.span().start);
                value = Some(v);
                table = None;
            }
            Err(i) => {
                let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) else {
                    break;
                };
                let Some(v) = a.get(*i) else { break };
                best = Some(v.span().start);
                value = Some(v);
                table = None;
            }
        }
        found += 1;
    }
    best.map(|at| (line_of(at), found == segs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedConfig> {
        LoadedConfig::parse(text.to_string(), Path::new("audit.toml"))
    }

    #[test]
    fn the_demo_configs_validate() {
        for quick in [true, false] {
            let c = demo(quick, 8.0, None, 1);
            c.validate().unwrap();
            assert_eq!(c.variants[1].kind(), "dp");
        }
    }

    #[test]
    fn the_example_parses_and_validates() {
        let c = parse(EXAMPLE).unwrap().config;
        assert_eq!(c.variants.len(), 2);
        assert_eq!(c.variants[1].kind(), "dp");
        assert_eq!(c.variants[0].kind(), "plain");
        assert!(c.audits.mia.is_some());
        AuditConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_file_line_and_key() {
        let s = parse("seed = 1\n[model]\nhiden = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.starts_with("audit.toml line 3") && s.contains("hiden"),
            "{s}"
        );
        let s = parse("[training]\nepochs = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("line 2") && s.contains("key `training.epochs`"),
            "{s}"
        );
    }

    #[test]
    fn checks_after_parsing_name_the_line_and_key_of_the_setting() {
        let text = "[[variants]]\nname = \"a\"\n\n[[variants]]\nname = \"b\"\n[variants.dp]\ntarget_epsilon = -1.0\n";
        let s = parse(text).unwrap_err().to_string();
        assert!(
            s.starts_with("audit.toml line 7, key `variants[1].dp.target_epsilon`"),
            "{s}"
        );
        let s = parse("[canaries]\ntemplate = \"pin {digits:0}\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 2, key `canaries.template`"), "{s}");
        let s = parse("[audits.mia]\nattacks = [\"loss\", \"lyra\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("line 2, key `audits.mia.attacks[1]`") && s.contains("lyra"),
            "{s}"
        );
        // A setting missing from the file is located at the deepest key that is there.
        let s = parse("[[variants]]\nname = \"x\"\n[variants.dp]\ndelta = 1e-5\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("key `variants[0].dp.target_epsilon`") && s.contains("line 3"),
            "{s}"
        );
        let s = parse("[[variants]]\nname = \"x\"\n[[variants]]\nname = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 4, key `variants[1].name`"), "{s}");
    }

    #[test]
    fn the_dataset_example_parses_and_validates() {
        let c = parse(EXAMPLE_DATASET).unwrap().config;
        assert_eq!(c.data.dataset.as_deref(), Some("digits"));
        assert_eq!(c.model.kind, "mlp");
        assert_eq!(c.variants[1].kind(), "dp");
    }

    #[test]
    fn with_a_dataset_the_secret_sharer_keys_are_errors_naming_line_and_key() {
        let ds = "[data]\ndataset = \"digits\"\n[model]\nkind = \"mlp\"\n";
        let s = parse(&format!("{ds}[canaries]\nper_repetition = 2\n"))
            .unwrap_err()
            .to_string();
        assert!(
            s.starts_with("audit.toml line 5, key `canaries`") && s.contains("classifier"),
            "{s}"
        );
        let s = parse(&format!("{ds}[audits.extraction]\nbudget = 10\n"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 5, key `audits.extraction`"), "{s}");
        let s = parse("[data]\ndataset = \"digits\"\ncorpus = \"ptb\"\n[model]\nkind = \"mlp\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 3, key `data.corpus`"), "{s}");
        // A model for text with a dataset, and a dataset nobody knows.
        let s = parse("[data]\ndataset = \"digits\"\n[model]\nkind = \"lstm\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("line 4, key `model.kind`") && s.contains("mlp"),
            "{s}"
        );
        let s = parse("[data]\ndataset = \"cifar100\"\n[model]\nkind = \"mlp\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 2, key `data.dataset`"), "{s}");
        // Token-level attacks need a language model.
        let s = parse(&format!(
            "{ds}[audits.mia]\nattacks = [\"loss\", \"zlib\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(s.contains("key `audits.mia.attacks[1]`"), "{s}");
        // Left unwritten, the text settings are not errors.
        parse(ds).unwrap();
    }

    #[test]
    fn gpt_settings_are_checked_and_apply_to_a_gpt_only() {
        let gpt = "[model]\nkind = \"gpt\"\nembed = 32\n";
        parse(&format!("{gpt}heads = 4\ncontext = 64\n")).unwrap();
        let s = parse(&format!("{gpt}heads = 5\n")).unwrap_err().to_string();
        assert!(s.contains("line 4, key `model.heads`"), "{s}");
        let s = parse(&format!("[data]\nseq_len = 100\n{gpt}context = 64\n"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 6, key `model.context`"), "{s}");
        let s = parse(&format!("{gpt}hidden = 64\n"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 4, key `model.hidden`"), "{s}");
        let s = parse("[model]\nkind = \"lstm\"\nheads = 2\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 3, key `model.heads`"), "{s}");
    }
}
