//! `memaudit dp-sweep`: "Three Tools for Practical DP ML", tool 3 (large-batch training). At one
//! fixed epsilon, delta and number of epochs, train at each batch size B with the noise multiplier
//! recalibrated for that B (more steps at small B need more noise per step; fewer, larger steps
//! allow a larger sigma but a smaller sigma C / B on the averaged gradient), the learning rate
//! scaled with B, and plot test accuracy against B. The sweep runs in
//! `memaudit_experiments::dp_sweep`; this module converts the flags and renders.

use anyhow::Result;
use memaudit_experiments::dp_sweep::{self, DpSweepConfig};

use super::args::{ModelArgs, OptimArgs, PrivacyArgs};
use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::datasets::DataArgs;
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
    #[command(flatten)]
    pub config: ConfigFlags,
}

impl Args {
    /// The flags as the experiment's config.
    pub fn settings(&self) -> DpSweepConfig {
        DpSweepConfig {
            data: self.data.settings(),
            model: self.model.settings(),
            optim: self.optim.settings(),
            privacy: self.privacy.settings(),
            batch_sizes: self.batch_sizes.clone(),
            base_batch: self.base_batch,
            lr_scaling: self.lr_scaling.clone(),
            epochs: self.epochs,
            seed: self.seed,
            out: self.out.clone(),
            force: self.force,
        }
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&args.config, args.settings(), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let mut observer = CliObserver::new("dp-sweep", ctx);
    let r =
        dp_sweep::run(&cfg, &mut observer).map_err(|e| experiment::cli_error(e, &args.config))?;
    observer.finish();
    drop(observer);
    let target = r.target_epsilon;
    let table: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|row| {
            vec![
                row.batch_size.to_string(),
                row.steps.to_string(),
                format!("{:.4}", row.noise_multiplier),
                format!("{:.5}", row.noise_on_mean_gradient),
                format!("{}", row.lr),
                fmt_f64(row.test_accuracy.0),
                fmt_f64(row.epsilon.0),
                format!("{:.0}", row.seconds),
            ]
        })
        .collect();
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
        r.data_name
    ));
    html.para(&format!(
        "Each batch size trains {} epochs at epsilon {target}, delta {} ({}), with its own noise multiplier and a learning rate scaled by {} from {} at batch {}.",
        cfg.epochs, cfg.privacy.delta, cfg.privacy.accountant, cfg.lr_scaling, r.base_lr, cfg.base_batch
    ));
    html.table(&headers, &table);
    let pts: Vec<(f64, f64)> = r
        .results
        .iter()
        .filter(|row| row.test_accuracy.0.is_finite())
        .map(|row| ((row.batch_size as f64).log2(), row.test_accuracy.0))
        .collect();
    html.svg(&report::chart(
        "Test accuracy at fixed epsilon",
        "log2(batch size)",
        "test accuracy",
        &[Series::line("accuracy", pts)],
    ));
    let report_path = std::path::Path::new(&r.run).join("report.html");
    html.write(&report_path)?;
    let mut text = format!(
        "dp-sweep at epsilon {target} (delta {}), {} epochs\n",
        cfg.privacy.delta, cfg.epochs
    );
    text += &format!(
        "{:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>8}\n",
        "batch", "steps", "sigma", "sigma C/B", "lr", "accuracy", "epsilon"
    );
    for row in &table {
        text += &format!(
            "{:>7} {:>7} {:>8} {:>11} {:>9} {:>10} {:>8}\n",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6]
        );
    }
    text += &format!("report: {}", report_path.display());
    Ok(Report::new(text, serde_json::to_value(&r)?))
}
