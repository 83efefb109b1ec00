"""cost_per_quality_rise against the information limit, at 10 to 10,000 requests a day.

Each series is one app/intent's requests: cost lognormal (median $0.004, sigma 0.6, as the
simulator), quality Beta(17, 3) (mean 0.85). After 14 days of history, at day 14 10:00 UTC, cost
per request is multiplied by ``factor`` at flat quality (context bloat: 1.4 is the issue's +40 %;
2.0 a doubling). ``seeds`` independent series per cell, every one of them through:

* **ours**: :class:`detectors.cost.CostRatio` with the rule's defaults (spend per quality point of
  the last 7 days, and of the last day, over the baseline week before them; daily looks; >= 30 % and
  significant at 1e-4 false alerts per series-year, split over the two tests);
* **week only**: the same with whole weeks only (``short_windows = []``), the issue's literal
  "this week against last week";
* **oracle**: a CUSUM on the true log-likelihood ratio of each request's log cost (it knows the
  median before and after and sigma; quality carries no information here), with Siegmund's
  threshold ``h = log(N D / r)`` at the same budget (:func:`detectors.sequential.cusum_threshold`)
  -- the delay no detector can beat on average at that false-alarm rate; and **oracle/d**, the same
  raised at the next daily close (the rule's cadence).

Delays are medians in days from the change to the alarm; "missed" counts series not detected
within 21 days. ``stable`` counts false alerts on series without a change over 365 days.
"""

from __future__ import annotations

import time

import numpy as np

from detectors.cost import CostRatio
from detectors.sequential import cusum_threshold

DAY = 86400.0
SIGMA = 0.6
CHANGE = 14 * DAY + 10 * 3600.0
HORIZON = 21  # days after the change


def _requests(rng, per_day, days, series):
    counts = rng.poisson(per_day * days, series)
    s = np.repeat(np.arange(series), counts)
    t = rng.uniform(0, days * DAY, s.size)
    o = np.lexsort((s, t))
    return s[o].astype(np.int64), t[o]


def _cell(per_day, factor, seeds, seed0=0):
    rng = np.random.default_rng([seed0, int(per_day), int(100 * factor)])
    days = 14 + HORIZON
    s, t = _requests(rng, per_day, days, seeds)
    after = t >= CHANGE
    z = rng.standard_normal(s.size)
    logc = np.log(0.004) + SIGMA * z + np.where(after, np.log(factor), 0.0)
    q = rng.beta(17, 3, s.size)
    x = np.column_stack([np.exp(logc), q, np.zeros(s.size)])
    t0 = time.perf_counter()
    ours, early = _delays(CostRatio(), s, t, x, seeds)
    took = time.perf_counter() - t0
    week, early_w = _delays(CostRatio(short_windows=()), s, t, x, seeds)
    # the oracle: CUSUM of the exact log-likelihood ratio of log cost, from the change on
    delta = np.log(factor)
    d = delta ** 2 / (2 * SIGMA ** 2)
    h = float(cusum_threshold(per_day * 365.25, 1e-4, drift=d))
    oracle = np.full(seeds, np.nan)
    oracle_d = np.full(seeds, np.nan)
    for k in range(seeds):
        m = (s == k) & after
        g = delta / SIGMA ** 2 * (logc[m] - np.log(0.004) - delta / 2)
        c = np.cumsum(g)
        stat = c - np.minimum(0, np.minimum.accumulate(c))
        hit = np.flatnonzero(stat >= h)
        if hit.size:
            at = t[m][hit[0]]
            oracle[k] = (at - CHANGE) / DAY
            oracle_d[k] = (np.ceil(at / DAY) * DAY - CHANGE) / DAY
    return {"per_day": per_day, "factor": factor, "seeds": seeds,
            "ours_median_days": _med(ours), "ours_missed": int(np.isnan(ours).sum()), "ours_early": early,
            "week_only_median_days": _med(week), "week_only_missed": int(np.isnan(week).sum()),
            "week_only_early": early_w,
            "oracle_median_days": _med(oracle), "oracle_daily_median_days": _med(oracle_d),
            "ratio_to_oracle_daily": _ratio(_med(ours), _med(oracle_d)), "h": round(h, 2),
            "events": int(s.size), "seconds": round(took, 2)}


def _delays(det, s, t, x, seeds):
    """Days from the change to each series' first firing (NaN: missed), and firings before it."""
    out = np.full(seeds, np.nan)
    early = 0
    for f in det.update_many(s, t, x):
        if f.status != "firing" or np.isfinite(out[f.series]):
            continue
        if f.at < CHANGE:
            early += 1
            continue
        out[f.series] = (f.at - CHANGE) / DAY
    return out, early


def _stable(per_day, series, days=365):
    rng = np.random.default_rng([7, int(per_day)])
    s, t = _requests(rng, per_day, days, series)
    x = np.column_stack([np.exp(np.log(0.004) + SIGMA * rng.standard_normal(s.size)), rng.beta(17, 3, s.size),
                         np.zeros(s.size)])
    found = CostRatio().update_many(s, t, x)
    found_w = CostRatio(short_windows=()).update_many(s, t, x)
    return {"per_day": per_day, "series_years": round(series * days / 365.25, 1),
            "false_alerts": sum(f.status == "firing" for f in found),
            "false_alerts_week_only": sum(f.status == "firing" for f in found_w), "events": int(s.size)}


def _med(v):
    v = v[np.isfinite(v)]
    return round(float(np.median(v)), 2) if v.size else None


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    volumes = (10, 100, 1000) if quick else (10, 100, 1000, 10_000)
    seeds = 4 if quick else 20
    rows = [_cell(v, f, seeds) for v in volumes for f in (1.4, 2.0)]
    stable = [_stable(10, 40 if quick else 400), _stable(1000, 2 if quick else 20)]
    lines = ["cost_per_quality_rise against the information limit (median days from the change; "
             f"{seeds} series a cell)"]
    for r in rows:
        lines.append(f"  {r['per_day']:>6}/day x{r['factor']}: ours {r['ours_median_days']} d "
                     f"(missed {r['ours_missed']}/{r['seeds']}), whole weeks only {r['week_only_median_days']} d "
                     f"(missed {r['week_only_missed']}), oracle {r['oracle_median_days']} d, "
                     f"oracle at the daily close {r['oracle_daily_median_days']} d, ratio {r['ratio_to_oracle_daily']}")
    for r in stable:
        lines.append(f"  stable {r['per_day']}/day: {r['false_alerts']} false alerts in {r['series_years']} "
                     f"series-years ({r['false_alerts_week_only']} with whole weeks only)")
    return {"name": "cost", "quick": quick, "rows": rows, "stable": stable, "table": "\n".join(lines),
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    import json
    import sys

    res = run("--quick" in sys.argv)
    print(res.pop("table"))
    print(json.dumps(res, indent=1))
