//! Flag groups shared by every command that trains (train, secret-sharer, dp-sweep, attack,
//! dynamics), so the same flag means the same thing everywhere.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::privacy::AccountantKind;
use memaudit_engine::sampler::SamplingMode;

use crate::error::user;

/// Which model, and its size.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct ModelArgs {
    /// mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt (default: mlp for images and tables,
    /// lstm for text, logreg for imdb).
    #[arg(long)]
    pub model: Option<String>,
    /// MLP hidden layer sizes, comma-separated.
    #[arg(long, default_value = "256", value_delimiter = ',')]
    pub hidden: Vec<usize>,
    /// MLP activation: relu, tanh or sigmoid.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Language models: embedding width.
    #[arg(long, default_value_t = 32)]
    pub embed: usize,
    /// Language models: recurrent units per layer.
    #[arg(long, default_value_t = 200)]
    pub rnn_hidden: usize,
    /// Language models: stacked recurrent layers (1-3).
    #[arg(long, default_value_t = 2)]
    pub rnn_layers: usize,
    /// Dropout (MLP: after hidden layers; LMs: between layers and before the output).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// MLP: dropout on the input.
    #[arg(long, default_value_t = 0.0)]
    pub input_dropout: f32,
    /// GPT: pre-LayerNorm transformer blocks.
    #[arg(long, default_value_t = 2)]
    pub gpt_layers: usize,
    /// GPT: model width (embedding and residual stream); the MLP is 4x wider.
    #[arg(long, default_value_t = 128)]
    pub gpt_width: usize,
    /// GPT: attention heads (must divide --gpt-width).
    #[arg(long, default_value_t = 4)]
    pub gpt_heads: usize,
    /// GPT: positions in the learned positional table (the longest context it reads).
    #[arg(long, default_value_t = 128)]
    pub gpt_context: usize,
    /// GPT: an output projection of its own instead of the token embedding (tied by default).
    #[arg(long)]
    pub gpt_untied: bool,
    /// GPT: gelu-tanh (GPT-2's "gelu_new") or gelu (exact).
    #[arg(long, default_value = "gelu-tanh")]
    pub gelu: String,
}

/// What the data looks like, for choosing and sizing a model (the experiments layer's).
pub use memaudit_experiments::train::InputShape;

impl ModelArgs {
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
            a => return Err(user(format!("--activation {a}: use relu, tanh or sigmoid"))),
        };
        let mismatch = || {
            user(format!(
                "--model {name} does not fit this data (see `memaudit train --help` for which models take which data)"
            ))
        };
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.input_dropout) {
            return Err(user("--dropout and --input-dropout must be in [0, 1)"));
        }
        Ok(match (name, input) {
            (
                "mlp",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::Mlp {
                input: channels * height * width,
                hidden: self.hidden.clone(),
                classes: *classes,
                activation,
                dropout: self.dropout,
                input_dropout: self.input_dropout,
            },
            ("mlp", InputShape::Flat { features, classes }) => ModelConfig::Mlp {
                input: *features,
                hidden: self.hidden.clone(),
                classes: *classes,
                activation,
                dropout: self.dropout,
                input_dropout: self.input_dropout,
            },
            (
                "tutorial-cnn",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::TutorialCnn {
                channels: *channels,
                height: *height,
                width: *width,
                classes: *classes,
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
                channels: *channels,
                height: *height,
                width: *width,
                classes: *classes,
            },
            ("logreg", InputShape::Sparse { features, classes }) => ModelConfig::SparseLogReg {
                features: *features,
                classes: *classes,
            },
            ("lstm" | "gru", InputShape::Tokens { vocab }) => {
                if !(1..=3).contains(&self.rnn_layers) {
                    return Err(user(format!(
                        "--rnn-layers {}: use 1, 2 or 3",
                        self.rnn_layers
                    )));
                }
                let (vocab, embed, hidden, layers, dropout) = (
                    *vocab,
                    self.embed,
                    self.rnn_hidden,
                    self.rnn_layers,
                    self.dropout,
                );
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
                    g => return Err(user(format!("--gelu {g}: use gelu-tanh or gelu"))),
                };
                let cfg = ModelConfig::Gpt {
                    vocab: *vocab,
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
                    shape.validate().map_err(|e| {
                        user(format!(
                            "--gpt-layers/--gpt-width/--gpt-heads/--gpt-context: {e}"
                        ))
                    })?;
                }
                cfg
            }
            ("mlp" | "tutorial-cnn" | "groupnorm-cnn" | "logreg" | "lstm" | "gru" | "gpt", _) => {
                return Err(mismatch());
            }
            (other, _) => {
                return Err(user(format!(
                    "--model {other}: use mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt"
                )));
            }
        })
    }
}

/// Optimizer and schedule.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct OptimArgs {
    /// sgd, adam or rmsprop (default: adam for language models, sgd for every other model).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate (default: 0.1 for sgd; for adam 0.003 on language models, else 0.001;
    /// 0.001 for rmsprop).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f32,
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay (coupled, as PyTorch).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// constant, cosine or step.
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// step schedule: multiply the rate by --gamma every this many epochs.
    #[arg(long, default_value_t = 10)]
    pub step_every: usize,
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f32,
}

/// DP-SGD. Training is private when --noise-multiplier or --target-epsilon is given.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct PrivacyArgs {
    /// Noise standard deviation / clip bound (0 = clipping without noise: epsilon is infinite).
    #[arg(long, value_name = "SIGMA", conflicts_with = "target_epsilon")]
    pub noise_multiplier: Option<f64>,
    /// Calibrate the noise multiplier so that epsilon after all epochs is at most this.
    #[arg(long, value_name = "EPS")]
    pub target_epsilon: Option<f64>,
    /// Per-example clip bound C (flat, over all parameters; default 1; the start with --adaptive-clip).
    #[arg(long, value_name = "C")]
    pub clip: Option<f64>,
    /// Per-layer clip bounds, one per parameterised layer in order (total sensitivity sqrt(sum C_k^2)).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["adaptive_clip", "clip"])]
    pub clip_per_layer: Option<Vec<f64>>,
    /// Adaptive clipping to a quantile of the gradient norms (Andrew et al.); --clip is the start.
    #[arg(long)]
    pub adaptive_clip: bool,
    /// Adaptive clipping: target unclipped fraction.
    #[arg(long, default_value_t = 0.5)]
    pub target_quantile: f64,
    /// Adaptive clipping: geometric learning rate.
    #[arg(long, default_value_t = 0.2)]
    pub clip_lr: f64,
    /// Adaptive clipping: noise on the unclipped count (default: batch size / 20).
    #[arg(long)]
    pub clip_count_stddev: Option<f64>,
    /// Delta of the (epsilon, delta) guarantee.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// rdp or pld.
    #[arg(long, default_value = "rdp")]
    pub accountant: String,
    /// Stop training before epsilon would exceed this.
    #[arg(long, value_name = "EPS")]
    pub max_epsilon: Option<f64>,
    /// poisson (default for private runs; what the accounting assumes) or shuffle.
    #[arg(long)]
    pub sampling: Option<String>,
    /// Run a logical batch as chunks of at most this many examples (same result, less memory).
    #[arg(long, value_name = "N")]
    pub physical_batch: Option<usize>,
    /// Seed the DP noise and the Poisson sampler from --seed (reproducible research only: anyone
    /// with the seed can regenerate the noise).
    #[arg(long)]
    pub seeded_noise: bool,
}

impl PrivacyArgs {
    pub fn is_private(&self) -> bool {
        self.noise_multiplier.is_some() || self.target_epsilon.is_some()
    }

    pub fn accountant(&self) -> Result<AccountantKind> {
        match self.accountant.as_str() {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            a => Err(user(format!("--accountant {a}: use rdp or pld"))),
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
            Some(s) => Err(user(format!("--sampling {s}: use poisson or shuffle"))),
        }
    }

    /// Check the flags that make sense on their own (before any data is loaded).
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = self.noise_multiplier
            && !(s >= 0.0 && s.is_finite())
        {
            return Err(user(format!(
                "--noise-multiplier must be >= 0 and finite, got {s}"
            )));
        }
        if let Some(e) = self.target_epsilon
            && !(e > 0.0 && e.is_finite())
        {
            return Err(user(format!(
                "--target-epsilon must be > 0 and finite, got {e}"
            )));
        }
        if let Some(c) = self.clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(user(format!("--clip must be > 0, got {c}")));
        }
        if !self.is_private() {
            // Flags that only mean something under DP-SGD would be silently ignored otherwise.
            let private_only = [
                ("--clip", self.clip.is_some()),
                ("--clip-per-layer", self.clip_per_layer.is_some()),
                ("--adaptive-clip", self.adaptive_clip),
                ("--max-epsilon", self.max_epsilon.is_some()),
                ("--seeded-noise", self.seeded_noise),
            ];
            if let Some((flag, _)) = private_only.iter().find(|(_, given)| *given) {
                return Err(user(format!(
                    "{flag} applies only to private training: add --noise-multiplier or --target-epsilon, or drop {flag}"
                )));
            }
        }
        if let Some(b) = &self.clip_per_layer
            && b.iter().any(|c| !(*c > 0.0 && c.is_finite()))
        {
            return Err(user("--clip-per-layer: every bound must be > 0"));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(user(format!(
                "--delta must be in (0, 1), got {}",
                self.delta
            )));
        }
        if let Some(m) = self.max_epsilon
            && (m.is_nan() || m <= 0.0)
        {
            return Err(user(format!("--max-epsilon must be > 0, got {m}")));
        }
        if self.physical_batch == Some(0) {
            return Err(user("--physical-batch must be at least 1"));
        }
        if self.adaptive_clip && !(0.0..=1.0).contains(&self.target_quantile) {
            return Err(user(format!(
                "--target-quantile must be in [0, 1], got {}",
                self.target_quantile
            )));
        }
        self.accountant()?;
        self.sampling()?;
        Ok(())
    }
}

/// Epochs, batch, seed and the run folder.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct RunArgs {
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Expected (logical) batch size: q = batch / N under Poisson sampling.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed for initialisation, data order and dropout (default: drawn at random and recorded).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder (run.json, metrics.csv, checkpoints, report.html).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite a folder that holds another run.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
}

// The flag groups as the experiments layer's settings (fields named after the flags, so an
// error on `model.rnn_hidden` names `--rnn-hidden`).

macro_rules! settings_from {
    ($args:ty => $t:ty ; |$a:ident| $body:tt) => {
        impl From<&$args> for $t {
            fn from($a: &$args) -> Self {
                type S = $t;
                S $body
            }
        }
        impl $args {
            pub fn settings(&self) -> $t {
                <$t>::from(self)
            }
        }
    };
}

settings_from!(ModelArgs => memaudit_experiments::train::ModelSettings; |a| {
    model: a.model.clone(),
    hidden: a.hidden.clone(),
    activation: a.activation.clone(),
    embed: a.embed,
    rnn_hidden: a.rnn_hidden,
    rnn_layers: a.rnn_layers,
    dropout: a.dropout,
    input_dropout: a.input_dropout,
    gpt_layers: a.gpt_layers,
    gpt_width: a.gpt_width,
    gpt_heads: a.gpt_heads,
    gpt_context: a.gpt_context,
    gpt_untied: a.gpt_untied,
    gelu: a.gelu.clone(),
});

impl OptimArgs {
    pub fn settings(&self) -> memaudit_experiments::optim::OptimSettings {
        memaudit_experiments::optim::OptimSettings {
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            schedule: self.schedule.clone(),
            step_every: self.step_every,
            gamma: self.gamma,
        }
    }
}

settings_from!(PrivacyArgs => memaudit_experiments::train::PrivacySettings; |a| {
    noise_multiplier: a.noise_multiplier,
    target_epsilon: a.target_epsilon,
    clip: a.clip,
    clip_per_layer: a.clip_per_layer.clone(),
    adaptive_clip: a.adaptive_clip,
    target_quantile: a.target_quantile,
    clip_lr: a.clip_lr,
    clip_count_stddev: a.clip_count_stddev,
    delta: a.delta,
    accountant: a.accountant.clone(),
    max_epsilon: a.max_epsilon,
    sampling: a.sampling.clone(),
    physical_batch: a.physical_batch,
    seeded_noise: a.seeded_noise,
});

impl RunArgs {
    pub fn settings(&self) -> memaudit_experiments::train::RunSettings {
        memaudit_experiments::train::RunSettings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            out: self.out.clone(),
            force: self.force,
            resume: self.resume,
        }
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        optim: OptimArgs,
        #[command(flatten)]
        privacy: PrivacyArgs,
        #[command(flatten)]
        run: RunArgs,
    }

    /// The flags' defaults are the settings' defaults (defined once, in the library).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        let cli = <Cli as clap::Parser>::parse_from(["x", "--out", "o"]);
        assert_eq!(cli.model.settings(), Default::default());
        assert_eq!(cli.optim.settings(), Default::default());
        assert_eq!(cli.privacy.settings(), Default::default());
        let run = cli.run.settings();
        assert_eq!(
            run,
            memaudit_experiments::train::RunSettings {
                out: "o".into(),
                ..Default::default()
            }
        );
    }
}
