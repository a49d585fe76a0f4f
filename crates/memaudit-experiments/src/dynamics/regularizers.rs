//! `dynamics regularizers`: per regulariser setting, one model trained on randY (every label
//! random) and one on real data (Arpit et al. §5, Figs. 10-11). x: the final training accuracy
//! on randY (memorisation of noise); y: the best validation accuracy on real data. The paper
//! finds dropout (especially with adversarial training on LASS samples) lowers memorisation
//! most without lowering real accuracy.

use std::time::Instant;

use memaudit_audit::dynamics::{self, LassConfig, NoiseKind, Regularizer, TrainSpec};
use serde::{Deserialize, Serialize};

use super::{LassSettings, MlpSettings, train_spec};
use crate::Num;
use crate::config::ExperimentConfig;
use crate::data::{ImageSource, Images};
use crate::error::{Result, invalid};
use crate::observer::{MetricsRow, Observer};
use crate::optim::OptimSettings;

/// Training examples when `images.max_train` is not set.
pub const DEFAULT_TRAIN: usize = 5000;

/// The metrics columns of every setting's row (stage: the setting's label).
pub const METRICS: [&str; 6] = [
    "value",
    "randy_train_accuracy",
    "real_best_valid_accuracy",
    "real_best_epoch",
    "real_final_valid_accuracy",
    "seconds",
];

/// The experiment's settings; the defaults are the CLI's. An empty list skips its family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegularizersConfig {
    pub images: ImageSource,
    pub mlp: MlpSettings,
    pub optim: OptimSettings,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub lass: LassSettings,
    /// Dropout rates after each hidden layer, each in [0, 1).
    pub dropout_rates: Vec<f32>,
    /// Input dropout rates, each in [0, 1).
    pub input_dropout_rates: Vec<f32>,
    /// Standard deviations of Gaussian noise added to training inputs.
    pub input_noise_stds: Vec<f32>,
    /// L2 weight decays.
    pub weight_decays: Vec<f32>,
    /// Adversarial-training loss weights (with `adversarial_dropout`), each in [0, 1].
    pub adversarial_weights: Vec<f32>,
    pub adversarial_dropout: f32,
    /// "Equal real-data accuracy": within this of the unregularised best validation accuracy.
    pub tolerance: f64,
}

impl Default for RegularizersConfig {
    fn default() -> Self {
        Self {
            images: ImageSource::default(),
            mlp: MlpSettings::default(),
            optim: OptimSettings::default(),
            epochs: 20,
            batch_size: 64,
            seed: 0,
            lass: LassSettings::default(),
            dropout_rates: vec![0.2, 0.4, 0.6, 0.8],
            input_dropout_rates: vec![0.2, 0.4, 0.6, 0.8],
            input_noise_stds: vec![0.2, 0.5, 1.0],
            weight_decays: vec![0.001, 0.01, 0.1],
            adversarial_weights: vec![0.3, 0.5],
            adversarial_dropout: 0.4,
            tolerance: 0.01,
        }
    }
}

impl RegularizersConfig {
    /// Every setting, the unregularised one first.
    pub fn settings(&self) -> Vec<Regularizer> {
        let mut s = vec![Regularizer::None];
        s.extend(
            self.dropout_rates
                .iter()
                .map(|&rate| Regularizer::Dropout { rate }),
        );
        s.extend(
            self.input_dropout_rates
                .iter()
                .map(|&rate| Regularizer::InputDropout { rate }),
        );
        s.extend(
            self.input_noise_stds
                .iter()
                .map(|&std| Regularizer::InputNoise { std }),
        );
        s.extend(
            self.weight_decays
                .iter()
                .map(|&decay| Regularizer::WeightDecay { decay }),
        );
        s.extend(
            self.adversarial_weights
                .iter()
                .map(|&weight| Regularizer::AdversarialDropout {
                    weight,
                    dropout: self.adversarial_dropout,
                }),
        );
        s
    }
}

/// A value list's field, values, range check and the rule it states.
type ValueList<'a> = (&'a str, &'a [f32], fn(f32) -> bool, &'a str);

impl ExperimentConfig for RegularizersConfig {
    const NAME: &'static str = "dynamics regularizers";

    fn validate(&self) -> Result<()> {
        self.lass.config("lass")?;
        // An accuracy difference: negative would demand beating the unregularised run, above
        // 1 accepts every setting.
        if !(0.0..=1.0).contains(&self.tolerance) {
            return invalid(
                "tolerance",
                self.tolerance,
                "must be in [0, 1] (an accuracy difference)",
            );
        }
        let lists: [ValueList<'_>; 5] = [
            (
                "dropout_rates",
                &self.dropout_rates,
                |v| (0.0..1.0).contains(&v),
                "a dropout rate must be in [0, 1)",
            ),
            (
                "input_dropout_rates",
                &self.input_dropout_rates,
                |v| (0.0..1.0).contains(&v),
                "a dropout rate must be in [0, 1)",
            ),
            (
                "input_noise_stds",
                &self.input_noise_stds,
                |v| v >= 0.0,
                "must be >= 0",
            ),
            (
                "weight_decays",
                &self.weight_decays,
                |v| v >= 0.0,
                "must be >= 0",
            ),
            (
                "adversarial_weights",
                &self.adversarial_weights,
                |v| (0.0..=1.0).contains(&v),
                "must be in [0, 1]",
            ),
        ];
        for (field, values, ok, rule) in lists {
            if let Some(v) = values.iter().find(|v| !(v.is_finite() && ok(**v))) {
                return invalid(field, format!("{v:?}"), rule);
            }
        }
        if !(0.0..1.0).contains(&self.adversarial_dropout) {
            return invalid(
                "adversarial_dropout",
                self.adversarial_dropout,
                "must be in [0, 1)",
            );
        }
        self.images.validate("images")?;
        self.mlp.validate()
    }
}

/// One setting's two models.
#[derive(Clone, Debug, Serialize)]
pub struct SettingPoint {
    pub setting: Regularizer,
    pub label: String,
    pub randy_train_accuracy: Num,
    pub real_best_valid_accuracy: Num,
    pub real_best_epoch: usize,
    pub real_final_valid_accuracy: Num,
    pub seconds: f64,
}

/// Per family, the setting with the least randY fit whose real accuracy is within the
/// tolerance of the unregularised run.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyBest {
    pub family: String,
    pub setting: Option<String>,
    pub randy_train_accuracy: Option<Num>,
    pub real_best_valid_accuracy: Option<Num>,
}

/// The sweep. Serialised (with the CLI's `run` folder), it is `dynamics regularizers --json`.
#[derive(Clone, Debug, Serialize)]
pub struct RegularizersResult {
    /// Always "regularizers".
    pub experiment: String,
    pub data: String,
    pub train_examples: usize,
    pub points: Vec<SettingPoint>,
    pub tolerance: f64,
    pub least_memorization_at_equal_accuracy: Vec<FamilyBest>,
}

/// A checked config with its data loaded and its runs laid out.
pub struct RegularizersJob {
    pub config: RegularizersConfig,
    pub images: Images,
    pub lass: LassConfig,
    pub settings: Vec<Regularizer>,
    pub spec: TrainSpec,
}

/// Check the config, load the data and build the unregularised training run.
pub fn prepare(config: &RegularizersConfig) -> Result<RegularizersJob> {
    config.validate()?;
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
    Ok(RegularizersJob {
        settings: config.settings(),
        config: config.clone(),
        images,
        lass,
        spec,
    })
}

/// The value a setting sweeps (its rate, std, decay or weight; 0 unregularised).
pub fn setting_value(reg: &Regularizer) -> f64 {
    match reg {
        Regularizer::None => 0.0,
        Regularizer::Dropout { rate } | Regularizer::InputDropout { rate } => *rate as f64,
        Regularizer::InputNoise { std } => *std as f64,
        Regularizer::WeightDecay { decay } => *decay as f64,
        Regularizer::AdversarialDropout { weight, .. } => *weight as f64,
    }
}

impl RegularizersJob {
    /// Train the two models of every setting; each setting is a metrics row when done.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<RegularizersResult> {
        let (c, img) = (&self.config, &self.images);
        let randy = dynamics::corrupt(&img.train, img.classes, NoiseKind::RandY, 1.0, c.seed)?.data;
        let total = (self.settings.len() * 2 * c.epochs) as u64;
        let mut done = 0u64;
        let mut points = Vec::new();
        let mut sweep = Vec::new();
        for reg in &self.settings {
            let started = Instant::now();
            let label = reg.label();
            let p = dynamics::sweep_point(
                &self.spec,
                reg,
                &self.lass,
                &img.train,
                &randy,
                &img.test,
                &mut |which, r| {
                    done += 1;
                    observer.progress(&format!("{label} ({which}) epoch {}", r.epoch), done, total);
                    super::poll(&*observer)
                },
            )
            .map_err(|e| super::stopped(e, &*observer, &label))?;
            let secs = started.elapsed().as_secs_f64();
            observer.note(&format!(
                "{label}: randY train accuracy {:.4}, real best valid accuracy {:.4} ({secs:.0}s)",
                p.randy_train_accuracy, p.real_best_valid_accuracy
            ));
            observer.metrics(&MetricsRow {
                stage: label.clone(),
                epoch: c.epochs as f64,
                step: None,
                values: METRICS
                    .iter()
                    .copied()
                    .zip([
                        Some(setting_value(reg)),
                        Some(p.randy_train_accuracy),
                        Some(p.real_best_valid_accuracy),
                        Some(p.real_best_epoch as f64),
                        Some(p.real_final_valid_accuracy),
                        Some(secs),
                    ])
                    .collect(),
            });
            points.push(SettingPoint {
                setting: reg.clone(),
                label,
                randy_train_accuracy: Num(p.randy_train_accuracy),
                real_best_valid_accuracy: Num(p.real_best_valid_accuracy),
                real_best_epoch: p.real_best_epoch,
                real_final_valid_accuracy: Num(p.real_final_valid_accuracy),
                seconds: secs,
            });
            sweep.push(p);
        }
        let best = dynamics::least_memorization_at_equal_accuracy(&sweep, c.tolerance);
        Ok(RegularizersResult {
            experiment: "regularizers".into(),
            data: img.name.clone(),
            train_examples: img.train.labels.len(),
            points,
            tolerance: c.tolerance,
            least_memorization_at_equal_accuracy: best
                .iter()
                .map(|(f, p)| FamilyBest {
                    family: f.clone(),
                    setting: p.as_ref().map(|p| p.regularizer.label()),
                    randy_train_accuracy: p.as_ref().map(|p| Num(p.randy_train_accuracy)),
                    real_best_valid_accuracy: p.as_ref().map(|p| Num(p.real_best_valid_accuracy)),
                })
                .collect(),
        })
    }
}

/// Check, load, train and measure.
pub fn run(config: &RegularizersConfig, observer: &mut dyn Observer) -> Result<RegularizersResult> {
    prepare(config)?.run(observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_families_are_skipped_and_bad_values_name_their_list() {
        let cfg = RegularizersConfig {
            dropout_rates: vec![0.5],
            input_dropout_rates: vec![],
            input_noise_stds: vec![],
            weight_decays: vec![0.01],
            adversarial_weights: vec![],
            ..RegularizersConfig::default()
        };
        let labels: Vec<String> = cfg.settings().iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
        let bad = RegularizersConfig {
            weight_decays: vec![0.1, -1.0],
            ..cfg
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with("weight_decays -1.0: must be >= 0"), "{e}");
    }
}
