//! Privacy-loss-distribution (PLD) accountant for the (Poisson-subsampled) Gaussian mechanism.
//!
//! The algorithm is dp_accounting's (`pld/privacy_loss_distribution.py`, `pld_pmf.py`,
//! `common.py`, version 0.6.0), so results agree with it:
//!
//! 1. Privacy loss of one step (Koskela, Jälkö, Honkela 2020; Meiser & Mohammadi 2018 "privacy
//!    buckets"): for the remove adjacency the upper distribution is (1-q) N(0,σ²) + q N(-1,σ²) and
//!    the lower N(0,σ²); for add, N(0,σ²) against (1-q) N(0,σ²) + q N(1,σ²) (q = 1 gives the same
//!    PLD for both, so it is kept once). The noise is truncated where its CDF is ½e^-50.
//! 2. Pessimistic "connect-the-dots" discretisation (Doroshenko, Ghazi, Kamath, Kumar,
//!    Manurangsi 2022, arXiv 2207.04380, Algorithm 1) on the grid ε_i = i·Δ, Δ = 1e-4: the PMF is
//!    read off the exact hockey-stick divergences δ(ε_i) = P_upper(x <= x_ε) - e^ε P_lower(x <= x_ε).
//! 3. Composition: `count`-fold self-convolution by FFT (spectrum raised to the power `count`)
//!    over a window given by a Chernoff bound that drops at most 1e-15 of mass (added to the
//!    mass at infinity, pessimistically); different events are convolved and their tails
//!    truncated the same way. The unsampled Gaussian is one PLD with σ/√count.
//! 4. δ(ε) = m_∞ + Σ_{L > ε} (1 - e^(ε-L)) p_L; ε(δ) by the same downward sweep as dp_accounting.
//!    With add/remove neighbours the result is the max over the two adjacencies.
//!
//! Beyond dp_accounting: its FFT rounding noise (~1e-16 of the largest mass, amplified by the
//! power) swamps δ below ~1e-12 (it reports ε = 7.0 at δ = 1e-13 where its own RDP accountant
//! proves 4.6). For δ < 1e-9 this accountant recomposes with an exponential tilt (multiply the
//! one-step PMF by e^(λL) before the FFT, divide after; exact algebra, λ = the RDP-optimal order
//! minus one, the Chernoff saddle point), which moves the FFT's relative accuracy to the tail that
//! decides δ, and it shrinks the truncations (tail mass δ/1000). The tilted answer is used when the
//! sweep stays where the tilted values are accurate, else the plain one. Negative FFT outputs are
//! clipped to zero (adds mass: pessimistic). When every event is an unsampled Gaussian and the grid
//! would be too large (tiny effective σ), the exact Gaussian curve (Balle & Wang 2018, Thm. 8) is
//! used. `PoissonSampled` of composed Gaussians is one Gaussian of the effective σ (dp_accounting's
//! PLD refuses it). Replace-one is refused: dp_accounting's PLD doubles the Gaussian's sensitivity
//! under replace-one while its RDP does not; use RDP with `SampledWithoutReplacement`.

mod pld_pmf;
mod pld_privacy_accountant;
mod privacy_loss_distribution;
mod privacy_loss_mechanism;

#[allow(unused_imports)]
use pld_pmf::*;
pub use pld_privacy_accountant::PldAccountant;
#[allow(unused_imports)]
use privacy_loss_distribution::*;
#[allow(unused_imports)]
use privacy_loss_mechanism::*;
pub use privacy_loss_mechanism::{
    gaussian_delta_for_epsilon, gaussian_epsilon_for_delta, gaussian_sigma_for_epsilon_delta,
};

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::PrivacyAccountant;
use crate::error::{AccountingError, Result, check_delta, check_epsilon, invalid};
use crate::event::{Atom, DpEvent, NeighboringRelation, flatten};
use crate::fft;
use crate::rdp::{Conversion, RdpAccountant};
use crate::special::{log_a_times_exp_b_plus_c, norm_ppf_from_log};

/// Below this δ the answer comes from the tilted recomposition (see the module docs).
pub const TILT_DELTA_THRESHOLD: f64 = 1e-9;

/// Settings of the PLD accountant; the defaults are dp_accounting's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PldOptions {
    /// Grid step of the privacy loss (dp_accounting `value_discretization_interval`).
    pub value_discretization_interval: f64,
    /// Mass each composition may drop from the tails (moved to infinity).
    pub tail_mass_truncation: f64,
    /// ln of the noise mass truncated from each one-step distribution.
    pub log_mass_truncation_bound: f64,
    /// Refuse PLDs with more grid points than this (memory: ~24 bytes per point).
    pub max_points: u64,
}

impl Default for PldOptions {
    fn default() -> Self {
        Self {
            value_discretization_interval: 1e-4,
            tail_mass_truncation: 1e-15,
            log_mass_truncation_bound: -50.0,
            max_points: 1 << 25,
        }
    }
}

impl PldOptions {
    fn validate(&self) -> Result<()> {
        let d = self.value_discretization_interval;
        if !(d > 0.0 && d.is_finite()) {
            return Err(invalid(
                "value_discretization_interval",
                d,
                "must be a finite number > 0",
            ));
        }
        let t = self.tail_mass_truncation;
        if !(0.0..1.0).contains(&t) {
            return Err(invalid("tail_mass_truncation", t, "must be in [0, 1)"));
        }
        let b = self.log_mass_truncation_bound;
        if !(b <= 0.0 && b.is_finite()) {
            return Err(invalid(
                "log_mass_truncation_bound",
                b,
                "must be a finite number <= 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_moves_mass_pessimistically() {
        let probs = vec![1e-17, 2e-17, 0.5, 0.5 - 1e-16, 3e-17, 4e-17];
        let (offset, kept, right) = truncate_tails(probs, 1e-15);
        assert_eq!(offset, 2);
        assert_eq!(kept.len(), 2);
        assert!((kept[0] - (0.5 + 3e-17)).abs() < 1e-20);
        assert!((right - 7e-17).abs() < 1e-25);
    }

    #[test]
    fn chernoff_window_contains_the_mass() {
        // Binomial(40 * 3, 0.5) from a 3-point PMF: the window must keep all but 1e-15 of it.
        let p = [0.25, 0.5, 0.25];
        let (lb, ub) = chernoff_bounds(&p, 40, 1e-15);
        let mut full = vec![1.0];
        for _ in 0..40 {
            full = fft::convolve(&full, &p);
        }
        let outside: f64 = full
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as i64) < lb || (*i as i64) > ub)
            .map(|(_, v)| v)
            .sum();
        assert!(outside <= 1e-15, "{outside}");
        assert!(
            lb > 0 && ub < 80,
            "the bound should cut something: {lb} {ub}"
        );
    }

    #[test]
    fn gaussian_pmf_grid_is_dp_accountings() {
        // Grids of dp_accounting 0.6.0 `from_gaussian_mechanism(1.1, sampling_prob=q)` (lower
        // index, length, mass + infinity mass), printed in this repository's session. The
        // pessimistic connect-the-dots PMF clips rounding-negative masses to zero, so its total
        // exceeds 1 by ~1e-8 there too; that excess is rounding noise, equal to ~1e-9.
        let opts = PldOptions::default();
        let cases = [
            (1.0, Adjacency::Remove, -92728, 185457, 1.0000000153799027),
            (0.01, Adjacency::Remove, -101, 46871, 1.0000000000000047),
            (0.01, Adjacency::Add, -46769, 46871, 1.000000014520816),
        ];
        for (q, adj, lower, len, total_ref) in cases {
            let p = gaussian_pmf(1.1, q, adj, &opts).unwrap();
            assert_eq!((p.lower, p.probs.len()), (lower, len), "q={q} {adj:?}");
            let total: f64 = p.probs.iter().sum::<f64>() + p.infinity_mass;
            assert!(
                (total - total_ref).abs() < 1e-9,
                "q={q} {adj:?}: total {total} vs {total_ref}"
            );
            assert!(p.probs.iter().all(|v| *v >= 0.0 && v.is_finite()));
        }
    }

    #[test]
    fn tiny_sigma_gaussian_falls_back_to_the_exact_curve() {
        // sigma / sqrt(2000) = 0.0134: the discretised PLD would need ~7e7 points.
        let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&DpEvent::self_composed(DpEvent::gaussian(0.6), 2000))
            .unwrap();
        let eps = acc.epsilon_for_delta(1e-5).unwrap();
        let sigma = 0.6 / 2000f64.sqrt();
        assert!(
            (gaussian_delta_for_epsilon(sigma, eps) - 1e-5).abs() < 1e-12,
            "{eps}"
        );
        // RDP of the same event is an upper bound.
        let rdp = crate::epsilon_for(
            &DpEvent::self_composed(DpEvent::gaussian(0.6), 2000),
            1e-5,
            crate::AccountantKind::Rdp,
        )
        .unwrap()
        .epsilon;
        assert!(eps < rdp && eps > 0.9 * rdp, "{eps} vs RDP {rdp}");
        let d = acc.delta_for_epsilon(eps).unwrap();
        assert!((d - 1e-5).abs() < 1e-9, "{d}");
    }

    #[test]
    fn unsampled_gaussian_delta_is_the_analytic_one() {
        // δ(ε) of the Gaussian mechanism (Balle & Wang 2018, Thm. 8):
        // Φ(-ε σ + 1/(2σ)) - e^ε Φ(-ε σ - 1/(2σ)); the pessimistic PLD may only exceed it, by
        // little.
        let sigma = 2.0;
        let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&DpEvent::gaussian(sigma)).unwrap();
        for eps in [0.1, 0.5, 1.0, 2.0] {
            let exact = gaussian_delta_for_epsilon(sigma, eps);
            let textbook = crate::special::ndtr(-eps * sigma + 0.5 / sigma)
                - eps.exp() * crate::special::ndtr(-eps * sigma - 0.5 / sigma);
            assert!((exact - textbook).abs() < 1e-15, "{exact} vs {textbook}");
            let got = acc.delta_for_epsilon(eps).unwrap();
            assert!(got >= exact * (1.0 - 1e-9), "eps {eps}: {got} < {exact}");
            assert!(got <= exact * 1.01 + 1e-15, "eps {eps}: {got} vs {exact}");
        }
    }

    #[test]
    fn gaussian_sigma_for_epsilon_delta_inverts_the_exact_delta() {
        // Round trip through the exact δ(ε; σ): the solver's σ meets δ (to the 1e-14 relative
        // bisection width, which moves δ by far less than 1e-9 relative) and is the smallest
        // such σ (1e-12 below it, δ is exceeded).
        for (eps, delta) in [(0.0, 1e-3), (1.0, 1e-5), (4.395568, 1e-6), (9.0, 1e-6)] {
            let sigma = gaussian_sigma_for_epsilon_delta(eps, delta);
            assert!(sigma.is_finite() && sigma > 0.0, "{sigma}");
            let got = gaussian_delta_for_epsilon(sigma, eps);
            assert!(
                got <= delta && got > delta * (1.0 - 1e-9),
                "{eps} {delta}: {got}"
            );
            assert!(gaussian_delta_for_epsilon(sigma * (1.0 - 1e-12), eps) > delta);
            let back = gaussian_epsilon_for_delta(sigma, delta);
            assert!((back - eps).abs() < 1e-9 * eps.max(1.0), "{eps} -> {back}");
        }
        assert_eq!(gaussian_sigma_for_epsilon_delta(1.0, 0.0), f64::INFINITY);
        assert_eq!(gaussian_sigma_for_epsilon_delta(1.0, 1.0), 0.0);
        assert!(gaussian_sigma_for_epsilon_delta(-1.0, 0.1).is_nan());
    }
}
