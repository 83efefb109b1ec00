"""Helpers for service tests against the real embedded broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import msgspec

from drift.tools.demo import keyed_messages

_enc = msgspec.json.Encoder()


def messages_of(events, max_batch: int = 60, seed: int = 0):
    """Keyed messages with per-key runs of 1..max_batch events (single objects and arrays mixed)."""
    return keyed_messages(events, max_batch, seed=seed)


def produce(bootstrap: str, topics: dict[str, str], messages) -> int:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks="all")
    for stream, key, value in messages:
        p.send(topics[stream], key=key if isinstance(key, bytes) else key.encode(),
               value=value if isinstance(value, bytes) else _enc.encode(value))
    p.flush()
    p.close()
    return len(messages)


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0):
    """Every record of ``topic`` up to its current end (high watermark)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=300).values():
                out.extend(recs)
            if all(c.highwater(tp) is not None and c.position(tp) >= c.highwater(tp) for tp in tps):
                return out
        raise TimeoutError(f"could not read {topic} to its end")
    finally:
        c.close()


def service_topics(make, control: bool = False) -> dict[str, str]:
    """A fresh topic per stream for one `drift serve` test (``make`` is the ``topic_factory``
    fixture): the five inputs with 3 partitions (co-partitioned), ``control`` too when asked,
    and the single-partition outputs."""
    names = {k: make(3, k) for k in ("scores", "retrieval", "queries", "labels", "feedback")}
    if control:
        names["control"] = make(3, "control")
    names.update({k: make(1, k) for k in ("alerts", "dlq", "state", "escalations")})
    return names


def committed(bootstrap: str, group: str, tp):
    """The offset ``group`` has committed for ``tp`` (None when none)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return c.committed(tp)
    finally:
        c.close()


def group_caught_up(bootstrap: str, group: str, topic: str, partitions) -> bool:
    """``group`` committed offsets at the end of these (non-empty) partitions of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for p in sorted(partitions):
            tp = TopicPartition(topic, p)
            c.assign([tp])
            c.seek_to_beginning(tp)
            c.poll(timeout_ms=300, max_records=1)
            hw = c.highwater(tp)
            if hw is None or (committed(bootstrap, group, tp) or 0) < hw:
                return False
        return True
    finally:
        c.close()


def alert_ids(records) -> list[str]:
    return [json.loads(r.value)["id"] for r in records]


class ServeProcess:
    """`drift serve` in a subprocess, with its JSON log collected and its HTTP port found."""

    def __init__(self, bootstrap: str, group: str, topics: dict[str, str], extra_env: dict | None = None,
                 config: str | None = None):
        env = dict(os.environ)
        env.update({f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()})
        if "control" not in topics and "scores" in topics:
            # a control topic of this test's own (the service creates it like the scores topic),
            # not the broker-wide default that every other test's service would share
            env["DRIFT_TOPICS_CONTROL"] = f"{topics['scores']}-control"
        env.update({"DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000", "DRIFT_SERVICE_CHECKPOINT_INTERVAL": "1s",
                    "PYTHONUNBUFFERED": "1"})
        env.update(extra_env or {})
        cmd = [sys.executable, "-m", "drift.cli", "serve", "--bootstrap-servers", bootstrap,
               "--group-id", group, "--http-port", "0"] + (["--config", config] if config else [])
        self._start(cmd, env, "drift serve", 30)

    def _start(self, cmd: list[str], env: dict, what: str, timeout: float) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self.port = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n" + "\n".join(self.raw[-30:]))
            time.sleep(0.05)

    def _read(self):
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self.raw.append(text)
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            self.lines.append(doc)
            if doc.get("msg") == "starting":
                self.port = doc["http_port"]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str) -> float:
        code, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)", line)
                if m:
                    total += float(m.group(2))
        return total

    def wait_for(self, predicate, timeout: float = 120.0, what: str = "condition"):
        timeout = max(timeout, 600.0) if timeout >= 60 else timeout  # a loaded CI box is slow: bounds, not timings
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"drift serve exited ({self.proc.returncode}) waiting for {what}:\n"
                                   + "\n".join(self.raw[-30:]))
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}:\n" + "\n".join(self.raw[-20:]))

    def wait_consumed(self, messages: int, timeout: float = 600.0):
        self.wait_for(lambda: self.metric("drift_messages_consumed_total") >= messages, timeout,
                      f"{messages} messages consumed")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait(30)



class IngestProcess(ServeProcess):
    """`drift ingest otlp` in a subprocess, configured by ``env`` (the same log reader, metrics and stop)."""

    def __init__(self, env: dict):
        cmd = [sys.executable, "-m", "drift.cli", "ingest", "otlp", "--http-port", "0"]
        self._start(cmd, {**os.environ, **env, "PYTHONUNBUFFERED": "1"}, "drift ingest otlp", 60)
