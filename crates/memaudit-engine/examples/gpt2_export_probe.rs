//! Write a memaudit-made GPT in GPT-2 layout plus a probe (token ids and memaudit's logits), for
//! `scripts/make_gpt2_fixture.py --check DIR`, which loads the folder with
//! `GPT2LMHeadModel.from_pretrained` and compares logits.
//!
//!     cargo run --release -p memaudit-engine --example gpt2_export_probe -- DIR [untied]

use std::collections::HashMap;

use memaudit_engine::layers::GeluKind;
use memaudit_engine::{ModelConfig, TokenInput, Value, gpt2};
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("usage: gpt2_export_probe DIR [untied]"));
    let tie = args.get(2).map(String::as_str) != Some("untied");
    let cfg = ModelConfig::Gpt {
        vocab: 40,
        n_ctx: 16,
        embed: 24,
        layers: 2,
        heads: 3,
        inner: 96,
        tie,
        gelu: if tie { GeluKind::Tanh } else { GeluKind::Exact },
        ln_eps: 1e-5,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: !tie,
    };
    let model = cfg.build().expect("config");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut params = model.init_params(&mut rng);
    // Perturb LayerNorm scales and biases away from 1 and 0 so that every tensor matters.
    for v in params.iter_mut() {
        *v += rng.random_range(-0.05f32..0.05);
    }
    gpt2::export(&dir, &cfg, &params).expect("export");
    let (b, t) = (2usize, 12usize);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..40)).collect(); // batch-first
    let tm: Vec<u32> = (0..t)
        .flat_map(|s| (0..b).map(move |i| (s, i)))
        .map(|(s, i)| ids[i * t + s])
        .collect();
    let y = model
        .forward(
            &params,
            &Value::Tokens(TokenInput {
                seq_len: t,
                batch: b,
                ids: tm,
            }),
            false,
            &mut rng,
        )
        .expect("forward");
    let v = 40;
    let mut logits = vec![0.0f32; b * t * v];
    for s in 0..t {
        for i in 0..b {
            logits[(i * t + s) * v..][..v].copy_from_slice(&y.data[(s * b + i) * v..][..v]);
        }
    }
    let idb: Vec<u8> = ids.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
    let lb: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        (
            "input_ids".to_string(),
            TensorView::new(Dtype::I64, vec![b, t], &idb).unwrap(),
        ),
        (
            "logits".to_string(),
            TensorView::new(Dtype::F32, vec![b, t, v], &lb).unwrap(),
        ),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(
        dir.join("probe.safetensors"),
        safetensors::serialize(views, Some(meta)).unwrap(),
    )
    .unwrap();
    println!("wrote {}", dir.display());
}
