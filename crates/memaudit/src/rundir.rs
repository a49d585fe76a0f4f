//! Run folders: every run writes `--out DIR` with `run.json`, `metrics.csv`, checkpoints and
//! `report.html`.
//!
//! A folder that already holds a run is refused unless `--resume` (continue it: same command and
//! config, except the settings in `RESUMABLE`) or `--force` (discard it). Checks happen before anything is written, so a refused
//! command leaves the folder exactly as it was.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::error::user;

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

/// Write `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
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
            return Err(user(format!(
                "--out {}: exists and is not a folder",
                path.display()
            )));
        }
        let run_json = path.join("run.json");
        let mut resuming = false;
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
                            return Err(user(format!(
                                "--out {}: holds a different run (its command or config differs); --resume needs the same settings, or use --force to discard it",
                                path.display()
                            )));
                        }
                        resuming = true;
                    } else if !reuse.force {
                        return Err(user(format!(
                            "--out {}: already holds a run; use --resume to continue it or --force to overwrite it",
                            path.display()
                        )));
                    }
                }
                None if !reuse.force => {
                    return Err(user(format!(
                        "--out {}: is not empty and holds no memaudit run; choose another folder or use --force",
                        path.display()
                    )));
                }
                None => {}
            }
            if reuse.force && !resuming {
                for e in fs::read_dir(path)? {
                    let p = e?.path();
                    if p.is_dir() {
                        fs::remove_dir_all(&p)?
                    } else {
                        fs::remove_file(&p)?
                    }
                }
            }
        } else if reuse.resume {
            return Err(user(format!(
                "--resume: {} holds no run to continue",
                path.display()
            )));
        }
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create --out {}", path.display()))?;
        let record = json!({
            "command": command,
            "argv": std::env::args().collect::<Vec<_>>(),
            "config": config,
            "seed": seed,
            "versions": { "memaudit": env!("CARGO_PKG_VERSION") },
            "started_unix": now_unix(),
            "status": "running",
            "resumed": resuming,
        });
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

/// A CSV of per-epoch (or per-step) metrics; appended row by row so a crash keeps what was logged.
pub struct MetricsCsv {
    path: PathBuf,
    columns: Vec<String>,
}

impl MetricsCsv {
    /// Create (or, when resuming with the same columns, continue) `path`.
    pub fn open(path: &Path, columns: &[&str], resume: bool) -> Result<Self> {
        let header = columns.join(",");
        let keep = resume
            && fs::read_to_string(path)
                .map(|s| s.lines().next() == Some(header.as_str()))
                .unwrap_or(false);
        if !keep {
            fs::write(path, format!("{header}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
        })
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
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        writeln!(f, "{}", row.join(","))?;
        Ok(())
    }
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
