//! Recurrent language models: `Embedding -> [LSTM | GRU -> Dropout]* -> Linear(vocab)` over a
//! time-major token sequence (Zaremba et al. 2014's PTB model shape; the Secret Sharer's PTB
//! model is 2 x 200), and their stateful incremental inference (`IncrementalLm`).
//!
//! Layer names (and so parameter names) are `embedding.weight`, `lstm{k}.weight_ih`,
//! `lstm{k}.weight_hh`, `lstm{k}.bias_ih`, `lstm{k}.bias_hh` (or `gru{k}.*`), `output.weight`,
//! `output.bias`: PyTorch's `nn.LSTM` tensor `weight_ih_l{k}` is our `lstm{k}.weight_ih`, same
//! shape and layout. Dropout layers (`dropout{k}`, after every recurrent layer: between stacked
//! layers and before the projection) have no parameters and are left out when the rate is 0.

use rayon::prelude::*;

use crate::compute::{self, rnn};
use crate::error::{EngineError, Result};
use crate::layer::Layer;
use crate::layers::{Dropout, Embedding, Gru, Linear, Lstm};
use crate::lm::{IncrementalLm, LmState};
use crate::model::Model;
use crate::models::ModelConfig;
use crate::tensor::{MatMut, MatRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
    /// Gate blocks per row (4 for LSTM, 3 for GRU).
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

fn validate(
    cell: Cell,
    vocab: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    dropout: f32,
) -> Result<()> {
    let name = cell.name();
    if vocab < 2 || embed == 0 || hidden == 0 {
        return Err(EngineError::Config(format!(
            "{name} LM needs vocab >= 2, embed >= 1 and hidden >= 1 \
             (got vocab {vocab}, embed {embed}, hidden {hidden})"
        )));
    }
    if !(1..=3).contains(&layers) {
        return Err(EngineError::Config(format!(
            "{name} LM supports 1 to 3 stacked layers, got {layers}"
        )));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(EngineError::Config(format!(
            "{name} LM dropout must be in [0, 1), got {dropout}"
        )));
    }
    Ok(())
}

fn build(
    cell: Cell,
    vocab: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    dropout: f32,
) -> Result<Model> {
    validate(cell, vocab, embed, hidden, layers, dropout)?;
    let mut v: Vec<(String, Box<dyn Layer>)> =
        vec![("embedding".into(), Box::new(Embedding::new(vocab, embed)))];
    let mut input = embed;
    for k in 0..layers {
        let layer: Box<dyn Layer> = match cell {
            Cell::Lstm => Box::new(Lstm::new(input, hidden)),
            Cell::Gru => Box::new(Gru::new(input, hidden)),
        };
        v.push((format!("{}{k}", cell.name()), layer));
        if dropout > 0.0 {
            v.push((format!("dropout{k}"), Box::new(Dropout::new(dropout)?)));
        }
        input = hidden;
    }
    v.push(("output".into(), Box::new(Linear::new(hidden, vocab, true))));
    Model::new(v)
}

pub(crate) fn build_lstm_lm(
    vocab: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    dropout: f32,
) -> Result<Model> {
    build(Cell::Lstm, vocab, embed, hidden, layers, dropout)
}

pub(crate) fn build_gru_lm(
    vocab: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    dropout: f32,
) -> Result<Model> {
    build(Cell::Gru, vocab, embed, hidden, layers, dropout)
}

impl ModelConfig {
    /// Stateful incremental inference for a recurrent LM config (`LstmLm`, `GruLm`) with the
    /// parameter vector of the `Model` that `build` makes (same layout). State rows are the
    /// concatenated `h` of every layer, then (LSTM) the `c` of every layer.
    pub fn incremental_lm(&self, params: &[f32]) -> Result<Box<dyn IncrementalLm>> {
        let (cell, vocab, embed, hidden, layers) = match *self {
            ModelConfig::LstmLm {
                vocab,
                embed,
                hidden,
                layers,
                ..
            } => (Cell::Lstm, vocab, embed, hidden, layers),
            ModelConfig::GruLm {
                vocab,
                embed,
                hidden,
                layers,
                ..
            } => (Cell::Gru, vocab, embed, hidden, layers),
            ModelConfig::Gpt { n_ctx, .. } => {
                // The whole positional table; `incremental_lm_with_context` sizes it down.
                return self.incremental_lm_with_context(params, n_ctx);
            }
            _ => {
                return Err(EngineError::Config(
                    "incremental inference needs a language model (lstm_lm, gru_lm or gpt)".into(),
                ));
            }
        };
        Ok(Box::new(RecurrentLm::new(
            self,
            cell,
            vocab,
            embed,
            hidden,
            layers,
            params,
            TOKEN_TABLE_MAX,
        )?))
    }
}

/// One recurrent layer's weights, rearranged for batched single steps.
struct StepLayer {
    /// LSTM, layer 0: `W_hh` `[4H, H]` (the input part is in the token table); layers >= 1:
    /// `[W_ih | W_hh]` `[4H, 2H]`, so that `[h_{l-1} | h_l]` (adjacent in the state row) times its
    /// transpose is the whole pre-activation in one GEMM. GRU: `W_hh` `[3H, H]`.
    w_rec: Vec<f32>,
    /// GRU layers >= 1: `W_ih` `[3H, H]`.
    w_ih: Vec<f32>,
    /// LSTM: `b_ih + b_hh`; GRU: `b_ih` (layers >= 1).
    b_x: Vec<f32>,
    /// GRU: `b_hh`.
    b_h: Vec<f32>,
}

/// Layer 0's input pre-activation for a token (`e_tok W_ih^T + bias`, bias `b_ih + b_hh` for the
/// LSTM, `b_ih` for the GRU).
enum Layer0Input {
    /// Tabulated for every token, `[V, G H]`: the step's first GEMM becomes a row gather.
    Table(Vec<f32>),
    /// Computed per step from the embedding rows (when the table would be too large).
    Project {
        emb: Vec<f32>,
        embed: usize,
        w_ih: Vec<f32>,
        bias: Vec<f32>,
    },
}

/// Largest layer-0 token table kept (floats): 64 MB, e.g. a 10k-word vocabulary at H = 400.
const TOKEN_TABLE_MAX: usize = 16 << 20;

/// `IncrementalLm` for the recurrent LMs: every step GEMMs the whole batch of rows (split into
/// cache-sized blocks across threads), runs the fused cell in place on the state, and writes
/// log-probabilities through a vectorised log-softmax.
struct RecurrentLm {
    cell: Cell,
    vocab: usize,
    hidden: usize,
    layers: usize,
    layer0: Layer0Input,
    steps: Vec<StepLayer>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
}

/// Columns `col..col + cols` of the `n` rows of a state block (row stride `width`).
fn state_view(state: &[f32], n: usize, width: usize, col: usize, cols: usize) -> MatRef<'_> {
    MatRef::new(&state[col..], n, cols, width, 1)
}

/// Most rows per block of an incremental step. Each block's GEMMs repack the weights, so blocks
/// must be tall; 512 rows (a 1.6 MB gate buffer at H = 200) measured best on the 2x200 LM at
/// 64k rows (128 to 1024 tried).
const STEP_BLOCK_ROWS: usize = 512;

impl RecurrentLm {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &ModelConfig,
        cell: Cell,
        vocab: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
        params: &[f32],
        table_max: usize,
    ) -> Result<Self> {
        let model = cfg.build()?;
        if params.len() != model.num_params() {
            return Err(EngineError::Shape(format!(
                "{} LM with this config has {} parameters, got a vector of {}",
                cell.name(),
                model.num_params(),
                params.len()
            )));
        }
        if let Some(l) = model.first_nonfinite_layer(params) {
            return Err(EngineError::Config(format!(
                "parameters of layer {l} are not finite"
            )));
        }
        let tensor = |name: &str| -> &[f32] {
            let s = model
                .param_specs()
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name} missing from the LM layout (engine bug)"));
            &params[s.range()]
        };
        let (h, gh) = (hidden, cell.gates() * hidden);
        let pre = cell.name();
        let emb = tensor("embedding.weight");
        let w_ih0 = tensor(&format!("{pre}0.weight_ih"));
        let b_ih0 = tensor(&format!("{pre}0.bias_ih"));
        let b_hh0 = tensor(&format!("{pre}0.bias_hh"));
        let bias0: Vec<f32> = match cell {
            Cell::Lstm => b_ih0.iter().zip(b_hh0).map(|(a, b)| a + b).collect(),
            Cell::Gru => b_ih0.to_vec(),
        };
        let layer0 = if vocab * gh <= table_max {
            let mut table = vec![0.0f32; vocab * gh];
            for row in table.chunks_exact_mut(gh) {
                row.copy_from_slice(&bias0);
            }
            compute::sgemm(
                MatMut::row_major(&mut table, vocab, gh),
                1.0,
                MatRef::row_major(emb, vocab, embed),
                MatRef::row_major(w_ih0, gh, embed).t(),
                1.0,
            );
            Layer0Input::Table(table)
        } else {
            Layer0Input::Project {
                emb: emb.to_vec(),
                embed,
                w_ih: w_ih0.to_vec(),
                bias: bias0,
            }
        };
        let mut steps = Vec::with_capacity(layers);
        for k in 0..layers {
            let w_ih = tensor(&format!("{pre}{k}.weight_ih"));
            let w_hh = tensor(&format!("{pre}{k}.weight_hh"));
            let b_ih = tensor(&format!("{pre}{k}.bias_ih"));
            let b_hh = tensor(&format!("{pre}{k}.bias_hh"));
            let layer = match cell {
                Cell::Lstm => {
                    let w_rec = if k == 0 {
                        w_hh.to_vec()
                    } else {
                        let mut w = Vec::with_capacity(gh * 2 * h);
                        for r in 0..gh {
                            w.extend_from_slice(&w_ih[r * h..(r + 1) * h]);
                            w.extend_from_slice(&w_hh[r * h..(r + 1) * h]);
                        }
                        w
                    };
                    StepLayer {
                        w_rec,
                        w_ih: Vec::new(),
                        b_x: b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect(),
                        b_h: Vec::new(),
                    }
                }
                Cell::Gru => StepLayer {
                    w_rec: w_hh.to_vec(),
                    w_ih: if k == 0 { Vec::new() } else { w_ih.to_vec() },
                    b_x: b_ih.to_vec(),
                    b_h: b_hh.to_vec(),
                },
            };
            steps.push(layer);
        }
        Ok(Self {
            cell,
            vocab,
            hidden,
            layers,
            layer0,
            steps,
            out_w: tensor("output.weight").to_vec(),
            out_b: tensor("output.bias").to_vec(),
        })
    }

    /// Layer 0's input pre-activations (biases included) of `tokens` into `dst` (`[n, G H]`);
    /// `x` is scratch for the embedding rows.
    fn layer0_input(&self, tokens: &[u32], dst: &mut [f32], x: &mut Vec<f32>) {
        let gh = self.cell.gates() * self.hidden;
        match &self.layer0 {
            Layer0Input::Table(table) => {
                for (row, &t) in dst.chunks_exact_mut(gh).zip(tokens) {
                    let t = t as usize;
                    row.copy_from_slice(&table[t * gh..(t + 1) * gh]);
                }
            }
            Layer0Input::Project {
                emb,
                embed,
                w_ih,
                bias,
            } => {
                let (n, e) = (tokens.len(), *embed);
                x.clear();
                for &t in tokens {
                    let t = t as usize;
                    x.extend_from_slice(&emb[t * e..(t + 1) * e]);
                }
                for row in dst.chunks_exact_mut(gh) {
                    row.copy_from_slice(bias);
                }
                compute::sgemm_serial(
                    MatMut::row_major(dst, n, gh),
                    1.0,
                    MatRef::row_major(x, n, e),
                    MatRef::row_major(w_ih, gh, e).t(),
                    1.0,
                );
            }
        }
    }

    /// One step for a block of `n` rows (`state` `[n, width]`).
    fn step_block(
        &self,
        state: &mut [f32],
        tokens: &[u32],
        log_probs: &mut [f32],
        (scratch, x): &mut (Vec<f32>, Vec<f32>),
    ) {
        let (h, l, v) = (self.hidden, self.layers, self.vocab);
        let gh = self.cell.gates() * h;
        let width = self.state_width();
        let n = tokens.len();
        let serial = compute::sgemm_serial;
        match self.cell {
            Cell::Lstm => {
                scratch.resize(n * gh, 0.0);
                let pre = &mut scratch[..n * gh];
                for (k, layer) in self.steps.iter().enumerate() {
                    let (in_col, in_cols) = if k == 0 { (0, h) } else { ((k - 1) * h, 2 * h) };
                    if k == 0 {
                        self.layer0_input(tokens, pre, x);
                    } else {
                        for row in pre.chunks_exact_mut(gh) {
                            row.copy_from_slice(&layer.b_x);
                        }
                    }
                    serial(
                        MatMut::row_major(pre, n, gh),
                        1.0,
                        state_view(state, n, width, in_col, in_cols),
                        MatRef::row_major(&layer.w_rec, gh, in_cols).t(),
                        1.0,
                    );
                    rnn::lstm_step_rows(pre, state, width, k * h, (l + k) * h, h);
                }
            }
            Cell::Gru => {
                scratch.resize(2 * n * gh, 0.0);
                let (gx, ghh) = scratch.split_at_mut(n * gh);
                for (k, layer) in self.steps.iter().enumerate() {
                    if k == 0 {
                        self.layer0_input(tokens, gx, x);
                    } else {
                        for row in gx.chunks_exact_mut(gh) {
                            row.copy_from_slice(&layer.b_x);
                        }
                        serial(
                            MatMut::row_major(gx, n, gh),
                            1.0,
                            state_view(state, n, width, (k - 1) * h, h),
                            MatRef::row_major(&layer.w_ih, gh, h).t(),
                            1.0,
                        );
                    }
                    for row in ghh.chunks_exact_mut(gh) {
                        row.copy_from_slice(&layer.b_h);
                    }
                    serial(
                        MatMut::row_major(ghh, n, gh),
                        1.0,
                        state_view(state, n, width, k * h, h),
                        MatRef::row_major(&layer.w_rec, gh, h).t(),
                        1.0,
                    );
                    rnn::gru_step_rows(gx, ghh, state, width, k * h, h);
                }
            }
        }
        for row in log_probs.chunks_exact_mut(v) {
            row.copy_from_slice(&self.out_b);
        }
        serial(
            MatMut::row_major(log_probs, n, v),
            1.0,
            state_view(state, n, width, (l - 1) * h, h),
            MatRef::row_major(&self.out_w, v, h).t(),
            1.0,
        );
        rnn::log_softmax_rows(log_probs, v);
    }

    /// The output projection and log-softmax of a block (`state` `[n, width]`).
    fn output_block(&self, state: &[f32], n: usize, log_probs: &mut [f32]) {
        let (h, l, v) = (self.hidden, self.layers, self.vocab);
        for row in log_probs.chunks_exact_mut(v) {
            row.copy_from_slice(&self.out_b);
        }
        compute::sgemm_serial(
            MatMut::row_major(log_probs, n, v),
            1.0,
            state_view(state, n, self.state_width(), (l - 1) * h, h),
            MatRef::row_major(&self.out_w, v, h).t(),
            1.0,
        );
        rnn::log_softmax_rows(log_probs, v);
    }

    /// `W_hh` of layer `k` as the `B` operand of `x W_hh^T` (`[H, G H]`). LSTM layers >= 1 keep
    /// it as the right half of `[W_ih | W_hh]`.
    fn w_hh_t(&self, k: usize) -> MatRef<'_> {
        let (h, gh) = (self.hidden, self.cell.gates() * self.hidden);
        let w = &self.steps[k].w_rec;
        match (self.cell, k) {
            (Cell::Lstm, k) if k > 0 => MatRef::new(&w[h..], gh, h, 2 * h, 1).t(),
            _ => MatRef::row_major(w, gh, h).t(),
        }
    }

    /// `W_ih` of layer `k >= 1` as the `B` operand of `x W_ih^T` (`[H, G H]`).
    fn w_ih_t(&self, k: usize) -> MatRef<'_> {
        let (h, gh) = (self.hidden, self.cell.gates() * self.hidden);
        match self.cell {
            Cell::Lstm => MatRef::new(&self.steps[k].w_rec, gh, h, 2 * h, 1).t(),
            Cell::Gru => MatRef::row_major(&self.steps[k].w_ih, gh, h).t(),
        }
    }

    /// One block of `step_children`: `state` (`[n, width]`) already holds each child's parent
    /// row; `slot[i]` is child i's index in `parent_rows` (`[P, width]`, the distinct parents of
    /// the block). Per layer, the parent part of the pre-activation (`W_hh h_parent`, plus the
    /// recurrent bias) is one `[P, H] x [H, G H]` GEMM; each child adds its input part (the token
    /// table at layer 0, `W_ih h_{k-1}` of the child above it) and runs the cell in place.
    #[allow(clippy::too_many_arguments)]
    fn step_children_block(
        &self,
        parent_rows: &[f32],
        slot: &[u32],
        state: &mut [f32],
        tokens: &[u32],
        log_probs: &mut [f32],
        scratch: &mut ChildScratch,
    ) {
        let (h, l) = (self.hidden, self.layers);
        let gh = self.cell.gates() * h;
        let width = self.state_width();
        let n = tokens.len();
        let p = parent_rows.len() / width;
        let serial = compute::sgemm_serial;
        scratch.shared.resize(p * gh, 0.0);
        scratch.pre.resize(n * gh, 0.0);
        for k in 0..l {
            let shared = &mut scratch.shared[..p * gh];
            // Parent part, once per parent.
            match (self.cell, k) {
                (Cell::Lstm, 0) => shared.fill(0.0),
                (Cell::Lstm, _) => {
                    for row in shared.chunks_exact_mut(gh) {
                        row.copy_from_slice(&self.steps[k].b_x);
                    }
                }
                (Cell::Gru, _) => {
                    for row in shared.chunks_exact_mut(gh) {
                        row.copy_from_slice(&self.steps[k].b_h);
                    }
                }
            }
            serial(
                MatMut::row_major(shared, p, gh),
                1.0,
                state_view(parent_rows, p, width, k * h, h),
                self.w_hh_t(k),
                1.0,
            );
            let pre = &mut scratch.pre[..n * gh];
            match self.cell {
                Cell::Lstm => {
                    if k == 0 {
                        self.layer0_input(tokens, pre, &mut scratch.x);
                        for (row, &s) in pre.chunks_exact_mut(gh).zip(slot) {
                            let s = s as usize;
                            for (a, b) in row.iter_mut().zip(&shared[s * gh..(s + 1) * gh]) {
                                *a += b;
                            }
                        }
                    } else {
                        for (row, &s) in pre.chunks_exact_mut(gh).zip(slot) {
                            let s = s as usize;
                            row.copy_from_slice(&shared[s * gh..(s + 1) * gh]);
                        }
                        serial(
                            MatMut::row_major(pre, n, gh),
                            1.0,
                            state_view(state, n, width, (k - 1) * h, h),
                            self.w_ih_t(k),
                            1.0,
                        );
                    }
                    rnn::lstm_step_rows(pre, state, width, k * h, (l + k) * h, h);
                }
                Cell::Gru => {
                    // gx: the child's input part; gh: the parent's, expanded per child.
                    if k == 0 {
                        self.layer0_input(tokens, pre, &mut scratch.x);
                    } else {
                        for row in pre.chunks_exact_mut(gh) {
                            row.copy_from_slice(&self.steps[k].b_x);
                        }
                        serial(
                            MatMut::row_major(pre, n, gh),
                            1.0,
                            state_view(state, n, width, (k - 1) * h, h),
                            self.w_ih_t(k),
                            1.0,
                        );
                    }
                    scratch.expanded.resize(n * gh, 0.0);
                    let expanded = &mut scratch.expanded[..n * gh];
                    for (row, &s) in expanded.chunks_exact_mut(gh).zip(slot) {
                        let s = s as usize;
                        row.copy_from_slice(&shared[s * gh..(s + 1) * gh]);
                    }
                    rnn::gru_step_rows(pre, expanded, state, width, k * h, h);
                }
            }
        }
        self.output_block(state, n, log_probs);
    }
}

/// Per-thread buffers of `step_children`.
#[derive(Default)]
struct ChildScratch {
    /// Distinct parents' rows of the block.
    parents: Vec<f32>,
    slot: Vec<u32>,
    shared: Vec<f32>,
    pre: Vec<f32>,
    expanded: Vec<f32>,
    x: Vec<f32>,
}

impl IncrementalLm for RecurrentLm {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn state_width(&self) -> usize {
        match self.cell {
            Cell::Lstm => 2 * self.layers * self.hidden,
            Cell::Gru => self.layers * self.hidden,
        }
    }

    /// # Panics
    /// If the state width, the number of tokens or the size of `log_probs` does not match, or a
    /// token is outside the vocabulary (caller bugs: ids come from the model's own tokenizer).
    fn step(&self, state: &mut LmState, tokens: &[u32], log_probs: &mut [f32]) {
        let (rows, width, v) = (state.rows, self.state_width(), self.vocab);
        assert_eq!(state.width, width, "LmState width does not match the model");
        assert_eq!(state.data.len(), rows * width, "LmState data length");
        assert_eq!(tokens.len(), rows, "one token per state row");
        assert_eq!(log_probs.len(), rows * v, "log_probs must be [rows, vocab]");
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            panic!("token {t} is outside the vocabulary of {v}");
        }
        if rows == 0 {
            return;
        }
        // About four blocks per thread for load balance, within [32, STEP_BLOCK_ROWS] rows.
        let threads = rayon::current_num_threads().max(1);
        let block = rows.div_ceil(4 * threads).clamp(32, STEP_BLOCK_ROWS);
        state
            .data
            .par_chunks_mut(block * width)
            .zip(tokens.par_chunks(block))
            .zip(log_probs.par_chunks_mut(block * v))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |scratch, ((s, t), lp)| self.step_block(s, t, lp, scratch),
            );
    }

    /// Fused: the parents' recurrent products are computed once per distinct parent of a block
    /// (see `step_children_block`), the children's input products once per child. For the 2x200
    /// LSTM with 10 children per parent this is ~2.4x fewer multiply-adds than `step`.
    ///
    /// # Panics
    /// As `step`, and if a parent index is out of range.
    fn step_children(
        &self,
        parents: &LmState,
        parent: &[u32],
        tokens: &[u32],
        out: &mut LmState,
        log_probs: &mut [f32],
    ) {
        let (width, v) = (self.state_width(), self.vocab);
        let rows = parent.len();
        assert_eq!(
            parents.width, width,
            "LmState width does not match the model"
        );
        assert_eq!(tokens.len(), rows, "one token per child");
        assert_eq!(log_probs.len(), rows * v, "log_probs must be [rows, vocab]");
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            panic!("token {t} is outside the vocabulary of {v}");
        }
        if let Some(p) = parent.iter().find(|&&p| p as usize >= parents.rows) {
            panic!("parent {p} is outside the {} parent rows", parents.rows);
        }
        crate::lm::gather_rows(parents, parent, out);
        if rows == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        let block = rows.div_ceil(4 * threads).clamp(32, STEP_BLOCK_ROWS);
        out.data
            .par_chunks_mut(block * width)
            .zip(tokens.par_chunks(block))
            .zip(parent.par_chunks(block))
            .zip(log_probs.par_chunks_mut(block * v))
            .for_each_init(ChildScratch::default, |sc, (((s, t), par), lp)| {
                // Distinct adjacent parents of the block, and each child's slot among them.
                sc.parents.clear();
                sc.slot.clear();
                let mut last = u32::MAX;
                for &p in par {
                    if p != last {
                        sc.parents.extend_from_slice(parents.row(p as usize));
                        last = p;
                    }
                    sc.slot.push((sc.parents.len() / width - 1) as u32);
                }
                let parent_rows = std::mem::take(&mut sc.parents);
                let slot = std::mem::take(&mut sc.slot);
                if parent_rows.len() / width * 2 > par.len() {
                    // Little sharing: the plain step (one GEMM per layer) is cheaper.
                    let mut bufs = (std::mem::take(&mut sc.pre), std::mem::take(&mut sc.x));
                    self.step_block(s, t, lp, &mut bufs);
                    (sc.pre, sc.x) = bufs;
                } else {
                    self.step_children_block(&parent_rows, &slot, s, t, lp, sc);
                }
                sc.parents = parent_rows;
                sc.slot = slot;
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The per-step projection (used when the token table would be too large) and the table give
    /// the same log-probabilities (to f32 rounding of two summation orders).
    #[test]
    fn token_table_and_projection_agree() {
        for (cell, cfg) in [
            (
                Cell::Lstm,
                ModelConfig::LstmLm {
                    vocab: 9,
                    embed: 5,
                    hidden: 6,
                    layers: 2,
                    dropout: 0.0,
                },
            ),
            (
                Cell::Gru,
                ModelConfig::GruLm {
                    vocab: 9,
                    embed: 5,
                    hidden: 6,
                    layers: 2,
                    dropout: 0.0,
                },
            ),
        ] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let params = cfg.build().unwrap().init_params(&mut rng);
            let table = RecurrentLm::new(&cfg, cell, 9, 5, 6, 2, &params, usize::MAX).unwrap();
            let proj = RecurrentLm::new(&cfg, cell, 9, 5, 6, 2, &params, 0).unwrap();
            assert!(matches!(table.layer0, Layer0Input::Table(_)));
            assert!(matches!(proj.layer0, Layer0Input::Project { .. }));
            let rows = 40;
            let (mut s1, mut s2) = (table.initial_state(rows), proj.initial_state(rows));
            let (mut l1, mut l2) = (vec![0.0; rows * 9], vec![0.0; rows * 9]);
            for _ in 0..4 {
                let tok: Vec<u32> = (0..rows).map(|_| rng.random_range(0..9)).collect();
                table.step(&mut s1, &tok, &mut l1);
                proj.step(&mut s2, &tok, &mut l2);
                for (a, b) in l1.iter().zip(&l2) {
                    assert!((a - b).abs() < 1e-5, "{cell:?}: {a} vs {b}");
                }
            }
        }
    }

    /// The fused `step_children` equals gathering the parents and calling `step` (to f32
    /// rounding of another summation order), for both cells and 1-3 layers, with children of a
    /// parent adjacent (the fused path), scattered (the plain fallback inside a block) and a mix
    /// across blocks; the state after a second fused step agrees too.
    #[test]
    fn step_children_matches_gather_then_step() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for layers in 1..=3 {
            for cfg in [
                ModelConfig::LstmLm {
                    vocab: 13,
                    embed: 6,
                    hidden: 9,
                    layers,
                    dropout: 0.0,
                },
                ModelConfig::GruLm {
                    vocab: 13,
                    embed: 6,
                    hidden: 9,
                    layers,
                    dropout: 0.0,
                },
            ] {
                let params = cfg.build().unwrap().init_params(&mut rng);
                let lm = cfg.incremental_lm(&params).unwrap();
                let v = lm.vocab_size();
                // Parents with a non-trivial state: a few random steps from the initial state.
                let np = 37;
                let mut parents = lm.initial_state(np);
                let mut lp = vec![0.0; np * v];
                for _ in 0..3 {
                    let t: Vec<u32> = (0..np).map(|_| rng.random_range(0..v as u32)).collect();
                    lm.step(&mut parents, &t, &mut lp);
                }
                let adjacent: Vec<u32> = (0..np as u32).flat_map(|p| [p; 10]).collect();
                let scattered: Vec<u32> =
                    (0..300).map(|_| rng.random_range(0..np as u32)).collect();
                let mixed: Vec<u32> = adjacent[..150]
                    .iter()
                    .chain(&scattered[..200])
                    .copied()
                    .collect();
                for parent in [adjacent, scattered, mixed] {
                    let rows = parent.len();
                    let tokens: Vec<u32> =
                        (0..rows).map(|_| rng.random_range(0..v as u32)).collect();
                    let mut fused = LmState::zeros(0, 0);
                    let mut lp_fused = vec![0.0; rows * v];
                    lm.step_children(&parents, &parent, &tokens, &mut fused, &mut lp_fused);
                    let idx: Vec<usize> = parent.iter().map(|&p| p as usize).collect();
                    let mut plain = parents.gather(&idx);
                    let mut lp_plain = vec![0.0; rows * v];
                    lm.step(&mut plain, &tokens, &mut lp_plain);
                    assert_eq!((fused.rows, fused.width), (plain.rows, plain.width));
                    for (a, b) in lp_fused.iter().zip(&lp_plain) {
                        assert!((a - b).abs() < 2e-5, "{cfg:?}: log-prob {a} vs {b}");
                    }
                    for (a, b) in fused.data.iter().zip(&plain.data) {
                        assert!((a - b).abs() < 2e-5, "{cfg:?}: state {a} vs {b}");
                    }
                    // One more level from the fused children.
                    let grand: Vec<u32> = (0..rows as u32).flat_map(|p| [p; 3]).collect();
                    let gt: Vec<u32> = (0..grand.len())
                        .map(|_| rng.random_range(0..v as u32))
                        .collect();
                    let mut g1 = LmState::zeros(0, 0);
                    let mut l1 = vec![0.0; grand.len() * v];
                    lm.step_children(&fused, &grand, &gt, &mut g1, &mut l1);
                    let gi: Vec<usize> = grand.iter().map(|&p| p as usize).collect();
                    let mut g2 = plain.gather(&gi);
                    let mut l2 = vec![0.0; grand.len() * v];
                    lm.step(&mut g2, &gt, &mut l2);
                    for (a, b) in l1.iter().zip(&l2) {
                        assert!(
                            (a - b).abs() < 5e-5,
                            "{cfg:?}: grandchild log-prob {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
