//! Secret extraction by shortest-path search over the canary's slots (The Secret Sharer, Carlini
//! et al. 2019, §8: Dijkstra's algorithm on the trie of candidates; edge weight = -log2 p of the
//! token, so a path's length is the candidate's log-perplexity).
//!
//! Exactness: weights are non-negative ([`token_cost_bits`] clamps at 0), so Dijkstra pops nodes
//! in non-decreasing cost. Heap keys are `(cost, smallest candidate index below the node)`, which
//! never decrease from a node to its children, so complete candidates come out in exactly the
//! order of sorting all of R by `(log-perplexity, index)`.
//!
//! Batching: the `batch` cheapest *incomplete* nodes are popped together and queried in one LM
//! step. A complete candidate is emitted only when it is the heap minimum and no expansion is
//! pending, so batching never changes the output, only adds speculative expansions.
//!
//! Memory: the heap holds small entries (no LM state). The LM state of an expanded node is kept
//! in a slab while some child of it is still in the heap (reference counted), so a node is never
//! recomputed and state memory follows the frontier. The beam variant caps the frontier: when it
//! exceeds twice the cap, only the `beam` cheapest entries are kept (then the search is
//! approximate: emitted candidates are still in increasing cost, but some may be missing).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use memaudit_engine::IncrementalLm;
use serde::Serialize;

use crate::error::Result;
use crate::scoring::{Scorer, token_cost_bits};

/// Search limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExtractOptions {
    /// Incomplete nodes expanded per batched LM query.
    pub batch: usize,
    /// Stop after this many complete candidates.
    pub max_candidates: usize,
    /// Budget: stop once this many nodes have been expanded (LM rows queried).
    pub max_expansions: Option<u64>,
    /// Beam: keep at most this many frontier entries (approximate search, bounded memory).
    pub beam: Option<usize>,
    /// A candidate to look for (e.g. the inserted secret): its position is reported.
    pub target: Option<u128>,
    /// Stop as soon as the target is emitted.
    pub stop_at_target: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            batch: 256,
            max_candidates: 1,
            max_expansions: None,
            beam: None,
            target: None,
            stop_at_target: false,
        }
    }
}

/// One emitted candidate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ExtractedCandidate {
    pub index: u128,
    /// Log-perplexity of the scored part, bits.
    pub log_perplexity: f64,
    /// Expansions done when it was emitted: the search's cost of finding it (a search that
    /// stops at this candidate reports the same number, since the order is deterministic).
    pub expansions: u64,
}

/// Why the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    CandidateLimit,
    TargetFound,
    Budget,
    /// Every candidate (left in the beam) was emitted.
    Exhausted,
}

/// Result of a search.
#[derive(Clone, Debug, Serialize)]
pub struct Extraction {
    /// In increasing log-perplexity (ties by index).
    pub candidates: Vec<ExtractedCandidate>,
    /// Trie nodes whose next-token distribution was queried, the root included.
    pub expansions: u64,
    /// Batched `step` calls, the conditioning tokens included.
    pub lm_calls: u64,
    /// 1-based position of the target among the emitted candidates, if emitted.
    pub target_position: Option<u64>,
    pub stop: StopReason,
    /// False once the beam dropped an entry (the order is then not guaranteed complete).
    pub exact: bool,
    /// Largest frontier size seen.
    pub peak_frontier: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    cost: f64,
    min_leaf: u64,
    /// Steps filled.
    depth: u32,
    /// Slab slot of the parent's LM state; `NO_SLOT` for complete candidates.
    parent: u32,
    token: u32,
    /// Mixed-radix index over the filled steps.
    index: u64,
}

const NO_SLOT: u32 = u32::MAX;

impl Entry {
    fn key_cmp(&self, o: &Self) -> Ordering {
        self.cost
            .total_cmp(&o.cost)
            .then(self.min_leaf.cmp(&o.min_leaf))
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.key_cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and we want the cheapest first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.key_cmp(self)
    }
}

/// Reference-counted rows of LM state.
struct StateSlab {
    width: usize,
    data: Vec<f32>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl StateSlab {
    fn insert(&mut self, row: &[f32], refs: u32) -> u32 {
        if let Some(slot) = self.free.pop() {
            let s = slot as usize;
            self.data[s * self.width..(s + 1) * self.width].copy_from_slice(row);
            self.refs[s] = refs;
            slot
        } else {
            self.data.extend_from_slice(row);
            self.refs.push(refs);
            (self.refs.len() - 1) as u32
        }
    }

    fn row(&self, slot: u32) -> &[f32] {
        let s = slot as usize;
        &self.data[s * self.width..(s + 1) * self.width]
    }

    fn release(&mut self, slot: u32) {
        if slot == NO_SLOT {
            return;
        }
        let r = &mut self.refs[slot as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(slot);
        }
    }
}

/// Best-first (Dijkstra) extraction of the cheapest candidates of the scorer's template.
pub fn extract<L: IncrementalLm + ?Sized>(
    scorer: &Scorer<'_, L>,
    opts: &ExtractOptions,
) -> Result<Extraction> {
    let lm = scorer.lm();
    let steps = scorer.template().steps();
    let n = steps.len();
    let vocab = lm.vocab_size();
    let batch = opts.batch.max(1);
    let size = scorer.template().space().size();
    if size > u64::MAX as u128 {
        return Err(crate::error::AuditError::SpaceAboveLimit {
            size,
            limit: u64::MAX as u128,
        });
    }
    // leaves_below[d] = candidates below a node with d steps filled.
    let mut leaves_below = vec![1u64; n + 1];
    for d in (0..n).rev() {
        leaves_below[d] = leaves_below[d + 1] * steps[d].tokens.len() as u64;
    }
    let root_state = scorer.root_state();
    let mut slab = StateSlab {
        width: root_state.width,
        data: Vec::new(),
        refs: Vec::new(),
        free: Vec::new(),
    };
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut out = Extraction {
        candidates: Vec::new(),
        expansions: 1,
        lm_calls: scorer.prefix_stats().lm_calls,
        target_position: None,
        stop: StopReason::Exhausted,
        exact: true,
        peak_frontier: 0,
    };

    // Push the children of a node (depth d, cost c, index i) given its next-token distribution.
    let push_children = |heap: &mut BinaryHeap<Entry>,
                         slab: &mut StateSlab,
                         d: usize,
                         c: f64,
                         i: u64,
                         lp: &[f32],
                         state: &[f32]| {
        let child_depth = d + 1;
        let parent = if child_depth < n {
            slab.insert(state, steps[d].tokens.len() as u32)
        } else {
            NO_SLOT
        };
        let k = steps[d].tokens.len() as u64;
        for (a, &t) in steps[d].tokens.iter().enumerate() {
            let index = i * k + a as u64;
            heap.push(Entry {
                cost: c + token_cost_bits(lp[t as usize]),
                min_leaf: index * leaves_below[child_depth],
                depth: child_depth as u32,
                parent,
                token: t,
                index,
            });
        }
    };
    push_children(
        &mut heap,
        &mut slab,
        0,
        0.0,
        0,
        scorer.root_log_probs(),
        &root_state.data,
    );

    let mut state = memaudit_engine::LmState::zeros(0, root_state.width);
    let mut tokens: Vec<u32> = Vec::with_capacity(batch);
    let mut popped: Vec<Entry> = Vec::with_capacity(batch);
    let mut log_probs: Vec<f32> = Vec::new();
    loop {
        out.peak_frontier = out.peak_frontier.max(heap.len());
        if out.candidates.len() >= opts.max_candidates {
            out.stop = StopReason::CandidateLimit;
            break;
        }
        let Some(top) = heap.peek().copied() else {
            out.stop = StopReason::Exhausted;
            break;
        };
        if top.depth as usize == n {
            heap.pop();
            out.candidates.push(ExtractedCandidate {
                index: top.index as u128,
                log_perplexity: top.cost,
                expansions: out.expansions,
            });
            if opts.target == Some(top.index as u128) {
                out.target_position = Some(out.candidates.len() as u64);
                if opts.stop_at_target {
                    out.stop = StopReason::TargetFound;
                    break;
                }
            }
            continue;
        }
        let budget_left = opts
            .max_expansions
            .map_or(u64::MAX, |m| m.saturating_sub(out.expansions));
        if budget_left == 0 {
            out.stop = StopReason::Budget;
            break;
        }
        popped.clear();
        tokens.clear();
        while popped.len() < batch && (popped.len() as u64) < budget_left {
            match heap.peek() {
                Some(e) if (e.depth as usize) < n => {
                    let e = heap.pop().expect("peeked");
                    popped.push(e);
                    tokens.push(e.token);
                }
                _ => break,
            }
        }
        let rows = popped.len();
        state.rows = rows;
        state.data.clear();
        for e in &popped {
            state.data.extend_from_slice(slab.row(e.parent));
        }
        log_probs.resize(rows * vocab, 0.0);
        lm.step(&mut state, &tokens, &mut log_probs);
        out.lm_calls += 1;
        out.expansions += rows as u64;
        for (r, e) in popped.iter().enumerate() {
            slab.release(e.parent);
            let width = state.width;
            push_children(
                &mut heap,
                &mut slab,
                e.depth as usize,
                e.cost,
                e.index,
                &log_probs[r * vocab..(r + 1) * vocab],
                &state.data[r * width..(r + 1) * width],
            );
        }
        if let Some(cap) = opts.beam {
            let cap = cap.max(1);
            if heap.len() > 2 * cap {
                let mut v = std::mem::take(&mut heap).into_vec();
                // Ord is reversed, so ascending `Ord` = most expensive first: keep the tail.
                let cut = v.len() - cap;
                v.select_nth_unstable(cut);
                for e in v.drain(..cut) {
                    slab.release(e.parent);
                }
                heap = BinaryHeap::from(v);
                out.exact = false;
            }
        }
    }
    Ok(out)
}
