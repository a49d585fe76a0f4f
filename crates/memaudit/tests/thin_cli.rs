//! The CLI crate parses flags and renders; it holds no training loop, protocol or metric
//! computation (issue 13). For every command migrated to `memaudit-experiments`, this test scans
//! its CLI source for the entry points of that work: training, gradients, optimizer steps,
//! evaluation, accounting, and the dynamics and audit measurements. Phase 2 adds each migrated
//! command's files to `MIGRATED`.

/// CLI sources of the migrated commands (relative to this crate).
const MIGRATED: &[&str] = &[
    "src/cmd/sanity.rs",
    "src/cmd/dynamics/easy_hard.rs",
    "src/cmd/dynamics/sensitivity.rs",
    "src/cmd/experiment.rs",
    "src/cmd/mia.rs",
    "src/cmd/mia_shard.rs",
    "src/cmd/lower_bound.rs",
    "src/cmd/dynamics/curves.rs",
    "src/cmd/dynamics/capacity.rs",
    "src/cmd/dynamics/regularizers.rs",
    "src/cmd/secret_sharer.rs",
    "src/cmd/train.rs",
    "src/cmd/audit_canaries.rs",
    "src/cmd/exposure.rs",
    "src/cmd/extract.rs",
    "src/cmd/dp_sweep.rs",
    "src/cmd/audit.rs",
    "src/cmd/demo.rs",
    "src/cmd/attack.rs",
    "src/cmd/attack/lsb.rs",
    "src/cmd/attack/regulariser.rs",
    "src/cmd/attack/capacity.rs",
    "src/cmd/dynamics/csr.rs",
    "src/cmd/dynamics/mod.rs",
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

#[test]
fn migrated_commands_compute_nothing_in_the_cli() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut found = Vec::new();
    for file in MIGRATED {
        let text = std::fs::read_to_string(format!("{root}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e} (update MIGRATED when files move)"));
        for (line, what) in violations(&text) {
            found.push(format!("{file}:{line}: {what}"));
        }
    }
    assert!(
        found.is_empty(),
        "protocol or metric computation in the CLI (move it to memaudit-experiments):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_forbids_and_skips_comments() {
    let src = "let g = model.gradients(&p, &b, req)?;\n// Trainer::new is the library's job\nlet t = Trainer::new(cfg);\n";
    assert_eq!(violations(src), vec![(1, ".gradients("), (3, "Trainer")]);
    // The CLI of the dynamics studies before the migration called the measurements directly.
    let before = "let r = dynamics::easy_hard(&base, &c.data, a.runs, a.run.seed, &mut |d| Ok(()))";
    assert_eq!(violations(before), vec![(1, "dynamics::easy_hard(")]);
}
