//! Step times of a small GPT (issue 21's proof shape by default: 4 blocks, width 128, 4 heads,
//! context 128, byte-sized vocabulary) and the throughput of its incremental decoder.
//!
//! A step is `Model::gradients` (forward, loss, backward; the DP variant adds per-example norms
//! and clipped sums at flat C = 1); the optimizer update and DP noise are left out (the same
//! for every model of a given parameter count). Median of the repeats after one warm-up.
//! The decoder figure is `IncrementalLm::step` on `rows` rows at position 20 (a canary's
//! prefix read), the trie walk's unit of work.
//!
//! ```text
//! cargo run -p memaudit-engine --release --example bench_gpt [-- LAYERS WIDTH SEQ BATCH REPEATS]
//! ```

use memaudit_engine::stats::median;
use std::time::Instant;

use memaudit_engine::layers::GeluKind;
use memaudit_engine::{Batch, Clipping, GradRequest, ModelConfig, TokenInput, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("integer arguments"))
        .collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (layers, width, seq, batch, repeats) =
        (get(0, 4), get(1, 128), get(2, 128), get(3, 16), get(4, 5));
    let vocab = 96;
    for tie in [true, false] {
        let cfg = ModelConfig::Gpt {
            vocab,
            n_ctx: seq.max(32),
            embed: width,
            layers,
            heads: 4,
            inner: 4 * width,
            tie,
            gelu: GeluKind::Tanh,
            ln_eps: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
        };
        let model = cfg.build().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let params = model.init_params(&mut rng);
        let ids: Vec<u32> = (0..seq * batch)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        let targets: Vec<u32> = (0..seq * batch)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        let data = Batch {
            input: Value::Tokens(TokenInput {
                seq_len: seq,
                batch,
                ids,
            }),
            targets,
            mask: None,
        };
        let clip = Clipping::Flat(1.0);
        let mut time = |dp: bool| {
            let mut v = Vec::new();
            for r in 0..=repeats {
                let t0 = Instant::now();
                let out = model
                    .gradients(
                        &params,
                        &data,
                        GradRequest {
                            clipping: dp.then_some(&clip),
                            input_grad: false,
                            train: true,
                            rng: &mut rng,
                        },
                    )
                    .unwrap();
                std::hint::black_box(&out.grad);
                if r > 0 {
                    v.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            median(&v)
        };
        let plain = time(false);
        let dp = time(true);
        println!(
            "GPT {layers}x{width} (4 heads, tie {tie}, {} params), T {seq}, B {batch}: plain {plain:.1} ms, DP {dp:.1} ms ({:.2}x)",
            model.num_params(),
            dp / plain
        );
        if tie {
            let lm = cfg.incremental_lm_with_context(&params, 32).unwrap();
            let rows = 1024;
            let mut st = lm.initial_state(rows);
            let mut lp = vec![0.0f32; rows * vocab];
            let tok: Vec<u32> = (0..rows).map(|k| (k % vocab) as u32).collect();
            for _ in 0..20 {
                lm.step(&mut st, &tok, &mut lp);
            }
            let mut v = Vec::new();
            for _ in 0..repeats {
                let mut s = st.clone();
                let t0 = Instant::now();
                lm.step(&mut s, &tok, &mut lp);
                v.push(t0.elapsed().as_secs_f64());
            }
            let m = median(&v);
            println!(
                "  IncrementalLm::step, {rows} rows at position 20 (state {} floats): {:.1} ms ({:.0} k rows/s)",
                lm.state_width(),
                m * 1e3,
                rows as f64 / m / 1e3
            );
        }
    }
}
