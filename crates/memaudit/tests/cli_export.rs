//! `memaudit export --format pytorch` and `memaudit import` through the binary (issue 17): a
//! secret-sharer run exported and imported back evaluates, samples and audits identically; a
//! folder written by PyTorch (the engine's fixture) becomes a run that eval, sample and extract
//! accept; malformed folders and misused flags are one-line errors with exit code 2.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{memaudit, ok_json, one_line_error};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json_of(args: &[&str]) -> Value {
    let mut v = vec!["--quiet", "--json"];
    v.extend_from_slice(args);
    ok_json(&memaudit(&v))
}

fn error_of(args: &[&str]) -> String {
    one_line_error(&memaudit(args))
}

/// A tiny secret-sharer run (seconds): LSTM or GRU.
fn tiny_run(dir: &Path, cell: &str) -> PathBuf {
    let out = dir.join(format!("{cell}-run"));
    json_of(&[
        "secret-sharer",
        "--corpus",
        "embedded",
        "--canary",
        "my pin is {digits:3}",
        "--canaries",
        "2",
        "--repetitions",
        "1,4",
        "--held-out",
        "3",
        "--model",
        cell,
        "--rnn-hidden",
        "16",
        "--rnn-layers",
        "2",
        "--embed",
        "8",
        "--max-train",
        "120",
        "--seq-len",
        "40",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--references",
        "100",
        "--out",
        s(&out),
    ]);
    out
}

fn engine_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../memaudit-engine/tests/data")
        .join(name)
}

/// Export -> import of a trained LSTM and GRU LM: the imported run's logits are identical (the
/// probe check reports 0 difference), so are its validation loss, its canaries' log-perplexities
/// and exposures, its greedy samples and its extraction.
#[test]
fn export_then_import_gives_an_identical_run() {
    let dir = tempfile::tempdir().unwrap();
    for cell in ["lstm", "gru"] {
        let run = tiny_run(dir.path(), cell);
        let exp = dir.path().join(format!("{cell}-export"));
        let back = dir.path().join(format!("{cell}-import"));
        let e = json_of(&[
            "export",
            "--run",
            s(&run),
            "--format",
            "pytorch",
            "--out",
            s(&exp),
            "--with-canaries",
        ]);
        assert_eq!(e["family"], format!("{cell}_lm"));
        assert_eq!(e["tensors"], 11);
        for f in [
            "model.safetensors",
            "config.json",
            "vocab.json",
            "optimizer.safetensors",
            "optimizer.json",
            "probe.safetensors",
            "canaries.json",
        ] {
            assert!(exp.join(f).is_file(), "{f}");
        }
        let config: Value =
            serde_json::from_slice(&fs::read(exp.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["modules"][1]["type"], cell.to_uppercase());
        assert_eq!(config["tensors"][1]["name"], format!("{cell}.weight_ih_l0"));
        let vocab: Value =
            serde_json::from_slice(&fs::read(exp.join("vocab.json")).unwrap()).unwrap();
        let scoring = &vocab["canary_scoring"];
        assert_eq!(scoring["log_base"], 2);
        assert_eq!(scoring["template"]["text"], "my pin is {digits:3}");
        assert_eq!(scoring["template"]["scored"].as_array().unwrap().len(), 3);
        let optimizer: Value =
            serde_json::from_slice(&fs::read(exp.join("optimizer.json")).unwrap()).unwrap();
        assert_eq!(
            optimizer["buffers"],
            serde_json::json!(["exp_avg", "exp_avg_sq"])
        );

        let i = json_of(&["import", "--from", s(&exp), "--out", s(&back)]);
        assert_eq!(i["probe"]["relative_difference"], 0.0);
        assert_eq!(i["train_settings"], "recorded by the export");

        let ev = |r: &Path| json_of(&["eval", "--run", s(r)]);
        let (a, b) = (ev(&run), ev(&back));
        assert_eq!(a["loss"], b["loss"]);
        assert_eq!(a["step"], b["step"]);
        let ex = |r: &Path| json_of(&["exposure", "--run", s(r)]);
        let (a, b) = (ex(&run), ex(&back));
        assert_eq!(a["canaries"], b["canaries"]);
        let sa = |r: &Path| {
            json_of(&[
                "sample",
                "--run",
                s(r),
                "--seed",
                "1",
                "--length",
                "40",
                "--temperature",
                "0.7",
            ])["samples"]
                .clone()
        };
        assert_eq!(sa(&run), sa(&back));
        let xt =
            |r: &Path| json_of(&["extract", "--run", s(r), "--top", "5"])["candidates"].clone();
        assert_eq!(xt(&run), xt(&back));

        // A second export of the imported run is the same folder, byte for byte, except the
        // record of where it came from.
        let exp2 = dir.path().join(format!("{cell}-export2"));
        json_of(&[
            "export",
            "--run",
            s(&back),
            "--format",
            "pytorch",
            "--out",
            s(&exp2),
        ]);
        for f in [
            "model.safetensors",
            "optimizer.safetensors",
            "probe.safetensors",
            "vocab.json",
        ] {
            assert_eq!(
                fs::read(exp.join(f)).unwrap(),
                fs::read(exp2.join(f)).unwrap(),
                "{f}"
            );
        }
    }
}

/// A language model written by PyTorch (nn.LSTM state dict, hand-written config and vocab)
/// becomes a run: eval on a text of its characters, greedy sampling and extraction all work.
#[test]
fn a_pytorch_written_folder_becomes_a_run_that_the_commands_accept() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("pins.txt");
    fs::write(
        &text,
        "my pin is 1234\nmy pin is 9876\nsay 42\nmania\n".repeat(30),
    )
    .unwrap();
    let run = dir.path().join("from-torch");
    let i = json_of(&[
        "import",
        "--from",
        s(&engine_fixture("pytorch_lstm")),
        "--out",
        s(&run),
        "--data",
        s(&text),
        "--seq-len",
        "12",
    ]);
    assert_eq!(i["family"], "lstm_lm");
    assert!(i["probe"]["relative_difference"].as_f64().unwrap() <= 1e-5);
    assert!(i["train_settings"].as_str().unwrap().starts_with("unknown"));
    let e = json_of(&["eval", "--run", s(&run)]);
    assert!(e["loss"].as_f64().unwrap().is_finite());
    let sm = json_of(&[
        "sample",
        "--run",
        s(&run),
        "--prefix",
        "my pin is ",
        "--length",
        "4",
        "--temperature",
        "0",
        "--seed",
        "1",
    ]);
    assert!(sm["samples"][0].as_str().unwrap().starts_with("my pin is "));
    let x = json_of(&[
        "extract",
        "--run",
        s(&run),
        "--canary",
        "my pin is {digits:2}",
        "--top",
        "3",
    ]);
    assert_eq!(x["candidates"].as_array().unwrap().len(), 3);
    // Without --data the run records that its data is unknown; a second import into the same
    // folder is refused without --force.
    let err = error_of(&[
        "import",
        "--from",
        s(&engine_fixture("pytorch_gru")),
        "--out",
        s(&run),
    ]);
    assert!(err.contains("already holds a run"), "{err}");
}

/// Copy a fixture folder to edit it.
fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let dst = to.join(name);
    fs::create_dir_all(&dst).unwrap();
    for e in fs::read_dir(engine_fixture(name)).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn import_errors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");

    // A shape mismatch names the tensor and both shapes.
    let f = copy_fixture("pytorch_lstm", dir.path());
    let cp = f.join("config.json");
    let mut c: Value = serde_json::from_slice(&fs::read(&cp).unwrap()).unwrap();
    c["architecture"]["embed"] = 7.into();
    c.as_object_mut().unwrap().remove("modules");
    fs::write(&cp, c.to_string()).unwrap();
    let err = error_of(&["import", "--from", s(&f), "--out", s(&out)]);
    assert!(
        err.contains("model.safetensors: tensor embedding.weight has shape [20, 5], the model expects [20, 7]"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on a refused import");

    // A language model without its vocabulary.
    let f = copy_fixture("pytorch_gru", dir.path());
    fs::remove_file(f.join("vocab.json")).unwrap();
    let err = error_of(&["import", "--from", s(&f), "--out", s(&out)]);
    assert!(err.contains("vocab.json: not found"), "{err}");

    // A vocabulary of another size.
    let f = copy_fixture("pytorch_gru", &dir.path().join("b"));
    let vp = f.join("vocab.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&vp).unwrap()).unwrap();
    v["tokens"].as_array_mut().unwrap().pop();
    fs::write(&vp, v.to_string()).unwrap();
    let err = error_of(&["import", "--from", s(&f), "--out", s(&out)]);
    assert!(
        err.contains("19 tokens, the model's vocabulary has 20"),
        "{err}"
    );

    // Not an export at all.
    let err = error_of(&["import", "--from", s(dir.path()), "--out", s(&out)]);
    assert!(err.contains("config.json: not found"), "{err}");
    let err = error_of(&["import", "--from", "/nonexistent", "--out", s(&out)]);
    assert!(err.contains("--from /nonexistent: not a folder"), "{err}");
}

#[test]
fn export_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), "lstm");
    let out = dir.path().join("exp");
    let err = error_of(&[
        "export",
        "--run",
        s(&run),
        "--format",
        "onnx",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("--format"), "{err}");
    let err = error_of(&[
        "export",
        "--run",
        s(dir.path()),
        "--format",
        "pytorch",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("no run.json"), "{err}");
    // A folder with other files is never overwritten, even with --force.
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let base = [
        "export",
        "--run",
        s(&run),
        "--format",
        "pytorch",
        "--out",
        s(&out),
    ];
    let err = error_of(&base);
    assert!(err.contains("is not empty"), "{err}");
    let mut forced = base.to_vec();
    forced.push("--force");
    let err = error_of(&forced);
    assert!(err.contains("notes.txt"), "{err}");
    assert_eq!(fs::read(out.join("notes.txt")).unwrap(), b"mine");
    // An earlier export is replaced with --force.
    fs::remove_file(out.join("notes.txt")).unwrap();
    json_of(&base);
    assert!(error_of(&base).contains("is not empty"));
    json_of(&forced);
    // --with-canaries on a run without a manifest.
    let plain = dir.path().join("plain");
    json_of(&[
        "train",
        "--data",
        "embedded",
        "--rnn-hidden",
        "8",
        "--rnn-layers",
        "1",
        "--embed",
        "4",
        "--max-train",
        "40",
        "--batch-size",
        "20",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--out",
        s(&plain),
    ]);
    let err = error_of(&[
        "export",
        "--run",
        s(&plain),
        "--format",
        "pytorch",
        "--out",
        s(&dir.path().join("e2")),
        "--with-canaries",
    ]);
    assert!(
        err.contains("--with-canaries") && err.contains("canaries.json"),
        "{err}"
    );
}
