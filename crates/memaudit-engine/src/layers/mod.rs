//! Layers, one file per family. Each holds forward, backward, its per-example norm rule, a naive
//! f64 reference forward, and its oracle tests.

mod activation;
mod conv;
mod dropout;
mod flatten;
mod groupnorm;
mod layernorm;
mod linear;
mod pool;

pub use activation::{Activation, ActivationKind};
pub use conv::{Conv2d, Padding};
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use groupnorm::GroupNorm;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use pool::{AvgPool2d, MaxPool2d};
