//! `memaudit statement`: a plain-language privacy statement for a DP-SGD run (after TF Privacy's
//! `compute_dp_sgd_privacy_statement`).

use memaudit_accounting::{AccountantKind, StatementParams, privacy_statement};
use serde_json::json;

use super::epsilon::check_noise;
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num, opt_num};

/// The accountant of the statement.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementAccountant {
    /// Rényi DP (also gives user-level numbers).
    Rdp,
    /// Privacy loss distributions.
    Pld,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training examples N (for a language model: sequence windows).
    #[arg(long, value_name = "N")]
    pub dataset_size: u64,
    /// Examples per step B.
    #[arg(long, value_name = "B")]
    pub batch_size: u64,
    /// Passes over the data (may be fractional).
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub epochs: f64,
    /// Noise multiplier: noise standard deviation / clipping norm.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub noise_multiplier: f64,
    /// Target delta in (0, 1).
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub delta: f64,
    /// Gradients were clipped per microbatch of several examples (accounts with half the noise
    /// multiplier, as TF Privacy does by default; memaudit's trainer clips per example).
    #[arg(long)]
    pub used_microbatching: bool,
    /// At most this many examples per user: adds user-level numbers (RDP only).
    #[arg(long, value_name = "K")]
    pub max_examples_per_user: Option<u64>,
    /// Accountant.
    #[arg(long, value_enum, default_value = "rdp")]
    pub accountant: StatementAccountant,
}

pub fn run(args: &Args, _ctx: &Ctx) -> anyhow::Result<Report> {
    if args.dataset_size == 0 {
        return Err(user("--dataset-size must be at least 1"));
    }
    if args.batch_size == 0 || args.batch_size > args.dataset_size {
        return Err(user(format!(
            "--batch-size must be between 1 and --dataset-size ({}), got {}",
            args.dataset_size, args.batch_size
        )));
    }
    if !(args.epochs > 0.0 && args.epochs.is_finite()) {
        return Err(user(format!(
            "--epochs must be a finite number > 0, got {}",
            args.epochs
        )));
    }
    check_noise(args.noise_multiplier)?;
    if !(args.delta > 0.0 && args.delta < 1.0) {
        return Err(user(format!(
            "--delta must be in (0, 1), got {}",
            args.delta
        )));
    }
    if args.max_examples_per_user == Some(0) {
        return Err(user("--max-examples-per-user must be at least 1"));
    }
    let accountant = match args.accountant {
        StatementAccountant::Rdp => AccountantKind::Rdp,
        StatementAccountant::Pld => AccountantKind::Pld,
    };
    let params = StatementParams {
        steps: None,
        dataset_size: args.dataset_size,
        batch_size: args.batch_size,
        epochs: args.epochs,
        noise_multiplier: args.noise_multiplier,
        delta: args.delta,
        used_microbatching: args.used_microbatching,
        max_examples_per_user: args.max_examples_per_user,
        accountant,
    };
    let s = privacy_statement(&params).map_err(|e| user(e.to_string()))?;
    let text = s.to_string();
    let json = json!({
        "dataset_size": s.params.dataset_size,
        "batch_size": s.params.batch_size,
        "epochs": num(s.params.epochs),
        "noise_multiplier": num(s.params.noise_multiplier),
        "delta": num(s.params.delta),
        "used_microbatching": s.params.used_microbatching,
        "max_examples_per_user": s.params.max_examples_per_user,
        "accountant": accountant.name(),
        "unit_of_privacy": "one training example (for a language model: one sequence window)",
        "neighboring_relation": "add-or-remove-one",
        "sampling_probability": num(s.sampling_probability),
        "poisson_steps": s.poisson_steps,
        "epoch_steps": s.epoch_steps,
        "accounted_noise_multiplier": num(s.accounted_noise_multiplier),
        "epsilon_poisson": num(s.epsilon_poisson),
        "epsilon_once_per_epoch": num(s.epsilon_once_per_epoch),
        "user_epsilon_poisson": opt_num(s.user_epsilon_poisson),
        "user_epsilon_once_per_epoch": opt_num(s.user_epsilon_once_per_epoch),
        "text": text,
    });
    Ok(Report::new(text, json))
}
