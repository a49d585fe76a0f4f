//! Accounting for DP-SGD: `epsilon`, `calibrate_noise` and `privacy_statement`, with the same
//! inputs, checks and numbers as `memaudit epsilon`, `memaudit noise` and `memaudit statement`
//! (the CLI's `--json` keys; Python floats where the CLI writes "inf"/"nan").

use memaudit_accounting::rdp::{Conversion, MAX_ORDER, RdpAccountant};
use memaudit_accounting::{
    AccountantKind, AccountingError, DpEvent, NeighboringRelation, PldAccountant,
    PrivacyAccountant, StatementParams, calibrate, calibrate_noise, dp_sgd_event,
    privacy_statement,
};
use memaudit_engine::PrivacyLedger;
use pyo3::exceptions::{PyFileNotFoundError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{compute, value_error};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(epsilon, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate_noise_multiplier, m)?)?;
    m.add_function(wrap_pyfunction!(statement, m)?)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Rdp,
    Pld,
    All,
}

fn which(accountant: &str) -> PyResult<Which> {
    match accountant {
        "rdp" => Ok(Which::Rdp),
        "pld" => Ok(Which::Pld),
        "all" => Ok(Which::All),
        other => Err(PyValueError::new_err(format!(
            "accountant: expected \"rdp\", \"pld\" or \"all\", got {other:?}"
        ))),
    }
}

fn conversion(name: &str) -> PyResult<Conversion> {
    match name {
        "improved" => Ok(Conversion::Improved),
        "classic" => Ok(Conversion::Classic),
        other => Err(PyValueError::new_err(format!(
            "conversion: expected \"improved\" or \"classic\", got {other:?}"
        ))),
    }
}

fn check_delta(delta: f64) -> PyResult<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "delta: must be in (0, 1), got {delta}"
        )))
    }
}

fn check_noise(sigma: f64, arg: &str) -> PyResult<()> {
    if sigma >= 0.0 && sigma.is_finite() {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{arg}: must be a finite number >= 0, got {sigma}"
        )))
    }
}

fn check_orders(orders: &Option<Vec<f64>>) -> PyResult<()> {
    if let Some(o) = orders {
        if o.is_empty() {
            return Err(PyValueError::new_err("orders: needs at least one order"));
        }
        if let Some(a) = o.iter().find(|a| !(**a >= 1.0 && **a <= MAX_ORDER)) {
            return Err(PyValueError::new_err(format!(
                "orders: each order must be in [1, {MAX_ORDER}], got {a}"
            )));
        }
    }
    Ok(())
}

fn rdp_accountant(orders: &Option<Vec<f64>>) -> Result<RdpAccountant, AccountingError> {
    match orders {
        Some(o) => RdpAccountant::with_orders(NeighboringRelation::AddOrRemoveOne, o),
        None => Ok(RdpAccountant::new(NeighboringRelation::AddOrRemoveOne)),
    }
}

/// The sampling of a homogeneous run: (sampling_rate, steps) or (dataset_size, batch_size,
/// epochs) with TF Privacy's bookkeeping q = B/N, T = ceil(E N / B), as `memaudit epsilon`.
struct Sampling {
    sampling_rate: Option<f64>,
    steps: Option<u64>,
    dataset_size: Option<u64>,
    batch_size: Option<u64>,
    epochs: Option<f64>,
}

impl Sampling {
    fn given(&self) -> bool {
        self.sampling_rate.is_some()
            || self.steps.is_some()
            || self.dataset_size.is_some()
            || self.batch_size.is_some()
            || self.epochs.is_some()
    }

    fn resolve(&self) -> PyResult<(f64, u64)> {
        let direct = self.sampling_rate.is_some() || self.steps.is_some();
        let derived =
            self.dataset_size.is_some() || self.batch_size.is_some() || self.epochs.is_some();
        match (direct, derived) {
            (true, true) => Err(PyValueError::new_err(
                "give either sampling_rate and steps, or dataset_size, batch_size and epochs, not both",
            )),
            (false, false) => Err(PyValueError::new_err(
                "give sampling_rate and steps, or dataset_size, batch_size and epochs",
            )),
            (true, false) => {
                let q = self
                    .sampling_rate
                    .ok_or_else(|| PyValueError::new_err("steps: needs sampling_rate"))?;
                let steps = self
                    .steps
                    .ok_or_else(|| PyValueError::new_err("sampling_rate: needs steps"))?;
                if !(q > 0.0 && q <= 1.0) {
                    return Err(PyValueError::new_err(format!(
                        "sampling_rate: must be in (0, 1], got {q}"
                    )));
                }
                if steps == 0 {
                    return Err(PyValueError::new_err("steps: must be at least 1"));
                }
                Ok((q, steps))
            }
            (false, true) => {
                let (Some(n), Some(b), Some(e)) = (self.dataset_size, self.batch_size, self.epochs)
                else {
                    return Err(PyValueError::new_err(
                        "dataset_size, batch_size and epochs go together: give all three",
                    ));
                };
                if n == 0 {
                    return Err(PyValueError::new_err("dataset_size: must be at least 1"));
                }
                if b == 0 || b > n {
                    return Err(PyValueError::new_err(format!(
                        "batch_size: must be between 1 and dataset_size ({n}), got {b}"
                    )));
                }
                if !(e > 0.0 && e.is_finite()) {
                    return Err(PyValueError::new_err(format!(
                        "epochs: must be a finite number > 0, got {e}"
                    )));
                }
                let q = b as f64 / n as f64;
                let steps = (e * n as f64 / b as f64).ceil();
                if steps > u64::MAX as f64 / 2.0 {
                    return Err(PyValueError::new_err(
                        "epochs: too large, the number of steps overflows",
                    ));
                }
                Ok((q, steps as u64))
            }
        }
    }

    /// `memaudit train`'s count for the same numbers: E x ceil(N/B) (whole epochs only).
    fn train_steps(&self) -> Option<u64> {
        let (n, b, e) = (self.dataset_size?, self.batch_size?, self.epochs?);
        (e.fract() == 0.0 && b > 0).then(|| e as u64 * n.div_ceil(b))
    }
}

/// One heterogeneous segment from Python: (q, sigma, steps) or {"sampling_rate", "noise_multiplier", "steps"}.
fn segment(item: &Bound<'_, PyAny>, k: usize) -> PyResult<(f64, f64, u64)> {
    let arg = format!("segments[{k}]");
    let (q, sigma, steps): (f64, f64, u64) = if let Ok(d) = item.cast::<PyDict>() {
        crate::errors::check_keys(d, &arg, &["sampling_rate", "noise_multiplier", "steps"])?;
        let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
            d.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("{arg}: missing key {key:?}")))
        };
        (
            get("sampling_rate")?
                .extract()
                .map_err(|e| value_error(&arg, e))?,
            get("noise_multiplier")?
                .extract()
                .map_err(|e| value_error(&arg, e))?,
            get("steps")?.extract().map_err(|e| value_error(&arg, e))?,
        )
    } else {
        item.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{arg}: expected (sampling_rate, noise_multiplier, steps) or a dict with those keys, got {item}"
            ))
        })?
    };
    if !(q > 0.0 && q <= 1.0) {
        return Err(PyValueError::new_err(format!(
            "{arg}: sampling_rate must be in (0, 1], got {q}"
        )));
    }
    if !(sigma >= 0.0 && sigma.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{arg}: noise_multiplier must be a finite number >= 0, got {sigma}"
        )));
    }
    Ok((q, sigma, steps))
}

/// A privacy ledger from a dict or a JSON file (the ledger itself, a checkpoint's state.json or
/// a run.json), found where `memaudit epsilon --ledger` finds it.
fn ledger(obj: &Bound<'_, PyAny>) -> PyResult<(PrivacyLedger, String)> {
    let py = obj.py();
    let (value, source): (serde_json::Value, String) = if obj.cast::<PyDict>().is_ok() {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (obj,))
            .map_err(|e| value_error("ledger", e))?
            .extract()?;
        (
            serde_json::from_str(&text).map_err(|e| value_error("ledger", e))?,
            "dict".into(),
        )
    } else {
        let path: std::path::PathBuf = obj.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "ledger: expected a path to a JSON file or a dict, got {obj}"
            ))
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PyFileNotFoundError::new_err(format!("ledger: {}: no such file", path.display()))
            } else {
                value_error("ledger", format!("{}: {e}", path.display()))
            }
        })?;
        (
            serde_json::from_str(&text)
                .map_err(|e| value_error("ledger", format!("{}: not JSON: {e}", path.display())))?,
            path.display().to_string(),
        )
    };
    let ledger = PrivacyLedger::find_in_json(&value)
        .ok_or_else(|| {
            value_error(
                "ledger",
                format!("{source}: no privacy ledger (an object with \"segments\") in it"),
            )
        })?
        .map_err(|e| value_error("ledger", format!("{source}: {e}")))?;
    Ok((ledger, source))
}

/// epsilon(delta, *, noise_multiplier=None, sampling_rate=None, steps=None, dataset_size=None,
/// batch_size=None, epochs=None, segments=None, ledger=None, accountant="all",
/// conversion="improved", orders=None)
#[pyfunction]
#[pyo3(signature = (delta, *, noise_multiplier=None, sampling_rate=None, steps=None, dataset_size=None, batch_size=None, epochs=None, segments=None, ledger=None, accountant="all", conversion="improved", orders=None))]
#[allow(clippy::too_many_arguments)]
fn epsilon<'py>(
    py: Python<'py>,
    delta: f64,
    noise_multiplier: Option<f64>,
    sampling_rate: Option<f64>,
    steps: Option<u64>,
    dataset_size: Option<u64>,
    batch_size: Option<u64>,
    epochs: Option<f64>,
    segments: Option<Bound<'py, PyAny>>,
    ledger: Option<Bound<'py, PyAny>>,
    accountant: &str,
    conversion: &str,
    orders: Option<Vec<f64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let which = which(accountant)?;
    let conv = self::conversion(conversion)?;
    let conversion_name = conversion;
    check_orders(&orders)?;
    check_delta(delta)?;
    let sampling = Sampling {
        sampling_rate,
        steps,
        dataset_size,
        batch_size,
        epochs,
    };
    let out = PyDict::new(py);
    let sources = [
        segments.is_some(),
        ledger.is_some(),
        noise_multiplier.is_some() || sampling.given(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(PyValueError::new_err(
            "give one of: noise_multiplier with the sampling arguments, segments, or ledger",
        ));
    }
    let event = if let Some(obj) = &ledger {
        let (l, source) = self::ledger(obj)?;
        let json = serde_json::to_string(&l).map_err(err)?;
        out.set_item("ledger", py.import("json")?.call_method1("loads", (json,))?)?;
        out.set_item("ledger_source", source)?;
        l.event()
    } else if let Some(segs) = &segments {
        let items: Vec<Bound<'py, PyAny>> = segs
            .try_iter()
            .map_err(|_| PyTypeError::new_err("segments: expected a list of (q, sigma, steps)"))?
            .collect::<PyResult<_>>()?;
        if items.is_empty() {
            return Err(PyValueError::new_err(
                "segments: needs at least one segment",
            ));
        }
        let segs = items
            .iter()
            .enumerate()
            .map(|(k, s)| segment(s, k))
            .collect::<PyResult<Vec<_>>>()?;
        let list = PyList::empty(py);
        for (q, s, t) in &segs {
            let d = PyDict::new(py);
            d.set_item("sampling_rate", q)?;
            d.set_item("noise_multiplier", s)?;
            d.set_item("steps", t)?;
            list.append(d)?;
        }
        out.set_item("segments", list)?;
        DpEvent::Composed(
            segs.iter()
                .map(|&(q, sigma, steps)| dp_sgd_event(q, sigma, steps))
                .collect(),
        )
    } else {
        let (q, steps) = sampling.resolve()?;
        let sigma = noise_multiplier.ok_or_else(|| {
            PyValueError::new_err("noise_multiplier: required (or give segments or ledger)")
        })?;
        check_noise(sigma, "noise_multiplier")?;
        out.set_item("sampling_rate", q)?;
        out.set_item("steps", steps)?;
        out.set_item("noise_multiplier", sigma)?;
        if dataset_size.is_some() {
            out.set_item("steps_counted_as", "ceil(epochs*N/B)")?;
            if let Some(ts) = sampling.train_steps().filter(|&t| t != steps) {
                let e = compute(py, || {
                    let mut acc = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
                    acc.compose(&dp_sgd_event(q, sigma, ts)).map_err(err)?;
                    acc.epsilon_and_order(delta, conv).map_err(err)
                })?;
                out.set_item("train_steps", ts)?;
                out.set_item("train_steps_epsilon_rdp", e.epsilon)?;
            }
        }
        dp_sgd_event(q, sigma, steps)
    };
    out.set_item("delta", delta)?;
    let results = PyList::empty(py);
    let warnings = PyList::empty(py);
    if which != Which::Pld {
        let e = compute(py, || {
            let mut acc = rdp_accountant(&orders).map_err(|e| value_error("orders", e))?;
            acc.compose(&event).map_err(err)?;
            acc.epsilon_and_order(delta, conv).map_err(err)
        })?;
        if let Some(w) = e.warning() {
            warnings.append(w)?;
        }
        let d = PyDict::new(py);
        d.set_item("accountant", "rdp")?;
        d.set_item("epsilon", e.epsilon)?;
        d.set_item("order", e.epsilon.is_finite().then_some(e.order))?;
        d.set_item("delta", delta)?;
        results.append(d)?;
    }
    if which != Which::Rdp {
        let r = compute(py, || {
            let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
            acc.compose(&event).map_err(err)?;
            Ok(acc.epsilon(delta))
        })?;
        let d = PyDict::new(py);
        d.set_item("accountant", "pld")?;
        match r {
            Ok(eps) => {
                d.set_item("epsilon", eps)?;
                d.set_item("delta", delta)?;
            }
            Err(e) if which == Which::All => {
                // As the CLI: keep the RDP answer and say why PLD has none.
                warnings.append(format!("pld: {e}"))?;
                d.set_item("epsilon", py.None())?;
                d.set_item("delta", delta)?;
                d.set_item("error", e.to_string())?;
            }
            Err(e) => return Err(err(e)),
        }
        results.append(d)?;
    }
    out.set_item("results", results)?;
    out.set_item("conversion", conversion_name)?;
    out.set_item("warnings", warnings)?;
    Ok(out)
}

/// calibrate_noise_multiplier(target_epsilon, delta, *, sampling_rate=None, steps=None,
/// dataset_size=None, batch_size=None, epochs=None, accountant="all", conversion="improved",
/// orders=None): `memaudit noise`.
#[pyfunction]
#[pyo3(signature = (target_epsilon, delta, *, sampling_rate=None, steps=None, dataset_size=None, batch_size=None, epochs=None, accountant="all", conversion="improved", orders=None))]
#[allow(clippy::too_many_arguments)]
fn calibrate_noise_multiplier<'py>(
    py: Python<'py>,
    target_epsilon: f64,
    delta: f64,
    sampling_rate: Option<f64>,
    steps: Option<u64>,
    dataset_size: Option<u64>,
    batch_size: Option<u64>,
    epochs: Option<f64>,
    accountant: &str,
    conversion: &str,
    orders: Option<Vec<f64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let which = which(accountant)?;
    let conv = self::conversion(conversion)?;
    check_delta(delta)?;
    let (q, steps) = Sampling {
        sampling_rate,
        steps,
        dataset_size,
        batch_size,
        epochs,
    }
    .resolve()?;
    check_orders(&orders)?;
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "target_epsilon: must be a finite number > 0, got {target_epsilon}"
        )));
    }
    let calibration_error = |e: AccountingError| match e {
        AccountingError::CalibrationFailed { .. } => value_error("target_epsilon", e),
        other => err(other),
    };
    let results = PyList::empty(py);
    let warnings = PyList::empty(py);
    if which != Which::Pld {
        let (c, at) = compute(py, || {
            let c = calibrate(
                |sigma| {
                    let mut acc = rdp_accountant(&orders)?;
                    acc.compose(&dp_sgd_event(q, sigma, steps))?;
                    Ok(acc.epsilon_and_order(delta, conv)?.epsilon)
                },
                target_epsilon,
            )
            .map_err(calibration_error)?;
            let mut acc = rdp_accountant(&orders).map_err(err)?;
            acc.compose(&dp_sgd_event(q, c.noise_multiplier, steps))
                .map_err(err)?;
            let at = acc.epsilon_and_order(delta, conv).map_err(err)?;
            Ok((c, at))
        })?;
        if let Some(w) = at.warning() {
            warnings.append(w)?;
        } else if at.epsilon == 0.0 {
            warnings.append(
                "the RDP epsilon meets the target only through the KL bound (epsilon = 0): the order grid cannot \
                 resolve an epsilon this small; pass orders with larger orders",
            )?;
        }
        let d = PyDict::new(py);
        d.set_item("accountant", "rdp")?;
        d.set_item("noise_multiplier", c.noise_multiplier)?;
        d.set_item("epsilon", c.epsilon)?;
        d.set_item("delta", delta)?;
        results.append(d)?;
    }
    if which != Which::Rdp {
        let c = compute(py, || {
            calibrate_noise(
                |sigma| dp_sgd_event(q, sigma, steps),
                delta,
                target_epsilon,
                AccountantKind::Pld,
            )
            .map_err(calibration_error)
        })?;
        let d = PyDict::new(py);
        d.set_item("accountant", "pld")?;
        d.set_item("noise_multiplier", c.noise_multiplier)?;
        d.set_item("epsilon", c.epsilon)?;
        d.set_item("delta", delta)?;
        results.append(d)?;
    }
    let out = PyDict::new(py);
    out.set_item("results", results)?;
    out.set_item("warnings", warnings)?;
    out.set_item("target_epsilon", target_epsilon)?;
    out.set_item("sampling_rate", q)?;
    out.set_item("steps", steps)?;
    out.set_item("delta", delta)?;
    out.set_item("conversion", conversion)?;
    Ok(out)
}

/// statement(dataset_size, batch_size, epochs, noise_multiplier, delta, *,
/// used_microbatching=False, max_examples_per_user=None, accountant="rdp"): `memaudit statement`.
#[pyfunction]
#[pyo3(signature = (dataset_size, batch_size, epochs, noise_multiplier, delta, *, used_microbatching=false, max_examples_per_user=None, accountant="rdp"))]
#[allow(clippy::too_many_arguments)]
fn statement<'py>(
    py: Python<'py>,
    dataset_size: u64,
    batch_size: u64,
    epochs: f64,
    noise_multiplier: f64,
    delta: f64,
    used_microbatching: bool,
    max_examples_per_user: Option<u64>,
    accountant: &str,
) -> PyResult<Bound<'py, PyDict>> {
    if dataset_size == 0 {
        return Err(PyValueError::new_err("dataset_size: must be at least 1"));
    }
    if batch_size == 0 || batch_size > dataset_size {
        return Err(PyValueError::new_err(format!(
            "batch_size: must be between 1 and dataset_size ({dataset_size}), got {batch_size}"
        )));
    }
    if !(epochs > 0.0 && epochs.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "epochs: must be a finite number > 0, got {epochs}"
        )));
    }
    check_noise(noise_multiplier, "noise_multiplier")?;
    check_delta(delta)?;
    if max_examples_per_user == Some(0) {
        return Err(PyValueError::new_err(
            "max_examples_per_user: must be at least 1",
        ));
    }
    let kind = match accountant {
        "rdp" => AccountantKind::Rdp,
        "pld" => AccountantKind::Pld,
        other => {
            return Err(PyValueError::new_err(format!(
                "accountant: expected \"rdp\" or \"pld\", got {other:?}"
            )));
        }
    };
    let params = StatementParams {
        steps: None,
        dataset_size,
        batch_size,
        epochs,
        noise_multiplier,
        delta,
        used_microbatching,
        max_examples_per_user,
        accountant: kind,
    };
    let s = compute(py, || privacy_statement(&params).map_err(err))?;
    let d = PyDict::new(py);
    d.set_item("dataset_size", s.params.dataset_size)?;
    d.set_item("batch_size", s.params.batch_size)?;
    d.set_item("epochs", s.params.epochs)?;
    d.set_item("noise_multiplier", s.params.noise_multiplier)?;
    d.set_item("delta", s.params.delta)?;
    d.set_item("used_microbatching", s.params.used_microbatching)?;
    d.set_item("max_examples_per_user", s.params.max_examples_per_user)?;
    d.set_item("accountant", kind.name())?;
    d.set_item(
        "unit_of_privacy",
        "one training example (for a language model: one sequence window)",
    )?;
    d.set_item("neighboring_relation", "add-or-remove-one")?;
    d.set_item("sampling_probability", s.sampling_probability)?;
    d.set_item("poisson_steps", s.poisson_steps)?;
    d.set_item("epoch_steps", s.epoch_steps)?;
    d.set_item("accounted_noise_multiplier", s.accounted_noise_multiplier)?;
    d.set_item("epsilon_poisson", s.epsilon_poisson)?;
    d.set_item("epsilon_once_per_epoch", s.epsilon_once_per_epoch)?;
    d.set_item("user_epsilon_poisson", s.user_epsilon_poisson)?;
    d.set_item("user_epsilon_once_per_epoch", s.user_epsilon_once_per_epoch)?;
    d.set_item("text", s.to_string())?;
    Ok(d)
}
