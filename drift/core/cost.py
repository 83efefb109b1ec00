"""Requests out of score events: one cost and one quality per trace, for the cost rules.

Score events repeat a request's ``cost_usd`` on every dimension, so spend cannot be summed over
events. :class:`TraceCost` gathers the score events of each ``trace_id`` into one **request
record**: its cost (the first ``cost_usd`` seen), its quality (the mean of its quality dimensions
on [0, 1], higher is better, or the score of one pass/fail ``quality_dimension``), its model (the
first one seen) and its time (its newest event). Records are kept per (app, intent) family and
released in event time:

* a family has its own clock (the newest score event time seen for it); an event more than
  ``lateness`` behind it is *late for cost* and not counted (``cost.late``);
* a record is released once the family's clock is more than ``2 * lateness`` past the record's
  newest event: by then any further event of the trace would be late;
* an event more than ``lateness`` after the newest event of its open record starts a new record
  (a trace scored again much later counts as another request).

What a record holds therefore depends only on the order of the events, not on how they were
batched, and records leave a family in event-time order. Records without a cost or without any
quality score are counted (``cost.no_cost``, ``cost.no_quality``) and not used; events without a
``trace_id`` cannot be grouped and are counted (``cost.no_trace_id``).

>>> import numpy as np
>>> tc = TraceCost(lateness=600.0)
>>> fam = np.zeros(4, np.int64)
>>> t = np.array([0.0, 0.0, 10.0, 10.0])
>>> tc.offer(fam, t, np.array(["a", "a", "b", "b"], object), np.array([0.01, 0.01, 0.02, 0.02]),
...          np.array([0.8, 0.6, 1.0, np.nan]), np.array(["m", "m", "m", "m"], object))
>>> tc.release()[0].size                     # the family's clock has not moved on yet
0
>>> tc.offer(fam[:1], np.array([2000.0]), np.array(["c"], object), np.array([0.03]),
...          np.array([0.5]), np.array(["m"], object))
>>> fams, times, x = tc.release()
>>> x.tolist()                               # cost, quality, model code of traces a and b
[[0.01, 0.7, 0.0], [0.02, 1.0, 0.0]]
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from detectors.windows import EventClock

__all__ = ["TraceCost"]

# record layout: [family, t_newest, cost, quality sum, quality count, model code]
_F, _T, _C, _QS, _QN, _M = range(6)


class TraceCost:
    """Request records from score events (see the module docstring)."""

    def __init__(self, lateness: float = 600.0, max_open: int = 1_000_000):
        self.lateness = float(lateness)
        self.max_open = int(max_open)
        self.clock = EventClock(86400.0, self.lateness)  # per family: only its newest time is used
        self.open: dict[str, list] = {}
        self.models: list[str] = []
        self._model_ids: dict[str, int] = {}
        self.counts: Counter = Counter()
        self._ready: list[list] = []  # records closed by a later event of their trace, or evicted

    def model_code(self, name: Any) -> int:
        if name is None:
            return -1
        code = self._model_ids.get(name)
        if code is None:
            code = self._model_ids[name] = len(self.models)
            self.models.append(name)
        return code

    def model_name(self, code: Any) -> str | None:
        if code is None or not 0 <= int(code) < len(self.models):
            return None
        return self.models[int(code)]

    def offer(self, fam: np.ndarray, t: np.ndarray, trace_ids, cost: np.ndarray, quality: np.ndarray,
              model) -> None:
        """Score events in arrival order: family ids, times, trace ids (None where absent), the
        request's cost (NaN where absent), the event's quality contribution (NaN for events that
        are not quality scores) and model names (None where absent)."""
        if fam.size == 0:
            return
        late = self.clock.observe(fam, t)
        self.counts["cost.late"] += int(late.sum())
        tids = np.asarray(trace_ids, dtype=object)
        has = np.not_equal(tids, None)  # type: ignore[call-overload]
        self.counts["cost.no_trace_id"] += int((~has & ~late).sum())
        keep = np.flatnonzero(has & ~late)
        if keep.size == 0:
            return
        tids, fam, t, cost, quality = tids[keep], fam[keep], t[keep], cost[keep], quality[keep]
        models = np.asarray(model, dtype=object)[keep]
        # runs of consecutive events of one trace (a request's dimensions usually arrive together)
        # are folded at once: the same record as event by event (see _fold_events) when the run
        # opens its record, spans at most the lateness and has at most 7 events; other runs go
        # event by event
        n = tids.size
        brk = np.ones(n, bool)
        if n > 1:
            brk[1:] = (tids[1:] != tids[:-1]) | (fam[1:] != fam[:-1])
        starts = np.flatnonzero(brk)
        ends = np.r_[starts[1:], n]
        t_max = np.maximum.reduceat(t, starts)
        t_min = np.minimum.reduceat(t, starts)
        isq = quality == quality
        # the sum of each run left to right, as the loop adds (np.add.reduceat may pair terms):
        # column j holds each run's j-th value (0.0 past its end: adding 0.0 changes nothing)
        length = ends - starts
        q_sum = np.zeros(starts.size)
        qv = np.where(isq, quality, 0.0)
        for j in range(min(int(length.max()), 7)):
            on = length > j
            q_sum[on] = q_sum[on] + qv[starts[on] + j]
        q_n = np.add.reduceat(isq.astype(np.int64), starts)
        big = np.iinfo(np.int64).max
        pos = np.arange(n)
        c_at = np.minimum.reduceat(np.where(cost == cost, pos, big), starts)
        m_at = np.minimum.reduceat(np.where(np.not_equal(models, None), pos, big), starts)  # type: ignore[call-overload]
        lat = self.lateness
        opened = self.open
        code_of = self.model_code
        simple = (length <= 7) & (t_max - t_min <= lat)
        for r, (a, b, tid, f) in enumerate(zip(starts.tolist(), ends.tolist(), tids[starts].tolist(),
                                               fam[starts].tolist())):
            rec = opened.get(tid)
            if not simple[r] or (rec is not None and t[a] <= rec[_T] + lat and rec[_F] == f):
                self._fold_events(tids[a:b], fam[a:b], t[a:b], cost[a:b], quality[a:b], models[a:b])
                continue
            if rec is not None:  # its record is closed: a new request record starts
                self._ready.append(opened.pop(tid))
            ca, ma = int(c_at[r]), int(m_at[r])
            opened[tid] = [f, float(t_max[r]), float(cost[ca]) if ca != big else np.nan, float(q_sum[r]),
                           int(q_n[r]), code_of(models[ma]) if ma != big else -1]
        if len(opened) > self.max_open:  # a bound on memory: the oldest records go out first
            for tid in sorted(opened, key=lambda k: opened[k][_T])[: len(opened) - self.max_open]:
                self._ready.append(opened.pop(tid))
                self.counts["cost.evicted"] += 1

    def _fold_events(self, tids, fam, t, cost, quality, models) -> None:
        """Fold events into the open records one at a time (the definition)."""
        lat = self.lateness
        opened = self.open
        code_of = self.model_code
        for tid, f, tt, c, q, m in zip(tids.tolist(), fam.tolist(), t.tolist(), cost.tolist(), quality.tolist(),
                                       models.tolist()):
            rec = opened.get(tid)
            if rec is not None and (tt > rec[_T] + lat or rec[_F] != f):
                self._ready.append(opened.pop(tid))
                rec = None
            if rec is None:
                rec = opened[tid] = [f, tt, np.nan, 0.0, 0, -1]
            elif tt > rec[_T]:
                rec[_T] = tt
            if rec[_C] != rec[_C] and c == c:  # first cost seen (NaN != NaN)
                rec[_C] = c
            if q == q:
                rec[_QS] += q
                rec[_QN] += 1
            if rec[_M] < 0 and m is not None:
                rec[_M] = code_of(m)

    def release(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Records whose family clock passed them: ``(families, times, x)`` in time order, ``x``
        with columns cost, quality and model code (usable records only)."""
        wm = self.clock.max_t - 2 * self.lateness
        done = self._ready
        self._ready = []
        if self.open:
            gone = [tid for tid, r in self.open.items() if r[_T] < wm[r[_F]]]
            done.extend(self.open.pop(tid) for tid in gone)
        if not done:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3))
        a = np.array(done, dtype=np.float64).reshape(-1, 6)
        no_cost = ~np.isfinite(a[:, _C])
        no_q = a[:, _QN] == 0
        self.counts["cost.no_cost"] += int(no_cost.sum())
        self.counts["cost.no_quality"] += int((no_q & ~no_cost).sum())
        a = a[~no_cost & ~no_q]
        self.counts["cost.requests"] += int(a.shape[0])
        order = np.lexsort((a[:, _F], a[:, _T]))
        a = a[order]
        x = np.column_stack([a[:, _C], a[:, _QS] / np.maximum(a[:, _QN], 1), a[:, _M]])
        return a[:, _F].astype(np.int64), a[:, _T].copy(), x

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        recs = list(self.open.items())
        return {"lateness": self.lateness, "clock": self.clock.state_dict(), "models": list(self.models),
                "tids": [k for k, _ in recs], "records": np.array([r for _, r in recs], dtype=np.float64).reshape(-1, 6),
                "ready": np.array(self._ready, dtype=np.float64).reshape(-1, 6), "counts": dict(self.counts)}

    def load_state(self, state: dict) -> None:
        self.clock.load_state(state["clock"])
        self.models = list(state["models"])
        self._model_ids = {m: i for i, m in enumerate(self.models)}
        recs = np.asarray(state["records"], dtype=np.float64).reshape(-1, 6)
        self.open = {tid: [int(r[_F]), float(r[_T]), float(r[_C]), float(r[_QS]), int(r[_QN]), int(r[_M])]
                     for tid, r in zip(state["tids"], recs)}
        self._ready = [[int(r[_F]), float(r[_T]), float(r[_C]), float(r[_QS]), int(r[_QN]), int(r[_M])]
                       for r in np.asarray(state["ready"], dtype=np.float64).reshape(-1, 6)]
        self.counts = Counter(state.get("counts", {}))
