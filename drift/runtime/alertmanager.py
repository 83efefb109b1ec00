"""Alerts to Prometheus Alertmanager: ``POST {url}/api/v2/alerts`` to every configured URL.

The sink (:class:`AlertmanagerSink`) keeps the set of *active* alerts (firing ones, and resolved
ones for 15 minutes) keyed by their Alertmanager label set, and a daemon thread posts the whole
set to every URL of the (HA) set:

* at once when something changed (a new firing or resolved alert), retried with capped,
  jittered exponential backoff while no URL accepts it;
* every ``resend_interval`` (60 s) otherwise, as Prometheus does: a firing alert carries
  ``endsAt = now + 4 × resend_interval``, so Alertmanager resolves it by itself only if drift
  stops re-sending it for that long; a resolved alert carries ``endsAt`` = its ``ends_at`` and is
  re-sent for 15 minutes, then forgotten.

Delivery rule (Alertmanager's HA documentation: a client sends every alert to *every* member and
does not load-balance; the members deduplicate notifications between themselves): a change is
*accepted* when at least one URL answered 2xx. ``confirm()`` blocks until every change emitted
so far was accepted, or ``confirm_timeout`` passes and returns ``False``: the commit order of
``drift serve`` then leaves state and offsets where they are (nothing is lost; the outage delays
offsets) and tries again at its next checkpoint, while this thread keeps retrying. Alertmanager's
identity of an alert is its label set, so labels carry no per-episode value (no ``alert_id``,
no times): two instances, or a repeat after a crash, send the same label set and Alertmanager
keeps one alert and sends one notification.

State for operators: ``drift_alertmanager_sent_total{url,result}``,
``drift_alertmanager_pending`` (alerts whose latest change no URL has accepted yet),
``drift_alertmanager_last_success_timestamp_seconds``; :meth:`AlertmanagerSink.problem` is a
readiness check (``/readyz`` answers 503 with the reason once changes have been undeliverable
for longer than ``grace_period``).

>>> from drift.core.alerts import Alert
>>> a = Alert(alert_id="abc", status="firing", rule="quality_drop", detector="percent_drop",
...           severity="warning", labels={"stream": "scores", "app": "bot", "intent": "billing",
...           "dimension": "format", "judge.trust": "untrusted"}, starts_at="2026-01-12T00:00:00.000Z",
...           ends_at=None, window=None, baseline=None, statistic=None, suspected_cause=None,
...           first_action="Pull traces", summary="format fell")
>>> am = to_am_alert(a, now=1768176000.0, resend_interval=60)
>>> sorted(am["labels"].items())  # doctest: +NORMALIZE_WHITESPACE
[('alertname', 'quality_drop'), ('app', 'bot'), ('dimension', 'format'), ('intent', 'billing'),
 ('judge_trust', 'untrusted'), ('severity', 'warning'), ('stream', 'scores')]
>>> am["startsAt"], am["endsAt"]
('2026-01-12T00:00:00.000Z', '2026-01-12T00:04:00.000Z')
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import random
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from drift.core.alerts import Alert
from drift.core.config import AM_TEMPLATE_FIELDS, DEFAULT_ALERTMANAGER, Settings, redact_url
from drift.core.events import format_time
from drift.core.sinks import register_sink

__all__ = ["AlertmanagerSink", "to_am_alert", "am_labels", "label_name", "forward", "RESOLVED_RESEND", "parse_time"]

log = logging.getLogger("drift.alertmanager")

RESOLVED_RESEND = 15 * 60.0  # a resolved alert is re-sent this long, then forgotten
BACKOFF_START = 0.5          # first retry after a failed round (seconds), doubling …
BACKOFF_CAP = 30.0           # … up to this (each wait jittered to 50-100 %)

_BAD = re.compile(r"[^A-Za-z0-9_]")


def label_name(name: str) -> str:
    """``name`` in Prometheus label syntax ``[a-zA-Z_][a-zA-Z0-9_]*`` (other characters become ``_``).

    >>> label_name("judge.trust"), label_name("2xx-rate"), label_name("")
    ('judge_trust', '_2xx_rate', '_')
    """
    out = _BAD.sub("_", name) or "_"
    return "_" + out if out[0].isdigit() else out


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time as alerts carry it (None stays None)."""
    if not text:
        return None
    import datetime as _dt

    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _description(a: Alert) -> str:
    """Window, baseline and statistic in words."""
    parts = []
    if a.window is not None:
        parts.append(f"window {a.window.start} → {a.window.end}: {_num(a.window.value)} over {a.window.n:,} samples")
    if a.baseline is not None:
        kind = a.baseline.kind if isinstance(a.baseline.kind, str) else "baseline"
        parts.append(f"{kind} {a.baseline.start} → {a.baseline.end}: {_num(a.baseline.value)} "
                     f"over {a.baseline.n:,} samples")
    if a.statistic is not None:
        s = a.statistic
        text = f"{s.name} = {_num(s.value)} (threshold {_num(s.threshold)}"
        text += f", p = {s.p_value:.2g})" if s.p_value is not None else ")"
        parts.append(text)
    if isinstance(a.change_at, str):
        parts.append(f"estimated change at {a.change_at}")
    return "; ".join(parts) or a.summary


def _cause(c: Mapping[str, Any] | None) -> str | None:
    if not c:
        return None
    if c.get("kind") in ("prompt_hash_change", "model_change", "index_version_change"):
        return f"{c['kind']}: {c.get('from')} → {c.get('to')} at {c.get('at')}"
    return str(c.get("detail") or c.get("kind"))


class _Fields(dict):
    """Template values: missing ones render empty; values are URL-quoted."""

    def __missing__(self, key: str) -> str:
        return ""


def _template(tpl: str | None, a: Alert) -> str | None:
    if not tpl:
        return None
    values = {k: a.labels.get(k, "") for k in AM_TEMPLATE_FIELDS}
    values.update(rule=a.rule, severity=a.severity, alert_id=a.alert_id, status=a.status)
    return tpl.format_map(_Fields({k: urllib.parse.quote(str(v), safe="") for k, v in values.items()}))


def am_labels(a: Alert) -> dict[str, str]:
    """The alert's Alertmanager label set: ``alertname`` (the rule), ``severity`` and every label
    of the series, names sanitised, empty values left out, nothing per-episode."""
    out = {label_name(k): str(v) for k, v in a.labels.items() if v is not None and str(v) != ""}
    out["alertname"] = a.rule
    out["severity"] = a.severity
    return out


def to_am_alert(a: Alert, *, now: float, resend_interval: float, runbook_url: str | None = None,
                generator_url: str | None = None) -> dict[str, Any]:
    """One Alertmanager API v2 ``postableAlert`` for a drift alert, as of wall-clock ``now``.

    Firing: ``endsAt = now + 4 × resend_interval``. Resolved: ``endsAt`` = the alert's ``ends_at``.
    Times after ``now`` (event time ahead of the wall clock: simulated or replayed future data)
    are clamped to ``now``, so a resolved alert is resolved in Alertmanager and ``startsAt``
    never follows ``endsAt``.
    """
    start = parse_time(a.starts_at)
    start = now if start is None else min(start, now)
    if a.status == "resolved":
        end = parse_time(a.ends_at)
        end = now if end is None else min(end, now)
        start = min(start, end)
    else:
        end = now + 4 * resend_interval
    ann = {"summary": a.summary, "description": _description(a), "first_action": a.first_action,
           "alert_id": a.alert_id}
    cause = _cause(a.suspected_cause)
    if cause:
        ann["suspected_cause"] = cause
    runbook = _template(runbook_url, a)
    if runbook:
        ann["runbook_url"] = runbook
    if isinstance(a.example_trace_ids, list) and a.example_trace_ids:
        ann["example_trace_ids"] = ", ".join(a.example_trace_ids)
    out: dict[str, Any] = {"labels": am_labels(a), "annotations": {k: v for k, v in ann.items() if v},
                           "startsAt": format_time(start), "endsAt": format_time(end)}
    gen = _template(generator_url, a)
    if gen:
        out["generatorURL"] = gen
    return out


@dataclasses.dataclass
class _Entry:
    alert: Alert
    version: int               # the emit sequence number of its latest change
    accepted: int = 0          # the latest version some URL accepted
    forget_at: float | None = None  # monotonic time a resolved alert is dropped


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.sent = Counter("drift_alertmanager_sent_total", "Alerts posted to Alertmanager (once per post) by URL and "
                            "result: success, http_error, connection_error", ["url", "result"], registry=r)
        self.pending = Gauge("drift_alertmanager_pending",
                             "Alerts whose latest change no Alertmanager has accepted yet", registry=r)
        self.last_success = Gauge("drift_alertmanager_last_success_timestamp_seconds",
                                  "Wall-clock time an Alertmanager last accepted a post", registry=r)


class AlertmanagerSink:
    """The Alertmanager sink (see the module docstring).

    Parameters
    ----------
    settings : Settings
        Its ``alertmanager`` table (``urls`` must not be empty).
    registry : prometheus_client.CollectorRegistry, optional
        Where the ``drift_alertmanager_*`` metrics register (the service's; a fresh one by default).
    resend_interval, confirm_timeout, grace_period, resolved_resend : float, optional
        Override the settings (tests use short ones; the settings keep 30 s–3 min).
    clock : callable, optional
        Wall-clock time (``time.time``).
    """

    name = "alertmanager"

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None, *,
                 resend_interval: float | None = None, confirm_timeout: float | None = None,
                 grace_period: float | None = None, resolved_resend: float = RESOLVED_RESEND,
                 backoff_cap: float = BACKOFF_CAP, clock=time.time):
        cfg = {**DEFAULT_ALERTMANAGER, **settings.alertmanager}
        if not cfg["urls"]:
            raise ValueError("alertmanager.urls: no Alertmanager URL configured")
        self.urls: list[str] = list(cfg["urls"])
        self.shown = {u: redact_url(u) for u in self.urls}  # for logs and metric labels
        self.resend_interval = float(resend_interval if resend_interval is not None else cfg["resend_interval"])
        self.confirm_timeout = float(confirm_timeout if confirm_timeout is not None else cfg["confirm_timeout"])
        self.grace_period = float(grace_period if grace_period is not None else cfg["grace_period"])
        self.resolved_resend = resolved_resend
        self.backoff_cap = backoff_cap
        self.timeout = float(cfg["timeout"])
        self.runbook_url, self.generator_url = cfg["runbook_url"], cfg["generator_url"]
        self.clock = clock
        self._headers = {"Content-Type": "application/json", "User-Agent": "drift-alertmanager-sink"}
        self._auth: dict[str, str] = {}  # per URL: the Authorization header (never logged)
        for u in self.urls:
            parts = urllib.parse.urlsplit(u)
            user, password = cfg["username"], cfg["password"]
            if user is None and parts.username is not None:
                user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
            if cfg["bearer_token"]:
                self._auth[u] = f"Bearer {cfg['bearer_token']}"
            elif user is not None:
                self._auth[u] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        self._ssl = self._ssl_context(cfg) if any(u.startswith("https:") for u in self.urls) else None
        self.metrics = _Metrics(registry or CollectorRegistry())
        for u in self.urls:  # the series exist (at 0) from the start
            for result in ("success", "http_error", "connection_error"):
                self.metrics.sent.labels(self.shown[u], result)
        self._cond = threading.Condition()
        self._entries: dict[tuple[tuple[str, str], ...], _Entry] = {}
        self._version = 0
        self._closed = False
        self._failing_since: float | None = None  # monotonic: first failed round of the current outage
        self._last_error = ""
        self._next_round = 0.0   # monotonic: when the thread posts next (0: as soon as something changes)
        self._backoff = 0.0
        self.last_success: float | None = None
        self._thread = threading.Thread(target=self._run, name="drift-alertmanager", daemon=True)
        self._thread.start()

    @staticmethod
    def _ssl_context(cfg: Mapping[str, Any]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=cfg["ca_file"])
        if cfg["cert_file"]:
            ctx.load_cert_chain(cfg["cert_file"], cfg["key_file"])
        if cfg["insecure_skip_verify"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    # -- the Sink protocol --------------------------------------------------------------------
    def emit(self, alerts: Sequence[Alert]) -> None:
        """Take firing and resolved alerts (info events stay on the alert topic only)."""
        with self._cond:
            changed = False
            for a in alerts:
                if a.status not in ("firing", "resolved"):
                    continue
                self._version += 1
                key = tuple(sorted(am_labels(a).items()))
                forget = time.monotonic() + self.resolved_resend if a.status == "resolved" else None
                old = self._entries.get(key)
                if old is not None and a.status == "resolved" and old.alert.status == "firing" \
                        and old.alert.starts_at and a.starts_at and a.starts_at < old.alert.starts_at:
                    # the resolution of an older episode arriving after a newer firing: keep the newer
                    self._entries[key] = dataclasses.replace(old, version=self._version)
                else:
                    self._entries[key] = _Entry(a, self._version, forget_at=forget)
                changed = True
            if changed:
                if self._failing_since is None:  # in an outage the backoff decides
                    self._next_round = 0.0
                self._update_pending()
                self._cond.notify_all()

    def confirm(self, timeout: float | None = None) -> bool:
        """Wait until some URL accepted every change emitted so far: True. False when
        ``timeout`` (``confirm_timeout``) passes first; the thread keeps retrying."""
        deadline = time.monotonic() + (self.confirm_timeout if timeout is None else timeout)
        with self._cond:
            target = self._version
            while True:
                waiting = [e for e in self._entries.values() if e.accepted < min(e.version, target)]
                if not waiting:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    log.warning("Alertmanager has not accepted every alert yet: state and offsets stay where "
                                "they are; retrying", extra={"alerts": len(waiting), "reason": self._last_error})
                    return False
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        """Stop the resend thread (alerts not yet accepted were not confirmed either: their
        input offsets were not committed, so a restart emits them again)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(self.timeout + 5)

    # -- state for operators ------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._cond:
            return sum(1 for e in self._entries.values() if e.accepted < e.version)

    def problem(self) -> str | None:
        """Readiness: a reason when changes have been undeliverable for longer than the grace period."""
        with self._cond:
            since = self._failing_since
            waiting = sum(1 for e in self._entries.values() if e.accepted < e.version)
            error = self._last_error
        if since is None or not waiting:
            return None
        down = time.monotonic() - since
        if down < self.grace_period:
            return None
        return (f"alertmanager unavailable: {waiting} alert(s) not accepted by any of "
                f"{', '.join(self.shown.values())} for {down:.0f} s ({error})")

    def active(self) -> list[dict[str, Any]]:
        """The alerts the next round posts (for inspection and tests)."""
        with self._cond:
            return [self._payload_of(e.alert, self.clock()) for e in self._entries.values()]

    def _update_pending(self) -> None:
        self.metrics.pending.set(sum(1 for e in self._entries.values() if e.accepted < e.version))

    def _payload_of(self, a: Alert, now: float) -> dict[str, Any]:
        return to_am_alert(a, now=now, resend_interval=self.resend_interval, runbook_url=self.runbook_url,
                           generator_url=self.generator_url)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    for key in [k for k, e in self._entries.items()
                                if e.forget_at is not None and e.forget_at <= now and e.accepted >= e.version]:
                        del self._entries[key]
                    dirty = any(e.accepted < e.version for e in self._entries.values())
                    if self._entries and now >= self._next_round and (dirty or self._next_round > 0):
                        break
                    wait = (self._next_round - now) if self._next_round > now else self.resend_interval
                    self._cond.wait(max(0.05, min(wait, 1.0)))
                if self._closed:
                    return
                snapshot = [(key, e.version, e.alert) for key, e in self._entries.items()]
            ok = self._round([a for _, _, a in snapshot])
            with self._cond:
                now = time.monotonic()
                if ok:
                    for key, version, _ in snapshot:
                        e = self._entries.get(key)
                        if e is not None and e.accepted < version:
                            e.accepted = version
                    if self._failing_since is not None:
                        log.info("Alertmanager accepts alerts again",
                                 extra={"outage_s": round(now - self._failing_since, 1)})
                    self._failing_since, self._backoff = None, 0.0
                    self._next_round = now + self.resend_interval
                else:
                    if self._failing_since is None:
                        self._failing_since = now
                    self._backoff = min(self._backoff * 2 if self._backoff else BACKOFF_START, self.backoff_cap)
                    self._next_round = now + self._backoff * random.uniform(0.5, 1.0)
                self._update_pending()
                self._cond.notify_all()

    def _round(self, alerts: list[Alert]) -> bool:
        """POST every active alert to every URL; True when at least one accepted."""
        now = self.clock()
        body = json.dumps([self._payload_of(a, now) for a in alerts]).encode()
        accepted = False
        errors = []
        for u in self.urls:
            result, why = self._post(u, body)
            self.metrics.sent.labels(self.shown[u], result).inc(len(alerts))
            if result == "success":
                accepted = True
            else:
                errors.append(f"{self.shown[u]}: {why}")
        if accepted:
            self.last_success = self.clock()
            self.metrics.last_success.set(self.last_success)
        if errors:
            with self._cond:
                self._last_error = "; ".join(errors)
            log.warning("Alertmanager post failed" + ("" if not accepted else " (another URL accepted it)"),
                        extra={"alerts": len(alerts), "errors": errors})
        return accepted

    def _post(self, url: str, body: bytes) -> tuple[str, str]:
        headers = dict(self._headers)
        if url in self._auth:
            headers["Authorization"] = self._auth[url]
        parts = urllib.parse.urlsplit(url)
        target = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        req = urllib.request.Request(target + "/api/v2/alerts", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                resp.read()
                return "success", ""
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace").strip()
            return "http_error", f"HTTP {exc.code} {detail}".strip()
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            return "connection_error", f"{type(exc).__name__}: {reason}"


def forward(settings: Settings, *, group_id: str | None = None, from_beginning: bool = False,
            stop=None, registry: CollectorRegistry | None = None, commit_interval: float = 1.0,
            sink: AlertmanagerSink | None = None, **consumer_options: Any) -> int:
    """``drift forward``: follow the alert topic as a consumer group and deliver to Alertmanager.

    Offsets are committed only after :meth:`AlertmanagerSink.confirm` says every alert read so
    far was accepted; during an outage they stay, and a restart re-reads (same labels:
    Alertmanager dedupes). ``from_beginning`` applies to a group without committed offsets
    (like ``kafka-console-consumer``); otherwise a new group starts at the topic's end.
    Returns the exit code: 0 stopped (``stop()`` true, SIGINT/SIGTERM), 1 Kafka unreachable.
    ``consumer_options`` go to the KafkaConsumer (e.g. ``session_timeout_ms``).
    """

    from kafka import KafkaConsumer
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    from drift.core.alerts import from_cloudevent

    group = group_id or f"{settings.group_id}-alertmanager"
    topic = settings.topics["alerts"]
    if stop is None:
        from drift.runtime.feed import stop_on_signals

        stop = stop_on_signals()
    session_ms = settings.service["session_timeout_ms"]  # as drift serve's consumer
    consumer_options = {"session_timeout_ms": session_ms, "heartbeat_interval_ms": max(1000, session_ms // 3),
                        **consumer_options}
    try:
        consumer = KafkaConsumer(topic, **settings.kafka_config(), group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest" if from_beginning else "latest",
                                 **consumer_options)
    except KafkaError as exc:
        log.error("cannot reach Kafka", extra={"bootstrap_servers": settings.bootstrap_servers,
                                               "error": f"{type(exc).__name__}: {exc}"})
        return 1
    sink = sink or AlertmanagerSink(settings, registry)
    log.info("forwarding alerts to Alertmanager", extra={"topic": topic, "group_id": group,
                                                         "urls": list(sink.shown.values())})
    positions: dict[Any, int] = {}
    last = time.monotonic()
    forwarded = 0

    def commit() -> None:
        if not positions or not sink.confirm():
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in positions.items()})
            positions.clear()
        except Exception as exc:  # noqa: BLE001 (a rebalance: the new owner re-reads; Alertmanager dedupes)
            log.warning("offset commit failed", extra={"reason": repr(exc)})

    try:
        while not stop():
            batch = consumer.poll(timeout_ms=500)
            for tp, recs in batch.items():
                alerts = []
                for r in recs:
                    try:
                        alerts.append(from_cloudevent(json.loads(r.value)))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("unreadable alert record skipped",
                                    extra={"record": f"{r.topic}/{r.partition}@{r.offset}", "reason": str(exc)})
                sink.emit(alerts)
                forwarded += len(alerts)
                positions[tp] = recs[-1].offset + 1
            if time.monotonic() - last >= commit_interval:
                commit()
                last = time.monotonic()
        log.info("stop requested: confirming and committing")
        commit()
        log.info("stopped", extra={"alerts_read": forwarded, "uncommitted_partitions": len(positions)})
        return 0
    finally:
        sink.close()
        consumer.close(autocommit=False)


register_sink("alertmanager", lambda settings: AlertmanagerSink(settings))
