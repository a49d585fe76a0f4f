//! Exposure (The Secret Sharer, Carlini et al. 2019, Def. 3 and 4):
//! `exposure = log2 |R| - log2 rank`, with `rank = |{r' in R : Px(r') <= Px(r)}|` (rank 1 = most
//! likely; ties count toward the rank).
//!
//! Three estimators:
//! - exact, from the rank over all of R ([`exposure_from_rank`], [`ranks_from_scores`], or the
//!   streaming walk in [`crate::scoring::Scorer::exact_ranks`]);
//! - TF Privacy's *interpolation* over sampled references ([`interpolation_exposures`]);
//! - *extrapolation* from a skew-normal fit to the references ([`crate::skewnorm`]).

use crate::error::{Result, invalid};
use crate::skewnorm::SkewNormal;

/// `log2 |R| - log2 rank` (rank >= 1).
pub fn exposure_from_rank(rank: u128, log2_space: f64) -> f64 {
    log2_space - (rank as f64).log2()
}

/// Exact ranks of candidates `secrets` given the log-perplexity of every candidate
/// (`scores[i]` = candidate i): `|{i : scores[i] <= scores[secret]}|`, ties counted. NaN scores
/// are never counted.
pub fn ranks_from_scores(scores: &[f64], secrets: &[u128]) -> Result<Vec<u128>> {
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    secrets
        .iter()
        .map(|&s| {
            let score = *scores
                .get(s as usize)
                .filter(|_| s < scores.len() as u128)
                .ok_or_else(|| {
                    invalid(
                        "secret index",
                        format!("{s} is outside the {} scored candidates", scores.len()),
                    )
                })?;
            if score.is_nan() {
                return Err(invalid(
                    "secret score",
                    format!("the log-perplexity of candidate {s} is NaN"),
                ));
            }
            Ok(sorted.partition_point(|&x| x <= score) as u128)
        })
        .collect()
}

/// TF Privacy's `compute_exposure_interpolation`: rank = 1 + #{reference : p_ref <= p} (a
/// reference that ties with the secret sorts before it, so it counts; secrets never count each
/// other), exposure = log2 N_ref - log2 rank, in [log2 N - log2 (N+1), log2 N].
/// Unlike TF, results come back in input order (TF returns each key's exposures sorted by
/// perplexity). Errors on an empty reference set or NaN input.
pub fn interpolation_exposures(
    secret_scores: &[f64],
    reference_scores: &[f64],
) -> Result<Vec<f64>> {
    if reference_scores.is_empty() {
        return Err(invalid(
            "reference log-perplexities",
            "none given; sample reference candidates first",
        ));
    }
    if reference_scores
        .iter()
        .chain(secret_scores)
        .any(|s| s.is_nan())
    {
        return Err(invalid(
            "log-perplexities",
            "NaN in the secret or reference scores; the model output is broken",
        ));
    }
    let mut sorted = reference_scores.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let log2_n = (sorted.len() as f64).log2();
    Ok(secret_scores
        .iter()
        .map(|&p| {
            let rank = 1 + sorted.partition_point(|&r| r <= p);
            log2_n - (rank as f64).log2()
        })
        .collect())
}

/// TF Privacy's `compute_exposure_extrapolation`: fit a skew-normal to the references by maximum
/// likelihood (scipy's procedure, see [`crate::skewnorm::fit_skew_normal`]) and return
/// `-log2 cdf(p)` for each secret, with the fit.
pub fn extrapolation_exposures(
    secret_scores: &[f64],
    reference_scores: &[f64],
) -> Result<(Vec<f64>, SkewNormal)> {
    let fit = crate::skewnorm::fit_skew_normal(reference_scores)?;
    let dist = fit.dist;
    Ok((
        secret_scores.iter().map(|&p| dist.exposure(p)).collect(),
        dist,
    ))
}
