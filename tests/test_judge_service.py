"""Labels and feedback through `drift serve` on the real embedded broker: the same alert ids as
`drift replay`, bad input in the DLQ with the reason, escalated traces on their topic, and a
SIGKILL mid-stream that loses no label or feedback join."""

import json
import signal
import uuid

import msgspec
import pytest

from drift.runtime.checkpoint import checkpoints_from_records
from kafka_harness import ServeProcess, alert_ids, messages_of, produce, read_topic, service_topics
from scenario_harness import run_lines
from test_judge import by_time, judged_stream

pytestmark = pytest.mark.kafka
_enc = msgspec.json.Encoder()

BAD = [  # (stream, event, error class)
    ("labels", {"ts": "2026-01-20T00:00:00Z", "app": "bot", "intent": "billing", "dimension": "correctness",
                "label": 7, "trace_id": "x1"}, "OutOfScale"),
    ("labels", {"ts": "2026-01-20T00:00:00Z", "app": "bot", "intent": "billing", "label": 1, "trace_id": "x2"},
     "SchemaError"),
    ("feedback", {"ts": "2026-01-20T00:00:00Z", "app": "bot", "intent": "billing", "kind": "meh", "trace_id": "x3"},
     "SchemaError"),
]


@pytest.fixture(scope="module")
def judged_events():
    """Two app/intents over 60 days: a judge whose agreement falls on day 30 (billing) and a
    blind spot from day 35 (refunds); 100 labelled, judged responses a day each."""
    streams = []
    for seed, intent, change, blind in ((0, "billing", 30, None), (1, "refunds", 10_000, 35)):
        s, lab, fb = judged_stream(days=60, per_day=100, change_day=change, seed=seed, feedback=True,
                                   blind_from=blind)
        for e in s + lab + fb:
            e["intent"] = intent
        fb[7]["kind"] = "escalate"
        streams += [s, lab, fb]
    events = by_time(*streams)
    alerts, rejected, engine = run_lines([_enc.encode(e) for e in events])
    assert not rejected
    expected = sorted(a["id"] for a in alerts)
    assert {a["data"]["rule"] for a in alerts} >= {"judge_agreement_drop", "judge_user_disagreement"}
    n_labels = sum(1 for e in events if e.get("stream") == "labels")
    return events, expected, n_labels, int(engine.counts["feedback.escalations"])


@pytest.fixture
def topics(topic_factory):
    return service_topics(topic_factory)


def _joined(broker, topics, group) -> int:
    """Labels joined, summed over the newest checkpoint of every partition's engine."""
    newest = checkpoints_from_records(read_topic(broker.bootstrap, topics["state"]), group)
    return sum(int(cp.engine["counts"].get("judge.labels.joined", 0)) for cp in newest.values())


def test_labels_and_feedback_in_serve_give_the_replay_ids(broker, topics, judged_events):
    events, expected, n_labels, n_escalations = judged_events
    msgs = messages_of(events, max_batch=40, seed=2)
    msgs += [(stream, b"bot/billing", _enc.encode(e)) for stream, e, _ in BAD]
    produce(broker.bootstrap, topics, msgs)
    group = f"g-{uuid.uuid4().hex[:6]}"
    svc = ServeProcess(broker.bootstrap, group, topics)
    try:
        svc.wait_consumed(len(msgs))
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 1, 30, "a checkpoint")
    finally:
        assert svc.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected and len(got) == len(expected)
    dlq = read_topic(broker.bootstrap, topics["dlq"])
    seen = sorted((dict(r.headers)["x-source-topic"].decode(), dict(r.headers)["x-error-class"].decode()) for r in dlq)
    assert seen == sorted((topics[s], cls) for s, _, cls in BAD)
    assert all(b"outside the scale" in dict(r.headers)["x-error-message"] for r in dlq
               if dict(r.headers)["x-error-class"] == b"OutOfScale")
    esc = [json.loads(r.value) for r in read_topic(broker.bootstrap, topics["escalations"])]
    assert len(esc) == n_escalations > 0 and {e["reason"] for e in esc} == {"escalate"}
    assert _joined(broker, topics, group) == n_labels


def test_sigkill_mid_stream_loses_no_label_or_feedback_join(broker, topics, judged_events):
    events, expected, n_labels, _ = judged_events
    msgs = messages_of(events, max_batch=20, seed=3)
    produce(broker.bootstrap, topics, msgs)
    group = f"g-{uuid.uuid4().hex[:6]}"
    env = {"DRIFT_SERVICE_MAX_POLL_RECORDS": "50"}
    first = ServeProcess(broker.bootstrap, group, topics, env)
    first.wait_for(lambda: first.metric("drift_messages_consumed_total") >= len(msgs) * 0.4, 180, "40% consumed")
    first.wait_for(lambda: first.metric("drift_judge_join_entries") > 0, 60, "entries in the join")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = ServeProcess(broker.bootstrap, group, topics, env)
    try:
        restored = lambda: second.metric('drift_state_restores_total{result="restored"}')  # noqa: E731
        second.wait_for(lambda: restored() >= 1, 60, "state restored")
        second.wait_for(lambda: _joined(broker, topics, group) >= n_labels, 300, "every label joined")
        # labels can all be joined while the feedback partitions still lag behind them: wait
        # for the alerts too (a run that misses one times out here)
        on_topic = lambda: set(alert_ids(read_topic(broker.bootstrap, topics["alerts"])))  # noqa: E731
        second.wait_for(lambda: on_topic() >= set(expected), 300, "every alert of the uninterrupted run")
    finally:
        assert second.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == expected, "the restarted run must equal an uninterrupted one"
    # each label joined exactly once across the crash (the restored join state, not a re-count)
    assert _joined(broker, topics, group) == n_labels
