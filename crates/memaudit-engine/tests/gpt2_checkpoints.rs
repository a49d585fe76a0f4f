//! GPT-2 (Hugging Face `GPT2LMHeadModel`) checkpoints: export then import round trip, the
//! layout details of real checkpoints (Conv1D transposes, optional `transformer.` prefix,
//! `attn.bias` buffers, optional tied `lm_head`), and refusals that name the tensor.

use std::collections::HashMap;
use std::path::Path;

use memaudit_engine::gpt2;
use memaudit_engine::layers::GeluKind;
use memaudit_engine::{ModelConfig, TokenInput, Value};
use rand::SeedableRng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn cfg(tie: bool) -> ModelConfig {
    ModelConfig::Gpt {
        vocab: 13,
        n_ctx: 10,
        embed: 8,
        layers: 2,
        heads: 2,
        inner: 16,
        tie,
        gelu: GeluKind::Tanh,
        ln_eps: 1e-5,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: true,
    }
}

fn logits(cfg: &ModelConfig, params: &[f32]) -> Vec<f32> {
    let model = cfg.build().unwrap();
    let ids: Vec<u32> = (0..10 * 2).map(|k| (k * 7 % 13) as u32).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    model
        .forward(
            params,
            &Value::Tokens(TokenInput {
                seq_len: 10,
                batch: 2,
                ids,
            }),
            false,
            &mut rng,
        )
        .unwrap()
        .data
}

/// Rewrite `dir`'s weights: `f` maps (name, shape, f32 data) to a new list of tensors.
fn rewrite(
    dir: &Path,
    f: impl FnOnce(Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = dir.join(gpt2::WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let d = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, t.shape().to_vec(), d)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let out = f(v);
    let views: Vec<(String, TensorView<'_>)> = out
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn plain(v: Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    v.into_iter()
        .map(|(n, s, d)| (n, Dtype::F32, s, f32_bytes(&d)))
        .collect()
}

#[test]
fn export_then_import_round_trips_tied_and_untied() {
    for tie in [true, false] {
        let c = cfg(tie);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let params = c.build().unwrap().init_params(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        gpt2::export(dir.path(), &c, &params).unwrap();
        let imp = gpt2::import(dir.path()).unwrap();
        assert_eq!(imp.config, c);
        assert_eq!(imp.params, params, "tie {tie}");
        assert!(imp.prefixed);
        // Conv1D layout on disk: c_attn.weight is [in, out] = [8, 24].
        let bytes = std::fs::read(dir.path().join(gpt2::WEIGHTS_FILE)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("transformer.h.0.attn.c_attn.weight")
                .unwrap()
                .shape(),
            [8, 24]
        );
        assert_eq!(st.tensor("lm_head.weight").is_ok(), !tie);
    }
}

/// What real checkpoints carry: no prefix, causal-mask buffers and masked_bias, a stored tied
/// head. They import to the same logits; a square c_proj stored untransposed (the shape check
/// cannot see it) changes the logits, which is why fixtures compare logits.
#[test]
fn real_checkpoint_variants_import() {
    let c = cfg(true);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let params = c.build().unwrap().init_params(&mut rng);
    let want = logits(&c, &params);
    let dir = tempfile::tempdir().unwrap();
    gpt2::export(dir.path(), &c, &params).unwrap();
    rewrite(dir.path(), |v| {
        let wte = v
            .iter()
            .find(|t| t.0 == "transformer.wte.weight")
            .unwrap()
            .clone();
        let mut out = plain(
            v.into_iter()
                .map(|(n, s, d)| (n.trim_start_matches("transformer.").to_string(), s, d))
                .collect(),
        );
        out.push((
            "lm_head.weight".into(),
            Dtype::F32,
            wte.1,
            f32_bytes(&wte.2),
        ));
        for k in 0..2 {
            let mask: Vec<u8> = (0..100).map(|i| u8::from(i % 10 <= i / 10)).collect();
            out.push((
                format!("h.{k}.attn.bias"),
                Dtype::BOOL,
                vec![1, 1, 10, 10],
                mask,
            ));
            out.push((
                format!("h.{k}.attn.masked_bias"),
                Dtype::F32,
                vec![],
                f32_bytes(&[-1e4]),
            ));
        }
        out
    });
    let imp = gpt2::import(dir.path()).unwrap();
    assert!(!imp.prefixed && imp.stored_tied_head && imp.buffers == 4);
    let got = logits(&imp.config, &imp.params);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6);
    }

    // attn.c_proj.weight is square [8, 8]: stored untransposed it loads, with other logits.
    let dir2 = tempfile::tempdir().unwrap();
    gpt2::export(dir2.path(), &c, &params).unwrap();
    rewrite(dir2.path(), |v| {
        plain(
            v.into_iter()
                .map(|(n, s, d)| {
                    if n == "transformer.h.0.attn.c_proj.weight" {
                        let mut t = vec![0.0; 64];
                        for r in 0..8 {
                            for q in 0..8 {
                                t[q * 8 + r] = d[r * 8 + q];
                            }
                        }
                        (n, s, t)
                    } else {
                        (n, s, d)
                    }
                })
                .collect(),
        )
    });
    let imp = gpt2::import(dir2.path()).unwrap();
    let got = logits(&imp.config, &imp.params);
    let diff = got
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff > 1e-4,
        "a transposed c_proj must change the logits ({diff})"
    );
}

#[test]
fn mismatches_are_refused_naming_the_tensor() {
    let c = cfg(true);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let params = c.build().unwrap().init_params(&mut rng);
    let fresh = || {
        let d = tempfile::tempdir().unwrap();
        gpt2::export(d.path(), &c, &params).unwrap();
        d
    };
    // A non-square Conv1D stored in nn.Linear layout: shape error with both shapes.
    let d = fresh();
    rewrite(d.path(), |v| {
        plain(
            v.into_iter()
                .map(|(n, s, d)| {
                    if n == "transformer.h.1.mlp.c_fc.weight" {
                        (n, vec![s[1], s[0]], d)
                    } else {
                        (n, s, d)
                    }
                })
                .collect(),
        )
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("transformer.h.1.mlp.c_fc.weight")
            && e.contains("[16, 8]")
            && e.contains("[8, 16]"),
        "{e}"
    );
    // A missing tensor, an unexpected one, a tied head that differs, a non-causal mask.
    let d = fresh();
    rewrite(d.path(), |v| {
        plain(
            v.into_iter()
                .filter(|t| t.0 != "transformer.ln_f.bias")
                .collect(),
        )
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("transformer.ln_f.bias") && e.contains("missing"),
        "{e}"
    );
    let d = fresh();
    rewrite(d.path(), |mut v| {
        v.push((
            "transformer.h.0.attn.q_proj.weight".into(),
            vec![8, 8],
            vec![0.0; 64],
        ));
        plain(v)
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("unexpected tensor transformer.h.0.attn.q_proj.weight"),
        "{e}"
    );
    let d = fresh();
    rewrite(d.path(), |mut v| {
        v.push(("lm_head.weight".into(), vec![13, 8], vec![0.5; 104]));
        plain(v)
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("lm_head.weight") && e.contains("differs from wte.weight"),
        "{e}"
    );
    let d = fresh();
    rewrite(d.path(), |v| {
        let mut out = plain(v);
        out.push((
            "transformer.h.0.attn.bias".into(),
            Dtype::BOOL,
            vec![1, 1, 10, 10],
            vec![1; 100],
        ));
        out
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("transformer.h.0.attn.bias") && e.contains("causal"),
        "{e}"
    );
    // config.json: a model that is not GPT-2, a width not divisible by the heads.
    let d = fresh();
    let cpath = d.path().join(gpt2::CONFIG_FILE);
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
    j["model_type"] = "llama".into();
    std::fs::write(&cpath, j.to_string()).unwrap();
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(e.contains("model_type"), "{e}");
    j["model_type"] = "gpt2".into();
    j["n_head"] = 3.into();
    std::fs::write(&cpath, j.to_string()).unwrap();
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(e.contains("not divisible by 3 heads"), "{e}");
    // Untied config without lm_head.
    let cu = cfg(false);
    let pu = cu.build().unwrap().init_params(&mut rng);
    let d = tempfile::tempdir().unwrap();
    gpt2::export(d.path(), &cu, &pu).unwrap();
    rewrite(d.path(), |v| {
        plain(v.into_iter().filter(|t| t.0 != "lm_head.weight").collect())
    });
    let e = gpt2::import(d.path()).unwrap_err().to_string();
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
}

/// Read probe.safetensors: `input_ids` int64 `[B, T]` and `logits` float32 `[B, T, V]`
/// (batch-first, as transformers writes them).
fn read_probe(dir: &Path) -> (usize, usize, Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(dir.join("probe.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let (b, t) = (ids.shape()[0], ids.shape()[1]);
    let ids: Vec<u32> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let logits = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (b, t, ids, logits)
}

/// Tiny random GPT-2s built by transformers (scripts/make_gpt2_fixture.py): the hub's layout
/// (no prefix, causal-mask buffers, no lm_head, tied) and save_pretrained's (prefix, untied
/// lm_head, exact GELU, inverse-layer attention scaling, layer_norm_epsilon 1e-6). memaudit's
/// logits must match transformers' within 1e-4 (f32, different summation orders; observed
/// differences are ~1e-6), then survive export + import unchanged.
#[test]
fn transformers_fixtures_give_the_same_logits() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (name, tie) in [("gpt2_tied", true), ("gpt2_untied", false)] {
        let dir = data.join(name);
        let imp = gpt2::import(&dir).unwrap();
        let shape = imp.config.gpt_shape().unwrap();
        assert_eq!(shape.tie, tie, "{name}");
        let (b, t, ids, want) = read_probe(&dir);
        let v = shape.vocab;
        // Batch-first -> time-major.
        let tm: Vec<u32> = (0..t)
            .flat_map(|s| (0..b).map(move |i| (s, i)))
            .map(|(s, i)| ids[i * t + s])
            .collect();
        let model = imp.config.build().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let got = model
            .forward(
                &imp.params,
                &Value::Tokens(TokenInput {
                    seq_len: t,
                    batch: b,
                    ids: tm,
                }),
                false,
                &mut rng,
            )
            .unwrap();
        let mut worst = 0.0f32;
        for s in 0..t {
            for i in 0..b {
                for k in 0..v {
                    let a = got.data[(s * b + i) * v + k];
                    let w = want[(i * t + s) * v + k];
                    worst = worst.max((a - w).abs());
                }
            }
        }
        assert!(worst < 1e-4, "{name}: max |logit difference| {worst}");
        let out = tempfile::tempdir().unwrap();
        gpt2::export(out.path(), &imp.config, &imp.params).unwrap();
        let back = gpt2::import(out.path()).unwrap();
        assert_eq!(back.params, imp.params, "{name}");
        assert_eq!(back.config, imp.config, "{name}");
    }
}
