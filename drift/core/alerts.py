"""Alerts: the typed :class:`Alert`, its deterministic id, one CloudEvents 1.0 codec, rendering.

An alert fires once per episode and resolves once (the detectors keep the hysteresis). Its
``alert_id`` is a pure function of rule, series labels and episode start (event time), so a
replay or a restart that re-reads uncommitted input yields the same ids. Alerts carry labels,
numbers and trace ids only, never prompt, response or query text.

The engine builds :class:`Alert` objects in one place (:func:`from_finding`, :func:`change_notice`,
:func:`state_notice`); :func:`to_cloudevent` / :func:`from_cloudevent` are the only codec
between them and the SPEC's structured CloudEvents JSON (``llm.alerts``, ``drift replay --out``).

>>> from detectors.base import Finding, Side
>>> f = Finding(series=0, status="firing", at=1767607200.0, episode_start=1767607200.0,
...             statistic="pct_drop", value=0.08, threshold=0.05, p_value=1e-9,
...             window=Side(1767002400.0, 1767607200.0, 1800, 0.84),
...             reference=Side(1765792800.0, 1767002400.0, 3600, 0.91),
...             extra={"change_at": 1767002400.0, "cusum": 25.0, "cusum_threshold": 18.2})
>>> a = from_finding("quality_drop", {"stream": "scores", "app": "bot", "intent": "billing",
...                  "dimension": "format"}, f, window_seconds=7 * 86400, now=1767607500.0)
>>> a.summary
'format score for bot/billing fell 8.0% below baseline (0.91 → 0.84) since 2025-12-29 10:00 UTC (1,800 samples; sequential test, 25.0 ≥ 18.2)'
>>> a.change_at
'2025-12-29T10:00:00.000Z'
>>> ev = to_cloudevent(a)
>>> ev["type"], ev["subject"], from_cloudevent(ev) == a
('drift.alert.firing', 'quality_drop/bot/billing/format', True)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from detectors.base import Finding
from drift.core import rules as _rules
from drift.core.events import format_time

__all__ = ["Alert", "Side", "Statistic", "alert_id", "from_finding", "change_notice", "state_notice",
           "reset_notice", "reset_summary",
           "to_cloudevent", "from_cloudevent", "encode", "render", "subject_of", "first_action_of",
           "CAUSE_WINDOW", "STATUSES"]

# A template or model change this long before a window's start still counts as a suspect.
CAUSE_WINDOW = 48 * 3600.0
STATUSES = ("firing", "resolved", "info")


class Side(msgspec.Struct, kw_only=True):
    """One side of the comparison as the alert shows it (values on the series' own scale)."""

    start: str | None
    end: str | None
    n: int
    value: float | None
    kind: str | msgspec.UnsetType = msgspec.UNSET  # baseline | long_term (the reference side)


class Statistic(msgspec.Struct, kw_only=True):
    name: str
    value: Any
    threshold: float
    p_value: float | None


class Alert(msgspec.Struct, kw_only=True):
    """One alert event: the ``data`` of its CloudEvent (see the SPEC's alert format).

    ``source`` and ``time`` go to the CloudEvent envelope, not into ``data``.
    """

    alert_id: str
    status: str
    rule: str
    detector: str
    severity: str
    labels: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    window: Side | None
    baseline: Side | None
    statistic: Statistic | None
    suspected_cause: dict[str, Any] | None
    first_action: str
    summary: str
    example_trace_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    change_at: str | msgspec.UnsetType = msgspec.UNSET  # estimated change time (sequential rules)
    change: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    evidence: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    source: str = "drift/drift"
    time: float | None = None

    @property
    def subject(self) -> str:
        return subject_of(self.rule, self.labels)

    @property
    def type(self) -> str:
        return f"drift.alert.{self.status}"


def alert_id(rule: str, labels: Mapping[str, str], episode_start: float) -> str:
    """Stable fingerprint of rule + series + episode start (event time, to the millisecond)."""
    parts = [rule] + [f"{k}={labels[k]}" for k in sorted(labels)] + [format_time(episode_start) or ""]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def subject_of(rule: str, labels: Mapping[str, str]) -> str:
    tail = [labels.get(k) for k in ("app", "intent", "dimension", "attribute", "topic", "partition") if labels.get(k)]
    return "/".join([rule] + [t for t in tail if t])


def first_action_of(rule: str, kind: str | None = None, configured: str | None = None) -> str:
    """A rule's first action: the configured one, the rule's declaration, else its kind's."""
    if configured:
        return configured
    decl = _rules.RULES.get(rule)
    if decl is not None and decl.first_action:
        return decl.first_action
    k = _rules.RULE_KINDS.get(kind or (decl.kind_name if decl else ""))
    return k.first_action if k else ""


def _summary_fn(rule: str, kind: str | None):
    decl = _rules.RULES.get(rule)
    if decl is not None and decl.summary is not None:
        return decl.summary
    k = _rules.RULE_KINDS.get(kind or (decl.kind_name if decl else ""))
    return k.summary if k else _rules.generic_summary


def _change_at(f: Finding) -> str | msgspec.UnsetType:
    """The estimated change time of a sequential rule's finding (unset for the others)."""
    when = format_time((f.extra or {}).get("change_at"))
    return msgspec.UNSET if when is None else when


def _round(v):
    return None if v is None or v != v else float(f"{v:.6g}")


def from_finding(rule: str, labels: Mapping[str, str], f: Finding, *, window_seconds: float,
                 kind: str | None = None, severity: str | None = None,
                 to_display: Callable[[float], float] = lambda v: v, cause: dict | None = None,
                 evidence: dict | None = None, example_trace_ids: list[str] | None = None,
                 first_action: str | None = None, source: str = "drift/drift", now: float | None = None,
                 value_kind: str = "") -> Alert:
    """The alert for a detector finding of ``rule`` on the series ``labels``."""
    decl = _rules.RULES.get(rule)
    kind = kind or (decl.kind_name if decl else "")
    rk = _rules.RULE_KINDS.get(kind)
    w, r = f.window, f.reference
    window = None if w is None else Side(start=format_time(w.start), end=format_time(w.end), n=w.n,
                                         value=_round(to_display(w.value)))
    baseline = None if r is None else Side(start=format_time(r.start), end=format_time(r.end), n=r.n,
                                           value=_round(to_display(r.value)), kind=f.reference_kind)
    ctx = _rules.SummaryContext(rule, labels, f, None if window is None else msgspec.to_builtins(window),
                                None if baseline is None else msgspec.to_builtins(baseline), window_seconds,
                                value_kind)
    return Alert(
        alert_id=alert_id(rule, labels, f.episode_start), status=f.status, rule=rule,
        detector=rk.alert_detector if rk else kind,
        severity=severity or (decl.severity if decl else "warning"), labels=dict(labels),
        starts_at=format_time(f.episode_start),
        ends_at=format_time(f.at) if f.status == "resolved" else None,
        window=window, baseline=baseline,
        statistic=Statistic(name=f.statistic, value=_round(f.value), threshold=f.threshold, p_value=f.p_value),
        suspected_cause=cause, first_action=first_action_of(rule, kind, first_action),
        summary=_summary_fn(rule, kind)(ctx),
        example_trace_ids=example_trace_ids if example_trace_ids is not None else msgspec.UNSET,
        change_at=_change_at(f),
        evidence=evidence if evidence is not None else msgspec.UNSET,
        source=source, time=now)


def change_notice(rule: str, labels: Mapping[str, str], f: Finding, attribute: str, *,
                  severity: str = "info", first_action: str | None = None, source: str = "drift/drift",
                  now: float | None = None) -> Alert:
    """The info event for a new prompt hash, model or index version (``prompt_change``)."""
    lab = {**labels, "attribute": attribute}
    frm, to = f.extra["from"], f.extra["to"]
    return Alert(
        alert_id=alert_id(rule, lab, f.at), status="info", rule=rule, detector="change_tracker",
        severity=severity, labels=lab, starts_at=format_time(f.at), ends_at=None, window=None, baseline=None,
        statistic=Statistic(name="new_value", value=f.value, threshold=0.0, p_value=None),
        change={"attribute": attribute, "from": frm, "to": to, "at": format_time(f.at)},
        suspected_cause=None, first_action=first_action_of(rule, "change_tracker", first_action),
        summary=f"new {attribute} {to} for {labels.get('app')}/{labels.get('intent')} (was {frm})",
        source=source, time=now)


def reset_summary(rule: str, labels: Mapping[str, str], at: float, by: str = "", reason: str = "") -> str:
    """The summary of an episode resolved by an operator's baseline reset."""
    subject = subject_of(rule, labels)
    who = f" by {by}" if by else ""
    why = f" ({reason})" if reason else ""
    return (f"{subject} resolved by a baseline reset{who}{why} at {(format_time(at) or '')[:16].replace('T', ' ')} UTC: "
            "the new level is accepted and the baseline is re-learned from then on")


def reset_notice(rule: str, labels: Mapping[str, str], at: float, *, by: str = "", reason: str = "",
                 source: str = "drift/drift", now: float | None = None) -> Alert:
    """The ``baseline_reset`` info event: an operator accepted a series' new normal for ``rule``."""
    lab = {**labels, "reset_rule": rule}
    who = f" by {by}" if by else ""
    why = f": {reason}" if reason else ""
    series = "/".join(v for k, v in labels.items() if k in ("app", "intent", "dimension") and v)
    return Alert(
        alert_id=alert_id("baseline_reset", lab, at), status="info", rule="baseline_reset", detector="control",
        severity="info", labels=lab, starts_at=format_time(at), ends_at=None, window=None, baseline=None,
        statistic=None, suspected_cause=None,
        first_action="Nothing to do: the rule re-learns this series' baseline from the data after the reset",
        summary=f"{rule} baseline of {series} reset{who}{why}; re-learned from "
                f"{(format_time(at) or '')[:16].replace('T', ' ')} UTC",
        source=source, time=now)


def state_notice(topic: str, partition: int, reason: str, outcome: str, raw: bytes, *,
                 source: str = "drift/drift", now: float | None = None) -> Alert:
    """The ``state_restore`` info event: a checkpoint could not be used, and what was done."""
    labels = {"stream": "service", "topic": topic, "partition": str(partition)}
    aid = hashlib.sha256(b"state_restore\x1f" + topic.encode() + b"\x1f" + str(partition).encode()
                         + b"\x1f" + hashlib.sha256(raw or b"").digest()).hexdigest()[:24]
    return Alert(
        alert_id=aid, status="info", rule="state_restore", detector="checkpoint", severity="warning",
        labels=labels, starts_at=None, ends_at=None, window=None, baseline=None, statistic=None,
        suspected_cause=None,
        first_action="Check what wrote to the state topic; baselines were rebuilt as described",
        summary=f"checkpoint for {topic}/{partition} rejected ({reason}); {outcome}", source=source, time=now)


# --------------------------------------------------------------------------- the codec
def to_cloudevent(alert: Alert, now: float | None = None) -> dict[str, Any]:
    """The alert as a CloudEvents 1.0 structured-mode object (``time``: the alert's wall-clock
    time, else ``now``, else the current time)."""
    data = msgspec.to_builtins(alert)
    data.pop("source", None)
    data.pop("time", None)
    when = alert.time if alert.time is not None else (now if now is not None else time.time())
    kind = "resolved" if alert.status == "resolved" else ("info" if alert.status == "info" else "firing")
    return {"specversion": "1.0", "type": f"drift.alert.{kind}", "source": alert.source,
            "id": f"{alert.alert_id}/{kind}", "time": format_time(when), "subject": alert.subject,
            "datacontenttype": "application/json", "data": data}


def from_cloudevent(event: Mapping[str, Any]) -> Alert:
    """The :class:`Alert` of a CloudEvent (as built by :func:`to_cloudevent`)."""
    data = dict(event["data"])
    data["source"] = event.get("source", "drift/drift")
    t = event.get("time")
    if t:
        data["time"] = _dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    return msgspec.convert(data, Alert)


_json = msgspec.json.Encoder()


def encode(alert: Alert, now: float | None = None) -> bytes:
    """The alert's CloudEvent as UTF-8 JSON bytes (the value written to ``llm.alerts``)."""
    return _json.encode(to_cloudevent(alert, now))


def render(event: Mapping[str, Any] | Alert) -> str:
    """One readable line (two with a cause) for an alert or its CloudEvent."""
    d = msgspec.to_builtins(event) if isinstance(event, Alert) else event["data"]
    t = event.time if isinstance(event, Alert) else event.get("time")
    status = {"firing": "FIRING", "resolved": "RESOLVED", "info": "INFO"}.get(d["status"], d["status"])
    when = (d.get("ends_at") if d["status"] == "resolved" else d.get("starts_at")) or (
        format_time(t) if isinstance(t, float) else t) or ""
    when = when.replace("T", " ")[:16]
    line = f"{when}  {status:<8} {d['severity']:<8} {subject_of(d['rule'], d['labels'])}  {d['summary']}"
    c = d.get("suspected_cause")
    if c:
        if c.get("kind") in ("prompt_hash_change", "model_change", "index_version_change"):
            line += f"\n{'':>27}suspected cause: {c['kind']} {c['from']} → {c['to']} at {c['at'].replace('T', ' ')[:16]}"
        else:
            line += f"\n{'':>27}suspected cause: {c.get('detail', c.get('kind'))}"
    return line
