"""Score alerts against a simulation's ground truth: detected or missed, by which rule, how late,
with which suspected cause, and which alerts were false.

Used by ``drift demo``, the tests and the benchmarks; :func:`replay_simulation` runs a
simulation through the real decoder and engine, a chunk of JSON-encoded events at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

__all__ = ["ChangeResult", "Scorecard", "score", "series_of", "replay_simulation"]

_FLAGS = ("refusal", "hallucination", "safety")


def _t(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def series_of(alert: dict) -> str:
    """``app/intent[/dimension]`` of an alert."""
    lab = alert["data"]["labels"]
    return "/".join(lab[k] for k in ("app", "intent", "dimension") if k in lab)


def _applies(rule: str, series: str) -> bool:
    dim = series.split("/")[-1] if series.count("/") == 2 else None
    if rule == "format_failure_spike":
        return dim == "format_valid"
    if rule == "flag_rate_spike":
        return dim in _FLAGS
    if rule in ("quality_drop", "quality_shift"):
        return dim is not None and dim != "format_valid" and dim not in _FLAGS
    return True


@dataclasses.dataclass
class ChangeResult:
    """How one injected change was caught."""

    what: str
    at: float
    series: list[str]
    expected_rules: list[str]
    expected_cause: str
    rules_fired: dict[str, float]  # rule -> delay (s) of its first alert after the change
    causes: set[str]
    missed_series: list[str]

    @property
    def detected(self) -> bool:
        return bool(self.rules_fired) and not self.missed_series

    @property
    def delay(self) -> float | None:
        return min(self.rules_fired.values()) if self.rules_fired else None

    @property
    def cause_ok(self) -> bool:
        return self.causes == {self.expected_cause} if self.causes else False


@dataclasses.dataclass
class Scorecard:
    changes: list[ChangeResult]
    false_alerts: list[dict]
    info: list[dict]

    @property
    def ok(self) -> bool:
        return all(c.detected and c.cause_ok for c in self.changes) and not self.false_alerts

    def table(self) -> str:
        rows = [("injected failure", "detected", "rules (delay)", "suspected cause")]
        for c in self.changes:
            rules = ", ".join(f"{r} ({d / 3600:.0f} h)" for r, d in sorted(c.rules_fired.items(), key=lambda p: p[1]))
            cause = ", ".join(sorted(c.causes)) or "-"
            mark = "yes" if c.detected else ("partly" if c.rules_fired else "NO")
            if c.causes and not c.cause_ok:
                cause += f" (expected {c.expected_cause})"
            rows.append((f"{c.what} @ {dt.datetime.fromtimestamp(c.at, dt.UTC):%Y-%m-%d %H:%M}",
                         mark, rules or "-", cause))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"false alerts: {len(self.false_alerts)}"
                     + ("" if not self.false_alerts else " — " + "; ".join(
                         f"{a['data']['rule']} on {series_of(a)} at {a['data']['starts_at'][:16]}"
                         for a in self.false_alerts[:5])))
        return "\n".join(lines)


def score(truth: dict, alerts: Iterable[dict]) -> Scorecard:
    """Match firing alerts to the truth's changes (by series, rule and time)."""
    alerts = list(alerts)
    firing = [a for a in alerts if a["data"]["status"] == "firing"]
    info = [a for a in alerts if a["data"]["status"] == "info"]
    claimed: set[str] = set()
    results = []
    for ch in truth.get("changes", []):
        at = _t(ch["at"])
        allowed = set(ch["expected_rules"]) | set(ch.get("allowed_rules", []))
        fired: dict[str, float] = {}
        causes: set[str] = set()
        missed = []
        for s in ch["series"]:
            mine = [a for a in firing if series_of(a) == s and a["data"]["rule"] in allowed
                    and _t(a["data"]["starts_at"]) >= at]
            for a in mine:
                claimed.add(a["id"])
                d = _t(a["data"]["starts_at"]) - at
                r = a["data"]["rule"]
                fired[r] = min(fired.get(r, d), d)
                if a["data"].get("suspected_cause"):
                    causes.add(a["data"]["suspected_cause"]["kind"])
            want = {r for r in ch["expected_rules"] if _applies(r, s)}
            got = {a["data"]["rule"] for a in mine}
            if want and (not (got & want) if ch.get("expected_any") else not want <= got):
                missed.append(s)
        results.append(ChangeResult(ch["what"], at, list(ch["series"]), list(ch["expected_rules"]),
                                    ch.get("expected_cause", "none"), fired, causes, missed))
    false = [a for a in firing if a["id"] not in claimed]
    return Scorecard(results, false, info)


def replay_simulation(sim, engine=None, chunk: int = 100_000, batch: int = 1):
    """Run a :class:`~drift.tools.simulate.Simulation` through the decoder and engine as Kafka
    message bytes (one JSON event each, or JSON arrays of ``batch`` events as the SPEC allows),
    ``chunk`` events at a time, without holding all of them in memory. Returns ``(alerts,
    rejected, engine)``: CloudEvents dicts, rejections, the engine."""
    import msgspec

    from drift.core.config import load_settings
    from drift.core.engine import Engine
    from drift.tools.simulate import iter_events

    enc = msgspec.json.Encoder()
    engine = engine or Engine(load_settings())
    dec = engine.decoder()
    alerts: list[dict] = []
    rejected: list = []
    buf: list[bytes] = []

    def flush():
        d = dec.decode(buf)
        a, r = engine.process(d)
        alerts.extend(a)
        rejected.extend(list(d.rejected) + list(r))
        buf.clear()

    group: list[dict] = []
    per_chunk = max(chunk // max(batch, 1), 1)
    for e in iter_events(sim):
        if batch <= 1:
            buf.append(enc.encode(e))
        else:
            group.append(e)
            if len(group) >= batch:
                buf.append(enc.encode(group))
                group.clear()
        if len(buf) >= per_chunk:
            flush()
    if group:
        buf.append(enc.encode(group))
    flush()
    return alerts, rejected, engine
