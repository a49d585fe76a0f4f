//! Regulariser sweep (Arpit et al. §5, Figs. 10-11): for each regulariser and value, one model
//! trained on randY (all labels random) and one on the real data; the paper plots the *final
//! training accuracy on randY* (how much noise was memorised) against the *best validation
//! accuracy on real data* (how well it generalises). A regulariser that lowers the first without
//! lowering the second hinders memorisation at no cost to learning; the paper finds dropout
//! (especially with adversarial training on LASS samples) does best.

use memaudit_engine::ModelConfig;
use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::optim::OptimizerConfig;
use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};
use super::lass::LassConfig;
use super::training::{AdversarialTraining, EpochRecord, Tracking, TrainSpec, train_tracked};

/// One regulariser setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regularizer {
    None,
    /// Dropout after every hidden layer.
    Dropout {
        rate: f32,
    },
    /// Dropout on the input.
    InputDropout {
        rate: f32,
    },
    /// Gaussian noise of this standard deviation added to training inputs.
    InputNoise {
        std: f32,
    },
    /// Coupled L2 weight decay.
    WeightDecay {
        decay: f32,
    },
    /// Dropout plus adversarial training on LASS samples with this loss weight.
    AdversarialDropout {
        weight: f32,
        dropout: f32,
    },
}

impl Regularizer {
    /// The family name used in tables and plots.
    pub fn family(&self) -> &'static str {
        match self {
            Regularizer::None => "none",
            Regularizer::Dropout { .. } => "dropout",
            Regularizer::InputDropout { .. } => "input dropout",
            Regularizer::InputNoise { .. } => "input noise",
            Regularizer::WeightDecay { .. } => "weight decay",
            Regularizer::AdversarialDropout { .. } => "dropout + adversarial",
        }
    }

    /// A short label, e.g. `dropout 0.5`.
    pub fn label(&self) -> String {
        match self {
            Regularizer::None => "none".into(),
            Regularizer::Dropout { rate } => format!("dropout {rate}"),
            Regularizer::InputDropout { rate } => format!("input dropout {rate}"),
            Regularizer::InputNoise { std } => format!("input noise {std}"),
            Regularizer::WeightDecay { decay } => format!("weight decay {decay}"),
            Regularizer::AdversarialDropout { weight, dropout } => {
                format!("dropout {dropout} + adversarial {weight}")
            }
        }
    }

    /// `base` with this regulariser added (MLPs only: dropout lives in `ModelConfig::Mlp`).
    pub fn apply(&self, base: &TrainSpec, lass: &LassConfig) -> Result<TrainSpec> {
        let mut s = base.clone();
        let set_dropout =
            |s: &mut TrainSpec, hidden: Option<f32>, input: Option<f32>| -> Result<()> {
                match &mut s.model {
                    ModelConfig::Mlp {
                        dropout,
                        input_dropout,
                        ..
                    } => {
                        if let Some(h) = hidden {
                            *dropout = h;
                        }
                        if let Some(i) = input {
                            *input_dropout = i;
                        }
                        Ok(())
                    }
                    _ => Err(invalid(
                        "regulariser sweep",
                        "dropout settings need an MLP (--model mlp)",
                    )),
                }
            };
        let rate_ok = |r: f32, what: &str| {
            if (0.0..1.0).contains(&r) {
                Ok(())
            } else {
                Err(invalid(format!("{what} {r}"), "must be in [0, 1)"))
            }
        };
        match *self {
            Regularizer::None => {}
            Regularizer::Dropout { rate } => {
                rate_ok(rate, "dropout")?;
                set_dropout(&mut s, Some(rate), None)?;
            }
            Regularizer::InputDropout { rate } => {
                rate_ok(rate, "input dropout")?;
                set_dropout(&mut s, None, Some(rate))?;
            }
            Regularizer::InputNoise { std } => s.input_noise = std,
            Regularizer::WeightDecay { decay } => {
                if !(decay >= 0.0 && decay.is_finite()) {
                    return Err(invalid(format!("weight decay {decay}"), "must be >= 0"));
                }
                match &mut s.optimizer {
                    OptimizerConfig::Sgd { weight_decay, .. }
                    | OptimizerConfig::Adam { weight_decay, .. }
                    | OptimizerConfig::RmsProp { weight_decay, .. } => *weight_decay = decay,
                }
            }
            Regularizer::AdversarialDropout { weight, dropout } => {
                rate_ok(dropout, "dropout")?;
                set_dropout(&mut s, Some(dropout), None)?;
                s.adversarial = Some(AdversarialTraining {
                    weight,
                    lass: lass.clone(),
                });
            }
        }
        Ok(s)
    }
}

/// One point of the paper's figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepPoint {
    pub regularizer: Regularizer,
    /// Final training accuracy on randY (x-axis).
    pub randy_train_accuracy: f64,
    /// Best validation accuracy on real data over the epochs (y-axis), and its epoch.
    pub real_best_valid_accuracy: f64,
    pub real_best_epoch: usize,
    pub real_final_valid_accuracy: f64,
}

/// Train the two models of one setting. `on_epoch(dataset, record)` sees every epoch
/// (`dataset` is "randY" or "real").
pub fn sweep_point(
    base: &TrainSpec,
    reg: &Regularizer,
    lass: &LassConfig,
    real: &DenseDataset,
    randy: &DenseDataset,
    valid: &DenseDataset,
    on_epoch: &mut dyn FnMut(&str, &EpochRecord) -> Result<()>,
) -> Result<SweepPoint> {
    let spec = reg.apply(base, lass)?;
    let r = train_tracked(&spec, randy, &Tracking::default(), &mut |e| {
        on_epoch("randY", e)
    })?;
    let randy_train_accuracy = r.records.last().map_or(f64::NAN, |e| e.train_accuracy);
    let t = Tracking {
        valid: Some(valid),
        ..Default::default()
    };
    let q = train_tracked(&spec, real, &t, &mut |e| on_epoch("real", e))?;
    let (real_best_epoch, real_best_valid_accuracy) = q.best_valid().unwrap_or((0, f64::NAN));
    Ok(SweepPoint {
        regularizer: reg.clone(),
        randy_train_accuracy,
        real_best_valid_accuracy,
        real_best_epoch,
        real_final_valid_accuracy: q
            .records
            .last()
            .and_then(|e| e.valid_accuracy)
            .unwrap_or(f64::NAN),
    })
}

/// Per family: the setting with the least randY fit among those whose real best validation
/// accuracy is within `tolerance` of the unregularised run's (the "equal real-data accuracy"
/// comparison). `None` for a family with no setting that close.
pub fn least_memorization_at_equal_accuracy(
    points: &[SweepPoint],
    tolerance: f64,
) -> Vec<(String, Option<SweepPoint>)> {
    let Some(base) = points
        .iter()
        .find(|p| p.regularizer == Regularizer::None)
        .map(|p| p.real_best_valid_accuracy)
    else {
        return Vec::new();
    };
    let mut families: Vec<&str> = Vec::new();
    for p in points {
        let f = p.regularizer.family();
        if f != "none" && !families.contains(&f) {
            families.push(f);
        }
    }
    families
        .into_iter()
        .map(|f| {
            let best = points
                .iter()
                .filter(|p| {
                    p.regularizer.family() == f && p.real_best_valid_accuracy >= base - tolerance
                })
                .min_by(|a, b| a.randy_train_accuracy.total_cmp(&b.randy_train_accuracy))
                .cloned();
            (f.to_string(), best)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use memaudit_engine::layers::ActivationKind;
    use memaudit_engine::optim::Schedule;

    fn base() -> TrainSpec {
        TrainSpec {
            model: ModelConfig::Mlp {
                input: 4,
                hidden: vec![3],
                classes: 2,
                activation: ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            },
            optimizer: OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            schedule: Schedule::Constant,
            epochs: 1,
            batch_size: 1,
            seed: 0,
            input_noise: 0.0,
            adversarial: None,
        }
    }

    #[test]
    fn regularizers_change_exactly_their_setting() {
        let l = LassConfig::paper();
        let s = Regularizer::Dropout { rate: 0.5 }
            .apply(&base(), &l)
            .unwrap();
        assert!(
            matches!(s.model, ModelConfig::Mlp { dropout, input_dropout, .. } if dropout == 0.5 && input_dropout == 0.0)
        );
        let s = Regularizer::InputDropout { rate: 0.2 }
            .apply(&base(), &l)
            .unwrap();
        assert!(
            matches!(s.model, ModelConfig::Mlp { dropout, input_dropout, .. } if dropout == 0.0 && input_dropout == 0.2)
        );
        let s = Regularizer::WeightDecay { decay: 0.01 }
            .apply(&base(), &l)
            .unwrap();
        assert!(
            matches!(s.optimizer, OptimizerConfig::Sgd { weight_decay, .. } if weight_decay == 0.01)
        );
        let s = Regularizer::InputNoise { std: 0.3 }
            .apply(&base(), &l)
            .unwrap();
        assert_eq!(s.input_noise, 0.3);
        let s = Regularizer::AdversarialDropout {
            weight: 0.5,
            dropout: 0.1,
        }
        .apply(&base(), &l)
        .unwrap();
        assert_eq!(s.adversarial.as_ref().unwrap().weight, 0.5);
        assert_eq!(Regularizer::None.apply(&base(), &l).unwrap(), base());
        assert!(
            Regularizer::Dropout { rate: 1.0 }
                .apply(&base(), &l)
                .is_err()
        );
        assert!(
            Regularizer::WeightDecay { decay: -1.0 }
                .apply(&base(), &l)
                .is_err()
        );
    }

    #[test]
    fn equal_accuracy_comparison_picks_the_least_memorising_setting() {
        let pt = |reg: Regularizer, x: f64, y: f64| SweepPoint {
            regularizer: reg,
            randy_train_accuracy: x,
            real_best_valid_accuracy: y,
            real_best_epoch: 1,
            real_final_valid_accuracy: y,
        };
        let pts = vec![
            pt(Regularizer::None, 0.9, 0.95),
            pt(Regularizer::Dropout { rate: 0.2 }, 0.6, 0.95),
            pt(Regularizer::Dropout { rate: 0.6 }, 0.3, 0.945),
            pt(Regularizer::Dropout { rate: 0.9 }, 0.1, 0.80),
            pt(Regularizer::WeightDecay { decay: 1.0 }, 0.1, 0.5),
        ];
        let r = least_memorization_at_equal_accuracy(&pts, 0.01);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].1.as_ref().unwrap().regularizer,
            Regularizer::Dropout { rate: 0.6 }
        );
        assert!(r[1].1.is_none());
    }
}
