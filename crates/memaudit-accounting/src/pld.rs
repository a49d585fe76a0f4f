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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adjacency {
    Remove,
    Add,
}

/// Φ(z), one erfc evaluation.
#[inline]
fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// log Φ(z), accurate in both tails (only needed where Φ underflows).
fn log_phi(z: f64) -> f64 {
    crate::special::log_ndtr(z)
}

/// Below this, e^ε Φ is computed as exp(ε + log Φ) (Φ itself would lose digits or underflow).
const PHI_LINEAR_FLOOR: f64 = 1e-290;

fn log_add_exp(a: f64, b: f64) -> f64 {
    crate::special::log_add(a, b)
}

/// math.isclose(a, b) with Python's default rel_tol = 1e-9.
fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The privacy loss of the (subsampled) Gaussian mechanism with sensitivity 1
/// (dp_accounting `GaussianPrivacyLoss`), with the constants of its formulas precomputed.
struct GaussianLoss {
    sigma: f64,
    q: f64,
    adjacency: Adjacency,
    /// ln(1 - q) as Python's math.log(1 - q) (for the isclose tests) and as log1p(-q).
    ln_1mq: f64,
    log1p_mq: f64,
    ln_q: f64,
    /// For log(a e^b + c) with a = 1/q, c = 1 - 1/q: ln a, ln(-c), ln(a + c).
    ln_inv_q: f64,
    ln_inv_q_m1: f64,
    ln_a_plus_c: f64,
}

impl GaussianLoss {
    fn new(sigma: f64, q: f64, adjacency: Adjacency) -> Self {
        let a = 1.0 / q;
        let c = 1.0 - 1.0 / q;
        GaussianLoss {
            sigma,
            q,
            adjacency,
            ln_1mq: (1.0 - q).ln(),
            log1p_mq: (-q).ln_1p(),
            ln_q: q.ln(),
            ln_inv_q: a.ln(),
            ln_inv_q_m1: (-c).ln(),
            ln_a_plus_c: (a + c).ln(),
        }
    }

    fn loss_remove_unsampled(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }

    fn loss_remove(&self, x: f64) -> f64 {
        let l = self.loss_remove_unsampled(x);
        if self.q == 1.0 {
            l
        } else {
            log_a_times_exp_b_plus_c(self.q, l, 1.0 - self.q)
        }
    }

    fn loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove(x),
            Adjacency::Add => -self.loss_remove(-x),
        }
    }

    fn inverse_remove_unsampled(&self, loss: f64) -> f64 {
        -0.5 - loss * self.sigma * self.sigma
    }

    /// `log_a_times_exp_b_plus_c(1/q, b, 1 - 1/q)` = ln(e^b / q + 1 - 1/q), for b > ln(1-q).
    #[inline]
    fn unsampled_loss_of(&self, b: f64) -> f64 {
        if b == 0.0 {
            return self.ln_a_plus_c;
        }
        crate::special::log_sub(b + self.ln_inv_q, self.ln_inv_q_m1)
    }

    /// The largest x whose privacy loss is at least `loss`.
    fn inverse_loss(&self, loss: f64) -> f64 {
        let q = self.q;
        match self.adjacency {
            Adjacency::Remove => {
                if q == 1.0 {
                    return self.inverse_remove_unsampled(loss);
                }
                if is_close(loss, self.ln_1mq) {
                    return self.inverse_remove_unsampled(f64::NEG_INFINITY);
                }
                self.inverse_remove_unsampled(self.unsampled_loss_of(loss))
            }
            Adjacency::Add => {
                if q == 1.0 {
                    return 1.0 + self.inverse_remove_unsampled(loss);
                }
                if is_close(loss, -self.ln_1mq) {
                    return 1.0 + self.inverse_remove_unsampled(f64::INFINITY);
                }
                1.0 + self.inverse_remove_unsampled(-self.unsampled_loss_of(-loss))
            }
        }
    }

    /// The hockey-stick divergence δ(ε) of the continuous mechanism:
    /// P_upper(X <= x_ε) - e^ε P_lower(X <= x_ε), x_ε the inverse privacy loss.
    fn delta_for_epsilon(&self, eps: f64) -> f64 {
        let q = self.q;
        if q < 1.0 {
            match self.adjacency {
                Adjacency::Remove if eps <= self.log1p_mq => {
                    return (-(eps.exp_m1())).clamp(0.0, 1.0);
                }
                Adjacency::Add if eps >= -self.log1p_mq => return 0.0,
                _ => {}
            }
        }
        let x = self.inverse_loss(eps);
        let s = self.sigma;
        let delta = match self.adjacency {
            Adjacency::Remove => {
                // P_upper = (1-q) Φ(x/σ) + q Φ((x+1)/σ), P_lower = Φ(x/σ).
                let phi_x = phi(x / s);
                let upper = if q == 1.0 {
                    phi((x + 1.0) / s)
                } else {
                    (1.0 - q) * phi_x + q * phi((x + 1.0) / s)
                };
                let lower_term = if phi_x > PHI_LINEAR_FLOOR {
                    eps.exp() * phi_x
                } else {
                    (eps + log_phi(x / s)).exp()
                };
                upper - lower_term
            }
            Adjacency::Add => {
                // P_upper = Φ(x/σ), P_lower = (1-q) Φ(x/σ) + q Φ((x-1)/σ).
                let phi_x = phi(x / s);
                let phi_shift = phi((x - 1.0) / s);
                let lower = if q == 1.0 {
                    phi_shift
                } else {
                    (1.0 - q) * phi_x + q * phi_shift
                };
                let lower_term = if lower > PHI_LINEAR_FLOOR {
                    eps.exp() * lower
                } else {
                    let log_lower = if q == 1.0 {
                        log_phi((x - 1.0) / s)
                    } else {
                        log_add_exp(
                            self.log1p_mq + log_phi(x / s),
                            self.ln_q + log_phi((x - 1.0) / s),
                        )
                    };
                    (eps + log_lower).exp()
                };
                phi_x - lower_term
            }
        };
        if delta.is_nan() {
            1.0
        } else {
            delta.clamp(0.0, 1.0)
        }
    }
}

/// A privacy-loss PMF on the grid (lower + k) Δ, with mass at +infinity.
#[derive(Clone, Debug)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
    /// dp_accounting keeps PMFs of <= 1000 points as dictionaries and composes them directly.
    sparse: bool,
}

const MAX_SPARSE_SIZE: usize = 1000;

impl Pmf {
    fn identity() -> Self {
        Pmf {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
            sparse: true,
        }
    }
}

fn too_large(points: u64, opts: &PldOptions) -> Result<()> {
    if points > opts.max_points {
        Err(AccountingError::PldTooLarge {
            points,
            limit: opts.max_points,
        })
    } else {
        Ok(())
    }
}

/// One step of the (subsampled) Gaussian as a pessimistic connect-the-dots PMF.
fn gaussian_pmf(sigma: f64, q: f64, adjacency: Adjacency, opts: &PldOptions) -> Result<Pmf> {
    let loss = GaussianLoss::new(sigma, q, adjacency);
    let d = opts.value_discretization_interval;
    let z = norm_ppf_from_log(0.5f64.ln() + opts.log_mass_truncation_bound);
    let mut lower_x = sigma * z;
    let mut upper_x = -lower_x;
    match adjacency {
        Adjacency::Add => upper_x += 1.0,
        Adjacency::Remove => lower_x -= 1.0,
    }
    let eps_upper = loss.loss(lower_x);
    let eps_lower = loss.loss(upper_x);
    let hi = (eps_upper / d).ceil();
    let lo = (eps_lower / d).floor();
    if !(hi.is_finite() && lo.is_finite()) || hi - lo + 1.0 > opts.max_points as f64 {
        let points = if (hi - lo).is_finite() {
            (hi - lo + 1.0) as u64
        } else {
            u64::MAX
        };
        return Err(AccountingError::PldTooLarge {
            points,
            limit: opts.max_points,
        });
    }
    let (lo, hi) = (lo as i64, hi as i64);
    let n = (hi - lo + 1) as usize;
    let eval = |k: usize| loss.delta_for_epsilon((lo + k as i64) as f64 * d);
    let mut deltas: Vec<f64> = if n > 4096 {
        (0..n).into_par_iter().map(eval).collect()
    } else {
        (0..n).map(eval).collect()
    };
    // Hockey-stick divergences are non-increasing in ε; remove rounding wiggles.
    for k in 1..n {
        if deltas[k] > deltas[k - 1] {
            deltas[k] = deltas[k - 1];
        }
    }
    let infinity_mass = deltas[n - 1];
    let probs = if n == 1 {
        vec![1.0 - deltas[0]]
    } else {
        let em1 = d.exp_m1();
        let e = d.exp();
        let mut p = vec![0.0; n];
        p[0] = 1.0 - deltas[0] + (deltas[1] - deltas[0]) / em1;
        for i in 1..n - 1 {
            p[i] = ((deltas[i + 1] - deltas[i]) - (deltas[i] - deltas[i - 1]) * e) / em1;
        }
        p[n - 1] = (deltas[n - 1] - deltas[n - 2]) / (-d).exp_m1();
        for v in p.iter_mut() {
            *v = v.max(0.0);
        }
        p
    };
    Ok(Pmf {
        lower: lo,
        probs,
        infinity_mass,
        sparse: n <= MAX_SPARSE_SIZE,
    })
}

/// dp_accounting `_truncate_tails`, pessimistic: drop prefix and suffix of mass <= tmt/2 each;
/// the prefix mass moves up to the first kept point, the suffix mass goes to infinity.
fn truncate_tails(mut probs: Vec<f64>, tmt: f64) -> (usize, Vec<f64>, f64) {
    if tmt == 0.0 || probs.is_empty() {
        return (0, probs, 0.0);
    }
    let prefix = |it: &mut dyn Iterator<Item = &f64>| {
        let mut s = 0.0;
        let mut count = 0;
        for v in it {
            s += v;
            if s > tmt / 2.0 {
                return count;
            }
            count += 1;
        }
        count
    };
    let len = probs.len();
    let left = prefix(&mut probs.iter()).min(len - 1);
    let right = (len - prefix(&mut probs.iter().rev())).max(left + 1);
    let left_mass: f64 = probs[..left].iter().sum();
    let right_mass: f64 = probs[right..].iter().sum();
    probs.truncate(right);
    probs.drain(..left);
    probs[0] += left_mass;
    (left, probs, right_mass)
}

fn compose(a: &Pmf, b: Pmf, tmt: f64, opts: &PldOptions) -> Result<Pmf> {
    let sparse = a.sparse && b.sparse && a.probs.len() * b.probs.len() <= MAX_SPARSE_SIZE;
    too_large((a.probs.len() + b.probs.len()) as u64, opts)?;
    // Composing with the identity (the accountant's starting point) keeps b as it is.
    let mut conv = if a.probs.len() == 1 && a.probs[0] == 1.0 {
        b.probs
    } else {
        fft::convolve(&a.probs, &b.probs)
    };
    for v in conv.iter_mut() {
        *v = v.max(0.0);
    }
    let (offset, probs, right_mass) = truncate_tails(conv, tmt);
    Ok(Pmf {
        lower: a.lower + b.lower + offset as i64,
        probs,
        infinity_mass: a.infinity_mass + b.infinity_mass - a.infinity_mass * b.infinity_mass
            + right_mass,
        sparse,
    })
}

/// Window [lower, upper] of the count-fold self-convolution outside which at most `tmt` mass
/// lies (Chernoff bound at orders ±k/len, k = 1..20: dp_accounting `compute_self_convolve_bounds`).
fn chernoff_bounds(probs: &[f64], count: u64, tmt: f64) -> (i64, i64) {
    let len = probs.len();
    let mut upper = ((len - 1) as f64 * count as f64).min(i64::MAX as f64 / 4.0) as i64;
    let mut lower = 0i64;
    if tmt == 0.0 {
        return (lower, upper);
    }
    let log_term = (2.0 / tmt).ln();
    for k in (-20i32..=-1).chain(1..=20) {
        let order = k as f64 / len as f64;
        let mgf = moment_generating_sum(probs, order);
        let bound = (count as f64 * mgf.ln() + log_term) / order;
        if !bound.is_finite() {
            continue;
        }
        if order > 0.0 {
            upper = upper.min(bound.ceil().max(lower as f64) as i64);
        } else {
            lower = lower.max(bound.floor().min(upper as f64) as i64);
        }
    }
    (lower, upper.max(lower))
}

/// Σ_i p_i e^(i order) for |i order| <= 20 (no overflow). Four interleaved power chains keep the
/// multiplications independent (the running power's rounding error stays below 1e-11 relative).
fn moment_generating_sum(probs: &[f64], order: f64) -> f64 {
    let step = order.exp();
    let step4 = step.powi(4);
    let mut x = [1.0, step, step * step, step * step * step];
    let mut acc = [0.0f64; 4];
    let chunks = probs.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..4 {
            acc[l] += c[l] * x[l];
            x[l] *= step4;
        }
    }
    let mut sum = acc.iter().sum::<f64>();
    let mut xr = x[0];
    for p in rest {
        sum += p * xr;
        xr *= step;
    }
    sum
}

/// dp_accounting's `self_compose`: direct repeated composition for small sparse PMFs, else
/// FFT power over the Chernoff window (plus `tmt` at infinity).
fn self_compose(p: &Pmf, count: u64, tmt: f64, opts: &PldOptions) -> Result<Pmf> {
    if p.sparse {
        if count == 1 {
            return Ok(p.clone());
        }
        let size = (p.probs.len() as f64).powf(count as f64);
        if size <= MAX_SPARSE_SIZE as f64 {
            let mut result = p.clone();
            for i in 2..=count {
                let t = if i == count { tmt } else { 0.0 };
                result = compose(p, result, t, opts)?;
                result.sparse = true;
            }
            return Ok(result);
        }
    }
    let (lb, ub) = chernoff_bounds(&p.probs, count, tmt);
    let output_len = (ub - lb + 1) as u64;
    too_large(output_len.max(p.probs.len() as u64), opts)?;
    let mut probs = fft::self_convolve(&p.probs, count, lb as usize, output_len as usize);
    for v in probs.iter_mut() {
        *v = v.max(0.0);
    }
    let lower = p
        .lower
        .checked_mul(count as i64)
        .ok_or(AccountingError::CountOverflow)?
        + lb;
    let infinity_mass = tmt - (count as f64 * (-p.infinity_mass).ln_1p()).exp_m1();
    Ok(Pmf {
        lower,
        probs,
        infinity_mass: infinity_mass.min(1.0),
        sparse: false,
    })
}

/// ε for δ by dp_accounting's downward sweep; also returns the lowest index the sweep read.
fn epsilon_for_delta(p: &Pmf, d: f64, delta: f64) -> (f64, usize) {
    let top = p.probs.len();
    if p.infinity_mass > delta {
        return (f64::INFINITY, top);
    }
    let mut mass_upper = p.infinity_mass;
    let mut mass_lower = 0.0;
    for idx in (0..top).rev() {
        let loss = (p.lower + idx as i64) as f64 * d;
        let prob = p.probs[idx];
        if mass_upper > delta
            && mass_lower > 0.0
            && ((mass_upper - delta) / mass_lower).ln() >= loss
        {
            return (((mass_upper - delta) / mass_lower).ln(), idx);
        }
        mass_upper += prob;
        mass_lower += (-loss).exp() * prob;
        if mass_upper >= delta && mass_lower == 0.0 {
            return (loss.max(0.0), idx);
        }
    }
    if mass_upper <= mass_lower + delta {
        return (0.0, 0);
    }
    (((mass_upper - delta) / mass_lower).ln().max(0.0), 0)
}

/// δ(ε) = m_∞ + Σ_{L > ε} (1 - e^(ε-L)) p_L; also returns the first index summed.
fn delta_for_epsilon(p: &Pmf, d: f64, eps: f64) -> (f64, usize) {
    let mut delta = p.infinity_mass;
    let mut first = p.probs.len();
    for (idx, prob) in p.probs.iter().enumerate().rev() {
        let loss = (p.lower + idx as i64) as f64 * d;
        if loss <= eps {
            break;
        }
        delta += -(eps - loss).exp_m1() * prob;
        first = idx;
    }
    (delta.min(1.0), first)
}

/// A composed PLD for one adjacency, with the lowest index whose value is accurate (0 for the
/// plain composition).
#[derive(Clone, Debug)]
struct Composed {
    pmf: Pmf,
    reliable_from: usize,
}

#[derive(Clone, Debug)]
struct ComposedPair {
    remove: Composed,
    /// None: the add PLD equals the remove PLD (every event symmetric).
    add: Option<Composed>,
}

impl ComposedPair {
    fn parts(&self) -> impl Iterator<Item = &Composed> {
        std::iter::once(&self.remove).chain(self.add.as_ref())
    }
}

/// A factor of the composition.
#[derive(Clone, Copy, Debug)]
enum Factor {
    /// Unsampled Gaussian, `count` runs: one PLD of noise σ/√count.
    Gaussian { sigma: f64, count: u64 },
    /// Poisson-subsampled Gaussian run `count` times.
    Poisson { q: f64, sigma: f64, count: u64 },
}

impl Factor {
    fn symmetric(&self) -> bool {
        match self {
            Factor::Gaussian { .. } => true,
            Factor::Poisson { q, .. } => *q == 1.0,
        }
    }

    fn one_step(&self, adjacency: Adjacency, opts: &PldOptions) -> Result<Pmf> {
        let adjacency = if self.symmetric() {
            Adjacency::Remove
        } else {
            adjacency
        };
        match *self {
            Factor::Gaussian { sigma, count } => {
                gaussian_pmf(sigma / (count as f64).sqrt(), 1.0, adjacency, opts)
            }
            Factor::Poisson { q, sigma, .. } => gaussian_pmf(sigma, q, adjacency, opts),
        }
    }

    fn steps(&self) -> u64 {
        match self {
            Factor::Gaussian { .. } => 1,
            Factor::Poisson { count, .. } => *count,
        }
    }
}

/// The plain composition (dp_accounting's algorithm) for one adjacency.
fn compose_plain(factors: &[Factor], adjacency: Adjacency, opts: &PldOptions) -> Result<Composed> {
    let tmt = opts.tail_mass_truncation;
    let mut state = Pmf::identity();
    for f in factors {
        let one = f.one_step(adjacency, opts)?;
        let composed = match f {
            Factor::Gaussian { .. } => one,
            Factor::Poisson { count, .. } => self_compose(&one, *count, tmt, opts)?,
        };
        state = compose(&state, composed, tmt, opts)?;
    }
    Ok(Composed {
        pmf: state,
        reliable_from: 0,
    })
}

/// A PMF held as tilted weights: p_k = r_k exp(log_scale - λ L_k), L_k = (lower + k) Δ.
struct Tilted {
    lower: i64,
    r: Vec<f64>,
    log_scale: f64,
}

fn tilt(p: &Pmf, lambda: f64, d: f64) -> Tilted {
    let logs: Vec<f64> = p
        .probs
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            if v > 0.0 {
                v.ln() + lambda * (p.lower + k as i64) as f64 * d
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut r: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = r.iter().sum();
    for v in r.iter_mut() {
        *v /= sum;
    }
    Tilted {
        lower: p.lower,
        r,
        log_scale: max + sum.ln(),
    }
}

/// Relative floor below which tilted values are treated as FFT noise.
const TILT_RELIABLE_RELATIVE: f64 = 1e-10;
const TILT_RELIABLE_ABSOLUTE: f64 = 1e-14;

/// The tilted composition for one adjacency (see the module docs).
fn compose_tilted(
    factors: &[Factor],
    adjacency: Adjacency,
    opts: &PldOptions,
    lambda: f64,
) -> Result<Composed> {
    let tmt = opts.tail_mass_truncation;
    let d = opts.value_discretization_interval;
    let mut state = Tilted {
        lower: 0,
        r: vec![1.0],
        log_scale: 0.0,
    };
    let mut survive = 1.0; // probability that no factor put mass at infinity
    for f in factors {
        let one = f.one_step(adjacency, opts)?;
        let w = tilt(&one, lambda, d);
        let composed = match f {
            Factor::Gaussian { .. } => {
                survive *= 1.0 - one.infinity_mass;
                w
            }
            Factor::Poisson { count, .. } => {
                let count = *count;
                // The window must hold both the plain and the tilted distribution.
                let (lb0, ub0) = chernoff_bounds(&one.probs, count, tmt);
                let (lb1, ub1) = chernoff_bounds(&w.r, count, tmt);
                let (lb, ub) = (lb0.min(lb1), ub0.max(ub1));
                let len = (ub - lb + 1) as u64;
                too_large(len.max(w.r.len() as u64), opts)?;
                let r = fft::self_convolve(&w.r, count, lb as usize, len as usize);
                survive *= (1.0 - tmt) * (count as f64 * (-one.infinity_mass).ln_1p()).exp();
                let lower = w
                    .lower
                    .checked_mul(count as i64)
                    .ok_or(AccountingError::CountOverflow)?
                    + lb;
                Tilted {
                    lower,
                    r,
                    log_scale: w.log_scale * count as f64,
                }
            }
        };
        too_large((state.r.len() + composed.r.len()) as u64, opts)?;
        state = Tilted {
            lower: state.lower + composed.lower,
            r: fft::convolve(&state.r, &composed.r),
            log_scale: state.log_scale + composed.log_scale,
        };
    }
    // Untilt where the tilted values are above the noise floor, scanning down from the peak.
    let (peak, r_max) =
        state
            .r
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            });
    let floor = (TILT_RELIABLE_RELATIVE * r_max).max(TILT_RELIABLE_ABSOLUTE);
    let mut reliable_from = peak;
    while reliable_from > 0 && state.r[reliable_from - 1] >= floor {
        reliable_from -= 1;
    }
    let probs: Vec<f64> = state
        .r
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            if k < reliable_from || v <= 0.0 {
                0.0
            } else {
                v * (state.log_scale - lambda * (state.lower + k as i64) as f64 * d).exp()
            }
        })
        .collect();
    let pmf = Pmf {
        lower: state.lower,
        probs,
        infinity_mass: (1.0 - survive).clamp(0.0, 1.0),
        sparse: false,
    };
    Ok(Composed { pmf, reliable_from })
}

fn compose_pair(
    factors: &[Factor],
    opts: &PldOptions,
    run: impl Fn(&[Factor], Adjacency, &PldOptions) -> Result<Composed> + Sync,
) -> Result<ComposedPair> {
    let symmetric = factors.iter().all(Factor::symmetric);
    if symmetric {
        return Ok(ComposedPair {
            remove: run(factors, Adjacency::Remove, opts)?,
            add: None,
        });
    }
    let (remove, add) = rayon::join(
        || run(factors, Adjacency::Remove, opts),
        || run(factors, Adjacency::Add, opts),
    );
    Ok(ComposedPair {
        remove: remove?,
        add: Some(add?),
    })
}

/// Exact δ(ε) of the Gaussian mechanism with sensitivity 1 (Balle & Wang 2018, "Improving the
/// Gaussian Mechanism for Differential Privacy", Thm. 8): Φ(-εσ + 1/(2σ)) - e^ε Φ(-εσ - 1/(2σ)),
/// written as Φ(a) (1 - e^(ε + log Φ(b) - log Φ(a))) to keep its precision when both are tiny.
/// Used when every event is an unsampled Gaussian and the discretised PLD would be too large
/// (tiny effective σ); the value is exact instead of pessimistically discretised. Also the
/// δ(ε) of μ-GDP with μ = 1/σ (Dong, Roth & Su 2019, Cor. 2.13), which the empirical GDP and
/// f-DP lower bounds of `memaudit-audit` use.
pub fn gaussian_delta_for_epsilon(sigma: f64, eps: f64) -> f64 {
    let a = -eps * sigma + 0.5 / sigma;
    let b = -eps * sigma - 0.5 / sigma;
    let la = log_phi(a);
    let lb = log_phi(b);
    let v = la.exp() * -(eps + lb - la).exp_m1();
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// ε(δ) for the Gaussian mechanism by bisection on the exact δ(ε) (to 1e-12 relative); with
/// σ = 1/μ, the ε of μ-GDP at δ.
pub fn gaussian_epsilon_for_delta(sigma: f64, delta: f64) -> f64 {
    if gaussian_delta_for_epsilon(sigma, 0.0) <= delta {
        return 0.0;
    }
    let mut hi = 1.0;
    while gaussian_delta_for_epsilon(sigma, hi) > delta {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    while hi - lo > 1e-12 * hi {
        let mid = 0.5 * (lo + hi);
        if gaussian_delta_for_epsilon(sigma, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The smallest σ such that the Gaussian mechanism with sensitivity 1 is (ε, δ)-DP (Balle &
/// Wang 2018; dp_accounting's `get_sigma_gaussian`), by bisection on the exact δ(ε), which is
/// decreasing in σ, to 1e-14 relative. δ = 0 needs infinite noise (returns +inf); δ >= 1 or
/// ε = +inf needs none (returns 0). NaN or negative arguments give NaN.
pub fn gaussian_sigma_for_epsilon_delta(eps: f64, delta: f64) -> f64 {
    if eps.is_nan() || delta.is_nan() || eps < 0.0 || delta < 0.0 {
        return f64::NAN;
    }
    if delta >= 1.0 || eps == f64::INFINITY {
        return 0.0;
    }
    if delta == 0.0 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (1.0_f64, 1.0_f64);
    while gaussian_delta_for_epsilon(lo, eps) <= delta {
        lo *= 0.5;
        if lo < 1e-300 {
            return 0.0;
        }
    }
    while gaussian_delta_for_epsilon(hi, eps) > delta {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    // Invariant: δ(ε; lo) > δ >= δ(ε; hi).
    while hi - lo > 1e-14 * hi {
        let mid = 0.5 * (lo + hi);
        if gaussian_delta_for_epsilon(mid, eps) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The PLD accountant (add-or-remove-one neighbours).
#[derive(Clone, Debug)]
pub struct PldAccountant {
    relation: NeighboringRelation,
    options: PldOptions,
    factors: Vec<Factor>,
    non_private: bool,
    /// Composes the same events; its optimal order picks the tilt for tiny δ.
    rdp: RdpAccountant,
    plain: OnceLock<std::result::Result<Arc<ComposedPair>, AccountingError>>,
}

impl PldAccountant {
    /// An accountant with dp_accounting's default settings.
    pub fn new(relation: NeighboringRelation) -> Self {
        Self::with_options(relation, PldOptions::default()).expect("default options are valid")
    }

    /// An accountant with custom settings.
    pub fn with_options(relation: NeighboringRelation, options: PldOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self {
            relation,
            options,
            factors: Vec::new(),
            non_private: false,
            rdp: RdpAccountant::new(NeighboringRelation::AddOrRemoveOne),
            plain: OnceLock::new(),
        })
    }

    /// The settings.
    pub fn options(&self) -> &PldOptions {
        &self.options
    }

    fn factors_of(&self, event: &DpEvent) -> Result<Vec<Option<Factor>>> {
        let atoms = flatten(event, "PLD", self.relation)?;
        let unsupported = |reason: &str| AccountingError::Unsupported {
            accountant: "PLD",
            event: event.describe(),
            relation: self.relation,
            reason: reason.to_string(),
        };
        if self.relation != NeighboringRelation::AddOrRemoveOne && !atoms.is_empty() {
            return Err(unsupported(
                "the PLD accountant implements add-or-remove-one only; use the RDP accountant (SampledWithoutReplacement) for replace-one",
            ));
        }
        atoms
            .into_iter()
            .map(|(atom, count)| match atom {
                Atom::NonPrivate => Ok(None),
                Atom::Gaussian { sigma } => Ok(Some(Factor::Gaussian { sigma, count })),
                Atom::PoissonGaussian { q, sigma } => Ok(Some(Factor::Poisson { q, sigma, count })),
                Atom::WorGaussian { .. } => Err(unsupported(
                    "sampling without replacement has no PLD here; use the RDP accountant with replace-one neighbours",
                )),
            })
            .collect()
    }

    fn plain(&self) -> Result<Arc<ComposedPair>> {
        self.plain
            .get_or_init(|| compose_pair(&self.factors, &self.options, compose_plain).map(Arc::new))
            .clone()
    }

    fn total_steps(&self) -> f64 {
        self.factors
            .iter()
            .map(|f| f.steps() as f64)
            .sum::<f64>()
            .max(1.0)
    }

    /// Options and tilt of the recomposition aimed at δ-level `target`.
    fn tilted(&self, target: f64, lambda: f64) -> Result<ComposedPair> {
        let mut opts = self.options;
        let small = (target * 1e-3).max(f64::MIN_POSITIVE);
        opts.tail_mass_truncation = opts.tail_mass_truncation.min(small);
        opts.log_mass_truncation_bound = opts
            .log_mass_truncation_bound
            .min((small / self.total_steps()).ln());
        compose_pair(&self.factors, &opts, |f, a, o| {
            compose_tilted(f, a, o, lambda)
        })
    }

    /// When every factor is an unsampled Gaussian, the composition is one Gaussian mechanism
    /// with noise multiplier (Σ count/σ²)^(-1/2).
    fn gaussian_only_sigma(&self) -> Option<f64> {
        let mut inv_sq = 0.0;
        for f in &self.factors {
            match f {
                Factor::Gaussian { sigma, count } => inv_sq += *count as f64 / (sigma * sigma),
                Factor::Poisson { .. } => return None,
            }
        }
        (inv_sq > 0.0).then(|| inv_sq.powf(-0.5))
    }

    fn tilt_from_order(order: f64) -> f64 {
        (order - 1.0).clamp(0.0, 1000.0)
    }

    /// Epsilon for `delta` (the max over the add and remove PLDs).
    pub fn epsilon_for_delta(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        if self.non_private {
            return Ok(f64::INFINITY);
        }
        let d = self.options.value_discretization_interval;
        let plain = match (self.plain(), self.gaussian_only_sigma()) {
            (Err(AccountingError::PldTooLarge { .. }), Some(sigma)) => {
                return Ok(gaussian_epsilon_for_delta(sigma, delta));
            }
            (plain, _) => plain?,
        };
        let eps0 = plain
            .parts()
            .map(|c| epsilon_for_delta(&c.pmf, d, delta).0)
            .fold(0.0, f64::max);
        if delta >= TILT_DELTA_THRESHOLD || self.factors.is_empty() {
            return Ok(eps0);
        }
        let order = self
            .rdp
            .epsilon_and_order(delta, Conversion::Improved)?
            .order;
        let Ok(tilted) = self.tilted(delta, Self::tilt_from_order(order)) else {
            return Ok(eps0);
        };
        let mut eps1 = 0.0f64;
        for c in tilted.parts() {
            let (e, stop) = epsilon_for_delta(&c.pmf, d, delta);
            if stop < c.reliable_from || !e.is_finite() {
                return Ok(eps0);
            }
            eps1 = eps1.max(e);
        }
        Ok(eps1)
    }

    /// Delta for `epsilon` (the max over the add and remove PLDs).
    pub fn delta_for_epsilon(&self, epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        if self.non_private {
            return Ok(1.0);
        }
        let d = self.options.value_discretization_interval;
        let plain = match (self.plain(), self.gaussian_only_sigma()) {
            (Err(AccountingError::PldTooLarge { .. }), Some(sigma)) => {
                return Ok(gaussian_delta_for_epsilon(sigma, epsilon));
            }
            (plain, _) => plain?,
        };
        let delta0 = plain
            .parts()
            .map(|c| delta_for_epsilon(&c.pmf, d, epsilon).0)
            .fold(0.0, f64::max);
        if delta0 >= TILT_DELTA_THRESHOLD || self.factors.is_empty() {
            return Ok(delta0);
        }
        let order = self.rdp.delta_and_order(epsilon)?.order;
        let Ok(tilted) = self.tilted(delta0, Self::tilt_from_order(order)) else {
            return Ok(delta0);
        };
        let mut delta1 = 0.0f64;
        for c in tilted.parts() {
            let (v, first) = delta_for_epsilon(&c.pmf, d, epsilon);
            let last_index = c.pmf.probs.len();
            if first < c.reliable_from && first < last_index {
                return Ok(delta0);
            }
            delta1 = delta1.max(v);
        }
        Ok(delta1)
    }
}

impl PrivacyAccountant for PldAccountant {
    fn neighboring_relation(&self) -> NeighboringRelation {
        self.relation
    }

    fn check(&self, event: &DpEvent) -> Result<()> {
        self.factors_of(event).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent) -> Result<()> {
        let factors = self.factors_of(event)?;
        self.rdp.compose(event)?;
        for f in factors {
            match f {
                None => self.non_private = true,
                Some(f) => self.factors.push(f),
            }
        }
        self.plain = OnceLock::new();
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        self.epsilon_for_delta(delta)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        self.delta_for_epsilon(epsilon)
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
