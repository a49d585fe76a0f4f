//! Exposure (The Secret Sharer, Carlini et al. 2019) from the user's log-perplexities:
//! `memaudit_audit::exposure` (exact rank, TF Privacy's interpolation) and
//! `memaudit_audit::skewnorm` (the skew-normal extrapolation). Lower log-perplexity = more
//! likely = higher exposure.

use memaudit_audit::exposure::{exposure_from_rank, interpolation_exposures, ranks_from_scores};
use memaudit_audit::skewnorm::fit_skew_normal;
use numpy::{Ix1, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{check_values, float_array, int_array, non_empty, slice};
use crate::errors::{compute, value_error};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(exact_exposure, m)?)?;
    m.add_function(wrap_pyfunction!(interpolation_exposure, m)?)?;
    m.add_function(wrap_pyfunction!(extrapolation_exposure, m)?)?;
    m.add_function(wrap_pyfunction!(skew_normal_fit, m)?)?;
    Ok(())
}

/// Exact exposure when every candidate of the randomness space R is scored:
/// exposure = log2 |R| - log2 rank, rank = #{r' : logppl(r') <= logppl(secret)} (ties count).
#[pyfunction]
fn exact_exposure<'py>(
    py: Python<'py>,
    candidate_log_perplexities: &Bound<'py, PyAny>,
    secret_indices: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let (cn, sn) = ("candidate_log_perplexities", "secret_indices");
    let scores = float_array::<Ix1>(candidate_log_perplexities, cn, "[|R|]")?;
    let secrets = int_array::<Ix1>(secret_indices, sn, "[s]")?;
    let scores = slice(&scores, cn)?;
    let secrets = slice(&secrets, sn)?;
    non_empty(scores, cn, "[|R|]")?;
    check_values(scores, cn, false)?;
    if secrets.is_empty() {
        return Err(value_error(
            sn,
            "empty; give the index of at least one secret in R",
        ));
    }
    if let Some(&s) = secrets
        .iter()
        .find(|&&s| s < 0 || s as usize >= scores.len())
    {
        return Err(value_error(
            sn,
            format!("{s} is not an index into the {} candidates", scores.len()),
        ));
    }
    let (ranks, exposures, log2_space) = compute(py, || {
        let idx: Vec<u128> = secrets.iter().map(|&s| s as u128).collect();
        let ranks = ranks_from_scores(scores, &idx).map_err(|e| value_error(cn, e))?;
        let log2_space = (scores.len() as f64).log2();
        let exposures: Vec<f64> = ranks
            .iter()
            .map(|&r| exposure_from_rank(r, log2_space))
            .collect();
        let ranks: Vec<u64> = ranks.iter().map(|&r| r as u64).collect();
        Ok((ranks, exposures, log2_space))
    })?;
    let d = PyDict::new(py);
    d.set_item("exposures", PyArray1::from_vec(py, exposures))?;
    d.set_item("ranks", PyArray1::from_vec(py, ranks))?;
    d.set_item("log2_space", log2_space)?;
    Ok(d)
}

fn secrets_and_references<'py>(
    secret: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
) -> PyResult<(
    numpy::PyReadonlyArray1<'py, f64>,
    numpy::PyReadonlyArray1<'py, f64>,
)> {
    let s = float_array::<Ix1>(secret, "secret_log_perplexities", "[s]")?;
    let r = float_array::<Ix1>(reference, "reference_log_perplexities", "[m]")?;
    for (a, name, shape) in [
        (&s, "secret_log_perplexities", "[s]"),
        (&r, "reference_log_perplexities", "[m]"),
    ] {
        let v = slice(a, name)?;
        non_empty(v, name, shape)?;
        check_values(v, name, false)?;
    }
    Ok((s, r))
}

/// TF Privacy's `compute_exposure_interpolation` for one list of secrets, in input order.
#[pyfunction]
fn interpolation_exposure<'py>(
    py: Python<'py>,
    secret_log_perplexities: &Bound<'py, PyAny>,
    reference_log_perplexities: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (s, r) = secrets_and_references(secret_log_perplexities, reference_log_perplexities)?;
    let (s, r) = (s.as_slice()?, r.as_slice()?);
    let e = compute(py, || {
        interpolation_exposures(s, r).map_err(|e| value_error("reference_log_perplexities", e))
    })?;
    Ok(PyArray1::from_vec(py, e))
}

/// TF Privacy's `compute_exposure_extrapolation` for one list of secrets: a skew-normal fitted
/// to the references by maximum likelihood (as scipy's `skewnorm.fit`), exposure = -log2 cdf.
#[pyfunction]
fn extrapolation_exposure<'py>(
    py: Python<'py>,
    secret_log_perplexities: &Bound<'py, PyAny>,
    reference_log_perplexities: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let (s, r) = secrets_and_references(secret_log_perplexities, reference_log_perplexities)?;
    let (s, r) = (s.as_slice()?, r.as_slice()?);
    let (e, fit) = compute(py, || {
        // `extrapolation_exposures` is this fit followed by `SkewNormal::exposure`; the fit is
        // kept here so the caller also learns whether it converged.
        let fit = fit_skew_normal(r).map_err(|e| value_error("reference_log_perplexities", e))?;
        let e: Vec<f64> = s.iter().map(|&p| fit.dist.exposure(p)).collect();
        Ok((e, fit))
    })?;
    let d = PyDict::new(py);
    d.set_item("exposures", PyArray1::from_vec(py, e))?;
    d.set_item("shape", fit.dist.shape)?;
    d.set_item("loc", fit.dist.loc)?;
    d.set_item("scale", fit.dist.scale)?;
    d.set_item("converged", fit.converged)?;
    Ok(d)
}

/// The maximum-likelihood skew-normal fit (scipy's `skewnorm.fit` procedure).
#[pyfunction]
fn skew_normal_fit<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let a = float_array::<Ix1>(values, "values", "[m]")?;
    let v = slice(&a, "values")?;
    non_empty(v, "values", "[m]")?;
    check_values(v, "values", true)?;
    let fit = compute(py, || {
        fit_skew_normal(v).map_err(|e| value_error("values", e))
    })?;
    let d = PyDict::new(py);
    d.set_item("shape", fit.dist.shape)?;
    d.set_item("loc", fit.dist.loc)?;
    d.set_item("scale", fit.dist.scale)?;
    d.set_item("converged", fit.converged)?;
    d.set_item("neg_log_likelihood", fit.neg_log_likelihood)?;
    d.set_item("iterations", fit.iterations)?;
    Ok(d)
}
