//! `dynamics regularizers`: randY training accuracy against real best validation accuracy per regulariser setting (Arpit et al. §5, Fig. 8).

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::regularizers::{self as lib, RegularizersConfig};

/// A comma-separated list of values ("" or "none": no values), each checked by `ok`.
fn value_list(flag: &str, text: &str, ok: impl Fn(f32) -> bool, rule: &str) -> Result<Vec<f32>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    t.split(',')
        .map(|v| {
            let x: f32 = v
                .trim()
                .parse()
                .map_err(|_| user(format!("{flag} {v}: not a number")))?;
            if x.is_finite() && ok(x) {
                Ok(x)
            } else {
                Err(user(format!("{flag} {v}: {rule}")))
            }
        })
        .collect()
}

fn regularizers_config(a: &RegularizersArgs) -> Result<RegularizersConfig> {
    let any = |_: f32| true;
    Ok(RegularizersConfig {
        images: a.data.source(),
        mlp: a.mlp.settings(),
        optim: optim_settings(&a.optim),
        epochs: a.run.epochs,
        batch_size: a.run.batch_size,
        seed: a.run.seed,
        lass: a.lass.settings(),
        // Parsed here (the flags are text, "none" for an empty family); the ranges are the
        // library's checks.
        dropout_rates: value_list(
            "--dropout-rates",
            &a.dropout_rates,
            any,
            "must be a finite number",
        )?,
        input_dropout_rates: value_list(
            "--input-dropout-rates",
            &a.input_dropout_rates,
            any,
            "must be a finite number",
        )?,
        input_noise_stds: value_list(
            "--input-noise-stds",
            &a.input_noise_stds,
            any,
            "must be a finite number",
        )?,
        weight_decays: value_list(
            "--weight-decays",
            &a.weight_decays,
            any,
            "must be a finite number",
        )?,
        adversarial_weights: value_list(
            "--adversarial-weights",
            &a.adversarial_weights,
            any,
            "must be a finite number",
        )?,
        adversarial_dropout: a.adversarial_dropout,
        tolerance: a.tolerance,
    })
}

pub(super) fn run(a: &RegularizersArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, regularizers_config(a)?, ctx)? {
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
    let config = json!({ "experiment": "regularizers", "config": cfg, "settings": job.settings, "train_spec": job.spec });
    let rd = open_run(&run, "dynamics regularizers", &config)?;
    // sweep.csv grows by one row per finished setting (a killed sweep keeps its rows).
    let mut csv = String::from(
        "family,label,value,randy_train_accuracy,real_best_valid_accuracy,real_best_epoch,real_final_valid_accuracy,seconds\n",
    );
    let mut written = 0usize;
    let sweep_csv = rd.file("sweep.csv");
    let mut observer = CliObserver::new("regularizers", ctx).with_metrics(|row| {
        let family = job.settings.get(written).map_or("", |r| r.family());
        written += 1;
        let v: Vec<String> = row
            .values
            .iter()
            .map(|(_, x)| x.map_or(String::new(), |x| x.to_string()))
            .collect();
        let _ = writeln!(csv, "{family},{},{}", row.stage, v.join(","));
        let _ = write_atomic(&sweep_csv, csv.as_bytes());
    });
    let r = job
        .run(&mut observer)
        .map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    drop(observer);
    let n = r.train_examples;
    let headers = [
        "setting",
        "randY final train acc",
        "real best valid acc (epoch)",
        "real final valid acc",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = r
        .points
        .iter()
        .map(|p| {
            vec![
                p.label.clone(),
                fmt_f64(p.randy_train_accuracy.0),
                format!(
                    "{} ({})",
                    fmt_f64(p.real_best_valid_accuracy.0),
                    p.real_best_epoch
                ),
                fmt_f64(p.real_final_valid_accuracy.0),
                format!("{:.0}", p.seconds),
            ]
        })
        .collect();
    let base_acc = r
        .points
        .first()
        .map_or(f64::NAN, |p| p.real_best_valid_accuracy.0);
    let base_fit = r
        .points
        .first()
        .map_or(f64::NAN, |p| p.randy_train_accuracy.0);
    let headers_b = [
        "family",
        "least randY fit within tolerance",
        "randY train acc",
        "real best valid acc",
    ];
    let rows_b: Vec<Vec<String>> = r
        .least_memorization_at_equal_accuracy
        .iter()
        .map(|b| {
            match (
                &b.setting,
                b.randy_train_accuracy,
                b.real_best_valid_accuracy,
            ) {
                (Some(s), Some(x), Some(y)) => {
                    vec![b.family.clone(), s.clone(), fmt_f64(x.0), fmt_f64(y.0)]
                }
                _ => vec![
                    b.family.clone(),
                    "none within tolerance".into(),
                    "-".into(),
                    "-".into(),
                ],
            }
        })
        .collect();
    let mut html = report::Report::new(&format!(
        "memaudit dynamics regularizers: MLP {:?} on {} ({n} examples)",
        cfg.mlp.hidden, r.data
    ));
    html.para(&format!("Arpit et al. §5 (Figs. 10-11): one model per setting trained on randY (all labels random) and one on real data. x: final training accuracy on randY (memorisation of noise); y: best validation accuracy on real data. The paper finds dropout (especially with adversarial training on LASS samples) lowers memorisation most without lowering real accuracy. Unregularised: randY fit {}, real best valid {}. Second table: per family, the setting with the least randY fit whose real accuracy is within {} of the unregularised run.", fmt_f64(base_fit), fmt_f64(base_acc), cfg.tolerance));
    html.table(&headers, &rows);
    html.table(&headers_b, &rows_b);
    let mut fams: Vec<&str> = Vec::new();
    for p in &r.points {
        if !fams.contains(&p.setting.family()) {
            fams.push(p.setting.family());
        }
    }
    let scatter: Vec<Series> = fams
        .iter()
        .map(|f| {
            Series::scatter(
                f,
                r.points
                    .iter()
                    .filter(|p| p.setting.family() == *f)
                    .map(|p| (p.randy_train_accuracy.0, p.real_best_valid_accuracy.0))
                    .collect(),
            )
        })
        .collect();
    html.svg(&chart(
        "Regularisers: memorisation of randY against real generalisation",
        "final training accuracy on randY",
        "best validation accuracy on real data",
        &scatter,
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let text = format!(
        "dynamics regularizers: MLP {:?} on {} ({n} examples), {} epochs\n{}\n\n{}",
        cfg.mlp.hidden,
        r.data,
        cfg.epochs,
        table_text(&headers, &rows),
        table_text(&headers_b, &rows_b)
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
        let cli = Cli::try_parse_from(["memaudit", "regularizers", "--out", "o"]).unwrap();
        let Experiment::Regularizers(a) = cli.experiment else {
            panic!("regularizers expected")
        };
        assert_eq!(
            regularizers_config(&a).unwrap(),
            RegularizersConfig::default()
        );
    }
}
