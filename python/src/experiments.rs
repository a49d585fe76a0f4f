//! Experiments from a dict or a TOML/JSON file: the experiments that exist as library calls
//! with a typed config today, `mia` on a score file (`memaudit mia --scores`) and `lower-bound`
//! on two score files (`memaudit lower-bound`). The config is deserialised into typed structs
//! that refuse unknown keys, naming them.
//!
//! Long runs: the computation runs on a worker thread while the calling thread waits without
//! the GIL and checks for signals every 50 ms, so Ctrl-C raises KeyboardInterrupt promptly.
//! The worker only reads its inputs and writes nothing, so an interrupted run leaves no partial
//! state; its thread finishes its current attack in the background and its result is dropped.
//! Progress goes to a callback `progress(stage: str, done: int, total: int)`, called with the
//! GIL held, between atomic units (one attack, one bound computation).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use memaudit_audit::lower_bound::{self, LowerBoundReport};
use memaudit_audit::mia::{
    self, Attack, AttackSelection, MiaConfig, MiaError, MiaReport, SkippedAttack,
};
use pyo3::exceptions::{PyFileNotFoundError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde::Deserialize;

use crate::errors::{catch_panic, value_error};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_experiment, m)?)?;
    Ok(())
}

/// One experiment, chosen by its "experiment" key.
#[derive(Debug, Deserialize)]
#[serde(tag = "experiment", rename_all = "kebab-case", deny_unknown_fields)]
enum Experiment {
    /// `memaudit mia --scores FILE.npz [--attack LIST] [--config JSON]`.
    Mia {
        /// The score file (.npz, docs/mia.md).
        scores: PathBuf,
        /// "all" (default), "lira-online,rmia-offline" or a list of names.
        #[serde(default)]
        attacks: Option<AttackList>,
        /// A MiaConfig: any subset of {"lira", "rmia", "lm", "metrics"}.
        #[serde(default)]
        config: MiaConfig,
    },
    /// `memaudit lower-bound --in-scores A --out-scores B [...]`.
    LowerBound {
        in_scores: PathBuf,
        out_scores: PathBuf,
        #[serde(default = "all")]
        method: String,
        #[serde(default = "default_significance")]
        significance: f64,
        #[serde(default)]
        delta: f64,
        #[serde(default)]
        threshold: Option<f64>,
        #[serde(default)]
        two_sided: bool,
        #[serde(default)]
        lower_is_member: bool,
    },
}

fn all() -> String {
    "all".into()
}

fn default_significance() -> f64 {
    lower_bound::DEFAULT_SIGNIFICANCE
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AttackList {
    One(String),
    Many(Vec<String>),
}

/// The config from a dict, or from a path to a .toml or .json file.
fn parse_config(obj: &Bound<'_, PyAny>) -> PyResult<(Experiment, Option<PathBuf>)> {
    let py = obj.py();
    if obj.cast::<PyDict>().is_ok() {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (obj,))
            .map_err(|e| value_error("config", e))?
            .extract()?;
        let exp = serde_json::from_str(&text).map_err(|e| value_error("config", e))?;
        return Ok((exp, None));
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
    let exp: Experiment = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| value_error("config", format!("{}: {e}", path.display())))?,
        _ => toml::from_str(&text)
            .map_err(|e| value_error("config", format!("{}: {e}", path.display())))?,
    };
    // Relative score paths in a file are relative to the file, as a user reading it expects.
    Ok((exp, path.parent().map(|p| p.to_path_buf())))
}

fn resolve(base: &Option<PathBuf>, p: &PathBuf) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.clone(),
    }
}

fn missing_file(arg: &str, p: &std::path::Path) -> PyResult<()> {
    if p.exists() {
        Ok(())
    } else {
        Err(PyFileNotFoundError::new_err(format!(
            "config.{arg}: {}: no such file",
            p.display()
        )))
    }
}

/// Messages from the worker thread.
enum Msg<T> {
    Progress(&'static str, usize, usize),
    Done(PyResult<T>),
}

/// Runs `work` on a worker thread; the caller waits without the GIL, forwards progress to the
/// callback and raises KeyboardInterrupt (or any signal handler's exception) promptly.
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&dyn Fn(&'static str, usize, usize)) -> PyResult<T> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel::<Msg<T>>();
    std::thread::spawn(move || {
        let report = tx.clone();
        let send = move |stage: &'static str, done: usize, total: usize| {
            let _ = report.send(Msg::Progress(stage, done, total));
        };
        let result = catch_panic(|| work(&send));
        let _ = tx.send(Msg::Done(result));
    });
    // The receiver is waited on without the GIL; a Mutex makes it shareable with that closure.
    let rx = std::sync::Mutex::new(rx);
    loop {
        let msg = py.detach(|| match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(50)),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        });
        match msg {
            Ok(Msg::Progress(stage, done, total)) => {
                if let Some(cb) = progress {
                    cb.call1((stage, done, total))?;
                }
            }
            Ok(Msg::Done(result)) => return result,
            Err(mpsc::RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyValueError::new_err(
                    "internal error: the experiment's worker thread ended without a result",
                ));
            }
        }
    }
}

/// The attacks of `mia::run`, one at a time so progress can be reported between them; an `all`
/// selection skips an attack whose input is missing exactly as `mia::run` does.
fn mia_by_attack(
    set: &mia::ScoreSet,
    selection: &AttackSelection,
    cfg: &MiaConfig,
    progress: &dyn Fn(&'static str, usize, usize),
) -> Result<MiaReport, MiaError> {
    let (list, all) = match selection {
        AttackSelection::All => (Attack::ALL.to_vec(), true),
        AttackSelection::Only(v) => (v.clone(), false),
    };
    let mut merged: Option<MiaReport> = None;
    let mut skipped = Vec::new();
    progress("attacks", 0, list.len());
    for (i, &attack) in list.iter().enumerate() {
        match mia::run(set, &AttackSelection::Only(vec![attack]), cfg) {
            Ok(r) => match &mut merged {
                None => merged = Some(r),
                Some(m) => m.attacks.extend(r.attacks),
            },
            Err(e @ (MiaError::InputMissing { .. } | MiaError::NoShadow { .. })) if all => skipped
                .push(SkippedAttack {
                    attack,
                    reason: e.to_string(),
                }),
            Err(e) => return Err(e),
        }
        progress("attacks", i + 1, list.len());
    }
    let mut report = match merged {
        Some(r) => r,
        // Nothing ran: the report of an empty selection still states the inputs.
        None => mia::run(set, &AttackSelection::Only(vec![]), cfg)?,
    };
    report.skipped = skipped;
    Ok(report)
}

enum Outcome {
    Mia(Box<MiaReport>, PathBuf),
    LowerBound(Box<LowerBoundReport>, lower_bound::LowerBoundConfig),
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
    let (exp, base) = parse_config(config)?;
    let (outcome, name) = match exp {
        Experiment::Mia {
            scores,
            attacks,
            config,
        } => {
            let scores = resolve(&base, &scores);
            missing_file("scores", &scores)?;
            let selection = match attacks {
                None => Ok(AttackSelection::All),
                Some(AttackList::One(s)) => AttackSelection::parse(&s),
                Some(AttackList::Many(v)) => AttackSelection::parse(&v.join(",")),
            }
            .map_err(|e| value_error("config.attacks", e))?;
            config
                .validate()
                .map_err(|e| value_error("config.config", e))?;
            let path = scores.clone();
            let report = interruptible(py, progress, move |send| {
                send("read", 0, 1);
                let set = mia::npz::read_score_file(&path)
                    .map_err(|e| value_error("config.scores", e))?;
                send("read", 1, 1);
                mia_by_attack(&set, &selection, &config, send)
                    .map_err(|e| value_error("config.scores", format!("{}: {e}", path.display())))
            })?;
            (Outcome::Mia(Box::new(report), scores), "mia")
        }
        Experiment::LowerBound {
            in_scores,
            out_scores,
            method,
            significance,
            delta,
            threshold,
            two_sided,
            lower_is_member,
        } => {
            let cfg = crate::lower_bound::config(
                &method,
                significance,
                delta,
                threshold,
                two_sided,
                lower_is_member,
            )
            .map_err(|e| PyValueError::new_err(format!("config.{}", e.value(py))))?;
            let (ins, outs) = (resolve(&base, &in_scores), resolve(&base, &out_scores));
            missing_file("in_scores", &ins)?;
            missing_file("out_scores", &outs)?;
            let run_cfg = cfg.clone();
            let report = interruptible(py, progress, move |send| {
                send("read", 0, 2);
                let a = lower_bound::read_scores(&ins)
                    .map_err(|e| value_error("config.in_scores", e))?;
                send("read", 1, 2);
                let b = lower_bound::read_scores(&outs)
                    .map_err(|e| value_error("config.out_scores", e))?;
                send("read", 2, 2);
                send("lower-bound", 0, 1);
                let scores = lower_bound::CanaryScores::new(&a, &b, run_cfg.direction)
                    .map_err(crate::lower_bound::error)?;
                let r = lower_bound::lower_bounds(&scores, &run_cfg)
                    .map_err(crate::lower_bound::error)?;
                send("lower-bound", 1, 1);
                Ok(r)
            })?;
            (Outcome::LowerBound(Box::new(report), cfg), "lower-bound")
        }
    };
    let d = match outcome {
        Outcome::Mia(r, path) => {
            let d = crate::mia::report_dict(py, &r)?;
            d.set_item("scores", path.display().to_string())?;
            d
        }
        Outcome::LowerBound(r, cfg) => crate::lower_bound::report_dict(py, &r, &cfg)?,
    };
    d.set_item("experiment", PyString::new(py, name))?;
    Ok(d)
}
