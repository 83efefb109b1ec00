"""Property-based tests (hypothesis): the decoder, the engine's event-time screening and the
config loader never raise on hostile input and keep their documented contracts.

1. Decoder: arbitrary bytes, arbitrary JSON, near-valid events (one field mutated, raw ``1e999``,
   huge/tiny numbers, unicode, deep nesting, empty arrays, good and bad events mixed in one
   array, times out of range). Every message is either accepted whole or rejected exactly once
   with a documented error class and a reason; accepted values are finite and inside their
   declared scales; a batch decodes like its messages one by one.
2. Engine: late, out-of-order, duplicated and far-future events are screened as the engine
   docstring says (checked against a sequential reference model); the set of alert ids of a
   fixed valid stream does not depend on how it is split into batches.
3. Config: random TOML documents (plausible keys, random values) and ``DRIFT_*`` environment
   variables give ``Settings`` or a ``ConfigError`` whose message starts with a field path that
   exists in the input.

Bugs these properties found were fixed in 79efb33 and are pinned below each section as plain
regression tests (named for the bug). Nothing is steered around any more: every property runs
on its full input space.
"""

from __future__ import annotations

import json
import math
import string
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from drift.core.config import DEFAULT_RULES, DEFAULT_SERVICE, DEFAULT_TOPICS, ConfigError, load_settings
from drift.core.engine import Engine
from drift.core.events import MAX_TS, MIN_TS

# an embedding value beyond float32 range is rejected (NonFiniteValue) after numpy warns on the cast
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

DECODER_CLASSES = {"MalformedJSON", "SchemaError", "BadTimestamp", "NonFiniteValue", "OutOfScale",
                   "BadEmbedding", "OversizedMessage", "UnknownEventKind"}

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# a 1-10 judge and a lower-is-better dimension, besides the predeclared flags/checks
_DIMS = {"dimensions": {"helpfulness": {"scale": [1, 10]}, "toxicity": {"higher_is_better": False}}}
SETTINGS = load_settings(overrides=_DIMS)
DECODER = Engine(SETTINGS).decoder()
SMALL_DECODER = Engine(load_settings(overrides={**_DIMS, "engine": {"max_message_bytes": 400}})).decoder()

T0 = 1767607200.0  # 2026-01-05T10:00:00Z
DAY = 86400.0
NOW = T0 + 30 * DAY  # the engines' wall clock in these tests (far-future events are judged against it)


# ---------------------------------------------------------------------------------------------
# JSON text with raw tokens (1e999, NaN, …) that json.dumps cannot write


class Raw(str):
    """A token written verbatim into the JSON text."""


def dump(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{dump(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def enc(v) -> bytes:
    return dump(v).encode("utf-8", "surrogatepass")


FIELDS = ["ts", "app", "intent", "stream", "trace_id", "dimension", "score", "prompt_hash",
          "prompt_version", "model", "cost_usd", "scores", "index_version", "text", "embedding",
          "embedding_b64", "prompt", "response"]
DIMENSIONS = ["relevance", "format", "helpfulness", "toxicity", "refusal", "hallucination",
              "safety", "format_valid", "ünïcödé-dim", ""]

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), ch, max_size=6),
    max_leaves=25)

RAW_NUMBERS = [Raw(x) for x in ("1e999", "-1e999", "1e-400", "5e-324", "1.7976931348623157e308",
                                "-0", "-0.0", "1" + "0" * 40, "-" + "9" * 30, "NaN", "Infinity",
                                "-Infinity", "0.1e1", "1E2", "00", "+1", ".5", "1.", "0x10")]
BAD_TIMES = ["1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
             "0001-01-01T00:00:00+14:00", "2026-02-30T00:00:00Z", "2026-01-05 10:00:00",
             "2026-01-05T25:00:00Z", "", "now", "1767607200", "2026-01-05T10:00:00+24:00",
             -1, 0, 4102444800, 4102444799.999, 1e12, 946684799.999, 946684800, True, None, [], {}]

good_times = (st.floats(MIN_TS, MAX_TS - 1, allow_nan=False)
              | st.integers(int(MIN_TS), int(MAX_TS) - 1)
              | st.builds(lambda s, tz: _rfc3339(s, tz), st.floats(MIN_TS + DAY, MAX_TS - DAY),
                          st.sampled_from(["Z", "+00:00", "-14:00", "+05:30", ""])))


def _rfc3339(t: float, tz: str) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + tz


labels = st.text(max_size=10) | st.sampled_from(["support-bot", "billing", "日本語", "a/b", "\u0000", "🙂"])


@st.composite
def score_event(draw):
    dim = draw(st.sampled_from(DIMENSIONS))
    spec = SETTINGS.dimension(dim)
    if spec.binary:
        score = draw(st.sampled_from([0, 1, 0.0, 1.0]))
    else:
        score = draw(st.floats(spec.lo, spec.hi, allow_nan=False))
    ev = {"ts": draw(good_times), "dimension": dim, "score": score}
    for k in ("app", "intent", "prompt_hash", "model", "trace_id", "prompt_version"):
        if draw(st.booleans()):
            ev[k] = draw(labels)
    if draw(st.booleans()):
        ev["cost_usd"] = draw(st.floats(0, 10))
    return ev


@st.composite
def retrieval_event(draw):
    lo, hi = SETTINGS.retrieval_scale
    ev = {"ts": draw(good_times)}
    if draw(st.booleans()):
        ev["scores"] = sorted(draw(st.lists(st.floats(lo, hi), min_size=1, max_size=6)), reverse=True)
    else:
        ev["score"] = draw(st.floats(lo, hi))
    for k in ("app", "intent", "index_version", "trace_id"):
        if draw(st.booleans()):
            ev[k] = draw(labels)
    return ev


@st.composite
def query_event(draw):
    ev = {"ts": draw(good_times)}
    which = draw(st.sampled_from(["text", "embedding", "b64", "text+embedding"]))
    if "text" in which:
        ev["text"] = draw(st.text(max_size=40))
    if "embedding" in which:
        ev["embedding"] = draw(st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4))
    if which == "b64":
        import base64
        v = np.array(draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=4)), "<f4")
        ev["embedding_b64"] = base64.b64encode(v.tobytes()).decode()
    return ev


valid_event = score_event() | retrieval_event() | query_event()


@st.composite
def mutated_event(draw):
    """A valid event with one field broken (or one extra oddity added)."""
    ev = dict(draw(valid_event))
    how = draw(st.sampled_from(["wrong_type", "raw_number", "raw_number", "drop", "bad_time", "unicode_extra",
                                "deep_extra", "stream", "big_extra", "empty_list", "out_of_scale",
                                "out_of_scale", "bad_vector"]))
    key = draw(st.sampled_from(sorted(ev) + ["score", "scores", "embedding", "cost_usd"]))
    numeric = [k for k in ("score", "scores", "embedding", "cost_usd", "ts") if k in ev] or ["ts"]
    if how == "wrong_type":
        ev[key] = draw(json_values)
    elif how == "raw_number":
        k = draw(st.sampled_from(numeric))
        tok = draw(st.sampled_from(RAW_NUMBERS))
        if isinstance(ev[k], list) and ev[k]:
            ev[k] = list(ev[k])
            ev[k][draw(st.integers(0, len(ev[k]) - 1))] = tok
        else:
            ev[k] = tok
    elif how == "out_of_scale":
        if "dimension" in ev:
            spec = SETTINGS.dimension(ev["dimension"])
            ev["score"] = draw(st.floats(spec.hi, 1e300, exclude_min=True) | st.floats(-1e300, spec.lo, exclude_max=True)
                               | (st.floats(0.001, 0.999) if spec.binary else st.nothing()))
        elif "scores" in ev or "score" in ev:
            ev["scores"] = [draw(st.floats(1.0, 1e300, exclude_min=True) | st.floats(-1e300, -1.0, exclude_max=True))]
        else:
            ev["embedding"] = [1e39, 0.0, 0.0, 0.0]  # overflows float32
    elif how == "bad_vector":
        import base64
        ev.pop("embedding", None)
        ev["embedding_b64"] = draw(st.sampled_from([
            "***", "abc", base64.b64encode(b"abc").decode(),
            base64.b64encode(np.array([np.nan, 0, 0, 0], "<f4").tobytes()).decode(),
            base64.b64encode(np.array([np.inf, 0, 0, 0], "<f4").tobytes()).decode()]) | st.text(max_size=8))
    elif how == "drop":
        ev.pop(key, None)
    elif how == "bad_time":
        ev["ts"] = draw(st.sampled_from(BAD_TIMES))
    elif how == "unicode_extra":
        ev[draw(st.sampled_from(["prompt", "response", "trace_id", "text"]))] = draw(st.text())
    elif how == "deep_extra":
        d = draw(st.integers(1, 200) | st.integers(900, 3000))  # msgspec's recursion limit is ~1000
        ev["prompt"] = Raw("[" * d + "]" * d)
    elif how == "stream":
        ev["stream"] = draw(st.sampled_from(["scores", "retrieval", "queries", "logs", "", 7]))
    elif how == "big_extra":
        ev["response"] = "x" * draw(st.integers(300, 2000))
    elif how == "empty_list":
        ev[draw(st.sampled_from(["scores", "embedding"]))] = []
    return ev


@st.composite
def message(draw):
    kind = draw(st.sampled_from(["bytes", "json", "valid", "valid", "mutated", "mutated", "mutated", "mutated",
                                 "array", "array_mixed", "array_mixed", "empty_array", "concat", "none",
                                 "utf8_noise"]))
    if kind == "bytes":
        return draw(st.binary(max_size=120))
    if kind == "json":
        return enc(draw(json_values))
    if kind == "valid":
        return enc(draw(valid_event))
    if kind == "mutated":
        return enc(draw(mutated_event()))
    if kind == "array":
        return enc(draw(st.lists(valid_event, min_size=1, max_size=5)))
    if kind == "array_mixed":
        good = draw(st.lists(valid_event, min_size=1, max_size=4))
        bad = draw(mutated_event() | json_values)
        good.insert(draw(st.integers(0, len(good))), bad)
        return enc(good)
    if kind == "empty_array":
        return b"[]"
    if kind == "concat":  # two documents in one message: malformed as a whole
        a, b = draw(valid_event), draw(valid_event)
        return enc(a) + draw(st.sampled_from([b"", b" ", b"\r", b"\t"])) + enc(b)
    if kind == "none":
        return None
    text = dump(draw(valid_event))
    cut = draw(st.integers(0, len(text)))
    return text[:cut].encode("utf-8", "surrogatepass") + draw(st.binary(max_size=4))


messages = st.lists(message(), min_size=1, max_size=8)


# ---------------------------------------------------------------------------------------------
# invariants


def _outcome(d, m):
    """('ok', n_events) or ('rejected', class, event index) for message ``m`` of a decoded batch."""
    rej = [r for r in d.rejected if r.message == m]
    if rej:
        return ("rejected", rej[0].error_class, rej[0].event)
    n = sum(int((getattr(d, k).msg == m).sum()) for k in ("scores", "retrieval", "queries"))
    return ("ok", n)


def _loads(raw):
    """json.loads with room for the deeply nested messages the strategies make."""
    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return json.loads(raw)
    finally:
        sys.setrecursionlimit(limit)


def check_decoded(values, d, dec, kind=None):
    n = len(values)
    assert d.n_messages == n
    rejected = [r.message for r in d.rejected]
    assert len(rejected) == len(set(rejected)), f"a message rejected twice: {d.rejected}"
    for r in d.rejected:
        assert 0 <= r.message < n
        assert r.error_class in DECODER_CLASSES, r
        assert isinstance(r.reason, str) and r.reason.strip(), r
        assert r.event is None or (isinstance(r.event, int) and r.event >= 0), r
    accepted = set()
    for name in ("scores", "retrieval", "queries"):
        b = getattr(d, name)
        accepted |= set(b.msg.tolist())
        if kind is not None and name != kind:
            assert len(b) == 0, f"kind={kind} but {name} has events"
        if len(b):
            assert np.isfinite(b.ts).all() and (b.ts >= MIN_TS).all() and (b.ts < MAX_TS).all()
    assert not accepted & set(rejected), "a message both accepted and rejected"
    assert accepted | set(rejected) == set(range(n)), (
        f"messages neither accepted nor rejected: {sorted(set(range(n)) - accepted - set(rejected))}")
    # accepted values are finite and inside their declared scales
    s = d.scores
    for dim, score in zip(s.dimension.tolist(), s.score.tolist()):
        spec = SETTINGS.dimension(dim)
        assert math.isfinite(score) and spec.lo <= score <= spec.hi, (dim, score)
        if spec.binary:
            assert score in (0.0, 1.0), (dim, score)
    lo, hi = SETTINGS.retrieval_scale
    assert np.isfinite(d.retrieval.top1).all()
    assert ((d.retrieval.top1 >= lo) & (d.retrieval.top1 <= hi)).all()
    q = d.queries
    if len(q):
        assert np.isfinite(q.vectors[q.has_vector]).all()
        for i, e in enumerate(q.objs):
            assert q.has_vector[i] or e.text is not None
    # never half-accepted: an accepted message contributes all of its events, in order
    for m in accepted:
        doc = _loads(values[m])
        want = len(doc) if isinstance(doc, list) else 1
        idx = sorted(int(i) for k in ("scores", "retrieval", "queries")
                     for i in getattr(d, k).idx[getattr(d, k).msg == m])
        assert idx == (list(range(want)) if isinstance(doc, list) else [-1]), (m, values[m][:200], idx)
    for r in d.rejected:
        if r.event is not None:
            try:
                doc = _loads(values[r.message])
            except ValueError:
                continue
            assert isinstance(doc, list) and r.event < len(doc), r


def check_batch_equals_one_by_one(values, d, dec, kind=None):
    """The message is the unit of acceptance: its fate must not depend on its neighbours."""
    for m, raw in enumerate(values):
        alone = dec.decode([raw], kind=kind)
        assert _outcome(d, m) == _outcome(alone, 0), (m, raw[:200] if raw else raw)


# ---------------------------------------------------------------------------------------------
# 1. decoder properties


@FUZZ
@given(st.lists(st.binary(max_size=200) | st.none(), min_size=1, max_size=10))
def test_decoder_arbitrary_bytes_never_raise(values):
    d = DECODER.decode(values)
    check_decoded(values, d, DECODER)


@FUZZ
@given(st.lists(json_values.map(enc), min_size=1, max_size=8), st.sampled_from([None, *("scores", "retrieval", "queries")]))
def test_decoder_arbitrary_json_never_raises(values, kind):
    d = DECODER.decode(values, kind=kind)
    check_decoded(values, d, DECODER, kind)


@settings(FUZZ, max_examples=200)
@given(messages, st.sampled_from([None, "scores", "retrieval", "queries"]), st.booleans())
def test_decoder_near_valid_messages(values, kind, small):
    dec = SMALL_DECODER if small else DECODER
    d = dec.decode(values, kind=kind)
    for r in d.rejected:
        event(r.error_class)
    event(f"accepted events: {min(d.n_events, 3)}+")
    check_decoded(values, d, dec, kind)
    check_batch_equals_one_by_one(values, d, dec, kind)
    # whatever the decoder accepted, the engine takes without raising
    alerts, late = Engine(SETTINGS, now=lambda: NOW).process(d)
    for r in late:
        assert r.error_class in ("LateEvent", "FutureEvent") and r.reason and r.raw
        assert r.message not in {x.message for x in d.rejected}


@FUZZ
@given(st.lists(valid_event, min_size=1, max_size=6), st.data())
def test_valid_events_are_accepted_and_one_bad_element_rejects_the_whole_array(events, data):
    good = enc(events)
    d = DECODER.decode([good])
    assert d.rejected == [] and d.n_events == len(events)
    bad = data.draw(mutated_event())
    alone = DECODER.decode([enc(bad)])
    assume(alone.rejected)  # some mutations leave a valid event
    at = data.draw(st.integers(0, len(events)))
    mixed = events[:at] + [bad] + events[at:]
    d = DECODER.decode([enc(mixed), good])
    assert d.n_events == len(events), "an array with a bad element contributed events"
    (r,) = d.rejected
    assert r.message == 0 and r.error_class in DECODER_CLASSES and r.reason
    # the reason is the one of the first bad element, the mutated one (malformed JSON has no elements)
    assert r.event == (None if r.error_class == "MalformedJSON" else at), (r, bad)


# -- decoder regressions (found by the properties above, fixed in 79efb33) -----------------------

_G = lambda s: enc({"ts": T0, "app": "a", "intent": "i", "dimension": "relevance", "score": s})  # noqa: E731


def test_blank_message_does_not_shift_events_between_messages():
    """Was: the decode_lines fast path read the batch as one stream of JSON values, so '{…} {…}'
    next to an empty message was accepted and its second event attributed to the empty one."""
    values = [_G(0.1) + b" " + _G(0.2), b"", b" \r\n"]
    d = DECODER.decode(values)
    assert [_outcome(d, m) for m in range(3)] == [_outcome(DECODER.decode([v]), 0) for v in values]
    assert [r.error_class for r in d.rejected] == ["MalformedJSON"] * 3


def test_messages_only_valid_when_glued_are_rejected_even_if_counts_match():
    """Was: '[ev,', 'ev]', 'evev' (three values when glued, one per message) were accepted."""
    values = [b"[" + _G(0.1) + b",", _G(0.2) + b"]", _G(0.3) + _G(0.4)]
    d = DECODER.decode(values)
    assert [r.error_class for r in d.rejected] == ["MalformedJSON"] * 3
    assert d.n_events == 0


def test_embedding_width_of_a_message_does_not_depend_on_its_neighbours():
    """Was: without a golden set the widest embedding of the batch was required of all."""
    a = enc({"ts": T0, "embedding": [0.1, 0.2]})
    b = enc({"ts": T0, "embedding": [0.1, 0.2, 0.3]})
    assert DECODER.decode([a]).rejected == [] and DECODER.decode([b]).rejected == []
    assert DECODER.decode([a, b]).rejected == []


@pytest.mark.parametrize("field", ["text", "app", "dimension", "trace_id", "embedding_b64"])
def test_invalid_utf8_in_a_string_field_is_rejected_not_raised(field):
    """Was: msgspec's UnicodeDecodeError escaped decode(): one Latin-1 record made `drift serve`
    exit 1 on every restart (a crash loop) and `drift replay` exit 1."""
    ev = {"ts": T0, "dimension": "relevance", "score": 0.5} if field != "text" else {"ts": T0}
    raw = enc({**ev, field: "caf@"}).replace(b"caf@", b"caf\xe9")
    d = DECODER.decode([raw, _G(0.5)])
    assert [(r.message, r.error_class) for r in d.rejected] == [(0, "MalformedJSON")]
    assert d.n_events == 1


@pytest.mark.parametrize("depth", [1000, 5000])
@pytest.mark.parametrize("where", ["unknown field", "top level"])
def test_deeply_nested_message_is_rejected_not_raised(depth, where):
    """Was: ~2 KB nested ~1000 deep raised RecursionError out of decode() (a poison record that
    stopped `drift serve`)."""
    nest = b"[" * depth + b"]" * depth
    raw = _G(0.5)[:-1] + b',"prompt":' + nest + b"}" if where == "unknown field" else nest
    d = DECODER.decode([raw, _G(0.5)])
    assert len(d.rejected) == 1 and d.rejected[0].error_class in DECODER_CLASSES and d.rejected[0].reason
    assert d.n_events == 1


def test_rejection_reasons_show_plain_numbers():
    """Was: reasons (and the DLQ's x-error-message) read 'score np.float64(3.0) is outside …'."""
    d = DECODER.decode([_G(3.0), enc({"ts": 99999999999, "dimension": "x", "score": 0.5}),
                        enc({"ts": T0, "scores": [3.0]})])
    assert len(d.rejected) == 3
    for r in d.rejected:
        assert "np." not in r.reason, r.reason


# ---------------------------------------------------------------------------------------------
# 2. engine: event-time screening against a sequential reference model

LATENESS = SETTINGS.allowed_lateness  # 600 s
FUTURE = SETTINGS.max_future  # 1 day
SERIES = [("a", "i", "relevance"), ("a", "j", "relevance"), ("b", "i", "refusal")]


@st.composite
def screened_stream(draw):
    """Score events with in-order steps, jitter within lateness, late events, exact duplicates,
    lateness boundaries, jumps ahead in event time that stay behind the wall clock, and events
    ahead of the wall clock by more (or exactly) max_future."""
    n = draw(st.integers(5, 60))
    cur = T0
    events: list[dict] = []
    for _ in range(n):
        op = draw(st.sampled_from(["step", "step", "step", "jitter", "late", "dup", "boundary", "jump",
                                   "future", "future_edge"]))
        sid = draw(st.integers(0, len(SERIES) - 1))
        if op == "dup" and events:
            events.append(dict(draw(st.sampled_from(events))))
            continue
        if op == "future":
            t = NOW + FUTURE + draw(st.floats(0.001, 30 * DAY))
        elif op == "future_edge":
            t = NOW + FUTURE + draw(st.sampled_from([-0.001, 0.0, 0.001]))
        elif op == "jump":  # a quiet period: far ahead of the newest event, still behind the wall clock
            cur += draw(st.floats(FUTURE, 10 * DAY))
            t = cur
        elif op == "jitter":
            t = cur - draw(st.floats(0, LATENESS * 0.9))
        elif op == "late":
            t = cur - draw(st.floats(LATENESS * 1.1, 5 * DAY))
        elif op == "boundary":
            t = cur - LATENESS + draw(st.sampled_from([-1.0, 0.0, 1.0]))
        else:
            cur += draw(st.floats(0, 7200))
            t = cur
        app, intent, dim = SERIES[sid]
        score = float(draw(st.integers(0, 1))) if dim == "refusal" else draw(st.floats(0, 1))
        events.append({"ts": round(t, 3), "app": app, "intent": intent, "dimension": dim, "score": score})
    return events


def reference_fates(events):
    """The README/engine, one event at a time: FutureEvent when more than max_future ahead of
    the wall clock; LateEvent when behind its series' newest accepted time by more than
    allowed_lateness; otherwise accepted (duplicates too)."""
    newest: dict[tuple, float] = {}
    out = []
    for e in events:
        key = (e["app"], e["intent"], e["dimension"])
        t = e["ts"]
        if t > NOW + FUTURE:
            out.append("FutureEvent")
        elif t < newest.get(key, -math.inf) - LATENESS:
            out.append("LateEvent")
        else:
            out.append("ok")
            newest[key] = max(newest.get(key, -math.inf), t)
    return out


def _split(n, cuts):
    points = sorted({c % (n + 1) for c in cuts} | {0, n})
    return list(zip(points[:-1], points[1:]))


def run_engine(messages_, cuts, settings_=SETTINGS):
    """Feed ``messages_`` (bytes) in batches cut at ``cuts``; return alerts, (message, event, class)."""
    engine = Engine(settings_, now=lambda: NOW)
    dec = engine.decoder()
    alerts, rejections = [], []
    for lo, hi in _split(len(messages_), cuts):
        d = dec.decode(messages_[lo:hi])
        assert d.rejected == [], d.rejected
        a, late = engine.process(d)
        alerts += a
        rejections += [(lo + r.message, r.event, r.error_class) for r in late]
        for r in late:
            assert r.reason and r.raw and json.loads(r.raw)["dimension"]
    return alerts, rejections, engine


@settings(FUZZ, max_examples=150)
@given(screened_stream(), st.lists(st.integers(0, 10**6), max_size=6), st.lists(st.integers(1, 4), min_size=60, max_size=60))
def test_engine_screens_late_future_and_duplicate_events_like_the_docs(events, cuts, sizes):
    # group consecutive events into messages (single objects and arrays)
    msgs, where = [], []
    i = 0
    for size in sizes:
        if i >= len(events):
            break
        chunk = events[i:i + size]
        if len(chunk) == 1:
            msgs.append(enc(chunk[0]))
            where.append((len(msgs) - 1, None))
        else:
            msgs.append(enc(chunk))
            where += [(len(msgs) - 1, j) for j in range(len(chunk))]
        i += size
    want = reference_fates(events)
    _, rejections, engine = run_engine(msgs, cuts)
    got = {(m, e): cls for m, e, cls in rejections}
    assert len(got) == len(rejections), "an event rejected twice"
    fates = [got.get(w, "ok") for w in where]
    for f in set(fates):
        event(f)
    assert fates == want
    assert engine.counts["scores.events"] == want.count("ok")  # duplicates count like any event
    assert engine.counts["scores.late"] == want.count("LateEvent")
    assert engine.counts["scores.future"] == want.count("FutureEvent")


def _valid_stream(days=14, per_hour=30, seed=0):
    """Two weeks of one app/intent: a format check, a refusal flag, retrieval and queries; on
    day 10 (the sequential rules' reference spans a week by then) a new prompt hash makes
    format failures and refusals spike for eight hours, then a third hash brings them below the
    old level (so the episodes resolve)."""
    rng = np.random.default_rng(seed)
    change, back = T0 + 10 * DAY + 5 * 3600, T0 + 10 * DAY + 13 * 3600
    out = []
    for h in range(days * 24):
        for t in np.sort(T0 + h * 3600 + rng.uniform(0, 3600, per_hour)):
            bad = change <= t < back
            ph = "h1" if t < change else ("h2" if bad else "h3")
            fail, refuse = (0.02, 0.02) if t < change else ((0.35, 0.2) if bad else (0.002, 0.002))
            out.append({"ts": round(float(t), 3), "app": "a", "intent": "i", "dimension": "format_valid",
                        "score": int(rng.random() >= fail), "prompt_hash": ph, "model": "m1"})
            if rng.random() < 0.3:
                out.append({"ts": round(float(t), 3), "app": "a", "intent": "i", "dimension": "refusal",
                            "score": int(rng.random() < refuse), "prompt_hash": ph})
            if rng.random() < 0.05:
                out.append({"ts": round(float(t), 3), "app": "a", "intent": "i",
                            "scores": [round(float(rng.uniform(0.6, 0.9)), 4)], "index_version": "v1"})
            if rng.random() < 0.02:
                out.append({"ts": round(float(t), 3), "app": "a", "text": "how do I pay?"})
    return [enc(e) for e in out]


VALID = _valid_stream()
VALID_IDS = None


def _valid_ids():
    global VALID_IDS
    if VALID_IDS is None:
        alerts, rej, _ = run_engine(VALID, [])
        assert rej == []
        VALID_IDS = sorted(a["id"] for a in alerts)
        rules = {a["data"]["rule"] for a in alerts}
        # the stream is only a good probe if it raises several kinds of alert
        assert {"prompt_change", "format_failure_spike"} <= rules, rules
        assert any(a["data"]["status"] == "resolved" for a in alerts)
    return VALID_IDS


@settings(FUZZ, max_examples=20)
@given(st.lists(st.integers(0, len(VALID)), min_size=1, max_size=25))
def test_alert_ids_do_not_depend_on_batch_split(cuts):
    alerts, rej, _ = run_engine(VALID, cuts)
    assert rej == []
    ids = sorted(a["id"] for a in alerts)
    assert ids == _valid_ids()
    assert len(ids) == len(set(ids)), "an alert emitted twice"


# -- engine regressions (found by the properties above, fixed in 79efb33) ------------------------

_S = lambda t: enc({"ts": t, "app": "a", "intent": "i", "dimension": "relevance", "score": 0.5})  # noqa: E731


def test_traffic_resumes_after_a_quiet_period_longer_than_max_future():
    """Was: 'newest time seen' only advanced on accepted events, so after more than max_future
    (1 day) without traffic every later event was a FutureEvent forever at one message per poll."""
    msgs = [_S(T0)] + [_S(T0 + 2 * DAY + k * 600) for k in range(10)]
    _, rejected, engine = run_engine(msgs, list(range(len(msgs))))  # one message per poll
    assert rejected == []
    assert engine.counts["scores.events"] == len(msgs)


def test_a_burst_of_far_future_events_in_one_batch_is_screened_like_one_by_one():
    """Was: the far-future fixed point ran 3 rounds, so the 4th of a burst got through in one
    batch and made the next legitimate event late."""
    ahead = NOW + FUTURE
    msgs = [_S(T0)] + [_S(ahead + k * DAY / 2) for k in range(1, 6)] + [_S(T0 + 60)]
    _, batched, _ = run_engine(msgs, [])
    _, single, _ = run_engine(msgs, list(range(len(msgs))))
    assert [c for *_, c in single] == ["FutureEvent"] * 5
    assert batched == single


def test_future_screen_across_streams_does_not_depend_on_chunking():
    """Was: scores were screened before retrieval against a shared 'newest time seen', so in
    `drift replay` a FutureEvent depended on chunk boundaries."""
    r = enc({"ts": T0, "app": "a", "intent": "i", "scores": [0.8]})
    s = enc({"ts": T0 + 2 * DAY, "app": "a", "intent": "i", "dimension": "relevance", "score": 0.5})
    assert run_engine([r, s], [])[1] == run_engine([r, s], [1])[1] == []


def test_far_future_is_judged_against_the_wall_clock():
    engine = Engine(SETTINGS, now=lambda: NOW)
    d = engine.decoder().decode([_S(NOW + FUTURE - 1), _S(NOW + FUTURE + 1), _S(T0)])
    _, rejected = engine.process(d)
    assert [(r.message, r.error_class) for r in rejected] == [(1, "FutureEvent"), (2, "LateEvent")]
    assert "wall clock" in rejected[0].reason


# ---------------------------------------------------------------------------------------------
# 3. config loader

SECTION_KEYS = {
    "kafka": ["bootstrap_servers", "group_id", "security_protocol", "sasl_mechanism",
              "sasl_plain_username", "sasl_plain_password", "ssl_cafile", "request_timeout_ms"],
    "topics": list(DEFAULT_TOPICS),
    "http": ["port"],
    "queries": ["golden"],
    "engine": ["allowed_lateness", "max_future", "max_message_bytes", "service_name", "retrieval_scale"],
    "service": list(DEFAULT_SERVICE),
}
RULE_KEYS = sorted({k for r in DEFAULT_RULES.values() for k in r["params"]} | {"enabled", "severity"})
BARE = string.ascii_letters + string.digits + "_-"

finite = st.floats()  # TOML writes inf, -inf and nan as such
durations = st.sampled_from(["7d", "1h", "10m", "30s", "500ms", "90m", "2w", "-5m", "soon", "1.5h", " 3 d ",
                             "", "0s", "7 days"]) | st.integers(-10, 10**7) | finite
scalar_values = (st.booleans() | st.integers(-2**63, 2**63 - 1) | finite | st.text(max_size=12) | durations
                 | st.sampled_from(["quality", "flag", "check", "mean", "median", "warning", "critical", "info",
                                    "llm.scores", "bad topic!", "localhost:9092", "SASL_SSL", "[1, 10]"]))
toml_values = scalar_values | st.lists(scalar_values, max_size=3) | st.lists(st.floats(-5, 20), min_size=2, max_size=2)
keys = st.text(alphabet=BARE, min_size=1, max_size=8) | st.text(max_size=8)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        s = json.dumps(v, ensure_ascii=False)
        return s.replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_key(k: str) -> str:
    return k if k and all(c in BARE for c in k) else toml_value(k)


def toml_doc(doc: dict) -> str:
    """TOML for {section: scalar | {key: value} | {name: {key: value}}} (dimensions/rules)."""
    lines = []
    for sec, body in doc.items():
        if not isinstance(body, dict):
            lines.append(f"{toml_key(sec)} = {toml_value(body)}")
    for sec, body in doc.items():
        if not isinstance(body, dict):
            continue
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        lines.append(f"[{toml_key(sec)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars.items()]
        for name, t in tables.items():
            lines.append(f"[{toml_key(sec)}.{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def mostly(usual, rare):
    """``usual`` about nine times in ten, else ``rare`` (one_of would pick each half the time)."""
    return st.integers(0, 9).flatmap(lambda i: rare if i == 7 else usual)


_DURATION_KEYS = {"allowed_lateness", "max_future", "checkpoint_interval", "dlq_window", "livez_timeout",
                  "restore_timeout", "delivery_timeout", "bucket", "window", "baseline"}
good_durations = st.sampled_from(["10m", "1d", "30s", "2h", "7d", "14d", "1w", 600, 3600, 86400, 0.5])


def plausible(key):
    """Mostly a value of the key's type (so that many documents load), sometimes anything."""
    if key in _DURATION_KEYS:
        typed = good_durations
    elif key in ("alpha", "dlq_max_fraction"):
        typed = st.floats(1e-9, 1.0)
    elif key in ("threshold", "ratio", "min_d", "min_rate", "coverage_sim", "resolve_ratio"):
        typed = st.floats(0.001, 5)
    elif key in ("port",):
        typed = st.integers(0, 65535)
    elif key in ("min_n", "min_ref_n", "min_events", "bins", "for_buckets", "resolve_after", "max_values",
                 "max_changes", "max_poll_records", "session_timeout_ms", "dlq_min_messages", "max_message_bytes"):
        typed = st.integers(1, 5000)
    elif key in ("enabled", "long_term", "higher_is_better"):
        typed = st.booleans()
    elif key == "severity":
        typed = st.sampled_from(["info", "warning", "critical"])
    elif key == "stat":
        typed = st.sampled_from(["mean", "median"])
    elif key == "kind":
        typed = st.sampled_from(["quality", "flag", "check"])
    elif key in ("scale", "retrieval_scale"):
        typed = st.sampled_from([[0, 1], [1, 10], [-1, 1], [0.0, 100.0], "1 5"])
    elif key in DEFAULT_TOPICS:
        typed = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True)
    else:
        typed = st.text(alphabet=string.ascii_letters + ":.,_-0123456789", min_size=1, max_size=20)
    return mostly(typed, toml_values)


@st.composite
def table(draw, known):
    out = {}
    some_key = mostly(st.sampled_from(known), keys)
    for k in draw(st.lists(some_key, unique=True, max_size=4)):
        out[k] = draw(plausible(k))
    return out


@st.composite
def config_doc(draw):
    doc: dict = {}
    sections = draw(st.lists(st.sampled_from(list(SECTION_KEYS) + ["dimensions", "rules"]), unique=True, max_size=5))
    if draw(st.integers(0, 19)) == 7:  # (hypothesis favours the ends of a range)
        sections.append(draw(st.sampled_from(["nonsense", "Kafka", "rule"])))
    for sec in sections:
        if sec == "dimensions":
            doc[sec] = {draw(st.sampled_from(DIMENSIONS[:-1]) | keys): draw(table(["kind", "scale", "higher_is_better", "lo"]))
                        for _ in range(draw(st.integers(1, 2)))}
        elif sec == "rules":
            names = draw(st.lists(st.sampled_from(list(DEFAULT_RULES) + ["no_such_rule"]), min_size=1, max_size=2, unique=True))
            doc[sec] = {n: draw(table(RULE_KEYS)) for n in names}
        elif sec not in SECTION_KEYS or draw(st.integers(0, 19)) == 7:
            doc[sec] = draw(toml_values)  # a scalar where a table belongs
        else:
            doc[sec] = draw(table(SECTION_KEYS[sec]))
    return doc


@st.composite
def env_vars(draw):
    env = {}
    for _ in range(draw(st.integers(0, 4))):
        sec = draw(st.sampled_from(list(SECTION_KEYS) * 3 + ["rules", "unknown"]))
        key = draw(mostly(st.sampled_from(SECTION_KEYS.get(sec, ["x"])),
                          st.text(alphabet=string.ascii_lowercase + "_", max_size=8)))
        value = draw(plausible(key).map(lambda v: v if isinstance(v, str) else json.dumps(v))
                     | st.text(max_size=10))
        env[f"DRIFT_{sec.upper()}_{key.upper()}"] = value
    if draw(st.booleans()):
        env["HOME"] = "/root"
    return env


def _paths(tree, prefix=""):
    out = set()
    if isinstance(tree, dict):
        for k, v in tree.items():
            p = f"{prefix}{k}"
            out.add(p)
            out |= _paths(v, p + ".")
    return out


def _env_paths(env):
    sections = ("kafka", "topics", "http", "queries", "engine", "service")
    out = set()
    for name in env:
        if name.startswith("DRIFT_"):
            rest = name[len("DRIFT_"):].lower()
            for s in sections:
                if rest.startswith(s + "_"):
                    out |= {s, f"{s}.{rest[len(s) + 1:]}"}
                    break
    return out


@settings(FUZZ, max_examples=250)
@given(config_doc(), env_vars(), st.sampled_from([None, {"http": {"port": 0}}, {"kafka": {"bootstrap_servers": "h:1", "group_id": None}},
                                                  {"http": {"port": 70000}}]))
def test_config_loader_returns_settings_or_names_an_input_field(doc, env, overrides):
    text = toml_doc(doc)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8", delete=False) as fh:
        fh.write(text)
    try:
        s = load_settings(fh.name, env, overrides)
    except ConfigError as exc:
        msg = str(exc)
        event("ConfigError")
        assert "not valid TOML" not in msg, f"test bug: emitted invalid TOML\n{text}\n{msg}"
        paths = _paths(doc) | _env_paths(env) | _paths(overrides or {})
        head = msg.split(": ", 1)[0]
        head = head[len("config."):] if head.startswith("config.") else head
        named = head in paths or any(f"{p}" in msg for p in paths if "." in p)
        assert msg.split(": ", 1)[0] and named, f"{msg!r} names no field of the input {sorted(paths)}\n{text}"
    else:
        event("Settings")
        assert s.describe()  # usable and loggable
        assert 0 <= s.http_port <= 65535
        assert math.isfinite(s.allowed_lateness) and s.allowed_lateness >= 0
        assert math.isfinite(s.max_future) and s.max_future >= 0
        Engine(s)  # what loads also builds an engine (the mistakes surface here, at start-up)


# -- config regressions (found by the property above, fixed in 79efb33) ------------------------

NON_FINITE = [
    ("[http]\nport = inf\n", "http.port"),
    ("[service]\nmax_poll_records = inf\n", "service.max_poll_records"),
    ("[rules.quality_drop]\nmin_n = -inf\n", "rules.quality_drop.min_n"),
    ("[rules.quality_drop]\nwindow = inf\n", "rules.quality_drop.window"),
    ("[rules.quality_drop]\nwindow = 1e400\n", "rules.quality_drop.window"),
    ("[rules.quality_drop]\nbucket = nan\n", "rules.quality_drop.bucket"),
    ("[engine]\nallowed_lateness = nan\n", "engine.allowed_lateness"),
    ("[engine]\nallowed_lateness = inf\n", "engine.allowed_lateness"),
    ("[engine]\nmax_future = nan\n", "engine.max_future"),
    ("[service]\ncheckpoint_interval = nan\n", "service.checkpoint_interval"),
    ("[rules.quality_drop]\nbucket = 1e-300\n", "rules.quality_drop.bucket"),
    ("[rules.quality_drop]\nbucket = 0.001\n", "rules.quality_drop.bucket"),
]


@pytest.mark.parametrize("text,field", NON_FINITE, ids=[t.split("\n")[1].replace(" ", "") for t, _ in NON_FINITE])
def test_non_finite_and_absurd_numbers_are_config_errors(tmp_path, text, field):
    """Was: TOML inf/nan escaped as OverflowError/ValueError, and nan/inf durations or a 1e-300 s
    bucket loaded fine and then broke Engine(settings) (or asked numpy for ~108 GiB)."""
    p = tmp_path / "drift.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(str(p))
    assert str(err.value).startswith(field)
