//! `--model gpt` end to end on the embedded corpus (no fetch): a tiny GPT trains with DP-SGD
//! inside the Secret Sharer (exposure by the exact trie walk over its key/value-cache states,
//! then extraction; export in GPT-2 layout), and bad GPT flags are one-line errors with exit code 2.

mod common;

use common::{memaudit, ok_json, one_line_error};

#[test]
fn a_tiny_private_gpt_runs_the_secret_sharer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ss");
    let o = memaudit(&[
        "secret-sharer",
        "--corpus",
        "embedded",
        "--canary",
        "my pin is {digits:3}",
        "--canaries",
        "1",
        "--repetitions",
        "4",
        "--model",
        "gpt",
        "--gpt-layers",
        "1",
        "--gpt-width",
        "16",
        "--gpt-heads",
        "2",
        "--gpt-context",
        "24",
        "--seq-len",
        "24",
        "--max-train",
        "400",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--target-epsilon",
        "8",
        "--quiet",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let j = ok_json(&o);
    let text = j.to_string();
    assert!(text.contains("exposure"), "{text}");
    // The saved run reloads as an incremental LM (exposure command, full positional table).
    let o = memaudit(&["exposure", "--run", out.to_str().unwrap(), "--json"]);
    ok_json(&o);
    // Export writes the GPT-2 layout (the library's tests check it against transformers).
    let exp = dir.path().join("export");
    let j = ok_json(&memaudit(&[
        "export",
        "--run",
        out.to_str().unwrap(),
        "--format",
        "pytorch",
        "--out",
        exp.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(j["format"], "gpt2", "{j}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "gpt2");
    assert_eq!(cfg["n_layer"], 1);
    assert!(exp.join("model.safetensors").is_file());
}

#[test]
fn bad_gpt_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    let base = [
        "train",
        "--data",
        "embedded",
        "--model",
        "gpt",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        one_line_error(&memaudit(&a))
    };
    let e = run(&["--gpt-context", "16", "--seq-len", "32"]);
    assert!(
        e.contains("--seq-len 32") && e.contains("--gpt-context 16"),
        "{e}"
    );
    let e = run(&["--gpt-width", "30", "--gpt-heads", "4"]);
    assert!(
        e.contains("--gpt-heads") && e.contains("not divisible"),
        "{e}"
    );
    let e = run(&["--gelu", "relu"]);
    assert!(e.contains("--gelu relu"), "{e}");
}
