//! `memaudit secret-sharer`: The Secret Sharer (Carlini, Liu, Erlingsson, Kos, Song, USENIX
//! Security 2019) end to end. The protocol runs in `memaudit_experiments::secret_sharer` (canaries,
//! training with exposure tracking, the final exposure measurement, extraction, the run folder);
//! this module turns the flags into its config, runs it, and renders the text, the JSON (the
//! result serialised) and report.html.
//!
//! The library's canary pieces are re-exported here for the commands that reuse them (`exposure`,
//! `extract`, `export`, `import`, `sample`, `demo`), with the report sections they share.

use anyhow::Result;
use memaudit_audit::ExposureLog;
use memaudit_experiments::secret_sharer::{
    self as library, CanarySettings, ExposureSettings, ExtractionSettings, RunHooks,
    TrackingSettings,
};
pub use memaudit_experiments::secret_sharer::{
    Audit, CHANCE_EXPOSURE, CanarySet, MANIFEST_FILE, REFERENCES_FILE, RepSummary,
    SecretSharerConfig, SecretSharerResult, parse_template, separator, tokenize_template,
    walk_options,
};
use serde::Serialize;

use super::args::{ModelArgs, OptimArgs, PrivacyArgs, RunArgs};
use super::experiment::{self, CliObserver, ConfigFlags, Resolved};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training text (the same as --data): a UTF-8 file or folder, `embedded`, or a fetched
    /// corpus such as `ptb`.
    #[arg(long, value_name = "PATH|embedded", conflicts_with = "data")]
    pub corpus: Option<String>,
    /// Train in the tokens of this byte-level BPE (a Hugging Face tokenizer.json such as
    /// GPT-2's, or a folder with one): sets --level bpe. Canaries are tokenized whole and
    /// inserted at line starts, where they keep their own tokens (docs/secret-sharer.md).
    #[arg(long, value_name = "PATH/tokenizer.json")]
    pub tokenizer: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub canary: CanaryArgs,
    #[command(flatten)]
    pub exposure: ExposureArgs,
    #[command(flatten)]
    pub extraction: ExtractionArgs,
    #[command(flatten)]
    pub tracking: TrackingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub privacy: PrivacyArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// Which canaries, how many, how often.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct CanaryArgs {
    /// Canary template with typed slots: {digits:N}, {letters:N}, {alphabet=SYMBOLS:N}.
    #[arg(
        long = "canary",
        value_name = "TEMPLATE",
        default_value = "the random number is {digits:9}"
    )]
    pub template: String,
    /// Canaries per repetition count.
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub canaries: usize,
    /// Repetition counts, comma-separated: each of the K canaries of a count is inserted that
    /// many times.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,4,16",
        value_name = "R,..."
    )]
    pub repetitions: Vec<u32>,
    /// Canaries drawn like the others but never inserted: their exposure is chance (1/ln 2 =
    /// 1.44 bits on average).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub held_out: usize,
    /// Add the canary's characters (or words) to the vocabulary when the corpus lacks them. Word
    /// models always get the slot symbols as tokens.
    #[arg(long)]
    pub extend_vocab: bool,
    /// Seed of the canaries, their insertion points and the references (default: --seed).
    #[arg(long, value_name = "S")]
    pub canary_seed: Option<u64>,
    /// Black-box one-run audit (Steinke et al. 2023), apart from the Secret Sharer's canaries: M
    /// random windows, each included with probability 1/2 (seeded by the canary seed; manifest
    /// in audit_canaries.json); after training, the one-run lower bound on epsilon from their
    /// log-likelihoods at the run's delta, next to the accountant's epsilon.
    #[arg(long, value_name = "M")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_canaries: Option<usize>,
}

/// How exposure is measured.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ExposureArgs {
    /// auto (exact when |R| <= --exact-limit, else from references only), exact (refuse when
    /// |R| is above the limit) or sampled (references only).
    #[arg(long = "exposure", default_value = "auto", value_name = "METHOD")]
    pub method: String,
    /// Exact exposure (rank over all of R by the trie walk) when |R| is at most this; raise it to
    /// go further (a 10^9 space is a long CPU run: see `memaudit bench exposure`). 1e7 and
    /// 10^7 are accepted.
    #[arg(long, default_value = "10000000", value_parser = parse_count, value_name = "N")]
    pub exact_limit: u128,
    /// Reference candidates for the sampled exposures (TF Privacy's interpolation and the
    /// skew-normal extrapolation); capped at |R| minus the canaries.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub references: usize,
}

/// How extraction is tried.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ExtractionArgs {
    /// Extraction budget: trie nodes the best-first search may expand (LM rows queried); 0 skips
    /// extraction.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub extract_budget: u64,
    /// A canary counts as extracted when the search returns it among this many most likely
    /// candidates.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub extract_top: usize,
    /// Nodes expanded per batched LM query of the search.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub extract_batch: usize,
    /// Keep at most this many frontier entries (approximate search with bounded memory).
    #[arg(long, value_name = "N")]
    pub extract_beam: Option<usize>,
}

/// Exposure during training.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct TrackingArgs {
    /// Measure exposure every N optimizer steps as well as after every epoch (0: epochs only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub track_every: u64,
    /// Exact ranks while tracking only when |R| is at most this (each costs one trie walk).
    #[arg(long, default_value = "1000000", value_parser = parse_count, value_name = "N")]
    pub track_exact_limit: u128,
}

/// A count such as `10000000`, `10_000_000`, `1e7` or `10^7`.
pub fn parse_count(s: &str) -> std::result::Result<u128, String> {
    let t = s.trim().replace('_', "");
    let bad = || format!("{s:?} is not a count (write e.g. 10000000, 1e7 or 10^7)");
    if let Some((b, e)) = t.split_once('^') {
        let b: u128 = b.parse().map_err(|_| bad())?;
        let e: u32 = e.parse().map_err(|_| bad())?;
        return b.checked_pow(e).ok_or_else(bad);
    }
    if let Some((m, e)) = t.split_once(['e', 'E']) {
        let m: u128 = m.parse().map_err(|_| bad())?;
        let e: u32 = e.parse().map_err(|_| bad())?;
        return 10u128
            .checked_pow(e)
            .and_then(|p| p.checked_mul(m))
            .ok_or_else(bad);
    }
    t.parse().map_err(|_| bad())
}

/// The largest count a config file holds (TOML integers are signed 64-bit): a limit above it
/// means no limit in practice (an exact walk over 9.2e18 candidates is out of reach).
fn count_setting(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX).min(i64::MAX as u64)
}

impl CanaryArgs {
    pub fn settings(&self) -> CanarySettings {
        CanarySettings {
            template: self.template.clone(),
            canaries: self.canaries,
            repetitions: self.repetitions.clone(),
            held_out: self.held_out,
            extend_vocab: self.extend_vocab,
            canary_seed: self.canary_seed,
            audit_canaries: self.audit_canaries,
        }
    }
}

impl ExposureArgs {
    pub fn settings(&self) -> ExposureSettings {
        ExposureSettings {
            method: self.method.clone(),
            exact_limit: count_setting(self.exact_limit),
            references: self.references,
        }
    }

    pub fn validate(&self) -> Result<()> {
        Ok(self.settings().validate()?)
    }
}

impl ExtractionArgs {
    pub fn settings(&self) -> ExtractionSettings {
        ExtractionSettings {
            extract_budget: self.extract_budget,
            extract_top: self.extract_top,
            extract_batch: self.extract_batch,
            extract_beam: self.extract_beam,
        }
    }
}

impl TrackingArgs {
    pub fn settings(&self) -> TrackingSettings {
        TrackingSettings {
            track_every: self.track_every,
            track_exact_limit: count_setting(self.track_exact_limit),
        }
    }
}

impl Args {
    /// The flags as the experiment's config (`--corpus` is `data.data`).
    pub fn settings(&self) -> SecretSharerConfig {
        let mut data: memaudit_experiments::datasets::DataSettings = self.data.settings();
        if let Some(c) = &self.corpus {
            data.data = c.clone();
        }
        data.tokenizer.clone_from(&self.tokenizer);
        SecretSharerConfig {
            data,
            canary: self.canary.settings(),
            exposure: self.exposure.settings(),
            extraction: self.extraction.settings(),
            tracking: self.tracking.settings(),
            model: self.model.settings(),
            optim: self.optim.settings(),
            privacy: self.privacy.settings(),
            run: self.run.settings(),
        }
    }
}

/// Crash tests only, and only with MEMAUDIT_ALLOW_FAULT_INJECTION=1:
/// MEMAUDIT_TEST_KILL_IN_CHECKPOINT=n aborts the process half way through the n-th checkpoint
/// the trainer writes (parameters on disk, logs, sidecar and marker not), as a kill there would.
pub fn crash_test_hook() -> Result<Option<memaudit_engine::train::MidwayHook>> {
    let Ok(n) = std::env::var("MEMAUDIT_TEST_KILL_IN_CHECKPOINT") else {
        return Ok(None);
    };
    if std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1") {
        return Err(crate::error::user(
            "MEMAUDIT_TEST_KILL_IN_CHECKPOINT kills the process on purpose for crash tests: it needs MEMAUDIT_ALLOW_FAULT_INJECTION=1",
        ));
    }
    let n: u64 = n.trim().parse().map_err(|_| {
        crate::error::user(format!(
            "MEMAUDIT_TEST_KILL_IN_CHECKPOINT={n}: give the checkpoint's number (1 for the first)"
        ))
    })?;
    Ok(Some(Box::new(move |nth| {
        if nth == n {
            std::process::abort();
        }
    })))
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    // `--corpus` is the config's `data.data` (the merge of flags over --config knows `--data`
    // by its field name): given with --config, it overrides the file too.
    // Applied before validation and `--print-config`, so the printed config shows it.
    let explicit = experiment::explicit_flags();
    let corpus_given = explicit.iter().any(|f| f == "corpus");
    // `--tokenizer` means level bpe unless --level says otherwise (validation then names both).
    let tokenizer_given = args.tokenizer.is_some() && !explicit.iter().any(|f| f == "level");
    let resolved = experiment::resolve_with(&args.config, args.settings(), ctx, |c| {
        if let (true, Some(corpus)) = (corpus_given, &args.corpus) {
            c.data.data = corpus.clone();
        }
        if tokenizer_given {
            c.data.level = "bpe".into();
        }
        Ok(())
    })?;
    let cfg = match resolved {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    run_config(&cfg, &args.config, ctx, "memaudit secret-sharer", true)
}

/// Run `cfg` (errors name the flags, or the keys of `--config`) and render it; `write_html`
/// writes the run folder's report.html.
pub fn run_config(
    cfg: &SecretSharerConfig,
    flags: &ConfigFlags,
    ctx: &Ctx,
    title: &str,
    write_html: bool,
) -> Result<Report> {
    let hooks = RunHooks {
        checkpoint_midway: crash_test_hook()?,
    };
    let mut observer = CliObserver::new("secret-sharer", ctx);
    let result = library::run_with(cfg, &mut observer, hooks)
        .map_err(|e| experiment::cli_error(e, flags))?;
    observer.finish();
    drop(observer);
    render(&result, title, write_html)
}

/// The text, the JSON and (with `write_html`) report.html of a run.
fn render(r: &SecretSharerResult, title: &str, write_html: bool) -> Result<Report> {
    let d = &r.detail;
    let cfg = &d.config;
    let set = &d.set;
    let trained = super::train::render_training(&d.train, title)?;
    let mut html = trained.html;
    let every = cfg.tracking.track_every;
    html.heading("The Secret Sharer");
    html.para(&format!(
        "Canary template {:?}: {} canaries per repetition count {:?} inserted at random line starts of the training text (each insertion inside one {}-token training window), and {} never-inserted canaries drawn the same way. Exposure was measured before training and after every epoch{}.",
        set.manifest.template,
        cfg.canary.canaries,
        cfg.canary.repetitions,
        cfg.data.seq_len,
        cfg.canary.held_out,
        if every > 0 {
            format!(" and every {every} steps")
        } else {
            String::new()
        }
    ));
    report_sections(&mut html, "", set, &d.audit, &d.log, d.steps_per_epoch);
    let black_box_text = r
        .black_box_audit
        .as_ref()
        .map(super::audit_canaries::audit_text);
    if let Some(t) = &black_box_text {
        html.heading("Black-box audit");
        html.pre(t);
    }
    let run = std::path::Path::new(&r.run);
    if write_html {
        html.write(&run.join("report.html"))?;
    }
    let mut text = format!(
        "{}\n\nexposure of {:?} (log2|R| = {:.2}) after {} epochs{}{}:\n{}",
        trained.text,
        set.manifest.template,
        r.log2_space,
        d.epochs_trained,
        r.valid_loss
            .map_or(String::new(), |v| format!(", valid loss {}", fmt_f64(v.0))),
        r.epsilon
            .map_or(String::new(), |e| format!(", epsilon {}", fmt_f64(e.0))),
        summary_text(&r.by_repetitions, d.exact)
    );
    if let Some((s, _)) = &d.audit.extraction {
        text += &format!(
            "extraction: {} expansions, the {} most likely candidates: {}\n",
            s.expansions,
            s.candidates.len(),
            s.candidates
                .iter()
                .take(5)
                .map(|c| format!("{:?}", set.render(c.index)))
                .collect::<Vec<_>>()
                .join(", ")
                + if s.candidates.len() > 5 { ", ..." } else { "" }
        );
    }
    if let Some(t) = &black_box_text {
        text += &format!("\n{t}\n");
    }
    text += &format!("\nrun folder: {}\nreport: {}", r.run, r.report);
    Ok(Report::new(text, serde_json::to_value(r)?))
}

/// Plain-text table of the summary.
pub fn summary_text(summary: &[RepSummary], exact: bool) -> String {
    let mut t = String::from(if exact {
        "repetitions  canaries  exposure (exact)   interpolated  extrapolated (median)  extracted  cost (median expansions)\n"
    } else {
        "repetitions  canaries  interpolated  extrapolated (median)  extracted  cost (median expansions)\n"
    });
    for s in summary {
        let label = if s.repetitions == 0 {
            "0 (held out)".to_string()
        } else {
            s.repetitions.to_string()
        };
        let ex = s
            .extracted
            .map_or("-".into(), |e| format!("{e}/{}", s.canaries));
        let cost = s.expansions_median.map_or("-".into(), |c| c.to_string());
        if exact {
            t += &format!(
                "{label:>12}  {:>8}  {:>7} ± {:<7}  {:>12}  {:>21}  {ex:>9}  {cost:>24}\n",
                s.canaries,
                s.exposure_mean.map_or("-".into(), |m| format!("{m:.2}")),
                s.exposure_sd.map_or("-".into(), |m| format!("{m:.2}")),
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
            );
        } else {
            t += &format!(
                "{label:>12}  {:>8}  {:>12}  {:>21}  {ex:>9}  {cost:>24}\n",
                s.canaries,
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
            );
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Report sections
// ---------------------------------------------------------------------------------------------

/// Mean exposure per repetition count over training (exact where every record has it, else the
/// extrapolated median... mean of finite values), x in epochs.
pub fn exposure_series(log: &ExposureLog, reps: &[u32], steps_per_epoch: u64) -> Vec<Series> {
    let exact = !log.records.is_empty() && log.records.iter().all(|r| r.exposure_exact.is_some());
    let mut out = Vec::new();
    for &r in reps {
        let mut by_step: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        for rec in log.records.iter().filter(|x| x.repetitions == r) {
            let v = if exact {
                rec.exposure_exact
            } else {
                rec.exposure_interpolated
            };
            if let Some(v) = v.filter(|v| v.is_finite()) {
                by_step.entry(rec.step).or_default().push(v);
            }
        }
        let pts = by_step
            .into_iter()
            .map(|(s, v)| {
                (
                    s as f64 / steps_per_epoch.max(1) as f64,
                    v.iter().sum::<f64>() / v.len() as f64,
                )
            })
            .collect();
        let name = if r == 0 {
            "held out (never inserted)".to_string()
        } else {
            format!("{r} insertions")
        };
        out.push(Series::line(&name, pts));
    }
    out
}

/// Sections for one audited model: the summary table, exposure during training, the reference
/// histogram with the fitted skew-normal, the per-canary table and the search's output.
#[allow(clippy::too_many_arguments)]
pub fn report_sections(
    html: &mut report::Report,
    label: &str,
    set: &CanarySet,
    a: &Audit,
    log: &ExposureLog,
    steps_per_epoch: u64,
) {
    let exact = a.m.ranks.is_some();
    let summary = a.summary(set);
    html.heading(&format!("{label}exposure by repetition count"));
    html.para(&format!(
        "Exposure = log2|R| - log2 rank, in bits (|R| = {}, log2|R| = {:.2}). Chance (never inserted) is 1/ln 2 = 1.44 bits on average. {} Interpolation: TF Privacy's estimate over {} references (at most log2 {} = {:.1} bits). Extrapolation: the skew-normal fitted to the references' log-perplexities.{}",
        set.tpl.space().size(),
        set.tpl.space().log2_size(),
        if exact && set.tpl.rendered().is_some() {
            "Exact: the rank over all of R (byte-level BPE: every candidate rendered, tokenized whole and scored)."
        } else if exact {
            "Exact: the rank over all of R (trie walk)."
        } else {
            "Exact ranks were not computed (|R| above the exact limit)."
        },
        set.references.len(),
        set.references.len(),
        (set.references.len() as f64).log2(),
        match &a.extract_settings {
            Some(s) => format!(
                " Extracted: returned among the {} most likely candidates by the best-first search within {} expansions; cost = expansions (LM rows queried, batches of {}) until it came out.",
                s.top, s.budget, s.batch
            ),
            None => " Extraction was not run.".into(),
        }
    ));
    let mut head = vec!["repetitions", "canaries"];
    if exact {
        head.push("exposure (exact), mean ± sd");
    }
    head.extend([
        "interpolated, mean",
        "extrapolated, median",
        "log-perplexity, mean",
        "extracted",
        "cost, median expansions",
    ]);
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            let mut r = vec![
                if s.repetitions == 0 {
                    "0 (held out)".into()
                } else {
                    s.repetitions.to_string()
                },
                s.canaries.to_string(),
            ];
            if exact {
                r.push(format!(
                    "{:.2} ± {:.2}",
                    s.exposure_mean.unwrap_or(f64::NAN),
                    s.exposure_sd.unwrap_or(f64::NAN)
                ));
            }
            r.extend([
                format!("{:.2}", s.interpolated_mean),
                fmt_f64(s.extrapolated_median),
                format!("{:.2}", s.log_perplexity_mean),
                s.extracted
                    .map_or("-".into(), |e| format!("{e}/{}", s.canaries)),
                s.expansions_median.map_or("-".into(), |c| c.to_string()),
            ]);
            r
        })
        .collect();
    html.table(&head, &rows);

    if !log.records.is_empty() {
        let reps = set.repetition_counts();
        let mut series = exposure_series(log, &reps, steps_per_epoch);
        let xmax = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        series.push(Series {
            name: "chance (1.44 bits)".into(),
            points: vec![(0.0, CHANCE_EXPOSURE), (xmax, CHANCE_EXPOSURE)],
            markers: false,
            scatter: false,
        });
        let exact_log = log.records.iter().all(|r| r.exposure_exact.is_some());
        html.svg(&report::chart(
            &format!("{label}exposure during training"),
            "epoch",
            if exact_log {
                "mean exposure, exact (bits)"
            } else {
                "mean exposure, interpolated (bits)"
            },
            &series,
        ));
    }

    let fit = a.m.fit;
    let pdf = move |x: f64| fit.pdf(x);
    let mut marks: Vec<(String, f64)> = Vec::new();
    for s in &summary {
        let name = if s.repetitions == 0 {
            "held-out canaries (mean)".to_string()
        } else {
            format!("{}-insertion canaries (mean)", s.repetitions)
        };
        marks.push((name, s.log_perplexity_mean));
    }
    html.svg(&report::histogram(
        &format!(
            "{label}log-perplexity of {} reference candidates",
            a.m.reference_scores.len()
        ),
        "log-perplexity of the secret part (bits)",
        &a.m.reference_scores,
        60,
        Some(("fitted skew-normal", &pdf)),
        &marks,
    ));
    html.para(&format!(
        "Skew-normal fit (maximum likelihood, scipy's procedure): shape {:.4}, loc {:.4}, scale {:.4}{}.",
        fit.shape,
        fit.loc,
        fit.scale,
        if a.m.fit_converged {
            ""
        } else {
            " (the optimiser stopped at its iteration limit, as scipy would warn)"
        }
    ));

    let rows: Vec<Vec<String>> = set
        .manifest
        .canaries
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let rank = a.m.ranks.as_ref().map(|r| r[i]);
            let ex = a.extraction.as_ref().map(|(_, p)| p[i]);
            vec![
                c.id.clone(),
                c.text.clone(),
                c.repetitions.to_string(),
                format!("{:.2}", a.m.log_perplexity[i]),
                rank.map_or("-".into(), |r| r.rank.to_string()),
                rank.map_or("-".into(), |r| format!("{:.2}", r.exposure)),
                format!("{:.2}", a.m.interpolated[i]),
                fmt_f64(a.m.extrapolated[i]),
                ex.map_or("-".into(), |e| {
                    if e.extracted {
                        format!("yes (#{})", e.position.unwrap_or(0))
                    } else {
                        "no".into()
                    }
                }),
                ex.map_or("-".into(), |e| e.expansions.to_string()),
            ]
        })
        .collect();
    html.heading(&format!("{label}every canary"));
    html.table(
        &[
            "id",
            "canary",
            "repetitions",
            "log-perplexity",
            "rank",
            "exposure (exact)",
            "interpolated",
            "extrapolated",
            "extracted",
            "expansions",
        ],
        &rows,
    );

    if let Some((search, _)) = &a.extraction {
        html.heading(&format!(
            "{label}extraction: the search's most likely candidates"
        ));
        html.para(&format!(
            "{}: {} expansions in {} batched LM calls, stopped: {:?}{}.",
            if set.tpl.rendered().is_some() {
                "Every candidate rendered, tokenized whole and scored (byte-level BPE), the best first"
            } else {
                "Best-first (Dijkstra) search over the slots"
            },
            search.expansions,
            search.lm_calls,
            search.stop,
            if search.exact { "" } else { ", beam-limited (approximate)" }
        ));
        let by_index: std::collections::HashMap<u128, &str> = set
            .manifest
            .canaries
            .iter()
            .map(|c| (c.secret_index, c.id.as_str()))
            .collect();
        let rows: Vec<Vec<String>> = search
            .candidates
            .iter()
            .enumerate()
            .map(|(k, c)| {
                vec![
                    (k + 1).to_string(),
                    set.render(c.index),
                    format!("{:.2}", c.log_perplexity),
                    by_index.get(&c.index).map_or("-".into(), |s| s.to_string()),
                    c.expansions.to_string(),
                ]
            })
            .collect();
        html.table(
            &[
                "#",
                "candidate",
                "log-perplexity",
                "inserted canary",
                "expansions when found",
            ],
            &rows,
        );
    }
}
