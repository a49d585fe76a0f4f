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
