"""Operating characteristic: detection delay and false alarms across traffic volumes, against the limit.

For a rate rule (a flag or check failure rate of 2 %, rising by the minimum effect 2x, 1.5x and
3x of it: 2x, 3x, 6x) and a mean rule (Beta scores, mean 0.84, sd 0.11, falling 5 %, 7.5 %,
15 %), at 10 to 10,000 events per series per day (100,000 with ``--full``), after 14 days of
stable history:

* **ours**: the sequential rules (``cusum_rate``, ``cusum_mean``) at the default budget of one
  false alert per 10,000 series-years;
* **oracle**: a CUSUM that knows the true rates/distributions before and after, at the same
  budget (``h = log(N / r)``): the information limit no detector can beat on average;
* **windowed**: today's built-in rules (``flag_rate_spike`` and ``format_failure_spike`` as
  ``RateRatio``, ``quality_drop`` as ``PercentDrop``) with their shipped parameters.

Median and 90th-percentile delay (hours) over ``seeds`` independent series per cell; a change
not detected within 30 days counts as never. False alerts per series-year are measured on stable
runs: ours at an affordable budget of 1 per series-year (the default's 1e-4 is bounded
analytically, e^-h per excursion), the windowed rules as shipped.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from detectors.drop import PercentDrop
from detectors.rate import RateRatio
from detectors.sequential import YEAR, MeanCusum, RateCusum, grouped_cusum
from drift.core.config import DEFAULT_RULES

DAY = 86400.0
HISTORY = 14
HORIZON = 30
P0 = 0.02
MEAN, SD = 0.84, 0.11
BUDGET = 1e-4


def _beta(mean, sd=SD):
    k = mean * (1 - mean) / sd**2 - 1
    return mean * k, (1 - mean) * k


def _arrivals(rng, n_series, per_day, days):
    n = rng.poisson(per_day * days, n_series)
    s = np.repeat(np.arange(n_series), n)
    t = rng.uniform(0, days * DAY, s.size)
    o = np.argsort(t, kind="stable")
    return s[o], t[o]


def _first_after(findings, n, start):
    first = [math.inf] * n
    for f in findings:
        if f.status == "firing" and f.at >= start and first[f.series] == math.inf:
            first[f.series] = (f.at - start) / 3600
    return np.array(first)


def _oracle_delay(s, t, g, n, h, start):
    """First crossing of ``h`` after ``start`` of the CUSUM on the true log-likelihood ratios ``g``."""
    order, groups, starts, S = grouped_cusum(s, g[:, None], np.zeros((n, 1)))
    hit = (S[:, 0] >= h) & (t[order] >= start)
    out = np.full(n, math.inf)
    for grp in range(n):
        lo, hi = starts[grp], (starts[grp + 1] if grp + 1 < n else S.shape[0])
        idx = np.flatnonzero(hit[lo:hi])
        if idx.size:
            out[grp] = (t[order][lo + idx[0]] - start) / 3600
    return out


def _stats(d):
    d = np.asarray(d, dtype=float)
    med, p90 = float(np.median(d)), float(np.percentile(d, 90)) if np.isfinite(np.percentile(d, 90)) else math.inf
    return {"median_h": med, "p90_h": p90, "detected": float(np.isfinite(d).mean())}


@dataclasses.dataclass
class Cell:
    rule: str
    per_day: int
    effect: float
    ours: dict
    oracle: dict
    windowed: dict


def rate_cell(per_day, mult, seeds, rng):
    ratio = 2.0 * mult
    p1 = min(P0 * ratio, 0.99)
    days = HISTORY + HORIZON
    s, t = _arrivals(rng, seeds, per_day, days)
    after = t >= HISTORY * DAY
    x = (rng.random(t.size) < np.where(after, p1, P0)).astype(float)
    start = HISTORY * DAY
    ours = _first_after(RateCusum(ratio=2.0, min_rate=0.01).update_many(s, t, x), seeds, start)
    g = np.where(x > 0.5, math.log(p1 / P0), math.log((1 - p1) / (1 - P0)))
    oracle = _oracle_delay(s, t, g, seeds, math.log(per_day * 365.25 / BUDGET), start)
    fp = DEFAULT_RULES["flag_rate_spike"]["params"]
    win = _first_after(RateRatio(**fp).update_many(s, t, x), seeds, start)
    return Cell("rate", per_day, ratio, _stats(ours), _stats(oracle), _stats(win))


def mean_cell(per_day, mult, seeds, rng):
    drop = 0.05 * mult
    days = HISTORY + HORIZON
    s, t = _arrivals(rng, seeds, per_day, days)
    after = t >= HISTORY * DAY
    a0, b0 = _beta(MEAN)
    a1, b1 = _beta(MEAN * (1 - drop))
    x = np.where(after, rng.beta(a1, b1, t.size), rng.beta(a0, b0, t.size))
    start = HISTORY * DAY
    ours = _first_after(MeanCusum(threshold=0.05).update_many(s, t, x), seeds, start)
    from scipy import stats

    g = stats.beta.logpdf(x, a1, b1) - stats.beta.logpdf(x, a0, b0)
    oracle = _oracle_delay(s, t, g, seeds, math.log(per_day * 365.25 / BUDGET), start)
    qp = DEFAULT_RULES["quality_drop"]["params"]
    win = _first_after(PercentDrop(**qp).update_many(s, t, x), seeds, start)
    return Cell("mean", per_day, drop, _stats(ours), _stats(oracle), _stats(win))


def false_alarms(per_day, n_series, days, rng):
    """False alerts per series-year on stable data: ours at a budget of 1, the windowed rules as shipped."""
    s, t = _arrivals(rng, n_series, per_day, days)
    years = n_series * (days - 16) * DAY / YEAR
    x = (rng.random(t.size) < P0).astype(float)
    a0, b0 = _beta(MEAN)
    q = rng.beta(a0, b0, t.size)

    def count(findings):
        return sum(f.status == "firing" and f.at > 16 * DAY for f in findings) / years

    return {"per_day": per_day, "series_years": years,
            "rate_ours_at_budget_1": count(RateCusum(false_alarm_rate=1.0, min_rate=0.01).update_many(s, t, x)),
            "rate_windowed": count(RateRatio(**DEFAULT_RULES["flag_rate_spike"]["params"]).update_many(s, t, x)),
            "mean_ours_at_budget_1": count(MeanCusum(false_alarm_rate=1.0).update_many(s, t, q)),
            "mean_windowed": count(PercentDrop(**DEFAULT_RULES["quality_drop"]["params"]).update_many(s, t, q))}


def _fmt(d):
    m = d["median_h"]
    return "never" if not math.isfinite(m) else (f"{m:.0f} h" if m < 72 else f"{m / 24:.1f} d")


def run(quick: bool = False, full: bool = False) -> dict:
    seeds = 5 if quick else 20
    volumes = [100, 1000] if quick else ([10, 100, 1000, 10000] + ([100000] if full else []))
    mults = [1.0, 3.0] if quick else [1.0, 1.5, 3.0]
    rng = np.random.default_rng(2026)
    cells = []
    t0 = time.perf_counter()
    for per_day in volumes:
        for mult in mults:
            cells.append(rate_cell(per_day, mult, seeds, rng))
            cells.append(mean_cell(per_day, mult, seeds, rng))
    fa_days = 60 if quick else 120
    fa = [false_alarms(v, 20 if quick else int(np.clip(3e6 / (v * fa_days), 5, 60)), fa_days, rng)
          for v in volumes if v <= 10000]
    lines = [f"{'rule':<5} {'events/day':>10} {'effect':>7}  {'oracle':>8} {'ours':>8} {'ours/oracle':>11} {'windowed':>9}"]
    for c in cells:
        o, u = c.oracle["median_h"], c.ours["median_h"]
        ratio = u / o if math.isfinite(u) and math.isfinite(o) and o > 0 else (1.0 if u == o else math.inf)
        eff = f"{c.effect:.0f}x" if c.rule == "rate" else f"-{100 * c.effect:.1f}%"
        lines.append(f"{c.rule:<5} {c.per_day:>10,} {eff:>7}  {_fmt(c.oracle):>8} {_fmt(c.ours):>8} "
                     f"{ratio:>10.1f}x {_fmt(c.windowed):>9}")
    lines.append("")
    lines.append(f"{'false alerts / series-year':<28} {'rate ours@1':>12} {'rate windowed':>14} {'mean ours@1':>12} {'mean windowed':>14}")
    for f in fa:
        lines.append(f"{f['per_day']:>10,} events/day{'':<8} {f['rate_ours_at_budget_1']:>12.3f} {f['rate_windowed']:>14.3f} "
                     f"{f['mean_ours_at_budget_1']:>12.3f} {f['mean_windowed']:>14.3f}")
    table = "\n".join(lines)
    return {"name": "operating", "seeds": seeds, "seconds": round(time.perf_counter() - t0, 1), "budget": BUDGET,
            "cells": [dataclasses.asdict(c) for c in cells], "false_alarms": fa, "table": table}


def plot(result: dict, path: str) -> str:
    """Median delay against volume, one panel per rule: ours, the oracle and the windowed rule."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110)
    for i, rule in enumerate(("rate", "mean")):
        ax = fig.add_subplot(1, 2, i + 1)
        cells = [c for c in result["cells"] if c["rule"] == rule]
        effects = sorted({c["effect"] for c in cells})
        colors = ["#1f77b4", "#2ca02c", "#d62728"]
        for e, color in zip(effects, colors):
            row = sorted((c for c in cells if c["effect"] == e), key=lambda c: c["per_day"])
            vol = [c["per_day"] for c in row]
            label = f"{e:.0f}x" if rule == "rate" else f"-{100 * e:.1f}%"
            for who, style in (("ours", "-"), ("oracle", ":"), ("windowed", "--")):
                # an alarm at the close of the bucket the change fell in counts 0 h: drawn at 0.1 h
                y = [max(c[who]["median_h"], 0.1) if math.isfinite(c[who]["median_h"]) else np.nan for c in row]
                ax.plot(vol, y, style, color=color, marker="o", ms=3,
                        label=f"{label} {who}" if e == effects[0] or who == "ours" else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events per series per day")
        ax.set_ylabel("median detection delay (hours)")
        ax.set_title("rate rule (2 % base)" if rule == "rate" else "mean rule (Beta 0.84 ± 0.11)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"delay vs volume at {result['budget']:g} false alerts per series-year "
                 "(solid: ours, dotted: oracle CUSUM, dashed: windowed rules; missing: not detected in 30 days)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


if __name__ == "__main__":
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true", help="also 100,000 events per series per day")
    a = p.parse_args()
    r = run(a.quick, a.full)
    print(r["table"])
    if not a.quick:
        path = os.path.join(os.path.dirname(__file__), "operating.json")
        with open(path, "w") as fh:
            json.dump({k: v for k, v in r.items() if k != "table"}, fh, indent=1)
        print(f"wrote {path} and {plot(r, path.replace('.json', '.png'))}")
