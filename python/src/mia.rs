//! Membership inference from arrays: LOSS, LiRA and RMIA (and the LM baselines) through
//! `memaudit_audit::mia::run`, the same path as `memaudit mia --scores FILE.npz`, with the same
//! options (a `MiaConfig` as a dict, the same keys as `--config FILE.json`), and the metrics
//! (ROC, AUC, TPR at FPR) through `memaudit_audit::mia::metrics`. Scores: higher = member.

use memaudit_audit::mia::{
    self, AttackSelection, MembershipMetrics, MetricsConfig, MiaConfig, MiaReport, Population,
    ScoreSet, SignalKind, metrics,
};
use numpy::{Ix1, Ix2, Ix3, PyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::arrays::{bool_array, check_values, float_array, int_array, slice};
use crate::errors::{compute, value_error};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(membership_inference, m)?)?;
    m.add_function(wrap_pyfunction!(roc_curve, m)?)?;
    m.add_function(wrap_pyfunction!(membership_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(default_mia_config, m)?)?;
    Ok(())
}

/// A `MiaConfig` from a Python dict (any subset of {"lira", "rmia", "lm", "metrics"}; unknown
/// keys are refused, naming them), validated.
pub fn mia_config(obj: Option<&Bound<'_, PyAny>>, arg: &str) -> PyResult<MiaConfig> {
    let cfg: MiaConfig = match obj {
        None => MiaConfig::default(),
        Some(o) if o.is_none() => MiaConfig::default(),
        Some(o) => {
            if o.cast::<PyDict>().is_err() {
                return Err(PyTypeError::new_err(format!(
                    "{arg}: expected a dict (keys lira, rmia, lm, metrics), got {}",
                    o.get_type().name()?
                )));
            }
            let text: String = o
                .py()
                .import("json")?
                .call_method1("dumps", (o,))
                .map_err(|e| value_error(arg, e))?
                .extract()?;
            serde_json::from_str(&text).map_err(|e| value_error(arg, e))?
        }
    };
    cfg.validate().map_err(|e| value_error(arg, e))?;
    Ok(cfg)
}

/// The default attack configuration, as a dict (what `config=` may change).
#[pyfunction]
fn default_mia_config(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let text =
        serde_json::to_string(&MiaConfig::default()).map_err(|e| value_error("config", e))?;
    py.import("json")?.call_method1("loads", (text,))
}

fn attack_selection(obj: &Bound<'_, PyAny>) -> PyResult<AttackSelection> {
    let list: String = if let Ok(s) = obj.extract::<String>() {
        s
    } else if let Ok(v) = obj.extract::<Vec<String>>() {
        v.join(",")
    } else {
        return Err(PyTypeError::new_err(format!(
            "attacks: expected \"all\", a comma-separated string or a list of attack names, got {obj}"
        )));
    };
    AttackSelection::parse(&list).map_err(|e| value_error("attacks", e))
}

fn shape_mismatch(arg: &str, expected: String, found: &[usize]) -> PyErr {
    PyValueError::new_err(format!("{arg}: expected shape {expected}, got {found:?}"))
}

/// Builds the `ScoreSet` from Python arrays, checking every shape against the others with the
/// Python argument names. The library's ScoreSet owns its arrays: this is where the signals are
/// copied (once).
#[allow(clippy::too_many_arguments)]
fn score_set(
    target: &Bound<'_, PyAny>,
    shadow: &Bound<'_, PyAny>,
    shadow_in: &Bound<'_, PyAny>,
    target_in: Option<&Bound<'_, PyAny>>,
    population_target: Option<&Bound<'_, PyAny>>,
    population_shadow: Option<&Bound<'_, PyAny>>,
    classes: Option<&Bound<'_, PyAny>>,
    token_logprob: Option<&Bound<'_, PyAny>>,
    text: Option<&Bound<'_, PyAny>>,
    signal_kind: &str,
) -> PyResult<ScoreSet> {
    let kind = SignalKind::parse(signal_kind).ok_or_else(|| {
        PyValueError::new_err(format!(
            "signal_kind: expected \"logit_confidence\", \"probability\" or \"log_likelihood\", got {signal_kind:?}"
        ))
    })?;
    let t = float_array::<Ix2>(target, "target", "[n, q]")?;
    let [n, q] = [t.shape()[0], t.shape()[1]];
    if n == 0 || q == 0 {
        return Err(PyValueError::new_err(format!(
            "target: empty (shape [{n}, {q}]); expected [n, q] with n >= 1 examples and q >= 1 queries"
        )));
    }
    let s = float_array::<Ix3>(shadow, "shadow", "[k, n, q]")?;
    let k = s.shape()[0];
    if s.shape()[1..] != [n, q] {
        return Err(shape_mismatch(
            "shadow",
            format!("[k, n, q] = [k, {n}, {q}] (n, q from target)"),
            s.shape(),
        ));
    }
    let si = bool_array::<Ix2>(shadow_in, "shadow_in", "[k, n]")?;
    if si.shape() != [k, n] {
        return Err(shape_mismatch(
            "shadow_in",
            format!("[k, n] = [{k}, {n}] (k from shadow, n from target)"),
            si.shape(),
        ));
    }
    let tv = slice(&t, "target")?;
    let sv = slice(&s, "shadow")?;
    check_values(tv, "target", true)?;
    check_values(sv, "shadow", true)?;
    let mut set = ScoreSet::new(
        n,
        q,
        tv.to_vec(),
        k,
        sv.to_vec(),
        slice(&si, "shadow_in")?.to_vec(),
        kind,
    )
    .map_err(|e| value_error("target", e))?;
    if let Some(ti) = target_in.filter(|o| !o.is_none()) {
        let a = bool_array::<Ix1>(ti, "target_in", "[n]")?;
        if a.shape() != [n] {
            return Err(shape_mismatch(
                "target_in",
                format!("[n] = [{n}] (n from target)"),
                a.shape(),
            ));
        }
        set = set
            .with_target_in(slice(&a, "target_in")?.to_vec())
            .map_err(|e| value_error("target_in", e))?;
    }
    match (
        population_target.filter(|o| !o.is_none()),
        population_shadow.filter(|o| !o.is_none()),
    ) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(PyValueError::new_err(
                "population_shadow: required with population_target (shape [k, n_z, q])",
            ));
        }
        (None, Some(_)) => {
            return Err(PyValueError::new_err(
                "population_target: required with population_shadow (shape [n_z, q])",
            ));
        }
        (Some(pt), Some(ps)) => {
            let a = float_array::<Ix2>(pt, "population_target", "[n_z, q]")?;
            let nz = a.shape()[0];
            if nz == 0 || a.shape()[1] != q {
                return Err(shape_mismatch(
                    "population_target",
                    format!("[n_z, q] = [n_z >= 1, {q}] (q from target)"),
                    a.shape(),
                ));
            }
            let b = float_array::<Ix3>(ps, "population_shadow", "[k, n_z, q]")?;
            if b.shape() != [k, nz, q] {
                return Err(shape_mismatch(
                    "population_shadow",
                    format!(
                        "[k, n_z, q] = [{k}, {nz}, {q}] (k from shadow, n_z from population_target)"
                    ),
                    b.shape(),
                ));
            }
            let (av, bv) = (
                slice(&a, "population_target")?,
                slice(&b, "population_shadow")?,
            );
            check_values(av, "population_target", true)?;
            check_values(bv, "population_shadow", true)?;
            set = set
                .with_population(Population {
                    n: nz,
                    target: av.to_vec(),
                    shadow: bv.to_vec(),
                })
                .map_err(|e| value_error("population_target", e))?;
        }
    }
    if let Some(c) = classes.filter(|o| !o.is_none()) {
        let a = int_array::<Ix1>(c, "classes", "[n]")?;
        if a.shape() != [n] {
            return Err(shape_mismatch(
                "classes",
                format!("[n] = [{n}] (n from target)"),
                a.shape(),
            ));
        }
        set = set
            .with_class(slice(&a, "classes")?.to_vec())
            .map_err(|e| value_error("classes", e))?;
    }
    if let Some(tl) = token_logprob.filter(|o| !o.is_none()) {
        let rows = tl
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(
                    "token_logprob: expected a list of 1-D float arrays, one per example",
                )
            })?
            .enumerate()
            .map(|(i, row)| {
                let name = format!("token_logprob[{i}]");
                let a = float_array::<Ix1>(&row?, &name, "[L]")?;
                Ok(slice(&a, &name)?.to_vec())
            })
            .collect::<PyResult<Vec<Vec<f64>>>>()?;
        set = set
            .with_token_logprob(rows)
            .map_err(|e| value_error("token_logprob", e))?;
    }
    if let Some(tx) = text.filter(|o| !o.is_none()) {
        let rows = tx
            .try_iter()
            .map_err(|_| PyTypeError::new_err("text: expected a list of bytes, one per example"))?
            .enumerate()
            .map(|(i, row)| {
                let row = row?;
                if let Ok(b) = row.cast::<PyBytes>() {
                    Ok(b.as_bytes().to_vec())
                } else if let Ok(s) = row.extract::<String>() {
                    Ok(s.into_bytes())
                } else {
                    Err(PyTypeError::new_err(format!(
                        "text[{i}]: expected bytes or str, got {}",
                        row.get_type().name()?
                    )))
                }
            })
            .collect::<PyResult<Vec<Vec<u8>>>>()?;
        set = set.with_text(rows).map_err(|e| value_error("text", e))?;
    }
    Ok(set)
}

/// TPR-at-FPR entries as the CLI writes them: {"0.01": tpr}, intervals and skips by FPR.
fn metrics_into(
    py: Python<'_>,
    d: &Bound<'_, PyDict>,
    m: Option<&MembershipMetrics>,
) -> PyResult<()> {
    let tpr = PyDict::new(py);
    let ci = PyDict::new(py);
    let skipped = PyDict::new(py);
    if let Some(m) = m {
        for t in &m.tpr_at_fpr {
            let key = format!("{}", t.target_fpr);
            match (t.tpr, t.tpr_ci) {
                (Some(v), Some((lo, hi))) => {
                    tpr.set_item(&key, v)?;
                    let c = PyDict::new(py);
                    c.set_item("lower", lo)?;
                    c.set_item("upper", hi)?;
                    c.set_item("fpr", t.fpr)?;
                    c.set_item("threshold", t.threshold)?;
                    c.set_item("true_positives", t.true_positives)?;
                    ci.set_item(&key, c)?;
                }
                _ => skipped.set_item(&key, t.skipped.clone())?,
            }
        }
    }
    d.set_item("auc", m.map(|m| m.auc))?;
    d.set_item("balanced_accuracy", m.map(|m| m.balanced_accuracy))?;
    d.set_item("tpr_at_fpr", tpr)?;
    d.set_item("tpr_at_fpr_ci", ci)?;
    d.set_item("tpr_at_fpr_skipped", skipped)?;
    d.set_item("members", m.map(|m| m.members))?;
    d.set_item("non_members", m.map(|m| m.non_members))?;
    Ok(())
}

/// The report as the CLI's `--json` object, plus each attack's per-example scores (an array).
pub fn report_dict<'py>(py: Python<'py>, r: &MiaReport) -> PyResult<Bound<'py, PyDict>> {
    let attacks = PyList::empty(py);
    for a in &r.attacks {
        let d = PyDict::new(py);
        d.set_item("attack", a.attack.name())?;
        metrics_into(py, &d, a.metrics.as_ref())?;
        let per_class = PyList::empty(py);
        for c in &a.per_class {
            let pc = PyDict::new(py);
            pc.set_item("class", c.class)?;
            pc.set_item("examples", c.examples)?;
            pc.set_item("auc", c.metrics.as_ref().map(|m| m.auc))?;
            pc.set_item(
                "balanced_accuracy",
                c.metrics.as_ref().map(|m| m.balanced_accuracy),
            )?;
            per_class.append(pc)?;
        }
        d.set_item("per_class", per_class)?;
        d.set_item("notes", a.notes.clone())?;
        d.set_item("scores", PyArray1::from_slice(py, &a.scores))?;
        attacks.append(d)?;
    }
    let skipped = PyList::empty(py);
    for s in &r.skipped {
        let d = PyDict::new(py);
        d.set_item("attack", s.attack.name())?;
        d.set_item("reason", &s.reason)?;
        skipped.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("examples", r.examples)?;
    d.set_item("shadow_models", r.shadow_models)?;
    d.set_item("queries", r.queries)?;
    d.set_item("signal_kind", r.signal_kind.name())?;
    d.set_item("population", r.population)?;
    d.set_item("attacks", attacks)?;
    d.set_item("skipped", skipped)?;
    let cfg = serde_json::to_string(&r.config).map_err(|e| value_error("config", e))?;
    d.set_item("config", py.import("json")?.call_method1("loads", (cfg,))?)?;
    Ok(d)
}

/// Runs the attacks on a built score set (the GIL released).
pub fn run(
    py: Python<'_>,
    set: &ScoreSet,
    selection: &AttackSelection,
    cfg: &MiaConfig,
) -> PyResult<MiaReport> {
    compute(py, || {
        mia::run(set, selection, cfg).map_err(|e| PyValueError::new_err(e.to_string()))
    })
}

/// membership_inference(target, shadow, shadow_in, *, target_in=None, population_target=None,
/// population_shadow=None, classes=None, token_logprob=None, text=None,
/// signal_kind="logit_confidence", attacks="all", config=None)
#[pyfunction]
#[pyo3(signature = (target, shadow, shadow_in, *, target_in=None, population_target=None, population_shadow=None, classes=None, token_logprob=None, text=None, signal_kind="logit_confidence", attacks=None, config=None))]
#[allow(clippy::too_many_arguments)]
fn membership_inference<'py>(
    py: Python<'py>,
    target: &Bound<'py, PyAny>,
    shadow: &Bound<'py, PyAny>,
    shadow_in: &Bound<'py, PyAny>,
    target_in: Option<&Bound<'py, PyAny>>,
    population_target: Option<&Bound<'py, PyAny>>,
    population_shadow: Option<&Bound<'py, PyAny>>,
    classes: Option<&Bound<'py, PyAny>>,
    token_logprob: Option<&Bound<'py, PyAny>>,
    text: Option<&Bound<'py, PyAny>>,
    signal_kind: &str,
    attacks: Option<&Bound<'py, PyAny>>,
    config: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let selection = match attacks {
        None => AttackSelection::All,
        Some(a) => attack_selection(a)?,
    };
    let cfg = mia_config(config, "config")?;
    let set = score_set(
        target,
        shadow,
        shadow_in,
        target_in,
        population_target,
        population_shadow,
        classes,
        token_logprob,
        text,
        signal_kind,
    )?;
    let report = run(py, &set, &selection, &cfg)?;
    report_dict(py, &report)
}

/// Scores (higher = member) and membership as borrowed slices, checked with argument names.
fn scores_and_members<'py>(
    scores: &Bound<'py, PyAny>,
    member: &Bound<'py, PyAny>,
) -> PyResult<(
    numpy::PyReadonlyArray1<'py, f64>,
    numpy::PyReadonlyArray1<'py, bool>,
)> {
    let s = float_array::<Ix1>(scores, "scores", "[n]")?;
    let m = bool_array::<Ix1>(member, "member", "[n]")?;
    let sv = slice(&s, "scores")?;
    if sv.is_empty() {
        return Err(value_error(
            "scores",
            "empty; expected one score per example (shape [n])",
        ));
    }
    check_values(sv, "scores", false)?;
    if m.len() != sv.len() {
        return Err(shape_mismatch(
            "member",
            format!("[n] = [{}] (n from scores)", sv.len()),
            m.shape(),
        ));
    }
    Ok((s, m))
}

/// The ROC of scores against membership: one point per distinct score, from (0, 0) to (1, 1).
#[pyfunction]
fn roc_curve<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    member: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let (s, m) = scores_and_members(scores, member)?;
    let (sv, mv) = (s.as_slice()?, m.as_slice()?);
    let (roc, auc) = compute(py, || {
        let roc = metrics::Roc::new(sv, mv).map_err(|e| value_error("member", e))?;
        let auc = roc.auc();
        Ok((roc, auc))
    })?;
    let d = PyDict::new(py);
    d.set_item("fpr", PyArray1::from_vec(py, roc.fpr()))?;
    d.set_item("tpr", PyArray1::from_vec(py, roc.tpr()))?;
    d.set_item("thresholds", PyArray1::from_slice(py, &roc.thresholds))?;
    d.set_item("auc", auc)?;
    d.set_item("members", roc.members)?;
    d.set_item("non_members", roc.non_members)?;
    Ok(d)
}

/// AUC, balanced accuracy and TPR at the given FPRs (with Clopper-Pearson intervals), as each
/// attack of `membership_inference` reports them.
#[pyfunction]
#[pyo3(signature = (scores, member, *, fpr_targets=None, min_expected_false_positives=None, confidence=None))]
fn membership_metrics<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    member: &Bound<'py, PyAny>,
    fpr_targets: Option<Vec<f64>>,
    min_expected_false_positives: Option<f64>,
    confidence: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut cfg = MiaConfig::default();
    if let Some(f) = fpr_targets {
        cfg.metrics.fpr_targets = f;
    }
    if let Some(m) = min_expected_false_positives {
        cfg.metrics.min_expected_false_positives = m;
    }
    if let Some(c) = confidence {
        cfg.metrics.confidence = c;
    }
    // The library's validation names the field (metrics.fpr_targets, metrics.confidence...),
    // which is the Python argument's name after "metrics.".
    cfg.validate()
        .map_err(|e| PyValueError::new_err(e.to_string().replace("mia config: metrics.", "")))?;
    let metrics_cfg: MetricsConfig = cfg.metrics;
    let (s, m) = scores_and_members(scores, member)?;
    let (sv, mv) = (s.as_slice()?, m.as_slice()?);
    let result = compute(py, || {
        metrics::evaluate(sv, mv, &metrics_cfg).map_err(|e| value_error("member", e))
    })?;
    let d = PyDict::new(py);
    metrics_into(py, &d, Some(&result))?;
    Ok(d)
}
