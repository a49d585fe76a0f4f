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

/// The tiny text config of `crates/memaudit/tests/cli_audit_pipeline.rs`.
const TINY_TEXT: &str = r#"
seed = 3
[data]
corpus = "embedded"
seq_len = 32
max_train = 300
[model]
hidden = 16
embed = 16
[training]
epochs = 1
batch_size = 32
[[variants]]
name = "plain"
[[variants]]
name = "dp"
batch_size = 64
[variants.dp]
target_epsilon = 8.0
[canaries]
template = "pin {digits:3}"
per_repetition = 2
repetitions = [1, 4]
held_out = 5
[audits.exposure]
references = 256
[audits.extraction]
budget = 2000
[audits.mia]
attacks = ["loss", "lira-online"]
shadow_pairs = 1
epochs = 1
batch_size = 32
[audits.lower_bounds]
white_box_canaries = 64
one_run_canaries = 64
"#;

#[test]
fn a_text_configs_stage_keys_are_those_of_schema_version_1() {
    // The keys `memaudit audit` (schema version 1, before datasets and the gpt were added)
    // gave this config: the keys that were added since are skipped when absent, so an existing
    // output folder's finished stages stay valid. Only the report's key changed (its input, the
    // results, carries the schema version).
    const BEFORE: [(&str, &str); 6] = [
        (
            "data",
            "d34ec5817ddc071f4799e1393949d394842c5d1a73e857e38909690515437503",
        ),
        (
            "train/plain",
            "f999d3cfb034a4c9c5ea834de6e467630c5b3fc87ba98c991ef40eecff1c8052",
        ),
        (
            "mia/plain",
            "7c9c606b390b2f142fa5f52783783b78bfee4dd57514e386830c1cd7f2cf3acd",
        ),
        (
            "train/dp",
            "9d509a66667d50f0c51327aa47cdec0d7f3d970d06ebab4dff7f2814cedf1e17",
        ),
        (
            "white-box/dp",
            "afaf07c353926ccc1f782e28c3f913b70bcaac3e4e2586663bd539b616145d03",
        ),
        (
            "mia/dp",
            "93da8b8907c2de1788a0f7949ba07c559071ea1b4d9bdb908eca5ed1dfc9b775",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let opts = PipelineOptions {
        out: dir.path().to_path_buf(),
        before_commit: None,
    };
    let r = run(
        &loaded(TINY_TEXT),
        opts,
        &Synthetic::default(),
        &mut NullObserver,
    )
    .unwrap();
    let keys: Vec<(&str, &str)> = r
        .run
        .stages
        .iter()
        .filter(|s| s.name != "report")
        .map(|s| (s.name.as_str(), s.hash.as_str()))
        .collect();
    assert_eq!(keys, BEFORE);
}

#[test]
fn a_dataset_variant_without_exposure_gets_a_summary_and_report_without_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PipelineOptions {
        out: dir.path().to_path_buf(),
        before_commit: None,
    };
    let text = format!("[data]\ndataset = \"digits\"\n[model]\nkind = \"mlp\"\n{TWO_VARIANTS}");
    let cfg = loaded(&text);
    assert!(cfg.config.is_dataset());
    // The synthetic backend measures exposure only when asked for extraction; a dataset run
    // has neither: strip them as the library backend leaves them out.
    struct NoSecretSharer(Synthetic);
    impl Backend for NoSecretSharer {
        fn data(&self, c: &AuditConfig, d: &Path, o: &mut dyn Observer) -> Result<DataSummary> {
            self.0.data(c, d, o)?;
            Ok(DataSummary::Dataset(DatasetSummary {
                dataset: "digits".into(),
                data_sha256: "0".repeat(64),
                train_examples: 1347,
                test_examples: 450,
                classes: 10,
                input_shape: [1, 8, 8],
            }))
        }
        fn preflight(&self, c: &AuditConfig, d: &DataSummary) -> Result<()> {
            self.0.preflight(c, d)
        }
        fn train(
            &self,
            c: &AuditConfig,
            v: &Variant,
            d: &Path,
            o: &mut dyn Observer,
        ) -> Result<TrainOutput> {
            let mut t = self.0.train(c, v, d, o)?;
            t.exposure = None;
            t.extraction = None;
            Ok(t)
        }
        fn white_box(
            &self,
            c: &AuditConfig,
            v: &Variant,
            d: &Path,
            o: &mut dyn Observer,
        ) -> Result<Option<WhiteBoxOutput>> {
            self.0.white_box(c, v, d, o)
        }
        fn mia(
            &self,
            c: &AuditConfig,
            v: &Variant,
            s: &Path,
            d: &Path,
            o: &mut dyn Observer,
        ) -> Result<Option<MiaResults>> {
            self.0.mia(c, v, s, d, o)
        }
        fn report(&self, r: &AuditResults, path: &Path) -> Result<()> {
            self.0.report(r, path)
        }
    }
    let r = run(
        &cfg,
        opts,
        &NoSecretSharer(Synthetic::default()),
        &mut NullObserver,
    )
    .unwrap();
    assert_eq!(
        r.verdict.bounds_reported, 1,
        "the white-box bound of dp only"
    );
    assert_eq!(
        r.summary[0], "plain: valid loss 2.000, accuracy 40%",
        "no exposure or extraction"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["variants"][0].get("exposure").is_none());
    assert!(json["variants"][0].get("extraction").is_none());
    assert_eq!(json["data"]["dataset"], "digits");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(!html.contains("Exposure vs epoch") && !html.contains(">Exposure</h2>"));
    assert!(html.contains("ROC curves") && html.contains("nats/example"));
    // The file reads back as the same results (the untagged data summary included).
    let back: AuditResults = serde_json::from_value(json).unwrap();
    assert_eq!(back.data, r.data);
}
