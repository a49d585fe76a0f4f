//! Checkpoints: parameters and optimizer moments in safetensors, everything else in a JSON sidecar.
//!
//! Layout under a run's checkpoint folder:
//! ```text
//! checkpoints/step-000001234/model.safetensors   parameters by name, optimizer buffers as
//!                                                 "optimizer.<buffer>.<parameter name>"
//! checkpoints/step-000001234/state.json          model config, step, epoch, trainer state
//! checkpoints/latest                              name of the newest complete checkpoint
//! ```
//! Atomicity: a checkpoint is written into a temporary folder, fsynced, and renamed into place
//! (a directory rename is atomic); only then is `latest` replaced, again by writing a temporary
//! file and renaming it. A crash at any point leaves either the old or the new checkpoint whole,
//! never a mix. The two newest checkpoints are kept.
//!
//! Never stored: the state of the DP noise generator (whoever holds it could regenerate the noise
//! and subtract it). A resumed private run reseeds its noise from the OS unless the user asked for a
//! fixed seed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::models::ModelConfig;
use crate::optim::OptimizerState;
use crate::params::ParamSpec;

/// Format version of `state.json`.
pub const CHECKPOINT_FORMAT: u32 = 1;
const KEEP: usize = 2;

/// The JSON sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    pub model: ModelConfig,
    /// Optimizer steps taken.
    pub step: u64,
    /// Completed epochs.
    pub epoch: u64,
    /// Optimizer buffer names, in order.
    pub optimizer_buffers: Vec<String>,
    /// Trainer-specific state (its config, the privacy ledger, the adaptive clip bound, ...).
    #[serde(default)]
    pub trainer: serde_json::Value,
}

/// A loaded checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub state: CheckpointState,
    pub params: Vec<f32>,
    pub optimizer: OptimizerState,
}

fn io_err(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ck_err(path: &Path, msg: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

fn sync_dir(path: &Path) {
    // Directory fsync makes the rename durable; not supported everywhere, so best effort.
    if let Ok(d) = fs::File::open(path) {
        let _ = d.sync_all();
    }
}

/// Write a checkpoint under `root` (the run's `checkpoints/` folder) atomically; returns its path.
pub fn save(
    root: &Path,
    specs: &[ParamSpec],
    params: &[f32],
    optimizer: &OptimizerState,
    state: &CheckpointState,
) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    let name = format!("step-{:09}", state.step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;

    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for s in specs {
        blobs.push((
            s.name.clone(),
            s.shape.clone(),
            f32_bytes(&params[s.range()]),
        ));
    }
    for (bname, buf) in &optimizer.buffers {
        if buf.len() != params.len() {
            return Err(ck_err(
                &tmp,
                format!(
                    "optimizer buffer {bname} has {} values for {} parameters",
                    buf.len(),
                    params.len()
                ),
            ));
        }
        for s in specs {
            blobs.push((
                format!("optimizer.{bname}.{}", s.name),
                s.shape.clone(),
                f32_bytes(&buf[s.range()]),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = blobs
        .iter()
        .map(|(n, shape, b)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map_err(|e| ck_err(&tmp, e.to_string()))?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| ck_err(&tmp, e.to_string()))?;
    write_synced(&tmp.join("model.safetensors"), &bytes)?;
    let mut st = state.clone();
    st.format = CHECKPOINT_FORMAT;
    st.optimizer_buffers = optimizer.buffers.iter().map(|(n, _)| n.clone()).collect();
    let json = serde_json::to_vec_pretty(&st).map_err(|e| ck_err(&tmp, e.to_string()))?;
    write_synced(&tmp.join("state.json"), &json)?;
    sync_dir(&tmp);

    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(|e| io_err(&final_dir, e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
    sync_dir(root);
    let latest_tmp = root.join(".latest.tmp");
    write_synced(&latest_tmp, name.as_bytes())?;
    fs::rename(&latest_tmp, root.join("latest")).map_err(|e| io_err(&root.join("latest"), e))?;
    sync_dir(root);

    // Keep the newest KEEP complete checkpoints.
    let mut all = list_complete(root);
    all.sort();
    if all.len() > KEEP {
        for old in &all[..all.len() - KEEP] {
            let _ = fs::remove_dir_all(root.join(old));
        }
    }
    Ok(final_dir)
}

fn list_complete(root: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with("step-")
                && root.join(n).join("state.json").is_file()
                && root.join(n).join("model.safetensors").is_file()
        })
        .collect()
}

/// The newest complete checkpoint under `root`, if any.
pub fn load_latest(root: &Path) -> Result<Option<Checkpoint>> {
    if !root.exists() {
        return Ok(None);
    }
    let named = fs::read_to_string(root.join("latest"))
        .ok()
        .map(|s| s.trim().to_string());
    let mut candidates = list_complete(root);
    candidates.sort();
    let pick = match named {
        Some(n) if candidates.contains(&n) => Some(n),
        _ => candidates.pop(),
    };
    match pick {
        Some(n) => load(&root.join(n)).map(Some),
        None => Ok(None),
    }
}

/// Load one checkpoint folder.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let sp = dir.join("state.json");
    let text = fs::read(&sp).map_err(|e| io_err(&sp, e))?;
    let state: CheckpointState = serde_json::from_slice(&text)
        .map_err(|e| ck_err(&sp, format!("not a valid checkpoint state: {e}")))?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(ck_err(
            &sp,
            format!(
                "format {} is not supported (this build reads {CHECKPOINT_FORMAT})",
                state.format
            ),
        ));
    }
    let model = state.model.build()?;
    let specs = model.param_specs();
    let mp = dir.join("model.safetensors");
    let bytes = fs::read(&mp).map_err(|e| io_err(&mp, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ck_err(&mp, format!("not a valid safetensors file: {e}")))?;
    let tensors: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let n = model.num_params();
    let read_into = |name: &str, spec: &ParamSpec, out: &mut [f32]| -> Result<()> {
        let t = tensors.get(name).ok_or_else(|| {
            ck_err(
                &mp,
                format!("missing tensor {name} (does the config match this checkpoint?)"),
            )
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(ck_err(
                &mp,
                format!("tensor {name} is {:?}, expected F32", t.dtype()),
            ));
        }
        if t.shape() != spec.shape.as_slice() {
            return Err(ck_err(
                &mp,
                format!(
                    "tensor {name} has shape {:?}, the model expects {:?}",
                    t.shape(),
                    spec.shape
                ),
            ));
        }
        for (o, c) in out.iter_mut().zip(t.data().chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    };
    let mut params = vec![0.0f32; n];
    for s in specs {
        read_into(&s.name, s, &mut params[s.range()])?;
    }
    let mut buffers = Vec::new();
    for b in &state.optimizer_buffers {
        let mut buf = vec![0.0f32; n];
        for s in specs {
            read_into(&format!("optimizer.{b}.{}", s.name), s, &mut buf[s.range()])?;
        }
        buffers.push((b.clone(), buf));
    }
    let expected: usize = specs.len() * (1 + state.optimizer_buffers.len());
    if tensors.len() != expected {
        let known: std::collections::HashSet<String> = specs
            .iter()
            .map(|s| s.name.clone())
            .chain(state.optimizer_buffers.iter().flat_map(|b| {
                specs
                    .iter()
                    .map(move |s| format!("optimizer.{b}.{}", s.name))
            }))
            .collect();
        let extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !known.contains(*k))
            .take(3)
            .collect();
        return Err(ck_err(
            &mp,
            format!(
                "unexpected tensors {extra:?}: the checkpoint does not belong to this model config"
            ),
        ));
    }
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        optimizer: OptimizerState {
            step: state.step,
            buffers,
        },
        state,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::ActivationKind;
    use crate::optim::{Optimizer, OptimizerConfig, Schedule};

    fn cfg(hidden: usize) -> ModelConfig {
        ModelConfig::Mlp {
            input: 5,
            hidden: vec![hidden],
            classes: 3,
            activation: ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        }
    }

    #[test]
    fn round_trip_keeps_params_and_moments_and_prunes_old() {
        let dir = tempfile::tempdir().unwrap();
        let model = cfg(4).build().unwrap();
        let mut opt = Optimizer::new(
            OptimizerConfig::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            Schedule::Constant,
            model.num_params(),
        )
        .unwrap();
        let mut params: Vec<f32> = (0..model.num_params()).map(|i| i as f32 * 0.01).collect();
        for step in 1..=3u64 {
            let g: Vec<f32> = params.iter().map(|p| p * 0.5 + 0.1).collect();
            opt.step(&mut params, &g);
            let state = CheckpointState {
                format: 1,
                model: cfg(4),
                step,
                epoch: step,
                optimizer_buffers: vec![],
                trainer: serde_json::json!({"clip": 1.5}),
            };
            save(dir.path(), model.param_specs(), &params, &opt.state, &state).unwrap();
        }
        let ck = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(ck.state.step, 3);
        assert_eq!(ck.params, params);
        assert_eq!(ck.optimizer, opt.state);
        assert_eq!(ck.state.trainer["clip"], 1.5);
        assert_eq!(list_complete(dir.path()).len(), 2);
    }

    #[test]
    fn a_half_written_checkpoint_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let model = cfg(4).build().unwrap();
        let params = vec![0.5f32; model.num_params()];
        let state = CheckpointState {
            format: 1,
            model: cfg(4),
            step: 7,
            epoch: 1,
            optimizer_buffers: vec![],
            trainer: serde_json::Value::Null,
        };
        save(
            dir.path(),
            model.param_specs(),
            &params,
            &OptimizerState::default(),
            &state,
        )
        .unwrap();
        // A crash mid-write leaves a temp folder and maybe a step folder without its sidecar.
        fs::create_dir_all(dir.path().join(".tmp-step-000000008-1")).unwrap();
        fs::create_dir_all(dir.path().join("step-000000009")).unwrap();
        fs::write(
            dir.path().join("step-000000009/model.safetensors"),
            b"garbage",
        )
        .unwrap();
        let ck = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(ck.state.step, 7);
    }

    #[test]
    fn shape_mismatch_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let model = cfg(4).build().unwrap();
        let params = vec![0.5f32; model.num_params()];
        let state = CheckpointState {
            format: 1,
            model: cfg(4),
            step: 1,
            epoch: 0,
            optimizer_buffers: vec![],
            trainer: serde_json::Value::Null,
        };
        let path = save(
            dir.path(),
            model.param_specs(),
            &params,
            &OptimizerState::default(),
            &state,
        )
        .unwrap();
        // Edit the sidecar to claim a different hidden size.
        let sp = path.join("state.json");
        let mut st: CheckpointState = serde_json::from_slice(&fs::read(&sp).unwrap()).unwrap();
        st.model = cfg(6);
        fs::write(&sp, serde_json::to_vec(&st).unwrap()).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("fc1.weight") && err.contains("shape"), "{err}");
    }
}
