//! What a running experiment tells its caller: progress, notes and per-epoch metrics rows.
//!
//! Library crates never print. The CLI implements [`Observer`] with progress bars on stderr and
//! metrics CSV files; a Rust program or a test passes [`NullObserver`] or a [`Recorder`].

/// One row of per-epoch (or per-step) metrics: typed values under column names.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRow {
    /// Which part of the experiment (a data kind, a variant, a batch size...).
    pub stage: String,
    /// The epoch the row describes (fractional for step-level measurements).
    pub epoch: f64,
    /// The optimizer step, where the row is tied to one.
    pub step: Option<u64>,
    /// Column name and value (`None`: not measured at this row).
    pub values: Vec<(&'static str, Option<f64>)>,
}

/// Receives progress, notes and metrics while an experiment runs. Every method has an empty
/// default, so an observer implements only what it shows.
pub trait Observer {
    /// `step` of `total` units of `stage` are done.
    fn progress(&mut self, _stage: &str, _step: u64, _total: u64) {}
    /// A line a person would want to see (a stage's summary, a warning).
    fn note(&mut self, _text: &str) {}
    /// A metrics row.
    fn metrics(&mut self, _row: &MetricsRow) {}
    /// Whether the caller asks the experiment to stop (Ctrl-C in the Python package). Long
    /// loops poll it at safe points only: between training steps (the run's checkpoints are
    /// its atomic units), between shadow models (each an atomic unit of the cache) and between
    /// pipeline stages; the experiment then returns [`ExperimentError::Cancelled`] with nothing
    /// half-written, and a rerun resumes from the last complete unit.
    ///
    /// [`ExperimentError::Cancelled`]: crate::ExperimentError::Cancelled
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullObserver;

impl Observer for NullObserver {}

/// Keeps every note and metrics row, and the last progress of each stage (for tests and for
/// programs that render afterwards).
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub notes: Vec<String>,
    pub rows: Vec<MetricsRow>,
    pub progress: Vec<(String, u64, u64)>,
}

impl Observer for Recorder {
    fn progress(&mut self, stage: &str, step: u64, total: u64) {
        match self.progress.iter_mut().find(|(s, _, _)| s == stage) {
            Some(p) => (p.1, p.2) = (step, total),
            None => self.progress.push((stage.to_string(), step, total)),
        }
    }
    fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }
    fn metrics(&mut self, row: &MetricsRow) {
        self.rows.push(row.clone());
    }
}
