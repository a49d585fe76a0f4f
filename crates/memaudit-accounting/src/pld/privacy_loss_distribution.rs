//! Privacy-loss distributions of events (dp_accounting's
//! `pld/privacy_loss_distribution.py`): the connect-the-dots PMF of a (sampled) Gaussian step, and
//! the composition of an accountant's events, plain and tilted, for both adjacencies.

#[allow(unused_imports)]
use super::*;

/// One step of the (subsampled) Gaussian as a pessimistic connect-the-dots PMF.
pub(crate) fn gaussian_pmf(
    sigma: f64,
    q: f64,
    adjacency: Adjacency,
    opts: &PldOptions,
) -> Result<Pmf> {
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

/// A composed PLD for one adjacency, with the lowest index whose value is accurate (0 for the
/// plain composition).
#[derive(Clone, Debug)]
pub(crate) struct Composed {
    pub(crate) pmf: Pmf,
    pub(crate) reliable_from: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct ComposedPair {
    pub(crate) remove: Composed,
    /// None: the add PLD equals the remove PLD (every event symmetric).
    pub(crate) add: Option<Composed>,
}

impl ComposedPair {
    pub(crate) fn parts(&self) -> impl Iterator<Item = &Composed> {
        std::iter::once(&self.remove).chain(self.add.as_ref())
    }
}

/// A factor of the composition.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Factor {
    /// Unsampled Gaussian, `count` runs: one PLD of noise σ/√count.
    Gaussian { sigma: f64, count: u64 },
    /// Poisson-subsampled Gaussian run `count` times.
    Poisson { q: f64, sigma: f64, count: u64 },
}

impl Factor {
    pub(crate) fn symmetric(&self) -> bool {
        match self {
            Factor::Gaussian { .. } => true,
            Factor::Poisson { q, .. } => *q == 1.0,
        }
    }

    pub(crate) fn one_step(&self, adjacency: Adjacency, opts: &PldOptions) -> Result<Pmf> {
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

    pub(crate) fn steps(&self) -> u64 {
        match self {
            Factor::Gaussian { .. } => 1,
            Factor::Poisson { count, .. } => *count,
        }
    }
}

/// The plain composition (dp_accounting's algorithm) for one adjacency.
pub(crate) fn compose_plain(
    factors: &[Factor],
    adjacency: Adjacency,
    opts: &PldOptions,
) -> Result<Composed> {
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

/// The tilted composition for one adjacency (see the module docs).
pub(crate) fn compose_tilted(
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

pub(crate) fn compose_pair(
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
