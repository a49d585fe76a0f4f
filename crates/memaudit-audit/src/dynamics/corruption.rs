//! Noise data as in Arpit et al. §2 (and Zhang et al. 2017): **randY** replaces labels with
//! uniformly random ones, **randX** replaces inputs with i.i.d. Gaussian noise whose mean and
//! variance match the real data's. A chosen fraction of the training set is corrupted; the
//! corrupted indices are recorded so curves can follow clean and noisy examples separately.

use memaudit_engine::datasets::DenseDataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};

/// Which kind of noise replaces part of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Real data, untouched.
    Real,
    /// randY: labels replaced by labels drawn uniformly from all classes (a drawn label may equal
    /// the true one, as in Zhang et al.; `Corrupted::labels_changed` counts those that differ).
    RandY,
    /// randX: inputs replaced by i.i.d. Gaussian noise with the data's mean and variance (one
    /// scalar mean and variance over all input values, as the paper describes).
    RandX,
}

impl NoiseKind {
    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::Real => "real",
            NoiseKind::RandY => "randY",
            NoiseKind::RandX => "randX",
        }
    }

    /// Parse `real`, `randy`/`randY` or `randx`/`randX`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "real" | "none" => Ok(NoiseKind::Real),
            "randy" => Ok(NoiseKind::RandY),
            "randx" => Ok(NoiseKind::RandX),
            _ => Err(invalid(
                format!("noise kind {s:?}"),
                "use real, randY or randX",
            )),
        }
    }
}

/// A training set with part of it replaced by noise.
#[derive(Clone, Debug)]
pub struct Corrupted {
    pub data: DenseDataset,
    /// Indices of the corrupted examples, ascending.
    pub corrupted: Vec<usize>,
    /// `mask[i]` is true when example i was corrupted.
    pub mask: Vec<bool>,
    /// randY: corrupted examples whose drawn label differs from the original.
    pub labels_changed: usize,
    /// randX: the mean and standard deviation the noise was drawn with.
    pub noise_mean_std: Option<(f64, f64)>,
}

/// Check a noise fraction: it must be a number in [0, 1].
pub fn check_fraction(fraction: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(invalid(
            format!("noise fraction {fraction}"),
            "must be in [0, 1] (0 = real data, 1 = all examples corrupted)",
        ));
    }
    Ok(())
}

/// Mean and (population) standard deviation of all input values.
pub fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Corrupt `round(fraction * n)` examples chosen uniformly without replacement (seeded).
pub fn corrupt(
    data: &DenseDataset,
    classes: usize,
    kind: NoiseKind,
    fraction: f64,
    seed: u64,
) -> Result<Corrupted> {
    check_fraction(fraction)?;
    let n = data.labels.len();
    if classes < 2 {
        return Err(invalid(
            format!("{classes} classes"),
            "random labels need at least 2 classes",
        ));
    }
    if let Some(&l) = data.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(invalid(
            format!("label {l}"),
            format!("outside the {classes} classes"),
        ));
    }
    let count = if kind == NoiseKind::Real {
        0
    } else {
        (fraction * n as f64).round() as usize
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut corrupted: Vec<usize> = order[..count].to_vec();
    corrupted.sort_unstable();
    let mut mask = vec![false; n];
    for &i in &corrupted {
        mask[i] = true;
    }
    let mut out = data.clone();
    let mut labels_changed = 0;
    let mut noise_mean_std = None;
    match kind {
        NoiseKind::Real => {}
        NoiseKind::RandY => {
            for &i in &corrupted {
                let l = rng.random_range(0..classes as u32);
                if l != out.labels[i] {
                    labels_changed += 1;
                }
                out.labels[i] = l;
            }
        }
        NoiseKind::RandX => {
            let (mean, std) = mean_std(&data.x);
            noise_mean_std = Some((mean, std));
            let per = data.per_example();
            for &i in &corrupted {
                for v in &mut out.x[i * per..(i + 1) * per] {
                    let z: f64 = rng.sample(StandardNormal);
                    *v = (mean + std * z) as f32;
                }
            }
        }
    }
    Ok(Corrupted {
        data: out,
        corrupted,
        mask,
        labels_changed,
        noise_mean_std,
    })
}

/// Every example its own class (Arpit et al. §3.2's second label variant): labels 0..n.
pub fn unique_class_labels(data: &DenseDataset) -> DenseDataset {
    let mut out = data.clone();
    out.labels = (0..out.labels.len() as u32).collect();
    out
}

/// Downscale images of `height x width` (one channel, flat or `[1, H, W]`) by averaging
/// `factor x factor` blocks: MNIST's 28x28 becomes 14x14 with `factor` 2 (the paper's
/// loss-sensitivity setup). The result is flat (`[H/f * W/f]`).
pub fn downscale(
    data: &DenseDataset,
    height: usize,
    width: usize,
    factor: usize,
) -> Result<DenseDataset> {
    if factor == 0 || !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
        return Err(invalid(
            format!("downscale factor {factor}"),
            format!("must be at least 1 and divide the image size {height}x{width}"),
        ));
    }
    if data.per_example() != height * width {
        return Err(invalid(
            "downscale",
            format!(
                "examples have {} values, not one {height}x{width} channel",
                data.per_example()
            ),
        ));
    }
    let (h2, w2) = (height / factor, width / factor);
    let inv = 1.0 / (factor * factor) as f32;
    let mut x = Vec::with_capacity(data.labels.len() * h2 * w2);
    for img in data.x.chunks(height * width) {
        for r in 0..h2 {
            for c in 0..w2 {
                let mut s = 0.0f32;
                for dr in 0..factor {
                    for dc in 0..factor {
                        s += img[(r * factor + dr) * width + c * factor + dc];
                    }
                }
                x.push(s * inv);
            }
        }
    }
    Ok(DenseDataset::new(x, vec![h2 * w2], data.labels.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, per: usize) -> DenseDataset {
        let x: Vec<f32> = (0..n * per)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let labels = (0..n as u32).map(|i| i % 10).collect();
        DenseDataset::new(x, vec![per], labels).unwrap()
    }

    #[test]
    fn fraction_outside_unit_interval_is_an_error() {
        let d = toy(10, 4);
        for f in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let e = corrupt(&d, 10, NoiseKind::RandY, f, 0).unwrap_err();
            assert!(e.to_string().contains("[0, 1]"), "{e}");
        }
        assert!(corrupt(&d, 1, NoiseKind::RandY, 0.5, 0).is_err());
        assert!(NoiseKind::parse("gaussian").is_err());
        assert_eq!(NoiseKind::parse("randX").unwrap(), NoiseKind::RandX);
    }

    #[test]
    fn the_chosen_fraction_is_corrupted_and_recorded() {
        let d = toy(1000, 8);
        for (f, want) in [(0.0, 0), (0.2, 200), (0.505, 505), (1.0, 1000)] {
            let c = corrupt(&d, 10, NoiseKind::RandY, f, 7).unwrap();
            assert_eq!(c.corrupted.len(), want);
            assert!(c.corrupted.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(c.mask.iter().filter(|&&m| m).count(), want);
            // Clean examples keep their labels; inputs are untouched.
            for i in 0..1000 {
                if !c.mask[i] {
                    assert_eq!(c.data.labels[i], d.labels[i]);
                }
            }
            assert_eq!(c.data.x, d.x);
            // Labels drawn uniformly over 10 classes differ from the true one ~90% of the time.
            if want >= 200 {
                let frac = c.labels_changed as f64 / want as f64;
                assert!((frac - 0.9).abs() < 0.05, "{frac}");
            }
        }
        // Deterministic by seed, different across seeds.
        let a = corrupt(&d, 10, NoiseKind::RandY, 0.3, 1).unwrap();
        let b = corrupt(&d, 10, NoiseKind::RandY, 0.3, 1).unwrap();
        let c = corrupt(&d, 10, NoiseKind::RandY, 0.3, 2).unwrap();
        assert_eq!(a.corrupted, b.corrupted);
        assert_eq!(a.data.labels, b.data.labels);
        assert_ne!(a.corrupted, c.corrupted);
    }

    #[test]
    fn rand_x_matches_the_data_mean_and_variance() {
        let d = toy(2000, 16);
        let (m, s) = mean_std(&d.x);
        let c = corrupt(&d, 10, NoiseKind::RandX, 1.0, 3).unwrap();
        assert_eq!(c.data.labels, d.labels);
        let (m2, s2) = mean_std(&c.data.x);
        // 32,000 draws: the sample mean's standard error is s / 179 and the std's s / 253;
        // 5 standard errors.
        assert!((m2 - m).abs() < 5.0 * s / 179.0, "{m2} vs {m}");
        assert!((s2 - s).abs() < 5.0 * s / 253.0, "{s2} vs {s}");
        assert_eq!(c.noise_mean_std, Some((m, s)));
        // Partial randX leaves the clean rows untouched.
        let c = corrupt(&d, 10, NoiseKind::RandX, 0.25, 3).unwrap();
        for i in 0..2000 {
            let same = c.data.x[i * 16..(i + 1) * 16] == d.x[i * 16..(i + 1) * 16];
            assert_eq!(same, !c.mask[i]);
        }
    }

    #[test]
    fn downscale_averages_blocks() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let d = DenseDataset::new(x, vec![1, 4, 4], vec![0]).unwrap();
        let s = downscale(&d, 4, 4, 2).unwrap();
        assert_eq!(s.example_shape, vec![4]);
        assert_eq!(s.x, vec![2.5, 4.5, 10.5, 12.5]);
        assert!(downscale(&d, 4, 4, 3).is_err());
        assert!(downscale(&d, 2, 2, 2).is_err());
        let u = unique_class_labels(&toy(5, 2));
        assert_eq!(u.labels, vec![0, 1, 2, 3, 4]);
    }
}
