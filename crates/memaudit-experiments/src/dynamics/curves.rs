//! `dynamics curves`: training curves on partly corrupted data (Arpit et al. §4, Figs. 5-7).
//! For each noise fraction, corrupt that fraction of the training set (randY: random labels;
//! randX: Gaussian inputs), train, and record per epoch the accuracy on clean and on corrupted
//! training examples, the validation accuracy and the validation critical sample ratio (LASS).
//! With noise, validation accuracy should peak before the corrupted examples are fitted, and
//! the CSR should be higher on noisier data.

use memaudit_audit::dynamics::{
    self, CsrTracking, EpochRecord, LassConfig, NoiseKind, Tracking, TrainSpec,
};
use memaudit_engine::ModelConfig;
use memaudit_engine::datasets::DenseDataset;
use serde::{Deserialize, Serialize};

use super::{LassSettings, MlpSettings, train_spec};
use crate::Num;
use crate::config::ExperimentConfig;
use crate::data::{ImageSource, Images};
use crate::error::{Result, invalid};
use crate::observer::{MetricsRow, Observer};
use crate::optim::OptimSettings;

/// The experiment's settings; the defaults are the CLI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurvesConfig {
    pub images: ImageSource,
    pub mlp: MlpSettings,
    pub optim: OptimSettings,
    pub epochs: usize,
    pub batch_size: usize,
    /// Seed for data corruption, initialisation, batch order, dropout and LASS noise.
    pub seed: u64,
    pub lass: LassSettings,
    /// randy (random labels) or randx (Gaussian inputs).
    pub noise: String,
    /// Fractions of the training set to corrupt, each in [0, 1] (one run each).
    pub fractions: Vec<f64>,
    /// Measure the validation CSR every N epochs (0: never).
    pub csr_every: usize,
    /// Validation examples LASS probes.
    pub csr_size: usize,
    /// Also record the Gini coefficient of the direct input-gradient norms each epoch.
    pub gini: bool,
}

impl Default for CurvesConfig {
    fn default() -> Self {
        Self {
            images: ImageSource::default(),
            mlp: MlpSettings::default(),
            optim: OptimSettings::default(),
            epochs: 20,
            batch_size: 64,
            seed: 0,
            lass: LassSettings::default(),
            noise: "randy".into(),
            fractions: vec![0.0, 0.2, 0.5, 0.8],
            csr_every: 1,
            csr_size: 1000,
            gini: false,
        }
    }
}

/// Training examples when `images.max_train` is not set.
pub const DEFAULT_TRAIN: usize = 5000;

/// The metrics columns of every epoch row (the CLI's metrics.csv).
pub const METRICS: [&str; 12] = [
    "fraction",
    "epoch",
    "train_loss",
    "train_accuracy",
    "clean_accuracy",
    "noisy_accuracy",
    "valid_loss",
    "valid_accuracy",
    "csr",
    "lass_iterations",
    "input_gradient_gini",
    "seconds",
];

impl CurvesConfig {
    fn noise_kind(&self) -> Result<NoiseKind> {
        match NoiseKind::parse(&self.noise) {
            Ok(NoiseKind::Real) => invalid(
                "noise",
                &self.noise,
                "corrupts nothing: use randy or randx (fraction 0 is the real-data run)",
            ),
            Ok(k) => Ok(k),
            Err(_) => invalid("noise", &self.noise, "use randy or randx"),
        }
    }
}

impl ExperimentConfig for CurvesConfig {
    const NAME: &'static str = "dynamics curves";

    fn validate(&self) -> Result<()> {
        self.noise_kind()?;
        if self.csr_every > 0 && self.csr_size == 0 {
            return invalid(
                "csr_size",
                0,
                "LASS needs at least 1 validation example (or `csr_every` 0 to skip it)",
            );
        }
        if self.fractions.is_empty() {
            return invalid(
                "fractions",
                "[]",
                "give at least one noise fraction in [0, 1]",
            );
        }
        if let Some(f) = self.fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
            return invalid("fractions", f, "a noise fraction must be in [0, 1]");
        }
        self.lass.config("lass")?;
        self.images.validate("images")?;
        self.mlp.validate()
    }
}

/// One noise fraction's run.
#[derive(Clone, Debug, Serialize)]
pub struct FractionSummary {
    pub fraction: f64,
    /// Training examples corrupted.
    pub corrupted: usize,
    /// randY: corrupted examples whose label changed.
    pub labels_changed: usize,
    pub best_valid_accuracy: Option<Num>,
    pub best_valid_epoch: Option<usize>,
    pub final_valid_accuracy: Option<Num>,
    pub final_clean_accuracy: Option<Num>,
    pub final_noisy_accuracy: Option<Num>,
    /// First epoch with at least half of the corrupted examples fitted.
    pub noisy_half_fitted_epoch: Option<usize>,
    pub noisy_90_fitted_epoch: Option<usize>,
    pub csr_first: Option<Num>,
    pub csr_final: Option<Num>,
    pub csr_max: Option<Num>,
    pub csr_mean: Option<Num>,
    pub epochs: Vec<EpochRecord>,
}

/// The runs. Serialised (with the CLI's `run` folder), it is `dynamics curves --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CurvesResult {
    /// Always "curves".
    pub experiment: String,
    pub data: String,
    pub train_examples: usize,
    pub valid_examples: usize,
    pub noise: NoiseKind,
    pub model: ModelConfig,
    pub runs: Vec<FractionSummary>,
}

/// A checked config with its data loaded and its training run built.
pub struct CurvesJob {
    pub config: CurvesConfig,
    pub images: Images,
    pub noise: NoiseKind,
    pub lass: LassConfig,
    pub spec: TrainSpec,
    /// The validation examples LASS probes.
    pub csr_data: DenseDataset,
}

/// Check the config, load the data and build the training run (no training yet).
pub fn prepare(config: &CurvesConfig) -> Result<CurvesJob> {
    config.validate()?;
    let noise = config.noise_kind()?;
    let lass = config.lass.config("lass")?;
    let images = config
        .images
        .load_flat("images", config.images.max_train.unwrap_or(DEFAULT_TRAIN))?;
    let n = images.train.labels.len();
    let model = config
        .mlp
        .model(images.train.per_example(), images.classes)?;
    let spec = train_spec(
        model,
        &config.optim,
        config.epochs,
        config.batch_size,
        config.seed,
        n,
    )?;
    let csr_data = images
        .test
        .subset(&(0..config.csr_size.min(images.test.labels.len())).collect::<Vec<_>>());
    Ok(CurvesJob {
        config: config.clone(),
        images,
        noise,
        lass,
        spec,
        csr_data,
    })
}

fn first_epoch(records: &[EpochRecord], f: impl Fn(&EpochRecord) -> bool) -> Option<usize> {
    records.iter().find(|r| f(r)).map(|r| r.epoch)
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}

impl CurvesJob {
    /// Train one model per noise fraction; each epoch is a metrics row (stage: "randy 0.2").
    pub fn run(&self, observer: &mut dyn Observer) -> Result<CurvesResult> {
        let (c, img, noise) = (&self.config, &self.images, self.noise);
        let total = (c.fractions.len() * c.epochs) as u64;
        let mut done = 0u64;
        let mut runs = Vec::new();
        for &f in &c.fractions {
            let corrupted = dynamics::corrupt(&img.train, img.classes, noise, f, c.seed)?;
            let tracking = Tracking {
                valid: Some(&img.test),
                noisy: Some(&corrupted.mask),
                csr: (c.csr_every > 0).then(|| CsrTracking {
                    data: &self.csr_data,
                    every: c.csr_every,
                    lass: self.lass.clone(),
                }),
                stop_at_train_accuracy: None,
                input_gradient_gini: c.gini,
            };
            let stage = format!("{} {f}", noise.name());
            let trained =
                dynamics::train_tracked(&self.spec, &corrupted.data, &tracking, &mut |r| {
                    done += 1;
                    observer.progress(&format!("{stage}: epoch {}", r.epoch), done, total);
                    observer.metrics(&MetricsRow {
                        stage: stage.clone(),
                        epoch: r.epoch as f64,
                        step: None,
                        values: METRICS
                            .iter()
                            .copied()
                            .zip([
                                Some(f),
                                Some(r.epoch as f64),
                                Some(r.train_loss),
                                Some(r.train_accuracy),
                                r.clean_accuracy,
                                r.noisy_accuracy,
                                r.valid_loss,
                                r.valid_accuracy,
                                r.csr,
                                r.lass_iterations.map(|v| v as f64),
                                r.input_gradient_gini,
                                Some(r.seconds),
                            ])
                            .collect(),
                    });
                    observer.note(&format!(
                        "{stage} epoch {}: clean {} noisy {} valid {} csr {}",
                        r.epoch,
                        fmt(r.clean_accuracy),
                        fmt(r.noisy_accuracy),
                        fmt(r.valid_accuracy),
                        fmt(r.csr)
                    ));
                    super::poll(&*observer)
                })
                .map_err(|e| super::stopped(e, &*observer, &stage))?;
            runs.push(summary(f, &corrupted, trained.records));
        }
        Ok(CurvesResult {
            experiment: "curves".into(),
            data: img.name.clone(),
            train_examples: img.train.labels.len(),
            valid_examples: img.test.labels.len(),
            noise,
            model: self.spec.model.clone(),
            runs,
        })
    }
}

fn summary(f: f64, c: &dynamics::Corrupted, recs: Vec<EpochRecord>) -> FractionSummary {
    let best = recs
        .iter()
        .filter_map(|r| r.valid_accuracy.map(|v| (r.epoch, v)))
        .fold(None, |b: Option<(usize, f64)>, (e, v)| match b {
            Some((_, bv)) if bv >= v => b,
            _ => Some((e, v)),
        });
    let last = recs.last();
    let csrs: Vec<f64> = recs.iter().filter_map(|r| r.csr).collect();
    FractionSummary {
        fraction: f,
        corrupted: c.corrupted.len(),
        labels_changed: c.labels_changed,
        best_valid_accuracy: best.map(|b| Num(b.1)),
        best_valid_epoch: best.map(|b| b.0),
        final_valid_accuracy: last.and_then(|r| r.valid_accuracy).map(Num),
        final_clean_accuracy: last.and_then(|r| r.clean_accuracy).map(Num),
        final_noisy_accuracy: last.and_then(|r| r.noisy_accuracy).map(Num),
        noisy_half_fitted_epoch: first_epoch(&recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.5)),
        noisy_90_fitted_epoch: first_epoch(&recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.9)),
        csr_first: csrs.first().copied().map(Num),
        csr_final: csrs.last().copied().map(Num),
        csr_max: csrs.iter().copied().reduce(f64::max).map(Num),
        csr_mean: (!csrs.is_empty()).then(|| Num(csrs.iter().sum::<f64>() / csrs.len() as f64)),
        epochs: recs,
    }
}

/// Check, load, train and measure.
pub fn run(config: &CurvesConfig, observer: &mut dyn Observer) -> Result<CurvesResult> {
    prepare(config)?.run(observer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;

    #[test]
    fn random_labels_are_fitted_later_than_clean_ones() {
        let cfg = CurvesConfig {
            images: ImageSource {
                data: "digits".into(),
                max_train: Some(300),
                valid_size: 100,
                ..ImageSource::default()
            },
            mlp: MlpSettings {
                hidden: vec![32],
                ..MlpSettings::default()
            },
            epochs: 10,
            batch_size: 20,
            fractions: vec![0.0, 0.5],
            csr_every: 0,
            ..CurvesConfig::default()
        };
        let mut rec = Recorder::default();
        let r = run(&cfg, &mut rec).unwrap();
        assert_eq!(r.runs.len(), 2);
        assert_eq!(rec.rows.len(), 20, "one metrics row per epoch and fraction");
        assert_eq!(r.runs[0].corrupted, 0);
        assert_eq!(r.runs[1].corrupted, 150);
        // After 10 epochs (150 steps) the clean examples of the half-corrupted run are fitted
        // far better than its random labels (Arpit et al. §4: real patterns first). Observed:
        // clean 0.76, noisy 0.10 (chance for 10 classes); the margin of 0.2 leaves room for
        // other batch orders.
        let half = &r.runs[1];
        let (clean, noisy) = (
            half.final_clean_accuracy.unwrap().0,
            half.final_noisy_accuracy.unwrap().0,
        );
        assert!(clean > noisy + 0.2, "clean {clean} noisy {noisy}");
        let bad = CurvesConfig {
            noise: "real".into(),
            ..cfg
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with("noise real: corrupts nothing"), "{e}");
    }
}
