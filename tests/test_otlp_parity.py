"""SPEC scenarios through OTLP: spans on Kafka -> `drift ingest otlp` -> `drift serve` -> alerts.

The simulator's JSON events are turned back into what an instrumented application exports: one
span per request (trace) built with the OpenTelemetry SDK, encoded as ``otlp_proto`` export
requests the way the Collector's Kafka exporter writes them (one request per record, unkeyed).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
import threading
import time
import uuid

import msgspec
import pytest

from drift.core.config import load_settings
from kafka_harness import IngestProcess, ServeProcess, read_topic
from scenario_harness import run_lines

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SPANS_PER_REQUEST = 200
_enc = msgspec.json.Encoder()


# -- the simulator's events as OTLP -------------------------------------------------------------

def _nanos(ts: str) -> int:
    """The simulator's millisecond ISO time as exact Unix nanoseconds."""
    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    whole = int(t.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + t.microsecond * 1000


def requests_of(events, per_request: int = SPANS_PER_REQUEST) -> list:
    """One SDK span per trace id (the simulator gives every event its request's trace id).

    Resource ``service.name`` = app; attributes intent, prompt hash/version, request and response
    model, ``quality.score.<dimension>`` per score event and ``retrieval.documents.<i>.document.score``
    per retrieval score; end time = the events' ts. Spans in time order, ``per_request`` per
    ExportTraceServiceRequest (the SDK's own protobuf encoder). ~16k spans take a few seconds.
    """
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class SimIds(RandomIdGenerator):
        """The simulator's trace id for the next span; a random span id."""
        next_trace_id = 0

        def generate_trace_id(self) -> int:
            return self.next_trace_id

    traces: dict[str, list[dict]] = {}
    for ev in events:
        traces.setdefault(ev["trace_id"], []).append(ev)
    ids, exporter, tracers = SimIds(), InMemorySpanExporter(), {}
    for tid, evs in traces.items():
        first = evs[0]
        assert all((e["ts"], e["app"], e["intent"]) == (first["ts"], first["app"], first["intent"]) for e in evs)
        app = first["app"]
        if app not in tracers:
            tp = TracerProvider(resource=Resource.create({"service.name": app}), id_generator=ids)
            tp.add_span_processor(SimpleSpanProcessor(exporter))
            tracers[app] = tp.get_tracer("llm-app")
        attrs: dict = {"intent": first["intent"]}
        for e in evs:
            if "dimension" in e:
                attrs["quality.score." + e["dimension"]] = float(e["score"])
                for name, key in (("gen_ai.prompt.hash", "prompt_hash"), ("gen_ai.prompt.version", "prompt_version"),
                                  ("gen_ai.request.model", "model"), ("gen_ai.response.model", "model")):
                    if key in e:
                        attrs[name] = e[key]
            else:
                for i, s in enumerate(e["scores"]):
                    attrs[f"retrieval.documents.{i}.document.score"] = float(s)
                if e.get("index_version"):
                    attrs["retrieval.index_version"] = e["index_version"]
        end = _nanos(first["ts"])
        ids.next_trace_id = int(tid, 16)
        span = tracers[app].start_span("chat", start_time=end - 1_500_000_000, attributes=attrs)
        span.end(end_time=end)
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.end_time)
    return [encode_spans(spans[i:i + per_request]) for i in range(0, len(spans), per_request)]


def produce(bootstrap: str, topic: str, requests, encoding: str = "otlp_proto", keyed: bool = False) -> None:
    """The requests as the Collector's Kafka exporter writes them: one record per request,
    unkeyed, or (``partition_traces_by_id``) one record per trace keyed by its hex trace id."""
    from kafka import KafkaProducer

    from drift.ingest.otlp import encode_json, split_by_trace

    def end(piece) -> int:
        return max(s.end_time_unix_nano for rs in piece.resource_spans for ss in rs.scope_spans for s in ss.spans)

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 << 20)
    for r in requests:
        # keyed: a request's traces in time order, as from a batch of a few seconds (these
        # requests span hours; the SDK encoder groups them by resource)
        for tid, piece in (sorted(split_by_trace(r).items(), key=lambda kv: end(kv[1])) if keyed else [(None, r)]):
            value = piece.SerializeToString() if encoding == "otlp_proto" else encode_json(piece)
            p.send(topic, key=tid.hex().encode() if tid else None, value=value)
    p.flush()
    p.close()


def mapped(settings, requests) -> collections.Counter:
    """(stream, event JSON) of OtlpMapper on the same requests, as a multiset."""
    from drift.ingest.otlp import OtlpMapper
    from drift.runtime.ingest import build_mapping

    m, out = OtlpMapper(build_mapping(settings)), collections.Counter()
    for r in requests:
        out.update((stream, json.dumps(ev, sort_keys=True)) for stream, ev in m.spans(r).events)
    return out


def produced(bootstrap: str, topics: dict) -> dict[str, list[tuple[int, int, dict]]]:
    """The events on the scores and retrieval topics, each checked to sit under its series key."""
    out = {}
    for stream in ("scores", "retrieval"):
        evs = []
        for r in read_topic(bootstrap, topics[stream]):
            for ev in json.loads(r.value):
                assert r.key.decode() == f"{ev['app']}/{ev['intent']}", (r.key, ev)
                evs.append((r.partition, r.offset, ev))
        out[stream] = evs
    return out


def _env(bootstrap: str, t: dict, group: str) -> dict:
    return {"DRIFT_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DRIFT_OTLP_GROUP_ID": group,
            "DRIFT_OTLP_SPANS_TOPIC": t["spans"], "DRIFT_OTLP_LOGS_TOPIC": t["logs"],
            "DRIFT_OTLP_REPARTITION_TOPIC": t["internal"], "DRIFT_OTLP_ENCODING": "otlp_proto",
            "DRIFT_TOPICS_SCORES": t["scores"], "DRIFT_TOPICS_RETRIEVAL": t["retrieval"],
            "DRIFT_TOPICS_DLQ": t["ingest_dlq"], "DRIFT_TOPICS_STATE": t["ingest_state"],
            "DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000", "DRIFT_SERVICE_CHECKPOINT_INTERVAL": "1s"}


@pytest.fixture
def topics(topic_factory):
    t = {"spans": topic_factory(4, "spans"), "logs": topic_factory(4, "logs"),
         "scores": topic_factory(3, "scores"), "retrieval": topic_factory(3, "retrieval"),
         "ingest_dlq": topic_factory(1, "ingest-dlq"), "ingest_state": topic_factory(1, "ingest-state"),
         "queries": topic_factory(3, "queries"), "alerts": topic_factory(1, "alerts"),
         "dlq": topic_factory(1, "dlq"), "state": topic_factory(1, "state"),
         "internal": f"by-trace-{uuid.uuid4().hex[:8]}"}  # created by the ingest service
    return t


def _wait(what: str, predicate, alive, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert alive(), f"stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- 1. parity: ingest + serve on Kafka == the offline engine on the same events ---------------

@pytest.mark.parametrize("scenario,days,encoding,keyed", [
    ("prompt_cleanup", 13, "otlp_proto", False), ("prompt_cleanup", 13, "otlp_json", True),
    ("provider_update", 17, "otlp_proto", True), ("provider_update", 17, "otlp_json", False)])
def test_scenario_through_otlp_equals_offline_engine(broker, topics, scenario, days, encoding, keyed):
    """A backlog of OTLP spans (all produced before any service starts), `drift ingest otlp` and
    `drift serve` against the broker: the alerts equal the offline engine's on the events exactly
    as the ingest emitted them (read back from the scores and retrieval topics), and the
    scenario's expected rule fires with its expected suspected cause.

    How the ingested events differ from the simulator's: ``ts`` is the span end time in
    nanoseconds / 1e9 (a float of Unix seconds) where the simulator writes a millisecond ISO
    string; a retrieval event carries no ``cost_usd``/token-based cost (the spans carry no token
    counts, so no score event has ``cost_usd``); ``truncated`` is absent (no finish reasons).
    The offline reference therefore runs on the ingested events, not the simulator's.

    Both run with the default ``engine.allowed_lateness`` (600 s): the ingest releases the
    backlog across partitions in event time, so nothing reaches drift serve late.

    Info notices (``prompt_change``) are compared too; they are emitted by the change tracker on
    the first event with a new prompt hash, which both runs see in the same per-series order.
    """
    from drift.runtime.ingest import IngestService
    from drift.tools.simulate import iter_events, simulate

    sim = simulate(scenario, seed=0, days=days, volume=0.2)
    (change,) = sim.truth["changes"]
    requests = requests_of(iter_events(sim))
    env = {**_env(broker.bootstrap, topics, f"ingest-{uuid.uuid4().hex[:6]}"), "DRIFT_OTLP_ENCODING": encoding}
    settings = load_settings(env=env, overrides={"http": {"port": 0}})
    want = mapped(settings, requests)
    want_n = collections.Counter(stream for stream, _ in want.elements())
    produce(broker.bootstrap, topics["spans"], requests, encoding, keyed)  # the whole backlog first

    svc = IngestService(settings, http_host="127.0.0.1")
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    serve_topics = {k: topics[k] for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
    serve = ServeProcess(broker.bootstrap, f"serve-{uuid.uuid4().hex[:6]}", serve_topics)
    try:
        ev_out = svc.metrics.events_out
        _wait("every event produced", lambda: all(ev_out.labels(topics[s])._value.get() >= n
                                                  for s, n in want_n.items()), thread.is_alive)
        msgs = sum(svc.metrics.records_out.labels(topics[s])._value.get() for s in ("scores", "retrieval"))
        _wait("every message consumed by drift serve",
              lambda: serve.metric("drift_messages_consumed_total") >= msgs, lambda: serve.proc.poll() is None)
        serve.wait_for(lambda: serve.metric("drift_checkpoints_total") >= 1, 30, "a checkpoint")
    finally:
        code = serve.stop()
        svc.request_stop()
        thread.join(60)
    assert code == 0 and not thread.is_alive()
    dead = collections.Counter(dict(r.headers)["x-error-class"].decode()
                               for r in read_topic(broker.bootstrap, topics["dlq"]))
    assert not dead, f"drift serve rejected input: {dict(dead)}"
    assert svc.metrics.replayed_events._value.get() == 0

    got = produced(broker.bootstrap, topics)
    have = collections.Counter((s, json.dumps(ev, sort_keys=True)) for s in got for _, _, ev in got[s])
    assert have == want, "the ingest's events differ from OtlpMapper's on the same requests"

    # the offline engine on the ingested events, each topic in partition, offset order
    lines = [_enc.encode(ev) for s in ("scores", "retrieval") for _, _, ev in sorted(got[s], key=lambda x: x[:2])]
    offline, rejected, _ = run_lines(lines, load_settings())
    assert rejected == []
    alerts = [json.loads(r.value) for r in read_topic(broker.bootstrap, topics["alerts"])]
    assert sorted(a["id"] for a in alerts) == sorted(a["id"] for a in offline)

    fired = [a["data"] for a in alerts if a["data"]["status"] == "firing"]
    hits = [d for d in fired if d["rule"] in change["expected_rules"]
            and f"{d['labels']['app']}/{d['labels']['intent']}/{d['labels'].get('dimension')}" in change["series"]]
    assert hits, f"the expected rule did not fire on {change['series']}; fired: {fired}"
    cause = change["expected_cause"]
    for d in hits:
        if cause == "none":
            assert not d["suspected_cause"] or d["suspected_cause"].get("kind") in (None, "none"), d
        else:
            assert (d["suspected_cause"] or {}).get("kind") == cause, d


# -- 2. kill -9 mid-stream: nothing lost, repeats bounded by the replayed counter ----------------


def test_sigkill_mid_stream_loses_no_event(broker, topics):
    """A backlog, `drift ingest otlp` killed with SIGKILL part-way, then restarted to the end.

    Every expected event (key: trace id, dimension) arrives on the scores topic. Events produced
    after the killed process's last checkpoint are produced again by the restarted one
    (at-least-once); their number is at most the restarted process's
    ``drift_ingest_replayed_events_total``, and nothing that was not expected appears.

    The detector stage does NOT remove these repeats: `drift serve` takes a repeated event as a
    new sample, so a repeated score adds one extra sample of an identical value (same ts, same
    score) to its series' windows and CUSUM/rate statistics. Alert ids can then differ from an
    uninterrupted run only where such a doubled sample tips a decision.
    """
    from drift.tools.simulate import iter_events, simulate

    sim = simulate("prompt_cleanup", seed=0, days=13, volume=0.2)  # a backlog long enough to kill mid-stream
    requests = requests_of(iter_events(sim), per_request=40)
    env = _env(broker.bootstrap, topics, f"ingest-{uuid.uuid4().hex[:6]}")
    want = mapped(load_settings(env=env), requests)
    want_scores = collections.Counter(ev for s, ev in want.elements() if s == "scores")
    keys = {(e["trace_id"], e["dimension"]) for e in map(json.loads, want_scores)}
    assert len(keys) == sum(want_scores.values())  # (trace id, dimension) names one event
    produce(broker.bootstrap, topics["spans"], requests)

    first = IngestProcess(env)
    try:
        first.wait_for(lambda: first.metric("drift_ingest_checkpoints_total") >= 1
                       and first.metric(f'drift_ingest_events_produced_total{{topic="{topics["scores"]}"}}')
                       >= 0.3 * len(keys), 120, "part of the backlog")
        done_before = first.metric(f'drift_ingest_events_produced_total{{topic="{topics["scores"]}"}}')
    finally:
        os.kill(first.proc.pid, signal.SIGKILL)
        assert first.proc.wait(30) == -signal.SIGKILL
        first._reader.join(5)
    assert done_before < len(keys), "the kill came after the whole backlog: nothing mid-stream"

    def scores_now():
        return [json.dumps(ev, sort_keys=True) for _, _, ev in produced(broker.bootstrap, topics)["scores"]]

    second = IngestProcess(env)
    try:
        second.wait_for(lambda: not want_scores - collections.Counter(scores_now()), 180, "every event")
        second.wait_for(lambda: second.metric("drift_ingest_checkpoints_total") >= 1, 30, "a checkpoint")
        replayed = second.metric("drift_ingest_replayed_events_total")
        restored = second.metric("drift_ingest_state_restores_total")
    finally:
        assert second.stop() == 0
    have = collections.Counter(scores_now())
    assert {(e["trace_id"], e["dimension"]) for e in map(json.loads, have)} == keys, "events lost"
    assert not want_scores - have and not set(have) - set(want_scores)
    repeats = sum((have - want_scores).values())
    print(f"SIGKILL: {repeats} events repeated, bound {replayed:g} (drift_ingest_replayed_events_total)")
    assert repeats <= replayed, (repeats, replayed)
    assert restored >= 1

    # drift serve does not remove repeats: each is one more sample of its series
    lines = [ev.encode() for ev in sorted(have.elements(), key=lambda ev: json.loads(ev)["ts"])]
    _, rejected, engine = run_lines([x for i, line in enumerate(lines) for x in [line] * (1 + (i < 100))])
    assert rejected == [] and engine.counts["scores.events"] == sum(have.values()) + 100
