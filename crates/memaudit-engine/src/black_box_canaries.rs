//! Black-box audit canaries: the data side of the one-run audit (Steinke, Nasr & Jagielski 2023,
//! "Privacy Auditing with One (1) Training Run", black-box setting).
//!
//! M canaries are made and each is included in the training set independently with probability
//! 1/2 (seeded). A canary is an ordinary training example, chosen to be easy to tell apart when
//! trained on and hard to predict otherwise:
//!
//! - **classifiers: mislabelled examples.** M distinct training examples are drawn (seeded) and
//!   taken out of the training set; each gets a label drawn uniformly from the wrong classes. The
//!   included ones go back in with the wrong label, the others are not trained on at all, so the
//!   model only ever sees a canary's input with its canary label. This is the canary ML Privacy
//!   Meter and Steinke et al. use for CIFAR-10.
//! - **language models: random windows.** A string of exactly one training window (W + 1 tokens:
//!   W inputs and W next-token targets, the unit DP-SGD protects) drawn uniformly from the
//!   vocabulary; the included ones are added to the training windows, one window each.
//!
//! The included canaries are training examples like any other: they count in N, so the trainer,
//! its sampler and its accountant all see the dataset actually trained on
//! (the [`TrainingSet`] the insert functions return).
//!
//! **Score** (higher means member), from the final model in evaluation mode:
//! - classifiers: ln p(canary label | input), the negative cross-entropy of the assigned label;
//! - language models: the window's mean log-likelihood per predicted token (nats), the negative
//!   of the mean cross-entropy over its W targets (for a fixed W, a monotone function of the
//!   window's log-likelihood, so it orders canaries the same way).
//!
//! The lower bound itself (one-run, one-run f-DP) lives in memaudit-audit
//! (`lower_bound::black_box`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::layer::{TokenInput, Value};
use crate::model::{Batch, Model};
use crate::sampler::mix_seed;
use crate::train::Dataset;

/// Stream tags of the canaries' randomness, apart from the trainer's streams and the white-box
/// canaries' (`audit_canaries.rs` uses 5 << 40 and 6 << 40).
const SELECTION_STREAM: u64 = 7 << 40;
const CONTENT_STREAM: u64 = 8 << 40;
const INCLUSION_STREAM: u64 = 9 << 40;

/// Labels are read from the dataset in chunks of this many examples.
const LABEL_CHUNK: usize = 4096;

/// One audit canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditCanary {
    /// Training example `source_index` (of the training set before the canaries were taken
    /// out), trained with `label` instead of its `true_label`.
    Mislabelled {
        source_index: usize,
        true_label: u32,
        label: u32,
    },
    /// A random window: W + 1 token ids.
    RandomWindow { tokens: Vec<u32> },
}

/// The manifest of a run's black-box canaries: what they are and which were trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditCanaryManifest {
    /// "mislabelled" or "random_window".
    pub kind: String,
    /// Seed of the selection, content and inclusion draws.
    pub seed: u64,
    pub canaries: Vec<AuditCanary>,
    /// Whether each canary was in the training set (independently, probability 1/2).
    pub included: Vec<bool>,
    /// What the score of a canary is (higher means member).
    pub score: String,
}

impl AuditCanaryManifest {
    /// Number of canaries M.
    pub fn m(&self) -> usize {
        self.canaries.len()
    }
    /// Canaries trained on.
    pub fn n_included(&self) -> usize {
        self.included.iter().filter(|&&b| b).count()
    }
}

/// A run's canaries: the manifest, and what scoring needs.
pub struct AuditCanaries {
    pub manifest: AuditCanaryManifest,
    /// Every canary (included or not) as one batch with the targets it is scored on.
    scoring: Batch,
}

impl std::fmt::Debug for AuditCanaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCanaries")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// A training set with canaries inserted (and, for classifiers, without the examples that
/// became canaries): what the trainer and its accountant must be given, so N counts the
/// included canaries.
pub type TrainingSet = Box<dyn Dataset>;

/// The score of classifier canaries.
pub const MISLABELLED_SCORE: &str = "ln p(canary label | input) under the final model: the negative cross-entropy of the assigned (wrong) label";
/// The score of language-model canaries.
pub const RANDOM_WINDOW_SCORE: &str = "mean log-likelihood per predicted token of the canary window under the final model (nats): the negative mean cross-entropy over its W targets";

/// A partial Fisher-Yates: `m` distinct indices of `0..n`, in draw order.
fn distinct_indices(n: usize, m: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for k in 0..m {
        let j = rng.random_range(k..n);
        idx.swap(k, j);
    }
    idx.truncate(m);
    idx
}

fn inclusion_bits(m: usize, seed: u64) -> Vec<bool> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, INCLUSION_STREAM));
    (0..m).map(|_| rng.random_bool(0.5)).collect()
}

/// The largest M a classifier set of `n` examples allows: half of it (the canaries are taken out
/// of the training set, and at least half of it must stay real data).
pub fn max_mislabelled(n: usize) -> usize {
    n / 2
}

/// The largest M a language-model set of `n` windows allows: as many canaries as real windows
/// (about half are included, so canaries stay at most about a third of the training set).
pub fn max_random_windows(n: usize) -> usize {
    n
}

/// M mislabelled canaries from a classifier training set `base` with `classes` classes (see the
/// module docs). Refuses M = 0, M above [`max_mislabelled`], fewer than 2 classes and a dataset
/// whose batches do not carry one label per example.
pub fn insert_mislabelled(
    base: Box<dyn Dataset>,
    classes: usize,
    m: usize,
    seed: u64,
) -> Result<(TrainingSet, AuditCanaries)> {
    let n = base.len();
    if m == 0 || m > max_mislabelled(n) {
        return Err(EngineError::Config(format!(
            "{m} mislabelled canaries requested; between 1 and {} (half the {n} training examples) are possible",
            max_mislabelled(n)
        )));
    }
    if classes < 2 {
        return Err(EngineError::Config(format!(
            "mislabelled canaries need at least 2 classes, the data has {classes}"
        )));
    }
    let mut labels = Vec::with_capacity(n);
    let all: Vec<usize> = (0..n).collect();
    for c in all.chunks(LABEL_CHUNK) {
        let b = base.batch(c);
        if b.targets.len() != c.len() {
            return Err(EngineError::Config(
                "mislabelled canaries need one label per example (a classifier dataset)".into(),
            ));
        }
        labels.extend_from_slice(&b.targets);
    }
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(EngineError::Shape(format!(
            "label {l} outside the {classes} classes"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, SELECTION_STREAM));
    let sources = distinct_indices(n, m, &mut rng);
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, CONTENT_STREAM));
    let canary_labels: Vec<u32> = sources
        .iter()
        .map(|&i| {
            // Uniform over the classes - 1 wrong ones.
            let shift = 1 + rng.random_range(0..classes - 1) as u32;
            (labels[i] + shift) % classes as u32
        })
        .collect();
    let included = inclusion_bits(m, seed);
    let mut is_canary = vec![false; n];
    for &i in &sources {
        is_canary[i] = true;
    }
    let mut map: Vec<usize> = (0..n).filter(|&i| !is_canary[i]).collect();
    let mut relabel = vec![None; map.len()];
    for (k, &i) in sources.iter().enumerate() {
        if included[k] {
            map.push(i);
            relabel.push(Some(canary_labels[k]));
        }
    }
    let mut scoring = base.batch(&sources);
    scoring.targets = canary_labels.clone();
    let canaries = sources
        .iter()
        .zip(&canary_labels)
        .map(|(&i, &label)| AuditCanary::Mislabelled {
            source_index: i,
            true_label: labels[i],
            label,
        })
        .collect();
    let train: TrainingSet = Box::new(Relabelled { base, map, relabel });
    Ok((
        train,
        AuditCanaries {
            manifest: AuditCanaryManifest {
                kind: "mislabelled".into(),
                seed,
                canaries,
                included,
                score: MISLABELLED_SCORE.into(),
            },
            scoring,
        },
    ))
}

/// M random-window canaries for a language-model training set `base` of windows of `window`
/// tokens, each of W + 1 tokens drawn uniformly from `token_ids` (see the module docs). Refuses
/// M = 0, M above [`max_random_windows`], an empty `token_ids` and a dataset that is not token
/// windows of that length.
pub fn insert_random_windows(
    base: Box<dyn Dataset>,
    window: usize,
    token_ids: &[u32],
    m: usize,
    seed: u64,
) -> Result<(TrainingSet, AuditCanaries)> {
    let n = base.len();
    if m == 0 || m > max_random_windows(n) {
        return Err(EngineError::Config(format!(
            "{m} random-window canaries requested; between 1 and the {} training windows are possible",
            max_random_windows(n)
        )));
    }
    if token_ids.is_empty() {
        return Err(EngineError::Config(
            "random-window canaries need a non-empty vocabulary".into(),
        ));
    }
    match &base.batch(&[0]).input {
        Value::Tokens(t) if t.seq_len == window => {}
        _ => {
            return Err(EngineError::Config(format!(
                "random-window canaries need a dataset of {window}-token windows"
            )));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, CONTENT_STREAM));
    let windows: Vec<Vec<u32>> = (0..m)
        .map(|_| {
            (0..=window)
                .map(|_| token_ids[rng.random_range(0..token_ids.len())])
                .collect()
        })
        .collect();
    let included = inclusion_bits(m, seed);
    let extra: Vec<Vec<u32>> = windows
        .iter()
        .zip(&included)
        .filter(|(_, inc)| **inc)
        .map(|(w, _)| w.clone())
        .collect();
    let scoring = windows_batch(window, &windows.iter().collect::<Vec<_>>());
    let train: TrainingSet = Box::new(WithWindows {
        base,
        n_base: n,
        window,
        extra,
    });
    Ok((
        train,
        AuditCanaries {
            manifest: AuditCanaryManifest {
                kind: "random_window".into(),
                seed,
                canaries: windows
                    .into_iter()
                    .map(|tokens| AuditCanary::RandomWindow { tokens })
                    .collect(),
                included,
                score: RANDOM_WINDOW_SCORE.into(),
            },
            scoring,
        },
    ))
}

/// Windows of W + 1 tokens as one batch (time-major inputs and targets, as `TokenWindowDataset`).
fn windows_batch(window: usize, windows: &[&Vec<u32>]) -> Batch {
    let b = windows.len();
    let mut ids = vec![0u32; window * b];
    let mut targets = vec![0u32; window * b];
    for (j, w) in windows.iter().enumerate() {
        for t in 0..window {
            ids[t * b + j] = w[t];
            targets[t * b + j] = w[t + 1];
        }
    }
    Batch {
        input: Value::Tokens(TokenInput {
            seq_len: window,
            batch: b,
            ids,
        }),
        targets,
        mask: None,
    }
}

/// The examples `idx` of a batch (targets per example, or time-major per row for sequences).
fn select_batch(b: &Batch, idx: &[usize]) -> Batch {
    let n = b.len();
    let rows_per = b.targets.len().checked_div(n).unwrap_or(1);
    let rows: Vec<usize> = (0..rows_per)
        .flat_map(|s| idx.iter().map(move |&i| s * n + i))
        .collect();
    Batch {
        input: b.input.select(idx),
        targets: rows.iter().map(|&r| b.targets[r]).collect(),
        mask: b
            .mask
            .as_ref()
            .map(|m| rows.iter().map(|&r| m[r]).collect()),
    }
}

impl AuditCanaries {
    /// Every canary's score under `params` (see the module docs; higher means member), in
    /// manifest order, evaluated in chunks of `chunk` canaries.
    pub fn scores(&self, model: &Model, params: &[f32], chunk: usize) -> Result<Vec<f64>> {
        let m = self.manifest.m();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut out = Vec::with_capacity(m);
        let idx: Vec<usize> = (0..m).collect();
        for c in idx.chunks(chunk.max(1)) {
            let b = select_batch(&self.scoring, c);
            let logits = model.forward(params, &b.input, false, &mut rng)?;
            let loss = crate::loss::softmax_cross_entropy(&logits, &b.targets, b.mask.as_deref())?;
            out.extend(loss.per_example.iter().map(|&l| -(l as f64)));
        }
        Ok(out)
    }
}

/// A classifier training set seen through an index map, with some labels replaced.
struct Relabelled {
    base: Box<dyn Dataset>,
    /// Base index of each example of this view.
    map: Vec<usize>,
    /// The label an example is trained with instead of its own, if any.
    relabel: Vec<Option<u32>>,
}

impl Dataset for Relabelled {
    fn len(&self) -> usize {
        self.map.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let mapped: Vec<usize> = idx.iter().map(|&i| self.map[i]).collect();
        let mut b = self.base.batch(&mapped);
        for (j, &i) in idx.iter().enumerate() {
            if let Some(l) = self.relabel[i] {
                b.targets[j] = l;
            }
        }
        b
    }
}

/// Language-model windows followed by extra windows (the included canaries).
struct WithWindows {
    base: Box<dyn Dataset>,
    n_base: usize,
    window: usize,
    extra: Vec<Vec<u32>>,
}

impl Dataset for WithWindows {
    fn len(&self) -> usize {
        self.n_base + self.extra.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let base_idx: Vec<usize> = idx.iter().copied().filter(|&i| i < self.n_base).collect();
        if base_idx.len() == idx.len() {
            return self.base.batch(idx);
        }
        let canaries: Vec<&Vec<u32>> = idx
            .iter()
            .filter(|&&i| i >= self.n_base)
            .map(|&i| &self.extra[i - self.n_base])
            .collect();
        let extra = windows_batch(self.window, &canaries);
        if base_idx.is_empty() {
            return extra;
        }
        let base = self.base.batch(&base_idx);
        let (Value::Tokens(bt), Value::Tokens(et)) = (&base.input, &extra.input) else {
            unreachable!("checked at construction: the base dataset yields token windows")
        };
        // Interleave back into the order of `idx`, column by column (time-major layout).
        let (w, b, b0, b1) = (self.window, idx.len(), base_idx.len(), canaries.len());
        let mut ids = vec![0u32; w * b];
        let mut targets = vec![0u32; w * b];
        let mut mask = base.mask.as_ref().map(|_| vec![1.0f32; w * b]);
        let (mut jb, mut je) = (0, 0);
        for (j, &i) in idx.iter().enumerate() {
            for t in 0..w {
                if i < self.n_base {
                    ids[t * b + j] = bt.ids[t * b0 + jb];
                    targets[t * b + j] = base.targets[t * b0 + jb];
                    if let (Some(m), Some(bm)) = (mask.as_mut(), base.mask.as_ref()) {
                        m[t * b + j] = bm[t * b0 + jb];
                    }
                } else {
                    ids[t * b + j] = et.ids[t * b1 + je];
                    targets[t * b + j] = extra.targets[t * b1 + je];
                }
            }
            if i < self.n_base {
                jb += 1;
            } else {
                je += 1;
            }
        }
        Batch {
            input: Value::Tokens(TokenInput {
                seq_len: w,
                batch: b,
                ids,
            }),
            targets,
            mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{DenseDataset, TokenWindowDataset};

    fn dense(n: usize, classes: u32) -> DenseDataset {
        let x = (0..n * 3).map(|v| v as f32).collect();
        let labels = (0..n as u32).map(|i| i % classes).collect();
        DenseDataset::new(x, vec![3], labels).unwrap()
    }

    #[test]
    fn mislabelled_canaries_are_wrong_balanced_seeded_and_counted_in_n() {
        let (train, c) = insert_mislabelled(Box::new(dense(2000, 10)), 10, 1000, 7).unwrap();
        let k = c.manifest.n_included();
        // Inclusion ~ Binomial(1000, 1/2): within 5 sd (sd 15.8).
        assert!((k as f64 - 500.0).abs() < 80.0, "{k}");
        // N = the 1000 real examples left + the included canaries.
        assert_eq!(train.len(), 1000 + k);
        let mut sources = Vec::new();
        for a in &c.manifest.canaries {
            let AuditCanary::Mislabelled {
                source_index,
                true_label,
                label,
            } = a
            else {
                panic!("{a:?}")
            };
            assert_eq!(*true_label, (*source_index % 10) as u32);
            assert_ne!(label, true_label);
            assert!(*label < 10);
            sources.push(*source_index);
        }
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), 1000);
        // The training view: the real examples keep their labels, the canaries carry theirs.
        let all: Vec<usize> = (0..train.len()).collect();
        let b = train.batch(&all);
        let Value::Dense(x) = &b.input else { panic!() };
        let mut trained_canaries = 0;
        for (j, &t) in b.targets.iter().enumerate() {
            let src = x.data[j * 3] as usize / 3;
            match c.manifest.canaries.iter().position(|a| {
                matches!(a, AuditCanary::Mislabelled { source_index, .. } if *source_index == src)
            }) {
                Some(k) => {
                    assert!(c.manifest.included[k]);
                    let AuditCanary::Mislabelled { label, .. } = c.manifest.canaries[k] else {
                        unreachable!()
                    };
                    assert_eq!(t, label);
                    trained_canaries += 1;
                }
                None => assert_eq!(t, (src % 10) as u32),
            }
        }
        assert_eq!(trained_canaries, k);
        // Seeded: the same seed gives the same manifest, another seed another one.
        let (_, again) = insert_mislabelled(Box::new(dense(2000, 10)), 10, 1000, 7).unwrap();
        assert_eq!(again.manifest, c.manifest);
        let (_, other) = insert_mislabelled(Box::new(dense(2000, 10)), 10, 1000, 8).unwrap();
        assert_ne!(other.manifest.included, c.manifest.included);
        // M limits.
        assert!(insert_mislabelled(Box::new(dense(2000, 10)), 10, 1001, 7).is_err());
        assert!(insert_mislabelled(Box::new(dense(2000, 10)), 10, 0, 7).is_err());
        assert!(insert_mislabelled(Box::new(dense(20, 1)), 1, 5, 7).is_err());
    }

    #[test]
    fn random_windows_join_the_windows_and_batches_keep_the_order() {
        let w = 4;
        let base = TokenWindowDataset::new((0..41).map(|t| t % 5).collect(), w).unwrap();
        assert_eq!(base.len(), 10);
        let vocab = [10u32, 11, 12];
        let (train, c) = insert_random_windows(Box::new(base.clone()), w, &vocab, 10, 3).unwrap();
        let k = c.manifest.n_included();
        assert_eq!(train.len(), 10 + k);
        assert!(k > 0, "10 fair coins all tails: reseed the test");
        let included: Vec<&Vec<u32>> = c
            .manifest
            .canaries
            .iter()
            .zip(&c.manifest.included)
            .filter(|(_, i)| **i)
            .map(|(a, _)| match a {
                AuditCanary::RandomWindow { tokens } => tokens,
                a => panic!("{a:?}"),
            })
            .collect();
        for t in included.iter().flat_map(|w| w.iter()) {
            assert!(vocab.contains(t));
        }
        assert!(included.iter().all(|t| t.len() == w + 1));
        // A mixed batch, out of order: each column is its example.
        let idx = [10usize, 3, 10 + k - 1, 0];
        let b = train.batch(&idx);
        let Value::Tokens(t) = &b.input else { panic!() };
        for (j, &i) in idx.iter().enumerate() {
            let want: Vec<u32> = if i < 10 {
                (0..=w).map(|s| ((i * w + s) % 5) as u32).collect()
            } else {
                included[i - 10].clone()
            };
            let got_in: Vec<u32> = (0..w).map(|s| t.ids[s * 4 + j]).collect();
            let got_tg: Vec<u32> = (0..w).map(|s| b.targets[s * 4 + j]).collect();
            assert_eq!(got_in, want[..w]);
            assert_eq!(got_tg, want[1..]);
        }
        assert!(insert_random_windows(Box::new(base.clone()), w, &vocab, 11, 3).is_err());
        assert!(insert_random_windows(Box::new(base.clone()), w + 1, &vocab, 5, 3).is_err());
        assert!(insert_random_windows(Box::new(base), w, &[], 5, 3).is_err());
    }

    #[test]
    fn scores_are_negative_losses_in_manifest_order() {
        use crate::models::ModelConfig;
        let cfg = ModelConfig::Mlp {
            input: 3,
            hidden: vec![4],
            classes: 10,
            activation: crate::layers::ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        };
        let model = cfg.build().unwrap();
        let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(1));
        let (_, c) = insert_mislabelled(Box::new(dense(40, 10)), 10, 20, 2).unwrap();
        let s = c.scores(&model, &params, 7).unwrap();
        assert_eq!(s.len(), 20);
        // One canary at a time gives the same numbers (chunking does not matter).
        let one = c.scores(&model, &params, 1).unwrap();
        for (a, b) in s.iter().zip(&one) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Each is ln softmax(logits)[label] of the canary's input, computed here directly.
        let sources: Vec<usize> = c
            .manifest
            .canaries
            .iter()
            .map(|a| match a {
                AuditCanary::Mislabelled { source_index, .. } => *source_index,
                a => panic!("{a:?}"),
            })
            .collect();
        let raw = dense(40, 10).batch(&sources);
        let logits = model
            .forward(
                &params,
                &raw.input,
                false,
                &mut ChaCha8Rng::seed_from_u64(0),
            )
            .unwrap();
        for (k, a) in c.manifest.canaries.iter().enumerate() {
            let AuditCanary::Mislabelled { label, .. } = a else {
                unreachable!()
            };
            let row = &logits.data[k * 10..(k + 1) * 10];
            let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
            let want = row[*label as usize] as f64 - lse;
            // f32 logits and the engine's approximate exp: 1e-4 absolute.
            assert!((s[k] - want).abs() < 1e-4, "{k}: {} vs {want}", s[k]);
        }
        assert!(s.iter().all(|&v| v <= 0.0 && v.is_finite()));
    }
}
