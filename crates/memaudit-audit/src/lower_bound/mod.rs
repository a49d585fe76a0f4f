//! Empirical lower bounds on epsilon from membership guesses on canaries (auditing.md section 3).
//!
//! An accountant's epsilon is an upper bound that holds only if the implementation is right; a
//! lower bound that exceeds it refutes the implementation. Every bound here holds with
//! probability at least 1 - significance and rests on exact binomial tails (Clopper-Pearson,
//! [`binomial`]); normal approximations never back a bound.
//!
//! - [`clopper_pearson`]: Jagielski et al. 2020, Nasr et al. 2021: TPR <= e^eps FPR + delta at
//!   one threshold, with exact intervals on both rates.
//! - [`gdp`]: Nasr et al. 2023 ("Tight auditing"): a lower bound on the mu of Gaussian DP, turned
//!   into the eps of mu-GDP at delta. Assumes the trade-off curve is Gaussian.
//! - [`one_run`]: Steinke, Nasr & Jagielski 2023: m canaries each included with probability
//!   1/2, one training run, guesses IN for the highest scores.
//! - [`one_run_fdp`]: Mahloujifar, Melis & Chaudhuri 2024 (arXiv 2410.22235): the same guesses
//!   audited against the trade-off curve of the Gaussian mechanism that is (eps, delta)-DP.
//!   Like GDP it assumes a Gaussian trade-off curve
//!   ([`LowerBoundMethod::assumes_gaussian_tradeoff`]): on other mechanisms it can exceed eps.
//! - [`thresholds`]: the scores, counts, Pareto frontier, AUROC and TPR at FPR.
//!
//! Choosing the best of several thresholds on the same data needs a correction: by default every
//! threshold on the Pareto frontier is tested and the significance is split evenly among them
//! (Bonferroni, as JAX Privacy's `CanaryScoreAuditor` does); an explicit threshold is tested
//! alone at the full significance.
//!
//! - [`in_training`]: the white-box Dirac-canary audit a DP-SGD run carries, and its verdict.
//! - [`black_box`]: the black-box one-run audit (mislabelled / random-window canaries) a run carries.
//!
//! A training run calls [`CanaryScores::from_inclusion`] with one score and one inclusion bit per
//! canary and then [`one_run::one_run_bound`] (or [`lower_bounds`] for every method).

pub mod binomial;
pub mod black_box;
pub mod clopper_pearson;
pub mod error;
pub mod gdp;
pub mod in_training;
pub mod one_run;
pub mod one_run_fdp;
pub mod scores_file;
pub mod thresholds;

use serde::{Deserialize, Serialize};

pub use black_box::{BlackBoxAuditResult, black_box_audit};
pub use clopper_pearson::{ClopperPearsonBound, clopper_pearson_bound};
pub use error::{LowerBoundError, Result, ScoreSide};
pub use gdp::{GdpBound, gdp_bound};
pub use in_training::{WhiteBoxAuditResult, white_box_audit};
pub use one_run::{OneRunBound, one_run_bound, one_run_epsilon, one_run_p_value};
pub use one_run_fdp::{one_run_fdp_bound, one_run_fdp_epsilon};
pub use scores_file::read_scores;
pub use thresholds::{CanaryScores, ConfusionCounts, ScoreDirection};

/// Default significance: the bound holds with probability 95%.
pub const DEFAULT_SIGNIFICANCE: f64 = 0.05;
/// Default delta: 0, pure DP. A run auditing itself passes its own delta.
pub const DEFAULT_DELTA: f64 = 0.0;
/// Above this, 2 m delta is "not small" for the one-run audit and a warning says so: the term
/// adds up to 2 m delta times alpha to the p-value, so at 0.01 it already costs a visible share
/// of a 0.05 significance whenever alpha is large.
pub const TWO_M_DELTA_WARN_ABOVE: f64 = 0.01;
/// Epsilon searches stop when the bracket is this narrow; the value returned is its rejected
/// (lower) end, so a bound never overstates by the search tolerance.
pub const EPSILON_SEARCH_TOLERANCE: f64 = 1e-9;

/// Which thresholds a bound tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdChoice {
    /// Every threshold on the Pareto frontier, Bonferroni-corrected over their number.
    #[default]
    ParetoFrontier,
    /// One threshold fixed in advance (in the caller's score units), at the full significance.
    Explicit(f64),
}

/// A lower-bound method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LowerBoundMethod {
    /// Clopper-Pearson intervals on TPR and FPR (Jagielski et al. 2020; Nasr et al. 2021).
    ClopperPearson,
    /// Gaussian DP (Nasr et al. 2023).
    Gdp,
    /// One training run (Steinke, Nasr & Jagielski 2023).
    OneRun,
    /// One training run, f-DP (Mahloujifar, Melis & Chaudhuri 2024).
    OneRunFdp,
}

impl LowerBoundMethod {
    /// Every method, in report order.
    pub const ALL: [LowerBoundMethod; 4] = [
        LowerBoundMethod::ClopperPearson,
        LowerBoundMethod::Gdp,
        LowerBoundMethod::OneRun,
        LowerBoundMethod::OneRunFdp,
    ];

    /// The name used in flags and JSON.
    pub fn name(self) -> &'static str {
        match self {
            LowerBoundMethod::ClopperPearson => "clopper-pearson",
            LowerBoundMethod::Gdp => "gdp",
            LowerBoundMethod::OneRun => "one-run",
            LowerBoundMethod::OneRunFdp => "one-run-fdp",
        }
    }

    /// GDP and f-DP compare with a Gaussian curve at (eps, delta): with delta = 0 no finite eps
    /// exists, so they need delta > 0.
    pub fn needs_positive_delta(self) -> bool {
        self.assumes_gaussian_tradeoff()
    }

    /// GDP and f-DP bound the eps *of the Gaussian mechanism* that would explain the guesses:
    /// valid for eps only when the audited mechanism's trade-off curve is (at least as private
    /// as) Gaussian. On a non-Gaussian mechanism they can exceed its true eps (randomized
    /// response at eps = 1 with 20,000 canaries, delta 1e-5: GDP 5.48, f-DP 1.34 in one CLI run;
    /// the one_run tests pin GDP > 2 and f-DP > 1 on their own draw).
    /// Clopper-Pearson and one-run hold for any (eps, delta)-DP mechanism.
    pub fn assumes_gaussian_tradeoff(self) -> bool {
        matches!(self, LowerBoundMethod::Gdp | LowerBoundMethod::OneRunFdp)
    }
}

/// Which methods [`lower_bounds`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodChoice {
    /// Every method; those that need delta > 0 are skipped (with a warning) when delta = 0.
    #[default]
    All,
    /// One method; an error when it needs delta > 0 and delta = 0.
    One(LowerBoundMethod),
}

/// Settings of a lower-bound audit. Defaults: significance 0.05, delta 0, every frontier
/// threshold with Bonferroni, one-sided, group size 1, higher score = member, every method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LowerBoundConfig {
    /// The bound fails with probability at most this, in (0, 0.5].
    pub significance: f64,
    /// The delta of the (eps, delta) claim being tested, in [0, 1).
    pub delta: f64,
    /// Which thresholds are tested.
    pub threshold: ThresholdChoice,
    /// Clopper-Pearson only: two-sided intervals with significance/2 per side and the
    /// (p0, p1) -> (1 - p1, 1 - p0) swap when p0 + p1 > 1 (Jagielski et al.'s convention).
    pub two_sided: bool,
    /// Clopper-Pearson only: k poisoned points per guess (Jagielski et al.): eps = ln(p1/p0)/k.
    /// Needs delta = 0 when k > 1.
    pub group_size: u32,
    /// Which way the scores point.
    pub direction: ScoreDirection,
    /// Which methods [`lower_bounds`] runs.
    pub method: MethodChoice,
}

impl Default for LowerBoundConfig {
    fn default() -> Self {
        Self {
            significance: DEFAULT_SIGNIFICANCE,
            delta: DEFAULT_DELTA,
            threshold: ThresholdChoice::ParetoFrontier,
            two_sided: false,
            group_size: 1,
            direction: ScoreDirection::HigherIsMember,
            method: MethodChoice::All,
        }
    }
}

impl LowerBoundConfig {
    /// Refuses significance outside (0, 0.5], delta outside [0, 1), a NaN threshold and a bad
    /// group size.
    pub fn validate(&self) -> Result<()> {
        check_significance(self.significance)?;
        check_delta(self.delta)?;
        if let ThresholdChoice::Explicit(t) = self.threshold
            && t.is_nan()
        {
            return Err(LowerBoundError::Threshold(t));
        }
        if self.group_size == 0 {
            return Err(LowerBoundError::GroupSize(0));
        }
        if self.group_size > 1 && self.delta != 0.0 {
            return Err(LowerBoundError::GroupSizeWithDelta(self.group_size));
        }
        Ok(())
    }
}

/// Significance must be in (0, 0.5]: above 1/2 a "bound" is wrong more often than right.
pub fn check_significance(significance: f64) -> Result<()> {
    if significance > 0.0 && significance <= 0.5 {
        Ok(())
    } else {
        Err(LowerBoundError::Significance(significance))
    }
}

/// Delta must be in [0, 1): delta = 1 allows anything.
pub fn check_delta(delta: f64) -> Result<()> {
    if (0.0..1.0).contains(&delta) {
        Ok(())
    } else {
        Err(LowerBoundError::Delta(delta))
    }
}

/// Something a person should know about a result. Libraries never print: the caller renders.
#[derive(Clone, Debug, PartialEq)]
pub enum LowerBoundWarning {
    /// 2 m delta is not small: the one-run p-value carries 2 m delta alpha.
    TwoMDeltaNotSmall {
        /// Canaries.
        m: u64,
        /// Delta.
        delta: f64,
    },
    /// The bound is 0 because of the 2 m delta term; with delta = 0 it would be positive.
    TwoMDeltaZeroedBound {
        /// Canaries.
        m: u64,
        /// Delta.
        delta: f64,
        /// The one-run bound of the same guesses at delta = 0.
        bound_at_delta_zero: f64,
    },
    /// The plain AUC is below 1/2: higher scores look like non-members.
    ScoresLookReversed {
        /// Mann-Whitney AUC.
        auroc: f64,
    },
    /// A method was not run.
    MethodSkipped {
        /// Which.
        method: LowerBoundMethod,
        /// Why.
        reason: &'static str,
    },
}

impl std::fmt::Display for LowerBoundWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LowerBoundWarning::TwoMDeltaNotSmall { m, delta } => write!(
                f,
                "2*m*delta = {:.4} (m = {m}, delta = {delta}) is not small: the one-run bound loses power to it; use fewer canaries or a smaller delta",
                2.0 * *m as f64 * delta
            ),
            LowerBoundWarning::TwoMDeltaZeroedBound {
                m,
                delta,
                bound_at_delta_zero,
            } => write!(
                f,
                "the one-run bound is 0 because of its 2*m*delta term (m = {m}, delta = {delta}); at delta = 0 the same guesses give {bound_at_delta_zero:.4}"
            ),
            LowerBoundWarning::ScoresLookReversed { auroc } => write!(
                f,
                "AUC = {auroc:.4} < 0.5: the scores look reversed (lower = member?); if they are losses, say so (e.g. --lower-is-member)"
            ),
            LowerBoundWarning::MethodSkipped { method, reason } => {
                write!(f, "{} skipped: {reason}", method.name())
            }
        }
    }
}

/// One method's result.
#[derive(Clone, Debug, PartialEq)]
pub enum MethodBound {
    /// Clopper-Pearson.
    ClopperPearson(ClopperPearsonBound),
    /// Gaussian DP.
    Gdp(GdpBound),
    /// One run.
    OneRun(OneRunBound),
    /// One run, f-DP.
    OneRunFdp(OneRunBound),
}

impl MethodBound {
    /// Which method.
    pub fn method(&self) -> LowerBoundMethod {
        match self {
            MethodBound::ClopperPearson(_) => LowerBoundMethod::ClopperPearson,
            MethodBound::Gdp(_) => LowerBoundMethod::Gdp,
            MethodBound::OneRun(_) => LowerBoundMethod::OneRun,
            MethodBound::OneRunFdp(_) => LowerBoundMethod::OneRunFdp,
        }
    }
    /// The lower bound on epsilon.
    pub fn epsilon_lower_bound(&self) -> f64 {
        match self {
            MethodBound::ClopperPearson(b) => b.epsilon_lower_bound,
            MethodBound::Gdp(b) => b.epsilon_lower_bound,
            MethodBound::OneRun(b) | MethodBound::OneRunFdp(b) => b.epsilon_lower_bound,
        }
    }
    /// The threshold (caller's units) that gave it; None when no threshold gave a positive bound.
    pub fn threshold(&self) -> Option<f64> {
        match self {
            MethodBound::ClopperPearson(b) => b.threshold,
            MethodBound::Gdp(b) => b.threshold,
            MethodBound::OneRun(b) | MethodBound::OneRunFdp(b) => b.threshold,
        }
    }
}

/// Every requested bound for one set of scores.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerBoundReport {
    /// One entry per method run, in [`LowerBoundMethod::ALL`] order.
    pub results: Vec<MethodBound>,
    /// Canaries, IN and OUT.
    pub m: u64,
    /// IN canaries.
    pub n_in: u64,
    /// OUT canaries.
    pub n_out: u64,
    /// The delta tested.
    pub delta: f64,
    /// The overall significance of each bound.
    pub significance: f64,
    /// AUROC over the frontier (randomised thresholds allowed).
    pub auroc: f64,
    /// Plain (Mann-Whitney) AUROC.
    pub auroc_empirical: f64,
    /// Number of thresholds on the Pareto frontier.
    pub frontier_thresholds: usize,
    /// Things to tell the person reading the report.
    pub warnings: Vec<LowerBoundWarning>,
}

/// Runs the configured methods on `scores` (built with the same direction as `config`).
pub fn lower_bounds(scores: &CanaryScores, config: &LowerBoundConfig) -> Result<LowerBoundReport> {
    config.validate()?;
    let mut warnings = Vec::new();
    let methods: Vec<LowerBoundMethod> = match config.method {
        MethodChoice::One(m) => {
            if m.needs_positive_delta() && config.delta == 0.0 {
                return Err(LowerBoundError::NeedsPositiveDelta { method: m.name() });
            }
            vec![m]
        }
        MethodChoice::All => LowerBoundMethod::ALL
            .into_iter()
            .filter(|m| {
                let skip = m.needs_positive_delta() && config.delta == 0.0;
                if skip {
                    warnings.push(LowerBoundWarning::MethodSkipped {
                        method: *m,
                        reason: "it needs delta > 0",
                    });
                }
                !skip
            })
            .collect(),
    };
    let auroc_empirical = scores.auroc_empirical();
    if auroc_empirical < 0.5 {
        warnings.push(LowerBoundWarning::ScoresLookReversed {
            auroc: auroc_empirical,
        });
    }
    let mut results = Vec::with_capacity(methods.len());
    for m in methods {
        let r = match m {
            LowerBoundMethod::ClopperPearson => {
                MethodBound::ClopperPearson(clopper_pearson_bound(scores, config)?)
            }
            LowerBoundMethod::Gdp => MethodBound::Gdp(gdp_bound(scores, config)?),
            LowerBoundMethod::OneRun => {
                let b = one_run_bound(scores, config)?;
                warnings.extend(b.warnings.iter().cloned());
                MethodBound::OneRun(b)
            }
            LowerBoundMethod::OneRunFdp => {
                MethodBound::OneRunFdp(one_run_fdp_bound(scores, config)?)
            }
        };
        results.push(r);
    }
    Ok(LowerBoundReport {
        results,
        m: scores.m(),
        n_in: scores.n_in(),
        n_out: scores.n_out(),
        delta: config.delta,
        significance: config.significance,
        auroc: scores.auroc(),
        auroc_empirical,
        frontier_thresholds: scores.frontier().len(),
        warnings,
    })
}

/// The thresholds a bound tests and the significance each one gets: the explicit threshold at
/// the full significance, or every frontier threshold at significance / (their number).
pub(crate) fn tested_thresholds(
    scores: &CanaryScores,
    config: &LowerBoundConfig,
) -> (Vec<ConfusionCounts>, f64) {
    match config.threshold {
        ThresholdChoice::Explicit(t) => (vec![scores.counts_at(t)], config.significance),
        ThresholdChoice::ParetoFrontier => {
            let f = scores.frontier();
            let per = config.significance / f.len() as f64;
            (f, per)
        }
    }
}

/// The largest eps that `rejected` still rejects, searching upward from `start` (known or
/// assumed rejected only if `rejected(start)`): `start` itself when it is not rejected; else
/// doubling then bisection to [`EPSILON_SEARCH_TOLERANCE`], returning the rejected end. The
/// search assumes, as the papers' solvers do, that rejection is monotone in eps.
pub(crate) fn largest_rejected_epsilon(start: f64, rejected: impl Fn(f64) -> bool) -> f64 {
    if !rejected(start) {
        return start;
    }
    let mut lo = start;
    let mut hi = (2.0 * start).max(1.0);
    while rejected(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > 1e6 {
            return lo;
        }
    }
    while hi - lo > EPSILON_SEARCH_TOLERANCE {
        let mid = 0.5 * (lo + hi);
        if rejected(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_setting() {
        let ok = LowerBoundConfig::default();
        assert!(ok.validate().is_ok());
        for s in [0.0, -0.1, 0.51, f64::NAN] {
            let c = LowerBoundConfig {
                significance: s,
                ..ok.clone()
            };
            assert!(
                matches!(c.validate(), Err(LowerBoundError::Significance(_))),
                "{s}"
            );
        }
        assert!(
            LowerBoundConfig {
                significance: 0.5,
                ..ok.clone()
            }
            .validate()
            .is_ok()
        );
        for d in [-1e-9, 1.0, 2.0, f64::NAN] {
            let c = LowerBoundConfig {
                delta: d,
                ..ok.clone()
            };
            assert!(
                matches!(c.validate(), Err(LowerBoundError::Delta(_))),
                "{d}"
            );
        }
        let c = LowerBoundConfig {
            group_size: 2,
            delta: 1e-5,
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(LowerBoundError::GroupSizeWithDelta(2))
        ));
    }

    #[test]
    fn config_round_trips_through_json_with_defaults_filled_in() {
        let c: LowerBoundConfig = serde_json::from_str(r#"{"delta": 1e-5}"#).unwrap();
        assert_eq!(
            c,
            LowerBoundConfig {
                delta: 1e-5,
                ..LowerBoundConfig::default()
            }
        );
        let c = LowerBoundConfig {
            threshold: ThresholdChoice::Explicit(0.5),
            method: MethodChoice::One(LowerBoundMethod::OneRunFdp),
            ..LowerBoundConfig::default()
        };
        let back: LowerBoundConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<LowerBoundConfig>(r#"{"epsilon": 1}"#).is_err());
    }

    #[test]
    fn all_methods_skip_the_delta_methods_at_delta_zero_and_one_refuses() {
        let s = CanaryScores::new(&[1.0; 50], &[0.0; 50], ScoreDirection::HigherIsMember).unwrap();
        let r = lower_bounds(&s, &LowerBoundConfig::default()).unwrap();
        let names: Vec<_> = r.results.iter().map(|b| b.method()).collect();
        assert_eq!(
            names,
            vec![LowerBoundMethod::ClopperPearson, LowerBoundMethod::OneRun]
        );
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        let c = LowerBoundConfig {
            method: MethodChoice::One(LowerBoundMethod::Gdp),
            ..LowerBoundConfig::default()
        };
        assert!(matches!(
            lower_bounds(&s, &c),
            Err(LowerBoundError::NeedsPositiveDelta { method: "gdp" })
        ));
        let c = LowerBoundConfig {
            delta: 1e-5,
            ..LowerBoundConfig::default()
        };
        let r = lower_bounds(&s, &c).unwrap();
        assert_eq!(r.results.len(), 4);
        assert!(r.results.iter().all(|b| b.epsilon_lower_bound() > 0.0));
    }

    #[test]
    fn reversed_scores_warn() {
        let s = CanaryScores::new(&[0.0; 20], &[1.0; 20], ScoreDirection::HigherIsMember).unwrap();
        let r = lower_bounds(&s, &LowerBoundConfig::default()).unwrap();
        assert!(
            r.warnings
                .iter()
                .any(|w| matches!(w, LowerBoundWarning::ScoresLookReversed { .. }))
        );
        assert!(r.results.iter().all(|b| b.epsilon_lower_bound() == 0.0));
    }
}
