//! In-memory datasets the trainer draws batches from. The engine knows nothing of file formats:
//! `memaudit-data` loads files, and callers move the arrays in here.

use crate::error::{EngineError, Result};
use crate::layer::{SparseInput, TokenInput, Value};
use crate::model::Batch;
use crate::tensor::Tensor;
use crate::train::Dataset;

/// Dense examples (flat vectors or images) with class labels.
#[derive(Clone, Debug)]
pub struct DenseDataset {
    /// Row-major: example i is `x[i * per .. (i + 1) * per]`, `per = example_shape.product()`.
    pub x: Vec<f32>,
    /// Shape of one example, e.g. `[784]` or `[1, 28, 28]`.
    pub example_shape: Vec<usize>,
    pub labels: Vec<u32>,
}

impl DenseDataset {
    pub fn new(x: Vec<f32>, example_shape: Vec<usize>, labels: Vec<u32>) -> Result<Self> {
        let per: usize = example_shape.iter().product();
        if per == 0 || x.len() != per * labels.len() {
            return Err(EngineError::Shape(format!(
                "{} values for {} examples of shape {example_shape:?}",
                x.len(),
                labels.len()
            )));
        }
        Ok(Self {
            x,
            example_shape,
            labels,
        })
    }

    pub fn per_example(&self) -> usize {
        self.example_shape.iter().product()
    }

    /// The examples `idx` as a new dataset.
    pub fn subset(&self, idx: &[usize]) -> Self {
        let per = self.per_example();
        let mut x = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            x.extend_from_slice(&self.x[i * per..(i + 1) * per]);
        }
        Self {
            x,
            example_shape: self.example_shape.clone(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

impl Dataset for DenseDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let sub = self.subset(idx);
        let mut shape = vec![idx.len()];
        shape.extend_from_slice(&self.example_shape);
        Batch {
            input: Value::Dense(Tensor { data: sub.x, shape }),
            targets: sub.labels,
            mask: None,
        }
    }
}

/// Sparse feature rows (CSR) with class labels.
#[derive(Clone, Debug)]
pub struct SparseDataset {
    pub rows: SparseInput,
    pub labels: Vec<u32>,
}

impl Dataset for SparseDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        // Only the selected rows are copied (this used to clone the whole matrix per batch).
        Batch {
            input: Value::Sparse(self.rows.select(idx)),
            targets: idx.iter().map(|&i| self.labels[i]).collect(),
            mask: None,
        }
    }
}

/// Language-model windows over one token stream: example k is `tokens[k*W .. k*W + W + 1]`
/// (inputs the first W tokens, next-token targets the last W), stride W, a trailing partial
/// window dropped — the convention of `memaudit-data`'s `LmWindows`. One window is the unit
/// DP-SGD protects.
#[derive(Clone, Debug)]
pub struct TokenWindowDataset {
    pub tokens: Vec<u32>,
    pub window: usize,
}

impl TokenWindowDataset {
    pub fn new(tokens: Vec<u32>, window: usize) -> Result<Self> {
        if window == 0 {
            return Err(EngineError::Config(
                "the sequence length must be at least 1".into(),
            ));
        }
        Ok(Self { tokens, window })
    }
}

impl Dataset for TokenWindowDataset {
    fn len(&self) -> usize {
        self.tokens.len().saturating_sub(1) / self.window
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let (w, b) = (self.window, idx.len());
        let mut ids = vec![0u32; w * b];
        let mut targets = vec![0u32; w * b];
        for (j, &k) in idx.iter().enumerate() {
            for t in 0..w {
                ids[t * b + j] = self.tokens[k * w + t];
                targets[t * b + j] = self.tokens[k * w + t + 1];
            }
        }
        Batch {
            input: Value::Tokens(TokenInput {
                seq_len: w,
                batch: b,
                ids,
            }),
            targets,
            mask: None,
        }
    }
}
