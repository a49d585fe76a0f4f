//! memaudit-engine: the training core.
//!
//! Hand-written layer-level forward and backward passes over a strided single-precision GEMM.
//! Every layer's backward holds the two things DP-SGD needs per example (the gradient w.r.t. the
//! layer's output, G, and its input, A), so per-example gradient norms and clipped sums cost
//! little more than a plain backward. `docs/engine.md` in the repository has the rules.
//!
//! [`atomic`]: folders written as atomic units (temp folder, fsync, rename, completion marker),
//! for caches, checkpoints and shards that must survive a crash.
//!
//! Dependencies and why: `gemm` (the SGEMM microkernels, runtime-dispatched AVX2/AVX-512; the
//! measured fastest pure-Rust option, see docs/engine.md), `rayon` (threads), `rand` +
//! `rand_chacha` + `rand_distr` (seeded RNGs; ChaCha20 is the CSPRNG for DP noise, Ziggurat
//! normals), `safetensors` (checkpoints in the format everyone reads), `serde`/`serde_json`
//! (configs and checkpoint sidecars), `thiserror` (typed errors), `memaudit-accounting` (epsilon
//! during private training).

pub mod atomic;
pub mod audit_canaries;
pub mod augment;
pub mod black_box_canaries;
pub mod checkpoint;
pub mod compute;
pub mod datasets;
pub mod dp;
pub mod error;
pub mod gpt2;
pub mod layer;
pub mod layers;
pub mod ledger;
pub mod lm;
pub mod loss;
pub mod memory;
pub mod model;
pub mod models;
pub mod optim;
pub mod params;
pub mod penalty;
pub mod privacy;
pub mod pytorch;
pub mod sampler;
pub mod shard;
pub mod stats;
pub mod tensor;
pub mod testing;
pub mod train;

pub use error::{EngineError, Result};
pub use layer::{Layer, SparseInput, TokenInput, Value};
pub use ledger::{LedgerSegment, PrivacyLedger};
pub use lm::{IncrementalLm, LmState};
pub use model::{Batch, Clipping, GradOutput, GradRequest, Model};
pub use models::{InputKind, ModelConfig};
pub use params::{ParamKind, ParamSpec};
pub use penalty::ParamPenalty;
pub use tensor::Tensor;
