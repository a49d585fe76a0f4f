//! The canaries of a Secret Sharer run: the model's vocabulary as a canary tokenizer, the
//! template in the model's tokens, and the run's [`CanarySet`] (manifest and reference
//! candidates) with its files in the run folder.

use std::path::Path;

use memaudit_audit::{
    CanaryManifest, CanaryTemplate, CanaryTokenizer, RandomnessSpace, RenderedCandidates,
    TokenizedTemplate, sample_references,
};
use memaudit_data::{Tokenizer, TokenizerKind};

use crate::error::{ExperimentError, Result};
use crate::rundir::write_atomic;

/// File names in a secret-sharer run folder.
pub const MANIFEST_FILE: &str = "canaries.json";
pub const REFERENCES_FILE: &str = "references.json";

/// Independent seeds for the canaries' random streams (the engine's one seed-mixing function).
pub use memaudit_engine::sampler::mix_seed as derive_seed;

/// A saved `Tokenizer` as the audit library's `CanaryTokenizer`: a character model maps every
/// character to its own token; a word model maps the literal text to words and every slot symbol
/// to the one-character token. Nothing maps to the unknown token: a canary outside the
/// vocabulary is an error naming the character or word.
pub struct VocabTokenizer<'a>(pub &'a Tokenizer);

/// Why a BPE vocabulary cannot be a `CanaryTokenizer` (docs/transformers.md, "Canaries under
/// BPE"): the trie walk needs one token per slot symbol, and byte-level BPE merges digit runs.
pub const BPE_TRIE_REFUSAL: &str = "a byte-level BPE vocabulary merges characters across slot positions (GPT-2 merges runs of digits), so a canary is not one token per symbol and the trie walk does not apply; score its candidates rendered whole (memaudit_audit::rendered, docs/transformers.md)";

impl CanaryTokenizer for VocabTokenizer<'_> {
    fn encode_literal(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        match self.0.kind() {
            TokenizerKind::Char => text.chars().map(|c| self.encode_symbol(c)).collect(),
            TokenizerKind::Word => text
                .split_whitespace()
                .map(|w| {
                    self.0
                        .id(w)
                        .filter(|&id| Some(id) != self.0.unk_id())
                        .ok_or_else(|| format!("word {w:?} is not in the word model's vocabulary"))
                })
                .collect(),
            TokenizerKind::Bpe => Err(BPE_TRIE_REFUSAL.into()),
        }
    }

    fn encode_symbol(&self, symbol: char) -> std::result::Result<u32, String> {
        if self.0.kind() == TokenizerKind::Bpe {
            return Err(BPE_TRIE_REFUSAL.into());
        }
        let id = self
            .0
            .id(&symbol.to_string())
            .filter(|&id| Some(id) != self.0.unk_id());
        id.ok_or_else(|| match self.0.kind() {
            TokenizerKind::Char => {
                format!("character {symbol:?} is not in the character model's vocabulary")
            }
            TokenizerKind::Word | TokenizerKind::Bpe => {
                format!("slot symbol {symbol:?} is not a token of the word model's vocabulary")
            }
        })
    }
}

/// The line separator token: what precedes an inserted canary (the scoring context) and what
/// follows it. `\n` for characters, `<eos>` for words.
pub fn separator(tok: &Tokenizer) -> Result<u32> {
    match tok.kind() {
        TokenizerKind::Char => tok.id("\n").ok_or_else(|| {
            ExperimentError::protocol("the corpus has no line breaks: canaries are inserted at line starts, so the text needs several lines")
        }),
        TokenizerKind::Word => tok
            .eos_id()
            .ok_or_else(|| ExperimentError::protocol("the word vocabulary has no <eos> token")),
        // GPT-2 starts documents after <|endoftext|>; without it, the newline's single token.
        TokenizerKind::Bpe => tok
            .eos_id()
            .or_else(|| match tok.encode("\n").ok()?.as_slice() {
                &[t] => Some(t),
                _ => None,
            })
            .ok_or_else(|| {
                ExperimentError::protocol(
                    "the BPE vocabulary has neither <|endoftext|> nor a newline token",
                )
            }),
    }
}

/// What a Secret Sharer run inserts canaries after and ends each with: [`separator`] for
/// characters and words; for a byte-level BPE, the newline's own token. The corpus is plain
/// text, so `<|endoftext|>` never occurs in it, while its lines end in newline tokens: a canary
/// starts a line, is read after that token (its scoring context), and keeps the tokens it has
/// alone there, since GPT-2's pre-tokenizer never joins a newline with a letter or a digit
/// (docs/secret-sharer.md, "Byte-level BPE").
pub fn insertion_separator(tok: &Tokenizer) -> Result<u32> {
    if tok.kind() != TokenizerKind::Bpe {
        return separator(tok);
    }
    match tok.encode("\n")?.as_slice() {
        &[t] => Ok(t),
        ids => Err(ExperimentError::protocol(format!(
            "the BPE tokenizer cuts a newline into {} tokens: canaries are inserted at line starts, after the newline's token",
            ids.len()
        ))),
    }
}

/// Tokens a vocabulary needs for a template: its characters (character models) or its literal
/// words and slot symbols (word models).
pub fn template_tokens(tpl: &CanaryTemplate, kind: TokenizerKind, literal: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in tpl.segments() {
        if let memaudit_audit::Segment::Literal(text) = seg
            && literal
        {
            match kind {
                TokenizerKind::Char => out.extend(text.chars().map(String::from)),
                TokenizerKind::Word => out.extend(text.split_whitespace().map(String::from)),
                TokenizerKind::Bpe => {}
            }
        }
    }
    for symbols in tpl.position_symbols() {
        out.extend(symbols.iter().map(|c| c.to_string()));
    }
    out.sort();
    out.dedup();
    out
}

/// Parse a canary template (errors name the setting `canary.template` and the column).
pub fn parse_template(text: &str) -> Result<CanaryTemplate> {
    CanaryTemplate::parse(text).map_err(|e| ExperimentError::Invalid {
        field: "canary.template".into(),
        value: format!("{text:?}"),
        reason: e.to_string(),
    })
}

/// The template in the model's tokens, conditioned on the line separator. `hint` is appended to
/// a vocabulary error (what the user can do about it).
pub fn tokenize_template(
    tpl: &CanaryTemplate,
    tok: &Tokenizer,
    hint: &str,
) -> Result<TokenizedTemplate> {
    let sep = separator(tok)?;
    TokenizedTemplate::new(tpl, &VocabTokenizer(tok), &[sep]).map_err(|e| {
        ExperimentError::Invalid {
            field: "canary.template".into(),
            value: format!("{:?}", tpl.source()),
            reason: format!("{e}{hint}"),
        }
    })
}

/// How a run's canaries are tokenized, which decides how they are scored.
pub enum CanaryTokens {
    /// One token per slot symbol (character and word vocabularies): the trie walk and the
    /// best-first extraction search ([`memaudit_audit::Scorer`]).
    Trie(TokenizedTemplate),
    /// Every candidate rendered and tokenized whole (byte-level BPE, whose merges join slot
    /// symbols): exact ranks and extraction from one scoring of all of R
    /// ([`memaudit_audit::rendered`], docs/transformers.md "Canaries under BPE").
    Rendered(RenderedCandidates),
}

impl CanaryTokens {
    pub fn template(&self) -> &CanaryTemplate {
        match self {
            Self::Trie(t) => t.template(),
            Self::Rendered(r) => r.template(),
        }
    }

    pub fn space(&self) -> &RandomnessSpace {
        self.template().space()
    }

    /// Tokens before an inserted canary (the scoring context).
    pub fn context(&self) -> &[u32] {
        match self {
            Self::Trie(t) => t.context(),
            Self::Rendered(r) => r.context(),
        }
    }

    /// The tokens inserted for candidate `index` (before the terminator).
    pub fn canary_tokens(&self, index: u128) -> memaudit_audit::Result<Vec<u32>> {
        match self {
            Self::Trie(t) => t.canary_tokens(index),
            Self::Rendered(r) => r.canary_tokens(index),
        }
    }

    /// The most tokens a model reads for one candidate: the conditioning plus the longest
    /// scored sequence (a GPT's key/value cache is sized to it).
    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Trie(t) => t.conditioning().len() + t.steps().len(),
            Self::Rendered(r) => r.conditioning().len() + r.scored_lengths().1,
        }
    }

    /// The trie-walk tokenization, `None` for a BPE run.
    pub fn trie(&self) -> Option<&TokenizedTemplate> {
        match self {
            Self::Trie(t) => Some(t),
            Self::Rendered(_) => None,
        }
    }

    /// The rendered candidates of a BPE run, `None` otherwise.
    pub fn rendered(&self) -> Option<&RenderedCandidates> {
        match self {
            Self::Trie(_) => None,
            Self::Rendered(r) => Some(r),
        }
    }
}

/// The candidates of `template` under a byte-level BPE, each rendered and tokenized whole and
/// read after `context`; at most `limit` of them (every one is held).
pub fn render_candidates(
    template: &CanaryTemplate,
    tok: &Tokenizer,
    context: &[u32],
    limit: u128,
) -> memaudit_audit::Result<RenderedCandidates> {
    let encode = |text: &str| tok.encode(text).map_err(|e| e.to_string());
    RenderedCandidates::new(template, context, &encode, limit)
}

/// A run's canaries: the template in tokens, the manifest and the reference candidates.
pub struct CanarySet {
    pub tpl: CanaryTokens,
    pub manifest: CanaryManifest,
    pub references: Vec<u128>,
}

fn in_file(path: &Path, message: impl Into<String>) -> ExperimentError {
    ExperimentError::InFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl CanarySet {
    pub fn secrets(&self) -> Vec<u128> {
        self.manifest.secret_indices()
    }

    /// Distinct repetition counts, ascending (0 = held out).
    pub fn repetition_counts(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self
            .manifest
            .canaries
            .iter()
            .map(|c| c.repetitions)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Candidate text of index `i`.
    pub fn render(&self, i: u128) -> String {
        self.tpl
            .template()
            .render(i)
            .unwrap_or_else(|_| format!("#{i}"))
    }

    /// Load the set saved in a run folder (`canaries.json`, `references.json`), checking that it
    /// belongs to this run's model: the template re-tokenised with the run's vocabulary must give
    /// the manifest's token ids.
    pub fn load(run: &Path, manifest_path: Option<&Path>, tok: &Tokenizer) -> Result<Self> {
        let mp = manifest_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| run.join(MANIFEST_FILE));
        if !mp.is_file() {
            return Err(in_file(
                &mp,
                "no canary manifest (is --run a `memaudit secret-sharer` run? For another run give --manifest or --canary)",
            ));
        }
        let manifest = CanaryManifest::load(&mp).map_err(|e| in_file(&mp, e.to_string()))?;
        let template =
            CanaryTemplate::parse(&manifest.template).map_err(|e| in_file(&mp, e.to_string()))?;
        let misfit = |e: memaudit_audit::AuditError| {
            in_file(
                &mp,
                format!(
                    "the canaries do not fit the model of --run ({e}); the manifest belongs to a run with another vocabulary"
                ),
            )
        };
        let tpl = if tok.kind() == TokenizerKind::Bpe {
            // The run scored every candidate rendered whole; its space was held then, so it is
            // held again (no other limit).
            let size = template.space().size();
            CanaryTokens::Rendered(
                render_candidates(&template, tok, &manifest.context_tokens, size)
                    .map_err(misfit)?,
            )
        } else {
            CanaryTokens::Trie(
                TokenizedTemplate::new(&template, &VocabTokenizer(tok), &manifest.context_tokens)
                    .map_err(misfit)?,
            )
        };
        for c in &manifest.canaries {
            let ids = tpl
                .canary_tokens(c.secret_index)
                .map_err(|e| in_file(&mp, format!("canary {}: {e}", c.id)))?;
            if ids != c.token_ids {
                return Err(in_file(
                    &mp,
                    format!(
                        "canary {} has other token ids under the vocabulary of --run {}: the manifest belongs to a run from a different model",
                        c.id,
                        run.display()
                    ),
                ));
            }
        }
        let rp = mp.with_file_name(REFERENCES_FILE);
        let references = if rp.is_file() {
            let text = std::fs::read_to_string(&rp).map_err(|source| ExperimentError::Io {
                path: rp.clone(),
                source,
            })?;
            let v: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| in_file(&rp, format!("not a list of candidates: {e}")))?;
            v.iter()
                .map(|s| {
                    s.parse::<u128>()
                        .ok()
                        .filter(|&i| i < template.space().size())
                        .ok_or_else(|| {
                            in_file(&rp, format!("{s:?} is not a candidate of the template"))
                        })
                })
                .collect::<Result<Vec<u128>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            tpl,
            manifest,
            references,
        })
    }

    /// Draw `count` references (capped at the candidates left), replacing the current ones.
    pub fn draw_references(&mut self, count: usize, seed: u64) -> Result<usize> {
        let secrets = self.secrets();
        let left = self
            .tpl
            .space()
            .size()
            .saturating_sub(secrets.len() as u128);
        let count = (count as u128).min(left) as usize;
        self.references = sample_references(self.tpl.space(), count, &secrets, seed)
            .map_err(|e| ExperimentError::audit("drawing the reference candidates", e))?;
        Ok(count)
    }

    /// Write `canaries.json` and `references.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mp = dir.join(MANIFEST_FILE);
        self.manifest
            .save(&mp)
            .map_err(|e| in_file(&mp, e.to_string()))?;
        // Indices as strings: they are u128 and JSON readers often stop at 2^53.
        let refs: Vec<String> = self.references.iter().map(|r| r.to_string()).collect();
        write_atomic(
            &dir.join(REFERENCES_FILE),
            serde_json::to_string(&refs)?.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_tokenizer_never_maps_to_unknown() {
        let tok = Tokenizer::char_from_text("ab 12\n", true).unwrap();
        let t = VocabTokenizer(&tok);
        assert_eq!(t.encode_literal("ab").unwrap().len(), 2);
        let err = t.encode_symbol('7').unwrap_err();
        assert!(err.contains("'7'"), "{err}");
        // The unknown token itself is not a canary symbol either.
        assert!(t.encode_symbol(memaudit_data::tokenizer::CHAR_UNK).is_err());
        let w = Tokenizer::word_from_text("the pin is\n", &Default::default()).unwrap();
        let t = VocabTokenizer(&w);
        assert_eq!(t.encode_literal(" the  pin is ").unwrap().len(), 3);
        assert!(t.encode_literal("the code").unwrap_err().contains("code"));
    }
}
