//! DP-SGD's noise and adaptive clipping (Abadi et al. 2016; Andrew et al. 2021).
//!
//! The private gradient of one step is `(sum_i clip(g_i) + N(0, sigma^2 S^2 I)) / B`, where S is
//! the clipped sum's L2 sensitivity (C for flat clipping, sqrt(sum_k C_k^2) for per-group bounds)
//! and B the *expected* batch size q n (dividing by the realised size would leak it). `privatize`
//! is that step, and the trainer's only noise path.
//!
//! **The generator.** Two layers. A master ChaCha12 (rand's `StdRng` construction), seeded from
//! the OS, or under `--seeded-noise` rekeyed at every step from (seed, step) so a resumed run adds
//! exactly the noise of an uninterrupted one, draws a fresh 128-bit key per step. The bulk noise is
//! AES-128 in counter mode under that key: the parameter vector is cut into chunks filled in
//! parallel, chunk c using the counter blocks whose upper 64 bits are c (so chunks never share a
//! block, and the output is one function of the key however many threads run). Security argument:
//! AES-CTR output is indistinguishable from random unless AES-128 is distinguishable from a random
//! permutation (the PRF/PRP switching bound costs q^2 / 2^129 for q blocks; a step uses < 2^24
//! blocks per key), the construction NIST's CTR_DRBG builds on. With AES-NI its keystream runs at
//! 2.3x ChaCha12's (6.9 vs 3.0 GB/s on one core here: `cargo run --release -p memaudit-engine
//! --example chacha_speed`); a whole noise vector of 203,530 normals takes 0.43 ms against 0.50 ms
//! (`--example noise_cost`), the Box-Muller transform being the rest. The keystream is written
//! straight into the transform's words (native byte order). No generator state is ever written to
//! disk.
//!
//! **The transform.** Box-Muller in f64: each pair of normals takes a 52-bit uniform for the radius,
//! so the tails reach 8.5 sigma (the mass beyond is ~2e-17), and a 32-bit uniform for the angle;
//! log, sin and cos are branch-free polynomials (errors < 1e-11 relative, tested against libm), so
//! the loop vectorises.
//!
//! **Floating-point attacks** (Mironov 2012 on the Laplace mechanism; Jin et al. 2022 on Gaussian
//! samplers such as the one behind Opacus without `secure_mode`): they work when the set of values
//! the noisy output can take is sparse and depends on the secret, i.e. when the noise is generated
//! at about the precision of the released number. Here the noise is generated at far finer
//! resolution than the release: the angle's step is 2 pi 2^-32 ~ 1.5e-9 and the radius has 52 bits,
//! so a draw of size ~sigma S has granularity ~1e-8 sigma S, while the f32 sum it is added to (and
//! rounded once into) has spacing >= 6e-8 sigma S near that magnitude. Every f32 value within
//! +-8.5 sigma S of the clipped sum is reachable, whatever the sum, so the release's support does
//! not depend on it. This is an argument at the precision of the release, not an exact sampler
//! (no discrete Gaussian); `docs/dp-sgd.md` says so.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// AES-128 in counter mode with a 128-bit big-endian counter block.
type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// Normals per parallel chunk (each chunk is its own range of counter blocks).
const NOISE_CHUNK: usize = 1 << 15;
/// Normals per Box-Muller batch inside a chunk (3 random words per pair).
const BM_BATCH: usize = 2048;

/// Stream tag that keeps the seeded noise apart from every other stream derived from the seed.
const NOISE_STREAM: u64 = 3 << 40;

/// The CSPRNG behind DP noise.
pub struct NoiseSource {
    master: ChaCha12Rng,
    /// The user's seed under `--seeded-noise` (then step t's noise is a function of (seed, t)).
    seed: Option<u64>,
}

impl NoiseSource {
    /// Seeded from the operating system (the default for private training).
    pub fn from_os() -> Self {
        Self {
            master: ChaCha12Rng::from_os_rng(),
            seed: None,
        }
    }

    /// Seeded for reproducible research: anyone with the seed can regenerate the noise.
    pub fn from_seed(seed: u64) -> Self {
        let mut s = Self {
            master: ChaCha12Rng::seed_from_u64(0),
            seed: Some(seed),
        };
        s.begin_step(0);
        s
    }

    /// Whether the noise is reproducible from a user-given seed (reports must say so).
    pub fn is_seeded(&self) -> bool {
        self.seed.is_some()
    }

    /// Called before drawing global step `step`'s noise. Seeded, it rekeys the generator from
    /// (seed, step), so the noise of a step never depends on how many processes the run took (a
    /// resumed run adds exactly the noise of an uninterrupted one, and no segment repeats
    /// another's). From the OS, the stream simply continues: nothing to do.
    pub fn begin_step(&mut self, step: u64) {
        if let Some(seed) = self.seed {
            self.master =
                ChaCha12Rng::seed_from_u64(crate::sampler::mix_seed(seed, NOISE_STREAM + step));
        }
    }

    /// `x[i] += std * N(0, 1)` for every element.
    pub fn add_gaussian(&mut self, x: &mut [f32], std: f64) {
        if std == 0.0 || x.is_empty() {
            return;
        }
        let mut key = [0u8; 16];
        self.master.fill_bytes(&mut key);
        x.par_chunks_mut(NOISE_CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&(c as u64).to_be_bytes());
                let mut cipher = Aes128Ctr::new(&key.into(), &iv.into());
                let mut words = vec![0u32; BM_BATCH / 2 * 3];
                for part in chunk.chunks_mut(BM_BATCH) {
                    let n = part.len().div_ceil(2) * 3;
                    let w = &mut words[..n];
                    w.fill(0);
                    // SAFETY: u8 has alignment 1 and every byte pattern is a valid u32, so viewing
                    // the words' storage as bytes is sound; the keystream is XORed into zeros.
                    let b = unsafe {
                        std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), n * 4)
                    };
                    cipher.apply_keystream(b);
                    add_box_muller(&words[..n], part, std);
                }
            });
    }

    /// A fresh vector of `n` draws from N(0, std^2). The noise does not depend on the data, so
    /// trainers draw it concurrently with the forward/backward pass (`rayon::join`), on the cores
    /// the pass's serial parts leave idle.
    pub fn gaussian_vector(&mut self, n: usize, std: f64) -> Vec<f32> {
        let mut v = vec![0.0f32; n];
        self.add_gaussian(&mut v, std);
        v
    }

    /// One scalar N(0, std^2) draw (the adaptive clipping count).
    pub fn gaussian(&mut self, std: f64) -> f64 {
        let z: f64 = self.master.sample(StandardNormal);
        std * z
    }
}

const TWO_PI: f64 = std::f64::consts::TAU;

/// ln(u) for u in (0, 1], branch-free: u = m 2^e with m in [sqrt(1/2), sqrt(2)), then
/// ln m = 2 atanh(f), f = (m - 1)/(m + 1), |f| <= 0.1716, series to f^13 (error < 1e-12).
#[inline(always)]
fn ln_unit(u: f64) -> f64 {
    let bits = u.to_bits();
    let exp_field = bits >> 52;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    // Exponent as f64 without an int->float conversion (AVX2 has none for 64-bit lanes).
    let mut e =
        f64::from_bits(0x4330_0000_0000_0000 | exp_field) - 4_503_599_627_370_496.0 - 1023.0;
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e = if big { e + 1.0 } else { e };
    let f = (m - 1.0) / (m + 1.0);
    let f2 = f * f;
    let series = 1.0
        + f2 * (1.0 / 3.0
            + f2 * (1.0 / 5.0
                + f2 * (1.0 / 7.0 + f2 * (1.0 / 9.0 + f2 * (1.0 / 11.0 + f2 * (1.0 / 13.0))))));
    e * std::f64::consts::LN_2 + 2.0 * f * series
}

/// sin and cos on [-pi/4, pi/4] by Taylor polynomials (errors < 1e-11).
#[inline(always)]
fn sincos_small(a: f64) -> (f64, f64) {
    let a2 = a * a;
    let s = a
        * (1.0
            + a2 * (-1.0 / 6.0
                + a2 * (1.0 / 120.0
                    + a2 * (-1.0 / 5040.0 + a2 * (1.0 / 362_880.0 + a2 * (-1.0 / 39_916_800.0))))));
    let c = 1.0
        + a2 * (-0.5
            + a2 * (1.0 / 24.0
                + a2 * (-1.0 / 720.0
                    + a2 * (1.0 / 40_320.0
                        + a2 * (-1.0 / 3_628_800.0 + a2 * (1.0 / 479_001_600.0))))));
    (s, c)
}

/// One Box-Muller pair from three random words: (r cos theta, r sin theta).
#[inline(always)]
fn box_muller_pair(w0: u32, w1: u32, w2: u32) -> (f64, f64) {
    // Radius: a 52-bit uniform in (0, 1] built directly as a double.
    let bits52 = ((w0 as u64) << 20) | ((w1 as u64) >> 12);
    let u1 = 2.0 - f64::from_bits(0x3FF0_0000_0000_0000 | bits52);
    let r = (-2.0 * ln_unit(u1)).sqrt();
    // Angle theta = 2 pi w2 / 2^32 = q pi/2 + a with a in [-pi/4, pi/4): shift by pi/4 so the
    // quadrant is the top two bits.
    let v = w2.wrapping_add(1 << 29);
    let q = v >> 30;
    let rem =
        f64::from_bits(0x4330_0000_0000_0000 | (v & 0x3FFF_FFFF) as u64) - 4_503_599_627_370_496.0;
    let a = (rem - 536_870_912.0) * (TWO_PI / 4_294_967_296.0);
    let (s, c) = sincos_small(a);
    let swap = q & 1 == 1;
    let (x, y) = if swap { (s, c) } else { (c, s) };
    let cos_t = if q == 1 || q == 2 { -x } else { x };
    let sin_t = if q >= 2 { -y } else { y };
    (r * cos_t, r * sin_t)
}

crate::simd_kernel! {
    /// With `p = ceil(out.len() / 2)` pairs and the words laid out as three blocks
    /// `[w0; p][w1; p][w2; p]`: `out[i] += std z0_i` for i < p and `out[p + i] += std z1_i`. The
    /// normals are i.i.d., so where each lands is immaterial; unit strides let the loop vectorise.
    fn add_box_muller(words: &[u32], out: &mut [f32], std: f64) {
        let p = out.len().div_ceil(2);
        let (w0, rest) = words.split_at(p);
        let (w1, w2) = rest.split_at(p);
        let (first, second) = out.split_at_mut(p);
        let q = second.len();
        for i in 0..q {
            let (z0, z1) = box_muller_pair(w0[i], w1[i], w2[i]);
            first[i] += (std * z0) as f32;
            second[i] += (std * z1) as f32;
        }
        if q < p {
            let (z0, _) = box_muller_pair(w0[q], w1[q], w2[q]);
            first[q] += (std * z0) as f32;
        }
    }
}

/// One step's Gaussian noise, drawn before the gradient sum it is added to exists.
pub struct StepNoise(Vec<f32>);

impl StepNoise {
    /// The noise drawn for coordinate `j` (the white-box audit scores canaries by it).
    pub fn at(&self, j: usize) -> f32 {
        self.0.get(j).copied().unwrap_or(0.0)
    }

    /// `sum = (sum + noise) / expected_batch`: the private averaged gradient, in place.
    pub fn apply(self, sum: &mut [f32], expected_batch: f64) {
        add_noise_and_average(sum, &self.0, expected_batch)
    }
}

impl NoiseSource {
    /// Draw a step's noise, N(0, (sigma S)^2) for each of `len` coordinates, while `work` (the
    /// step's clipped gradient sum) runs on the other core: the noise does not depend on the data,
    /// so the two overlap (`rayon::join`). Returns what `work` returned and the noise to `apply`.
    pub fn draw_step_noise_alongside<R: Send>(
        &mut self,
        len: usize,
        noise_multiplier: f64,
        sensitivity: f64,
        work: impl FnOnce() -> R + Send,
    ) -> (R, StepNoise) {
        let std = noise_multiplier * sensitivity;
        let (r, z) = rayon::join(work, || self.gaussian_vector(len, std));
        (r, StepNoise(z))
    }
}

/// DP-SGD's noise step: turn the summed clipped gradient into the private averaged gradient, in
/// place, `(sum + N(0, (sigma S)^2 I)) / expected_batch`, with S the clipped sum's L2 sensitivity
/// and the divisor the *expected* batch size. The trainer runs the same two halves
/// (`draw_step_noise_alongside`, then `StepNoise::apply`) with the gradient computed in between.
pub fn privatize(
    sum: &mut [f32],
    noise_multiplier: f64,
    sensitivity: f64,
    expected_batch: f64,
    noise: &mut NoiseSource,
) {
    let ((), z) = noise.draw_step_noise_alongside(sum.len(), noise_multiplier, sensitivity, || ());
    z.apply(sum, expected_batch);
}

/// `sum = (sum + noise) / expected_batch`, with noise drawn beforehand (an empty `noise`: none).
fn add_noise_and_average(sum: &mut [f32], noise: &[f32], expected_batch: f64) {
    let inv = (1.0 / expected_batch) as f32;
    if noise.is_empty() {
        sum.iter_mut().for_each(|v| *v *= inv);
        return;
    }
    assert_eq!(sum.len(), noise.len(), "noise vector length");
    sum.par_chunks_mut(NOISE_CHUNK)
        .zip(noise.par_chunks(NOISE_CHUNK))
        .for_each(|(s, z)| {
            for (v, n) in s.iter_mut().zip(z) {
                *v = (*v + n) * inv;
            }
        });
}

/// Quantile-based adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy: "Differentially Private
/// Learning with Adaptive Clipping"), as TF Privacy's `QuantileAdaptiveClipSumQuery` does it:
///
/// ```text
/// b_i     = 1[||g_i|| <= C_t] - 1/2                 (sensitivity 1/2)
/// b~      = clamp((sum_i b_i + N(0, sigma_b^2)) / m + 1/2, 0, 1)   noisy unclipped fraction
/// C_{t+1} = C_t exp(-eta (b~ - gamma))   (geometric)   or   C_t - eta (b~ - gamma)   (arithmetic)
/// ```
/// The gradient sum is noised with multiplier z_delta, the count with sigma_b; the step is then
/// one Gaussian mechanism with multiplier `(z_delta^-2 + (2 sigma_b)^-2)^(-1/2)`, which
/// `split_noise` makes equal to the user's total z (TFF's `adaptive_clip_noise_params`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClip {
    /// Current bound C_t.
    pub clip: f64,
    /// Target fraction of unclipped examples (gamma; 0.5 = median).
    pub target_quantile: f64,
    /// Learning rate eta.
    pub learning_rate: f64,
    /// Noise on the unclipped count (sigma_b).
    pub count_stddev: f64,
    /// Geometric (default) or arithmetic update.
    pub geometric: bool,
}

/// How the total noise multiplier z is split between the gradient sum and the clip count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseSplit {
    /// Multiplier on the gradient sum's noise (times C_t).
    pub sum_multiplier: f64,
    /// Standard deviation of the count noise.
    pub count_stddev: f64,
}

impl AdaptiveClip {
    pub fn new(
        initial_clip: f64,
        target_quantile: f64,
        learning_rate: f64,
        count_stddev: f64,
        geometric: bool,
    ) -> Result<Self> {
        if !(initial_clip > 0.0 && initial_clip.is_finite()) {
            return Err(EngineError::Config(format!(
                "the initial clip bound must be positive, got {initial_clip}"
            )));
        }
        if !(0.0..=1.0).contains(&target_quantile) {
            return Err(EngineError::Config(format!(
                "the target quantile must be in [0, 1], got {target_quantile}"
            )));
        }
        if !(learning_rate >= 0.0 && count_stddev >= 0.0) {
            return Err(EngineError::Config(
                "the clip learning rate and count noise must be >= 0".into(),
            ));
        }
        Ok(Self {
            clip: initial_clip,
            target_quantile,
            learning_rate,
            count_stddev,
            geometric,
        })
    }

    /// TFF's split: with total multiplier z and count noise sigma_b,
    /// `z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`; an error if z >= 2 sigma_b (the count would need
    /// all of the budget). z = 0 means no noise anywhere.
    pub fn split_noise(total: f64, count_stddev: f64) -> Result<NoiseSplit> {
        if total == 0.0 {
            return Ok(NoiseSplit {
                sum_multiplier: 0.0,
                count_stddev: 0.0,
            });
        }
        if total >= 2.0 * count_stddev {
            return Err(EngineError::Config(format!(
                "noise multiplier {total} must be below 2 x the clip-count noise {count_stddev} (raise the count noise, e.g. to expected batch / 20)"
            )));
        }
        let z = (total.powi(-2) - (2.0 * count_stddev).powi(-2)).powf(-0.5);
        Ok(NoiseSplit {
            sum_multiplier: z,
            count_stddev,
        })
    }

    /// Update C from this step's pre-clipping norms; `expected_count` is m (the expected batch size).
    /// Returns the noisy unclipped fraction b~.
    pub fn update(
        &mut self,
        norms: &[f32],
        expected_count: f64,
        count_noise_std: f64,
        noise: &mut NoiseSource,
    ) -> f64 {
        let c = self.clip as f32;
        let sum_b: f64 = norms.iter().map(|&n| if n <= c { 0.5 } else { -0.5 }).sum();
        let noisy = sum_b
            + if count_noise_std > 0.0 {
                noise.gaussian(count_noise_std)
            } else {
                0.0
            };
        let frac = (noisy / expected_count + 0.5).clamp(0.0, 1.0);
        let g = frac - self.target_quantile;
        self.clip = if self.geometric {
            self.clip * (-self.learning_rate * g).exp()
        } else {
            (self.clip - self.learning_rate * g).max(0.0)
        };
        frac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_requested_standard_deviation() {
        // 10^6 draws: the sample sd is within 0.5% of sigma (its standard error is ~0.07%), the
        // mean within 5 standard errors, and kurtosis ~3 (Gaussian, not uniform).
        let mut src = NoiseSource::from_seed(1);
        let mut x = vec![0.0f32; 1_000_000];
        src.add_gaussian(&mut x, 2.5);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = x.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n / var.powi(2);
        assert!((var.sqrt() / 2.5 - 1.0).abs() < 5e-3, "sd {}", var.sqrt());
        assert!(mean.abs() < 5.0 * 2.5 / n.sqrt(), "mean {mean}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    }

    /// The polynomial Box-Muller against the same formula with libm (f64): the sampler's math is
    /// exact to ~1e-11, far below the f32 output's rounding.
    #[test]
    fn box_muller_matches_libm() {
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut worst = 0.0f64;
        for k in 0..200_000 {
            let (w0, w1, w2): (u32, u32, u32) = if k < 8 {
                // Extremes: u1 = 2^-52 (largest radius) and 1 (radius 0); every quadrant edge.
                [
                    (u32::MAX, u32::MAX, 0),
                    (0, 0, 1 << 30),
                    (u32::MAX, u32::MAX, (1 << 29) - 1),
                    (7, 0, 3 << 30),
                    (1, 2, u32::MAX),
                    (0, 4096, 1 << 31),
                    (u32::MAX, 4095, 5 << 29),
                    (12345, 678, 7 << 29),
                ][k]
            } else {
                (rng.random(), rng.random(), rng.random())
            };
            let (z0, z1) = box_muller_pair(w0, w1, w2);
            let bits52 = ((w0 as u64) << 20) | ((w1 as u64) >> 12);
            let u1 = 2.0 - f64::from_bits(0x3FF0_0000_0000_0000 | bits52);
            let r = (-2.0 * u1.ln()).sqrt();
            let th = TWO_PI * (w2 as f64) / 4_294_967_296.0;
            worst = worst
                .max((z0 - r * th.cos()).abs())
                .max((z1 - r * th.sin()).abs());
        }
        assert!(worst < 1e-10, "worst absolute error {worst:e}");
        // The largest possible radius: u1 = 2^-52.
        let (z0, z1) = box_muller_pair(u32::MAX, u32::MAX, 0);
        assert!((z0.hypot(z1) - (104.0f64 * std::f64::consts::LN_2).sqrt()).abs() < 1e-9);
    }

    /// Kolmogorov-Smirnov against the standard normal CDF on 10^6 draws: the statistic must be
    /// below the 0.1% critical value 1.95 / sqrt(n).
    #[test]
    fn noise_passes_kolmogorov_smirnov() {
        let mut x = vec![0.0f32; 1_000_000];
        NoiseSource::from_seed(17).add_gaussian(&mut x, 1.0);
        let mut v: Vec<f64> = x.iter().map(|&z| z as f64).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len() as f64;
        let phi = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        let d = v
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                let f = phi(z);
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0f64, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS statistic {d}");
    }

    #[test]
    fn seeded_noise_is_reproducible_and_os_noise_is_not() {
        let draw = |mut s: NoiseSource| {
            let mut x = vec![0.0f32; 100_000];
            s.add_gaussian(&mut x, 1.0);
            x
        };
        assert_eq!(
            draw(NoiseSource::from_seed(5)),
            draw(NoiseSource::from_seed(5))
        );
        assert_ne!(draw(NoiseSource::from_os()), draw(NoiseSource::from_os()));
        // Chunks use distinct streams: no two chunks repeat each other.
        let x = draw(NoiseSource::from_seed(9));
        assert_ne!(
            &x[..NOISE_CHUNK.min(1000)],
            &x[NOISE_CHUNK..NOISE_CHUNK + NOISE_CHUNK.min(1000)]
        );
        assert!(NoiseSource::from_seed(1).is_seeded() && !NoiseSource::from_os().is_seeded());
    }

    /// TF Privacy's `quantile_adaptive_clip_sum_query_test` traces (papers.md 3.2), no noise.
    #[test]
    fn adaptive_clip_arithmetic_trace() {
        let mut a = AdaptiveClip::new(10.0, 0.0, 1.0, 0.0, false).unwrap();
        let records = [8.5f32, -7.25];
        let mut noise = NoiseSource::from_seed(0);
        let (mut sums, mut clips) = (vec![], vec![]);
        for _ in 0..5 {
            let c = a.clip as f32;
            let sum: f32 = records.iter().map(|r| r * (c / r.abs()).min(1.0)).sum();
            let norms: Vec<f32> = records.iter().map(|r| r.abs()).collect();
            a.update(&norms, 2.0, 0.0, &mut noise);
            sums.push(sum);
            clips.push(a.clip);
        }
        let want_sums = [1.25, 1.25, 0.75, 0.25, 0.0];
        let want_clips = [9.0, 8.0, 7.5, 7.0, 7.0];
        for i in 0..5 {
            assert!(
                (sums[i] - want_sums[i]).abs() < 1e-6 && (clips[i] - want_clips[i]).abs() < 1e-9,
                "{sums:?} {clips:?}"
            );
        }
    }

    #[test]
    fn adaptive_clip_geometric_trace() {
        let mut a = AdaptiveClip::new(16.0, 0.0, std::f64::consts::LN_2, 0.0, true).unwrap();
        let norms = [5.0f32, 2.5];
        let mut noise = NoiseSource::from_seed(0);
        let want = [8.0, 4.0, 4.0 / 2f64.sqrt(), 2.0, 2.0];
        for w in want {
            a.update(&norms, 2.0, 0.0, &mut noise);
            assert!((a.clip - w).abs() < 1e-9, "clip {} want {w}", a.clip);
        }
    }

    #[test]
    fn adaptive_clip_tracks_the_quantile_with_noise() {
        // Andrew et al.'s tracking property: from C0 = 0.1, eta = 0.2, gamma = 0.5, the bound
        // reaches the median of the norm distribution within a few dozen rounds and stays near it.
        let mut a = AdaptiveClip::new(0.1, 0.5, 0.2, 256.0 / 20.0, true).unwrap();
        let mut noise = NoiseSource::from_seed(3);
        let mut rng = ChaCha12Rng::seed_from_u64(4);
        let mut late = Vec::new();
        for round in 0..200 {
            // Norms log-uniform on [1, 9]: median 3.
            let norms: Vec<f32> = (0..256)
                .map(|_| (rng.random::<f64>() * 9f64.ln()).exp() as f32)
                .collect();
            a.update(&norms, 256.0, 256.0 / 20.0, &mut noise);
            if round >= 100 {
                late.push(a.clip);
            }
        }
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!((mean - 3.0).abs() < 0.3, "mean late clip {mean}");
    }

    #[test]
    fn noise_split_matches_tff() {
        let s = AdaptiveClip::split_noise(1.0, 5.0).unwrap();
        assert!((s.sum_multiplier - 1.00504).abs() < 1e-5);
        // Recombined, the step is one Gaussian with the requested multiplier.
        let z = (s.sum_multiplier.powi(-2) + (2.0 * s.count_stddev).powi(-2)).powf(-0.5);
        assert!((z - 1.0).abs() < 1e-12);
        assert!(AdaptiveClip::split_noise(10.0, 5.0).is_err());
    }
}
