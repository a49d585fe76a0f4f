//! `memaudit train`: train a model, plain or with DP-SGD, into a run folder.

use anyhow::Result;
use memaudit_engine::ModelConfig;
use memaudit_engine::train::EpochInfo;
use memaudit_experiments::train::{TrainExperimentConfig, TrainRun, TrainRunHooks};

use super::args::{ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

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
    #[command(flatten)]
    pub config: ConfigFlags,
}

impl Args {
    /// The flags as the experiment's config.
    pub fn settings(&self) -> TrainExperimentConfig {
        TrainExperimentConfig {
            data: self.data.settings(),
            model: self.model.settings(),
            optim: self.optim.settings(),
            privacy: self.privacy.settings(),
            run: self.run.settings(),
            augment: self.augment.augment.clone(),
            no_sanity_checks: self.no_sanity_checks,
            white_box_canaries: self.white_box_canaries,
            audit_canaries: self.audit_canaries,
            fault_noise_scale: self.fault_noise_scale,
        }
    }
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

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.fault_noise_scale.is_some()
        && std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1")
    {
        return Err(user(
            "--fault-noise-scale breaks the run on purpose for the audit's self-test: it needs MEMAUDIT_ALLOW_FAULT_INJECTION=1",
        ));
    }
    let cfg = match experiment::resolve(&args.config, args.settings(), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let hooks = TrainRunHooks {
        checkpoint_midway: super::secret_sharer::crash_test_hook()?,
        on_sanity: Some(Box::new(|s| ctx.note(super::sanity::render(s)))),
    };
    let mut observer = CliObserver::new("train", ctx);
    let result = memaudit_experiments::train::run_with(&cfg, &mut observer, hooks)
        .map_err(|e| experiment::cli_error(e, &args.config))?;
    observer.finish();
    drop(observer);
    let rendered = render_training(&result.training, "memaudit train")?;
    let mut html = rendered.html;
    let mut text = rendered.text;
    if let Some(a) = &result.black_box_audit {
        let t = super::audit_canaries::audit_text(a);
        html.heading("Black-box audit");
        html.pre(&t);
        text += &format!("\n\n{t}");
    }
    let run = std::path::Path::new(&result.summary.run);
    let report_path = run.join("report.html");
    html.write(&report_path)?;
    text += &format!(
        "\n\nrun folder: {}\nreport: {}",
        run.display(),
        report_path.display()
    );
    Ok(Report::new(text, serde_json::to_value(&result)?))
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

/// A model's name in reports and messages (the experiments library's).
pub fn model_name(m: &ModelConfig) -> String {
    memaudit_experiments::attacks::model_name(m)
}
