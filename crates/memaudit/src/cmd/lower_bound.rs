//! `memaudit lower-bound`: empirical epsilon lower bounds from the scores of IN and OUT canaries
//! (Clopper-Pearson, GDP, one-run and one-run f-DP; `memaudit_audit::lower_bound`). Parses the
//! flags, reads the two score files and renders the library's report.

use std::path::{Path, PathBuf};

use memaudit_audit::lower_bound::{
    self, CanaryScores, ConfusionCounts, DEFAULT_DELTA, DEFAULT_SIGNIFICANCE, LowerBoundConfig,
    LowerBoundMethod, LowerBoundReport, MethodBound, MethodChoice, ScoreDirection, ThresholdChoice,
};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num, opt_num};

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
    fn choice(self) -> MethodChoice {
        match self {
            MethodArg::ClopperPearson => MethodChoice::One(LowerBoundMethod::ClopperPearson),
            MethodArg::Gdp => MethodChoice::One(LowerBoundMethod::Gdp),
            MethodArg::OneRun => MethodChoice::One(LowerBoundMethod::OneRun),
            MethodArg::OneRunFdp => MethodChoice::One(LowerBoundMethod::OneRunFdp),
            MethodArg::All => MethodChoice::All,
        }
    }
}

// Numeric flags take hyphen values so "-1e-5" reaches validation (clap's negative-number check
// does not know exponents) and the error names the flag.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scores of the canaries trained on (members): one number per line, or a .npy vector.
    #[arg(long, value_name = "FILE")]
    pub in_scores: PathBuf,
    /// Scores of the held-out canaries: one number per line, or a .npy vector.
    #[arg(long, value_name = "FILE")]
    pub out_scores: PathBuf,
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
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<f64>> {
    lower_bound::read_scores(path).map_err(|e| user(format!("{flag}: {e}")))
}

/// The flags as a library config; every refusal names its flag.
fn config(args: &Args) -> anyhow::Result<LowerBoundConfig> {
    if !(args.significance > 0.0 && args.significance <= 0.5) {
        return Err(user(format!(
            "--significance must be in (0, 0.5], got {}",
            args.significance
        )));
    }
    if !(0.0..1.0).contains(&args.delta) {
        return Err(user(format!(
            "--delta must be in [0, 1), got {}",
            args.delta
        )));
    }
    if let Some(t) = args.threshold
        && t.is_nan()
    {
        return Err(user("--threshold must be a number, got NaN"));
    }
    let method = args.method.choice();
    if let MethodChoice::One(m) = method
        && m.needs_positive_delta()
        && args.delta == 0.0
    {
        return Err(user(format!(
            "--method {} needs --delta > 0 (it compares with a Gaussian curve at (eps, delta); at delta 0 no finite eps exists); pass the delta of the guarantee being audited",
            m.name()
        )));
    }
    Ok(LowerBoundConfig {
        significance: args.significance,
        delta: args.delta,
        threshold: args
            .threshold
            .map_or(ThresholdChoice::ParetoFrontier, ThresholdChoice::Explicit),
        two_sided: args.two_sided,
        group_size: 1,
        direction: if args.lower_is_member {
            ScoreDirection::LowerIsMember
        } else {
            ScoreDirection::HigherIsMember
        },
        method,
    })
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let config = config(args)?;
    let ins = read(&args.in_scores, "--in-scores")?;
    let outs = read(&args.out_scores, "--out-scores")?;
    let scores =
        CanaryScores::new(&ins, &outs, config.direction).map_err(|e| user(e.to_string()))?;
    let report = lower_bound::lower_bounds(&scores, &config).map_err(|e| user(e.to_string()))?;
    if ctx.json {
        for w in &report.warnings {
            ctx.note(format!("warning: {w}"));
        }
    }
    Ok(Report::new(
        text(&report, &config),
        json_report(&report, &config),
    ))
}

fn counts_json(c: &Option<ConfusionCounts>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({
            "true_positives": c.true_positives,
            "false_positives": c.false_positives,
            "true_negatives": c.true_negatives,
            "false_negatives": c.false_negatives,
        }),
    }
}

fn result_json(b: &MethodBound) -> Value {
    let mut v = json!({
        "method": b.method().name(),
        "epsilon_lower_bound": num(b.epsilon_lower_bound()),
        "threshold": opt_num(b.threshold()),
        "assumes_gaussian_tradeoff": b.method().assumes_gaussian_tradeoff(),
    });
    let extra = match b {
        MethodBound::ClopperPearson(c) => json!({
            "counts": counts_json(&c.counts),
            "tpr_lower": num(c.tpr_lower),
            "fpr_upper": num(c.fpr_upper),
            "two_sided": c.two_sided,
            "swapped": c.swapped,
            "group_size": c.group_size,
            "thresholds_tested": c.thresholds_tested,
            "significance_per_threshold": num(c.significance_per_threshold),
        }),
        MethodBound::Gdp(g) => json!({
            "counts": counts_json(&g.counts),
            "mu_lower_bound": num(g.mu_lower_bound),
            "fpr_upper": num(g.fpr_upper),
            "fnr_upper": num(g.fnr_upper),
            "thresholds_tested": g.thresholds_tested,
            "significance_per_interval": num(g.significance_per_interval),
        }),
        MethodBound::OneRun(o) | MethodBound::OneRunFdp(o) => json!({
            "counts": counts_json(&o.counts),
            "m": o.m,
            "delta": num(o.delta),
            "two_m_delta": num(o.two_m_delta),
            "guesses": o.guesses,
            "correct_guesses": o.correct_guesses,
            "thresholds_tested": o.thresholds_tested,
            "significance_per_threshold": num(o.significance_per_threshold),
        }),
    };
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

fn direction_name(d: ScoreDirection) -> &'static str {
    match d {
        ScoreDirection::HigherIsMember => "higher-is-member",
        ScoreDirection::LowerIsMember => "lower-is-member",
    }
}

fn json_report(r: &LowerBoundReport, config: &LowerBoundConfig) -> Value {
    json!({
        "results": r.results.iter().map(result_json).collect::<Vec<_>>(),
        "m": r.m,
        "n_in": r.n_in,
        "n_out": r.n_out,
        "delta": num(r.delta),
        "significance": num(r.significance),
        "threshold_choice": match config.threshold {
            ThresholdChoice::ParetoFrontier => "pareto-frontier-bonferroni",
            ThresholdChoice::Explicit(_) => "explicit",
        },
        "frontier_thresholds": r.frontier_thresholds,
        "score_direction": direction_name(config.direction),
        "auroc": num(r.auroc),
        "auroc_empirical": num(r.auroc_empirical),
        "warnings": r.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
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

fn text(r: &LowerBoundReport, config: &LowerBoundConfig) -> String {
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
