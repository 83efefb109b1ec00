"""Quality in Prometheus: each watched series' statistic and baseline, and what is firing.

:class:`SeriesGauges` is a ``prometheus_client`` collector over a set of engines (``drift serve``
has one per assigned partition, or per co-partitioned group). It exports

``drift_alert_firing{rule,app,intent,dimension,severity}``
    1 for each series a rule holds firing; absent otherwise. Always on: it costs only the
    firing series, and it reads the detectors' ``firing`` arrays, which checkpoints restore, so
    it is right again as soon as a restored partition's engine is back.
``drift_series_value{rule,app,intent,dimension,stat}``
    opt-in (``[metrics] series = true``, ``drift serve --series-metrics``): per series a rule
    watches, as of its latest evaluation (one per closed bucket of the rule, e.g. hourly):
    ``stat="current"`` the window's value, ``stat="baseline"`` the baseline's (or long-term
    reference's), ``stat="statistic"`` the rule's test statistic (``alert.statistic.value``).
    Current and baseline are on the series' own scale, as in the alerts (a quality dimension
    declared ``scale = [1, 5]`` reads 1..5; flags and checks read as rates; rules on raw values
    and the other streams as their detector sees them). A sequential (CUSUM) rule's window is
    the evidence since its statistic left zero; while a series is steady there is none, and
    current is its recovery window and the statistic that window's effect (as in its resolved
    alerts). A value the evaluation left undefined (NaN: an empty window, a rule without a
    baseline) is not exported.
``drift_series_dropped_total``
    with the value gauges: series refused because ``series_limit`` series (10,000) already had
    gauges (each refused series counted once per engine). Series of a revoked partition free
    their room at the next refresh.

Labels a stream's series do not have (``intent`` and ``dimension`` of the queries stream,
``dimension`` of retrieval, feedback and the cost rules) are empty, i.e. absent in PromQL.

The value gauges come from an observer on each detector (``BucketedDetector.observer``, never
checkpointed), attached by :meth:`SeriesGauges.refresh`, which the service calls after every
batch: engines are rebuilt when partitions are assigned or restored, and rules make their
detectors on first use, so evaluations in the batch that made a detector are not seen. A
partition restored from a checkpoint, or a rule's first series, has values from each series'
next evaluation on (the firing state needs no observer).

The engines are only touched on the thread that runs them: the detectors call their observer
there, and :meth:`SeriesGauges.refresh` (at most once per ``interval``) builds an immutable
snapshot that :meth:`SeriesGauges.collect`, run by the HTTP thread on each scrape, only reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from detectors.sequential import _Cusum as _Sequential

__all__ = ["SeriesGauges"]

VALUE_LABELS = ("rule", "app", "intent", "dimension", "stat")
FIRING_LABELS = ("rule", "app", "intent", "dimension", "severity")
STATS = ("current", "baseline", "statistic")

Key = tuple[str, str, str, str]  # rule, app, intent, dimension


def _state_of(engine: Any, runner: Any) -> Any:
    """The stream state whose series table holds ``runner``'s series ids."""
    return engine.cost_state if runner.kind.values == "cost" else engine.state.get(runner.spec.stream)


def _key(rule: str, labels: dict[str, str]) -> Key:
    return rule, labels.get("app", ""), labels.get("intent", ""), labels.get("dimension", "")


class _Observer:
    """One detector's observer: keeps its series' latest values (called on the engine's thread)."""

    __slots__ = ("gauges", "engine", "runner", "values", "refused")

    def __init__(self, gauges: SeriesGauges, engine: Any, runner: Any):
        self.gauges, self.engine, self.runner = gauges, engine, runner
        # detector-local id -> [key, display, current, baseline, statistic]
        self.values: dict[int, list] = {}
        self.refused: set[int] = set()

    def __call__(self, detector: Any, series: np.ndarray, b: int, ev: Any) -> None:
        values = self.values
        win, value = ev.win_value, ev.value
        # a sequential rule's window is the evidence since its CUSUM left zero: none while the
        # series is steady. Then, as in its resolved alerts, current is its recovery window and
        # the statistic that window's effect against the reference
        missing = np.isnan(win)
        if isinstance(detector, _Sequential) and missing.any():
            win, value = win.copy(), value.copy()
            rv, _ = detector._window(series[missing])
            win[missing] = rv
            with np.errstate(all="ignore"):
                value[missing] = detector._effect(rv, ev.ref_value[missing])
        cur, base, stat = win.tolist(), ev.ref_value.tolist(), value.tolist()
        for j, s in enumerate(series.tolist()):
            entry = values.get(s)
            if entry is None:
                entry = self._admit(s)
                if entry is None:
                    continue
            show = entry[1]
            entry[2] = show(cur[j])
            entry[3] = show(base[j])
            entry[4] = stat[j]

    def _admit(self, s: int) -> list | None:
        gauges = self.gauges
        if s in self.refused:
            return None
        if gauges.used >= gauges.series_limit:
            self.refused.add(s)
            gauges.dropped.inc()
            return None
        runner, engine = self.runner, self.engine
        st = _state_of(engine, runner)
        if st is None or s >= len(runner.sids):
            return None
        sid = runner.sids[s]
        display = st.stream.display(engine, st, sid, runner.kind)
        entry = [_key(runner.spec.name, st.series.labels(sid)), display or _same, math.nan, math.nan, math.nan]
        self.values[s] = entry
        gauges.used += 1
        return entry


def _same(v: float) -> float:
    return v


class SeriesGauges:
    """``drift_alert_firing`` and (``series=True``) ``drift_series_value`` over engines.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where to register (none: not registered; :meth:`collect` still works).
    series : bool
        Export the per-series value gauges (attaches an observer to every detector).
    series_limit : int
        The most series with value gauges; more are refused and counted.
    interval : float
        :meth:`refresh` rebuilds the snapshot at most this often (seconds).
    clock : callable
        Monotonic clock for ``interval``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, series: bool = False,
                 series_limit: int = 10000, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if series_limit < 1:
            raise ValueError(f"series_limit must be >= 1, got {series_limit!r}")
        self.series, self.series_limit, self.interval, self.clock = bool(series), int(series_limit), interval, clock
        self.used = 0  # series with value gauges (recounted over the live engines at each refresh)
        self.dropped = Counter("drift_series_dropped_total",
                               "Series refused value gauges (drift_series_value) because series_limit were held",
                               registry=None)
        self._last = -math.inf
        # (value samples, firing samples): replaced whole, never mutated, read by collect()
        self._snapshot: tuple[tuple[tuple[Key, str, float], ...], tuple[tuple[Key, str], ...]] = ((), ())
        if registry is not None:
            if self.series:
                registry.register(self.dropped)
            registry.register(self)

    # -- the engine's thread ---------------------------------------------------------------------
    def attach(self, engines: Iterable[Any]) -> None:
        """Give every detector of ``engines`` an observer (idempotent: engines are rebuilt on
        assignment and restore, and rules make runners on first use)."""
        for engine in engines:
            for runner in engine.runners.values():
                det = runner.detector
                if not hasattr(det, "observer"):  # not a bucketed detector
                    continue
                obs = det.observer
                if isinstance(obs, _Observer) and obs.gauges is self and obs.runner is runner:
                    continue
                if obs is None or isinstance(obs, _Observer):
                    det.observer = _Observer(self, engine, runner)

    def refresh(self, engines: Iterable[Any], force: bool = False) -> bool:
        """Observe every detector of ``engines`` (at each call: cheap, so a new engine or rule is
        observed from the next batch on), and rebuild the snapshot (at most once per ``interval``
        unless ``force``); returns whether it rebuilt it."""
        engines = list(engines)
        if self.series:
            self.attach(engines)
        now = self.clock()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        values: dict[tuple[Key, str], float] = {}
        firing: dict[tuple[Key, str], None] = {}
        used = 0
        for engine in engines:
            for runner in engine.runners.values():
                det = runner.detector
                obs = getattr(det, "observer", None)
                if isinstance(obs, _Observer) and obs.gauges is self:
                    used += len(obs.values)
                    for key, _, cur, base, stat in obs.values.values():
                        for name, v in zip(STATS, (cur, base, stat)):
                            if not math.isnan(v):
                                values[(key, name)] = v
                on = getattr(det, "firing", None)
                if not isinstance(on, np.ndarray) or not on.any():
                    continue
                st = _state_of(engine, runner)
                if st is None:
                    continue
                for s in np.flatnonzero(on).tolist():
                    if s < len(runner.sids):
                        firing[(_key(runner.spec.name, st.series.labels(runner.sids[s])), runner.spec.severity)] = None
        self.used = used
        self._snapshot = (tuple((k, stat, v) for (k, stat), v in values.items()), tuple(firing))
        return True

    # -- the HTTP thread ---------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        values, firing = self._snapshot  # one read of the reference: a consistent snapshot
        fams = self._families()
        for key, severity in firing:
            fams[0].add_metric([*key, severity], 1.0)
        if self.series:
            for key, stat, v in values:
                fams[1].add_metric([*key, stat], v)
        yield from fams

    def _families(self) -> list[GaugeMetricFamily]:
        fams = [GaugeMetricFamily("drift_alert_firing", "1 for each series a rule holds firing",
                                  labels=FIRING_LABELS)]
        if self.series:
            fams.append(GaugeMetricFamily(
                "drift_series_value", "A watched series at its latest evaluation: stat=current (window), "
                "baseline, statistic (the rule's test statistic)", labels=VALUE_LABELS))
        return fams
