//! The settings every training experiment shares (the CLI's shared flag groups): the model
//! ([`ModelSettings`]), DP-SGD ([`PrivacySettings`]) and the run ([`RunSettings`]: epochs, batch,
//! seed, folder). The optimizer is [`crate::optim::OptimSettings`]. Field names are the flags'
//! (`rnn_hidden` for `--rnn-hidden`), so errors name `model.rnn_hidden` and the CLI names the flag.

use std::path::PathBuf;

use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::privacy::AccountantKind;
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::ClipConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

/// What the data looks like, for choosing and sizing a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputShape {
    Image {
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    },
    Flat {
        features: usize,
        classes: usize,
    },
    Sparse {
        features: usize,
        classes: usize,
    },
    Tokens {
        vocab: usize,
    },
}

/// Which model, and its size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt (`None`: mlp for images and
    /// tables, lstm for text, logreg for imdb).
    pub model: Option<String>,
    /// MLP hidden layer sizes.
    pub hidden: Vec<usize>,
    /// MLP activation: relu, tanh or sigmoid.
    pub activation: String,
    /// Language models: embedding width.
    pub embed: usize,
    /// Language models: recurrent units per layer.
    pub rnn_hidden: usize,
    /// Language models: stacked recurrent layers (1-3).
    pub rnn_layers: usize,
    /// Dropout (MLP: after hidden layers; LMs: between layers and before the output).
    pub dropout: f32,
    /// MLP: dropout on the input.
    pub input_dropout: f32,
    /// GPT: pre-LayerNorm transformer blocks.
    pub gpt_layers: usize,
    /// GPT: model width (embedding and residual stream); the MLP is 4x wider.
    pub gpt_width: usize,
    /// GPT: attention heads (must divide `gpt_width`).
    pub gpt_heads: usize,
    /// GPT: positions in the learned positional table (the longest context it reads).
    pub gpt_context: usize,
    /// GPT: an output projection of its own instead of the token embedding (tied by default).
    pub gpt_untied: bool,
    /// GPT: gelu-tanh (GPT-2's "gelu_new") or gelu (exact).
    pub gelu: String,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            model: None,
            hidden: vec![256],
            activation: "relu".into(),
            embed: 32,
            rnn_hidden: 200,
            rnn_layers: 2,
            dropout: 0.0,
            input_dropout: 0.0,
            gpt_layers: 2,
            gpt_width: 128,
            gpt_heads: 4,
            gpt_context: 128,
            gpt_untied: false,
            gelu: "gelu-tanh".into(),
        }
    }
}

impl ModelSettings {
    /// The engine's model for data of shape `input`.
    pub fn config(&self, input: &InputShape) -> Result<ModelConfig> {
        let default = match input {
            InputShape::Image { .. } | InputShape::Flat { .. } => "mlp",
            InputShape::Sparse { .. } => "logreg",
            InputShape::Tokens { .. } => "lstm",
        };
        let name = self.model.as_deref().unwrap_or(default);
        let activation = match self.activation.as_str() {
            "relu" => ActivationKind::Relu,
            "tanh" => ActivationKind::Tanh,
            "sigmoid" => ActivationKind::Sigmoid,
            a => return invalid("model.activation", a, "use relu, tanh or sigmoid"),
        };
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid("model.dropout", self.dropout, "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.input_dropout) {
            return invalid(
                "model.input_dropout",
                self.input_dropout,
                "must be in [0, 1)",
            );
        }
        let mlp = |input: usize, classes: usize| ModelConfig::Mlp {
            input,
            hidden: self.hidden.clone(),
            classes,
            activation,
            dropout: self.dropout,
            input_dropout: self.input_dropout,
        };
        Ok(match (name, *input) {
            (
                "mlp",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => mlp(channels * height * width, classes),
            ("mlp", InputShape::Flat { features, classes }) => mlp(features, classes),
            (
                "tutorial-cnn",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::TutorialCnn {
                channels,
                height,
                width,
                classes,
            },
            (
                "groupnorm-cnn",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::GroupNormCnn {
                channels,
                height,
                width,
                classes,
            },
            ("logreg", InputShape::Sparse { features, classes }) => {
                ModelConfig::SparseLogReg { features, classes }
            }
            ("lstm" | "gru", InputShape::Tokens { vocab }) => {
                if !(1..=3).contains(&self.rnn_layers) {
                    return invalid("model.rnn_layers", self.rnn_layers, "use 1, 2 or 3");
                }
                let (embed, hidden, layers, dropout) =
                    (self.embed, self.rnn_hidden, self.rnn_layers, self.dropout);
                if name == "lstm" {
                    ModelConfig::LstmLm {
                        vocab,
                        embed,
                        hidden,
                        layers,
                        dropout,
                    }
                } else {
                    ModelConfig::GruLm {
                        vocab,
                        embed,
                        hidden,
                        layers,
                        dropout,
                    }
                }
            }
            ("gpt", InputShape::Tokens { vocab }) => {
                let gelu = match self.gelu.as_str() {
                    "gelu-tanh" => memaudit_engine::layers::GeluKind::Tanh,
                    "gelu" => memaudit_engine::layers::GeluKind::Exact,
                    g => return invalid("model.gelu", g, "use gelu-tanh or gelu"),
                };
                let cfg = ModelConfig::Gpt {
                    vocab,
                    n_ctx: self.gpt_context,
                    embed: self.gpt_width,
                    layers: self.gpt_layers,
                    heads: self.gpt_heads,
                    inner: 4 * self.gpt_width,
                    tie: !self.gpt_untied,
                    gelu,
                    ln_eps: memaudit_engine::layers::LAYER_NORM_EPS,
                    scale_attn_weights: true,
                    scale_attn_by_inverse_layer_idx: false,
                };
                if let Some(shape) = cfg.gpt_shape() {
                    shape
                        .validate()
                        .map_err(|e| crate::ExperimentError::Invalid {
                            field: "model.gpt_heads".into(),
                            value: self.gpt_heads.to_string(),
                            reason: format!(
                                "{e} (GPT of {} layers, width {}, context {})",
                                self.gpt_layers, self.gpt_width, self.gpt_context
                            ),
                        })?;
                }
                cfg
            }
            ("mlp" | "tutorial-cnn" | "groupnorm-cnn" | "logreg" | "lstm" | "gru" | "gpt", _) => {
                return invalid(
                    "model.model",
                    name,
                    "does not fit this data (see `memaudit train --help` for which models take which data)",
                );
            }
            (other, _) => {
                return invalid(
                    "model.model",
                    other,
                    "use mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt",
                );
            }
        })
    }
}

/// DP-SGD. Training is private when `noise_multiplier` or `target_epsilon` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Noise standard deviation / clip bound (0 = clipping without noise: epsilon is infinite).
    pub noise_multiplier: Option<f64>,
    /// Calibrate the noise multiplier so that epsilon after all epochs is at most this.
    pub target_epsilon: Option<f64>,
    /// Per-example clip bound C (flat; default 1; the start with adaptive clipping).
    pub clip: Option<f64>,
    /// Per-layer clip bounds, one per parameterised layer in order.
    pub clip_per_layer: Option<Vec<f64>>,
    /// Adaptive clipping to a quantile of the gradient norms (Andrew et al.); `clip` is the start.
    pub adaptive_clip: bool,
    /// Adaptive clipping: target unclipped fraction.
    pub target_quantile: f64,
    /// Adaptive clipping: geometric learning rate.
    pub clip_lr: f64,
    /// Adaptive clipping: noise on the unclipped count (default: batch size / 20).
    pub clip_count_stddev: Option<f64>,
    /// Delta of the (epsilon, delta) guarantee.
    pub delta: f64,
    /// rdp or pld.
    pub accountant: String,
    /// Stop training before epsilon would exceed this.
    pub max_epsilon: Option<f64>,
    /// poisson (default for private runs; what the accounting assumes) or shuffle.
    pub sampling: Option<String>,
    /// Run a logical batch as chunks of at most this many examples.
    pub physical_batch: Option<usize>,
    /// Seed the DP noise and the Poisson sampler from the run's seed (reproducible research
    /// only: anyone with the seed can regenerate the noise).
    pub seeded_noise: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            noise_multiplier: None,
            target_epsilon: None,
            clip: None,
            clip_per_layer: None,
            adaptive_clip: false,
            target_quantile: 0.5,
            clip_lr: 0.2,
            clip_count_stddev: None,
            delta: 1e-5,
            accountant: "rdp".into(),
            max_epsilon: None,
            sampling: None,
            physical_batch: None,
            seeded_noise: false,
        }
    }
}

impl PrivacySettings {
    pub fn is_private(&self) -> bool {
        self.noise_multiplier.is_some() || self.target_epsilon.is_some()
    }

    /// The flat clip bound C (1 unless `clip` says otherwise).
    pub fn clip(&self) -> f64 {
        self.clip.unwrap_or(1.0)
    }

    pub fn accountant(&self) -> Result<AccountantKind> {
        match self.accountant.as_str() {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            a => invalid("privacy.accountant", a, "use rdp or pld"),
        }
    }

    pub fn sampling(&self) -> Result<SamplingMode> {
        match self.sampling.as_deref() {
            None => Ok(if self.is_private() {
                SamplingMode::Poisson
            } else {
                SamplingMode::Shuffle
            }),
            Some("poisson") => Ok(SamplingMode::Poisson),
            Some("shuffle") => Ok(SamplingMode::Shuffle),
            Some(s) => invalid("privacy.sampling", s, "use poisson or shuffle"),
        }
    }

    /// Check the settings that make sense on their own (before any data is loaded).
    pub fn validate(&self) -> Result<()> {
        if self.noise_multiplier.is_some() && self.target_epsilon.is_some() {
            return invalid(
                "privacy.noise_multiplier",
                self.noise_multiplier.unwrap_or_default(),
                "give the noise multiplier or a target epsilon, not both",
            );
        }
        if let Some(s) = self.noise_multiplier
            && !(s >= 0.0 && s.is_finite())
        {
            return invalid("privacy.noise_multiplier", s, "must be >= 0 and finite");
        }
        if let Some(e) = self.target_epsilon
            && !(e > 0.0 && e.is_finite())
        {
            return invalid("privacy.target_epsilon", e, "must be > 0 and finite");
        }
        if let Some(c) = self.clip
            && !(c > 0.0 && c.is_finite())
        {
            return invalid("privacy.clip", c, "must be > 0");
        }
        if !self.is_private() {
            // Settings that only mean something under DP-SGD would be silently ignored otherwise.
            let private_only = [
                ("privacy.clip", self.clip.is_some()),
                ("privacy.clip_per_layer", self.clip_per_layer.is_some()),
                ("privacy.adaptive_clip", self.adaptive_clip),
                ("privacy.max_epsilon", self.max_epsilon.is_some()),
                ("privacy.seeded_noise", self.seeded_noise),
            ];
            if let Some((field, _)) = private_only.iter().find(|(_, given)| *given) {
                return invalid(
                    *field,
                    "(set)",
                    "applies only to private training: set a noise multiplier or a target epsilon, or drop it",
                );
            }
        }
        if let Some(b) = &self.clip_per_layer
            && b.iter().any(|c| !(*c > 0.0 && c.is_finite()))
        {
            return invalid(
                "privacy.clip_per_layer",
                format!("{b:?}"),
                "every bound must be > 0",
            );
        }
        if self.clip_per_layer.is_some() && (self.adaptive_clip || self.clip.is_some()) {
            return invalid(
                "privacy.clip_per_layer",
                "(set)",
                "excludes a flat clip bound and adaptive clipping",
            );
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return invalid("privacy.delta", self.delta, "must be in (0, 1)");
        }
        if let Some(m) = self.max_epsilon
            && (m.is_nan() || m <= 0.0)
        {
            return invalid("privacy.max_epsilon", m, "must be > 0");
        }
        if self.physical_batch == Some(0) {
            return invalid("privacy.physical_batch", 0, "must be at least 1");
        }
        if self.adaptive_clip && !(0.0..=1.0).contains(&self.target_quantile) {
            return invalid(
                "privacy.target_quantile",
                self.target_quantile,
                "must be in [0, 1]",
            );
        }
        self.accountant()?;
        self.sampling()?;
        Ok(())
    }

    /// The clipping rule for a model whose parameterised layers are `param_layers` (indices of
    /// the model's layers that have parameters) out of `n_layers`.
    pub fn clip_config(&self, param_layers: &[usize], n_layers: usize) -> Result<ClipConfig> {
        if self.adaptive_clip {
            return Ok(ClipConfig::Adaptive {
                initial: self.clip(),
                target_quantile: self.target_quantile,
                learning_rate: self.clip_lr,
                count_stddev: self.clip_count_stddev,
                geometric: true,
            });
        }
        if let Some(bounds) = &self.clip_per_layer {
            if bounds.len() != param_layers.len() {
                return invalid(
                    "privacy.clip_per_layer",
                    format!("{bounds:?}"),
                    format!(
                        "{} bounds given, the model has {} layers with parameters",
                        bounds.len(),
                        param_layers.len()
                    ),
                );
            }
            // Layers without parameters join group 0 (they contribute nothing to any norm).
            let mut group_of_layer = vec![0usize; n_layers];
            for (g, &l) in param_layers.iter().enumerate() {
                group_of_layer[l] = g;
            }
            return Ok(ClipConfig::PerLayer {
                bounds: bounds.clone(),
                group_of_layer,
            });
        }
        Ok(ClipConfig::Flat { bound: self.clip() })
    }
}

/// Epochs, batch, seed and the run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    pub epochs: usize,
    /// Expected (logical) batch size: q = batch / N under Poisson sampling.
    pub batch_size: usize,
    /// Seed for initialisation, data order and dropout (`None`: drawn at random and recorded).
    pub seed: Option<u64>,
    /// Run folder (run.json, metrics.csv, checkpoints).
    pub out: PathBuf,
    /// Overwrite a folder that holds another run.
    pub force: bool,
    /// Continue the run in `out` from its newest checkpoint.
    pub resume: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            seed: None,
            out: PathBuf::new(),
            force: false,
            resume: false,
        }
    }
}

/// Epochs, expected batch size and seed of one training run: what the `TrainConfig` builder
/// ([`super::plan::train_config`]) reads of a run. A run folder's [`RunSettings`] give it
/// ([`RunSettings::shape`]); `mia`'s shadow models, which have no run folder of their own, give
/// it from their `shadows` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunShape {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl RunSettings {
    /// The shape of this run with `seed` (the one [`RunSettings::seed`] drew or was given).
    pub fn shape(&self, seed: u64) -> RunShape {
        RunShape {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed,
        }
    }

    /// The seed to use (drawn from the OS when not given; always recorded).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            use rand::Rng;
            rand::rng().random()
        })
    }

    pub fn reuse(&self) -> crate::rundir::Reuse {
        crate::rundir::Reuse {
            force: self.force,
            resume: self.resume,
        }
    }

    /// The checks that need no data.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return invalid("run.epochs", 0, "must be at least 1");
        }
        if self.out.as_os_str().is_empty() {
            return invalid("run.out", "\"\"", "give the run folder");
        }
        if self.force && self.resume {
            return invalid("run.force", true, "give force or resume, not both");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-layer bounds replace the flat bound and adaptive clipping; given together, one of
    /// them would be silently ignored.
    #[test]
    fn per_layer_bounds_exclude_a_flat_bound_and_adaptive_clipping() {
        let per_layer = PrivacySettings {
            noise_multiplier: Some(1.0),
            clip_per_layer: Some(vec![1.0, 2.0]),
            ..Default::default()
        };
        per_layer.validate().unwrap();
        for with in [
            PrivacySettings {
                clip: Some(2.0),
                ..per_layer.clone()
            },
            PrivacySettings {
                adaptive_clip: true,
                ..per_layer.clone()
            },
        ] {
            let e = with.validate().unwrap_err().to_string();
            assert_eq!(
                e,
                "privacy.clip_per_layer (set): excludes a flat clip bound and adaptive clipping"
            );
        }
    }
}
