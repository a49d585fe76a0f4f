//! Properties checked with proptest on random inputs (each must hold for every input):
//! epsilon falls with sigma and grows with steps and q; the RDP epsilon bounds the PLD epsilon up
//! to the discretisation error; calibration round-trips; no panic and no NaN on any finite input.

use memaudit_accounting::rdp::{Conversion, RdpAccountant};
use memaudit_accounting::{
    AccountantKind, AccountingError, DpEvent, NeighboringRelation, PldAccountant,
    PrivacyAccountant, calibrate_noise, dp_sgd_event, epsilon_for,
};
use proptest::prelude::*;

const ADD_REMOVE: NeighboringRelation = NeighboringRelation::AddOrRemoveOne;

fn rdp_eps(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    epsilon_for(&dp_sgd_event(q, sigma, steps), delta, AccountantKind::Rdp)
        .unwrap()
        .epsilon
}

/// RDP epsilon, or None when its optimal order is below 2 (see `rdp_epsilon_is_monotone`).
fn rdp_eps_regular(q: f64, sigma: f64, steps: u64, delta: f64) -> Option<f64> {
    let r = epsilon_for(&dp_sgd_event(q, sigma, steps), delta, AccountantKind::Rdp).unwrap();
    r.order.filter(|o| *o >= 2.0).map(|_| r.epsilon)
}

fn pld_eps(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    epsilon_for(&dp_sgd_event(q, sigma, steps), delta, AccountantKind::Pld)
        .unwrap()
        .epsilon
}

/// The PLD's pessimistic discretisation may exceed the exact epsilon by a few grid steps per
/// composition's worth of rounding; we allow 1e-3 absolute plus 0.2% relative.
fn pld_tol(eps: f64) -> f64 {
    1e-3 + 2e-3 * eps
}

/// Deterministic runs (a fixed seed), no regression files.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6d65_6d61_7564_6974),
        ..ProptestConfig::default()
    }
}
proptest! {
    #![proptest_config(config(64))]

    /// Per order, RDP grows with q and steps and falls with sigma. The minimum over orders
    /// inherits that only where every order below the optimum is finite: dp_accounting's "abs"
    /// series gives up after 1000 terms at orders 1.1-1.5 for mid-range q (the order is then
    /// excluded), so when the optimum is below 2 (epsilon in the tens to hundreds with a large
    /// delta) epsilon can fall as q grows, in dp_accounting exactly as here (sigma 0.3, 73 steps,
    /// delta e^-3: q = 0.919 -> 468.24, q = 0.823 -> 477.78). Such pairs are skipped; see
    /// docs/accounting.md.
    #[test]
    fn rdp_epsilon_is_monotone(
        q in 1e-4f64..=1.0,
        sigma in 0.3f64..20.0,
        steps in 1u64..20000,
        log_delta in -25.0f64..-3.0,
        grow in 1.01f64..2.0,
    ) {
        let delta = log_delta.exp();
        let e = rdp_eps(q, sigma, steps, delta);
        prop_assert!(!e.is_nan() && e >= 0.0);
        let Some(e) = rdp_eps_regular(q, sigma, steps, delta) else { return Ok(()) };
        if let Some(more_noise) = rdp_eps_regular(q, sigma * grow, steps, delta) {
            prop_assert!(more_noise <= e * (1.0 + 1e-12), "sigma up: {more_noise} > {e}");
        }
        if let Some(more_steps) = rdp_eps_regular(q, sigma, (steps as f64 * grow).ceil() as u64, delta) {
            prop_assert!(more_steps >= e * (1.0 - 1e-12), "steps up: {more_steps} < {e}");
        }
        if let Some(less_q) = rdp_eps_regular(q / grow, sigma, steps, delta) {
            prop_assert!(less_q <= e * (1.0 + 1e-12), "q down: {less_q} > {e}");
        }
    }
}

proptest! {
    // The PLD properties run on the DP-SGD regime (epsilon up to ~50), where each PLD takes
    // milliseconds; PLDs of epsilon ~1000 take a second each and are covered by the vectors.
    #![proptest_config(config(16))]

    #[test]
    fn pld_epsilon_is_monotone_and_below_rdp(
        log_q in -7.0f64..-1.6,
        sigma in 0.8f64..8.0,
        steps in 1u64..1500,
        log_delta in -20.0f64..-4.0,
        grow in 1.05f64..2.0,
    ) {
        let q = log_q.exp();
        let delta = log_delta.exp();
        let e = pld_eps(q, sigma, steps, delta);
        prop_assert!(e.is_finite() && e >= 0.0, "epsilon {e}");
        let r = rdp_eps(q, sigma, steps, delta);
        prop_assert!(e <= r + pld_tol(r), "PLD {e} above RDP {r}");
        let more_noise = pld_eps(q, sigma * grow, steps, delta);
        prop_assert!(more_noise <= e + pld_tol(e), "sigma up: {more_noise} > {e}");
        let more_steps = pld_eps(q, sigma, (steps as f64 * grow).ceil() as u64, delta);
        prop_assert!(more_steps >= e - pld_tol(e), "steps up: {more_steps} < {e}");
        let less_q = pld_eps(q / grow, sigma, steps, delta);
        prop_assert!(less_q <= e + pld_tol(e), "q down: {less_q} > {e}");
    }

    #[test]
    fn calibration_round_trips(
        q in 1e-3f64..=0.2,
        steps in 1u64..5000,
        target in 0.2f64..20.0,
        log_delta in -18.0f64..-4.0,
    ) {
        let delta = log_delta.exp();
        let c = calibrate_noise(|s| dp_sgd_event(q, s, steps), delta, target, AccountantKind::Rdp).unwrap();
        prop_assert!(c.epsilon <= target, "{c:?}");
        prop_assert_eq!(c.epsilon, rdp_eps(q, c.noise_multiplier, steps, delta));
        let smaller = c.noise_multiplier / (1.0 + 1e-4);
        prop_assert!(rdp_eps(q, smaller, steps, delta) > target, "not the smallest sigma: {c:?}");
    }

    #[test]
    fn no_panic_or_nan_on_finite_inputs(
        q in prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0, 1e-12f64..1e-6],
        sigma in prop_oneof![Just(0.0), 1e-3f64..1e-1, 0.1f64..1e3],
        steps in prop_oneof![Just(0u64), 1u64..10, 10u64..1_000_000_000],
        delta in prop_oneof![1e-300f64..1e-100, 1e-20f64..0.999],
        epsilon in 0.0f64..1e4,
    ) {
        let event = dp_sgd_event(q, sigma, steps);
        let mut rdp = RdpAccountant::new(ADD_REMOVE);
        rdp.compose(&event).unwrap();
        let e = rdp.epsilon_and_order(delta, Conversion::Improved).unwrap();
        prop_assert!(!e.epsilon.is_nan() && e.epsilon >= 0.0, "RDP epsilon {e:?}");
        let c = rdp.epsilon_and_order(delta, Conversion::Classic).unwrap();
        prop_assert!(!c.epsilon.is_nan() && c.epsilon >= 0.0, "classic {c:?}");
        let d = rdp.delta(epsilon).unwrap();
        prop_assert!((0.0..=1.0).contains(&d), "RDP delta {d}");
        // PLD: only where the grid is small enough to build quickly in a test; elsewhere it must
        // refuse cleanly (checked without building).
        if sigma == 0.0 || q == 0.0 || steps == 0 || (sigma >= 0.3 && steps <= 100_000) {
            let mut pld = PldAccountant::new(ADD_REMOVE);
            pld.compose(&event).unwrap();
            match pld.epsilon(delta) {
                Ok(v) => prop_assert!(!v.is_nan() && v >= 0.0, "PLD epsilon {v}"),
                Err(AccountingError::PldTooLarge { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
            match pld.delta(epsilon) {
                Ok(v) => prop_assert!((0.0..=1.0).contains(&v), "PLD delta {v}"),
                Err(AccountingError::PldTooLarge { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}

/// dp_accounting `test_epsilon_delta_consistency`: delta(epsilon(delta)) = delta.
#[test]
fn epsilon_delta_consistency() {
    let orders: Vec<f64> = (2..50).map(f64::from).collect();
    for q in [0.0, 0.01, 0.1, 0.8, 1.0] {
        for sigma in [0.0, 0.1, 1.0, 10.0, 100.0] {
            let mut acc = RdpAccountant::with_orders(ADD_REMOVE, &orders).unwrap();
            acc.compose(&DpEvent::poisson_sampled(q, DpEvent::gaussian(sigma)))
                .unwrap();
            for delta in [0.99, 0.9, 0.1, 0.01, 1e-3, 1e-5, 1e-9, 1e-12] {
                let eps = acc.epsilon(delta).unwrap();
                if eps.is_infinite() {
                    // delta(infinity) is refused (epsilon must be finite); the accountant says 1
                    // for any finite epsilon.
                    assert_eq!(acc.delta(1e300).unwrap(), 1.0, "q={q} sigma={sigma}");
                    continue;
                }
                let back = acc.delta(eps).unwrap();
                if eps == 0.0 {
                    assert!(back <= delta, "q={q} sigma={sigma} delta={delta}: {back}");
                } else {
                    assert!(
                        (back - delta).abs() < 1e-7 * delta.max(1e-7),
                        "q={q} sigma={sigma} delta={delta}: {back}"
                    );
                }
            }
        }
    }
}

#[test]
fn pld_refuses_huge_grids_quickly() {
    let mut pld = PldAccountant::new(ADD_REMOVE);
    pld.compose(&dp_sgd_event(0.5, 1e-3, 10)).unwrap();
    let err = pld.epsilon(1e-5).unwrap_err();
    assert!(matches!(err, AccountingError::PldTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("RDP"), "{err}");
}

#[test]
fn pld_is_continuous_across_the_tilt_threshold() {
    let mut pld = PldAccountant::new(ADD_REMOVE);
    pld.compose(&dp_sgd_event(256.0 / 60000.0, 1.1, 14063))
        .unwrap();
    let above = pld.epsilon(1e-9 * (1.0 + 1e-9)).unwrap();
    let below = pld.epsilon(1e-9 * (1.0 - 1e-9)).unwrap();
    assert!((above - below).abs() < 1e-4, "{above} vs {below}");
}
