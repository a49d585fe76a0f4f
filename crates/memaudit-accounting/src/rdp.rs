//! Rényi-DP accountant (Mironov 2017) for the subsampled Gaussian mechanism.
//!
//! - Poisson-subsampled Gaussian, add-or-remove-one: Mironov, Talwar, Zhang, "Rényi
//!   Differential Privacy of the Sampled Gaussian Mechanism" (arXiv 1908.10530), Sec. 3.3.
//!   Integer orders: A_α = Σ_k C(α,k) (1-q)^(α-k) q^k exp((k²-k)/(2σ²)). Fractional orders: the
//!   two-sided series with erfc tails (z0 = σ² ln(1/q - 1) + 1/2). RDP(α) = ln(A_α)/(α-1).
//!   Everything in log space. The fractional series comes in dp_accounting's "abs" form (log
//!   |C(α,k)|, always added: slightly conservative; the default, so results agree with
//!   dp_accounting 0.6 / TF Privacy) and in the "signed" form of Opacus and TF Privacy <= 2022.
//! - Gaussian sampled without replacement, replace-one: Wang, Balle, Kasiviswanathan,
//!   "Subsampled Rényi Differential Privacy and Analytical Moments Accountant" (AISTATS 2019,
//!   arXiv 1808.00087) Theorem 27 as dp_accounting evaluates it (forward differences in log space
//!   up to order 256, the simpler bound above; fractional orders by linear interpolation of the
//!   cumulant generating function, their Corollary 10).
//! - RDP -> (ε, δ): classic (Mironov 2017 Prop. 3) and improved (Canonne, Kamath, Steinke 2020
//!   Prop. 12; Asoodeh et al. 2020; Balle et al. 2020 Thm. 21) with dp_accounting's guards: r < 0
//!   gives 0, the KL bound δ >= sqrt(1 - exp(-r)) gives 0, orders <= 1.01 give infinity.
//! - δ from ε: min over orders of min(sqrt(1 - e^-r), exp((α-1)(r - ε + ln(1 - 1/α)) - ln α)).

use std::f64::consts::{LN_2, SQRT_2};

use crate::PrivacyAccountant;
use crate::error::{AccountingError, Result, check_delta, check_epsilon, invalid};
use crate::event::{Atom, DpEvent, NeighboringRelation, flatten};
use crate::special::{ln_factorials, ln_gamma, ln_gamma_signed, log_add, log_erfc, log_sub};

/// Orders above this are refused (an integer order α costs α terms; at α = 1e6 the
/// (ε, δ) conversion term ln(1/δ)/(α-1) is below 1e-3 for every double δ).
pub const MAX_ORDER: f64 = 1e6;

/// dp_accounting's `DEFAULT_RDP_ORDERS` (also TF Privacy's `RdpAccountant()`):
/// [1 + x/10 for x in 1..99] + [11..63] + [128, 256, 512, 1024].
pub fn default_orders() -> Vec<f64> {
    let mut v: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    v.extend((11..64).map(|x| x as f64));
    v.extend([128.0, 256.0, 512.0, 1024.0]);
    v
}

/// Opacus's `RDPAccountant.DEFAULT_ALPHAS` and the orders of the TF Privacy tutorials up to
/// 2019: [1 + x/10 for x in 1..99] + [12..63].
pub fn opacus_orders() -> Vec<f64> {
    let mut v: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    v.extend((12..64).map(|x| x as f64));
    v
}

/// The orders of TF Privacy's deprecated `compute_dp_sgd_privacy()`:
/// [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5] + [5..63] + [128, 256, 512].
pub fn tf_compute_dp_sgd_privacy_orders() -> Vec<f64> {
    let mut v = vec![1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5];
    v.extend((5..64).map(|x| x as f64));
    v.extend([128.0, 256.0, 512.0]);
    v
}

/// Which form of the fractional-order series to sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FractionalSeries {
    /// log |C(α,k)|, always log-added (dp_accounting, current TF Privacy): a slight upper bound.
    #[default]
    Abs,
    /// The true signs of C(α,k) (Opacus, TF Privacy <= 2022): the exact value.
    Signed,
}

/// RDP -> (ε, δ) conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Conversion {
    /// Canonne-Kamath-Steinke 2020 Prop. 12 with dp_accounting's guards (the default).
    #[default]
    Improved,
    /// Mironov 2017 Prop. 3: ε = r + ln(1/δ)/(α-1). Used by TF Privacy before 2020-12-30 and by
    /// most published READMEs.
    Classic,
}

/// Orders at which to evaluate A_α with the series form: ln A at α = 1 is 0/0, so order 1 is
/// evaluated at 1 + ORDER_ONE_OFFSET, an upper bound since Rényi divergences do not decrease with
/// the order (van Erven & Harremoës 2014, Thm. 3).
const ORDER_ONE_OFFSET: f64 = 1e-4;

/// dp_accounting stops the "abs" fractional series after this many terms (the order is then
/// excluded: RDP = infinity).
const MAX_TERMS_FRAC_ABS: usize = 1000;
/// Safety cap for the "signed" series (Opacus has none).
const MAX_TERMS_FRAC_SIGNED: usize = 100_000;

/// RDP at `order` of one Poisson-subsampled Gaussian step (sampling rate q, noise multiplier
/// sigma), add-or-remove-one neighbours. Returns +infinity where no finite bound exists (sigma =
/// 0, order = infinity, a series that does not converge).
pub fn rdp_poisson_subsampled_gaussian(
    q: f64,
    sigma: f64,
    order: f64,
    series: FractionalSeries,
) -> f64 {
    if q == 0.0 || sigma == f64::INFINITY {
        return 0.0;
    }
    if order == f64::INFINITY || sigma == 0.0 || order > MAX_ORDER {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    let alpha = if order == 1.0 {
        1.0 + ORDER_ONE_OFFSET
    } else {
        order
    };
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64)
    } else {
        match series {
            FractionalSeries::Abs => log_a_fractional_abs(q, sigma, alpha),
            FractionalSeries::Signed => log_a_fractional_signed(q, sigma, alpha),
        }
    };
    (log_a / (alpha - 1.0)).max(0.0)
}

/// ln A_α for integer α >= 2 (streaming log-sum-exp of the binomial expansion).
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let lf = ln_factorials();
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let two_s2 = 2.0 * sigma * sigma;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for k in 0..=alpha {
        let kf = k as f64;
        let t = lf.ln_binom(alpha, k)
            + kf * ln_q
            + (alpha - k) as f64 * ln_1mq
            + (kf * kf - kf) / two_s2;
        if t > max {
            sum = sum * (max - t).exp() + 1.0;
            max = t;
        } else {
            sum += (t - max).exp();
        }
    }
    max + sum.ln()
}

/// The two terms (log s0, log s1) of the fractional series at index i, and the sign of C(α,i).
#[inline]
fn frac_terms(i: usize, alpha: f64, ctx: &FracCtx) -> (f64, f64, f64) {
    let fi = i as f64;
    let j = alpha - fi;
    let (lg_j, sign) = ln_gamma_signed(j + 1.0);
    let log_coef = ctx.lg_alpha - ln_factorials().get(i as u64) - lg_j;
    let log_t0 = log_coef + fi * ctx.ln_q + j * ctx.ln_1mq;
    let log_t1 = log_coef + j * ctx.ln_q + fi * ctx.ln_1mq;
    let log_e0 = 0.5f64.ln() + log_erfc((fi - ctx.z0) / ctx.sqrt2_sigma);
    let log_e1 = 0.5f64.ln() + log_erfc((ctx.z0 - j) / ctx.sqrt2_sigma);
    let log_s0 = log_t0 + (fi * fi - fi) / ctx.two_s2 + log_e0;
    let log_s1 = log_t1 + (j * j - j) / ctx.two_s2 + log_e1;
    (log_s0, log_s1, sign)
}

struct FracCtx {
    lg_alpha: f64,
    ln_q: f64,
    ln_1mq: f64,
    z0: f64,
    sqrt2_sigma: f64,
    two_s2: f64,
}

impl FracCtx {
    fn new(q: f64, sigma: f64, alpha: f64) -> Self {
        FracCtx {
            lg_alpha: ln_gamma(alpha + 1.0),
            ln_q: q.ln(),
            ln_1mq: (-q).ln_1p(),
            z0: sigma * sigma * (1.0 / q - 1.0).ln() + 0.5,
            sqrt2_sigma: SQRT_2 * sigma,
            two_s2: 2.0 * sigma * sigma,
        }
    }
}

/// ln A_α for fractional α, dp_accounting's "abs" series and stopping rule (both terms
/// decreasing and below total - 30; at most 1000 terms, else infinity).
fn log_a_fractional_abs(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ctx = FracCtx::new(q, sigma, alpha);
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_TERMS_FRAC_ABS {
        let (s0, s1, _) = frac_terms(i, alpha, &ctx);
        a0 = log_add(a0, s0);
        a1 = log_add(a1, s1);
        let total = log_add(a0, a1);
        if s0 < last0 && s1 < last1 && s0.max(s1) < total - 30.0 {
            return total;
        }
        last0 = s0;
        last1 = s1;
    }
    f64::INFINITY
}

/// ln A_α for fractional α with the true signs of C(α,k) (Opacus / TF Privacy <= 2022: stop
/// once both terms are below e^-30). A negative partial sum (never seen in practice) gives
/// infinity, excluding the order.
fn log_a_fractional_signed(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ctx = FracCtx::new(q, sigma, alpha);
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_TERMS_FRAC_SIGNED {
        let (s0, s1, sign) = frac_terms(i, alpha, &ctx);
        if sign > 0.0 {
            a0 = log_add(a0, s0);
            a1 = log_add(a1, s1);
        } else {
            a0 = log_sub(a0, s0);
            a1 = log_sub(a1, s1);
            if a0.is_nan() || a1.is_nan() {
                return f64::INFINITY;
            }
        }
        if s0.max(s1) < -30.0 {
            return log_add(a0, a1);
        }
    }
    f64::INFINITY
}

/// RDP at `order` of one Gaussian step on a sample of m = q n records drawn without replacement,
/// replace-one neighbours (Wang, Balle, Kasiviswanathan 2019, Thm. 27, as dp_accounting).
pub fn rdp_sampled_without_replacement_gaussian(q: f64, sigma: f64, order: f64) -> f64 {
    if q == 0.0 || sigma == f64::INFINITY {
        return 0.0;
    }
    if sigma == 0.0 || order == f64::INFINITY || order > MAX_ORDER {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    let alpha = if order == 1.0 {
        1.0 + ORDER_ONE_OFFSET
    } else {
        order
    };
    if alpha.fract() == 0.0 {
        log_a_wor_integer(q, sigma, alpha as u64) / (alpha - 1.0)
    } else {
        // Corollary 10 of WBK19: the CGF (α-1) RDP(α) is convex, interpolate linearly.
        let (f, c) = (alpha.floor(), alpha.ceil());
        let x = log_a_wor_integer(q, sigma, f as u64);
        let y = log_a_wor_integer(q, sigma, c as u64);
        let t = alpha - f;
        ((1.0 - t) * x + t * y) / (alpha - 1.0)
    }
}

/// A signed number held as (sign, log |value|).
#[derive(Clone, Copy)]
struct SignedLog {
    positive: bool,
    log_abs: f64,
}

/// `b - a` for signed log numbers.
fn signed_log_diff(b: SignedLog, a: SignedLog) -> SignedLog {
    if a.positive == b.positive {
        // Same sign: |b| - |a| carries the sign of b when |b| > |a|.
        let (pos, mag) = if b.log_abs > a.log_abs {
            (true, b.log_abs + (-(a.log_abs - b.log_abs).exp()).ln_1p())
        } else if b.log_abs < a.log_abs {
            (false, a.log_abs + (-(b.log_abs - a.log_abs).exp()).ln_1p())
        } else {
            (true, f64::NEG_INFINITY)
        };
        SignedLog {
            positive: if b.positive { pos } else { !pos },
            log_abs: mag,
        }
    } else {
        SignedLog {
            positive: b.positive,
            log_abs: log_add(a.log_abs, b.log_abs),
        }
    }
}

/// log |Δ^(i+1) f(0)| for i in 0..n+2, where f(k) = exp(cgf(k - 1)) (WBK19 Thm. 27 needs the
/// forward differences of exp(cgf)); computed by repeated signed differencing in log space.
fn log_forward_differences(cgf: impl Fn(f64) -> f64, n: usize) -> Vec<f64> {
    let mut v: Vec<SignedLog> = (0..n + 3)
        .map(|i| SignedLog {
            positive: true,
            log_abs: cgf(i as f64 - 1.0),
        })
        .collect();
    let mut out = Vec::with_capacity(n + 2);
    for i in 0..n + 2 {
        let m = n + 2 - i;
        for j in 0..m {
            v[j] = signed_log_diff(v[j + 1], v[j]);
        }
        out.push(v[0].log_abs);
    }
    out
}

/// ln A_α bound of WBK19 Thm. 27 for integer α (exact differences up to α = 256, the cruder
/// bound beyond, as dp_accounting).
fn log_a_wor_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    const MAX_EXACT_ALPHA: u64 = 256;
    if alpha <= 1 {
        return 0.0;
    }
    let lf = ln_factorials();
    let two_s2 = 2.0 * sigma * sigma;
    let cgf = |x: f64| x * (x + 1.0) / two_s2;
    let rdp_gauss = |x: f64| x / two_s2;
    let ln_q = q.ln();
    let ln4 = 4f64.ln();
    let log_f2m1 = rdp_gauss(2.0) + (-(-rdp_gauss(2.0)).exp()).ln_1p();
    let first = 2.0 * ln_q + lf.ln_binom(alpha, 2) + (ln4 + log_f2m1).min(rdp_gauss(2.0) + LN_2);
    let mut log_a = log_add(0.0, first);
    if alpha <= MAX_EXACT_ALPHA {
        let deltas = log_forward_differences(cgf, alpha as usize);
        for i in 3..=alpha {
            let lo = deltas[(2 * (i / 2) - 1) as usize];
            let hi = deltas[(2 * i.div_ceil(2) - 1) as usize];
            let s = (ln4 + 0.5 * (lo + hi)).min(LN_2 + cgf((i - 1) as f64));
            log_a = log_add(log_a, s + i as f64 * ln_q + lf.ln_binom(alpha, i));
        }
    } else {
        for i in 3..=alpha {
            let s = LN_2 + cgf((i - 1) as f64) + i as f64 * ln_q + lf.ln_binom(alpha, i);
            log_a = log_add(log_a, s);
        }
    }
    log_a
}

/// An epsilon with the order that attains it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RdpEpsilon {
    /// The (ε, δ)-DP epsilon (may be +infinity).
    pub epsilon: f64,
    /// The optimal order (the first minimiser on the grid).
    pub order: f64,
    /// The optimum is the smallest or largest order of a grid with several orders: a wider grid
    /// may give a smaller epsilon.
    pub at_grid_edge: bool,
    /// Epsilon is infinite because every order of the grid is at most 1.01: the conversion to
    /// (ε, δ) divides by α − 1 (order 1 is the KL divergence, which bounds no ε for δ > 0).
    pub orders_too_low: bool,
}

impl RdpEpsilon {
    /// A warning for people when the grid, not the mechanism, decided the answer.
    pub fn warning(&self) -> Option<String> {
        if self.orders_too_low {
            return Some(format!(
                "epsilon is infinite because no RDP order is above 1.01 (largest {}): converting RDP at order a to (epsilon, delta) divides by a - 1, and order 1 (the KL divergence) bounds no epsilon for delta > 0; add larger orders, e.g. 2,4,8,16,32,64",
                self.order
            ));
        }
        self.at_grid_edge.then(|| {
            format!(
                "the optimal RDP order {} is at the edge of the order grid; a wider grid may give a smaller epsilon",
                self.order
            )
        })
    }
}

/// A delta with the order that attains it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RdpDelta {
    /// The (ε, δ)-DP delta.
    pub delta: f64,
    /// The optimal order.
    pub order: f64,
    /// See [`RdpEpsilon::at_grid_edge`].
    pub at_grid_edge: bool,
}

fn check_orders_and_rdp(orders: &[f64], rdp: &[f64]) -> Result<()> {
    if orders.is_empty() {
        return Err(invalid(
            "orders",
            f64::NAN,
            "must contain at least one order",
        ));
    }
    if orders.len() != rdp.len() {
        return Err(invalid(
            "rdp",
            rdp.len() as f64,
            format!("must have one value per order ({})", orders.len()),
        ));
    }
    for (i, a) in orders.iter().enumerate() {
        if !(*a >= 1.0 && *a <= MAX_ORDER) {
            return Err(invalid(
                format!("orders[{i}]"),
                *a,
                format!("each order must be in [1, {MAX_ORDER}]"),
            ));
        }
    }
    for (i, r) in rdp.iter().enumerate() {
        if r.is_nan() {
            return Err(invalid(format!("rdp[{i}]"), *r, "must not be NaN"));
        }
    }
    Ok(())
}

fn first_argmin(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v < values[best] {
            best = i;
        }
    }
    best
}

/// Converts RDP values to (ε, δ)-DP: ε = min over orders (see the module docs for both rules).
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<RdpEpsilon> {
    check_orders_and_rdp(orders, rdp)?;
    check_delta(delta)?;
    let ln_delta = delta.ln();
    let eps: Vec<f64> = orders
        .iter()
        .zip(rdp)
        .map(|(&a, &r)| match conversion {
            Conversion::Classic => {
                if a == 1.0 {
                    f64::INFINITY
                } else {
                    r - ln_delta / (a - 1.0)
                }
            }
            Conversion::Improved => {
                if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                    0.0
                } else if a > 1.01 {
                    r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
                } else {
                    f64::INFINITY
                }
            }
        })
        .collect();
    let i = first_argmin(&eps);
    let epsilon = eps[i].max(0.0);
    let at_grid_edge = orders.len() > 1
        && (i == 0 || i == orders.len() - 1)
        && epsilon > 0.0
        && epsilon.is_finite();
    let orders_too_low = epsilon.is_infinite() && orders.iter().all(|&a| a <= 1.01);
    Ok(RdpEpsilon {
        epsilon,
        order: if orders_too_low {
            orders.iter().copied().fold(1.0, f64::max)
        } else {
            orders[i]
        },
        at_grid_edge,
        orders_too_low,
    })
}

/// Converts RDP values to the smallest δ for a given ε (dp_accounting `compute_delta`).
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<RdpDelta> {
    check_orders_and_rdp(orders, rdp)?;
    check_epsilon(epsilon)?;
    let log_deltas: Vec<f64> = orders
        .iter()
        .zip(rdp)
        .map(|(&a, &r)| {
            let mut ld = if r <= 0.0 {
                f64::NEG_INFINITY
            } else {
                0.5 * (-(-r).exp()).ln_1p()
            };
            if a > 1.01 {
                let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
                if !bound.is_nan() {
                    ld = ld.min(bound);
                }
            }
            ld
        })
        .collect();
    let i = first_argmin(&log_deltas);
    let delta = log_deltas[i].exp().min(1.0);
    let at_grid_edge =
        orders.len() > 1 && (i == 0 || i == orders.len() - 1) && delta > 0.0 && delta < 1.0;
    Ok(RdpDelta {
        delta,
        order: orders[i],
        at_grid_edge,
    })
}

/// The RDP accountant: per-order RDP values, composed by addition.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    relation: NeighboringRelation,
    orders: Vec<f64>,
    rdp: Vec<f64>,
    series: FractionalSeries,
}

impl RdpAccountant {
    /// An accountant with dp_accounting's default orders and the "abs" series.
    pub fn new(relation: NeighboringRelation) -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self {
            relation,
            orders,
            rdp,
            series: FractionalSeries::Abs,
        }
    }

    /// An accountant with custom orders (each in [1, 1e6]; order 1 is evaluated as 1.0001, an
    /// upper bound).
    pub fn with_orders(relation: NeighboringRelation, orders: &[f64]) -> Result<Self> {
        let rdp = vec![0.0; orders.len()];
        check_orders_and_rdp(orders, &rdp)?;
        Ok(Self {
            relation,
            orders: orders.to_vec(),
            rdp,
            series: FractionalSeries::Abs,
        })
    }

    /// Chooses the fractional-order series (before composing).
    pub fn with_series(mut self, series: FractionalSeries) -> Self {
        self.series = series;
        self
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP value at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    fn atoms(&self, event: &DpEvent) -> Result<Vec<(Atom, u64)>> {
        let atoms = flatten(event, "RDP", self.relation)?;
        for (atom, _) in &atoms {
            let unsupported = |reason: &str| AccountingError::Unsupported {
                accountant: "RDP",
                event: event.describe(),
                relation: self.relation,
                reason: reason.to_string(),
            };
            match (atom, self.relation) {
                (Atom::PoissonGaussian { .. }, NeighboringRelation::ReplaceOne) => {
                    return Err(unsupported(
                        "Poisson sampling is accounted under add-or-remove-one; use SampledWithoutReplacement for replace-one",
                    ));
                }
                (Atom::WorGaussian { .. }, NeighboringRelation::AddOrRemoveOne) => {
                    return Err(unsupported(
                        "sampling without replacement is accounted under replace-one; use PoissonSampled for add-or-remove-one",
                    ));
                }
                _ => {}
            }
        }
        Ok(atoms)
    }

    /// Epsilon and optimal order for `delta` with the chosen conversion.
    pub fn epsilon_and_order(&self, delta: f64, conversion: Conversion) -> Result<RdpEpsilon> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta, conversion)
    }

    /// Delta and optimal order for `epsilon`.
    pub fn delta_and_order(&self, epsilon: f64) -> Result<RdpDelta> {
        delta_from_rdp(&self.orders, &self.rdp, epsilon)
    }
}

impl PrivacyAccountant for RdpAccountant {
    fn neighboring_relation(&self) -> NeighboringRelation {
        self.relation
    }

    fn check(&self, event: &DpEvent) -> Result<()> {
        self.atoms(event).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent) -> Result<()> {
        let atoms = self.atoms(event)?;
        for (atom, count) in atoms {
            let c = count as f64;
            for (a, r) in self.orders.iter().zip(self.rdp.iter_mut()) {
                let v = match atom {
                    Atom::NonPrivate => f64::INFINITY,
                    Atom::Gaussian { sigma } => a / (2.0 * sigma * sigma),
                    Atom::PoissonGaussian { q, sigma } => {
                        rdp_poisson_subsampled_gaussian(q, sigma, *a, self.series)
                    }
                    Atom::WorGaussian { n, m, sigma } => {
                        rdp_sampled_without_replacement_gaussian(m as f64 / n as f64, sigma, *a)
                    }
                };
                *r += c * v;
            }
        }
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.epsilon_and_order(delta, Conversion::Improved)?.epsilon)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        Ok(self.delta_and_order(epsilon)?.delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_are_dp_accountings() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(o[98], 10.9);
        assert_eq!(o[99], 11.0);
        assert_eq!(*o.last().unwrap(), 1024.0);
        assert_eq!(opacus_orders().len(), 99 + 52);
        assert_eq!(tf_compute_dp_sgd_privacy_orders().len(), 10 + 59 + 3);
    }

    #[test]
    fn integer_and_fractional_series_agree_near_integers() {
        // The fractional series is continuous in the order; at 3 +- 1e-7 it must bracket the
        // integer sum (a check of both code paths against each other).
        let (q, s) = (0.01, 1.3);
        let at3 = rdp_poisson_subsampled_gaussian(q, s, 3.0, FractionalSeries::Signed);
        let below = rdp_poisson_subsampled_gaussian(q, s, 3.0 - 1e-7, FractionalSeries::Signed);
        let above = rdp_poisson_subsampled_gaussian(q, s, 3.0 + 1e-7, FractionalSeries::Signed);
        assert!(
            below <= at3 * (1.0 + 1e-6) && at3 <= above * (1.0 + 1e-6),
            "{below} {at3} {above}"
        );
        assert!(((above - at3) / at3).abs() < 1e-5);
    }

    #[test]
    fn brute_force_integer_order() {
        // A_2 = (1-q)^2 + 2q(1-q) + q^2 e^(1/σ²) exactly.
        let (q, s) = (0.3f64, 0.9f64);
        let a2 = (1.0 - q).powi(2) + 2.0 * q * (1.0 - q) + q * q * (1.0 / (s * s)).exp();
        let want = a2.ln();
        let got = rdp_poisson_subsampled_gaussian(q, s, 2.0, FractionalSeries::Abs);
        assert!(((got - want) / want).abs() < 1e-14, "{got} {want}");
    }

    #[test]
    fn signed_log_differences() {
        // The differenced sequence is f_k = exp(cgf(k - 1)), k = 0, 1, ...
        // A constant sequence has all differences 0, i.e. -inf in log space.
        let d = log_forward_differences(|_| 0.0, 3);
        assert!(d.iter().all(|x| *x == f64::NEG_INFINITY), "{d:?}");
        // cgf(x) = x: f_k = e^(k-1); compare with the differences computed directly, including
        // a negative one (cgf(x) = -x^2 makes the second difference negative).
        for cgf in [(|x: f64| x) as fn(f64) -> f64, |x: f64| -x * x] {
            let d = log_forward_differences(cgf, 2);
            let f: Vec<f64> = (0..5).map(|k| cgf(k as f64 - 1.0).exp()).collect();
            let d1 = f[1] - f[0];
            let d2 = f[2] - 2.0 * f[1] + f[0];
            let d3 = f[3] - 3.0 * f[2] + 3.0 * f[1] - f[0];
            assert!((d[0] - d1.abs().ln()).abs() < 1e-13);
            assert!((d[1] - d2.abs().ln()).abs() < 1e-13);
            assert!((d[2] - d3.abs().ln()).abs() < 1e-12);
        }
    }

    #[test]
    fn conversions_handle_edge_values() {
        let orders = [1.0, 1.005, 2.0, 32.0];
        let r = [0.0, 0.0, f64::INFINITY, f64::INFINITY];
        let e = epsilon_from_rdp(&orders, &r, 1e-5, Conversion::Improved).unwrap();
        assert_eq!(e.epsilon, 0.0);
        let e = epsilon_from_rdp(&orders, &[f64::INFINITY; 4], 1e-5, Conversion::Improved).unwrap();
        assert_eq!(e.epsilon, f64::INFINITY);
        assert!(!e.at_grid_edge);
        assert!(epsilon_from_rdp(&[0.5], &[1.0], 1e-5, Conversion::Classic).is_err());
        assert!(epsilon_from_rdp(&[2.0], &[1.0], 0.0, Conversion::Classic).is_err());
        let d = delta_from_rdp(&orders, &[f64::INFINITY; 4], 1.0).unwrap();
        assert_eq!(d.delta, 1.0);
    }
}
