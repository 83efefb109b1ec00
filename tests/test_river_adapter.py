"""Tests for detectors.river_adapter: RiverDrift against river's own detectors run in a plain loop."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import river

from detectors.base import Finding
from detectors.river_adapter import KINDS, RiverDrift

# Per kind: river params used in the tests (KSWIN's alpha lowered to keep false alarms rare).
PARAMS = {"adwin": {}, "page_hinkley": {}, "kswin": {"alpha": 1e-4}}
SEED = 3
# KSWIN runs a scipy KS test per event (~0.3 ms): its streams are kept short.
N_KSWIN = 1_500


def river_indices(kind, values, params=None, seed=SEED):
    """Detection indices of river's own detector fed ``values`` one by one."""
    kw = dict(params or {})
    if kind == "kswin":
        kw["seed"] = seed
    det = KINDS[kind](**kw)
    hits = []
    for i, v in enumerate(values):
        det.update(float(v))
        if det.drift_detected:
            hits.append(i)
    return hits


def mean_shift(seed, n=2000, at=1000, before=0.8, after=0.6, sd=0.05):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(before, sd, at), rng.normal(after, sd, n - at)]


def interleaved(seed, n=10_000, n_series=3):
    """``n`` events of ``n_series`` randomly interleaved series, each with a mean shift halfway."""
    rng = np.random.default_rng(seed)
    series = rng.integers(0, n_series, n).astype(np.int64)
    t = np.sort(rng.uniform(0, 86400, n))
    x = np.empty(n)
    for s in range(n_series):
        m = series == s
        k = int(m.sum())
        step = np.where(np.arange(k) < k // 2, 0.8, 0.8 - 0.1 * (s + 1))
        x[m] = rng.normal(step, 0.05)
    return series, t, x


def key(findings):
    """Findings as comparable tuples (NaN-safe)."""
    return [(f.series, f.status, f.at, f.episode_start, f.statistic, f.value, f.threshold,
             f.p_value, f.extra) for f in findings]


def feed_in_batches(det, series, t, x, sizes):
    out, i = [], 0
    for size in sizes:
        out += det.update_many(series[i:i + size], t[i:i + size], x[i:i + size])
        i += size
    assert i == series.size
    return out


def random_sizes(rng, n, hi=500):
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(0, hi)))  # empty batches included
    sizes[-1] -= sum(sizes) - n
    return sizes


# --- 1. same detection indices as river ------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_indices_match_river(kind):
    x = mean_shift(0) if kind != "kswin" else mean_shift(0, after=0.7, sd=0.02)
    expected = river_indices(kind, x, PARAMS[kind])
    assert expected and expected[0] >= 1000  # river detects the change (and nothing before it)
    det = RiverDrift(kind, PARAMS[kind], seed=SEED)
    t = 1.7e9 + np.arange(x.size, dtype=np.float64)
    f = det.update_many(np.zeros(x.size, np.int64), t, x)
    assert [g.extra["index"] for g in f] == expected
    for g in f:
        k = g.extra["index"]
        assert isinstance(g, Finding) and g.series == 0 and g.status == "drift"
        assert g.at == g.episode_start == t[k] and g.value == x[k] and g.statistic == kind
        assert (g.p_value is not None) == (kind == "kswin")
    assert det.counts == {0: x.size}


@pytest.mark.skipif(river.__version__ != "0.26.1", reason="indices pinned for river 0.26.1")
def test_expected_river_indices():
    """The seeded streams' detection indices under river 0.26.1 (documents the peers' delays)."""
    x = mean_shift(0)
    assert river_indices("adwin", x) == [1055]
    assert river_indices("page_hinkley", x) == [1299]
    assert river_indices("kswin", mean_shift(0, after=0.7, sd=0.02), PARAMS["kswin"]) == [1015]


def test_threshold_and_p_value():
    x = mean_shift(0)
    z = np.zeros(x.size, np.int64)
    t = np.arange(x.size, dtype=np.float64)
    assert RiverDrift("adwin", {"delta": 1e-3}).update_many(z, t, x)[0].threshold == 1e-3
    assert RiverDrift("page_hinkley").update_many(z, t, x)[0].threshold == 50.0
    f = RiverDrift("kswin", {"alpha": 1e-4}, seed=SEED).update_many(z, t, x)
    assert f and all(g.threshold == 1e-4 and 0 <= g.p_value <= 1e-4 for g in f)


def test_params_reach_river():
    x = mean_shift(0)
    z, t = np.zeros(x.size, np.int64), np.arange(x.size, dtype=np.float64)
    params = {"clock": 1, "delta": 0.01}
    got = [g.extra["index"] for g in RiverDrift("adwin", params).update_many(z, t, x)]
    assert got == river_indices("adwin", x, params)
    assert got != river_indices("adwin", x)  # clock=1 checks every event: detects earlier
    params = {"threshold": 5.0, "mode": "down"}
    got = [g.extra["index"] for g in RiverDrift("page_hinkley", params).update_many(z, t, x)]
    assert got == river_indices("page_hinkley", x, params)


def test_non_finite_values_are_skipped():
    x = mean_shift(1)
    x_nan = x.copy()
    holes = np.random.default_rng(1).choice(x.size, 50, replace=False)
    x_nan[holes] = np.nan
    x_nan[holes[:5]] = np.inf
    det = RiverDrift("adwin")
    f = det.update_many(np.zeros(x.size, np.int64), np.arange(x.size, dtype=float), x_nan)
    assert [g.extra["index"] for g in f] == river_indices("adwin", x_nan[np.isfinite(x_nan)])
    assert det.counts[0] == x.size - 50


# --- 2. interleaved series ------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_interleaved_series_match_separate_runs(kind):
    n = 10_000 if kind != "kswin" else N_KSWIN
    series, t, x = interleaved(5, n=n)
    series = series * 7 + 2  # arbitrary, non-contiguous series ids
    f = RiverDrift(kind, PARAMS[kind], seed=SEED).update_many(series, t, x)
    assert [g.at for g in f] == sorted(g.at for g in f)  # findings in event order
    for s in np.unique(series):
        expected = river_indices(kind, x[series == s], PARAMS[kind])
        assert [g.extra["index"] for g in f if g.series == s] == expected
        pos = np.flatnonzero(series == s)
        assert [g.at for g in f if g.series == s] == [t[pos[k]] for k in expected]
    if kind != "kswin":
        assert {g.series for g in f} == set(np.unique(series).tolist())  # each shift detected


def test_series_created_lazily():
    det = RiverDrift("adwin")
    det.update_many(np.array([4, 4, 9]), np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.6, 0.7]))
    assert sorted(det.detectors) == [4, 9] and det.counts == {4: 2, 9: 1}
    assert det.update_many(np.array([], np.int64), np.array([]), np.array([])) == []


# --- 3. batch-size invariance ---------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batch_size_invariance(kind):
    n = 10_000 if kind != "kswin" else N_KSWIN
    series, t, x = interleaved(11, n=n)
    one = RiverDrift(kind, PARAMS[kind], seed=SEED).update_many(series, t, x)
    assert one
    singles = feed_in_batches(RiverDrift(kind, PARAMS[kind], seed=SEED), series, t, x, [1] * n)
    rng = np.random.default_rng(12)
    mixed = feed_in_batches(RiverDrift(kind, PARAMS[kind], seed=SEED), series, t, x,
                            random_sizes(rng, n))
    assert key(one) == key(singles) == key(mixed)


# --- 4. state round trip and determinism ----------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_round_trip(kind):
    n = 6_000 if kind != "kswin" else N_KSWIN
    series, t, x = interleaved(21, n=n)
    full = RiverDrift(kind, PARAMS[kind], seed=SEED).update_many(series, t, x)
    assert full
    first_hit = int(np.searchsorted(t, full[0].at))
    # a random cut, and a cut right after a detection (river resets on the next update)
    for cut in (int(np.random.default_rng(22).integers(1, n)), first_hit + 1):
        det = RiverDrift(kind, PARAMS[kind], seed=SEED)
        head = det.update_many(series[:cut], t[:cut], x[:cut])
        state = det.state_dict()
        assert state["type"] == "RiverDrift"
        assert state["params"] == {"kind": kind, "params": PARAMS[kind], "seed": SEED}
        assert state["series"].dtype == np.int64 and state["counts"].dtype == np.int64
        assert all(isinstance(b, bytes) for b in state["detectors"])
        state = pickle.loads(pickle.dumps(state))  # survives serialization
        restored = RiverDrift.from_state(state)
        assert restored.counts == det.counts and repr(restored) == repr(det)
        tail = restored.update_many(series[cut:], t[cut:], x[cut:])
        assert key(head + tail) == key(full)
        # taking the state does not disturb the original
        assert key(head + det.update_many(series[cut:], t[cut:], x[cut:])) == key(full)


def test_state_is_a_snapshot():
    series, t, x = interleaved(31, n=3_000)
    det = RiverDrift("adwin")
    det.update_many(series[:1500], t[:1500], x[:1500])
    state = det.state_dict()
    later = det.update_many(series[1500:], t[1500:], x[1500:])
    assert key(RiverDrift.from_state(state).update_many(series[1500:], t[1500:], x[1500:])) \
        == key(later)


def test_from_state_rejects_other_states():
    with pytest.raises(ValueError, match="not RiverDrift"):
        RiverDrift.from_state({"type": "PercentDrop", "params": {}})
    det = RiverDrift("adwin")
    det.update_many(np.array([0]), np.array([0.0]), np.array([0.5]))
    state = det.state_dict()
    state["params"] = {"kind": "page_hinkley", "params": {}, "seed": 0}
    with pytest.raises(ValueError, match="expected PageHinkley"):
        RiverDrift.from_state(state)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deterministic(kind):
    series, t, x = interleaved(41, n=3_000 if kind != "kswin" else N_KSWIN)
    a = RiverDrift(kind, PARAMS[kind], seed=SEED).update_many(series, t, x)
    b = RiverDrift(kind, PARAMS[kind], seed=SEED).update_many(series, t, x)
    assert a and key(a) == key(b)


# --- 5. validation --------------------------------------------------------------------------

def test_bad_kind():
    with pytest.raises(ValueError, match=r"kind must be one of \['adwin', 'kswin', 'page_hinkley'\]"):
        RiverDrift("cusum")


def test_bad_params():
    with pytest.raises(ValueError, match="unknown ADWIN parameter.*'threshold'.*accepted"):
        RiverDrift("adwin", {"threshold": 3})
    with pytest.raises(ValueError, match="seed"):
        RiverDrift("kswin", {"seed": 1})
    with pytest.raises(ValueError, match="seed must be an int"):
        RiverDrift("kswin", seed=None)
    with pytest.raises(ValueError):  # river's own value check, at construction
        RiverDrift("page_hinkley", {"mode": "sideways"})
    with pytest.raises(ValueError, match="one length"):
        RiverDrift("adwin").update_many(np.zeros(3, np.int64), np.zeros(2), np.zeros(3))


def test_attributes_and_repr():
    det = RiverDrift("kswin", {"alpha": 1e-3, "window": iter([0.1, 0.2])}, seed=7)
    assert (det.kind, det.seed) == ("kswin", 7)
    assert det.params == {"alpha": 1e-3, "window": [0.1, 0.2]}
    assert repr(det) == "RiverDrift(kind='kswin', params={'alpha': 0.001, 'window': [0.1, 0.2]}, seed=7)"
    assert RiverDrift().params == {} and RiverDrift().kind == "adwin"
