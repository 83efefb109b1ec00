"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME | --skip NAME] [--out FILE]``.

Every measurement puts its competitor in the same run and prints the ratio; results go to
``benchmarks/results.json`` (unless ``--quick``, which is the smoke test CI runs). ``detection``
(detection quality against river's detectors, see ``benchmarks/detection.py``) prints its own table
and is written under the ``"detection"`` key; with ``--only`` the other entries of the file are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from benchmarks import (
    core,
    cost,
    detection,
    embedding,
    ingest,
    judge,
    kafka_e2e,
    operating,
    sampling,
    scale_out,
    state,
    throughput,
    volumes,
)


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test, figures not meaningful")
    p.add_argument("--only", action="append", help="run only these benchmarks (ks, drop_rate, decode, replay, kafka, ingest, detection, "
                   "operating, judge, embedding, volumes, sampling, cost, state, scale_out, throughput); repeatable")
    p.add_argument("--skip", action="append", default=[], help="run all benchmarks but these; repeatable")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results.json; none with --quick)")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = {"ks": lambda: core.bench_ks(args.quick),
                "drop_rate": lambda: core.bench_drop_rate(args.quick),
                "decode": lambda: [core.bench_decode(args.quick)],
                "replay": lambda: [core.bench_replay(args.quick, tmp)],
                "kafka": lambda: [kafka_e2e.run(20_000 if args.quick else 200_000, 1),
                                  kafka_e2e.run(100_000 if args.quick else 1_000_000, 100)],
                "ingest": lambda: ingest.run(args.quick),
                "detection": lambda: [detection.run(args.quick)],
                "operating": lambda: [operating.run(args.quick)],
                "judge": lambda: [judge.run(args.quick)],
                "volumes": lambda: [volumes.run(args.quick)],
                "sampling": lambda: [sampling.run(args.quick)],
                "cost": lambda: [cost.run(args.quick)],
                "state": lambda: [state.run(args.quick)],
                "scale_out": lambda: [scale_out.run(args.quick)],
                "throughput": lambda: throughput.run(args.quick, tmp),
                "embedding": lambda: embedding.bench_centroid(args.quick) + embedding.bench_encoder(args.quick)}
        for name, fn in plan.items():
            if (args.only and name not in args.only) or name in args.skip:
                continue
            t0 = time.perf_counter()
            print(f"running {name}…", file=sys.stderr, flush=True)
            for r in fn():
                results.append(r)
            print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    # throughput results have a ratio; others (detection quality) carry their own table
    others = {r["name"]: r for r in results if "ratio" not in r}
    results = [r for r in results if "ratio" in r]
    header = f"{'benchmark':<14} {'ours (ev/s)':>14}  {'competitor':<40} {'theirs (ev/s)':>14} {'ratio':>8}"
    if results:
        print(header)
        print("-" * len(header))
    for r in results:
        print(f"{r['name']:<14} {r['ours']:>14,.0f}  {r['competitor']:<40} {r['competitor_rate']:>14,.0f} "
              f"{r['ratio']:>7.{1 if r['ratio'] >= 0.1 else 3}f}×   {r['notes']}")
    for r in others.values():
        print()
        print(r["table"])
    out = args.out or (None if args.quick else os.path.join(os.path.dirname(__file__), "results.json"))
    if out:
        doc = {"machine": machine(), "quick": args.quick, "results": results, **others}
        if (args.only or args.skip) and os.path.exists(out):  # keep the benchmarks that were not run
            with open(out) as fh:
                old = json.load(fh)
            ran = {r["name"] for r in results}
            doc = {**old, **others, "machine": doc["machine"], "quick": args.quick,
                   "results": [r for r in old.get("results", []) if r["name"] not in ran] + results}
        with open(out, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
