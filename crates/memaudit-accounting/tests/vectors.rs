//! Every row of the reference vectors (dp_accounting 0.6.0): RDP epsilon within 1e-6 relative
//! with the same optimal order; PLD epsilon within max(0.5%, 1e-3 absolute).
//! Source and provenance: tests/data/README.md.

use memaudit_accounting::{
    Conversion, DpEvent, NeighboringRelation, PldAccountant, PrivacyAccountant, RdpAccountant,
    dp_sgd_event,
};

struct Row {
    id: u32,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    eps_rdp: f64,
    order: f64,
    eps_pld: f64,
}

fn rows() -> Vec<Row> {
    let text = include_str!("data/accounting_vectors.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 8, "bad row: {l}");
            Row {
                id: f[0].parse().unwrap(),
                q: f[1].parse().unwrap(),
                sigma: f[2].parse().unwrap(),
                steps: f[3].parse().unwrap(),
                delta: f[4].parse().unwrap(),
                eps_rdp: f[5].parse().unwrap(),
                order: f[6].parse().unwrap(),
                eps_pld: f[7].parse().unwrap(),
            }
        })
        .collect()
}

fn event(r: &Row) -> DpEvent {
    dp_sgd_event(r.q, r.sigma, r.steps)
}

#[test]
fn all_forty_rows_are_present() {
    assert_eq!(rows().len(), 40);
}

#[test]
fn rdp_matches_dp_accounting_to_1e6_relative_with_the_same_order() {
    let mut worst = 0.0f64;
    for r in rows() {
        let mut acc = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&event(&r)).unwrap();
        let e = acc
            .epsilon_and_order(r.delta, Conversion::Improved)
            .unwrap();
        let rel = ((e.epsilon - r.eps_rdp) / r.eps_rdp).abs();
        worst = worst.max(rel);
        assert!(
            rel <= 1e-6,
            "row {}: epsilon {} vs {} (rel {rel:e})",
            r.id,
            e.epsilon,
            r.eps_rdp
        );
        assert_eq!(e.order, r.order, "row {}: optimal order", r.id);
    }
    eprintln!("worst relative RDP difference: {worst:e}");
}

#[test]
fn pld_matches_dp_accounting_within_half_a_percent() {
    let mut worst = 0.0f64;
    for r in rows() {
        let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&event(&r)).unwrap();
        let e = acc.epsilon(r.delta).unwrap();
        let tol = (5e-3 * r.eps_pld).max(1e-3);
        let diff = (e - r.eps_pld).abs();
        worst = worst.max(diff / r.eps_pld);
        eprintln!(
            "row {:2}: pld {e:.10} ref {:.10} rel {:.2e}",
            r.id,
            r.eps_pld,
            diff / r.eps_pld
        );
        assert!(
            diff <= tol,
            "row {}: PLD epsilon {e} vs {} (diff {diff:e}, tol {tol:e})",
            r.id,
            r.eps_pld
        );
    }
    eprintln!("worst relative PLD difference: {worst:e}");
}
