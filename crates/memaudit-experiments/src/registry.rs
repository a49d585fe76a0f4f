//! Every experiment by name: one table ([`EXPERIMENTS`]) from the name a config's `experiment`
//! key gives (`train`, `secret-sharer`, `dynamics curves`, `audit`, ...) to the experiment's
//! typed config and `run`. A front end that holds a config as data (the Python package's
//! `run_experiment`, a scheduler) calls [`run_named`] with a JSON value and gets the typed
//! result back as JSON: exactly the CLI's `--json` object of that experiment.
//!
//! The value is deserialised into the experiment's config, so unknown keys are refused naming
//! them ([`ExperimentError::ConfigValue`]), missing keys take the config's defaults, and
//! [`ExperimentConfig::validate`] runs before anything is read or trained.
//!
//! Adding an experiment is one line in [`EXPERIMENTS`]: `experiment!(Config, module::run)` for
//! a config implementing [`ExperimentConfig`] whose `run(&Config, &mut dyn Observer)` returns a
//! serialisable result.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result};
use crate::observer::Observer;
use crate::pipeline::{self, AuditConfig, LoadedConfig, PipelineOptions};

/// One experiment of the registry.
#[derive(Clone, Copy)]
pub struct Experiment {
    /// The name a config's `experiment` key gives (the CLI's command, `dynamics curves`).
    pub name: &'static str,
    /// Dotted keys of the config that hold file or folder paths: a front end that loads the
    /// config from a file resolves relative ones against the file's folder
    /// ([`resolve_relative_paths`]).
    pub path_keys: &'static [&'static str],
    run: fn(Value, &mut dyn Observer) -> Result<Value>,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment")
            .field("name", &self.name)
            .field("path_keys", &self.path_keys)
            .finish()
    }
}

/// An entry for config type `$cfg` (its name is `$cfg::NAME`) run by `$run`, with the dotted
/// keys that hold paths.
macro_rules! experiment {
    ($cfg:ty, $run:path, paths = [$($key:literal),* $(,)?]) => {
        Experiment {
            name: <$cfg as ExperimentConfig>::NAME,
            path_keys: &[$($key),*],
            run: |value, observer| run_typed::<$cfg, _>(value, observer, $run),
        }
    };
}

/// The name of the audit pipeline's entry (`memaudit audit`).
pub const AUDIT: &str = "audit";

/// Where the pipeline writes when the config names no `out` (the CLI's `--out` default).
pub const AUDIT_DEFAULT_OUT: &str = "runs/audit";

/// Every experiment that runs from a config alone, in the CLI's order.
pub const EXPERIMENTS: &[Experiment] = &[
    experiment!(
        crate::train::TrainExperimentConfig,
        crate::train::run,
        paths = ["run.out", "data.data_dir"]
    ),
    experiment!(
        crate::secret_sharer::SecretSharerConfig,
        crate::secret_sharer::run,
        paths = ["run.out", "data.data_dir"]
    ),
    experiment!(crate::eval::EvalConfig, crate::eval::run, paths = ["run"]),
    experiment!(
        crate::sample::SampleConfig,
        crate::sample::run,
        paths = ["run"]
    ),
    experiment!(
        crate::exposure::ExposureConfig,
        crate::exposure::run,
        paths = ["run", "manifest"]
    ),
    experiment!(
        crate::extract::ExtractConfig,
        crate::extract::run,
        paths = ["run", "manifest"]
    ),
    experiment!(
        crate::dp_sweep::DpSweepConfig,
        crate::dp_sweep::run,
        paths = ["out", "data.data_dir"]
    ),
    experiment!(
        crate::mia::MiaConfig,
        crate::mia::run,
        paths = ["scores", "shadows.cache", "data.data_dir"]
    ),
    experiment!(
        crate::lower_bound::LowerBoundConfig,
        crate::lower_bound::run,
        paths = ["in_scores", "out_scores"]
    ),
    experiment!(
        crate::dynamics::curves::CurvesConfig,
        crate::dynamics::curves::run,
        paths = []
    ),
    experiment!(
        crate::dynamics::capacity::CapacityConfig,
        crate::dynamics::capacity::run,
        paths = []
    ),
    experiment!(
        crate::dynamics::regularizers::RegularizersConfig,
        crate::dynamics::regularizers::run,
        paths = []
    ),
    experiment!(
        crate::dynamics::easy_hard::EasyHardConfig,
        crate::dynamics::easy_hard::run,
        paths = []
    ),
    experiment!(
        crate::dynamics::sensitivity::LossSensitivityConfig,
        crate::dynamics::sensitivity::run,
        paths = []
    ),
    experiment!(
        crate::dynamics::csr::CsrConfig,
        crate::dynamics::csr::run,
        paths = ["run"]
    ),
    // The attacks: `common.secret` is a source name or a folder, so it is not resolved as a
    // path; key material (`lsb`'s key, passphrase) is never part of a config value.
    experiment!(
        crate::attacks::LsbConfig,
        crate::attacks::lsb::run,
        paths = ["common.run.out", "common.data_dir", "common.conventional"]
    ),
    experiment!(
        crate::attacks::CorrelationConfig,
        crate::attacks::regulariser::run_correlation,
        paths = ["common.run.out", "common.data_dir", "common.conventional"]
    ),
    experiment!(
        crate::attacks::SignConfig,
        crate::attacks::regulariser::run_sign,
        paths = ["common.run.out", "common.data_dir", "common.conventional"]
    ),
    experiment!(
        crate::attacks::CapacityConfig,
        crate::attacks::capacity::run,
        paths = ["common.run.out", "common.data_dir", "common.conventional"]
    ),
    Experiment {
        name: AUDIT,
        path_keys: &["out"],
        run: run_audit,
    },
];

/// The names [`run_named`] takes.
pub fn names() -> impl Iterator<Item = &'static str> {
    EXPERIMENTS.iter().map(|e| e.name)
}

/// The registry's entry for `name`; an unknown name is an error naming the `experiment` key
/// and listing the known ones.
pub fn find(name: &str) -> Result<&'static Experiment> {
    EXPERIMENTS
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ExperimentError::Invalid {
            field: "experiment".into(),
            value: format!("{name:?}"),
            reason: format!(
                "unknown experiment; use one of {}",
                names().collect::<Vec<_>>().join(", ")
            ),
        })
}

/// Run experiment `name` with `config` (its config as JSON, without the `experiment` key) and
/// return its result as JSON (the CLI's `--json` object). For [`AUDIT`], `config` is the
/// pipeline's TOML config as JSON plus an optional `out` (the output folder; default
/// [`AUDIT_DEFAULT_OUT`]).
pub fn run_named(name: &str, config: Value, observer: &mut dyn Observer) -> Result<Value> {
    (find(name)?.run)(config, observer)
}

/// [`run_named`] for a config that names its experiment under the `experiment` key, as a config
/// file for any experiment does.
pub fn run_tagged(mut config: Value, observer: &mut dyn Observer) -> Result<Value> {
    let name = take_experiment(&mut config)?;
    run_named(&name, config, observer)
}

/// Remove the `experiment` key of `config` and return it.
pub fn take_experiment(config: &mut Value) -> Result<String> {
    let missing = |reason: &str| ExperimentError::ConfigValue {
        key: Some("experiment".into()),
        message: reason.to_string(),
        source: reason.to_string().into(),
    };
    let Value::Object(map) = config else {
        return Err(missing(
            "the config must be a table (a dict) with an `experiment` key",
        ));
    };
    match map.remove("experiment") {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(missing(&format!(
            "expected the experiment's name as a string, got {other}"
        ))),
        None => Err(missing(&format!(
            "missing; name the experiment: {}",
            names().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Make the relative paths under `name`'s path keys of `config` relative to `base` (the folder
/// of the file the config was read from), as a reader of the file expects. Keys that are
/// absent or hold no string are left as they are.
pub fn resolve_relative_paths(name: &str, config: &mut Value, base: &Path) -> Result<()> {
    for key in find(name)?.path_keys {
        let found = key
            .split('.')
            .try_fold(&mut *config, |cur, part| cur.get_mut(part));
        if let Some(Value::String(s)) = found
            && !s.is_empty()
            && Path::new(s.as_str()).is_relative()
        {
            *s = base.join(&*s).display().to_string();
        }
    }
    Ok(())
}

/// `value` as config `T`: unknown keys, wrong types and missing required keys are errors that
/// name the key path.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        // An unknown key's path ends in the key, which the message names already: the error
        // names the table it is in (`config.run: unknown field `epoch``).
        let message = inner.to_string();
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((field, _)) = rest.split_once('`')
            && (path == field || path.ends_with(&format!(".{field}")))
        {
            path.truncate(path.len() - field.len());
            path = path.trim_end_matches('.').to_string();
        }
        let key = (path != "." && !path.is_empty()).then_some(path);
        ExperimentError::ConfigValue {
            key,
            message,
            source: Box::new(inner),
        }
    })
}

/// Deserialise, validate, run, serialise.
fn run_typed<C, R>(
    value: Value,
    observer: &mut dyn Observer,
    run: fn(&C, &mut dyn Observer) -> Result<R>,
) -> Result<Value>
where
    C: ExperimentConfig,
    R: Serialize,
{
    let config: C = from_value(value)?;
    config.validate()?;
    let result = run(&config, observer)?;
    Ok(serde_json::to_value(&result)?)
}

/// The audit pipeline: `out` is taken out of the config, the rest is the pipeline's config.
fn run_audit(mut value: Value, observer: &mut dyn Observer) -> Result<Value> {
    let out = match value.as_object_mut().and_then(|m| m.remove("out")) {
        None => PathBuf::from(AUDIT_DEFAULT_OUT),
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(other) => {
            return Err(ExperimentError::ConfigValue {
                key: Some("out".into()),
                message: format!("expected the output folder as a path string, got {other}"),
                source: "not a path".into(),
            });
        }
    };
    let config: AuditConfig = from_value(value)?;
    config.validate()?;
    // A value has no file text to locate a setting's error in: errors found while running
    // name the key alone (`config, key `variants[1].dp.target_epsilon``).
    let loaded = LoadedConfig {
        config,
        path: PathBuf::from("config"),
        text: String::new(),
    };
    let opts = PipelineOptions {
        out,
        before_commit: None,
    };
    let results = pipeline::run(&loaded, opts, &pipeline::backend::Libraries, observer)?;
    Ok(serde_json::to_value(&results)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::{NullObserver, Recorder};
    use serde_json::json;

    /// Records progress and notes, and asks to stop once `stage` reports `at` units done.
    #[derive(Default)]
    struct StopAt {
        stage: &'static str,
        at: u64,
        stop: bool,
        rec: Recorder,
    }

    impl Observer for StopAt {
        fn progress(&mut self, stage: &str, step: u64, total: u64) {
            if stage == self.stage && step >= self.at {
                self.stop = true;
            }
            self.rec.progress(stage, step, total);
        }
        fn note(&mut self, text: &str) {
            self.rec.note(text);
        }
        fn cancelled(&self) -> bool {
            self.stop
        }
    }

    #[test]
    fn every_experiment_is_listed_once_and_an_unknown_name_names_the_key() {
        let all: Vec<&str> = names().collect();
        for name in [
            "train",
            "secret-sharer",
            "eval",
            "sample",
            "exposure",
            "extract",
            "dp-sweep",
            "mia",
            "lower-bound",
            "dynamics curves",
            "dynamics capacity",
            "dynamics regularizers",
            "dynamics easy-hard",
            "dynamics sensitivity",
            "dynamics csr",
            "attack lsb",
            "attack correlation",
            "attack sign",
            "attack capacity",
            "audit",
        ] {
            assert_eq!(all.iter().filter(|&&n| n == name).count(), 1, "{name}");
        }
        assert_eq!(all.len(), 20, "{all:?}");
        let e = run_named("trian", json!({}), &mut NullObserver).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("experiment \"trian\": unknown experiment; use one of train, "),
            "{s}"
        );
        let e = run_tagged(json!({"runs": 1}), &mut NullObserver).unwrap_err();
        assert!(
            e.to_string().starts_with("config.experiment: missing"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_naming_the_key() {
        for (name, config, starts) in [
            (
                "lower-bound",
                json!({"in_score": "a.txt"}),
                "config: unknown field `in_score`, expected one of `in_scores`",
            ),
            (
                "train",
                json!({"run": {"epoch": 2}}),
                "config.run: unknown field `epoch`",
            ),
            (
                "secret-sharer",
                json!({"canary": {"canaries": "two"}}),
                "config.canary.canaries: invalid type: string \"two\"",
            ),
            (
                "audit",
                json!({"variant": []}),
                "config: unknown field `variant`",
            ),
            (
                "audit",
                json!({"out": 3}),
                "config.out: expected the output folder",
            ),
            (
                "dynamics curves",
                json!({"runz": 1}),
                "config: unknown field `runz`",
            ),
        ] {
            let e = run_named(name, config, &mut NullObserver).unwrap_err();
            assert!(
                matches!(e, ExperimentError::ConfigValue { .. }),
                "{name}: {e:?}"
            );
            assert!(e.to_string().starts_with(starts), "{name}: {e}");
        }
        // A setting out of range: validate() runs before anything is read, naming the field.
        let e = run_named(
            "train",
            json!({"run": {"epochs": 0, "out": "x"}}),
            &mut NullObserver,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("run.epochs 0"), "{e}");
    }

    #[test]
    fn a_named_run_returns_the_typed_result_as_the_clis_json() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: &[f64]| {
            let p = dir.path().join(name);
            let text: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            std::fs::write(&p, text.join("\n")).unwrap();
            p
        };
        let ins: Vec<f64> = (0..40).map(|i| 10.0 + i as f64).collect();
        let outs: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let (a, b) = (write("in.txt", &ins), write("out.txt", &outs));
        let mut config = json!({
            "experiment": "lower-bound",
            "in_scores": "in.txt",
            "out_scores": "out.txt",
            "method": "clopper-pearson",
        });
        let name = take_experiment(&mut config).unwrap();
        resolve_relative_paths(&name, &mut config, dir.path()).unwrap();
        assert_eq!(config["in_scores"], json!(a.display().to_string()));
        let mut rec = Recorder::default();
        let got = run_named(&name, config, &mut rec).unwrap();
        let direct = crate::lower_bound::run(
            &crate::lower_bound::LowerBoundConfig {
                in_scores: Some(a),
                out_scores: Some(b),
                method: "clopper-pearson".into(),
                ..Default::default()
            },
            &mut NullObserver,
        )
        .unwrap();
        assert_eq!(got, serde_json::to_value(&direct).unwrap());
        assert_eq!(got["m"], 80);
        assert!(
            rec.progress.contains(&("lower-bound".into(), 1, 1)),
            "{:?}",
            rec.progress
        );
    }

    /// `eval` and `sample` of a saved run by name: a one-epoch character LSTM on the embedded
    /// corpus, then its metrics and two seeded samples, each the typed result as JSON.
    #[test]
    fn eval_and_sample_run_by_name_on_a_saved_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lm");
        let train = json!({
            "data": {"data": "embedded", "max_train": 64, "seq_len": 16},
            "model": {"embed": 8, "rnn_hidden": 16},
            "run": {"epochs": 1, "batch_size": 32, "seed": 1, "out": out},
        });
        run_named("train", train, &mut NullObserver).unwrap();

        let got = run_named("eval", json!({"run": out}), &mut NullObserver).unwrap();
        let direct = crate::eval::run(
            &crate::eval::EvalConfig {
                run: out.clone(),
                train_split: false,
            },
            &mut NullObserver,
        )
        .unwrap();
        assert_eq!(got, serde_json::to_value(&direct).unwrap());
        assert_eq!(got["split"], "valid", "{got}");
        // A language model: perplexity is exp(loss) (same f64 computation, so exact).
        let loss = got["loss"].as_f64().unwrap();
        assert_eq!(got["perplexity"].as_f64().unwrap(), loss.exp(), "{got}");
        let train_split = run_named(
            "eval",
            json!({"run": out, "train_split": true}),
            &mut NullObserver,
        )
        .unwrap();
        assert_eq!(train_split["split"], "train", "{train_split}");

        let config = json!({"run": out, "prefix": "the ", "length": 12, "seed": 5, "count": 2});
        let a = run_named("sample", config.clone(), &mut NullObserver).unwrap();
        let b = run_named("sample", config, &mut NullObserver).unwrap();
        assert_eq!(a, b, "the same seed draws the same text");
        let samples = a["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{a}");
        assert!(
            samples
                .iter()
                .all(|s| s.as_str().unwrap().starts_with("the ")),
            "{a}"
        );
        let e = run_named(
            "sample",
            json!({"run": out, "prefix": "\u{2603}"}),
            &mut NullObserver,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("prefix: "), "{e}");
        let e = run_named(
            "sample",
            json!({"run": out, "temperature": -1.0}),
            &mut NullObserver,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("temperature -1: "), "{e}");
    }

    /// A 3-epoch MLP on 200 digits (4 steps an epoch): stopped in epoch 2, then resumed.
    #[test]
    fn a_cancelled_training_run_stops_at_a_step_and_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let config = |resume: bool| {
            json!({
                "data": {"data": "digits", "max_train": 200},
                "model": {"hidden": [8]},
                "run": {"epochs": 3, "batch_size": 50, "seed": 1, "out": out, "resume": resume},
            })
        };
        // Stop at the 6th step: epoch 1 (steps 1-4) and its checkpoint are done.
        let mut obs = StopAt {
            stage: "train",
            at: 6,
            ..Default::default()
        };
        let e = run_named("train", config(false), &mut obs).unwrap_err();
        assert!(matches!(e, ExperimentError::Cancelled { .. }), "{e:?}");
        assert!(e.to_string().contains("at training step 6"), "{e}");
        let mut rec = Recorder::default();
        let r = run_named("train", config(true), &mut rec).unwrap();
        assert!(
            rec.notes
                .iter()
                .any(|n| n.starts_with("resuming from") && n.contains("(epoch 1, step 4)")),
            "{:?}",
            rec.notes
        );
        assert_eq!(r["epochs"], 3, "{r}");
    }

    /// A dynamics study (it writes nothing) stops at the end of the run in progress.
    #[test]
    fn a_cancelled_dynamics_study_stops_after_the_current_run() {
        let config = json!({
            "runs": 3,
            "kinds": ["real", "randx"],
            "batch_size": 20,
            "images": {"data": "digits", "max_train": 200},
            "mlp": {"hidden": [16]},
        });
        let mut obs = StopAt {
            stage: "real",
            at: 1,
            ..Default::default()
        };
        let e = run_named("dynamics easy-hard", config, &mut obs).unwrap_err();
        assert!(matches!(e, ExperimentError::Cancelled { .. }), "{e:?}");
        assert!(e.to_string().starts_with("cancelled in real"), "{e}");
        // No unit of the second kind started.
        assert!(
            obs.rec.progress.iter().all(|p| p.0 == "real"),
            "{:?}",
            obs.rec.progress
        );
    }

    /// A one-variant audit without the white-box run: data, train/plain, mia/plain (the default
    /// shadow pair), report; under a second.
    const AUDIT_TINY: &str = r#"
        seed = 3
        [data]
        seq_len = 32
        max_train = 150
        [model]
        hidden = 8
        embed = 8
        [training]
        epochs = 2
        batch_size = 32
        [[variants]]
        name = "plain"
        [canaries]
        template = "pin {digits:2}"
        per_repetition = 1
        repetitions = [1]
        held_out = 2
        [audits.extraction]
        budget = 200
        [audits.lower_bounds]
        white_box_canaries = 0
        one_run_canaries = 0
    "#;

    #[test]
    fn a_cancelled_audit_keeps_its_finished_stages_and_a_rerun_skips_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit");
        let mut config: Value = toml::from_str(AUDIT_TINY).unwrap();
        config["out"] = json!(out);
        let mut obs = StopAt {
            stage: "train",
            at: 2,
            ..Default::default()
        };
        let e = run_named(AUDIT, config.clone(), &mut obs).unwrap_err();
        assert!(matches!(e, ExperimentError::Cancelled { .. }), "{e:?}");
        // The data stage is committed; the training stage left no folder, finished or not.
        let stages: Vec<String> = std::fs::read_dir(out.join("stages"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(stages, ["data"]);
        let r = run_named(AUDIT, config, &mut NullObserver).unwrap();
        let status: Vec<(String, String)> = r["run"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [
            ("data", "skipped"),
            ("train/plain", "ran"),
            ("mia/plain", "ran"),
            ("report", "ran"),
        ];
        assert_eq!(
            status,
            want.map(|(a, b)| (a.to_string(), b.to_string())),
            "{status:?}"
        );
        assert!(out.join("results.json").is_file());
        // And a pipeline stopped between stages stops before the next one.
        let mut before_report = StopAt {
            stage: "never",
            at: 0,
            stop: true,
            ..Default::default()
        };
        let mut cfg: Value = toml::from_str(AUDIT_TINY).unwrap();
        cfg["out"] = json!(dir.path().join("other"));
        let e = run_named(AUDIT, cfg, &mut before_report).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cancelled before stage data; rerun to resume from the last completed unit"
        );
    }

    #[test]
    fn an_attack_runs_by_name_and_its_json_is_the_typed_result() {
        // Sign encoding on 200 digits with an 8-unit MLP for one epoch (about a second): the
        // registry's JSON is the result the CLI prints with `--json`.
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("sign");
        let v = run_named(
            "attack sign",
            json!({
                "common": {
                    "dataset": "digits",
                    "max_train": 200,
                    "model": { "model": "mlp", "hidden": [8] },
                    "run": { "epochs": 1, "seed": 1, "out": out },
                },
            }),
            &mut NullObserver,
        )
        .unwrap();
        assert_eq!(v["attack"], "sign");
        assert_eq!(v["secret"]["images"], 1, "{v}");
        assert!(v["decoding"]["correct_signs"].as_f64().is_some(), "{v}");
        assert!(out.join("malicious/run.json").exists());
        // csr names its run folder.
        let e = run_named("dynamics csr", json!({ "run": "" }), &mut NullObserver).unwrap_err();
        assert!(e.to_string().starts_with("run \"\""), "{e}");
    }
}
