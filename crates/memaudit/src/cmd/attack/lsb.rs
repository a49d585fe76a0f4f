//! `memaudit attack lsb`: LSB encoding (Song et al., attack A, white box, post-processing).
//! The conventional model is trained (or reused) once; for every b of --bits a copy of its
//! parameters gets the secret stream in its low b bits, is evaluated on the test split, and is
//! decoded back.

use anyhow::Result;
use memaudit_attacks::metrics::{
    bits_per_parameter, mean_image_baseline_mape, median_image_baseline_mape, score_images,
    word_precision_recall,
};
use memaudit_attacks::{
    AttackerKey, LsbConfig, Payload, ensure_fits, lsb_capacity_bits, lsb_embed, lsb_extract,
    lsb_stream_bits,
};
use memaudit_engine::train::evaluate;
use serde::Serialize;
use serde_json::{Value, json};

use super::secrets::{
    SecretSource, image_pool, largest_fitting_prefix, take_images, text_secret, training_documents,
    words,
};
use super::{
    CommonArgs, Task, conventional, drop_points, finish, header, image_grid, load_task, open_out,
    scale_json,
};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::report::{self, Series};

/// The authors' default secret size (`test_model.py --n 1000`).
const AUTHORS_DEFAULT_COUNT: usize = 1000;

#[derive(clap::Args, Debug, Serialize)]
pub struct LsbArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Low mantissa bits overwritten in every parameter, 1..=23 (the authors' default 16); a
    /// comma-separated list embeds into copies of one model: accuracy against b.
    #[arg(
        long,
        value_name = "B",
        value_delimiter = ',',
        default_value = "16",
        allow_negative_numbers = true
    )]
    pub bits: Vec<i64>,
    /// Encrypt the secret under this 256-bit key (64 hex digits) with ChaCha20-Poly1305, so that
    /// a wrong key fails loudly (the authors used unauthenticated AES-CBC).
    #[arg(long, value_name = "HEX", conflicts_with = "passphrase")]
    #[serde(skip)]
    pub key: Option<String>,
    /// Encrypt under a key derived from this passphrase (Argon2id).
    #[arg(long, value_name = "TEXT")]
    #[serde(skip)]
    pub passphrase: Option<String>,
}

/// --bits as b values in 1..=23, each once, in the order given.
fn parse_bits(bits: &[i64]) -> Result<Vec<u32>> {
    let mut out: Vec<u32> = Vec::new();
    for &b in bits {
        let v = u32::try_from(b).unwrap_or(0);
        if u32::try_from(b).is_err() {
            return Err(user(format!(
                "--bits {b}: b must be in 1..=23 (the low bits of a float32's 23-bit mantissa)"
            )));
        }
        // the library's message explains what happens outside the mantissa
        lsb_capacity_bits(1, v).map_err(|e| user(format!("--bits {b}: {e}")))?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Err(user("--bits: give at least one b in 1..=23"));
    }
    Ok(out)
}

fn parse_key(args: &LsbArgs) -> Result<Option<AttackerKey>> {
    Ok(match (&args.key, &args.passphrase) {
        (Some(hex), _) => {
            Some(AttackerKey::from_hex(hex).map_err(|e| user(format!("--key: {e}")))?)
        }
        (None, Some(p)) => Some(
            AttackerKey::passphrase(p.clone()).map_err(|e| user(format!("--passphrase: {e}")))?,
        ),
        (None, None) => None,
    })
}

pub fn run(args: &LsbArgs, ctx: &Ctx) -> Result<Report> {
    let c = &args.common;
    c.validate()?;
    let bits = parse_bits(&args.bits)?;
    let key = parse_key(args)?;
    let task = load_task(c, ctx)?;
    run_task(args, &bits, key, task, ctx)
}

/// The attack on loaded data (the unit tests give it generated text).
pub(super) fn run_task(
    args: &LsbArgs,
    bits: &[u32],
    key: Option<AttackerKey>,
    task: Task,
    ctx: &Ctx,
) -> Result<Report> {
    let c = &args.common;
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(&c.model)?;
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    let n_params = model.num_params();
    let seed = c.seed();
    let cfg_for = |b: u32| LsbConfig {
        bits_per_param: b,
        key: key.clone(),
        seed,
    };
    let b_min = bits.iter().copied().min().unwrap_or(1);
    let capacity_min = lsb_capacity_bits(n_params, b_min)?;

    // The secret, sized before any training so that a secret that cannot fit fails at once.
    let mut pool_images = None;
    let payload = match &task {
        Task::Image(t) => {
            let pool = image_pool(&source, t)?;
            let default = match c.secret_count {
                Some(k) => k,
                None => largest_fitting_prefix(
                    pool.images.n_images().min(AUTHORS_DEFAULT_COUNT),
                    capacity_min,
                    |k| {
                        Ok(lsb_stream_bits(
                            &Payload::Images(pool.images.first(k)?),
                            &cfg_for(b_min),
                        )?)
                    },
                )?
                .max(1),
            };
            let secret = take_images(&pool, c.secret_count, default)?;
            let payload = Payload::Images(secret);
            pool_images = Some(pool);
            payload
        }
        Task::Text(t) => {
            let docs = training_documents(t);
            let max = docs.len().min(AUTHORS_DEFAULT_COUNT);
            let k = match c.secret_count {
                Some(k) if k > docs.len() => {
                    return Err(user(format!(
                        "--secret-count {k}: the training set has only {} reviews",
                        docs.len()
                    )));
                }
                Some(k) => k,
                None => largest_fitting_prefix(max, capacity_min, |k| {
                    Ok(lsb_stream_bits(
                        &Payload::Text(text_secret(t, &docs, k)?),
                        &cfg_for(b_min),
                    )?)
                })?
                .max(1),
            };
            Payload::Text(text_secret(t, &docs, k)?)
        }
    };
    let stream_bits = lsb_stream_bits(&payload, &cfg_for(b_min))?;
    let (raw_bits, secret_what) = match &payload {
        Payload::Images(s) => (
            s.bit_len(),
            format!(
                "{} {} of {}x{}",
                s.n_images(),
                pool_images.as_ref().map_or("images", |p| p.what),
                s.height(),
                s.width()
            ),
        ),
        Payload::Text(s) => (
            s.bit_len(),
            format!(
                "{} reviews ({} distinct words each on average)",
                s.docs().len(),
                { s.n_words() / s.docs().len().max(1) }
            ),
        ),
        Payload::Bytes(b) => (b.len() as u64 * 8, format!("{} bytes", b.len())),
    };
    let encryption = if key.is_some() { " and encryption" } else { "" };
    for &b in bits {
        ensure_fits(
            stream_bits,
            n_params as u64 * u64::from(b),
            "bits",
            format!("{n_params} parameters x {b} low bits (after compression{encryption})"),
        )
        .map_err(|e| {
            let count = c
                .secret_count
                .map_or(String::new(), |k| format!("--secret-count {k}, "));
            user(format!("{count}--bits {b}: {e}"))
        })?;
    }

    let reused = super::reused_conventional(c, ctx, &task, &model_cfg)?;
    let mut out = open_out("lsb", args, c, seed)?;
    let conv = conventional(c, ctx, &out, &task, &model_cfg, seed, reused)?;

    let test = task.test_set(&model_cfg);
    let mut settings = Vec::new();
    let mut rows = Vec::new();
    let mut decoded_last = None;
    for &b in bits {
        let mut params = conv.params.clone();
        let embedded = lsb_embed(&mut params, &payload, &cfg_for(b))?;
        let r = evaluate(&model, &params, test.as_ref(), 256)?;
        // The attacker's side: read the bits back from the released parameters.
        let decoded = lsb_extract(&params, b, key.as_ref())?;
        let exact = decoded == payload;
        let decoding = match (&payload, &decoded) {
            (Payload::Images(a), Payload::Images(d)) if a.n_images() == d.n_images() => {
                let s = score_images(a, d)?;
                json!({ "mape": num(s.mean_mape), "cosine": num(s.mean_cosine) })
            }
            (Payload::Text(a), Payload::Text(d)) => {
                let pr = word_precision_recall(a, d);
                json!({ "precision": num(pr.precision), "recall": num(pr.recall) })
            }
            _ => json!({ "mape": Value::Null }),
        };
        let drop = drop_points(conv.accuracy, r.accuracy);
        rows.push(vec![
            b.to_string(),
            fmt_f64(r.accuracy),
            format!("{drop:+.2}"),
            format!(
                "{:.1}%",
                100.0 * embedded.stream_bits as f64 / embedded.capacity_bits as f64
            ),
            fmt_f64(embedded.max_relative_change),
            if exact {
                "exact".into()
            } else {
                "differs".into()
            },
        ]);
        settings.push(json!({
            "bits": b,
            "test_accuracy": num(r.accuracy),
            "test_loss": num(r.loss),
            "accuracy_drop_points": num(drop),
            "capacity_bits": embedded.capacity_bits,
            "stream_bits": embedded.stream_bits,
            "capacity_used": num(embedded.stream_bits as f64 / embedded.capacity_bits as f64),
            "bits_per_parameter": num(bits_per_parameter(embedded.stream_bits, n_params)),
            "params_changed": embedded.params_changed,
            "max_relative_change": num(embedded.max_relative_change),
            "round_trip_exact": exact,
            "decoding": decoding,
        }));
        decoded_last = Some(decoded);
    }

    let mut html = report::Report::new(&format!(
        "memaudit attack lsb: {} on {}",
        super::model_name(&model_cfg),
        task.name()
    ));
    html.para(
        "LSB encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack A). White box: after honest \
training, malicious code overwrites the low b mantissa bits of every parameter with the \
compressed (and, with a key, encrypted) secret; whoever gets the parameters reads it back. DP-SGD \
cannot help: this is post-processing of the trained parameters by the training code itself.",
    );
    html.table(
        &["", ""],
        &[
            vec!["secret".into(), secret_what.clone()],
            vec!["secret bits (raw)".into(), raw_bits.to_string()],
            vec![
                "stream bits (compressed + envelope)".into(),
                stream_bits.to_string(),
            ],
            vec!["parameters".into(), n_params.to_string()],
            vec!["encrypted".into(), key.is_some().to_string()],
            vec!["conventional test accuracy".into(), fmt_f64(conv.accuracy)],
            vec!["conventional run".into(), conv.run.display().to_string()],
        ],
    );
    html.heading("Accuracy against b");
    html.table(
        &[
            "b",
            "test accuracy",
            "drop (points)",
            "capacity used",
            "max relative change",
            "decoded",
        ],
        &rows,
    );
    let acc: Vec<(f64, f64)> = settings
        .iter()
        .map(|s| {
            (
                s["bits"].as_f64().unwrap_or(0.0),
                s["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let (lo, hi) = (
        f64::from(b_min),
        f64::from(bits.iter().copied().max().unwrap_or(b_min)),
    );
    html.svg(&report::chart(
        "Test accuracy against b",
        "low bits overwritten per parameter (b)",
        "test accuracy",
        &[
            Series::line("with the secret embedded", acc),
            Series::line(
                "conventional",
                vec![(lo, conv.accuracy), (hi, conv.accuracy)],
            ),
        ],
    ));

    let mut results = json!({
        "attack": "lsb",
        "scale": scale_json(&task, &model_cfg, n_params, c, seed),
        "secret": {
            "source": source.name(),
            "description": secret_what,
            "raw_bits": raw_bits,
            "stream_bits": stream_bits,
            "secret_bits_per_parameter": num(bits_per_parameter(raw_bits, n_params)),
            "encrypted": key.is_some(),
        },
        "conventional": conv.json(),
        "settings": settings,
        "report": out.file("report.html").display().to_string(),
    });
    match (&payload, decoded_last.as_ref()) {
        (Payload::Images(secret), Some(Payload::Images(decoded))) => {
            let pool = pool_images.as_ref().map(|p| &p.images).unwrap_or(secret);
            let baseline = mean_image_baseline_mape(pool, secret)?;
            results["mean_image_baseline_mape"] = num(baseline);
            results["median_image_baseline_mape"] = num(median_image_baseline_mape(pool, secret)?);
            let (svg, png) = image_grid(
                &out,
                secret,
                decoded,
                c.grid_images,
                &format!("LSB decoding at b = {}", bits[bits.len() - 1]),
            )?;
            html.heading("Recovered images");
            html.para(&format!(
                "Decoding is exact: MAPE 0 against a mean-image guess of {:.1} (0-255 scale).",
                baseline
            ));
            html.svg(&svg);
            results["grid"] = json!(png.display().to_string());
        }
        (Payload::Text(secret), Some(Payload::Text(decoded))) => {
            if let (Task::Text(t), Some(a), Some(d)) =
                (&task, secret.docs().first(), decoded.docs().first())
            {
                html.heading("First review");
                html.pre(&format!(
                    "original:  {}\nrecovered: {}",
                    words(t, a, 60),
                    words(t, d, 60)
                ));
            }
        }
        _ => {}
    }
    finish(&mut out, &html, &results)?;

    let mut text = header("LSB encoding", &task, &model_cfg, n_params, c);
    text += &format!(
        "\nsecret: {secret_what} ({raw_bits} bits raw, {stream_bits} bits compressed{})",
        if key.is_some() { " and encrypted" } else { "" }
    );
    text += &format!(
        "\nconventional test accuracy {}\n  b  accuracy  drop(points)  capacity used  decoded",
        fmt_f64(conv.accuracy)
    );
    for r in &rows {
        text += &format!(
            "\n{:>3}  {:>8}  {:>12}  {:>13}  {}",
            r[0], r[1], r[2], r[3], r[5]
        );
    }
    text += &format!("\nreport: {}", out.file("report.html").display());
    Ok(Report::new(text, results))
}
