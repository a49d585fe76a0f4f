"""Exposure: TF Privacy's exposures_test.py vectors (papers.md 2.2), rank exposure, and the
skew-normal fits against scipy (crates/memaudit-audit/tests/data/skew_normal_reference.json),
as in crates/memaudit-audit/tests/exposure.rs and skewnorm.rs."""

import json
import math

import numpy as np
import pytest

import memaudit
from conftest import REPO

SKEW = REPO / "crates" / "memaudit-audit" / "tests" / "data" / "skew_normal_reference.json"
REFERENCE_1_TO_16 = np.arange(1.0, 17.0)


def test_tf_privacy_interpolation_vectors():
    # Exact: log2 of small integers (tolerance 1e-15 as the Rust test).
    got = memaudit.interpolation_exposure([0.0, 0.1, 20.0, 3.5, 3.5], REFERENCE_1_TO_16)
    want = [4.0, 4.0, 4.0 - math.log2(17), 2.0, 2.0]
    assert np.all(np.abs(got - want) < 1e-15), got
    assert abs(got[2] - -0.08746284125033943) < 1e-15
    # A reference that ties with the secret counts toward its rank: p = 3 has rank 1 + 3.
    assert memaudit.interpolation_exposure([3.0], REFERENCE_1_TO_16)[0] == 2.0
    # Secrets never count each other.
    assert np.all(memaudit.interpolation_exposure(np.full(10, 0.5), REFERENCE_1_TO_16) == 4.0)


def test_tf_privacy_drop_in_functions():
    got = memaudit.compute_exposure_interpolation({1: [20.0, 0.1], 4: [3.5]}, list(REFERENCE_1_TO_16))
    assert set(got) == {1, 4}
    assert np.allclose(got[1], [4.0 - math.log2(17), 4.0], rtol=0, atol=1e-15)  # input order
    assert got[4][0] == 2.0
    data = np.array(json.loads(SKEW.read_text())["fits"][0]["data"])
    ext = memaudit.compute_exposure_extrapolation({1: [9.5], 2: [8.0, 9.5]}, data)
    # papers.md 2.2: 6.0175 at 9.5 and 20.267 at 8.0 (published digits: 5e-4 / 5e-3 bits).
    assert abs(ext[1][0] - 6.0175) < 5e-4 and abs(ext[2][1] - 6.0175) < 5e-4
    assert abs(ext[2][0] - 20.267) < 5e-3


def test_exact_rank_exposure():
    scores = np.array([3.0, 1.0, 2.0, 2.0, 0.5])
    r = memaudit.exact_exposure(scores, [4, 1, 2, 3, 0])
    # Ties count: candidates 2 and 3 both have rank 4 (0.5, 1, 2, 2).
    assert list(r["ranks"]) == [1, 2, 4, 4, 5]
    assert r["log2_space"] == math.log2(5)
    assert np.allclose(r["exposures"], math.log2(5) - np.log2([1, 2, 4, 4, 5]), rtol=0, atol=1e-15)
    # |R| = 2^20 with the secret at rank 2^10: exposure 10 bits exactly.
    big = np.arange(2.0**20)
    assert memaudit.exact_exposure(big, [2**10 - 1])["exposures"][0] == 10.0


def test_skew_normal_fits_match_scipy():
    # The Rust test's tolerance: scipy's stopping point to 1e-6 relative per parameter;
    # exposures to 1e-5 relative where scipy's cdf did not underflow.
    fits = json.loads(SKEW.read_text())["fits"]
    assert len(fits) == 5
    for fit in fits:
        got = memaudit.skew_normal_fit(np.array(fit["data"]))
        for key, want in (("shape", fit["a"]), ("loc", fit["loc"]), ("scale", fit["scale"])):
            assert abs(got[key] - want) <= 1e-6 * max(abs(want), 1.0), (fit["name"], key, got)
        assert got["converged"]
        xs = [e[0] for e in fit["exposures"]]
        ext = memaudit.extrapolation_exposure(xs, np.array(fit["data"]))
        assert ext["shape"] == got["shape"]
        for (x, want), mine in zip(fit["exposures"], ext["exposures"]):
            if want is not None and math.isfinite(want):
                assert abs(mine - want) <= 1e-5 * max(abs(want), 1.0), (fit["name"], x)
            else:
                assert math.isfinite(mine) and mine > 50.0


def test_published_fit_check():
    data = np.array(json.loads(SKEW.read_text())["fits"][0]["data"])
    fit = memaudit.skew_normal_fit(data)
    # papers.md 2.2: (4.00754, 9.99961, 1.99996), five published digits: tolerance 1e-5.
    assert abs(fit["shape"] - 4.00754) < 1e-5
    assert abs(fit["loc"] - 9.99961) < 1e-5
    assert abs(fit["scale"] - 1.99996) < 1e-5


def test_exposure_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="^reference_log_perplexities: empty"):
        memaudit.interpolation_exposure([1.0], [])
    with pytest.raises(ValueError, match="^secret_log_perplexities: element 1 is NaN"):
        memaudit.interpolation_exposure([1.0, float("nan")], REFERENCE_1_TO_16)
    with pytest.raises(ValueError, match="^secret_indices: 5 is not an index"):
        memaudit.exact_exposure([1.0, 2.0], [5])
    with pytest.raises(TypeError, match="^secret_indices: expected a \\[s\\] array of int64"):
        memaudit.exact_exposure([1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="^reference_log_perplexities: .*at least 3"):
        memaudit.extrapolation_exposure([1.0], [1.0, 2.0])
