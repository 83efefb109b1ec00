"""Engine state per series: bytes per series per rule kind, the checkpoint's size and cost (issue 17).

The fleet of issue 17: ``pairs`` app/intents, each with the default rules over four quality
dimensions (relevance, coherence, faithfulness, format) plus ``refusal`` (a flag) and
``format_valid`` (a check), six series per app/intent, fed ``hours`` hours of a few events per
series per hour so every rule has allocated its rows. Reported:

* **bytes per series per rule kind**: the detector's arrays (its window/baseline aggregate
  included) divided by the series it watches, with the arrays' capacity trimmed to the series
  (arrays grow by doubling; the slack is not state);
* **engine RSS** of the process after feeding (``ru_maxrss``: an upper bound, Python included);
* **checkpoint**, as ``drift serve`` writes it every ``checkpoint_interval``
  (``drift.runtime.checkpoint.ChunkWriter``): the first (full) checkpoint's records, bytes, largest
  record and time; then 1 % of the app/intents, picked at random, get one more hour of events and
  the next checkpoint writes only the chunks that moved (its bytes and time against the full
  one); the full restore (every chunk decoded and verified, the engine loaded) and its time; and,
  for comparison, the whole state as one format-1 record (what the service wrote before).

``python -m benchmarks --only state`` (or ``python -m benchmarks.state [--quick] [--pairs=N ...]``;
16,667 app/intents are the issue's 100,000 series). The issue's
target is 100,000 series within 2 GiB: about 21 KB per series, Python's overhead included.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict

import numpy as np

from detectors.base import state_views
from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.runtime.checkpoint import ChunkWriter, decode_checkpoint, encode_checkpoint, new_checkpoint

T0 = 1767225600.0  # 2026-01-01
DIMS = ("relevance", "coherence", "faithfulness", "format", "refusal", "format_valid")


def _nbytes(obj, n: int) -> int:
    """Bytes of ``obj``'s per-series arrays trimmed to ``n`` rows (and of its aggregate's)."""
    total = 0
    for v in vars(obj).values():
        if isinstance(v, np.ndarray):
            rows = v.shape[0] if v.ndim else 1
            total += v.nbytes if rows < n or rows == 0 else v.nbytes // rows * n
        elif type(v).__module__.startswith("detectors.") and hasattr(v, "__dict__") and not callable(v):
            total += _nbytes(v, n)
    return total


def _events(pairs: int, hours: int, per_hour: int, seed: int = 0, only=None, start_h: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    which = np.arange(pairs) if only is None else np.asarray(only)
    apps = [f"app{i // 10}" for i in which]
    intents = [f"i{i % 10}" for i in which]
    pairs = len(which)
    cols: dict = defaultdict(list)
    for h in range(start_h, start_h + hours):
        for k in range(per_hour):
            ts = (T0 + h * 3600.0 + (k + rng.random(pairs)) * 3600.0 / per_hour).tolist()
            for d in DIMS:
                score = rng.beta(17, 3, pairs) if d not in ("refusal", "format_valid") else \
                    (rng.random(pairs) < (0.02 if d == "refusal" else 0.97)).astype(float)
                cols["ts"] += ts
                cols["app"] += apps
                cols["intent"] += intents
                cols["dimension"] += [d] * pairs
                cols["score"] += score.tolist()
                cols["trace_id"] += [f"{h}-{k}-{j}" for j in range(pairs)]
                cols["cost_usd"] += [0.004] * pairs
    return cols


def measure(pairs: int, hours: int = 30, per_hour: int = 2) -> dict:
    eng = Engine(load_settings())
    feed_s, n_events = 0.0, 0
    for h in range(hours):  # an hour at a time: 100,000 series' input would not fit in memory at once
        cols = _events(pairs, 1, per_hour, seed=h, start_h=h)
        t = time.perf_counter()
        eng.feed(cols)
        feed_s += time.perf_counter() - t
        n_events += len(cols["ts"])
        del cols
    kinds: dict = defaultdict(lambda: [0, 0])
    for r in eng.runners.values():
        n = len(r.sids)
        kinds[r.kind.name][0] += _nbytes(r.detector, n)
        kinds[r.kind.name][1] += n
    rss_mb = _rss_mb()  # the engine and its series, before any checkpoint
    cp = _checkpoints(eng, pairs, hours, per_hour)
    series = sum(len(st.series) for st in eng.state.values())
    return {"pairs": pairs, "series": series, "events": n_events, "feed_s": round(feed_s, 2),
            "bytes_per_series": {k: round(b / max(n, 1)) for k, (b, n) in sorted(kinds.items())},
            "series_per_kind": {k: n for k, (_, n) in sorted(kinds.items())},
            "detector_bytes": sum(b for b, _ in kinds.values()),
            "rss_mb": rss_mb, "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **cp}


def _rss_mb() -> float:
    """The process's resident memory now (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * resource.getpagesize() / 2**20, 1)
    except OSError:
        return float("nan")


def _checkpoints(eng: Engine, pairs: int, hours: int, per_hour: int) -> dict:
    writer = ChunkWriter()
    t = time.perf_counter()
    with state_views():  # as drift serve writes them
        full = writer.prepare(new_checkpoint("g", "llm.scores", 0, 0, eng))
    full_s = time.perf_counter() - t
    writer.commit(full)
    topic = dict(full.chunks)  # the newest record per chunk key, as a compacted topic holds it
    moved = np.random.default_rng(1).choice(pairs, max(1, pairs // 100), replace=False)
    eng.feed(_events(pairs, 1, per_hour, seed=2, only=np.sort(moved), start_h=hours))
    t = time.perf_counter()
    with state_views():
        inc = writer.prepare(new_checkpoint("g", "llm.scores", 0, 1, eng))
    inc_s = time.perf_counter() - t
    writer.commit(inc)
    topic.update(inc.chunks)
    t = time.perf_counter()
    restored = Engine(load_settings())
    with state_views():  # as drift serve restores: the engine takes the decoded arrays
        restored.load_state(decode_checkpoint(inc.manifest, chunks=topic).engine)
    restore_s = time.perf_counter() - t
    whole, whole_s = b"", float("nan")
    if pairs <= 2000:  # the one-record format needs several copies of the state in memory
        t = time.perf_counter()
        whole = encode_checkpoint(new_checkpoint("g", "llm.scores", 0, 0, eng))
        whole_s = time.perf_counter() - t
    rec = lambda w: sum(len(v) for _, v in w.records)  # noqa: E731
    return {"state_raw_bytes": full.full_bytes, "checkpoint_records": len(full.records),
            "checkpoint_bytes": rec(full), "max_record_bytes": max(len(v) for _, v in full.records + inc.records),
            "checkpoint_s": round(full_s, 3), "moved_pairs": int(moved.size),
            "incremental_records": len(inc.records), "incremental_bytes": rec(inc),
            "incremental_raw_share": round(inc.written_bytes / full.full_bytes, 4),
            "incremental_s": round(inc_s, 3), "incremental_time_share": round(inc_s / full_s, 3),
            "restore_s": round(restore_s, 3), "whole_record_bytes": len(whole), "whole_encode_s": round(whole_s, 3)}


def run(quick: bool = False, pairs: tuple[int, ...] = ()) -> dict:
    t0 = time.perf_counter()
    sizes = pairs or ((50,) if quick else (200, 1000))
    rows = [measure(p) for p in sizes]
    lines = ["engine state per series (default rules; 4 quality dimensions + refusal + format_valid per app/intent)"]
    for r in rows:
        per = ", ".join(f"{k} {v / 1024:.1f} KB ({r['series_per_kind'][k]} series)"
                        for k, v in r["bytes_per_series"].items())
        lines.append(f"  {r['pairs']} app/intents, {r['series']} series: {per}")
        avg = r["detector_bytes"] / max(r["series"], 1)
        lines.append(f"    detector state {avg / 1024:.1f} KB per series on average (100,000 series: "
                     f"{avg * 100_000 / 2**30:.2f} GiB; the target is 2 GiB with Python), process RSS "
                     f"{r['rss_mb']:.0f} MB after feeding (peak {r['maxrss_mb']:.0f} MB with the restored copy)")
        lines.append(f"    checkpoint: {r['checkpoint_records']} records, {r['checkpoint_bytes'] / 2**20:.1f} MB "
                     f"({r['state_raw_bytes'] / 2**20:.0f} MB raw), largest record {r['max_record_bytes'] / 1024:.0f} KB, "
                     f"{r['checkpoint_s']:.2f} s; after {r['moved_pairs']} app/intents (1 %) moved: "
                     f"{r['incremental_records']} records, {r['incremental_bytes'] / 2**20:.2f} MB, "
                     f"{100 * r['incremental_raw_share']:.1f} % of the raw state, {r['incremental_s']:.2f} s "
                     f"({100 * r['incremental_time_share']:.0f} % of the full one's time); full restore "
                     f"{r['restore_s']:.2f} s" + (f"; as one format-1 record {r['whole_record_bytes'] / 2**20:.1f} MB "
                                                  f"in {r['whole_encode_s']:.2f} s" if r["whole_record_bytes"] else ""))
    return {"name": "state", "quick": quick, "rows": rows, "table": "\n".join(lines),
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    import json
    import sys

    sizes = tuple(int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--pairs="))
    res = run("--quick" in sys.argv, sizes)
    print(res.pop("table"))
    print(json.dumps(res, indent=1))
