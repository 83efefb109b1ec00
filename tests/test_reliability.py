"""Crash points in the commit order, and unusable checkpoints, against the real broker."""

import json
import uuid

import pytest

from drift.runtime.checkpoint import FORMAT_VERSION, MAGIC, decode_checkpoint, encode_checkpoint
from kafka_harness import ServeProcess, alert_ids, messages_of, produce, read_topic
from test_service import _all_consumed, cleanup_events, topics  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("point", ["produced", "confirmed", "state_written"])
def test_crash_at_each_step_of_the_commit_order(broker, topics, cleanup_events, point):  # noqa: F811
    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60, seed=3)
    produce(broker.bootstrap, topics, msgs)
    group = f"g-{uuid.uuid4().hex[:6]}"
    env = {"DRIFT_SERVICE_MAX_POLL_RECORDS": "300"}
    crashing = ServeProcess(broker.bootstrap, group, topics, {**env, "DRIFT_FAULT_INJECT": f"{point}:3"})
    assert crashing.proc.wait(600) == 70
    crashing._reader.join(5)
    assert any(d.get("msg") == "fault injected: exiting abruptly" and d.get("point") == point for d in crashing.lines)
    second = ServeProcess(broker.bootstrap, group, topics, env)
    try:
        second.wait_for(lambda: _all_consumed(broker, topics, group), 180, "all input committed")
    finally:
        assert second.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected


def test_unusable_checkpoints_are_rejected_visibly_with_a_safe_fallback(broker, topics, cleanup_events):  # noqa: F811
    from kafka import KafkaProducer

    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60, seed=4)
    half = len(msgs) // 2
    produce(broker.bootstrap, topics, msgs[:half])
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = ServeProcess(broker.bootstrap, group, topics)
    try:
        first.wait_for(lambda: _all_consumed(broker, topics, group), 180, "first half committed")
    finally:
        assert first.stop() == 0
    states = read_topic(broker.bootstrap, topics["state"])
    latest = {}
    for r in states:
        if r.value[:4] == MAGIC:  # manifests (chunk records are keyed {key}/{chunk})
            latest[r.key] = r.value
    key, good = sorted(latest.items())[0]
    cp = decode_checkpoint(good)
    bad_checksum = good[:-10] + bytes(10)
    old_format = MAGIC + bytes([FORMAT_VERSION + 7]) + good[5:]
    cp.fingerprint = "someotherconfig"
    other_config = encode_checkpoint(cp)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for raw in (old_format, other_config, bad_checksum):  # the newest is the corrupted one
        p.send(topics["state"], key=key, value=raw)
    p.flush()
    produce(broker.bootstrap, topics, msgs[half:])
    second = ServeProcess(broker.bootstrap, group, topics)
    try:
        second.wait_for(lambda: _all_consumed(broker, topics, group), 180, "all input committed")
        assert second.metric('drift_state_restores_total{result="rejected"}') == 3
    finally:
        assert second.stop() == 0
    reasons = [d["reason"] for d in second.lines if d.get("msg") == "unusable checkpoint skipped"]
    assert any("checksum" in r for r in reasons) and any("format" in r for r in reasons)
    assert any("another rule configuration" in r for r in reasons)
    records = read_topic(broker.bootstrap, topics["alerts"])
    notices = [json.loads(r.value) for r in records if json.loads(r.value)["data"]["rule"] == "state_restore"]
    assert len(notices) == 3 and all("restored the previous checkpoint" in n["data"]["summary"] for n in notices)
    drift_ids = {json.loads(r.value)["id"] for r in records} - {n["id"] for n in notices}
    assert sorted(drift_ids) == expected  # the fallback state gives the uninterrupted result
