//! Shared fixtures: a character vocabulary, templates, and the brute-force oracle that scores
//! one candidate at a time from an empty state (no batching, no shared prefixes).
#![allow(dead_code)]

use memaudit_audit::{
    CanaryTemplate, CharTokenizer, IncrementalLm, TokenizedTemplate, token_cost_bits,
};

pub const VOCAB: &str = "\n abcdefghijklmnopqrstuvwxyz0123456789-ABCDE";

pub fn vocab() -> Vec<char> {
    VOCAB.chars().collect()
}

pub fn tokenized(template: &str) -> TokenizedTemplate {
    let t = CanaryTemplate::parse(template).unwrap();
    TokenizedTemplate::new(&t, &CharTokenizer::new(&vocab()), &[0]).unwrap()
}

/// Log-perplexity of candidate `index` by feeding its whole sequence to a fresh 1-row state.
pub fn oracle_score(lm: &dyn IncrementalLm, tpl: &TokenizedTemplate, index: u128) -> f64 {
    let mut symbols = vec![0; tpl.space().radices().len()];
    let mut scored = Vec::new();
    tpl.scored_tokens_into(index, &mut symbols, &mut scored)
        .unwrap();
    let v = lm.vocab_size();
    let mut state = lm.initial_state(1);
    let mut lp = vec![0f32; v];
    for t in tpl.conditioning() {
        lm.step(&mut state, &[t], &mut lp);
    }
    let mut total = 0.0;
    for (j, &t) in scored.iter().enumerate() {
        total += token_cost_bits(lp[t as usize]);
        if j + 1 < scored.len() {
            lm.step(&mut state, &[t], &mut lp);
        }
    }
    total
}

/// Rank by definition: |{i : score_i <= score_secret}|.
pub fn brute_rank(scores: &[f64], secret: u128) -> u128 {
    let s = scores[secret as usize];
    scores.iter().filter(|&&x| x <= s).count() as u128
}

/// The scored tokens of a candidate, to plant it in a mock LM after the conditioning tokens.
pub fn planted_sequence(tpl: &TokenizedTemplate, index: u128) -> Vec<u32> {
    let mut symbols = vec![0; tpl.space().radices().len()];
    let mut scored = Vec::new();
    tpl.scored_tokens_into(index, &mut symbols, &mut scored)
        .unwrap();
    let mut seq = tpl.conditioning();
    seq.extend(scored);
    seq
}
