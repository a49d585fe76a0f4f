//! Layers, one file per family. Each holds forward, backward, its per-example norm rule, a naive
//! f64 reference forward, and its oracle tests.

mod activation;
mod dropout;
mod flatten;
mod linear;

pub use activation::{Activation, ActivationKind};
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use linear::Linear;
