//! `memaudit noise`: the smallest noise multiplier (to 1e-4 relative) whose epsilon is at most a
//! target, for the RDP and/or PLD accountant. The returned multiplier never overshoots.

use memaudit_accounting::{
    AccountantKind, AccountingError, PrivacyAccountant, calibrate, calibrate_noise, dp_sgd_event,
};
use serde_json::{Value, json};

use super::epsilon::{
    AccountantChoice, ConversionChoice, SamplingArgs, check_orders, rdp_accountant,
};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, fmt_f64_6, fmt_given, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Target epsilon (> 0).
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub target_epsilon: f64,
    /// Accountant(s) to calibrate with.
    #[arg(long, value_enum, default_value = "all")]
    pub accountant: AccountantChoice,
    /// RDP -> (epsilon, delta) conversion.
    #[arg(long, value_enum, default_value = "improved")]
    pub conversion: ConversionChoice,
    /// Custom RDP orders, comma-separated, each >= 1 (default: dp_accounting's 156 orders).
    #[arg(
        long,
        value_name = "A,B,...",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub orders: Option<Vec<f64>>,
}

fn calibration_error(e: AccountingError) -> anyhow::Error {
    match e {
        AccountingError::CalibrationFailed { .. } => user(format!("--target-epsilon: {e}")),
        other => user(other.to_string()),
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let (q, steps) = args.sampling.resolve()?;
    check_orders(&args.orders)?;
    let target = args.target_epsilon;
    if !(target > 0.0 && target.is_finite()) {
        return Err(user(format!(
            "--target-epsilon must be a finite number > 0, got {target}"
        )));
    }
    let delta = args.sampling.delta;
    let mut results: Vec<Value> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut text = format!(
        "Smallest noise multiplier with epsilon <= {} at delta = {delta:e} (q = {}, {steps} steps):\n",
        fmt_given(target),
        fmt_f64(q)
    );
    if args.accountant.rdp() {
        ctx.note("calibrating with the RDP accountant ...");
        let conversion = args.conversion.conversion();
        let c = calibrate(
            |sigma| {
                let mut acc = rdp_accountant(&args.orders)?;
                acc.compose(&dp_sgd_event(q, sigma, steps))?;
                Ok(acc.epsilon_and_order(delta, conversion)?.epsilon)
            },
            target,
        )
        .map_err(calibration_error)?;
        // Say when the order grid, not the mechanism, decided the answer.
        let mut acc = rdp_accountant(&args.orders).map_err(|e| user(e.to_string()))?;
        acc.compose(&dp_sgd_event(q, c.noise_multiplier, steps))
            .map_err(|e| user(e.to_string()))?;
        let at = acc
            .epsilon_and_order(delta, conversion)
            .map_err(|e| user(e.to_string()))?;
        if let Some(w) = at.warning() {
            warnings.push(w);
        } else if at.epsilon == 0.0 {
            warnings.push(
                "the RDP epsilon meets the target only through the KL bound (epsilon = 0): the order grid cannot \
                 resolve an epsilon this small; pass --orders with larger orders"
                    .to_string(),
            );
        }
        results.push(json!({
            "accountant": "rdp",
            "noise_multiplier": num(c.noise_multiplier),
            "epsilon": num(c.epsilon),
            "delta": num(delta),
        }));
        text += &format!(
            "rdp: noise multiplier {} (epsilon {}, {} conversion)\n",
            fmt_f64_6(c.noise_multiplier),
            fmt_f64(c.epsilon),
            args.conversion.name()
        );
    }
    if args.accountant.pld() {
        ctx.note("calibrating with the PLD accountant ...");
        let c = calibrate_noise(
            |sigma| dp_sgd_event(q, sigma, steps),
            delta,
            target,
            AccountantKind::Pld,
        )
        .map_err(calibration_error)?;
        results.push(json!({
            "accountant": "pld",
            "noise_multiplier": num(c.noise_multiplier),
            "epsilon": num(c.epsilon),
            "delta": num(delta),
        }));
        text += &format!(
            "pld: noise multiplier {} (epsilon {})\n",
            fmt_f64_6(c.noise_multiplier),
            fmt_f64(c.epsilon)
        );
    }
    for w in &warnings {
        ctx.note(format!("warning: {w}"));
    }
    let json = json!({
        "results": results,
        "warnings": warnings,
        "target_epsilon": num(target),
        "sampling_rate": num(q),
        "steps": steps,
        "delta": num(delta),
        "conversion": args.conversion.name(),
    });
    Ok(Report::new(text, json))
}
