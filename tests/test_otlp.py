"""OTLP ingestion: real SDK spans and evaluation events, decoded and mapped to engine events.

Spans and log records are made with the OpenTelemetry SDK (``tests/fixtures/otlp/make_fixtures.py``
holds the helper and the fixture scenario), encoded with the SDK's OTLP encoder (``otlp_proto``)
and with :func:`encode_json` (``otlp_json``, as the Collector writes it).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import math
import pickle
import random
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind, set_span_in_context

from drift.core.params import ConfigError
from drift.ingest.otlp import (
    OtlpError,
    OtlpMapper,
    OtlpMapping,
    decode_logs,
    decode_traces,
    encode_json,
    split_by_trace,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "otlp"


def _load_fixture_module():
    spec = importlib.util.spec_from_file_location("otlp_make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fx = _load_fixture_module()
Sdk, ns, T0, PRICES = fx.Sdk, fx.ns, fx.T0, fx.PRICES


def mapping(**kw) -> OtlpMapping:
    return OtlpMapping(prices=PRICES, **kw)


def tid(span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def end_s(span) -> float:
    return span.end_time / 1e9


def cost(model: str, tokens_in: int, tokens_out: int) -> float:
    p_in, p_out = PRICES[model]
    return (tokens_in * p_in + tokens_out * p_out) / 1e6


def by_key(events):
    return sorted(events, key=lambda se: (se[0], se[1]["trace_id"], se[1].get("dimension", ""), se[1]["ts"]))


def via_proto(req):
    decode = decode_logs if isinstance(req, ExportLogsServiceRequest) else decode_traces
    return decode(req.SerializeToString(), "otlp_proto")


def via_json(req):
    decode = decode_logs if isinstance(req, ExportLogsServiceRequest) else decode_traces
    return decode(encode_json(req), "otlp_json")


# -- the fixture scenario ------------------------------------------------------------------------

def expected_fixture_events(spans):
    chat1, chat2, ret = spans["chat1"], spans["chat2"], spans["retrieve"]
    c1, c2 = fx.CHAT_1, fx.CHAT_2
    ctx1 = {"ts": end_s(chat1), "app": "support-bot", "intent": c1["intent"], "prompt_hash": c1["gen_ai.prompt.hash"],
            "prompt_version": c1["gen_ai.prompt.version"], "model": c1["gen_ai.response.model"],
            "trace_id": tid(chat1),
            # the response model is not priced: the request model's price applies
            "cost_usd": cost(c1["gen_ai.request.model"], c1["gen_ai.usage.input_tokens"], c1["gen_ai.usage.output_tokens"])}
    ctx2 = {"ts": end_s(chat2), "app": "support-bot", "intent": c2["intent"], "prompt_hash": c2["genai.prompt.hash"],
            "model": c2["gen_ai.request.model"], "trace_id": tid(chat2),
            "cost_usd": cost(c2["gen_ai.request.model"], c2["gen_ai.usage.prompt_tokens"],
                             c2["gen_ai.usage.completion_tokens"])}
    docs = [v for k, v in fx.RETRIEVE_1.items() if k.endswith(".document.score")]
    span_events = [
        ("scores", {**ctx1, "dimension": "format", "score": c1["quality.score.format"]}),
        ("scores", {**ctx1, "dimension": "relevance", "score": c1["quality.score.relevance"]}),
        ("scores", {**ctx1, "dimension": "truncated", "score": 0.0}),  # finish reason "stop"
        ("scores", {**ctx2, "dimension": "truncated", "score": 1.0}),  # finish reason "length"
        ("retrieval", {"ts": end_s(ret), "app": "support-bot", "intent": "billing", "trace_id": tid(ret),
                       "scores": sorted(docs, reverse=True), "index_version": fx.RETRIEVE_1["retrieval.index_version"]}),
    ]
    eval_events = [
        ("scores", {**ctx1, "dimension": "faithfulness", "score": 0.66}),  # parented to the chat span
        ("scores", {**ctx1, "dimension": "helpfulness", "score": 1.0}),  # label "pass", by response id
        ("scores", {**ctx2, "dimension": "coherence", "score": 0.0}),  # label "FAIL", event.name attribute
    ]
    return span_events, eval_events


def test_fixture_decodes_to_the_expected_events():
    _, _, spans = fx.build()
    want_spans, want_evals = expected_fixture_events(spans)
    mapper = OtlpMapper(mapping())
    got_spans = mapper.spans(decode_traces((FIXTURES / "traces.json").read_bytes(), "otlp_json"))
    got_logs = mapper.logs(decode_logs((FIXTURES / "logs.json").read_bytes(), "otlp_json"))
    assert by_key(got_spans.events) == by_key(want_spans)
    assert by_key(got_logs.events) == by_key(want_evals)
    assert +got_spans.counts == {"spans": 4, "spans_mapped": 3, "spans_unmapped": 1, "score_events": 4,
                                 "retrieval_events": 1, "truncated": 1}
    assert +got_logs.counts == {"logs": 4, "logs_ignored": 1, "evaluations": 3, "evaluations_joined": 3,
                                "score_events": 3}
    for _, ev in got_spans.events + got_logs.events:
        assert ev["ts"] == pytest.approx(T0, abs=60) and isinstance(ev["ts"], float)
        assert ev["trace_id"] == ev["trace_id"].lower() and len(ev["trace_id"]) == 32


def test_sdk_output_reencodes_to_the_fixture_byte_for_byte():
    traces, logs, _ = fx.build()
    assert encode_json(traces) == (FIXTURES / "traces.json").read_bytes(), "regenerate: python tests/fixtures/otlp/make_fixtures.py"
    assert encode_json(logs) == (FIXTURES / "logs.json").read_bytes()
    # and the fixture decodes to the very requests the SDK exported
    assert decode_traces((FIXTURES / "traces.json").read_bytes(), "otlp_json") == traces
    assert decode_logs((FIXTURES / "logs.json").read_bytes(), "otlp_json") == logs


def test_proto_and_json_encodings_map_to_identical_events():
    traces, logs, _ = fx.build()
    results = []
    for decoded in (lambda r: via_proto(r), lambda r: via_json(r),
                    # protobuf's own JSON: base64 ids, enum names, indentation
                    lambda r: (decode_logs if isinstance(r, ExportLogsServiceRequest) else decode_traces)(
                        json_format.MessageToJson(r).encode(), "otlp_json")):
        mapper = OtlpMapper(mapping())
        # logs first: the evaluations wait in the join buffer, then join when the spans come
        a, b = mapper.logs(decoded(logs)), mapper.spans(decoded(traces))
        results.append((a.events, b.events, +a.counts, +b.counts, json.dumps(mapper.state_dict())))
    assert results[0] == results[1] == results[2]
    assert len(results[0][1]) == 8 and results[0][2]["evaluations_buffered"] == 3


# -- encode_json: the Collector's conventions ----------------------------------------------------

def test_encode_json_follows_the_collector_conventions():
    sdk = Sdk()
    span = sdk.span("chat", 1.0, 2.0, {"n": 7, "x": 1.0, "tiny": 1e-7, "big": 1.5e21, "long": 123456789012345678.0,
                                       "neg": -0.25, "s": 'tab\t"quote" \\ é \x01', "flag": True},
                    kind=SpanKind.CLIENT)
    req = sdk.traces()
    text = encode_json(req).decode("utf-8")
    doc = json.loads(text)
    sp = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert sp["traceId"] == tid(span) and sp["spanId"] == format(span.get_span_context().span_id, "016x")
    assert "parentSpanId" not in sp and "traceState" not in sp  # defaults are left out ...
    assert sp["status"] == {} and doc["resourceSpans"][0]["resource"]["attributes"]  # ... sub-messages are not
    assert sp["kind"] == SpanKind.CLIENT.value + 1  # OTLP numbering, as a number
    assert sp["startTimeUnixNano"] == str(ns(1.0)) and sp["endTimeUnixNano"] == str(ns(2.0))
    attrs = {kv["key"]: kv["value"] for kv in sp["attributes"]}
    assert attrs["n"] == {"intValue": "7"} and attrs["flag"] == {"boolValue": True}
    assert attrs["s"]["stringValue"] == 'tab\t"quote" \\ é \x01'
    # doubles as Go's strconv writes them
    for key, literal in (("x", '"doubleValue":1}'), ("tiny", '"doubleValue":1e-7}'), ("big", '"doubleValue":1.5e+21}'),
                         ("long", '"doubleValue":123456789012345680}'), ("neg", '"doubleValue":-0.25}')):
        assert f'"key":"{key}","value":{{{literal}' in text, key
    assert '\\u0001' in text and 'é' in text and '\\t' in text  # control characters escaped, UTF-8 kept
    assert ": " not in text and ", " not in text  # compact
    assert decode_traces(text.encode(), "otlp_json") == req


def test_non_finite_doubles_round_trip_as_strings():
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    for i, x in enumerate((float("nan"), float("inf"), float("-inf"))):
        kv = span.attributes.add()
        kv.key, kv.value.double_value = f"k{i}", x
    text = encode_json(req)
    assert b'"NaN"' in text and b'"Infinity"' in text and b'"-Infinity"' in text
    back = decode_traces(text, "otlp_json").resource_spans[0].scope_spans[0].spans[0].attributes
    assert math.isnan(back[0].value.double_value) and back[1].value.double_value == math.inf


def test_json_decoder_accepts_hex_and_base64_ids_and_snake_case():
    traces, _, spans = fx.build()
    doc = json.loads(encode_json(traces))
    s0 = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    raw = bytes.fromhex(s0["traceId"])
    s0["traceId"] = base64.b64encode(raw).decode()  # protobuf's JSON form
    s0["span_id"] = s0.pop("spanId")  # snake_case, hex
    assert decode_traces(json.dumps(doc).encode(), "otlp_json") == traces


# -- mapping rules -------------------------------------------------------------------------------

def test_span_mapping_defaults_and_settings():
    sdk = Sdk(service="svc", **{"app.name": "shop"})
    sdk.span("s1", 0, 1, {"quality.score.tone": 3, "gen_ai.request.model": "m-unpriced",
                          "gen_ai.usage.input_tokens": 10, "gen_ai.prompt.hash": "span-hash"})
    req = sdk.traces()
    req.resource_spans[0].resource.attributes.add(key="gen_ai.prompt.hash").value.string_value = "res-hash"
    (ev,) = [e for _, e in OtlpMapper(mapping()).spans(req).events]
    assert ev["app"] == "svc" and ev["intent"] == "all" and ev["score"] == 3.0 and ev["dimension"] == "tone"
    assert ev["prompt_hash"] == "span-hash"  # span attributes before resource attributes
    assert "cost_usd" not in ev and "prompt_version" not in ev  # unpriced model; no version
    m = mapping(app_attribute="app.name", intent_attribute="route", score_prefix="eval.")
    sdk.span("s2", 0, 1, {"eval.tone": 0.5, "route": "faq", "quality.score.ignored": 1.0})
    (ev,) = [e for _, e in OtlpMapper(m).spans(sdk.traces()).events]
    assert (ev["app"], ev["intent"], ev["dimension"]) == ("shop", "faq", "tone")


def test_app_falls_back_to_span_attribute_then_default():
    sdk = Sdk()
    sdk.span("s", 0, 1, {"quality.score.a": 0.5, "service.name": "from-span"})
    sdk.span("s", 0, 1, {"quality.score.a": 0.5})
    req = sdk.traces()
    del req.resource_spans[0].resource.attributes[:]
    apps = [e["app"] for _, e in OtlpMapper().spans(req).events]
    assert apps == ["from-span", "default"]


def test_cost_uses_tokens_and_prices_and_needs_usage():
    sdk = Sdk()
    sdk.span("a", 0, 1, {"quality.score.q": 1.0, "gen_ai.response.model": "gpt-4o", "gen_ai.usage.output_tokens": 50})
    sdk.span("b", 0, 1, {"quality.score.q": 1.0, "gen_ai.response.model": "gpt-4o"})  # no usage
    sdk.span("c", 0, 1, {"quality.score.q": 1.0, "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": "12"})
    a, b, c = [e for _, e in OtlpMapper(mapping()).spans(sdk.traces()).events]
    assert a["cost_usd"] == pytest.approx(cost("gpt-4o", 0, 50))
    assert "cost_usd" not in b and "cost_usd" not in c  # a string token count is ignored (counted)


def test_truncation_flag_from_finish_reasons():
    sdk = Sdk()
    sdk.span("a", 0, 1, {"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": ("stop", "length")})
    sdk.span("b", 0, 1, {"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": "max_tokens"})
    sdk.span("c", 0, 1, {"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": ("stop",)})
    sdk.span("d", 0, 1, {"gen_ai.operation.name": "chat"})  # no finish reasons: no flag
    res = OtlpMapper().spans(sdk.traces())
    assert [(e["dimension"], e["score"]) for _, e in res.events] == [("truncated", 1.0), ("truncated", 1.0),
                                                                     ("truncated", 0.0)]
    assert res.counts["truncated"] == 2 and res.counts["spans_unmapped"] == 1
    only_length = OtlpMapper(OtlpMapping(truncation_reasons=("length",)))
    sdk.span("b", 0, 1, {"gen_ai.response.finish_reasons": "max_tokens"})
    assert [e["score"] for _, e in only_length.spans(sdk.traces()).events] == [0.0]


def test_retrieval_scores_sorted_descending_without_index_version():
    sdk = Sdk()
    scores = [0.2, 0.9, 0.5, 0.7]
    sdk.span("r", 0, 1, {f"retrieval.documents.{i}.document.score": s for i, s in enumerate(scores)})
    ((stream, ev),) = OtlpMapper().spans(sdk.traces()).events
    assert stream == "retrieval" and ev["scores"] == sorted(scores, reverse=True) and "index_version" not in ev


# -- joins ---------------------------------------------------------------------------------------

def test_evaluation_before_its_span_is_buffered_then_emitted():
    sdk = Sdk()
    root = sdk.tracer.start_span("chat", start_time=ns(0), attributes={"gen_ai.request.model": "gpt-4o", "intent": "x"})
    sdk.evaluation(3.0, "relevance", value=0.4, span=root)  # judged before the span is exported
    mapper = OtlpMapper(mapping())
    first = mapper.logs(via_proto(sdk.logs()))
    assert first.events == [] and first.counts["evaluations_buffered"] == 1 and len(mapper) == 1
    root.end(end_time=ns(2.0))
    second = mapper.spans(via_proto(sdk.traces()))
    assert second.events == [("scores", {"ts": end_s(root), "dimension": "relevance", "score": 0.4, "app": "support-bot",
                                         "intent": "x", "model": "gpt-4o", "trace_id": tid(root)})]
    assert second.counts["evaluations_joined"] == 1 and second.counts["spans_unmapped"] == 1
    # the span stays for later evaluations
    sdk.evaluation(4.0, "faithfulness", value=0.8, span=root)
    third = mapper.logs(via_json(sdk.logs()))
    assert [(e["dimension"], e["ts"]) for _, e in third.events] == [("faithfulness", end_s(root))]


def test_evaluation_joined_by_response_id_either_order():
    for logs_first in (True, False):
        sdk = Sdk()
        chat = sdk.span("chat", 0, 1, {"gen_ai.response.id": "resp-9", "gen_ai.request.model": "gpt-4o-mini"})
        judge = sdk.span("judge", 5, 6, {"gen_ai.operation.name": "chat"})
        # emitted in the judge's context, but naming the evaluated response: the response id wins
        sdk.evaluation(7.0, "relevance", label="Pass", response_id="resp-9", span=judge)
        sdk.evaluation(7.0, "tone", value=0.1, response_id="resp-unknown")
        mapper = OtlpMapper(mapping())
        traces, logs = via_json(sdk.traces()), via_json(sdk.logs())
        results = [mapper.logs(logs), mapper.spans(traces)] if logs_first else [mapper.spans(traces), mapper.logs(logs)]
        events = [e for r in results for _, e in r.events if e["dimension"] == "relevance"]
        assert events == [{"ts": end_s(chat), "dimension": "relevance", "score": 1.0, "app": "support-bot", "intent": "all",
                           "model": "gpt-4o-mini", "trace_id": tid(chat)}]
        assert sum(r.counts["evaluations_joined"] for r in results) == 1
        assert sum(r.counts["evaluations_buffered"] for r in results) == (2 if logs_first else 1)


def test_evaluation_whose_span_never_arrives_is_dropped_by_expire():
    sdk = Sdk()
    ghost = sdk.tracer.start_span("never exported", start_time=ns(0), attributes={"gen_ai.operation.name": "chat"})
    sdk.evaluation(100.0, "relevance", value=0.5, span=ghost)
    m = mapping(join_max_age=600.0)
    mapper = OtlpMapper(m)
    mapper.logs(via_proto(sdk.logs()))
    assert +mapper.expire(T0 + 100.0 + 600.0).counts == {}  # exactly at the age: still waiting
    res = mapper.expire(T0 + 100.0 + 600.5)
    assert res.events == [] and +res.counts == {"evaluations_dropped": 1} and len(mapper) == 0
    ghost.end(end_time=ns(1.0))  # too late: nothing is emitted
    assert mapper.spans(via_proto(sdk.traces())).events == []


def test_plain_span_joins_only_when_evaluations_wait_for_it():
    sdk = Sdk()
    plain = sdk.tracer.start_span("handler", start_time=ns(0))  # no gen_ai.*, no score, no intent
    sdk.evaluation(2.0, "relevance", value=0.7, span=plain)
    other = sdk.span("other handler", 0, 1)
    mapper = OtlpMapper()
    mapper.logs(via_proto(sdk.logs()))
    plain.end(end_time=ns(1.0))
    res = mapper.spans(via_proto(sdk.traces()))
    assert [(e["dimension"], e["trace_id"]) for _, e in res.events] == [("relevance", tid(plain))]
    assert len(mapper) == 1  # the evaluated span is kept from now on; the other one is not
    sdk.evaluation(3.0, "tone", value=0.2, span=plain)
    sdk.evaluation(3.0, "tone", value=0.2, span=other)
    res = mapper.logs(via_proto(sdk.logs()))
    assert [(e["dimension"], e["trace_id"]) for _, e in res.events] == [("tone", tid(plain))]
    assert res.counts["evaluations_buffered"] == 1


def test_join_buffer_bound_drops_and_counts():
    sdk = Sdk()
    spans = [sdk.tracer.start_span(f"s{i}", start_time=ns(0)) for i in range(3)]
    for i, span in enumerate(spans):
        sdk.evaluation(10.0 + i, "relevance", value=0.5, span=span)
    mapper = OtlpMapper(mapping(join_max_entries=2))
    res = mapper.logs(via_proto(sdk.logs()))
    assert res.counts["evaluations_buffered"] == 3 and res.counts["evaluations_dropped"] == 1 and len(mapper) == 2
    for span in spans:
        span.end(end_time=ns(1.0))
    joined = mapper.spans(via_proto(sdk.traces()))
    assert sorted(e["trace_id"] for _, e in joined.events) == sorted(tid(s) for s in spans[1:])  # the oldest was dropped


def test_state_round_trips_through_json_mid_join():
    sdk = Sdk()
    pending = sdk.tracer.start_span("chat", start_time=ns(0), attributes={"gen_ai.request.model": "gpt-4o"})
    sdk.span("chat", 0, 1, {"gen_ai.response.id": "r1", "intent": "faq", "gen_ai.usage.input_tokens": 3,
                                   "gen_ai.request.model": "gpt-4o"})
    sdk.evaluation(2.0, "relevance", value=0.3, span=pending)
    a = OtlpMapper(mapping())
    a.spans(via_proto(sdk.traces()))
    a.logs(via_proto(sdk.logs()))
    state = json.loads(json.dumps(a.state_dict()))
    b = OtlpMapper(mapping())
    b.load_state(state)
    assert b.state_dict() == a.state_dict()
    pending.end(end_time=ns(3.0))
    sdk.evaluation(4.0, "tone", label="no", response_id="r1")
    traces, logs = sdk.traces(), sdk.logs()
    ra = (a.spans(via_proto(traces)), a.logs(via_proto(logs)), a.expire(T0 + 10_000))
    rb = (b.spans(via_proto(traces)), b.logs(via_proto(logs)), b.expire(T0 + 10_000))
    assert [r.events for r in ra] == [r.events for r in rb]
    assert [r.counts for r in ra] == [r.counts for r in rb]
    assert [e["dimension"] for r in rb for _, e in r.events] == ["relevance", "tone"]
    assert rb[1].events[0][1]["intent"] == "faq" and rb[1].events[0][1]["cost_usd"] == pytest.approx(cost("gpt-4o", 3, 0))


def test_mapper_is_deterministic():
    traces, logs, _ = fx.build()
    runs = []
    for _ in range(2):
        mapper = OtlpMapper(mapping())
        runs.append((mapper.spans(traces), mapper.logs(logs), json.dumps(mapper.state_dict())))
    assert runs[0] == runs[1]


# -- malformed input ---------------------------------------------------------------------------

def _valid_payloads():
    traces, logs, _ = fx.build()
    return traces, logs


def _decode_cases():
    traces, logs = _valid_payloads()
    proto, js = traces.SerializeToString(), encode_json(traces)
    rng = random.Random(7)
    return [
        ("truncated protobuf", proto[: len(proto) // 2], "otlp_proto", "otlp_decode"),
        ("random bytes", bytes(rng.randrange(256) for _ in range(300)), "otlp_proto", None),
        ("JSON to the protobuf decoder", js, "otlp_proto", "otlp_encoding"),
        ("protobuf to the JSON decoder", proto, "otlp_json", "otlp_encoding"),
        ("invalid UTF-8", b'{"resourceSpans":[{"resource":{"attributes":[{"key":"\xff"}]}}]}', "otlp_json", "otlp_decode"),
        ("not JSON", b'{"resourceSpans": [', "otlp_json", "otlp_decode"),
        ("a JSON array", b"[]", "otlp_json", "otlp_decode"),
        ("NaN literal", b'{"resourceSpans": NaN}', "otlp_json", "otlp_decode"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "otlp_json", "otlp_decode"),
        ("wrong type: list", b'{"resourceSpans": {"a": 1}}', "otlp_json", "otlp_invalid"),
        ("wrong type: time", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"endTimeUnixNano":"soon"}]}]}]}', "otlp_json",
         "otlp_invalid"),
        ("wrong type: attributes", b'{"resourceSpans":[{"resource":{"attributes":"x"}}]}', "otlp_json", "otlp_invalid"),
        ("bad id", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz!"}]}]}]}', "otlp_json", "otlp_invalid"),
        ("empty value", b"", "otlp_proto", "otlp_decode"),
        ("empty value", b"", "otlp_json", "otlp_decode"),
        ("empty request", b"{}", "otlp_json", "otlp_invalid"),
        ("empty request", b"{\"resourceSpans\": []}", "otlp_json", "otlp_invalid"),
        ("logs on the spans topic", encode_json(logs), "otlp_json", "otlp_invalid"),
    ]


@pytest.mark.parametrize("name,value,encoding,error_class", _decode_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_undecodable_values_raise_otlp_error(name, value, encoding, error_class):
    with pytest.raises(OtlpError) as info:
        decode_traces(value, encoding)
    assert info.value.error_class in ("otlp_decode", "otlp_encoding", "otlp_invalid")
    if error_class:
        assert info.value.error_class == error_class, info.value.reason
    assert info.value.reason and "\n" not in info.value.reason
    assert isinstance(info.value, ValueError)


def test_decode_logs_rejects_the_same_way():
    traces, logs = _valid_payloads()
    with pytest.raises(OtlpError, match="otlp_encoding"):
        decode_logs(encode_json(logs), "otlp_proto")
    with pytest.raises(OtlpError, match="otlp_invalid"):
        decode_logs(encode_json(traces), "otlp_json")
    with pytest.raises(OtlpError, match="otlp_decode"):
        decode_logs(logs.SerializeToString()[:-4], "otlp_proto")
    with pytest.raises(OtlpError, match="otlp_decode"):
        decode_logs("a str, not bytes", "otlp_json")  # type: ignore[arg-type]


def test_unknown_encoding_is_a_configuration_error_not_a_record_error():
    with pytest.raises(ValueError) as info:
        decode_traces(b"{}", "otlp_yaml")
    assert not isinstance(info.value, OtlpError) and "encoding" in str(info.value)


def test_bad_records_are_counted_not_raised():
    sdk = Sdk()
    sdk.span("bad scores", 0, 1, {"quality.score.a": "high", "quality.score.b": True, "quality.score.c": float("nan"),
                                  "quality.score.d": float("inf"), "quality.score.ok": 0.5,
                                  "retrieval.documents.0.document.score": float("-inf"),
                                  "retrieval.documents.1.document.score": 0.3})
    sdk.span("no attributes", 0, 1)
    sdk.span("end at 0", 0, 1, {"quality.score.a": 0.5})
    sdk.span("far future", 0, 1, {"quality.score.a": 0.5})
    sdk.span("no trace id", 0, 1, {"quality.score.a": 0.5})
    sdk.span("wrong types", 0, 1, {"quality.score.a": 0.5, "intent": 3, "gen_ai.prompt.hash": 7,
                                   "gen_ai.response.finish_reasons": 5})
    req = sdk.traces()
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[2].end_time_unix_nano = 0
    spans[3].end_time_unix_nano = 4_200_000_000 * 10**9  # year 2103
    spans[4].trace_id = b""
    for decoded in (via_proto(req), via_json(req)):
        res = OtlpMapper().spans(decoded)
        assert [(s, e.get("dimension"), e.get("scores")) for s, e in res.events] == [
            ("scores", "ok", None), ("retrieval", None, [0.3]), ("scores", "a", None)]
        assert res.counts["records_invalid"] == 5 + 3  # 5 bad values, 3 unusable spans
        assert res.counts["spans_unmapped"] == 1 and res.counts["spans"] == 6
        assert res.counts["attributes_invalid"] == 3
        last = res.events[-1][1]
        assert last["intent"] == "all" and "prompt_hash" not in last


def test_bad_evaluations_are_counted_not_raised():
    sdk = Sdk()
    span = sdk.span("chat", 0, 1, {"gen_ai.operation.name": "chat"})
    sdk.evaluation(2.0, "no-score", span=span)
    sdk.evaluation(2.0, "unknown-label", label="meh", span=span)
    sdk.evaluation(2.0, "nan", value=float("nan"), span=span)
    sdk.evaluation(2.0, "string-value", span=span, **{"gen_ai.evaluation.score.value": "0.5"})
    sdk.evaluation(2.0, "no-span", value=0.5)  # neither parented nor naming a response
    sdk.logger.emit(timestamp=ns(2.0), event_name="gen_ai.evaluation.result",
                    attributes={"gen_ai.evaluation.score.value": 0.5})  # no name
    sdk.evaluation(2.0, "nan-but-label", value=float("nan"), label="pass", span=span)
    logs = sdk.logs()
    for rec in logs.resource_logs[0].scope_logs[0].log_records:
        rec.observed_time_unix_nano = 0
    records = logs.resource_logs[0].scope_logs[0].log_records
    last = records[-1]
    extra = records.add()
    extra.CopyFrom(last)
    extra.time_unix_nano = 9 * 10**18  # year 2255
    mapper = OtlpMapper()
    mapper.spans(sdk.traces())
    res = mapper.logs(via_json(logs))
    assert [(e["dimension"], e["score"]) for _, e in res.events] == [("nan-but-label", 1.0)]
    assert res.counts["records_invalid"] == 7 and res.counts["evaluations"] == 8


@pytest.mark.parametrize("bad,field", [
    ({"encoding": "avro"}, "otlp.encoding"),
    ({"topic": "x"}, "otlp.topic"),
    ({"prices": {"gpt-4o": [1.0]}}, "otlp.prices.gpt-4o"),
    ({"prices": {"gpt-4o": {"input": 1.0}}}, "otlp.prices.gpt-4o"),
    ({"prices": {"gpt-4o": [1.0, -2.0]}}, "otlp.prices.gpt-4o[1]"),
    ({"label_values": {"pass": "yes"}}, "otlp.label_values.pass"),
    ({"model_attributes": []}, "otlp.model_attributes"),
    ({"join_max_entries": 0}, "otlp.join_max_entries"),
    ({"join_max_age": "soon"}, "otlp.join_max_age"),
    ({"score_prefix": ""}, "otlp.score_prefix"),
])
def test_mapping_errors_name_the_field(bad, field):
    with pytest.raises(ConfigError) as info:
        OtlpMapping.from_dict(bad)
    assert str(info.value).startswith(field + ":")


def test_mapping_from_dict():
    assert OtlpMapping.from_dict({}) == OtlpMapping() == OtlpMapping.from_dict(None)
    m = OtlpMapping.from_dict({"spans_topic": "otlp_spans", "logs_topic": "otlp_logs", "encoding": "otlp_json",
                               "model_attributes": "llm.model_name", "join_max_age": "2h", "join_max_entries": "10",
                               "prompt_hash_attributes": "a.hash, b.hash",
                               "prices": {"a": [1, 2], "b": {"input": 0.5, "output": 1.5}},
                               "label_values": {"Good": 1, "BAD": 0}})
    assert m.encoding == "otlp_json" and m.model_attributes == ("llm.model_name",)
    assert m.prompt_hash_attributes == ("a.hash", "b.hash")
    assert m.join_max_age == 7200.0 and m.join_max_entries == 10
    assert dict(m.prices) == {"a": (1.0, 2.0), "b": (0.5, 1.5)}
    assert dict(m.label_values) == {"good": 1.0, "bad": 0.0}
    assert OtlpMapping().label_values["pass"] == 1.0 and OtlpMapping().label_values["false"] == 0.0
    # settings objects get copied, pickled and used as keys
    assert pickle.loads(pickle.dumps(m)) == copy.deepcopy(m) == m and hash(m) == hash(copy.deepcopy(m))
    assert hash(OtlpMapping()) != hash(m)


# -- split_by_trace ------------------------------------------------------------------------------

def test_split_by_trace_puts_each_span_in_exactly_one_piece():
    a = Sdk(service="a", ids=fx.SequentialIds(trace_base=0x100, span_base=0x100))
    b = Sdk(service="b", ids=fx.SequentialIds(trace_base=0x200, span_base=0x200))
    other_scope = a.tracer_provider.get_tracer("other.scope", "9")
    r1 = a.tracer.start_span("r1", start_time=ns(0))
    r2 = a.tracer.start_span("r2", start_time=ns(0))
    for i in range(6):
        parent = (r1, r2)[i % 2]
        tracer = (a.tracer, other_scope)[i // 3]
        tracer.start_span(f"c{i}", context=set_span_in_context(parent), start_time=ns(0)).end(end_time=ns(1))
    r1.end(end_time=ns(2))
    r2.end(end_time=ns(2))
    b_root = b.span("b-root", 0, 1)
    req = a.traces()
    req.MergeFrom(b.traces())
    pieces = split_by_trace(req)

    def index(r):
        return {(s.trace_id, s.span_id): (rs.resource, ss.scope, s) for rs in r.resource_spans
                for ss in rs.scope_spans for s in ss.spans}

    whole = index(req)
    seen = {}
    for trace_id, piece in pieces.items():
        assert isinstance(piece, ExportTraceServiceRequest)
        for key, (resource, scope, span) in index(piece).items():
            assert span.trace_id == trace_id and key not in seen
            seen[key] = (resource, scope, span)
    assert seen == whole and len(whole) == 9
    assert list(pieces) == [bytes.fromhex(tid(s)) for s in (r1, r2, b_root)]  # in order of first appearance
    assert len(pieces[bytes.fromhex(tid(r1))].resource_spans) == 1
    assert len(pieces[bytes.fromhex(tid(r1))].resource_spans[0].scope_spans) == 2  # both scopes kept apart
    assert pieces[bytes.fromhex(tid(b_root))].resource_spans[0].resource.attributes[0].value.string_value == "b"


def test_split_by_trace_logs_without_trace_go_to_the_empty_key():
    sdk = Sdk()
    span = sdk.span("s", 0, 1)
    sdk.evaluation(1.0, "x", value=1.0, span=span)
    sdk.evaluation(1.0, "y", value=1.0, response_id="r")
    pieces = split_by_trace(sdk.logs())
    assert set(pieces) == {span.get_span_context().trace_id.to_bytes(16, "big"), b""}
    assert all(isinstance(p, ExportLogsServiceRequest) for p in pieces.values())
    assert pieces[b""].resource_logs[0].resource.attributes[0].value.string_value == "support-bot"
    with pytest.raises(TypeError):
        split_by_trace(ExportLogsServiceRequest().resource_logs)


# -- fuzzing: only OtlpError escapes ---------------------------------------------------------------

def _map_everything(value: bytes) -> None:
    for encoding in ("otlp_proto", "otlp_json"):
        for decode, kind in ((decode_traces, "spans"), (decode_logs, "logs")):
            try:
                req = decode(value, encoding)
            except OtlpError:
                continue
            mapper = OtlpMapper(mapping(join_max_entries=3))
            getattr(mapper, kind)(req)
            split_by_trace(req)
            encode_json(req)
            mapper.expire(mapper.watermark)
            OtlpMapper().load_state(json.loads(json.dumps(mapper.state_dict())))


_TRACES, _LOGS = _valid_payloads()
_SEEDS = [_TRACES.SerializeToString(), _LOGS.SerializeToString(), encode_json(_TRACES), encode_json(_LOGS)]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(value):
    _map_everything(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEEDS), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                                                              st.sampled_from(["set", "insert", "delete"])), max_size=6),
       cut=st.none() | st.integers(0, 10**6))
def test_fuzz_mutated_valid_payloads(seed, edits, cut):
    data = bytearray(seed)
    for pos, byte, op in edits:
        i = pos % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif data and i < len(data):
            if op == "set":
                data[i] = byte
            else:
                del data[i]
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _map_everything(bytes(data))


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    if path:
        yield path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEEDS[2:]), picks=st.lists(st.tuples(st.integers(0, 10**6), _json_values), min_size=1, max_size=3))
def test_fuzz_json_with_replaced_values(seed, picks):
    doc = json.loads(seed)
    for pick, value in picks:
        paths = list(_leaves(doc))
        *parent_path, last = paths[pick % len(paths)]
        parent = doc
        for p in parent_path:
            parent = parent[p]
        parent[last] = value
    _map_everything(json.dumps(doc).encode())


_numeric_strings = st.sampled_from(["0", "1", "-1", "18446744073709551615", "18446744073709551616", "9223372036854775808",
                                    "1767225602500000000", "NaN", "Infinity", "-Infinity", "1e3", ""])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEEDS[2:]), data=st.data())
def test_fuzz_json_with_same_type_values(seed, data):
    """Values replaced by others of the same JSON type: most still parse, so the mapper is exercised."""
    doc = json.loads(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        paths = list(_leaves(doc))
        *parent_path, last = data.draw(st.sampled_from(paths))
        parent = doc
        for p in parent_path:
            parent = parent[p]
        old = parent[last]
        if isinstance(old, bool):
            new = data.draw(st.booleans())
        elif isinstance(old, (int, float)):
            new = data.draw(st.integers(-2**64, 2**64) | st.floats(allow_nan=False, allow_infinity=False))
        elif isinstance(old, str):
            new = data.draw(_numeric_strings | st.text(max_size=20) | st.sampled_from(
                ["length", "quality.score.x", "gen_ai.evaluation.result", "gen_ai.response.id", "0" * 32, "f" * 16]))
        elif isinstance(old, list):
            new = data.draw(st.lists(st.sampled_from(old), max_size=4)) if old else []
        else:
            new = {}
        parent[last] = new
    _map_everything(json.dumps(doc).encode())
