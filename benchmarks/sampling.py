"""Judge sampling: ``drift sample-plan``'s predicted detection delays against the real engine.

``python -m benchmarks --only sampling`` (or ``python -m benchmarks.sampling [--quick]``).

* **The plan's prediction.** Seed 0's ``stable`` traffic (``drift.tools.simulate.simulate``,
  volume 1: about 530 requests a day per intent), its first 14 days of ``support-bot`` events
  written as JSONL as ``drift simulate`` writes them, read by ``drift sample-plan``'s reader, and
  the plan made with ``--min-rate = --max-rate = r`` (the rate forced) and ``--dimension
  relevance``: its predicted median delay of a 5 % drop for ``support-bot/billing``.
* **The measurement.** For each seed, ``stable`` traffic (volume 1); ``support-bot/billing``'s
  ``relevance`` scores are multiplied by 0.95 from a change time drawn uniformly in days 16-23
  (after the 14-day reference and its 2-day guard; any hour and weekday); the requests are
  sampled by :class:`drift.sampling.Sampler` at rate ``r`` (by trace id: a request's scores are
  all in or all out); the sampled relevance scores go through :class:`drift.core.engine.Engine`
  with the default rules (every seed and rate its own series of one engine: series are
  independent, each with its own event-time clock); the delay is from the change to the
  ``starts_at`` of the first ``quality_drop`` alert of that series at or after it (the end of the
  hour whose evaluation fired), ``HORIZON`` days to detect (never, beyond). Firing alerts before
  the change are counted as false.
* Median over the seeds (a seed not detected within ``HORIZON`` days counts as never, +inf, so a
  median exists only where more than half were detected) against the prediction (the median of the
  model's delay distribution, never included): ``|measured / predicted - 1| <= 25 %``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

APP, INTENT, DIM = "support-bot", "billing", "relevance"
DROP = 0.05
CHANGE_DAYS = (16.0, 23.0)  # the change: uniform in this range of days from the start
HORIZON = 30  # days after the change to detect
RATES = (0.05, 0.1, 0.2, 0.5)
SEEDS = 40
TOLERANCE = 0.25


def _log(msg: str) -> None:
    print(f"  [sampling] {msg}", file=sys.stderr, flush=True)


def predicted(rates, *, days: int = 14, seed: int = 0) -> dict[float, float | None]:
    """The plan's predicted median delay (days) for APP/INTENT at each forced rate."""
    import msgspec

    from drift.core.config import load_settings
    from drift.tools.sample_plan import RuleModel, make_plan, read_requests
    from drift.tools.simulate import iter_events, simulate

    sim = simulate("stable", seed=seed, days=days, volume=1.0)
    enc = msgspec.json.Encoder()
    out: dict[float, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "requests.jsonl")
        with open(path, "wb") as fh:
            for e in iter_events(sim):
                if e.get("app") == APP:
                    fh.write(enc.encode(e) + b"\n")
        settings = load_settings()
        rule = RuleModel.from_settings(settings)
        loads, profile, nd = read_requests(path, dimension=DIM, settings=settings, rule=rule)
        loads = [ld for ld in loads if (ld.app, ld.intent) == (APP, INTENT)]
        for r in rates:
            plan = make_plan(loads, judge_cost=0.001, min_rate=r, max_rate=r, drop=DROP, rule=rule, profile=profile,
                             days=nd)
            out[r] = plan["intents"][0]["delay_days"]
    return out


def measured(rates, seeds, *, horizon: int = HORIZON) -> dict:
    """Delays (days; inf = not within ``horizon``) per rate, one per seed, through the real engine."""
    from drift.core.config import load_settings
    from drift.core.engine import Engine
    from drift.sampling import Sampler
    from drift.tools.simulate import simulate

    days = int(math.ceil(CHANGE_DAYS[1] + horizon)) + 1
    per_rate: dict[float, list[dict]] = {r: [] for r in rates}
    changes = {}
    for s in seeds:
        sim = simulate("stable", seed=s, days=days, volume=1.0)
        sc = sim.scores
        sel = (sc["app"] == APP) & (sc["intent"] == INTENT) & (sc["dimension"] == DIM)
        t = sc["ts"][sel]
        x = sc["score"][sel].copy()
        ids = sc["trace_id"][sel]
        change = sim.start + np.random.default_rng([s, 7]).uniform(*CHANGE_DAYS) * 86400.0
        changes[s] = change
        x = np.where(t >= change, np.round(x * (1 - DROP), 4), x)
        for r in rates:
            take = Sampler(rates={f"{APP}/{INTENT}": r}, default=0.0).decide_many(ids, app=APP, intent=INTENT)
            per_rate[r].append({"seed": s, "t": t[take], "x": x[take]})
    out = {}
    for r in rates:
        t0 = time.perf_counter()
        engine = Engine(load_settings())
        cols = [(f"{INTENT}~{d['seed']}", d["t"], d["x"]) for d in per_rate[r]]
        series = np.concatenate([np.full(c[1].size, k) for k, c in enumerate(cols)])
        tt = np.concatenate([c[1] for c in cols])
        xx = np.concatenate([c[2] for c in cols])
        order = np.argsort(tt, kind="stable")
        series, tt, xx = series[order], tt[order], xx[order]
        names = np.array([c[0] for c in cols], dtype=object)
        alerts = []
        day = 86400.0
        edges = np.searchsorted(tt, np.arange(math.floor(tt[0] / day), math.ceil(tt[-1] / day) + 1) * day)
        for a, b in zip(edges[:-1], edges[1:]):
            if b > a:
                alerts += engine.feed({"ts": tt[a:b].tolist(), "app": [APP] * int(b - a),
                                       "intent": names[series[a:b]].tolist(), "dimension": [DIM] * int(b - a),
                                       "score": xx[a:b].tolist()}, stream="scores")
        first: dict[str, float] = {}
        false = 0
        for al in alerts:
            if al.rule != "quality_drop" or al.status != "firing" or al.starts_at is None:
                continue
            seed = int(al.labels["intent"].split("~")[1])
            at = _dt.datetime.fromisoformat(al.starts_at.replace("Z", "+00:00")).timestamp()
            if at < changes[seed]:
                false += 1
                continue
            key = str(seed)
            if key not in first:
                first[key] = (at - changes[seed]) / day
        delays = [first.get(str(d["seed"]), math.inf) for d in per_rate[r]]
        delays = [d if d <= horizon else math.inf for d in delays]
        n_ev = int(tt.size)
        out[r] = {"delays": delays, "false_alerts": false, "events_per_day": n_ev / len(seeds) / days,
                  "seconds": round(time.perf_counter() - t0, 1)}
        _log(f"rate {r:g}: {n_ev:,} events, median {np.median(delays):.2f} d, "
             f"{sum(math.isinf(d) for d in delays)} not within {horizon} d, {false} false [{out[r]['seconds']} s]")
    return out


def compare(rates=RATES, n_seeds: int = SEEDS, horizon: int = HORIZON) -> dict:
    """Predicted vs measured median delay per rate (rows), and whether each is within TOLERANCE."""
    t0 = time.perf_counter()
    pred = predicted(rates)
    _log(f"predicted: {pred} [{time.perf_counter() - t0:.0f} s]")
    meas = measured(rates, range(n_seeds), horizon=horizon)
    rows = []
    for r in rates:
        d = np.asarray(meas[r]["delays"], dtype=np.float64)
        med = float(np.median(d))
        p = pred[r]
        ratio = med / p if p and math.isfinite(med) else math.inf
        rows.append({"rate": r, "events_per_day": round(meas[r]["events_per_day"], 1),
                     "predicted_days": p, "measured_median_days": round(med, 3) if math.isfinite(med) else None,
                     "measured_q25_days": round(float(np.quantile(d, 0.25)), 3),
                     "measured_q75_days": round(float(np.quantile(d, 0.75)), 3) if np.isfinite(np.quantile(d, 0.75)) else None,
                     "not_detected": int(np.isinf(d).sum()), "seeds": int(d.size),
                     "false_alerts": meas[r]["false_alerts"], "ratio": round(ratio, 3),
                     "ok": bool(abs(ratio - 1) <= TOLERANCE)})
    return {"rows": rows, "seconds": round(time.perf_counter() - t0, 1)}


def run(quick: bool = False) -> dict:
    res = compare((0.2,), 20, 10) if quick else compare()
    lines = [f"Sampling (drift sample-plan): predicted vs measured median delay of a {100 * DROP:g}% relevance drop, "
             f"{APP}/{INTENT}, volume 1, real engine",
             f"{'rate':>6} {'evals/d':>8} {'predicted':>10} {'measured':>10} {'q25-q75':>14} {'ratio':>6} "
             f"{'missed':>7} {'false':>5}  ok"]
    for r in res["rows"]:
        q75 = f"{r['measured_q75_days']:.1f}" if r["measured_q75_days"] is not None else "never"
        lines.append(f"{r['rate']:>6.2f} {r['events_per_day']:>8.1f} {r['predicted_days'] or math.inf:>9.2f}d "
                     f"{r['measured_median_days'] or math.inf:>9.2f}d {r['measured_q25_days']:>6.1f}-{q75:<7} "
                     f"{r['ratio']:>6.2f} {r['not_detected']:>3}/{r['seeds']:<3} {r['false_alerts']:>5}  "
                     f"{'yes' if r['ok'] else 'NO'}")
    return {"name": "sampling", "table": "\n".join(lines), **res, "all_ok": all(r["ok"] for r in res["rows"])}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = run(quick)
    print(result["table"])
    out = os.path.join(os.path.dirname(__file__), "sampling.json")
    if not quick:
        with open(out, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"wrote {out}")
