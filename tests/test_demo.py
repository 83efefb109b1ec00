"""`drift demo`, the README's first command, end to end on the embedded broker."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import pytest

pytest.importorskip("sentence_transformers", reason="the embedding extra is not installed")
pytestmark = pytest.mark.kafka


def test_live_demo_detects_every_injected_failure_with_no_false_alerts(tmp_path):
    """`drift demo` (live, on the embedded broker) with ``--alertmanager URL`` pointing at a real
    Alertmanager (as tests/test_alertmanager.py starts one: loopback, every alert routed to a
    webhook receiver served here): every firing alert the demo wrote reaches the receiver exactly
    once, with alertname = the rule. Without Alertmanager the demo runs without the flag and only
    that part is left out (a warning says how to install it), not the demo's own checks."""
    from http_harness import Webhook
    from test_alertmanager import AM_BINARY, Alertmanager

    work = tmp_path / "demo"
    argv = [sys.executable, "-m", "drift.cli", "demo", "--workdir", str(work)]
    with contextlib.ExitStack() as cleanup:
        am = hook = None
        if os.path.exists(AM_BINARY) or shutil.which("prometheus-alertmanager"):
            hook = Webhook()
            cleanup.callback(hook.close)
            (tmp_path / "alertmanager").mkdir()
            am = Alertmanager(tmp_path / "alertmanager", hook.url)
            cleanup.callback(am.close)
            argv += ["--alertmanager", am.url]
        else:
            warnings.warn(f"Alertmanager not installed ({AM_BINARY}): `drift demo --alertmanager` left unchecked; "
                          "apt-get install prometheus-alertmanager, as `make test` does when it runs as root "
                          "(or set DRIFT_ALERTMANAGER_BINARY)", stacklevel=1)
        r = subprocess.run(argv, capture_output=True, timeout=900)
        out = r.stdout.decode()
        assert r.returncode == 0, out[-3000:] + r.stderr.decode()[-3000:]
        _check_demo(work, out)
        if am is not None:
            _check_delivered(work, out, am, hook)


def _check_demo(work, out):
    assert "started the embedded Kafka-compatible broker" in out
    for line in ("prompt_hash_change @", "provider_update @", "input_shift @", "rag_staleness @"):
        row = next(x for x in out.splitlines() if x.startswith(line))
        assert " yes " in row, row
    assert "false alerts: 0" in out
    assert "suspected cause: prompt_hash_change" in out
    png = work / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert (work / "alerts.jsonl").read_text().count("\n") >= 10
    # the same alert ids as the demo's offline run recorded before the engine was opened up
    # (tests/fixtures/alert_ids.json): the live service and the refactored engine agree with it
    from alert_id_fixture import FIXTURE, ids_of

    with open(work / "alerts.jsonl") as fh:
        got = ids_of(json.loads(line) for line in fh)
    assert got == json.loads(FIXTURE.read_text())["demo/offline/seed0"]
    # alerts carry example trace ids from the window that moved
    firing = [json.loads(x)["data"] for x in (work / "alerts.jsonl").read_text().splitlines()]
    assert any(d.get("example_trace_ids") for d in firing if d["status"] == "firing")


def _check_delivered(work, out, am, hook):
    """``--alertmanager``: Alertmanager accepted every alert and notified each firing one exactly
    once, with alertname = the rule and the alert's severity and labels (none resolved: all still fire)."""
    events = [json.loads(x)["data"] for x in (work / "alerts.jsonl").read_text().splitlines()]
    sent = [d for d in events if d["status"] in ("firing", "resolved")]
    assert f"sending firing and resolved alerts to Alertmanager: {am.url}" in out
    assert f"Alertmanager ({am.url}) accepted all {len(sent)} firing/resolved alerts" in out
    expected = {d["alert_id"]: {"alertname": d["rule"], "severity": d["severity"], **d["labels"]}
                for d in events if d["status"] == "firing"}
    assert len(expected) >= 10

    def notified() -> list[str]:
        return [a["annotations"]["alert_id"] for a in hook.alerts("firing")]

    hook.wait(lambda: set(notified()) >= set(expected), timeout=30, what="a notification for every firing alert")
    time.sleep(3)  # group_wait + group_interval, over again: a second notification would be here
    got = hook.alerts("firing")
    assert sorted(notified()) == sorted(expected), json.dumps(hook.notifications)[:3000]  # each exactly once
    assert {a["annotations"]["alert_id"]: a["labels"] for a in got} == expected
    assert hook.alerts("resolved") == []


def test_otel_demo_sends_otlp_through_the_ingest_stage_and_fires_the_same_alerts(tmp_path):
    """`drift demo --otel`: the scores as OTLP spans and gen_ai.evaluation.result log records
    (otlp_proto, to otlp_spans / otlp_logs), `drift ingest otlp` beside `drift serve`: the same
    alerts as the plain demo (the recorded alert ids), every failure detected, none false."""
    r = subprocess.run([sys.executable, "-m", "drift.cli", "demo", "--otel", "--workdir", str(tmp_path)],
                       capture_output=True, timeout=1200)
    out = r.stdout.decode()
    assert r.returncode == 0, out[-3000:] + r.stderr.decode()[-3000:]
    assert "started `drift ingest otlp`" in out and "as OTLP" in out
    for line in ("prompt_hash_change @", "provider_update @", "input_shift @", "rag_staleness @"):
        row = next(x for x in out.splitlines() if x.startswith(line))
        assert " yes " in row, row
    assert "false alerts: 0" in out
    assert "suspected cause: prompt_hash_change" in out
    from alert_id_fixture import FIXTURE, ids_of

    with open(tmp_path / "alerts.jsonl") as fh:
        got = ids_of(json.loads(line) for line in fh)
    assert got == json.loads(FIXTURE.read_text())["demo/offline/seed0"]
