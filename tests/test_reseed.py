"""`drift replay --write-state`: a group's state re-seeded from an archive of its input."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import uuid

import msgspec
import pytest
from kafka.structs import TopicPartition

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.core.events import kafka_key
from drift.runtime.checkpoint import MAGIC, MAX_RECORD, decode_checkpoint, state_key
from drift.runtime.reseed import Reseeder, partition_for
from drift.runtime.service import input_topics
from kafka_harness import ServeProcess, alert_ids, messages_of, produce, read_topic, service_topics
from scenario_harness import run_lines

SPLIT = "2026-01-17"  # prompt_cleanup fires quality_drop on the 16th and quality_shift on the 18th
_enc = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def halves():
    """prompt_cleanup at a fifth of the volume, as keyed messages, split at SPLIT; and the alerts one
    engine raises over the first half, then over the second."""
    from drift.tools.simulate import iter_events, simulate

    events = list(iter_events(simulate("prompt_cleanup", seed=0, days=16, volume=0.2)))
    first = messages_of([e for e in events if e["ts"] < SPLIT], max_batch=60, seed=0)
    second = messages_of([e for e in events if e["ts"] >= SPLIT], max_batch=60, seed=1)
    earlier, _, engine = run_lines([m[2] for m in first])
    later, _, _ = run_lines([m[2] for m in second], engine=engine)
    return first, second, earlier, later


class _Cluster:
    """What kafka-python's DefaultPartitioner asks of the producer's cluster metadata."""

    def __init__(self, n: int):
        self.n = n

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return set(range(self.n))

    def available_partitions_for_topic(self, topic):
        return set(range(self.n))


def test_partition_for_is_the_producers_partitioner():
    from kafka.partitioner.default import DefaultPartitioner

    keys = [f"app-{i}/intent-{j}" for i in range(20) for j in range(15)]
    keys += ["default/all", "support-bot", "ünïcødé/意図", "", "a" * 300, "x/y/z"]
    keys += [kafka_key(e) for e in ({"app": "a", "intent": "b", "dimension": "d"}, {"app": "a", "text": "q"},
                                    {"app": "a", "label": 1, "dimension": "d"}, {"app": "a", "kind": "thumbs_down"})]
    assert len(keys) > 300
    partitioner = DefaultPartitioner()
    for n in (1, 2, 3, 4, 7, 12):
        cluster = _Cluster(n)
        for key in keys:
            raw = key.encode()
            assert partition_for(key, n) == partition_for(raw, n) == partitioner.partition(
                "t", key, raw, None, None, cluster), (key, n)
        assert len({partition_for(k, n) for k in keys}) == n  # every partition is used


def test_reseeder_offline(halves, tmp_path):
    """No broker: the engines of a 3-partition layout raise the alerts of one engine, each holds only
    its partitions' series, arrays are split by key, bad lines and commands are reported, and the
    checkpoints carry the end offsets and restore."""
    first, second, earlier, later = halves
    settings = load_settings()
    inputs = input_topics(settings)
    parts = {t: 3 for t in inputs}
    ends = {TopicPartition(t, p): 100 + p for t in parts for p in range(3)}
    archive = tmp_path / "archive.jsonl"
    mixed = [{"ts": "2026-01-20T23:59:00Z", "app": app, "intent": "billing", "dimension": "relevance", "score": 0.9}
             for app in ("support-bot", "docs-bot", "code-bot")]
    assert len({partition_for(f"{e['app']}/billing", 3) for e in mixed}) > 1  # this line is split
    lines = [m[2] for m in first + second] + [b"{not json", _enc.encode(mixed)]
    archive.write_bytes(b"\n".join(lines) + b"\n")
    control = settings.topics["control"]
    reset = json.dumps({"command": "baseline_reset", "rule": "quality_drop", "app": "support-bot",
                        "ts": "2026-01-19T00:00:00Z", "by": "test"}).encode()
    seeder = Reseeder(settings, parts, ends, commands={p: [(0, reset)] for p in range(3)} | {0: [(0, reset), (1, b"{}")]})
    report = seeder.feed([str(archive)])
    records = seeder.checkpoints()
    whole = earlier + later
    history = [a for a in report.alerts if a["data"]["rule"] != "baseline_reset" and a["data"]["status"] != "resolved"]
    assert sorted(a["id"] for a in history) == sorted(a["id"] for a in whole if a["data"]["status"] != "resolved")
    assert {a["id"] for a in later} <= {a["id"] for a in report.alerts}
    assert report.commands == 3 and any(a["data"]["rule"] == "baseline_reset" for a in report.alerts)
    assert [(r.line, r.error_class) for r in report.rejected] == [(1, "bad_command"), (len(lines) - 1, "MalformedJSON")]
    assert report.n_events == sum(len(json.loads(m[2])) if m[2][:1] == b"[" else 1 for m in first + second) + 3
    # every series lives on the engine of its key's partition, and only there
    seen: dict[tuple, TopicPartition] = {}
    for seed in seeder.seeds.values():
        for name, st in seed.engine.state.items():
            for sid in range(len(st.series)):
                labels = st.series.labels(sid)
                tp = TopicPartition(settings.topics[name], partition_for(kafka_key({**labels, **(
                    {"dimension": "x"} if name == "scores" else {"scores": [1.0]} if name == "retrieval" else {})}), 3))
                assert tp in seed.members, (name, labels, seed.anchor)
                assert seen.setdefault((name, *labels.items()), seed.anchor) == seed.anchor
    # the checkpoints: one per engine, at the end offsets, restorable
    assert len(records) == 9 and len({k for k, _, _ in records}) == 9
    fingerprint = Engine(settings).fingerprint()
    for key, value, seed in records:
        assert all(k.rsplit(b"/", 1)[0] == key and len(v) <= MAX_RECORD for k, v in seed.chunks)
        cp = decode_checkpoint(value, fingerprint=fingerprint,
                               chunks={k.rsplit(b"/", 1)[1].decode(): v for k, v in seed.chunks})
        assert key == state_key(settings.group_id, cp.topic, cp.partition)
        assert seed.checkpoint_bytes == len(value) + sum(len(v) for _, v in seed.chunks)
        if inputs[cp.topic] == "scores":
            assert cp.offsets == {t: 100 + cp.partition for t, s in inputs.items()
                                  if s in ("scores", "labels", "feedback", "control")}
            assert control in cp.offsets
        else:
            assert cp.offsets == {} and cp.next_offset == 100 + cp.partition
        Engine(settings).load_state(cp.engine)
    assert "checkpoints NOT written" in report.summary()


def _env(topics: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()})
    env["DRIFT_TOPICS_CONTROL"] = f"{topics['scores']}-control"  # as ServeProcess: not there until serve runs
    return env


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_reseed_then_serve_continues(broker, topic_factory, halves, tmp_path):
    first, second, _, later = halves
    assert any(a["data"]["status"] == "firing" for a in later)  # the second half raises an alert
    topics = service_topics(topic_factory)
    group = f"g-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topics, first)
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b"".join(m[2] + b"\n" for m in first))
    cmd = [sys.executable, "-m", "drift.cli", "replay", str(archive), "--write-state",
           "--bootstrap-servers", broker.bootstrap, "--group-id", group, "--quiet"]

    # a missing input topic: refused, named, nothing written
    env = {**_env(topics), "DRIFT_TOPICS_RETRIEVAL": f"missing-{uuid.uuid4().hex[:6]}"}
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and env["DRIFT_TOPICS_RETRIEVAL"] in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert read_topic(broker.bootstrap, topics["state"]) == []

    done = subprocess.run(cmd, env=_env(topics), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checkpoints written to " + topics["state"] in done.stdout

    # the producer put each key where partition_for says, and one checkpoint per engine holds the ends
    ends: dict[TopicPartition, int] = collections.Counter()
    for name in ("scores", "retrieval"):
        for r in read_topic(broker.bootstrap, topics[name]):
            assert r.partition == partition_for(r.key, 3)
            ends[TopicPartition(topics[name], r.partition)] += 1
    state = [r for r in read_topic(broker.bootstrap, topics["state"]) if r.value[:4] == MAGIC]  # the manifests
    assert len(state) == 9
    joined = {topics["scores"], topics["labels"], topics["feedback"]}
    for r in state:
        cp = decode_checkpoint(r.value)
        assert r.key == state_key(group, cp.topic, cp.partition)
        assert cp.next_offset == ends[TopicPartition(cp.topic, cp.partition)]
        if cp.topic == topics["scores"]:  # the control topic does not exist yet: left out
            assert cp.offsets == {topics["scores"]: cp.next_offset, topics["labels"]: 0, topics["feedback"]: 0}
        else:
            assert cp.topic not in joined and cp.offsets == {}

    produce(broker.bootstrap, topics, second)
    svc = ServeProcess(broker.bootstrap, group, topics)
    try:
        svc.wait_consumed(len(second), timeout=120)
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 1, 30, "a checkpoint")
        assert svc.metric('drift_state_restores_total{result="restored"}') == 15  # 9 joined members, 6 others
        assert svc.metric('drift_state_restores_total{result="rejected"}') == 0
        assert svc.metric("drift_messages_consumed_total") == len(second)  # nothing of the first half again
    finally:
        assert svc.stop() == 0
    got = alert_ids(read_topic(broker.bootstrap, topics["alerts"]))
    assert sorted(set(got)) == sorted({a["id"] for a in later})
    assert any(d.get("msg") == "state restored" for d in svc.lines)
