"""``drift replay --write-state``: re-seed a consumer group's detector state from an archive.

When the engine's state format changes (``STATE_VERSION``) or a group's checkpoints are unusable,
``drift serve`` rebuilds from the oldest input Kafka still holds, and the events that retention has
deleted are lost with the baselines they built. This runs an archive of the events (JSONL, as
``drift replay`` reads it) through the engines ``drift serve`` would hold and writes their
checkpoints to ``topics.state``, tagged with the input partitions' end offsets taken when it
started: a service started afterwards in that group restores them and reads only what came after.

How an event finds its engine, as in the service:

* its stream by the SPEC's field rules (:func:`~drift.core.events.stream_of`), hence its topic;
* its partition by the producer key the SPEC requires (:func:`~drift.core.events.kafka_key`) and
  kafka-python's default partitioner (murmur2, as the Java client) over the topic's partition
  count (:func:`partition_for`); a JSON array line is split into its events;
* its engine by :func:`~drift.runtime.service.engine_groups`: partition ``p`` of scores, labels,
  feedback and the control topic share one, anchored at the scores partition ``p``; every
  retrieval and queries partition has its own.

Each engine gets its events in file order, decoded per stream as the service decodes its topic
(the stream forced), a chunk of lines at a time; late and far-future events are screened as in
the service and counted as rejected. Operator commands still on the control topic (baseline
resets) run when the engines of their partition have read up to the command's time, or at the
end of the archive, as the service runs them. Alerts raised here are history: handed to
``on_alert`` and counted, never produced.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO, Any

import msgspec
from kafka.structs import TopicPartition

from drift.core import alerts as _alerts
from drift.core.config import Settings
from drift.core.engine import Engine, parse_command
from drift.core.events import EventDecoder, kafka_key, stream_of
from drift.core.streams import STREAMS
from drift.runtime.checkpoint import ChunkWriter, chunk_key, new_checkpoint, state_key
from drift.runtime.replay import RejectedLine, iter_lines
from drift.runtime.service import JOINED, engine_groups, input_topics

__all__ = ["ReseedError", "EngineSeed", "ReseedReport", "Reseeder", "partition_for", "reseed", "high_watermarks"]

_enc = msgspec.json.Encoder()


class ReseedError(RuntimeError):
    """The re-seed cannot be done; ``code`` is the exit status (2: configuration, 1: Kafka)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition kafka-python's default partitioner (and the Java client's) picks for ``key``."""
    from kafka.partitioner.default import murmur2

    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"


def _tp_name(tp) -> str:
    return f"{tp.topic}/{tp.partition}"


@dataclasses.dataclass
class EngineSeed:
    """One engine as the service would hold it, and what was fed to it."""

    anchor: Any  # TopicPartition: its state key
    members: list  # the input partitions sharing the engine (the anchor among them)
    engine: Engine
    decoder: EventDecoder
    messages: int = 0
    events: int = 0
    rejected: int = 0
    alerts: int = 0
    commands: int = 0
    checkpoint_bytes: int = 0  # the manifest and its chunks
    chunks: list = dataclasses.field(default_factory=list)  # (key, value) of the checkpoint's chunk records
    state_offset: int | None = None  # where the checkpoint's manifest landed on topics.state
    offsets: dict[str, int] | None = None  # what the checkpoint says each member resumes at
    next_offset: int = 0
    buf: list = dataclasses.field(default_factory=list)  # (stream, raw, source, line, event index map)

    @property
    def series(self) -> int:
        return sum(len(st.series) for st in self.engine.state.values())


@dataclasses.dataclass
class ReseedReport:
    group: str
    state_topic: str
    seeds: list[EngineSeed]
    lines: int = 0
    rejected: list[RejectedLine] = dataclasses.field(default_factory=list)
    alerts: list[dict] = dataclasses.field(default_factory=list)
    escalations: list = dataclasses.field(default_factory=list)
    commands: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    written: bool = False

    @property
    def n_events(self) -> int:
        return sum(s.events for s in self.seeds)

    def summary(self) -> str:
        by_class = Counter(r.error_class for r in self.rejected)
        out = ["── replay --write-state summary " + "─" * 36,
               f"consumer group    {self.group}",
               f"lines read        {self.lines:,}",
               f"events fed        {self.n_events:,}",
               f"rejected          {len(self.rejected):,}" + (
                   "  (" + ", ".join(f"{k} {v}" for k, v in by_class.most_common()) + ")" if by_class else ""),
               f"alerts            {len(self.alerts):,} (history: not produced)",
               f"control commands  {self.commands:,}",
               f"wall time         {self.seconds:.2f} s",
               ("checkpoints written to " if self.written else "checkpoints NOT written to ") + self.state_topic + ":"]
        for s in self.seeds:
            offs = s.offsets if s.offsets else {s.anchor.topic: s.next_offset}
            where = f" at offset {s.state_offset}" if s.state_offset is not None else ""
            out.append(f"  {_tp_name(s.anchor):<28} {s.series:,} series, {s.events:,} events fed, "
                       f"{s.rejected:,} rejected, {s.checkpoint_bytes:,} bytes{where}; resumes "
                       + ", ".join(f"{t}@{o}" for t, o in sorted(offs.items())))
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


class Reseeder:
    """The service's engines for a partition layout, fed from an archive (no Kafka here).

    Parameters
    ----------
    settings : Settings
    partitions : dict of str to int
        Partition count of every input topic that exists (the control topic may be left out).
    ends : dict of TopicPartition to int
        The end offset of every input partition: where the checkpoints say the service resumes.
    commands : dict of int to list of (offset, bytes)
        The control topic's records per partition, oldest first (operator commands to apply).
    """

    def __init__(self, settings: Settings, partitions: dict[str, int], ends: dict[Any, int], *,
                 golden: dict | None = None, encoder_factory: Callable[[], Any] | None = None,
                 commands: dict[int, list[tuple[int, bytes]]] | None = None,
                 on_alert: Callable[[dict], None] | None = None,
                 on_reject: Callable[[RejectedLine], None] | None = None,
                 chunk: int = 20_000, chunk_bytes: int = 8 << 20):
        self.settings = settings
        self.partitions = dict(partitions)
        self.ends = dict(ends)
        self.inputs = {t: s for t, s in input_topics(settings).items() if t in self.partitions}
        self.on_alert = on_alert
        self.on_reject = on_reject
        self.chunk, self.chunk_bytes = chunk, chunk_bytes
        self._encoder_factory = encoder_factory
        self._encoder = None
        self.golden = golden or {}
        tps = [TopicPartition(t, p) for t in self.inputs for p in range(self.partitions[t])]
        groups = engine_groups(tps, self.inputs, settings.topics["scores"])
        self.seeds: dict[Any, EngineSeed] = {}
        self.seed_of: dict[Any, EngineSeed] = {}
        for anchor, members in groups.items():
            engine = self._new_engine()
            seed = EngineSeed(anchor, list(members), engine, engine.decoder())
            self.seeds[anchor] = seed
            for tp in members:
                self.seed_of[tp] = seed
        self.report = ReseedReport(settings.group_id, settings.topics["state"], list(self.seeds.values()))
        scores = self.partitions.get(settings.topics["scores"])
        for t, name in self.inputs.items():
            if name in JOINED and self.partitions[t] != scores:
                self.report.notes.append(f"{t} has {self.partitions[t]} partitions, the scores topic {scores}: "
                                         "not co-partitioned, its events cannot join the scores of their trace")
        self.routed: Counter = Counter()  # messages per input partition
        self._route: dict[tuple[str, str], tuple[Any, EngineSeed] | None] = {}
        self._decoder = next(iter(self.seeds.values())).decoder if self.seeds else self._new_engine().decoder()
        self.held: dict[int, list[tuple[int, dict]]] = {}
        control = settings.topics.get("control")
        for p, recs in (commands or {}).items():
            for offset, raw in recs:
                try:
                    self.held.setdefault(p, []).append((offset, parse_command(raw or b"")))
                except ValueError as exc:
                    self._reject(RejectedLine(f"{control}/{p}", offset, None, "bad_command", str(exc)), None)

    def _shared_encoder(self):
        if self._encoder is None:
            assert self._encoder_factory is not None
            self._encoder = self._encoder_factory()
        return self._encoder

    def _new_engine(self) -> Engine:
        return Engine(self.settings, golden=self.golden,
                      encoder_factory=self._shared_encoder if self._encoder_factory else None)

    def _reject(self, rl: RejectedLine, seed: EngineSeed | None) -> None:
        self.report.rejected.append(rl)
        if seed is not None:
            seed.rejected += 1
        if self.on_reject:
            self.on_reject(rl)

    def _emit(self, seed: EngineSeed, alerts: list[dict]) -> None:
        seed.alerts += len(alerts)
        self.report.alerts += alerts
        if self.on_alert:
            for a in alerts:
                self.on_alert(a)

    # -- routing ----------------------------------------------------------------------------------
    def target(self, event: dict) -> tuple[str, Any, EngineSeed] | None:
        """(stream, input partition, engine) of one event; None: no input topic takes its stream."""
        stream = stream_of(event)
        key = kafka_key(event)
        if (stream, key) not in self._route:
            topic = self.settings.topics.get(stream)
            if topic is None or self.inputs.get(topic) != stream:
                self._route[(stream, key)] = None
            else:
                tp = TopicPartition(topic, partition_for(key, self.partitions[topic]))
                self._route[(stream, key)] = (tp, self.seed_of[tp])
        hit = self._route[(stream, key)]
        return None if hit is None else (stream, hit[0], hit[1])

    def add(self, source: str, line_no: int, raw: bytes) -> None:
        """Route one archive line (one event or a JSON array of them) to its engine(s)."""
        self.report.lines += 1
        doc: Any = None
        if len(raw) <= self.settings.max_message_bytes:
            try:
                doc = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                doc = None
        events = [doc] if isinstance(doc, dict) else doc if isinstance(doc, list) and doc and all(
            isinstance(e, dict) for e in doc) else None
        if events is None:  # not routable: the decoder says why, as the service would
            rejected = self._decoder.decode([raw]).rejected
            r = rejected[0] if rejected else None
            self._reject(RejectedLine(source, line_no, r.event if r else None, r.error_class if r else "SchemaError",
                                      r.reason if r else "not an event object or an array of them"), None)
            return
        parts: dict[tuple[str, Any], list[int]] = {}
        seeds: dict[tuple[str, Any], EngineSeed] = {}
        for i, e in enumerate(events):
            hit = self.target(e)
            if hit is None:
                self._reject(RejectedLine(source, line_no, i if isinstance(doc, list) else None, "NoTopic",
                                          f"stream {stream_of(e)!r} has no input topic in this configuration"), None)
                continue
            stream, tp, seed = hit
            parts.setdefault((stream, tp), []).append(i)
            seeds[(stream, tp)] = seed
        whole = len(parts) == 1 and sum(len(v) for v in parts.values()) == len(events)
        for (stream, tp), idx in parts.items():
            seed = seeds[(stream, tp)]
            if whole:
                seed.buf.append((stream, raw, source, line_no, None))
            else:  # an array whose events belong on several partitions: one message per partition
                seed.buf.append((stream, _enc.encode([events[i] for i in idx]), source, line_no, idx))
            seed.messages += 1
            self.routed[tp] += 1

    def feed(self, paths: Iterable[str], stdin: IO[bytes] | None = None) -> ReseedReport:
        """Run the archive through the engines (chunks of lines, as ``drift replay``), then the
        control commands not yet due."""
        started = time.perf_counter()
        n = size = 0
        for src, line_no, raw in iter_lines(paths, stdin):
            self.add(src, line_no, raw)
            n += 1
            size += len(raw)
            if n >= self.chunk or size >= self.chunk_bytes:
                self.flush()
                n = size = 0
        self.flush()
        self.run_commands(final=True)
        self.report.seconds += time.perf_counter() - started
        return self.report

    def flush(self) -> None:
        order = {name: i for i, name in enumerate(STREAMS)}
        for seed in self.seeds.values():
            if not seed.buf:
                continue
            buf, seed.buf = seed.buf, []
            for stream in sorted({b[0] for b in buf}, key=lambda s: order.get(s, len(order))):
                rows = [b for b in buf if b[0] == stream]
                decoded = seed.decoder.decode([b[1] for b in rows], kind=stream)
                for r in decoded.rejected:
                    _, _, src, line_no, idx = rows[r.message]
                    ev = idx[r.event] if idx is not None and r.event is not None else r.event
                    self._reject(RejectedLine(src, line_no, ev, r.error_class, r.reason), seed)
                alerts, late = seed.engine.process(decoded)
                for lr in late:
                    _, _, src, line_no, idx = rows[lr.message]
                    ev = idx[lr.event] if idx is not None and lr.event is not None else lr.event
                    self._reject(RejectedLine(src, line_no, ev, lr.error_class, lr.reason), seed)
                seed.events += decoded.n_events - len(late)
                self._emit(seed, alerts)
                if seed.engine.escalations:  # the service sends these before its checkpoint
                    self.report.escalations += seed.engine.take_escalations()
        self.run_commands(final=False)

    def run_commands(self, final: bool) -> None:
        """The held commands that are due: every engine of the command's partition number has read
        up to its time, or the archive has ended (the service: caught up with its input)."""
        for p, held in self.held.items():
            engines: dict[int, tuple[Engine, EngineSeed]] = {}
            for tp, seed in self.seed_of.items():
                if tp.partition == p:
                    engines.setdefault(id(seed.engine), (seed.engine, seed))
            while held:
                offset, cmd = held[0]
                newest = min((e.newest_event_time for e, _ in engines.values()), default=float("inf"))
                if not (final or newest >= cmd["ts"]):
                    break
                held.pop(0)
                try:
                    for engine, seed in engines.values():
                        now = engine.now()
                        self._emit(seed, [_alerts.to_cloudevent(a, now) for a in engine.control(cmd)])
                        seed.commands += 1
                except ValueError as exc:  # e.g. a rule this configuration does not have
                    self._reject(RejectedLine(f"{self.settings.topics.get('control')}/{p}", offset, None,
                                              "bad_command", str(exc)), None)
                    continue
                self.report.commands += 1

    # -- the checkpoints --------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[bytes, bytes, EngineSeed]]:
        """(state key, manifest, engine) per engine, as ``Service.checkpoint`` writes them, with
        every member partition at its end offset; each engine's chunk records are in its
        ``chunks`` (written, and confirmed, before the manifests)."""
        group = self.settings.group_id
        out = []
        for anchor, seed in self.seeds.items():
            ms = seed.members
            offsets = {tp.topic: self.ends[tp] for tp in ms} if len(ms) > 1 or anchor != ms[0] else None
            seed.next_offset = self.ends[anchor]
            seed.offsets = offsets
            cp = new_checkpoint(group, anchor.topic, anchor.partition, self.ends[anchor], seed.engine, offsets)
            # chunked as drift serve writes it (records of at most 1 MB); a fresh writer: the
            # manifest written last replaces the group's state for this partition
            write = ChunkWriter().prepare(cp)
            key = state_key(group, anchor.topic, anchor.partition)
            seed.chunks = [(chunk_key(key, c), v) for c, v in write.chunks]
            seed.checkpoint_bytes = len(write.manifest) + sum(len(v) for _, v in write.chunks)
            out.append((key, write.manifest, seed))
        for tp, n in sorted(self.routed.items()):
            if n > self.ends.get(tp, 0):
                self.report.notes.append(
                    f"the archive holds {n:,} messages for {_tp_name(tp)}, whose end offset is {self.ends.get(tp, 0):,}: "
                    "it may hold events produced after the end offsets, which drift serve will read again")
        return out


# -- Kafka ---------------------------------------------------------------------------------------
def _client_config(settings: Settings) -> dict[str, Any]:
    cfg = settings.kafka_config()
    cfg.setdefault("client_id", f"drift-{settings.service_name}-reseed")
    cfg.setdefault("bootstrap_timeout_ms", int(settings.service["connect_timeout"] * 1000))
    return cfg


def high_watermarks(consumer, tps: list, timeout: float) -> dict[Any, int]:
    """Each partition's end offset, the high watermark of the first fetch response for it.

    Not ``end_offsets()`` nor the position after ``seek_to_end()``: some Kafka-compatible
    brokers answer those with the last batch's base offset + 1. The fetch starts at that
    position, so little is read."""
    ends: dict[Any, int] = {}
    if not tps:
        return ends
    consumer.assign(list(tps))
    consumer.seek_to_end(*tps)
    deadline = time.monotonic() + timeout
    while True:
        consumer.poll(timeout_ms=200)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None and tp not in ends:
                ends[tp] = hw
        if len(ends) == len(tps):
            return ends
        if time.monotonic() > deadline:
            missing = ", ".join(_tp_name(tp) for tp in tps if tp not in ends)
            raise ReseedError(f"no end offset for {missing} within {timeout:g} s", 1)


def _read_to(consumer, tps: list, ends: dict[Any, int], timeout: float) -> dict[int, list[tuple[int, bytes]]]:
    """The records of ``tps`` before their ``ends``, oldest first, by partition number."""
    out: dict[int, list[tuple[int, bytes]]] = {}
    todo = [tp for tp in tps if ends.get(tp, 0) > 0]
    if not todo:
        return out
    consumer.assign(todo)
    consumer.seek_to_beginning(*todo)
    deadline = time.monotonic() + timeout
    while any(consumer.position(tp) < ends[tp] for tp in todo):
        for tp, recs in consumer.poll(timeout_ms=200).items():
            out.setdefault(tp.partition, []).extend((r.offset, r.value) for r in recs if r.offset < ends[tp])
        if time.monotonic() > deadline:
            raise ReseedError(f"could not read {todo[0].topic} to its end within {timeout:g} s", 1)
    return out


def _ensure_state_topic(settings: Settings, have: set[str]) -> None:
    """Create ``topics.state`` if missing, compacted, as ``drift serve`` does."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    name = settings.topics["state"]
    if name in have:
        return
    admin = KafkaAdminClient(**_client_config(settings))
    try:
        admin.create_topics([NewTopic(name, 1, -1, topic_configs={"cleanup.policy": "compact",
                                                                  "max.message.bytes": str(64 << 20)})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def reseed(paths: Iterable[str], settings: Settings, *, golden: dict | None = None,
           encoder_factory: Callable[[], Any] | None = None,
           on_alert: Callable[[dict], None] | None = None,
           on_reject: Callable[[RejectedLine], None] | None = None,
           stdin: IO[bytes] | None = None, write: bool = True) -> ReseedReport:
    """Re-seed ``settings.group_id``'s state from the archive ``paths`` (see the module docstring).

    Raises :class:`ReseedError` (``code`` 2: an input topic is missing; 1: Kafka failed).
    """
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    started = time.perf_counter()
    paths = list(paths)
    unreadable = [p for p in paths if p != "-" and not os.access(p, os.R_OK)]
    if unreadable:  # before anything is asked of Kafka
        raise ReseedError(f"cannot read {', '.join(unreadable)}", 2)
    timeout = float(settings.service["restore_timeout"])
    cfg = _client_config(settings)
    inputs = input_topics(settings)
    try:
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, allow_auto_create_topics=False,
                                 fetch_max_wait_ms=100, **cfg)
    except (KafkaError, OSError) as exc:
        raise ReseedError(f"cannot reach Kafka at {settings.bootstrap_servers}: {_why(exc)}", 1) from None
    try:
        have = set(consumer.topics())
        missing = sorted(f"{t} (topics.{s})" for t, s in inputs.items() if s != "control" and t not in have)
        if missing:
            raise ReseedError(f"input topic missing: {', '.join(missing)}; create it (as many partitions as "
                              "the scores topic for labels and feedback) or set its [topics] name", 2)
        partitions = {t: len(consumer.partitions_for_topic(t)) for t in inputs if t in have}
        tps = [TopicPartition(t, p) for t in partitions for p in range(partitions[t])]
        ends = high_watermarks(consumer, tps, timeout)
        control = settings.topics.get("control")
        commands = _read_to(consumer, [tp for tp in tps if tp.topic == control], ends, timeout) if control else {}
    except KafkaError as exc:
        raise ReseedError(f"Kafka: {_why(exc)}", 1) from None
    finally:
        consumer.close()
    seeder = Reseeder(settings, partitions, ends, golden=golden, encoder_factory=encoder_factory,
                      commands=commands, on_alert=on_alert, on_reject=on_reject)
    report = seeder.feed(paths, stdin)
    records = seeder.checkpoints()
    if not write:
        return report
    try:
        _ensure_state_topic(settings, have)
        producer = KafkaProducer(acks="all", linger_ms=5, max_request_size=64 << 20, **cfg)
    except (KafkaError, OSError) as exc:
        raise ReseedError(f"Kafka: {_why(exc)}", 1) from None
    try:
        chunks = [producer.send(settings.topics["state"], key=k, value=v) for _, _, seed in records for k, v in seed.chunks]
        producer.flush(timeout=timeout)
        for chunk in chunks:
            chunk.get(timeout=timeout)
        futures = [(producer.send(settings.topics["state"], key=key, value=value), seed) for key, value, seed in records]
        producer.flush(timeout=timeout)
        for fut, seed in futures:
            seed.state_offset = fut.get(timeout=timeout).offset  # confirmed (acks=all)
    except KafkaError as exc:
        raise ReseedError(f"checkpoints not confirmed by {settings.topics['state']}: {_why(exc)}",
                          1) from None
    finally:
        producer.close(timeout=10)
    report.written = True
    report.seconds = time.perf_counter() - started  # Kafka included
    return report
