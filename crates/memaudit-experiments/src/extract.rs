//! `extract` as an experiment: the attacker's side of The Secret Sharer (Carlini et al. 2019,
//! §8): the most likely completions of a canary template under a saved language model, by exact
//! best-first (Dijkstra) search over the slots (or a beam-limited variant), with its cost in
//! expanded trie nodes. With the run's canary manifest, inserted canaries are marked.

use std::path::PathBuf;

use memaudit_audit::{CanaryManifest, Extraction};
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;
use crate::saved_run::load_lm;
use crate::secret_sharer::{
    CanarySet, CanaryTokens, ExtractSettings, MANIFEST_FILE, extract_canaries, parse_template,
    render_candidates, rendered_extraction_cost, separator, tokenize_template,
};

/// A search for a template's most likely completions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractConfig {
    /// A language-model run folder (`secret-sharer`, or `train` on text).
    pub run: PathBuf,
    /// The template to complete (`None`: the run's canary template), e.g. "my pin is
    /// {digits:4}".
    pub template: Option<String>,
    /// A canary manifest whose canaries are marked in the output (`None`: the run's).
    pub manifest: Option<PathBuf>,
    /// Candidates to return, most likely first.
    pub top: usize,
    /// Budget: trie nodes the search may expand (LM rows queried).
    pub budget: u64,
    /// Nodes expanded per batched LM query.
    pub batch: usize,
    /// Keep at most this many frontier entries (approximate search, bounded memory).
    pub beam: Option<usize>,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            run: PathBuf::new(),
            template: None,
            manifest: None,
            top: 10,
            budget: 1_000_000,
            batch: 64,
            beam: None,
        }
    }
}

impl ExperimentConfig for ExtractConfig {
    const NAME: &'static str = "extract";

    fn validate(&self) -> Result<()> {
        if self.run.as_os_str().is_empty() {
            return invalid("run", "\"\"", "give the run folder");
        }
        for (field, v) in [
            ("top", self.top as u64),
            ("budget", self.budget),
            ("batch", self.batch as u64),
            ("beam", self.beam.map_or(1, |b| b as u64)),
        ] {
            if v == 0 {
                return invalid(field, 0, "must be at least 1");
            }
        }
        if let Some(t) = &self.template {
            parse_template(t)?;
        }
        Ok(())
    }
}

/// One candidate the search returned.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub text: String,
    pub log_perplexity: Num,
    pub expansions: u64,
    /// The inserted canary it is, if any.
    pub canary: Option<String>,
    pub repetitions: Option<u32>,
}

/// One canary of the manifest: found among the candidates or not.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryFound {
    pub id: String,
    pub text: String,
    pub repetitions: u32,
    pub extracted: bool,
    pub position: Option<u64>,
    pub expansions: u64,
}

/// The search's result. Serialised, it is `memaudit extract --json`.
#[derive(Serialize)]
pub struct ExtractResult {
    pub run: String,
    pub template: String,
    pub log2_space: f64,
    pub expansions: u64,
    pub lm_calls: u64,
    pub stop: memaudit_audit::StopReason,
    pub exact: bool,
    pub candidates: Vec<Candidate>,
    pub canaries: Vec<CanaryFound>,
    pub seconds: f64,
    /// The optimizer step of the checkpoint searched.
    #[serde(skip)]
    pub step: u64,
    /// |R| (for rendering).
    #[serde(skip)]
    pub space_size: u128,
    #[serde(skip)]
    pub search: Extraction,
}

/// Search the run's model for the template's most likely completions.
pub fn run(cfg: &ExtractConfig, observer: &mut dyn Observer) -> Result<ExtractResult> {
    cfg.validate()?;
    let (saved, lm, tok) = load_lm(&cfg.run)?;
    let manifest_path = cfg
        .manifest
        .clone()
        .unwrap_or_else(|| cfg.run.join(MANIFEST_FILE));
    let has_manifest = manifest_path.is_file();
    let set = match (&cfg.template, has_manifest) {
        (None, false) => {
            return invalid(
                "run",
                cfg.run.display(),
                "no canary manifest; give the template to complete with --canary",
            );
        }
        (None, true) => CanarySet::load(&cfg.run, Some(&manifest_path), &tok)?,
        (Some(t), _) => {
            let template = parse_template(t)?;
            let tpl = if tok.kind() == memaudit_data::TokenizerKind::Bpe {
                // Every candidate rendered whole, read after what the run's canaries were read
                // after (else GPT-2's document separator).
                let context = if has_manifest {
                    CanaryManifest::load(&manifest_path)
                        .map_err(|e| ExperimentError::audit("reading the canary manifest", e))?
                        .context_tokens
                } else {
                    vec![separator(&tok)?]
                };
                CanaryTokens::Rendered(
                    render_candidates(&template, &tok, &context, u128::from(cfg.budget))
                        .map_err(|e| match e {
                            memaudit_audit::AuditError::SpaceAboveLimit { size, .. } => {
                                ExperimentError::Invalid {
                                    field: "budget".into(),
                                    value: cfg.budget.to_string(),
                                    reason: format!(
                                        "a byte-level BPE run scores every candidate rendered whole, and the canary has {size}"
                                    ),
                                }
                            }
                            e => ExperimentError::Invalid {
                                field: "template".into(),
                                value: format!("{t:?}"),
                                reason: e.to_string(),
                            },
                        })?,
                )
            } else {
                CanaryTokens::Trie(tokenize_template(&template, &tok, "")?)
            };
            // Mark the run's canaries when they share the template.
            let manifest = if has_manifest {
                let m = CanarySet::load(&cfg.run, Some(&manifest_path), &tok)?;
                (m.manifest.template == template.source()).then_some(m.manifest)
            } else {
                None
            };
            let manifest = manifest.unwrap_or_else(|| CanaryManifest {
                format_version: memaudit_audit::canaries::MANIFEST_VERSION,
                template: template.source().to_string(),
                seed: 0,
                space_size: template.space().size(),
                log2_space: template.space().log2_size(),
                window: 0,
                context_tokens: tpl.context().to_vec(),
                terminator_tokens: Vec::new(),
                canaries: Vec::new(),
            });
            CanarySet {
                tpl,
                manifest,
                references: Vec::new(),
            }
        }
    };
    if let Some(cost) = rendered_extraction_cost(&set)
        && cost > cfg.budget
    {
        return invalid(
            "budget",
            cfg.budget,
            format!(
                "a byte-level BPE run's extraction scores every candidate rendered whole: {cost} LM rows; raise it to at least {cost}"
            ),
        );
    }
    observer.note(&format!(
        "searching the {} candidates of {:?} for the {} most likely (budget {} expansions)",
        set.tpl.space().size(),
        set.manifest.template,
        cfg.top,
        cfg.budget
    ));
    let started = std::time::Instant::now();
    let (search, per) = extract_canaries(
        lm.as_ref(),
        &set,
        &ExtractSettings {
            budget: cfg.budget,
            top: cfg.top,
            batch: cfg.batch,
            beam: cfg.beam,
        },
    )
    .map_err(|e| ExperimentError::audit("extraction", e))?;
    let seconds = started.elapsed().as_secs_f64();
    let by_index: std::collections::HashMap<u128, &memaudit_audit::Canary> = set
        .manifest
        .canaries
        .iter()
        .map(|c| (c.secret_index, c))
        .collect();
    let candidates = search
        .candidates
        .iter()
        .map(|c| {
            let canary = by_index.get(&c.index);
            Candidate {
                text: set.render(c.index),
                log_perplexity: Num(c.log_perplexity),
                expansions: c.expansions,
                canary: canary.map(|x| x.id.clone()),
                repetitions: canary.map(|x| x.repetitions),
            }
        })
        .collect();
    let canaries = set
        .manifest
        .canaries
        .iter()
        .zip(&per)
        .map(|(c, e)| CanaryFound {
            id: c.id.clone(),
            text: c.text.clone(),
            repetitions: c.repetitions,
            extracted: e.extracted,
            position: e.position,
            expansions: e.expansions,
        })
        .collect();
    Ok(ExtractResult {
        run: cfg.run.display().to_string(),
        template: set.manifest.template.clone(),
        log2_space: set.tpl.space().log2_size(),
        expansions: search.expansions,
        lm_calls: search.lm_calls,
        stop: search.stop,
        exact: search.exact,
        candidates,
        canaries,
        seconds,
        step: saved.checkpoint.state.step,
        space_size: set.tpl.space().size(),
        search,
    })
}
