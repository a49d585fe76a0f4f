//! What every training experiment shares: where the data comes from ([`DataSettings`]), which
//! model ([`ModelSettings`]), the optimizer ([`OptimSettings`]) and DP-SGD ([`PrivacySettings`]),
//! and their translation into the engine's [`TrainConfig`] ([`train_config`]: noise calibrated
//! here when a target epsilon is given).
//!
//! The fields are named after the CLI flags that set them (`seq_len` for `--seq-len`), so a
//! config error names its flag and `--config` files read like the command line. Errors name the
//! field by its path in the experiment's config (`section` is this group's path there: `data`,
//! `model`, ...).

use std::path::{Path, PathBuf};

use memaudit_data::{DataCache, ImageSet, Split, Tokenizer, VectorizerOptions, WordVocabOptions};
use memaudit_engine::datasets::{DenseDataset, SparseDataset, TokenWindowDataset};
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::privacy::{self, AccountantKind};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{ClipConfig, Dataset, PrivacyConfig, TrainConfig};
use memaudit_engine::{EngineError, Model, ModelConfig, SparseInput};
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result, invalid};
use crate::observer::Observer;
use crate::optim::OptimSettings;

/// The image datasets (sklearn's 8x8 digits built in; MNIST sets from the data cache).
pub const IMAGE_SETS: [&str; 3] = ["digits", "mnist", "fashion-mnist"];
/// The named text corpora (any other name is read as a path).
pub const TEXT_SETS: [&str; 5] = ["embedded", "moby-dick", "ptb", "shakespeare", "sotu"];

/// Where data comes from and how text is tokenised (the `--data`, `--seq-len`, ... flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSettings {
    /// digits, mnist, fashion-mnist, embedded, moby-dick, ptb, shakespeare, sotu, imdb, adult, or
    /// a path to a UTF-8 text file or folder.
    pub data: String,
    /// The data cache of `memaudit data fetch` (default: $MEMAUDIT_DATA or ./data).
    pub data_dir: Option<PathBuf>,
    /// Text tokenisation: char or word.
    pub level: String,
    /// Tokens per language-model window (one window = one training example).
    pub seq_len: usize,
    /// Fraction of a text corpus held out for validation (PTB uses its own split).
    pub valid_fraction: f64,
    /// Use at most this many training examples.
    pub max_train: Option<usize>,
    /// Word vocabulary cap (word level).
    pub vocab_size: usize,
    /// Images: standardise pixels, (x - mean) / sd, instead of scaling them to [0, 1].
    pub standardize: bool,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            data: "embedded".into(),
            data_dir: None,
            level: "char".into(),
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

/// Training and test images as engine datasets, with their source images.
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

/// What the data looks like, for choosing and sizing a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputShape {
    Image {
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    },
    Flat {
        features: usize,
        classes: usize,
    },
    Sparse {
        features: usize,
        classes: usize,
    },
    Tokens {
        vocab: usize,
    },
}

/// Data ready for the trainer.
pub struct Prepared {
    pub name: String,
    pub train: Box<dyn Dataset>,
    pub valid: Option<Box<dyn Dataset>>,
    pub input: InputShape,
    pub tokenizer: Option<Tokenizer>,
}

impl DataSettings {
    pub fn cache(&self) -> DataCache {
        self.data_dir
            .as_ref()
            .map_or_else(DataCache::default, DataCache::new)
    }

    pub fn is_image(&self) -> bool {
        IMAGE_SETS.contains(&self.data.as_str())
    }

    pub fn is_text(&self) -> bool {
        !self.is_image() && !["imdb", "adult"].contains(&self.data.as_str())
    }

    /// The checks that need no data.
    pub fn validate(&self, section: &str) -> Result<()> {
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return invalid(
                format!("{section}.valid_fraction"),
                self.valid_fraction,
                "must be in [0, 1)",
            );
        }
        if self.seq_len == 0 {
            return invalid(format!("{section}.seq_len"), 0, "must be at least 1");
        }
        if self.max_train == Some(0) {
            return invalid(format!("{section}.max_train"), 0, "must be at least 1");
        }
        if !["char", "word"].contains(&self.level.as_str()) {
            return invalid(format!("{section}.level"), &self.level, "use char or word");
        }
        Ok(())
    }

    fn missing(&self, section: &str) -> impl Fn(memaudit_data::DataError) -> ExperimentError {
        let (field, name) = (format!("{section}.data"), self.data.clone());
        move |source| ExperimentError::MissingData {
            field: field.clone(),
            name: name.clone(),
            source: Box::new(source),
        }
    }

    /// An image dataset (train and test), scaled to [0, 1] or standardised.
    pub fn images(&self, section: &str) -> Result<ImageData> {
        self.validate(section)?;
        let (train, test) = crate::data::load_pair(&self.data, self.data_dir.as_ref(), section)?;
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
        // MNIST and Fashion-MNIST: their published constants (as torchvision examples and
        // Opacus use); digits: its own training statistics (data-dependent preprocessing, which
        // no epsilon accounts for).
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

    /// A text corpus, split into train and valid at a line boundary.
    pub fn text(&self, section: &str) -> Result<TextCorpus> {
        self.validate(section)?;
        let split = |name: &str, text: String| -> TextCorpus {
            let cut = ((text.len() as f64) * (1.0 - self.valid_fraction)) as usize;
            // Cut at a line boundary so no line is split between train and valid.
            let cut = text[..cut.min(text.len())]
                .rfind('\n')
                .map_or(cut, |i| i + 1);
            let cut = (0..=cut)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            TextCorpus {
                name: name.into(),
                train: text[..cut].to_string(),
                valid: text[cut..].to_string(),
            }
        };
        let c = self.cache();
        let missing = self.missing(section);
        Ok(match self.data.as_str() {
            "embedded" => split(
                "embedded (Moby Dick, ch. 1-42)",
                memaudit_data::embedded_corpus(),
            ),
            "moby-dick" => split("moby-dick", c.moby_dick().map_err(missing)?),
            "ptb" => {
                let p = c.ptb().map_err(missing)?;
                TextCorpus {
                    name: "ptb".into(),
                    train: p.train,
                    valid: p.valid,
                }
            }
            "shakespeare" => {
                let plays = c.shakespeare().map_err(missing)?;
                let text = plays.into_iter().map(|p| p.text).collect::<Vec<_>>();
                split("shakespeare", text.join("\n"))
            }
            "sotu" => {
                let a = c.sotu().map_err(missing)?;
                let text = a.into_iter().map(|a| a.text).collect::<Vec<_>>();
                split("sotu", text.join("\n"))
            }
            "imdb" | "adult" | "digits" | "mnist" | "fashion-mnist" => {
                return invalid(
                    format!("{section}.data"),
                    &self.data,
                    format!("not a text corpus (use {} or a path)", TEXT_SETS.join(", ")),
                );
            }
            path => {
                let text = memaudit_data::read_corpus(Path::new(path)).map_err(|e| {
                    ExperimentError::Setting {
                        field: format!("{section}.data"),
                        source: Box::new(e),
                    }
                })?;
                split(path, text)
            }
        })
    }

    /// A tokenizer for a corpus (char: its characters; word: PTB style with a vocabulary cap),
    /// plus `extra` tokens (a canary alphabet).
    pub fn tokenizer(&self, corpus: &TextCorpus, extra: &[String]) -> Result<Tokenizer> {
        let mut tok = match self.level.as_str() {
            "word" => Tokenizer::word_from_text(
                &corpus.train,
                &WordVocabOptions {
                    max_size: Some(self.vocab_size),
                    min_count: 1,
                },
            )?,
            _ => Tokenizer::char_from_text(&corpus.train, true)?,
        };
        if !extra.is_empty() {
            tok.add_tokens(extra)?;
        }
        Ok(tok)
    }

    /// LM windows of a token stream (capped by `max_train`).
    pub fn windows(&self, tokens: Vec<u32>) -> Result<TokenWindowDataset> {
        let mut ds = TokenWindowDataset::new(tokens, self.seq_len)?;
        if let Some(m) = self.max_train {
            let keep = m.min(Dataset::len(&ds));
            ds.tokens.truncate(keep * self.seq_len + 1);
        }
        Ok(ds)
    }

    /// IMDB reviews as TF-IDF rows (train on 80%, test on 20%, by index).
    pub fn imdb(
        &self,
        section: &str,
        max_features: usize,
    ) -> Result<(SparseDataset, SparseDataset, memaudit_data::TextVectorizer)> {
        let reviews = self.cache().imdb().map_err(self.missing(section))?;
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
    pub fn adult(&self, section: &str) -> Result<(DenseDataset, DenseDataset)> {
        let c = self.cache();
        let tr = c.adult(Split::Train).map_err(self.missing(section))?;
        let te = c.adult(Split::Test).map_err(self.missing(section))?;
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

    /// Load the data; text is encoded with `tokenizer` when given (a saved run's vocabulary).
    pub fn prepare(&self, section: &str, tokenizer: Option<Tokenizer>) -> Result<Prepared> {
        self.validate(section)?;
        if self.is_image() {
            let d = self.images(section)?;
            return Ok(Prepared {
                name: self.data.clone(),
                train: Box::new(d.train),
                valid: Some(Box::new(d.test)),
                input: InputShape::Image {
                    channels: d.channels,
                    height: d.height,
                    width: d.width,
                    classes: d.classes,
                },
                tokenizer: None,
            });
        }
        match self.data.as_str() {
            "imdb" => {
                let (train, test, vec) = self.imdb(section, 100_000)?;
                Ok(Prepared {
                    name: "imdb".into(),
                    train: Box::new(train),
                    valid: Some(Box::new(test)),
                    input: InputShape::Sparse {
                        features: vec.terms().len(),
                        classes: 2,
                    },
                    tokenizer: None,
                })
            }
            "adult" => {
                let (train, test) = self.adult(section)?;
                let features = train.per_example();
                Ok(Prepared {
                    name: "adult".into(),
                    train: Box::new(train),
                    valid: Some(Box::new(test)),
                    input: InputShape::Flat {
                        features,
                        classes: 2,
                    },
                    tokenizer: None,
                })
            }
            _ => {
                let corpus = self.text(section)?;
                let tok = match tokenizer {
                    Some(t) => t,
                    None => self.tokenizer(&corpus, &[])?,
                };
                let train = self.windows(tok.encode(&corpus.train)?)?;
                let valid = self.windows(tok.encode(&corpus.valid)?)?;
                if train.is_empty() {
                    return invalid(
                        format!("{section}.seq_len"),
                        self.seq_len,
                        format!(
                            "the training text of {} is shorter than one window",
                            self.data
                        ),
                    );
                }
                Ok(Prepared {
                    name: corpus.name,
                    train: Box::new(train),
                    valid: Some(Box::new(valid)),
                    input: InputShape::Tokens { vocab: tok.len() },
                    tokenizer: Some(tok),
                })
            }
        }
    }
}

/// MLPs take flat vectors: view images as such.
pub fn flatten_for(model: &ModelConfig, prepared: Prepared) -> Prepared {
    if !matches!(model, ModelConfig::Mlp { .. }) {
        return prepared;
    }
    // DenseDataset batches carry the example shape; an MLP needs [B, F]. Wrap to flatten.
    struct Flat(Box<dyn Dataset>);
    impl Dataset for Flat {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn batch(&self, idx: &[usize]) -> memaudit_engine::Batch {
            let mut b = self.0.batch(idx);
            if let memaudit_engine::Value::Dense(t) = &mut b.input {
                let n = t.shape[0];
                let f = t
                    .data
                    .len()
                    .checked_div(n)
                    .unwrap_or_else(|| t.shape[1..].iter().product());
                t.shape = vec![n, f];
            }
            b
        }
    }
    Prepared {
        train: Box::new(Flat(prepared.train)),
        valid: prepared
            .valid
            .map(|v| Box::new(Flat(v)) as Box<dyn Dataset>),
        ..prepared
    }
}

/// Which model, and its size (the `--model`, `--hidden`, ... flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt (`None`: mlp for images and
    /// tables, lstm for text, logreg for imdb).
    pub model: Option<String>,
    /// MLP hidden layer sizes.
    pub hidden: Vec<usize>,
    /// MLP activation: relu, tanh or sigmoid.
    pub activation: String,
    /// Language models: embedding width.
    pub embed: usize,
    /// Language models: recurrent units per layer.
    pub rnn_hidden: usize,
    /// Language models: stacked recurrent layers (1-3).
    pub rnn_layers: usize,
    /// Dropout (MLP: after hidden layers; LMs: between layers and before the output).
    pub dropout: f32,
    /// MLP: dropout on the input.
    pub input_dropout: f32,
    /// GPT: pre-LayerNorm transformer blocks.
    pub gpt_layers: usize,
    /// GPT: model width; the MLP is 4x wider.
    pub gpt_width: usize,
    /// GPT: attention heads (must divide `gpt_width`).
    pub gpt_heads: usize,
    /// GPT: positions in the learned positional table.
    pub gpt_context: usize,
    /// GPT: an output projection of its own instead of the token embedding.
    pub gpt_untied: bool,
    /// GPT: gelu-tanh (GPT-2's "gelu_new") or gelu (exact).
    pub gelu: String,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            model: None,
            hidden: vec![256],
            activation: "relu".into(),
            embed: 32,
            rnn_hidden: 200,
            rnn_layers: 2,
            dropout: 0.0,
            input_dropout: 0.0,
            gpt_layers: 2,
            gpt_width: 128,
            gpt_heads: 4,
            gpt_context: 128,
            gpt_untied: false,
            gelu: "gelu-tanh".into(),
        }
    }
}

impl ModelSettings {
    /// The engine's model for data of shape `input`.
    pub fn config(&self, section: &str, input: &InputShape) -> Result<ModelConfig> {
        let default = match input {
            InputShape::Image { .. } | InputShape::Flat { .. } => "mlp",
            InputShape::Sparse { .. } => "logreg",
            InputShape::Tokens { .. } => "lstm",
        };
        let name = self.model.as_deref().unwrap_or(default);
        let field = |f: &str| format!("{section}.{f}");
        let activation = match self.activation.as_str() {
            "relu" => ActivationKind::Relu,
            "tanh" => ActivationKind::Tanh,
            "sigmoid" => ActivationKind::Sigmoid,
            a => return invalid(field("activation"), a, "use relu, tanh or sigmoid"),
        };
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid(field("dropout"), self.dropout, "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.input_dropout) {
            return invalid(
                field("input_dropout"),
                self.input_dropout,
                "must be in [0, 1)",
            );
        }
        Ok(match (name, input) {
            (
                "mlp",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::Mlp {
                input: channels * height * width,
                hidden: self.hidden.clone(),
                classes: *classes,
                activation,
                dropout: self.dropout,
                input_dropout: self.input_dropout,
            },
            ("mlp", InputShape::Flat { features, classes }) => ModelConfig::Mlp {
                input: *features,
                hidden: self.hidden.clone(),
                classes: *classes,
                activation,
                dropout: self.dropout,
                input_dropout: self.input_dropout,
            },
            (
                "tutorial-cnn",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::TutorialCnn {
                channels: *channels,
                height: *height,
                width: *width,
                classes: *classes,
            },
            (
                "groupnorm-cnn",
                InputShape::Image {
                    channels,
                    height,
                    width,
                    classes,
                },
            ) => ModelConfig::GroupNormCnn {
                channels: *channels,
                height: *height,
                width: *width,
                classes: *classes,
            },
            ("logreg", InputShape::Sparse { features, classes }) => ModelConfig::SparseLogReg {
                features: *features,
                classes: *classes,
            },
            ("lstm" | "gru", InputShape::Tokens { vocab }) => {
                if !(1..=3).contains(&self.rnn_layers) {
                    return invalid(field("rnn_layers"), self.rnn_layers, "use 1, 2 or 3");
                }
                let (vocab, embed, hidden, layers, dropout) = (
                    *vocab,
                    self.embed,
                    self.rnn_hidden,
                    self.rnn_layers,
                    self.dropout,
                );
                if name == "lstm" {
                    ModelConfig::LstmLm {
                        vocab,
                        embed,
                        hidden,
                        layers,
                        dropout,
                    }
                } else {
                    ModelConfig::GruLm {
                        vocab,
                        embed,
                        hidden,
                        layers,
                        dropout,
                    }
                }
            }
            ("gpt", InputShape::Tokens { vocab }) => {
                let gelu = match self.gelu.as_str() {
                    "gelu-tanh" => memaudit_engine::layers::GeluKind::Tanh,
                    "gelu" => memaudit_engine::layers::GeluKind::Exact,
                    g => return invalid(field("gelu"), g, "use gelu-tanh or gelu"),
                };
                let cfg = ModelConfig::Gpt {
                    vocab: *vocab,
                    n_ctx: self.gpt_context,
                    embed: self.gpt_width,
                    layers: self.gpt_layers,
                    heads: self.gpt_heads,
                    inner: 4 * self.gpt_width,
                    tie: !self.gpt_untied,
                    gelu,
                    ln_eps: memaudit_engine::layers::LAYER_NORM_EPS,
                    scale_attn_weights: true,
                    scale_attn_by_inverse_layer_idx: false,
                };
                if let Some(shape) = cfg.gpt_shape() {
                    shape.validate().map_err(|e| ExperimentError::Setting {
                        field: field("gpt_width"),
                        source: Box::new(e),
                    })?;
                }
                cfg
            }
            ("mlp" | "tutorial-cnn" | "groupnorm-cnn" | "logreg" | "lstm" | "gru" | "gpt", _) => {
                return invalid(
                    field("model"),
                    name,
                    "does not fit this data (see `memaudit train --help` for which models take which data)",
                );
            }
            (other, _) => {
                return invalid(
                    field("model"),
                    other,
                    "use mlp, tutorial-cnn, groupnorm-cnn, logreg, lstm, gru or gpt",
                );
            }
        })
    }
}

/// DP-SGD (the `--noise-multiplier`, `--target-epsilon`, `--clip`, ... flags). Training is
/// private when `noise_multiplier` or `target_epsilon` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Noise standard deviation / clip bound (0: clipping without noise, epsilon infinite).
    pub noise_multiplier: Option<f64>,
    /// Calibrate the noise multiplier so that epsilon after all epochs is at most this.
    pub target_epsilon: Option<f64>,
    /// Per-example clip bound C (default 1; the start with adaptive clipping).
    pub clip: Option<f64>,
    /// Per-layer clip bounds, one per parameterised layer in order.
    pub clip_per_layer: Option<Vec<f64>>,
    /// Adaptive clipping to a quantile of the gradient norms (Andrew et al.).
    pub adaptive_clip: bool,
    /// Adaptive clipping: target unclipped fraction.
    pub target_quantile: f64,
    /// Adaptive clipping: geometric learning rate.
    pub clip_lr: f64,
    /// Adaptive clipping: noise on the unclipped count (default: batch size / 20).
    pub clip_count_stddev: Option<f64>,
    /// Delta of the (epsilon, delta) guarantee.
    pub delta: f64,
    /// rdp or pld.
    pub accountant: String,
    /// Stop training before epsilon would exceed this.
    pub max_epsilon: Option<f64>,
    /// poisson (default for private runs; what the accounting assumes) or shuffle.
    pub sampling: Option<String>,
    /// Run a logical batch as chunks of at most this many examples.
    pub physical_batch: Option<usize>,
    /// Seed the DP noise and the Poisson sampler from the run's seed (reproducible research).
    pub seeded_noise: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            noise_multiplier: None,
            target_epsilon: None,
            clip: None,
            clip_per_layer: None,
            adaptive_clip: false,
            target_quantile: 0.5,
            clip_lr: 0.2,
            clip_count_stddev: None,
            delta: 1e-5,
            accountant: "rdp".into(),
            max_epsilon: None,
            sampling: None,
            physical_batch: None,
            seeded_noise: false,
        }
    }
}

impl PrivacySettings {
    pub fn is_private(&self) -> bool {
        self.noise_multiplier.is_some() || self.target_epsilon.is_some()
    }

    /// The flat clip bound C (1 unless `clip` says otherwise).
    pub fn clip(&self) -> f64 {
        self.clip.unwrap_or(1.0)
    }

    pub fn accountant(&self, section: &str) -> Result<AccountantKind> {
        match self.accountant.as_str() {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            a => invalid(format!("{section}.accountant"), a, "use rdp or pld"),
        }
    }

    pub fn sampling(&self, section: &str) -> Result<SamplingMode> {
        match self.sampling.as_deref() {
            None if self.is_private() => Ok(SamplingMode::Poisson),
            None => Ok(SamplingMode::Shuffle),
            Some("poisson") => Ok(SamplingMode::Poisson),
            Some("shuffle") => Ok(SamplingMode::Shuffle),
            Some(s) => invalid(format!("{section}.sampling"), s, "use poisson or shuffle"),
        }
    }

    /// Check the settings that make sense on their own (before any data is loaded).
    pub fn validate(&self, section: &str) -> Result<()> {
        let field = |f: &str| format!("{section}.{f}");
        if self.noise_multiplier.is_some() && self.target_epsilon.is_some() {
            return invalid(
                field("noise_multiplier"),
                self.noise_multiplier.unwrap_or_default(),
                "give a noise multiplier or a target epsilon, not both",
            );
        }
        if let Some(s) = self.noise_multiplier
            && !(s >= 0.0 && s.is_finite())
        {
            return invalid(field("noise_multiplier"), s, "must be >= 0 and finite");
        }
        if let Some(e) = self.target_epsilon
            && !(e > 0.0 && e.is_finite())
        {
            return invalid(field("target_epsilon"), e, "must be > 0 and finite");
        }
        if let Some(c) = self.clip
            && !(c > 0.0 && c.is_finite())
        {
            return invalid(field("clip"), c, "must be > 0");
        }
        if !self.is_private() {
            // Settings that only mean something under DP-SGD would be silently ignored otherwise.
            let private_only = [
                ("clip", self.clip.is_some()),
                ("clip_per_layer", self.clip_per_layer.is_some()),
                ("adaptive_clip", self.adaptive_clip),
                ("max_epsilon", self.max_epsilon.is_some()),
                ("seeded_noise", self.seeded_noise),
            ];
            if let Some((name, _)) = private_only.iter().find(|(_, given)| *given) {
                return invalid(
                    field(name),
                    "(set)",
                    "applies only to private training: set a noise multiplier or a target epsilon",
                );
            }
        }
        if let Some(b) = &self.clip_per_layer
            && b.iter().any(|c| !(*c > 0.0 && c.is_finite()))
        {
            return invalid(
                field("clip_per_layer"),
                format!("{b:?}"),
                "every bound must be > 0",
            );
        }
        if self.clip_per_layer.is_some() && (self.adaptive_clip || self.clip.is_some()) {
            return invalid(
                field("clip_per_layer"),
                "(set)",
                "excludes a flat clip bound and adaptive clipping",
            );
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return invalid(field("delta"), self.delta, "must be in (0, 1)");
        }
        if let Some(m) = self.max_epsilon
            && (m.is_nan() || m <= 0.0)
        {
            return invalid(field("max_epsilon"), m, "must be > 0");
        }
        if self.physical_batch == Some(0) {
            return invalid(field("physical_batch"), 0, "must be at least 1");
        }
        if self.adaptive_clip && !(0.0..=1.0).contains(&self.target_quantile) {
            return invalid(
                field("target_quantile"),
                self.target_quantile,
                "must be in [0, 1]",
            );
        }
        self.accountant(section)?;
        self.sampling(section)?;
        Ok(())
    }

    /// The clipping rule for a model whose parameterised layers are `param_layers` (indices of
    /// the model's layers that have parameters) out of `n_layers`.
    pub fn clip_config(
        &self,
        section: &str,
        param_layers: &[usize],
        n_layers: usize,
    ) -> Result<ClipConfig> {
        if self.adaptive_clip {
            return Ok(ClipConfig::Adaptive {
                initial: self.clip(),
                target_quantile: self.target_quantile,
                learning_rate: self.clip_lr,
                count_stddev: self.clip_count_stddev,
                geometric: true,
            });
        }
        if let Some(bounds) = &self.clip_per_layer {
            if bounds.len() != param_layers.len() {
                return invalid(
                    format!("{section}.clip_per_layer"),
                    format!("{bounds:?}"),
                    format!(
                        "{} bounds given, the model has {} layers with parameters",
                        bounds.len(),
                        param_layers.len()
                    ),
                );
            }
            // Layers without parameters join group 0 (they contribute nothing to any norm).
            let mut group_of_layer = vec![0usize; n_layers];
            for (g, &l) in param_layers.iter().enumerate() {
                group_of_layer[l] = g;
            }
            return Ok(ClipConfig::PerLayer {
                bounds: bounds.clone(),
                group_of_layer,
            });
        }
        Ok(ClipConfig::Flat { bound: self.clip() })
    }

    /// The privacy configuration of a run of `epochs` over `n` examples at `batch` (noise
    /// calibrated to the run's own guarantee when a target epsilon is set; a note says so).
    pub fn privacy_config(
        &self,
        section: &str,
        model: &Model,
        n: usize,
        batch: usize,
        epochs: usize,
        observer: &mut dyn Observer,
    ) -> Result<Option<PrivacyConfig>> {
        self.validate(section)?;
        if !self.is_private() {
            return Ok(None);
        }
        let accountant = self.accountant(section)?;
        let sampling = self.sampling(section)?;
        let steps = epochs as u64 * steps_per_epoch(sampling, n, batch);
        let sigma = match (self.noise_multiplier, self.target_epsilon) {
            (Some(s), _) => s,
            (None, Some(target)) => {
                // Calibrated to this run's guarantee: Poisson steps, or for shuffled batches one
                // unamplified Gaussian per epoch (the ledger's rule).
                let s = privacy::calibrate_planned(
                    sampling,
                    n as u64,
                    batch as u64,
                    epochs as u64,
                    self.delta,
                    target,
                    accountant,
                )
                .map_err(|e| ExperimentError::Setting {
                    field: format!("{section}.target_epsilon"),
                    source: Box::new(e),
                })?;
                let how = match sampling {
                    SamplingMode::Poisson => {
                        format!("{steps} Poisson steps (q = {:.6})", batch as f64 / n as f64)
                    }
                    SamplingMode::Shuffle => format!(
                        "{epochs} epochs of shuffled batches ({steps} steps, no amplification by sampling)"
                    ),
                };
                observer.note(&format!(
                    "calibrated noise multiplier {s:.5} for epsilon <= {target} at delta {} over {how}",
                    self.delta
                ));
                s
            }
            (None, None) => unreachable!("is_private() checked above"),
        };
        if self.delta > 1.0 / n as f64 {
            observer.note(&format!(
                "warning: delta {} is larger than 1/N = {:.2e}; a mechanism that publishes one random example would satisfy it",
                self.delta,
                1.0 / n as f64
            ));
        }
        let param_layers: Vec<usize> = (0..model.num_layers())
            .filter(|&l| !model.param_range(l).is_empty())
            .collect();
        Ok(Some(PrivacyConfig {
            noise_multiplier: sigma,
            clipping: self.clip_config(section, &param_layers, model.num_layers())?,
            delta: self.delta,
            accountant,
            max_epsilon: self.max_epsilon,
        }))
    }
}

/// Steps in one epoch (the engine's one definition, as the trainer plans it).
pub use crate::train::plan::steps_per_epoch;

/// Epochs, batch size and seed of one training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunShape {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
}

/// The sections of an experiment's config that `train_config` reads, with their paths (for
/// error fields).
pub struct Sections<'a> {
    pub model: &'a str,
    pub optim: (&'a str, &'a OptimSettings),
    pub privacy: (&'a str, &'a PrivacySettings),
}

/// The trainer's configuration of a model trained on `n` examples: privacy (noise calibrated
/// here for a target epsilon), sampling, optimizer and schedule; refused before anything is
/// allocated when the training state cannot fit in memory.
pub fn train_config(
    s: Sections<'_>,
    model: &Model,
    model_cfg: &ModelConfig,
    n: usize,
    run: RunShape,
    observer: &mut dyn Observer,
) -> Result<TrainConfig> {
    let (osec, optim) = s.optim;
    let (psec, privacy) = s.privacy;
    let optimizer = optim.optimizer_for(osec, model_cfg)?;
    check_training_memory(s.model, model, &optimizer, privacy.is_private())?;
    let dp = privacy.privacy_config(psec, model, n, run.batch_size, run.epochs, observer)?;
    let sampling = privacy.sampling(psec)?;
    let steps = steps_per_epoch(sampling, n, run.batch_size);
    Ok(TrainConfig {
        model: model_cfg.clone(),
        optimizer,
        schedule: optim.schedule(osec, steps, run.epochs)?,
        epochs: run.epochs,
        batch_size: run.batch_size,
        physical_batch: privacy.physical_batch,
        sampling,
        seed: run.seed,
        privacy: dp,
        seeded_noise: privacy.seeded_noise,
    })
}

/// Refuse a model whose training state cannot fit in the memory left, before anything is
/// created: the allocator would otherwise abort the process.
pub fn check_training_memory(
    section: &str,
    model: &Model,
    optimizer: &memaudit_engine::optim::OptimizerConfig,
    private: bool,
) -> Result<()> {
    use memaudit_engine::memory;
    let p = model.num_params();
    memory::check_fits(
        &format!("training {p} parameters (weights, gradient, optimizer state)"),
        memory::training_bytes(p, optimizer, private),
        memory::available_bytes(),
    )
    .map_err(|e| match e {
        e @ EngineError::OutOfMemory { .. } => ExperimentError::Setting {
            field: format!("{section}.model"),
            source: Box::new(e),
        },
        e => e.into(),
    })
}

/// Build the model of a config (the engine's constructor, its error kept).
pub fn build_model(section: &str, cfg: &ModelConfig) -> Result<Model> {
    cfg.build().map_err(|e| ExperimentError::Setting {
        field: format!("{section}.model"),
        source: Box::new(e),
    })
}
