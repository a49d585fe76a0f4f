//! `--print-config` and `--config` of the commands migrated in issue 13 phase 2a (train,
//! secret-sharer, exposure, extract, dp-sweep): the effective configuration a command line
//! prints, fed back with `--config`, runs the same experiment and gives the same result; flags
//! given with `--config` override the file.

mod common;

use std::path::Path;

use common::{TINY_SECRET_SHARER, memaudit, ok_json, one_line_error};
use serde_json::Value;

/// The printed configuration (TOML on stdout; with `--json`, it would be the config as JSON),
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

/// A result without the keys that name its run folder.
fn without_paths(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("run");
        m.remove("report");
    }
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TRAIN: &[&str] = &[
    "--quiet",
    "--json",
    "train",
    "--data",
    "digits",
    "--hidden",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--max-train",
    "400",
    "--noise-multiplier",
    "1.0",
    // The DP noise is drawn from the OS unless seeded: seeded, two runs are the same.
    "--seeded-noise",
    "--seed",
    "3",
];

#[test]
fn train_print_config_fed_back_gives_the_same_run_and_flags_override_it() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let mut printed = TRAIN.to_vec();
    printed.extend(["--out", s(&a)]);
    let file = print_config(&printed, d.path(), "train.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("noise_multiplier = 1.0"), "{text}");
    assert!(!a.exists(), "--print-config runs nothing");

    // The file alone (its run folder included) runs the experiment of the flags.
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "train",
        "--config",
        s(&file),
    ]));
    assert_eq!(from_file["run"], s(&a));
    let mut direct = TRAIN.to_vec();
    direct.extend(["--out", s(&b)]);
    let from_flags = ok_json(&memaudit(&direct));
    assert_eq!(without_paths(from_file), without_paths(from_flags.clone()));

    // A flag given with --config wins over the file.
    let two = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "train",
        "--config",
        s(&file),
        "--epochs",
        "2",
        "--out",
        s(&c),
    ]));
    assert_eq!(two["epochs"], 2);
    assert_eq!(from_flags["epochs"], 1);

    // A bad value in the file is one line naming the file and the key.
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("noise_multiplier = 1.0", "noise_multiplier = -1.0"),
    )
    .unwrap();
    let e = one_line_error(&memaudit(&["train", "--config", s(&bad)]));
    assert!(
        e.contains("bad.toml") && e.contains("noise_multiplier"),
        "{e}"
    );
}

#[test]
fn secret_sharer_print_config_fed_back_gives_the_same_run() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let mut flags = TINY_SECRET_SHARER.to_vec();
    flags.extend(["--epochs", "1", "--seed", "4", "--extract-budget", "500"]);
    flags.insert(0, "--json");
    let mut printed = flags.clone();
    printed.extend(["--out", s(&a)]);
    let file = print_config(&printed, d.path(), "ss.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("template = \"my pin is {digits:3}\""),
        "{text}"
    );

    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "secret-sharer",
        "--config",
        s(&file),
    ]));
    let mut direct = flags.clone();
    direct.extend(["--out", s(&b)]);
    let from_flags = ok_json(&memaudit(&direct));
    assert_eq!(from_file["canaries"].as_array().unwrap().len(), 9);
    assert_eq!(without_paths(from_file), without_paths(from_flags));
}

/// A tiny secret-sharer run for the commands that read one.
fn tiny_run(dir: &Path) -> std::path::PathBuf {
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

/// A result without its wall times (they differ between two runs of the same measurement).
fn without_seconds(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("seconds");
    }
    v
}

#[test]
fn exposure_and_extract_print_config_fed_back_give_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let run = tiny_run(d.path());
    let exposure = [
        "--quiet",
        "--json",
        "exposure",
        "--run",
        s(&run),
        "--references",
        "200",
        "--reference-seed",
        "3",
    ];
    let file = print_config(&exposure, d.path(), "exposure.toml");
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "exposure",
        "--config",
        s(&file),
    ]));
    let from_flags = ok_json(&memaudit(&exposure));
    assert_eq!(from_file["references"], 200);
    assert_eq!(without_seconds(from_file), without_seconds(from_flags));

    let extract = [
        "--quiet",
        "--json",
        "extract",
        "--run",
        s(&run),
        "--top",
        "3",
        "--budget",
        "300",
    ];
    let file = print_config(&extract, d.path(), "extract.toml");
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "extract",
        "--config",
        s(&file),
    ]));
    let from_flags = ok_json(&memaudit(&extract));
    assert_eq!(from_file["candidates"].as_array().unwrap().len(), 3);
    assert_eq!(without_seconds(from_file), without_seconds(from_flags));
}

#[test]
fn dp_sweep_print_config_fed_back_gives_the_same_sweep() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let flags = [
        "--quiet",
        "--json",
        "dp-sweep",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--max-train",
        "300",
        "--target-epsilon",
        "2",
        "--batch-sizes",
        "32,64",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--seeded-noise",
    ];
    let mut printed = flags.to_vec();
    printed.extend(["--out", s(&a)]);
    let file = print_config(&printed, d.path(), "sweep.toml");
    let from_file = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "dp-sweep",
        "--config",
        s(&file),
    ]));
    let mut direct = flags.to_vec();
    direct.extend(["--out", s(&b)]);
    let from_flags = ok_json(&memaudit(&direct));
    let rows = |v: &Value| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["batch_size"].clone(),
                    r["test_accuracy"].clone(),
                    r["epsilon"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&from_file).len(), 2);
    assert_eq!(rows(&from_file), rows(&from_flags));
}

/// `--corpus` given with `--config` overrides the file's `data.data`, and `--print-config` shows
/// the override (it used to be applied after printing, so the printout kept the file's corpus).
#[test]
fn corpus_over_a_config_file_shows_in_the_printed_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let file = print_config(
        &[
            "secret-sharer",
            "--out",
            s(&out),
            "--canary",
            "my pin is {digits:3}",
        ],
        dir.path(),
        "ss.toml",
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("data = \"embedded\"")
    );
    let printed = memaudit(&[
        "secret-sharer",
        "--config",
        s(&file),
        "--corpus",
        "moby-dick",
        "--print-config",
    ]);
    assert_eq!(printed.status.code(), Some(0));
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("data = \"moby-dick\""), "{text}");
}
