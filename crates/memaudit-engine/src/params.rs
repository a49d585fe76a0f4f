//! Parameters live in one flat `Vec<f32>`; each tensor is a named range of it.
//!
//! One buffer makes the optimizer, DP noise, checkpoints and the white-box attacks (which read or
//! overwrite "every parameter in network order") simple loops over a slice.

use serde::{Deserialize, Serialize};

/// What a parameter tensor is, for attacks that select e.g. "weights with ndim > 1".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// A weight matrix or kernel (ndim > 1).
    Weight,
    /// A bias vector.
    Bias,
    /// An embedding table.
    Embedding,
    /// A normalisation scale (gamma).
    NormScale,
    /// A normalisation shift (beta).
    NormShift,
}

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Unique, stable name, e.g. `lstm.0.w_ih`.
    pub name: String,
    pub shape: Vec<usize>,
    /// Start of the tensor in the flat vector.
    pub offset: usize,
    pub kind: ParamKind,
    /// Index of the layer that owns it (the default clipping group).
    pub layer: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Total number of floats described by `specs` (they tile `0..total`).
pub fn total_len(specs: &[ParamSpec]) -> usize {
    specs.iter().map(|s| s.offset + s.len()).max().unwrap_or(0)
}
