//! The stages' work on a classifier dataset (`data.dataset`: digits, mnist, fashion-mnist) with
//! a classifier (`model.kind`: mlp, tutorial-cnn, groupnorm-cnn), done by the experiments
//! library: the training run (utility, the ledger's claim, the one-run audit's relabelled
//! canaries, Steinke et al. 2023) and the white-box run through [`crate::train`]; membership
//! inference goes through [`crate::mia`] as for text (the classifier signal is the logit
//! confidence phi). There are no Secret Sharer canaries: exposure and extraction do not apply.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::backend::{
    Rename, claim_of_run, epoch_points, model_settings, optim_settings, privacy_settings,
    read_one_run, rename, variant_fields,
};
use super::config::{AuditConfig, Variant};
use super::results::{DataSummary, DatasetSummary, Privacy, Utility};
use super::stages::TrainOutput;
use crate::datasets::DataSettings;
use crate::error::{Result, invalid};
use crate::num::opt;
use crate::observer::Observer;
use crate::train::{self, InputShape, TrainExperimentConfig};

/// The dataset's name (the caller checked that the config has one).
fn dataset(cfg: &AuditConfig) -> &str {
    cfg.data.dataset.as_deref().unwrap_or_default()
}

/// The library's data settings of `[data]` with a dataset.
pub fn data_settings(cfg: &AuditConfig) -> DataSettings {
    DataSettings {
        data: dataset(cfg).to_string(),
        data_dir: cfg.data.data_dir.clone(),
        max_train: cfg.data.max_train,
        ..DataSettings::default()
    }
}

/// Library field paths of a dataset's settings -> pipeline keys.
pub fn data_fields() -> Vec<(String, String)> {
    vec![
        ("data.data".into(), "data.dataset".into()),
        ("data".into(), "data".into()),
    ]
}

/// Load the dataset, check that the model fits its shape, summarise it.
pub fn data(cfg: &AuditConfig, obs: &mut dyn Observer) -> Result<DataSummary> {
    let ds = data_settings(cfg);
    let map = data_fields();
    let images = ds.images().map_err(|e| rename(e, &map.as_rename()))?;
    let input = InputShape::Image {
        channels: images.channels,
        height: images.height,
        width: images.width,
        classes: images.classes,
    };
    // A CNN's fixed layers may not fit small images (the tutorial CNN needs more than 8x8):
    // building the model here turns that into an error on `model.kind` before anything trains.
    let model_cfg = model_settings(cfg, &Variant::default())
        .config(&input)
        .map_err(|e| rename(e, &[("model.model", "model.kind")]))?;
    if let Err(e) = model_cfg.build() {
        return invalid("model.kind", &cfg.model.kind, e.to_string());
    }
    let set = &images.train_images;
    let mut h = Sha256::new();
    h.update(format!("{} {} {} {}\n", set.n, set.channels, set.height, set.width).as_bytes());
    h.update(&set.pixels);
    h.update(&set.labels);
    let data_sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let summary = DatasetSummary {
        dataset: dataset(cfg).to_string(),
        data_sha256,
        train_examples: set.n as u64,
        test_examples: memaudit_engine::train::Dataset::len(&images.test) as u64,
        classes: images.classes as u64,
        input_shape: [
            images.channels as u64,
            images.height as u64,
            images.width as u64,
        ],
    };
    obs.note(&format!(
        "data: {}, {} training and {} held-out images of {}x{}x{}, {} classes",
        summary.dataset,
        summary.train_examples,
        summary.test_examples,
        images.channels,
        images.height,
        images.width,
        summary.classes
    ));
    Ok(DataSummary::Dataset(summary))
}

/// The training run of variant `v` on the dataset into `out`: `audit_canaries` relabelled
/// examples for the one-run audit, `white_box` Dirac gradient canaries.
pub fn train_experiment(
    cfg: &AuditConfig,
    v: &Variant,
    out: &Path,
    audit_canaries: Option<usize>,
    white_box: Option<usize>,
) -> TrainExperimentConfig {
    let m = model_settings(cfg, v);
    TrainExperimentConfig {
        data: data_settings(cfg),
        model: train::ModelSettings {
            model: m.model,
            hidden: m.hidden,
            dropout: m.dropout,
            ..Default::default()
        },
        optim: optim_settings(cfg, v),
        privacy: privacy_settings(v),
        run: train::RunSettings {
            epochs: v.epochs(&cfg.training),
            batch_size: v.batch_size(&cfg.training),
            seed: Some(cfg.seed),
            out: out.to_path_buf(),
            force: true,
            resume: false,
        },
        audit_canaries,
        white_box_canaries: white_box,
        ..TrainExperimentConfig::default()
    }
}

/// Library field paths of a training run -> the pipeline's keys (`at`: `variants[i]`).
pub fn train_fields(at: &str) -> Vec<(String, String)> {
    let mut map: Vec<(String, String)> = vec![
        (
            "audit_canaries".into(),
            "audits.lower_bounds.one_run_canaries".into(),
        ),
        (
            "white_box_canaries".into(),
            "audits.lower_bounds.white_box_canaries".into(),
        ),
        ("run.batch_size".into(), format!("{at}.batch_size")),
        ("run.epochs".into(), format!("{at}.epochs")),
    ];
    map.extend(data_fields());
    map.extend(variant_fields(at));
    map
}

/// Train variant `v` on the dataset with the one-run canaries; utility, claim and the one-run
/// evidence.
pub fn train(
    cfg: &AuditConfig,
    v: &Variant,
    at: &str,
    dir: &Path,
    obs: &mut dyn Observer,
) -> Result<TrainOutput> {
    let run_dir = dir.join("run");
    let one_run = cfg.audits.lower_bounds.one_run_canaries;
    let tc = train_experiment(cfg, v, &run_dir, (one_run > 0).then_some(one_run), None);
    let map = train_fields(at);
    let r = train::run(&tc, obs).map_err(|e| rename(e, &map.as_rename()))?;
    let sum = &r.summary;
    let (claim, delta) = claim_of_run(
        sum,
        r.training.training_examples,
        tc.run.batch_size,
        sum.epochs as f64,
    );
    let one_run = match r.black_box_audit {
        Some(_) => Some(read_one_run(
            &run_dir.join(crate::audit_canaries::MANIFEST_FILE),
        )?),
        None => None,
    };
    Ok(TrainOutput {
        utility: Utility {
            valid_loss: sum.valid_loss,
            valid_accuracy: sum.valid_accuracy,
            train_loss: sum.train_loss,
        },
        privacy: Privacy {
            claimed_epsilon: claim.epsilon,
            delta,
            noise_multiplier: opt(sum.noise_multiplier),
            steps: sum.steps,
            accountant: v.dp.as_ref().map(|dp| dp.accountant.clone()),
            claim,
        },
        training_curve: epoch_points(&r.training.epochs),
        exposure: None,
        extraction: None,
        one_run,
    })
}
