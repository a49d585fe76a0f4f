//! Recurrent language models end to end: per-example norms and clipped sums against the batch-1
//! loop, finite differences against the f64 reference forward (both with a padding mask),
//! incremental inference against the full forward, and agreement with PyTorch's `nn.LSTM` /
//! `nn.GRU` on a committed fixture (`tests/data/make_rnn_fixture.py`).

use memaudit_engine::testing::{check_model_gradients, check_model_per_example};
use memaudit_engine::{Batch, GradRequest, LmState, ModelConfig, TokenInput, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn lstm(vocab: usize, embed: usize, hidden: usize, layers: usize, dropout: f32) -> ModelConfig {
    ModelConfig::LstmLm {
        vocab,
        embed,
        hidden,
        layers,
        dropout,
    }
}

fn gru(vocab: usize, embed: usize, hidden: usize, layers: usize, dropout: f32) -> ModelConfig {
    ModelConfig::GruLm {
        vocab,
        embed,
        hidden,
        layers,
        dropout,
    }
}

/// Random tokens and targets; example `b` is padded (mask 0) after `t - b % 3` steps.
fn padded_batch(t: usize, b: usize, vocab: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..t * b)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let targets: Vec<u32> = (0..t * b)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let mask: Vec<f32> = (0..t * b)
        .map(|r| {
            let (step, ex) = (r / b, r % b);
            if step < t - (ex % 3).min(t - 1) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Batch {
        input: Value::Tokens(TokenInput {
            seq_len: t,
            batch: b,
            ids,
        }),
        targets,
        mask: Some(mask),
    }
}

fn oracles(cfg: &ModelConfig, t: usize, b: usize, seed: u64) {
    let model = cfg.build().unwrap();
    let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(seed));
    let batch = padded_batch(t, b, cfg.classes(), seed + 1);
    check_model_per_example(&model, &params, &batch).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    check_model_gradients(&model, &params, &batch, seed + 2)
        .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
}

#[test]
fn lstm_lm_one_layer_oracles() {
    oracles(&lstm(11, 5, 7, 1, 0.3), 6, 5, 1);
}

#[test]
fn lstm_lm_two_layer_oracles() {
    oracles(&lstm(9, 4, 6, 2, 0.2), 5, 4, 2);
}

#[test]
fn gru_lm_oracles() {
    oracles(&gru(10, 4, 6, 1, 0.0), 6, 5, 3);
    oracles(&gru(8, 3, 5, 2, 0.1), 4, 4, 4);
}

#[test]
fn oracles_with_several_thread_blocks() {
    // B = 19 splits the recurrences into blocks of examples run on different threads.
    oracles(&lstm(7, 3, 4, 2, 0.0), 3, 19, 5);
    oracles(&gru(7, 3, 4, 1, 0.0), 3, 19, 6);
}

#[test]
fn configs_are_validated() {
    assert!(lstm(10, 4, 4, 0, 0.0).build().is_err());
    assert!(lstm(10, 4, 4, 4, 0.0).build().is_err());
    assert!(gru(1, 4, 4, 1, 0.0).build().is_err());
    assert!(lstm(10, 4, 4, 1, 1.0).build().is_err());
    let m = lstm(10, 4, 6, 3, 0.5).build().unwrap();
    let names: Vec<&str> = m.param_specs().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[0], "embedding.weight");
    assert_eq!(
        names[1..5],
        [
            "lstm0.weight_ih",
            "lstm0.weight_hh",
            "lstm0.bias_ih",
            "lstm0.bias_hh"
        ]
    );
    assert_eq!(names[names.len() - 2..], ["output.weight", "output.bias"]);
    // Dropout only between stacked layers and before the projection: 3 of them here.
    assert_eq!(
        m.layer_names()
            .iter()
            .filter(|n| n.starts_with("dropout"))
            .count(),
        3
    );
    let mlp = ModelConfig::Mlp {
        input: 3,
        hidden: vec![],
        classes: 2,
        activation: memaudit_engine::layers::ActivationKind::Relu,
        dropout: 0.0,
        input_dropout: 0.0,
    };
    assert!(mlp.incremental_lm(&[0.0; 8]).is_err());
    // A parameter vector of the wrong length is an error, not a panic.
    assert!(lstm(10, 4, 6, 1, 0.0).incremental_lm(&[0.0; 5]).is_err());
}

/// Log-softmax of each row in f64.
fn log_softmax(logits: &[f32], v: usize) -> Vec<f64> {
    logits
        .chunks(v)
        .flat_map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lz = m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            r.iter().map(move |&x| x as f64 - lz).collect::<Vec<_>>()
        })
        .collect()
}

/// `IncrementalLm::step`, fed the sequences token by token, must reproduce the full forward's
/// log-probabilities at every position. Both use the same f32 kernels but different GEMM
/// blockings and the step folds the layer-0 input projection into a per-token table, so they
/// agree to f32 rounding: tolerance 2e-5 absolute on log-probs of magnitude <= ~5.
fn incremental_matches_forward(cfg: &ModelConfig, t: usize, b: usize, seed: u64) {
    let model = cfg.build().unwrap();
    let v = cfg.classes();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = model.init_params(&mut rng);
    let ids: Vec<u32> = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
    let input = Value::Tokens(TokenInput {
        seq_len: t,
        batch: b,
        ids: ids.clone(),
    });
    let logits = model.forward(&params, &input, false, &mut rng).unwrap();
    let want = log_softmax(&logits.data, v);
    let lm = cfg.incremental_lm(&params).unwrap();
    assert_eq!(lm.vocab_size(), v);
    let mut state = lm.initial_state(b);
    let mut lp = vec![0.0f32; b * v];
    let mut worst = 0.0f64;
    for step in 0..t {
        lm.step(&mut state, &ids[step * b..(step + 1) * b], &mut lp);
        for (g, w) in lp.iter().zip(&want[step * b * v..(step + 1) * b * v]) {
            worst = worst.max((*g as f64 - w).abs());
        }
    }
    assert!(worst < 2e-5, "{cfg:?}: worst |log-prob error| {worst:e}");

    // Batched states: continuing a gathered / repeated state equals continuing the originals.
    let mut s1 = lm.initial_state(b);
    let first: Vec<u32> = ids[..b].to_vec();
    lm.step(&mut s1, &first, &mut lp);
    let idx: Vec<usize> = (0..b).rev().chain([0, 0]).collect();
    let mut g = s1.gather(&idx);
    let next: Vec<u32> = idx.iter().map(|&i| ids[b + i]).collect();
    let mut lp_g = vec![0.0f32; idx.len() * v];
    lm.step(&mut g, &next, &mut lp_g);
    lm.step(&mut s1, &ids[b..2 * b], &mut lp);
    // A row's position inside a GEMM block changes its rounding slightly: 1e-6 absolute.
    let close = |a: &[f32], c: &[f32]| a.iter().zip(c).all(|(x, y)| (x - y).abs() <= 1e-6);
    for (k, &i) in idx.iter().enumerate() {
        assert!(close(g.row(k), s1.row(i)), "state row {k} (from {i})");
        assert!(
            close(&lp_g[k * v..(k + 1) * v], &lp[i * v..(i + 1) * v]),
            "log-probs row {k}"
        );
    }
}

#[test]
fn incremental_step_reproduces_full_forward() {
    // b = 70 rows make several step blocks (>= 32 rows each) on the thread pool.
    incremental_matches_forward(&lstm(13, 6, 9, 1, 0.0), 7, 70, 1);
    incremental_matches_forward(&lstm(13, 6, 9, 2, 0.5), 5, 5, 2);
    incremental_matches_forward(&lstm(11, 4, 7, 3, 0.0), 4, 33, 3);
    incremental_matches_forward(&gru(13, 6, 9, 1, 0.0), 7, 70, 4);
    incremental_matches_forward(&gru(11, 4, 7, 3, 0.2), 4, 33, 5);
}

#[test]
fn incremental_state_width_and_empty_batch() {
    let cfg = lstm(10, 4, 6, 2, 0.0);
    let params = cfg
        .build()
        .unwrap()
        .init_params(&mut ChaCha8Rng::seed_from_u64(0));
    let lm = cfg.incremental_lm(&params).unwrap();
    assert_eq!(lm.state_width(), 2 * 2 * 6);
    let mut s = LmState::zeros(0, lm.state_width());
    lm.step(&mut s, &[], &mut []);
    let g = gru(10, 4, 6, 3, 0.0);
    let params = g
        .build()
        .unwrap()
        .init_params(&mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(g.incremental_lm(&params).unwrap().state_width(), 3 * 6);
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// PyTorch (float64) against our f32 LSTM and GRU LMs on the same parameters: logits within
/// 2e-5 absolute (|logits| ~1, f32 rounding through two recurrent layers), loss within 1e-5
/// relative, gradient within 1e-4 x max |gradient| (the finite-difference oracle's tolerance).
#[test]
fn lstm_and_gru_agree_with_pytorch() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("data/rnn_torch_fixture.json")).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let cfg: ModelConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let model = cfg.build().unwrap();
        // Same names, shapes and order as PyTorch's state dict.
        let layout = case["layout"].as_array().unwrap();
        assert_eq!(layout.len(), model.param_specs().len());
        for (spec, l) in model.param_specs().iter().zip(layout) {
            assert_eq!(spec.name, l["name"].as_str().unwrap());
            let shape: Vec<usize> = l["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(spec.shape, shape, "{}", spec.name);
        }
        let params = f32s(&case["params"]);
        let (t, b) = (
            case["seq_len"].as_u64().unwrap() as usize,
            case["batch"].as_u64().unwrap() as usize,
        );
        let batch = Batch {
            input: Value::Tokens(TokenInput {
                seq_len: t,
                batch: b,
                ids: u32s(&case["tokens"]),
            }),
            targets: u32s(&case["targets"]),
            mask: Some(f32s(&case["mask"])),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let logits = model
            .forward(&params, &batch.input, false, &mut rng)
            .unwrap();
        let want = f64s(&case["logits"]);
        let worst = logits
            .data
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-5, "{cfg:?}: logits differ by {worst:e}");

        let out = model
            .gradients(
                &params,
                &batch,
                GradRequest {
                    clipping: None,
                    input_grad: false,
                    train: false,
                    rng: &mut rng,
                },
            )
            .unwrap();
        let loss = case["loss"].as_f64().unwrap();
        assert!(
            (out.loss_sum - loss).abs() < 1e-5 * loss.abs(),
            "{cfg:?}: loss {} vs PyTorch {loss}",
            out.loss_sum
        );
        let want = f64s(&case["grad"]);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = out
            .grad
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4 * scale,
            "{cfg:?}: gradient differs by {worst:e} (max |grad| {scale:e})"
        );
    }
}
