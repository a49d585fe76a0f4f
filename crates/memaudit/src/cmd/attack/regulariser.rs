//! `memaudit attack correlation|sign`: the malicious regularisers of Song et al. (attacks B and
//! C, white box). The malicious model is trained like the conventional one plus a penalty, added
//! through the engine's `ParamPenalty` hook, that writes the secret into the selected weights;
//! the attacker decodes those weights after training.

use anyhow::Result;
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
use serde::Serialize;
use serde_json::{Value, json};

use super::secrets::{
    ImagePool, SecretSource, image_pool, largest_fitting_prefix, take_images, text_secret,
    training_documents, words,
};
use super::{
    CommonArgs, Task, TrainSpec, Trained, accuracy_chart, check_lambda, conventional, drop_points,
    finish, header, image_grid, load_task, model_rows, open_out, scale_json, train_config,
    train_model,
};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::report::{self, Series};

/// Which malicious regulariser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Correlation,
    Sign,
}

impl Encoding {
    fn command(self) -> &'static str {
        match self {
            Encoding::Correlation => "correlation",
            Encoding::Sign => "sign",
        }
    }
    fn paper_name(self) -> &'static str {
        match self {
            Encoding::Correlation => "correlated value encoding",
            Encoding::Sign => "sign encoding",
        }
    }
}

#[derive(clap::Args, Debug, Serialize)]
pub struct PenaltyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Weight of the malicious regulariser, >= 0 (default: 1 for correlation, the authors'
    /// test default; 10 for sign). The sign penalty is a mean over the selected weights, so the
    /// pull on each weight is lambda / (number of secret bits).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    pub lambda: Option<f64>,
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
    fn measure_name(&self) -> &'static str {
        match self {
            Penalty::Correlation(_) => "|Pearson r|",
            Penalty::Sign(_) => "correct signs",
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

/// Re-word a capacity refusal so it names the flag and how many whole items fit.
fn capacity_error(e: AttackError, count: Option<usize>, fit: String) -> anyhow::Error {
    match (&e, count) {
        (AttackError::SecretTooLarge { .. }, Some(k)) => {
            user(format!("--secret-count {k}: {e}; that is {fit}"))
        }
        _ => user(e.to_string()),
    }
}

pub fn run(enc: Encoding, args: &PenaltyArgs, ctx: &Ctx) -> Result<Report> {
    let c = &args.common;
    c.validate()?;
    let lambda = args.lambda.unwrap_or(match enc {
        Encoding::Correlation => 1.0,
        Encoding::Sign => 10.0,
    });
    check_lambda(enc.paper_name(), lambda)?;
    let task = load_task(c, ctx)?;
    run_task(enc, args, lambda, task, ctx)
}

/// The attack on loaded data (the unit tests give it generated text).
pub(super) fn run_task(
    enc: Encoding,
    args: &PenaltyArgs,
    lambda: f64,
    task: Task,
    ctx: &Ctx,
) -> Result<Report> {
    let c = &args.common;
    if enc == Encoding::Correlation && matches!(task, Task::Text(_)) {
        return Err(user(
            "--dataset imdb: correlated value encoding hides pixel values; for documents use `memaudit attack sign --dataset imdb`",
        ));
    }
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(&c.model)?;
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
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
                    return Err(user(format!(
                        "--secret-count {k}: the training set has only {} reviews",
                        docs.len()
                    )));
                }
                Some(k) => k,
                None if fit == 0 => {
                    return Err(user(
                        "the first review alone does not fit in the model's weight signs; use more --features",
                    ));
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

    let reused = super::reused_conventional(c, ctx, &task, &model_cfg)?;
    let mut out = open_out(enc.command(), args, c, seed)?;
    let conv = conventional(c, ctx, &out, &task, &model_cfg, seed, reused)?;
    let n = task.n_train();
    let cfg = train_config(c, &model_cfg, n, seed, ctx)?;
    let data = match &task {
        Task::Image(t) => &t.data,
        Task::Text(t) => &t.data,
    };
    let measure = |_: &Model, p: &[f32]| penalty.measure(p);
    let mal: Trained = train_model(
        ctx,
        &out,
        data,
        TrainSpec {
            sub: "malicious",
            role: "malicious",
            cfg,
            prepared: task.prepared(&model_cfg, None),
            n,
            attack: json!({ "role": "malicious", "attack": enc.command(), "lambda": lambda }),
            penalty: Some(penalty.boxed()),
            metric: Some(Box::new(measure)),
        },
    )?;

    let drop = drop_points(conv.accuracy, mal.accuracy);
    let measure_mal = penalty.measure(&mal.params);
    let measure_conv = penalty.measure(&conv.params);
    let mut html = report::Report::new(&format!(
        "memaudit attack {}: {} on {}",
        enc.command(),
        super::model_name(&model_cfg),
        task.name()
    ));
    html.para(&match enc {
        Encoding::Correlation => format!(
            "Correlated value encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack B). White \
box: the malicious training code adds -lambda |r| (lambda = {lambda}) to the loss, r being the \
Pearson correlation between the first {used} weights with ndim > 1 and the secret's pixels; the \
attacker min-max rescales those weights back to images. DP-SGD does not stop it: the penalty \
depends only on the parameters and is added after the noise."
        ),
        Encoding::Sign => format!(
            "Sign encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack C). White box: the \
malicious training code adds lambda * mean max(0, -s_i theta_i) (lambda = {lambda}) to the loss, \
which pushes the first {used} weights with ndim > 1 to the signs of the secret's bits; the \
attacker reads the signs. DP-SGD does not stop it: the penalty depends only on the parameters \
and is added after the noise."
        ),
    });
    html.table(&["", "conventional", "malicious"], &model_rows(&conv, &mal));
    html.svg(&accuracy_chart(&conv, &mal));
    if !mal.trace.is_empty() {
        html.svg(&report::chart(
            &format!("{} of the malicious model", penalty.measure_name()),
            "epoch",
            penalty.measure_name(),
            &[Series::line("malicious", mal.trace.clone())],
        ));
    }

    let mut results = json!({
        "attack": enc.command(),
        "lambda": lambda,
        "scale": scale_json(&task, &model_cfg, n_params, c, seed),
        "conventional": conv.json(),
        "malicious": mal.json(),
        "accuracy_drop_points": num(drop),
        "capacity": {
            "unit": unit,
            "available": capacity,
            "used": used,
            "fraction_used": num(used as f64 / capacity.max(1) as f64),
        },
        "report": out.file("report.html").display().to_string(),
    });
    let mut text = header(enc.paper_name(), &task, &model_cfg, n_params, c);
    text += &format!(
        "\ntest accuracy: conventional {}, malicious {} ({drop:+.2} points), lambda {lambda}",
        fmt_f64(conv.accuracy),
        fmt_f64(mal.accuracy)
    );
    match &secret {
        Secret::Images { pool, secret } => {
            let (h, w) = (secret.height(), secret.width());
            let baseline = mean_image_baseline_mape(&pool.images, secret)?;
            let median = median_image_baseline_mape(&pool.images, secret)?;
            let (decoding, control, recovered) = match (&penalty, enc) {
                (Penalty::Correlation(p), _) => {
                    let decode = |params: &[f32]| -> Result<_> {
                        let d = decode_correlation_images(params, p.selection(), h, w)?;
                        let s = score_correlation_decoding(&d, secret)?;
                        Ok((d, s))
                    };
                    let (d, s) = decode(&mal.params)?;
                    let (_, sc) = decode(&conv.params)?;
                    let recovered = if s.global_inverted { invert(&d) } else { d };
                    (
                        json!({
                            "mape": num(s.global.mean_mape),
                            "cosine": num(s.global.mean_cosine),
                            "inverted": s.global_inverted,
                            "mape_best_of_two": num(s.best_of_two.mean_mape),
                            "cosine_best_of_two": num(s.best_of_two.mean_cosine),
                            "abs_pearson_r": num(measure_mal),
                        }),
                        json!({
                            "mape": num(sc.global.mean_mape),
                            "cosine": num(sc.global.mean_cosine),
                            "abs_pearson_r": num(measure_conv),
                        }),
                        recovered,
                    )
                }
                (Penalty::Sign(p), _) => {
                    let k = secret.n_images();
                    let d = decode_sign_images(&mal.params, p.selection(), k, h, w)?;
                    let s = score_images(secret, &d)?;
                    let dc = decode_sign_images(&conv.params, p.selection(), k, h, w)?;
                    let sc = score_images(secret, &dc)?;
                    (
                        json!({
                            "mape": num(s.mean_mape),
                            "cosine": num(s.mean_cosine),
                            "correct_signs": num(measure_mal),
                        }),
                        json!({
                            "mape": num(sc.mean_mape),
                            "cosine": num(sc.mean_cosine),
                            "correct_signs": num(measure_conv),
                        }),
                        d,
                    )
                }
            };
            let raw_bits = secret.bit_len();
            results["secret"] = json!({
                "source": pool.source,
                "images": secret.n_images(),
                "height": h,
                "width": w,
                "bits": raw_bits,
                "bits_per_parameter": num(bits_per_parameter(raw_bits, n_params)),
            });
            results["decoding"] = decoding.clone();
            results["decoding"]["mean_image_baseline_mape"] = num(baseline);
            results["decoding"]["median_image_baseline_mape"] = num(median);
            results["control_conventional"] = control.clone();
            let (svg, png) = image_grid(
                &out,
                secret,
                &recovered,
                c.grid_images,
                &format!("{} (lambda = {lambda})", enc.paper_name()),
            )?;
            results["grid"] = json!(png.display().to_string());
            let f = |v: &Value, k: &str| v[k].as_f64().map_or("-".into(), fmt_f64);
            html.heading("Decoding");
            html.table(
                &["", "malicious model", "conventional model (control)"],
                &[
                    vec![
                        "MAPE (0-255)".into(),
                        f(&decoding, "mape"),
                        f(&control, "mape"),
                    ],
                    vec![
                        "mean-image guess MAPE".into(),
                        fmt_f64(baseline),
                        fmt_f64(baseline),
                    ],
                    vec![
                        "median-image guess MAPE".into(),
                        fmt_f64(median),
                        fmt_f64(median),
                    ],
                    vec![
                        "|cosine|".into(),
                        f(&decoding, "cosine"),
                        f(&control, "cosine"),
                    ],
                    vec![
                        penalty.measure_name().into(),
                        fmt_f64(measure_mal),
                        fmt_f64(measure_conv),
                    ],
                ],
            );
            html.para(&format!(
                "Secret: the first {} {} ({}x{}, {} bits), carried by {used} of the {capacity} \
eligible weights. The control runs the same decoder on the conventional model.",
                secret.n_images(),
                pool.what,
                h,
                w,
                raw_bits
            ));
            if enc == Encoding::Correlation {
                html.para(&format!(
                    "One orientation for all images (the correlation's sign, one bit the \
attacker guesses). The authors' per-image best of image and inverse, which looks at the \
original, gives MAPE {}.",
                    f(&decoding, "mape_best_of_two")
                ));
            }
            html.svg(&svg);
            text += &format!(
                "\nsecret: {} {} of {h}x{w} ({raw_bits} bits) in {used} of {capacity} weights\ndecoding: MAPE {} (mean-image guess {}, median-image guess {}; the conventional model decodes to {}), |cosine| {}, {} {}",
                secret.n_images(),
                pool.what,
                f(&decoding, "mape"),
                fmt_f64(baseline),
                fmt_f64(median),
                f(&control, "mape"),
                f(&decoding, "cosine"),
                penalty.measure_name(),
                fmt_f64(measure_mal),
            );
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
            results["secret"] = json!({
                "source": "imdb",
                "documents": secret.docs().len(),
                "words": secret.n_words(),
                "bits": bits,
                "bits_per_word": secret.index_width(),
                "bits_per_parameter": num(bits_per_parameter(bits, n_params)),
            });
            results["decoding"] = json!({
                "precision": num(pr.precision),
                "recall": num(pr.recall),
                "corpus_precision": num(corpus.precision),
                "corpus_recall": num(corpus.recall),
                "documents_recovered": d.secret.docs().len(),
                "invalid_codes": d.invalid_codes,
                "correct_signs": num(measure_mal),
            });
            results["control_conventional"] = json!({
                "precision": num(prc.precision),
                "recall": num(prc.recall),
                "corpus_precision": num(corpusc.precision),
                "corpus_recall": num(corpusc.recall),
                "correct_signs": num(measure_conv),
            });
            html.heading("Decoding");
            html.table(
                &["", "malicious model", "conventional model (control)"],
                &[
                    vec![
                        "word precision (per document)".into(),
                        fmt_f64(pr.precision),
                        fmt_f64(prc.precision),
                    ],
                    vec![
                        "word recall (per document)".into(),
                        fmt_f64(pr.recall),
                        fmt_f64(prc.recall),
                    ],
                    vec![
                        "word precision (corpus)".into(),
                        fmt_f64(corpus.precision),
                        fmt_f64(corpusc.precision),
                    ],
                    vec![
                        "word recall (corpus)".into(),
                        fmt_f64(corpus.recall),
                        fmt_f64(corpusc.recall),
                    ],
                    vec![
                        "correct signs".into(),
                        fmt_f64(measure_mal),
                        fmt_f64(measure_conv),
                    ],
                ],
            );
            if let (Some(a), Some(b)) = (secret.docs().first(), d.secret.docs().first()) {
                html.heading("First review (distinct in-vocabulary words, by feature index)");
                html.pre(&format!(
                    "original:  {}\nrecovered: {}",
                    words(t, a, 60),
                    words(t, b, 60)
                ));
            }
            text += &format!(
                "\nsecret: {} reviews, {} words ({bits} bits, {} per word) in {used} of {capacity} weight signs\ndecoding: word precision {}, recall {} (corpus: {}, {}); the conventional model decodes to recall {}",
                secret.docs().len(),
                secret.n_words(),
                secret.index_width(),
                fmt_f64(pr.precision),
                fmt_f64(pr.recall),
                fmt_f64(corpus.precision),
                fmt_f64(corpus.recall),
                fmt_f64(prc.recall),
            );
        }
    }
    finish(&mut out, &html, &results)?;
    text += &format!("\nreport: {}", out.file("report.html").display());
    Ok(Report::new(text, results))
}
