//! Shards by index: one slice of a job that a scheduler runs as one task of an array
//! (Slurm job arrays, Kubernetes Indexed Jobs, AWS Batch array jobs), written as an atomic unit
//! ([`crate::atomic`]) so that a rerun skips finished shards and a failed shard leaves nothing a
//! merge would use.
//!
//! Why the count never comes from the scheduler: Slurm exports `SLURM_ARRAY_TASK_COUNT`, but a
//! resubmission of only the failed tasks (`--array=3`) or a step array (`--array=0-15:4`) changes
//! it, and with it which work each index does. The work of shard I must be a pure function of
//! (config, I, N), so N is always given explicitly (`--shard I/N`, or `--shards N` with the index
//! from the environment); Kubernetes does not export the count at all.
//!
//! Layout of a shard folder `DIR`: `DIR/shard-<I>-of-<N>/` per finished shard, each holding
//! `shard.json` ([`ShardHeader`] plus the job's payload) and the `COMPLETE` marker whose content
//! is the header's job key. [`scan`] reads them back for a merge and refuses a folder holding
//! shards of different jobs, versions or counts, naming the missing indices.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, AtomicUnit};

/// The environment variables that carry a task's array index, in the order they are consulted.
pub const INDEX_VARIABLES: [&str; 3] = [
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// The file each shard unit holds.
pub const SHARD_FILE: &str = "shard.json";

/// Errors of shard selection and of merging shard folders.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{flag} {value:?}: expected I/N with whole numbers, e.g. 3/16")]
    BadSpec { flag: &'static str, value: String },
    #[error("{flag}: the shard count N must be at least 1")]
    ZeroCount { flag: &'static str },
    #[error("{flag}: shard index {index} is out of range for {count} shards (0..={max})", max = count - 1)]
    IndexOutOfRange {
        flag: &'static str,
        index: u64,
        count: u64,
    },
    #[error("{var}={value:?} is not a shard index (a whole number)")]
    EnvNotNumber { var: &'static str, value: String },
    #[error(
        "--shards {count}: no shard index; pass --shard I/{count}, or run as an array task \
         (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX)"
    )]
    NoIndex { count: u64 },
    #[error("{}: {what}", path.display())]
    Unreadable { path: PathBuf, what: String },
    #[error("{}: no finished shards in this folder", dir.display())]
    Empty { dir: PathBuf },
    #[error(
        "{}: shards of different jobs in one folder ({first}; {other}); merge one job's shards at a time",
        dir.display()
    )]
    Mixed {
        dir: PathBuf,
        /// The first shard and what identifies its job.
        first: String,
        /// A shard of another job.
        other: String,
    },
    #[error("{}: {missing_count} of {count} shards are missing or unfinished: indices {list}", dir.display(), list = fmt_indices(missing))]
    Missing {
        dir: PathBuf,
        count: u64,
        missing_count: usize,
        missing: Vec<u64>,
    },
    #[error(transparent)]
    Engine(#[from] Box<crate::EngineError>),
}

fn fmt_indices(v: &[u64]) -> String {
    let shown: Vec<String> = v.iter().take(20).map(|i| i.to_string()).collect();
    if v.len() > 20 {
        format!("{}, ... ({} in all)", shown.join(", "), v.len())
    } else {
        shown.join(", ")
    }
}

/// Shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole job as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parse `I/N` (the value of `flag`, named in errors).
    pub fn parse(flag: &'static str, value: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::BadSpec {
            flag,
            value: value.to_string(),
        };
        let (i, n) = value.split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        Self::new(flag, index, count)
    }

    /// Shard `index` of `count`, checked.
    pub fn new(flag: &'static str, index: u64, count: u64) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::ZeroCount { flag });
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { flag, index, count });
        }
        Ok(Self { index, count })
    }

    /// The shard a task runs: `--shard I/N` when given; otherwise, with `--shards N`, the index
    /// from the first of [`INDEX_VARIABLES`] that is set (read through `env`, so tests need not
    /// touch the process environment). `None` when neither flag is given (an unsharded run).
    /// `--shards N` with N > 1 and no index fails loudly rather than running all the work N
    /// times; `--shards 1` alone is the whole job.
    pub fn resolve(
        shard: Option<&str>,
        shards: Option<u64>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ShardError> {
        if let Some(s) = shard {
            let parsed = Self::parse("--shard", s)?;
            if let Some(n) = shards
                && n != parsed.count
            {
                return Err(ShardError::BadSpec {
                    flag: "--shard",
                    value: format!("{s} (but --shards {n})"),
                });
            }
            return Ok(Some(parsed));
        }
        let Some(count) = shards else {
            return Ok(None);
        };
        if count == 0 {
            return Err(ShardError::ZeroCount { flag: "--shards" });
        }
        for var in INDEX_VARIABLES {
            if let Some(v) = env(var) {
                let index: u64 = v.trim().parse().map_err(|_| ShardError::EnvNotNumber {
                    var,
                    value: v.clone(),
                })?;
                return Self::new(var, index, count).map(Some);
            }
        }
        if count == 1 {
            return Ok(Some(Self::WHOLE));
        }
        Err(ShardError::NoIndex { count })
    }

    /// The contiguous part of `0..total` this shard owns: `[total*I/N, total*(I+1)/N)`. The parts
    /// of all shards tile `0..total` exactly, and differ in size by at most one.
    pub fn range(&self, total: u64) -> std::ops::Range<u64> {
        let lo = (total as u128 * self.index as u128 / self.count as u128) as u64;
        let hi = (total as u128 * (self.index + 1) as u128 / self.count as u128) as u64;
        lo..hi
    }

    /// The unit folder of this shard inside `dir`.
    pub fn unit_dir(&self, dir: &Path) -> PathBuf {
        dir.join(format!("shard-{}-of-{}", self.index, self.count))
    }
}

/// What identifies a shard's job: the kind of work, a key that hashes everything the work depends
/// on (the config and its inputs), the program version and the shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHeader {
    /// The kind of job (`"exposure"`, `"mia-shadows"`, ...).
    pub job: String,
    /// Hash of the job's config and inputs; shards of one job share it.
    pub key: String,
    /// The memaudit version that wrote the shard.
    pub version: String,
    pub shard: Shard,
}

/// A finished shard read back: its header and its payload (the job's own JSON).
#[derive(Clone, Debug)]
pub struct FinishedShard {
    pub header: ShardHeader,
    pub payload: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct ShardFile {
    #[serde(flatten)]
    header: ShardHeader,
    payload: serde_json::Value,
}

/// Whether shard `header.shard` of this job is already finished in `dir` (a rerun skips it). A
/// finished unit of a different job or version at that place is an error, never reused.
pub fn finished(dir: &Path, header: &ShardHeader) -> Result<bool, ShardError> {
    let unit = header.shard.unit_dir(dir);
    if !atomic::is_complete(&unit) {
        return Ok(false);
    }
    let found = read_unit(&unit)?;
    if found.header != *header {
        return Err(ShardError::Unreadable {
            path: unit,
            what: format!(
                "a finished shard of another job is here (key {} version {}, this job is key {} version {}); \
                 use a fresh folder",
                found.header.key, found.header.version, header.key, header.version
            ),
        });
    }
    Ok(true)
}

/// Write a finished shard as an atomic unit; the marker holds the job key. Crashing before the
/// rename leaves only a temporary folder, which [`scan`] ignores and the next writer removes.
/// `before_commit` runs after the result is written and before the rename: the CLI's test-only
/// fault injection aborts there, as a task killed mid-write would.
pub fn write(
    dir: &Path,
    header: &ShardHeader,
    payload: serde_json::Value,
    before_commit: impl FnOnce(Shard),
) -> Result<PathBuf, ShardError> {
    let unit_dir = header.shard.unit_dir(dir);
    let eng = |e: crate::EngineError| ShardError::Engine(Box::new(e));
    let unit = AtomicUnit::begin(&unit_dir).map_err(eng)?;
    let body = serde_json::to_vec_pretty(&ShardFile {
        header: header.clone(),
        payload,
    })
    .expect("a JSON value serialises");
    unit.write(SHARD_FILE, &body).map_err(eng)?;
    before_commit(header.shard);
    unit.commit(header.key.as_bytes(), true).map_err(eng)
}

fn read_unit(unit: &Path) -> Result<FinishedShard, ShardError> {
    let p = unit.join(SHARD_FILE);
    let bytes = fs::read(&p).map_err(|e| ShardError::Unreadable {
        path: p.clone(),
        what: e.to_string(),
    })?;
    let f: ShardFile = serde_json::from_slice(&bytes).map_err(|e| ShardError::Unreadable {
        path: p.clone(),
        what: format!("not a shard result: {e}"),
    })?;
    let marker = atomic::marker(unit).unwrap_or_default();
    if marker != f.header.key.as_bytes() {
        return Err(ShardError::Unreadable {
            path: unit.to_path_buf(),
            what: "its completion marker does not match its job key".into(),
        });
    }
    Ok(FinishedShard {
        header: f.header,
        payload: f.payload,
    })
}

/// Read every finished shard in `dir` for a merge, ordered by index. Refuses shards of different
/// jobs, keys, versions or counts in one folder, and names the missing indices. Temporary folders
/// of failed or running shards are ignored.
pub fn scan(dir: &Path) -> Result<Vec<FinishedShard>, ShardError> {
    let entries = fs::read_dir(dir).map_err(|e| ShardError::Unreadable {
        path: dir.to_path_buf(),
        what: e.to_string(),
    })?;
    let mut found: Vec<(String, FinishedShard)> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| ShardError::Unreadable {
            path: dir.to_path_buf(),
            what: e.to_string(),
        })?;
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("shard-") || !atomic::is_complete(&e.path()) {
            continue;
        }
        found.push((name, read_unit(&e.path())?));
    }
    found.sort_by_key(|(_, s)| s.header.shard.index);
    let Some((first_name, first)) = found.first() else {
        return Err(ShardError::Empty {
            dir: dir.to_path_buf(),
        });
    };
    for (name, s) in &found[1..] {
        let (a, b) = (&first.header, &s.header);
        if a.job != b.job
            || a.key != b.key
            || a.version != b.version
            || a.shard.count != b.shard.count
        {
            let describe = |name: &str, h: &ShardHeader| {
                format!(
                    "{name} is {} key {} version {} N={}",
                    h.job, h.key, h.version, h.shard.count
                )
            };
            return Err(ShardError::Mixed {
                dir: dir.to_path_buf(),
                first: describe(first_name, a),
                other: describe(name, b),
            });
        }
    }
    let count = first.header.shard.count;
    let mut have = vec![false; count as usize];
    for (name, s) in &found {
        let i = s.header.shard.index;
        if i >= count
            || s.header
                .shard
                .unit_dir(dir)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                != Some(name.clone())
        {
            return Err(ShardError::Unreadable {
                path: dir.join(name),
                what: format!(
                    "its header says shard {}, which does not match its folder name",
                    s.header.shard
                ),
            });
        }
        have[i as usize] = true;
    }
    let missing: Vec<u64> = (0..count).filter(|&i| !have[i as usize]).collect();
    if !missing.is_empty() {
        return Err(ShardError::Missing {
            dir: dir.to_path_buf(),
            count,
            missing_count: missing.len(),
            missing,
        });
    }
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parse_and_check() {
        assert_eq!(
            Shard::parse("--shard", "3/16").unwrap(),
            Shard {
                index: 3,
                count: 16
            }
        );
        assert!(matches!(
            Shard::parse("--shard", "16/16"),
            Err(ShardError::IndexOutOfRange {
                index: 16,
                count: 16,
                ..
            })
        ));
        assert!(matches!(
            Shard::parse("--shard", "0/0"),
            Err(ShardError::ZeroCount { .. })
        ));
        for bad in ["3", "a/2", "1/b", "-1/2", ""] {
            assert!(
                matches!(
                    Shard::parse("--shard", bad),
                    Err(ShardError::BadSpec { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolve_takes_the_index_from_the_scheduler_and_the_count_from_the_flag() {
        let slurm = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "5".to_string());
        assert_eq!(
            Shard::resolve(None, Some(8), slurm).unwrap(),
            Some(Shard { index: 5, count: 8 })
        );
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
        assert_eq!(
            Shard::resolve(None, Some(3), k8s).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        let aws = |v: &str| (v == "AWS_BATCH_JOB_ARRAY_INDEX").then(|| "0".to_string());
        assert_eq!(
            Shard::resolve(None, Some(2), aws).unwrap(),
            Some(Shard { index: 0, count: 2 })
        );
        // The explicit flag wins over the environment.
        assert_eq!(
            Shard::resolve(Some("1/8"), None, slurm).unwrap(),
            Some(Shard { index: 1, count: 8 })
        );
        assert_eq!(Shard::resolve(None, None, slurm).unwrap(), None);
        assert!(matches!(
            Shard::resolve(None, Some(4), no_env),
            Err(ShardError::NoIndex { count: 4 })
        ));
        assert_eq!(
            Shard::resolve(None, Some(1), no_env).unwrap(),
            Some(Shard::WHOLE)
        );
        let junk = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "x7".to_string());
        assert!(matches!(
            Shard::resolve(None, Some(8), junk),
            Err(ShardError::EnvNotNumber { .. })
        ));
        assert!(matches!(
            Shard::resolve(None, Some(4), slurm),
            Err(ShardError::IndexOutOfRange {
                index: 5,
                count: 4,
                ..
            })
        ));
        assert!(matches!(
            Shard::resolve(None, Some(0), slurm),
            Err(ShardError::ZeroCount { .. })
        ));
        assert!(Shard::resolve(Some("1/8"), Some(4), no_env).is_err());
    }

    #[test]
    fn ranges_tile_the_work() {
        for total in [0u64, 1, 7, 10, 1000, 1_000_000_007] {
            for count in [1u64, 2, 3, 7, 16] {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next);
                    assert!(r.end - r.start <= total / count + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    fn header(i: u64, n: u64, key: &str) -> ShardHeader {
        ShardHeader {
            job: "test".into(),
            key: key.into(),
            version: "1".into(),
            shard: Shard { index: i, count: n },
        }
    }

    #[test]
    fn write_scan_skip_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(scan(d), Err(ShardError::Empty { .. })));
        for i in [0, 2] {
            assert!(!finished(d, &header(i, 3, "k")).unwrap());
            write(d, &header(i, 3, "k"), serde_json::json!({"i": i}), |_| {}).unwrap();
            assert!(finished(d, &header(i, 3, "k")).unwrap());
        }
        // A failed shard's temporary folder is ignored.
        fs::create_dir_all(d.join(".shard-1-of-3.tmp-1-0")).unwrap();
        match scan(d) {
            Err(ShardError::Missing { missing, .. }) => assert_eq!(missing, vec![1]),
            other => panic!("{other:?}"),
        }
        let msg = scan(d).unwrap_err().to_string();
        assert!(msg.contains("indices 1"), "{msg}");
        write(d, &header(1, 3, "k"), serde_json::json!({"i": 1}), |_| {}).unwrap();
        let all = scan(d).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].payload["i"], 2);
        // Another job's shard in the same folder.
        assert!(finished(d, &header(1, 3, "other")).is_err());
        let other = tempfile::tempdir().unwrap();
        write(
            other.path(),
            &header(0, 2, "k"),
            serde_json::json!({}),
            |_| {},
        )
        .unwrap();
        write(
            other.path(),
            &header(1, 3, "k"),
            serde_json::json!({}),
            |_| {},
        )
        .unwrap();
        assert!(matches!(scan(other.path()), Err(ShardError::Mixed { .. })));
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), &header(0, 2, "k"), serde_json::json!({}), |_| {}).unwrap();
        let mut h = header(1, 2, "k");
        h.version = "2".into();
        write(v2.path(), &h, serde_json::json!({}), |_| {}).unwrap();
        let msg = scan(v2.path()).unwrap_err().to_string();
        assert!(msg.contains("different jobs"), "{msg}");
    }
}
