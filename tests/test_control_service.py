"""A baseline reset on a live `drift serve`, through Kafka (the real embedded broker).

`drift baseline reset` (the CLI, in a subprocess) sends the command on the control topic; the
running service resolves the open quality_drop episodes (the firing alerts' ids), records info
alerts, stays quiet for 30 days at the accepted level, and fires again, a new episode, when the
score really drops from there. Every alert id on the topic equals the offline engine's for the
same events and the same reset. A malformed command lands in the DLQ with the reason, and a
restart after the reset does not apply it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from drift.core.alerts import to_cloudevent
from drift.core.config import load_settings
from drift.core.engine import Engine
from kafka_harness import ServeProcess, messages_of, produce, read_topic, service_topics
from test_baseline_reset import DAY, T0, _stream

pytestmark = pytest.mark.kafka


def _level(day):
    rel = 0.85 if day < 20 else (0.72 if day < 54 else 0.62)
    return rel, 0.97, 0.02, 1.0, 0.80


RESET_AT = T0 + 24 * DAY


@pytest.fixture(scope="module")
def phases():
    first = _stream(5, 24.0, _level, per_hour=8, apps=("bot",))
    rest = _stream(5, 64.0, _level, per_hour=8, apps=("bot",), start=24.0)
    eng = Engine(load_settings())
    expected = eng.feed(first)
    expected += eng.reset_baseline("quality_drop", "bot", at=RESET_AT, by="alice", reason="prompt v7 accepted")
    expected += eng.feed(rest)
    return first, rest, expected


@pytest.fixture
def topics(topic_factory):
    return service_topics(topic_factory, control=True)


def _alerts(broker, topics):
    return [json.loads(r.value) for r in read_topic(broker.bootstrap, topics["alerts"])]


def _reset_cli(broker, topics, *extra):
    env = dict(os.environ, **{f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()})
    out = subprocess.run([sys.executable, "-m", "drift.cli", "baseline", "reset", "--rule", "quality_drop",
                          "--app", "bot", "--bootstrap-servers", broker.bootstrap, "--json", *extra],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    return json.loads(line)


def test_reset_on_a_live_service_resolves_stays_quiet_and_fires_again(broker, topics, phases):
    first, rest, expected = phases
    fired = {a.alert_id for a in expected if a.rule == "quality_drop" and a.status == "firing"
             and a.starts_at < "2026-01-25"}
    assert len(fired) == 2  # bot/a and bot/b, before the reset
    group = f"g-{uuid.uuid4().hex[:6]}"
    n = produce(broker.bootstrap, topics, messages_of(first, seed=1))
    svc = ServeProcess(broker.bootstrap, group, topics)
    try:
        svc.wait_consumed(n)
        svc.wait_for(lambda: {a["data"]["alert_id"] for a in _alerts(broker, topics)
                              if a["type"] == "drift.alert.firing"} >= fired, 120, "the drop fires")
        # a command nobody can read goes to the DLQ with the reason; the service goes on
        produce(broker.bootstrap, topics, [("control", b"bot/a", b'{"command": "baseline_reset", "app": "bot"}')])
        sent = _reset_cli(broker, topics, "--at", "2026-01-25T00:00:00Z", "--by", "alice",
                          "--reason", "prompt v7 accepted")
        assert sent["key"] is None and sorted(sent["partitions"]) == [0, 1, 2]  # no --intent: every partition
        assert sent["command"]["ts"] == "2026-01-25T00:00:00.000Z"
        svc.wait_for(lambda: svc.metric("drift_control_commands_total") >= 3, 120, "the command on 3 partitions")
        resolved = lambda: {a["data"]["alert_id"] for a in _alerts(broker, topics)  # noqa: E731
                            if a["type"] == "drift.alert.resolved"}
        svc.wait_for(lambda: resolved() >= fired, 60, "the episodes resolved by the reset")
        n += produce(broker.bootstrap, topics, messages_of(rest, seed=2)) + 1
        svc.wait_consumed(n + 3)
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 2, 60, "a checkpoint")
    finally:
        assert svc.stop() == 0
    got = _alerts(broker, topics)
    # the same alerts as the offline engine with the same reset: ids and statuses, one for one
    want = sorted(to_cloudevent(a)["id"] for a in expected)
    assert sorted(a["id"] for a in got) == want
    by_id = {a["id"]: a["data"] for a in got}
    for aid in fired:
        r = by_id[f"{aid}/resolved"]
        assert r["ends_at"].startswith("2026-01-25") and "resolved by a baseline reset by alice" in r["summary"]
    info = [a["data"] for a in got if a["data"]["rule"] == "baseline_reset"]
    assert sorted(d["labels"]["intent"] for d in info) == ["a", "b"]
    assert all("prompt v7 accepted" in d["summary"] for d in info)
    drops = [a["data"] for a in got if a["data"]["rule"] == "quality_drop" and a["type"] == "drift.alert.firing"]
    later = [d for d in drops if d["alert_id"] not in fired]
    assert sorted(d["labels"]["intent"] for d in later) == ["a", "b"]  # fires again after the real drop...
    assert all(d["starts_at"] >= "2026-02-24" for d in later)  # ...and not before it (quiet at the new level)
    dlq = read_topic(broker.bootstrap, topics["dlq"])
    assert [(dict(r.headers)["x-error-class"], dict(r.headers)["x-error-message"]) for r in dlq] == [
        (b"bad_command", b"rule: required")]

    # a restart from the checkpoint does not run the command again (its offset was committed)
    again = ServeProcess(broker.bootstrap, group, topics)
    try:
        again.wait_for(lambda: again.metric('drift_state_restores_total{result="restored"}') >= 1, 60, "restored")
        again.wait_for(lambda: again.metric("drift_assigned_partitions") >= 18, 60, "assigned")
    finally:
        assert again.stop() == 0
    assert not [line for line in again.lines if line.get("msg") == "control command"]
    assert sorted(a["id"] for a in _alerts(broker, topics)) == want
