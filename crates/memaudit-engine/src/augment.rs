//! Training-time data augmentation: random image shifts (`--augment shift`).
//!
//! Each training example of each step is shifted by (dy, dx), drawn uniformly from
//! [-max, max]^2 (the identity included), with zero padding where the image moves away from an
//! edge. The shift is a function of (run seed, global step, example index): a seeded run is
//! reproducible, shardable and resumable, and two epochs show an example with different shifts.
//!
//! Augmentation is applied to the batch **before** the model computes per-example gradients, so
//! under DP-SGD each sampled example still contributes exactly one clipped gradient per step:
//! the sensitivity, the sampling rate and therefore the accountant are unchanged.
//!
//! Membership inference queries the same transformations ([`ShiftAugment::queries`]): query 0 is
//! the identity, then the non-zero shifts nearest to it.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::layer::Value;
use crate::model::Batch;
use crate::sampler::mix_seed;

/// Stream tag of the augmentation draws (apart from the trainer's other per-step streams).
const AUGMENT_STREAM: u64 = 4_000_000;

/// Random shifts of images stored as dense rows of `channels x height x width` values
/// (channel-major, as the image loaders write them; an MLP's flattened input included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftAugment {
    /// Largest shift in pixels along each axis (2 for `--augment shift`).
    pub max_shift: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ShiftAugment {
    /// `--augment shift`: shifts of +-2 pixels.
    pub const DEFAULT_MAX_SHIFT: usize = 2;

    pub fn new(max_shift: usize, channels: usize, height: usize, width: usize) -> Result<Self> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(EngineError::Config(format!(
                "shift augmentation needs an image shape, got {channels}x{height}x{width}"
            )));
        }
        if max_shift == 0 || max_shift >= height.min(width) {
            return Err(EngineError::Config(format!(
                "a shift of {max_shift} pixels must be between 1 and the image side minus 1 ({}x{})",
                height, width
            )));
        }
        Ok(Self {
            max_shift,
            channels,
            height,
            width,
        })
    }

    /// Values per example.
    pub fn example_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The shift (dy, dx) of dataset example `example` at global step `step` of a run seeded
    /// `seed`: uniform on [-max, max]^2.
    pub fn shift_for(&self, seed: u64, step: u64, example: usize) -> (i64, i64) {
        let side = 2 * self.max_shift as u64 + 1;
        let r = mix_seed(
            mix_seed(mix_seed(seed, AUGMENT_STREAM), step),
            example as u64,
        );
        // side^2 <= a few hundred: the modulo bias over 2^64 is negligible.
        let k = r % (side * side);
        let m = self.max_shift as i64;
        ((k / side) as i64 - m, (k % side) as i64 - m)
    }

    /// Shift one example's values by (dy, dx): out[c, y, x] = in[c, y - dy, x - dx], zero where
    /// that falls outside the image.
    pub fn shift_into(&self, input: &[f32], dy: i64, dx: i64, out: &mut [f32]) {
        let (h, w) = (self.height as i64, self.width as i64);
        out.fill(0.0);
        for c in 0..self.channels {
            let plane = c * self.height * self.width;
            for y in 0..h {
                let sy = y - dy;
                if sy < 0 || sy >= h {
                    continue;
                }
                // The destination columns whose source column lies inside the image.
                let x0 = dx.max(0);
                let x1 = (w + dx).min(w);
                if x0 >= x1 {
                    continue;
                }
                let dst = plane + (y * w + x0) as usize;
                let src = plane + (sy * w + x0 - dx) as usize;
                let len = (x1 - x0) as usize;
                out[dst..dst + len].copy_from_slice(&input[src..src + len]);
            }
        }
    }

    /// Shift every example of a training batch in place; `examples[r]` is row r's index in the
    /// training set (so the draw is the same however the step is chunked).
    pub fn apply(&self, batch: &mut Batch, seed: u64, step: u64, examples: &[usize]) -> Result<()> {
        let Value::Dense(t) = &mut batch.input else {
            return Err(EngineError::Config(
                "shift augmentation applies to dense image inputs only".into(),
            ));
        };
        let len = self.example_len();
        if t.data.len() != examples.len() * len {
            return Err(EngineError::Config(format!(
                "shift augmentation for {}x{}x{} images got {} values for {} examples",
                self.channels,
                self.height,
                self.width,
                t.data.len(),
                examples.len()
            )));
        }
        let mut row = vec![0.0f32; len];
        for (r, &ex) in examples.iter().enumerate() {
            let (dy, dx) = self.shift_for(seed, step, ex);
            if (dy, dx) == (0, 0) {
                continue;
            }
            let slot = &mut t.data[r * len..(r + 1) * len];
            self.shift_into(slot, dy, dx, &mut row);
            slot.copy_from_slice(&row);
        }
        Ok(())
    }

    /// Every shift of [-max, max]^2 in query order: the identity first, then by distance
    /// (largest |d| along an axis, then |dy| + |dx|), then row-major. A membership query set is
    /// a prefix of this list.
    pub fn queries(&self) -> Vec<(i64, i64)> {
        let m = self.max_shift as i64;
        let mut all: Vec<(i64, i64)> = (-m..=m)
            .flat_map(|dy| (-m..=m).map(move |dx| (dy, dx)))
            .collect();
        all.sort_by_key(|&(dy, dx)| (dy.abs().max(dx.abs()), dy.abs() + dx.abs(), dy, dx));
        all
    }

    /// The batch with every example shifted by (dy, dx) (a membership query).
    pub fn shifted(&self, batch: &Batch, dy: i64, dx: i64) -> Result<Batch> {
        let Value::Dense(t) = &batch.input else {
            return Err(EngineError::Config(
                "shift queries apply to dense image inputs only".into(),
            ));
        };
        let len = self.example_len();
        if len == 0 || t.data.len() % len != 0 {
            return Err(EngineError::Config(format!(
                "shift queries for {}x{}x{} images got {} values",
                self.channels,
                self.height,
                self.width,
                t.data.len()
            )));
        }
        let mut out = t.clone();
        for (src, dst) in t.data.chunks(len).zip(out.data.chunks_mut(len)) {
            self.shift_into(src, dy, dx, dst);
        }
        Ok(Batch {
            input: Value::Dense(out),
            targets: batch.targets.clone(),
            mask: batch.mask.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn aug() -> ShiftAugment {
        ShiftAugment::new(2, 1, 4, 5).unwrap()
    }

    #[test]
    fn a_shift_moves_pixels_and_pads_with_zeros() {
        let a = aug();
        let img: Vec<f32> = (1..=20).map(|v| v as f32).collect();
        let mut out = vec![9.0; 20];
        // Down 1, left 2: out[y][x] = in[y-1][x+2].
        a.shift_into(&img, 1, -2, &mut out);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0, 0.0,
            3.0, 4.0, 5.0, 0.0, 0.0,
            8.0, 9.0, 10.0, 0.0, 0.0,
            13.0, 14.0, 15.0, 0.0, 0.0,
        ];
        assert_eq!(out, want);
        a.shift_into(&img, 0, 0, &mut out);
        assert_eq!(out, img);
        // Two channels shift alike, each within its own plane.
        let two = ShiftAugment::new(1, 2, 2, 2).unwrap();
        let mut out = vec![0.0; 8];
        two.shift_into(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 0, 1, &mut out);
        assert_eq!(out, [0.0, 1.0, 0.0, 3.0, 0.0, 5.0, 0.0, 7.0]);
    }

    #[test]
    fn draws_are_seeded_per_step_and_example_and_cover_every_shift() {
        let a = aug();
        assert_eq!(a.shift_for(7, 3, 11), a.shift_for(7, 3, 11));
        let mut seen = std::collections::HashSet::new();
        let mut differ = 0;
        for ex in 0..2000 {
            let s = a.shift_for(7, 3, ex);
            assert!(s.0.abs() <= 2 && s.1.abs() <= 2);
            seen.insert(s);
            differ += usize::from(s != a.shift_for(7, 4, ex));
        }
        // 25 shifts, 2000 uniform draws: each is missed with probability (24/25)^2000 ~ 1e-36.
        assert_eq!(seen.len(), 25);
        // Another step redraws: the same shift again with probability 1/25 (~80 of 2000).
        assert!(differ > 1700, "{differ}");
    }

    #[test]
    fn apply_is_the_same_however_a_step_is_chunked() {
        let a = aug();
        let rows: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let batch = |lo: usize, hi: usize| Batch {
            input: Value::Dense(
                Tensor::new(rows[lo * 20..hi * 20].to_vec(), vec![hi - lo, 20]).unwrap(),
            ),
            targets: vec![0; hi - lo],
            mask: None,
        };
        let mut whole = batch(0, 3);
        a.apply(&mut whole, 1, 5, &[10, 11, 12]).unwrap();
        let mut first = batch(0, 1);
        let mut rest = batch(1, 3);
        a.apply(&mut first, 1, 5, &[10]).unwrap();
        a.apply(&mut rest, 1, 5, &[11, 12]).unwrap();
        let Value::Dense(w) = &whole.input else {
            unreachable!()
        };
        let (Value::Dense(f), Value::Dense(r)) = (&first.input, &rest.input) else {
            unreachable!()
        };
        assert_eq!(w.data[..20], f.data[..]);
        assert_eq!(w.data[20..], r.data[..]);
        // A wrong geometry is an error, not a silent misread.
        let mut bad = batch(0, 3);
        assert!(a.apply(&mut bad, 1, 5, &[1, 2]).is_err());
    }

    #[test]
    fn queries_start_with_the_identity_and_list_each_shift_once() {
        let q = aug().queries();
        assert_eq!(q.len(), 25);
        assert_eq!(q[0], (0, 0));
        // The 8 one-pixel neighbours come next.
        assert!(q[1..9].iter().all(|s| s.0.abs() <= 1 && s.1.abs() <= 1));
        let set: std::collections::HashSet<_> = q.iter().collect();
        assert_eq!(set.len(), 25);
        assert!(ShiftAugment::new(2, 1, 2, 2).is_err());
        assert!(ShiftAugment::new(0, 1, 28, 28).is_err());
    }
}
