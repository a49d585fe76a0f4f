//! Batch samplers.
//!
//! DP-SGD's privacy amplification by subsampling assumes *Poisson* sampling: every example joins
//! each batch independently with probability q, so batches have variable (possibly zero) size.
//! That is the default. Shuffled fixed-size batches ("each example once per epoch") are available
//! on request, but then the Poisson epsilon is only an approximation and the trainer reports the
//! no-amplification figure as the guarantee.
//!
//! The Poisson sampler's randomness is part of the mechanism (an adversary who could predict the
//! batches would get no amplification), so it comes from the same kind of CSPRNG as the noise,
//! seeded from the OS unless the run asked for a fixed seed; its state is never checkpointed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingMode {
    /// Each example independently with probability q = batch / n (variable batch size).
    Poisson,
    /// A fresh permutation each epoch, cut into fixed-size batches (the last partial one dropped).
    Shuffle,
}

/// SplitMix64 finaliser of (seed, k): independent per-purpose, per-step seeds from one run seed
/// (the one seed-mixing function of the workspace).
pub fn mix_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stream tags of the seeded sampler (kept apart from the trainer's other per-step streams).
const POISSON_STREAM: u64 = 1 << 40;
const SHUFFLE_STREAM: u64 = 2 << 40;

/// Draws the example indices of successive batches, one per global training step.
///
/// Seeded, the batch of global step t is a function of (seed, t) alone (Poisson: a generator
/// keyed by (seed, t); shuffled: the permutation of window t / (n / batch), keyed by (seed,
/// window)), so a resumed run draws exactly the batches of an uninterrupted one. Unseeded (private
/// runs), one OS-seeded CSPRNG stream feeds every draw. Shuffled windows are aligned to multiples
/// of n / batch global steps; a sampler started mid-window draws a fresh permutation for the rest of
/// it (the privacy ledger charges that window again, see `ledger.rs`).
pub struct BatchSampler {
    mode: SamplingMode,
    n: usize,
    batch: usize,
    seed: Option<u64>,
    rng: ChaCha20Rng,
    perm: Vec<usize>,
    perm_window: Option<u64>,
    step: u64,
}

impl BatchSampler {
    /// `seed = None` seeds from the OS. The first batch is that of step 0.
    pub fn new(mode: SamplingMode, n: usize, batch: usize, seed: Option<u64>) -> Result<Self> {
        Self::starting_at(mode, n, batch, seed, 0)
    }

    /// A sampler whose next batch is that of global step `step` (resumed runs).
    pub fn starting_at(
        mode: SamplingMode,
        n: usize,
        batch: usize,
        seed: Option<u64>,
        step: u64,
    ) -> Result<Self> {
        if n == 0 {
            return Err(EngineError::Config("the training set is empty".into()));
        }
        if batch == 0 || batch > n {
            return Err(EngineError::Config(format!(
                "batch size {batch} must be between 1 and the dataset size {n}"
            )));
        }
        let rng = match seed {
            Some(s) => ChaCha20Rng::seed_from_u64(s),
            None => ChaCha20Rng::from_os_rng(),
        };
        Ok(Self {
            mode,
            n,
            batch,
            seed,
            rng,
            perm: Vec::new(),
            perm_window: None,
            step,
        })
    }

    /// Sampling probability q = batch / n.
    pub fn sampling_rate(&self) -> f64 {
        self.batch as f64 / self.n as f64
    }

    /// Steps that make one epoch: n / batch for Poisson (rounded up, as TF Privacy counts
    /// `ceil(epochs * n / batch)`), full batches for shuffling.
    pub fn steps_per_epoch(&self) -> usize {
        crate::ledger::steps_per_epoch(self.mode, self.n as u64, self.batch as u64) as usize
    }

    pub fn mode(&self) -> SamplingMode {
        self.mode
    }

    /// Indices of the next batch (sorted for Poisson; may be empty).
    pub fn next_batch(&mut self) -> Vec<usize> {
        let t = self.step;
        self.step += 1;
        let q = self.sampling_rate();
        match self.mode {
            SamplingMode::Poisson => match self.seed {
                Some(s) => {
                    let mut rng = ChaCha20Rng::seed_from_u64(mix_seed(s, POISSON_STREAM + t));
                    poisson(&mut rng, self.n, q)
                }
                None => poisson(&mut self.rng, self.n, q),
            },
            SamplingMode::Shuffle => {
                let per_window = (self.n / self.batch) as u64;
                let window = t / per_window;
                if self.perm_window != Some(window) {
                    self.perm = (0..self.n).collect();
                    let mut keyed;
                    let rng = match self.seed {
                        Some(s) => {
                            keyed =
                                ChaCha20Rng::seed_from_u64(mix_seed(s, SHUFFLE_STREAM + window));
                            &mut keyed
                        }
                        None => &mut self.rng,
                    };
                    // Fisher-Yates.
                    for i in (1..self.n).rev() {
                        let j = rng.random_range(0..=i);
                        self.perm.swap(i, j);
                    }
                    self.perm_window = Some(window);
                }
                let pos = (t % per_window) as usize * self.batch;
                self.perm[pos..pos + self.batch].to_vec()
            }
        }
    }
}

/// Poisson sampling by geometric gaps: O(q n) work per batch instead of n coin flips.
fn poisson(rng: &mut ChaCha20Rng, n: usize, q: f64) -> Vec<usize> {
    if q >= 1.0 {
        return (0..n).collect();
    }
    let log1mq = (-q).ln_1p();
    let mut out = Vec::with_capacity((q * n as f64 * 1.2) as usize + 4);
    let mut i: f64 = -1.0;
    loop {
        // Gap to the next included example: Geometric(q) on {1, 2, ...}.
        let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        i += (u.ln() / log1mq).floor() + 1.0;
        if i >= n as f64 {
            break;
        }
        out.push(i as usize);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_inclusion_frequency_and_batch_size_distribution() {
        // Each example must be included with probability q, independently. Over S batches the
        // count for one example is Binomial(S, q); check every example's frequency within 5 sigma
        // and the batch-size mean and variance against n q and n q (1 - q).
        let (n, b, s) = (500usize, 25usize, 4000usize);
        let q = b as f64 / n as f64;
        let mut sampler = BatchSampler::new(SamplingMode::Poisson, n, b, Some(11)).unwrap();
        let mut counts = vec![0usize; n];
        let mut sizes = Vec::with_capacity(s);
        for _ in 0..s {
            let batch = sampler.next_batch();
            assert!(batch.windows(2).all(|w| w[0] < w[1]));
            sizes.push(batch.len() as f64);
            for i in batch {
                counts[i] += 1;
            }
        }
        let sd = (s as f64 * q * (1.0 - q)).sqrt();
        for (i, &c) in counts.iter().enumerate() {
            assert!(
                (c as f64 - s as f64 * q).abs() < 5.0 * sd,
                "example {i}: {c} inclusions, expected {}",
                s as f64 * q
            );
        }
        let mean = sizes.iter().sum::<f64>() / s as f64;
        let var = sizes.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (s - 1) as f64;
        assert!((mean - n as f64 * q).abs() < 0.3, "mean batch {mean}");
        assert!(
            (var / (n as f64 * q * (1.0 - q)) - 1.0).abs() < 0.1,
            "batch-size variance {var}"
        );
        // Empty batches occur with probability (1-q)^n: rare above, common on a tiny set.
        let mut tiny = BatchSampler::new(SamplingMode::Poisson, 4, 1, Some(3)).unwrap();
        assert!((0..200).any(|_| tiny.next_batch().is_empty()));
    }

    #[test]
    fn shuffle_covers_each_example_once_per_epoch() {
        let mut s = BatchSampler::new(SamplingMode::Shuffle, 10, 3, Some(1)).unwrap();
        assert_eq!(s.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|_| s.next_batch()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
    }

    #[test]
    fn a_seeded_sampler_started_mid_run_draws_the_same_batches() {
        // Resume = a new sampler at the checkpoint's step: it must continue the same sequence.
        for mode in [SamplingMode::Poisson, SamplingMode::Shuffle] {
            let mut whole = BatchSampler::new(mode, 50, 7, Some(9)).unwrap();
            let all: Vec<Vec<usize>> = (0..30).map(|_| whole.next_batch()).collect();
            for start in [0u64, 7, 10, 13] {
                let mut part = BatchSampler::starting_at(mode, 50, 7, Some(9), start).unwrap();
                for (t, want) in all.iter().enumerate().skip(start as usize) {
                    assert_eq!(&part.next_batch(), want, "{mode:?} from {start}, step {t}");
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(BatchSampler::new(SamplingMode::Poisson, 10, 11, None).is_err());
        assert!(BatchSampler::new(SamplingMode::Poisson, 10, 0, None).is_err());
        assert!(BatchSampler::new(SamplingMode::Poisson, 0, 1, None).is_err());
    }
}
