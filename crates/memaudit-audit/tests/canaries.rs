//! Canary generation, insertion inside training windows, the manifest.

mod common;

use common::*;
use memaudit_audit::{
    AuditError, CanaryManifest, generate_canaries, insert_canaries, sample_references,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random "corpus" of lines over the vocabulary: tokens and the positions where lines start.
fn corpus(lines: usize, seed: u64) -> (Vec<u32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tokens = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..lines {
        starts.push(tokens.len());
        for _ in 0..rng.random_range(3..40) {
            tokens.push(rng.random_range(1..37));
        }
        tokens.push(0); // '\n'
    }
    (tokens, starts)
}

#[test]
fn insertions_stay_inside_one_window_and_positions_are_right() {
    let tpl = tokenized("the random number is {digits:6}");
    let terminator = [0u32];
    let (stream, starts) = corpus(3000, 1);
    for window in [32, 50, 100] {
        let mut m = generate_canaries(&tpl, &[0, 1, 4, 16], 5, &terminator, 42).unwrap();
        let out = insert_canaries(&stream, &starts, window, &mut m, 7).unwrap();
        assert_eq!(m.window, window);
        let mut all_positions = Vec::new();
        for c in &m.canaries {
            assert_eq!(c.positions.len(), c.repetitions as usize, "{}", c.id);
            assert!(c.positions.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(c.token_ids, tpl.canary_tokens(c.secret_index).unwrap());
            let len = c.token_ids.len() + terminator.len();
            for &p in &c.positions {
                assert_eq!(
                    &out[p..p + c.token_ids.len()],
                    &c.token_ids[..],
                    "{} at {p}",
                    c.id
                );
                assert_eq!(out[p + c.token_ids.len()], 0, "terminator");
                // example k = out[kW .. kW + W + 1] contains the whole insertion, and the token
                // before it (the line separator) too
                let k = p / window;
                assert!(
                    p > k * window && p + len <= k * window + window + 1,
                    "{} at {p}, window {window}",
                    c.id
                );
                assert_eq!(out[p - 1], 0, "inserted at a line start");
                all_positions.push((p, len));
            }
        }
        // removing the insertions gives back the corpus
        all_positions.sort_unstable();
        let mut back = Vec::new();
        let mut at = 0;
        for (p, len) in all_positions {
            back.extend_from_slice(&out[at..p]);
            at = p + len;
        }
        back.extend_from_slice(&out[at..]);
        assert_eq!(back, stream);
        // the same seeds give the same stream
        let mut again = generate_canaries(&tpl, &[0, 1, 4, 16], 5, &terminator, 42).unwrap();
        assert_eq!(
            insert_canaries(&stream, &starts, window, &mut again, 7).unwrap(),
            out
        );
        assert_eq!(again, m);
    }
}

#[test]
fn manifest_roundtrip_and_contents() {
    let tpl = tokenized("my pin is {digits:4}");
    let (stream, starts) = corpus(500, 2);
    let mut m = generate_canaries(&tpl, &[1, 2], 3, &[0], 9).unwrap();
    insert_canaries(&stream, &starts, 40, &mut m, 3).unwrap();
    assert_eq!(m.canaries.len(), 6);
    assert_eq!(m.canaries[0].id, "r1-0");
    assert_eq!(m.canaries[5].id, "r2-2");
    assert_eq!(m.space_size, 10_000);
    assert_eq!(m.template, "my pin is {digits:4}");
    assert_eq!(
        m.canaries[2].text,
        tpl.template().render(m.canaries[2].secret_index).unwrap()
    );
    let mut secrets = m.secret_indices();
    secrets.sort_unstable();
    secrets.dedup();
    assert_eq!(secrets.len(), 6, "distinct secrets");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canaries.json");
    m.save(&path).unwrap();
    assert_eq!(CanaryManifest::load(&path).unwrap(), m);
    // |R| above u64 survives the JSON roundtrip
    let big = tokenized("{letters:20}");
    let mb = generate_canaries(&big, &[1], 2, &[0], 9).unwrap();
    assert_eq!(mb.space_size, 26u128.pow(20));
    mb.save(&path).unwrap();
    assert_eq!(CanaryManifest::load(&path).unwrap(), mb);
    std::fs::write(&path, "{\"format_version\": 1}").unwrap();
    let err = CanaryManifest::load(&path).unwrap_err();
    assert!(err.to_string().contains("canaries.json"), "{err}");
    // references: distinct, disjoint from the secrets, reproducible
    let refs = sample_references(tpl.space(), 2000, &m.secret_indices(), 5).unwrap();
    assert!(refs.iter().all(|r| !m.secret_indices().contains(r)));
    assert_eq!(
        refs,
        sample_references(tpl.space(), 2000, &m.secret_indices(), 5).unwrap()
    );
}

#[test]
fn insertion_errors() {
    let tpl = tokenized("the random number is {digits:9}");
    let (stream, starts) = corpus(50, 3);
    let mut m = generate_canaries(&tpl, &[1], 2, &[0], 1).unwrap();
    let e = insert_canaries(&stream, &starts, 20, &mut m, 1).unwrap_err();
    assert!(
        matches!(e, AuditError::Insertion(ref s) if s.contains("longer window")),
        "{e}"
    );
    let mut m = generate_canaries(&tpl, &[100], 1, &[0], 1).unwrap();
    let e = insert_canaries(&stream, &starts, 100, &mut m, 1).unwrap_err();
    assert!(
        matches!(e, AuditError::Insertion(ref s) if s.contains("boundaries")),
        "{e}"
    );
    let mut m = generate_canaries(&tpl, &[1], 1, &[0], 1).unwrap();
    assert!(insert_canaries(&stream, &[stream.len() + 1], 100, &mut m, 1).is_err());
    // too many secrets for the space
    let small = tokenized("{digits:1}");
    assert!(matches!(
        generate_canaries(&small, &[1, 2], 6, &[0], 1),
        Err(AuditError::NotEnoughCandidates { .. })
    ));
}
