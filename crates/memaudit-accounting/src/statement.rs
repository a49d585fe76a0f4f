//! A plain-language privacy statement for a DP-SGD run, after TF Privacy's
//! `compute_dp_sgd_privacy_statement` (compute_dp_sgd_privacy_lib.py): epsilon under Poisson
//! sampling and under "each example once per epoch" (no amplification by sampling), and, when
//! the number of examples per user is bounded, user-level epsilon as TF Privacy computes it since
//! May 2024 (commit 99c25e3): without sampling, the k examples of a user may share one step, so
//! the noise multiplier is divided by k; with Poisson sampling, group privacy (Vadhan 2017, "The
//! Complexity of Differential Privacy", Lemma 2.2, with the tighter δ of its proof and a line
//! search over the example-level δ). TF Privacy's PLD user-level number (a mixture-of-Gaussians
//! PLD, Ganesh 2024) is not implemented: with PLD accounting no user-level number is given.

use std::fmt;

use crate::error::{Result, check_delta, invalid};
use crate::event::{DpEvent, NeighboringRelation};
use crate::pld::PldAccountant;
use crate::rdp::RdpAccountant;
use crate::{AccountantKind, PrivacyAccountant};

/// What the statement is about. Numbers are as the training run used them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatementParams {
    /// Examples in the training set (N). For language models: sequence windows.
    pub dataset_size: u64,
    /// Examples per step (B), however they are grouped into microbatches.
    pub batch_size: u64,
    /// Passes over the data (may be fractional).
    pub epochs: f64,
    /// Poisson-sampled steps actually run, when a trainer knows them (it may round steps per
    /// epoch up, ceil(N/B) per epoch); `None` uses TF Privacy's count ceil(epochs / q).
    pub steps: Option<u64>,
    /// Noise standard deviation / clipping norm.
    pub noise_multiplier: f64,
    /// Target delta.
    pub delta: f64,
    /// Gradients were clipped per microbatch of more than one example: the add-or-remove
    /// sensitivity doubles, so the accounting uses noise_multiplier / 2 (TF Privacy's default is
    /// true; memaudit's trainer clips per example, so false).
    pub used_microbatching: bool,
    /// An upper bound on the examples one user contributes, for a user-level guarantee.
    pub max_examples_per_user: Option<u64>,
    /// RDP (default orders, improved conversion) or PLD (dp_accounting defaults).
    pub accountant: AccountantKind,
}

/// The numbers of a privacy statement; `Display` renders the text.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyStatement {
    /// The inputs.
    pub params: StatementParams,
    /// q = B / N.
    pub sampling_probability: f64,
    /// ceil(epochs / q): Poisson-sampled steps (TF Privacy's count).
    pub poisson_steps: u64,
    /// ceil(epochs): how often each example is used without sampling.
    pub epoch_steps: u64,
    /// The noise multiplier the accounting used (halved with microbatching).
    pub accounted_noise_multiplier: f64,
    /// Example-level epsilon assuming Poisson sampling.
    pub epsilon_poisson: f64,
    /// Example-level epsilon when each example occurs once per epoch in an arbitrary order.
    pub epsilon_once_per_epoch: f64,
    /// User-level epsilon assuming Poisson sampling (RDP accounting and a user bound only).
    pub user_epsilon_poisson: Option<f64>,
    /// User-level epsilon, once per epoch.
    pub user_epsilon_once_per_epoch: Option<f64>,
}

fn check_params(p: &StatementParams) -> Result<()> {
    if p.dataset_size == 0 {
        return Err(invalid("dataset_size", 0.0, "must be at least 1"));
    }
    if p.batch_size == 0 || p.batch_size > p.dataset_size {
        return Err(invalid(
            "batch_size",
            p.batch_size as f64,
            format!("must be between 1 and dataset_size ({})", p.dataset_size),
        ));
    }
    if !(p.epochs > 0.0 && p.epochs.is_finite()) {
        return Err(invalid("epochs", p.epochs, "must be a finite number > 0"));
    }
    if p.steps == Some(0) {
        return Err(invalid("steps", 0.0, "must be at least 1"));
    }
    if !(p.noise_multiplier >= 0.0 && p.noise_multiplier.is_finite()) {
        return Err(invalid(
            "noise_multiplier",
            p.noise_multiplier,
            "must be a finite number >= 0",
        ));
    }
    check_delta(p.delta)?;
    if p.max_examples_per_user == Some(0) {
        return Err(invalid("max_examples_per_user", 0.0, "must be at least 1"));
    }
    Ok(())
}

fn composed_accountant(
    kind: AccountantKind,
    event: &DpEvent,
) -> Result<Box<dyn PrivacyAccountant>> {
    let mut acc: Box<dyn PrivacyAccountant> = match kind {
        AccountantKind::Rdp => Box::new(RdpAccountant::new(NeighboringRelation::AddOrRemoveOne)),
        AccountantKind::Pld => Box::new(PldAccountant::new(NeighboringRelation::AddOrRemoveOne)),
    };
    acc.compose(event)?;
    Ok(acc)
}

/// log(exp(x) - 1) for x > 0.
fn log_expm1(x: f64) -> f64 {
    x + (-(-x).exp_m1()).ln()
}

/// Group privacy for k examples per user (Vadhan 2017 Lemma 2.2): an (ε, δ) example guarantee
/// gives (kε, δ (e^(kε) - 1)/(e^ε - 1)) per user. Finds the example δ whose user δ is the target
/// (bisection in log δ to 1e-12, after TF Privacy's bracketing) and returns kε.
fn user_epsilon(acc: &dyn PrivacyAccountant, k: u64, user_delta: f64) -> Result<f64> {
    if k == 1 {
        return acc.epsilon(user_delta);
    }
    let kf = k as f64;
    let target = user_delta.ln();
    let gap = |log_delta: f64| -> Result<f64> {
        let eps = acc.epsilon(log_delta.exp())?;
        if eps == 0.0 {
            // (e^(kε) - 1)/(e^ε - 1) -> k as ε -> 0.
            return Ok(log_delta + kf.ln() - target);
        }
        Ok(log_delta + log_expm1(kf * eps) - log_expm1(eps) - target)
    };
    let mut hi = target;
    let mut lo = hi - 10f64.ln();
    let mut gap_lo = gap(lo)?;
    loop {
        if !gap_lo.is_finite() {
            // The user-level δ diverges: no finite user-level epsilon.
            return Ok(f64::INFINITY);
        }
        if gap_lo <= 0.0 {
            break;
        }
        // The user δ at lo is too large by gap_lo (in log), and so is every example δ above
        // lo - gap_lo (TF Privacy's bracketing argument).
        hi = lo - gap_lo;
        lo = hi - 10f64.ln();
        if lo < f64::MIN_POSITIVE.ln() {
            return Ok(f64::INFINITY);
        }
        gap_lo = gap(lo)?;
    }
    // gap(lo) <= 0 < gap(hi): bisect.
    let (mut lo_v, mut hi_v) = (lo, hi);
    while hi_v - lo_v > 1e-12 {
        let mid = 0.5 * (lo_v + hi_v);
        if gap(mid)? > 0.0 {
            hi_v = mid;
        } else {
            lo_v = mid;
        }
    }
    Ok(kf * acc.epsilon(lo_v.exp())?)
}

/// Computes the statement's numbers.
pub fn privacy_statement(params: &StatementParams) -> Result<PrivacyStatement> {
    check_params(params)?;
    let q = params.batch_size as f64 / params.dataset_size as f64;
    let sigma = if params.used_microbatching {
        params.noise_multiplier / 2.0
    } else {
        params.noise_multiplier
    };
    let poisson_steps = params.steps.unwrap_or((params.epochs / q).ceil() as u64);
    let epoch_steps = params.epochs.ceil() as u64;
    let poisson = DpEvent::self_composed(
        DpEvent::poisson_sampled(q, DpEvent::gaussian(sigma)),
        poisson_steps,
    );
    let once = DpEvent::self_composed(DpEvent::gaussian(sigma), epoch_steps);
    let acc_poisson = composed_accountant(params.accountant, &poisson)?;
    let acc_once = composed_accountant(params.accountant, &once)?;
    let epsilon_poisson = acc_poisson.epsilon(params.delta)?;
    let epsilon_once_per_epoch = acc_once.epsilon(params.delta)?;
    let (user_epsilon_poisson, user_epsilon_once_per_epoch) =
        match (params.max_examples_per_user, params.accountant) {
            (Some(k), AccountantKind::Rdp) => {
                // Without sampling, a user's k examples may all land in one step: the
                // sensitivity is k times larger, i.e. the noise multiplier k times smaller
                // (TF Privacy since 2024-05).
                let once_user =
                    DpEvent::self_composed(DpEvent::gaussian(sigma / k as f64), epoch_steps);
                let acc_once_user = composed_accountant(params.accountant, &once_user)?;
                (
                    Some(user_epsilon(acc_poisson.as_ref(), k, params.delta)?),
                    Some(acc_once_user.epsilon(params.delta)?),
                )
            }
            _ => (None, None),
        };
    Ok(PrivacyStatement {
        params: *params,
        sampling_probability: q,
        poisson_steps,
        epoch_steps,
        accounted_noise_multiplier: sigma,
        epsilon_poisson,
        epsilon_once_per_epoch,
        user_epsilon_poisson,
        user_epsilon_once_per_epoch,
    })
}

/// A number as given (shortest form that reads back the same), in scientific notation when
/// very large or small: Rust writes 1e300 with 300 digits otherwise.
fn fmt_value(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn fmt_eps(x: f64) -> String {
    if x.is_finite() && x.abs() >= 1e6 {
        format!("{x:.3e}")
    } else if x.is_finite() {
        format!("{x:.3}")
    } else {
        "infinite (no guarantee)".into()
    }
}

impl fmt::Display for PrivacyStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        let accountant = match p.accountant {
            AccountantKind::Rdp => "RDP",
            AccountantKind::Pld => "PLD",
        };
        writeln!(f, "Privacy statement (DP-SGD, differential privacy)")?;
        writeln!(f)?;
        writeln!(
            f,
            "Training: {} examples, {} examples per step (sampling rate q = {:.6}), noise multiplier {}, {} epochs, {}.",
            p.dataset_size,
            p.batch_size,
            self.sampling_probability,
            fmt_value(p.noise_multiplier),
            fmt_value(p.epochs),
            if p.used_microbatching {
                format!(
                    "clipped per microbatch (so accounted with noise multiplier {})",
                    fmt_value(self.accounted_noise_multiplier)
                )
            } else {
                "clipped per example".to_string()
            }
        )?;
        writeln!(
            f,
            "Unit of privacy: one training example (for a language model, one sequence window of the training \
             stream). Two datasets are neighbours when one has one example more than the other."
        )?;
        writeln!(
            f,
            "The guarantee covers every model checkpoint released during training, not only the final model."
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Example-level (epsilon, delta)-DP at delta = {:e}, {accountant} accounting:",
            p.delta
        )?;
        writeln!(
            f,
            "  epsilon if each example is used once per epoch, in any order ({} releases): {}",
            self.epoch_steps,
            fmt_eps(self.epsilon_once_per_epoch)
        )?;
        writeln!(
            f,
            "  epsilon if every step is a Poisson sample ({} steps, each example in each with probability q) (*): {}",
            self.poisson_steps,
            fmt_eps(self.epsilon_poisson)
        )?;
        writeln!(f)?;
        match (
            p.max_examples_per_user,
            self.user_epsilon_poisson,
            self.user_epsilon_once_per_epoch,
        ) {
            (None, _, _) => writeln!(
                f,
                "No user-level guarantee: nothing bounds how many examples one person contributes."
            )?,
            (Some(k), Some(up), Some(uo)) => {
                writeln!(
                    f,
                    "User-level (epsilon, delta)-DP at delta = {:e} for users with at most {k} examples (group privacy):",
                    p.delta
                )?;
                writeln!(f, "  epsilon, each example once per epoch: {}", fmt_eps(uo))?;
                writeln!(f, "  epsilon, Poisson sampling (*): {}", fmt_eps(up))?;
            }
            (Some(_), _, _) => writeln!(
                f,
                "User-level epsilon is computed with RDP accounting only (group privacy over a PLD can be far too \
                 pessimistic); rerun with the RDP accountant."
            )?,
        }
        writeln!(f)?;
        writeln!(f, "Assumptions:")?;
        writeln!(
            f,
            "  - Each example's gradient is clipped to L2 norm C and Gaussian noise of standard deviation \
             (noise multiplier x C) is added to the sum, with the same noise multiplier at every step."
        )?;
        writeln!(
            f,
            "  - (*) The Poisson number assumes each batch was drawn by including every example independently \
             with probability q. Training pipelines usually shuffle into fixed batches instead; the true epsilon \
             is then believed to be close to the Poisson number, but only the once-per-epoch number is proven for \
             an arbitrary order."
        )?;
        writeln!(
            f,
            "  - Nothing else touched the training data: hyperparameter tuning, data-dependent preprocessing and \
             repeated runs are not accounted for."
        )?;
        let inv_n = 1.0 / p.dataset_size as f64;
        if p.delta >= inv_n {
            writeln!(
                f,
                "  - Warning: delta = {:e} is not below 1/N = {:.3e}; such a delta allows releasing a few examples \
                 outright. Use delta well below 1/N.",
                p.delta, inv_n
            )?;
        } else {
            writeln!(
                f,
                "  - delta = {:e} is below 1/N = {:.3e}, as it should be.",
                p.delta, inv_n
            )?;
        }
        Ok(())
    }
}
