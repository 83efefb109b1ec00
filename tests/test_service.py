"""`drift serve` against the real embedded broker."""

import json
import signal
import uuid

import pytest

from drift.core.config import load_settings
from drift.runtime.checkpoint import MAX_RECORD, checkpoints_from_records
from kafka_harness import ServeProcess, alert_ids, committed, messages_of, produce, read_topic
from scenario_harness import run_lines

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def cleanup_events():
    """16 days of prompt_cleanup: alerts of several rules, with a known replay result."""
    import msgspec

    from drift.tools.simulate import iter_events, simulate

    sim = simulate("prompt_cleanup", seed=0, days=16)
    events = list(iter_events(sim))
    enc = msgspec.json.Encoder()
    alerts, _, _ = run_lines([enc.encode(e) for e in events])
    return events, sorted(a["id"] for a in alerts)


@pytest.fixture
def topics(topic_factory):
    names = {"scores": topic_factory(3, "scores"), "retrieval": topic_factory(3, "retrieval"),
             "queries": topic_factory(3, "queries"), "labels": topic_factory(3, "labels"),
             "feedback": topic_factory(3, "feedback"), "alerts": topic_factory(1, "alerts"),
             "dlq": topic_factory(1, "dlq"), "state": topic_factory(1, "state")}
    return names


def test_parity_with_replay(broker, topics, cleanup_events):
    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60)
    assert any(m[2][:1] == b"{" for m in msgs) and any(m[2][:1] == b"[" for m in msgs)  # single events and arrays
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
    # the state: chunk records and manifests, each at most 1 MB, one whole checkpoint per engine
    state = read_topic(broker.bootstrap, topics["state"])
    assert state and max(len(r.value) for r in state) <= MAX_RECORD
    newest = checkpoints_from_records(state)
    assert sorted(cp.partition for cp in newest.values() if cp.topic == topics["scores"]) == [0, 1, 2]
    assert sum(v for cp in newest.values() for k, v in cp.engine["counts"].items() if k.endswith(".events")) == len(events)


def _half_way(svc, total):
    svc.wait_for(lambda: svc.metric("drift_messages_consumed_total") >= total * 0.4, 180, "40% consumed")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_mid_stream_loses_nothing(broker, topics, cleanup_events, sig):
    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60, seed=1)
    produce(broker.bootstrap, topics, msgs)
    group = f"g-{uuid.uuid4().hex[:6]}"
    # small polls so the stop lands mid-stream, between checkpoints
    env = {"DRIFT_SERVICE_MAX_POLL_RECORDS": "200"}
    first = ServeProcess(broker.bootstrap, group, topics, env)
    _half_way(first, len(msgs))
    code = first.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    before = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    second = ServeProcess(broker.bootstrap, group, topics, env)
    try:
        restored = lambda: second.metric('drift_state_restores_total{result="restored"}')  # noqa: E731
        second.wait_for(lambda: restored() >= 1, 60, "state restored")
        second.wait_for(lambda: _all_consumed(broker, topics, group), 180, "all input committed")
        consumed_after_restart = second.metric("drift_messages_consumed_total")
    finally:
        assert second.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected, "the restarted run must equal an uninterrupted one"
    # repeats only of ids already delivered before the stop (at-least-once, same ids)
    from collections import Counter
    dup = [i for i, n in Counter(got).items() if n > 1]
    assert set(dup) <= set(before)
    # the second process did not start from scratch: it resumed from restored state
    assert consumed_after_restart < len(msgs)


def test_two_instances_split_partitions_and_take_over(broker, topics, cleanup_events):
    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60, seed=2)
    half = len(msgs) // 2
    produce(broker.bootstrap, topics, msgs[:half])
    group = f"g-{uuid.uuid4().hex[:6]}"
    a = ServeProcess(broker.bootstrap, group, topics)
    a.wait_for(lambda: a.get("/readyz")[0] == 200, 60, "a ready")
    b = ServeProcess(broker.bootstrap, group, topics)
    try:
        b.wait_for(lambda: b.metric("drift_assigned_partitions") > 0 and a.metric("drift_assigned_partitions") > 0
                   and a.metric("drift_assigned_partitions") + b.metric("drift_assigned_partitions") == 18,
                   90, "partitions split between a and b")
        assert 0 < b.metric("drift_assigned_partitions") < 18  # 5 input topics and drift.control, 3 partitions each
        b.wait_for(lambda: a.metric("drift_messages_consumed_total") + b.metric("drift_messages_consumed_total") >= half,
                   180, "first half consumed")
        a.wait_for(lambda: a.metric("drift_checkpoints_total") >= 1 and b.metric("drift_checkpoints_total") >= 1,
                   30, "both checkpointed")
        assert b.stop() == 0  # b leaves: a takes over b's partitions from b's checkpoints
        a.wait_for(lambda: a.metric("drift_assigned_partitions") == 18, 90, "a owns every partition")
        assert a.metric('drift_state_restores_total{result="restored"}') >= 1
        produce(broker.bootstrap, topics, msgs[half:])
        a.wait_for(lambda: _all_consumed(broker, topics, group), 180, "all input committed")
    finally:
        assert a.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected


def _all_consumed(broker, topics, group):
    """Committed offsets of the group equal the ends of the input partitions."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for name in (topics["scores"], topics["retrieval"]):
            for p in c.partitions_for_topic(name):
                tp = TopicPartition(name, p)
                c.assign([tp])
                c.seek_to_beginning(tp)
                c.poll(timeout_ms=300, max_records=1)
                hw = c.highwater(tp)
                done = committed(broker.bootstrap, group, tp)
                if hw is None or (done or 0) < hw:
                    return False
        return True
    finally:
        c.close()


POISON = [
    (b'{"ts": 1767607200, "dimension": "x", "score"', "MalformedJSON"),
    (json.dumps({"ts": 1767607200, "dimension": "x"}).encode(), "SchemaError"),
    (json.dumps({"ts": 1767607200, "dimension": "x", "score": "high"}).encode(), "SchemaError"),
    (b'{"ts": 1767607200, "dimension": "x", "score": 1e999}', "NonFiniteValue"),
    (json.dumps({"ts": 1767607200, "dimension": "x", "score": 3.0}).encode(), "OutOfScale"),
    (json.dumps({"ts": "not a time", "dimension": "x", "score": 0.3}).encode(), "BadTimestamp"),
    (b"x" * 1_100_000, "OversizedMessage"),
    (json.dumps([{"ts": 1767607200, "dimension": "x", "score": 0.5}, {"ts": 1767607200, "dimension": "x", "score": -1}]).encode(), "OutOfScale"),
    (json.dumps({"ts": "2026-01-05T00:00:00Z", "app": "a", "intent": "b", "dimension": "relevance", "score": 0.5}).encode(),
     "LateEvent"),
    (json.dumps({"ts": "2027-06-01T00:00:00Z", "app": "a", "intent": "b", "dimension": "relevance", "score": 0.5}).encode(),
     "FutureEvent"),
]


def test_poison_messages_go_to_the_dlq_and_the_service_goes_on(broker, topics):
    from kafka import KafkaProducer

    group = f"g-{uuid.uuid4().hex[:6]}"
    svc = ServeProcess(broker.bootstrap, group, topics)
    try:
        code, body = svc.get("/readyz")
        assert code == 503 and not json.loads(body)["ready"]  # not yet assigned and restored
        assert svc.get("/livez")[0] == 200
        svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 60, "ready")
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=4 << 20)
        good = lambda i: json.dumps({"ts": f"2026-01-05T10:{i:02d}:00Z", "app": "a", "intent": "b",  # noqa: E731
                                     "dimension": "relevance", "score": 0.8}).encode()
        for i, (raw, _) in enumerate(POISON):
            p.send(topics["scores"], key=b"a/b", value=good(i))
            p.send(topics["scores"], key=b"a/b", value=raw)
        p.send(topics["scores"], key=b"a/b", value=good(59))
        p.flush()
        svc.wait_for(lambda: svc.metric("drift_dlq_total") >= len(POISON), 60, "DLQ records")
        assert svc.metric("drift_events_consumed_total") == len(POISON) + 1  # the good events only: the bad array is rejected whole
        assert svc.get("/livez")[0] == 200 and svc.get("/readyz")[0] == 200
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 1, 30, "checkpoint")
    finally:
        assert svc.stop() == 0
    dlq = read_topic(broker.bootstrap, topics["dlq"])
    classes = [dict(r.headers)["x-error-class"].decode() for r in dlq]
    assert sorted(classes) == sorted(c for _, c in POISON)
    for r in dlq:
        h = dict(r.headers)
        assert h["x-source-topic"].decode() == topics["scores"] and h["x-error-message"]
        assert int(h["x-source-offset"]) >= 0 and h["x-source-partition"].decode().isdigit()
        assert r.key == b"a/b"
    raws = {bytes(r.value) for r in dlq}
    for raw, cls in POISON:
        if cls not in ("LateEvent", "FutureEvent"):
            assert raw in raws  # the rejected message's raw bytes, unchanged


def test_mostly_bad_traffic_stops_the_service_with_a_clear_message(broker, topics):
    from kafka import KafkaProducer

    env = {"DRIFT_SERVICE_DLQ_MIN_MESSAGES": "50"}
    svc = ServeProcess(broker.bootstrap, f"g-{uuid.uuid4().hex[:6]}", topics, env)
    svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 60, "ready")
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i in range(100):
        p.send(topics["scores"], key=b"a/b", value=b"{garbage" if i % 5 else json.dumps(
            {"ts": 1767607200 + i, "app": "a", "intent": "b", "dimension": "relevance", "score": 0.8}).encode())
    p.flush()
    code = svc.proc.wait(60)
    svc._reader.join(5)
    assert code == 3
    msg = [d["msg"] for d in svc.lines if d.get("level") == "error"]
    assert any("were rejected" in m and "producers are sending bad data" in m for m in msg), msg
    # what was rejected before stopping is in the DLQ, not lost
    assert len(read_topic(broker.bootstrap, topics["dlq"])) >= 50


def test_drift_alerts_prints_the_alert_topic(broker, topics, capsys):
    from kafka import KafkaProducer

    from detectors.base import Finding, Side
    from drift.core.alerts import from_finding, to_cloudevent
    from drift.runtime.feed import follow_alerts

    f = Finding(series=0, status="firing", at=1767607200.0, episode_start=1767607200.0, statistic="pct_drop",
                value=0.08, threshold=0.05, p_value=1e-9, window=Side(1767000000.0, 1767607200.0, 1800, 0.84),
                reference=Side(1766000000.0, 1767000000.0, 3600, 0.91))
    ev = to_cloudevent(from_finding("quality_drop", {"stream": "scores", "app": "bot", "intent": "billing",
                                                     "dimension": "format"}, f, window_seconds=7 * 86400,
                                    cause={"kind": "none", "detail": "no template change"}))
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    p.send(topics["alerts"], key=ev["data"]["alert_id"].encode(), value=json.dumps(ev).encode())
    p.flush()
    settings = load_settings(env={"DRIFT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DRIFT_TOPICS_ALERTS": topics["alerts"]})
    lines = []
    assert follow_alerts(settings, from_beginning=True, write=lines.append, stop=lambda: False) == 1
    assert "FIRING" in lines[0] and "quality_drop/bot/billing/format" in lines[0] and "fell 8.0%" in lines[0]
    lines.clear()
    assert follow_alerts(settings, from_beginning=False, write=lines.append, stop=lambda: False) == 0
    assert follow_alerts(settings, from_beginning=True, as_json=True, write=lines.append, stop=lambda: False) == 1
    assert json.loads(lines[0])["id"] == ev["id"]


class RecordingSink:
    """A toy sink: records what it was given and when it was asked to confirm."""

    name = "recording"

    def __init__(self, log):
        self.log, self.alerts, self.closed = log, [], False

    def emit(self, alerts):
        self.alerts += [a.alert_id for a in alerts]
        self.log.append(("emit", len(self.alerts)))

    def confirm(self):
        self.log.append(("confirm", len(self.alerts)))

    def close(self):
        self.closed = True


def test_a_plug_in_sink_gets_every_alert_and_confirms_before_offsets_move(broker, topics, cleanup_events):
    """A sink added to `drift serve` sees the alerts the topic gets, and its confirm runs in the
    commit order before any offset commit."""
    import threading
    import time

    from drift.runtime.service import Service

    events, expected = cleanup_events
    msgs = messages_of(events, max_batch=60, seed=2)
    produce(broker.bootstrap, topics, msgs)
    settings = load_settings(env={"DRIFT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                                  "DRIFT_KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:6]}",
                                  **{f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()}},
                             overrides={"http": {"port": 0},
                                        "service": {"session_timeout_ms": 6000, "checkpoint_interval": 1}})
    log: list = []
    sink = RecordingSink(log)
    svc = Service(settings, sinks=[sink])
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 240

        def consumed():
            return sum(svc.metrics.messages.labels(topics[k])._value.get() for k in ("scores", "retrieval", "queries"))

        def checkpointed():
            return all(p.checkpointed == p.next_offset for p in svc.parts.values())

        while consumed() < len(msgs) or not checkpointed():
            assert time.monotonic() < deadline and thread.is_alive(), "drift serve did not consume everything"
            if svc.consumer is not None and not hasattr(svc.consumer, "_wrapped"):
                commit = svc.consumer.commit

                def logged(offsets, _commit=commit):
                    log.append(("commit", len(sink.alerts)))
                    return _commit(offsets)
                svc.consumer.commit = logged
                svc.consumer._wrapped = True
            time.sleep(0.2)
    finally:
        svc.request_stop()
        thread.join(60)
    assert not thread.is_alive() and sink.closed
    assert sorted(sink.alerts) == sorted(a.split("/")[0] for a in expected)
    assert sorted(alert_ids(read_topic(broker.bootstrap, topics["alerts"]))) == expected
    commits = [i for i, e in enumerate(log) if e[0] == "commit"]
    assert commits, log
    for i in commits:  # everything emitted before a commit was confirmed before it
        emitted = log[i][1]
        assert any(e == ("confirm", emitted) for e in log[:i]), log[: i + 1]
