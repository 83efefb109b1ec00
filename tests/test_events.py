"""Decoding and validation: every bad-input class of the SPEC is rejected with a reason."""

import base64
import json

import numpy as np
import pytest

from drift.core.config import load_settings
from drift.core.engine import Engine

GOOD = {"ts": "2026-01-05T10:00:00Z", "app": "a", "intent": "i", "dimension": "relevance", "score": 0.8}


def decoder(**kw):
    engine = Engine(load_settings())
    dec = engine.decoder()
    for k, v in kw.items():
        setattr(dec, k, v)
    return dec


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def test_good_single_and_array_messages():
    d = decoder().decode([enc(GOOD), enc([GOOD, {**GOOD, "score": 0.5}])])
    assert d.rejected == []
    assert len(d.scores) == 3
    assert d.scores.msg.tolist() == [0, 1, 1]
    assert d.scores.ts[0] == 1767607200.0


def test_fields_decide_the_kind_and_stream_overrides():
    lines = [enc(GOOD), enc({"ts": 1767607200, "scores": [0.8, 0.7]}), enc({"ts": 1767607200, "score": 0.9}),
             enc({"ts": 1767607200, "text": "hi"}), enc({**GOOD, "stream": "scores"})]
    d = decoder().decode(lines)
    assert (len(d.scores), len(d.retrieval), len(d.queries)) == (2, 2, 1)
    assert d.retrieval.top1.tolist() == [0.8, 0.9]


def test_defaults_for_app_and_intent():
    d = decoder().decode([enc({"ts": 1767607200, "dimension": "format", "score": 1})])
    assert d.scores.app[0] == "default" and d.scores.intent[0] == "all"


def test_naive_and_offset_times():
    d = decoder().decode([enc({**GOOD, "ts": "2026-01-05T10:00:00"}), enc({**GOOD, "ts": "2026-01-05T12:00:00+02:00"}),
                          enc({**GOOD, "ts": 1767607200.5})])
    assert d.scores.ts.tolist() == [1767607200.0, 1767607200.0, 1767607200.5]


BAD = [
    ("malformed", b'{"ts": 1767607200, "dimension": "x", "score": 0.5', "MalformedJSON"),
    ("not json", b"hello", "MalformedJSON"),
    ("NaN literal", b'{"ts": 1767607200, "dimension": "x", "score": NaN}', "MalformedJSON"),
    ("missing score", enc({"ts": 1767607200, "dimension": "x"}), "SchemaError"),
    ("missing score on scores topic", enc({"ts": 1767607200, "dimension": "x", "stream": "scores"}), "SchemaError"),
    ("missing ts", enc({"dimension": "x", "score": 0.5}), "SchemaError"),
    ("mistyped score", enc({"ts": 1767607200, "dimension": "x", "score": "high"}), "SchemaError"),
    ("mistyped app", enc({**GOOD, "app": 7}), "SchemaError"),
    ("inf score", b'{"ts": 1767607200, "dimension": "x", "score": 1e999}', "NonFiniteValue"),
    ("score above scale", enc({**GOOD, "score": 1.5}), "OutOfScale"),
    ("negative score", enc({**GOOD, "score": -0.1}), "OutOfScale"),
    ("flag not 0/1", enc({**GOOD, "dimension": "refusal", "score": 0.5}), "OutOfScale"),
    ("unparseable time", enc({**GOOD, "ts": "yesterday at noon"}), "BadTimestamp"),
    ("time out of range", enc({**GOOD, "ts": 99999999999}), "BadTimestamp"),
    ("unknown kind", enc({"ts": 1767607200, "foo": 1}), "UnknownEventKind"),
    ("bad stream", enc({**GOOD, "stream": "logs"}), "UnknownEventKind"),
    ("empty array", b"[]", "SchemaError"),
    ("scalar", b"42", "SchemaError"),
    ("empty retrieval scores", enc({"ts": 1767607200, "scores": []}), "SchemaError"),
    ("retrieval out of scale", enc({"ts": 1767607200, "scores": [3.0]}), "OutOfScale"),
    ("query without content", enc({"ts": 1767607200, "stream": "queries"}), "SchemaError"),
    ("bad base64", enc({"ts": 1767607200, "embedding_b64": "***"}), "BadEmbedding"),
    ("base64 of 3 bytes", enc({"ts": 1767607200, "embedding_b64": base64.b64encode(b"abc").decode()}), "BadEmbedding"),
]


@pytest.mark.parametrize("label,raw,cls", BAD, ids=[b[0] for b in BAD])
def test_each_bad_input_class_is_rejected_with_reason_and_neighbours_survive(label, raw, cls):
    d = decoder().decode([enc(GOOD), raw, enc(GOOD)])
    assert len(d.scores) + len(d.retrieval) + len(d.queries) == 2, label
    assert [(r.message, r.error_class) for r in d.rejected] == [(1, cls)]
    assert d.rejected[0].reason


def test_oversized_message():
    dec = decoder(max_message_bytes=100)
    d = dec.decode([enc(GOOD), b"[" + b",".join([enc(GOOD)] * 10) + b"]"])
    assert [(r.message, r.error_class) for r in d.rejected] == [(1, "OversizedMessage")]


def test_wrong_embedding_dimension():
    dec = decoder(embedding_dim=4)
    ok = {"ts": 1767607200, "embedding": [0.1, 0.2, 0.3, 0.4]}
    d = dec.decode([enc(ok), enc({"ts": 1767607200, "embedding": [0.1, 0.2]}),
                    enc({"ts": 1767607200, "embedding_b64": base64.b64encode(np.ones(4, "<f4").tobytes()).decode()})])
    assert [(r.message, r.error_class) for r in d.rejected] == [(1, "BadEmbedding")]
    assert "4" in d.rejected[0].reason
    np.testing.assert_array_equal(d.queries.vectors[1], np.ones(4, np.float32))


def test_array_with_one_bad_event_is_rejected_whole_naming_the_element():
    d = decoder().decode([enc([GOOD, {**GOOD, "score": 7}, GOOD])])
    assert len(d.scores) == 0
    (r,) = d.rejected
    assert (r.error_class, r.event) == ("OutOfScale", 1)
    assert "declared scale [0, 1]" in r.reason


def test_forced_kind_from_topic():
    d = decoder().decode([enc({"ts": 1767607200, "score": 0.9, "dimension": "x"})], kind="retrieval")
    assert len(d.retrieval) == 1 and len(d.scores) == 0


def test_fast_path_and_fallback_agree():
    lines = [enc({**GOOD, "score": i / 10}) for i in range(10)]
    good = decoder().decode(lines)
    mixed = decoder().decode(lines[:5] + [b"{oops"] + lines[5:])
    assert good.scores.score.tolist() == mixed.scores.score.tolist()
    # a line that is only valid JSON when glued to its neighbour is still rejected
    d = decoder().decode([b'[' + enc(GOOD), enc(GOOD) + b']'])
    assert len(d.scores) == 0 and len(d.rejected) == 2


def test_engine_rejects_late_and_far_future_events_with_their_json():
    engine = Engine(load_settings())
    dec = engine.decoder()
    t0 = 1767607200
    lines = [enc({**GOOD, "ts": t0 + 3600}), enc({**GOOD, "ts": t0}),  # 1 h behind: late (lateness 10 min)
             enc({**GOOD, "ts": "2090-01-01T00:00:00Z"}), enc({**GOOD, "ts": t0 + 3601})]  # 2090: ahead of the wall clock
    alerts, rejected = engine.process(dec.decode(lines))
    assert [(r.message, r.error_class) for r in rejected] == [(1, "LateEvent"), (2, "FutureEvent")]
    assert json.loads(rejected[0].raw)["dimension"] == "relevance"
    assert engine.counts["scores.events"] == 2
