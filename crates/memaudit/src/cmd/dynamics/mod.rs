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

mod capacity;
mod csr;
mod curves;
mod easy_hard;
mod regularizers;
mod sensitivity;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use memaudit_audit::dynamics::{EpochRecord, NoiseKind};
use serde_json::{Value, json};

use memaudit_experiments::data::ImageSource;
use memaudit_experiments::dynamics::MlpSettings;
use memaudit_experiments::dynamics::easy_hard::EasyHardConfig;
use memaudit_experiments::optim::OptimSettings;

use super::args::OptimArgs;
use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64};
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
    /// The library's LASS settings (same names, same units).
    fn settings(&self) -> memaudit_experiments::dynamics::LassSettings {
        memaudit_experiments::dynamics::LassSettings {
            lass_r: self.lass_r,
            lass_alpha: self.lass_alpha,
            lass_beta: self.lass_beta,
            lass_max_iter: self.lass_max_iter,
            lass_min_new: self.lass_min_new,
        }
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
    #[command(flatten)]
    pub config: ConfigFlags,
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
    #[command(flatten)]
    pub config: ConfigFlags,
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
    #[command(flatten)]
    pub config: ConfigFlags,
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
    #[command(flatten)]
    pub config: ConfigFlags,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    match &args.experiment {
        Experiment::Curves(a) => curves::run(a, ctx),
        Experiment::Capacity(a) => capacity::run(a, ctx),
        Experiment::EasyHard(a) => easy_hard::run(a, ctx),
        Experiment::Sensitivity(a) => sensitivity::run(a, ctx),
        Experiment::Csr(a) => csr::run(a, ctx),
        Experiment::Regularizers(a) => regularizers::run(a, ctx),
    }
}

fn open_run(run: &RunFlags, command: &str, config: &Value) -> Result<RunDir> {
    Ok(RunDir::open(
        &run.out,
        command,
        config,
        Some(run.seed),
        Reuse {
            force: run.force,
            resume: false,
        },
    )?)
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), fmt_f64)
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

/// The library's settings from the flags (the defaults agree: see the tests).
fn optim_settings(o: &OptimArgs) -> OptimSettings {
    o.settings()
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

/// A right-aligned text table.
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
