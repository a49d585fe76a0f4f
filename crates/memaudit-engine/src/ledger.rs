//! The privacy ledger: what a DP-SGD run actually ran, segment by segment, as a `DpEvent`.
//!
//! A run is one or more *segments*: one per `Trainer::run` call (a fresh run, then each
//! `--resume`). A segment records how its batches were drawn (Poisson or shuffled), the dataset
//! and expected batch size (so q = batch / n), the noise multiplier, the global step it started
//! at and the steps it ran. The ledger is the only source of every epsilon a run reports, it is
//! stored in every checkpoint sidecar, and it is cross-checked against the data, the checkpoint's
//! step and epoch counters and the optimizer on load, so an edited sidecar is refused rather than
//! believed.
//!
//! What each sampling scheme proves (the `DpEvent` of a segment):
//! - **Poisson**: every step is a Poisson-subsampled Gaussian with q = batch / n:
//!   `SelfComposed(PoissonSampled(q, Gaussian(z)), steps)` (Abadi et al.; dp_accounting).
//! - **Shuffle**: no amplification by sampling is claimed. The sampler cuts one permutation into
//!   `n / batch` batches per *window* of that many global steps (windows are aligned to global step
//!   multiples, see `sampler.rs`), so within one segment an example is used at most once per window:
//!   each window touched is one Gaussian release, `SelfComposed(Gaussian(z), windows)` (TF Privacy's
//!   "each example used once per epoch" figure). A segment that starts mid-window draws a fresh
//!   permutation for the rest of that window, so the count is per segment and segments are summed:
//!   a resumed run can only be charged more, never less.
//!
//! Adaptive clipping: z is the *total* multiplier, which already covers the clip-count noise
//! (see `dp::AdaptiveClip::split_noise`).
//!
//! Which settings a resume may change (and so start a new segment): the noise multiplier, the
//! batch size (hence q), the sampling scheme, the number of epochs, the physical batch, the
//! learning-rate schedule and `--max-epsilon`. Never the model, the data, the optimizer, the clip
//! rule, delta, the accountant or the seed: `Trainer::resume` refuses those.

use memaudit_accounting::{self as acc, AccountantKind, DpEvent};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::sampler::SamplingMode;

/// One stretch of training with fixed privacy parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerSegment {
    pub sampling: SamplingMode,
    /// Training examples N.
    pub dataset_size: u64,
    /// Expected (logical) batch size B; q = B / N.
    pub batch_size: u64,
    /// Total noise multiplier z (noise std / sensitivity).
    pub noise_multiplier: f64,
    /// Global step at which the segment started.
    pub first_step: u64,
    /// Private steps run in the segment.
    pub steps: u64,
}

impl LedgerSegment {
    /// q = B / N.
    pub fn sampling_rate(&self) -> f64 {
        self.batch_size as f64 / self.dataset_size as f64
    }

    /// Steps in one epoch: ceil(N / B) Poisson batches, or N / B full shuffled batches (the
    /// window of one permutation).
    pub fn steps_per_epoch(&self) -> u64 {
        steps_per_epoch(self.sampling, self.dataset_size, self.batch_size)
    }

    /// Shuffled windows (permutations) the segment's steps touched: each is one release of every
    /// example. Zero for Poisson segments.
    pub fn windows(&self) -> u64 {
        if self.sampling != SamplingMode::Shuffle || self.steps == 0 {
            return 0;
        }
        let w = self.steps_per_epoch().max(1);
        let last = self.first_step + self.steps - 1;
        last / w - self.first_step / w + 1
    }

    /// The mechanism this segment ran (see the module docs).
    pub fn event(&self) -> DpEvent {
        match self.sampling {
            SamplingMode::Poisson => {
                acc::dp_sgd_event(self.sampling_rate(), self.noise_multiplier, self.steps)
            }
            SamplingMode::Shuffle => acc::dp_sgd_event(1.0, self.noise_multiplier, self.windows()),
        }
    }

    /// What the accountant would say had the same steps been Poisson-sampled (shuffled runs
    /// report it only under that label: it is not their guarantee).
    pub fn poisson_equivalent_event(&self) -> DpEvent {
        acc::dp_sgd_event(self.sampling_rate(), self.noise_multiplier, self.steps)
    }
}

/// Steps in one epoch for a sampling scheme: ceil(N/B) Poisson batches or N/B shuffled ones.
pub fn steps_per_epoch(sampling: SamplingMode, n: u64, batch: u64) -> u64 {
    match sampling {
        SamplingMode::Poisson => n.div_ceil(batch.max(1)),
        SamplingMode::Shuffle => n / batch.max(1),
    }
}

/// The event of a planned run of `epochs` epochs from step 0 (for noise calibration and budget
/// planning before anything has run): the same rule as the ledger applies afterwards.
pub fn planned_event(
    sampling: SamplingMode,
    n: u64,
    batch: u64,
    noise_multiplier: f64,
    epochs: u64,
) -> DpEvent {
    LedgerSegment {
        sampling,
        dataset_size: n,
        batch_size: batch,
        noise_multiplier,
        first_step: 0,
        steps: epochs * steps_per_epoch(sampling, n, batch),
    }
    .event()
}

/// Every private step of a run, with the delta and accountant its epsilon is reported at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    pub delta: f64,
    pub accountant: AccountantKind,
    pub segments: Vec<LedgerSegment>,
}

impl PrivacyLedger {
    /// The ledger inside a JSON document, wherever memaudit writes one: the ledger itself, a
    /// checkpoint sidecar (`trainer.ledger`), `train --json` (`privacy_statement.ledger`) or a
    /// run.json (`results.privacy_statement.ledger`). None when none of these holds an object
    /// with "segments"; an error when the one found does not parse.
    pub fn find_in_json(v: &serde_json::Value) -> Option<serde_json::Result<Self>> {
        [
            v,
            &v["trainer"]["ledger"],
            &v["privacy_statement"]["ledger"],
            &v["results"]["privacy_statement"]["ledger"],
        ]
        .into_iter()
        .find(|c| c.get("segments").is_some())
        .map(|found| serde_json::from_value(found.clone()))
    }

    pub fn new(delta: f64, accountant: AccountantKind) -> Self {
        Self {
            delta,
            accountant,
            segments: Vec::new(),
        }
    }

    /// Open a new segment at global step `first_step` (its step count starts at 0).
    pub fn open_segment(
        &mut self,
        sampling: SamplingMode,
        dataset_size: u64,
        batch_size: u64,
        noise_multiplier: f64,
        first_step: u64,
    ) {
        self.segments.push(LedgerSegment {
            sampling,
            dataset_size,
            batch_size,
            noise_multiplier,
            first_step,
            steps: 0,
        });
    }

    /// Count one private step in the open segment.
    pub fn record_step(&mut self) {
        if let Some(s) = self.segments.last_mut() {
            s.steps += 1;
        }
    }

    /// Private steps over all segments.
    pub fn total_steps(&self) -> u64 {
        self.segments.iter().map(|s| s.steps).sum()
    }

    /// Whether any segment used shuffled batches.
    pub fn has_shuffled_segment(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.sampling == SamplingMode::Shuffle && s.steps > 0)
    }

    /// The composed mechanism of everything run so far.
    pub fn event(&self) -> DpEvent {
        compose(self.segments.iter().map(LedgerSegment::event))
    }

    /// The ledger's epsilon at its own delta: the run's guarantee. 0 before any step.
    pub fn epsilon(&self) -> Result<f64> {
        epsilon_of(&self.event(), self.delta, self.accountant)
    }

    /// The epsilon had every shuffled step been Poisson-sampled; None when no segment shuffled
    /// (then it equals `epsilon`). Never a guarantee: label it as what Poisson would give.
    pub fn epsilon_if_poisson(&self) -> Result<Option<f64>> {
        if !self.has_shuffled_segment() {
            return Ok(None);
        }
        let ev = compose(
            self.segments
                .iter()
                .map(LedgerSegment::poisson_equivalent_event),
        );
        epsilon_of(&ev, self.delta, self.accountant).map(Some)
    }

    /// The epsilon after `extra` more steps in the open segment (budget stops look ahead with it).
    pub fn epsilon_after_extra_steps(&self, extra: u64) -> Result<f64> {
        let mut l = self.clone();
        if let Some(s) = l.segments.last_mut() {
            s.steps += extra;
        }
        l.epsilon()
    }

    /// Refuse a ledger that does not describe the run it was loaded with: `n` training examples,
    /// `step` optimizer steps (all private) and `epoch` completed epochs. Catches edited or
    /// corrupted sidecars (a step count that was lowered to shrink epsilon, an impossible step).
    pub fn check_consistent(&self, n: u64, step: u64, epoch: u64) -> Result<()> {
        let bad = |msg: String| Err(EngineError::Config(format!("privacy ledger: {msg}")));
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return bad(format!("delta {} is not in (0, 1)", self.delta));
        }
        let mut expected_first = 0u64;
        let (mut min_spe, mut max_spe) = (u64::MAX, 0u64);
        for (k, s) in self.segments.iter().enumerate() {
            if s.dataset_size != n {
                return bad(format!(
                    "segment {k} was trained on {} examples, the data now has {n}",
                    s.dataset_size
                ));
            }
            if s.batch_size == 0 || s.batch_size > n {
                return bad(format!(
                    "segment {k} has batch size {} for {n} examples",
                    s.batch_size
                ));
            }
            if !(s.noise_multiplier >= 0.0 && s.noise_multiplier.is_finite()) {
                return bad(format!(
                    "segment {k} has noise multiplier {}",
                    s.noise_multiplier
                ));
            }
            if s.first_step != expected_first {
                return bad(format!(
                    "segment {k} starts at step {}, the segments before it end at step {expected_first}",
                    s.first_step
                ));
            }
            expected_first = match expected_first.checked_add(s.steps) {
                Some(v) => v,
                None => return bad(format!("segment {k}'s step count {} overflows", s.steps)),
            };
            let spe = s.steps_per_epoch().max(1);
            min_spe = min_spe.min(spe);
            max_spe = max_spe.max(spe);
        }
        if expected_first != step {
            return bad(format!(
                "the segments account for {expected_first} private steps, the checkpoint has taken {step}"
            ));
        }
        if !self.segments.is_empty() {
            // Checkpoints are written at epoch ends, or mid-epoch when a budget stop ends training.
            let lo = epoch.saturating_mul(min_spe);
            let hi = epoch.saturating_add(1).saturating_mul(max_spe);
            if step < lo || step > hi {
                return bad(format!(
                    "{step} steps cannot make {epoch} epochs of {min_spe}..{max_spe} steps each"
                ));
            }
        }
        Ok(())
    }
}

/// One event for a sequence (a single one is returned as it is).
fn compose(events: impl Iterator<Item = DpEvent>) -> DpEvent {
    let mut v: Vec<DpEvent> = events.collect();
    match v.len() {
        0 => DpEvent::NoOp,
        1 => v.pop().unwrap(),
        _ => DpEvent::Composed(v),
    }
}

/// Epsilon of an event at delta (0 for an event that touches nothing; +inf without noise).
pub fn epsilon_of(event: &DpEvent, delta: f64, kind: AccountantKind) -> Result<f64> {
    if is_noop(event) {
        return Ok(0.0);
    }
    acc::epsilon_for(event, delta, kind)
        .map(|r| r.epsilon)
        .map_err(EngineError::from)
}

fn is_noop(event: &DpEvent) -> bool {
    match event {
        DpEvent::NoOp => true,
        DpEvent::SelfComposed { event, count } => *count == 0 || is_noop(event),
        DpEvent::Composed(v) => v.iter().all(is_noop),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(sampling: SamplingMode, batch: u64, z: f64, first: u64, steps: u64) -> LedgerSegment {
        LedgerSegment {
            sampling,
            dataset_size: 1000,
            batch_size: batch,
            noise_multiplier: z,
            first_step: first,
            steps,
        }
    }

    #[test]
    fn poisson_segments_compose_like_one_run() {
        // Splitting a Poisson run into segments changes nothing: composition is associative.
        let one = PrivacyLedger {
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            segments: vec![seg(SamplingMode::Poisson, 50, 1.1, 0, 300)],
        };
        let two = PrivacyLedger {
            segments: vec![
                seg(SamplingMode::Poisson, 50, 1.1, 0, 100),
                seg(SamplingMode::Poisson, 50, 1.1, 100, 200),
            ],
            ..one.clone()
        };
        let (a, b) = (one.epsilon().unwrap(), two.epsilon().unwrap());
        assert!((a - b).abs() < 1e-9 * a, "{a} vs {b}");
        assert_eq!(one.epsilon_if_poisson().unwrap(), None);
    }

    #[test]
    fn heterogeneous_segments_are_the_composition_of_their_events() {
        let l = PrivacyLedger {
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            segments: vec![
                seg(SamplingMode::Poisson, 50, 1.1, 0, 100),
                seg(SamplingMode::Poisson, 100, 2.0, 100, 50),
            ],
        };
        let by_hand = DpEvent::Composed(vec![
            acc::dp_sgd_event(0.05, 1.1, 100),
            acc::dp_sgd_event(0.1, 2.0, 50),
        ]);
        let want = acc::epsilon_for(&by_hand, 1e-5, AccountantKind::Rdp)
            .unwrap()
            .epsilon;
        assert_eq!(l.epsilon().unwrap(), want);
        // More noise later costs less than the same steps at the first segment's noise.
        let low = acc::epsilon_for(
            &acc::dp_sgd_event(0.05, 1.1, 150),
            1e-5,
            AccountantKind::Rdp,
        )
        .unwrap()
        .epsilon;
        assert!(want > 0.0 && want != low);
    }

    #[test]
    fn shuffled_windows_are_counted_per_segment() {
        // n = 1000, batch 100: windows of 10 steps.
        assert_eq!(seg(SamplingMode::Shuffle, 100, 1.0, 0, 20).windows(), 2);
        assert_eq!(seg(SamplingMode::Shuffle, 100, 1.0, 0, 21).windows(), 3);
        // Mid-window start: steps 5..15 touch windows 0 and 1.
        assert_eq!(seg(SamplingMode::Shuffle, 100, 1.0, 5, 10).windows(), 2);
        assert_eq!(seg(SamplingMode::Shuffle, 100, 1.0, 5, 0).windows(), 0);
        // The guarantee is the no-amplification composition of windows Gaussians; the Poisson
        // figure is reported separately and is smaller.
        let l = PrivacyLedger {
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            segments: vec![seg(SamplingMode::Shuffle, 100, 1.0, 0, 20)],
        };
        let eps = l.epsilon().unwrap();
        let want = acc::epsilon_for(&acc::dp_sgd_event(1.0, 1.0, 2), 1e-5, AccountantKind::Rdp)
            .unwrap()
            .epsilon;
        assert_eq!(eps, want);
        let p = l.epsilon_if_poisson().unwrap().unwrap();
        assert!(p < eps, "{p} vs {eps}");
    }

    #[test]
    fn inconsistent_ledgers_are_refused() {
        let l = PrivacyLedger {
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            segments: vec![
                seg(SamplingMode::Poisson, 50, 1.1, 0, 40),
                seg(SamplingMode::Poisson, 50, 1.1, 40, 20),
            ],
        };
        // 20 steps per epoch: 60 steps are 3 epochs.
        l.check_consistent(1000, 60, 3).unwrap();
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(msg(l.check_consistent(1000, 59, 3)).contains("60 private steps"));
        assert!(msg(l.check_consistent(999, 60, 3)).contains("1000 examples"));
        assert!(msg(l.check_consistent(1000, 60, 1)).contains("cannot make"));
        let mut gap = l.clone();
        gap.segments[1].first_step = 41;
        assert!(msg(gap.check_consistent(1000, 60, 3)).contains("starts at step 41"));
        let mut huge = l.clone();
        huge.segments[1].steps = u64::MAX;
        assert!(huge.check_consistent(1000, u64::MAX, 3).is_err());
    }

    #[test]
    fn planned_events_match_the_ledger_afterwards() {
        let plan = planned_event(SamplingMode::Shuffle, 1000, 100, 1.0, 3);
        assert_eq!(plan, acc::dp_sgd_event(1.0, 1.0, 3));
        let plan = planned_event(SamplingMode::Poisson, 1000, 64, 1.0, 3);
        assert_eq!(plan, acc::dp_sgd_event(0.064, 1.0, 48));
    }
}
