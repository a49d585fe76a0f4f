//! The black-box one-run audit a training run carries (Steinke, Nasr & Jagielski 2023, "Privacy
//! Auditing with One (1) Training Run", black-box setting): M audit canaries (mislabelled
//! examples or random LM windows, memaudit-engine `black_box_canaries.rs`), each included with
//! probability 1/2, scored by the final model only (higher means member), bounded here at the
//! run's own delta and compared with the accountant's epsilon.
//!
//! - **one-run** (the reported `epsilon_lower_bound` and the verdict): guesses IN for the highest
//!   scores, every Pareto-frontier threshold tested with Bonferroni (as JAX Privacy). It holds for
//!   any (eps, delta)-DP mechanism, so on a correct run it never exceeds the claim except with
//!   probability `significance`; a bound above the claim means the implementation is broken.
//! - **one-run f-DP** (Mahloujifar, Melis & Chaudhuri 2024), reported beside it at the same
//!   significance: tighter, but it assumes the mechanism's trade-off curve is (at least as private
//!   as) a Gaussian one, so it never backs the verdict.
//!
//! A black-box audit sees only the final model, so on a DP run it is expected to land far below
//! the claim (docs/auditing.md: 0 on every DP run measured there); its use is the contrast with
//! runs without noise, where it is clearly positive, and as a check that nothing leaks more than
//! the claim.

use serde::Serialize;

use super::{
    CanaryScores, LowerBoundConfig, Result, ScoreDirection, one_run_bound, one_run_fdp_bound,
};

/// The method behind `epsilon_lower_bound` and the verdict.
pub const BLACK_BOX_METHOD: &str = "one-run";

/// One bound of the black-box audit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlackBoxBound {
    pub method: &'static str,
    pub epsilon_lower_bound: f64,
    /// Whether the bound assumes a Gaussian trade-off curve (then it never backs the verdict).
    pub assumes_gaussian_tradeoff: bool,
    /// Canaries guessed IN, and how many of them were IN, at the threshold that gave the bound.
    pub guesses: u64,
    pub correct_guesses: u64,
}

/// The black-box audit's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlackBoxAuditResult {
    /// Canaries M, and how many were included.
    pub m: u64,
    pub included: u64,
    /// The run's delta (the bounds are at this delta).
    pub delta: f64,
    /// 2 m delta, the one-run bound's delta term.
    pub two_m_delta: f64,
    /// Each bound holds with probability at least 1 - significance.
    pub significance: f64,
    /// The one-run bound ([`BLACK_BOX_METHOD`]).
    pub epsilon_lower_bound: f64,
    pub method: &'static str,
    /// The run's claim: its ledger's epsilon at `delta` (infinite without noise).
    pub claimed_epsilon: f64,
    /// The one-run bound exceeds the claim: on a run that clips and adds the stated noise this
    /// happens with probability at most `significance`, so it means the guarantee is broken.
    pub exceeds_claim: bool,
    /// Every bound computed (one-run, and one-run f-DP when delta > 0).
    pub bounds: Vec<BlackBoxBound>,
    /// Mann-Whitney AUROC of the scores (0.5: no signal).
    pub auroc: f64,
    /// Things to tell the reader (2 m delta not small, scores look reversed, ...).
    pub warnings: Vec<String>,
}

/// Bound the canaries' `scores` (higher means member) with their inclusion bits at `delta`, each
/// bound at `significance`, and compare the one-run bound with `claimed_epsilon`.
pub fn black_box_audit(
    scores: &[f64],
    included: &[bool],
    claimed_epsilon: f64,
    delta: f64,
    significance: f64,
) -> Result<BlackBoxAuditResult> {
    let canary_scores =
        CanaryScores::from_inclusion(scores, included, ScoreDirection::HigherIsMember)?;
    let config = LowerBoundConfig {
        significance,
        delta,
        ..LowerBoundConfig::default()
    };
    config.validate()?;
    let one_run = one_run_bound(&canary_scores, &config)?;
    let mut warnings: Vec<String> = one_run.warnings.iter().map(|w| w.to_string()).collect();
    let auroc = canary_scores.auroc_empirical();
    if auroc < 0.5 {
        warnings.push(format!(
            "AUC = {auroc:.4} < 0.5: the scores look reversed (the included canaries scored lower than the excluded ones)"
        ));
    }
    let mut bounds = vec![BlackBoxBound {
        method: BLACK_BOX_METHOD,
        epsilon_lower_bound: one_run.epsilon_lower_bound,
        assumes_gaussian_tradeoff: false,
        guesses: one_run.guesses,
        correct_guesses: one_run.correct_guesses,
    }];
    if delta > 0.0 {
        let fdp = one_run_fdp_bound(&canary_scores, &config)?;
        bounds.push(BlackBoxBound {
            method: "one-run-fdp",
            epsilon_lower_bound: fdp.epsilon_lower_bound,
            assumes_gaussian_tradeoff: true,
            guesses: fdp.guesses,
            correct_guesses: fdp.correct_guesses,
        });
    }
    Ok(BlackBoxAuditResult {
        m: canary_scores.m(),
        included: canary_scores.n_in(),
        delta,
        two_m_delta: one_run.two_m_delta,
        significance,
        epsilon_lower_bound: one_run.epsilon_lower_bound,
        method: BLACK_BOX_METHOD,
        claimed_epsilon,
        exceeds_claim: one_run.epsilon_lower_bound > claimed_epsilon,
        bounds,
        auroc,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower_bound::one_run_epsilon;

    /// Canaries whose scores separate perfectly: every IN above every OUT.
    fn separated(m: usize) -> (Vec<f64>, Vec<bool>) {
        let included: Vec<bool> = (0..m).map(|k| k % 2 == 0).collect();
        let scores = included
            .iter()
            .enumerate()
            .map(|(k, &i)| if i { 10.0 + k as f64 } else { -(k as f64) })
            .collect();
        (scores, included)
    }

    #[test]
    fn perfect_separation_gives_the_one_run_bound_of_all_right_guesses() {
        let (s, inc) = separated(1000);
        let r = black_box_audit(&s, &inc, f64::INFINITY, 1e-5, 0.05).unwrap();
        assert_eq!((r.m, r.included), (1000, 500));
        assert_eq!(r.method, "one-run");
        assert!((r.two_m_delta - 0.02).abs() < 1e-15);
        // The best threshold can only do as well as 500 right guesses of 500 at the Bonferroni
        // share of the frontier, and at least as well as 500/500 at 0.05 / (frontier size).
        let best_alone = one_run_epsilon(1000, 500, 500, 1e-5, 0.05);
        assert!(r.epsilon_lower_bound <= best_alone + 1e-9);
        assert!(r.epsilon_lower_bound > 3.0, "{}", r.epsilon_lower_bound);
        assert!(!r.exceeds_claim);
        assert_eq!(r.bounds.len(), 2);
        assert!(r.bounds[1].assumes_gaussian_tradeoff);
        assert!(r.bounds[1].epsilon_lower_bound > 0.0);
        assert_eq!(r.auroc, 1.0);
        // The same scores against a small claim refute it.
        let low = black_box_audit(&s, &inc, 1.0, 1e-5, 0.05).unwrap();
        assert!(low.exceeds_claim);
    }

    #[test]
    fn no_signal_gives_no_bound_and_reversed_scores_warn() {
        // Scores independent of inclusion: ranks interleave, the bound is 0.
        let inc: Vec<bool> = (0..400).map(|k| (k / 2) % 2 == 0).collect();
        let s: Vec<f64> = (0..400).map(|k| k as f64).collect();
        let r = black_box_audit(&s, &inc, 2.0, 1e-5, 0.05).unwrap();
        assert_eq!(r.epsilon_lower_bound, 0.0);
        assert!(!r.exceeds_claim);
        let (s, inc) = separated(100);
        let neg: Vec<f64> = s.iter().map(|v| -v).collect();
        let r = black_box_audit(&neg, &inc, 2.0, 1e-5, 0.05).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("reversed")), "{r:?}");
        // At delta 0 the f-DP bound (Gaussian, needs delta > 0) is left out.
        let r = black_box_audit(&s, &inc, 2.0, 0.0, 0.05).unwrap();
        assert_eq!(r.bounds.len(), 1);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(black_box_audit(&[1.0, 2.0], &[true], 1.0, 1e-5, 0.05).is_err());
        assert!(black_box_audit(&[1.0, f64::NAN], &[true, false], 1.0, 1e-5, 0.05).is_err());
        assert!(black_box_audit(&[1.0, 2.0], &[true, false], 1.0, 1.0, 0.05).is_err());
        assert!(black_box_audit(&[1.0, 2.0], &[true, false], 1.0, 1e-5, 0.6).is_err());
    }
}
