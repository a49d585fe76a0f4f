//! A finished (or checkpointed) run folder read back: its training config, data settings,
//! tokenizer and newest checkpoint, and for language models the incremental LM the Secret
//! Sharer's measurements query (`exposure`, `extract`). Errors name the setting `run`, the
//! run folder (the CLI's `--run`).

use std::path::Path;

use memaudit_audit::IncrementalLm;
use memaudit_data::Tokenizer;
use memaudit_engine::ModelConfig;
use memaudit_engine::checkpoint;
use memaudit_engine::train::TrainConfig;

use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};

/// A saved run: its training config, data settings, tokenizer and newest checkpoint.
pub struct SavedRun {
    pub config: TrainConfig,
    pub data: DataSettings,
    pub tokenizer: Option<Tokenizer>,
    pub checkpoint: checkpoint::Checkpoint,
}

fn in_file(path: &Path, message: String) -> ExperimentError {
    ExperimentError::InFile {
        path: path.to_path_buf(),
        message,
    }
}

/// Read the run folder `dir`.
pub fn load_run(dir: &Path) -> Result<SavedRun> {
    let rj = dir.join("run.json");
    let Ok(text) = std::fs::read(&rj) else {
        return invalid(
            "run",
            dir.display(),
            "no run.json (not a memaudit run folder)",
        );
    };
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| in_file(&rj, format!("not valid JSON: {e}")))?;
    let cfg = v["config"]
        .get("train")
        .cloned()
        .ok_or_else(|| in_file(&rj, "holds no training run".into()))?;
    let config: TrainConfig = serde_json::from_value(cfg)
        .map_err(|e| in_file(&rj, format!("unreadable training config: {e}")))?;
    let data: DataSettings = serde_json::from_value(v["config"]["data"].clone())
        .map_err(|e| in_file(&rj, format!("unreadable data flags: {e}")))?;
    let tp = dir.join("tokenizer.json");
    let tokenizer = if tp.exists() {
        Some(Tokenizer::load(&tp).map_err(|e| in_file(&tp, format!("loading: {e}")))?)
    } else {
        None
    };
    let Some(checkpoint) = checkpoint::load_latest(&dir.join("checkpoints"))? else {
        return invalid("run", dir.display(), "no checkpoint yet");
    };
    if checkpoint.state.model != config.model {
        return Err(in_file(
            dir,
            "the checkpoint's model differs from run.json's".into(),
        ));
    }
    // NaN or infinite weights make every number computed from them NaN ("valid loss nan", exit
    // 0); the trainer never saves such a checkpoint, so the file was damaged or written by
    // something else.
    if checkpoint.params.iter().any(|x| !x.is_finite()) {
        let layer = config
            .model
            .build()
            .ok()
            .and_then(|m| {
                m.first_nonfinite_layer(&checkpoint.params)
                    .map(str::to_string)
            })
            .map_or(String::new(), |l| format!(" (first in layer {l})"));
        return invalid(
            "run",
            dir.display(),
            format!(
                "checkpoint {} holds non-finite weights{layer}; nothing computed from it would mean anything (retrain, or resume from an earlier checkpoint)",
                checkpoint.path.display()
            ),
        );
    }
    Ok(SavedRun {
        config,
        data,
        tokenizer,
        checkpoint,
    })
}

/// A language-model run read back with its incremental LM and its tokenizer.
pub fn load_lm(dir: &Path) -> Result<(SavedRun, Box<dyn IncrementalLm>, Tokenizer)> {
    let saved = load_run(dir)?;
    if !matches!(
        saved.config.model,
        ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. }
    ) {
        return invalid(
            "run",
            dir.display(),
            "holds a classifier, not a language model (train one on text, e.g. `memaudit train --data embedded`)",
        );
    }
    let Some(tok) = saved.tokenizer.clone() else {
        return invalid(
            "run",
            dir.display(),
            "no tokenizer.json (not a language-model run)",
        );
    };
    if tok.len() != saved.config.model.classes() {
        return invalid(
            "run",
            dir.display(),
            format!(
                "tokenizer.json has {} tokens but the model's vocabulary has {}; the folder mixes two runs",
                tok.len(),
                saved.config.model.classes()
            ),
        );
    }
    let lm = saved
        .config
        .model
        .incremental_lm(&saved.checkpoint.params)
        .map_err(|e| ExperimentError::Invalid {
            field: "run".into(),
            value: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok((saved, lm, tok))
}

/// Write `params` (weights of `state.model`, from outside the trainer: an imported model) as a
/// checkpoint under `checkpoints`, with the engine's atomic `checkpoint::save`. The model is
/// built here for its parameter layout, which the checkpoint records and `load_run` checks.
pub fn save_checkpoint(
    checkpoints: &Path,
    params: &[f32],
    optimizer: &memaudit_engine::optim::OptimizerState,
    state: &checkpoint::CheckpointState,
) -> Result<std::path::PathBuf> {
    let model = state.model.build()?;
    Ok(checkpoint::save(
        checkpoints,
        model.param_specs(),
        params,
        optimizer,
        state,
    )?)
}
