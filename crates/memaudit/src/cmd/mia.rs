//! `memaudit mia`: membership inference (LOSS, LiRA, RMIA and the LM baselines) with LiRA's
//! low-FPR metrics.
//!
//! `--scores FILE.npz` attacks the signals of a target and shadow models trained elsewhere (the
//! format is in `docs/mia.md`); nothing is trained. `--data D --pairs P` trains a target and
//! 2P shadow models of memaudit's own classifiers through the engine (cached, resumable,
//! `--only-model I` for one model per process), scores them and attacks. The experiment lives in
//! `memaudit_experiments::mia` (the attacks in `memaudit_audit::mia`); this file turns flags
//! into its config and renders its result: text, `--json` (the result serialised) and the run
//! folder.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Value, json};

use memaudit_audit::mia::{self, Center, MiaReport, MissingShadows, VarianceMode};
use memaudit_experiments::Observer;
use memaudit_experiments::mia::{self as lib, MiaConfig, MiaResult, ShadowSettings};

use super::args::{ModelArgs, OptimArgs, PrivacyArgs};
use super::experiment::{self, ConfigFlags, Resolved};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::Report;
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
    /// Write run.json, scores.csv, `scores-<attack>.npy`, roc.csv and report.html here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite a --out folder that holds another run.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub options: AttackOptions,
    #[command(flatten)]
    pub shadows: ShadowArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    /// Scale-out: train one shard of the shadow models (see docs/scale-out.md).
    #[command(flatten)]
    pub scale: super::scale::ShardArgs,
    /// `--config FILE.toml|.json` (the whole experiment; an attack-settings file with keys
    /// lira, rmia, lm, metrics is one) and `--print-config`.
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `--augment`: training-time augmentation of image batches (shared by `train` and `mia`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AugmentArgs {
    /// Augment training batches: `shift` moves each image by a random +-2 px per step and
    /// example (zero padding; DP-SGD clips each augmented example once, the accountant is
    /// unchanged). Image datasets only. `mia` then queries the same shifts.
    #[arg(long, value_parser = ["shift", "none"])]
    pub augment: Option<String>,
}

impl AugmentArgs {}

/// Training a target and shadow models (instead of --scores).
#[derive(clap::Args, Debug)]
pub struct ShadowArgs {
    /// Train a target and 2 x P shadow models in complementary pairs on --data (a classifier
    /// dataset: digits, mnist, fashion-mnist, adult).
    #[arg(long, value_name = "P")]
    pub pairs: Option<usize>,
    /// Epochs of every model.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Expected batch size of every model (each trains on half of the pool).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed of the membership splits and of every model (DP noise of shadows is seeded from it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Shadow-model cache (default: shadow-cache next to --out). Models are keyed by everything
    /// that changes them; complete ones are reused.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Train (or find) only model I (0..2P-1 shadow, 2P target) into the cache and stop: one
    /// model per process for a scheduler.
    #[arg(long, value_name = "I")]
    pub only_model: Option<usize>,
    /// Population points for RMIA: the first N test examples (no model trains on them).
    #[arg(long, default_value_t = 1000)]
    pub population: usize,
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// With --augment shift: membership queries per example, the identity first, then the
    /// shifts nearest to it (default all 25 of +-2 px; fewer is faster).
    #[arg(long, value_name = "K")]
    pub queries: Option<usize>,
    /// Target models evaluated, scores pooled (the LiRA paper's protocol): 1 is the separate
    /// target; K > 1 adds shadow models 0..K-2, each attacked with all the other models as its
    /// shadows. About K x pool / 2 non-members, so lower FPRs become reportable.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub targets: usize,
}

/// Attack settings (defaults: `memaudit_audit::mia::config`); each overrides `--config`.
#[derive(clap::Args, Debug)]
pub struct AttackOptions {
    /// LiRA variance: auto (per example with >= 32 IN and OUT values), per-example, global.
    #[arg(long, value_parser = ["auto", "per-example", "global"])]
    pub variance: Option<String>,
    /// LiRA centre of the IN/OUT values.
    #[arg(long, value_parser = ["median", "mean"])]
    pub center: Option<String>,
    /// An example without IN (online) or OUT shadow values: error, or TF Privacy's column mean.
    #[arg(long, value_parser = ["error", "column-mean"])]
    pub missing_shadows: Option<String>,
    /// RMIA's likelihood-ratio threshold gamma (default 1).
    #[arg(long, value_name = "G")]
    pub rmia_gamma: Option<f64>,
    /// RMIA's softmax temperature where logits are at hand (default 1).
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
    /// Apply the flags given to the attack settings of `c` (flags override the file).
    pub fn apply(&self, c: &mut MiaConfig) -> Result<()> {
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
        Ok(())
    }
}

/// The experiment's config from the flags.
fn mia_config(args: &Args) -> Result<MiaConfig> {
    let sh = &args.shadows;
    let mut c = MiaConfig {
        scores: args.scores.clone(),
        attack: args.attack.clone(),
        shadows: ShadowSettings {
            pairs: sh.pairs,
            epochs: sh.epochs,
            batch_size: sh.batch_size,
            seed: sh.seed,
            cache: sh.cache.clone(),
            only_model: sh.only_model,
            population: sh.population,
            augment: sh.augment.augment.clone(),
            queries: sh.queries,
            targets: sh.targets,
        },
        data: args.data.settings(),
        model: args.model.settings(),
        optim: args.optim.settings(),
        privacy: args.privacy.settings(),
        ..MiaConfig::default()
    };
    args.options.apply(&mut c)?;
    Ok(c)
}

/// Notes to stderr as the other commands write them (shown with `--json`, silenced by
/// `--quiet`).
struct Notes<'a>(&'a Ctx);

impl Observer for Notes<'_> {
    fn note(&mut self, text: &str) {
        self.0.note(text);
    }
}

const NEEDS_OUT: &str = "--out DIR is needed to train shadow models (run folder; the cache defaults to shadow-cache next to it)";

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.scale.requested() && args.shadows.pairs.is_none() {
        return Err(user(
            "--shard/--shards split shadow-model training: give --data D --pairs P",
        ));
    }
    if args.shadows.pairs.is_some() && args.scale.emit.is_some() {
        return super::mia_shard::emit_jobs(args);
    }
    let resolved = experiment::resolve_with(&args.config, mia_config(args)?, ctx, |c| {
        // The flags whose names are not their fields' override the file here.
        args.options.apply(c)?;
        // The cache defaults to shadow-cache next to the run folder.
        if c.shadows.cache.is_none()
            && let Some(out) = &args.out
        {
            c.shadows.cache = Some(
                out.parent()
                    .map_or_else(|| PathBuf::from("shadow-cache"), |p| p.join("shadow-cache")),
            );
        }
        Ok(())
    })?;
    let cfg = match resolved {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let lib_err = |e| experiment::cli_error(e, &args.config);
    let mut notes = Notes(ctx);
    if cfg.scores.is_none() {
        if cfg.shadows.cache.is_none() {
            return Err(user(NEEDS_OUT));
        }
        if args.scale.requested() {
            let job = lib::ShadowJob::prepare(&cfg, &mut notes).map_err(lib_err)?;
            return super::mia_shard::run_shard(args, ctx, &job);
        }
        if cfg.shadows.only_model.is_some() {
            let m = lib::train_one(&cfg, &mut notes).map_err(lib_err)?;
            let text = format!(
                "model {} ({}): {} {}, key {}",
                m.model,
                m.role,
                if m.reused {
                    "reused from"
                } else {
                    "written to"
                },
                m.path,
                m.key
            );
            return Ok(Report::new(text, serde_json::to_value(&m)?));
        }
        if args.out.is_none() {
            return Err(user(NEEDS_OUT));
        }
    }
    let mut result = lib::run(&cfg, &mut notes).map_err(lib_err)?;
    let json = serde_json::to_value(&result)?;
    let mut text = String::new();
    if let Some(s) = &result.shadows {
        text = format!(
            "{} on {} ({} examples, hash {}): target + {} shadow models ({} trained, {} reused from {}) in {:.1}s{}\n",
            cfg.model.model.as_deref().unwrap_or("default model"),
            s.data,
            result.examples / s.targets.max(1),
            &s.data_hash[..12],
            2 * s.pairs,
            s.models_trained,
            s.models_reused,
            s.cache,
            s.train_seconds.0,
            if s.targets > 1 {
                format!(
                    "; {} targets (the separate one and shadow models 0..{}), each against the other {} models, scores pooled",
                    s.targets,
                    s.targets - 2,
                    2 * s.pairs
                )
            } else {
                String::new()
            }
        );
    }
    text += &report_text(&result.report, result.seconds.0);
    if let Some(out) = &args.out {
        let mut files = write_outputs(out, args, &cfg, &result, &json)?;
        if result.shadows.is_some() {
            let npz = out.join("scores.npz");
            mia::npz::write_score_file(&npz, &result.set).map_err(|e| user(e.to_string()))?;
            files.push(npz.display().to_string());
        }
        result.files = files;
    }
    Ok(Report::new(text, serde_json::to_value(&result)?))
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
    cfg: &MiaConfig,
    result: &MiaResult,
    json: &Value,
) -> Result<Vec<String>> {
    let (report, set, dp_line) = (&result.report, &result.set, result.dp_line);
    let config = json!({"scores": cfg.scores.as_ref().map(|p| p.display().to_string()), "attack": cfg.attack, "mia": report.config});
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
        if let Some((eps, delta)) = dp_line {
            let line = chance
                .iter()
                .map(|p| (p.0, (eps.exp() * 10f64.powf(p.0) + delta).min(1.0).log10()))
                .collect();
            all.push(Series::line(
                &format!("(eps {eps}, delta {delta})-DP bound"),
                line,
            ));
        }
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
