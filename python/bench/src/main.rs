//! Per-call time of the library functions the Python overhead benchmark also calls, in
//! microseconds (the fastest of `rounds` rounds of `calls` calls each), as one JSON object on stdout.
//! Usage: memaudit-python-bench [rounds] [calls]
//!
//! The inputs are built exactly as scripts/bench_python_overhead.py builds them, so the
//! difference between the two is the cost of the Python boundary.

use std::hint::black_box;
use std::time::Instant;

use memaudit_accounting::rdp::{Conversion, RdpAccountant};
use memaudit_accounting::special::norm_ppf_from_log;
use memaudit_accounting::{NeighboringRelation, PrivacyAccountant, dp_sgd_event};
use memaudit_audit::exposure::interpolation_exposures;
use memaudit_audit::lower_bound::{
    CanaryScores, LowerBoundConfig, LowerBoundMethod, MethodChoice, lower_bounds,
};

/// Fastest round's microseconds per call of `f` (`rounds` rounds of `calls` calls): on a shared
/// machine the minimum is the least load-dependent estimate of a call's own cost.
fn time_us(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    let mut per_call: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[0]
}

/// Phi^-1((i + 1/2) / n) + shift: the benchmark's canary scores (JAX Privacy's test scores).
fn normals(n: usize, shift: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let p = (i as f64 + 0.5) / n as f64;
            let z = if p > 0.5 {
                -norm_ppf_from_log((-p).ln_1p())
            } else {
                norm_ppf_from_log(p.ln())
            };
            z + shift
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("rounds and calls are whole numbers"))
        .collect();
    let rounds = args.first().copied().unwrap_or(7);
    let calls = args.get(1).copied().unwrap_or(200);

    // epsilon(1e-5, noise_multiplier=1.1, sampling_rate=0.01, steps=1000, accountant="rdp")
    let epsilon_rdp = time_us(rounds, calls, || {
        let mut acc = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&dp_sgd_event(0.01, 1.1, 1000)).unwrap();
        black_box(acc.epsilon_and_order(1e-5, Conversion::Improved).unwrap());
    });

    // The same with orders=[8.0]: a call cheap enough for the boundary's cost to show.
    let epsilon_rdp_one_order = time_us(rounds, calls, || {
        let mut acc =
            RdpAccountant::with_orders(NeighboringRelation::AddOrRemoveOne, &[8.0]).unwrap();
        acc.compose(&dp_sgd_event(0.01, 1.1, 1000)).unwrap();
        black_box(acc.epsilon_and_order(1e-5, Conversion::Improved).unwrap());
    });

    // lower_bounds(normals(1000, 1), normals(1000, 0), method="clopper-pearson")
    let (ins, outs) = (normals(1000, 1.0), normals(1000, 0.0));
    let config = LowerBoundConfig {
        method: MethodChoice::One(LowerBoundMethod::ClopperPearson),
        ..LowerBoundConfig::default()
    };
    let lower_bound_cp = time_us(rounds, calls, || {
        let s = CanaryScores::new(&ins, &outs, config.direction).unwrap();
        black_box(lower_bounds(&s, &config).unwrap());
    });

    // The same on 20 + 20 scores.
    let (small_in, small_out) = (normals(20, 1.0), normals(20, 0.0));
    let lower_bound_cp_small = time_us(rounds, calls, || {
        let s = CanaryScores::new(&small_in, &small_out, config.direction).unwrap();
        black_box(lower_bounds(&s, &config).unwrap());
    });

    // interpolation_exposure(normals(10, -3), normals(1000, 0))
    let secrets = normals(10, -3.0);
    let interpolation = time_us(rounds, calls, || {
        black_box(interpolation_exposures(&secrets, &outs).unwrap());
    });

    println!(
        "{}",
        serde_json::json!({
            "rounds": rounds,
            "calls": calls,
            "epsilon_rdp_us": epsilon_rdp,
            "epsilon_rdp_one_order_us": epsilon_rdp_one_order,
            "lower_bound_clopper_pearson_us": lower_bound_cp,
            "lower_bound_clopper_pearson_20_us": lower_bound_cp_small,
            "interpolation_exposure_us": interpolation,
        })
    );
}
