//! `memaudit mia`: membership inference (LOSS, LiRA, RMIA and the LM baselines) with LiRA's
//! low-FPR metrics.
//!
//! `--scores FILE.npz` attacks the signals of a target and shadow models trained elsewhere (the
//! format is in `docs/mia.md`); nothing is trained. `--data D --pairs P` trains a target and
//! 2P shadow models of memaudit's own classifiers through the engine (cached, resumable,
//! `--only-model I` for one model per process), scores them and attacks. The protocol lives in
//! `memaudit_audit::mia`; this file parses flags and renders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use memaudit_audit::mia::{
    self, AttackSelection, Center, MiaConfig, MiaReport, MissingShadows, ScoreSet, VarianceMode,
};

use memaudit_audit::mia::shadow::{self, ShadowPlan};
use memaudit_audit::mia::{Attack, Population, SignalKind};
use memaudit_engine::augment::ShiftAugment;
use memaudit_engine::train::Dataset;

use super::args::{InputShape, ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::train::{flatten_for, prepare, train_config};
use crate::Ctx;
use crate::datasets::DataArgs;
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

impl AugmentArgs {
    /// The engine's augmentation for this input, or an error naming the flag.
    pub fn resolve(&self, input: &InputShape, data: &str) -> Result<Option<ShiftAugment>> {
        match (self.augment.as_deref(), input) {
            (None | Some("none"), _) => Ok(None),
            (
                Some(_),
                InputShape::Image {
                    channels,
                    height,
                    width,
                    ..
                },
            ) => ShiftAugment::new(ShiftAugment::DEFAULT_MAX_SHIFT, *channels, *height, *width)
                .map(Some)
                .map_err(|e| user(format!("--augment shift: {e}"))),
            (Some(a), _) => Err(user(format!(
                "--augment {a}: --data {data} is not an image dataset (shifts apply to images: digits, mnist, fashion-mnist)"
            ))),
        }
    }
}

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
    if args.scores.is_some() && args.shadows.pairs.is_some() {
        return Err(user(
            "--scores and --pairs exclude each other: attack a score file, or train shadow models",
        ));
    }
    if args.scale.requested() && args.shadows.pairs.is_none() {
        return Err(user(
            "--shard/--shards split shadow-model training: give --data D --pairs P",
        ));
    }
    if args.shadows.pairs.is_some() {
        if args.scale.emit.is_some() {
            return super::mia_shard::emit_jobs(args);
        }
        return run_training(args, ctx);
    }
    let Some(path) = &args.scores else {
        return Err(user(
            "give --scores FILE.npz (signals of models trained elsewhere; see docs/mia.md), or --data D --pairs P to train shadow models",
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
        let files = write_outputs(out, args, &report, &set, &json, None)?;
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
    dp_line: Option<(f64, f64)>,
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

/// Each window's text (the zlib baseline), when the data came with a tokenizer.
fn window_texts(
    pool: &dyn Dataset,
    tokenizer: Option<&memaudit_data::tokenizer::Tokenizer>,
) -> Option<Vec<Vec<u8>>> {
    let tok = tokenizer?;
    let idx: Vec<usize> = (0..pool.len()).collect();
    let mut out = Vec::with_capacity(pool.len());
    for c in idx.chunks(256) {
        let b = pool.batch(c);
        let memaudit_engine::Value::Tokens(t) = &b.input else {
            return None;
        };
        for j in 0..t.batch {
            // The window's tokens: its inputs and, for the last position, its final target.
            let mut ids: Vec<u32> = (0..t.seq_len).map(|s| t.ids[s * t.batch + j]).collect();
            ids.push(b.targets[(t.seq_len - 1) * t.batch + j]);
            out.push(tok.decode(&ids).ok()?.into_bytes());
        }
    }
    Some(out)
}

fn run_training(args: &Args, ctx: &Ctx) -> Result<Report> {
    let sh = &args.shadows;
    let pairs = sh.pairs.unwrap_or(0);
    if pairs == 0 {
        return Err(user("--pairs must be at least 1 (2 shadow models)"));
    }
    let selection = AttackSelection::parse(&args.attack)
        .map_err(|e| user(format!("--attack {}: {e}", args.attack)))?;
    let cfg = args.options.config()?;
    let prepared = prepare(&args.data)?;
    // Language models: examples are the text windows of --seq-len tokens, the signal is the
    // sequence log-likelihood.
    let lm = matches!(prepared.input, InputShape::Tokens { .. });
    if !lm
        && !matches!(
            prepared.input,
            InputShape::Image { .. } | InputShape::Flat { .. }
        )
    {
        return Err(user(format!(
            "--data {}: shadow training supports classifier datasets with dense inputs (digits, mnist, fashion-mnist, adult) and language-model text (ptb, embedded, ...); for other models write a score file (docs/mia.md)",
            args.data.data
        )));
    }
    let model_cfg = args.model.config(&prepared.input)?;
    let prepared = flatten_for(&model_cfg, prepared);
    let model = model_cfg
        .build()
        .map_err(|e| user(format!("model flags: {e}")))?;
    let pool = prepared.train.as_ref();
    let n = pool.len();
    if sh.epochs == 0 {
        return Err(user("--epochs must be at least 1"));
    }
    if sh.batch_size == 0 || n < 2 || sh.batch_size > n / 2 {
        return Err(user(format!(
            "--data {}: {n} examples are too small to split into pairs with --batch-size {} (each model trains on a half of {})",
            args.data.data,
            sh.batch_size,
            n / 2
        )));
    }
    let needs_out = || {
        user(
            "--out DIR is needed to train shadow models (run folder; the cache defaults to shadow-cache next to it)",
        )
    };
    let cache = match (&sh.cache, &args.out) {
        (Some(c), _) => c.clone(),
        (None, Some(out)) => out
            .parent()
            .map_or_else(|| PathBuf::from("shadow-cache"), |p| p.join("shadow-cache")),
        (None, None) => return Err(needs_out()),
    };
    let run_args = RunArgs {
        epochs: sh.epochs,
        batch_size: sh.batch_size,
        seed: Some(sh.seed),
        out: args.out.clone().unwrap_or_default(),
        force: args.force,
        resume: false,
    };
    // Each model trains on half the pool: privacy (noise calibration, q) is for n / 2 examples.
    let train_cfg = train_config(
        &args.privacy,
        &args.optim,
        &run_args,
        &model,
        &model_cfg,
        n / 2,
        sh.seed,
        ctx,
    )?;
    let hash =
        shadow::dataset_hash(pool).map_err(|e| user(format!("--data {}: {e}", args.data.data)))?;
    let augment = sh.augment.resolve(&prepared.input, &args.data.data)?;
    let queries = match (augment, sh.queries) {
        (None, Some(k)) if k != 1 => {
            return Err(user(format!(
                "--queries {k}: without --augment shift there is only the identity query"
            )));
        }
        (None, _) => shadow::Queries::identity(),
        (Some(a), k) => shadow::Queries::shifts(a, k.unwrap_or(a.queries().len()))
            .map_err(|e| user(format!("--queries: {e}")))?,
    };
    let plan = ShadowPlan::new(train_cfg, hash.clone(), n, pairs, sh.seed)
        .map_err(|e| user(format!("--data {}: {e}", args.data.data)))?
        .with_augment(augment);
    shadow::open_cache(&cache).map_err(|e| user(format!("--cache: {e}")))?;
    if args.scale.requested() {
        return super::mia_shard::run_shard(args, ctx, &plan, &cache, pool);
    }
    let indices: Vec<usize> = match sh.only_model {
        Some(i) if i >= plan.models() => {
            return Err(user(format!(
                "--only-model {i}: the plan has models 0..={} ({} shadow, {} target)",
                plan.target_index(),
                2 * pairs,
                plan.target_index()
            )));
        }
        Some(i) => vec![i],
        None => (0..plan.models()).collect(),
    };
    let started = std::time::Instant::now();
    let role = |i: usize| {
        if i == plan.target_index() {
            "target".to_string()
        } else {
            format!("pair {}, side {}", i / 2, i % 2)
        }
    };
    let mut models = Vec::with_capacity(indices.len());
    let (mut trained, mut reused) = (0, 0);
    for &i in &indices {
        let m = shadow::train_or_reuse(&plan, i, &cache, pool)
            .map_err(|e| user(format!("model {i} ({}): {e}", role(i))))?;
        if m.reused {
            reused += 1;
            ctx.note(format!(
                "model {i} ({}): reused from the cache, key {}",
                role(i),
                m.key
            ));
        } else {
            trained += 1;
            ctx.note(format!(
                "model {i} ({}): trained in {:.1}s, key {}",
                role(i),
                m.seconds,
                m.key
            ));
        }
        models.push(m);
    }
    let train_seconds = started.elapsed().as_secs_f64();
    if sh.only_model.is_some() {
        let m = &models[0];
        return Ok(Report::new(
            format!(
                "model {} ({}): {} {}, key {}",
                m.index,
                role(m.index),
                if m.reused {
                    "reused from"
                } else {
                    "written to"
                },
                m.path.display(),
                m.key
            ),
            json!({"model": m.index, "role": role(m.index), "key": m.key, "reused": m.reused, "path": m.path.display().to_string(), "seconds": num(m.seconds), "cache": cache.display().to_string()}),
        ));
    }
    let Some(out) = &args.out else {
        return Err(needs_out());
    };
    // Signals of every model on the pool and on the population points.
    let population = prepared
        .valid
        .as_deref()
        .filter(|v| !v.is_empty() && sh.population > 0);
    let pop_subset = population.map(|v| shadow::Subset {
        inner: v,
        idx: (0..v.len().min(sh.population)).collect(),
    });
    let t = cfg.rmia.temperature;
    let k = 2 * pairs;
    let mut phi = Vec::with_capacity(models.len());
    let mut lp = Vec::with_capacity(models.len());
    let mut pop_phi = Vec::with_capacity(models.len());
    let mut pop_lp = Vec::with_capacity(models.len());
    // LMs: the target's per-token log-probabilities (Min-K%, zlib).
    let mut target_tokens = None;
    for m in &models {
        if lm {
            let (seq, tok) =
                shadow::lm_signals(&model, &m.params, pool).map_err(|e| user(e.to_string()))?;
            phi.push(seq);
            if m.index == plan.target_index() {
                target_tokens = Some(tok);
            }
            if let Some(p) = &pop_subset {
                let (seq, _) = shadow::lm_signals(&model, &m.params, p as &dyn Dataset)
                    .map_err(|e| user(e.to_string()))?;
                pop_phi.push(seq);
            }
            continue;
        }
        let (a, b) = shadow::signals(&model, &m.params, pool, t, &queries)
            .map_err(|e| user(e.to_string()))?;
        phi.push(a);
        lp.push(b);
        if let Some(p) = &pop_subset {
            let (a, b) = shadow::signals(&model, &m.params, p as &dyn Dataset, t, &queries)
                .map_err(|e| user(e.to_string()))?;
            pop_phi.push(a);
            pop_lp.push(b);
        }
    }
    let member: Vec<Vec<bool>> = (0..plan.models()).map(|i| plan.membership(i)).collect();
    let q = queries.len();
    let labels = if lm { vec![] } else { shadow::labels(pool) };
    let build = |sig: &[Vec<f64>], pop: &[Vec<f64>], kind: SignalKind| -> Result<ScoreSet> {
        let target = sig[k].clone();
        let shadow: Vec<f64> = sig[..k].concat();
        let shadow_in: Vec<bool> = member[..k].concat();
        let mut set = ScoreSet::new(n, q, target, k, shadow, shadow_in, kind)
            .and_then(|s| s.with_target_in(member[k].clone()))
            .map_err(|e| user(e.to_string()))?;
        if !labels.is_empty() {
            set = set
                .with_class(labels.clone())
                .map_err(|e| user(e.to_string()))?;
        }
        if !pop.is_empty() {
            set = set
                .with_population(Population {
                    n: pop[k].len() / q,
                    target: pop[k].clone(),
                    shadow: pop[..k].concat(),
                })
                .map_err(|e| user(e.to_string()))?;
        }
        Ok(set)
    };
    let attack_started = std::time::Instant::now();
    let (phi_set, mut report) = if lm {
        // One signal, the sequence log-likelihood, for LiRA and RMIA; the target's per-token
        // log-probabilities and the windows' text for the reference-free baselines.
        let mut set = build(&phi, &pop_phi, SignalKind::LogLikelihood)?;
        if let Some(tok) = target_tokens {
            set = set
                .with_token_logprob(tok)
                .map_err(|e| user(e.to_string()))?;
        }
        if let Some(texts) = window_texts(pool, prepared.tokenizer.as_ref()) {
            set = set.with_text(texts).map_err(|e| user(e.to_string()))?;
        }
        let report = mia::run(&set, &selection, &cfg).map_err(|e| user(e.to_string()))?;
        (set, report)
    } else {
        let phi_set = build(&phi, &pop_phi, SignalKind::LogitConfidence)?;
        // RMIA's Pr(x|θ) = softmax(z/T)_y needs the logits, not phi: its own set of
        // log-probabilities.
        let lp_set = build(&lp, &pop_lp, SignalKind::LogLikelihood)?;
        let mut report = mia::run(&phi_set, &selection, &cfg).map_err(|e| user(e.to_string()))?;
        let rmia_wanted: Vec<Attack> = report
            .attacks
            .iter()
            .map(|a| a.attack)
            .filter(|a| matches!(a, Attack::RmiaOnline | Attack::RmiaOffline))
            .collect();
        if !rmia_wanted.is_empty() {
            let r = mia::run(&lp_set, &AttackSelection::Only(rmia_wanted), &cfg)
                .map_err(|e| user(e.to_string()))?;
            for mut a in r.attacks {
                a.notes.push(format!("Pr(x|θ) = softmax(logits / {t})_y"));
                if let Some(slot) = report.attacks.iter_mut().find(|b| b.attack == a.attack) {
                    *slot = a;
                }
            }
        }
        (phi_set, report)
    };
    let attack_seconds = attack_started.elapsed().as_secs_f64();
    // Private models: how each attack's ROC sits against TPR <= e^eps FPR + delta.
    let dp_line = args
        .privacy
        .target_epsilon
        .filter(|_| plan.train.privacy.is_some())
        .map(|eps| (eps, args.privacy.delta));
    let mut tradeoffs = Map::new();
    if let Some((eps, delta)) = dp_line {
        for a in &mut report.attacks {
            if let Some(m) = &a.metrics {
                let t = mia::dp_tradeoff(&m.roc, eps, delta, cfg.metrics.confidence);
                a.notes.push(format!(
                    "(eps {eps}, delta {delta})-DP: max TPR - (e^eps FPR + delta) = {:.4} at FPR {:.4}, TPR {:.4}; {} ROC points significantly above the line",
                    t.max_excess, t.at.0, t.at.1, t.significant_violations
                ));
                tradeoffs.insert(
                    a.attack.name().into(),
                    serde_json::to_value(&t).unwrap_or(Value::Null),
                );
            }
        }
    }
    let mut json = report_json(&report);
    if dp_line.is_some() {
        json["dp_tradeoff"] = Value::Object(tradeoffs);
    }
    json["data"] = json!(args.data.data);
    json["data_hash"] = json!(hash);
    json["pairs"] = json!(pairs);
    json["seed"] = json!(sh.seed);
    json["augment"] = json!(augment);
    json["query_shifts"] = json!(queries.shifts_list());
    json["cache"] = json!(cache.display().to_string());
    json["models_trained"] = json!(trained);
    json["models_reused"] = json!(reused);
    json["train"] = serde_json::to_value(&plan.train).unwrap_or(Value::Null);
    json["train_seconds"] = num(train_seconds);
    json["seconds"] = num(attack_seconds);
    let files = write_outputs(out, args, &report, &phi_set, &json, dp_line)?;
    let npz = out.join("scores.npz");
    mia::npz::write_score_file(&npz, &phi_set).map_err(|e| user(e.to_string()))?;
    let mut files = files;
    files.push(npz.display().to_string());
    json["files"] = json!(files);
    let mut text = format!(
        "{} on {} ({} examples, hash {}): target + {} shadow models ({} trained, {} reused from {}) in {:.1}s\n",
        args.model.model.as_deref().unwrap_or("default model"),
        args.data.data,
        n,
        &hash[..12],
        k,
        trained,
        reused,
        cache.display(),
        train_seconds
    );
    text += &report_text(&report, attack_seconds);
    Ok(Report::new(text, json))
}
