//! Checkpoints: parameters and optimizer moments in safetensors, everything else in a JSON sidecar,
//! and the run's log history up to the checkpoint's step.
//!
//! Layout under a run's checkpoint folder:
//! ```text
//! checkpoints/step-000001234/model.safetensors   parameters by name, optimizer buffers as
//!                                                 "optimizer.<buffer>.<parameter name>"
//! checkpoints/step-000001234/state.json          model config, step, epoch, trainer state
//! checkpoints/step-000001234/logs/<name>         the run's logs (metrics.csv, exposure.csv, ...)
//!                                                 exactly as they stood at this step
//! checkpoints/step-000001234/COMPLETE            the marker: the log files and their sizes (JSON)
//! checkpoints/latest                              name of the newest complete checkpoint
//! ```
//! Atomicity: a checkpoint is one atomic unit (`atomic.rs`): written into a temporary folder,
//! fsynced, marked COMPLETE and renamed into place (a directory rename is atomic); only then is
//! `latest` replaced, again by writing a temporary file and renaming it. A crash at any point
//! leaves either the old or the new checkpoint whole, never a mix; its leftovers are removed by
//! [`clean_stale`] (the trainer calls it on every start and resume) and never read. The two newest
//! checkpoints are kept.
//!
//! Logs: the log rows computed at a step are written into the checkpoint taken at that step, so a
//! checkpoint and the logs a resume restores from it are one consistent unit (see the "Crash
//! safety" section of docs/dp-sgd.md). The marker records each log's size, checked on load.
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

use crate::atomic::{self, AtomicUnit};
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
    /// The run's log files as they stood at this step, by name (empty for checkpoints written
    /// before logs were stored with them).
    pub logs: Vec<LogFile>,
}

/// One log file of a run (its name and bytes), stored inside the checkpoint of the same step.
pub type LogFile = (String, Vec<u8>);

/// Folder of the logs inside a checkpoint.
const LOGS_DIR: &str = "logs";

/// What the COMPLETE marker says: the step and each log's size in bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Marker {
    step: u64,
    logs: Vec<(String, u64)>,
}

/// Extras of a checkpoint write beyond the model: the run's logs, and a hook for crash tests.
#[derive(Default)]
pub struct SaveExtras<'a, 'h> {
    /// Log files to store with the checkpoint (names without folders).
    pub logs: &'a [LogFile],
    /// Called half way through the write (the parameters are on disk, the logs, the sidecar and
    /// the marker are not): a crash test aborts the process here.
    pub midway: Option<&'h mut dyn FnMut()>,
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
    save_with(root, specs, params, optimizer, state, SaveExtras::default())
}

/// [`save`] with the run's logs (and a crash-test hook).
pub fn save_with(
    root: &Path,
    specs: &[ParamSpec],
    params: &[f32],
    optimizer: &OptimizerState,
    state: &CheckpointState,
    extras: SaveExtras<'_, '_>,
) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    let name = format!("step-{:09}", state.step);
    let final_dir = root.join(&name);
    let unit = AtomicUnit::begin(&final_dir)?;
    let tmp = unit.path().to_path_buf();

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
    unit.write("model.safetensors", &bytes)?;
    if let Some(hook) = extras.midway {
        hook();
    }
    let mut marker = Marker {
        step: state.step,
        logs: Vec::new(),
    };
    for (log, bytes) in extras.logs {
        if log.is_empty() || log.contains(['/', '\\']) || log.starts_with('.') {
            return Err(ck_err(
                &tmp,
                format!("log name {log:?} is not a plain file name"),
            ));
        }
        unit.write(&format!("{LOGS_DIR}/{log}"), bytes)?;
        marker.logs.push((log.clone(), bytes.len() as u64));
    }
    let mut st = state.clone();
    st.format = CHECKPOINT_FORMAT;
    st.optimizer_buffers = optimizer.buffers.iter().map(|(n, _)| n.clone()).collect();
    let json = serde_json::to_vec_pretty(&st).map_err(|e| ck_err(&tmp, e.to_string()))?;
    unit.write("state.json", &json)?;
    let marker = serde_json::to_vec(&marker).map_err(|e| ck_err(&tmp, e.to_string()))?;
    // A checkpoint of this step may exist when a resumed run repeats the step it stopped at
    // (e.g. a budget stop mid-epoch): the new one replaces it.
    unit.commit(&marker, true)?;

    let latest_tmp = root.join(".latest.tmp-0");
    write_synced(&latest_tmp, name.as_bytes())?;
    fs::rename(&latest_tmp, root.join("latest")).map_err(|e| io_err(&root.join("latest"), e))?;
    sync_dir(root);

    // Keep the newest KEEP complete checkpoints.
    let mut all = list_complete(root);
    all.sort();
    if all.len() > KEEP {
        for old in &all[..all.len() - KEEP] {
            // Renamed away first: a kill mid-way never leaves a half-deleted checkpoint.
            atomic::remove(&root.join(old))?;
        }
    }
    Ok(final_dir)
}

/// Remove what interrupted checkpoint writes left under `root` (temporary folders and files);
/// one run owns its checkpoint folder, so no other writer's files can be there. Returns how many.
pub fn clean_stale(root: &Path) -> Result<usize> {
    atomic::clean_stale_in(root)
}

fn list_complete(root: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let dir = root.join(n);
            // Marked complete, or written before checkpoints carried a marker (then renamed
            // into place whole, so both files present means complete).
            n.starts_with("step-")
                && dir.join("state.json").is_file()
                && dir.join("model.safetensors").is_file()
                && (atomic::is_complete(&dir) || !dir.join(LOGS_DIR).exists())
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
    let logs = load_logs(dir)?;
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        logs,
        optimizer: OptimizerState {
            step: state.step,
            buffers,
        },
        state,
        params,
    })
}

/// The logs stored with the checkpoint in `dir`, checked against the sizes its marker records.
fn load_logs(dir: &Path) -> Result<Vec<LogFile>> {
    let Some(bytes) = atomic::marker(dir) else {
        return Ok(Vec::new());
    };
    let mp = dir.join(atomic::MARKER);
    let marker: Marker = serde_json::from_slice(&bytes)
        .map_err(|e| ck_err(&mp, format!("not a valid checkpoint marker: {e}")))?;
    let mut logs = Vec::with_capacity(marker.logs.len());
    for (name, len) in marker.logs {
        let p = dir.join(LOGS_DIR).join(&name);
        let b = fs::read(&p).map_err(|e| io_err(&p, e))?;
        if b.len() as u64 != len {
            return Err(ck_err(
                &p,
                format!(
                    "{} bytes where the checkpoint recorded {len}: the checkpoint is damaged",
                    b.len()
                ),
            ));
        }
        logs.push((name, b));
    }
    Ok(logs)
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

    fn state_at(step: u64) -> CheckpointState {
        CheckpointState {
            format: 1,
            model: cfg(4),
            step,
            epoch: step,
            optimizer_buffers: vec![],
            trainer: serde_json::Value::Null,
        }
    }

    #[test]
    fn logs_travel_with_their_checkpoint_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let model = cfg(4).build().unwrap();
        let params = vec![0.25f32; model.num_params()];
        let logs = vec![
            ("metrics.csv".to_string(), b"epoch,step\n1,10\n".to_vec()),
            (
                "exposure.csv".to_string(),
                b"epoch,step\n0,0\n1,10\n".to_vec(),
            ),
        ];
        let path = save_with(
            dir.path(),
            model.param_specs(),
            &params,
            &OptimizerState::default(),
            &state_at(10),
            SaveExtras {
                logs: &logs,
                midway: None,
            },
        )
        .unwrap();
        assert!(atomic::is_complete(&path));
        let ck = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(ck.logs, logs);
        // A log cut short after the fact is refused, not believed.
        fs::write(path.join("logs/exposure.csv"), b"epoch,step\n0,0\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("exposure.csv"),
            "{err}"
        );
        // A log name that would escape the checkpoint folder is refused.
        let bad = vec![("../x.csv".to_string(), vec![])];
        assert!(
            save_with(
                dir.path(),
                model.param_specs(),
                &params,
                &OptimizerState::default(),
                &state_at(11),
                SaveExtras {
                    logs: &bad,
                    midway: None,
                },
            )
            .is_err()
        );
    }

    #[test]
    fn a_write_interrupted_midway_is_never_read_and_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let model = cfg(4).build().unwrap();
        let params = vec![0.5f32; model.num_params()];
        let save_at = |step: u64, midway: Option<&mut dyn FnMut()>| {
            let logs = [("metrics.csv".to_string(), format!("{step}\n").into_bytes())];
            save_with(
                dir.path(),
                model.param_specs(),
                &params,
                &OptimizerState::default(),
                &state_at(step),
                SaveExtras {
                    logs: &logs,
                    midway,
                },
            )
        };
        save_at(5, None).unwrap();
        // Half way through the next write the hook sees one temporary folder holding the
        // parameters only; a process killed there leaves it behind (recreated below by hand,
        // since this write goes on and completes).
        let mut seen = None;
        let mut hook = || {
            let tmp: Vec<PathBuf> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| atomic::is_temp_name(&p.file_name().unwrap().to_string_lossy()))
                .collect();
            let written: Vec<bool> = ["model.safetensors", "state.json", atomic::MARKER]
                .iter()
                .map(|f| tmp.iter().any(|t| t.join(f).is_file()))
                .collect();
            seen = Some((tmp, written));
        };
        save_at(6, Some(&mut hook)).unwrap();
        let (tmp, written) = seen.unwrap();
        assert_eq!(tmp.len(), 1, "the write goes through one temporary folder");
        assert_eq!(
            written,
            [true, false, false],
            "parameters only, at the hook"
        );
        // Leave a copy of that half-written folder, as a kill at the hook would.
        let orphan = dir.path().join(tmp[0].file_name().unwrap());
        fs::create_dir_all(&orphan).unwrap();
        fs::write(orphan.join("model.safetensors"), b"half").unwrap();
        let ck = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(ck.state.step, 6);
        assert_eq!(ck.logs[0].1, b"6\n");
        assert_eq!(clean_stale(dir.path()).unwrap(), 1);
        assert!(!orphan.exists());
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
