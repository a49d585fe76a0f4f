//! The trainer and the DP step, end to end on small synthetic data.

mod common;

use common::Blobs;

use memaudit_engine::dp::{NoiseSource, privatize};
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::model::{Clipping, GradRequest};
use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{Dataset, Silent, TrainConfig, Trainer};
use memaudit_engine::{EngineError, ModelConfig, ParamPenalty};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

fn private_config(dim: usize, max_epsilon: Option<f64>) -> TrainConfig {
    use memaudit_engine::privacy::AccountantKind;
    use memaudit_engine::train::{ClipConfig, PrivacyConfig};
    TrainConfig {
        model: mlp(dim, 16),
        optimizer: OptimizerConfig::Sgd {
            lr: 0.2,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: Schedule::Constant,
        epochs: 2,
        batch_size: 50,
        physical_batch: Some(16),
        sampling: SamplingMode::Poisson,
        seed: 5,
        privacy: Some(PrivacyConfig {
            noise_multiplier: 1.0,
            clipping: ClipConfig::Flat { bound: 1.0 },
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            max_epsilon,
        }),
        seeded_noise: true,
    }
}

#[test]
fn private_run_learns_reports_epsilon_and_a_resumed_run_continues_the_accounting() {
    use memaudit_engine::privacy::{AccountantKind, epsilon};
    let (train, test) = (Blobs::new(1000, 10, 1), Blobs::new(500, 10, 2));
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        private_config(10, None),
        train.len(),
        Some(dir.path()),
        false,
    )
    .unwrap();
    t.run(&train, None, &mut Silent).unwrap();
    assert!(t.evaluate(&test).unwrap().accuracy > 0.9);
    // 2 epochs of ceil(1000 / 50) = 20 Poisson steps each, q = 0.05.
    assert_eq!(t.private_steps(), 40);
    let e40 = epsilon(0.05, 1.0, 40, 1e-5, AccountantKind::Rdp).unwrap();
    assert!((t.epsilon().unwrap().unwrap() - e40).abs() < 1e-12);
    // Resume for one more epoch: the accounting continues from 40 steps, not from zero.
    let mut more = private_config(10, None);
    more.epochs = 3;
    let mut r = Trainer::new(more, train.len(), Some(dir.path()), true).unwrap();
    assert_eq!(r.private_steps(), 40);
    r.run(&train, None, &mut Silent).unwrap();
    assert_eq!(r.private_steps(), 60);
    assert!(
        (r.epsilon().unwrap().unwrap()
            - epsilon(0.05, 1.0, 60, 1e-5, AccountantKind::Rdp).unwrap())
        .abs()
            < 1e-12
    );
    // A resume may change the noise multiplier: the ledger then composes both segments.
    let mut noisier = private_config(10, None);
    noisier.epochs = 4;
    if let Some(p) = noisier.privacy.as_mut() {
        p.noise_multiplier = 2.0;
    }
    let mut r2 = Trainer::new(noisier.clone(), train.len(), Some(dir.path()), true).unwrap();
    r2.run(&train, None, &mut Silent).unwrap();
    let composed = memaudit_accounting::DpEvent::Composed(vec![
        memaudit_accounting::dp_sgd_event(0.05, 1.0, 60),
        memaudit_accounting::dp_sgd_event(0.05, 2.0, 20),
    ]);
    let want = memaudit_accounting::epsilon_for(&composed, 1e-5, AccountantKind::Rdp)
        .unwrap()
        .epsilon;
    assert!((r2.epsilon().unwrap().unwrap() - want).abs() < 1e-12);
    assert_eq!(r2.ledger().unwrap().segments.len(), 3);
    // The clip rule is part of the mechanism's definition and may not change on resume.
    let mut other = noisier;
    other.epochs = 5;
    if let Some(p) = other.privacy.as_mut() {
        p.clipping = memaudit_engine::train::ClipConfig::Flat { bound: 2.0 };
    }
    let err = Trainer::new(other, train.len(), Some(dir.path()), true)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("privacy differ"), "{err}");
}

#[test]
fn max_epsilon_stops_before_the_budget_is_exceeded() {
    use memaudit_engine::privacy::{AccountantKind, epsilon};
    use memaudit_engine::train::StopReason;
    let train = Blobs::new(1000, 10, 1);
    let budget = epsilon(0.05, 1.0, 25, 1e-5, AccountantKind::Rdp).unwrap() + 1e-9;
    let mut t = Trainer::new(private_config(10, Some(budget)), train.len(), None, false).unwrap();
    let stop = t.run(&train, None, &mut Silent).unwrap();
    assert_eq!(stop, StopReason::PrivacyBudget);
    assert_eq!(t.private_steps(), 25);
    assert!(t.epsilon().unwrap().unwrap() <= budget);
}

#[test]
fn zero_noise_means_clipping_only_and_infinite_epsilon() {
    let train = Blobs::new(200, 10, 1);
    let mut cfg = private_config(10, None);
    cfg.epochs = 1;
    if let Some(p) = cfg.privacy.as_mut() {
        p.noise_multiplier = 0.0;
    }
    let mut t = Trainer::new(cfg, train.len(), None, false).unwrap();
    t.run(&train, None, &mut Silent).unwrap();
    assert!(t.epsilon().unwrap().unwrap().is_infinite());
}

/// The trainer's own chunking: a logical batch run as physical chunks of 7 gives the parameters of
/// the same run in one piece (same seeded batches and noise). Tolerance: the chunked sum adds the
/// same f32 terms in another order, ~1e-6 relative per step over 20 steps.
#[test]
fn the_trainers_physical_chunks_give_the_parameters_of_one_batch() {
    let train = Blobs::new(1000, 10, 3);
    let run = |phys: Option<usize>| {
        let mut cfg = private_config(10, None);
        cfg.epochs = 1;
        cfg.physical_batch = phys;
        let mut t = Trainer::new(cfg, train.len(), None, false).unwrap();
        t.run(&train, None, &mut Silent).unwrap();
        t.params
    };
    let (whole, chunked) = (run(None), run(Some(7)));
    let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = whole
        .iter()
        .zip(&chunked)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "chunked run differs by {diff} (scale {scale})"
    );
    assert!(diff > 0.0 || whole == chunked);
}

/// Per-layer clipping: each layer group is clipped to its own bound; the sum equals the batch-1
/// oracle that clips every group of every example separately, and the sensitivity is
/// sqrt(sum C_k^2).
#[test]
fn per_group_clipping_matches_its_oracle() {
    let data = Blobs::new(24, 10, 4);
    let model = mlp(10, 12).build().unwrap(); // layers: fc1, act1, fc2
    let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(2));
    let idx: Vec<usize> = (0..24).collect();
    let batch = data.batch(&idx);
    let bounds = vec![0.3f32, 0.05];
    let clip = Clipping::PerGroup {
        bounds: bounds.clone(),
        group_of_layer: vec![0, 0, 1],
    };
    assert!((clip.sensitivity() - (0.3f64.powi(2) + 0.05f64.powi(2)).sqrt()).abs() < 1e-7);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let fast = model
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
    let ranges = [model.param_range(0), model.param_range(2)];
    let mut want = vec![0.0f64; params.len()];
    for i in 0..24 {
        let g = model
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
            .unwrap()
            .grad;
        for (r, &c) in ranges.iter().zip(&bounds) {
            let norm = g[r.clone()]
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let f = (c as f64 / norm).min(1.0);
            for k in r.clone() {
                want[k] += f * g[k] as f64;
            }
        }
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = fast
        .grad
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(
        diff <= 1e-5 * scale,
        "per-group clipped sum differs by {diff} (scale {scale})"
    );
    let gn = fast.group_norms.unwrap();
    assert_eq!(gn.len(), 2);
}
