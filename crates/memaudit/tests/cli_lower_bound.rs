//! `memaudit lower-bound`: the JSON contract (key names, shape), golden values through the
//! command, the score-file formats and direction, and one-line errors with exit code 2.

mod common;

use std::path::{Path, PathBuf};

use common::{memaudit, ok_json, one_line_error};
use memaudit_accounting::special::norm_ppf_from_log;
use serde_json::Value;

/// Phi^-1(p), both tails.
fn norm_ppf(p: f64) -> f64 {
    if p > 0.5 {
        -norm_ppf_from_log((-p).ln_1p())
    } else {
        norm_ppf_from_log(p.ln())
    }
}

/// JAX Privacy's deterministic normals: Phi^-1((i + 1/2)/n) + shift.
fn normals(n: usize, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|i| norm_ppf((i as f64 + 0.5) / n as f64) + shift)
        .collect()
}

fn write_text(dir: &Path, name: &str, v: &[f64]) -> PathBuf {
    let p = dir.join(name);
    // {:?} prints the shortest string that reads back to the same f64.
    let text: String = v.iter().map(|x| format!("{x:?}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// A NumPy 1.0-format .npy holding a little-endian float64 vector.
fn write_npy(dir: &Path, name: &str, v: &[f64]) -> PathBuf {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
        v.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for x in v {
        bytes.extend(x.to_le_bytes());
    }
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run_json(ins: &Path, outs: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "lower-bound",
        "--in-scores",
        ins.to_str().unwrap(),
        "--out-scores",
        outs.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    ok_json(&memaudit(&args))
}

fn result<'a>(v: &'a Value, method: &str) -> &'a Value {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method)
        .unwrap_or_else(|| panic!("no {method} in {v}"))
}

fn eps(v: &Value, method: &str) -> f64 {
    result(v, method)["epsilon_lower_bound"].as_f64().unwrap()
}

/// No key named "epsilon" anywhere: a lower bound must not be mistaken for an accountant's figure.
fn assert_no_epsilon_key(v: &Value) {
    match v {
        Value::Object(m) => {
            assert!(!m.contains_key("epsilon"), "key 'epsilon' in {v}");
            m.values().for_each(assert_no_epsilon_key);
        }
        Value::Array(a) => a.iter().for_each(assert_no_epsilon_key),
        _ => {}
    }
}

#[test]
fn json_shape_and_jax_privacy_golden_values_through_the_command() {
    // mu = 1 deterministic normals at delta 1e-6 (JAX Privacy's test): one-run 1.13346, f-DP
    // 2.164749; tolerance 2e-6 (their brentq's xtol 1e-6 and printed digits).
    let dir = tempfile::tempdir().unwrap();
    let ins = write_text(dir.path(), "in.txt", &normals(10_000, 1.0));
    let outs = write_text(dir.path(), "out.txt", &normals(10_000, 0.0));
    let v = run_json(&ins, &outs, &["--delta", "1e-6"]);
    assert_no_epsilon_key(&v);
    assert_eq!(v["m"], 20_000);
    assert_eq!(v["delta"].as_f64(), Some(1e-6));
    assert_eq!(v["significance"].as_f64(), Some(0.05));
    assert!(v["warnings"].is_array());
    let methods: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["clopper-pearson", "gdp", "one-run", "one-run-fdp"]
    );
    for r in v["results"].as_array().unwrap() {
        assert!(r["epsilon_lower_bound"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["threshold"].is_f64(), "{r}");
        let gaussian = matches!(r["method"].as_str(), Some("gdp" | "one-run-fdp"));
        assert_eq!(r["assumes_gaussian_tradeoff"], gaussian, "{r}");
    }
    assert!((eps(&v, "one-run") - 1.13346).abs() < 2e-6, "{v}");
    assert!((eps(&v, "one-run-fdp") - 2.164749).abs() < 2e-6, "{v}");
    // A one-run result states m, delta and 2 m delta; 0.04 > 0.01 warns.
    let one = result(&v, "one-run");
    assert_eq!(one["m"], 20_000);
    assert!((one["two_m_delta"].as_f64().unwrap() - 0.04).abs() < 1e-15);
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("2*m*delta = 0.04")),
        "{v}"
    );
}

#[test]
fn clopper_pearson_jagielski_and_bonferroni_vectors_and_npy_input() {
    // 500 IN scores 1, 500 OUT 0, alpha 0.01: two-sided at threshold 0.5 -> 4.541915810224092
    // (tolerance 1e-12: closed form, bisection error ~1e-13); every frontier threshold with
    // Bonferroni, one-sided -> 4.352386 (7 printed digits, tolerance 5e-7).
    let dir = tempfile::tempdir().unwrap();
    let ins = write_npy(dir.path(), "in.npy", &[1.0; 500]);
    let outs = write_text(dir.path(), "out.txt", &[0.0; 500]);
    let common = ["--method", "clopper-pearson", "--significance", "0.01"];
    let mut args = common.to_vec();
    args.extend(["--threshold", "0.5", "--two-sided"]);
    let v = run_json(&ins, &outs, &args);
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert!(
        (eps(&v, "clopper-pearson") - 4.541915810224092).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(
        result(&v, "clopper-pearson")["threshold"].as_f64(),
        Some(0.5)
    );
    let v = run_json(&ins, &outs, &common);
    assert!((eps(&v, "clopper-pearson") - 4.352386).abs() < 5e-7, "{v}");
    assert_eq!(result(&v, "clopper-pearson")["thresholds_tested"], 3);
}

#[test]
fn lower_is_member_matches_negated_scores_and_reports_thresholds_in_loss_units() {
    let dir = tempfile::tempdir().unwrap();
    let member = normals(2_000, 1.5);
    let non = normals(2_000, 0.0);
    let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<_>>();
    let ins = write_text(dir.path(), "in.txt", &member);
    let outs = write_text(dir.path(), "out.txt", &non);
    let loss_in = write_text(dir.path(), "loss_in.txt", &neg(&member));
    let loss_out = write_text(dir.path(), "loss_out.txt", &neg(&non));
    let a = run_json(&ins, &outs, &["--delta", "1e-5"]);
    let b = run_json(
        &loss_in,
        &loss_out,
        &["--delta", "1e-5", "--lower-is-member"],
    );
    for m in ["clopper-pearson", "gdp", "one-run", "one-run-fdp"] {
        assert_eq!(eps(&a, m), eps(&b, m), "{m}");
        let ta = result(&a, m)["threshold"].as_f64().unwrap();
        let tb = result(&b, m)["threshold"].as_f64().unwrap();
        assert_eq!(ta, -tb, "{m}");
    }
    assert_eq!(b["score_direction"], "lower-is-member");
    // The losses read as higher-is-member look reversed: a warning, and nothing certified.
    let c = run_json(&loss_in, &loss_out, &["--delta", "1e-5"]);
    let warnings = c["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("look reversed")),
        "{c}"
    );
    assert_eq!(eps(&c, "one-run"), 0.0);
    assert_eq!(result(&c, "one-run")["threshold"], Value::Null);
}

#[test]
fn delta_zero_skips_the_gaussian_methods_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ins = write_text(dir.path(), "in.txt", &[1.0; 100]);
    let outs = write_text(dir.path(), "out.txt", &[0.0; 100]);
    let v = run_json(&ins, &outs, &[]);
    let methods: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["clopper-pearson", "one-run"]);
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(warnings.iter().any(|w| w.starts_with("gdp skipped")), "{v}");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("one-run-fdp skipped")),
        "{v}"
    );
    // Text output: a table with every method and the one-run line's m, delta, 2*m*delta.
    let out = memaudit(&[
        "lower-bound",
        "--in-scores",
        ins.to_str().unwrap(),
        "--out-scores",
        outs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("clopper-pearson") && text.contains("2*m*delta = 0"),
        "{text}"
    );
}

#[test]
fn bad_inputs_get_one_line_errors_naming_the_file_line_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write_text(d, "good.txt", &[0.1, 0.2, 0.3]);
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "nan.txt",
            "0.5\n0.25\nNaN\n",
            &["nan.txt, line 3", "not finite"],
        ),
        ("inf.txt", "inf\n", &["inf.txt, line 1", "not finite"]),
        ("empty.txt", "\n  \n", &["empty.txt", "no scores"]),
        (
            "words.txt",
            "0.5\nhello\n",
            &["words.txt, line 2", "not a number"],
        ),
        (
            "csv.txt",
            "0.5,0.25\n",
            &["csv.txt, line 1", "not a number"],
        ),
    ];
    for (name, content, wanted) in cases {
        let p = d.join(name);
        std::fs::write(&p, content).unwrap();
        let out = memaudit(&[
            "lower-bound",
            "--in-scores",
            p.to_str().unwrap(),
            "--out-scores",
            good.to_str().unwrap(),
        ]);
        let line = one_line_error(&out);
        assert!(line.contains("--in-scores"), "{line}");
        for w in wanted {
            assert!(line.contains(w), "{name}: {line}");
        }
    }
    let npy_nan = write_npy(d, "nan.npy", &[0.5, f64::NAN]);
    let out = memaudit(&[
        "lower-bound",
        "--in-scores",
        good.to_str().unwrap(),
        "--out-scores",
        npy_nan.to_str().unwrap(),
    ]);
    let line = one_line_error(&out);
    assert!(
        line.contains("--out-scores") && line.contains("element 1"),
        "{line}"
    );

    let g = good.to_str().unwrap();
    let flag_cases: [(&[&str], &str); 9] = [
        (
            &["--significance", "0"],
            "--significance must be in (0, 0.5]",
        ),
        (
            &["--significance", "0.6"],
            "--significance must be in (0, 0.5]",
        ),
        (
            &["--significance", "-0.1"],
            "--significance must be in (0, 0.5]",
        ),
        (&["--delta", "1"], "--delta must be in [0, 1)"),
        (&["--delta", "-1e-5"], "--delta must be in [0, 1)"),
        (&["--delta", "nan"], "--delta must be in [0, 1)"),
        (&["--method", "gdp"], "--method gdp needs --delta > 0"),
        (&["--threshold", "nan"], "--threshold must be a number"),
        (
            &["--method", "one-run-fdp"],
            "--method one-run-fdp needs --delta > 0",
        ),
    ];
    for (extra, wanted) in flag_cases {
        let mut args = vec!["lower-bound", "--in-scores", g, "--out-scores", g];
        args.extend(extra);
        let line = one_line_error(&memaudit(&args));
        assert!(line.contains(wanted), "{extra:?}: {line}");
    }
    // --json errors are one JSON object with "error".
    let out = memaudit(&[
        "lower-bound",
        "--in-scores",
        g,
        "--out-scores",
        g,
        "--delta",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("--delta"), "{v}");
}

/// `--print-config` writes the effective settings as TOML; fed back with `--config` the bounds
/// are the same; a flag beside the file overrides it; a bad value in the file names its key.
#[test]
fn print_config_fed_back_through_config_gives_the_same_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ins = write_text(d, "in.txt", &normals(200, 1.0));
    let outs = write_text(d, "out.txt", &normals(200, 0.0));
    let flags = [
        "lower-bound",
        "--in-scores",
        ins.to_str().unwrap(),
        "--out-scores",
        outs.to_str().unwrap(),
        "--significance",
        "0.01",
        "--two-sided",
    ];
    let mut printed = flags.to_vec();
    printed.push("--print-config");
    let o = memaudit(&printed);
    assert_eq!(o.status.code(), Some(0));
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(
        toml.contains("significance = 0.01") && toml.contains("two_sided = true"),
        "{toml}"
    );
    let file = d.join("lb.toml");
    std::fs::write(&file, &toml).unwrap();
    let mut direct = flags.to_vec();
    direct.push("--json");
    let a = ok_json(&memaudit(&direct));
    let f = file.to_str().unwrap();
    let b = ok_json(&memaudit(&["lower-bound", "--config", f, "--json"]));
    assert_eq!(a, b);
    let c = ok_json(&memaudit(&[
        "lower-bound",
        "--config",
        f,
        "--method",
        "clopper-pearson",
        "--json",
    ]));
    assert_eq!(c["results"].as_array().unwrap().len(), 1);
    assert_eq!(c["significance"], 0.01);
    std::fs::write(
        &file,
        toml.replace("significance = 0.01", "significance = 0.9"),
    )
    .unwrap();
    let e = one_line_error(&memaudit(&["lower-bound", "--config", f]));
    assert!(
        e.contains("lb.toml") && e.contains("key `significance`"),
        "{e}"
    );
}
