//! Summary statistics of the dynamics measurements: the Gini coefficient (Arpit et al. §3.2
//! summarise loss-sensitivity with it) and the binomial dispersion of per-example
//! misclassification rates (§3.1: randX behaves like Binomial(S, p)).

use super::error::{Result, invalid};

/// Gini coefficient of non-negative values: the mean absolute difference over all ordered pairs
/// divided by twice the mean, `sum_i sum_j |x_i - x_j| / (2 n^2 mean)`. 0 when all values are
/// equal; (n - 1) / n when one value holds everything.
///
/// Computed in O(n log n) from the sorted values: `sum_i (2i - n - 1) x_(i) / (n sum x)` with
/// i = 1..n. All-zero input has no inequality and returns 0.
pub fn gini(values: &[f64]) -> Result<f64> {
    if values.is_empty() {
        return Err(invalid("Gini coefficient", "needs at least one value"));
    }
    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(invalid(
            "Gini coefficient",
            format!("values must be finite and >= 0, got {v}"),
        ));
    }
    let mut s = values.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len() as f64;
    let total: f64 = s.iter().sum();
    if total == 0.0 {
        return Ok(0.0);
    }
    let weighted: f64 = s
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n - 1.0) * x)
        .sum();
    Ok(weighted / (n * total))
}

/// How far per-example rates spread beyond what identical coins would give.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Dispersion {
    /// Mean per-example rate p.
    pub mean: f64,
    /// Variance of the per-example rates across examples.
    pub variance: f64,
    /// The variance if every example were the same Binomial(S, p) / S: p (1 - p) / S.
    pub binomial_variance: f64,
    /// variance / binomial_variance: about 1 for identical examples (randX in the paper), well
    /// above 1 when some examples are consistently easy and others consistently hard (real data).
    pub ratio: f64,
    /// Examples with rate exactly 0 and exactly 1, and what Binomial(S, p) expects of each.
    pub at_zero: usize,
    pub at_one: usize,
    pub binomial_expected_at_zero: f64,
    pub binomial_expected_at_one: f64,
}

/// Dispersion of `rates` (each a fraction of `trials` Bernoulli outcomes).
pub fn binomial_dispersion(rates: &[f64], trials: usize) -> Result<Dispersion> {
    if rates.len() < 2 || trials == 0 {
        return Err(invalid(
            "binomial dispersion",
            "needs at least 2 examples and 1 trial",
        ));
    }
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let binomial_variance = mean * (1.0 - mean) / trials as f64;
    let ratio = if binomial_variance > 0.0 {
        variance / binomial_variance
    } else {
        f64::NAN
    };
    let s = trials as i32;
    Ok(Dispersion {
        mean,
        variance,
        binomial_variance,
        ratio,
        at_zero: rates.iter().filter(|&&r| r == 0.0).count(),
        at_one: rates.iter().filter(|&&r| r == 1.0).count(),
        binomial_expected_at_zero: n * (1.0 - mean).powi(s),
        binomial_expected_at_one: n * mean.powi(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The definition, literally: O(n^2) over ordered pairs.
    fn gini_brute(x: &[f64]) -> f64 {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let mut s = 0.0;
        for a in x {
            for b in x {
                s += (a - b).abs();
            }
        }
        s / (2.0 * n * n * mean)
    }

    #[test]
    fn gini_known_values() {
        // Exact by hand: [1..5] has sum |xi - xj| = 40 over ordered pairs, mean 3: 40 / 150.
        assert!((gini(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap() - 4.0 / 15.0).abs() < 1e-15);
        assert_eq!(gini(&[2.5; 7]).unwrap(), 0.0);
        assert_eq!(gini(&[0.0; 4]).unwrap(), 0.0);
        // One holder of everything: (n - 1) / n.
        let mut v = vec![0.0; 10];
        v[3] = 8.0;
        assert!((gini(&v).unwrap() - 0.9).abs() < 1e-15);
        assert!((gini(&[5.0]).unwrap()).abs() < 1e-15);
        // Scale invariant and order invariant.
        assert!(
            (gini(&[3.0, 1.0, 2.0]).unwrap() - gini(&[20.0, 30.0, 10.0]).unwrap()).abs() < 1e-15
        );
    }

    #[test]
    fn gini_matches_the_pairwise_definition() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for n in [2usize, 3, 17, 200] {
            let x: Vec<f64> = (0..n).map(|_| rng.random::<f64>().powi(3) * 10.0).collect();
            let (a, b) = (gini(&x).unwrap(), gini_brute(&x));
            // Both are sums of O(n^2) or O(n) terms of size <= 10 in f64: 1e-12 is loose.
            assert!((a - b).abs() < 1e-12, "n {n}: {a} vs {b}");
        }
    }

    #[test]
    fn gini_refuses_negative_or_non_finite_values() {
        assert!(gini(&[]).is_err());
        assert!(gini(&[1.0, -0.5]).is_err());
        assert!(gini(&[1.0, f64::NAN]).is_err());
        assert!(gini(&[1.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn identical_coins_have_binomial_dispersion_and_mixed_ones_do_not() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let trials = 50;
        let rate = |p: f64, rng: &mut rand_chacha::ChaCha8Rng| {
            (0..trials).filter(|_| rng.random::<f64>() < p).count() as f64 / trials as f64
        };
        let same: Vec<f64> = (0..4000).map(|_| rate(0.3, &mut rng)).collect();
        let d = binomial_dispersion(&same, trials).unwrap();
        // The sample variance of 4000 binomial rates is within ~2.2% (1 sigma) of p(1-p)/S.
        assert!((d.ratio - 1.0).abs() < 0.1, "{d:?}");
        let mixed: Vec<f64> = (0..4000)
            .map(|i| rate(if i % 2 == 0 { 0.05 } else { 0.55 }, &mut rng))
            .collect();
        let d = binomial_dispersion(&mixed, trials).unwrap();
        // Between-group variance 0.0625 against p(1-p)/S = 0.0042: ratio about 16.
        assert!(d.ratio > 10.0, "{d:?}");
        assert!(binomial_dispersion(&[0.5], 3).is_err());
    }
}
