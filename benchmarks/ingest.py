"""`drift ingest otlp` through a real broker vs a bare consumer that only decodes the protobuf.

Spans are realistic GenAI ``llm`` spans (``service.name``, ``intent``, ``gen_ai.request.model``,
``gen_ai.prompt.hash``, three ``quality.score.*`` attributes, usage tokens), ~200 per
``ExportTraceServiceRequest`` (traces mixed across requests, as the Collector batches them),
built once with the ``opentelemetry.proto`` messages and written to the spans topic as
``otlp_proto``, as the Collector's Kafka exporter does.

* **ours**: the ingest service (:class:`~drift.runtime.ingest.IngestService`) in-process, timed
  from readiness (group joined, states restored) until every ScoreEvent is produced: stage 1
  (decode, split by trace id, re-encode, produce to the internal topic) → internal topic →
  stage 2 (decode, map, JSON-encode, produce to ``llm.scores``). Spans/s in and events/s out.
* **competitor**: a bare kafka-python consumer reading the same spans records and calling
  ``ExportTraceServiceRequest.FromString`` on each value, nothing else.
* **breakdown**: the pure in-process parts per span, without Kafka: ``decode_traces``,
  ``split_by_trace``, re-encoding the pieces, ``OtlpMapper.spans`` on the pieces, and the JSON
  encoding of the events.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

T0 = 1_767_607_200  # 2026-01-05T10:00:00Z
APPS = ("support-bot", "docs-qa", "search", "covid-faq", "billing-agent")
INTENTS = ("billing", "refund", "account", "api", "other")
MODELS = ("gpt-4o-2024-08-06", "claude-3-5-sonnet", "gpt-4o-mini")
DIMENSIONS = ("relevance", "faithfulness", "format")


def build_requests(n_spans: int, per_request: int = 200, seed: int = 0) -> list[bytes]:
    """``otlp_proto`` export requests of ``n_spans`` LLM spans (one trace each), ``per_request`` each."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    rng = random.Random(seed)

    def kv(k, v):
        if isinstance(v, str):
            return KeyValue(key=k, value=AnyValue(string_value=v))
        if isinstance(v, int):
            return KeyValue(key=k, value=AnyValue(int_value=v))
        return KeyValue(key=k, value=AnyValue(double_value=v))

    out, i = [], 0
    while i < n_spans:
        req = ExportTraceServiceRequest()
        by_app = {}
        for _ in range(min(per_request, n_spans - i)):
            app = APPS[rng.randrange(len(APPS))]
            if app not in by_app:
                rs = req.resource_spans.add()
                rs.resource.attributes.append(kv("service.name", app))
                ss = rs.scope_spans.add()
                ss.scope.name = "openinference.instrumentation"
                by_app[app] = ss
            start = int((T0 + i * 0.5) * 1e9)
            model = MODELS[rng.randrange(len(MODELS))]
            attrs = [kv("intent", INTENTS[rng.randrange(len(INTENTS))]), kv("gen_ai.system", "openai"),
                     kv("gen_ai.request.model", model), kv("gen_ai.prompt.hash", f"{rng.getrandbits(48):012x}"),
                     kv("gen_ai.usage.input_tokens", rng.randrange(200, 4000)),
                     kv("gen_ai.usage.output_tokens", rng.randrange(20, 800))]
            attrs += [kv(f"quality.score.{d}", round(rng.uniform(0.4, 1.0), 4)) for d in DIMENSIONS]
            by_app[app].spans.append(Span(
                trace_id=rng.getrandbits(128).to_bytes(16, "big"), span_id=rng.getrandbits(64).to_bytes(8, "big"),
                name="chat " + model, kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start,
                end_time_unix_nano=start + int(rng.uniform(0.3, 4.0) * 1e9), attributes=attrs))
            i += 1
        out.append(req.SerializeToString())
    return out


def _per_span(fn, n_spans: int, min_s: float = 0.3) -> float:
    """µs per span of ``fn()`` (which processes ``n_spans`` spans), best of repeated runs."""
    best, total, runs = float("inf"), 0.0, 0
    while total < min_s or runs < 2:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best / n_spans * 1e6


def breakdown(values: list[bytes], n_spans: int) -> dict:
    """µs per span of each in-process part of the ingest stage (no Kafka)."""
    import msgspec

    from drift.ingest.otlp import OtlpMapper, decode_traces, split_by_trace

    reqs = [decode_traces(v, "otlp_proto") for v in values]
    pieces = [p for r in reqs for p in split_by_trace(r).values()]
    encoded = [p.SerializeToString() for p in pieces]
    enc = msgspec.json.Encoder()
    m = OtlpMapper()
    events = [ev for p in pieces for _, ev in m.spans(p).events]

    def stage2():
        mapper = OtlpMapper()
        for v in encoded:
            mapper.spans(decode_traces(v, "otlp_proto"))

    parts = {
        "decode (FromString via decode_traces)": lambda: [decode_traces(v, "otlp_proto") for v in values],
        "split_by_trace": lambda: [split_by_trace(r) for r in reqs],
        "re-encode pieces (SerializeToString)": lambda: [p.SerializeToString() for p in pieces],
        "OtlpMapper.spans (per-trace pieces)": lambda: [m.spans(p) for p in pieces],
        "JSON-encode events (msgspec)": lambda: [enc.encode(events[i:i + 500]) for i in range(0, len(events), 500)],
    }
    out = {name: _per_span(fn, n_spans) for name, fn in parts.items()}
    out["stage 2 total (decode piece + map)"] = _per_span(stage2, n_spans)
    return out


def _bare_consume(bootstrap: str, topic: str, total: int) -> tuple[float, int]:
    from kafka import KafkaConsumer, TopicPartition
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", max_poll_records=5000, fetch_max_bytes=64 << 20,
                      max_partition_fetch_bytes=16 << 20)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    n = spans = 0
    t0 = time.perf_counter()
    while n < total:
        for recs in c.poll(timeout_ms=500).values():
            for r in recs:
                req = ExportTraceServiceRequest.FromString(r.value)
                spans += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                n += 1
    dt = time.perf_counter() - t0
    c.close()
    return dt, spans


def _counter(metric, **labels) -> float:
    return (metric.labels(**labels) if labels else metric)._value.get()


def run(quick: bool) -> list[dict]:
    from kafka import KafkaProducer

    from drift.core.config import load_settings
    from drift.runtime.ingest import IngestService
    from drift.tools.broker import EmbeddedBroker, create_topics

    n_spans = 4_000 if quick else 100_000
    t_build = time.perf_counter()
    values = build_requests(n_spans)
    build_s = time.perf_counter() - t_build
    sample = values[:50]  # 10,000 spans (all of them with --quick)
    per_span_us = breakdown(sample, min(n_spans, 200 * len(sample)))
    n_events = n_spans * len(DIMENSIONS)
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:6]
        topics = {k: f"bench-ingest-{k}-{tag}" for k in ("spans", "logs", "scores", "retrieval", "dlq", "state")}
        create_topics(broker.bootstrap, {v: 3 if k in ("spans", "logs", "scores", "retrieval") else 1
                                         for k, v in topics.items()})
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=1 << 20, acks=1,
                          max_request_size=8 << 20)
        for v in values:
            p.send(topics["spans"], value=v)  # unkeyed, as the Collector's exporter by default
        p.flush()
        p.close()
        bare_s, bare_spans = _bare_consume(broker.bootstrap, topics["spans"], len(values))
        assert bare_spans == n_spans, (bare_spans, n_spans)
        env = {"DRIFT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DRIFT_OTLP_GROUP_ID": f"bench-ingest-{tag}",
               "DRIFT_OTLP_SPANS_TOPIC": topics["spans"], "DRIFT_OTLP_LOGS_TOPIC": topics["logs"],
               "DRIFT_OTLP_REPARTITION_TOPIC": f"bench-ingest-by-trace-{tag}",
               **{f"DRIFT_TOPICS_{k.upper()}": topics[k] for k in ("scores", "retrieval", "dlq", "state")},
               "DRIFT_HTTP_PORT": "0", "DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000"}
        svc = IngestService(load_settings(env=env), http_host="127.0.0.1")
        th = threading.Thread(target=svc.run, daemon=True)
        th.start()
        deadline = time.monotonic() + 60
        while not svc.health.ready:
            if not th.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("drift ingest otlp did not become ready")
            time.sleep(0.01)
        t0 = time.perf_counter()
        m = svc.metrics
        while _counter(m.events_out, topic=topics["scores"]) < n_events:
            if not th.is_alive():
                raise RuntimeError("drift ingest otlp stopped")
            time.sleep(0.005)
        ours_s = time.perf_counter() - t0
        internal = _counter(m.records_out, topic=f"bench-ingest-by-trace-{tag}")
        svc.request_stop()
        th.join(60)
    spans_s, bare_rate = n_spans / ours_s, n_spans / bare_s
    total_us = sum(v for k, v in per_span_us.items() if not k.startswith("stage 2 total"))
    lines = [f"ingest (drift ingest otlp, {n_spans:,} spans in {len(values):,} requests of ~200, "
             f"{n_events:,} ScoreEvents out)",
             f"  end to end (stage 1 → internal topic → stage 2 → llm.scores): {spans_s:>10,.0f} spans/s in, "
             f"{n_events / ours_s:>10,.0f} events/s out ({ours_s:.1f} s)",
             f"  bare consumer + ExportTraceServiceRequest.FromString:        {bare_rate:>10,.0f} spans/s "
             f"({bare_s:.2f} s)",
             f"  ratio ours / bare: {spans_s / bare_rate:.3f}×   (internal records: {internal:,.0f})",
             "  in-process cost per span (no Kafka):"]
    lines += [f"    {k:<40} {v:>7.2f} µs" for k, v in per_span_us.items()]
    lines.append(f"    {'sum of the parts above':<40} {total_us:>7.2f} µs  (≈ {1e6 / total_us:,.0f} spans/s on one core)")
    row = {"name": "ingest_otlp", "events": n_spans, "messages": len(values), "ours": spans_s,
           "competitor": "bare consumer + FromString (spans/s)", "competitor_events": n_spans,
           "competitor_rate": bare_rate, "ratio": spans_s / bare_rate,
           "notes": f"spans/s; {n_events / ours_s:,.0f} events/s out; service timed from readiness"}
    doc = {"name": "ingest", "spans": n_spans, "requests": len(values), "spans_per_request": 200,
           "events": n_events, "internal_records": internal, "ours_seconds": ours_s,
           "spans_per_s": spans_s, "events_per_s": n_events / ours_s, "bare_seconds": bare_s,
           "bare_spans_per_s": bare_rate, "ratio": None, "ratio_ours_to_bare": spans_s / bare_rate,
           "per_span_us": per_span_us, "build_seconds": build_s, "table": "\n".join(lines)}
    doc.pop("ratio")  # no "ratio" key: __main__ keeps this document under "ingest" with its own table
    return [row, doc]
