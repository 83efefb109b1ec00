"""Issue 12's must-shows over all seeds: stable traffic at every volume, every scenario at low
volume, and the stress traffic, through the real decoder and engine with the default rules.

``python -m benchmarks --only volumes`` (or ``python -m benchmarks.volumes``). The tests run
seed 0 of each (``tests/test_volumes.py``); this runs seeds 0-2 and, for the record, every
scenario on the stress traffic too (not asserted anywhere: a series at 4 requests a day may
need longer than 60 days).

* ``stable``, 180 days, volumes 0.05 / 0.2 / 1 / 5 (about 30 to 3,000 events per series a
  day), with the simulator's hour-of-day mean cycles: alerts (the target is 0);
* every SPEC scenario at volume 0.2, 60 days: detected by its expected rule, with the right
  suspected cause, false alerts, delay (``input_shift`` embeds every query with the real
  encoder; skipped when the embedding extra is missing);
* ``stable`` with ``stress=True`` (per-series volumes over three orders of magnitude, 10x
  day/night, mean cycles on every app, 3 % zero scores, intent-mix changes), 90 days at volume
  0.2, and every score scenario on the same stress traffic.
"""

from __future__ import annotations

import json
import os
import sys
import time

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.tools.scorecard import replay_simulation, score
from drift.tools.simulate import simulate

SCORE_SCENARIOS = ("prompt_cleanup", "provider_update", "rag_staleness", "truncation", "refusal_spike")


def _engine_for(scenario):
    if scenario != "input_shift":
        return Engine(load_settings())
    from drift.embeddings.encoder import Encoder
    from drift.embeddings.golden import GoldenSet
    from drift.tools.simulate import QUERY_APPS, golden_texts

    enc = _engine_for.encoder = getattr(_engine_for, "encoder", None) or Encoder()
    golden = {app: GoldenSet.build(golden_texts(app, per_intent=40), enc) for app in QUERY_APPS}
    return Engine(load_settings(), golden=golden, encoder_factory=lambda: enc)


def one(scenario, seed, days, volume, stress=False) -> dict:
    t0 = time.perf_counter()
    sim = simulate(scenario, seed=seed, days=days, volume=volume, stress=stress)
    alerts, rejected, engine = replay_simulation(sim, _engine_for(scenario))
    card = score(sim.truth, alerts)
    firing = [a for a in alerts if a["data"]["status"] == "firing"]
    row = {"scenario": scenario, "seed": seed, "days": days, "volume": volume, "stress": stress,
           "events": sum(v for k, v in engine.counts.items() if k.endswith(".events")),
           "seconds": round(time.perf_counter() - t0, 1), "rejected": len(rejected), "firing": len(firing),
           "false_alerts": [f"{a['subject']} at {a['data']['starts_at'][:16]}" for a in card.false_alerts],
           "changes": [{"what": c.what, "detected": c.detected, "cause_ok": c.cause_ok,
                        "rules": {r: round(d / 3600, 1) for r, d in c.rules_fired.items()},
                        "missed": c.missed_series} for c in card.changes]}
    ok = (not card.false_alerts and all(c.detected and c.cause_ok for c in card.changes)
          and (card.changes or not firing))
    row["ok"] = bool(ok)
    print(f"  {scenario:<16} seed {seed} vol {volume:<5} {'stress ' if stress else ''}{days:>3} d: "
          f"{row['events']:>11,} events, {row['firing']:>3} firing, "
          f"{len(row['false_alerts'])} false, "
          + ("; ".join(f"{c['what']} {'caught' if c['detected'] else 'MISSED'} by "
                       f"{', '.join(f'{r} {h:g} h' for r, h in c['rules'].items()) or '-'}"
                       f"{'' if c['cause_ok'] or not c['detected'] else ' (WRONG CAUSE)'}" for c in row["changes"])
             or "no change")
          + f"  [{row['seconds']:.0f} s]", file=sys.stderr, flush=True)
    return row


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    if quick:  # the smoke test: one short run of each kind
        rows = [one("stable", 0, 20, 0.05), one("prompt_cleanup", 0, 30, 0.2), one("stable", 0, 20, 0.2, stress=True)]
        return _result(rows, t0)
    seeds = (0, 1, 2)
    rows = []
    for volume in (0.05, 0.2, 1.0, 5.0):
        for seed in seeds:
            rows.append(one("stable", seed, 180, volume))
    query: tuple[str, ...] = ()
    try:
        import sentence_transformers  # noqa: F401
        query = ("input_shift",)
    except ImportError:
        pass
    for scenario in SCORE_SCENARIOS + query:
        for seed in seeds:
            rows.append(one(scenario, seed, 60, 0.2))
    for scenario in ("stable",) + SCORE_SCENARIOS:
        for seed in seeds:
            rows.append(one(scenario, seed, 90 if scenario == "stable" else 60, 0.2, stress=True))
    return _result(rows, t0)


def _result(rows, t0) -> dict:
    lines = ["Volumes (issue 12): default rules and budget, real decoder and engine",
             f"{'run':<44} {'runs':>4} {'ok':>4} {'false':>5} {'events/run':>12} {'s/run':>6}"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = f"{r['scenario']} vol {r['volume']:g} {r['days']} d{' stress' if r['stress'] else ''}"
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        lines.append(f"{key:<44} {len(rs):>4} {sum(r['ok'] for r in rs):>4} "
                     f"{sum(len(r['false_alerts']) for r in rs):>5} {sum(r['events'] for r in rs) / len(rs):>12,.0f} "
                     f"{sum(r['seconds'] for r in rs) / len(rs):>6.0f}")
    table = "\n".join(lines)
    return {"name": "volumes", "rows": rows, "table": table, "seconds": round(time.perf_counter() - t0, 1),
            "all_ok_without_stress": all(r["ok"] for r in rows if not r["stress"])}


if __name__ == "__main__":
    res = run("--quick" in sys.argv)
    print(res["table"])
    out = os.path.join(os.path.dirname(__file__), "results.json")
    if "--quick" not in sys.argv and os.path.exists(out):
        with open(out) as fh:
            doc = json.load(fh)
        doc["volumes"] = res
        with open(out, "w") as fh:
            json.dump(doc, fh, indent=1)
