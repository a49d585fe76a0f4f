//! Membership inference as an experiment: LOSS, LiRA (Carlini et al. 2022), RMIA (Zarifzadeh
//! et al. 2024) and the language-model baselines (Min-K%, zlib), with LiRA's low-FPR metrics.
//!
//! Two sources of signals:
//! - a score file (`scores`: target and shadow signals of models trained elsewhere; the format
//!   is in docs/mia.md): nothing is trained;
//! - shadow models (`shadows.pairs` = P): a target and 2P shadow models of memaudit's own
//!   classifiers or language models, trained in complementary pairs on `data` through the
//!   engine, each an atomic unit of a resumable cache keyed by everything that changes it
//!   (`memaudit_audit::mia::shadow`), then scored on every example and on population points.
//!
//! The attacks and metrics are `memaudit_audit::mia`; this module turns a config into the
//! signals, runs them, and returns a typed [`MiaResult`] whose serialisation is the CLI's
//! `mia --json`.
//!
//! The attack settings sit at the top level under the keys of `memaudit_audit::mia::MiaConfig`
//! (`lira`, `rmia`, `lm`, `metrics`), so an attack-settings file of earlier versions
//! (`mia --config mia.json`) is a valid experiment config as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use memaudit_audit::mia::shadow::{self, Queries, ShadowPlan, TrainedModel};
use memaudit_audit::mia::{
    self as audit, Attack, AttackSelection, DpTradeoff, LiraConfig, LmConfig, MetricsConfig,
    MiaReport, Population, RmiaConfig, ScoreSet, SignalKind,
};
use memaudit_engine::augment::ShiftAugment;
use memaudit_engine::train::{Dataset, TrainConfig};
use memaudit_engine::{Model, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::{Num, opt};
use crate::observer::Observer;
use crate::optim::OptimSettings;
use crate::train::{
    self, InputShape, ModelSettings, Prepared, PrivacySettings, RunShape, build_model, flatten_for,
};

/// A membership-inference experiment (`memaudit mia`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiaConfig {
    /// A score file (.npz; docs/mia.md) of models trained elsewhere; excludes `shadows.pairs`.
    pub scores: Option<PathBuf>,
    /// Attacks: a comma-separated list (loss, lira-online, lira-offline,
    /// lira-offline-two-sided, rmia-online, rmia-offline, min-k, zlib) or all (skips those
    /// whose inputs are missing).
    pub attack: String,
    pub lira: LiraConfig,
    pub rmia: RmiaConfig,
    pub lm: LmConfig,
    pub metrics: MetricsConfig,
    /// Shadow-model training (with `pairs` set, instead of `scores`).
    pub shadows: ShadowSettings,
    pub data: DataSettings,
    pub model: ModelSettings,
    pub optim: OptimSettings,
    pub privacy: PrivacySettings,
}

impl Default for MiaConfig {
    fn default() -> Self {
        let attack = audit::MiaConfig::default();
        Self {
            scores: None,
            attack: "all".into(),
            lira: attack.lira,
            rmia: attack.rmia,
            lm: attack.lm,
            metrics: attack.metrics,
            shadows: ShadowSettings::default(),
            data: DataSettings::default(),
            model: ModelSettings::default(),
            optim: OptimSettings::default(),
            privacy: PrivacySettings::default(),
        }
    }
}

/// The target and shadow models (`--pairs`, `--epochs`, ... flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSettings {
    /// Train a target and 2 x P shadow models in complementary pairs on `data`.
    pub pairs: Option<usize>,
    /// Epochs of every model.
    pub epochs: usize,
    /// Expected batch size of every model (each trains on half of the pool).
    pub batch_size: usize,
    /// Seed of the membership splits and of every model (DP noise of shadows is seeded from it).
    pub seed: u64,
    /// The shadow-model cache (models keyed by everything that changes them; complete ones are
    /// reused). Required to train.
    pub cache: Option<PathBuf>,
    /// Train (or find) only model I (0..2P-1 shadow, 2P target) into the cache: one model per
    /// process for a scheduler ([`train_one`]).
    pub only_model: Option<usize>,
    /// Population points for RMIA: the first N test examples (no model trains on them).
    pub population: usize,
    /// Training-batch augmentation: shift (+-2 px per step and example; image data only) or
    /// none. The membership queries are then the same shifts.
    pub augment: Option<String>,
    /// With shift augmentation: membership queries per example, the identity first, then the
    /// shifts nearest to it (`None`: all 25).
    pub queries: Option<usize>,
    /// Target models evaluated, each against all the other models (the LiRA paper's
    /// leave-one-out evaluation), scores pooled: 1 is the separate target model alone; K > 1 adds
    /// shadow models 0..K-2 as targets. K targets give about K x pool / 2 non-members, so lower
    /// FPRs become reportable on a small pool.
    pub targets: usize,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            pairs: None,
            epochs: 5,
            batch_size: 64,
            seed: 0,
            cache: None,
            only_model: None,
            population: 1000,
            augment: None,
            queries: None,
            targets: 1,
        }
    }
}

impl MiaConfig {
    /// The attack settings as `memaudit_audit::mia` takes them.
    pub fn attack_config(&self) -> audit::MiaConfig {
        audit::MiaConfig {
            lira: self.lira.clone(),
            rmia: self.rmia.clone(),
            lm: self.lm.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The attacks asked for.
    pub fn selection(&self) -> Result<AttackSelection> {
        AttackSelection::parse(&self.attack)
            .or_else(|e| invalid("attack", &self.attack, e.to_string()))
    }
}

impl ExperimentConfig for MiaConfig {
    const NAME: &'static str = "mia";

    fn validate(&self) -> Result<()> {
        self.selection()?;
        self.attack_config()
            .validate()
            .map_err(|e| ExperimentError::Setting {
                field: "metrics".into(),
                source: Box::new(e),
            })?;
        let sh = &self.shadows;
        match (&self.scores, sh.pairs) {
            (Some(p), Some(_)) => {
                return invalid(
                    "scores",
                    p.display(),
                    "excludes `shadows.pairs`: attack a score file, or train shadow models",
                );
            }
            (None, None) => {
                return invalid(
                    "scores",
                    "(none)",
                    "give a score file (signals of models trained elsewhere; see docs/mia.md), or `data.data` and `shadows.pairs` to train shadow models",
                );
            }
            (Some(_), None) => return Ok(()),
            (None, Some(0)) => {
                return invalid("shadows.pairs", 0, "must be at least 1 (2 shadow models)");
            }
            (None, Some(_)) => {}
        }
        if sh.epochs == 0 {
            return invalid("shadows.epochs", 0, "must be at least 1");
        }
        if sh.batch_size == 0 {
            return invalid("shadows.batch_size", 0, "must be at least 1");
        }
        if let Some(p) = sh.pairs
            && (sh.targets == 0 || sh.targets > 2 * p + 1)
        {
            return invalid(
                "shadows.targets",
                sh.targets,
                format!(
                    "must be between 1 and the {} models (the target and 2 x {p} shadow models)",
                    2 * p + 1
                ),
            );
        }
        if let Some(a) = &sh.augment
            && !["shift", "none"].contains(&a.as_str())
        {
            return invalid("shadows.augment", a, "use shift or none");
        }
        self.data.validate()?;
        self.privacy.validate()?;
        Ok(())
    }
}

/// One attack's numbers as `mia --json` writes them.
#[derive(Clone, Debug, Serialize)]
pub struct AttackSummary {
    pub attack: String,
    pub auc: Option<Num>,
    pub balanced_accuracy: Option<Num>,
    /// TPR at each configured FPR (keys: the FPR as written, "0.01"), where at least the
    /// configured number of false positives is expected; the others are in
    /// `tpr_at_fpr_skipped` with the reason.
    pub tpr_at_fpr: BTreeMap<String, Num>,
    pub tpr_at_fpr_ci: BTreeMap<String, TprInterval>,
    pub tpr_at_fpr_skipped: BTreeMap<String, Option<String>>,
    pub members: Option<u64>,
    pub non_members: Option<u64>,
    pub per_class: Vec<ClassSummary>,
    pub notes: Vec<String>,
}

/// The Clopper-Pearson interval of a TPR and the threshold that reached it.
#[derive(Clone, Debug, Serialize)]
pub struct TprInterval {
    pub lower: Num,
    pub upper: Num,
    pub fpr: Option<Num>,
    pub threshold: Option<Num>,
    pub true_positives: Option<u64>,
}

/// One class's AUC and balanced accuracy.
#[derive(Clone, Debug, Serialize)]
pub struct ClassSummary {
    pub class: i64,
    pub examples: usize,
    pub auc: Option<Num>,
    pub balanced_accuracy: Option<Num>,
}

/// An attack left out, and why.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedSummary {
    pub attack: String,
    pub reason: String,
}

/// What shadow-model training adds to the result.
#[derive(Clone, Debug, Serialize)]
pub struct ShadowSummary {
    pub data: String,
    /// The pool's hash (inputs, labels, order): part of every cache key.
    pub data_hash: String,
    pub pairs: usize,
    pub seed: u64,
    pub augment: Option<ShiftAugment>,
    /// The membership queries (dy, dx), identity first.
    pub query_shifts: Vec<(i64, i64)>,
    /// Target models evaluated (the separate target, then shadow models 0..), scores pooled.
    pub targets: usize,
    pub cache: String,
    pub models_trained: usize,
    pub models_reused: usize,
    /// The training configuration of every model (its seed replaced per model).
    pub train: TrainConfig,
    pub train_seconds: Num,
    /// Private models: each attack's ROC against TPR <= e^eps FPR + delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp_tradeoff: Option<BTreeMap<String, DpTradeoff>>,
}

/// The result of a membership-inference experiment. Serialised, it is `mia --json`.
#[derive(Clone, Debug, Serialize)]
pub struct MiaResult {
    pub examples: usize,
    pub shadow_models: usize,
    pub queries: usize,
    pub signal_kind: String,
    pub population: Option<usize>,
    pub attacks: Vec<AttackSummary>,
    pub skipped: Vec<SkippedSummary>,
    /// The attack settings used.
    pub config: audit::MiaConfig,
    /// The score file attacked (score-file runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<String>,
    /// Shadow-model runs: the models and their training.
    #[serde(flatten)]
    pub shadows: Option<ShadowSummary>,
    /// Seconds the attacks took (training excluded).
    pub seconds: Num,
    /// Files a front end wrote from this result (set by it; empty from `run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// The full report (per-example scores, ROC curves) for files and plots.
    #[serde(skip)]
    pub report: MiaReport,
    /// The signals attacked (LiRA's; written as `scores.npz` by shadow runs).
    #[serde(skip)]
    pub set: ScoreSet,
    /// The (epsilon, delta) line of private shadow models, for ROC plots.
    #[serde(skip)]
    pub dp_line: Option<(f64, f64)>,
}

impl MiaResult {
    fn new(report: MiaReport, set: ScoreSet, seconds: f64) -> Self {
        Self {
            examples: report.examples,
            shadow_models: report.shadow_models,
            queries: report.queries,
            signal_kind: report.signal_kind.name().into(),
            population: report.population,
            attacks: report.attacks.iter().map(summary).collect(),
            skipped: report
                .skipped
                .iter()
                .map(|s| SkippedSummary {
                    attack: s.attack.name().into(),
                    reason: s.reason.clone(),
                })
                .collect(),
            config: report.config.clone(),
            scores: None,
            shadows: None,
            seconds: Num(seconds),
            files: Vec::new(),
            report,
            set,
            dp_line: None,
        }
    }
}

fn summary(a: &audit::AttackResult) -> AttackSummary {
    let mut tpr = BTreeMap::new();
    let mut ci = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    if let Some(m) = &a.metrics {
        for t in &m.tpr_at_fpr {
            let key = format!("{}", t.target_fpr);
            match (t.tpr, t.tpr_ci) {
                (Some(v), Some((lo, hi))) => {
                    tpr.insert(key.clone(), Num(v));
                    ci.insert(
                        key,
                        TprInterval {
                            lower: Num(lo),
                            upper: Num(hi),
                            fpr: opt(t.fpr),
                            threshold: opt(t.threshold),
                            true_positives: t.true_positives,
                        },
                    );
                }
                _ => {
                    skipped.insert(key, t.skipped.clone());
                }
            }
        }
    }
    AttackSummary {
        attack: a.attack.name().into(),
        auc: a.metrics.as_ref().map(|m| Num(m.auc)),
        balanced_accuracy: a.metrics.as_ref().map(|m| Num(m.balanced_accuracy)),
        tpr_at_fpr: tpr,
        tpr_at_fpr_ci: ci,
        tpr_at_fpr_skipped: skipped,
        members: a.metrics.as_ref().map(|m| m.members),
        non_members: a.metrics.as_ref().map(|m| m.non_members),
        per_class: a
            .per_class
            .iter()
            .map(|c| ClassSummary {
                class: c.class,
                examples: c.examples,
                auc: c.metrics.as_ref().map(|m| Num(m.auc)),
                balanced_accuracy: c.metrics.as_ref().map(|m| Num(m.balanced_accuracy)),
            })
            .collect(),
        notes: a.notes.clone(),
    }
}

/// Run the experiment: attack the score file, or train (or find in the cache) every shadow
/// model, score and attack. `shadows.only_model` must be unset (see [`train_one`]).
pub fn run(cfg: &MiaConfig, observer: &mut dyn Observer) -> Result<MiaResult> {
    cfg.validate()?;
    if let Some(path) = &cfg.scores {
        return run_scores(cfg, path, observer);
    }
    if let Some(i) = cfg.shadows.only_model {
        return invalid(
            "shadows.only_model",
            i,
            "trains one model and attacks nothing: call mia::train_one",
        );
    }
    let job = ShadowJob::prepare(cfg, observer)?;
    let started = Instant::now();
    let mut models = Vec::with_capacity(job.plan.models());
    for i in 0..job.plan.models() {
        // A safe point: every model before this one is a complete unit of the cache, so a
        // rerun reuses them and trains from model i.
        if observer.cancelled() {
            return Err(ExperimentError::cancelled(format!(
                "before shadow model {i}"
            )));
        }
        observer.progress("shadow models", i as u64, job.plan.models() as u64);
        models.push(job.train_model(i, observer)?);
    }
    let train_seconds = started.elapsed().as_secs_f64();
    job.attack(cfg, &models, train_seconds, observer)
}

fn scores_error(path: &Path) -> impl Fn(audit::MiaError) -> ExperimentError + '_ {
    move |e| ExperimentError::Setting {
        field: "scores".into(),
        source: Box::new(ScoreFileError {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A score file's error, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ScoreFileError {
    pub path: PathBuf,
    #[source]
    pub source: audit::MiaError,
}

fn run_scores(cfg: &MiaConfig, path: &Path, observer: &mut dyn Observer) -> Result<MiaResult> {
    let selection = cfg.selection()?;
    let set = audit::npz::read_score_file(path).map_err(scores_error(path))?;
    observer.note(&format!(
        "{}: {} examples, {} shadow models, {} queries, signal {}{}",
        path.display(),
        set.n(),
        set.shadows(),
        set.queries(),
        set.signal_kind().name(),
        set.population()
            .map_or(String::new(), |p| format!(", {} population points", p.n))
    ));
    let started = Instant::now();
    let report = audit::run(&set, &selection, &cfg.attack_config()).map_err(scores_error(path))?;
    let mut result = MiaResult::new(report, set, started.elapsed().as_secs_f64());
    result.scores = Some(path.display().to_string());
    Ok(result)
}

/// What one model of a shadow plan is (for notes and errors).
pub fn role(plan: &ShadowPlan, i: usize) -> String {
    if i == plan.target_index() {
        "target".to_string()
    } else {
        format!("pair {}, side {}", i / 2, i % 2)
    }
}

/// The outcome of [`train_one`]: one model trained into the cache or found there.
#[derive(Clone, Debug, Serialize)]
pub struct ModelOutcome {
    pub model: usize,
    pub role: String,
    pub key: String,
    pub reused: bool,
    pub path: String,
    pub seconds: Num,
    pub cache: String,
}

/// Train (or find) only model `shadows.only_model` of the plan into the cache: one model per
/// process for a scheduler.
pub fn train_one(cfg: &MiaConfig, observer: &mut dyn Observer) -> Result<ModelOutcome> {
    cfg.validate()?;
    let Some(i) = cfg.shadows.only_model else {
        return invalid("shadows.only_model", "(none)", "name the model to train");
    };
    let job = ShadowJob::prepare(cfg, observer)?;
    if i >= job.plan.models() {
        return invalid(
            "shadows.only_model",
            i,
            format!(
                "the plan has models 0..={} ({} shadow, {} target)",
                job.plan.target_index(),
                job.plan.target_index(),
                job.plan.target_index()
            ),
        );
    }
    let m = job.train_model(i, observer)?;
    Ok(ModelOutcome {
        model: m.index,
        role: role(&job.plan, m.index),
        key: m.key,
        reused: m.reused,
        path: m.path.display().to_string(),
        seconds: Num(m.seconds),
        cache: job.cache.display().to_string(),
    })
}

/// A shadow-model experiment ready to train: the data, the plan of every model, the cache.
/// Scale-out shards train their share of [`ShadowPlan::models_of_shard`] with
/// [`ShadowJob::train_model`].
pub struct ShadowJob {
    pub plan: ShadowPlan,
    pub cache: PathBuf,
    pub prepared: Prepared,
    pub model: Model,
    pub model_cfg: ModelConfig,
    pub queries: Queries,
    /// Language-model windows (the signal is the sequence log-likelihood).
    pub lm: bool,
}

impl ShadowJob {
    /// Load the data, check that it splits into pairs, build the training configuration
    /// (noise calibrated for a target epsilon: each model trains on half the pool, so
    /// privacy is for n / 2 examples) and open the cache.
    pub fn prepare(cfg: &MiaConfig, observer: &mut dyn Observer) -> Result<Self> {
        let sh = &cfg.shadows;
        let pairs = sh.pairs.unwrap_or(0);
        let prepared = train::prepare(&cfg.data)?;
        let lm = matches!(prepared.input, InputShape::Tokens { .. });
        if !lm
            && !matches!(
                prepared.input,
                InputShape::Image { .. } | InputShape::Flat { .. }
            )
        {
            return invalid(
                "data.data",
                &cfg.data.data,
                "shadow training supports classifier datasets with dense inputs (digits, mnist, fashion-mnist, adult) and language-model text (ptb, embedded, ...); for other models write a score file (docs/mia.md)",
            );
        }
        let model_cfg = cfg.model.config(&prepared.input)?;
        let prepared = flatten_for(&model_cfg, prepared);
        let model = build_model(&model_cfg)?;
        let n = prepared.train.len();
        if n < 2 || sh.batch_size > n / 2 {
            return invalid(
                "shadows.batch_size",
                sh.batch_size,
                format!(
                    "`data.data` {}: {n} examples are too small to split into pairs (each model trains on a half of {})",
                    cfg.data.data,
                    n / 2
                ),
            );
        }
        let Some(cache) = sh.cache.clone() else {
            return invalid(
                "shadows.cache",
                "(none)",
                "a cache folder is needed to train shadow models",
            );
        };
        let train = train::train_config(
            &cfg.privacy,
            &cfg.optim,
            RunShape {
                epochs: sh.epochs,
                batch_size: sh.batch_size,
                seed: sh.seed,
            },
            &model,
            &model_cfg,
            n / 2,
            observer,
        )?;
        let data_error = |e: audit::MiaError| ExperimentError::Setting {
            field: "data.data".into(),
            source: Box::new(e),
        };
        let hash = shadow::dataset_hash(prepared.train.as_ref()).map_err(data_error)?;
        let augment = match (sh.augment.as_deref(), &prepared.input) {
            (None | Some("none"), _) => None,
            (
                Some(_),
                InputShape::Image {
                    channels,
                    height,
                    width,
                    ..
                },
            ) => Some(
                ShiftAugment::new(ShiftAugment::DEFAULT_MAX_SHIFT, *channels, *height, *width)
                    .map_err(|e| ExperimentError::Setting {
                        field: "shadows.augment".into(),
                        source: Box::new(e),
                    })?,
            ),
            (Some(a), _) => {
                return invalid(
                    "shadows.augment",
                    a,
                    format!(
                        "`data.data` {} is not an image dataset (shifts apply to images: digits, mnist, fashion-mnist)",
                        cfg.data.data
                    ),
                );
            }
        };
        let queries = match (augment, sh.queries) {
            (None, Some(k)) if k != 1 => {
                return invalid(
                    "shadows.queries",
                    k,
                    "without `shadows.augment` shift there is only the identity query",
                );
            }
            (None, _) => Queries::identity(),
            (Some(a), k) => Queries::shifts(a, k.unwrap_or(a.queries().len())).map_err(|e| {
                ExperimentError::Setting {
                    field: "shadows.queries".into(),
                    source: Box::new(e),
                }
            })?,
        };
        let plan = ShadowPlan::new(train, hash, n, pairs, sh.seed)
            .map_err(data_error)?
            .with_augment(augment);
        shadow::open_cache(&cache).map_err(|e| ExperimentError::Setting {
            field: "shadows.cache".into(),
            source: Box::new(e),
        })?;
        Ok(Self {
            plan,
            cache,
            prepared,
            model,
            model_cfg,
            queries,
            lm,
        })
    }

    /// Model `i` from the cache, or trained on its half of the pool into the cache.
    pub fn train_model(&self, i: usize, observer: &mut dyn Observer) -> Result<TrainedModel> {
        let m = shadow::train_or_reuse(&self.plan, i, &self.cache, self.prepared.train.as_ref())
            .map_err(|e| ExperimentError::Model {
                what: format!("model {i} ({})", role(&self.plan, i)),
                source: Box::new(e),
            })?;
        if m.reused {
            observer.note(&format!(
                "model {i} ({}): reused from the cache, key {}",
                role(&self.plan, i),
                m.key
            ));
        } else {
            observer.note(&format!(
                "model {i} ({}): trained in {:.1}s, key {}",
                role(&self.plan, i),
                m.seconds,
                m.key
            ));
        }
        Ok(m)
    }

    /// Score every model (all of the plan's, in index order) on the pool and the population
    /// points and run the attacks.
    pub fn attack(
        &self,
        cfg: &MiaConfig,
        models: &[TrainedModel],
        train_seconds: f64,
        observer: &mut dyn Observer,
    ) -> Result<MiaResult> {
        let plan = &self.plan;
        let selection = cfg.selection()?;
        let attack_cfg = cfg.attack_config();
        let pool = self.prepared.train.as_ref();
        let n = pool.len();
        let pairs = plan.pairs;
        let k = 2 * pairs;
        let signal_error = |e: audit::MiaError| -> ExperimentError { e.into() };
        // Population points: the first N validation examples (no model trains on them).
        let population = self
            .prepared
            .valid
            .as_deref()
            .filter(|v| !v.is_empty() && cfg.shadows.population > 0);
        let pop_subset = population.map(|v| shadow::Subset {
            inner: v,
            idx: (0..v.len().min(cfg.shadows.population)).collect(),
        });
        let t = attack_cfg.rmia.temperature;
        let mut phi = Vec::with_capacity(models.len());
        let mut lp = Vec::with_capacity(models.len());
        let mut pop_phi = Vec::with_capacity(models.len());
        let mut pop_lp = Vec::with_capacity(models.len());
        // The evaluated targets: the separate target model, then shadow models 0.. when
        // `shadows.targets` > 1 (each against all the other models).
        let targets: Vec<usize> = std::iter::once(k)
            .chain(0..cfg.shadows.targets.saturating_sub(1))
            .collect();
        // LMs: each target's per-token log-probabilities (Min-K%, zlib).
        let mut target_tokens: Vec<Option<Vec<Vec<f64>>>> = vec![None; models.len()];
        for (done, m) in models.iter().enumerate() {
            observer.progress("scoring", done as u64, models.len() as u64);
            if self.lm {
                let (seq, tok) =
                    shadow::lm_signals(&self.model, &m.params, pool).map_err(signal_error)?;
                phi.push(seq);
                if targets.contains(&m.index) {
                    target_tokens[m.index] = Some(tok);
                }
                if let Some(p) = &pop_subset {
                    let (seq, _) = shadow::lm_signals(&self.model, &m.params, p as &dyn Dataset)
                        .map_err(signal_error)?;
                    pop_phi.push(seq);
                }
                continue;
            }
            let (a, b) = shadow::signals(&self.model, &m.params, pool, t, &self.queries)
                .map_err(signal_error)?;
            phi.push(a);
            lp.push(b);
            if let Some(p) = &pop_subset {
                let (a, b) =
                    shadow::signals(&self.model, &m.params, p as &dyn Dataset, t, &self.queries)
                        .map_err(signal_error)?;
                pop_phi.push(a);
                pop_lp.push(b);
            }
        }
        observer.progress("scoring", models.len() as u64, models.len() as u64);
        let member: Vec<Vec<bool>> = (0..plan.models()).map(|i| plan.membership(i)).collect();
        let q = self.queries.len();
        let labels = if self.lm {
            vec![]
        } else {
            shadow::labels(pool)
        };
        // One set per target: every model's signals as "shadows" (the target included), then
        // each target's set is that set without it, so target k (the separate one) sees shadow
        // models 0..k in order, and shadow model m sees the others and the separate target.
        let build =
            |sig: &[Vec<f64>], pop: &[Vec<f64>], kind: SignalKind| -> Result<Vec<ScoreSet>> {
                let mut every = ScoreSet::new(
                    n,
                    q,
                    sig[k].clone(),
                    k + 1,
                    sig.concat(),
                    member.concat(),
                    kind,
                )?;
                if !pop.is_empty() {
                    every = every.with_population(Population {
                        n: pop[k].len() / q,
                        target: pop[k].clone(),
                        shadow: pop.concat(),
                    })?;
                }
                targets
                    .iter()
                    .map(|&m| {
                        let set = every.leave_one_out(m)?;
                        if labels.is_empty() {
                            Ok(set)
                        } else {
                            Ok(set.with_class(labels.clone())?)
                        }
                    })
                    .collect()
            };
        // The rows the report's scores follow: the one target's set, or the targets' sets
        // stacked (population points belong to one target and are left out of the stack).
        let rows_of = |mut sets: Vec<ScoreSet>| -> Result<ScoreSet> {
            Ok(if sets.len() == 1 {
                sets.remove(0)
            } else {
                ScoreSet::stack(&sets)?
            })
        };
        let attack_started = Instant::now();
        let (phi_set, mut report) = if self.lm {
            // One signal, the sequence log-likelihood, for LiRA and RMIA; each target's
            // per-token log-probabilities and the windows' text for the reference-free
            // baselines.
            let texts = window_texts(pool, self.prepared.tokenizer.as_ref());
            let sets = build(&phi, &pop_phi, SignalKind::LogLikelihood)?
                .into_iter()
                .zip(&targets)
                .map(|(mut set, &m)| {
                    if let Some(tok) = target_tokens[m].take() {
                        set = set.with_token_logprob(tok)?;
                    }
                    if let Some(texts) = &texts {
                        set = set.with_text(texts.clone())?;
                    }
                    Ok(set)
                })
                .collect::<Result<Vec<_>>>()?;
            let report = audit::run_pooled(&sets, &selection, &attack_cfg)?;
            (rows_of(sets)?, report)
        } else {
            let phi_sets = build(&phi, &pop_phi, SignalKind::LogitConfidence)?;
            // RMIA's Pr(x|θ) = softmax(z/T)_y needs the logits, not phi: its own set of
            // log-probabilities.
            let lp_sets = build(&lp, &pop_lp, SignalKind::LogLikelihood)?;
            let mut report = audit::run_pooled(&phi_sets, &selection, &attack_cfg)?;
            let rmia_wanted: Vec<Attack> = report
                .attacks
                .iter()
                .map(|a| a.attack)
                .filter(|a| matches!(a, Attack::RmiaOnline | Attack::RmiaOffline))
                .collect();
            if !rmia_wanted.is_empty() {
                let r =
                    audit::run_pooled(&lp_sets, &AttackSelection::Only(rmia_wanted), &attack_cfg)?;
                for mut a in r.attacks {
                    a.notes.push(format!("Pr(x|θ) = softmax(logits / {t})_y"));
                    if let Some(slot) = report.attacks.iter_mut().find(|b| b.attack == a.attack) {
                        *slot = a;
                    }
                }
            }
            (rows_of(phi_sets)?, report)
        };
        let attack_seconds = attack_started.elapsed().as_secs_f64();
        // Private models: how each attack's ROC sits against TPR <= e^eps FPR + delta.
        let dp_line = cfg
            .privacy
            .target_epsilon
            .filter(|_| plan.train.privacy.is_some())
            .map(|eps| (eps, cfg.privacy.delta));
        let mut tradeoffs = BTreeMap::new();
        if let Some((eps, delta)) = dp_line {
            for a in &mut report.attacks {
                if let Some(m) = &a.metrics {
                    let t = audit::dp_tradeoff(&m.roc, eps, delta, attack_cfg.metrics.confidence);
                    a.notes.push(format!(
                        "(eps {eps}, delta {delta})-DP: max TPR - (e^eps FPR + delta) = {:.4} at FPR {:.4}, TPR {:.4}; {} ROC points significantly above the line",
                        t.max_excess, t.at.0, t.at.1, t.significant_violations
                    ));
                    tradeoffs.insert(a.attack.name().to_string(), t);
                }
            }
        }
        let trained = models.iter().filter(|m| !m.reused).count();
        let mut result = MiaResult::new(report, phi_set, attack_seconds);
        result.dp_line = dp_line;
        result.shadows = Some(ShadowSummary {
            data: cfg.data.data.clone(),
            data_hash: plan.data_hash.clone(),
            pairs,
            seed: cfg.shadows.seed,
            augment: plan.augment,
            query_shifts: self.queries.shifts_list().to_vec(),
            targets: targets.len(),
            cache: self.cache.display().to_string(),
            models_trained: trained,
            models_reused: models.len() - trained,
            train: plan.train.clone(),
            train_seconds: Num(train_seconds),
            dp_tradeoff: dp_line.map(|_| tradeoffs),
        });
        Ok(result)
    }
}

/// Each window's text (the zlib baseline), when the data came with a tokenizer.
fn window_texts(
    pool: &dyn Dataset,
    tokenizer: Option<&memaudit_data::tokenizer::Tokenizer>,
) -> Option<Vec<Vec<u8>>> {
    let tok = tokenizer?;
    let idx: Vec<usize> = (0..pool.len()).collect();
    let mut out = Vec::with_capacity(pool.len());
    for c in idx.chunks(256) {
        let b = pool.batch(c);
        let memaudit_engine::Value::Tokens(t) = &b.input else {
            return None;
        };
        for j in 0..t.batch {
            // The window's tokens: its inputs and, for the last position, its final target.
            let mut ids: Vec<u32> = (0..t.seq_len).map(|s| t.ids[s * t.batch + j]).collect();
            ids.push(b.targets[(t.seq_len - 1) * t.batch + j]);
            out.push(tok.decode(&ids).ok()?.into_bytes());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullObserver;
    use crate::config;

    #[test]
    fn an_attack_settings_file_of_earlier_versions_is_a_config() {
        let old = r#"{"lira": {"variance": "global"}, "metrics": {"fpr_targets": [0.05, 0.01]}}"#;
        let c: MiaConfig = config::from_json_str(old, Path::new("mia.json")).unwrap();
        assert_eq!(c.lira.variance, audit::VarianceMode::Global);
        assert_eq!(c.metrics.fpr_targets, vec![0.05, 0.01]);
        assert_eq!(c.shadows, ShadowSettings::default());
        // Neither a score file nor pairs: the error names the setting.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("scores"), "{e}");
    }

    #[test]
    fn shadow_models_on_digits_train_then_come_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
            attack = "loss,lira-offline"
            [shadows]
            pairs = 1
            epochs = 1
            batch_size = 32
            population = 50
            cache = "{}"
            [data]
            data = "digits"
            max_train = 200
            [model]
            hidden = [8]
            "#,
            dir.path().join("cache").display()
        );
        let cfg: MiaConfig = config::from_toml_str(&toml, Path::new("t.toml")).unwrap();
        let first = run(&cfg, &mut NullObserver).unwrap();
        let s = first.shadows.as_ref().unwrap();
        assert_eq!((s.models_trained, s.models_reused), (3, 0));
        assert_eq!(first.examples, 200);
        assert_eq!(first.shadow_models, 2);
        let again = run(&cfg, &mut NullObserver).unwrap();
        let s = again.shadows.as_ref().unwrap();
        assert_eq!((s.models_trained, s.models_reused), (0, 3));
        // The same models give the same scores: the JSON (timings aside) is identical.
        let strip = |r: &MiaResult| {
            let mut v = serde_json::to_value(r).unwrap();
            for k in [
                "seconds",
                "train_seconds",
                "models_trained",
                "models_reused",
            ] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(strip(&first), strip(&again));
        // One model per process.
        let mut one = cfg.clone();
        one.shadows.only_model = Some(1);
        assert!(train_one(&one, &mut NullObserver).unwrap().reused);
        one.shadows.only_model = Some(3);
        let e = train_one(&one, &mut NullObserver).unwrap_err().to_string();
        assert!(e.starts_with("shadows.only_model 3"), "{e}");
    }

    /// A config `memaudit mia --print-config --json` wrote on main before the settings were
    /// unified (issue 13: 224cc35, `mia --pairs 2 --data digits --model mlp --hidden 32
    /// --target-epsilon 3 --epochs 2 --batch-size 32 --cache /tmp/c --augment shift --queries
    /// 5`) still loads, validates and serialises its keys with the same values, and its shadow
    /// models get the noise main calibrated for them: 0.989144315488842, the
    /// `train.privacy.noise_multiplier` of main's `mia --json` with these data, batch, epochs
    /// and target (each model trains on half of digits' 1,348 training images).
    #[test]
    fn a_config_printed_before_the_settings_were_unified_loads_and_calibrates_the_same() {
        let printed = r#"{"attack":"all","data":{"data":"digits","data_dir":null,"level":"char","max_train":null,"seq_len":50,"standardize":false,"valid_fraction":0.1,"vocab_size":10000},"lira":{"center":"median","missing":"error","per_example_min":32,"variance":"auto"},"lm":{"min_k_fraction":0.2},"metrics":{"confidence":0.95,"fpr_targets":[0.01,0.001,0.0001],"min_expected_false_positives":10.0},"model":{"activation":"relu","dropout":0.0,"embed":32,"gelu":"gelu-tanh","gpt_context":128,"gpt_heads":4,"gpt_layers":2,"gpt_untied":false,"gpt_width":128,"hidden":[32],"input_dropout":0.0,"model":"mlp","rnn_hidden":200,"rnn_layers":2},"optim":{"gamma":0.10000000149011612,"lr":null,"momentum":0.0,"nesterov":false,"optimizer":null,"schedule":"constant","step_every":10,"weight_decay":0.0},"privacy":{"accountant":"rdp","adaptive_clip":false,"clip":null,"clip_count_stddev":null,"clip_lr":0.2,"clip_per_layer":null,"delta":0.00001,"max_epsilon":null,"noise_multiplier":null,"physical_batch":null,"sampling":null,"seeded_noise":false,"target_epsilon":3.0,"target_quantile":0.5},"rmia":{"a":null,"a_few_references":0.3,"gamma":1.0,"temperature":1.0,"tuning_reference":0},"scores":null,"shadows":{"augment":"shift","batch_size":32,"cache":"/tmp/c","epochs":2,"only_model":null,"pairs":2,"population":1000,"queries":5,"seed":0}}"#;
        let mut cfg: MiaConfig = config::from_json_str(printed, Path::new("mia.json")).unwrap();
        cfg.validate().unwrap();
        // Every key it printed comes back with its value (keys added since, such as
        // `shadows.targets`, come back too, at their defaults).
        fn holds(now: &serde_json::Value, then: &serde_json::Value, at: &str) {
            match then {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        assert!(now.get(k).is_some(), "{at}.{k} is gone");
                        holds(&now[k], v, &format!("{at}.{k}"));
                    }
                }
                v => assert_eq!(&now, &v, "{at}"),
            }
        }
        let printed_value: serde_json::Value = serde_json::from_str(printed).unwrap();
        holds(&serde_json::to_value(&cfg).unwrap(), &printed_value, "");
        let dir = tempfile::tempdir().unwrap();
        cfg.shadows.cache = Some(dir.path().join("cache"));
        let job = ShadowJob::prepare(&cfg, &mut NullObserver).unwrap();
        let sigma = job.plan.train.privacy.as_ref().unwrap().noise_multiplier;
        // Relative 1e-12: the same deterministic calibration; only libm rounding could differ.
        assert!(
            ((sigma - 0.989144315488842) / 0.989144315488842).abs() < 1e-12,
            "{sigma:?}"
        );
        assert_eq!(job.prepared.train.len(), 1348);
    }
}
