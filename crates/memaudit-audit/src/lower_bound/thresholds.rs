//! Canary scores, the confusion counts at a threshold, the Pareto frontier of thresholds, AUROC
//! and the TPR at a given FPR.
//!
//! Convention (docs: auditing.md section 0): inside, a higher score means "member"; the decision
//! rule at threshold t guesses IN for every score >= t. Scores where lower means member (losses)
//! are negated on the way in ([`ScoreDirection::LowerIsMember`]) and thresholds are mapped back
//! on the way out, so callers always see thresholds in their own units.

use serde::{Deserialize, Serialize};

use super::error::{LowerBoundError, Result, ScoreSide};

/// Which way the scores point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreDirection {
    /// Higher score = more likely a member (log-likelihoods, LiRA scores, gradient dot products).
    #[default]
    HigherIsMember,
    /// Lower score = more likely a member (losses, perplexities).
    LowerIsMember,
}

impl ScoreDirection {
    /// A score (or threshold) in the caller's units -> the internal higher-is-member units, and
    /// back (negation is its own inverse).
    pub fn internal(self, x: f64) -> f64 {
        match self {
            ScoreDirection::HigherIsMember => x,
            ScoreDirection::LowerIsMember => -x,
        }
    }
}

/// Counts of the rule "guess IN when score >= threshold" (threshold in internal units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfusionCounts {
    /// The threshold, in internal (higher-is-member) units; +inf guesses nothing IN.
    pub threshold: f64,
    /// IN canaries guessed IN.
    pub true_positives: u64,
    /// OUT canaries guessed IN.
    pub false_positives: u64,
    /// OUT canaries guessed OUT.
    pub true_negatives: u64,
    /// IN canaries guessed OUT.
    pub false_negatives: u64,
}

impl ConfusionCounts {
    /// Number of IN canaries.
    pub fn n_in(&self) -> u64 {
        self.true_positives + self.false_negatives
    }
    /// Number of OUT canaries.
    pub fn n_out(&self) -> u64 {
        self.true_negatives + self.false_positives
    }
    /// Guesses "IN" (the one-run audit's r).
    pub fn guesses(&self) -> u64 {
        self.true_positives + self.false_positives
    }
}

/// The IN and OUT canary scores of one audit, validated (non-empty, finite) and sorted.
#[derive(Clone, Debug)]
pub struct CanaryScores {
    /// Internal (higher-is-member) scores, ascending.
    in_sorted: Vec<f64>,
    out_sorted: Vec<f64>,
    direction: ScoreDirection,
}

fn checked_sorted(scores: &[f64], side: ScoreSide, direction: ScoreDirection) -> Result<Vec<f64>> {
    if scores.is_empty() {
        return Err(LowerBoundError::EmptyScores { side });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LowerBoundError::NonFiniteScore { side, index, value });
    }
    let mut v: Vec<f64> = scores.iter().map(|&x| direction.internal(x)).collect();
    v.sort_by(f64::total_cmp);
    // -0.0 and 0.0 are one score (total_cmp orders them, partial_cmp does not).
    for x in &mut v {
        if *x == 0.0 {
            *x = 0.0;
        }
    }
    Ok(v)
}

/// Number of entries of ascending `sorted` strictly below `t`.
fn count_below(sorted: &[f64], t: f64) -> u64 {
    sorted.partition_point(|&x| x < t) as u64
}

impl CanaryScores {
    /// Scores of canaries trained on (`in_scores`) and held out (`out_scores`).
    pub fn new(in_scores: &[f64], out_scores: &[f64], direction: ScoreDirection) -> Result<Self> {
        Ok(Self {
            in_sorted: checked_sorted(in_scores, ScoreSide::In, direction)?,
            out_sorted: checked_sorted(out_scores, ScoreSide::Out, direction)?,
            direction,
        })
    }

    /// The form a training run has: one score per canary and whether it was included (each
    /// canary included independently, e.g. with probability 1/2, for the one-run audits).
    pub fn from_inclusion(
        scores: &[f64],
        included: &[bool],
        direction: ScoreDirection,
    ) -> Result<Self> {
        if scores.len() != included.len() {
            return Err(LowerBoundError::InclusionLength {
                scores: scores.len(),
                bits: included.len(),
            });
        }
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for (&s, &inc) in scores.iter().zip(included) {
            if inc { ins.push(s) } else { outs.push(s) }
        }
        Self::new(&ins, &outs, direction)
    }

    /// Number of IN canaries.
    pub fn n_in(&self) -> u64 {
        self.in_sorted.len() as u64
    }
    /// Number of OUT canaries.
    pub fn n_out(&self) -> u64 {
        self.out_sorted.len() as u64
    }
    /// All canaries, m = n_in + n_out.
    pub fn m(&self) -> u64 {
        self.n_in() + self.n_out()
    }
    /// The direction the caller's scores point.
    pub fn direction(&self) -> ScoreDirection {
        self.direction
    }
    /// An internal threshold in the caller's units.
    pub fn external_threshold(&self, internal: f64) -> f64 {
        self.direction.internal(internal)
    }

    /// Counts at an internal threshold.
    pub fn counts_at_internal(&self, threshold: f64) -> ConfusionCounts {
        let fn_ = count_below(&self.in_sorted, threshold);
        let tn = count_below(&self.out_sorted, threshold);
        ConfusionCounts {
            threshold,
            true_positives: self.n_in() - fn_,
            false_positives: self.n_out() - tn,
            true_negatives: tn,
            false_negatives: fn_,
        }
    }

    /// Counts at a threshold in the caller's units (rule: score >= t, or score <= t when lower
    /// is member).
    pub fn counts_at(&self, threshold: f64) -> ConfusionCounts {
        self.counts_at_internal(self.direction.internal(threshold))
    }

    /// Every distinct score plus +inf, ascending, with their counts: every decision a threshold
    /// rule can make, from "all IN" to "none IN".
    pub fn all_thresholds(&self) -> Vec<ConfusionCounts> {
        let mut t: Vec<f64> = self
            .in_sorted
            .iter()
            .chain(&self.out_sorted)
            .copied()
            .collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t.push(f64::INFINITY);
        t.into_iter().map(|x| self.counts_at_internal(x)).collect()
    }

    /// The thresholds on the Pareto frontier (JAX Privacy's `_pareto_frontier` of the (FN, TN)
    /// points): those not weakly dominated by a mix of two others, i.e. the vertices of the
    /// upper concave hull of TN as a function of FN, collinear points dropped. Every bound that
    /// scans thresholds scans only these, and the Bonferroni correction counts only these
    /// (a threshold inside the hull is never better for a rule whose power only grows with TPR
    /// and shrinks with FPR). Ascending threshold; the first is "all IN", the last +inf.
    pub fn frontier(&self) -> Vec<ConfusionCounts> {
        let all = self.all_thresholds();
        let point = |c: &ConfusionCounts| (c.false_negatives as f64, c.true_negatives as f64);
        // Monotone chain: x = FN and y = TN are both non-decreasing along `all`. A middle point
        // stays when the chain turns strictly clockwise there (cross > 0), as in JAX Privacy.
        let mut hull: Vec<ConfusionCounts> = Vec::with_capacity(all.len());
        for c in all {
            while hull.len() >= 2 {
                let (x0, y0) = point(&hull[hull.len() - 2]);
                let (x1, y1) = point(&hull[hull.len() - 1]);
                let (x2, y2) = point(&c);
                let cross = (y1 - y0) * (x2 - x1) - (y2 - y1) * (x1 - x0);
                if cross <= 0.0 {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push(c);
        }
        hull
    }

    /// Area under the ROC curve of the frontier (trapezoids over the hull), i.e. allowing
    /// classifiers that randomise between two thresholds (JAX Privacy's `attack_auroc`). Never
    /// below 0.5; see [`CanaryScores::auroc_empirical`] for the plain one.
    pub fn auroc(&self) -> f64 {
        let f = self.frontier();
        let (n_in, n_out) = (self.n_in() as f64, self.n_out() as f64);
        f.windows(2)
            .map(|w| {
                let tnr0 = w[0].true_negatives as f64 / n_out;
                let tnr1 = w[1].true_negatives as f64 / n_out;
                let fnr0 = w[0].false_negatives as f64 / n_in;
                let fnr1 = w[1].false_negatives as f64 / n_in;
                0.5 * (tnr0 + tnr1) * (fnr1 - fnr0)
            })
            .sum()
    }

    /// The Mann-Whitney AUC: P\[IN score > OUT score\] + P\[tie\]/2. Below 0.5 means the scores look
    /// reversed (e.g. losses passed as higher-is-member).
    pub fn auroc_empirical(&self) -> f64 {
        let mut wins = 0.0;
        for &x in &self.in_sorted {
            let below = self.out_sorted.partition_point(|&o| o < x);
            let not_above = self.out_sorted.partition_point(|&o| o <= x);
            wins += below as f64 + 0.5 * (not_above - below) as f64;
        }
        wins / (self.n_in() as f64 * self.n_out() as f64)
    }

    /// The largest TPR at FPR <= `fpr` over the frontier, interpolating between two thresholds
    /// (a rule that randomises between them reaches every point of the segment).
    pub fn tpr_at_fpr(&self, fpr: f64) -> Result<f64> {
        if !(0.0..=1.0).contains(&fpr) {
            return Err(LowerBoundError::Fpr(fpr));
        }
        // Frontier from "none IN" to "all IN": FP and TP both non-decreasing.
        let pts: Vec<(f64, f64)> = self
            .frontier()
            .iter()
            .rev()
            .map(|c| (c.false_positives as f64, c.true_positives as f64))
            .collect();
        let target = fpr * self.n_out() as f64;
        // Last vertex with FP <= target (the first one, FP = 0, always qualifies).
        let j = pts.partition_point(|&(fp, _)| fp <= target) - 1;
        let tp = if j + 1 == pts.len() {
            pts[j].1
        } else {
            let (fp0, tp0) = pts[j];
            let (fp1, tp1) = pts[j + 1];
            tp0 + (target - fp0) / (fp1 - fp0) * (tp1 - tp0)
        };
        Ok(tp / self.n_in() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pinned cases from JAX Privacy's tests (auditing.md section 3, "Other pinned small cases").

    #[test]
    fn frontier_thresholds_and_counts_match_jax_privacy() {
        let s = CanaryScores::new(
            &[1.5, 2.5, 0.5, 3.5],
            &[0.0, 3.0, 2.0, 1.0],
            ScoreDirection::HigherIsMember,
        )
        .unwrap();
        let f = s.frontier();
        let t: Vec<f64> = f.iter().map(|c| c.threshold).collect();
        let tn: Vec<u64> = f.iter().map(|c| c.true_negatives).collect();
        let fn_: Vec<u64> = f.iter().map(|c| c.false_negatives).collect();
        assert_eq!(t, vec![0.0, 0.5, 3.5, f64::INFINITY]);
        assert_eq!(tn, vec![0, 1, 4, 4]);
        assert_eq!(fn_, vec![0, 0, 3, 4]);
    }

    #[test]
    fn auroc_is_the_hull_area_13_over_16() {
        let s = CanaryScores::new(
            &[0.0, 4.0, 6.0, 7.0],
            &[1.0, 2.0, 3.0, 5.0],
            ScoreDirection::HigherIsMember,
        )
        .unwrap();
        // Exact in binary floating point: sums of multiples of 1/32.
        assert_eq!(s.auroc(), 13.0 / 16.0);
        // The plain AUC counts 11 of 16 pairs.
        assert_eq!(s.auroc_empirical(), 11.0 / 16.0);
    }

    #[test]
    fn tpr_at_fpr_interpolates_between_thresholds() {
        let s =
            CanaryScores::new(&[1.0, 3.0], &[0.0, 2.0], ScoreDirection::HigherIsMember).unwrap();
        let want = [0.5, 0.75, 1.0, 1.0, 1.0];
        for (fpr, w) in [0.0, 0.25, 0.5, 0.75, 1.0].into_iter().zip(want) {
            // Exact: quarter steps.
            assert_eq!(s.tpr_at_fpr(fpr).unwrap(), w, "fpr {fpr}");
        }
        assert!(s.tpr_at_fpr(1.5).is_err());
    }

    #[test]
    fn lower_is_member_negates_and_maps_thresholds_back() {
        // Losses: members have low loss.
        let s = CanaryScores::new(&[0.1, 0.2], &[0.9, 1.0], ScoreDirection::LowerIsMember).unwrap();
        let c = s.counts_at(0.5);
        assert_eq!((c.true_positives, c.false_positives), (2, 0));
        assert_eq!(s.external_threshold(c.threshold), 0.5);
        assert_eq!(s.auroc_empirical(), 1.0);
        // The same scores read as higher-is-member look reversed.
        let r =
            CanaryScores::new(&[0.1, 0.2], &[0.9, 1.0], ScoreDirection::HigherIsMember).unwrap();
        assert_eq!(r.auroc_empirical(), 0.0);
    }

    #[test]
    fn bad_scores_are_refused_with_the_side_and_index() {
        let e = CanaryScores::new(&[], &[1.0], ScoreDirection::HigherIsMember).unwrap_err();
        assert!(matches!(
            e,
            LowerBoundError::EmptyScores {
                side: ScoreSide::In
            }
        ));
        let e = CanaryScores::new(&[1.0], &[0.0, f64::NAN], ScoreDirection::HigherIsMember)
            .unwrap_err();
        assert!(
            matches!(
                e,
                LowerBoundError::NonFiniteScore {
                    side: ScoreSide::Out,
                    index: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = CanaryScores::from_inclusion(&[1.0, 2.0], &[true], ScoreDirection::HigherIsMember)
            .unwrap_err();
        assert!(matches!(
            e,
            LowerBoundError::InclusionLength { scores: 2, bits: 1 }
        ));
    }
}
