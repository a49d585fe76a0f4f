//! Causal multi-head self-attention (Vaswani et al. 2017; GPT-2's `attn` module) over a
//! time-major `[T, B, E]` input:
//!
//! `qkv = x W_attn^T + b_attn` (`c_attn`, E -> 3E), split into H heads of `d = E / H`;
//! per example and head, `P = softmax(scale . Q K^T + causal mask)`, `O = P V`; the heads are
//! concatenated and projected, `y = O W_proj^T + b_proj` (`c_proj`, E -> E).
//!
//! `scale` is `1 / sqrt(d)` when GPT-2's `scale_attn_weights` is set (the default), times
//! `1 / (layer + 1)` under `scale_attn_by_inverse_layer_idx`.
//!
//! Per-example gradients: the only parameters are the two projections, and each is a linear
//! layer applied to T rows per example, so the `Linear` rule applies unchanged (Gram identity
//! `<G_i G_i^T, A_i A_i^T>` or materialising `G_i^T A_i`, whichever is estimated faster). The
//! softmax core is parameterless: examples never mix in it (each (example, head) pair is its own
//! T x T problem), so it only carries gradients between the two projections.

use rayon::prelude::*;

use crate::compute::{self, NormRule};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::layers::Linear;
use crate::tensor::{MatMut, MatRef, Tensor};

#[derive(Clone, Debug)]
pub struct CausalSelfAttention {
    pub embed: usize,
    pub heads: usize,
    /// Multiplies `Q K^T` before the softmax.
    pub scale: f32,
    pub(crate) c_attn: Linear,
    pub(crate) c_proj: Linear,
}

impl CausalSelfAttention {
    /// `scale` as GPT-2 computes it: see the module docs.
    pub fn new(embed: usize, heads: usize, scale: f32) -> Result<Self> {
        if embed == 0 || heads == 0 || !embed.is_multiple_of(heads) {
            return Err(EngineError::Config(format!(
                "attention needs a width divisible by the number of heads (got width {embed}, \
                 {heads} heads)"
            )));
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(EngineError::Config(format!(
                "attention scale must be positive, got {scale}"
            )));
        }
        Ok(Self {
            embed,
            heads,
            scale,
            c_attn: Linear::new(embed, 3 * embed, true),
            c_proj: Linear::new(embed, embed, true),
        })
    }

    /// GPT-2's scale for block `layer` (0-based).
    pub fn gpt2_scale(
        embed: usize,
        heads: usize,
        weights: bool,
        inverse_layer: bool,
        layer: usize,
    ) -> f32 {
        let mut s = 1.0f32;
        if weights {
            s /= ((embed / heads.max(1)) as f32).sqrt();
        }
        if inverse_layer {
            s /= (layer + 1) as f32;
        }
        s
    }

    fn split(&self) -> usize {
        self.c_attn.params().iter().map(|d| d.len()).sum()
    }

    fn head_dim(&self) -> usize {
        self.embed / self.heads
    }
}

/// Forward cache: the projections' inputs and caches, and the attention probabilities
/// `[B * H, T, T]` (example-major, zero above the diagonal).
struct AttnCache {
    qkv: Tensor,
    probs: Vec<f32>,
    /// The heads' concatenated outputs `[T, B, E]`: `c_proj`'s input.
    o: Value,
    attn_cache: Cache,
    proj_cache: Cache,
}

struct AttnGrad {
    attn: GradState,
    proj: GradState,
}

/// Softmax of row `t` over its first `t + 1` entries (the causal mask); the rest become 0.
fn causal_softmax_rows(s: &mut [f32], steps: usize) {
    for (t, row) in s.chunks_exact_mut(steps).enumerate() {
        let (live, masked) = row.split_at_mut(t + 1);
        let m = live.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0f32;
        for v in live.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        live.iter_mut().for_each(|v| *v *= inv);
        masked.fill(0.0);
    }
}

/// The softmax core, forward: `qkv` `[T, B, 3E]` -> (`O` `[T, B, E]`, probabilities).
pub(crate) fn attention_core_forward(
    qkv: &[f32],
    steps: usize,
    batch: usize,
    embed: usize,
    heads: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let d = embed / heads;
    let (t, b, e) = (steps, batch, embed);
    let mut probs = vec![0.0f32; b * heads * t * t];
    let mut heads_out = vec![0.0f32; b * heads * t * d];
    probs
        .par_chunks_mut((t * t).max(1))
        .zip(heads_out.par_chunks_mut((t * d).max(1)))
        .enumerate()
        .for_each(|(bh, (p, o))| {
            let (i, h) = (bh / heads, bh % heads);
            let view =
                |off: usize| MatRef::new(&qkv[i * 3 * e + off + h * d..], t, d, b * 3 * e, 1);
            let (q, k, v) = (view(0), view(e), view(2 * e));
            compute::sgemm_serial(MatMut::row_major(p, t, t), 0.0, q, k.t(), scale);
            causal_softmax_rows(p, t);
            compute::sgemm_serial(
                MatMut::row_major(o, t, d),
                0.0,
                MatRef::row_major(p, t, t),
                v,
                1.0,
            );
        });
    // Scatter [B, H, T, d] into time-major [T, B, E].
    let mut out = vec![0.0f32; t * b * e];
    if d > 0 {
        for (bh, o) in heads_out.chunks_exact(t * d).enumerate() {
            let (i, h) = (bh / heads, bh % heads);
            for (s, row) in o.chunks_exact(d).enumerate() {
                out[(s * b + i) * e + h * d..][..d].copy_from_slice(row);
            }
        }
    }
    (out, probs)
}

/// The softmax core, backward: `dO` `[T, B, E]` -> `dqkv` `[T, B, 3E]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_core_backward(
    qkv: &[f32],
    probs: &[f32],
    d_o: &[f32],
    steps: usize,
    batch: usize,
    embed: usize,
    heads: usize,
    scale: f32,
) -> Vec<f32> {
    let d = embed / heads;
    let (t, b, e) = (steps, batch, embed);
    // Per (example, head): [dQ | dK | dV] as three [T, d] blocks.
    let mut dheads = vec![0.0f32; b * heads * 3 * t * d];
    dheads
        .par_chunks_mut((3 * t * d).max(1))
        .enumerate()
        .for_each_init(Vec::new, |dp, (bh, dst)| {
            let (i, h) = (bh / heads, bh % heads);
            let view =
                |off: usize| MatRef::new(&qkv[i * 3 * e + off + h * d..], t, d, b * 3 * e, 1);
            let (q, k, v) = (view(0), view(e), view(2 * e));
            let dout = MatRef::new(&d_o[i * e + h * d..], t, d, b * e, 1);
            let p = &probs[bh * t * t..(bh + 1) * t * t];
            let pm = MatRef::row_major(p, t, t);
            let (dq, rest) = dst.split_at_mut(t * d);
            let (dk, dv) = rest.split_at_mut(t * d);
            // dV = P^T dO.
            compute::sgemm_serial(MatMut::row_major(dv, t, d), 0.0, pm.t(), dout, 1.0);
            // dP = dO V^T, then the softmax backward dS = P . (dP - rowsum(dP . P)), times scale.
            dp.resize(t * t, 0.0);
            compute::sgemm_serial(MatMut::row_major(dp, t, t), 0.0, dout, v.t(), 1.0);
            for (dr, pr) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (x, &pv) in dr.iter_mut().zip(pr) {
                    *x = pv * (*x - dot) * scale;
                }
            }
            let ds = MatRef::row_major(dp, t, t);
            // dQ = dS K, dK = dS^T Q.
            compute::sgemm_serial(MatMut::row_major(dq, t, d), 0.0, ds, k, 1.0);
            compute::sgemm_serial(MatMut::row_major(dk, t, d), 0.0, ds.t(), q, 1.0);
        });
    let mut dqkv = vec![0.0f32; t * b * 3 * e];
    if d > 0 {
        for (bh, blocks) in dheads.chunks_exact(3 * t * d).enumerate() {
            let (i, h) = (bh / heads, bh % heads);
            for (part, blk) in blocks.chunks_exact(t * d).enumerate() {
                for (s, row) in blk.chunks_exact(d).enumerate() {
                    dqkv[(s * b + i) * 3 * e + part * e + h * d..][..d].copy_from_slice(row);
                }
            }
        }
    }
    dqkv
}

/// f64 reference of the whole layer (`p` as laid out by `params`).
pub(crate) fn attention_reference(
    l: &CausalSelfAttention,
    p: &[f64],
    data: &[f64],
    shape: &[usize],
) -> Vec<f64> {
    let (t, b, e) = (shape[0], shape[1], shape[2]);
    let (h, d) = (l.heads, l.head_dim());
    let (wa, rest) = p.split_at(3 * e * e);
    let (ba, rest) = rest.split_at(3 * e);
    let (wp, bp) = rest.split_at(e * e);
    let linear = |x: &[f64], w: &[f64], bias: &[f64], out: usize| -> Vec<f64> {
        let inp = x.len() / (t * b).max(1);
        let mut y = vec![0.0; t * b * out];
        for r in 0..t * b {
            for o in 0..out {
                let mut s = bias[o];
                for j in 0..inp {
                    s += w[o * inp + j] * x[r * inp + j];
                }
                y[r * out + o] = s;
            }
        }
        y
    };
    let qkv = linear(data, wa, ba, 3 * e);
    let mut o = vec![0.0f64; t * b * e];
    let sc = l.scale as f64;
    for i in 0..b {
        for hh in 0..h {
            let at =
                |s: usize, part: usize, j: usize| qkv[(s * b + i) * 3 * e + part * e + hh * d + j];
            for s in 0..t {
                let logits: Vec<f64> = (0..=s)
                    .map(|u| sc * (0..d).map(|j| at(s, 0, j) * at(u, 1, j)).sum::<f64>())
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = logits.iter().map(|z| (z - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for j in 0..d {
                    o[(s * b + i) * e + hh * d + j] =
                        (0..=s).map(|u| w[u] / z * at(u, 2, j)).sum::<f64>();
                }
            }
        }
    }
    linear(&o, wp, bp, e)
}

impl Layer for CausalSelfAttention {
    fn kind(&self) -> &'static str {
        "causal_self_attention"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let mut v = Vec::new();
        for (name, l) in [("c_attn", &self.c_attn), ("c_proj", &self.c_proj)] {
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

    fn init(&self, p: &mut [f32], rng: &mut dyn rand::RngCore) {
        let (a, b) = p.split_at_mut(self.split());
        self.c_attn.init(a, rng);
        self.c_proj.init(b, rng);
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [_, _, e] if *e == self.embed => Ok(input.to_vec()),
            _ => Err(EngineError::Shape(format!(
                "attention expects a sequence [T, B, {}], got {input:?}",
                self.embed
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let xt = x.dense()?;
        self.out_shape(&xt.shape)?;
        let (t, b) = (xt.shape[0], xt.shape[1]);
        let (pa, pp) = p.split_at(self.split());
        let (qkv, attn_cache) = self.c_attn.forward(pa, x, ctx)?;
        let (o, probs) =
            attention_core_forward(&qkv.data, t, b, self.embed, self.heads, self.scale);
        let o = Value::Dense(Tensor {
            data: o,
            shape: vec![t, b, self.embed],
        });
        let (y, proj_cache) = self.c_proj.forward(pp, &o, ctx)?;
        Ok((
            y,
            Box::new(AttnCache {
                qkv,
                probs,
                o,
                attn_cache,
                proj_cache,
            }),
        ))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let c = downcast::<AttnCache>(cache, "attention");
        let (pa, pp) = p.split_at(self.split());
        let (t, b) = (c.qkv.shape[0], c.qkv.shape[1]);
        let (d_o, proj) = self.c_proj.backward(pp, &c.o, &c.proj_cache, dy, true)?;
        let d_o = d_o.expect("requested");
        let dqkv = attention_core_backward(
            &c.qkv.data,
            &c.probs,
            &d_o.data,
            t,
            b,
            self.embed,
            self.heads,
            self.scale,
        );
        let dqkv = Tensor {
            data: dqkv,
            shape: vec![t, b, 3 * self.embed],
        };
        let (dx, attn) = self.c_attn.backward(pa, x, &c.attn_cache, dqkv, need_dx)?;
        Ok((dx, Box::new(AttnGrad { attn, proj })))
    }

    fn add_sq_norms(&self, p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let c = downcast::<AttnCache>(cache, "attention");
        let s = downcast::<AttnGrad>(st, "attention");
        let (pa, pp) = p.split_at(self.split());
        self.c_attn.add_sq_norms(pa, x, &c.attn_cache, &s.attn, out);
        self.c_proj
            .add_sq_norms(pp, &c.o, &c.proj_cache, &s.proj, out);
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
        let c = downcast::<AttnCache>(cache, "attention");
        let s = downcast::<AttnGrad>(st, "attention");
        let (pa, pp) = p.split_at(self.split());
        let (ga, gp) = grad.split_at_mut(self.split());
        self.c_attn
            .add_grads(pa, x, &c.attn_cache, &s.attn, scale, ga);
        self.c_proj
            .add_grads(pp, &c.o, &c.proj_cache, &s.proj, scale, gp);
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        self.out_shape(shape)?;
        Ok(RefValue::Dense {
            data: attention_reference(self, p, data, shape),
            shape: shape.to_vec(),
        })
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.c_attn.set_norm_rule(rule);
        self.c_proj.set_norm_rule(rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn oracles_both_norm_rules() {
        let mut l = CausalSelfAttention::new(8, 2, 0.5).unwrap();
        for (shape, seed) in [(vec![5, 3, 8], 1), (vec![1, 4, 8], 2), (vec![7, 1, 8], 3)] {
            let x = Value::Dense(random_tensor(&shape, seed));
            check_layer_gradients(&l, &x, seed + 10).unwrap();
            check_layer_per_example(
                &mut l,
                &x,
                seed + 20,
                &[Some(NormRule::Gram), Some(NormRule::Materialize), None],
            )
            .unwrap();
        }
    }

    /// The causal mask: changing a later step's input leaves earlier outputs unchanged.
    #[test]
    fn is_causal() {
        let l = CausalSelfAttention::new(6, 3, 0.4).unwrap();
        let p = init_params(&l, 4);
        let x1 = random_tensor(&[6, 2, 6], 1);
        let mut x2 = x1.clone();
        for v in &mut x2.data[4 * 2 * 6..] {
            *v += 1.0;
        }
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let (y1, _) = l.forward(&p, &Value::Dense(x1), &mut ctx).unwrap();
        let (y2, _) = l.forward(&p, &Value::Dense(x2), &mut ctx).unwrap();
        assert_eq!(y1.data[..4 * 12], y2.data[..4 * 12]);
        assert_ne!(y1.data[4 * 12..], y2.data[4 * 12..]);
        assert!(CausalSelfAttention::new(6, 4, 1.0).is_err());
        assert_eq!(CausalSelfAttention::gpt2_scale(8, 2, true, true, 1), 0.25);
    }
}
