//! Canary templates with typed slots and their randomness space R (The Secret Sharer, Carlini et
//! al. 2019, §3: a canary is a format sequence `s` with holes filled by randomness `r ∈ R`).
//!
//! Grammar: literal text with slots `{TYPE:COUNT}`, TYPE one of `digits` (0-9), `letters` (a-z),
//! `alphabet=SYMBOLS` (each character of SYMBOLS once). A slot of COUNT draws COUNT symbols, one
//! per *position*. `{{` and `}}` are literal braces.
//!
//! Candidates are numbered by a mixed-radix bijection, first position most significant, so index
//! order is the lexicographic (trie, depth-first) order: for `{digits:6}` index 281265 is
//! "281265". Exhaustive enumeration and uniform sampling are therefore plain integer ranges.

use std::collections::HashSet;

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{AuditError, Result, TemplateError};

/// The symbol set of one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotKind {
    Digits,
    Letters,
    Alphabet(Vec<char>),
}

impl SlotKind {
    pub fn symbols(&self) -> Vec<char> {
        match self {
            SlotKind::Digits => ('0'..='9').collect(),
            SlotKind::Letters => ('a'..='z').collect(),
            SlotKind::Alphabet(s) => s.clone(),
        }
    }
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Slot { kind: SlotKind, count: usize },
}

/// A parsed canary template (see the module docs for the grammar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryTemplate {
    source: String,
    segments: Vec<Segment>,
    /// Symbols of each slot position, in order.
    position_symbols: Vec<Vec<char>>,
    space: RandomnessSpace,
}

impl CanaryTemplate {
    /// Parse a template; errors name the column and what is wrong.
    pub fn parse(template: &str) -> std::result::Result<Self, TemplateError> {
        let chars: Vec<char> = template.chars().collect();
        let malformed = |column: usize, reason: &str| TemplateError::Malformed {
            template: template.to_string(),
            column,
            reason: reason.to_string(),
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '{' if chars.get(i + 1) == Some(&'{') => {
                    literal.push('{');
                    i += 2;
                }
                '}' if chars.get(i + 1) == Some(&'}') => {
                    literal.push('}');
                    i += 2;
                }
                '}' => {
                    return Err(malformed(
                        i + 1,
                        "unmatched '}' (write '}}' for a literal brace)",
                    ));
                }
                '{' => {
                    let open = i;
                    let close = (open + 1..chars.len())
                        .find(|&j| chars[j] == '}')
                        .ok_or_else(|| {
                            malformed(open + 1, "unclosed '{' (write '{{' for a literal brace)")
                        })?;
                    let body: String = chars[open + 1..close].iter().collect();
                    if let Some(j) = body.find('{') {
                        return Err(malformed(
                            open + 2 + body[..j].chars().count(),
                            "'{' inside a slot",
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(parse_slot(template, &body, open + 2)?);
                    i = close + 1;
                }
                c => {
                    literal.push(c);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let mut position_symbols = Vec::new();
        for seg in &segments {
            if let Segment::Slot { kind, count } = seg {
                let symbols = kind.symbols();
                for _ in 0..*count {
                    position_symbols.push(symbols.clone());
                }
            }
        }
        if position_symbols.is_empty() {
            return Err(TemplateError::NoSlot {
                template: template.to_string(),
            });
        }
        let radices: Vec<u32> = position_symbols.iter().map(|s| s.len() as u32).collect();
        let space = RandomnessSpace::new(radices).ok_or_else(|| TemplateError::SpaceTooLarge {
            template: template.to_string(),
        })?;
        Ok(Self {
            source: template.to_string(),
            segments,
            position_symbols,
            space,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Symbols of each slot position (one entry per drawn symbol).
    pub fn position_symbols(&self) -> &[Vec<char>] {
        &self.position_symbols
    }

    pub fn space(&self) -> &RandomnessSpace {
        &self.space
    }

    /// The canary text of candidate `index`.
    pub fn render(&self, index: u128) -> Result<String> {
        let digits = self.space.decode(index)?;
        let mut out = String::new();
        let mut p = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Slot { count, .. } => {
                    for _ in 0..*count {
                        out.push(self.position_symbols[p][digits[p] as usize]);
                        p += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The candidate index whose rendering is `text`, if it is one (inverse of
    /// [`render`](Self::render)).
    pub fn candidate_index(&self, text: &str) -> Option<u128> {
        let mut rest = text;
        let mut symbols = Vec::with_capacity(self.position_symbols.len());
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => rest = rest.strip_prefix(s.as_str())?,
                Segment::Slot { count, .. } => {
                    for _ in 0..*count {
                        let c = rest.chars().next()?;
                        let p = symbols.len();
                        let k = self.position_symbols[p].iter().position(|&x| x == c)?;
                        symbols.push(k as u32);
                        rest = &rest[c.len_utf8()..];
                    }
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        self.space.encode(&symbols).ok()
    }
}

fn parse_slot(
    template: &str,
    body: &str,
    column: usize,
) -> std::result::Result<Segment, TemplateError> {
    let malformed = |col: usize, reason: String| TemplateError::Malformed {
        template: template.to_string(),
        column: col,
        reason,
    };
    let Some(colon) = body.rfind(':') else {
        return Err(malformed(
            column,
            format!("slot {{{body}}} has no ':COUNT'; write e.g. {{digits:9}}"),
        ));
    };
    let (kind_text, count_text) = (&body[..colon], &body[colon + 1..]);
    let count_column = column + body[..colon].chars().count() + 1;
    let count: usize = count_text.trim().parse().map_err(|_| {
        malformed(
            count_column,
            format!("slot count {count_text:?} is not a positive integer"),
        )
    })?;
    if count == 0 {
        return Err(malformed(
            count_column,
            "slot count must be at least 1".to_string(),
        ));
    }
    let kind = match kind_text {
        "digits" => SlotKind::Digits,
        "letters" => SlotKind::Letters,
        k if k.starts_with("alphabet=") => {
            let symbols: Vec<char> = k["alphabet=".len()..].chars().collect();
            if symbols.len() < 2 {
                return Err(malformed(
                    column,
                    "an alphabet needs at least 2 symbols".to_string(),
                ));
            }
            let mut seen = HashSet::new();
            for &c in &symbols {
                if !seen.insert(c) {
                    return Err(malformed(
                        column,
                        format!("alphabet repeats the symbol {c:?}"),
                    ));
                }
            }
            SlotKind::Alphabet(symbols)
        }
        other => {
            return Err(TemplateError::UnknownSlotType {
                template: template.to_string(),
                column,
                kind: other.to_string(),
            });
        }
    };
    Ok(Segment::Slot { kind, count })
}

/// The randomness space R: one radix per slot position, |R| = product of the radices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomnessSpace {
    radices: Vec<u32>,
    size: u128,
}

impl RandomnessSpace {
    /// `None` when |R| overflows u128 or a radix is zero.
    pub fn new(radices: Vec<u32>) -> Option<Self> {
        let mut size: u128 = 1;
        for &r in &radices {
            if r == 0 {
                return None;
            }
            size = size.checked_mul(r as u128)?;
        }
        Some(Self { radices, size })
    }

    pub fn radices(&self) -> &[u32] {
        &self.radices
    }

    /// |R|.
    pub fn size(&self) -> u128 {
        self.size
    }

    /// log2 |R|, summed per position so it is exact to f64 rounding for any size.
    pub fn log2_size(&self) -> f64 {
        self.radices.iter().map(|&r| (r as f64).log2()).sum()
    }

    /// Symbol index of each position for candidate `index` (mixed radix, first position most
    /// significant).
    pub fn decode(&self, index: u128) -> Result<Vec<u32>> {
        let mut out = vec![0; self.radices.len()];
        self.decode_into(index, &mut out)?;
        Ok(out)
    }

    /// As [`decode`](Self::decode), into a caller buffer of one entry per position.
    pub fn decode_into(&self, mut index: u128, out: &mut [u32]) -> Result<()> {
        if index >= self.size {
            return Err(AuditError::IndexOutOfSpace {
                index,
                size: self.size,
            });
        }
        for (p, &r) in self.radices.iter().enumerate().rev() {
            out[p] = (index % r as u128) as u32;
            index /= r as u128;
        }
        Ok(())
    }

    /// Inverse of [`decode`](Self::decode).
    pub fn encode(&self, symbols: &[u32]) -> Result<u128> {
        if symbols.len() != self.radices.len() {
            return Err(crate::error::invalid(
                "candidate symbols",
                format!(
                    "{} symbols given, the template has {} slot positions",
                    symbols.len(),
                    self.radices.len()
                ),
            ));
        }
        let mut index: u128 = 0;
        for (&s, &r) in symbols.iter().zip(&self.radices) {
            if s >= r {
                return Err(crate::error::invalid(
                    "candidate symbols",
                    format!("symbol index {s} is not below the position's alphabet size {r}"),
                ));
            }
            index = index * r as u128 + s as u128;
        }
        Ok(index)
    }

    /// `count` distinct candidates drawn uniformly from R minus `exclude`, in random order.
    /// Sparse requests use rejection sampling (at most 2 expected draws each); dense ones
    /// enumerate the complement (then |R| <= 2 (count + excluded), so it is small).
    pub fn sample_distinct<G: Rng + ?Sized>(
        &self,
        count: usize,
        exclude: &[u128],
        rng: &mut G,
    ) -> Result<Vec<u128>> {
        let excluded: HashSet<u128> = exclude.iter().copied().filter(|&e| e < self.size).collect();
        let available = self.size - excluded.len() as u128;
        if count as u128 > available {
            return Err(AuditError::NotEnoughCandidates {
                requested: count as u128,
                size: self.size,
                excluded: excluded.len() as u128,
            });
        }
        let demand = count as u128 + excluded.len() as u128;
        if demand <= self.size / 2 {
            let mut taken = excluded;
            let mut out = Vec::with_capacity(count);
            while out.len() < count {
                let c = rng.random_range(0..self.size);
                if taken.insert(c) {
                    out.push(c);
                }
            }
            Ok(out)
        } else {
            let mut pool: Vec<u128> = (0..self.size).filter(|c| !excluded.contains(c)).collect();
            let (chosen, _) = pool.partial_shuffle(rng, count);
            Ok(chosen.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_radix_roundtrip_and_order() {
        let t = CanaryTemplate::parse("x{digits:2}-{alphabet=AB:1}").unwrap();
        let s = t.space();
        assert_eq!(s.size(), 200);
        for i in 0..200u128 {
            let d = s.decode(i).unwrap();
            assert_eq!(s.encode(&d).unwrap(), i);
        }
        assert_eq!(t.render(0).unwrap(), "x00-A");
        assert_eq!(t.render(1).unwrap(), "x00-B");
        assert_eq!(t.render(2 * 57 + 1).unwrap(), "x57-B");
        assert!(t.render(200).is_err());
        for i in [0u128, 1, 115, 199] {
            assert_eq!(t.candidate_index(&t.render(i).unwrap()), Some(i));
        }
        for bad in ["x57-C", "x5-B", "x57-BB", "y57-B", ""] {
            assert_eq!(t.candidate_index(bad), None, "{bad:?}");
        }
    }
}
