"""Regenerates skew_normal_reference.json: the oracle values memaudit-audit's skew-normal tests use.

Run with scipy 1.17.1, numpy 2.4.6 and mpmath 1.3.0 (the versions the committed file was made with):
    python3 gen_reference.py > skew_normal_reference.json
- Owen's T: scipy.special.owens_t (Boost), cross-checked here against mpmath quadrature of the
  defining integral at 40 digits.
- Skew-normal ln CDF: mpmath quadrature of 2*phi(t)*Phi(a*t) at 50 digits, far into the tail
  (scipy's double-precision cdf is only trusted where it agrees).
- Fits: scipy.stats.skewnorm.fit (MLE, Nelder-Mead from the method-of-moments start), with the
  data sets stored verbatim so the Rust test fits exactly the same numbers.
"""
import json
import mpmath as mp
import numpy as np
import scipy
from scipy import special, stats

mp.mp.dps = 50


def owens_t_mp(h, a):
    h = mp.mpf(h); a = mp.mpf(a)
    f = lambda x: mp.exp(-h * h * (1 + x * x) / 2) / (1 + x * x)
    return mp.quad(f, [0, a]) / (2 * mp.pi)


def sn_ln_cdf_mp(x, a, loc, scale):
    """F(z) = int_{-inf}^z 2 phi(t) Phi(a t) dt, with breakpoints where the integrand lives: on the
    scale 1/lam of its decay left of z (lam = its log-slope at z) and over the body of the density;
    two quadrature rules must agree to 1e-25 relative."""
    z = (mp.mpf(x) - loc) / scale
    a = mp.mpf(a)
    # mpmath's quad stops on an *absolute* error estimate, so integrate f / f(z) (f(z) is the
    # largest value left of z for z below the mode, and not tiny relative to F otherwise).
    f0 = lambda t: mp.exp(-t * t / 2) / mp.sqrt(2 * mp.pi) * mp.erfc(-a * t / mp.sqrt(2))
    peak = f0(z) if f0(z) > 0 else mp.mpf(1)
    f = lambda t: f0(t) / peak
    lam = abs(z - a * mp.npdf(a * z) / mp.ncdf(a * z)) + mp.mpf(1) / 8
    pts = [z - k / lam for k in (1024, 256, 64, 32, 16, 8, 4, 2, 1, 0.5, 0.25, 0)]
    body = [mp.mpf(b) / 2 / (1 + abs(a)) for b in range(-40, 41)]
    pts = sorted(set([p for p in body if p < pts[0]] + pts))
    v1 = mp.quad(f, [-mp.inf] + pts) * peak
    if v1 == 0 or mp.log(v1) < -1610:
        return v1  # dropped by the caller
    v2 = mp.quad(f, [-mp.inf] + pts, method="gauss-legendre") * peak
    assert abs(v1 - v2) <= mp.mpf(10) ** -25 * abs(v1), (x, a, loc, scale, v1, v2)
    return v1


out = {"generator": "gen_reference.py", "scipy": scipy.__version__, "numpy": np.__version__,
       "mpmath": mp.__version__}

owens = []
for h in [0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, -1.0]:
    for a in [-3.0, -0.5, 0.1, 0.5, 0.99, 1.0, 1.5, 4.0, 10.0, 100.0]:
        v = float(owens_t_mp(h, a))
        s = float(special.owens_t(h, a))
        assert abs(v - s) <= 1e-15 + 1e-12 * abs(v), (h, a, v, s)
        owens.append([h, a, v])
out["owens_t"] = owens

cdf = []
for (a, loc, scale) in [(4.0, 0.0, 1.0), (-3.0, 2.0, 0.5), (10.0, 1.0, 2.0), (0.0, 0.0, 1.0),
                        (0.7, 3.0, 1.3), (4.00754, 9.99961, 1.99996), (-8.0, 0.0, 1.0),
                        (97.22983033428449, 20.01182223545983, 2.512018617785447)]:
    for x in [-30.0, -12.0, -6.0, -3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 5.0, 8.0, 9.5, 12.5, 15.0, 17.5, 19.5, 19.9, 20.0]:
        v = sn_ln_cdf_mp(x, a, loc, scale)
        if v == 0:
            continue
        lv = float(mp.log(v))
        if lv < -700 * 2.3:  # keep to exposures well inside what anyone reports
            continue
        cdf.append([a, loc, scale, x, lv])
out["skewnorm_ln_cdf"] = cdf

fits = []
def add_fit(name, data):
    data = np.asarray(data, dtype=float)
    a, loc, scale = stats.skewnorm.fit(data)
    nll = float(stats.skewnorm.nnlf((a, loc, scale), data))
    xs = [float(np.quantile(data, q)) for q in (0.001, 0.01, 0.1, 0.5)]
    xs += [float(loc - k * scale) for k in (1.0, 2.0, 3.0)]
    exps = [[x, float(-np.log2(stats.skewnorm.cdf(x, a, loc, scale)))] for x in xs]
    # scipy's cdf underflows to 0 in the far tail of large shapes: store null, not Infinity
    exps = [[x, e if np.isfinite(e) else None] for x, e in exps]
    fits.append({"name": name, "data": [float(v) for v in data], "a": a, "loc": loc,
                 "scale": scale, "nll": nll, "exposures": exps})

n = 2000
add_fit("midquantiles_sn_4_10_2",
        stats.skewnorm.ppf((np.arange(1, n + 1) - 0.5) / n, 4, loc=10, scale=2))
rs = np.random.RandomState(1)
add_fit("rvs_sn_m3_5_1.5_seed1", stats.skewnorm.rvs(-3, loc=5, scale=1.5, size=1000, random_state=rs))
rs = np.random.RandomState(2)
add_fit("rvs_sn_0.5_0_1_seed2", stats.skewnorm.rvs(0.5, size=500, random_state=rs))
rs = np.random.RandomState(3)
add_fit("exponential_seed3_clipped_start", rs.exponential(2.0, size=300) + 20.0)
rs = np.random.RandomState(4)
add_fit("rvs_sn_4_0_1_seed4", stats.skewnorm.rvs(4, size=2000, random_state=rs))
out["fits"] = fits

print(json.dumps(out, indent=1, allow_nan=False))
