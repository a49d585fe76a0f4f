//! `dynamics capacity`: epochs to fit real and random data against model and data size (Arpit et al. §4, Fig. 4).

#[allow(unused_imports)]
use super::*;

/// `dynamics capacity --train-sizes` when not given.
const DEFAULT_TRAIN_SIZES: [usize; 3] = [1000, 2500, 5000];

pub(super) fn run(a: &CapacityArgs, ctx: &Ctx) -> Result<Report> {
    let kinds = kinds(&a.kinds, "--kinds")?;
    if a.hidden_sizes.is_empty() || a.hidden_sizes.contains(&0) || a.layers == 0 {
        return Err(user(
            "--hidden-sizes and --layers: give non-zero sizes and at least one layer",
        ));
    }
    let requested_sizes = a
        .train_sizes
        .clone()
        .unwrap_or_else(|| DEFAULT_TRAIN_SIZES.to_vec());
    if requested_sizes.is_empty() || requested_sizes.iter().any(|&s| s < 2) {
        return Err(user("--train-sizes: give sizes of at least 2"));
    }
    if !(a.fit_threshold > 0.0 && a.fit_threshold <= 1.0) {
        return Err(user(format!(
            "--fit-threshold {}: must be in (0, 1]",
            a.fit_threshold
        )));
    }
    let max_n = *requested_sizes.iter().max().unwrap();
    let max_h = *a.hidden_sizes.iter().max().unwrap();
    if a.data.max_train.is_some() {
        return Err(user(
            "--max-train: capacity sets its training set sizes with --train-sizes",
        ));
    }
    let img = load_images(&a.data.data, &a.data.data_dir, max_n, a.data.valid_size)?;
    let available = img.train.labels.len();
    let train_sizes: Vec<usize> = match &a.train_sizes {
        // Sizes the user chose are measured as given or refused; capping them silently made
        // "100000 examples" rows that were really trained on the whole (smaller) set.
        Some(sizes) => {
            if let Some(&s) = sizes.iter().find(|&&s| s > available) {
                return Err(user(format!(
                    "--train-sizes {s}: {} has {available} training examples; give sizes up to {available}",
                    img.name
                )));
            }
            sizes.clone()
        }
        None => {
            let mut capped: Vec<usize> =
                requested_sizes.iter().map(|&s| s.min(available)).collect();
            capped.dedup();
            if capped != requested_sizes {
                ctx.note(format!(
                    "note: {} has {available} training examples; default --train-sizes capped to {}",
                    img.name,
                    capped.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                ));
            }
            capped
        }
    };
    let max_n = max_n.min(available);
    // (kind, hidden, n): the capacity sweep at the largest data size, the data sweep at the
    // largest width (shared point run once).
    let mut settings: Vec<(NoiseKind, usize, usize)> = Vec::new();
    for &k in &kinds {
        for &h in &a.hidden_sizes {
            settings.push((k, h, max_n));
        }
        for &s in &train_sizes {
            if !settings.contains(&(k, max_h, s)) {
                settings.push((k, max_h, s));
            }
        }
    }
    let config = json!({ "experiment": "capacity", "data": a.data, "optim": a.optim, "run": a.run, "kinds": kinds,
        "hidden_sizes": a.hidden_sizes, "layers": a.layers, "train_sizes": train_sizes, "fit_threshold": a.fit_threshold });
    let rd = open_run(&a.run, "dynamics capacity", &config)?;
    let metrics = MetricsCsv::open(
        &rd.file("metrics.csv"),
        &[
            "kind",
            "hidden",
            "train_size",
            "epoch",
            "train_accuracy",
            "valid_accuracy",
            "seconds",
        ],
        false,
    )?;
    let mut progress = Progress::new(
        "capacity",
        (settings.len() * a.run.epochs) as u64,
        ctx.quiet || ctx.json,
    );
    let mut done = 0u64;
    let mut results = Vec::new();
    for (i, &(kind, h, n)) in settings.iter().enumerate() {
        let sub = img.train.subset(&(0..n).collect::<Vec<_>>());
        let c = dynamics::corrupt(
            &sub,
            img.classes,
            kind,
            if kind == NoiseKind::Real { 0.0 } else { 1.0 },
            a.run.seed,
        )
        .map_err(lib)?;
        let model = ModelConfig::Mlp {
            input: sub.per_example(),
            hidden: vec![h; a.layers],
            classes: img.classes,
            activation: ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        };
        let s = spec(model, &a.optim, &a.run, n)?;
        let tracking = Tracking {
            valid: Some(&img.test),
            stop_at_train_accuracy: Some(a.fit_threshold),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let kcode = kinds.iter().position(|&k| k == kind).unwrap_or(0) as f64;
        let trained = dynamics::train_tracked(&s, &c.data, &tracking, &mut |r| {
            done += 1;
            progress.set(
                done,
                &format!("{} h{h} n{n} epoch {}", kind.name(), r.epoch),
            );
            let _ = metrics.append(&[
                Some(kcode),
                Some(h as f64),
                Some(n as f64),
                Some(r.epoch as f64),
                Some(r.train_accuracy),
                r.valid_accuracy,
                Some(r.seconds),
            ]);
            Ok(())
        })
        .map_err(lib)?;
        done = ((i + 1) * a.run.epochs) as u64;
        let last = trained.records.last();
        let best = trained.best_valid();
        progress.line(&format!(
            "{} hidden {h} n {n}: fitted at epoch {} (train acc {}), best valid {}",
            kind.name(),
            trained.fitted_epoch.map_or("-".into(), |e| e.to_string()),
            opt(last.map(|r| r.train_accuracy)),
            opt(best.map(|b| b.1))
        ));
        results.push(json!({
            "kind": kind, "hidden": h, "train_size": n,
            "fitted_epoch": trained.fitted_epoch,
            "final_train_accuracy": last.map(|r| num(r.train_accuracy)),
            "epochs_run": trained.records.len(),
            "best_valid_accuracy": best.map(|b| num(b.1)),
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    progress.finish();
    let fitted = |k: NoiseKind, h: usize, n: usize| -> (Option<u64>, Option<f64>, Option<f64>) {
        results
            .iter()
            .find(|r| {
                r["kind"] == json!(k) && r["hidden"] == json!(h) && r["train_size"] == json!(n)
            })
            .map_or((None, None, None), |r| {
                (
                    r["fitted_epoch"].as_u64(),
                    r["final_train_accuracy"].as_f64(),
                    r["best_valid_accuracy"].as_f64(),
                )
            })
    };
    let cell = |(e, acc, _): (Option<u64>, Option<f64>, Option<f64>)| match e {
        Some(e) => e.to_string(),
        None => format!("> {} ({})", a.run.epochs, opt(acc)),
    };
    let mut html = report::Report::new(&format!(
        "memaudit dynamics capacity: epochs to {} training accuracy on {}",
        a.fit_threshold, img.name
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
    let rows_h: Vec<Vec<String>> = a
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
            .map(|&k| Series::line(k.name(), pts(&a.hidden_sizes, &|h| fitted(k, h, max_n))))
            .collect::<Vec<_>>(),
    ));
    html.svg(&chart(
        "Epochs to fit against training set size",
        "training examples",
        "epochs",
        &kinds
            .iter()
            .map(|&k| Series::line(k.name(), pts(&train_sizes, &|n| fitted(k, max_h, n))))
            .collect::<Vec<_>>(),
    ));
    html.heading("Configuration");
    html.pre(&serde_json::to_string_pretty(&config)?);
    let out = json!({ "experiment": "capacity", "run": rd.path.display().to_string(), "data": img.name, "fit_threshold": a.fit_threshold,
        "max_epochs": a.run.epochs, "results": results });
    let text = format!(
        "dynamics capacity on {}: epochs to reach training accuracy {}\n{}\n\n{}",
        img.name,
        a.fit_threshold,
        table_text(&hh, &rows_h),
        table_text(&hn, &rows_n)
    );
    finish(rd, html, out, text)
}
