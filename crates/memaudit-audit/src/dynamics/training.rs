//! The training loop of the dynamics experiments, with per-epoch tracking.
//!
//! The engine's `Trainer` draws and runs its own batches; two of Arpit et al.'s regularisers
//! change the batch itself (input Gaussian noise, and adversarial training on LASS samples), so
//! this loop runs the same pieces (`Model::gradients`, the engine's optimizers and shuffled
//! sampler) itself. Without those two regularisers a step is the trainer's plain step: gradients
//! of the summed loss over a shuffled fixed-size batch, divided by its size, one optimizer step.
//!
//! After every epoch it records, in evaluation mode: accuracy on the clean and on the corrupted
//! training examples separately (the corrupted ones against their noisy labels: how much noise
//! has been fitted), validation loss and accuracy, and optionally the validation CSR (LASS).

use std::time::Instant;

use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::loss::softmax_cross_entropy;
use memaudit_engine::optim::{Optimizer, OptimizerConfig, Schedule};
use memaudit_engine::sampler::{BatchSampler, SamplingMode};
use memaudit_engine::train::Dataset;
use memaudit_engine::{Batch, GradRequest, Model, ModelConfig, Tensor, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};
use super::lass::{LassConfig, lass, require_dense_classifier};
use super::stats::gini;

/// Adversarial training with LASS samples (Arpit et al. §5): the loss is
/// `(1 - weight) CE(x, y) + weight CE(x̂, y)`, x̂ the LASS point of each batch example (the first
/// point whose prediction flipped for critical samples, the last search point otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdversarialTraining {
    pub weight: f32,
    pub lass: LassConfig,
}

/// Everything that defines one training run of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: Schedule,
    pub epochs: usize,
    pub batch_size: usize,
    /// Initialisation, batch order, dropout masks and input noise derive from it.
    pub seed: u64,
    /// Standard deviation of Gaussian noise added to every training input each time it is drawn
    /// (the paper's "input Gaussian noise" regulariser; 0 = none).
    #[serde(default)]
    pub input_noise: f32,
    #[serde(default)]
    pub adversarial: Option<AdversarialTraining>,
}

impl TrainSpec {
    pub fn validate(&self, n_train: usize) -> Result<()> {
        require_dense_classifier(&self.model)?;
        self.optimizer.validate()?;
        if self.epochs == 0 {
            return Err(invalid("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > n_train {
            return Err(invalid(
                format!("batch size {}", self.batch_size),
                format!("must be between 1 and the training set size {n_train}"),
            ));
        }
        if !(self.input_noise >= 0.0 && self.input_noise.is_finite()) {
            return Err(invalid(
                format!("input noise {}", self.input_noise),
                "the standard deviation must be >= 0 and finite",
            ));
        }
        if let Some(a) = &self.adversarial {
            if !(0.0..=1.0).contains(&a.weight) {
                return Err(invalid(
                    format!("adversarial weight {}", a.weight),
                    "must be in [0, 1]",
                ));
            }
            a.lass.validate()?;
        }
        Ok(())
    }
}

/// Validation CSR tracking.
#[derive(Clone, Debug)]
pub struct CsrTracking<'a> {
    /// The validation inputs to probe (flat rows of `example_shape`).
    pub data: &'a DenseDataset,
    /// Every this many epochs (and at the last epoch).
    pub every: usize,
    pub lass: LassConfig,
}

/// What to measure after each epoch.
#[derive(Clone, Debug, Default)]
pub struct Tracking<'a> {
    pub valid: Option<&'a DenseDataset>,
    /// `noisy[i]`: training example i was corrupted.
    pub noisy: Option<&'a [bool]>,
    pub csr: Option<CsrTracking<'a>>,
    /// Stop once the training accuracy (evaluation mode, all examples) reaches this.
    pub stop_at_train_accuracy: Option<f64>,
    /// Record the Gini coefficient of the direct input-gradient norms ||∇_x ℓ(θ; x)||₁ over the
    /// training examples (the cheap loss-sensitivity estimate; see `sensitivity.rs`).
    pub input_gradient_gini: bool,
}

/// Measurements after one epoch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (training mode, clean term only).
    pub train_loss: f64,
    /// Accuracy on all training examples against their (possibly noisy) labels.
    pub train_accuracy: f64,
    /// On the uncorrupted training examples.
    pub clean_accuracy: Option<f64>,
    /// On the corrupted training examples, against their noisy labels.
    pub noisy_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    /// Validation critical sample ratio (LASS), on the epochs it was measured.
    pub csr: Option<f64>,
    pub lass_iterations: Option<usize>,
    /// Gini of ||∇_x ℓ(θ; x)||₁ over training examples (cheap loss-sensitivity estimate).
    pub input_gradient_gini: Option<f64>,
    pub seconds: f64,
}

/// A finished run.
pub struct TrainedRun {
    pub model: Model,
    pub params: Vec<f32>,
    pub records: Vec<EpochRecord>,
    /// First epoch whose training accuracy reached `stop_at_train_accuracy`.
    pub fitted_epoch: Option<usize>,
}

impl TrainedRun {
    /// Highest validation accuracy over the epochs and the epoch it was reached.
    pub fn best_valid(&self) -> Option<(usize, f64)> {
        self.records
            .iter()
            .filter_map(|r| r.valid_accuracy.map(|a| (r.epoch, a)))
            .fold(None, |best, (e, a)| match best {
                Some((_, b)) if b >= a => best,
                _ => Some((e, a)),
            })
    }
}

/// Independent per-purpose seeds from one run seed (the engine's one seed-mixing function).
pub(crate) use memaudit_engine::sampler::mix_seed as mix;

/// Per-example correctness (evaluation mode) and the summed loss.
pub fn per_example_correct(
    model: &Model,
    params: &[f32],
    data: &DenseDataset,
    chunk: usize,
) -> Result<(Vec<bool>, f64)> {
    let n = data.labels.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut correct = Vec::with_capacity(n);
    let mut loss = 0.0f64;
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(chunk.max(1)) {
        let b = data.batch(c);
        let logits = model.forward(params, &b.input, false, &mut rng)?;
        let k = logits.last_dim();
        for (row, &t) in logits.data.chunks(k).zip(&b.targets) {
            let arg = row
                .iter()
                .enumerate()
                .fold(0usize, |best, (j, &v)| if v > row[best] { j } else { best });
            correct.push(arg == t as usize);
        }
        let out = softmax_cross_entropy(&logits, &b.targets, None)?;
        loss += out.per_example.iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok((correct, loss))
}

/// ||∇_x ℓ(θ; x_i)||₁ for every example, from the engine's input gradients (evaluation mode).
/// The engine returns the gradient of the summed loss; each example's loss depends on its own
/// input only, so row i is the gradient of example i's loss.
pub fn input_gradient_l1(
    model: &Model,
    params: &[f32],
    data: &DenseDataset,
    chunk: usize,
) -> Result<Vec<f64>> {
    let n = data.labels.len();
    let per = data.per_example();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut out = Vec::with_capacity(n);
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(chunk.max(1)) {
        let b = data.batch(c);
        let g = model.gradients(
            params,
            &b,
            GradRequest {
                clipping: None,
                input_grad: true,
                train: false,
                rng: &mut rng,
            },
        )?;
        let Some(g) = g.input_grad else {
            return Err(invalid("input gradients", "the model returned none"));
        };
        out.extend(
            g.data
                .chunks(per)
                .map(|r| r.iter().map(|v| v.abs() as f64).sum::<f64>()),
        );
    }
    Ok(out)
}

fn fraction(correct: &[bool], select: impl Fn(usize) -> bool) -> Option<f64> {
    let (mut hit, mut tot) = (0usize, 0usize);
    for (i, &c) in correct.iter().enumerate() {
        if select(i) {
            tot += 1;
            hit += c as usize;
        }
    }
    (tot > 0).then(|| hit as f64 / tot as f64)
}

fn with_inputs(b: &Batch, data: Vec<f32>) -> Batch {
    let Value::Dense(t) = &b.input else {
        unreachable!("dense datasets make dense batches")
    };
    Batch {
        input: Value::Dense(Tensor {
            data,
            shape: t.shape.clone(),
        }),
        targets: b.targets.clone(),
        mask: None,
    }
}

/// Train `spec` on `train`, measuring `tracking` after every epoch; `on_epoch` sees each record
/// (for progress and incremental files).
pub fn train_tracked(
    spec: &TrainSpec,
    train: &DenseDataset,
    tracking: &Tracking<'_>,
    on_epoch: &mut dyn FnMut(&EpochRecord) -> Result<()>,
) -> Result<TrainedRun> {
    let n = train.labels.len();
    spec.validate(n)?;
    if let Some(m) = tracking.noisy
        && m.len() != n
    {
        return Err(invalid(
            "noisy-example mask",
            format!("has {} entries for {n} training examples", m.len()),
        ));
    }
    let model = spec.model.build()?;
    let mut params = model.init_params(&mut ChaCha8Rng::seed_from_u64(mix(spec.seed, 0)));
    let mut opt = Optimizer::new(
        spec.optimizer.clone(),
        spec.schedule.clone(),
        model.num_params(),
    )?;
    let mut sampler = BatchSampler::new(
        SamplingMode::Shuffle,
        n,
        spec.batch_size,
        Some(mix(spec.seed, 1)),
    )?;
    let steps_per_epoch = sampler.steps_per_epoch();
    let eval_chunk = 1000;
    let mut records = Vec::new();
    let mut fitted_epoch = None;
    let mut step = 0u64;
    let mut lass_rng = ChaCha8Rng::seed_from_u64(mix(spec.seed, 3));
    for epoch in 1..=spec.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for _ in 0..steps_per_epoch {
            step += 1;
            let idx = sampler.next_batch();
            let mut batch = train.batch(&idx);
            let mut rng = ChaCha8Rng::seed_from_u64(mix(spec.seed, 1_000_000 + step));
            if spec.input_noise > 0.0 {
                let Value::Dense(t) = &mut batch.input else {
                    unreachable!()
                };
                for v in t.data.iter_mut() {
                    let z: f32 = rng.sample(StandardNormal);
                    *v += spec.input_noise * z;
                }
            }
            fn req(rng: &mut ChaCha8Rng) -> GradRequest<'_> {
                GradRequest {
                    clipping: None,
                    input_grad: false,
                    train: true,
                    rng,
                }
            }
            let out = model.gradients(&params, &batch, req(&mut rng))?;
            loss_sum += out.loss_sum;
            seen += idx.len();
            let mut grad = out.grad;
            if let Some(adv) = &spec.adversarial {
                let Value::Dense(t) = &batch.input else {
                    unreachable!()
                };
                let found = lass(
                    &model,
                    &params,
                    &t.data,
                    &train.example_shape,
                    &adv.lass,
                    &mut lass_rng,
                )?;
                let adv_batch = with_inputs(&batch, found.adversarial);
                let out2 = model.gradients(&params, &adv_batch, req(&mut rng))?;
                let w = adv.weight;
                for (g, g2) in grad.iter_mut().zip(&out2.grad) {
                    *g = (1.0 - w) * *g + w * g2;
                }
            }
            let inv = 1.0 / idx.len() as f32;
            grad.iter_mut().for_each(|g| *g *= inv);
            if grad.iter().any(|g| !g.is_finite()) {
                return Err(invalid(
                    format!("training step {step}"),
                    "the gradient is not finite; lower the learning rate",
                ));
            }
            opt.step(&mut params, &grad);
        }
        let (correct, _) = per_example_correct(&model, &params, train, eval_chunk)?;
        let train_accuracy = fraction(&correct, |_| true).unwrap_or(f64::NAN);
        let (clean_accuracy, noisy_accuracy) = match tracking.noisy {
            Some(m) => (fraction(&correct, |i| !m[i]), fraction(&correct, |i| m[i])),
            None => (Some(train_accuracy), None),
        };
        let (valid_loss, valid_accuracy) = match tracking.valid {
            Some(v) if !v.labels.is_empty() => {
                let (c, l) = per_example_correct(&model, &params, v, eval_chunk)?;
                (Some(l / c.len() as f64), fraction(&c, |_| true))
            }
            _ => (None, None),
        };
        let (mut csr, mut lass_iterations) = (None, None);
        if let Some(ct) = &tracking.csr
            && (epoch % ct.every.max(1) == 0 || epoch == spec.epochs)
        {
            let o = lass(
                &model,
                &params,
                &ct.data.x,
                &ct.data.example_shape,
                &ct.lass,
                &mut lass_rng,
            )?;
            csr = Some(o.csr());
            lass_iterations = Some(o.iterations);
        }
        let input_gradient_gini = if tracking.input_gradient_gini {
            Some(gini(&input_gradient_l1(
                &model, &params, train, eval_chunk,
            )?)?)
        } else {
            None
        };
        let rec = EpochRecord {
            epoch,
            train_loss: if seen > 0 {
                loss_sum / seen as f64
            } else {
                f64::NAN
            },
            train_accuracy,
            clean_accuracy,
            noisy_accuracy,
            valid_loss,
            valid_accuracy,
            csr,
            lass_iterations,
            input_gradient_gini,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&rec)?;
        records.push(rec);
        if let Some(th) = tracking.stop_at_train_accuracy
            && train_accuracy >= th
        {
            fitted_epoch = Some(epoch);
            break;
        }
    }
    Ok(TrainedRun {
        model,
        params,
        records,
        fitted_epoch,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dynamics::corruption::{NoiseKind, corrupt};
    use memaudit_engine::layers::ActivationKind;

    pub(crate) fn digits_flat() -> (DenseDataset, DenseDataset) {
        let img = memaudit_data::digits().unwrap();
        let (tr, te) = img.split_train_test(0.25, 0).unwrap();
        let ds = |s: &memaudit_data::ImageSet| {
            DenseDataset::new(
                s.to_unit_f32(),
                vec![s.pixels_per_image()],
                s.labels.iter().map(|&l| l as u32).collect(),
            )
            .unwrap()
        };
        (ds(&tr), ds(&te))
    }

    fn spec(epochs: usize) -> TrainSpec {
        TrainSpec {
            model: ModelConfig::Mlp {
                input: 64,
                hidden: vec![32],
                classes: 10,
                activation: ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            },
            optimizer: OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
            schedule: Schedule::Constant,
            epochs,
            batch_size: 32,
            seed: 1,
            input_noise: 0.0,
            adversarial: None,
        }
    }

    #[test]
    fn tracks_clean_and_noisy_examples_separately() {
        let (train, valid) = digits_flat();
        let c = corrupt(&train, 10, NoiseKind::RandY, 0.5, 9).unwrap();
        let t = Tracking {
            valid: Some(&valid),
            noisy: Some(&c.mask),
            ..Default::default()
        };
        let mut seen = 0;
        let run = train_tracked(&spec(8), &c.data, &t, &mut |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 8);
        let last = run.records.last().unwrap();
        // Half the labels are random: the clean half is learned (digits MLPs reach > 95% on
        // clean data), the random half is fitted far less within 8 epochs, and validation
        // accuracy stays well above chance.
        let (clean, noisy) = (last.clean_accuracy.unwrap(), last.noisy_accuracy.unwrap());
        assert!(
            clean > 0.8 && clean > noisy + 0.2,
            "clean {clean}, noisy {noisy}"
        );
        assert!(last.valid_accuracy.unwrap() > 0.6, "{last:?}");
        // The overall accuracy is the example-weighted mix of the two.
        let k = c.corrupted.len() as f64 / c.mask.len() as f64;
        assert!((last.train_accuracy - ((1.0 - k) * clean + k * noisy)).abs() < 1e-12);
        assert!(run.best_valid().is_some());
    }

    #[test]
    fn zero_noise_and_zero_adversarial_weight_are_plain_training() {
        let (train, _) = digits_flat();
        let t = Tracking::default();
        let plain = train_tracked(&spec(1), &train, &t, &mut |_| Ok(())).unwrap();
        let adv0 = TrainSpec {
            adversarial: Some(AdversarialTraining {
                weight: 0.0,
                lass: LassConfig::paper(),
            }),
            ..spec(1)
        };
        let a = train_tracked(&adv0, &train, &t, &mut |_| Ok(())).unwrap();
        assert_eq!(plain.params, a.params);
        let noisy = TrainSpec {
            input_noise: 0.5,
            ..spec(1)
        };
        let b = train_tracked(&noisy, &train, &t, &mut |_| Ok(())).unwrap();
        assert_ne!(plain.params, b.params);
        let adv = TrainSpec {
            adversarial: Some(AdversarialTraining {
                weight: 0.5,
                lass: LassConfig::paper(),
            }),
            ..spec(1)
        };
        let c = train_tracked(&adv, &train, &t, &mut |_| Ok(())).unwrap();
        assert_ne!(plain.params, c.params);
        // The stop rule ends training at the first epoch that fits.
        let t = Tracking {
            stop_at_train_accuracy: Some(0.5),
            ..Default::default()
        };
        let r = train_tracked(&spec(5), &train, &t, &mut |_| Ok(())).unwrap();
        assert_eq!(r.fitted_epoch, Some(1));
        assert_eq!(r.records.len(), 1);
    }

    #[test]
    fn bad_specs_are_errors() {
        let (train, _) = digits_flat();
        let t = Tracking::default();
        let bad = [
            TrainSpec {
                epochs: 0,
                ..spec(1)
            },
            TrainSpec {
                batch_size: 0,
                ..spec(1)
            },
            TrainSpec {
                input_noise: -1.0,
                ..spec(1)
            },
            TrainSpec {
                adversarial: Some(AdversarialTraining {
                    weight: 1.5,
                    lass: LassConfig::paper(),
                }),
                ..spec(1)
            },
        ];
        for s in bad {
            assert!(train_tracked(&s, &train, &t, &mut |_| Ok(())).is_err());
        }
    }
}
