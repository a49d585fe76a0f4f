//! White-box gradient canaries: auditing DP-SGD from inside one training run (Nasr, Hayes,
//! Steinke, Balle, Tramèr, Jagielski, Carlini, Terzis 2023, "Tight Auditing of Differentially
//! Private Machine Learning"; Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1)
//! Training Run", white-box setting).
//!
//! M **Dirac canaries**: canary k is a gradient of norm C (the clip bound: the largest an example
//! may contribute) along one parameter coordinate j_k, the coordinates distinct. Each canary is
//! included in the run independently with probability 1/2, and an included canary is
//! Poisson-subsampled at every step with the run's q, exactly like a training example: its
//! gradient joins the clipped sum before the noise. That is the neighbouring-dataset experiment
//! the DP guarantee is about (D vs D plus one example), run M times at once.
//!
//! **Score** (all-iterates threat model: the adversary sees every privatized gradient and knows the
//! rest of the data). At step t it observes, along j_k, the privatized sum minus what the known
//! examples contributed: `o_t = a_t + n_t` with `a_t` in {0, C} (the canary, if included and
//! sampled) and `n_t ~ N(0, (z C)^2)`. Conditioned on the other examples (whose Poisson inclusions
//! are independent of the canary's) that is exactly the mechanism the accountant analyses, for that
//! canary. The score is the Neyman-Pearson statistic of "included" against "not included", the
//! log-likelihood ratio summed over steps:
//! `sum_t ln(1 - q + q exp((o_t / C - 1/2) / z^2))`, with z the *stated* multiplier (the auditor
//! does not know of an injected fault). A plain sum of the `o_t` is far weaker when q is small:
//! the privacy loss concentrates on the few steps the canary was sampled. Higher means member. The
//! lower bounds themselves (one-run, GDP, Clopper-Pearson) live in memaudit-audit.
//!
//! **Fault injection** (`FaultInjection`) exists only to show that this audit catches a broken
//! implementation: it scales the noise actually added while the ledger keeps the stated
//! multiplier. It can only be set through the library or a hidden, environment-gated CLI flag,
//! and every output of such a run says the guarantee is void.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::sampler::mix_seed;

/// Stream tags for the canaries' randomness (apart from the trainer's other streams).
const PLACEMENT_STREAM: u64 = 5 << 40;
const SAMPLING_STREAM: u64 = 6 << 40;

/// Which white-box audit a training run carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhiteBoxAuditConfig {
    /// Number of Dirac canaries M (each included with probability 1/2).
    pub canaries: usize,
}

/// A deliberate bug, for the audit's self-test only (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultInjection {
    /// Multiply the noise actually added by this factor; the ledger keeps the stated multiplier.
    NoiseScale(f64),
}

impl FaultInjection {
    /// A line for every output of a run that carries the fault.
    pub fn describe(&self) -> String {
        match self {
            FaultInjection::NoiseScale(f) => format!(
                "FAULT INJECTED FOR THE AUDIT SELF-TEST: the noise added was scaled by {f} while the accountant used the stated noise multiplier; this run's privacy guarantee is VOID"
            ),
        }
    }
}

/// The canaries of one run, their inclusion bits and their accumulated scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiracCanaries {
    /// Parameter index each canary points along (distinct).
    pub coordinates: Vec<usize>,
    /// Whether each canary was included in training.
    pub included: Vec<bool>,
    /// Sum over steps of the privatized gradient along each coordinate, less the known examples'
    /// part (see the module docs); higher means member.
    pub scores: Vec<f64>,
    /// Seed of the placement, inclusion and per-step sampling.
    pub seed: u64,
}

impl DiracCanaries {
    /// M canaries on distinct coordinates of a `num_params`-parameter model.
    pub fn new(m: usize, num_params: usize, seed: u64) -> Result<Self> {
        if m == 0 || m > num_params {
            return Err(EngineError::Config(format!(
                "white-box audit: {m} canaries requested; between 1 and the model's {num_params} parameters are possible (one coordinate each)"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, PLACEMENT_STREAM));
        // Distinct coordinates: a partial Fisher-Yates over the parameter indices.
        let mut idx: Vec<usize> = (0..num_params).collect();
        for k in 0..m {
            let j = rng.random_range(k..num_params);
            idx.swap(k, j);
        }
        idx.truncate(m);
        let included = (0..m).map(|_| rng.random_bool(0.5)).collect();
        Ok(Self {
            coordinates: idx,
            included,
            scores: vec![0.0; m],
            seed,
        })
    }

    /// Add the included canaries that Poisson sampling (rate q) puts in step `step`'s batch to the
    /// clipped sum: `clip` along their coordinate. Returns what was added, per coordinate, so the
    /// score can count it (`record`).
    pub fn add_sampled(&self, step: u64, q: f64, clip: f64, clipped_sum: &mut [f32]) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(self.seed, SAMPLING_STREAM + step));
        let mut added = vec![0.0f32; self.coordinates.len()];
        for (k, (&j, &inc)) in self.coordinates.iter().zip(&self.included).enumerate() {
            // Draw for every canary, included or not, so the stream does not depend on the bits.
            let sampled = rng.random_bool(q.clamp(0.0, 1.0));
            if inc && sampled {
                clipped_sum[j] += clip as f32;
                added[k] = clip as f32;
            }
        }
        added
    }

    /// After the noise step: add each canary's per-step log-likelihood ratio to its score (see
    /// the module docs): `added` and `noise_along` are the canary's contribution and the noise
    /// along its coordinate (both in gradient-sum units), `clip` the bound C, `z` the stated noise
    /// multiplier, `q` the sampling rate. Without noise (z = 0) the statistic degenerates; the
    /// observation itself is used (any monotone score is then exact).
    pub fn record(&mut self, added: &[f32], noise_along: &[f32], clip: f64, z: f64, q: f64) {
        for (k, s) in self.scores.iter_mut().enumerate() {
            let o = (added[k] as f64 + noise_along[k] as f64) / clip;
            if z > 0.0 {
                let u = (o - 0.5) / (z * z);
                // ln((1 - q) + q e^u), stably.
                let (a, b) = ((-q).ln_1p(), q.ln() + u);
                let (hi, lo) = if a > b { (a, b) } else { (b, a) };
                *s += hi + (lo - hi).exp().ln_1p();
            } else {
                *s += o;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_are_distinct_balanced_and_sampled_at_rate_q() {
        let c = DiracCanaries::new(1000, 5000, 3).unwrap();
        let mut sorted = c.coordinates.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        // Inclusion ~ Binomial(1000, 1/2): within 5 sd (sd 15.8).
        let k = c.included.iter().filter(|&&b| b).count() as f64;
        assert!((k - 500.0).abs() < 80.0, "{k}");
        // Sampling: over 200 steps each included canary joins ~ q * 200 = 20 times.
        let mut sum = vec![0.0f32; 5000];
        for t in 0..200 {
            c.add_sampled(t, 0.1, 1.0, &mut sum);
        }
        let total: f64 = c.coordinates.iter().map(|&j| sum[j] as f64).sum();
        let want = k * 200.0 * 0.1;
        assert!(
            (total - want).abs() < 5.0 * (want * 0.9).sqrt(),
            "{total} vs {want}"
        );
        for (&j, &inc) in c.coordinates.iter().zip(&c.included) {
            if !inc {
                assert_eq!(sum[j], 0.0);
            }
        }
        assert!(DiracCanaries::new(0, 10, 1).is_err());
        assert!(DiracCanaries::new(11, 10, 1).is_err());
    }
}
