//! Layers, one file per family. Each holds forward, backward, its per-example norm rule, a naive
//! f64 reference forward, and its oracle tests.

mod activation;
mod dropout;
mod embedding;
mod flatten;
mod gru;
mod linear;
mod lstm;

pub use activation::{Activation, ActivationKind};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use gru::Gru;
pub use linear::Linear;
pub use lstm::Lstm;
