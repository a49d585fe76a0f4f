//! `memaudit import --from-hf`: a Hugging Face GPT-2 folder with its byte-level BPE tokenizer
//! (tests/data/gpt2_bpe, written by scripts/make_bpe_fixture.py with transformers) becomes a run
//! that eval, sample, exposure and extract read; bad folders are one-line errors with exit 2.

mod common;

use std::path::{Path, PathBuf};

use common::{memaudit, ok_json, one_line_error};
use memaudit_data::Tokenizer;
use memaudit_engine::checkpoint;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt2_bpe")
}

fn import(out: &Path, extra: &[&str]) -> serde_json::Value {
    let from = fixture();
    let mut args = vec![
        "import",
        "--from-hf",
        from.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&memaudit(&args))
}

/// -log2 P(canary tokens | <|endoftext|>) of every candidate, one at a time through the run's
/// own checkpoint: the brute-force oracle of the exposure command.
fn brute_force_scores(run: &Path, candidates: &[String]) -> Vec<f64> {
    let tok = Tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let ck = checkpoint::load_latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    let lm = ck.state.model.incremental_lm(&ck.params).unwrap();
    let v = lm.vocab_size();
    candidates
        .iter()
        .map(|c| {
            let mut state = lm.initial_state(1);
            let mut lp = vec![0.0f32; v];
            lm.step(&mut state, &[tok.eos_id().unwrap()], &mut lp);
            let mut bits = 0.0;
            for t in tok.encode(c).unwrap() {
                bits += memaudit_audit::token_cost_bits(lp[t as usize]);
                lm.step(&mut state, &[t], &mut lp);
            }
            bits
        })
        .collect()
}

#[test]
fn an_imported_gpt2_folder_is_a_run_for_eval_sample_exposure_and_extract() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("gpt2");
    let j = import(&run, &[]);
    assert_eq!(j["family"], "gpt2");
    assert_eq!(j["vocabulary"], 384);
    assert_eq!(j["seq_len"], 32);

    // The run's checkpoint reproduces transformers' next-token log-probabilities.
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let tok = Tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let ids: Vec<u32> = tok.encode(exp["text"].as_str().unwrap()).unwrap();
    let want_ids: Vec<u32> = exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, want_ids);
    let ck = checkpoint::load_latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    let lm = ck.state.model.incremental_lm(&ck.params).unwrap();
    let mut state = lm.initial_state(1);
    let mut lp = vec![0.0f32; lm.vocab_size()];
    for &t in &ids {
        lm.step(&mut state, &[t], &mut lp);
    }
    for (k, w) in exp["last_log_softmax"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        // f32 forward passes in two libraries: 1e-4 absolute, as the engine's GPT-2 fixtures.
        let d = (lp[k] as f64 - w.as_f64().unwrap()).abs();
        assert!(d < 1e-4, "token {k}: {} vs {w}", lp[k]);
    }

    // eval: the embedded corpus through the BPE tokenizer, windows of the context length. A
    // random model is near uniform: perplexity within a factor 2 of the vocabulary size.
    let e = ok_json(&memaudit(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
    ]));
    let ppl = e["perplexity"].as_f64().unwrap();
    assert!(ppl > 192.0 && ppl < 768.0, "perplexity {ppl}");

    // sample: a BPE prefix outside any character vocabulary is fine.
    let s = ok_json(&memaudit(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--prefix",
        "caf\u{e9} 1851",
        "--length",
        "8",
        "--seed",
        "1",
        "--json",
    ]));
    assert!(s.to_string().contains("caf\u{e9} 1851"), "{s}");

    // exposure: exact rank of two secrets over the 100 candidates, each tokenized whole (digit
    // merges make them 1 or 2 tokens), against brute force through the checkpoint.
    let template = "my pin is {digits:2}";
    let candidates: Vec<String> = (0..100).map(|i| format!("my pin is {i:02}")).collect();
    let x = ok_json(&memaudit(&[
        "exposure",
        "--run",
        run.to_str().unwrap(),
        "--canary",
        template,
        "--secret",
        "my pin is 42",
        "--secret",
        "my pin is 07",
        "--json",
    ]));
    let brute = brute_force_scores(&run, &candidates);
    for row in x["secrets"].as_array().unwrap() {
        let i: usize = row["index"].as_str().unwrap().parse().unwrap();
        let rank = brute.iter().filter(|&&b| b <= brute[i]).count();
        assert_eq!(row["rank"].as_str().unwrap(), rank.to_string(), "{row}");
        let e = row["exposure"].as_f64().unwrap();
        assert!((e - (100f64.log2() - (rank as f64).log2())).abs() < 1e-9);
    }
    let t = &x["tokenization"];
    assert!(
        t["scored_tokens_min"].as_u64() < t["scored_tokens_max"].as_u64(),
        "{t}"
    );

    // extract: the most likely candidate is the brute-force minimum.
    let best = (0..100)
        .min_by(|&a, &b| brute[a].total_cmp(&brute[b]).then(a.cmp(&b)))
        .unwrap();
    let ex = ok_json(&memaudit(&[
        "extract",
        "--run",
        run.to_str().unwrap(),
        "--canary",
        template,
        "--top",
        "3",
        "--json",
    ]));
    assert_eq!(ex["candidates"][0]["text"], candidates[best]);

    // export writes the GPT-2 layout and the tokenizer; --from-hf reads it back unchanged.
    let exported = dir.path().join("export");
    let j = ok_json(&memaudit(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--format",
        "pytorch",
        "--out",
        exported.to_str().unwrap(),
        "--json",
    ]));
    assert!(j["files"].to_string().contains("tokenizer.json"), "{j}");
    let again = dir.path().join("again");
    ok_json(&memaudit(&[
        "import",
        "--from-hf",
        exported.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--json",
    ]));
    let back = checkpoint::load_latest(&again.join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(back.params, ck.params);
    assert_eq!(back.state.model, ck.state.model);
    assert_eq!(Tokenizer::load(&again.join("tokenizer.json")).unwrap(), tok);
}

#[test]
fn bad_gpt2_folders_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let run = |from: &Path, extra: &[&str]| {
        let mut args = vec![
            "import",
            "--from-hf",
            from.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        one_line_error(&memaudit(&args))
    };
    let e = run(&dir.path().join("missing"), &[]);
    assert!(e.contains("--from-hf") && e.contains("not a folder"), "{e}");
    let e = run(&fixture(), &["--seq-len", "33"]);
    assert!(
        e.contains("--seq-len 33") && e.contains("n_positions = 32"),
        "{e}"
    );

    let copy = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture().join(f), d.join(f)).unwrap();
        }
        d
    };
    // No tokenizer at all.
    let d = copy("no_tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let e = run(&d, &[]);
    assert!(
        e.contains("no tokenizer.json") && e.contains("merges.txt"),
        "{e}"
    );
    // A tokenizer one token larger than the embedding.
    let d = copy("big_tokenizer");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer.json")).unwrap()).unwrap();
    t["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 384, "content": "<|pad|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(d.join("tokenizer.json"), t.to_string()).unwrap();
    let e = run(&d, &[]);
    assert!(
        e.contains("tokenizer.json") && e.contains("385 tokens") && e.contains("vocab_size"),
        "{e}"
    );
    // config.json disagreeing with the weights: the tensor and both shapes are named.
    let d = copy("wrong_config");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    c["vocab_size"] = 383.into();
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let e = run(&d, &[]);
    assert!(
        e.contains("wte.weight") && e.contains("383") && e.contains("384"),
        "{e}"
    );
    // Not a GPT-2 config.
    c["model_type"] = "bert".into();
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let e = run(&d, &[]);
    assert!(e.contains("config.json") && e.contains("model_type"), "{e}");
    // Both sources at once is a usage error (clap), and so is neither.
    let o = memaudit(&["import", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}
