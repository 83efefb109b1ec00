"""Throughput of `drift replay`'s path, stage by stage, against its competitors (issue 17, part 3).

Two workloads, JSON lines of 100 events (what ``drift replay`` reads):

* ``sim``: the simulator's ``prompt_cleanup`` scenario, 30 days at volume 1 (947,500 score and
  retrieval events, 90 series; the figure of ``bench_replay``);
* ``100k``: 100,000 series (16,667 app/intents × the 6 score dimensions of ``benchmarks.state``),
  one event per series per hour for 8 hours, in time order, with trace ids, costs, models and
  prompt hashes as the simulator writes them.

Stages, each timed alone on the same lines, best of 3 in one run:

* ``read``: reading the lines only (``iter_lines``) -- competitor;
* ``json.loads`` of every line -- competitor;
* ``msgspec``: decoding every line into the event structs, nothing else -- the decode floor;
* ``decode``: :meth:`EventDecoder.decode <drift.core.events.EventDecoder.decode>` (decode,
  validate, columns), in ``replay``'s chunks;
* ``engine``: :meth:`Engine.run <drift.core.engine.Engine.run>` over the decoded chunks (the
  engine alone: series, clocks, judge join, cost records, rules, detectors); for ``100k``, after
  a first hour that registers the series (timed on its own as ``first hour``);
* ``replay``: ``drift replay`` end to end (for ``100k``, registration included).

One more engine run, not in the best-of-3 figures, splits the engine's time by where it goes:
the detectors (``RuleRunner.run``), the judge join and cost records (``JudgeJoin.offer_scores``,
``TraceCost.offer``, ``Engine._run_cost``), and the rest (routing: series ids, clocks, change
tracking, values per rule).
"""

from __future__ import annotations

import collections
import os
import time

import numpy as np

PAIRS = 16_667  # app/intents: × 6 dimensions = 100,002 series
DIMS = ("relevance", "coherence", "faithfulness", "format", "refusal", "format_valid")
T0 = 1767225600  # 2026-01-01T00:00:00Z


def write_series_lines(path: str, pairs: int, hours: int, per_line: int = 100, seed: int = 0) -> int:
    """``pairs`` app/intents × :data:`DIMS`, one event per series per hour, in time order, as
    JSON lines of ``per_line`` events; returns the number of events."""
    import msgspec

    rng = np.random.default_rng(seed)
    enc = msgspec.json.Encoder()
    apps = np.array([f"app{i // 10}" for i in range(pairs)], dtype=object)
    intents = np.array([f"i{i % 10}" for i in range(pairs)], dtype=object)
    n = 0
    with open(path, "wb") as fh:
        for h in range(hours):
            t = T0 + h * 3600 + np.sort(rng.integers(0, 3_600_000, pairs)) / 1000.0
            order = rng.permutation(pairs)  # requests of the hour in time order, app/intents mixed
            ts = np.datetime_as_string((t * 1000).astype("datetime64[ms]"), unit="ms")
            events = []
            for j, p in enumerate(order.tolist()):
                tid = f"{rng.integers(1 << 62):016x}{h:04x}{j:012x}"
                common = {"ts": ts[j] + "Z", "app": apps[p], "intent": intents[p], "prompt_hash": "454f78e46d82",
                          "model": "gpt-4o-2024-08-06", "trace_id": tid, "cost_usd": 0.004}
                for d in DIMS:
                    score = (float(rng.random() < (0.02 if d == "refusal" else 0.97)) if d in ("refusal", "format_valid")
                             else round(float(rng.beta(17, 3)), 4))
                    events.append({**common, "dimension": d, "score": score})
            for i in range(0, len(events), per_line):
                fh.write(enc.encode(events[i:i + per_line]) + b"\n")
            n += len(events)
    return n


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _chunks(lines: list[bytes], chunk: int = 20_000, chunk_bytes: int = 8 << 20) -> list[list[bytes]]:
    """The lines cut as ``drift replay`` cuts them (``chunk`` lines or ``chunk_bytes`` bytes)."""
    out, buf, size = [], [], 0
    for line in lines:
        buf.append(line)
        size += len(line)
        if len(buf) >= chunk or size >= chunk_bytes:
            out.append(buf)
            buf, size = [], 0
    if buf:
        out.append(buf)
    return out


def _split(settings, decoded: list) -> dict:
    """Seconds of one engine run over ``decoded``, by where they go (see the module docstring)."""
    from drift.core import cost, engine, judge

    spent: collections.Counter = collections.Counter()
    patched = [(engine.RuleRunner, "run", "detectors"), (judge.JudgeJoin, "offer_scores", "join + cost"),
               (cost.TraceCost, "offer", "join + cost"), (engine.Engine, "_run_cost", "join + cost")]
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in patched]

    def timed(fn, label):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[label] += time.perf_counter() - t0
        return wrapper

    for (cls, name, label), (_, _, fn) in zip(patched, originals):
        setattr(cls, name, timed(fn, label))
    try:
        eng = engine.Engine(settings)
        t0 = time.perf_counter()
        for d in decoded:
            eng.run(d)
        total = time.perf_counter() - t0
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    # _run_cost's detectors are inside both wrappers: count them once, as detectors
    return {"detectors": spent["detectors"], "join + cost": spent["join + cost"],
            "routing": total - spent["detectors"] - spent["join + cost"], "total": total}


def _measure(label: str, path: str, warm_lines: int = 0) -> dict:
    """Every stage on the lines of ``path`` (``warm_lines`` first lines fed to the engine untimed)."""
    import json

    import msgspec

    from drift.core.config import load_settings
    from drift.core.engine import Engine
    from drift.core.events import AnyEvent
    from drift.runtime.replay import iter_lines, replay

    settings = load_settings()
    lines = [line for _, _, line in iter_lines([path])]
    dec = Engine(settings).decoder()
    chunks = _chunks(lines)
    s = {}
    s["read"], n_lines = _best(lambda: sum(1 for _ in iter_lines([path])))
    s["json.loads"], _ = _best(lambda: [json.loads(line) for line in lines])
    floor = msgspec.json.Decoder(AnyEvent | list[AnyEvent]).decode
    s["msgspec"], _ = _best(lambda: [floor(line) for line in lines])
    s["decode"], decoded = _best(lambda: [dec.decode(c) for c in chunks])
    assert not any(d.rejected for d in decoded)
    n = sum(d.n_events for d in decoded)
    del decoded
    warm = _chunks(lines[:warm_lines])
    timed = _chunks(lines[warm_lines:])
    warm_d = [dec.decode(c) for c in warm]
    timed_d = [dec.decode(c) for c in timed]
    n_timed = sum(d.n_events for d in timed_d)

    def engine_run():
        eng = Engine(settings)
        t0 = time.perf_counter()
        for d in warm_d:
            eng.run(d)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for d in timed_d:
            eng.run(d)
        return first, time.perf_counter() - t0

    runs = [engine_run() for _ in range(3)]
    first_s = min(r[0] for r in runs)
    s["engine"] = min(r[1] for r in runs)
    s["replay"], rep = _best(lambda: replay([path], settings))
    assert rep.n_events == n and not rep.rejected
    split = _split(settings, timed_d)
    return {"label": label, "lines": n_lines, "events": n, "engine_events": n_timed, "seconds": s,
            "first_hour_s": first_s if warm_lines else None, "alerts": len(rep.alerts), "split_s": split}


def run(quick: bool, tmpdir: str | None = None) -> list[dict]:
    import tempfile

    from drift.tools.simulate import simulate, write_jsonl

    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        sim_path = os.path.join(tmp, "sim.jsonl")
        write_jsonl(simulate("prompt_cleanup", days=12 if quick else 30, volume=0.2 if quick else 1.0), sim_path,
                    batch=100)
        pairs = 334 if quick else PAIRS
        series_path = os.path.join(tmp, "series.jsonl")
        write_series_lines(series_path, pairs, hours=3 if quick else 8)
        per_hour_lines = -(-pairs * len(DIMS) // 100)
        results = [_measure("sim", sim_path), _measure(f"{pairs * len(DIMS) // 1000}k", series_path,
                                                        warm_lines=per_hour_lines)]
    rows, lines = [], ["throughput (issue 17 part 3): events/s, best of 3 (µs per event in brackets)"]
    for r in results:
        s, n, ne = r["seconds"], r["events"], r["engine_events"]
        rate = {k: (ne if k == "engine" else n) / v for k, v in s.items()}
        tag = r["label"]
        rows += [
            {"name": f"replay_{tag}", "events": n, "ours": rate["replay"], "competitor": "reading the lines only",
             "competitor_events": n, "competitor_rate": rate["read"], "ratio": rate["replay"] / rate["read"],
             "notes": f"drift replay end to end, 100 events/line, {r['alerts']} alerts"},
            {"name": f"decode_{tag}", "events": n, "ours": rate["decode"], "competitor": "json.loads (no validation)",
             "competitor_events": n, "competitor_rate": rate["json.loads"],
             "ratio": rate["decode"] / rate["json.loads"], "notes": "decode + validate + columns"},
            {"name": f"engine_{tag}", "events": ne, "ours": rate["engine"], "competitor": "msgspec decode only (floor)",
             "competitor_events": n, "competitor_rate": rate["msgspec"], "ratio": rate["engine"] / rate["msgspec"],
             "notes": "Engine.run on decoded batches" + (", series registered" if r["first_hour_s"] else "")},
        ]
        lines.append(f"  {tag}: {n:,} events, {r['lines']:,} lines")
        for k in ("read", "json.loads", "msgspec", "decode", "engine", "replay"):
            lines.append(f"    {k:<12} {rate[k]:>12,.0f} /s  ({1e6 / rate[k]:6.2f} µs)")
        if r["first_hour_s"]:
            fh = r["events"] - r["engine_events"]
            lines.append(f"    {'first hour':<12} {fh / r['first_hour_s']:>12,.0f} /s  (engine, registering "
                         f"{pairs * len(DIMS):,} series)")
        sp = r["split_s"]
        lines.append("    engine split: " + ", ".join(f"{k} {v / ne * 1e6:.2f} µs" for k, v in sp.items()))
    doc = {"name": "throughput", "workloads": results, "table": "\n".join(lines)}
    return rows + [doc]


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(row.get("table") or row)
