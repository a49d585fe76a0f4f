//! Stateful incremental inference for language models.
//!
//! Trie scoring and best-first extraction (The Secret Sharer) feed one token at a time to many
//! sequences that share prefixes. Every recurrent state we support (LSTM h and c per layer, GRU h
//! per layer) flattens into one row of floats, so a batch of states is a row-major matrix
//! `[rows, width]`: cloning, selecting and repeating rows is the same for every model, and the
//! trait stays object-safe.

/// A batch of recurrent states, one row per sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct LmState {
    pub rows: usize,
    pub width: usize,
    /// Row-major `[rows, width]`.
    pub data: Vec<f32>,
}

impl LmState {
    pub fn zeros(rows: usize, width: usize) -> Self {
        Self {
            rows,
            width,
            data: vec![0.0; rows * width],
        }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.width..(r + 1) * self.width]
    }

    /// A new batch whose row `k` is row `idx[k]` of `self` (rows may repeat).
    pub fn gather(&self, idx: &[usize]) -> LmState {
        let mut data = Vec::with_capacity(idx.len() * self.width);
        for &r in idx {
            data.extend_from_slice(self.row(r));
        }
        LmState {
            rows: idx.len(),
            width: self.width,
            data,
        }
    }

    /// Each row repeated `times` times in place order: rows `0,0,..,1,1,..`.
    pub fn repeat_each(&self, times: usize) -> LmState {
        let mut data = Vec::with_capacity(self.rows * times * self.width);
        for r in 0..self.rows {
            for _ in 0..times {
                data.extend_from_slice(self.row(r));
            }
        }
        LmState {
            rows: self.rows * times,
            width: self.width,
            data,
        }
    }

    /// Rows `start..end` as a new batch.
    pub fn slice(&self, start: usize, end: usize) -> LmState {
        LmState {
            rows: end - start,
            width: self.width,
            data: self.data[start * self.width..end * self.width].to_vec(),
        }
    }

    /// Concatenate batches of the same width.
    pub fn concat(parts: &[LmState]) -> LmState {
        let width = parts.first().map_or(0, |p| p.width);
        let mut data = Vec::new();
        let mut rows = 0;
        for p in parts {
            assert_eq!(p.width, width, "LmState::concat: width mismatch");
            data.extend_from_slice(&p.data);
            rows += p.rows;
        }
        LmState { rows, width, data }
    }
}

/// A language model that can be advanced one token at a time.
pub trait IncrementalLm: Send + Sync {
    /// Number of tokens in the vocabulary (the width of each log-probability row).
    fn vocab_size(&self) -> usize;
    /// Width of one state row.
    fn state_width(&self) -> usize;
    /// The state before any token has been read (all zeros for our recurrent models).
    fn initial_state(&self, rows: usize) -> LmState {
        LmState::zeros(rows, self.state_width())
    }
    /// Feed `tokens[r]` to row `r` of `state`, advance the state in place, and write the
    /// natural-log probabilities of the next token into `log_probs` (`[rows, vocab]`).
    fn step(&self, state: &mut LmState, tokens: &[u32], log_probs: &mut [f32]);

    /// Step the children of parent rows: output row `k` is row `parent[k]` of `parents` fed
    /// `tokens[k]`; its new state goes to row `k` of `out` (resized to `parent.len()` rows) and
    /// the next-token log-probabilities to row `k` of `log_probs` (`[parent.len(), vocab]`).
    ///
    /// The result is that of gathering the parents' rows and calling [`IncrementalLm::step`]
    /// (the default does exactly that). A trie walk gives every node |Σ| children that share the
    /// parent's state, so recurrent models override this to compute the products with the
    /// parent's own state (`W_hh h`, every layer) once per parent instead of once per child;
    /// sharing applies to children of one parent that are adjacent in `parent`. Results may then
    /// differ from `step`'s in the last bits (another summation order).
    fn step_children(
        &self,
        parents: &LmState,
        parent: &[u32],
        tokens: &[u32],
        out: &mut LmState,
        log_probs: &mut [f32],
    ) {
        gather_rows(parents, parent, out);
        self.step(out, tokens, log_probs);
    }
}

/// `out` becomes the rows `parent[k]` of `parents`, in order.
pub fn gather_rows(parents: &LmState, parent: &[u32], out: &mut LmState) {
    let width = parents.width;
    out.width = width;
    out.rows = parent.len();
    out.data.clear();
    out.data.reserve(parent.len() * width);
    for &p in parent {
        out.data.extend_from_slice(parents.row(p as usize));
    }
}
