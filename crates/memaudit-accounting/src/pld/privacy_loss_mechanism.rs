//! The privacy loss of one Gaussian mechanism step (dp_accounting's
//! `pld/privacy_loss_mechanism.py`: `GaussianPrivacyLoss`) and the exact Gaussian curve
//! (Balle & Wang 2018, Thm. 8).

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Adjacency {
    Remove,
    Add,
}

/// Φ(z), one erfc evaluation.
#[inline]
pub(crate) fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// log Φ(z), accurate in both tails (only needed where Φ underflows).
pub(crate) fn log_phi(z: f64) -> f64 {
    crate::special::log_ndtr(z)
}

/// Below this, e^ε Φ is computed as exp(ε + log Φ) (Φ itself would lose digits or underflow).
pub(crate) const PHI_LINEAR_FLOOR: f64 = 1e-290;

pub(crate) fn log_add_exp(a: f64, b: f64) -> f64 {
    crate::special::log_add(a, b)
}

/// math.isclose(a, b) with Python's default rel_tol = 1e-9.
pub(crate) fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The privacy loss of the (subsampled) Gaussian mechanism with sensitivity 1
/// (dp_accounting `GaussianPrivacyLoss`), with the constants of its formulas precomputed.
pub(crate) struct GaussianLoss {
    pub(crate) sigma: f64,
    pub(crate) q: f64,
    pub(crate) adjacency: Adjacency,
    /// ln(1 - q) as Python's math.log(1 - q) (for the isclose tests) and as log1p(-q).
    pub(crate) ln_1mq: f64,
    pub(crate) log1p_mq: f64,
    pub(crate) ln_q: f64,
    /// For log(a e^b + c) with a = 1/q, c = 1 - 1/q: ln a, ln(-c), ln(a + c).
    pub(crate) ln_inv_q: f64,
    pub(crate) ln_inv_q_m1: f64,
    pub(crate) ln_a_plus_c: f64,
}

impl GaussianLoss {
    pub(crate) fn new(sigma: f64, q: f64, adjacency: Adjacency) -> Self {
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

    pub(crate) fn loss_remove_unsampled(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }

    pub(crate) fn loss_remove(&self, x: f64) -> f64 {
        let l = self.loss_remove_unsampled(x);
        if self.q == 1.0 {
            l
        } else {
            log_a_times_exp_b_plus_c(self.q, l, 1.0 - self.q)
        }
    }

    pub(crate) fn loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove(x),
            Adjacency::Add => -self.loss_remove(-x),
        }
    }

    pub(crate) fn inverse_remove_unsampled(&self, loss: f64) -> f64 {
        -0.5 - loss * self.sigma * self.sigma
    }

    /// `log_a_times_exp_b_plus_c(1/q, b, 1 - 1/q)` = ln(e^b / q + 1 - 1/q), for b > ln(1-q).
    #[inline]
    pub(crate) fn unsampled_loss_of(&self, b: f64) -> f64 {
        if b == 0.0 {
            return self.ln_a_plus_c;
        }
        crate::special::log_sub(b + self.ln_inv_q, self.ln_inv_q_m1)
    }

    /// The largest x whose privacy loss is at least `loss`.
    pub(crate) fn inverse_loss(&self, loss: f64) -> f64 {
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
    pub(crate) fn delta_for_epsilon(&self, eps: f64) -> f64 {
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
