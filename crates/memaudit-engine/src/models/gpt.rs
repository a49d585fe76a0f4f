//! A GPT-2-architecture decoder (Radford et al. 2019): token and learned positional embeddings,
//! N pre-LayerNorm blocks (causal multi-head self-attention and a GELU MLP, each in a residual
//! branch), a final LayerNorm and an output projection that is tied to the token embedding or
//! not. No dropout (DP-SGD's noise is the regulariser here; GPT-2's dropouts are off at
//! inference, so imported checkpoints compute the same logits).
//!
//! The whole network is one composite layer (`GptNet`, named `gpt` in the model) because a tied
//! head uses the token embedding's parameters, and a layer only sees its own slice. Parameter
//! names follow Hugging Face's `GPT2LMHeadModel` under the layer's prefix: `gpt.wte.weight`,
//! `gpt.wpe.weight`, `gpt.h.{k}.ln_1.weight`, `gpt.h.{k}.attn.c_attn.weight`, ...,
//! `gpt.ln_f.weight`, and `gpt.lm_head.weight` when untied (linear weights `[out, in]`).
//!
//! Per-example gradient norms: each part by its own rule (embedding indicator Gram or sparse
//! materialisation, positional rows, LayerNorm, the projections' Gram/materialise rule). With a
//! tied head the token table's per-example gradient is the SUM of its two uses, `E_i` (rows
//! `tok_t` get `ge_t`, the embedding output's gradient) plus `H_i = G_i^T A_i` (the head's
//! gradient, G its output gradient, A the final LayerNorm's output), and the norm is that of the
//! sum: `||E_i + H_i||^2 = ||E_i||^2 + ||H_i||^2 + 2 <E_i, H_i>`, with the cross term
//! `<E_i, H_i> = sum_{s,t} G_i[s, tok_t] (a_s . ge_t)`: one `[T, E] x [E, T]` product per example.
//! (Opacus' ghost clipping refuses tied parameters; summing the two norms instead would
//! misstate the sensitivity.)

use std::ops::Range;

use rand::RngCore;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::compute::{self, NormRule, rnn};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::layers::{
    CausalSelfAttention, Embedding, GPT2_INIT_STD, GeluKind, LayerNorm, Linear,
    PositionalEmbedding, TransformerBlock, gelu_inplace,
};
use crate::lm::{IncrementalLm, LmState};
use crate::model::Model;
use crate::params::ParamKind;
use crate::tensor::{MatMut, MatRef, Tensor};

/// The sizes and options of a GPT (the fields of `ModelConfig::Gpt`).
#[derive(Clone, Debug, PartialEq)]
pub struct GptShape {
    pub vocab: usize,
    pub n_ctx: usize,
    pub embed: usize,
    pub layers: usize,
    pub heads: usize,
    pub inner: usize,
    pub tie: bool,
    pub gelu: GeluKind,
    pub ln_eps: f32,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
}

impl GptShape {
    pub fn validate(&self) -> Result<()> {
        if self.vocab < 2 || self.embed == 0 || self.n_ctx == 0 || self.inner == 0 {
            return Err(EngineError::Config(format!(
                "GPT needs vocab >= 2, width >= 1, context >= 1 and MLP width >= 1 (got vocab \
                 {}, width {}, context {}, MLP {})",
                self.vocab, self.embed, self.n_ctx, self.inner
            )));
        }
        if !(1..=48).contains(&self.layers) {
            return Err(EngineError::Config(format!(
                "GPT supports 1 to 48 blocks, got {}",
                self.layers
            )));
        }
        if self.heads == 0 || !self.embed.is_multiple_of(self.heads) {
            return Err(EngineError::Config(format!(
                "GPT width {} is not divisible by {} heads",
                self.embed, self.heads
            )));
        }
        if !(self.ln_eps.is_finite() && self.ln_eps > 0.0) {
            return Err(EngineError::Config(format!(
                "layer-norm epsilon must be positive, got {}",
                self.ln_eps
            )));
        }
        Ok(())
    }

    fn attn_scale(&self, layer: usize) -> f32 {
        CausalSelfAttention::gpt2_scale(
            self.embed,
            self.heads,
            self.scale_attn_weights,
            self.scale_attn_by_inverse_layer_idx,
            layer,
        )
    }
}

/// The whole GPT as one layer: token ids `[T, B]` -> logits `[T, B, V]`.
pub struct GptNet {
    pub shape: GptShape,
    wte: Embedding,
    wpe: PositionalEmbedding,
    blocks: Vec<TransformerBlock>,
    ln_f: LayerNorm,
    /// The output projection; with a tied head its weight is `wte`'s table.
    head: Linear,
}

/// Index of the token embedding in `GptNet::parts` (wte, wpe, blocks, ln_f, head).
const WTE: usize = 0;

impl GptNet {
    pub fn new(shape: GptShape) -> Result<Self> {
        shape.validate()?;
        let mut ln_f = LayerNorm::new(shape.embed)?;
        ln_f.eps = shape.ln_eps;
        let blocks = (0..shape.layers)
            .map(|k| {
                TransformerBlock::new(
                    shape.embed,
                    shape.heads,
                    shape.inner,
                    shape.gelu,
                    shape.attn_scale(k),
                    shape.ln_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wte: Embedding::new(shape.vocab, shape.embed),
            wpe: PositionalEmbedding::new(shape.n_ctx, shape.embed)?,
            blocks,
            ln_f,
            head: Linear::new(shape.embed, shape.vocab, false),
            shape,
        })
    }

    fn head_index(&self) -> usize {
        3 + self.blocks.len()
    }

    /// The parts and their names, in parameter order (the head only when untied).
    fn parts(&self) -> Vec<(String, &dyn Layer)> {
        let mut v: Vec<(String, &dyn Layer)> =
            vec![("wte".into(), &self.wte), ("wpe".into(), &self.wpe)];
        for (k, b) in self.blocks.iter().enumerate() {
            v.push((format!("h.{k}"), b));
        }
        v.push(("ln_f".into(), &self.ln_f));
        v.push(("lm_head".into(), &self.head));
        v
    }

    /// Each part's range in the parameter slice; a tied head's is the token table's.
    fn ranges(&self) -> Vec<Range<usize>> {
        let mut off = 0;
        let mut out: Vec<Range<usize>> = self
            .parts()
            .iter()
            .map(|(_, l)| {
                let n: usize = l.params().iter().map(|d| d.len()).sum();
                off += n;
                off - n..off
            })
            .collect();
        if self.shape.tie {
            let wte = out[WTE].clone();
            *out.last_mut().expect("head") = wte;
        }
        out
    }
}

struct GptCache {
    /// Each part's input (None: the tokens, the net's own input).
    inputs: Vec<Option<Value>>,
    caches: Vec<Cache>,
}

impl GptCache {
    fn input<'a>(&'a self, k: usize, x: &'a Value) -> &'a Value {
        self.inputs[k].as_ref().unwrap_or(x)
    }
}

struct GptGrad {
    states: Vec<GradState>,
    /// Tied head: each example's `<E_i, H_i>` (see the module docs).
    cross: Option<Vec<f32>>,
}

/// `<E_i, H_i>` per example: `sum_{s,t} G_i[s, tok_t] (a_s . ge_t)` with `G` the head's output
/// gradient `[T, B, V]`, `a` its input `[T, B, E]` and `ge` the token embedding's output
/// gradient `[T, B, E]`.
fn tied_cross_terms(tok: &TokenInput, g: &Tensor, a: &Tensor, ge: &Tensor) -> Vec<f32> {
    let (t, b) = (tok.seq_len, tok.batch);
    let v = g.shape[2];
    let e = a.shape[2];
    (0..b)
        .into_par_iter()
        .map_init(Vec::new, |m, i| {
            // M[s, u] = a_s . ge_u.
            m.resize(t * t, 0.0);
            compute::sgemm_serial(
                MatMut::row_major(m, t, t),
                0.0,
                MatRef::new(&a.data[i * e..], t, e, b * e, 1),
                MatRef::new(&ge.data[i * e..], t, e, b * e, 1).t(),
                1.0,
            );
            let mut s = 0.0f64;
            for si in 0..t {
                let grow = &g.data[(si * b + i) * v..][..v];
                for u in 0..t {
                    let id = tok.ids[u * b + i] as usize;
                    s += (grow[id] * m[si * t + u]) as f64;
                }
            }
            s as f32
        })
        .collect()
}

impl Layer for GptNet {
    fn kind(&self) -> &'static str {
        "gpt"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let mut parts = self.parts();
        if self.shape.tie {
            parts.pop();
        }
        let mut v = Vec::new();
        for (name, l) in parts {
            for d in l.params() {
                v.push(ParamDesc::new(
                    format!("{name}.{}", d.suffix),
                    d.shape,
                    d.kind,
                ));
            }
        }
        v
    }

    /// GPT-2's initialisation (Hugging Face `GPT2PreTrainedModel._init_weights`): weights and
    /// embeddings N(0, 0.02), the residual branches' output projections (`attn.c_proj`,
    /// `mlp.c_proj`) N(0, 0.02 / sqrt(2 N)), biases 0, LayerNorm scales 1 and shifts 0.
    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        let std = GPT2_INIT_STD;
        let resid = std / ((2 * self.shape.layers) as f32).sqrt();
        let mut off = 0;
        for d in self.params() {
            let n = d.len();
            let dst = &mut p[off..off + n];
            off += n;
            match d.kind {
                ParamKind::Weight | ParamKind::Embedding => {
                    let s = if d.suffix.ends_with("c_proj.weight") {
                        resid
                    } else {
                        std
                    };
                    let normal = Normal::new(0.0, s).expect("valid std");
                    dst.iter_mut().for_each(|v| *v = normal.sample(rng));
                }
                ParamKind::NormScale => dst.fill(1.0),
                ParamKind::Bias | ParamKind::NormShift => dst.fill(0.0),
            }
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [t, b] => {
                self.wpe.out_shape(&[*t, *b, self.shape.embed])?;
                Ok(vec![*t, *b, self.shape.vocab])
            }
            _ => Err(EngineError::Shape(format!(
                "GPT expects token ids [T, B], got {input:?}"
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let Value::Tokens(tok) = x else {
            return Err(EngineError::Shape("GPT expects token ids [T, B]".into()));
        };
        self.out_shape(&[tok.seq_len, tok.batch])?;
        let r = self.ranges();
        let parts = self.parts();
        let mut inputs = vec![None];
        let mut caches = Vec::with_capacity(parts.len());
        let (mut y, c) = self.wte.forward(&p[r[WTE].clone()], x, ctx)?;
        caches.push(c);
        for (k, (_, l)) in parts.iter().enumerate().skip(1) {
            let input = Value::Dense(y);
            let (out, c) = l.forward(&p[r[k].clone()], &input, ctx)?;
            inputs.push(Some(input));
            caches.push(c);
            y = out;
        }
        Ok((y, Box::new(GptCache { inputs, caches })))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        _need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let c = downcast::<GptCache>(cache, "gpt");
        let r = self.ranges();
        let parts = self.parts();
        let head = self.head_index();
        let dlogits = self.shape.tie.then(|| dy.clone());
        let mut states: Vec<Option<GradState>> = (0..parts.len()).map(|_| None).collect();
        let mut d = dy;
        for k in (1..parts.len()).rev() {
            let (dx, st) =
                parts[k]
                    .1
                    .backward(&p[r[k].clone()], c.input(k, x), &c.caches[k], d, true)?;
            states[k] = Some(st);
            d = dx.expect("requested");
        }
        let cross = match (&dlogits, x) {
            (Some(g), Value::Tokens(tok)) => {
                let a = c.input(head, x).dense()?;
                Some(tied_cross_terms(tok, g, a, &d))
            }
            _ => None,
        };
        let (_, st) = self
            .wte
            .backward(&p[r[WTE].clone()], x, &c.caches[WTE], d, false)?;
        states[WTE] = Some(st);
        Ok((
            None,
            Box::new(GptGrad {
                states: states.into_iter().map(|s| s.expect("set")).collect(),
                cross,
            }),
        ))
    }

    fn add_sq_norms(&self, p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let c = downcast::<GptCache>(cache, "gpt");
        let s = downcast::<GptGrad>(st, "gpt");
        for (k, ((_, l), r)) in self.parts().into_iter().zip(self.ranges()).enumerate() {
            l.add_sq_norms(&p[r], c.input(k, x), &c.caches[k], &s.states[k], out);
        }
        if let Some(cross) = &s.cross {
            for (o, x) in out.iter_mut().zip(cross) {
                *o += 2.0 * x;
            }
        }
    }

    fn add_grads(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let c = downcast::<GptCache>(cache, "gpt");
        let s = downcast::<GptGrad>(st, "gpt");
        // A tied head adds into the token table's slice: the sum of its two uses.
        for (k, ((_, l), r)) in self.parts().into_iter().zip(self.ranges()).enumerate() {
            l.add_grads(
                &p[r.clone()],
                c.input(k, x),
                &c.caches[k],
                &s.states[k],
                scale,
                &mut grad[r],
            );
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let mut cur = x.clone();
        for ((_, l), r) in self.parts().into_iter().zip(self.ranges()) {
            cur = l.reference_forward(&p[r], &cur)?;
        }
        Ok(cur)
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.wte.set_norm_rule(rule);
        for b in &mut self.blocks {
            b.set_norm_rule(rule);
        }
        self.head.set_norm_rule(rule);
    }
}

/// The model: one layer, `gpt`.
pub(crate) fn build_gpt(shape: GptShape) -> Result<Model> {
    Model::new(vec![("gpt".into(), Box::new(GptNet::new(shape)?))])
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding
// ---------------------------------------------------------------------------------------------

/// One block's weights for the incremental decoder (`[out, in]` layouts, as in the model).
struct StepBlock {
    ln_1: (Vec<f32>, Vec<f32>),
    attn_w: Vec<f32>,
    attn_b: Vec<f32>,
    proj_w: Vec<f32>,
    proj_b: Vec<f32>,
    ln_2: (Vec<f32>, Vec<f32>),
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
    mlp_proj_w: Vec<f32>,
    mlp_proj_b: Vec<f32>,
    scale: f32,
}

/// `IncrementalLm` for a GPT, with a key/value cache in the state row.
///
/// A state row is `[pos, K_0, V_0, K_1, V_1, ...]`: the number of tokens read so far (an exact
/// integer in f32 below 2^24), then, per block, the keys and values of every position read so
/// far in a `[capacity, E]` table each (rows at or after `pos` unused). A row is therefore a
/// complete, self-contained decoder state: gathering, repeating and slicing rows (the trie
/// walk's and extraction's operations on `LmState`) clone caches correctly, and rows at
/// different positions batch together. `capacity` (<= the positional table) bounds how many
/// tokens a row can read; the width is `1 + 2 N capacity E` floats, so callers pick the smallest
/// capacity that covers their sequences (`ModelConfig::incremental_lm_with_context`).
pub struct GptIncremental {
    shape: GptShape,
    capacity: usize,
    wte: Vec<f32>,
    wpe: Vec<f32>,
    blocks: Vec<StepBlock>,
    ln_f: (Vec<f32>, Vec<f32>),
    /// `[V, E]`: the token table when tied.
    head: Vec<f32>,
}

/// Most rows per block of a step (GEMM height).
const STEP_BLOCK_ROWS: usize = 256;

fn layer_norm_rows(x: &[f32], (g, b): &(Vec<f32>, Vec<f32>), eps: f32, out: &mut [f32]) {
    let e = g.len();
    for (xr, yr) in x.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        let mean = xr.iter().sum::<f32>() / e as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / e as f32;
        let rs = 1.0 / (var + eps).sqrt();
        for (((y, &x), &gj), &bj) in yr.iter_mut().zip(xr).zip(g).zip(b) {
            *y = gj * (x - mean) * rs + bj;
        }
    }
}

/// `out = x W^T + b` over `n` rows (serial: called inside a parallel loop).
fn linear_rows(x: &[f32], n: usize, w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    let o = w.len() / (x.len() / n.max(1)).max(1);
    let i = x.len() / n.max(1);
    match b {
        Some(b) => {
            for row in out.chunks_exact_mut(o) {
                row.copy_from_slice(b);
            }
        }
        None => out.fill(0.0),
    }
    compute::sgemm_serial(
        MatMut::row_major(out, n, o),
        1.0,
        MatRef::row_major(x, n, i),
        MatRef::row_major(w, o, i).t(),
        1.0,
    );
}

impl GptIncremental {
    pub(crate) fn new(shape: GptShape, params: &[f32], capacity: usize) -> Result<Self> {
        let model = build_gpt(shape.clone())?;
        if params.len() != model.num_params() {
            return Err(EngineError::Shape(format!(
                "GPT with this config has {} parameters, got a vector of {}",
                model.num_params(),
                params.len()
            )));
        }
        if capacity == 0 || capacity > shape.n_ctx {
            return Err(EngineError::Config(format!(
                "a decoding context of {capacity} tokens is outside the positional table (1 to {} positions)",
                shape.n_ctx
            )));
        }
        if let Some(l) = model.first_nonfinite_layer(params) {
            return Err(EngineError::Config(format!(
                "parameters of layer {l} are not finite"
            )));
        }
        let t = |name: &str| -> Vec<f32> {
            let s = model
                .param_specs()
                .iter()
                .find(|s| s.name == format!("gpt.{name}"))
                .unwrap_or_else(|| panic!("{name} missing from the GPT layout (engine bug)"));
            params[s.range()].to_vec()
        };
        let blocks = (0..shape.layers)
            .map(|k| {
                let n = |s: &str| t(&format!("h.{k}.{s}"));
                StepBlock {
                    ln_1: (n("ln_1.weight"), n("ln_1.bias")),
                    attn_w: n("attn.c_attn.weight"),
                    attn_b: n("attn.c_attn.bias"),
                    proj_w: n("attn.c_proj.weight"),
                    proj_b: n("attn.c_proj.bias"),
                    ln_2: (n("ln_2.weight"), n("ln_2.bias")),
                    fc_w: n("mlp.c_fc.weight"),
                    fc_b: n("mlp.c_fc.bias"),
                    mlp_proj_w: n("mlp.c_proj.weight"),
                    mlp_proj_b: n("mlp.c_proj.bias"),
                    scale: shape.attn_scale(k),
                }
            })
            .collect();
        let wte = t("wte.weight");
        let head = if shape.tie {
            wte.clone()
        } else {
            t("lm_head.weight")
        };
        Ok(Self {
            capacity,
            wpe: t("wpe.weight"),
            ln_f: (t("ln_f.weight"), t("ln_f.bias")),
            blocks,
            wte,
            head,
            shape,
        })
    }

    /// Offset of block `l`'s key table in a state row.
    fn kv_offset(&self, l: usize) -> usize {
        1 + 2 * l * self.capacity * self.shape.embed
    }

    /// One step for a block of `n` rows (`state` `[n, width]`).
    fn step_block(
        &self,
        state: &mut [f32],
        tokens: &[u32],
        log_probs: &mut [f32],
        sc: &mut StepScratch,
    ) {
        let (e, v, cap) = (self.shape.embed, self.shape.vocab, self.capacity);
        let (heads, inner) = (self.shape.heads, self.shape.inner);
        let d = e / heads;
        let width = self.state_width();
        let n = tokens.len();
        let pos: Vec<usize> = state
            .chunks_exact(width)
            .map(|row| row[0] as usize)
            .collect();
        sc.x.resize(n * e, 0.0);
        sc.h.resize(n * e, 0.0);
        sc.qkv.resize(n * 3 * e, 0.0);
        sc.o.resize(n * e, 0.0);
        sc.f.resize(n * inner, 0.0);
        sc.w.resize(cap, 0.0);
        for (r, (&tk, &ps)) in tokens.iter().zip(&pos).enumerate() {
            let (tk, xr) = (tk as usize, &mut sc.x[r * e..(r + 1) * e]);
            let (tok_row, pos_row) = (&self.wte[tk * e..][..e], &self.wpe[ps * e..][..e]);
            for ((x, a), b) in xr.iter_mut().zip(tok_row).zip(pos_row) {
                *x = a + b;
            }
        }
        let eps = self.shape.ln_eps;
        for (l, b) in self.blocks.iter().enumerate() {
            layer_norm_rows(&sc.x, &b.ln_1, eps, &mut sc.h);
            linear_rows(&sc.h, n, &b.attn_w, Some(&b.attn_b), &mut sc.qkv);
            let kv = self.kv_offset(l);
            for (r, row) in state.chunks_exact_mut(width).enumerate() {
                let ps = pos[r];
                let qkv = &sc.qkv[r * 3 * e..(r + 1) * 3 * e];
                let (kt, vt) = row[kv..kv + 2 * cap * e].split_at_mut(cap * e);
                kt[ps * e..(ps + 1) * e].copy_from_slice(&qkv[e..2 * e]);
                vt[ps * e..(ps + 1) * e].copy_from_slice(&qkv[2 * e..]);
                let o = &mut sc.o[r * e..(r + 1) * e];
                o.fill(0.0);
                for h in 0..heads {
                    let q = &qkv[h * d..(h + 1) * d];
                    let w = &mut sc.w[..=ps];
                    for (j, wj) in w.iter_mut().enumerate() {
                        let k = &kt[j * e + h * d..j * e + (h + 1) * d];
                        *wj = b.scale * q.iter().zip(k).map(|(a, c)| a * c).sum::<f32>();
                    }
                    let m = w.iter().fold(f32::NEG_INFINITY, |a, &c| a.max(c));
                    let mut z = 0.0f32;
                    for wj in w.iter_mut() {
                        *wj = (*wj - m).exp();
                        z += *wj;
                    }
                    let oh = &mut o[h * d..(h + 1) * d];
                    for (j, &wj) in w.iter().enumerate() {
                        let p = wj / z;
                        let vv = &vt[j * e + h * d..j * e + (h + 1) * d];
                        for (a, c) in oh.iter_mut().zip(vv) {
                            *a += p * c;
                        }
                    }
                }
            }
            linear_rows(&sc.o, n, &b.proj_w, Some(&b.proj_b), &mut sc.h);
            for (a, c) in sc.x.iter_mut().zip(&sc.h) {
                *a += c;
            }
            layer_norm_rows(&sc.x, &b.ln_2, eps, &mut sc.h);
            linear_rows(&sc.h, n, &b.fc_w, Some(&b.fc_b), &mut sc.f);
            gelu_inplace(self.shape.gelu, &mut sc.f);
            linear_rows(&sc.f, n, &b.mlp_proj_w, Some(&b.mlp_proj_b), &mut sc.h);
            for (a, c) in sc.x.iter_mut().zip(&sc.h) {
                *a += c;
            }
        }
        layer_norm_rows(&sc.x, &self.ln_f, eps, &mut sc.h);
        linear_rows(&sc.h, n, &self.head, None, log_probs);
        rnn::log_softmax_rows(log_probs, v);
        for row in state.chunks_exact_mut(width) {
            row[0] += 1.0;
        }
    }

    /// Tokens a row can still read.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[derive(Default)]
struct StepScratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    o: Vec<f32>,
    f: Vec<f32>,
    w: Vec<f32>,
}

impl IncrementalLm for GptIncremental {
    fn vocab_size(&self) -> usize {
        self.shape.vocab
    }

    fn state_width(&self) -> usize {
        1 + 2 * self.shape.layers * self.capacity * self.shape.embed
    }

    /// # Panics
    /// If the state width, the number of tokens or the size of `log_probs` does not match, a
    /// token is outside the vocabulary, or a row has already read `capacity` tokens (caller
    /// bugs: the capacity is chosen from the sequences to score).
    fn step(&self, state: &mut LmState, tokens: &[u32], log_probs: &mut [f32]) {
        let (rows, width, v) = (state.rows, self.state_width(), self.shape.vocab);
        assert_eq!(state.width, width, "LmState width does not match the model");
        assert_eq!(state.data.len(), rows * width, "LmState data length");
        assert_eq!(tokens.len(), rows, "one token per state row");
        assert_eq!(log_probs.len(), rows * v, "log_probs must be [rows, vocab]");
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= v) {
            panic!("token {t} is outside the vocabulary of {v}");
        }
        if let Some(r) = (0..rows).find(|&r| state.data[r * width] as usize >= self.capacity) {
            panic!(
                "state row {r} has read {} tokens: the decoding context of {} is full",
                state.data[r * width],
                self.capacity
            );
        }
        if rows == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        let block = rows.div_ceil(4 * threads).clamp(1, STEP_BLOCK_ROWS);
        state
            .data
            .par_chunks_mut(block * width)
            .zip(tokens.par_chunks(block))
            .zip(log_probs.par_chunks_mut(block * v))
            .for_each_init(StepScratch::default, |sc, ((s, t), lp)| {
                self.step_block(s, t, lp, sc)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, Clipping, GradRequest};
    use crate::testing::*;
    use rand::{Rng, SeedableRng};

    pub(crate) fn shape(tie: bool, gelu: GeluKind) -> GptShape {
        GptShape {
            vocab: 11,
            n_ctx: 8,
            embed: 8,
            layers: 2,
            heads: 2,
            inner: 12,
            tie,
            gelu,
            ln_eps: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: !tie,
        }
    }

    /// Tokens from a small vocabulary so that ids repeat inside a sequence (the tied cross term
    /// and the embedding Gram's off-diagonal terms are exercised).
    fn tokens(t: usize, b: usize, vocab: usize, seed: u64) -> TokenInput {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        TokenInput {
            seq_len: t,
            batch: b,
            ids: (0..t * b)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect(),
        }
    }

    /// Finite differences and the batch-1 oracle for the whole net, tied and untied, both norm
    /// rules. The tied case checks that the norm is that of the SUM of the token table's two
    /// uses (the oracle materialises each example's full gradient, where both uses add into one
    /// slice).
    #[test]
    fn whole_net_oracles_tied_and_untied() {
        for (tie, gelu, seed) in [(true, GeluKind::Tanh, 1), (false, GeluKind::Exact, 2)] {
            let mut net = GptNet::new(shape(tie, gelu)).unwrap();
            let x = Value::Tokens(tokens(6, 4, 11, seed));
            check_layer_gradients(&net, &x, seed + 10).unwrap();
            check_layer_per_example(
                &mut net,
                &x,
                seed + 20,
                &[Some(NormRule::Gram), Some(NormRule::Materialize), None],
            )
            .unwrap();
        }
    }

    /// The tied norm is not the sum of the two uses' norms: dropping the cross term changes
    /// it (so the oracle above would catch a sum of norms).
    #[test]
    fn tied_cross_term_matters() {
        let net = GptNet::new(shape(true, GeluKind::Tanh)).unwrap();
        let p = init_params(&net, 5);
        let x = Value::Tokens(tokens(6, 3, 11, 7));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let (y, c) = net.forward(&p, &x, &mut ctx).unwrap();
        let dy = random_tensor(&y.shape, 3);
        let (_, st) = net.backward(&p, &x, &c, dy, false).unwrap();
        let cross = downcast::<GptGrad>(&st, "gpt").cross.clone().unwrap();
        assert!(cross.iter().all(|c| c.abs() > 1e-6), "{cross:?}");
    }

    /// The model-level path (`Model::gradients`, loss included) against the oracles too.
    #[test]
    fn model_oracles() {
        let model = build_gpt(shape(true, GeluKind::Tanh)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let params = model.init_params(&mut rng);
        let tok = tokens(7, 5, 11, 4);
        let batch = Batch {
            targets: tokens(7, 5, 11, 5).ids,
            input: Value::Tokens(tok),
            mask: None,
        };
        check_model_gradients(&model, &params, &batch, 1).unwrap();
        check_model_per_example(&model, &params, &batch).unwrap();
        let out = model
            .gradients(
                &params,
                &batch,
                GradRequest {
                    clipping: Some(&Clipping::Flat(0.01)),
                    input_grad: false,
                    train: true,
                    rng: &mut rng,
                },
            )
            .unwrap();
        assert!(out.grad.iter().all(|v| v.is_finite()));
    }

    /// Token-by-token decoding reproduces the full forward's log-probabilities. Tolerance 2e-5
    /// absolute: the two paths sum the same products in different orders in f32 through two
    /// blocks (observed differences are ~1e-6).
    #[test]
    fn incremental_matches_full_forward() {
        for tie in [true, false] {
            let sh = shape(tie, GeluKind::Tanh);
            let model = build_gpt(sh.clone()).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
            let params = model.init_params(&mut rng);
            let (t, b) = (8, 5);
            let tok = tokens(t, b, 11, 6);
            let logits = model
                .forward(&params, &Value::Tokens(tok.clone()), false, &mut rng)
                .unwrap();
            let mut want = logits.data.clone();
            rnn::log_softmax_rows(&mut want, 11);
            let lm = GptIncremental::new(sh.clone(), &params, t).unwrap();
            let mut state = lm.initial_state(b);
            let mut lp = vec![0.0; b * 11];
            for s in 0..t {
                lm.step(&mut state, &tok.ids[s * b..(s + 1) * b], &mut lp);
                for (a, w) in lp.iter().zip(&want[s * b * 11..(s + 1) * b * 11]) {
                    assert!((a - w).abs() < 2e-5, "tie {tie}, step {s}: {a} vs {w}");
                }
            }
            // Rows at different positions batch together, and a gathered (cloned) row carries
            // its cache: continue row 0 from a copy taken after 3 steps.
            let mut st = lm.initial_state(2);
            let mut lp2 = vec![0.0; 2 * 11];
            for s in 0..3 {
                let ids = [tok.ids[s * b], tok.ids[s * b + 1]];
                lm.step(&mut st, &ids, &mut lp2);
            }
            let mut mixed = LmState::concat(&[st.gather(&[0]), lm.initial_state(1)]);
            lm.step(&mut mixed, &[tok.ids[3 * b], tok.ids[2]], &mut lp2);
            for (a, w) in lp2[..11].iter().zip(&want[3 * b * 11..3 * b * 11 + 11]) {
                assert!((a - w).abs() < 2e-5, "continued row: {a} vs {w}");
            }
            for (a, w) in lp2[11..].iter().zip(&want[2 * 11..3 * 11]) {
                assert!((a - w).abs() < 2e-5, "fresh row: {a} vs {w}");
            }
            assert!(GptIncremental::new(sh.clone(), &params, 9).is_err());
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let mut s = shape(true, GeluKind::Tanh);
        s.heads = 3;
        assert!(GptNet::new(s).is_err());
        let net = GptNet::new(shape(true, GeluKind::Tanh)).unwrap();
        let err = net.out_shape(&[9, 1]).unwrap_err().to_string();
        assert!(err.contains("longer than the positional table"), "{err}");
    }
}
