"""Alerts: deterministic ids, CloudEvents 1.0 envelopes, summaries, suspected causes, rendering.

An alert fires once per episode and resolves once (the detectors keep the hysteresis). Its
``alert_id`` is a pure function of rule, series labels and episode start (event time), so a
replay or a restart that re-reads uncommitted input yields the same ids. Alerts carry labels and
numbers only, never prompt, response or query text.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any, Callable

from detectors.base import Finding
from drift.events import format_time

__all__ = ["alert_id", "AlertFactory", "render", "CAUSE_WINDOW", "FIRST_ACTIONS", "subject_of", "state_notice"]

# A template or model change this long before a window's start still counts as a suspect.
CAUSE_WINDOW = 48 * 3600.0

FIRST_ACTIONS = {
    "quality_drop": "Pull traces from the degradation period; check the prompt hash timeline",
    "quality_shift": "Compare score histograms before and after; pull traces from the shifted period",
    "retrieval_drop": "Check index freshness and ingestion jobs; compare recent queries with indexed documents",
    "flag_rate_spike": "Sample flagged responses since the spike; check model and policy changes",
    "format_failure_spike": "Diff the prompt template around the change; validate sample outputs against the schema",
    "prompt_change": "Watch quality for this app/intent over the next 48 hours",
    "query_centroid_shift": "Review queries far from the golden set; extend the golden set or route the new intents",
}

_DETECTOR_NAMES = {"percent_drop": "percent_drop", "ks": "ks_2samp", "rate_ratio": "rate_ratio",
                   "change_tracker": "change_tracker", "centroid": "centroid_shift"}


def alert_id(rule: str, labels: Mapping[str, str], episode_start: float) -> str:
    """Stable fingerprint of rule + series + episode start (event time, to the millisecond)."""
    parts = [rule] + [f"{k}={labels[k]}" for k in sorted(labels)] + [format_time(episode_start) or ""]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def subject_of(rule: str, labels: Mapping[str, str]) -> str:
    tail = [labels.get(k) for k in ("app", "intent", "dimension", "attribute", "topic", "partition") if labels.get(k)]
    return "/".join([rule] + tail)


def _duration(seconds: float) -> str:
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= unit and seconds % unit == 0:
            k = int(seconds // unit)
            return f"{k} {name}{'s' if k != 1 else ''}"
    return f"{seconds:g} s"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


class AlertFactory:
    """Builds alert CloudEvents from detector findings.

    Parameters
    ----------
    service_name : str
        Goes into ``source`` as ``drift/<service_name>``.
    now : callable
        Wall clock for the CloudEvent ``time`` (event-time fields never use it).
    """

    def __init__(self, service_name: str = "drift", now: Callable[[], float] = time.time):
        self.source = f"drift/{service_name}"
        self.now = now

    def envelope(self, kind: str, data: dict) -> dict:
        return {"specversion": "1.0", "type": f"drift.alert.{kind}", "source": self.source,
                "id": f"{data['alert_id']}/{kind}", "time": format_time(self.now()),
                "subject": subject_of(data["rule"], data["labels"]),
                "datacontenttype": "application/json", "data": data}

    def from_finding(self, rule: str, detector: str, severity: str, labels: dict, f: Finding,
                     *, window_seconds: float, to_display: Callable[[float], float] = lambda v: v,
                     cause: dict | None = None, extra: dict | None = None) -> dict:
        aid = alert_id(rule, labels, f.episode_start)
        status = f.status
        w, r = f.window, f.reference
        window = None if w is None else {"start": format_time(w.start), "end": format_time(w.end),
                                         "n": w.n, "value": _round(to_display(w.value))}
        baseline = None if r is None else {"start": format_time(r.start), "end": format_time(r.end),
                                           "n": r.n, "value": _round(to_display(r.value)),
                                           "kind": f.reference_kind}
        data: dict[str, Any] = {
            "alert_id": aid, "status": status, "rule": rule,
            "detector": _DETECTOR_NAMES.get(detector, detector), "severity": severity,
            "labels": dict(labels),
            "starts_at": format_time(f.episode_start),
            "ends_at": format_time(f.at) if status == "resolved" else None,
            "window": window, "baseline": baseline,
            "statistic": {"name": f.statistic, "value": _round(f.value),
                          "threshold": f.threshold, "p_value": f.p_value},
            "suspected_cause": cause,
            "first_action": FIRST_ACTIONS.get(rule, ""),
            "summary": _summary(rule, labels, f, window, baseline, window_seconds),
        }
        if extra:
            data.update(extra)
        return self.envelope("resolved" if status == "resolved" else "firing", data)

    def change_notice(self, labels: dict, f: Finding, attribute: str) -> dict:
        """The ``prompt_change`` info event for a new prompt hash or model."""
        lab = {**labels, "attribute": attribute}
        aid = alert_id("prompt_change", lab, f.at)
        frm, to = f.extra["from"], f.extra["to"]
        data = {
            "alert_id": aid, "status": "info", "rule": "prompt_change", "detector": "change_tracker",
            "severity": "info", "labels": lab, "starts_at": format_time(f.at), "ends_at": None,
            "window": None, "baseline": None,
            "statistic": {"name": "new_value", "value": f.value, "threshold": 0.0, "p_value": None},
            "change": {"attribute": attribute, "from": frm, "to": to, "at": format_time(f.at)},
            "suspected_cause": None, "first_action": FIRST_ACTIONS["prompt_change"],
            "summary": (f"new {attribute} {to} for {labels.get('app')}/{labels.get('intent')} "
                        f"(was {frm})"),
        }
        return self.envelope("info", data)


def state_notice(factory: "AlertFactory", topic: str, partition: int, reason: str, outcome: str,
                 raw: bytes) -> dict:
    """The ``state_restore`` info event: a checkpoint could not be used, and what was done."""
    labels = {"stream": "service", "topic": topic, "partition": str(partition)}
    aid = hashlib.sha256(b"state_restore\x1f" + topic.encode() + b"\x1f" + str(partition).encode()
                         + b"\x1f" + hashlib.sha256(raw or b"").digest()).hexdigest()[:24]
    data = {
        "alert_id": aid, "status": "info", "rule": "state_restore", "detector": "checkpoint",
        "severity": "warning", "labels": labels, "starts_at": None, "ends_at": None,
        "window": None, "baseline": None, "statistic": None, "suspected_cause": None,
        "first_action": "Check what wrote to the state topic; baselines were rebuilt as described",
        "summary": f"checkpoint for {topic}/{partition} rejected ({reason}); {outcome}",
    }
    return factory.envelope("info", data)


def _round(v):
    return None if v is None or v != v else float(f"{v:.6g}")


def _summary(rule, labels, f: Finding, window, baseline, window_seconds) -> str:
    where = f"{labels.get('app')}/{labels.get('intent')}"
    dim = labels.get("dimension", "")
    ref = "its long-term reference" if f.reference_kind == "long_term" else "baseline"
    # the span of the window that decided (a rule's short window, or the whole window)
    w = f.window
    decided = w.end - w.start if w is not None and math.isfinite(w.end - w.start) and w.end > w.start else None
    span = _duration(decided if decided else window_seconds)
    wv = window["value"] if window else None
    bv = baseline["value"] if baseline else None
    if f.status == "resolved":
        return f"{subject_of(rule, labels)} recovered: {f.statistic} now {f.value:.3g} (threshold {f.threshold:g})"
    if rule == "quality_drop":
        return (f"{dim} score for {where} fell {_pct(f.value)} below {ref} ({bv:.3g} → {wv:.3g}) "
                f"over {span}")
    if rule == "quality_shift":
        return (f"{dim} score distribution for {where} shifted from {ref} (KS D={f.value:.3f}, "
                f"p={f.p_value:.2g}; median {bv:.3g} → {wv:.3g}) over {span}")
    if rule == "retrieval_drop":
        return (f"median top-1 retrieval similarity for {where} fell {_pct(f.value)} below {ref} "
                f"({bv:.3g} → {wv:.3g}) over {span}")
    if rule == "query_centroid_shift":
        cov = (f.extra or {}).get("coverage")
        cov_text = f"; {100 * cov:.0f}% of them covered by the golden set" if cov is not None else ""
        return (f"queries of {labels.get('app')} moved away from the golden set: centroid cosine distance "
                f"{f.value:.3f} (threshold {f.threshold:g}) over {span} of {window['n'] if window else 0:,} queries"
                f"{cov_text}")
    if rule in ("flag_rate_spike", "format_failure_spike"):
        what = f"{dim} failure rate" if rule == "format_failure_spike" else f"{dim} rate"
        return (f"{what} for {where} rose to {f.value:.1f}× {ref} ({_pct(bv)} → {_pct(wv)}) "
                f"over {span}")
    return f"{subject_of(rule, labels)}: {f.statistic}={f.value:.3g} (threshold {f.threshold:g})"


def render(event: Mapping[str, Any]) -> str:
    """One readable line (two with a cause) for an alert CloudEvent."""
    d = event["data"]
    status = {"firing": "FIRING", "resolved": "RESOLVED", "info": "INFO"}.get(d["status"], d["status"])
    when = (d.get("ends_at") if d["status"] == "resolved" else d.get("starts_at")) or event.get("time") or ""
    when = when.replace("T", " ")[:16]
    line = f"{when}  {status:<8} {d['severity']:<8} {subject_of(d['rule'], d['labels'])}  {d['summary']}"
    c = d.get("suspected_cause")
    if c:
        if c.get("kind") in ("prompt_hash_change", "model_change", "index_version_change"):
            line += f"\n{'':>27}suspected cause: {c['kind']} {c['from']} → {c['to']} at {c['at'].replace('T', ' ')[:16]}"
        else:
            line += f"\n{'':>27}suspected cause: {c.get('detail', c.get('kind'))}"
    return line
