//! Flag groups shared by every command that trains (train, secret-sharer, dp-sweep, attack,
//! dynamics), so the same flag means the same thing everywhere. They only carry values: each
//! group converts to the experiments library's settings (`settings()`), whose `validate` and
//! model builder are the only ones.

use std::path::PathBuf;

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
