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

Permanent rejections: a 4xx answer other than 401/403/404/407 (credentials, a wrong URL: the
whole set is refused, an outage to fix) and 408/429 (retry later) means the alert itself was
refused, e.g. a 400 for an alert Alertmanager finds invalid. Retrying it would hold checkpoints
forever, so the post is split into one post per alert to find which alert is refused; that one is
logged as an error (its ``alert_id``, rule, labels and the response body, truncated), counted in
``drift_alertmanager_rejected_total{url}``, treated as delivered and not re-sent until it changes.
5xx, connection errors, 401/403/404/407, 408 and 429 keep the retry with backoff.

Restarts: the set of active alerts is rebuilt from the alert topic at start-up (a thread reads
it from the beginning to its high watermark, keeps the newest status per ``alert_id``, and
re-sends every alert whose latest status is firing, and resolved ones within their 15 minutes by
their CloudEvent ``time``), so Alertmanager does not resolve alerts of episodes that are still
open because the process restarted. Alerts emitted meanwhile by the live path win over the topic's
view. The thread then keeps following the topic for the alerts this sink holds: a resolution (or
a newer episode) another instance or ``drift forward`` wrote is applied, so no instance keeps
re-sending an alert as firing after it was resolved elsewhere. ``restore=False`` (a sink without
Kafka, as in unit tests) skips both.

State for operators: ``drift_alertmanager_sent_total{url,result}``,
``drift_alertmanager_rejected_total{url}``, ``drift_alertmanager_pending`` (alerts whose latest
change no URL has accepted yet), ``drift_alertmanager_last_success_timestamp_seconds``;
:meth:`AlertmanagerSink.problem` is a readiness check (``/readyz`` answers 503 with the reason
once changes have been undeliverable for longer than ``grace_period``).

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
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
# 4xx answers that are not about the alert: credentials, a wrong URL or proxy (every alert is
# refused: an outage to fix, retried and reported by /readyz), request timeout, rate limit
RETRY_4XX = frozenset({401, 403, 404, 407, 408, 429})
RESTORE_SLOW = 60.0          # rebuilding from the alert topic takes longer: a warning (it goes on)
TOPIC_RETRY_CAP = 30.0       # the alert topic unreadable: retried after 1 s doubling to this

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
    accepted: int = 0          # the latest version some URL accepted (or refused for good)
    forget_at: float | None = None  # monotonic time a resolved alert is dropped
    rejected: int = 0          # the latest version refused for good: not re-sent until it changes
    rejected_by: set[str] = dataclasses.field(default_factory=set)  # URLs that refused ``version`` (logged)


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.sent = Counter("drift_alertmanager_sent_total", "Alerts posted to Alertmanager (once per post) by URL and "
                            "result: success, http_error, connection_error, rejected (a 4xx that refuses the "
                            "alert itself: not retried)", ["url", "result"], registry=r)
        self.rejected = Counter("drift_alertmanager_rejected_total", "Alerts an Alertmanager refused for good (a 4xx "
                                "other than 401/403/404/407/408/429, e.g. 400 invalid alert): logged, counted as "
                                "delivered, not retried", ["url"], registry=r)
        self.pending = Gauge("drift_alertmanager_pending",
                             "Alerts whose latest change no Alertmanager has accepted yet", registry=r)
        self.last_success = Gauge("drift_alertmanager_last_success_timestamp_seconds",
                                  "Wall-clock time an Alertmanager last accepted a post", registry=r)


class AlertmanagerSink:
    """The Alertmanager sink (see the module docstring).

    Parameters
    ----------
    settings : Settings
        Its ``alertmanager`` table (``urls`` must not be empty); ``kafka`` and ``topics["alerts"]``
        for the rebuild from the alert topic.
    registry : prometheus_client.CollectorRegistry, optional
        Where the ``drift_alertmanager_*`` metrics register (the service's; a fresh one by default).
    resend_interval, confirm_timeout, grace_period, resolved_resend : float, optional
        Override the settings (tests use short ones; the settings keep 30 s–3 min).
    clock : callable, optional
        Wall-clock time (``time.time``).
    restore : bool
        Rebuild the active alerts from the alert topic at start-up and follow it (default);
        False for a sink without Kafka (unit tests, ``drift demo``).
    consumer_factory : callable, optional
        ``factory(**options) -> KafkaConsumer`` for that (default: one from ``settings.kafka_config()``).
    """

    name = "alertmanager"

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None, *,
                 resend_interval: float | None = None, confirm_timeout: float | None = None,
                 grace_period: float | None = None, resolved_resend: float = RESOLVED_RESEND,
                 backoff_cap: float = BACKOFF_CAP, clock=time.time, restore: bool = True,
                 consumer_factory: Callable[..., Any] | None = None):
        cfg = {**DEFAULT_ALERTMANAGER, **settings.alertmanager}
        if not cfg["urls"]:
            raise ValueError("alertmanager.urls: no Alertmanager URL configured")
        self.settings = settings
        self.topic = settings.topics["alerts"]
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
            for result in ("success", "http_error", "connection_error", "rejected"):
                self.metrics.sent.labels(self.shown[u], result)
            self.metrics.rejected.labels(self.shown[u])
        self._cond = threading.Condition()
        self._entries: dict[tuple[tuple[str, str], ...], _Entry] = {}
        self._version = 0
        self._closed = False
        self._failing_since: float | None = None  # monotonic: first failed round of the current outage
        self._last_error = ""
        self._next_round = 0.0   # monotonic: when the thread posts next (0: as soon as something changes)
        self._backoff = 0.0
        self.last_success: float | None = None
        # the rebuild from the alert topic: None before it ended, else what it restored (for logs and tests)
        self.restored: dict[str, int] | None = None
        self._consumer_factory = consumer_factory or self._kafka_consumer
        self._thread = threading.Thread(target=self._run, name="drift-alertmanager", daemon=True)
        self._thread.start()
        self._topic_thread: threading.Thread | None = None
        if restore:
            self._topic_thread = threading.Thread(target=self._topic_loop, name="drift-alertmanager-topic",
                                                  daemon=True)
            self._topic_thread.start()

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
            self._changed(sum(self._put(a) for a in alerts if a.status in ("firing", "resolved")))

    def _put(self, a: Alert, forget_at: float | None = None) -> bool:
        """One change into the active set (the lock held)."""
        self._version += 1
        if a.status == "resolved":
            # a label that changed during the episode (``judge = "untrusted"`` is set on a quality
            # alert raised while its judge was distrusted, and not on its resolution) would leave
            # the firing label set open in Alertmanager for ever: resolve the set that was sent
            sent = next((e.alert for e in self._entries.values()
                         if e.alert.alert_id == a.alert_id and e.alert.status == "firing"), None)
            if sent is not None and sent.labels != a.labels:
                a = msgspec.structs.replace(a, labels=dict(sent.labels))
        key = tuple(sorted(am_labels(a).items()))
        if a.status == "resolved" and forget_at is None:
            forget_at = time.monotonic() + self.resolved_resend
        old = self._entries.get(key)
        if old is not None and a.status == "resolved" and old.alert.status == "firing" \
                and old.alert.starts_at and a.starts_at and a.starts_at < old.alert.starts_at:
            # the resolution of an older episode arriving after a newer firing: keep the newer
            self._entries[key] = dataclasses.replace(old, version=self._version, rejected_by=set())
        else:
            self._entries[key] = _Entry(a, self._version, forget_at=forget_at if a.status == "resolved" else None)
        return True

    def _changed(self, n: int) -> None:
        """After ``n`` changes (the lock held): post at once (unless in an outage's backoff)."""
        if n:
            if self._failing_since is None:  # in an outage the backoff decides
                self._next_round = 0.0
            self._update_pending()
            self._cond.notify_all()

    def confirm(self, timeout: float | None = None) -> bool:
        """Wait until some URL accepted every change emitted so far: True. False when
        ``timeout`` (``confirm_timeout``) passes first; the thread keeps retrying. An alert an
        Alertmanager refused for good (a 4xx such as 400) counts as delivered."""
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
        input offsets were not committed, so a restart emits them again) and the topic reader."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(self.timeout + 5)
        if self._topic_thread is not None:
            self._topic_thread.join(10)

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
            return [self._payload_of(e.alert, self.clock()) for e in self._entries.values()
                    if e.rejected != e.version]

    @property
    def last_error(self) -> str:
        """The errors of the latest failed post ("" before any)."""
        with self._cond:
            return self._last_error

    def _update_pending(self) -> None:
        self.metrics.pending.set(sum(1 for e in self._entries.values() if e.accepted < e.version))

    def _payload_of(self, a: Alert, now: float) -> dict[str, Any]:
        return to_am_alert(a, now=now, resend_interval=self.resend_interval, runbook_url=self.runbook_url,
                           generator_url=self.generator_url)

    # -- the alert topic: rebuild at start-up, then follow ------------------------------------
    def _kafka_consumer(self, **options: Any) -> Any:
        from kafka import KafkaConsumer

        cfg = self.settings.kafka_config()
        cfg.setdefault("client_id", f"drift-{self.settings.service_name}-alertmanager")
        cfg.setdefault("bootstrap_timeout_ms", int(self.settings.service["connect_timeout"] * 1000))
        return KafkaConsumer(**{**cfg, **options})

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed, seconds)

    def _topic_loop(self) -> None:
        backoff = 1.0
        while not self._closed:
            try:
                self._read_topic()
                return
            except Exception as exc:  # noqa: BLE001 (Kafka unreachable, a broker error: retried)
                log.warning("cannot read the alert topic to rebuild and follow the active Alertmanager alerts; "
                            "retrying", extra={"topic": self.topic, "error": f"{type(exc).__name__}: {exc}",
                                               "retry_in_s": backoff})
            self._sleep(backoff)
            backoff = min(backoff * 2, TOPIC_RETRY_CAP)

    def _decode(self, record: Any) -> Alert | None:
        from drift.core.alerts import from_cloudevent

        try:
            return from_cloudevent(json.loads(record.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable alert record skipped",
                        extra={"record": f"{record.topic}/{record.partition}@{record.offset}", "reason": str(exc)})
            return None

    def _read_topic(self) -> None:
        """Read the alert topic from the beginning to its high watermark (as reported by fetches:
        ``end_offsets`` is wrong on some Kafka-compatible brokers after batched produces),
        rebuild, then follow it until :meth:`close`."""
        from kafka import TopicPartition

        consumer = self._consumer_factory(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                          allow_auto_create_topics=False)
        try:
            parts = consumer.partitions_for_topic(self.topic)
            missing_logged = False
            while not parts:  # no alert topic (yet): nothing to rebuild; `drift serve` creates it
                if self.restored is None:
                    self.restored = {"firing": 0, "resolved": 0, "records": 0, "live": 0}
                if not missing_logged:
                    log.info("no alert topic: no active alerts to rebuild for Alertmanager", extra={"topic": self.topic})
                    missing_logged = True
                self._sleep(5.0)
                if self._closed:
                    return
                parts = consumer.partitions_for_topic(self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            log.info("rebuilding the active Alertmanager alerts from the alert topic",
                     extra={"topic": self.topic, "partitions": len(tps)})
            started = time.monotonic()
            now = self.clock()
            latest: dict[str, Alert] = {}  # alert_id -> newest status: firing, or resolved within its resend
            records, slow_logged = 0, False
            while not self._closed:
                for recs in consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        records += 1
                        a = self._decode(r)
                        if a is None or a.status not in ("firing", "resolved"):
                            continue
                        if a.status == "resolved" and self._resolved_left(a, now) <= 0:
                            latest.pop(a.alert_id, None)  # over: the set stays bounded by open episodes
                        else:
                            latest[a.alert_id] = a
                hw = [consumer.highwater(tp) for tp in tps]
                if all(h is not None and consumer.position(tp) >= h for tp, h in zip(tps, hw)):
                    break
                if not slow_logged and time.monotonic() - started > RESTORE_SLOW:
                    log.warning("rebuilding the active Alertmanager alerts is slow; still reading the alert topic",
                                extra={"topic": self.topic, "records": records})
                    slow_logged = True
            if self._closed:
                return
            self._restore(latest, records, time.monotonic() - started)
            while not self._closed:
                for recs in consumer.poll(timeout_ms=1000).values():
                    for r in recs:
                        a = self._decode(r)
                        if a is not None:
                            self._follow(a)
        finally:
            consumer.close()

    def _resolved_left(self, a: Alert, now: float) -> float:
        """Seconds of its resend period a resolved alert has left (by its CloudEvent ``time``)."""
        t = a.time if a.time is not None else parse_time(a.ends_at)
        return self.resolved_resend - (now - t) if t is not None else 0.0

    def _restore(self, latest: Mapping[str, Alert], records: int, seconds: float) -> None:
        now, mono = self.clock(), time.monotonic()
        todo = [(a, None if a.status == "firing" else mono + self._resolved_left(a, now)) for a in latest.values()]
        todo.sort(key=lambda x: (x[0].starts_at or "", x[0].time or 0.0))  # older episodes first: newer win
        counts = {"firing": 0, "resolved": 0, "records": records, "live": 0}
        with self._cond:
            live = set(self._entries)  # emitted by the live path meanwhile: newer than the topic's view
            for a, forget_at in todo:
                if tuple(sorted(am_labels(a).items())) in live:
                    counts["live"] += 1
                    continue
                self._put(a, forget_at)
            for key in set(self._entries) - live:
                counts[self._entries[key].alert.status] += 1
            self._changed(len(todo) - counts["live"])
            self.restored = counts
        log.info("rebuilt the active Alertmanager alerts from the alert topic (re-sent at once)",
                 extra={"topic": self.topic, "firing": counts["firing"], "resolved": counts["resolved"],
                        "records": records, "kept_live": counts["live"], "seconds": round(seconds, 2)})

    def _follow(self, a: Alert) -> None:
        """A record read after the rebuild: applied when it changes an alert this sink holds (its
        resolution, or a newer episode) written by another instance; others are sent by their writer."""
        if a.status not in ("firing", "resolved"):
            return
        key = tuple(sorted(am_labels(a).items()))
        with self._cond:
            held = self._entries.get(key)
            if held is None:
                return
            h = held.alert
            if h.alert_id == a.alert_id:
                if not (h.status == "firing" and a.status == "resolved"):
                    return
            elif not (a.starts_at and h.starts_at and a.starts_at > h.starts_at):
                return
            self._changed(self._put(a))

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
                snapshot = [(key, e.version, e.alert) for key, e in self._entries.items() if e.rejected != e.version]
                if not snapshot:  # every alert refused for good: nothing to post until one changes
                    self._next_round = time.monotonic() + self.resend_interval
                    continue
            took, refused = self._round([a for _, _, a in snapshot])
            newly_refused: list[tuple[str, Alert, str]] = []
            with self._cond:
                now = time.monotonic()
                for i, (key, version, a) in enumerate(snapshot):
                    e = self._entries.get(key)
                    if e is None or not took[i]:
                        continue
                    e.accepted = max(e.accepted, version)
                    if e.version != version:  # changed meanwhile: the next round sends the change
                        continue
                    if took[i] == "refused":
                        e.rejected = version
                    for url, why in refused.get(i, []):  # logged and counted once per URL and change
                        if url not in e.rejected_by:
                            e.rejected_by.add(url)
                            newly_refused.append((url, a, why))
                if all(took):
                    if self._failing_since is not None:
                        log.info("Alertmanager accepts alerts again",
                                 extra={"outage_s": round(now - self._failing_since, 1)})
                    self._failing_since, self._backoff = None, 0.0
                    # a change that arrived while this round was posting goes at once, not at the resend
                    dirty = any(e.accepted < e.version for e in self._entries.values())
                    self._next_round = 0.0 if dirty else now + self.resend_interval
                else:
                    if self._failing_since is None:
                        self._failing_since = now
                    self._backoff = min(self._backoff * 2 if self._backoff else BACKOFF_START, self.backoff_cap)
                    self._next_round = now + self._backoff * random.uniform(0.5, 1.0)
                for url, a, why in newly_refused:  # counted and logged before confirm() can see it delivered
                    self.metrics.rejected.labels(self.shown[url]).inc()
                    log.error("Alertmanager refused an alert (a 4xx that is not an outage): not retried, counted as "
                              "delivered", extra={"url": self.shown[url], "alert_id": a.alert_id, "rule": a.rule,
                                                  "status": a.status, "labels": am_labels(a), "response": why[:300]})
                self._update_pending()
                self._cond.notify_all()

    def _round(self, alerts: list[Alert]) -> tuple[list[str], dict[int, list[tuple[str, str]]]]:
        """POST every active alert to every URL. Returns per alert ``"accepted"`` (some URL
        answered 2xx), ``"refused"`` (no URL accepted it and one refused it for good) or ``""``
        (to retry), and the refusals ``{index: [(url, response)]}``."""
        now = self.clock()
        payloads = [self._payload_of(a, now) for a in alerts]
        body = json.dumps(payloads).encode()
        accepted = [False] * len(alerts)
        refused: dict[int, list[tuple[str, str]]] = {}
        errors = []
        for u in self.urls:
            result, why = self._post(u, body)
            self.metrics.sent.labels(self.shown[u], result).inc(len(alerts))
            if result == "success":
                accepted = [True] * len(alerts)
            elif result == "rejected" and len(alerts) == 1:
                refused.setdefault(0, []).append((u, why))
            elif result == "rejected":
                # Alertmanager keeps the valid alerts of a post and answers 400 for the others,
                # without saying which: one post per alert finds them
                failed = ""
                for i, p in enumerate(payloads):
                    r, w = self._post(u, json.dumps([p]).encode())
                    self.metrics.sent.labels(self.shown[u], r).inc()
                    if r == "success":
                        accepted[i] = True
                    elif r == "rejected":
                        refused.setdefault(i, []).append((u, w))
                    else:
                        failed = w
                if failed:
                    errors.append(f"{self.shown[u]}: {failed}")
            else:
                errors.append(f"{self.shown[u]}: {why}")
        if any(accepted):
            self.last_success = self.clock()
            self.metrics.last_success.set(self.last_success)
        took = ["accepted" if ok else ("refused" if i in refused else "") for i, ok in enumerate(accepted)]
        if errors:
            with self._cond:
                self._last_error = "; ".join(errors)
            log.warning("Alertmanager post failed" + ("" if not all(took) else " (another URL accepted it)"),
                        extra={"alerts": len(alerts), "errors": errors})
        return took, refused

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
            permanent = 400 <= exc.code < 500 and exc.code not in RETRY_4XX
            return "rejected" if permanent else "http_error", f"HTTP {exc.code} {detail}".strip()
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
    (like ``kafka-console-consumer``); otherwise a new group starts at the topic's end. Whatever
    the group's position, the sink rebuilds the active alerts from the whole topic at start-up
    (see the module docstring): alerts still firing when it starts are re-sent, so a restart or
    a new group does not let Alertmanager resolve them.
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
