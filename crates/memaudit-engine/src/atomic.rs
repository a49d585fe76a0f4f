//! Atomic units: a folder that either exists complete or not at all, for results that take long
//! to compute and must survive a crash (shadow models in a cache; the trainer's checkpoints,
//! pipeline stages and scheduler shards can use the same mechanism).
//!
//! Protocol: write everything into a temporary sibling folder `.<name>.tmp-<pid>-<n>`, write the
//! completion marker `COMPLETE` last (its content identifies what the unit holds, e.g. a cache
//! key), fsync the files and the folder, rename the folder to `<name>`, fsync the parent. A unit
//! is complete iff `<name>/COMPLETE` exists. A crash at any point leaves either the old state or
//! a temporary folder, which [`AtomicUnit::begin`] removes (for that name) and readers ignore.
//!
//! A complete unit is never overwritten silently: [`AtomicUnit::commit`] refuses when `<name>`
//! is already complete, unless the caller asked to replace it.
//!
//! Files may sit in subfolders of a unit (`logs/metrics.csv`): every file is synced before the
//! marker is written. [`clean_stale_in`] removes every leftover temporary folder (or file) of a
//! parent folder at once, for a writer that owns the whole folder (a run's checkpoints).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{EngineError, Result};

/// The completion marker's file name.
pub const MARKER: &str = "COMPLETE";

fn io(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `dir` is a complete unit.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// The marker's content of a complete unit (`None` when incomplete or absent).
pub fn marker(dir: &Path) -> Option<Vec<u8>> {
    if !is_complete(dir) {
        return None;
    }
    fs::read(dir.join(MARKER)).ok()
}

fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Whether `name` is a leftover of an interrupted atomic write in its parent folder: a unit's
/// temporary folder (`.<name>.tmp-<pid>-<n>`) or an atomically written file's temporary copy
/// (`.<file>.tmp-<pid>`); older layouts named them `.tmp-<name>-<pid>`, which this also covers.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Remove every leftover of an interrupted atomic write directly under `parent` (see
/// [`is_temp_name`]); only for a parent that one writer owns (no concurrent writer's temporary
/// folder may be there). Returns how many were removed.
pub fn clean_stale_in(parent: &Path) -> Result<usize> {
    if !parent.is_dir() {
        return Ok(0);
    }
    let mut removed = 0;
    for e in fs::read_dir(parent).map_err(io(parent))? {
        let e = e.map_err(io(parent))?;
        if !is_temp_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            fs::remove_dir_all(&p).map_err(io(&p))?;
        } else {
            fs::remove_file(&p).map_err(io(&p))?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Remove unit `dir` atomically: rename it to a temporary name first (a crash then leaves a
/// leftover that [`clean_stale_in`] removes, never a half-deleted unit that still looks
/// complete), then delete it. Absent: nothing to do.
pub fn remove(dir: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    if !dir.exists() {
        return Ok(());
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let doomed = parent.join(format!(
        "{}{}-removed-{}",
        temp_prefix(&name.to_string_lossy()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::rename(dir, &doomed).map_err(io(dir))?;
    fs::remove_dir_all(&doomed).map_err(io(&doomed))
}

/// Remove temporary folders a crashed writer of unit `final_dir` left behind. Returns how many.
pub fn clean_stale(final_dir: &Path) -> Result<usize> {
    let (Some(parent), Some(name)) = (final_dir.parent(), final_dir.file_name()) else {
        return Ok(0);
    };
    if !parent.is_dir() {
        return Ok(0);
    }
    let prefix = temp_prefix(&name.to_string_lossy());
    let mut removed = 0;
    for e in fs::read_dir(parent).map_err(io(parent))? {
        let e = e.map_err(io(parent))?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let p = e.path();
            fs::remove_dir_all(&p).map_err(io(&p))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Sync every file under `dir`, subfolders included.
fn sync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
            fsync_dir(&p)?;
        } else if p.is_file() {
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io(&p))?;
        }
    }
    Ok(())
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes the rename durable; not every platform can open a folder for it.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))?;
    let _ = dir;
    Ok(())
}

/// A unit being written. Dropping it without [`commit`](AtomicUnit::commit) removes its
/// temporary folder.
#[derive(Debug)]
pub struct AtomicUnit {
    final_dir: PathBuf,
    tmp_dir: PathBuf,
    committed: bool,
}

impl AtomicUnit {
    /// Start writing unit `final_dir` (its parent is created). Stale temporary folders of the
    /// same unit are removed first; concurrent writers of one unit are not supported (one
    /// process per unit, as a scheduler shard is).
    pub fn begin(final_dir: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = final_dir
            .file_name()
            .ok_or_else(|| EngineError::Config(format!("{}: no folder name", final_dir.display())))?
            .to_string_lossy()
            .to_string();
        let parent = final_dir.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io(parent))?;
        clean_stale(final_dir)?;
        let tmp_dir = parent.join(format!(
            "{}{}-{}",
            temp_prefix(&name),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp_dir).map_err(io(&tmp_dir))?;
        Ok(Self {
            final_dir: final_dir.to_path_buf(),
            tmp_dir,
            committed: false,
        })
    }

    /// The temporary folder to write the unit's files into.
    pub fn path(&self) -> &Path {
        &self.tmp_dir
    }

    /// Write one file of the unit (synced to disk); `name` may name a subfolder (`logs/a.csv`).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        let p = self.tmp_dir.join(name);
        if let Some(parent) = p.parent().filter(|d| *d != self.tmp_dir) {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = fs::File::create(&p).map_err(io(&p))?;
        f.write_all(bytes).map_err(io(&p))?;
        f.sync_all().map_err(io(&p))?;
        Ok(p)
    }

    /// Finish: write the marker with `marker` as its content, fsync, rename into place.
    /// `replace`: an existing complete unit is replaced (otherwise that is an error).
    pub fn commit(mut self, marker: &[u8], replace: bool) -> Result<PathBuf> {
        // Files written by callers straight into path() (subfolders too) are synced here.
        sync_tree(&self.tmp_dir)?;
        self.write(MARKER, marker)?;
        fsync_dir(&self.tmp_dir)?;
        if self.final_dir.exists() {
            if is_complete(&self.final_dir) && !replace {
                return Err(EngineError::Config(format!(
                    "{}: a complete unit is already there; it is not overwritten",
                    self.final_dir.display()
                )));
            }
            // An incomplete folder at the final name (written by hand, or by an older layout),
            // or the unit being replaced.
            remove(&self.final_dir)?;
        }
        fs::rename(&self.tmp_dir, &self.final_dir).map_err(io(&self.final_dir))?;
        if let Some(parent) = self.final_dir.parent() {
            fsync_dir(parent)?;
        }
        self.committed = true;
        Ok(self.final_dir.clone())
    }
}

impl Drop for AtomicUnit {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_unit_is_complete_with_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("cache").join("model-1");
        assert!(!is_complete(&unit));
        let u = AtomicUnit::begin(&unit).unwrap();
        u.write("params.bin", &[1, 2, 3]).unwrap();
        let at = u.commit(b"key-1", false).unwrap();
        assert_eq!(at, unit);
        assert!(is_complete(&unit));
        assert_eq!(marker(&unit).unwrap(), b"key-1");
        assert_eq!(fs::read(unit.join("params.bin")).unwrap(), [1, 2, 3]);
        // Nothing else is left in the parent.
        assert_eq!(fs::read_dir(dir.path().join("cache")).unwrap().count(), 1);
        // A second commit to a complete unit is refused unless replacing.
        let u = AtomicUnit::begin(&unit).unwrap();
        assert!(u.commit(b"key-2", false).is_err());
        assert_eq!(marker(&unit).unwrap(), b"key-1");
        let u = AtomicUnit::begin(&unit).unwrap();
        u.commit(b"key-2", true).unwrap();
        assert_eq!(marker(&unit).unwrap(), b"key-2");
    }

    #[test]
    fn a_simulated_crash_leaves_no_unit_and_its_temp_folder_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("model-7");
        let u = AtomicUnit::begin(&unit).unwrap();
        u.write("params.bin", &[9; 16]).unwrap();
        let tmp = u.path().to_path_buf();
        // The process dies here: no commit, no destructor.
        std::mem::forget(u);
        assert!(tmp.is_dir());
        assert!(!is_complete(&unit) && !unit.exists());
        assert!(marker(&unit).is_none());
        // The next writer of the same unit removes the leftover and completes the unit.
        let u = AtomicUnit::begin(&unit).unwrap();
        assert!(!tmp.exists());
        u.write("params.bin", &[1]).unwrap();
        u.commit(b"k", false).unwrap();
        assert!(is_complete(&unit));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, vec!["model-7".to_string()]);
    }

    #[test]
    fn a_crash_before_the_rename_with_an_incomplete_final_folder_is_not_complete() {
        // A folder at the final name without the marker (e.g. copied by hand mid-way) is not a
        // unit, and a commit replaces it.
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("u");
        fs::create_dir_all(&unit).unwrap();
        fs::write(unit.join("params.bin"), b"partial").unwrap();
        assert!(!is_complete(&unit));
        let u = AtomicUnit::begin(&unit).unwrap();
        u.write("params.bin", b"full").unwrap();
        u.commit(b"k", false).unwrap();
        assert_eq!(fs::read(unit.join("params.bin")).unwrap(), b"full");
    }

    #[test]
    fn files_in_subfolders_are_part_of_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("step-1");
        let u = AtomicUnit::begin(&unit).unwrap();
        u.write("logs/metrics.csv", b"epoch\n1\n").unwrap();
        u.commit(b"k", false).unwrap();
        assert_eq!(
            fs::read(unit.join("logs/metrics.csv")).unwrap(),
            b"epoch\n1\n"
        );
    }

    #[test]
    fn clean_stale_in_removes_every_leftover_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        // Leftovers of three crashed writers: two units (one in an older layout) and a file.
        for u in ["a", "b"] {
            std::mem::forget({
                let u = AtomicUnit::begin(&dir.path().join(u)).unwrap();
                u.write("x", b"1").unwrap();
                u
            });
        }
        fs::create_dir(dir.path().join(".tmp-step-000000004-77")).unwrap();
        fs::write(dir.path().join(".latest.tmp-77"), b"step-4").unwrap();
        // What stays: complete units, ordinary files, other hidden names.
        AtomicUnit::begin(&dir.path().join("c"))
            .unwrap()
            .commit(b"k", false)
            .unwrap();
        fs::write(dir.path().join("latest"), b"c").unwrap();
        fs::write(dir.path().join(".keep"), b"").unwrap();
        assert_eq!(clean_stale_in(dir.path()).unwrap(), 4);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, [".keep", "c", "latest"]);
        assert!(is_complete(&dir.path().join("c")));
    }

    #[test]
    fn a_removal_interrupted_half_way_leaves_only_a_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("step-3");
        let u = AtomicUnit::begin(&unit).unwrap();
        u.write("a", b"1").unwrap();
        u.commit(b"k", false).unwrap();
        remove(&unit).unwrap();
        assert!(!unit.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // Half way: the folder was renamed, its deletion was cut short.
        let u = AtomicUnit::begin(&unit).unwrap();
        u.commit(b"k", false).unwrap();
        let doomed = dir.path().join(".step-3.tmp-1-removed-0");
        fs::rename(&unit, &doomed).unwrap();
        assert!(!is_complete(&unit));
        assert_eq!(clean_stale_in(dir.path()).unwrap(), 1);
        remove(&unit).unwrap();
    }

    #[test]
    fn dropping_an_unfinished_unit_removes_its_temp_folder() {
        let dir = tempfile::tempdir().unwrap();
        let u = AtomicUnit::begin(&dir.path().join("x")).unwrap();
        let tmp = u.path().to_path_buf();
        drop(u);
        assert!(!tmp.exists());
    }
}
