//! The audit a DP-SGD run carries with it: white-box Dirac gradient canaries (Nasr et al. 2023,
//! "Tight Auditing"; Steinke, Nasr & Jagielski 2023, white-box one-run), scored by the trainer
//! (memaudit-engine `audit_canaries.rs`), bounded here, and compared with the run's own claim.
//!
//! Every method of [`lower_bounds`] runs at the run's own delta with significance / 2 each. The
//! **verdict** rests only on the two bounds that hold for any (eps, delta)-DP mechanism,
//! Clopper-Pearson and one-run, so it has family-wise significance `significance` (Bonferroni
//! over those two): "refuted" means at least one of them exceeds the claimed epsilon. GDP and
//! one-run f-DP are reported beside them, labelled as assuming a Gaussian trade-off curve; on a
//! correct run they approach the claim from below, which is how close the audit gets.

use memaudit_engine::audit_canaries::DiracCanaries;
use serde::Serialize;

use super::{
    CanaryScores, LowerBoundConfig, LowerBoundMethod, Result, ScoreDirection, lower_bounds,
};

/// One bound of an in-training audit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditBound {
    pub method: &'static str,
    pub epsilon_lower_bound: f64,
    /// Whether the bound assumes a Gaussian trade-off curve (then it never backs the verdict).
    pub assumes_gaussian_tradeoff: bool,
}

/// The white-box audit's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhiteBoxAuditResult {
    /// Canaries M, and how many were included.
    pub canaries: u64,
    pub included: u64,
    /// The run's claim: its ledger's epsilon at its delta.
    pub claimed_epsilon: f64,
    pub delta: f64,
    /// Family-wise significance of the verdict; each bound holds with prob. >= 1 - this / 2.
    pub significance: f64,
    /// 2 m delta (the one-run bound's delta term).
    pub two_m_delta: f64,
    /// AUROC of the canary scores (0.5: no signal).
    pub auroc: f64,
    pub bounds: Vec<AuditBound>,
    /// Whether a bound valid for every mechanism exceeds the claim: the implementation is broken.
    pub refuted: bool,
    /// The largest of the bounds that back the verdict.
    pub verdict_bound: f64,
    /// Things to tell the reader.
    pub warnings: Vec<String>,
}

/// Bound the canaries' scores at `delta` and compare with `claimed_epsilon`.
pub fn white_box_audit(
    canaries: &DiracCanaries,
    claimed_epsilon: f64,
    delta: f64,
    significance: f64,
) -> Result<WhiteBoxAuditResult> {
    let scores = CanaryScores::from_inclusion(
        &canaries.scores,
        &canaries.included,
        ScoreDirection::HigherIsMember,
    )?;
    let config = LowerBoundConfig {
        significance: significance / 2.0,
        delta,
        ..LowerBoundConfig::default()
    };
    let report = lower_bounds(&scores, &config)?;
    let bounds: Vec<AuditBound> = report
        .results
        .iter()
        .map(|b| AuditBound {
            method: b.method().name(),
            epsilon_lower_bound: b.epsilon_lower_bound(),
            assumes_gaussian_tradeoff: b.method().assumes_gaussian_tradeoff(),
        })
        .collect();
    let verdict_bound = report
        .results
        .iter()
        .filter(|b| {
            matches!(
                b.method(),
                LowerBoundMethod::ClopperPearson | LowerBoundMethod::OneRun
            )
        })
        .map(|b| b.epsilon_lower_bound())
        .fold(0.0f64, f64::max);
    Ok(WhiteBoxAuditResult {
        canaries: report.m,
        included: report.n_in,
        claimed_epsilon,
        delta,
        significance,
        two_m_delta: 2.0 * report.m as f64 * delta,
        auroc: report.auroc_empirical,
        bounds,
        refuted: verdict_bound > claimed_epsilon,
        verdict_bound,
        warnings: report.warnings.iter().map(|w| w.to_string()).collect(),
    })
}
