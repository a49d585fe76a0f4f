//! The training loop, plain or DP-SGD, with checkpoints and resume.
//!
//! One step: draw a batch (Poisson by default under DP), run it as physical chunks of at most
//! `physical_batch` examples whose (clipped) gradient sums accumulate, then, for DP, add the noise
//! once to the logical batch's sum and divide by the *expected* batch size; add the parameter
//! penalty's gradient (post-processing); take the optimizer step. Non-finite losses, gradients or
//! parameters stop training with an error naming the step and layer; the last good checkpoint is
//! kept because nothing is written after a bad step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::audit_canaries::{DiracCanaries, FaultInjection};
use crate::augment::ShiftAugment;
use crate::checkpoint::{self, CheckpointState, LogFile};
use crate::dp::{AdaptiveClip, NoiseSource};
use crate::error::{EngineError, Result};
use crate::ledger::{self, PrivacyLedger};
use crate::model::{Batch, Clipping, GradRequest, Model};
use crate::models::ModelConfig;
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::penalty::ParamPenalty;
use crate::privacy::AccountantKind;
use crate::sampler::{BatchSampler, SamplingMode, mix_seed};

/// A set of examples the trainer can draw batches from.
pub trait Dataset: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The examples `idx` as one batch.
    fn batch(&self, idx: &[usize]) -> Batch;
}

/// Per-example clipping for DP-SGD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClipConfig {
    /// One bound over all parameters.
    Flat { bound: f64 },
    /// One bound per layer group; `group_of_layer[l]` is layer l's group.
    PerLayer {
        bounds: Vec<f64>,
        group_of_layer: Vec<usize>,
    },
    /// Quantile-based adaptive clipping (Andrew et al.).
    Adaptive {
        initial: f64,
        target_quantile: f64,
        learning_rate: f64,
        /// Noise on the unclipped count; default expected batch / 20.
        count_stddev: Option<f64>,
        geometric: bool,
    },
}

/// Privacy parameters of a DP-SGD run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyConfig {
    /// Total noise multiplier z (std of the noise on the sum / sensitivity).
    pub noise_multiplier: f64,
    pub clipping: ClipConfig,
    pub delta: f64,
    pub accountant: AccountantKind,
    /// Stop before epsilon would exceed this.
    pub max_epsilon: Option<f64>,
}

/// Everything that defines a training run (stored with every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: Schedule,
    pub epochs: usize,
    /// Expected (logical) batch size; q = batch / n under Poisson sampling.
    pub batch_size: usize,
    /// Largest chunk run through the model at once (memory bound); defaults to the batch size.
    pub physical_batch: Option<usize>,
    pub sampling: SamplingMode,
    pub seed: u64,
    pub privacy: Option<PrivacyConfig>,
    /// Seed the DP noise and the sampler from `seed` (reproducible research; reports say so).
    #[serde(default)]
    pub seeded_noise: bool,
}

impl TrainConfig {
    pub fn validate(&self, n: usize) -> Result<()> {
        self.optimizer.validate()?;
        if self.epochs == 0 {
            return Err(EngineError::Config("epochs must be at least 1".into()));
        }
        if self.batch_size == 0 || self.batch_size > n {
            return Err(EngineError::Config(format!(
                "batch size {} must be between 1 and the training set size {n}",
                self.batch_size
            )));
        }
        if self.physical_batch == Some(0) {
            return Err(EngineError::Config(
                "the physical batch size must be at least 1".into(),
            ));
        }
        if let Some(p) = &self.privacy {
            if !(p.noise_multiplier >= 0.0 && p.noise_multiplier.is_finite()) {
                return Err(EngineError::Config(format!(
                    "the noise multiplier must be >= 0 and finite, got {}",
                    p.noise_multiplier
                )));
            }
            if !(p.delta > 0.0 && p.delta < 1.0) {
                return Err(EngineError::Config(format!(
                    "delta must be in (0, 1), got {}",
                    p.delta
                )));
            }
            match &p.clipping {
                ClipConfig::Flat { bound } if !(*bound > 0.0 && bound.is_finite()) => {
                    return Err(EngineError::Config(format!(
                        "the clip bound must be > 0, got {bound}"
                    )));
                }
                ClipConfig::PerLayer { bounds, .. }
                    if bounds.is_empty() || bounds.iter().any(|b| !(*b > 0.0 && b.is_finite())) =>
                {
                    return Err(EngineError::Config(
                        "every per-layer clip bound must be > 0".into(),
                    ));
                }
                ClipConfig::Adaptive {
                    initial,
                    target_quantile,
                    learning_rate,
                    count_stddev,
                    geometric,
                } => {
                    AdaptiveClip::new(
                        *initial,
                        *target_quantile,
                        *learning_rate,
                        count_stddev.unwrap_or(1.0),
                        *geometric,
                    )?;
                }
                _ => {}
            }
            if let Some(m) = p.max_epsilon
                && (m.is_nan() || m <= 0.0)
            {
                return Err(EngineError::Config(format!(
                    "--max-epsilon must be > 0, got {m}"
                )));
            }
        }
        Ok(())
    }
}

/// Trainer state saved in each checkpoint's sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    config: TrainConfig,
    /// Every private step run so far, segment by segment (None for a non-private run).
    ledger: Option<PrivacyLedger>,
    /// Current adaptive clip bound.
    clip: Option<f64>,
    /// The ledger's epsilon when the checkpoint was written (informative; recomputed on load).
    epsilon: Option<f64>,
    /// Global step at which the current epoch began (a budget stop can checkpoint mid-epoch).
    epoch_start_step: u64,
    /// The white-box audit's canaries and their scores so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canaries: Option<DiracCanaries>,
    /// The audit self-test's deliberate bug, when the run carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fault: Option<FaultInjection>,
}

/// Progress of one step.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub step: u64,
    pub epoch: u64,
    pub steps_per_epoch: u64,
    pub batch_size: usize,
    pub loss: f64,
}

/// Metrics of one finished epoch.
#[derive(Clone, Debug, Serialize)]
pub struct EpochInfo {
    pub epoch: u64,
    pub step: u64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    /// The run's guarantee so far: its privacy ledger's epsilon, at the sampling it really used
    /// (for shuffled batches, the no-amplification figure).
    pub epsilon: Option<f64>,
    /// Shuffled runs only: what the accountant would say had the same steps been Poisson-sampled.
    /// Not a guarantee of this run; always shown under that label.
    pub epsilon_if_poisson: Option<f64>,
    pub clip_bound: Option<f64>,
    /// Fraction of examples whose gradient was clipped this epoch.
    pub clipped_fraction: Option<f64>,
    pub seconds: f64,
}

/// Hooks for progress display and measurements during training (e.g. exposure every epoch).
///
/// At the end of an epoch the trainer calls `on_epoch` first and then writes the checkpoint,
/// with the observer's [`checkpoint_logs`](TrainObserver::checkpoint_logs) inside it: the rows
/// logged at a step are part of the checkpoint taken at that step (a kill after the checkpoint
/// can no longer lose them, and a resume restores exactly them).
pub trait TrainObserver {
    fn on_step(&mut self, _info: &StepInfo, _model: &Model, _params: &[f32]) -> Result<()> {
        Ok(())
    }
    fn on_epoch(&mut self, _info: &EpochInfo, _model: &Model, _params: &[f32]) -> Result<()> {
        Ok(())
    }
    /// The run's whole log history so far (e.g. `metrics.csv`), stored in the checkpoint about
    /// to be written; called only when the trainer writes checkpoints.
    fn checkpoint_logs(&mut self) -> Result<Vec<LogFile>> {
        Ok(Vec::new())
    }
}

/// An observer that does nothing.
pub struct Silent;
impl TrainObserver for Silent {}

/// Loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EvalResult {
    /// Mean per-example loss (nats).
    pub loss: f64,
    /// Correct prediction rows / counted rows.
    pub accuracy: f64,
}

/// Why training ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    /// `--max-epsilon` reached: the next step would have exceeded it.
    PrivacyBudget,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: Model,
    pub params: Vec<f32>,
    optimizer: Optimizer,
    penalty: Option<Box<dyn ParamPenalty>>,
    /// Training-batch augmentation (`--augment shift`), drawn per (seed, step, example).
    augment: Option<ShiftAugment>,
    checkpoint_dir: Option<PathBuf>,
    pub step: u64,
    pub epoch: u64,
    /// Global step at which the current epoch began.
    epoch_start_step: u64,
    /// What the run has done to the data, privately: the source of every epsilon it reports.
    ledger: Option<PrivacyLedger>,
    /// White-box Dirac canaries (`audit_canaries.rs`), when the run audits itself.
    canaries: Option<DiracCanaries>,
    /// The audit self-test's deliberate bug (never set on a run meant for use).
    fault: Option<FaultInjection>,
    adaptive: Option<AdaptiveClip>,
    noise: Option<NoiseSource>,
    n_train: usize,
    /// Resumed from this checkpoint.
    pub resumed_from: Option<PathBuf>,
    /// The logs stored with the checkpoint resumed from (empty for a new run).
    resumed_logs: Vec<LogFile>,
    /// Crash tests only: called half way through every checkpoint write with the number of
    /// checkpoints this trainer has started writing (1 for its first).
    midway_hook: Option<MidwayHook>,
    checkpoints_started: u64,
}

/// See [`Trainer::set_checkpoint_midway_hook`].
pub type MidwayHook = Box<dyn FnMut(u64) + Send + Sync>;

/// Per-purpose streams derived from the run seed (see `sampler::mix_seed`).
const INIT_STREAM: u64 = 0;
const SAMPLER_STREAM: u64 = 1_000_000;
const DROPOUT_STREAM: u64 = 2_000_000;
const AUDIT_STREAM: u64 = 3_000_000;

impl Trainer {
    /// A new run, or (with `resume`) the continuation of the newest checkpoint in `checkpoint_dir`,
    /// whose configuration must match `config` in everything but the number of epochs.
    pub fn new(
        config: TrainConfig,
        n_train: usize,
        checkpoint_dir: Option<&Path>,
        resume: bool,
    ) -> Result<Self> {
        config.validate(n_train)?;
        let model = config.model.build()?;
        let mut init_rng = ChaCha8Rng::seed_from_u64(mix_seed(config.seed, INIT_STREAM));
        let params = model.init_params(&mut init_rng);
        let optimizer = Optimizer::new(
            config.optimizer.clone(),
            config.schedule.clone(),
            model.num_params(),
        )?;
        let adaptive = match config.privacy.as_ref().map(|p| &p.clipping) {
            Some(ClipConfig::Adaptive {
                initial,
                target_quantile,
                learning_rate,
                count_stddev,
                geometric,
            }) => Some(AdaptiveClip::new(
                *initial,
                *target_quantile,
                *learning_rate,
                count_stddev.unwrap_or(config.batch_size as f64 / 20.0),
                *geometric,
            )?),
            _ => None,
        };
        let noise = config.privacy.as_ref().map(|_| {
            if config.seeded_noise {
                NoiseSource::from_seed(config.seed)
            } else {
                NoiseSource::from_os()
            }
        });
        let ledger = config
            .privacy
            .as_ref()
            .map(|p| PrivacyLedger::new(p.delta, p.accountant));
        let mut t = Self {
            config,
            model,
            params,
            optimizer,
            penalty: None,
            augment: None,
            checkpoint_dir: checkpoint_dir.map(Path::to_path_buf),
            step: 0,
            epoch: 0,
            epoch_start_step: 0,
            ledger,
            canaries: None,
            fault: None,
            adaptive,
            noise,
            n_train,
            resumed_from: None,
            resumed_logs: Vec::new(),
            midway_hook: None,
            checkpoints_started: 0,
        };
        // Leftovers of a write a crash interrupted are removed on every start; readers never
        // look at them anyway.
        if let Some(dir) = &t.checkpoint_dir {
            checkpoint::clean_stale(dir)?;
        }
        if resume {
            t.resume()?;
        }
        Ok(t)
    }

    fn resume(&mut self) -> Result<()> {
        let Some(dir) = &self.checkpoint_dir else {
            return Err(EngineError::Config(
                "--resume needs a run folder with checkpoints".into(),
            ));
        };
        let Some(ck) = checkpoint::load_latest(dir)? else {
            return Err(EngineError::Checkpoint {
                path: dir.display().to_string(),
                msg: "no checkpoint to resume from: the run stopped before its first checkpoint (written at the end of each epoch); start it again with --force".into(),
            });
        };
        let ck_path = ck.path.display().to_string();
        let refuse = |msg: String| EngineError::Checkpoint {
            path: ck_path.clone(),
            msg,
        };
        let st: TrainerState = serde_json::from_value(ck.state.trainer.clone()).map_err(|e| {
            refuse(format!(
                "trainer state unreadable ({e}): written by another memaudit version, or edited; start a new run with --force"
            ))
        })?;
        check_resumable(&st.config, &self.config, dir)?;
        let (step, epoch) = (ck.state.step, ck.state.epoch);
        // The ledger must describe this very run: the data, the checkpoint's step and epoch
        // counters. An edited sidecar (fewer steps, an impossible step) is refused, not believed.
        match (st.ledger, self.ledger.as_mut()) {
            (Some(saved), Some(mine)) => {
                saved
                    .check_consistent(self.n_train as u64, step, epoch)
                    .map_err(|e| refuse(e.to_string()))?;
                if saved.delta != mine.delta || saved.accountant != mine.accountant {
                    return Err(refuse(
                        "the privacy ledger's delta or accountant differs from the run's configuration".into(),
                    ));
                }
                *mine = saved;
            }
            (None, None) => {}
            _ => {
                return Err(refuse(
                    "the checkpoint's privacy ledger does not match its configuration (private vs non-private)".into(),
                ));
            }
        }
        let spe = self.steps_per_epoch();
        let max_spe = self
            .ledger
            .iter()
            .flat_map(|l| l.segments.iter().map(|s| s.steps_per_epoch()))
            .fold(spe, u64::max);
        if st.epoch_start_step > step || step - st.epoch_start_step > max_spe {
            return Err(refuse(format!(
                "step {step} is inconsistent with the current epoch's start at step {}",
                st.epoch_start_step
            )));
        }
        if st.config.batch_size == self.config.batch_size
            && step > epoch.saturating_add(1).saturating_mul(spe)
        {
            return Err(refuse(format!(
                "{step} steps cannot make {epoch} epochs of {spe} steps"
            )));
        }
        self.params = ck.params;
        self.resumed_logs = ck.logs;
        self.optimizer.load_state(ck.optimizer)?;
        self.step = step;
        self.epoch = epoch;
        self.epoch_start_step = st.epoch_start_step;
        self.canaries = st.canaries;
        self.fault = st.fault;
        if let (Some(a), Some(c)) = (self.adaptive.as_mut(), st.clip) {
            a.clip = c;
        }
        self.resumed_from = Some(ck.path);
        Ok(())
    }

    /// Carry a white-box audit of M Dirac canaries (`audit_canaries.rs`): only on a private run
    /// with Poisson sampling and one flat (or adaptive) clip bound, from its first step; a resumed
    /// run continues the canaries its checkpoint holds and must ask for the same M.
    pub fn set_white_box_audit(&mut self, canaries: usize) -> Result<()> {
        check_white_box_audit(&self.config, canaries, self.model.num_params())?;
        match &self.canaries {
            Some(c) if c.coordinates.len() == canaries => Ok(()),
            Some(c) => Err(EngineError::Config(format!(
                "this run's white-box audit has {} canaries; resume it with the same number",
                c.coordinates.len()
            ))),
            None if self.step > 0 => Err(EngineError::Config(
                "a white-box audit must start with the run: this run has already trained without one".into(),
            )),
            None => {
                self.canaries = Some(DiracCanaries::new(
                    canaries,
                    self.model.num_params(),
                    mix_seed(self.config.seed, AUDIT_STREAM),
                )?);
                Ok(())
            }
        }
    }

    /// The log `name` as stored with the checkpoint this run resumed from (None for a new run,
    /// or a checkpoint written before logs were stored with checkpoints).
    pub fn resumed_log(&self, name: &str) -> Option<&[u8]> {
        self.resumed_logs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// Crash tests only: run `hook` half way through each checkpoint write (the parameters are
    /// written, the logs, sidecar and marker are not), with the 1-based count of checkpoints
    /// this trainer has started; a test aborts the process there to leave a half-written one.
    pub fn set_checkpoint_midway_hook(&mut self, hook: MidwayHook) {
        self.midway_hook = Some(hook);
    }

    /// The white-box audit's canaries, inclusion bits and scores so far.
    pub fn white_box_canaries(&self) -> Option<&DiracCanaries> {
        self.canaries.as_ref()
    }

    /// Self-test only: make this run deliberately broken (see `audit_canaries::FaultInjection`).
    /// Its ledger keeps the stated noise multiplier, so its printed epsilon is wrong on purpose.
    pub fn inject_fault_for_audit_self_test(&mut self, fault: FaultInjection) -> Result<()> {
        if self.step > 0 && self.fault.as_ref() != Some(&fault) {
            return Err(EngineError::Config(
                "a fault can only be injected from the first step".into(),
            ));
        }
        self.fault = Some(fault);
        Ok(())
    }

    /// The deliberate bug this run carries, if any (every output must say so).
    pub fn injected_fault(&self) -> Option<&FaultInjection> {
        self.fault.as_ref()
    }

    /// Shift every training example by a random +-max pixels each step (`augment.rs`); applied
    /// before per-example gradients, so under DP the accountant is unchanged.
    pub fn set_augment(&mut self, augment: Option<ShiftAugment>) {
        self.augment = augment;
    }

    /// Add a parameter penalty to the objective (post-processing under DP).
    pub fn set_penalty(&mut self, penalty: Box<dyn ParamPenalty>) {
        self.penalty = Some(penalty);
    }

    pub fn noise_is_seeded(&self) -> bool {
        self.noise.as_ref().is_some_and(|n| n.is_seeded())
    }

    /// Steps in one epoch under the current configuration.
    fn steps_per_epoch(&self) -> u64 {
        ledger::steps_per_epoch(
            self.config.sampling,
            self.n_train as u64,
            self.config.batch_size as u64,
        )
    }

    /// The run's privacy ledger (None for a non-private run).
    pub fn ledger(&self) -> Option<&PrivacyLedger> {
        self.ledger.as_ref()
    }

    /// The run's guarantee so far, from its ledger, or None for a non-private run.
    pub fn epsilon(&self) -> Result<Option<f64>> {
        self.ledger.as_ref().map(|l| l.epsilon()).transpose()
    }

    /// Shuffled runs only: the epsilon had the same steps been Poisson-sampled (not a guarantee).
    pub fn epsilon_if_poisson(&self) -> Result<Option<f64>> {
        match &self.ledger {
            Some(l) => l.epsilon_if_poisson(),
            None => Ok(None),
        }
    }

    fn clipping(&self) -> Option<Clipping> {
        let p = self.config.privacy.as_ref()?;
        Some(match &p.clipping {
            ClipConfig::Flat { bound } => Clipping::Flat(*bound as f32),
            ClipConfig::PerLayer {
                bounds,
                group_of_layer,
            } => Clipping::PerGroup {
                bounds: bounds.iter().map(|&b| b as f32).collect(),
                group_of_layer: group_of_layer.clone(),
            },
            ClipConfig::Adaptive { .. } => {
                Clipping::Flat(self.adaptive.as_ref().unwrap().clip as f32)
            }
        })
    }

    /// Loss and accuracy on a dataset (evaluation mode, chunks of the physical batch size).
    pub fn evaluate(&self, data: &dyn Dataset) -> Result<EvalResult> {
        evaluate(&self.model, &self.params, data, self.physical_batch())
    }

    fn physical_batch(&self) -> usize {
        self.config
            .physical_batch
            .unwrap_or(self.config.batch_size)
            .max(1)
    }

    /// Train to `config.epochs` epochs (from wherever a resumed run stands).
    pub fn run(
        &mut self,
        train: &dyn Dataset,
        valid: Option<&dyn Dataset>,
        obs: &mut dyn TrainObserver,
    ) -> Result<StopReason> {
        if train.len() != self.n_train {
            return Err(EngineError::Config(format!(
                "trainer built for {} examples, got {}",
                self.n_train,
                train.len()
            )));
        }
        // Seeded (non-private runs, or --seeded-noise), batch t is a function of (seed, t).
        let sampler_seed = if self.config.privacy.is_none() || self.config.seeded_noise {
            Some(mix_seed(self.config.seed, SAMPLER_STREAM))
        } else {
            None
        };
        let mut sampler = BatchSampler::starting_at(
            self.config.sampling,
            self.n_train,
            self.config.batch_size,
            sampler_seed,
            self.step,
        )?;
        let steps_per_epoch = sampler.steps_per_epoch() as u64;
        let expected_batch = self.config.batch_size as f64;
        let phys = self.physical_batch();
        if let (Some(l), Some(p)) = (self.ledger.as_mut(), self.config.privacy.as_ref()) {
            l.open_segment(
                self.config.sampling,
                self.n_train as u64,
                self.config.batch_size as u64,
                p.noise_multiplier,
                self.step,
            );
        }
        let max_segment_steps = self.max_segment_steps()?;
        let mut segment_steps = 0u64;
        let mut reason = StopReason::Completed;

        'epochs: while self.epoch < self.config.epochs as u64 {
            let started = Instant::now();
            let (mut loss_sum, mut n_ex, mut correct, mut counted, mut n_clipped) =
                (0.0f64, 0usize, 0usize, 0usize, 0usize);
            // A resumed run starts mid-epoch where the checkpoint left off.
            let start = (self.step - self.epoch_start_step).min(steps_per_epoch);
            for _ in start..steps_per_epoch {
                if let Some(maxs) = max_segment_steps
                    && segment_steps + 1 > maxs
                {
                    reason = StopReason::PrivacyBudget;
                    break 'epochs;
                }
                let idx = sampler.next_batch();
                let clipping = self.clipping();
                // The multiplier on the gradient sum's noise (with adaptive clipping, the part of
                // the total z left after the clip count's share).
                let stated_multiplier = match (&self.config.privacy, &self.adaptive) {
                    (Some(p), Some(a)) => Some(
                        AdaptiveClip::split_noise(p.noise_multiplier, a.count_stddev)?
                            .sum_multiplier,
                    ),
                    (Some(p), None) => Some(p.noise_multiplier),
                    (None, _) => None,
                };
                // What is actually added: the stated multiplier unless the self-test broke it.
                let sum_multiplier = stated_multiplier.map(|z| match &self.fault {
                    Some(FaultInjection::NoiseScale(f)) => z * f,
                    None => z,
                });
                let mut dropout_rng = ChaCha8Rng::seed_from_u64(mix_seed(
                    self.config.seed,
                    DROPOUT_STREAM + self.step,
                ));
                // Under DP the step's noise is drawn on the other core while the gradient is
                // computed (it does not depend on the data); it is added below.
                let (grads, step_noise) = match (sum_multiplier, &clipping, self.noise.take()) {
                    (Some(z), Some(clip), Some(mut src)) => {
                        src.begin_step(self.step);
                        let (g, n) = src.draw_step_noise_alongside(
                            self.params.len(),
                            z,
                            clip.sensitivity(),
                            || {
                                self.logical_batch_gradients(
                                    train,
                                    &idx,
                                    clipping.as_ref(),
                                    phys,
                                    &mut dropout_rng,
                                )
                            },
                        );
                        self.noise = Some(src);
                        (g, Some(n))
                    }
                    (_, _, src) => {
                        self.noise = src;
                        let g = self.logical_batch_gradients(
                            train,
                            &idx,
                            clipping.as_ref(),
                            phys,
                            &mut dropout_rng,
                        );
                        (g, None)
                    }
                };
                let StepGradients {
                    mut grad,
                    norms,
                    loss: step_loss,
                    correct: c,
                    counted: k,
                } = grads?;
                correct += c;
                counted += k;
                if !step_loss.is_finite() {
                    return Err(EngineError::NonFinite {
                        what: "loss".into(),
                        step: self.step + 1,
                        layer: self
                            .model
                            .first_nonfinite_layer(&self.params)
                            .unwrap_or("the loss")
                            .to_string(),
                    });
                }
                loss_sum += step_loss;
                n_ex += idx.len();
                if let (Some(step_noise), Some(clip)) = (step_noise, &clipping) {
                    let bound = match clip {
                        Clipping::Flat(c) => *c,
                        Clipping::PerGroup { .. } => f32::INFINITY,
                    };
                    n_clipped += norms.iter().filter(|&&n| n > bound).count();
                    // White-box canaries join the clipped sum like sampled examples of norm C.
                    let q = expected_batch / self.n_train as f64;
                    let canary_part = self.canaries.as_ref().map(|c| {
                        let added = c.add_sampled(self.step, q, clip.sensitivity(), &mut grad);
                        let along: Vec<f32> =
                            c.coordinates.iter().map(|&j| step_noise.at(j)).collect();
                        (added, along)
                    });
                    step_noise.apply(&mut grad, expected_batch);
                    if let (Some(c), Some((added, along))) = (self.canaries.as_mut(), canary_part) {
                        // The auditor scores with the stated multiplier on the gradient sum.
                        let stated = stated_multiplier.unwrap_or(0.0);
                        c.record(&added, &along, clip.sensitivity(), stated, q);
                    }
                    let noise = self
                        .noise
                        .as_mut()
                        .expect("a private run always has a noise source");
                    if let Some(a) = self.adaptive.as_mut() {
                        let count_std = a.count_stddev;
                        a.update(&norms, expected_batch, count_std, noise);
                    }
                    if let Some(l) = self.ledger.as_mut() {
                        l.record_step();
                    }
                    segment_steps += 1;
                } else if !idx.is_empty() {
                    let inv = 1.0 / idx.len() as f32;
                    grad.iter_mut().for_each(|g| *g *= inv);
                }
                if let Some(pen) = &self.penalty {
                    pen.value_and_grad(&self.params, &mut grad);
                }
                if let Some(layer) = self.model.first_nonfinite_grad_layer(&grad) {
                    return Err(EngineError::NonFinite {
                        what: "gradient".into(),
                        step: self.step + 1,
                        layer: layer.to_string(),
                    });
                }
                self.optimizer.step(&mut self.params, &grad);
                self.step += 1;
                if let Some(layer) = self.model.first_nonfinite_layer(&self.params) {
                    return Err(EngineError::NonFinite {
                        what: "parameters".into(),
                        step: self.step,
                        layer: layer.to_string(),
                    });
                }
                let info = StepInfo {
                    step: self.step,
                    epoch: self.epoch,
                    steps_per_epoch,
                    batch_size: idx.len(),
                    loss: if idx.is_empty() {
                        f64::NAN
                    } else {
                        step_loss / idx.len() as f64
                    },
                };
                obs.on_step(&info, &self.model, &self.params)?;
            }
            self.epoch += 1;
            self.epoch_start_step = self.step;
            let valid_eval = match valid {
                Some(v) if !v.is_empty() => Some(self.evaluate(v)?),
                _ => None,
            };
            let epsilon = self.epsilon()?;
            let epsilon_if_poisson = self.epsilon_if_poisson()?;
            let info = EpochInfo {
                epoch: self.epoch,
                step: self.step,
                train_loss: if n_ex > 0 {
                    loss_sum / n_ex as f64
                } else {
                    f64::NAN
                },
                train_accuracy: if counted > 0 {
                    correct as f64 / counted as f64
                } else {
                    f64::NAN
                },
                valid_loss: valid_eval.map(|e| e.loss),
                valid_accuracy: valid_eval.map(|e| e.accuracy),
                epsilon,
                epsilon_if_poisson,
                clip_bound: self.clipping().and_then(|c| match c {
                    Clipping::Flat(c) => Some(c as f64),
                    _ => None,
                }),
                clipped_fraction: self.config.privacy.as_ref().map(|_| {
                    if n_ex > 0 {
                        n_clipped as f64 / n_ex as f64
                    } else {
                        0.0
                    }
                }),
                seconds: started.elapsed().as_secs_f64(),
            };
            // Log first, then the checkpoint that includes the log (see `TrainObserver`).
            obs.on_epoch(&info, &self.model, &self.params)?;
            self.checkpoint_with_logs(epsilon, obs)?;
        }
        if reason == StopReason::PrivacyBudget {
            let epsilon = self.epsilon()?;
            self.checkpoint_with_logs(epsilon, obs)?;
        }
        Ok(reason)
    }

    /// The summed (clipped) gradient of a logical batch, run as physical chunks of `phys` examples.
    fn logical_batch_gradients(
        &self,
        train: &dyn Dataset,
        idx: &[usize],
        clipping: Option<&Clipping>,
        phys: usize,
        dropout_rng: &mut ChaCha8Rng,
    ) -> Result<StepGradients> {
        let mut acc = StepGradients {
            grad: vec![0.0f32; self.params.len()],
            norms: Vec::with_capacity(idx.len()),
            loss: 0.0,
            correct: 0,
            counted: 0,
        };
        for chunk in idx.chunks(phys) {
            let mut batch = train.batch(chunk);
            if let Some(a) = &self.augment {
                a.apply(&mut batch, self.config.seed, self.step, chunk)?;
            }
            let out = self.model.gradients(
                &self.params,
                &batch,
                GradRequest {
                    clipping,
                    input_grad: false,
                    train: true,
                    rng: dropout_rng,
                },
            )?;
            for (g, o) in acc.grad.iter_mut().zip(&out.grad) {
                *g += o;
            }
            acc.loss += out.loss_sum;
            acc.correct += out.correct;
            acc.counted += out.counted;
            if let Some(n) = out.norms {
                acc.norms.extend(n);
            }
        }
        Ok(acc)
    }

    /// The most steps the open segment may run before the ledger's epsilon would exceed
    /// `max_epsilon` (None: no budget).
    fn max_segment_steps(&self) -> Result<Option<u64>> {
        let (Some(p), Some(l)) = (&self.config.privacy, &self.ledger) else {
            return Ok(None);
        };
        let Some(max_eps) = p.max_epsilon else {
            return Ok(None);
        };
        if p.noise_multiplier == 0.0 {
            return Ok(Some(0));
        }
        let eps = |t: u64| l.epsilon_after_extra_steps(t);
        if eps(0)? > max_eps {
            return Ok(Some(0));
        }
        // Epsilon grows with steps: double, then bisect.
        let (mut lo, mut hi) = (0u64, 1u64);
        while eps(hi)? <= max_eps {
            lo = hi;
            hi *= 2;
            if hi > 1 << 40 {
                return Ok(None);
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if eps(mid)? <= max_eps {
                lo = mid
            } else {
                hi = mid
            }
        }
        Ok(Some(lo))
    }

    /// A checkpoint with the observer's logs in it (a no-op without a checkpoint folder).
    fn checkpoint_with_logs(
        &mut self,
        epsilon: Option<f64>,
        obs: &mut dyn TrainObserver,
    ) -> Result<Option<PathBuf>> {
        if self.checkpoint_dir.is_none() {
            return Ok(None);
        }
        let logs = obs.checkpoint_logs()?;
        self.save_checkpoint_with(epsilon, &logs)
    }

    /// Write a checkpoint without logs (a no-op without a checkpoint folder).
    pub fn save_checkpoint(&mut self, epsilon: Option<f64>) -> Result<Option<PathBuf>> {
        self.save_checkpoint_with(epsilon, &[])
    }

    /// Write a checkpoint holding `logs` (a no-op without a checkpoint folder).
    pub fn save_checkpoint_with(
        &mut self,
        epsilon: Option<f64>,
        logs: &[LogFile],
    ) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.checkpoint_dir else {
            return Ok(None);
        };
        let trainer = TrainerState {
            config: self.config.clone(),
            ledger: self.ledger.clone(),
            clip: self.adaptive.as_ref().map(|a| a.clip),
            epsilon,
            epoch_start_step: self.epoch_start_step,
            canaries: self.canaries.clone(),
            fault: self.fault.clone(),
        };
        let state = CheckpointState {
            format: checkpoint::CHECKPOINT_FORMAT,
            model: self.config.model.clone(),
            step: self.step,
            epoch: self.epoch,
            optimizer_buffers: vec![],
            trainer: serde_json::to_value(&trainer)
                .map_err(|e| EngineError::Config(e.to_string()))?,
        };
        self.checkpoints_started += 1;
        let nth = self.checkpoints_started;
        let hook = self.midway_hook.as_mut();
        let mut midway = hook.map(|h| move || h(nth));
        checkpoint::save_with(
            dir,
            self.model.param_specs(),
            &self.params,
            &self.optimizer.state,
            &state,
            checkpoint::SaveExtras {
                logs,
                midway: midway.as_mut().map(|m| m as &mut dyn FnMut()),
            },
        )
        .map(Some)
    }

    /// Private steps accounted so far.
    pub fn private_steps(&self) -> u64 {
        self.ledger.as_ref().map_or(0, PrivacyLedger::total_steps)
    }
}

/// What one logical batch contributes: summed (clipped) gradient, per-example norms, loss.
struct StepGradients {
    grad: Vec<f32>,
    norms: Vec<f32>,
    loss: f64,
    correct: usize,
    counted: usize,
}

/// Whether a run of `config` with `num_params` parameters can carry a white-box audit of M
/// canaries: a private run, Poisson sampling, one clip bound (flat or adaptive), 1 <= M <= the
/// parameters (one coordinate each). Callers check it before writing anything.
pub fn check_white_box_audit(
    config: &TrainConfig,
    canaries: usize,
    num_params: usize,
) -> Result<()> {
    let p = config.privacy.as_ref().ok_or_else(|| {
        EngineError::Config("a white-box audit needs a private run (a noise multiplier)".into())
    })?;
    if matches!(p.clipping, ClipConfig::PerLayer { .. }) {
        return Err(EngineError::Config(
            "a white-box audit needs one clip bound (not per-layer clipping): a canary is one example's gradient of norm C".into(),
        ));
    }
    if config.sampling != SamplingMode::Poisson {
        return Err(EngineError::Config(
            "a white-box audit needs Poisson sampling: its canaries are sampled like examples"
                .into(),
        ));
    }
    if canaries == 0 || canaries > num_params {
        return Err(EngineError::Config(format!(
            "a white-box audit needs between 1 and the model's {num_params} parameters canaries (one coordinate each), got {canaries}"
        )));
    }
    Ok(())
}

/// Refuse to resume `saved` as `wanted` unless they differ only in what a resume may change
/// (see `ledger.rs`): epochs, batch size, sampling, physical batch, schedule, noise multiplier and
/// `--max-epsilon`. The model, data, optimizer, clip rule, delta, accountant and seed never change.
fn check_resumable(saved: &TrainConfig, wanted: &TrainConfig, dir: &Path) -> Result<()> {
    let mut s = saved.clone();
    s.epochs = wanted.epochs;
    s.batch_size = wanted.batch_size;
    s.sampling = wanted.sampling;
    s.physical_batch = wanted.physical_batch;
    s.schedule = wanted.schedule.clone();
    if let (Some(sp), Some(wp)) = (s.privacy.as_mut(), wanted.privacy.as_ref()) {
        sp.noise_multiplier = wp.noise_multiplier;
        sp.max_epsilon = wp.max_epsilon;
    }
    if s == *wanted {
        return Ok(());
    }
    let (a, b) = (
        serde_json::to_value(&s).unwrap_or_default(),
        serde_json::to_value(wanted).unwrap_or_default(),
    );
    let differ: Vec<String> = match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => b
            .keys()
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect(),
        _ => vec![],
    };
    Err(EngineError::Config(format!(
        "the checkpoint in {} belongs to a different run ({} differ; a resume may change only epochs, batch size, sampling, physical batch, schedule, noise multiplier and max epsilon); start a new run or use --force",
        dir.display(),
        if differ.is_empty() {
            "settings".to_string()
        } else {
            differ.join(", ")
        },
    )))
}

/// Loss and accuracy of `params` on a dataset.
pub fn evaluate(
    model: &Model,
    params: &[f32],
    data: &dyn Dataset,
    chunk: usize,
) -> Result<EvalResult> {
    let n = data.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut loss, mut correct, mut counted) = (0.0f64, 0usize, 0usize);
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(chunk.max(1)) {
        let b = data.batch(c);
        let logits = model.forward(params, &b.input, false, &mut rng)?;
        let out = crate::loss::softmax_cross_entropy(&logits, &b.targets, b.mask.as_deref())?;
        loss += out.per_example.iter().map(|&x| x as f64).sum::<f64>();
        correct += out.correct;
        counted += out.counted;
    }
    Ok(EvalResult {
        loss: if n > 0 { loss / n as f64 } else { f64::NAN },
        accuracy: if counted > 0 {
            correct as f64 / counted as f64
        } else {
            f64::NAN
        },
    })
}
