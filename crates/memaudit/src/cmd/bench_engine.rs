//! `memaudit bench engine` and `memaudit bench dp`: median step times, plain vs DP-SGD, and peak
//! RSS, on the issues' benchmark shapes.
//!
//! A step is forward, backward, (per-example clipping and Gaussian noise for DP), optimizer
//! update; data loading is excluded (one fixed batch). Plain and DP steps are timed *interleaved*
//! in one process so their ratio does not drift with machine load; peak RSS is read
//! (`VmHWM`) in separate child processes that run only plain or only DP steps, so each figure is the
//! peak of that mode alone. `scripts/bench_engine_torch.py` and `scripts/bench_dp_opacus.py` run
//! the same shapes in PyTorch / Opacus and print the ratios side by side.

use memaudit_engine::stats::median;
use std::time::Instant;

use anyhow::{Context, Result};
use memaudit_engine::dp::NoiseSource;
use memaudit_engine::model::{Batch, Clipping, GradRequest};
use memaudit_engine::optim::{Optimizer, OptimizerConfig, Schedule};
use memaudit_engine::tensor::Tensor;
use memaudit_engine::{ModelConfig, TokenInput, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as Json, json};

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only these shapes (mlp, cnn, lstm, char-lstm), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub shapes: Option<Vec<String>>,
    /// Timed steps per mode (after warm-up); the median is reported.
    #[arg(long, default_value_t = 30)]
    pub repeats: usize,
    /// Skip the peak-RSS child processes.
    #[arg(long)]
    pub no_rss: bool,
    /// Internal: run one shape in this process in one mode (plain or dp) and report its peak RSS.
    #[arg(long, hide = true, value_names = ["SHAPE", "MODE"], num_args = 2)]
    pub child: Option<Vec<String>>,
}

/// One benchmark shape.
pub struct Shape {
    pub name: &'static str,
    pub description: &'static str,
    pub model: ModelConfig,
    pub batch: usize,
    pub seq_len: usize,
}

pub fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "mlp",
            description: "MLP 784-256-10 ReLU, batch 256",
            model: ModelConfig::Mlp {
                input: 784,
                hidden: vec![256],
                classes: 10,
                activation: memaudit_engine::layers::ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            },
            batch: 256,
            seq_len: 0,
        },
        Shape {
            name: "cnn",
            description: "MNIST CNN (TF Privacy tutorial), batch 256",
            model: ModelConfig::TutorialCnn {
                channels: 1,
                height: 28,
                width: 28,
                classes: 10,
            },
            batch: 256,
            seq_len: 0,
        },
        Shape {
            name: "lstm",
            description: "LSTM LM vocab 50, emb 32, 1x200, seq 20, batch 64",
            model: ModelConfig::LstmLm {
                vocab: 50,
                embed: 32,
                hidden: 200,
                layers: 1,
                dropout: 0.0,
            },
            batch: 64,
            seq_len: 20,
        },
        Shape {
            name: "char-lstm",
            description: "char LSTM LM vocab 60, emb 32, 2x200, seq 50, batch 64",
            model: ModelConfig::LstmLm {
                vocab: 60,
                embed: 32,
                hidden: 200,
                layers: 2,
                dropout: 0.0,
            },
            batch: 64,
            seq_len: 50,
        },
    ]
}

fn batch_for(shape: &Shape, rng: &mut ChaCha8Rng) -> Batch {
    match &shape.model {
        ModelConfig::LstmLm { vocab, .. } => {
            let n = shape.batch * shape.seq_len;
            let v = *vocab as u32;
            Batch {
                input: Value::Tokens(TokenInput {
                    seq_len: shape.seq_len,
                    batch: shape.batch,
                    ids: (0..n).map(|_| rng.random_range(0..v)).collect(),
                }),
                targets: (0..n).map(|_| rng.random_range(0..v)).collect(),
                mask: None,
            }
        }
        m => {
            let ex: Vec<usize> = match m {
                ModelConfig::Mlp { input, .. } => vec![*input],
                _ => vec![1, 28, 28],
            };
            let mut shape_v = vec![shape.batch];
            shape_v.extend(&ex);
            let n: usize = shape_v.iter().product();
            Batch {
                input: Value::Dense(Tensor {
                    data: (0..n).map(|_| rng.random::<f32>()).collect(),
                    shape: shape_v,
                }),
                targets: (0..shape.batch).map(|_| rng.random_range(0..10)).collect(),
                mask: None,
            }
        }
    }
}

/// A model, its parameters, optimizer, a fixed batch and the DP noise source: everything a step needs.
struct Bench {
    model: memaudit_engine::Model,
    params: Vec<f32>,
    opt: Optimizer,
    batch: Batch,
    noise: NoiseSource,
    rng: ChaCha8Rng,
}

impl Bench {
    fn new(shape: &Shape) -> Result<Self> {
        let model = shape.model.build()?;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let params = model.init_params(&mut rng);
        let opt = Optimizer::new(
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            Schedule::Constant,
            params.len(),
        )?;
        let batch = batch_for(shape, &mut rng);
        Ok(Self {
            model,
            params,
            opt,
            batch,
            noise: NoiseSource::from_os(),
            rng,
        })
    }

    /// One training step; returns its wall time in milliseconds.
    fn step(&mut self, dp: bool) -> Result<f64> {
        let t = Instant::now();
        let clip = Clipping::Flat(1.0);
        let (model, params, batch, rng, noise) = (
            &self.model,
            &self.params,
            &self.batch,
            &mut self.rng,
            &mut self.noise,
        );
        let grads = |rng: &mut ChaCha8Rng| {
            model.gradients(
                params,
                batch,
                GradRequest {
                    clipping: if dp { Some(&clip) } else { None },
                    input_grad: false,
                    train: true,
                    rng,
                },
            )
        };
        let b = batch.len() as f64;
        // The trainer's own DP step: the noise (sigma 1.1, C 1) is drawn alongside the gradient.
        let g = if dp {
            let (out, step_noise) =
                noise.draw_step_noise_alongside(params.len(), 1.1, 1.0, || grads(rng));
            let mut g = out?.grad;
            step_noise.apply(&mut g, b);
            g
        } else {
            let mut g = grads(rng)?.grad;
            let inv = (1.0 / b) as f32;
            g.iter_mut().for_each(|v| *v *= inv);
            g
        };
        self.opt.step(&mut self.params, &g);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Peak resident set size of this process (VmHWM), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn child_rss(shape: &str, mode: &str, repeats: usize) -> Result<Option<u64>> {
    let exe = std::env::current_exe().context("locating the memaudit binary")?;
    let out = std::process::Command::new(exe)
        .args([
            "bench",
            "engine",
            "--child",
            shape,
            mode,
            "--repeats",
            &repeats.to_string(),
            "--json",
            "--quiet",
        ])
        .output()
        .context("running a benchmark child process")?;
    let v: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    Ok(v["peak_rss_bytes"].as_u64())
}

fn find(name: &str) -> Result<Shape> {
    shapes()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| user(format!("--shapes {name}: use mlp, cnn, lstm or char-lstm")))
}

/// Time every selected shape; `title` names the command.
pub fn run_shapes(args: &Args, ctx: &Ctx, title: &str) -> Result<Report> {
    if let Some(c) = &args.child {
        let shape = find(&c[0])?;
        let dp = match c[1].as_str() {
            "plain" => false,
            "dp" => true,
            m => return Err(user(format!("--child mode {m}"))),
        };
        let mut b = Bench::new(&shape)?;
        for _ in 0..args.repeats.clamp(3, 20) {
            b.step(dp)?;
        }
        return Ok(Report::new(
            String::new(),
            json!({ "peak_rss_bytes": peak_rss_bytes() }),
        ));
    }
    if args.repeats == 0 {
        return Err(user("--repeats must be at least 1"));
    }
    let selected: Vec<Shape> = match &args.shapes {
        Some(names) => names.iter().map(|n| find(n)).collect::<Result<_>>()?,
        None => shapes(),
    };
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let mut text = format!(
        "{title}: median step time over {} steps per mode, {threads} threads (plain and DP steps interleaved)\n",
        args.repeats
    );
    text += &format!(
        "{:<10} {:>10} {:>10} {:>8} {:>12} {:>12} {:>8}  {}\n",
        "shape", "plain ms", "dp ms", "dp/plain", "plain RSS MB", "dp RSS MB", "RSS x", "what"
    );
    for shape in &selected {
        ctx.note(format!("timing {} ...", shape.name));
        let mut b = Bench::new(shape)?;
        for _ in 0..3 {
            b.step(false)?;
            b.step(true)?;
        }
        let (mut plain, mut dp) = (Vec::new(), Vec::new());
        for _ in 0..args.repeats {
            plain.push(b.step(false)?);
            dp.push(b.step(true)?);
        }
        let (p, d) = (median(&plain), median(&dp));
        let (rp, rd) = if args.no_rss {
            (None, None)
        } else {
            (
                child_rss(shape.name, "plain", args.repeats)?,
                child_rss(shape.name, "dp", args.repeats)?,
            )
        };
        let mb = |x: Option<u64>| x.map_or(f64::NAN, |v| v as f64 / 1048576.0);
        text += &format!(
            "{:<10} {:>10.2} {:>10.2} {:>8.3} {:>12.1} {:>12.1} {:>8.2}  {}\n",
            shape.name,
            p,
            d,
            d / p,
            mb(rp),
            mb(rd),
            mb(rd) / mb(rp),
            shape.description
        );
        rows.push(json!({
            "shape": shape.name,
            "description": shape.description,
            "parameters": b.model.num_params(),
            "plain_ms": num(p),
            "dp_ms": num(d),
            "dp_over_plain": num(d / p),
            "plain_peak_rss_bytes": rp,
            "dp_peak_rss_bytes": rd,
            "plain_ms_all": plain,
            "dp_ms_all": dp,
        }));
    }
    text += "\n(DP step = per-example clipping at C = 1 over all parameters + Gaussian noise sigma = 1.1 (AES-128-CTR keyed from ChaCha12, drawn alongside the gradient, the trainer's own step) + SGD update)";
    Ok(Report::new(
        text,
        json!({ "threads": threads, "repeats": args.repeats, "results": rows }),
    ))
}
