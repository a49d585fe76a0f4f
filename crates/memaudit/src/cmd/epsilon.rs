//! `memaudit epsilon`: epsilon of DP-SGD (Poisson-sampled Gaussian) for given sampling, noise and
//! steps, with the RDP and/or PLD accountant; or of a heterogeneous composition, given segment by
//! segment (`--segment q,sigma,steps`, repeatable) or as a run's privacy ledger (`--ledger FILE`),
//! so anyone can check a resumed run's epsilon by hand.

use memaudit_accounting::rdp::{Conversion, RdpAccountant};
use memaudit_accounting::{
    AccountingError, DpEvent, NeighboringRelation, PldAccountant, PrivacyAccountant, dp_sgd_event,
};
use memaudit_engine::PrivacyLedger;
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

/// `memaudit train`'s count for the same flags: E x ceil(N/B) Poisson steps (whole epochs of
/// ceil(N/B) batches), where TF Privacy's bookkeeping counts ceil(E N / B). None unless the
/// dataset flags were given with a whole number of epochs.
fn train_steps(s: &SamplingArgs) -> Option<u64> {
    let (n, b, e) = (s.dataset_size?, s.batch_size?, s.epochs?);
    (e.fract() == 0.0 && b > 0).then(|| e as u64 * n.div_ceil(b))
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
    #[arg(
        long,
        value_name = "S",
        allow_negative_numbers = true,
        required_unless_present_any = ["segment", "ledger"]
    )]
    pub noise_multiplier: Option<f64>,
    /// One segment of a heterogeneous run, "q,sigma,steps" (Poisson rate, noise multiplier, steps;
    /// q = 1 for unsampled Gaussian steps, e.g. one per epoch of shuffled batches). Repeat it;
    /// the segments are composed. Replaces the sampling flags and --noise-multiplier.
    #[arg(long, value_name = "Q,SIGMA,STEPS", conflicts_with_all = ["noise_multiplier", "ledger", "sampling_rate", "steps", "dataset_size", "batch_size", "epochs"])]
    pub segment: Vec<String>,
    /// A run's privacy ledger: a JSON file holding it (a checkpoint's state.json, a run.json, or
    /// the ledger alone, as `train --json` prints under privacy_statement.ledger).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["noise_multiplier", "sampling_rate", "steps", "dataset_size", "batch_size", "epochs"])]
    pub ledger: Option<std::path::PathBuf>,
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

/// Parse one `--segment q,sigma,steps`.
fn parse_segment(spec: &str) -> anyhow::Result<(f64, f64, u64)> {
    let bad = |why: &str| {
        user(format!(
            "--segment {spec}: {why}; write q,sigma,steps, e.g. 0.01,1.1,1000"
        ))
    };
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    let [q, sigma, steps] = parts[..] else {
        return Err(bad("three comma-separated numbers expected"));
    };
    let q: f64 = q.parse().map_err(|_| bad("q is not a number"))?;
    let sigma: f64 = sigma.parse().map_err(|_| bad("sigma is not a number"))?;
    let steps: u64 = steps
        .parse()
        .map_err(|_| bad("steps is not a whole number"))?;
    if !(q > 0.0 && q <= 1.0) {
        return Err(bad("q must be in (0, 1]"));
    }
    if !(sigma >= 0.0 && sigma.is_finite()) {
        return Err(bad("sigma must be a finite number >= 0"));
    }
    Ok((q, sigma, steps))
}

/// The ledger inside a JSON file: the ledger itself, a checkpoint sidecar or a run.json.
fn read_ledger(path: &std::path::Path) -> anyhow::Result<PrivacyLedger> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| user(format!("--ledger {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| user(format!("--ledger {}: not JSON: {e}", path.display())))?;
    PrivacyLedger::find_in_json(&v)
        .ok_or_else(|| {
            user(format!(
                "--ledger {}: no privacy ledger (an object with \"segments\") in this file",
                path.display()
            ))
        })?
        .map_err(|e| user(format!("--ledger {}: {e}", path.display())))
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    check_orders(&args.orders)?;
    let delta = args.sampling.delta;
    if !(delta > 0.0 && delta < 1.0) {
        return Err(user(format!("--delta must be in (0, 1), got {delta}")));
    }
    let mut results: Vec<Value> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    // The event: one homogeneous DP-SGD run, explicit segments, or a run's ledger.
    let (event, mut text, mut json) = if let Some(path) = &args.ledger {
        let ledger = read_ledger(path)?;
        let mut text = format!(
            "privacy ledger {} ({} segments, {} private steps), delta = {delta:e}\n",
            path.display(),
            ledger.segments.len(),
            ledger.total_steps()
        );
        for (k, s) in ledger.segments.iter().enumerate() {
            text += &format!(
                "  segment {}: {:?} sampling, q = {}, noise multiplier {}, {} steps\n",
                k + 1,
                s.sampling,
                fmt_f64(s.sampling_rate()),
                fmt_f64(s.noise_multiplier),
                s.steps
            );
        }
        let json = json!({ "ledger": ledger, "delta": num(delta) });
        (ledger.event(), text, json)
    } else if !args.segment.is_empty() {
        let segs = args
            .segment
            .iter()
            .map(|s| parse_segment(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut text = format!(
            "DP-SGD in {} segments, composed, delta = {delta:e}\n",
            segs.len()
        );
        for (k, (q, sigma, steps)) in segs.iter().enumerate() {
            text += &format!(
                "  segment {}: q = {}, noise multiplier {}, {steps} steps\n",
                k + 1,
                fmt_f64(*q),
                crate::output::fmt_given(*sigma)
            );
        }
        let json = json!({
            "segments": segs.iter().map(|(q, s, t)| json!({"sampling_rate": num(*q), "noise_multiplier": num(*s), "steps": t})).collect::<Vec<_>>(),
            "delta": num(delta),
        });
        let event = DpEvent::Composed(
            segs.iter()
                .map(|&(q, sigma, steps)| dp_sgd_event(q, sigma, steps))
                .collect(),
        );
        (event, text, json)
    } else {
        let (q, steps) = args.sampling.resolve()?;
        let sigma = args.noise_multiplier.unwrap_or_default();
        check_noise(sigma)?;
        let mut text = format!(
            "DP-SGD: sampling rate q = {}, noise multiplier {}, {steps} steps, delta = {delta:e}\n",
            fmt_f64(q),
            crate::output::fmt_given(sigma)
        );
        let mut json = json!({
            "sampling_rate": num(q),
            "steps": steps,
            "noise_multiplier": num(sigma),
            "delta": num(delta),
        });
        if args.sampling.dataset_size.is_some() {
            // Say what the step count is, and what `train` would run with these flags.
            text += &format!(
                "steps counted as ceil(epochs x N / B) = {steps} (TF Privacy's bookkeeping)"
            );
            json["steps_counted_as"] = json!("ceil(epochs*N/B)");
            if let Some(ts) = train_steps(&args.sampling).filter(|&t| t != steps) {
                let mut acc = RdpAccountant::new(NeighboringRelation::AddOrRemoveOne);
                acc.compose(&dp_sgd_event(q, sigma, ts))
                    .map_err(|e| user(e.to_string()))?;
                let e = acc
                    .epsilon_and_order(delta, args.conversion.conversion())
                    .map_err(|e| user(e.to_string()))?;
                text += &format!(
                    "; `memaudit train` runs epochs x ceil(N/B) = {ts} steps with these flags: rdp epsilon {} there",
                    fmt_f64(e.epsilon)
                );
                json["train_steps"] = json!(ts);
                json["train_steps_epsilon_rdp"] = num(e.epsilon);
            }
            text += "\n";
        }
        (dp_sgd_event(q, sigma, steps), text, json)
    };
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
    json["results"] = json!(results);
    json["conversion"] = json!(args.conversion.name());
    json["warnings"] = json!(warnings);
    Ok(Report::new(text, json))
}
