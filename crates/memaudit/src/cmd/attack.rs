//! `memaudit attack lsb|correlation|sign|capacity`: Song, Ristenpart and Shmatikov's malicious
//! training algorithms ("Machine Learning Models that Remember Too Much", CCS 2017) end to end.
//!
//! The protocols are `memaudit_experiments::attacks`; this module turns the flags into their
//! configs (`--config FILE` and `--print-config` as every experiment command), runs them, and
//! renders the text, the JSON (the typed result) and the HTML reports: `OUT/report.html` for the
//! attack, and `OUT/conventional/report.html` and `OUT/malicious/report.html` for the two
//! training runs (`memaudit train`'s report, through the library's training-report hook).

mod capacity;
mod lsb;
mod regulariser;

use std::path::PathBuf;

use anyhow::Result;
use memaudit_experiments::attacks::{AttackHooks, AttackSettings, Scale, TrainedModel};
use memaudit_experiments::{ExperimentError, MetricsRow, Observer};

use super::args::{ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::experiment::{self, CliObserver, ConfigFlags};
use crate::Ctx;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

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
#[derive(clap::Args, Debug, Clone)]
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
    #[command(flatten)]
    pub config: ConfigFlags,
}

impl CommonArgs {
    /// The flags as the library's shared settings.
    fn settings(&self) -> AttackSettings {
        AttackSettings {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            max_train: self.max_train,
            features: self.features,
            secret: self.secret.clone(),
            secret_count: self.secret_count,
            conventional: self.conventional.clone(),
            grid_images: self.grid_images,
            model: self.model.settings(),
            optim: self.optim.settings(),
            privacy: self.privacy.settings(),
            run: self.run.settings(),
        }
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    match &args.attack {
        Attack::Lsb(a) => lsb::run(a, ctx),
        Attack::Correlation(a) => regulariser::run_correlation(a, ctx),
        Attack::Sign(a) => regulariser::run_sign(a, ctx),
        Attack::Capacity(a) => capacity::run(a, ctx),
    }
}

/// Run an attack of the library with the CLI's observer and hooks: each training sub-run gets
/// `memaudit train`'s report, and the crash-test hook of the other training commands.
fn run_attack<R>(
    ctx: &Ctx,
    flags: &ConfigFlags,
    run: impl FnOnce(&mut dyn Observer, AttackHooks<'_>) -> Result<R, ExperimentError>,
) -> Result<R> {
    // Checked once here, so that a bad setting fails before anything is written.
    super::secret_sharer::crash_test_hook()?;
    let hooks = AttackHooks {
        training_report: Some(Box::new(|run, rd, title| {
            super::train::render_training(run, title)?
                .html
                .write(&rd.file("report.html"))?;
            Ok(())
        })),
        checkpoint_midway: Some(Box::new(|| {
            super::secret_sharer::crash_test_hook().ok().flatten()
        })),
    };
    let mut observer = PerTraining {
        ctx,
        bar: CliObserver::new("train", ctx),
        last: (0, 0),
    };
    let result = run(&mut observer, hooks).map_err(|e| experiment::cli_error(e, flags))?;
    observer.bar.finish();
    Ok(result)
}

/// The CLI's observer with one progress bar per training run (the conventional and the
/// malicious model train for different numbers of steps).
struct PerTraining<'c> {
    ctx: &'c Ctx,
    bar: CliObserver<'c>,
    /// The last progress: step and total.
    last: (u64, u64),
}

impl Observer for PerTraining<'_> {
    fn progress(&mut self, stage: &str, step: u64, total: u64) {
        // A new run starts over (or has another length): a new bar.
        if step < self.last.0 || total != self.last.1 {
            self.bar.finish();
            self.bar = CliObserver::new("train", self.ctx);
        }
        self.last = (step, total);
        self.bar.progress(stage, step, total);
    }
    fn note(&mut self, text: &str) {
        self.bar.note(text);
    }
    fn metrics(&mut self, row: &MetricsRow) {
        self.bar.metrics(row);
    }
    fn cancelled(&self) -> bool {
        self.bar.cancelled()
    }
}

/// Rows comparing the two models.
fn model_rows(conv: &TrainedModel, mal: &TrainedModel) -> Vec<Vec<String>> {
    let eps = |t: &TrainedModel| t.epsilon.map_or("not private".into(), |e| fmt_f64(e.0));
    vec![
        vec![
            "test accuracy".into(),
            fmt_f64(conv.test_accuracy.0),
            fmt_f64(mal.test_accuracy.0),
        ],
        vec![
            "test loss".into(),
            fmt_f64(conv.test_loss.0),
            fmt_f64(mal.test_loss.0),
        ],
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
                format!("{:.1}", conv.train_seconds.0)
            },
            format!("{:.1}", mal.train_seconds.0),
        ],
        vec![
            "run folder".into(),
            conv.run.display().to_string(),
            mal.run.display().to_string(),
        ],
    ]
}

/// Test accuracy per epoch of both models.
fn accuracy_chart(conv: &TrainedModel, mal: &TrainedModel) -> String {
    let pts = |t: &TrainedModel| -> Vec<(f64, f64)> {
        t.epochs
            .iter()
            .filter_map(|e| e.valid_accuracy.map(|a| (e.epoch as f64, a)))
            .collect()
    };
    let mut series = vec![Series::line("malicious", pts(mal))];
    if conv.epochs.is_empty() {
        let last = mal.epochs.last().map_or(1.0, |e| e.epoch as f64);
        let acc = conv.test_accuracy.0;
        series.push(Series::line(
            "conventional (reused)",
            vec![(1.0, acc), (last, acc)],
        ));
    } else {
        series.push(Series::line("conventional", pts(conv)));
    }
    report::chart("Test accuracy", "epoch", "accuracy", &series)
}

/// The header line every attack's text output starts with.
fn header(attack: &str, s: &Scale) -> String {
    format!(
        "{attack} on {} ({}, {} parameters; {} training and {} test examples, {} epochs)",
        s.dataset, s.model, s.parameters, s.train_examples, s.test_examples, s.epochs
    )
}

/// Write the attack's report.html (its path is in the result) and return the CLI's report.
fn finish<R: serde::Serialize>(
    html: &report::Report,
    path: &std::path::Path,
    mut text: String,
    result: &R,
) -> Result<Report> {
    html.write(path)?;
    text += &format!("\nreport: {}", path.display());
    Ok(Report::new(text, serde_json::to_value(result)?))
}
