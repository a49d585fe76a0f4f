//! Experiment configurations: loaded from TOML or JSON, written back as TOML, and merged with
//! the settings a command line gave explicitly.
//!
//! Every config is a serde struct with `#[serde(deny_unknown_fields, default)]`: a misspelt key
//! is an error, not a silently ignored setting, and a missing key takes the value of the
//! config's `Default` impl, the one place its defaults are defined (the CLI's flag defaults are
//! tested against it). Errors name the file, the line and the key:
//!
//! - TOML: the parser's error span gives the line; serde_path_to_error gives the key path.
//! - JSON: serde_json gives the line; serde_path_to_error gives the key path.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ExperimentError, Result};

/// A typed experiment configuration: serde in both directions, with defaults and a check of
/// every setting that needs no data.
pub trait ExperimentConfig: Serialize + DeserializeOwned + Default + Clone {
    /// The experiment's name as the CLI spells it (`dynamics easy-hard`).
    const NAME: &'static str;
    /// Check every setting that can be checked without loading data. Errors name the field.
    fn validate(&self) -> Result<()>;
}

/// Load a config from `path`: TOML for `.toml`, JSON for `.json`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => from_toml_str(&text, path),
        Some("json") => from_json_str(&text, path),
        _ => Err(ExperimentError::ConfigFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn key_of(path: &serde_path_to_error::Path) -> Option<String> {
    let k = path.to_string();
    (k != "." && !k.is_empty()).then_some(k)
}

/// Parse TOML `text` (read from `path`, named in errors).
pub fn from_toml_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, path, None, e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_of(e.path());
        toml_error(text, path, key, e.into_inner())
    })
}

fn toml_error(text: &str, path: &Path, key: Option<String>, e: toml::de::Error) -> ExperimentError {
    ExperimentError::ConfigFile {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        key,
        // The error's own Display draws the offending line with a caret over several lines;
        // the message alone fits the one-line convention.
        message: e.message().trim().to_string(),
        source: Box::new(e),
    }
}

/// Parse JSON `text` (read from `path`, named in errors).
pub fn from_json_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = key_of(e.path());
        let inner = e.into_inner();
        json_error(path, key, inner)
    })?;
    de.end().map_err(|e| json_error(path, None, e))?;
    Ok(value)
}

fn json_error(path: &Path, key: Option<String>, e: serde_json::Error) -> ExperimentError {
    // serde_json's Display appends " at line L column C"; the line is kept as a field instead.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ExperimentError::ConfigFile {
        path: path.to_path_buf(),
        line: (e.line() > 0).then_some(e.line()),
        key,
        message,
        source: Box::new(e),
    }
}

/// The config as TOML (the `--print-config` output; `load` reads it back).
pub fn to_toml<T: Serialize>(config: &T) -> Result<String> {
    toml::to_string_pretty(config).map_err(|e| ExperimentError::WriteConfig(e.to_string()))
}

/// `file` with the settings named in `explicit` taken from `given` instead: the rule "flags given
/// on the command line override the file". Both configs are serialised; each name in `explicit`
/// is looked up as a leaf key anywhere in `given` (config fields are named after their flags,
/// and a command's flag names are unique), and that leaf replaces the file's value at the same
/// path. Names that are no config field (`out`, `force`...) are skipped.
pub fn override_fields<T: ExperimentConfig>(file: &T, given: &T, explicit: &[String]) -> Result<T> {
    let to_value =
        |c: &T| serde_json::to_value(c).map_err(|e| ExperimentError::WriteConfig(e.to_string()));
    let mut merged = to_value(file)?;
    let given = to_value(given)?;
    for name in explicit {
        if let Some(path) = leaf_path(&given, name) {
            let value = path.iter().fold(&given, |v, k| &v[k.as_str()]).clone();
            set_path(&mut merged, &path, value);
        }
    }
    serde_json::from_value(merged).map_err(|e| ExperimentError::WriteConfig(e.to_string()))
}

/// The path of the first non-object value under key `name`, depth first.
fn leaf_path(v: &Value, name: &str) -> Option<Vec<String>> {
    let Value::Object(map) = v else { return None };
    if let Some(x) = map.get(name)
        && !x.is_object()
    {
        return Some(vec![name.to_string()]);
    }
    map.iter().find_map(|(k, x)| {
        leaf_path(x, name).map(|mut p| {
            p.insert(0, k.clone());
            p
        })
    })
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur[k.as_str()].is_object() {
            cur[k.as_str()] = Value::Object(Default::default());
        }
        cur = &mut cur[k.as_str()];
    }
    cur[path[path.len() - 1].as_str()] = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        hidden: Vec<usize>,
        rate: f64,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        runs: usize,
        name: Option<String>,
        mlp: Inner,
    }

    impl Default for Inner {
        fn default() -> Self {
            Self {
                hidden: vec![8],
                rate: 0.5,
            }
        }
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                runs: 3,
                name: None,
                mlp: Inner::default(),
            }
        }
    }

    impl ExperimentConfig for Demo {
        const NAME: &'static str = "demo";
        fn validate(&self) -> Result<()> {
            Ok(())
        }
    }

    fn p() -> &'static Path {
        Path::new("x.toml")
    }

    #[test]
    fn missing_keys_take_the_defaults_and_toml_round_trips() {
        let d: Demo = from_toml_str("runs = 7\n", p()).unwrap();
        assert_eq!(d.runs, 7);
        assert_eq!(d.mlp, Inner::default());
        let text = to_toml(&d).unwrap();
        assert_eq!(from_toml_str::<Demo>(&text, p()).unwrap(), d);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(from_json_str::<Demo>(&j, Path::new("x.json")).unwrap(), d);
    }

    #[test]
    fn toml_errors_name_file_line_and_key() {
        let e = from_toml_str::<Demo>("runs = 2\n\n[mlp]\nhiden = [4]\n", p()).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("x.toml line 4"), "{s}");
        assert!(s.contains("hiden"), "{s}");
        let e = from_toml_str::<Demo>("runs = 2\n[mlp]\nrate = \"fast\"\n", p()).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("line 3") && s.contains("key `mlp.rate`"), "{s}");
        assert!(!s.contains('\n'), "one line: {s}");
        // Syntax errors too.
        let s = from_toml_str::<Demo>("runs = \n", p())
            .unwrap_err()
            .to_string();
        assert!(s.starts_with("x.toml line 1"), "{s}");
    }

    #[test]
    fn json_errors_name_file_line_and_key() {
        let text = "{\n  \"runs\": 2,\n  \"mlp\": {\"hidden\": [\"a\"]}\n}";
        let s = from_json_str::<Demo>(text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(s.starts_with("c.json line 3, key `mlp.hidden[0]`"), "{s}");
        let s = from_json_str::<Demo>("{\"runz\": 1}", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("runz"), "{s}");
    }

    #[test]
    fn explicit_settings_override_the_file_and_the_others_do_not() {
        let file: Demo =
            from_toml_str("runs = 9\n[mlp]\nhidden = [1, 2]\nrate = 0.1\n", p()).unwrap();
        let given = Demo {
            runs: 4,
            name: Some("n".into()),
            mlp: Inner {
                hidden: vec![5],
                rate: 0.9,
            },
        };
        let m = override_fields(
            &file,
            &given,
            &["hidden".into(), "name".into(), "out".into()],
        )
        .unwrap();
        assert_eq!(m.runs, 9);
        assert_eq!(m.name.as_deref(), Some("n"));
        assert_eq!(m.mlp.hidden, vec![5]);
        assert_eq!(m.mlp.rate, 0.1);
    }
}
