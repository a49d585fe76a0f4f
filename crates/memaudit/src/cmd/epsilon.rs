//! `memaudit epsilon`: epsilon of DP-SGD (Poisson-sampled Gaussian) for given sampling, noise and
//! steps, with the RDP and/or PLD accountant.

use memaudit_accounting::rdp::{Conversion, RdpAccountant};
use memaudit_accounting::{
    AccountingError, NeighboringRelation, PldAccountant, PrivacyAccountant, dp_sgd_event,
};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, fmt_f64, num};

/// Which accountant(s) to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountantChoice {
    /// Rényi DP (dp_accounting's default orders).
    Rdp,
    /// Privacy loss distributions (dp_accounting's default discretisation).
    Pld,
    /// Both.
    All,
}

impl AccountantChoice {
    pub fn rdp(self) -> bool {
        matches!(self, AccountantChoice::Rdp | AccountantChoice::All)
    }
    pub fn pld(self) -> bool {
        matches!(self, AccountantChoice::Pld | AccountantChoice::All)
    }
}

/// RDP -> (epsilon, delta) conversion.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversionChoice {
    /// Canonne-Kamath-Steinke 2020 (dp_accounting's default).
    Improved,
    /// Mironov 2017 Prop. 3 (older TF Privacy READMEs).
    Classic,
}

impl ConversionChoice {
    pub fn conversion(self) -> Conversion {
        match self {
            ConversionChoice::Improved => Conversion::Improved,
            ConversionChoice::Classic => Conversion::Classic,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ConversionChoice::Improved => "improved",
            ConversionChoice::Classic => "classic",
        }
    }
}

/// How the run sampled its batches: Q and T directly, or N, B and epochs.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Poisson sampling rate q in (0, 1] (q = 1: every example in every step, no sampling).
    #[arg(long, value_name = "Q", allow_negative_numbers = true)]
    pub sampling_rate: Option<f64>,
    /// Number of steps T (with --sampling-rate).
    #[arg(long, value_name = "T")]
    pub steps: Option<u64>,
    /// Training examples N (with --batch-size and --epochs: q = B/N, T = ceil(E*N/B)).
    #[arg(long, value_name = "N")]
    pub dataset_size: Option<u64>,
    /// Examples per step B.
    #[arg(long, value_name = "B")]
    pub batch_size: Option<u64>,
    /// Passes over the data E (may be fractional).
    #[arg(long, value_name = "E", allow_negative_numbers = true)]
    pub epochs: Option<f64>,
    /// Target delta in (0, 1).
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub delta: f64,
}

impl SamplingArgs {
    /// (q, steps), checked, with messages naming the flags.
    pub fn resolve(&self) -> anyhow::Result<(f64, u64)> {
        let direct = self.sampling_rate.is_some() || self.steps.is_some();
        let derived =
            self.dataset_size.is_some() || self.batch_size.is_some() || self.epochs.is_some();
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(user(format!(
                "--delta must be in (0, 1), got {}",
                self.delta
            )));
        }
        match (direct, derived) {
            (true, true) => Err(user(
                "give either --sampling-rate and --steps, or --dataset-size, --batch-size and --epochs, not both",
            )),
            (false, false) => Err(user(
                "give --sampling-rate and --steps, or --dataset-size, --batch-size and --epochs",
            )),
            (true, false) => {
                let q = self
                    .sampling_rate
                    .ok_or_else(|| user("--steps needs --sampling-rate"))?;
                let steps = self
                    .steps
                    .ok_or_else(|| user("--sampling-rate needs --steps"))?;
                if !(q > 0.0 && q <= 1.0) {
                    return Err(user(format!("--sampling-rate must be in (0, 1], got {q}")));
                }
                if steps == 0 {
                    return Err(user("--steps must be at least 1"));
                }
                Ok((q, steps))
            }
            (false, true) => {
                let (Some(n), Some(b), Some(e)) = (self.dataset_size, self.batch_size, self.epochs)
                else {
                    return Err(user(
                        "--dataset-size, --batch-size and --epochs go together: give all three",
                    ));
                };
                if n == 0 {
                    return Err(user("--dataset-size must be at least 1"));
                }
                if b == 0 || b > n {
                    return Err(user(format!(
                        "--batch-size must be between 1 and --dataset-size ({n}), got {b}"
                    )));
                }
                if !(e > 0.0 && e.is_finite()) {
                    return Err(user(format!(
                        "--epochs must be a finite number > 0, got {e}"
                    )));
                }
                // TF Privacy's bookkeeping: q = B/N, T = ceil(E*N/B).
                let q = b as f64 / n as f64;
                let steps = (e * n as f64 / b as f64).ceil();
                if steps > u64::MAX as f64 / 2.0 {
                    return Err(user("--epochs is too large: the number of steps overflows"));
                }
                Ok((q, steps as u64))
            }
        }
    }
}

/// Checks --noise-multiplier.
pub fn check_noise(sigma: f64) -> anyhow::Result<()> {
    if sigma >= 0.0 && sigma.is_finite() {
        Ok(())
    } else {
        Err(user(format!(
            "--noise-multiplier must be a finite number >= 0, got {sigma}"
        )))
    }
}

/// Checks --orders.
pub fn check_orders(orders: &Option<Vec<f64>>) -> anyhow::Result<()> {
    if let Some(o) = orders {
        if o.is_empty() {
            return Err(user("--orders needs at least one order"));
        }
        for a in o {
            if !(*a >= 1.0 && *a <= memaudit_accounting::rdp::MAX_ORDER) {
                return Err(user(format!(
                    "--orders: each order must be in [1, {}], got {a}",
                    memaudit_accounting::rdp::MAX_ORDER
                )));
            }
        }
    }
    Ok(())
}

/// An RDP accountant with the chosen orders.
pub fn rdp_accountant(orders: &Option<Vec<f64>>) -> Result<RdpAccountant, AccountingError> {
    match orders {
        Some(o) => RdpAccountant::with_orders(NeighboringRelation::AddOrRemoveOne, o),
        None => Ok(RdpAccountant::new(NeighboringRelation::AddOrRemoveOne)),
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Noise multiplier sigma: noise standard deviation / clipping norm (0: no noise).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub noise_multiplier: f64,
    /// Accountant(s) to run.
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

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let (q, steps) = args.sampling.resolve()?;
    check_noise(args.noise_multiplier)?;
    check_orders(&args.orders)?;
    let delta = args.sampling.delta;
    let sigma = args.noise_multiplier;
    let event = dp_sgd_event(q, sigma, steps);
    let mut results: Vec<Value> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut text = format!(
        "DP-SGD: sampling rate q = {}, noise multiplier {}, {steps} steps, delta = {delta:e}\n",
        fmt_f64(q),
        crate::output::fmt_given(sigma)
    );
    if args.accountant.rdp() {
        let mut acc = rdp_accountant(&args.orders).map_err(|e| user(format!("--orders: {e}")))?;
        acc.compose(&event).map_err(|e| user(e.to_string()))?;
        let e = acc
            .epsilon_and_order(delta, args.conversion.conversion())
            .map_err(|e| user(e.to_string()))?;
        let order = e.epsilon.is_finite().then_some(e.order);
        if let Some(w) = e.warning() {
            ctx.note(format!("warning: {w}"));
            warnings.push(w);
        }
        results.push(json!({
            "accountant": "rdp",
            "epsilon": num(e.epsilon),
            "order": order.map_or(Value::Null, num),
            "delta": num(delta),
        }));
        text += &format!(
            "rdp: epsilon = {}{} ({} conversion)\n",
            fmt_f64(e.epsilon),
            order.map_or(String::new(), |o| format!(" at order {o}")),
            args.conversion.name()
        );
    }
    if args.accountant.pld() {
        let mut acc = PldAccountant::new(NeighboringRelation::AddOrRemoveOne);
        acc.compose(&event).map_err(|e| user(e.to_string()))?;
        match acc.epsilon(delta) {
            Ok(eps) => {
                results
                    .push(json!({"accountant": "pld", "epsilon": num(eps), "delta": num(delta)}));
                text += &format!("pld: epsilon = {}\n", fmt_f64(eps));
            }
            Err(e) if args.accountant == AccountantChoice::All => {
                // Keep the RDP answer; say why PLD has none.
                ctx.note(format!("warning: pld: {e}"));
                warnings.push(format!("pld: {e}"));
                results.push(json!({"accountant": "pld", "epsilon": Value::Null, "delta": num(delta), "error": e.to_string()}));
                text += &format!("pld: no result: {e}\n");
            }
            Err(e) => return Err(user(e.to_string())),
        }
    }
    let json = json!({
        "results": results,
        "sampling_rate": num(q),
        "steps": steps,
        "noise_multiplier": num(sigma),
        "delta": num(delta),
        "conversion": args.conversion.name(),
        "warnings": warnings,
    });
    Ok(Report::new(text, json))
}
