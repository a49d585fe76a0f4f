//! Discrete privacy-loss PMFs on the grid ε_i = i·Δ (dp_accounting's `pld/pld_pmf.py`):
//! composition by FFT with Chernoff-bounded windows, tail truncation, ε(δ) and δ(ε) sweeps, and
//! the exponential tilt for tiny δ (module docs of `pld`).

#[allow(unused_imports)]
use super::*;

/// A privacy-loss PMF on the grid (lower + k) Δ, with mass at +infinity.
#[derive(Clone, Debug)]
pub(crate) struct Pmf {
    pub(crate) lower: i64,
    pub(crate) probs: Vec<f64>,
    pub(crate) infinity_mass: f64,
    /// dp_accounting keeps PMFs of <= 1000 points as dictionaries and composes them directly.
    pub(crate) sparse: bool,
}

pub(crate) const MAX_SPARSE_SIZE: usize = 1000;

impl Pmf {
    pub(crate) fn identity() -> Self {
        Pmf {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
            sparse: true,
        }
    }
}

pub(crate) fn too_large(points: u64, opts: &PldOptions) -> Result<()> {
    if points > opts.max_points {
        Err(AccountingError::PldTooLarge {
            points,
            limit: opts.max_points,
        })
    } else {
        Ok(())
    }
}

/// dp_accounting `_truncate_tails`, pessimistic: drop prefix and suffix of mass <= tmt/2 each;
/// the prefix mass moves up to the first kept point, the suffix mass goes to infinity.
pub(crate) fn truncate_tails(mut probs: Vec<f64>, tmt: f64) -> (usize, Vec<f64>, f64) {
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

pub(crate) fn compose(a: &Pmf, b: Pmf, tmt: f64, opts: &PldOptions) -> Result<Pmf> {
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
pub(crate) fn chernoff_bounds(probs: &[f64], count: u64, tmt: f64) -> (i64, i64) {
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
pub(crate) fn moment_generating_sum(probs: &[f64], order: f64) -> f64 {
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
pub(crate) fn self_compose(p: &Pmf, count: u64, tmt: f64, opts: &PldOptions) -> Result<Pmf> {
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
pub(crate) fn epsilon_for_delta(p: &Pmf, d: f64, delta: f64) -> (f64, usize) {
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
pub(crate) fn delta_for_epsilon(p: &Pmf, d: f64, eps: f64) -> (f64, usize) {
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

/// A PMF held as tilted weights: p_k = r_k exp(log_scale - λ L_k), L_k = (lower + k) Δ.
pub(crate) struct Tilted {
    pub(crate) lower: i64,
    pub(crate) r: Vec<f64>,
    pub(crate) log_scale: f64,
}

pub(crate) fn tilt(p: &Pmf, lambda: f64, d: f64) -> Tilted {
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
pub(crate) const TILT_RELIABLE_RELATIVE: f64 = 1e-10;
pub(crate) const TILT_RELIABLE_ABSOLUTE: f64 = 1e-14;
