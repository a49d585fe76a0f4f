//! `memaudit secret-sharer --tokenizer PATH`: the Secret Sharer trained in the tokens of a
//! byte-level BPE (the digit-merging fixture of scripts/make_bpe_fixture.py), with an LSTM and a
//! GPT; exposures equal a brute-force ranking through the run's checkpoint; `exposure --run` and
//! `extract --run` read the run; a canary that would merge with its line is a one-line error;
//! the tokenizer survives `--print-config` / `--config`.

mod common;

use std::path::{Path, PathBuf};

use common::{memaudit, ok_json, one_line_error};
use memaudit_audit::{CanaryManifest, CanaryTemplate, token_cost_bits};
use memaudit_data::Tokenizer;
use memaudit_engine::checkpoint;

fn tokenizer_json() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../memaudit-data/tests/data/bpe_digits/tokenizer.json")
}

/// A small BPE job: the embedded corpus, "my pin is {digits:3}" (digit runs merge, so a
/// candidate takes 1 to 3 digit tokens), 2 canaries repeated 4 and 16 times, 4 held out.
fn bpe_job(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--quiet",
        "secret-sharer",
        "--corpus",
        "embedded",
        "--tokenizer",
        tokenizer_json().to_str().unwrap(),
        "--canary",
        "my pin is {digits:3}",
        "--canaries",
        "2",
        "--repetitions",
        "4,16",
        "--held-out",
        "4",
        "--references",
        "200",
        "--seq-len",
        "32",
        "--max-train",
        "200",
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> serde_json::Value {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok_json(&memaudit(&a))
}

/// -log2 P(canary tokens | context) of every candidate of the run's template, one candidate at a
/// time, each tokenized whole on its own, through the run's checkpoint: the oracle.
fn brute_force(run: &Path) -> (CanaryManifest, Vec<f64>) {
    let tok = Tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let m = CanaryManifest::load(&run.join("canaries.json")).unwrap();
    let tpl = CanaryTemplate::parse(&m.template).unwrap();
    let ck = checkpoint::load_latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    let lm = ck.state.model.incremental_lm(&ck.params).unwrap();
    let v = lm.vocab_size();
    let scores = (0..tpl.space().size())
        .map(|i| {
            let mut state = lm.initial_state(1);
            let mut lp = vec![0.0f32; v];
            for &t in &m.context_tokens {
                lm.step(&mut state, &[t], &mut lp);
            }
            let mut bits = 0.0;
            for t in tok.encode(&tpl.render(i).unwrap()).unwrap() {
                bits += token_cost_bits(lp[t as usize]);
                lm.step(&mut state, &[t], &mut lp);
            }
            bits
        })
        .collect();
    (m, scores)
}

/// Every canary's rank and exact exposure in `canaries` (a result's array) equal the brute-force
/// ones. Tolerance: the run scores candidates in batches of rows, the oracle one row at a time,
/// so scores agree to float rounding (~1e-5 bits); candidates within 1e-3 bits of a canary may
/// fall on either side of it.
fn check_against_brute_force(run: &Path, canaries: &serde_json::Value) {
    const TIE_BITS: f64 = 1e-3;
    let (m, bf) = brute_force(run);
    let log2_r = (bf.len() as f64).log2();
    let rows = canaries.as_array().unwrap();
    assert_eq!(rows.len(), m.canaries.len());
    for (row, c) in rows.iter().zip(&m.canaries) {
        assert_eq!(row["id"], c.id.as_str());
        let s = bf[c.secret_index as usize];
        let lo = bf.iter().filter(|&&x| x < s - TIE_BITS).count() + 1;
        let hi = bf.iter().filter(|&&x| x <= s + TIE_BITS).count();
        let rank = row["rank"].as_u64().unwrap() as usize;
        assert!(
            (lo..=hi).contains(&rank),
            "{}: rank {rank}, brute force {lo}..={hi}",
            c.id
        );
        let exposure = row["exposure"].as_f64().unwrap();
        assert!(exposure.is_finite() && exposure >= 0.0, "{row}");
        assert!(
            (exposure - (log2_r - (rank as f64).log2())).abs() < 1e-9,
            "{row}"
        );
        // Log-perplexities differ from the oracle's by one constant (the tokens every candidate
        // starts with are read as conditioning, not scored).
        let first = &rows[0];
        let d_run =
            row["log_perplexity"].as_f64().unwrap() - first["log_perplexity"].as_f64().unwrap();
        let d_bf = s - bf[m.canaries[0].secret_index as usize];
        assert!(
            (d_run - d_bf).abs() < TIE_BITS,
            "{}: {d_run} vs {d_bf}",
            c.id
        );
    }
}

#[test]
fn a_bpe_lstm_run_has_exact_exposures_and_is_read_by_exposure_and_extract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lstm");
    let j = run(&bpe_job(
        &out,
        &[
            "--rnn-hidden",
            "32",
            "--rnn-layers",
            "1",
            "--embed",
            "16",
            "--epochs",
            "2",
        ],
    ));
    assert_eq!(
        j["tokenization"]["conditioning_tokens"].as_u64(),
        Some(7),
        "{j}"
    );
    assert!(
        j["tokenization"]["scored_tokens_min"].as_u64()
            < j["tokenization"]["scored_tokens_max"].as_u64(),
        "digit runs merge: candidates differ in length: {j}"
    );
    check_against_brute_force(&out, &j["canaries"]);
    for s in j["by_repetitions"].as_array().unwrap() {
        assert!(s["exposure_mean"].as_f64().unwrap().is_finite(), "{s}");
        assert!(s["extracted"].as_u64().is_some(), "{s}");
    }
    // The manifest: every canary's tokens are the fixture's for its text alone, read after a
    // newline token.
    let tok = Tokenizer::load(&out.join("tokenizer.json")).unwrap();
    let m = CanaryManifest::load(&out.join("canaries.json")).unwrap();
    assert_eq!(m.context_tokens, tok.encode("\n").unwrap());
    for c in &m.canaries {
        assert_eq!(c.token_ids, tok.encode(&c.text).unwrap());
    }

    // `exposure --run` measures the same exact exposures from the run folder.
    let e = ok_json(&memaudit(&[
        "--quiet",
        "exposure",
        "--run",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(e["exact"], true);
    for (a, b) in e["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .zip(j["canaries"].as_array().unwrap())
    {
        assert_eq!(a["rank"], b["rank"]);
        assert_eq!(a["exposure"], b["exposure"]);
    }
    // `extract --run` (the run's template by default) returns the brute-force best first and
    // marks the inserted canaries.
    let x = ok_json(&memaudit(&[
        "--quiet",
        "extract",
        "--run",
        out.to_str().unwrap(),
        "--top",
        "5",
        "--json",
    ]));
    let (m, bf) = brute_force(&out);
    let best = (0..bf.len())
        .min_by(|&a, &b| bf[a].total_cmp(&bf[b]))
        .unwrap();
    let tpl = CanaryTemplate::parse(&m.template).unwrap();
    let top = &x["candidates"][0];
    let top_text = top["text"].as_str().unwrap();
    let top_index = tpl.candidate_index(top_text).unwrap() as usize;
    // Tolerance as in check_against_brute_force: the best may tie with another within 1e-3.
    assert!(
        bf[top_index] <= bf[best] + 1e-3,
        "{top_text} vs {}",
        tpl.render(best as u128).unwrap()
    );
    assert_eq!(x["exact"], true);
    assert_eq!(x["canaries"].as_array().unwrap().len(), m.canaries.len());
    for c in x["candidates"].as_array().unwrap() {
        if let Some(id) = c["canary"].as_str() {
            let mc = m.canaries.iter().find(|k| k.id == id).unwrap();
            assert_eq!(c["text"], mc.text.as_str());
        }
    }
}

#[test]
fn a_bpe_gpt_run_has_exact_exposures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gpt");
    let j = run(&bpe_job(
        &out,
        &[
            "--model",
            "gpt",
            "--gpt-layers",
            "1",
            "--gpt-width",
            "32",
            "--gpt-heads",
            "2",
            "--gpt-context",
            "32",
            "--epochs",
            "1",
        ],
    ));
    check_against_brute_force(&out, &j["canaries"]);
    assert!(j["valid_loss"].as_f64().unwrap().is_finite());
}

#[test]
fn a_canary_that_merges_with_its_line_is_a_one_line_error() {
    // The fixture plus GPT-2's merge of two newlines ("ĊĊ"): a template ending in a newline
    // joins the newline inserted after it, so the model would read other tokens than those
    // scored. Detected before training, naming the canary, the side and the tokens.
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tokenizer_json()).unwrap()).unwrap();
    let n = v["model"]["vocab"].as_object().unwrap().len();
    v["model"]["vocab"]["ĊĊ"] = serde_json::json!(n);
    v["model"]["merges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(["Ċ", "Ċ"]));
    let tj = dir.path().join("tokenizer.json");
    std::fs::write(&tj, v.to_string()).unwrap();
    let out = dir.path().join("merged");
    let mut args = bpe_job(&out, &["--epochs", "1"]);
    args.retain(|a| a != "--json");
    let t = args.iter().position(|a| a == "--tokenizer").unwrap();
    args[t + 1] = tj.to_str().unwrap().into();
    let c = args.iter().position(|a| a == "--canary").unwrap();
    args[c + 1] = "my pin is {digits:3}\n".into();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = one_line_error(&memaudit(&a));
    assert!(
        err.contains("--canary")
            && err.contains("tokenizes differently inside the text than alone")
            && err.contains("end merges with the text after it")
            && err.contains("\"ĊĊ\""),
        "{err}"
    );
    assert!(!out.join("checkpoints").exists(), "nothing trained");
}

#[test]
fn the_tokenizer_round_trips_through_print_config_and_bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cfg");
    let mut args = bpe_job(&out, &["--print-config"]);
    args.retain(|a| a != "--json");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = memaudit(&a);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let toml = String::from_utf8(printed.stdout).unwrap();
    assert!(toml.contains("level = \"bpe\""), "{toml}");
    assert!(
        toml.contains(&format!(
            "tokenizer = {:?}",
            tokenizer_json().to_str().unwrap()
        )),
        "{toml}"
    );
    let file = dir.path().join("ss.toml");
    std::fs::write(&file, &toml).unwrap();
    let again = memaudit(&[
        "--quiet",
        "secret-sharer",
        "--config",
        file.to_str().unwrap(),
        "--print-config",
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), toml);

    // Bad input: one line, exit 2, naming the flag.
    let tj = tokenizer_json();
    let base = [
        "--quiet",
        "secret-sharer",
        "--canary",
        "my pin is {digits:3}",
        "--out",
    ];
    let o = out.to_str().unwrap();
    let err = one_line_error(&memaudit(
        &[
            &base[..],
            &[o, "--tokenizer", tj.to_str().unwrap(), "--level", "word"],
        ]
        .concat(),
    ));
    assert!(
        err.contains("--tokenizer") && err.contains("level bpe"),
        "{err}"
    );
    let err = one_line_error(&memaudit(&[&base[..], &[o, "--level", "bpe"]].concat()));
    assert!(
        err.contains("--level bpe") && err.contains("--tokenizer"),
        "{err}"
    );
    let missing = dir.path().join("nope.json");
    let err = one_line_error(&memaudit(
        &[&base[..], &[o, "--tokenizer", missing.to_str().unwrap()]].concat(),
    ));
    assert!(
        err.contains("--tokenizer") && err.contains("nope.json"),
        "{err}"
    );
    // A character tokenizer is not a BPE.
    let char_run = dir.path().join("char.json");
    Tokenizer::char_from_text("ab\n", false)
        .unwrap()
        .save(&char_run)
        .unwrap();
    let err = one_line_error(&memaudit(
        &[&base[..], &[o, "--tokenizer", char_run.to_str().unwrap()]].concat(),
    ));
    assert!(
        err.contains("--tokenizer") && err.contains("not a byte-level BPE"),
        "{err}"
    );
    // The default template's 10^9 candidates cannot all be rendered.
    let err = one_line_error(&memaudit(&[
        "--quiet",
        "secret-sharer",
        "--out",
        o,
        "--tokenizer",
        tj.to_str().unwrap(),
    ]));
    assert!(err.contains("--exact-limit"), "{err}");
}
