//! Per-example signals of a model on one (example, query), and the conversions between the three
//! kinds a score file may hold.
//!
//! - LiRA's logit-scaled confidence phi = log p_y - log(sum_{j != y} p_j), computed from the
//!   logits as z_y - logsumexp_{j != y} z_j. Never log(p / (1 - p)) on a rounded probability:
//!   for a confidently right example p rounds to 1 in f32/f64 and phi would be +inf.
//! - RMIA's probability Pr(x | theta) = softmax(z / T)_y, kept as a log-probability so long LM
//!   sequences (log-likelihood of hundreds of tokens) do not underflow.
//! - Cross-entropy and hinge, as TF Privacy's `calculate_statistic`.

use serde::{Deserialize, Serialize};

/// What one number of a score file (or of our own models' outputs) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// LiRA's phi = log p_y - log(1 - p_y), from the logits.
    #[default]
    LogitConfidence,
    /// p_y, the softmax probability of the true label.
    Probability,
    /// The log-likelihood of an example (a sequence, for language models).
    LogLikelihood,
}

impl SignalKind {
    /// The name used in score files (`signal_kind`) and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::LogitConfidence => "logit_confidence",
            SignalKind::Probability => "probability",
            SignalKind::LogLikelihood => "log_likelihood",
        }
    }

    /// Parse a score file's `signal_kind`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "logit_confidence" => Some(SignalKind::LogitConfidence),
            "probability" => Some(SignalKind::Probability),
            "log_likelihood" => Some(SignalKind::LogLikelihood),
            _ => None,
        }
    }

    /// The statistic LiRA fits Gaussians to: phi for classifiers (a probability is turned into
    /// phi, clamped away from 0 and 1 so it stays finite), the log-likelihood itself for
    /// sequences (a sum of many token terms, close to Gaussian already).
    pub fn lira_statistic(self, value: f64) -> f64 {
        match self {
            SignalKind::LogitConfidence | SignalKind::LogLikelihood => value,
            SignalKind::Probability => {
                let p = value.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0);
                p.ln() - (-p).ln_1p()
            }
        }
    }

    /// log Pr(x | theta), RMIA's signal and LOSS's (minus the loss). From phi:
    /// log sigmoid(phi) = -softplus(-phi), stable for any phi.
    pub fn log_probability(self, value: f64) -> f64 {
        match self {
            SignalKind::LogitConfidence => -softplus(-value),
            SignalKind::Probability => value.ln(),
            SignalKind::LogLikelihood => value,
        }
    }
}

/// log(1 + e^x) without overflow or loss of precision for large |x|.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// log sum_i e^{x_i} over the items `keep` selects (-inf when none is selected).
fn log_sum_exp_where(logits: &[f64], keep: impl Fn(usize) -> bool) -> f64 {
    let max = logits
        .iter()
        .enumerate()
        .filter(|(j, _)| keep(*j))
        .map(|(_, &z)| z)
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || max.is_nan() {
        return max;
    }
    if max == f64::INFINITY {
        return f64::INFINITY;
    }
    let sum: f64 = logits
        .iter()
        .enumerate()
        .filter(|(j, _)| keep(*j))
        .map(|(_, &z)| (z - max).exp())
        .sum();
    max + sum.ln()
}

/// log sum_i e^{x_i}.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    log_sum_exp_where(values, |_| true)
}

/// log( (1/n) sum_i e^{x_i} ), -inf for an empty slice.
pub fn log_mean_exp(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NEG_INFINITY;
    }
    log_sum_exp(values) - (values.len() as f64).ln()
}

/// LiRA's phi = z_y - logsumexp_{j != y} z_j (TF Privacy's `logit` statistic).
pub fn logit_confidence(logits: &[f64], label: usize) -> f64 {
    logits[label] - log_sum_exp_where(logits, |j| j != label)
}

/// log softmax(z / T)_y, RMIA's log Pr(x | theta) at temperature T.
pub fn log_probability(logits: &[f64], label: usize, temperature: f64) -> f64 {
    let scaled: Vec<f64> = logits.iter().map(|z| z / temperature).collect();
    scaled[label] - log_sum_exp(&scaled)
}

/// Cross-entropy -log softmax(z)_y (TF Privacy's `xe`).
pub fn cross_entropy(logits: &[f64], label: usize) -> f64 {
    -log_probability(logits, label, 1.0)
}

/// Hinge z_y - max_{j != y} z_j (TF Privacy's `hinge`).
pub fn hinge(logits: &[f64], label: usize) -> f64 {
    let other = logits
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != label)
        .map(|(_, &z)| z)
        .fold(f64::NEG_INFINITY, f64::max);
    logits[label] - other
}

#[cfg(test)]
mod tests {
    use super::*;

    // TF Privacy `advanced_mia.calculate_statistic(logits=[[1,2,-3],[-1,1,0]], labels=[1,2])`
    // (auditing.md §1). TF Privacy computes in float32: its phi is 2e-8 off the exact value
    // (0.98185009 vs 0.981850072), so 1e-7.
    const LOGITS: [[f64; 3]; 2] = [[1.0, 2.0, -3.0], [-1.0, 1.0, 0.0]];
    const LABELS: [usize; 2] = [1, 2];

    #[test]
    fn calculate_statistic_vectors() {
        let phi = [0.98185009, -1.12692802];
        let xe = [0.31817543, 1.40760596];
        let hinge_want = [1.0, -1.0];
        let prob = [0.72747516, 0.24472847];
        for i in 0..2 {
            let (z, y) = (&LOGITS[i], LABELS[i]);
            assert!((logit_confidence(z, y) - phi[i]).abs() < 1e-7);
            assert!((cross_entropy(z, y) - xe[i]).abs() < 1e-7);
            assert!((hinge(z, y) - hinge_want[i]).abs() < 1e-12);
            assert!((log_probability(z, y, 1.0).exp() - prob[i]).abs() < 1e-7);
        }
    }

    #[test]
    fn phi_is_finite_where_the_probability_rounds_to_one() {
        // p_y = 1 - e^-100 is 1.0 in f64; log(p / (1 - p)) would be +inf.
        let z = [100.0, 0.0];
        let p = log_probability(&z, 0, 1.0).exp();
        assert_eq!(p, 1.0);
        assert!((logit_confidence(&z, 0) - 100.0).abs() < 1e-12);
        // Huge logits do not overflow exp.
        assert!((logit_confidence(&[1000.0, 990.0, 0.0], 0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn conversions_between_kinds_agree() {
        let z = [1.0, 2.0, -3.0];
        let phi = logit_confidence(&z, 1);
        let lp = log_probability(&z, 1, 1.0);
        // The same example described by its phi, its probability and its log-probability.
        let from_phi = SignalKind::LogitConfidence.log_probability(phi);
        let from_p = SignalKind::Probability.log_probability(lp.exp());
        assert!((from_phi - lp).abs() < 1e-12);
        assert!((from_p - lp).abs() < 1e-12);
        assert!((SignalKind::Probability.lira_statistic(lp.exp()) - phi).abs() < 1e-12);
        // Far tail: phi = -800 means log p = -800, not log(0).
        assert!((SignalKind::LogitConfidence.log_probability(-800.0) + 800.0).abs() < 1e-9);
    }

    #[test]
    fn temperature_flattens_the_softmax() {
        let z = [3.0, 0.0];
        let p1 = log_probability(&z, 0, 1.0).exp();
        let p2 = log_probability(&z, 0, 2.0).exp();
        assert!((p2 - 1.0 / (1.0 + (-1.5f64).exp())).abs() < 1e-12);
        assert!(p2 < p1);
    }
}
