//! Softmax cross-entropy with a padding mask.
//!
//! Logits are `[B, V]` (one prediction per example) or `[T, B, V]` (a language model: one per
//! token). An example's loss is the *mean* cross-entropy (nats) over its unmasked rows, so its
//! scale does not depend on the window length and one clip bound C suits any T. The gradient
//! returned is that of the sum of per-example losses (see `layer.rs`).

use crate::compute::vmath;
use crate::error::{EngineError, Result};
use crate::tensor::{Tensor, example_of_row};

/// Per-example losses and the gradient w.r.t. the logits.
pub struct LossOutput {
    pub per_example: Vec<f32>,
    pub dlogits: Tensor,
    /// Unmasked rows whose argmax equals the target.
    pub correct: usize,
    /// Unmasked rows.
    pub counted: usize,
}

crate::simd_kernel! {
    /// Softmax of one row in place; returns log(sum(exp(x - max))) + max, the log-partition.
    fn softmax_row(row: &mut [f32], out_logz: &mut f32) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for v in row.iter_mut() {
            *v = vmath::exp_approx(*v - m);
            s += *v;
        }
        let inv = 1.0 / s;
        for v in row.iter_mut() {
            *v *= inv;
        }
        *out_logz = m + s.ln();
    }
}

/// Softmax cross-entropy. `targets` and `mask` have one entry per logits row (time-major for
/// sequences); mask 0 marks padding.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    targets: &[u32],
    mask: Option<&[f32]>,
) -> Result<LossOutput> {
    let v = logits.last_dim();
    let rows = logits.rows();
    let b = logits.batch();
    if targets.len() != rows {
        return Err(EngineError::Shape(format!(
            "{} targets for {rows} prediction rows",
            targets.len()
        )));
    }
    if let Some(m) = mask
        && m.len() != rows
    {
        return Err(EngineError::Shape(format!(
            "mask of {} entries for {rows} prediction rows",
            m.len()
        )));
    }
    if let Some((r, &t)) = targets.iter().enumerate().find(|(_, t)| **t as usize >= v) {
        return Err(EngineError::Shape(format!(
            "target {t} at row {r} is outside the {v} classes"
        )));
    }
    let weight = |r: usize| mask.map_or(1.0, |m| m[r]);
    let mut count = vec![0.0f32; b];
    for r in 0..rows {
        count[example_of_row(&logits.shape, r)] += weight(r);
    }
    let mut d = logits.clone();
    let mut per_example = vec![0.0f32; b];
    let mut correct = 0;
    let mut counted = 0;
    for (r, row) in d.data.chunks_mut(v.max(1)).enumerate() {
        let w = weight(r);
        let ex = example_of_row(&logits.shape, r);
        let t = targets[r] as usize;
        if w == 0.0 {
            row.fill(0.0);
            continue;
        }
        let orig = &logits.data[r * v..(r + 1) * v];
        let arg = orig
            .iter()
            .enumerate()
            .fold(0, |best, (j, &x)| if x > orig[best] { j } else { best });
        counted += 1;
        if arg == t {
            correct += 1;
        }
        let mut logz = 0.0;
        softmax_row(row, &mut logz);
        let scale = w / count[ex];
        per_example[ex] += scale * (logz - orig[t]);
        row[t] -= 1.0;
        for x in row.iter_mut() {
            *x *= scale;
        }
    }
    Ok(LossOutput {
        per_example,
        dlogits: d,
        correct,
        counted,
    })
}

/// f64 reference of the summed per-example loss, for finite-difference oracles.
pub fn reference_loss(
    logits: &[f64],
    shape: &[usize],
    targets: &[u32],
    mask: Option<&[f32]>,
) -> f64 {
    let v = *shape.last().unwrap();
    let rows = logits.len() / v;
    let b = if shape.len() == 3 { shape[1] } else { shape[0] };
    let weight = |r: usize| mask.map_or(1.0, |m| m[r] as f64);
    let mut count = vec![0.0f64; b];
    for r in 0..rows {
        count[example_of_row(shape, r)] += weight(r);
    }
    let mut total = 0.0;
    for r in 0..rows {
        let w = weight(r);
        if w == 0.0 {
            continue;
        }
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let logz = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        total += w / count[example_of_row(shape, r)] * (logz - row[targets[r] as usize]);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_tensor;

    #[test]
    fn gradient_matches_finite_differences_with_mask() {
        let logits = random_tensor(&[4, 3, 7], 2);
        let targets: Vec<u32> = (0..12).map(|i| (i * 5 % 7) as u32).collect();
        let mask: Vec<f32> = (0..12)
            .map(|i| if i % 5 == 4 { 0.0 } else { 1.0 })
            .collect();
        let out = softmax_cross_entropy(&logits, &targets, Some(&mask)).unwrap();
        let l64: Vec<f64> = logits.data.iter().map(|&x| x as f64).collect();
        let total = reference_loss(&l64, &logits.shape, &targets, Some(&mask));
        let got: f64 = out.per_example.iter().map(|&x| x as f64).sum();
        assert!((got - total).abs() < 1e-5 * total.abs().max(1.0));
        let h = 1e-6;
        for k in 0..l64.len() {
            let mut p = l64.clone();
            p[k] += h;
            let a = reference_loss(&p, &logits.shape, &targets, Some(&mask));
            p[k] -= 2.0 * h;
            let b = reference_loss(&p, &logits.shape, &targets, Some(&mask));
            let fd = (a - b) / (2.0 * h);
            assert!(
                (fd - out.dlogits.data[k] as f64).abs() < 1e-5,
                "coord {k}: {fd} vs {}",
                out.dlogits.data[k]
            );
        }
    }

    #[test]
    fn bad_targets_are_errors() {
        let logits = random_tensor(&[2, 3], 1);
        assert!(softmax_cross_entropy(&logits, &[0, 3], None).is_err());
        assert!(softmax_cross_entropy(&logits, &[0], None).is_err());
    }
}
