//! Mechanisms as values (dp_accounting's `DpEvent`): what was run on the data, independent of
//! how it is accounted. The DP-SGD trainer's privacy ledger (memaudit-engine `ledger.rs`) stores the
//! run's segments with each checkpoint and derives the run's composed event from them.

use serde::{Deserialize, Serialize};

use crate::error::{AccountingError, Result, invalid};

/// Which datasets count as neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighboringRelation {
    /// D' = D plus or minus one record (the relation of DP-SGD with Poisson sampling).
    AddOrRemoveOne,
    /// D' = D with one record replaced (fixed dataset size; sampling without replacement).
    ReplaceOne,
}

impl std::fmt::Display for NeighboringRelation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NeighboringRelation::AddOrRemoveOne => "add-or-remove-one",
            NeighboringRelation::ReplaceOne => "replace-one",
        })
    }
}

/// A differentially private mechanism, as dp_accounting's `DpEvent` hierarchy.
///
/// `noise_multiplier` is the ratio of the Gaussian noise standard deviation to the L2
/// sensitivity of the query under the accountant's neighbouring relation (for DP-SGD with
/// add-or-remove-one neighbours: the clipping norm).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpEvent {
    /// The Gaussian mechanism.
    Gaussian {
        /// Noise standard deviation / L2 sensitivity (0 means no noise: not private).
        noise_multiplier: f64,
    },
    /// `event` run on a Poisson sample: each record is included independently with
    /// probability `sampling_probability`.
    PoissonSampled {
        /// The inclusion probability q in [0, 1].
        sampling_probability: f64,
        /// The mechanism run on the sample (Gaussians, possibly composed).
        event: Box<DpEvent>,
    },
    /// `event` run on a uniformly random subset of exactly `sample_size` of the
    /// `source_dataset_size` records (replace-one neighbours).
    SampledWithoutReplacement {
        /// Records in the dataset.
        source_dataset_size: u64,
        /// Records in each sample.
        sample_size: u64,
        /// The mechanism run on the sample (Gaussians, possibly composed).
        event: Box<DpEvent>,
    },
    /// `event` run `count` times.
    SelfComposed {
        /// The repeated mechanism.
        event: Box<DpEvent>,
        /// Number of repetitions (0 is a no-op).
        count: u64,
    },
    /// The mechanisms run one after the other.
    Composed(Vec<DpEvent>),
    /// A release with no privacy guarantee (epsilon = infinity).
    NonPrivate,
    /// Nothing touching the data.
    NoOp,
}

impl DpEvent {
    /// `Gaussian { noise_multiplier }`.
    pub fn gaussian(noise_multiplier: f64) -> Self {
        DpEvent::Gaussian { noise_multiplier }
    }

    /// `PoissonSampled { sampling_probability, event }`.
    pub fn poisson_sampled(sampling_probability: f64, event: DpEvent) -> Self {
        DpEvent::PoissonSampled {
            sampling_probability,
            event: Box::new(event),
        }
    }

    /// `SelfComposed { event, count }`.
    pub fn self_composed(event: DpEvent, count: u64) -> Self {
        DpEvent::SelfComposed {
            event: Box::new(event),
            count,
        }
    }

    /// `SampledWithoutReplacement { source_dataset_size, sample_size, event }`.
    pub fn sampled_without_replacement(
        source_dataset_size: u64,
        sample_size: u64,
        event: DpEvent,
    ) -> Self {
        DpEvent::SampledWithoutReplacement {
            source_dataset_size,
            sample_size,
            event: Box::new(event),
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            DpEvent::Gaussian { noise_multiplier } => {
                format!("Gaussian(noise_multiplier={noise_multiplier})")
            }
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => {
                format!(
                    "PoissonSampled(q={sampling_probability}, {})",
                    event.describe()
                )
            }
            DpEvent::SampledWithoutReplacement {
                source_dataset_size,
                sample_size,
                event,
            } => format!(
                "SampledWithoutReplacement({sample_size} of {source_dataset_size}, {})",
                event.describe()
            ),
            DpEvent::SelfComposed { event, count } => {
                format!("SelfComposed({} x {count})", event.describe())
            }
            DpEvent::Composed(events) => format!("Composed({} events)", events.len()),
            DpEvent::NonPrivate => "NonPrivate".into(),
            DpEvent::NoOp => "NoOp".into(),
        }
    }

    /// Checks every number in the event tree (finite noise >= 0, q in [0, 1], sample size <=
    /// dataset size), naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        match self {
            DpEvent::Gaussian { noise_multiplier } => check_noise(*noise_multiplier),
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => {
                let q = *sampling_probability;
                if !(0.0..=1.0).contains(&q) {
                    return Err(invalid("sampling_probability", q, "must be in [0, 1]"));
                }
                event.validate()
            }
            DpEvent::SampledWithoutReplacement {
                source_dataset_size,
                sample_size,
                event,
            } => {
                if *source_dataset_size == 0 {
                    return Err(invalid("source_dataset_size", 0.0, "must be at least 1"));
                }
                if sample_size > source_dataset_size {
                    return Err(invalid(
                        "sample_size",
                        *sample_size as f64,
                        format!("must be <= source_dataset_size ({source_dataset_size})"),
                    ));
                }
                event.validate()
            }
            DpEvent::SelfComposed { event, .. } => event.validate(),
            DpEvent::Composed(events) => events.iter().try_for_each(DpEvent::validate),
            DpEvent::NonPrivate | DpEvent::NoOp => Ok(()),
        }
    }
}

fn check_noise(sigma: f64) -> Result<()> {
    if sigma >= 0.0 && sigma.is_finite() {
        Ok(())
    } else {
        Err(invalid(
            "noise_multiplier",
            sigma,
            "must be a finite number >= 0",
        ))
    }
}

/// The event of DP-SGD: `steps` Poisson-sampled Gaussian steps with sampling rate `q` and
/// noise multiplier `sigma` (q = 1 is the unsampled Gaussian, as TF Privacy writes it).
pub fn dp_sgd_event(q: f64, sigma: f64, steps: u64) -> DpEvent {
    let step = if q == 1.0 {
        DpEvent::gaussian(sigma)
    } else {
        DpEvent::poisson_sampled(q, DpEvent::gaussian(sigma))
    };
    DpEvent::self_composed(step, steps)
}

/// The building blocks both accountants reduce an event tree to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Atom {
    /// Unsampled Gaussian with noise multiplier sigma (> 0, finite).
    Gaussian { sigma: f64 },
    /// Poisson-sampled Gaussian, 0 < q <= 1, sigma > 0 finite.
    PoissonGaussian { q: f64, sigma: f64 },
    /// Gaussian on a sample of m of n records without replacement, 0 < m <= n, sigma > 0.
    WorGaussian { n: u64, m: u64, sigma: f64 },
    /// No guarantee.
    NonPrivate,
}

/// Flattens an event tree into (atom, count) pairs, dropping no-ops. The structural errors are
/// the same for both accountants; relation checks are left to each accountant.
pub(crate) fn flatten(
    event: &DpEvent,
    accountant: &'static str,
    relation: NeighboringRelation,
) -> Result<Vec<(Atom, u64)>> {
    event.validate()?;
    let mut out = Vec::new();
    flatten_into(event, 1, accountant, relation, &mut out)?;
    Ok(out)
}

fn flatten_into(
    event: &DpEvent,
    count: u64,
    accountant: &'static str,
    relation: NeighboringRelation,
    out: &mut Vec<(Atom, u64)>,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    match event {
        DpEvent::NoOp => {}
        DpEvent::NonPrivate => out.push((Atom::NonPrivate, count)),
        DpEvent::Gaussian { noise_multiplier } => {
            if *noise_multiplier == 0.0 {
                out.push((Atom::NonPrivate, count));
            } else {
                out.push((
                    Atom::Gaussian {
                        sigma: *noise_multiplier,
                    },
                    count,
                ));
            }
        }
        DpEvent::SelfComposed { event, count: c } => {
            let total = count
                .checked_mul(*c)
                .ok_or(AccountingError::CountOverflow)?;
            flatten_into(event, total, accountant, relation, out)?;
        }
        DpEvent::Composed(events) => {
            for e in events {
                flatten_into(e, count, accountant, relation, out)?;
            }
        }
        DpEvent::PoissonSampled {
            sampling_probability,
            event: inner,
        } => {
            let sigma = effective_noise_multiplier(inner).map_err(|reason| {
                AccountingError::Unsupported {
                    accountant,
                    event: event.describe(),
                    relation,
                    reason,
                }
            })?;
            let q = *sampling_probability;
            if q == 0.0 || sigma == f64::INFINITY {
                // Nobody sampled, or nothing released: a no-op.
            } else if sigma == 0.0 {
                out.push((Atom::NonPrivate, count));
            } else {
                out.push((Atom::PoissonGaussian { q, sigma }, count));
            }
        }
        DpEvent::SampledWithoutReplacement {
            source_dataset_size,
            sample_size,
            event: inner,
        } => {
            let sigma = effective_noise_multiplier(inner).map_err(|reason| {
                AccountingError::Unsupported {
                    accountant,
                    event: event.describe(),
                    relation,
                    reason,
                }
            })?;
            if *sample_size == 0 || sigma == f64::INFINITY {
            } else if sigma == 0.0 {
                out.push((Atom::NonPrivate, count));
            } else {
                out.push((
                    Atom::WorGaussian {
                        n: *source_dataset_size,
                        m: *sample_size,
                        sigma,
                    },
                    count,
                ));
            }
        }
    }
    Ok(())
}

/// Noise multiplier of the single Gaussian equivalent to a tree of Gaussians run on the same
/// data: sigma_eff = (sum_i count_i / sigma_i^2)^(-1/2) (Mironov, Talwar, Zhang 2019, Sec. 3;
/// dp_accounting `_effective_gaussian_noise_multiplier`). NoOp counts as sigma = infinity and
/// NonPrivate as sigma = 0.
pub(crate) fn effective_noise_multiplier(event: &DpEvent) -> std::result::Result<f64, String> {
    fn inverse_square_sum(event: &DpEvent) -> std::result::Result<f64, String> {
        match event {
            DpEvent::Gaussian { noise_multiplier } => Ok(noise_multiplier.powi(-2)),
            DpEvent::NoOp => Ok(0.0),
            DpEvent::NonPrivate => Ok(f64::INFINITY),
            DpEvent::SelfComposed { event, count } => {
                let s = inverse_square_sum(event)?;
                Ok(if *count == 0 { 0.0 } else { s * *count as f64 })
            }
            DpEvent::Composed(events) => events.iter().map(inverse_square_sum).sum(),
            other => Err(format!(
                "a sampled event must contain Gaussians (possibly composed); found {}",
                other.describe()
            )),
        }
    }
    let s = inverse_square_sum(event)?;
    Ok(if s == 0.0 {
        f64::INFINITY
    } else {
        s.powf(-0.5)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip() {
        let e = DpEvent::Composed(vec![
            dp_sgd_event(0.01, 1.1, 1000),
            DpEvent::sampled_without_replacement(1000, 10, DpEvent::gaussian(2.0)),
            DpEvent::NonPrivate,
            DpEvent::NoOp,
        ]);
        let s = serde_json::to_string(&e).unwrap();
        let back: DpEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(e, back);
        assert!(s.contains("\"poisson_sampled\""), "{s}");
    }

    #[test]
    fn effective_noise_of_composed_gaussians() {
        // papers.md 3.2 (TFF adaptive_clip_noise_params): z = 1, sigma_b = 5 -> z_delta = 1.00504,
        // and Composed[Gaussian(z_delta), Gaussian(2 sigma_b)] is Gaussian(1).
        let z_delta = (1.0f64 - 0.01).powf(-0.5);
        let e = DpEvent::Composed(vec![DpEvent::gaussian(z_delta), DpEvent::gaussian(10.0)]);
        let s = effective_noise_multiplier(&e).unwrap();
        assert!((s - 1.0).abs() < 1e-15, "{s}");
        let e = DpEvent::self_composed(DpEvent::gaussian(2.0), 4);
        assert!((effective_noise_multiplier(&e).unwrap() - 1.0).abs() < 1e-15);
        assert_eq!(
            effective_noise_multiplier(&DpEvent::NoOp).unwrap(),
            f64::INFINITY
        );
        assert_eq!(
            effective_noise_multiplier(&DpEvent::NonPrivate).unwrap(),
            0.0
        );
        assert!(
            effective_noise_multiplier(&DpEvent::poisson_sampled(0.1, DpEvent::gaussian(1.0)))
                .is_err()
        );
    }

    #[test]
    fn validation_names_the_parameter() {
        let err = DpEvent::gaussian(-1.0).validate().unwrap_err();
        assert!(err.to_string().contains("noise_multiplier"), "{err}");
        let err = DpEvent::poisson_sampled(1.5, DpEvent::gaussian(1.0))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sampling_probability"), "{err}");
        let err = DpEvent::gaussian(f64::NAN).validate().unwrap_err();
        assert!(err.to_string().contains("noise_multiplier"), "{err}");
        let err = DpEvent::sampled_without_replacement(10, 11, DpEvent::gaussian(1.0))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sample_size"), "{err}");
    }

    #[test]
    fn flatten_multiplies_counts_and_drops_noops() {
        let e = DpEvent::self_composed(
            DpEvent::Composed(vec![
                dp_sgd_event(0.5, 2.0, 3),
                DpEvent::NoOp,
                DpEvent::gaussian(0.0),
            ]),
            2,
        );
        let atoms = flatten(&e, "RDP", NeighboringRelation::AddOrRemoveOne).unwrap();
        assert_eq!(
            atoms,
            vec![
                (Atom::PoissonGaussian { q: 0.5, sigma: 2.0 }, 6),
                (Atom::NonPrivate, 2)
            ]
        );
        let huge =
            DpEvent::self_composed(DpEvent::self_composed(DpEvent::gaussian(1.0), u64::MAX), 2);
        assert_eq!(
            flatten(&huge, "RDP", NeighboringRelation::AddOrRemoveOne).unwrap_err(),
            AccountingError::CountOverflow
        );
    }
}
