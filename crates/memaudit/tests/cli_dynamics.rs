//! `memaudit dynamics`: bad inputs are one-line errors with exit code 2 that leave no run folder;
//! each experiment runs end to end on the built-in 8x8 digits (seconds) and its `--json` holds
//! the numbers the report plots.

use std::path::Path;
use std::process::Output;

mod common;
use common::*;

use memaudit_engine::ModelConfig;
use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::TrainConfig;
use serde_json::Value;

fn json_ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one JSON object: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn noise_fractions_outside_the_unit_interval_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    for bad in ["0.2,1.5", "-0.1", "nan"] {
        let flag = format!("--fractions={bad}");
        let err = one_line_error(&memaudit(&[
            "dynamics",
            "curves",
            "--data",
            "digits",
            &flag,
            "--out",
            path(&out),
        ]));
        assert!(
            err.contains("--fractions") && err.contains("[0, 1]"),
            "{err}"
        );
        assert!(!out.exists(), "a refused run writes nothing");
    }
    // --json puts the same error on stdout as one object.
    let o = memaudit(&[
        "--json",
        "dynamics",
        "curves",
        "--data",
        "digits",
        "--fractions",
        "2",
        "--out",
        path(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("--fractions"));
}

#[test]
fn a_non_positive_lass_radius_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    for r in ["0", "-0.3", "inf"] {
        let flag = format!("--lass-r={r}");
        for cmd in [
            vec![
                "dynamics",
                "curves",
                "--data",
                "digits",
                &flag,
                "--out",
                path(&out),
            ],
            vec![
                "dynamics",
                "regularizers",
                "--data",
                "digits",
                &flag,
                "--out",
                path(&out),
            ],
            vec!["dynamics", "csr", "--run", path(&out), &flag],
        ] {
            let err = one_line_error(&memaudit(&cmd));
            assert!(err.contains("--lass-r") && err.contains("> 0"), "{err}");
        }
        assert!(!out.exists());
    }
}

/// A `memaudit train` run folder's run.json for `model` (what `csr` reads before the weights).
fn run_json_for(dir: &Path, model: ModelConfig, data: &str) {
    let train = TrainConfig {
        model,
        optimizer: OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: Schedule::Constant,
        epochs: 1,
        batch_size: 8,
        physical_batch: None,
        sampling: SamplingMode::Shuffle,
        seed: 0,
        privacy: None,
        seeded_noise: false,
    };
    let rj = serde_json::json!({
        "command": "train",
        "config": {
            "train": train,
            "data": { "data": data, "data_dir": null, "level": "char", "seq_len": 10,
                      "valid_fraction": 0.1, "max_train": 16, "vocab_size": 10000 },
        },
        "status": "completed",
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_vec_pretty(&rj).unwrap(),
    )
    .unwrap();
}

#[test]
fn csr_needs_a_softmax_classifier_over_dense_inputs() {
    let d = tempfile::tempdir().unwrap();
    let lm = d.path().join("lm");
    run_json_for(
        &lm,
        ModelConfig::LstmLm {
            vocab: 30,
            embed: 4,
            hidden: 8,
            layers: 1,
            dropout: 0.0,
        },
        "embedded",
    );
    let err = one_line_error(&memaudit(&["dynamics", "csr", "--run", path(&lm)]));
    assert!(
        err.contains("not a softmax classifier over dense inputs")
            && err.contains("language model"),
        "{err}"
    );
    let tfidf = d.path().join("logreg");
    run_json_for(
        &tfidf,
        ModelConfig::SparseLogReg {
            features: 100,
            classes: 2,
        },
        "imdb",
    );
    let o = memaudit(&["--json", "dynamics", "csr", "--run", path(&tfidf)]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("not a softmax classifier over dense inputs") && err.contains("sparse"),
        "{err}"
    );
    let err = one_line_error(&memaudit(&[
        "dynamics",
        "csr",
        "--run",
        path(&d.path().join("none")),
    ]));
    assert!(err.contains("run.json"), "{err}");
}

#[test]
fn other_bad_flags_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = path(&out);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["dynamics", "curves", "--data", "embedded", "--out", o],
            "image dataset",
        ),
        (
            vec![
                "dynamics", "curves", "--data", "digits", "--noise", "pink", "--out", o,
            ],
            "--noise pink",
        ),
        (
            vec![
                "dynamics",
                "capacity",
                "--data",
                "digits",
                "--kinds",
                "real,randz",
                "--out",
                o,
            ],
            "--kinds randz",
        ),
        (
            vec![
                "dynamics",
                "capacity",
                "--data",
                "digits",
                "--fit-threshold",
                "1.5",
                "--out",
                o,
            ],
            "--fit-threshold",
        ),
        (
            vec![
                "dynamics",
                "easy-hard",
                "--data",
                "digits",
                "--runs",
                "1",
                "--out",
                o,
            ],
            "--runs 1",
        ),
        (
            vec![
                "dynamics",
                "sensitivity",
                "--data",
                "digits",
                "--variants",
                "real,blue",
                "--out",
                o,
            ],
            "--variants blue",
        ),
        (
            vec![
                "dynamics",
                "regularizers",
                "--data",
                "digits",
                "--dropout-rates",
                "0.5,1.0",
                "--out",
                o,
            ],
            "--dropout-rates 1.0",
        ),
        (
            vec![
                "dynamics",
                "regularizers",
                "--data",
                "digits",
                "--adversarial-weights",
                "2",
                "--out",
                o,
            ],
            "--adversarial-weights 2",
        ),
    ];
    for (args, want) in cases {
        let err = one_line_error(&memaudit(&args));
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn curves_on_digits_track_clean_and_noisy_examples_and_csr() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("curves");
    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "curves",
        "--data",
        "digits",
        "--max-train",
        "400",
        "--valid-size",
        "200",
        "--hidden",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "20",
        "--fractions",
        "0,0.5",
        "--csr-size",
        "100",
        "--gini",
        "--out",
        path(&out),
    ]));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["corrupted"], 0);
    assert_eq!(runs[1]["corrupted"], 200);
    for r in runs {
        let epochs = r["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 3);
        for e in epochs {
            let csr = e["csr"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&csr));
            assert!(e["input_gradient_gini"].as_f64().is_some());
        }
    }
    // Real data: no noisy examples; half randY: both clean and noisy accuracies are recorded.
    assert!(runs[0]["final_noisy_accuracy"].is_null());
    assert!(runs[1]["final_noisy_accuracy"].as_f64().is_some());
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Critical sample ratio") && html.contains("<svg"));
    let rj: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(rj["status"], "completed");
    assert_eq!(rj["results"]["runs"].as_array().unwrap().len(), 2);
    // The folder now holds a run: reusing it needs --force.
    let err = one_line_error(&memaudit(&[
        "dynamics",
        "curves",
        "--data",
        "digits",
        "--out",
        path(&out),
    ]));
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn csr_of_a_saved_digits_mlp() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("mlp");
    let o = memaudit(&[
        "--quiet",
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--out",
        path(&run),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "csr",
        "--run",
        path(&run),
        "--csr-size",
        "300",
        "--lass-r",
        "8",
    ]));
    assert_eq!(v["examples"], 300);
    let csr = v["csr"].as_f64().unwrap();
    let critical = v["critical"].as_u64().unwrap();
    assert!((csr - critical as f64 / 300.0).abs() < 1e-12);
    // r = 8/255 on a 16-unit MLP after 2 epochs: some validation digits sit that close to a
    // decision boundary, and not all of them.
    assert!(critical > 0 && critical < 300, "{v}");
    // The effective config (--print-config), fed back through --config, gives the same result
    // (LASS is seeded); only the time differs.
    let printed = memaudit(&[
        "dynamics",
        "csr",
        "--run",
        path(&run),
        "--csr-size",
        "300",
        "--lass-r",
        "8",
        "--print-config",
    ]);
    assert!(printed.status.success());
    let file = d.path().join("csr.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let mut again = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "csr",
        "--config",
        path(&file),
    ]));
    let mut v = v;
    for r in [&mut v, &mut again] {
        r.as_object_mut().unwrap().remove("seconds");
    }
    assert_eq!(again, v);
}

#[test]
fn the_other_experiments_run_on_digits() {
    let d = tempfile::tempdir().unwrap();
    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "easy-hard",
        "--data",
        "digits",
        "--max-train",
        "300",
        "--hidden",
        "16",
        "--runs",
        "3",
        "--batch-size",
        "20",
        "--lr",
        "0.05",
        "--out",
        path(&d.path().join("eh")),
    ]));
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 3);
    assert!(kinds.iter().all(|k| k["dispersion"]["ratio"].is_number()));
    let rates = std::fs::read_to_string(d.path().join("eh/misclassification.csv")).unwrap();
    assert_eq!(rates.lines().count(), 301);

    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "capacity",
        "--data",
        "digits",
        "--kinds",
        "real,randy",
        "--hidden-sizes",
        "8,32",
        "--train-sizes",
        "100,200",
        "--epochs",
        "3",
        "--batch-size",
        "20",
        "--fit-threshold",
        "0.5",
        "--lr",
        "0.1",
        "--out",
        path(&d.path().join("cap")),
    ]));
    // 2 kinds x (2 widths at n = 200, plus n = 100 at width 32).
    assert_eq!(v["results"].as_array().unwrap().len(), 6);

    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "sensitivity",
        "--data",
        "digits",
        "--examples",
        "100",
        "--hidden",
        "4,4",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--every",
        "5",
        "--variants",
        "real,unique,unique-randx",
        "--out",
        path(&d.path().join("ls")),
    ]));
    let vs = v["variants"].as_array().unwrap();
    let names: Vec<&str> = vs.iter().map(|x| x["variant"].as_str().unwrap()).collect();
    assert_eq!(names, ["real", "unique", "unique-randx"]);
    for x in vs {
        assert_eq!(x["points"].as_array().unwrap().len(), 2);
        let g = x["gini_unrolled_final"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&g));
    }

    let v = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "regularizers",
        "--data",
        "digits",
        "--max-train",
        "200",
        "--valid-size",
        "100",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "20",
        "--dropout-rates",
        "0.5",
        "--input-dropout-rates",
        "none",
        "--input-noise-stds",
        "0.3",
        "--weight-decays",
        "0.01",
        "--adversarial-weights",
        "0.5",
        "--out",
        path(&d.path().join("reg")),
    ]));
    let pts = v["points"].as_array().unwrap();
    assert_eq!(pts.len(), 5);
    assert_eq!(pts[0]["label"], "none");
    assert!(pts.iter().all(|p| p["randy_train_accuracy"].is_number()));
    assert!(
        std::fs::read_to_string(d.path().join("reg/sweep.csv"))
            .unwrap()
            .lines()
            .count()
            == 6
    );
}

/// `dynamics curves --print-config` fed back through `--config` trains the same runs: the same
/// numbers (timings aside), and a flag beside the file overrides it.
#[test]
fn curves_print_config_fed_back_through_config_gives_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let flags = |out: &Path| -> Vec<String> {
        [
            "dynamics",
            "curves",
            "--data",
            "digits",
            "--max-train",
            "200",
            "--valid-size",
            "100",
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "20",
            "--fractions",
            "0,0.5",
            "--csr-every",
            "0",
            "--seed",
            "4",
            "--out",
            path(out),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let as_refs = |v: &[String]| {
        v.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\u{0}")
    };
    let call = |v: Vec<String>| memaudit(&as_refs(&v).split('\u{0}').collect::<Vec<_>>());
    let mut printed = flags(&d.path().join("never"));
    printed.push("--print-config".into());
    let o = call(printed);
    assert_eq!(o.status.code(), Some(0));
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(
        toml.contains("fractions = [") && toml.contains("seed = 4"),
        "{toml}"
    );
    let file = d.path().join("curves.toml");
    std::fs::write(&file, &toml).unwrap();
    let mut direct = flags(&d.path().join("a"));
    direct.push("--json".into());
    let a = ok_json(&call(direct));
    let b = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "curves",
        "--config",
        path(&file),
        "--out",
        path(&d.path().join("b")),
    ]));
    let strip = |v: &Value| {
        let mut runs = v["runs"].clone();
        for r in runs.as_array_mut().unwrap() {
            for e in r["epochs"].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("seconds");
            }
        }
        runs
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a["model"], b["model"]);
    let c = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "curves",
        "--config",
        path(&file),
        "--fractions",
        "0.5",
        "--out",
        path(&d.path().join("c")),
    ]));
    assert_eq!(c["runs"].as_array().unwrap().len(), 1);
    assert_eq!(c["train_examples"], 200);
}

/// `dynamics capacity --print-config` fed back through `--config` runs the same sweep.
#[test]
fn capacity_print_config_fed_back_through_config_gives_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let never = d.path().join("never");
    let base = [
        "dynamics",
        "capacity",
        "--data",
        "digits",
        "--valid-size",
        "100",
        "--kinds",
        "real,randy",
        "--hidden-sizes",
        "8,16",
        "--layers",
        "1",
        "--train-sizes",
        "100,200",
        "--epochs",
        "2",
        "--batch-size",
        "20",
    ];
    let mut printed = base.to_vec();
    printed.extend(["--out", path(&never), "--print-config"]);
    let o = memaudit(&printed);
    assert_eq!(o.status.code(), Some(0));
    let file = d.path().join("capacity.toml");
    std::fs::write(&file, &o.stdout).unwrap();
    let (a_out, b_out) = (d.path().join("a"), d.path().join("b"));
    let mut direct = vec!["--json"];
    direct.extend(base);
    direct.extend(["--out", path(&a_out)]);
    let a = ok_json(&memaudit(&direct));
    let b = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "capacity",
        "--config",
        path(&file),
        "--out",
        path(&b_out),
    ]));
    let points = |v: &Value| {
        let mut r = v["results"].clone();
        for p in r.as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("seconds");
        }
        r
    };
    assert_eq!(points(&a).as_array().unwrap().len(), 6);
    assert_eq!(points(&a), points(&b));
}

/// `dynamics regularizers --print-config` fed back through `--config` runs the same settings
/// ("none" families are empty lists in the file).
#[test]
fn regularizers_print_config_fed_back_through_config_gives_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let base = [
        "dynamics",
        "regularizers",
        "--data",
        "digits",
        "--max-train",
        "200",
        "--valid-size",
        "100",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "20",
        "--dropout-rates",
        "0.5",
        "--input-dropout-rates",
        "none",
        "--input-noise-stds",
        "none",
        "--weight-decays",
        "0.01",
        "--adversarial-weights",
        "none",
    ];
    let never = d.path().join("never");
    let mut printed = base.to_vec();
    printed.extend(["--out", path(&never), "--print-config"]);
    let o = memaudit(&printed);
    assert_eq!(o.status.code(), Some(0));
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(toml.contains("input_noise_stds = []"), "{toml}");
    let file = d.path().join("reg.toml");
    std::fs::write(&file, &toml).unwrap();
    let (a_out, b_out) = (d.path().join("a"), d.path().join("b"));
    let mut direct = vec!["--json"];
    direct.extend(base);
    direct.extend(["--out", path(&a_out)]);
    let a = json_ok(&memaudit(&direct));
    let b = json_ok(&memaudit(&[
        "--json",
        "dynamics",
        "regularizers",
        "--config",
        path(&file),
        "--out",
        path(&b_out),
    ]));
    let points = |v: &Value| {
        let mut p = v["points"].clone();
        for x in p.as_array_mut().unwrap() {
            x.as_object_mut().unwrap().remove("seconds");
        }
        p
    };
    assert_eq!(points(&a).as_array().unwrap().len(), 3);
    assert_eq!(points(&a), points(&b));
}
