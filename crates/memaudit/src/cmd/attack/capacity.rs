//! `memaudit attack capacity`: capacity abuse (Song et al., attack D, black box). The malicious
//! training code only adds examples: synthetic inputs, regenerable from the attacker's seed,
//! labelled so that the labels spell the secret. The attacker then queries the deployed model on
//! the regenerated inputs. With the DP-SGD flags the synthetic examples are clipped and noised
//! like any other, which is what bounds how much survives.

use std::sync::Arc;

use anyhow::Result;
use memaudit_attacks::metrics::{
    mean_image_baseline_mape, median_image_baseline_mape, score_images,
};
use memaudit_attacks::{AttackError, CapacityAbuse, LabelScheme, SyntheticInputs};
use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::train::Dataset;
use memaudit_engine::{Batch, Model, ModelConfig, Tensor};
use serde::Serialize;
use serde_json::json;

use super::secrets::{SecretSource, image_pool, take_images};
use super::{
    CommonArgs, Task, TrainSpec, accuracy_chart, conventional, drop_points, finish, header,
    image_grid, load_task, model_rows, open_out, predict_labels, scale_json, train_config,
    train_model,
};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::report::{self, Series};

#[derive(clap::Args, Debug, Serialize)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Synthetic inputs the attacker may add, as a fraction of the real training examples (the
    /// authors' p); the secret is as many whole images as they carry.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.1,
        allow_negative_numbers = true
    )]
    pub synthetic_ratio: f64,
    /// How labels carry the secret: nibble-pairs (the authors' code: a pixel's high 4 bits as
    /// two labels, 2 bits per query, needs >= 9 classes) or bits (floor(log2 classes) bits per
    /// label). Default: nibble-pairs with >= 9 classes, else bits.
    #[arg(long, value_name = "SCHEME")]
    pub labels: Option<String>,
    /// Synthetic inputs: noise (uniform pixels from ChaCha8 seeded with --input-seed, the
    /// paper's GenData; recommended for the GroupNorm CNN) or markers (the authors' sparse
    /// two-pixel inputs).
    #[arg(long, value_name = "KIND", default_value = "noise")]
    pub inputs: String,
    /// The attacker's seed for the synthetic inputs (default: --seed).
    #[arg(long, value_name = "SEED")]
    pub input_seed: Option<u64>,
    /// Put every synthetic example this many times in the training set (the malicious code
    /// oversamples its own examples so that a few epochs memorise them; the authors instead
    /// trained 100 epochs). Under DP-SGD each copy is clipped and noised as its own example.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub synthetic_repeat: usize,
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

pub fn run(args: &CapacityArgs, ctx: &Ctx) -> Result<Report> {
    let c = &args.common;
    c.validate()?;
    let ratio = args.synthetic_ratio;
    if !(ratio > 0.0 && ratio.is_finite()) {
        return Err(user(format!(
            "--synthetic-ratio {ratio}: must be a finite number > 0 (synthetic inputs per real training example)"
        )));
    }
    if args.synthetic_repeat == 0 {
        return Err(user("--synthetic-repeat must be at least 1"));
    }
    let inputs_kind = args.inputs.as_str();
    if !["noise", "markers"].contains(&inputs_kind) {
        return Err(user(format!(
            "--inputs {inputs_kind}: use noise or markers"
        )));
    }
    let task = load_task(c, ctx)?;
    let Task::Image(t) = &task else {
        return Err(user(
            "--dataset imdb: capacity abuse's synthetic inputs are images; use mnist, fashion-mnist or digits (for documents use `memaudit attack sign --dataset imdb`)",
        ));
    };
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(&c.model)?;
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    let n_params = model.num_params();
    let seed = c.seed();
    let input_seed = args.input_seed.unwrap_or(seed);
    let scheme = match args.labels.as_deref() {
        None if t.classes >= 9 => LabelScheme::NibblePairs,
        None => LabelScheme::Bits,
        Some("nibble-pairs") => LabelScheme::NibblePairs,
        Some("bits") => LabelScheme::Bits,
        Some(other) => {
            return Err(user(format!("--labels {other}: use nibble-pairs or bits")));
        }
    };
    let inputs = match inputs_kind {
        "markers" => SyntheticInputs::SparseMarkers,
        _ => SyntheticInputs::SeededNoise { seed: input_seed },
    };
    let attack = CapacityAbuse::new(t.classes, scheme, inputs, t.height, t.width)
        .map_err(|e| user(format!("--labels {}: {e}", scheme_name(scheme))))?;
    let n_real = t.train.len();
    let budget = (ratio * n_real as f64).round() as usize;
    let pool = image_pool(&source, t)?;
    let (h, w) = (pool.images.height(), pool.images.width());
    let per_image = attack.queries_for_images(1, h, w);
    let fit = attack.max_images(budget, h, w);
    if fit == 0 && c.secret_count.is_none() {
        return Err(user(format!(
            "--synthetic-ratio {ratio}: {budget} synthetic inputs carry {} bits, but one {h}x{w} image needs {per_image} inputs ({} bits) under --labels {}; raise --synthetic-ratio to at least {:.4}",
            budget as u64 * u64::from(attack.bits_per_query()),
            per_image as u64 * u64::from(attack.bits_per_query()),
            scheme_name(scheme),
            per_image as f64 / n_real as f64
        )));
    }
    let secret = take_images(&pool, c.secret_count, fit)?;
    let set = attack
        .encode_images(&secret, Some(budget))
        .map_err(|e| match (&e, c.secret_count) {
            (AttackError::SecretTooLarge { .. }, Some(k)) => user(format!(
                "--secret-count {k}: {e}; that is at most {fit} images of {h}x{w} at --synthetic-ratio {ratio}"
            )),
            _ => user(e.to_string()),
        })?;
    let example_shape: Vec<usize> = if matches!(model_cfg, ModelConfig::Mlp { .. }) {
        vec![t.height * t.width]
    } else {
        t.train.example_shape.clone()
    };

    let reused = super::reused_conventional(c, ctx, &task, &model_cfg)?;
    let mut out = open_out("capacity", args, c, seed)?;
    let conv = conventional(c, ctx, &out, &task, &model_cfg, seed, reused)?;
    let synthetic = DenseDataset::new(
        set.inputs.clone(),
        t.train.example_shape.clone(),
        set.labels.clone(),
    )?;
    let n_mal = n_real + args.synthetic_repeat * set.len();
    let cfg = train_config(c, &model_cfg, n_mal, seed, ctx)?;
    let labels = set.labels.clone();
    let shape = example_shape.clone();
    let inputs_for_trace = set.inputs.clone();
    let measure = move |m: &Model, p: &[f32]| {
        predict_labels(m, p, &inputs_for_trace, &shape)
            .map_or(f64::NAN, |pred| label_accuracy(&pred, &labels))
    };
    let mal = train_model(
        ctx,
        &out,
        &t.data,
        TrainSpec {
            sub: "malicious",
            role: "malicious",
            cfg,
            prepared: task.prepared(
                &model_cfg,
                Some(Box::new(Augmented {
                    real: t.train.clone(),
                    synthetic,
                    repeat: args.synthetic_repeat,
                })),
            ),
            n: n_mal,
            attack: json!({
                "role": "malicious",
                "attack": "capacity",
                "synthetic_inputs": set.len(),
                "synthetic_repeat": args.synthetic_repeat,
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
    // What a model that memorised every synthetic label would give (nibble pairs keep 4 bits).
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
    let drop = drop_points(conv.accuracy, mal.accuracy);
    let bpq = attack.bits_per_query();

    let mut html = report::Report::new(&format!(
        "memaudit attack capacity: {} on {}",
        super::model_name(&model_cfg),
        task.name()
    ));
    html.para(&format!(
        "Capacity abuse (Song, Ristenpart, Shmatikov, CCS 2017, attack D). Black box: the \
malicious training code adds {} synthetic inputs ({}, regenerated from the attacker's seed) to \
the {n_real} real examples, labelled so that the labels spell the secret ({} scheme, {bpq} bits \
per query). After deployment the attacker queries the model on the regenerated inputs. {}",
        set.len(),
        if inputs_kind == "noise" {
            "uniform noise"
        } else {
            "sparse markers"
        },
        scheme_name(scheme),
        if c.privacy.is_private() {
            "Both models were trained with DP-SGD: every synthetic example was clipped and noised like any other."
        } else {
            "Training was not private."
        }
    ));
    html.table(&["", "conventional", "malicious"], &model_rows(&conv, &mal));
    html.svg(&accuracy_chart(&conv, &mal));
    if !mal.trace.is_empty() {
        html.svg(&report::chart(
            "Synthetic labels the malicious model predicts right",
            "epoch",
            "fraction of synthetic labels",
            &[Series::line("malicious", mal.trace.clone())],
        ));
    }
    html.heading("Decoding");
    html.table(
        &["", "malicious model", "conventional model (control)"],
        &[
            vec![
                "MAPE (0-255)".into(),
                fmt_f64(s_mal.mean_mape),
                fmt_f64(s_conv.mean_mape),
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
                "MAPE if every label were memorised".into(),
                fmt_f64(perfect.mean_mape),
                fmt_f64(perfect.mean_mape),
            ],
            vec![
                "|cosine|".into(),
                fmt_f64(s_mal.mean_cosine),
                fmt_f64(s_conv.mean_cosine),
            ],
            vec![
                "synthetic labels right".into(),
                fmt_f64(acc_mal),
                fmt_f64(acc_conv),
            ],
            vec![
                "most frequent label's share".into(),
                fmt_f64(majority),
                fmt_f64(majority),
            ],
        ],
    );
    let (svg, png) = image_grid(
        &out,
        &secret,
        &dec_mal.secret,
        c.grid_images,
        &format!("capacity abuse, synthetic ratio {ratio}"),
    )?;
    html.svg(&svg);

    let results = json!({
        "attack": "capacity",
        "scale": scale_json(&task, &model_cfg, n_params, c, seed),
        "conventional": conv.json(),
        "malicious": mal.json(),
        "accuracy_drop_points": num(drop),
        "synthetic": {
            "ratio": ratio,
            "budget": budget,
            "inputs": set.len(),
            "repeat": args.synthetic_repeat,
            "fraction_of_training_set": num((n_mal - n_real) as f64 / n_mal as f64),
            "labels": scheme_name(scheme),
            "input_kind": inputs_kind,
            "input_seed": input_seed,
            "bits_per_query": bpq,
        },
        "secret": {
            "source": pool.source,
            "images": secret.n_images(),
            "height": h,
            "width": w,
            "bits": secret.bit_len(),
            "bits_carried": set.len() as u64 * u64::from(bpq),
        },
        "capacity": {
            "unit": "synthetic inputs",
            "available": budget,
            "used": set.len(),
            "fraction_used": num(set.len() as f64 / budget.max(1) as f64),
        },
        "decoding": {
            "mape": num(s_mal.mean_mape),
            "cosine": num(s_mal.mean_cosine),
            "label_accuracy": num(acc_mal),
            "invalid_labels": dec_mal.invalid_labels,
            "mean_image_baseline_mape": num(baseline),
            "median_image_baseline_mape": num(median),
            "perfect_memorization_mape": num(perfect.mean_mape),
            "majority_label_share": num(majority),
        },
        "control_conventional": {
            "mape": num(s_conv.mean_mape),
            "cosine": num(s_conv.mean_cosine),
            "label_accuracy": num(acc_conv),
            "invalid_labels": dec_conv.invalid_labels,
        },
        "grid": png.display().to_string(),
        "report": out.file("report.html").display().to_string(),
    });
    finish(&mut out, &html, &results)?;

    let mut text = header("capacity abuse", &task, &model_cfg, n_params, c);
    text += &format!(
        "\ntest accuracy: conventional {}, malicious {} ({drop:+.2} points){}",
        fmt_f64(conv.accuracy),
        fmt_f64(mal.accuracy),
        mal.epsilon
            .map_or(String::new(), |e| format!(", epsilon {}", fmt_f64(e)))
    );
    text += &format!(
        "\nsecret: {} {} of {h}x{w} in {} synthetic inputs x {} ({} labels, {bpq} bits per query)",
        secret.n_images(),
        pool.what,
        set.len(),
        args.synthetic_repeat,
        scheme_name(scheme)
    );
    text += &format!(
        "\ndecoding: MAPE {} (mean-image guess {}, median-image guess {}, perfect memorisation {}; the conventional model decodes to {}), |cosine| {}, synthetic labels right {} (most frequent label {})",
        fmt_f64(s_mal.mean_mape),
        fmt_f64(baseline),
        fmt_f64(median),
        fmt_f64(perfect.mean_mape),
        fmt_f64(s_conv.mean_mape),
        fmt_f64(s_mal.mean_cosine),
        fmt_f64(acc_mal),
        fmt_f64(majority)
    );
    text += &format!("\nreport: {}", out.file("report.html").display());
    Ok(Report::new(text, results))
}
