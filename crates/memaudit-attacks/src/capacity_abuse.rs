//! Capacity abuse (Song, Ristenpart, Shmatikov, "Machine Learning Models that Remember Too Much",
//! CCS 2017, attack D, black box; the authors' `attack.py::mal_data_synthesis`,
//! `test_model.py::test_cap_reconstruction`): the attacker adds synthetic inputs, regenerable
//! from a seed, whose *labels* spell the secret; after deployment it queries the model on the
//! regenerated inputs and reads the secret off the predicted labels.
//!
//! Two label schemes:
//! - [`LabelScheme::Bits`] (the paper's description): each label carries the next
//!   `floor(log2 c)` secret bits, MSB-first (c = number of classes).
//! - [`LabelScheme::NibblePairs`] (the authors' CIFAR-10 code): each pixel keeps its high 4 bits
//!   `q = pixel >> 4`, sent as two labels `(q / 2, q - q / 2)` (each in `0..=8`, so `c >= 9`);
//!   decoded as `(label0 + label1) * 16`. Lossy by design (4 of 8 bits), 2 bits per query.
//!
//! Two input generators (the model's input size `height x width`, one channel):
//! - [`SyntheticInputs::SparseMarkers`], the authors' code adapted to one gray channel: input t,
//!   with `k = t mod 2`, `p = (t / 2) mod (h·w)`, `q = t / (2·h·w)`, is all zeros except
//!   `x[p] = q + 1` and `x[(p + 1) mod h·w] = k + 1` (the authors spread q over 3 colour channels
//!   as `x[q mod 3, p] = q / 3 + 1`; with one channel the intensity alone names q). For the
//!   nibble-pair scheme this is exactly their layout: q is the image, p the pixel, k which of the
//!   pair. The values are raw (up to the number of images), not scaled to the data's range, as
//!   in the authors' code. Caveat: a model that normalises each example (GroupNorm after the
//!   first layer) sees mostly the *ratio* `(q+1)/(k+1)`, which is not unique; prefer noise there.
//! - [`SyntheticInputs::SeededNoise`] (the paper's "GenData"): i.i.d. uniform `[0, 1)` pixels from
//!   ChaCha8 seeded with the attacker's seed, stream t, so any input regenerates on its own and
//!   lives on the data's pixel range.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bits::{push_uint, read_uint};
use crate::error::{AttackError, Result, ensure_fits};
use crate::secret::ImageSecret;

/// How a secret becomes labels (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LabelScheme {
    Bits,
    NibblePairs,
}

/// How the synthetic inputs are generated (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SyntheticInputs {
    SparseMarkers,
    SeededNoise { seed: u64 },
}

/// The labelled synthetic examples to add to the training set.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSet {
    pub height: usize,
    pub width: usize,
    /// `len() * height * width` pixels, input after input, row-major.
    pub inputs: Vec<f32>,
    pub labels: Vec<u32>,
}

impl SyntheticSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Input `t`.
    pub fn input(&self, t: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.inputs[t * n..(t + 1) * n]
    }
}

/// What the decoder read off the model's predicted labels.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityDecode<T> {
    pub secret: T,
    /// Predicted labels the scheme never emits (e.g. 9 under nibble pairs), clamped to the
    /// largest valid label.
    pub invalid_labels: usize,
}

/// A capacity-abuse attack against a `num_classes`-way classifier of `height x width` gray
/// inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CapacityAbuse {
    num_classes: usize,
    scheme: LabelScheme,
    inputs: SyntheticInputs,
    height: usize,
    width: usize,
}

impl CapacityAbuse {
    /// Errors: fewer than 2 classes, nibble pairs with fewer than 9 classes, an empty input size,
    /// or sparse markers on inputs of fewer than 3 pixels (markers would collide).
    pub fn new(
        num_classes: usize,
        scheme: LabelScheme,
        inputs: SyntheticInputs,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        if num_classes < 2 {
            return Err(AttackError::InvalidClasses {
                classes: num_classes,
                reason: "a label must be able to take at least 2 values to carry a bit".into(),
            });
        }
        if scheme == LabelScheme::NibblePairs && num_classes < 9 {
            return Err(AttackError::InvalidClasses {
                classes: num_classes,
                reason: "the nibble-pair scheme needs labels 0..=8 (at least 9 classes); use LabelScheme::Bits".into(),
            });
        }
        if height == 0 || width == 0 {
            return Err(AttackError::InvalidSecret(format!(
                "synthetic inputs of {height}x{width} pixels"
            )));
        }
        if inputs == SyntheticInputs::SparseMarkers && height * width < 3 {
            return Err(AttackError::InvalidSecret(format!(
                "sparse markers need inputs of at least 3 pixels to stay distinct, got {height}x{width}"
            )));
        }
        Ok(CapacityAbuse {
            num_classes,
            scheme,
            inputs,
            height,
            width,
        })
    }

    pub fn scheme(&self) -> LabelScheme {
        self.scheme
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Secret bits one query recovers: `floor(log2 c)` for [`LabelScheme::Bits`], 2 for nibble
    /// pairs (4 of each pixel's 8 bits over 2 queries).
    pub fn bits_per_query(&self) -> u32 {
        match self.scheme {
            LabelScheme::Bits => self.bits_per_label(),
            LabelScheme::NibblePairs => 2,
        }
    }

    fn bits_per_label(&self) -> u32 {
        usize::BITS - 1 - self.num_classes.leading_zeros()
    }

    /// Synthetic inputs (= queries) needed for `n` images of `height x width` pixels.
    pub fn queries_for_images(&self, n: usize, height: usize, width: usize) -> usize {
        let pixels = n * height * width;
        match self.scheme {
            LabelScheme::Bits => (pixels * 8).div_ceil(self.bits_per_label() as usize),
            LabelScheme::NibblePairs => 2 * pixels,
        }
    }

    /// Synthetic inputs needed for `n_bits` secret bits (bits scheme).
    pub fn queries_for_bits(&self, n_bits: usize) -> usize {
        n_bits.div_ceil(self.bits_per_label() as usize)
    }

    /// Whole `height x width` images that `query_budget` synthetic inputs carry. With the
    /// authors' CIFAR-10 numbers (nibble pairs, 32x32, budget `p · 2 · 50000`) this is 4, 24 and
    /// 48 images for p = 0.1, 0.5, 1.0.
    pub fn max_images(&self, query_budget: usize, height: usize, width: usize) -> usize {
        query_budget
            .checked_div(self.queries_for_images(1, height, width))
            .unwrap_or(0)
    }

    fn carried_bits(&self, queries: usize) -> u64 {
        queries as u64 * u64::from(self.bits_per_query())
    }

    fn check_budget(&self, queries: usize, budget: Option<usize>, what: &str) -> Result<()> {
        if let Some(budget) = budget {
            ensure_fits(
                self.carried_bits(queries),
                self.carried_bits(budget),
                "bits",
                format!(
                    "{budget} synthetic inputs x {} bits per query ({what})",
                    self.bits_per_query()
                ),
            )?;
        }
        Ok(())
    }

    /// Labels and regenerated inputs encoding the images of `secret`. `query_budget` caps the
    /// number of synthetic inputs (e.g. a fraction of the training set); exceeding it is an
    /// error that says how many bits fit.
    pub fn encode_images(
        &self,
        secret: &ImageSecret,
        query_budget: Option<usize>,
    ) -> Result<SyntheticSet> {
        let queries = self.queries_for_images(secret.n_images(), secret.height(), secret.width());
        self.check_budget(queries, query_budget, "capacity abuse")?;
        let labels = match self.scheme {
            LabelScheme::Bits => self.labels_from_bits(&secret.to_bits()),
            LabelScheme::NibblePairs => secret
                .pixels()
                .iter()
                .flat_map(|&pixel| {
                    let q = u32::from(pixel >> 4);
                    [q / 2, q - q / 2]
                })
                .collect(),
        };
        debug_assert_eq!(labels.len(), queries);
        Ok(self.with_inputs(labels))
    }

    /// Labels and regenerated inputs encoding a bit stream (bits scheme only).
    pub fn encode_bits(&self, bits: &[bool], query_budget: Option<usize>) -> Result<SyntheticSet> {
        self.require_bits_scheme()?;
        if bits.is_empty() {
            return Err(AttackError::InvalidSecret(
                "the secret bit stream is empty".into(),
            ));
        }
        self.check_budget(
            self.queries_for_bits(bits.len()),
            query_budget,
            "capacity abuse",
        )?;
        Ok(self.with_inputs(self.labels_from_bits(bits)))
    }

    fn require_bits_scheme(&self) -> Result<()> {
        if self.scheme != LabelScheme::Bits {
            return Err(AttackError::InvalidSecret(
                "the nibble-pair scheme encodes 8-bit images only; use LabelScheme::Bits for bit streams".into(),
            ));
        }
        Ok(())
    }

    fn labels_from_bits(&self, bits: &[bool]) -> Vec<u32> {
        let k = self.bits_per_label() as usize;
        bits.chunks(k)
            .map(|chunk| {
                let mut padded = chunk.to_vec();
                padded.resize(k, false);
                read_uint(&padded) as u32
            })
            .collect()
    }

    fn with_inputs(&self, labels: Vec<u32>) -> SyntheticSet {
        SyntheticSet {
            height: self.height,
            width: self.width,
            inputs: self.synthetic_inputs(labels.len()),
            labels,
        }
    }

    /// Regenerates the first `count` synthetic inputs (what the attacker queries).
    pub fn synthetic_inputs(&self, count: usize) -> Vec<f32> {
        let n = self.height * self.width;
        let mut inputs = vec![0.0f32; count * n];
        for (t, x) in inputs.chunks_mut(n.max(1)).enumerate() {
            self.write_input(t, x);
        }
        inputs
    }

    /// Writes synthetic input `t` into `out`.
    ///
    /// Panics if `out` is not `height * width` long (a caller's buffer bug, not user input).
    pub fn write_input(&self, t: usize, out: &mut [f32]) {
        let n = self.height * self.width;
        assert_eq!(out.len(), n, "synthetic input buffer of the wrong size");
        match self.inputs {
            SyntheticInputs::SparseMarkers => {
                out.iter_mut().for_each(|v| *v = 0.0);
                let (k, p, q) = (t % 2, (t / 2) % n, t / (2 * n));
                out[p] = (q + 1) as f32;
                out[(p + 1) % n] = (k + 1) as f32;
            }
            SyntheticInputs::SeededNoise { seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(t as u64);
                out.iter_mut().for_each(|v| *v = rng.random::<f32>());
            }
        }
    }

    fn check_label_count(&self, predicted: &[u32], expected: usize) -> Result<()> {
        if predicted.len() != expected {
            return Err(AttackError::LengthMismatch {
                context: "capacity abuse decoding: predicted labels on the synthetic inputs".into(),
                what: "labels",
                expected,
                found: predicted.len(),
            });
        }
        Ok(())
    }

    /// Reassembles `n` images of `height x width` from the model's predicted labels on the
    /// regenerated inputs (in order). Nibble pairs decode to `(l0 + l1) * 16` (capped at 255).
    pub fn decode_images(
        &self,
        predicted: &[u32],
        n: usize,
        height: usize,
        width: usize,
    ) -> Result<CapacityDecode<ImageSecret>> {
        self.check_label_count(predicted, self.queries_for_images(n, height, width))?;
        match self.scheme {
            LabelScheme::Bits => {
                let decoded = self.decode_bits(predicted, n * height * width * 8)?;
                Ok(CapacityDecode {
                    secret: ImageSecret::from_bits(n, height, width, &decoded.secret)?,
                    invalid_labels: decoded.invalid_labels,
                })
            }
            LabelScheme::NibblePairs => {
                let mut invalid_labels = 0;
                let mut clamp = |l: u32| {
                    if l > 8 {
                        invalid_labels += 1;
                        8
                    } else {
                        l
                    }
                };
                let pixels = predicted
                    .chunks_exact(2)
                    .map(|pair| ((clamp(pair[0]) + clamp(pair[1])) * 16).min(255) as u8)
                    .collect();
                Ok(CapacityDecode {
                    secret: ImageSecret::new(n, height, width, pixels)?,
                    invalid_labels,
                })
            }
        }
    }

    /// Reassembles `n_bits` bits from predicted labels (bits scheme).
    pub fn decode_bits(
        &self,
        predicted: &[u32],
        n_bits: usize,
    ) -> Result<CapacityDecode<Vec<bool>>> {
        self.require_bits_scheme()?;
        self.check_label_count(predicted, self.queries_for_bits(n_bits))?;
        let k = self.bits_per_label();
        let max_label = (1u32 << k) - 1;
        let mut invalid_labels = 0;
        let mut bits = Vec::with_capacity(predicted.len() * k as usize);
        for &label in predicted {
            let label = if label > max_label {
                invalid_labels += 1;
                max_label
            } else {
                label
            };
            push_uint(&mut bits, u64::from(label), k);
        }
        bits.truncate(n_bits);
        Ok(CapacityDecode {
            secret: bits,
            invalid_labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::bit_errors;
    use crate::metrics::mape;
    use std::collections::HashSet;

    fn mnist_like(n: usize, seed: u64) -> ImageSecret {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        ImageSecret::new(n, 28, 28, (0..n * 784).map(|_| rng.random()).collect()).unwrap()
    }

    /// A model that has memorised the synthetic set: its prediction on input t is label t.
    fn oracle(set: &SyntheticSet) -> Vec<u32> {
        set.labels.clone()
    }

    #[test]
    fn capacity_arithmetic_matches_the_authors_counts() {
        // papers.md §1.6: CIFAR-10, mal_n = p * 2 * 50000, nibble pairs on 32x32 images.
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::NibblePairs,
            SyntheticInputs::SparseMarkers,
            32,
            32,
        )
        .unwrap();
        assert_eq!(attack.max_images(10_000, 32, 32), 4);
        assert_eq!(attack.max_images(50_000, 32, 32), 24);
        assert_eq!(attack.max_images(100_000, 32, 32), 48);
        assert_eq!(attack.queries_for_images(48, 32, 32), 98_304);
        // bits scheme: 10 classes carry floor(log2 10) = 3 bits, a binary classifier 1 bit per query
        let bits10 = CapacityAbuse::new(
            10,
            LabelScheme::Bits,
            SyntheticInputs::SparseMarkers,
            28,
            28,
        )
        .unwrap();
        assert_eq!(bits10.bits_per_query(), 3);
        assert_eq!(
            bits10.queries_for_images(1, 28, 28),
            (784 * 8usize).div_ceil(3)
        );
        let binary =
            CapacityAbuse::new(2, LabelScheme::Bits, SyntheticInputs::SparseMarkers, 28, 28)
                .unwrap();
        assert_eq!(binary.bits_per_query(), 1);
        assert_eq!(
            CapacityAbuse::new(16, LabelScheme::Bits, SyntheticInputs::SparseMarkers, 4, 4)
                .unwrap()
                .bits_per_query(),
            4
        );
        assert_eq!(attack.bits_per_query(), 2);
    }

    #[test]
    fn oracle_round_trip_bits_scheme_is_exact() {
        let secret = mnist_like(3, 1);
        for classes in [2usize, 3, 10, 100] {
            for inputs in [
                SyntheticInputs::SparseMarkers,
                SyntheticInputs::SeededNoise { seed: 4 },
            ] {
                let attack =
                    CapacityAbuse::new(classes, LabelScheme::Bits, inputs, 28, 28).unwrap();
                let set = attack.encode_images(&secret, None).unwrap();
                assert_eq!(set.len(), attack.queries_for_images(3, 28, 28));
                assert!(set.labels.iter().all(|&l| (l as usize) < classes));
                // the attacker regenerates the same inputs from the seed alone
                assert_eq!(attack.synthetic_inputs(set.len()), set.inputs);
                let decoded = attack.decode_images(&oracle(&set), 3, 28, 28).unwrap();
                assert_eq!(decoded.secret, secret, "{classes} classes, {inputs:?}");
                assert_eq!(decoded.invalid_labels, 0);
            }
        }
        let bits: Vec<bool> = (0..100).map(|i| i % 3 == 0).collect();
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::Bits,
            SyntheticInputs::SeededNoise { seed: 1 },
            8,
            8,
        )
        .unwrap();
        let set = attack.encode_bits(&bits, Some(34)).unwrap();
        assert_eq!(attack.decode_bits(&set.labels, 100).unwrap().secret, bits);
    }

    #[test]
    fn oracle_round_trip_nibble_pairs_recovers_the_high_nibble() {
        let secret = mnist_like(2, 2);
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::NibblePairs,
            SyntheticInputs::SparseMarkers,
            28,
            28,
        )
        .unwrap();
        let set = attack.encode_images(&secret, None).unwrap();
        assert!(set.labels.iter().all(|&l| l <= 8));
        let decoded = attack
            .decode_images(&oracle(&set), 2, 28, 28)
            .unwrap()
            .secret;
        let quantised: Vec<u8> = secret.pixels().iter().map(|&p| p & 0xf0).collect();
        assert_eq!(decoded.pixels(), quantised.as_slice());
        // dropping the low nibble costs 7.5 grey levels on average for uniform pixels
        let err = mape(secret.pixels(), decoded.pixels()).unwrap();
        assert!((err - 7.5).abs() < 0.3, "MAPE {err}");
    }

    #[test]
    fn flipped_labels_degrade_gracefully() {
        let secret = mnist_like(2, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        // nibble pairs: a wrong label moves one pixel by at most 8 * 16 = 128 grey levels
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::NibblePairs,
            SyntheticInputs::SeededNoise { seed: 8 },
            28,
            28,
        )
        .unwrap();
        let set = attack.encode_images(&secret, None).unwrap();
        let clean = attack.decode_images(&set.labels, 2, 28, 28).unwrap().secret;
        let mut previous = 0.0;
        for flips in [10usize, 100, 1000] {
            let mut predicted = set.labels.clone();
            for t in rand::seq::index::sample(&mut rng, predicted.len(), flips) {
                predicted[t] = (predicted[t] + rng.random_range(1..9)) % 9;
            }
            let noisy = attack.decode_images(&predicted, 2, 28, 28).unwrap().secret;
            let wrong_pixels = clean
                .pixels()
                .iter()
                .zip(noisy.pixels())
                .filter(|(a, b)| a != b)
                .count();
            assert!(wrong_pixels <= flips && wrong_pixels > 0);
            let extra = mape(clean.pixels(), noisy.pixels()).unwrap();
            assert!(
                extra <= flips as f64 * 128.0 / 1568.0,
                "{flips} flips: {extra}"
            );
            assert!(extra > previous, "error grows with the number of flips");
            previous = extra;
        }
        // bits scheme: a wrong label corrupts at most its own floor(log2 c) bits
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::Bits,
            SyntheticInputs::SparseMarkers,
            28,
            28,
        )
        .unwrap();
        let set = attack.encode_images(&secret, None).unwrap();
        let mut predicted = set.labels.clone();
        for t in rand::seq::index::sample(&mut rng, predicted.len(), 50) {
            predicted[t] = (predicted[t] + 1) % 10; // 7 -> 8 is an invalid label for 3-bit codes
        }
        let decoded = attack
            .decode_bits(&predicted, secret.pixels().len() * 8)
            .unwrap();
        let errors = bit_errors(&decoded.secret, &secret.to_bits());
        assert!(errors > 0 && errors <= 50 * 3, "{errors} bit errors");
        assert_eq!(
            decoded.invalid_labels,
            set.labels
                .iter()
                .zip(&predicted)
                .filter(|&(_, &p)| p > 7)
                .count()
        );
    }

    #[test]
    fn synthetic_inputs_are_distinct_and_deterministic() {
        // Sparse markers on a small 3x2 input: every input differs, including across rounds.
        let attack =
            CapacityAbuse::new(10, LabelScheme::Bits, SyntheticInputs::SparseMarkers, 3, 2)
                .unwrap();
        let inputs = attack.synthetic_inputs(600);
        let distinct: HashSet<Vec<u32>> = inputs
            .chunks(6)
            .map(|x| x.iter().map(|v| v.to_bits()).collect())
            .collect();
        assert_eq!(distinct.len(), 600);
        // the authors' layout: image j, pixel i, pair member k -> x[i] = j + 1, x[i + 1] = k + 1
        let (j, i, k) = (2usize, 5usize, 1usize);
        let t = (j * 6 + i) * 2 + k;
        assert_eq!(&inputs[t * 6..t * 6 + 6], &[2.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
        let noise = CapacityAbuse::new(
            10,
            LabelScheme::Bits,
            SyntheticInputs::SeededNoise { seed: 9 },
            3,
            2,
        )
        .unwrap();
        let a = noise.synthetic_inputs(50);
        assert_eq!(a, noise.synthetic_inputs(50));
        assert!(a.iter().all(|&v| (0.0..1.0).contains(&v)));
        let mut single = vec![0.0; 6];
        noise.write_input(49, &mut single);
        assert_eq!(
            &a[49 * 6..],
            single.as_slice(),
            "input t regenerates on its own"
        );
        let other = CapacityAbuse::new(
            10,
            LabelScheme::Bits,
            SyntheticInputs::SeededNoise { seed: 10 },
            3,
            2,
        )
        .unwrap();
        assert_ne!(a, other.synthetic_inputs(50));
    }

    #[test]
    fn bad_configurations_and_budgets_are_refused() {
        assert!(matches!(
            CapacityAbuse::new(1, LabelScheme::Bits, SyntheticInputs::SparseMarkers, 28, 28),
            Err(AttackError::InvalidClasses { classes: 1, .. })
        ));
        assert!(matches!(
            CapacityAbuse::new(
                8,
                LabelScheme::NibblePairs,
                SyntheticInputs::SparseMarkers,
                28,
                28
            ),
            Err(AttackError::InvalidClasses { classes: 8, .. })
        ));
        assert!(
            CapacityAbuse::new(10, LabelScheme::Bits, SyntheticInputs::SparseMarkers, 1, 2)
                .is_err()
        );
        let attack = CapacityAbuse::new(
            10,
            LabelScheme::NibblePairs,
            SyntheticInputs::SparseMarkers,
            28,
            28,
        )
        .unwrap();
        let secret = mnist_like(3, 5);
        // 3 images need 4704 inputs; a budget of 4000 carries 8000 bits, 2 whole images
        let err = attack.encode_images(&secret, Some(4_000)).unwrap_err();
        assert!(
            matches!(
                err,
                AttackError::SecretTooLarge {
                    needed: 9408,
                    available: 8000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("at most 8000 bits"), "{err}");
        assert_eq!(attack.max_images(4_000, 28, 28), 2);
        assert!(attack.encode_bits(&[true], None).is_err());
        assert!(matches!(
            attack.decode_images(&[0; 10], 1, 28, 28),
            Err(AttackError::LengthMismatch {
                expected: 1568,
                found: 10,
                ..
            })
        ));
        // labels above 8 are clamped and counted
        let mut predicted = vec![0u32; 1568];
        predicted[0] = 9;
        predicted[1] = 9;
        let decoded = attack.decode_images(&predicted, 1, 28, 28).unwrap();
        assert_eq!(
            (decoded.invalid_labels, decoded.secret.pixels()[0]),
            (2, 255)
        );
    }
}
