//! The data of a training run, ready for the trainer: the named dataset of [`DataSettings`]
//! (images, imdb's TF-IDF rows, adult's rows, or a text corpus cut into windows) and the shape
//! a model is sized for.

use memaudit_data::Tokenizer;
use memaudit_engine::ModelConfig;
use memaudit_engine::train::Dataset;

use super::settings::InputShape;
use crate::datasets::DataSettings;
use crate::error::{Result, invalid};

/// Data ready for the trainer.
pub struct Prepared {
    pub name: String,
    pub train: Box<dyn Dataset>,
    pub valid: Option<Box<dyn Dataset>>,
    pub input: InputShape,
    pub tokenizer: Option<Tokenizer>,
}

/// Load the data named by `data.data`.
pub fn prepare(data: &DataSettings) -> Result<Prepared> {
    prepare_with(data, None)
}

/// Load the data; text is encoded with `tokenizer` when given (a saved run's vocabulary).
pub fn prepare_with(data: &DataSettings, tokenizer: Option<Tokenizer>) -> Result<Prepared> {
    if data.is_image() {
        let d = data.images()?;
        return Ok(Prepared {
            name: data.data.clone(),
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
    match data.data.as_str() {
        "imdb" => {
            let (train, test, vec) = data.imdb(100_000)?;
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
            let (train, test) = data.adult()?;
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
            let corpus = data.text()?;
            let tok = match tokenizer {
                Some(t) => t,
                None => data.tokenizer(&corpus, &[])?,
            };
            let train = data.windows(tok.encode(&corpus.train)?)?;
            let valid = data.windows(tok.encode(&corpus.valid)?)?;
            if train.is_empty() {
                return invalid(
                    "data.data",
                    &data.data,
                    format!(
                        "the training text is shorter than one window of seq_len {}",
                        data.seq_len
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
