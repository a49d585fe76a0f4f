//! Canaries under a tokenizer that merges across slot positions (byte-level BPE, GPT-2).
//!
//! GPT-2's BPE merges runs of digits: "my pin is 1234" may be `[.., " 1", "2", "34"]` and
//! "my pin is 9075" `[.., " 90", "7", "5"]`. A candidate is then not one token per symbol, its
//! token count depends on the secret, and the literal text next to a slot can merge with it (the
//! space before the digits joins the first digit). The trie walk of [`crate::scoring`] assumes one
//! token per slot position, so it does not apply.
//!
//! Here every candidate of R is rendered to text and tokenized **whole** (`encode(text)`), as the
//! model reads it. The tokens all candidates share at the start (the longest common token prefix)
//! are read once, after the caller's context tokens; everything after it, up to the end of the
//! canary, is scored, suffix included (merges can change the suffix's tokens too). So a
//! candidate's log-perplexity is `-log2 P(canary tokens | context)` minus a constant that is the
//! same for every candidate: ranks and exposure are exact. (The probability of one tokenization,
//! the canonical one, as the Secret Sharer on GPT-2 uses; not a sum over all tokenizations.)
//!
//! Every candidate is tokenized and held (its token ids), so this is for spaces up to a limit
//! (10^5 candidates of ~10 tokens: a few MB); scoring batches candidates, drops rows as their
//! sequences end, and costs one LM row per scored token.

use memaudit_engine::{IncrementalLm, LmState};

use crate::error::{AuditError, Result, invalid};
use crate::exposure::exposure_from_rank;
use crate::scoring::{ExactRank, token_cost_bits};
use crate::template::{CanaryTemplate, RandomnessSpace};

/// A text tokenizer: token ids of a whole text, or a message.
pub type TextEncoder<'a> = dyn Fn(&str) -> std::result::Result<Vec<u32>, String> + 'a;

/// Every candidate of a template, rendered and tokenized whole.
#[derive(Clone, Debug)]
pub struct RenderedCandidates {
    template: CanaryTemplate,
    context: Vec<u32>,
    /// Tokens every candidate starts with.
    common: Vec<u32>,
    /// Candidate i's scored tokens are `tokens[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    tokens: Vec<u32>,
}

impl RenderedCandidates {
    /// Tokenize every candidate of `template` with `encode`. `context` are the tokens before an
    /// inserted canary (e.g. `<|endoftext|>`). Refuses spaces above `limit` candidates, a
    /// candidate that tokenizes to nothing after the common prefix, and an empty conditioning.
    pub fn new(
        template: &CanaryTemplate,
        context: &[u32],
        encode: &TextEncoder<'_>,
        limit: u128,
    ) -> Result<Self> {
        let size = template.space().size();
        if size > limit || size > usize::MAX as u128 / 2 {
            return Err(AuditError::SpaceAboveLimit { size, limit });
        }
        let size = size as usize;
        // Every candidate's tokens, flat (one allocation, not one per candidate).
        let mut flat: Vec<u32> = Vec::new();
        let mut ends: Vec<usize> = Vec::with_capacity(size);
        let mut common_len = usize::MAX;
        for i in 0..size {
            let text = template.render(i as u128)?;
            let ids = encode(&text).map_err(|e| {
                AuditError::Tokenize(format!(
                    "template {:?}, candidate {text:?}: {e}",
                    template.source()
                ))
            })?;
            let first = &flat[..ends.first().copied().unwrap_or(0)];
            common_len = if i == 0 {
                ids.len()
            } else {
                let same = first.iter().zip(&ids).take_while(|(a, b)| a == b).count();
                common_len.min(same)
            };
            flat.extend_from_slice(&ids);
            ends.push(flat.len());
        }
        let common = flat[..common_len].to_vec();
        if context.is_empty() && common.is_empty() {
            return Err(AuditError::EmptyContext);
        }
        let mut offsets = Vec::with_capacity(size + 1);
        let mut tokens = Vec::with_capacity(flat.len() - size * common_len);
        offsets.push(0);
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            if end - start == common_len {
                // Only possible when the candidate's text is a prefix of another's: templates
                // render equal-length texts, so this means two candidates share their tokens.
                return Err(AuditError::Tokenize(format!(
                    "template {:?}: candidate {i} has no tokens after the {common_len} shared by all candidates",
                    template.source()
                )));
            }
            tokens.extend_from_slice(&flat[start + common_len..end]);
            offsets.push(tokens.len());
            start = end;
        }
        Ok(Self {
            template: template.clone(),
            context: context.to_vec(),
            common,
            offsets,
            tokens,
        })
    }

    pub fn template(&self) -> &CanaryTemplate {
        &self.template
    }

    pub fn space(&self) -> &RandomnessSpace {
        self.template.space()
    }

    /// The caller's context tokens (what precedes an inserted canary).
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// What the model reads before the first scored token: `context ++ common prefix`.
    pub fn conditioning(&self) -> Vec<u32> {
        let mut c = self.context.clone();
        c.extend_from_slice(&self.common);
        c
    }

    /// The scored tokens of candidate `index` (after the common prefix, to the canary's end).
    pub fn scored_tokens(&self, index: u128) -> Result<&[u32]> {
        let size = self.space().size();
        if index >= size {
            return Err(AuditError::IndexOutOfSpace { index, size });
        }
        let i = index as usize;
        Ok(&self.tokens[self.offsets[i]..self.offsets[i + 1]])
    }

    /// All tokens of candidate `index`'s canary, as the tokenizer cuts it alone.
    pub fn canary_tokens(&self, index: u128) -> Result<Vec<u32>> {
        let mut out = self.common.clone();
        out.extend_from_slice(self.scored_tokens(index)?);
        Ok(out)
    }

    /// Fewest and most scored tokens over the candidates (they differ when merges depend on the
    /// secret).
    pub fn scored_lengths(&self) -> (usize, usize) {
        let lens = self.offsets.windows(2).map(|w| w[1] - w[0]);
        let min = lens.clone().min().unwrap_or(0);
        (min, lens.max().unwrap_or(0))
    }

    /// LM rows (token steps of one row) that scoring every candidate costs: the conditioning
    /// once, then every scored token but each candidate's first (read from the conditioning's
    /// distribution). The extraction budget of a rendered search is counted in these.
    pub fn lm_rows(&self) -> u64 {
        let scored: u64 = self
            .offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).saturating_sub(1) as u64)
            .sum();
        self.conditioning().len() as u64 + scored
    }

    /// Largest token id used, to check against a model's vocabulary.
    pub fn max_token(&self) -> u32 {
        self.context
            .iter()
            .chain(&self.common)
            .chain(&self.tokens)
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Log-perplexity (bits, [`token_cost_bits`] per token) of each candidate in `indices`,
    /// batched `chunk_rows` at a time.
    pub fn log_perplexities<L: IncrementalLm + ?Sized>(
        &self,
        lm: &L,
        indices: &[u128],
        chunk_rows: usize,
    ) -> Result<Vec<f64>> {
        let vocab = lm.vocab_size();
        if self.max_token() as usize >= vocab {
            return Err(AuditError::TokenOutOfVocab {
                token: self.max_token(),
                vocab,
            });
        }
        for &i in indices {
            self.scored_tokens(i)?;
        }
        let (root, root_lp) = self.root(lm);
        let mut out = vec![0.0; indices.len()];
        for (o, idx) in out
            .chunks_mut(chunk_rows.max(1))
            .zip(indices.chunks(chunk_rows.max(1)))
        {
            self.score_batch(lm, &root, &root_lp, idx, o);
        }
        Ok(out)
    }

    /// Log-perplexity of every candidate; `scores[i]` is candidate `i`.
    pub fn all_scores<L: IncrementalLm + ?Sized>(
        &self,
        lm: &L,
        chunk_rows: usize,
    ) -> Result<Vec<f64>> {
        let all: Vec<u128> = (0..self.space().size()).collect();
        self.log_perplexities(lm, &all, chunk_rows)
    }

    /// Exact rank and exposure of each secret over all of R: `rank = |{r : Px(r) <= Px(s)}|`
    /// (ties counted, the secret itself once), from one scoring of every candidate.
    pub fn exact_ranks<L: IncrementalLm + ?Sized>(
        &self,
        lm: &L,
        secrets: &[u128],
        chunk_rows: usize,
    ) -> Result<Vec<ExactRank>> {
        let scores = self.all_scores(lm, chunk_rows)?;
        self.ranks_from_scores(&scores, secrets)
    }

    /// [`Self::exact_ranks`] from the scores of every candidate (`scores[i]` is candidate `i`,
    /// as [`Self::all_scores`] gives them), so one scoring serves ranks, references and
    /// extraction.
    pub fn ranks_from_scores(&self, scores: &[f64], secrets: &[u128]) -> Result<Vec<ExactRank>> {
        let size = self.space().size();
        if scores.len() as u128 != size {
            return Err(invalid(
                "scores",
                format!("{} scores for {size} candidates", scores.len()),
            ));
        }
        let mut sorted = scores.to_vec();
        if let Some(p) = sorted.iter().position(|s| s.is_nan()) {
            return Err(invalid(
                "language model",
                format!("log-perplexity of candidate {p} is NaN"),
            ));
        }
        sorted.sort_by(f64::total_cmp);
        let log2_size = self.space().log2_size();
        secrets
            .iter()
            .map(|&s| {
                self.scored_tokens(s)?;
                let px = scores[s as usize];
                let rank = sorted.partition_point(|&x| x <= px) as u128;
                Ok(ExactRank {
                    index: s,
                    log_perplexity: px,
                    rank,
                    exposure: exposure_from_rank(rank, log2_size),
                })
            })
            .collect()
    }

    /// The `k` lowest-perplexity candidates, best first (exact extraction for a small space):
    /// `(index, log-perplexity)`.
    pub fn best<L: IncrementalLm + ?Sized>(
        &self,
        lm: &L,
        k: usize,
        chunk_rows: usize,
    ) -> Result<Vec<(u128, f64)>> {
        let scores = self.all_scores(lm, chunk_rows)?;
        Ok(best_of_scores(&scores, k))
    }

    /// State and next-token log-probabilities after the conditioning tokens.
    fn root<L: IncrementalLm + ?Sized>(&self, lm: &L) -> (LmState, Vec<f32>) {
        let mut state = lm.initial_state(1);
        let mut lp = vec![0.0f32; lm.vocab_size()];
        for t in self.conditioning() {
            lm.step(&mut state, &[t], &mut lp);
        }
        (state, lp)
    }

    /// Score one batch: rows sorted by decreasing length, so the rows still running at token j
    /// are a prefix of the batch and finished ones are sliced off.
    fn score_batch<L: IncrementalLm + ?Sized>(
        &self,
        lm: &L,
        root: &LmState,
        root_lp: &[f32],
        indices: &[u128],
        out: &mut [f64],
    ) {
        let vocab = lm.vocab_size();
        let seqs: Vec<&[u32]> = indices
            .iter()
            .map(|&i| {
                self.scored_tokens(i)
                    .expect("indices were checked by the caller")
            })
            .collect();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(seqs[r].len()));
        let mut cost: Vec<f64> = order
            .iter()
            .map(|&r| token_cost_bits(root_lp[seqs[r][0] as usize]))
            .collect();
        let mut state = root.repeat_each(order.len());
        let mut lp = Vec::new();
        let mut feed = Vec::with_capacity(order.len());
        let max_len = order.first().map_or(0, |&r| seqs[r].len());
        for j in 1..max_len {
            let active = order.partition_point(|&r| seqs[r].len() > j);
            if active < state.rows {
                state = state.slice(0, active);
            }
            feed.clear();
            feed.extend(order[..active].iter().map(|&r| seqs[r][j - 1]));
            lp.resize(active * vocab, 0.0);
            lm.step(&mut state, &feed, &mut lp);
            for (k, &r) in order[..active].iter().enumerate() {
                cost[k] += token_cost_bits(lp[k * vocab + seqs[r][j] as usize]);
            }
        }
        for (k, &r) in order.iter().enumerate() {
            out[r] = cost[k];
        }
    }
}

/// The `k` lowest of `scores` (`scores[i]` is candidate `i`), best first, ties by index:
/// `(index, log-perplexity)`.
pub fn best_of_scores(scores: &[f64], k: usize) -> Vec<(u128, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| (i as u128, scores[i]))
        .collect()
}

/// Check that a canary inserted as *text* between `before` and `after` keeps its own tokens:
/// `encode(before ++ canary ++ after)` must be `encode(before) ++ encode(canary) ++
/// encode(after)`. BPE can merge across the boundary (a digit run continuing into the text
/// after it, a word glued to the text before it); the model would then train on tokens other
/// than the ones scored, and the error says which side merged and how (token ids).
pub fn check_insertion(
    encode: &TextEncoder<'_>,
    before: &str,
    canary: &str,
    after: &str,
) -> Result<()> {
    check_insertion_named(encode, &|t| t.to_string(), before, canary, after)
}

/// [`check_insertion`], with the tokens in the error written by `name` (e.g. the vocabulary's
/// token strings, `"Ġ90"`, so the user sees what merged).
pub fn check_insertion_named(
    encode: &TextEncoder<'_>,
    name: &dyn Fn(u32) -> String,
    before: &str,
    canary: &str,
    after: &str,
) -> Result<()> {
    let enc = |t: &str| encode(t).map_err(AuditError::Tokenize);
    let (b, c, a) = (enc(before)?, enc(canary)?, enc(after)?);
    let whole = enc(&format!("{before}{canary}{after}"))?;
    let mut parts = b.clone();
    parts.extend_from_slice(&c);
    parts.extend_from_slice(&a);
    if whole == parts {
        return Ok(());
    }
    // Which boundary merged: the canary with the text before it, or else with the text after.
    let head = enc(&format!("{before}{canary}"))?;
    let side = if head.len() != b.len() + c.len() || !head.starts_with(&b) || !head.ends_with(&c) {
        "its start merges with the text before it"
    } else {
        "its end merges with the text after it"
    };
    let names = |ids: &[u32]| {
        let v: Vec<String> = ids.iter().map(|&t| name(t)).collect();
        format!("[{}]", v.join(", "))
    };
    // In place vs the parts from a few tokens before their first difference (the text around
    // an insertion can be a whole line), cut after a few more.
    let d = whole
        .iter()
        .zip(&parts)
        .position(|(x, y)| x != y)
        .unwrap_or(whole.len().min(parts.len()));
    let (from, upto) = (d.saturating_sub(3), d + 6);
    let around = |ids: &[u32]| {
        let cut = &ids[from.min(ids.len())..upto.min(ids.len())];
        format!(
            "{}{}{}",
            if from > 0 { "..." } else { "" },
            names(cut),
            if upto < ids.len() { "..." } else { "" }
        )
    };
    Err(AuditError::Insertion(format!(
        "canary {canary:?} tokenizes differently inside the text than alone ({side}): alone {}, in place {} vs the parts {} (from token {from}); put a separator (e.g. a newline) around it, or score the tokens the model actually saw",
        names(&c),
        around(&whole),
        around(&parts)
    )))
}
