//! `dynamics easy-hard`: flags to `memaudit_experiments::dynamics::easy_hard`, its result to
//! `misclassification.csv`, `report.html` and `--json`.

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::easy_hard::{self as lib, EasyHardConfig};

fn easy_hard_config(a: &EasyHardArgs) -> EasyHardConfig {
    EasyHardConfig {
        images: a.data.source(),
        mlp: a.mlp.settings(),
        optim: optim_settings(&a.optim),
        batch_size: a.run.batch_size,
        seed: a.run.seed,
        runs: a.runs,
        kinds: a.kinds.clone(),
    }
}

pub(super) fn run(a: &EasyHardArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, easy_hard_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let job = lib::prepare(&cfg).map_err(|e| experiment::cli_error(e, &a.config))?;
    let run = RunFlags {
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        ..a.run.clone()
    };
    let config = json!({ "experiment": "easy-hard", "config": cfg, "train_spec": job.spec });
    let rd = open_run(&run, "dynamics easy-hard", &config)?;
    let mut observer = CliObserver::new("easy-hard", ctx);
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    let n = r.train_examples;
    // Per-example rates.
    let mut csv = String::from("example");
    for k in &r.kinds {
        let _ = write!(csv, ",{}", k.kind.name());
    }
    csv.push('\n');
    for i in 0..n {
        let _ = write!(csv, "{i}");
        for k in &r.kinds {
            let _ = write!(csv, ",{}", k.misclassification[i]);
        }
        csv.push('\n');
    }
    write_atomic(&rd.file("misclassification.csv"), csv.as_bytes())?;
    let headers = [
        "data",
        "mean accuracy after 1 epoch",
        "variance of per-example rates",
        "binomial variance",
        "ratio",
        "within-class ratio",
        "always right (binomial expects)",
        "always wrong (binomial expects)",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = r
        .kinds
        .iter()
        .map(|k| {
            let d = &k.dispersion;
            vec![
                k.kind.name().into(),
                fmt_f64(k.mean_accuracy.0),
                fmt_f64(d.variance.0),
                fmt_f64(d.binomial_variance.0),
                fmt_f64(d.ratio.0),
                fmt_f64(k.within_class_ratio.0),
                format!(
                    "{} ({:.1})",
                    d.always_right, d.binomial_expected_always_right.0
                ),
                format!(
                    "{} ({:.1})",
                    d.always_wrong, d.binomial_expected_always_wrong.0
                ),
                format!("{:.1}", k.seconds),
            ]
        })
        .collect();
    let mut html = report::Report::new(&format!(
        "memaudit dynamics easy-hard: {} one-epoch runs on {} ({} examples)",
        r.runs, r.data, n
    ));
    html.para("Arpit et al. §3.1 (Fig. 1): on real data some examples are consistently learned after one epoch and others consistently missed (per-example rates spread far beyond identical coins: ratio >> 1); on randX every example is equally hard and the rates look like Binomial(runs, p) / runs (ratio near 1); randY lies in between. A network that can only learn the label prior (randX) predicts the frequent classes, which makes correctness depend on the label alone; the within-class ratio removes that (variance around each class's mean over the class-wise binomial variance). 'Always right/wrong' counts examples correct/wrong in every run, with what identical Binomial coins would give.");
    html.table(&headers, &rows);
    let sorted: Vec<Series> = r
        .kinds
        .iter()
        .map(|k| {
            let mut v = k.misclassification.clone();
            v.sort_by(|x, y| x.total_cmp(y));
            Series::line(
                k.kind.name(),
                v.iter()
                    .enumerate()
                    .map(|(i, &m)| (i as f64 / n as f64, m))
                    .collect(),
            )
        })
        .collect();
    html.svg(&chart(
        "Per-example misclassification rate, sorted",
        "fraction of examples",
        "misclassification rate",
        &sorted,
    ));
    for k in &r.kinds {
        html.svg(&histogram(
            &format!("{}: per-example misclassification rate", k.kind.name()),
            "misclassification rate",
            &k.misclassification,
            r.runs.min(50),
            None,
            &[],
        ));
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let text = format!(
        "dynamics easy-hard: {} one-epoch runs on {} ({n} examples)\n{}\n\nper-example rates: {}",
        r.runs,
        r.data,
        table_text(&headers, &rows),
        rd.file("misclassification.csv").display()
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
        let cli = Cli::try_parse_from(["memaudit", "easy-hard", "--out", "o"]).unwrap();
        let Experiment::EasyHard(a) = cli.experiment else {
            panic!("easy-hard expected")
        };
        assert_eq!(easy_hard_config(&a), EasyHardConfig::default());
    }
}
