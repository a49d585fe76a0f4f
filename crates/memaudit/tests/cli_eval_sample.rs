//! `memaudit eval` and `memaudit sample` on `memaudit_experiments::{eval, sample}` (issue 13):
//! `--print-config` fed back with `--config` gives the same result, flags given with `--config`
//! override the file, and the flags' defaults are the library config's.

mod common;

use std::path::Path;

use common::{TINY_SECRET_SHARER, memaudit, ok_json, one_line_error};
use memaudit_experiments::sample::SampleConfig;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A one-epoch secret-sharer run: a character LSTM with a tokenizer (seconds).
fn tiny_lm(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("ss");
    let mut a = TINY_SECRET_SHARER.to_vec();
    a.extend(["--epochs", "1", "--seed", "5", "--extract-budget", "0"]);
    a.extend(["--out", s(&run)]);
    let out = memaudit(&a);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// `args` (less `--json`, which would print the config as JSON) with `--print-config`: the TOML
/// written to `dir/name`.
fn print_config(args: &[&str], dir: &Path, name: &str) -> std::path::PathBuf {
    let mut a: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    a.push("--print-config");
    let out = memaudit(&a);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn eval_and_sample_print_config_fed_back_give_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let run = tiny_lm(d.path());

    let eval = [
        "--quiet",
        "--json",
        "eval",
        "--run",
        s(&run),
        "--train-split",
    ];
    let file = print_config(&eval, d.path(), "eval.toml");
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "eval",
        "--config",
        s(&file),
    ]));
    assert_eq!(from_file, ok_json(&memaudit(&eval)));
    assert_eq!(from_file["split"], "train", "{from_file}");
    // A language model: perplexity and bits per token besides loss and accuracy.
    for key in [
        "loss",
        "accuracy",
        "perplexity",
        "bits_per_token",
        "examples",
        "step",
    ] {
        assert!(from_file.get(key).is_some(), "{key}: {from_file}");
    }

    let sample = [
        "--quiet",
        "--json",
        "sample",
        "--run",
        s(&run),
        "--seed",
        "7",
        "--length",
        "20",
        "--count",
        "2",
        "--prefix",
        "the ",
    ];
    let file = print_config(&sample, d.path(), "sample.toml");
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "sample",
        "--config",
        s(&file),
    ]));
    assert_eq!(from_file, ok_json(&memaudit(&sample)));
    assert_eq!(from_file["samples"].as_array().unwrap().len(), 2);
    // A flag given with --config overrides the file; the rest comes from the file.
    let shorter = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "sample",
        "--config",
        s(&file),
        "--length",
        "5",
    ]));
    assert_eq!(shorter["length"], 5);
    assert_eq!(shorter["seed"], 7);
    assert_eq!(shorter["prefix"], "the ");

    // Out of range in the file: the error names the file's key, not the flag.
    std::fs::write(
        d.path().join("bad.toml"),
        format!("run = {:?}\ntemperature = -1.0\n", s(&run)),
    )
    .unwrap();
    let bad = d.path().join("bad.toml");
    let e = one_line_error(&memaudit(&["sample", "--config", s(&bad)]));
    assert!(e.contains("key `temperature`"), "{e}");
    let e = one_line_error(&memaudit(&[
        "sample",
        "--run",
        s(&run),
        "--temperature",
        "-1",
    ]));
    assert!(e.contains("--temperature -1"), "{e}");
}

#[test]
fn sample_flag_defaults_are_the_library_configs() {
    let out = memaudit(&["--json", "sample", "--run", "some/run", "--print-config"]);
    let printed = ok_json(&out);
    let library = serde_json::to_value(SampleConfig {
        run: "some/run".into(),
        ..SampleConfig::default()
    })
    .unwrap();
    assert_eq!(printed, library);
}
