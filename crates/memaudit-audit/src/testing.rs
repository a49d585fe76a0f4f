//! A deterministic mock language model for tests and examples, so that oracle comparisons (brute
//! force vs trie walk vs extraction) do not depend on a trained network.
//!
//! [`MockLm`] is an n-gram model: its state row holds the last `order` tokens as floats (-1 =
//! none yet); next-token logits are a hash of (seed, context, token), optionally quantised to a
//! few levels to produce exact ties, plus a bonus for continuing a *planted* sequence (when the
//! remembered context ends like the planted sequence before its token j, token j gets `boost`
//! extra nats), which plays the memorised canary. Rows are independent, so results do not depend on batch composition.
//! It counts the rows and calls it was asked to step.

use std::sync::atomic::{AtomicU64, Ordering};

use memaudit_engine::{IncrementalLm, LmState};

pub struct MockLm {
    vocab: usize,
    order: usize,
    seed: u64,
    planted: Vec<Vec<u32>>,
    boost: f32,
    levels: Option<u32>,
    rows: AtomicU64,
    calls: AtomicU64,
}

impl MockLm {
    /// `order` context tokens, logits uniform in [-3, 3) from a hash of `seed`.
    pub fn new(vocab: usize, order: usize, seed: u64) -> Self {
        Self {
            vocab,
            order: order.max(1),
            seed,
            planted: Vec::new(),
            boost: 0.0,
            levels: None,
            rows: 0.into(),
            calls: 0.into(),
        }
    }

    /// Make `sequence` likely: after any prefix of it, its next token gets `boost` extra nats.
    pub fn plant(mut self, sequence: Vec<u32>, boost: f32) -> Self {
        self.planted.push(sequence);
        self.boost = boost;
        self
    }

    /// Quantise the hashed logits to `levels` values, so many candidates tie exactly.
    pub fn quantized(mut self, levels: u32) -> Self {
        self.levels = Some(levels.max(1));
        self
    }

    /// Rows stepped so far.
    pub fn rows_stepped(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// `step` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn reset_counters(&self) {
        self.rows.store(0, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }

    fn row_log_probs(&self, context: &[f32], out: &mut [f32]) {
        let mut h = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        for &c in context {
            h = splitmix(h ^ (c as i64 as u64));
        }
        let mut logits = vec![0f64; self.vocab];
        for (v, l) in logits.iter_mut().enumerate() {
            let u = (splitmix(h ^ (v as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)) >> 11) as f64
                / (1u64 << 53) as f64;
            *l = match self.levels {
                Some(k) => (u * k as f64).floor(),
                None => 6.0 * u - 3.0,
            };
        }
        // Wherever the context ends like the planted sequence before its token j (over the
        // whole remembered context, or all of p[..j] when shorter), boost p[j].
        let known: Vec<u32> = context
            .iter()
            .filter(|&&c| c >= 0.0)
            .map(|&c| c as u32)
            .collect();
        for p in &self.planted {
            for j in 1..p.len() {
                let m = j.min(self.order);
                if m <= known.len() && known[known.len() - m..] == p[j - m..j] {
                    logits[p[j] as usize] += self.boost as f64;
                }
            }
        }
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        for (o, l) in out.iter_mut().zip(&logits) {
            *o = (l - lse) as f32;
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl IncrementalLm for MockLm {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn state_width(&self) -> usize {
        self.order
    }

    fn initial_state(&self, rows: usize) -> LmState {
        LmState {
            rows,
            width: self.order,
            data: vec![-1.0; rows * self.order],
        }
    }

    fn step(&self, state: &mut LmState, tokens: &[u32], log_probs: &mut [f32]) {
        assert_eq!(state.rows, tokens.len(), "MockLm::step: one token per row");
        assert_eq!(
            log_probs.len(),
            state.rows * self.vocab,
            "MockLm::step: log_probs is [rows, vocab]"
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(state.rows as u64, Ordering::Relaxed);
        let w = self.order;
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut state.data[r * w..(r + 1) * w];
            row.copy_within(1.., 0);
            row[w - 1] = t as f32;
            let ctx = row.to_vec();
            self.row_log_probs(&ctx, &mut log_probs[r * self.vocab..(r + 1) * self.vocab]);
        }
    }
}
