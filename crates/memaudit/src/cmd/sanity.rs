//! Sanity checks run before private training ("Three Tools for Practical Differential Privacy",
//! van der Veen et al. 2018, tool 1), printed as a short report and kept in report.html:
//!
//! 1. the accounting of the planned run (RDP and PLD epsilon, the RDP order, the steps);
//! 2. on a held-out sample (never the private training set, so the checks spend no privacy): the
//!    fraction of per-example gradients clipped at C, and the signal-to-noise ratio
//!    `||mean clipped gradient|| / (sigma C sqrt(d) / B)` (the noise spreads over all d
//!    directions, so training still progresses well below 1; larger batches raise it, tool 3);
//! 3. a short noise-free run (clipping only) on that held-out sample: the loss must fall, or the
//!    model, learning rate or clip bound is wrong before any privacy is spent;
//! 4. large-batch advice: the noise multiplier the same epsilon allows at 4x the batch, and the
//!    noise on the averaged gradient it gives (tool 3; `memaudit dp-sweep` measures it).

use anyhow::Result;
use memaudit_engine::model::{Clipping, GradRequest};
use memaudit_engine::optim::{Optimizer, Schedule};
use memaudit_engine::privacy::{self, AccountantKind};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{ClipConfig, Dataset, TrainConfig, evaluate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::output::{fmt_f64, num};

/// The checks' numbers and their text.
pub struct SanityReport {
    pub text: String,
    pub json: Value,
}

const SAMPLE: usize = 512;
const NOISE_FREE_STEPS: usize = 60;

pub fn run(
    cfg: &TrainConfig,
    n_train: usize,
    heldout: &dyn Dataset,
) -> Result<Option<SanityReport>> {
    let Some(p) = &cfg.privacy else {
        return Ok(None);
    };
    let q = cfg.batch_size as f64 / n_train as f64;
    let (n, b, epochs) = (n_train as u64, cfg.batch_size as u64, cfg.epochs as u64);
    let steps = memaudit_engine::ledger::steps_per_epoch(cfg.sampling, n, b) * epochs;
    // The guarantee of the planned run at its own sampling (the ledger's rule).
    let planned = |kind| {
        privacy::planned_epsilon(
            cfg.sampling,
            n,
            b,
            p.noise_multiplier,
            epochs,
            p.delta,
            kind,
        )
    };
    let eps_rdp = planned(AccountantKind::Rdp)?;
    let eps_pld = planned(AccountantKind::Pld).ok();
    let how = match cfg.sampling {
        SamplingMode::Poisson => format!("{steps} Poisson steps at q = {q:.6}"),
        SamplingMode::Shuffle => {
            format!("{steps} shuffled steps ({epochs} epochs, no amplification by sampling)")
        }
    };
    let mut lines = vec![
        "Sanity checks before private training (Three Tools for Practical DP ML):".to_string(),
        format!(
            "  1. accounting: {how}, noise multiplier {:.4}, delta {}: epsilon {} (RDP){}",
            p.noise_multiplier,
            p.delta,
            fmt_f64(eps_rdp),
            eps_pld.map_or(String::new(), |e| format!(", {} (PLD)", fmt_f64(e)))
        ),
    ];
    let mut out = json!({ "planned_steps": steps, "sampling_rate": q, "epsilon_rdp": num(eps_rdp), "epsilon_pld": eps_pld.map(num) });

    let m = heldout.len().min(SAMPLE);
    if m == 0 {
        lines.push("  2-3. skipped: no held-out data to check on".into());
        return Ok(Some(SanityReport {
            text: lines.join("\n"),
            json: out,
        }));
    }
    let model = cfg.model.build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut params = model.init_params(&mut rng);
    let idx: Vec<usize> = (0..m).collect();
    let sample = heldout.batch(&idx);
    let c = match &p.clipping {
        ClipConfig::Flat { bound } => *bound,
        ClipConfig::Adaptive { initial, .. } => *initial,
        ClipConfig::PerLayer { bounds, .. } => bounds.iter().map(|b| b * b).sum::<f64>().sqrt(),
    };
    let clip = Clipping::Flat(c as f32);
    let g = model.gradients(
        &params,
        &sample,
        GradRequest {
            clipping: Some(&clip),
            input_grad: false,
            train: false,
            rng: &mut rng,
        },
    )?;
    let norms = g.norms.unwrap_or_default();
    let clipped = norms.iter().filter(|&&x| x as f64 > c).count() as f64 / m as f64;
    let mut sorted = norms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) as f64;
    let mean_norm = (g.grad.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()).sqrt() / m as f64;
    let d = params.len() as f64;
    let noise_norm = p.noise_multiplier * c * d.sqrt() / cfg.batch_size as f64;
    let snr = if noise_norm > 0.0 {
        mean_norm / noise_norm
    } else {
        f64::INFINITY
    };
    lines.push(format!(
        "  2. gradients at initialisation, {m} held-out examples: {:.1}% clipped at C = {} (median norm {}); signal-to-noise ||mean clipped gradient|| / (sigma C sqrt(d) / B) = {} / {} = {}",
        clipped * 100.0,
        fmt_f64(c),
        fmt_f64(median),
        fmt_f64(mean_norm),
        fmt_f64(noise_norm),
        fmt_f64(snr)
    ));
    if snr < 0.1 {
        lines.push("     note: the noise vector's norm is over 10x the mean clipped gradient's; larger batches raise this ratio (tool 3)".into());
    }
    if clipped < 0.05 {
        lines.push("     note: almost nothing is clipped; a smaller --clip would cut the noise (or use --adaptive-clip)".into());
    }

    // Noise-free run on the held-out sample: clipping only.
    let before = evaluate(&model, &params, &SampleSet(&sample), 256)?.loss;
    let mut opt = Optimizer::new(cfg.optimizer.clone(), Schedule::Constant, params.len())?;
    let b = cfg.batch_size.min(m).max(1);
    for s in 0..NOISE_FREE_STEPS {
        let start = (s * b) % m;
        let chunk: Vec<usize> = (0..b).map(|k| (start + k) % m).collect();
        let sub = sample.select(&chunk);
        let gr = model.gradients(
            &params,
            &sub,
            GradRequest {
                clipping: Some(&clip),
                input_grad: false,
                train: true,
                rng: &mut rng,
            },
        )?;
        let mut grad = gr.grad;
        let inv = 1.0 / b as f32;
        grad.iter_mut().for_each(|v| *v *= inv);
        opt.step(&mut params, &grad);
    }
    let after = evaluate(&model, &params, &SampleSet(&sample), 256)?.loss;
    let learns = after < before;
    lines.push(format!(
        "  3. noise-free run ({NOISE_FREE_STEPS} clipped steps on the held-out sample): loss {} -> {}{}",
        fmt_f64(before),
        fmt_f64(after),
        if learns { " (learns)" } else { "  warning: the loss did not fall: check --lr and --clip before spending privacy" }
    ));

    // Large-batch advice.
    let big = (cfg.batch_size * 4).min(n_train);
    if big > cfg.batch_size
        && eps_rdp.is_finite()
        && let Ok(s_big) = privacy::calibrate_planned(
            cfg.sampling,
            n,
            big as u64,
            epochs,
            p.delta,
            eps_rdp,
            AccountantKind::Rdp,
        )
    {
        lines.push(format!(
            "  4. large batches: the same epsilon over the same epochs allows noise multiplier {} at batch {big} (vs {} at {}): noise on the averaged gradient sigma C / B = {} vs {} (see `memaudit dp-sweep`)",
            fmt_f64(s_big),
            fmt_f64(p.noise_multiplier),
            cfg.batch_size,
            fmt_f64(s_big * c / big as f64),
            fmt_f64(p.noise_multiplier * c / cfg.batch_size as f64)
        ));
        out["large_batch"] = json!({ "batch_size": big, "noise_multiplier": s_big });
    }
    out["heldout_examples"] = json!(m);
    out["clipped_fraction"] = json!(clipped);
    out["median_norm"] = num(median);
    out["mean_clipped_gradient_norm"] = num(mean_norm);
    out["noise_norm"] = num(noise_norm);
    out["signal_to_noise"] = num(snr);
    out["noise_free_loss_before"] = num(before);
    out["noise_free_loss_after"] = num(after);
    out["noise_free_learns"] = json!(learns);
    Ok(Some(SanityReport {
        text: lines.join("\n"),
        json: out,
    }))
}

/// A fixed batch seen as a dataset.
struct SampleSet<'a>(&'a memaudit_engine::Batch);

impl Dataset for SampleSet<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn batch(&self, idx: &[usize]) -> memaudit_engine::Batch {
        self.0.select(idx)
    }
}
