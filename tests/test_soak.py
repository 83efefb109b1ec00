"""Soak: `drift serve` under sustained traffic (``benchmarks/soak.py``), short and long.

The short run (always on, ~75 s) produces 2,000 events/s for one minute at ``--volume 0.1``, so
event time covers ~38 days: every rule window and baseline (the longest is 7 + 14 days) fills
and turns over and alerts fire and resolve, which is the state a long-running service is in.
It asserts that the service drains to zero lag, consumes everything, exits 0, and that its RSS
at the end is within ``SHORT_MAX_GROWTH`` of the RSS after the first 10 % of the run.

Why 10 %: measured on the shared (busy) 2-core machine, the service sits at ~127-129 MB after
warm-up and ended +1.18 %, +1.34 % and +1.44 % above it in three one-minute runs; single samples
in between spiked to +5.2 % (a transient ~5 MB, e.g. while checkpoints are encoded), so a 5 %
bound on one minute would be at the mercy of where the last sample lands. 10 % of ~127 MB is ~13 MB
over the ~110,000 events after warm-up: a leak of more than ~110 bytes per event (or a buffer
that grows with the number of alerts, series or checkpoints) fails it. The long run's own
criterion is the stricter 5 %, where 30 minutes average the transients out.

The long run (``DRIFT_SLOW_TESTS=1``): ``python -m benchmarks.soak --minutes 30`` with its
defaults; it must pass its own verdicts (growth < 5 %, lag bounded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kafka

SHORT_MAX_GROWTH = 10.0  # percent, see the module docstring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _soak(tmp_path, *args: str, timeout: float) -> tuple[int, dict, str]:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "benchmarks.soak", "--out", str(out), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the soak stops the service and the broker it started
        try:
            text, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        pytest.fail(f"the soak did not finish in {timeout:g} s:\n{text[-3000:]}")
    assert out.exists(), f"no results (exit {proc.returncode}):\n{text[-3000:]}"
    return proc.returncode, json.loads(out.read_text()), text


def test_short_soak_drains_and_memory_stays_flat(tmp_path):
    # the judge join is a bounded cache of scores waiting for labels (engine.join_max_entries): it
    # fills during a run with no labels; a small bound is full before the warm-up ends, so what is
    # measured after it is growth beyond every bound
    code, r, text = _soak(tmp_path, "--minutes", "1", "--volume", "0.1", "--sample-every", "2",
                          "--max-growth", str(SHORT_MAX_GROWTH), "--serve-env", "DRIFT_ENGINE_JOIN_MAX_ENTRIES=2000",
                          timeout=240)
    print("\n" + "\n".join(text.splitlines()[-8:]))
    assert r["service_exit_code"] == 0, text[-3000:]
    # lag back to zero, everything produced consumed, nothing rejected
    assert r["lag_final"] == 0 and r["samples"][-1]["backlog"] == 0, text[-3000:]
    assert r["messages_consumed"] == r["messages_produced"] > 0
    assert r["events_consumed"] == r["events_produced"]
    assert r["dlq"] == 0
    assert r["event_time_span_days"] > 21, "windows and baselines must have filled and turned over"
    assert r["alerts"] > 0
    # memory after warm-up
    assert r["rss_growth_pct"] < SHORT_MAX_GROWTH, (r["rss_warmup_mb"], r["rss_final_mb"])
    assert code == 0, text[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DRIFT_SLOW_TESTS") != "1",
                    reason="30-minute soak: set DRIFT_SLOW_TESTS=1 to run it")
def test_thirty_minute_soak(tmp_path):
    code, r, text = _soak(tmp_path, "--minutes", "30", timeout=30 * 60 + 600)
    print("\n" + "\n".join(text.splitlines()[-8:]))
    assert r["service_exit_code"] == 0
    assert r["lag_final"] == 0 and r["messages_consumed"] == r["messages_produced"]
    assert r["rss_growth_ok"], (r["rss_warmup_mb"], r["rss_final_mb"], r["rss_growth_pct"])
    assert r["lag_bounded"], (r["lag_max_after_warmup"], r["backlog_max_after_warmup"], r["lag_limit"])
    assert code == 0
