//! Bag-of-words and TF-IDF (term frequency - inverse document frequency) vectoriser with a
//! vocabulary cap, producing sparse CSR rows, and the inverse map (feature index -> word) used to
//! decode attacks.
//!
//! It follows scikit-learn's `TfidfVectorizer` defaults so results can be compared with it:
//! - tokens: lower-cased (optional) maximal runs of at least two word characters (letters,
//!   digits, `_`), like the pattern `(?u)\b\w\w+\b`;
//! - cap: keep the `max_features` terms with the largest total count over the corpus (ties: the
//!   lexicographically smaller term), after dropping terms in fewer than `min_df` documents;
//!   feature indices are then in alphabetical order of the terms;
//! - TF-IDF: raw count x idf, idf = ln((1 + n) / (1 + df)) + 1 (smoothed), rows L2-normalised.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// What a cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermWeighting {
    /// Raw counts (bag of words).
    Counts,
    /// 1 where the term occurs.
    Binary,
    /// Count x smoothed idf.
    TfIdf,
}

/// Vectoriser options; `Default` is TF-IDF, a cap of 100,000 features, lower-casing, L2 rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorizerOptions {
    pub max_features: Option<usize>,
    pub min_df: usize,
    pub weighting: TermWeighting,
    pub lowercase: bool,
    pub l2_normalize: bool,
}

impl Default for VectorizerOptions {
    fn default() -> Self {
        Self {
            max_features: Some(100_000),
            min_df: 1,
            weighting: TermWeighting::TfIdf,
            lowercase: true,
            l2_normalize: true,
        }
    }
}

/// Compressed sparse rows: row `i`'s column indices are `indices[row_ptr[i]..row_ptr[i + 1]]`
/// (ascending) and its values the same slice of `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct CsrMatrix {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl CsrMatrix {
    /// Row `i` as (column indices, values).
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let r = self.row_ptr[i]..self.row_ptr[i + 1];
        (&self.indices[r.clone()], &self.values[r])
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Dense row-major copy (for tests and small data).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for i in 0..self.rows {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                out[i * self.cols + j as usize] = v;
            }
        }
        out
    }
}

/// A fitted vectoriser: vocabulary (index -> term), its inverse and the idf weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VectorizerFile", into = "VectorizerFile")]
pub struct TextVectorizer {
    options: VectorizerOptions,
    terms: Vec<String>,
    index: HashMap<String, u32>,
    idf: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct VectorizerFile {
    options: VectorizerOptions,
    terms: Vec<String>,
    idf: Vec<f32>,
}

impl From<TextVectorizer> for VectorizerFile {
    fn from(v: TextVectorizer) -> Self {
        VectorizerFile {
            options: v.options,
            terms: v.terms,
            idf: v.idf,
        }
    }
}

impl TryFrom<VectorizerFile> for TextVectorizer {
    type Error = DataError;
    fn try_from(f: VectorizerFile) -> Result<Self> {
        if f.terms.len() != f.idf.len() {
            return Err(DataError::BadVocab(format!(
                "{} terms but {} idf weights",
                f.terms.len(),
                f.idf.len()
            )));
        }
        let mut index = HashMap::with_capacity(f.terms.len());
        for (i, t) in f.terms.iter().enumerate() {
            if index.insert(t.clone(), i as u32).is_some() {
                return Err(DataError::BadVocab(format!("term {t:?} appears twice")));
            }
        }
        Ok(Self {
            options: f.options,
            terms: f.terms,
            index,
            idf: f.idf,
        })
    }
}

/// The tokens of `text` as the vectoriser sees them (see the module docs).
pub fn analyze(text: &str, lowercase: bool) -> Vec<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.split(|c: char| !is_word(c))
        .filter(|t| t.chars().nth(1).is_some())
        .map(|t| {
            if lowercase {
                t.to_lowercase()
            } else {
                t.to_string()
            }
        })
        .collect()
}

impl TextVectorizer {
    /// Learn the vocabulary and idf weights from `docs`.
    pub fn fit<S: AsRef<str>>(docs: &[S], options: VectorizerOptions) -> Result<Self> {
        if options.max_features == Some(0) {
            return Err(DataError::InvalidArgument(
                "the vocabulary cap (max features) must be at least 1".into(),
            ));
        }
        let mut count: HashMap<String, u64> = HashMap::new();
        let mut df: HashMap<String, u64> = HashMap::new();
        for doc in docs {
            let mut tokens = analyze(doc.as_ref(), options.lowercase);
            for t in &tokens {
                *count.entry(t.clone()).or_default() += 1;
            }
            tokens.sort_unstable();
            tokens.dedup();
            for t in tokens {
                *df.entry(t).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, u64)> = count
            .into_iter()
            .filter(|(t, _)| df[t] >= options.min_df as u64)
            .collect();
        kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(cap) = options.max_features {
            kept.truncate(cap);
        }
        let mut terms: Vec<String> = kept.into_iter().map(|(t, _)| t).collect();
        terms.sort_unstable();
        if terms.len() > u32::MAX as usize {
            return Err(DataError::InvalidArgument(
                "more than 2^32 terms; set a vocabulary cap".into(),
            ));
        }
        let n = docs.len() as f64;
        let idf = terms
            .iter()
            .map(|t| ((1.0 + n) / (1.0 + df[t] as f64)).ln() as f32 + 1.0)
            .collect();
        let index = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Ok(Self {
            options,
            terms,
            index,
            idf,
        })
    }

    /// Rows for `docs` (terms outside the vocabulary are ignored).
    pub fn transform<S: AsRef<str>>(&self, docs: &[S]) -> CsrMatrix {
        let mut row_ptr = Vec::with_capacity(docs.len() + 1);
        row_ptr.push(0);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for doc in docs {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for t in analyze(doc.as_ref(), self.options.lowercase) {
                if let Some(&j) = self.index.get(&t) {
                    *counts.entry(j).or_default() += 1;
                }
            }
            let mut row: Vec<(u32, f32)> = counts
                .into_iter()
                .map(|(j, c)| {
                    let v = match self.options.weighting {
                        TermWeighting::Counts => c as f32,
                        TermWeighting::Binary => 1.0,
                        TermWeighting::TfIdf => c as f32 * self.idf[j as usize],
                    };
                    (j, v)
                })
                .collect();
            row.sort_unstable_by_key(|&(j, _)| j);
            if self.options.l2_normalize {
                let norm = row
                    .iter()
                    .map(|&(_, v)| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt();
                if norm > 0.0 {
                    row.iter_mut()
                        .for_each(|(_, v)| *v = (f64::from(*v) / norm) as f32);
                }
            }
            for (j, v) in row {
                indices.push(j);
                values.push(v);
            }
            row_ptr.push(indices.len());
        }
        CsrMatrix {
            rows: docs.len(),
            cols: self.terms.len(),
            row_ptr,
            indices,
            values,
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The vocabulary: feature index -> term.
    pub fn terms(&self) -> &[String] {
        &self.terms
    }

    /// Term of feature `j` (the inverse map used to decode attacks).
    pub fn term(&self, j: u32) -> Option<&str> {
        self.terms.get(j as usize).map(String::as_str)
    }

    /// Feature index of `term` (after lower-casing if the vectoriser does).
    pub fn feature_index(&self, term: &str) -> Option<u32> {
        if self.options.lowercase {
            self.index.get(&term.to_lowercase()).copied()
        } else {
            self.index.get(term).copied()
        }
    }

    /// The idf weight of each feature.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    pub fn options(&self) -> &VectorizerOptions {
        &self.options
    }
}
