//! Model configurations (serialisable, stored in every checkpoint) and their builders.

mod cnn;
mod gpt;
mod lm;
mod mlp;

pub use gpt::{GptIncremental, GptNet, GptShape};

/// The GroupNorm CNN's sizes (the PyTorch export describes its modules).
pub(crate) use cnn::{GN_GROUPS, GN_HIDDEN, GN_WIDTHS};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::layers::{ActivationKind, GeluKind};
use crate::model::Model;

/// What a model is; `build` turns it into layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelConfig {
    /// Multi-layer perceptron on flat inputs.
    Mlp {
        input: usize,
        hidden: Vec<usize>,
        classes: usize,
        #[serde(default = "default_activation")]
        activation: ActivationKind,
        /// Dropout after each hidden activation (0 = none).
        #[serde(default)]
        dropout: f32,
        /// Dropout on the input (Arpit et al.'s "input dropout" regulariser).
        #[serde(default)]
        input_dropout: f32,
    },
    /// Multinomial logistic regression over sparse features (bag of words, TF-IDF).
    SparseLogReg { features: usize, classes: usize },
    /// TF Privacy's MNIST tutorial CNN (two conv + two dense).
    TutorialCnn {
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    },
    /// A larger CNN with GroupNorm (no BatchNorm: it mixes examples), >= 400k parameters: the
    /// capacity Song et al.'s attacks need.
    GroupNormCnn {
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    },
    /// LSTM language model: embedding -> stacked LSTM -> linear over the vocabulary.
    LstmLm {
        vocab: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
        /// Dropout between stacked layers and before the output projection.
        #[serde(default)]
        dropout: f32,
    },
    /// GRU language model (PyTorch's GRU formulation, so weights interoperate).
    GruLm {
        vocab: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
        #[serde(default)]
        dropout: f32,
    },
    /// GPT-2-architecture decoder (models/gpt.rs): token + learned positional embeddings,
    /// `layers` pre-LayerNorm blocks, final LayerNorm, output projection tied to the token
    /// embedding or not. Field names after Hugging Face's `GPT2Config` where one exists.
    Gpt {
        vocab: usize,
        /// Positions in the learned table: the longest context.
        n_ctx: usize,
        embed: usize,
        layers: usize,
        heads: usize,
        /// MLP width (GPT-2: 4 x embed).
        inner: usize,
        #[serde(default = "default_true")]
        tie: bool,
        #[serde(default = "default_gelu")]
        gelu: GeluKind,
        #[serde(default = "default_ln_eps")]
        ln_eps: f32,
        #[serde(default = "default_true")]
        scale_attn_weights: bool,
        #[serde(default)]
        scale_attn_by_inverse_layer_idx: bool,
    },
}

fn default_true() -> bool {
    true
}

fn default_gelu() -> GeluKind {
    GeluKind::Tanh
}

fn default_ln_eps() -> f32 {
    crate::layers::LAYER_NORM_EPS
}

fn default_activation() -> ActivationKind {
    ActivationKind::Relu
}

/// The kind of input a model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Dense `[B, F]` or images `[B, C, H, W]`.
    Dense,
    /// Token ids `[T, B]`.
    Tokens,
    /// Sparse rows.
    Sparse,
}

impl ModelConfig {
    pub fn build(&self) -> Result<Model> {
        match self {
            ModelConfig::Mlp {
                input,
                hidden,
                classes,
                activation,
                dropout,
                input_dropout,
            } => mlp::build_mlp(
                *input,
                hidden,
                *classes,
                *activation,
                *dropout,
                *input_dropout,
            ),
            ModelConfig::SparseLogReg { features, classes } => {
                if *features == 0 || *classes < 2 {
                    return Err(EngineError::Config(
                        "logistic regression needs features >= 1 and classes >= 2".into(),
                    ));
                }
                Model::new(vec![(
                    "fc".into(),
                    Box::new(crate::layers::Linear::new(*features, *classes, true)),
                )])
            }
            ModelConfig::TutorialCnn {
                channels,
                height,
                width,
                classes,
            } => cnn::build_tutorial_cnn(*channels, *height, *width, *classes),
            ModelConfig::GroupNormCnn {
                channels,
                height,
                width,
                classes,
            } => cnn::build_groupnorm_cnn(*channels, *height, *width, *classes),
            ModelConfig::LstmLm {
                vocab,
                embed,
                hidden,
                layers,
                dropout,
            } => lm::build_lstm_lm(*vocab, *embed, *hidden, *layers, *dropout),
            ModelConfig::GruLm {
                vocab,
                embed,
                hidden,
                layers,
                dropout,
            } => lm::build_gru_lm(*vocab, *embed, *hidden, *layers, *dropout),
            ModelConfig::Gpt { .. } => gpt::build_gpt(self.gpt_shape().expect("a GPT")),
        }
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            ModelConfig::Mlp { .. }
            | ModelConfig::TutorialCnn { .. }
            | ModelConfig::GroupNormCnn { .. } => InputKind::Dense,
            ModelConfig::SparseLogReg { .. } => InputKind::Sparse,
            ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. } => {
                InputKind::Tokens
            }
        }
    }

    /// Number of output classes (or vocabulary size for language models).
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Mlp { classes, .. }
            | ModelConfig::SparseLogReg { classes, .. }
            | ModelConfig::TutorialCnn { classes, .. }
            | ModelConfig::GroupNormCnn { classes, .. } => *classes,
            ModelConfig::LstmLm { vocab, .. }
            | ModelConfig::GruLm { vocab, .. }
            | ModelConfig::Gpt { vocab, .. } => *vocab,
        }
    }
}

impl ModelConfig {
    /// The sizes of a `Gpt` config (None for other families).
    pub fn gpt_shape(&self) -> Option<GptShape> {
        match *self {
            ModelConfig::Gpt {
                vocab,
                n_ctx,
                embed,
                layers,
                heads,
                inner,
                tie,
                gelu,
                ln_eps,
                scale_attn_weights,
                scale_attn_by_inverse_layer_idx,
            } => Some(GptShape {
                vocab,
                n_ctx,
                embed,
                layers,
                heads,
                inner,
                tie,
                gelu,
                ln_eps,
                scale_attn_weights,
                scale_attn_by_inverse_layer_idx,
            }),
            _ => None,
        }
    }

    /// Incremental inference for sequences of at most `max_tokens` tokens. For a GPT this sizes
    /// the key/value cache in every state row (`1 + 2 N max_tokens E` floats), so callers pass
    /// the longest sequence they will feed; `max_tokens` beyond the positional table is an
    /// error. Recurrent models have constant-size states and ignore it.
    pub fn incremental_lm_with_context(
        &self,
        params: &[f32],
        max_tokens: usize,
    ) -> Result<Box<dyn crate::lm::IncrementalLm>> {
        match self.gpt_shape() {
            Some(shape) => Ok(Box::new(GptIncremental::new(shape, params, max_tokens)?)),
            None => self.incremental_lm(params),
        }
    }
}
