"""Every detector passes the same contract checks.

* batch-size invariance: one batch of 10,000 events, 10,000 batches of one and random batch
  sizes give the same findings;
* exact state round trip: restoring a mid-stream ``state_dict`` and continuing gives the same
  findings as the uninterrupted run;
* seeded determinism: two fresh instances give the same findings.

Every seeded stream has a change at event 6,000 on one series, and every detector must report it
(a check on a detector that never fires proves nothing).

The embedding stream is plain numpy: nothing here imports torch, faiss or sentence_transformers
(``test_no_embedding_stack_is_imported`` checks it in a fresh interpreter).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectors.centroid import CentroidShift
from detectors.changes import ChangeTracker
from detectors.drop import PercentDrop
from detectors.floor import Floor
from detectors.rate import RateRatio
from detectors.river_adapter import RiverDrift
from detectors.sequential import MeanCusum, RateCusum
from detectors.shift import KsShift

N = 10_000
FAST = dict(bucket=60.0, lateness=45.0)
DIM = 8  # embedding width of the "embedding" stream
HOME = np.eye(DIM)[0] + 0.5 * np.eye(DIM)[2]  # the golden centroid (not normalised: the detector does it)
AWAY = np.eye(DIM)[1]  # where series 1's queries go after event 6,000
CHANGED = {"score": 1, "flag": 2, "cat": 0, "embedding": 1}  # the series that changes in each stream


def stream(kind: str, seed: int = 0):
    """Three interleaved series, a change at event 6,000, slightly out of order in time.

    ``embedding``: ``x`` has ``DIM + 1`` columns, unit vectors near ``HOME`` (series 1's move
    toward ``AWAY`` after event 6,000) then each one's similarity to ``HOME`` (the stand-in for
    its nearest golden neighbour; NaN for about 5 % of them, and three all-zero rows, which the
    detector counts as invalid).
    """
    rng = np.random.default_rng(seed)
    series = rng.integers(0, 3, N)
    t = np.arange(N) * 0.6 + rng.uniform(-20, 20, N)  # jitter: some events are late
    t[rng.choice(N, 20, replace=False)] -= 400.0  # a few far too late
    after = np.arange(N) >= 6_000
    if kind == "score":
        x = np.clip(rng.normal(np.where(after & (series == 1), 0.6, 0.85), 0.08), 0, 1)
    elif kind == "flag":
        x = (rng.random(N) < np.where(after & (series == 2), 0.25, 0.03)).astype(float)
    elif kind == "embedding":
        home = HOME / np.linalg.norm(HOME)
        v = np.where((after & (series == 1))[:, None], AWAY, home) + rng.normal(0, 0.35, (N, DIM))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        sim = np.where(rng.random(N) < 0.05, np.nan, v @ home)
        x = np.column_stack([v, sim])
        x[rng.choice(N, 3, replace=False), :DIM] = 0.0
    else:  # categorical
        base = np.array(["h0", "h1", "h2"], dtype=object)[series]
        x = np.where(after & (series == 0), "h9", base).astype(object)
    return series, t, x


def _with_null(det):
    """A centroid detector with a null distribution, so its findings carry p-values."""
    rng = np.random.default_rng(11)
    det.set_null([50, 200], np.abs(rng.normal(0, [[0.02], [0.005]], (2, 400))))
    return det


DETECTORS = {
    "percent_drop_mean": (lambda: PercentDrop(stat="mean", window=600, baseline=1200, min_n=50, **FAST), "score"),
    "percent_drop_short_windows": (lambda: PercentDrop(stat="mean", window=600, baseline=1200, min_n=20,
                                                      short_windows=(120, 240), **FAST), "score"),
    "percent_drop_median": (lambda: PercentDrop(stat="median", window=600, baseline=1200, min_n=50, bins=128, **FAST), "score"),
    "rate_ratio": (lambda: RateRatio(window=600, baseline=1200, min_n=30, min_ref_n=100, **FAST), "flag"),
    "ks_shift": (lambda: KsShift(window=600, baseline=1200, min_n=50, bins=128, **FAST), "score"),
    "change_tracker": (lambda: ChangeTracker(), "cat"),
    "floor": (lambda: Floor(floor=0.75, window=600, min_n=30, **FAST), "score"),
    "floor_ceiling": (lambda: Floor(floor=0.1, below=False, window=600, min_n=30, resolve_after=1, **FAST), "flag"),
    "centroid_shift": (lambda: CentroidShift(centroid=tuple(HOME), dim=DIM, window=600, min_n=50, **FAST),
                       "embedding"),
    "centroid_shift_short_windows_null": (lambda: _with_null(CentroidShift(
        centroid=tuple(HOME), dim=DIM, window=1200, min_n=30, short_windows=(300,), coverage_sim=0.8,
        golden_n=500, **FAST)), "embedding"),
    "rate_cusum": (lambda: RateCusum(guard=300, baseline=1200, recovery=120, min_ref_n=100, min_rate=0.02, min_ref_span=600,
                                     false_alarm_rate=100.0, **FAST), "flag"),
    "mean_cusum": (lambda: MeanCusum(guard=300, baseline=1200, recovery=120, min_ref_n=100, min_ref_span=600,
                                     false_alarm_rate=100.0, **FAST), "score"),
    "river_adwin": (lambda: RiverDrift("adwin"), "score"),
    "river_page_hinkley": (lambda: RiverDrift("page_hinkley", {"threshold": 5.0}), "score"),
}


def run(det, series, t, x, sizes):
    out = []
    i = 0
    for k in sizes:
        out.extend(det.update_many(series[i:i + k], t[i:i + k], x[i:i + k]))
        i += k
    assert i == len(t)
    return out


def random_sizes(rng, n):
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(0, 700), n - sum(sizes))))
    return sizes


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_batch_size_invariance(name):
    make, kind = DETECTORS[name]
    series, t, x = stream(kind)
    whole = run(make(), series, t, x, [N])
    assert whole, "the seeded stream must produce findings, or the check proves nothing"
    ones = run(make(), series, t, x, [1] * N)
    rand = run(make(), series, t, x, random_sizes(np.random.default_rng(5), N))
    assert repr(ones) == repr(whole)
    assert repr(rand) == repr(whole)


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("cut", [1, 3_333, 6_100])
def test_state_round_trip(name, cut):
    make, kind = DETECTORS[name]
    series, t, x = stream(kind, seed=1)
    full = make()
    expected = run(full, series, t, x, [cut, N - cut])
    first = make()
    got = run(first, series[:cut], t[:cut], x[:cut], [cut])
    restored = type(first).from_state(first.state_dict())
    got += restored.update_many(series[cut:], t[cut:], x[cut:])
    assert repr(got) == repr(expected)
    # the state is a snapshot: continuing the original does not change the restored copy
    assert repr(type(first).from_state(first.state_dict()).state_dict().keys()) == repr(first.state_dict().keys())


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_seeded_determinism(name):
    make, kind = DETECTORS[name]
    series, t, x = stream(kind, seed=2)
    assert repr(run(make(), series, t, x, [N])) == repr(run(make(), series, t, x, [N]))


@pytest.mark.parametrize("name", ["percent_drop_mean", "rate_ratio", "ks_shift", "floor", "floor_ceiling",
                                  "centroid_shift", "centroid_shift_short_windows_null"])
def test_change_is_found_on_the_changed_series_only(name):
    make, kind = DETECTORS[name]
    series, t, x = stream(kind)
    found = run(make(), series, t, x, [N])
    firing = [f for f in found if f.status == "firing"]
    assert [f.series for f in firing] == [CHANGED[kind]]
    assert firing[0].at >= 6_000 * 0.6 - 60


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(n for n in DETECTORS if not n.startswith("river_")))
def test_every_stream_fires(name, seed):
    """Each seeded stream the checks above use makes the detector fire (river's, with no episodes, are
    held to it by ``test_batch_size_invariance`` on seed 0 only)."""
    make, kind = DETECTORS[name]
    found = run(make(), *stream(kind, seed), [N])
    assert any(f.status in ("firing", "info") for f in found), found


def test_centroid_findings_carry_the_evidence():
    series, t, x = stream("embedding")
    det = DETECTORS["centroid_shift_short_windows_null"][0]()
    found = run(det, series, t, x, [N])
    assert det.invalid == 3
    f = next(f for f in found if f.status == "firing")
    assert f.reference_kind == "golden" and f.statistic == "cosine_distance" and f.value >= f.threshold
    assert 0 < f.extra["similarity_known"] < f.window.n  # the NaN similarities are not counted
    assert f.extra["coverage"] < 0.5 and f.extra["null_p_value"] is not None


def test_no_embedding_stack_is_imported():
    """This module, on its own, runs the centroid detector without torch, faiss or sentence_transformers."""
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import test_conformance as m; "
            "assert m.run(m.DETECTORS['centroid_shift'][0](), *m.stream('embedding'), [m.N]); "
            "bad = [k for k in ('torch', 'faiss', 'sentence_transformers') if k in sys.modules]; "
            "assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
