"""Engine state per series: bytes per series per rule kind, the checkpoint's size and cost (issue 17).

The fleet of issue 17: ``pairs`` app/intents, each with the default rules over four quality
dimensions (relevance, coherence, faithfulness, format) plus ``refusal`` (a flag) and
``format_valid`` (a check), six series per app/intent, fed ``hours`` hours of a few events per
series per hour so every rule has allocated its rows. Reported:

* **bytes per series per rule kind**: the detector's arrays (its window/baseline aggregate
  included) divided by the series it watches, with the arrays' capacity trimmed to the series
  (arrays grow by doubling; the slack is not state);
* **engine RSS** of the process after feeding (``ru_maxrss``: an upper bound, Python included);
* **checkpoint**: the encoded size of the whole engine state and the time to encode and decode it
  (``drift.runtime.checkpoint``), i.e. what ``drift serve`` writes every ``checkpoint_interval``.

``python -m benchmarks --only state`` (or ``python -m benchmarks.state [--quick]``). The issue's
target is 100,000 series within 2 GiB: about 21 KB per series, Python's overhead included.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict

import numpy as np

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.runtime.checkpoint import decode_checkpoint, encode_checkpoint, new_checkpoint

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


def _events(pairs: int, hours: int, per_hour: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    apps = [f"app{i // 10}" for i in range(pairs)]
    intents = [f"i{i % 10}" for i in range(pairs)]
    cols: dict = defaultdict(list)
    for h in range(hours):
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
    cols = _events(pairs, hours, per_hour)
    t = time.perf_counter()
    eng.feed(cols)
    feed_s = time.perf_counter() - t
    kinds: dict = defaultdict(lambda: [0, 0])
    for r in eng.runners.values():
        n = len(r.sids)
        kinds[r.kind.name][0] += _nbytes(r.detector, n)
        kinds[r.kind.name][1] += n
    t = time.perf_counter()
    raw = encode_checkpoint(new_checkpoint("g", "llm.scores", 0, 0, eng))
    enc_s = time.perf_counter() - t
    t = time.perf_counter()
    decode_checkpoint(raw)
    dec_s = time.perf_counter() - t
    series = sum(len(st.series) for st in eng.state.values())
    return {"pairs": pairs, "series": series, "events": len(cols["ts"]), "feed_s": round(feed_s, 2),
            "bytes_per_series": {k: round(b / max(n, 1)) for k, (b, n) in sorted(kinds.items())},
            "series_per_kind": {k: n for k, (_, n) in sorted(kinds.items())},
            "detector_bytes": sum(b for b, _ in kinds.values()),
            "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "checkpoint_bytes": len(raw), "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3)}


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    sizes = (50,) if quick else (200, 1000)
    rows = [measure(p) for p in sizes]
    lines = ["engine state per series (default rules; 4 quality dimensions + refusal + format_valid per app/intent)"]
    for r in rows:
        per = ", ".join(f"{k} {v / 1024:.1f} KB ({r['series_per_kind'][k]} series)"
                        for k, v in r["bytes_per_series"].items())
        lines.append(f"  {r['pairs']} app/intents, {r['series']} series: {per}")
        avg = r["detector_bytes"] / max(r["series"], 1)
        lines.append(f"    detector state {avg / 1024:.1f} KB per series on average (100,000 series: "
                     f"{avg * 100_000 / 2**30:.2f} GiB; the target is 2 GiB with Python), process RSS "
                     f"{r['maxrss_mb']:.0f} MB; checkpoint {r['checkpoint_bytes'] / 2**20:.1f} MB "
                     f"({r['checkpoint_bytes'] / max(r['series'], 1) / 1024:.1f} KB per series), encode "
                     f"{r['encode_s']:.2f} s, decode {r['decode_s']:.2f} s")
    return {"name": "state", "quick": quick, "rows": rows, "table": "\n".join(lines),
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    import json
    import sys

    res = run("--quick" in sys.argv)
    print(res.pop("table"))
    print(json.dumps(res, indent=1))
