"""Issue 17 part 5, "more instances": three `drift serve` instances over 12 partitions.

Instance a starts alone on a stream of 36 app/intents (12-partition input topics, every partition
with data); b and c join while input is still arriving, so the group rebalances under load and
partitions a had read (and checkpointed when they were revoked) move to b and c, which restore
that state. Checked: the 12 scores partitions end up 4 per instance, the alert topic holds the
alert ids of the offline replay (as a set: a rebalance may emit an alert again, with the same
id), and the newcomers restored state. No timings here: ``python -m benchmarks --only scale_out``
measures events per CPU-second and the restore time after a rebalance.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from kafka_harness import ServeProcess, alert_ids, group_caught_up, messages_of, produce, read_topic
from scenario_harness import run_lines

pytestmark = pytest.mark.kafka

PARTITIONS = 12
INPUTS = ("scores", "retrieval", "queries", "labels", "feedback")
COPIES = 4  # 4 × the simulator's 9 app/intents = 36 keys: all 12 partitions get some


@pytest.fixture(scope="module")
def fleet_events():
    """12 days of prompt_cleanup, once per seed 0..3 with the apps renamed ``<app>-<seed>``
    (support-bot-0 … sales-assistant-3): ~160 k events, alerts on several partitions."""
    import msgspec

    from drift.tools.simulate import iter_events, simulate

    events = []
    for k in range(COPIES):
        for e in iter_events(simulate("prompt_cleanup", seed=k, days=12, volume=0.1)):
            events.append({**e, "app": f"{e['app']}-{k}"})
    events.sort(key=lambda e: e["ts"])  # one stream in time order (RFC 3339 strings sort as times)
    enc = msgspec.json.Encoder()
    alerts, _, _ = run_lines([enc.encode(e) for e in events])
    return events, sorted({a["id"] for a in alerts})


def _last_assignment(svc: ServeProcess, topic: str) -> set[int]:
    """The partitions of ``topic`` in the last assignment ``svc`` logged."""
    last = max((i for i, d in enumerate(svc.lines) if d.get("msg") == "partitions revoked"), default=-1)
    return {int(d["partition"].rsplit("/", 1)[1]) for d in svc.lines[last + 1:]
            if d.get("msg") in ("no state: reading from the beginning", "state restored")
            and d["partition"].rsplit("/", 1)[0] == topic}


def test_three_instances_spread_rebalance_under_load_and_keep_parity(broker, topic_factory, fleet_events):
    events, expected = fleet_events
    assert expected
    topics = {k: topic_factory(PARTITIONS, k) for k in INPUTS}
    topics["control"] = topic_factory(PARTITIONS, "control")  # co-partitioned with scores
    topics.update({k: topic_factory(1, k) for k in ("alerts", "dlq", "state", "escalations")})
    msgs = messages_of(events, max_batch=60, seed=5)
    first = len(msgs) * 3 // 10
    produce(broker.bootstrap, topics, msgs[:first])
    where = {r.key: r.partition for r in read_topic(broker.bootstrap, topics["scores"])}
    assert len(set(where.values())) == PARTITIONS, sorted(set(where.values()))  # every partition has data

    group = f"g-{uuid.uuid4().hex[:6]}"
    held = lambda s: s.metric("drift_assigned_partitions")  # noqa: E731
    consumed = lambda s: s.metric("drift_messages_consumed_total")  # noqa: E731
    restored = lambda s: s.metric('drift_state_restores_total{result="restored"}')  # noqa: E731
    total = len(INPUTS) * PARTITIONS + PARTITIONS  # the five inputs and the control topic
    a = ServeProcess(broker.bootstrap, group, topics)
    procs = [a]
    try:
        a.wait_for(lambda: consumed(a) >= first // 2, 90, "a half way through the first part")
        # b and c join while the rest of the input arrives: the group rebalances under load
        rest, failed = msgs[first:], []

        def feed():
            try:
                step = len(rest) // 10 + 1
                for i in range(0, len(rest), step):  # ~4 s of input, in 10 slices
                    produce(broker.bootstrap, topics, rest[i:i + step])
                    time.sleep(0.4)
            except Exception as exc:  # reported by the assert below
                failed.append(exc)

        feeder = threading.Thread(target=feed)
        feeder.start()
        b = ServeProcess(broker.bootstrap, group, topics)
        procs.append(b)
        c = ServeProcess(broker.bootstrap, group, topics)
        procs.append(c)
        feeder.join(120)
        assert not feeder.is_alive() and not failed, failed
        scores = topics["scores"]
        c.wait_for(lambda: all(held(s) == total // 3 for s in procs)
                   and all(len(_last_assignment(s, scores)) == PARTITIONS // 3 for s in procs),
                   90, "4 of the 12 scores partitions per instance")
        spread = [_last_assignment(s, scores) for s in procs]
        assert set().union(*spread) == set(range(PARTITIONS)), spread  # each partition once: 4 + 4 + 4
        c.wait_for(lambda: group_caught_up(broker.bootstrap, group, scores, range(PARTITIONS))
                   and group_caught_up(broker.bootstrap, group, topics["retrieval"], range(PARTITIONS)),
                   120, "every input committed")
        # a's partitions moved to b and c with the state a checkpointed when they were revoked
        assert any(d.get("msg") == "partitions revoked" and d["partitions"] for d in a.lines)
        assert restored(b) + restored(c) > 0, (restored(a), restored(b), restored(c))
        per_instance = [consumed(s) for s in procs]
        assert all(n > 0 for n in per_instance), per_instance
        got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
        assert set(got) == set(expected), (sorted(set(got) - set(expected)), sorted(set(expected) - set(got)))
        # members leave one at a time, each after the group has rebalanced (a broker quirk)
        assert c.stop() == 0
        procs.remove(c)
        b.wait_for(lambda: held(a) == held(b) == total // 2, 90, "a and b split the partitions")
        assert b.stop() == 0
        procs.remove(b)
        a.wait_for(lambda: held(a) == total, 90, "a holds every partition")
    finally:
        for s in reversed(procs):
            s.stop()
    assert all(p.proc.returncode == 0 for p in (a, b, c))
