//! Bad and unbounded input from the outside (issue 14, items 8-13): each case used to crash,
//! hang, run for minutes, be silently capped or print an unhelpful line. Every one must now exit
//! 2 with one line naming the flag (and, with --json, one JSON object), before any work starts.
//! Uses the embedded 8x8 digits: no fetch needed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{memaudit, ok_json, one_line_error};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One-line error that contains every needle; with --json, one JSON object holding the error.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let line = one_line_error(&memaudit(args));
    for n in needles {
        assert!(
            line.contains(n),
            "{args:?}: error should mention {n:?}: {line}"
        );
    }
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let out = memaudit(&with_json);
    assert_eq!(out.status.code(), Some(2), "{with_json:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json: one JSON object on stdout");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    line
}

#[test]
fn downscale_zero_is_refused_not_a_division_by_zero() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("s");
    refused(
        &[
            "dynamics",
            "sensitivity",
            "--data",
            "digits",
            "--downscale",
            "0",
            "--out",
            path(&out),
        ],
        &["--downscale", "at least 1"],
    );
}

#[test]
fn a_model_too_large_for_memory_is_refused_with_the_estimate_and_no_run_left_running() {
    // MLP 64 -> 1e11 -> 10 on the digits: 7.5e12 parameters, at least 2 x 30 TB to train (no
    // machine has that, so the test never allocates; the issue's --hidden 100000000 needs
    // 55.88 GiB, more than the development machine has but not more than every machine).
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("huge");
    let line = refused(
        &[
            "train",
            "--data",
            "digits",
            "--hidden",
            "100000000000",
            "--out",
            path(&out),
        ],
        &[
            "model flags",
            "7500000000010 parameters",
            "GiB",
            "available",
        ],
    );
    assert!(line.contains("55879.35 GiB"), "the estimate: {line}");
    // Refused before the run folder is written: nothing claims to be running.
    let rj = out.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&rj) {
        assert!(!text.contains("\"running\""), "{text}");
    }
}

#[test]
fn a_sample_too_long_for_memory_is_refused_with_the_estimate() {
    // The length is checked before the run folder is read: no model needed.
    let d = tempfile::tempdir().unwrap();
    refused(
        &[
            "sample",
            "--run",
            path(d.path()),
            "--length",
            "100000000000",
        ],
        &["--length 100000000000", "GiB", "available"],
    );
}

#[test]
fn thread_counts_far_above_the_cores_are_refused() {
    let eps = [
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
        "--noise-multiplier",
        "1",
        "--delta",
        "1e-5",
    ];
    let mut args = vec!["--threads", "100000"];
    args.extend_from_slice(&eps);
    refused(&args, &["--threads 100000", "at most"]);
    // Up to 4x the cores is accepted (4 is within that on any machine).
    let mut args = vec!["--json", "--threads", "4"];
    args.extend_from_slice(&eps);
    ok_json(&memaudit(&args));
}

#[test]
fn step_schedule_needs_a_positive_gamma_and_period() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("g");
    let base = [
        "train",
        "--data",
        "digits",
        "--schedule",
        "step",
        "--out",
        path(&o),
    ];
    let with = |extra: &[&'static str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    refused(&with(&["--gamma", "-0.1"]), &["--gamma -0.1", "> 0"]);
    refused(&with(&["--gamma", "0"]), &["--gamma 0"]);
    refused(
        &with(&["--step-every", "0"]),
        &["--step-every 0", "at least 1"],
    );
    assert!(
        !o.join("run.json").exists(),
        "refused before the run folder"
    );
}

#[test]
fn dynamics_sizes_and_tolerances_are_checked_not_capped() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("c");
    refused(
        &[
            "dynamics",
            "capacity",
            "--data",
            "digits",
            "--train-sizes",
            "100,100000",
            "--out",
            path(&o),
        ],
        &["--train-sizes 100000", "1348"],
    );
    refused(
        &[
            "dynamics",
            "regularizers",
            "--data",
            "digits",
            "--tolerance",
            "-1",
            "--out",
            path(&o),
        ],
        &["--tolerance -1", "[0, 1]"],
    );
    refused(
        &[
            "dynamics",
            "curves",
            "--data",
            "digits",
            "--csr-size",
            "0",
            "--out",
            path(&o),
        ],
        &["--csr-size 0"],
    );
    refused(
        &[
            "dynamics",
            "csr",
            "--run",
            path(d.path()),
            "--csr-size",
            "0",
        ],
        &["--csr-size 0"],
    );
}

#[test]
fn missing_required_flags_are_named() {
    refused(&["epsilon"], &["--delta", "--noise-multiplier"]);
    refused(&["train", "--data", "digits"], &["--out"]);
    let line = refused(&["noise", "--delta", "1e-5"], &["--target-epsilon"]);
    assert!(!line.contains("provided: (see"), "an empty list: {line}");
}

/// Overwrite every f32 of a safetensors file (8-byte header length, JSON header, data) with NaN.
fn poison_safetensors(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for chunk in bytes[8 + header..].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn eval_of_a_checkpoint_with_nan_weights_fails_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    ok_json(&memaudit(&[
        "--json",
        "--quiet",
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--out",
        path(&run),
    ]));
    let ck = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.safetensors").exists())
        .expect("a checkpoint");
    poison_safetensors(&ck.join("model.safetensors"));
    refused(
        &["eval", "--run", path(&run)],
        &["--run", "non-finite weights", "fc1"],
    );
}

#[test]
fn rdp_order_one_alone_explains_the_infinite_epsilon() {
    let v = ok_json(&memaudit(&[
        "--json",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
        "--noise-multiplier",
        "1",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--orders",
        "1",
    ]));
    assert_eq!(v["results"][0]["epsilon"], "inf");
    let w = v["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("order") && w.contains("a - 1"), "{v}");
}

#[test]
fn huge_noise_multipliers_print_in_scientific_notation() {
    let out = memaudit(&[
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
        "--noise-multiplier",
        "1e300",
        "--delta",
        "1e-5",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("noise multiplier 1e300"), "{text}");
    let out = memaudit(&[
        "statement",
        "--dataset-size",
        "60000",
        "--batch-size",
        "256",
        "--epochs",
        "1",
        "--noise-multiplier",
        "1e300",
        "--delta",
        "1e-5",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("noise multiplier 1e300"), "{text}");
    assert!(!text.contains("0000000000"), "{text}");
}

#[test]
fn calibrating_for_a_huge_target_epsilon_is_quick() {
    // Used to take 46-50 s (13 PLD evaluations at the edge of what the PLD can hold); now 5
    // evaluations, about 8 s of CPU at most. The limit is loose because the test machine is
    // shared; it still fails the old behaviour by 2x.
    let t = Instant::now();
    let v = ok_json(&memaudit(&[
        "--json",
        "noise",
        "--target-epsilon",
        "1e300",
        "--sampling-rate",
        "0.01",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ]));
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    for r in v["results"].as_array().unwrap() {
        assert!(
            r["noise_multiplier"].as_f64().is_some_and(|s| s > 0.0),
            "{v}"
        );
    }
}

/// Issue 14 item 6: a run that stopped before its first checkpoint cannot be resumed, and the
/// message says why and that --force starts it again.
#[test]
fn resuming_a_run_without_a_checkpoint_says_to_use_force() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let o = out.to_str().unwrap();
    let a = [
        "train", "--data", "digits", "--epochs", "1", "--hidden", "8", "--seed", "1", "--quiet",
        "--out", o,
    ];
    assert_eq!(memaudit(&a).status.code(), Some(0));
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    let mut r = a.to_vec();
    r.push("--resume");
    let e = one_line_error(&memaudit(&r));
    assert!(
        e.contains("before its first checkpoint") && e.contains("--force"),
        "{e}"
    );
}
