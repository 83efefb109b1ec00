"""Shared machinery of detectors that evaluate at bucket boundaries of event time.

A :class:`BucketedDetector` owns an :class:`~detectors.windows.EventClock` and turns each closed
bucket into one vectorized evaluation over the series that closed it. It keeps the episode state
(hysteresis) per series:

* a series starts *firing* after its condition held at ``for_buckets`` consecutive evaluations;
  the episode starts at the end of the first of those buckets;
* it *resolves* after the condition was clearly gone (effect below ``resolve_ratio`` times the
  threshold, with enough data) at ``resolve_after`` consecutive evaluations;
* while a series is firing or pending, its baseline is frozen.

Subclasses implement ``_add(series, t, x)`` and ``_evaluate(series, b) -> Evaluation``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from detectors.base import Detector, Finding, Side, check_positive
from detectors.windows import EventClock, WindowedAggregate, grow_rows, rows_of

__all__ = ["BucketedDetector", "Evaluation"]


@dataclasses.dataclass
class Evaluation:
    """Vectorized result of evaluating some series at one bucket boundary (arrays per series)."""

    hit: np.ndarray  # condition holds (effect, significance and sample minimums all met)
    clear: np.ndarray  # condition clearly gone (enough data, effect well below threshold)
    value: np.ndarray
    p_value: np.ndarray
    win_start: np.ndarray
    win_end: np.ndarray
    win_n: np.ndarray
    win_value: np.ndarray
    ref_n: np.ndarray
    ref_value: np.ndarray
    ref_kind: np.ndarray  # 0 = baseline, 1 = long-term reference
    threshold: float
    statistic: str


class BucketedDetector(Detector):
    """Base class: event-time clock, per-series episodes with hysteresis, state round-trip."""

    _state: ClassVar[tuple[str, ...]] = ("clock", "firing", "pending", "clear_streak", "episode_start",
                                         "fired_window", "n_series", "late")
    statistic = ""
    # called as observer(detector, series, b, ev) after each evaluation (drift.runtime.series_metrics);
    # set on an instance, never part of the state (not checkpointed)
    observer: Callable[[BucketedDetector, np.ndarray, int, Evaluation], None] | None = None
    # set by subclasses' __init__
    for_buckets: int
    resolve_after: int
    agg: WindowedAggregate
    _w: int

    def _init_bucketed(self, bucket, lateness, for_buckets, resolve_after, resolve_ratio):
        check_positive("bucket", bucket)
        if lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {lateness!r}")
        if int(for_buckets) < 1 or int(resolve_after) < 1:
            raise ValueError("for_buckets and resolve_after must be >= 1")
        if not 0 <= resolve_ratio < 1:
            raise ValueError(f"resolve_ratio must be in [0, 1), got {resolve_ratio!r}")
        self.clock = EventClock(bucket, lateness)
        self.firing = np.zeros(0, bool)
        self.pending = np.zeros(0, np.int64)  # consecutive hits while not firing
        self.clear_streak = np.zeros(0, np.int64)
        self.episode_start = np.zeros(0)
        self.fired_window = np.zeros(0, np.int64)  # which of a rule's windows raised the episode
        self.n_series = 0
        self.late = 0

    # -- subclass hooks ---------------------------------------------------------------------
    def _ensure(self, n: int) -> None:  # grow subclass arrays
        raise NotImplementedError

    def _add(self, series: np.ndarray, t: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self, series: np.ndarray, b: int, frozen: np.ndarray) -> None:
        raise NotImplementedError

    def _evaluate(self, series: np.ndarray, b: int) -> Evaluation:
        raise NotImplementedError

    def _accept_reference(self, series: np.ndarray) -> None:
        """Hook: consider the current baseline as the long-term reference (optional)."""

    # -- the loop -----------------------------------------------------------------------------
    def ensure(self, n: int) -> None:
        if n <= self.n_series:
            return
        self.clock.ensure(n)
        self.firing = grow_rows(self.firing, n, False)
        self.pending = grow_rows(self.pending, n, 0)
        self.clear_streak = grow_rows(self.clear_streak, n, 0)
        self.episode_start = grow_rows(self.episode_start, n, np.nan)
        self.fired_window = grow_rows(self.fired_window, n, 0)
        self._ensure(n)
        self.n_series = n

    def update_many(self, series, t, x) -> list[Finding]:
        """Consume a batch (arrays ``series``, ``t`` in Unix seconds, values ``x``); return findings."""
        series = np.asarray(series, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x)
        if series.size == 0:
            return []
        self.ensure(int(series.max()) + 1)
        plan = self.clock.plan(series, t)
        self.late += int((~plan.accepted).sum())
        findings: list[Finding] = []
        for rnd in plan.rounds:
            if rnd.close_series.size:
                findings.extend(self._close_bucket(rnd.close_series, rnd.closed))
            if rnd.events.size:
                e = rows_of(rnd.events)  # a slice (views, no copies) for a run of the batch
                self._add(series[e], t[e], x[e])
        return findings

    def _close_bucket(self, series, b: int) -> list[Finding]:
        """Close bucket ``b`` for ``series``: move it into the window, evaluate, update episodes."""
        frozen = self.firing[series] | (self.pending[series] > 0)
        self._close(series, b, frozen)
        ev = self._evaluate(series, b)
        if self.observer is not None:
            self.observer(self, series, b, ev)
        findings = self._transitions(series, b, ev)
        steady = series[~(self.firing[series] | (self.pending[series] > 0))]
        if steady.size:
            self._accept_reference(steady)
        return findings

    def _transitions(self, series, b, ev: Evaluation) -> list[Finding]:
        at = float(self.clock.bucket_end(b))
        firing = self.firing[series]
        hit = ev.hit & ~firing
        self.pending[series] = np.where(hit, self.pending[series] + 1, 0)
        starts = hit & (self.pending[series] >= self.for_buckets)
        # the episode starts where the condition first held
        start_t = at - (self.pending[series] - 1) * self.clock.bucket
        clear = ev.clear & firing
        self.clear_streak[series] = np.where(clear, self.clear_streak[series] + 1, 0)
        ends = clear & (self.clear_streak[series] >= self.resolve_after)
        out: list[Finding] = []
        for j in np.flatnonzero(starts | ends):
            s = int(series[j])
            if starts[j]:
                status, ep = "firing", float(start_t[j])
                self.firing[s] = True
                self.pending[s] = 0
                self.episode_start[s] = ep
            else:
                status, ep = "resolved", float(self.episode_start[s])
                self.firing[s] = False
                self.clear_streak[s] = 0
            out.append(self._finding(s, status, at, ep, ev, j))
        return out

    def _finding(self, s, status, at, ep, ev: Evaluation, j) -> Finding:
        def side(start, end, n, value):
            return Side(float(start), float(end), int(n), float(value))

        p = float(ev.p_value[j])
        return Finding(
            series=s, status=status, at=at, episode_start=ep, statistic=ev.statistic,
            value=float(ev.value[j]), threshold=float(ev.threshold),
            p_value=None if np.isnan(p) else p,
            window=side(ev.win_start[j], ev.win_end[j], ev.win_n[j], ev.win_value[j]),
            reference=side(*self._reference_span(s, int(ev.ref_kind[j])), ev.ref_n[j], ev.ref_value[j]),
            reference_kind="long_term" if ev.ref_kind[j] == 1 else "baseline",
        )

    # -- helpers for subclasses ----------------------------------------------------------------
    def _window_span(self, b: int, window: int, n: int):
        end = float(self.clock.bucket_end(b))
        start = end - window * self.clock.bucket
        return np.full(n, start), np.full(n, end)

    def _reference_span(self, s: int, kind: int) -> tuple[float, float]:
        """Event-time span of series ``s``'s baseline (kind 0) or long-term reference (1)."""
        if kind == 1:
            first, last = self.agg.ref_span[s]
        else:
            f, la = self.agg.base_span(np.array([s]))
            first, last = f[0], la[0]
        if last < 0:
            return np.nan, np.nan
        return first * self.clock.bucket, (last + 1) * self.clock.bucket

    def _init_short_windows(self, short_windows, window: float, bucket: float) -> tuple[int, ...]:
        """Keep ``short_windows`` (seconds) and return them in buckets: whole buckets, shorter
        than the window (``self._w`` buckets). The aggregate keeps their sums
        (``WindowedAggregate(recent=...)``)."""
        self.short_windows = tuple(float(v) for v in short_windows)
        self._short = tuple(_buckets("short_windows", v, bucket) for v in self.short_windows)
        if any(k >= self._w for k in self._short):
            raise ValueError(f"short_windows {self.short_windows} must be shorter than window ({window} s)")
        return self._short

    def _windows(self, series) -> list[tuple[int, np.ndarray]]:
        """(buckets, rows) of the whole window, then of each short window, for ``series``."""
        return [(self._w, self.agg.win[series])] + [(k, self.agg.recent(series, j))
                                                    for j, k in enumerate(self._short)]

    @staticmethod
    def _picker(sides: list[dict], chosen: np.ndarray):
        """``pick(key)``: per series, ``sides[chosen][key]`` as float64 (scalars broadcast)."""
        n = chosen.shape[0]
        masks = [(j, m) for j in range(1, len(sides)) if (m := chosen == j).any()]

        def pick(key):
            out = np.array(np.broadcast_to(sides[0][key], (n,)), dtype=np.float64)
            for j, m in masks:
                out[m] = np.broadcast_to(sides[j][key], (n,))[m]
            return out

        return pick

    def _windows_clear(self, series, hit, window, clear, quiet) -> np.ndarray:
        """Resolution over several windows of one rule (the whole window, then short ones).

        ``window``: the index of the window each hit came from; ``clear[w]``: window ``w`` has
        enough data and its effect is gone; ``quiet[w]``: it has too little data to say. An
        episode resolves when the window that raised it is clear and every other window is
        clear or quiet: a long window that lags a step cannot resolve what a short one raised,
        and a short window that is quiet (a low-volume series, a night) holds nothing up.
        """
        fired = np.where(hit & ~self.firing[series], window, self.fired_window[series])
        self.fired_window[series] = fired
        clear, quiet = np.stack(clear), np.stack(quiet)
        return clear[fired, np.arange(series.size)] & (clear | quiet).all(axis=0)

    def _references(self, series):
        """(aggregate rows, valid mask) of the baseline and, if kept, the long-term reference."""
        agg = self.agg
        refs = [(agg.base_sum[series], np.ones(series.size, bool))]
        if getattr(self, "long_term", False):
            refs.append((agg.ref[series], agg.has_ref[series]))
        return refs

    @staticmethod
    def _combine(sides: list[dict]):
        """Fire on either reference (baseline first); clear only when both are clear.

        Returns ``hit``, ``clear``, ``kind`` (0 baseline, 1 long-term) and ``pick(key)`` giving
        each series' value from the reference that decided.
        """
        hit, clear = sides[0]["hit"].copy(), sides[0]["clear"].copy()
        kind = np.zeros(hit.shape[0], np.int64)
        if len(sides) > 1:
            kind[sides[1]["hit"] & ~sides[0]["hit"]] = 1
            hit |= sides[1]["hit"]
            clear &= sides[1]["clear"]

        def pick(key):
            if len(sides) == 1:
                return sides[0][key]
            return np.where(kind == 1, sides[1][key], sides[0][key])

        return hit, clear, kind, pick

    def reset_baseline(self, series) -> None:
        """Deliberately forget the baseline (and long-term reference) of ``series``."""
        raise NotImplementedError

    # per-series arrays that are configuration, not learned data: a reset keeps them
    _reset_keep: ClassVar[tuple[str, ...]] = ()

    def reset(self, series, at: float) -> list[Finding]:
        """An operator's baseline reset of ``series`` (detector-local ids) at event time ``at``.

        Each series that is firing resolves now (a finding with ``extra["reset"] = True``; its
        episode start, hence its alert id, is the open episode's). Then everything the detector
        learned about the series -- window, baseline, long-term reference, sequential
        statistics, hysteresis -- is forgotten, exactly as if the series had just appeared: the
        baseline is re-learned from the data that arrives from now on, so the level the series
        runs at after the reset becomes its new normal and a later drop from it fires again.
        The bucket clock is kept (time does not restart). Pending hits are dropped too.

        >>> import numpy as np
        >>> from detectors.drop import PercentDrop
        >>> det = PercentDrop(window=86400.0, baseline=2 * 86400.0, min_n=20)
        >>> t = np.arange(0, 6 * 86400, 600.0)
        >>> x = np.where(t < 4 * 86400, 0.9, 0.6)
        >>> [f.status for f in det.update_many(np.zeros(t.size, np.int64), t, x)]
        ['firing']
        >>> [(f.status, f.extra) for f in det.reset([0], at=6 * 86400.0)]
        [('resolved', {'reset': True})]
        >>> det.reset([0], at=6 * 86400.0), bool(det.firing[0]), int(det.agg.base_pushes[0])
        ([], False, 0)
        """
        series = np.unique(np.asarray(series, dtype=np.int64))
        series = series[(series >= 0) & (series < self.n_series)]
        if series.size == 0:
            return []
        out: list[Finding] = []
        for s in series[self.firing[series]].tolist():
            out.append(Finding(series=int(s), status="resolved", at=float(at),
                               episode_start=float(self.episode_start[s]), statistic=self.statistic,
                               value=float("nan"), threshold=float(getattr(self, "threshold", float("nan"))),
                               extra={"reset": True}))
        fresh = type(self)(**self.get_params())
        fresh.ensure(1)
        for name in type(self)._state + type(self)._extra_state:
            if name in ("clock", "n_series", "late") or name in self._reset_keep:
                continue
            value, new = getattr(self, name), getattr(fresh, name)
            if hasattr(value, "clear"):  # an aggregate (window, baseline, reference)
                value.clear(series)
            elif (isinstance(value, np.ndarray) and isinstance(new, np.ndarray) and value.ndim >= 1
                  and new.ndim == value.ndim and new.shape[0] >= 1 and new.shape[1:] == value.shape[1:]
                  and value.shape[0] >= self.n_series):
                value[series] = new[0]
        return out

    def state_dict(self) -> dict:
        state = super().state_dict()
        for name in self._state + self._extra_state:
            value = getattr(self, name)
            if hasattr(value, "state_dict"):
                state[name] = value.state_dict()
        return state

    _extra_state: tuple[str, ...] = ()

    @classmethod
    def from_state(cls, state: dict):
        if state.get("type") != cls.__name__:
            raise ValueError(f"state is for {state.get('type')!r}, not {cls.__name__}")
        obj = cls(**state["params"])
        for name in cls._state + cls._extra_state:
            value = getattr(obj, name)
            if hasattr(value, "load_state"):
                value.load_state(state[name])
            else:
                v = state[name]
                setattr(obj, name, v.copy() if isinstance(v, np.ndarray) else v)
        return obj


def _buckets(name, seconds, bucket) -> int:
    k = seconds / bucket
    if k < 1 or abs(k - round(k)) > 1e-9:
        raise ValueError(f"{name} ({seconds} s) must be a positive multiple of bucket ({bucket} s)")
    return int(round(k))
