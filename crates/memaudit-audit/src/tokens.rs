//! From a template to token ids. Tokenisation belongs to the model's vocabulary (the caller's):
//! a character model maps every character to one token; a word model maps literal text to words
//! and each slot symbol to one word token. Both fit [`CanaryTokenizer`].

use std::collections::{HashMap, HashSet};

use crate::error::{AuditError, Result};
use crate::template::{CanaryTemplate, RandomnessSpace, Segment};

/// Turns template text into token ids.
pub trait CanaryTokenizer {
    /// Token ids of a literal piece of template text.
    fn encode_literal(&self, text: &str) -> std::result::Result<Vec<u32>, String>;
    /// The single token id of one slot symbol.
    fn encode_symbol(&self, symbol: char) -> std::result::Result<u32, String>;
}

/// A [`CanaryTokenizer`] from two closures.
pub struct FnTokenizer<L, S> {
    pub literal: L,
    pub symbol: S,
}

impl<L, S> CanaryTokenizer for FnTokenizer<L, S>
where
    L: Fn(&str) -> std::result::Result<Vec<u32>, String>,
    S: Fn(char) -> std::result::Result<u32, String>,
{
    fn encode_literal(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        (self.literal)(text)
    }
    fn encode_symbol(&self, symbol: char) -> std::result::Result<u32, String> {
        (self.symbol)(symbol)
    }
}

/// One token per character, from the model's character vocabulary (token id = position).
#[derive(Clone, Debug)]
pub struct CharTokenizer {
    ids: HashMap<char, u32>,
}

impl CharTokenizer {
    pub fn new(vocab: &[char]) -> Self {
        Self {
            ids: vocab
                .iter()
                .enumerate()
                .map(|(i, &c)| (c, i as u32))
                .collect(),
        }
    }
}

impl CanaryTokenizer for CharTokenizer {
    fn encode_literal(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        text.chars().map(|c| self.encode_symbol(c)).collect()
    }
    fn encode_symbol(&self, symbol: char) -> std::result::Result<u32, String> {
        self.ids.get(&symbol).copied().ok_or_else(|| {
            format!("character {symbol:?} is not in the character model's vocabulary; change the template or train with it")
        })
    }
}

/// One position of the scored part: the tokens it may take (one for literal text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoredStep {
    /// Candidate tokens, in symbol order.
    pub tokens: Vec<u32>,
    /// The slot position this step draws, `None` for a literal token between slots.
    pub slot_position: Option<usize>,
}

/// A template in token ids.
///
/// The canary's tokens are `prefix ++ scored ++ suffix`. The *scored part* runs from the first
/// slot to the last slot, literal tokens between slots included (their probability depends on
/// the candidate). The prefix is a constant and does not change ranks; the suffix after the last
/// slot is not scored (scoring it would cost one extra LM step per candidate and token). The
/// model is conditioned on `context ++ prefix`, where `context` is what precedes an inserted
/// canary in the stream (e.g. the line separator).
#[derive(Clone, Debug)]
pub struct TokenizedTemplate {
    template: CanaryTemplate,
    context: Vec<u32>,
    prefix: Vec<u32>,
    steps: Vec<ScoredStep>,
    suffix: Vec<u32>,
}

impl TokenizedTemplate {
    pub fn new(
        template: &CanaryTemplate,
        tokenizer: &dyn CanaryTokenizer,
        context: &[u32],
    ) -> Result<Self> {
        let tok = |r: std::result::Result<Vec<u32>, String>, text: &str| {
            r.map_err(|e| {
                AuditError::Tokenize(format!(
                    "template {:?}, text {text:?}: {e}",
                    template.source()
                ))
            })
        };
        let segs = template.segments();
        let first_slot = segs
            .iter()
            .position(|s| matches!(s, Segment::Slot { .. }))
            .expect("parse guarantees a slot");
        let last_slot = segs
            .iter()
            .rposition(|s| matches!(s, Segment::Slot { .. }))
            .expect("parse guarantees a slot");
        let mut prefix = Vec::new();
        let mut suffix = Vec::new();
        let mut steps = Vec::new();
        let mut pos = 0;
        for (i, seg) in segs.iter().enumerate() {
            match seg {
                Segment::Literal(text) => {
                    let ids = tok(tokenizer.encode_literal(text), text)?;
                    if i < first_slot {
                        prefix.extend(ids);
                    } else if i > last_slot {
                        suffix.extend(ids);
                    } else {
                        steps.extend(ids.into_iter().map(|t| ScoredStep {
                            tokens: vec![t],
                            slot_position: None,
                        }));
                    }
                }
                Segment::Slot { count, .. } => {
                    for _ in 0..*count {
                        let symbols = &template.position_symbols()[pos];
                        let mut tokens = Vec::with_capacity(symbols.len());
                        let mut seen = HashSet::new();
                        for &c in symbols {
                            let t = tokenizer.encode_symbol(c).map_err(|e| {
                                AuditError::Tokenize(format!(
                                    "template {:?}, slot symbol {c:?}: {e}",
                                    template.source()
                                ))
                            })?;
                            if !seen.insert(t) {
                                return Err(AuditError::Tokenize(format!(
                                    "template {:?}: two symbols of one slot map to token {t}; every symbol needs its own token",
                                    template.source()
                                )));
                            }
                            tokens.push(t);
                        }
                        steps.push(ScoredStep {
                            tokens,
                            slot_position: Some(pos),
                        });
                        pos += 1;
                    }
                }
            }
        }
        if context.is_empty() && prefix.is_empty() {
            return Err(AuditError::EmptyContext);
        }
        Ok(Self {
            template: template.clone(),
            context: context.to_vec(),
            prefix,
            steps,
            suffix,
        })
    }

    pub fn template(&self) -> &CanaryTemplate {
        &self.template
    }

    pub fn space(&self) -> &RandomnessSpace {
        self.template.space()
    }

    pub fn context(&self) -> &[u32] {
        &self.context
    }

    pub fn prefix(&self) -> &[u32] {
        &self.prefix
    }

    pub fn suffix(&self) -> &[u32] {
        &self.suffix
    }

    /// The scored positions, first slot to last slot.
    pub fn steps(&self) -> &[ScoredStep] {
        &self.steps
    }

    /// What the model reads before the first scored token: `context ++ prefix` (never empty).
    pub fn conditioning(&self) -> Vec<u32> {
        let mut c = self.context.clone();
        c.extend_from_slice(&self.prefix);
        c
    }

    /// Tokens of the scored part of candidate `index`, written into `out` (one per step).
    pub fn scored_tokens_into(
        &self,
        index: u128,
        symbols: &mut [u32],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.space().decode_into(index, symbols)?;
        out.clear();
        for step in &self.steps {
            out.push(match step.slot_position {
                Some(p) => step.tokens[symbols[p] as usize],
                None => step.tokens[0],
            });
        }
        Ok(())
    }

    /// All tokens of the canary for candidate `index`: `prefix ++ scored ++ suffix`.
    pub fn canary_tokens(&self, index: u128) -> Result<Vec<u32>> {
        let mut symbols = vec![0; self.space().radices().len()];
        let mut scored = Vec::new();
        self.scored_tokens_into(index, &mut symbols, &mut scored)?;
        let mut out = self.prefix.clone();
        out.extend(scored);
        out.extend_from_slice(&self.suffix);
        Ok(out)
    }

    /// Largest token id used anywhere, to check against a model's vocabulary.
    pub fn max_token(&self) -> u32 {
        let steps = self.steps.iter().flat_map(|s| s.tokens.iter());
        self.context
            .iter()
            .chain(&self.prefix)
            .chain(&self.suffix)
            .chain(steps)
            .copied()
            .max()
            .unwrap_or(0)
    }
}
