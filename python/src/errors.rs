//! Running library code from Python: without the GIL, and with no Rust panic crossing into
//! Python (a panic would surface as pyo3's `PanicException`, a `BaseException` that `except
//! Exception` does not catch). A panic becomes a `RuntimeError` that says it is a bug.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Runs `f` with the GIL released, turning a panic into a RuntimeError.
pub fn compute<T: Send, F: FnOnce() -> PyResult<T> + Send>(py: Python<'_>, f: F) -> PyResult<T> {
    py.detach(|| catch_panic(f))
}

/// Runs `f` (which may need the GIL), turning a panic into a RuntimeError.
pub fn catch_panic<T, F: FnOnce() -> PyResult<T>>(f: F) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in memaudit (a bug, please report it): {what}"
            )))
        }
    }
}

/// A ValueError whose message starts with the argument it is about.
pub fn value_error(arg: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{arg}: {e}"))
}

/// Refuses keys of `kwargs`-style dicts that are not in `known`, naming them.
pub fn check_keys(dict: &Bound<'_, PyDict>, arg: &str, known: &[&str]) -> PyResult<()> {
    for key in dict.keys() {
        let k: String = key.extract().map_err(|_| {
            PyValueError::new_err(format!("{arg}: keys must be strings, got {key}"))
        })?;
        if !known.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!(
                "{arg}: unknown key {k:?}; known keys: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Test hook: panics inside the guarded, GIL-free section, to show the panic comes back as a
/// RuntimeError (python/tests/test_errors.py).
#[pyfunction]
pub fn _raise_rust_panic(py: Python<'_>) -> PyResult<()> {
    compute(py, || -> PyResult<()> {
        panic!("deliberate panic from memaudit._native._raise_rust_panic")
    })
}
