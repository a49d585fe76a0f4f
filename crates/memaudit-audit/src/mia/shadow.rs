//! Shadow models for memaudit's own classifiers, trained on the engine, cached and resumable.
//!
//! - **Membership in complementary pairs.** Pair p shuffles the pool of n examples with a seed
//!   derived from (seed, p, dataset hash) and splits it into two halves; model 2p trains on the
//!   first, model 2p+1 on the second. Every example is IN for exactly one model of each pair, and
//!   adding pairs later trains only the new ones (earlier pairs' splits do not move). The target
//!   model (index 2 x pairs) trains on its own seeded half.
//! - **Training** goes through the engine's `Trainer` with the caller's `TrainConfig` (plain or
//!   DP-SGD); each model gets its own seed, and DP noise is seeded (`seeded_noise`): shadow
//!   models are not released, and seeding makes them reproducible and shardable.
//! - **The cache.** One atomic unit (`memaudit_engine::atomic`) per model, named by the MD5 of
//!   its key: a JSON of everything that changes the model (cache format, dataset hash, pool size,
//!   model index and role, membership seed, the full train config with the model's seed and
//!   privacy settings). The unit's completion marker holds the key JSON itself; a unit whose
//!   marker differs from the expected key is refused, never reused. A cache folder written with
//!   another cache format is refused as a whole.
//! - **Sharding.** [`train_or_reuse`] trains one model by index, so each process of a scheduler
//!   can train one; a later run finds them complete and reuses them.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use memaudit_engine::atomic::{self, AtomicUnit};
use memaudit_engine::augment::ShiftAugment;
use memaudit_engine::train::{Dataset, Silent, TrainConfig, Trainer};
use memaudit_engine::{Batch, Model, Value};

use super::error::{MiaError, Result};
use super::signals::{log_probability, logit_confidence};

/// The cache layout and key format; bump when either changes.
pub const CACHE_FORMAT: u32 = 1;
const CACHE_MANIFEST: &str = "memaudit-shadow-cache.json";

/// What the shadow set is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPlan {
    /// The training configuration every model uses (its `seed` is replaced per model).
    pub train: TrainConfig,
    /// Identifies the pool (inputs, labels, order): see [`dataset_hash`].
    pub data_hash: String,
    /// Examples in the pool.
    pub n: usize,
    /// Complementary pairs (2 x pairs shadow models).
    pub pairs: usize,
    /// Membership and per-model seeds derive from it.
    pub seed: u64,
    /// Training-batch augmentation of every model (`--augment shift`); part of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<ShiftAugment>,
}

use memaudit_engine::sampler::mix_seed as mix;

fn hash_u64(s: &str) -> u64 {
    let d = Md5::digest(s.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

impl ShadowPlan {
    /// A plan, refusing a pool too small to split into halves of at least one batch.
    pub fn new(
        train: TrainConfig,
        data_hash: String,
        n: usize,
        pairs: usize,
        seed: u64,
    ) -> Result<Self> {
        if pairs == 0 {
            return Err(MiaError::InvalidInput {
                what: "shadow pairs".into(),
                reason: "need at least 1 pair (2 shadow models)".into(),
            });
        }
        if n < 2 || n / 2 < train.batch_size {
            return Err(MiaError::InvalidInput {
                what: format!("dataset of {n} examples"),
                reason: format!(
                    "too small to split into pairs: each half ({}) must hold at least one batch of {}",
                    n / 2,
                    train.batch_size
                ),
            });
        }
        Ok(Self {
            train,
            data_hash,
            n,
            pairs,
            seed,
            augment: None,
        })
    }

    /// Shadow models plus the target.
    pub fn models(&self) -> usize {
        2 * self.pairs + 1
    }

    /// Index of the target model.
    pub fn target_index(&self) -> usize {
        2 * self.pairs
    }

    /// The models scheduler shard `shard` trains, by pair (see docs/scale-out.md): the work items
    /// are the pairs plus the target; shard I owns the items `[(P+1)*I/N, (P+1)*(I+1)/N)`, pair p
    /// being models 2p and 2p+1 and the target model 2P. A pure function of (plan, I, N); the
    /// shards of one N cover every model exactly once.
    pub fn models_of_shard(&self, shard: memaudit_engine::shard::Shard) -> Vec<usize> {
        shard
            .range(self.pairs as u64 + 1)
            .flat_map(|item| {
                let item = item as usize;
                if item < self.pairs {
                    vec![2 * item, 2 * item + 1]
                } else {
                    vec![self.target_index()]
                }
            })
            .collect()
    }

    fn split_seed(&self, index: usize) -> u64 {
        // The target's split uses a tag no pair index reaches.
        let slot = if index == self.target_index() {
            u64::MAX
        } else {
            (index / 2) as u64
        };
        mix(mix(self.seed, slot), hash_u64(&self.data_hash))
    }

    /// Which pool examples model `index` trains on: exactly floor(n/2) for the first model of a
    /// pair and the target, the rest for the second model of a pair.
    pub fn membership(&self, index: usize) -> Vec<bool> {
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.split_seed(index)));
        let mut first = vec![false; self.n];
        for &i in &order[..self.n / 2] {
            first[i] = true;
        }
        if index != self.target_index() && index % 2 == 1 {
            first.iter_mut().for_each(|m| *m = !*m);
        }
        first
    }

    /// The training configuration of model `index` (its own seed; DP noise seeded).
    pub fn train_config(&self, index: usize) -> TrainConfig {
        let mut c = self.train.clone();
        // The target's seed does not depend on its index (2 x pairs): adding pairs reuses it.
        let tag = if index == self.target_index() {
            u64::MAX
        } else {
            0xA5A5_0000 + index as u64
        };
        c.seed = mix(self.seed, tag);
        c.seeded_noise = true;
        c
    }

    /// The same plan with training-batch augmentation.
    pub fn with_augment(mut self, augment: Option<ShiftAugment>) -> Self {
        self.augment = augment;
        self
    }

    /// Everything that changes model `index`, as JSON (the cache key before hashing).
    pub fn key_json(&self, index: usize) -> String {
        let role = if index == self.target_index() {
            json!({"target": true})
        } else {
            json!({"pair": index / 2, "side": index % 2})
        };
        let mut key = json!({
            "format": CACHE_FORMAT,
            "data_hash": self.data_hash,
            "n": self.n,
            "role": role,
            "split_seed": self.split_seed(index),
            "train": self.train_config(index),
        });
        // Only present when used, so the keys of models trained without augmentation (and the
        // caches holding them) stay what they were.
        if let Some(a) = &self.augment {
            key["augment"] = json!({"shift": a});
        }
        key.to_string()
    }

    /// The cache key of model `index` (hex MD5 of `key_json`).
    pub fn key(&self, index: usize) -> String {
        format!("{:x}", Md5::digest(self.key_json(index).as_bytes()))
    }
}

/// MD5 of a dense dataset's inputs (f32 bits) and labels, in order: the pool's identity.
pub fn dataset_hash(data: &dyn Dataset) -> Result<String> {
    let mut h = Md5::new();
    let n = data.len();
    h.update((n as u64).to_le_bytes());
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(1024) {
        let b = data.batch(c);
        match &b.input {
            Value::Dense(t) => {
                for v in &t.data {
                    h.update(v.to_bits().to_le_bytes());
                }
            }
            // Language-model windows: the token ids (time-major, as the batch holds them).
            Value::Tokens(t) => {
                h.update((t.seq_len as u64).to_le_bytes());
                for v in &t.ids {
                    h.update(v.to_le_bytes());
                }
            }
            _ => {
                return Err(MiaError::InvalidInput {
                    what: "shadow training data".into(),
                    reason: "only dense classifier inputs (images, tabular rows) and language-model token windows are supported; write a score file for other models (docs/mia.md)".into(),
                });
            }
        }
        for t in &b.targets {
            h.update(t.to_le_bytes());
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The examples `idx` of a dataset, as a dataset.
pub struct Subset<'a> {
    pub inner: &'a dyn Dataset,
    pub idx: Vec<usize>,
}

impl Dataset for Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let map: Vec<usize> = idx.iter().map(|&i| self.idx[i]).collect();
        self.inner.batch(&map)
    }
}

/// A trained (or reused) model.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    pub index: usize,
    pub key: String,
    pub path: PathBuf,
    pub params: Vec<f32>,
    /// Found complete in the cache.
    pub reused: bool,
    pub seconds: f64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MiaError + '_ {
    move |source| MiaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn engine(what: &str) -> impl Fn(memaudit_engine::EngineError) -> MiaError + '_ {
    move |e| MiaError::InvalidInput {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Create or check the cache folder's manifest (refuses another cache format).
pub fn open_cache(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let manifest = dir.join(CACHE_MANIFEST);
    match std::fs::read(&manifest) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let format = v.get("format").and_then(serde_json::Value::as_u64);
            if format != Some(CACHE_FORMAT as u64) {
                return Err(MiaError::InvalidInput {
                    what: format!("shadow cache {}", dir.display()),
                    reason: format!(
                        "written with cache format {} (memaudit {}); this memaudit writes format {CACHE_FORMAT}: use another cache folder",
                        format.map_or("unknown".into(), |f| f.to_string()),
                        v.get("memaudit")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or("unknown")
                    ),
                });
            }
            Ok(())
        }
        Err(_) => {
            let body = json!({"format": CACHE_FORMAT, "memaudit": env!("CARGO_PKG_VERSION")});
            std::fs::write(&manifest, body.to_string()).map_err(io(&manifest))
        }
    }
}

fn read_params(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.len() % 4 != 0 {
        return Err(MiaError::InvalidInput {
            what: path.display().to_string(),
            reason: format!("{} bytes is not a whole number of f32", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Model `index` from the cache when a complete unit with its exact key is there, else trained
/// on its half of `pool` and written as an atomic unit.
pub fn train_or_reuse(
    plan: &ShadowPlan,
    index: usize,
    cache: &Path,
    pool: &dyn Dataset,
) -> Result<TrainedModel> {
    if index >= plan.models() {
        return Err(MiaError::InvalidInput {
            what: format!("model index {index}"),
            reason: format!(
                "the plan has {} models (0..{} shadow, {} target)",
                plan.models(),
                plan.target_index() - 1,
                plan.target_index()
            ),
        });
    }
    if pool.len() != plan.n {
        return Err(MiaError::InvalidInput {
            what: "shadow pool".into(),
            reason: format!("{} examples, the plan has {}", pool.len(), plan.n),
        });
    }
    let key = plan.key(index);
    let key_json = plan.key_json(index);
    let dir = cache.join(&key);
    let started = std::time::Instant::now();
    if let Some(marker) = atomic::marker(&dir) {
        if marker != key_json.as_bytes() {
            return Err(MiaError::InvalidInput {
                what: format!("shadow cache entry {}", dir.display()),
                reason: "its key differs from this model's (stale or foreign entry); it is not reused: delete it or use another cache folder".into(),
            });
        }
        let params = read_params(&dir.join("params.f32"))?;
        return Ok(TrainedModel {
            index,
            key,
            path: dir,
            params,
            reused: true,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let member = plan.membership(index);
    let subset = Subset {
        inner: pool,
        idx: (0..plan.n).filter(|&i| member[i]).collect(),
    };
    let cfg = plan.train_config(index);
    let mut trainer =
        Trainer::new(cfg, subset.len(), None, false).map_err(engine("shadow training"))?;
    trainer.set_augment(plan.augment);
    trainer
        .run(&subset, None, &mut Silent)
        .map_err(engine("shadow training"))?;
    let unit = AtomicUnit::begin(&dir).map_err(engine("shadow cache"))?;
    let bytes: Vec<u8> = trainer
        .params
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    unit.write("params.f32", &bytes)
        .map_err(engine("shadow cache"))?;
    unit.write("key.json", key_json.as_bytes())
        .map_err(engine("shadow cache"))?;
    unit.commit(key_json.as_bytes(), false)
        .map_err(engine("shadow cache"))?;
    Ok(TrainedModel {
        index,
        key,
        path: dir,
        params: trainer.params,
        reused: false,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The membership queries of every example: query 0 is the identity, then (with augmentation)
/// the training shifts nearest to it (`ShiftAugment::queries`, a prefix of all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    augment: Option<ShiftAugment>,
    shifts: Vec<(i64, i64)>,
}

impl Queries {
    /// The identity query only (models trained without augmentation).
    pub fn identity() -> Self {
        Self {
            augment: None,
            shifts: vec![(0, 0)],
        }
    }

    /// The identity and the next `count - 1` shifts of `augment` (`count` between 1 and all
    /// (2 max + 1)^2 shifts).
    pub fn shifts(augment: ShiftAugment, count: usize) -> Result<Self> {
        let all = augment.queries();
        if count == 0 || count > all.len() {
            return Err(MiaError::InvalidInput {
                what: format!("{count} queries"),
                reason: format!(
                    "between 1 (the identity) and {} (every shift of +-{} px)",
                    all.len(),
                    augment.max_shift
                ),
            });
        }
        Ok(Self {
            augment: Some(augment),
            shifts: all[..count].to_vec(),
        })
    }

    /// Number of queries q.
    pub fn len(&self) -> usize {
        self.shifts.len()
    }

    /// Never: the identity is always there.
    pub fn is_empty(&self) -> bool {
        self.shifts.is_empty()
    }

    /// The shifts (dy, dx), identity first.
    pub fn shifts_list(&self) -> &[(i64, i64)] {
        &self.shifts
    }
}

/// A model's signals on every example of `data` and query: LiRA's phi and RMIA's
/// log softmax(z/T)_y, each [n, q] row-major.
pub fn signals(
    model: &Model,
    params: &[f32],
    data: &dyn Dataset,
    temperature: f64,
    queries: &Queries,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = data.len();
    let q = queries.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut phi = vec![0.0; n * q];
    let mut lp = vec![0.0; n * q];
    let idx: Vec<usize> = (0..n).collect();
    for (ci, c) in idx.chunks(512).enumerate() {
        let base = data.batch(c);
        if base.targets.len() != c.len() {
            return Err(MiaError::InvalidInput {
                what: "shadow signals".into(),
                reason: "one label per example is needed (classifiers only)".into(),
            });
        }
        for (j, &(dy, dx)) in queries.shifts.iter().enumerate() {
            let shifted;
            let b = match (&queries.augment, (dy, dx)) {
                (Some(a), s) if s != (0, 0) => {
                    shifted = a.shifted(&base, dy, dx).map_err(engine("shift query"))?;
                    &shifted
                }
                _ => &base,
            };
            let logits = model
                .forward(params, &b.input, false, &mut rng)
                .map_err(engine("shadow signals"))?;
            let classes = logits.data.len() / c.len().max(1);
            for (r, &y) in b.targets.iter().enumerate() {
                let z: Vec<f64> = logits.data[r * classes..(r + 1) * classes]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let at = (ci * 512 + r) * q + j;
                phi[at] = logit_confidence(&z, y as usize);
                lp[at] = log_probability(&z, y as usize, temperature);
            }
        }
    }
    Ok((phi, lp))
}

/// A language model's signals on every window of `data`: the sequence log-likelihood
/// sum_t log Pr(x_t | x_<t) (natural log; LiRA's and RMIA's signal for LMs) and each window's
/// per-token log-probabilities (the Min-K% and zlib baselines).
pub fn lm_signals(
    model: &Model,
    params: &[f32],
    data: &dyn Dataset,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let n = data.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut seq = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(256) {
        let b = data.batch(c);
        let Value::Tokens(t) = &b.input else {
            return Err(MiaError::InvalidInput {
                what: "language-model signals".into(),
                reason: "the data are not token windows".into(),
            });
        };
        let (w, bs) = (t.seq_len, t.batch);
        let logits = model
            .forward(params, &b.input, false, &mut rng)
            .map_err(engine("language-model signals"))?;
        let rows = w * bs;
        if b.targets.len() != rows || rows == 0 || logits.data.len() % rows != 0 {
            return Err(MiaError::InvalidInput {
                what: "language-model signals".into(),
                reason: format!(
                    "{} targets and {} logits for {bs} windows of {w} tokens",
                    b.targets.len(),
                    logits.data.len()
                ),
            });
        }
        let vocab = logits.data.len() / rows;
        for j in 0..bs {
            // Rows are time-major: token t of window j is row t * batch + j.
            let lp: Vec<f64> = (0..w)
                .map(|t| {
                    let r = t * bs + j;
                    let z: Vec<f64> = logits.data[r * vocab..(r + 1) * vocab]
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    log_probability(&z, b.targets[r] as usize, 1.0)
                })
                .collect();
            seq.push(lp.iter().sum());
            tokens.push(lp);
        }
    }
    Ok((seq, tokens))
}

/// Labels of every example of `data` (for per-class results).
pub fn labels(data: &dyn Dataset) -> Vec<i64> {
    let idx: Vec<usize> = (0..data.len()).collect();
    idx.chunks(1024)
        .flat_map(|c| data.batch(c).targets.into_iter().map(i64::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use memaudit_engine::ModelConfig;
    use memaudit_engine::datasets::DenseDataset;
    use memaudit_engine::optim::OptimizerConfig;
    use memaudit_engine::sampler::SamplingMode;

    fn tiny_config(batch: usize) -> TrainConfig {
        TrainConfig {
            model: ModelConfig::Mlp {
                input: 4,
                hidden: vec![8],
                classes: 2,
                activation: memaudit_engine::layers::ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            },
            optimizer: OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            schedule: Default::default(),
            epochs: 2,
            batch_size: batch,
            physical_batch: None,
            sampling: SamplingMode::Shuffle,
            seed: 0,
            privacy: None,
            seeded_noise: false,
        }
    }

    fn pool(n: usize) -> DenseDataset {
        let x: Vec<f32> = (0..n * 4).map(|i| ((i * 37) % 11) as f32 / 11.0).collect();
        let y: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        DenseDataset::new(x, vec![4], y).unwrap()
    }

    #[test]
    fn pairs_are_complementary_halves_and_adding_pairs_keeps_old_splits() {
        let p4 = ShadowPlan::new(tiny_config(4), "h".into(), 101, 4, 7).unwrap();
        for p in 0..4 {
            let (a, b) = (p4.membership(2 * p), p4.membership(2 * p + 1));
            assert_eq!(a.iter().filter(|m| **m).count(), 50);
            assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        }
        assert_ne!(p4.membership(0), p4.membership(2));
        let p8 = ShadowPlan {
            pairs: 8,
            ..p4.clone()
        };
        for i in 0..8 {
            assert_eq!(p4.membership(i), p8.membership(i));
            assert_eq!(p4.key(i), p8.key(i));
        }
        assert_eq!(p4.key(p4.target_index()), p8.key(p8.target_index()));
        // The target's split and key do not collide with a shadow model's.
        assert_ne!(p8.membership(p8.target_index()), p8.membership(0));
        // A different dataset moves every split and key.
        let other = ShadowPlan {
            data_hash: "g".into(),
            ..p4.clone()
        };
        assert_ne!(other.membership(0), p4.membership(0));
        assert_ne!(other.key(0), p4.key(0));
    }

    #[test]
    fn a_pool_too_small_for_pairs_is_refused() {
        let e = ShadowPlan::new(tiny_config(64), "h".into(), 100, 2, 0).unwrap_err();
        assert!(
            e.to_string().contains("too small to split into pairs"),
            "{e}"
        );
    }

    #[test]
    fn the_cache_trains_once_reuses_by_key_and_refuses_a_stale_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        open_cache(&cache).unwrap();
        let data = pool(40);
        let hash = dataset_hash(&data).unwrap();
        let plan = ShadowPlan::new(tiny_config(4), hash, 40, 1, 3).unwrap();
        let first = train_or_reuse(&plan, 0, &cache, &data).unwrap();
        assert!(!first.reused);
        let again = train_or_reuse(&plan, 0, &cache, &data).unwrap();
        assert!(again.reused);
        assert_eq!(again.params, first.params);
        assert_eq!(again.key, first.key);
        // Another epoch count is another model: a new key, trained anew.
        let mut longer = plan.clone();
        longer.train.epochs = 3;
        assert_ne!(longer.key(0), plan.key(0));
        // An entry whose marker does not match its key is refused, not reused.
        let entry = cache.join(plan.key(1));
        let unit = AtomicUnit::begin(&entry).unwrap();
        unit.write("params.f32", &[0; 4]).unwrap();
        unit.commit(b"{\"format\": 0}", false).unwrap();
        let e = train_or_reuse(&plan, 1, &cache, &data).unwrap_err();
        assert!(e.to_string().contains("not reused"), "{e}");
        // A cache folder of another format is refused as a whole.
        std::fs::write(
            cache.join(CACHE_MANIFEST),
            r#"{"format": 99, "memaudit": "9.9"}"#,
        )
        .unwrap();
        let e = open_cache(&cache).unwrap_err();
        assert!(e.to_string().contains("format 99"), "{e}");
        // Signals have one value per example and finite phi.
        let model = plan.train.model.build().unwrap();
        let (phi, lp) = signals(&model, &first.params, &data, 1.0, &Queries::identity()).unwrap();
        assert_eq!(phi.len(), 40);
        assert!(phi.iter().all(|v| v.is_finite()) && lp.iter().all(|v| *v <= 0.0));
    }

    #[test]
    fn augmentation_changes_the_key_and_the_model_and_queries_start_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        open_cache(&cache).unwrap();
        let data = pool(40);
        let hash = dataset_hash(&data).unwrap();
        let plain = ShadowPlan::new(tiny_config(4), hash, 40, 1, 3).unwrap();
        // The pool's 4 features read as one 2x2 image; shifts of +-1 px.
        let shift = ShiftAugment::new(1, 1, 2, 2).unwrap();
        let aug = plain.clone().with_augment(Some(shift));
        assert_ne!(aug.key(0), plain.key(0));
        assert!(aug.key_json(0).contains("\"augment\""));
        assert!(!plain.key_json(0).contains("augment"));
        let a = train_or_reuse(&aug, 0, &cache, &data).unwrap();
        let p = train_or_reuse(&plain, 0, &cache, &data).unwrap();
        assert!(!a.reused && !p.reused);
        assert_ne!(a.params, p.params, "augmented batches must change training");
        let model = plain.train.model.build().unwrap();
        let queries = Queries::shifts(shift, 9).unwrap();
        let (phi, lp) = signals(&model, &a.params, &data, 1.0, &queries).unwrap();
        let (phi0, lp0) = signals(&model, &a.params, &data, 1.0, &Queries::identity()).unwrap();
        assert_eq!((phi.len(), lp.len()), (40 * 9, 40 * 9));
        for i in 0..40 {
            assert_eq!(phi[i * 9], phi0[i]);
            assert_eq!(lp[i * 9], lp0[i]);
        }
        // A shifted query of a 2x2 image sees other inputs: some signal differs.
        assert!((0..40).any(|i| phi[i * 9 + 1] != phi0[i]));
        assert!(Queries::shifts(shift, 10).is_err());
    }

    #[test]
    fn language_model_signals_are_window_sums_of_token_log_probabilities() {
        use memaudit_engine::datasets::TokenWindowDataset;
        let tokens: Vec<u32> = (0..241).map(|i| ((i * 7) % 13) as u32).collect();
        let data = TokenWindowDataset::new(tokens, 8).unwrap();
        assert_eq!(data.len(), 30);
        let cfg = ModelConfig::LstmLm {
            vocab: 13,
            embed: 4,
            hidden: 6,
            layers: 1,
            dropout: 0.0,
        };
        let model = cfg.build().unwrap();
        let params = model.init_params(&mut ChaCha8Rng::seed_from_u64(1));
        let (seq, tok) = lm_signals(&model, &params, &data).unwrap();
        assert_eq!((seq.len(), tok.len()), (30, 30));
        for (s, t) in seq.iter().zip(&tok) {
            assert_eq!(t.len(), 8);
            // Summation order is the same: exact.
            assert_eq!(*s, t.iter().sum::<f64>());
            // An untrained model is near uniform over 13 tokens: each log-prob near -ln 13 = -2.56.
            assert!(t.iter().all(|v| (*v + 13f64.ln()).abs() < 1.0), "{t:?}");
        }
        // Token windows have a pool identity too (the cache key needs it).
        assert_eq!(dataset_hash(&data).unwrap(), dataset_hash(&data).unwrap());
        let other =
            TokenWindowDataset::new((0..241).map(|i| (i % 13) as u32).collect(), 8).unwrap();
        assert_ne!(dataset_hash(&data).unwrap(), dataset_hash(&other).unwrap());
    }

    #[test]
    fn scheduler_shards_cover_every_model_once() {
        use memaudit_engine::shard::Shard;
        for pairs in [1usize, 2, 5, 8] {
            let plan = ShadowPlan::new(tiny_config(4), "h".into(), 100, pairs, 7).unwrap();
            for count in [1u64, 2, 3, 7] {
                let mut all: Vec<usize> = (0..count)
                    .flat_map(|index| plan.models_of_shard(Shard { index, count }))
                    .collect();
                all.sort_unstable();
                assert_eq!(
                    all,
                    (0..plan.models()).collect::<Vec<_>>(),
                    "{pairs} pairs, {count} shards"
                );
            }
        }
    }
}
