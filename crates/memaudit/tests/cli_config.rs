//! `--config FILE.toml|.json` and `--print-config` on the commands built on memaudit-experiments:
//! the printed config reads back, flags given on the command line override the file (and flag
//! defaults do not), a bad file is a one-line error naming the file, line and key (exit 2), and
//! a run from a config file uses its settings.

use std::path::Path;

mod common;
use common::*;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn print_config_reads_back_and_flags_override_the_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    // The effective config of a command line, as TOML.
    let o = memaudit(&[
        "dynamics",
        "easy-hard",
        "--data",
        "digits",
        "--runs",
        "7",
        "--hidden",
        "16",
        "--out",
        path(&out),
        "--print-config",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(toml.contains("runs = 7"), "{toml}");
    assert!(!out.exists(), "--print-config runs nothing");
    let file = d.path().join("eh.toml");
    std::fs::write(&file, &toml).unwrap();

    // Read back: the file's settings, not the flag defaults (--runs defaults to 100).
    let v = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "easy-hard",
        "--config",
        path(&file),
        "--out",
        path(&out),
        "--print-config",
    ]));
    assert_eq!(v["runs"], 7);
    assert_eq!(v["mlp"]["hidden"], serde_json::json!([16]));
    assert_eq!(v["images"]["data"], "digits");

    // A flag given on the command line wins over the file; the others stay the file's.
    let v = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "easy-hard",
        "--config",
        path(&file),
        "--runs",
        "3",
        "--out",
        path(&out),
        "--print-config",
    ]));
    assert_eq!(v["runs"], 3);
    assert_eq!(v["mlp"]["hidden"], serde_json::json!([16]));

    // JSON files work the same way.
    let jfile = d.path().join("ls.json");
    std::fs::write(
        &jfile,
        r#"{"data": "digits", "examples": 50, "hidden": [4]}"#,
    )
    .unwrap();
    let v = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "sensitivity",
        "--config",
        path(&jfile),
        "--epochs",
        "2",
        "--out",
        path(&out),
        "--print-config",
    ]));
    assert_eq!(v["examples"], 50);
    assert_eq!(v["epochs"], 2);
    assert_eq!(v["hidden"], serde_json::json!([4]));
    assert_eq!(v["every"], 25, "unset keys take the defaults");
}

#[test]
fn bad_config_files_are_one_line_errors_naming_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let cases = [
        (
            "a.toml",
            "runs = 3\n[mlp]\nhiden = [4]\n",
            vec!["a.toml line 3", "hiden"],
        ),
        (
            "b.toml",
            "runs = 3\n\n[mlp]\ndropout = \"x\"\n",
            vec!["b.toml line 4", "mlp.dropout"],
        ),
        ("c.toml", "runs = \n", vec!["c.toml line 1"]),
        (
            "d.json",
            "{\n\"runs\": 3,\n\"kinds\": [1]\n}",
            vec!["d.json line 3", "kinds[0]"],
        ),
        // A value the experiment refuses: named by its file key (no flag set it).
        (
            "e.toml",
            "runs = 1\n",
            vec!["e.toml: key `runs` 1", "at least 2"],
        ),
        ("f.yaml", "runs: 1\n", vec!["f.yaml", ".toml or .json"]),
    ];
    for (name, text, wants) in cases {
        let f = d.path().join(name);
        std::fs::write(&f, text).unwrap();
        let err = one_line_error(&memaudit(&[
            "dynamics",
            "easy-hard",
            "--config",
            path(&f),
            "--out",
            path(&out),
        ]));
        for want in wants {
            assert!(err.contains(want), "{name}: {err}");
        }
    }
    // A refused value given as a flag names the flag.
    let f = d.path().join("ok.toml");
    std::fs::write(&f, "runs = 5\n").unwrap();
    let err = one_line_error(&memaudit(&[
        "dynamics",
        "easy-hard",
        "--config",
        path(&f),
        "--runs",
        "1",
        "--out",
        path(&out),
    ]));
    assert!(err.contains("--runs 1"), "{err}");
    let missing = d.path().join("missing.toml");
    let err = one_line_error(&memaudit(&[
        "dynamics",
        "easy-hard",
        "--config",
        path(&missing),
        "--out",
        path(&out),
    ]));
    assert!(err.contains("missing.toml"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_run_from_a_config_file_uses_its_settings() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("eh.toml");
    std::fs::write(
        &f,
        "runs = 2\nkinds = [\"real\", \"randy\"]\nbatch_size = 20\n[images]\ndata = \"digits\"\nmax_train = 120\n[mlp]\nhidden = [8]\n",
    )
    .unwrap();
    let v = ok_json(&memaudit(&[
        "--json",
        "dynamics",
        "easy-hard",
        "--config",
        path(&f),
        "--out",
        path(&d.path().join("eh")),
    ]));
    assert_eq!(v["runs"], 2);
    assert_eq!(v["train_examples"], 120);
    let kinds: Vec<&str> = v["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["real", "randy"]);
    // run.json records the effective config.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("eh/run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["config"]["runs"], 2, "{run}");
}
