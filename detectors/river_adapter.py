"""River's ADWIN, Page-Hinkley and KSWIN drift detectors behind the detector contract.

These are the peers the benchmarks compare against; wrapped here so that they can run on score
series like any other detector (one river detector per series, findings as :class:`Finding`).

Examples
--------
A score whose mean falls from 0.80 to 0.60 at event 1000; ADWIN notices shortly after:

>>> import numpy as np
>>> from detectors.river_adapter import RiverDrift
>>> rng = np.random.default_rng(0)
>>> x = np.r_[rng.normal(0.8, 0.05, 1000), rng.normal(0.6, 0.05, 1000)]
>>> t = np.arange(x.size, dtype=np.float64)
>>> det = RiverDrift(kind="adwin")
>>> f = det.update_many(np.zeros(x.size, np.int64), t, x)
>>> [(g.status, g.extra["index"], g.at) for g in f]
[('drift', 1055, 1055.0)]
"""

from __future__ import annotations

import inspect
import numbers
import pickle
from typing import Any

import numpy as np
from river import drift as river_drift

from detectors.base import Detector, Finding

__all__ = ["RiverDrift", "KINDS"]

#: ``kind`` -> river class. river 0.26.1 signatures:
#: ``ADWIN(delta=0.002, clock=32, max_buckets=5, min_window_length=5, grace_period=10)``,
#: ``PageHinkley(min_instances=30, delta=0.005, threshold=50.0, alpha=0.9999, mode="both")``,
#: ``KSWIN(alpha=0.005, window_size=100, stat_size=30, seed=None, window=None)``.
KINDS: dict[str, type] = {
    "adwin": river_drift.ADWIN,
    "page_hinkley": river_drift.PageHinkley,
    "kswin": river_drift.KSWIN,
}

# The river parameter reported as a finding's ``threshold``.
_THRESHOLD_PARAM = {"adwin": "delta", "page_hinkley": "threshold", "kswin": "alpha"}


class RiverDrift(Detector):
    """A river drift detector (ADWIN, Page-Hinkley or KSWIN) run separately on every series.

    Parameters
    ----------
    kind : {"adwin", "page_hinkley", "kswin"}
        Which river detector: :class:`river.drift.ADWIN`, :class:`river.drift.PageHinkley` or
        :class:`river.drift.KSWIN`.
    params : dict, optional
        Keyword arguments of the river constructor (see ``KINDS`` for river 0.26.1's); river's
        defaults where absent. Unknown names raise ``ValueError``; river validates the values.
        For KSWIN, ``seed`` is not accepted here: use the ``seed`` argument.
    seed : int
        Seed of KSWIN's random subsampling (every series' KSWIN gets this seed, and river
        re-seeds it after each detection), so runs are deterministic. ADWIN and Page-Hinkley
        are deterministic and ignore it.

    Notes
    -----
    Each series gets its own river detector, created on the first event of that series. Events
    are fed one at a time, in the order given to :meth:`update_many` (river has no notion of
    event time, so out-of-order events are not reordered); a finding is emitted for every event
    after which river reports ``drift_detected``. River then resets that detector on its next
    update, as it does when used directly. Non-finite values are skipped: they are not fed to
    river and do not count in ``extra["index"]``.

    Each detector keeps river's own null hypothesis and decision rule:

    * ADWIN -- H0: the mean is constant over the adaptive window. Every ``clock`` events, drift
      when two sub-windows' means differ by more than the Hoeffding-type bound at ``delta``.
    * Page-Hinkley -- H0: the mean is constant. Drift when the cumulative deviation from the
      running (faded by ``alpha``) mean, less ``delta`` per event, exceeds its running
      extremum by more than ``threshold``, after ``min_instances`` events.
    * KSWIN -- H0: the last ``stat_size`` values and ``stat_size`` values drawn from the older
      part of a ``window_size`` window share a distribution. Drift when the two-sample KS test
      gives ``p <= alpha`` and ``D > 0.1``.

    Findings have ``status="drift"``, ``at = episode_start =`` the event's time,
    ``statistic=kind``, ``value`` the event's value, ``threshold`` river's ``delta`` (ADWIN),
    ``threshold`` (Page-Hinkley) or ``alpha`` (KSWIN), ``p_value`` KSWIN's KS p-value (else
    None) and ``extra={"index": k}``, ``k`` the 0-based position of the event in its series'
    own stream -- the index river's own loop would report.

    The per-event Python loop is river's cost (these detectors are per-event by design), not
    that of this package's batched detectors; it is kept as thin as possible so that benchmark
    timings measure river.

    The state holds each series' river detector as a pickle; load state only from trusted
    storage.
    """

    _params = ("kind", "params", "seed")
    kind: str
    _cls: type
    _kwargs: dict[str, Any]
    _threshold: float

    def __init__(self, kind: str = "adwin", params: dict | None = None, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        params = dict(params or {})
        cls = KINDS[kind]
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        if kind == "kswin":
            if "seed" in params:
                raise ValueError("pass KSWIN's seed as RiverDrift(seed=...), not in params")
            accepted.remove("seed")
            if params.get("window") is not None:
                params["window"] = list(params["window"])  # an iterator would be used up
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} parameter(s) {unknown}; "
                             f"accepted: {accepted}")
        self.kind = kind
        self.params = params
        self.seed = int(seed)
        self._cls = cls
        self._kwargs = {**params, "seed": self.seed} if kind == "kswin" else dict(params)
        proto = cls(**self._kwargs)  # let river validate the values now, not on first event
        self._threshold = float(getattr(proto, _THRESHOLD_PARAM[kind]))
        self.detectors: dict[int, Any] = {}
        self.counts: dict[int, int] = {}

    def update_many(self, series, t, x) -> list[Finding]:
        """Feed a batch of events in order; findings in event order."""
        series = np.asarray(series, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if not (series.shape == t.shape == x.shape and series.ndim == 1):
            raise ValueError(f"series, t and x must be 1-d of one length, got shapes "
                             f"{series.shape}, {t.shape}, {x.shape}")
        keep = np.isfinite(x)
        if not keep.all():
            series, t, x = series[keep], t[keep], x[keep]
        if series.size == 0:
            return []
        # Group by series (stable, so each series keeps its event order); river sees, per
        # series, exactly the sequence a plain loop over that series would give it.
        uniq, inverse = np.unique(series, return_inverse=True)
        if uniq.size == 1:
            groups = [(int(uniq[0]), np.arange(series.size))]
        else:
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(uniq.size + 1))
            groups = [(int(s), order[bounds[j]:bounds[j + 1]]) for j, s in enumerate(uniq)]
        kswin = self.kind == "kswin"
        hits: list[tuple] = []  # (position in batch, series, index in series, p-value)
        for s, idx in groups:
            det = self.detectors.get(s)
            if det is None:
                det = self.detectors[s] = self._cls(**self._kwargs)
                self.counts[s] = 0
            start = self.counts[s]
            update = det.update
            for j, v in enumerate(x[idx].tolist()):
                update(v)
                if det.drift_detected:
                    hits.append((int(idx[j]), s, start + j, det.p_value if kswin else None))
            self.counts[s] = start + idx.size
        if not hits:
            return []
        hits.sort(key=lambda h: h[0])
        return [Finding(series=s, status="drift", at=float(t[i]), episode_start=float(t[i]),
                        statistic=self.kind, value=float(x[i]), threshold=self._threshold,
                        p_value=None if p is None else float(p), extra={"index": k})
                for i, s, k, p in hits]

    def state_dict(self) -> dict[str, Any]:
        keys = list(self.detectors)
        return {
            "type": type(self).__name__,
            "params": self.get_params(),
            "series": np.array(keys, dtype=np.int64),
            "counts": np.array([self.counts[s] for s in keys], dtype=np.int64),
            "detectors": [pickle.dumps(self.detectors[s], protocol=pickle.HIGHEST_PROTOCOL)
                          for s in keys],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RiverDrift:
        if state.get("type") != cls.__name__:
            raise ValueError(f"state is for {state.get('type')!r}, not {cls.__name__}")
        obj = cls(**state["params"])
        series = np.asarray(state["series"], dtype=np.int64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        blobs = list(state["detectors"])
        if not series.size == counts.size == len(blobs):
            raise ValueError("series, counts and detectors of the state differ in length")
        for s, n, blob in zip(series.tolist(), counts.tolist(), blobs):
            det = pickle.loads(blob)
            if type(det) is not obj._cls:
                raise ValueError(f"state holds a {type(det).__name__} for series {s}, "
                                 f"expected {obj._cls.__name__}")
            obj.detectors[s] = det
            obj.counts[s] = int(n)
        return obj
