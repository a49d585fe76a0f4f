//! The bridge to `memaudit-accounting`: epsilon, noise calibration and the privacy statement of
//! DP-SGD runs. Every step of a run is one Poisson-subsampled Gaussian with q = batch / n and the
//! run's total noise multiplier (with adaptive clipping that total already covers the clip-count
//! noise: dp_accounting's rule for composed Gaussians, `z = (z_sum^-2 + (2 sigma_b)^-2)^(-1/2)`).

use memaudit_accounting as acc;

use crate::error::{EngineError, Result};
use crate::ledger::{epsilon_of, planned_event};
use crate::sampler::SamplingMode;

/// Which accountant reports epsilon: the accounting crate's one type (serialised "rdp"/"pld").
pub use memaudit_accounting::AccountantKind;

fn err(e: acc::AccountingError) -> EngineError {
    EngineError::Accounting(e)
}

/// Epsilon of `steps` Poisson-subsampled Gaussian steps (q = 1: unsampled); infinite for z = 0.
pub fn epsilon(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64> {
    let ev = acc::dp_sgd_event(q, noise_multiplier, steps);
    Ok(acc::epsilon_for(&ev, delta, kind).map_err(err)?.epsilon)
}

/// The smallest noise multiplier (to 1e-4 relative, never overshooting) whose epsilon after
/// `steps` Poisson steps is <= `target`.
pub fn calibrate(q: f64, steps: u64, delta: f64, target: f64, kind: AccountantKind) -> Result<f64> {
    let c = acc::calibrate_noise(|s| acc::dp_sgd_event(q, s, steps), delta, target, kind)
        .map_err(err)?;
    Ok(c.noise_multiplier)
}

/// The smallest noise multiplier whose *guarantee* after `epochs` epochs of `sampling` is <=
/// `target`: Poisson steps for Poisson runs, one unamplified Gaussian per epoch for shuffled
/// ones (the rule the run's ledger applies afterwards, `ledger::planned_event`).
pub fn calibrate_planned(
    sampling: SamplingMode,
    n: u64,
    batch: u64,
    epochs: u64,
    delta: f64,
    target: f64,
    kind: AccountantKind,
) -> Result<f64> {
    let c = acc::calibrate_noise(
        |s| planned_event(sampling, n, batch, s, epochs),
        delta,
        target,
        kind,
    )
    .map_err(err)?;
    Ok(c.noise_multiplier)
}

/// The guarantee of a planned run of `epochs` epochs (see `calibrate_planned`).
pub fn planned_epsilon(
    sampling: SamplingMode,
    n: u64,
    batch: u64,
    noise_multiplier: f64,
    epochs: u64,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64> {
    epsilon_of(
        &planned_event(sampling, n, batch, noise_multiplier, epochs),
        delta,
        kind,
    )
}

/// A privacy statement (TF Privacy's `compute_dp_sgd_privacy_statement`): its text and numbers.
pub fn statement(
    n: u64,
    batch: u64,
    epochs: f64,
    steps: Option<u64>,
    noise_multiplier: f64,
    delta: f64,
    kind: AccountantKind,
) -> Result<(String, serde_json::Value)> {
    let st = acc::privacy_statement(&acc::StatementParams {
        dataset_size: n,
        batch_size: batch,
        epochs,
        steps,
        noise_multiplier,
        delta,
        // memaudit clips every example on its own (microbatches of one).
        used_microbatching: false,
        max_examples_per_user: None,
        accountant: kind,
    })
    .map_err(err)?;
    let fin = |x: f64| {
        if x.is_finite() {
            serde_json::json!(x)
        } else {
            serde_json::json!("inf")
        }
    };
    let json = serde_json::json!({
        "dataset_size": n,
        "batch_size": batch,
        "epochs": epochs,
        "noise_multiplier": noise_multiplier,
        "delta": delta,
        "accountant": kind,
        "sampling_probability": st.sampling_probability,
        "poisson_steps": st.poisson_steps,
        "epsilon_poisson": fin(st.epsilon_poisson),
        "epsilon_once_per_epoch": fin(st.epsilon_once_per_epoch),
    });
    Ok((st.to_string(), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_tutorial_numbers() {
        // TF Privacy MNIST tutorial: q = 256/60000, sigma 1.1, 60 epochs = 14063 steps, delta 1e-5:
        // 2.5967 with the improved conversion (papers.md 5.6 row 3), PLD 2.3818 (row 3b).
        let q = 256.0 / 60000.0;
        let e = epsilon(q, 1.1, 14063, 1e-5, AccountantKind::Rdp).unwrap();
        assert!((e - 2.5967).abs() < 1e-4, "{e}");
        let p = epsilon(q, 1.1, 14063, 1e-5, AccountantKind::Pld).unwrap();
        assert!((p / 2.3818 - 1.0).abs() < 5e-3, "{p}");
        assert!(
            epsilon(q, 0.0, 10, 1e-5, AccountantKind::Rdp)
                .unwrap()
                .is_infinite()
        );
        let s = calibrate(q, 14063, 1e-5, 2.5967, AccountantKind::Rdp).unwrap();
        assert!(
            epsilon(q, s, 14063, 1e-5, AccountantKind::Rdp).unwrap() <= 2.5967
                && (s - 1.1).abs() < 1e-3,
            "{s}"
        );
    }
}
