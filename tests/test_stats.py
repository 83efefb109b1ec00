"""Significance tests and summaries checked against scipy/numpy references."""

import numpy as np
import pytest
from scipy import stats

from detectors.drop import hist_count_below, hist_quantile, sign_test_greater_pvalue, welch_less_pvalue
from detectors.rate import rate_ratio_pvalue


def test_welch_matches_scipy_ttest_ind_from_stats():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n1, n0 = rng.integers(2, 5000, 2)
        m1, m0 = rng.uniform(0, 1, 2)
        s1, s0 = rng.uniform(0.01, 0.3, 2)
        ref = stats.ttest_ind_from_stats(m1, s1, n1, m0, s0, n0, equal_var=False, alternative="less")
        got = welch_less_pvalue(n1, m1, s1**2, n0, m0, s0**2)
        assert got == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_welch_degenerate_variance():
    assert welch_less_pvalue(10, 0.5, 0.0, 10, 0.9, 0.0) == 0.0
    assert welch_less_pvalue(10, 0.9, 0.0, 10, 0.5, 0.0) == 1.0


def test_sign_test_matches_scipy_binomtest():
    for n in (1, 7, 50, 1001):
        for k in range(0, n + 1, max(1, n // 13)):
            ref = stats.binomtest(k, n, 0.5, alternative="greater").pvalue
            assert sign_test_greater_pvalue(k, n) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_rate_ratio_pvalue_matches_conditional_binomtest():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n1, n0 = rng.integers(10, 20_000, 2)
        k1 = int(rng.integers(0, n1 // 5 + 1))
        k0 = int(rng.integers(0, n0 // 5 + 1))
        if k1 + k0 == 0:
            continue
        ref = stats.binomtest(k1, k1 + k0, n1 / (n1 + n0), alternative="greater").pvalue
        assert rate_ratio_pvalue(k1, n1, k0, n0) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_pvalues_of_empty_sides_are_nan_not_errors():
    assert np.isnan(rate_ratio_pvalue(np.nan, 0, 0, 0))
    assert np.isnan(sign_test_greater_pvalue(np.nan, 10))


def test_hist_quantile_on_grid_data_brackets_numpy_median():
    rng = np.random.default_rng(2)
    bins, lo, hi = 100, 0.0, 1.0
    for _ in range(50):
        x = rng.integers(0, bins, rng.integers(1, 500)) / bins + 0.5 / bins  # bin centres
        hist = np.bincount(np.floor(x * bins).astype(int), minlength=bins)
        med = hist_quantile(hist, 0.5, lo, hi)
        # linear interpolation inside the bin holding the middle order statistics
        xs = np.sort(x)
        w = 1.0 / bins
        assert xs[(x.size - 1) // 2] - w / 2 - 1e-12 <= med <= xs[x.size // 2] + w / 2 + 1e-12


def test_hist_quantile_empty_is_nan_and_count_below():
    assert np.isnan(hist_quantile(np.zeros(8), 0.5, 0, 1))
    hist = np.array([2, 2, 2, 2], float)
    assert hist_count_below(hist, 0.5, 0, 1) == pytest.approx(4.0)
    assert hist_count_below(hist, 0.625, 0, 1) == pytest.approx(5.0)
