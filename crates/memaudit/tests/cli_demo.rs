//! `memaudit demo --quick`: the demo's steps end to end in seconds (the full demo's time is
//! measured by hand, see docs/secret-sharer.md), and its folder rules: it replaces its own
//! previous folder and refuses any other.

use std::path::Path;
use std::process::Output;

mod common;
use common::*;

use serde_json::Value;

fn quick(out: &str) -> Output {
    memaudit(&["--quiet", "demo", "--quick", "--out", out, "--json"])
}

#[test]
fn quick_demo_writes_one_report_and_summarises_plain_vs_private() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    let out_s = out.to_str().unwrap();
    let o = quick(out_s);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = Path::new(j["report"].as_str().unwrap());
    assert_eq!(report, out.join("report.html"));
    let html = std::fs::read_to_string(report).unwrap();
    for s in [
        "Plain vs private",
        "privacy statement",
        "sampled from the plain model",
    ] {
        assert!(html.contains(s), "report lacks {s:?}");
    }
    let eps = j["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 8.0 + 1e-6, "{eps}");
    let reps: Vec<u64> = j["by_repetitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repetitions"].as_u64().unwrap())
        .collect();
    assert_eq!(reps, vec![0, 1, 16]);
    for r in j["by_repetitions"].as_array().unwrap() {
        for k in ["plain_exposure", "private_exposure"] {
            let e = r[k].as_f64().unwrap();
            assert!((0.0..=10000f64.log2() + 1e-9).contains(&e), "{r}");
        }
    }
    assert!(j["sample"].as_str().unwrap().chars().count() >= 100);
    assert!(j["plain"]["epsilon"].is_null());
    assert!(
        out.join("plain/canaries.json").is_file() && out.join("private/canaries.json").is_file()
    );

    // A second demo replaces the first; the same seed gives the same plain model (the DP noise
    // is drawn from the OS, never from the seed, so the private numbers differ).
    let o2 = quick(out_s);
    assert_eq!(o2.status.code(), Some(0), "{o2:?}");
    let j2: Value = serde_json::from_slice(&o2.stdout).unwrap();
    let plain = |j: &Value| -> Vec<Value> {
        j["by_repetitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["plain_exposure"].clone())
            .collect()
    };
    assert_eq!(plain(&j), plain(&j2));
    assert_eq!(j["sample"], j2["sample"]);
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
