//! `memaudit train`: train a model, plain or with DP-SGD, into a run folder.

use anyhow::{Context, Result};
use memaudit_data::Tokenizer;
use memaudit_engine::audit_canaries::FaultInjection;
use memaudit_engine::train::{EpochInfo, PrivacyConfig, TrainConfig, Trainer};
use memaudit_engine::{Model, ModelConfig};
pub use memaudit_experiments::train::folder::{EpochHook, LogsHook, StepHook};
use memaudit_experiments::train::{TrainRun, train_in_folder};
use serde_json::{Value, json};

use super::args::{ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::experiment::CliObserver;
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};
use crate::rundir::RunDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub augment: super::mia::AugmentArgs,
    /// Skip the sanity checks printed before private training.
    #[arg(long)]
    pub no_sanity_checks: bool,
    /// White-box audit (Nasr et al. 2023): M Dirac gradient canaries of norm C, each included
    /// with probability 1/2 and sampled like an example; after training, lower bounds on epsilon
    /// from their scores are compared with the run's claim. Private Poisson runs with one clip bound.
    #[arg(long, value_name = "M")]
    pub white_box_canaries: Option<usize>,
    /// The audit's self-test only, and only with MEMAUDIT_ALLOW_FAULT_INJECTION=1: scale the noise
    /// actually added by F while the accountant keeps the stated multiplier (a broken run on purpose).
    #[arg(long, value_name = "F", hide = true)]
    pub fault_noise_scale: Option<f64>,
    /// Black-box one-run audit (Steinke et al. 2023): M canaries (mislabelled training examples
    /// for classifiers, random windows for language models), each included with probability 1/2
    /// (seeded; manifest in audit_canaries.json); after training, the one-run lower bound on
    /// epsilon from their scores at the run's delta, next to the accountant's epsilon.
    #[arg(long, value_name = "M")]
    pub audit_canaries: Option<usize>,
}

/// Checks of the audit flags before anything is written (the white-box rule is the engine's).
fn check_audit_flags(args: &Args, cfg: &TrainConfig, num_params: usize) -> Result<()> {
    if let Some(m) = args.white_box_canaries {
        memaudit_engine::train::check_white_box_audit(cfg, m, num_params)
            .map_err(|e| user(format!("--white-box-canaries {m}: {e}")))?;
    }
    if let Some(f) = args.fault_noise_scale {
        if std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1") {
            return Err(user(
                "--fault-noise-scale breaks the run on purpose for the audit's self-test: it needs MEMAUDIT_ALLOW_FAULT_INJECTION=1",
            ));
        }
        if !(f > 0.0 && f.is_finite() && args.privacy.is_private()) {
            return Err(user(
                "--fault-noise-scale needs a private run and a factor > 0",
            ));
        }
    }
    Ok(())
}

pub use memaudit_experiments::train::Prepared;

/// Load the data named by `--data`.
pub fn prepare(data: &DataArgs) -> Result<Prepared> {
    Ok(memaudit_experiments::train::prepare(&data.settings())?)
}

/// Load the data; text is encoded with `tokenizer` when given (a saved run's vocabulary).
pub fn prepare_with(data: &DataArgs, tokenizer: Option<Tokenizer>) -> Result<Prepared> {
    Ok(memaudit_experiments::train::prepare_with(
        &data.settings(),
        tokenizer,
    )?)
}

/// MLPs take flat vectors: view images as such.
pub fn flatten_for(model: &ModelConfig, prepared: Prepared) -> Prepared {
    memaudit_experiments::train::flatten_for(model, prepared)
}

/// The privacy configuration of a run (noise calibrated if a target epsilon was given).
pub fn privacy_config(
    p: &PrivacyArgs,
    model: &Model,
    n: usize,
    batch: usize,
    epochs: usize,
    ctx: &Ctx,
) -> Result<Option<PrivacyConfig>> {
    let mut observer = CliObserver::new("train", ctx);
    Ok(memaudit_experiments::train::privacy_config(
        &p.settings(),
        model,
        n,
        batch,
        epochs,
        &mut observer,
    )?)
}

/// Crash tests only, and only with MEMAUDIT_ALLOW_FAULT_INJECTION=1:
/// MEMAUDIT_TEST_KILL_IN_CHECKPOINT=n aborts the process half way through the n-th checkpoint it
/// writes (parameters on disk, logs, sidecar and marker not), as a kill there would.
pub fn install_crash_test_hook(trainer: &mut Trainer) -> Result<()> {
    let Ok(n) = std::env::var("MEMAUDIT_TEST_KILL_IN_CHECKPOINT") else {
        return Ok(());
    };
    if std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1") {
        return Err(user(
            "MEMAUDIT_TEST_KILL_IN_CHECKPOINT kills the process on purpose for crash tests: it needs MEMAUDIT_ALLOW_FAULT_INJECTION=1",
        ));
    }
    let n: u64 = n.trim().parse().map_err(|_| {
        user(format!(
            "MEMAUDIT_TEST_KILL_IN_CHECKPOINT={n}: give the checkpoint's number (1 for the first)"
        ))
    })?;
    trainer.set_checkpoint_midway_hook(Box::new(move |nth| {
        if nth == n {
            std::process::abort();
        }
    }));
    Ok(())
}

/// The white-box audit in words.
fn audit_text(a: &memaudit_audit::lower_bound::WhiteBoxAuditResult) -> String {
    let mut t = format!(
        "White-box audit: {} Dirac gradient canaries ({} included), delta {}, AUROC {}; lower bounds on epsilon (each at significance {}):\n",
        a.canaries,
        a.included,
        a.delta,
        fmt_f64(a.auroc),
        a.significance / 2.0
    );
    for b in &a.bounds {
        t += &format!(
            "  {:<16} {}{}\n",
            b.method,
            fmt_f64(b.epsilon_lower_bound),
            if b.assumes_gaussian_tradeoff {
                "  (assumes a Gaussian trade-off curve; not used for the verdict)"
            } else {
                ""
            }
        );
    }
    t += &if a.refuted {
        format!(
            "REFUTED: a lower bound valid for any mechanism, {}, exceeds the claimed epsilon {} (family-wise significance {}): this run does NOT deliver its privacy guarantee.",
            fmt_f64(a.verdict_bound),
            fmt_f64(a.claimed_epsilon),
            a.significance
        )
    } else {
        format!(
            "consistent with the claim: every bound is at most the claimed epsilon {} (the strongest valid one, {}, is {:.0}% of it).",
            fmt_f64(a.claimed_epsilon),
            fmt_f64(a.verdict_bound),
            100.0 * a.verdict_bound / a.claimed_epsilon
        )
    };
    for w in &a.warnings {
        t += &format!("\nwarning: {w}");
    }
    t
}

/// Plots of the epoch metrics.
pub fn epoch_plots(r: &mut report::Report, epochs: &[EpochInfo]) {
    let pts = |f: &dyn Fn(&EpochInfo) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|y| (e.epoch as f64, y)))
            .collect()
    };
    r.svg(&report::chart(
        "Loss",
        "epoch",
        "mean loss per example (nats)",
        &[
            Series::line("train", pts(&|e| Some(e.train_loss))),
            Series::line("valid", pts(&|e| e.valid_loss)),
        ],
    ));
    r.svg(&report::chart(
        "Accuracy",
        "epoch",
        "accuracy",
        &[
            Series::line("train", pts(&|e| Some(e.train_accuracy))),
            Series::line("valid", pts(&|e| e.valid_accuracy)),
        ],
    ));
    if epochs.iter().any(|e| e.epsilon.is_some_and(f64::is_finite)) {
        let mut s = vec![Series::line("guarantee", pts(&|e| e.epsilon))];
        if epochs.iter().any(|e| e.epsilon_if_poisson.is_some()) {
            s.push(Series::line(
                "if Poisson (not proven)",
                pts(&|e| e.epsilon_if_poisson),
            ));
        }
        r.svg(&report::chart("Privacy spent", "epoch", "epsilon", &s));
    }
}

pub use memaudit_experiments::train::steps_per_epoch;

/// Refuse a model whose training state cannot fit in the memory left, before anything (the run
/// folder included) is created: the allocator would otherwise abort the process.
pub fn check_training_memory(
    model: &Model,
    optimizer: &memaudit_engine::optim::OptimizerConfig,
    private: bool,
) -> Result<()> {
    Ok(memaudit_experiments::train::check_training_memory(
        model, optimizer, private,
    )?)
}

/// The trainer's configuration from the shared flag groups (the library's one builder).
#[allow(clippy::too_many_arguments)]
pub fn train_config(
    privacy: &PrivacyArgs,
    optim: &OptimArgs,
    run: &RunArgs,
    model: &Model,
    model_cfg: &ModelConfig,
    n: usize,
    seed: u64,
    ctx: &Ctx,
) -> Result<TrainConfig> {
    let mut observer = CliObserver::new("train", ctx);
    Ok(memaudit_experiments::train::train_config(
        &privacy.settings(),
        &optim.settings(),
        &run.settings(),
        model,
        model_cfg,
        n,
        seed,
        &mut observer,
    )?)
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    args.privacy.validate()?;
    if args.run.epochs == 0 {
        return Err(user("--epochs must be at least 1"));
    }
    let prepared = prepare(&args.data)?;
    let model_cfg = args.model.config(&prepared.input)?;
    if let Some(s) = model_cfg.gpt_shape()
        && args.data.seq_len > s.n_ctx
    {
        return Err(user(format!(
            "--seq-len {} is longer than the GPT's positional table (--gpt-context {})",
            args.data.seq_len, s.n_ctx
        )));
    }
    let prepared = flatten_for(&model_cfg, prepared);
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    let seed = args.run.seed();
    // Audit canaries join the training set before N is counted (they are training examples).
    let (prepared, black_box) =
        super::audit_canaries::insert_into(prepared, args.audit_canaries, seed)?;
    let n = prepared.train.len();
    if args.run.batch_size == 0 || args.run.batch_size > n {
        return Err(user(format!(
            "--batch-size {} must be between 1 and the training set size {n}",
            args.run.batch_size
        )));
    }
    let cfg = train_config(
        &args.privacy,
        &args.optim,
        &args.run,
        &model,
        &model_cfg,
        n,
        seed,
        ctx,
    )?;
    check_audit_flags(args, &cfg, model.num_params())?;
    let augment = args.augment.resolve(&prepared.input, &args.data.data)?;
    let mut run_cfg = json!({ "train": cfg, "data": args.data, "white_box_canaries": args.white_box_canaries, "fault_noise_scale": args.fault_noise_scale, "augment": args.augment.augment });
    if let Some(m) = args.audit_canaries {
        run_cfg["audit_canaries"] = json!(m);
    }
    let mut rd = RunDir::open(
        &args.run.out,
        "train",
        &run_cfg,
        Some(seed),
        args.run.reuse(),
    )?;
    if let Some(tok) = &prepared.tokenizer {
        tok.save(&rd.file("tokenizer.json"))
            .context("saving the tokenizer")?;
    }
    let sanity = if args.no_sanity_checks || rd.resuming {
        None
    } else {
        match prepared.valid.as_deref() {
            Some(v) => super::sanity::run(&cfg, n, v)?,
            None => None,
        }
    };
    if let Some(s) = &sanity {
        ctx.note(&s.text);
        rd.set("sanity_checks", s.json.clone())?;
    }
    if let Some(c) = &black_box {
        super::audit_canaries::save_manifest(&rd, c, prepared.tokenizer.as_ref(), None)?;
    }
    let mut trainer = Trainer::new(cfg.clone(), n, Some(&rd.checkpoints()), rd.resuming)
        .map_err(|e| user(e.to_string()))?;
    trainer.set_augment(augment);
    if trainer.noise_is_seeded() {
        ctx.note("note: the DP noise is seeded from --seed (--seeded-noise): anyone with the seed can regenerate it; use only for reproducible research");
    }
    if let Some(m) = args.white_box_canaries {
        trainer
            .set_white_box_audit(m)
            .map_err(|e| user(format!("--white-box-canaries {m}: {e}")))?;
    }
    if let Some(f) = args.fault_noise_scale {
        let fault = FaultInjection::NoiseScale(f);
        ctx.note(format!("warning: {}", fault.describe()));
        trainer
            .inject_fault_for_audit_self_test(fault)
            .map_err(|e| user(format!("--fault-noise-scale: {e}")))?;
    }
    if let Some(c) = &black_box {
        return super::audit_canaries::train_and_audit(
            ctx,
            &mut rd,
            &mut trainer,
            &prepared,
            n,
            c,
            args.privacy.delta,
        );
    }
    let outcome = train_with_report(
        ctx,
        &mut rd,
        &mut trainer,
        &prepared,
        n,
        None,
        "memaudit train",
    )?;
    Ok(outcome.report)
}

/// What `train_with_report` returns.
pub struct TrainOutcome {
    pub report: Report,
    pub epochs: Vec<EpochInfo>,
    pub html: report::Report,
    pub summary: Value,
}

/// Train, write metrics.csv, report.html and run.json results; `extra` runs after each epoch.
pub fn train_with_report<'a>(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    extra: Option<EpochHook<'a>>,
    title: &str,
) -> Result<TrainOutcome> {
    train_with_report_hooks(
        ctx,
        rd,
        trainer,
        prepared,
        n,
        TrainHooks {
            epoch: extra,
            step: None,
            logs: None,
            write_html: true,
            finish_run: true,
        },
        title,
    )
}

/// What `train_with_report_hooks` does besides training.
pub struct TrainHooks<'a> {
    /// Runs after each epoch (after the metrics line, before the epoch's checkpoint).
    pub epoch: Option<EpochHook<'a>>,
    /// Runs after each optimizer step.
    pub step: Option<StepHook<'a>>,
    /// The caller's logs to store in each checkpoint.
    pub logs: Option<LogsHook<'a>>,
    /// Write report.html (a caller that combines several runs into one report turns it off).
    pub write_html: bool,
    /// Mark run.json completed (a caller with more work after training marks it itself).
    pub finish_run: bool,
}

/// Train into the run folder (the library's `train_in_folder`), then render: the text (with
/// the run folder's lines), the HTML report and the JSON summary.
pub fn train_with_report_hooks<'a>(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    hooks: TrainHooks<'a>,
    title: &str,
) -> Result<TrainOutcome> {
    debug_assert_eq!(prepared.train.len(), n);
    install_crash_test_hook(trainer)?;
    let mut observer = CliObserver::new("train", ctx);
    let run = train_in_folder(
        rd,
        trainer,
        prepared.train.as_ref(),
        prepared.valid.as_deref(),
        &prepared.name,
        memaudit_experiments::train::TrainHooks {
            epoch: hooks.epoch,
            step: hooks.step,
            logs: hooks.logs,
        },
        &mut observer,
    )?;
    observer.finish();
    drop(observer);
    let rendered = render_training(&run, title)?;
    if hooks.write_html {
        rendered.html.write(&rd.file("report.html"))?;
    }
    if hooks.finish_run {
        rd.finish("completed")?;
    }
    let text = format!(
        "{}\n\nrun folder: {}\nreport: {}",
        rendered.text,
        rd.path.display(),
        rd.file("report.html").display()
    );
    let summary = serde_json::to_value(&run.summary)?;
    Ok(TrainOutcome {
        report: Report::new(text, summary.clone()),
        epochs: run.epochs,
        html: rendered.html,
        summary,
    })
}

/// A training run rendered: its text (without the run folder's lines) and its HTML report.
pub struct RenderedTraining {
    pub text: String,
    pub html: report::Report,
}

/// The text and the HTML report of a run trained into a folder.
pub fn render_training(run: &TrainRun, title: &str) -> Result<RenderedTraining> {
    let s = &run.summary;
    let cfg = &run.config;
    let last = run.epochs.last();
    let statement = s.privacy_statement.as_ref().map(|p| p.text.as_str());
    let audit = s.white_box_audit.as_ref().map(|a| audit_text(&a.result));
    let fault = s.fault_injected.as_deref();
    let mut html = report::Report::new(&format!(
        "{title}: {} on {}",
        model_name(&cfg.model),
        s.data
    ));
    html.table(
        &["", ""],
        &[
            vec!["data".into(), s.data.clone()],
            vec![
                "training examples".into(),
                run.training_examples.to_string(),
            ],
            vec!["model".into(), model_name(&cfg.model)],
            vec!["parameters".into(), s.parameters.to_string()],
            vec!["epochs, steps".into(), format!("{}, {}", s.epochs, s.steps)],
            vec!["seed".into(), cfg.seed.to_string()],
            vec![
                "valid loss".into(),
                last.and_then(|e| e.valid_loss).map_or("-".into(), fmt_f64),
            ],
            vec![
                "valid accuracy".into(),
                last.and_then(|e| e.valid_accuracy)
                    .map_or("-".into(), fmt_f64),
            ],
            vec![
                "epsilon".into(),
                s.epsilon.map_or("not private".into(), |e| fmt_f64(e.0)),
            ],
        ],
    );
    epoch_plots(&mut html, &run.epochs);
    if let Some(f) = fault {
        html.heading("FAULT INJECTED");
        html.para(f);
    }
    if let Some(text) = statement {
        html.heading("Privacy statement");
        html.pre(text);
    }
    if let Some(a) = &audit {
        html.heading("White-box audit");
        html.pre(a);
    }
    if s.noise_seeded {
        html.para("The DP noise of this run was seeded from --seed (--seeded-noise) for reproducible research: anyone with the seed can regenerate it.");
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(cfg)?);
    let mut text = format!(
        "trained {} on {} for {} epochs ({} steps)",
        model_name(&cfg.model),
        s.data,
        s.epochs,
        s.steps
    );
    if let Some(l) = last {
        if let Some(v) = l.valid_loss {
            text += &format!("\nvalid loss {}", fmt_f64(v));
        }
        if let Some(a) = l.valid_accuracy {
            text += &format!(", valid accuracy {}", fmt_f64(a));
        }
    }
    if let Some(st) = statement {
        text += &format!("\n\n{st}");
    }
    if let Some(a) = &audit {
        text += &format!("\n\n{a}");
    }
    if let Some(f) = fault {
        text = format!("!!! {f}\n\n{text}\n\n!!! {f}");
    }
    Ok(RenderedTraining { text, html })
}

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
