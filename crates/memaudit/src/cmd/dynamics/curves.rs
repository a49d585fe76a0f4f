//! `dynamics curves`: training curves on partly corrupted data (Arpit et al. §4, Figs. 5-7).

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::curves::{self as lib, CurvesConfig};

fn curves_config(a: &CurvesArgs) -> CurvesConfig {
    CurvesConfig {
        images: a.data.source(),
        mlp: a.mlp.settings(),
        optim: optim_settings(&a.optim),
        epochs: a.run.epochs,
        batch_size: a.run.batch_size,
        seed: a.run.seed,
        lass: a.lass.settings(),
        noise: a.noise.clone(),
        fractions: a.fractions.clone(),
        csr_every: a.csr_every,
        csr_size: a.csr_size,
        gini: a.gini,
    }
}

pub(super) fn run(a: &CurvesArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, curves_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let job = lib::prepare(&cfg).map_err(|e| experiment::cli_error(e, &a.config))?;
    let run = RunFlags {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        ..a.run.clone()
    };
    let config = json!({ "experiment": "curves", "config": cfg, "csr_size": job.csr_data.labels.len(), "train_spec": job.spec });
    let rd = open_run(&run, "dynamics curves", &config)?;
    let metrics = MetricsCsv::open(&rd.file("metrics.csv"), &lib::METRICS, false)?;
    let mut observer = CliObserver::new("curves", ctx).with_metrics(|row| {
        let _ = metrics.append(&row.values.iter().map(|v| v.1).collect::<Vec<_>>());
    });
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    drop(observer);
    let (noise, n) = (r.noise, r.train_examples);
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|s| {
            let o = |x: Option<memaudit_experiments::Num>| opt(x.map(|v| v.0));
            vec![
                format!("{}", s.fraction),
                match (s.best_valid_accuracy, s.best_valid_epoch) {
                    (Some(v), Some(e)) => format!("{} (epoch {e})", fmt_f64(v.0)),
                    _ => "-".into(),
                },
                o(s.final_valid_accuracy),
                o(s.final_clean_accuracy),
                o(s.final_noisy_accuracy),
                s.noisy_half_fitted_epoch
                    .map_or("-".into(), |e| e.to_string()),
                s.noisy_90_fitted_epoch
                    .map_or("-".into(), |e| e.to_string()),
                o(s.csr_first),
                o(s.csr_final),
            ]
        })
        .collect();
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
        r.data,
        n,
        cfg.mlp.hidden
    ));
    html.para("Arpit et al. (ICML 2017) §4: with noise in the training set, validation accuracy should peak before the corrupted examples are fitted, and the critical sample ratio (LASS, on validation data) should be higher on noisier data. Accuracies are in evaluation mode after each epoch; 'noisy' is the accuracy on the corrupted training examples against their noisy labels.");
    html.table(&headers, &rows);
    let per = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<Series> {
        r.runs
            .iter()
            .map(|s| series(&format!("{} {}", noise.name(), s.fraction), &s.epochs, f))
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
    if cfg.csr_every > 0 {
        html.svg(&chart(
            "Critical sample ratio (validation, LASS)",
            "epoch",
            "CSR",
            &per(&|r| r.csr),
        ));
    }
    if cfg.gini {
        html.svg(&chart(
            "Gini of direct input-gradient norms (cheap loss-sensitivity estimate)",
            "epoch",
            "Gini",
            &per(&|r| r.input_gradient_gini),
        ));
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let mut text = format!(
        "dynamics curves: {} on {} ({n} training examples), MLP {:?}\n",
        noise.name(),
        r.data,
        cfg.mlp.hidden
    );
    text += &table_text(&headers, &rows);
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
        let cli = Cli::try_parse_from(["memaudit", "curves", "--out", "o"]).unwrap();
        let Experiment::Curves(a) = cli.experiment else {
            panic!("curves expected")
        };
        assert_eq!(curves_config(&a), CurvesConfig::default());
    }
}
