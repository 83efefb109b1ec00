"""``drift replay``: the engine offline over JSONL files (or stdin).

Each line holds one event object or a JSON array of events; the fields say which stream an event
belongs to. Lines are read in chunks and run through the same decoder and engine as the service.
Bad lines are reported with file, line number and reason, counted, and never stop the replay.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from drift.core.config import Settings
from drift.core.engine import Engine
from drift.core.events import format_time

__all__ = ["replay", "ReplayReport", "RejectedLine", "iter_lines"]


@dataclasses.dataclass(frozen=True)
class RejectedLine:
    source: str
    line: int
    event: int | None
    error_class: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" + (f"[{self.event}]" if self.event is not None else "")
        return f"{where}: {self.error_class}: {self.reason}"


@dataclasses.dataclass
class ReplayReport:
    lines: int = 0
    events: Counter = dataclasses.field(default_factory=Counter)
    rejected: list[RejectedLine] = dataclasses.field(default_factory=list)
    alerts: list[dict] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    first_t: float | None = None
    last_t: float | None = None
    judge: dict = dataclasses.field(default_factory=dict)  # the judge join's counts (engine counts "judge.*")
    escalations: list = dataclasses.field(default_factory=list)  # (t, app, intent, trace_id)
    cost: dict = dataclasses.field(default_factory=dict)  # the cost rules' request records (engine counts "cost.*")

    @property
    def n_events(self) -> int:
        return sum(self.events.values())

    def summary(self) -> str:
        rate = self.n_events / self.seconds if self.seconds > 0 else float("nan")
        by_class = Counter(r.error_class for r in self.rejected)
        status = Counter((a["data"]["rule"], a["data"]["status"]) for a in self.alerts)
        lines = [
            "── replay summary " + "─" * 50,
            f"lines read        {self.lines:,}",
            "events accepted   " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.events.items())) if self.events else "events accepted   0",
            f"event time        {format_time(self.first_t)} .. {format_time(self.last_t)}",
            f"rejected          {len(self.rejected):,}" + (
                "  (" + ", ".join(f"{k} {v}" for k, v in by_class.most_common()) + ")" if by_class else ""),
            f"alerts            {len(self.alerts):,}" + (
                "  (" + ", ".join(f"{r} {s} {n}" for (r, s), n in sorted(status.items())) + ")" if status else ""),
            f"wall time         {self.seconds:.2f} s  ({rate:,.0f} events/s)",
        ]
        if self.judge or self.escalations:
            j = self.judge
            lines.insert(-1, f"judge join        labels joined {j.get('labels.joined', 0):,} (never joined "
                             f"{j.get('labels.unjoined', 0):,}, waiting for their score {j.get('labels.waiting', 0):,}), "
                             f"thumbs-downs joined {j.get('feedback.joined', 0):,} (waiting for their score "
                             f"{j.get('feedback.waiting', 0):,}); escalated traces {len(self.escalations):,}")
        if self.cost:
            c = self.cost
            skipped = [f"{what} {c[key]:,}" for key, what in (("no_trace_id", "without trace_id"),
                                                             ("no_cost", "without cost_usd"),
                                                             ("no_quality", "without a quality score"),
                                                             ("late", "late events"), ("evicted", "evicted"))
                       if c.get(key)]
            lines.insert(-1, f"cost requests     {c.get('requests', 0):,} (waiting {c.get('waiting', 0):,}"
                             + ("; not counted: " + ", ".join(skipped) if skipped else "") + ")")
        return "\n".join(lines)


def iter_lines(paths: Iterable[str], stdin: IO[bytes] | None = None) -> Iterator[tuple[str, int, bytes]]:
    """(source, line number, bytes) of every non-blank line; ``-`` reads stdin."""
    for path in paths:
        if path == "-":
            fh = stdin or sys.stdin.buffer
            src = "<stdin>"
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield src, n, line
        else:
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        yield path, n, line


def replay(paths: Iterable[str], settings: Settings, *, chunk: int = 20_000, chunk_bytes: int = 8 << 20,
           on_alert: Callable[[dict], None] | None = None,
           on_reject: Callable[[RejectedLine], None] | None = None,
           on_progress: Callable[[ReplayReport], None] | None = None,
           engine: Engine | None = None, stdin: IO[bytes] | None = None) -> ReplayReport:
    """Run the engine over JSONL files; return a report (alerts, rejections, counts).

    Lines are decoded and processed in chunks of at most ``chunk`` lines or ``chunk_bytes``
    bytes, whichever comes first; results do not depend on the chunking.
    """
    engine = engine or Engine(settings)
    decoder = engine.decoder()
    report = ReplayReport()
    started = time.perf_counter()
    buf: list[bytes] = []
    where: list[tuple[str, int]] = []

    def flush():
        decoded = decoder.decode(buf)
        for r in decoded.rejected:
            src, line = where[r.message]
            rl = RejectedLine(src, line, r.event, r.error_class, r.reason)
            report.rejected.append(rl)
            if on_reject:
                on_reject(rl)
        alerts, late = engine.process(decoded)
        for r in late:
            src, line = where[r.message]
            rl = RejectedLine(src, line, r.event, r.error_class, r.reason)
            report.rejected.append(rl)
            if on_reject:
                on_reject(rl)
        for name, batch in decoded.batches.items():
            if len(batch):
                report.events[name] += len(batch)
                lo, hi = float(batch.ts.min()), float(batch.ts.max())
                report.first_t = lo if report.first_t is None else min(report.first_t, lo)
                report.last_t = hi if report.last_t is None else max(report.last_t, hi)
        late_by_stream = Counter(r.stream for r in late)
        for k, v in late_by_stream.items():
            report.events[k] -= v
        for a in alerts:
            report.alerts.append(a)
            if on_alert:
                on_alert(a)
        if engine.escalations:
            report.escalations += engine.take_escalations()
        if engine.judge is not None:
            report.judge = {k[6:]: v for k, v in engine.counts.items() if k.startswith("judge.")}
        if engine.cost is not None:
            report.cost = {k[5:]: v for k, v in engine.counts.items() if k.startswith("cost.")}
            report.cost["waiting"] = len(engine.cost.open)
        buf.clear()
        where.clear()
        report.seconds = time.perf_counter() - started
        if on_progress:
            on_progress(report)

    size = 0
    for src, n, line in iter_lines(paths, stdin):
        report.lines += 1
        buf.append(line)
        where.append((src, n))
        size += len(line)
        if len(buf) >= chunk or size >= chunk_bytes:
            flush()
            size = 0
    if buf:
        flush()
    if engine.judge is not None and report.judge:
        # labels and thumbs-downs still waiting for the score of their trace (not joined pairs held
        # for release in event time: those count as joined)
        waiting = Counter(r[0] for rights in engine.judge.rights.values() for r in rights)
        report.judge["labels.waiting"] = waiting["labels"]
        report.judge["feedback.waiting"] = waiting["feedback"]
    report.seconds = time.perf_counter() - started
    return report
