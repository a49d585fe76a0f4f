//! Fused kernels of the recurrent layers (LSTM, GRU) and of incremental LM inference.
//!
//! The recurrent step is bound by its transcendental functions (an LSTM cell evaluates five per
//! hidden unit), so every cell is one pass over a row that applies the gate non-linearities
//! (`vmath`'s branch-free exp), combines them, writes what backward needs, and, in backward,
//! accumulates the per-example bias gradient while the gate gradients are still in registers.
//! Kernels are compiled three times (baseline, AVX2+FMA, AVX-512) and chosen at run time; the
//! AVX-512 copy of the LSTM forward cell measured 1.75x faster than the AVX2 one.
//!
//! Also here:
//! - the per-example weight-gradient norms of a recurrent layer (Gram or materialised, sharing
//!   the output-gradient Gram between W_ih and W_hh when both see the same G), with a
//!   lower-triangle Gram microkernel (`lower_gram`);
//! - the splitting of time-major buffers into per-thread example blocks: the recurrence of one
//!   example never reads another's rows, so each thread runs the whole time loop on its block
//!   with no synchronisation per step;
//! - `BufferPool`, which recycles the layers' large per-step buffers;
//! - a vectorised log-softmax for incremental inference.
//!
//! Gate orders follow PyTorch: LSTM rows are `[i, f, g, o]` blocks of `H` (Hochreiter &
//! Schmidhuber 1997 with forget gate, Gers et al. 2000), GRU rows `[r, z, n]` (Cho et al. 2014,
//! PyTorch's variant with `b_hn` inside `r * (W_hn h + b_hn)`).

use rayon::prelude::*;

use super::vmath::{exp_approx, sigmoid, tanh};
use super::{NormRule, sgemm_serial, sum_sq};
use crate::tensor::{MatMut, MatRef};

/// True if the CPU has AVX-512 F/VL/BW/DQ (checked once, cached by std).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `simd_kernel!` with a third, AVX-512 copy: the cell kernels are long chains of vectorised
/// arithmetic, and 16 lanes per instruction halve their instruction count.
macro_rules! rnn_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                fn wide512($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) { body($($arg),*) }
                if has_avx512() {
                    // SAFETY: the CPU supports every feature enabled on `wide512` (checked).
                    return unsafe { wide512($($arg),*) };
                }
                if crate::compute::vmath::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

// The cells, one file each; the macro above is in their textual scope.
mod gru;
mod lstm;

pub use gru::{gru_backward_rows, gru_forward_rows, gru_step_rows};
pub use lstm::{lstm_backward_rows, lstm_forward_rows, lstm_step_rows};

// ---------------------------------------------------------------------------------------------
// Row helpers. Every stream of a cell is passed as its own slice argument: once inlined into a
// kernel, LLVM keeps the `noalias` of each argument and vectorises the loop (with the streams
// carved out of one row inside the loop it cannot prove they are disjoint, and stays scalar,
// ten times slower).
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn split4(s: &mut [f32], hd: usize) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let (a, rest) = s.split_at_mut(hd);
    let (b, rest) = rest.split_at_mut(hd);
    let (c, d) = rest.split_at_mut(hd);
    (a, b, c, &mut d[..hd])
}

#[inline(always)]
fn split4r(s: &[f32], hd: usize) -> (&[f32], &[f32], &[f32], &[f32]) {
    (
        &s[..hd],
        &s[hd..2 * hd],
        &s[2 * hd..3 * hd],
        &s[3 * hd..4 * hd],
    )
}

#[inline(always)]
fn split3(s: &mut [f32], hd: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (a, rest) = s.split_at_mut(hd);
    let (b, c) = rest.split_at_mut(hd);
    (a, b, &mut c[..hd])
}

#[inline(always)]
fn split3r(s: &[f32], hd: usize) -> (&[f32], &[f32], &[f32]) {
    (&s[..hd], &s[hd..2 * hd], &s[2 * hd..3 * hd])
}

// ---------------------------------------------------------------------------------------------
// log-softmax
// ---------------------------------------------------------------------------------------------

/// Lanes of the partial max / sum accumulators: strict f32 semantics forbid LLVM to reorder a
/// single running sum, so the reduction is spelled out over 16 independent lanes.
const LANES: usize = 16;

/// The tail of a row (fewer than `LANES` values) padded with `fill`, so that it goes through
/// the same vector code as the full chunks.
#[inline(always)]
fn padded(rem: &[f32], fill: f32) -> [f32; LANES] {
    let mut p = [fill; LANES];
    p[..rem.len()].copy_from_slice(rem);
    p
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let tail = padded(chunks.remainder(), f32::NEG_INFINITY);
    for k in 0..LANES {
        acc[k] = acc[k].max(tail[k]);
    }
    acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// `sum exp(row - shift)`. The padded tail lanes hold -inf: `exp_approx` saturates them at
/// ~1.6e-38, nothing against a sum >= 1 (the maximum contributes exp(0)).
#[inline(always)]
fn row_sum_exp(row: &[f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            acc[k] += exp_approx(c[k] - shift);
        }
    }
    let tail = padded(chunks.remainder(), f32::NEG_INFINITY);
    if !chunks.remainder().is_empty() {
        for k in 0..LANES {
            acc[k] += exp_approx(tail[k] - shift);
        }
    }
    acc.iter().sum()
}

rnn_kernel! {
    /// Natural-log softmax of every `cols`-wide row of `x`, in place.
    pub fn log_softmax_rows(x: &mut [f32], cols: usize) {
        if cols == 0 {
            return;
        }
        for row in x.chunks_exact_mut(cols) {
            let m = row_max(row);
            let lz = m + row_sum_exp(row, m).ln();
            for v in row.iter_mut() {
                *v -= lz;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Buffer reuse
// ---------------------------------------------------------------------------------------------

/// Recycles a layer's large per-step buffers (gate activations, cell states, gate gradients).
///
/// Measured on the LSTM LM benchmark: allocating them fresh every step spent ~25% of the step in
/// the kernel (page faults on first touch, and glibc trimming the heap on free), more than the
/// cell kernels themselves. Caches and gradient states hand their buffers back when dropped.
/// Clones share one pool. At most `POOL_MAX_BUFFERS` buffers and `POOL_MAX_BYTES` are kept, so a
/// one-off huge evaluation batch is not retained.
#[derive(Clone, Default)]
pub struct BufferPool {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<f32>>>>,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The spare buffers themselves (megabytes of stale floats) are not worth printing.
        let free = self.lock();
        f.debug_struct("BufferPool")
            .field("buffers", &free.len())
            .field(
                "bytes",
                &free.iter().map(|v| v.capacity() * 4).sum::<usize>(),
            )
            .finish()
    }
}

const POOL_MAX_BUFFERS: usize = 16;
const POOL_MAX_BYTES: usize = 256 << 20;

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        // A panic elsewhere cannot leave the list of spare buffers inconsistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` floats whose contents are unspecified (stale values of an earlier step,
    /// or zeros): for outputs that are overwritten entirely.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let best = {
            let mut free = self.lock();
            let k = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(k, _)| k);
            k.map(|k| free.swap_remove(k))
        };
        match best {
            Some(mut v) => {
                if v.len() >= len {
                    v.truncate(len);
                } else {
                    v.resize(len, 0.0);
                }
                v
            }
            None => vec![0.0; len],
        }
    }

    /// A zero-filled buffer of `len` floats.
    pub fn take_zeroed(&self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        v.fill(0.0);
        v
    }

    /// Hand a buffer back for reuse.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() == 0 || v.capacity() * 4 > POOL_MAX_BYTES {
            return;
        }
        let mut free = self.lock();
        free.push(v);
        // Over the limits: drop the smallest buffers first (the big ones are what we save).
        while free.len() > POOL_MAX_BUFFERS
            || free.iter().map(|v| v.capacity() * 4).sum::<usize>() > POOL_MAX_BYTES
        {
            let k = free
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| v.capacity())
                .map(|(k, _)| k)
                .unwrap_or(0);
            free.swap_remove(k);
        }
    }
}

/// `dst = src^T` for a row-major `[rows, cols]` `src` (`dst` is `[cols, rows]`). The recurrent
/// GEMMs run faster with `W^T` stored row-major than as a transposed view. Each task owns a block
/// of 16 destination rows (16 source columns): it reads 16 consecutive floats of every source row
/// and writes them into its 16 rows.
pub fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const BLOCK: usize = 16;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    let task = |(k, d): (usize, &mut [f32])| {
        let c0 = k * BLOCK;
        let w = d.len() / rows;
        for r in 0..rows {
            let s = &src[r * cols + c0..r * cols + c0 + w];
            for (j, v) in s.iter().enumerate() {
                d[j * rows + r] = *v;
            }
        }
    };
    let dst = &mut dst[..rows * cols];
    if rows * cols >= 1 << 16 {
        dst.par_chunks_mut(BLOCK * rows).enumerate().for_each(task);
    } else {
        dst.chunks_mut(BLOCK * rows).enumerate().for_each(task);
    }
}

/// `dst[r, :] = scale[r % B] * src[r, :]` (`B = scale.len()`) for row-major `[rows, cols]`
/// matrices with time-major rows (row r belongs to example `r % B`), fused and in parallel over
/// blocks of rows.
pub fn scaled_copy_rows(src: &[f32], dst: &mut [f32], cols: usize, scale: &[f32]) {
    assert_eq!(src.len(), dst.len());
    if cols == 0 || src.is_empty() {
        return;
    }
    let b = scale.len();
    assert!(
        b > 0,
        "scaled_copy_rows: no scale factors for {} rows",
        src.len() / cols
    );
    const BLOCK_ROWS: usize = 256;
    dst.par_chunks_mut(BLOCK_ROWS * cols)
        .zip(src.par_chunks(BLOCK_ROWS * cols))
        .enumerate()
        .for_each(|(k, (d, s))| {
            for (r, (dr, sr)) in d
                .chunks_exact_mut(cols)
                .zip(s.chunks_exact(cols))
                .enumerate()
            {
                let c = scale[(k * BLOCK_ROWS + r) % b];
                for (x, y) in dr.iter_mut().zip(sr) {
                    *x = c * y;
                }
            }
        });
}

// ---------------------------------------------------------------------------------------------
// Splitting the batch across threads
// ---------------------------------------------------------------------------------------------

/// Example boundaries `0 = b_0 < b_1 < ... < b_k = batch` splitting a batch into about one block
/// per thread (at least `min_rows` examples per block); `[0]` for an empty batch.
pub fn batch_bounds(batch: usize, min_rows: usize) -> Vec<usize> {
    if batch == 0 {
        return vec![0];
    }
    let threads = rayon::current_num_threads().max(1);
    let k = threads.min(batch.div_ceil(min_rows.max(1))).max(1);
    (0..=k).map(|c| c * batch / k).collect()
}

/// Split each step of a time-major `[steps, batch, width]` buffer at the example boundaries
/// `bounds`: `out[k][t]` is the rows of examples `bounds[k]..bounds[k+1]` at step `t`. The
/// blocks are disjoint, so each can go to its own thread.
pub fn split_time_major<'a>(
    buf: &'a mut [f32],
    batch: usize,
    width: usize,
    bounds: &[usize],
) -> Vec<Vec<&'a mut [f32]>> {
    let k = bounds.len().saturating_sub(1);
    let mut out: Vec<Vec<&'a mut [f32]>> = (0..k).map(|_| Vec::new()).collect();
    if batch == 0 || width == 0 {
        return out;
    }
    for step in buf.chunks_exact_mut(batch * width) {
        let mut rest = step;
        for (c, o) in out.iter_mut().enumerate() {
            let (a, b) = rest.split_at_mut((bounds[c + 1] - bounds[c]) * width);
            o.push(a);
            rest = b;
        }
    }
    out
}

/// Split a row-major `[batch, width]` buffer at the example boundaries `bounds`.
pub fn split_rows<'a>(buf: &'a mut [f32], width: usize, bounds: &[usize]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
    let mut rest = buf;
    for w in bounds.windows(2) {
        let (a, b) = rest.split_at_mut((w[1] - w[0]) * width);
        out.push(a);
        rest = b;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Symmetric Gram matrices
// ---------------------------------------------------------------------------------------------

/// Lower triangle of `M M^T` for a matrix whose rows are contiguous (`rows` rows of `cols`
/// values, row `t` at `data[t * rs..]`): `out[t * rows + s] = row_t . row_s` for `s <= t`. Tiles of
/// `R x R` row pairs accumulate `L`-lane partial dot products (a small GEMM microkernel), so each
/// loaded chunk of a row feeds `R` multiply-adds. Portable fallback of the intrinsic kernels below.
fn lower_gram_body<const R: usize, const L: usize>(
    data: &[f32],
    rows: usize,
    rs: usize,
    cols: usize,
    out: &mut [f32],
) {
    let kfull = cols / L * L;
    let row = |t: usize| &data[t * rs..t * rs + cols];
    let mut t0 = 0;
    while t0 < rows {
        // Partial tiles repeat the last row; the duplicates are computed but not stored.
        let ta: [&[f32]; R] = std::array::from_fn(|i| row((t0 + i).min(rows - 1)));
        let mut s0 = 0;
        while s0 <= t0 {
            let sa: [&[f32]; R] = std::array::from_fn(|j| row((s0 + j).min(rows - 1)));
            let mut acc = [[[0.0f32; L]; R]; R];
            let mut k = 0;
            while k < kfull {
                let av: [[f32; L]; R] = std::array::from_fn(|i| {
                    let mut v = [0.0f32; L];
                    v.copy_from_slice(&ta[i][k..k + L]);
                    v
                });
                let bv: [[f32; L]; R] = std::array::from_fn(|j| {
                    let mut v = [0.0f32; L];
                    v.copy_from_slice(&sa[j][k..k + L]);
                    v
                });
                for i in 0..R {
                    for j in 0..R {
                        for l in 0..L {
                            acc[i][j][l] += av[i][l] * bv[j][l];
                        }
                    }
                }
                k += L;
            }
            // Reduce the lanes with constant indices only, so the accumulators stay in registers.
            let sums: [[f32; R]; R] =
                std::array::from_fn(|i| std::array::from_fn(|j| acc[i][j].iter().sum::<f32>()));
            for i in 0..R {
                let t = t0 + i;
                for j in 0..R {
                    let s = s0 + j;
                    if t >= rows || s > t {
                        continue;
                    }
                    let mut v: f32 = sums[i][j];
                    for kk in kfull..cols {
                        v += ta[i][kk] * sa[j][kk];
                    }
                    out[t * rows + s] = v;
                }
            }
            s0 += R;
        }
        t0 += R;
    }
}

/// Bounds of a `rows x cols` matrix with contiguous rows `rs` apart inside a slice of `len`.
fn rows_in_bounds(len: usize, rows: usize, rs: usize, cols: usize) -> bool {
    rows == 0 || (rows - 1) * rs + cols <= len
}

/// `lower_gram_body` with AVX-512 intrinsics: a 4 x 4 tile of row pairs, 16 zmm accumulators kept
/// in registers by naming them (LLVM spills an accumulator array to the stack every iteration).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
fn lower_gram_avx512(data: &[f32], rows: usize, rs: usize, cols: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(rows_in_bounds(data.len(), rows, rs, cols) && out.len() >= rows * rows);
    let kfull = cols / 16 * 16;
    let row = |t: usize| &data[t * rs..t * rs + cols];
    let mut t0 = 0;
    while t0 < rows {
        let a = [0, 1, 2, 3].map(|i| row((t0 + i).min(rows - 1)));
        let mut s0 = 0;
        while s0 <= t0 {
            let b = [0, 1, 2, 3].map(|j| row((s0 + j).min(rows - 1)));
            let z = _mm512_setzero_ps();
            let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
            let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
            let (mut c20, mut c21, mut c22, mut c23) = (z, z, z, z);
            let (mut c30, mut c31, mut c32, mut c33) = (z, z, z, z);
            let mut k = 0;
            while k < cols {
                // The last chunk loads only the columns that exist (masked lanes read as 0).
                let mask: __mmask16 = if k < kfull {
                    0xffff
                } else {
                    (1u16 << (cols - k)) - 1
                };
                // SAFETY: the mask enables lanes k..min(k + 16, cols) only, all inside the rows.
                let ld = |r: &[f32]| unsafe { _mm512_maskz_loadu_ps(mask, r.as_ptr().add(k)) };
                let (a0, a1, a2, a3) = (ld(a[0]), ld(a[1]), ld(a[2]), ld(a[3]));
                let (b0, b1, b2, b3) = (ld(b[0]), ld(b[1]), ld(b[2]), ld(b[3]));
                c00 = _mm512_fmadd_ps(a0, b0, c00);
                c01 = _mm512_fmadd_ps(a0, b1, c01);
                c02 = _mm512_fmadd_ps(a0, b2, c02);
                c03 = _mm512_fmadd_ps(a0, b3, c03);
                c10 = _mm512_fmadd_ps(a1, b0, c10);
                c11 = _mm512_fmadd_ps(a1, b1, c11);
                c12 = _mm512_fmadd_ps(a1, b2, c12);
                c13 = _mm512_fmadd_ps(a1, b3, c13);
                c20 = _mm512_fmadd_ps(a2, b0, c20);
                c21 = _mm512_fmadd_ps(a2, b1, c21);
                c22 = _mm512_fmadd_ps(a2, b2, c22);
                c23 = _mm512_fmadd_ps(a2, b3, c23);
                c30 = _mm512_fmadd_ps(a3, b0, c30);
                c31 = _mm512_fmadd_ps(a3, b1, c31);
                c32 = _mm512_fmadd_ps(a3, b2, c32);
                c33 = _mm512_fmadd_ps(a3, b3, c33);
                k += 16;
            }
            // Four accumulators to four sums at once: fold 512 -> 128 bits each, then two levels
            // of horizontal adds (about half the instructions of four full reductions).
            let row4 = |w: __m512, x: __m512, y: __m512, z: __m512| -> [f32; 4] {
                let fold = |v: __m512| {
                    let h =
                        _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
                    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
                };
                let r = _mm_hadd_ps(_mm_hadd_ps(fold(w), fold(x)), _mm_hadd_ps(fold(y), fold(z)));
                let mut o = [0.0f32; 4];
                // SAFETY: `o` holds exactly the four floats stored.
                unsafe { _mm_storeu_ps(o.as_mut_ptr(), r) };
                o
            };
            let sums = [
                row4(c00, c01, c02, c03),
                row4(c10, c11, c12, c13),
                row4(c20, c21, c22, c23),
                row4(c30, c31, c32, c33),
            ];
            store_tile(&sums, &a, &b, t0, s0, rows, cols, cols, out);
            s0 += 4;
        }
        t0 += 4;
    }
}

/// `lower_gram_body` with AVX2 intrinsics: a 3 x 3 tile (9 ymm accumulators + 6 loads fit the 16
/// registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lower_gram_avx2(data: &[f32], rows: usize, rs: usize, cols: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(rows_in_bounds(data.len(), rows, rs, cols) && out.len() >= rows * rows);
    let row = |t: usize| &data[t * rs..t * rs + cols];
    let hsum = |v: __m256| {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
    };
    let mut t0 = 0;
    while t0 < rows {
        let a = [0, 1, 2].map(|i| row((t0 + i).min(rows - 1)));
        let mut s0 = 0;
        while s0 <= t0 {
            let b = [0, 1, 2].map(|j| row((s0 + j).min(rows - 1)));
            let z = _mm256_setzero_ps();
            let (mut c00, mut c01, mut c02) = (z, z, z);
            let (mut c10, mut c11, mut c12) = (z, z, z);
            let (mut c20, mut c21, mut c22) = (z, z, z);
            let mut k = 0;
            while k < cols {
                // The last chunk loads only the columns that exist (masked lanes read as 0).
                let n = (cols - k).min(8) as i32;
                let mask = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                // SAFETY: the mask enables lanes k..min(k + 8, cols) only, all inside the rows.
                let ld = |r: &[f32]| unsafe { _mm256_maskload_ps(r.as_ptr().add(k), mask) };
                let (a0, a1, a2) = (ld(a[0]), ld(a[1]), ld(a[2]));
                let (b0, b1, b2) = (ld(b[0]), ld(b[1]), ld(b[2]));
                c00 = _mm256_fmadd_ps(a0, b0, c00);
                c01 = _mm256_fmadd_ps(a0, b1, c01);
                c02 = _mm256_fmadd_ps(a0, b2, c02);
                c10 = _mm256_fmadd_ps(a1, b0, c10);
                c11 = _mm256_fmadd_ps(a1, b1, c11);
                c12 = _mm256_fmadd_ps(a1, b2, c12);
                c20 = _mm256_fmadd_ps(a2, b0, c20);
                c21 = _mm256_fmadd_ps(a2, b1, c21);
                c22 = _mm256_fmadd_ps(a2, b2, c22);
                k += 8;
            }
            let sums = [[c00, c01, c02], [c10, c11, c12], [c20, c21, c22]].map(|r| r.map(&hsum));
            store_tile(&sums, &a, &b, t0, s0, rows, cols, cols, out);
            s0 += 3;
        }
        t0 += 3;
    }
}

/// Finish an `R x R` Gram tile: add the columns past the vector lanes and store the entries that
/// exist and lie on or below the diagonal.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store_tile<const R: usize>(
    sums: &[[f32; R]; R],
    a: &[&[f32]; R],
    b: &[&[f32]; R],
    t0: usize,
    s0: usize,
    rows: usize,
    kfull: usize,
    cols: usize,
    out: &mut [f32],
) {
    for i in 0..R {
        let t = t0 + i;
        for j in 0..R {
            let s = s0 + j;
            if t >= rows || s > t {
                continue;
            }
            let mut v = sums[i][j];
            for k in kfull..cols {
                v += a[i][k] * b[j][k];
            }
            out[t * rows + s] = v;
        }
    }
}

/// Lower triangle of `M M^T` (`out` is `[rows, rows]`; entries above the diagonal are left as
/// they were). The per-example Grams of the norm rule are short and wide (T x 4H, T = 20..50):
/// computing only the lower triangle, without `gemm`'s packing, measured 2-5x faster than
/// `sgemm_serial(M, M^T)` on those shapes (T = 20..50, widths 32..800; AVX-512).
pub fn lower_gram(m: MatRef<'_>, out: &mut [f32]) {
    let (rows, cols) = (m.rows, m.cols);
    assert!(out.len() >= rows * rows);
    if rows == 0 {
        return;
    }
    if m.cs != 1 {
        sgemm_serial(MatMut::row_major(out, rows, rows), 0.0, m, m.t(), 1.0);
        return;
    }
    let data = m.data;
    let rs = m.rs;
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU supports every feature enabled on the kernel (checked).
            return unsafe { lower_gram_avx512(data, rows, rs, cols, out) };
        }
        if crate::compute::vmath::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { lower_gram_avx2(data, rows, rs, cols, out) };
        }
    }
    lower_gram_body::<2, 4>(data, rows, rs, cols, out)
}

/// `<A, B>` of two symmetric `[n, n]` matrices given by their lower triangles (f64 sum: the
/// result feeds a clip factor). `a` is read at offset `ao` (`a[(t + ao) * an + s + ao]`), which
/// lets W_hh use the trailing block of the shared G Gram.
fn sym_dot(a: &[f32], an: usize, ao: usize, b: &[f32], n: usize) -> f64 {
    let mut diag = 0.0f64;
    let mut off = 0.0f64;
    for t in 0..n {
        let ar = &a[(t + ao) * an + ao..(t + ao) * an + ao + t + 1];
        let br = &b[t * n..t * n + t + 1];
        diag += (ar[t] as f64) * (br[t] as f64);
        off += ar[..t]
            .iter()
            .zip(&br[..t])
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum::<f64>();
    }
    diag + 2.0 * off
}

// ---------------------------------------------------------------------------------------------
// Per-example norms of a recurrent layer's weight gradients
// ---------------------------------------------------------------------------------------------

/// The time-major buffers a recurrent layer's weight gradients are formed from: output
/// gradients `gx` (`[T, B, p]`, seen by W_ih) and optionally a different `gh` (seen by W_hh; the
/// LSTM's W_ih and W_hh see the same G, the GRU's differ in the n block), the input `x`
/// (`[T, B, d_x]`) and the hidden states `h` (`[T, B, d_h]`; W_hh pairs G's row t with `h_{t-1}`,
/// and `h_{-1} = 0`).
pub struct RecurrentGrads<'a> {
    pub steps: usize,
    pub batch: usize,
    pub p: usize,
    pub gx: &'a [f32],
    pub gh: Option<&'a [f32]>,
    pub x: &'a [f32],
    pub dx: usize,
    pub h: &'a [f32],
    pub dh: usize,
}

impl RecurrentGrads<'_> {
    fn view<'b>(buf: &'b [f32], i: usize, b: usize, t0: usize, n: usize, w: usize) -> MatRef<'b> {
        if n == 0 {
            return MatRef::new(&buf[..0], 0, w, b * w, 1);
        }
        MatRef::new(&buf[(t0 * b + i) * w..], n, w, b * w, 1)
    }
}

/// The cheaper per-example rule for a recurrent layer's weights (by estimated time within the
/// memory budget; see `choose_norm_rule`): W_ih and W_hh together are one `p x (d_x + d_h)`
/// outer product over T rows.
pub fn choose_recurrent_norm_rule(steps: usize, dx: usize, dh: usize, p: usize) -> NormRule {
    super::choose_norm_rule(steps, dx + dh, p, super::NORM_SCRATCH_BUDGET)
}

/// `out[i] += ||G_i^T X_i||_F^2 + ||Gh_i[1..]^T H_i[..T-1]||_F^2`: each example's squared norm of
/// the W_ih and W_hh gradients. Gram rule (Li et al. 2022's ghost norm / Bu et al.'s book-keeping
/// for sequences): `<G G^T, X X^T> + <Gh Gh^T, Hp Hp^T>`, with one G Gram shared by both weights
/// when `gh` is None; materialise rule: form both p x d products and sum their squares.
pub fn add_recurrent_weight_sq_norms(rule: NormRule, out: &mut [f32], g: &RecurrentGrads<'_>) {
    let (t, b, p) = (g.steps, g.batch, g.p);
    if t == 0 {
        return;
    }
    out.par_iter_mut()
        .enumerate()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, (i, o)| {
            let gx = RecurrentGrads::view(g.gx, i, b, 0, t, p);
            let x = RecurrentGrads::view(g.x, i, b, 0, t, g.dx);
            // W_hh: G rows 1..T against h rows 0..T-1.
            let gh = RecurrentGrads::view(g.gh.unwrap_or(g.gx), i, b, 1, t - 1, p);
            let hp = RecurrentGrads::view(g.h, i, b, 0, t - 1, g.dh);
            let s: f64 = match rule {
                NormRule::Gram => {
                    let tm = t - 1;
                    scratch.resize(2 * t * t + 2 * tm * tm, 0.0);
                    let (ggx, rest) = scratch.split_at_mut(t * t);
                    let (xx, rest) = rest.split_at_mut(t * t);
                    let (hh, ggh) = rest.split_at_mut(tm * tm);
                    lower_gram(gx, ggx);
                    lower_gram(x, xx);
                    lower_gram(hp, hh);
                    let mut s = sym_dot(ggx, t, 0, xx, t);
                    s += match g.gh {
                        // The W_hh Gram of G is the trailing (T-1) x (T-1) block of G's Gram.
                        None => sym_dot(ggx, t, 1, hh, tm),
                        Some(_) => {
                            lower_gram(gh, ggh);
                            sym_dot(ggh, tm, 0, hh, tm)
                        }
                    };
                    s
                }
                NormRule::Materialize => {
                    scratch.resize(p * g.dx.max(g.dh), 0.0);
                    let m = &mut scratch[..p * g.dx];
                    sgemm_serial(MatMut::row_major(m, p, g.dx), 0.0, gx.t(), x, 1.0);
                    let mut s = sum_sq(m);
                    let m = &mut scratch[..p * g.dh];
                    sgemm_serial(MatMut::row_major(m, p, g.dh), 0.0, gh.t(), hp, 1.0);
                    s += sum_sq(m);
                    s
                }
            };
            *o += s as f32;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::vmath;

    fn lcg(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn log_softmax_matches_f64() {
        let cols = 37;
        let mut x: Vec<f32> = lcg(5 * cols, 3).iter().map(|v| v * 20.0).collect();
        let want: Vec<f64> = x
            .chunks(cols)
            .flat_map(|r| {
                let m = r.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                let lz = m + r.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                r.iter().map(move |&v| v as f64 - lz).collect::<Vec<_>>()
            })
            .collect();
        log_softmax_rows(&mut x, cols);
        for (g, w) in x.iter().zip(&want) {
            // exp_approx is within 4e-7 relative; log-probs down to -40 keep ~1e-6 absolute.
            assert!((*g as f64 - w).abs() < 2e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn lstm_step_rows_matches_training_kernel() {
        // The in-place incremental kernel must equal the training kernel row for row.
        let (n, hd) = (3, 19);
        let pre = lcg(n * 4 * hd, 1);
        let c_prev = lcg(n * hd, 2);
        let mut gates = pre.clone();
        let zero_bias = vec![0.0; 4 * hd];
        let (mut c, mut tc, mut h) = (vec![0.0; n * hd], vec![0.0; n * hd], vec![0.0; n * hd]);
        lstm_forward_rows(&mut gates, &zero_bias, &c_prev, &mut c, &mut tc, &mut h, hd);
        // state rows: [pad(2), h, c, pad(1)]
        let width = 2 + 2 * hd + 1;
        let mut state = vec![0.0; n * width];
        for r in 0..n {
            state[r * width + 2 + hd..r * width + 2 + 2 * hd]
                .copy_from_slice(&c_prev[r * hd..(r + 1) * hd]);
        }
        lstm_step_rows(&pre, &mut state, width, 2, 2 + hd, hd);
        for r in 0..n {
            for j in 0..hd {
                assert_eq!(state[r * width + 2 + j], h[r * hd + j]);
                assert_eq!(state[r * width + 2 + hd + j], c[r * hd + j]);
                let t = vmath::tanh(c[r * hd + j]);
                assert_eq!(tc[r * hd + j], t);
            }
        }
    }

    #[test]
    fn lower_gram_matches_naive() {
        // Odd sizes: partial tiles and a lane tail on every instruction set.
        for (rows, cols, rs) in [(1, 3, 3), (7, 37, 40), (13, 800, 801), (50, 16, 16)] {
            let m = lcg(rows * rs, rows as u32);
            // The dispatched kernel, and every instruction set's tiling run as plain code.
            let mut outs = vec![vec![f32::NAN; rows * rows]; 4];
            lower_gram(MatRef::new(&m, rows, cols, rs, 1), &mut outs[0]);
            lower_gram_body::<2, 4>(&m, rows, rs, cols, &mut outs[1]);
            #[cfg(target_arch = "x86_64")]
            {
                if vmath::has_avx2_fma() {
                    // SAFETY: AVX2 and FMA are available (checked).
                    unsafe { lower_gram_avx2(&m, rows, rs, cols, &mut outs[2]) };
                } else {
                    outs[2] = outs[1].clone();
                }
                if has_avx512() {
                    // SAFETY: AVX-512 is available (checked).
                    unsafe { lower_gram_avx512(&m, rows, rs, cols, &mut outs[3]) };
                } else {
                    outs[3] = outs[1].clone();
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                outs[2] = outs[1].clone();
                outs[3] = outs[1].clone();
            }
            for out in &outs {
                for t in 0..rows {
                    for s in 0..=t {
                        let want: f64 = (0..cols)
                            .map(|k| m[t * rs + k] as f64 * m[s * rs + k] as f64)
                            .sum();
                        let got = out[t * rows + s] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{rows}x{cols} ({t},{s})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_matches_naive() {
        for (rows, cols) in [(0, 3), (5, 7), (37, 20), (800, 200)] {
            let src = lcg(rows * cols, 9);
            let mut dst = vec![0.0; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c]);
                }
            }
        }
    }

    #[test]
    fn buffer_pool_reuses_without_growing() {
        let pool = BufferPool::default();
        let mut a = pool.take(1000);
        a[999] = 7.0;
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(600);
        assert_eq!((b.len(), b.as_ptr()), (600, ptr));
        pool.give(b);
        let z = pool.take_zeroed(900);
        assert!(z.len() == 900 && z.iter().all(|&v| v == 0.0));
        for _ in 0..40 {
            pool.give(vec![1.0; 10]);
        }
        assert!(pool.lock().len() <= POOL_MAX_BUFFERS);
    }

    #[test]
    fn split_helpers_cover_the_buffer() {
        let (t, b, w) = (3, 5, 2);
        let mut buf: Vec<f32> = (0..t * b * w).map(|v| v as f32).collect();
        let bounds = vec![0, 2, 5];
        let parts = split_time_major(&mut buf, b, w, &bounds);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1][2], &[24.0, 25.0, 26.0, 27.0, 28.0, 29.0][..]);
        assert_eq!(parts[0][1], &[10.0, 11.0, 12.0, 13.0][..]);
        let bb = batch_bounds(7, 2);
        assert_eq!(*bb.first().unwrap(), 0);
        assert_eq!(*bb.last().unwrap(), 7);
        assert_eq!(batch_bounds(0, 4), vec![0]);
    }
}
