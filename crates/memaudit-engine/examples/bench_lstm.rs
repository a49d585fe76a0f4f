//! Step times of the recurrent language models (issue 2's LSTM benchmark shapes, plus the GRU
//! variant of the char LM) and the throughput of `IncrementalLm::step` on a huge batch (trie
//! scoring of canary candidates).
//!
//! A step here is `Model::gradients` (forward, softmax cross-entropy, backward, and in the clipped
//! variant per-example norms + clipped sums, flat C = 1) followed by an SGD update of the averaged
//! gradient; DP noise is not included (it belongs to the trainer and is the same for every model
//! of a given parameter count). Median of the repeats after warm-up.
//!
//! ```text
//! cargo run -p memaudit-engine --release --example bench_lstm [-- REPEATS [NAME-FILTER]]
//! ```
//! Threads: rayon's default (all cores) unless `RAYON_NUM_THREADS` is set.

use memaudit_engine::stats::median;
use std::time::Instant;

use memaudit_engine::optim::{Optimizer, OptimizerConfig, Schedule};
use memaudit_engine::{Batch, Clipping, GradRequest, ModelConfig, TokenInput, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn lm_batch(vocab: usize, seq: usize, batch: usize, rng: &mut ChaCha8Rng) -> Batch {
    let ids: Vec<u32> = (0..seq * batch)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let targets: Vec<u32> = (0..seq * batch)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    Batch {
        input: Value::Tokens(TokenInput {
            seq_len: seq,
            batch,
            ids,
        }),
        targets,
        mask: None,
    }
}

fn bench_training(name: &str, cfg: &ModelConfig, seq: usize, batch: usize, repeats: usize) {
    let model = cfg.build().expect("model");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut params = model.init_params(&mut rng);
    let data = lm_batch(cfg.classes(), seq, batch, &mut rng);
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        Schedule::Constant,
        params.len(),
    )
    .unwrap();
    let clip = Clipping::Flat(1.0);
    let mut time = |clipping: Option<&Clipping>| -> f64 {
        let mut times = Vec::with_capacity(repeats);
        for r in 0..repeats + 3 {
            let t0 = Instant::now();
            let mut out = model
                .gradients(
                    &params,
                    &data,
                    GradRequest {
                        clipping,
                        input_grad: false,
                        train: true,
                        rng: &mut rng,
                    },
                )
                .expect("gradients");
            let inv = 1.0 / batch as f32;
            out.grad.iter_mut().for_each(|g| *g *= inv);
            opt.step(&mut params, &out.grad);
            if r >= 3 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        median(&times)
    };
    // Interleave so that both variants see the same machine load.
    let mut plain = Vec::new();
    let mut clipped = Vec::new();
    for _ in 0..3 {
        plain.push(time(None));
        clipped.push(time(Some(&clip)));
    }
    let (p, c) = (median(&plain), median(&clipped));
    println!(
        "{name}: {} params, T {seq}, B {batch}: plain {p:.2} ms, clipped {c:.2} ms, ratio {:.3}",
        model.num_params(),
        c / p
    );
}

fn bench_incremental(name: &str, cfg: &ModelConfig, rows: usize, repeats: usize) {
    let model = cfg.build().expect("model");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let params = model.init_params(&mut rng);
    let lm = cfg.incremental_lm(&params).expect("incremental lm");
    let v = lm.vocab_size();
    let mut state = lm.initial_state(rows);
    let mut lp = vec![0.0f32; rows * v];
    let mut times = Vec::new();
    for r in 0..repeats + 1 {
        let tokens: Vec<u32> = (0..rows).map(|_| rng.random_range(0..v as u32)).collect();
        let t0 = Instant::now();
        lm.step(&mut state, &tokens, &mut lp);
        if r >= 1 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let m = median(&times);
    println!(
        "{name}: IncrementalLm::step at {rows} rows: {m:.1} ms ({:.2} M rows/s)",
        rows as f64 / m / 1e3
    );
}

/// A named benchmark; it takes its own name for the printed line.
type Bench<'a> = &'a dyn Fn(&str);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeats: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    // Optional filter: run only the benchmarks whose name contains this string.
    let only = args.get(2).cloned().unwrap_or_default();
    let want = |name: &str| name.contains(only.as_str());
    println!("threads: {}", rayon::current_num_threads());
    let small = ModelConfig::LstmLm {
        vocab: 50,
        embed: 32,
        hidden: 200,
        layers: 1,
        dropout: 0.0,
    };
    let char2 = ModelConfig::LstmLm {
        vocab: 60,
        embed: 32,
        hidden: 200,
        layers: 2,
        dropout: 0.0,
    };
    let gru2 = ModelConfig::GruLm {
        vocab: 60,
        embed: 32,
        hidden: 200,
        layers: 2,
        dropout: 0.0,
    };
    let half = repeats.div_ceil(2);
    let few = repeats.min(5);
    let runs: [(&str, Bench<'_>); 5] = [
        ("train LSTM LM V50 E32 1x200", &|n| {
            bench_training(n, &small, 20, 64, repeats)
        }),
        ("train char LSTM LM V60 E32 2x200", &|n| {
            bench_training(n, &char2, 50, 64, half)
        }),
        ("train char GRU LM V60 E32 2x200", &|n| {
            bench_training(n, &gru2, 50, 64, half)
        }),
        ("step LSTM LM V50 E32 1x200", &|n| {
            bench_incremental(n, &small, 65_536, few)
        }),
        ("step char LSTM LM V60 E32 2x200", &|n| {
            bench_incremental(n, &char2, 65_536, few)
        }),
    ];
    for (name, run) in runs {
        if want(name) {
            run(name);
        }
    }
}
