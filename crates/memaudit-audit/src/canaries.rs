//! Canary generation, insertion into a training token stream, and the run's canary manifest.
//!
//! Window convention (shared with memaudit-data): training example k is
//! `tokens[k*W .. k*W + W + 1]` (W inputs and their W next-token targets). Every insertion (the
//! canary's tokens plus the terminator) lies inside one such span, and not at its very first
//! token, so the token before it (the line boundary, the scoring context) is in the same window.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::{SliceRandom, index};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{AuditError, Result};
use crate::template::{CanaryTemplate, RandomnessSpace};
use crate::tokens::TokenizedTemplate;

/// Version of the manifest layout; bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// One canary: a secret drawn from R and where it went in the training stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub id: String,
    pub text: String,
    /// The tokens inserted (before the terminator): `prefix ++ scored ++ suffix`.
    pub token_ids: Vec<u32>,
    /// Index in R (mixed radix, see [`crate::template`]).
    pub secret_index: u128,
    pub repetitions: u32,
    /// Start of each insertion in the final token stream, ascending.
    pub positions: Vec<usize>,
}

/// Everything needed to audit a run's canaries later; saved with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryManifest {
    pub format_version: u32,
    pub template: String,
    pub seed: u64,
    pub space_size: u128,
    pub log2_space: f64,
    /// Training window W (see the module docs), 0 before insertion.
    pub window: usize,
    /// Tokens the model is conditioned on before the canary (e.g. the line separator).
    pub context_tokens: Vec<u32>,
    /// Tokens inserted after each canary (e.g. the line separator).
    pub terminator_tokens: Vec<u32>,
    pub canaries: Vec<Canary>,
}

impl CanaryManifest {
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        std::fs::write(path, text).map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let m: CanaryManifest = serde_json::from_str(&text).map_err(|e| AuditError::Format {
            path: path.display().to_string(),
            reason: format!(
                "not a canary manifest ({e}); was it written by this version of memaudit?"
            ),
        })?;
        if m.format_version != MANIFEST_VERSION {
            return Err(AuditError::Format {
                path: path.display().to_string(),
                reason: format!(
                    "manifest format {} is not the supported format {MANIFEST_VERSION}; re-create the run",
                    m.format_version
                ),
            });
        }
        Ok(m)
    }

    /// Secret indices in manifest order.
    pub fn secret_indices(&self) -> Vec<u128> {
        self.canaries.iter().map(|c| c.secret_index).collect()
    }
}

/// Draw `per_count` distinct secrets for every repetition count (all distinct from each other)
/// and make a manifest with no positions yet. A repetition count of 0 gives held-out canaries
/// (never inserted) whose exposure measures chance. Ids are `r{repetitions}-{i}`.
pub fn generate_canaries(
    tpl: &TokenizedTemplate,
    repetitions: &[u32],
    per_count: usize,
    terminator: &[u32],
    seed: u64,
) -> Result<CanaryManifest> {
    generate_canaries_with(
        tpl.template(),
        tpl.context(),
        &|i| tpl.canary_tokens(i),
        repetitions,
        per_count,
        terminator,
        seed,
    )
}

/// [`generate_canaries`] for any tokenization of the candidates: `canary_tokens(i)` gives the
/// tokens inserted for candidate `i` (a byte-level BPE tokenizes every candidate whole,
/// [`crate::rendered`]); `context` are the tokens before an insertion. The same seed draws the
/// same secrets as [`generate_canaries`].
pub fn generate_canaries_with(
    template: &CanaryTemplate,
    context: &[u32],
    canary_tokens: &dyn Fn(u128) -> Result<Vec<u32>>,
    repetitions: &[u32],
    per_count: usize,
    terminator: &[u32],
    seed: u64,
) -> Result<CanaryManifest> {
    let space = template.space();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total = per_count.checked_mul(repetitions.len()).ok_or_else(|| {
        AuditError::NotEnoughCandidates {
            requested: u128::MAX,
            size: space.size(),
            excluded: 0,
        }
    })?;
    let secrets = space.sample_distinct(total, &[], &mut rng)?;
    let mut canaries = Vec::with_capacity(total);
    for (block, &r) in repetitions.iter().enumerate() {
        for i in 0..per_count {
            let secret_index = secrets[block * per_count + i];
            canaries.push(Canary {
                id: format!("r{r}-{i}"),
                text: template.render(secret_index)?,
                token_ids: canary_tokens(secret_index)?,
                secret_index,
                repetitions: r,
                positions: Vec::new(),
            });
        }
    }
    Ok(CanaryManifest {
        format_version: MANIFEST_VERSION,
        template: template.source().to_string(),
        seed,
        space_size: space.size(),
        log2_space: space.log2_size(),
        window: 0,
        context_tokens: context.to_vec(),
        terminator_tokens: terminator.to_vec(),
        canaries,
    })
}

/// `count` reference candidates: distinct, uniform over R, disjoint from `secrets`. Uses its
/// own random stream, so it does not depend on how many secrets were drawn with the same seed.
pub fn sample_references(
    space: &RandomnessSpace,
    count: usize,
    secrets: &[u128],
    seed: u64,
) -> Result<Vec<u128>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    space.sample_distinct(count, secrets, &mut rng)
}

/// Insert every canary `repetitions` times into `stream` at random line boundaries and return the
/// new stream; fills `manifest.canaries[..].positions` and `manifest.window`.
///
/// `boundaries` are token positions of the *original* stream where a line/sentence starts (an
/// insertion at b goes right before token b; b = stream length appends). Each insertion is
/// `token_ids ++ terminator`. Insertions get distinct boundaries, drawn uniformly; when the drawn
/// boundary would make the insertion straddle a window, the next boundary that fits is used
/// (or, at the end of the corpus, the nearest free one before it).
pub fn insert_canaries(
    stream: &[u32],
    boundaries: &[usize],
    window: usize,
    manifest: &mut CanaryManifest,
    seed: u64,
) -> Result<Vec<u32>> {
    if window == 0 {
        return Err(AuditError::Insertion(
            "the training window must be at least 1 token".to_string(),
        ));
    }
    let mut bounds: Vec<usize> = boundaries.to_vec();
    bounds.sort_unstable();
    bounds.dedup();
    if let Some(&b) = bounds.last().filter(|&&b| b > stream.len()) {
        return Err(AuditError::Insertion(format!(
            "boundary {b} is past the end of the {}-token stream",
            stream.len()
        )));
    }
    let term = manifest.terminator_tokens.clone();
    for c in &manifest.canaries {
        let len = c.token_ids.len() + term.len();
        if len > window {
            return Err(AuditError::Insertion(format!(
                "canary {} has {len} tokens with its terminator, more than the training window of {window}; use a longer window or a shorter template",
                c.id
            )));
        }
    }
    let mut jobs: Vec<usize> = Vec::new();
    for (i, c) in manifest.canaries.iter().enumerate() {
        jobs.extend(std::iter::repeat_n(i, c.repetitions as usize));
    }
    if jobs.len() > bounds.len() {
        return Err(AuditError::Insertion(format!(
            "{} insertions requested but the corpus has only {} line boundaries; use a larger corpus or fewer canaries/repetitions",
            jobs.len(),
            bounds.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    jobs.shuffle(&mut rng);
    let mut chosen = index::sample(&mut rng, bounds.len(), jobs.len()).into_vec();
    chosen.sort_unstable();

    let total_extra: usize = jobs
        .iter()
        .map(|&i| manifest.canaries[i].token_ids.len() + term.len())
        .sum();
    let mut out = Vec::with_capacity(stream.len() + total_extra);
    for c in &mut manifest.canaries {
        c.positions.clear();
    }
    let mut copied = 0; // original tokens copied so far
    let mut next_free = 0; // first boundary slot not yet used
    for (&job, &slot) in jobs.iter().zip(&chosen) {
        let canary = &manifest.canaries[job];
        let len = canary.token_ids.len() + term.len();
        let offset = out.len() - copied; // tokens inserted so far
        let fits = |b: usize| {
            let m = (b + offset) % window;
            m >= 1 && m + len - 1 <= window
        };
        // The first fitting boundary at or after the drawn one; failing that (near the end of the
        // corpus), the nearest fitting one before it that is still free.
        let start = slot.max(next_free);
        let pick = (start..bounds.len())
            .find(|&s| fits(bounds[s]))
            .or_else(|| (next_free..start).rev().find(|&s| fits(bounds[s])));
        let Some(pick) = pick else {
            return Err(AuditError::Insertion(format!(
                "ran out of line boundaries that keep insertions inside one {window}-token window; use a larger corpus or fewer canaries/repetitions"
            )));
        };
        let b = bounds[pick];
        out.extend_from_slice(&stream[copied..b]);
        copied = b;
        let canary = &mut manifest.canaries[job];
        canary.positions.push(out.len());
        out.extend_from_slice(&canary.token_ids);
        out.extend_from_slice(&term);
        next_free = pick + 1;
    }
    out.extend_from_slice(&stream[copied..]);
    manifest.window = window;
    Ok(out)
}
