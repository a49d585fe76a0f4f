//! The named datasets of the training experiments (`train`, `secret-sharer`, `dp-sweep`, `mia`'s
//! shadow models, `attack`, the audit pipeline): load through `memaudit-data`, hand the arrays
//! to the engine. [`DataSettings`] is the `data` section of their configs (the CLI's data
//! flags), the one type for it.
//!
//! Images (`digits`, `mnist`, `fashion-mnist`) are scaled to [0, 1] (or standardised with
//! `--standardize`). Text corpora (`embedded`,
//! `moby-dick`, `ptb`, `shakespeare`, `sotu`, or a file/folder path) are split into train and valid
//! and cut into LM windows of `seq_len` tokens (the unit DP protects). `imdb` becomes TF-IDF rows
//! for logistic regression; `adult` one-hot/standardised rows for an MLP.

use std::path::PathBuf;

use memaudit_data::{DataCache, ImageSet, Split, Tokenizer, VectorizerOptions, WordVocabOptions};
use memaudit_engine::SparseInput;
use memaudit_engine::datasets::{DenseDataset, SparseDataset, TokenWindowDataset};
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};

/// Where data comes from and how text is tokenised (flags shared by every training command).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSettings {
    /// Dataset: digits, mnist, fashion-mnist, embedded, moby-dick, ptb, shakespeare, sotu, imdb,
    /// adult, or a path to a UTF-8 text file or folder.
    pub data: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    pub data_dir: Option<PathBuf>,
    /// Text tokenisation: char, word, or bpe (a byte-level BPE read from `tokenizer`).
    pub level: String,
    /// The byte-level BPE of level `bpe`: a Hugging Face `tokenizer.json` (GPT-2's kind), a
    /// folder holding one (or `vocab.json` + `merges.txt`), or a run's saved tokenizer.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per language-model window (one window = one training example).
    pub seq_len: usize,
    /// Fraction of a text corpus held out for validation (PTB uses its own split).
    pub valid_fraction: f64,
    /// Use at most this many training examples (a quick run).
    pub max_train: Option<usize>,
    /// Word vocabulary cap (word level).
    pub vocab_size: usize,
    /// Images: standardise pixels, (x - mean) / sd, instead of scaling them to [0, 1]. MNIST and
    /// Fashion-MNIST use their published constants (0.1307/0.3081, 0.2860/0.3530, as torchvision
    /// examples and Opacus do); digits uses its training set's own (data-dependent preprocessing,
    /// which no epsilon accounts for).
    pub standardize: bool,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            data: "embedded".into(),
            data_dir: None,
            level: "char".into(),
            tokenizer: None,
            seq_len: 50,
            valid_fraction: 0.1,
            max_train: None,
            vocab_size: 10_000,
            standardize: false,
        }
    }
}

/// Train and validation text of a corpus.
pub struct TextCorpus {
    pub name: String,
    pub train: String,
    pub valid: String,
}

pub struct ImageData {
    pub train: DenseDataset,
    pub test: DenseDataset,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// The source images (u8) of the training set, for secrets and reports.
    pub train_images: ImageSet,
}

/// The image datasets (sklearn's 8x8 digits built in; the MNIST sets from the data cache).
pub const IMAGE_SETS: [&str; 3] = ["digits", "mnist", "fashion-mnist"];
/// The named text corpora (any other name is read as a path).
pub const TEXT_SETS: [&str; 5] = ["embedded", "moby-dick", "ptb", "shakespeare", "sotu"];
/// The text tokenisations of `level`.
pub const LEVELS: [&str; 3] = ["char", "word", "bpe"];

impl DataSettings {
    pub fn cache(&self) -> DataCache {
        match &self.data_dir {
            Some(d) => DataCache::new(d),
            None => DataCache::default(),
        }
    }

    pub fn is_image(&self) -> bool {
        IMAGE_SETS.contains(&self.data.as_str())
    }

    pub fn is_text(&self) -> bool {
        !self.is_image() && !["imdb", "adult"].contains(&self.data.as_str())
    }

    /// The checks that need no data (fields under `data.`).
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return invalid(
                "data.valid_fraction",
                self.valid_fraction,
                "must be in [0, 1)",
            );
        }
        if self.seq_len == 0 {
            return invalid("data.seq_len", 0, "must be at least 1");
        }
        if self.max_train == Some(0) {
            return invalid("data.max_train", 0, "must be at least 1");
        }
        // Checked here, not only where text is tokenised, so a misspelt level is refused before
        // anything loads (and not silently ignored for images and tables).
        if !LEVELS.contains(&self.level.as_str()) {
            return invalid("data.level", &self.level, "use char, word or bpe");
        }
        // Level bpe without a tokenizer file is checked where one is built from the settings
        // (`secret-sharer`): a saved or imported BPE run carries its own tokenizer.
        match (self.level.as_str(), &self.tokenizer) {
            ("bpe", _) | (_, None) => {}
            (level, Some(path)) => {
                return invalid(
                    "data.tokenizer",
                    path.display(),
                    format!(
                        "is a byte-level BPE, and the level is {level:?}: use level bpe (--level bpe, the default with --tokenizer), or drop the tokenizer"
                    ),
                );
            }
        }
        Ok(())
    }

    /// A dataset of the cache that is not there yet.
    fn missing(&self) -> impl FnOnce(memaudit_data::DataError) -> ExperimentError + '_ {
        move |source| ExperimentError::MissingData {
            field: "data.data".into(),
            name: self.data.clone(),
            source: Box::new(source),
        }
    }

    /// Load an image dataset (train and test), scaled to [0, 1] or standardised (`--standardize`).
    pub fn images(&self) -> Result<ImageData> {
        self.validate()?;
        // The one loader of the image sets (digits: a fixed 75/25 split, seed 0), shared with
        // the dynamics studies' `ImageSource`.
        let (train, test) = crate::data::load_pair(&self.data, self.data_dir.as_ref(), "data")?;
        let train = match self.max_train {
            Some(m) if m < train.n => train.subset(&(0..m).collect::<Vec<_>>())?,
            _ => train,
        };
        let classes = train
            .labels
            .iter()
            .chain(&test.labels)
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let shape = vec![train.channels, train.height, train.width];
        let stats = match (self.standardize, self.data.as_str()) {
            (false, _) => None,
            (true, "mnist") => Some((0.1307, 0.3081)),
            (true, "fashion-mnist") => Some((0.2860, 0.3530)),
            (true, _) => Some(train.mean_std()),
        };
        let to_ds = |s: &ImageSet| -> Result<DenseDataset> {
            let pixels = match stats {
                None => s.to_unit_f32(),
                Some((mean, sd)) => s.to_standardized_f32(mean, sd)?,
            };
            Ok(DenseDataset::new(
                pixels,
                shape.clone(),
                s.labels.iter().map(|&l| l as u32).collect(),
            )?)
        };
        Ok(ImageData {
            train: to_ds(&train)?,
            test: to_ds(&test)?,
            channels: train.channels,
            height: train.height,
            width: train.width,
            classes,
            train_images: train,
        })
    }

    /// Load a text corpus and split it.
    pub fn text(&self) -> Result<TextCorpus> {
        self.validate()?;
        let split = |name: &str, text: String| -> Result<TextCorpus> {
            let cut = ((text.len() as f64) * (1.0 - self.valid_fraction)) as usize;
            // Cut at a line boundary so no line is split between train and valid.
            let cut = text[..cut.min(text.len())]
                .rfind('\n')
                .map_or(cut, |i| i + 1);
            let cut = (0..=cut)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            Ok(TextCorpus {
                name: name.into(),
                train: text[..cut].to_string(),
                valid: text[cut..].to_string(),
            })
        };
        let c = self.cache();
        match self.data.as_str() {
            "embedded" => split(
                "embedded (Moby Dick, ch. 1-42)",
                memaudit_data::embedded_corpus(),
            ),
            "moby-dick" => split("moby-dick", c.moby_dick().map_err(self.missing())?),
            "ptb" => {
                let p = c.ptb().map_err(self.missing())?;
                Ok(TextCorpus {
                    name: "ptb".into(),
                    train: p.train,
                    valid: p.valid,
                })
            }
            "shakespeare" => {
                let plays = c.shakespeare().map_err(self.missing())?;
                split(
                    "shakespeare",
                    plays
                        .into_iter()
                        .map(|p| p.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            }
            "sotu" => {
                let a = c.sotu().map_err(self.missing())?;
                split(
                    "sotu",
                    a.into_iter().map(|a| a.text).collect::<Vec<_>>().join("\n"),
                )
            }
            "imdb" | "adult" | "digits" | "mnist" | "fashion-mnist" => invalid(
                "data.data",
                &self.data,
                format!("not a text corpus (use {} or a path)", TEXT_SETS.join(", ")),
            ),
            path => {
                let text = memaudit_data::read_corpus(std::path::Path::new(path)).map_err(|e| {
                    ExperimentError::Invalid {
                        field: "data.data".into(),
                        value: path.into(),
                        reason: e.to_string(),
                    }
                })?;
                split(path, text)
            }
        }
    }

    /// A tokenizer for a corpus (char: its characters; word: PTB style with a vocabulary cap;
    /// bpe: the file of `tokenizer`, whatever the corpus), plus `extra` tokens (a canary
    /// alphabet; a byte-level BPE covers every byte and takes none).
    pub fn tokenizer(&self, corpus: &TextCorpus, extra: &[String]) -> Result<Tokenizer> {
        if self.level == "bpe" {
            return self.bpe_tokenizer();
        }
        let mut tok = match self.level.as_str() {
            "char" => Tokenizer::char_from_text(&corpus.train, true)?,
            "word" => Tokenizer::word_from_text(
                &corpus.train,
                &WordVocabOptions {
                    max_size: Some(self.vocab_size),
                    min_count: 1,
                },
            )?,
            other => return invalid("data.level", other, "use char, word or bpe"),
        };
        if !extra.is_empty() {
            tok.add_tokens(extra)?;
        }
        Ok(tok)
    }

    /// The byte-level BPE of `tokenizer`: a file (a Hugging Face tokenizer.json, or memaudit's
    /// saved one) or a folder ([`Tokenizer::bpe_from_folder`]). Anything but a BPE is refused.
    pub fn bpe_tokenizer(&self) -> Result<Tokenizer> {
        let Some(path) = &self.tokenizer else {
            return invalid(
                "data.level",
                "bpe",
                "a byte-level BPE is read from a file: `secret-sharer --tokenizer PATH`, or `tokenizer = PATH` under [data] in a config file",
            );
        };
        let bad = |reason: String| ExperimentError::Invalid {
            field: "data.tokenizer".into(),
            value: path.display().to_string(),
            reason,
        };
        let tok = if path.is_dir() {
            Tokenizer::bpe_from_folder(path)
        } else if path.is_file() {
            Tokenizer::load(path)
        } else {
            return Err(bad("no such file or folder".into()));
        }
        .map_err(|e| bad(e.to_string()))?;
        if tok.kind() != memaudit_data::TokenizerKind::Bpe {
            return Err(bad(format!(
                "is a {:?} tokenizer, not a byte-level BPE (a Hugging Face tokenizer file whose model type is BPE)",
                tok.kind()
            )));
        }
        Ok(tok)
    }

    /// LM windows of a token stream (capped by --max-train).
    pub fn windows(&self, tokens: Vec<u32>) -> Result<TokenWindowDataset> {
        let mut ds = TokenWindowDataset::new(tokens, self.seq_len)?;
        if let Some(m) = self.max_train {
            let keep = m.min(memaudit_engine::train::Dataset::len(&ds));
            ds.tokens.truncate(keep * self.seq_len + 1);
        }
        Ok(ds)
    }

    /// IMDB reviews as TF-IDF rows (train on 80%, test on 20%, seeded split by index parity of a hash).
    pub fn imdb(
        &self,
        max_features: usize,
    ) -> Result<(SparseDataset, SparseDataset, memaudit_data::TextVectorizer)> {
        let reviews = self.cache().imdb().map_err(self.missing())?;
        let (mut tr, mut te): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for (i, r) in reviews.into_iter().enumerate() {
            if i % 5 == 4 { te.push(r) } else { tr.push(r) }
        }
        // The IMDB file is sorted by label, so a prefix would hold one class: keep m evenly
        // spaced reviews instead (deterministic, and balanced like the whole set).
        if let Some(m) = self.max_train
            && m < tr.len()
        {
            let n = tr.len();
            let mut picked = Vec::with_capacity(m);
            let mut taken = tr.into_iter().enumerate();
            for k in 0..m {
                let want = k * n / m;
                for (i, r) in taken.by_ref() {
                    if i == want {
                        picked.push(r);
                        break;
                    }
                }
            }
            tr = picked;
        }
        let docs: Vec<&str> = tr.iter().map(|r| r.text.as_str()).collect();
        let vec = memaudit_data::TextVectorizer::fit(
            &docs,
            VectorizerOptions {
                max_features: Some(max_features),
                ..Default::default()
            },
        )?;
        let to_ds = |rs: &[memaudit_data::Review]| {
            let m = vec.transform(&rs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>());
            SparseDataset {
                rows: SparseInput {
                    dim: m.cols,
                    row_ptr: m.row_ptr,
                    indices: m.indices,
                    values: m.values,
                },
                labels: rs.iter().map(|r| r.label as u32).collect(),
            }
        };
        Ok((to_ds(&tr), to_ds(&te), vec))
    }

    /// UCI Adult as dense rows.
    pub fn adult(&self) -> Result<(DenseDataset, DenseDataset)> {
        let c = self.cache();
        let tr = c.adult(Split::Train).map_err(self.missing())?;
        let te = c.adult(Split::Test).map_err(self.missing())?;
        let enc = memaudit_data::AdultEncoder::fit(&tr)?;
        let conv = |recs: &[memaudit_data::AdultRecord]| -> Result<DenseDataset> {
            let (m, y) = enc.transform(recs);
            Ok(DenseDataset::new(
                m.data,
                vec![m.cols],
                y.into_iter().map(u32::from).collect(),
            )?)
        };
        let mut train = conv(&tr)?;
        if let Some(m) = self.max_train
            && m < train.labels.len()
        {
            train = train.subset(&(0..m).collect::<Vec<_>>());
        }
        Ok((train, conv(&te)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(standardize: bool) -> ImageData {
        DataSettings {
            data: "digits".into(),
            standardize,
            ..DataSettings::default()
        }
        .images()
        .unwrap()
    }

    fn mean_sd(x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let v = x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n;
        (m, v.sqrt())
    }

    #[test]
    fn images_are_unit_scaled_by_default_and_standardised_on_request() {
        let unit = digits(false);
        assert!(unit.train.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // digits has no published constants: its own training statistics, so mean 0 and sd 1
        // there (to f32 rounding), and the test set transformed with the same constants.
        let std = digits(true);
        let (m, sd) = mean_sd(&std.train.x);
        assert!(
            m.abs() < 1e-4 && (sd - 1.0).abs() < 1e-4,
            "mean {m}, sd {sd}"
        );
        let (um, usd) = mean_sd(&unit.train.x);
        let back = std.test.x[7] as f64 * usd + um;
        assert!((back - unit.test.x[7] as f64).abs() < 1e-5);
    }

    #[test]
    fn a_misspelt_level_is_refused_before_anything_loads() {
        let s = DataSettings {
            data: "digits".into(),
            level: "chars".into(),
            ..DataSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert_eq!(e, "data.level chars: use char, word or bpe");
        assert!(s.images().is_err(), "images() validates too");
    }
}
