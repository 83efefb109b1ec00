"""`drift serve` through a broker outage: Tansu with durable (S3) storage, stopped and restarted.

The session's shared broker keeps everything in memory, so a restart of it is a new, empty
cluster. Here each test runs its own Tansu on ``s3://BUCKET/`` against ``moto_server`` (the
``moto[server]`` test dependency) on a free loopback port: topics, records, committed offsets
and ``drift.state`` survive the broker process, and the broker comes back on the same port
(:meth:`drift.tools.broker.EmbeddedBroker.restart`), as a restarted Kafka broker would.

Measured with kafka-python's defaults (the service sets no client timeouts of its own), on the
shared 2-core machine:

* Tansu on S3 (moto) starts in ~0.05-0.2 s, SIGINT stops it in ~5 ms, and a restart on the same
  bucket serves every record, the high watermarks and the group's committed offsets unchanged;
  offsets continue densely after the restart.
* While the broker is down, ``drift serve`` keeps running and ``/livez`` stays 200. ``/readyz``
  turns 503 ("broker unavailable: N record(s) awaiting delivery") only when the service has
  something to confirm: ``_confirm()`` first waits out ``producer.flush(timeout=30)``, so ~30 s
  after the broker went away. A service that is caught up when the broker goes away has nothing
  to confirm and stays ready (see ``test_an_idle_service_reports_an_outage``).
* After the restart it takes up to ~30 s more to deliver and turn ready again
  (kafka-python's reconnect backoff grows to ``reconnect_backoff_max_ms`` = 30 s), then the
  service catches up without a rebalance or a state restore.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from drift.tools.broker import BrokerError, EmbeddedBroker, create_topics
from kafka_harness import ServeProcess, alert_ids, committed, messages_of, produce, read_topic
from test_service import _all_consumed, cleanup_events  # noqa: F401 (fixture)

pytestmark = pytest.mark.kafka

#: the input and output topics of one service run (name: partitions)
TOPICS = {"scores": 3, "retrieval": 3, "queries": 3, "alerts": 1, "dlq": 1, "state": 1}


# --------------------------------------------------------------------------- S3 (moto)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """``moto_server`` (an in-memory S3) in a child process on a free loopback port."""

    def __init__(self, log_path):
        try:
            import moto.server  # noqa: F401
        except ImportError:
            pytest.fail("moto[server] is not installed: it is a pinned test dependency in "
                        "requirements.txt (`make test` installs it)", pytrace=False)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"moto_server did not start: {open(log_path, errors='replace').read()[-2000:]}",
                            pytrace=False)
            time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def keys(self, bucket: str) -> list[str]:
        """Object keys in ``bucket`` (ListObjectsV2, paging through continuation tokens)."""
        keys: list[str] = []
        token = None
        while True:
            url = f"{self.endpoint}/{bucket}?list-type=2"
            if token:
                url += "&continuation-token=" + urllib.request.quote(token, safe="")
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read().decode()
            keys += re.findall(r"<Key>(.*?)</Key>", body)
            m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", body)
            if not m:
                return keys
            token = m.group(1)

    def broker_env(self) -> dict[str, str]:
        """Rust object_store settings for Tansu's ``s3://`` storage engine."""
        return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_broker(s3, tmp_path):
    """A started Tansu on a fresh bucket of ``s3`` (stopped at the end, whatever happened)."""
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    b = EmbeddedBroker(storage=f"s3://{bucket}/", env=s3.broker_env(), log_path=tmp_path / "tansu.log")
    b.bucket = bucket
    try:
        b.start()
    except BrokerError as exc:
        pytest.fail(f"Tansu on S3 could not start: {exc}", pytrace=False)
    try:
        yield b
    finally:
        b.stop()


def _stop_broker(b: EmbeddedBroker) -> int:
    """SIGINT the broker (``EmbeddedBroker.stop``) and return the process's exit status."""
    proc = b._proc
    assert proc is not None and proc.poll() is None
    b.stop()
    return proc.returncode


def _topics(b: EmbeddedBroker) -> dict[str, str]:
    names = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in TOPICS}
    counts = create_topics(b.bootstrap, {names[k]: n for k, n in TOPICS.items()})
    assert counts == {names[k]: n for k, n in TOPICS.items()}
    return names


# --------------------------------------------------------------------------- tests


def test_tansu_on_s3_keeps_records_and_offsets_across_a_restart(s3, s3_broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    b = s3_broker
    topic, group = f"persist-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    create_topics(b.bootstrap, {topic: 3})
    p = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", linger_ms=20)
    for i in range(3000):
        p.send(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
    p.flush()
    p.close()
    before = read_topic(b.bootstrap, topic)
    assert len(before) == 3000
    tps = [TopicPartition(topic, i) for i in range(3)]
    ends = collections.Counter(r.partition for r in before)
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=group, enable_auto_commit=False)
    committed = {tp: ends[tp.partition] // 2 for tp in tps}
    from kafka.structs import OffsetAndMetadata

    c.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in committed.items()})
    c.close()
    # it really is in the bucket, not in memory: record batches, watermarks, group offsets
    keys = s3.keys(b.bucket)
    assert any(f"/topics/{topic}/partitions/" in k and k.endswith(".batch") for k in keys), keys
    assert any(f"/groups/consumers/{group}/offsets/{topic}/" in k for k in keys), keys

    port = b.port
    assert _stop_broker(b) == 0  # SIGINT: clean exit
    assert not b.running
    b.restart()
    assert b.port == port and b.running

    after = read_topic(b.bootstrap, topic)
    assert sorted((r.partition, r.offset, r.key, r.value) for r in after) == \
           sorted((r.partition, r.offset, r.key, r.value) for r in before)
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert {tp: c.committed(tp) for tp in tps} == committed
    finally:
        c.close()
    # offsets go on from where they were (no reset to 0 that would alias old records)
    p = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
    md = p.send(topic, key=b"k0", value=b"after restart").get(10)
    p.close()
    assert md.offset == ends[md.partition]


def test_drift_serve_rides_out_a_broker_restart(s3_broker, cleanup_events):  # noqa: F811
    """Stop the broker mid-stream; the service waits (not ready, still live), then carries on."""
    b = s3_broker
    events, expected = cleanup_events
    topics = _topics(b)
    msgs = messages_of(events, max_batch=60, seed=6)
    first = int(len(msgs) * 0.6)
    produce(b.bootstrap, topics, msgs[:first])
    group = f"g-{uuid.uuid4().hex[:6]}"
    # small polls, so that the broker goes away while there is input left and records to confirm
    svc = ServeProcess(b.bootstrap, group, topics, {"DRIFT_SERVICE_MAX_POLL_RECORDS": "1000"})
    port = b.port
    timings = {}
    try:
        svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 60, "ready")
        svc.wait_for(lambda: svc.metric("drift_messages_consumed_total") >= len(msgs) * 0.2, 120,
                     "20% consumed")
        assert _stop_broker(b) == 0
        down = time.monotonic()
        seen = []  # (seconds into the outage, readyz code, readyz reason, livez code)
        while time.monotonic() - down < 75:
            assert svc.proc.poll() is None, "drift serve exited during the outage:\n" + "\n".join(svc.raw[-30:])
            code, body = svc.get("/readyz")
            live = svc.get("/livez")[0]
            seen.append((round(time.monotonic() - down, 1), code, json.loads(body)["reason"], live))
            assert live == 200, seen[-5:]
            if code == 503 and json.loads(body)["reason"].startswith("broker unavailable"):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"/readyz did not report the outage in 75 s: {seen[::10]}")
        timings["not_ready_after_s"] = seen[-1][0]
        time.sleep(2)  # still down: still not ready, still live, still running
        assert svc.get("/readyz")[0] == 503 and svc.get("/livez")[0] == 200 and svc.proc.poll() is None

        b.restart()  # same port, same bucket
        assert b.port == port
        up = time.monotonic()
        timings["outage_s"] = round(up - down, 1)
        produce(b.bootstrap, topics, msgs[first:])
        svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 90, "ready again after the restart")
        timings["ready_again_after_s"] = round(time.monotonic() - up, 1)
        svc.wait_for(lambda: _all_consumed(b, topics, group), 120, "all input committed")
        timings["all_committed_after_s"] = round(time.monotonic() - up, 1)
    finally:
        code = svc.stop()
    print(f"\nbroker outage: {timings}")
    assert code == 0, "\n".join(svc.raw[-30:])
    warnings = [d["msg"] for d in svc.lines if d.get("level") in ("warning", "error")]
    assert "delivery failed; retrying" in warnings
    assert not any(d.get("level") == "error" for d in svc.lines), warnings

    records = read_topic(b.bootstrap, topics["alerts"])
    got = alert_ids(records)
    assert sorted(set(got)) == expected
    # at-least-once: a repeat is the same alert (same key, id and data), never a new id
    by_id = collections.defaultdict(list)
    for r in records:
        ev = json.loads(r.value)
        assert r.key.decode() == ev["data"]["alert_id"]
        by_id[ev["id"]].append(ev["data"])
    for i, datas in by_id.items():
        assert all(d == datas[0] for d in datas), i


class StillReady(AssertionError):
    """/readyz stayed 200 through an outage."""


def test_an_idle_service_reports_an_outage(s3_broker):
    """A caught-up service has nothing to deliver: readiness follows the group coordinator."""
    from kafka import TopicPartition

    b = s3_broker
    topics = _topics(b)
    produce(b.bootstrap, topics, [("scores", "a/b", {"ts": 1767607200 + i, "app": "a", "intent": "b",
                                                      "dimension": "relevance", "score": 0.8})
                                  for i in range(100)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    svc = ServeProcess(b.bootstrap, group, topics)
    try:
        scores = [TopicPartition(topics["scores"], i) for i in range(TOPICS["scores"])]
        svc.wait_for(lambda: sum(committed(b.bootstrap, group, tp) or 0 for tp in scores) == 100, 60, "all committed")
        assert svc.get("/readyz")[0] == 200
        assert _stop_broker(b) == 0
        down = time.monotonic()
        codes = []
        while time.monotonic() - down < 35 and 503 not in codes:
            assert svc.proc.poll() is None and svc.get("/livez")[0] == 200
            codes.append(svc.get("/readyz")[0])
            time.sleep(1)
        b.restart()
    finally:
        assert svc.stop() == 0
    if 503 not in codes:
        raise StillReady(f"/readyz stayed {set(codes)} for 35 s with the broker down")
