//! The trie walk's own cost (gathers, scores, leaf bookkeeping), with an LM whose `step` does
//! almost nothing but has the shapes of the 2x200 character LSTM (state width 800 = h and c of
//! two layers, vocabulary 50). The real model's arithmetic comes on top; the walk's share must
//! stay small next to it. Run: `cargo run -p memaudit-audit --release --example walk_overhead`.

use std::time::Instant;

use memaudit_audit::{
    CanaryTemplate, FnTokenizer, IncrementalLm, LmState, Scorer, TokenizedTemplate, WalkOptions,
};

struct ShapeOnlyLm;

impl IncrementalLm for ShapeOnlyLm {
    fn vocab_size(&self) -> usize {
        50
    }
    fn state_width(&self) -> usize {
        800
    }
    fn step(&self, state: &mut LmState, tokens: &[u32], log_probs: &mut [f32]) {
        // touch each state row and write a varying distribution, so nothing is optimised away
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut state.data[r * 800..(r + 1) * 800];
            row[0] += t as f32;
            let lp = &mut log_probs[r * 50..(r + 1) * 50];
            let base = -(50f32.ln()) - 1e-3 * (row[0] % 7.0);
            lp.iter_mut()
                .enumerate()
                .for_each(|(v, o)| *o = base - 1e-4 * v as f32);
        }
    }
}

fn main() {
    let tok = FnTokenizer {
        literal: |s: &str| Ok(s.chars().map(|c| (c as u32) % 40).collect()),
        symbol: |c: char| Ok(c as u32 - '0' as u32 + 40),
    };
    let lm = ShapeOnlyLm;
    for (template, tasks) in [
        ("the random number is {digits:6}", 1),
        ("the random number is {digits:6}", 2),
        ("the random number is {digits:7}", 2),
    ] {
        let t = CanaryTemplate::parse(template).unwrap();
        let tpl = TokenizedTemplate::new(&t, &tok, &[10]).unwrap();
        let chunk_rows = std::env::var("CHUNK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(65_536);
        let scorer = Scorer::new(
            &lm,
            &tpl,
            WalkOptions {
                chunk_rows,
                parallel_tasks: tasks,
            },
        )
        .unwrap();
        let t0 = Instant::now();
        let all = scorer.all_scores(u128::MAX).unwrap();
        let t_all = t0.elapsed();
        let t0 = Instant::now();
        let secrets = [281_265, 12, 999_999, 500_000];
        let ranks = scorer.exact_ranks(&secrets, u128::MAX).unwrap();
        let t_rank = t0.elapsed();
        println!(
            "{template:40} tasks {tasks}: |R| {:>9}  rows stepped {:>8}  all_scores {:>7.1} ms  exact_ranks {:>7.1} ms (rank of {} = {})",
            all.scores.len(),
            all.stats.lm_rows,
            t_all.as_secs_f64() * 1e3,
            t_rank.as_secs_f64() * 1e3,
            secrets[0],
            ranks.ranks[0].rank
        );
    }
}
