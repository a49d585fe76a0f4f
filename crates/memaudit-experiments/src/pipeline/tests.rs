//! The pipeline's stage logic on a synthetic backend (no training): which stages run, which are
//! skipped, and what a changed setting reruns.

use std::cell::RefCell;
use std::path::Path;

use super::config::{AuditConfig, LoadedConfig, Variant};
use super::results::*;
use super::stages::{Backend, PipelineOptions, TrainOutput, WhiteBoxOutput, run};
use super::store::StageStatus;
use super::verdict::{Claim, Evidence, Mechanism};
use crate::error::Result;
use crate::num::Num;
use crate::observer::{NullObserver, Observer};

/// Stage outputs made up from the config, and a log of the calls.
#[derive(Default)]
struct Synthetic {
    calls: RefCell<Vec<String>>,
}

impl Backend for Synthetic {
    fn data(&self, c: &AuditConfig, _: &Path, _: &mut dyn Observer) -> Result<DataSummary> {
        self.calls.borrow_mut().push("data".into());
        Ok(DataSummary::Text(TextDataSummary {
            corpus: c.data.corpus.clone(),
            level: c.data.level.clone(),
            text_sha256: "0".repeat(64),
            train_windows: 1000,
            valid_windows: 100,
            vocab_size: 60,
            template: c.canaries.template.clone(),
            canary_space_size: Num(1e4),
        }))
    }
    fn preflight(&self, _: &AuditConfig, _: &DataSummary) -> Result<()> {
        Ok(())
    }
    fn train(
        &self,
        c: &AuditConfig,
        v: &Variant,
        _: &Path,
        _: &mut dyn Observer,
    ) -> Result<TrainOutput> {
        self.calls.borrow_mut().push(format!("train/{}", v.name));
        let claim = match &v.dp {
            Some(dp) => Claim {
                epsilon: Num(dp.target_epsilon.unwrap_or(1.0)),
                delta: dp.delta,
                mechanism: Some(Mechanism {
                    dataset_size: 1000,
                    batch_size: 100,
                    epochs: 1.0,
                    steps: 10,
                    noise_multiplier: 1.0,
                }),
            },
            None => Claim::none(1e-5),
        };
        Ok(TrainOutput {
            utility: Utility {
                valid_loss: Some(Num(2.0 + v.dropout)),
                valid_accuracy: Some(Num(0.4)),
                train_loss: Some(Num(1.9)),
            },
            privacy: Privacy {
                claimed_epsilon: claim.epsilon,
                delta: claim.delta,
                noise_multiplier: None,
                steps: 10,
                accountant: None,
                claim,
            },
            training_curve: vec![],
            exposure: None,
            extraction: Some(ExtractionResults {
                budget: c.audits.extraction.budget,
                top: 10,
                by_repetitions: c
                    .canaries
                    .repetitions
                    .iter()
                    .map(|&r| ExtractionCount {
                        repetitions: r,
                        canaries: 2,
                        extracted: u64::from(r > 8 && v.dp.is_none()),
                    })
                    .collect(),
            }),
            one_run: None,
        })
    }
    fn white_box(
        &self,
        _: &AuditConfig,
        v: &Variant,
        _: &Path,
        _: &mut dyn Observer,
    ) -> Result<Option<WhiteBoxOutput>> {
        self.calls
            .borrow_mut()
            .push(format!("white-box/{}", v.name));
        Ok(Some(WhiteBoxOutput {
            evidence: Evidence::OneRun {
                scores: (0..20).map(|i| Num(i as f64)).collect(),
                included: (0..20).map(|i| i % 2 == 0).collect(),
            },
        }))
    }
    fn mia(
        &self,
        c: &AuditConfig,
        v: &Variant,
        _: &Path,
        _: &Path,
        _: &mut dyn Observer,
    ) -> Result<Option<MiaResults>> {
        self.calls.borrow_mut().push(format!("mia/{}", v.name));
        Ok(Some(MiaResults {
            shadow_models: 2 * c.audits.mia.as_ref().unwrap().shadow_pairs as u64,
            targets: 100,
            attacks: vec![],
        }))
    }
    fn report(&self, r: &AuditResults, path: &Path) -> Result<()> {
        self.calls.borrow_mut().push("report".into());
        super::html::write_report(r, path)
    }
}

fn loaded(text: &str) -> LoadedConfig {
    LoadedConfig::parse(text.to_string(), Path::new("audit.toml")).unwrap()
}

const TWO_VARIANTS: &str = "[[variants]]\nname = \"plain\"\n[[variants]]\nname = \"dp\"\n[variants.dp]\ntarget_epsilon = 4.0\n";

fn ran(r: &AuditResults) -> Vec<String> {
    r.run
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn stages_run_once_and_a_changed_setting_reruns_exactly_its_stages() {
    let dir = tempfile::tempdir().unwrap();
    let b = Synthetic::default();
    let go = |text: &str| {
        let opts = PipelineOptions {
            out: dir.path().to_path_buf(),
            before_commit: None,
        };
        run(&loaded(text), opts, &b, &mut NullObserver).unwrap()
    };
    let first = go(TWO_VARIANTS);
    assert_eq!(
        ran(&first),
        [
            "data",
            "train/plain",
            "mia/plain",
            "train/dp",
            "white-box/dp",
            "mia/dp",
            "report"
        ]
    );
    assert!(dir.path().join("results.json").is_file() && dir.path().join("report.html").is_file());

    let again = go(TWO_VARIANTS);
    assert!(ran(&again).is_empty(), "{:?}", again.run.stages);
    assert_eq!(b.calls.borrow().len(), 7, "nothing recomputed");
    let strip = |mut r: AuditResults| {
        r.run = RunInfo::default();
        r
    };
    assert_eq!(strip(again), strip(first.clone()));

    // One variant's setting: that variant's stages and the report.
    let changed = TWO_VARIANTS.replace("name = \"dp\"\n", "name = \"dp\"\ndropout = 0.1\n");
    assert_eq!(
        ran(&go(&changed)),
        ["train/dp", "white-box/dp", "mia/dp", "report"]
    );
    // The MIA settings: only the MIA stages (and the report).
    let mia = format!("{changed}[audits.mia]\nshadow_pairs = 3\n");
    assert_eq!(ran(&go(&mia)), ["mia/plain", "mia/dp", "report"]);
    // The family-wise significance: only the verdict, i.e. the report.
    let sig = format!("{mia}[audits.lower_bounds]\nsignificance = 0.01\n");
    assert_eq!(ran(&go(&sig)), ["report"]);
}

#[test]
fn the_verdict_and_summary_follow_the_stage_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let b = Synthetic::default();
    let opts = PipelineOptions {
        out: dir.path().to_path_buf(),
        before_commit: None,
    };
    let r = run(&loaded(TWO_VARIANTS), opts, &b, &mut NullObserver).unwrap();
    // Bounds: per variant extraction for r = 1, 4, 16, 64 (the default counts), and the
    // white-box audit of the DP variant (plain variants have no noise to audit).
    assert_eq!(r.verdict.bounds_reported, 2 * 4 + 1);
    assert!(!r.verdict.broken, "{}", r.verdict.line);
    assert!(
        r.summary[0].starts_with("plain: 1 of 2 canaries repeated 16 times were extracted"),
        "{}",
        r.summary[0]
    );
    assert!(
        r.summary[1].starts_with("dp (DP at epsilon 4.00): nothing extracted"),
        "{}",
        r.summary[1]
    );
    assert!(r.selection_caveat.is_some());
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains(&crate::report::escape(&r.summary[0])));
}
