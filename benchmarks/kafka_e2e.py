"""End to end through a real broker: `drift serve`'s loop vs a bare kafka-python consumer.

Both read the same input topics on the embedded broker in the same run. The service runs its
real loop (decode, engine, alerts, checkpoints) in-process and is timed from readiness (group
joined, state restored) until every message is consumed; the bare consumer only iterates
records.
"""

from __future__ import annotations

import threading
import time
import uuid

from drift.tools.demo import keyed_messages


def _events(n_events: int):
    from drift.tools.simulate import iter_events, simulate

    days = max(2, int(n_events / 30_000) + 1)
    sim = simulate("stable", days=days)
    out = []
    for e in iter_events(sim):
        if "dimension" in e or "scores" in e:
            out.append(e)
            if len(out) >= n_events:
                break
    return out


def _bare_consume(bootstrap, topics, total):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", max_poll_records=5000)
    tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    n = 0
    t0 = time.perf_counter()
    while n < total:
        for recs in c.poll(timeout_ms=500).values():
            for _r in recs:
                n += 1
    dt = time.perf_counter() - t0
    c.close()
    return dt


def run(n_events: int, per_message: int) -> dict:
    from kafka import KafkaProducer

    from drift.core.config import load_settings
    from drift.runtime.service import Service
    from drift.tools.broker import EmbeddedBroker, create_topics

    events = _events(n_events)
    msgs = keyed_messages(events, per_message)
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:6]
        topics = {k: f"bench-{k}-{tag}" for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
        create_topics(broker.bootstrap, {v: 3 if k in ("scores", "retrieval", "queries") else 1 for k, v in topics.items()})
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=1 << 20, acks=1)
        for stream, key, value in msgs:
            p.send(topics[stream], key=key, value=value)
        p.flush()
        p.close()
        bare_s = _bare_consume(broker.bootstrap, [topics["scores"], topics["retrieval"]], len(msgs))
        env = {f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()}
        env.update({"DRIFT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DRIFT_KAFKA_GROUP_ID": f"bench-{tag}",
                    "DRIFT_HTTP_PORT": "0", "DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000"})
        svc = Service(load_settings(env=env))
        th = threading.Thread(target=svc.run, daemon=True)
        th.start()
        while not svc.health.ready:
            time.sleep(0.01)
        t0 = time.perf_counter()
        consumed = lambda: sum(s.value for m in svc.metrics.messages.collect() for s in m.samples  # noqa: E731
                               if s.name.endswith("_total"))
        while consumed() < len(msgs):
            time.sleep(0.005)
        ours_s = time.perf_counter() - t0
        svc.request_stop()
        th.join(60)
    return {"name": f"kafka_e2e_{per_message}", "events": len(events), "messages": len(msgs),
            "ours": len(events) / ours_s, "competitor": "bare kafka-python consumer",
            "competitor_events": len(events), "competitor_rate": len(events) / bare_s,
            "ratio": (len(events) / ours_s) / (len(events) / bare_s),
            "notes": f"{per_message} event(s)/message, {len(msgs):,} messages, service timed from readiness"}
