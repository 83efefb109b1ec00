"""Record the alert ids the engine gives on fixed inputs (the fixture ``fixtures/alert_ids.json``).

A refactor of the engine must not change which alerts fire and with which ids; a detection
change regenerates this fixture in a commit of its own::

    python tests/alert_id_fixture.py            # every simulate scenario, seeds 0-2, 30 days
    python tests/alert_id_fixture.py --demo     # also the demo's offline run (needs the encoder)

Each entry is the sorted list of ``"<alert_id>/<status>"`` of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "alert_ids.json"
SEEDS = (0, 1, 2)
DAYS = 30
# scenarios with tests of their own: labels/feedback (90 days for judge_drift) in
# tests/test_judge_scenarios.py, cost in tests/test_cost.py
JUDGE_SCENARIOS = ("judge_drift", "blind_spot", "context_bloat", "model_swap")


def ids_of(alerts) -> list[str]:
    return sorted(f"{a['data']['alert_id']}/{a['data']['status']}" for a in alerts)


def scenario_ids(name: str, seed: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from scenario_harness import run_scenario

    _, alerts, rejected = run_scenario(name, seed, days=DAYS, volume=1.0)
    assert rejected == []
    return ids_of(alerts)


def demo_ids(workdir: str) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "drift.cli", "demo", "--offline", "--workdir", workdir],
                       capture_output=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(r.stdout.decode()[-3000:] + r.stderr.decode()[-3000:])
    with open(os.path.join(workdir, "alerts.jsonl")) as fh:
        return ids_of(json.loads(line) for line in fh)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true", help="also record the demo's offline run")
    args = p.parse_args()
    from drift.tools.simulate import SCENARIOS

    out = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    for name in sorted(SCENARIOS):
        if name in JUDGE_SCENARIOS:
            continue
        for seed in SEEDS:
            out[f"simulate/{name}/seed{seed}"] = scenario_ids(name, seed)
            print(name, seed, len(out[f"simulate/{name}/seed{seed}"]), flush=True)
    if args.demo:
        with tempfile.TemporaryDirectory() as d:
            out["demo/offline/seed0"] = demo_ids(d)
        print("demo", len(out["demo/offline/seed0"]))
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
