"""Lower bounds: auditing.md section 3's vectors (JAX Privacy's deterministic normals,
Jagielski et al.'s Clopper-Pearson case, the pinned AUROC), as in
crates/memaudit/tests/cli_lower_bound.rs and the lower_bound unit tests; and identity with
`memaudit lower-bound --json` on the same scores."""

from statistics import NormalDist

import numpy as np
import pytest

import memaudit
from test_accounting import same


def normals(n, shift):
    """JAX Privacy's "deterministic normals": Phi^-1((i + 1/2) / n) + shift."""
    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / n) + shift for i in range(n)])


def eps(report, method):
    (r,) = [r for r in report["results"] if r["method"] == method]
    return r["epsilon_lower_bound"]


OUT = normals(10_000, 0.0)


@pytest.mark.parametrize(
    "mu, one_run, fdp",
    # auditing.md: one-run 1.13346, 2.311945, 4.395568; f-DP 2.164749, 4.7218075, 9.133752.
    [(1.0, 1.13346, 2.164749), (2.0, 2.311945, 4.7218075), (4.0, 4.395568, 9.133752)],
)
def test_jax_privacy_deterministic_normals(mu, one_run, fdp):
    # Tolerance 2e-6 as the CLI test: JAX Privacy's brentq xtol 1e-6 and its printed digits.
    # (stdlib inv_cdf vs memaudit's ppf differ by ~1e-16, far below it.)
    r = memaudit.lower_bounds(normals(10_000, mu), OUT, delta=1e-6)
    assert r["m"] == 20_000
    assert [x["method"] for x in r["results"]] == ["clopper-pearson", "gdp", "one-run", "one-run-fdp"]
    assert abs(eps(r, "one-run") - one_run) < 2e-6
    assert abs(eps(r, "one-run-fdp") - fdp) < 2e-6
    assert all("epsilon" not in x for x in r["results"])
    assert any("2*m*delta = 0.04" in w for w in r["warnings"])


def test_jax_privacy_mu_zero_certifies_nothing():
    r = memaudit.lower_bounds(OUT, OUT, delta=1e-6, method="one-run")
    assert eps(r, "one-run") == 0.0


def test_clopper_pearson_jagielski_and_bonferroni():
    ins, outs = np.ones(500), np.zeros(500)
    r = memaudit.lower_bounds(ins, outs, method="clopper-pearson", significance=0.01, threshold=0.5, two_sided=True)
    # Closed form; bisection error ~1e-13: tolerance 1e-12.
    assert abs(eps(r, "clopper-pearson") - 4.541915810224092) < 1e-12
    r = memaudit.lower_bounds(ins, outs, method="clopper-pearson", significance=0.01)
    # 7 printed digits: 5e-7.
    assert abs(eps(r, "clopper-pearson") - 4.352386) < 5e-7
    assert r["results"][0]["thresholds_tested"] == 3


def test_pinned_auroc():
    # auditing.md: 13/16 is the area under the ROC's convex hull (JAX Privacy's AUROC); the
    # plain pair count is 11/16. Both exact in binary floating point.
    r = memaudit.lower_bounds([0.0, 4, 6, 7], [1.0, 2, 3, 5], method="clopper-pearson")
    assert r["auroc"] == 13 / 16
    assert r["auroc_empirical"] == 11 / 16


def test_lower_is_member_equals_negated_scores():
    ins, outs = normals(2000, 1.0), normals(2000, 0.0)
    a = memaudit.lower_bounds(-ins, -outs, delta=1e-5, lower_is_member=True)
    b = memaudit.lower_bounds(ins, outs, delta=1e-5)
    assert [x["epsilon_lower_bound"] for x in a["results"]] == [x["epsilon_lower_bound"] for x in b["results"]]


def test_identical_to_the_cli_on_the_same_scores(cli, tmp_path):
    # Scores computed outside memaudit (numpy), written as .npy and as text, read by the CLI.
    rng = np.random.default_rng(7)
    ins, outs = rng.normal(1.5, 1, 3000), rng.normal(0, 1, 3000)
    np.save(tmp_path / "in.npy", ins)
    np.savetxt(tmp_path / "out.txt", outs, fmt="%.17g")
    c = cli("lower-bound", "--in-scores", tmp_path / "in.npy", "--out-scores", tmp_path / "out.txt", "--delta", "1e-5")
    same(memaudit.lower_bounds(ins, outs, delta=1e-5), c)


def test_bad_lower_bound_input_names_the_argument():
    with pytest.raises(ValueError, match="^in_scores: the IN .* empty"):
        memaudit.lower_bounds([], [1.0])
    with pytest.raises(ValueError, match="^out_scores: OUT .* #1 is NaN"):
        memaudit.lower_bounds([1.0], [0.0, float("nan")])
    with pytest.raises(ValueError, match="^delta: method \"gdp\" needs delta > 0"):
        memaudit.lower_bounds([1.0], [0.0], method="gdp")
    with pytest.raises(ValueError, match="^significance"):
        memaudit.lower_bounds([1.0], [0.0], significance=0.7)
    with pytest.raises(ValueError, match="^method"):
        memaudit.lower_bounds([1.0], [0.0], method="jagielski")
    with pytest.raises(ValueError, match=r"^in_scores: expected a 1-D array of float64 with shape \[n_in\], got a 2-D array of shape \(2, 2\)"):
        memaudit.lower_bounds(np.zeros((2, 2)), [0.0])
    with pytest.raises(TypeError, match=r"^out_scores: expected a \[n_out\] array of float64, got dtype <U1"):
        memaudit.lower_bounds([1.0], np.array(["a"]))
