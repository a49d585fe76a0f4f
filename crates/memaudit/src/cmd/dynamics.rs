//! `memaudit dynamics`: Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML
//! 2017) on MLPs, one subcommand per measurement. Each trains into a run folder (`run.json`,
//! CSV files, `report.html` with the plots) and `--json` prints the numbers.
//!
//! - `curves`: randY/randX at several noise fractions; per epoch the accuracy on clean and on
//!   corrupted training examples, validation accuracy and the validation CSR (LASS).
//! - `capacity`: epochs to fit the training set against hidden size and against data size.
//! - `easy-hard`: per-example misclassification after one epoch over many seeds.
//! - `sensitivity`: loss-sensitivity through the unrolled SGD steps, its Gini coefficient.
//! - `csr`: the critical sample ratio of a saved run's model.
//! - `regularizers`: randY training accuracy against real best validation accuracy per setting.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use memaudit_audit::dynamics::{
    self, CsrTracking, DynamicsError, EpochRecord, LassConfig, NoiseKind, Regularizer, SweepPoint,
    Tracking, TrainSpec,
};
use memaudit_engine::ModelConfig;
use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::layers::ActivationKind;
use rand::SeedableRng;
use serde_json::{Value, json};

use memaudit_experiments::data::{ImageSource, Images};
use memaudit_experiments::dynamics::MlpSettings;
use memaudit_experiments::dynamics::easy_hard::{self, EasyHardConfig};
use memaudit_experiments::dynamics::sensitivity::{self, LossSensitivityConfig};
use memaudit_experiments::optim::OptimSettings;

use super::args::OptimArgs;
use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num, opt_num};
use crate::progress::Progress;
use crate::report::{self, Series, chart, histogram};
use crate::rundir::{MetricsCsv, Reuse, RunDir, write_atomic};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub experiment: Experiment,
}

#[derive(clap::Subcommand, Debug)]
pub enum Experiment {
    /// Training curves on partly corrupted data: accuracy on clean and on corrupted training
    /// examples, validation accuracy and validation CSR, per epoch and noise fraction.
    Curves(CurvesArgs),
    /// Epochs to reach the fit threshold against hidden size and against data size, for real,
    /// randY and randX data.
    Capacity(CapacityArgs),
    /// Easy and hard examples: per-example misclassification after one epoch over many seeds.
    EasyHard(EasyHardArgs),
    /// Loss-sensitivity through the unrolled SGD steps (small f64 MLP) and its Gini coefficient.
    Sensitivity(SensitivityArgs),
    /// Critical sample ratio (LASS) of a saved `memaudit train` run on its validation data.
    Csr(CsrArgs),
    /// Regulariser sweep: final randY training accuracy against best real validation accuracy.
    Regularizers(RegularizersArgs),
}

/// Image data for the experiments.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct ImageArgs {
    /// mnist, fashion-mnist or digits (sklearn's 8x8 digits, built in).
    #[arg(long, default_value = "mnist")]
    pub data: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use the first N training examples (default 5000; `capacity` takes --train-sizes instead).
    #[arg(long, value_name = "N")]
    pub max_train: Option<usize>,
    /// Use the first N examples of the test split for validation.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub valid_size: usize,
}

/// The MLP.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct MlpArgs {
    /// Hidden layer sizes, comma-separated (the paper: 4096,4096).
    #[arg(long, default_value = "512,512", value_delimiter = ',')]
    pub hidden: Vec<usize>,
    /// relu, tanh or sigmoid.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Dropout after each hidden layer.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Dropout on the input.
    #[arg(long, default_value_t = 0.0)]
    pub input_dropout: f32,
}

/// Epochs, batch, seed and the run folder.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct RunFlags {
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed for data corruption, initialisation, batch order, dropout and LASS noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder (run.json, CSV files, report.html).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite a folder that holds another run.
    #[arg(long)]
    pub force: bool,
}

/// LASS (Langevin Adversarial Sample Search) parameters, in 0-255 pixel units: inputs are scaled
/// to [0, 1], so `--lass-r 0.3` searches the box of radius 0.3/255 (the paper's values).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct LassArgs {
    /// Radius r of the ∞-box (pixel units out of 255).
    #[arg(long, default_value_t = 0.3)]
    pub lass_r: f64,
    /// Gradient-sign step α (pixel units).
    #[arg(long, default_value_t = 0.25)]
    pub lass_alpha: f64,
    /// Langevin noise scale β (pixel units).
    #[arg(long, default_value_t = 0.2)]
    pub lass_beta: f64,
    #[arg(long, default_value_t = 100)]
    pub lass_max_iter: usize,
    /// Stop when an iteration marks fewer new critical samples than this (the authors' 20).
    #[arg(long, default_value_t = 20)]
    pub lass_min_new: usize,
}

impl LassArgs {
    fn config(&self) -> Result<LassConfig> {
        if !(self.lass_r > 0.0 && self.lass_r.is_finite()) {
            return Err(user(format!(
                "--lass-r {}: the LASS radius r must be > 0 (the paper's is 0.3, in 0-255 pixel units)",
                self.lass_r
            )));
        }
        for (flag, v) in [
            ("--lass-alpha", self.lass_alpha),
            ("--lass-beta", self.lass_beta),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(user(format!("{flag} {v}: must be >= 0")));
            }
        }
        if self.lass_max_iter == 0 {
            return Err(user("--lass-max-iter must be at least 1"));
        }
        Ok(LassConfig {
            alpha: (self.lass_alpha / 255.0) as f32,
            beta: (self.lass_beta / 255.0) as f32,
            radius: (self.lass_r / 255.0) as f32,
            max_iter: self.lass_max_iter,
            min_new_critical: self.lass_min_new,
            clip: Some((0.0, 1.0)),
            batch: 500,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct CurvesArgs {
    #[command(flatten)]
    pub data: ImageArgs,
    #[command(flatten)]
    pub mlp: MlpArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub lass: LassArgs,
    /// randY (random labels) or randX (Gaussian inputs).
    #[arg(long, default_value = "randy")]
    pub noise: String,
    /// Fractions of the training set to corrupt, each in [0, 1] (one run each).
    #[arg(long, default_value = "0,0.2,0.5,0.8", value_delimiter = ',')]
    pub fractions: Vec<f64>,
    /// Measure the validation CSR every N epochs (0: never).
    #[arg(long, default_value_t = 1)]
    pub csr_every: usize,
    /// Validation examples LASS probes.
    #[arg(long, default_value_t = 1000)]
    pub csr_size: usize,
    /// Also record the Gini coefficient of the direct input-gradient norms each epoch.
    #[arg(long)]
    pub gini: bool,
}

#[derive(clap::Args, Debug)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub data: ImageArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub run: RunFlags,
    /// Data kinds: real, randy, randx (randY/randX corrupt 100% of the training set).
    #[arg(long, default_value = "real,randy,randx", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Widths of the hidden layers to compare (each run has --layers layers of this width),
    /// trained on the largest --train-sizes.
    #[arg(long, default_value = "64,256,1024", value_delimiter = ',')]
    pub hidden_sizes: Vec<usize>,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Training set sizes to compare, trained with the largest --hidden-sizes (default:
    /// 1000,2500,5000, each capped at the training set's size; sizes given here must fit).
    #[arg(long, value_delimiter = ',', value_name = "N,N,..")]
    pub train_sizes: Option<Vec<usize>>,
    /// Training accuracy that counts as fitted (the paper: 1.0).
    #[arg(long, default_value_t = 1.0)]
    pub fit_threshold: f64,
}

#[derive(clap::Args, Debug)]
pub struct EasyHardArgs {
    #[command(flatten)]
    pub data: ImageArgs,
    #[command(flatten)]
    pub mlp: MlpArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub run: RunFlags,
    /// Independent one-epoch runs (the paper: 100).
    #[arg(long, default_value_t = EasyHardConfig::default().runs)]
    pub runs: usize,
    #[arg(long, default_value = "real,randx,randy", value_delimiter = ',')]
    pub kinds: Vec<String>,
    #[command(flatten)]
    pub config: ConfigFlags,
}

#[derive(clap::Args, Debug)]
pub struct SensitivityArgs {
    /// mnist, fashion-mnist or digits.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Training examples (the paper: 1000).
    #[arg(long, default_value_t = 1000)]
    pub examples: usize,
    /// Average-pool the images by this factor (default: 2 for 28x28 images, giving the paper's
    /// 14x14; 1 otherwise).
    #[arg(long)]
    pub downscale: Option<usize>,
    /// Hidden layer sizes (the paper: 16,16).
    #[arg(long, default_value = "16,16", value_delimiter = ',')]
    pub hidden: Vec<usize>,
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Plain SGD learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Measure every N SGD steps (each point unrolls all steps before it).
    #[arg(long, default_value_t = 25)]
    pub every: usize,
    /// Also count the direct dependence of L_t on the inputs of its own mini-batch (default: only
    /// influence through the earlier SGD updates).
    #[arg(long)]
    pub include_direct: bool,
    /// Label/input variants: real, randx, randy, unique (real inputs, one class per example),
    /// unique-randx (Gaussian inputs, one class per example).
    #[arg(
        long,
        default_value = "real,randx,randy,unique,unique-randx",
        value_delimiter = ','
    )]
    pub variants: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

#[derive(clap::Args, Debug)]
pub struct CsrArgs {
    /// A run folder written by `memaudit train`.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Validation examples to probe.
    #[arg(long, default_value_t = 1000)]
    pub csr_size: usize,
    #[command(flatten)]
    pub lass: LassArgs,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct RegularizersArgs {
    #[command(flatten)]
    pub data: ImageArgs,
    #[command(flatten)]
    pub mlp: MlpArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub lass: LassArgs,
    /// Dropout rates (after each hidden layer), comma-separated; "none" to skip the family.
    #[arg(long, default_value = "0.2,0.4,0.6,0.8")]
    pub dropout_rates: String,
    /// Input dropout rates; "none" to skip.
    #[arg(long, default_value = "0.2,0.4,0.6,0.8")]
    pub input_dropout_rates: String,
    /// Standard deviations of Gaussian noise added to training inputs; "none" to skip.
    #[arg(long, default_value = "0.2,0.5,1.0")]
    pub input_noise_stds: String,
    /// L2 weight decays; "none" to skip.
    #[arg(long, default_value = "0.001,0.01,0.1")]
    pub weight_decays: String,
    /// Adversarial-training loss weights (with --adversarial-dropout); "none" to skip.
    #[arg(long, default_value = "0.3,0.5")]
    pub adversarial_weights: String,
    #[arg(long, default_value_t = 0.4)]
    pub adversarial_dropout: f32,
    /// "Equal real-data accuracy": within this of the unregularised best validation accuracy.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    match &args.experiment {
        Experiment::Curves(a) => curves(a, ctx),
        Experiment::Capacity(a) => capacity(a, ctx),
        Experiment::EasyHard(a) => easy_hard(a, ctx),
        Experiment::Sensitivity(a) => sensitivity(a, ctx),
        Experiment::Csr(a) => csr(a, ctx),
        Experiment::Regularizers(a) => regularizers(a, ctx),
    }
}

/// Library errors as one-line user errors.
fn lib(e: DynamicsError) -> anyhow::Error {
    user(e.to_string())
}

fn activation(name: &str) -> Result<ActivationKind> {
    match name {
        "relu" => Ok(ActivationKind::Relu),
        "tanh" => Ok(ActivationKind::Tanh),
        "sigmoid" => Ok(ActivationKind::Sigmoid),
        a => Err(user(format!("--activation {a}: use relu, tanh or sigmoid"))),
    }
}

fn kinds(list: &[String], flag: &str) -> Result<Vec<NoiseKind>> {
    if list.is_empty() {
        return Err(user(format!(
            "{flag}: give at least one of real, randy, randx"
        )));
    }
    list.iter()
        .map(|k| {
            NoiseKind::parse(k).map_err(|_| user(format!("{flag} {k}: use real, randy or randx")))
        })
        .collect()
}

fn flat(mut d: DenseDataset) -> DenseDataset {
    d.example_shape = vec![d.per_example()];
    d
}

/// Loaded images (flat training rows; the first `valid_size` test images as `test`), through
/// the experiments library, with its errors naming the flags.
fn load_images(
    data: &str,
    data_dir: &Option<PathBuf>,
    max_train: usize,
    valid_size: usize,
) -> Result<Images> {
    let source = ImageSource {
        data: data.to_string(),
        data_dir: data_dir.clone(),
        max_train: Some(max_train),
        valid_size,
    };
    let no_file = ConfigFlags::default();
    source
        .validate("images")
        .and_then(|()| source.load_flat("images", max_train))
        .map_err(|e| experiment::cli_error(e, &no_file))
}

impl MlpArgs {
    fn config(&self, input: usize, classes: usize) -> Result<ModelConfig> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(user(
                "--hidden: give one or more non-zero layer sizes, e.g. 512,512",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.input_dropout) {
            return Err(user("--dropout and --input-dropout must be in [0, 1)"));
        }
        Ok(ModelConfig::Mlp {
            input,
            hidden: self.hidden.clone(),
            classes,
            activation: activation(&self.activation)?,
            dropout: self.dropout,
            input_dropout: self.input_dropout,
        })
    }
}

fn spec(model: ModelConfig, optim: &OptimArgs, run: &RunFlags, n: usize) -> Result<TrainSpec> {
    if run.epochs == 0 {
        return Err(user("--epochs must be at least 1"));
    }
    if run.batch_size == 0 || run.batch_size > n {
        return Err(user(format!(
            "--batch-size {} must be between 1 and the training set size {n}",
            run.batch_size
        )));
    }
    let optimizer = optim.config()?;
    let built = model
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    super::train::check_training_memory(&built, &optimizer, false)?;
    Ok(TrainSpec {
        model,
        optimizer,
        schedule: optim.schedule((n / run.batch_size) as u64, run.epochs)?,
        epochs: run.epochs,
        batch_size: run.batch_size,
        seed: run.seed,
        input_noise: 0.0,
        adversarial: None,
    })
}

fn open_run(run: &RunFlags, command: &str, config: &Value) -> Result<RunDir> {
    RunDir::open(
        &run.out,
        command,
        config,
        Some(run.seed),
        Reuse {
            force: run.force,
            resume: false,
        },
    )
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), fmt_f64)
}

fn first_epoch(records: &[EpochRecord], f: impl Fn(&EpochRecord) -> bool) -> Option<usize> {
    records.iter().find(|r| f(r)).map(|r| r.epoch)
}

/// Write `report.html`, record the results, finish the run, and build the CLI report.
fn finish(
    mut rd: RunDir,
    html: report::Report,
    results: Value,
    mut text: String,
) -> Result<Report> {
    html.write(&rd.file("report.html"))?;
    rd.set("results", results.clone())?;
    rd.finish("completed")?;
    let _ = write!(
        text,
        "\n\nrun folder: {}\nreport: {}",
        rd.path.display(),
        rd.file("report.html").display()
    );
    Ok(Report::new(text, results))
}

fn series(name: &str, recs: &[EpochRecord], f: impl Fn(&EpochRecord) -> Option<f64>) -> Series {
    Series::line(
        name,
        recs.iter()
            .filter_map(|r| f(r).map(|y| (r.epoch as f64, y)))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// curves

fn curves(a: &CurvesArgs, ctx: &Ctx) -> Result<Report> {
    let noise = NoiseKind::parse(&a.noise)
        .map_err(|_| user(format!("--noise {}: use randy or randx", a.noise)))?;
    if noise == NoiseKind::Real {
        return Err(user(
            "--noise real corrupts nothing: use randy or randx (fraction 0 is the real-data run)",
        ));
    }
    if a.csr_every > 0 && a.csr_size == 0 {
        return Err(user(
            "--csr-size 0: LASS needs at least 1 validation example (or --csr-every 0 to skip it)",
        ));
    }
    if a.fractions.is_empty() {
        return Err(user(
            "--fractions: give at least one noise fraction in [0, 1]",
        ));
    }
    for &f in &a.fractions {
        if !(0.0..=1.0).contains(&f) {
            return Err(user(format!(
                "--fractions {f}: a noise fraction must be in [0, 1]"
            )));
        }
    }
    let lass = a.lass.config()?;
    let img = load_images(
        &a.data.data,
        &a.data.data_dir,
        a.data.max_train.unwrap_or(5000),
        a.data.valid_size,
    )?;
    let n = img.train.labels.len();
    let model = a.mlp.config(img.train.per_example(), img.classes)?;
    let base = spec(model.clone(), &a.optim, &a.run, n)?;
    let csr_data = img
        .test
        .subset(&(0..a.csr_size.min(img.test.labels.len())).collect::<Vec<_>>());
    let config = json!({ "experiment": "curves", "data": a.data, "mlp": a.mlp, "optim": a.optim, "run": a.run, "lass": lass,
        "noise": noise, "fractions": a.fractions, "csr_every": a.csr_every, "csr_size": csr_data.labels.len(), "train_spec": base });
    let rd = open_run(&a.run, "dynamics curves", &config)?;
    let metrics = MetricsCsv::open(
        &rd.file("metrics.csv"),
        &[
            "fraction",
            "epoch",
            "train_loss",
            "train_accuracy",
            "clean_accuracy",
            "noisy_accuracy",
            "valid_loss",
            "valid_accuracy",
            "csr",
            "lass_iterations",
            "input_gradient_gini",
            "seconds",
        ],
        false,
    )?;
    let mut progress = Progress::new(
        "curves",
        (a.fractions.len() * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut runs: Vec<(f64, dynamics::Corrupted, Vec<EpochRecord>)> = Vec::new();
    for &f in &a.fractions {
        let c = dynamics::corrupt(&img.train, img.classes, noise, f, a.run.seed).map_err(lib)?;
        let tracking = Tracking {
            valid: Some(&img.test),
            noisy: Some(&c.mask),
            csr: (a.csr_every > 0).then(|| CsrTracking {
                data: &csr_data,
                every: a.csr_every,
                lass: lass.clone(),
            }),
            stop_at_train_accuracy: None,
            input_gradient_gini: a.gini,
        };
        let trained = dynamics::train_tracked(&base, &c.data, &tracking, &mut |r| {
            done += 1;
            progress.set(done, &format!("{} {f}: epoch {}", noise.name(), r.epoch));
            let _ = metrics.append(&[
                Some(f),
                Some(r.epoch as f64),
                Some(r.train_loss),
                Some(r.train_accuracy),
                r.clean_accuracy,
                r.noisy_accuracy,
                r.valid_loss,
                r.valid_accuracy,
                r.csr,
                r.lass_iterations.map(|v| v as f64),
                r.input_gradient_gini,
                Some(r.seconds),
            ]);
            progress.line(&format!(
                "{} {f} epoch {}: clean {} noisy {} valid {} csr {}",
                noise.name(),
                r.epoch,
                opt(r.clean_accuracy),
                opt(r.noisy_accuracy),
                opt(r.valid_accuracy),
                opt(r.csr)
            ));
            Ok(())
        })
        .map_err(lib)?;
        runs.push((f, c, trained.records));
    }
    progress.finish();

    let mut summary = Vec::new();
    let mut rows = Vec::new();
    for (f, c, recs) in &runs {
        let best = recs
            .iter()
            .filter_map(|r| r.valid_accuracy.map(|v| (r.epoch, v)))
            .fold(None, |b: Option<(usize, f64)>, (e, v)| match b {
                Some((_, bv)) if bv >= v => b,
                _ => Some((e, v)),
            });
        let last = recs.last();
        let fit50 = first_epoch(recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.5));
        let fit90 = first_epoch(recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.9));
        let csrs: Vec<f64> = recs.iter().filter_map(|r| r.csr).collect();
        let s = json!({
            "fraction": f,
            "corrupted": c.corrupted.len(),
            "labels_changed": c.labels_changed,
            "best_valid_accuracy": best.map(|b| num(b.1)),
            "best_valid_epoch": best.map(|b| b.0),
            "final_valid_accuracy": last.and_then(|r| r.valid_accuracy).map(num),
            "final_clean_accuracy": last.and_then(|r| r.clean_accuracy).map(num),
            "final_noisy_accuracy": last.and_then(|r| r.noisy_accuracy).map(num),
            "noisy_half_fitted_epoch": fit50,
            "noisy_90_fitted_epoch": fit90,
            "csr_first": csrs.first().copied().map(num),
            "csr_final": csrs.last().copied().map(num),
            "csr_max": csrs.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))).map(num),
            "csr_mean": if csrs.is_empty() { Value::Null } else { num(csrs.iter().sum::<f64>() / csrs.len() as f64) },
            "epochs": recs,
        });
        rows.push(vec![
            format!("{f}"),
            best.map_or("-".into(), |b| format!("{} (epoch {})", fmt_f64(b.1), b.0)),
            opt(last.and_then(|r| r.valid_accuracy)),
            opt(last.and_then(|r| r.clean_accuracy)),
            opt(last.and_then(|r| r.noisy_accuracy)),
            fit50.map_or("-".into(), |e| e.to_string()),
            fit90.map_or("-".into(), |e| e.to_string()),
            opt(csrs.first().copied()),
            opt(csrs.last().copied()),
        ]);
        summary.push(s);
    }
    let headers = [
        "noise fraction",
        "best valid acc",
        "final valid acc",
        "final clean train acc",
        "final noisy train acc",
        "noisy >= 50% at epoch",
        "noisy >= 90% at epoch",
        "CSR first epoch",
        "CSR last epoch",
    ];
    let mut html = report::Report::new(&format!(
        "memaudit dynamics curves: {} on {} ({} examples), MLP {:?}",
        noise.name(),
        img.name,
        n,
        a.mlp.hidden
    ));
    html.para("Arpit et al. (ICML 2017) §4: with noise in the training set, validation accuracy should peak before the corrupted examples are fitted, and the critical sample ratio (LASS, on validation data) should be higher on noisier data. Accuracies are in evaluation mode after each epoch; 'noisy' is the accuracy on the corrupted training examples against their noisy labels.");
    html.table(&headers, &rows);
    let per = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .map(|(fr, _, recs)| series(&format!("{} {fr}", noise.name()), recs, f))
            .collect()
    };
    html.svg(&chart(
        "Validation accuracy",
        "epoch",
        "accuracy",
        &per(&|r| r.valid_accuracy),
    ));
    html.svg(&chart(
        "Training accuracy on corrupted examples (noise fitted)",
        "epoch",
        "accuracy",
        &per(&|r| r.noisy_accuracy),
    ));
    html.svg(&chart(
        "Training accuracy on clean examples",
        "epoch",
        "accuracy",
        &per(&|r| r.clean_accuracy),
    ));
    if a.csr_every > 0 {
        html.svg(&chart(
            "Critical sample ratio (validation, LASS)",
            "epoch",
            "CSR",
            &per(&|r| r.csr),
        ));
    }
    if a.gini {
        html.svg(&chart(
            "Gini of direct input-gradient norms (cheap loss-sensitivity estimate)",
            "epoch",
            "Gini",
            &per(&|r| r.input_gradient_gini),
        ));
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let results = json!({ "experiment": "curves", "run": rd.path.display().to_string(), "data": img.name, "train_examples": n,
        "valid_examples": img.test.labels.len(), "noise": noise, "model": model, "runs": summary });
    let mut text = format!(
        "dynamics curves: {} on {} ({n} training examples), MLP {:?}\n",
        noise.name(),
        img.name,
        a.mlp.hidden
    );
    text += &table_text(&headers, &rows);
    finish(rd, html, results, text)
}

fn table_text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(k, c)| format!("{c:>width$}", width = w[k]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut s = line(headers.to_vec());
    for r in rows {
        s.push('\n');
        s += &line(r.iter().map(String::as_str).collect());
    }
    s
}

// ---------------------------------------------------------------------------------------------
// capacity

/// `dynamics capacity --train-sizes` when not given.
const DEFAULT_TRAIN_SIZES: [usize; 3] = [1000, 2500, 5000];

fn capacity(a: &CapacityArgs, ctx: &Ctx) -> Result<Report> {
    let kinds = kinds(&a.kinds, "--kinds")?;
    if a.hidden_sizes.is_empty() || a.hidden_sizes.contains(&0) || a.layers == 0 {
        return Err(user(
            "--hidden-sizes and --layers: give non-zero sizes and at least one layer",
        ));
    }
    let requested_sizes = a
        .train_sizes
        .clone()
        .unwrap_or_else(|| DEFAULT_TRAIN_SIZES.to_vec());
    if requested_sizes.is_empty() || requested_sizes.iter().any(|&s| s < 2) {
        return Err(user("--train-sizes: give sizes of at least 2"));
    }
    if !(a.fit_threshold > 0.0 && a.fit_threshold <= 1.0) {
        return Err(user(format!(
            "--fit-threshold {}: must be in (0, 1]",
            a.fit_threshold
        )));
    }
    let max_n = *requested_sizes.iter().max().unwrap();
    let max_h = *a.hidden_sizes.iter().max().unwrap();
    if a.data.max_train.is_some() {
        return Err(user(
            "--max-train: capacity sets its training set sizes with --train-sizes",
        ));
    }
    let img = load_images(&a.data.data, &a.data.data_dir, max_n, a.data.valid_size)?;
    let available = img.train.labels.len();
    let train_sizes: Vec<usize> = match &a.train_sizes {
        // Sizes the user chose are measured as given or refused; capping them silently made
        // "100000 examples" rows that were really trained on the whole (smaller) set.
        Some(sizes) => {
            if let Some(&s) = sizes.iter().find(|&&s| s > available) {
                return Err(user(format!(
                    "--train-sizes {s}: {} has {available} training examples; give sizes up to {available}",
                    img.name
                )));
            }
            sizes.clone()
        }
        None => {
            let mut capped: Vec<usize> =
                requested_sizes.iter().map(|&s| s.min(available)).collect();
            capped.dedup();
            if capped != requested_sizes {
                ctx.note(format!(
                    "note: {} has {available} training examples; default --train-sizes capped to {}",
                    img.name,
                    capped.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                ));
            }
            capped
        }
    };
    let max_n = max_n.min(available);
    // (kind, hidden, n): the capacity sweep at the largest data size, the data sweep at the
    // largest width (shared point run once).
    let mut settings: Vec<(NoiseKind, usize, usize)> = Vec::new();
    for &k in &kinds {
        for &h in &a.hidden_sizes {
            settings.push((k, h, max_n));
        }
        for &s in &train_sizes {
            if !settings.contains(&(k, max_h, s)) {
                settings.push((k, max_h, s));
            }
        }
    }
    let config = json!({ "experiment": "capacity", "data": a.data, "optim": a.optim, "run": a.run, "kinds": kinds,
        "hidden_sizes": a.hidden_sizes, "layers": a.layers, "train_sizes": train_sizes, "fit_threshold": a.fit_threshold });
    let rd = open_run(&a.run, "dynamics capacity", &config)?;
    let metrics = MetricsCsv::open(
        &rd.file("metrics.csv"),
        &[
            "kind",
            "hidden",
            "train_size",
            "epoch",
            "train_accuracy",
            "valid_accuracy",
            "seconds",
        ],
        false,
    )?;
    let mut progress = Progress::new(
        "capacity",
        (settings.len() * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut results = Vec::new();
    for (i, &(kind, h, n)) in settings.iter().enumerate() {
        let sub = img.train.subset(&(0..n).collect::<Vec<_>>());
        let c = dynamics::corrupt(
            &sub,
            img.classes,
            kind,
            if kind == NoiseKind::Real { 0.0 } else { 1.0 },
            a.run.seed,
        )
        .map_err(lib)?;
        let model = ModelConfig::Mlp {
            input: sub.per_example(),
            hidden: vec![h; a.layers],
            classes: img.classes,
            activation: ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        };
        let s = spec(model, &a.optim, &a.run, n)?;
        let tracking = Tracking {
            valid: Some(&img.test),
            stop_at_train_accuracy: Some(a.fit_threshold),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let kcode = kinds.iter().position(|&k| k == kind).unwrap_or(0) as f64;
        let trained = dynamics::train_tracked(&s, &c.data, &tracking, &mut |r| {
            done += 1;
            progress.set(
                done,
                &format!("{} h{h} n{n} epoch {}", kind.name(), r.epoch),
            );
            let _ = metrics.append(&[
                Some(kcode),
                Some(h as f64),
                Some(n as f64),
                Some(r.epoch as f64),
                Some(r.train_accuracy),
                r.valid_accuracy,
                Some(r.seconds),
            ]);
            Ok(())
        })
        .map_err(lib)?;
        done = ((i + 1) * a.run.epochs) as u64;
        let last = trained.records.last();
        let best = trained.best_valid();
        progress.line(&format!(
            "{} hidden {h} n {n}: fitted at epoch {} (train acc {}), best valid {}",
            kind.name(),
            trained.fitted_epoch.map_or("-".into(), |e| e.to_string()),
            opt(last.map(|r| r.train_accuracy)),
            opt(best.map(|b| b.1))
        ));
        results.push(json!({
            "kind": kind, "hidden": h, "train_size": n,
            "fitted_epoch": trained.fitted_epoch,
            "final_train_accuracy": last.map(|r| num(r.train_accuracy)),
            "epochs_run": trained.records.len(),
            "best_valid_accuracy": best.map(|b| num(b.1)),
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    progress.finish();
    let fitted = |k: NoiseKind, h: usize, n: usize| -> (Option<u64>, Option<f64>, Option<f64>) {
        results
            .iter()
            .find(|r| {
                r["kind"] == json!(k) && r["hidden"] == json!(h) && r["train_size"] == json!(n)
            })
            .map_or((None, None, None), |r| {
                (
                    r["fitted_epoch"].as_u64(),
                    r["final_train_accuracy"].as_f64(),
                    r["best_valid_accuracy"].as_f64(),
                )
            })
    };
    let cell = |(e, acc, _): (Option<u64>, Option<f64>, Option<f64>)| match e {
        Some(e) => e.to_string(),
        None => format!("> {} ({})", a.run.epochs, opt(acc)),
    };
    let mut html = report::Report::new(&format!(
        "memaudit dynamics capacity: epochs to {} training accuracy on {}",
        a.fit_threshold, img.name
    ));
    html.para("Arpit et al. §3.3 (Figs. 5-6): noise data needs more capacity and more epochs to fit, and its time to fit grows with the data size. A cell is the first epoch whose training accuracy (evaluation mode) reached the threshold; '> E (acc)' means not within the epoch budget, with the accuracy reached.");
    let mut headers_h: Vec<String> =
        vec!["hidden width (n = ".to_string() + &max_n.to_string() + ")"];
    headers_h.extend(kinds.iter().map(|k| k.name().to_string()));
    headers_h.extend(
        kinds
            .iter()
            .map(|k| format!("best valid acc ({})", k.name())),
    );
    let rows_h: Vec<Vec<String>> = a
        .hidden_sizes
        .iter()
        .map(|&h| {
            let mut r = vec![h.to_string()];
            r.extend(kinds.iter().map(|&k| cell(fitted(k, h, max_n))));
            r.extend(kinds.iter().map(|&k| opt(fitted(k, h, max_n).2)));
            r
        })
        .collect();
    let mut headers_n: Vec<String> = vec![format!("training examples (hidden {max_h})")];
    headers_n.extend(kinds.iter().map(|k| k.name().to_string()));
    let rows_n: Vec<Vec<String>> = train_sizes
        .iter()
        .map(|&n| {
            let mut r = vec![n.to_string()];
            r.extend(kinds.iter().map(|&k| cell(fitted(k, max_h, n))));
            r
        })
        .collect();
    let hh: Vec<&str> = headers_h.iter().map(String::as_str).collect();
    let hn: Vec<&str> = headers_n.iter().map(String::as_str).collect();
    html.table(&hh, &rows_h);
    html.table(&hn, &rows_n);
    let pts = |xs: &[usize],
               f: &dyn Fn(usize) -> (Option<u64>, Option<f64>, Option<f64>)|
     -> Vec<(f64, f64)> {
        xs.iter()
            .filter_map(|&x| f(x).0.map(|e| (x as f64, e as f64)))
            .collect()
    };
    html.svg(&chart(
        "Epochs to fit against hidden width",
        "hidden units per layer",
        "epochs",
        &kinds
            .iter()
            .map(|&k| Series::line(k.name(), pts(&a.hidden_sizes, &|h| fitted(k, h, max_n))))
            .collect::<Vec<_>>(),
    ));
    html.svg(&chart(
        "Epochs to fit against training set size",
        "training examples",
        "epochs",
        &kinds
            .iter()
            .map(|&k| Series::line(k.name(), pts(&train_sizes, &|n| fitted(k, max_h, n))))
            .collect::<Vec<_>>(),
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let out = json!({ "experiment": "capacity", "run": rd.path.display().to_string(), "data": img.name, "fit_threshold": a.fit_threshold,
        "max_epochs": a.run.epochs, "results": results });
    let text = format!(
        "dynamics capacity on {}: epochs to reach training accuracy {}\n{}\n\n{}",
        img.name,
        a.fit_threshold,
        table_text(&hh, &rows_h),
        table_text(&hn, &rows_n)
    );
    finish(rd, html, out, text)
}

// ---------------------------------------------------------------------------------------------
// easy-hard

/// The library's settings from the flags (the defaults agree: see the tests below).
fn optim_settings(o: &OptimArgs) -> OptimSettings {
    OptimSettings {
        optimizer: o.optimizer.clone(),
        lr: o.lr,
        momentum: o.momentum,
        nesterov: o.nesterov,
        weight_decay: o.weight_decay,
        schedule: o.schedule.clone(),
        step_every: o.step_every,
        gamma: o.gamma,
    }
}

impl ImageArgs {
    fn source(&self) -> ImageSource {
        ImageSource {
            data: self.data.clone(),
            data_dir: self.data_dir.clone(),
            max_train: self.max_train,
            valid_size: self.valid_size,
        }
    }
}

impl MlpArgs {
    fn settings(&self) -> MlpSettings {
        MlpSettings {
            hidden: self.hidden.clone(),
            activation: self.activation.clone(),
            dropout: self.dropout,
            input_dropout: self.input_dropout,
        }
    }
}

fn easy_hard_config(a: &EasyHardArgs) -> EasyHardConfig {
    EasyHardConfig {
        images: a.data.source(),
        mlp: a.mlp.settings(),
        optim: optim_settings(&a.optim),
        batch_size: a.run.batch_size,
        seed: a.run.seed,
        runs: a.runs,
        kinds: a.kinds.clone(),
    }
}

fn easy_hard(a: &EasyHardArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, easy_hard_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let job = easy_hard::prepare(&cfg).map_err(|e| experiment::cli_error(e, &a.config))?;
    let run = RunFlags {
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        ..a.run.clone()
    };
    let config = json!({ "experiment": "easy-hard", "config": cfg, "train_spec": job.spec });
    let rd = open_run(&run, "dynamics easy-hard", &config)?;
    let mut observer = CliObserver::new("easy-hard", ctx);
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    let n = r.train_examples;
    // Per-example rates.
    let mut csv = String::from("example");
    for k in &r.kinds {
        let _ = write!(csv, ",{}", k.kind.name());
    }
    csv.push('\n');
    for i in 0..n {
        let _ = write!(csv, "{i}");
        for k in &r.kinds {
            let _ = write!(csv, ",{}", k.misclassification[i]);
        }
        csv.push('\n');
    }
    write_atomic(&rd.file("misclassification.csv"), csv.as_bytes())?;
    let headers = [
        "data",
        "mean accuracy after 1 epoch",
        "variance of per-example rates",
        "binomial variance",
        "ratio",
        "within-class ratio",
        "always right (binomial expects)",
        "always wrong (binomial expects)",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = r
        .kinds
        .iter()
        .map(|k| {
            let d = &k.dispersion;
            vec![
                k.kind.name().into(),
                fmt_f64(k.mean_accuracy.0),
                fmt_f64(d.variance.0),
                fmt_f64(d.binomial_variance.0),
                fmt_f64(d.ratio.0),
                fmt_f64(k.within_class_ratio.0),
                format!(
                    "{} ({:.1})",
                    d.always_right, d.binomial_expected_always_right.0
                ),
                format!(
                    "{} ({:.1})",
                    d.always_wrong, d.binomial_expected_always_wrong.0
                ),
                format!("{:.1}", k.seconds),
            ]
        })
        .collect();
    let mut html = report::Report::new(&format!(
        "memaudit dynamics easy-hard: {} one-epoch runs on {} ({} examples)",
        r.runs, r.data, n
    ));
    html.para("Arpit et al. §3.1 (Fig. 1): on real data some examples are consistently learned after one epoch and others consistently missed (per-example rates spread far beyond identical coins: ratio >> 1); on randX every example is equally hard and the rates look like Binomial(runs, p) / runs (ratio near 1); randY lies in between. A network that can only learn the label prior (randX) predicts the frequent classes, which makes correctness depend on the label alone; the within-class ratio removes that (variance around each class's mean over the class-wise binomial variance). 'Always right/wrong' counts examples correct/wrong in every run, with what identical Binomial coins would give.");
    html.table(&headers, &rows);
    let sorted: Vec<Series> = r
        .kinds
        .iter()
        .map(|k| {
            let mut v = k.misclassification.clone();
            v.sort_by(|x, y| x.total_cmp(y));
            Series::line(
                k.kind.name(),
                v.iter()
                    .enumerate()
                    .map(|(i, &m)| (i as f64 / n as f64, m))
                    .collect(),
            )
        })
        .collect();
    html.svg(&chart(
        "Per-example misclassification rate, sorted",
        "fraction of examples",
        "misclassification rate",
        &sorted,
    ));
    for k in &r.kinds {
        html.svg(&histogram(
            &format!("{}: per-example misclassification rate", k.kind.name()),
            "misclassification rate",
            &k.misclassification,
            r.runs.min(50),
            None,
            &[],
        ));
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let text = format!(
        "dynamics easy-hard: {} one-epoch runs on {} ({n} examples)\n{}\n\nper-example rates: {}",
        r.runs,
        r.data,
        table_text(&headers, &rows),
        rd.file("misclassification.csv").display()
    );
    finish_typed(rd, html, &r, text)
}

/// [`finish`] for a typed result: `--json` is the result serialised, with the run folder.
fn finish_typed<T: serde::Serialize>(
    rd: RunDir,
    html: report::Report,
    result: &T,
    text: String,
) -> Result<Report> {
    #[derive(serde::Serialize)]
    struct WithRun<'a, T> {
        #[serde(flatten)]
        result: &'a T,
        run: String,
    }
    let results = serde_json::to_value(WithRun {
        result,
        run: rd.path.display().to_string(),
    })?;
    finish(rd, html, results, text)
}

// ---------------------------------------------------------------------------------------------
// sensitivity

fn sensitivity_config(a: &SensitivityArgs) -> LossSensitivityConfig {
    LossSensitivityConfig {
        data: a.data.clone(),
        data_dir: a.data_dir.clone(),
        examples: a.examples,
        downscale: a.downscale,
        hidden: a.hidden.clone(),
        activation: a.activation.clone(),
        lr: a.lr,
        batch_size: a.batch_size,
        epochs: a.epochs,
        every: a.every,
        include_direct: a.include_direct,
        variants: a.variants.clone(),
        seed: a.seed,
    }
}

fn sensitivity(a: &SensitivityArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, sensitivity_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let job = sensitivity::prepare(&cfg).map_err(|e| experiment::cli_error(e, &a.config))?;
    let config = json!({ "experiment": "sensitivity", "config": cfg, "examples": job.data.labels.len(), "downscale": job.downscale, "side": job.side });
    let run = RunFlags {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        out: a.out.clone(),
        force: a.force,
    };
    let rd = open_run(&run, "dynamics sensitivity", &config)?;
    let mut columns = vec!["variant", "step", "epoch"];
    columns.extend(sensitivity::METRICS_COLUMNS);
    let metrics = MetricsCsv::open(&rd.file("metrics.csv"), &columns, false)?;
    let variants = job.variants.clone();
    let mut observer = CliObserver::new("sensitivity", ctx).with_metrics(|row| {
        let vi = variants.iter().position(|v| *v == row.stage);
        let mut values = vec![
            vi.map(|i| i as f64),
            row.step.map(|s| s as f64),
            Some(row.epoch),
        ];
        values.extend(row.values.iter().map(|(_, v)| *v));
        let _ = metrics.append(&values);
    });
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    drop(observer);
    let headers = [
        "variant",
        "Gini of unrolled loss-sensitivity (final)",
        "Gini, mean over points",
        "Gini of direct input gradient (final)",
        "train accuracy",
        "steps",
        "parameters",
        "seconds",
    ];
    let opt_num = |x: Option<memaudit_experiments::Num>| opt(x.map(|v| v.0));
    let rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .map(|v| {
            let last = v.points.last();
            vec![
                v.variant.clone(),
                opt_num(v.gini_unrolled_final),
                fmt_f64(v.mean_gini_unrolled),
                opt_num(v.gini_direct_final),
                opt_num(last.map(|p| p.train_accuracy)),
                v.steps.to_string(),
                v.parameters.to_string(),
                format!("{:.1}", v.seconds),
            ]
        })
        .collect();
    let (n, side) = (r.examples, r.side);
    let mut html = report::Report::new(&format!(
        "memaudit dynamics sensitivity: MLP {:?} on {n} {} digits at {side}x{side}",
        cfg.hidden, r.data
    ));
    html.para("Arpit et al. §3.2 (Fig. 3): loss-sensitivity g_x^t = ||∂L_t/∂x||₁, the gradient of the loss after t SGD steps w.r.t. a training input, back-propagated through the unrolled steps; ḡ_x averages it over the measured steps. Its Gini coefficient over examples should be higher for real data (a few examples dominate) than for random data. The 'direct input gradient' is the cheaper estimate ||∇_x ℓ(θ_t; x)||₁ (no unrolling), shown for comparison, not as a replacement.");
    html.table(&headers, &rows);
    let pts = |f: &dyn Fn(&sensitivity::PointOut) -> f64| -> Vec<Series> {
        r.variants
            .iter()
            .map(|v| {
                Series::line(
                    &v.variant,
                    v.points.iter().map(|p| (p.epoch.0, f(p))).collect(),
                )
            })
            .collect()
    };
    html.svg(&chart(
        "Gini coefficient of unrolled loss-sensitivity ḡ_x",
        "epoch",
        "Gini",
        &pts(&|p| p.gini_unrolled.0),
    ));
    html.svg(&chart(
        "Gini coefficient of the direct input-gradient norm (cheap estimate)",
        "epoch",
        "Gini",
        &pts(&|p| p.gini_direct.0),
    ));
    html.svg(&chart(
        "Training accuracy",
        "epoch",
        "accuracy",
        &pts(&|p| p.train_accuracy.0),
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let text = format!(
        "dynamics sensitivity: MLP {:?} on {n} {} images at {side}x{side}, {} epochs of plain SGD (lr {})\n{}",
        cfg.hidden,
        r.data,
        cfg.epochs,
        cfg.lr,
        table_text(&headers, &rows)
    );
    finish_typed(rd, html, &r, text)
}

// ---------------------------------------------------------------------------------------------
// csr

fn csr(a: &CsrArgs, ctx: &Ctx) -> Result<Report> {
    let lass = a.lass.config()?;
    if a.csr_size == 0 {
        return Err(user(
            "--csr-size 0: LASS needs at least 1 validation example",
        ));
    }
    // Refuse a model LASS cannot probe before reading its weights.
    let declared = std::fs::read(a.run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            serde_json::from_value::<ModelConfig>(v["config"]["train"]["model"].clone()).ok()
        });
    if let Some(m) = declared {
        dynamics::require_dense_classifier(&m)
            .map_err(|e| user(format!("--run {}: {e}", a.run.display())))?;
    }
    let saved = super::eval::load_run(&a.run)?;
    dynamics::require_dense_classifier(&saved.config.model)
        .map_err(|e| user(format!("--run {}: {e}", a.run.display())))?;
    if !saved.data.is_image() {
        return Err(user(format!(
            "--run {}: trained on --data {}, not images in [0, 1]; LASS's radius is defined for pixels",
            a.run.display(),
            saved.data.data
        )));
    }
    let img = saved.data.images()?;
    let model = saved.config.model.build()?;
    let mut valid = img
        .test
        .subset(&(0..a.csr_size.min(img.test.labels.len())).collect::<Vec<_>>());
    if matches!(saved.config.model, ModelConfig::Mlp { .. }) {
        valid = flat(valid);
    }
    ctx.note(format!(
        "LASS on {} validation examples of {}",
        valid.labels.len(),
        saved.data.data
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let started = std::time::Instant::now();
    let o = dynamics::lass(
        &model,
        &saved.checkpoint.params,
        &valid.x,
        &valid.example_shape,
        &lass,
        &mut rng,
    )
    .map_err(lib)?;
    let secs = started.elapsed().as_secs_f64();
    let critical = o.critical.iter().filter(|&&c| c).count();
    let j = json!({ "run": a.run.display().to_string(), "examples": valid.labels.len(), "critical": critical, "csr": num(o.csr()),
        "iterations": o.iterations, "new_per_iteration": o.new_per_iteration, "lass": lass, "seconds": secs,
        "step": saved.checkpoint.state.step });
    let text = format!(
        "CSR {} ({critical} critical of {} validation examples; LASS r = {}/255, {} iterations, {secs:.1}s)",
        fmt_f64(o.csr()),
        valid.labels.len(),
        a.lass.lass_r,
        o.iterations
    );
    Ok(Report::new(text, j))
}

// ---------------------------------------------------------------------------------------------
// regularizers

/// A comma-separated list of values ("" or "none": no values), each checked by `ok`.
fn value_list(flag: &str, text: &str, ok: impl Fn(f32) -> bool, rule: &str) -> Result<Vec<f32>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    t.split(',')
        .map(|v| {
            let x: f32 = v
                .trim()
                .parse()
                .map_err(|_| user(format!("{flag} {v}: not a number")))?;
            if x.is_finite() && ok(x) {
                Ok(x)
            } else {
                Err(user(format!("{flag} {v}: {rule}")))
            }
        })
        .collect()
}

fn regularizers(a: &RegularizersArgs, ctx: &Ctx) -> Result<Report> {
    let lass = a.lass.config()?;
    // An accuracy difference: negative would demand beating the unregularised run, above 1
    // accepts every setting.
    if !(0.0..=1.0).contains(&a.tolerance) {
        return Err(user(format!(
            "--tolerance {}: must be in [0, 1] (an accuracy difference)",
            a.tolerance
        )));
    }
    let dropout_rates = value_list(
        "--dropout-rates",
        &a.dropout_rates,
        |v| (0.0..1.0).contains(&v),
        "a dropout rate must be in [0, 1)",
    )?;
    let input_dropout_rates = value_list(
        "--input-dropout-rates",
        &a.input_dropout_rates,
        |v| (0.0..1.0).contains(&v),
        "a dropout rate must be in [0, 1)",
    )?;
    let input_noise_stds = value_list(
        "--input-noise-stds",
        &a.input_noise_stds,
        |v| v >= 0.0,
        "must be >= 0",
    )?;
    let weight_decays = value_list(
        "--weight-decays",
        &a.weight_decays,
        |v| v >= 0.0,
        "must be >= 0",
    )?;
    let adversarial_weights = value_list(
        "--adversarial-weights",
        &a.adversarial_weights,
        |v| (0.0..=1.0).contains(&v),
        "must be in [0, 1]",
    )?;
    let mut settings = vec![Regularizer::None];
    settings.extend(
        dropout_rates
            .iter()
            .map(|&rate| Regularizer::Dropout { rate }),
    );
    settings.extend(
        input_dropout_rates
            .iter()
            .map(|&rate| Regularizer::InputDropout { rate }),
    );
    settings.extend(
        input_noise_stds
            .iter()
            .map(|&std| Regularizer::InputNoise { std }),
    );
    settings.extend(
        weight_decays
            .iter()
            .map(|&decay| Regularizer::WeightDecay { decay }),
    );
    settings.extend(
        adversarial_weights
            .iter()
            .map(|&weight| Regularizer::AdversarialDropout {
                weight,
                dropout: a.adversarial_dropout,
            }),
    );
    if !(0.0..1.0).contains(&a.adversarial_dropout) {
        return Err(user(format!(
            "--adversarial-dropout {}: must be in [0, 1)",
            a.adversarial_dropout
        )));
    }
    let img = load_images(
        &a.data.data,
        &a.data.data_dir,
        a.data.max_train.unwrap_or(5000),
        a.data.valid_size,
    )?;
    let n = img.train.labels.len();
    let model = a.mlp.config(img.train.per_example(), img.classes)?;
    let base = spec(model, &a.optim, &a.run, n)?;
    let randy = dynamics::corrupt(&img.train, img.classes, NoiseKind::RandY, 1.0, a.run.seed)
        .map_err(lib)?
        .data;
    let config = json!({ "experiment": "regularizers", "data": a.data, "mlp": a.mlp, "optim": a.optim, "run": a.run, "lass": lass,
        "settings": settings, "tolerance": a.tolerance, "train_spec": base });
    let rd = open_run(&a.run, "dynamics regularizers", &config)?;
    let mut progress = Progress::new(
        "regularizers",
        (settings.len() * 2 * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut points: Vec<(SweepPoint, f64)> = Vec::new();
    let mut csv = String::from(
        "family,label,value,randy_train_accuracy,real_best_valid_accuracy,real_best_epoch,real_final_valid_accuracy,seconds\n",
    );
    for reg in &settings {
        let started = std::time::Instant::now();
        let p = dynamics::sweep_point(
            &base,
            reg,
            &lass,
            &img.train,
            &randy,
            &img.test,
            &mut |which, r| {
                done += 1;
                progress.set(
                    done,
                    &format!("{} ({which}) epoch {}", reg.label(), r.epoch),
                );
                Ok(())
            },
        )
        .map_err(lib)?;
        let secs = started.elapsed().as_secs_f64();
        progress.line(&format!(
            "{}: randY train accuracy {}, real best valid accuracy {} ({secs:.0}s)",
            reg.label(),
            fmt_f64(p.randy_train_accuracy),
            fmt_f64(p.real_best_valid_accuracy)
        ));
        let value = match reg {
            Regularizer::None => 0.0,
            Regularizer::Dropout { rate } | Regularizer::InputDropout { rate } => *rate as f64,
            Regularizer::InputNoise { std } => *std as f64,
            Regularizer::WeightDecay { decay } => *decay as f64,
            Regularizer::AdversarialDropout { weight, .. } => *weight as f64,
        };
        let _ = writeln!(
            csv,
            "{},{},{value},{},{},{},{},{secs}",
            reg.family(),
            reg.label(),
            p.randy_train_accuracy,
            p.real_best_valid_accuracy,
            p.real_best_epoch,
            p.real_final_valid_accuracy
        );
        write_atomic(&rd.file("sweep.csv"), csv.as_bytes())?;
        points.push((p, secs));
    }
    progress.finish();
    let pts: Vec<SweepPoint> = points.iter().map(|p| p.0.clone()).collect();
    let best = dynamics::least_memorization_at_equal_accuracy(&pts, a.tolerance);
    let headers = [
        "setting",
        "randY final train acc",
        "real best valid acc (epoch)",
        "real final valid acc",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|(p, s)| {
            vec![
                p.regularizer.label(),
                fmt_f64(p.randy_train_accuracy),
                format!(
                    "{} ({})",
                    fmt_f64(p.real_best_valid_accuracy),
                    p.real_best_epoch
                ),
                fmt_f64(p.real_final_valid_accuracy),
                format!("{s:.0}"),
            ]
        })
        .collect();
    let base_acc = pts.first().map_or(f64::NAN, |p| p.real_best_valid_accuracy);
    let base_fit = pts.first().map_or(f64::NAN, |p| p.randy_train_accuracy);
    let headers_b = [
        "family",
        "least randY fit within tolerance",
        "randY train acc",
        "real best valid acc",
    ];
    let rows_b: Vec<Vec<String>> = best
        .iter()
        .map(|(f, p)| match p {
            Some(p) => vec![
                f.clone(),
                p.regularizer.label(),
                fmt_f64(p.randy_train_accuracy),
                fmt_f64(p.real_best_valid_accuracy),
            ],
            None => vec![
                f.clone(),
                "none within tolerance".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    let mut html = report::Report::new(&format!(
        "memaudit dynamics regularizers: MLP {:?} on {} ({n} examples)",
        a.mlp.hidden, img.name
    ));
    html.para(&format!("Arpit et al. §5 (Figs. 10-11): one model per setting trained on randY (all labels random) and one on real data. x: final training accuracy on randY (memorisation of noise); y: best validation accuracy on real data. The paper finds dropout (especially with adversarial training on LASS samples) lowers memorisation most without lowering real accuracy. Unregularised: randY fit {}, real best valid {}. Second table: per family, the setting with the least randY fit whose real accuracy is within {} of the unregularised run.", fmt_f64(base_fit), fmt_f64(base_acc), a.tolerance));
    html.table(&headers, &rows);
    html.table(&headers_b, &rows_b);
    let mut fams: Vec<&str> = Vec::new();
    for p in &pts {
        if !fams.contains(&p.regularizer.family()) {
            fams.push(p.regularizer.family());
        }
    }
    let scatter: Vec<Series> = fams
        .iter()
        .map(|f| {
            Series::scatter(
                f,
                pts.iter()
                    .filter(|p| p.regularizer.family() == *f)
                    .map(|p| (p.randy_train_accuracy, p.real_best_valid_accuracy))
                    .collect(),
            )
        })
        .collect();
    html.svg(&chart(
        "Regularisers: memorisation of randY against real generalisation",
        "final training accuracy on randY",
        "best validation accuracy on real data",
        &scatter,
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let results = json!({ "experiment": "regularizers", "run": rd.path.display().to_string(), "data": img.name, "train_examples": n,
        "points": points.iter().map(|(p, s)| json!({ "setting": p.regularizer, "label": p.regularizer.label(), "randy_train_accuracy": num(p.randy_train_accuracy),
            "real_best_valid_accuracy": num(p.real_best_valid_accuracy), "real_best_epoch": p.real_best_epoch,
            "real_final_valid_accuracy": num(p.real_final_valid_accuracy), "seconds": s })).collect::<Vec<_>>(),
        "tolerance": a.tolerance,
        "least_memorization_at_equal_accuracy": best.iter().map(|(f, p)| json!({ "family": f, "setting": p.as_ref().map(|p| p.regularizer.label()),
            "randy_train_accuracy": opt_num(p.as_ref().map(|p| p.randy_train_accuracy)), "real_best_valid_accuracy": opt_num(p.as_ref().map(|p| p.real_best_valid_accuracy)) })).collect::<Vec<_>>() });
    let text = format!(
        "dynamics regularizers: MLP {:?} on {} ({n} examples), {} epochs\n{}\n\n{}",
        a.mlp.hidden,
        img.name,
        a.run.epochs,
        table_text(&headers, &rows),
        table_text(&headers_b, &rows_b)
    );
    finish(rd, html, results, text)
}
