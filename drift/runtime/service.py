"""``drift serve``: the long-lived consumer service.

A consumer group over the input topics. Each assigned input partition has its own
:class:`~drift.core.engine.Engine` (the same engine as ``drift replay``), restored from ``drift.state``
when the partition is assigned and checkpointed in the order written in :mod:`drift.runtime.checkpoint`.
The co-partitioned topics of the judge join (``llm.scores``, ``llm.labels``, ``llm.feedback``)
share one engine per partition number: Kafka's range assignor gives one member partition ``p``
of every topic with the same partition count, so a label meets the scores of its trace.
The loop, in quixstreams' shape::

    while running:
        poll a batch → decode (bad records to the DLQ) → engine → alerts produced
        checkpoint when due: flush + confirm → state → commit

SIGTERM/SIGINT only set the stop flag: the loop finishes its batch, checkpoints, leaves the group
and the process exits 0. Exit codes: 0 clean stop, 1 delivery or Kafka failure (offsets were not
committed past what was delivered), 2 configuration error, 3 stopped because most input was bad.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from typing import Any

from kafka import ConsumerRebalanceListener

from detectors.base import state_views
from drift.core import alerts as _alerts
from drift.core.config import Settings
from drift.core.engine import Engine, parse_command
from drift.core.events import EventDecoder, format_time
from drift.core.sinks import DeliveryError, Sink
from drift.core.streams import STREAMS
from drift.runtime.checkpoint import (
    CheckpointError,
    ChunkWrite,
    ChunkWriter,
    chunk_key,
    decode_checkpoint,
    new_checkpoint,
    state_key,
)
from drift.runtime.http import Health, HttpServer, Metrics
from drift.runtime.series_metrics import SeriesGauges
from drift.runtime.sinks import KafkaAlertSink

__all__ = ["Service", "KafkaLoop", "DeliveryError", "setup_logging", "read_states"]

log = logging.getLogger("drift.service")




class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in self._skip:
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    assert handler.formatter is not None
    handler.formatter.converter = time.gmtime
    root = logging.getLogger("drift")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@dataclasses.dataclass
class PartitionState:
    topic: str
    partition: int
    kind: str
    engine: Engine
    decoder: EventDecoder
    next_offset: int | None = None
    checkpointed: int | None = None
    anchor: Any = None  # the partition whose state key holds this engine's state (itself unless joined)
    held: list = dataclasses.field(default_factory=list)  # control: (record, command) not yet due
    read_to: int | None = None  # control: the offset after the last record read


# streams that share an engine per partition number; "control" (drift.control, operator commands)
# rides with them so a command's offset is committed with the state it changed
JOINED = ("scores", "labels", "feedback", "control")


def engine_groups(tps, inputs: dict[str, str], scores: str) -> dict[Any, list]:
    """Input partitions by the engine they share: ``{anchor: members}`` (``inputs``: topic -> stream,
    as :func:`input_topics` gives). Partitions of the joined topics with one number share the engine
    of the scores partition (the anchor); every other partition is its own group."""
    from kafka.structs import TopicPartition

    groups: dict[Any, list] = {}
    joined: dict[int, list] = {}
    for tp in sorted(tps, key=lambda x: (x.topic, x.partition)):
        if inputs[tp.topic] in JOINED:
            joined.setdefault(tp.partition, []).append(tp)
        else:
            groups[tp] = [tp]
    for p, members in joined.items():
        anchor = TopicPartition(scores, p)
        if anchor not in members:
            anchor = members[0]
            if any(inputs[m.topic] != "scores" for m in members):
                log.warning("labels/feedback partition assigned without its scores partition: they cannot "
                            "join here (are the topics co-partitioned, with the range assignor?)",
                            extra={"partition": p, "topics": [m.topic for m in members]})
        groups[anchor] = members
    return groups


def input_topics(settings: Settings) -> dict[str, str]:
    """The topics ``drift serve`` consumes: ``{topic: stream}`` (``"control"`` for drift.control)."""
    t = settings.topics
    inputs = {t[name]: name for name in STREAMS if name in t}
    if t.get("control"):
        inputs[t["control"]] = "control"
    return inputs


def read_states(consumer_factory, topic: str, keys: set[bytes], timeout: float,
                chunks: dict[bytes, dict[str, bytes]] | None = None) -> dict[bytes, list[bytes]]:
    """Every record of ``topic`` whose key is in ``keys``, oldest first, read up to the end.

    With ``chunks``, the newest record of each chunk of those keys (``{key}/{chunk}``) is put
    there too, as ``chunks[key][chunk]``.

    The end is the partition's high watermark as reported by fetches (``end_offsets`` is not
    used: some Kafka-compatible brokers report it wrongly after batched produces).
    """
    from kafka import TopicPartition

    found: dict[bytes, list[bytes]] = collections.defaultdict(list)
    consumer = consumer_factory(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not parts and time.monotonic() < min(deadline, time.monotonic() + 2):
            time.sleep(0.1)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return found
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while True:
            batch = consumer.poll(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    if r.key in keys:
                        found[r.key].append(r.value)
                    elif chunks is not None and r.key is not None and b"/" in r.key:
                        base, chunk = r.key.rsplit(b"/", 1)
                        if base in keys:
                            chunks.setdefault(base, {})[chunk.decode(errors="replace")] = r.value
            hw = [consumer.highwater(tp) for tp in tps]
            if all(h is not None and consumer.position(tp) >= h for tp, h in zip(tps, hw)):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout:g} s")
    finally:
        consumer.close()


def tls_problem(bootstrap_servers: str, timeout: float) -> str | None:
    """Why no bootstrap server answers a TLS handshake within ``timeout`` (None: one does).

    Only whether the listener speaks TLS is probed (certificates are not checked here: a TLS
    server that refuses this client still counts, and kafka-python reports the refusal).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    problems = []
    for server in str(bootstrap_servers).split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            with socket.create_connection((host, int(port or 9092)), timeout=timeout) as raw:
                with ctx.wrap_socket(raw, server_hostname=host):
                    return None
        except ssl.SSLError as exc:
            if "WRONG_VERSION_NUMBER" not in str(exc) and "record layer" not in str(exc):
                return None  # a TLS server that refused the handshake (certificates): it speaks TLS
            problems.append(f"{server.strip()} does not speak TLS ({exc.reason})")
        except TimeoutError:
            problems.append(f"{server.strip()}: no TLS answer within {timeout:g} s (a PLAINTEXT listener?)")
        except (OSError, ValueError) as exc:
            problems.append(f"{server.strip()}: {exc}")
    return "TLS handshake failed: " + "; ".join(problems)


class _Listener(ConsumerRebalanceListener):
    """Rebalance callbacks: checkpoint what is revoked, restore what is assigned."""

    def __init__(self, service: KafkaLoop):
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned):
        self.service.on_assigned(list(assigned))


class KafkaLoop:
    """The Kafka plumbing ``drift serve`` and ``drift ingest otlp`` share: clients and start-up
    with retries (and a TLS probe), delivery confirmed with retries (step 2 of the commit order),
    the broker-readiness check, the stop flag, the "most input is bad" stop and the fault hook.

    A subclass sets ``settings``, ``health``, ``metrics`` (with ``dlq``), ``parts`` (objects with
    ``next_offset`` and ``checkpointed``), ``pending``, ``dlq_window``, ``stop_requested``,
    ``fault_point``/``fault_after``, ``consumer``/``producer`` and implements ``_client_config``
    and ``_make_clients``; the rebalance callbacks go to its ``on_revoked``/``on_assigned``.
    """

    settings: Settings
    health: Health
    parts: dict
    pending: list
    dlq_window: collections.deque
    stop_requested: bool
    fault_point: str
    fault_after: int
    consumer: Any
    producer: Any

    def _client_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _make_clients(self) -> None:
        raise NotImplementedError

    def _ensure_output_topics(self) -> None:
        """Hook: create missing output topics at start-up (nothing by default)."""

    def on_revoked(self, tps) -> None:
        raise NotImplementedError

    def on_assigned(self, tps) -> None:
        raise NotImplementedError

    def _consumer_factory(self, **kw):
        from kafka import KafkaConsumer

        return KafkaConsumer(**{**self._client_config(), **kw})

    def _send(self, topic: str, key: bytes | None, value: bytes, headers=None):
        fut = self.producer.send(topic, key=key, value=value, headers=headers)
        self.pending.append((fut, (topic, key, value, headers)))
        return fut

    def _confirm(self) -> None:
        """Flush and check every send since the last confirmation (step 2 of the commit order).

        Records the broker did not confirm are sent again (same keys and values, so alert ids
        stay the same) until they are, while the service reports not-ready; nothing later in
        the commit order happens before that. Gives up with :class:`DeliveryError` only when a
        stop is requested or ``service.delivery_timeout`` passes without progress.
        """
        deadline = time.monotonic() + self.settings.service["delivery_timeout"]
        delay = 0.5
        while True:
            try:
                self.producer.flush(timeout=30)
            except Exception as exc:  # KafkaTimeoutError: some sends still pending
                log.warning("flush did not complete", extra={"reason": str(exc)})
            pending, self.pending = self.pending, []
            failed = []
            for fut, rec in pending:
                if not fut.is_done or fut.failed():
                    failed.append((fut, rec))
            if not failed:
                if not self.health.ready and self.parts and self.health.reason.startswith("broker"):
                    self.health.set_ready(True, "ok")
                return
            why = repr(failed[0][0].exception) if failed[0][0].is_done else "not acknowledged in time"
            if self.stop_requested or time.monotonic() > deadline:
                raise DeliveryError(f"{len(failed)} record(s) not delivered: {why}")
            self.health.beat()  # the loop is alive, waiting on the broker: not a hang
            self.health.set_ready(False, f"broker unavailable: {len(failed)} record(s) awaiting delivery")
            log.warning("delivery failed; retrying", extra={"records": len(failed), "reason": why,
                                                            "retry_in_s": delay})
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            for fut, (topic, key, value, headers) in failed:
                if fut.is_done:  # failed for good: send again; an undecided one is still in flight
                    self._send(topic, key, value, headers)
                else:
                    self.pending.append((fut, (topic, key, value, headers)))

    def _write_states(self, writes: list[tuple[ChunkWriter, ChunkWrite, bytes]]) -> None:
        """Step 3 of the commit order for prepared checkpoints ``(writer, write, state key)``: the
        chunks that changed, confirmed, then the manifests, confirmed; only then do the writers
        take the new chunk table (a failed send leaves them where the delivered manifests are)."""
        topic = self.settings.topics["state"]
        for _, write, key in writes:
            for chunk, value in write.chunks:  # to the slots the delivered manifests do not reference
                self._send(topic, chunk_key(key, chunk), value)
        self._confirm()
        for _, write, key in writes:
            self._send(topic, key, write.manifest)
        self._fault("produced_state")
        self._confirm()
        for writer, write, _ in writes:
            writer.commit(write)

    def dlq_overflow(self) -> str | None:
        """A message when most recent input was rejected (the service should stop)."""
        svc = self.settings.service
        horizon = time.monotonic() - svc["dlq_window"]
        while self.dlq_window and self.dlq_window[0][0] < horizon:
            self.dlq_window.popleft()
        total = sum(n for _, n, _ in self.dlq_window)
        bad = sum(b for _, _, b in self.dlq_window)
        if total >= svc["dlq_min_messages"] and bad > svc["dlq_max_fraction"] * total:
            return (f"{bad:,} of the last {total:,} input messages were rejected (more than "
                    f"{svc['dlq_max_fraction']:.0%}); producers are sending bad data. They are in "
                    f"{self.settings.topics['dlq']!r} with reasons. Fix the producers, or raise "
                    f"service.dlq_max_fraction, then restart.")
        return None

    def _check_broker(self) -> None:
        """Readiness follows the group coordinator: a caught-up service has nothing to deliver,
        so a broker outage shows here first."""
        try:
            unknown = self.consumer._coordinator.coordinator_unknown()
        except Exception:  # noqa: BLE001 (a client without this internal: skip the check)
            return
        if unknown and self.health.ready:
            self.health.set_ready(False, "broker unavailable: no group coordinator")
            log.warning("broker unavailable: no group coordinator")
        elif not unknown and not self.health.ready and self.health.reason.startswith("broker") and self.parts:
            self.health.set_ready(True, "ok")
            log.info("broker available again")

    def _fault(self, point: str) -> None:
        if point == self.fault_point and any(p.next_offset != p.checkpointed for p in self.parts.values()):
            self.fault_after -= 1
            if self.fault_after <= 0:
                log.error("fault injected: exiting abruptly", extra={"point": point})
                logging.shutdown()
                os._exit(70)

    def request_stop(self, signum=None, frame=None) -> None:
        """Signal handler: only sets the flag; the loop does the rest."""
        self.stop_requested = True

    def _connect(self) -> bool:
        """Build the clients and the output topics, retrying until ``startup_timeout``.

        Each attempt is bounded by ``connect_timeout`` (the clients' bootstrap), so an
        unreachable broker or a TLS mismatch is logged as an error with its reason, and
        SIGTERM stops the service within one attempt. False: stop requested, or gave up.
        """
        from kafka.errors import KafkaError

        svc = self.settings.service
        deadline = time.monotonic() + svc["startup_timeout"]
        where = {"bootstrap_servers": self.settings.bootstrap_servers,
                 "security_protocol": self.settings.kafka_config().get("security_protocol", "PLAINTEXT")}
        self.health.set_ready(False, "connecting to Kafka")
        tls = where["security_protocol"] in ("SSL", "SASL_SSL")
        for attempt in itertools.count(1):
            # kafka-python's TLS handshake has no deadline: against a listener that does not
            # speak TLS it waits forever, so TLS is probed first, with one
            reason = tls_problem(self.settings.bootstrap_servers, svc["connect_timeout"]) if tls else None
            if reason is None:
                try:
                    self._make_clients()
                    self._ensure_output_topics()
                    return True
                except (KafkaError, OSError) as exc:
                    self._close_clients()
                    reason = f"{type(exc).__name__}: {exc}"
            if self.stop_requested:
                log.info("stop requested before Kafka was reached")
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("cannot reach Kafka: giving up", extra={**where, "attempts": attempt, "error": reason})
                return False
            wait = min(2.0 ** min(attempt, 4), left)
            log.error("cannot reach Kafka; retrying", extra={**where, "attempt": attempt, "error": reason,
                                                            "retry_in_s": round(wait, 1)})
            end = time.monotonic() + wait
            while time.monotonic() < end and not self.stop_requested:
                time.sleep(0.1)
            if self.stop_requested:
                log.info("stop requested before Kafka was reached")
                return False
        return False  # not reached

    def _close_clients(self) -> None:
        for name in ("consumer", "producer"):
            client = getattr(self, name, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=1) if name == "producer" else client.close(autocommit=False)
                setattr(self, name, None)

    def _leave(self) -> None:
        self.health.set_ready(False, "stopping")
        self.consumer.close(autocommit=False)


class Service(KafkaLoop):
    """The consumer service (see module docstring).

    Parameters
    ----------
    settings : Settings
    registry : prometheus_client.CollectorRegistry, optional
        Where metrics register (a fresh one by default).
    http_host : str
        Interface for the HTTP port (``settings.http_port``; 0 picks a free port).
    sinks : list of Sink, optional
        Alert sinks besides the alert topic (which is always the first); each one's ``confirm``
        runs in step 2 of the commit order.
    """

    def __init__(self, settings: Settings, registry=None, http_host: str = "0.0.0.0",
                 fault: str | None = None, golden: dict | None = None, encoder_factory=None,
                 sinks: list[Sink] | None = None):
        self.settings = settings
        self.sinks: list[Sink] = [KafkaAlertSink(self), *(sinks or [])]
        self.golden = golden or {}
        self._encoder = None
        self._encoder_factory = encoder_factory
        # test hook: "POINT" or "POINT:N" ends the process abruptly at the N-th time (default 2nd)
        # the commit order reaches POINT (produced, confirmed, produced_state, state_written, committed)
        self.fault_point, _, n = (fault or "").partition(":")
        self.fault_after = int(n or 2)
        self.metrics = Metrics(registry)
        self.health = Health(settings.service["livez_timeout"])
        # drift_alert_firing, and with [metrics] series the drift_series_value gauges
        self.series_gauges = SeriesGauges(self.metrics.registry, series=settings.metrics["series"],
                                          series_limit=settings.metrics["series_limit"])
        if settings.alertmanager.get("urls"):  # [alertmanager] urls: the Alertmanager sink beside the topic
            from drift.runtime.alertmanager import AlertmanagerSink

            self.sinks.append(AlertmanagerSink(settings, self.metrics.registry))
        for sink in self.sinks:  # a sink may report that it cannot deliver (/readyz)
            problem = getattr(sink, "problem", None)
            if callable(problem):
                self.health.checks.append(problem)
        self.http_host = http_host
        self.stop_requested = False
        self.parts: dict[Any, PartitionState] = {}
        self.writers: dict[Any, ChunkWriter] = {}  # per engine (its anchor partition): incremental state
        self.pending: list = []
        self.inputs = input_topics(settings)
        self.key_partition: dict[tuple[str, bytes], int] = {}
        self.dlq_window: collections.deque = collections.deque()
        self.last_checkpoint = time.monotonic()
        self.consumer: Any = None
        self.producer: Any = None
        self.http: HttpServer | None = None

    def encoder_factory(self):
        """One shared text encoder for every partition's engine, built on first use."""
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        return self._encoder

    def _new_engine(self) -> Engine:
        return Engine(self.settings, golden=self.golden,
                      encoder_factory=self.encoder_factory if self._encoder_factory else None)

    # -- clients ----------------------------------------------------------------------------
    def _client_config(self) -> dict[str, Any]:
        cfg = self.settings.kafka_config()
        cfg.setdefault("client_id", f"drift-{self.settings.service_name}")
        # every client bootstraps within connect_timeout or raises (kafka-python waits 30 s)
        cfg.setdefault("bootstrap_timeout_ms", int(self.settings.service["connect_timeout"] * 1000))
        return cfg

    def _make_clients(self):
        from kafka import KafkaProducer

        svc = self.settings.service
        self.producer = KafkaProducer(acks="all", linger_ms=5, max_request_size=64 << 20,
                                      **self._client_config())
        self.consumer = self._consumer_factory(
            group_id=self.settings.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=svc["max_poll_records"], session_timeout_ms=svc["session_timeout_ms"],
            heartbeat_interval_ms=max(1000, svc["session_timeout_ms"] // 3))

    def _ensure_output_topics(self) -> None:
        """Create the alert, DLQ and state topics if the cluster does not have them."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        t = self.settings.topics
        admin = KafkaAdminClient(**self._client_config())
        try:
            have = set(admin.list_topics())
            want = {t["alerts"]: {}, t["dlq"]: {}, t["escalations"]: {},
                    t["state"]: {"cleanup.policy": "compact", "max.message.bytes": str(64 << 20)}}
            missing = [NewTopic(name, 1, -1, topic_configs=cfg) for name, cfg in want.items() if name not in have]
            if t.get("control") and t["control"] not in have:
                # co-partitioned with the scores topic, so a command keyed like a series meets its engine
                scores = self.consumer.partitions_for_topic(t["scores"]) if self.consumer is not None else None
                if scores:
                    missing.append(NewTopic(t["control"], len(scores), -1))
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
                log.info("created output topics", extra={"topics": [n.name for n in missing]})
        finally:
            admin.close()

    # -- rebalancing ------------------------------------------------------------------------
    def on_revoked(self, tps) -> None:
        mine = [tp for tp in tps if tp in self.parts]
        self.health.set_ready(False, "rebalancing")
        if mine:
            anchors = {self.parts[tp].anchor for tp in mine}
            self.checkpoint([tp for tp, p in self.parts.items() if p.anchor in anchors])
            for tp in mine:
                del self.parts[tp]
            for anchor in anchors:
                self.writers.pop(anchor, None)
        self.metrics.assigned.set(len(self.parts))
        log.info("partitions revoked", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in mine]})

    def _groups(self, tps) -> dict[Any, list]:
        """Assigned partitions by the engine they share (:func:`engine_groups`)."""
        return engine_groups(tps, self.inputs, self.settings.topics["scores"])

    def on_assigned(self, tps) -> None:
        self.health.set_ready(False, "restoring state")
        group = self.settings.group_id
        groups = self._groups(tps)
        keys = {state_key(group, anchor.topic, anchor.partition): anchor for anchor in groups}
        chunks: dict[bytes, dict[str, bytes]] = {}
        found = read_states(self._consumer_factory, self.settings.topics["state"], set(keys),
                            self.settings.service["restore_timeout"], chunks)
        fingerprint = self._new_engine().fingerprint()
        for key, tp in keys.items():
            engine = self._new_engine()
            restored = None
            rejected = []
            for raw in reversed(found.get(key, [])):  # newest first; fall back to older ones
                try:
                    cp = decode_checkpoint(raw, fingerprint=fingerprint, chunks=chunks.get(key, {}))
                    with state_views():  # the engine takes the decoded arrays (nobody else holds them)
                        engine.load_state(cp.engine)
                    restored = cp
                    break
                except (CheckpointError, ValueError, KeyError) as exc:
                    engine = self._new_engine()
                    self.metrics.restores.labels("rejected").inc()
                    rejected.append((str(exc), raw))
                    log.error("unusable checkpoint skipped", extra={"partition": f"{tp.topic}/{tp.partition}",
                                                                    "reason": str(exc)})
            for reason, raw in rejected:
                outcome = (f"restored the previous checkpoint (offset {restored.next_offset})" if restored
                           else "rebuilding from the beginning of the partition")
                notice = _alerts.state_notice(tp.topic, tp.partition, reason, outcome, raw, source=engine.source)
                self._emit([notice])
            # the next checkpoint writes only what changed since the restored one, and never over
            # the chunks it references
            self.writers[tp] = ChunkWriter.from_checkpoint(restored)
            decoder = engine.decoder()
            for member in groups[tp]:
                part = PartitionState(member.topic, member.partition, self.inputs[member.topic], engine, decoder,
                                      anchor=tp)
                offset = restored.offset_of(member.topic) if restored is not None else None
                if offset is not None:
                    # the restored state covers input up to next_offset, but the crash may have come
                    # before step 4 committed it: the next checkpoint commits it (and writes the
                    # state again), or a partition whose input has all been read would keep its lag
                    part.next_offset = offset
                    part.checkpointed = None
                    self.consumer.seek(member, offset)
                    self.metrics.restores.labels("restored").inc()
                    assert restored is not None
                    log.info("state restored", extra={"partition": f"{member.topic}/{member.partition}",
                                                      "next_offset": offset,
                                                      "age_s": round(time.time() - restored.written_at, 1)})
                else:
                    # no usable state: rebuild from the oldest retained input rather than start blind
                    self.consumer.seek_to_beginning(member)
                    self.metrics.restores.labels("fresh").inc()
                    log.info("no state: reading from the beginning",
                             extra={"partition": f"{member.topic}/{member.partition}"})
                self.parts[member] = part
        self.metrics.assigned.set(len(self.parts))
        self.health.set_ready(True, "ok")

    # -- producing --------------------------------------------------------------------------
    def _dlq(self, record, raw: bytes, error_class: str, reason: str, event: int | None) -> None:
        headers = [("x-error-class", error_class.encode()), ("x-error-message", reason[:2000].encode()),
                   ("x-source-topic", record.topic.encode()), ("x-source-partition", str(record.partition).encode()),
                   ("x-source-offset", str(record.offset).encode())]
        if event is not None:
            headers.append(("x-source-event-index", str(event).encode()))
        self._send(self.settings.topics["dlq"], record.key, raw if raw is not None else b"", headers)
        self.metrics.dlq.labels(error_class).inc()

    # -- the loop ---------------------------------------------------------------------------
    def process(self, records: dict) -> None:
        """Decode, run and produce for one polled batch (``{TopicPartition: [records]}``)."""
        started = time.perf_counter()
        now = time.monotonic()
        for tp, recs in records.items():
            part = self.parts.get(tp)
            if part is None or not recs:
                continue
            if part.kind == "control":
                self._control(tp, recs)
                continue
            self._check_keys(tp, recs)
            decoded = part.decoder.decode([r.value for r in recs], kind=part.kind)
            for rej in decoded.rejected:
                rec = recs[rej.message]
                self._dlq(rec, rec.value, rej.error_class, rej.reason, rej.event)
            alerts, late = part.engine.run(decoded)
            for lrej in late:
                self._dlq(recs[lrej.message], lrej.raw, lrej.error_class, lrej.reason, lrej.event)
            if alerts:
                self._emit(alerts)
            if part.engine.escalations:
                self._escalations(part.engine.take_escalations())
            part.next_offset = recs[-1].offset + 1
            self.metrics.messages.labels(tp.topic).inc(len(recs))
            self.metrics.events.labels(tp.topic).inc(decoded.n_events - len(late))
            bad = len({r.message for r in decoded.rejected})
            self.dlq_window.append((now, len(recs), bad))
        self._run_held()
        self.metrics.batch.observe(time.perf_counter() - started)

    def _run_held(self) -> None:
        """Held control commands that the input has now reached (or caught up past)."""
        for tp, part in list(self.parts.items()):
            if part.held:
                self._run_commands(tp)

    def _control(self, tp, recs) -> None:
        """Operator commands read from ``drift.control`` partition ``tp.partition``: checked (a
        command that cannot be read goes to the DLQ with the reason), then held until due
        (:meth:`_run_commands`)."""
        part = self.parts[tp]
        for rec in recs:
            try:
                cmd = parse_command(rec.value or b"")
            except ValueError as exc:
                self._dlq(rec, rec.value, "bad_command", str(exc), None)
                continue
            part.held.append((rec, cmd))
        self.metrics.messages.labels(tp.topic).inc(len(recs))
        part.read_to = recs[-1].offset + 1
        self._run_commands(tp)

    def _run_commands(self, tp) -> None:
        """Run the held commands of control partition ``tp`` that are due, in order.

        A command runs on every engine of this instance that holds an input partition of its
        number, once those engines have read up to its time (``ts``, the reset's event time) or
        have caught up with their input: a service rebuilding its state from old input applies a
        reset where it was issued, not before the data it was issued after. The partition's
        offset stays at the first command not yet run, so a crash loses none (one run again
        after a crash gives the same alert ids)."""
        part = self.parts[tp]
        group = [(t, p) for t, p in self.parts.items() if p.partition == tp.partition and p.kind != "control"]
        engines = {id(p.engine): p.engine for _, p in group}
        engines.setdefault(id(part.engine), part.engine)
        while part.held:
            rec, cmd = part.held[0]
            caught_up = all(self._caught_up(t) for t, _ in group)
            newest = min((e.newest_event_time for e in engines.values()), default=float("inf"))
            if not (caught_up or newest >= cmd["ts"]):
                break
            part.held.pop(0)
            alerts: list = []
            try:
                for engine in engines.values():
                    alerts += engine.control(cmd)
            except ValueError as exc:  # e.g. a rule this configuration does not have
                self._dlq(rec, rec.value, "bad_command", str(exc), None)
                continue
            for _, p in group:  # their state changed: checkpointed before the command's offset commits
                if p.next_offset is not None:
                    p.checkpointed = None
            log.info("control command", extra={"command": cmd["command"], "rule": cmd["rule"], "app": cmd["app"],
                                               "intent": cmd.get("intent"), "dimension": cmd.get("dimension"),
                                               "by": cmd.get("by"), "partition": tp.partition,
                                               "series_reset": sum(a.status == "info" for a in alerts)})
            self.metrics.control.labels(cmd["command"]).inc()
            if alerts:
                self._emit(alerts)
        part.next_offset = part.held[0][0].offset if part.held else part.read_to

    def _caught_up(self, tp) -> bool:
        hw = self.consumer.highwater(tp) if self.consumer is not None else None
        return hw is not None and self.consumer.position(tp) >= hw

    def _escalations(self, rows) -> None:
        """Escalated traces to ``topics.escalations`` (keyed ``app/intent``), so a judge sampler
        can evaluate them at 100 %; delivered before the checkpoint like alerts."""
        topic = self.settings.topics["escalations"]
        for t, app, intent, trace_id in rows:
            value = json.dumps({"trace_id": trace_id, "app": app, "intent": intent, "ts": format_time(t),
                                "reason": "escalate"}).encode()
            self._send(topic, f"{app}/{intent}".encode(), value)
        self.metrics.escalations.inc(len(rows))

    def _emit(self, alerts) -> None:
        """Hand alerts to every sink (the alert topic first)."""
        for sink in self.sinks:
            sink.emit(alerts)
        for a in alerts:
            self.metrics.alerts.labels(a.rule, a.status).inc()

    def _confirm_sinks(self) -> bool:
        """Step 2 of the commit order: every sink confirms what it was given (the alert topic's
        sink confirms the producer's records: alerts and DLQ records). False when a sink answered
        False (not delivered yet, still retrying): state and offsets must not move this time."""
        delivered = True
        for sink in self.sinks:
            if sink.confirm() is False:
                delivered = False
        self._confirm()  # DLQ records, if no alert was produced
        return delivered

    def _check_keys(self, tp, recs) -> None:
        for r in recs:
            k = (tp.topic, r.key)
            p = self.key_partition.setdefault(k, tp.partition)
            if p != tp.partition:
                self.key_partition[k] = tp.partition
                self.metrics.multi_partition.inc()
                log.warning("a key arrives on more than one partition: its series' state is split",
                            extra={"topic": tp.topic, "key": (r.key or b"").decode("utf-8", "replace")[:200],
                                   "partitions": [p, tp.partition]})

    def checkpoint(self, tps=None) -> None:
        """Steps 1–4 of the commit order for ``tps`` (default: every assigned partition)."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        self._fault("produced")
        if not self._confirm_sinks():  # 1 + 2: alerts (every sink) and DLQ records delivered
            # a sink still retrying (Alertmanager down): state and offsets stay; the next
            # checkpoint tries again and a restart re-reads the input (same alert ids and labels)
            log.warning("checkpoint skipped: a sink has not confirmed delivery; state and offsets stay",
                        extra={"sinks": [s.name for s in self.sinks]})
            self.last_checkpoint = time.monotonic()
            return
        self._fault("confirmed")
        members: dict[Any, list] = {}
        for tp, p in self.parts.items():
            if (tps is None or tp in tps) and p.next_offset is not None:
                members.setdefault(p.anchor, []).append((tp, p))
        todo = {a: ms for a, ms in members.items() if any(p.next_offset != p.checkpointed for _, p in ms)}
        if todo:
            group = self.settings.group_id
            writes = []
            for anchor, ms in todo.items():  # 3: state tagged with the offsets it covers
                engine = ms[0][1].engine
                offsets = {tp.topic: p.next_offset for tp, p in ms} if len(ms) > 1 or anchor != ms[0][0] else None
                first = next((p for tp, p in ms if tp == anchor), ms[0][1])
                writer = self.writers.setdefault(anchor, ChunkWriter())
                with state_views():  # the writer digests and compresses the arrays before they change
                    cp = new_checkpoint(group, anchor.topic, anchor.partition, first.next_offset, engine, offsets)
                    writes.append((writer, writer.prepare(cp), state_key(group, anchor.topic, anchor.partition)))
            self._write_states(writes)
            for _, write, _ in writes:
                self.metrics.state_bytes.inc(write.written_bytes)
                self.metrics.state_chunks.inc(len(write.chunks))
            self._fault("state_written")
            offsets = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(p.next_offset, "", -1)
                       for ms in todo.values() for tp, p in ms}
            try:
                self.consumer.commit(offsets)  # 4
            except Exception as exc:  # the state is written: a later checkpoint commits again
                log.warning("offset commit failed; the state already covers these offsets",
                            extra={"reason": repr(exc)})
                return
            for ms in todo.values():
                for _, p in ms:
                    p.checkpointed = p.next_offset
            self.metrics.checkpoints.inc()
            self._fault("committed")
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoint_age.set(0)

    def _update_lag(self) -> None:
        engines = {id(p.engine): p.engine for p in self.parts.values()}.values()
        self.series_gauges.refresh(engines)  # observes new detectors; rebuilds its snapshot once a second
        judges = [e.judge for e in engines if e.judge is not None]
        self.metrics.judge_join.labels("buffered").set(sum(len(j) for j in judges))
        self.metrics.judge_join.labels("pending_release").set(sum(len(j.pending) for j in judges))
        for tp in self.parts:
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - self.consumer.position(tp)))
        self.metrics.checkpoint_age.set(time.monotonic() - self.last_checkpoint)

    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            self.http = HttpServer(self.metrics, self.health, self.http_host, self.settings.http_port).start()
            stack.callback(self.http.stop)
            log.info("starting", extra={**self.settings.describe(), "http_port": self.http.port})
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(sig, self.request_stop)
            if not self._connect():
                return 0 if self.stop_requested else 1
            stack.callback(lambda: self.producer.close(timeout=10))
            for sink in self.sinks:
                stack.callback(sink.close)
            self.consumer.subscribe(topics=sorted(self.inputs), listener=_Listener(self))
            interval = self.settings.service["checkpoint_interval"]
            try:
                while not self.stop_requested:
                    self.health.beat()
                    records = self.consumer.poll(timeout_ms=500)
                    if records:
                        self.process(records)
                    else:
                        self._run_held()
                    self._update_lag()
                    self._check_broker()
                    overflow = self.dlq_overflow()
                    if overflow:
                        self.checkpoint()
                        log.error("stopping: " + overflow)
                        self._leave()
                        return 3
                    if time.monotonic() - self.last_checkpoint >= interval:
                        self.checkpoint()
                log.info("stop requested: finishing the batch, checkpointing, leaving the group")
                self.checkpoint()
                self._leave()
                log.info("stopped cleanly")
                return 0
            except DeliveryError as exc:
                log.error("stopping without committing: " + str(exc))
                return 1
