//! `exposure` as an experiment: the exposure of the canaries of a saved language-model run (The
//! Secret Sharer, Carlini et al. 2019): exact rank over all of R by the trie walk when |R| is
//! within the limit, TF Privacy's interpolation over reference candidates, and the skew-normal
//! extrapolation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{Result, invalid};
use crate::observer::Observer;
use crate::saved_run::load_lm;
use crate::secret_sharer::{Audit, CanaryResult, CanarySet, ExposureSettings, RepSummary, audit};

/// The exposure of a saved run's canaries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureConfig {
    /// A `secret-sharer` run folder (or any language-model run, with `manifest`).
    pub run: PathBuf,
    /// A canary manifest (canaries.json) to audit instead of the run's own; its token ids must
    /// match the run's vocabulary.
    pub manifest: Option<PathBuf>,
    pub exposure: ExposureSettings,
    /// Draw `exposure.references` new reference candidates with this seed instead of using the
    /// run's saved ones.
    pub reference_seed: Option<u64>,
}

impl ExperimentConfig for ExposureConfig {
    const NAME: &'static str = "exposure";

    fn validate(&self) -> Result<()> {
        if self.run.as_os_str().is_empty() {
            return invalid("run", "\"\"", "give the run folder");
        }
        self.exposure.validate()
    }
}

/// The skew-normal fitted to the references' log-perplexities.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SkewNormalFit {
    pub shape: f64,
    pub loc: f64,
    pub scale: f64,
    pub converged: bool,
}

/// The exposures of a run's canaries. Serialised, it is `memaudit exposure --json`.
#[derive(Serialize)]
pub struct ExposureResult {
    pub run: String,
    /// The optimizer step of the checkpoint measured.
    pub step: u64,
    pub template: String,
    pub log2_space: f64,
    /// Whether the exposures are exact (ranks over all of R).
    pub exact: bool,
    pub references: usize,
    pub skew_normal: SkewNormalFit,
    pub by_repetitions: Vec<RepSummary>,
    pub canaries: Vec<CanaryResult>,
    pub seconds: f64,
    /// The canaries and the measurement (for rendering).
    #[serde(skip)]
    pub audit: Audit,
    #[serde(skip)]
    pub set: CanarySet,
}

/// Measure the exposure of the run's canaries.
pub fn run(cfg: &ExposureConfig, observer: &mut dyn Observer) -> Result<ExposureResult> {
    cfg.validate()?;
    let (saved, lm, tok) = load_lm(&cfg.run)?;
    let mut set = CanarySet::load(&cfg.run, cfg.manifest.as_deref(), &tok)?;
    let exact = cfg.exposure.exact_for(set.tpl.space().size())?;
    if set.references.is_empty() || cfg.reference_seed.is_some() {
        let n = set.draw_references(cfg.exposure.references, cfg.reference_seed.unwrap_or(0))?;
        if n < 2 {
            return invalid(
                "exposure.references",
                n,
                "the randomness space leaves fewer than 2 reference candidates",
            );
        }
    }
    observer.note(&format!(
        "{} canaries of {:?}, |R| = {}, {} references{}",
        set.manifest.canaries.len(),
        set.manifest.template,
        set.tpl.space().size(),
        set.references.len(),
        if exact {
            ", exact ranks by the trie walk"
        } else {
            ""
        }
    ));
    let a = audit(
        lm.as_ref(),
        &set,
        exact,
        u128::from(cfg.exposure.exact_limit),
        None,
    )?;
    Ok(ExposureResult {
        run: cfg.run.display().to_string(),
        step: saved.checkpoint.state.step,
        template: set.manifest.template.clone(),
        log2_space: set.tpl.space().log2_size(),
        exact,
        references: set.references.len(),
        skew_normal: SkewNormalFit {
            shape: a.m.fit.shape,
            loc: a.m.fit.loc,
            scale: a.m.fit.scale,
            converged: a.m.fit_converged,
        },
        by_repetitions: a.summary(&set),
        canaries: a.canaries(&set),
        seconds: a.m.seconds,
        audit: a,
        set,
    })
}
