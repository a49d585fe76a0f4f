//! TF Privacy's exposure test vectors (exposures_test.py, papers.md §2.2) and rank exposure.

use memaudit_audit::{
    exposure_from_rank, extrapolation_exposures, fit_skew_normal, interpolation_exposures,
    ranks_from_scores,
};

/// References 1, 2, ..., 16. Exact: these are log2 of small integers.
#[test]
fn tf_privacy_interpolation_vectors() {
    let reference: Vec<f64> = (1..=16).map(f64::from).collect();
    let secrets = [0.0, 0.1, 20.0, 3.5, 3.5];
    let got = interpolation_exposures(&secrets, &reference).unwrap();
    let want = [4.0, 4.0, 4.0 - 17f64.log2(), 2.0, 2.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-15, "{got:?}");
    }
    assert!((got[2] - -0.08746284125033943).abs() < 1e-15);
    // a reference that ties with the secret counts toward the rank: p = 3 has rank 1 + 3
    let tie = interpolation_exposures(&[3.0], &reference).unwrap();
    assert!((tie[0] - 2.0).abs() < 1e-15);
    // secrets never count each other
    let many = interpolation_exposures(&[0.5; 10], &reference).unwrap();
    assert!(many.iter().all(|&e| e == 4.0));
    assert!(interpolation_exposures(&[1.0], &[]).is_err());
    assert!(interpolation_exposures(&[f64::NAN], &reference).is_err());
}

#[test]
fn rank_exposure() {
    assert_eq!(exposure_from_rank(1, 30.0), 30.0);
    assert!((exposure_from_rank(1 << 20, 30.0) - 10.0).abs() < 1e-15);
    let scores = [3.0, 1.0, 2.0, 2.0, f64::NAN, 0.5];
    // ties count: candidate 2 and 3 both have rank 4 (0.5, 1, 2, 2)
    assert_eq!(
        ranks_from_scores(&scores, &[5, 1, 2, 3, 0]).unwrap(),
        vec![1, 2, 4, 4, 5]
    );
    assert!(ranks_from_scores(&scores, &[4]).is_err());
    assert!(ranks_from_scores(&scores, &[6]).is_err());
}

/// Extrapolation = -log2 cdf under the fitted skew-normal, and it agrees with interpolation in
/// the body when the references really are skew-normal (papers.md §2.6 check 1): here the
/// references are the 4000 mid-quantiles of the fitted law itself, so the two estimators must
/// agree to the quantile grid's resolution (0.01 bits at exposure <= 5).
#[test]
fn extrapolation_is_the_fitted_tail() {
    let data: Vec<f64> = (0..3000)
        .map(|i| {
            ((i as f64 * 0.618_033_988_75).fract() - 0.5) * 4.0
                + (i as f64 * 0.414_213_562).fract().powi(3) * 3.0
        })
        .collect();
    let secrets = [-2.5, -1.0, 0.0, 1.0];
    let (exp, dist) = extrapolation_exposures(&secrets, &data).unwrap();
    let fit = fit_skew_normal(&data).unwrap().dist;
    assert_eq!(dist, fit);
    for (e, s) in exp.iter().zip(secrets) {
        assert_eq!(*e, -fit.ln_cdf(s) / std::f64::consts::LN_2);
    }
    // self-consistency with interpolation on a sample of the fitted law (its quantiles)
    let n = 4000;
    let quantile = |p: f64| {
        // bisection on the cdf
        let (mut lo, mut hi) = (fit.loc - 40.0 * fit.scale, fit.loc + 40.0 * fit.scale);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if fit.cdf(mid) < p { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let refs: Vec<f64> = (0..n)
        .map(|i| quantile((i as f64 + 0.5) / n as f64))
        .collect();
    let probes: Vec<f64> = [0.5, 0.2, 0.1, 0.05].iter().map(|&p| quantile(p)).collect();
    let interp = interpolation_exposures(&probes, &refs).unwrap();
    for (i, p) in probes.iter().enumerate() {
        let extra = fit.exposure(*p);
        assert!((interp[i] - extra).abs() < 0.01, "{} vs {extra}", interp[i]);
    }
}
