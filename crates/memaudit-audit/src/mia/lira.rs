//! LiRA, the likelihood-ratio attack (Carlini, Chien, Nasr, Song, Terzis, Tramer, S&P 2022).
//!
//! For each example and query, fit a Gaussian to the shadow models' statistic (phi for
//! classifiers) when they trained on the example (IN) and when they did not (OUT):
//! - online: score = sum over queries of log N(t; mu_in, s_in) - log N(t; mu_out, s_out);
//! - offline (the paper's one-sided test, OUT models only): score = sum over queries of
//!   log P[Z <= t], Z ~ N(mu_out, s_out): a target statistic high in the OUT distribution means
//!   member;
//! - offline two-sided (the authors' code, a named variant): score = -sum log N(t; mu_out, s_out),
//!   i.e. member when the target is unlikely under OUT in either direction.
//!
//! Scores are "higher = member" (TF Privacy's `compute_score_lira` returns the negation).
//! Variance: per example when it has enough values, else one per query: the standard deviation
//! of every value after subtracting its example's centre (TF Privacy's `fix_variance`). IN and
//! OUT keep separate global variances (TF Privacy; the authors' code reuses the IN one for OUT).
//! A zero standard deviation is floored at 1e-30, as the authors' code adds.

use serde::{Deserialize, Serialize};

use memaudit_accounting::special::log_ndtr;

use super::config::{Center, LiraConfig, MissingShadows, VarianceMode};
use super::data::ScoreSet;
use super::error::{MiaError, Result};

/// Which LiRA score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiraVariant {
    Online,
    /// The paper's one-sided offline test.
    Offline,
    /// The authors' code's two-sided OUT density.
    OfflineTwoSided,
}

impl LiraVariant {
    fn needs_in(self) -> bool {
        self == LiraVariant::Online
    }
    fn attack_name(self) -> &'static str {
        match self {
            LiraVariant::Online => "lira-online",
            LiraVariant::Offline => "lira-offline",
            LiraVariant::OfflineTwoSided => "lira-offline-two-sided",
        }
    }
}

/// The IN and OUT statistics of every (example, query), index `i * q + j`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowStatistics {
    pub n: usize,
    pub q: usize,
    pub target: Vec<f64>,
    pub inn: Vec<Vec<f64>>,
    pub out: Vec<Vec<f64>>,
}

impl ShadowStatistics {
    /// LiRA's statistic (phi, or the log-likelihood) of every model from a score set.
    pub fn from_scores(set: &ScoreSet) -> Self {
        let (n, q, k) = (set.n(), set.queries(), set.shadows());
        let kind = set.signal_kind();
        let mut inn = vec![Vec::new(); n * q];
        let mut out = vec![Vec::new(); n * q];
        let mut target = Vec::with_capacity(n * q);
        for i in 0..n {
            for j in 0..q {
                target.push(kind.lira_statistic(set.target(i, j)));
                for m in 0..k {
                    let v = kind.lira_statistic(set.shadow(m, i, j));
                    if set.is_in(m, i) {
                        inn[i * q + j].push(v);
                    } else {
                        out[i * q + j].push(v);
                    }
                }
            }
        }
        Self {
            n,
            q,
            target,
            inn,
            out,
        }
    }
}

/// A fitted Gaussian per (example, query) for IN and OUT, index `i * q + j`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiraFit {
    pub n: usize,
    pub q: usize,
    pub mu_in: Vec<f64>,
    pub sd_in: Vec<f64>,
    pub mu_out: Vec<f64>,
    pub sd_out: Vec<f64>,
    /// Examples that used their own variance.
    pub per_example_variance: usize,
    /// Examples that fell back to the column mean (`MissingShadows::ColumnMean`).
    pub column_mean_fallbacks: usize,
}

fn center(values: &[f64], how: Center) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    match how {
        Center::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Center::Median => {
            let mut v = values.to_vec();
            v.sort_by(f64::total_cmp);
            let h = v.len() / 2;
            if v.len() % 2 == 1 {
                v[h]
            } else {
                0.5 * (v[h - 1] + v[h])
            }
        }
    }
}

/// Population standard deviation (ddof 0, NumPy's default), NaN when empty.
fn std_dev(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let (mut n, mut sum) = (0usize, 0.0);
    for v in values.clone() {
        n += 1;
        sum += v;
    }
    if n == 0 {
        return f64::NAN;
    }
    let mean = sum / n as f64;
    (values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64).sqrt()
}

fn nan_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut sum) = (0usize, 0.0);
    for v in values.filter(|v| !v.is_nan()) {
        n += 1;
        sum += v;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Fit LiRA's Gaussians. `variant` decides which side must be present for every example.
/// `shadow_in_shape` only names the array in errors.
pub fn fit(
    stats: &ShadowStatistics,
    variant: LiraVariant,
    cfg: &LiraConfig,
    shadow_in_shape: &[usize],
) -> Result<LiraFit> {
    let (n, q) = (stats.n, stats.q);
    let need_in = variant.needs_in();
    // Coverage first: a made-up score is refused unless the caller chose the fallback.
    let mut missing = vec![false; n];
    for (i, miss) in missing.iter_mut().enumerate() {
        let no_in = stats.inn[i * q].is_empty();
        let no_out = stats.out[i * q].is_empty();
        if (need_in && no_in) || no_out {
            if cfg.missing == MissingShadows::Error {
                return Err(MiaError::NoShadow {
                    example: i,
                    side: if no_out { "OUT" } else { "IN" },
                    attack: variant.attack_name(),
                    shape: shadow_in_shape.to_vec(),
                });
            }
            *miss = true;
        }
    }
    let mut fit = LiraFit {
        n,
        q,
        mu_in: vec![f64::NAN; n * q],
        sd_in: vec![f64::NAN; n * q],
        mu_out: vec![f64::NAN; n * q],
        sd_out: vec![f64::NAN; n * q],
        per_example_variance: 0,
        column_mean_fallbacks: missing.iter().filter(|m| **m).count(),
    };
    for c in 0..n * q {
        fit.mu_in[c] = center(&stats.inn[c], cfg.center);
        fit.mu_out[c] = center(&stats.out[c], cfg.center);
        fit.sd_in[c] = std_dev(stats.inn[c].iter().copied());
        fit.sd_out[c] = std_dev(stats.out[c].iter().copied());
    }
    for j in 0..q {
        let cells = || (0..n).map(move |i| i * q + j);
        let (mu_in, mu_out, sd_in, sd_out) = (&fit.mu_in, &fit.mu_out, &fit.sd_in, &fit.sd_out);
        // The global standard deviation of residuals around each example's centre.
        // With at most one value per example on a side (e.g. one complementary pair of
        // reference models) every residual is 0 and the residuals say nothing about the spread:
        // use the standard deviation of that side's values over all examples instead (the
        // authors' code's `np.std(dat_out)`), never a zero variance that saturates every score.
        let residual_or_raw = |side: &[Vec<f64>], mu: &[f64]| {
            if cells().any(|c| side[c].len() >= 2) {
                std_dev(cells().flat_map(|c| side[c].iter().map(move |v| v - mu[c])))
            } else {
                std_dev(cells().flat_map(|c| side[c].iter().copied()))
            }
        };
        let global_in = residual_or_raw(&stats.inn, mu_in);
        let global_out = residual_or_raw(&stats.out, mu_out);
        // TF Privacy's fallback: the mean over examples of the centres and deviations.
        let mean_mu_in = nan_mean(cells().map(|c| mu_in[c]));
        let mean_mu_out = nan_mean(cells().map(|c| mu_out[c]));
        let mean_sd_in = nan_mean(cells().map(|c| sd_in[c]));
        let mean_sd_out = nan_mean(cells().map(|c| sd_out[c]));
        for (i, &miss) in missing.iter().enumerate() {
            let c = i * q + j;
            let (n_in, n_out) = (stats.inn[c].len(), stats.out[c].len());
            let per_example = match cfg.variance {
                VarianceMode::PerExample => true,
                VarianceMode::Global => false,
                VarianceMode::Auto => {
                    n_out >= cfg.per_example_min && (!need_in || n_in >= cfg.per_example_min)
                }
            };
            if per_example && j == 0 && !miss {
                fit.per_example_variance += 1;
            }
            if n_in == 0 {
                fit.mu_in[c] = mean_mu_in;
                fit.sd_in[c] = mean_sd_in;
            }
            if n_out == 0 {
                fit.mu_out[c] = mean_mu_out;
                fit.sd_out[c] = mean_sd_out;
            }
            if !per_example {
                fit.sd_in[c] = global_in;
                fit.sd_out[c] = global_out;
            }
        }
    }
    Ok(fit)
}

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// log N(x; mu, sd), sd floored at 1e-30.
pub fn log_normal_pdf(x: f64, mu: f64, sd: f64) -> f64 {
    let sd = sd.max(1e-30);
    let z = (x - mu) / sd;
    -HALF_LN_2PI - sd.ln() - 0.5 * z * z
}

impl LiraFit {
    /// log N(t; mu_in, s_in) of cell c.
    pub fn log_pdf_in(&self, c: usize, t: f64) -> f64 {
        log_normal_pdf(t, self.mu_in[c], self.sd_in[c])
    }
    /// log N(t; mu_out, s_out) of cell c.
    pub fn log_pdf_out(&self, c: usize, t: f64) -> f64 {
        log_normal_pdf(t, self.mu_out[c], self.sd_out[c])
    }

    /// Scores (higher = member) of the target statistics `target` [n, q].
    pub fn scores(&self, target: &[f64], variant: LiraVariant) -> Vec<f64> {
        let q = self.q;
        (0..self.n)
            .map(|i| {
                (0..q)
                    .map(|j| {
                        let c = i * q + j;
                        let t = target[c];
                        match variant {
                            LiraVariant::Online => self.log_pdf_in(c, t) - self.log_pdf_out(c, t),
                            LiraVariant::Offline => {
                                let sd = self.sd_out[c].max(1e-30);
                                log_ndtr((t - self.mu_out[c]) / sd)
                            }
                            LiraVariant::OfflineTwoSided => -self.log_pdf_out(c, t),
                        }
                    })
                    .sum()
            })
            .collect()
    }
}

/// What one LiRA run did besides its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiraOutput {
    #[serde(skip)]
    pub scores: Vec<f64>,
    pub per_example_variance: usize,
    pub global_variance: usize,
    pub column_mean_fallbacks: usize,
}

/// LiRA on a score set.
pub fn lira(set: &ScoreSet, variant: LiraVariant, cfg: &LiraConfig) -> Result<LiraOutput> {
    let stats = ShadowStatistics::from_scores(set);
    let fit = fit(&stats, variant, cfg, &[set.shadows(), set.n()])?;
    let scores = fit.scores(&stats.target, variant);
    Ok(LiraOutput {
        per_example_variance: fit.per_example_variance,
        global_variance: set.n() - fit.per_example_variance - fit.column_mean_fallbacks,
        column_mean_fallbacks: fit.column_mean_fallbacks,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF Privacy's `compute_score_lira` test case (auditing.md §1): target [[1],[0],[0],[0]],
    /// stat_in [[-1, 1], [0, 2], [0, 20], (empty)], stat_out = -stat_in.
    fn tf_privacy_case() -> ShadowStatistics {
        let inn: Vec<Vec<f64>> = vec![vec![-1.0, 1.0], vec![0.0, 2.0], vec![0.0, 20.0], vec![]];
        let out = inn.iter().map(|v| v.iter().map(|x| -x).collect()).collect();
        ShadowStatistics {
            n: 4,
            q: 1,
            target: vec![1.0, 0.0, 0.0, 0.0],
            inn,
            out,
        }
    }

    fn cfg(variance: VarianceMode) -> LiraConfig {
        LiraConfig {
            variance,
            missing: MissingShadows::ColumnMean,
            ..LiraConfig::default()
        }
    }

    // The expected values are TF Privacy's, printed to 8 decimals: tolerance 1e-7.
    const PER_EXAMPLE: [f64; 4] = [1.41893853, 1.41893853, 3.72152363, 2.72537178];
    const FIXED: [f64; 4] = [2.69682468, 2.69682468, 4.15270703, 2.87983121];

    #[test]
    fn tf_privacy_compute_score_lira_vectors() {
        let stats = tf_privacy_case();
        for (mode, want) in [
            (VarianceMode::PerExample, PER_EXAMPLE),
            (VarianceMode::Global, FIXED),
        ] {
            let fit = fit(&stats, LiraVariant::Online, &cfg(mode), &[2, 4]).unwrap();
            assert_eq!(fit.column_mean_fallbacks, 1);
            for (i, w) in want.iter().enumerate() {
                // Option `in` (smaller = member) is -log N(t; in): ours is its negation.
                let got = -fit.log_pdf_in(i, stats.target[i]);
                assert!(
                    (got - w).abs() < 1e-7,
                    "{mode:?} in, example {i}: {got} vs {w}"
                );
            }
            // Option `out` is the same values negated (smaller = member), so our two-sided
            // offline score (higher = member) is the vector itself.
            let two = fit.scores(&stats.target, LiraVariant::OfflineTwoSided);
            for (i, w) in want.iter().enumerate() {
                assert!(
                    (two[i] - w).abs() < 1e-7,
                    "{mode:?} out, {i}: {} vs {w}",
                    two[i]
                );
            }
            // Option `both`: IN and OUT mirror each other around the target, so 0.
            let online = fit.scores(&stats.target, LiraVariant::Online);
            assert!(online.iter().all(|s| s.abs() < 1e-12), "{online:?}");
        }
    }

    #[test]
    fn one_reference_value_per_example_uses_the_spread_over_examples_not_zero() {
        // One complementary pair: each example has exactly one OUT value. Residuals around each
        // example's own centre are all 0; a zero variance would give every non-member score
        // -inf or 0 (ties at the top, no usable threshold at low FPR).
        let out: Vec<Vec<f64>> = vec![vec![0.0], vec![1.0], vec![2.0], vec![3.0]];
        let stats = ShadowStatistics {
            n: 4,
            q: 1,
            target: vec![0.5, 1.5, 2.5, 3.5],
            inn: vec![vec![]; 4],
            out,
        };
        let fit = fit(
            &stats,
            LiraVariant::Offline,
            &LiraConfig {
                variance: VarianceMode::Global,
                ..LiraConfig::default()
            },
            &[1, 4],
        )
        .unwrap();
        // NumPy's np.std([0, 1, 2, 3]) = sqrt(1.25).
        assert!(
            (fit.sd_out[0] - 1.25f64.sqrt()).abs() < 1e-12,
            "{:?}",
            fit.sd_out
        );
        let scores = fit.scores(&stats.target, LiraVariant::Offline);
        // Each target sits 0.5 above its OUT value: the same finite score, log Phi(0.5 / sd).
        assert!(
            scores.iter().all(|s| s.is_finite() && *s < 0.0),
            "{scores:?}"
        );
    }

    #[test]
    fn an_example_without_shadow_values_is_refused_by_default() {
        let stats = tf_privacy_case();
        let err = fit(&stats, LiraVariant::Online, &LiraConfig::default(), &[2, 4]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("example 3") && msg.contains("shadow_in") && msg.contains("[2, 4]"));
    }

    #[test]
    fn one_sided_offline_score_grows_with_the_target_statistic() {
        let stats = ShadowStatistics {
            n: 3,
            q: 1,
            target: vec![-2.0, 0.0, 2.0],
            inn: vec![vec![]; 3],
            out: vec![vec![-1.0, 1.0]; 3],
        };
        let fit = fit(
            &stats,
            LiraVariant::Offline,
            &cfg(VarianceMode::PerExample),
            &[2, 3],
        )
        .unwrap();
        let s = fit.scores(&stats.target, LiraVariant::Offline);
        assert!(s[0] < s[1] && s[1] < s[2]);
        // Median 0, sd 1: log Phi(0) = -ln 2.
        assert!((s[1] + std::f64::consts::LN_2).abs() < 1e-12);
        // Two-sided: -2 and +2 are equally surprising.
        let t = fit.scores(&stats.target, LiraVariant::OfflineTwoSided);
        assert!((t[0] - t[2]).abs() < 1e-12 && t[0] > t[1]);
    }

    #[test]
    fn auto_variance_switches_at_the_threshold() {
        let many: Vec<f64> = (0..32).map(|v| v as f64).collect();
        let stats = ShadowStatistics {
            n: 2,
            q: 1,
            target: vec![0.0, 0.0],
            inn: vec![many.clone(), many[..31].to_vec()],
            out: vec![many.clone(), many.clone()],
        };
        let f = fit(
            &stats,
            LiraVariant::Online,
            &LiraConfig::default(),
            &[64, 2],
        )
        .unwrap();
        assert_eq!(f.per_example_variance, 1);
        let f = fit(
            &stats,
            LiraVariant::Offline,
            &LiraConfig::default(),
            &[64, 2],
        )
        .unwrap();
        assert_eq!(f.per_example_variance, 2);
    }
}
