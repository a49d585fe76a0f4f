//! A seeded simulator of the signals a target and shadow models give, with known membership, for
//! tests and examples. It has what makes LiRA beat LOSS on real models: examples differ a lot in
//! difficulty (their typical phi), and training on an example raises its phi by an amount that
//! is small next to that spread. A global threshold mixes easy non-members with hard members; a
//! per-example test does not.
//!
//! Model m's statistic on example i, query j: d_i + member x g_i + e, with difficulty
//! d_i ~ N(0, spread^2), gap g_i = |N(gap, (gap/2)^2)|, noise e ~ N(0, 1). Membership comes in
//! complementary pairs (shadow 2p and 2p+1 split the examples); the target is IN on a random
//! half. Population points are never members.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::data::{Population, ScoreSet};
use super::error::Result;
use super::signals::SignalKind;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub examples: usize,
    /// Shadow models (even: complementary pairs).
    pub shadows: usize,
    pub queries: usize,
    pub population: usize,
    /// Standard deviation of difficulty across examples.
    pub spread: f64,
    /// Typical rise of phi when a model trains on an example.
    pub gap: f64,
    pub seed: u64,
}

impl Default for Simulation {
    fn default() -> Self {
        Self {
            examples: 2000,
            shadows: 8,
            queries: 1,
            population: 500,
            spread: 4.0,
            gap: 2.0,
            seed: 1,
        }
    }
}

/// Simulated signals (phi) with the target's membership known.
pub fn simulate(sim: &Simulation) -> Result<ScoreSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(sim.seed);
    let (n, k, q) = (sim.examples, sim.shadows, sim.queries);
    let unit = Normal::new(0.0, 1.0).expect("unit normal");
    let difficulty: Vec<f64> = (0..n).map(|_| sim.spread * unit.sample(&mut rng)).collect();
    let gap: Vec<f64> = (0..n)
        .map(|_| (sim.gap + 0.5 * sim.gap * unit.sample(&mut rng)).abs())
        .collect();
    let signal = |rng: &mut ChaCha8Rng, i: usize, member: bool| -> Vec<f64> {
        (0..q)
            .map(|_| difficulty[i] + if member { gap[i] } else { 0.0 } + unit.sample(rng))
            .collect()
    };
    let target_in: Vec<bool> = (0..n).map(|_| rng.random_bool(0.5)).collect();
    let mut target = Vec::with_capacity(n * q);
    for (i, &m) in target_in.iter().enumerate() {
        target.extend(signal(&mut rng, i, m));
    }
    let mut shadow_in = vec![false; k * n];
    for p in 0..k / 2 {
        for i in 0..n {
            let first = rng.random_bool(0.5);
            shadow_in[2 * p * n + i] = first;
            shadow_in[(2 * p + 1) * n + i] = !first;
        }
    }
    if k % 2 == 1 {
        for i in 0..n {
            shadow_in[(k - 1) * n + i] = rng.random_bool(0.5);
        }
    }
    let mut shadow = Vec::with_capacity(k * n * q);
    for m in 0..k {
        for i in 0..n {
            shadow.extend(signal(&mut rng, i, shadow_in[m * n + i]));
        }
    }
    let set = ScoreSet::new(
        n,
        q,
        target,
        k,
        shadow,
        shadow_in,
        SignalKind::LogitConfidence,
    )?
    .with_target_in(target_in)?;
    if sim.population == 0 {
        return Ok(set);
    }
    let nz = sim.population;
    let pop_difficulty: Vec<f64> = (0..nz)
        .map(|_| sim.spread * unit.sample(&mut rng))
        .collect();
    let pop_signal = |rng: &mut ChaCha8Rng, z: usize| -> Vec<f64> {
        (0..q)
            .map(|_| pop_difficulty[z] + unit.sample(rng))
            .collect()
    };
    let mut pt = Vec::with_capacity(nz * q);
    for z in 0..nz {
        pt.extend(pop_signal(&mut rng, z));
    }
    let mut ps = Vec::with_capacity(k * nz * q);
    for _ in 0..k {
        for z in 0..nz {
            ps.extend(pop_signal(&mut rng, z));
        }
    }
    set.with_population(Population {
        n: nz,
        target: pt,
        shadow: ps,
    })
}
