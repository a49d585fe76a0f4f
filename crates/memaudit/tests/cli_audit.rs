//! The white-box audit a DP-SGD run carries (`train --white-box-canaries M`): on a correct run every
//! bound stays at or below the claimed epsilon; on a deliberately broken run (noise scaled by 0.1
//! while the accountant keeps the stated multiplier: the audit's self-test) the audit refutes the
//! claim and every output says the guarantee is void. Embedded digits, well under a minute.

mod common;

use common::{memaudit, memaudit_env, ok_json, one_line_error};

fn args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--data",
        "digits",
        "--target-epsilon",
        "2",
        "--epochs",
        "10",
        "--batch-size",
        "64",
        "--lr",
        "0.5",
        "--seed",
        "1",
        "--white-box-canaries",
        "1000",
        "--no-sanity-checks",
        "--quiet",
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

fn bounds(audit: &serde_json::Value) -> Vec<(String, f64)> {
    audit["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["epsilon_lower_bound"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_correct_run_passes_its_own_audit() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ok");
    let j = ok_json(&memaudit(&args(out.to_str().unwrap(), &["--json"])));
    let a = &j["white_box_audit"];
    let claimed = j["epsilon"].as_f64().unwrap();
    assert!((claimed - 2.0).abs() < 1e-3);
    assert_eq!(a["canaries"], 1000);
    assert_eq!(a["refuted"], false);
    // The sanity law of an audit: no bound on a correct DP run exceeds its epsilon.
    for (m, b) in bounds(a) {
        assert!(b <= claimed, "{m}: {b} > claimed {claimed}");
    }
    assert!(j["fault_injected"].is_null());
}

#[test]
fn the_self_test_trips_on_a_broken_run_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("broken");
    let o = out.to_str().unwrap();
    // Never by accident: the flag is refused without the environment variable.
    let refused = one_line_error(&memaudit(&args(o, &["--fault-noise-scale", "0.1"])));
    assert!(
        refused.contains("MEMAUDIT_ALLOW_FAULT_INJECTION"),
        "{refused}"
    );
    assert!(!out.exists());
    let r = memaudit_env(
        &args(o, &["--fault-noise-scale", "0.1", "--json"]),
        &[("MEMAUDIT_ALLOW_FAULT_INJECTION", "1")],
    );
    let j = ok_json(&r);
    let a = &j["white_box_audit"];
    let claimed = j["epsilon"].as_f64().unwrap();
    // With the noise at a tenth, included canaries separate almost perfectly: observed
    // Clopper-Pearson 4.07 and one-run 3.77 against the claimed 2.
    assert_eq!(a["refuted"], true, "{a}");
    assert!(a["verdict_bound"].as_f64().unwrap() > claimed, "{a}");
    assert!(j["fault_injected"].as_str().unwrap().contains("VOID"));
    // The text output says it at its top and bottom.
    let text_out = d.path().join("broken-text");
    let r = memaudit_env(
        &args(text_out.to_str().unwrap(), &["--fault-noise-scale", "0.1"]),
        &[("MEMAUDIT_ALLOW_FAULT_INJECTION", "1")],
    );
    let stdout = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        stdout.starts_with("!!! FAULT INJECTED") && stdout.contains("REFUTED"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("FAULT INJECTED") && html.contains("REFUTED"));
}

#[test]
fn audit_flags_that_cannot_work_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let o = out.to_str().unwrap();
    let run = |a: &[&str]| one_line_error(&memaudit(a));
    let plain = run(&[
        "train",
        "--data",
        "digits",
        "--white-box-canaries",
        "10",
        "--out",
        o,
    ]);
    assert!(
        plain.contains("--white-box-canaries") && plain.contains("private"),
        "{plain}"
    );
    let shuffled = run(&[
        "train",
        "--data",
        "digits",
        "--noise-multiplier",
        "1",
        "--sampling",
        "shuffle",
        "--white-box-canaries",
        "10",
        "--out",
        o,
    ]);
    assert!(shuffled.contains("Poisson"), "{shuffled}");
    let too_many = run(&[
        "train",
        "--data",
        "digits",
        "--noise-multiplier",
        "1",
        "--white-box-canaries",
        "100000000",
        "--out",
        o,
    ]);
    assert!(too_many.contains("parameters"), "{too_many}");
    assert!(!out.exists());
}
