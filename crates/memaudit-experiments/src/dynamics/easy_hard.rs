//! `dynamics easy-hard`: easy and hard examples (Arpit et al. §3.1, Fig. 1). Train one epoch
//! from many initialisations and data orders on real, randX and randY data, and record each
//! training example's misclassification rate over the runs; compare their spread with identical
//! Binomial coins.

use std::time::Instant;

use memaudit_audit::dynamics::{self, NoiseKind};
use serde::{Deserialize, Serialize};

use super::{MlpSettings, noise_kinds, train_spec};
use crate::Num;
use crate::config::ExperimentConfig;
use crate::data::{ImageSource, Images};
use crate::error::{Result, invalid};
use crate::observer::Observer;
use crate::optim::OptimSettings;

/// The experiment's settings; the defaults are the CLI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EasyHardConfig {
    pub images: ImageSource,
    pub mlp: MlpSettings,
    pub optim: OptimSettings,
    pub batch_size: usize,
    /// Seed for data corruption; run k trains with a seed mixed from it and k.
    pub seed: u64,
    /// Independent one-epoch runs (the paper: 100).
    pub runs: usize,
    /// Data kinds: real, randx, randy (randX/randY corrupt the whole training set).
    pub kinds: Vec<String>,
}

impl Default for EasyHardConfig {
    fn default() -> Self {
        Self {
            images: ImageSource::default(),
            mlp: MlpSettings::default(),
            optim: OptimSettings::default(),
            batch_size: 64,
            seed: 0,
            runs: 100,
            kinds: vec!["real".into(), "randx".into(), "randy".into()],
        }
    }
}

/// Training examples when `images.max_train` is not set.
pub const DEFAULT_TRAIN: usize = 5000;

impl ExperimentConfig for EasyHardConfig {
    const NAME: &'static str = "dynamics easy-hard";
    fn validate(&self) -> Result<()> {
        noise_kinds(&self.kinds, "kinds")?;
        if self.runs < 2 {
            return invalid("runs", self.runs, "need at least 2 (the paper: 100)");
        }
        self.images.validate("images")?;
        self.mlp.validate()
    }
}

/// The spread of the per-example correct rates (memaudit_audit's `Dispersion`, named for JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DispersionOut {
    pub mean_correct_rate: Num,
    pub variance: Num,
    pub binomial_variance: Num,
    pub ratio: Num,
    pub always_right: usize,
    pub always_wrong: usize,
    pub binomial_expected_always_right: Num,
    pub binomial_expected_always_wrong: Num,
}

/// One data kind's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KindOutcome {
    pub kind: NoiseKind,
    /// Mean training accuracy after one epoch.
    pub mean_accuracy: Num,
    pub dispersion: DispersionOut,
    /// The variance ratio within classes (removes the label prior's effect on randX).
    pub within_class_ratio: Num,
    /// Mean correct rate per class.
    pub class_correct: Vec<Num>,
    pub seconds: f64,
    /// Per-example misclassification rates. Not serialised: n numbers per kind belong in a CSV
    /// (the CLI writes `misclassification.csv`), not in the `--json` object.
    #[serde(skip)]
    pub misclassification: Vec<f64>,
}

/// The experiment's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EasyHardResult {
    /// "easy-hard".
    pub experiment: String,
    pub data: String,
    pub train_examples: usize,
    pub runs: usize,
    pub kinds: Vec<KindOutcome>,
}

/// The loaded data and the checked training run: everything that can fail before the compute.
pub struct EasyHardJob {
    pub config: EasyHardConfig,
    pub images: Images,
    pub kinds: Vec<NoiseKind>,
    pub spec: dynamics::TrainSpec,
}

/// Check the config, load the data and build the training run (no training yet).
pub fn prepare(config: &EasyHardConfig) -> Result<EasyHardJob> {
    config.validate()?;
    let kinds = noise_kinds(&config.kinds, "kinds")?;
    let images = config
        .images
        .load_flat("images", config.images.max_train.unwrap_or(DEFAULT_TRAIN))?;
    let n = images.train.labels.len();
    let model = config
        .mlp
        .model(images.train.per_example(), images.classes)?;
    let spec = train_spec(model, &config.optim, 1, config.batch_size, config.seed, n)?;
    Ok(EasyHardJob {
        config: config.clone(),
        images,
        kinds,
        spec,
    })
}

impl EasyHardJob {
    /// Run `runs` one-epoch trainings per data kind.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<EasyHardResult> {
        let (c, img) = (&self.config, &self.images);
        let total = (self.kinds.len() * c.runs) as u64;
        let mut kinds = Vec::new();
        for (ki, &k) in self.kinds.iter().enumerate() {
            let fraction = if k == NoiseKind::Real { 0.0 } else { 1.0 };
            let corrupted = dynamics::corrupt(&img.train, img.classes, k, fraction, c.seed)?;
            let started = Instant::now();
            let r = dynamics::easy_hard(&self.spec, &corrupted.data, c.runs, c.seed, &mut |done| {
                observer.progress(k.name(), (ki * c.runs + done) as u64, total);
                super::poll(&*observer)
            })
            .map_err(|e| super::stopped(e, &*observer, k.name()))?;
            let d = &r.dispersion;
            observer.note(&format!(
                "{}: mean accuracy {:.4}, variance / binomial {:.4}",
                k.name(),
                r.mean_accuracy,
                d.ratio
            ));
            kinds.push(KindOutcome {
                kind: k,
                mean_accuracy: Num(r.mean_accuracy),
                dispersion: DispersionOut {
                    mean_correct_rate: Num(d.mean),
                    variance: Num(d.variance),
                    binomial_variance: Num(d.binomial_variance),
                    ratio: Num(d.ratio),
                    always_right: d.at_one,
                    always_wrong: d.at_zero,
                    binomial_expected_always_right: Num(d.binomial_expected_at_one),
                    binomial_expected_always_wrong: Num(d.binomial_expected_at_zero),
                },
                within_class_ratio: Num(r.within_class_ratio),
                class_correct: r.class_correct.iter().map(|&v| Num(v)).collect(),
                seconds: started.elapsed().as_secs_f64(),
                misclassification: r.misclassification,
            });
        }
        Ok(EasyHardResult {
            experiment: "easy-hard".into(),
            data: img.name.clone(),
            train_examples: img.train.labels.len(),
            runs: c.runs,
            kinds,
        })
    }
}

/// [`prepare`] then run.
pub fn run(config: &EasyHardConfig, observer: &mut dyn Observer) -> Result<EasyHardResult> {
    prepare(config)?.run(observer)
}
