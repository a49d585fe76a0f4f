//! Layers, one file per family. Each holds forward, backward, its per-example norm rule, a naive
//! f64 reference forward, and its oracle tests.

mod activation;
mod conv;
mod dropout;
mod embedding;
mod flatten;
mod groupnorm;
mod gru;
mod layernorm;
mod linear;
mod lstm;
mod pool;

pub use activation::{Activation, ActivationKind};
pub use conv::{Conv2d, Padding};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use groupnorm::GroupNorm;
pub use gru::Gru;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use lstm::Lstm;
pub use pool::{AvgPool2d, MaxPool2d};
