//! How well scores (higher = member) separate members from non-members: the ROC, its AUC, the
//! balanced accuracy, and the TPR at low FPR with a Clopper-Pearson interval (LiRA's point:
//! report TPR at low FPR on a log-log ROC, not only AUC or accuracy).
//!
//! - The ROC has one point per distinct score (ties are one threshold), from (0, 0) to (1, 1);
//!   the AUC is the trapezoid area under it, which equals the Mann-Whitney probability
//!   P\[s_member > s_non\] + P\[tie\] / 2.
//! - Balanced accuracy is the best over thresholds of (TPR + TNR) / 2 (LiRA's "acc").
//! - TPR at FPR f is the largest TPR among thresholds whose FPR is at most f: LiRA's convention,
//!   not an interpolation. It is reported only where f x (non-members) false positives are
//!   expected to be at least `min_expected_false_positives` (10 by default), since otherwise the
//!   threshold sits on a handful of non-member scores; the interval is Clopper-Pearson on the
//!   true positives at that threshold.

use serde::{Deserialize, Serialize};

use crate::lower_bound::binomial::{clopper_pearson_lower, clopper_pearson_upper};

use super::config::MetricsConfig;
use super::error::{MiaError, Result};

/// The ROC: cumulative counts at each distinct threshold, highest score first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roc {
    /// Members (positives) and non-members (negatives) in the evaluation.
    pub members: u64,
    pub non_members: u64,
    /// Score threshold of each point ("member" when score >= threshold); +inf for (0, 0).
    pub thresholds: Vec<f64>,
    /// True and false positives at each point.
    pub true_positives: Vec<u64>,
    pub false_positives: Vec<u64>,
}

impl Roc {
    /// The ROC of `scores` against `member`. Both classes must be present.
    pub fn new(scores: &[f64], member: &[bool]) -> Result<Self> {
        if scores.len() != member.len() {
            return Err(MiaError::InvalidInput {
                what: "ROC".into(),
                reason: format!(
                    "{} scores but {} membership labels",
                    scores.len(),
                    member.len()
                ),
            });
        }
        let members = member.iter().filter(|m| **m).count() as u64;
        let non_members = member.len() as u64 - members;
        if members == 0 || non_members == 0 {
            return Err(MiaError::InvalidInput {
                what: "target membership".into(),
                reason: format!(
                    "{members} members and {non_members} non-members; a ROC needs both"
                ),
            });
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(MiaError::InvalidInput {
                what: "attack scores".into(),
                reason: format!("score of example {i} is NaN"),
            });
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut roc = Roc {
            members,
            non_members,
            thresholds: vec![f64::INFINITY],
            true_positives: vec![0],
            false_positives: vec![0],
        };
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut k = 0;
        while k < order.len() {
            let s = scores[order[k]];
            while k < order.len() && scores[order[k]] == s {
                if member[order[k]] {
                    tp += 1;
                } else {
                    fp += 1;
                }
                k += 1;
            }
            roc.thresholds.push(s);
            roc.true_positives.push(tp);
            roc.false_positives.push(fp);
        }
        Ok(roc)
    }

    /// True-positive rate at each point.
    pub fn tpr(&self) -> Vec<f64> {
        let n = self.members as f64;
        self.true_positives.iter().map(|&t| t as f64 / n).collect()
    }

    /// False-positive rate at each point.
    pub fn fpr(&self) -> Vec<f64> {
        let n = self.non_members as f64;
        self.false_positives.iter().map(|&f| f as f64 / n).collect()
    }

    /// Area under the ROC (trapezoids; ties count one half).
    pub fn auc(&self) -> f64 {
        let mut area = 0.0;
        for w in 1..self.thresholds.len() {
            let dfp = (self.false_positives[w] - self.false_positives[w - 1]) as f64;
            let tp_mid = (self.true_positives[w] + self.true_positives[w - 1]) as f64 / 2.0;
            area += dfp * tp_mid;
        }
        area / (self.members as f64 * self.non_members as f64)
    }

    /// max over thresholds of (TPR + 1 - FPR) / 2.
    pub fn balanced_accuracy(&self) -> f64 {
        self.tpr()
            .iter()
            .zip(self.fpr())
            .map(|(t, f)| (t + 1.0 - f) / 2.0)
            .fold(0.0, f64::max)
    }

    /// The point with the largest TPR among those with FPR <= `target`.
    pub fn best_at_fpr(&self, target: f64) -> usize {
        let max_fp = (target * self.non_members as f64 + 1e-9).floor() as u64;
        // Counts only grow along the ROC: the last point within the FP budget has the most TPs.
        let mut best = 0;
        for p in 0..self.thresholds.len() {
            if self.false_positives[p] <= max_fp {
                best = p;
            } else {
                break;
            }
        }
        best
    }
}

/// TPR at one target FPR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TprAtFpr {
    pub target_fpr: f64,
    /// Non-members x target FPR.
    pub expected_false_positives: f64,
    /// `None` when too few false positives are expected (see `skipped`).
    pub tpr: Option<f64>,
    /// The FPR actually reached at that threshold (<= target).
    pub fpr: Option<f64>,
    pub threshold: Option<f64>,
    pub true_positives: Option<u64>,
    /// Clopper-Pearson interval of the TPR at `MetricsConfig::confidence`.
    pub tpr_ci: Option<(f64, f64)>,
    /// Why no TPR is reported at this FPR.
    pub skipped: Option<String>,
}

/// Every summary of one attack's scores against the true membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipMetrics {
    pub members: u64,
    pub non_members: u64,
    pub auc: f64,
    pub balanced_accuracy: f64,
    pub tpr_at_fpr: Vec<TprAtFpr>,
    pub roc: Roc,
}

/// The metrics of `scores` (higher = member) against `member`.
pub fn evaluate(scores: &[f64], member: &[bool], cfg: &MetricsConfig) -> Result<MembershipMetrics> {
    let roc = Roc::new(scores, member)?;
    let alpha = 1.0 - cfg.confidence;
    let tpr_at_fpr = cfg
        .fpr_targets
        .iter()
        .map(|&f| {
            let expected = f * roc.non_members as f64;
            if expected < cfg.min_expected_false_positives {
                return TprAtFpr {
                    target_fpr: f,
                    expected_false_positives: expected,
                    tpr: None,
                    fpr: None,
                    threshold: None,
                    true_positives: None,
                    tpr_ci: None,
                    skipped: Some(format!(
                        "{expected:.2} false positives expected at FPR {f} with {} non-members; {} needed",
                        roc.non_members, cfg.min_expected_false_positives
                    )),
                };
            }
            let p = roc.best_at_fpr(f);
            let tp = roc.true_positives[p];
            TprAtFpr {
                target_fpr: f,
                expected_false_positives: expected,
                tpr: Some(tp as f64 / roc.members as f64),
                fpr: Some(roc.false_positives[p] as f64 / roc.non_members as f64),
                threshold: Some(roc.thresholds[p]),
                true_positives: Some(tp),
                tpr_ci: Some(clopper_pearson(tp, roc.members, alpha)),
                skipped: None,
            }
        })
        .collect();
    Ok(MembershipMetrics {
        members: roc.members,
        non_members: roc.non_members,
        auc: roc.auc(),
        balanced_accuracy: roc.balanced_accuracy(),
        tpr_at_fpr,
        roc,
    })
}

/// How an attack's ROC compares with what (epsilon, delta)-DP allows: TPR <= e^eps FPR + delta
/// at every threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpTradeoff {
    pub epsilon: f64,
    pub delta: f64,
    /// The largest TPR - (e^eps FPR + delta) over ROC points, on the point estimates.
    pub max_excess: f64,
    /// The ROC point (FPR, TPR) where it is reached.
    pub at: (f64, f64),
    /// Points where even the Clopper-Pearson lower bound of the TPR exceeds e^eps times the
    /// upper bound of the FPR, plus delta (each at the metrics' confidence; no correction for
    /// testing many thresholds, so a handful can be chance).
    pub significant_violations: usize,
}

/// Check a ROC against the (epsilon, delta)-DP trade-off line.
pub fn dp_tradeoff(roc: &Roc, epsilon: f64, delta: f64, confidence: f64) -> DpTradeoff {
    let e = epsilon.exp();
    let alpha = 1.0 - confidence;
    let (tpr, fpr) = (roc.tpr(), roc.fpr());
    let mut best = (f64::NEG_INFINITY, (0.0, 0.0));
    let mut significant = 0;
    for p in 0..tpr.len() {
        let excess = tpr[p] - (e * fpr[p] + delta);
        if excess > best.0 {
            best = (excess, (fpr[p], tpr[p]));
        }
        // Only points above the line on the estimates can be significant: skip the others
        // (the interval inversions are the costly part).
        if excess > 0.0 {
            let (t_lo, _) = clopper_pearson(roc.true_positives[p], roc.members, alpha);
            let (_, f_hi) = clopper_pearson(roc.false_positives[p], roc.non_members, alpha);
            if t_lo > e * f_hi + delta {
                significant += 1;
            }
        }
    }
    DpTradeoff {
        epsilon,
        delta,
        max_excess: best.0,
        at: best.1,
        significant_violations: significant,
    }
}

/// The metrics of one class's examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: i64,
    pub examples: usize,
    /// `None` when the class has no member or no non-member.
    pub metrics: Option<MembershipMetrics>,
}

/// `evaluate` on each class separately (classes in increasing order).
pub fn per_class(
    scores: &[f64],
    member: &[bool],
    class: &[i64],
    cfg: &MetricsConfig,
) -> Result<Vec<ClassMetrics>> {
    let mut classes: Vec<i64> = class.to_vec();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .map(|c| {
            let idx: Vec<usize> = (0..class.len()).filter(|&i| class[i] == c).collect();
            let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
            let m: Vec<bool> = idx.iter().map(|&i| member[i]).collect();
            let both = m.iter().any(|x| *x) && m.iter().any(|x| !*x);
            Ok(ClassMetrics {
                class: c,
                examples: idx.len(),
                metrics: if both {
                    Some(evaluate(&s, &m, cfg)?)
                } else {
                    None
                },
            })
        })
        .collect()
}

/// The two-sided Clopper-Pearson interval at confidence 1 - alpha (alpha/2 per tail), from the
/// exact one-sided bounds of `lower_bound::binomial`; (0, 1) when there are no trials.
fn clopper_pearson(successes: u64, trials: u64, alpha: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let k = successes.min(trials);
    (
        clopper_pearson_lower(k, trials, alpha / 2.0),
        clopper_pearson_upper(k, trials, alpha / 2.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_the_mann_whitney_probability_with_ties_as_half() {
        // Members 3, 2, 2; non-members 2, 1. Pairs: (3>2, 3>1, 2=2, 2>1, 2=2, 2>1) = 4 + 2 x 0.5.
        let s = [3.0, 2.0, 2.0, 2.0, 1.0];
        let m = [true, true, true, false, false];
        let roc = Roc::new(&s, &m).unwrap();
        assert!((roc.auc() - 5.0 / 6.0).abs() < 1e-15);
        // Perfect separation and its mirror.
        let roc = Roc::new(&[2.0, 1.0], &[true, false]).unwrap();
        assert_eq!(roc.auc(), 1.0);
        assert_eq!(roc.balanced_accuracy(), 1.0);
        let roc = Roc::new(&[1.0, 2.0], &[true, false]).unwrap();
        assert_eq!(roc.auc(), 0.0);
        assert_eq!(roc.balanced_accuracy(), 0.5);
    }

    #[test]
    fn tpr_at_fpr_is_the_largest_tpr_within_the_fpr_budget_not_interpolated() {
        // 1000 non-members scored 0..999, 100 members: 50 above every non-member, 50 at -1.
        let mut s: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let mut m = vec![false; 1000];
        s.extend((0..50).map(|i| 2000.0 + i as f64));
        s.extend((0..50).map(|_| -1.0));
        m.extend([true; 100]);
        let cfg = MetricsConfig::default();
        let r = evaluate(&s, &m, &cfg).unwrap();
        // FPR 1%: 10 false positives expected (reported); 0.1%: 1 (skipped); 0.01%: skipped.
        let at1 = &r.tpr_at_fpr[0];
        assert_eq!(at1.tpr, Some(0.5));
        assert_eq!(at1.fpr, Some(0.01));
        assert_eq!(at1.true_positives, Some(50));
        let (lo, hi) = at1.tpr_ci.unwrap();
        assert!(lo < 0.5 && hi > 0.5 && lo > 0.39 && hi < 0.61, "{lo} {hi}");
        assert!(r.tpr_at_fpr[1].tpr.is_none() && r.tpr_at_fpr[1].skipped.is_some());
        // With the threshold rule relaxed, FPR 0.1% still gives the 50 members above all.
        let cfg = MetricsConfig {
            min_expected_false_positives: 0.0,
            ..MetricsConfig::default()
        };
        let r = evaluate(&s, &m, &cfg).unwrap();
        assert_eq!(r.tpr_at_fpr[2].tpr, Some(0.5));
        assert_eq!(r.tpr_at_fpr[2].fpr, Some(0.0));
    }

    #[test]
    fn per_class_splits_and_marks_one_sided_classes() {
        let s = [1.0, 0.0, 1.0, 0.5];
        let m = [true, false, true, true];
        let c = [0, 0, 1, 1];
        let r = per_class(&s, &m, &c, &MetricsConfig::default()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].metrics.as_ref().unwrap().auc, 1.0);
        assert!(r[1].metrics.is_none());
    }

    #[test]
    fn dp_tradeoff_flags_a_perfect_attack_and_passes_chance() {
        // Perfect separation of 200 vs 200: TPR 1 at FPR 0 breaks any small epsilon.
        let s: Vec<f64> = (0..400).map(|i| i as f64).collect();
        let m: Vec<bool> = (0..400).map(|i| i >= 200).collect();
        let roc = Roc::new(&s, &m).unwrap();
        let t = dp_tradeoff(&roc, 1.0, 1e-5, 0.95);
        assert!((t.max_excess - (1.0 - 1e-5)).abs() < 1e-12);
        assert!(t.significant_violations > 0);
        // Interleaved scores (chance): TPR ~ FPR stays below e^1 FPR + delta within the CIs.
        let m: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
        let roc = Roc::new(&s, &m).unwrap();
        assert_eq!(dp_tradeoff(&roc, 1.0, 1e-5, 0.95).significant_violations, 0);
    }

    #[test]
    fn one_sided_membership_is_refused() {
        let e = Roc::new(&[1.0, 2.0], &[true, true]).unwrap_err();
        assert!(e.to_string().contains("0 non-members"));
    }
}
