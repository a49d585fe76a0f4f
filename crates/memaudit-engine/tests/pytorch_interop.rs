//! PyTorch interchange (issue 17): folders written by PyTorch import with the logits PyTorch
//! computed, export -> import is exact for every model family, and every malformed folder is
//! refused with the tensor (and both shapes) named. No torch needed: the PyTorch side is the
//! committed fixture of scripts/make_pytorch_fixture.py.

use std::fs;
use std::path::{Path, PathBuf};

use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::optim::{Optimizer, OptimizerConfig, Schedule};
use memaudit_engine::pytorch::{
    self, CanaryScoring, ExportRequest, ExportVocab, PROBE_TOLERANCE, ProbeInput, PytorchError,
};
use rand::SeedableRng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `input` and `logits` of a probe file.
fn read_probe(path: &Path) -> (ProbeInput, Vec<f32>, Vec<usize>) {
    let bytes = fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let inp = st.tensor("input").unwrap();
    let out = st.tensor("logits").unwrap();
    assert_eq!(inp.dtype(), Dtype::I64);
    let ids = inp
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let logits = out
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (
        ProbeInput::Tokens {
            seq_len: inp.shape()[0],
            batch: inp.shape()[1],
            ids,
        },
        logits,
        out.shape().to_vec(),
    )
}

/// The LSTM and GRU language models written by PyTorch (nn.LSTM / nn.GRU state dicts) give, in
/// memaudit, the logits PyTorch computed for the fixture's fixed input. Tolerance 1e-5 relative
/// to the largest logit: both sides are float32 with different summation orders (observed
/// ~1e-7); a wrong gate order or layout would be off by O(1).
#[test]
fn pytorch_written_language_models_import_with_pytorchs_logits() {
    for (name, family) in [("pytorch_lstm", "lstm_lm"), ("pytorch_gru", "gru_lm")] {
        let dir = fixture(name);
        let imp = pytorch::import(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pytorch::family(&imp.config), family);
        // The import checked the probe itself ...
        let probe = imp.probe.as_ref().expect("the fixture has a probe");
        assert!(probe.relative_difference <= PROBE_TOLERANCE, "{probe:?}");
        assert_eq!(probe.values, 9 * 3 * 20);
        // ... and so does this test, from the file, with memaudit's own forward pass.
        let (input, expected, shape) = read_probe(&dir.join(pytorch::PROBE_FILE));
        let ours = pytorch::logits(&imp.config, &imp.params, &input).unwrap();
        assert_eq!(ours.shape, shape);
        let rel = pytorch::relative_difference(&ours.data, &expected);
        assert!(rel <= 1e-5, "{name}: relative difference {rel:e}");
        // The logits are not trivially small: the comparison has something to compare.
        let max = expected.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.5, "{name}: largest logit {max}");
        // The incremental (one step at a time) inference that exposure uses agrees too.
        let lm = imp.config.incremental_lm(&imp.params).unwrap();
        let ProbeInput::Tokens {
            seq_len,
            batch,
            ids,
        } = &input
        else {
            unreachable!()
        };
        let v = lm.vocab_size();
        let mut state = lm.initial_state(*batch);
        let mut lp = vec![0.0f32; batch * v];
        for t in 0..*seq_len {
            let tok: Vec<u32> = ids[t * batch..(t + 1) * batch]
                .iter()
                .map(|&x| x as u32)
                .collect();
            lm.step(&mut state, &tok, &mut lp);
            for b in 0..*batch {
                let row = &expected[(t * batch + b) * v..(t * batch + b + 1) * v];
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
                for (j, &x) in row.iter().enumerate() {
                    let d = (lp[b * v + j] - (x - lse)).abs();
                    assert!(d < 1e-5, "{name}: step {t} row {b} token {j}: {d}");
                }
            }
        }
        let vocab = imp.vocab.expect("the fixture has a vocabulary");
        assert_eq!(vocab.tokens.len(), 20);
        assert_eq!(vocab.canary_scoring.context_token_ids, vec![0]);
    }
}

/// The tutorial CNN written by PyTorch at 1x17x15 (TF 'same' padding of conv1 asymmetric, an
/// explicit nn.ZeroPad2d): memaudit's 'same' convolution, channels-first flattening and kernel
/// layout give PyTorch's logits. Tolerance as above.
#[test]
fn a_pytorch_written_cnn_with_asymmetric_padding_imports_with_pytorchs_logits() {
    let dir = fixture("pytorch_cnn");
    let imp = pytorch::import(&dir).unwrap();
    assert_eq!(
        imp.config,
        ModelConfig::TutorialCnn {
            channels: 1,
            height: 17,
            width: 15,
            classes: 3
        }
    );
    let probe = imp.probe.expect("the fixture has a probe");
    assert!(probe.relative_difference <= 1e-5, "{probe:?}");
    assert_eq!(probe.values, 4 * 3);
    assert!(imp.vocab.is_none() && imp.optimizer.is_none());
}

fn small_configs() -> Vec<ModelConfig> {
    vec![
        ModelConfig::Mlp {
            input: 6,
            hidden: vec![5, 4],
            classes: 3,
            activation: ActivationKind::Tanh,
            dropout: 0.2,
            input_dropout: 0.1,
        },
        ModelConfig::SparseLogReg {
            features: 30,
            classes: 2,
        },
        ModelConfig::TutorialCnn {
            channels: 1,
            height: 16,
            width: 16,
            classes: 4,
        },
        // 17x15: TF 'same' padding is asymmetric in one axis (an nn.ZeroPad2d is described).
        ModelConfig::TutorialCnn {
            channels: 2,
            height: 17,
            width: 15,
            classes: 3,
        },
        ModelConfig::GroupNormCnn {
            channels: 1,
            height: 8,
            width: 8,
            classes: 3,
        },
        ModelConfig::LstmLm {
            vocab: 9,
            embed: 4,
            hidden: 5,
            layers: 3,
            dropout: 0.1,
        },
        ModelConfig::GruLm {
            vocab: 9,
            embed: 4,
            hidden: 5,
            layers: 1,
            dropout: 0.0,
        },
    ]
}

fn vocab_for(cfg: &ModelConfig) -> Option<ExportVocab> {
    matches!(cfg, ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. }).then(|| ExportVocab {
        format: pytorch::VOCAB_FORMAT.into(),
        kind: "char".into(),
        tokens: (0..cfg.classes())
            .map(|i| char::from(b'a' + i as u8).to_string())
            .collect(),
        unk: None,
        eos: None,
        canary_scoring: CanaryScoring::memaudit(vec![0], None),
    })
}

/// Random parameters and a few Adam steps, so every optimizer buffer holds distinct values.
fn trained_state(cfg: &ModelConfig) -> (Vec<f32>, Optimizer) {
    let model = cfg.build().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut params = model.init_params(&mut rng);
    let mut opt = Optimizer::new(
        OptimizerConfig::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        Schedule::Constant,
        params.len(),
    )
    .unwrap();
    for k in 0..3 {
        let g: Vec<f32> = params
            .iter()
            .enumerate()
            .map(|(i, p)| p * 0.3 + ((i + k) % 7) as f32 * 0.01)
            .collect();
        opt.step(&mut params, &g);
    }
    (params, opt)
}

fn export_to(dir: &Path, cfg: &ModelConfig, params: &[f32], opt: &Optimizer) {
    let vocab = vocab_for(cfg);
    pytorch::export(
        dir,
        &ExportRequest {
            config: cfg,
            params,
            optimizer: Some((&opt.config, &opt.state)),
            vocab: vocab.as_ref(),
            memaudit: serde_json::json!({"step": 3}),
        },
    )
    .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
}

/// Export then import gives back the exact parameters, optimizer state and so logits, for every
/// model family (identical bits: nothing is recomputed, only renamed).
#[test]
fn export_then_import_is_exact_for_every_family() {
    for cfg in small_configs() {
        let dir = tempfile::tempdir().unwrap();
        let (params, opt) = trained_state(&cfg);
        export_to(dir.path(), &cfg, &params, &opt);
        let imp = pytorch::import(dir.path()).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        assert_eq!(imp.config, cfg);
        assert_eq!(imp.params, params, "{cfg:?}");
        let (ocfg, ostate) = imp.optimizer.expect("optimizer exported");
        assert_eq!(ocfg, opt.config);
        assert_eq!(ostate, opt.state);
        assert_eq!(imp.export.memaudit["step"], 3);
        // The probe was written from these parameters: identical logits.
        let probe = imp.probe.unwrap();
        assert_eq!(probe.relative_difference, 0.0, "{cfg:?}");
        let input = pytorch::probe_input(&cfg);
        let a = pytorch::logits(&cfg, &params, &input).unwrap();
        let b = pytorch::logits(&imp.config, &imp.params, &input).unwrap();
        assert_eq!(a, b);
        assert_eq!(imp.vocab, vocab_for(&cfg));
    }
}

/// The names PyTorch's modules give: nn.LSTM's multi-layer keys, everything else as memaudit
/// names it; asymmetric 'same' padding described as an explicit nn.ZeroPad2d.
#[test]
fn pytorch_names_and_modules() {
    let lstm = ModelConfig::LstmLm {
        vocab: 9,
        embed: 4,
        hidden: 5,
        layers: 2,
        dropout: 0.0,
    };
    let names: Vec<(String, String)> = pytorch::tensor_map(&lstm)
        .unwrap()
        .into_iter()
        .map(|t| (t.pytorch, t.memaudit))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        names,
        pairs(&[
            ("embedding.weight", "embedding.weight"),
            ("lstm.weight_ih_l0", "lstm0.weight_ih"),
            ("lstm.weight_hh_l0", "lstm0.weight_hh"),
            ("lstm.bias_ih_l0", "lstm0.bias_ih"),
            ("lstm.bias_hh_l0", "lstm0.bias_hh"),
            ("lstm.weight_ih_l1", "lstm1.weight_ih"),
            ("lstm.weight_hh_l1", "lstm1.weight_hh"),
            ("lstm.bias_ih_l1", "lstm1.bias_ih"),
            ("lstm.bias_hh_l1", "lstm1.bias_hh"),
            ("output.weight", "output.weight"),
            ("output.bias", "output.bias"),
        ])
    );
    let gn = ModelConfig::GroupNormCnn {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
    };
    let t = pytorch::tensor_map(&gn).unwrap();
    assert_eq!(t[0].pytorch, "conv1.weight");
    assert_eq!(t[0].shape, vec![32, 3, 3, 3]);
    assert_eq!(t[1].pytorch, "gn1.weight");
    assert_eq!(t[t.len() - 4].shape, vec![320, 2048]);

    // Through the text form, as config.json holds it (f32 fields print shortest: 0.3, not
    // 0.30000001192092896).
    let json = |cfg: &ModelConfig| -> serde_json::Value {
        serde_json::from_str(&serde_json::to_string(&pytorch::modules(cfg).unwrap()).unwrap())
            .unwrap()
    };
    let odd = json(&ModelConfig::TutorialCnn {
        channels: 1,
        height: 17,
        width: 15,
        classes: 3,
    });
    assert_eq!(
        odd[0],
        serde_json::json!({"name": "pad1", "type": "ZeroPad2d", "padding": [3, 4, 3, 4]})
    );
    assert_eq!(odd[1]["padding"], 0);
    let mnist = json(&ModelConfig::TutorialCnn {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    });
    assert_eq!(
        mnist[0],
        serde_json::json!({"name": "conv1", "type": "Conv2d", "in_channels": 1,
            "out_channels": 16, "kernel_size": 8, "stride": 2, "padding": 3, "bias": true})
    );
    // 26,010 parameters as Keras reports; fc1 takes 32 x 4 x 4.
    assert_eq!(mnist[7]["name"], "fc1");
    assert_eq!(mnist[7]["in_features"], 512);
    let gru = json(&ModelConfig::GruLm {
        vocab: 9,
        embed: 4,
        hidden: 5,
        layers: 2,
        dropout: 0.3,
    });
    assert_eq!(gru[1]["type"], "GRU");
    assert_eq!(
        gru[2],
        serde_json::json!({"name": "dropout", "type": "Dropout", "p": 0.3})
    );
}

/// Rewrite `model.safetensors` of `dir` through `edit` (name, shape, dtype, bytes).
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Dtype, Vec<u8>)>)) {
    let p = dir.join(pytorch::WEIGHTS_FILE);
    let bytes = fs::read(&p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.dtype(), t.data().to_vec()))
        .collect();
    edit(&mut v);
    let views: Vec<(String, TensorView<'_>)> = v
        .iter()
        .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn exported_lstm() -> tempfile::TempDir {
    let cfg = ModelConfig::LstmLm {
        vocab: 9,
        embed: 4,
        hidden: 5,
        layers: 2,
        dropout: 0.0,
    };
    let dir = tempfile::tempdir().unwrap();
    let (params, opt) = trained_state(&cfg);
    export_to(dir.path(), &cfg, &params, &opt);
    dir
}

fn import_error(dir: &Path) -> (PytorchError, String) {
    let e = pytorch::import(dir).expect_err("must be refused");
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    (e, s)
}

#[test]
fn a_renamed_tensor_is_refused_naming_both_names_and_shapes() {
    let dir = exported_lstm();
    rewrite_weights(dir.path(), |v| {
        let t = v.iter_mut().find(|t| t.0 == "lstm.weight_ih_l1").unwrap();
        t.0 = "lstm.weight_ih_l1_reverse".into();
    });
    let (e, s) = import_error(dir.path());
    assert!(matches!(e, PytorchError::Names { .. }), "{s}");
    assert!(
        s.contains("unexpected tensor(s) lstm.weight_ih_l1_reverse [20, 5]")
            && s.contains("missing tensor(s) lstm.weight_ih_l1 [20, 5]")
            && s.contains("model.safetensors"),
        "{s}"
    );
}

#[test]
fn a_wrong_shape_is_refused_naming_the_tensor_and_both_shapes() {
    let dir = exported_lstm();
    // The config claims 6 hidden units; the weights have 5.
    let cp = dir.path().join(pytorch::CONFIG_FILE);
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&cp).unwrap()).unwrap();
    c["architecture"]["hidden"] = 6.into();
    c["modules"] = serde_json::json!([]);
    fs::write(&cp, c.to_string()).unwrap();
    let (e, s) = import_error(dir.path());
    assert!(matches!(e, PytorchError::Shape { .. }), "{s}");
    assert!(
        s.contains("tensor lstm.weight_ih_l0 has shape [20, 4], the model expects [24, 4]"),
        "{s}"
    );
}

#[test]
fn missing_extra_and_non_f32_tensors_are_refused() {
    let dir = exported_lstm();
    rewrite_weights(dir.path(), |v| v.retain(|t| t.0 != "output.bias"));
    let (_, s) = import_error(dir.path());
    assert!(s.contains("missing tensor(s) output.bias [9]"), "{s}");
    assert!(!s.contains("unexpected"), "{s}");

    let dir = exported_lstm();
    rewrite_weights(dir.path(), |v| {
        v.push(("extra.weight".into(), vec![2], Dtype::F32, vec![0; 8]))
    });
    let (_, s) = import_error(dir.path());
    assert!(s.contains("unexpected tensor(s) extra.weight [2]"), "{s}");

    let dir = exported_lstm();
    rewrite_weights(dir.path(), |v| {
        let t = v.iter_mut().find(|t| t.0 == "output.bias").unwrap();
        t.2 = Dtype::F64;
        t.3 = vec![0; 9 * 8];
    });
    let (e, s) = import_error(dir.path());
    assert!(matches!(e, PytorchError::Dtype { .. }), "{s}");
    assert!(s.contains("output.bias is F64"), "{s}");
}

#[test]
fn an_optimizer_file_without_its_buffers_is_refused() {
    // Buffers that are not the optimizer's (Adam keeps exp_avg and exp_avg_sq).
    let dir = exported_lstm();
    let op = dir.path().join(pytorch::OPTIMIZER_STATE_FILE);
    let mut o: serde_json::Value = serde_json::from_slice(&fs::read(&op).unwrap()).unwrap();
    o["optimizer"] = serde_json::json!({"type": "sgd", "lr": 0.1, "momentum": 0.9});
    fs::write(&op, o.to_string()).unwrap();
    let (_, s) = import_error(dir.path());
    assert!(
        s.contains("optimizer.json") && s.contains("this optimizer needs [(\"momentum\""),
        "{s}"
    );

    let dir = exported_lstm();
    fs::remove_file(dir.path().join(pytorch::OPTIMIZER_FILE)).unwrap();
    let (_, s) = import_error(dir.path());
    assert!(s.contains("optimizer.safetensors: not found"), "{s}");
    // Without either file the weights alone import (the optimizer state is optional).
    fs::remove_file(dir.path().join(pytorch::OPTIMIZER_STATE_FILE)).unwrap();
    assert!(pytorch::import(dir.path()).unwrap().optimizer.is_none());
}

/// Weights that load but compute something else (here one gate block of one layer scaled, as a
/// gate-order mix-up would) are caught by the probe.
#[test]
fn weights_that_disagree_with_the_probe_are_refused() {
    let dir = exported_lstm();
    rewrite_weights(dir.path(), |v| {
        let t = v.iter_mut().find(|t| t.0 == "lstm.weight_hh_l0").unwrap();
        // Swap the f and g row blocks (rows 5..10 and 10..15 of [20, 5]).
        let row = 5 * 4;
        let (f, g) = (
            t.3[5 * row..10 * row].to_vec(),
            t.3[10 * row..15 * row].to_vec(),
        );
        t.3[5 * row..10 * row].copy_from_slice(&g);
        t.3[10 * row..15 * row].copy_from_slice(&f);
    });
    let (e, s) = import_error(dir.path());
    assert!(matches!(e, PytorchError::Probe { .. }), "{s}");
    assert!(s.contains("probe.safetensors"), "{s}");
}

#[test]
fn another_gate_order_or_module_list_is_refused() {
    let dir = exported_lstm();
    let cp = dir.path().join(pytorch::CONFIG_FILE);
    let orig: serde_json::Value = serde_json::from_slice(&fs::read(&cp).unwrap()).unwrap();
    let mut c = orig.clone();
    c["gate_order"] = serde_json::json!(["i", "g", "f", "o"]);
    fs::write(&cp, c.to_string()).unwrap();
    let (_, s) = import_error(dir.path());
    assert!(
        s.contains("gate_order") && s.contains("\"f\", \"g\""),
        "{s}"
    );

    let mut c = orig.clone();
    c["modules"][1]["num_layers"] = 3.into();
    fs::write(&cp, c.to_string()).unwrap();
    let (_, s) = import_error(dir.path());
    assert!(
        s.contains("module 1 is") && s.contains("\"num_layers\":3"),
        "{s}"
    );

    let mut c = orig;
    c["family"] = "transformer_lm".into();
    fs::write(&cp, c.to_string()).unwrap();
    let (_, s) = import_error(dir.path());
    assert!(s.contains("family \"transformer_lm\""), "{s}");
}
