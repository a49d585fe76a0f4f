//! Convolution and pooling primitives over `[B, C, H, W]` images.
//!
//! A convolution is lowered to one GEMM by **im2col** (Chellapilla, Puri & Simard 2006, "High
//! Performance Convolutional Neural Networks for Document Processing"): example `i`'s receptive
//! fields become the rows of `U_i` (`[P, C*k*k]`, P = output positions), all examples stacked into
//! `U` (`[B*P, C*k*k]`), so the forward is `Z = U W^T` and the weight gradient `G^T U`, one GEMM
//! each over the whole batch. The same `U_i` is what the per-example norm rules need (engine.md:
//! Gram over output positions `<G_i G_i^T, U_i U_i^T>`, or the materialised `G_i^T U_i`).
//! **col2im** scatters the input-gradient rows `G W` back onto the image.
//!
//! Everything here is parallel over examples (each example owns its block of every buffer, so no
//! synchronisation is needed).

use rayon::prelude::*;

use crate::error::{EngineError, Result};

/// Spatial padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding (TF's `'valid'`): `out = floor((in - k) / stride) + 1`.
    Valid,
    /// TF's `'same'`: `out = ceil(in / stride)`; the total padding
    /// `max((out - 1) * stride + k - in, 0)` is split with the odd pixel at the bottom/right.
    Same,
    /// `p` zeros on every side (PyTorch's `padding=p`): `out = floor((in + 2p - k) / stride) + 1`.
    Explicit(usize),
}

/// Geometry of one sliding-window operation (convolution or pooling) on one image plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

fn out_size(input: usize, kernel: usize, stride: usize, pad: Padding) -> Option<(usize, usize)> {
    match pad {
        Padding::Valid => (input >= kernel).then(|| ((input - kernel) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
            (out > 0).then_some((out, total / 2))
        }
        Padding::Explicit(p) => {
            (input + 2 * p >= kernel).then(|| ((input + 2 * p - kernel) / stride + 1, p))
        }
    }
}

impl ConvGeom {
    /// The geometry of a `kernel x kernel` window with `stride` and `pad` over an `in_h x in_w`
    /// plane; an error if the window does not fit.
    pub fn new(
        in_h: usize,
        in_w: usize,
        kernel: usize,
        stride: usize,
        pad: Padding,
    ) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            return Err(EngineError::Config(format!(
                "kernel size and stride must be >= 1 (got kernel {kernel}, stride {stride})"
            )));
        }
        match (
            out_size(in_h, kernel, stride, pad),
            out_size(in_w, kernel, stride, pad),
        ) {
            (Some((out_h, pad_top)), Some((out_w, pad_left))) if in_h > 0 && in_w > 0 => Ok(Self {
                in_h,
                in_w,
                kernel,
                stride,
                pad_top,
                pad_left,
                out_h,
                out_w,
            }),
            _ => Err(EngineError::Shape(format!(
                "a {kernel}x{kernel} window (stride {stride}, padding {pad:?}) does not fit a \
                 {in_h}x{in_w} input"
            ))),
        }
    }

    /// Output positions per plane.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Input coordinate of output coordinate `o` and kernel offset `k` along an axis with
    /// leading padding `pad`, or None when it falls in the padding.
    #[inline]
    fn src(o: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
        let v = (o * stride + k).checked_sub(pad)?;
        (v < len).then_some(v)
    }
}

/// im2col for a batch: `cols` (`[B*P, C*k*k]`, row `b*P + oy*out_w + ox`, column
/// `(c*k + ky)*k + kx`) receives the receptive field of every output position; padding reads 0.
pub fn im2col(x: &[f32], channels: usize, g: &ConvGeom, cols: &mut [f32]) {
    let plane = g.in_h * g.in_w;
    let per_in = channels * plane;
    let kk = channels * g.kernel * g.kernel;
    let per_out = g.positions() * kk;
    if per_in == 0 || per_out == 0 {
        return;
    }
    debug_assert_eq!(x.len() / per_in * per_out, cols.len());
    cols.par_chunks_mut(per_out)
        .zip(x.par_chunks(per_in))
        .for_each(|(u, xi)| im2col_one(xi, channels, g, u));
}

fn im2col_one(x: &[f32], channels: usize, g: &ConvGeom, u: &mut [f32]) {
    let k = g.kernel;
    let kk = channels * k * k;
    let plane = g.in_h * g.in_w;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let row = &mut u[(oy * g.out_w + ox) * kk..][..kk];
            let x0 = (ox * g.stride) as isize - g.pad_left as isize;
            let interior = x0 >= 0 && x0 as usize + k <= g.in_w;
            for c in 0..channels {
                for ky in 0..k {
                    let dst = &mut row[(c * k + ky) * k..][..k];
                    let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src_row = &x[c * plane + iy * g.in_w..][..g.in_w];
                    if interior {
                        dst.copy_from_slice(&src_row[x0 as usize..][..k]);
                    } else {
                        for (kx, d) in dst.iter_mut().enumerate() {
                            *d = ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w)
                                .map_or(0.0, |ix| src_row[ix]);
                        }
                    }
                }
            }
        }
    }
}

/// col2im for a batch, the adjoint of `im2col`: `dx` (`[B, C, H, W]`) is overwritten with the sum
/// of the rows of `cols` scattered back onto the pixels they were read from.
pub fn col2im(cols: &[f32], channels: usize, g: &ConvGeom, dx: &mut [f32]) {
    let plane = g.in_h * g.in_w;
    let per_in = channels * plane;
    let kk = channels * g.kernel * g.kernel;
    let per_out = g.positions() * kk;
    if per_in == 0 || per_out == 0 {
        return;
    }
    dx.par_chunks_mut(per_in)
        .zip(cols.par_chunks(per_out))
        .for_each(|(dxi, u)| {
            dxi.fill(0.0);
            let k = g.kernel;
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let row = &u[(oy * g.out_w + ox) * kk..][..kk];
                    let x0 = (ox * g.stride) as isize - g.pad_left as isize;
                    let interior = x0 >= 0 && x0 as usize + k <= g.in_w;
                    for c in 0..channels {
                        for ky in 0..k {
                            let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h)
                            else {
                                continue;
                            };
                            let src = &row[(c * k + ky) * k..][..k];
                            let dst_row = &mut dxi[c * plane + iy * g.in_w..][..g.in_w];
                            if interior {
                                for (d, s) in dst_row[x0 as usize..][..k].iter_mut().zip(src) {
                                    *d += s;
                                }
                            } else {
                                for (kx, s) in src.iter().enumerate() {
                                    if let Some(ix) =
                                        ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w)
                                    {
                                        dst_row[ix] += s;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// `[B*P, C]` rows (one per output position) to `[B, C, P]` planes, adding `bias[c]`.
pub fn rows_to_planes(
    z: &[f32],
    channels: usize,
    positions: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let per = channels * positions;
    if per == 0 {
        return;
    }
    y.par_chunks_mut(per)
        .zip(z.par_chunks(per))
        .for_each(|(yi, zi)| {
            for c in 0..channels {
                let b = bias.map_or(0.0, |b| b[c]);
                let dst = &mut yi[c * positions..][..positions];
                for (p, d) in dst.iter_mut().enumerate() {
                    *d = zi[p * channels + c] + b;
                }
            }
        });
}

/// `[B, C, P]` planes to `[B*P, C]` rows (the transpose of `rows_to_planes`, without bias).
pub fn planes_to_rows(y: &[f32], channels: usize, positions: usize, z: &mut [f32]) {
    let per = channels * positions;
    if per == 0 {
        return;
    }
    z.par_chunks_mut(per)
        .zip(y.par_chunks(per))
        .for_each(|(zi, yi)| {
            for c in 0..channels {
                let src = &yi[c * positions..][..positions];
                for (p, s) in src.iter().enumerate() {
                    zi[p * channels + c] = *s;
                }
            }
        });
}

/// `out[b*C + c] = sum_p y[b, c, p]`: per-example sums of each plane (a conv bias's per-example
/// gradient).
pub fn plane_sums(y: &[f32], channels: usize, positions: usize, out: &mut [f32]) {
    if channels == 0 {
        return;
    }
    if positions == 0 {
        out.fill(0.0);
        return;
    }
    out.par_chunks_mut(channels)
        .zip(y.par_chunks(channels * positions))
        .for_each(|(o, yi)| {
            for (c, v) in o.iter_mut().enumerate() {
                *v = yi[c * positions..][..positions].iter().sum();
            }
        });
}

/// `dst[b-th block] = scale[b] * src[b-th block]` for consecutive blocks of `block` floats (one per
/// example): the clip factors applied to the rows of an example-major G.
pub fn scale_example_blocks(src: &[f32], block: usize, scale: &[f32], dst: &mut [f32]) {
    if block == 0 {
        return;
    }
    dst.par_chunks_mut(block)
        .zip(src.par_chunks(block))
        .zip(scale.par_iter())
        .for_each(|((d, s), &c)| {
            for (dv, sv) in d.iter_mut().zip(s) {
                *dv = c * sv;
            }
        });
}

/// `dst[j] += sum_b scale[b] * rows[b, j]` (scale 1 when None) over a small `[B, n]` matrix of
/// per-example gradients (biases, normalisation scales and shifts), accumulated in f64 so the
/// clipped sum does not depend on the batch's order beyond f32 rounding of the result.
pub fn add_scaled_row_sum(rows: &[f32], scale: Option<&[f32]>, dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    let mut acc = vec![0.0f64; n];
    for (b, r) in rows.chunks(n).enumerate() {
        let c = scale.map_or(1.0, |s| s[b]) as f64;
        for (a, v) in acc.iter_mut().zip(r) {
            *a += c * *v as f64;
        }
    }
    for (d, a) in dst.iter_mut().zip(acc) {
        *d += a as f32;
    }
}

/// Max pooling forward over `[B*C]` planes: `y` gets each window's maximum and `arg` the index
/// (within its plane) of the first maximal input; windows lie partly in the padding at most (the
/// layer checks `pad <= kernel / 2`), and padding never wins.
pub fn max_pool_forward(x: &[f32], g: &ConvGeom, y: &mut [f32], arg: &mut [u32]) {
    let (pin, pout) = (g.in_h * g.in_w, g.positions());
    if pin == 0 || pout == 0 {
        return;
    }
    y.par_chunks_mut(pout)
        .zip(arg.par_chunks_mut(pout))
        .zip(x.par_chunks(pin))
        .for_each(|((yp, ap), xp)| {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = u32::MAX;
                    for ky in 0..g.kernel {
                        let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                            continue;
                        };
                        for kx in 0..g.kernel {
                            let Some(ix) = ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w)
                            else {
                                continue;
                            };
                            let v = xp[iy * g.in_w + ix];
                            // A NaN wins, so a diverged input propagates instead of vanishing.
                            if at == u32::MAX || v > best || v.is_nan() && !best.is_nan() {
                                best = v;
                                at = (iy * g.in_w + ix) as u32;
                            }
                        }
                    }
                    yp[oy * g.out_w + ox] = best;
                    ap[oy * g.out_w + ox] = at;
                }
            }
        });
}

/// Max pooling backward: `dx` (overwritten) gets each output gradient at its window's argmax.
pub fn max_pool_backward(dy: &[f32], arg: &[u32], g: &ConvGeom, dx: &mut [f32]) {
    let (pin, pout) = (g.in_h * g.in_w, g.positions());
    if pin == 0 || pout == 0 {
        return;
    }
    dx.par_chunks_mut(pin)
        .zip(dy.par_chunks(pout).zip(arg.par_chunks(pout)))
        .for_each(|(dxp, (dyp, ap))| {
            dxp.fill(0.0);
            for (d, &a) in dyp.iter().zip(ap) {
                dxp[a as usize] += d;
            }
        });
}

/// The number of window cells inside the image (the average pool's divisor without padding).
#[inline]
fn window_count(g: &ConvGeom, oy: usize, ox: usize) -> usize {
    let ny = (0..g.kernel)
        .filter(|&k| ConvGeom::src(oy, k, g.stride, g.pad_top, g.in_h).is_some())
        .count();
    let nx = (0..g.kernel)
        .filter(|&k| ConvGeom::src(ox, k, g.stride, g.pad_left, g.in_w).is_some())
        .count();
    ny * nx
}

/// Average pooling forward over `[B*C]` planes. With `count_include_pad` the divisor is
/// `kernel^2` (PyTorch's default), else the number of cells inside the image.
pub fn avg_pool_forward(x: &[f32], g: &ConvGeom, count_include_pad: bool, y: &mut [f32]) {
    let (pin, pout) = (g.in_h * g.in_w, g.positions());
    if pin == 0 || pout == 0 {
        return;
    }
    y.par_chunks_mut(pout)
        .zip(x.par_chunks(pin))
        .for_each(|(yp, xp)| {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut s = 0.0f32;
                    for ky in 0..g.kernel {
                        let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                            continue;
                        };
                        for kx in 0..g.kernel {
                            if let Some(ix) = ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w) {
                                s += xp[iy * g.in_w + ix];
                            }
                        }
                    }
                    let n = if count_include_pad {
                        g.kernel * g.kernel
                    } else {
                        window_count(g, oy, ox)
                    };
                    yp[oy * g.out_w + ox] = s / n as f32;
                }
            }
        });
}

/// Average pooling backward: `dx` (overwritten) gets each output gradient spread evenly over its
/// window's cells inside the image.
pub fn avg_pool_backward(dy: &[f32], g: &ConvGeom, count_include_pad: bool, dx: &mut [f32]) {
    let (pin, pout) = (g.in_h * g.in_w, g.positions());
    if pin == 0 || pout == 0 {
        return;
    }
    dx.par_chunks_mut(pin)
        .zip(dy.par_chunks(pout))
        .for_each(|(dxp, dyp)| {
            dxp.fill(0.0);
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let n = if count_include_pad {
                        g.kernel * g.kernel
                    } else {
                        window_count(g, oy, ox)
                    };
                    let d = dyp[oy * g.out_w + ox] / n as f32;
                    for ky in 0..g.kernel {
                        let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                            continue;
                        };
                        for kx in 0..g.kernel {
                            if let Some(ix) = ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w) {
                                dxp[iy * g.in_w + ix] += d;
                            }
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_padding_arithmetic() {
        // TF: out = ceil(in / s), total pad = max((out - 1) s + k - in, 0), extra pixel at the end.
        let g = ConvGeom::new(28, 28, 8, 2, Padding::Same).unwrap();
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (14, 14, 3, 3));
        let g = ConvGeom::new(27, 27, 8, 2, Padding::Same).unwrap();
        // out 14, total (13 * 2 + 8 - 27) = 7: 3 before, 4 after.
        assert_eq!((g.out_h, g.pad_top), (14, 3));
        let g = ConvGeom::new(5, 5, 1, 2, Padding::Same).unwrap();
        assert_eq!((g.out_h, g.pad_top), (3, 0));
        let g = ConvGeom::new(13, 13, 4, 2, Padding::Valid).unwrap();
        assert_eq!(g.out_h, 5);
        let g = ConvGeom::new(7, 9, 3, 2, Padding::Explicit(1)).unwrap();
        assert_eq!((g.out_h, g.out_w), (4, 5));
        assert!(ConvGeom::new(3, 3, 4, 1, Padding::Valid).is_err());
        assert!(ConvGeom::new(3, 3, 0, 1, Padding::Valid).is_err());
        assert!(ConvGeom::new(3, 3, 2, 0, Padding::Valid).is_err());
    }

    /// im2col and col2im are adjoint: <im2col(x), u> = <x, col2im(u)> for all x, u.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (pad, stride) in [
            (Padding::Same, 2),
            (Padding::Valid, 1),
            (Padding::Explicit(2), 3),
        ] {
            let (b, c, h, w, k) = (2, 3, 7, 6, 3);
            let g = ConvGeom::new(h, w, k, stride, pad).unwrap();
            let x: Vec<f32> = (0..b * c * h * w)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let n = b * g.positions() * c * k * k;
            let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut cols = vec![f32::NAN; n];
            im2col(&x, c, &g, &mut cols);
            let mut dx = vec![f32::NAN; x.len()];
            col2im(&u, c, &g, &mut dx);
            let lhs: f64 = cols.iter().zip(&u).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{pad:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn planes_and_rows_round_trip() {
        let (b, c, p) = (3, 4, 5);
        let y: Vec<f32> = (0..b * c * p).map(|i| i as f32).collect();
        let mut z = vec![0.0; y.len()];
        planes_to_rows(&y, c, p, &mut z);
        assert_eq!(z[(p + 2) * c + 1], y[c * p + p + 2]);
        let mut back = vec![0.0; y.len()];
        rows_to_planes(&z, c, p, None, &mut back);
        assert_eq!(back, y);
        let mut s = vec![0.0; b * c];
        plane_sums(&y, c, p, &mut s);
        assert_eq!(s[c + 1], (25..30).sum::<usize>() as f32);
    }
}
