//! The data flags: loading lives in `memaudit_experiments::datasets` ([`DataSettings`]); these
//! methods convert the flags and call it, for the commands that have not moved to the
//! experiments layer yet.
//!
//! Images (`digits`, `mnist`, `fashion-mnist`) are scaled to [0, 1] (or standardised with
//! `--standardize`). Text corpora (`embedded`,
//! `moby-dick`, `ptb`, `shakespeare`, `sotu`, or a file/folder path) are split into train and valid
//! and cut into LM windows of `seq_len` tokens (the unit DP protects). `imdb` becomes TF-IDF rows
//! for logistic regression; `adult` one-hot/standardised rows for an MLP.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_data::DataCache;
use memaudit_engine::datasets::SparseDataset;
pub use memaudit_experiments::datasets::{DataSettings, ImageData};

/// Where data comes from and how text is tokenised (flags shared by every training command).
#[derive(clap::Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DataArgs {
    /// Dataset: digits, mnist, fashion-mnist, embedded, moby-dick, ptb, shakespeare, sotu, imdb,
    /// adult, or a path to a UTF-8 text file or folder.
    #[arg(long, default_value = "embedded")]
    pub data: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Text tokenisation: char or word.
    #[arg(long, default_value = "char")]
    pub level: String,
    /// Tokens per language-model window (one window = one training example).
    #[arg(long, default_value_t = 50)]
    pub seq_len: usize,
    /// Fraction of a text corpus held out for validation (PTB uses its own split).
    #[arg(long, default_value_t = 0.1)]
    pub valid_fraction: f64,
    /// Use at most this many training examples (a quick run).
    #[arg(long, value_name = "N")]
    pub max_train: Option<usize>,
    /// Word vocabulary cap (word level).
    #[arg(long, default_value_t = 10_000)]
    pub vocab_size: usize,
    /// Images: standardise pixels, (x - mean) / sd, instead of scaling them to [0, 1]. MNIST and
    /// Fashion-MNIST use their published constants (0.1307/0.3081, 0.2860/0.3530, as torchvision
    /// examples and Opacus do); digits uses its training set's own (data-dependent preprocessing,
    /// which no epsilon accounts for).
    #[arg(long)]
    #[serde(default)]
    pub standardize: bool,
}

impl From<&DataArgs> for DataSettings {
    // `tokenizer` (set by `secret-sharer --tokenizer`, not a shared flag) keeps its default.
    fn from(a: &DataArgs) -> Self {
        Self {
            data: a.data.clone(),
            data_dir: a.data_dir.clone(),
            level: a.level.clone(),
            seq_len: a.seq_len,
            valid_fraction: a.valid_fraction,
            max_train: a.max_train,
            vocab_size: a.vocab_size,
            standardize: a.standardize,
            ..Default::default()
        }
    }
}

impl DataArgs {
    /// These flags as the experiments layer's data settings.
    pub fn settings(&self) -> DataSettings {
        DataSettings::from(self)
    }

    pub fn cache(&self) -> DataCache {
        self.settings().cache()
    }

    pub fn is_image(&self) -> bool {
        self.settings().is_image()
    }

    pub fn images(&self) -> Result<ImageData> {
        Ok(self.settings().images()?)
    }

    pub fn imdb(
        &self,
        max_features: usize,
    ) -> Result<(SparseDataset, SparseDataset, memaudit_data::TextVectorizer)> {
        Ok(self.settings().imdb(max_features)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_defaults_are_the_settings_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            data: DataArgs,
        }
        let cli = <Cli as clap::Parser>::parse_from(["x"]);
        assert_eq!(cli.data.settings(), DataSettings::default());
    }
}
