//! Layers, one file per family. Each holds forward, backward, its per-example norm rule, a naive
//! f64 reference forward, and its oracle tests.

mod activation;
mod attention;
mod conv;
mod dropout;
mod embedding;
mod flatten;
mod gelu;
mod groupnorm;
mod gru;
mod layernorm;
mod linear;
mod lstm;
mod pool;
mod positional;
mod transformer_block;

pub use activation::{Activation, ActivationKind};
pub use attention::CausalSelfAttention;
pub use conv::{Conv2d, Padding};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub(crate) use gelu::gelu_inplace;
pub use gelu::{Gelu, GeluKind};
pub use groupnorm::GroupNorm;
pub use gru::Gru;
pub use layernorm::{LAYER_NORM_EPS, LayerNorm};
pub use linear::Linear;
pub use lstm::Lstm;
pub use pool::{AvgPool2d, MaxPool2d};
pub use positional::{GPT2_INIT_STD, PositionalEmbedding};
pub use transformer_block::TransformerBlock;
