//! `dynamics capacity`: epochs to fit real and random data against model and data size (Arpit et al. §4, Fig. 4).

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::capacity::{self as lib, CapacityConfig};

fn capacity_config(a: &CapacityArgs) -> CapacityConfig {
    CapacityConfig {
        images: a.data.source(),
        optim: optim_settings(&a.optim),
        epochs: a.run.epochs,
        batch_size: a.run.batch_size,
        seed: a.run.seed,
        kinds: a.kinds.clone(),
        hidden_sizes: a.hidden_sizes.clone(),
        layers: a.layers,
        train_sizes: a.train_sizes.clone(),
        fit_threshold: a.fit_threshold,
    }
}

pub(super) fn run(a: &CapacityArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, capacity_config(a), ctx)? {
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
    let config = json!({ "experiment": "capacity", "config": cfg, "train_sizes": job.train_sizes });
    let rd = open_run(&run, "dynamics capacity", &config)?;
    let metrics = MetricsCsv::open(&rd.file("metrics.csv"), &lib::METRICS, false)?;
    let mut observer = CliObserver::new("capacity", ctx).with_metrics(|row| {
        let _ = metrics.append(&row.values.iter().map(|v| v.1).collect::<Vec<_>>());
    });
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    drop(observer);
    let (kinds, train_sizes, max_n, max_h) = (&job.kinds, &job.train_sizes, job.max_n, job.max_h);
    let fitted = |k: NoiseKind, h: usize, n: usize| -> (Option<u64>, Option<f64>, Option<f64>) {
        r.point(k, h, n).map_or((None, None, None), |p| {
            (
                p.fitted_epoch.map(|e| e as u64),
                p.final_train_accuracy.map(|v| v.0),
                p.best_valid_accuracy.map(|v| v.0),
            )
        })
    };
    let cell = |(e, acc, _): (Option<u64>, Option<f64>, Option<f64>)| match e {
        Some(e) => e.to_string(),
        None => format!("> {} ({})", cfg.epochs, opt(acc)),
    };
    let mut html = report::Report::new(&format!(
        "memaudit dynamics capacity: epochs to {} training accuracy on {}",
        cfg.fit_threshold, r.data
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
    let rows_h: Vec<Vec<String>> = cfg
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
            .map(|&k| Series::line(k.name(), pts(&cfg.hidden_sizes, &|h| fitted(k, h, max_n))))
            .collect::<Vec<_>>(),
    ));
    html.svg(&chart(
        "Epochs to fit against training set size",
        "training examples",
        "epochs",
        &kinds
            .iter()
            .map(|&k| Series::line(k.name(), pts(train_sizes, &|n| fitted(k, max_h, n))))
            .collect::<Vec<_>>(),
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let text = format!(
        "dynamics capacity on {}: epochs to reach training accuracy {}\n{}\n\n{}",
        r.data,
        cfg.fit_threshold,
        table_text(&hh, &rows_h),
        table_text(&hn, &rows_n)
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
        let cli = Cli::try_parse_from(["memaudit", "capacity", "--out", "o"]).unwrap();
        let Experiment::Capacity(a) = cli.experiment else {
            panic!("capacity expected")
        };
        assert_eq!(capacity_config(&a), CapacityConfig::default());
    }
}
