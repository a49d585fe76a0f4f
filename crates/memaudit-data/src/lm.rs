//! Language-model examples: windows over one token stream, and time-major batches of them.
//!
//! # The LM training example (the unit DP protects)
//!
//! The tokens of a corpus (or of one split) are one stream `tokens[0..len]`. With window length
//! `W`, training example `k` is the window
//!
//! ```text
//! tokens[k*W .. k*W + W + 1]      inputs  = tokens[k*W     .. k*W + W]
//!                                 targets = tokens[k*W + 1 .. k*W + W + 1]   (next token)
//! ```
//!
//! for `k = 0 .. (len - 1) / W`: windows do not overlap in their inputs (stride `W`), and a
//! trailing partial window is dropped. Neighbouring windows share exactly one token: the last
//! target of window `k` is the first input of window `k + 1`.
//!
//! **One window is one example** for DP-SGD: per-example gradients are per window, Poisson
//! sampling picks windows, and the (epsilon, delta) guarantee is about adding or removing one
//! window. A secret (a canary) is protected at that level only if it lies inside one window; a
//! secret spread over `m` windows gets group privacy over `m` examples. `windows_touching` says
//! which windows a token range falls in.

use std::ops::Range;

use crate::error::{DataError, Result};

/// A batch of LM windows, time-major: element `[t][b]` (time step `t`, example `b`) is at index
/// `t * batch + b` of `inputs` and `targets`. `batch` may be 0 (Poisson sampling can draw an empty
/// batch); then both vectors are empty. Every window has the full length (partial windows are
/// dropped), so no padding mask is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub seq_len: usize,
    pub batch: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl TokenBatch {
    /// Input token at time `t` of example `b`.
    pub fn input(&self, t: usize, b: usize) -> u32 {
        self.inputs[t * self.batch + b]
    }

    /// Target (next) token at time `t` of example `b`.
    pub fn target(&self, t: usize, b: usize) -> u32 {
        self.targets[t * self.batch + b]
    }
}

/// A token stream cut into LM windows of length `window` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmWindows {
    tokens: Vec<u32>,
    window: usize,
}

impl LmWindows {
    /// Windows of `window` tokens over `tokens`. Errors if `window` is 0 or the stream is too
    /// short for even one window (`window + 1` tokens).
    pub fn new(tokens: Vec<u32>, window: usize) -> Result<Self> {
        if window == 0 {
            return Err(DataError::InvalidArgument(
                "the LM window length must be at least 1".into(),
            ));
        }
        if tokens.len() < window + 1 {
            return Err(DataError::InvalidArgument(format!(
                "{} tokens are too few for one LM window of {window} (it needs {}); use a shorter window or more text",
                tokens.len(),
                window + 1
            )));
        }
        Ok(Self { tokens, window })
    }

    /// The whole stream.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Window length `W` (inputs per example).
    pub fn window_len(&self) -> usize {
        self.window
    }

    /// Number of windows, `(len - 1) / W`.
    pub fn len(&self) -> usize {
        (self.tokens.len() - 1) / self.window
    }

    /// Never true: construction requires one window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Window `k`: its `W + 1` tokens (inputs = first `W`, targets = last `W`).
    pub fn window(&self, k: usize) -> Option<&[u32]> {
        (k < self.len()).then(|| &self.tokens[k * self.window..k * self.window + self.window + 1])
    }

    /// Stream positions covered by window `k` (`k*W ..= k*W + W`, as a half-open range).
    pub fn window_span(&self, k: usize) -> Range<usize> {
        k * self.window..k * self.window + self.window + 1
    }

    /// The windows whose tokens (inputs or targets) overlap the stream positions `span`; an empty
    /// range when none does (an empty span, or one inside the dropped tail).
    pub fn windows_touching(&self, span: Range<usize>) -> Range<usize> {
        if span.is_empty() {
            return 0..0;
        }
        let w = self.window;
        // Window k covers [k*w, k*w + w]; it overlaps [s, e) iff k*w <= e-1 and k*w + w >= s.
        let first = span.start.saturating_sub(w).div_ceil(w);
        let last_excl = ((span.end - 1) / w + 1).min(self.len());
        if first >= last_excl {
            0..0
        } else {
            first..last_excl
        }
    }

    /// Gather windows `indices` (any order, repeats allowed, possibly none) into a time-major
    /// batch. An index past the last window is an error.
    pub fn gather(&self, indices: &[usize]) -> Result<TokenBatch> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&k| k >= n) {
            return Err(DataError::InvalidArgument(format!(
                "LM window index {bad} is out of range (there are {n} windows)"
            )));
        }
        let (w, b) = (self.window, indices.len());
        let mut inputs = vec![0u32; w * b];
        let mut targets = vec![0u32; w * b];
        for (col, &k) in indices.iter().enumerate() {
            let win = &self.tokens[k * w..k * w + w + 1];
            for t in 0..w {
                inputs[t * b + col] = win[t];
                targets[t * b + col] = win[t + 1];
            }
        }
        Ok(TokenBatch {
            seq_len: w,
            batch: b,
            inputs,
            targets,
        })
    }
}

/// Split one stream into a training part and a validation part by a contiguous fraction: the
/// first `round(len * (1 - valid_fraction))` tokens train, the rest validate. Contiguous (not
/// shuffled) so no validation text leaks into training windows. `valid_fraction` must be in
/// `[0, 1)`.
pub fn split_contiguous(tokens: &[u32], valid_fraction: f64) -> Result<(Vec<u32>, Vec<u32>)> {
    if !(0.0..1.0).contains(&valid_fraction) {
        return Err(DataError::InvalidArgument(format!(
            "validation fraction {valid_fraction} must be at least 0 and below 1"
        )));
    }
    let cut = ((tokens.len() as f64) * (1.0 - valid_fraction)).round() as usize;
    let cut = cut.min(tokens.len());
    Ok((tokens[..cut].to_vec(), tokens[cut..].to_vec()))
}
