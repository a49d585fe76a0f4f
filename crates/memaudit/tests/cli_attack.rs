//! `memaudit attack`: Song et al.'s four attacks end to end on the 8x8 digits (bundled, so no
//! fetched data is needed) with a small MLP and seconds of training. The oracles: LSB decoding
//! must return the exact secret; the regularisers and capacity abuse must decode the secret
//! from the malicious model clearly better than the same decoder does from the conventional
//! model and than the mean-image guess. Every bad input is one line on stderr, exit code 2,
//! before anything is trained or written.

use std::path::Path;
use std::process::Output;

mod common;
use common::*;

use serde_json::Value;

/// A small, deterministic setting: the 8x8 digits and an MLP (the GroupNorm CNN is for the
/// real experiments; docs/attacks.md). `attack` adds one hidden layer of 64 units unless the
/// extra flags give --hidden.
const QUICK: &[&str] = &[
    "--quiet",
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--seed",
    "1",
];

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn attack(kind: &str, extra: &[&str], out: &Path) -> Output {
    let mut a = vec!["attack", kind];
    a.extend_from_slice(QUICK);
    if !extra.contains(&"--hidden") {
        a.extend_from_slice(&["--hidden", "64"]);
    }
    a.extend_from_slice(extra);
    a.extend_from_slice(&["--out", out.to_str().unwrap()]);
    memaudit(&a)
}

/// The shared check, and with --quiet nothing else on stderr.
fn quiet_one_line_error(out: &Output) -> String {
    let line = one_line_error(out);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "exactly one line (--quiet)"
    );
    line
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

#[test]
fn lsb_decodes_the_exact_secret_at_every_b_and_reports_the_capacity() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("lsb");
    let j = ok_json(&attack(
        "lsb",
        &["--epochs", "2", "--bits", "1,8,23", "--key", KEY, "--json"],
        &out,
    ));
    let n_params = j["scale"]["parameters"].as_u64().unwrap();
    // MLP 64 -> 64 -> 10: 64*64 + 64 + 64*10 + 10
    assert_eq!(n_params, 4810);
    let conv = f(&j["conventional"]["test_accuracy"]);
    assert!(
        conv > 0.3,
        "the conventional model learned something: {conv}"
    );
    let settings = j["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 3);
    let stream = j["secret"]["stream_bits"].as_u64().unwrap();
    for (s, b) in settings.iter().zip([1u64, 8, 23]) {
        assert_eq!(s["bits"].as_u64(), Some(b));
        assert_eq!(s["round_trip_exact"], Value::Bool(true), "{s}");
        assert_eq!(f(&s["decoding"]["mape"]), 0.0);
        assert_eq!(f(&s["decoding"]["cosine"]), 1.0);
        assert_eq!(s["capacity_bits"].as_u64(), Some(n_params * b));
        assert_eq!(s["stream_bits"].as_u64(), Some(stream));
        assert!(stream <= n_params * b);
    }
    // By default the secret fills the smallest b: at b = 1 the stream uses most of the 4810 bits.
    assert!(
        stream > 4810 / 2,
        "default secret size fills the capacity: {stream}"
    );
    // b = 1 changes each weight by at most 2^-22 relatively: no test prediction moves by more
    // than one example in 449.
    let acc1 = f(&settings[0]["test_accuracy"]);
    assert!(
        (acc1 - conv).abs() <= 1.0 / 449.0 + 1e-12,
        "{acc1} vs {conv}"
    );
    assert_eq!(j["secret"]["encrypted"], Value::Bool(true));
    assert!(f(&j["mean_image_baseline_mape"]) > 10.0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Accuracy against b") && html.contains("<svg"));
    assert!(html.contains("base64,"), "the image grid is embedded");
    let png = std::fs::read(out.join("recovered.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(out.join("conventional/run.json").exists());
    let run: Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "completed");
    assert!(
        !String::from_utf8_lossy(&std::fs::read(out.join("run.json")).unwrap()).contains(KEY),
        "the key is not recorded"
    );
    // The conventional run is an ordinary training run: `memaudit eval` reads it.
    let conv_dir = out.join("conventional");
    let e = memaudit(&["eval", "--run", conv_dir.to_str().unwrap(), "--json"]);
    let e = ok_json(&e);
    assert_eq!(f(&e["accuracy"]), conv);
}

#[test]
fn sign_encoding_recovers_the_images_and_reuses_a_conventional_model() {
    let d = tempfile::tempdir().unwrap();
    let train_flags = ["--epochs", "20", "--optimizer", "adam"];
    let sign = |lambda: &str, out: &Path, reuse: Option<&Path>| {
        let mut a: Vec<&str> = train_flags.to_vec();
        a.extend_from_slice(&["--lambda", lambda, "--json"]);
        if let Some(r) = reuse {
            a.extend_from_slice(&["--conventional", r.to_str().unwrap()]);
        }
        ok_json(&attack("sign", &a, out))
    };
    let first = sign("100", &d.path().join("a"), None);
    // 64x64 + 64x10 weights carry 4736 bits: 9 whole 8x8 images of 512 bits.
    assert_eq!(first["secret"]["images"].as_u64(), Some(9));
    assert_eq!(first["capacity"]["available"].as_u64(), Some(4736));
    assert_eq!(first["capacity"]["used"].as_u64(), Some(9 * 512));
    let dec = &first["decoding"];
    let control = &first["control_conventional"];
    let baseline = f(&dec["mean_image_baseline_mape"]);
    // Observed: 95.9% correct signs, MAPE 6.1 against a mean-image guess of 49.3 and 116.8 from
    // the conventional model; accuracy 92.7% vs 95.1%.
    assert!(f(&dec["correct_signs"]) > 0.9, "{dec}");
    assert!(f(&dec["mape"]) < baseline / 3.0, "{dec}");
    assert!(f(&control["mape"]) > baseline, "{control}");
    assert!(
        (f(&control["correct_signs"]) - 0.5).abs() < 0.05,
        "{control}"
    );
    assert!(f(&first["accuracy_drop_points"]) < 5.0, "{first}");
    let conv_dir = d.path().join("a/conventional");
    // Reusing that conventional model: nothing is retrained and it scores the same.
    let second = sign("100", &d.path().join("b"), Some(&conv_dir));
    assert_eq!(second["conventional"]["reused"], Value::Bool(true));
    assert_eq!(
        second["conventional"]["test_accuracy"],
        first["conventional"]["test_accuracy"]
    );
    assert!(!d.path().join("b/conventional").exists());
    // Same seed and flags: the malicious model is the same.
    assert_eq!(second["decoding"], first["decoding"]);
    // A malicious model is refused as --conventional.
    let mal_dir = d.path().join("a/malicious");
    let mut a: Vec<&str> = train_flags.to_vec();
    a.extend_from_slice(&["--conventional", mal_dir.to_str().unwrap()]);
    let err = quiet_one_line_error(&attack("sign", &a, &d.path().join("c")));
    assert!(err.contains("malicious"), "{err}");
}

#[test]
fn correlation_encoding_correlates_weights_with_the_secret() {
    let d = tempfile::tempdir().unwrap();
    let j = ok_json(&attack(
        "correlation",
        &[
            "--epochs",
            "20",
            "--optimizer",
            "adam",
            "--secret-count",
            "8",
            "--lambda",
            "1",
            "--json",
        ],
        &d.path().join("c"),
    ));
    assert_eq!(j["secret"]["images"].as_u64(), Some(8));
    assert_eq!(j["capacity"]["used"].as_u64(), Some(8 * 64));
    let dec = &j["decoding"];
    let control = &j["control_conventional"];
    assert!(f(&dec["abs_pearson_r"]) > 0.8, "{dec}");
    assert!(f(&control["abs_pearson_r"]) < 0.2, "{control}");
    assert!(
        f(&dec["mape"]) < f(&dec["mean_image_baseline_mape"]),
        "{dec}"
    );
    assert!(
        f(&dec["mape"]) < f(&control["mape"]) / 2.0,
        "{dec} {control}"
    );
    assert!(f(&dec["mape_best_of_two"]) <= f(&dec["mape"]));
}

#[test]
fn capacity_abuse_reads_labels_back_from_queries() {
    let d = tempfile::tempdir().unwrap();
    let j = ok_json(&attack(
        "capacity",
        &[
            "--hidden",
            "256",
            "--epochs",
            "60",
            "--optimizer",
            "adam",
            "--synthetic-ratio",
            "0.2",
            "--json",
        ],
        &d.path().join("cap"),
    ));
    // 1348 training digits x 0.2 = 270 synthetic inputs; an 8x8 image takes 128 under nibble
    // pairs, so 2 images (256 inputs) and 2 bits per query.
    assert_eq!(j["synthetic"]["budget"].as_u64(), Some(270));
    assert_eq!(j["synthetic"]["inputs"].as_u64(), Some(256));
    assert_eq!(j["synthetic"]["bits_per_query"].as_u64(), Some(2));
    assert_eq!(j["secret"]["images"].as_u64(), Some(2));
    let dec = &j["decoding"];
    let control = &j["control_conventional"];
    assert!(
        f(&dec["label_accuracy"]) > f(&dec["majority_label_share"]) + 0.2,
        "{dec}"
    );
    assert!(
        f(&dec["mape"]) < f(&control["mape"]) / 2.0,
        "{dec} {control}"
    );
    // nibble pairs keep each pixel's high 4 bits: a perfect model still errs by (p mod 16)
    assert!(f(&dec["perfect_memorization_mape"]) > 0.0);
    assert!(f(&dec["mape"]) >= f(&dec["perfect_memorization_mape"]));
}

#[test]
fn bad_inputs_fail_before_training_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("never");
    let small = ["--hidden", "8"];
    let check = |kind: &str, extra: &[&str], needles: &[&str]| {
        let err = quiet_one_line_error(&attack(kind, extra, &out));
        for n in needles {
            assert!(err.contains(n), "{kind} {extra:?}: {err} lacks {n}");
        }
        assert!(!out.exists(), "{kind} {extra:?} wrote {}", out.display());
    };
    // A secret larger than the capacity says how many bits fit. MLP 64 -> 8 -> 10 has
    // 64*8 + 8*10 = 592 weights: one 8x8 image of 512 bits fits its signs, two do not.
    check(
        "sign",
        &[&small[..], &["--secret-count", "2"]].concat(),
        &[
            "--secret-count 2",
            "1024 bits",
            "only 592 bits",
            "at most 1 image of 8x8",
        ],
    );
    check(
        "correlation",
        &[&small[..], &["--secret-count", "10"]].concat(),
        &["--secret-count 10", "640 values", "only 592 values"],
    );
    // 610 parameters at b = 1 hold 610 bits, far less than 100 compressed images.
    check(
        "lsb",
        &[&small[..], &["--bits", "1", "--secret-count", "100"]].concat(),
        &["--secret-count 100", "--bits 1", "only 610 bits"],
    );
    check(
        "capacity",
        &["--synthetic-ratio", "0.2", "--secret-count", "3"],
        &["--secret-count 3", "only 540 bits", "at most 2 images"],
    );
    check(
        "capacity",
        &["--synthetic-ratio", "0.05"],
        &[
            "--synthetic-ratio 0.05",
            "67 synthetic inputs",
            "needs 128 inputs",
        ],
    );
    // b outside 1..=23
    for b in ["0", "24", "-3"] {
        check("lsb", &["--bits", b], &[&format!("--bits {b}"), "1..=23"]);
    }
    check("lsb", &["--bits", "8,32"], &["--bits 32", "1..=23"]);
    // lambda negative (or not a number)
    for lambda in ["-1", "-0.5", "NaN", "inf"] {
        check(
            "sign",
            &["--lambda", lambda],
            &["--lambda", "must be a finite number >= 0"],
        );
    }
    check(
        "correlation",
        &["--lambda=-2"],
        &["--lambda", "lambda = -2"],
    );
    // mismatched image sizes in a folder of secret images
    let pngs = d.path().join("pngs");
    std::fs::create_dir(&pngs).unwrap();
    for (name, side) in [("a.png", 8usize), ("b.png", 9)] {
        let img = memaudit_attacks::GrayImage {
            width: side,
            height: side,
            pixels: vec![7; side * side],
        };
        std::fs::write(pngs.join(name), memaudit_attacks::encode_png(&img).unwrap()).unwrap();
    }
    check(
        "sign",
        &["--secret", pngs.to_str().unwrap()],
        &["b.png", "image size mismatch", "expected 8x8", "got 9x9"],
    );
    // other refusals
    check(
        "sign",
        &["--secret", "imdb"],
        &["--secret imdb", "--dataset imdb"],
    );
    check(
        "sign",
        &["--secret", "nowhere"],
        &["--secret nowhere", "train-images, lfw, imdb"],
    );
    check(
        "lsb",
        &["--key", "abc"],
        &["--key", "64 hexadecimal digits"],
    );
    check(
        "capacity",
        &["--synthetic-ratio", "-1"],
        &["--synthetic-ratio -1"],
    );
    check("capacity", &["--labels", "ternary"], &["--labels ternary"]);
    check(
        "capacity",
        &["--labels", "nibble-pairs", "--inputs", "stars"],
        &["--inputs stars"],
    );
    let err = quiet_one_line_error(&memaudit(&[
        "--quiet",
        "attack",
        "sign",
        "--dataset",
        "cifar10",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("--dataset cifar10: use mnist"), "{err}");
    check("sign", &["--epochs", "0"], &["--epochs"]);
    // a conventional run with another model is refused before anything is written
    let conv = d.path().join("conv16");
    let t = memaudit(&[
        "train",
        "--quiet",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--out",
        conv.to_str().unwrap(),
    ]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    check(
        "lsb",
        &["--conventional", conv.to_str().unwrap()],
        &["--conventional", "MLP [16]", "MLP [64]"],
    );
}

#[test]
fn json_errors_are_one_object() {
    let d = tempfile::tempdir().unwrap();
    let out = attack("lsb", &["--bits", "30", "--json"], &d.path().join("x"));
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("1..=23"), "{v}");
}

/// The results without the paths of the run they came from.
fn without_paths(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            for k in ["run", "report", "grid", "train_seconds"] {
                m.remove(k);
            }
            m.values_mut().for_each(strip);
        }
    }
    strip(&mut v);
    v
}

#[test]
fn print_config_fed_back_through_config_gives_the_same_result() {
    // Every attack, tiny (digits, MLP 16, 1 epoch on 300 examples): the effective config that
    // --print-config writes, run with --config alone (its run folder from the file too), gives
    // the same JSON result as the flags themselves (same seed, so the same models).
    let d = tempfile::tempdir().unwrap();
    let tiny = [
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--max-train",
        "300",
        "--grid-images",
        "4",
    ];
    for (kind, extra) in [
        ("lsb", &["--bits", "8,12", "--key", KEY][..]),
        ("correlation", &["--lambda", "2"][..]),
        ("sign", &[][..]),
        (
            "capacity",
            &["--synthetic-ratio", "1", "--labels", "bits"][..],
        ),
    ] {
        let flags = [&tiny[..], extra].concat();
        let from_file = d.path().join(format!("{kind}-file"));
        let printed = attack(
            kind,
            &[&flags[..], &["--print-config"]].concat(),
            &from_file,
        );
        assert!(
            printed.status.success(),
            "{}",
            String::from_utf8_lossy(&printed.stderr)
        );
        let toml = String::from_utf8(printed.stdout).unwrap();
        assert!(!from_file.exists(), "--print-config ran the attack");
        // Key material never goes into a config file.
        assert!(!toml.contains(KEY) && !toml.contains("key"), "{toml}");
        let file = d.path().join(format!("{kind}.toml"));
        std::fs::write(&file, &toml).unwrap();
        let mut argv = vec!["--json", "attack", kind, "--config", file.to_str().unwrap()];
        if kind == "lsb" {
            argv.extend_from_slice(&["--key", KEY]);
        }
        let via_file = ok_json(&memaudit(&argv));
        assert!(from_file.join("run.json").exists(), "--out from the file");
        let direct = ok_json(&attack(
            kind,
            &[&flags[..], &["--json"]].concat(),
            &d.path().join(format!("{kind}-flags")),
        ));
        assert_eq!(via_file["attack"], kind);
        assert_eq!(without_paths(via_file), without_paths(direct), "{kind}");
    }
}
