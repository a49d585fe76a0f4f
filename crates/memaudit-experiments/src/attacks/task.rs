//! What the attacks share: the training data (images or IMDB documents), the conventional and
//! malicious training runs (sub-folders of the attack's run folder, trained through
//! [`crate::train::train_in_folder`] with the one `TrainConfig` builder,
//! [`crate::train::train_config`]), the reuse of an earlier conventional model, and the grid of
//! recovered images.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use memaudit_attacks::{ImageSecret, comparison_grid, encode_png, grid_svg};
use memaudit_engine::datasets::{DenseDataset, SparseDataset};
use memaudit_engine::train::{Dataset, EpochInfo, MidwayHook, TrainConfig, Trainer, evaluate};
use memaudit_engine::{Batch, Model, ModelConfig, ParamPenalty, Tensor};
use serde::Serialize;
use serde_json::{Value, json};

use super::secrets::gray_secret;
use super::{AttackSettings, in_common};
use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::{Num, opt};
use crate::observer::Observer;
use crate::rundir::{Reuse, RunDir, write_atomic};
use crate::train::{InputShape, Prepared, TrainHooks, TrainRun, flatten_for, train_in_folder};

/// A model's name in reports and messages (`MLP [64]`, `GroupNorm CNN`).
pub fn model_name(m: &ModelConfig) -> String {
    match m {
        ModelConfig::Mlp { hidden, .. } => format!("MLP {hidden:?}"),
        ModelConfig::SparseLogReg { features, .. } => {
            format!("logistic regression ({features} features)")
        }
        ModelConfig::TutorialCnn { .. } => "TF Privacy tutorial CNN".into(),
        ModelConfig::GroupNormCnn { .. } => "GroupNorm CNN".into(),
        ModelConfig::LstmLm { layers, hidden, .. } => format!("LSTM LM {layers}x{hidden}"),
        ModelConfig::GruLm { layers, hidden, .. } => format!("GRU LM {layers}x{hidden}"),
        ModelConfig::Gpt { layers, embed, .. } => format!("GPT {layers}x{embed}"),
    }
}

/// Renders a training sub-run's own report (`OUT/conventional/report.html`): the run, its
/// folder and the report's title. Called before the sub-run is marked completed.
pub type TrainingReport<'a> = Box<
    dyn FnMut(
            &TrainRun,
            &RunDir,
            &str,
        ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
        + 'a,
>;

/// What a caller adds to an attack.
#[derive(Default)]
pub struct AttackHooks<'a> {
    /// Writes each training sub-run's report.
    pub training_report: Option<TrainingReport<'a>>,
    /// A checkpoint hook for each trainer (crash tests: abort half way through a checkpoint).
    pub checkpoint_midway: Option<Box<dyn FnMut() -> Option<MidwayHook> + 'a>>,
}

/// The observer and hooks of one attack run.
pub(crate) struct Env<'o, 'h> {
    pub obs: &'o mut dyn Observer,
    pub hooks: AttackHooks<'h>,
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
    pub data: DataSettings,
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
    pub data: DataSettings,
    pub train: Arc<SparseDataset>,
    pub test: Arc<SparseDataset>,
    /// Feature index -> word.
    pub terms: Vec<String>,
}

/// An attack's training data.
pub enum Task {
    Image(ImageTask),
    Text(TextTask),
}

impl Task {
    pub fn data(&self) -> &DataSettings {
        match self {
            Task::Image(t) => &t.data,
            Task::Text(t) => &t.data,
        }
    }

    pub fn name(&self) -> &str {
        &self.data().data
    }

    pub fn n_train(&self) -> usize {
        match self {
            Task::Image(t) => t.train.len(),
            Task::Text(t) => t.train.len(),
        }
    }

    pub fn n_test(&self) -> usize {
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

    /// The model: the settings' model, defaulting to the GroupNorm CNN for images (the >= 400k
    /// parameters the attacks need) and logistic regression for imdb.
    pub fn model_config(&self, c: &AttackSettings) -> Result<ModelConfig> {
        let mut m = c.model.clone();
        if m.model.is_none() && matches!(self, Task::Image(_)) {
            m.model = Some("groupnorm-cnn".into());
        }
        m.config(&self.input_shape()).map_err(in_common)
    }

    /// The test split as `model` takes it (flattened for an MLP).
    pub fn test_set(&self, model: &ModelConfig) -> Box<dyn Dataset> {
        self.prepared(model, None)
            .valid
            .expect("prepared() always sets the test split")
    }

    /// Data for the trainer; `train` replaces the real training set (capacity abuse adds
    /// synthetic examples).
    pub(crate) fn prepared(
        &self,
        model: &ModelConfig,
        train: Option<Box<dyn Dataset>>,
    ) -> Prepared {
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

/// A missing dataset named by the attack's own setting (`common.dataset`, the `--dataset` flag).
fn dataset_field(e: ExperimentError) -> ExperimentError {
    match e {
        ExperimentError::MissingData { name, source, .. } => ExperimentError::MissingData {
            field: "common.dataset".into(),
            name,
            source,
        },
        e => in_common(e),
    }
}

/// Load the dataset of `c`.
pub fn load_task(c: &AttackSettings, obs: &mut dyn Observer) -> Result<Task> {
    let data = c.data();
    match c.dataset.as_str() {
        "mnist" | "fashion-mnist" | "digits" => {
            let d = data.images().map_err(dataset_field)?;
            if d.channels != 1 {
                return invalid(
                    "common.dataset",
                    &c.dataset,
                    format!(
                        "{} channels; the attacks' secrets and synthetic inputs are gray images",
                        d.channels
                    ),
                );
            }
            let train_images = gray_secret(&d.train_images)?;
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
            obs.note(&format!(
                "vectorising imdb ({} TF-IDF features)...",
                c.features
            ));
            let (train, test, vec) = data.imdb(c.features).map_err(dataset_field)?;
            Ok(Task::Text(TextTask {
                data,
                train: Arc::new(train),
                test: Arc::new(test),
                terms: vec.terms().to_vec(),
            }))
        }
        other => invalid(
            "common.dataset",
            other,
            "use mnist, fashion-mnist, digits or imdb",
        ),
    }
}

/// The model of `cfg`, built (errors name the model settings).
pub(crate) fn build_model(cfg: &ModelConfig) -> Result<Model> {
    cfg.build().map_err(|e| ExperimentError::Invalid {
        field: "model".into(),
        value: model_name(cfg),
        reason: e.to_string(),
    })
}

/// A training configuration for `n` examples (noise calibrated per run when a target epsilon
/// is given, since q = batch / n differs when capacity abuse adds examples): the library's one
/// builder, [`crate::train::train_config`].
pub(crate) fn train_config(
    c: &AttackSettings,
    model_cfg: &ModelConfig,
    n: usize,
    seed: u64,
    obs: &mut dyn Observer,
) -> Result<TrainConfig> {
    let model = build_model(model_cfg)?;
    if c.run.batch_size == 0 || c.run.batch_size > n {
        return invalid(
            "common.run.batch_size",
            c.run.batch_size,
            format!("must be between 1 and the training set size {n}"),
        );
    }
    crate::train::train_config(
        &c.privacy,
        &c.optim,
        c.run.shape(seed),
        &model,
        model_cfg,
        n,
        obs,
    )
    .map_err(in_common)
}

/// A trained (or reused) model: its summary in the results, and what the report needs of it.
#[derive(Clone, Debug, Serialize)]
pub struct TrainedModel {
    pub run: PathBuf,
    pub reused: bool,
    pub test_accuracy: Num,
    pub test_loss: Num,
    pub steps: u64,
    pub epsilon: Option<Num>,
    pub noise_multiplier: Option<Num>,
    pub train_seconds: Num,
    #[serde(skip)]
    pub params: Vec<f32>,
    /// The epochs' numbers (empty for a reused model).
    #[serde(skip)]
    pub epochs: Vec<EpochInfo>,
    /// The attack's own measure after every epoch (correct signs, |r|, synthetic labels right).
    #[serde(skip)]
    pub trace: Vec<(f64, f64)>,
}

impl TrainedModel {
    pub fn accuracy(&self) -> f64 {
        self.test_accuracy.0
    }
}

/// The attack's own measure of a model, traced after every epoch.
pub(crate) type EpochMetric<'a> = Box<dyn Fn(&Model, &[f32]) -> f64 + 'a>;

/// What one training run is given.
pub(crate) struct TrainSpec<'a> {
    pub sub: &'a str,
    pub role: &'a str,
    pub cfg: TrainConfig,
    pub prepared: Prepared,
    pub n: usize,
    /// Recorded in the sub-run's run.json next to `train` and `data`.
    pub attack: Value,
    pub penalty: Option<Box<dyn ParamPenalty>>,
    pub metric: Option<EpochMetric<'a>>,
}

/// Train into `OUT/<sub>` (an ordinary training run folder), resuming it when the attack is
/// resumed.
pub(crate) fn train_model(
    env: &mut Env<'_, '_>,
    out: &RunDir,
    data: &DataSettings,
    spec: TrainSpec<'_>,
) -> Result<TrainedModel> {
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
        .map_err(|e| ExperimentError::Model {
            what: path.display().to_string(),
            source: Box::new(e),
        })?;
    if let Some(p) = spec.penalty {
        trainer.set_penalty(p);
    }
    if let Some(h) = env.hooks.checkpoint_midway.as_mut().and_then(|f| f()) {
        trainer.set_checkpoint_midway_hook(h);
    }
    env.obs.note(&format!(
        "training the {} model ({} examples, {} epochs)",
        spec.role, spec.n, spec.cfg.epochs
    ));
    let started = Instant::now();
    let mut trace: Vec<(f64, f64)> = Vec::new();
    let run = {
        let epoch = spec.metric.as_ref().map(|m| {
            let trace = &mut trace;
            Box::new(move |e: &EpochInfo, model: &Model, params: &[f32]| {
                trace.push((e.epoch as f64, m(model, params)));
                Ok(())
            }) as crate::train::folder::EpochHook<'_>
        });
        train_in_folder(
            &mut rd,
            &mut trainer,
            spec.prepared.train.as_ref(),
            spec.prepared.valid.as_deref(),
            &spec.prepared.name,
            TrainHooks {
                epoch,
                step: None,
                logs: None,
            },
            env.obs,
        )?
    };
    let title = format!("memaudit attack: the {} model", spec.role);
    if let Some(h) = env.hooks.training_report.as_mut() {
        h(&run, &rd, &title).map_err(|source| ExperimentError::Model {
            what: format!("{}: the report", path.display()),
            source,
        })?;
    }
    rd.finish("completed")?;
    let seconds = started.elapsed().as_secs_f64();
    let valid = spec
        .prepared
        .valid
        .as_deref()
        .ok_or_else(|| ExperimentError::protocol("the dataset has no test split"))?;
    // The trainer evaluated after its last epoch; a resumed, already finished run did not.
    let (accuracy, loss) = match run.epochs.last() {
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
    Ok(TrainedModel {
        run: path,
        reused: false,
        test_accuracy: Num(accuracy),
        test_loss: Num(loss),
        steps: trainer.step,
        epsilon: opt(trainer.epsilon()?),
        noise_multiplier: opt(trainer.config.privacy.as_ref().map(|p| p.noise_multiplier)),
        train_seconds: Num(seconds),
        params: std::mem::take(&mut trainer.params),
        epochs: run.epochs,
        trace,
    })
}

/// The conventional model of an earlier run (`common.conventional`), checked against this
/// attack's data and model, and evaluated on the test split.
fn reuse_conventional(
    dir: &Path,
    c: &AttackSettings,
    model_cfg: &ModelConfig,
    task: &Task,
    obs: &mut dyn Observer,
) -> Result<TrainedModel> {
    const FIELD: &str = "common.conventional";
    let shown = dir.display();
    let saved = crate::saved_run::load_run(dir).map_err(|e| ExperimentError::Setting {
        field: FIELD.into(),
        source: Box::new(e),
    })?;
    let run_json: Value = std::fs::read(dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    if run_json["config"]["attack"]["role"] == "malicious" {
        return invalid(
            FIELD,
            shown,
            "holds a malicious model; give a conventional one (an attack's OUT/conventional or a `memaudit train` run)",
        );
    }
    let data = task.data();
    if saved.data.data != data.data || saved.data.max_train != data.max_train {
        return invalid(
            FIELD,
            shown,
            format!(
                "trained on --data {} (max-train {:?}), this attack uses --dataset {} (max-train {:?}); the accuracies would not be comparable",
                saved.data.data, saved.data.max_train, data.data, data.max_train
            ),
        );
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
            return invalid(
                FIELD,
                shown,
                format!(
                    "mismatched image sizes: its model takes {a} images, --dataset {} has {b}",
                    data.data
                ),
            );
        }
        return invalid(
            FIELD,
            shown,
            format!(
                "its model is {} ({} parameters), this attack's is {}; pass the same --model flags",
                model_name(&saved.config.model),
                saved.checkpoint.params.len(),
                model_name(model_cfg)
            ),
        );
    }
    let differs = saved.config.epochs != c.run.epochs
        || saved.config.batch_size != c.run.batch_size
        || c.optim.optimizer("optim").ok().as_ref() != Some(&saved.config.optimizer)
        || saved.config.privacy.is_some() != c.privacy.is_private();
    if differs {
        obs.note(&format!(
            "note: --conventional {shown} was trained with other epochs, batch size, optimizer or privacy flags than this attack's malicious model; the accuracy comparison mixes the two"
        ));
    }
    obs.note(&format!(
        "reusing the conventional model of {shown} (step {})",
        saved.checkpoint.state.step
    ));
    let model = build_model(model_cfg)?;
    let test = task.test_set(model_cfg);
    let r = evaluate(&model, &saved.checkpoint.params, test.as_ref(), 256)?;
    let epsilon = run_json["results"]["epsilon"].as_f64();
    Ok(TrainedModel {
        run: dir.to_path_buf(),
        reused: true,
        test_accuracy: Num(r.accuracy),
        test_loss: Num(r.loss),
        steps: saved.checkpoint.state.step,
        epsilon: opt(epsilon),
        noise_multiplier: opt(saved.config.privacy.as_ref().map(|p| p.noise_multiplier)),
        train_seconds: Num(0.0),
        params: saved.checkpoint.params,
        epochs: Vec::new(),
        trace: Vec::new(),
    })
}

/// The model of `common.conventional`, checked and evaluated before anything is written.
pub(crate) fn reused_conventional(
    c: &AttackSettings,
    obs: &mut dyn Observer,
    task: &Task,
    model_cfg: &ModelConfig,
) -> Result<Option<TrainedModel>> {
    c.conventional
        .as_deref()
        .map(|dir| reuse_conventional(dir, c, model_cfg, task, obs))
        .transpose()
}

/// The conventional model: the reused one (see [`reused_conventional`]) or one trained into
/// OUT/conventional.
pub(crate) fn conventional(
    c: &AttackSettings,
    env: &mut Env<'_, '_>,
    out: &RunDir,
    task: &Task,
    model_cfg: &ModelConfig,
    seed: u64,
    reused: Option<TrainedModel>,
) -> Result<TrainedModel> {
    if let Some(t) = reused {
        return Ok(t);
    }
    let n = task.n_train();
    let cfg = train_config(c, model_cfg, n, seed, env.obs)?;
    train_model(
        env,
        out,
        task.data(),
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
pub(crate) fn redacted_argv() -> Value {
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

/// The attack's run folder, with a config that leaves out force/resume (so a resume matches)
/// and records the resolved seed. Key material is not serialised (see `LsbConfig`).
pub(crate) fn open_out<A: Serialize>(
    name: &str,
    config: &A,
    c: &AttackSettings,
    seed: u64,
) -> Result<RunDir> {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            m.remove("force");
            m.remove("resume");
            m.values_mut().for_each(strip);
        }
    }
    let mut args = serde_json::to_value(config)?;
    strip(&mut args);
    let config = json!({ "attack": name, "args": args, "seed": seed });
    let mut rd = RunDir::open(&c.run.out, "attack", &config, Some(seed), c.run.reuse())?;
    rd.set("argv", redacted_argv())?;
    Ok(rd)
}

/// A grid of originals next to recovered images: written as `OUT/recovered.png`, kept as SVG
/// for the report.
#[derive(Clone, Debug)]
pub struct Grid {
    pub svg: String,
    pub png: PathBuf,
}

pub(crate) fn image_grid(
    out: &RunDir,
    originals: &ImageSecret,
    recovered: &ImageSecret,
    max_pairs: usize,
    title: &str,
) -> Result<Grid> {
    let m = max_pairs
        .min(originals.n_images())
        .min(recovered.n_images());
    let (o, r) = (originals.first(m)?, recovered.first(m)?);
    let scale = (56 / originals.height().max(1)).max(1);
    let grid = comparison_grid(&o, &r, 8, scale)?;
    let path = out.file("recovered.png");
    write_atomic(&path, &encode_png(&grid)?)?;
    let caption = if m < originals.n_images() {
        format!("{title} (first {m} of {})", originals.n_images())
    } else {
        title.to_string()
    };
    Ok(Grid {
        svg: grid_svg(&grid, &caption)?,
        png: path,
    })
}

/// Scale facts of an attack run.
#[derive(Clone, Debug, Serialize)]
pub struct Scale {
    pub dataset: String,
    pub model: String,
    pub parameters: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub private: bool,
}

pub(crate) fn scale(
    task: &Task,
    model_cfg: &ModelConfig,
    n_params: usize,
    c: &AttackSettings,
    seed: u64,
) -> Scale {
    Scale {
        dataset: task.name().to_string(),
        model: model_name(model_cfg),
        parameters: n_params,
        train_examples: task.n_train(),
        test_examples: task.n_test(),
        epochs: c.run.epochs,
        batch_size: c.run.batch_size,
        seed,
        private: c.privacy.is_private(),
    }
}

/// Predicted labels of `inputs` (`example_shape` each) in evaluation mode.
pub(crate) fn predict_labels(
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

/// Record the results in run.json and mark the run completed (the caller writes report.html
/// next to it, from the same result).
pub(crate) fn finish<R: Serialize>(out: &mut RunDir, results: &R) -> Result<()> {
    out.set("results", serde_json::to_value(results)?)?;
    out.finish("completed")
}
