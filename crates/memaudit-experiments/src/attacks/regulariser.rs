//! The malicious regularisers of Song et al. (attacks B and C, white box): `memaudit attack
//! correlation|sign`. The malicious model is trained like the conventional one plus a penalty,
//! added through the engine's `ParamPenalty` hook, that writes the secret into the selected
//! weights; the attacker decodes those weights after training.

use std::path::PathBuf;

use memaudit_attacks::correlation::invert;
use memaudit_attacks::metrics::{
    bits_per_parameter, corpus_word_precision_recall, mean_image_baseline_mape,
    median_image_baseline_mape, score_images, word_precision_recall,
};
use memaudit_attacks::selection::ParamSelection;
use memaudit_attacks::{
    AttackError, CorrelationPenalty, ImageSecret, ParamPenalty, SelectionRule, SignPenalty,
    TextSecret, decode_correlation_images, decode_sign_images, decode_sign_text,
    score_correlation_decoding,
};
use memaudit_engine::Model;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::secrets::{
    ImagePool, SecretSource, image_pool, largest_fitting_prefix, take_images, text_secret,
    training_documents, words,
};
use super::task::{
    AttackHooks, Env, Grid, Scale, Task, TrainSpec, TrainedModel, build_model, conventional,
    finish, image_grid, load_task, open_out, reused_conventional, scale, train_config, train_model,
};
use super::{AttackSettings, drop_points};
use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;

/// Which malicious regulariser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// Correlated value encoding (attack B): -lambda |Pearson r| between weights and pixels.
    Correlation,
    /// Sign encoding (attack C): lambda * mean max(0, -s_i theta_i).
    Sign,
}

impl Encoding {
    /// The subcommand (`correlation`, `sign`).
    pub fn command(self) -> &'static str {
        match self {
            Encoding::Correlation => "correlation",
            Encoding::Sign => "sign",
        }
    }
    /// The paper's name.
    pub fn paper_name(self) -> &'static str {
        match self {
            Encoding::Correlation => "correlated value encoding",
            Encoding::Sign => "sign encoding",
        }
    }
    /// The regulariser's weight when none is given: 1 for correlation (the authors' test
    /// default), 10 for sign.
    pub fn default_lambda(self) -> f64 {
        match self {
            Encoding::Correlation => 1.0,
            Encoding::Sign => 10.0,
        }
    }
    /// The attack's own progress measure.
    pub fn measure_name(self) -> &'static str {
        match self {
            Encoding::Correlation => "|Pearson r|",
            Encoding::Sign => "correct signs",
        }
    }
}

/// The settings of `memaudit attack correlation` and `memaudit attack sign`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegulariserConfig {
    pub common: AttackSettings,
    /// Weight of the malicious regulariser, >= 0 (`None`: [`Encoding::default_lambda`]). The
    /// sign penalty is a mean over the selected weights, so the pull on each weight is
    /// lambda / (number of secret bits).
    pub lambda: Option<f64>,
}

impl RegulariserConfig {
    fn validate_for(&self, enc: Encoding) -> Result<()> {
        self.common.validate()?;
        self.lambda_for(enc).map(|_| ())
    }

    /// The regulariser's weight, checked by the attack library (so the message is its).
    fn lambda_for(&self, enc: Encoding) -> Result<f64> {
        let lambda = self.lambda.unwrap_or(enc.default_lambda());
        if lambda.is_finite() && lambda >= 0.0 {
            Ok(lambda)
        } else {
            Err(ExperimentError::Setting {
                field: "lambda".into(),
                source: Box::new(AttackError::InvalidLambda {
                    penalty: enc.paper_name(),
                    lambda,
                }),
            })
        }
    }
}

/// `memaudit attack correlation` (attack B).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationConfig(pub RegulariserConfig);

/// `memaudit attack sign` (attack C).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignConfig(pub RegulariserConfig);

impl ExperimentConfig for CorrelationConfig {
    const NAME: &'static str = "attack correlation";
    fn validate(&self) -> Result<()> {
        self.0.validate_for(Encoding::Correlation)
    }
}

impl ExperimentConfig for SignConfig {
    const NAME: &'static str = "attack sign";
    fn validate(&self) -> Result<()> {
        self.0.validate_for(Encoding::Sign)
    }
}

/// The penalty, kept typed for decoding after training.
enum Penalty {
    Correlation(CorrelationPenalty),
    Sign(SignPenalty),
}

impl Penalty {
    fn boxed(&self) -> Box<dyn ParamPenalty> {
        match self {
            Penalty::Correlation(p) => Box::new(p.clone()),
            Penalty::Sign(p) => Box::new(p.clone()),
        }
    }
    fn selection(&self) -> &ParamSelection {
        match self {
            Penalty::Correlation(p) => p.selection(),
            Penalty::Sign(p) => p.selection(),
        }
    }
    /// The attack's own progress measure: |Pearson r| or the fraction of correct signs.
    fn measure(&self, params: &[f32]) -> f64 {
        match self {
            Penalty::Correlation(p) => p.pearson(params).map_or(f64::NAN, f64::abs),
            Penalty::Sign(p) => p.correct_sign(params).unwrap_or(f64::NAN),
        }
    }
}

enum Secret {
    Images {
        pool: ImagePool,
        secret: ImageSecret,
    },
    Text {
        secret: TextSecret,
    },
}

/// A capacity refusal that names the setting and says how many whole items fit.
fn capacity_error(e: AttackError, count: Option<usize>, fit: String) -> ExperimentError {
    match (&e, count) {
        (AttackError::SecretTooLarge { .. }, Some(k)) => ExperimentError::Invalid {
            field: "common.secret_count".into(),
            value: k.to_string(),
            reason: format!("{e}; that is {fit}"),
        },
        _ => e.into(),
    }
}

/// The secret as the results record it.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RegulariserSecret {
    Images {
        source: String,
        images: usize,
        height: usize,
        width: usize,
        bits: u64,
        bits_per_parameter: Num,
    },
    Text {
        source: String,
        documents: usize,
        words: usize,
        bits: u64,
        bits_per_word: u32,
        bits_per_parameter: Num,
    },
}

/// How well a model decodes to the secret (the malicious model, or the conventional one as the
/// control). Only the measures of the run's secret and encoding are set.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Decoding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mape: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine: Option<Num>,
    /// Correlation: the one orientation chosen for all images was the inverse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inverted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mape_best_of_two: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_best_of_two: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abs_pearson_r: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_image_baseline_mape: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_image_baseline_mape: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus_precision: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus_recall: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents_recovered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_codes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct_signs: Option<Num>,
}

/// The carrier's capacity and what the secret used of it.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityUse {
    pub unit: &'static str,
    pub available: usize,
    pub used: usize,
    pub fraction_used: Num,
}

/// A correlation or sign run. Serialised, it is `memaudit attack correlation|sign --json`.
#[derive(Clone, Debug, Serialize)]
pub struct RegulariserResult {
    pub attack: &'static str,
    pub lambda: f64,
    pub scale: Scale,
    pub conventional: TrainedModel,
    pub malicious: TrainedModel,
    pub accuracy_drop_points: Num,
    pub capacity: CapacityUse,
    pub secret: RegulariserSecret,
    pub decoding: Decoding,
    pub control_conventional: Decoding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<PathBuf>,
    /// Where the caller writes the HTML report.
    pub report: PathBuf,
    #[serde(skip)]
    pub encoding: Encoding,
    /// The attack's measure of the malicious and the conventional model.
    #[serde(skip)]
    pub measure: (f64, f64),
    /// What the secret's images are ("training images", "LFW faces").
    #[serde(skip)]
    pub secret_what: &'static str,
    #[serde(skip)]
    pub grid_svg: Option<String>,
    /// The first review, original and recovered, as words (text secrets).
    #[serde(skip)]
    pub first_review: Option<(String, String)>,
}

/// `memaudit attack correlation`.
pub fn run_correlation(
    cfg: &CorrelationConfig,
    observer: &mut dyn Observer,
) -> Result<RegulariserResult> {
    run_correlation_with(cfg, observer, AttackHooks::default())
}

/// [`run_correlation`] with the caller's hooks.
pub fn run_correlation_with(
    cfg: &CorrelationConfig,
    observer: &mut dyn Observer,
    hooks: AttackHooks<'_>,
) -> Result<RegulariserResult> {
    cfg.validate()?;
    run_with(Encoding::Correlation, &cfg.0, observer, hooks)
}

/// `memaudit attack sign`.
pub fn run_sign(cfg: &SignConfig, observer: &mut dyn Observer) -> Result<RegulariserResult> {
    run_sign_with(cfg, observer, AttackHooks::default())
}

/// [`run_sign`] with the caller's hooks.
pub fn run_sign_with(
    cfg: &SignConfig,
    observer: &mut dyn Observer,
    hooks: AttackHooks<'_>,
) -> Result<RegulariserResult> {
    cfg.validate()?;
    run_with(Encoding::Sign, &cfg.0, observer, hooks)
}

fn run_with(
    enc: Encoding,
    cfg: &RegulariserConfig,
    observer: &mut dyn Observer,
    hooks: AttackHooks<'_>,
) -> Result<RegulariserResult> {
    let lambda = cfg.lambda_for(enc)?;
    let task = load_task(&cfg.common, observer)?;
    run_task(
        enc,
        cfg,
        lambda,
        task,
        &mut Env {
            obs: observer,
            hooks,
        },
    )
}

/// The attack on loaded data (the unit tests give it generated text).
pub(crate) fn run_task(
    enc: Encoding,
    cfg: &RegulariserConfig,
    lambda: f64,
    task: Task,
    env: &mut Env<'_, '_>,
) -> Result<RegulariserResult> {
    let c = &cfg.common;
    if enc == Encoding::Correlation && matches!(task, Task::Text(_)) {
        return invalid(
            "common.dataset",
            "imdb",
            "correlated value encoding hides pixel values; for documents use `memaudit attack sign --dataset imdb`",
        );
    }
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(c)?;
    let model = build_model(&model_cfg)?;
    let specs = model.param_specs().to_vec();
    let n_params = model.num_params();
    let capacity = SelectionRule::default().capacity(&specs);
    let seed = c.seed();

    // Secret and penalty, before any training: a secret that cannot fit fails at once.
    let (secret, penalty) = match &task {
        Task::Image(t) => {
            let pool = image_pool(&source, t)?;
            let px = pool.images.height() * pool.images.width();
            let per_image = match enc {
                Encoding::Correlation => px,
                Encoding::Sign => 8 * px,
            };
            let fit = capacity / per_image.max(1);
            let secret = take_images(&pool, c.secret_count, fit)?;
            let fit_text = format!(
                "at most {fit} image{} of {}x{}",
                if fit == 1 { "" } else { "s" },
                pool.images.height(),
                pool.images.width()
            );
            let penalty = match enc {
                Encoding::Correlation => Penalty::Correlation(
                    CorrelationPenalty::for_images(&specs, &secret, lambda)
                        .map_err(|e| capacity_error(e, c.secret_count, fit_text))?,
                ),
                Encoding::Sign => Penalty::Sign(
                    SignPenalty::for_images(&specs, &secret, lambda)
                        .map_err(|e| capacity_error(e, c.secret_count, fit_text))?,
                ),
            };
            (Secret::Images { pool, secret }, penalty)
        }
        Task::Text(t) => {
            let docs = training_documents(t);
            let fit = largest_fitting_prefix(docs.len(), capacity as u64, |k| {
                Ok(text_secret(t, &docs, k)?.bit_len())
            })?;
            let k = match c.secret_count {
                Some(k) if k > docs.len() => {
                    return invalid(
                        "common.secret_count",
                        k,
                        format!("the training set has only {} reviews", docs.len()),
                    );
                }
                Some(k) => k,
                None if fit == 0 => {
                    return invalid(
                        "common.features",
                        c.features,
                        "the first review alone does not fit in the model's weight signs; use more features",
                    );
                }
                None => fit,
            };
            let secret = text_secret(t, &docs, k)?;
            let penalty = Penalty::Sign(
                SignPenalty::for_text(&specs, &secret, lambda, SelectionRule::default()).map_err(
                    |e| capacity_error(e, c.secret_count, format!("at most {fit} reviews")),
                )?,
            );
            (Secret::Text { secret }, penalty)
        }
    };
    let used = penalty.selection().len();
    let unit = match enc {
        Encoding::Correlation => "weights (one per pixel)",
        Encoding::Sign => "weights (one per bit)",
    };

    let reused = reused_conventional(c, env.obs, &task, &model_cfg)?;
    let mut out = open_out(enc.command(), cfg, c, seed)?;
    let conv = conventional(c, env, &out, &task, &model_cfg, seed, reused)?;
    let n = task.n_train();
    let train_cfg = train_config(c, &model_cfg, n, seed, env.obs)?;
    let measure = |_: &Model, p: &[f32]| penalty.measure(p);
    let mal = train_model(
        env,
        &out,
        task.data(),
        TrainSpec {
            sub: "malicious",
            role: "malicious",
            cfg: train_cfg,
            prepared: task.prepared(&model_cfg, None),
            n,
            attack: json!({ "role": "malicious", "attack": enc.command(), "lambda": lambda }),
            penalty: Some(penalty.boxed()),
            metric: Some(Box::new(measure)),
        },
    )?;

    let measure_mal = penalty.measure(&mal.params);
    let measure_conv = penalty.measure(&conv.params);
    let (secret_json, decoding, control, grid, secret_what, first_review) = match &secret {
        Secret::Images { pool, secret } => {
            let (h, w) = (secret.height(), secret.width());
            let baseline = mean_image_baseline_mape(&pool.images, secret)?;
            let median = median_image_baseline_mape(&pool.images, secret)?;
            let (mut decoding, control, recovered) = match &penalty {
                Penalty::Correlation(p) => {
                    let decode = |params: &[f32]| -> Result<_> {
                        let d = decode_correlation_images(params, p.selection(), h, w)?;
                        let s = score_correlation_decoding(&d, secret)?;
                        Ok((d, s))
                    };
                    let (d, s) = decode(&mal.params)?;
                    let (_, sc) = decode(&conv.params)?;
                    let recovered = if s.global_inverted { invert(&d) } else { d };
                    (
                        Decoding {
                            mape: Some(Num(s.global.mean_mape)),
                            cosine: Some(Num(s.global.mean_cosine)),
                            inverted: Some(s.global_inverted),
                            mape_best_of_two: Some(Num(s.best_of_two.mean_mape)),
                            cosine_best_of_two: Some(Num(s.best_of_two.mean_cosine)),
                            abs_pearson_r: Some(Num(measure_mal)),
                            ..Decoding::default()
                        },
                        Decoding {
                            mape: Some(Num(sc.global.mean_mape)),
                            cosine: Some(Num(sc.global.mean_cosine)),
                            abs_pearson_r: Some(Num(measure_conv)),
                            ..Decoding::default()
                        },
                        recovered,
                    )
                }
                Penalty::Sign(p) => {
                    let k = secret.n_images();
                    let d = decode_sign_images(&mal.params, p.selection(), k, h, w)?;
                    let s = score_images(secret, &d)?;
                    let dc = decode_sign_images(&conv.params, p.selection(), k, h, w)?;
                    let sc = score_images(secret, &dc)?;
                    (
                        Decoding {
                            mape: Some(Num(s.mean_mape)),
                            cosine: Some(Num(s.mean_cosine)),
                            correct_signs: Some(Num(measure_mal)),
                            ..Decoding::default()
                        },
                        Decoding {
                            mape: Some(Num(sc.mean_mape)),
                            cosine: Some(Num(sc.mean_cosine)),
                            correct_signs: Some(Num(measure_conv)),
                            ..Decoding::default()
                        },
                        d,
                    )
                }
            };
            decoding.mean_image_baseline_mape = Some(Num(baseline));
            decoding.median_image_baseline_mape = Some(Num(median));
            let raw_bits = secret.bit_len();
            let grid = image_grid(
                &out,
                secret,
                &recovered,
                c.grid_images,
                &format!("{} (lambda = {lambda})", enc.paper_name()),
            )?;
            (
                RegulariserSecret::Images {
                    source: pool.source.clone(),
                    images: secret.n_images(),
                    height: h,
                    width: w,
                    bits: raw_bits,
                    bits_per_parameter: Num(bits_per_parameter(raw_bits, n_params)),
                },
                decoding,
                control,
                Some(grid),
                pool.what,
                None,
            )
        }
        Secret::Text { secret } => {
            let Task::Text(t) = &task else {
                unreachable!("text secrets come with the text task")
            };
            let vocab = t.terms.len() as u32;
            let decode = |params: &[f32]| -> Result<_> {
                let d = decode_sign_text(params, penalty.selection(), vocab)?;
                let pr = word_precision_recall(secret, &d.secret);
                let corpus = corpus_word_precision_recall(secret, &d.secret);
                Ok((d, pr, corpus))
            };
            let (d, pr, corpus) = decode(&mal.params)?;
            let (_, prc, corpusc) = decode(&conv.params)?;
            let bits = secret.bit_len();
            let first_review = match (secret.docs().first(), d.secret.docs().first()) {
                (Some(a), Some(b)) => Some((words(t, a, 60), words(t, b, 60))),
                _ => None,
            };
            (
                RegulariserSecret::Text {
                    source: "imdb".into(),
                    documents: secret.docs().len(),
                    words: secret.n_words(),
                    bits,
                    bits_per_word: secret.index_width(),
                    bits_per_parameter: Num(bits_per_parameter(bits, n_params)),
                },
                Decoding {
                    precision: Some(Num(pr.precision)),
                    recall: Some(Num(pr.recall)),
                    corpus_precision: Some(Num(corpus.precision)),
                    corpus_recall: Some(Num(corpus.recall)),
                    documents_recovered: Some(d.secret.docs().len()),
                    invalid_codes: Some(d.invalid_codes),
                    correct_signs: Some(Num(measure_mal)),
                    ..Decoding::default()
                },
                Decoding {
                    precision: Some(Num(prc.precision)),
                    recall: Some(Num(prc.recall)),
                    corpus_precision: Some(Num(corpusc.precision)),
                    corpus_recall: Some(Num(corpusc.recall)),
                    correct_signs: Some(Num(measure_conv)),
                    ..Decoding::default()
                },
                None,
                "reviews",
                first_review,
            )
        }
    };
    let (grid, grid_svg) = match grid {
        Some(Grid { svg, png }) => (Some(png), Some(svg)),
        None => (None, None),
    };
    let result = RegulariserResult {
        attack: enc.command(),
        lambda,
        scale: scale(&task, &model_cfg, n_params, c, seed),
        accuracy_drop_points: Num(drop_points(conv.accuracy(), mal.accuracy())),
        conventional: conv,
        malicious: mal,
        capacity: CapacityUse {
            unit,
            available: capacity,
            used,
            fraction_used: Num(used as f64 / capacity.max(1) as f64),
        },
        secret: secret_json,
        decoding,
        control_conventional: control,
        grid,
        report: out.file("report.html"),
        encoding: enc,
        measure: (measure_mal, measure_conv),
        secret_what,
        grid_svg,
        first_review,
    };
    finish(&mut out, &result)?;
    Ok(result)
}
