"""Quality in Prometheus (drift.runtime.series_metrics): per-series value gauges and the firing state.

An engine is fed a seeded stream one hour of event time at a time: every rule here has a bucket of
an hour or more, so each feed closes at most one bucket per rule and series, and the gauges'
latest evaluation is the one the feed's alerts came from. Their numbers must be the alerts'.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.core.events import format_time
from drift.runtime.http import Metrics
from drift.runtime.series_metrics import SeriesGauges

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
NOW = T0 + 400 * 86400.0  # the wall clock: after every event (nothing is "far future")
SCALE = (1.0, 5.0)  # a 1-5 judge: the gauges must read on this scale, not the detectors' [0, 1]


def _settings():
    return load_settings(overrides={"dimensions": {"helpfulness": {"scale": list(SCALE)},
                                                   "format": {"scale": list(SCALE)}}})


def _hours(events):
    """The events in runs of one hour of event time (they come in time order)."""
    out: dict[int, list] = {}
    for e in events:
        out.setdefault(int(e["_t"] // 3600), []).append({k: v for k, v in e.items() if k != "_t"})
    return [out[h] for h in sorted(out)]


def dip_events(seed=0, days=20, dip=(15, 17), per_hour=24, apps=("bot",)):
    """helpfulness on 1-5 at 4.6, down to 3.8 for days ``dip``, then back: quality_drop fires and
    resolves (quality_shift, on a week's window, fires and stays)."""
    rng = np.random.default_rng(seed)
    events = []
    for h in range(days * 24):
        mean = 3.8 if dip[0] <= h / 24 < dip[1] else 4.6
        for app in apps:
            ts = T0 + h * 3600 + np.sort(rng.uniform(0, 3600, per_hour))
            score = np.clip(rng.normal(mean, 0.25, per_hour), *SCALE)
            events += [{"_t": t, "ts": format_time(t), "app": app, "intent": "billing", "dimension": "helpfulness",
                        "score": round(float(s), 4)} for t, s in zip(ts, score)]
    events.sort(key=lambda e: e["_t"])
    return _hours(events)


@pytest.fixture(scope="module")
def cleanup_hours():
    """support-bot/billing format (rescaled to 1-5) and format_valid over 12 days of the simulated
    prompt_cleanup: quality_drop and format_failure_spike fire on day 11 and stay firing."""
    from drift.tools.simulate import iter_events, simulate

    sim = simulate("prompt_cleanup", seed=0, days=12)
    events = []
    for e in iter_events(sim):
        if e.get("app") == "support-bot" and e.get("intent") == "billing" and \
                e.get("dimension") in ("format", "format_valid"):
            e = dict(e)
            if e["dimension"] == "format":
                e["score"] = round(SCALE[0] + e["score"] * (SCALE[1] - SCALE[0]), 6)
            e["_t"] = dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
            events.append(e)
    return _hours(events)


def _values(g: SeriesGauges) -> dict:
    return {(*key, stat): v for key, stat, v in g._snapshot[0]}


def _firing(g: SeriesGauges) -> set:
    return {(*key, severity) for key, severity in g._snapshot[1]}


def _key(alert):
    lab = alert.labels
    return alert.rule, lab.get("app", ""), lab.get("intent", ""), lab.get("dimension", "")


def _run(hours, gauges, engine=None, check=None):
    """Feed ``hours``, refreshing ``gauges`` after each; ``check(alerts)`` after each refresh."""
    engine = engine or Engine(_settings(), now=lambda: NOW)
    alerts = []
    for chunk in hours:
        got = engine.feed(chunk)
        gauges.refresh([engine], force=True)
        if check is not None:
            check(got)
        alerts += got
    return engine, alerts


def _check_against_alerts(g, compared):
    def check(alerts):
        values, firing = _values(g), _firing(g)
        for a in alerts:
            if a.status not in ("firing", "resolved"):
                continue
            key = _key(a)
            want = {"current": a.window.value, "statistic": a.statistic.value}
            if a.baseline is not None:
                want["baseline"] = a.baseline.value
            for stat, v in want.items():
                got = values.get((*key, stat))
                assert got is not None and got == pytest.approx(v, rel=1e-5), (a.rule, a.status, stat, got, v)
            assert ((*key, a.severity) in firing) == (a.status == "firing"), (a.rule, a.status, firing)
            compared.append((a.rule, a.status))
    return check


# ---------------------------------------------------------------------------------------------
def test_values_are_the_alerts_window_baseline_and_statistic_on_the_series_scale(cleanup_hours):
    g = SeriesGauges(series=True)
    compared: list = []
    engine, alerts = _run(cleanup_hours, g, check=_check_against_alerts(g, compared))
    assert {("quality_drop", "firing"), ("format_failure_spike", "firing")} <= set(compared), compared
    values = _values(g)
    # quality on the declared 1-5 scale (the detector sees [0, 1]); the check as a failure rate
    drop = ("quality_drop", "support-bot", "billing", "format")
    assert 3.0 < values[(*drop, "current")] < values[(*drop, "baseline")] < 5.0
    spike = ("format_failure_spike", "support-bot", "billing", "format_valid")
    assert 0 < values[(*spike, "baseline")] < 0.1 < values[(*spike, "current")] < 1
    # the observer changes nothing: the same alerts without the gauges
    _, plain = _run(cleanup_hours, SeriesGauges(series=False))
    assert [a.alert_id for a in plain] == [a.alert_id for a in alerts]
    # and it is not state: the checkpoint of an observed engine is the plain one's
    for runner in engine.runners.values():
        assert "observer" not in runner.detector.state_dict()


def test_firing_gauge_while_firing_gone_after_resolution():
    g = SeriesGauges(series=True)
    compared: list = []
    history = []

    def check(alerts):
        _check_against_alerts(g, compared)(alerts)
        history.append(("quality_drop", "bot", "billing", "helpfulness", "warning") in _firing(g))

    _, alerts = _run(dip_events(), g, check=check)
    assert ("quality_drop", "firing") in compared and ("quality_drop", "resolved") in compared
    drops = [a for a in alerts if a.rule == "quality_drop"]
    assert [a.status for a in drops] == ["firing", "resolved"]
    # on from the hour that fired until the hour that resolved, off before and after
    on = [i for i, f in enumerate(history) if f]
    assert on and on == list(range(on[0], on[-1] + 1))
    assert history[-1] is False and history[on[0] - 1] is False
    # quality_shift (a week's window) still fires: the firing state is per rule
    assert _firing(g) == {("quality_shift", "bot", "billing", "helpfulness", "warning")}
    # the value gauges remain, back near normal (4.6 on the 1-5 scale; the dip was 3.8)
    values = _values(g)
    assert 4.2 < values[("quality_drop", "bot", "billing", "helpfulness", "current")] < 5.0
    assert values[("quality_drop", "bot", "billing", "helpfulness", "baseline")] == pytest.approx(4.6, abs=0.05)


def test_series_limit_refuses_and_counts_new_series_and_frees_room():
    hours = dip_events(days=2, apps=("a", "b", "c", "d", "e"))
    free = SeriesGauges(series=True)
    _run(hours, free)
    n = free.used
    assert n == 10  # 5 series x (quality_drop, quality_shift)
    registry = CollectorRegistry()
    capped = SeriesGauges(registry, series=True, series_limit=3)
    engine, _ = _run(hours, capped)
    assert capped.used == 3
    assert len({k[:4] for k in _values(capped)}) <= 3
    # each refused series counted once, not once per evaluation (48 of them here)
    assert registry.get_sample_value("drift_series_dropped_total") == n - 3
    # the engine goes (a revoked partition): its series leave and free their room
    capped.refresh([], force=True)
    assert capped.used == 0 and capped._snapshot == ((), ())
    _run(dip_events(days=2, apps=("x",)), capped)
    assert capped.used == 2
    assert {k[1] for k in _values(capped)} == {"x"}


def test_scrape_output_parses_and_carries_the_snapshot(cleanup_hours):
    metrics = Metrics()  # the service's registry: the collector beside its other metrics
    g = SeriesGauges(metrics.registry, series=True)
    _run(cleanup_hours[:-6], g)
    text = metrics.exposition().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["drift_alert_firing"].type == "gauge" and fams["drift_series_value"].type == "gauge"
    assert fams["drift_series_dropped"].type == "counter"
    assert [s.value for s in fams["drift_series_dropped"].samples if s.name == "drift_series_dropped_total"] == [0]
    firing = {(s.labels["rule"], s.labels["app"], s.labels["intent"], s.labels["dimension"], s.labels["severity"]):
              s.value for s in fams["drift_alert_firing"].samples}
    assert firing == {("quality_drop", "support-bot", "billing", "format", "warning"): 1.0,
                      ("format_failure_spike", "support-bot", "billing", "format_valid", "warning"): 1.0}
    values = {(s.labels["rule"], s.labels["app"], s.labels["intent"], s.labels["dimension"], s.labels["stat"]):
              s.value for s in fams["drift_series_value"].samples}
    assert values == pytest.approx(_values(g), rel=1e-12)
    assert {k[4] for k in values} == {"current", "baseline", "statistic"}
    assert all(math.isfinite(v) for v in values.values())
    assert metrics.exposition().decode().count("drift_series_value{") == len(values)
    # off by default: the firing gauge only
    off = Metrics()
    g_off = SeriesGauges(off.registry)
    _run(cleanup_hours[:-6], g_off)
    names = {f.name for f in text_string_to_metric_families(off.exposition().decode())}
    assert "drift_alert_firing" in names and "drift_series_value" not in names and "drift_series_dropped" not in names
    assert _firing(g_off) == _firing(g)


def test_firing_is_right_after_a_state_restore(cleanup_hours):
    g = SeriesGauges(series=True)
    engine, _ = _run(cleanup_hours[:-6], g)
    before = _firing(g)
    assert len(before) == 2
    restored = Engine(_settings(), now=lambda: NOW)
    restored.load_state(engine.state_dict())
    # the same gauges, the engine rebuilt (a partition restored from its checkpoint)
    g.refresh([restored], force=True)
    assert _firing(g) == before
    assert _values(g) == {}  # no evaluation of the restored detectors yet: values come back with one
    # a fresh process's gauges on the restored engine, before any event: still firing
    fresh = SeriesGauges(series=True)
    fresh.refresh([restored], force=True)
    assert _firing(fresh) == before
    # the next hours: the restored detectors got observers and report again
    _run(cleanup_hours[-6:], g, engine=restored)
    assert _firing(g) == before
    assert {k[:4] for k in _values(g)} >= {f[:4] for f in before}


def test_refresh_is_throttled_and_attach_is_idempotent(cleanup_hours):
    t = [0.0]
    g = SeriesGauges(series=True, interval=1.0, clock=lambda: t[0])
    engine = Engine(_settings(), now=lambda: NOW)
    engine.feed(cleanup_hours[0])
    assert g.refresh([engine]) is True
    observers = {k: r.detector.observer for k, r in engine.runners.items()}
    assert observers and all(o is not None for o in observers.values())
    t[0] = 0.5
    assert g.refresh([engine]) is False  # within the interval: the snapshot stays
    t[0] = 1.0
    assert g.refresh([engine]) is True
    assert {k: r.detector.observer for k, r in engine.runners.items()} == observers  # not replaced
