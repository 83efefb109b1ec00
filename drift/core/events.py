"""Input events: fast decoding, validation with reasons, and columnar batches.

A *message* (a Kafka record value, or one line of a JSONL file) holds one event object or a JSON
array of them. Messages are decoded with msgspec into typed structs, then checked column-wise
with numpy (finite scores, declared scales, time range, embedding size). The message is the unit
of acceptance: if any event in it is bad, the whole message is rejected with the reason of its
first bad event (error class and message, the event's index in the array), and none of its
events is used. Nothing is lost: rejected messages keep their raw bytes for the DLQ.

Error classes (the DLQ's ``x-error-class``): ``MalformedJSON``, ``SchemaError``, ``BadTimestamp``,
``NonFiniteValue``, ``OutOfScale``, ``BadEmbedding``, ``OversizedMessage``, ``UnknownEventKind``,
and, decided later by the engine, ``LateEvent`` and ``FutureEvent``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import operator
import re
from typing import Any

import msgspec
import numpy as np

__all__ = [
    "AnyEvent", "Rejection", "ScoreBatch", "RetrievalBatch", "QueryBatch", "Decoded", "Events",
    "EventDecoder", "KINDS", "to_epoch", "format_time", "stream_of", "kafka_key", "column", "factorize",
]

KINDS = ("scores", "retrieval", "queries")
_UTC = _dt.UTC
# Event times must fall in this range (Unix seconds): 2000-01-01 .. 2100-01-01.
MIN_TS, MAX_TS = 946_684_800.0, 4_102_444_800.0

Time = _dt.datetime | float


class AnyEvent(msgspec.Struct, omit_defaults=True, gc=False):
    """Every field any input event may carry; the topic (or the fields) say which kind it is.

    ``gc=False``: the structs hold no reference cycles, and millions of them must not trigger
    the cyclic garbage collector."""

    ts: Time
    app: str = "default"
    intent: str | None = None
    stream: str | None = None
    trace_id: str | None = None
    # ScoreEvent
    dimension: str | None = None
    score: float | None = None
    prompt_hash: str | None = None
    prompt_version: str | None = None
    model: str | None = None
    cost_usd: float | None = None
    # RetrievalEvent
    scores: list[float] | None = None
    index_version: str | None = None
    # QueryEvent
    text: str | None = None
    embedding: list[float] | None = None
    embedding_b64: str | None = None
    # LabelEvent (a human's rating of a scored response: ``label`` is a number on the
    # dimension's scale, or a word such as ``good``/``bad``)
    label: float | str | None = None
    rater: str | None = None
    # FeedbackEvent (a user's reaction to a response)
    kind: str | None = None


_ARRAY_PATH = re.compile(r"at `\$\[(\d+)\]")
_decoder = msgspec.json.Decoder(AnyEvent | list[AnyEvent])
_encoder = msgspec.json.Encoder()


def stream_of(event: dict) -> str:
    """The stream of an event given as a dict, by the SPEC's field rules (``stream`` overrides,
    and may name any registered stream)."""
    from drift.core.streams import STREAMS

    if event.get("stream") in KINDS or event.get("stream") in STREAMS:
        return event["stream"]
    if "label" in event and "labels" in STREAMS:
        return "labels"
    if "kind" in event and "feedback" in STREAMS:
        return "feedback"
    if "dimension" in event:
        return "scores"
    if "scores" in event or "score" in event:
        return "retrieval"
    return "queries"


def kafka_key(event: dict) -> str:
    """The message key producers must use: ``app/intent`` (scores, retrieval) or ``app`` (queries)."""
    app = event.get("app", "default")
    return app if stream_of(event) == "queries" else f"{app}/{event.get('intent') or 'all'}"


def to_epoch(ts) -> float:
    """Event time to Unix seconds (naive datetimes are taken as UTC)."""
    if type(ts) is float:
        return ts
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_UTC)
    return ts.timestamp()


def format_time(t: float | None) -> str | None:
    """Unix seconds to RFC 3339 UTC with millisecond precision (``None`` stays ``None``)."""
    if t is None or not np.isfinite(t):
        return None
    return _dt.datetime.fromtimestamp(t, _UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Events(list):
    """Decoded events (structs) that are read a field at a time: :meth:`column` is one field of
    every event as an object array, read once and kept. When every event is of one struct type
    with the given ``fields`` (the decoder's ``AnyEvent``), the first column read reads them all,
    in one pass over the structs (``msgspec.structs.astuple``): each struct is visited once, not
    once per field. A selection (:meth:`take`) reads its columns from the whole when the whole
    has them or it is at least half of it (so the decoder's selections of one batch read each
    field once), else its own. It is a list, so a stream plug-in may read its events one by one
    as well."""

    __slots__ = ("_cols", "_of", "_fields")

    def __init__(self, events=(), fields: tuple[str, ...] | None = None):
        super().__init__(events)
        self._cols: dict[str, np.ndarray] = {}
        self._of: tuple[Events, np.ndarray] | None = None  # (the whole, positions in it)
        self._fields = fields

    def column(self, name: str) -> np.ndarray:
        """Field ``name`` of every event (None where an event's type lacks it)."""
        col = self._cols.get(name)
        if col is not None:
            return col
        if self._of is not None:
            whole, pos = self._of
            if name in whole._cols or 2 * pos.size >= len(whole):
                col = whole.column(name)[pos]
        if col is None and self._fields is not None and name in self._fields:
            n, k = len(self), len(self._fields)
            rows = np.fromiter(itertools.chain.from_iterable(map(msgspec.structs.astuple, self)), object,
                               n * k).reshape(n, k)
            for i, f in enumerate(self._fields):
                self._cols.setdefault(f, rows[:, i])
            col = self._cols[name]
        if col is None:
            try:
                col = np.fromiter(map(operator.attrgetter(name), self), object, len(self))
            except AttributeError:  # a stream's own event type without this field
                col = np.fromiter((getattr(e, name, None) for e in self), object, len(self))
        self._cols[name] = col
        return col

    def take(self, pos: np.ndarray) -> Events:
        """The events at the (increasing) positions ``pos``."""
        if pos.size == len(self):
            return self
        out = Events(map(self.__getitem__, pos.tolist()), self._fields)
        out._of = (self, pos)
        return out


def column(events, name: str) -> np.ndarray:
    """Field ``name`` of every event of ``events`` (an :class:`Events` or any list of structs)
    as an object array (None where an event lacks it)."""
    if isinstance(events, Events):
        return events.column(name)
    return np.fromiter((getattr(e, name, None) for e in events), object, len(events))


def factorize(values) -> tuple[list, np.ndarray]:
    """Distinct values in order of first appearance, and each value's position among them:
    one dict pass in C, so labels are handled once per distinct value, not per event.

    >>> factorize(np.array(["b", "a", "b"], dtype=object))
    (['b', 'a'], array([0, 1, 0]))
    """
    first = dict.fromkeys(values)
    code = {v: i for i, v in enumerate(first)}
    return list(first), np.fromiter(map(code.__getitem__, values), np.intp, len(values))


_TZINFO = operator.attrgetter("tzinfo")


def epoch_seconds(ts: np.ndarray) -> np.ndarray:
    """Event times (an object array of datetimes and floats, as decoded) to Unix seconds,
    exactly as :func:`to_epoch` (naive datetimes are UTC). Aware datetimes, the usual case,
    are converted in one C pass."""
    n = ts.shape[0]
    kinds = set(map(type, ts))
    if kinds == {float}:
        return np.fromiter(ts, np.float64, n)
    if kinds == {_dt.datetime} and None not in set(map(_TZINFO, ts)):
        return np.fromiter(map(_dt.datetime.timestamp, ts), np.float64, n)
    return np.fromiter(map(to_epoch, ts), np.float64, n)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A rejected message (``event`` is the index inside a JSON array, or None)."""

    message: int
    error_class: str
    reason: str
    event: int | None = None


@dataclasses.dataclass
class _Columns:
    msg: np.ndarray  # message index of each event
    idx: np.ndarray  # index inside the message's JSON array (-1: a single-event message)
    ts: np.ndarray
    app: np.ndarray
    intent: np.ndarray
    objs: list  # the decoded structs (for re-encoding single rejected events)

    def __len__(self):
        return self.ts.shape[0]

    def take(self, mask: np.ndarray):
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = take_events(v, mask) if isinstance(v, list) else v[mask]
        return type(self)(**kw)

    def event_json(self, i: int) -> bytes:
        return _encoder.encode(self.objs[i])

    def trace_ids(self, idx: np.ndarray) -> list:
        """The ``trace_id`` of the events at ``idx`` (None where an event has none)."""
        return column(self.objs, "trace_id")[idx].tolist()

    def costs(self, idx: np.ndarray) -> np.ndarray:
        """The ``cost_usd`` of the events at ``idx`` (NaN where an event has none)."""
        c = column(self.objs, "cost_usd")[idx]
        out = np.full(c.shape[0], np.nan)
        has = np.not_equal(c, None)  # type: ignore[call-overload]  # numpy's stubs refuse None
        out[has] = c[has].astype(np.float64)
        return out


def take_events(events: list, mask: np.ndarray) -> list:
    """The events of ``events`` where ``mask`` is set (an :class:`Events` keeps its columns)."""
    if isinstance(events, Events):
        return events.take(np.flatnonzero(mask))
    return [o for o, k in zip(events, mask) if k]


@dataclasses.dataclass
class ScoreBatch(_Columns):
    dimension: np.ndarray
    score: np.ndarray
    prompt_hash: np.ndarray
    model: np.ndarray


@dataclasses.dataclass
class RetrievalBatch(_Columns):
    top1: np.ndarray
    index_version: np.ndarray


@dataclasses.dataclass
class QueryBatch(_Columns):
    text: np.ndarray  # object: str or None
    vectors: np.ndarray  # (n, dim) float32; rows of text-only events are NaN until embedded
    has_vector: np.ndarray


@dataclasses.dataclass
class Decoded:
    """Result of decoding a list of messages: one columnar batch per stream, and the rejections.

    ``decoded.scores`` (and so on for every registered stream) is ``decoded.batches["scores"]``.
    """

    batches: dict
    rejected: list[Rejection]
    n_messages: int

    def __getattr__(self, name):
        batches = self.__dict__.get("batches")
        if batches is not None and name in batches:
            return batches[name]
        raise AttributeError(name)

    @property
    def n_events(self) -> int:
        return sum(len(b) for b in self.batches.values())


class EventDecoder:
    """Decode and validate messages into columnar batches.

    Parameters
    ----------
    scale_of : callable
        ``scale_of(dimension) -> (lo, hi, binary)``: the declared scale of a score dimension
        (``binary`` for flag and check dimensions, whose scores must be 0 or 1).
    retrieval_scale : (float, float)
        Allowed range of retrieval similarities.
    embedding_dim : int or None
        Required query embedding size (None: query embeddings are not checked).
    max_message_bytes : int
        Larger messages are rejected unread.
    streams : mapping of str to Stream, optional
        The input streams (default: every registered one, :data:`drift.core.streams.STREAMS`).
    """

    def __init__(self, scale_of, retrieval_scale=(-1.0, 1.0), embedding_dim=None,
                 max_message_bytes=1_000_000, streams=None):
        if streams is None:
            from drift.core.streams import STREAMS as streams
        self.streams = dict(streams)
        self._names = list(self.streams)
        self._typed = {n: msgspec.json.Decoder(s.event_type | list[s.event_type])
                       for n, s in self.streams.items() if s.event_type is not AnyEvent}
        self.scale_of = scale_of
        self.retrieval_scale = tuple(retrieval_scale)
        self.embedding_dim = embedding_dim
        self.max_message_bytes = int(max_message_bytes)
        self._scales: dict[str, tuple[float, float, bool]] = {}

    def decode(self, values: list[bytes], kind: str | None = None) -> Decoded:
        """Decode messages; ``kind`` forces the stream (from the topic), else fields decide."""
        rejected: list[Rejection] = []
        limit = self.max_message_bytes
        ok: list[int] = []
        for m, raw in enumerate(values):
            if raw is None:
                rejected.append(Rejection(m, "SchemaError", "empty message (null value)"))
            elif len(raw) > limit:
                rejected.append(Rejection(m, "OversizedMessage",
                                          f"message is {len(raw)} bytes, limit {limit}"))
            else:
                ok.append(m)
        typed = self._typed.get(kind) if kind is not None else None
        objs = self._decode_all([values[m] for m in ok], typed)
        if kind is None and self._typed:
            objs = [self._retype(o, values[m]) for m, o in zip(ok, objs)]
        return self._validate(ok, objs, rejected, kind, len(values))

    def decode_objects(self, events: list, kind: str | None = None) -> Decoded:
        """Like :meth:`decode`, for Python objects: each item of ``events`` is one message (an
        event mapping, or a list of them); no JSON bytes in between."""
        rejected: list[Rejection] = []
        objs = []
        for e in events:
            stream = self.streams.get(kind if kind is not None else (
                e.get("stream") if isinstance(e, dict) else None))
            typ = stream.event_type if stream is not None else AnyEvent
            try:
                objs.append(msgspec.convert(e, typ | list[typ]))  # type: ignore[valid-type]  # a runtime type
            except msgspec.ValidationError as exc:
                text = str(exc)
                cls = "BadTimestamp" if text.endswith(".ts`") else "SchemaError"
                at = _ARRAY_PATH.search(text)
                objs.append(Rejection(-1, cls, text, int(at.group(1)) if at else None))
        return self._validate(list(range(len(events))), objs, rejected, kind, len(events))

    def _validate(self, ok: list[int], objs: list, rejected: list[Rejection], kind: str | None,
                  n_messages: int) -> Decoded:
        # without streams of their own event type, every event is an AnyEvent
        evs = Events(fields=None if self._typed else AnyEvent.__struct_fields__)
        msgs: list[int] = []
        sizes: list[int] = []  # events per message; -1: a single event, not an array
        for m, obj in zip(ok, objs):
            if obj.__class__ is Rejection:
                rejected.append(dataclasses.replace(obj, message=m))
            elif obj.__class__ is list:
                if not obj:
                    rejected.append(Rejection(m, "SchemaError", "empty array: no events"))
                    continue
                evs.extend(obj)
                msgs.append(m)
                sizes.append(len(obj))
            else:
                evs.append(obj)
                msgs.append(m)
                sizes.append(-1)
        size = np.array(sizes, dtype=np.int64)
        count = np.abs(size)
        msg_a = np.repeat(np.array(msgs, dtype=np.int64), count)
        idx_a = np.arange(msg_a.shape[0], dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        idx_a[np.repeat(size < 0, count)] = -1
        kinds = self._kinds(evs, kind)
        bad_msgs: dict[int, Rejection] = {}

        def reject(pos, cls, reason_of):
            for j in pos.tolist():
                m = int(msg_a[j])
                if m not in bad_msgs:
                    i = int(idx_a[j])
                    bad_msgs[m] = Rejection(m, cls, reason_of(j), None if i < 0 else i)

        reject(np.flatnonzero(kinds < 0), "UnknownEventKind", lambda j: (
            "cannot tell the event kind: expected `dimension` (score), `scores` (retrieval) or "
            "`text`/`embedding` (query), or a valid `stream`"))
        sels = [np.flatnonzero(kinds == k) for k in range(len(self._names))]
        subsets = [evs.take(sel) for sel in sels]
        for name, sel, sub in zip(self._names, sels, subsets):
            why = self.streams[name].schema_errors(sub) if sel.size else None
            if why:
                at = sorted(why)
                reject(sel[at], "SchemaError", dict(zip(sel[at].tolist(), (why[j] for j in at))).get)
        if bad_msgs:
            bad = np.fromiter(bad_msgs, np.int64, len(bad_msgs))
            keep = [np.flatnonzero(~np.isin(msg_a[sel], bad)) for sel in sels]
            sels, subsets = [sel[k] for sel, k in zip(sels, keep)], [sub.take(k) for sub, k in zip(subsets, keep)]
        batches = {name: self.streams[name].build(self, sub, msg_a[sel], idx_a[sel])
                   for name, sel, sub in zip(self._names, sels, subsets)}
        # column checks: a message with any bad event is rejected whole
        late_bad: dict[int, Rejection] = {}
        for name, batch in batches.items():
            for m, cls, reason, i in self.streams[name].check(self, batch):
                if m not in late_bad:
                    late_bad[m] = Rejection(m, cls, reason, i)
        if late_bad:
            drop = np.array(sorted(late_bad), dtype=np.int64)
            batches = {name: b.take(~np.isin(b.msg, drop)) for name, b in batches.items()}
        rejected.extend(bad_msgs.values())
        rejected.extend(late_bad.values())
        rejected.sort(key=lambda r: r.message)
        return Decoded(batches, rejected, n_messages)

    def _retype(self, obj, raw: bytes):
        """In files, a message whose events name a stream with its own event type is decoded
        again with that type."""
        first = obj[0] if obj.__class__ is list and obj else obj
        dec = self._typed.get(getattr(first, "stream", None))
        if dec is None or obj.__class__ is Rejection:
            return obj
        return self._decode_one(raw, dec)

    @staticmethod
    def _decode_one(raw: bytes, decoder=None):
        try:
            return (decoder or _decoder).decode(raw)
        except msgspec.ValidationError as exc:
            text = str(exc)
            cls = "BadTimestamp" if text.endswith(".ts`") else "SchemaError"
            if "out of range" in text:
                cls = "NonFiniteValue"
            at = _ARRAY_PATH.search(text)
            return Rejection(-1, cls, text, int(at.group(1)) if at else None)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return Rejection(-1, "MalformedJSON", str(exc))
        except RecursionError:
            return Rejection(-1, "MalformedJSON", "JSON is nested too deeply")

    def _decode_all(self, raws: list[bytes], decoder=None) -> list:
        """Decoded object (or a Rejection) per message: one msgspec call per message, so each
        message is framed exactly as its own JSON document."""
        decode = (decoder or _decoder).decode
        out: list = []
        append = out.append
        for r in raws:
            try:
                append(decode(r))
            except Exception:  # rare: explain it (the same call, with the error classified)
                append(self._decode_one(r, decoder))
        return out

    def _kinds(self, evs: Events, forced: str | None) -> np.ndarray:
        """Stream index per event (-1 when it cannot be told)."""
        n = len(evs)
        if forced is not None:
            return np.full(n, self._names.index(forced), np.int8)
        out = np.full(n, -1, np.int8)
        if n == 0:
            return out
        # events of a stream's own type belong to it; the others are claimed by their fields
        todo = np.arange(n)
        if self._typed:
            types = np.fromiter(map(type, evs), object, n)
            for k, name in enumerate(self._names):
                typ = self.streams[name].event_type
                if typ is not AnyEvent:
                    out[types == typ] = k
            todo = np.flatnonzero(types == AnyEvent)
        # the highest precedence claims first and keeps what it claims (of equal precedence,
        # the later stream): the same owner as letting every stream claim, highest last
        order = sorted(range(len(self._names)), key=lambda k: self.streams[self._names[k]].precedence)
        some = evs.take(todo)
        for k in reversed(order):
            if not todo.size:
                break
            got = np.asarray(self.streams[self._names[k]].claims(some), bool)
            if got.any():
                out[todo[got]] = k
                todo, some = todo[~got], some.take(np.flatnonzero(~got))
        stream = evs.column("stream")
        has_stream = np.not_equal(stream, None)  # type: ignore[call-overload]  # numpy's stubs refuse None
        if has_stream.any():
            for k, name in enumerate(self._names):
                out[has_stream & (stream == name)] = k
            out[has_stream & ~np.isin(stream, self._names)] = -1
        return out

    # -- building columns -------------------------------------------------------------------
    @staticmethod
    def _common(evs, msg, idx):
        ts = epoch_seconds(column(evs, "ts"))
        app = column(evs, "app")
        intent = column(evs, "intent")
        none = np.equal(intent, None)
        if none.any():
            intent = intent.copy()
            intent[none] = "all"
        return msg, idx, ts, app, intent

    # -- column checks ----------------------------------------------------------------------
    @staticmethod
    def _first_bad(batch, bad, cls, reason_of):
        out = []
        if bad.any():
            pos = np.flatnonzero(bad)
            _, first = np.unique(batch.msg[pos], return_index=True)
            for j in pos[first]:
                i = int(batch.idx[j])
                out.append((int(batch.msg[j]), cls, reason_of(j), None if i < 0 else i))
        return out

    def _check_time(self, batch):
        bad = ~((batch.ts >= MIN_TS) & (batch.ts < MAX_TS))
        return self._first_bad(batch, bad, "BadTimestamp",
                               lambda j: f"event time {float(batch.ts[j])!r} is outside 2000-01-01..2100-01-01")

    def _scale(self, dim: str):
        s = self._scales.get(dim)
        if s is None:
            s = self._scales[dim] = tuple(self.scale_of(dim))
        return s
