//! `memaudit._native`: the Rust side of the `memaudit` Python package (docs/python.md).
//!
//! Every function here validates its Python arguments (naming them in errors), borrows NumPy
//! arrays where their layout allows, releases the GIL while the workspace's library crates
//! compute, and turns the typed result into Python objects. No algorithm lives here: accounting
//! is `memaudit-accounting`, exposure, membership inference and lower bounds are
//! `memaudit-audit`.
//!
//! Conventions: scores are "higher = member" unless an argument says otherwise; log-perplexities
//! are in bits (sum of -log2 p); epsilons are in nats (the usual (epsilon, delta)-DP unit).

use pyo3::prelude::*;

mod accounting;
mod arrays;
mod errors;
mod experiments;
mod exposure;
mod lower_bound;
mod mia;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    accounting::register(m)?;
    exposure::register(m)?;
    mia::register(m)?;
    lower_bound::register(m)?;
    experiments::register(m)?;
    m.add_function(wrap_pyfunction!(arrays::array_data_pointer, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_raise_rust_panic, m)?)?;
    Ok(())
}
