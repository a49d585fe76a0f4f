//! Canaries under a BPE that merges digit runs (docs/transformers.md, "Canaries under BPE"):
//! every candidate rendered and tokenized whole, against brute force (each candidate fed alone,
//! token by token, from the model's initial state).

use std::path::Path;

use memaudit_audit::testing::MockLm;
use memaudit_audit::{
    AuditError, CanaryTemplate, IncrementalLm, RenderedCandidates, check_insertion, token_cost_bits,
};
use memaudit_data::Tokenizer;

fn bpe() -> Tokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../memaudit-data/tests/data/bpe_digits");
    Tokenizer::bpe_from_folder(&dir).unwrap()
}

/// -log2 P(tokens | context), summed over every token of the canary, one candidate at a time.
fn brute_force(lm: &MockLm, context: &[u32], canary: &[u32]) -> f64 {
    let mut state = lm.initial_state(1);
    let mut lp = vec![0.0f32; lm.vocab_size()];
    for &t in context {
        lm.step(&mut state, &[t], &mut lp);
    }
    let mut cost = 0.0;
    for &t in canary {
        cost += token_cost_bits(lp[t as usize]);
        lm.step(&mut state, &[t], &mut lp);
    }
    cost
}

#[test]
fn exposure_over_merged_digit_tokens_matches_brute_force() {
    let tok = bpe();
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    let tpl = CanaryTemplate::parse("my pin is {digits:3}.").unwrap();
    let eos = tok.eos_id().unwrap();
    let r = RenderedCandidates::new(&tpl, &[eos], &encode, 1 << 20).unwrap();
    // The merges make lengths depend on the secret, so one token per digit would be wrong.
    let (lo, hi) = r.scored_lengths();
    assert!(lo < hi, "scored lengths {lo}..{hi}");
    let per_digit = (0..1000u128)
        .filter(|&i| {
            let text = tpl.render(i).unwrap();
            let digits: Vec<u32> = text
                .chars()
                .filter(char::is_ascii_digit)
                .map(|c| tok.id(&c.to_string()).unwrap())
                .collect();
            r.canary_tokens(i)
                .unwrap()
                .windows(3)
                .any(|w| w == digits.as_slice())
        })
        .count();
    assert!(
        per_digit < 500,
        "{per_digit} of 1000 candidates are one token per digit"
    );

    // A model that has memorised one canary (its whole token sequence after <|endoftext|>).
    let secret = 407u128;
    let mut planted = vec![eos];
    planted.extend(r.canary_tokens(secret).unwrap());
    let lm = MockLm::new(tok.len(), 4, 3).plant(planted, 6.0);
    let mut context = vec![eos];
    let exact = r.exact_ranks(&lm, &[secret, 5, 999], 64).unwrap();

    // Brute force: full canary cost from the initial state; the common prefix's cost is the
    // same constant for every candidate, so differences and ranks must agree.
    let brute: Vec<f64> = (0..1000u128)
        .map(|i| brute_force(&lm, &context, &r.canary_tokens(i).unwrap()))
        .collect();
    let scores = r.all_scores(&lm, 64).unwrap();
    let offset = brute[0] - scores[0];
    for (i, (b, s)) in brute.iter().zip(&scores).enumerate() {
        // Same f32 log-probabilities summed in f64 in a different grouping: 1e-9 bits.
        assert!(
            (b - offset - s).abs() < 1e-9,
            "candidate {i}: {b} - {offset} vs {s}"
        );
    }
    for e in &exact {
        let rank = brute
            .iter()
            .filter(|&&b| b <= brute[e.index as usize])
            .count() as u128;
        assert_eq!(e.rank, rank, "candidate {}", e.index);
    }
    // The memorised canary ranks first: exposure log2 1000.
    assert_eq!(exact[0].rank, 1);
    assert!((exact[0].exposure - 1000f64.log2()).abs() < 1e-12);
    assert!(exact[1].rank > 1 && exact[2].rank > 1);
    assert_eq!(r.best(&lm, 1, 64).unwrap()[0].0, secret);
    // Batch size does not change the scores (rows are independent in the mock).
    assert_eq!(r.all_scores(&lm, 7).unwrap(), scores);
    // Context matters: without <|endoftext|> the conditioning is the common prefix alone.
    context.clear();
    let r0 = RenderedCandidates::new(&tpl, &context, &encode, 1 << 20).unwrap();
    assert_eq!(r0.conditioning(), r.conditioning()[1..].to_vec());
}

#[test]
fn refusals_name_what_is_wrong() {
    let tok = bpe();
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    let tpl = CanaryTemplate::parse("{digits:4}").unwrap();
    assert!(matches!(
        RenderedCandidates::new(&tpl, &[0], &encode, 1000),
        Err(AuditError::SpaceAboveLimit { .. })
    ));
    // No context and nothing shared before the digits: nothing to condition on.
    let one = CanaryTemplate::parse("{digits:2}").unwrap();
    assert!(matches!(
        RenderedCandidates::new(&one, &[], &encode, 1000),
        Err(AuditError::EmptyContext)
    ));
    let r = RenderedCandidates::new(&one, &[0], &encode, 1000).unwrap();
    let small = MockLm::new(10, 2, 1);
    assert!(matches!(
        r.all_scores(&small, 16),
        Err(AuditError::TokenOutOfVocab { .. })
    ));
}

#[test]
fn a_canary_that_merges_with_the_corpus_is_detected() {
    let tok = bpe();
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    check_insertion(&encode, "the whale.\n", "my pin is 123", "\nCall me").unwrap();
    // The digit run continues into the text after it: "1234" merges differently.
    let err = check_insertion(&encode, "the whale.\n", "my pin is 123", "4 more")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizes differently") && err.contains("end merges with the text after"),
        "{err}"
    );
    // A number split by the insertion point: " 9" + "07" is read as " 90", "7".
    let err = check_insertion(&encode, "code 9", "07 is mine", "\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("start merges with the text before"), "{err}");
}

#[test]
fn one_scoring_gives_the_ranks_the_best_and_its_cost() {
    // The Secret Sharer on a BPE run scores every candidate once and reads ranks, references
    // and the extraction from those scores: they must equal the separate calls.
    let tok = bpe();
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    let tpl = CanaryTemplate::parse("my pin is {digits:2}.").unwrap();
    let newline = tok.encode("\n").unwrap();
    let rc = RenderedCandidates::new(&tpl, &newline, &encode, 1000).unwrap();
    let lm = MockLm::new(tok.len(), 5, 11);
    let all = rc.all_scores(&lm, 7).unwrap();
    let secrets = [3u128, 42, 99];
    assert_eq!(
        rc.ranks_from_scores(&all, &secrets).unwrap(),
        rc.exact_ranks(&lm, &secrets, 7).unwrap()
    );
    assert_eq!(
        memaudit_audit::best_of_scores(&all, 4),
        rc.best(&lm, 4, 7).unwrap()
    );
    assert!(rc.ranks_from_scores(&all[1..], &secrets).is_err());
    // Cost in LM rows: the conditioning once, then every scored token but each first.
    let by_hand: usize = (0..100u128)
        .map(|i| rc.scored_tokens(i).unwrap().len() - 1)
        .sum::<usize>()
        + rc.conditioning().len();
    assert_eq!(rc.lm_rows(), by_hand as u64);
}

#[test]
fn the_insertion_error_names_the_tokens() {
    let tok = bpe();
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    let name = |t: u32| format!("{:?}", tok.token(t).unwrap());
    let err = memaudit_audit::check_insertion_named(&encode, &name, "code 9", "07 is mine", "\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"Ġ90\"") && err.contains("start merges"),
        "{err}"
    );
}
