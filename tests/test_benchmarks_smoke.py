"""Smoke test of the benchmarks: ``python -m benchmarks --quick`` runs end to end.

Every benchmark (throughput against its competitor, the Kafka end-to-end run, detection quality
against river) runs at its quick sizes in a subprocess; the test checks that it exits 0 and
prints both tables. No timing is asserted: quick figures are not meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmarks_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    # the throughput table, one row per benchmark
    assert "ours (ev/s)" in text and "ratio" in text
    for name in ("ks_shift", "percent_drop", "rate_ratio", "decode", "replay", "kafka_e2e_1", "kafka_e2e_100"):
        assert f"\n{name} " in text, name
    # the detection-quality table: every scenario and every detector
    assert "detection quality:" in text
    for col in ("detected", "median h", "max h", "misses", "FA/30d"):
        assert col in text, col
    for scenario in ("prompt_cleanup", "provider_update", "rag_staleness", "truncation", "refusal_spike", "stable"):
        assert f"\n{scenario} " in text, scenario
    for det in ("ours", "ADWIN default", "ADWIN tuned", "PageHinkley default", "PageHinkley tuned",
                "KSWIN hourly means default", "KSWIN hourly means tuned", "naive threshold"):
        assert det in text, det
    assert "skipped input_shift" in text
    # both kinds of results are written
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert {r["name"] for r in doc["results"]} >= {"ks_shift", "decode", "replay", "kafka_e2e_1"}
    det = doc["detection"]
    assert {"adwin", "page_hinkley", "kswin"} == set(det["tuned"])
    assert det["rows"] and all(r["changes"] >= 1 for r in det["rows"] if r["scenario"] != "stable")
