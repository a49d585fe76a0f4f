//! Character- and word-level tokenizers whose vocabulary is saved (JSON) with the model.
//!
//! - Character level: one token per Unicode scalar value; the vocabulary is the sorted set of the
//!   corpus's characters, optionally with U+FFFD as the unknown token.
//! - Word level, Penn Treebank style (Mikolov et al.'s `ptb.*.txt` reader): tokens are the
//!   whitespace-separated words, every newline becomes `<eos>`, and words outside the vocabulary
//!   map to `<unk>` (a literal `<unk>` in the text, as in PTB, is the same token). The vocabulary can
//!   be capped to the most frequent words. `add_tokens` appends extra tokens, e.g. the digits 0-9 as
//!   a canary alphabet: PTB replaces every number with `N`, so digits are otherwise never seen.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The word-level unknown token.
pub const UNK: &str = "<unk>";
/// The word-level end-of-line token.
pub const EOS: &str = "<eos>";
/// The character-level unknown token (U+FFFD REPLACEMENT CHARACTER), when the vocabulary has one.
pub const CHAR_UNK: char = '\u{FFFD}';
/// A canary alphabet for word vocabularies: the ten digits as tokens.
pub const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

const FORMAT: &str = "memaudit-tokenizer/1";

/// Which way text is cut into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// One token per character (Unicode scalar value).
    Char,
    /// Whitespace-separated words, newline -> `<eos>`.
    Word,
}

/// Options for building a word vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordVocabOptions {
    /// Keep at most this many tokens, `<unk>` and `<eos>` included (the most frequent words; ties
    /// go to the lexicographically smaller word). `None`: no cap.
    pub max_size: Option<usize>,
    /// Drop words seen fewer times than this (they become `<unk>`).
    pub min_count: usize,
}

impl Default for WordVocabOptions {
    fn default() -> Self {
        Self {
            max_size: None,
            min_count: 1,
        }
    }
}

/// A tokenizer and its vocabulary (token id = index in `tokens()`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TokenizerFile", into = "TokenizerFile")]
pub struct Tokenizer {
    kind: TokenizerKind,
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    unk: Option<u32>,
    eos: Option<u32>,
}

/// The JSON form: `{"format": "memaudit-tokenizer/1", "kind": "word", "tokens": [...],
/// "unk": "<unk>", "eos": "<eos>"}`.
#[derive(Serialize, Deserialize)]
struct TokenizerFile {
    format: String,
    kind: TokenizerKind,
    tokens: Vec<String>,
    unk: Option<String>,
    eos: Option<String>,
}

impl From<Tokenizer> for TokenizerFile {
    fn from(t: Tokenizer) -> Self {
        let unk = t.unk.map(|i| t.tokens[i as usize].clone());
        let eos = t.eos.map(|i| t.tokens[i as usize].clone());
        TokenizerFile {
            format: FORMAT.into(),
            kind: t.kind,
            tokens: t.tokens,
            unk,
            eos,
        }
    }
}

impl TryFrom<TokenizerFile> for Tokenizer {
    type Error = DataError;
    fn try_from(f: TokenizerFile) -> Result<Self> {
        if f.format != FORMAT {
            return Err(DataError::BadVocab(format!(
                "format {:?}, expected {FORMAT:?}",
                f.format
            )));
        }
        let t = Tokenizer::from_parts(f.kind, f.tokens, f.unk.as_deref(), f.eos.as_deref())?;
        if t.kind == TokenizerKind::Word && (t.unk.is_none() || t.eos.is_none()) {
            return Err(DataError::BadVocab(format!(
                "a word vocabulary needs unk {UNK:?} and eos {EOS:?}"
            )));
        }
        Ok(t)
    }
}

impl Tokenizer {
    fn from_parts(
        kind: TokenizerKind,
        tokens: Vec<String>,
        unk: Option<&str>,
        eos: Option<&str>,
    ) -> Result<Self> {
        if tokens.len() > u32::MAX as usize {
            return Err(DataError::BadVocab("more than 2^32 tokens".into()));
        }
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, tok) in tokens.iter().enumerate() {
            check_token(kind, tok)?;
            if index.insert(tok.clone(), i as u32).is_some() {
                return Err(DataError::BadVocab(format!("token {tok:?} appears twice")));
            }
        }
        let find = |name: &str, tok: Option<&str>| -> Result<Option<u32>> {
            tok.map(|t| {
                index.get(t).copied().ok_or_else(|| {
                    DataError::BadVocab(format!("{name} token {t:?} is not in the vocabulary"))
                })
            })
            .transpose()
        };
        let unk = find("unk", unk)?;
        let eos = find("eos", eos)?;
        Ok(Self {
            kind,
            tokens,
            index,
            unk,
            eos,
        })
    }

    /// A character vocabulary: the sorted set of characters of `text`, plus U+FFFD as the unknown
    /// token when `with_unk` (otherwise encoding an unseen character is an error).
    pub fn char_from_text(text: &str, with_unk: bool) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        if with_unk {
            chars.push(CHAR_UNK);
        }
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err(DataError::BadVocab(
                "no characters to build a vocabulary from".into(),
            ));
        }
        let tokens = chars.into_iter().map(String::from).collect();
        let unk = with_unk.then(|| CHAR_UNK.to_string());
        Self::from_parts(TokenizerKind::Char, tokens, unk.as_deref(), None)
    }

    /// A word vocabulary from `text`: `<unk>` is id 0, `<eos>` id 1, then words by decreasing
    /// count (ties: lexicographic), capped by `opts`.
    pub fn word_from_text(text: &str, opts: &WordVocabOptions) -> Result<Self> {
        if let Some(max) = opts.max_size
            && max < 2
        {
            return Err(DataError::InvalidArgument(format!(
                "word vocabulary size cap {max} is too small: it must hold {UNK} and {EOS}"
            )));
        }
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for tok in word_tokens(text) {
            if tok != UNK && tok != EOS {
                *counts.entry(tok).or_default() += 1;
            }
        }
        let mut words: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= opts.min_count as u64)
            .collect();
        words.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if let Some(max) = opts.max_size {
            words.truncate(max - 2);
        }
        let mut tokens = vec![UNK.to_string(), EOS.to_string()];
        tokens.extend(words.into_iter().map(|(w, _)| w.to_string()));
        Self::from_parts(TokenizerKind::Word, tokens, Some(UNK), Some(EOS))
    }

    /// Append tokens that are not yet in the vocabulary (e.g. `DIGITS`); returns the id of each
    /// given token, old or new. A character vocabulary takes single characters only; a word
    /// vocabulary takes non-empty tokens without whitespace.
    pub fn add_tokens<S: AsRef<str>>(&mut self, tokens: &[S]) -> Result<Vec<u32>> {
        for tok in tokens {
            check_token(self.kind, tok.as_ref())?;
        }
        let mut ids = Vec::with_capacity(tokens.len());
        for tok in tokens {
            let tok = tok.as_ref();
            let id = match self.index.get(tok) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(self.tokens.len())
                        .map_err(|_| DataError::BadVocab("more than 2^32 tokens".into()))?;
                    self.tokens.push(tok.to_string());
                    self.index.insert(tok.to_string(), id);
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens, by id.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The token strings of `text`, before mapping to ids.
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        match self.kind {
            TokenizerKind::Char => text
                .char_indices()
                .map(|(i, c)| &text[i..i + c.len_utf8()])
                .collect(),
            TokenizerKind::Word => word_tokens(text).collect(),
        }
    }

    /// Token ids of `text`. Unknown tokens map to the unknown token, or are an error naming the
    /// token and its position when the vocabulary has none.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for (position, tok) in self.split(text).into_iter().enumerate() {
            match (self.index.get(tok), self.unk) {
                (Some(&id), _) => ids.push(id),
                (None, Some(unk)) => ids.push(unk),
                (None, None) => {
                    return Err(DataError::UnknownToken {
                        token: tok.to_string(),
                        position,
                    });
                }
            }
        }
        Ok(ids)
    }

    /// Text of `ids`. Characters are concatenated; words are joined by single spaces with `<eos>`
    /// written as a newline, so `decode(encode(t))` equals `t` with each line's whitespace
    /// normalised (PTB's leading and trailing spaces are not kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        let mut line_start = true;
        for &id in ids {
            let tok = self.token(id).ok_or(DataError::UnknownId {
                id,
                size: self.len(),
            })?;
            match self.kind {
                TokenizerKind::Char => out.push_str(tok),
                TokenizerKind::Word if Some(id) == self.eos => {
                    out.push('\n');
                    line_start = true;
                }
                TokenizerKind::Word => {
                    if !line_start {
                        out.push(' ');
                    }
                    out.push_str(tok);
                    line_start = false;
                }
            }
        }
        Ok(out)
    }

    /// The JSON saved with a model.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a tokenizer always serialises")
    }

    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| DataError::BadVocab(e.to_string()))
    }

    /// Write the JSON to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_json().as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::corpus::read_utf8(path)?;
        Self::from_json(&text).map_err(|e| DataError::BadFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// PTB word tokens: whitespace-separated words, each newline an `<eos>` (Mikolov's reader:
/// `text.replace("\n", " <eos> ").split()`).
pub fn word_tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut lines = text.split('\n').peekable();
    std::iter::from_fn(move || {
        let line = lines.next()?;
        let eos = lines.peek().is_some().then_some(EOS);
        Some(line.split_whitespace().chain(eos))
    })
    .flatten()
}

fn check_token(kind: TokenizerKind, tok: &str) -> Result<()> {
    match kind {
        TokenizerKind::Char if tok.chars().count() != 1 => Err(DataError::BadVocab(format!(
            "character vocabulary token {tok:?} is not one character"
        ))),
        TokenizerKind::Word if tok.is_empty() || tok.chars().any(char::is_whitespace) => {
            Err(DataError::BadVocab(format!(
                "word vocabulary token {tok:?} is empty or holds whitespace"
            )))
        }
        _ => Ok(()),
    }
}
