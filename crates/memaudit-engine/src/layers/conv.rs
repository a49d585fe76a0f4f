//! 2-D convolution over `[B, C_in, H, W]` images: square kernel, stride, padding (TF `'same'` /
//! `'valid'`, or PyTorch-style symmetric), optional bias. Weight `[C_out, C_in, k, k]` (PyTorch's
//! layout), bias `[C_out]`.
//!
//! Lowered to GEMMs by im2col (`compute::conv`): with `cols` the receptive fields of all
//! examples (`[C_in*k*k, B*P]`, P = output positions) and `G` the output gradient in the same
//! column layout (`[C_out, B*P]`), the forward is `W cols`, the input gradient `col2im(W^T G)` and
//! the weight gradient `G cols^T`: one GEMM each for the whole batch.
//!
//! Per-example gradient norms (engine.md, "Conv2d"): example i's weight gradient is `G_i^T U_i`
//! with `G_i` (`[P, C_out]`) and `U_i` (`[P, C_in*k*k]`) its P output positions, so either the
//! Gram identity over output positions `||G_i^T U_i||_F^2 = <G_i G_i^T, U_i U_i^T>` (P x P Grams:
//! the "ghost norm" of Li et al. 2021 and Bu et al. 2022's mixed ghost clipping for convolutions),
//! or the materialised `[C_out, C_in*k*k]` gradient, whichever `choose_norm_rule(P, C_in*k*k,
//! C_out)` estimates faster. The bias gradient is `sum_p G_i[p, :]`.
//!
//! Clipped sums: under the Gram rule `(G . c) cols^T`, G's columns scaled by their example's clip
//! factor, one GEMM (the plain backward's); under the materialise rule the per-example gradients
//! are already formed, so the clipped sum is their weighted sum and the GEMM is skipped.

use std::sync::OnceLock;

use rand::{Rng, RngCore};

pub use crate::compute::conv::Padding;
use crate::compute::conv::{self as cc, ConvGeom, Scratch, ScratchPool};
use crate::compute::{self, NormRule};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::{MatMut, MatRef, Tensor};

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub bias: bool,
    rule: Option<NormRule>,
    /// im2col matrices and GEMM scratch, recycled across steps (see `ScratchPool`).
    scratch: ScratchPool,
    /// Bytes of materialised per-example gradients this layer may keep for the clipped sum.
    store_budget: usize,
}

/// Forward cache: the im2col matrix in column layout (`[C_in*k*k, B*P]`) and the geometry.
struct ConvCache {
    cols: Scratch,
    geom: ConvGeom,
}

/// Gradient state: G in column layout (`[C_out, B*P]`), the per-example bias gradients
/// (`[B, C_out]`), and, once `add_sq_norms` has materialised them, the per-example weight
/// gradients (`[B, C_out*C_in*k*k]`) that the clipped sum then reuses.
struct ConvGrad {
    g_cols: Scratch,
    bias_grads: Vec<f32>,
    per_example: OnceLock<Scratch>,
}

/// Largest per-example weight-gradient store kept for the clipped sum (bytes); above it the
/// materialise rule only takes norms and the clipped sum is a GEMM like the Gram rule's.
const PER_EXAMPLE_STORE_BUDGET: usize = 128 << 20;

impl Conv2d {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        bias: bool,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || stride == 0 {
            return Err(EngineError::Config(format!(
                "conv2d needs channels, kernel and stride >= 1 (got in {in_channels}, out \
                 {out_channels}, kernel {kernel}, stride {stride})"
            )));
        }
        Ok(Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            bias,
            rule: None,
            scratch: ScratchPool::default(),
            store_budget: PER_EXAMPLE_STORE_BUDGET,
        })
    }

    /// Columns of the im2col matrix: `C_in * k * k`.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    fn weight<'a>(&self, p: &'a [f32]) -> MatRef<'a> {
        MatRef::row_major(
            &p[..self.out_channels * self.patch_len()],
            self.out_channels,
            self.patch_len(),
        )
    }

    /// The geometry for a `[B, C_in, H, W]` input shape.
    pub fn geometry(&self, input: &[usize]) -> Result<ConvGeom> {
        match input {
            [_, c, h, w] if *c == self.in_channels => {
                ConvGeom::new(*h, *w, self.kernel, self.stride, self.padding)
            }
            _ => Err(EngineError::Shape(format!(
                "conv2d expects [B, {}, H, W], got {input:?}",
                self.in_channels
            ))),
        }
    }
}

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn params(&self) -> Vec<ParamDesc> {
        let k = self.kernel;
        let mut v = vec![ParamDesc::new(
            "weight",
            vec![self.out_channels, self.in_channels, k, k],
            ParamKind::Weight,
        )];
        if self.bias {
            v.push(ParamDesc::new(
                "bias",
                vec![self.out_channels],
                ParamKind::Bias,
            ));
        }
        v
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        // PyTorch's default (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        // for weight and bias, fan_in = C_in * k * k.
        let bound = 1.0 / (self.patch_len() as f32).sqrt();
        for v in p.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geometry(input)?;
        Ok(vec![input[0], self.out_channels, g.out_h, g.out_w])
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        let geom = self.geometry(&x.shape)?;
        let b = x.shape[0];
        let (bp, kk, co) = (b * geom.positions(), self.patch_len(), self.out_channels);
        let mut cols = self.scratch.take(kk * bp);
        cc::im2col(&x.data, self.in_channels, &geom, &mut cols);
        // Z = W U^T for the whole batch: [C_out, K] x [K, B*P].
        let mut z = self.scratch.take(co * bp);
        compute::sgemm(
            MatMut::row_major(&mut z, co, bp),
            0.0,
            self.weight(p),
            MatRef::row_major(&cols, kk, bp),
            1.0,
        );
        let mut y = Tensor::zeros(&[b, co, geom.out_h, geom.out_w]);
        let bias = self.bias.then(|| &p[co * kk..]);
        cc::cols_to_planes(&z, co, geom.positions(), bias, &mut y.data);
        Ok((y, Box::new(ConvCache { cols, geom })))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let c = downcast::<ConvCache>(cache, "conv2d");
        let (pos, kk, co) = (c.geom.positions(), self.patch_len(), self.out_channels);
        let b = dy.shape.first().copied().unwrap_or(0);
        let bp = b * pos;
        let mut g_cols = self.scratch.take(dy.len());
        cc::planes_to_cols(&dy.data, co, pos, &mut g_cols);
        let mut bias_grads = Vec::new();
        if self.bias {
            bias_grads = vec![0.0f32; b * co];
            cc::plane_sums(&dy.data, co, pos, &mut bias_grads);
        }
        drop(dy);
        let dx = if need_dx {
            let xt = x.dense()?;
            // dU = W^T G: [K, C_out] x [C_out, B*P], then scattered back by col2im.
            let mut dcols = self.scratch.take(kk * bp);
            compute::sgemm(
                MatMut::row_major(&mut dcols, kk, bp),
                0.0,
                self.weight(p).t(),
                MatRef::row_major(&g_cols, co, bp),
                1.0,
            );
            let mut dx = Tensor::zeros(&xt.shape);
            cc::col2im(&dcols, self.in_channels, &c.geom, &mut dx.data);
            Some(dx)
        } else {
            None
        };
        Ok((
            dx,
            Box::new(ConvGrad {
                g_cols,
                bias_grads,
                per_example: OnceLock::new(),
            }),
        ))
    }

    fn add_sq_norms(&self, _p: &[f32], _x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]) {
        let c = downcast::<ConvCache>(cache, "conv2d");
        let s = downcast::<ConvGrad>(st, "conv2d");
        let (pos, kk, co) = (c.geom.positions(), self.patch_len(), self.out_channels);
        let b = out.len();
        let bp = b * pos;
        // Example i's G_i ([P, C_out]) and U_i ([P, K]) are columns i*P.. of the column layouts.
        let g = |i: usize| MatRef::new(&s.g_cols[i * pos..], pos, co, 1, bp);
        let u = |i: usize| MatRef::new(&c.cols[i * pos..], pos, kk, 1, bp);
        let rule = self.rule.unwrap_or_else(|| {
            compute::choose_norm_rule(pos, kk, co, compute::NORM_SCRATCH_BUDGET)
        });
        if rule == NormRule::Materialize && b * co * kk * 4 <= self.store_budget {
            let mut grads = self.scratch.take(b * co * kk);
            cc::materialize_per_example(out, &mut grads, g, u);
            // A second call (same state) recomputes the same values; keeping the first is fine.
            let _ = s.per_example.set(grads);
        } else {
            compute::add_per_example_outer_sq_norms(rule, out, g, u);
        }
        if self.bias {
            for (o, bg) in out.iter_mut().zip(s.bias_grads.chunks(co)) {
                *o += compute::sum_sq(bg) as f32;
            }
        }
    }

    fn add_grads(
        &self,
        _p: &[f32],
        _x: &Value,
        cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let c = downcast::<ConvCache>(cache, "conv2d");
        let s = downcast::<ConvGrad>(st, "conv2d");
        let (pos, kk, co) = (c.geom.positions(), self.patch_len(), self.out_channels);
        let bp = s.g_cols.len() / co;
        let (gw, gb) = grad.split_at_mut(co * kk);
        match (scale, s.per_example.get()) {
            // The materialised per-example gradients are at hand: their weighted sum.
            (Some(f), Some(per)) => cc::add_weighted_blocks(per, f, gw),
            _ => {
                // Scale G's columns by their example's clip factor: (c . G) U is one GEMM.
                let scaled;
                let gm: &[f32] = match scale {
                    Some(f) => {
                        let mut v = self.scratch.take(s.g_cols.len());
                        cc::scale_columns_by_example(&s.g_cols, pos, f, &mut v);
                        scaled = v;
                        &scaled
                    }
                    None => &s.g_cols,
                };
                cc::sgemm_long_k_acc(
                    MatMut::row_major(gw, co, kk),
                    MatRef::row_major(gm, co, bp),
                    MatRef::row_major(&c.cols, kk, bp).t(),
                );
            }
        }
        if self.bias {
            cc::add_scaled_row_sum(&s.bias_grads, scale, gb);
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let g = self.geometry(shape)?;
        let (b, ci, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (co, k) = (self.out_channels, self.kernel);
        let mut out = vec![0.0f64; b * co * g.out_h * g.out_w];
        // y[n, o, oy, ox] = bias[o] + sum_{c, ky, kx} W[o, c, ky, kx] x[n, c, iy, ix] with
        // iy = oy * stride + ky - pad_top (zero outside the image).
        for n in 0..b {
            for o in 0..co {
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        let mut s = if self.bias {
                            p[co * ci * k * k + o]
                        } else {
                            0.0
                        };
                        for c in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    s += p[((o * ci + c) * k + ky) * k + kx]
                                        * data[((n * ci + c) * h + iy) * w + ix];
                                }
                            }
                        }
                        out[((n * co + o) * g.out_h + oy) * g.out_w + ox] = s;
                    }
                }
            }
        }
        Ok(RefValue::Dense {
            data: out,
            shape: vec![b, co, g.out_h, g.out_w],
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

    const ALL_RULES: [Option<NormRule>; 3] =
        [Some(NormRule::Gram), Some(NormRule::Materialize), None];

    fn check(layer: &mut Conv2d, shape: &[usize], seed: u64) {
        let x = Value::Dense(random_tensor(shape, seed));
        check_layer_gradients(layer, &x, seed + 1).unwrap();
        check_layer_per_example(layer, &x, seed + 2, &ALL_RULES).unwrap();
    }

    #[test]
    fn same_padding_stride_two_with_bias() {
        // The tutorial CNN's first layer, scaled down: TF 'same' with stride 2 pads 3 on each side.
        let mut l = Conv2d::new(2, 4, 4, 2, Padding::Same, true).unwrap();
        check(&mut l, &[5, 2, 9, 8], 10);
    }

    #[test]
    fn materialise_without_the_per_example_store() {
        // Over the store budget the materialise rule only takes norms and the clipped sum falls
        // back to the scaled GEMM.
        let mut l = Conv2d::new(2, 3, 3, 2, Padding::Explicit(1), true).unwrap();
        l.store_budget = 0;
        let x = Value::Dense(random_tensor(&[4, 2, 7, 6], 60));
        check_layer_per_example(&mut l, &x, 61, &[Some(NormRule::Materialize)]).unwrap();
    }

    #[test]
    fn valid_padding_without_bias() {
        let mut l = Conv2d::new(3, 5, 3, 1, Padding::Valid, false).unwrap();
        check(&mut l, &[4, 3, 6, 7], 20);
    }

    #[test]
    fn explicit_padding_stride_three() {
        let mut l = Conv2d::new(2, 3, 3, 3, Padding::Explicit(2), true).unwrap();
        check(&mut l, &[3, 2, 8, 5], 30);
    }

    #[test]
    fn one_by_one_kernel_and_single_position() {
        // k = 1 (a per-pixel linear map) and a kernel covering the whole image (P = 1).
        let mut l = Conv2d::new(3, 2, 1, 1, Padding::Valid, true).unwrap();
        check(&mut l, &[4, 3, 3, 2], 40);
        let mut l = Conv2d::new(2, 3, 4, 1, Padding::Valid, true).unwrap();
        check(&mut l, &[4, 2, 4, 4], 50);
    }

    #[test]
    fn empty_batch_and_bad_shapes() {
        let l = Conv2d::new(2, 3, 3, 1, Padding::Explicit(1), true).unwrap();
        let p = init_params(&l, 1);
        let x = Value::Dense(random_tensor(&[0, 2, 5, 5], 1));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: true,
            rng: &mut rng,
        };
        let (y, cache) = l.forward(&p, &x, &mut ctx).unwrap();
        assert_eq!(y.shape, vec![0, 3, 5, 5]);
        let (dx, st) = l.backward(&p, &x, &cache, y, true).unwrap();
        assert_eq!(dx.unwrap().shape, vec![0, 2, 5, 5]);
        let mut norms: Vec<f32> = vec![];
        l.add_sq_norms(&p, &x, &cache, &st, &mut norms);
        let mut g = vec![0.0; p.len()];
        l.add_grads(&p, &x, &cache, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));

        for bad in [vec![2, 3, 5, 5], vec![2, 2, 2, 5], vec![2, 50]] {
            let x = Value::Dense(random_tensor(&bad, 1));
            let mut ctx = ForwardCtx {
                train: true,
                rng: &mut rng,
            };
            let l = Conv2d::new(2, 3, 3, 1, Padding::Valid, true).unwrap();
            assert!(l.forward(&p, &x, &mut ctx).is_err(), "{bad:?}");
        }
        assert!(Conv2d::new(0, 3, 3, 1, Padding::Valid, true).is_err());
        assert!(Conv2d::new(1, 3, 3, 0, Padding::Valid, true).is_err());
    }
}
