//! The bridge to `memaudit-accounting`: epsilon of DP-SGD runs.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Which accountant reports epsilon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountantKind {
    Rdp,
    Pld,
}

/// Epsilon of `steps` Poisson-subsampled Gaussian steps (q = 1: unsampled).
pub fn epsilon(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64> {
    let _ = (q, noise_multiplier, steps, delta, kind);
    Err(EngineError::Config("accounting is not wired yet".into()))
}

/// The smallest noise multiplier whose epsilon after `steps` steps is <= `target`.
pub fn calibrate(q: f64, steps: u64, delta: f64, target: f64, kind: AccountantKind) -> Result<f64> {
    let _ = (q, steps, delta, target, kind);
    Err(EngineError::Config("accounting is not wired yet".into()))
}

/// A privacy statement: (text, numbers as JSON).
pub fn statement(
    n: u64,
    batch: u64,
    epochs: f64,
    noise_multiplier: f64,
    delta: f64,
    kind: AccountantKind,
) -> Result<(String, serde_json::Value)> {
    let _ = (n, batch, epochs, noise_multiplier, delta, kind);
    Err(EngineError::Config("accounting is not wired yet".into()))
}
