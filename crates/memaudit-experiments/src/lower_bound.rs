//! Empirical epsilon lower bounds from the scores of IN and OUT canaries, as an experiment:
//! Clopper-Pearson (Jagielski et al. 2020; Nasr et al. 2021), Gaussian DP (Nasr et al. 2023),
//! one training run (Steinke, Nasr & Jagielski 2023) and one-run f-DP (Mahloujifar, Melis &
//! Chaudhuri 2024), computed by `memaudit_audit::lower_bound`. Nothing is trained: the inputs
//! are two score files (one number per line, or a .npy vector).

/// The stage named by the errors of this experiment (bounds from score files); the CLI renders
/// them without it, as `memaudit lower-bound` always has.
pub const STAGE: &str = "lower bound";

use std::path::PathBuf;

use memaudit_audit::lower_bound::{
    self as audit, CanaryScores, ConfusionCounts, DEFAULT_DELTA, DEFAULT_SIGNIFICANCE,
    LowerBoundMethod, LowerBoundReport, MethodBound, MethodChoice, ScoreDirection, ThresholdChoice,
};
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::{Num, opt};
use crate::observer::Observer;

/// The method names, as `method` takes them (`all`: every method; those needing delta > 0
/// are skipped at delta 0, with a warning).
pub const METHODS: [&str; 5] = ["clopper-pearson", "gdp", "one-run", "one-run-fdp", "all"];

/// A lower-bound experiment (`memaudit lower-bound`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowerBoundConfig {
    /// Scores of the canaries trained on (members).
    pub in_scores: Option<PathBuf>,
    /// Scores of the held-out canaries.
    pub out_scores: Option<PathBuf>,
    /// clopper-pearson, gdp, one-run, one-run-fdp or all.
    pub method: String,
    /// Each bound fails with probability at most this, in (0, 0.5].
    pub significance: f64,
    /// The delta of the (eps, delta) guarantee being tested, in [0, 1).
    pub delta: f64,
    /// One explicit threshold (in the scores' units), tested alone at the full significance
    /// (`None`: every threshold of the Pareto frontier, Bonferroni-corrected, as JAX Privacy).
    pub threshold: Option<f64>,
    /// Clopper-Pearson with two-sided intervals, alpha/2 per side, and the (p0, p1) swap
    /// (Jagielski et al.'s convention).
    pub two_sided: bool,
    /// Lower scores mean "member" (losses, perplexities).
    pub lower_is_member: bool,
}

impl Default for LowerBoundConfig {
    fn default() -> Self {
        Self {
            in_scores: None,
            out_scores: None,
            method: "all".into(),
            significance: DEFAULT_SIGNIFICANCE,
            delta: DEFAULT_DELTA,
            threshold: None,
            two_sided: false,
            lower_is_member: false,
        }
    }
}

impl LowerBoundConfig {
    /// The method(s) asked for.
    pub fn method_choice(&self) -> Result<MethodChoice> {
        Ok(match self.method.as_str() {
            "all" => MethodChoice::All,
            "clopper-pearson" => MethodChoice::One(LowerBoundMethod::ClopperPearson),
            "gdp" => MethodChoice::One(LowerBoundMethod::Gdp),
            "one-run" => MethodChoice::One(LowerBoundMethod::OneRun),
            "one-run-fdp" => MethodChoice::One(LowerBoundMethod::OneRunFdp),
            m => return invalid("method", m, format!("use {}", METHODS.join(", "))),
        })
    }

    /// The settings as `memaudit_audit::lower_bound` takes them.
    pub fn bound_config(&self) -> Result<audit::LowerBoundConfig> {
        Ok(audit::LowerBoundConfig {
            significance: self.significance,
            delta: self.delta,
            threshold: self
                .threshold
                .map_or(ThresholdChoice::ParetoFrontier, ThresholdChoice::Explicit),
            two_sided: self.two_sided,
            group_size: 1,
            direction: if self.lower_is_member {
                ScoreDirection::LowerIsMember
            } else {
                ScoreDirection::HigherIsMember
            },
            method: self.method_choice()?,
        })
    }
}

impl ExperimentConfig for LowerBoundConfig {
    const NAME: &'static str = "lower-bound";

    fn validate(&self) -> Result<()> {
        if self.in_scores.is_none() {
            return invalid("in_scores", "(none)", "give the IN canaries' score file");
        }
        if self.out_scores.is_none() {
            return invalid("out_scores", "(none)", "give the OUT canaries' score file");
        }
        if !(self.significance > 0.0 && self.significance <= 0.5) {
            return invalid("significance", self.significance, "must be in (0, 0.5]");
        }
        if !(0.0..1.0).contains(&self.delta) {
            return invalid("delta", self.delta, "must be in [0, 1)");
        }
        if let Some(t) = self.threshold
            && t.is_nan()
        {
            return invalid("threshold", t, "must be a number");
        }
        if let MethodChoice::One(m) = self.method_choice()?
            && m.needs_positive_delta()
            && self.delta == 0.0
        {
            return invalid(
                "method",
                m.name(),
                "needs `delta` > 0 (it compares with a Gaussian curve at (eps, delta); at delta 0 no finite eps exists); pass the delta of the guarantee being audited",
            );
        }
        Ok(())
    }
}

/// The confusion counts at a bound's threshold.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Counts {
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

fn counts(c: &Option<ConfusionCounts>) -> Option<Counts> {
    c.map(|c| Counts {
        true_positives: c.true_positives,
        false_positives: c.false_positives,
        true_negatives: c.true_negatives,
        false_negatives: c.false_negatives,
    })
}

/// What each method reports beside its bound.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum BoundDetails {
    ClopperPearson {
        counts: Option<Counts>,
        tpr_lower: Num,
        fpr_upper: Num,
        two_sided: bool,
        swapped: bool,
        group_size: u32,
        thresholds_tested: usize,
        significance_per_threshold: Num,
    },
    Gdp {
        counts: Option<Counts>,
        mu_lower_bound: Num,
        fpr_upper: Num,
        fnr_upper: Num,
        thresholds_tested: usize,
        significance_per_interval: Num,
    },
    OneRun {
        counts: Option<Counts>,
        m: u64,
        delta: Num,
        two_m_delta: Num,
        guesses: u64,
        correct_guesses: u64,
        thresholds_tested: usize,
        significance_per_threshold: Num,
    },
}

/// One method's bound.
#[derive(Clone, Debug, Serialize)]
pub struct BoundSummary {
    pub method: String,
    pub epsilon_lower_bound: Num,
    /// The threshold (the scores' units) that gave it; `None`: no threshold gave a positive
    /// bound.
    pub threshold: Option<Num>,
    /// gdp and one-run-fdp assume a Gaussian trade-off curve.
    pub assumes_gaussian_tradeoff: bool,
    #[serde(flatten)]
    pub details: BoundDetails,
}

/// The bounds. Serialised, it is `lower-bound --json`.
#[derive(Clone, Debug, Serialize)]
pub struct LowerBoundResult {
    pub results: Vec<BoundSummary>,
    /// Canaries, IN and OUT.
    pub m: u64,
    pub n_in: u64,
    pub n_out: u64,
    pub delta: Num,
    pub significance: Num,
    /// pareto-frontier-bonferroni or explicit.
    pub threshold_choice: String,
    pub frontier_thresholds: usize,
    /// higher-is-member or lower-is-member.
    pub score_direction: String,
    /// AUROC over the frontier (randomised thresholds allowed).
    pub auroc: Num,
    /// Plain (Mann-Whitney) AUROC.
    pub auroc_empirical: Num,
    pub warnings: Vec<String>,
    /// The library's report and settings, for rendering.
    #[serde(skip)]
    pub report: LowerBoundReport,
    #[serde(skip)]
    pub bound_config: audit::LowerBoundConfig,
}

fn summary(b: &MethodBound) -> BoundSummary {
    let details = match b {
        MethodBound::ClopperPearson(c) => BoundDetails::ClopperPearson {
            counts: counts(&c.counts),
            tpr_lower: Num(c.tpr_lower),
            fpr_upper: Num(c.fpr_upper),
            two_sided: c.two_sided,
            swapped: c.swapped,
            group_size: c.group_size,
            thresholds_tested: c.thresholds_tested,
            significance_per_threshold: Num(c.significance_per_threshold),
        },
        MethodBound::Gdp(g) => BoundDetails::Gdp {
            counts: counts(&g.counts),
            mu_lower_bound: Num(g.mu_lower_bound),
            fpr_upper: Num(g.fpr_upper),
            fnr_upper: Num(g.fnr_upper),
            thresholds_tested: g.thresholds_tested,
            significance_per_interval: Num(g.significance_per_interval),
        },
        MethodBound::OneRun(o) | MethodBound::OneRunFdp(o) => BoundDetails::OneRun {
            counts: counts(&o.counts),
            m: o.m,
            delta: Num(o.delta),
            two_m_delta: Num(o.two_m_delta),
            guesses: o.guesses,
            correct_guesses: o.correct_guesses,
            thresholds_tested: o.thresholds_tested,
            significance_per_threshold: Num(o.significance_per_threshold),
        },
    };
    BoundSummary {
        method: b.method().name().into(),
        epsilon_lower_bound: Num(b.epsilon_lower_bound()),
        threshold: opt(b.threshold()),
        assumes_gaussian_tradeoff: b.method().assumes_gaussian_tradeoff(),
        details,
    }
}

/// Read both score files and compute the bounds; warnings go to the observer as notes too.
pub fn run(cfg: &LowerBoundConfig, observer: &mut dyn Observer) -> Result<LowerBoundResult> {
    cfg.validate()?;
    let bound_config = cfg.bound_config()?;
    let read = |field: &str, path: &Option<PathBuf>| -> Result<Vec<f64>> {
        let path = path.as_deref().unwrap_or_else(|| "".as_ref());
        audit::read_scores(path).map_err(|e| ExperimentError::Setting {
            field: field.into(),
            source: Box::new(e),
        })
    };
    observer.progress("read", 0, 2);
    let ins = read("in_scores", &cfg.in_scores)?;
    observer.progress("read", 1, 2);
    let outs = read("out_scores", &cfg.out_scores)?;
    observer.progress("read", 2, 2);
    // The one safe point: the bounds are one computation and nothing is written.
    if observer.cancelled() {
        return Err(ExperimentError::cancelled("before the bounds"));
    }
    observer.progress("lower-bound", 0, 1);
    let scores = CanaryScores::new(&ins, &outs, bound_config.direction)?;
    let report = audit::lower_bounds(&scores, &bound_config)?;
    observer.progress("lower-bound", 1, 1);
    for w in &report.warnings {
        observer.note(&format!("warning: {w}"));
    }
    Ok(LowerBoundResult {
        results: report.results.iter().map(summary).collect(),
        m: report.m,
        n_in: report.n_in,
        n_out: report.n_out,
        delta: Num(report.delta),
        significance: Num(report.significance),
        threshold_choice: match bound_config.threshold {
            ThresholdChoice::ParetoFrontier => "pareto-frontier-bonferroni",
            ThresholdChoice::Explicit(_) => "explicit",
        }
        .into(),
        frontier_thresholds: report.frontier_thresholds,
        score_direction: match bound_config.direction {
            ScoreDirection::HigherIsMember => "higher-is-member",
            ScoreDirection::LowerIsMember => "lower-is-member",
        }
        .into(),
        auroc: Num(report.auroc),
        auroc_empirical: Num(report.auroc_empirical),
        warnings: report.warnings.iter().map(|w| w.to_string()).collect(),
        report,
        bound_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Recorder, config};
    use std::path::Path;

    #[test]
    fn separated_scores_bound_epsilon_and_reversed_ones_warn() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: &[f64]| {
            let p = dir.path().join(name);
            let text: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            std::fs::write(&p, text.join("\n")).unwrap();
            p
        };
        // 500 IN scores 1 and 500 OUT 0: perfectly separated, so Clopper-Pearson gives a
        // positive bound (the Jagielski et al. vector is checked exactly in the CLI tests).
        let ins = write("in.txt", &[1.0; 500]);
        let outs = write("out.txt", &[0.0; 500]);
        let toml = format!(
            "in_scores = {:?}\nout_scores = {:?}\nmethod = \"clopper-pearson\"\nsignificance = 0.01\n",
            ins.display().to_string(),
            outs.display().to_string()
        );
        let cfg: LowerBoundConfig = config::from_toml_str(&toml, Path::new("lb.toml")).unwrap();
        let r = run(&cfg, &mut Recorder::default()).unwrap();
        assert_eq!(r.results.len(), 1);
        assert!(r.results[0].epsilon_lower_bound.0 > 3.0);
        assert_eq!((r.n_in, r.n_out), (500, 500));
        // The same scores read as losses look reversed: a warning, as a note too.
        let mut rec = Recorder::default();
        let rev = run(
            &LowerBoundConfig {
                lower_is_member: true,
                ..cfg.clone()
            },
            &mut rec,
        )
        .unwrap();
        assert!(rev.warnings.iter().any(|w| w.contains("reversed")));
        assert_eq!(rec.notes.len(), rev.warnings.len());
        // Settings out of range name their field.
        let bad = LowerBoundConfig {
            significance: 0.7,
            ..cfg
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with("significance 0.7"), "{e}");
    }
}
