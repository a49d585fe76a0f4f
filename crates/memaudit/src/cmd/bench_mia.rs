//! `memaudit bench mia`: the wall time of a LiRA shadow set, training plus scoring, plain and
//! DP-SGD, on the engine benchmark's shapes (MLP, CNN, LSTM LM).
//!
//! Each shape trains a target and `--pairs` complementary pairs of models through the same path
//! as `memaudit mia --pairs` (`memaudit_audit::mia::shadow`: plan, per-model seeds, cache unit
//! written to a temporary folder), on a seeded synthetic pool of the shape's inputs (random
//! pixels with random labels; random token windows), then computes every model's signal on the
//! pool and runs online and offline LiRA. Per model the time is one sample; the median is
//! reported. `scripts/bench_mia_torch.py` trains the same shadow set (same sizes, epochs, batch,
//! optimiser) with PyTorch and Opacus and prints the ratios.

use memaudit_engine::stats::median;
use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use memaudit_audit::mia::shadow::{self, Queries, ShadowPlan};
use memaudit_audit::mia::{self, Attack, AttackSelection, MiaConfig, ScoreSet, SignalKind};
use memaudit_engine::datasets::{DenseDataset, TokenWindowDataset};
use memaudit_engine::optim::OptimizerConfig;
use memaudit_engine::privacy::AccountantKind;
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{ClipConfig, Dataset, PrivacyConfig, TrainConfig};

use super::bench_engine::shapes;
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shapes (mlp, cnn, lstm, char-lstm), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "mlp,cnn,lstm")]
    pub shapes: Vec<String>,
    /// Modes: plain, dp (DP-SGD, clip 1, noise multiplier 1.1), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "plain,dp")]
    pub modes: Vec<String>,
    /// Complementary pairs: 2 x P shadow models plus the target.
    #[arg(long, default_value_t = 2)]
    pub pairs: usize,
    /// Pool size (each model trains on half).
    #[arg(long, default_value_t = 2048)]
    pub examples: usize,
    /// Epochs of every model.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Batch size (the shape's own when not given: 256 for MLP/CNN, 64 for LSTMs).
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// A seeded synthetic pool with the shape's inputs.
fn pool(model: &memaudit_engine::ModelConfig, seq: usize, n: usize) -> Result<Box<dyn Dataset>> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    Ok(match model {
        memaudit_engine::ModelConfig::LstmLm { vocab, .. } => {
            let v = *vocab as u32;
            let tokens: Vec<u32> = (0..n * seq + 1).map(|_| rng.random_range(0..v)).collect();
            Box::new(TokenWindowDataset::new(tokens, seq)?)
        }
        memaudit_engine::ModelConfig::TutorialCnn {
            channels,
            height,
            width,
            classes,
        } => {
            let f = channels * height * width;
            let x: Vec<f32> = (0..n * f).map(|_| rng.random::<f32>()).collect();
            let y: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..*classes as u32))
                .collect();
            Box::new(DenseDataset::new(x, vec![*channels, *height, *width], y)?)
        }
        memaudit_engine::ModelConfig::Mlp { input, classes, .. } => {
            let x: Vec<f32> = (0..n * input).map(|_| rng.random::<f32>()).collect();
            let y: Vec<u32> = (0..n)
                .map(|_| rng.random_range(0..*classes as u32))
                .collect();
            Box::new(DenseDataset::new(x, vec![*input], y)?)
        }
        other => return Err(user(format!("bench mia: no synthetic pool for {other:?}"))),
    })
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.pairs == 0 || args.epochs == 0 {
        return Err(user("--pairs and --epochs must be at least 1"));
    }
    for m in &args.modes {
        if m != "plain" && m != "dp" {
            return Err(user(format!("--modes {m}: plain or dp")));
        }
    }
    let all = shapes();
    let selected: Vec<_> = args
        .shapes
        .iter()
        .map(|name| {
            all.iter()
                .find(|s| s.name == name)
                .ok_or_else(|| user(format!("--shapes {name}: one of mlp, cnn, lstm, char-lstm")))
        })
        .collect::<Result<_>>()?;
    let threads = rayon::current_num_threads();
    let cache = std::env::temp_dir().join(format!("memaudit-bench-mia-{}", std::process::id()));
    let mut rows = Vec::new();
    let mut text = format!(
        "bench mia: target + {} shadow models per shape and mode, pool {}, each model {} epoch(s) on {} examples, {threads} threads\n{:<10} {:<6} {:>10} {:>10} {:>10} {:>10}\n",
        2 * args.pairs,
        args.examples,
        args.epochs,
        args.examples / 2,
        "shape",
        "mode",
        "model s",
        "train s",
        "score s",
        "total s"
    );
    for shape in selected {
        let batch = args.batch_size.unwrap_or(shape.batch);
        let data = pool(&shape.model, shape.seq_len, args.examples)?;
        let n = data.len();
        let hash = shadow::dataset_hash(data.as_ref()).map_err(|e| user(e.to_string()))?;
        let model = shape.model.build()?;
        for mode in &args.modes {
            ctx.note(format!("bench mia: {} {mode} ...", shape.name));
            let dp = mode == "dp";
            let train = TrainConfig {
                model: shape.model.clone(),
                optimizer: OptimizerConfig::Sgd {
                    lr: 0.05,
                    momentum: 0.0,
                    nesterov: false,
                    weight_decay: 0.0,
                },
                schedule: Default::default(),
                epochs: args.epochs,
                batch_size: batch,
                physical_batch: None,
                // Fixed-size shuffled batches, as the PyTorch/Opacus side (poisson_sampling=False).
                sampling: SamplingMode::Shuffle,
                seed: 0,
                privacy: dp.then_some(PrivacyConfig {
                    noise_multiplier: 1.1,
                    clipping: ClipConfig::Flat { bound: 1.0 },
                    delta: 1e-5,
                    accountant: AccountantKind::Rdp,
                    max_epsilon: None,
                }),
                seeded_noise: true,
            };
            let plan = ShadowPlan::new(train, hash.clone(), n, args.pairs, 1)
                .map_err(|e| user(format!("bench mia {}: {e}", shape.name)))?;
            let _ = std::fs::remove_dir_all(&cache);
            shadow::open_cache(&cache).map_err(|e| user(e.to_string()))?;
            let started = Instant::now();
            let mut per_model = Vec::new();
            let mut params = Vec::new();
            for i in 0..plan.models() {
                let t = Instant::now();
                let m = shadow::train_or_reuse(&plan, i, &cache, data.as_ref())
                    .map_err(|e| user(e.to_string()))?;
                per_model.push(t.elapsed().as_secs_f64());
                params.push(m.params);
            }
            let train_s = started.elapsed().as_secs_f64();
            let scoring = Instant::now();
            let lm = matches!(shape.model, memaudit_engine::ModelConfig::LstmLm { .. });
            let mut sig = Vec::new();
            for p in &params {
                sig.push(if lm {
                    shadow::lm_signals(&model, p, data.as_ref())
                        .map_err(|e| user(e.to_string()))?
                        .0
                } else {
                    shadow::signals(&model, p, data.as_ref(), 1.0, &Queries::identity())
                        .map_err(|e| user(e.to_string()))?
                        .0
                });
            }
            let k = 2 * args.pairs;
            let member: Vec<Vec<bool>> = (0..plan.models()).map(|i| plan.membership(i)).collect();
            let kind = if lm {
                SignalKind::LogLikelihood
            } else {
                SignalKind::LogitConfidence
            };
            let set = ScoreSet::new(
                n,
                1,
                sig[k].clone(),
                k,
                sig[..k].concat(),
                member[..k].concat(),
                kind,
            )
            .and_then(|s| s.with_target_in(member[k].clone()))
            .map_err(|e| user(e.to_string()))?;
            let report = mia::run(
                &set,
                &AttackSelection::Only(vec![Attack::LiraOnline, Attack::LiraOffline]),
                &MiaConfig::default(),
            )
            .map_err(|e| user(e.to_string()))?;
            let score_s = scoring.elapsed().as_secs_f64();
            let auc = report.attacks[0].metrics.as_ref().map(|m| m.auc);
            let med = median(&per_model);
            text += &format!(
                "{:<10} {:<6} {:>10.3} {:>10.2} {:>10.2} {:>10.2}\n",
                shape.name,
                mode,
                med,
                train_s,
                score_s,
                train_s + score_s
            );
            rows.push(json!({
                "shape": shape.name,
                "description": shape.description,
                "mode": mode,
                "models": plan.models(),
                "examples": n,
                "epochs": args.epochs,
                "batch_size": batch,
                "model_seconds": num(med),
                "model_seconds_all": per_model,
                "train_seconds": num(train_s),
                "score_seconds": num(score_s),
                "total_seconds": num(train_s + score_s),
                "lira_online_auc": auc.map(num),
            }));
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    text += "(model s: median seconds to train one model, cache write included; score s: every model's signal on the pool + online and offline LiRA. Synthetic data: the AUC is chance.)";
    Ok(Report::new(
        text,
        json!({"threads": threads, "pairs": args.pairs, "results": rows}),
    ))
}
