//! End-to-end oracles for every model: per-example norms and clipped sums against the batch-1 loop,
//! and finite differences of the whole model (parameters and input) against its f64 reference.

use memaudit_engine::testing::{check_model_gradients, check_model_per_example, random_tensor};
use memaudit_engine::{Batch, ModelConfig, SparseInput, Value};
use rand::SeedableRng;

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(7)
}

#[test]
fn mlp_oracles() {
    for act in ["relu", "tanh", "sigmoid"] {
        let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
            "type": "mlp", "input": 12, "hidden": [10, 8], "classes": 4, "activation": act
        }))
        .unwrap();
        let model = cfg.build().unwrap();
        let params = model.init_params(&mut rng());
        let batch = Batch {
            input: Value::Dense(random_tensor(&[9, 12], 3)),
            targets: (0..9).map(|i| i % 4).collect(),
            mask: None,
        };
        check_model_per_example(&model, &params, &batch).unwrap();
        check_model_gradients(&model, &params, &batch, 1).unwrap();
    }
}

#[test]
fn sparse_logistic_regression_oracles() {
    let cfg = ModelConfig::SparseLogReg {
        features: 100_000,
        classes: 2,
    };
    let model = cfg.build().unwrap();
    let params = model.init_params(&mut rng());
    let mut s = SparseInput {
        dim: 100_000,
        row_ptr: vec![0],
        indices: vec![],
        values: vec![],
    };
    for i in 0..6u32 {
        for k in 0..(5 + i) {
            s.indices.push((i * 7919 + k * 104_729) % 100_000);
            s.values.push(0.1 * (k + 1) as f32);
        }
        s.row_ptr.push(s.indices.len());
    }
    let batch = Batch {
        input: Value::Sparse(s),
        targets: vec![0, 1, 1, 0, 1, 0],
        mask: None,
    };
    check_model_per_example(&model, &params, &batch).unwrap();
    check_model_gradients(&model, &params, &batch, 1).unwrap();
}

#[test]
fn empty_batch_gives_zero_gradient() {
    let model = ModelConfig::Mlp {
        input: 4,
        hidden: vec![3],
        classes: 2,
        activation: memaudit_engine::layers::ActivationKind::Relu,
        dropout: 0.0,
        input_dropout: 0.0,
    }
    .build()
    .unwrap();
    let params = model.init_params(&mut rng());
    let batch = Batch {
        input: Value::Dense(random_tensor(&[0, 4], 1)),
        targets: vec![],
        mask: None,
    };
    let clip = memaudit_engine::Clipping::Flat(1.0);
    let out = model
        .gradients(
            &params,
            &batch,
            memaudit_engine::GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: true,
                rng: &mut rng(),
            },
        )
        .unwrap();
    assert!(out.grad.iter().all(|&g| g == 0.0) && out.grad.len() == params.len());
    assert_eq!(out.loss_sum, 0.0);
}
