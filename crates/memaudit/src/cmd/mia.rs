//! `memaudit mia`: membership inference (LOSS, LiRA, RMIA and the LM baselines) with LiRA's
//! low-FPR metrics.
//!
//! `--scores FILE.npz` attacks the signals of a target and shadow models trained elsewhere (the
//! format is in `docs/mia.md`); nothing is trained. The protocol lives in
//! `memaudit_audit::mia`; this file parses flags and renders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use memaudit_audit::mia::{
    self, AttackSelection, Center, MiaConfig, MiaReport, MissingShadows, ScoreSet, VarianceMode,
};

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num, opt_num};
use crate::report::{Report as HtmlReport, Series, chart};
use crate::rundir::{Reuse, RunDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A score file (.npz: target, shadow, shadow_in, ...; see docs/mia.md) of models trained
    /// elsewhere. Nothing is trained.
    #[arg(long, value_name = "FILE.npz")]
    pub scores: Option<PathBuf>,
    /// Attacks: a comma-separated list (loss, lira-online, lira-offline, lira-offline-two-sided,
    /// rmia-online, rmia-offline, min-k, zlib) or all (skips those whose inputs are missing).
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub attack: String,
    /// Write run.json, scores.csv, scores-<attack>.npy, roc.csv and report.html here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite a --out folder that holds another run.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub options: AttackOptions,
}

/// Attack settings (defaults: `memaudit_audit::mia::config`).
#[derive(clap::Args, Debug)]
pub struct AttackOptions {
    /// A JSON MiaConfig (any subset of {"lira", "rmia", "lm", "metrics"}); flags override it.
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// LiRA variance: auto (per example with >= 32 IN and OUT values), per-example, global.
    #[arg(long, value_parser = ["auto", "per-example", "global"])]
    pub variance: Option<String>,
    /// LiRA centre of the IN/OUT values.
    #[arg(long, value_parser = ["median", "mean"])]
    pub center: Option<String>,
    /// An example without IN (online) or OUT shadow values: error, or TF Privacy's column mean.
    #[arg(long, value_parser = ["error", "column-mean"])]
    pub missing_shadows: Option<String>,
    /// RMIA's likelihood-ratio threshold gamma (default 2).
    #[arg(long, value_name = "G")]
    pub rmia_gamma: Option<f64>,
    /// RMIA's softmax temperature where logits are at hand (default 2).
    #[arg(long, value_name = "T")]
    pub rmia_temperature: Option<f64>,
    /// RMIA offline `a` (default: tuned on 0..1, or 0.3 with fewer than 2 reference models).
    #[arg(long, value_name = "A")]
    pub rmia_a: Option<f64>,
    /// Min-K% fraction (default 0.2).
    #[arg(long, value_name = "K")]
    pub min_k: Option<f64>,
    /// FPRs at which to report the TPR (default 0.01,0.001,0.0001).
    #[arg(long, value_name = "LIST")]
    pub fpr: Option<String>,
}

impl AttackOptions {
    /// The library config: defaults, then --config, then flags.
    pub fn config(&self) -> Result<MiaConfig> {
        let mut c = match &self.config {
            None => MiaConfig::default(),
            Some(p) => {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("--config {}: cannot read", p.display()))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| user(format!("--config {}: {e}", p.display())))?
            }
        };
        if let Some(v) = &self.variance {
            c.lira.variance = match v.as_str() {
                "per-example" => VarianceMode::PerExample,
                "global" => VarianceMode::Global,
                _ => VarianceMode::Auto,
            };
        }
        if let Some(v) = &self.center {
            c.lira.center = if v == "mean" {
                Center::Mean
            } else {
                Center::Median
            };
        }
        if let Some(v) = &self.missing_shadows {
            c.lira.missing = if v == "column-mean" {
                MissingShadows::ColumnMean
            } else {
                MissingShadows::Error
            };
        }
        let flag = |name: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool, what: &str| match v {
            Some(x) if !ok(x) => Err(user(format!("--{name} {x}: {what}"))),
            _ => Ok(v),
        };
        if let Some(g) = flag(
            "rmia-gamma",
            self.rmia_gamma,
            &|x| x > 0.0 && x.is_finite(),
            "must be > 0",
        )? {
            c.rmia.gamma = g;
        }
        if let Some(t) = flag(
            "rmia-temperature",
            self.rmia_temperature,
            &|x| x > 0.0 && x.is_finite(),
            "must be > 0",
        )? {
            c.rmia.temperature = t;
        }
        if let Some(a) = flag(
            "rmia-a",
            self.rmia_a,
            &|x| (0.0..=1.0).contains(&x),
            "must be in [0, 1]",
        )? {
            c.rmia.a = Some(a);
        }
        if let Some(k) = flag(
            "min-k",
            self.min_k,
            &|x| x > 0.0 && x <= 1.0,
            "must be in (0, 1]",
        )? {
            c.lm.min_k_fraction = k;
        }
        if let Some(list) = &self.fpr {
            c.metrics.fpr_targets = list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && *f < 1.0)
                        .ok_or_else(|| user(format!("--fpr {list}: {s:?} is not a rate in (0, 1)")))
                })
                .collect::<Result<_>>()?;
        }
        c.validate().map_err(|e| user(e.to_string()))?;
        Ok(c)
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let Some(path) = &args.scores else {
        return Err(user(
            "give --scores FILE.npz (signals of models trained elsewhere; see docs/mia.md)",
        ));
    };
    let selection = AttackSelection::parse(&args.attack)
        .map_err(|e| user(format!("--attack {}: {e}", args.attack)))?;
    let cfg = args.options.config()?;
    let set = mia::npz::read_score_file(path)
        .map_err(|e| user(format!("--scores {}: {e}", path.display())))?;
    ctx.note(format!(
        "{}: {} examples, {} shadow models, {} queries, signal {}{}",
        path.display(),
        set.n(),
        set.shadows(),
        set.queries(),
        set.signal_kind().name(),
        set.population()
            .map_or(String::new(), |p| format!(", {} population points", p.n))
    ));
    let started = std::time::Instant::now();
    let report = mia::run(&set, &selection, &cfg)
        .map_err(|e| user(format!("--scores {}: {e}", path.display())))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut json = report_json(&report);
    json["scores"] = json!(path.display().to_string());
    json["seconds"] = num(seconds);
    if let Some(out) = &args.out {
        let files = write_outputs(out, args, &report, &set, &json)?;
        json["files"] = json!(files);
    }
    Ok(Report::new(report_text(&report, seconds), json))
}

/// The typed result as the JSON object of `--json`: a top-level "attacks" array with, per
/// attack, "auc", "balanced_accuracy" and "tpr_at_fpr" {"0.01": ...} (only the FPRs where at
/// least the configured number of false positives is expected; the others are in
/// "tpr_at_fpr_skipped" with the reason).
pub fn report_json(r: &MiaReport) -> Value {
    let attacks: Vec<Value> = r
        .attacks
        .iter()
        .map(|a| {
            let mut tpr = Map::new();
            let mut ci = Map::new();
            let mut skipped = Map::new();
            if let Some(m) = &a.metrics {
                for t in &m.tpr_at_fpr {
                    let key = format!("{}", t.target_fpr);
                    match (t.tpr, t.tpr_ci) {
                        (Some(v), Some((lo, hi))) => {
                            tpr.insert(key.clone(), num(v));
                            ci.insert(
                                key,
                                json!({"lower": num(lo), "upper": num(hi), "fpr": opt_num(t.fpr), "threshold": opt_num(t.threshold), "true_positives": t.true_positives}),
                            );
                        }
                        _ => {
                            skipped.insert(key, json!(t.skipped));
                        }
                    }
                }
            }
            let per_class: Vec<Value> = a
                .per_class
                .iter()
                .map(|c| {
                    json!({
                        "class": c.class,
                        "examples": c.examples,
                        "auc": opt_num(c.metrics.as_ref().map(|m| m.auc)),
                        "balanced_accuracy": opt_num(c.metrics.as_ref().map(|m| m.balanced_accuracy)),
                    })
                })
                .collect();
            json!({
                "attack": a.attack.name(),
                "auc": opt_num(a.metrics.as_ref().map(|m| m.auc)),
                "balanced_accuracy": opt_num(a.metrics.as_ref().map(|m| m.balanced_accuracy)),
                "tpr_at_fpr": tpr,
                "tpr_at_fpr_ci": ci,
                "tpr_at_fpr_skipped": skipped,
                "members": a.metrics.as_ref().map(|m| m.members),
                "non_members": a.metrics.as_ref().map(|m| m.non_members),
                "per_class": per_class,
                "notes": a.notes,
            })
        })
        .collect();
    json!({
        "examples": r.examples,
        "shadow_models": r.shadow_models,
        "queries": r.queries,
        "signal_kind": r.signal_kind.name(),
        "population": r.population,
        "attacks": attacks,
        "skipped": r.skipped.iter().map(|s| json!({"attack": s.attack.name(), "reason": s.reason})).collect::<Vec<_>>(),
        "config": serde_json::to_value(&r.config).unwrap_or(Value::Null),
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// The table people read.
pub fn report_text(r: &MiaReport, seconds: f64) -> String {
    let fprs: Vec<f64> = r.config.metrics.fpr_targets.clone();
    let mut text = format!(
        "membership inference: {} examples, {} shadow models, {} queries ({}){}\n",
        r.examples,
        r.shadow_models,
        r.queries,
        r.signal_kind.name(),
        r.population
            .map_or(String::new(), |p| format!(", {p} population points"))
    );
    let mut header = format!("{:<24}{:>8}{:>10}", "attack", "AUC", "bal.acc");
    for f in &fprs {
        header += &format!("{:>26}", format!("TPR@{}% FPR [95% CI]", 100.0 * f));
    }
    text += &header;
    text += "\n";
    for a in &r.attacks {
        let mut line = format!("{:<24}", a.attack.name());
        match &a.metrics {
            None => line += "  (no target_in: scores only)",
            Some(m) => {
                line += &format!("{:>8.4}{:>10.4}", m.auc, m.balanced_accuracy);
                for t in &m.tpr_at_fpr {
                    let cell = match (t.tpr, t.tpr_ci) {
                        (Some(v), Some((lo, hi))) => {
                            format!("{} [{}, {}]", pct(Some(v)), pct(Some(lo)), pct(Some(hi)))
                        }
                        _ => "-".into(),
                    };
                    line += &format!("{cell:>26}");
                }
            }
        }
        text += &line;
        text += "\n";
    }
    if let Some(m) = r.attacks.iter().find_map(|a| a.metrics.as_ref()) {
        let hidden: Vec<String> = m
            .tpr_at_fpr
            .iter()
            .filter(|t| t.tpr.is_none())
            .map(|t| format!("{}%", 100.0 * t.target_fpr))
            .collect();
        if !hidden.is_empty() {
            text += &format!(
                "- : TPR at FPR {} not reported: {} non-members give fewer than {} expected false positives there\n",
                hidden.join(", "),
                m.non_members,
                r.config.metrics.min_expected_false_positives
            );
        }
    }
    for a in &r.attacks {
        for n in &a.notes {
            text += &format!("{}: {n}\n", a.attack.name());
        }
    }
    for s in &r.skipped {
        text += &format!("skipped {}: {}\n", s.attack.name(), s.reason);
    }
    text += &format!("({seconds:.2}s)");
    text
}

/// ROC points on log10 axes, thinned to about 300 points spread evenly in log FPR.
fn log_roc(m: &mia::MembershipMetrics) -> Vec<(f64, f64)> {
    let fpr = m.roc.fpr();
    let tpr = m.roc.tpr();
    let floor = 0.5 / m.non_members as f64;
    let mut pts = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for (f, t) in fpr.iter().zip(&tpr) {
        let x = f.max(floor).log10();
        if x - last >= 0.01 || *f == 1.0 {
            pts.push((x, t.max(floor).log10()));
            last = x;
        }
    }
    pts
}

fn write_outputs(
    out: &Path,
    args: &Args,
    report: &MiaReport,
    set: &ScoreSet,
    json: &Value,
) -> Result<Vec<String>> {
    let config = json!({"scores": args.scores.as_ref().map(|p| p.display().to_string()), "attack": args.attack, "mia": report.config});
    let mut rd = RunDir::open(
        out,
        "mia",
        &config,
        None,
        Reuse {
            force: args.force,
            resume: false,
        },
    )?;
    let mut files = Vec::new();
    let csv = out.join("scores.csv");
    mia::export::write_scores_csv(&csv, report, set).map_err(|e| user(e.to_string()))?;
    files.push(csv);
    files.extend(mia::export::write_scores_npy(out, report).map_err(|e| user(e.to_string()))?);
    let roc = out.join("roc.csv");
    mia::export::write_roc_csv(&roc, report).map_err(|e| user(e.to_string()))?;
    files.push(roc);
    let mut html = HtmlReport::new("memaudit mia");
    html.heading("Membership inference");
    html.pre(&report_text(
        report,
        json["seconds"].as_f64().unwrap_or(0.0),
    ));
    let series: Vec<Series> = report
        .attacks
        .iter()
        .filter_map(|a| {
            a.metrics
                .as_ref()
                .map(|m| Series::line(a.attack.name(), log_roc(m)))
        })
        .collect();
    if !series.is_empty() {
        let mut all = series;
        let chance: Vec<(f64, f64)> = all[0].points.iter().map(|p| (p.0, p.0)).collect();
        all.push(Series::line("chance", chance));
        for s in &mut all {
            s.markers = false;
        }
        html.svg(&chart("ROC (log-log)", "log10 FPR", "log10 TPR", &all));
    }
    let html_path = out.join("report.html");
    html.write(&html_path)?;
    files.push(html_path);
    rd.set("results", json.clone())?;
    rd.finish("done")?;
    Ok(files.iter().map(|p| p.display().to_string()).collect())
}
