//! The score-file format (`docs/mia.md`): a NumPy `.npz` (as `np.savez` or `np.savez_compressed`
//! write it) holding
//!
//! | array | shape / dtype | |
//! |---|---|---|
//! | `target` | [n, q] float32/float64 | the target's signal |
//! | `shadow` | [k, n, q] float | each shadow model's signal |
//! | `shadow_in` | [k, n] bool | which shadow models trained on each example |
//! | `target_in` | `[n]` bool, optional | the target's membership (for evaluation) |
//! | `population_target` | [n_z, q] float, optional | RMIA's population points |
//! | `population_shadow` | [k, n_z, q] float, optional | |
//! | `signal_kind` | string, optional | `logit_confidence` (default), `probability`, `log_likelihood` |
//! | `class` | `[n]` integer, optional | per-class results |
//! | `token_logprob` | [n, L] float, optional | per-token log-probs, NaN-padded (Min-K%, zlib) |
//! | `text` | [n, L] uint8, optional | each example's bytes, zero-padded (zlib) |
//!
//! Read through the `zip` crate and `npyz`'s `.npy` reader (see the crate's Cargo.toml for why
//! not `npyz`'s own npz feature).

use std::io::{Read, Seek, Write};
use std::path::Path;

use npyz::{DType, NpyFile, TypeChar, WriterBuilder};

use super::data::{Population, ScoreSet};
use super::error::{MiaError, Result};
use super::signals::SignalKind;

/// One array as read: its shape and values widened to f64 (floats, ints, bools) or strings.
enum Values {
    Float(Vec<f64>),
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Str(Vec<String>),
    /// A dtype no array of the format uses (complex, object, records...).
    Other,
}

struct Array {
    shape: Vec<usize>,
    dtype: String,
    values: Values,
}

fn read_array<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &str,
    name: &'static str,
) -> Result<Option<Array>> {
    let file_name = format!("{name}.npy");
    let entry = match zip.by_name(&file_name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(source) => {
            return Err(MiaError::Zip {
                path: path.into(),
                source,
            });
        }
    };
    let npy = NpyFile::new(entry).map_err(|e| MiaError::Npz {
        path: path.into(),
        reason: format!("array `{name}` is not a readable .npy ({e})"),
    })?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(MiaError::FortranOrder {
            array: name.into(),
            shape,
        });
    }
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let bad = |e: std::io::Error| MiaError::Npz {
        path: path.into(),
        reason: format!("array `{name}` ({descr}, shape {shape:?}): {e}"),
    };
    let values = match &dtype {
        DType::Plain(ts) => match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 4) => Values::Float(
                npy.into_vec::<f32>()
                    .map_err(bad)?
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            ),
            (TypeChar::Float, 8) => Values::Float(npy.into_vec::<f64>().map_err(bad)?),
            (TypeChar::Bool, _) => Values::Bool(npy.into_vec::<bool>().map_err(bad)?),
            (TypeChar::Int, 1) => Values::Int(widen(npy.into_vec::<i8>().map_err(bad)?)),
            (TypeChar::Int, 2) => Values::Int(widen(npy.into_vec::<i16>().map_err(bad)?)),
            (TypeChar::Int, 4) => Values::Int(widen(npy.into_vec::<i32>().map_err(bad)?)),
            (TypeChar::Int, 8) => Values::Int(npy.into_vec::<i64>().map_err(bad)?),
            (TypeChar::Uint, 1) => Values::Int(widen(npy.into_vec::<u8>().map_err(bad)?)),
            (TypeChar::Uint, 2) => Values::Int(widen(npy.into_vec::<u16>().map_err(bad)?)),
            (TypeChar::Uint, 4) => Values::Int(widen(npy.into_vec::<u32>().map_err(bad)?)),
            (TypeChar::UnicodeStr | TypeChar::ByteStr, _) => {
                Values::Str(npy.into_vec::<String>().map_err(bad)?)
            }
            _ => Values::Other,
        },
        _ => Values::Other,
    };
    Ok(Some(Array {
        shape,
        dtype: descr,
        values,
    }))
}

fn widen<T: Into<i64>>(v: Vec<T>) -> Vec<i64> {
    v.into_iter().map(Into::into).collect()
}

fn dtype_error(name: &str, a: &Array, expected: &'static str) -> MiaError {
    MiaError::Dtype {
        array: name.into(),
        shape: a.shape.clone(),
        found: a.dtype.clone(),
        expected,
    }
}

fn floats(
    name: &'static str,
    a: Array,
    ndim: usize,
    expected: &str,
) -> Result<(Vec<usize>, Vec<f64>)> {
    if a.shape.len() != ndim {
        return Err(MiaError::Shape {
            array: name.into(),
            found: a.shape,
            expected: expected.into(),
        });
    }
    match a.values {
        Values::Float(v) => Ok((a.shape, v)),
        _ => Err(dtype_error(name, &a, "float32 or float64")),
    }
}

fn bools(
    name: &'static str,
    a: Array,
    expected_shape: &[usize],
    expected: &str,
) -> Result<Vec<bool>> {
    if a.shape != expected_shape {
        return Err(MiaError::Shape {
            array: name.into(),
            found: a.shape,
            expected: expected.into(),
        });
    }
    match a.values {
        Values::Bool(v) => Ok(v),
        _ => Err(dtype_error(name, &a, "bool")),
    }
}

fn required(
    path: &str,
    array: &'static str,
    what: &'static str,
    a: Option<Array>,
) -> Result<Array> {
    a.ok_or(MiaError::MissingArray {
        path: path.into(),
        array,
        what,
    })
}

/// Read a score file.
pub fn read_score_file(path: &Path) -> Result<ScoreSet> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| MiaError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|source| MiaError::Zip {
            path: shown.clone(),
            source,
        })?;
    let p = shown.as_str();
    let target = required(
        p,
        "target",
        "[n, q] float: the target's signal",
        read_array(&mut zip, p, "target")?,
    )?;
    let (tshape, target) = floats("target", target, 2, "[n, q]")?;
    let (n, q) = (tshape[0], tshape[1]);
    let shadow = required(
        p,
        "shadow",
        "[k, n, q] float: the shadow models' signal",
        read_array(&mut zip, p, "shadow")?,
    )?;
    let expected = format!("[k, n, q] with n = {n}, q = {q} (from `target` {tshape:?})");
    let (sshape, shadow) = floats("shadow", shadow, 3, &expected)?;
    if sshape[1] != n || sshape[2] != q {
        return Err(MiaError::Shape {
            array: "shadow".into(),
            found: sshape,
            expected,
        });
    }
    let k = sshape[0];
    let shadow_in = required(
        p,
        "shadow_in",
        "[k, n] bool: which shadow models trained on each example",
        read_array(&mut zip, p, "shadow_in")?,
    )?;
    let shadow_in = bools(
        "shadow_in",
        shadow_in,
        &[k, n],
        &format!("[k, n] = [{k}, {n}] (from `shadow` {sshape:?})"),
    )?;
    let signal_kind = match read_array(&mut zip, p, "signal_kind")? {
        None => SignalKind::default(),
        Some(a) => {
            let shape = a.shape.clone();
            match a.values {
                Values::Str(s) if s.len() == 1 => {
                    SignalKind::parse(s[0].trim()).ok_or(MiaError::UnknownSignalKind {
                        found: s[0].clone(),
                    })?
                }
                Values::Str(_) => {
                    return Err(MiaError::Shape {
                        array: "signal_kind".into(),
                        found: shape,
                        expected: "a single string (shape [])".into(),
                    });
                }
                _ => return Err(dtype_error("signal_kind", &a, "a string")),
            }
        }
    };
    let mut set = ScoreSet::new(n, q, target, k, shadow, shadow_in, signal_kind)?;
    if let Some(a) = read_array(&mut zip, p, "target_in")? {
        set = set.with_target_in(bools("target_in", a, &[n], &format!("[n] = [{n}]"))?)?;
    }
    let pt = read_array(&mut zip, p, "population_target")?;
    let ps = read_array(&mut zip, p, "population_shadow")?;
    match (pt, ps) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(MiaError::MissingArray {
                path: shown,
                array: "population_shadow",
                what: "[k, n_z, q] float: needed with `population_target`",
            });
        }
        (None, Some(_)) => {
            return Err(MiaError::MissingArray {
                path: shown,
                array: "population_target",
                what: "[n_z, q] float: needed with `population_shadow`",
            });
        }
        (Some(t), Some(s)) => {
            let (pts, pt) = floats("population_target", t, 2, &format!("[n_z, q] with q = {q}"))?;
            if pts[1] != q {
                return Err(MiaError::Shape {
                    array: "population_target".into(),
                    found: pts,
                    expected: format!("[n_z, q] with q = {q} (from `target`)"),
                });
            }
            let nz = pts[0];
            let expected = format!("[k, n_z, q] = [{k}, {nz}, {q}]");
            let (pss, ps) = floats("population_shadow", s, 3, &expected)?;
            if pss != [k, nz, q] {
                return Err(MiaError::Shape {
                    array: "population_shadow".into(),
                    found: pss,
                    expected,
                });
            }
            set = set.with_population(Population {
                n: nz,
                target: pt,
                shadow: ps,
            })?;
        }
    }
    if let Some(a) = read_array(&mut zip, p, "class")? {
        if a.shape != [n] {
            return Err(MiaError::Shape {
                array: "class".into(),
                found: a.shape,
                expected: format!("[n] = [{n}]"),
            });
        }
        match a.values {
            Values::Int(v) => set = set.with_class(v)?,
            _ => return Err(dtype_error("class", &a, "an integer type")),
        }
    }
    if let Some(a) = read_array(&mut zip, p, "token_logprob")? {
        let (shape, v) = floats("token_logprob", a, 2, &format!("[n, L] with n = {n}"))?;
        if shape[0] != n {
            return Err(MiaError::Shape {
                array: "token_logprob".into(),
                found: shape,
                expected: format!("[n, L] with n = {n} (from `target`)"),
            });
        }
        let l = shape[1];
        let rows = (0..n)
            .map(|i| {
                v[i * l..(i + 1) * l]
                    .iter()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .collect()
            })
            .collect();
        set = set.with_token_logprob(rows)?;
    }
    if let Some(a) = read_array(&mut zip, p, "text")? {
        if a.shape.len() != 2 || a.shape[0] != n {
            return Err(MiaError::Shape {
                array: "text".into(),
                found: a.shape,
                expected: format!("[n, L] uint8 with n = {n}"),
            });
        }
        let l = a.shape[1];
        match a.values {
            Values::Int(v) if a.dtype.contains("u1") => {
                let rows = (0..n)
                    .map(|i| {
                        let mut row: Vec<u8> =
                            v[i * l..(i + 1) * l].iter().map(|&b| b as u8).collect();
                        while row.last() == Some(&0) {
                            row.pop();
                        }
                        row
                    })
                    .collect();
                set = set.with_text(rows)?;
            }
            _ => return Err(dtype_error("text", &a, "uint8")),
        }
    }
    Ok(set)
}

fn write_npy<W: Write + Seek, T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    zip: &mut zip::ZipWriter<W>,
    name: &str,
    shape: &[u64],
    data: &[T],
) -> std::io::Result<()> {
    zip.start_file(
        format!("{name}.npy"),
        zip::write::SimpleFileOptions::default(),
    )
    .map_err(std::io::Error::other)?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut *zip)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}

/// Write a score set in the score-file format (memaudit's own shadow runs save their signals
/// this way, so `mia --scores` can re-attack them).
pub fn write_score_file(path: &Path, set: &ScoreSet) -> Result<()> {
    let shown = path.display().to_string();
    let io = |source: std::io::Error| MiaError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let (n, q, k) = (set.n() as u64, set.queries() as u64, set.shadows() as u64);
    let target: Vec<f64> = (0..set.n())
        .flat_map(|i| (0..set.queries()).map(move |j| (i, j)))
        .map(|(i, j)| set.target(i, j))
        .collect();
    write_npy(&mut zip, "target", &[n, q], &target).map_err(io)?;
    let mut shadow = Vec::with_capacity((k * n * q) as usize);
    let mut shadow_in = Vec::with_capacity((k * n) as usize);
    for m in 0..set.shadows() {
        for i in 0..set.n() {
            shadow_in.push(set.is_in(m, i));
            for j in 0..set.queries() {
                shadow.push(set.shadow(m, i, j));
            }
        }
    }
    write_npy(&mut zip, "shadow", &[k, n, q], &shadow).map_err(io)?;
    write_npy(&mut zip, "shadow_in", &[k, n], &shadow_in).map_err(io)?;
    if let Some(t) = set.target_in() {
        write_npy(&mut zip, "target_in", &[n], t).map_err(io)?;
    }
    if let Some(pop) = set.population() {
        let nz = pop.n as u64;
        write_npy(&mut zip, "population_target", &[nz, q], &pop.target).map_err(io)?;
        write_npy(&mut zip, "population_shadow", &[k, nz, q], &pop.shadow).map_err(io)?;
    }
    if let Some(c) = set.class() {
        write_npy(&mut zip, "class", &[n], c).map_err(io)?;
    }
    zip.start_file("signal_kind.npy", zip::write::SimpleFileOptions::default())
        .map_err(|source| MiaError::Zip {
            path: shown.clone(),
            source,
        })?;
    let kind = set.signal_kind().name().to_string();
    let mut w = npyz::WriteOptions::<String>::new()
        .dtype(DType::Plain(format!("<U{}", kind.len()).parse().map_err(
            |e| MiaError::Npz {
                path: shown.clone(),
                reason: format!("signal_kind dtype: {e}"),
            },
        )?))
        .shape(&[])
        .writer(&mut zip)
        .begin_nd()
        .map_err(io)?;
    w.push(&kind).map_err(io)?;
    w.finish().map_err(io)?;
    zip.finish().map_err(|source| MiaError::Zip {
        path: shown.clone(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npz");
        let set = ScoreSet::new(
            2,
            1,
            vec![0.5, -0.5],
            2,
            vec![1.0, 2.0, 3.0, 4.0],
            vec![true, false, false, true],
            SignalKind::Probability,
        )
        .unwrap()
        .with_target_in(vec![true, false])
        .unwrap()
        .with_class(vec![3, 7])
        .unwrap()
        .with_population(Population {
            n: 1,
            target: vec![0.1],
            shadow: vec![0.2, 0.3],
        })
        .unwrap();
        write_score_file(&path, &set).unwrap();
        assert_eq!(read_score_file(&path).unwrap(), set);
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = read_score_file(Path::new("/nonexistent/x.npz")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.npz"));
    }
}
