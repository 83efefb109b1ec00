"""`drift serve` against the real embedded broker."""

import json
import signal
import uuid

import pytest

from drift.config import load_settings
from kafka_harness import ServeProcess, alert_ids, messages_of, produce, read_topic
from scenario_harness import run_lines

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def cleanup_events():
    """16 days of prompt_cleanup: alerts of several rules, with a known replay result."""
    import msgspec

    from drift.simulate import iter_events, simulate

    sim = simulate("prompt_cleanup", seed=0, days=16)
    events = list(iter_events(sim))
    enc = msgspec.json.Encoder()
    alerts, _, _ = run_lines([enc.encode(e) for e in events])
    return events, sorted(a["id"] for a in alerts)


@pytest.fixture
def topics(topic_factory):
    names = {"scores": topic_factory(3, "scores"), "retrieval": topic_factory(3, "retrieval"),
             "queries": topic_factory(3, "queries"), "alerts": topic_factory(1, "alerts"),
             "dlq": topic_factory(1, "dlq"), "state": topic_factory(1, "state")}
    return names


def test_parity_with_replay(broker, topics, cleanup_events):
    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60)
    assert any(isinstance(m[2], dict) for m in msgs) and any(isinstance(m[2], list) for m in msgs)
    produce(broker.bootstrap, topics, msgs)
    svc = ServeProcess(broker.bootstrap, f"g-{uuid.uuid4().hex[:6]}", topics)
    try:
        svc.wait_consumed(len(msgs))
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 1, 30, "a checkpoint")
    finally:
        assert svc.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected
    assert len(got) == len(expected)
    assert any(d.get("msg") == "stopped cleanly" for d in svc.lines)
