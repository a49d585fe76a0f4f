//! Membership inference: LOSS, LiRA (Carlini et al. 2022), RMIA (Zarifzadeh et al. 2024) and the
//! reference-free LM baselines, on the signals of a target model and of shadow (reference)
//! models, with LiRA's low-FPR metrics. One score convention inside: **higher = member**.
//!
//! - [`signals`]: phi from logits (log-sum-exp), probabilities, cross-entropy; conversions.
//! - [`data`]: [`ScoreSet`], the typed inputs; [`npz`]: the score-file format.
//! - [`loss`], [`lira`], [`rmia`], [`lm`]: one file per attack.
//! - [`metrics`]: ROC, AUC, balanced accuracy, TPR at low FPR with Clopper-Pearson intervals,
//!   per-class slicing; [`export`]: per-example scores as CSV and `.npy`, the ROC as CSV.
//! - [`config`]: [`MiaConfig`], every default in one place.
//! - [`shadow`]: complementary-pair shadow models of memaudit's classifiers, trained on the
//!   engine, in a keyed cache of atomic units (resumable, shardable by model index).
//! - [`synthetic`]: a seeded simulator of shadow-model signals with known membership, for tests.
//!
//! [`run`] runs a selection of attacks and evaluates each against the target's membership when
//! it is known. Algorithms, conventions and sources: `docs/mia.md`.

pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod lira;
pub mod lm;
pub mod loss;
pub mod metrics;
pub mod npz;
pub mod rmia;
pub mod shadow;
pub mod signals;
pub mod synthetic;

use serde::{Deserialize, Serialize};

pub use config::{
    Center, LiraConfig, LmConfig, MetricsConfig, MiaConfig, MissingShadows, RmiaConfig,
    VarianceMode,
};
pub use data::{Population, ScoreSet};
pub use error::MiaError;
pub use lira::LiraVariant;
pub use metrics::{ClassMetrics, DpTradeoff, MembershipMetrics, Roc, TprAtFpr, dp_tradeoff};
pub use rmia::{AChoice, RmiaVariant};
pub use signals::SignalKind;

use error::Result;

/// A named attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// A global threshold on the target's loss (Yeom et al. 2018).
    Loss,
    LiraOnline,
    /// The paper's one-sided offline LiRA.
    LiraOffline,
    /// The authors' code's two-sided offline LiRA.
    LiraOfflineTwoSided,
    RmiaOnline,
    RmiaOffline,
    /// Min-K% probability (Shi et al. 2024), LMs.
    MinK,
    /// zlib ratio (Carlini et al. 2021), LMs.
    Zlib,
}

impl Attack {
    /// Every attack, in the order results are listed.
    pub const ALL: [Attack; 8] = [
        Attack::Loss,
        Attack::LiraOnline,
        Attack::LiraOffline,
        Attack::LiraOfflineTwoSided,
        Attack::RmiaOnline,
        Attack::RmiaOffline,
        Attack::MinK,
        Attack::Zlib,
    ];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Loss => "loss",
            Attack::LiraOnline => "lira-online",
            Attack::LiraOffline => "lira-offline",
            Attack::LiraOfflineTwoSided => "lira-offline-two-sided",
            Attack::RmiaOnline => "rmia-online",
            Attack::RmiaOffline => "rmia-offline",
            Attack::MinK => "min-k",
            Attack::Zlib => "zlib",
        }
    }

    /// Parse one name.
    pub fn parse(name: &str) -> Result<Self> {
        Attack::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| MiaError::UnknownAttack {
                name: name.into(),
                known: Attack::ALL.map(Attack::name).join(", "),
            })
    }

    /// Why this attack cannot run on `set` (a missing input), if so.
    pub fn missing_input(self, set: &ScoreSet) -> Option<MiaError> {
        let missing = |array, what| {
            Some(MiaError::InputMissing {
                attack: self.name(),
                array,
                what,
            })
        };
        match self {
            Attack::Loss => None,
            Attack::LiraOnline | Attack::LiraOffline | Attack::LiraOfflineTwoSided
                if set.shadows() == 0 =>
            {
                missing("shadow", "at least one shadow model")
            }
            Attack::LiraOnline | Attack::LiraOffline | Attack::LiraOfflineTwoSided => None,
            Attack::RmiaOnline | Attack::RmiaOffline if set.population().is_none() => missing(
                "population_target",
                "the target's and shadow models' signals on population points",
            ),
            Attack::RmiaOnline | Attack::RmiaOffline if set.shadows() == 0 => {
                missing("shadow", "at least one reference model")
            }
            Attack::RmiaOnline | Attack::RmiaOffline => None,
            Attack::MinK | Attack::Zlib if set.token_logprob().is_none() => missing(
                "token_logprob",
                "the target's per-token log-probabilities of each example",
            ),
            Attack::Zlib if set.text().is_none() => missing("text", "each example's text bytes"),
            Attack::MinK | Attack::Zlib => None,
        }
    }
}

/// Which attacks to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackSelection {
    /// Every attack whose inputs are present; the others are listed as skipped, with the reason.
    All,
    /// Exactly these; a missing input is an error.
    Only(Vec<Attack>),
}

impl AttackSelection {
    /// Parse "all" or a comma-separated list of attack names.
    pub fn parse(list: &str) -> Result<Self> {
        if list.trim() == "all" {
            return Ok(AttackSelection::All);
        }
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let a = Attack::parse(name)?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(MiaError::UnknownAttack {
                name: list.into(),
                known: Attack::ALL.map(Attack::name).join(", "),
            });
        }
        Ok(AttackSelection::Only(out))
    }
}

/// One attack's scores and, when the target's membership is known, its metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    pub attack: Attack,
    /// Per-example scores, higher = member.
    #[serde(skip)]
    pub scores: Vec<f64>,
    pub metrics: Option<MembershipMetrics>,
    /// Per-class metrics (when classes are given and the membership is known).
    pub per_class: Vec<ClassMetrics>,
    /// What the attack chose or fell back to (variance mode counts, RMIA's `a`...).
    pub notes: Vec<String>,
}

/// An attack left out of an `all` run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedAttack {
    pub attack: Attack,
    pub reason: String,
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiaReport {
    pub examples: usize,
    pub shadow_models: usize,
    pub queries: usize,
    pub signal_kind: SignalKind,
    pub population: Option<usize>,
    pub config: MiaConfig,
    pub attacks: Vec<AttackResult>,
    pub skipped: Vec<SkippedAttack>,
}

/// One attack's scores and notes.
pub fn attack_scores(
    set: &ScoreSet,
    attack: Attack,
    cfg: &MiaConfig,
) -> Result<(Vec<f64>, Vec<String>)> {
    if let Some(e) = attack.missing_input(set) {
        return Err(e);
    }
    let lira_notes = |o: &lira::LiraOutput| {
        let mut notes = vec![format!(
            "variance: per-example for {} examples, global for {} (per-example needs {} IN and OUT values; mode {:?})",
            o.per_example_variance, o.global_variance, cfg.lira.per_example_min, cfg.lira.variance
        )];
        if o.column_mean_fallbacks > 0 {
            notes.push(format!(
                "{} examples without IN or OUT shadow values scored with the column-mean fallback",
                o.column_mean_fallbacks
            ));
        }
        notes
    };
    Ok(match attack {
        Attack::Loss => (loss::loss_scores(set), vec![]),
        Attack::LiraOnline | Attack::LiraOffline | Attack::LiraOfflineTwoSided => {
            let variant = match attack {
                Attack::LiraOnline => LiraVariant::Online,
                Attack::LiraOffline => LiraVariant::Offline,
                _ => LiraVariant::OfflineTwoSided,
            };
            let o = lira::lira(set, variant, &cfg.lira)?;
            let notes = lira_notes(&o);
            (o.scores, notes)
        }
        Attack::RmiaOnline | Attack::RmiaOffline => {
            let variant = if attack == Attack::RmiaOnline {
                RmiaVariant::Online
            } else {
                RmiaVariant::Offline
            };
            let o = rmia::rmia(set, variant, &cfg.rmia)?;
            let mut notes = vec![format!(
                "gamma {}, {} population points",
                cfg.rmia.gamma, o.population
            )];
            match &o.a {
                Some(AChoice::Fixed { a }) => notes.push(format!("a = {a} (given)")),
                Some(AChoice::Default { a, reason }) => notes.push(format!("a = {a} ({reason})")),
                Some(AChoice::Tuned { a, reference, grid }) => notes.push(format!(
                    "a = {a}, tuned on 0..1 step 0.1 by attacking reference model {reference} with the others (best AUC {:.4})",
                    grid.iter().map(|g| g.1).fold(f64::NEG_INFINITY, f64::max)
                )),
                None => {}
            }
            (o.scores, notes)
        }
        Attack::MinK => {
            let rows = set.token_logprob().unwrap_or(&[]);
            let k = cfg.lm.min_k_fraction;
            (
                rows.iter().map(|r| lm::min_k_score(r, k)).collect(),
                vec![format!("k = {}%", k * 100.0)],
            )
        }
        Attack::Zlib => {
            let rows = set.token_logprob().unwrap_or(&[]);
            let text = set.text().unwrap_or(&[]);
            (
                rows.iter()
                    .zip(text)
                    .map(|(r, t)| lm::zlib_ratio_score(r, t))
                    .collect(),
                vec![],
            )
        }
    })
}

/// Run the selected attacks, and evaluate each when the target's membership is known.
pub fn run(set: &ScoreSet, selection: &AttackSelection, cfg: &MiaConfig) -> Result<MiaReport> {
    run_pooled(std::slice::from_ref(set), selection, cfg)
}

/// Run the selected attacks on several targets' sets (each target scored against its own
/// shadow models, as the LiRA paper evaluates over many target models) and evaluate the pooled
/// scores: one ROC over every target's examples, so a pool of n examples and K targets gives
/// about K n / 2 non-members. Scores are comparable across targets because each is a
/// likelihood ratio, a tail probability or a fraction of population points, not a raw loss of one
/// model; LOSS's global threshold is then one threshold over all targets' losses. The report's
/// scores are in [`ScoreSet::stack`]'s row order.
pub fn run_pooled(
    sets: &[ScoreSet],
    selection: &AttackSelection,
    cfg: &MiaConfig,
) -> Result<MiaReport> {
    cfg.validate()?;
    let first = sets.first().ok_or_else(|| MiaError::InvalidInput {
        what: "score sets".into(),
        reason: "none given".into(),
    })?;
    // The pooled rows' membership and classes: each set's, one after another (the row order of
    // `ScoreSet::stack`, without copying the shadow signals). Known for every set or for none.
    let rows: usize = sets.iter().map(|s| s.n()).sum();
    let concat = |what: &str, get: &dyn Fn(&ScoreSet) -> bool| -> Result<bool> {
        let present = sets.iter().filter(|s| get(s)).count();
        if present != 0 && present != sets.len() {
            return Err(MiaError::InvalidInput {
                what: format!("pooled score sets, array `{what}`"),
                reason: format!("given on {present} of {} sets", sets.len()),
            });
        }
        Ok(present != 0)
    };
    let member: Option<Vec<bool>> = concat("target_in", &|s| s.target_in().is_some())?.then(|| {
        sets.iter()
            .flat_map(|s| s.target_in().unwrap_or(&[]).iter().copied())
            .collect()
    });
    let class: Option<Vec<i64>> = concat("class", &|s| s.class().is_some())?.then(|| {
        sets.iter()
            .flat_map(|s| s.class().unwrap_or(&[]).iter().copied())
            .collect()
    });
    let (list, all) = match selection {
        AttackSelection::All => (Attack::ALL.to_vec(), true),
        AttackSelection::Only(v) => (v.clone(), false),
    };
    let mut attacks = Vec::new();
    let mut skipped = Vec::new();
    'attack: for attack in list {
        let mut scores = Vec::with_capacity(rows);
        let mut notes: Vec<String> = Vec::new();
        // The first target's notes; the others' only counted where they differ (RMIA's tuned
        // `a` and its AUC, per target), so K targets do not repeat K near-identical lines.
        let mut differing = 0;
        for (s_index, set) in sets.iter().enumerate() {
            let (s, set_notes) = match attack_scores(set, attack, cfg) {
                Ok(x) => x,
                // `all` runs what it can: a missing array or an example a shadow set does not
                // cover skips that attack, with the reason in the result.
                Err(e @ (MiaError::InputMissing { .. } | MiaError::NoShadow { .. })) if all => {
                    skipped.push(SkippedAttack {
                        attack,
                        reason: e.to_string(),
                    });
                    continue 'attack;
                }
                Err(e) => return Err(e),
            };
            scores.extend(s);
            if s_index == 0 {
                notes = set_notes;
            } else if set_notes != notes {
                differing += 1;
            }
        }
        if sets.len() > 1 {
            let mut pooled_note = format!(
                "pooled over {} targets ({} examples each), each scored against its own shadow models",
                sets.len(),
                first.n()
            );
            if differing > 0 {
                pooled_note += &format!(
                    "; the notes above are the first target's, {differing} of the other {} differ",
                    sets.len() - 1
                );
            }
            notes.push(pooled_note);
        }
        let (metrics, per_class) = match &member {
            Some(member) => {
                let m = metrics::evaluate(&scores, member, &cfg.metrics)?;
                let pc = match &class {
                    Some(c) => metrics::per_class(&scores, member, c, &cfg.metrics)?,
                    None => vec![],
                };
                (Some(m), pc)
            }
            None => (None, vec![]),
        };
        attacks.push(AttackResult {
            attack,
            scores,
            metrics,
            per_class,
            notes,
        });
    }
    Ok(MiaReport {
        examples: rows,
        shadow_models: first.shadows(),
        queries: first.queries(),
        signal_kind: first.signal_kind(),
        population: first.population().map(|p| p.n),
        config: cfg.clone(),
        attacks,
        skipped,
    })
}

#[cfg(test)]
mod tests;
