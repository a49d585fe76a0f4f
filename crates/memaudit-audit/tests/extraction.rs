//! Best-first extraction against a brute-force sort of the whole space (mock LM).

mod common;

use common::*;
use memaudit_audit::testing::MockLm;
use memaudit_audit::{ExtractOptions, Scorer, StopReason, WalkOptions, extract};

/// Every candidate of R sorted by (log-perplexity, index): what exact Dijkstra must emit.
fn brute_force_order(scores: &[f64]) -> Vec<u128> {
    let mut order: Vec<u128> = (0..scores.len() as u128).collect();
    order.sort_by(|&a, &b| {
        scores[a as usize]
            .total_cmp(&scores[b as usize])
            .then(a.cmp(&b))
    });
    order
}

/// Whole 10^4 space (with and without exact ties): identical order and identical scores, for
/// several batch sizes.
#[test]
fn extraction_order_identical_to_brute_force_sort() {
    let tpl = tokenized("pin {digits:4}");
    let v = common::VOCAB.chars().count();
    for lm in [
        MockLm::new(v, 6, 21).plant(planted_sequence(&tpl, 777), 2.0),
        MockLm::new(v, 6, 21).quantized(2),
    ] {
        let oracle: Vec<f64> = (0..10_000u128)
            .map(|i| oracle_score(&lm, &tpl, i))
            .collect();
        let want = brute_force_order(&oracle);
        let scorer = Scorer::new(&lm, &tpl, WalkOptions::default()).unwrap();
        for batch in [1, 7, 256] {
            let got = extract(
                &scorer,
                &ExtractOptions {
                    batch,
                    max_candidates: usize::MAX,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(got.stop, StopReason::Exhausted);
            assert!(got.exact);
            let idx: Vec<u128> = got.candidates.iter().map(|c| c.index).collect();
            assert_eq!(idx, want, "batch {batch}");
            assert!(
                got.candidates
                    .iter()
                    .all(|c| c.log_perplexity == oracle[c.index as usize])
            );
            // every internal node expanded exactly once: 1 + 10 + 100 + 1000
            assert_eq!(got.expansions, 1111, "batch {batch}");
        }
    }
}

/// A 5^7 = 78,125 space (<= 1e5): the first 3,000 candidates, the target's position, the cost.
#[test]
fn extraction_top_candidates_on_a_larger_space() {
    let tpl = tokenized("key {alphabet=ABCDE:7}");
    let v = common::VOCAB.chars().count();
    let secret = 51_234u128;
    let lm = MockLm::new(v, 9, 4).plant(planted_sequence(&tpl, secret), 2.5);
    let scorer = Scorer::new(&lm, &tpl, WalkOptions::default()).unwrap();
    let all = scorer.all_scores(100_000).unwrap();
    let want = brute_force_order(&all.scores);
    let got = extract(
        &scorer,
        &ExtractOptions {
            batch: 64,
            max_candidates: 3000,
            target: Some(secret),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(got.stop, StopReason::CandidateLimit);
    let idx: Vec<u128> = got.candidates.iter().map(|c| c.index).collect();
    assert_eq!(idx, want[..3000]);
    let pos = want.iter().position(|&c| c == secret).unwrap() as u64 + 1;
    assert_eq!(got.target_position, Some(pos));
    // stop at the target: far fewer expansions than the 19,531 internal nodes of the trie
    let found = extract(
        &scorer,
        &ExtractOptions {
            batch: 1,
            max_candidates: usize::MAX,
            target: Some(secret),
            stop_at_target: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(found.stop, StopReason::TargetFound);
    assert_eq!(found.candidates.len() as u64, pos);
    assert!(found.expansions < 19_531 / 4, "{}", found.expansions);
    // Each emitted candidate records the cost at which it came out: a search that stops at it
    // reports the same expansions (the order is deterministic), for several batch sizes.
    for batch in [1, 64] {
        let joint = extract(
            &scorer,
            &ExtractOptions {
                batch,
                max_candidates: 40,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            joint
                .candidates
                .windows(2)
                .all(|w| w[0].expansions <= w[1].expansions)
        );
        for c in joint.candidates.iter().step_by(7) {
            let alone = extract(
                &scorer,
                &ExtractOptions {
                    batch,
                    max_candidates: usize::MAX,
                    target: Some(c.index),
                    stop_at_target: true,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(alone.expansions, c.expansions, "batch {batch}");
        }
    }
}

#[test]
fn budget_and_beam() {
    let tpl = tokenized("pin {digits:5}");
    let v = common::VOCAB.chars().count();
    let lm = MockLm::new(v, 7, 8);
    let scorer = Scorer::new(&lm, &tpl, WalkOptions::default()).unwrap();
    let budget = extract(
        &scorer,
        &ExtractOptions {
            batch: 16,
            max_candidates: usize::MAX,
            max_expansions: Some(500),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(budget.stop, StopReason::Budget);
    assert!(budget.expansions <= 500);
    let exact = extract(
        &scorer,
        &ExtractOptions {
            batch: 16,
            max_candidates: 200,
            ..Default::default()
        },
    )
    .unwrap();
    let beam = extract(
        &scorer,
        &ExtractOptions {
            batch: 16,
            max_candidates: 200,
            beam: Some(300),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!beam.exact);
    // bounded frontier: the cap, its slack (2x) and one batch of children
    assert!(
        beam.peak_frontier <= 2 * 300 + 16 * 10,
        "{}",
        beam.peak_frontier
    );
    assert!(exact.peak_frontier > beam.peak_frontier);
    // emitted in non-decreasing cost, and never cheaper than the exact k-th best
    let costs: Vec<f64> = beam.candidates.iter().map(|c| c.log_perplexity).collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]));
    for (b, e) in beam.candidates.iter().zip(&exact.candidates) {
        assert!(b.log_perplexity >= e.log_perplexity);
    }
    // with a wide beam the top of the list is still found
    assert_eq!(
        (beam.candidates[0].index, beam.candidates[0].log_perplexity),
        (
            exact.candidates[0].index,
            exact.candidates[0].log_perplexity
        )
    );
}
