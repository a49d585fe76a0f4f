//! LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) over time-major
//! sequences `[T, B, in] -> [T, B, H]`, one layer; initial state zero.
//!
//! Weights as PyTorch's `nn.LSTM` (gate order i, f, g, o): `weight_ih [4H, in]`,
//! `weight_hh [4H, H]`, `bias_ih [4H]`, `bias_hh [4H]`, init U(-1/sqrt(H), 1/sqrt(H)), so a
//! PyTorch state dict loads as is.
//!
//! Forward: `X W_ih^T` for all T in one GEMM; then per step one `[B, H] x [H, 4H]` GEMM and the
//! fused cell kernel (`compute::rnn`). The batch is split into one block of examples per thread
//! and each thread runs the whole time loop on its block (no synchronisation per step).
//! Backward through time produces the pre-activation gradients `dG [T, B, 4H]` (and each
//! example's bias gradient, summed inside the cell kernel); the weight gradients are then two
//! GEMMs, `dW_ih = dG^T X` and `dW_hh = dG[1..]^T H[..T-1]`, with the rows of X / H scaled by the
//! clip factors when clipping (scaling the narrower operand is the same `(c . G)^T A`).
//!
//! Per-example norms: W_ih and W_hh see the same G, so the Gram rule computes one `G_i G_i^T` for
//! both (`<G G^T, X X^T> + <G G^T, Hp Hp^T>`, Hp = h shifted by one step); the materialise rule
//! forms both products. Both biases get the same gradient `sum_t g_t`, hence `2 ||sum_t g_t||^2`.

use rand::{Rng, RngCore};

use crate::compute::rnn::{self, BufferPool};
use crate::compute::{self, NormRule};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::{MatMut, MatRef, Tensor};

/// Fewest examples per thread block: below this the per-step GEMMs are too thin to pay for a
/// thread.
pub(crate) const MIN_BLOCK_ROWS: usize = 8;

#[derive(Clone, Debug)]
pub struct Lstm {
    pub input: usize,
    pub hidden: usize,
    rule: Option<NormRule>,
    pool: BufferPool,
}

impl Lstm {
    pub fn new(input: usize, hidden: usize) -> Self {
        Self {
            input,
            hidden,
            rule: None,
            pool: BufferPool::default(),
        }
    }

    /// `(w_ih, w_hh, b_ih, b_hh)` slices of the parameter vector.
    fn split<'a>(&self, p: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32], &'a [f32]) {
        let g4 = 4 * self.hidden;
        let (w_ih, rest) = p.split_at(g4 * self.input);
        let (w_hh, rest) = rest.split_at(g4 * self.hidden);
        let (b_ih, b_hh) = rest.split_at(g4);
        (w_ih, w_hh, b_ih, &b_hh[..g4])
    }
}

/// `(T, B)` of a dense time-major input with `features` columns.
pub(crate) fn seq_dims<'a>(
    kind: &str,
    x: &'a Value,
    features: usize,
) -> Result<(usize, usize, &'a Tensor)> {
    let t = x.dense()?;
    if t.shape.len() != 3 || t.shape[2] != features {
        return Err(EngineError::Shape(format!(
            "{kind} expects a time-major sequence [T, B, {features}], got {:?}",
            t.shape
        )));
    }
    Ok((t.shape[0], t.shape[1], t))
}

/// A copy (from `pool`) of the row-major `[rows, cols]` matrix `a` with row r scaled by
/// `scale[r % B]`.
pub(crate) fn scaled_rows(pool: &BufferPool, a: &[f32], cols: usize, scale: &[f32]) -> Vec<f32> {
    let mut s = pool.take(a.len());
    rnn::scaled_copy_rows(a, &mut s, cols, scale);
    s
}

/// What forward keeps for backward (all time-major).
struct LstmCache {
    /// Gate activations `[T, B, 4H]` (i, f, g, o).
    acts: Vec<f32>,
    /// Cell states and their tanh, `[T, B, H]`.
    c: Vec<f32>,
    tanh_c: Vec<f32>,
    /// Hidden states (the output), `[T, B, H]`.
    h: Vec<f32>,
    pool: BufferPool,
}

impl Drop for LstmCache {
    fn drop(&mut self) {
        for v in [&mut self.acts, &mut self.c, &mut self.tanh_c, &mut self.h] {
            self.pool.give(std::mem::take(v));
        }
    }
}

/// What backward keeps for the weight gradients.
struct LstmGrad {
    /// Pre-activation gradients `[T, B, 4H]`.
    dgates: Vec<f32>,
    /// Each example's bias gradient `sum_t dG[t, i]`, `[B, 4H]`.
    bias_sum: Vec<f32>,
    pool: BufferPool,
}

impl Drop for LstmGrad {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.dgates));
    }
}

impl Layer for Lstm {
    fn kind(&self) -> &'static str {
        "lstm"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let g4 = 4 * self.hidden;
        vec![
            ParamDesc::new("weight_ih", vec![g4, self.input], ParamKind::Weight),
            ParamDesc::new("weight_hh", vec![g4, self.hidden], ParamKind::Weight),
            ParamDesc::new("bias_ih", vec![g4], ParamKind::Bias),
            ParamDesc::new("bias_hh", vec![g4], ParamKind::Bias),
        ]
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        // PyTorch's default for every LSTM parameter.
        let bound = 1.0 / (self.hidden.max(1) as f32).sqrt();
        for v in p.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [t, b, f] if *f == self.input => Ok(vec![*t, *b, self.hidden]),
            _ => Err(EngineError::Shape(format!(
                "lstm expects [T, B, {}], got {input:?}",
                self.input
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let (steps, b, xt) = seq_dims("lstm", x, self.input)?;
        let (hd, g4) = (self.hidden, 4 * self.hidden);
        let (w_ih, w_hh, b_ih, b_hh) = self.split(p);
        let bias: Vec<f32> = b_ih.iter().zip(b_hh).map(|(a, c)| a + c).collect();
        let rows = steps * b;
        let pool = &self.pool;
        // Every buffer below is overwritten entirely (the GEMM with dst_scale 0, the cell kernel).
        let mut acts = pool.take(rows * g4);
        compute::sgemm(
            MatMut::row_major(&mut acts, rows, g4),
            0.0,
            xt.mat(),
            MatRef::row_major(w_ih, g4, self.input).t(),
            1.0,
        );
        let mut c = pool.take(rows * hd);
        let mut tanh_c = pool.take(rows * hd);
        let mut h = pool.take(rows * hd);
        let mut w_hh_t_buf = pool.take(g4 * hd);
        rnn::transpose_into(w_hh, g4, hd, &mut w_hh_t_buf);
        let w_hh_t = MatRef::row_major(&w_hh_t_buf, hd, g4);
        let bounds = rnn::batch_bounds(b, MIN_BLOCK_ROWS);
        let single = bounds.len() == 2;
        let blocks: Vec<_> = rnn::split_time_major(&mut acts, b, g4, &bounds)
            .into_iter()
            .zip(rnn::split_time_major(&mut c, b, hd, &bounds))
            .zip(rnn::split_time_major(&mut tanh_c, b, hd, &bounds))
            .zip(rnn::split_time_major(&mut h, b, hd, &bounds))
            .enumerate()
            .collect();
        let run = |(k, (((mut a, mut cs), mut tcs), mut hs)): (usize, _)| {
            let a: &mut Vec<&mut [f32]> = &mut a;
            let cs: &mut Vec<&mut [f32]> = &mut cs;
            let tcs: &mut Vec<&mut [f32]> = &mut tcs;
            let hs: &mut Vec<&mut [f32]> = &mut hs;
            let nb = bounds[k + 1] - bounds[k];
            let zeros = vec![0.0f32; nb * hd];
            for t in 0..steps {
                let (h_done, h_cur) = hs.split_at_mut(t);
                let (c_done, c_cur) = cs.split_at_mut(t);
                if t > 0 {
                    let dst = MatMut::row_major(a[t], nb, g4);
                    let hp = MatRef::row_major(h_done[t - 1], nb, hd);
                    if single {
                        compute::sgemm(dst, 1.0, hp, w_hh_t, 1.0);
                    } else {
                        compute::sgemm_serial(dst, 1.0, hp, w_hh_t, 1.0);
                    }
                }
                let c_prev: &[f32] = if t > 0 { c_done[t - 1] } else { &zeros };
                rnn::lstm_forward_rows(a[t], &bias, c_prev, c_cur[0], tcs[t], h_cur[0], hd);
            }
        };
        run_blocks(blocks, run);
        pool.give(w_hh_t_buf);
        let y = Tensor {
            data: h.clone(),
            shape: vec![steps, b, hd],
        };
        Ok((
            y,
            Box::new(LstmCache {
                acts,
                c,
                tanh_c,
                h,
                pool: pool.clone(),
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
        let (steps, b, xt) = seq_dims("lstm", x, self.input)?;
        let cache = downcast::<LstmCache>(cache, "lstm");
        let (hd, g4) = (self.hidden, 4 * self.hidden);
        let rows = steps * b;
        if dy.data.len() != rows * hd {
            return Err(EngineError::Shape(format!(
                "lstm output gradient has {} values, expected [{steps}, {b}, {hd}]",
                dy.data.len()
            )));
        }
        let (w_ih, w_hh, _, _) = self.split(p);
        let w_hh_m = MatRef::row_major(w_hh, g4, hd);
        // dy becomes the running dL/dh_t: the recurrent term is added into it step by step.
        let mut dh = dy.data;
        // Overwritten entirely by the cell kernel.
        let mut dgates = self.pool.take(rows * g4);
        let mut bias_sum = vec![0.0f32; b * g4];
        let bounds = rnn::batch_bounds(b, MIN_BLOCK_ROWS);
        let single = bounds.len() == 2;
        let blocks: Vec<_> = rnn::split_time_major(&mut dh, b, hd, &bounds)
            .into_iter()
            .zip(rnn::split_time_major(&mut dgates, b, g4, &bounds))
            .zip(rnn::split_rows(&mut bias_sum, g4, &bounds))
            .enumerate()
            .collect();
        let run = |(k, ((mut dhs, mut dgs), bs)): (usize, _)| {
            let dhs: &mut Vec<&mut [f32]> = &mut dhs;
            let dgs: &mut Vec<&mut [f32]> = &mut dgs;
            let bs: &mut [f32] = bs;
            let (b0, b1) = (bounds[k], bounds[k + 1]);
            let nb = b1 - b0;
            let zeros = vec![0.0f32; nb * hd];
            let mut dc = vec![0.0f32; nb * hd];
            let blk = |t: usize, w: usize| (t * b + b0) * w..(t * b + b1) * w;
            for t in (0..steps).rev() {
                let c_prev: &[f32] = if t > 0 {
                    &cache.c[blk(t - 1, hd)]
                } else {
                    &zeros
                };
                let (dh_prev, dh_cur) = dhs.split_at_mut(t);
                rnn::lstm_backward_rows(
                    &cache.acts[blk(t, g4)],
                    c_prev,
                    &cache.tanh_c[blk(t, hd)],
                    dh_cur[0],
                    &mut dc,
                    dgs[t],
                    bs,
                    hd,
                );
                if t > 0 {
                    // dL/dh_{t-1} += dG_t W_hh
                    let dst = MatMut::row_major(dh_prev[t - 1], nb, hd);
                    let g = MatRef::row_major(dgs[t], nb, g4);
                    if single {
                        compute::sgemm(dst, 1.0, g, w_hh_m, 1.0);
                    } else {
                        compute::sgemm_serial(dst, 1.0, g, w_hh_m, 1.0);
                    }
                }
            }
        };
        run_blocks(blocks, run);
        let dx = if need_dx {
            let mut dx = Tensor::zeros(&xt.shape);
            compute::sgemm(
                MatMut::row_major(&mut dx.data, rows, self.input),
                0.0,
                MatRef::row_major(&dgates, rows, g4),
                MatRef::row_major(w_ih, g4, self.input),
                1.0,
            );
            Some(dx)
        } else {
            None
        };
        Ok((
            dx,
            Box::new(LstmGrad {
                dgates,
                bias_sum,
                pool: self.pool.clone(),
            }),
        ))
    }

    fn add_sq_norms(&self, _p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let Ok((steps, b, xt)) = seq_dims("lstm", x, self.input) else {
            unreachable!("rejected in forward")
        };
        let cache = downcast::<LstmCache>(cache, "lstm");
        let st = downcast::<LstmGrad>(st, "lstm");
        let (hd, g4) = (self.hidden, 4 * self.hidden);
        let rule = self
            .rule
            .unwrap_or_else(|| rnn::choose_recurrent_norm_rule(steps, self.input, hd, g4));
        rnn::add_recurrent_weight_sq_norms(
            rule,
            out,
            &rnn::RecurrentGrads {
                steps,
                batch: b,
                p: g4,
                gx: &st.dgates,
                gh: None,
                x: &xt.data,
                dx: self.input,
                h: &cache.h,
                dh: hd,
            },
        );
        for (o, s) in out.iter_mut().zip(st.bias_sum.chunks_exact(g4)) {
            *o += (2.0 * compute::sum_sq(s)) as f32;
        }
    }

    fn add_grads(
        &self,
        _p: &[f32],
        x: &Value,
        cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let Ok((steps, b, xt)) = seq_dims("lstm", x, self.input) else {
            unreachable!("rejected in forward")
        };
        let cache = downcast::<LstmCache>(cache, "lstm");
        let st = downcast::<LstmGrad>(st, "lstm");
        let (hd, g4, d) = (self.hidden, 4 * self.hidden, self.input);
        let rows = steps * b;
        let (gw_ih, rest) = grad.split_at_mut(g4 * d);
        let (gw_hh, rest) = rest.split_at_mut(g4 * hd);
        let (gb_ih, gb_hh) = rest.split_at_mut(g4);
        // W_hh pairs dG rows of steps 1..T with h rows of steps 0..T-1.
        let hp_rows = steps.saturating_sub(1) * b;
        let scaled = scale.map(|c| {
            (
                scaled_rows(&self.pool, &xt.data, d, c),
                scaled_rows(&self.pool, &cache.h[..hp_rows * hd], hd, c),
            )
        });
        let (xa, ha): (&[f32], &[f32]) = match &scaled {
            Some((xs, hs)) => (xs, hs),
            None => (&xt.data, &cache.h[..hp_rows * hd]),
        };
        let dg = MatRef::row_major(&st.dgates, rows, g4);
        compute::sgemm(
            MatMut::row_major(gw_ih, g4, d),
            1.0,
            dg.t(),
            MatRef::row_major(xa, rows, d),
            1.0,
        );
        if hp_rows > 0 {
            compute::sgemm(
                MatMut::row_major(gw_hh, g4, hd),
                1.0,
                dg.rows_range(b, hp_rows).t(),
                MatRef::row_major(ha, hp_rows, hd),
                1.0,
            );
        }
        if let Some((xs, hs)) = scaled {
            self.pool.give(xs);
            self.pool.give(hs);
        }
        for (i, s) in st.bias_sum.chunks_exact(g4).enumerate() {
            let c = scale.map_or(1.0, |c| c[i]);
            for ((a, bb), v) in gb_ih.iter_mut().zip(gb_hh.iter_mut()).zip(s) {
                *a += c * v;
                *bb += c * v;
            }
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let (steps, b, d) = match shape {
            [t, b, d] if *d == self.input => (*t, *b, *d),
            _ => return Err(EngineError::Shape("lstm expects [T, B, in]".into())),
        };
        let hd = self.hidden;
        let g4 = 4 * hd;
        let w_ih = &p[..g4 * d];
        let w_hh = &p[g4 * d..g4 * (d + hd)];
        let b_ih = &p[g4 * (d + hd)..g4 * (d + hd + 1)];
        let b_hh = &p[g4 * (d + hd + 1)..g4 * (d + hd + 2)];
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut out = vec![0.0f64; steps * b * hd];
        for e in 0..b {
            let mut h = vec![0.0f64; hd];
            let mut c = vec![0.0f64; hd];
            for t in 0..steps {
                let xr = &data[(t * b + e) * d..(t * b + e + 1) * d];
                let mut a = vec![0.0f64; g4];
                for (k, ak) in a.iter_mut().enumerate() {
                    let mut s = b_ih[k] + b_hh[k];
                    for j in 0..d {
                        s += w_ih[k * d + j] * xr[j];
                    }
                    for j in 0..hd {
                        s += w_hh[k * hd + j] * h[j];
                    }
                    *ak = s;
                }
                for j in 0..hd {
                    let i = sig(a[j]);
                    let f = sig(a[hd + j]);
                    let g = a[2 * hd + j].tanh();
                    let o = sig(a[3 * hd + j]);
                    c[j] = f * c[j] + i * g;
                    h[j] = o * c[j].tanh();
                }
                out[(t * b + e) * hd..(t * b + e + 1) * hd].copy_from_slice(&h);
            }
        }
        Ok(RefValue::Dense {
            data: out,
            shape: vec![steps, b, hd],
        })
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.rule = rule;
    }
}

/// Run one closure per block of examples: on the calling thread if there is one block, else in
/// parallel.
pub(crate) fn run_blocks<T: Send, F: Fn(T) + Sync + Send>(blocks: Vec<T>, f: F) {
    use rayon::prelude::*;
    if blocks.len() <= 1 {
        blocks.into_iter().for_each(f);
    } else {
        blocks.into_par_iter().for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn oracles_both_norm_rules() {
        let mut l = Lstm::new(4, 6);
        let x = Value::Dense(random_tensor(&[5, 3, 4], 11));
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
    fn oracles_with_several_thread_blocks() {
        // B = 24 splits into blocks of >= 8 examples (on >= 2 threads), exercising the
        // per-block time loops; T = 1 has no recurrent term at all.
        let mut l = Lstm::new(3, 5);
        for shape in [[4, 24, 3], [1, 9, 3]] {
            let x = Value::Dense(random_tensor(&shape, 5));
            check_layer_gradients(&l, &x, 3).unwrap();
            check_layer_per_example(
                &mut l,
                &x,
                4,
                &[Some(NormRule::Gram), Some(NormRule::Materialize)],
            )
            .unwrap();
        }
    }

    #[test]
    fn empty_batch_and_bad_shapes() {
        let l = Lstm::new(3, 2);
        let p = init_params(&l, 1);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: true,
            rng: &mut rng,
        };
        let x = Value::Dense(Tensor::zeros(&[4, 0, 3]));
        let (y, c) = l.forward(&p, &x, &mut ctx).unwrap();
        assert_eq!(y.shape, vec![4, 0, 2]);
        let (dx, st) = l.backward(&p, &x, &c, y, true).unwrap();
        assert_eq!(dx.unwrap().shape, vec![4, 0, 3]);
        let mut g = vec![0.0; p.len()];
        l.add_sq_norms(&p, &x, &c, &st, &mut []);
        l.add_grads(&p, &x, &c, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));
        let bad = Value::Dense(Tensor::zeros(&[4, 2, 5]));
        assert!(l.forward(&p, &bad, &mut ctx).is_err());
    }
}
