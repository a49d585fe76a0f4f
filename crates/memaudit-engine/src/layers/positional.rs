//! Learned positional embedding (GPT-2's `wpe`): a table P of shape `[n_ctx, E]` whose row t is
//! added to every example's input at step t: `y_{t,i} = x_{t,i} + P_t` over a time-major
//! `[T, B, E]` input, T <= n_ctx.
//!
//! Per-example gradient: example i's gradient of P has row t equal to `g_{t,i}` (each position
//! occurs exactly once per sequence, so no two steps share a row), hence
//! `||grad_i||^2 = sum_t ||g_{t,i}||^2` with nothing to materialise, and the clipped sum adds
//! `c_i g_{t,i}` into row t. A context longer than the table is refused, not wrapped.

use rand::RngCore;
use rand_distr::{Distribution, Normal};

use crate::compute;
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct PositionalEmbedding {
    /// Rows of the table: the longest context the model accepts.
    pub n_ctx: usize,
    pub dim: usize,
}

impl PositionalEmbedding {
    pub fn new(n_ctx: usize, dim: usize) -> Result<Self> {
        if n_ctx == 0 || dim == 0 {
            return Err(EngineError::Config(format!(
                "positional embedding needs n_ctx >= 1 and dim >= 1 (got {n_ctx}, {dim})"
            )));
        }
        Ok(Self { n_ctx, dim })
    }
}

/// Gradient state: G = dL/dy, `[T, B, E]`.
struct PosGrad {
    g: Tensor,
}

/// GPT-2's initializer_range: N(0, 0.02).
pub const GPT2_INIT_STD: f32 = 0.02;

impl Layer for PositionalEmbedding {
    fn kind(&self) -> &'static str {
        "positional_embedding"
    }

    fn params(&self) -> Vec<ParamDesc> {
        vec![ParamDesc::new(
            "weight",
            vec![self.n_ctx, self.dim],
            ParamKind::Embedding,
        )]
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        let n = Normal::new(0.0, GPT2_INIT_STD).expect("valid std");
        for v in p.iter_mut() {
            *v = n.sample(rng);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [t, _, e] if *e == self.dim => {
                if *t > self.n_ctx {
                    return Err(EngineError::Shape(format!(
                        "a context of {t} tokens is longer than the positional table ({} positions)",
                        self.n_ctx
                    )));
                }
                Ok(input.to_vec())
            }
            _ => Err(EngineError::Shape(format!(
                "positional embedding expects [T, B, {}], got {input:?}",
                self.dim
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        self.out_shape(&x.shape)?;
        let (b, e) = (x.shape[1], self.dim);
        let mut y = x.clone();
        if b > 0 {
            for (t, step) in y.data.chunks_mut(b * e).enumerate() {
                let pos = &p[t * e..(t + 1) * e];
                for row in step.chunks_mut(e) {
                    for (v, q) in row.iter_mut().zip(pos) {
                        *v += q;
                    }
                }
            }
        }
        Ok((y, nothing()))
    }

    fn backward(
        &self,
        _p: &[f32],
        _x: &Value,
        _cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let dx = need_dx.then(|| dy.clone());
        Ok((dx, Box::new(PosGrad { g: dy })))
    }

    fn add_sq_norms(&self, _p: &[f32], _x: &Value, _c: &Cache, st: &GradState, out: &mut [f32]) {
        let g = &downcast::<PosGrad>(st, "positional_embedding").g;
        let (b, e) = (g.shape[1], self.dim);
        for (r, row) in g.data.chunks_exact(e).enumerate() {
            out[r % b] += compute::sum_sq(row) as f32;
        }
    }

    fn add_grads(
        &self,
        _p: &[f32],
        _x: &Value,
        _c: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let g = &downcast::<PosGrad>(st, "positional_embedding").g;
        let (b, e) = (g.shape[1], self.dim);
        if b == 0 {
            return;
        }
        for (t, step) in g.data.chunks(b * e).enumerate() {
            let dst = &mut grad[t * e..(t + 1) * e];
            for (i, row) in step.chunks_exact(e).enumerate() {
                let c = scale.map_or(1.0, |s| s[i]);
                for (d, v) in dst.iter_mut().zip(row) {
                    *d += c * v;
                }
            }
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        self.out_shape(shape)?;
        let (b, e) = (shape[1], self.dim);
        let data = data
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let t = k / (b * e).max(1);
                v + p[t * e + k % e]
            })
            .collect();
        Ok(RefValue::Dense {
            data,
            shape: shape.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn oracles() {
        let mut l = PositionalEmbedding::new(9, 5).unwrap();
        for (shape, seed) in [(vec![9, 4, 5], 1), (vec![3, 6, 5], 2)] {
            let x = Value::Dense(random_tensor(&shape, seed));
            check_layer_gradients(&l, &x, seed + 10).unwrap();
            check_layer_per_example(&mut l, &x, seed + 20, &[None]).unwrap();
        }
    }

    #[test]
    fn refuses_a_context_longer_than_the_table() {
        let l = PositionalEmbedding::new(4, 2).unwrap();
        let err = l.out_shape(&[5, 1, 2]).unwrap_err().to_string();
        assert!(
            err.contains("5 tokens") && err.contains("4 positions"),
            "{err}"
        );
        assert!(PositionalEmbedding::new(0, 2).is_err());
    }
}
