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

import base64
import binascii
import dataclasses
import datetime as _dt
import re
from typing import Union

import msgspec
import numpy as np

__all__ = [
    "AnyEvent", "Rejection", "ScoreBatch", "RetrievalBatch", "QueryBatch", "Decoded",
    "EventDecoder", "KINDS", "to_epoch", "format_time", "stream_of", "kafka_key",
]

KINDS = ("scores", "retrieval", "queries")
_UTC = _dt.timezone.utc
# Event times must fall in this range (Unix seconds): 2000-01-01 .. 2100-01-01.
MIN_TS, MAX_TS = 946_684_800.0, 4_102_444_800.0

Time = Union[_dt.datetime, float]


class AnyEvent(msgspec.Struct, omit_defaults=True, gc=False):
    """Every field any input event may carry; the topic (or the fields) say which kind it is.

    ``gc=False``: the structs hold no reference cycles, and millions of them must not trigger
    the cyclic garbage collector."""

    ts: Time
    app: str = "default"
    intent: Union[str, None] = None
    stream: Union[str, None] = None
    trace_id: Union[str, None] = None
    # ScoreEvent
    dimension: Union[str, None] = None
    score: Union[float, None] = None
    prompt_hash: Union[str, None] = None
    prompt_version: Union[str, None] = None
    model: Union[str, None] = None
    cost_usd: Union[float, None] = None
    # RetrievalEvent
    scores: Union[list[float], None] = None
    index_version: Union[str, None] = None
    # QueryEvent
    text: Union[str, None] = None
    embedding: Union[list[float], None] = None
    embedding_b64: Union[str, None] = None


_ARRAY_PATH = re.compile(r"at `\$\[(\d+)\]")
_decoder = msgspec.json.Decoder(Union[AnyEvent, list[AnyEvent]])
_encoder = msgspec.json.Encoder()


def stream_of(event: dict) -> str:
    """The stream of an event given as a dict, by the SPEC's field rules (``stream`` overrides)."""
    if event.get("stream") in KINDS:
        return event["stream"]
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
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = [o for o, k in zip(v, mask) if k] if isinstance(v, list) else v[mask]
        return type(self)(**kw)

    def event_json(self, i: int) -> bytes:
        return _encoder.encode(self.objs[i])


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
    """Result of decoding a list of messages."""

    scores: ScoreBatch
    retrieval: RetrievalBatch
    queries: QueryBatch
    rejected: list[Rejection]
    n_messages: int

    @property
    def n_events(self) -> int:
        return len(self.scores) + len(self.retrieval) + len(self.queries)


def _schema_error(e: AnyEvent, kind: str) -> str | None:
    if kind == "scores":
        if e.dimension is None:
            return "missing required field `dimension`"
        if e.score is None:
            return "missing required field `score`"
    elif kind == "retrieval":
        if e.scores is None and e.score is None:
            return "missing required field `scores` (or `score`)"
        if e.scores is not None and len(e.scores) == 0:
            return "`scores` is empty"
    elif kind == "queries":
        if e.text is None and e.embedding is None and e.embedding_b64 is None:
            return "needs one of `text`, `embedding` or `embedding_b64`"
    return None


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
    """

    def __init__(self, scale_of, retrieval_scale=(-1.0, 1.0), embedding_dim=None,
                 max_message_bytes=1_000_000):
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
        objs = self._decode_all([values[m] for m in ok])
        evs: list[AnyEvent] = []
        msg: list[int] = []
        idx: list[int] = []
        for m, obj in zip(ok, objs):
            if obj.__class__ is Rejection:
                rejected.append(dataclasses.replace(obj, message=m))
            elif obj.__class__ is list:
                if not obj:
                    rejected.append(Rejection(m, "SchemaError", "empty array: no events"))
                    continue
                evs.extend(obj)
                msg.extend([m] * len(obj))
                idx.extend(range(len(obj)))
            else:
                evs.append(obj)
                msg.append(m)
                idx.append(-1)
        msg_a = np.array(msg, dtype=np.int64)
        idx_a = np.array(idx, dtype=np.int64)
        kinds = self._kinds(evs, kind)
        bad_msgs: dict[int, Rejection] = {}

        def reject(mask, cls, reason_of):
            for j in np.flatnonzero(mask):
                m = int(msg_a[j])
                if m not in bad_msgs:
                    i = int(idx_a[j])
                    bad_msgs[m] = Rejection(m, cls, reason_of(j), None if i < 0 else i)

        reject(kinds < 0, "UnknownEventKind", lambda j: (
            "cannot tell the event kind: expected `dimension` (score), `scores` (retrieval) or "
            "`text`/`embedding` (query), or a valid `stream`"))
        for k, name in enumerate(KINDS):
            sel = np.flatnonzero(kinds == k)
            errs = [(j, _schema_error(evs[j], name)) for j in sel]
            bad = np.zeros(len(evs), bool)
            why = {}
            for j, e in errs:
                if e:
                    bad[j] = True
                    why[j] = e
            reject(bad, "SchemaError", why.get)
        if bad_msgs:
            good = ~np.isin(msg_a, np.fromiter(bad_msgs, np.int64, len(bad_msgs)))
        else:
            good = np.ones(len(evs), bool)
        parts = []
        for k, name in enumerate(KINDS):
            sel = np.flatnonzero((kinds == k) & good)
            parts.append(([evs[j] for j in sel], msg_a[sel], idx_a[sel]))
        scores = self._scores(*parts[0])
        retrieval = self._retrieval(*parts[1])
        queries = self._queries(*parts[2])
        # column checks: a message with any bad event is rejected whole
        late_bad: dict[int, Rejection] = {}
        for batch, checks in ((scores, self._check_scores), (retrieval, self._check_retrieval),
                              (queries, self._check_queries)):
            for m, cls, reason, i in checks(batch):
                if m not in late_bad:
                    late_bad[m] = Rejection(m, cls, reason, i)
        if late_bad:
            drop = np.array(sorted(late_bad), dtype=np.int64)
            scores = scores.take(~np.isin(scores.msg, drop))
            retrieval = retrieval.take(~np.isin(retrieval.msg, drop))
            queries = queries.take(~np.isin(queries.msg, drop))
        rejected.extend(bad_msgs.values())
        rejected.extend(late_bad.values())
        rejected.sort(key=lambda r: r.message)
        return Decoded(scores, retrieval, queries, rejected, len(values))

    @staticmethod
    def _decode_one(raw: bytes):
        try:
            return _decoder.decode(raw)
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

    def _decode_all(self, raws: list[bytes]) -> list:
        """Decoded object (or a Rejection) per message: one msgspec call per message, so each
        message is framed exactly as its own JSON document."""
        decode = _decoder.decode
        out = []
        append = out.append
        for r in raws:
            try:
                append(decode(r))
            except Exception:  # rare: explain it (the same call, with the error classified)
                append(self._decode_one(r))
        return out

    @staticmethod
    def _kinds(evs: list[AnyEvent], forced: str | None) -> np.ndarray:
        """Stream index per event (-1 when it cannot be told)."""
        n = len(evs)
        if forced is not None:
            return np.full(n, KINDS.index(forced), np.int8)
        out = np.full(n, -1, np.int8)
        if n == 0:
            return out
        stream = np.array([e.stream for e in evs], dtype=object)
        dim = np.not_equal(np.array([e.dimension for e in evs], dtype=object), None)
        ret = np.array([e.scores is not None or e.score is not None for e in evs], bool)
        qry = np.array([e.text is not None or e.embedding is not None or e.embedding_b64 is not None
                        for e in evs], bool)
        out[qry] = 2
        out[ret] = 1
        out[dim] = 0
        has_stream = np.not_equal(stream, None)
        if has_stream.any():
            for k, name in enumerate(KINDS):
                out[has_stream & (stream == name)] = k
            out[has_stream & ~np.isin(stream, KINDS)] = -1
        return out

    # -- building columns -------------------------------------------------------------------
    @staticmethod
    def _common(evs, msg, idx):
        ts = np.array([t if t.__class__ is float else (t.timestamp() if t.tzinfo else to_epoch(t))
                       for t in [e.ts for e in evs]], dtype=np.float64)
        app = np.array([e.app for e in evs], dtype=object)
        intent = np.array([e.intent if e.intent is not None else "all" for e in evs], dtype=object)
        return msg, idx, ts.reshape(-1), app, intent

    def _scores(self, evs, msg, idx) -> ScoreBatch:
        msg, idx, ts, app, intent = self._common(evs, msg, idx)
        b = ScoreBatch(msg, idx, ts, app, intent, evs,
                       np.array([e.dimension for e in evs], dtype=object),
                       np.array([e.score for e in evs], dtype=np.float64),
                       np.array([e.prompt_hash for e in evs], dtype=object),
                       np.array([e.model for e in evs], dtype=object))
        return b

    def _retrieval(self, evs, msg, idx) -> RetrievalBatch:
        msg, idx, ts, app, intent = self._common(evs, msg, idx)
        top1 = np.fromiter(((max(e.scores) if e.scores is not None else e.score) for e in evs),
                           np.float64, len(evs))
        b = RetrievalBatch(msg, idx, ts, app, intent, evs, top1,
                           np.array([e.index_version for e in evs], dtype=object))
        b._all_finite = np.fromiter(
            (e.scores is None or all(np.isfinite(e.scores)) for e in evs), bool, len(evs))
        return b

    def _queries(self, evs, msg, idx) -> QueryBatch:
        msg, idx, ts, app, intent = self._common(evs, msg, idx)
        dim = self.embedding_dim
        errors = np.zeros(len(evs), dtype=object)
        rows = []
        has = np.zeros(len(evs), bool)
        for i, e in enumerate(evs):
            v = None
            if e.embedding_b64 is not None:
                try:
                    raw = base64.b64decode(e.embedding_b64, validate=True)
                    if len(raw) % 4:
                        raise ValueError("length is not a multiple of 4 bytes")
                    v = np.frombuffer(raw, dtype="<f4")
                except (binascii.Error, ValueError) as exc:
                    errors[i] = f"`embedding_b64` is not base64 of float32: {exc}"
            elif e.embedding is not None:
                v = np.asarray(e.embedding, dtype=np.float32)
            if v is not None:
                has[i] = True
            rows.append(v)
        # without a golden set the query rules are off: embeddings are checked for form only
        width = dim or 0
        vectors = np.full((len(evs), width), np.nan, np.float32)
        for i, r in enumerate(rows):
            if r is None or not dim:
                continue
            if r.shape[0] != width:
                errors[i] = f"embedding has {r.shape[0]} dimensions, the golden set has {width}"
            else:
                vectors[i] = r
        b = QueryBatch(msg, idx, ts, app, intent, evs,
                       np.array([e.text for e in evs], dtype=object), vectors, has)
        b._errors = errors
        return b

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

    def _check_scores(self, b: ScoreBatch):
        out = self._check_time(b)
        finite = np.isfinite(b.score)
        out += self._first_bad(b, ~finite, "NonFiniteValue", lambda j: f"score is {float(b.score[j])!r}")
        dims, inv = np.unique(b.dimension.astype(str), return_inverse=True) if len(b) else ([], np.zeros(0, int))
        spec = np.array([self._scale(d) for d in dims], dtype=np.float64).reshape(-1, 3)
        lo, hi, binary = spec[inv, 0], spec[inv, 1], spec[inv, 2] > 0
        outside = finite & ((b.score < lo) | (b.score > hi))
        out += self._first_bad(b, outside, "OutOfScale", lambda j: (
            f"score {float(b.score[j])!r} is outside the declared scale [{lo[j]:g}, {hi[j]:g}] of "
            f"dimension `{b.dimension[j]}`"))
        notbin = finite & ~outside & binary & (b.score != 0) & (b.score != 1)
        out += self._first_bad(b, notbin, "OutOfScale", lambda j: (
            f"dimension `{b.dimension[j]}` is a flag/check and takes 0 or 1, got {float(b.score[j])!r}"))
        return out

    def _check_retrieval(self, b: RetrievalBatch):
        out = self._check_time(b)
        finite = np.isfinite(b.top1) & b._all_finite if len(b) else np.zeros(0, bool)
        out += self._first_bad(b, ~finite, "NonFiniteValue", lambda j: "retrieval score is not finite")
        lo, hi = self.retrieval_scale
        outside = finite & ((b.top1 < lo) | (b.top1 > hi))
        out += self._first_bad(b, outside, "OutOfScale", lambda j: (
            f"retrieval score {float(b.top1[j])!r} is outside [{lo:g}, {hi:g}]"))
        return out

    def _check_queries(self, b: QueryBatch):
        out = self._check_time(b)
        err = np.not_equal(b._errors, 0) if len(b) else np.zeros(0, bool)
        out += self._first_bad(b, err, "BadEmbedding", lambda j: str(b._errors[j]))
        finite = (np.isfinite(b.vectors).all(axis=1) if b.vectors.shape[1] else np.ones(len(b), bool)) | ~b.has_vector
        out += self._first_bad(b, ~finite & ~err, "NonFiniteValue", lambda j: "embedding has NaN or inf")
        return out
