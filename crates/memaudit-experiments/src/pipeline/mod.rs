//! The audit pipeline (`memaudit audit --config audit.toml`): one config in, every audit run,
//! `results.json` and `report.html` out.
//!
//! - [`config`] holds the TOML config, its checks (errors name file, line and key) and the
//!   example;
//! - [`store`] keeps the stages as atomic units keyed by the SHA-256 of their inputs;
//! - [`stages`] lists the stages, what each reads, and runs them ([`stages::run`]);
//! - [`backend`] does each stage's work with the experiments library;
//! - [`verdict`] compares lower bounds with claims (own delta, group epsilon, Bonferroni);
//! - [`results`] is `results.json` (versioned; schema in `docs/audit-results.schema.json`);
//! - [`html`] writes `report.html`.
//!
//! See `docs/audit-pipeline.md`.

use thiserror::Error;

pub mod backend;
pub mod classifier;
pub mod config;
pub mod example;
pub mod html;
pub mod results;
pub mod stages;
pub mod store;
#[cfg(test)]
mod tests;
pub mod verdict;

pub use config::{AuditConfig, EXAMPLE, EXAMPLE_DATASET, LoadedConfig};
pub use results::{AuditResults, SCHEMA_VERSION};
pub use stages::{Backend, PipelineOptions, run};

/// Errors of the pipeline's own computations; the algorithm crates' errors are kept as sources.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("lower bound: {0}")]
    LowerBound(#[from] memaudit_audit::lower_bound::LowerBoundError),
    #[error("privacy accounting: {0}")]
    Accounting(#[from] memaudit_accounting::AccountingError),
    /// A stage's output does not fit what a later stage needs (a bug, not bad input).
    #[error("internal: {0}")]
    Internal(String),
}
