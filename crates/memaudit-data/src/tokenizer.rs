//! Character- and word-level tokenizers whose vocabulary is saved (JSON) with the model.
//!
//! - Character level: one token per Unicode scalar value; the vocabulary is the sorted set of the
//!   corpus's characters, optionally with U+FFFD as the unknown token.
//! - Word level, Penn Treebank style (Mikolov et al.'s `ptb.*.txt` reader): tokens are the
//!   whitespace-separated words, every newline becomes `<eos>`, and words outside the vocabulary
//!   map to `<unk>` (a literal `<unk>` in the text, as in PTB, is the same token). The vocabulary can
//!   be capped to the most frequent words. `add_tokens` appends extra tokens, e.g. the digits 0-9 as
//!   a canary alphabet: PTB replaces every number with `N`, so digits are otherwise never seen.
//! - Byte-level BPE (GPT-2): a Hugging Face `tokenizer.json` (or GPT-2's `vocab.json` +
//!   `merges.txt`), run by the `tokenizers` crate so text is cut exactly as transformers cuts it.
//!   Token ids are the file's; `tokens()` are its byte-level token strings (`"Ġthe"`), and
//!   `<|endoftext|>`, when present, is the end-of-sequence token. Unlike the other kinds, a BPE
//!   token sequence is not the concatenation of per-piece encodings: the merges join characters
//!   across any boundary inside a pre-token (GPT-2 merges digit runs), so canaries must be
//!   tokenized whole (`docs/transformers.md`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The word-level unknown token.
pub const UNK: &str = "<unk>";
/// The word-level end-of-line token.
pub const EOS: &str = "<eos>";
/// GPT-2's end-of-text token, the BPE end-of-sequence token when the vocabulary has it.
pub const END_OF_TEXT: &str = "<|endoftext|>";
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
    /// Byte-level BPE from a Hugging Face `tokenizer.json` (GPT-2).
    Bpe,
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
    /// The Hugging Face tokenizer, for `TokenizerKind::Bpe` only.
    bpe: Option<HfBpe>,
}

/// A loaded `tokenizers` tokenizer with the JSON it was read from (its identity: two BPE
/// tokenizers are equal when their files are).
#[derive(Clone)]
struct HfBpe {
    tokenizer: Arc<tokenizers::Tokenizer>,
    json: Arc<serde_json::Value>,
}

impl PartialEq for HfBpe {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl std::fmt::Debug for HfBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfBpe")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .finish()
    }
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
    /// For `kind: "bpe"`: the Hugging Face `tokenizer.json`, verbatim (`tokens` is then empty:
    /// the vocabulary is the file's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    huggingface: Option<serde_json::Value>,
}

impl From<Tokenizer> for TokenizerFile {
    fn from(t: Tokenizer) -> Self {
        let unk = t.unk.map(|i| t.tokens[i as usize].clone());
        let eos = t.eos.map(|i| t.tokens[i as usize].clone());
        let huggingface = t.bpe.map(|b| (*b.json).clone());
        TokenizerFile {
            format: FORMAT.into(),
            kind: t.kind,
            tokens: if huggingface.is_some() {
                Vec::new()
            } else {
                t.tokens
            },
            unk,
            eos,
            huggingface,
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
        if f.kind == TokenizerKind::Bpe {
            let hf = f.huggingface.ok_or_else(|| {
                DataError::BadVocab("a bpe vocabulary needs its \"huggingface\" tokenizer".into())
            })?;
            return Tokenizer::bpe_from_value(hf);
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
            bpe: None,
        })
    }

    /// A byte-level BPE tokenizer from the text of a Hugging Face `tokenizer.json`.
    pub fn bpe_from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| DataError::BadVocab(format!("tokenizer.json is not JSON: {e}")))?;
        Self::bpe_from_value(value)
    }

    fn bpe_from_value(value: serde_json::Value) -> Result<Self> {
        let model_type = value
            .get("model")
            .and_then(|m| m.get("type"))
            .and_then(serde_json::Value::as_str);
        if model_type != Some("BPE") {
            return Err(DataError::BadVocab(format!(
                "tokenizer.json: model.type is {}, expected \"BPE\" (byte-level BPE, as GPT-2's)",
                model_type.map_or("missing".into(), |t| format!("{t:?}"))
            )));
        }
        let hf: tokenizers::Tokenizer = serde_json::from_value(value.clone())
            .map_err(|e| DataError::BadVocab(format!("tokenizer.json: {e}")))?;
        Self::from_hf(hf, value)
    }

    /// A byte-level BPE tokenizer from a folder: its `tokenizer.json`, else GPT-2's original
    /// `vocab.json` + `merges.txt` with GPT-2's byte-level pre-tokenizer and decoder.
    pub fn bpe_from_folder(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let text = crate::corpus::read_utf8(&json)?;
            return Self::bpe_from_json(&text).map_err(|e| DataError::BadFormat {
                path: json,
                reason: e.to_string(),
            });
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        for f in [&vocab, &merges] {
            if !f.is_file() {
                return Err(DataError::BadFormat {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "no tokenizer.json, and no {} for vocab.json + merges.txt",
                        f.file_name().and_then(|n| n.to_str()).unwrap_or("file")
                    ),
                });
            }
        }
        Self::bpe_from_vocab_merges(&vocab, &merges)
    }

    /// GPT-2's tokenizer from its original files: `vocab.json` (token -> id) and `merges.txt`.
    pub fn bpe_from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let path_str = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| DataError::BadFormat {
                    path: p.to_path_buf(),
                    reason: "the path is not UTF-8".into(),
                })
        };
        let model = tokenizers::models::bpe::BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .build()
            .map_err(|e| DataError::BadFormat {
                path: merges.to_path_buf(),
                reason: format!("vocab.json + merges.txt: {e}"),
            })?;
        let mut hf = tokenizers::Tokenizer::new(model);
        // GPT-2: no prefix space, GPT-2's split regex, byte-level decoding.
        hf.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        hf.with_decoder(Some(ByteLevelDecoder::default()));
        let value = serde_json::to_value(&hf).map_err(|e| DataError::BadFormat {
            path: vocab.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_hf(hf, value)
    }

    fn from_hf(hf: tokenizers::Tokenizer, json: serde_json::Value) -> Result<Self> {
        let size = hf.get_vocab_size(true);
        if size == 0 || size > u32::MAX as usize {
            return Err(DataError::BadVocab(format!(
                "tokenizer.json: {size} tokens"
            )));
        }
        // Ids must be 0..size without gaps: they index the model's embedding rows.
        let mut tokens = Vec::with_capacity(size);
        for id in 0..size as u32 {
            let tok = hf.id_to_token(id).ok_or_else(|| {
                DataError::BadVocab(format!(
                    "tokenizer.json: no token has id {id} of 0..{size}; ids must be contiguous"
                ))
            })?;
            tokens.push(tok);
        }
        let index: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let eos = index.get(END_OF_TEXT).copied();
        Ok(Self {
            kind: TokenizerKind::Bpe,
            tokens,
            index,
            unk: None,
            eos,
            bpe: Some(HfBpe {
                tokenizer: Arc::new(hf),
                json: Arc::new(json),
            }),
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
        if self.kind == TokenizerKind::Bpe {
            return Err(DataError::InvalidArgument(
                "a BPE vocabulary is fixed by its tokenizer.json (the model's embedding has one row per token); no tokens can be added".into(),
            ));
        }
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

    /// The token strings of `text`, before mapping to ids (character and word kinds). A BPE
    /// token is a byte sequence that need not be a piece of `text` (a multi-byte character can be
    /// cut between tokens), so for BPE this is the text of each token's character span (one
    /// character may be the span of several tokens).
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        match self.kind {
            TokenizerKind::Bpe => match self.hf_encode(text) {
                Ok(enc) => enc
                    .get_offsets()
                    .iter()
                    .map(|&(a, b)| text.get(a..b).unwrap_or(""))
                    .collect(),
                Err(_) => Vec::new(),
            },
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
        if self.kind == TokenizerKind::Bpe {
            return Ok(self.hf_encode(text)?.get_ids().to_vec());
        }
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
        if let Some(b) = &self.bpe {
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.len()) {
                return Err(DataError::UnknownId {
                    id,
                    size: self.len(),
                });
            }
            // Special tokens (`<|endoftext|>`) are kept, as text, so nothing is silently lost.
            return b
                .tokenizer
                .decode(ids, false)
                .map_err(|e| DataError::BadVocab(format!("BPE decoding: {e}")));
        }
        let mut out = String::new();
        let mut line_start = true;
        for &id in ids {
            let tok = self.token(id).ok_or(DataError::UnknownId {
                id,
                size: self.len(),
            })?;
            match self.kind {
                TokenizerKind::Char | TokenizerKind::Bpe => out.push_str(tok),
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

    /// The Hugging Face encoding of `text` (BPE only), without special tokens.
    fn hf_encode(&self, text: &str) -> Result<tokenizers::Encoding> {
        let b = self
            .bpe
            .as_ref()
            .ok_or_else(|| DataError::InvalidArgument("not a BPE tokenizer".into()))?;
        b.tokenizer
            .encode(text, false)
            .map_err(|e| DataError::BadVocab(format!("BPE encoding: {e}")))
    }

    /// The Hugging Face `tokenizer.json` of a BPE tokenizer (what `export` writes beside a GPT-2
    /// checkpoint).
    pub fn huggingface_json(&self) -> Option<String> {
        self.bpe
            .as_ref()
            .map(|b| serde_json::to_string_pretty(&*b.json).expect("a JSON value serialises"))
    }

    /// The JSON saved with a model.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a tokenizer always serialises")
    }

    /// Reads memaudit's own JSON, or a Hugging Face `tokenizer.json` (recognised by its `model`
    /// key and no `format`) as a BPE tokenizer.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| DataError::BadVocab(e.to_string()))?;
        if value.get("format").is_none() && value.get("model").is_some() {
            return Self::bpe_from_value(value);
        }
        serde_json::from_value(value).map_err(|e| DataError::BadVocab(e.to_string()))
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
        TokenizerKind::Bpe => Err(DataError::BadVocab(
            "a BPE vocabulary comes from its tokenizer.json, not from a token list".into(),
        )),
        TokenizerKind::Word if tok.is_empty() || tok.chars().any(char::is_whitespace) => {
            Err(DataError::BadVocab(format!(
                "word vocabulary token {tok:?} is empty or holds whitespace"
            )))
        }
        _ => Ok(()),
    }
}
