//! `memaudit lower-bound`: empirical epsilon lower bounds from the scores of IN and OUT canaries
//! (Clopper-Pearson, GDP, one-run and one-run f-DP). The experiment is
//! `memaudit_experiments::lower_bound` (the bounds `memaudit_audit::lower_bound`); this file
//! turns the flags into its config and renders its result.

use std::path::PathBuf;

use memaudit_audit::lower_bound::{
    ConfusionCounts, DEFAULT_DELTA, DEFAULT_SIGNIFICANCE, LowerBoundReport, MethodBound,
    ThresholdChoice,
};
use memaudit_experiments::lower_bound::{self as lib, LowerBoundConfig};
use memaudit_experiments::{ExperimentConfig, ExperimentError, NullObserver};

use super::experiment::{self, ConfigFlags, Resolved};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64};

/// Which bound(s).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// Clopper-Pearson intervals on TPR and FPR (Jagielski et al. 2020; Nasr et al. 2021).
    ClopperPearson,
    /// Gaussian DP (Nasr et al. 2023); needs --delta > 0.
    Gdp,
    /// One training run (Steinke, Nasr & Jagielski 2023), guessing IN only.
    OneRun,
    /// One training run, f-DP (Mahloujifar, Melis & Chaudhuri 2024); needs --delta > 0.
    OneRunFdp,
    /// Every method (those needing delta > 0 are skipped at --delta 0, with a warning).
    All,
}

impl MethodArg {
    /// The method's name in the config (`memaudit_experiments::lower_bound::METHODS`).
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| "all".into(), |v| v.get_name().to_string())
    }
}

// Numeric flags take hyphen values so "-1e-5" reaches validation (clap's negative-number check
// does not know exponents) and the error names the flag.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scores of the canaries trained on (members): one number per line, or a .npy vector.
    #[arg(long, value_name = "FILE")]
    pub in_scores: Option<PathBuf>,
    /// Scores of the held-out canaries: one number per line, or a .npy vector.
    #[arg(long, value_name = "FILE")]
    pub out_scores: Option<PathBuf>,
    /// Which bound(s).
    #[arg(long, value_enum, default_value = "all")]
    pub method: MethodArg,
    /// Each bound fails with probability at most A, in (0, 0.5].
    #[arg(long, value_name = "A", default_value_t = DEFAULT_SIGNIFICANCE, allow_hyphen_values = true)]
    pub significance: f64,
    /// The delta of the (eps, delta) guarantee being tested, in [0, 1); runs that audit
    /// themselves pass their own delta.
    #[arg(long, value_name = "D", default_value_t = DEFAULT_DELTA, allow_hyphen_values = true)]
    pub delta: f64,
    /// One explicit threshold (in the scores' units), tested alone at the full significance.
    /// Default: every threshold on the Pareto frontier, Bonferroni-corrected (as JAX Privacy).
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub threshold: Option<f64>,
    /// Clopper-Pearson with two-sided intervals, alpha/2 per side, and the (p0, p1) swap
    /// (Jagielski et al.'s convention); default one-sided.
    #[arg(long)]
    pub two_sided: bool,
    /// Lower scores mean "member" (losses, perplexities); default: higher means member.
    #[arg(long)]
    pub lower_is_member: bool,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// The flags as the experiment's config.
fn config(args: &Args) -> LowerBoundConfig {
    LowerBoundConfig {
        in_scores: args.in_scores.clone(),
        out_scores: args.out_scores.clone(),
        method: args.method.name(),
        significance: args.significance,
        delta: args.delta,
        threshold: args.threshold,
        two_sided: args.two_sided,
        lower_is_member: args.lower_is_member,
    }
}

/// A library error naming the flag. Settings out of range read as they always have here
/// ("--delta must be in [0, 1), got 1"; "--method gdp needs --delta > 0 ..."); with
/// `--config`, errors name the file's key instead.
fn cli_error(e: ExperimentError, flags: &ConfigFlags) -> anyhow::Error {
    match e {
        ExperimentError::Invalid {
            field,
            value,
            reason,
        } if flags.config.is_none() => {
            let reason = reason.replace("`delta`", "--delta");
            let flag = experiment::flag_of(&field);
            if value == "(none)" {
                user(format!("{flag} FILE: {reason}"))
            } else if field == "method" {
                user(format!("{flag} {value} {reason}"))
            } else {
                user(format!("{flag} {reason}, got {value}"))
            }
        }
        e => experiment::cli_error(e, flags),
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let given = config(args);
    if args.config.config.is_none() {
        // Checked here first so that the messages name the flags as they always have.
        given.validate().map_err(|e| cli_error(e, &args.config))?;
    }
    let cfg = match experiment::resolve(&args.config, given, ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r = lib::run(&cfg, &mut NullObserver).map_err(|e| cli_error(e, &args.config))?;
    // The text lists the warnings; with --json they go to stderr.
    if ctx.json {
        for w in &r.warnings {
            ctx.note(format!("warning: {w}"));
        }
    }
    Ok(Report::new(
        text(&r.report, &r.bound_config),
        serde_json::to_value(&r)?,
    ))
}

/// A number for the table without float noise (0.4 rather than 0.39999999999999997).
fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || !(1e-3..1e6).contains(&x.abs()) {
        return if x == 0.0 { "0".into() } else { fmt_f64(x) };
    }
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn threshold_text(t: Option<f64>) -> String {
    t.map_or_else(|| "-".into(), fmt_f64)
}

fn counts_text(c: &Option<ConfusionCounts>) -> String {
    c.map_or_else(String::new, |c| {
        format!(
            "TP {}/{}, FP {}/{}",
            c.true_positives,
            c.n_in(),
            c.false_positives,
            c.n_out()
        )
    })
}

fn text(r: &LowerBoundReport, config: &memaudit_audit::lower_bound::LowerBoundConfig) -> String {
    let mut s = String::new();
    // 95, 99, 99.9: the confidence in percent without float noise.
    let confidence = format!("{:.6}", 100.0 * (1.0 - r.significance));
    let confidence = confidence.trim_end_matches('0').trim_end_matches('.');
    s.push_str(&format!(
        "Empirical epsilon lower bounds: each holds with probability >= {confidence}% (significance {}).\n",
        r.significance
    ));
    s.push_str(&format!(
        "m = {} canaries ({} IN, {} OUT), delta = {}, {}; AUROC {} (frontier {}).\n",
        r.m,
        r.n_in,
        r.n_out,
        r.delta,
        match config.threshold {
            ThresholdChoice::ParetoFrontier => format!(
                "Bonferroni over the {} thresholds of the Pareto frontier",
                r.frontier_thresholds
            ),
            ThresholdChoice::Explicit(t) => format!("explicit threshold {t}"),
        },
        fmt_f64(r.auroc_empirical),
        fmt_f64(r.auroc),
    ));
    s.push_str(&format!(
        "{:<16} {:>16} {:>10}  details\n",
        "method", "eps lower bound", "threshold"
    ));
    for b in &r.results {
        let none = "no threshold gives a positive bound";
        let found = b.threshold().is_some();
        let details = match b {
            MethodBound::ClopperPearson(c) if found => format!(
                "{}; TPR >= {}, FPR <= {}{}{}",
                counts_text(&c.counts),
                fmt_f64(c.tpr_lower),
                fmt_f64(c.fpr_upper),
                if c.two_sided { ", two-sided" } else { "" },
                if c.swapped { " (swapped)" } else { "" },
            ),
            MethodBound::Gdp(g) if found => format!(
                "{}; mu >= {}",
                counts_text(&g.counts),
                fmt_f64(g.mu_lower_bound)
            ),
            MethodBound::ClopperPearson(_) | MethodBound::Gdp(_) => none.to_string(),
            // A one-run result always states m, delta and 2 m delta.
            MethodBound::OneRun(o) | MethodBound::OneRunFdp(o) => format!(
                "{}; m = {}, delta = {}, 2*m*delta = {}",
                if found {
                    format!("{} of {} guesses right", o.correct_guesses, o.guesses)
                } else {
                    none.to_string()
                },
                o.m,
                o.delta,
                short(o.two_m_delta)
            ),
        };
        s.push_str(&format!(
            "{:<16} {:>16} {:>10}  {}\n",
            b.method().name(),
            fmt_f64(b.epsilon_lower_bound()),
            threshold_text(b.threshold()),
            details
        ));
    }
    if r.results
        .iter()
        .any(|b| b.method().assumes_gaussian_tradeoff())
    {
        s.push_str(
            "gdp and one-run-fdp assume a Gaussian trade-off curve (DP-SGD's is approximately one); on other mechanisms they can exceed the true eps. clopper-pearson and one-run hold for any (eps, delta)-DP mechanism.\n",
        );
    }
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    s
}
