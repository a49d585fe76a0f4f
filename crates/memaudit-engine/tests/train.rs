//! The trainer and the DP step, end to end on small synthetic data.

use memaudit_engine::dp::{NoiseSource, privatize};
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::model::{Batch, Clipping, GradRequest};
use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::tensor::Tensor;
use memaudit_engine::train::{Dataset, Silent, TrainConfig, Trainer};
use memaudit_engine::{EngineError, ModelConfig, ParamPenalty, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two Gaussian blobs in `dim` dimensions, means +-0.8 on every coordinate.
struct Blobs {
    x: Vec<f32>,
    y: Vec<u32>,
    dim: usize,
}

impl Blobs {
    fn new(n: usize, dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * dim);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = (i % 2) as u32;
            let mu = if c == 0 { -0.8 } else { 0.8 };
            for _ in 0..dim {
                let z: f32 = rng.sample(rand_distr::StandardNormal);
                x.push(mu + z);
            }
            y.push(c);
        }
        Self { x, y, dim }
    }
}

impl Dataset for Blobs {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let mut data = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            data.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
        }
        Batch {
            input: Value::Dense(Tensor {
                data,
                shape: vec![idx.len(), self.dim],
            }),
            targets: idx.iter().map(|&i| self.y[i]).collect(),
            mask: None,
        }
    }
}

fn mlp(dim: usize, hidden: usize) -> ModelConfig {
    ModelConfig::Mlp {
        input: dim,
        hidden: vec![hidden],
        classes: 2,
        activation: ActivationKind::Relu,
        dropout: 0.0,
        input_dropout: 0.0,
    }
}

fn plain_config(dim: usize) -> TrainConfig {
    TrainConfig {
        model: mlp(dim, 16),
        optimizer: OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: Schedule::Constant,
        epochs: 3,
        batch_size: 32,
        physical_batch: Some(10),
        sampling: SamplingMode::Shuffle,
        seed: 1,
        privacy: None,
        seeded_noise: false,
    }
}

#[test]
fn plain_training_learns_and_resumes_from_its_checkpoint() {
    let (train, test) = (Blobs::new(1000, 10, 1), Blobs::new(500, 10, 2));
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(plain_config(10), train.len(), Some(dir.path()), false).unwrap();
    t.run(&train, Some(&test), &mut Silent).unwrap();
    let acc = t.evaluate(&test).unwrap().accuracy;
    assert!(acc > 0.95, "test accuracy {acc}");
    // Resuming with more epochs continues from the saved parameters and step.
    let mut more = plain_config(10);
    more.epochs = 4;
    let r = Trainer::new(more.clone(), train.len(), Some(dir.path()), true).unwrap();
    assert_eq!(r.params, t.params);
    assert_eq!(r.step, t.step);
    // A different model is refused.
    let mut other = more;
    other.model = mlp(10, 17);
    assert!(Trainer::new(other, train.len(), Some(dir.path()), true).is_err());
}

/// A penalty whose gradient turns NaN from the 40th call: training must stop naming the step and
/// a layer, and the checkpoint of the last completed epoch must survive.
struct PoisonAfter(std::sync::atomic::AtomicUsize);
impl ParamPenalty for PoisonAfter {
    fn name(&self) -> &str {
        "poison"
    }
    fn value_and_grad(&self, _p: &[f32], grad: &mut [f32]) -> f64 {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 40 {
            grad[0] = f32::NAN;
        }
        0.0
    }
}

#[test]
fn non_finite_gradient_stops_with_step_and_layer_and_keeps_the_last_checkpoint() {
    let train = Blobs::new(1000, 10, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(plain_config(10), train.len(), Some(dir.path()), false).unwrap();
    t.set_penalty(Box::new(PoisonAfter(0.into())));
    let err = t.run(&train, None, &mut Silent).unwrap_err();
    match &err {
        EngineError::NonFinite { step, layer, .. } => {
            assert_eq!(*step, 41);
            assert_eq!(layer, "fc1");
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(err.to_string().contains("step 41"));
    let ck = memaudit_engine::checkpoint::load_latest(dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(
        ck.state.step, 31,
        "the epoch-1 checkpoint (31 steps of 32) is kept"
    );
    assert!(ck.params.iter().all(|v| v.is_finite()));
}

/// The DP step: (clipped sum + N(0, (sigma C)^2)) / B equals the batch-1 oracle plus noise of the
/// right standard deviation.
#[test]
fn dp_step_is_the_oracle_clipped_sum_plus_gaussian_noise() {
    let data = Blobs::new(64, 100, 3);
    let model = mlp(100, 200).build().unwrap(); // ~20k parameters: the noise sd is estimated within ~0.5%
    let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(1));
    let idx: Vec<usize> = (0..64).collect();
    let batch = data.batch(&idx);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Batch-1 oracle.
    let mut per_ex = Vec::new();
    for i in 0..64 {
        let out = model
            .gradients(
                &params,
                &batch.select(&[i]),
                GradRequest {
                    clipping: None,
                    input_grad: false,
                    train: false,
                    rng: &mut rng,
                },
            )
            .unwrap();
        per_ex.push(out.grad);
    }
    let norms: Vec<f64> = per_ex
        .iter()
        .map(|g| g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut sorted = norms.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let c = sorted[32];
    let mut oracle = vec![0.0f64; params.len()];
    for (g, n) in per_ex.iter().zip(&norms) {
        let f = (c / n).min(1.0);
        for (o, v) in oracle.iter_mut().zip(g) {
            *o += f * *v as f64;
        }
    }
    let clip = Clipping::Flat(c as f32);
    let out = model
        .gradients(
            &params,
            &batch,
            GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: false,
                rng: &mut rng,
            },
        )
        .unwrap();
    let mut g = out.grad.clone();
    let sigma = 1.3;
    privatize(&mut g, sigma, c, 64.0, &mut NoiseSource::from_seed(42));
    let resid: Vec<f64> = g
        .iter()
        .zip(&oracle)
        .map(|(p, o)| *p as f64 * 64.0 - o)
        .collect();
    let n = resid.len() as f64;
    let mean = resid.iter().sum::<f64>() / n;
    let sd = (resid.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        (sd / (sigma * c) - 1.0).abs() < 0.03,
        "noise sd {sd} vs sigma*C {}",
        sigma * c
    );
    assert!(mean.abs() < 5.0 * sigma * c / n.sqrt(), "noise mean {mean}");
}

#[test]
fn empty_batch_gives_a_noise_only_step() {
    let model = mlp(10, 8).build().unwrap();
    let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(1));
    let empty = Blobs::new(4, 10, 1).batch(&[]);
    let clip = Clipping::Flat(1.0);
    let out = model
        .gradients(
            &params,
            &empty,
            GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: true,
                rng: &mut ChaCha8Rng::seed_from_u64(0),
            },
        )
        .unwrap();
    let mut g = out.grad;
    assert!(g.iter().all(|&v| v == 0.0));
    privatize(&mut g, 2.0, 1.0, 16.0, &mut NoiseSource::from_seed(7));
    let sd = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
    // 2.0 * 1.0 / 16 = 0.125, estimated from ~100 values: loose bound.
    assert!(sd > 0.07 && sd < 0.2, "noise-only step sd {sd}");
}
