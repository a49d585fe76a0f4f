//! Run folders: every run writes its folder (`run.out`, the CLI's `--out DIR`) with `run.json`, `metrics.csv`, checkpoints and
//! `report.html`.
//!
//! A folder that already holds a run is refused unless `--resume` (continue it: same command and
//! config, except the settings in `RESUMABLE`) or `--force` (discard it). Checks happen before anything is written, so a refused
//! command leaves the folder exactly as it was.
//!
//! Crash safety: the logs (`metrics.csv`, a secret-sharer's `exposure.csv`) are stored inside each
//! checkpoint (the engine's `checkpoint.rs`); the files at the top of the folder are derived
//! copies, each rewritten whole by [`write_atomic`], and restored from the checkpoint a resume
//! starts from. A resume keeps what `run.json` recorded (its results are recomputed from the
//! restored history) and removes what interrupted atomic writes left behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::{ExperimentError, Result, invalid};

/// An I/O error naming its file.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExperimentError + '_ {
    move |source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct RunDir {
    pub path: PathBuf,
    /// The folder held this same run and `--resume` was given.
    pub resuming: bool,
    record: Value,
    started: std::time::Instant,
}

/// How an existing folder may be used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reuse {
    pub force: bool,
    pub resume: bool,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write `bytes` to `path` atomically: a temporary sibling `.<name>.tmp-<pid>` (a name the
/// engine's `atomic::is_temp_name` recognises, so a resume removes it after a crash), fsync,
/// rename over `path`, fsync the folder. Readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Err(ExperimentError::InFile {
            path: path.to_path_buf(),
            message: "cannot write: no file name".into(),
        });
    };
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    // The rename is durable once the folder is synced (best effort: not every platform can).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl RunDir {
    /// Open `path` for a run of `command` with `config` (what must match for `--resume`).
    pub fn open(
        path: &Path,
        command: &str,
        config: &Value,
        seed: Option<u64>,
        reuse: Reuse,
    ) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return invalid("run.out", path.display(), "exists and is not a folder");
        }
        let run_json = path.join("run.json");
        let mut resuming = false;
        let mut previous_record = None;
        if path.is_dir()
            && fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            let previous: Option<Value> = fs::read(&run_json)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match previous {
                Some(prev) => {
                    let same = prev.get("command").and_then(Value::as_str) == Some(command)
                        && prev.get("config").map(without_resumable)
                            == Some(without_resumable(config));
                    if reuse.resume && !reuse.force {
                        if !same {
                            return invalid(
                                "run.out",
                                path.display(),
                                "holds a different run (its command or config differs); --resume needs the same settings, or use --force to discard it",
                            );
                        }
                        resuming = true;
                        previous_record = Some(prev);
                    } else if !reuse.force {
                        return invalid(
                            "run.out",
                            path.display(),
                            "already holds a run; use --resume to continue it or --force to overwrite it",
                        );
                    }
                }
                None if !reuse.force => {
                    return invalid(
                        "run.out",
                        path.display(),
                        "is not empty and holds no memaudit run; choose another folder or use --force",
                    );
                }
                None => {}
            }
            if reuse.force && !resuming {
                for e in fs::read_dir(path).map_err(io(path))? {
                    let p = e.map_err(io(path))?.path();
                    if p.is_dir() {
                        fs::remove_dir_all(&p).map_err(io(&p))?
                    } else {
                        fs::remove_file(&p).map_err(io(&p))?
                    }
                }
            }
        } else if reuse.resume {
            return invalid("run.resume", path.display(), "holds no run to continue");
        }
        fs::create_dir_all(path).map_err(io(path))?;
        if resuming {
            memaudit_engine::atomic::clean_stale_in(path)?;
        }
        let mut record = json!({
            "command": command,
            "argv": std::env::args().collect::<Vec<_>>(),
            "config": config,
            "seed": seed,
            "versions": { "memaudit": env!("CARGO_PKG_VERSION") },
            "started_unix": now_unix(),
            "status": "running",
            "resumed": resuming,
        });
        // A resume keeps what the run recorded before (its sanity checks, results, its first
        // start) and updates the rest; results are rewritten when the resumed run ends.
        if let Some(Value::Object(prev)) = previous_record {
            let fresh = std::mem::take(&mut record);
            let mut merged = prev;
            let first_start = merged.get("started_unix").cloned();
            for (k, v) in fresh.as_object().into_iter().flatten() {
                merged.insert(k.clone(), v.clone());
            }
            if let Some(t) = first_start {
                merged.insert("resumed_unix".into(), json!(now_unix()));
                merged.insert("started_unix".into(), t);
            }
            merged.remove("finished_unix");
            record = Value::Object(merged);
        }
        let rd = Self {
            path: path.to_path_buf(),
            resuming,
            record,
            started: std::time::Instant::now(),
        };
        rd.write_record()?;
        Ok(rd)
    }

    fn write_record(&self) -> Result<()> {
        write_atomic(
            &self.path.join("run.json"),
            serde_json::to_string_pretty(&self.record)?.as_bytes(),
        )
    }

    /// Record a field in run.json (e.g. "results", "privacy") and rewrite it.
    pub fn set(&mut self, key: &str, value: Value) -> Result<()> {
        self.record[key] = value;
        self.write_record()
    }

    /// Mark the run finished, with its wall time.
    pub fn finish(&mut self, status: &str) -> Result<()> {
        self.record["status"] = json!(status);
        self.record["finished_unix"] = json!(now_unix());
        self.record["timings"] = json!({ "wall_seconds": self.started.elapsed().as_secs_f64() });
        self.write_record()
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Settings a `--resume` may change (the trainer checks the rest and records a new privacy-ledger
/// segment; see the engine's `ledger.rs`).
const RESUMABLE: [&str; 7] = [
    "epochs",
    "batch_size",
    "physical_batch",
    "schedule",
    "sampling",
    "noise_multiplier",
    "max_epsilon",
];

/// `v` without the fields a resume may change: what must match for `--resume`.
fn without_resumable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !RESUMABLE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), without_resumable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_resumable).collect()),
        other => other.clone(),
    }
}

/// A CSV of per-epoch (or per-step) metrics. The whole text is kept in memory and the file is
/// rewritten atomically at every row, so a crash leaves it whole at some row; a trainer stores
/// [`contents`](MetricsCsv::contents) in each checkpoint and a resume restores from there.
pub struct MetricsCsv {
    path: PathBuf,
    columns: Vec<String>,
    /// Interior mutability keeps `append(&self)`, as callers hold it in closures.
    text: std::cell::RefCell<String>,
}

impl MetricsCsv {
    /// Create (or, when resuming with the same columns, continue) `path`.
    pub fn open(path: &Path, columns: &[&str], resume: bool) -> Result<Self> {
        let header = columns.join(",");
        let kept = if resume {
            fs::read_to_string(path)
                .ok()
                .filter(|s| s.lines().next() == Some(header.as_str()))
        } else {
            None
        };
        // A crash of an older version's append could leave a partial last line: drop it.
        let text = match kept {
            Some(t) if t.ends_with('\n') => t,
            Some(t) => t[..t.rfind('\n').map_or(0, |i| i + 1)].to_string(),
            None => format!("{header}\n"),
        };
        Self::with_text(path, columns, text)
    }

    /// Continue `path` from `history`, the CSV text a checkpoint stored (header included): the
    /// file is rewritten to exactly that, dropping rows logged after the checkpoint.
    pub fn restore(path: &Path, columns: &[&str], history: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(history)
            .ok()
            .filter(|t| t.lines().next() == Some(columns.join(",").as_str()) && t.ends_with('\n'))
            .ok_or_else(|| ExperimentError::InFile {
                path: path.to_path_buf(),
                message: "the checkpoint's copy has other columns or is cut short; start the run again with --force".into(),
            })?;
        Self::with_text(path, columns, text.to_string())
    }

    fn with_text(path: &Path, columns: &[&str], text: String) -> Result<Self> {
        write_atomic(path, text.as_bytes())?;
        Ok(Self {
            path: path.to_path_buf(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
            text: text.into(),
        })
    }

    /// The file's whole text (header and rows).
    pub fn contents(&self) -> String {
        self.text.borrow().clone()
    }

    pub fn append(&self, values: &[Option<f64>]) -> Result<()> {
        assert_eq!(values.len(), self.columns.len(), "metrics row width");
        let row: Vec<String> = values
            .iter()
            .map(|v| match v {
                None => String::new(),
                Some(x) if x.is_nan() => "nan".into(),
                Some(x) if x.is_infinite() => {
                    if *x > 0.0 {
                        "inf".into()
                    } else {
                        "-inf".into()
                    }
                }
                Some(x) => format!("{x}"),
            })
            .collect();
        let mut text = self.text.borrow_mut();
        text.push_str(&row.join(","));
        text.push('\n');
        write_atomic(&self.path, text.as_bytes())
    }
}

/// The rows of a CSV written by [`MetricsCsv`] as numbers by column name (empty cells: None;
/// `nan`, `inf`, `-inf` as written). Shortest round-trip formatting makes this exact.
pub fn parse_metrics(text: &str) -> Result<Vec<std::collections::HashMap<String, Option<f64>>>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    lines
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                return Err(ExperimentError::protocol(format!(
                    "row {} has {} cells for {} columns",
                    i + 1,
                    cells.len(),
                    header.len()
                )));
            }
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| {
                    let v = if c.is_empty() {
                        None
                    } else {
                        Some(c.parse::<f64>().map_err(|_| {
                            ExperimentError::protocol(format!(
                                "row {}, column {h}: {c:?} is not a number",
                                i + 1
                            ))
                        })?)
                    };
                    Ok((h.to_string(), v))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_different_run_without_force_and_leaves_it_untouched() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run");
        let cfg = json!({"a": 1, "epochs": 3});
        RunDir::open(&p, "train", &cfg, Some(1), Reuse::default()).unwrap();
        fs::write(p.join("marker"), b"x").unwrap();
        let before = fs::read(p.join("run.json")).unwrap();
        assert!(RunDir::open(&p, "train", &json!({"a": 2}), Some(1), Reuse::default()).is_err());
        assert!(
            RunDir::open(
                &p,
                "train",
                &json!({"a": 2}),
                Some(1),
                Reuse {
                    resume: true,
                    force: false
                }
            )
            .is_err()
        );
        assert_eq!(fs::read(p.join("run.json")).unwrap(), before);
        assert!(p.join("marker").exists());
        let r = RunDir::open(
            &p,
            "train",
            &cfg,
            Some(1),
            Reuse {
                resume: true,
                force: false,
            },
        )
        .unwrap();
        assert!(r.resuming && p.join("marker").exists());
        RunDir::open(
            &p,
            "train",
            &json!({"a": 2}),
            Some(1),
            Reuse {
                resume: false,
                force: true,
            },
        )
        .unwrap();
        assert!(!p.join("marker").exists());
    }

    #[test]
    fn metrics_round_trip_exactly_and_restore_drops_later_rows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.csv");
        let m = MetricsCsv::open(&p, &["epoch", "loss", "eps"], false).unwrap();
        let loss = 0.1f64 + 0.2;
        m.append(&[Some(1.0), Some(loss), None]).unwrap();
        let at_checkpoint = m.contents().to_string();
        m.append(&[Some(2.0), Some(f64::NAN), Some(f64::INFINITY)])
            .unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), m.contents());
        let rows = parse_metrics(&m.contents()).unwrap();
        assert_eq!(rows[0]["loss"], Some(loss), "bit-exact round trip");
        assert_eq!(rows[0]["eps"], None);
        assert!(rows[1]["loss"].unwrap().is_nan() && rows[1]["eps"] == Some(f64::INFINITY));
        // A resume from the checkpoint holding one row rewrites the file to that row.
        let m =
            MetricsCsv::restore(&p, &["epoch", "loss", "eps"], at_checkpoint.as_bytes()).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), at_checkpoint);
        assert_eq!(m.contents(), at_checkpoint);
        // A checkpoint copy with other columns is refused.
        assert!(MetricsCsv::restore(&p, &["epoch"], at_checkpoint.as_bytes()).is_err());
        // No temporary file is left next to it.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_resume_keeps_the_record_and_removes_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run");
        let cfg = json!({"a": 1});
        let mut r = RunDir::open(&p, "train", &cfg, Some(1), Reuse::default()).unwrap();
        r.set("sanity_checks", json!({"ok": true})).unwrap();
        r.set("results", json!({"valid_loss": 0.5})).unwrap();
        r.finish("completed").unwrap();
        fs::write(p.join(".metrics.csv.tmp-99"), b"half").unwrap();
        let resume = Reuse {
            resume: true,
            force: false,
        };
        RunDir::open(&p, "train", &cfg, Some(1), resume).unwrap();
        let rec: Value = serde_json::from_slice(&fs::read(p.join("run.json")).unwrap()).unwrap();
        assert_eq!(rec["sanity_checks"]["ok"], true);
        assert_eq!(rec["results"]["valid_loss"], 0.5);
        assert_eq!(rec["status"], "running");
        assert_eq!(rec["resumed"], true);
        assert!(!p.join(".metrics.csv.tmp-99").exists());
    }

    #[test]
    fn refuses_a_foreign_folder_and_a_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("notes.txt"), b"mine").unwrap();
        assert!(RunDir::open(d.path(), "train", &json!({}), None, Reuse::default()).is_err());
        assert!(
            RunDir::open(
                &d.path().join("notes.txt"),
                "train",
                &json!({}),
                None,
                Reuse::default()
            )
            .is_err()
        );
        assert_eq!(fs::read(d.path().join("notes.txt")).unwrap(), b"mine");
    }
}
