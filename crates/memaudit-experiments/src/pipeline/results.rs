//! `results.json`: the typed results of an audit, with a version number. The schema is
//! documented in `docs/audit-results.schema.json` (JSON Schema draft 2020-12); the end-to-end
//! test checks every run's file against it. Non-finite numbers are `"inf"`, `"-inf"`, `"nan"`
//! ([`Num`]).
//!
//! Version history: 1, the first (text corpora only); 2, classifier datasets: `data` is either
//! the text summary of version 1 (unchanged) or a dataset summary ([`DataSummary`]), and a
//! variant's `exposure` and `extraction` are absent where they do not apply (classifiers) or
//! were not run, instead of `null`.

use serde::{Deserialize, Serialize};

use super::config::{AuditConfig, Variant};
use super::store::StageRecord;
use super::verdict::{BoundOutcome, Claim, Verdict};
use crate::num::Num;

/// The version of the `results.json` layout; bumped on any change a reader must know about.
pub const SCHEMA_VERSION: u32 = 2;

/// Everything an audit found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditResults {
    pub schema_version: u32,
    /// The configuration that produced these results.
    pub config: AuditConfig,
    pub data: DataSummary,
    pub variants: Vec<VariantResults>,
    pub verdict: Verdict,
    /// One plain-language line per variant (the report's top and the terminal summary).
    pub summary: Vec<String>,
    /// The caveat on choosing among variants (present when there are several).
    pub selection_caveat: Option<String>,
    /// How this run went: which stages ran or were skipped, and times. The only part of the
    /// file that differs between a resumed and an uninterrupted run.
    pub run: RunInfo,
}

/// Stages and times of one `memaudit audit` invocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub stages: Vec<StageRecord>,
    pub seconds: f64,
}

/// The data stage's findings: a text corpus with its canary space, or a classifier dataset.
/// Untagged: a text summary is written exactly as in version 1; a dataset summary is told
/// apart by its `dataset` key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataSummary {
    Text(TextDataSummary),
    Dataset(DatasetSummary),
}

impl DataSummary {
    /// Training examples before any canary is inserted (windows of text, or images): the N of
    /// the privacy accounting and of the shadow-model split.
    pub fn training_examples(&self) -> u64 {
        match self {
            Self::Text(t) => t.train_windows,
            Self::Dataset(d) => d.train_examples,
        }
    }

    /// What one training example is ("window" or "example"), for messages.
    pub fn example_word(&self) -> &'static str {
        match self {
            Self::Text(_) => "window",
            Self::Dataset(_) => "example",
        }
    }

    /// |R| of the Secret Sharer's canaries (text only).
    pub fn canary_space_size(&self) -> Option<f64> {
        match self {
            Self::Text(t) => Some(t.canary_space_size.0),
            Self::Dataset(_) => None,
        }
    }
}

/// A classifier dataset as trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// `digits`, `mnist` or `fashion-mnist`.
    pub dataset: String,
    /// SHA-256 of the training images' pixels and labels (before audit canaries).
    pub data_sha256: String,
    /// Training images (after `data.max_train`), before the one-run audit's canaries join.
    pub train_examples: u64,
    /// Held-out images: the validation set of the utility numbers and RMIA's population.
    pub test_examples: u64,
    pub classes: u64,
    /// [channels, height, width].
    pub input_shape: [u64; 3],
}

/// The data stage's findings on a text corpus: what was trained on, and the canary space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextDataSummary {
    pub corpus: String,
    pub level: String,
    /// SHA-256 of the training text (before canaries): a changed file reruns everything.
    pub text_sha256: String,
    /// Training windows before canaries are inserted.
    pub train_windows: u64,
    pub valid_windows: u64,
    pub vocab_size: u64,
    pub template: String,
    /// |R|, the number of possible canaries.
    pub canary_space_size: Num,
}

/// Validation metrics of a trained variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Utility {
    /// Mean cross-entropy (nats) on the validation set: per token on text windows, per image on
    /// a dataset's held-out images.
    pub valid_loss: Option<Num>,
    /// Next-token accuracy on the validation windows; classification accuracy on a dataset.
    pub valid_accuracy: Option<Num>,
    pub train_loss: Option<Num>,
}

/// One epoch of a training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: f64,
    pub train_loss: Option<Num>,
    pub valid_loss: Option<Num>,
    pub valid_accuracy: Option<Num>,
    /// The ledger's epsilon after this epoch (DP variants).
    pub epsilon: Option<Num>,
}

/// One canary's exposure (Carlini et al. 2019: log2 |R| - log2 rank).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryExposure {
    pub text: String,
    /// 0: never inserted (a chance baseline).
    pub repetitions: u32,
    pub exposure: Num,
    /// Exposure from the exact rank over all of R (else extrapolated from references).
    pub exact: bool,
    /// Found by the extraction search among the top candidates (`None`: not tried).
    pub extracted: Option<bool>,
}

/// Exposure of the canaries of one repetition count, after one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExposureAtEpoch {
    pub epoch: f64,
    pub repetitions: u32,
    pub mean_exposure: Num,
}

/// A skew-normal density (location, scale, shape), the Secret Sharer's fit to the reference
/// candidates' log-perplexities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkewNormalFit {
    pub location: f64,
    pub scale: f64,
    pub shape: f64,
}

/// The Secret Sharer's measurements of a variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExposureResults {
    /// `exact` or `sampled`.
    pub method: String,
    /// log2 |R|: the largest possible exposure.
    pub max_exposure: f64,
    pub canaries: Vec<CanaryExposure>,
    /// Log-perplexities (bits) of the reference candidates, and the skew-normal fit to them.
    pub reference_log_perplexities: Vec<Num>,
    pub skew_normal: Option<SkewNormalFit>,
    pub by_epoch: Vec<ExposureAtEpoch>,
}

/// Extraction per repetition count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractionCount {
    pub repetitions: u32,
    pub canaries: u64,
    pub extracted: u64,
}

/// The extraction search's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractionResults {
    pub budget: u64,
    pub top: u64,
    pub by_repetitions: Vec<ExtractionCount>,
}

/// One membership-inference attack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    pub attack: String,
    pub auc: Num,
    /// TPR at 0.1% and 1% FPR (LiRA's low-FPR metrics); "nan" where fewer than 10 false
    /// positives are expected at that rate (too few non-members to report it).
    pub tpr_at_0_1_fpr: Num,
    pub tpr_at_1_fpr: Num,
    /// Non-members the attack was scored on (what decides which FPRs are reportable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_members: Option<u64>,
    /// The ROC curve, (FPR, TPR) points (thinned to at most a few hundred).
    pub roc: Vec<[Num; 2]>,
}

/// Membership inference against a variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiaResults {
    pub shadow_models: u64,
    /// Target examples attacked (members and non-members).
    pub targets: u64,
    pub attacks: Vec<AttackResult>,
}

/// What the ledger claims for a variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    /// The claimed epsilon at `delta`, from the trained run's ledger (infinite: no DP).
    pub claimed_epsilon: Num,
    pub delta: f64,
    pub noise_multiplier: Option<Num>,
    pub steps: u64,
    pub accountant: Option<String>,
    /// The claim as the verdict uses it (with the mechanism for group privacy).
    pub claim: Claim,
}

/// Everything measured on one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantResults {
    pub name: String,
    /// plain, dp or regularised.
    pub kind: String,
    pub config: Variant,
    pub utility: Utility,
    pub privacy: Privacy,
    pub training_curve: Vec<EpochPoint>,
    /// The Secret Sharer's exposure (text); absent for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureResults>,
    /// Extraction (text, with a search budget); absent for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction: Option<ExtractionResults>,
    pub mia: Option<MiaResults>,
    /// This variant's bounds, as the verdict computed them.
    pub lower_bounds: Vec<BoundOutcome>,
}

/// The caveat on selecting among variants.
pub const SELECTION_CAVEAT: &str = "Selection caveat: training several variants on the same private data and releasing the best one is itself a mechanism. No single variant's epsilon covers that selection: the released model's guarantee must account for every variant that was trained and compared (e.g. by composition, or by private selection such as Papernot & Steinke 2022).";
