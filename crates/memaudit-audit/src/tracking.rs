//! Exposure-during-training bookkeeping: one record per canary per evaluation (epoch or step),
//! written as CSV or JSON for the run's report, and a histogram helper for the reference
//! log-perplexities. The training loop that fills it lives elsewhere.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AuditError, Result};

/// Exposure of one canary at one point of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExposureRecord {
    pub epoch: u32,
    pub step: u64,
    pub canary_id: String,
    pub repetitions: u32,
    /// Bits, summed over the scored tokens.
    pub log_perplexity: f64,
    /// Exact rank over R, when it was computed.
    pub rank: Option<u64>,
    pub exposure_exact: Option<f64>,
    pub exposure_interpolated: Option<f64>,
    pub exposure_extrapolated: Option<f64>,
}

/// All records of a run, in the order they were added.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExposureLog {
    pub records: Vec<ExposureRecord>,
}

impl ExposureLog {
    pub fn push(&mut self, r: ExposureRecord) {
        self.records.push(r);
    }

    /// Mean of a per-record value over the canaries with `repetitions`, per epoch (for plots).
    pub fn mean_by_epoch(
        &self,
        repetitions: u32,
        value: impl Fn(&ExposureRecord) -> Option<f64>,
    ) -> Vec<(u32, f64)> {
        let mut acc: std::collections::BTreeMap<u32, (f64, usize)> = Default::default();
        for r in self.records.iter().filter(|r| r.repetitions == repetitions) {
            if let Some(v) = value(r).filter(|v| v.is_finite()) {
                let e = acc.entry(r.epoch).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        acc.into_iter()
            .map(|(k, (s, n))| (k, s / n as f64))
            .collect()
    }

    /// CSV with a header row; empty optional values are empty cells.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let io = |e: csv::Error| AuditError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut w = csv::Writer::from_path(path).map_err(io)?;
        for r in &self.records {
            w.serialize(r).map_err(io)?;
        }
        w.flush().map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The CSV text `write_csv` writes, as bytes (for a caller that stores or writes it
    /// atomically itself).
    pub fn to_csv_bytes(&self) -> Result<Vec<u8>> {
        let fmt = |e: csv::Error| AuditError::Format {
            path: "exposure log".into(),
            reason: e.to_string(),
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &self.records {
            w.serialize(r).map_err(fmt)?;
        }
        w.into_inner().map_err(|e| AuditError::Format {
            path: "exposure log".into(),
            reason: e.to_string(),
        })
    }

    /// Parse CSV text written by `write_csv`/`to_csv_bytes`; `what` names it in errors.
    pub fn from_csv_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let mut r = csv::Reader::from_reader(bytes);
        let records = r
            .deserialize()
            .collect::<std::result::Result<Vec<ExposureRecord>, _>>()
            .map_err(|e| AuditError::Format {
                path: what.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self { records })
    }

    pub fn read_csv(path: &Path) -> Result<Self> {
        let io = |e: csv::Error| AuditError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut r = csv::Reader::from_path(path).map_err(io)?;
        let records = r
            .deserialize()
            .collect::<std::result::Result<Vec<ExposureRecord>, _>>()
            .map_err(io)?;
        Ok(Self { records })
    }

    /// JSON array of records. Non-finite exposures (an infinite extrapolation) become null.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.records).expect("records serialise");
        std::fs::write(path, text).map_err(|source| AuditError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Equal-width histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `bins + 1` edges.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Histogram of the finite values over [min, max] in `bins` equal bins (max falls in the last).
pub fn histogram(values: &[f64], bins: usize) -> Histogram {
    let bins = bins.max(1);
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if finite.is_empty() {
        return Histogram {
            edges: vec![0.0; bins + 1],
            counts: vec![0; bins],
        };
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let edges = (0..=bins).map(|i| lo + i as f64 * width).collect();
    let mut counts = vec![0u64; bins];
    for v in finite {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    Histogram { edges, counts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_bytes_round_trip_exactly_and_a_cut_log_is_an_error() {
        let rec = |step: u64, rank: Option<u64>| ExposureRecord {
            epoch: 1,
            step,
            canary_id: "r4-0".into(),
            repetitions: 4,
            log_perplexity: 0.1 + 0.2,
            rank,
            exposure_exact: rank.map(|_| 7.25),
            exposure_interpolated: Some(1.0 / 3.0),
            exposure_extrapolated: None,
        };
        let log = ExposureLog {
            records: vec![rec(0, Some(3)), rec(12, None)],
        };
        let bytes = log.to_csv_bytes().unwrap();
        assert_eq!(ExposureLog::from_csv_bytes(&bytes, "x").unwrap(), log);
        // Cut in the middle of the last row: refused, naming what was read.
        let cut = &bytes[..bytes.len() - 12];
        let err = ExposureLog::from_csv_bytes(cut, "the checkpoint's exposure.csv").unwrap_err();
        assert!(err.to_string().contains("exposure.csv"), "{err}");
    }
}
