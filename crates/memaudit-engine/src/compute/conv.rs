//! Convolution and pooling primitives over `[B, C, H, W]` images.
//!
//! A convolution is lowered to one GEMM by **im2col** (Chellapilla, Puri & Simard 2006, "High
//! Performance Convolutional Neural Networks for Document Processing"). Example i's receptive
//! fields are the rows of `U_i` (`[P, C*k*k]`, P = output positions); we store all examples'
//! fields transposed side by side, `cols = [U_1^T | U_2^T | ...]` (`[C*k*k, B*P]`), so that
//! - the forward is one GEMM `W cols` (`[C_out, B*P]`), the input gradient one GEMM `W^T G`
//!   followed by **col2im**, and the weight gradient one GEMM `G cols^T`, all over the whole batch;
//! - building `cols` copies runs of `out_w` pixels of an input row (contiguous for stride 1), and
//!   col2im adds such runs back, instead of `k`-pixel pieces;
//! - example i's `U_i` and `G_i` are strided views (columns `i*P..(i+1)*P`), which is what the
//!   per-example rules of engine.md need: the Gram over output positions
//!   `<G_i G_i^T, U_i U_i^T>`, or the materialised `G_i^T U_i`.
//!
//! Everything is parallel, each task owning a contiguous part of the output (no
//! synchronisation): col2im and pooling over (example, channel) planes; im2col over the rows of
//! `cols` (one kernel offset for every example: at least C*k*k >= 9 tasks in our models, and the
//! row's valid range is computed once rather than per 25-pixel example segment).

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::compute::{sgemm_serial, sum_sq};
use crate::error::{EngineError, Result};
use crate::tensor::{MatMut, MatRef};

/// Buffers a layer recycles from step to step.
///
/// A fresh multi-megabyte `Vec` is mapped anew by the allocator and every page faults on first
/// write; in a VM that costs ~1-2 us per 4 KiB page, as much as the im2col copy itself (measured
/// on the GroupNorm CNN: 3-10 ms per conv forward). The conv layers' im2col matrices and GEMM
/// scratch are the same sizes every step, so they come from here and return on drop.
#[derive(Debug)]
pub struct ScratchPool<T: Copy + Default = f32>(Arc<Mutex<Vec<Vec<T>>>>);

// Manual impls: derives would put their bounds on the `Arc`.
impl<T: Copy + Default> Clone for ScratchPool<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: Copy + Default> Default for ScratchPool<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

/// Buffers kept per pool (a conv layer holds at most four at a time).
const POOL_BUFFERS: usize = 6;

impl<T: Copy + Default> ScratchPool<T> {
    /// A buffer of `len` elements with UNSPECIFIED (stale but initialised) contents: the caller
    /// must overwrite every element.
    pub fn take(&self, len: usize) -> Scratch<T> {
        let reused = self.0.lock().ok().and_then(|mut free| {
            // Best fit: the smallest buffer that is large enough, else the largest one.
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.len()))
                .map(|(i, _)| i)?;
            Some(free.swap_remove(pick))
        });
        let mut buf = reused.unwrap_or_default();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, T::default());
        }
        Scratch {
            buf,
            pool: self.clone(),
        }
    }
}

/// A recycled buffer; derefs to `[f32]` and returns to its pool when dropped.
#[derive(Debug)]
pub struct Scratch<T: Copy + Default = f32> {
    buf: Vec<T>,
    pool: ScratchPool<T>,
}

impl<T: Copy + Default> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}

impl<T: Copy + Default> Drop for Scratch<T> {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // Its initialised length is all of it that later takes may reuse without zeroing.
        let cap = buf.capacity();
        if cap > buf.len() {
            buf.resize(cap, T::default());
        }
        if let Ok(mut free) = self.pool.0.lock()
            && free.len() < POOL_BUFFERS
        {
            free.push(buf);
        }
    }
}

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

/// The output columns `ox` whose input column `ox * stride + k - pad` lies inside `0..len`:
/// `lo..hi` (empty when none does).
#[inline]
fn valid_range(out_len: usize, k: usize, stride: usize, pad: usize, len: usize) -> (usize, usize) {
    // ox * stride + k >= pad  <=>  ox >= ceil((pad - k) / stride)
    let lo = pad.saturating_sub(k).div_ceil(stride);
    // ox * stride + k - pad <= len - 1  <=>  ox <= (len - 1 + pad - k) / stride
    let hi = match (len + pad).checked_sub(k + 1) {
        Some(v) => (v / stride + 1).min(out_len),
        None => 0,
    };
    (lo.min(hi), hi)
}

/// Batched im2col into the column layout `cols` = `[C*k*k, B*P]`: row `(c*k + ky)*k + kx`, column
/// `b*P + oy*out_w + ox` holds `x[b, c, oy*stride + ky - pad_top, ox*stride + kx - pad_left]`
/// (0 in the padding). Example i's `U_i` (`[P, C*k*k]`) is the transposed view of columns
/// `i*P..(i+1)*P`. In this layout every copy is a run of `out_w` pixels of one input row
/// (contiguous for stride 1).
pub fn im2col(x: &[f32], channels: usize, g: &ConvGeom, cols: &mut [f32]) {
    let plane = g.in_h * g.in_w;
    let pos = g.positions();
    let k = g.kernel;
    if plane == 0 || pos == 0 || channels == 0 {
        return;
    }
    let batch = x.len() / (channels * plane);
    if batch == 0 {
        return;
    }
    debug_assert_eq!(cols.len(), channels * k * k * batch * pos);
    // One task per row (c, ky, kx) of `cols`: the valid output range is computed once per row,
    // and the inner loops are runs of `out_w` pixels for every example and output row.
    cols.par_chunks_mut(batch * pos)
        .enumerate()
        .for_each(|(r, row)| {
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let (lo, hi) = valid_range(g.out_w, kx, g.stride, g.pad_left, g.in_w);
            for (b, u) in row.chunks_mut(pos).enumerate() {
                let xp = &x[(b * channels + c) * plane..][..plane];
                for oy in 0..g.out_h {
                    let dst = &mut u[oy * g.out_w..][..g.out_w];
                    let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo < hi {
                        let x0 = iy * g.in_w + lo * g.stride + kx - g.pad_left;
                        let dst = &mut dst[lo..hi];
                        let n = dst.len();
                        match g.stride {
                            1 => dst.copy_from_slice(&xp[x0..x0 + n]),
                            // Pairs (x[2j], x[2j+1]) keep the loop vectorisable; the last pair
                            // may run past the plane, so the last pixel is copied on its own.
                            2 => {
                                gather_even(&mut dst[..n - 1], &xp[x0..x0 + 2 * (n - 1)]);
                                dst[n - 1] = xp[x0 + 2 * (n - 1)];
                            }
                            s => {
                                for (j, d) in dst.iter_mut().enumerate() {
                                    *d = xp[x0 + j * s];
                                }
                            }
                        }
                    }
                }
            }
        });
}

crate::simd_kernel! {
    /// `dst[j] = src[2 j]`.
    fn gather_even(dst: &mut [f32], src: &[f32]) {
        for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = pair[0];
        }
    }
}

/// col2im, the adjoint of `im2col`: `dx` (`[B, C, H, W]`, overwritten) gets the sum of the
/// entries of `cols` (`[C*k*k, B*P]`) scattered back onto the pixels they were read from. One task
/// per (example, channel) plane, so no two tasks write the same pixel.
pub fn col2im(cols: &[f32], channels: usize, g: &ConvGeom, dx: &mut [f32]) {
    let plane = g.in_h * g.in_w;
    let pos = g.positions();
    let k = g.kernel;
    if plane == 0 || pos == 0 || channels == 0 {
        return;
    }
    let batch = dx.len() / (channels * plane);
    let bp = batch * pos;
    dx.par_chunks_mut(plane).enumerate().for_each(|(bc, dxp)| {
        let (b, c) = (bc / channels, bc % channels);
        dxp.fill(0.0);
        for ky in 0..k {
            for kx in 0..k {
                let r = (c * k + ky) * k + kx;
                let u = &cols[r * bp + b * pos..][..pos];
                let (lo, hi) = valid_range(g.out_w, kx, g.stride, g.pad_left, g.in_w);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.out_h {
                    let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                        continue;
                    };
                    let src = &u[oy * g.out_w + lo..oy * g.out_w + hi];
                    let x0 = iy * g.in_w + lo * g.stride + kx - g.pad_left;
                    if g.stride == 1 {
                        add_assign(&mut dxp[x0..x0 + src.len()], src);
                    } else {
                        for (j, s) in src.iter().enumerate() {
                            dxp[x0 + j * g.stride] += s;
                        }
                    }
                }
            }
        }
    });
}

crate::simd_kernel! {
    fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// `[C, B*P]` (one row per channel, the GEMM's output) to `[B, C, P]` planes, adding `bias[c]`.
pub fn cols_to_planes(
    z: &[f32],
    channels: usize,
    positions: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if channels == 0 || positions == 0 {
        return;
    }
    let bp = z.len() / channels;
    let batch = bp / positions;
    y.par_chunks_mut(positions)
        .with_min_len(16)
        .enumerate()
        .for_each(|(bc, yp)| {
            let (b, c) = (bc / channels, bc % channels);
            let src = &z[c * bp + b * positions..][..positions];
            let add = bias.map_or(0.0, |bb| bb[c]);
            for (d, s) in yp.iter_mut().zip(src) {
                *d = s + add;
            }
        });
    debug_assert_eq!(y.len(), batch * channels * positions);
}

/// `[B, C, P]` planes to `[C, B*P]` rows (the transpose of `cols_to_planes`, without bias).
pub fn planes_to_cols(y: &[f32], channels: usize, positions: usize, z: &mut [f32]) {
    if channels == 0 || positions == 0 {
        return;
    }
    let bp = z.len() / channels;
    let batch = bp / positions;
    if bp == 0 {
        return;
    }
    z.par_chunks_mut(bp).enumerate().for_each(|(c, zr)| {
        for b in 0..batch {
            zr[b * positions..][..positions]
                .copy_from_slice(&y[(b * channels + c) * positions..][..positions]);
        }
    });
}

/// `dst += a b` for a short, wide `a` (`[m, k]`) and tall `b` (`[k, n]`) with a long reduction
/// `k` (a conv weight gradient: `k = B*P` output positions, `m x n` = the weight). The reduction
/// is split into one slice per thread, each multiplied on its own thread into a private `m x n`
/// partial, and the partials are summed: the GEMM kernel's own threading splits only `m` and `n`,
/// which are too small here to keep the threads busy.
pub fn sgemm_long_k_acc(dst: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    let threads = rayon::current_num_threads();
    // Below a few columns per thread, or when m x n is big enough to split, one GEMM is better.
    if threads < 2 || k < 64 * threads || m * n >= 256 * 256 {
        crate::compute::sgemm(dst, 1.0, a, b, 1.0);
        return;
    }
    let per = k.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let start = (t * per).min(k);
            let len = per.min(k - start);
            let mut part = vec![0.0f32; m * n];
            sgemm_serial(
                MatMut::row_major(&mut part, m, n),
                0.0,
                a.cols_range(start, len),
                b.rows_range(start, len),
                1.0,
            );
            part
        })
        .collect();
    for part in &partials {
        for i in 0..m {
            for j in 0..n {
                dst.data[i * dst.rs + j * dst.cs] += part[i * n + j];
            }
        }
    }
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

/// `dst = src` with column `b*P + p` of every row multiplied by `scale[b]`: the clip factors
/// applied to G in the column layout `[C, B*P]`.
pub fn scale_columns_by_example(src: &[f32], positions: usize, scale: &[f32], dst: &mut [f32]) {
    let bp = positions * scale.len();
    if bp == 0 {
        return;
    }
    dst.par_chunks_mut(bp)
        .zip(src.par_chunks(bp))
        .for_each(|(d, s)| {
            for ((db, sb), &c) in d.chunks_mut(positions).zip(s.chunks(positions)).zip(scale) {
                for (dv, sv) in db.iter_mut().zip(sb) {
                    *dv = c * sv;
                }
            }
        });
}

/// Materialise every example's weight gradient `G_i^T A_i` (`g(i)`: `[T, p]`, `a(i)`: `[T, d]`)
/// into `grads` (`[B, p*d]`, row-major `[p, d]` blocks) and add its squared Frobenius norm into
/// `out`. The per-example "materialise" rule of engine.md, keeping the gradients so the clipped sum
/// is their weighted sum (`add_weighted_blocks`) instead of a second GEMM over all rows.
pub fn materialize_per_example<'g, 'a, FG, FA>(out: &mut [f32], grads: &mut [f32], g: FG, a: FA)
where
    FG: Fn(usize) -> MatRef<'g> + Sync,
    FA: Fn(usize) -> MatRef<'a> + Sync,
{
    let b = out.len();
    if b == 0 {
        return;
    }
    let block = grads.len() / b;
    if block == 0 {
        return;
    }
    grads
        .par_chunks_mut(block)
        .zip(out.par_iter_mut())
        .enumerate()
        .for_each(|(i, (gw, o))| {
            let (gi, ai) = (g(i), a(i));
            sgemm_serial(
                MatMut::row_major(gw, gi.cols, ai.cols),
                0.0,
                gi.t(),
                ai,
                1.0,
            );
            *o += sum_sq(gw) as f32;
        });
}

/// `dst[j] += sum_b scale[b] * blocks[b, j]` for per-example gradient blocks `[B, n]`, parallel
/// over column ranges.
pub fn add_weighted_blocks(blocks: &[f32], scale: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 || scale.is_empty() {
        return;
    }
    const COLS_PER_TASK: usize = 2048;
    dst.par_chunks_mut(COLS_PER_TASK)
        .enumerate()
        .for_each(|(ci, d)| {
            let j0 = ci * COLS_PER_TASK;
            for (b, &c) in scale.iter().enumerate() {
                if c != 0.0 {
                    axpy(d, c, &blocks[b * n + j0..][..d.len()]);
                }
            }
        });
}

crate::simd_kernel! {
    fn axpy(dst: &mut [f32], a: f32, x: &[f32]) {
        for (d, v) in dst.iter_mut().zip(x) {
            *d += a * v;
        }
    }
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
/// (within its plane) of the first maximal input in window order; a NaN wins (as in PyTorch), so
/// a diverged input propagates. Windows lie partly in the padding at most (the layer checks
/// `pad <= kernel / 2`, so every window has a cell inside the image), and padding never wins.
pub fn max_pool_forward(x: &[f32], g: &ConvGeom, y: &mut [f32], arg: &mut [u32]) {
    let (pin, pout) = (g.in_h * g.in_w, g.positions());
    if pin == 0 || pout == 0 {
        return;
    }
    let interior = g.pad_top == 0 && g.pad_left == 0;
    y.par_chunks_mut(pout)
        .zip(arg.par_chunks_mut(pout))
        .zip(x.par_chunks(pin))
        .with_min_len(4)
        .for_each(|((yp, ap), xp)| {
            for oy in 0..g.out_h {
                let yr = &mut yp[oy * g.out_w..][..g.out_w];
                let ar = &mut ap[oy * g.out_w..][..g.out_w];
                if interior {
                    // Every cell is inside the image: the first initialises, the rest update.
                    for ky in 0..g.kernel {
                        let iy = oy * g.stride + ky;
                        let xr = &xp[iy * g.in_w..][..g.in_w];
                        for kx in 0..g.kernel {
                            let at = (iy * g.in_w + kx) as u32;
                            if ky == 0 && kx == 0 {
                                for (j, (b, a)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                                    *b = xr[kx + j * g.stride];
                                    *a = at + (j * g.stride) as u32;
                                }
                            } else if g.stride == 1 {
                                max_update(yr, ar, &xr[kx..], at);
                            } else {
                                max_update_strided(yr, ar, &xr[kx..], at, g.stride);
                            }
                        }
                    }
                    continue;
                }
                yr.fill(f32::NEG_INFINITY);
                ar.fill(u32::MAX);
                for ky in 0..g.kernel {
                    let Some(iy) = ConvGeom::src(oy, ky, g.stride, g.pad_top, g.in_h) else {
                        continue;
                    };
                    for kx in 0..g.kernel {
                        for (ox, (b, a)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                            let Some(ix) = ConvGeom::src(ox, kx, g.stride, g.pad_left, g.in_w)
                            else {
                                continue;
                            };
                            let v = xp[iy * g.in_w + ix];
                            if *a == u32::MAX || v > *b || v.is_nan() {
                                *b = v;
                                *a = (iy * g.in_w + ix) as u32;
                            }
                        }
                    }
                }
            }
        });
}

crate::simd_kernel! {
    /// Running max/argmax over a contiguous run of candidates (`x[j]` sits at index `at0 + j`).
    fn max_update(best: &mut [f32], arg: &mut [u32], x: &[f32], at0: u32) {
        for (j, ((b, a), &v)) in best.iter_mut().zip(arg.iter_mut()).zip(x).enumerate() {
            #[allow(clippy::eq_op)]
            let take = v > *b || v != v;
            *b = if take { v } else { *b };
            *a = if take { at0 + j as u32 } else { *a };
        }
    }
}

/// Running max/argmax over candidates `stride` apart (`x[j * stride]` sits at `at0 + j * stride`).
fn max_update_strided(best: &mut [f32], arg: &mut [u32], x: &[f32], at0: u32, stride: usize) {
    for (j, (b, a)) in best.iter_mut().zip(arg.iter_mut()).enumerate() {
        let v = x[j * stride];
        if v > *b || v.is_nan() {
            *b = v;
            *a = at0 + (j * stride) as u32;
        }
    }
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
    fn im2col_matches_the_definition() {
        for (pad, stride, k) in [
            (Padding::Same, 2, 4),
            (Padding::Valid, 1, 3),
            (Padding::Explicit(1), 2, 3),
            (Padding::Explicit(2), 3, 5),
        ] {
            let (b, c, h, w) = (3, 2, 7, 8);
            let g = ConvGeom::new(h, w, k, stride, pad).unwrap();
            let x: Vec<f32> = (0..b * c * h * w).map(|i| i as f32 + 1.0).collect();
            let p = g.positions();
            let mut cols = vec![f32::NAN; c * k * k * b * p];
            im2col(&x, c, &g, &mut cols);
            for n in 0..b {
                for ch in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            for oy in 0..g.out_h {
                                for ox in 0..g.out_w {
                                    let iy = (oy * stride + ky) as isize - g.pad_top as isize;
                                    let ix = (ox * stride + kx) as isize - g.pad_left as isize;
                                    let want =
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            0.0
                                        } else {
                                            x[((n * c + ch) * h + iy as usize) * w + ix as usize]
                                        };
                                    let r = (ch * k + ky) * k + kx;
                                    let got = cols[r * b * p + n * p + oy * g.out_w + ox];
                                    assert_eq!(got, want, "{pad:?} s{stride} k{k}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn planes_and_cols_round_trip() {
        let (b, c, p) = (3, 4, 5);
        let y: Vec<f32> = (0..b * c * p).map(|i| i as f32).collect();
        let mut z = vec![0.0; y.len()];
        planes_to_cols(&y, c, p, &mut z);
        // Example 1, channel 2, position 3 sits in row 2, column 1 * P + 3.
        assert_eq!(z[2 * b * p + p + 3], y[(c + 2) * p + 3]);
        let mut back = vec![0.0; y.len()];
        cols_to_planes(&z, c, p, None, &mut back);
        assert_eq!(back, y);
        let mut s = vec![0.0; b * c];
        plane_sums(&y, c, p, &mut s);
        assert_eq!(s[c + 1], (25..30).sum::<usize>() as f32);
    }

    #[test]
    fn split_k_gemm_matches_one_gemm() {
        // Run inside a 3-thread pool so the split path (uneven slices) runs on any machine.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (m, n, k) = (5, 7, 1001);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut want = vec![1.0f32; m * n];
        crate::compute::sgemm(
            MatMut::row_major(&mut want, m, n),
            1.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            1.0,
        );
        let mut got = vec![1.0f32; m * n];
        pool.install(|| {
            sgemm_long_k_acc(
                MatMut::row_major(&mut got, m, n),
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
            )
        });
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn scratch_buffers_are_recycled_best_fit() {
        let pool: ScratchPool = ScratchPool::default();
        let mut a = pool.take(1000);
        a.fill(1.0);
        let pa = a.as_ptr();
        let b = pool.take(10);
        let pb = b.as_ptr();
        drop(a);
        drop(b);
        // The small request gets the small buffer, the large one the large buffer, re-sized.
        let c = pool.take(8);
        let d = pool.take(900);
        assert_eq!((c.as_ptr(), c.len()), (pb, 8));
        assert_eq!((d.as_ptr(), d.len()), (pa, 900));
        drop(d);
        // Growing past every buffer reuses the largest one's allocation (extended).
        let e = pool.take(2000);
        assert_eq!(e.len(), 2000);
        let idx: ScratchPool<u32> = ScratchPool::default();
        assert_eq!(idx.take(3).len(), 3);
    }

    #[test]
    fn weighted_blocks_and_column_scaling() {
        let (b, n) = (3, 5000);
        let blocks: Vec<f32> = (0..b * n).map(|i| (i as f32 * 0.1).sin()).collect();
        let scale = [0.5, 0.0, 2.0];
        let mut dst = vec![1.0; n];
        add_weighted_blocks(&blocks, &scale, &mut dst);
        for j in [0, 2047, 2048, 4999] {
            let want = 1.0 + 0.5 * blocks[j] + 2.0 * blocks[2 * n + j];
            assert!((dst[j] - want).abs() < 1e-6);
        }
        let (rows, p) = (2, 4);
        let src: Vec<f32> = (0..rows * b * p).map(|i| i as f32).collect();
        let mut out = vec![0.0; src.len()];
        scale_columns_by_example(&src, p, &scale, &mut out);
        assert_eq!(out[b * p + 2 * p + 1], 2.0 * src[b * p + 2 * p + 1]);
        assert_eq!(out[p], 0.0);
    }
}
