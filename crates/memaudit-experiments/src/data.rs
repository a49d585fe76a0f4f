//! Image datasets for the experiments, loaded through `memaudit-data` and scaled to [0, 1].

use std::path::PathBuf;

use memaudit_data::{DataCache, ImageSet, Split};
use memaudit_engine::datasets::DenseDataset;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};

/// The image datasets (the training experiments' list).
pub use crate::datasets::IMAGE_SETS;

/// Training and test images, flat rows in [0, 1].
pub struct Images {
    pub name: String,
    pub train: DenseDataset,
    pub test: DenseDataset,
    pub classes: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Which image dataset, from where, and how much of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSource {
    /// mnist, fashion-mnist or digits (sklearn's 8x8 digits, built in).
    pub data: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    pub data_dir: Option<PathBuf>,
    /// Use the first N training examples (`None`: the experiment's default).
    pub max_train: Option<usize>,
    /// Use the first N examples of the test split for validation.
    pub valid_size: usize,
}

impl Default for ImageSource {
    fn default() -> Self {
        Self {
            data: "mnist".into(),
            data_dir: None,
            max_train: None,
            valid_size: 2000,
        }
    }
}

impl ImageSource {
    /// The checks that need no data; `section` is this source's field path in its config.
    pub fn validate(&self, section: &str) -> Result<()> {
        if !IMAGE_SETS.contains(&self.data.as_str()) {
            return invalid(
                format!("{section}.data"),
                &self.data,
                "dynamics needs an image dataset (mnist, fashion-mnist or digits)",
            );
        }
        if let Some(m) = self.max_train
            && m < 2
        {
            return invalid(format!("{section}.max_train"), m, "must be at least 2");
        }
        if self.valid_size == 0 {
            return invalid(format!("{section}.valid_size"), 0, "must be at least 1");
        }
        Ok(())
    }

    /// Load the first `max_train` training images (flattened) and the first `valid_size` test
    /// images as the validation set.
    pub fn load_flat(&self, section: &str, max_train: usize) -> Result<Images> {
        let (train, test) = load_pair(&self.data, self.data_dir.as_ref(), section)?;
        let train = if max_train < train.n {
            train.subset(&(0..max_train).collect::<Vec<_>>())?
        } else {
            train
        };
        let n_valid = self.valid_size.min(test.n);
        let test = test.subset(&(0..n_valid).collect::<Vec<_>>())?;
        let classes = train
            .labels
            .iter()
            .chain(&test.labels)
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let flat = |s: &ImageSet| -> Result<DenseDataset> {
            let per = s.channels * s.height * s.width;
            Ok(DenseDataset::new(
                s.to_unit_f32(),
                vec![per],
                s.labels.iter().map(|&l| l as u32).collect(),
            )?)
        };
        Ok(Images {
            name: self.data.clone(),
            train: flat(&train)?,
            test: flat(&test)?,
            classes,
            channels: train.channels,
            height: train.height,
            width: train.width,
        })
    }
}

/// Train and test split of an image dataset (digits: a fixed 75/25 split, seed 0).
pub(crate) fn load_pair(
    name: &str,
    data_dir: Option<&PathBuf>,
    section: &str,
) -> Result<(ImageSet, ImageSet)> {
    let cache = || data_dir.map_or_else(DataCache::default, DataCache::new);
    let missing = |source| ExperimentError::MissingData {
        field: format!("{section}.data"),
        name: name.to_string(),
        source: Box::new(source),
    };
    Ok(match name {
        "digits" => memaudit_data::digits()?.split_train_test(0.25, 0)?,
        "mnist" => (
            cache().mnist(Split::Train).map_err(missing)?,
            cache().mnist(Split::Test).map_err(missing)?,
        ),
        "fashion-mnist" => (
            cache().fashion_mnist(Split::Train).map_err(missing)?,
            cache().fashion_mnist(Split::Test).map_err(missing)?,
        ),
        other => {
            return invalid(
                format!("{section}.data"),
                other,
                "not an image dataset (use digits, mnist or fashion-mnist)",
            );
        }
    })
}
