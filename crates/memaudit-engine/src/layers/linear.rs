//! Linear (fully connected) layer: `y = x W^T + b`, W of shape `[out, in]` (PyTorch's layout).
//!
//! Input: `[B, in]`, a time-major sequence `[T, B, in]` (applied at every step, e.g. an LM's
//! output projection), or sparse rows `[B, in]` (bag-of-words logistic regression with 10^5
//! features: only the non-zeros are touched).
//!
//! Per-example gradient norms (engine.md):
//! - one row per example: `||g_i a_i^T||_F = ||g_i|| ||a_i||`, the bias gradient is `g_i`;
//! - sequences: the Gram identity `<G_i G_i^T, A_i A_i^T>` or the materialised `G_i^T A_i`,
//!   whichever `choose_norm_rule` estimates faster; the bias gradient is `sum_t g_t`.

use rand::{Rng, RngCore};

use crate::compute::{self, NormRule};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::{MatMut, MatRef, Tensor};

#[derive(Clone, Debug)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    rule: Option<NormRule>,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Self {
        Self {
            in_features,
            out_features,
            bias,
            rule: None,
        }
    }

    fn weight<'a>(&self, p: &'a [f32]) -> MatRef<'a> {
        MatRef::row_major(
            &p[..self.in_features * self.out_features],
            self.out_features,
            self.in_features,
        )
    }

    fn bias_of<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.in_features * self.out_features..]
    }
}

/// Gradient state: the output gradient G (`[rows, out]`) and the input's shape.
struct LinearGrad {
    g: Tensor,
}

impl Layer for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let mut v = vec![ParamDesc::new(
            "weight",
            vec![self.out_features, self.in_features],
            ParamKind::Weight,
        )];
        if self.bias {
            v.push(ParamDesc::new(
                "bias",
                vec![self.out_features],
                ParamKind::Bias,
            ));
        }
        v
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        let bound = 1.0 / (self.in_features.max(1) as f32).sqrt();
        for v in p.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.last() {
            Some(&f) if f == self.in_features && (input.len() == 2 || input.len() == 3) => {
                let mut s = input.to_vec();
                *s.last_mut().unwrap() = self.out_features;
                Ok(s)
            }
            _ => Err(EngineError::Shape(format!(
                "linear expects [B, {}] or [T, B, {}], got {input:?}",
                self.in_features, self.in_features
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let out = self.out_features;
        let y = match x {
            Value::Dense(t) => {
                let shape = self.out_shape(&t.shape)?;
                let rows = t.rows();
                let mut y = Tensor::zeros(&shape);
                compute::sgemm(
                    MatMut::row_major(&mut y.data, rows, out),
                    0.0,
                    t.mat(),
                    self.weight(p).t(),
                    1.0,
                );
                y
            }
            Value::Sparse(s) => {
                if s.dim != self.in_features {
                    return Err(EngineError::Shape(format!(
                        "linear expects {} sparse features, got {}",
                        self.in_features, s.dim
                    )));
                }
                let w = &p[..self.in_features * out];
                let mut y = Tensor::zeros(&[s.rows(), out]);
                for i in 0..s.rows() {
                    let (ix, vals) = s.row(i);
                    let yi = &mut y.data[i * out..(i + 1) * out];
                    for (&j, &v) in ix.iter().zip(vals) {
                        let j = j as usize;
                        if j >= self.in_features {
                            return Err(EngineError::Shape(format!(
                                "sparse feature index {j} >= {}",
                                self.in_features
                            )));
                        }
                        for (o, yo) in yi.iter_mut().enumerate() {
                            *yo += v * w[o * self.in_features + j];
                        }
                    }
                }
                y
            }
            Value::Tokens(_) => {
                return Err(EngineError::Shape(
                    "linear cannot take token ids (use an embedding)".into(),
                ));
            }
        };
        let mut y = y;
        if self.bias {
            let b = self.bias_of(p);
            for row in y.data.chunks_mut(out) {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
        Ok((y, nothing()))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        _cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let dx = if need_dx {
            match x {
                Value::Dense(t) => {
                    let mut dx = Tensor::zeros(&t.shape);
                    let rows = t.rows();
                    compute::sgemm(
                        MatMut::row_major(&mut dx.data, rows, self.in_features),
                        0.0,
                        dy.mat(),
                        self.weight(p),
                        1.0,
                    );
                    Some(dx)
                }
                _ => {
                    return Err(EngineError::Shape(
                        "input gradient needs a dense input".into(),
                    ));
                }
            }
        } else {
            None
        };
        Ok((dx, Box::new(LinearGrad { g: dy })))
    }

    fn add_sq_norms(&self, _p: &[f32], x: &Value, _cache: &Cache, st: &GradState, out: &mut [f32]) {
        let g = &downcast::<LinearGrad>(st, "linear").g;
        let o = self.out_features;
        match x {
            Value::Dense(t) if t.is_seq() => {
                let (steps, b, d) = (t.shape[0], t.shape[1], t.shape[2]);
                let rule = self.rule.unwrap_or_else(|| {
                    compute::choose_norm_rule(steps, d, o, compute::NORM_SCRATCH_BUDGET)
                });
                compute::add_per_example_outer_sq_norms(
                    rule,
                    out,
                    |i| MatRef::new(&g.data[i * o..], steps, o, b * o, 1),
                    |i| MatRef::new(&t.data[i * d..], steps, d, b * d, 1),
                );
                if self.bias {
                    compute::add_per_example_bias_sq_norms(out, |i| {
                        MatRef::new(&g.data[i * o..], steps, o, b * o, 1)
                    });
                }
            }
            Value::Dense(t) => {
                let d = self.in_features;
                for (i, n) in out.iter_mut().enumerate() {
                    let gn = compute::sum_sq(&g.data[i * o..(i + 1) * o]);
                    let an = compute::sum_sq(&t.data[i * d..(i + 1) * d]);
                    *n += (gn * (an + if self.bias { 1.0 } else { 0.0 })) as f32;
                }
            }
            Value::Sparse(s) => {
                for (i, n) in out.iter_mut().enumerate() {
                    let gn = compute::sum_sq(&g.data[i * o..(i + 1) * o]);
                    let an = compute::sum_sq(s.row(i).1);
                    *n += (gn * (an + if self.bias { 1.0 } else { 0.0 })) as f32;
                }
            }
            Value::Tokens(_) => unreachable!("rejected in forward"),
        }
    }

    fn add_grads(
        &self,
        _p: &[f32],
        x: &Value,
        _cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let g = &downcast::<LinearGrad>(st, "linear").g;
        let (o, d) = (self.out_features, self.in_features);
        // Scale the rows of G by their example's clip factor: (c . G)^T A is then one GEMM.
        let scaled;
        let gm: &[f32] = match scale {
            Some(c) => {
                let mut s = g.data.clone();
                compute::scale_rows_by_example(&mut s, o, c.len().max(1), c);
                scaled = s;
                &scaled
            }
            None => &g.data,
        };
        let (gw, gb) = grad.split_at_mut(o * d);
        match x {
            Value::Dense(t) => {
                let rows = t.rows();
                compute::sgemm(
                    MatMut::row_major(gw, o, d),
                    1.0,
                    MatRef::row_major(gm, rows, o).t(),
                    t.mat(),
                    1.0,
                );
            }
            Value::Sparse(s) => {
                for i in 0..s.rows() {
                    let (ix, vals) = s.row(i);
                    let gi = &gm[i * o..(i + 1) * o];
                    for (&j, &v) in ix.iter().zip(vals) {
                        for (oo, gv) in gi.iter().enumerate() {
                            gw[oo * d + j as usize] += gv * v;
                        }
                    }
                }
            }
            Value::Tokens(_) => unreachable!("rejected in forward"),
        }
        if self.bias {
            compute::add_col_sums(gb, gm, None);
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (o, d) = (self.out_features, self.in_features);
        let w = &p[..o * d];
        let b = if self.bias { Some(&p[o * d..]) } else { None };
        let row = |xrow: &dyn Fn(usize) -> f64, out: &mut Vec<f64>| {
            for oo in 0..o {
                let mut s = b.map_or(0.0, |b| b[oo]);
                for j in 0..d {
                    s += w[oo * d + j] * xrow(j);
                }
                out.push(s);
            }
        };
        match x {
            RefValue::Dense { data, shape } => {
                let rows = data.len() / d;
                let mut out = Vec::with_capacity(rows * o);
                for r in 0..rows {
                    row(&|j| data[r * d + j], &mut out);
                }
                let mut shape = shape.clone();
                *shape.last_mut().unwrap() = o;
                Ok(RefValue::Dense { data: out, shape })
            }
            RefValue::Sparse(s) => {
                let mut out = Vec::new();
                for i in 0..s.rows() {
                    let mut dense = vec![0.0f64; d];
                    let (ix, vals) = s.row(i);
                    for (&j, &v) in ix.iter().zip(vals) {
                        dense[j as usize] += v as f64;
                    }
                    row(&|j| dense[j], &mut out);
                }
                Ok(RefValue::Dense {
                    data: out,
                    shape: vec![s.rows(), o],
                })
            }
            RefValue::Tokens(_) => Err(EngineError::Shape("linear cannot take token ids".into())),
        }
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.rule = rule;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{SparseInput, Value};
    use crate::testing::*;

    fn sparse(b: usize, dim: usize) -> Value {
        let mut s = SparseInput {
            dim,
            row_ptr: vec![0],
            indices: vec![],
            values: vec![],
        };
        for i in 0..b {
            for k in 0..(3 + i % 4) {
                s.indices.push(((i * 37 + k * 101) % dim) as u32);
                s.values.push(0.3 + 0.1 * k as f32 - 0.05 * i as f32);
            }
            s.row_ptr.push(s.indices.len());
        }
        Value::Sparse(s)
    }

    #[test]
    fn dense_rows() {
        let mut l = Linear::new(13, 7, true);
        let x = Value::Dense(random_tensor(&[9, 13], 5));
        check_layer_gradients(&l, &x, 1).unwrap();
        check_layer_per_example(&mut l, &x, 2, &[None]).unwrap();
        let mut nb = Linear::new(13, 7, false);
        check_layer_gradients(&nb, &x, 3).unwrap();
        check_layer_per_example(&mut nb, &x, 4, &[None]).unwrap();
    }

    #[test]
    fn sequences_both_norm_rules() {
        let mut l = Linear::new(11, 6, true);
        let x = Value::Dense(random_tensor(&[8, 5, 11], 7));
        check_layer_gradients(&l, &x, 1).unwrap();
        check_layer_per_example(
            &mut l,
            &x,
            2,
            &[Some(NormRule::Gram), Some(NormRule::Materialize), None],
        )
        .unwrap();
    }

    #[test]
    fn sparse_rows() {
        let mut l = Linear::new(500, 3, true);
        let x = sparse(6, 500);
        check_layer_gradients(&l, &x, 1).unwrap();
        check_layer_per_example(&mut l, &x, 2, &[None]).unwrap();
    }

    #[test]
    fn shape_errors() {
        let l = Linear::new(4, 2, true);
        let x = Value::Dense(random_tensor(&[3, 5], 1));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        assert!(l.forward(&[0.0; 10], &x, &mut ctx).is_err());
    }
}
