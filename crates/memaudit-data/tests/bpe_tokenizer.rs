//! Byte-level BPE through the `tokenizers` crate, against the fixture written by
//! `scripts/make_bpe_fixture.py` (Hugging Face `tokenizers` in Python produced `expected.json`).

use std::path::{Path, PathBuf};

use memaudit_data::{END_OF_TEXT, Tokenizer, TokenizerKind, embedded_corpus};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bpe_digits")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encodes_and_decodes_as_the_python_library() {
    let tok = Tokenizer::bpe_from_folder(&fixture()).unwrap();
    let exp = expected();
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.len() as u64, exp["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.eos_id(), tok.id(END_OF_TEXT));
    assert!(tok.eos_id().is_some());
    for p in exp["probes"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&p["ids"]), "ids of {text:?}");
        let names: Vec<&str> = got.iter().map(|&i| tok.token(i).unwrap()).collect();
        let want: Vec<&str> = p["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(names, want, "token strings of {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), p["decoded"].as_str().unwrap());
    }
}

#[test]
fn vocab_and_merges_give_the_same_tokenizer_as_tokenizer_json() {
    let dir = fixture();
    let json = Tokenizer::bpe_from_folder(&dir).unwrap();
    let vm =
        Tokenizer::bpe_from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
    // The special token lives in tokenizer.json's added tokens; vocab.json has it too.
    assert_eq!(vm.tokens(), json.tokens());
    let text: &str = &embedded_corpus().chars().take(20_000).collect::<String>();
    assert_eq!(vm.encode(text).unwrap(), json.encode(text).unwrap());
    for p in expected()["probes"].as_array().unwrap() {
        let t = p["text"].as_str().unwrap();
        assert_eq!(vm.encode(t).unwrap(), ids(&p["ids"]), "{t:?}");
    }
}

#[test]
fn round_trips_text_and_its_own_json() {
    let tok = Tokenizer::bpe_from_folder(&fixture()).unwrap();
    // Byte-level BPE is lossless: any text decodes back exactly.
    let text: &str = &embedded_corpus().chars().take(50_000).collect::<String>();
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() < text.len(), "merges shorten the text");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // memaudit's JSON (saved with a run) and the raw tokenizer.json both load back equal.
    let back = Tokenizer::from_json(&tok.to_json()).unwrap();
    assert_eq!(back, tok);
    assert_eq!(back.encode(text).unwrap(), ids);
    let raw = Tokenizer::from_json(&tok.huggingface_json().unwrap()).unwrap();
    assert_eq!(raw, tok);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    assert_eq!(Tokenizer::load(&path).unwrap(), tok);
}

#[test]
fn digit_runs_merge_so_a_number_is_not_one_token_per_digit() {
    let tok = Tokenizer::bpe_from_folder(&fixture()).unwrap();
    let multi = expected()["multi_digit_tokens"].as_array().unwrap().len();
    assert!(multi > 10, "{multi} multi-digit tokens");
    let count = |n: &str| {
        let all = tok.encode(&format!("my pin is {n}")).unwrap();
        all.len() - tok.encode("my pin is").unwrap().len()
    };
    // Four digits take fewer than four tokens, and how many depends on the digits.
    let lengths: Vec<usize> = (0..10_000)
        .step_by(37)
        .map(|i| count(&format!("{i:04}")))
        .collect();
    assert!(lengths.iter().all(|&l| l < 5));
    assert!(lengths.iter().any(|&l| l < 4));
    assert!(lengths.iter().min() != lengths.iter().max());
    // The literal's trailing space joins the first digit: "my pin is " alone ends in a token
    // that the canary never contains.
    let alone = tok.encode("my pin is ").unwrap();
    let inside = tok.encode("my pin is 1234").unwrap();
    assert!(!inside.starts_with(&alone));
}

#[test]
fn bad_tokenizers_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::bpe_from_folder(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no tokenizer.json") && err.contains("vocab.json"),
        "{err}"
    );
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("tokenizer.json")).unwrap())
            .unwrap();
    v["model"]["type"] = "WordPiece".into();
    std::fs::write(dir.path().join("tokenizer.json"), v.to_string()).unwrap();
    let err = Tokenizer::bpe_from_folder(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("model.type") && err.contains("WordPiece"),
        "{err}"
    );
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let err = Tokenizer::bpe_from_folder(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let mut tok = Tokenizer::bpe_from_folder(&fixture()).unwrap();
    let err = tok.add_tokens(&["0"]).unwrap_err().to_string();
    assert!(err.contains("BPE vocabulary is fixed"), "{err}");
}
