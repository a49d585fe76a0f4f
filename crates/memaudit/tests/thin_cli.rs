//! The CLI crate parses flags and renders; it holds no training loop, protocol or metric
//! computation (issue 13). This test scans EVERY Rust source under `src/` for the entry points
//! of that work: training, gradients, optimizer steps, evaluation, accounting, model
//! construction, and the dynamics and audit measurements. The only files let through are those
//! in `EXEMPT`, each with its reason; an exemption that no longer calls anything forbidden (or
//! names a file that is gone) fails too, so the list cannot outlive its reasons.

/// CLI sources allowed to call a forbidden entry point (relative to this crate), and why.
const EXEMPT: &[(&str, &str)] = &[
    (
        "src/cmd/bench_engine.rs",
        "a timing harness: it builds models and runs gradients and optimizer steps to time them",
    ),
    (
        "src/cmd/bench_exposure.rs",
        "a timing harness: it builds and initialises models to time exposure scoring on them",
    ),
    (
        "src/cmd/bench_mia.rs",
        "a timing harness: it builds the models whose shadow sets it times",
    ),
    (
        "src/cmd/noise.rs",
        "one call into memaudit-accounting (`calibrate_noise`) per accountant, rendered as is",
    ),
];

/// What only a library may call: the trainer and its loop, per-example gradients and optimizer
/// steps, evaluation, privacy accounting and calibration, model construction and
/// initialisation, and the measurements of memaudit-audit and memaudit-attacks.
const FORBIDDEN: &[&str] = &[
    "Trainer",
    "train_epoch",
    "train_tracked",
    ".fit(",
    ".gradients(",
    "Optimizer::new",
    ".step(&mut",
    "evaluate(",
    "planned_epsilon",
    "calibrate_planned",
    "calibrate_noise",
    "epsilon_of",
    "init_params",
    ".build()",
    "dynamics::easy_hard(",
    "loss_sensitivity(",
    "dynamics::corrupt(",
    "dynamics::lass(",
    "binomial_dispersion",
    "gini(",
    "exposure(",
    "memaudit_attacks::",
];

/// The code of a Rust source: comments and doc comments removed, so that docs may name what
/// the code must not call.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The forbidden entry points `text` calls, with their line numbers.
fn violations(text: &str) -> Vec<(usize, &'static str)> {
    code(text)
        .lines()
        .enumerate()
        .flat_map(|(i, l)| {
            FORBIDDEN
                .iter()
                .filter(move |f| l.contains(**f))
                .map(move |f| (i + 1, *f))
        })
        .collect()
}

/// Every `.rs` file under `dir`, as paths relative to this crate (`src/cmd/eval.rs`), sorted.
fn rust_sources(root: &std::path::Path, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.join(dir)];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_cli_source_computes_outside_the_exemptions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = rust_sources(root, "src");
    // The walk must see the crate: a wrong root would scan nothing and pass.
    assert!(
        files.iter().any(|f| f == "src/main.rs") && files.len() > 40,
        "{files:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        if EXEMPT.iter().any(|(f, _)| f == file) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (line, what) in violations(&text) {
            found.push(format!("{file}:{line}: {what}"));
        }
    }
    assert!(
        found.is_empty(),
        "protocol or metric computation in the CLI (move it to memaudit-experiments, or add the \
         file to EXEMPT with its reason):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_exemption_is_a_file_that_still_needs_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, reason) in EXEMPT {
        assert!(!reason.is_empty(), "{file}: give the reason");
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (update EXEMPT when files move)"));
        assert!(
            !violations(&text).is_empty(),
            "{file} calls nothing forbidden any more: remove it from EXEMPT"
        );
    }
}

#[test]
fn the_scan_finds_what_it_forbids_and_skips_comments() {
    let src = "let g = model.gradients(&p, &b, req)?;\n// Trainer::new is the library's job\nlet t = Trainer::new(cfg);\n";
    assert_eq!(violations(src), vec![(1, ".gradients("), (3, "Trainer")]);
    // The CLI of the dynamics studies before the migration called the measurements directly.
    let before = "let r = dynamics::easy_hard(&base, &c.data, a.runs, a.run.seed, &mut |d| Ok(()))";
    assert_eq!(violations(before), vec![(1, "dynamics::easy_hard(")]);
    // What eval and sample did in the CLI before moving to the library.
    let eval =
        "let model = saved.config.model.build()?;\nlet r = evaluate(&model, &p, data, 256)?;";
    assert_eq!(violations(eval), vec![(1, ".build()"), (2, "evaluate(")]);
    assert_eq!(
        violations("        lm.step(&mut state, &[t], &mut lp);"),
        vec![(1, ".step(&mut")]
    );
    assert!(violations("let r = eval::run(&cfg, &mut NullObserver)?; // evaluate(").is_empty());
}

#[test]
fn the_walk_finds_a_new_file_in_a_new_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/cmd/new")).unwrap();
    std::fs::write(dir.path().join("src/main.rs"), "").unwrap();
    std::fs::write(dir.path().join("src/cmd/new/study.rs"), "").unwrap();
    std::fs::write(dir.path().join("src/cmd/notes.txt"), "").unwrap();
    assert_eq!(
        rust_sources(dir.path(), "src"),
        vec!["src/cmd/new/study.rs", "src/main.rs"]
    );
}
