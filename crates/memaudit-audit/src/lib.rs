//! memaudit-audit: Carlini et al., "The Secret Sharer: Evaluating and Testing Unintended
//! Memorization in Neural Networks" (USENIX Security 2019), for any [`IncrementalLm`].
//!
//! - [`template`]: canary templates with typed slots, the randomness space R, a mixed-radix
//!   bijection index <-> candidate, seeded distinct draws.
//! - [`tokens`]: a template in the model's token ids ([`CanaryTokenizer`] is the caller's).
//! - [`canaries`]: secrets per repetition count, insertion into the training stream inside one
//!   training window, the JSON manifest saved with a run, reference candidates.
//! - [`rendered`]: canaries under BPE (merges across slot positions, e.g. GPT-2's digit runs):
//!   every candidate rendered and tokenized whole, scored over all of R, exact ranks.
//! - [`scoring`]: log-perplexity (sum of -log2 p), batched; exhaustive scoring of R by a
//!   breadth-first trie walk; streaming exact ranks that never store R.
//! - [`exposure`]: exact exposure from rank, TF Privacy's interpolation (same tie handling), and
//!   extrapolation through [`skewnorm`] (Owen's T, log-space tail, scipy-equivalent MLE fit).
//! - [`extraction`]: exact best-first (Dijkstra) search, batched; beam and budget variants.
//! - [`tracking`]: per-epoch exposure records as CSV/JSON.
//! - [`testing`]: a deterministic n-gram mock LM with a planted sequence, for oracle tests.
//!
//! Empirical epsilon lower bounds from canary scores, [`lower_bound`]: Clopper-Pearson
//! (Jagielski et al. 2020), Gaussian DP (Nasr et al. 2023), one training run (Steinke, Nasr &
//! Jagielski 2023) and its f-DP version (Mahloujifar, Melis & Chaudhuri 2024), with exact
//! binomial intervals and Bonferroni over the Pareto frontier of thresholds.
//!
//! And Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017), on the
//! engine's MLPs: [`dynamics`] (noise data, training curves, easy/hard examples, unrolled
//! loss-sensitivity and its Gini coefficient, critical samples by LASS, regulariser sweep).
//!
//! And membership inference ([`mia`]): LOSS, LiRA (Carlini et al. 2022), RMIA (Zarifzadeh et
//! al. 2024) and the LM baselines (loss, zlib ratio, Min-K%) on target and shadow-model signals,
//! with TPR at low FPR and Clopper-Pearson intervals; `docs/mia.md`.
//!
//! How it is computed, with tolerances: `docs/secret-sharer.md` in the repository.
//!
//! Dependencies: `memaudit-engine` (the `IncrementalLm` trait; models, optimizers and input
//! gradients for `dynamics`); `thiserror` (typed errors);
//! `serde`/`serde_json` (manifest, records); `csv` (exposure tables); `rand`/`rand_chacha`
//! (seeded, platform-independent draws); `rayon` (parallel subtrees and batches); `libm`
//! (`erfc`, accurate in the tails, for Φ; no maintained crate has Owen's T or a skew-normal fit
//! matching scipy, so those are here); `rand_distr` (Ziggurat normals for randX data, LASS's
//! Langevin noise and input-noise regularisation).

pub mod canaries;
pub mod dynamics;
pub mod error;
pub mod exposure;
pub mod extraction;
pub mod lower_bound;
pub mod mia;
pub mod rendered;
pub mod scoring;
pub mod skewnorm;
pub mod template;
pub mod testing;
pub mod tokens;
pub mod tracking;

pub use canaries::{
    Canary, CanaryManifest, generate_canaries, generate_canaries_with, insert_canaries,
    sample_references,
};
pub use error::{AuditError, Result, TemplateError};
pub use exposure::{
    exposure_from_rank, extrapolation_exposures, interpolation_exposures, ranks_from_scores,
};
pub use extraction::{ExtractOptions, ExtractedCandidate, Extraction, StopReason, extract};
pub use lower_bound::{
    CanaryScores, LowerBoundConfig, LowerBoundError, LowerBoundMethod, LowerBoundReport,
    LowerBoundWarning, MethodBound, MethodChoice, ScoreDirection, ThresholdChoice, lower_bounds,
};
pub use memaudit_engine::{IncrementalLm, LmState};
pub use rendered::{RenderedCandidates, best_of_scores, check_insertion, check_insertion_named};
pub use scoring::{
    AllScores, ExactRank, RankReport, RankShard, Scorer, WalkOptions, WalkStats, merge_rank_shards,
    token_cost_bits,
};
pub use skewnorm::{FitOptions, SkewNormal, SkewNormalFit, fit_skew_normal, owens_t};
pub use template::{CanaryTemplate, RandomnessSpace, Segment, SlotKind};
pub use tokens::{CanaryTokenizer, CharTokenizer, FnTokenizer, ScoredStep, TokenizedTemplate};
pub use tracking::{ExposureLog, ExposureRecord, Histogram, histogram};
