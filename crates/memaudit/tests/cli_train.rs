//! `memaudit train` from the outside: privacy flags, bad input (exit code 2, one line naming the
//! flag, nothing overwritten), resume. Uses the embedded 8x8 digits: no fetch needed.

use std::path::Path;
use std::process::Command;

fn memaudit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memaudit"))
        .args(args)
        .output()
        .expect("run memaudit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn train(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = out.to_str().unwrap();
    let mut a = vec![
        "train",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--quiet",
        "--out",
        o,
    ];
    a.extend_from_slice(extra);
    memaudit(&a)
}

fn assert_usage_error(r: &(i32, String, String), needle: &str) {
    assert_eq!(r.0, 2, "exit code for {needle}: stderr {}", r.2);
    let line = r.2.trim();
    assert!(
        line.starts_with("error: ") && !line.contains('\n'),
        "one-line error expected, got {line:?}"
    );
    assert!(line.contains(needle), "error should name {needle}: {line}");
}

#[test]
fn private_training_reports_epsilon_and_the_statement() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = out.to_str().unwrap();
    let (code, stdout, _) = memaudit(&[
        "train",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--quiet",
        "--out",
        o,
        "--noise-multiplier",
        "1.1",
        "--clip",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["private"], true);
    assert_eq!(v["sampling"], "poisson");
    // 2 epochs of ceil(1348 / 64) = 22 Poisson steps, q = 64/1348, sigma 1.1, delta 1e-5. The
    // statement must count the 44 steps run, not TF Privacy's ceil(2 * 1348 / 64) = 43.
    let want = memaudit_engine::privacy::epsilon(
        64.0 / 1348.0,
        1.1,
        44,
        1e-5,
        memaudit_engine::privacy::AccountantKind::Rdp,
    )
    .unwrap();
    assert_eq!(v["steps"], 44);
    assert!((v["epsilon"].as_f64().unwrap() - want).abs() < 1e-9);
    assert_eq!(v["privacy_statement"]["poisson_steps"], 44);
    assert!((v["privacy_statement"]["epsilon_poisson"].as_f64().unwrap() - want).abs() < 1e-9);
    assert!(
        v["privacy_statement"]["epsilon_once_per_epoch"]
            .as_f64()
            .unwrap()
            > want
    );
    assert!(out.join("report.html").exists() && out.join("metrics.csv").exists());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(run["sanity_checks"]["clipped_fraction"].is_number());
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("Privacy statement") && report.contains("Poisson"));
}

#[test]
fn zero_noise_reports_infinite_epsilon() {
    let d = tempfile::tempdir().unwrap();
    let (code, stdout, _) = train(&d.path().join("r"), &["--noise-multiplier", "0", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["epsilon"], "inf");
}

#[test]
fn bad_privacy_flags_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "1", "--clip", "0"]),
        "--clip",
    );
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "1", "--clip", "-1"]),
        "--clip",
    );
    assert_usage_error(
        &train(&out, &["--noise-multiplier=-0.5"]),
        "--noise-multiplier",
    );
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "nan"]),
        "--noise-multiplier",
    );
    assert_usage_error(
        &train(&out, &["--target-epsilon", "2", "--delta", "1.5"]),
        "--delta",
    );
    assert_usage_error(
        &train(&out, &["--target-epsilon", "2", "--delta", "0"]),
        "--delta",
    );
    assert_usage_error(&train(&out, &["--batch-size", "5000"]), "--batch-size");
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "1", "--sampling", "random"]),
        "--sampling",
    );
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "1", "--accountant", "gdp"]),
        "--accountant",
    );
    assert_usage_error(
        &train(&out, &["--noise-multiplier", "1", "--target-epsilon", "2"]),
        "--target-epsilon",
    );
    assert!(!out.exists(), "refused runs must not create the run folder");
}

#[test]
fn a_resumed_run_with_different_privacy_parameters_is_refused_and_nothing_is_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    assert_eq!(train(&out, &["--noise-multiplier", "1.1"]).0, 0);
    let before: Vec<(String, Vec<u8>)> = snapshot(&out);
    // The clip bound defines the mechanism: a resume may not change it (the noise multiplier, batch
    // size and epochs it may: see cli_privacy_core.rs).
    let r = train(
        &out,
        &["--noise-multiplier", "1.1", "--clip", "2", "--resume"],
    );
    assert_usage_error(&r, "--out");
    assert_eq!(
        snapshot(&out),
        before,
        "the refused resume changed the run folder"
    );
    // Without --resume or --force a run folder is never reused.
    assert_usage_error(&train(&out, &["--noise-multiplier", "1.1"]), "--resume");
    // The same settings with more epochs resume.
    let o = out.to_str().unwrap();
    let (code, _, err) = memaudit(&[
        "train",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--out",
        o,
        "--noise-multiplier",
        "1.1",
        "--resume",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from"), "{err}");
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                v.push((e.display().to_string(), std::fs::read(&e).unwrap()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn standardised_inputs_are_recorded_and_eval_uses_them() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let (code, stdout, _) = train(&out, &["--standardize", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let (code, stdout, _) = memaudit(&["eval", "--run", out.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let e: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // eval must rebuild the same standardised inputs, so it sees the same validation loss.
    let (a, b) = (
        v["valid_loss"].as_f64().unwrap(),
        e["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "train {a} vs eval {b}");
}
