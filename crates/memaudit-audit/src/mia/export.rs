//! Per-example scores as CSV and `.npy`, and the ROC of each attack as CSV (for a log-log plot).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::MiaReport;
use super::data::ScoreSet;
use super::error::{MiaError, Result};

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MiaError + '_ {
    move |source| MiaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `scores.csv`: one row per example: `example`, `member` and `class` when known, then one
/// column per attack (higher = member).
pub fn write_scores_csv(path: &Path, report: &MiaReport, set: &ScoreSet) -> Result<()> {
    let err = io_err(path);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(&err)?);
    let mut header = vec!["example".to_string()];
    if set.target_in().is_some() {
        header.push("member".into());
    }
    if set.class().is_some() {
        header.push("class".into());
    }
    header.extend(report.attacks.iter().map(|a| a.attack.name().to_string()));
    writeln!(w, "{}", header.join(",")).map_err(&err)?;
    for i in 0..set.n() {
        let mut row = vec![i.to_string()];
        if let Some(m) = set.target_in() {
            row.push(u8::from(m[i]).to_string());
        }
        if let Some(c) = set.class() {
            row.push(c[i].to_string());
        }
        row.extend(report.attacks.iter().map(|a| format!("{:?}", a.scores[i])));
        writeln!(w, "{}", row.join(",")).map_err(&err)?;
    }
    w.flush().map_err(&err)
}

/// `scores-<attack>.npy` (float64, `[n]`) for each attack in `dir`; returns the paths written.
pub fn write_scores_npy(dir: &Path, report: &MiaReport) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for a in &report.attacks {
        let path = dir.join(format!("scores-{}.npy", a.attack.name()));
        npyz::to_file_1d(&path, a.scores.iter().copied()).map_err(io_err(&path))?;
        paths.push(path);
    }
    Ok(paths)
}

/// `roc.csv`: `attack,threshold,fpr,tpr` for every ROC point of every evaluated attack.
pub fn write_roc_csv(path: &Path, report: &MiaReport) -> Result<()> {
    let err = io_err(path);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(&err)?);
    writeln!(w, "attack,threshold,fpr,tpr").map_err(&err)?;
    for a in &report.attacks {
        if let Some(m) = &a.metrics {
            for ((t, f), p) in m.roc.thresholds.iter().zip(m.roc.fpr()).zip(m.roc.tpr()) {
                writeln!(w, "{},{t:?},{f:?},{p:?}", a.attack.name()).map_err(&err)?;
            }
        }
    }
    w.flush().map_err(&err)
}
