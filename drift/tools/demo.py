"""``drift demo``: the whole story live, on the embedded broker, with nothing to configure.

A simulated month of traffic for five apps with four failures injected at once:

* ``prompt_cleanup``: nine words removed from support-bot's payments template on day 11 (new
  prompt hash): the JSON-format score and the format_valid pass rate fall;
* ``provider_update``: docs-qa's relevance falls 6 % on day 15, same template, same model name;
* ``input_shift``: support-bot's users start asking things its golden set (real CLINC150 banking
  and credit-card queries) does not cover, from day 14;
* ``rag_staleness``: covid-faq's retrieval top-1 similarities — real all-MiniLM-L6-v2 + faiss
  scores over the COVID-QA FAQ — fall as off-topic questions mix in from day 18.

It starts a broker (unless one is configured), creates the topics, starts ``drift serve`` (the
real service, in-process), streams the month at accelerated event time, prints each alert as it
arrives on the alert topic, and ends with a scorecard against the ground truth and a timeline
picture. ``--offline`` runs the same events through ``drift replay``'s engine instead.
``--alertmanager URL`` (or ``[alertmanager] urls``) also delivers the alerts to Alertmanager
through :class:`~drift.runtime.alertmanager.AlertmanagerSink` as they arrive, and waits at the end
until every one was accepted (:func:`deliver_to_alertmanager` does it for a list of alerts).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from typing import Any

import msgspec
import numpy as np

from drift.core.alerts import render
from drift.core.config import load_settings
from drift.core.events import kafka_key, stream_of
from drift.tools.scorecard import score, series_of

__all__ = ["run_demo", "demo_events", "keyed_messages", "otel_records", "AlertmanagerDelivery",
           "deliver_to_alertmanager", "alertmanager_urls"]

RAG_APP = "covid-faq"
RAG_DAY = 18
RAG_SHARE = 0.6  # off-topic share of covid-faq's questions after the ramp
RAG_RAMP_DAYS = 3
RAG_RATE = 20.0  # retrieval events per hour


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rag_events(start: float, days: int, pools, seed: int):
    """covid-faq retrieval events: real top-5 similarities, off-topic share rising from day 18."""
    in_pool, off_pool = pools
    rng = np.random.default_rng(seed + 1000)
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    rate = RAG_RATE * (1.0 + 0.6 * np.sin((hour_of_day - 9) / 24 * 2 * np.pi))
    counts = rng.poisson(np.maximum(rate, 0.5))
    t = np.concatenate([start + h * 3600 + np.sort(rng.uniform(0, 3600, c)) for h, c in zip(hours, counts)])
    t0 = start + RAG_DAY * 86400 + 10 * 3600
    share = RAG_SHARE * np.clip((t - t0) / (RAG_RAMP_DAYS * 86400), 0, 1)
    off = rng.random(t.size) < share
    rows = np.where(off, rng.integers(0, len(off_pool), t.size), rng.integers(0, len(in_pool), t.size))
    events = []
    for ti, o, r in zip(t.tolist(), off.tolist(), rows.tolist()):
        s = (off_pool if o else in_pool)[r]
        events.append({"ts": _iso(ti), "app": RAG_APP, "intent": "all", "scores": [round(float(v), 4) for v in s],
                       "index_version": "faq-2026-01-01", "trace_id": f"{rng.integers(1 << 62):016x}"})
    change = {"what": "rag_staleness", "at": _iso(t0), "app": RAG_APP, "intents": ["all"], "stream": "retrieval",
              "dimensions": [], "series": [f"{RAG_APP}/all"], "expected_rules": ["retrieval_drop"],
              "expected_cause": "none",
              "description": f"off-topic questions rise to {RAG_SHARE:.0%} of covid-faq's traffic over "
                             f"{RAG_RAMP_DAYS} days: real all-MiniLM-L6-v2 + faiss top-1 similarities over the "
                             "COVID-QA FAQ fall"}
    return events, change


def demo_events(seed: int, days: int, encoder):
    """Events of the four injected failures, merged in time order, and their ground truth."""
    from drift.tools.rag import similarity_pools
    from drift.tools.simulate import iter_events, simulate

    pc = simulate("prompt_cleanup", seed=seed, days=days)
    pu = simulate("provider_update", seed=seed, days=days)
    qs = simulate("input_shift", seed=seed, days=days, volume=0.5)  # ~6 queries/hour/app: embedding stays quick
    events = [e for e in iter_events(pc) if not ("dimension" in e and e["app"] == "docs-qa")]
    events += [e for e in iter_events(pu) if "dimension" in e and e["app"] == "docs-qa"]
    events += [e for e in iter_events(qs) if "text" in e]
    rag, rag_change = _rag_events(pc.start, days, similarity_pools(encoder, seed=seed), seed)
    events += rag
    events.sort(key=lambda e: e["ts"])
    truth = {"scenario": "demo", "seed": seed, "days": days, "start": _iso(pc.start),
             "changes": pc.truth["changes"] + pu.truth["changes"] + qs.truth["changes"] + [rag_change]}
    return events, truth, pc.start


def keyed_messages(events, max_batch: int = 100, seed: int | None = None):
    """Kafka messages in time order: ``(stream, key bytes, value bytes)``.

    Per key (:func:`drift.core.events.kafka_key`), runs of up to ``max_batch`` events become one JSON
    array (a run of one is a single object); with ``seed`` the run lengths are drawn from
    1..max_batch, so single events and arrays mix. Each key's order is kept.
    """
    enc = msgspec.json.Encoder()
    rng = np.random.default_rng(seed) if seed is not None else None
    draw = (lambda: int(rng.integers(1, max_batch + 1))) if rng is not None else (lambda: max_batch)  # noqa: E731
    buffers: dict[tuple[str, str], list] = {}
    target: dict[tuple[str, str], int] = {}
    out = []
    for e in events:
        k = (stream_of(e), kafka_key(e))
        buf = buffers.setdefault(k, [])
        buf.append(e)
        if len(buf) >= target.setdefault(k, draw()):
            out.append((k[0], k[1].encode(), enc.encode(buf[0] if len(buf) == 1 else buf)))
            buffers[k] = []
            target[k] = draw()
    for (stream, key), buf in buffers.items():
        if buf:
            out.append((stream, key.encode(), enc.encode(buf[0] if len(buf) == 1 else buf)))
    return out


#: the dimension the --otel demo sends as ``gen_ai.evaluation.result`` log records (the others are span attributes)
OTEL_EVAL_DIM = "faithfulness"


def _ts_nanos(ts: str) -> int:
    return round(dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000


def otel_records(events, eval_dim: str = OTEL_EVAL_DIM, window: float = 30.0):
    """The demo's score and retrieval events as the Collector's Kafka exporter would write them.

    Returns ``(records, rest)``: ``(signal, value)`` in event-time order, ``signal`` ``"traces"`` or
    ``"logs"`` and ``value`` an ``otlp_proto`` ``ExportTraceServiceRequest`` or
    ``ExportLogsServiceRequest``, one of each per ``window`` seconds of event time (unkeyed, traces
    mixed), and the events OTLP does not carry (queries), unchanged. Each LLM call (the score
    events of one trace id and time) is an ``llm`` span with its ``quality.score.*`` attributes,
    ``gen_ai.prompt.hash``, ``gen_ai.prompt.version`` and ``gen_ai.request.model``; ``eval_dim``
    is a ``gen_ai.evaluation.result`` log record parented to it instead; each retrieval event is
    a ``retrieve`` span with OpenInference's ``retrieval.documents.<i>.document.score``.
    """
    import hashlib

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(k, v):
        return KeyValue(key=k, value=AnyValue(string_value=v) if isinstance(v, str) else AnyValue(double_value=v))

    def span_id(*parts) -> bytes:
        return hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest()

    rest: list[dict] = []
    calls: dict[tuple, list[dict]] = {}
    order: list[tuple] = []
    for e in events:
        if "dimension" not in e and "scores" not in e:
            rest.append(e)
            continue
        k = (e["trace_id"], e["ts"], e["app"], e.get("intent") or "all", "retrieve" if "scores" in e else "llm")
        if k not in calls:
            calls[k] = []
            order.append(k)
        calls[k].append(e)
    records: list[tuple[str, bytes]] = []
    spans_req, logs_req = ExportTraceServiceRequest(), ExportLogsServiceRequest()
    scopes: dict[str, Any] = {}
    log_scopes: dict[str, Any] = {}
    window_end: int | None = None

    def flush():
        if spans_req.resource_spans:
            records.append(("traces", spans_req.SerializeToString()))
        if logs_req.resource_logs:
            records.append(("logs", logs_req.SerializeToString()))

    for k in order:
        trace_hex, ts, app, intent, kind = k
        end = _ts_nanos(ts)
        if window_end is None or end >= window_end:
            flush()
            spans_req, logs_req, scopes, log_scopes = ExportTraceServiceRequest(), ExportLogsServiceRequest(), {}, {}
            window_end = end + int(window * 1e9)
        if app not in scopes:
            rs = spans_req.resource_spans.add()
            rs.resource.attributes.append(kv("service.name", app))
            scopes[app] = rs.scope_spans.add()
        # OTLP trace ids are 16 bytes: shorter ids (covid-faq's 64-bit ones) are zero-padded on the left
        trace_id, sid = bytes.fromhex(trace_hex.rjust(32, "0")), span_id(trace_hex, ts, app, kind)
        attrs = [kv("intent", intent)]
        if kind == "retrieve":
            (e,) = calls[k]
            attrs += [kv(f"retrieval.documents.{i}.document.score", float(x)) for i, x in enumerate(e["scores"])]
            if e.get("index_version"):
                attrs.append(kv("retrieval.index_version", e["index_version"]))
        else:
            first = calls[k][0]
            for attr, field in (("gen_ai.prompt.hash", "prompt_hash"), ("gen_ai.prompt.version", "prompt_version"),
                                ("gen_ai.request.model", "model")):
                if first.get(field):
                    attrs.append(kv(attr, first[field]))
            for e in calls[k]:
                if e["dimension"] != eval_dim:
                    attrs.append(kv("quality.score." + e["dimension"], float(e["score"])))
                    continue
                if app not in log_scopes:
                    rl = logs_req.resource_logs.add()
                    rl.resource.attributes.append(kv("service.name", app))
                    log_scopes[app] = rl.scope_logs.add()
                log_scopes[app].log_records.append(LogRecord(
                    time_unix_nano=end + 2_000_000_000, event_name="gen_ai.evaluation.result",
                    trace_id=trace_id, span_id=sid,
                    attributes=[kv("gen_ai.evaluation.name", eval_dim),
                                kv("gen_ai.evaluation.score.value", float(e["score"]))]))
        scopes[app].spans.append(Span(trace_id=trace_id, span_id=sid, name=kind, kind=Span.SPAN_KIND_CLIENT,
                                      start_time_unix_nano=end - 1_000_000_000, end_time_unix_nano=end,
                                      attributes=attrs))
    flush()
    return records, rest


class _Printer:
    """Alert lines above a one-line progress display (a TTY), or plain lines (a pipe)."""

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.status = ""
        self.last_plain = 0.0

    def line(self, text: str) -> None:
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K" + text + "\n" + self.status)
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def progress(self, text: str) -> None:
        with self.lock:
            self.status = text
            if self.tty:
                sys.stdout.write("\r\033[K" + text)
                sys.stdout.flush()
            elif time.monotonic() - self.last_plain > 10:
                self.last_plain = time.monotonic()
                sys.stdout.write(text + "\n")
                sys.stdout.flush()

    def done(self) -> None:
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K")
                sys.stdout.flush()
            self.status = ""


def alertmanager_urls(values: list[str] | None) -> list[str]:
    """``--alertmanager`` values (repeatable, each possibly comma-separated) as one list.

    >>> alertmanager_urls(["http://a:9093,http://b:9093", " http://c:9093 "])
    ['http://a:9093', 'http://b:9093', 'http://c:9093']
    """
    return [u.strip() for v in values or [] for u in v.split(",") if u.strip()]


class AlertmanagerDelivery:
    """The demo's alerts to Alertmanager: :meth:`send` hands CloudEvents (as the alert topic
    carries them) to an :class:`~drift.runtime.alertmanager.AlertmanagerSink` (firing and resolved;
    info events stay out), :meth:`finish` waits until every one was accepted and stops the sink.
    The sink does not rebuild from the alert topic: the demo hands it every alert itself."""

    def __init__(self, settings, registry=None):
        from drift.runtime.alertmanager import AlertmanagerSink

        self.sink = AlertmanagerSink(settings, registry, restore=False)
        self.sent = 0

    def send(self, events) -> None:
        from drift.core.alerts import from_cloudevent

        alerts = [from_cloudevent(e) for e in events if e.get("data", {}).get("status") in ("firing", "resolved")]
        self.sink.emit(alerts)
        self.sent += len(alerts)

    def finish(self, timeout: float = 30.0) -> bool:
        """True when some Alertmanager accepted every alert sent within ``timeout``."""
        try:
            return self.sink.confirm(timeout)
        finally:
            self.sink.close()


def deliver_to_alertmanager(settings, events, registry=None, timeout: float = 30.0) -> bool:
    """Send the alert CloudEvents ``events`` to ``settings.alertmanager["urls"]`` and wait until
    they were accepted (True) or ``timeout`` passed (False)."""
    out = AlertmanagerDelivery(settings, registry)
    try:
        out.send(events)
    except BaseException:
        out.finish(0)
        raise
    return out.finish(timeout)


def _build_golden(encoder, workdir: str) -> str:
    from drift.embeddings.golden import GoldenSet, load_golden_sets
    from drift.tools.simulate import QUERY_APPS, golden_texts

    root = os.path.join(workdir, "golden")
    try:
        sets = load_golden_sets(root, expect_encoder_id=encoder.encoder_id)
        if set(sets) == set(QUERY_APPS):
            return root
    except (OSError, ValueError):
        pass
    for app in QUERY_APPS:
        GoldenSet.build(golden_texts(app, per_intent=40), encoder,
                        sources=[{"source": "CLINC150 train", "app": app}]).save(os.path.join(root, app), overwrite=True)
    return root


def _counter(metric) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


def _run_live(args, settings, events, say, printer, deliver=None):
    """Broker (embedded unless configured) → topics → drift serve → produce → alerts back."""
    from kafka import KafkaProducer

    from drift.runtime.feed import follow_alerts
    from drift.runtime.service import Service, setup_logging
    from drift.tools.broker import EmbeddedBroker, create_topics, default_topics

    broker = None
    bootstrap = args.bootstrap_servers or os.environ.get("DRIFT_KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
        say(f"started the embedded Kafka-compatible broker (Tansu) on {bootstrap}")
    try:
        t = settings.topics
        # as `drift broker --create-default-topics`: labels and feedback co-partitioned with scores
        create_topics(bootstrap, default_topics(t))
        settings = load_settings(getattr(args, "config", None), os.environ, {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"drift-demo-{int(time.time())}"},
            "http": {"port": 0}, "service": {"session_timeout_ms": 6000, "checkpoint_interval": 2},
            "queries": {"golden": settings.golden},
            "alertmanager": {"urls": []}})  # the demo delivers to Alertmanager itself (--alertmanager)
        from drift.embeddings.golden import golden_for_settings

        golden, _ = golden_for_settings(settings)
        setup_logging("warning")
        service = Service(settings, golden=golden, encoder_factory=lambda: args._encoder)
        svc_thread = threading.Thread(target=service.run, name="drift-serve", daemon=True)
        svc_thread.start()
        say(f"started `drift serve` (group {settings.group_id}; /metrics on :{_wait_port(service)}); "
            "waiting for its partitions…")
        deadline = time.monotonic() + 60
        while not service.health.ready:
            if time.monotonic() > deadline or not svc_thread.is_alive():
                raise RuntimeError("drift serve did not become ready")
            time.sleep(0.05)
        alerts: list[dict] = []
        stop_follow = threading.Event()

        def on_alert(line):
            ev = json.loads(line)
            alerts.append(ev)
            printer.line(render(ev))
            if deliver is not None:
                deliver.send([ev])

        follower = threading.Thread(target=follow_alerts, args=(settings,), name="drift-alerts", daemon=True,
                                    kwargs={"follow": True, "as_json": True, "write": on_alert,
                                            "stop": stop_follow.is_set})
        follower.start()
        time.sleep(1.0)  # the follower has found the end of the alert topic
        ingest = None
        if getattr(args, "otel", False):  # OTLP in, through `drift ingest otlp` beside drift serve
            ingest, msgs, n_otlp, n_direct = _start_ingest(settings, events, say)
        else:
            msgs = keyed_messages(events)
            say(f"streaming {len(events):,} events in {len(msgs):,} keyed messages…\n")
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20, acks="all",
                                 max_request_size=8 << 20)
        started = time.perf_counter()

        def progress():
            consumed = _counter(service.metrics.events)
            # the slowest input partition's newest event time: how far the whole month has got
            seen = [t for t in (p.engine.newest_event_time for p in list(service.parts.values())) if np.isfinite(t)]
            newest = min(seen) if seen else float("nan")
            day = (newest - args._start) / 86400 if np.isfinite(newest) else 0.0
            rate = consumed / max(time.perf_counter() - started, 1e-9)
            printer.progress(f"  event day {day:5.1f} | {consumed:>10,.0f} events | {rate:>9,.0f} events/s | "
                             f"{len(alerts)} alerts")

        for i, (stream, key, value) in enumerate(msgs):
            producer.send(t.get(stream, stream), key=key, value=value)
            if i % 500 == 0:
                progress()
        producer.flush()
        producer.close()
        want = len(msgs)
        if ingest is not None:  # every event mapped, then drift serve has read every message it produced
            want = _wait_ingest(ingest, n_otlp, n_direct, progress, settings)
        while _counter(service.metrics.messages) < want:
            progress()
            time.sleep(0.25)
            if not svc_thread.is_alive():
                raise RuntimeError("drift serve stopped unexpectedly")
        # let the last alerts reach the alert topic and the follower
        service.request_stop()
        svc_thread.join(60)
        if ingest is not None:
            ingest[0].request_stop()
            ingest[1].join(60)
        expected = _counter(service.metrics.alerts)
        deadline = time.monotonic() + 20
        while len(alerts) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        progress()
        printer.done()
        stop_follow.set()
        follower.join(10)
        elapsed = time.perf_counter() - started
        return alerts, elapsed
    finally:
        if broker is not None:
            broker.stop()


def _start_ingest(settings, events, say):
    """Topics for OTLP, `drift ingest otlp` in a thread, and the messages to produce (OTLP + queries)."""
    from drift.runtime.ingest import IngestService
    from drift.tools.broker import create_topics

    records, rest = otel_records(events)
    n_spans = sum(sig == "traces" for sig, _ in records)
    o = settings.otlp
    # one partition per OTLP topic and for the internal topic: the ingest stage then emits each
    # series in span time order (evaluation records that arrive first wait for their span)
    create_topics(settings.bootstrap_servers, {o["spans_topic"]: 1, o["logs_topic"]: 1, o["repartition_topic"]: 1})
    isettings = load_settings(None, {}, {
        "kafka": {"bootstrap_servers": settings.bootstrap_servers, "group_id": settings.group_id},
        "topics": dict(settings.topics), "http": {"port": 0},
        "service": {"session_timeout_ms": 6000, "checkpoint_interval": 2}})
    ingest = IngestService(isettings, http_host="127.0.0.1")
    thread = threading.Thread(target=ingest.run, name="drift-ingest", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not ingest.health.ready:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("drift ingest otlp did not become ready")
        time.sleep(0.05)
    msgs = keyed_messages(rest)  # produced first: queries are not OTLP; the rest by topic name
    msgs += [(o["spans_topic"] if sig == "traces" else o["logs_topic"], None, v) for sig, v in records]
    n_otlp = len(events) - len(rest)
    say(f"started `drift ingest otlp` (group {isettings.ingest_group_id}); streaming {len(events):,} events: "
        f"{n_otlp:,} as OTLP ({n_spans:,} span and {len(records) - n_spans:,} evaluation-log export requests, "
        f"otlp_proto, to {o['spans_topic']} / {o['logs_topic']}), the {len(rest):,} queries as JSON…\n")
    return (ingest, thread), msgs, n_otlp, len(msgs) - len(records)


def _wait_ingest(ingest, n_otlp: int, n_direct: int, progress, settings) -> int:
    """Wait until the ingest stage produced every event; the messages drift serve has to read."""
    svc, thread = ingest
    m = svc.metrics
    last, moved = -1.0, time.monotonic()
    while (done := _counter(m.events_out)) < n_otlp:
        progress()
        time.sleep(0.25)
        if not thread.is_alive():
            raise RuntimeError("drift ingest otlp stopped unexpectedly")
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > 60:  # evaluations whose span never came: counted, not waited for
            log_dropped = _counter(m.evaluations)
            sys.stderr.write(f"drift ingest otlp: {n_otlp - done:,.0f} events missing after 60 s without "
                             f"progress (evaluations: {log_dropped:,.0f})\n")
            break
    t = settings.topics
    return n_direct + int(m.records_out.labels(t["scores"])._value.get()
                          + m.records_out.labels(t["retrieval"])._value.get())


def _wait_port(service) -> int:
    deadline = time.monotonic() + 10
    while service.http is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return service.http.port if service.http else 0


def _run_offline(settings, events, printer, golden, encoder, deliver=None):
    from drift.core.engine import Engine

    engine = Engine(settings, golden=golden, encoder_factory=lambda: encoder)
    dec = engine.decoder()
    lines = [msgspec.json.encode(e) for e in events]
    alerts = []
    started = time.perf_counter()
    for i in range(0, len(lines), 50_000):
        a, _ = engine.process(dec.decode(lines[i:i + 50_000]))
        for ev in a:
            alerts.append(ev)
            printer.line(render(ev))
        if deliver is not None:
            deliver.send(a)
    return alerts, time.perf_counter() - started


def _timeline(path, events, alerts, truth, start):
    """The demo's picture: one panel per injected failure."""
    from drift.tools.plots import Panel, binned, timeline_png

    def pick(pred):
        sel = [e for e in events if pred(e)]
        t = np.array([dt.datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() for e in sel])
        return sel, t

    def alerts_of(series):
        return [a for a in alerts if series_of(a) == series]

    changes = {c["what"]: dt.datetime.fromisoformat(c["at"].replace("Z", "+00:00")).timestamp()
               for c in truth["changes"]}
    panels = []

    def add(title, series, t, y, width, ylabel, what):
        bt, by = binned(t, y, width)
        at = changes.get(what)
        before = by[bt < at] if at else by
        band = (float(np.mean(before) - np.std(before)), float(np.mean(before) + np.std(before))) if before.size else None
        panels.append(Panel(title, bt, by, ylabel, band, at, alerts_of(series),
                            [(at, what.replace("_", " "))] if at else []))

    sel, t = pick(lambda e: e.get("app") == "support-bot" and e.get("intent") == "billing" and e.get("dimension") == "format")
    add("support-bot/billing · JSON-format judge score (6-hour means)", "support-bot/billing/format", t,
        np.array([e["score"] for e in sel]), 6 * 3600, "score", "prompt_hash_change")
    sel, t = pick(lambda e: e.get("app") == "support-bot" and e.get("intent") == "billing" and e.get("dimension") == "format_valid")
    add("support-bot/billing · format_valid failure rate (6-hour)", "support-bot/billing/format_valid", t,
        1 - np.array([e["score"] for e in sel]), 6 * 3600, "failure rate", "prompt_hash_change")
    sel, t = pick(lambda e: e.get("app") == "docs-qa" and e.get("intent") == "api" and e.get("dimension") == "relevance")
    add("docs-qa/api · relevance score (daily means)", "docs-qa/api/relevance", t,
        np.array([e["score"] for e in sel]), 86400, "score", "provider_update")
    sel, t = pick(lambda e: e.get("app") == RAG_APP and "scores" in e)
    add("covid-faq · retrieval top-1 similarity, all-MiniLM-L6-v2 + faiss over COVID-QA (6-hour means)",
        f"{RAG_APP}/all", t, np.array([e["scores"][0] for e in sel]), 6 * 3600, "cosine", "rag_staleness")
    return timeline_png(path, panels, "llm-drift demo: four failures that infrastructure metrics miss")


def run_demo(args) -> int:
    from drift.embeddings.encoder import Encoder
    from drift.embeddings.golden import golden_for_settings

    # Alertmanager URLs first (a bad URL is a config error before the minutes of set-up):
    # --alertmanager, else [alertmanager] urls / DRIFT_ALERTMANAGER_URLS
    urls = alertmanager_urls(getattr(args, "alertmanager", None))
    am_settings = load_settings(getattr(args, "config", None), os.environ,
                                {"alertmanager": {"urls": urls or None}})
    workdir = args.workdir or os.path.join("out", "demo")
    os.makedirs(workdir, exist_ok=True)
    printer = _Printer()
    say = lambda *a: printer.line(" ".join(str(x) for x in a))  # noqa: E731
    say("llm-drift demo: a month of LLM traffic (5 apps) with four quiet failures injected at once.")
    say("Latency, errors and spend stay green; only the distributions move.\n")
    t0 = time.perf_counter()
    encoder = Encoder()
    args._encoder = encoder
    golden_dir = _build_golden(encoder, workdir)
    events, truth, start = demo_events(args.seed, args.days, encoder)
    args._start = start
    with open(os.path.join(workdir, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=1)
    say(f"prepared {len(events):,} events and golden sets ({golden_dir}) in {time.perf_counter() - t0:.0f} s:")
    for c in sorted(truth["changes"], key=lambda c: c["at"]):
        say(f"  day {(dt.datetime.fromisoformat(c['at'].replace('Z', '+00:00')).timestamp() - start) / 86400:4.1f}  "
            f"{c['what']:<20} {c['app']}")
    say("")
    settings = load_settings(getattr(args, "config", None), os.environ, {"queries": {"golden": golden_dir}})
    deliver = None
    if am_settings.alertmanager["urls"]:
        from drift.core.config import redact_url

        shown = ", ".join(redact_url(u) for u in am_settings.alertmanager["urls"])
        deliver = AlertmanagerDelivery(am_settings)
        say(f"sending firing and resolved alerts to Alertmanager: {shown}\n")
    try:
        if args.offline:
            golden, _ = golden_for_settings(settings)
            alerts, elapsed = _run_offline(settings, events, printer, golden, encoder, deliver)
        else:
            alerts, elapsed = _run_live(args, settings, events, say, printer, deliver)
    except BaseException:
        if deliver is not None:
            deliver.finish(0)
        raise
    delivered = True
    if deliver is not None:  # nothing is lost when the demo exits: wait until Alertmanager has them all
        delivered = deliver.finish(30.0)
        resend = am_settings.alertmanager["resend_interval"]
        if delivered:
            say(f"\nAlertmanager ({shown}) accepted all {deliver.sent} firing/resolved alerts; the firing ones "
                f"stay active there for {4 * resend:.0f} s (4 × resend_interval: nothing re-sends them once "
                "the demo has ended)")
        else:
            say(f"\nAlertmanager ({shown}) did not accept every alert within 30 s: "
                f"{deliver.sink.problem() or deliver.sink.last_error or 'no answer'}")
    with open(os.path.join(workdir, "alerts.jsonl"), "w") as fh:
        for a in alerts:
            fh.write(json.dumps(a) + "\n")
    card = score(truth, alerts)
    say(f"\nprocessed {len(events):,} events in {elapsed:.0f} s ({len(events) / max(elapsed, 1e-9):,.0f} events/s); "
        f"{len(alerts)} alert events")
    say("\n── scorecard against the ground truth " + "─" * 40)
    say(card.table())
    png = _timeline(os.path.join(workdir, "timeline.png"), events, alerts, truth, start)
    say(f"\ntimeline picture: {png}")
    say(f"alerts as CloudEvents: {os.path.join(workdir, 'alerts.jsonl')}")
    say(f"total {time.perf_counter() - t0:.0f} s")
    return 0 if card.ok and delivered else 1
