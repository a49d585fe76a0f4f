//! GRU (Cho et al. 2014) in PyTorch's exact formulation, over time-major sequences
//! `[T, B, in] -> [T, B, H]`, one layer; initial state zero:
//!
//! ```text
//! r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//! z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//! n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//! h' = (1 - z) * n + z * h
//! ```
//!
//! Weights as `torch.nn.GRU` (gate order r, z, n): `weight_ih [3H, in]`, `weight_hh [3H, H]`,
//! `bias_ih [3H]`, `bias_hh [3H]`, init U(-1/sqrt(H), 1/sqrt(H)).
//!
//! Same structure as the LSTM (`lstm.rs`): one GEMM for `X W_ih^T`, per step one GEMM and a fused
//! cell, one block of examples per thread. Because `b_hn` and `W_hn h` sit inside `r * (.)`, the
//! gradient W_hh sees differs from W_ih's in the n block (`r dn` against `dn`), so backward keeps
//! both `dGx` and `dGh` `[T, B, 3H]` and the Gram rule forms one Gram for each.

use rand::{Rng, RngCore};

use super::lstm::{MIN_BLOCK_ROWS, run_blocks, scaled_rows, seq_dims};
use crate::compute::rnn::{self, BufferPool};
use crate::compute::{self, NormRule};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::{MatMut, MatRef, Tensor};

#[derive(Clone, Debug)]
pub struct Gru {
    pub input: usize,
    pub hidden: usize,
    rule: Option<NormRule>,
    pool: BufferPool,
}

impl Gru {
    pub fn new(input: usize, hidden: usize) -> Self {
        Self {
            input,
            hidden,
            rule: None,
            pool: BufferPool::default(),
        }
    }

    fn split<'a>(&self, p: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32], &'a [f32]) {
        let g3 = 3 * self.hidden;
        let (w_ih, rest) = p.split_at(g3 * self.input);
        let (w_hh, rest) = rest.split_at(g3 * self.hidden);
        let (b_ih, b_hh) = rest.split_at(g3);
        (w_ih, w_hh, b_ih, &b_hh[..g3])
    }
}

struct GruCache {
    /// Gate activations `[T, B, 3H]` (r, z, n).
    acts: Vec<f32>,
    /// `h_{t-1} W_hh^T + b_hh`, `[T, B, 3H]` (backward needs its n block).
    gh: Vec<f32>,
    /// Hidden states (the output), `[T, B, H]`.
    h: Vec<f32>,
    pool: BufferPool,
}

impl Drop for GruCache {
    fn drop(&mut self) {
        for v in [&mut self.acts, &mut self.gh, &mut self.h] {
            self.pool.give(std::mem::take(v));
        }
    }
}

struct GruGrad {
    /// Pre-activation gradients seen by W_ih / b_ih and by W_hh / b_hh, `[T, B, 3H]`.
    dgx: Vec<f32>,
    dgh: Vec<f32>,
    /// Each example's bias gradients, `[B, 3H]`.
    sum_x: Vec<f32>,
    sum_h: Vec<f32>,
    pool: BufferPool,
}

impl Drop for GruGrad {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.dgx));
        self.pool.give(std::mem::take(&mut self.dgh));
    }
}

/// Fill every `width`-wide row of `buf` with `row`.
fn fill_rows(buf: &mut [f32], row: &[f32]) {
    if row.is_empty() {
        return;
    }
    for r in buf.chunks_exact_mut(row.len()) {
        r.copy_from_slice(row);
    }
}

impl Layer for Gru {
    fn kind(&self) -> &'static str {
        "gru"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let g3 = 3 * self.hidden;
        vec![
            ParamDesc::new("weight_ih", vec![g3, self.input], ParamKind::Weight),
            ParamDesc::new("weight_hh", vec![g3, self.hidden], ParamKind::Weight),
            ParamDesc::new("bias_ih", vec![g3], ParamKind::Bias),
            ParamDesc::new("bias_hh", vec![g3], ParamKind::Bias),
        ]
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        let bound = 1.0 / (self.hidden.max(1) as f32).sqrt();
        for v in p.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [t, b, f] if *f == self.input => Ok(vec![*t, *b, self.hidden]),
            _ => Err(EngineError::Shape(format!(
                "gru expects [T, B, {}], got {input:?}",
                self.input
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let (steps, b, xt) = seq_dims("gru", x, self.input)?;
        let (hd, g3) = (self.hidden, 3 * self.hidden);
        let (w_ih, w_hh, b_ih, b_hh) = self.split(p);
        let rows = steps * b;
        let pool = &self.pool;
        let mut acts = pool.take(rows * g3);
        fill_rows(&mut acts, b_ih);
        compute::sgemm(
            MatMut::row_major(&mut acts, rows, g3),
            1.0,
            xt.mat(),
            MatRef::row_major(w_ih, g3, self.input).t(),
            1.0,
        );
        let mut gh = pool.take(rows * g3);
        fill_rows(&mut gh, b_hh);
        // Overwritten entirely by the cell kernel.
        let mut h = pool.take(rows * hd);
        let mut w_hh_t_buf = pool.take(g3 * hd);
        rnn::transpose_into(w_hh, g3, hd, &mut w_hh_t_buf);
        let w_hh_t = MatRef::row_major(&w_hh_t_buf, hd, g3);
        let bounds = rnn::batch_bounds(b, MIN_BLOCK_ROWS);
        let single = bounds.len() == 2;
        let blocks: Vec<_> = rnn::split_time_major(&mut acts, b, g3, &bounds)
            .into_iter()
            .zip(rnn::split_time_major(&mut gh, b, g3, &bounds))
            .zip(rnn::split_time_major(&mut h, b, hd, &bounds))
            .enumerate()
            .collect();
        let run = |(k, ((mut a, mut ghs), mut hs)): (usize, _)| {
            let a: &mut Vec<&mut [f32]> = &mut a;
            let ghs: &mut Vec<&mut [f32]> = &mut ghs;
            let hs: &mut Vec<&mut [f32]> = &mut hs;
            let nb = bounds[k + 1] - bounds[k];
            let zeros = vec![0.0f32; nb * hd];
            for t in 0..steps {
                let (h_done, h_cur) = hs.split_at_mut(t);
                if t > 0 {
                    let dst = MatMut::row_major(ghs[t], nb, g3);
                    let hp = MatRef::row_major(h_done[t - 1], nb, hd);
                    if single {
                        compute::sgemm(dst, 1.0, hp, w_hh_t, 1.0);
                    } else {
                        compute::sgemm_serial(dst, 1.0, hp, w_hh_t, 1.0);
                    }
                }
                let h_prev: &[f32] = if t > 0 { h_done[t - 1] } else { &zeros };
                rnn::gru_forward_rows(a[t], ghs[t], h_prev, h_cur[0], hd);
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
            Box::new(GruCache {
                acts,
                gh,
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
        let (steps, b, xt) = seq_dims("gru", x, self.input)?;
        let cache = downcast::<GruCache>(cache, "gru");
        let (hd, g3) = (self.hidden, 3 * self.hidden);
        let rows = steps * b;
        if dy.data.len() != rows * hd {
            return Err(EngineError::Shape(format!(
                "gru output gradient has {} values, expected [{steps}, {b}, {hd}]",
                dy.data.len()
            )));
        }
        let (w_ih, w_hh, _, _) = self.split(p);
        let w_hh_m = MatRef::row_major(w_hh, g3, hd);
        let mut dh = dy.data;
        // Overwritten entirely by the cell kernel.
        let mut dgx = self.pool.take(rows * g3);
        let mut dgh = self.pool.take(rows * g3);
        let mut sum_x = vec![0.0f32; b * g3];
        let mut sum_h = vec![0.0f32; b * g3];
        let bounds = rnn::batch_bounds(b, MIN_BLOCK_ROWS);
        let single = bounds.len() == 2;
        let blocks: Vec<_> = rnn::split_time_major(&mut dh, b, hd, &bounds)
            .into_iter()
            .zip(rnn::split_time_major(&mut dgx, b, g3, &bounds))
            .zip(rnn::split_time_major(&mut dgh, b, g3, &bounds))
            .zip(rnn::split_rows(&mut sum_x, g3, &bounds))
            .zip(rnn::split_rows(&mut sum_h, g3, &bounds))
            .enumerate()
            .collect();
        let run = |(k, ((((mut dhs, mut dxs), mut dhhs), sx), sh)): (usize, _)| {
            let dhs: &mut Vec<&mut [f32]> = &mut dhs;
            let dxs: &mut Vec<&mut [f32]> = &mut dxs;
            let dhhs: &mut Vec<&mut [f32]> = &mut dhhs;
            let (sx, sh): (&mut [f32], &mut [f32]) = (sx, sh);
            let (b0, b1) = (bounds[k], bounds[k + 1]);
            let nb = b1 - b0;
            let zeros = vec![0.0f32; nb * hd];
            let mut sink = vec![0.0f32; nb * hd];
            let blk = |t: usize, w: usize| (t * b + b0) * w..(t * b + b1) * w;
            for t in (0..steps).rev() {
                let h_prev: &[f32] = if t > 0 {
                    &cache.h[blk(t - 1, hd)]
                } else {
                    &zeros
                };
                let (dh_prev, dh_cur) = dhs.split_at_mut(t);
                let dh_prev_blk: &mut [f32] = if t > 0 { dh_prev[t - 1] } else { &mut sink };
                rnn::gru_backward_rows(
                    &cache.acts[blk(t, g3)],
                    &cache.gh[blk(t, g3)],
                    h_prev,
                    dh_cur[0],
                    dh_prev_blk,
                    dxs[t],
                    dhhs[t],
                    sx,
                    sh,
                    hd,
                );
                if t > 0 {
                    let dst = MatMut::row_major(dh_prev[t - 1], nb, hd);
                    let g = MatRef::row_major(dhhs[t], nb, g3);
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
                MatRef::row_major(&dgx, rows, g3),
                MatRef::row_major(w_ih, g3, self.input),
                1.0,
            );
            Some(dx)
        } else {
            None
        };
        Ok((
            dx,
            Box::new(GruGrad {
                dgx,
                dgh,
                sum_x,
                sum_h,
                pool: self.pool.clone(),
            }),
        ))
    }

    fn add_sq_norms(&self, _p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let Ok((steps, b, xt)) = seq_dims("gru", x, self.input) else {
            unreachable!("rejected in forward")
        };
        let cache = downcast::<GruCache>(cache, "gru");
        let st = downcast::<GruGrad>(st, "gru");
        let (hd, g3) = (self.hidden, 3 * self.hidden);
        let rule = self.rule.unwrap_or_else(|| {
            // Two G Grams here (dGx and dGh differ): T^2 (2p + d_x + d_h) against T p (d_x + d_h).
            let (gram, mat) = (
                steps * steps * (2 * g3 + self.input + hd),
                steps * g3 * (self.input + hd),
            );
            if gram < mat && 2 * steps * steps * 4 <= compute::NORM_SCRATCH_BUDGET {
                NormRule::Gram
            } else {
                rnn::choose_recurrent_norm_rule(steps, self.input, hd, g3)
            }
        });
        rnn::add_recurrent_weight_sq_norms(
            rule,
            out,
            &rnn::RecurrentGrads {
                steps,
                batch: b,
                p: g3,
                gx: &st.dgx,
                gh: Some(&st.dgh),
                x: &xt.data,
                dx: self.input,
                h: &cache.h,
                dh: hd,
            },
        );
        for ((o, sx), sh) in out
            .iter_mut()
            .zip(st.sum_x.chunks_exact(g3))
            .zip(st.sum_h.chunks_exact(g3))
        {
            *o += (compute::sum_sq(sx) + compute::sum_sq(sh)) as f32;
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
        let Ok((steps, b, xt)) = seq_dims("gru", x, self.input) else {
            unreachable!("rejected in forward")
        };
        let cache = downcast::<GruCache>(cache, "gru");
        let st = downcast::<GruGrad>(st, "gru");
        let (hd, g3, d) = (self.hidden, 3 * self.hidden, self.input);
        let rows = steps * b;
        let (gw_ih, rest) = grad.split_at_mut(g3 * d);
        let (gw_hh, rest) = rest.split_at_mut(g3 * hd);
        let (gb_ih, gb_hh) = rest.split_at_mut(g3);
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
        compute::sgemm(
            MatMut::row_major(gw_ih, g3, d),
            1.0,
            MatRef::row_major(&st.dgx, rows, g3).t(),
            MatRef::row_major(xa, rows, d),
            1.0,
        );
        if hp_rows > 0 {
            compute::sgemm(
                MatMut::row_major(gw_hh, g3, hd),
                1.0,
                MatRef::row_major(&st.dgh, rows, g3)
                    .rows_range(b, hp_rows)
                    .t(),
                MatRef::row_major(ha, hp_rows, hd),
                1.0,
            );
        }
        if let Some((xs, hs)) = scaled {
            self.pool.give(xs);
            self.pool.give(hs);
        }
        for (i, (sx, sh)) in st
            .sum_x
            .chunks_exact(g3)
            .zip(st.sum_h.chunks_exact(g3))
            .enumerate()
        {
            let c = scale.map_or(1.0, |c| c[i]);
            for (a, v) in gb_ih.iter_mut().zip(sx) {
                *a += c * v;
            }
            for (a, v) in gb_hh.iter_mut().zip(sh) {
                *a += c * v;
            }
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let (steps, b, d) = match shape {
            [t, b, d] if *d == self.input => (*t, *b, *d),
            _ => return Err(EngineError::Shape("gru expects [T, B, in]".into())),
        };
        let hd = self.hidden;
        let g3 = 3 * hd;
        let w_ih = &p[..g3 * d];
        let w_hh = &p[g3 * d..g3 * (d + hd)];
        let b_ih = &p[g3 * (d + hd)..g3 * (d + hd + 1)];
        let b_hh = &p[g3 * (d + hd + 1)..g3 * (d + hd + 2)];
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut out = vec![0.0f64; steps * b * hd];
        for e in 0..b {
            let mut h = vec![0.0f64; hd];
            for t in 0..steps {
                let xr = &data[(t * b + e) * d..(t * b + e + 1) * d];
                let mut ax = vec![0.0f64; g3];
                let mut ah = vec![0.0f64; g3];
                for k in 0..g3 {
                    ax[k] = b_ih[k] + (0..d).map(|j| w_ih[k * d + j] * xr[j]).sum::<f64>();
                    ah[k] = b_hh[k] + (0..hd).map(|j| w_hh[k * hd + j] * h[j]).sum::<f64>();
                }
                let mut hn = vec![0.0f64; hd];
                for j in 0..hd {
                    let r = sig(ax[j] + ah[j]);
                    let z = sig(ax[hd + j] + ah[hd + j]);
                    let n = (ax[2 * hd + j] + r * ah[2 * hd + j]).tanh();
                    hn[j] = (1.0 - z) * n + z * h[j];
                }
                h = hn;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn oracles_both_norm_rules() {
        let mut l = Gru::new(4, 6);
        let x = Value::Dense(random_tensor(&[5, 3, 4], 12));
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
        let mut l = Gru::new(3, 5);
        for shape in [[4, 24, 3], [1, 9, 3]] {
            let x = Value::Dense(random_tensor(&shape, 6));
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
    fn empty_batch() {
        let l = Gru::new(3, 2);
        let p = init_params(&l, 1);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: true,
            rng: &mut rng,
        };
        let x = Value::Dense(Tensor::zeros(&[4, 0, 3]));
        let (y, c) = l.forward(&p, &x, &mut ctx).unwrap();
        let (_, st) = l.backward(&p, &x, &c, y, true).unwrap();
        let mut g = vec![0.0; p.len()];
        l.add_sq_norms(&p, &x, &c, &st, &mut []);
        l.add_grads(&p, &x, &c, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));
    }
}
