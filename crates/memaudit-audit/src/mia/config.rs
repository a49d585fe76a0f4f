//! The typed configuration of every attack and of the metrics, with all defaults in this one file.
//! `#[serde(default)]` everywhere: a JSON config may name only what it changes.

use serde::{Deserialize, Serialize};

use super::error::{MiaError, Result};

/// Which Gaussian variance LiRA uses per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceMode {
    /// Per-example variance where the example has at least `per_example_min` IN and OUT values
    /// (OUT only, offline), the global one elsewhere: LeakPro's switch; the paper finds the
    /// global variance better below ~64 shadow models.
    Auto,
    /// Always the example's own variance (the authors' default with 256 models).
    PerExample,
    /// Always one variance per query (TF Privacy's `fix_variance`: the standard deviation of
    /// all values after subtracting each example's centre).
    Global,
}

/// How LiRA centres each example's IN and OUT values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Center {
    /// The median (the authors' code and TF Privacy; robust to a diverging shadow model).
    Median,
    /// The mean (the paper's text).
    Mean,
}

/// What LiRA does with an example that has no IN (online) or no OUT shadow value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingShadows {
    /// Refuse, naming the example (the default: its score would be made up).
    Error,
    /// TF Privacy's fallback: the mean over the other examples of the centres and standard
    /// deviations. The result's notes say how many examples used it.
    ColumnMean,
}

/// LiRA (Carlini et al. 2022).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiraConfig {
    pub variance: VarianceMode,
    /// IN and OUT values an example needs for its own variance under `Auto` (LeakPro: 32).
    pub per_example_min: usize,
    pub center: Center,
    pub missing: MissingShadows,
}

impl Default for LiraConfig {
    fn default() -> Self {
        Self {
            variance: VarianceMode::Auto,
            per_example_min: 32,
            center: Center::Median,
            missing: MissingShadows::Error,
        }
    }
}

/// RMIA (Zarifzadeh, Liu, Shokri 2024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmiaConfig {
    /// Likelihood-ratio threshold gamma: z counts against x when
    /// [Pr(x|θ)/Pr(x)] / [Pr(z|θ)/Pr(z)] > gamma. 1 as ML Privacy Meter v2: every ratio above
    /// chance counts, so the score ranks examples even for weakly fitted models, where with the
    /// authors' research code's 2 every score can be 0 (measured: all 0 on an MLP after 3 epochs
    /// on digits).
    pub gamma: f64,
    /// Softmax temperature T of Pr(x|θ) = softmax(f(x)/T)_y, applied where logits are at hand
    /// (memaudit's own shadow models). A score file holds the signal already; it is used as is.
    /// 1 as ML Privacy Meter v2 (the authors' research code: 2).
    pub temperature: f64,
    /// Offline `a` in Pr(x) = ((1 + a) mean_OUT + (1 - a)) / 2; `None`: tuned (see below).
    pub a: Option<f64>,
    /// `a` when fewer than 2 reference models leave nothing to tune on (the authors' 0.3).
    pub a_few_references: f64,
    /// Which reference model plays the target while `a` is tuned on 0, 0.1, ..., 1.
    pub tuning_reference: usize,
}

impl Default for RmiaConfig {
    fn default() -> Self {
        Self {
            gamma: 1.0,
            temperature: 1.0,
            a: None,
            a_few_references: 0.3,
            tuning_reference: 0,
        }
    }
}

/// The reference-free LM baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmConfig {
    /// Min-K% probability: the fraction of lowest-probability tokens averaged (Shi et al. 2024
    /// use 20%).
    pub min_k_fraction: f64,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self {
            min_k_fraction: 0.2,
        }
    }
}

/// ROC summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// FPRs at which the TPR is reported.
    pub fpr_targets: Vec<f64>,
    /// A TPR at FPR f is reported only when f x (non-members) >= this many false positives are
    /// expected: below that the threshold is set by a handful of OUT scores.
    pub min_expected_false_positives: f64,
    /// Confidence of the Clopper-Pearson interval around each TPR.
    pub confidence: f64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            fpr_targets: vec![0.01, 0.001, 0.0001],
            min_expected_false_positives: 10.0,
            confidence: 0.95,
        }
    }
}

/// Everything that changes an attack's scores or its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MiaConfig {
    pub lira: LiraConfig,
    pub rmia: RmiaConfig,
    pub lm: LmConfig,
    pub metrics: MetricsConfig,
}

fn bad(field: &'static str, reason: impl Into<String>) -> MiaError {
    MiaError::Config {
        field,
        reason: reason.into(),
    }
}

impl MiaConfig {
    /// Refuse settings no attack can use, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.lira.per_example_min < 2 {
            return Err(bad(
                "lira.per_example_min",
                "needs at least 2 values for a variance",
            ));
        }
        let r = &self.rmia;
        if !(r.gamma.is_finite() && r.gamma > 0.0) {
            return Err(bad("rmia.gamma", format!("{} is not > 0", r.gamma)));
        }
        if !(r.temperature.is_finite() && r.temperature > 0.0) {
            return Err(bad(
                "rmia.temperature",
                format!("{} is not > 0", r.temperature),
            ));
        }
        for (field, a) in [
            ("rmia.a", r.a),
            ("rmia.a_few_references", Some(r.a_few_references)),
        ] {
            if let Some(a) = a
                && !(0.0..=1.0).contains(&a)
            {
                return Err(bad(field, format!("{a} is outside [0, 1]")));
            }
        }
        let k = self.lm.min_k_fraction;
        if !(k > 0.0 && k <= 1.0) {
            return Err(bad("lm.min_k_fraction", format!("{k} is outside (0, 1]")));
        }
        let m = &self.metrics;
        if let Some(f) = m.fpr_targets.iter().find(|f| !(**f > 0.0 && **f < 1.0)) {
            return Err(bad("metrics.fpr_targets", format!("{f} is outside (0, 1)")));
        }
        if !(m.confidence > 0.0 && m.confidence < 1.0) {
            return Err(bad(
                "metrics.confidence",
                format!("{} is outside (0, 1)", m.confidence),
            ));
        }
        if m.min_expected_false_positives.is_nan() || m.min_expected_false_positives < 0.0 {
            return Err(bad("metrics.min_expected_false_positives", "must be >= 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_partial_configs_fill_in() {
        let c = MiaConfig::default();
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<MiaConfig>(&s).unwrap(), c);
        let partial: MiaConfig = serde_json::from_str(r#"{"rmia": {"gamma": 2.0}}"#).unwrap();
        assert_eq!(partial.rmia.gamma, 2.0);
        assert_eq!(partial.rmia.temperature, 1.0);
        assert_eq!(partial.lira.per_example_min, 32);
        assert!(serde_json::from_str::<MiaConfig>(r#"{"rmia": {"gama": 1.0}}"#).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = MiaConfig::default();
        c.rmia.a = Some(1.5);
        assert!(c.validate().unwrap_err().to_string().contains("rmia.a"));
        let mut c = MiaConfig::default();
        c.metrics.fpr_targets = vec![0.0];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fpr_targets")
        );
        MiaConfig::default().validate().unwrap();
    }
}
