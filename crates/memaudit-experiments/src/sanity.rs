//! Sanity checks before private training ("Three Tools for Practical Differential Privacy",
//! van der Veen et al. 2018, tool 1):
//!
//! 1. the accounting of the planned run (RDP and PLD epsilon, the steps);
//! 2. on a held-out sample (never the private training set, so the checks spend no privacy): the
//!    fraction of per-example gradients clipped at C, and the signal-to-noise ratio
//!    `||mean clipped gradient|| / (sigma C sqrt(d) / B)` (the noise spreads over all d
//!    directions, so training still progresses well below 1; larger batches raise it, tool 3);
//! 3. a short noise-free run (clipping only) on that held-out sample: the loss must fall, or the
//!    model, learning rate or clip bound is wrong before any privacy is spent;
//! 4. large-batch advice: the noise multiplier the same epsilon allows at 4x the batch (tool 3).

use memaudit_engine::model::{Clipping, GradRequest};
use memaudit_engine::optim::{Optimizer, Schedule};
use memaudit_engine::privacy::{self, AccountantKind};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{ClipConfig, Dataset, TrainConfig, evaluate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::Num;
use crate::error::Result;
use crate::observer::Observer;

/// Held-out examples the gradient checks use at most.
pub const SAMPLE: usize = 512;
/// Clipped, noise-free steps of check 3.
pub const NOISE_FREE_STEPS: usize = 60;

/// The checks' numbers. Serialised, it is the `sanity` object of `memaudit train --json`.
#[derive(Clone, Debug, Serialize)]
pub struct SanityChecks {
    pub planned_steps: u64,
    pub sampling_rate: f64,
    pub epsilon_rdp: Num,
    pub epsilon_pld: Option<Num>,
    /// Checks 2-4; `None` without held-out data.
    #[serde(flatten)]
    pub heldout: Option<HeldoutChecks>,
    /// The planned run the numbers describe (for rendering).
    #[serde(skip)]
    pub plan: Plan,
}

/// The planned private run, as the checks read it.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sampling: SamplingMode,
    pub epochs: u64,
    pub batch_size: usize,
    pub noise_multiplier: f64,
    pub delta: f64,
    /// The clip bound C (the initial bound of adaptive clipping; the total of per-layer bounds).
    pub clip: f64,
}

/// Checks 2-4, on held-out data.
#[derive(Clone, Debug, Serialize)]
pub struct HeldoutChecks {
    pub heldout_examples: usize,
    pub clipped_fraction: f64,
    pub median_norm: Num,
    pub mean_clipped_gradient_norm: Num,
    pub noise_norm: Num,
    pub signal_to_noise: Num,
    pub noise_free_loss_before: Num,
    pub noise_free_loss_after: Num,
    pub noise_free_learns: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_batch: Option<LargeBatch>,
}

/// Check 4: the batch 4x as large and the noise multiplier that meets the same epsilon there.
#[derive(Clone, Debug, Serialize)]
pub struct LargeBatch {
    pub batch_size: usize,
    pub noise_multiplier: f64,
}

/// Run the checks for the private run `cfg` on `n_train` examples (`None` for a non-private
/// run), probing the model on `heldout`.
pub fn run(
    cfg: &TrainConfig,
    n_train: usize,
    heldout: &dyn Dataset,
    observer: &mut dyn Observer,
) -> Result<Option<SanityChecks>> {
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
    let c = match &p.clipping {
        ClipConfig::Flat { bound } => *bound,
        ClipConfig::Adaptive { initial, .. } => *initial,
        ClipConfig::PerLayer { bounds, .. } => bounds.iter().map(|b| b * b).sum::<f64>().sqrt(),
    };
    let mut checks = SanityChecks {
        planned_steps: steps,
        sampling_rate: q,
        epsilon_rdp: Num(eps_rdp),
        epsilon_pld: eps_pld.map(Num),
        heldout: None,
        plan: Plan {
            sampling: cfg.sampling,
            epochs,
            batch_size: cfg.batch_size,
            noise_multiplier: p.noise_multiplier,
            delta: p.delta,
            clip: c,
        },
    };
    let m = heldout.len().min(SAMPLE);
    if m == 0 {
        return Ok(Some(checks));
    }
    observer.progress("sanity", 0, NOISE_FREE_STEPS as u64);
    let model = cfg.model.build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut params = model.init_params(&mut rng);
    let idx: Vec<usize> = (0..m).collect();
    let sample = heldout.batch(&idx);
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
    // The upper median (element n/2 of the sorted norms), as reported since the first version.
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) as f64;
    let mean_norm = (g.grad.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()).sqrt() / m as f64;
    let d = params.len() as f64;
    let noise_norm = p.noise_multiplier * c * d.sqrt() / cfg.batch_size as f64;
    let snr = if noise_norm > 0.0 {
        mean_norm / noise_norm
    } else {
        f64::INFINITY
    };

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
        observer.progress("sanity", s as u64 + 1, NOISE_FREE_STEPS as u64);
    }
    let after = evaluate(&model, &params, &SampleSet(&sample), 256)?.loss;

    // Large-batch advice.
    let big = (cfg.batch_size * 4).min(n_train);
    let large_batch = if big > cfg.batch_size && eps_rdp.is_finite() {
        privacy::calibrate_planned(
            cfg.sampling,
            n,
            big as u64,
            epochs,
            p.delta,
            eps_rdp,
            AccountantKind::Rdp,
        )
        .ok()
        .map(|s_big| LargeBatch {
            batch_size: big,
            noise_multiplier: s_big,
        })
    } else {
        None
    };
    checks.heldout = Some(HeldoutChecks {
        heldout_examples: m,
        clipped_fraction: clipped,
        median_norm: Num(median),
        mean_clipped_gradient_norm: Num(mean_norm),
        noise_norm: Num(noise_norm),
        signal_to_noise: Num(snr),
        noise_free_loss_before: Num(before),
        noise_free_loss_after: Num(after),
        noise_free_learns: after < before,
        large_batch,
    });
    Ok(Some(checks))
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
