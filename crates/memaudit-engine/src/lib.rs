//! memaudit-engine: the training core.
//!
//! Hand-written layer-level forward and backward passes over a strided single-precision GEMM.
//! Every layer's backward holds the two things DP-SGD needs per example (the gradient w.r.t. the
//! layer's output, G, and its input, A), so per-example gradient norms and clipped sums cost
//! little more than a plain backward. See `docs/engine.md` in the repository for the rules.

pub mod error;
pub mod lm;
pub mod params;
pub mod penalty;

pub use error::{EngineError, Result};
pub use lm::{IncrementalLm, LmState};
pub use params::{ParamKind, ParamSpec};
pub use penalty::ParamPenalty;
