//! The stages and their order: data → (per variant) training with the Secret Sharer's audits →
//! white-box audit run → shadow models and membership inference → verdict and report.
//!
//! Each stage is a unit of the [`StageStore`] keyed by the hash of its config section and the
//! keys of the stages it reads. What each stage reads:
//!
//! | stage              | config                                                         | upstream |
//! |--------------------|----------------------------------------------------------------|----------|
//! | `data`             | seed, data, canaries                                           |          |
//! | `train/<v>`        | seed, model, training, variant v, canaries, exposure, extraction, one-run canaries | data |
//! | `white-box/<v>`    | seed, model, training, variant v, white-box canaries (DP variants with Poisson sampling) | data |
//! | `mia/<v>`          | seed, model, training, variant v, audits.mia                   | data     |
//! | `report`           | the assembled results (everything above) and the significance  | all      |
//!
//! With a classifier dataset (`data.dataset`) the training stage trains the classifier with the
//! one-run audit's relabelled canaries; there are no Secret Sharer canaries, exposure or
//! extraction (the canary, exposure and extraction settings stay at their defaults, and so
//! in the keys).
//!
//! So changing one variant's setting reruns exactly that variant's stages and the report;
//! changing the MIA settings reruns only the `mia/*` stages (the shadow-model cache under
//! `<out>/shadow-cache` is itself keyed per model, so unchanged shadow models are reused).
//!
//! The work of each stage is done by a [`Backend`]: [`super::backend::Libraries`] calls the
//! experiments library (secret-sharer, train, mia); tests use a synthetic one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{AuditConfig, LoadedConfig, Variant};
use super::results::{
    AuditResults, DataSummary, EpochPoint, ExposureResults, ExtractionResults, MiaResults, Privacy,
    RunInfo, SCHEMA_VERSION, SELECTION_CAVEAT, Utility, VariantResults,
};
use super::store::{BeforeCommit, StageKey, StageStore};
use super::verdict::{BoundInput, Evidence, verdict};
use crate::error::{ExperimentError, Result};
use crate::observer::Observer;

/// The training stage's output: the trained variant with its Secret Sharer measurements and
/// the one-run audit's evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutput {
    pub utility: Utility,
    pub privacy: Privacy,
    pub training_curve: Vec<EpochPoint>,
    pub exposure: Option<ExposureResults>,
    pub extraction: Option<ExtractionResults>,
    /// The black-box one-run audit's canaries (scores and inclusion), when enabled.
    pub one_run: Option<Evidence>,
}

/// The white-box audit run's evidence (a training run of the variant's recipe with Dirac
/// gradient canaries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhiteBoxOutput {
    pub evidence: Evidence,
}

/// What runs the stages.
pub trait Backend {
    /// Load the data, check the canaries against its vocabulary, summarise it.
    fn data(&self, cfg: &AuditConfig, dir: &Path, obs: &mut dyn Observer) -> Result<DataSummary>;
    /// Checks that need the data but no training (calibration of every DP variant, whether the
    /// data splits for shadow models); errors name the config field.
    fn preflight(&self, cfg: &AuditConfig, data: &DataSummary) -> Result<()>;
    /// Train variant `v` with the Secret Sharer's canaries (and the one-run canaries), measure
    /// exposure and extraction. `dir`: the stage's folder for the run's files.
    fn train(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<TrainOutput>;
    /// The white-box audit run of variant `v` (`None` when the backend cannot run it).
    fn white_box(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<Option<WhiteBoxOutput>>;
    /// Membership inference against variant `v` (shadow models cached in `shadow_cache`).
    fn mia(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        shadow_cache: &Path,
        dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<Option<MiaResults>>;
    /// Render `report.html` of `results` into `path`.
    fn report(&self, results: &AuditResults, path: &Path) -> Result<()>;
}

/// Where and how a pipeline runs.
pub struct PipelineOptions<'a> {
    /// The output folder: `stages/`, `shadow-cache/`, `results.json`, `report.html`.
    pub out: PathBuf,
    /// Test hook between a stage's output and its commit (fault injection).
    pub before_commit: Option<BeforeCommit<'a>>,
}

/// File names in the output folder.
pub const RESULTS_FILE: &str = "results.json";
pub const REPORT_FILE: &str = "report.html";

/// The config sections a stage reads (serialised into its key).
#[derive(Serialize)]
struct TrainKey<'a> {
    seed: u64,
    model: &'a super::config::ModelSection,
    training: &'a super::config::TrainingSection,
    variant: &'a Variant,
    canaries: &'a super::config::CanarySection,
    exposure: &'a super::config::ExposureSection,
    extraction: &'a super::config::ExtractionSection,
    one_run_canaries: usize,
}

#[derive(Serialize)]
struct SideKey<'a, S: Serialize> {
    seed: u64,
    model: &'a super::config::ModelSection,
    training: &'a super::config::TrainingSection,
    variant: &'a Variant,
    settings: S,
}

/// Run the audit of `loaded` into `opts.out`: every stage whose unit is not complete with its
/// current key, then `results.json` and `report.html`.
pub fn run(
    loaded: &LoadedConfig,
    opts: PipelineOptions<'_>,
    backend: &dyn Backend,
    obs: &mut dyn Observer,
) -> Result<AuditResults> {
    let started = Instant::now();
    let cfg = &loaded.config;
    let mut store = StageStore::new(&opts.out).with_before_commit(opts.before_commit);

    let data_key = StageKey::new("data", &(cfg.seed, &cfg.data, &cfg.canaries), &[])?;
    let data: DataSummary = store.stage(&data_key, obs, |dir, obs| {
        backend.data(cfg, dir, obs).map_err(|e| loaded.locate(e))
    })?;
    backend
        .preflight(cfg, &data)
        .map_err(|e| loaded.locate(e))?;

    let lb = &cfg.audits.lower_bounds;
    let mut variants = Vec::new();
    let mut inputs: Vec<BoundInput> = Vec::new();
    for v in &cfg.variants {
        let key = StageKey::new(
            &format!("train/{}", v.name),
            &TrainKey {
                seed: cfg.seed,
                model: &cfg.model,
                training: &cfg.training,
                variant: v,
                canaries: &cfg.canaries,
                exposure: &cfg.audits.exposure,
                extraction: &cfg.audits.extraction,
                one_run_canaries: lb.one_run_canaries,
            },
            &[&data_key],
        )?;
        let trained: TrainOutput =
            store.stage(&key, obs, |dir, obs| backend.train(cfg, v, dir, obs))?;

        let white_box: Option<WhiteBoxOutput> =
            if lb.white_box_canaries > 0 && super::backend::white_box_applies(v) {
                let key = StageKey::new(
                    &format!("white-box/{}", v.name),
                    &side_key(cfg, v, lb.white_box_canaries),
                    &[&data_key],
                )?;
                store.stage(&key, obs, |dir, obs| backend.white_box(cfg, v, dir, obs))?
            } else {
                None
            };

        let mia: Option<MiaResults> = match &cfg.audits.mia {
            Some(m) => {
                let key = StageKey::new(
                    &format!("mia/{}", v.name),
                    &side_key(cfg, v, m),
                    &[&data_key],
                )?;
                let cache = opts.out.join("shadow-cache");
                store.stage(&key, obs, |dir, obs| backend.mia(cfg, v, &cache, dir, obs))?
            }
            None => None,
        };

        if let Some(ev) = &trained.one_run {
            inputs.push(BoundInput {
                variant: v.name.clone(),
                audit: "one-run".into(),
                evidence: ev.clone(),
            });
        }
        if let Some(wb) = &white_box {
            inputs.push(BoundInput {
                variant: v.name.clone(),
                audit: "white-box".into(),
                evidence: wb.evidence.clone(),
            });
        }
        // Extraction is a text audit: the data stage found the canary space there.
        if let (Some(x), Some(space_size)) = (&trained.extraction, data.canary_space_size()) {
            for c in &x.by_repetitions {
                inputs.push(BoundInput {
                    variant: v.name.clone(),
                    audit: format!("extraction r={}", c.repetitions),
                    evidence: Evidence::Extraction {
                        repetitions: c.repetitions,
                        canaries: c.canaries,
                        extracted: c.extracted,
                        top: x.top,
                        space_size,
                    },
                });
            }
        }
        variants.push(VariantResults {
            name: v.name.clone(),
            kind: v.kind().to_string(),
            config: v.clone(),
            utility: trained.utility,
            privacy: trained.privacy,
            training_curve: trained.training_curve,
            exposure: trained.exposure,
            extraction: trained.extraction,
            mia,
            lower_bounds: Vec::new(),
        });
    }

    let claims: Vec<(String, super::verdict::Claim)> = variants
        .iter()
        .map(|v| (v.name.clone(), v.privacy.claim.clone()))
        .collect();
    let claim_of = |name: &str| claims.iter().find(|c| c.0 == name).map(|c| c.1.clone());
    let verdict = verdict(&inputs, &claim_of, lb.significance)?;
    for v in &mut variants {
        v.lower_bounds = verdict
            .bounds
            .iter()
            .filter(|b| b.variant == v.name)
            .cloned()
            .collect();
    }
    let summary = variants.iter().map(summary_line).collect();
    let mut results = AuditResults {
        schema_version: SCHEMA_VERSION,
        config: cfg.clone(),
        data,
        variants,
        verdict,
        summary,
        selection_caveat: (cfg.variants.len() > 1).then(|| SELECTION_CAVEAT.to_string()),
        run: RunInfo::default(),
    };

    // The report stage's key is its whole input: the results without the run's timings.
    let report_key = StageKey::new("report", &results, &[])?;
    let content: AuditResults = store.stage(&report_key, obs, |dir, _| {
        backend.report(&results, &dir.join(REPORT_FILE))?;
        Ok(results.clone())
    })?;
    results = content;
    let html = store.dir("report").join(REPORT_FILE);
    let copy = std::fs::read(&html).map_err(|source| ExperimentError::ReadConfig {
        path: html.clone(),
        source,
    })?;
    memaudit_data::write_atomic(&opts.out.join(REPORT_FILE), &copy)?;
    results.run = RunInfo {
        stages: store.records.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&results)
        .map_err(|e| ExperimentError::WriteConfig(format!("results.json: {e}")))?;
    memaudit_data::write_atomic(&opts.out.join(RESULTS_FILE), &json)?;
    Ok(results)
}

fn side_key<'a, S: Serialize>(cfg: &'a AuditConfig, v: &'a Variant, settings: S) -> SideKey<'a, S> {
    SideKey {
        seed: cfg.seed,
        model: &cfg.model,
        training: &cfg.training,
        variant: v,
        settings,
    }
}

/// The strongest attack at the lowest FPR the data can report (0.1%, else 1%: a rate needs 10
/// expected false positives), or its AUC alone when neither is reportable.
fn mia_summary(attacks: &[super::results::AttackResult]) -> Option<String> {
    let at = |fpr: &str, get: fn(&super::results::AttackResult) -> f64| {
        attacks
            .iter()
            .filter(|a| get(a).is_finite())
            .max_by(|a, b| get(a).total_cmp(&get(b)))
            .map(|best| {
                format!(
                    "{} finds members at {} TPR at {fpr} FPR (AUC {:.2})",
                    best.attack,
                    pct(get(best)),
                    best.auc.0
                )
            })
    };
    at("0.1%", |a| a.tpr_at_0_1_fpr.0)
        .or_else(|| at("1%", |a| a.tpr_at_1_fpr.0))
        .or_else(|| {
            let best = attacks.iter().max_by(|a, b| a.auc.0.total_cmp(&b.auc.0))?;
            let n = best
                .non_members
                .map_or(String::new(), |n| format!(" ({n})"));
            Some(format!(
                "{} reaches AUC {:.2}; too few non-members{n} to report a TPR at 1% FPR",
                best.attack, best.auc.0
            ))
        })
}

fn pct(x: f64) -> String {
    if x >= 0.1 {
        format!("{:.0}%", 100.0 * x)
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

/// One plain-language line about a variant, e.g. "plain: 2 of 2 canaries repeated 16 times
/// were extracted; LiRA finds members at 12% TPR at 0.1% FPR; every lower bound <= 1.1 (no
/// claim)".
pub fn summary_line(v: &VariantResults) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(x) = &v.extraction {
        let hits: Vec<String> = x
            .by_repetitions
            .iter()
            .filter(|c| c.extracted > 0)
            .map(|c| {
                format!(
                    "{} of {} canaries repeated {} time{} were extracted",
                    c.extracted,
                    c.canaries,
                    c.repetitions,
                    if c.repetitions == 1 { "" } else { "s" }
                )
            })
            .collect();
        parts.push(if hits.is_empty() {
            "nothing extracted".to_string()
        } else {
            hits.join(", ")
        });
    }
    if let Some(e) = &v.exposure
        && let Some(c) = e
            .canaries
            .iter()
            .filter(|c| c.repetitions > 0)
            .max_by(|a, b| a.exposure.0.total_cmp(&b.exposure.0))
    {
        parts.push(format!(
            "highest exposure {:.1} of {:.1} bits (a canary repeated {} times)",
            c.exposure.0, e.max_exposure, c.repetitions
        ));
    }
    if let Some(m) = &v.mia {
        parts.extend(mia_summary(&m.attacks));
    }
    let claimed = v.privacy.claimed_epsilon.0;
    if !v.lower_bounds.is_empty() {
        let max = v
            .lower_bounds
            .iter()
            .map(|b| b.epsilon_lower_bound.0)
            .fold(0.0, f64::max);
        let over = v.lower_bounds.iter().filter(|b| b.exceeds_claim).count();
        parts.push(if over > 0 {
            format!("{over} lower bound(s) EXCEED the claim (largest {max:.2})")
        } else if claimed.is_finite() {
            format!("every lower bound <= {max:.2} (claimed {claimed:.2})")
        } else {
            format!("every lower bound <= {max:.2} (no claim)")
        });
    }
    let name = if claimed.is_finite() {
        format!("{} (DP at epsilon {claimed:.2})", v.name)
    } else {
        v.name.clone()
    };
    if let Some(l) = v.utility.valid_loss {
        // A classifier (no Secret Sharer measurements) is judged by its accuracy too.
        match v.utility.valid_accuracy {
            Some(a) if v.exposure.is_none() => {
                parts.push(format!("valid loss {:.3}, accuracy {}", l.0, pct(a.0)))
            }
            _ => parts.push(format!("valid loss {:.3}", l.0)),
        }
    }
    format!("{name}: {}", parts.join("; "))
}

#[cfg(test)]
mod mia_summary_tests {
    use super::mia_summary;
    use crate::num::Num;
    use crate::pipeline::results::AttackResult;

    fn attack(name: &str, auc: f64, at_0_1: f64, at_1: f64) -> AttackResult {
        AttackResult {
            attack: name.into(),
            auc: Num(auc),
            tpr_at_0_1_fpr: Num(at_0_1),
            tpr_at_1_fpr: Num(at_1),
            non_members: Some(674),
            roc: vec![],
        }
    }

    #[test]
    fn the_summary_names_only_a_rate_the_data_can_report() {
        // 0.1% reportable: the strongest attack there.
        let s = mia_summary(&[
            attack("loss", 0.6, 0.01, 0.05),
            attack("lira", 0.7, 0.02, 0.04),
        ]);
        assert_eq!(
            s.unwrap(),
            "lira finds members at 2.0% TPR at 0.1% FPR (AUC 0.70)"
        );
        // Only 1% reportable (1,000 to 10,000 non-members).
        let s = mia_summary(&[attack("loss", 0.6, f64::NAN, 0.05)]);
        assert_eq!(
            s.unwrap(),
            "loss finds members at 5.0% TPR at 1% FPR (AUC 0.60)"
        );
        // Neither: the AUC alone, and why.
        let s = mia_summary(&[attack("loss", 0.52, f64::NAN, f64::NAN)]).unwrap();
        assert!(
            s.contains("AUC 0.52") && s.contains("non-members (674)"),
            "{s}"
        );
        assert!(!s.contains("TPR at 0.1%"), "{s}");
    }
}
