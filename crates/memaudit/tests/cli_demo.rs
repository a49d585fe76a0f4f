//! `memaudit demo --quick`: the demo is the audit pipeline (issue 18) on the embedded corpus; the
//! quick variant runs every stage in seconds (the full demo's time is measured by hand, see
//! README.md), and its folder rules: it reuses its own previous folder and refuses any other.

use std::path::Path;
use std::process::Output;

mod common;
use common::*;

use serde_json::Value;

fn quick(out: &str) -> Output {
    memaudit(&["--quiet", "demo", "--quick", "--out", out, "--json"])
}

#[test]
fn quick_demo_runs_the_audit_pipeline_and_writes_one_report() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    let out_s = out.to_str().unwrap();
    let j = ok_json(&quick(out_s));
    let report = Path::new(j["report"].as_str().unwrap());
    assert_eq!(report, out.join("report.html"));
    let html = std::fs::read_to_string(report).unwrap();
    for s in [
        "Summary",
        "Verdict",
        "Selection caveat",
        "ROC of every attack",
    ] {
        assert!(html.contains(s), "report lacks {s:?}");
    }
    // A plain and a DP variant; the DP one's claim is the ledger's epsilon at the target.
    let v = j["variants"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["privacy"]["claimed_epsilon"], "inf");
    let eps = v[1]["privacy"]["claimed_epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 8.0 + 1e-6, "{eps}");
    // Exposure is exact over the 10^4 PINs, between 0 and log2 10^4 bits.
    for x in v {
        let e = &x["exposure"];
        assert_eq!(e["method"], "exact");
        let reps: Vec<u64> = e["canaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["repetitions"].as_u64().unwrap())
            .collect();
        assert_eq!(reps.iter().filter(|&&r| r == 0).count(), 20);
        assert_eq!(reps.iter().filter(|&&r| r == 16).count(), 2);
        for c in e["canaries"].as_array().unwrap() {
            let b = c["exposure"].as_f64().unwrap();
            assert!((0.0..=10000f64.log2() + 1e-9).contains(&b), "{c}");
        }
        assert!(!x["mia"]["attacks"].as_array().unwrap().is_empty());
    }
    // Bounds: one-run and extraction (r = 1, 16) per variant, white-box for the DP one.
    assert_eq!(j["verdict"]["bounds_reported"], 7);
    assert_eq!(j["verdict"]["broken"], false, "{}", j["verdict"]["line"]);
    assert_eq!(j["summary"].as_array().unwrap().len(), 2);
    // The config it ran is in the folder and runs with `memaudit audit`.
    let cfg = out.join("audit.toml");
    assert_eq!(Path::new(j["config_file"].as_str().unwrap()), cfg);

    // A second demo reuses the folder: every stage is up to date, the results the same.
    let j2 = ok_json(&quick(out_s));
    let ran: Vec<&Value> = j2["run"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ran")
        .collect();
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(j["variants"], j2["variants"]);
    let again = ok_json(&memaudit(&[
        "--quiet",
        "audit",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out_s,
        "--json",
    ]));
    assert_eq!(again["variants"], j["variants"]);
}

#[test]
fn demo_refuses_a_folder_it_does_not_own() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let o = memaudit(&["--quiet", "demo", "--quick", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("--out") && err.contains("other than a memaudit demo"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // A file in the way is refused too.
    let f = d.path().join("file");
    std::fs::write(&f, "x").unwrap();
    let o = memaudit(&["--quiet", "demo", "--quick", "--out", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = memaudit(&[
        "--quiet",
        "demo",
        "--quick",
        "--epsilon",
        "0",
        "--out",
        "unused",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!Path::new("unused").exists());
}
