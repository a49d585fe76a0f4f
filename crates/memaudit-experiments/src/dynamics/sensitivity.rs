//! `dynamics sensitivity`: loss-sensitivity (Arpit et al. §3.2, Fig. 3). Train a small f64 MLP
//! with plain SGD and measure, every few steps, the gradient of the loss after t steps with
//! respect to each training input through the unrolled SGD updates; report the Gini coefficient
//! of its average over examples for real and random data.

use std::time::Instant;

use memaudit_audit::dynamics::{self, NoiseKind, SensitivityConfig, SensitivityPoint};
use memaudit_engine::datasets::DenseDataset;
use serde::{Deserialize, Serialize};

use super::activation;
use crate::Num;
use crate::config::ExperimentConfig;
use crate::data::ImageSource;
use crate::error::{ExperimentError, Result, invalid};
use crate::observer::{MetricsRow, Observer};

/// The label/input variants.
pub const VARIANTS: [&str; 5] = ["real", "randx", "randy", "unique", "unique-randx"];

/// The experiment's settings; the defaults are the CLI's (and the paper's where it gives them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSensitivityConfig {
    /// mnist, fashion-mnist or digits.
    pub data: String,
    pub data_dir: Option<std::path::PathBuf>,
    /// Training examples (the paper: 1000).
    pub examples: usize,
    /// Average-pool the images by this factor (`None`: 2 for 28x28 images, the paper's 14x14;
    /// 1 otherwise).
    pub downscale: Option<usize>,
    /// Hidden layer sizes (the paper: 16,16).
    pub hidden: Vec<usize>,
    /// relu, tanh or sigmoid.
    pub activation: String,
    /// Plain SGD learning rate.
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    /// Measure every N SGD steps (each point unrolls all steps before it).
    pub every: usize,
    /// Also count the direct dependence of L_t on the inputs of its own mini-batch.
    pub include_direct: bool,
    /// real, randx, randy, unique (real inputs, one class per example), unique-randx.
    pub variants: Vec<String>,
    pub seed: u64,
}

impl Default for LossSensitivityConfig {
    fn default() -> Self {
        Self {
            data: "mnist".into(),
            data_dir: None,
            examples: 1000,
            downscale: None,
            hidden: vec![16, 16],
            activation: "relu".into(),
            lr: 0.1,
            batch_size: 10,
            epochs: 5,
            every: 25,
            include_direct: false,
            variants: VARIANTS.iter().map(|v| v.to_string()).collect(),
            seed: 0,
        }
    }
}

impl LossSensitivityConfig {
    /// The variants, lower-cased.
    fn variant_names(&self) -> Vec<String> {
        self.variants
            .iter()
            .map(|v| v.to_ascii_lowercase())
            .collect()
    }

    fn image_source(&self) -> ImageSource {
        ImageSource {
            data: self.data.clone(),
            data_dir: self.data_dir.clone(),
            max_train: Some(self.examples),
            valid_size: 1,
        }
    }
}

impl ExperimentConfig for LossSensitivityConfig {
    const NAME: &'static str = "dynamics sensitivity";
    fn validate(&self) -> Result<()> {
        activation(&self.activation, "activation")?;
        if self.examples < 2 {
            return invalid("examples", self.examples, "must be at least 2");
        }
        let variants = self.variant_names();
        if variants.is_empty() {
            return invalid(
                "variants",
                "[]",
                "give at least one of real, randx, randy, unique, unique-randx",
            );
        }
        if let Some(v) = variants.iter().find(|v| !VARIANTS.contains(&v.as_str())) {
            return invalid(
                "variants",
                v,
                "use real, randx, randy, unique or unique-randx",
            );
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return invalid(
                "hidden",
                format!("{:?}", self.hidden),
                "give non-zero layer sizes, e.g. 16,16",
            );
        }
        // Its field names are this config's ("data", "max_train" is "examples" here).
        self.image_source().validate("images").map_err(|e| match e {
            ExperimentError::Invalid {
                field,
                value,
                reason,
            } => ExperimentError::Invalid {
                field: field
                    .replace("images.max_train", "examples")
                    .replace("images.", ""),
                value,
                reason,
            },
            e => e,
        })
    }
}

/// One measurement point (JSON form).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointOut {
    pub step: usize,
    pub epoch: Num,
    pub gini_unrolled: Num,
    pub gini_direct: Num,
    pub train_accuracy: Num,
}

/// One variant's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantOutcome {
    pub variant: String,
    pub steps: usize,
    pub parameters: usize,
    pub seconds: f64,
    pub gini_unrolled_final: Option<Num>,
    pub gini_direct_final: Option<Num>,
    pub points: Vec<PointOut>,
    /// Mean of the unrolled Gini over the points.
    #[serde(skip)]
    pub mean_gini_unrolled: f64,
}

/// The experiment's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossSensitivityResult {
    /// "sensitivity".
    pub experiment: String,
    pub data: String,
    pub examples: usize,
    /// Side of the (downscaled) images.
    pub side: usize,
    pub variants: Vec<VariantOutcome>,
}

/// The loaded, downscaled data and the checked settings.
pub struct LossSensitivityJob {
    pub config: LossSensitivityConfig,
    pub data_name: String,
    pub data: DenseDataset,
    pub classes: usize,
    pub side: usize,
    pub downscale: usize,
    pub variants: Vec<String>,
    pub sensitivity: SensitivityConfig,
}

/// Check the config and load (and downscale) the data.
pub fn prepare(config: &LossSensitivityConfig) -> Result<LossSensitivityJob> {
    config.validate()?;
    let img = config.image_source().load_flat("images", config.examples)?;
    if img.channels != 1 {
        return invalid(
            "data",
            &config.data,
            "sensitivity expects one-channel images",
        );
    }
    let factor = config
        .downscale
        .unwrap_or(if img.height == 28 { 2 } else { 1 });
    // Factor 0 goes to `downscale` too, which refuses it.
    let data = if factor != 1 {
        dynamics::downscale(&img.train, img.height, img.width, factor).map_err(|e| {
            ExperimentError::Invalid {
                field: "downscale".into(),
                value: factor.to_string(),
                reason: e.to_string(),
            }
        })?
    } else {
        img.train
    };
    Ok(LossSensitivityJob {
        sensitivity: SensitivityConfig {
            hidden: config.hidden.clone(),
            activation: activation(&config.activation, "activation")?,
            lr: config.lr,
            batch_size: config.batch_size,
            epochs: config.epochs,
            seed: config.seed,
            every: config.every,
            include_direct: config.include_direct,
        },
        config: config.clone(),
        data_name: img.name,
        data,
        classes: img.classes,
        side: img.height / factor,
        downscale: factor,
        variants: config.variant_names(),
    })
}

impl LossSensitivityJob {
    /// Train and measure each variant.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<LossSensitivityResult> {
        let (data, seed) = (&self.data, self.config.seed);
        let n = data.labels.len();
        let corrupt = |k| -> Result<DenseDataset> {
            Ok(dynamics::corrupt(data, self.classes, k, 1.0, seed)?.data)
        };
        let mut outs = Vec::new();
        for (vi, v) in self.variants.iter().enumerate() {
            // A safe point: the study writes nothing but its result.
            if observer.cancelled() {
                return Err(ExperimentError::cancelled(format!("before variant {v}")));
            }
            observer.progress("sensitivity", vi as u64, self.variants.len() as u64);
            let (d, classes) = match v.as_str() {
                "real" => (data.clone(), self.classes),
                "randx" => (corrupt(NoiseKind::RandX)?, self.classes),
                "randy" => (corrupt(NoiseKind::RandY)?, self.classes),
                "unique" => (dynamics::unique_class_labels(data), n),
                _ => (
                    dynamics::unique_class_labels(&corrupt(NoiseKind::RandX)?),
                    n,
                ),
            };
            let started = Instant::now();
            let r = dynamics::loss_sensitivity(&d, classes, &self.sensitivity).map_err(|e| {
                ExperimentError::Invalid {
                    field: "variants".into(),
                    value: v.clone(),
                    reason: e.to_string(),
                }
            })?;
            let secs = started.elapsed().as_secs_f64();
            for p in &r.points {
                observer.metrics(&metrics_row(v, p));
            }
            let last = r.points.last();
            observer.note(&format!(
                "{v}: Gini (unrolled) {}, Gini (direct) {}, train accuracy {} ({secs:.1}s)",
                fmt_opt(last.map(|p| p.gini_unrolled)),
                fmt_opt(last.map(|p| p.gini_direct)),
                fmt_opt(last.map(|p| p.train_accuracy))
            ));
            outs.push(VariantOutcome {
                variant: v.clone(),
                steps: r.steps,
                parameters: r.parameters,
                seconds: secs,
                gini_unrolled_final: last.map(|p| Num(p.gini_unrolled)),
                gini_direct_final: last.map(|p| Num(p.gini_direct)),
                mean_gini_unrolled: r.points.iter().map(|p| p.gini_unrolled).sum::<f64>()
                    / r.points.len().max(1) as f64,
                points: r
                    .points
                    .iter()
                    .map(|p| PointOut {
                        step: p.step,
                        epoch: Num(p.epoch),
                        gini_unrolled: Num(p.gini_unrolled),
                        gini_direct: Num(p.gini_direct),
                        train_accuracy: Num(p.train_accuracy),
                    })
                    .collect(),
            });
        }
        observer.progress(
            "sensitivity",
            self.variants.len() as u64,
            self.variants.len() as u64,
        );
        Ok(LossSensitivityResult {
            experiment: "sensitivity".into(),
            data: self.data_name.clone(),
            examples: n,
            side: self.side,
            variants: outs,
        })
    }
}

/// The columns of a measurement point, as the CLI's `metrics.csv` has them.
pub const METRICS_COLUMNS: [&str; 5] = [
    "gini_unrolled",
    "gini_direct",
    "mean_unrolled",
    "mean_direct",
    "train_accuracy",
];

fn metrics_row(variant: &str, p: &SensitivityPoint) -> MetricsRow {
    MetricsRow {
        stage: variant.to_string(),
        epoch: p.epoch,
        step: Some(p.step as u64),
        values: METRICS_COLUMNS
            .iter()
            .zip([
                p.gini_unrolled,
                p.gini_direct,
                p.mean_unrolled,
                p.mean_direct,
                p.train_accuracy,
            ])
            .map(|(&c, v)| (c, Some(v)))
            .collect(),
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}

/// [`prepare`] then run.
pub fn run(
    config: &LossSensitivityConfig,
    observer: &mut dyn Observer,
) -> Result<LossSensitivityResult> {
    prepare(config)?.run(observer)
}
