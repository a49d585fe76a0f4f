//! The PLD accountant stays finite and sane where dp_accounting's drowns in FFT noise:
//! delta < 1e-12 and epsilon > 10. "Sane" is checked against the RDP accountant, which is a
//! valid upper bound: PLD epsilon <= RDP epsilon (+ the 1e-4 grid step), PLD delta <= RDP delta.

use memaudit_accounting::{
    NeighboringRelation, PldAccountant, PrivacyAccountant, RdpAccountant, dp_sgd_event,
};

fn both(q: f64, sigma: f64, steps: u64) -> (PldAccountant, RdpAccountant) {
    let e = dp_sgd_event(q, sigma, steps);
    let mut p = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
    p.compose(&e).unwrap();
    let mut r = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
    r.compose(&e).unwrap();
    (p, r)
}

#[test]
fn tiny_delta_epsilon_is_finite_and_below_rdp() {
    let cases = [
        (256.0 / 60000.0, 1.1, 14063),
        (0.01, 0.7, 120),
        (1.0, 0.7, 2),
        (0.0233868, 3.924, 57706),
    ];
    for (q, sigma, steps) in cases {
        let (p, r) = both(q, sigma, steps);
        let mut last = 0.0;
        for delta in [1e-5, 1e-8, 1e-10, 1e-12, 1e-13, 1e-14] {
            let ep = p.epsilon(delta).unwrap();
            let er = r.epsilon(delta).unwrap();
            eprintln!("q={q} sigma={sigma} T={steps} delta={delta:e}: pld {ep:.6} rdp {er:.6}");
            assert!(ep.is_finite(), "delta {delta}: PLD epsilon {ep}");
            assert!(ep <= er + 1e-3, "delta {delta}: PLD {ep} above RDP {er}");
            assert!(
                ep >= last,
                "epsilon must grow as delta shrinks: {ep} < {last}"
            );
            last = ep;
        }
    }
}

#[test]
fn large_epsilon_delta_is_finite_and_below_rdp() {
    let (p, r) = both(256.0 / 60000.0, 1.1, 14063);
    let mut last = 1.0;
    for eps in [2.0, 5.0, 10.0, 15.0, 20.0, 50.0] {
        let dp = p.delta(eps).unwrap();
        let dr = r.delta(eps).unwrap();
        eprintln!("eps {eps}: pld {dp:e} rdp {dr:e}");
        assert!(dp.is_finite() && dp >= 0.0);
        assert!(
            dp <= dr * 1.001 + 1e-300 || dp <= 2e-15,
            "eps {eps}: PLD delta {dp:e} above RDP {dr:e}"
        );
        assert!(dp <= last, "delta must fall as epsilon grows");
        last = dp;
    }
}
