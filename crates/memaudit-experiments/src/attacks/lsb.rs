//! LSB encoding (Song et al., attack A, white box, post-processing): `memaudit attack lsb`.
//! The conventional model is trained (or reused) once; for every b of `bits` a copy of its
//! parameters gets the secret stream in its low b bits, is evaluated on the test split, and is
//! decoded back.

use std::path::PathBuf;

use memaudit_attacks::metrics::{
    bits_per_parameter, mean_image_baseline_mape, median_image_baseline_mape, score_images,
    word_precision_recall,
};
use memaudit_attacks::{
    AttackerKey, LsbConfig as EmbedConfig, Payload, ensure_fits, lsb_capacity_bits, lsb_embed,
    lsb_extract, lsb_stream_bits,
};
use memaudit_engine::train::evaluate;
use serde::{Deserialize, Serialize};

use super::secrets::{
    SecretSource, image_pool, largest_fitting_prefix, take_images, text_secret, training_documents,
    words,
};
use super::task::{
    AttackHooks, Env, Grid, Scale, Task, TrainedModel, build_model, conventional, finish,
    image_grid, load_task, open_out, reused_conventional, scale,
};
use super::{AttackSettings, drop_points};
use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;

/// The authors' default secret size (`test_model.py --n 1000`).
const AUTHORS_DEFAULT_COUNT: usize = 1000;

/// `memaudit attack lsb`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LsbConfig {
    pub common: AttackSettings,
    /// Low mantissa bits overwritten in every parameter, 1..=23 (the authors' default 16); several
    /// embed into copies of one model: accuracy against b.
    pub bits: Vec<i64>,
    /// Encrypt the secret under this 256-bit key (64 hex digits) with ChaCha20-Poly1305. Key
    /// material is never read from or written to a config file or run.json (it would end up in
    /// run folders and shared files): the caller sets it.
    #[serde(skip)]
    pub key: Option<String>,
    /// Encrypt under a key derived from this passphrase (Argon2id); like `key`, never serialised.
    #[serde(skip)]
    pub passphrase: Option<String>,
}

impl Default for LsbConfig {
    fn default() -> Self {
        Self {
            common: AttackSettings::default(),
            bits: vec![16],
            key: None,
            passphrase: None,
        }
    }
}

impl ExperimentConfig for LsbConfig {
    const NAME: &'static str = "attack lsb";

    fn validate(&self) -> Result<()> {
        self.common.validate()?;
        parse_bits(&self.bits)?;
        if self.key.is_some() && self.passphrase.is_some() {
            return invalid("key", "(set)", "give a key or a passphrase, not both");
        }
        if let Some(hex) = &self.key {
            AttackerKey::from_hex(hex).map_err(|e| setting("key", e))?;
        }
        Ok(())
    }
}

fn setting(field: &str, e: impl std::error::Error + Send + Sync + 'static) -> ExperimentError {
    ExperimentError::Setting {
        field: field.into(),
        source: Box::new(e),
    }
}

/// `bits` as b values in 1..=23, each once, in the order given.
fn parse_bits(bits: &[i64]) -> Result<Vec<u32>> {
    let mut out: Vec<u32> = Vec::new();
    for &b in bits {
        let Ok(v) = u32::try_from(b) else {
            return invalid(
                "bits",
                b,
                "b must be in 1..=23 (the low bits of a float32's 23-bit mantissa)",
            );
        };
        // the library's message explains what happens outside the mantissa
        lsb_capacity_bits(1, v).map_err(|e| ExperimentError::Invalid {
            field: "bits".into(),
            value: b.to_string(),
            reason: e.to_string(),
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        return invalid("bits", "[]", "give at least one b in 1..=23");
    }
    Ok(out)
}

fn parse_key(cfg: &LsbConfig) -> Result<Option<AttackerKey>> {
    Ok(match (&cfg.key, &cfg.passphrase) {
        (Some(hex), _) => Some(AttackerKey::from_hex(hex).map_err(|e| setting("key", e))?),
        (None, Some(p)) => {
            Some(AttackerKey::passphrase(p.clone()).map_err(|e| setting("passphrase", e))?)
        }
        (None, None) => None,
    })
}

/// What the attacker reads back at one b.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum LsbDecoding {
    Images {
        mape: Num,
        cosine: Num,
    },
    Text {
        precision: Num,
        recall: Num,
    },
    /// A stream that decoded to another number of images (or not to images).
    Undecoded {
        mape: Option<Num>,
    },
}

/// One b of `bits`.
#[derive(Clone, Debug, Serialize)]
pub struct LsbSetting {
    pub bits: u32,
    pub test_accuracy: Num,
    pub test_loss: Num,
    pub accuracy_drop_points: Num,
    pub capacity_bits: u64,
    pub stream_bits: u64,
    pub capacity_used: Num,
    pub bits_per_parameter: Num,
    pub params_changed: usize,
    pub max_relative_change: Num,
    pub round_trip_exact: bool,
    pub decoding: LsbDecoding,
}

/// The secret of an LSB run.
#[derive(Clone, Debug, Serialize)]
pub struct LsbSecret {
    pub source: String,
    pub description: String,
    pub raw_bits: u64,
    pub stream_bits: u64,
    pub secret_bits_per_parameter: Num,
    pub encrypted: bool,
}

/// An LSB run. Serialised, it is `memaudit attack lsb --json` (and run.json's `results`).
#[derive(Clone, Debug, Serialize)]
pub struct LsbResult {
    pub attack: &'static str,
    pub scale: Scale,
    pub secret: LsbSecret,
    pub conventional: TrainedModel,
    pub settings: Vec<LsbSetting>,
    /// Where the caller writes the HTML report.
    pub report: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_image_baseline_mape: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_image_baseline_mape: Option<Num>,
    /// `recovered.png` (image secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<PathBuf>,
    /// The grid as SVG, for the report.
    #[serde(skip)]
    pub grid_svg: Option<String>,
    /// The first review, original and recovered, as words (text secrets).
    #[serde(skip)]
    pub first_review: Option<(String, String)>,
}

/// Run the attack as `cfg` says.
pub fn run(cfg: &LsbConfig, observer: &mut dyn Observer) -> Result<LsbResult> {
    run_with(cfg, observer, AttackHooks::default())
}

/// [`run`] with the caller's hooks.
pub fn run_with(
    cfg: &LsbConfig,
    observer: &mut dyn Observer,
    hooks: AttackHooks<'_>,
) -> Result<LsbResult> {
    cfg.validate()?;
    let bits = parse_bits(&cfg.bits)?;
    let key = parse_key(cfg)?;
    let task = load_task(&cfg.common, observer)?;
    run_task(
        cfg,
        &bits,
        key,
        task,
        &mut Env {
            obs: observer,
            hooks,
        },
    )
}

/// The attack on loaded data (the unit tests give it generated text).
pub(crate) fn run_task(
    cfg: &LsbConfig,
    bits: &[u32],
    key: Option<AttackerKey>,
    task: Task,
    env: &mut Env<'_, '_>,
) -> Result<LsbResult> {
    let c = &cfg.common;
    let source = SecretSource::parse(c.secret.as_deref(), &task)?;
    let model_cfg = task.model_config(c)?;
    let model = build_model(&model_cfg)?;
    let n_params = model.num_params();
    let seed = c.seed();
    let cfg_for = |b: u32| EmbedConfig {
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
                    return invalid(
                        "common.secret_count",
                        k,
                        format!("the training set has only {} reviews", docs.len()),
                    );
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
        .map_err(|e| ExperimentError::Invalid {
            field: "bits".into(),
            value: b.to_string(),
            reason: match c.secret_count {
                // `common.secret_count` as the caller names it (--secret-count).
                Some(k) => format!("{e} (for `common.secret_count` {k})"),
                None => e.to_string(),
            },
        })?;
    }

    let reused = reused_conventional(c, env.obs, &task, &model_cfg)?;
    let mut out = open_out("lsb", cfg, c, seed)?;
    let conv = conventional(c, env, &out, &task, &model_cfg, seed, reused)?;

    let test = task.test_set(&model_cfg);
    let mut settings = Vec::new();
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
                LsbDecoding::Images {
                    mape: Num(s.mean_mape),
                    cosine: Num(s.mean_cosine),
                }
            }
            (Payload::Text(a), Payload::Text(d)) => {
                let pr = word_precision_recall(a, d);
                LsbDecoding::Text {
                    precision: Num(pr.precision),
                    recall: Num(pr.recall),
                }
            }
            _ => LsbDecoding::Undecoded { mape: None },
        };
        settings.push(LsbSetting {
            bits: b,
            test_accuracy: Num(r.accuracy),
            test_loss: Num(r.loss),
            accuracy_drop_points: Num(drop_points(conv.accuracy(), r.accuracy)),
            capacity_bits: embedded.capacity_bits,
            stream_bits: embedded.stream_bits,
            capacity_used: Num(embedded.stream_bits as f64 / embedded.capacity_bits as f64),
            bits_per_parameter: Num(bits_per_parameter(embedded.stream_bits, n_params)),
            params_changed: embedded.params_changed,
            max_relative_change: Num(embedded.max_relative_change),
            round_trip_exact: exact,
            decoding,
        });
        decoded_last = Some(decoded);
    }

    let mut result = LsbResult {
        attack: "lsb",
        scale: scale(&task, &model_cfg, n_params, c, seed),
        secret: LsbSecret {
            source: source.name(),
            description: secret_what,
            raw_bits,
            stream_bits,
            secret_bits_per_parameter: Num(bits_per_parameter(raw_bits, n_params)),
            encrypted: key.is_some(),
        },
        conventional: conv,
        settings,
        report: out.file("report.html"),
        mean_image_baseline_mape: None,
        median_image_baseline_mape: None,
        grid: None,
        grid_svg: None,
        first_review: None,
    };
    match (&payload, decoded_last.as_ref()) {
        (Payload::Images(secret), Some(Payload::Images(decoded))) => {
            let pool = pool_images.as_ref().map(|p| &p.images).unwrap_or(secret);
            result.mean_image_baseline_mape = Some(Num(mean_image_baseline_mape(pool, secret)?));
            result.median_image_baseline_mape =
                Some(Num(median_image_baseline_mape(pool, secret)?));
            let Grid { svg, png } = image_grid(
                &out,
                secret,
                decoded,
                c.grid_images,
                &format!("LSB decoding at b = {}", bits[bits.len() - 1]),
            )?;
            result.grid = Some(png);
            result.grid_svg = Some(svg);
        }
        (Payload::Text(secret), Some(Payload::Text(decoded))) => {
            if let (Task::Text(t), Some(a), Some(d)) =
                (&task, secret.docs().first(), decoded.docs().first())
            {
                result.first_review = Some((words(t, a, 60), words(t, d, 60)));
            }
        }
        _ => {}
    }
    finish(&mut out, &result)?;
    Ok(result)
}
