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

/// Draws the example indices of successive batches.
pub struct BatchSampler {
    mode: SamplingMode,
    n: usize,
    batch: usize,
    rng: ChaCha20Rng,
    perm: Vec<usize>,
    pos: usize,
}

impl BatchSampler {
    /// `seed = None` seeds from the OS.
    pub fn new(mode: SamplingMode, n: usize, batch: usize, seed: Option<u64>) -> Result<Self> {
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
            rng,
            perm: Vec::new(),
            pos: usize::MAX,
        })
    }

    /// Sampling probability q = batch / n.
    pub fn sampling_rate(&self) -> f64 {
        self.batch as f64 / self.n as f64
    }

    /// Steps that make one epoch: n / batch for Poisson (rounded up, as TF Privacy counts
    /// `ceil(epochs * n / batch)`), full batches for shuffling.
    pub fn steps_per_epoch(&self) -> usize {
        match self.mode {
            SamplingMode::Poisson => self.n.div_ceil(self.batch),
            SamplingMode::Shuffle => self.n / self.batch,
        }
    }

    pub fn mode(&self) -> SamplingMode {
        self.mode
    }

    /// Indices of the next batch (sorted for Poisson; may be empty).
    pub fn next_batch(&mut self) -> Vec<usize> {
        match self.mode {
            SamplingMode::Poisson => self.poisson(),
            SamplingMode::Shuffle => {
                if self.pos == usize::MAX || self.pos + self.batch > self.n {
                    self.perm = (0..self.n).collect();
                    // Fisher-Yates.
                    for i in (1..self.n).rev() {
                        let j = self.rng.random_range(0..=i);
                        self.perm.swap(i, j);
                    }
                    self.pos = 0;
                }
                let out = self.perm[self.pos..self.pos + self.batch].to_vec();
                self.pos += self.batch;
                out
            }
        }
    }

    /// Poisson sampling by geometric gaps: O(q n) work per batch instead of n coin flips.
    fn poisson(&mut self) -> Vec<usize> {
        let q = self.sampling_rate();
        if q >= 1.0 {
            return (0..self.n).collect();
        }
        let log1mq = (-q).ln_1p();
        let mut out = Vec::with_capacity((q * self.n as f64 * 1.2) as usize + 4);
        let mut i: f64 = -1.0;
        loop {
            // Gap to the next included example: Geometric(q) on {1, 2, ...}.
            let u: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
            i += (u.ln() / log1mq).floor() + 1.0;
            if i >= self.n as f64 {
                break;
            }
            out.push(i as usize);
        }
        out
    }
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
    fn bad_sizes_are_errors() {
        assert!(BatchSampler::new(SamplingMode::Poisson, 10, 11, None).is_err());
        assert!(BatchSampler::new(SamplingMode::Poisson, 10, 0, None).is_err());
        assert!(BatchSampler::new(SamplingMode::Poisson, 0, 1, None).is_err());
    }
}
