//! End-to-end oracles for the CNNs: per-example norms and clipped sums against the batch-1 loop
//! (with every conv forced to each norm rule, and with the rule chosen by cost), and finite
//! differences of the whole model, parameters and input pixels, against its f64 reference.
//!
//! Small images keep the naive f64 reference fast: the tutorial CNN on 14x14 (the smallest input
//! its second pooling accepts) and the GroupNorm CNN on 8x8 (1x1 after its third pooling).

use memaudit_engine::compute::NormRule;
use memaudit_engine::testing::{check_model_gradients, check_model_per_example, random_tensor};
use memaudit_engine::{Batch, Clipping, GradRequest, Model, ModelConfig, Value};
use rand::SeedableRng;

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn batch(shape: &[usize], classes: u32, seed: u64) -> Batch {
    Batch {
        input: Value::Dense(random_tensor(shape, seed)),
        targets: (0..shape[0] as u32)
            .map(|i| (i * 7 + 3) % classes)
            .collect(),
        mask: None,
    }
}

fn force_rule(model: &mut Model, rule: Option<NormRule>) {
    for i in 0..model.num_layers() {
        model.layer_mut(i).set_norm_rule(rule);
    }
}

fn oracles(cfg: ModelConfig, shape: &[usize], classes: u32) {
    let mut model = cfg.build().unwrap();
    let params = model.init_params(&mut rng(1));
    let b = batch(shape, classes, 2);
    for rule in [Some(NormRule::Gram), Some(NormRule::Materialize), None] {
        force_rule(&mut model, rule);
        check_model_per_example(&model, &params, &b)
            .unwrap_or_else(|e| panic!("{cfg:?} with rule {rule:?}: {e}"));
    }
    check_model_gradients(&model, &params, &b, 3).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
}

#[test]
fn tutorial_cnn_oracles() {
    oracles(
        ModelConfig::TutorialCnn {
            channels: 1,
            height: 14,
            width: 15,
            classes: 4,
        },
        &[5, 1, 14, 15],
        4,
    );
}

#[test]
fn tutorial_cnn_two_channels_oracles() {
    oracles(
        ModelConfig::TutorialCnn {
            channels: 2,
            height: 16,
            width: 14,
            classes: 3,
        },
        &[3, 2, 16, 14],
        3,
    );
}

#[test]
fn groupnorm_cnn_oracles() {
    oracles(
        ModelConfig::GroupNormCnn {
            channels: 1,
            height: 8,
            width: 8,
            classes: 5,
        },
        &[4, 1, 8, 8],
        5,
    );
}

#[test]
fn cnn_rejects_mismatched_input_and_accepts_empty_batches() {
    let model = ModelConfig::TutorialCnn {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    }
    .build()
    .unwrap();
    let params = model.init_params(&mut rng(1));
    let req = |r: &mut rand_chacha::ChaCha8Rng| -> Result<_, _> {
        let clip = Clipping::Flat(1.0);
        model.gradients(
            &params,
            &batch(&[2, 3, 28, 28], 10, 1),
            GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: true,
                rng: r,
            },
        )
    };
    // Three channels into a one-channel model: a shape error, not a panic.
    assert!(req(&mut rng(0)).is_err());

    let empty = Batch {
        input: Value::Dense(random_tensor(&[0, 1, 28, 28], 1)),
        targets: vec![],
        mask: None,
    };
    let clip = Clipping::Flat(1.0);
    let out = model
        .gradients(
            &params,
            &empty,
            GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: true,
                rng: &mut rng(0),
            },
        )
        .unwrap();
    assert!(out.grad.iter().all(|&g| g == 0.0));
}

/// The full-size models run a clipped step at 28x28 and agree with the plain step when the clip
/// bound is above every norm (clipping then changes nothing).
#[test]
fn full_size_clipped_step_equals_plain_step_when_nothing_is_clipped() {
    for cfg in [
        ModelConfig::TutorialCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
        ModelConfig::GroupNormCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
    ] {
        let model = cfg.build().unwrap();
        let params = model.init_params(&mut rng(5));
        let b = batch(&[6, 1, 28, 28], 10, 6);
        let run = |clip: Option<&Clipping>| {
            model
                .gradients(
                    &params,
                    &b,
                    GradRequest {
                        clipping: clip,
                        input_grad: false,
                        train: true,
                        rng: &mut rng(0),
                    },
                )
                .unwrap()
        };
        let plain = run(None);
        let clip = Clipping::Flat(1e9);
        let clipped = run(Some(&clip));
        let norms = clipped.norms.unwrap();
        assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0));
        let scale = plain.grad.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = plain
            .grad
            .iter()
            .zip(&clipped.grad)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        // Same GEMMs on the same data, the clipped path's rows multiplied by 1.0: equal up to
        // rounding (1e-6 relative).
        assert!(worst <= 1e-6 * scale, "{cfg:?}: {worst} vs {scale}");
        // The flat norm is the norm of the plain gradient for a batch of one.
        let one = b.select(&[0]);
        let g1 = model
            .gradients(
                &params,
                &one,
                GradRequest {
                    clipping: None,
                    input_grad: false,
                    train: true,
                    rng: &mut rng(0),
                },
            )
            .unwrap();
        let n1 = g1
            .grad
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            ((norms[0] as f64) - n1).abs() <= 1e-5 * n1,
            "{} vs {n1}",
            norms[0]
        );
    }
}
