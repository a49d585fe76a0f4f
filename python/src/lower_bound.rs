//! Empirical epsilon lower bounds from IN and OUT canary scores: `memaudit lower-bound` on two
//! arrays (`memaudit_audit::lower_bound::lower_bounds`), with the CLI's `--json` keys.

use memaudit_audit::lower_bound::{
    self, CanaryScores, ConfusionCounts, LowerBoundConfig, LowerBoundError, LowerBoundMethod,
    LowerBoundReport, MethodBound, MethodChoice, ScoreDirection, ScoreSide, ThresholdChoice,
};
use numpy::Ix1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrays::{float_array, slice};
use crate::errors::compute;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(lower_bounds, m)?)?;
    Ok(())
}

/// The typed config from Python arguments, every refusal naming its argument.
pub fn config(
    method: &str,
    significance: f64,
    delta: f64,
    threshold: Option<f64>,
    two_sided: bool,
    lower_is_member: bool,
) -> PyResult<LowerBoundConfig> {
    let method = match method {
        "all" => MethodChoice::All,
        name => MethodChoice::One(
            LowerBoundMethod::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "method: expected one of \"clopper-pearson\", \"gdp\", \"one-run\", \"one-run-fdp\", \"all\"; got {name:?}"
                    ))
                })?,
        ),
    };
    if !(significance > 0.0 && significance <= 0.5) {
        return Err(PyValueError::new_err(format!(
            "significance: must be in (0, 0.5], got {significance}"
        )));
    }
    if !(0.0..1.0).contains(&delta) {
        return Err(PyValueError::new_err(format!(
            "delta: must be in [0, 1), got {delta}"
        )));
    }
    if let Some(t) = threshold
        && t.is_nan()
    {
        return Err(PyValueError::new_err(
            "threshold: must be a number, got NaN",
        ));
    }
    if let MethodChoice::One(m) = method
        && m.needs_positive_delta()
        && delta == 0.0
    {
        return Err(PyValueError::new_err(format!(
            "delta: method {:?} needs delta > 0 (it compares with a Gaussian curve at (eps, delta); at delta 0 no finite eps exists); pass the delta of the guarantee being audited",
            m.name()
        )));
    }
    Ok(LowerBoundConfig {
        significance,
        delta,
        threshold: threshold.map_or(ThresholdChoice::ParetoFrontier, ThresholdChoice::Explicit),
        two_sided,
        group_size: 1,
        direction: if lower_is_member {
            ScoreDirection::LowerIsMember
        } else {
            ScoreDirection::HigherIsMember
        },
        method,
    })
}

/// Library errors about one score set name the Python argument.
pub fn error(e: LowerBoundError) -> PyErr {
    let arg = match &e {
        LowerBoundError::EmptyScores { side } | LowerBoundError::NonFiniteScore { side, .. } => {
            match side {
                ScoreSide::In => "in_scores",
                ScoreSide::Out => "out_scores",
            }
        }
        LowerBoundError::Significance(_) => "significance",
        LowerBoundError::Delta(_) | LowerBoundError::NeedsPositiveDelta { .. } => "delta",
        LowerBoundError::Threshold(_) => "threshold",
        _ => "lower_bounds",
    };
    PyValueError::new_err(format!("{arg}: {e}"))
}

/// Runs the audit on borrowed scores (the GIL released).
pub fn run(
    py: Python<'_>,
    ins: &[f64],
    outs: &[f64],
    config: &LowerBoundConfig,
) -> PyResult<LowerBoundReport> {
    compute(py, || {
        let scores = CanaryScores::new(ins, outs, config.direction).map_err(error)?;
        lower_bound::lower_bounds(&scores, config).map_err(error)
    })
}

/// lower_bounds(in_scores, out_scores, *, method="all", significance=0.05, delta=0.0,
/// threshold=None, two_sided=False, lower_is_member=False)
#[pyfunction]
#[pyo3(signature = (in_scores, out_scores, *, method="all", significance=0.05, delta=0.0, threshold=None, two_sided=false, lower_is_member=false))]
#[allow(clippy::too_many_arguments)]
fn lower_bounds<'py>(
    py: Python<'py>,
    in_scores: &Bound<'py, PyAny>,
    out_scores: &Bound<'py, PyAny>,
    method: &str,
    significance: f64,
    delta: f64,
    threshold: Option<f64>,
    two_sided: bool,
    lower_is_member: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let config = config(
        method,
        significance,
        delta,
        threshold,
        two_sided,
        lower_is_member,
    )?;
    let ins = float_array::<Ix1>(in_scores, "in_scores", "[n_in]")?;
    let outs = float_array::<Ix1>(out_scores, "out_scores", "[n_out]")?;
    let report = run(
        py,
        slice(&ins, "in_scores")?,
        slice(&outs, "out_scores")?,
        &config,
    )?;
    report_dict(py, &report, &config)
}

fn counts(py: Python<'_>, c: &Option<ConfusionCounts>) -> PyResult<Py<PyAny>> {
    Ok(match c {
        None => py.None(),
        Some(c) => {
            let d = PyDict::new(py);
            d.set_item("true_positives", c.true_positives)?;
            d.set_item("false_positives", c.false_positives)?;
            d.set_item("true_negatives", c.true_negatives)?;
            d.set_item("false_negatives", c.false_negatives)?;
            d.into_any().unbind()
        }
    })
}

fn method_dict<'py>(py: Python<'py>, b: &MethodBound) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("method", b.method().name())?;
    d.set_item("epsilon_lower_bound", b.epsilon_lower_bound())?;
    d.set_item("threshold", b.threshold())?;
    d.set_item(
        "assumes_gaussian_tradeoff",
        b.method().assumes_gaussian_tradeoff(),
    )?;
    match b {
        MethodBound::ClopperPearson(c) => {
            d.set_item("counts", counts(py, &c.counts)?)?;
            d.set_item("tpr_lower", c.tpr_lower)?;
            d.set_item("fpr_upper", c.fpr_upper)?;
            d.set_item("two_sided", c.two_sided)?;
            d.set_item("swapped", c.swapped)?;
            d.set_item("group_size", c.group_size)?;
            d.set_item("thresholds_tested", c.thresholds_tested)?;
            d.set_item("significance_per_threshold", c.significance_per_threshold)?;
        }
        MethodBound::Gdp(g) => {
            d.set_item("counts", counts(py, &g.counts)?)?;
            d.set_item("mu_lower_bound", g.mu_lower_bound)?;
            d.set_item("fpr_upper", g.fpr_upper)?;
            d.set_item("fnr_upper", g.fnr_upper)?;
            d.set_item("thresholds_tested", g.thresholds_tested)?;
            d.set_item("significance_per_interval", g.significance_per_interval)?;
        }
        MethodBound::OneRun(o) | MethodBound::OneRunFdp(o) => {
            d.set_item("counts", counts(py, &o.counts)?)?;
            d.set_item("m", o.m)?;
            d.set_item("delta", o.delta)?;
            d.set_item("two_m_delta", o.two_m_delta)?;
            d.set_item("guesses", o.guesses)?;
            d.set_item("correct_guesses", o.correct_guesses)?;
            d.set_item("thresholds_tested", o.thresholds_tested)?;
            d.set_item("significance_per_threshold", o.significance_per_threshold)?;
        }
    }
    Ok(d)
}

/// The report as the CLI's `--json` object.
pub fn report_dict<'py>(
    py: Python<'py>,
    r: &LowerBoundReport,
    config: &LowerBoundConfig,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let results = PyList::empty(py);
    for b in &r.results {
        results.append(method_dict(py, b)?)?;
    }
    d.set_item("results", results)?;
    d.set_item("m", r.m)?;
    d.set_item("n_in", r.n_in)?;
    d.set_item("n_out", r.n_out)?;
    d.set_item("delta", r.delta)?;
    d.set_item("significance", r.significance)?;
    d.set_item(
        "threshold_choice",
        match config.threshold {
            ThresholdChoice::ParetoFrontier => "pareto-frontier-bonferroni",
            ThresholdChoice::Explicit(_) => "explicit",
        },
    )?;
    d.set_item("frontier_thresholds", r.frontier_thresholds)?;
    d.set_item(
        "score_direction",
        match config.direction {
            ScoreDirection::HigherIsMember => "higher-is-member",
            ScoreDirection::LowerIsMember => "lower-is-member",
        },
    )?;
    d.set_item("auroc", r.auroc)?;
    d.set_item("auroc_empirical", r.auroc_empirical)?;
    d.set_item(
        "warnings",
        r.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    )?;
    Ok(d)
}
