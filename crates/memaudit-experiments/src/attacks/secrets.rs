//! Where a secret comes from: the training images (the paper's choice), the LFW faces, a folder
//! of the user's own PNG pictures, or IMDB training reviews (the text variant).

use std::path::{Path, PathBuf};

use memaudit_attacks::{AttackError, ImageSecret, TextSecret, decode_png_gray};
use memaudit_data::ImageSet;

use super::task::{ImageTask, Task, TextTask};
use crate::error::{ExperimentError, Result, invalid};

/// The setting that names the secret (`--secret`).
const SECRET: &str = "common.secret";
/// The setting that sizes it (`--secret-count`).
const COUNT: &str = "common.secret_count";

/// Where the secret comes from (`common.secret`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    TrainImages,
    Lfw,
    Imdb,
    Folder(PathBuf),
}

impl SecretSource {
    /// Parse `common.secret` for `task` (default: the training images, or the reviews for imdb).
    pub fn parse(flag: Option<&str>, task: &Task) -> Result<Self> {
        let default = match task {
            Task::Image(_) => "train-images",
            Task::Text(_) => "imdb",
        };
        let text = flag.unwrap_or(default);
        let source = match text {
            "train-images" => SecretSource::TrainImages,
            "lfw" => SecretSource::Lfw,
            "imdb" => SecretSource::Imdb,
            path if Path::new(path).is_dir() => SecretSource::Folder(PathBuf::from(path)),
            other => {
                return invalid(
                    SECRET,
                    other,
                    "use train-images, lfw, imdb or a folder of PNG images",
                );
            }
        };
        match (&source, task) {
            (SecretSource::Imdb, Task::Image(_)) => invalid(
                SECRET,
                "imdb",
                "documents are the secret of the text variant; use --dataset imdb (bag-of-words logistic regression)",
            ),
            (SecretSource::Imdb, Task::Text(_)) => Ok(source),
            (_, Task::Text(_)) => invalid(
                SECRET,
                text,
                "--dataset imdb trains a text classifier, whose secret is imdb (its training reviews)",
            ),
            _ => Ok(source),
        }
    }

    pub fn name(&self) -> String {
        match self {
            SecretSource::TrainImages => "train-images".into(),
            SecretSource::Lfw => "lfw".into(),
            SecretSource::Imdb => "imdb".into(),
            SecretSource::Folder(p) => p.display().to_string(),
        }
    }
}

/// Images a secret is drawn from (its first K) and the population whose mean image is the
/// baseline guess.
pub struct ImagePool {
    pub source: String,
    /// "training images", "LFW faces", "PNG images".
    pub what: &'static str,
    pub images: ImageSecret,
}

/// Gray u8 images on the 0-255 scale (the digits' 0-16 are rescaled, rounding to nearest), so
/// MAPE is on the paper's scale for every dataset.
pub fn gray_secret(set: &ImageSet) -> Result<ImageSecret> {
    if set.channels != 1 {
        return Err(ExperimentError::protocol(format!(
            "secret images must be gray, got {} channels",
            set.channels
        )));
    }
    let max = u32::from(set.max_value);
    let pixels = set
        .pixels
        .iter()
        .map(|&v| ((u32::from(v) * 255 + max / 2) / max).min(255) as u8)
        .collect();
    Ok(ImageSecret::new(set.n, set.height, set.width, pixels)?)
}

pub fn image_pool(source: &SecretSource, task: &ImageTask) -> Result<ImagePool> {
    match source {
        SecretSource::TrainImages => Ok(ImagePool {
            source: source.name(),
            what: "training images",
            images: task.train_images.clone(),
        }),
        SecretSource::Lfw => {
            let set = task
                .data
                .cache()
                .lfw_subset()
                .map_err(|e| ExperimentError::Invalid {
                    field: SECRET.into(),
                    value: "lfw".into(),
                    reason: format!("run `memaudit data fetch --only lfw-subset` first ({e})"),
                })?;
            // The first 100 images of the subset are the faces.
            let faces = set.subset(&(0..100.min(set.n)).collect::<Vec<_>>())?;
            Ok(ImagePool {
                source: source.name(),
                what: "LFW faces",
                images: gray_secret(&faces)?,
            })
        }
        SecretSource::Folder(dir) => Ok(ImagePool {
            source: source.name(),
            what: "PNG images",
            images: read_png_folder(dir)?,
        }),
        SecretSource::Imdb => invalid(SECRET, "imdb", "needs --dataset imdb"),
    }
}

/// Every `*.png` of `dir`, in file-name order, as gray images that must all have one size.
pub fn read_png_folder(dir: &Path) -> Result<ImageSecret> {
    let shown = dir.display();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ExperimentError::Invalid {
            field: SECRET.into(),
            value: shown.to_string(),
            reason: format!("cannot list the folder: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return invalid(SECRET, shown, "holds no .png files");
    }
    let mut images = Vec::with_capacity(files.len());
    let mut size: Option<(usize, usize)> = None;
    for f in &files {
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let bytes = std::fs::read(f).map_err(|e| ExperimentError::Invalid {
            field: SECRET.into(),
            value: shown.to_string(),
            reason: format!("cannot read {name}: {e}"),
        })?;
        let img = decode_png_gray(&bytes).map_err(|e| ExperimentError::Invalid {
            field: SECRET.into(),
            value: shown.to_string(),
            reason: format!("{name}: {e}"),
        })?;
        match size {
            None => size = Some((img.height, img.width)),
            Some((h, w)) if (h, w) != (img.height, img.width) => {
                return invalid(
                    SECRET,
                    shown,
                    AttackError::ImageSizeMismatch {
                        context: name,
                        expected_height: h,
                        expected_width: w,
                        found_height: img.height,
                        found_width: img.width,
                    }
                    .to_string(),
                );
            }
            Some(_) => {}
        }
        images.push(img.pixels);
    }
    let (h, w) = size.unwrap_or((0, 0));
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    Ok(ImageSecret::from_images(h, w, &refs)?)
}

/// The first `count` images of the pool (default `default`, at most the pool).
pub fn take_images(pool: &ImagePool, count: Option<usize>, default: usize) -> Result<ImageSecret> {
    let n = pool.images.n_images();
    let k = match count {
        Some(k) if k > n => {
            return invalid(
                COUNT,
                k,
                format!("the secret {} has only {n} {}", pool.source, pool.what),
            );
        }
        Some(k) => k,
        None => default.min(n),
    };
    if k == 0 {
        return Err(ExperimentError::protocol(format!(
            "the attack's capacity holds no whole {}x{} image; use a larger model or a smaller secret",
            pool.images.height(),
            pool.images.width()
        )));
    }
    Ok(pool.images.first(k)?)
}

/// The training reviews as documents of distinct word indices (the features a bag-of-words
/// model sees), in training-set order.
pub fn training_documents(task: &TextTask) -> Vec<Vec<u32>> {
    let rows = &task.train.rows;
    (0..task.train.labels.len())
        .map(|i| rows.indices[rows.row_ptr[i]..rows.row_ptr[i + 1]].to_vec())
        .collect()
}

/// The first `k` documents as a secret over the task's vocabulary.
pub fn text_secret(task: &TextTask, docs: &[Vec<u32>], k: usize) -> Result<TextSecret> {
    Ok(TextSecret::new(
        task.terms.len() as u32,
        docs[..k.min(docs.len())].to_vec(),
    )?)
}

/// The largest `k <= max` whose secret (its first k images or documents) takes at most
/// `capacity_bits` under `bits_of(k)`, by bisection: the bits grow with k (for a compressed
/// stream, in practice; the caller embeds and so re-checks what it picked). 0 if none fits.
pub fn largest_fitting_prefix(
    max: usize,
    capacity_bits: u64,
    bits_of: impl Fn(usize) -> Result<u64>,
) -> Result<usize> {
    let (mut lo, mut hi) = (0usize, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if bits_of(mid)? <= capacity_bits {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// The words of a document, for the report.
pub fn words(task: &TextTask, doc: &[u32], max: usize) -> String {
    let mut s: Vec<&str> = doc
        .iter()
        .take(max)
        .map(|&w| task.terms.get(w as usize).map_or("?", String::as_str))
        .collect();
    if doc.len() > max {
        s.push("...");
    }
    s.join(" ")
}
