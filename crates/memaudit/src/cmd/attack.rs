//! `memaudit attack lsb|correlation|sign|capacity`: Song, Ristenpart and Shmatikov's malicious
//! training algorithms ("Machine Learning Models that Remember Too Much", CCS 2017) end to end.
//!
//! Each command trains a conventional model and a malicious one with the same data, model,
//! optimizer and seed (LSB encoding needs no malicious training: it post-processes the
//! conventional model). It then decodes the secret from the malicious model, as the attacker
//! would, and reports both accuracies, the capacity used, the decoding quality next to the
//! mean-image guess and to the same decoder run on the conventional model (the control), and a
//! grid of recovered images next to the originals.
//!
//! Run folder: `OUT/run.json` and `OUT/report.html` for the attack, `OUT/recovered.png` (the
//! grid), and `OUT/conventional/` and `OUT/malicious/`, each an ordinary training run
//! (`metrics.csv`, checkpoints, its own report) that `memaudit eval --run` reads and that
//! `--conventional` can reuse in later attacks.

mod capacity;
mod lsb;
mod regulariser;
mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use memaudit_attacks::{AttackError, ImageSecret, comparison_grid, encode_png, grid_svg};
use memaudit_engine::datasets::{DenseDataset, SparseDataset};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{Dataset, EpochInfo, TrainConfig, Trainer, evaluate};
use memaudit_engine::{Batch, Model, ModelConfig, ParamPenalty, Tensor};
use serde::Serialize;
use serde_json::{Value, json};

use super::args::{InputShape, ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::train::{Prepared, flatten_for, model_name, privacy_config, train_with_report};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64, num, opt_num};
use crate::report::{self, Series};
use crate::rundir::{Reuse, RunDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub attack: Attack,
}

#[derive(clap::Subcommand, Debug)]
pub enum Attack {
    /// LSB encoding (white box): after honest training, overwrite the low b bits of every
    /// parameter with the compressed (optionally encrypted) secret; report accuracy against b.
    Lsb(lsb::LsbArgs),
    /// Correlated value encoding (white box): a malicious regulariser -lambda |Pearson r| between
    /// the weights and the secret's pixels; decode by min-max rescaling the weights.
    Correlation(regulariser::PenaltyArgs),
    /// Sign encoding (white box): a malicious regulariser lambda * mean max(0, -s_i theta_i) that
    /// writes the secret's bits into the weights' signs (images, or imdb documents).
    Sign(regulariser::PenaltyArgs),
    /// Capacity abuse (black box): add synthetic inputs, regenerated from a seed, whose labels
    /// spell the secret; read it back by querying the model (works through DP-SGD flags too).
    Capacity(capacity::CapacityArgs),
}

/// Flags every attack shares: data, secret, model, training, privacy and the run folder.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct CommonArgs {
    /// Training data: mnist, fashion-mnist, digits (8x8, quick runs) or imdb (bag-of-words
    /// logistic regression; lsb and sign only).
    #[arg(long, alias = "data", default_value = "mnist")]
    pub dataset: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training examples (a quick run; the report states the scale).
    #[arg(long, value_name = "N")]
    pub max_train: Option<usize>,
    /// imdb: TF-IDF features of the logistic regression (the paper's 10^5).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub features: usize,
    /// What to smuggle out: train-images (the first training images, the paper's choice),
    /// lfw (faces of the LFW subset, 25x25), imdb (training reviews as word indices) or a folder
    /// of PNG images of one size (default: train-images, or imdb for --dataset imdb).
    #[arg(long, value_name = "SOURCE")]
    pub secret: Option<String>,
    /// Images (or documents) to encode (default: as many as the attack's capacity holds; LSB
    /// encoding: as many as fit at the smallest --bits, at most 1000, the authors' default).
    #[arg(long, value_name = "K")]
    pub secret_count: Option<usize>,
    /// Reuse the conventional model of an earlier run instead of training it: a `memaudit train`
    /// folder or an attack's OUT/conventional. Data, model and size must match.
    #[arg(long, value_name = "DIR")]
    pub conventional: Option<PathBuf>,
    /// Image pairs (original, recovered) in the report's grid.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub grid_images: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    match &args.attack {
        Attack::Lsb(a) => lsb::run(a, ctx),
        Attack::Correlation(a) => regulariser::run(regulariser::Encoding::Correlation, a, ctx),
        Attack::Sign(a) => regulariser::run(regulariser::Encoding::Sign, a, ctx),
        Attack::Capacity(a) => capacity::run(a, ctx),
    }
}

impl CommonArgs {
    /// Checks of flags that need no data (so a bad flag fails before anything is loaded).
    fn validate(&self) -> Result<()> {
        self.privacy.validate()?;
        if self.run.epochs == 0 {
            return Err(user("--epochs must be at least 1"));
        }
        if self.max_train == Some(0) {
            return Err(user("--max-train must be at least 1"));
        }
        if self.secret_count == Some(0) {
            return Err(user("--secret-count must be at least 1"));
        }
        if self.grid_images == 0 {
            return Err(user("--grid-images must be at least 1"));
        }
        if self.features == 0 {
            return Err(user("--features must be at least 1"));
        }
        Ok(())
    }

    fn data_args(&self) -> DataArgs {
        DataArgs {
            data: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            level: "char".into(),
            seq_len: 50,
            valid_fraction: 0.1,
            max_train: self.max_train,
            vocab_size: 10_000,
            standardize: false,
        }
    }

    /// The seed: --seed, else the one recorded by the run being resumed, else a fresh one.
    fn seed(&self) -> u64 {
        if let Some(s) = self.run.seed {
            return s;
        }
        if self.run.resume {
            let recorded = std::fs::read(self.run.out.join("run.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["seed"].as_u64());
            if let Some(s) = recorded {
                return s;
            }
        }
        self.run.seed()
    }
}

/// A dataset shared by the conventional and the malicious run (no copy of the examples).
struct Shared<D>(Arc<D>);

impl<D: Dataset + Send> Dataset for Shared<D> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        self.0.batch(idx)
    }
}

/// The training data of an image attack.
pub struct ImageTask {
    pub data: DataArgs,
    pub train: Arc<DenseDataset>,
    pub test: Arc<DenseDataset>,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// Every training image on the 0-255 scale: the default secret and the population of the
    /// mean-image baseline.
    pub train_images: ImageSecret,
}

/// The training data of the text variant (IMDB bag-of-words logistic regression).
pub struct TextTask {
    pub data: DataArgs,
    pub train: Arc<SparseDataset>,
    pub test: Arc<SparseDataset>,
    /// Feature index -> word.
    pub terms: Vec<String>,
}

pub enum Task {
    Image(ImageTask),
    Text(TextTask),
}

impl Task {
    fn name(&self) -> &str {
        match self {
            Task::Image(t) => &t.data.data,
            Task::Text(t) => &t.data.data,
        }
    }

    fn n_train(&self) -> usize {
        match self {
            Task::Image(t) => t.train.len(),
            Task::Text(t) => t.train.len(),
        }
    }

    fn n_test(&self) -> usize {
        match self {
            Task::Image(t) => t.test.len(),
            Task::Text(t) => t.test.len(),
        }
    }

    fn input_shape(&self) -> InputShape {
        match self {
            Task::Image(t) => InputShape::Image {
                channels: 1,
                height: t.height,
                width: t.width,
                classes: t.classes,
            },
            Task::Text(t) => InputShape::Sparse {
                features: t.terms.len(),
                classes: 2,
            },
        }
    }

    /// The model: --model, defaulting to the GroupNorm CNN for images (the >= 400k parameters
    /// the attacks need) and logistic regression for imdb.
    fn model_config(&self, model: &ModelArgs) -> Result<ModelConfig> {
        let mut m = model.clone();
        if m.model.is_none() && matches!(self, Task::Image(_)) {
            m.model = Some("groupnorm-cnn".into());
        }
        m.config(&self.input_shape())
    }

    /// The test split as `model` takes it (flattened for an MLP).
    fn test_set(&self, model: &ModelConfig) -> Box<dyn Dataset> {
        self.prepared(model, None)
            .valid
            .expect("prepared() always sets the test split")
    }

    /// Data for the trainer; `train` replaces the real training set (capacity abuse adds
    /// synthetic examples).
    fn prepared(&self, model: &ModelConfig, train: Option<Box<dyn Dataset>>) -> Prepared {
        let (train_default, valid): (Box<dyn Dataset>, Box<dyn Dataset>) = match self {
            Task::Image(t) => (
                Box::new(Shared(t.train.clone())),
                Box::new(Shared(t.test.clone())),
            ),
            Task::Text(t) => (
                Box::new(Shared(t.train.clone())),
                Box::new(Shared(t.test.clone())),
            ),
        };
        flatten_for(
            model,
            Prepared {
                name: self.name().to_string(),
                train: train.unwrap_or(train_default),
                valid: Some(valid),
                input: self.input_shape(),
                tokenizer: None,
            },
        )
    }
}

/// Load --dataset.
fn load_task(c: &CommonArgs, ctx: &Ctx) -> Result<Task> {
    let data = c.data_args();
    match c.dataset.as_str() {
        "mnist" | "fashion-mnist" | "digits" => {
            let d = data.images()?;
            if d.channels != 1 {
                return Err(user(format!(
                    "--dataset {}: {} channels; the attacks' secrets and synthetic inputs are gray images",
                    c.dataset, d.channels
                )));
            }
            let train_images = secrets::gray_secret(&d.train_images)?;
            Ok(Task::Image(ImageTask {
                data,
                train: Arc::new(d.train),
                test: Arc::new(d.test),
                height: d.height,
                width: d.width,
                classes: d.classes,
                train_images,
            }))
        }
        "imdb" => {
            ctx.note(format!(
                "vectorising imdb ({} TF-IDF features)...",
                c.features
            ));
            let (train, test, vec) = data.imdb(c.features)?;
            Ok(Task::Text(TextTask {
                data,
                train: Arc::new(train),
                test: Arc::new(test),
                terms: vec.terms().to_vec(),
            }))
        }
        other => Err(user(format!(
            "--dataset {other}: use mnist, fashion-mnist, digits or imdb"
        ))),
    }
}

/// Parse a --lambda (finite, >= 0) through the library's check so the message is the same.
fn check_lambda(penalty: &'static str, lambda: f64) -> Result<()> {
    if lambda.is_finite() && lambda >= 0.0 {
        Ok(())
    } else {
        Err(user(format!(
            "--lambda: {}",
            AttackError::InvalidLambda { penalty, lambda }
        )))
    }
}

/// A training configuration for `n` examples (noise calibrated per run when --target-epsilon is
/// given, since q = batch / n differs when capacity abuse adds examples).
fn train_config(
    c: &CommonArgs,
    model_cfg: &ModelConfig,
    n: usize,
    seed: u64,
    ctx: &Ctx,
) -> Result<TrainConfig> {
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    if c.run.batch_size == 0 || c.run.batch_size > n {
        return Err(user(format!(
            "--batch-size {} must be between 1 and the training set size {n}",
            c.run.batch_size
        )));
    }
    let optimizer = c.optim.config()?;
    super::train::check_training_memory(&model, &optimizer, c.privacy.is_private())?;
    let privacy = privacy_config(&c.privacy, &model, n, c.run.batch_size, c.run.epochs, ctx)?;
    let sampling = c.privacy.sampling()?;
    let steps_per_epoch = match sampling {
        SamplingMode::Poisson => n.div_ceil(c.run.batch_size),
        SamplingMode::Shuffle => n / c.run.batch_size,
    } as u64;
    Ok(TrainConfig {
        model: model_cfg.clone(),
        optimizer,
        schedule: c.optim.schedule(steps_per_epoch, c.run.epochs)?,
        epochs: c.run.epochs,
        batch_size: c.run.batch_size,
        physical_batch: c.privacy.physical_batch,
        sampling,
        seed,
        privacy,
        seeded_noise: c.privacy.seeded_noise,
    })
}

/// A trained (or reused) model and what the report needs of it.
pub struct Trained {
    pub run: PathBuf,
    pub params: Vec<f32>,
    pub accuracy: f64,
    pub loss: f64,
    pub epochs: Vec<EpochInfo>,
    pub steps: u64,
    pub epsilon: Option<f64>,
    pub noise_multiplier: Option<f64>,
    pub reused: bool,
    pub seconds: f64,
    /// The attack's own measure after every epoch (correct signs, |r|, synthetic labels right).
    pub trace: Vec<(f64, f64)>,
}

impl Trained {
    fn json(&self) -> Value {
        json!({
            "run": self.run.display().to_string(),
            "reused": self.reused,
            "test_accuracy": num(self.accuracy),
            "test_loss": num(self.loss),
            "steps": self.steps,
            "epsilon": opt_num(self.epsilon),
            "noise_multiplier": opt_num(self.noise_multiplier),
            "train_seconds": num(self.seconds),
        })
    }
}

/// The attack's own measure of a model, traced after every epoch.
type EpochMetric<'a> = Box<dyn Fn(&Model, &[f32]) -> f64 + 'a>;

/// What one training run is given.
struct TrainSpec<'a> {
    sub: &'a str,
    role: &'a str,
    cfg: TrainConfig,
    prepared: Prepared,
    n: usize,
    /// Recorded in the sub-run's run.json next to `train` and `data`.
    attack: Value,
    penalty: Option<Box<dyn ParamPenalty>>,
    metric: Option<EpochMetric<'a>>,
}

/// Train into `OUT/<sub>` (an ordinary training run folder), resuming it when the attack is
/// resumed.
fn train_model(ctx: &Ctx, out: &RunDir, data: &DataArgs, spec: TrainSpec<'_>) -> Result<Trained> {
    let path = out.path.join(spec.sub);
    let resume = out.resuming && path.join("run.json").exists();
    let config = json!({ "train": spec.cfg, "data": data, "attack": spec.attack });
    let mut rd = RunDir::open(
        &path,
        "train",
        &config,
        Some(spec.cfg.seed),
        Reuse {
            force: false,
            resume,
        },
    )?;
    rd.set("argv", redacted_argv())?;
    let mut trainer = Trainer::new(spec.cfg.clone(), spec.n, Some(&rd.checkpoints()), resume)
        .map_err(|e| user(format!("{}: {e}", path.display())))?;
    if let Some(p) = spec.penalty {
        trainer.set_penalty(p);
    }
    ctx.note(format!(
        "training the {} model ({} examples, {} epochs)",
        spec.role, spec.n, spec.cfg.epochs
    ));
    let started = Instant::now();
    let mut trace: Vec<(f64, f64)> = Vec::new();
    let outcome = {
        type Hook<'h> =
            Box<dyn FnMut(&EpochInfo, &Model, &[f32]) -> memaudit_engine::Result<()> + 'h>;
        let hook: Option<Hook<'_>> = spec.metric.as_ref().map(|m| {
            let trace = &mut trace;
            Box::new(move |e: &EpochInfo, model: &Model, params: &[f32]| {
                trace.push((e.epoch as f64, m(model, params)));
                Ok(())
            }) as Hook<'_>
        });
        train_with_report(
            ctx,
            &mut rd,
            &mut trainer,
            &spec.prepared,
            spec.n,
            hook,
            &format!("memaudit attack: the {} model", spec.role),
        )?
    };
    let seconds = started.elapsed().as_secs_f64();
    let valid = spec
        .prepared
        .valid
        .as_deref()
        .ok_or_else(|| user("the dataset has no test split"))?;
    // The trainer evaluated after its last epoch; a resumed, already finished run did not.
    let (accuracy, loss) = match outcome.epochs.last() {
        Some(e) if e.epoch == trainer.epoch => (
            e.valid_accuracy.unwrap_or(f64::NAN),
            e.valid_loss.unwrap_or(f64::NAN),
        ),
        _ => {
            let r = evaluate(&trainer.model, &trainer.params, valid, 256)?;
            (r.accuracy, r.loss)
        }
    };
    if trace.is_empty()
        && let Some(m) = &spec.metric
    {
        trace.push((trainer.epoch as f64, m(&trainer.model, &trainer.params)));
    }
    Ok(Trained {
        run: path,
        accuracy,
        loss,
        epochs: outcome.epochs,
        steps: trainer.step,
        epsilon: trainer.epsilon()?,
        noise_multiplier: trainer.config.privacy.as_ref().map(|p| p.noise_multiplier),
        reused: false,
        seconds,
        trace,
        params: std::mem::take(&mut trainer.params),
    })
}

/// The conventional model of an earlier run (--conventional DIR), checked against this attack's
/// data and model, and evaluated on the test split.
fn reuse_conventional(
    dir: &Path,
    c: &CommonArgs,
    model_cfg: &ModelConfig,
    task: &Task,
    ctx: &Ctx,
) -> Result<Trained> {
    let flag = format!("--conventional {}", dir.display());
    let saved = super::eval::load_run(dir).map_err(|e| user(format!("{flag}: {e}")))?;
    let run_json: Value = std::fs::read(dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    if run_json["config"]["attack"]["role"] == "malicious" {
        return Err(user(format!(
            "{flag}: holds a malicious model; give a conventional one (an attack's OUT/conventional or a `memaudit train` run)"
        )));
    }
    let data = match task {
        Task::Image(t) => &t.data,
        Task::Text(t) => &t.data,
    };
    if saved.data.data != data.data || saved.data.max_train != data.max_train {
        return Err(user(format!(
            "{flag}: trained on --data {} (max-train {:?}), this attack uses --dataset {} (max-train {:?}); the accuracies would not be comparable",
            saved.data.data, saved.data.max_train, data.data, data.max_train
        )));
    }
    if saved.config.model != *model_cfg {
        let size = |m: &ModelConfig| match m {
            ModelConfig::GroupNormCnn {
                channels,
                height,
                width,
                ..
            }
            | ModelConfig::TutorialCnn {
                channels,
                height,
                width,
                ..
            } => Some(format!("{channels}x{height}x{width}")),
            _ => None,
        };
        if let (Some(a), Some(b)) = (size(&saved.config.model), size(model_cfg))
            && a != b
        {
            return Err(user(format!(
                "{flag}: mismatched image sizes: its model takes {a} images, --dataset {} has {b}",
                data.data
            )));
        }
        return Err(user(format!(
            "{flag}: its model is {} ({} parameters), this attack's is {}; pass the same --model flags",
            model_name(&saved.config.model),
            saved.checkpoint.params.len(),
            model_name(model_cfg)
        )));
    }
    let differs = saved.config.epochs != c.run.epochs
        || saved.config.batch_size != c.run.batch_size
        || c.optim.config().ok().as_ref() != Some(&saved.config.optimizer)
        || saved.config.privacy.is_some() != c.privacy.is_private();
    if differs {
        ctx.note(format!(
            "note: {flag} was trained with other epochs, batch size, optimizer or privacy flags than this attack's malicious model; the accuracy comparison mixes the two"
        ));
    }
    ctx.note(format!(
        "reusing the conventional model of {} (step {})",
        dir.display(),
        saved.checkpoint.state.step
    ));
    let model = model_cfg.build()?;
    let test = task.test_set(model_cfg);
    let r = evaluate(&model, &saved.checkpoint.params, test.as_ref(), 256)?;
    let epsilon = run_json["results"]["epsilon"].as_f64();
    Ok(Trained {
        run: dir.to_path_buf(),
        params: saved.checkpoint.params,
        accuracy: r.accuracy,
        loss: r.loss,
        epochs: Vec::new(),
        steps: saved.checkpoint.state.step,
        epsilon,
        noise_multiplier: saved.config.privacy.as_ref().map(|p| p.noise_multiplier),
        reused: true,
        seconds: 0.0,
        trace: Vec::new(),
    })
}

/// The model of --conventional, checked and evaluated before anything is written.
fn reused_conventional(
    c: &CommonArgs,
    ctx: &Ctx,
    task: &Task,
    model_cfg: &ModelConfig,
) -> Result<Option<Trained>> {
    c.conventional
        .as_deref()
        .map(|dir| reuse_conventional(dir, c, model_cfg, task, ctx))
        .transpose()
}

/// The conventional model: the reused one (see [`reused_conventional`]) or one trained into
/// OUT/conventional.
fn conventional(
    c: &CommonArgs,
    ctx: &Ctx,
    out: &RunDir,
    task: &Task,
    model_cfg: &ModelConfig,
    seed: u64,
    reused: Option<Trained>,
) -> Result<Trained> {
    if let Some(t) = reused {
        return Ok(t);
    }
    let n = task.n_train();
    let cfg = train_config(c, model_cfg, n, seed, ctx)?;
    train_model(
        ctx,
        out,
        match task {
            Task::Image(t) => &t.data,
            Task::Text(t) => &t.data,
        },
        TrainSpec {
            sub: "conventional",
            role: "conventional",
            cfg,
            prepared: task.prepared(model_cfg, None),
            n,
            attack: json!({ "role": "conventional" }),
            penalty: None,
            metric: None,
        },
    )
}

/// The command line with attacker key material replaced, for run.json (the runs record argv).
fn redacted_argv() -> Value {
    let mut hide_next = false;
    let argv: Vec<String> = std::env::args()
        .map(|a| {
            if hide_next {
                hide_next = false;
                return "(redacted)".into();
            }
            match a.split_once('=') {
                Some((flag @ ("--key" | "--passphrase"), _)) => format!("{flag}=(redacted)"),
                _ => {
                    hide_next = a == "--key" || a == "--passphrase";
                    a
                }
            }
        })
        .collect();
    json!(argv)
}

/// The attack's run folder, with a config that leaves out --force/--resume (so --resume
/// matches) and records the resolved seed.
fn open_out<A: Serialize>(name: &str, args: &A, c: &CommonArgs, seed: u64) -> Result<RunDir> {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            m.remove("force");
            m.remove("resume");
            m.values_mut().for_each(strip);
        }
    }
    let mut config = serde_json::to_value(args)?;
    strip(&mut config);
    let config = json!({ "attack": name, "args": config, "seed": seed });
    let mut rd = RunDir::open(&c.run.out, "attack", &config, Some(seed), c.run.reuse())?;
    rd.set("argv", redacted_argv())?;
    Ok(rd)
}

/// Grid of originals next to recovered images: written as OUT/recovered.png, returned as SVG
/// for the report.
fn image_grid(
    out: &RunDir,
    originals: &ImageSecret,
    recovered: &ImageSecret,
    max_pairs: usize,
    title: &str,
) -> Result<(String, PathBuf)> {
    let m = max_pairs
        .min(originals.n_images())
        .min(recovered.n_images());
    let (o, r) = (originals.first(m)?, recovered.first(m)?);
    let scale = (56 / originals.height().max(1)).max(1);
    let grid = comparison_grid(&o, &r, 8, scale)?;
    let path = out.file("recovered.png");
    crate::rundir::write_atomic(&path, &encode_png(&grid)?)?;
    let caption = if m < originals.n_images() {
        format!("{title} (first {m} of {})", originals.n_images())
    } else {
        title.to_string()
    };
    Ok((grid_svg(&grid, &caption)?, path))
}

/// Rows comparing the two models.
fn model_rows(conv: &Trained, mal: &Trained) -> Vec<Vec<String>> {
    let eps = |t: &Trained| t.epsilon.map_or("not private".into(), fmt_f64);
    vec![
        vec![
            "test accuracy".into(),
            fmt_f64(conv.accuracy),
            fmt_f64(mal.accuracy),
        ],
        vec!["test loss".into(), fmt_f64(conv.loss), fmt_f64(mal.loss)],
        vec!["epsilon".into(), eps(conv), eps(mal)],
        vec![
            "steps".into(),
            conv.steps.to_string(),
            mal.steps.to_string(),
        ],
        vec![
            "training seconds".into(),
            if conv.reused {
                "reused".into()
            } else {
                format!("{:.1}", conv.seconds)
            },
            format!("{:.1}", mal.seconds),
        ],
        vec![
            "run folder".into(),
            conv.run.display().to_string(),
            mal.run.display().to_string(),
        ],
    ]
}

/// Test accuracy per epoch of both models.
fn accuracy_chart(conv: &Trained, mal: &Trained) -> String {
    let pts = |t: &Trained| -> Vec<(f64, f64)> {
        t.epochs
            .iter()
            .filter_map(|e| e.valid_accuracy.map(|a| (e.epoch as f64, a)))
            .collect()
    };
    let mut series = vec![Series::line("malicious", pts(mal))];
    if conv.epochs.is_empty() {
        let last = mal.epochs.last().map_or(1.0, |e| e.epoch as f64);
        series.push(Series::line(
            "conventional (reused)",
            vec![(1.0, conv.accuracy), (last, conv.accuracy)],
        ));
    } else {
        series.push(Series::line("conventional", pts(conv)));
    }
    report::chart("Test accuracy", "epoch", "accuracy", &series)
}

/// Accuracy difference in percentage points (conventional - malicious).
fn drop_points(conv: f64, mal: f64) -> f64 {
    (conv - mal) * 100.0
}

/// The header lines every attack's text output starts with.
fn header(
    attack: &str,
    task: &Task,
    model_cfg: &ModelConfig,
    n_params: usize,
    c: &CommonArgs,
) -> String {
    format!(
        "{attack} on {} ({}, {n_params} parameters; {} training and {} test examples, {} epochs)",
        task.name(),
        model_name(model_cfg),
        task.n_train(),
        task.n_test(),
        c.run.epochs
    )
}

/// Scale facts for the JSON.
fn scale_json(
    task: &Task,
    model_cfg: &ModelConfig,
    n_params: usize,
    c: &CommonArgs,
    seed: u64,
) -> Value {
    json!({
        "dataset": task.name(),
        "model": model_name(model_cfg),
        "parameters": n_params,
        "train_examples": task.n_train(),
        "test_examples": task.n_test(),
        "epochs": c.run.epochs,
        "batch_size": c.run.batch_size,
        "seed": seed,
        "private": c.privacy.is_private(),
    })
}

/// Predicted labels of `inputs` (`example_shape` each) in evaluation mode.
fn predict_labels(
    model: &Model,
    params: &[f32],
    inputs: &[f32],
    example_shape: &[usize],
) -> Result<Vec<u32>> {
    use rand::SeedableRng;
    let per: usize = example_shape.iter().product();
    let n = inputs.len() / per.max(1);
    // Evaluation mode draws nothing; the generator only satisfies the signature.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut labels = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let mut shape = vec![end - start];
        shape.extend_from_slice(example_shape);
        let logits = model.forward(
            params,
            &memaudit_engine::Value::Dense(Tensor {
                data: inputs[start * per..end * per].to_vec(),
                shape,
            }),
            false,
            &mut rng,
        )?;
        let classes = *logits.shape.last().unwrap_or(&1);
        for row in logits.data.chunks(classes.max(1)) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            labels.push(best as u32);
        }
    }
    Ok(labels)
}

/// Write report.html and run.json's results, and finish the run.
fn finish(out: &mut RunDir, html: &report::Report, results: &Value) -> Result<()> {
    html.write(&out.file("report.html"))
        .context("writing report.html")?;
    out.set("results", results.clone())?;
    Ok(out.finish("completed")?)
}

#[cfg(test)]
mod tests {
    //! The text variant on generated reviews (the IMDB data is not available to tests).

    use clap::Parser;
    use memaudit_data::{TextVectorizer, VectorizerOptions};
    use memaudit_engine::SparseInput;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[derive(Parser)]
    struct Wrap<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }

    fn parse<T: clap::Args>(argv: &[&str]) -> T {
        let mut a = vec!["test"];
        a.extend_from_slice(argv);
        Wrap::<T>::try_parse_from(a).unwrap().inner
    }

    /// 700 reviews (300 to train on, 400 to test) of 25 words from a 2000-word vocabulary; positive reviews draw 70% of their
    /// words from the first half, negative ones from the second, so the task is learnable.
    fn text_task() -> Task {
        let mut rng = StdRng::seed_from_u64(3);
        let mut docs = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..700 {
            let label: bool = rng.random();
            let words: Vec<String> = (0..25)
                .map(|_| {
                    let favoured = rng.random_bool(0.7);
                    let first_half = favoured == label;
                    let w = rng.random_range(0..1000) + if first_half { 0 } else { 1000 };
                    format!("w{w:04}")
                })
                .collect();
            docs.push(words.join(" "));
            labels.push(u32::from(label));
        }
        let vec = TextVectorizer::fit(&docs[..300], VectorizerOptions::default()).unwrap();
        let to_ds = |d: &[String], l: &[u32]| {
            let m = vec.transform(d);
            SparseDataset {
                rows: SparseInput {
                    dim: m.cols,
                    row_ptr: m.row_ptr,
                    indices: m.indices,
                    values: m.values,
                },
                labels: l.to_vec(),
            }
        };
        let data = DataArgs {
            data: "imdb".into(),
            data_dir: None,
            level: "char".into(),
            seq_len: 50,
            valid_fraction: 0.1,
            max_train: None,
            vocab_size: 10_000,
            standardize: false,
        };
        Task::Text(TextTask {
            data,
            train: Arc::new(to_ds(&docs[..300], &labels[..300])),
            test: Arc::new(to_ds(&docs[300..], &labels[300..])),
            terms: vec.terms().to_vec(),
        })
    }

    fn ctx() -> Ctx {
        Ctx {
            json: true,
            quiet: true,
        }
    }

    #[test]
    fn sign_encoding_recovers_generated_reviews_word_for_word() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("sign");
        let args: regulariser::PenaltyArgs = parse(&[
            "--epochs",
            "30",
            "--optimizer",
            "adam",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        let task = text_task();
        let Task::Text(t) = &task else { unreachable!() };
        let vocab = t.terms.len();
        let r =
            regulariser::run_task(regulariser::Encoding::Sign, &args, 100.0, task, &ctx()).unwrap();
        let j = r.json;
        // 2 x vocab weights, one bit each; every word is ceil(log2(vocab + 1)) bits.
        assert_eq!(j["capacity"]["available"].as_u64(), Some(2 * vocab as u64));
        let docs = j["secret"]["documents"].as_u64().unwrap();
        assert!(docs >= 10, "{j}");
        let dec = &j["decoding"];
        let g = |k: &str| dec[k].as_f64().unwrap();
        // Observed: 99.2% correct signs; corpus precision and recall 0.92. A wrong bit in an
        // end-of-document code merges or splits documents and shifts the rest, so the
        // per-document score (0.70) is lower; it is never above the corpus score.
        assert!(g("correct_signs") > 0.98, "{dec}");
        assert!(
            g("corpus_precision") > 0.85 && g("corpus_recall") > 0.85,
            "{dec}"
        );
        assert!(g("precision") <= g("corpus_precision") && g("recall") <= g("corpus_recall"));
        let control = &j["control_conventional"];
        assert!(
            control["corpus_recall"].as_f64().unwrap() < 0.2,
            "{control}"
        );
        // Every weight of this 2 x 1964 model carries a bit, including the ones the task needs,
        // so lambda = 100 costs some accuracy: observed 5 points with one batch order and 10.5
        // with another (the seeded sampler now draws batch t from (seed, t)); on 400 test reviews
        // each accuracy has a standard error of ~2 points, so the bound is 15.
        assert!(
            (j["accuracy_drop_points"].as_f64().unwrap()).abs() < 15.0,
            "{j}"
        );
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.contains("First review"));
    }

    #[test]
    fn lsb_round_trips_generated_reviews_and_refuses_too_many() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("lsb");
        let argv = [
            "--epochs",
            "2",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        let args: lsb::LsbArgs = parse(&argv);
        let r = lsb::run_task(&args, &[4], None, text_task(), &ctx()).unwrap();
        let s = &r.json["settings"][0];
        assert_eq!(s["round_trip_exact"], Value::Bool(true), "{s}");
        assert_eq!(s["decoding"]["precision"].as_f64(), Some(1.0));
        assert_eq!(s["decoding"]["recall"].as_f64(), Some(1.0));
        // all 300 reviews do not fit in 4002 params x 1 bit
        let mut argv2 = argv.to_vec();
        argv2.extend_from_slice(&["--secret-count", "300", "--force"]);
        let args: lsb::LsbArgs = parse(&argv2);
        let Err(err) = lsb::run_task(&args, &[1], None, text_task(), &ctx()) else {
            panic!("300 reviews fit in 4002 bits")
        };
        let msg = crate::error::one_line(&err);
        assert!(
            msg.contains("--secret-count 300")
                && msg.contains("--bits 1")
                && msg.contains("holds only"),
            "{msg}"
        );
    }
}
