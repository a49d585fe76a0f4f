//! `memaudit dp-sweep`: "Three Tools for Practical DP ML", tool 3 (large-batch training). At one
//! fixed epsilon, delta and number of epochs, train at each batch size B with the noise multiplier
//! recalibrated for that B (more steps at small B need more noise per step; fewer, larger steps
//! allow a larger sigma but a smaller sigma C / B on the averaged gradient), the learning rate
//! scaled with B, and plot test accuracy against B.

use anyhow::Result;
use memaudit_engine::privacy;
use memaudit_engine::train::{PrivacyConfig, Silent, TrainConfig, Trainer};
use serde_json::json;

use super::args::{ModelArgs, OptimArgs, PrivacyArgs};
use super::train::{flatten_for, prepare, steps_per_epoch};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};
use crate::report::{self, Series};
use crate::rundir::{Reuse, RunDir};

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
    /// Batch sizes to train at.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    pub batch_sizes: Vec<usize>,
    /// The batch size at which --lr applies; other sizes scale it (see --lr-scaling).
    #[arg(long, default_value_t = 256)]
    pub base_batch: usize,
    /// How the learning rate follows the batch size: linear, sqrt or none.
    #[arg(long, default_value = "sqrt")]
    pub lr_scaling: String,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let target = args.privacy.target_epsilon.ok_or_else(|| {
        user("dp-sweep needs --target-epsilon (the epsilon every batch size is trained at)")
    })?;
    args.privacy.validate()?;
    if args.privacy.max_epsilon.is_some() {
        return Err(user(
            "--max-epsilon does not apply to dp-sweep: every batch size is calibrated to --target-epsilon",
        ));
    }
    let sampling = args.privacy.sampling()?;
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        return Err(user("--batch-sizes: give one or more sizes >= 1"));
    }
    if args.epochs == 0 || args.base_batch == 0 {
        return Err(user("--epochs and --base-batch must be at least 1"));
    }
    let scale = |b: usize| -> Result<f32> {
        let r = b as f64 / args.base_batch as f64;
        Ok(match args.lr_scaling.as_str() {
            "linear" => r,
            "sqrt" => r.sqrt(),
            "none" => 1.0,
            s => return Err(user(format!("--lr-scaling {s}: use linear, sqrt or none"))),
        } as f32)
    };
    scale(1)?;
    let prepared = prepare(&args.data)?;
    let model_cfg = args.model.config(&prepared.input)?;
    let prepared = flatten_for(&model_cfg, prepared);
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    let n = prepared.train.len();
    if let Some(&b) = args.batch_sizes.iter().find(|&&b| b > n) {
        return Err(user(format!(
            "--batch-sizes: {b} is larger than the training set ({n} examples)"
        )));
    }
    let seed = args
        .seed
        .unwrap_or_else(|| rand::Rng::random(&mut rand::rng()));
    let accountant = args.privacy.accountant()?;
    let base_optim = args.optim.config()?;
    let cfg_json = json!({ "data": args.data, "model": model_cfg, "optimizer": base_optim, "target_epsilon": target, "delta": args.privacy.delta, "batch_sizes": args.batch_sizes, "epochs": args.epochs, "lr_scaling": args.lr_scaling, "base_batch": args.base_batch });
    let mut rd = RunDir::open(
        &args.out,
        "dp-sweep",
        &cfg_json,
        Some(seed),
        Reuse {
            force: args.force,
            resume: false,
        },
    )?;
    let mut rows = Vec::new();
    let mut table = Vec::new();
    for &b in &args.batch_sizes {
        let spe = steps_per_epoch(sampling, n, b);
        let steps = spe * args.epochs as u64;
        // Calibrated to the guarantee of this sampling (shuffled: no amplification).
        let sigma = privacy::calibrate_planned(
            sampling,
            n as u64,
            b as u64,
            args.epochs as u64,
            args.privacy.delta,
            target,
            accountant,
        )
        .map_err(|e| user(format!("batch {b}: {e}")))?;
        let mut optimizer = base_optim.clone();
        let lr = optimizer.lr() * scale(b)?;
        match &mut optimizer {
            memaudit_engine::optim::OptimizerConfig::Sgd { lr: l, .. }
            | memaudit_engine::optim::OptimizerConfig::Adam { lr: l, .. }
            | memaudit_engine::optim::OptimizerConfig::RmsProp { lr: l, .. } => *l = lr,
        }
        let param_layers: Vec<usize> = (0..model.num_layers())
            .filter(|&l| !model.param_range(l).is_empty())
            .collect();
        let cfg = TrainConfig {
            model: model_cfg.clone(),
            optimizer,
            schedule: args.optim.schedule(spe, args.epochs)?,
            epochs: args.epochs,
            batch_size: b,
            physical_batch: Some(args.privacy.physical_batch.unwrap_or(512)),
            sampling,
            seed,
            privacy: Some(PrivacyConfig {
                noise_multiplier: sigma,
                clipping: args
                    .privacy
                    .clip_config(&param_layers, model.num_layers())?,
                delta: args.privacy.delta,
                accountant,
                max_epsilon: None,
            }),
            seeded_noise: args.privacy.seeded_noise,
        };
        ctx.note(format!("batch {b}: noise multiplier {sigma:.4} for epsilon {target} over {steps} steps, lr {lr}"));
        let started = std::time::Instant::now();
        let mut t = Trainer::new(cfg, n, Some(&rd.file(&format!("batch-{b}"))), false)
            .map_err(|e| user(e.to_string()))?;
        t.run(prepared.train.as_ref(), None, &mut Silent)
            .map_err(|e| user(e.to_string()))?;
        let eval = match prepared.valid.as_deref() {
            Some(v) => Some(t.evaluate(v)?),
            None => None,
        };
        let eps = t.epsilon()?.unwrap_or(f64::NAN);
        let secs = started.elapsed().as_secs_f64();
        let acc = eval.map_or(f64::NAN, |e| e.accuracy);
        ctx.note(format!(
            "batch {b}: test accuracy {}, epsilon {} ({secs:.0}s)",
            fmt_f64(acc),
            fmt_f64(eps)
        ));
        table.push(vec![
            b.to_string(),
            steps.to_string(),
            format!("{sigma:.4}"),
            format!("{:.5}", sigma * args.privacy.clip() / b as f64),
            format!("{lr}"),
            fmt_f64(acc),
            fmt_f64(eps),
            format!("{secs:.0}"),
        ]);
        rows.push(json!({ "batch_size": b, "steps": steps, "noise_multiplier": sigma, "noise_on_mean_gradient": sigma * args.privacy.clip() / b as f64, "lr": lr, "test_accuracy": num(acc), "test_loss": eval.map(|e| num(e.loss)), "epsilon": num(eps), "seconds": secs }));
    }
    let headers = [
        "batch",
        "steps",
        "sigma",
        "sigma C / B",
        "lr",
        "test accuracy",
        "epsilon",
        "seconds",
    ];
    let mut html = report::Report::new(&format!(
        "memaudit dp-sweep: {} at epsilon {target}",
        prepared.name
    ));
    html.para(&format!(
        "Each batch size trains {} epochs at epsilon {target}, delta {} ({}), with its own noise multiplier and a learning rate scaled by {} from {} at batch {}.",
        args.epochs, args.privacy.delta, args.privacy.accountant, args.lr_scaling, base_optim.lr(), args.base_batch
    ));
    html.table(&headers, &table);
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                (r["batch_size"].as_f64()?).log2(),
                r["test_accuracy"].as_f64()?,
            ))
        })
        .collect();
    html.svg(&report::chart(
        "Test accuracy at fixed epsilon",
        "log2(batch size)",
        "test accuracy",
        &[Series::line("accuracy", pts)],
    ));
    html.write(&rd.file("report.html"))?;
    let result = json!({ "target_epsilon": target, "delta": args.privacy.delta, "results": rows, "run": rd.path.display().to_string() });
    rd.set("results", result.clone())?;
    rd.finish("completed")?;
    let mut text = format!(
        "dp-sweep at epsilon {target} (delta {}), {} epochs\n",
        args.privacy.delta, args.epochs
    );
    text += &format!(
        "{:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>8}\n",
        "batch", "steps", "sigma", "sigma C/B", "lr", "accuracy", "epsilon"
    );
    for r in &table {
        text += &format!(
            "{:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>8}\n",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6]
        );
    }
    text += &format!("report: {}", rd.file("report.html").display());
    Ok(Report::new(text, result))
}
