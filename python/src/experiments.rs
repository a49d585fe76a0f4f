//! Experiments from a dict or a TOML/JSON file: every experiment of the experiments library
//! and the audit pipeline, through its registry (`memaudit_experiments::registry`). The config
//! is deserialised there into the experiment's typed config, which refuses unknown keys, naming
//! them; the result is the experiment's typed result as the CLI's `--json` object.
//!
//! Long runs: the experiment runs on a worker thread while the calling thread waits without
//! the GIL, forwards progress to the callback (with the GIL, between the worker's messages) and
//! checks for signals every 50 ms. On Ctrl-C (or any exception from a signal handler or from
//! the callback) it sets the cancellation flag the worker's observer reports
//! (`Observer::cancelled`), waits for the worker to stop at its next safe point (between
//! training steps, shadow models, pipeline stages) and joins it, then raises: no thread is left
//! running, and every atomic unit (checkpoint, cached shadow model, pipeline stage) is either
//! complete or absent, so a rerun resumes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use memaudit_experiments::registry;
use memaudit_experiments::{ExperimentError, Observer};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::errors::{catch_panic, value_error};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_experiment, m)?)?;
    m.add_function(wrap_pyfunction!(experiment_names, m)?)?;
    m.add_function(wrap_pyfunction!(_running_experiment_threads, m)?)?;
    Ok(())
}

/// Worker threads of `run_experiment` whose experiment has not returned yet.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Test hook: how many experiment worker threads are still running (0 after every
/// `run_experiment` call returns or raises: the worker is joined first).
#[pyfunction]
fn _running_experiment_threads() -> usize {
    RUNNING.load(Ordering::SeqCst)
}

/// The config from a dict, or from a path to a .toml or .json file (with the file's folder, to
/// resolve relative paths against).
fn parse_config(obj: &Bound<'_, PyAny>) -> PyResult<(Value, Option<PathBuf>)> {
    let py = obj.py();
    if obj.cast::<PyDict>().is_ok() {
        // Path objects in a dict are written as their paths; anything else JSON cannot hold
        // is a TypeError naming the argument.
        let kwargs = PyDict::new(py);
        kwargs.set_item("default", py.import("os")?.getattr("fspath")?)?;
        kwargs.set_item("allow_nan", false)?;
        let text: String = py
            .import("json")?
            .call_method("dumps", (obj,), Some(&kwargs))
            .map_err(|e| {
                let what = e.value(py).to_string();
                if e.is_instance_of::<PyTypeError>(py) {
                    PyTypeError::new_err(format!("config: a value JSON cannot hold: {what}"))
                } else {
                    value_error("config", what)
                }
            })?
            .extract()?;
        let value = serde_json::from_str(&text).map_err(|e| value_error("config", e))?;
        return Ok((value, None));
    }
    let path: PathBuf = obj.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "config: expected a dict or a path to a .toml or .json file, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PyFileNotFoundError::new_err(format!("config: {}: no such file", path.display()))
        } else {
            value_error("config", format!("{}: {e}", path.display()))
        }
    })?;
    let value: Value = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| value_error("config", format!("{}: {e}", path.display())))?,
        _ => toml::from_str(&text).map_err(|e| {
            value_error(
                "config",
                format!("{}: {}", path.display(), e.to_string().replace('\n', " ")),
            )
        })?,
    };
    // Relative paths in a file are relative to the file, as a user reading it expects.
    Ok((value, path.parent().map(|p| p.to_path_buf())))
}

/// The keys of the earlier `mia` config of this package (`attacks`, and the attack settings
/// under `config`) as the library's (`attack`, the settings at the top level).
fn legacy_mia_keys(config: &mut Value) -> PyResult<()> {
    let Value::Object(map) = config else {
        return Ok(());
    };
    if let Some(a) = map.remove("attacks") {
        let list = match a {
            Value::String(s) => s,
            Value::Array(v) => v
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        value_error("config.attacks", "expected attack names (strings)")
                    })
                })
                .collect::<PyResult<Vec<_>>>()?
                .join(","),
            other => {
                return Err(value_error(
                    "config.attacks",
                    format!("expected a string or a list of attack names, got {other}"),
                ));
            }
        };
        map.insert("attack".into(), Value::String(list));
    }
    if let Some(Value::Object(settings)) = map.get("config").cloned() {
        map.remove("config");
        for (k, v) in settings {
            map.insert(k, v);
        }
    }
    Ok(())
}

/// Messages from the worker thread.
enum Msg {
    Progress(String, u64, u64),
    Done(Result<Value, ExperimentError>),
}

/// The worker's observer: progress to the calling thread, cancellation from it.
struct WorkerObserver {
    tx: mpsc::Sender<Msg>,
    cancel: Arc<AtomicBool>,
}

impl Observer for WorkerObserver {
    fn progress(&mut self, stage: &str, step: u64, total: u64) {
        let _ = self.tx.send(Msg::Progress(stage.to_string(), step, total));
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Runs experiment `name` on a worker thread; the caller waits without the GIL, forwards
/// progress to the callback, and on an exception (Ctrl-C's KeyboardInterrupt, the callback's)
/// cancels the worker, joins it, and raises.
fn run_interruptibly(
    py: Python<'_>,
    name: String,
    config: Value,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Value> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut observer = WorkerObserver {
        tx: tx.clone(),
        cancel: cancel.clone(),
    };
    let worker = std::thread::Builder::new()
        .name(format!("memaudit {name}"))
        .spawn(move || {
            RUNNING.fetch_add(1, Ordering::SeqCst);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                registry::run_named(&name, config, &mut observer)
            }));
            let result = result.unwrap_or_else(|payload| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(ExperimentError::protocol(format!(
                    "internal error in memaudit (a bug, please report it): {what}"
                )))
            });
            // Before the last message, so that a caller that has it and joined sees 0.
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(Msg::Done(result));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the experiment: {e}")))?;
    // The receiver is waited on without the GIL; a Mutex makes it shareable with that closure.
    let rx = std::sync::Mutex::new(rx);
    let outcome = loop {
        let msg = py.detach(|| match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(50)),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        });
        match msg {
            Ok(Msg::Progress(stage, done, total)) => {
                if let Some(cb) = progress
                    && let Err(e) = cb.call1((stage, done, total))
                {
                    break Err(e);
                }
            }
            Ok(Msg::Done(result)) => break Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    break Err(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Ok(Err(ExperimentError::protocol(
                    "internal error: the experiment's worker thread ended without a result",
                )));
            }
        }
    };
    match outcome {
        Ok(result) => {
            let _ = py.detach(|| worker.join());
            result.map_err(to_py_error)
        }
        Err(e) => {
            // Interrupted: ask the worker to stop at its next safe point, wait for its last
            // message and join it (no GIL needed meanwhile; progress is no longer shown), then
            // raise. Its result, complete or cancelled, is dropped.
            cancel.store(true, Ordering::Relaxed);
            py.detach(|| {
                if let Ok(r) = rx.lock() {
                    worker_join(&r);
                }
                let _ = worker.join();
            });
            Err(e)
        }
    }
}

/// Waits for the worker's final message (its result, which an interrupted call drops).
fn worker_join(rx: &mpsc::Receiver<Msg>) -> Option<Result<Value, ExperimentError>> {
    loop {
        match rx.recv() {
            Ok(Msg::Done(r)) => return Some(r),
            Ok(Msg::Progress(..)) => {}
            Err(_) => return None,
        }
    }
}

/// Whether an I/O error "not found" is among `e`'s sources.
fn not_found(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The library's error as a Python exception naming the config key: ValueError for settings
/// and inputs, FileNotFoundError for a missing file, KeyboardInterrupt for a cancelled run,
/// RuntimeError for a failure of the computation itself.
fn to_py_error(e: ExperimentError) -> PyErr {
    let missing = not_found(&e);
    let message = match &e {
        ExperimentError::Cancelled { .. } => return PyKeyboardInterrupt::new_err(e.to_string()),
        // Already "config.key: ..." or "config: ...".
        ExperimentError::ConfigValue { .. } => e.to_string(),
        ExperimentError::Invalid {
            field,
            value,
            reason,
        } => format!("config.{field} {value}: {reason}"),
        ExperimentError::Setting { field, source } => format!("config.{field}: {source}"),
        ExperimentError::MissingData { .. } => format!("config.{e}"),
        // A pipeline setting found wrong while running (located by key, without a file).
        ExperimentError::ConfigFile {
            key: Some(k),
            message,
            ..
        } => format!("config.{k}: {message}"),
        ExperimentError::Engine(_) | ExperimentError::Json(_) | ExperimentError::WriteConfig(_) => {
            return PyRuntimeError::new_err(e.to_string());
        }
        ExperimentError::Io { .. } if !missing => return PyRuntimeError::new_err(e.to_string()),
        _ => format!("config: {e}"),
    };
    if missing {
        PyFileNotFoundError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}

/// A JSON value as Python objects; the CLI's "inf", "-inf" and "nan" strings become floats.
fn to_python<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY.into_pyobject(py)?.into_any(),
            "-inf" => f64::NEG_INFINITY.into_pyobject(py)?.into_any(),
            "nan" => f64::NAN.into_pyobject(py)?.into_any(),
            _ => s.into_pyobject(py)?.into_any(),
        },
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| to_python(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, to_python(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// experiment_names() -> list[str]: the names `run_experiment` takes under "experiment".
#[pyfunction]
fn experiment_names() -> Vec<&'static str> {
    registry::names().collect()
}

/// run_experiment(config, progress=None) -> dict: the experiment's typed result, with the keys
/// of the matching CLI command's `--json`, plus "experiment".
#[pyfunction]
#[pyo3(signature = (config, progress=None))]
fn run_experiment<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyAny>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    if let Some(cb) = progress
        && !cb.is_callable()
    {
        return Err(PyTypeError::new_err(
            "progress: expected a callable progress(stage, done, total) or None",
        ));
    }
    let (mut value, base) = parse_config(config)?;
    let name = catch_panic(|| registry::take_experiment(&mut value).map_err(to_py_error))?;
    registry::find(&name).map_err(to_py_error)?;
    if name == "mia" {
        legacy_mia_keys(&mut value)?;
    }
    if let Some(base) = &base {
        registry::resolve_relative_paths(&name, &mut value, base).map_err(to_py_error)?;
    }
    let result = run_interruptibly(py, name.clone(), value, progress)?;
    let d = to_python(py, &result)?;
    let d = match d.cast_into::<PyDict>() {
        Ok(d) => d,
        Err(_) => {
            let wrapped = PyDict::new(py);
            wrapped.set_item("result", to_python(py, &result)?)?;
            wrapped
        }
    };
    d.set_item("experiment", name)?;
    Ok(d)
}
