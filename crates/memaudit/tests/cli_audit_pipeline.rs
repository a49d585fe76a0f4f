//! `memaudit audit --config audit.toml` (issue 18): the pipeline end to end on a tiny config
//! (stages run, a rerun skips them all, `results.json` fits its schema, `report.html` is one
//! well-formed self-contained page with the summary and the plots), the kill test, the example
//! config, and the bad-input errors (file, line and key; exit code 2).

mod common;

use std::path::Path;

use common::{memaudit, memaudit_env, ok_json, one_line_error};
use serde_json::Value;

/// A config that runs every stage in about a second: a 1x16 LSTM on 300 windows of 32
/// characters, a plain and a DP variant, 2 canaries per count, one shadow pair.
const TINY: &str = r#"
seed = 3
[data]
corpus = "embedded"
seq_len = 32
max_train = 300
[model]
hidden = 16
embed = 16
[training]
epochs = 1
batch_size = 32
[[variants]]
name = "plain"
[[variants]]
name = "dp"
batch_size = 64
[variants.dp]
target_epsilon = 8.0
[canaries]
template = "pin {digits:3}"
per_repetition = 2
repetitions = [1, 4]
held_out = 5
[audits.exposure]
references = 256
[audits.extraction]
budget = 2000
[audits.mia]
attacks = ["loss", "lira-online"]
shadow_pairs = 1
epochs = 1
batch_size = 32
[audits.lower_bounds]
white_box_canaries = 64
one_run_canaries = 64
"#;

const ALL_STAGES: [&str; 7] = [
    "data",
    "train/plain",
    "mia/plain",
    "train/dp",
    "white-box/dp",
    "mia/dp",
    "report",
];

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn audit(config: &str, out: &Path) -> Value {
    ok_json(&memaudit(&[
        "--quiet",
        "audit",
        "--config",
        config,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]))
}

fn stages_with(r: &Value, status: &str) -> Vec<String> {
    r["run"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == status)
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The results without `run` (the stages' statuses and times: the only part that may differ
/// between runs).
fn content(r: &Value) -> Value {
    let mut c = r.clone();
    c.as_object_mut().unwrap().remove("run");
    c
}

// ---- A JSON Schema check for the subset of draft 2020-12 that docs/audit-results.schema.json
// uses. A keyword outside that subset fails the test rather than being ignored.

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
            &root["$defs"][name]
        }
        None => s,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_u64() || v.is_i64(),
        other => panic!("unsupported type {other}"),
    }
}

/// `^[0-9a-f]{N}$`, the only pattern the schema uses.
fn pattern_ok(p: &str, s: &str) -> bool {
    let n: usize = p
        .strip_prefix("^[0-9a-f]{")
        .and_then(|r| r.strip_suffix("}$"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unsupported pattern {p}"));
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let s = resolve(root, schema);
    let obj = s.as_object().expect("schema object");
    for (k, rule) in obj {
        match k.as_str() {
            "$schema" | "$id" | "$defs" | "title" | "description" | "$ref" => {}
            "type" => {
                let ok = match rule {
                    Value::String(t) => type_ok(t, v),
                    Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
                    _ => panic!("bad type"),
                };
                if !ok {
                    errors.push(format!("{at}: {v} is not of type {rule}"));
                }
            }
            "const" if v != rule => errors.push(format!("{at}: {v} != {rule}")),
            "const" => {}
            "enum" if !rule.as_array().unwrap().contains(v) => {
                errors.push(format!("{at}: {v} not in {rule}"))
            }
            "enum" => {}
            "anyOf" => {
                let any = rule.as_array().unwrap().iter().any(|alt| {
                    let mut e = Vec::new();
                    validate(root, alt, v, at, &mut e);
                    e.is_empty()
                });
                if !any {
                    errors.push(format!("{at}: {v} fits none of anyOf"));
                }
            }
            "required" => {
                for key in rule.as_array().unwrap() {
                    if v.is_object() && v.get(key.as_str().unwrap()).is_none() {
                        errors.push(format!("{at}: missing {key}"));
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (key, sub) in rule.as_object().unwrap() {
                        if let Some(x) = o.get(key) {
                            validate(root, sub, x, &format!("{at}.{key}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                assert_eq!(
                    rule,
                    &Value::Bool(false),
                    "only additionalProperties: false"
                );
                if let Some(o) = v.as_object() {
                    let props = obj["properties"].as_object().unwrap();
                    for key in o.keys().filter(|k| !props.contains_key(*k)) {
                        errors.push(format!("{at}: unexpected key {key}"));
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, x) in a.iter().enumerate() {
                        validate(root, rule, x, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Some(a) = v.as_array() {
                    let n = rule.as_u64().unwrap() as usize;
                    if (k == "minItems" && a.len() < n) || (k == "maxItems" && a.len() > n) {
                        errors.push(format!("{at}: {k} {n}, has {}", a.len()));
                    }
                }
            }
            "minimum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if let (Some(x), Some(b)) = (v.as_f64(), rule.as_f64()) {
                    let ok = match k.as_str() {
                        "minimum" => x >= b,
                        "exclusiveMinimum" => x > b,
                        _ => x < b,
                    };
                    if !ok {
                        errors.push(format!("{at}: {x} violates {k} {b}"));
                    }
                }
            }
            "pattern" => {
                if let Some(s) = v.as_str()
                    && !pattern_ok(rule.as_str().unwrap(), s)
                {
                    errors.push(format!("{at}: {s:?} does not match {rule}"));
                }
            }
            other => panic!("schema keyword {other} is not supported by this check"),
        }
    }
}

fn schema_errors(results: &Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit-results.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut errors = Vec::new();
    validate(&schema, &schema, results, "$", &mut errors);
    errors
}

// ---- A strict well-formedness check of the report: every element closed in order (void
// elements and self-closed SVG elements aside), quoted attributes, no script, no external URL.

fn html_errors(html: &str) -> Vec<String> {
    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];
    let mut errors = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let Some(end) = rest.find('>') else {
            errors.push("unclosed tag".into());
            break;
        };
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => {}
                other => errors.push(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.is_empty() {
            errors.push(format!("bad tag <{tag}>"));
            continue;
        }
        if !tag.matches('"').count().is_multiple_of(2) {
            errors.push(format!("unbalanced quotes in <{tag}>"));
        }
        if name == "script" {
            errors.push("a script".into());
        }
        for attr in ["src=\"http", "href=\"http", "src='http", "href='http"] {
            if tag.contains(attr) {
                errors.push(format!("external URL in <{tag}>"));
            }
        }
        if !(tag.ends_with('/') || VOID.contains(&name.as_str())) {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        errors.push(format!("unclosed elements {stack:?}"));
    }
    errors
}

#[test]
fn tiny_audit_runs_every_stage_skips_them_on_rerun_and_writes_schema_valid_results() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "audit.toml", TINY);
    let out = d.path().join("out");
    let first = audit(&cfg, &out);
    assert_eq!(stages_with(&first, "ran"), ALL_STAGES);
    assert_eq!(first["schema_version"], 2);
    // The results file is the --json object, and fits the documented schema.
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(file, first);
    let errors = schema_errors(&file);
    assert!(errors.is_empty(), "{errors:#?}");
    // Per variant: utility, the ledger's claim, exposures, extraction, MIA, lower bounds.
    let v = &file["variants"];
    assert_eq!(v[0]["privacy"]["claimed_epsilon"], "inf");
    let eps = v[1]["privacy"]["claimed_epsilon"].as_f64().unwrap();
    assert!(
        eps > 7.0 && eps <= 8.0,
        "the ledger's epsilon at the target: {eps}"
    );
    for x in v.as_array().unwrap() {
        assert!(x["utility"]["valid_loss"].as_f64().unwrap() > 0.0);
        assert_eq!(
            x["exposure"]["canaries"].as_array().unwrap().len(),
            2 * 2 + 5
        );
        assert_eq!(
            x["extraction"]["by_repetitions"].as_array().unwrap().len(),
            2
        );
        assert_eq!(x["mia"]["attacks"].as_array().unwrap().len(), 2);
    }
    // Bounds: one-run and extraction (r = 1, 4) per variant, white-box for the DP one.
    assert_eq!(file["verdict"]["bounds_reported"], 2 * 3 + 1);
    assert_eq!(
        file["verdict"]["broken"], false,
        "{}",
        file["verdict"]["line"]
    );

    // The report: well formed, self-contained, the summary at the top, the plots.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let errors = html_errors(&html);
    assert!(errors.is_empty(), "{errors:#?}");
    let summary_at = html.find("<h2 id=\"summary\">").expect("summary section");
    assert!(
        summary_at < html.find("<svg").unwrap(),
        "summary before the plots"
    );
    let first_line = file["summary"][0].as_str().unwrap();
    assert!(first_line.starts_with("plain: "), "{first_line}");
    assert!(html.contains(&first_line.replace('<', "&lt;").replace('>', "&gt;")));
    assert!(html.contains("No lower bound exceeds its claim"));
    assert!(html.contains("Selection caveat"));
    for title in [
        "Training curves",
        "skew-normal fit",
        "Exposure vs epoch",
        "ROC of every attack and variant",
        "Lower bound vs claimed epsilon",
        "Utility vs privacy",
    ] {
        assert!(html.contains(title), "plot {title}");
    }
    assert!(
        html.matches("<svg").count() >= 7,
        "one exposure histogram per variant + 5"
    );

    // A rerun computes nothing and gives the same results.
    let again = audit(&cfg, &out);
    assert!(stages_with(&again, "ran").is_empty(), "{}", again["run"]);
    assert_eq!(stages_with(&again, "skipped"), ALL_STAGES);
    assert_eq!(content(&again), content(&first));

    // One variant's setting: exactly that variant's stages and the report rerun.
    let changed = TINY.replace("name = \"dp\"\n", "name = \"dp\"\nlr = 0.002\n");
    let cfg2 = write_config(d.path(), "audit2.toml", &changed);
    let r = audit(&cfg2, &out);
    assert_eq!(
        stages_with(&r, "ran"),
        ["train/dp", "white-box/dp", "mia/dp", "report"]
    );
}

#[test]
fn a_killed_audit_loses_only_the_stage_in_progress_and_resumes_to_the_same_results() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "audit.toml", TINY);
    let out = d.path().join("killed");
    // Abort (no destructor runs, as with kill -9) with train/dp's output written to its
    // temporary folder and not committed.
    let o = memaudit_env(
        &[
            "--quiet",
            "audit",
            "--config",
            &cfg,
            "--out",
            out.to_str().unwrap(),
        ],
        &[
            ("MEMAUDIT_ALLOW_FAULT_INJECTION", "1"),
            ("MEMAUDIT_TEST_KILL_IN_STAGE", "train/dp"),
        ],
    );
    assert!(
        !o.status.success() && o.status.code().is_none(),
        "killed by a signal"
    );
    let stages = out.join("stages");
    let names: Vec<String> = std::fs::read_dir(&stages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with(".train-dp.tmp-")),
        "{names:?}"
    );
    assert!(!stages.join("train-dp").exists());
    assert!(stages.join("mia-plain/COMPLETE").is_file());

    let resumed = audit(&cfg, &out);
    assert_eq!(
        stages_with(&resumed, "skipped"),
        ["data", "train/plain", "mia/plain"]
    );
    assert_eq!(
        stages_with(&resumed, "ran"),
        ["train/dp", "white-box/dp", "mia/dp", "report"]
    );
    let leftovers = std::fs::read_dir(&stages)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count();
    assert_eq!(
        leftovers, 0,
        "the interrupted stage's temporary folder is gone"
    );

    // Seeded noise: an uninterrupted run gives the same results, timing aside.
    let clean = audit(&cfg, &d.path().join("clean"));
    assert_eq!(content(&resumed), content(&clean));

    // The kill hook is refused without the fault-injection switch.
    let o = memaudit_env(
        &[
            "--quiet",
            "audit",
            "--config",
            &cfg,
            "--out",
            out.to_str().unwrap(),
        ],
        &[("MEMAUDIT_TEST_KILL_IN_STAGE", "train/dp")],
    );
    assert!(one_line_error(&o).contains("MEMAUDIT_ALLOW_FAULT_INJECTION=1"));
}

#[test]
fn the_example_config_parses_and_validates() {
    let o = memaudit(&["audit", "--example"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("[[variants]]") && text.contains("[audits.mia]"));
    let parsed = memaudit_experiments::pipeline::LoadedConfig::parse(text, Path::new("a.toml"))
        .expect("the example is a valid config");
    assert_eq!(parsed.config.variants.len(), 2);
    let j = ok_json(&memaudit(&["audit", "--example", "--json"]));
    assert!(j["example"].as_str().unwrap().contains("seed = 1"));
}

#[test]
fn bad_configs_are_one_line_errors_naming_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let run = |name: &str, text: &str| -> String {
        let cfg = write_config(d.path(), name, text);
        one_line_error(&memaudit(&[
            "--quiet",
            "audit",
            "--config",
            &cfg,
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    // Unknown key, rejected rather than ignored.
    let e = run("a.toml", &TINY.replace("hidden = 16", "hiden = 16"));
    assert!(
        e.contains("a.toml line 8") && e.contains("model.hiden"),
        "{e}"
    );
    // Wrong type.
    let e = run(
        "b.toml",
        &TINY.replace(
            "epochs = 1\nbatch_size = 32\n[[",
            "epochs = \"one\"\nbatch_size = 32\n[[",
        ),
    );
    assert!(e.contains("b.toml line 11, key `training.epochs`"), "{e}");
    // A DP variant whose settings cannot reach its target epsilon.
    let e = run(
        "c.toml",
        &TINY.replace(
            "target_epsilon = 8.0",
            "target_epsilon = 1.0\nnoise_multiplier = 0.3",
        ),
    );
    assert!(
        e.contains("c.toml line 19, key `variants[1].dp.target_epsilon`")
            && e.contains("cannot be reached"),
        "{e}"
    );
    let e = run(
        "c2.toml",
        &TINY.replace(
            "target_epsilon = 8.0",
            "target_epsilon = 0.5\nmax_noise_multiplier = 1.0",
        ),
    );
    assert!(
        e.contains("key `variants[1].dp.target_epsilon`") && e.contains("max_noise_multiplier"),
        "{e}"
    );
    // Shadow models on data too small to split.
    let small = TINY.replace("max_train = 300", "max_train = 70").replace(
        "epochs = 1\nbatch_size = 32\n[audits.lower",
        "epochs = 1\nbatch_size = 40\n[audits.lower",
    );
    let e = run("d.toml", &small);
    assert!(
        e.contains("d.toml line 33, key `audits.mia.batch_size`")
            && e.contains("too small to split"),
        "{e}"
    );
    // A canary template the vocabulary cannot write.
    let e = run(
        "e.toml",
        &TINY.replace("pin {digits:3}", "pin {alphabet=#@:3}"),
    );
    assert!(
        e.contains("e.toml line 21, key `canaries.template`") && e.contains("\"#\", \"@\""),
        "{e}"
    );
    assert!(
        !out.join("stages/train-plain").exists(),
        "nothing trained on bad input"
    );
}

// ---- Classifier datasets (`data.dataset`): no Secret Sharer canaries, exposure or extraction.

/// A config that runs every stage in seconds: a 16-unit MLP on 400 of the built-in digits, a
/// plain and a DP variant, one shadow pair, the white-box and one-run bounds.
const TINY_DIGITS: &str = r#"
seed = 3
[data]
dataset = "digits"
max_train = 400
[model]
kind = "mlp"
hidden = 16
[training]
epochs = 2
batch_size = 32
lr = 0.01
[[variants]]
name = "plain"
[[variants]]
name = "dp"
batch_size = 64
[variants.dp]
target_epsilon = 2.0
[audits.mia]
attacks = ["loss", "lira-online", "rmia-online"]
shadow_pairs = 1
epochs = 2
batch_size = 32
[audits.lower_bounds]
white_box_canaries = 256
one_run_canaries = 64
"#;

#[test]
fn tiny_digits_audit_runs_end_to_end_with_schema_valid_results_and_a_report_without_exposure() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "digits.toml", TINY_DIGITS);
    let out = d.path().join("out");
    let first = audit(&cfg, &out);
    assert_eq!(stages_with(&first, "ran"), ALL_STAGES);
    assert_eq!(first["schema_version"], 2);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(file, first);
    let errors = schema_errors(&file);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(file["data"]["dataset"], "digits");
    assert_eq!(file["data"]["train_examples"], 400);
    assert_eq!(file["data"]["input_shape"], serde_json::json!([1, 8, 8]));
    for x in file["variants"].as_array().unwrap() {
        // Utility on the held-out images; no Secret Sharer measurements.
        let acc = x["utility"]["valid_accuracy"].as_f64().unwrap();
        assert!(acc > 0.0 && acc <= 1.0, "{acc}");
        assert!(x.get("exposure").is_none() && x.get("extraction").is_none());
        assert_eq!(x["mia"]["attacks"].as_array().unwrap().len(), 3);
    }
    // Bounds: one-run per variant, white-box for the DP one; no extraction bounds.
    assert_eq!(file["verdict"]["bounds_reported"], 2 + 1);
    // The DP variant's claim is the ledger's, and every bound is at or below it (a correct
    // DP-SGD run; the seeded noise makes this run deterministic, so no flakiness to allow for).
    let dp = &file["variants"][1];
    let eps = dp["privacy"]["claimed_epsilon"].as_f64().unwrap();
    assert!(eps > 1.5 && eps <= 2.0, "the ledger's epsilon: {eps}");
    let bounds = dp["lower_bounds"].as_array().unwrap();
    assert_eq!(bounds.len(), 2, "one-run and white-box");
    for b in bounds {
        let lb = b["epsilon_lower_bound"].as_f64().unwrap();
        assert!(lb <= eps && b["exceeds_claim"] == false, "{b}");
    }
    assert_eq!(file["verdict"]["broken"], false);

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let errors = html_errors(&html);
    assert!(errors.is_empty(), "{errors:#?}");
    let summary_at = html.find("<h2 id=\"summary\">").expect("summary section");
    assert!(summary_at < html.find("<svg").unwrap());
    let first_line = file["summary"][0].as_str().unwrap();
    assert!(
        first_line.starts_with("plain: ") && first_line.contains("accuracy"),
        "{first_line}"
    );
    assert!(html.contains(&first_line.replace('<', "&lt;").replace('>', "&gt;")));
    for title in [
        "Training curves",
        "ROC of every attack and variant",
        "Lower bound vs claimed epsilon",
        "Utility vs privacy",
    ] {
        assert!(html.contains(title), "plot {title}");
    }
    for absent in ["skew-normal fit", "Exposure vs epoch", ">Exposure</h2>"] {
        assert!(!html.contains(absent), "{absent} in a classifier's report");
    }

    let again = audit(&cfg, &out);
    assert!(stages_with(&again, "ran").is_empty(), "{}", again["run"]);
    assert_eq!(content(&again), content(&first));
}

#[test]
fn the_dataset_example_parses_and_validates() {
    let o = memaudit(&["audit", "--example", "dataset"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let parsed = memaudit_experiments::pipeline::LoadedConfig::parse(text, Path::new("a.toml"))
        .expect("the dataset example is a valid config");
    assert_eq!(parsed.config.data.dataset.as_deref(), Some("digits"));
    let e = one_line_error(&memaudit(&["audit", "--example", "images"]));
    assert!(e.contains("--example"), "{e}");
}

#[test]
fn bad_dataset_configs_are_one_line_errors_naming_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let run = |name: &str, text: &str| -> String {
        let cfg = write_config(d.path(), name, text);
        one_line_error(&memaudit(&[
            "--quiet",
            "audit",
            "--config",
            &cfg,
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    // The Secret Sharer's canaries do not apply to a classifier.
    let e = run(
        "a.toml",
        &format!("{TINY_DIGITS}[canaries]\nper_repetition = 2\n"),
    );
    assert!(
        e.contains("a.toml line 28, key `canaries`") && e.contains("classifier"),
        "{e}"
    );
    // A model kind that is not a classifier, and one that does not fit 8x8 images.
    let e = run(
        "b.toml",
        &TINY_DIGITS.replace("kind = \"mlp\"", "kind = \"gru\""),
    );
    assert!(
        e.contains("b.toml line 7, key `model.kind`") && e.contains("mlp, tutorial-cnn"),
        "{e}"
    );
    let e = run(
        "b2.toml",
        &TINY_DIGITS.replace("kind = \"mlp\"\nhidden = 16", "kind = \"tutorial-cnn\""),
    );
    assert!(
        e.contains("b2.toml line 7, key `model.kind`") && e.contains("8x8"),
        "{e}"
    );
    // Shadow models on a dataset too small to split into pairs.
    let small = TINY_DIGITS
        .replace("max_train = 400", "max_train = 64")
        .replace("one_run_canaries = 64", "one_run_canaries = 16")
        .replace(
            "batch_size = 64\n[variants.dp]",
            "batch_size = 16\n[variants.dp]",
        )
        .replace(
            "[training]\nepochs = 2\nbatch_size = 32",
            "[training]\nepochs = 2\nbatch_size = 16",
        )
        .replace(
            "epochs = 2\nbatch_size = 32\n[audits.lower",
            "epochs = 2\nbatch_size = 48\n[audits.lower",
        );
    let e = run("c.toml", &small);
    assert!(
        e.contains("c.toml line 24, key `audits.mia.batch_size`")
            && e.contains("too small to split"),
        "{e}"
    );
    // One-run canaries are drawn from the training images: no more than there are.
    let e = run(
        "c2.toml",
        &TINY_DIGITS.replace("one_run_canaries = 64", "one_run_canaries = 400"),
    );
    assert!(
        e.contains("c2.toml line 27, key `audits.lower_bounds.one_run_canaries`"),
        "{e}"
    );
    assert!(
        !out.join("stages/train-plain").exists(),
        "nothing trained on bad input"
    );
}

#[test]
fn a_gpt_on_text_runs_every_stage_through_the_library() {
    // The GPT-2-architecture decoder of secret-sharer: width model.embed, model.layers blocks,
    // model.heads heads, model.context positions.
    let gpt = TINY.replace(
        "[model]\nhidden = 16\nembed = 16\n",
        "[model]\nkind = \"gpt\"\nembed = 16\nlayers = 1\nheads = 2\ncontext = 48\n",
    );
    assert_ne!(gpt, TINY);
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "gpt.toml", &gpt);
    let out = d.path().join("out");
    let r = audit(&cfg, &out);
    assert_eq!(stages_with(&r, "ran"), ALL_STAGES);
    let errors = schema_errors(&r);
    assert!(errors.is_empty(), "{errors:#?}");
    for stage in ["train-plain", "white-box-dp"] {
        let run: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("stages").join(stage).join("run/run.json")).unwrap(),
        )
        .unwrap();
        let m = &run["results"]["model"];
        assert_eq!(m["type"], "gpt", "{stage}: {m}");
        assert_eq!(
            (&m["embed"], &m["layers"], &m["heads"], &m["n_ctx"]),
            (&16.into(), &1.into(), &2.into(), &48.into()),
            "{stage}"
        );
    }
    for x in r["variants"].as_array().unwrap() {
        assert!(x["exposure"]["canaries"].is_array() && x["mia"]["attacks"].is_array());
    }
}
