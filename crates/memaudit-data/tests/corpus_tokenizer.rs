//! Corpora (files, folders, every bad input) and tokenizers (round trips, vocab JSON, unk, caps,
//! canary alphabet).

use std::fs;

use memaudit_data::tokenizer::{EOS, UNK};
use memaudit_data::{
    DIGITS, DataError, Tokenizer, TokenizerKind, WordVocabOptions, embedded_corpus, read_corpus,
};

#[test]
fn a_folder_is_its_files_sorted_by_name_and_joined() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("b.txt"), "second\n").unwrap();
    fs::write(d.path().join("a.txt"), "first").unwrap(); // no trailing newline: one is inserted
    fs::create_dir(d.path().join("c")).unwrap();
    fs::write(d.path().join("c/x.txt"), "third\n").unwrap();
    fs::write(d.path().join(".hidden"), "skipped\n").unwrap();
    assert_eq!(read_corpus(d.path()).unwrap(), "first\nsecond\nthird\n");
}

#[test]
fn a_leading_bom_is_dropped() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bom.txt");
    fs::write(&p, b"\xEF\xBB\xBFhello\n").unwrap();
    assert_eq!(read_corpus(&p).unwrap(), "hello\n");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nope.txt");
    let e = read_corpus(&p).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }));
    assert!(e.to_string().contains("nope.txt"), "{e}");
}

#[test]
fn invalid_utf8_names_file_line_and_byte() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("latin1.txt");
    fs::write(&p, b"ok line\nsecond caf\xE9\n").unwrap();
    let e = read_corpus(&p).unwrap_err();
    match &e {
        DataError::InvalidUtf8 { line, byte, path } => {
            assert_eq!((*line, *byte), (2, 18)); // "ok line\n" is 8 bytes, "second caf" 10
            assert!(path.ends_with("latin1.txt"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("line 2"), "{e}");
    // The same inside a folder names the file inside it.
    let e = read_corpus(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("latin1.txt") && e.contains("line 2, byte 18"),
        "{e}"
    );
}

#[test]
fn empty_corpora_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("empty.txt");
    fs::write(&p, "").unwrap();
    assert!(matches!(
        read_corpus(&p),
        Err(DataError::EmptyCorpus { folder: false, .. })
    ));
    fs::write(&p, " \n\t\n").unwrap();
    assert!(matches!(
        read_corpus(&p),
        Err(DataError::EmptyCorpus { .. })
    ));
    let empty_dir = d.path().join("none");
    fs::create_dir(&empty_dir).unwrap();
    let e = read_corpus(&empty_dir).unwrap_err();
    assert!(
        matches!(e, DataError::EmptyCorpus { folder: true, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("none"), "{e}");
}

#[test]
fn a_folder_where_a_file_is_needed_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let e = Tokenizer::load(d.path()).unwrap_err();
    assert!(matches!(e, DataError::IsADirectory { .. }), "{e:?}");
    assert!(e.to_string().contains("is a folder"), "{e}");
}

#[test]
fn char_tokenizer_round_trips_exactly() {
    let text = embedded_corpus();
    let tok = Tokenizer::char_from_text(&text, false).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Char);
    assert_eq!(tok.len(), 82); // distinct characters of the embedded corpus
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // Sorted by code point, so ids are stable across runs.
    assert!(tok.tokens().windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn char_tokenizer_unknowns() {
    let tok = Tokenizer::char_from_text("abc", false).unwrap();
    let e = tok.encode("abz").unwrap_err();
    assert!(
        matches!(e, DataError::UnknownToken { ref token, position: 2 } if token == "z"),
        "{e:?}"
    );
    let tok = Tokenizer::char_from_text("abc", true).unwrap();
    let ids = tok.encode("abz").unwrap();
    assert_eq!(ids[2], tok.unk_id().unwrap());
    assert_eq!(tok.decode(&ids).unwrap(), "ab\u{FFFD}");
    assert!(tok.decode(&[99]).is_err());
}

#[test]
fn word_tokenizer_is_ptb_style() {
    let text = " the cat sat \n the dog \n";
    let tok = Tokenizer::word_from_text(text, &WordVocabOptions::default()).unwrap();
    assert_eq!(
        tok.split(text),
        vec!["the", "cat", "sat", EOS, "the", "dog", EOS]
    );
    // <unk> = 0, <eos> = 1, then by count (the: 2), then alphabetical.
    assert_eq!(tok.tokens(), &[UNK, EOS, "the", "cat", "dog", "sat"]);
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids, vec![2, 3, 5, 1, 2, 4, 1]);
    // Decoding normalises whitespace per line.
    assert_eq!(tok.decode(&ids).unwrap(), "the cat sat\nthe dog\n");
    // Out of vocabulary -> <unk>; a literal <unk> (as in PTB) is the same token.
    assert_eq!(tok.encode("the bird <unk>").unwrap(), vec![2, 0, 0]);
    // No trailing newline: no final <eos> (Mikolov's reader).
    assert_eq!(tok.encode("the\nthe").unwrap(), vec![2, 1, 2]);
}

#[test]
fn word_vocabulary_caps() {
    let text = "a a a b b c\nd\n";
    let tok = Tokenizer::word_from_text(
        text,
        &WordVocabOptions {
            max_size: Some(4),
            min_count: 1,
        },
    )
    .unwrap();
    assert_eq!(tok.tokens(), &[UNK, EOS, "a", "b"]);
    assert_eq!(
        tok.decode(&tok.encode(text).unwrap()).unwrap(),
        "a a a b b <unk>\n<unk>\n"
    );
    let tok = Tokenizer::word_from_text(
        text,
        &WordVocabOptions {
            max_size: None,
            min_count: 2,
        },
    )
    .unwrap();
    assert_eq!(tok.tokens(), &[UNK, EOS, "a", "b"]);
    assert!(
        Tokenizer::word_from_text(
            text,
            &WordVocabOptions {
                max_size: Some(1),
                min_count: 1
            }
        )
        .is_err()
    );
}

#[test]
fn a_canary_alphabet_can_be_added() {
    // PTB maps numbers to N: digits are absent until added.
    let mut tok =
        Tokenizer::word_from_text("my number is N\n", &WordVocabOptions::default()).unwrap();
    assert_eq!(
        tok.encode("my number is 4 2").unwrap()[3],
        tok.unk_id().unwrap()
    );
    let before = tok.len();
    let ids = tok.add_tokens(&DIGITS).unwrap();
    assert_eq!(ids, (before as u32..before as u32 + 10).collect::<Vec<_>>());
    assert_eq!(
        tok.add_tokens(&["4", "is"]).unwrap(),
        vec![ids[4], tok.id("is").unwrap()]
    );
    let canary = "my number is 4 2 7";
    assert_eq!(tok.decode(&tok.encode(canary).unwrap()).unwrap(), canary);
    assert!(tok.add_tokens(&["two words"]).is_err());
    let mut chars = Tokenizer::char_from_text("ab", false).unwrap();
    assert!(chars.add_tokens(&["xy"]).is_err());
    assert_eq!(chars.add_tokens(&["7"]).unwrap(), vec![2]);
}

#[test]
fn vocabulary_json_round_trips_through_a_file() {
    let d = tempfile::tempdir().unwrap();
    let mut tok = Tokenizer::word_from_text("x y z\nx\n", &WordVocabOptions::default()).unwrap();
    tok.add_tokens(&DIGITS).unwrap();
    let p = d.path().join("vocab.json");
    tok.save(&p).unwrap();
    let back = Tokenizer::load(&p).unwrap();
    assert_eq!(back, tok);
    assert_eq!(back.encode("x 3\n").unwrap(), tok.encode("x 3\n").unwrap());
    let chars = Tokenizer::char_from_text("héllo\n", true).unwrap();
    assert_eq!(Tokenizer::from_json(&chars.to_json()).unwrap(), chars);
}

#[test]
fn damaged_vocabulary_files_are_errors() {
    let bad = [
        r#"{"format":"other","kind":"char","tokens":["a"],"unk":null,"eos":null}"#,
        r#"{"format":"memaudit-tokenizer/1","kind":"char","tokens":["a","a"],"unk":null,"eos":null}"#,
        r#"{"format":"memaudit-tokenizer/1","kind":"char","tokens":["ab"],"unk":null,"eos":null}"#,
        r#"{"format":"memaudit-tokenizer/1","kind":"word","tokens":["<unk>","x"],"unk":"<unk>","eos":null}"#,
        r#"{"format":"memaudit-tokenizer/1","kind":"word","tokens":["x"],"unk":"<unk>","eos":"<eos>"}"#,
        "not json",
    ];
    for json in bad {
        assert!(
            matches!(Tokenizer::from_json(json), Err(DataError::BadVocab(_))),
            "{json}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("v.json");
    fs::write(&p, bad[1]).unwrap();
    let e = Tokenizer::load(&p).unwrap_err().to_string();
    assert!(e.contains("v.json") && e.contains("twice"), "{e}");
}
