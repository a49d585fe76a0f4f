//! `dynamics sensitivity`: flags to `memaudit_experiments::dynamics::sensitivity`, its result to
//! `metrics.csv`, `report.html` and `--json`.

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::sensitivity::{self as lib, LossSensitivityConfig};

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

pub(super) fn run(a: &SensitivityArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, sensitivity_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let job = lib::prepare(&cfg).map_err(|e| experiment::cli_error(e, &a.config))?;
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
    columns.extend(lib::METRICS_COLUMNS);
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
    let pts = |f: &dyn Fn(&lib::PointOut) -> f64| -> Vec<Series> {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        experiment: Experiment,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["memaudit", "sensitivity", "--out", "o"]).unwrap();
        let Experiment::Sensitivity(a) = cli.experiment else {
            panic!("sensitivity expected")
        };
        assert_eq!(sensitivity_config(&a), LossSensitivityConfig::default());
    }
}
