//! `dynamics capacity`: epochs to fit real and random data against model and data size
//! (Arpit et al. §3.3, Figs. 5-6): noise data needs more capacity and more epochs to fit, and
//! its time to fit grows with the data size. The capacity sweep runs at the largest training
//! size, the data sweep at the largest width (their shared point once).

use std::time::Instant;

use memaudit_audit::dynamics::{self, NoiseKind, Tracking};
use memaudit_engine::ModelConfig;
use memaudit_engine::layers::ActivationKind;
use serde::{Deserialize, Serialize};

use super::{noise_kinds, train_spec};
use crate::Num;
use crate::config::ExperimentConfig;
use crate::data::{ImageSource, Images};
use crate::error::{Result, invalid};
use crate::observer::{MetricsRow, Observer};
use crate::optim::OptimSettings;

/// `train_sizes` when not given.
pub const DEFAULT_TRAIN_SIZES: [usize; 3] = [1000, 2500, 5000];

/// The metrics columns of every epoch row (`kind` is the kind's index in `kinds`).
pub const METRICS: [&str; 7] = [
    "kind",
    "hidden",
    "train_size",
    "epoch",
    "train_accuracy",
    "valid_accuracy",
    "seconds",
];

/// The experiment's settings; the defaults are the CLI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// The data (`max_train` must stay unset: `train_sizes` sets the sizes).
    pub images: ImageSource,
    pub optim: OptimSettings,
    /// The epoch budget of every run.
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// real, randy, randx (randY/randX corrupt 100% of the training set).
    pub kinds: Vec<String>,
    /// Widths of the hidden layers to compare, trained on the largest training size.
    pub hidden_sizes: Vec<usize>,
    /// Hidden layers of every MLP.
    pub layers: usize,
    /// Training set sizes to compare, trained with the largest width (`None`: 1000, 2500,
    /// 5000, each capped at the training set's size; sizes given must fit).
    pub train_sizes: Option<Vec<usize>>,
    /// Training accuracy that counts as fitted (the paper: 1.0).
    pub fit_threshold: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            images: ImageSource::default(),
            optim: OptimSettings::default(),
            epochs: 20,
            batch_size: 64,
            seed: 0,
            kinds: vec!["real".into(), "randy".into(), "randx".into()],
            hidden_sizes: vec![64, 256, 1024],
            layers: 2,
            train_sizes: None,
            fit_threshold: 1.0,
        }
    }
}

impl ExperimentConfig for CapacityConfig {
    const NAME: &'static str = "dynamics capacity";

    fn validate(&self) -> Result<()> {
        noise_kinds(&self.kinds, "kinds")?;
        if self.hidden_sizes.is_empty() || self.hidden_sizes.contains(&0) {
            return invalid(
                "hidden_sizes",
                format!("{:?}", self.hidden_sizes),
                "give non-zero sizes",
            );
        }
        if self.layers == 0 {
            return invalid("layers", 0, "must be at least 1");
        }
        if let Some(s) = &self.train_sizes
            && (s.is_empty() || s.iter().any(|&n| n < 2))
        {
            return invalid("train_sizes", format!("{s:?}"), "give sizes of at least 2");
        }
        if !(self.fit_threshold > 0.0 && self.fit_threshold <= 1.0) {
            return invalid("fit_threshold", self.fit_threshold, "must be in (0, 1]");
        }
        if let Some(m) = self.images.max_train {
            return invalid(
                "images.max_train",
                m,
                "capacity sets its training set sizes with `train_sizes`",
            );
        }
        self.images.validate("images")
    }
}

/// One (kind, width, size) run.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityPoint {
    pub kind: NoiseKind,
    pub hidden: usize,
    pub train_size: usize,
    /// First epoch whose training accuracy (evaluation mode) reached the threshold.
    pub fitted_epoch: Option<usize>,
    pub final_train_accuracy: Option<Num>,
    pub epochs_run: usize,
    pub best_valid_accuracy: Option<Num>,
    pub seconds: f64,
}

/// The sweep. Serialised (with the CLI's `run` folder), it is `dynamics capacity --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CapacityResult {
    /// Always "capacity".
    pub experiment: String,
    pub data: String,
    pub fit_threshold: f64,
    pub max_epochs: usize,
    pub results: Vec<CapacityPoint>,
}

impl CapacityResult {
    /// The run of (kind, hidden, n), if the sweep had it.
    pub fn point(&self, kind: NoiseKind, hidden: usize, n: usize) -> Option<&CapacityPoint> {
        self.results
            .iter()
            .find(|p| p.kind == kind && p.hidden == hidden && p.train_size == n)
    }
}

/// A checked config with its data loaded and its sweep laid out.
pub struct CapacityJob {
    pub config: CapacityConfig,
    pub images: Images,
    pub kinds: Vec<NoiseKind>,
    /// The training sizes measured (the defaults capped at the data's size).
    pub train_sizes: Vec<usize>,
    /// The largest training size and width.
    pub max_n: usize,
    pub max_h: usize,
    /// (kind, hidden, n) of every run, in order.
    pub settings: Vec<(NoiseKind, usize, usize)>,
    /// Set when the default sizes were capped (for a note).
    pub capped: bool,
}

/// Check the config, load the data and lay out the sweep (no training yet).
pub fn prepare(config: &CapacityConfig) -> Result<CapacityJob> {
    config.validate()?;
    let kinds = noise_kinds(&config.kinds, "kinds")?;
    let requested = config
        .train_sizes
        .clone()
        .unwrap_or_else(|| DEFAULT_TRAIN_SIZES.to_vec());
    let max_n = requested.iter().copied().max().unwrap_or(2);
    let max_h = config.hidden_sizes.iter().copied().max().unwrap_or(1);
    let images = config.images.load_flat("images", max_n)?;
    let available = images.train.labels.len();
    let (train_sizes, capped) = match &config.train_sizes {
        // Sizes chosen are measured as given or refused; capping them silently made
        // "100000 examples" rows that were really trained on the whole (smaller) set.
        Some(sizes) => {
            if let Some(&s) = sizes.iter().find(|&&s| s > available) {
                return invalid(
                    "train_sizes",
                    s,
                    format!(
                        "{} has {available} training examples; give sizes up to {available}",
                        images.name
                    ),
                );
            }
            (sizes.clone(), false)
        }
        None => {
            let mut capped: Vec<usize> = requested.iter().map(|&s| s.min(available)).collect();
            capped.dedup();
            let was_capped = capped != requested;
            (capped, was_capped)
        }
    };
    let max_n = max_n.min(available);
    let mut settings: Vec<(NoiseKind, usize, usize)> = Vec::new();
    for &k in &kinds {
        for &h in &config.hidden_sizes {
            settings.push((k, h, max_n));
        }
        for &s in &train_sizes {
            if !settings.contains(&(k, max_h, s)) {
                settings.push((k, max_h, s));
            }
        }
    }
    Ok(CapacityJob {
        config: config.clone(),
        images,
        kinds,
        train_sizes,
        max_n,
        max_h,
        settings,
        capped,
    })
}

impl CapacityJob {
    /// Train every (kind, width, size) until fitted or out of epochs.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<CapacityResult> {
        let (c, img) = (&self.config, &self.images);
        if self.capped {
            observer.note(&format!(
                "note: {} has {} training examples; default train sizes capped to {}",
                img.name,
                img.train.labels.len(),
                self.train_sizes
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        let total = (self.settings.len() * c.epochs) as u64;
        let mut results = Vec::new();
        for (i, &(kind, h, n)) in self.settings.iter().enumerate() {
            let sub = img.train.subset(&(0..n).collect::<Vec<_>>());
            let fraction = if kind == NoiseKind::Real { 0.0 } else { 1.0 };
            let corrupted = dynamics::corrupt(&sub, img.classes, kind, fraction, c.seed)?;
            let model = ModelConfig::Mlp {
                input: sub.per_example(),
                hidden: vec![h; c.layers],
                classes: img.classes,
                activation: ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            };
            let spec = train_spec(model, &c.optim, c.epochs, c.batch_size, c.seed, n)?;
            let tracking = Tracking {
                valid: Some(&img.test),
                stop_at_train_accuracy: Some(c.fit_threshold),
                ..Default::default()
            };
            let started = Instant::now();
            let kcode = self.kinds.iter().position(|&k| k == kind).unwrap_or(0) as f64;
            let stage = format!("{} h{h} n{n}", kind.name());
            let mut done = (i * c.epochs) as u64;
            let trained = dynamics::train_tracked(&spec, &corrupted.data, &tracking, &mut |r| {
                done += 1;
                observer.progress(&format!("{stage} epoch {}", r.epoch), done, total);
                observer.metrics(&MetricsRow {
                    stage: stage.clone(),
                    epoch: r.epoch as f64,
                    step: None,
                    values: METRICS
                        .iter()
                        .copied()
                        .zip([
                            Some(kcode),
                            Some(h as f64),
                            Some(n as f64),
                            Some(r.epoch as f64),
                            Some(r.train_accuracy),
                            r.valid_accuracy,
                            Some(r.seconds),
                        ])
                        .collect(),
                });
                super::poll(&*observer)
            })
            .map_err(|e| super::stopped(e, &*observer, &stage))?;
            let last = trained.records.last();
            let best = trained.best_valid();
            let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.4}"));
            observer.note(&format!(
                "{} hidden {h} n {n}: fitted at epoch {} (train acc {}), best valid {}",
                kind.name(),
                trained.fitted_epoch.map_or("-".into(), |e| e.to_string()),
                fmt(last.map(|r| r.train_accuracy)),
                fmt(best.map(|b| b.1))
            ));
            results.push(CapacityPoint {
                kind,
                hidden: h,
                train_size: n,
                fitted_epoch: trained.fitted_epoch,
                final_train_accuracy: last.map(|r| Num(r.train_accuracy)),
                epochs_run: trained.records.len(),
                best_valid_accuracy: best.map(|b| Num(b.1)),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(CapacityResult {
            experiment: "capacity".into(),
            data: img.name.clone(),
            fit_threshold: c.fit_threshold,
            max_epochs: c.epochs,
            results,
        })
    }
}

/// Check, load, train and measure.
pub fn run(config: &CapacityConfig, observer: &mut dyn Observer) -> Result<CapacityResult> {
    prepare(config)?.run(observer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;

    #[test]
    fn the_sweep_runs_each_point_once_and_refuses_sizes_the_data_lacks() {
        let cfg = CapacityConfig {
            images: ImageSource {
                data: "digits".into(),
                valid_size: 100,
                ..ImageSource::default()
            },
            epochs: 2,
            batch_size: 20,
            kinds: vec!["real".into(), "randy".into()],
            hidden_sizes: vec![8, 16],
            layers: 1,
            train_sizes: Some(vec![100, 200]),
            ..CapacityConfig::default()
        };
        let mut rec = Recorder::default();
        let r = run(&cfg, &mut rec).unwrap();
        // Per kind: widths 8 and 16 at n = 200, then n = 100 at width 16 (n = 200 at 16 shared).
        assert_eq!(r.results.len(), 6);
        assert!(r.point(NoiseKind::RandY, 16, 100).is_some());
        assert!(r.point(NoiseKind::RandY, 8, 100).is_none());
        assert!(r.results.iter().all(|p| p.epochs_run <= 2));
        let too_many = CapacityConfig {
            train_sizes: Some(vec![100_000]),
            ..cfg
        };
        let e = prepare(&too_many).err().unwrap().to_string();
        assert!(
            e.starts_with("train_sizes 100000") && e.contains("training examples"),
            "{e}"
        );
    }
}
