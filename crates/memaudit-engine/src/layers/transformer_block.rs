//! The pre-LayerNorm residual block of GPT-2 (Radford et al. 2019):
//!
//! `x1 = x + attn(ln_1(x))`, `y = x1 + mlp.c_proj(gelu(mlp.c_fc(ln_2(x1))))`,
//! with `c_fc` E -> 4E (`inner`) and `c_proj` 4E -> E, over a time-major `[T, B, E]` input.
//!
//! Parameter names follow Hugging Face's `GPT2Block` (`ln_1.weight`, `attn.c_attn.weight`,
//! `mlp.c_fc.bias`, ...), with the `nn.Linear` layout `[out, in]` (GPT-2's `Conv1D` stores the
//! transpose; the importer transposes).
//!
//! Per-example gradient norms: the block's parameters are the disjoint union of its parts'
//! (two LayerNorms, the attention's two projections, the MLP's two linears), so example i's
//! squared norm is the sum of the parts' squared norms, each by its own rule; the residual
//! connections only add input gradients.

use rand::RngCore;

use crate::compute::NormRule;
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::layers::{CausalSelfAttention, Gelu, GeluKind, LayerNorm, Linear};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct TransformerBlock {
    pub embed: usize,
    pub inner: usize,
    pub(crate) ln_1: LayerNorm,
    pub(crate) attn: CausalSelfAttention,
    pub(crate) ln_2: LayerNorm,
    pub(crate) c_fc: Linear,
    pub(crate) act: Gelu,
    pub(crate) c_proj: Linear,
}

/// Number of parts (sub-layers) of a block.
const PARTS: usize = 6;

impl TransformerBlock {
    pub fn new(
        embed: usize,
        heads: usize,
        inner: usize,
        gelu: GeluKind,
        attn_scale: f32,
        ln_eps: f32,
    ) -> Result<Self> {
        if inner == 0 {
            return Err(EngineError::Config("MLP width must be >= 1".into()));
        }
        let mut ln_1 = LayerNorm::new(embed)?;
        let mut ln_2 = LayerNorm::new(embed)?;
        ln_1.eps = ln_eps;
        ln_2.eps = ln_eps;
        Ok(Self {
            embed,
            inner,
            ln_1,
            attn: CausalSelfAttention::new(embed, heads, attn_scale)?,
            ln_2,
            c_fc: Linear::new(embed, inner, true),
            act: Gelu::new(gelu),
            c_proj: Linear::new(inner, embed, true),
        })
    }

    fn parts(&self) -> [(&'static str, &dyn Layer); PARTS] {
        [
            ("ln_1", &self.ln_1),
            ("attn", &self.attn),
            ("ln_2", &self.ln_2),
            ("mlp.c_fc", &self.c_fc),
            ("mlp.act", &self.act),
            ("mlp.c_proj", &self.c_proj),
        ]
    }

    /// Each part's range in the block's parameter slice.
    fn ranges(&self) -> [std::ops::Range<usize>; PARTS] {
        let mut off = 0;
        self.parts().map(|(_, l)| {
            let n: usize = l.params().iter().map(|d| d.len()).sum();
            off += n;
            off - n..off
        })
    }
}

/// Forward cache: each part's input (part 0's is the block's own input, not copied) and cache.
struct BlockCache {
    inputs: [Option<Value>; PARTS],
    caches: [Cache; PARTS],
}

struct BlockGrad {
    states: [GradState; PARTS],
}

fn add_into(dst: &mut Tensor, src: &Tensor) {
    for (a, b) in dst.data.iter_mut().zip(&src.data) {
        *a += b;
    }
}

impl BlockCache {
    fn input<'a>(&'a self, k: usize, x: &'a Value) -> &'a Value {
        self.inputs[k].as_ref().unwrap_or(x)
    }
}

impl Layer for TransformerBlock {
    fn kind(&self) -> &'static str {
        "transformer_block"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let mut v = Vec::new();
        for (name, l) in self.parts() {
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

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        for ((_, l), r) in self.parts().into_iter().zip(self.ranges()) {
            l.init(&mut p[r], rng);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.attn.out_shape(input)
    }

    fn forward(&self, p: &[f32], x: &Value, ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let xt = x.dense()?;
        self.out_shape(&xt.shape)?;
        let r = self.ranges();
        let (h1, c0) = self.ln_1.forward(&p[r[0].clone()], x, ctx)?;
        let h1 = Value::Dense(h1);
        let (a, c1) = self.attn.forward(&p[r[1].clone()], &h1, ctx)?;
        let mut x1 = a;
        add_into(&mut x1, xt);
        let x1 = Value::Dense(x1);
        let (h2, c2) = self.ln_2.forward(&p[r[2].clone()], &x1, ctx)?;
        let h2 = Value::Dense(h2);
        let (f, c3) = self.c_fc.forward(&p[r[3].clone()], &h2, ctx)?;
        let f = Value::Dense(f);
        let (g, c4) = self.act.forward(&p[r[4].clone()], &f, ctx)?;
        let g = Value::Dense(g);
        let (m, c5) = self.c_proj.forward(&p[r[5].clone()], &g, ctx)?;
        let mut y = m;
        add_into(&mut y, x1.dense()?);
        Ok((
            y,
            Box::new(BlockCache {
                inputs: [None, Some(h1), Some(x1), Some(h2), Some(f), Some(g)],
                caches: [c0, c1, c2, c3, c4, c5],
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
        let c = downcast::<BlockCache>(cache, "transformer_block");
        let r = self.ranges();
        let inp = |k: usize| c.input(k, x);
        // MLP branch: y = x1 + c_proj(act(c_fc(ln_2(x1)))).
        let (dg, s5) =
            self.c_proj
                .backward(&p[r[5].clone()], inp(5), &c.caches[5], dy.clone(), true)?;
        let (df, s4) = self.act.backward(
            &p[r[4].clone()],
            inp(4),
            &c.caches[4],
            dg.expect("requested"),
            true,
        )?;
        let (dh2, s3) = self.c_fc.backward(
            &p[r[3].clone()],
            inp(3),
            &c.caches[3],
            df.expect("requested"),
            true,
        )?;
        let (dx1_branch, s2) = self.ln_2.backward(
            &p[r[2].clone()],
            inp(2),
            &c.caches[2],
            dh2.expect("requested"),
            true,
        )?;
        let mut dx1 = dy;
        add_into(&mut dx1, &dx1_branch.expect("requested"));
        // Attention branch: x1 = x + attn(ln_1(x)).
        let (dh1, s1) =
            self.attn
                .backward(&p[r[1].clone()], inp(1), &c.caches[1], dx1.clone(), true)?;
        let (dx_branch, s0) = self.ln_1.backward(
            &p[r[0].clone()],
            inp(0),
            &c.caches[0],
            dh1.expect("requested"),
            need_dx,
        )?;
        let dx = if need_dx {
            let mut dx = dx1;
            add_into(&mut dx, &dx_branch.expect("requested"));
            Some(dx)
        } else {
            None
        };
        Ok((
            dx,
            Box::new(BlockGrad {
                states: [s0, s1, s2, s3, s4, s5],
            }),
        ))
    }

    fn add_sq_norms(&self, p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let c = downcast::<BlockCache>(cache, "transformer_block");
        let s = downcast::<BlockGrad>(st, "transformer_block");
        for (k, ((_, l), r)) in self.parts().into_iter().zip(self.ranges()).enumerate() {
            if !r.is_empty() {
                l.add_sq_norms(&p[r], c.input(k, x), &c.caches[k], &s.states[k], out);
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
        let c = downcast::<BlockCache>(cache, "transformer_block");
        let s = downcast::<BlockGrad>(st, "transformer_block");
        for (k, ((_, l), r)) in self.parts().into_iter().zip(self.ranges()).enumerate() {
            if !r.is_empty() {
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
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let r = self.ranges();
        let add = |a: &RefValue, b: &RefValue| -> Result<RefValue> {
            let (da, shape) = a.dense()?;
            let (db, _) = b.dense()?;
            Ok(RefValue::Dense {
                data: da.iter().zip(db).map(|(u, v)| u + v).collect(),
                shape: shape.to_vec(),
            })
        };
        let h1 = self.ln_1.reference_forward(&p[r[0].clone()], x)?;
        let a = self.attn.reference_forward(&p[r[1].clone()], &h1)?;
        let x1 = add(x, &a)?;
        let h2 = self.ln_2.reference_forward(&p[r[2].clone()], &x1)?;
        let f = self.c_fc.reference_forward(&p[r[3].clone()], &h2)?;
        let g = self.act.reference_forward(&p[r[4].clone()], &f)?;
        let m = self.c_proj.reference_forward(&p[r[5].clone()], &g)?;
        add(&x1, &m)
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.attn.set_norm_rule(rule);
        self.c_fc.set_norm_rule(rule);
        self.c_proj.set_norm_rule(rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn oracles_both_norm_rules_and_gelus() {
        for (gelu, seed) in [(GeluKind::Tanh, 1), (GeluKind::Exact, 2)] {
            let mut l = TransformerBlock::new(8, 2, 12, gelu, 0.35, 1e-5).unwrap();
            for shape in [vec![5, 3, 8], vec![1, 2, 8]] {
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
    }

    #[test]
    fn names_follow_hugging_face() {
        let l = TransformerBlock::new(4, 2, 16, GeluKind::Tanh, 1.0, 1e-5).unwrap();
        let names: Vec<String> = l.params().iter().map(|d| d.suffix.to_string()).collect();
        assert_eq!(
            names,
            [
                "ln_1.weight",
                "ln_1.bias",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            ]
        );
    }
}
