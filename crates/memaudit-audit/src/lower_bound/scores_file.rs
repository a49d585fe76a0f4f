//! Reading canary scores from a file: one number per line (blank lines skipped), or a NumPy
//! `.npy` vector (float64 or float32; read with `memaudit-data`'s `npyz`-based reader). Every
//! error names the file and the line (or element) so the file can be fixed.

use std::path::Path;

use super::error::{LowerBoundError, Result};

/// The scores in `path`: `.npy` by extension, else text with one number per line.
pub fn read_scores(path: &Path) -> Result<Vec<f64>> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let scores = if is_npy {
        read_npy_scores(path)?
    } else {
        let text = std::fs::read_to_string(path).map_err(|source| LowerBoundError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse_scores(&text, path)?
    };
    if scores.is_empty() {
        return Err(LowerBoundError::ScoreFile {
            path: path.to_path_buf(),
            reason: "no scores in the file (expected one number per line, or a .npy vector)".into(),
        });
    }
    Ok(scores)
}

/// One finite number per line; blank lines are skipped; anything else is an error naming the
/// 1-based line.
pub fn parse_scores(text: &str, path: &Path) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let bad = |reason: String| LowerBoundError::ScoreLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let x: f64 = t.parse().map_err(|_| {
            bad(format!(
                "{t:?} is not a number (expected one number per line)"
            ))
        })?;
        if !x.is_finite() {
            return Err(bad(format!(
                "{t} is not finite; every score must be a finite number"
            )));
        }
        out.push(x);
    }
    Ok(out)
}

fn read_npy_scores(path: &Path) -> Result<Vec<f64>> {
    let (shape, values) =
        memaudit_data::images::read_npy_f64(path).map_err(|source| LowerBoundError::Npy {
            path: path.to_path_buf(),
            source,
        })?;
    let vector = shape.len() == 1 || (shape.len() == 2 && (shape[0] == 1 || shape[1] == 1));
    if !vector {
        return Err(LowerBoundError::ScoreFile {
            path: path.to_path_buf(),
            reason: format!("array of shape {shape:?}; expected a vector of scores"),
        });
    }
    if let Some((i, x)) = values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(LowerBoundError::ScoreFile {
            path: path.to_path_buf(),
            reason: format!("element {i} is {x}; every score must be a finite number"),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_parsed_and_errors_name_the_line() {
        let p = Path::new("s.txt");
        assert_eq!(
            parse_scores("1\n\n -2.5 \n3e-1\n", p).unwrap(),
            vec![1.0, -2.5, 0.3]
        );
        let e = parse_scores("1\nabc\n", p).unwrap_err().to_string();
        assert!(
            e.contains("s.txt, line 2") && e.contains("not a number"),
            "{e}"
        );
        for bad in ["NaN", "inf", "-infinity"] {
            let e = parse_scores(&format!("0.5\n0.1\n{bad}\n"), p)
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 3") && e.contains("not finite"), "{e}");
        }
    }

    #[test]
    fn files_empty_npy_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let e = read_scores(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("no scores"), "{e}");
        let missing = dir.path().join("missing.txt");
        assert!(matches!(
            read_scores(&missing),
            Err(LowerBoundError::Io { .. })
        ));
        // A float64 vector .npy, written by hand (header padded to 64 bytes as NumPy does).
        let npy = dir.path().join("s.npy");
        std::fs::write(&npy, npy_bytes(&[0.5, -1.0, 2.0])).unwrap();
        assert_eq!(read_scores(&npy).unwrap(), vec![0.5, -1.0, 2.0]);
        std::fs::write(&npy, npy_bytes(&[0.5, f64::NAN])).unwrap();
        let e = read_scores(&npy).unwrap_err().to_string();
        assert!(e.contains("element 1"), "{e}");
    }

    /// A NumPy 1.0-format .npy file holding a little-endian float64 vector.
    pub(crate) fn npy_bytes(v: &[f64]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
            v.len()
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        for x in v {
            out.extend(x.to_le_bytes());
        }
        out
    }
}
