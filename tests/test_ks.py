"""Tests for detectors.ks: the batched two-sample KS test against scipy.stats.ks_2samp."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import stats

from detectors import ks
from detectors.ks import (
    KsManyResult,
    histogram_counts,
    ks_2samp_hist_test,
    ks_2samp_many,
    ks_from_histograms,
    ks_pvalue,
)


def scipy_ks(x, y, method="asymp"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n1 == n2 == 1 (asymp at en = 0), empty samples
        return stats.ks_2samp(x, y, method=method)


def assert_matches_scipy(x, y, res):
    """Statistic, location and sign ==, p-value within 1e-12 of scipy's asymp, per series."""
    for s, (a, b) in enumerate(zip(x, y)):
        ref = scipy_ks(a, b)
        assert res.n1[s] == len(a) and res.n2[s] == len(b)
        if np.isnan(ref.statistic):
            assert np.isnan(res.statistic[s]) and np.isnan(res.pvalue[s]), s
            continue
        assert res.statistic[s] == ref.statistic, (s, res.statistic[s], ref.statistic)
        assert res.statistic_location[s] == ref.statistic_location, s
        assert res.statistic_sign[s] == ref.statistic_sign, s
        if np.isnan(ref.pvalue):
            assert np.isnan(res.pvalue[s]), s
        else:
            assert abs(res.pvalue[s] - ref.pvalue) <= 1e-12, (s, res.pvalue[s], ref.pvalue)


def _batch(rng, sizes1, sizes2, gen, shift=0.3):
    x = [gen(rng, n) for n in sizes1]
    y = [gen(rng, n) + (shift if s % 2 else 0.0) for s, n in enumerate(sizes2)]
    return x, y


GENERATORS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "beta": lambda rng, n: rng.beta(2, 5, size=n),
    "integers": lambda rng, n: rng.integers(0, 5, size=n).astype(float),
    "rounded": lambda rng, n: np.round(rng.normal(size=n), 1),
    "coarse": lambda rng, n: np.round(rng.beta(2, 5, size=n) * 10) / 10,  # 11 possible values
}


# --------------------------------------------------------------------------------------------
# raw-data statistic and p-value versus scipy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_random_sizes(kind, seed):
    rng = np.random.default_rng([seed, len(kind)])
    sizes1, sizes2 = rng.integers(1, 120, size=40), rng.integers(1, 120, size=40)
    x, y = _batch(rng, sizes1, sizes2, GENERATORS[kind])
    assert_matches_scipy(x, y, ks_2samp_many(x, y))


@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_statistic_versus_scipy_default_method(kind):
    """scipy's default ("auto" -> exact up to 10,000) snaps D to round(D * lcm) / lcm."""
    rng = np.random.default_rng(len(kind))
    sizes1, sizes2 = rng.integers(1, 300, size=60), rng.integers(1, 300, size=60)
    x, y = _batch(rng, sizes1, sizes2, GENERATORS[kind], shift=0.2)
    x += [rng.normal(size=10_001), rng.integers(0, 4, 12_000) * 1.0]  # auto -> asymp: no snap
    y += [rng.normal(size=9_000), rng.integers(0, 4, 500) * 1.0]
    res = ks_2samp_many(x, y)
    for s in range(len(x)):
        auto = scipy_ks(x[s], y[s], method="auto").statistic
        assert abs(res.statistic[s] - auto) <= 2 * np.finfo(float).eps, s
        if max(len(x[s]), len(y[s])) > 10_000:
            assert res.statistic[s] == auto


@pytest.mark.parametrize("kind", ["normal", "integers"])
def test_small_sizes_including_one(kind):
    rng = np.random.default_rng(11)
    pairs = [(1, 1), (1, 2), (2, 1), (1, 7), (9, 1), (2, 2), (2, 3), (3, 3), (1, 50), (50, 1)]
    x, y = _batch(rng, [p[0] for p in pairs], [p[1] for p in pairs], GENERATORS[kind])
    res = ks_2samp_many(x, y)
    assert_matches_scipy(x, y, res)
    # n1 == n2 == 1: round(0.5) == 0 effective observations, scipy's asymp p-value is NaN too
    assert np.isnan(res.pvalue[0]) and res.statistic[0] in (0.0, 1.0)


def test_very_different_sizes_in_one_batch():
    rng = np.random.default_rng(12)
    sizes1 = [1, 3, 20_000, 17, 5_000, 2, 1_000, 64, 65, 4]
    sizes2 = [20_000, 3, 1, 15_000, 5, 2_048, 999, 64, 63, 4]
    x, y = _batch(rng, sizes1, sizes2, GENERATORS["beta"], shift=0.05)
    assert_matches_scipy(x, y, ks_2samp_many(x, y))
    xr, yr = _batch(rng, sizes1, sizes2, GENERATORS["coarse"], shift=0.1)
    assert_matches_scipy(xr, yr, ks_2samp_many(xr, yr))


def test_heavy_ties_and_extreme_values():
    rng = np.random.default_rng(13)
    x = [
        np.zeros(30),
        np.r_[np.full(10, -np.inf), rng.normal(size=5)],
        np.full(7, 2.0),
        rng.integers(0, 2, 300) * 1.0,
    ]
    y = [
        np.zeros(20),
        np.r_[rng.normal(size=5), np.full(3, np.inf)],
        np.full(3, 1.0),
        rng.integers(0, 2, 200) * 1.0,
    ]
    res = ks_2samp_many(x, y)
    assert_matches_scipy(x, y, res)
    assert res.statistic[0] == 0.0 and res.pvalue[0] == 1.0
    assert res.statistic[2] == 1.0


def test_many_blocks_same_result(monkeypatch):
    rng = np.random.default_rng(14)
    sizes1, sizes2 = rng.integers(0, 300, size=60), rng.integers(0, 300, size=60)
    x, y = _batch(rng, sizes1, sizes2, GENERATORS["rounded"])
    one = ks_2samp_many(x, y)
    monkeypatch.setattr(ks, "_BLOCK_ELEMENTS", 256)  # several blocks per size class
    many = ks_2samp_many(x, y)
    for field in ("statistic", "pvalue", "statistic_location", "statistic_sign"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field))
    assert_matches_scipy(x, y, many)


def test_identical_samples_give_zero_and_one():
    rng = np.random.default_rng(15)
    x = [rng.normal(size=n) for n in (1, 5, 100, 2_000)] + [rng.integers(0, 3, 500) * 1.0]
    res = ks_2samp_many(x, [a.copy() for a in x])
    np.testing.assert_array_equal(res.statistic, 0.0)
    np.testing.assert_array_equal(res.pvalue[1:], 1.0)  # [0] is n1 == n2 == 1: NaN, as scipy
    assert np.isnan(res.pvalue[0])


def test_two_d_input_equals_list_input():
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(7, 40)), rng.normal(0.4, size=(7, 25))
    a, b = ks_2samp_many(x, y), ks_2samp_many(list(x), list(y))
    np.testing.assert_array_equal(a.statistic, b.statistic)
    np.testing.assert_array_equal(a.pvalue, b.pvalue)
    assert_matches_scipy(list(x), list(y), a)


def test_integer_and_float32_inputs():
    rng = np.random.default_rng(17)
    x = [rng.integers(0, 10, 50), rng.normal(size=40).astype(np.float32)]
    y = [rng.integers(2, 12, 60), rng.normal(size=30).astype(np.float32)]
    res = ks_2samp_many(x, y)
    for s in range(2):
        ref = scipy_ks(x[s], y[s])
        assert res.statistic[s] == ref.statistic
        assert res.statistic_location[s] == ref.statistic_location
    assert res.statistic_location.dtype == np.float64


def test_pvalue_matches_scipy_asymp_large_samples():
    rng = np.random.default_rng(18)
    sizes = [(10_001, 9_999), (20_000, 20_000), (15_000, 3_000), (800, 12_000)]
    x = [rng.beta(2, 5, n1) for n1, _ in sizes]
    y = [rng.beta(2.1, 5, n2) for _, n2 in sizes]
    assert_matches_scipy(x, y, ks_2samp_many(x, y))


# --------------------------------------------------------------------------------------------
# insufficient data, NaN, errors, result object
# --------------------------------------------------------------------------------------------


def test_empty_samples_give_nan():
    rng = np.random.default_rng(19)
    x = [np.array([]), rng.normal(size=5), np.array([]), rng.normal(size=3)]
    y = [rng.normal(size=4), np.array([]), np.array([]), rng.normal(size=3)]
    res = ks_2samp_many(x, y)
    assert np.isnan(res.statistic[:3]).all() and np.isnan(res.pvalue[:3]).all()
    assert np.isnan(res.statistic_location[:3]).all()
    np.testing.assert_array_equal(res.statistic_sign[:3], 0)
    assert np.isfinite(res.statistic[3]) and np.isfinite(res.pvalue[3])
    np.testing.assert_array_equal(res.n1, [0, 5, 0, 3])
    np.testing.assert_array_equal(res.n2, [4, 0, 0, 3])


def test_no_series():
    res = ks_2samp_many([], [])
    assert res.statistic.shape == (0,) and res.pvalue.shape == (0,) and res.n1.shape == (0,)


def test_nan_in_data_propagates_as_scipy():
    rng = np.random.default_rng(20)
    x = [np.r_[rng.normal(size=10), np.nan], rng.normal(size=10), rng.normal(size=12)]
    y = [rng.normal(size=8), np.r_[np.nan, rng.normal(size=5), np.nan], rng.normal(size=9)]
    res = ks_2samp_many(x, y)
    assert np.isnan(res.statistic[:2]).all() and np.isnan(res.pvalue[:2]).all()
    assert_matches_scipy(x, y, res)  # scipy's default nan_policy="propagate" gives NaN too


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same number"):
        ks_2samp_many([np.ones(3)], [np.ones(3), np.ones(2)])
    with pytest.raises(ValueError, match="1-D"):
        ks_2samp_many([np.ones((2, 2))], [np.ones(3)])
    with pytest.raises(ValueError, match="1-D"):
        ks_2samp_many(np.ones(3), np.ones(3))  # one series must be wrapped in a list


def test_result_object_shapes_dtypes_and_frozen():
    rng = np.random.default_rng(21)
    x, y = [rng.normal(size=30) for _ in range(4)], [rng.normal(size=20) for _ in range(4)]
    res = ks_2samp_many(x, y)
    assert isinstance(res, KsManyResult)
    assert res.statistic.dtype == np.float64 and res.pvalue.dtype == np.float64
    assert res.n1.dtype == np.int64 and res.n2.dtype == np.int64
    assert res.statistic_location.dtype == np.float64 and res.statistic_sign.dtype == np.int8
    for field in dataclasses.fields(res):
        assert getattr(res, field.name).shape == (4,)
        assert not getattr(res, field.name).flags.writeable
    d, p = res
    np.testing.assert_array_equal(d, res.statistic)
    np.testing.assert_array_equal(p, res.pvalue)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.statistic = None


# --------------------------------------------------------------------------------------------
# ks_pvalue
# --------------------------------------------------------------------------------------------


def test_ks_pvalue_matches_scipy_asymp_over_a_grid():
    sizes = [(1, 2), (3, 3), (7, 100), (250, 251), (4_000, 9_000), (10_000, 10_001), (30_000, 500)]
    for n1, n2 in sizes:
        d = np.linspace(0, 1, 41)
        p = ks_pvalue(d, n1, n2)
        ref_en = np.round(float(n1) * float(n2) / (n1 + n2))
        ref = np.clip(stats.kstwo.sf(d, ref_en), 0, 1)
        np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12)
        assert (p >= 0).all() and (p <= 1).all()


def test_ks_pvalue_scalar_broadcast_and_nan():
    p = ks_pvalue(0.1, 100, 200)
    assert isinstance(p, np.float64)
    out = ks_pvalue([[0.1], [0.2]], [100, 300, 0], 200)
    assert out.shape == (2, 3) and np.isnan(out[:, 2]).all()
    assert out[0, 0] == p
    assert np.isnan(ks_pvalue(np.nan, 10, 10)) and np.isnan(ks_pvalue(0.5, 1, 1))
    assert ks_pvalue(0.0, 50, 60) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        ks_pvalue(0.1, -1, 10)


def test_ks_pvalue_is_symmetric_in_sizes():
    d = np.linspace(0, 0.5, 11)
    np.testing.assert_array_equal(ks_pvalue(d, 120, 3_000), ks_pvalue(d, 3_000, 120))


# --------------------------------------------------------------------------------------------
# histogram path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_histogram_exact_on_integer_scores(seed):
    """Judge scores 1..10, one bin per value: D (and p) equal scipy's on the raw scores."""
    rng = np.random.default_rng(seed)
    n_series = 30
    n1, n2 = rng.integers(1, 400, n_series), rng.integers(1, 400, n_series)
    probs = rng.dirichlet(np.ones(10), size=n_series)
    x = [rng.choice(np.arange(1, 11), size=n, p=p) for n, p in zip(n1, probs)]
    y = [rng.choice(np.arange(1, 11), size=n, p=p if s % 3 else probs[(s + 1) % n_series])
         for s, (n, p) in enumerate(zip(n2, probs))]
    h1 = np.stack([np.bincount(a, minlength=11)[1:] for a in x])
    h2 = np.stack([np.bincount(b, minlength=11)[1:] for b in y])
    d, m1, m2 = ks_from_histograms(h1, h2)
    res = ks_2samp_hist_test(h1, h2, edges=np.arange(0.5, 11))
    np.testing.assert_array_equal(m1, n1)
    np.testing.assert_array_equal(m2, n2)
    for s in range(n_series):
        ref = scipy_ks(x[s], y[s])
        assert d[s] == ref.statistic and res.statistic[s] == ref.statistic
        assert res.statistic_sign[s] == ref.statistic_sign
        if np.isnan(ref.pvalue):
            assert np.isnan(res.pvalue[s])
        else:
            assert abs(res.pvalue[s] - ref.pvalue) <= 1e-12
        # the first bin attaining D is at or below scipy's location (smallest x, else y, value)
        assert res.statistic_location[s] - 0.5 <= ref.statistic_location


@pytest.mark.parametrize("bins", [128, 256, 1024])
def test_histogram_exact_on_finer_grid(bins):
    """Scores k / 20 on [0, 1], binned with many more bins than values, via histogram_counts."""
    rng = np.random.default_rng(bins)
    n_series = 25
    n1, n2 = rng.integers(1, 600, n_series), rng.integers(1, 600, n_series)
    x = [rng.integers(0, 21, n) / 20 for n in n1]
    y = [np.minimum(rng.integers(0, 21, n) + (s % 2), 20) / 20 for s, n in enumerate(n2)]
    sid1, sid2 = np.repeat(np.arange(n_series), n1), np.repeat(np.arange(n_series), n2)
    h1 = histogram_counts(np.concatenate(x), sid1, n_series, 0.0, 1.0, bins)
    h2 = histogram_counts(np.concatenate(y), sid2, n_series, 0.0, 1.0, bins)
    res = ks_2samp_hist_test(h1, h2)
    raw = ks_2samp_many(x, y)
    np.testing.assert_array_equal(res.statistic, raw.statistic)
    np.testing.assert_array_equal(res.statistic_sign, raw.statistic_sign)
    np.testing.assert_array_equal(res.pvalue, raw.pvalue)
    assert_matches_scipy(x, y, raw)


# Largest D_raw - D_hist measured over 5,220 series per bin count (Beta(2, 5), Beta(0.5, 0.5),
# Beta(5, 1.5); unshifted and shifted) -- the table in ks_from_histograms' Notes.
MEASURED_MAX_GAP = {
    (128, 200): 0.0250, (128, 1000): 0.0220, (128, 5000): 0.0136,
    (256, 200): 0.0200, (256, 1000): 0.0130, (256, 5000): 0.0066,
    (1024, 200): 0.0100, (1024, 1000): 0.0060, (1024, 5000): 0.0024,
}


@pytest.mark.parametrize("bins", [128, 256, 1024])
@pytest.mark.parametrize("n", [200, 1000, 5000])
def test_histogram_error_on_continuous_data_is_bounded(bins, n):
    rng = np.random.default_rng([bins, n])
    reps = {200: 60, 1000: 30, 5000: 10}[n]
    for a, b in [(2, 5), (0.5, 0.5), (5, 1.5)]:
        for shift in (0.0, 0.05):
            x = rng.beta(a, b, size=(reps, n))
            y = shift + (1 - shift) * rng.beta(a, b, size=(reps, n))
            raw = ks_2samp_many(x, y)
            sid = np.repeat(np.arange(reps), n)
            h1 = histogram_counts(x.ravel(), sid, reps, 0.0, 1.0, bins)
            h2 = histogram_counts(y.ravel(), sid, reps, 0.0, 1.0, bins)
            hist = ks_2samp_hist_test(h1, h2)
            gap = raw.statistic - hist.statistic
            assert (gap >= 0).all()  # exact: the bin edges are a subset of scipy's points
            slack = np.maximum(h1 / n, h2 / n).max(axis=1)
            assert (raw.statistic <= hist.statistic + slack).all()  # the guaranteed sandwich
            assert gap.max() <= 1.5 * MEASURED_MAX_GAP[bins, n]
            assert (hist.pvalue >= raw.pvalue - 1e-12).all()  # conservative


def test_histogram_sample_check_against_scipy_directly():
    rng = np.random.default_rng(30)
    x, y = rng.beta(2, 5, 3_000), rng.beta(2, 5, 2_000) * 0.97 + 0.03
    h1 = histogram_counts(x, np.zeros(x.size, int), 1, 0.0, 1.0, 256)[0]
    h2 = histogram_counts(y, np.zeros(y.size, int), 1, 0.0, 1.0, 256)[0]
    d, n1, n2 = ks_from_histograms(h1, h2)
    ref = scipy_ks(x, y)
    assert d.shape == () and int(n1) == 3_000 and int(n2) == 2_000
    assert 0 <= ref.statistic - d <= 0.02


def test_histogram_shapes_dtypes_and_empty_rows():
    h1 = np.array([[1, 2, 3], [0, 0, 0], [4, 0, 0]])
    h2 = np.array([[3, 2, 1], [1, 1, 1], [0, 0, 0]])
    d, n1, n2 = ks_from_histograms(h1, h2)
    assert d.shape == (3,) and d.dtype == np.float64 and n1.dtype == np.int64
    assert np.isnan(d[1:]).all()
    # cumulative shares [1/6, 3/6, 1] vs [3/6, 5/6, 1]: the raw data are on the grid 0, 1, 2
    assert d[0] == scipy_ks([0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 2]).statistic
    res = ks_2samp_hist_test(h1, h2, edges=[0, 1, 2, 3])
    assert np.isnan(res.pvalue[1:]).all() and np.isnan(res.statistic_location[1:]).all()
    np.testing.assert_array_equal(res.statistic_sign, [-1, 0, 0])
    assert res.statistic_location[0] == 1.0  # upper edge of bin 0
    assert np.isnan(ks_2samp_hist_test(h1, h2).statistic_location).all()
    d1, m1, m2 = ks_from_histograms([1, 2, 3], [3, 2, 1])
    assert d1.shape == () and d1 == d[0] and m1 == 6 and m2 == 6
    df, f1, _ = ks_from_histograms(h1[:1].astype(float), h2[:1].astype(float))
    assert df[0] == d[0] and f1.dtype == np.float64


def test_histogram_bad_inputs_raise():
    with pytest.raises(ValueError, match="same shape"):
        ks_from_histograms(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="same shape"):
        ks_from_histograms(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        ks_from_histograms([1, -1, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        ks_from_histograms([1.0, np.nan, 2.0], [1, 1, 1])
    with pytest.raises(ValueError, match="edges"):
        ks_2samp_hist_test([1, 2], [2, 1], edges=[0, 1])


def test_histogram_counts_matches_numpy_histogram():
    rng = np.random.default_rng(31)
    n_series, bins, lo, hi = 6, 37, -1.5, 2.25
    values = np.r_[rng.uniform(lo, hi, 5_000), np.linspace(lo, hi, 38), [lo, hi]]  # edges too
    series = rng.integers(0, n_series, values.size)
    counts = histogram_counts(values, series, n_series, lo, hi, bins)
    assert counts.shape == (n_series, bins) and counts.dtype == np.int64
    for s in range(n_series):
        expected = np.histogram(values[series == s], bins, (lo, hi))[0]
        np.testing.assert_array_equal(counts[s], expected)


def test_histogram_counts_clips_out_of_range_and_validates():
    values = np.array([-5.0, -np.inf, 0.0, 0.5, 1.0, 7.0, np.inf])
    counts = histogram_counts(values, np.zeros(7, int), 1, 0.0, 1.0, 4)
    np.testing.assert_array_equal(counts, [[3, 0, 1, 3]])
    assert histogram_counts([], np.array([], int), 3, 0, 1, 2).shape == (3, 2)
    with pytest.raises(ValueError, match="NaN"):
        histogram_counts([np.nan], [0], 1, 0, 1, 4)
    with pytest.raises(ValueError, match="series indices"):
        histogram_counts([0.5], [1], 1, 0, 1, 4)
    with pytest.raises(ValueError, match="lo < hi"):
        histogram_counts([0.5], [0], 1, 1, 1, 4)
    with pytest.raises(ValueError, match="bins"):
        histogram_counts([0.5], [0], 1, 0, 1, 0)
    with pytest.raises(ValueError, match="integers"):
        histogram_counts([0.5], [0.0], 1, 0, 1, 4)


# -- the Kolmogorov-limit screen --------------------------------------------------------------


def _screen_factor(n):
    from detectors.ks import SCREEN_FACTORS

    f = np.inf
    for n_min, factor in SCREEN_FACTORS:
        if n >= n_min:
            f = factor
    return f


@pytest.mark.parametrize("n", list(range(30, 131, 1)) + [150, 200, 300, 500, 1000, 3000, 10_000, 50_000])
def test_screen_factor_bounds_scipy_kstwo(n):
    """The screen's premise, against scipy: finite-n sf >= limit / factor wherever it is used."""
    from scipy import special

    from detectors.ks import SCREEN_MIN_LEVEL

    factor = _screen_factor(n)
    lam = np.linspace(0.2, 7.0, 200)
    d = lam / np.sqrt(n)
    d = d[d < 1]
    limit = special.kolmogorov(np.sqrt(n) * d)
    used = limit >= factor * SCREEN_MIN_LEVEL
    exact = stats.kstwo.sf(d[used], n)
    assert np.all(exact * factor >= limit[used])


def test_screen_never_skips_a_rejection():
    """Wherever ks_pvalue_at_least says p >= level, scipy's ks_2samp agrees (random cases)."""
    from detectors.ks import ks_pvalue_at_least

    rng = np.random.default_rng(5)
    n1 = rng.integers(20, 3000, 400)
    n2 = rng.integers(20, 3000, 400)
    en = n1 * n2 / (n1 + n2)
    d = rng.uniform(0.2, 6.0, 400) / np.sqrt(en)
    level = 10.0 ** rng.uniform(-9, -1, 400)
    sure = ks_pvalue_at_least(d, n1, n2, level)
    p = ks_pvalue(d, n1, n2)
    assert sure.sum() > 100 and (~sure).sum() > 50  # both sides exercised
    assert np.all(p[sure] >= level[sure])
    # and it is cheap to be right: near-misses are left to the exact computation
    assert not ks_pvalue_at_least(0.9, 10, 10, 0.5)  # en < 30: never screened
    assert not ks_pvalue_at_least(0.01, 5000, 5000, 1e-12)  # below SCREEN_MIN_LEVEL


def test_ks_shift_findings_are_the_same_without_the_screen(monkeypatch):
    """The screen only saves work: KsShift gives the same findings when it never screens."""
    from benchmarks.workloads import keyed_scores
    from detectors import shift

    series, t, x = keyed_scores(300, 22, 60, seed=3, shift_at=0.7)
    calls = []
    screened = shift.KsShift(min_n=40).update_many(series, t, x)
    real = shift.ks_pvalue

    def counting(d, n1, n2):
        calls.append(np.size(d))
        return real(d, n1, n2)

    monkeypatch.setattr(shift, "ks_pvalue", counting)
    monkeypatch.setattr(shift, "ks_pvalue_at_least", lambda d, *a: np.zeros(np.shape(d), bool))
    unscreened = shift.KsShift(min_n=40).update_many(series, t, x)
    assert len(screened) > 20
    assert screened == unscreened
    assert sum(calls) > len(screened)  # without the screen, more exact p-values were needed
