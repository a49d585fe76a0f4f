//! `dynamics regularizers`: randY training accuracy against real best validation accuracy per regulariser setting (Arpit et al. §5, Fig. 8).

#[allow(unused_imports)]
use super::*;

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

pub(super) fn run(a: &RegularizersArgs, ctx: &Ctx) -> Result<Report> {
    let lass = a.lass.config()?;
    // An accuracy difference: negative would demand beating the unregularised run, above 1
    // accepts every setting.
    if !(0.0..=1.0).contains(&a.tolerance) {
        return Err(user(format!(
            "--tolerance {}: must be in [0, 1] (an accuracy difference)",
            a.tolerance
        )));
    }
    let dropout_rates = value_list(
        "--dropout-rates",
        &a.dropout_rates,
        |v| (0.0..1.0).contains(&v),
        "a dropout rate must be in [0, 1)",
    )?;
    let input_dropout_rates = value_list(
        "--input-dropout-rates",
        &a.input_dropout_rates,
        |v| (0.0..1.0).contains(&v),
        "a dropout rate must be in [0, 1)",
    )?;
    let input_noise_stds = value_list(
        "--input-noise-stds",
        &a.input_noise_stds,
        |v| v >= 0.0,
        "must be >= 0",
    )?;
    let weight_decays = value_list(
        "--weight-decays",
        &a.weight_decays,
        |v| v >= 0.0,
        "must be >= 0",
    )?;
    let adversarial_weights = value_list(
        "--adversarial-weights",
        &a.adversarial_weights,
        |v| (0.0..=1.0).contains(&v),
        "must be in [0, 1]",
    )?;
    let mut settings = vec![Regularizer::None];
    settings.extend(
        dropout_rates
            .iter()
            .map(|&rate| Regularizer::Dropout { rate }),
    );
    settings.extend(
        input_dropout_rates
            .iter()
            .map(|&rate| Regularizer::InputDropout { rate }),
    );
    settings.extend(
        input_noise_stds
            .iter()
            .map(|&std| Regularizer::InputNoise { std }),
    );
    settings.extend(
        weight_decays
            .iter()
            .map(|&decay| Regularizer::WeightDecay { decay }),
    );
    settings.extend(
        adversarial_weights
            .iter()
            .map(|&weight| Regularizer::AdversarialDropout {
                weight,
                dropout: a.adversarial_dropout,
            }),
    );
    if !(0.0..1.0).contains(&a.adversarial_dropout) {
        return Err(user(format!(
            "--adversarial-dropout {}: must be in [0, 1)",
            a.adversarial_dropout
        )));
    }
    let img = load_images(
        &a.data.data,
        &a.data.data_dir,
        a.data.max_train.unwrap_or(5000),
        a.data.valid_size,
    )?;
    let n = img.train.labels.len();
    let model = a.mlp.config(img.train.per_example(), img.classes)?;
    let base = spec(model, &a.optim, &a.run, n)?;
    let randy = dynamics::corrupt(&img.train, img.classes, NoiseKind::RandY, 1.0, a.run.seed)
        .map_err(lib)?
        .data;
    let config = json!({ "experiment": "regularizers", "data": a.data, "mlp": a.mlp, "optim": a.optim, "run": a.run, "lass": lass,
        "settings": settings, "tolerance": a.tolerance, "train_spec": base });
    let rd = open_run(&a.run, "dynamics regularizers", &config)?;
    let mut progress = Progress::new(
        "regularizers",
        (settings.len() * 2 * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut points: Vec<(SweepPoint, f64)> = Vec::new();
    let mut csv = String::from(
        "family,label,value,randy_train_accuracy,real_best_valid_accuracy,real_best_epoch,real_final_valid_accuracy,seconds\n",
    );
    for reg in &settings {
        let started = std::time::Instant::now();
        let p = dynamics::sweep_point(
            &base,
            reg,
            &lass,
            &img.train,
            &randy,
            &img.test,
            &mut |which, r| {
                done += 1;
                progress.set(
                    done,
                    &format!("{} ({which}) epoch {}", reg.label(), r.epoch),
                );
                Ok(())
            },
        )
        .map_err(lib)?;
        let secs = started.elapsed().as_secs_f64();
        progress.line(&format!(
            "{}: randY train accuracy {}, real best valid accuracy {} ({secs:.0}s)",
            reg.label(),
            fmt_f64(p.randy_train_accuracy),
            fmt_f64(p.real_best_valid_accuracy)
        ));
        let value = match reg {
            Regularizer::None => 0.0,
            Regularizer::Dropout { rate } | Regularizer::InputDropout { rate } => *rate as f64,
            Regularizer::InputNoise { std } => *std as f64,
            Regularizer::WeightDecay { decay } => *decay as f64,
            Regularizer::AdversarialDropout { weight, .. } => *weight as f64,
        };
        let _ = writeln!(
            csv,
            "{},{},{value},{},{},{},{},{secs}",
            reg.family(),
            reg.label(),
            p.randy_train_accuracy,
            p.real_best_valid_accuracy,
            p.real_best_epoch,
            p.real_final_valid_accuracy
        );
        write_atomic(&rd.file("sweep.csv"), csv.as_bytes())?;
        points.push((p, secs));
    }
    progress.finish();
    let pts: Vec<SweepPoint> = points.iter().map(|p| p.0.clone()).collect();
    let best = dynamics::least_memorization_at_equal_accuracy(&pts, a.tolerance);
    let headers = [
        "setting",
        "randY final train acc",
        "real best valid acc (epoch)",
        "real final valid acc",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|(p, s)| {
            vec![
                p.regularizer.label(),
                fmt_f64(p.randy_train_accuracy),
                format!(
                    "{} ({})",
                    fmt_f64(p.real_best_valid_accuracy),
                    p.real_best_epoch
                ),
                fmt_f64(p.real_final_valid_accuracy),
                format!("{s:.0}"),
            ]
        })
        .collect();
    let base_acc = pts.first().map_or(f64::NAN, |p| p.real_best_valid_accuracy);
    let base_fit = pts.first().map_or(f64::NAN, |p| p.randy_train_accuracy);
    let headers_b = [
        "family",
        "least randY fit within tolerance",
        "randY train acc",
        "real best valid acc",
    ];
    let rows_b: Vec<Vec<String>> = best
        .iter()
        .map(|(f, p)| match p {
            Some(p) => vec![
                f.clone(),
                p.regularizer.label(),
                fmt_f64(p.randy_train_accuracy),
                fmt_f64(p.real_best_valid_accuracy),
            ],
            None => vec![
                f.clone(),
                "none within tolerance".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    let mut html = report::Report::new(&format!(
        "memaudit dynamics regularizers: MLP {:?} on {} ({n} examples)",
        a.mlp.hidden, img.name
    ));
    html.para(&format!("Arpit et al. §5 (Figs. 10-11): one model per setting trained on randY (all labels random) and one on real data. x: final training accuracy on randY (memorisation of noise); y: best validation accuracy on real data. The paper finds dropout (especially with adversarial training on LASS samples) lowers memorisation most without lowering real accuracy. Unregularised: randY fit {}, real best valid {}. Second table: per family, the setting with the least randY fit whose real accuracy is within {} of the unregularised run.", fmt_f64(base_fit), fmt_f64(base_acc), a.tolerance));
    html.table(&headers, &rows);
    html.table(&headers_b, &rows_b);
    let mut fams: Vec<&str> = Vec::new();
    for p in &pts {
        if !fams.contains(&p.regularizer.family()) {
            fams.push(p.regularizer.family());
        }
    }
    let scatter: Vec<Series> = fams
        .iter()
        .map(|f| {
            Series::scatter(
                f,
                pts.iter()
                    .filter(|p| p.regularizer.family() == *f)
                    .map(|p| (p.randy_train_accuracy, p.real_best_valid_accuracy))
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
    let results = json!({ "experiment": "regularizers", "run": rd.path.display().to_string(), "data": img.name, "train_examples": n,
        "points": points.iter().map(|(p, s)| json!({ "setting": p.regularizer, "label": p.regularizer.label(), "randy_train_accuracy": num(p.randy_train_accuracy),
            "real_best_valid_accuracy": num(p.real_best_valid_accuracy), "real_best_epoch": p.real_best_epoch,
            "real_final_valid_accuracy": num(p.real_final_valid_accuracy), "seconds": s })).collect::<Vec<_>>(),
        "tolerance": a.tolerance,
        "least_memorization_at_equal_accuracy": best.iter().map(|(f, p)| json!({ "family": f, "setting": p.as_ref().map(|p| p.regularizer.label()),
            "randy_train_accuracy": opt_num(p.as_ref().map(|p| p.randy_train_accuracy)), "real_best_valid_accuracy": opt_num(p.as_ref().map(|p| p.real_best_valid_accuracy)) })).collect::<Vec<_>>() });
    let text = format!(
        "dynamics regularizers: MLP {:?} on {} ({n} examples), {} epochs\n{}\n\n{}",
        a.mlp.hidden,
        img.name,
        a.run.epochs,
        table_text(&headers, &rows),
        table_text(&headers_b, &rows_b)
    );
    finish(rd, html, results, text)
}
