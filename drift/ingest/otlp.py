"""OpenTelemetry (OTLP) export requests to the engine's events: decoding, mapping, joins.

The OpenTelemetry Collector's Kafka exporter writes one OTLP export request per Kafka record,
as protobuf (``otlp_proto``) or as JSON (``otlp_json``). This module turns such records into
the engine's ScoreEvents and RetrievalEvents; it does no I/O (``drift ingest otlp`` wraps it
in a Kafka service).

- :func:`decode_traces` / :func:`decode_logs` parse a record value; an undecodable or invalid
  one raises :class:`OtlpError` (its ``error_class`` and ``reason`` go to the DLQ headers).
- :func:`encode_json` writes a request as the Collector does; :func:`split_by_trace` cuts a
  request into one request per trace id (to repartition by trace id).
- :class:`OtlpMapper` maps requests to events. It is deterministic, and its state (the join
  buffer of spans and evaluations, see :mod:`drift.ingest.join`) is a JSON document, so it is
  checkpointed with the detector state.

Mapping
-------

Spans (``ExportTraceServiceRequest``); names in *italics* are settings (``[otlp]``, see
:class:`OtlpMapping`), notes below the tables:

| OTLP | event field | rule |
|---|---|---|
| span `end_time_unix_nano` | `ts` | / 1e9 (Unix seconds) [1] |
| resource attribute *app_attribute* (`service.name`) | `app` | else the span attribute, else `"default"` |
| span attribute *intent_attribute* (`intent`) | `intent` | else `"all"` |
| *prompt_hash_attributes* (`gen_ai.prompt.hash`, `genai.prompt.hash`) | `prompt_hash` | first present [2] |
| *prompt_version_attributes* (`gen_ai.prompt.version`, `genai.prompt.version`) | `prompt_version` | first present [2] |
| *model_attributes* (`gen_ai.response.model`, `gen_ai.request.model`) | `model` | first present [2] |
| span `trace_id` | `trace_id` | lowercase hex [1] |
| *score_prefix*`<dimension>` (`quality.score.relevance`) | ScoreEvent `dimension`, `score` | one event per attribute [3] |
| `gen_ai.response.finish_reasons` | ScoreEvent `truncated` | 1.0 / 0.0 [4] |
| `retrieval.documents.<i>.document.score` | RetrievalEvent `scores` | sorted descending [5] |
| `retrieval.index_version` | RetrievalEvent `index_version` | when present |
| `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | `cost_usd` | × *prices*`[model]` [6] |
| none of the above | nothing | counted `spans_unmapped` |

1. A span whose end time is outside 2000..2100 (0, far future) or without a valid 16-byte trace
   id is counted `records_invalid` and maps to nothing.
2. Span attributes before resource attributes, in the order of the setting's list. A value
   that is not a string is ignored (counted `attributes_invalid`).
3. The value must be an int or a finite double; a bool, a string, NaN or ±inf is counted
   `records_invalid` and the span's other dimensions still map.
4. A string array (or a string). `score` is 1.0 when one reason is in *truncation_reasons*
   (`length`, `max_tokens`), else 0.0; nothing when the attribute is absent or empty.
   `truncated` is a flag dimension (SPEC).
5. OpenInference's flattened documents; one RetrievalEvent per span with every valid score;
   an invalid one is counted `records_invalid`.
6. `(input × in_price + output × out_price) / 1e6`, *prices* in USD per million tokens, the
   model looked up under each of *model_attributes* in turn; the older
   `gen_ai.usage.prompt_tokens` / `gen_ai.usage.completion_tokens` count too. Set on every
   ScoreEvent of the span (and its evaluations) when a model is priced and a token count is
   present (a missing count is 0).

Evaluation results (``ExportLogsServiceRequest``): a log record is the `gen_ai.evaluation.result`
event when its `event_name` field is `gen_ai.evaluation.result`, or (older SDKs) its attribute
`event.name` is. Other log records are counted `logs_ignored`.

| OTLP | event field | rule |
|---|---|---|
| attribute `gen_ai.evaluation.name` | `dimension` | required string, else `records_invalid` |
| attribute `gen_ai.evaluation.score.value` | `score` | an int or a finite double |
| attribute `gen_ai.evaluation.score.label` | `score` | without a valid value: *label_values*[label] [7] |
| the evaluated span | `ts`, `app`, `intent`, `prompt_hash`, `prompt_version`, `model`, `trace_id`, `cost_usd` | from the span [8] |

7. Case-insensitive; by default `pass`, `true`, `yes`, `correct`, … → 1.0 and `fail`, `false`,
   `no`, `incorrect`, … → 0.0. No valid value and no known label: `records_invalid`.
8. `ts` is the evaluated span's end time; the span is found by the join below.

The join: an evaluation with the attribute `gen_ai.response.id` joins the span whose attribute
`gen_ai.response.id` has that value (the explicit reference wins over the log's own trace
context, which an SDK fills in from whatever span is current); otherwise it joins the span
named by the log record's `trace_id` and `span_id` (the span it is parented to); a record with
neither is `records_invalid`. Spans that can be evaluated (any `gen_ai.*`/`genai.*` attribute,
a score, or the intent attribute) are kept on the left side of a :class:`JoinBuffer` (only
the small context above, under their span id and their response id) for *join_max_age*
seconds of event time, so later evaluations join at once; any other span is kept only once an
evaluation was waiting for it. An evaluation that arrives before its span waits on the right
side (counted `evaluations_buffered`) and is emitted when the span arrives
(`evaluations_joined`, as are those joined at once). One whose span never comes is dropped by
:meth:`OtlpMapper.expire` after *join_max_age* of event time, or evicted (oldest event time
first) when the buffer holds more than *join_max_entries* records; both are counted
`evaluations_dropped`.

Event times of log records (`time_unix_nano`, else `observed_time_unix_nano`) only age the
buffered evaluations; a record with neither uses the mapper's watermark (the latest event time
it has seen). Records are repartitioned by trace id (:func:`split_by_trace`), so an evaluation
that carries only a response id (no trace id) joins only when it reaches the mapper that saw
the span: with one partition, or when the log record carries the trace id too.

Counts (:attr:`MapResult.counts`): `spans`, `spans_mapped`, `spans_unmapped`, `score_events`,
`retrieval_events`, `truncated` (spans cut off by their length limit), `logs`, `logs_ignored`,
`evaluations`, `evaluations_joined`, `evaluations_buffered`, `evaluations_dropped`,
`spans_expired`, `spans_evicted`, `records_invalid` (a span, a score attribute or an evaluation
that could not be used) and `attributes_invalid` (an optional attribute of the wrong type,
ignored).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import decimal
import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from drift.core.events import MAX_TS, MIN_TS
from drift.core.params import ConfigError, as_int, parse_duration
from drift.ingest.join import JoinBuffer

__all__ = [
    "OtlpError", "OtlpMapping", "OtlpMapper", "MapResult", "ENCODINGS", "EVALUATION_EVENT", "SERVICE_KEYS",
    "DEFAULT_LABEL_VALUES", "decode_traces", "decode_logs", "encode_json", "split_by_trace",
]

ENCODINGS = ("otlp_proto", "otlp_json")
EVALUATION_EVENT = "gen_ai.evaluation.result"
#: keys of the ``[otlp]`` section that belong to the Kafka service, not to the mapping
SERVICE_KEYS = ("spans_topic", "logs_topic")

DEFAULT_LABEL_VALUES: Mapping[str, float] = MappingProxyType({
    "pass": 1.0, "fail": 0.0, "passed": 1.0, "failed": 0.0, "true": 1.0, "false": 0.0,
    "yes": 1.0, "no": 0.0, "correct": 1.0, "incorrect": 0.0, "good": 1.0, "bad": 0.0,
    "relevant": 1.0, "irrelevant": 0.0,
})


class OtlpError(ValueError):
    """A record value that cannot be used at all; it goes to the DLQ.

    Attributes
    ----------
    error_class : str
        ``otlp_decode`` (not protobuf / not JSON), ``otlp_encoding`` (the other encoding than
        configured), ``otlp_invalid`` (decodes, but is not a usable OTLP request).
    reason : str
        One line, naming the field where it can.
    """

    def __init__(self, error_class: str, reason: str):
        reason = " ".join(str(reason).split())[:500]
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# settings


def _str_tuple(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str):  # one name, or "a,b" (an environment variable)
        value = tuple(v.strip() for v in value.split(","))
    if not isinstance(value, (list, tuple)) or not value \
            or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{field}: expected a non-empty list of attribute names, got {value!r}")
    return tuple(value)


def _finite(value: Any, field: str, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: expected a finite number, got {value!r}")
    if nonneg and value < 0:
        raise ConfigError(f"{field}: must not be negative, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class OtlpMapping:
    """How OTLP attributes become event fields (the ``[otlp]`` settings; SPEC defaults).

    Build it from a settings table with :meth:`from_dict`; every mistake raises a
    :class:`~drift.core.params.ConfigError` naming the field (``otlp.prices.gpt-4o: …``).
    See the module docstring for what each setting does. ``label_values`` (keys lower-cased)
    and ``prices`` are normalised to plain dicts: treat them as read-only.
    """

    encoding: str = "otlp_proto"
    app_attribute: str = "service.name"
    intent_attribute: str = "intent"
    score_prefix: str = "quality.score."
    prompt_hash_attributes: tuple[str, ...] = ("gen_ai.prompt.hash", "genai.prompt.hash")
    prompt_version_attributes: tuple[str, ...] = ("gen_ai.prompt.version", "genai.prompt.version")
    model_attributes: tuple[str, ...] = ("gen_ai.response.model", "gen_ai.request.model")
    label_values: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LABEL_VALUES))
    prices: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    join_max_age: float = 3600.0
    join_max_entries: int = 100_000
    truncation_reasons: tuple[str, ...] = ("length", "max_tokens")

    def __post_init__(self):
        f = "otlp"
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"{f}.encoding: expected 'otlp_proto' or 'otlp_json', got {self.encoding!r}")
        for name in ("app_attribute", "intent_attribute", "score_prefix"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{f}.{name}: expected a non-empty string, got {v!r}")
        for name in ("prompt_hash_attributes", "prompt_version_attributes", "model_attributes",
                     "truncation_reasons"):
            object.__setattr__(self, name, _str_tuple(getattr(self, name), f"{f}.{name}"))
        labels = self.label_values
        if not isinstance(labels, Mapping):
            raise ConfigError(f"{f}.label_values: expected a table of label = score, got {labels!r}")
        norm: dict[str, float] = {}
        for k, v in labels.items():
            if not isinstance(k, str) or not k.strip():
                raise ConfigError(f"{f}.label_values: expected string labels, got {k!r}")
            norm[k.strip().lower()] = _finite(v, f"{f}.label_values.{k}")
        object.__setattr__(self, "label_values", norm)
        prices = self.prices
        if not isinstance(prices, Mapping):
            raise ConfigError(f"{f}.prices: expected a table of model = [input, output] USD per 1M tokens, "
                              f"got {prices!r}")
        pnorm: dict[str, tuple[float, float]] = {}
        for model, p in prices.items():
            field = f"{f}.prices.{model}"
            if not isinstance(model, str) or not model:
                raise ConfigError(f"{f}.prices: expected model names, got {model!r}")
            if isinstance(p, Mapping):
                unknown = set(p) - {"input", "output"}
                if unknown or "input" not in p or "output" not in p:
                    raise ConfigError(f"{field}: expected {{input = USD, output = USD}} per 1M tokens, got {dict(p)!r}")
                p = (p["input"], p["output"])
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise ConfigError(f"{field}: expected [input, output] USD per 1M tokens, got {p!r}")
            pnorm[model] = (_finite(p[0], f"{field}[0]", nonneg=True), _finite(p[1], f"{field}[1]", nonneg=True))
        object.__setattr__(self, "prices", pnorm)
        age = self.join_max_age
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age < 0:
            raise ConfigError(f"{f}.join_max_age: expected a non-negative duration, got {age!r}")
        object.__setattr__(self, "join_max_age", float(age))
        n = self.join_max_entries
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{f}.join_max_entries: expected a positive integer, got {n!r}")

    def __hash__(self) -> int:
        return hash(tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else v
                          for v in (getattr(self, f.name) for f in dataclasses.fields(self))))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, section: str = "otlp") -> OtlpMapping:
        """Build from a settings table (TOML lists and tables welcome).

        ``join_max_age`` takes a duration (``"1h"``, ``"30m"`` or seconds), ``join_max_entries``
        an integer or its digits, the attribute lists a list or a comma-separated string (so
        environment variables work). The service's own keys (:data:`SERVICE_KEYS`) are ignored;
        any other unknown key is an error.
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError(f"{section}: expected a table, got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known and k not in SERVICE_KEYS:
                raise ConfigError(f"{section}.{k}: unknown key (known: {', '.join(sorted(known | set(SERVICE_KEYS)))})")
        kw = {k: v for k, v in d.items() if k in known}
        if "join_max_age" in kw:
            kw["join_max_age"] = parse_duration(kw["join_max_age"], f"{section}.join_max_age")
        if "join_max_entries" in kw:
            kw["join_max_entries"] = as_int(kw["join_max_entries"], f"{section}.join_max_entries", lo=1)
        try:
            return cls(**kw)
        except ConfigError as exc:
            if section != "otlp":
                raise ConfigError(str(exc).replace("otlp.", f"{section}.", 1)) from None
            raise


# ---------------------------------------------------------------------------------------------
# decoding and encoding

_TRACE_ID_FIELDS = {
    "opentelemetry.proto.trace.v1.Span": frozenset({"trace_id", "span_id", "parent_span_id"}),
    "opentelemetry.proto.trace.v1.Span.Link": frozenset({"trace_id", "span_id"}),
    "opentelemetry.proto.logs.v1.LogRecord": frozenset({"trace_id", "span_id"}),
}
_HEX = re.compile(r"[0-9a-fA-F]*")


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: expected 'otlp_proto' or 'otlp_json', got {encoding!r}")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise OtlpError("otlp_decode", f"record value: expected bytes, got {type(value).__name__}")


def _looks_like_json(value: bytes) -> bool:
    head = value.lstrip()[:1]
    if head not in (b"{", b"["):
        return False
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def _proto_parse(value: bytes, cls: type) -> Any:
    msg = cls()
    msg.ParseFromString(value)
    return msg


def _hexid(obj: dict, names: tuple[str, str], nbytes: int, where: str) -> None:
    """Hex ids (the Collector) to base64 (protobuf's JSON); base64 ids of the right size stay."""
    for name in names:
        v = obj.get(name)
        if not isinstance(v, str) or not v:
            continue  # absent or empty; another type is reported by the parser
        if len(v) == 2 * nbytes and _HEX.fullmatch(v):
            obj[name] = base64.b64encode(bytes.fromhex(v)).decode("ascii")
            continue
        try:
            raw = base64.b64decode(v.replace("-", "+").replace("_", "/"), validate=True)
        except ValueError:
            raw = b""
        if len(raw) != nbytes:
            raise OtlpError("otlp_invalid", f"{where}.{name}: expected {2 * nbytes} hex digits, got {v[:40]!r}")


def _items(obj: Any, camel: str, snake: str) -> list[tuple[int, dict]]:
    """The (index, object) entries of a JSON list field (either spelling); others are the parser's to reject."""
    if not isinstance(obj, dict):
        return []
    v = obj.get(camel, obj.get(snake))
    return [(i, x) for i, x in enumerate(v) if isinstance(x, dict)] if isinstance(v, list) else []


_TRACE_ID = ("traceId", "trace_id")
_SPAN_ID = ("spanId", "span_id")


def _json_ids_to_base64(doc: dict, logs: bool) -> None:
    """Turn the Collector's hex ids into the base64 that protobuf's JSON parser expects."""
    if logs:
        for i, rl in _items(doc, "resourceLogs", "resource_logs"):
            for j, sl in _items(rl, "scopeLogs", "scope_logs"):
                for k, rec in _items(sl, "logRecords", "log_records"):
                    where = f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]"
                    _hexid(rec, _TRACE_ID, 16, where)
                    _hexid(rec, _SPAN_ID, 8, where)
        return
    for i, rs in _items(doc, "resourceSpans", "resource_spans"):
        for j, ss in _items(rs, "scopeSpans", "scope_spans"):
            for k, span in _items(ss, "spans", "spans"):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _hexid(span, _TRACE_ID, 16, where)
                _hexid(span, _SPAN_ID, 8, where)
                _hexid(span, ("parentSpanId", "parent_span_id"), 8, where)
                for n, link in _items(span, "links", "links"):
                    _hexid(link, _TRACE_ID, 16, f"{where}.links[{n}]")
                    _hexid(link, _SPAN_ID, 8, f"{where}.links[{n}]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _decode(value: Any, encoding: str, cls: type, logs: bool) -> Any:
    _check_encoding(encoding)
    raw = _as_bytes(value)
    what = "resourceLogs" if logs else "resourceSpans"
    other = "resourceSpans" if logs else "resourceLogs"
    if not raw:
        raise OtlpError("otlp_decode", "record value is empty")
    if encoding == "otlp_proto":
        if _looks_like_json(raw):
            raise OtlpError("otlp_encoding", "record value is JSON but encoding is otlp_proto (set encoding = otlp_json)")
        try:
            msg = _proto_parse(raw, cls)
        except Exception as exc:  # DecodeError, and whatever else the parser may raise
            raise OtlpError("otlp_decode", f"not an OTLP protobuf {cls.__name__}: {exc}") from None
    else:
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            if _proto_like(raw, cls, logs):
                raise OtlpError("otlp_encoding",
                                "record value is protobuf but encoding is otlp_json (set encoding = otlp_proto)") from None
            kind = "UTF-8" if isinstance(exc, UnicodeDecodeError) else "JSON"
            raise OtlpError("otlp_decode", f"record value is not valid {kind}: {exc}") from None
        if not isinstance(doc, dict):
            raise OtlpError("otlp_decode", f"record value: expected a JSON object, got {type(doc).__name__}")
        _json_ids_to_base64(doc, logs)
        try:
            msg = cls()
            json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
        except Exception as exc:  # ParseError, and whatever else the parser may raise
            raise OtlpError("otlp_invalid", f"JSON is not an OTLP {cls.__name__}: {exc}") from None
        if not _entries(msg, logs) and isinstance(doc, dict) and (other in doc or _snake(other) in doc):
            raise OtlpError("otlp_invalid", f"request holds {other}, not {what}: a payload of the other signal?")
    if not _entries(msg, logs):
        raise OtlpError("otlp_invalid", f"{what}: the request holds none")
    return msg


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _entries(msg: Any, logs: bool) -> Any:
    return msg.resource_logs if logs else msg.resource_spans


def _proto_like(raw: bytes, cls: type, logs: bool) -> bool:
    try:
        return bool(_entries(_proto_parse(raw, cls), logs))
    except Exception:
        return False


def decode_traces(value: bytes, encoding: str) -> ExportTraceServiceRequest:
    """Parse a span record value (``otlp_proto`` or ``otlp_json``).

    JSON ids may be hex (the Collector) or base64 (protobuf's own JSON), an id of another size
    is ``otlp_invalid``; field names camelCase or snake_case; enums numbers or names; 64-bit integers strings or numbers; unknown fields are
    ignored.

    Raises
    ------
    OtlpError
        The value is not a request of that encoding, or holds no ``resourceSpans``.
    ValueError
        ``encoding`` is not one of :data:`ENCODINGS` (a configuration mistake).
    """
    return _decode(value, encoding, ExportTraceServiceRequest, logs=False)


def decode_logs(value: bytes, encoding: str) -> ExportLogsServiceRequest:
    """Parse a log record value; as :func:`decode_traces`, for ``resourceLogs``."""
    return _decode(value, encoding, ExportLogsServiceRequest, logs=True)


_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    c = m.group(0)
    return _ESCAPES.get(c) or f"\\u{ord(c):04x}"


def _jstr(s: str) -> str:
    return '"' + _ESCAPE.sub(_escape, s) + '"'


def _jfloat(x: float) -> str:
    """A double as Go's ``strconv.FormatFloat(x, 'f'/'e', -1, 64)`` writes it (the Collector)."""
    if x != x:
        return '"NaN"'
    if math.isinf(x):
        return '"Infinity"' if x > 0 else '"-Infinity"'
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    r = repr(x)
    a = abs(x)
    if a < 1e-6 or a >= 1e21:
        mant, exp = r.split("e")
        sign, digits = exp[0], exp[1:]
        if sign == "-" and len(digits) == 2 and digits[0] == "0":
            digits = digits[1]
        return f"{mant}e{sign}{digits}"
    s = format(decimal.Decimal(r), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


_INT64 = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64})


def _jscalar(f: Any, v: Any, hexid: bool) -> str:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return _jstr(v)
    if t in _INT64:
        return f'"{v}"'
    if t == FieldDescriptor.TYPE_BYTES:
        return '"' + (v.hex() if hexid else base64.b64encode(v).decode("ascii")) + '"'
    if t == FieldDescriptor.TYPE_BOOL:
        return "true" if v else "false"
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _jfloat(v)
    return str(int(v))  # int32 kinds and enums (as numbers)


def _jmessage(msg: Any, out: list[str]) -> None:
    desc = msg.DESCRIPTOR
    ids = _TRACE_ID_FIELDS.get(desc.full_name, frozenset())
    out.append("{")
    first = True
    for f in desc.fields:
        is_msg = f.type == FieldDescriptor.TYPE_MESSAGE
        if f.is_repeated:
            values = getattr(msg, f.name)
            if not len(values):
                continue
        elif f.containing_oneof is not None:
            if not msg.HasField(f.name):
                continue
        elif is_msg:
            pass  # the Collector writes its non-nullable sub-messages always (resource, scope, status, body, value)
        elif f.has_presence:
            if not msg.HasField(f.name):
                continue
        elif getattr(msg, f.name) == f.default_value:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(f'"{f.json_name}":')
        if f.is_repeated:
            out.append("[")
            for i, v in enumerate(getattr(msg, f.name)):
                if i:
                    out.append(",")
                if is_msg:
                    _jmessage(v, out)
                else:
                    out.append(_jscalar(f, v, False))
            out.append("]")
        elif is_msg:
            _jmessage(getattr(msg, f.name), out)
        else:
            out.append(_jscalar(f, getattr(msg, f.name), f.name in ids))
    out.append("}")


def encode_json(request: Any) -> bytes:
    """Write an OTLP request as ``otlp_json``, byte for byte as the Collector's pdata marshaler.

    Compact protobuf JSON with camelCase names in ``.proto`` declaration order, trace and span
    ids as lowercase hex, enums as numbers, 64-bit integers as strings, other bytes as base64,
    doubles in Go's shortest form; default scalars and empty lists are left out, while the
    sub-messages the Collector always writes (``resource``, ``scope``, ``status``, ``body``,
    ``value``) are written even when empty.
    """
    out: list[str] = []
    _jmessage(request, out)
    return "".join(out).encode("utf-8")


def split_by_trace(request: Any) -> dict[bytes, Any]:
    """One request of the same type per trace id (in order of first appearance).

    Each piece keeps the resource, scope and schema URLs of its records. Log records without
    a trace id go to the piece under ``b""``.
    """
    logs = isinstance(request, ExportLogsServiceRequest)
    if not logs and not isinstance(request, ExportTraceServiceRequest):
        raise TypeError(f"request: expected an ExportTraceServiceRequest or ExportLogsServiceRequest, "
                        f"got {type(request).__name__}")
    pieces: dict[bytes, Any] = {}
    last: dict[bytes, tuple[int, Any]] = {}  # trace id -> (source resource index, its copy in the piece)
    for i, rs in enumerate(_entries(request, logs)):
        for ss in (rs.scope_logs if logs else rs.scope_spans):
            current: dict[bytes, Any] = {}
            for rec in (ss.log_records if logs else ss.spans):
                tid = bytes(rec.trace_id)
                target = current.get(tid)
                if target is None:
                    piece = pieces.get(tid)
                    if piece is None:
                        piece = pieces[tid] = type(request)()
                    held = last.get(tid)
                    if held is None or held[0] != i:
                        prs = _entries(piece, logs).add()
                        if rs.HasField("resource"):
                            prs.resource.CopyFrom(rs.resource)
                        prs.schema_url = rs.schema_url
                        held = last[tid] = (i, prs)
                    pss = (held[1].scope_logs if logs else held[1].scope_spans).add()
                    if ss.HasField("scope"):
                        pss.scope.CopyFrom(ss.scope)
                    pss.schema_url = ss.schema_url
                    target = current[tid] = pss.log_records if logs else pss.spans
                target.add().CopyFrom(rec)
    return pieces


# ---------------------------------------------------------------------------------------------
# mapping

_RETRIEVAL_SCORE = re.compile(r"retrieval\.documents\.(\d+)\.document\.score")
_INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_FINISH_REASONS = "gen_ai.response.finish_reasons"
_RESPONSE_ID = "gen_ai.response.id"
_INDEX_VERSION = "retrieval.index_version"
_EVAL_NAME = "gen_ai.evaluation.name"
_EVAL_VALUE = "gen_ai.evaluation.score.value"
_EVAL_LABEL = "gen_ai.evaluation.score.label"
_INVALID = object()  # an attribute present with a value of the wrong type


@dataclasses.dataclass
class MapResult:
    """Events mapped from one request (or released by a join or an expiry), with counts.

    Attributes
    ----------
    events : list of (str, dict)
        ``(stream, event)``, the stream ``"scores"`` or ``"retrieval"``, the event a SPEC
        ScoreEvent or RetrievalEvent dict (``ts`` in Unix seconds).
    counts : collections.Counter
        What happened, by name (see the module docstring).
    """

    events: list[tuple[str, dict]] = dataclasses.field(default_factory=list)
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def extend(self, other: MapResult) -> MapResult:
        """Append another result's events and add its counts; returns ``self``."""
        self.events.extend(other.events)
        self.counts.update(other.counts)
        return self


def _attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    """Attribute key -> AnyValue; the first of a duplicated key wins (as the Collector's Map.Get)."""
    d: dict[str, Any] = {}
    for kv in kvs:
        if kv.key not in d:
            d[kv.key] = kv.value
    return d


def _number(v: Any) -> float | None:
    """An int or finite double attribute value as float, else None (bool, string, NaN, …)."""
    kind = v.WhichOneof("value")
    if kind == "double_value":
        x = v.double_value
        return x if math.isfinite(x) else None
    if kind == "int_value":
        return float(v.int_value)
    return None


def _text(v: Any) -> Any:
    """A non-empty string attribute value; None when empty; _INVALID when of another type."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value or None
    return _INVALID


def _strings(v: Any) -> list[str] | None:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return [v.string_value]
    if kind == "array_value":
        out = [x.string_value for x in v.array_value.values if x.WhichOneof("value") == "string_value"]
        return out if len(out) == len(v.array_value.values) else None
    return None


def _nanos(t: int) -> float | None:
    """Unix nanoseconds to seconds, None outside the engine's time range (0, far future)."""
    s = t / 1e9
    return s if MIN_TS <= s <= MAX_TS else None


class OtlpMapper:
    """Maps OTLP span and log requests to ScoreEvents and RetrievalEvents, joining evaluations.

    Parameters
    ----------
    mapping : OtlpMapping
        The attribute names, label values, prices and join bounds.

    Notes
    -----
    Deterministic: the same requests in the same order give the same events, counts and state.
    Call :meth:`expire` with the event-time watermark now and then (the service does it with
    its checkpoints) so that evaluations whose span never comes are dropped and counted.
    """

    def __init__(self, mapping: OtlpMapping | None = None):
        self.mapping = mapping if mapping is not None else OtlpMapping()
        self.buffer = JoinBuffer(self.mapping.join_max_entries, self.mapping.join_max_age)
        #: the latest event time seen (span end, log record time), Unix seconds; 0 before any
        self.watermark = 0.0

    # -- spans -------------------------------------------------------------------------------

    def spans(self, request: ExportTraceServiceRequest) -> MapResult:
        """Map every span of a trace request; releases evaluations that were waiting for them."""
        res = MapResult()
        for rs in request.resource_spans:
            rattrs = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self._span(span, rattrs, res)
        self._evicted(res)
        return res

    def _lookup(self, names: tuple[str, ...], attrs: dict, rattrs: dict, counts: collections.Counter) -> str | None:
        for source in (attrs, rattrs):
            for name in names:
                v = source.get(name)
                if v is None:
                    continue
                s = _text(v)
                if s is _INVALID:
                    counts["attributes_invalid"] += 1
                elif s is not None:
                    return s
        return None

    def _span(self, span: Any, rattrs: dict, res: MapResult) -> None:
        m, counts = self.mapping, res.counts
        counts["spans"] += 1
        ts = _nanos(span.end_time_unix_nano)
        if ts is None or len(span.trace_id) != 16 or not any(span.trace_id):
            counts["records_invalid"] += 1
            return
        self.watermark = max(self.watermark, ts)
        attrs = _attrs(span.attributes)
        trace_id = span.trace_id.hex()

        # the context every event of this span (and every evaluation of it) carries
        app = self._lookup((m.app_attribute,), rattrs, attrs, counts) or "default"
        intent = self._lookup((m.intent_attribute,), attrs, {}, counts) or "all"
        ctx: dict[str, Any] = {"ts": ts, "app": app, "intent": intent}
        for name, names in (("prompt_hash", m.prompt_hash_attributes),
                            ("prompt_version", m.prompt_version_attributes),
                            ("model", m.model_attributes)):
            v = self._lookup(names, attrs, rattrs, counts)
            if v is not None:
                ctx[name] = v
        ctx["trace_id"] = trace_id
        cost = self._cost(attrs, rattrs, counts)
        if cost is not None:
            ctx["cost_usd"] = cost

        scores: list[tuple[str, float]] = []
        docs: list[tuple[int, float]] = []
        prefix, genai = m.score_prefix, False
        for key, v in attrs.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                x = _number(v)
                if x is None:
                    counts["records_invalid"] += 1
                else:
                    scores.append((key[len(prefix):], x))
            elif key.startswith("retrieval.documents."):
                mt = _RETRIEVAL_SCORE.fullmatch(key)
                if mt:
                    x = _number(v)
                    if x is None:
                        counts["records_invalid"] += 1
                    else:
                        docs.append((int(mt.group(1)), x))
            if not genai and (key.startswith("gen_ai.") or key.startswith("genai.")):
                genai = True

        reasons_v = attrs.get(_FINISH_REASONS)
        if reasons_v is not None:
            reasons = _strings(reasons_v)
            if reasons is None:
                counts["attributes_invalid"] += 1
            elif reasons:
                cut = any(r in m.truncation_reasons for r in reasons)
                scores.append(("truncated", 1.0 if cut else 0.0))
                counts["truncated"] += cut

        events = res.events
        for dim, x in scores:
            events.append(("scores", _score_event(ctx, dim, x)))
        if docs:
            ev: dict[str, Any] = {"ts": ts, "app": app, "intent": intent, "trace_id": trace_id,
                                  "scores": sorted((x for _, x in docs), reverse=True)}
            iv = attrs.get(_INDEX_VERSION)
            if iv is not None:
                s = _text(iv)
                if s is _INVALID:
                    counts["attributes_invalid"] += 1
                elif s is not None:
                    ev["index_version"] = s
            events.append(("retrieval", ev))
        counts["score_events"] += len(scores)
        counts["retrieval_events"] += bool(docs)
        counts["spans_mapped" if scores or docs else "spans_unmapped"] += 1

        # keep the span's context for evaluations that come later, release those that came first
        keys = []
        if len(span.span_id) == 8 and any(span.span_id):
            keys.append((trace_id, "span:" + span.span_id.hex()))
        rid = attrs.get(_RESPONSE_ID)
        if rid is not None:
            s = _text(rid)
            if s is _INVALID:
                counts["attributes_invalid"] += 1
            elif s is not None:
                keys.append(("", "resp:" + s))
        keep = genai or bool(scores) or m.intent_attribute in attrs
        for tid, key in keys:
            if keep:
                waiting = self.buffer.put_left(tid, key, ts, ctx)
            else:
                # not a span one evaluates, but someone evaluated it: join, and keep it from now on
                waiting = self.buffer.pop_right(tid, key)
                if waiting:
                    self.buffer.put_left(tid, key, ts, ctx)
            for right in waiting:
                events.append(("scores", _score_event(ctx, right["dimension"], right["score"])))
                counts["evaluations_joined"] += 1
                counts["score_events"] += 1

    def _cost(self, attrs: dict, rattrs: dict, counts: collections.Counter) -> float | None:
        prices = self.mapping.prices
        if not prices:
            return None
        price = None
        for source in (attrs, rattrs):
            for name in self.mapping.model_attributes:
                v = source.get(name)
                if v is not None and v.WhichOneof("value") == "string_value" and v.string_value in prices:
                    price = prices[v.string_value]
                    break
            if price is not None:
                break
        if price is None:
            return None
        tokens = []
        for names in (_INPUT_TOKENS, _OUTPUT_TOKENS):
            n = None
            for name in names:
                v = attrs.get(name)
                if v is None:
                    continue
                x = _number(v)
                if x is None or x < 0:
                    counts["attributes_invalid"] += 1
                    continue
                n = x
                break
            tokens.append(n)
        if tokens[0] is None and tokens[1] is None:
            return None
        return ((tokens[0] or 0.0) * price[0] + (tokens[1] or 0.0) * price[1]) / 1e6

    # -- evaluation events -------------------------------------------------------------------

    def logs(self, request: ExportLogsServiceRequest) -> MapResult:
        """Map the ``gen_ai.evaluation.result`` events of a log request (joined to their spans)."""
        res = MapResult()
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    self._log(rec, res)
        self._evicted(res)
        return res

    def _log(self, rec: Any, res: MapResult) -> None:
        counts = res.counts
        counts["logs"] += 1
        attrs = _attrs(rec.attributes)
        if rec.event_name != EVALUATION_EVENT:
            ev_name = attrs.get("event.name")
            if rec.event_name or ev_name is None or _text(ev_name) != EVALUATION_EVENT:
                counts["logs_ignored"] += 1
                return
        counts["evaluations"] += 1
        name_v = attrs.get(_EVAL_NAME)
        dim = _text(name_v) if name_v is not None else None
        if dim is None or dim is _INVALID:
            counts["records_invalid"] += 1
            return
        score = None
        value_v = attrs.get(_EVAL_VALUE)
        if value_v is not None:
            score = _number(value_v)
        if score is None:
            label_v = attrs.get(_EVAL_LABEL)
            label = _text(label_v) if label_v is not None else None
            if isinstance(label, str):
                score = self.mapping.label_values.get(label.strip().lower())
        if score is None:
            counts["records_invalid"] += 1
            return
        rid_v = attrs.get(_RESPONSE_ID)
        rid = _text(rid_v) if rid_v is not None else None
        if isinstance(rid, str):
            tid, key = "", "resp:" + rid
        elif len(rec.trace_id) == 16 and any(rec.trace_id) and len(rec.span_id) == 8 and any(rec.span_id):
            tid, key = rec.trace_id.hex(), "span:" + rec.span_id.hex()
        else:
            counts["records_invalid"] += 1
            return
        nanos = rec.time_unix_nano or rec.observed_time_unix_nano
        if nanos:
            t = _nanos(nanos)
            if t is None:
                counts["records_invalid"] += 1
                return
            self.watermark = max(self.watermark, t)
        elif self.watermark > 0:
            t = self.watermark
        else:
            counts["records_invalid"] += 1
            return
        ctx = self.buffer.put_right(tid, key, t, {"dimension": dim, "score": score})
        if ctx is None:
            counts["evaluations_buffered"] += 1
        else:
            res.events.append(("scores", _score_event(ctx, dim, score)))
            counts["evaluations_joined"] += 1
            counts["score_events"] += 1

    # -- the join buffer ---------------------------------------------------------------------

    def expire(self, watermark: float) -> MapResult:
        """Drop buffered spans and evaluations older than ``watermark - join_max_age``.

        Emits no events; counts ``spans_expired`` and ``evaluations_dropped`` (evaluations
        whose span never came, including those evicted by the size bound).
        """
        res = MapResult()
        lefts, rights = self.buffer.expire(watermark)
        if lefts:
            res.counts["spans_expired"] += lefts
        if rights:
            res.counts["evaluations_dropped"] += len(rights)
        return res

    def _evicted(self, res: MapResult) -> None:
        lefts, rights = self.buffer.take_evicted()
        if lefts:
            res.counts["spans_evicted"] += lefts
        if rights:
            res.counts["evaluations_dropped"] += len(rights)

    def state_dict(self) -> dict:
        """The mapper's state as a JSON document (the join buffer, the watermark)."""
        return {"version": 1, "watermark": self.watermark, "buffer": self.buffer.state_dict()}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the join bounds of the current mapping apply from now on."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError(f"OTLP mapper state: expected version 1, got {state!r:.80}")
        buf = JoinBuffer.from_state(state["buffer"])
        buf.max_entries = self.mapping.join_max_entries
        buf.max_age = self.mapping.join_max_age
        self.buffer = buf
        self.watermark = float(state.get("watermark", 0.0))

    def __len__(self) -> int:
        return len(self.buffer)


def _score_event(ctx: Mapping[str, Any], dimension: str, score: float) -> dict:
    ev: dict[str, Any] = {"ts": ctx["ts"], "dimension": dimension, "score": score}
    for k in ("app", "intent", "prompt_hash", "prompt_version", "model", "trace_id", "cost_usd"):
        if k in ctx:
            ev[k] = ctx[k]
    return ev
