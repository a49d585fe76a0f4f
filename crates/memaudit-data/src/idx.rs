//! IDX files (LeCun's MNIST format), gzipped or not.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only one MNIST-style image and
//! label files use), the number of dimensions, then each dimension as a big-endian u32, then the
//! data in C order. A file that starts with the gzip magic `1f 8b` is decompressed first.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::fsutil::read_file;

/// An unsigned-byte IDX array: `dims` and the data in C order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file (gzipped or not, detected by its first two bytes).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_file(path)?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::BadIdx {
                path: path.to_path_buf(),
                reason: format!("gzip data is damaged or truncated ({e})"),
            })?;
        out
    } else {
        bytes
    };
    parse_idx(&bytes, path)
}

/// Parse IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let bad = |reason: String| DataError::BadIdx {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "IDX header".into(),
            expected: 4,
            found: bytes.len() as u64,
        });
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic starts {:02x} {:02x}, expected 00 00",
            bytes[0], bytes[1]
        )));
    }
    let dtype = bytes[2];
    if dtype != 0x08 {
        let name = match dtype {
            0x09 => "signed byte",
            0x0B => "i16",
            0x0C => "i32",
            0x0D => "f32",
            0x0E => "f64",
            _ => "unknown",
        };
        return Err(bad(format!(
            "data type 0x{dtype:02x} ({name}); only unsigned byte (0x08) is supported"
        )));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(bad("zero dimensions".into()));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "IDX header".into(),
            expected: header as u64,
            found: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header;
    if found < count {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: format!("data for dimensions {dims:?}"),
            expected: count as u64,
            found: found as u64,
        });
    }
    if found > count {
        return Err(bad(format!(
            "{} bytes after the data for dimensions {dims:?}",
            found - count
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encode an unsigned-byte IDX array (for tests and for writing small fixtures).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
