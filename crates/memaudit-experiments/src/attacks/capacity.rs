//! Capacity abuse (Song et al., attack D, black box): `memaudit attack capacity`. The malicious
//! training code only adds examples: synthetic inputs, regenerable from the attacker's seed,
//! labelled so that the labels spell the secret. The attacker then queries the deployed model on
//! the regenerated inputs. Under DP-SGD the synthetic examples are clipped and noised like any
//! other, which is what bounds how much survives.

use std::path::PathBuf;
use std::sync::Arc;

use memaudit_attacks::metrics::{
    mean_image_baseline_mape, median_image_baseline_mape, score_images,
};
use memaudit_attacks::{AttackError, CapacityAbuse, LabelScheme, SyntheticInputs};
use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::train::Dataset;
use memaudit_engine::{Batch, Model, ModelConfig, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::regulariser::CapacityUse;
use super::secrets::{SecretSource, image_pool, take_images};
use super::task::{
    AttackHooks, Env, Scale, Task, TrainSpec, TrainedModel, build_model, conventional, finish,
    image_grid, load_task, open_out, predict_labels, reused_conventional, scale, train_config,
    train_model,
};
use super::{AttackSettings, drop_points};
use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;

/// `memaudit attack capacity`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    pub common: AttackSettings,
    /// Synthetic inputs the attacker may add, as a fraction of the real training examples (the
    /// authors' p); the secret is as many whole images as they carry.
    pub synthetic_ratio: f64,
    /// How labels carry the secret: nibble-pairs (the authors' code, needs >= 9 classes) or bits
    /// (`None`: nibble-pairs with >= 9 classes, else bits).
    pub labels: Option<String>,
    /// Synthetic inputs: noise (uniform pixels seeded with `input_seed`, the paper's GenData) or
    /// markers (the authors' sparse two-pixel inputs).
    pub inputs: String,
    /// The attacker's seed for the synthetic inputs (`None`: the run's seed).
    pub input_seed: Option<u64>,
    /// Put every synthetic example this many times in the training set.
    pub synthetic_repeat: usize,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            common: AttackSettings::default(),
            synthetic_ratio: 0.1,
            labels: None,
            inputs: "noise".into(),
            input_seed: None,
            synthetic_repeat: 1,
        }
    }
}

impl ExperimentConfig for CapacityConfig {
    const NAME: &'static str = "attack capacity";

    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        let ratio = self.synthetic_ratio;
        if !(ratio > 0.0 && ratio.is_finite()) {
            return invalid(
                "synthetic_ratio",
                ratio,
                "must be a finite number > 0 (synthetic inputs per real training example)",
            );
        }
        if self.synthetic_repeat == 0 {
            return invalid("synthetic_repeat", 0, "must be at least 1");
        }
        if !["noise", "markers"].contains(&self.inputs.as_str()) {
            return invalid("inputs", &self.inputs, "use noise or markers");
        }
        if let Some(l) = &self.labels
            && !["nibble-pairs", "bits"].contains(&l.as_str())
        {
            return invalid("labels", l, "use nibble-pairs or bits");
        }
        Ok(())
    }
}

/// The real training set followed by the attacker's synthetic examples, each `repeat` times.
struct Augmented {
    real: Arc<DenseDataset>,
    synthetic: DenseDataset,
    repeat: usize,
}

impl Dataset for Augmented {
    fn len(&self) -> usize {
        self.real.labels.len() + self.repeat * self.synthetic.labels.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let per = self.real.per_example();
        let n_real = self.real.labels.len();
        let mut data = Vec::with_capacity(idx.len() * per);
        let mut targets = Vec::with_capacity(idx.len());
        for &i in idx {
            let (src, j) = if i < n_real {
                (self.real.as_ref(), i)
            } else {
                (&self.synthetic, (i - n_real) % self.synthetic.labels.len())
            };
            data.extend_from_slice(&src.x[j * per..(j + 1) * per]);
            targets.push(src.labels[j]);
        }
        let mut shape = vec![idx.len()];
        shape.extend_from_slice(&self.real.example_shape);
        Batch {
            input: memaudit_engine::Value::Dense(Tensor { data, shape }),
            targets,
            mask: None,
        }
    }
}

fn scheme_name(s: LabelScheme) -> &'static str {
    match s {
        LabelScheme::Bits => "bits",
        LabelScheme::NibblePairs => "nibble-pairs",
    }
}

/// Fraction of predicted labels equal to the encoded ones.
fn label_accuracy(predicted: &[u32], labels: &[u32]) -> f64 {
    let right = predicted.iter().zip(labels).filter(|(a, b)| a == b).count();
    right as f64 / labels.len().max(1) as f64
}

/// The synthetic examples of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Synthetic {
    pub ratio: f64,
    pub budget: usize,
    pub inputs: usize,
    pub repeat: usize,
    pub fraction_of_training_set: Num,
    pub labels: &'static str,
    pub input_kind: String,
    pub input_seed: u64,
    pub bits_per_query: u32,
}

/// The secret of a capacity-abuse run.
#[derive(Clone, Debug, Serialize)]
pub struct CapacitySecret {
    pub source: String,
    pub images: usize,
    pub height: usize,
    pub width: usize,
    pub bits: u64,
    pub bits_carried: u64,
}

/// The malicious model's decoding.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityDecoding {
    pub mape: Num,
    pub cosine: Num,
    pub label_accuracy: Num,
    pub invalid_labels: usize,
    pub mean_image_baseline_mape: Num,
    pub median_image_baseline_mape: Num,
    /// What a model that memorised every synthetic label would give (nibble pairs keep 4 bits).
    pub perfect_memorization_mape: Num,
    pub majority_label_share: Num,
}

/// The same decoder on the conventional model.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityControl {
    pub mape: Num,
    pub cosine: Num,
    pub label_accuracy: Num,
    pub invalid_labels: usize,
}

/// A capacity-abuse run. Serialised, it is `memaudit attack capacity --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityResult {
    pub attack: &'static str,
    pub scale: Scale,
    pub conventional: TrainedModel,
    pub malicious: TrainedModel,
    pub accuracy_drop_points: Num,
    pub synthetic: Synthetic,
    pub secret: CapacitySecret,
    pub capacity: CapacityUse,
    pub decoding: CapacityDecoding,
    pub control_conventional: CapacityControl,
    pub grid: PathBuf,
    /// Where the caller writes the HTML report.
    pub report: PathBuf,
    #[serde(skip)]
    pub grid_svg: String,
    /// What the secret's images are ("training images", "LFW faces").
    #[serde(skip)]
    pub secret_what: &'static str,
    /// Real training examples.
    #[serde(skip)]
    pub real_examples: usize,
}

/// Run the attack as `cfg` says.
pub fn run(cfg: &CapacityConfig, observer: &mut dyn Observer) -> Result<CapacityResult> {
    run_with(cfg, observer, AttackHooks::default())
}

/// [`run`] with the caller's hooks.
pub fn run_with(
    cfg: &CapacityConfig,
    observer: &mut dyn Observer,
    hooks: AttackHooks<'_>,
) -> Result<CapacityResult> {
    cfg.validate()?;
    let task = load_task(&cfg.common, observer)?;
    run_task(
        cfg,
        task,
        &mut Env {
            obs: observer,
            hooks,
        },
    )
}

fn run_task(cfg: &CapacityConfig, task: Task, env: &mut Env<'_, '_>) -> Result<CapacityResult> {
    let c = &cfg.common;
    let ratio = cfg.synthetic_ratio;
    let inputs_kind = cfg.inputs.as_str();
    let Task::Image(t) = &task else {
        return invalid(
            "common.dataset",
            "imdb",
            "capacity abuse's synthetic inputs are images; use mnist, fashion-mnist or digits (for documents use `memaudit attack sign --dataset imdb`)",
        );
    };
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(c)?;
    let model = build_model(&model_cfg)?;
    let n_params = model.num_params();
    let seed = c.seed();
    let input_seed = cfg.input_seed.unwrap_or(seed);
    let scheme = match cfg.labels.as_deref() {
        None if t.classes >= 9 => LabelScheme::NibblePairs,
        None => LabelScheme::Bits,
        Some("nibble-pairs") => LabelScheme::NibblePairs,
        Some("bits") => LabelScheme::Bits,
        Some(other) => return invalid("labels", other, "use nibble-pairs or bits"),
    };
    let inputs = match inputs_kind {
        "markers" => SyntheticInputs::SparseMarkers,
        _ => SyntheticInputs::SeededNoise { seed: input_seed },
    };
    let attack = CapacityAbuse::new(t.classes, scheme, inputs, t.height, t.width).map_err(|e| {
        ExperimentError::Invalid {
            field: "labels".into(),
            value: scheme_name(scheme).into(),
            reason: e.to_string(),
        }
    })?;
    let n_real = t.train.len();
    let budget = (ratio * n_real as f64).round() as usize;
    let pool = image_pool(&source, t)?;
    let (h, w) = (pool.images.height(), pool.images.width());
    let per_image = attack.queries_for_images(1, h, w);
    let fit = attack.max_images(budget, h, w);
    if fit == 0 && c.secret_count.is_none() {
        return invalid(
            "synthetic_ratio",
            ratio,
            format!(
                "{budget} synthetic inputs carry {} bits, but one {h}x{w} image needs {per_image} inputs ({} bits) with {} labels; raise `synthetic_ratio` to at least {:.4}",
                budget as u64 * u64::from(attack.bits_per_query()),
                per_image as u64 * u64::from(attack.bits_per_query()),
                scheme_name(scheme),
                per_image as f64 / n_real as f64
            ),
        );
    }
    let secret = take_images(&pool, c.secret_count, fit)?;
    let set =
        attack
            .encode_images(&secret, Some(budget))
            .map_err(|e| match (&e, c.secret_count) {
                (AttackError::SecretTooLarge { .. }, Some(k)) => ExperimentError::Invalid {
                    field: "common.secret_count".into(),
                    value: k.to_string(),
                    reason: format!(
                        "{e}; that is at most {fit} images of {h}x{w} at `synthetic_ratio` {ratio}"
                    ),
                },
                _ => e.into(),
            })?;
    let example_shape: Vec<usize> = if matches!(model_cfg, ModelConfig::Mlp { .. }) {
        vec![t.height * t.width]
    } else {
        t.train.example_shape.clone()
    };

    let reused = reused_conventional(c, env.obs, &task, &model_cfg)?;
    let mut out = open_out("capacity", cfg, c, seed)?;
    let conv = conventional(c, env, &out, &task, &model_cfg, seed, reused)?;
    let synthetic = DenseDataset::new(
        set.inputs.clone(),
        t.train.example_shape.clone(),
        set.labels.clone(),
    )?;
    let n_mal = n_real + cfg.synthetic_repeat * set.len();
    let train_cfg = train_config(c, &model_cfg, n_mal, seed, env.obs)?;
    let labels = set.labels.clone();
    let shape = example_shape.clone();
    let inputs_for_trace = set.inputs.clone();
    let measure = move |m: &Model, p: &[f32]| {
        predict_labels(m, p, &inputs_for_trace, &shape)
            .map_or(f64::NAN, |pred| label_accuracy(&pred, &labels))
    };
    let mal = train_model(
        env,
        &out,
        &t.data,
        TrainSpec {
            sub: "malicious",
            role: "malicious",
            cfg: train_cfg,
            prepared: task.prepared(
                &model_cfg,
                Some(Box::new(Augmented {
                    real: t.train.clone(),
                    synthetic,
                    repeat: cfg.synthetic_repeat,
                })),
            ),
            n: n_mal,
            attack: json!({
                "role": "malicious",
                "attack": "capacity",
                "synthetic_inputs": set.len(),
                "synthetic_repeat": cfg.synthetic_repeat,
                "labels": scheme_name(scheme),
                "inputs": inputs_kind,
                "input_seed": input_seed,
            }),
            penalty: None,
            metric: Some(Box::new(measure)),
        },
    )?;

    // The attacker's side: regenerate the inputs from the seed and query the model.
    let queries = attack.synthetic_inputs(set.len());
    let decode = |params: &[f32]| -> Result<_> {
        let predicted = predict_labels(&model, params, &queries, &example_shape)?;
        let d = attack.decode_images(&predicted, secret.n_images(), h, w)?;
        let s = score_images(&secret, &d.secret)?;
        Ok((label_accuracy(&predicted, &set.labels), d, s))
    };
    let (acc_mal, dec_mal, s_mal) = decode(&mal.params)?;
    let (acc_conv, dec_conv, s_conv) = decode(&conv.params)?;
    let baseline = mean_image_baseline_mape(&pool.images, &secret)?;
    let median = median_image_baseline_mape(&pool.images, &secret)?;
    let perfect = score_images(
        &secret,
        &attack
            .decode_images(&set.labels, secret.n_images(), h, w)?
            .secret,
    )?;
    let mut counts = vec![0usize; t.classes];
    for &l in &set.labels {
        counts[l as usize] += 1;
    }
    let majority = counts.iter().copied().max().unwrap_or(0) as f64 / set.len().max(1) as f64;
    let bpq = attack.bits_per_query();
    let grid = image_grid(
        &out,
        &secret,
        &dec_mal.secret,
        c.grid_images,
        &format!("capacity abuse, synthetic ratio {ratio}"),
    )?;

    let result = CapacityResult {
        attack: "capacity",
        scale: scale(&task, &model_cfg, n_params, c, seed),
        accuracy_drop_points: Num(drop_points(conv.accuracy(), mal.accuracy())),
        conventional: conv,
        malicious: mal,
        synthetic: Synthetic {
            ratio,
            budget,
            inputs: set.len(),
            repeat: cfg.synthetic_repeat,
            fraction_of_training_set: Num((n_mal - n_real) as f64 / n_mal as f64),
            labels: scheme_name(scheme),
            input_kind: inputs_kind.to_string(),
            input_seed,
            bits_per_query: bpq,
        },
        secret: CapacitySecret {
            source: pool.source.clone(),
            images: secret.n_images(),
            height: h,
            width: w,
            bits: secret.bit_len(),
            bits_carried: set.len() as u64 * u64::from(bpq),
        },
        capacity: CapacityUse {
            unit: "synthetic inputs",
            available: budget,
            used: set.len(),
            fraction_used: Num(set.len() as f64 / budget.max(1) as f64),
        },
        decoding: CapacityDecoding {
            mape: Num(s_mal.mean_mape),
            cosine: Num(s_mal.mean_cosine),
            label_accuracy: Num(acc_mal),
            invalid_labels: dec_mal.invalid_labels,
            mean_image_baseline_mape: Num(baseline),
            median_image_baseline_mape: Num(median),
            perfect_memorization_mape: Num(perfect.mean_mape),
            majority_label_share: Num(majority),
        },
        control_conventional: CapacityControl {
            mape: Num(s_conv.mean_mape),
            cosine: Num(s_conv.mean_cosine),
            label_accuracy: Num(acc_conv),
            invalid_labels: dec_conv.invalid_labels,
        },
        grid: grid.png,
        report: out.file("report.html"),
        grid_svg: grid.svg,
        secret_what: pool.what,
        real_examples: n_real,
    };
    finish(&mut out, &result)?;
    Ok(result)
}
