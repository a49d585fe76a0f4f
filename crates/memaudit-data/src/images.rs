//! Image sets: MNIST and Fashion-MNIST (IDX), the LFW subset (.npy) as secret images, and the 8x8
//! digits, all as one `ImageSet` of bytes with f32 normalisation helpers.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::idx::read_idx;

/// Images as bytes, image-major then channel, row, column (NCHW): pixel `(i, c, y, x)` is at
/// `((i * channels + c) * height + y) * width + x`. `labels[i]` is image `i`'s class. Pixel values
/// run from 0 to `max_value` (255 for MNIST-style files, 16 for the 8x8 digits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// The value that means full intensity (the scale for `to_unit_f32`).
    pub max_value: u8,
}

/// Which part of a train/test dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl ImageSet {
    /// Check that the sizes agree.
    pub fn new(
        n: usize,
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Vec<u8>,
        max_value: u8,
    ) -> Result<Self> {
        let need = [n, channels, height, width]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if need != Some(pixels.len()) || labels.len() != n || max_value == 0 {
            return Err(DataError::InvalidArgument(format!(
                "image set of {n} x {channels}x{height}x{width} needs {} pixels and {n} labels (got {} and {}) and a positive max value (got {max_value})",
                need.map_or("too many".to_string(), |c| c.to_string()),
                pixels.len(),
                labels.len()
            )));
        }
        Ok(Self {
            n,
            channels,
            height,
            width,
            pixels,
            labels,
            max_value,
        })
    }

    /// Values per image (`channels * height * width`).
    pub fn pixels_per_image(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.pixels_per_image();
        &self.pixels[i * per..(i + 1) * per]
    }

    /// Number of classes: the largest label plus one (0 for an empty set).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// All pixels scaled to [0, 1] (`value / max_value`, a correctly rounded division as in
    /// torchvision's `ToTensor`), same layout.
    pub fn to_unit_f32(&self) -> Vec<f32> {
        let max = f32::from(self.max_value);
        self.pixels.iter().map(|&v| f32::from(v) / max).collect()
    }

    /// Mean and (population) standard deviation of the [0, 1]-scaled pixels (accumulated in f64).
    pub fn mean_std(&self) -> (f32, f32) {
        if self.pixels.is_empty() {
            return (0.0, 0.0);
        }
        let scale = 1.0 / f64::from(self.max_value);
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for &v in &self.pixels {
            let x = f64::from(v) * scale;
            s += x;
            s2 += x * x;
        }
        let n = self.pixels.len() as f64;
        let mean = s / n;
        ((mean) as f32, (s2 / n - mean * mean).max(0.0).sqrt() as f32)
    }

    /// Pixels scaled to [0, 1], then standardised: `(x - mean) / std` (e.g. MNIST's usual
    /// 0.1307 / 0.3081, or this set's own `mean_std()`).
    pub fn to_standardized_f32(&self, mean: f32, std: f32) -> Result<Vec<f32>> {
        if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
            return Err(DataError::InvalidArgument(format!(
                "standardisation needs a finite mean and a positive std (got {mean}, {std})"
            )));
        }
        let inv = 1.0 / std;
        Ok(self
            .to_unit_f32()
            .into_iter()
            .map(|x| (x - mean) * inv)
            .collect())
    }

    /// The images `indices` (in that order; repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<ImageSet> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(DataError::InvalidArgument(format!(
                "image index {bad} is out of range (there are {})",
                self.n
            )));
        }
        let mut pixels = Vec::with_capacity(indices.len() * self.pixels_per_image());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(ImageSet {
            n: indices.len(),
            pixels,
            labels,
            ..*self
        })
    }

    /// Deterministic train/test split: a seeded ChaCha8 shuffle puts `round(n * test_fraction)`
    /// images in the test part; each part keeps the original order.
    pub fn split_train_test(&self, test_fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(DataError::InvalidArgument(format!(
                "test fraction {test_fraction} must be between 0 and 1"
            )));
        }
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_test = ((self.n as f64) * test_fraction).round() as usize;
        let (test, train) = order.split_at(n_test.min(self.n));
        let (mut train, mut test) = (train.to_vec(), test.to_vec());
        train.sort_unstable();
        test.sort_unstable();
        Ok((self.subset(&train)?, self.subset(&test)?))
    }
}

/// An image IDX file (`n x height x width`, or `n x channels x height x width`) and its label IDX
/// file (`n`). Errors name the file; a count mismatch names both.
pub fn load_idx_images(images: &Path, labels: &Path) -> Result<ImageSet> {
    let img = read_idx(images)?;
    let lab = read_idx(labels)?;
    let (n, channels, height, width) = match img.dims[..] {
        [n, h, w] => (n, 1, h, w),
        [n, c, h, w] => (n, c, h, w),
        _ => {
            return Err(DataError::BadIdx {
                path: images.to_path_buf(),
                reason: format!(
                    "dimensions {:?}: expected 3 (n, height, width) or 4 (n, channels, height, width)",
                    img.dims
                ),
            });
        }
    };
    if lab.dims.len() != 1 {
        return Err(DataError::BadIdx {
            path: labels.to_path_buf(),
            reason: format!("dimensions {:?}: a label file has one dimension", lab.dims),
        });
    }
    if lab.dims[0] != n {
        return Err(DataError::BadFormat {
            path: labels.to_path_buf(),
            reason: format!(
                "{} labels for {n} images in {}",
                lab.dims[0],
                images.display()
            ),
        });
    }
    ImageSet::new(n, channels, height, width, img.data, lab.data, 255)
}

/// The file names an MNIST-style folder holds for `split` (images, labels), without `.gz`.
pub fn mnist_file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// MNIST or Fashion-MNIST from a folder holding the canonical file names, each plain or `.gz`.
pub fn load_mnist_dir(dir: &Path, split: Split) -> Result<ImageSet> {
    let (images, labels) = mnist_file_names(split);
    load_idx_images(
        &find_plain_or_gz(dir, images)?,
        &find_plain_or_gz(dir, labels)?,
    )
}

fn find_plain_or_gz(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.exists() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    if dir.exists() && !dir.is_dir() {
        return Err(DataError::BadFormat {
            path: dir.to_path_buf(),
            reason: "is a file; give the folder holding the IDX files".into(),
        });
    }
    Err(DataError::NotFound { path: plain })
}

/// The LFW subset of scikit-image (`skimage/data/lfw_subset.npy`): 200 grey 25x25 images as floats
/// in [0, 1]; the first 100 are faces (label 1), the last 100 are not (label 0). Pixels become
/// `round(255 x)`. Used as a source of secret images.
pub fn load_lfw_subset(path: &Path) -> Result<ImageSet> {
    let (shape, values) = read_npy_f64(path)?;
    let bad = |reason: String| DataError::BadNpy {
        path: path.to_path_buf(),
        reason,
    };
    let [n, h, w] = shape[..] else {
        return Err(bad(format!("shape {shape:?}, expected (200, 25, 25)")));
    };
    if n != 200 {
        return Err(bad(format!(
            "shape {shape:?}: the LFW subset has 200 images (100 faces, then 100 non-faces)"
        )));
    }
    let mut pixels = Vec::with_capacity(values.len());
    for (i, &x) in values.iter().enumerate() {
        if !(0.0..=1.0).contains(&x) {
            return Err(bad(format!(
                "value {x} at flat index {i} is outside [0, 1]"
            )));
        }
        pixels.push((x * 255.0).round() as u8);
    }
    let labels = (0..n).map(|i| u8::from(i < n / 2)).collect();
    ImageSet::new(n, 1, h, w, pixels, labels, 255)
}

/// A C-order float array (f64 or f32, either byte order) from a `.npy` file: shape and values.
pub fn read_npy_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let bytes = crate::fsutil::read_file(path)?;
    let bad = |reason: String| DataError::BadNpy {
        path: path.to_path_buf(),
        reason,
    };
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a NumPy .npy file ({e})")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-order array; save it in C order".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let values: Vec<f64> = match npy.try_data::<f64>() {
        Ok(reader) => reader.collect::<std::io::Result<_>>(),
        Err(npy) => match npy.try_data::<f32>() {
            Ok(reader) => reader
                .map(|r| r.map(f64::from))
                .collect::<std::io::Result<_>>(),
            Err(npy) => {
                return Err(bad(format!(
                    "dtype {:?}: expected float64 or float32",
                    npy.dtype()
                )));
            }
        },
    }
    .map_err(|e| bad(format!("data is truncated or damaged ({e})")))?;
    Ok((shape, values))
}

/// The 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits", test part as in
/// scikit-learn's `load_digits`): 1,797 images, values 0..16, labels 0..9, embedded in the
/// `smartcore` crate. For fast engine tests; split with `split_train_test`.
pub fn digits() -> Result<ImageSet> {
    let ds = smartcore::dataset::digits::load_dataset();
    let bad = |reason: String| DataError::BadFormat {
        path: PathBuf::from("smartcore::dataset::digits"),
        reason,
    };
    if ds.num_features != 64
        || ds.data.len() != ds.num_samples * 64
        || ds.target.len() != ds.num_samples
    {
        return Err(bad(format!(
            "{} samples x {} features, expected 8x8 images",
            ds.num_samples, ds.num_features
        )));
    }
    let to_u8 = |v: f32, max: f32| -> Result<u8> {
        if v.fract() == 0.0 && (0.0..=max).contains(&v) {
            Ok(v as u8)
        } else {
            Err(bad(format!("value {v} is not an integer in 0..={max}")))
        }
    };
    let pixels = ds
        .data
        .iter()
        .map(|&v| to_u8(v, 16.0))
        .collect::<Result<Vec<u8>>>()?;
    let labels = ds
        .target
        .iter()
        .map(|&v| to_u8(v, 9.0))
        .collect::<Result<Vec<u8>>>()?;
    ImageSet::new(ds.num_samples, 1, 8, 8, pixels, labels, 16)
}
