//! `memaudit mia --scores FILE.npz`: score files written here in Rust (no Python needed), good
//! and broken.

mod common;

use std::path::Path;

use common::{memaudit, ok_json, one_line_error};
use memaudit_audit::mia::synthetic::{Simulation, simulate};
use memaudit_audit::mia::{ScoreSet, npz::write_score_file};
use npyz::WriterBuilder;

/// One array of a hand-made score file.
enum Arr {
    F64(Vec<u64>, Vec<f64>),
    F32(Vec<u64>, Vec<f32>),
    Bool(Vec<u64>, Vec<bool>),
}

fn write_npz(path: &Path, arrays: &[(&str, Arr)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    for (name, arr) in arrays {
        zip.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        match arr {
            Arr::F64(shape, v) => {
                let mut w = npyz::WriteOptions::new()
                    .default_dtype()
                    .shape(shape)
                    .writer(&mut zip)
                    .begin_nd()
                    .unwrap();
                w.extend(v.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            Arr::F32(shape, v) => {
                let mut w = npyz::WriteOptions::new()
                    .default_dtype()
                    .shape(shape)
                    .writer(&mut zip)
                    .begin_nd()
                    .unwrap();
                w.extend(v.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            Arr::Bool(shape, v) => {
                let mut w = npyz::WriteOptions::new()
                    .default_dtype()
                    .shape(shape)
                    .writer(&mut zip)
                    .begin_nd()
                    .unwrap();
                w.extend(v.iter().copied()).unwrap();
                w.finish().unwrap();
            }
        }
    }
    zip.finish().unwrap();
}

/// The arrays of a simulated set, as the issue's format lays them out.
fn arrays(set: &ScoreSet) -> (Vec<f64>, Vec<f64>, Vec<bool>, Vec<bool>) {
    let (n, k, q) = (set.n(), set.shadows(), set.queries());
    let target = (0..n)
        .flat_map(|i| (0..q).map(move |j| (i, j)))
        .map(|(i, j)| set.target(i, j))
        .collect();
    let mut shadow = Vec::new();
    let mut shadow_in = Vec::new();
    for m in 0..k {
        for i in 0..n {
            shadow_in.push(set.is_in(m, i));
            for j in 0..q {
                shadow.push(set.shadow(m, i, j));
            }
        }
    }
    (target, shadow, shadow_in, set.target_in().unwrap().to_vec())
}

fn sim(examples: usize) -> ScoreSet {
    simulate(&Simulation {
        examples,
        population: 300,
        ..Simulation::default()
    })
    .unwrap()
}

fn attack<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attack"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

#[test]
fn all_attacks_on_a_score_file_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.npz");
    write_score_file(&path, &sim(3000)).unwrap();
    let out = memaudit(&["mia", "--scores", path.to_str().unwrap(), "--json"]);
    let j = ok_json(&out);
    let names: Vec<&str> = j["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attack"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "loss",
            "lira-online",
            "lira-offline",
            "lira-offline-two-sided",
            "rmia-online",
            "rmia-offline"
        ]
    );
    // The simulated examples differ in difficulty far more than membership moves them (see
    // memaudit_audit::mia::synthetic): LiRA must beat LOSS clearly (~0.88 vs ~0.63 AUC).
    let loss = attack(&j, "loss")["auc"].as_f64().unwrap();
    let lira = attack(&j, "lira-online")["auc"].as_f64().unwrap();
    assert!(lira > loss + 0.1, "{lira} vs {loss}");
    let tpr = &attack(&j, "lira-online")["tpr_at_fpr"];
    assert!(tpr["0.01"].as_f64().unwrap() > 0.0);
    // ~1500 non-members: 1.5 false positives expected at 0.1%, so it is not reported.
    assert!(tpr.get("0.001").is_none());
    assert!(
        attack(&j, "lira-online")["tpr_at_fpr_skipped"]["0.001"]
            .as_str()
            .unwrap()
            .contains("false positives")
    );
    let b = attack(&j, "loss")["balanced_accuracy"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&b));
    // `all` says which attacks it skipped and why.
    let skipped = j["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("token_logprob")
    );
}

#[test]
fn float32_files_give_the_float64_results() {
    let dir = tempfile::tempdir().unwrap();
    let set = sim(400);
    let (target, shadow, shadow_in, target_in) = arrays(&set);
    let (n, k) = (set.n() as u64, set.shadows() as u64);
    let p64 = dir.path().join("f64.npz");
    let p32 = dir.path().join("f32.npz");
    write_npz(
        &p64,
        &[
            ("target", Arr::F64(vec![n, 1], target.clone())),
            ("shadow", Arr::F64(vec![k, n, 1], shadow.clone())),
            ("shadow_in", Arr::Bool(vec![k, n], shadow_in.clone())),
            ("target_in", Arr::Bool(vec![n], target_in.clone())),
        ],
    );
    write_npz(
        &p32,
        &[
            (
                "target",
                Arr::F32(vec![n, 1], target.iter().map(|&v| v as f32).collect()),
            ),
            (
                "shadow",
                Arr::F32(vec![k, n, 1], shadow.iter().map(|&v| v as f32).collect()),
            ),
            ("shadow_in", Arr::Bool(vec![k, n], shadow_in)),
            ("target_in", Arr::Bool(vec![n], target_in)),
        ],
    );
    let a = ok_json(&memaudit(&[
        "mia",
        "--scores",
        p64.to_str().unwrap(),
        "--attack",
        "loss,lira-online",
        "--json",
    ]));
    let b = ok_json(&memaudit(&[
        "mia",
        "--scores",
        p32.to_str().unwrap(),
        "--attack",
        "loss,lira-online",
        "--json",
    ]));
    assert_eq!(a["attacks"].as_array().unwrap().len(), 2);
    for name in ["loss", "lira-online"] {
        let (x, y) = (
            attack(&a, name)["auc"].as_f64().unwrap(),
            attack(&b, name)["auc"].as_f64().unwrap(),
        );
        // Rounding the signals to f32 (~1e-7 relative) can swap only near-tied pairs: of the
        // ~40,000 member/non-member pairs at most a handful, so 1e-3 in AUC.
        assert!((x - y).abs() < 1e-3, "{name}: {x} vs {y}");
    }
}

#[test]
fn broken_files_get_one_line_errors_naming_the_array_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let run = |path: &Path, attacks: &str| {
        one_line_error(&memaudit(&[
            "mia",
            "--scores",
            path.to_str().unwrap(),
            "--attack",
            attacks,
        ]))
    };
    let target = Arr::F64(vec![4, 1], vec![0.0; 4]);
    // Missing array.
    write_npz(
        &p("missing.npz"),
        &[
            ("target", Arr::F64(vec![4, 1], vec![0.0; 4])),
            ("shadow", Arr::F64(vec![2, 4, 1], vec![0.0; 8])),
        ],
    );
    let e = run(&p("missing.npz"), "all");
    assert!(e.contains("shadow_in") && e.contains("missing.npz"), "{e}");
    // Wrong shape: shadow for 3 examples where target has 4.
    write_npz(
        &p("shape.npz"),
        &[
            ("target", target),
            ("shadow", Arr::F64(vec![2, 3, 1], vec![0.0; 6])),
            ("shadow_in", Arr::Bool(vec![2, 4], vec![true; 8])),
        ],
    );
    let e = run(&p("shape.npz"), "all");
    assert!(e.contains("`shadow`") && e.contains("[2, 3, 1]"), "{e}");
    // Wrong dtype: shadow_in as floats.
    write_npz(
        &p("dtype.npz"),
        &[
            ("target", Arr::F64(vec![4, 1], vec![0.0; 4])),
            ("shadow", Arr::F64(vec![2, 4, 1], vec![0.0; 8])),
            ("shadow_in", Arr::F64(vec![2, 4], vec![1.0; 8])),
        ],
    );
    let e = run(&p("dtype.npz"), "all");
    assert!(
        e.contains("`shadow_in`") && e.contains("bool") && e.contains("[2, 4]"),
        "{e}"
    );
    // Example 2 has no OUT shadow model.
    write_npz(
        &p("cover.npz"),
        &[
            ("target", Arr::F64(vec![4, 1], vec![0.0; 4])),
            ("shadow", Arr::F64(vec![2, 4, 1], vec![0.0; 8])),
            (
                "shadow_in",
                Arr::Bool(
                    vec![2, 4],
                    vec![true, false, true, false, false, true, true, true],
                ),
            ),
        ],
    );
    let e = run(&p("cover.npz"), "lira-offline");
    assert!(
        e.contains("example 2")
            && e.contains("OUT")
            && e.contains("shadow_in")
            && e.contains("[2, 4]"),
        "{e}"
    );
    // `all` skips it instead and says why.
    let j = ok_json(&memaudit(&[
        "mia",
        "--scores",
        p("cover.npz").to_str().unwrap(),
        "--json",
    ]));
    let reasons: Vec<&str> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("example 2")),
        "{reasons:?}"
    );
    // RMIA without population points.
    let e = run(&p("cover.npz"), "rmia-online");
    assert!(e.contains("population_target"), "{e}");
    // Not an npz at all, and an unknown attack.
    std::fs::write(p("junk.npz"), b"not a zip").unwrap();
    let e = run(&p("junk.npz"), "all");
    assert!(e.contains("junk.npz"), "{e}");
    let e = run(&p("cover.npz"), "lira");
    assert!(e.contains("--attack") && e.contains("lira-online"), "{e}");
    let e = one_line_error(&memaudit(&["mia"]));
    assert!(e.contains("--scores"), "{e}");
}

#[test]
fn out_folder_holds_per_example_scores_roc_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.npz");
    let set = sim(300);
    write_score_file(&path, &set).unwrap();
    let out = dir.path().join("run");
    let j = ok_json(&memaudit(&[
        "mia",
        "--scores",
        path.to_str().unwrap(),
        "--attack",
        "loss,lira-offline",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert!(j["files"].as_array().unwrap().len() >= 5);
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("example,member,loss,lira-offline"));
    assert_eq!(lines.count(), 300);
    let npy = std::fs::read(out.join("scores-lira-offline.npy")).unwrap();
    let scores: Vec<f64> = npyz::NpyFile::new(&npy[..]).unwrap().into_vec().unwrap();
    assert_eq!(scores.len(), 300);
    assert!(
        std::fs::read_to_string(out.join("roc.csv"))
            .unwrap()
            .starts_with("attack,threshold,fpr,tpr")
    );
    assert!(
        std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains("<svg")
    );
    // A second run into the same folder is refused without --force.
    let e = one_line_error(&memaudit(&[
        "mia",
        "--scores",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--out") && e.contains("--force"), "{e}");
}

#[test]
fn shadow_models_on_digits_are_cached_reused_and_shardable() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cache = dir.path().join("cache");
    let (run_s, cache_s) = (run.to_str().unwrap(), cache.to_str().unwrap());
    let base = [
        "mia", "--data", "digits", "--model", "mlp", "--pairs", "1", "--epochs", "1", "--cache",
        cache_s, "--out", run_s, "--json",
    ];
    let j = ok_json(&memaudit(&base));
    assert_eq!(j["models_trained"], 3);
    assert_eq!(j["shadow_models"], 2);
    assert!(attack(&j, "lira-offline")["auc"].as_f64().is_some());
    assert!(run.join("scores.npz").is_file() && run.join("scores.csv").is_file());
    // The saved signals are a score file `mia --scores` reads.
    ok_json(&memaudit(&[
        "mia",
        "--scores",
        run.join("scores.npz").to_str().unwrap(),
        "--attack",
        "loss",
        "--json",
    ]));
    // Again (the run folder needs --force): every model comes from the cache, key printed.
    let mut again = base.to_vec();
    again.push("--force");
    let out = memaudit(&again);
    let j2 = ok_json(&out);
    assert_eq!(j2["models_reused"], 3);
    assert_eq!(j2["models_trained"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reused from the cache, key "), "{stderr}");
    // Same models, same scores.
    assert_eq!(attack(&j, "loss")["auc"], attack(&j2, "loss")["auc"]);
    // Adding a pair trains only the new pair (and reuses pair 0 and the target).
    let mut more = again.clone();
    more[6] = "2";
    let j3 = ok_json(&memaudit(&more));
    assert_eq!(
        (j3["models_trained"].clone(), j3["models_reused"].clone()),
        (2.into(), 3.into())
    );
    // One model per process: model 1 is in the cache already.
    let one = ok_json(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--pairs",
        "1",
        "--epochs",
        "1",
        "--cache",
        cache_s,
        "--only-model",
        "1",
        "--json",
    ]));
    assert_eq!(one["reused"], true);
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--pairs",
        "1",
        "--cache",
        cache_s,
        "--only-model",
        "3",
    ]));
    assert!(e.contains("--only-model 3"), "{e}");
}

#[test]
fn more_targets_attack_shadow_models_in_turn_and_pool_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = |targets: &str, out: &str| {
        let out = dir.path().join(out);
        let j = ok_json(&memaudit(&[
            "mia",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--pairs",
            "2",
            "--epochs",
            "1",
            "--cache",
            cache.to_str().unwrap(),
            "--targets",
            targets,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]));
        let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
        (j, csv)
    };
    let (one, csv1) = run("1", "one");
    let (three, csv3) = run("3", "three");
    let n = one["examples"].as_u64().unwrap();
    // Three targets (the separate one, shadow models 0 and 1), each against the other four
    // models (pair 1 covers every example IN and OUT once): three times the rows, the same
    // five models (from the cache).
    assert_eq!(three["examples"].as_u64().unwrap(), 3 * n);
    assert_eq!(three["targets"], 3);
    assert_eq!(three["models_reused"], 5);
    assert!(three["skipped"].as_array().unwrap().iter().all(|s| {
        let a = s["attack"].as_str().unwrap();
        a == "min-k" || a == "zlib"
    }));
    assert_eq!(csv3.lines().count() as u64, 3 * n + 1);
    // The first target is the separate one, scored exactly as alone.
    let col = |csv: &str, rows: usize| -> Vec<String> {
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let c = header.iter().position(|h| *h == "lira-offline").unwrap();
        csv.lines()
            .skip(1)
            .take(rows)
            .map(|l| l.split(',').nth(c).unwrap().to_string())
            .collect()
    };
    assert_eq!(col(&csv1, n as usize), col(&csv3, n as usize));
    let members = attack(&three, "lira-offline")["members"].as_u64().unwrap();
    let non = attack(&three, "lira-offline")["non_members"]
        .as_u64()
        .unwrap();
    assert_eq!(members + non, 3 * n);
    // Beyond the models there are: the flag is named.
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--pairs",
        "1",
        "--targets",
        "4",
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]));
    assert!(
        e.contains("--targets 4") && e.contains("between 1 and the 3 models"),
        "{e}"
    );
}

#[test]
fn shadow_training_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = out.to_str().unwrap();
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--pairs",
        "1",
        "--batch-size",
        "5000",
        "--out",
        o,
    ]));
    assert!(
        e.contains("too small to split into pairs") && e.contains("--batch-size 5000"),
        "{e}"
    );
    // Shifts need images; queries need shifts.
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "embedded",
        "--pairs",
        "1",
        "--augment",
        "shift",
        "--out",
        o,
    ]));
    assert!(
        e.contains("--augment shift") && e.contains("--data embedded"),
        "{e}"
    );
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--pairs",
        "1",
        "--queries",
        "5",
        "--out",
        o,
    ]));
    assert!(e.contains("--queries 5") && e.contains("identity"), "{e}");
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--pairs",
        "1",
        "--augment",
        "shift",
        "--queries",
        "26",
        "--out",
        o,
    ]));
    assert!(e.contains("--queries") && e.contains("25"), "{e}");
    let e = one_line_error(&memaudit(&[
        "train",
        "--data",
        "embedded",
        "--augment",
        "shift",
        "--out",
        o,
    ]));
    assert!(e.contains("--augment shift"), "{e}");
    // A cache entry whose key is another model's (another dataset, version or setting) is refused,
    // naming the entry, never reused.
    let cache2 = dir.path().join("cache2");
    let plan_args = [
        "mia",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--pairs",
        "1",
        "--epochs",
        "1",
        "--cache",
        cache2.to_str().unwrap(),
        "--only-model",
        "0",
        "--json",
    ];
    let j = ok_json(&memaudit(&plan_args));
    let entry = std::path::PathBuf::from(j["path"].as_str().unwrap());
    // The unit's completion marker (memaudit_engine::atomic::MARKER) holds the key.
    let marker = entry.join(memaudit_engine::atomic::MARKER);
    let key = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(
        &marker,
        key.replace("\"data_hash\":\"", "\"data_hash\":\"0"),
    )
    .unwrap();
    let e = one_line_error(&memaudit(&plan_args[..plan_args.len() - 1]));
    assert!(e.contains("not reused") && e.contains("model 0"), "{e}");
    let e = one_line_error(&memaudit(&["mia", "--scores", "x.npz", "--pairs", "1"]));
    assert!(e.contains("--scores") && e.contains("--pairs"), "{e}");
    // A cache written by another cache format is refused.
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join("memaudit-shadow-cache.json"),
        r#"{"format": 99, "memaudit": "9.9.9"}"#,
    )
    .unwrap();
    let e = one_line_error(&memaudit(&[
        "mia",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--pairs",
        "1",
        "--epochs",
        "1",
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        o,
    ]));
    assert!(e.contains("--cache") && e.contains("format 99"), "{e}");
}

#[test]
fn augmented_shadow_models_query_the_training_shifts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = |extra: &[&str], out: &str| {
        let mut a = vec![
            "mia",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--pairs",
            "1",
            "--epochs",
            "1",
            "--attack",
            "loss,lira-online,lira-offline",
            "--cache",
            cache.to_str().unwrap(),
            "--json",
            "--out",
        ];
        a.push(out);
        a.extend_from_slice(extra);
        ok_json(&memaudit(&a))
    };
    let plain_out = dir.path().join("plain");
    let aug_out = dir.path().join("aug");
    let plain = run(&[], plain_out.to_str().unwrap());
    assert_eq!(plain["queries"], 1);
    let aug = run(
        &["--augment", "shift", "--queries", "9"],
        aug_out.to_str().unwrap(),
    );
    // Augmented models are other models: all three trained anew, not taken from the cache.
    assert_eq!(aug["models_trained"], 3);
    assert_eq!(aug["queries"], 9);
    let shifts = aug["query_shifts"].as_array().unwrap();
    assert_eq!(shifts.len(), 9);
    assert_eq!(shifts[0], serde_json::json!([0, 0]));
    assert!(attack(&aug, "lira-online")["auc"].as_f64().is_some());
    // The score file keeps every query.
    let j = ok_json(&memaudit(&[
        "mia",
        "--scores",
        aug_out.join("scores.npz").to_str().unwrap(),
        "--attack",
        "lira-offline",
        "--json",
    ]));
    assert_eq!(j["queries"], 9);
}

#[test]
fn language_model_shadows_on_text_windows_with_the_lm_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lm");
    let j = ok_json(&memaudit(&[
        "mia",
        "--data",
        "embedded",
        "--seq-len",
        "16",
        "--max-train",
        "96",
        "--embed",
        "8",
        "--pairs",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--population",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(j["signal_kind"], "log_likelihood");
    assert_eq!(j["examples"], 96);
    assert_eq!(j["shadow_models"], 2);
    for name in [
        "loss",
        "lira-online",
        "lira-offline",
        "rmia-online",
        "min-k",
        "zlib",
    ] {
        let auc = attack(&j, name)["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{name}: {auc}");
    }
    assert!(
        j["skipped"].as_array().unwrap().is_empty(),
        "{}",
        j["skipped"]
    );
}

/// `--print-config` writes the effective experiment (flags and defaults) as TOML; fed back with
/// `--config` it trains the same models and gives the same attack numbers; a flag given beside
/// the file overrides it; an attack-settings file of earlier versions is still a config.
#[test]
fn print_config_fed_back_through_config_gives_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (cache, file) = (p("cache"), p("mia.toml"));
    let flags = |out: &str| -> Vec<String> {
        [
            "mia",
            "--data",
            "digits",
            "--max-train",
            "200",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--pairs",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--population",
            "50",
            "--attack",
            "loss,lira-offline",
            "--rmia-gamma",
            "2",
            "--cache",
            &cache,
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let refs = |v: &[String]| v.iter().map(String::clone).collect::<Vec<_>>();
    let mut printed = refs(&flags(&p("never")));
    printed.push("--print-config".into());
    let o = memaudit(&printed.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0));
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(
        toml.contains("pairs = 1") && toml.contains("gamma = 2"),
        "{toml}"
    );
    assert!(
        !Path::new(&p("never")).exists(),
        "--print-config runs nothing"
    );
    std::fs::write(&file, &toml).unwrap();

    let mut direct = refs(&flags(&p("direct")));
    direct.push("--json".into());
    let a = ok_json(&memaudit(
        &direct.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let b = ok_json(&memaudit(&[
        "mia",
        "--config",
        &file,
        "--out",
        &p("from-file"),
        "--json",
    ]));
    for key in ["examples", "shadow_models", "data_hash", "train", "config"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    for name in ["loss", "lira-offline"] {
        assert_eq!(attack(&a, name)["auc"], attack(&b, name)["auc"], "{name}");
    }
    assert_eq!(b["models_reused"], 3, "the same models, found in the cache");
    // A flag beside the file wins; the file's other settings stay.
    let c = ok_json(&memaudit(&[
        "mia",
        "--config",
        &file,
        "--attack",
        "loss",
        "--out",
        &p("override"),
        "--json",
    ]));
    assert_eq!(c["attacks"].as_array().unwrap().len(), 1);
    assert_eq!(c["examples"], 200);
    assert_eq!(c["config"]["rmia"]["gamma"], 2.0);
    // A bad key is one line naming the file and key.
    std::fs::write(p("bad.toml"), "[shadows]\npairz = 1\n").unwrap();
    let e = one_line_error(&memaudit(&["mia", "--config", &p("bad.toml")]));
    assert!(e.contains("bad.toml line 2") && e.contains("pairz"), "{e}");
}

/// Without `--out`, `mia` writes no files: not into the current directory either (a merge once
/// gave every command with `--config`/`--print-config` an empty default folder, and mia's
/// optional `--out` became the current directory).
#[test]
fn without_out_nothing_is_written_to_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.npz");
    write_score_file(&path, &sim(400)).unwrap();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_memaudit"))
        .args([
            "mia",
            "--scores",
            path.to_str().unwrap(),
            "--attack",
            "loss",
            "--json",
        ])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files written without --out: {left:?}");
}
