//! Model configurations (serialisable, stored in every checkpoint) and their builders.

mod cnn;
mod lm;
mod mlp;

/// The GroupNorm CNN's sizes (the PyTorch export describes its modules).
pub(crate) use cnn::{GN_GROUPS, GN_HIDDEN, GN_WIDTHS};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::layers::ActivationKind;
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
        }
    }

    pub fn input_kind(&self) -> InputKind {
        match self {
            ModelConfig::Mlp { .. }
            | ModelConfig::TutorialCnn { .. }
            | ModelConfig::GroupNormCnn { .. } => InputKind::Dense,
            ModelConfig::SparseLogReg { .. } => InputKind::Sparse,
            ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } => InputKind::Tokens,
        }
    }

    /// Number of output classes (or vocabulary size for language models).
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Mlp { classes, .. }
            | ModelConfig::SparseLogReg { classes, .. }
            | ModelConfig::TutorialCnn { classes, .. }
            | ModelConfig::GroupNormCnn { classes, .. } => *classes,
            ModelConfig::LstmLm { vocab, .. } | ModelConfig::GruLm { vocab, .. } => *vocab,
        }
    }
}
