"""``drift ingest otlp``: OpenTelemetry spans and evaluation logs in, ScoreEvents and RetrievalEvents out.

A consumer service of its own (consumer group ``<kafka.group_id>-ingest`` by default), runnable
beside ``drift serve``, in two stages that share one consumer, the way Kafka Streams and
quixstreams repartition through a topic::

    otlp_spans ─┐  stage 1 (stateless)            internal topic           stage 2 (per partition)
    otlp_logs  ─┴─ decode → split by trace id ──> drift.otlp.by_trace ───> OtlpMapper: map spans, join
                   (undecodable → llm.dlq)        key = hex trace id        evaluations to their span
                                                                            ──> llm.scores / llm.retrieval
                                                                                key = "{app}/{intent}"

1. **Stage 1** decodes each record of ``[otlp] spans_topic`` / ``logs_topic`` with ``[otlp]
   encoding``, cuts the export request into one request per trace id and produces each piece,
   re-encoded as ``otlp_proto``, to ``[otlp] repartition_topic`` keyed by the hex trace id,
   header ``x-otlp-signal: traces|logs``. The Collector's Kafka exporter keys by trace id or not
   at all; this step makes the join right in both cases. An undecodable record goes to the DLQ
   with the same headers as ``drift serve`` (``x-error-class``, ``x-error-message``,
   ``x-source-topic``, ``x-source-partition``, ``x-source-offset``).
2. **Stage 2** keeps one :class:`~drift.ingest.otlp.OtlpMapper` per internal partition (a span and
   its evaluation records meet on one partition, hence one mapper), maps spans and joins
   evaluations, and produces the events as JSON arrays to ``topics.scores`` / ``topics.retrieval``
   keyed ``"{app}/{intent}"`` (the repartition by series ``drift serve`` needs). After each
   batch it calls ``expire`` with the partition's watermark (the latest span end time seen), so
   evaluations whose span never comes are dropped and counted.
3. **Event-time alignment.** Within each stage, fetched records are held per input partition and
   released across partitions in event-time order (a k-way merge on each record's time: the
   latest span end or log time of its export request), at most ``[otlp] max_ahead_s`` past the
   *frontier*: the earliest head among the partitions holding records and the last event time of
   each partition that holds none but still has records on the broker (never read: it holds
   everything back until its first fetch), as Kafka Streams' ``max.task.idle.ms`` does. A
   partition holding records is paused, so each holds at most about two fetches
   (``max_partition_fetch_bytes``), and is resumed once drained (:func:`release_limit`). A
   backlog therefore reaches ``drift serve`` in event-time order to within ``max_ahead_s`` and
   the span of one export request, instead of partition by partition. A partition that stays
   empty-handed while the broker says it has records (:data:`ALIGN_IDLE_POLLS` polls and
   :data:`ALIGN_IDLE_S` seconds) stops holding the others back, counted in
   ``drift_ingest_alignment_timeouts_total``.

Commit order (``IngestService.checkpoint``), each step finished before the next, as in
:mod:`drift.runtime.checkpoint`:

1. internal records, events and DLQ records **produced** for every input record before
   ``next_offset``;
2. **flush and confirm** delivery (``acks=all``; unconfirmed records are retried like ``drift serve``
   does, and a failure stops here);
3. **state** of every changed partition written to ``topics.state``, key
   ``{ingest group}/{topic}/{partition}``, in :mod:`drift.runtime.checkpoint`'s format, tagged with
   ``next_offset``: the mapper's join buffer for internal partitions, only the offset and event
   time for stage-1 partitions; confirmed;
4. offsets **committed**.

On assignment each partition's newest state is restored and the consumer seeks to its
``next_offset`` (without a state: the committed offset, else the beginning).

Repeats. Delivery is at least once. A checkpoint written when the instance gave the partition up
(a rebalance, SIGTERM/SIGINT, the DLQ stop) is marked *complete*: nothing was processed past it,
and a restore from it repeats nothing. After any other restore (a crash, SIGKILL, a lost member)
the records between the restored ``next_offset`` and the partition's high watermark at restore
time may already have been processed (from the committed offset, when the previous owner died
before its first checkpoint: it left a *claim*, see ``on_assigned``): they are counted in
``drift_ingest_replayed_records_total``, the internal records produced from them carry the header
``x-replayed``, and the events produced from replayed records are counted in
``drift_ingest_replayed_events_total``. Both are upper
bounds of the repeats (events repeated on ``llm.scores``/``llm.retrieval``); when the previous
instance was live up to its end, at most one checkpoint interval of input.

Exit codes as ``drift serve``: 0 clean stop, 1 delivery or Kafka failure, 2 configuration error,
3 stopped because most input was bad.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import itertools
import logging
import signal
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, cast

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from drift.core.config import ConfigError, Settings
from drift.runtime.checkpoint import (
    Checkpoint,
    CheckpointError,
    ChunkWriter,
    decode_checkpoint,
    encode_checkpoint,
    state_key,
)
from drift.runtime.http import Health, HttpServer, Metrics
from drift.runtime.service import DeliveryError, KafkaLoop, _Listener, read_states

__all__ = ["IngestService", "IngestMetrics", "release_limit", "Held", "STATE_FORMAT", "SIGNAL_HEADER",
           "REPLAYED_HEADER", "build_mapping"]

log = logging.getLogger("drift.ingest")

#: ``Checkpoint.fingerprint`` of an ingest state record (``Checkpoint.engine`` holds the partition's state)
STATE_FORMAT = "otlp-ingest/1"
#: header of an internal record: which export request its value is (``traces`` or ``logs``)
SIGNAL_HEADER = "x-otlp-signal"
#: header of an internal record produced from a replayed input record (see the module docstring)
REPLAYED_HEADER = "x-replayed"
#: ``next_offset`` of a claim: a partition taken with no state, before its first checkpoint
CLAIM = -1
TRACES, LOGS = "traces", "logs"
SOURCE, REPARTITION = "source", "repartition"  # the stage an input partition belongs to

#: events per output message at most (drift serve also rejects messages over engine.max_message_bytes)
MAX_EVENTS_PER_MESSAGE = 500
#: a partition waiting for its first fetch holds the others back for at least this many polls…
ALIGN_IDLE_POLLS = 20
#: …and this many seconds (both), then it does not until it delivers records again
ALIGN_IDLE_S = 10.0
#: records one poll may return: every fetched record at once. kafka-python 3.0.12 parks the
#: unreturned rest of a fetch for a partition paused part-way through it and restores it only
#: while its in-line slot is empty, which it no longer is once any fetch has been returned, so
#: the partition would never be fetched again after resume; a poll that returns everything
#: leaves nothing to park. A poll's size stays bounded by the fetch sizes.
POLL_ALL = 1 << 30

_MAPPER_COUNTERS = {"spans_unmapped", "records_invalid", "evaluations_joined", "evaluations_buffered",
                    "evaluations_dropped"}


def release_limit(parts: Mapping[Hashable, tuple[float | None, bool, float | None]], max_ahead: float) -> float:
    """The event time up to which held records may be released (processed) in one stage.

    Parameters
    ----------
    parts : mapping
        Partition -> ``(head, waiting, last)``: the event time of its first held record (``None``
        when it holds none), whether it holds none but the broker has records it has not fetched,
        and the latest event time it has released (``None`` before any).
    max_ahead : float
        Seconds a released record may be ahead of the frontier.

    Returns
    -------
    float
        ``frontier + max_ahead``. The frontier is the earliest of the heads and of the ``last``
        time of every waiting partition (``-inf`` for a waiting partition never read: nothing
        moves until its first fetch). ``inf`` when no partition holds or waits.

    >>> release_limit({"a": (100.0, False, 90.0), "b": (None, True, 400.0), "c": (None, False, 50.0)}, 300.0)
    400.0
    >>> release_limit({"a": (100.0, False, 90.0), "b": (None, True, None)}, 300.0)
    -inf
    """
    frontier = float("inf")
    for head, waiting, last in parts.values():
        if head is not None:
            frontier = min(frontier, head)
        elif waiting:
            frontier = min(frontier, last if last is not None else float("-inf"))
    return frontier + max_ahead


@dataclasses.dataclass(slots=True)
class Held:
    """A fetched input record waiting for its turn in event time."""

    record: Any
    time: float                        # ordering key: its request's latest event time (else the previous one's)
    replayed: bool
    request: Any = None                # the decoded export request; None when undecodable
    signal: str | None = None
    error: tuple[str, str] | None = None  # (DLQ error class, reason)
    items: int = 0                     # spans or log records in the request
    span_end: float | None = None      # its latest span end (join expiry)


class IngestMetrics:
    """Prometheus metrics of ``drift ingest otlp`` (prefix ``drift_ingest_``) on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "drift_ingest_"
        self.records_in = Counter(p + "records_consumed_total", "Input records consumed", ["topic"], registry=r)
        self.items_in = Counter(p + "items_consumed_total", "Spans and log records in the consumed records",
                                ["topic", "signal"], registry=r)
        self.records_out = Counter(p + "records_produced_total", "Records produced (internal, events, DLQ)",
                                   ["topic"], registry=r)
        self.events_out = Counter(p + "events_produced_total", "ScoreEvents and RetrievalEvents produced",
                                  ["topic"], registry=r)
        self.dlq = Counter(p + "dlq_total", "Input records sent to the DLQ", ["reason"], registry=r)
        self.spans_unmapped = Counter(p + "spans_unmapped_total", "Spans with nothing to map", registry=r)
        self.records_invalid = Counter(p + "records_invalid_total",
                                       "Spans, score attributes and evaluations that could not be used", registry=r)
        self.evaluations = Counter(p + "evaluations_total", "Evaluation results by what became of them "
                                   "(joined: emitted with their span; buffered: waited for their span; dropped: "
                                   "their span never came)", ["outcome"], registry=r)
        self.mapper = Counter(p + "mapper_total", "Other OtlpMapper counts (see drift.ingest.otlp)", ["count"],
                              registry=r)
        self.paused = Gauge(p + "paused_partitions", "Input partitions paused for event-time alignment", registry=r)
        self.held = Gauge(p + "held_records", "Fetched input records held for event-time alignment", registry=r)
        self.align_timeouts = Counter(p + "alignment_timeouts_total",
                                      "Times a partition with records on the broker but none fetched stopped "
                                      "holding the others back", registry=r)
        self.assigned = Gauge(p + "assigned_partitions", "Input partitions assigned", ["stage"], registry=r)
        self.lag = Gauge(p + "consumer_lag", "Records behind the partition's high watermark", ["topic", "partition"],
                         registry=r)
        self.checkpoint_age = Gauge(p + "checkpoint_age_seconds", "Seconds since the last checkpoint", registry=r)
        self.checkpoints = Counter(p + "checkpoints_total", "Checkpoints completed", registry=r)
        self.restores = Counter(p + "state_restores_total", "Partition states restored", ["result"], registry=r)
        self.replayed = Counter(p + "replayed_records_total",
                                "Records re-read after a restore that the previous owner may already have "
                                "processed (an upper bound of repeated input)", ["topic"], registry=r)
        self.replayed_events = Counter(p + "replayed_events_total",
                                       "Events produced from replayed records (an upper bound of repeated events)",
                                       registry=r)
        self.buffered = Gauge(p + "join_buffer_entries", "Spans and evaluations held in the join buffers",
                              registry=r)
        self.batch = Histogram(p + "batch_seconds", "Time to process one polled batch", registry=r,
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def mapped(self, counts: Mapping[str, int]) -> None:
        """Add an ``OtlpMapper`` result's counts."""
        for name, n in counts.items():
            if not n:
                continue
            if name == "spans_unmapped":
                self.spans_unmapped.inc(n)
            elif name == "records_invalid":
                self.records_invalid.inc(n)
            elif name in _MAPPER_COUNTERS:
                self.evaluations.labels(name.removeprefix("evaluations_")).inc(n)
            else:
                self.mapper.labels(name).inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclasses.dataclass
class IngestPartition:
    """One assigned input partition: its stage, position, event time and (stage 2) its mapper."""

    topic: str
    partition: int
    stage: str                         # SOURCE or REPARTITION
    signal: str | None = None          # SOURCE: TRACES or LOGS
    mapper: Any = None                 # REPARTITION: its OtlpMapper
    next_offset: int | None = None     # after the last record processed
    checkpointed: int | None = None    # next_offset of the last state written and committed
    complete_written: bool = False     # that state was marked complete
    event_time: float | None = None    # latest event time seen (alignment)
    watermark: float | None = None     # REPARTITION: latest span end time seen (join expiry)
    replay_from: int | None = None     # restored from a checkpoint that was not complete: replay range start…
    replay_until: int | None = None    # …and end (the high watermark at restore), once known
    held: collections.deque = dataclasses.field(default_factory=collections.deque)  # of Held, in offset order
    fetched: int | None = None         # after the last record fetched (held or released)
    waiting_polls: int = 0             # polls in a row it waited with nothing held (alignment)
    waiting_since: float | None = None
    timed_out: bool = False            # stopped holding the others back until its next fetch


def build_mapping(settings: Settings):
    """The ``OtlpMapping`` of ``settings`` (a :class:`ConfigError` naming the ``otlp.`` field)."""
    from drift.ingest.otlp import OtlpMapping

    return OtlpMapping.from_dict(settings.otlp_mapping())


def _request_times(request: Any, sig: str) -> tuple[int, float | None, float | None]:
    """(spans or log records, their latest event time, the latest span end time) in seconds."""
    n, latest, span_end = 0, 0, 0
    if sig == TRACES:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    n += 1
                    span_end = max(span_end, s.end_time_unix_nano)
        latest = span_end
    else:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    n += 1
                    latest = max(latest, r.time_unix_nano or r.observed_time_unix_nano)
    return n, (latest / 1e9 if latest else None), (span_end / 1e9 if span_end else None)


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


class IngestService(KafkaLoop):
    """The ``drift ingest otlp`` consumer service (see the module docstring).

    Parameters
    ----------
    settings : Settings
        ``[otlp]`` for the topics, encoding, mapping and alignment; ``[service]`` for the loop
        (checkpoint interval, poll size, timeouts, DLQ stop); ``[topics]`` for the outputs.
    registry : prometheus_client.CollectorRegistry, optional
    http_host : str
        Interface for ``/metrics``, ``/livez``, ``/readyz`` (``settings.http_port``; 0 picks a free port).
    fault : str, optional
        Test hook, as ``drift serve``'s: ``POINT[:N]`` exits abruptly the N-th time (default 2nd)
        the commit order reaches POINT (produced, confirmed, produced_state, state_written, committed).
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None, http_host: str = "0.0.0.0",
                 fault: str | None = None):
        from drift.ingest.otlp import OtlpMapper, decode_logs, decode_traces, split_by_trace

        self.settings = settings
        self.mapping = build_mapping(settings)
        self._mapper_class, self._split = OtlpMapper, split_by_trace
        self._decoders = {TRACES: decode_traces, LOGS: decode_logs}
        o = settings.otlp
        self.group = settings.ingest_group_id
        self.sources = {o["spans_topic"]: TRACES, o["logs_topic"]: LOGS}
        self.internal = o["repartition_topic"]
        if self.internal in self.sources or len(self.sources) < 2:
            raise ConfigError("otlp.repartition_topic: otlp.spans_topic, otlp.logs_topic and otlp.repartition_topic "
                              "must be three different topics")
        outputs = {settings.topics[k] for k in ("scores", "retrieval", "dlq", "state")}
        clash = sorted(outputs & {*self.sources, self.internal})
        if clash:
            raise ConfigError(f"otlp: {clash[0]!r} is both an input of drift ingest otlp and one of its outputs")
        self.fault_point, _, n = (fault or "").partition(":")
        self.fault_after = int(n or 2)
        self.metrics = IngestMetrics(registry)
        self.health = Health(settings.service["livez_timeout"])
        self.http_host = http_host
        self.stop_requested = False
        self.parts: dict[Any, IngestPartition] = {}
        self.writers: dict[Any, ChunkWriter] = {}  # per partition: its state in chunk records of at most 1 MB
        self.produced_end: dict[tuple[str, int], int] = {}  # internal partition -> after our last record there
        self.pending: list = []
        self.dlq_window: collections.deque = collections.deque()
        self.last_checkpoint = time.monotonic()
        self.consumer: Any = None
        self.producer: Any = None
        self.http: HttpServer | None = None
        self._json = msgspec.json.Encoder()

    # -- clients ----------------------------------------------------------------------------
    def _client_config(self) -> dict[str, Any]:
        cfg = self.settings.kafka_config()
        cfg.setdefault("client_id", f"drift-{self.settings.service_name}-ingest")
        cfg.setdefault("bootstrap_timeout_ms", int(self.settings.service["connect_timeout"] * 1000))
        return cfg

    def _make_clients(self) -> None:
        from kafka import KafkaProducer

        svc = self.settings.service
        self.producer = KafkaProducer(acks="all", linger_ms=5, max_request_size=64 << 20, **self._client_config())
        self.consumer = self._consumer_factory(
            group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=POLL_ALL, session_timeout_ms=svc["session_timeout_ms"],
            heartbeat_interval_ms=max(1000, svc["session_timeout_ms"] // 3))

    def _ensure_output_topics(self) -> None:
        """Create the internal, event, DLQ and state topics the cluster does not have.

        The internal topic gets ``otlp.repartition_partitions`` partitions, by default as many
        as ``topics.scores`` has (1 when that does not exist either).
        """
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        t, o = self.settings.topics, self.settings.otlp
        admin = KafkaAdminClient(**self._client_config())
        try:
            have = set(admin.list_topics())
            n = o["repartition_partitions"]
            if not n and t["scores"] in have:
                desc = admin.describe_topics([t["scores"]])
                n = len(desc[0].get("partitions") or []) if desc else 0
            n = max(1, n)
            want = {self.internal: (n, {}), t["scores"]: (n, {}), t["retrieval"]: (n, {}),
                    t["dlq"]: (1, {}),
                    t["state"]: (1, {"cleanup.policy": "compact", "max.message.bytes": str(64 << 20)})}
            missing = [NewTopic(name, parts, -1, topic_configs=cfg) for name, (parts, cfg) in want.items()
                       if name not in have]
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
                log.info("created topics", extra={"topics": {x.name: x.num_partitions for x in missing}})
        finally:
            admin.close()
        # the producer learns every output topic now: kafka-python can lose a leader lookup for a
        # topic first seen while another one's metadata is in flight (seen with the internal and
        # the DLQ topics), leaving a record undelivered until delivery_timeout_ms
        for name in want:
            self.producer.partitions_for(name)

    # -- rebalancing ------------------------------------------------------------------------
    def _new_part(self, tp) -> IngestPartition:
        if tp.topic == self.internal:
            return IngestPartition(tp.topic, tp.partition, REPARTITION, mapper=self._mapper_class(self.mapping))
        return IngestPartition(tp.topic, tp.partition, SOURCE, signal=self.sources[tp.topic])

    def on_revoked(self, tps) -> None:
        mine = [tp for tp in tps if tp in self.parts]
        self.health.set_ready(False, "rebalancing")
        if mine:
            self.checkpoint(mine, complete=True)
            for tp in mine:
                del self.parts[tp]
                self.writers.pop(tp, None)
        self._count_assigned()
        log.info("partitions revoked", extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in mine]})

    def on_assigned(self, tps) -> None:
        """Restore each partition's newest usable state and seek to its ``next_offset``.

        A partition with no state record at all gets a *claim* (a state record with
        ``next_offset`` -1, confirmed before any record is read): should this instance die
        before its first checkpoint, the next owner finds the claim and counts what it re-reads
        as replayed instead of taking the partition for new.
        """
        self.health.set_ready(False, "restoring state")
        keys = {state_key(self.group, tp.topic, tp.partition): tp for tp in tps}
        chunks: dict[bytes, dict[str, bytes]] = {}
        found = read_states(self._consumer_factory, self.settings.topics["state"], set(keys),
                            self.settings.service["restore_timeout"], chunks)
        claims = []
        for key, tp in keys.items():
            part = self._new_part(tp)
            where = f"{tp.topic}/{tp.partition}"
            restored: Checkpoint | None = None
            for raw in reversed(found.get(key, [])):  # newest first; fall back to older ones
                try:
                    cp = decode_checkpoint(raw, fingerprint=STATE_FORMAT, chunks=chunks.get(key, {}))
                    if cp.next_offset >= 0 and part.mapper is not None:
                        part.mapper.load_state(cp.engine["mapper"])
                    restored = cp
                    break
                except (CheckpointError, ValueError, KeyError, TypeError) as exc:
                    part = self._new_part(tp)
                    self.metrics.restores.labels("rejected").inc()
                    log.error("unusable ingest checkpoint skipped", extra={"partition": where, "reason": str(exc)})
            if restored is not None and restored.next_offset >= 0:
                doc = restored.engine
                part.next_offset = restored.next_offset
                part.checkpointed = None  # written and committed again at the next checkpoint
                part.event_time, part.watermark = doc.get("event_time"), doc.get("watermark")
                if not doc.get("complete"):
                    part.replay_from = restored.next_offset
                self.consumer.seek(tp, restored.next_offset)
                self.metrics.restores.labels("restored").inc()
                log.info("state restored", extra={"partition": where, "next_offset": restored.next_offset,
                                                  "complete": bool(doc.get("complete")),
                                                  "age_s": round(time.time() - restored.written_at, 1)})
            elif restored is not None and restored.engine.get("complete"):  # a claim given back unread
                self.metrics.restores.labels("fresh").inc()
                log.info("no state: starting at the committed offset", extra={"partition": where})
            elif found.get(key):  # a claim, or only unusable states: a previous owner may have read any of it
                part.replay_from = 0
                self.metrics.restores.labels("fresh").inc()
                log.warning("no usable state, but a previous owner: starting at the committed offset, and what is "
                            "re-read counts as replayed", extra={"partition": where})
            else:  # new: the committed offset, else the beginning (auto_offset_reset)
                claims.append((key, tp))
                self.metrics.restores.labels("fresh").inc()
                log.info("no state: starting at the committed offset", extra={"partition": where})
            self.parts[tp] = part
            self.writers[tp] = ChunkWriter.from_checkpoint(restored)
        for key, tp in claims:
            cp = Checkpoint(self.group, tp.topic, tp.partition, CLAIM, STATE_FORMAT, time.time(), {"claim": True})
            self._send(self.settings.topics["state"], key, encode_checkpoint(cp))
        if claims:
            self._confirm()
        self._count_assigned()
        self.health.set_ready(True, "ok")

    def _count_assigned(self) -> None:
        for stage in (SOURCE, REPARTITION):
            self.metrics.assigned.labels(stage).set(sum(p.stage == stage for p in self.parts.values()))

    # -- the two stages ---------------------------------------------------------------------
    def process(self, records: Mapping[Any, list]) -> None:
        """Hold one poll's records (``{TopicPartition: [records]}``), then release what alignment allows."""
        started = time.perf_counter()
        for tp, recs in records.items():
            part = self.parts.get(tp)
            if part is None or not recs:
                continue
            if part.replay_from is not None and part.replay_until is None:
                hw = self.consumer.highwater(tp)  # known once a fetch returned: the end at restore, or just after
                part.replay_until = hw if hw is not None else recs[-1].offset + 1
            for r in recs:
                part.held.append(self._decode(part, r))
            part.fetched = recs[-1].offset + 1
            part.waiting_polls, part.waiting_since, part.timed_out = 0, None, False
            self.metrics.records_in.labels(tp.topic).inc(len(recs))
        self.release()
        self.metrics.batch.observe(time.perf_counter() - started)

    def _decode(self, part: IngestPartition, r) -> Held:
        """A fetched record, decoded, with its ordering time (or the DLQ reason it will get)."""
        from drift.ingest.otlp import OtlpError

        again = part.replay_until is not None and r.offset < part.replay_until
        prev = part.held[-1].time if part.held else part.event_time
        held = Held(r, prev if prev is not None else float("-inf"), again)
        if part.stage == SOURCE:
            sig, encoding = part.signal, self.settings.otlp["encoding"]
        else:
            sig = (dict(r.headers or []).get(SIGNAL_HEADER) or b"").decode("utf-8", "replace")
            encoding = "otlp_proto"
            if sig not in self._decoders:
                held.error = ("otlp_signal", f"internal record without a valid {SIGNAL_HEADER} header: {sig!r}")
                return held
        assert sig is not None
        try:
            held.request = self._decoders[sig](r.value if r.value is not None else b"", encoding)
        except OtlpError as exc:
            held.error = (exc.error_class, exc.reason)
            return held
        held.signal = sig
        held.items, t, held.span_end = _request_times(held.request, sig)
        if t is not None:
            held.time = t
        return held

    def release(self) -> None:
        """Process held records in event-time order, up to :func:`release_limit`, per stage."""
        for stage in (SOURCE, REPARTITION):
            mine = {tp: p for tp, p in self.parts.items() if p.stage == stage}
            if stage == REPARTITION and self.pending:
                # learn where stage 1's records landed, so that an internal partition it has
                # written to since its last fetch waits for them instead of counting as caught up
                self.producer.flush()
            while True:
                limit = release_limit({tp: (p.held[0].time if p.held else None, self._waiting(tp, p), p.event_time)
                                       for tp, p in mine.items()}, self.settings.otlp["max_ahead_s"])
                ready = []
                for i, (tp, p) in enumerate(mine.items()):
                    n = 0
                    for h in p.held:
                        if h.time > limit:
                            break
                        n += 1
                    if n:
                        ready.append([(h.time, i, k, tp) for k, h in enumerate(itertools.islice(p.held, n))])
                if not ready:
                    break
                run_tp, run = None, 0
                for _, _, _, tp in heapq.merge(*ready):
                    if tp != run_tp and run:
                        self._release(run_tp, run)
                        run = 0
                    run_tp, run = tp, run + 1
                self._release(run_tp, run)

    def _release(self, tp, n: int) -> None:
        part = self.parts[tp]
        items = [part.held.popleft() for _ in range(n)]
        replayed = sum(h.replayed for h in items)
        if replayed:
            self.metrics.replayed.labels(tp.topic).inc(replayed)
        if part.stage == SOURCE:
            self._repartition(part, items)
        else:
            self._map(part, items)
        part.next_offset = items[-1].record.offset + 1

    def _produced_internal(self, md) -> None:
        """Delivery callback of an internal record (the producer's thread): its partition's end."""
        key = (md.topic, md.partition)
        self.produced_end[key] = max(self.produced_end.get(key, 0), md.offset + 1)

    def _waiting(self, tp, part: IngestPartition) -> bool:
        """``part`` holds nothing but the broker has records it has not fetched (and it has not timed out)."""
        if part.held or part.timed_out:
            return False
        hw = self.consumer.highwater(tp)
        ours = self.produced_end.get((tp.topic, tp.partition))  # stage 1 here may be ahead of the last fetch
        if ours is not None:
            hw = ours if hw is None else max(hw, ours)
        if hw is not None:
            pos = part.fetched if part.fetched is not None else part.next_offset
            if pos is None:
                with contextlib.suppress(Exception):
                    pos = self.consumer.position(tp, timeout_ms=0)
            if pos is not None and pos >= hw:
                return False
        return True

    def _repartition(self, part: IngestPartition, items: list[Held]) -> None:
        """Stage 1: split each request by trace id, produce the pieces to the internal topic."""
        sig = part.signal
        assert sig is not None
        bad = 0
        for h in items:
            r = h.record
            if h.error is not None:
                self._dlq(r, *h.error)
                bad += 1
                continue
            self.metrics.items_in.labels(part.topic, sig).inc(h.items)
            part.event_time = _later(part.event_time, h.time)
            headers = [(SIGNAL_HEADER, sig.encode()), ("x-source-topic", part.topic.encode()),
                       ("x-source-partition", str(part.partition).encode()), ("x-source-offset", str(r.offset).encode())]
            if h.replayed:
                headers.append((REPLAYED_HEADER, b"1"))
            # pieces in event time: exporters group a request by resource and scope, not by time
            pieces = sorted(self._split(h.request).items(), key=lambda kv: _request_times(kv[1], sig)[1] or 0.0)
            for trace_id, piece in pieces:
                fut = self._send(self.internal, trace_id.hex().encode() or None, piece.SerializeToString(), headers)
                fut.add_callback(self._produced_internal)
                self.metrics.records_out.labels(self.internal).inc()
        self.dlq_window.append((time.monotonic(), len(items), bad))

    def _map(self, part: IngestPartition, items: list[Held]) -> None:
        """Stage 2: map spans, join evaluations, produce the events keyed by series."""
        from drift.ingest.otlp import MapResult

        mapper = part.mapper
        out = MapResult()
        replayed_events = 0
        for h in items:
            if h.error is not None:
                self._dlq(h.record, *h.error)
                continue
            sig = h.signal
            assert sig is not None
            self.metrics.items_in.labels(part.topic, sig).inc(h.items)
            part.event_time = _later(part.event_time, h.time)
            part.watermark = _later(part.watermark, h.span_end)
            res = mapper.spans(h.request) if sig == TRACES else mapper.logs(h.request)
            if h.replayed or any(k == REPLAYED_HEADER for k, _ in (h.record.headers or [])):
                replayed_events += len(res.events)
            out.extend(res)
        if part.watermark is not None:
            out.extend(mapper.expire(part.watermark))
        self.metrics.mapped(out.counts)
        if replayed_events:
            self.metrics.replayed_events.inc(replayed_events)
        self._emit_events(out.events)

    def _emit_events(self, events: Iterable[tuple[str, dict]]) -> None:
        """Produce events as JSON arrays, one run per (topic, ``"{app}/{intent}"``)."""
        by_key: dict[tuple[str, str], list[dict]] = {}
        for stream, ev in events:
            key = f"{ev.get('app', 'default')}/{ev.get('intent', 'all')}"
            by_key.setdefault((self.settings.topics[stream], key), []).append(ev)
        for (topic, key), evs in by_key.items():
            for i in range(0, len(evs), MAX_EVENTS_PER_MESSAGE):
                self._produce_events(topic, key.encode(), evs[i:i + MAX_EVENTS_PER_MESSAGE])

    def _produce_events(self, topic: str, key: bytes, evs: list[dict]) -> None:
        value = self._json.encode(evs)
        if len(value) > self.settings.max_message_bytes and len(evs) > 1:
            half = len(evs) // 2
            self._produce_events(topic, key, evs[:half])
            self._produce_events(topic, key, evs[half:])
            return
        self._send(topic, key, value)
        self.metrics.records_out.labels(topic).inc()
        self.metrics.events_out.labels(topic).inc(len(evs))

    def _dlq(self, record, error_class: str, reason: str) -> None:
        headers = [("x-error-class", error_class.encode()), ("x-error-message", reason[:2000].encode()),
                   ("x-source-topic", record.topic.encode()), ("x-source-partition", str(record.partition).encode()),
                   ("x-source-offset", str(record.offset).encode())]
        dlq = self.settings.topics["dlq"]
        self._send(dlq, record.key, record.value if record.value is not None else b"", headers)
        self.metrics.dlq.labels(error_class).inc()
        self.metrics.records_out.labels(dlq).inc()

    # -- alignment, lag ---------------------------------------------------------------------
    def align(self) -> None:
        """Pause the partitions holding records, resume the drained ones; time out long waits."""
        now = time.monotonic()
        for tp, p in self.parts.items():
            if self._waiting(tp, p):
                p.waiting_polls += 1
                p.waiting_since = p.waiting_since or now
                if p.waiting_polls >= ALIGN_IDLE_POLLS and now - p.waiting_since >= ALIGN_IDLE_S:
                    p.timed_out = True
                    self.metrics.align_timeouts.inc()
                    log.warning("a partition with records on the broker delivered none: it no longer holds the "
                                "others back until it does", extra={"partition": f"{tp.topic}/{tp.partition}",
                                                                    "waited_s": round(now - p.waiting_since, 1)})
            else:
                p.waiting_polls, p.waiting_since = 0, None
        want = {tp for tp, p in self.parts.items() if p.held}
        have = set(self.consumer.paused())
        if want - have:
            self.consumer.pause(*(want - have))
        if have - want:
            self.consumer.resume(*(have - want))
        self.metrics.paused.set(len(want))
        self.metrics.held.set(sum(len(p.held) for p in self.parts.values()))

    def _update_lag(self) -> None:
        for tp, p in self.parts.items():
            hw = self.consumer.highwater(tp)
            if hw is not None and p.next_offset is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - p.next_offset))
        self.metrics.checkpoint_age.set(time.monotonic() - self.last_checkpoint)
        self.metrics.buffered.set(sum(len(p.mapper) for p in self.parts.values() if p.mapper is not None))

    # -- the commit order -------------------------------------------------------------------
    def checkpoint(self, tps=None, complete: bool = False) -> None:
        """Steps 1–4 of the commit order for ``tps`` (default: every assigned partition).

        ``complete``: this instance processes nothing more of these partitions (rebalance,
        stop), so a restore from this state repeats nothing.
        """
        from kafka.structs import OffsetAndMetadata, TopicPartition

        self._fault("produced")
        self._confirm()  # 1 + 2: internal records, events and DLQ records delivered
        self._fault("confirmed")
        todo = [(tp, p) for tp, p in self.parts.items() if (tps is None or tp in tps) and p.next_offset is not None
                and (p.next_offset != p.checkpointed or (complete and not p.complete_written))]
        # partitions given up before reading anything: their claim says so (complete), unless they
        # came with a previous owner's claim, whose possibly processed records are still ahead
        idle = [(tp, p) for tp, p in self.parts.items() if complete and (tps is None or tp in tps)
                and p.next_offset is None and not p.complete_written and p.replay_from is None]
        for tp, p in idle:
            cp = Checkpoint(self.group, tp.topic, tp.partition, CLAIM, STATE_FORMAT, time.time(),
                            {"claim": True, "complete": True})
            self._send(self.settings.topics["state"], state_key(self.group, tp.topic, tp.partition),
                       encode_checkpoint(cp))
            p.complete_written = True  # confirmed below
        if todo:
            writes = []
            for tp, p in todo:  # 3: state tagged with the offset it covers
                assert p.next_offset is not None
                doc = {"stage": p.stage, "event_time": p.event_time, "watermark": p.watermark, "complete": complete,
                       "mapper": p.mapper.state_dict() if p.mapper is not None else None}
                cp = Checkpoint(self.group, tp.topic, tp.partition, p.next_offset, STATE_FORMAT, time.time(), doc)
                writer = self.writers.setdefault(tp, ChunkWriter())
                writes.append((writer, writer.prepare(cp), state_key(self.group, tp.topic, tp.partition)))
            self._write_states(writes)
            self._fault("state_written")
            offsets = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(p.next_offset, "", -1)
                       for tp, p in todo}
            try:
                self.consumer.commit(offsets)  # 4
            except Exception as exc:  # the state is written: a later checkpoint commits again
                log.warning("offset commit failed; the state already covers these offsets",
                            extra={"reason": repr(exc)})
                return
            for _, p in todo:
                p.checkpointed, p.complete_written = p.next_offset, complete
            self.metrics.checkpoints.inc()
            self._fault("committed")
        elif idle:
            self._confirm()
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoint_age.set(0)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        with contextlib.ExitStack() as stack:
            # HttpServer only calls exposition()
            self.http = HttpServer(cast(Metrics, self.metrics), self.health, self.http_host,
                                   self.settings.http_port).start()
            stack.callback(self.http.stop)
            d, o = self.settings.describe(), self.settings.otlp
            log.info("starting", extra={**{k: d[k] for k in ("bootstrap_servers", "kafka", "topics", "source")},
                                        "group_id": self.group, "http_port": self.http.port,
                                        "otlp": {k: o[k] for k in ("spans_topic", "logs_topic", "encoding",
                                                                   "repartition_topic", "max_ahead_s")}})
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(sig, self.request_stop)
            if not self._connect():
                return 0 if self.stop_requested else 1
            stack.callback(lambda: self.producer.close(timeout=10))
            self.consumer.subscribe(topics=sorted([*self.sources, self.internal]), listener=_Listener(self))
            interval = self.settings.service["checkpoint_interval"]
            try:
                while not self.stop_requested:
                    self.health.beat()
                    records = self.consumer.poll(timeout_ms=500, max_records=POLL_ALL)
                    if records:
                        self.process(records)
                    elif self.parts:
                        self.release()  # a timed-out wait may let held records go
                    self.align()
                    self._update_lag()
                    self._check_broker()
                    overflow = self.dlq_overflow()
                    if overflow:
                        self.checkpoint(complete=True)
                        log.error("stopping: " + overflow)
                        self._leave()
                        return 3
                    if time.monotonic() - self.last_checkpoint >= interval:
                        self.checkpoint()
                log.info("stop requested: finishing the batch, checkpointing, leaving the group")
                self.checkpoint(complete=True)
                self._leave()
                log.info("stopped cleanly")
                return 0
            except DeliveryError as exc:
                log.error("stopping without committing: " + str(exc))
                return 1
