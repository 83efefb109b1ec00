"""Judge rules: operating characteristic of the three judge and feedback rules against the information limit.

``python -m benchmarks --only judge`` (or ``python -m benchmarks.judge``). Every rule runs as the
engine builds it: the detector of its kind with the rule's default parameters from
:func:`drift.core.config.load_settings` (only the detector's ``_params``) and the engine's
lateness. Streams are seeded Poisson arrivals (:func:`benchmarks.operating._arrivals`), fed a day
at a time, ``seeds`` independent series per cell in one detector (detectors are vectorized over
series), the change at the start of a day.

* **judge_agreement_drop** (``KappaDrop``: kappa of the last 200 labelled pairs no older than
  30 days, evaluated daily; fires when ``kappa + z SE < 0.6``): labelled pairs at 5, 20, 100 and
  500 a day per series. The judge says 1 with probability ``p`` (0.5, or a 0.75 pass rate); the
  human verdict is the judge's flipped with the probability
  :func:`drift.tools.simulate.label_flip_probability` gives for the target kappa (0.8, the rule's
  ``healthy``, for 30 days, so the 30-day window is full; then 0.4 or 0.5). Delay: days from the
  change to the alarm, 60 days to detect. False alerts per series-year on stable judges at kappa
  0.8 and, separately, at 0.7 (the grey zone between the bar and ``healthy``, where the rule
  *may* fire): 200 series a cell, a year each after a 30-day warm-up.
* **negative_feedback_spike** (``RateCusum``, ratio 2) on the share of negative feedback events
  (thumbs-down or regenerate) rising from 16 % to 50 %, and **judge_user_disagreement**
  (``RateCusum``, ratio 1.5) on the share of thumbs-downs the judge scored good rising from 30 %
  to 86 % (the events are the thumbs-downs), at 10, 100, 1,000 and 10,000 events a day per
  series; 16 days of history (the 14-day reference plus its 2-day guard is full at the change),
  30 days to detect; false alerts on stable streams after the same 16-day warm-up. The base
  shares are the simulator's (:data:`drift.tools.simulate.FEEDBACK_MODEL`'s 16 % and 30 %).

**The information limit** is an oracle CUSUM on the true log-likelihood ratio of each event (for
a labelled pair: of its cell of the 2x2 table, judge and human, before and after the change; for
feedback: Bernoulli at the known shares), at the same budget ``r`` (1e-4 false alerts per
series-year) and one CUSUM (``k = 1``):

* **oracle**: Lorden's threshold ``h = log(N / r)`` with ``N`` the events per year (each
  excursion reaches ``h`` with probability at most ``e^-h``);
* **oracle~**: the threshold our sequential rules actually use, Siegmund's ``h = log(N D / r)``
  with ``D = KL(before || after)`` per event (:func:`detectors.sequential.cusum_threshold`, as
  ``benchmarks/operating.py``'s oracle): lower, so faster;
* **oracle/c**: the oracle's alarm moved to the first close (a bucket's end plus the 10-min
  lateness: daily for kappa, hourly for the feedback rules) at which a bucketed detector could
  raise it: the limit for a detector that evaluates at bucket boundaries, as every rule here does.
  ``KappaDrop`` evaluates a bucket on the pairs before its end, so for it that is the close of the
  bucket the crossing pair fell in; the CUSUMs read every event that has arrived by a close, so for
  them it is the next close at or after the crossing (:func:`benchmarks.operating._at_closes`).

The rule's delay runs to the event after which its alarm exists (:func:`benchmarks.operating._raised`:
the first event of the series past the close). Medians and 90th percentiles over the series of a
cell; "never" where more than half (a tenth) were not detected in the horizon.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from benchmarks.operating import DAY, HOUR, _arrivals, _at_closes, _h, _oracle_run, _raised, _ratio, _stats
from detectors.sequential import YEAR, cusum_threshold
from drift.tools.simulate import label_flip_probability

BUDGET = 1e-4  # false alerts per series-year: the rules' default and the oracle's
KAPPA_RULE = "judge_agreement_drop"
HEALTHY = 0.8  # the rule's healthy level: the judge before the change and the stable runs
GREY = 0.7  # between the bar (0.6) and healthy: stable runs reported apart
K_HISTORY = 30  # days before the change: the window's max_age, so it is full of healthy pairs
K_HORIZON = 60  # days after it to detect
K_WARM = 30  # days of a stable run left out of the false-alert count
F_HISTORY = 16  # feedback: days before the change (14-day reference + 2-day guard)
F_HORIZON = 30
F_WARM = 16
# the feedback rules: (rule, what an event is, what x = 1 means, share before, share after)
FEEDBACK = (("negative_feedback_spike", "feedback events", "negative", 0.16, 0.50),
            ("judge_user_disagreement", "thumbs-downs", "judge scored good", 0.30, 0.86))


def _log(msg: str) -> None:
    print(f"  [judge] {msg}", file=sys.stderr, flush=True)


_SETTINGS: list = []


def rule_detector(name: str):
    """The detector of rule ``name`` as the engine builds it: the rule's kind's detector with the
    default rule parameters that are the detector's (``_params``) and the engine's lateness."""
    from drift.core.config import load_settings
    from drift.core.rules import RULE_KINDS

    if not _SETTINGS:
        _SETTINGS.append(load_settings())
    settings = _SETTINGS[0]
    spec = settings.rules[name]
    cls = RULE_KINDS[spec.detector].detector
    accepted = set(cls._params)
    params = {k: v for k, v in spec.params.items() if k in accepted}
    return cls(**{**params, "lateness": settings.allowed_lateness})


def _kl(p, q) -> float:
    """KL(p || q) of two discrete distributions (arrays of cell probabilities)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _thresholds(per_day: float, drift: float) -> list[float]:
    """``[Lorden's log(N / r), Siegmund's log(N D / r)]`` for one CUSUM at ``per_day`` events a day."""
    n = per_day * YEAR / DAY
    return [float(cusum_threshold(n, BUDGET)), float(cusum_threshold(n, BUDGET, drift=drift))]


def _at_own_close(hours, start: float, bucket: float, lateness: float) -> np.ndarray:
    """Delays (hours from ``start``) moved to the close of the bucket their event fell in: its end
    plus ``lateness``. ``KappaDrop`` evaluates a bucket on the pairs before its end only, so this is
    the first moment it can act on that event. (The CUSUMs read every event that has arrived at a
    close, those of the next bucket's first ``lateness`` included: for them the limit is the next
    close at or after the crossing, :func:`benchmarks.operating._at_closes`.)"""
    at = start + np.asarray(hours, dtype=float) * HOUR
    with np.errstate(invalid="ignore"):
        close = (np.floor(at / bucket) + 1) * bucket + lateness
    return np.where(np.isfinite(at), (close - start) / HOUR, math.inf)


# --- judge_agreement_drop ------------------------------------------------------------------------

def cell_probs(kappa: float, prevalence: float) -> np.ndarray:
    """Probabilities of the 2x2 cells, indexed by ``2 * judge + human``, for a judge saying 1 with
    probability ``prevalence`` and a human who flips its verdict to give population kappa ``kappa``.

    >>> p = cell_probs(0.8, 0.5)
    >>> [round(float(v), 3) for v in p], round(float(p.sum()), 12)
    ([0.45, 0.05, 0.05, 0.45], 1.0)
    """
    e = float(label_flip_probability(kappa, prevalence))
    p = prevalence
    return np.array([(1 - p) * (1 - e), (1 - p) * e, p * e, p * (1 - e)])  # codes 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1)


def _pairs(rng, size: int, kappa: float, prevalence: float):
    """``size`` labelled pairs: ``x`` (size, 2) judge and human verdicts, and each pair's cell code."""
    judge = rng.random(size) < prevalence
    flip = rng.random(size) < float(label_flip_probability(kappa, prevalence))
    human = judge ^ flip
    return np.column_stack([judge, human]).astype(np.float64), 2 * judge.astype(np.int64) + human


def kappa_cell(per_day: float, prevalence: float, after: float, seeds: int, rng) -> dict:
    """``seeds`` series at ``per_day`` pairs a day: kappa ``HEALTHY`` for ``K_HISTORY`` days, then ``after``."""
    start = K_HISTORY * DAY
    det = rule_detector(KAPPA_RULE)
    q0, q1 = cell_probs(HEALTHY, prevalence), cell_probs(after, prevalence)
    llr = np.log(q1 / q0)
    drift = _kl(q0, q1)
    hs = _thresholds(per_day, drift)
    first = {k: np.full(seeds, math.inf) for k in ("ours", "oracle", "oracle_s")}
    s_or = np.zeros(seeds)
    early = 0  # firings before the change (false alerts of a healthy judge)
    t0 = time.perf_counter()
    pairs = day = 0
    for day in range(K_HISTORY + K_HORIZON):
        s, t = _arrivals(rng, seeds, per_day, 1, day * DAY)
        x, code = _pairs(rng, t.size, after if day >= K_HISTORY else HEALTHY, prevalence)
        pairs += t.size
        f = det.update_many(s, t, x)
        early += sum(a.status == "firing" and a.at < start for a in f)
        first["ours"] = np.minimum(first["ours"], _raised(f, s, t, det.lateness, seeds, start))
        s_or, o = _oracle_run(s, t, llr[code], s_or, hs, start)
        first["oracle"] = np.minimum(first["oracle"], o[:, 0])
        first["oracle_s"] = np.minimum(first["oracle_s"], o[:, 1])
        if day >= K_HISTORY and all(np.isfinite(v).all() for v in first.values()):
            break
    first["oracle_c"] = _at_own_close(first["oracle"], start, det.bucket, det.lateness)
    out = {"per_day": per_day, "prevalence": prevalence, "before": HEALTHY, "after": after, "seeds": seeds,
           "pairs": pairs, "days_simulated": day + 1, "false_alerts_before_change": int(early),
           "oracle_drift": drift, "oracle_h": hs[0], "oracle_s_h": hs[1], "seconds": round(time.perf_counter() - t0, 2)}
    out.update({k: _stats(v) for k, v in first.items()})
    return out


def kappa_stable(per_day: float, prevalence: float, kappa: float, n_series: int, days: int, rng, chunk: int = 30) -> dict:
    """Firings per series-year of ``n_series`` judges at a constant ``kappa`` (after ``K_WARM`` days)."""
    det = rule_detector(KAPPA_RULE)
    fired, hit = 0, set()
    for d0 in range(0, days, chunk):
        s, t = _arrivals(rng, n_series, per_day, min(chunk, days - d0), d0 * DAY)
        x, _ = _pairs(rng, t.size, kappa, prevalence)
        for a in det.update_many(s, t, x):
            if a.status == "firing" and a.at > K_WARM * DAY:
                fired += 1
                hit.add(a.series)
    years = n_series * (days - K_WARM) * DAY / YEAR
    return {"per_day": per_day, "prevalence": prevalence, "kappa": kappa, "series": n_series, "days": days,
            "series_years": years, "firings": fired, "series_fired": len(hit), "per_series_year": fired / years}


# --- the feedback rules ----------------------------------------------------------------------------

def _bernoulli(p0: float, p1: float):
    """The per-event log-likelihood ratios ``[x = 0, x = 1]`` and KL(p0 || p1)."""
    llr = np.array([math.log((1 - p1) / (1 - p0)), math.log(p1 / p0)])
    return llr, _kl([1 - p0, p0], [1 - p1, p1])


def feedback_cell(rule: str, per_day: float, p0: float, p1: float, seeds: int, rng) -> dict:
    """``seeds`` series at ``per_day`` events a day, the share ``p0`` for ``F_HISTORY`` days, then ``p1``."""
    start = F_HISTORY * DAY
    det = rule_detector(rule)
    llr, drift = _bernoulli(p0, p1)
    hs = _thresholds(per_day, drift)
    first = {k: np.full(seeds, math.inf) for k in ("ours", "oracle", "oracle_s")}
    s_or = np.zeros(seeds)
    early = 0
    t0 = time.perf_counter()
    events = day = 0
    for day in range(F_HISTORY + F_HORIZON):
        s, t = _arrivals(rng, seeds, per_day, 1, day * DAY)
        x = (rng.random(t.size) < (p1 if day >= F_HISTORY else p0)).astype(np.float64)
        events += t.size
        f = det.update_many(s, t, x)
        early += sum(a.status == "firing" and a.at < start for a in f)
        first["ours"] = np.minimum(first["ours"], _raised(f, s, t, det.lateness, seeds, start))
        s_or, o = _oracle_run(s, t, llr[(x > 0.5).astype(np.int64)], s_or, hs, start)
        first["oracle"] = np.minimum(first["oracle"], o[:, 0])
        first["oracle_s"] = np.minimum(first["oracle_s"], o[:, 1])
        if day >= F_HISTORY and all(np.isfinite(v).all() for v in first.values()):
            break
    assert det.bucket == HOUR  # _at_closes: hourly closes
    first["oracle_c"] = _at_closes(first["oracle"], start, det.lateness)
    out = {"rule": rule, "per_day": per_day, "before": p0, "after": p1, "seeds": seeds, "events": events,
           "days_simulated": day + 1, "false_alerts_before_change": int(early), "oracle_drift": drift,
           "oracle_h": hs[0], "oracle_s_h": hs[1], "seconds": round(time.perf_counter() - t0, 2)}
    out.update({k: _stats(v) for k, v in first.items()})
    return out


def feedback_stable(rule: str, per_day: float, p0: float, n_series: int, days: int, rng, chunk: int = 30) -> dict:
    """Firings per series-year of ``n_series`` stable streams at the share ``p0`` (after ``F_WARM`` days)."""
    det = rule_detector(rule)
    fired, hit = 0, set()
    events = 0
    for d0 in range(0, days, chunk):
        s, t = _arrivals(rng, n_series, per_day, min(chunk, days - d0), d0 * DAY)
        events += t.size
        x = (rng.random(t.size) < p0).astype(np.float64)
        for a in det.update_many(s, t, x):
            if a.status == "firing" and a.at > F_WARM * DAY:
                fired += 1
                hit.add(a.series)
    years = n_series * (days - F_WARM) * DAY / YEAR
    return {"rule": rule, "per_day": per_day, "share": p0, "series": n_series, "days": days, "events": events,
            "series_years": years, "firings": fired, "series_fired": len(hit), "per_series_year": fired / years}


# --- the benchmark ---------------------------------------------------------------------------------

def _plan(quick: bool) -> dict:
    if quick:
        return {"k_seeds": 5, "k_volumes": [20, 500], "k_after": [0.4], "k_prevalence": [0.5],
                "k_stable": {20: 10, 500: 5}, "k_stable_days": K_WARM + 30,
                "f_seeds": 5, "f_volumes": [100, 1000], "f_stable": {100: 10, 1000: 2}, "f_stable_days": F_WARM + 30}
    return {"k_seeds": 50, "k_volumes": [5, 20, 100, 500], "k_after": [0.4, 0.5], "k_prevalence": [0.5, 0.75],
            "k_stable": {5: 200, 20: 200, 100: 200, 500: 200}, "k_stable_days": K_WARM + 365,
            "f_seeds": 30, "f_volumes": [10, 100, 1000, 10_000], "f_stable": {10: 200, 100: 100, 1000: 10, 10_000: 1},
            "f_stable_days": F_WARM + 365}


def run(quick: bool = False) -> dict:
    plan = _plan(quick)
    rng = np.random.default_rng(2027)
    t_start = time.perf_counter()
    seconds: dict = {}
    kcells, kfa, fcells, ffa = [], [], [], []
    t0 = time.perf_counter()
    for v in plan["k_volumes"]:
        for p in plan["k_prevalence"]:
            for k1 in plan["k_after"]:
                kcells.append(kappa_cell(v, p, k1, plan["k_seeds"], rng))
    seconds["kappa cells"] = round(time.perf_counter() - t0, 1)
    _log(f"judge_agreement_drop: {len(kcells)} cells in {seconds['kappa cells']:.0f} s")
    t0 = time.perf_counter()
    for v, n in plan["k_stable"].items():
        for p in plan["k_prevalence"]:
            for k in (HEALTHY, GREY):
                kfa.append(kappa_stable(v, p, k, n, plan["k_stable_days"], rng))
    seconds["kappa stable"] = round(time.perf_counter() - t0, 1)
    _log(f"judge_agreement_drop: stable runs in {seconds['kappa stable']:.0f} s")
    for rule, _, _, p0, p1 in FEEDBACK:
        t0 = time.perf_counter()
        for v in plan["f_volumes"]:
            fcells.append(feedback_cell(rule, v, p0, p1, plan["f_seeds"], rng))
        for v, n in plan["f_stable"].items():
            ffa.append(feedback_stable(rule, v, p0, n, plan["f_stable_days"], rng))
        seconds[rule] = round(time.perf_counter() - t0, 1)
        _log(f"{rule}: cells and stable runs in {seconds[rule]:.0f} s")
    kdet = rule_detector(KAPPA_RULE)
    result = {"name": "judge", "quick": quick, "budget": BUDGET, "plan": {k: (v if not isinstance(v, dict) else
                                                                              {str(a): b for a, b in v.items()})
                                                                          for k, v in plan.items()},
              "kappa_params": {k: getattr(kdet, k) for k in kdet._params},
              "feedback_params": {r: {k: getattr(d, k) for k in d._params}
                                  for r, d in ((r, rule_detector(r)) for r, *_ in FEEDBACK)},
              "kappa_cells": kcells, "kappa_false_alarms": kfa, "feedback_cells": fcells, "feedback_false_alarms": ffa,
              "seconds_by_part": seconds}
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["summary"] = summary(result)
    result["table"] = table(result)
    return result


# --- the report ------------------------------------------------------------------------------------

def _d(v: float) -> str:
    return "never" if not math.isfinite(v) else f"{v / 24:.1f}"


def _days(rec: dict) -> str:
    return f"{_d(rec['median_h'])}/{_d(rec['p90_h'])}"


def _hours(rec: dict) -> str:
    return f"{_h(rec['median_h'])}/{_h(rec['p90_h'])}"


def _r(a: dict, b: dict) -> str:
    return _ratio(a, b).replace("x", "×")


def summary(result: dict) -> dict:
    """Median delay ratios of each rule to the oracle (finite ones: min, max) and the false alerts."""
    def span(cells, key):
        r = [c["ours"]["median_h"] / c[key]["median_h"] for c in cells
             if math.isfinite(c["ours"]["median_h"]) and math.isfinite(c[key]["median_h"]) and c[key]["median_h"] > 0]
        return [round(min(r), 2), round(max(r), 2)] if r else None

    out: dict = {}
    groups = {KAPPA_RULE: result["kappa_cells"]}
    for rule, *_ in FEEDBACK:
        groups[rule] = [c for c in result["feedback_cells"] if c["rule"] == rule]
    for rule, cells in groups.items():
        out[rule] = {"rule_over_oracle": span(cells, "oracle"), "rule_over_oracle_c": span(cells, "oracle_c"),
                     "rule_over_oracle_s": span(cells, "oracle_s"),
                     "never": sum(not math.isfinite(c["ours"]["median_h"]) for c in cells), "cells": len(cells)}
    for f in result["kappa_false_alarms"]:
        key = "false_alerts_healthy" if f["kappa"] == HEALTHY else "false_alerts_grey"
        d = out[KAPPA_RULE].setdefault(key, {"firings": 0, "series_years": 0.0})
        d["firings"] += f["firings"]
        d["series_years"] += f["series_years"]
    for f in result["feedback_false_alarms"]:
        d = out[f["rule"]].setdefault("false_alerts", {"firings": 0, "series_years": 0.0})
        d["firings"] += f["firings"]
        d["series_years"] += f["series_years"]
    return out


def table(result: dict) -> str:
    kp = result["kappa_params"]
    pl = result["plan"]
    w = 11
    lines = [f"judge rules against the information limit (budget {result['budget']:g} false alerts per series-year; "
             f"run in {result['seconds']:.0f} s)", "",
             f"judge_agreement_drop (KappaDrop: last {kp['pairs']} pairs <= {kp['max_age'] / DAY:.0f} d, daily, "
             f"bar {kp['bar']}, healthy {kp['healthy']}): {pl['k_seeds']} series a cell, kappa {HEALTHY} for "
             f"{K_HISTORY} d, then the step; delay median/p90 in days ({K_HORIZON} d to detect)",
             f"{'pairs/day':>9} {'p':>5} {'kappa':>9}  {'rule':>{w}} {'det':>5}  {'oracle':>{w}} {'oracle/c':>{w}} "
             f"{'oracle~':>{w}}  {'rule/oracle':>11} {'rule/oracle/c':>13} {'rule/oracle~':>12}"]
    for c in result["kappa_cells"]:
        lines.append(f"{c['per_day']:>9,} {c['prevalence']:>5.2f} {c['before']:>4.1f}→{c['after']:<3.1f}  "
                     f"{_days(c['ours']):>{w}} {c['ours']['detected']:>5.0%}  {_days(c['oracle']):>{w}} "
                     f"{_days(c['oracle_c']):>{w}} {_days(c['oracle_s']):>{w}}  {_r(c['ours'], c['oracle']):>11} "
                     f"{_r(c['ours'], c['oracle_c']):>13} {_r(c['ours'], c['oracle_s']):>12}")
    early = sum(c["false_alerts_before_change"] for c in result["kappa_cells"])
    lines += [f"(firings before the change, healthy judge, all cells: {early})", "",
              "judge_agreement_drop false alerts / series-year on stable judges (after a "
              f"{K_WARM}-d warm-up; firings in brackets)",
              f"{'pairs/day':>9} {'p':>5} {'series-yrs':>10}  {'kappa 0.8 (healthy)':>20}  {'kappa 0.7 (grey zone)':>22}"]
    fa = result["kappa_false_alarms"]
    for v, p in dict.fromkeys((f["per_day"], f["prevalence"]) for f in fa):
        row = {f["kappa"]: f for f in fa if f["per_day"] == v and f["prevalence"] == p}
        a, b = row[HEALTHY], row[GREY]
        lines.append(f"{v:>9,} {p:>5.2f} {a['series_years']:>10.0f}  "
                     f"{a['per_series_year']:>13.3g} ({a['firings']:>3})  {b['per_series_year']:>15.3g} ({b['firings']:>4})")
    lines += ["", f"feedback rules (RateCusum, rule defaults): {pl['f_seeds']} series a cell, {F_HISTORY} d of history, "
              f"{F_HORIZON} d to detect; delay median/p90 (h: hours, d: days)",
              f"{'rule':<24} {'events/day':>10} {'share':>9}  {'rule':>{w}} {'det':>5}  {'oracle':>{w}} {'oracle/c':>{w}} "
              f"{'oracle~':>{w}}  {'rule/oracle':>11} {'rule/oracle/c':>13} {'rule/oracle~':>12}"]
    for c in result["feedback_cells"]:
        lines.append(f"{c['rule']:<24} {c['per_day']:>10,} {c['before']:>4.2f}→{c['after']:<4.2f}  "
                     f"{_hours(c['ours']):>{w}} {c['ours']['detected']:>5.0%}  {_hours(c['oracle']):>{w}} "
                     f"{_hours(c['oracle_c']):>{w}} {_hours(c['oracle_s']):>{w}}  {_r(c['ours'], c['oracle']):>11} "
                     f"{_r(c['ours'], c['oracle_c']):>13} {_r(c['ours'], c['oracle_s']):>12}")
    early = sum(c["false_alerts_before_change"] for c in result["feedback_cells"])
    lines += [f"(firings before the change, all cells: {early})", "",
              f"feedback rules false alerts / series-year on stable streams (after a {F_WARM}-d warm-up; firings in brackets)",
              f"{'rule':<24} {'events/day':>10} {'series-yrs':>10} {'false alerts/yr':>16}"]
    for f in result["feedback_false_alarms"]:
        lines.append(f"{f['rule']:<24} {f['per_day']:>10,} {f['series_years']:>10.1f} "
                     f"{f['per_series_year']:>10.3g} ({f['firings']:>3})")
    lines += ["", "notes:",
              "- oracle: a CUSUM on the true per-event log-likelihood ratio (2x2 cell of a pair; Bernoulli share), "
              "h = log(N / r), N events a year; oracle~: h = log(N D / r), D = KL(before || after) per event (the "
              "threshold rule of our CUSUMs); oracle/c: the oracle's alarm at the first close (a bucket's end + 10 min "
              "lateness) that could raise it: for kappa (daily, pairs before the bucket's end only) the close of the "
              "bucket the crossing pair fell in, for the CUSUMs (hourly, every event arrived) the next close.",
              "- delays: to the event after which the alarm exists; p90 'never' when over a tenth of the series were not "
              "detected in the horizon."]
    for rule, params in result["feedback_params"].items():
        short = sorted(c["per_day"] for c in result["feedback_cells"]
                       if c["rule"] == rule and c["per_day"] * params["baseline"] / DAY < params["min_ref_n"])
        if short:
            lines.append(f"- {rule} at {', '.join(f'{v:,}' for v in short)} events/day: its {params['baseline'] / DAY:.0f}-day "
                         f"reference holds fewer than min_ref_n = {params['min_ref_n']} events, so its CUSUM never runs.")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run("--quick" in sys.argv)
    print(res["table"])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")
    if "--quick" not in sys.argv:  # under "judge" in results.json, the other keys kept
        doc = {}
        if os.path.exists(out):
            with open(out) as fh:
                doc = json.load(fh)
        doc["judge"] = res
        with open(out, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {out}")
