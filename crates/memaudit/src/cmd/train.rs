//! `memaudit train`: train a model, plain or with DP-SGD, into a run folder.

use anyhow::{Context, Result};
use memaudit_data::Tokenizer;
use memaudit_engine::audit_canaries::FaultInjection;
use memaudit_engine::checkpoint::LogFile;
use memaudit_engine::privacy;
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{
    Dataset, EpochInfo, PrivacyConfig, StepInfo, StopReason, TrainConfig, TrainObserver, Trainer,
};
use memaudit_engine::{Model, ModelConfig, PrivacyLedger};
use serde_json::{Value, json};

use super::args::{InputShape, ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::progress::Progress;
use crate::report::{self, Series};
use crate::rundir::{MetricsCsv, RunDir, parse_metrics};

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

/// Data ready for the trainer.
pub struct Prepared {
    pub name: String,
    pub train: Box<dyn Dataset>,
    pub valid: Option<Box<dyn Dataset>>,
    pub input: InputShape,
    pub tokenizer: Option<Tokenizer>,
}

/// Load the data named by `--data`.
pub fn prepare(data: &DataArgs) -> Result<Prepared> {
    prepare_with(data, None)
}

/// Load the data; text is encoded with `tokenizer` when given (a saved run's vocabulary).
pub fn prepare_with(data: &DataArgs, tokenizer: Option<Tokenizer>) -> Result<Prepared> {
    if data.is_image() {
        let d = data.images()?;
        return Ok(Prepared {
            name: data.data.clone(),
            train: Box::new(d.train),
            valid: Some(Box::new(d.test)),
            input: InputShape::Image {
                channels: d.channels,
                height: d.height,
                width: d.width,
                classes: d.classes,
            },
            tokenizer: None,
        });
    }
    match data.data.as_str() {
        "imdb" => {
            let (train, test, vec) = data.imdb(100_000)?;
            Ok(Prepared {
                name: "imdb".into(),
                train: Box::new(train),
                valid: Some(Box::new(test)),
                input: InputShape::Sparse {
                    features: vec.terms().len(),
                    classes: 2,
                },
                tokenizer: None,
            })
        }
        "adult" => {
            let (train, test) = data.adult()?;
            let features = train.per_example();
            Ok(Prepared {
                name: "adult".into(),
                train: Box::new(train),
                valid: Some(Box::new(test)),
                input: InputShape::Flat {
                    features,
                    classes: 2,
                },
                tokenizer: None,
            })
        }
        _ => {
            let corpus = data.text()?;
            let tok = match tokenizer {
                Some(t) => t,
                None => data.tokenizer(&corpus, &[])?,
            };
            let train = data.windows(tok.encode(&corpus.train)?)?;
            let valid = data.windows(tok.encode(&corpus.valid)?)?;
            if train.is_empty() {
                return Err(user(format!(
                    "--data {}: the training text is shorter than one window of --seq-len {}",
                    data.data, data.seq_len
                )));
            }
            Ok(Prepared {
                name: corpus.name,
                train: Box::new(train),
                valid: Some(Box::new(valid)),
                input: InputShape::Tokens { vocab: tok.len() },
                tokenizer: Some(tok),
            })
        }
    }
}

/// MLPs take flat vectors: view images as such.
pub fn flatten_for(model: &ModelConfig, prepared: Prepared) -> Prepared {
    if !matches!(model, ModelConfig::Mlp { .. }) {
        return prepared;
    }
    // DenseDataset batches carry the example shape; an MLP needs [B, F]. Wrap to flatten.
    struct Flat(Box<dyn Dataset>);
    impl Dataset for Flat {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn batch(&self, idx: &[usize]) -> memaudit_engine::Batch {
            let mut b = self.0.batch(idx);
            if let memaudit_engine::Value::Dense(t) = &mut b.input {
                let n = t.shape[0];
                let f = t
                    .data
                    .len()
                    .checked_div(n)
                    .unwrap_or_else(|| t.shape[1..].iter().product());
                t.shape = vec![n, f];
            }
            b
        }
    }
    Prepared {
        train: Box::new(Flat(prepared.train)),
        valid: prepared
            .valid
            .map(|v| Box::new(Flat(v)) as Box<dyn Dataset>),
        ..prepared
    }
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
    p.validate()?;
    if !p.is_private() {
        return Ok(None);
    }
    let accountant = p.accountant()?;
    let sampling = p.sampling()?;
    let steps = epochs as u64 * steps_per_epoch(sampling, n, batch);
    let sigma = match (p.noise_multiplier, p.target_epsilon) {
        (Some(s), _) => s,
        (None, Some(target)) => {
            // Calibrated to this run's guarantee: Poisson steps, or for shuffled batches one
            // unamplified Gaussian per epoch (the ledger's rule).
            let s = privacy::calibrate_planned(
                sampling,
                n as u64,
                batch as u64,
                epochs as u64,
                p.delta,
                target,
                accountant,
            )
            .map_err(|e| user(format!("--target-epsilon {target}: {e}")))?;
            let how = match sampling {
                SamplingMode::Poisson => {
                    format!("{steps} Poisson steps (q = {:.6})", batch as f64 / n as f64)
                }
                SamplingMode::Shuffle => format!(
                    "{epochs} epochs of shuffled batches ({steps} steps, no amplification by sampling)"
                ),
            };
            ctx.note(format!(
                "calibrated noise multiplier {s:.5} for epsilon <= {target} at delta {} over {how}",
                p.delta
            ));
            s
        }
        (None, None) => unreachable!(),
    };
    if p.delta > 1.0 / n as f64 {
        ctx.note(format!("warning: --delta {} is larger than 1/N = {:.2e}; a mechanism that publishes one random example would satisfy it", p.delta, 1.0 / n as f64));
    }
    let param_layers: Vec<usize> = (0..model.num_layers())
        .filter(|&l| !model.param_range(l).is_empty())
        .collect();
    Ok(Some(PrivacyConfig {
        noise_multiplier: sigma,
        clipping: p.clip_config(&param_layers, model.num_layers())?,
        delta: p.delta,
        accountant,
        max_epsilon: p.max_epsilon,
    }))
}

/// The privacy statement of a finished run, from its ledger: a TF Privacy-style statement when
/// the run had one setting throughout, else the composition segment by segment. Every epsilon
/// labelled as the run's is the ledger's.
pub fn statement_text(
    cfg: &TrainConfig,
    ledger: Option<&PrivacyLedger>,
    n: usize,
) -> Result<Option<(String, Value)>> {
    let (Some(p), Some(ledger)) = (&cfg.privacy, ledger) else {
        return Ok(None);
    };
    let epsilon = ledger.epsilon()?;
    let if_poisson = ledger.epsilon_if_poisson()?;
    let ran: Vec<_> = ledger.segments.iter().filter(|s| s.steps > 0).collect();
    let steps = ledger.total_steps();
    let mut text = String::new();
    let uniform = ran.windows(2).all(|w| {
        (w[0].sampling, w[0].batch_size, w[0].noise_multiplier)
            == (w[1].sampling, w[1].batch_size, w[1].noise_multiplier)
    });
    let mut json = json!({});
    if let (true, Some(first)) = (uniform, ran.first()) {
        let spe = first.steps_per_epoch().max(1);
        let st = privacy::statement(
            n as u64,
            first.batch_size,
            steps as f64 / spe as f64,
            Some(steps),
            first.noise_multiplier,
            p.delta,
            p.accountant,
        )?;
        if first.sampling == SamplingMode::Poisson {
            text.push_str("This run drew every batch by Poisson sampling, so the Poisson figure below is its guarantee.\n\n");
        } else {
            text.push_str(
                "This run used shuffled fixed-size batches, not Poisson sampling. Its guarantee is \
each example's releases without amplification (the 'once per epoch' figure below, counted per \
permutation the run drew); the Poisson figure is only what Poisson sampling would have given.\n\n",
            );
        }
        text.push_str(&st.0);
        json = st.1;
    } else {
        text.push_str(&format!(
            "Privacy statement (DP-SGD, differential privacy): {} segments with different settings, composed\n",
            ran.len()
        ));
        for (k, s) in ran.iter().enumerate() {
            text.push_str(&format!(
                "  segment {}: steps {}..{}, {} sampling, q = {:.6}, noise multiplier {}\n",
                k + 1,
                s.first_step,
                s.first_step + s.steps,
                match s.sampling {
                    SamplingMode::Poisson => "Poisson",
                    SamplingMode::Shuffle => "shuffled (no amplification)",
                },
                s.sampling_rate(),
                fmt_f64(s.noise_multiplier)
            ));
        }
    }
    text.push_str(&format!(
        "\nThis run's guarantee, from its privacy ledger ({steps} private steps, {} accounting): epsilon = {} at delta = {}{}\n",
        p.accountant.name(),
        fmt_f64(epsilon),
        p.delta,
        if_poisson.map_or(String::new(), |e| format!(
            " (had every batch been Poisson-sampled: {}; not this run's guarantee)",
            fmt_f64(e)
        ))
    ));
    json["epsilon"] = num(epsilon);
    json["epsilon_if_poisson"] = if_poisson.map(num).unwrap_or(Value::Null);
    json["ledger"] = serde_json::to_value(ledger)?;
    Ok(Some((text, json)))
}

/// A per-epoch hook: sees the epoch's numbers, the model and its parameters.
pub type EpochHook<'a> =
    Box<dyn FnMut(&EpochInfo, &Model, &[f32]) -> memaudit_engine::Result<()> + 'a>;

/// Progress, metrics.csv and per-epoch lines, plus an optional extra per-epoch hook.
pub struct CliObserver<'a> {
    pub progress: Progress,
    pub metrics: MetricsCsv,
    pub epochs: Vec<EpochInfo>,
    pub extra: Option<EpochHook<'a>>,
}

pub const METRIC_COLUMNS: [&str; 11] = [
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "epsilon",
    "epsilon_if_poisson",
    "clip_bound",
    "clipped_fraction",
    "seconds",
];

impl TrainObserver for CliObserver<'_> {
    fn on_step(
        &mut self,
        info: &memaudit_engine::train::StepInfo,
        _m: &Model,
        _p: &[f32],
    ) -> memaudit_engine::Result<()> {
        self.progress
            .set(info.step, &format!("loss {:.4}", info.loss));
        Ok(())
    }
    fn on_epoch(
        &mut self,
        e: &EpochInfo,
        model: &Model,
        params: &[f32],
    ) -> memaudit_engine::Result<()> {
        let f = |x: f64| Some(x);
        self.metrics
            .append(&[
                f(e.epoch as f64),
                f(e.step as f64),
                f(e.train_loss),
                f(e.train_accuracy),
                e.valid_loss,
                e.valid_accuracy,
                e.epsilon,
                e.epsilon_if_poisson,
                e.clip_bound,
                e.clipped_fraction,
                f(e.seconds),
            ])
            .map_err(|err| memaudit_engine::EngineError::Config(format!("{err:#}")))?;
        let mut line = format!("epoch {}: train loss {:.4}", e.epoch, e.train_loss);
        if let Some(v) = e.valid_loss {
            line += &format!(", valid loss {v:.4}");
        }
        if let Some(a) = e.valid_accuracy {
            line += &format!(", valid accuracy {:.4}", a);
        }
        if let Some(eps) = e.epsilon {
            line += &format!(", epsilon {}", fmt_f64(eps));
        }
        line += &format!(" ({:.1}s)", e.seconds);
        self.progress.line(&line);
        self.epochs.push(e.clone());
        if let Some(h) = self.extra.as_mut() {
            h(e, model, params)?;
        }
        Ok(())
    }
    fn checkpoint_logs(&mut self) -> memaudit_engine::Result<Vec<LogFile>> {
        Ok(vec![(
            METRICS_CSV.into(),
            self.metrics.contents().into_bytes(),
        )])
    }
}

/// The metrics log's file name, in the run folder and in each checkpoint.
pub const METRICS_CSV: &str = "metrics.csv";

/// One `metrics.csv` row back as the epoch it logged (exact: rows are written with shortest
/// round-trip formatting).
fn epoch_from_row(row: &std::collections::HashMap<String, Option<f64>>) -> Result<EpochInfo> {
    let get = |k: &str| row.get(k).copied().flatten();
    let need = |k: &str| get(k).with_context(|| format!("metrics.csv: a row has no {k}"));
    Ok(EpochInfo {
        epoch: need("epoch")? as u64,
        step: need("step")? as u64,
        train_loss: need("train_loss")?,
        train_accuracy: need("train_accuracy")?,
        valid_loss: get("valid_loss"),
        valid_accuracy: get("valid_accuracy"),
        epsilon: get("epsilon"),
        epsilon_if_poisson: get("epsilon_if_poisson"),
        clip_bound: get("clip_bound"),
        clipped_fraction: get("clipped_fraction"),
        seconds: get("seconds").unwrap_or(f64::NAN),
    })
}

/// The metrics log a resumed run continues, and its epochs (the whole history, for the report
/// and the results): the copy stored in the checkpoint resumed from, so rows logged after that
/// checkpoint are dropped (the resumed run logs them again). A checkpoint written before logs were
/// stored with checkpoints falls back to the folder's file, without its rows past the checkpoint.
fn restore_metrics(rd: &RunDir, trainer: &Trainer) -> Result<(MetricsCsv, Vec<EpochInfo>)> {
    let path = rd.file(METRICS_CSV);
    let history = match trainer.resumed_log(METRICS_CSV) {
        Some(b) => b.to_vec(),
        None => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let header = METRIC_COLUMNS.join(",");
            let mut kept = format!("{header}\n");
            if text.lines().next() == Some(header.as_str()) {
                for line in text.lines().skip(1) {
                    let step = line.split(',').nth(1).and_then(|c| c.parse::<u64>().ok());
                    if step.is_some_and(|s| s <= trainer.step) {
                        kept += line;
                        kept.push('\n');
                    }
                }
            }
            kept.into_bytes()
        }
    };
    let metrics = MetricsCsv::restore(&path, &METRIC_COLUMNS, &history)?;
    let epochs = parse_metrics(&metrics.contents())
        .and_then(|rows| rows.iter().map(epoch_from_row).collect::<Result<Vec<_>>>())
        .with_context(|| format!("{}: the stored metrics", path.display()))?;
    Ok((metrics, epochs))
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

/// Family-wise significance of the white-box audit's verdict.
const AUDIT_SIGNIFICANCE: f64 = 0.05;

/// The white-box audit as JSON (non-finite numbers as strings, like every --json output).
fn audit_json(a: &memaudit_audit::lower_bound::WhiteBoxAuditResult) -> Value {
    json!({
        "canaries": a.canaries,
        "included": a.included,
        "claimed_epsilon": num(a.claimed_epsilon),
        "delta": a.delta,
        "significance": a.significance,
        "two_m_delta": a.two_m_delta,
        "auroc": num(a.auroc),
        "results": a.bounds.iter().map(|b| json!({
            "method": b.method,
            "epsilon_lower_bound": num(b.epsilon_lower_bound),
            "assumes_gaussian_tradeoff": b.assumes_gaussian_tradeoff,
        })).collect::<Vec<_>>(),
        "verdict_bound": num(a.verdict_bound),
        "refuted": a.refuted,
        "warnings": a.warnings,
    })
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

/// Steps in one epoch: ceil(N/B) Poisson batches (the accountant's count), or N/B full
/// shuffled batches.
pub fn steps_per_epoch(sampling: SamplingMode, n: usize, batch: usize) -> u64 {
    memaudit_engine::ledger::steps_per_epoch(sampling, n as u64, batch as u64)
}

/// Refuse a model whose training state cannot fit in the memory left, before anything (the run
/// folder included) is created: the allocator would otherwise abort the process.
pub fn check_training_memory(
    model: &Model,
    optimizer: &memaudit_engine::optim::OptimizerConfig,
    private: bool,
) -> Result<()> {
    use memaudit_engine::memory;
    let p = model.num_params();
    memory::check_fits(
        &format!("training {p} parameters (weights, gradient, optimizer state)"),
        memory::training_bytes(p, optimizer, private),
        memory::available_bytes(),
    )
    .map_err(|e| user(format!("model flags: {e}; use a smaller model")))
}

/// The trainer's configuration from the shared flag groups: privacy (noise calibrated here when
/// `--target-epsilon` is given), sampling, optimizer and schedule.
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
    let optimizer = optim.config_for(model_cfg)?;
    check_training_memory(model, &optimizer, privacy.is_private())?;
    let dp = privacy_config(privacy, model, n, run.batch_size, run.epochs, ctx)?;
    let sampling = privacy.sampling()?;
    let steps_per_epoch = steps_per_epoch(sampling, n, run.batch_size);
    Ok(TrainConfig {
        model: model_cfg.clone(),
        optimizer,
        schedule: optim.schedule(steps_per_epoch, run.epochs)?,
        epochs: run.epochs,
        batch_size: run.batch_size,
        physical_batch: privacy.physical_batch,
        sampling,
        seed,
        privacy: dp,
        seeded_noise: privacy.seeded_noise,
    })
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

/// Train, write metrics.csv, report.html and run.json results; the report can be extended by the
/// caller (`extra` runs after each epoch).
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

/// A per-step hook (e.g. exposure every N steps).
pub type StepHook<'a> =
    Box<dyn FnMut(&StepInfo, &Model, &[f32]) -> memaudit_engine::Result<()> + 'a>;

/// The caller's own logs (their whole history so far), stored in every checkpoint with
/// `metrics.csv` so that a resume restores them consistently with it.
pub type LogsHook<'a> = Box<dyn FnMut() -> memaudit_engine::Result<Vec<LogFile>> + 'a>;

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

/// `CliObserver` plus a per-step hook and the caller's logs.
struct HookedObserver<'a> {
    inner: CliObserver<'a>,
    step: Option<StepHook<'a>>,
    logs: Option<LogsHook<'a>>,
}

impl TrainObserver for HookedObserver<'_> {
    fn on_step(&mut self, info: &StepInfo, m: &Model, p: &[f32]) -> memaudit_engine::Result<()> {
        self.inner.on_step(info, m, p)?;
        match self.step.as_mut() {
            Some(h) => h(info, m, p),
            None => Ok(()),
        }
    }
    fn on_epoch(&mut self, e: &EpochInfo, m: &Model, p: &[f32]) -> memaudit_engine::Result<()> {
        self.inner.on_epoch(e, m, p)
    }
    fn checkpoint_logs(&mut self) -> memaudit_engine::Result<Vec<LogFile>> {
        let mut logs = self.inner.checkpoint_logs()?;
        if let Some(h) = self.logs.as_mut() {
            logs.extend(h()?);
        }
        Ok(logs)
    }
}

/// `train_with_report` with a per-step hook and control over what is written.
pub fn train_with_report_hooks<'a>(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    hooks: TrainHooks<'a>,
    title: &str,
) -> Result<TrainOutcome> {
    let cfg = trainer.config.clone();
    let steps_per_epoch = steps_per_epoch(cfg.sampling, n, cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs as u64;
    install_crash_test_hook(trainer)?;
    // A resumed run continues the logs its checkpoint holds (the whole history, for the report
    // and the results even when nothing is left to train).
    let (metrics, epochs) = if trainer.resumed_from.is_some() {
        restore_metrics(rd, trainer)?
    } else {
        (
            MetricsCsv::open(&rd.file(METRICS_CSV), &METRIC_COLUMNS, false)?,
            Vec::new(),
        )
    };
    let mut hooked = HookedObserver {
        inner: CliObserver {
            progress: Progress::new("train", total, ctx.quiet || ctx.json),
            metrics,
            epochs,
            extra: hooks.epoch,
        },
        step: hooks.step,
        logs: hooks.logs,
    };
    if let Some(from) = &trainer.resumed_from {
        ctx.note(format!(
            "resuming from {} (epoch {}, step {})",
            from.display(),
            trainer.epoch,
            trainer.step
        ));
        if trainer.epoch >= cfg.epochs as u64 {
            ctx.note(format!(
                "the run has already trained its {} epochs: nothing to train; its results are recomputed from its last checkpoint (give a larger --epochs to continue it)",
                trainer.epoch
            ));
        }
    }
    let stop = trainer
        .run(
            prepared.train.as_ref(),
            prepared.valid.as_deref(),
            &mut hooked,
        )
        .map_err(|e| user(e.to_string()))?;
    let obs = hooked.inner;
    obs.progress.finish();
    if stop == StopReason::PrivacyBudget {
        ctx.note(format!(
            "stopped at step {}: the next step would exceed --max-epsilon",
            trainer.step
        ));
    }
    let statement = statement_text(&cfg, trainer.ledger(), n)?;
    let eps = trainer.epsilon()?;
    let eps_if_poisson = trainer.epsilon_if_poisson()?;
    // The white-box audit the run carried, bounded at the run's own delta and compared with its
    // claim (memaudit-audit's `white_box_audit`); and the self-test's fault, said everywhere.
    let audit = match (trainer.white_box_canaries(), eps, cfg.privacy.as_ref()) {
        (Some(c), Some(e), Some(p)) => Some(
            memaudit_audit::lower_bound::white_box_audit(c, e, p.delta, AUDIT_SIGNIFICANCE)
                .map_err(|e| user(format!("white-box audit: {e}")))?,
        ),
        _ => None,
    };
    let fault = trainer.injected_fault().map(|f| f.describe());
    let last = obs.epochs.last().cloned();
    let summary = json!({
        "run": rd.path.display().to_string(),
        "data": prepared.name,
        "model": cfg.model,
        "parameters": trainer.model.num_params(),
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "seed": cfg.seed,
        "stop_reason": stop,
        "train_loss": last.as_ref().map(|e| num(e.train_loss)),
        "valid_loss": last.as_ref().and_then(|e| e.valid_loss).map(num),
        "valid_accuracy": last.as_ref().and_then(|e| e.valid_accuracy).map(num),
        "private": cfg.privacy.is_some(),
        "epsilon": eps.map(num),
        "epsilon_if_poisson": eps_if_poisson.map(num),
        "delta": cfg.privacy.as_ref().map(|p| p.delta),
        "noise_multiplier": cfg.privacy.as_ref().map(|p| p.noise_multiplier),
        "noise_seeded": trainer.noise_is_seeded(),
        "sampling": cfg.sampling,
        "privacy_statement": statement.as_ref().map(|s| s.1.clone()),
        "white_box_audit": audit.as_ref().map(audit_json),
        "fault_injected": fault,
    });
    let mut html = report::Report::new(&format!(
        "{title}: {} on {}",
        model_name(&cfg.model),
        prepared.name
    ));
    html.table(
        &["", ""],
        &[
            vec!["data".into(), prepared.name.clone()],
            vec!["training examples".into(), n.to_string()],
            vec!["model".into(), model_name(&cfg.model)],
            vec!["parameters".into(), trainer.model.num_params().to_string()],
            vec![
                "epochs, steps".into(),
                format!("{}, {}", trainer.epoch, trainer.step),
            ],
            vec!["seed".into(), cfg.seed.to_string()],
            vec![
                "valid loss".into(),
                last.as_ref()
                    .and_then(|e| e.valid_loss)
                    .map_or("-".into(), fmt_f64),
            ],
            vec![
                "valid accuracy".into(),
                last.as_ref()
                    .and_then(|e| e.valid_accuracy)
                    .map_or("-".into(), fmt_f64),
            ],
            vec!["epsilon".into(), eps.map_or("not private".into(), fmt_f64)],
        ],
    );
    epoch_plots(&mut html, &obs.epochs);
    if let Some(f) = &fault {
        html.heading("FAULT INJECTED");
        html.para(f);
    }
    if let Some((text, _)) = &statement {
        html.heading("Privacy statement");
        html.pre(text);
    }
    if let Some(a) = &audit {
        html.heading("White-box audit");
        html.pre(&audit_text(a));
    }
    if trainer.noise_is_seeded() {
        html.para("The DP noise of this run was seeded from --seed (--seeded-noise) for reproducible research: anyone with the seed can regenerate it.");
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&cfg)?);
    if hooks.write_html {
        html.write(&rd.file("report.html"))?;
    }
    rd.set("results", summary.clone())?;
    if hooks.finish_run {
        rd.finish("completed")?;
    }
    let mut text = format!(
        "trained {} on {} for {} epochs ({} steps)",
        model_name(&cfg.model),
        prepared.name,
        trainer.epoch,
        trainer.step
    );
    if let Some(l) = &last {
        if let Some(v) = l.valid_loss {
            text += &format!("\nvalid loss {}", fmt_f64(v));
        }
        if let Some(a) = l.valid_accuracy {
            text += &format!(", valid accuracy {}", fmt_f64(a));
        }
    }
    if let Some((s, _)) = &statement {
        text += &format!("\n\n{s}");
    }
    if let Some(a) = &audit {
        text += &format!("\n\n{}", audit_text(a));
    }
    if let Some(f) = &fault {
        text = format!("!!! {f}\n\n{text}\n\n!!! {f}");
    }
    text += &format!(
        "\n\nrun folder: {}\nreport: {}",
        rd.path.display(),
        rd.file("report.html").display()
    );
    Ok(TrainOutcome {
        report: Report::new(text, summary.clone()),
        epochs: obs.epochs,
        html,
        summary,
    })
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
