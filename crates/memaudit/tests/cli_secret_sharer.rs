//! `memaudit secret-sharer`, `exposure`, `extract` and `sample` through the binary: the issue's
//! bad-input cases (one error line, exit code 2), the `--json` shape of the contract, and the
//! statistical proof on a trained model (never-inserted canaries at chance, 1/ln 2 bits, inserted
//! ones rising with repetitions).

use std::path::Path;

mod common;
use common::*;

use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    ok_json(&memaudit(args))
}

/// Exit code 2 and exactly one `error:` line, the last on stderr; returns it.
fn error_of(args: &[&str]) -> String {
    one_line_error(&memaudit(args))
}

/// A tiny secret-sharer run on the embedded corpus (seconds).
fn tiny_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = TINY_SECRET_SHARER.to_vec();
    v.extend_from_slice(&["--epochs", "1", "--seed", "3", "--out", out]);
    v.extend_from_slice(extra);
    v
}

fn tiny_run(dir: &Path, name: &str, extra: &[&str]) -> (String, Value) {
    let out = dir.join(name).to_str().unwrap().to_string();
    let mut args = tiny_args(&out, extra);
    args.push("--json");
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let j = run_json(&refs);
    (out, j)
}

#[test]
fn bad_templates_and_vocabulary_are_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let out = out.to_str().unwrap();
    let with = |canary: &str, extra: &[&str]| {
        let mut a = tiny_args(out, extra);
        let i = a.iter().position(|&s| s == "my pin is {digits:3}").unwrap();
        let canary = canary.to_string();
        let owned: Vec<String> = a
            .drain(..)
            .enumerate()
            .map(|(k, s)| {
                if k == i {
                    canary.clone()
                } else {
                    s.to_string()
                }
            })
            .collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        error_of(&refs)
    };
    let e = with("no slot here", &[]);
    assert!(e.contains("--canary") && e.contains("slot"), "{e}");
    let e = with("pin {hex:4}", &[]);
    assert!(e.contains("--canary") && e.contains("hex"), "{e}");
    // Moby Dick has no snowman: the error names the symbol and says what to do.
    let e = with("pin {alphabet=\u{2603}\u{2605}:3}", &[]);
    assert!(
        e.contains('\u{2603}') && e.contains("--extend-vocab"),
        "{e}"
    );
    // |R| = 10^9 above the exact limit while exact exposure is demanded.
    let e = with(
        "the number is {digits:9}",
        &["--exposure", "exact", "--exact-limit", "1e6"],
    );
    assert!(
        e.contains("--exact-limit") && e.contains("1000000000"),
        "{e}"
    );
    let e = with("pin {digits:3}", &["--repetitions", "0,4"]);
    assert!(e.contains("--repetitions"), "{e}");
    // Nothing was written by any of the refusals.
    assert!(!Path::new(out).exists());
}

#[test]
fn json_contract_and_the_saved_run_commands() {
    let d = tempfile::tempdir().unwrap();
    let (run, j) = tiny_run(d.path(), "plain", &[]);
    // The issue's --json contract.
    assert!((j["log2_space"].as_f64().unwrap() - 1000f64.log2()).abs() < 1e-9);
    assert!(j["epsilon"].is_null(), "plain run: {}", j["epsilon"]);
    assert!(j["valid_loss"].as_f64().unwrap() > 0.0);
    let canaries = j["canaries"].as_array().unwrap();
    assert_eq!(canaries.len(), 2 * 2 + 5);
    for c in canaries {
        assert!(c["id"].is_string() && c["text"].as_str().unwrap().starts_with("my pin is "));
        let r = c["repetitions"].as_u64().unwrap();
        assert!([0, 1, 4].contains(&r));
        let e = c["exposure"].as_f64().unwrap();
        assert!((0.0..=1000f64.log2() + 1e-9).contains(&e), "{c}");
        let rank = c["rank"].as_u64().unwrap();
        assert!((1..=1000).contains(&rank));
        // exposure = log2|R| - log2 rank (TF Privacy's exact exposure).
        assert!((e - (1000f64.log2() - (rank as f64).log2())).abs() < 1e-9);
        assert!(c["exposure_extrapolated"].is_number() || c["exposure_extrapolated"].is_string());
        assert!(c["extracted"].is_boolean());
        assert!(c["expansions"].as_u64().is_some());
    }
    for f in [
        "canaries.json",
        "references.json",
        "exposure.csv",
        "exposure.json",
        "secret_sharer.json",
        "report.html",
        "run.json",
    ] {
        assert!(Path::new(&run).join(f).is_file(), "{f}");
    }

    // `exposure` on the saved run reproduces the run's exact ranks.
    let e = run_json(&["--quiet", "exposure", "--run", &run, "--json"]);
    let ranks = |v: &Value| -> Vec<(String, u64)> {
        v["canaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["rank"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ranks(&e), ranks(&j));
    // Demanding exact exposure above the limit is refused.
    let err = error_of(&[
        "--quiet",
        "exposure",
        "--run",
        &run,
        "--exposure",
        "exact",
        "--exact-limit",
        "100",
    ]);
    assert!(err.contains("--exact-limit"), "{err}");

    // `extract`: candidates in increasing log-perplexity, the whole space is 1000 so the search
    // is exact.
    let x = run_json(&["--quiet", "extract", "--run", &run, "--top", "5", "--json"]);
    let s = x.to_string();
    let lps: Vec<f64> = x["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("extract json: {s}"))
        .iter()
        .map(|c| c["log_perplexity"].as_f64().unwrap())
        .collect();
    assert_eq!(lps.len(), 5, "{s}");
    assert!(lps.windows(2).all(|w| w[0] <= w[1]), "{lps:?}");

    // `sample`: the same seed draws the same text; the prefix is kept.
    let a = run_json(&[
        "--quiet", "sample", "--run", &run, "--prefix", "the ", "--length", "30", "--seed", "5",
        "--json",
    ]);
    let b = run_json(&[
        "--quiet", "sample", "--run", &run, "--prefix", "the ", "--length", "30", "--seed", "5",
        "--json",
    ]);
    assert_eq!(a["samples"], b["samples"]);
    assert!(a["samples"][0].as_str().unwrap().starts_with("the "));
    let err = error_of(&["--quiet", "sample", "--run", &run, "--prefix", "\u{2603}"]);
    assert!(err.contains("--prefix"), "{err}");

    // The output folder now holds a run: a second secret-sharer refuses it without --force.
    let mut again = tiny_args(&run, &[]);
    again.push("--json");
    let out = memaudit(&again);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(err["error"].as_str().unwrap().contains("--force"), "{err}");
}

#[test]
fn private_run_reports_epsilon_and_sampled_exposure_above_the_limit() {
    let d = tempfile::tempdir().unwrap();
    // |R| = 10^9 > --exact-limit: exposure and rank are null, the extrapolation is given.
    let out = d.path().join("dp");
    let out = out.to_str().unwrap();
    let mut a = tiny_args(
        out,
        &["--target-epsilon", "4", "--references", "500", "--json"],
    );
    let i = a.iter().position(|&s| s == "my pin is {digits:3}").unwrap();
    a[i] = "my pin is {digits:9}";
    let j = run_json(&a);
    let eps = j["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 4.0 + 1e-6, "{eps}");
    for c in j["canaries"].as_array().unwrap() {
        assert!(c["exposure"].is_null() && c["rank"].is_null(), "{c}");
        assert!(c["exposure_extrapolated"].as_f64().is_some(), "{c}");
    }
}

#[test]
fn runs_of_other_models_are_refused() {
    let d = tempfile::tempdir().unwrap();
    // An image model's run.
    let mlp = d.path().join("mlp");
    let mlp = mlp.to_str().unwrap();
    run_json(&[
        "--quiet",
        "train",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--max-train",
        "64",
        "--seed",
        "1",
        "--out",
        mlp,
        "--json",
    ]);
    for cmd in ["exposure", "extract", "sample"] {
        let e = error_of(&["--quiet", cmd, "--run", mlp]);
        assert!(
            e.contains("--run") && e.contains("not a language model"),
            "{cmd}: {e}"
        );
    }
    // A language model without canaries: exposure needs a manifest; extract needs a template.
    let lm = d.path().join("lm");
    let lm = lm.to_str().unwrap();
    run_json(&[
        "--quiet",
        "train",
        "--data",
        "embedded",
        "--model",
        "lstm",
        "--rnn-hidden",
        "8",
        "--rnn-layers",
        "1",
        "--embed",
        "4",
        "--epochs",
        "1",
        "--max-train",
        "32",
        "--batch-size",
        "16",
        "--seed",
        "1",
        "--out",
        lm,
        "--json",
    ]);
    let e = error_of(&["--quiet", "exposure", "--run", lm]);
    assert!(
        e.contains("canaries.json") || e.contains("--manifest"),
        "{e}"
    );
    let e = error_of(&["--quiet", "extract", "--run", lm]);
    assert!(e.contains("--canary"), "{e}");
    // A manifest from a run with another vocabulary (the canary's symbols were added to it)
    // does not fit this model.
    let out = d.path().join("snow");
    let out = out.to_str().unwrap();
    let mut a = tiny_args(out, &["--extend-vocab"]);
    let i = a.iter().position(|&s| s == "my pin is {digits:3}").unwrap();
    a[i] = "pin {alphabet=\u{2603}\u{2605}:6}";
    run_json(&[a.as_slice(), &["--json"]].concat());
    let manifest = Path::new(out).join("canaries.json");
    let e = error_of(&[
        "--quiet",
        "exposure",
        "--run",
        lm,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(e.contains("do not fit the model"), "{e}");
}

/// The issue's statistical proof on a trained model (the whole embedded corpus, 6 epochs of a 1x128 LSTM: about 30 s on 2 cores): 200 canaries
/// that were never inserted have mean exact exposure within 0.3 bits of 1/ln 2 (the exposure of
/// a uniformly random rank; its standard deviation is also 1/ln 2, so the standard error over 200
/// is 0.10 bits and 0.3 is three of them), while inserted canaries rise with repetitions.
#[test]
fn chance_exposure_for_held_out_canaries_and_rising_with_repetitions() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("stat");
    let j = run_json(&[
        "--quiet",
        "secret-sharer",
        "--corpus",
        "embedded",
        "--canary",
        "my pin is {digits:4}",
        "--canaries",
        "3",
        "--repetitions",
        "1,16,64",
        "--held-out",
        "200",
        "--rnn-hidden",
        "128",
        "--rnn-layers",
        "1",
        "--seq-len",
        "64",
        "--batch-size",
        "32",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--epochs",
        "6",
        "--seed",
        "11",
        "--extract-budget",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let mean = |r: u64| -> f64 {
        let v: Vec<f64> = j["canaries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["repetitions"].as_u64() == Some(r))
            .map(|c| c["exposure"].as_f64().unwrap())
            .collect();
        assert!(!v.is_empty());
        v.iter().sum::<f64>() / v.len() as f64
    };
    let chance = mean(0);
    assert!(
        (chance - std::f64::consts::LOG2_E).abs() < 0.3,
        "held-out mean exposure {chance}"
    );
    let (e1, e16, e64) = (mean(1), mean(16), mean(64));
    assert!(
        e16 > chance + 2.0 && e64 > e16 && e64 > e1 + 2.0,
        "exposure by repetitions: 0 -> {chance}, 1 -> {e1}, 16 -> {e16}, 64 -> {e64}"
    );
}
