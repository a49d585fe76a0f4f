//! `memaudit bench accounting`: time the RDP and PLD accountants on DP-SGD settings of 14k-100k
//! steps (one epsilon = a fresh accountant, compose, epsilon; median over repeats).
//! `scripts/bench_accounting_dp_accounting.py` runs dp_accounting on the same settings (read from
//! this command's `--json`) and prints the time ratios and the epsilon agreement.

use memaudit_engine::stats::median;
use std::time::Instant;

use memaudit_accounting::rdp::Conversion;
use memaudit_accounting::{
    NeighboringRelation, PldAccountant, PrivacyAccountant, RdpAccountant, dp_sgd_event,
};
use serde_json::json;

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

/// Target: one RDP epsilon in under this many milliseconds.
pub const RDP_TARGET_MS: f64 = 1.0;
/// Target: PLD at least this many times faster than dp_accounting (checked by the script).
pub const PLD_TARGET_SPEEDUP: f64 = 10.0;

/// A benchmark setting.
struct Setting {
    name: &'static str,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
}

/// DP-SGD settings at 14k-100k steps (the first is TF Privacy's MNIST tutorial, 60 epochs; the
/// next two are rows 6 and 7 of the reference vectors).
const SETTINGS: [Setting; 5] = [
    Setting {
        name: "mnist-b256-60ep",
        q: 256.0 / 60000.0,
        sigma: 1.1,
        steps: 14063,
        delta: 1e-5,
    },
    Setting {
        name: "vectors-row6",
        q: 0.00702592,
        sigma: 3.937,
        steps: 49640,
        delta: 1e-6,
    },
    Setting {
        name: "vectors-row7",
        q: 0.0233868,
        sigma: 3.924,
        steps: 57706,
        delta: 1e-5,
    },
    Setting {
        name: "q1e-3-100k",
        q: 0.001,
        sigma: 1.0,
        steps: 100_000,
        delta: 1e-7,
    },
    Setting {
        name: "q1e-2-30k",
        q: 0.01,
        sigma: 1.5,
        steps: 30_000,
        delta: 1e-6,
    },
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed repetitions per setting and accountant (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub repeats: usize,
    /// Only the first setting (a quick smoke run).
    #[arg(long)]
    pub quick: bool,
    /// Only the named setting (repeatable). The comparison script times one setting at a time, so
    /// that both libraries see the same machine load.
    #[arg(long, value_name = "NAME")]
    pub setting: Vec<String>,
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    if args.repeats == 0 {
        return Err(user("--repeats must be at least 1"));
    }
    for name in &args.setting {
        if !SETTINGS.iter().any(|s| s.name == name) {
            let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
            return Err(user(format!(
                "--setting {name}: unknown; the settings are {}",
                names.join(", ")
            )));
        }
    }
    let settings: Vec<&Setting> = SETTINGS
        .iter()
        .take(if args.quick { 1 } else { SETTINGS.len() })
        .filter(|s| args.setting.is_empty() || args.setting.iter().any(|n| n == s.name))
        .collect();
    let mut rows = Vec::new();
    let mut text = format!(
        "{:<18} {:>9} {:>6} {:>7} {:>7} | {:>12} {:>6} {:>9} | {:>12} {:>9}\n",
        "setting",
        "q",
        "sigma",
        "steps",
        "delta",
        "rdp eps",
        "order",
        "rdp ms",
        "pld eps",
        "pld ms"
    );
    let mut rdp_met = true;
    for s in settings {
        ctx.note(format!("bench accounting: {} ...", s.name));
        let event = dp_sgd_event(s.q, s.sigma, s.steps);
        let mut rdp_times = Vec::with_capacity(args.repeats);
        let mut rdp_result = None;
        for _ in 0..args.repeats {
            let t0 = Instant::now();
            let mut acc = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
            acc.compose(&event)?;
            let e = acc.epsilon_and_order(s.delta, Conversion::Improved)?;
            rdp_times.push(t0.elapsed().as_secs_f64() * 1e3);
            rdp_result = Some(e);
        }
        let mut pld_times = Vec::with_capacity(args.repeats);
        let mut pld_eps = f64::NAN;
        for _ in 0..args.repeats {
            let t0 = Instant::now();
            let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
            acc.compose(&event)?;
            pld_eps = acc.epsilon(s.delta)?;
            pld_times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let rdp = rdp_result.expect("repeats >= 1");
        let (rdp_med, pld_med) = (median(&rdp_times), median(&pld_times));
        rdp_met &= rdp_med < RDP_TARGET_MS;
        text += &format!(
            "{:<18} {:>9.6} {:>6} {:>7} {:>7.0e} | {:>12.6} {:>6} {:>9.3} | {:>12.6} {:>9.2}\n",
            s.name,
            s.q,
            s.sigma,
            s.steps,
            s.delta,
            rdp.epsilon,
            rdp.order,
            rdp_med,
            pld_eps,
            pld_med
        );
        rows.push(json!({
            "name": s.name,
            "q": num(s.q),
            "noise_multiplier": num(s.sigma),
            "steps": s.steps,
            "delta": num(s.delta),
            "rdp_epsilon": num(rdp.epsilon),
            "rdp_order": num(rdp.order),
            "rdp_ms_median": num(rdp_med),
            "rdp_ms_min": num(rdp_times.iter().cloned().fold(f64::INFINITY, f64::min)),
            "pld_epsilon": num(pld_eps),
            "pld_ms_median": num(pld_med),
            "pld_ms_min": num(pld_times.iter().cloned().fold(f64::INFINITY, f64::min)),
        }));
    }
    text += &format!(
        "RDP target (< {RDP_TARGET_MS} ms per epsilon): {}. PLD target: >= {PLD_TARGET_SPEEDUP}x faster than \
         dp_accounting; run scripts/bench_accounting_dp_accounting.py to measure it.\n",
        if rdp_met { "met" } else { "NOT met" }
    );
    let json = json!({
        "settings": rows,
        "repeats": args.repeats,
        "threads": rayon::current_num_threads(),
        "rdp_target_ms": RDP_TARGET_MS,
        "rdp_target_met": rdp_met,
        "pld_target_speedup": PLD_TARGET_SPEEDUP,
    });
    Ok(Report::new(text, json))
}
