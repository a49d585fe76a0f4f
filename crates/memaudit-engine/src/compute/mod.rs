//! The compute interface: everything heavy that layers do goes through these functions.
//!
//! - `sgemm` over strided views (transposes are free: swap the strides);
//! - per-example squared gradient norms by the Gram identity or by materialising `G_i^T A_i`;
//! - row norms, row scaling, and fused elementwise kernels (`vmath`).
//!
//! There is one implementation, for the CPU: the `gemm` crate (runtime-dispatched AVX2/AVX-512
//! microkernels) and rayon. Layers never loop over matrix elements themselves for anything
//! O(n^3), but they do run their own O(n) loops (normalisation, activations, dropout, the
//! embedding's scatter) on host `Vec<f32>`s, so this module is not a device seam: a GPU backend
//! needs device storage behind `Tensor` and those loops as operations too (docs/engine.md,
//! "A CPU engine").

pub mod conv;
pub mod rnn;
pub mod vmath;

use rayon::prelude::*;

use crate::tensor::{MatMut, MatRef};

/// Below this many multiply-adds a GEMM runs on the calling thread: rayon's fork/join costs more
/// than it saves on small products.
const PARALLEL_GEMM_FLOPS: usize = 96 * 96 * 96;

/// `dst = dst_scale * dst + ab_scale * a * b`. With `dst_scale == 0` the old contents of `dst` are
/// ignored (may be uninitialised garbage or NaN).
pub fn sgemm(dst: MatMut<'_>, dst_scale: f32, a: MatRef<'_>, b: MatRef<'_>, ab_scale: f32) {
    sgemm_with(dst, dst_scale, a, b, ab_scale, true)
}

/// As `sgemm`, on the calling thread only (for use inside a parallel loop over examples).
pub fn sgemm_serial(dst: MatMut<'_>, dst_scale: f32, a: MatRef<'_>, b: MatRef<'_>, ab_scale: f32) {
    sgemm_with(dst, dst_scale, a, b, ab_scale, false)
}

fn sgemm_with(
    dst: MatMut<'_>,
    dst_scale: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    ab_scale: f32,
    allow_parallel: bool,
) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    assert_eq!(a.rows, m, "sgemm: lhs rows {} != dst rows {}", a.rows, m);
    assert_eq!(b.cols, n, "sgemm: rhs cols {} != dst cols {}", b.cols, n);
    assert_eq!(b.rows, k, "sgemm: rhs rows {} != lhs cols {}", b.rows, k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_view(dst, dst_scale);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if allow_parallel && threads > 1 && m * n * k >= PARALLEL_GEMM_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views were bounds-checked at construction (every element they address lies in
    // their slices); `dst` is a unique borrow, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            dst_scale != 0.0,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            dst_scale,
            ab_scale,
            false,
            false,
            false,
            par,
        );
    }
}

fn scale_view(dst: MatMut<'_>, s: f32) {
    for i in 0..dst.rows {
        for j in 0..dst.cols {
            let v = &mut dst.data[i * dst.rs + j * dst.cs];
            *v = if s == 0.0 { 0.0 } else { *v * s };
        }
    }
}

/// Squared L2 norm of each row of `a`, added into `out`.
pub fn add_row_sq_norms(a: MatRef<'_>, out: &mut [f32]) {
    assert_eq!(out.len(), a.rows);
    for (i, o) in out.iter_mut().enumerate() {
        let mut s = 0.0f32;
        for j in 0..a.cols {
            let v = a.at(i, j);
            s += v * v;
        }
        *o += s;
    }
}

/// Sum of squares of a slice, accumulated in f64 (the result feeds a clip factor).
pub fn sum_sq(x: &[f32]) -> f64 {
    // Four f32 lanes of partial sums vectorise; promote once per chunk.
    x.chunks(256)
        .map(|c| c.iter().map(|v| v * v).sum::<f32>() as f64)
        .sum()
}

/// Multiply row `r` of the row-major `[rows, cols]` matrix `x` by `scale[example(r)]`.
pub fn scale_rows_by_example(x: &mut [f32], cols: usize, examples_per_step: usize, scale: &[f32]) {
    if cols == 0 {
        return;
    }
    for (r, row) in x.chunks_mut(cols).enumerate() {
        let s = scale[r % examples_per_step];
        for v in row {
            *v *= s;
        }
    }
}

/// How a layer computes its per-example weight-gradient norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormRule {
    /// `||G_i^T A_i||_F^2 = <G_i G_i^T, A_i A_i^T>`: two T x T Grams per example.
    Gram,
    /// Form `G_i^T A_i` (p x d) and take its squared Frobenius norm.
    Materialize,
}

/// Per-thread memory budget for the scratch of one example's norm (bytes).
pub const NORM_SCRATCH_BUDGET: usize = 64 << 20;

/// Choose the cheaper rule by estimated time (multiply-adds per example) among those whose
/// per-example scratch fits `budget` bytes.
///
/// Gram: `T^2 (d + p)` time, `2 T^2` floats. Materialise: `T d p` time, `d p` floats. Bu et al.'s
/// book-keeping rule (Grams when `2 T^2 <= d p`) compares memory only; time is what we pay per step
/// (e.g. the 2x200 char LM's output layer, T = 50, d = 200, p = 60, materialises).
pub fn choose_norm_rule(t: usize, d: usize, p: usize, budget: usize) -> NormRule {
    let gram_time = t * t * (d + p);
    let mat_time = t * d * p;
    let gram_fits = 2 * t * t * 4 <= budget;
    let mat_fits = d * p * 4 <= budget;
    match (gram_fits, mat_fits) {
        (true, true) => {
            if gram_time < mat_time {
                NormRule::Gram
            } else {
                NormRule::Materialize
            }
        }
        (true, false) => NormRule::Gram,
        _ => NormRule::Materialize,
    }
}

/// `out[i] += ||G_i^T A_i||_F^2` for every example `i`, where `g(i)` is example i's `[T, p]` view
/// of the output gradient and `a(i)` its `[T, d]` view of the layer input.
pub fn add_per_example_outer_sq_norms<'g, 'a, FG, FA>(rule: NormRule, out: &mut [f32], g: FG, a: FA)
where
    FG: Fn(usize) -> MatRef<'g> + Sync,
    FA: Fn(usize) -> MatRef<'a> + Sync,
{
    out.par_iter_mut()
        .enumerate()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, (i, o)| {
            let gi = g(i);
            let ai = a(i);
            debug_assert_eq!(gi.rows, ai.rows);
            let t = gi.rows;
            if t == 0 {
                return;
            }
            match rule {
                NormRule::Gram => {
                    scratch.resize(2 * t * t, 0.0);
                    let (gg, aa) = scratch.split_at_mut(t * t);
                    sgemm_serial(MatMut::row_major(gg, t, t), 0.0, gi, gi.t(), 1.0);
                    sgemm_serial(MatMut::row_major(aa, t, t), 0.0, ai, ai.t(), 1.0);
                    let s: f64 = gg
                        .iter()
                        .zip(aa.iter())
                        .map(|(x, y)| (*x as f64) * (*y as f64))
                        .sum();
                    *o += s as f32;
                }
                NormRule::Materialize => {
                    let (p, d) = (gi.cols, ai.cols);
                    scratch.resize(p * d, 0.0);
                    sgemm_serial(MatMut::row_major(scratch, p, d), 0.0, gi.t(), ai, 1.0);
                    *o += sum_sq(scratch) as f32;
                }
            }
        });
}

/// `out[i] += ||sum_t G_i[t, :]||^2`: the per-example norm of a bias shared across the T rows.
pub fn add_per_example_bias_sq_norms<'g, FG>(out: &mut [f32], g: FG)
where
    FG: Fn(usize) -> MatRef<'g> + Sync,
{
    out.par_iter_mut()
        .enumerate()
        .for_each_init(Vec::new, |acc: &mut Vec<f32>, (i, o)| {
            let gi = g(i);
            acc.clear();
            acc.resize(gi.cols, 0.0);
            for t in 0..gi.rows {
                for (j, v) in acc.iter_mut().enumerate() {
                    *v += gi.at(t, j);
                }
            }
            *o += sum_sq(acc) as f32;
        });
}

/// `dst[j] += sum_r scale(r) * x[r, j]` over the rows of a row-major matrix (bias gradients).
pub fn add_col_sums(dst: &mut [f32], x: &[f32], scale: Option<&dyn Fn(usize) -> f32>) {
    let cols = dst.len();
    if cols == 0 {
        return;
    }
    for (r, row) in x.chunks(cols).enumerate() {
        let s = scale.map_or(1.0, |f| f(r));
        if s == 0.0 {
            continue;
        }
        for (d, v) in dst.iter_mut().zip(row) {
            *d += s * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    c[i * n + j] += a[i * k + l] * b[l * n + j];
                }
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![1.0; m * n];
        sgemm(
            MatMut::row_major(&mut c, m, n),
            1.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            2.0,
        );
        for (x, y) in c.iter().zip(&want) {
            assert!((x - (1.0 + 2.0 * y)).abs() < 1e-5);
        }
        // (B^T A^T)^T = A B, via transposed views of the same buffers.
        let mut ct = vec![0.0; n * m];
        sgemm(
            MatMut::row_major(&mut ct, n, m),
            0.0,
            MatRef::row_major(&b, k, n).t(),
            MatRef::row_major(&a, m, k).t(),
            1.0,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gram_and_materialize_agree() {
        let (t, b, p, d) = (6, 3, 4, 5);
        let g: Vec<f32> = (0..t * b * p).map(|i| (i as f32 * 0.7).sin()).collect();
        let a: Vec<f32> = (0..t * b * d).map(|i| (i as f32 * 0.3).cos()).collect();
        let view_g = |i: usize| MatRef::new(&g[i * p..], t, p, b * p, 1);
        let view_a = |i: usize| MatRef::new(&a[i * d..], t, d, b * d, 1);
        let mut n1 = vec![0.0; b];
        let mut n2 = vec![0.0; b];
        add_per_example_outer_sq_norms(NormRule::Gram, &mut n1, view_g, view_a);
        add_per_example_outer_sq_norms(NormRule::Materialize, &mut n2, view_g, view_a);
        for i in 0..b {
            // brute force
            let mut w = vec![0.0f64; p * d];
            for tt in 0..t {
                for x in 0..p {
                    for y in 0..d {
                        w[x * d + y] +=
                            g[(tt * b + i) * p + x] as f64 * a[(tt * b + i) * d + y] as f64;
                    }
                }
            }
            let want: f64 = w.iter().map(|v| v * v).sum();
            assert!(((n1[i] as f64) - want).abs() < 1e-4 * want.max(1.0));
            assert!(((n2[i] as f64) - want).abs() < 1e-4 * want.max(1.0));
        }
    }

    #[test]
    fn norm_rule_prefers_cheaper_time() {
        // 2x200 char LM output layer: T=50, d=200, p=60 -> materialise.
        assert_eq!(
            choose_norm_rule(50, 200, 60, NORM_SCRATCH_BUDGET),
            NormRule::Materialize
        );
        // LSTM W_hh: T=20, d=200, p=800 -> Gram.
        assert_eq!(
            choose_norm_rule(20, 200, 800, NORM_SCRATCH_BUDGET),
            NormRule::Gram
        );
        // A budget too small for the materialised gradient forces the Gram.
        assert_eq!(choose_norm_rule(50, 200, 60, 30_000), NormRule::Gram);
    }
}
