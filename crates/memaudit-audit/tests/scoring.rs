//! Batch scoring and the trie walk against the one-candidate-at-a-time oracle, with a mock LM.

mod common;

use common::*;
use memaudit_audit::testing::MockLm;
use memaudit_audit::{AuditError, Scorer, WalkOptions, exposure_from_rank, ranks_from_scores};

fn opts(chunk_rows: usize, parallel_tasks: usize) -> WalkOptions {
    WalkOptions {
        chunk_rows,
        parallel_tasks,
    }
}

/// Interior literal ('-'), mixed alphabets. The mock is row-independent and both sides add the
/// same f64 costs in the same order, so scores must be *identical*, whatever the chunking and
/// parallelism.
#[test]
fn trie_scores_identical_to_per_candidate_scoring() {
    let tpl = tokenized("ab {digits:2}-{alphabet=ABCDE:2}{letters:1}");
    let lm = MockLm::new(common::VOCAB.chars().count(), 5, 11);
    let size = tpl.space().size() as usize;
    assert_eq!(size, 100 * 25 * 26);
    let oracle: Vec<f64> = (0..size as u128)
        .map(|i| oracle_score(&lm, &tpl, i))
        .collect();
    for (chunk, tasks) in [(65_536, 1), (7, 1), (1, 1), (100, 3), (13, 8)] {
        let scorer = Scorer::new(&lm, &tpl, opts(chunk, tasks)).unwrap();
        let all = scorer.all_scores(1_000_000).unwrap();
        assert_eq!(all.scores, oracle, "chunk {chunk}, tasks {tasks}");
        assert_eq!(all.stats.leaves, size as u64);
        let some: Vec<u128> = (0..size as u128).step_by(37).collect();
        let batch = scorer.log_perplexities(&some).unwrap();
        assert!(
            batch
                .iter()
                .zip(&some)
                .all(|(b, &i)| *b == oracle[i as usize]),
            "batch scoring"
        );
    }
}

/// 1 conditioning token, then one row per trie node above the leaves: 1 + 10 + ... + 10^4.
#[test]
fn trie_walk_steps_each_prefix_once() {
    let tpl = tokenized("{digits:5}");
    let lm = MockLm::new(common::VOCAB.chars().count(), 4, 3);
    for (chunk, tasks) in [(65_536, 1), (1000, 1), (64, 2)] {
        let scorer = Scorer::new(&lm, &tpl, opts(chunk, tasks)).unwrap();
        lm.reset_counters();
        let all = scorer.all_scores(u128::MAX).unwrap();
        // the scorer read its conditioning token before the reset: count it from the stats
        assert_eq!(
            lm.rows_stepped() + 1,
            1 + 10 + 100 + 1000 + 10_000,
            "chunk {chunk} tasks {tasks}"
        );
        assert_eq!(all.stats.lm_rows, 1 + 10 + 100 + 1000 + 10_000);
        assert_eq!(all.stats.lm_calls, lm.calls() + 1);
        if tasks == 1 {
            // depth-first over chunks: ceil(n_d / chunk) calls per depth at most, per parent chunk
            assert!(
                lm.calls() <= 1 + 1 + 1 + 1 + 10_000u64.div_ceil(chunk as u64) + 10,
                "{}",
                lm.calls()
            );
        }
    }
}

/// Streaming exact ranks (pruned, never storing R) equal ranks by definition over the oracle
/// scores, with and without exact ties (quantised mock), chunked and parallel.
#[test]
fn streaming_ranks_equal_brute_force() {
    let tpl = tokenized("pin {digits:4}");
    let v = common::VOCAB.chars().count();
    let planted = 4321u128;
    let lms = [
        MockLm::new(v, 6, 5).plant(planted_sequence(&tpl, planted), 6.0),
        MockLm::new(v, 6, 5).quantized(3),
    ];
    let secrets: Vec<u128> = vec![planted, 0, 9999, 17, 5000, 1234, 1234, 8888];
    for lm in &lms {
        let oracle: Vec<f64> = (0..10_000u128).map(|i| oracle_score(lm, &tpl, i)).collect();
        let ties = oracle.len() - {
            let mut s = oracle.clone();
            s.sort_by(f64::total_cmp);
            s.dedup();
            s.len()
        };
        for (chunk, tasks) in [(65_536, 1), (9, 1), (50, 3)] {
            let scorer = Scorer::new(lm, &tpl, opts(chunk, tasks)).unwrap();
            let report = scorer.exact_ranks(&secrets, 10_000).unwrap();
            for (r, &s) in report.ranks.iter().zip(&secrets) {
                assert_eq!(
                    r.rank,
                    brute_rank(&oracle, s),
                    "secret {s}, chunk {chunk}, tasks {tasks}, {ties} tied scores"
                );
                assert_eq!(r.log_perplexity, oracle[s as usize]);
                assert_eq!(
                    r.exposure,
                    exposure_from_rank(r.rank, tpl.space().log2_size())
                );
            }
            // the ranks from stored scores agree too
            let all = scorer.all_scores(10_000).unwrap();
            assert_eq!(
                ranks_from_scores(&all.scores, &secrets).unwrap(),
                report.ranks.iter().map(|r| r.rank).collect::<Vec<_>>()
            );
        }
    }
    // the planted canary is the most likely candidate: rank 1, exposure log2 10^4
    let scorer = Scorer::new(&lms[0], &tpl, WalkOptions::default()).unwrap();
    let r = scorer.exact_ranks(&[planted], 10_000).unwrap();
    assert_eq!(r.ranks[0].rank, 1);
    assert!((r.ranks[0].exposure - 10_000f64.log2()).abs() < 1e-12);
    // and pruning skipped most of the trie: only paths cheaper than the planted secret survive
    assert!(r.stats.lm_rows < 1111, "{:?}", r.stats);
}

#[test]
fn limits_and_vocabulary_are_checked() {
    let tpl = tokenized("{digits:6}");
    let lm = MockLm::new(common::VOCAB.chars().count(), 3, 1);
    let scorer = Scorer::new(&lm, &tpl, WalkOptions::default()).unwrap();
    assert!(matches!(
        scorer.all_scores(999_999),
        Err(AuditError::SpaceAboveLimit {
            size: 1_000_000,
            limit: 999_999
        })
    ));
    assert!(matches!(
        scorer.exact_ranks(&[1], 10),
        Err(AuditError::SpaceAboveLimit { .. })
    ));
    assert!(matches!(
        scorer.log_perplexities(&[1_000_000]),
        Err(AuditError::IndexOutOfSpace { .. })
    ));
    let small = MockLm::new(10, 3, 1);
    assert!(matches!(
        Scorer::new(&small, &tpl, WalkOptions::default()),
        Err(AuditError::TokenOutOfVocab { .. })
    ));
}

/// For secrets drawn uniformly from R under a model that never saw them, rank/|R| is uniform, so
/// mean exposure is E[-log2 U] = 1/ln 2 = 1.443 (papers.md 2.1 baseline). 400 secrets: standard
/// error 1.44/20 = 0.072, tolerance 0.3 (the statistical criterion).
#[test]
fn never_inserted_canaries_have_chance_exposure() {
    use rand::SeedableRng;
    let tpl = tokenized("pin {digits:4}");
    let lm = MockLm::new(common::VOCAB.chars().count(), 6, 77);
    let secrets = tpl
        .space()
        .sample_distinct(400, &[], &mut rand_chacha::ChaCha8Rng::seed_from_u64(3))
        .unwrap();
    let scorer = Scorer::new(&lm, &tpl, WalkOptions::default()).unwrap();
    let r = scorer.exact_ranks(&secrets, 10_000).unwrap();
    let mean = r.ranks.iter().map(|x| x.exposure).sum::<f64>() / 400.0;
    assert!(
        (mean - 1.0 / std::f64::consts::LN_2).abs() < 0.3,
        "mean exposure {mean}"
    );
}

/// The engine's LSTM and GRU LMs, whose trie walk goes through the fused `step_children`
/// (parent products once per parent): every candidate's walk score agrees with scoring it as
/// its own sequence (plain `step`) to 1e-3 bits (f32 arithmetic in two summation orders over 5
/// tokens; observed differences are ~1e-5), and the streaming exact ranks agree with sorting
/// the walk's own scores.
#[test]
fn engine_lm_walk_agrees_with_per_candidate_scoring() {
    use rand::SeedableRng;
    let tpl = tokenized("pin {digits:4}");
    let v = common::VOCAB.chars().count();
    for cfg in [
        memaudit_engine::ModelConfig::LstmLm {
            vocab: v,
            embed: 8,
            hidden: 24,
            layers: 2,
            dropout: 0.0,
        },
        memaudit_engine::ModelConfig::GruLm {
            vocab: v,
            embed: 8,
            hidden: 24,
            layers: 2,
            dropout: 0.0,
        },
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // Scaled-up random weights make the distributions far from uniform.
        let params: Vec<f32> = cfg
            .build()
            .unwrap()
            .init_params(&mut rng)
            .iter()
            .map(|w| 4.0 * w)
            .collect();
        let lm = cfg.incremental_lm(&params).unwrap();
        let scorer = Scorer::new(lm.as_ref(), &tpl, opts(512, 1)).unwrap();
        let all = scorer.all_scores(1_000_000).unwrap();
        let every: Vec<u128> = (0..10_000).collect();
        let single = scorer.log_perplexities(&every).unwrap();
        let worst = all
            .scores
            .iter()
            .zip(&single)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "{cfg:?}: {worst}");
        let spread = single.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            - single.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(
            spread > 5.0,
            "weights too flat for a meaningful test: {spread}"
        );
        let secrets: Vec<u128> = (0..10_000).step_by(499).collect();
        let ranks = scorer.exact_ranks(&secrets, 1_000_000).unwrap();
        let sorted = ranks_from_scores(&all.scores, &secrets).unwrap();
        for (r, s) in ranks.ranks.iter().zip(&sorted) {
            // Only a near-tie within the 1e-3-bit disagreement could move a rank.
            assert!((r.rank as i128 - *s as i128).abs() <= 2, "{r:?} vs {s}");
        }
    }
}

/// The sharded walk: for N = 1, 2, 3 and 7 shards (and shards merged in any order) the merged
/// ranks equal the single-process walk's and brute force, with ties (quantised mock), and with
/// the JSON round trip a scheduler task's result takes. The mock is row-independent, so equality
/// is exact; with a real LM, rows may round differently beside other rows (see
/// `Scorer::exact_ranks_shard`).
#[test]
fn sharded_ranks_equal_single_process_for_any_shard_count() {
    use memaudit_audit::{RankShard, merge_rank_shards};
    let tpl = tokenized("pin {digits:4}");
    let v = common::VOCAB.chars().count();
    let planted = 4321u128;
    let lms = [
        MockLm::new(v, 6, 5).plant(planted_sequence(&tpl, planted), 6.0),
        MockLm::new(v, 6, 5).quantized(3),
    ];
    let secrets: Vec<u128> = vec![planted, 0, 9999, 17, 5000, 1234, 8888];
    let log2 = tpl.space().log2_size();
    for lm in &lms {
        let oracle: Vec<f64> = (0..10_000u128).map(|i| oracle_score(lm, &tpl, i)).collect();
        for tasks in [1, 3] {
            let scorer = Scorer::new(lm, &tpl, opts(64, tasks)).unwrap();
            let single = scorer.exact_ranks(&secrets, 10_000).unwrap().ranks;
            for n in [1u64, 2, 3, 7, 64] {
                let mut parts: Vec<RankShard> = (0..n)
                    .map(|i| {
                        let p = scorer.exact_ranks_shard(&secrets, 10_000, i, n).unwrap();
                        serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap()
                    })
                    .collect();
                parts.reverse();
                let merged = merge_rank_shards(&parts, log2).unwrap();
                assert_eq!(merged, single, "{n} shards, {tasks} tasks");
                for (r, &s) in merged.iter().zip(&secrets) {
                    assert_eq!(r.rank, brute_rank(&oracle, s), "{n} shards");
                }
            }
            assert!(scorer.exact_ranks_shard(&secrets, 10_000, 3, 3).is_err());
            assert!(scorer.exact_ranks_shard(&secrets, 10_000, 0, 0).is_err());
        }
    }
    // shards of other secrets are refused
    let scorer = Scorer::new(&lms[0], &tpl, opts(64, 1)).unwrap();
    let a = scorer.exact_ranks_shard(&[1, 2], 10_000, 0, 2).unwrap();
    let b = scorer.exact_ranks_shard(&[1, 3], 10_000, 1, 2).unwrap();
    assert!(merge_rank_shards(&[a.clone(), b], log2).is_err());
    assert!(merge_rank_shards(&[a.clone(), a], log2).is_err(), "overlap");
}
