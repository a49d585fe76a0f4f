//! Data shared by the engine's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use memaudit_engine::Value;
use memaudit_engine::model::Batch;
use memaudit_engine::tensor::Tensor;
use memaudit_engine::train::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two Gaussian blobs, means +-0.8 on every coordinate.
pub struct Blobs {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub dim: usize,
}

impl Blobs {
    pub fn new(n: usize, dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * dim);
        let y: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        for &c in &y {
            let mu = if c == 0 { -0.8 } else { 0.8 };
            for _ in 0..dim {
                let z: f32 = rng.sample(rand_distr::StandardNormal);
                x.push(mu + z);
            }
        }
        Self { x, y, dim }
    }
}

impl Dataset for Blobs {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let mut data = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            data.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
        }
        Batch {
            input: Value::Dense(Tensor {
                data,
                shape: vec![idx.len(), self.dim],
            }),
            targets: idx.iter().map(|&i| self.y[i]).collect(),
            mask: None,
        }
    }
}
