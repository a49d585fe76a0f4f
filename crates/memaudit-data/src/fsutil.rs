//! File helpers shared by the loaders: read whole files with errors that say what is wrong, and
//! write files atomically (temporary file in the same folder, then rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::error::{DataError, Result};

/// Read a whole file; a missing path or a folder gets its own error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    ensure_file(path)?;
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Fail unless `path` exists and is not a folder.
pub fn ensure_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(DataError::IsADirectory {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Hex MD5 of a byte slice.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Hex MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> Result<String> {
    ensure_file(path)?;
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Md5::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DataError::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, flushed, then renamed
/// over the target, so a reader sees either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

/// `dir/.name.tmp-<pid>`: hidden, unique per process, in the target's folder (same file system,
/// so the final rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
