//! Every epsilon memaudit prints is the one the run's own sampling and history prove (issue: the
//! privacy core). Each test here failed before the trainer owned a privacy ledger. Embedded digits.

mod common;

use std::path::Path;

use common::{memaudit, ok_json, one_line_error};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn last_csv_value(path: &Path, column: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == column).unwrap();
    let last: Vec<&str> = lines.last().unwrap().split(',').collect();
    last[col].parse().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Item 1: a shuffled run's every epsilon (per-epoch lines, metrics.csv, run.json, --json, the
/// report) is the once-per-epoch guarantee; the Poisson figure appears only under its label.
#[test]
fn a_shuffled_run_reports_its_own_guarantee_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o");
    let args = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--noise-multiplier",
        "1",
        "--sampling",
        "shuffle",
        "--seed",
        "1",
        "--no-sanity-checks",
        "--json",
        "--out",
        s(&out),
    ];
    let r = memaudit(&args);
    let stderr = String::from_utf8_lossy(&r.stderr).to_string();
    let j = ok_json(&r);
    let eps = j["epsilon"].as_f64().unwrap();
    let once = j["privacy_statement"]["epsilon_once_per_epoch"]
        .as_f64()
        .unwrap();
    // Two epochs = two unamplified Gaussian releases at sigma 1, delta 1e-5: 7.077.
    assert!(
        close(eps, once) && (eps - 7.077).abs() < 1e-3,
        "{eps} vs {once}"
    );
    let poisson = j["epsilon_if_poisson"].as_f64().unwrap();
    assert!((poisson - 2.888).abs() < 1e-3, "{poisson}");
    assert!(close(
        last_csv_value(&out.join("metrics.csv"), "epsilon"),
        eps
    ));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(close(run["results"]["epsilon"].as_f64().unwrap(), eps));
    assert!(
        stderr.is_empty() || !stderr.contains("epsilon 2.888"),
        "{stderr}"
    );
    // The per-epoch lines (text mode, on stderr) show the guarantee too.
    let text_out = d.path().join("text");
    let mut a = args[..args.len() - 3].to_vec();
    a.extend(["--out", s(&text_out)]);
    let r = memaudit(&a);
    assert_eq!(r.status.code(), Some(0));
    let lines =
        String::from_utf8_lossy(&r.stderr).to_string() + &String::from_utf8_lossy(&r.stdout);
    assert!(
        lines.contains("epoch 2:") && lines.contains("epsilon 7.0774"),
        "{lines}"
    );
    assert!(!lines.contains("epsilon 2.888"), "{lines}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("7.0774"));
    assert!(html.contains("if Poisson (not proven)"));
}

/// Item 1: calibration and budget stops use the guarantee of the run's sampling.
#[test]
fn target_and_max_epsilon_hold_for_shuffled_runs() {
    let d = tempfile::tempdir().unwrap();
    let base = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--sampling",
        "shuffle",
        "--seed",
        "1",
        "--no-sanity-checks",
        "--json",
    ];
    let out = d.path().join("t");
    let mut a = base.to_vec();
    a.extend(["--epochs", "2", "--target-epsilon", "2", "--out", s(&out)]);
    let eps = ok_json(&memaudit(&a))["epsilon"].as_f64().unwrap();
    assert!(eps <= 2.0 && eps > 1.99, "target 2 reached {eps}");

    let out = d.path().join("m");
    let mut a = base.to_vec();
    a.extend([
        "--noise-multiplier",
        "2",
        "--epochs",
        "6",
        "--max-epsilon",
        "3",
        "--out",
        s(&out),
    ]);
    let j = ok_json(&memaudit(&a));
    let eps = j["epsilon"].as_f64().unwrap();
    assert!(eps <= 3.0, "budget 3 reached {eps}");
    assert_eq!(j["stop_reason"], "privacy_budget");

    let out = d.path().join("sweep");
    let r = memaudit(&[
        "dp-sweep",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--target-epsilon",
        "2",
        "--sampling",
        "shuffle",
        "--batch-sizes",
        "32,128",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--json",
        "--out",
        s(&out),
    ]);
    let j = ok_json(&r);
    let rows = j["results"].as_array().expect("results");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let e = row["epsilon"].as_f64().unwrap();
        assert!(e <= 2.0 && e > 1.99, "dp-sweep row {row}");
    }
}

fn checkpoint_bytes(run: &Path) -> Vec<u8> {
    let ck = run.join("checkpoints");
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    std::fs::read(ck.join(latest.trim()).join("model.safetensors")).unwrap()
}

/// Item 2: a `--seeded-noise` run stopped after each epoch and resumed ends with exactly the
/// parameters (and optimizer state) of the uninterrupted run; its noise never repeats.
#[test]
fn a_resumed_seeded_run_equals_the_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let c = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--batch-size",
        "64",
        "--noise-multiplier",
        "1000000",
        "--clip",
        "1e-6",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--seeded-noise",
        "--no-sanity-checks",
        "--quiet",
    ];
    let whole = d.path().join("whole");
    let mut a = c.to_vec();
    a.extend(["--epochs", "3", "--out", s(&whole)]);
    assert_eq!(memaudit(&a).status.code(), Some(0));
    let parts = d.path().join("parts");
    for (epochs, resume) in [("1", false), ("2", true), ("3", true)] {
        let mut a = c.to_vec();
        a.extend(["--epochs", epochs, "--out", s(&parts)]);
        if resume {
            a.push("--resume");
        }
        let r = memaudit(&a);
        assert_eq!(
            r.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    assert!(
        checkpoint_bytes(&whole) == checkpoint_bytes(&parts),
        "a resumed seeded run must equal the uninterrupted one"
    );
}

/// Item 3: the checkpoint sidecar is cross-checked, not believed.
#[test]
fn an_edited_sidecar_is_refused_on_resume() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let c = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--batch-size",
        "32",
        "--noise-multiplier",
        "1",
        "--seed",
        "2",
        "--no-sanity-checks",
        "--quiet",
    ];
    let mut a = c.to_vec();
    a.extend(["--epochs", "1", "--out", s(&out)]);
    assert_eq!(memaudit(&a).status.code(), Some(0));
    let ck = out.join("checkpoints");
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    let state = ck.join(latest.trim()).join("state.json");
    let original = std::fs::read_to_string(&state).unwrap();
    let resume = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        edit(&mut v);
        std::fs::write(&state, serde_json::to_string(&v).unwrap()).unwrap();
        let mut a = c.to_vec();
        a.extend(["--epochs", "2", "--out", s(&out), "--resume"]);
        memaudit(&a)
    };
    let fewer = one_line_error(&resume(&|v| {
        v["trainer"]["ledger"]["segments"][0]["steps"] = 1.into()
    }));
    assert!(fewer.contains("account for 1 private steps"), "{fewer}");
    let huge = one_line_error(&resume(&|v| {
        v["step"] = u64::MAX.into();
        v["trainer"]["ledger"]["segments"][0]["steps"] = u64::MAX.into();
    }));
    assert!(huge.contains("cannot make"), "{huge}");
}

/// A resume may change the noise multiplier; the run then reports the epsilon of the true
/// composition, which `memaudit epsilon --segment` and `--ledger` reproduce by hand.
#[test]
fn a_resume_with_new_noise_reports_the_composition() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let c = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--batch-size",
        "64",
        "--seed",
        "2",
        "--no-sanity-checks",
        "--quiet",
        "--json",
    ];
    let mut a = c.to_vec();
    a.extend(["--epochs", "1", "--noise-multiplier", "1", "--out", s(&out)]);
    ok_json(&memaudit(&a));
    let mut a = c.to_vec();
    a.extend([
        "--epochs",
        "3",
        "--noise-multiplier",
        "2",
        "--out",
        s(&out),
        "--resume",
    ]);
    let j = ok_json(&memaudit(&a));
    let eps = j["epsilon"].as_f64().unwrap();
    // digits: 1348 examples, batch 64: q = 64/1348, 22 steps per epoch.
    let q = format!("{}", 64.0 / 1348.0);
    let by_hand = ok_json(&memaudit(&[
        "epsilon",
        "--segment",
        &format!("{q},1,22"),
        "--segment",
        &format!("{q},2,44"),
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]));
    let hand = by_hand["results"][0]["epsilon"].as_f64().unwrap();
    assert!(close(eps, hand), "run {eps} vs by hand {hand}");
    let from_ledger = ok_json(&memaudit(&[
        "epsilon",
        "--ledger",
        s(&out.join("run.json")),
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]));
    assert!(close(
        from_ledger["results"][0]["epsilon"].as_f64().unwrap(),
        eps
    ));
}

/// Item 4: flags that would be silently ignored or counted differently.
#[test]
fn ignored_or_conflicting_privacy_flags_are_refused_and_step_counts_are_stated() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let base = [
        "train",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        s(&out),
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        one_line_error(&memaudit(&a))
    };
    let both = run(&[
        "--noise-multiplier",
        "1",
        "--clip",
        "2",
        "--clip-per-layer",
        "1,1",
    ]);
    assert!(
        both.contains("--clip") && both.contains("--clip-per-layer"),
        "{both}"
    );
    for flag in [
        &["--clip", "2"][..],
        &["--max-epsilon", "3"],
        &["--seeded-noise"],
    ] {
        let e = run(flag);
        assert!(e.contains(flag[0]) && e.contains("private"), "{e}");
    }
    assert!(!out.exists());
    let r = memaudit(&[
        "epsilon",
        "--dataset-size",
        "3000",
        "--batch-size",
        "32",
        "--epochs",
        "8",
        "--noise-multiplier",
        "1",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    let j = ok_json(&r);
    assert_eq!(j["steps"], 750);
    assert_eq!(j["steps_counted_as"], "ceil(epochs*N/B)");
    assert_eq!(j["train_steps"], 752);
    assert!((j["train_steps_epsilon_rdp"].as_f64().unwrap() - 2.0006).abs() < 1e-4);
}

/// Item 2 with a real kill: SIGKILL a `--seeded-noise` run as soon as its first checkpoint exists
/// (wherever it then is: mid-epoch, mid-write or already done), resume it, and compare the final
/// checkpoint with the uninterrupted run's, byte for byte.
#[test]
fn a_killed_and_resumed_seeded_run_equals_the_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let c = [
        "train",
        "--data",
        "digits",
        "--hidden",
        "64",
        "--batch-size",
        "16",
        "--epochs",
        "8",
        "--noise-multiplier",
        "1",
        "--lr",
        "0.05",
        "--seed",
        "5",
        "--seeded-noise",
        "--no-sanity-checks",
        "--quiet",
    ];
    let whole = d.path().join("whole");
    let mut a = c.to_vec();
    a.extend(["--out", s(&whole)]);
    assert_eq!(memaudit(&a).status.code(), Some(0));

    let killed = d.path().join("killed");
    let mut a = c.to_vec();
    a.extend(["--out", s(&killed)]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_memaudit"))
        .args(&a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints").join("latest");
    let t0 = std::time::Instant::now();
    while !latest.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().ok();
    child.wait().unwrap();
    assert!(latest.exists(), "no checkpoint within 120 s");
    let mut a = c.to_vec();
    a.extend(["--out", s(&killed), "--resume"]);
    let r = memaudit(&a);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(checkpoint_bytes(&whole) == checkpoint_bytes(&killed));
}
