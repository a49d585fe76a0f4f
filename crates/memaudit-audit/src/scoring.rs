//! Log-perplexity of canaries (The Secret Sharer, Carlini et al. 2019, Def. 1:
//! `Px(x_1..x_n) = Σ -log2 Pr(x_i | x_1..x_{i-1})`, base 2, summed over the scored tokens), for
//! any [`IncrementalLm`], and exhaustive scoring of the whole randomness space by a
//! breadth-first *trie walk*.
//!
//! Trie walk: candidates that share a prefix share the LM state after it, so the state after the
//! conditioning tokens is computed once and every trie node at depth d < n-1 is stepped exactly
//! once (leaves need no step: their score is their parent's score plus one log-probability that
//! the parent's step already produced). For `{digits:6}` that is 10 + 100 + ... + 10^5 = 111,110
//! rows instead of 6 * 10^6. Nodes are expanded depth by depth in chunks of `chunk_rows` rows
//! (one batched `step` per chunk), recursing depth-first over chunks so memory stays at about one
//! chunk per depth. Independent subtrees can run as rayon tasks.
//!
//! Per-token cost is `max(0, -log2 p)`: log-softmax in f32 can return ln p slightly above 0 for
//! p ~ 1; clamping keeps costs non-negative, which exact Dijkstra extraction and the pruning of
//! the streaming rank both rely on. Every scorer here uses the same [`token_cost_bits`].

use memaudit_engine::{IncrementalLm, LmState};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{AuditError, Result, invalid};
use crate::tokens::{ScoredStep, TokenizedTemplate};

/// Default rows per batched LM step in the trie walk and batch scoring. Measured with a
/// shape-only LM of the 2x200 LSTM's shapes (state 800 floats, vocabulary 50; example
/// `walk_overhead`): the walk's own cost for 10^6 candidates is ~15-30 ms at 1-4k rows but
/// ~140 ms at 64k rows, where each level's states (210 MB) fall out of cache. 4096 rows still
/// make [4096 x 200] x [200 x 800] GEMMs, large enough to run at full speed.
pub const DEFAULT_CHUNK_ROWS: usize = 4096;

/// Cost of a token in bits, `max(0, -log2 p)`, from a natural-log probability.
#[inline]
pub fn token_cost_bits(ln_p: f32) -> f64 {
    let c = -(ln_p as f64) * std::f64::consts::LOG2_E;
    if c > 0.0 { c } else { 0.0 }
}

/// How to batch and parallelise LM work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkOptions {
    /// Rows per batched LM step. Memory is about `chunk_rows * (state_width + vocab) * 4` bytes
    /// per trie depth that reaches this size, per concurrent task.
    pub chunk_rows: usize,
    /// Independent subtrees (or batches) run as rayon tasks on the current pool; 1 runs everything
    /// on the calling thread. Keep 1 when the LM's own GEMMs already use every core, to avoid
    /// oversubscription.
    pub parallel_tasks: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            chunk_rows: DEFAULT_CHUNK_ROWS,
            parallel_tasks: 1,
        }
    }
}

/// LM work done, for benchmarks and cost reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkStats {
    /// Calls to `IncrementalLm::step`.
    pub lm_calls: u64,
    /// Rows stepped (one per trie node expanded or token fed).
    pub lm_rows: u64,
    /// Complete candidates scored.
    pub leaves: u64,
}

impl WalkStats {
    fn add(&mut self, o: &WalkStats) {
        self.lm_calls += o.lm_calls;
        self.lm_rows += o.lm_rows;
        self.leaves += o.leaves;
    }
}

/// Scores of every candidate, indexed by candidate index.
#[derive(Clone, Debug)]
pub struct AllScores {
    pub scores: Vec<f64>,
    pub stats: WalkStats,
}

/// Exact rank of one secret over all of R.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ExactRank {
    pub index: u128,
    /// The secret's log-perplexity (bits), as batch scoring computes it.
    pub log_perplexity: f64,
    /// `|{r in R : Px(r) <= Px(secret)}|`, ties counted, the secret itself counted once (>= 1).
    pub rank: u128,
    /// `log2 |R| - log2 rank`.
    pub exposure: f64,
}

/// Result of the streaming exact-rank walk.
#[derive(Clone, Debug)]
pub struct RankReport {
    pub ranks: Vec<ExactRank>,
    pub stats: WalkStats,
}

/// One shard's part of the exact-rank walk ([`Scorer::exact_ranks_shard`]); shards of one job
/// are combined by [`merge_rank_shards`]. Serialisable, so a shard written by one process (a
/// scheduler task) is merged by another. Scores are f64 and round-trip exactly through JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankShard {
    /// The secrets, in the caller's order.
    pub secrets: Vec<u128>,
    /// Each secret's log-perplexity (bits) by batch scoring; equal in every shard of one job.
    pub secret_scores: Vec<f64>,
    /// Per secret: leaves of this shard whose score is <= the secret's.
    pub counted_at_or_below: Vec<u64>,
    /// Per secret: the score this shard's walk gave the secret's own leaf, if it holds it.
    pub own_scores: Vec<Option<f64>>,
    /// |R|.
    pub space_size: u128,
    pub stats: WalkStats,
}

/// Combine the shards of one exact-rank walk (any number, any order; together they must cover
/// the job) into exact ranks and exposures: counts add, and each secret's own leaf, held by
/// exactly one shard, is counted once. `log2_space` is `log2 |R|`. Refuses shards of different
/// secrets, scores or spaces.
pub fn merge_rank_shards(shards: &[RankShard], log2_space: f64) -> Result<Vec<ExactRank>> {
    let Some(first) = shards.first() else {
        return Err(invalid("shards", "no shards to merge"));
    };
    let n = first.secrets.len();
    let mut counted = vec![0u64; n];
    let mut own: Vec<Option<f64>> = vec![None; n];
    for (k, s) in shards.iter().enumerate() {
        let same_scores = s.secret_scores.len() == n
            && s.secret_scores
                .iter()
                .zip(&first.secret_scores)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if s.secrets != first.secrets || s.space_size != first.space_size || !same_scores {
            return Err(invalid(
                "shards",
                format!("shard {k} scored other secrets, scores or space than shard 0"),
            ));
        }
        if s.counted_at_or_below.len() != n || s.own_scores.len() != n {
            return Err(invalid(
                "shards",
                format!(
                    "shard {k} has {} counts for {n} secrets",
                    s.counted_at_or_below.len()
                ),
            ));
        }
        for i in 0..n {
            counted[i] += s.counted_at_or_below[i];
            if let Some(o) = s.own_scores[i] {
                if own[i].is_some() {
                    return Err(invalid(
                        "shards",
                        format!(
                            "secret {} was scored by two shards (overlapping shards)",
                            s.secrets[i]
                        ),
                    ));
                }
                own[i] = Some(o);
            }
        }
    }
    let size = first.space_size;
    Ok((0..n)
        .map(|i| {
            let s = first.secret_scores[i];
            let self_counted = matches!(own[i], Some(t) if t <= s) as u64;
            let rank = ((counted[i] - self_counted + 1) as u128).min(size);
            ExactRank {
                index: first.secrets[i],
                log_perplexity: s,
                rank,
                exposure: crate::exposure::exposure_from_rank(rank, log2_space),
            }
        })
        .collect())
}

/// Scores canaries of one tokenized template under one LM.
pub struct Scorer<'a, L: IncrementalLm + ?Sized> {
    lm: &'a L,
    tpl: &'a TokenizedTemplate,
    opts: WalkOptions,
    root_state: LmState,
    root_log_probs: Vec<f32>,
    prefix_stats: WalkStats,
}

impl<'a, L: IncrementalLm + ?Sized> Scorer<'a, L> {
    /// Reads the conditioning tokens (`context ++ prefix`) once.
    pub fn new(lm: &'a L, tpl: &'a TokenizedTemplate, opts: WalkOptions) -> Result<Self> {
        let vocab = lm.vocab_size();
        if tpl.max_token() as usize >= vocab {
            return Err(AuditError::TokenOutOfVocab {
                token: tpl.max_token(),
                vocab,
            });
        }
        let opts = WalkOptions {
            chunk_rows: opts.chunk_rows.max(1),
            parallel_tasks: opts.parallel_tasks.max(1),
        };
        let mut state = lm.initial_state(1);
        if state.width != lm.state_width() || state.rows != 1 {
            return Err(invalid(
                "language model",
                "initial_state does not match state_width",
            ));
        }
        let mut log_probs = vec![0.0f32; vocab];
        let mut prefix_stats = WalkStats::default();
        for t in tpl.conditioning() {
            lm.step(&mut state, &[t], &mut log_probs);
            prefix_stats.lm_calls += 1;
            prefix_stats.lm_rows += 1;
        }
        Ok(Self {
            lm,
            tpl,
            opts,
            root_state: state,
            root_log_probs: log_probs,
            prefix_stats,
        })
    }

    pub fn template(&self) -> &TokenizedTemplate {
        self.tpl
    }

    pub fn lm(&self) -> &L {
        self.lm
    }

    /// The LM state after the conditioning tokens (one row).
    pub fn root_state(&self) -> &LmState {
        &self.root_state
    }

    /// Log-probabilities of the first scored token.
    pub fn root_log_probs(&self) -> &[f32] {
        &self.root_log_probs
    }

    /// LM work spent reading the conditioning tokens.
    pub fn prefix_stats(&self) -> WalkStats {
        self.prefix_stats
    }

    /// Log-perplexity (bits) of the scored part of each candidate, given the conditioning tokens.
    /// Each candidate is its own sequence; batches of `chunk_rows` share one `step` per token.
    pub fn log_perplexities(&self, indices: &[u128]) -> Result<Vec<f64>> {
        let size = self.tpl.space().size();
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(AuditError::IndexOutOfSpace { index: bad, size });
        }
        let mut out = vec![0.0; indices.len()];
        let tasks = self.opts.parallel_tasks;
        let batch = if tasks > 1 {
            self.opts
                .chunk_rows
                .min(indices.len().div_ceil(tasks).max(1))
        } else {
            self.opts.chunk_rows
        };
        if tasks > 1 {
            out.par_chunks_mut(batch)
                .zip(indices.par_chunks(batch))
                .try_for_each(|(o, idx)| self.score_batch(idx, o))?;
        } else {
            for (o, idx) in out.chunks_mut(batch).zip(indices.chunks(batch)) {
                self.score_batch(idx, o)?;
            }
        }
        Ok(out)
    }

    fn score_batch(&self, indices: &[u128], out: &mut [f64]) -> Result<()> {
        let rows = indices.len();
        let steps = self.tpl.steps();
        let n = steps.len();
        let vocab = self.lm.vocab_size();
        let mut symbols = vec![0u32; self.tpl.space().radices().len()];
        let mut one = Vec::with_capacity(n);
        // Column-major token table: tokens[j * rows + r] is step j of candidate r.
        let mut tokens = vec![0u32; n * rows];
        for (r, &idx) in indices.iter().enumerate() {
            self.tpl.scored_tokens_into(idx, &mut symbols, &mut one)?;
            for j in 0..n {
                tokens[j * rows + r] = one[j];
            }
        }
        let mut state = self.root_state.repeat_each(rows);
        let mut log_probs = vec![0.0f32; rows * vocab];
        for (r, o) in out.iter_mut().enumerate() {
            *o = token_cost_bits(self.root_log_probs[tokens[r] as usize]);
        }
        for j in 1..n {
            self.lm.step(
                &mut state,
                &tokens[(j - 1) * rows..j * rows],
                &mut log_probs,
            );
            for (r, o) in out.iter_mut().enumerate() {
                *o += token_cost_bits(log_probs[r * vocab + tokens[j * rows + r] as usize]);
            }
        }
        Ok(())
    }

    fn check_walk_size(&self, limit: u128) -> Result<u64> {
        let size = self.tpl.space().size();
        if size > limit || size > u64::MAX as u128 {
            return Err(AuditError::SpaceAboveLimit {
                size,
                limit: limit.min(u64::MAX as u128),
            });
        }
        Ok(size as u64)
    }

    /// Log-perplexity of every candidate in R, by the trie walk; `scores[i]` is candidate `i`.
    /// Errors when |R| exceeds `limit` (the scores are held in memory: 8 bytes per candidate).
    pub fn all_scores(&self, limit: u128) -> Result<AllScores> {
        let size = self.check_walk_size(limit)?;
        let size = usize::try_from(size).map_err(|_| AuditError::SpaceAboveLimit {
            size: size as u128,
            limit,
        })?;
        let mut scores = vec![f64::NAN; size];
        let (parts, mut stats) = self.split_root(f64::INFINITY);
        let leaves_per_node = self.leaves_below(parts.depth);
        if parts.groups.len() <= 1 {
            for g in &parts.groups {
                let first = g.index[0] * leaves_per_node;
                let mut sink = ScoreSink {
                    first,
                    out: &mut scores[..],
                };
                stats.add(&self.walk_from(parts.depth, g, &mut sink));
            }
        } else {
            // Groups are contiguous ranges of nodes, so their leaves are contiguous ranges.
            let mut slices = Vec::with_capacity(parts.groups.len());
            let mut rest: &mut [f64] = &mut scores;
            let mut offset = 0u64;
            for g in &parts.groups {
                let first = g.index[0] * leaves_per_node;
                let end = (g.index[g.rows() - 1] + 1) * leaves_per_node;
                let (_, tail) = rest.split_at_mut((first - offset) as usize);
                let (mine, tail) = tail.split_at_mut((end - first) as usize);
                rest = tail;
                offset = end;
                slices.push((g, first, mine));
            }
            let sub: Vec<WalkStats> = slices
                .into_par_iter()
                .map(|(g, first, out)| {
                    let mut sink = ScoreSink { first, out };
                    self.walk_from(parts.depth, g, &mut sink)
                })
                .collect();
            sub.iter().for_each(|s| stats.add(s));
        }
        stats.add(&self.prefix_stats);
        Ok(AllScores { scores, stats })
    }

    /// Exact ranks of `secrets` over all of R without storing R's scores: one streaming trie
    /// walk counts, for every secret, the candidates whose log-perplexity is <= its own (ties
    /// count, as in TF Privacy). Subtrees whose prefix cost already exceeds the largest secret
    /// score are skipped (costs never decrease along a path). The secret's own leaf is counted
    /// exactly once, whatever rounding the batched walk applies to it.
    pub fn exact_ranks(&self, secrets: &[u128], limit: u128) -> Result<RankReport> {
        let part = self.walk_ranks(secrets, limit, None)?;
        let ranks = merge_rank_shards(std::slice::from_ref(&part), self.tpl.space().log2_size())?;
        Ok(RankReport {
            ranks,
            stats: part.stats,
        })
    }

    /// One shard of [`exact_ranks`](Self::exact_ranks)'s walk, for runs split across processes
    /// or scheduler tasks: the root of the trie is expanded breadth-first until it has at least
    /// `4 * count` nodes (or one level above the leaves), and shard `index` walks the subtrees of
    /// the contiguous node range `[rows*index/count, rows*(index+1)/count)`. The split depends on
    /// (template, count) only, never on threads or timing, so a shard's work is a pure function
    /// of (model, template, secrets, index, count). [`merge_rank_shards`] adds the shards'
    /// counts. Ranks equal the single-process walk's for any count: the counts are integers, and
    /// a leaf's score can differ from the single-process walk only where the batched LM step
    /// rounds a row differently with other rows beside it, which moves a rank only if a
    /// candidate's score lies within those last bits of a secret's.
    pub fn exact_ranks_shard(
        &self,
        secrets: &[u128],
        limit: u128,
        index: u64,
        count: u64,
    ) -> Result<RankShard> {
        if count == 0 || index >= count {
            return Err(invalid(
                "shard",
                format!("shard {index} of {count} does not exist"),
            ));
        }
        self.walk_ranks(secrets, limit, Some((index, count)))
    }

    fn walk_ranks(
        &self,
        secrets: &[u128],
        limit: u128,
        shard: Option<(u64, u64)>,
    ) -> Result<RankShard> {
        self.check_walk_size(limit)?;
        let secret_scores = self.log_perplexities(secrets)?;
        if let Some(p) = secret_scores.iter().position(|s| s.is_nan()) {
            return Err(invalid(
                "language model",
                format!("log-perplexity of secret {} is NaN", secrets[p]),
            ));
        }
        // Thresholds in ascending order; order[k] = secret of the k-th threshold.
        let mut order: Vec<usize> = (0..secrets.len()).collect();
        order.sort_by(|&a, &b| secret_scores[a].total_cmp(&secret_scores[b]));
        let thresholds: Vec<f64> = order.iter().map(|&i| secret_scores[i]).collect();
        let max_threshold = thresholds.last().copied().unwrap_or(f64::NEG_INFINITY);
        let mut own: Vec<(u64, usize)> = secrets
            .iter()
            .enumerate()
            .map(|(i, &s)| (s as u64, i))
            .collect();
        own.sort_unstable();
        let (parts, mut stats) = match shard {
            None => self.split_root(max_threshold),
            Some((index, count)) => self.split_shard(max_threshold, index, count),
        };
        let new_sink = || RankSink {
            thresholds: &thresholds,
            max_threshold,
            hist: vec![0; thresholds.len() + 1],
            own: &own,
            own_scores: vec![None; secrets.len()],
        };
        let merged = if self.opts.parallel_tasks > 1 && parts.groups.len() > 1 {
            let subs: Vec<(RankSink, WalkStats)> = parts
                .groups
                .par_iter()
                .map(|g| {
                    let mut sink = new_sink();
                    let st = self.walk_from(parts.depth, g, &mut sink);
                    (sink, st)
                })
                .collect();
            let mut total = new_sink();
            for (s, st) in subs {
                stats.add(&st);
                total.merge(&s);
            }
            total
        } else {
            let mut sink = new_sink();
            for g in &parts.groups {
                stats.add(&self.walk_from(parts.depth, g, &mut sink));
            }
            sink
        };
        stats.add(&self.prefix_stats);
        // Counts per secret, in the caller's order: leaves with score <= the secret's own.
        let counted: Vec<u64> = merged.hist[..thresholds.len()]
            .iter()
            .scan(0u64, |run, h| {
                *run += h;
                Some(*run)
            })
            .collect();
        let mut counted_at_or_below = vec![0u64; secrets.len()];
        for (k, &i) in order.iter().enumerate() {
            counted_at_or_below[i] = counted[k];
        }
        Ok(RankShard {
            secrets: secrets.to_vec(),
            secret_scores,
            counted_at_or_below,
            own_scores: merged.own_scores,
            space_size: self.tpl.space().size(),
            stats,
        })
    }

    /// The root expansion for shard `index` of `count` (see [`exact_ranks_shard`](Self::exact_ranks_shard)).
    fn split_shard(&self, prune_above: f64, index: u64, count: u64) -> (RootParts, WalkStats) {
        let (level, depth, stats) = self.expand_root(prune_above, 4 * count as usize);
        let rows = level.rows() as u64;
        let lo = (rows as u128 * index as u128 / count as u128) as usize;
        let hi = (rows as u128 * (index + 1) as u128 / count as u128) as usize;
        let mine = level.take_rows(lo, hi);
        let tasks = self.opts.parallel_tasks;
        let groups = if mine.rows() == 0 {
            Vec::new()
        } else if tasks > 1 && mine.rows() > 1 {
            let per = mine.rows().div_ceil(4 * tasks).max(1);
            (0..mine.rows())
                .step_by(per)
                .map(|s| mine.take_rows(s, (s + per).min(mine.rows())))
                .collect()
        } else {
            vec![mine]
        };
        (RootParts { depth, groups }, stats)
    }

    /// Number of leaves below one node at `depth`.
    fn leaves_below(&self, depth: usize) -> u64 {
        self.tpl.steps()[depth..]
            .iter()
            .map(|s| s.tokens.len() as u64)
            .product()
    }

    /// The root level, expanded breadth-first (without chunking) until there are enough nodes to
    /// give every parallel task several subtrees, then cut into contiguous groups.
    fn split_root(&self, prune_above: f64) -> (RootParts, WalkStats) {
        let tasks = self.opts.parallel_tasks;
        let min_rows = if tasks > 1 { 4 * tasks } else { 0 };
        let (level, depth, stats) = self.expand_root(prune_above, min_rows);
        let groups = if tasks > 1 && level.rows() > 1 {
            let per = level.rows().div_ceil(4 * tasks).max(1);
            (0..level.rows())
                .step_by(per)
                .map(|s| level.take_rows(s, (s + per).min(level.rows())))
                .collect()
        } else if level.rows() == 0 {
            Vec::new()
        } else {
            vec![level]
        };
        (RootParts { depth, groups }, stats)
    }

    /// Expand the root breadth-first, one unchunked level at a time, until the level has at
    /// least `min_rows` nodes or is one level above the leaves. Returns the level and its depth.
    fn expand_root(&self, prune_above: f64, min_rows: usize) -> (Level, usize, WalkStats) {
        let mut stats = WalkStats::default();
        let mut level = Level {
            state: self.root_state.clone(),
            log_probs: self.root_log_probs.clone(),
            scores: vec![0.0],
            index: vec![0],
            ..Default::default()
        };
        let steps = self.tpl.steps();
        let mut depth = 0;
        while level.rows() < min_rows && depth + 1 < steps.len() {
            let mut next = Level::default();
            for r in 0..level.rows() {
                self.push_children(&level, r, &steps[depth], prune_above, &mut next);
            }
            self.step_level(&level, &mut next, &mut stats);
            level = next;
            depth += 1;
        }
        (level, depth, stats)
    }

    /// Append the children of row `r` of `cur` (at the depth of `step`) to `next`, except those
    /// whose cost is above `prune_above` (NaN costs are kept: they fail every later comparison).
    #[inline]
    fn push_children(
        &self,
        cur: &Level,
        r: usize,
        step: &ScoredStep,
        prune_above: f64,
        next: &mut Level,
    ) {
        let vocab = self.lm.vocab_size();
        let lp = &cur.log_probs[r * vocab..(r + 1) * vocab];
        let k = step.tokens.len() as u64;
        for (a, &t) in step.tokens.iter().enumerate() {
            let cs = cur.scores[r] + token_cost_bits(lp[t as usize]);
            if cs.partial_cmp(&prune_above) != Some(std::cmp::Ordering::Greater) {
                next.parent.push(r as u32);
                next.tokens.push(t);
                next.scores.push(cs);
                next.index.push(cur.index[r] * k + a as u64);
            }
        }
    }

    /// Step the children in `next` (parents in `cur`) with one `step_children` call: the LM
    /// computes what depends only on a parent's state once per parent (the fused recurrent
    /// products of `memaudit-engine`'s LSTM/GRU), not once per child.
    fn step_level(&self, cur: &Level, next: &mut Level, stats: &mut WalkStats) {
        let rows = next.tokens.len();
        next.log_probs.resize(rows * self.lm.vocab_size(), 0.0);
        self.lm.step_children(
            &cur.state,
            &next.parent,
            &next.tokens,
            &mut next.state,
            &mut next.log_probs,
        );
        if rows > 0 {
            stats.lm_calls += 1;
            stats.lm_rows += rows as u64;
        }
    }

    /// Walk every subtree below the nodes of `group` (at `depth`), depth-first over chunks.
    fn walk_from<S: LeafSink>(&self, depth: usize, group: &Level, sink: &mut S) -> WalkStats {
        let n = self.tpl.steps().len();
        let mut stats = WalkStats::default();
        let mut levels: Vec<Level> = (depth + 1..n).map(|_| Level::default()).collect();
        self.expand(depth, group, &mut levels, sink, &mut stats);
        stats
    }

    fn expand<S: LeafSink>(
        &self,
        depth: usize,
        cur: &Level,
        deeper: &mut [Level],
        sink: &mut S,
        stats: &mut WalkStats,
    ) {
        let steps = self.tpl.steps();
        let step = &steps[depth];
        let vocab = self.lm.vocab_size();
        if depth + 1 == steps.len() {
            let k = step.tokens.len() as u64;
            for r in 0..cur.rows() {
                sink.leaves(
                    cur.index[r] * k,
                    cur.scores[r],
                    &cur.log_probs[r * vocab..(r + 1) * vocab],
                    &step.tokens,
                );
            }
            stats.leaves += k * cur.rows() as u64;
            return;
        }
        let chunk = self.opts.chunk_rows;
        let (next, further) = deeper
            .split_first_mut()
            .expect("one level per remaining depth");
        next.clear();
        let prune_above = sink.prune_above();
        for r in 0..cur.rows() {
            self.push_children(cur, r, step, prune_above, next);
            if next.tokens.len() >= chunk {
                self.step_level(cur, next, stats);
                self.expand(depth + 1, next, further, sink, stats);
                next.clear();
            }
        }
        if !next.tokens.is_empty() {
            self.step_level(cur, next, stats);
            self.expand(depth + 1, next, further, sink, stats);
            next.clear();
        }
    }
}

struct RootParts {
    depth: usize,
    groups: Vec<Level>,
}

/// Nodes at one trie depth: their LM state after their tokens, the next-token log-probabilities,
/// their cost so far and their index (mixed radix over the steps so far). `parent` and `tokens`
/// say how they were made from the level above.
struct Level {
    state: LmState,
    log_probs: Vec<f32>,
    scores: Vec<f64>,
    index: Vec<u64>,
    parent: Vec<u32>,
    tokens: Vec<u32>,
}

impl Default for Level {
    fn default() -> Self {
        Level {
            state: LmState::zeros(0, 0),
            log_probs: Vec::new(),
            scores: Vec::new(),
            index: Vec::new(),
            parent: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl Level {
    fn rows(&self) -> usize {
        self.scores.len()
    }

    fn clear(&mut self) {
        self.scores.clear();
        self.index.clear();
        self.parent.clear();
        self.tokens.clear();
    }

    fn take_rows(&self, start: usize, end: usize) -> Level {
        let vocab = self.log_probs.len() / self.rows().max(1);
        Level {
            state: self.state.slice(start, end),
            log_probs: self.log_probs[start * vocab..end * vocab].to_vec(),
            scores: self.scores[start..end].to_vec(),
            index: self.index[start..end].to_vec(),
            parent: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// Receives complete candidates from the walk.
trait LeafSink {
    /// Nodes costing more than this cannot contribute (costs never decrease along a path).
    fn prune_above(&self) -> f64;
    /// The leaves `first_index + a` with score `parent_score + cost(log_probs[tokens[a]])`.
    fn leaves(&mut self, first_index: u64, parent_score: f64, log_probs: &[f32], tokens: &[u32]);
}

struct ScoreSink<'o> {
    first: u64,
    out: &'o mut [f64],
}

impl LeafSink for ScoreSink<'_> {
    fn prune_above(&self) -> f64 {
        f64::INFINITY
    }
    #[inline]
    fn leaves(&mut self, first_index: u64, parent_score: f64, log_probs: &[f32], tokens: &[u32]) {
        let start = (first_index - self.first) as usize;
        for (o, &t) in self.out[start..start + tokens.len()].iter_mut().zip(tokens) {
            *o = parent_score + token_cost_bits(log_probs[t as usize]);
        }
    }
}

struct RankSink<'t> {
    thresholds: &'t [f64],
    max_threshold: f64,
    /// hist[k] = leaves whose score is in (thresholds[k-1], thresholds[k]].
    hist: Vec<u64>,
    /// (secret index, secret number), sorted.
    own: &'t [(u64, usize)],
    /// Score the walk gave each secret's own leaf, if reached.
    own_scores: Vec<Option<f64>>,
}

impl RankSink<'_> {
    fn merge(&mut self, o: &RankSink) {
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
        for (a, b) in self.own_scores.iter_mut().zip(&o.own_scores) {
            if b.is_some() {
                *a = *b;
            }
        }
    }
}

impl LeafSink for RankSink<'_> {
    fn prune_above(&self) -> f64 {
        self.max_threshold
    }
    #[inline]
    fn leaves(&mut self, first_index: u64, parent_score: f64, log_probs: &[f32], tokens: &[u32]) {
        if parent_score.is_nan() || parent_score > self.max_threshold {
            return;
        }
        let single = self.thresholds.len() == 1;
        for &t in tokens {
            let s = parent_score + token_cost_bits(log_probs[t as usize]);
            if s <= self.max_threshold {
                let k = if single {
                    0
                } else {
                    self.thresholds.partition_point(|&th| th < s)
                };
                self.hist[k] += 1;
            }
        }
        let end = first_index + tokens.len() as u64;
        let mut i = self.own.partition_point(|&(idx, _)| idx < first_index);
        while i < self.own.len() && self.own[i].0 < end {
            let (idx, secret) = self.own[i];
            let t = tokens[(idx - first_index) as usize];
            self.own_scores[secret] = Some(parent_score + token_cost_bits(log_probs[t as usize]));
            i += 1;
        }
    }
}
