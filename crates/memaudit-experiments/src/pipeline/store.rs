//! The stage store: every stage of the pipeline is an atomic unit
//! ([`memaudit_engine::atomic::AtomicUnit`]) under `<out>/stages/<stage>/`, keyed by the hash of
//! its inputs.
//!
//! A stage's key is SHA-256 over its name, [`STAGE_FORMAT`], its config section (as canonical
//! JSON) and the keys of the stages it reads, so a changed setting changes the key of its stage
//! and of every stage downstream of it, and of nothing else. The unit's completion marker holds
//! the key: a complete unit whose marker is the key is skipped on rerun (its `output.json` is
//! read back); any other is recomputed and replaced. A kill leaves at most the running stage's
//! temporary folder, which the next run removes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use memaudit_engine::atomic::{self, AtomicUnit};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{ExperimentError, Result};
use crate::observer::Observer;

/// Part of every key: bump it when a stage's output format or computation changes, so old
/// stage folders are recomputed rather than misread.
pub const STAGE_FORMAT: u32 = 1;

/// The output file of a stage, inside its unit.
pub const OUTPUT_FILE: &str = "output.json";

/// A stage's identity: its name and the hash of its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageKey {
    pub name: String,
    /// Lower-case hex SHA-256.
    pub hash: String,
}

impl StageKey {
    /// The key of stage `name` reading config `section` and the stages `upstream`.
    pub fn new<S: Serialize>(name: &str, section: &S, upstream: &[&StageKey]) -> Result<Self> {
        let mut h = Sha256::new();
        h.update(format!("memaudit-audit-stage v{STAGE_FORMAT}\n{name}\n").as_bytes());
        // serde_json writes struct fields in declaration order and maps as they iterate
        // (BTreeMap: sorted), so the same section always gives the same bytes.
        let json = serde_json::to_vec(section)
            .map_err(|e| ExperimentError::WriteConfig(format!("stage {name}: {e}")))?;
        h.update(&json);
        for u in upstream {
            h.update(format!("\n{}={}", u.name, u.hash).as_bytes());
        }
        let hash = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Self {
            name: name.to_string(),
            hash,
        })
    }
}

/// Whether a stage ran or was found complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ran,
    Skipped,
}

/// One stage of a pipeline run (timing: not part of the results' content).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub hash: String,
    pub status: StageStatus,
    pub seconds: f64,
}

/// Called with a stage's name and its temporary folder after the stage's output is written and
/// before it is committed: a test hook (the CLI's fault injection kills the process there).
pub type BeforeCommit<'a> = Box<dyn Fn(&str, &Path) + 'a>;

/// The stage folders of one pipeline output folder.
pub struct StageStore<'a> {
    root: PathBuf,
    pub records: Vec<StageRecord>,
    before_commit: Option<BeforeCommit<'a>>,
}

impl<'a> StageStore<'a> {
    /// The store under `<out>/stages`.
    pub fn new(out: &Path) -> Self {
        Self {
            root: out.join("stages"),
            records: Vec::new(),
            before_commit: None,
        }
    }

    pub fn with_before_commit(mut self, hook: Option<BeforeCommit<'a>>) -> Self {
        self.before_commit = hook;
        self
    }

    /// The folder of stage `name` (`train/plain` is `stages/train-plain`).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name.replace('/', "-"))
    }

    /// The output of stage `key`: read back when its unit is complete with this key, otherwise
    /// computed by `run` (given the unit's temporary folder for any files of its own),
    /// committed, and read back. Reading back in both cases makes a resumed run's results equal
    /// an uninterrupted one's (the JSON round trip is exact).
    pub fn stage<T, F>(&mut self, key: &StageKey, obs: &mut dyn Observer, run: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Path, &mut dyn Observer) -> Result<T>,
    {
        let dir = self.dir(&key.name);
        let started = Instant::now();
        if atomic::marker(&dir).as_deref() == Some(key.hash.as_bytes()) {
            let out = read_output(&dir)?;
            obs.note(&format!("stage {}: up to date, skipped", key.name));
            self.records.push(StageRecord {
                name: key.name.clone(),
                hash: key.hash.clone(),
                status: StageStatus::Skipped,
                seconds: started.elapsed().as_secs_f64(),
            });
            return Ok(out);
        }
        // Between stages is a safe point: every stage before this one is committed, so a rerun
        // skips it. (Inside a stage, a cancelled run drops the stage's unfinished unit.)
        if obs.cancelled() {
            return Err(ExperimentError::cancelled(format!(
                "before stage {}",
                key.name
            )));
        }
        obs.note(&format!("stage {}: running", key.name));
        let unit = AtomicUnit::begin(&dir)?;
        let value = run(unit.path(), obs)?;
        let json = serde_json::to_vec_pretty(&value)
            .map_err(|e| ExperimentError::WriteConfig(format!("stage {}: {e}", key.name)))?;
        unit.write(OUTPUT_FILE, &json)?;
        if let Some(hook) = &self.before_commit {
            hook(&key.name, unit.path());
        }
        unit.commit(key.hash.as_bytes(), true)?;
        let out = read_output(&dir)?;
        let seconds = started.elapsed().as_secs_f64();
        obs.note(&format!("stage {}: done in {seconds:.1} s", key.name));
        self.records.push(StageRecord {
            name: key.name.clone(),
            hash: key.hash.clone(),
            status: StageStatus::Ran,
            seconds,
        });
        Ok(out)
    }
}

fn read_output<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join(OUTPUT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ExperimentError::ReadConfig {
        path: path.clone(),
        source,
    })?;
    crate::config::from_json_str(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::{NullObserver, Recorder};

    #[test]
    fn keys_change_with_the_section_and_with_upstream_keys_only() {
        let a = StageKey::new("data", &("embedded", 64), &[]).unwrap();
        assert_eq!(a, StageKey::new("data", &("embedded", 64), &[]).unwrap());
        let b = StageKey::new("data", &("embedded", 65), &[]).unwrap();
        assert_ne!(a.hash, b.hash);
        let t1 = StageKey::new("train/plain", &1, &[&a]).unwrap();
        let t2 = StageKey::new("train/plain", &1, &[&b]).unwrap();
        assert_ne!(t1.hash, t2.hash);
        assert_eq!(t1.hash.len(), 64);
    }

    #[test]
    fn a_finished_stage_is_skipped_and_a_changed_one_reruns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StageStore::new(dir.path());
        let k = StageKey::new("s", &1, &[]).unwrap();
        let mut calls = 0;
        let mut run = |x: f64| {
            calls += 1;
            move |_: &Path, _: &mut dyn Observer| {
                Ok(vec![x, f64::INFINITY]
                    .into_iter()
                    .map(crate::Num)
                    .collect::<Vec<_>>())
            }
        };
        let v: Vec<crate::Num> = store.stage(&k, &mut NullObserver, run(0.1)).unwrap();
        assert_eq!(v[0].0, 0.1);
        assert!(v[1].0.is_infinite());
        let mut rec = Recorder::default();
        let again: Vec<crate::Num> = store.stage(&k, &mut rec, run(0.2)).unwrap();
        assert_eq!(again, v, "skipped: the stored output, not a recomputation");
        assert!(rec.notes[0].contains("skipped"));
        let k2 = StageKey::new("s", &2, &[]).unwrap();
        let w: Vec<crate::Num> = store.stage(&k2, &mut NullObserver, run(0.3)).unwrap();
        assert_eq!(w[0].0, 0.3);
        assert_eq!(calls, 3, "closures built");
        let status: Vec<StageStatus> = store.records.iter().map(|r| r.status).collect();
        assert_eq!(
            status,
            [StageStatus::Ran, StageStatus::Skipped, StageStatus::Ran]
        );
    }

    #[test]
    fn a_failed_stage_leaves_no_unit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StageStore::new(dir.path());
        let k = StageKey::new("s", &1, &[]).unwrap();
        let r: Result<u32> = store.stage(&k, &mut NullObserver, |_, _| {
            crate::error::invalid("x", 1, "fails")
        });
        assert!(r.is_err());
        assert!(!atomic::is_complete(&store.dir("s")));
        assert_eq!(
            std::fs::read_dir(dir.path().join("stages"))
                .unwrap()
                .count(),
            0
        );
    }
}
