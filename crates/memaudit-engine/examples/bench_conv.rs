//! Step times of the CNNs, plain and with per-example clipping (issue 2's benchmark shapes):
//! the tutorial CNN at batch 256 and the GroupNorm CNN at batch 64, both on 1x28x28 input.
//!
//! A step is forward, backward, (clipping and Gaussian noise), averaging and an SGD update; data
//! loading is excluded. Prints the median and spread over repeats and the clipped/plain ratio.
//!
//! ```text
//! cargo run -p memaudit-engine --release --example bench_conv [-- --repeats 30 --threads 2]
//! ```
//!
//! With `--mnist DIR` (a folder holding the four IDX files `train-images-idx3-ubyte` etc.) it
//! instead trains the chosen model (`--model tutorial|groupnorm`, `--epochs`, `--clip C` for
//! DP-style clipping with noise multiplier `--sigma`) and prints test accuracy after each epoch.

use std::time::Instant;

use memaudit_engine::optim::{Optimizer, OptimizerConfig, Schedule};
use memaudit_engine::{Batch, Clipping, GradRequest, Model, ModelConfig, Tensor, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use rand_distr::{Distribution, StandardNormal};

struct Args {
    repeats: usize,
    threads: Option<usize>,
    mnist: Option<String>,
    model: String,
    epochs: usize,
    clip: Option<f32>,
    sigma: f32,
    lr: f32,
    batch: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        repeats: 20,
        threads: None,
        mnist: None,
        model: "groupnorm".into(),
        epochs: 2,
        clip: None,
        sigma: 0.0,
        lr: 0.05,
        batch: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{flag} needs a value (see the doc comment)"))
        };
        match flag.as_str() {
            "--repeats" => a.repeats = val().parse().expect("--repeats: an integer"),
            "--threads" => a.threads = Some(val().parse().expect("--threads: an integer")),
            "--mnist" => a.mnist = Some(val()),
            "--model" => a.model = val(),
            "--epochs" => a.epochs = val().parse().expect("--epochs: an integer"),
            "--clip" => a.clip = Some(val().parse().expect("--clip: a number")),
            "--sigma" => a.sigma = val().parse().expect("--sigma: a number"),
            "--lr" => a.lr = val().parse().expect("--lr: a number"),
            "--batch" => a.batch = val().parse().expect("--batch: an integer"),
            other => panic!("unknown flag {other} (see the doc comment of bench_conv.rs)"),
        }
    }
    a
}

/// One optimisation step; returns the loss sum.
#[allow(clippy::too_many_arguments)]
fn step(
    model: &Model,
    params: &mut [f32],
    opt: &mut Optimizer,
    batch: &Batch,
    clip: Option<&Clipping>,
    sigma: f32,
    noise_rng: &mut ChaCha20Rng,
    rng: &mut ChaCha8Rng,
) -> f64 {
    let out = model
        .gradients(
            params,
            batch,
            GradRequest {
                clipping: clip,
                input_grad: false,
                train: true,
                rng,
            },
        )
        .expect("gradients");
    let mut g = out.grad;
    if let Some(c) = clip {
        let std = sigma * c.sensitivity() as f32;
        for v in g.iter_mut() {
            let z: f32 = StandardNormal.sample(noise_rng);
            *v += std * z;
        }
    }
    let inv = 1.0 / batch.len().max(1) as f32;
    for v in g.iter_mut() {
        *v *= inv;
    }
    opt.step(params, &g);
    out.loss_sum
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median_ms(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn bench(name: &str, cfg: ModelConfig, batch_size: usize, repeats: usize) {
    let model = cfg.build().expect("model");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut params = model.init_params(&mut rng);
    let batch = Batch {
        input: Value::Dense(Tensor {
            data: (0..batch_size * 28 * 28)
                .map(|_| rng.random_range(0.0f32..1.0))
                .collect(),
            shape: vec![batch_size, 1, 28, 28],
        }),
        targets: (0..batch_size as u32).map(|i| i % 10).collect(),
        mask: None,
    };
    let mut noise = ChaCha20Rng::seed_from_u64(2);
    let mut times = |clip: Option<&Clipping>| {
        let mut opt = Optimizer::new(
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            Schedule::Constant,
            params.len(),
        )
        .unwrap();
        let mut v = Vec::with_capacity(repeats);
        for r in 0..repeats + 3 {
            let t = Instant::now();
            step(
                &model,
                &mut params,
                &mut opt,
                &batch,
                clip,
                1.0,
                &mut noise,
                &mut rng,
            );
            if r >= 3 {
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        median_ms(v)
    };
    let plain = times(None);
    let clip = Clipping::Flat(1.0);
    let clipped = times(Some(&clip));
    println!(
        "{name:<28} b{batch_size:<4} params {:>7}  plain {:7.2} ms [{:.2}-{:.2}]  clipped {:7.2} ms \
         [{:.2}-{:.2}]  ratio {:.2}",
        model.num_params(),
        plain.0,
        plain.1,
        plain.2,
        clipped.0,
        clipped.1,
        clipped.2,
        clipped.0 / plain.0
    );
}

/// IDX file (LeCun's MNIST format): big-endian magic, dims, then u8 data.
fn read_idx(path: &std::path::Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ndim = b[3] as usize;
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let data = b[4 + 4 * ndim..].to_vec();
    assert_eq!(
        data.len(),
        dims.iter().product::<usize>(),
        "{}",
        path.display()
    );
    (dims, data)
}

fn mnist_split(dir: &str, prefix: &str) -> (Vec<f32>, Vec<u32>) {
    let d = std::path::Path::new(dir);
    let (_, x) = read_idx(&d.join(format!("{prefix}-images-idx3-ubyte")));
    let (_, y) = read_idx(&d.join(format!("{prefix}-labels-idx1-ubyte")));
    // TF Privacy's tutorial scales pixels to [0, 1].
    (
        x.iter().map(|&v| v as f32 / 255.0).collect(),
        y.iter().map(|&v| v as u32).collect(),
    )
}

fn train(a: &Args, dir: &str) {
    let cfg = match a.model.as_str() {
        "tutorial" => ModelConfig::TutorialCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
        "groupnorm" => ModelConfig::GroupNormCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
        m => panic!("--model {m}: use tutorial or groupnorm"),
    };
    let model = cfg.build().unwrap();
    let (xtr, ytr) = mnist_split(dir, "train");
    let (xte, yte) = mnist_split(dir, "t10k");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut noise = ChaCha20Rng::seed_from_u64(4);
    let mut params = model.init_params(&mut rng);
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            lr: a.lr,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        Schedule::Constant,
        params.len(),
    )
    .unwrap();
    let clip = a.clip.map(Clipping::Flat);
    let pix = 28 * 28;
    let n = ytr.len();
    let make = |x: &[f32], y: &[u32], idx: &[usize]| Batch {
        input: Value::Dense(Tensor {
            data: idx
                .iter()
                .flat_map(|&i| x[i * pix..(i + 1) * pix].iter().copied())
                .collect(),
            shape: vec![idx.len(), 1, 28, 28],
        }),
        targets: idx.iter().map(|&i| y[i]).collect(),
        mask: None,
    };
    for epoch in 1..=a.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let t = Instant::now();
        let mut loss = 0.0;
        for chunk in order.chunks(a.batch) {
            let b = make(&xtr, &ytr, chunk);
            loss += step(
                &model,
                &mut params,
                &mut opt,
                &b,
                clip.as_ref(),
                a.sigma,
                &mut noise,
                &mut rng,
            );
        }
        let secs = t.elapsed().as_secs_f64();
        let mut correct = 0;
        let idx: Vec<usize> = (0..yte.len()).collect();
        for chunk in idx.chunks(500) {
            let b = make(&xte, &yte, chunk);
            let logits = model.forward(&params, &b.input, false, &mut rng).unwrap();
            for (r, row) in logits.data.chunks(10).enumerate() {
                let arg = (0..10)
                    .max_by(|&i, &j| row[i].partial_cmp(&row[j]).unwrap())
                    .unwrap();
                correct += (arg as u32 == b.targets[r]) as usize;
            }
        }
        println!(
            "epoch {epoch}: train loss {:.4}, test accuracy {:.2}% ({secs:.1} s)",
            loss / n as f64,
            100.0 * correct as f64 / yte.len() as f64
        );
    }
}

fn main() {
    let a = parse_args();
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("thread pool");
    }
    if let Some(dir) = a.mnist.clone() {
        train(&a, &dir);
        return;
    }
    println!(
        "threads {}, median of {} steps (min-max in brackets)",
        rayon::current_num_threads(),
        a.repeats
    );
    bench(
        "tutorial CNN (TF Privacy)",
        ModelConfig::TutorialCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
        256,
        a.repeats,
    );
    bench(
        "GroupNorm CNN",
        ModelConfig::GroupNormCnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        },
        64,
        a.repeats,
    );
    if let Some(mb) = peak_rss_mb() {
        println!("peak RSS {mb:.0} MB");
    }
}
