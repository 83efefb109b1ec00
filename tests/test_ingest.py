"""`drift ingest otlp`: OTLP spans and evaluation logs through a real broker to llm.scores.

Traffic is built with the OpenTelemetry SDK (real spans, real ``gen_ai.evaluation.result`` log
records) and encoded as the Collector's Kafka exporter does (``otlp_proto`` with the SDK's own
encoders, ``otlp_json`` with :func:`drift.ingest.otlp.encode_json`). The reference is
:class:`~drift.ingest.otlp.OtlpMapper` on the same requests, run directly.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import threading
import time
import types
import uuid

import pytest

from drift.core.config import ConfigError, load_settings
from kafka_harness import IngestProcess, read_topic

T0 = 1_767_607_200  # 2026-01-05T10:00:00Z
APPS = ("support-bot", "search")
INTENTS = ("billing", "refund", "other")


# -- traffic ------------------------------------------------------------------------------------

class Traffic:
    """Spans and evaluation log records of ``n`` LLM calls, as OTLP export requests.

    Each call is a trace: an ``llm`` span (intent, prompt hash, model, ``quality.score.*``
    attributes, finish reasons) with a ``retrieve`` child span (retrieval scores) every third
    call, and one or two ``gen_ai.evaluation.result`` log records parented to the ``llm`` span.
    """

    def __init__(self, n: int, seed: int = 0, t0: float = T0, spacing: float = 5.0):
        from opentelemetry import trace
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        rng = random.Random(seed)
        span_exp, log_exp = InMemorySpanExporter(), InMemoryLogRecordExporter()
        tracers, loggers = {}, {}
        for app in APPS:
            res = Resource.create({"service.name": app})
            tp = TracerProvider(resource=res)
            tp.add_span_processor(SimpleSpanProcessor(span_exp))
            lp = LoggerProvider(resource=res)
            lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
            tracers[app], loggers[app] = tp.get_tracer("app"), lp.get_logger("evals")
        for i in range(n):
            app, intent = APPS[i % 2], INTENTS[rng.randrange(3)]
            start = int((t0 + i * spacing) * 1e9)
            end = start + int(rng.uniform(0.5, 3.0) * 1e9)
            attrs = {"intent": intent, "gen_ai.prompt.hash": f"h{i % 3}", "gen_ai.response.model": "m-1",
                     "gen_ai.response.finish_reasons": ["stop" if i % 7 else "length"],
                     "quality.score.relevance": round(rng.uniform(0.5, 1.0), 3)}
            if i % 4 == 0:
                attrs["quality.score.format_valid"] = float(i % 8 == 0)
            span = tracers[app].start_span("llm", start_time=start, attributes=attrs)
            ctx = trace.set_span_in_context(span)
            if i % 3 == 0:
                child = tracers[app].start_span("retrieve", context=ctx, start_time=start, attributes={
                    "intent": intent, **{f"retrieval.documents.{k}.document.score": round(rng.uniform(0.3, 0.9), 3)
                                         for k in range(3)}})
                child.end(end_time=start + 10_000_000)
            span.end(end_time=end)
            for dim in ("faithfulness", "coherence")[: 1 + i % 2]:
                loggers[app].emit(timestamp=end + int(rng.uniform(1, 30) * 1e9), context=ctx,
                                  event_name="gen_ai.evaluation.result",
                                  attributes={"gen_ai.evaluation.name": dim,
                                              "gen_ai.evaluation.score.value": round(rng.uniform(0, 1), 3)})
        self.spans = list(span_exp.get_finished_spans())
        self.logs = list(log_exp.get_finished_logs())
        rng.shuffle(self.spans)  # exporters batch whatever is finished: traces mixed across requests

    @staticmethod
    def trace_id(item) -> str:
        ctx = item.get_span_context() if hasattr(item, "get_span_context") else item.log_record
        return format(ctx.trace_id, "032x")

    def requests(self, signal_: str, items=None, per_request: int = 5) -> list:
        """Export requests of ``per_request`` spans or log records (traces mixed)."""
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        items = (self.spans if signal_ == "traces" else self.logs) if items is None else items
        enc = encode_spans if signal_ == "traces" else encode_logs
        return [enc(items[i:i + per_request]) for i in range(0, len(items), per_request)]


def expected_events(mapping, span_requests, log_requests) -> list[str]:
    """The events OtlpMapper gives on the same requests (spans first: every evaluation joins)."""
    from drift.ingest.otlp import OtlpMapper

    m = OtlpMapper(mapping)
    events = []
    for r in span_requests:
        events += m.spans(r).events
    for r in log_requests:
        events += m.logs(r).events
    return sorted(json.dumps(ev, sort_keys=True) for _, ev in events if _ == "scores")


def records_of(requests, encoding: str, keyed: bool) -> list[tuple[bytes | None, bytes]]:
    """Kafka records as the Collector exporter writes them: unkeyed, or split and keyed by trace id."""
    from drift.ingest.otlp import encode_json, split_by_trace

    out = []
    for req in requests:
        pieces = split_by_trace(req).items() if keyed else [(None, req)]
        for tid, piece in pieces:
            value = piece.SerializeToString() if encoding == "otlp_proto" else encode_json(piece)
            out.append((tid.hex().encode() if tid else None, value))
    return out


def produce(bootstrap: str, topic: str, records) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 << 20)
    for key, value in records:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def score_events(records) -> list[str]:
    """Events on llm.scores, each checked to sit under its series key."""
    out = []
    for r in records:
        for ev in json.loads(r.value):
            assert r.key.decode() == f"{ev['app']}/{ev['intent']}", (r.key, ev)
            out.append(json.dumps(ev, sort_keys=True))
    return sorted(out)


# -- unit tests: alignment, settings, the CLI ---------------------------------------------------

def test_release_limit_is_the_frontier_plus_max_ahead():
    from drift.runtime.ingest import release_limit

    inf = float("inf")
    # heads of the holding partitions and the last time of waiting ones make the frontier
    parts = {"a": (1000.0, False, 900.0), "b": (1200.0, False, None), "c": (None, True, 950.0),
             "d": (None, False, 10.0)}  # d: caught up, holds nothing back
    assert release_limit(parts, 300.0) == 1250.0
    assert release_limit({**parts, "c": (None, False, 950.0)}, 300.0) == 1300.0
    assert release_limit({**parts, "c": (None, True, None)}, 300.0) == -inf  # never read: wait for it
    assert release_limit({"d": (None, False, 10.0)}, 300.0) == inf and release_limit({}, 0.0) == inf


class FakeConsumer:
    """highwater/position/pause/resume of a KafkaConsumer."""

    def __init__(self, highwater):
        self.hw, self._paused = highwater, set()

    def highwater(self, tp):
        return self.hw.get(tp)

    def position(self, tp, timeout_ms=None):
        return 0

    def paused(self):
        return set(self._paused)

    def pause(self, *tps):
        self._paused |= set(tps)

    def resume(self, *tps):
        self._paused -= set(tps)


def _span_request(t: float, trace: int):
    """An ExportTraceServiceRequest of one span (trace id ``trace``) ending at ``t``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = trace.to_bytes(16, "big"), (trace + 1).to_bytes(8, "big")
    span.name, span.start_time_unix_nano, span.end_time_unix_nano = "llm", int((t - 1) * 1e9), int(t * 1e9)
    return req


def test_backlog_is_released_across_partitions_in_event_time(monkeypatch):
    """Stage 1 of a backlog on three partitions: nothing moves until every partition with records
    has been fetched once; then the internal topic gets the pieces merged in event time (to within
    max_ahead_s); partitions holding records are paused, drained ones resumed; a partition that
    never delivers stops holding the others back after ALIGN_IDLE_POLLS polls and ALIGN_IDLE_S s."""
    from kafka import TopicPartition

    import drift.runtime.ingest as ingest
    from drift.runtime.ingest import IngestPartition, IngestService

    svc = IngestService(load_settings(overrides={"otlp": {"max_ahead_s": 60}}))
    tps = [TopicPartition("otlp_spans", i) for i in range(3)]
    svc.consumer = FakeConsumer({tp: 100 for tp in tps})
    svc.parts = {tp: IngestPartition(tp.topic, tp.partition, "source", signal="traces") for tp in tps}
    sent: list[float] = []
    def send(topic, key, value, headers=None):
        sent.append(int(dict(headers)["x-source-partition"]) * 10_000 + int(dict(headers)["x-source-offset"]))
        return types.SimpleNamespace(add_callback=lambda fn: None)

    monkeypatch.setattr(svc, "_send", send)
    rng = random.Random(1)
    # each partition a time-ordered backlog, the three interleaved over the same 10 hours
    times = {tp: sorted(rng.uniform(0, 36_000) for _ in range(30)) for tp in tps}
    when = {tp.partition * 10_000 + k: t for tp in tps for k, t in enumerate(times[tp])}

    def records(tp, lo, hi):
        return [types.SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=k, key=None, headers=[],
                                      value=_span_request(T0 + times[tp][k], tp.partition * 100 + k + 1)
                                      .SerializeToString()) for k in range(lo, hi)]

    svc.process({tps[0]: records(tps[0], 0, 10), tps[1]: records(tps[1], 0, 10)})
    svc.align()
    assert sent == []  # tps[2] has records on the broker and none fetched: everything waits
    assert svc.consumer.paused() == set(tps[:2]) and svc.metrics.held._value.get() == 20
    svc.process({tps[2]: records(tps[2], 0, 10)})
    svc.align()
    assert sent, "all three fetched once: the earliest records go"
    while any((svc.parts[tp].fetched or 0) < 30 for tp in tps):
        # the consumer fetches only what is not paused: the partitions that drained what they held
        fetch = {tp: records(tp, svc.parts[tp].fetched, min(30, svc.parts[tp].fetched + 10))
                 for tp in tps if tp not in svc.consumer.paused() and svc.parts[tp].fetched < 30}
        assert fetch, "every partition paused: alignment stalled"
        assert all(not svc.parts[tp].held for tp in fetch)
        svc.process(fetch)
        svc.align()
    for tp in tps:  # read to the end
        svc.consumer.hw[tp] = 30
    svc.release()
    svc.align()
    assert svc.consumer.paused() == set() and svc.metrics.held._value.get() == 0
    assert sorted(sent) == sorted(when)  # each record once
    released = [when[k] for k in sent]
    # no record released more than max_ahead_s after one released later: merged in event time
    assert max(a - b for i, a in enumerate(released) for b in released[i + 1:]) <= 60
    # (partition by partition would have put records hours out of order)
    assert max(a - b for a in times[tps[0]] for b in times[tps[1]]) > 3600

    # a partition that says it has records and never delivers any: held back, then let go
    sent.clear()
    svc.consumer.hw[tps[1]] = 200  # more on the broker, never fetched here
    times[tps[0]] += [36_100.0, 36_200.0]
    svc.consumer.hw[tps[0]] = 32
    svc.process({tps[0]: records(tps[0], 30, 32)})
    assert sent == []  # tps[1] may hold something earlier
    monkeypatch.setattr(ingest, "ALIGN_IDLE_S", 0.0)
    for _ in range(ingest.ALIGN_IDLE_POLLS):
        svc.align()
    svc.release()
    assert sent == [30, 31] and svc.metrics.align_timeouts._value.get() == 1


def test_otlp_settings_layering_and_errors():
    s = load_settings()
    assert s.otlp["spans_topic"] == "otlp_spans" and s.otlp["logs_topic"] == "otlp_logs"
    assert s.otlp["encoding"] == "otlp_proto" and s.otlp["score_prefix"] == "quality.score."
    assert s.otlp["repartition_topic"] == "drift.otlp.by_trace" and s.otlp["max_ahead_s"] == 300.0
    assert s.ingest_group_id == "drift-ingest"
    env = {"DRIFT_OTLP_ENCODING": "otlp_json", "DRIFT_OTLP_MAX_AHEAD_S": "10m", "DRIFT_KAFKA_GROUP_ID": "g",
           "DRIFT_OTLP_LABEL_VALUES": '{"good": 1, "bad": 0}', "DRIFT_OTLP_MODEL_ATTRIBUTES": "a.model, b.model"}
    s = load_settings(env=env, overrides={"otlp": {"encoding": "otlp_proto", "group_id": None}})
    assert s.otlp["encoding"] == "otlp_proto" and s.otlp["max_ahead_s"] == 600.0 and s.ingest_group_id == "g-ingest"
    assert s.otlp["model_attributes"] == ["a.model", "b.model"]
    from drift.runtime.ingest import build_mapping

    m = build_mapping(s)
    assert m.label_values == {"good": 1.0, "bad": 0.0} and m.model_attributes == ("a.model", "b.model")
    for bad, field in [({"encoding": "otlp_xml"}, "otlp.encoding"), ({"spans_topic": "a b"}, "otlp.spans_topic"),
                       ({"max_ahead_s": -1}, "otlp.max_ahead_s"), ({"join_max_entries": 0}, "otlp.join_max_entries"),
                       ({"nope": 1}, "otlp.nope"), ({"label_values": [1]}, "otlp.label_values")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_settings(overrides={"otlp": bad})
    with pytest.raises(ConfigError, match=r"otlp\.prices\.m"):  # the mapping's own checks, at start-up
        build_mapping(load_settings(overrides={"otlp": {"prices": {"m": [1]}}}))


def test_cli_ingest_otlp_help_and_config_errors(capsys, tmp_path):
    from drift.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["ingest", "otlp", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("otlp_spans", "drift.otlp.by_trace", "trace id", "llm.scores", "max_ahead_s", "Exit codes"):
        assert word in text
    cfg = tmp_path / "drift.toml"
    cfg.write_text('[otlp]\nprices = {"gpt-4o" = [2.5]}\n')
    assert main(["ingest", "otlp", "--config", str(cfg)]) == 2
    assert "otlp.prices.gpt-4o" in capsys.readouterr().err
    cfg.write_text('[otlp]\nencoding = "xml"\n')
    assert main(["ingest", "otlp", "--config", str(cfg)]) == 2
    assert "otlp.encoding" in capsys.readouterr().err


# -- against the broker ------------------------------------------------------------------------

@pytest.fixture
def topics(topic_factory):
    return {"spans": topic_factory(4, "spans"), "logs": topic_factory(4, "logs"),
            "scores": topic_factory(3, "scores"), "retrieval": topic_factory(3, "retrieval"),
            "dlq": topic_factory(1, "dlq"), "state": topic_factory(1, "state"),
            # not created: the service creates it with as many partitions as the scores topic
            "internal": f"by-trace-{uuid.uuid4().hex[:8]}"}


def _env(bootstrap, topics, encoding, group):
    return {"DRIFT_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DRIFT_OTLP_GROUP_ID": group,
            "DRIFT_OTLP_SPANS_TOPIC": topics["spans"], "DRIFT_OTLP_LOGS_TOPIC": topics["logs"],
            "DRIFT_OTLP_REPARTITION_TOPIC": topics["internal"], "DRIFT_OTLP_ENCODING": encoding,
            **{f"DRIFT_TOPICS_{k.upper()}": topics[k] for k in ("scores", "retrieval", "dlq", "state")},
            "DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000", "DRIFT_SERVICE_CHECKPOINT_INTERVAL": "1s"}


def _wait(what, predicate, alive, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert alive(), f"the ingest service stopped waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _value(counter, **labels) -> float:
    return (counter.labels(**labels) if labels else counter)._value.get()


@pytest.mark.kafka
@pytest.mark.parametrize("encoding,keyed", [("otlp_proto", False), ("otlp_json", True)],
                         ids=["proto-unkeyed", "json-keyed-by-trace"])
def test_events_equal_the_mapper_on_the_same_input(broker, topics, encoding, keyed):
    """Evaluations first (they wait for their spans), then spans; a poison record to the DLQ."""
    from drift.runtime.ingest import IngestService, build_mapping

    traffic = Traffic(60, seed=1)
    span_reqs, log_reqs = traffic.requests("traces"), traffic.requests("logs", per_request=4)
    settings = load_settings(env=_env(broker.bootstrap, topics, encoding, f"ingest-{uuid.uuid4().hex[:6]}"),
                             overrides={"http": {"port": 0}})
    expected = expected_events(build_mapping(settings), span_reqs, log_reqs)
    svc = IngestService(settings, http_host="127.0.0.1")
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    m = svc.metrics
    try:
        produce(broker.bootstrap, topics["logs"], records_of(log_reqs, encoding, keyed))
        produce(broker.bootstrap, topics["spans"], [(b"k", b"\x0a\xffnot an export request")])
        _wait("evaluations buffered", lambda: _value(m.evaluations, outcome="buffered") >= len(traffic.logs),
              thread.is_alive)
        assert _value(m.evaluations, outcome="joined") == 0
        produce(broker.bootstrap, topics["spans"], records_of(span_reqs, encoding, keyed))
        _wait("every event produced", lambda: _value(m.events_out, topic=topics["scores"]) >= len(expected),
              thread.is_alive)
        _wait("a checkpoint", lambda: _value(m.checkpoints) >= 1, thread.is_alive)
    finally:
        svc.request_stop()
        thread.join(60)
    assert not thread.is_alive()
    got = score_events(read_topic(broker.bootstrap, topics["scores"]))
    assert got == expected
    assert _value(m.evaluations, outcome="joined") == len(traffic.logs)
    assert _value(m.evaluations, outcome="dropped") == 0
    retrieval = read_topic(broker.bootstrap, topics["retrieval"])
    assert sum(len(json.loads(r.value)) for r in retrieval) == 20  # every third call
    assert all(len(json.loads(r.value)[0]["scores"]) == 3 for r in retrieval)
    # the poison record: in the DLQ with drift serve's headers, its bytes unchanged
    (dead,) = read_topic(broker.bootstrap, topics["dlq"])
    h = {k: v.decode() for k, v in dead.headers}
    assert h["x-error-class"].startswith("otlp_") and h["x-error-message"]
    assert h["x-source-topic"] == topics["spans"] and h["x-source-partition"].isdigit()
    assert int(h["x-source-offset"]) >= 0 and dead.key == b"k" and dead.value == b"\x0a\xffnot an export request"
    assert _value(m.dlq, reason=h["x-error-class"]) == 1
    # the internal topic was created with as many partitions as the scores topic, keyed by trace id
    internal = read_topic(broker.bootstrap, topics["internal"])
    assert {r.partition for r in internal} <= {0, 1, 2} and len({r.partition for r in internal}) > 1
    assert all(len(r.key) == 32 for r in internal)
    assert _value(m.replayed_events) == 0


@pytest.mark.kafka
@pytest.mark.parametrize("stop", ["sigterm", "crash"])
def test_restart_continues_without_losing_events(broker, topics, stop):
    """Half the traffic, a stop, the other half, a restart: every event arrives; the joins that
    span the restart (evaluation before the stop, span after, and the other way) come from the
    restored join state. SIGTERM repeats nothing; a crash (the fault hook ends the process
    abruptly after delivering outputs, before writing state) repeats at most what the
    replayed counter says."""
    from drift.runtime.ingest import build_mapping

    traffic = Traffic(60, seed=2)
    half = {Traffic.trace_id(s) for s in traffic.spans[: len(traffic.spans) // 2]}
    spans_a = [s for s in traffic.spans if Traffic.trace_id(s) in half]
    spans_b = [s for s in traffic.spans if Traffic.trace_id(s) not in half]
    logs_a = [r for r in traffic.logs if Traffic.trace_id(r) not in half]  # wait for spans of the 2nd run
    logs_b = [r for r in traffic.logs if Traffic.trace_id(r) in half]      # join spans of the 1st run
    env = _env(broker.bootstrap, topics, "otlp_proto", f"ingest-{uuid.uuid4().hex[:6]}")
    env["DRIFT_SERVICE_MAX_POLL_RECORDS"] = "7"
    span_reqs = traffic.requests("traces", spans_a) + traffic.requests("traces", spans_b)
    log_reqs = traffic.requests("logs", logs_a) + traffic.requests("logs", logs_b)
    expected = expected_events(build_mapping(load_settings(env=env)), span_reqs, log_reqs)
    want = collections.Counter(expected)

    produce(broker.bootstrap, topics["spans"], records_of(traffic.requests("traces", spans_a), "otlp_proto", False))
    produce(broker.bootstrap, topics["logs"], records_of(traffic.requests("logs", logs_a), "otlp_proto", False))
    if stop == "sigterm":
        first = IngestProcess(env)
        first.wait_for(lambda: first.metric("drift_ingest_evaluations_total") >= len(logs_a)
                       and first.metric('drift_ingest_mapper_total{count="spans"}') >= len(spans_a), 60,
                       "first half mapped")
        replayed = first.metric("drift_ingest_replayed_events_total")
        assert first.stop(signal.SIGTERM) == 0
        assert any(d.get("msg") == "stopped cleanly" for d in first.lines)
    else:
        first = IngestProcess({**env, "DRIFT_FAULT_INJECT": "confirmed:1"})
        assert first.proc.wait(60) == 70  # outputs delivered, no state written, no offsets committed
        first._reader.join(5)
        replayed = 0.0
    produce(broker.bootstrap, topics["spans"], records_of(traffic.requests("traces", spans_b), "otlp_proto", False))
    produce(broker.bootstrap, topics["logs"], records_of(traffic.requests("logs", logs_b), "otlp_proto", False))

    def arrived():
        return not want - collections.Counter(score_events(read_topic(broker.bootstrap, topics["scores"])))

    second = IngestProcess(env)
    try:
        second.wait_for(arrived, 60, "every event")
        second.wait_for(lambda: second.metric("drift_ingest_checkpoints_total") >= 1, 30, "a checkpoint")
        replayed += second.metric("drift_ingest_replayed_events_total")
        replayed_records = second.metric("drift_ingest_replayed_records_total")
        consumed_again = {k: second.metric(f'drift_ingest_records_consumed_total{{topic="{topics[k]}"}}')
                          for k in ("spans", "logs")}
    finally:
        assert second.stop() == 0
    have = collections.Counter(score_events(read_topic(broker.bootstrap, topics["scores"])))
    assert not want - have, "events lost across the restart"
    assert not set(have) - set(want)
    repeats = sum((have - want).values())
    assert repeats <= replayed
    if stop == "sigterm":  # a clean stop checkpoints everything: nothing repeats, nothing is re-read
        assert repeats == 0 and replayed == 0 and replayed_records == 0
        assert consumed_again == {"spans": len(traffic.requests("traces", spans_b)),
                                  "logs": len(traffic.requests("logs", logs_b))}
    else:
        assert replayed_records > 0 and repeats > 0
