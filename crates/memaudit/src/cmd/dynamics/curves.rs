//! `dynamics curves`: training curves on partly corrupted data (Arpit et al. §4, Figs. 5-7).

#[allow(unused_imports)]
use super::*;

pub(super) fn run(a: &CurvesArgs, ctx: &Ctx) -> Result<Report> {
    let noise = NoiseKind::parse(&a.noise)
        .map_err(|_| user(format!("--noise {}: use randy or randx", a.noise)))?;
    if noise == NoiseKind::Real {
        return Err(user(
            "--noise real corrupts nothing: use randy or randx (fraction 0 is the real-data run)",
        ));
    }
    if a.csr_every > 0 && a.csr_size == 0 {
        return Err(user(
            "--csr-size 0: LASS needs at least 1 validation example (or --csr-every 0 to skip it)",
        ));
    }
    if a.fractions.is_empty() {
        return Err(user(
            "--fractions: give at least one noise fraction in [0, 1]",
        ));
    }
    for &f in &a.fractions {
        if !(0.0..=1.0).contains(&f) {
            return Err(user(format!(
                "--fractions {f}: a noise fraction must be in [0, 1]"
            )));
        }
    }
    let lass = a.lass.config()?;
    let img = load_images(
        &a.data.data,
        &a.data.data_dir,
        a.data.max_train.unwrap_or(5000),
        a.data.valid_size,
    )?;
    let n = img.train.labels.len();
    let model = a.mlp.config(img.train.per_example(), img.classes)?;
    let base = spec(model.clone(), &a.optim, &a.run, n)?;
    let csr_data = img
        .test
        .subset(&(0..a.csr_size.min(img.test.labels.len())).collect::<Vec<_>>());
    let config = json!({ "experiment": "curves", "data": a.data, "mlp": a.mlp, "optim": a.optim, "run": a.run, "lass": lass,
        "noise": noise, "fractions": a.fractions, "csr_every": a.csr_every, "csr_size": csr_data.labels.len(), "train_spec": base });
    let rd = open_run(&a.run, "dynamics curves", &config)?;
    let metrics = MetricsCsv::open(
        &rd.file("metrics.csv"),
        &[
            "fraction",
            "epoch",
            "train_loss",
            "train_accuracy",
            "clean_accuracy",
            "noisy_accuracy",
            "valid_loss",
            "valid_accuracy",
            "csr",
            "lass_iterations",
            "input_gradient_gini",
            "seconds",
        ],
        false,
    )?;
    let mut progress = Progress::new(
        "curves",
        (a.fractions.len() * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut runs: Vec<(f64, dynamics::Corrupted, Vec<EpochRecord>)> = Vec::new();
    for &f in &a.fractions {
        let c = dynamics::corrupt(&img.train, img.classes, noise, f, a.run.seed).map_err(lib)?;
        let tracking = Tracking {
            valid: Some(&img.test),
            noisy: Some(&c.mask),
            csr: (a.csr_every > 0).then(|| CsrTracking {
                data: &csr_data,
                every: a.csr_every,
                lass: lass.clone(),
            }),
            stop_at_train_accuracy: None,
            input_gradient_gini: a.gini,
        };
        let trained = dynamics::train_tracked(&base, &c.data, &tracking, &mut |r| {
            done += 1;
            progress.set(done, &format!("{} {f}: epoch {}", noise.name(), r.epoch));
            let _ = metrics.append(&[
                Some(f),
                Some(r.epoch as f64),
                Some(r.train_loss),
                Some(r.train_accuracy),
                r.clean_accuracy,
                r.noisy_accuracy,
                r.valid_loss,
                r.valid_accuracy,
                r.csr,
                r.lass_iterations.map(|v| v as f64),
                r.input_gradient_gini,
                Some(r.seconds),
            ]);
            progress.line(&format!(
                "{} {f} epoch {}: clean {} noisy {} valid {} csr {}",
                noise.name(),
                r.epoch,
                opt(r.clean_accuracy),
                opt(r.noisy_accuracy),
                opt(r.valid_accuracy),
                opt(r.csr)
            ));
            Ok(())
        })
        .map_err(lib)?;
        runs.push((f, c, trained.records));
    }
    progress.finish();

    let mut summary = Vec::new();
    let mut rows = Vec::new();
    for (f, c, recs) in &runs {
        let best = recs
            .iter()
            .filter_map(|r| r.valid_accuracy.map(|v| (r.epoch, v)))
            .fold(None, |b: Option<(usize, f64)>, (e, v)| match b {
                Some((_, bv)) if bv >= v => b,
                _ => Some((e, v)),
            });
        let last = recs.last();
        let fit50 = first_epoch(recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.5));
        let fit90 = first_epoch(recs, |r| r.noisy_accuracy.is_some_and(|v| v >= 0.9));
        let csrs: Vec<f64> = recs.iter().filter_map(|r| r.csr).collect();
        let s = json!({
            "fraction": f,
            "corrupted": c.corrupted.len(),
            "labels_changed": c.labels_changed,
            "best_valid_accuracy": best.map(|b| num(b.1)),
            "best_valid_epoch": best.map(|b| b.0),
            "final_valid_accuracy": last.and_then(|r| r.valid_accuracy).map(num),
            "final_clean_accuracy": last.and_then(|r| r.clean_accuracy).map(num),
            "final_noisy_accuracy": last.and_then(|r| r.noisy_accuracy).map(num),
            "noisy_half_fitted_epoch": fit50,
            "noisy_90_fitted_epoch": fit90,
            "csr_first": csrs.first().copied().map(num),
            "csr_final": csrs.last().copied().map(num),
            "csr_max": csrs.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))).map(num),
            "csr_mean": if csrs.is_empty() { Value::Null } else { num(csrs.iter().sum::<f64>() / csrs.len() as f64) },
            "epochs": recs,
        });
        rows.push(vec![
            format!("{f}"),
            best.map_or("-".into(), |b| format!("{} (epoch {})", fmt_f64(b.1), b.0)),
            opt(last.and_then(|r| r.valid_accuracy)),
            opt(last.and_then(|r| r.clean_accuracy)),
            opt(last.and_then(|r| r.noisy_accuracy)),
            fit50.map_or("-".into(), |e| e.to_string()),
            fit90.map_or("-".into(), |e| e.to_string()),
            opt(csrs.first().copied()),
            opt(csrs.last().copied()),
        ]);
        summary.push(s);
    }
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
        img.name,
        n,
        a.mlp.hidden
    ));
    html.para("Arpit et al. (ICML 2017) §4: with noise in the training set, validation accuracy should peak before the corrupted examples are fitted, and the critical sample ratio (LASS, on validation data) should be higher on noisier data. Accuracies are in evaluation mode after each epoch; 'noisy' is the accuracy on the corrupted training examples against their noisy labels.");
    html.table(&headers, &rows);
    let per = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .map(|(fr, _, recs)| series(&format!("{} {fr}", noise.name()), recs, f))
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
    if a.csr_every > 0 {
        html.svg(&chart(
            "Critical sample ratio (validation, LASS)",
            "epoch",
            "CSR",
            &per(&|r| r.csr),
        ));
    }
    if a.gini {
        html.svg(&chart(
            "Gini of direct input-gradient norms (cheap loss-sensitivity estimate)",
            "epoch",
            "Gini",
            &per(&|r| r.input_gradient_gini),
        ));
    }
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let results = json!({ "experiment": "curves", "run": rd.path.display().to_string(), "data": img.name, "train_examples": n,
        "valid_examples": img.test.labels.len(), "noise": noise, "model": model, "runs": summary });
    let mut text = format!(
        "dynamics curves: {} on {} ({n} training examples), MLP {:?}\n",
        noise.name(),
        img.name,
        a.mlp.hidden
    );
    text += &table_text(&headers, &rows);
    finish(rd, html, results, text)
}
