"""The engine: routes decoded events to series and rules, runs the detectors, builds alerts.

One engine serves ``drift replay``, ``drift serve`` and the in-memory API; only sources and
sinks differ. It runs one generic loop over the registered input streams
(:mod:`drift.core.streams`) and the configured rules (:mod:`drift.core.rules`): every series
(a stream's ``series_fields``, e.g. (app, intent, dimension) of the scores) has its own
event-time clock, so results never depend on how events were batched or how Kafka keys were
spread over partitions (all of a key's events share a partition and keep their order).

Per batch and stream: map events to series ids → drop late events (older than the series'
watermark) and far-future ones (beyond ``max_future`` past the wall clock) → track the stream's
change attributes (prompt hash, model, index version) per (app, intent) → feed each rule's
detector the values the stream gives it → turn findings into :class:`~drift.core.alerts.Alert`
objects, newest information last.

>>> from drift import Engine
>>> engine = Engine()
>>> events = [{"ts": 1767225600 + 60 * i, "app": "bot", "intent": "billing", "dimension": "format",
...            "score": 0.9} for i in range(100)]
>>> engine.feed(events)
[]
>>> engine.counts["scores.events"]
100
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from detectors.changes import ChangeTracker
from detectors.windows import EventClock
from drift.core import alerts as _alerts
from drift.core.alerts import CAUSE_WINDOW, Alert
from drift.core.config import RuleSpec, Settings, load_settings
from drift.core.cost import TraceCost
from drift.core.events import Decoded, EventDecoder, format_time
from drift.core.judge import JudgeJoin, pairs_columns
from drift.core.rules import RULE_KINDS, RuleKind
from drift.core.streams import STREAMS, CostStream, SeriesInfo, Stream

__all__ = ["Engine", "EventRejection", "SeriesTable", "RuleRunner", "StreamState", "STATE_VERSION", "COMMANDS",
           "parse_command"]

# Version of the engine's state layout inside a checkpoint; a checkpoint of another version is
# not restored (the partition is rebuilt from its retained input, see drift.runtime.checkpoint).
STATE_VERSION = 5
MAX_EXAMPLES = 5  # example trace ids an alert carries


@dataclasses.dataclass(frozen=True)
class EventRejection:
    """An event the engine refused after decoding (late or far-future)."""

    stream: str
    message: int
    event: int | None
    error_class: str
    reason: str
    raw: bytes


class SeriesTable:
    """Series keys (tuples of labels) to dense integer ids, in order of first appearance."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self.ids: dict[tuple, int] = {}
        self.keys: list[tuple] = []

    def __len__(self):
        return len(self.keys)

    def lookup(self, *columns) -> tuple[np.ndarray, list[int]]:
        """Ids of the keys formed by zipping ``columns``; also the ids that are new.

        Known keys are found in one pass in C (``map(dict.get, zip(...))``); only the events
        whose key was not known before the call are visited one by one, in order, so new keys
        are numbered in order of first appearance."""
        cols = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
        out = np.fromiter(map(self.ids.get, zip(*cols), itertools.repeat(-1)), np.int64, len(cols[0]))
        new = []
        miss = np.flatnonzero(out < 0).tolist()
        if miss:
            for i, k in zip(miss, zip(*([c[i] for i in miss] for c in cols))):
                sid = self.ids.get(k)
                if sid is None:
                    sid = self.ids[k] = len(self.keys)
                    self.keys.append(k)
                    new.append(sid)
                out[i] = sid
        return out, new

    def labels(self, sid: int) -> dict[str, str]:
        return dict(zip(self.fields, self.keys[sid]))

    def state_dict(self):
        return {"fields": list(self.fields), "keys": [list(k) for k in self.keys]}

    def load_state(self, state):
        self.keys = [tuple(k) for k in state["keys"]]
        self.ids = {k: i for i, k in enumerate(self.keys)}


COMMANDS = ("baseline_reset",)


def parse_command(doc: Mapping[str, Any] | bytes | str) -> dict[str, Any]:
    """Check one ``drift.control`` command (JSON object or its bytes) and return it normalised.

    Fields: ``command`` (``"baseline_reset"``), ``rule``, ``app``, optional ``intent`` and
    ``dimension`` (absent: every one of the app's), ``ts`` (when it was issued: RFC 3339 or
    epoch seconds; the reset's event time), optional ``by`` and ``reason`` (for the record).
    Raises :class:`ValueError` naming the field.

    >>> parse_command('{"command": "baseline_reset", "rule": "quality_drop", "app": "bot", "ts": 0}')
    {'command': 'baseline_reset', 'rule': 'quality_drop', 'app': 'bot', 'ts': 0.0}
    >>> parse_command({"command": "reset", "rule": "r", "app": "a", "ts": 0})
    Traceback (most recent call last):
    ...
    ValueError: command: must be one of baseline_reset, got 'reset'
    """
    import datetime as _dt
    import json as _json

    if isinstance(doc, (bytes, str)):
        try:
            doc = _json.loads(doc)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"a command is a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"command", "rule", "app", "intent", "dimension", "ts", "by", "reason", "id"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    out: dict[str, Any] = {}
    if doc.get("command") not in COMMANDS:
        raise ValueError(f"command: must be one of {', '.join(COMMANDS)}, got {doc.get('command')!r}")
    out["command"] = doc["command"]
    for key in ("rule", "app", "intent", "dimension", "by", "reason", "id"):
        v = doc.get(key)
        if v is None:
            if key in ("rule", "app"):
                raise ValueError(f"{key}: required")
            continue
        if not isinstance(v, str) or not v or len(v) > 1000:
            raise ValueError(f"{key}: must be a non-empty string (at most 1000 characters), got {v!r}")
        out[key] = v
    if "ts" not in doc:
        raise ValueError("ts: required")
    ts = doc["ts"]
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and np.isfinite(ts):
        out["ts"] = float(ts)
    elif isinstance(ts, str):
        try:
            when = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"ts: not an RFC 3339 time: {ts!r}") from None
        out["ts"] = (when if when.tzinfo else when.replace(tzinfo=_dt.UTC)).timestamp()
    else:
        raise ValueError(f"ts: must be RFC 3339 or epoch seconds, got {ts!r}")
    return out


class RuleRunner:
    """One rule (one variant of it: an override, a golden set) with its detector, and the map
    from stream series ids to detector-local ids."""

    def __init__(self, spec: RuleSpec, kind: RuleKind, params: Mapping[str, Any], lateness: float,
                 override: int = 0, variant: str = "", extra: Mapping[str, Any] | None = None):
        self.spec, self.kind = spec, kind
        self.override, self.variant = override, variant
        accepted = set(getattr(kind.detector, "_params", ()))
        extra = {k: v for k, v in (extra or {}).items() if k in accepted}
        if accepted:  # parameters that are not the detector's are the stream's (a join's dimension)
            params = {k: v for k, v in params.items() if k in accepted}
        assert kind.detector is not None
        self.params = params
        self.detector = kind.detector(**{**params, **extra, "lateness": lateness})
        self.local = np.full(0, -1, np.int64)
        self.sids: list[int] = []

    @property
    def key(self) -> str:
        return f"{self.spec.name}\x1f{self.override}\x1f{self.variant}"

    @property
    def rule_params(self) -> Mapping[str, Any]:
        """Every parameter of this runner's rule (override), the stream's ones included."""
        return self.spec.params if self.override == 0 else self.spec.overrides[self.override - 1].params

    def register(self, sid: int, family: int | None = None) -> None:
        if self.local.shape[0] <= sid:
            grown = np.full(max(sid + 1, 2 * self.local.shape[0], 16), -1, np.int64)
            grown[: self.local.shape[0]] = self.local
            self.local = grown
        self.local[sid] = len(self.sids)
        self.sids.append(sid)
        if family is not None and hasattr(self.detector, "set_families"):
            self.detector.set_families(np.array([self.local[sid]]), family)

    def register_many(self, sids: list[int], families: list[int | None]) -> None:
        """:meth:`register` of several series, in order: the same local ids, and one call of the
        detector's ``set_families`` for all of them instead of one per series."""
        cap = self.local.shape[0]
        for sid in sids:  # the capacity register() would reach, one series at a time
            if cap <= sid:
                cap = max(sid + 1, 2 * cap, 16)
        if cap > self.local.shape[0]:
            grown = np.full(cap, -1, np.int64)
            grown[: self.local.shape[0]] = self.local
            self.local = grown
        local = np.arange(len(self.sids), len(self.sids) + len(sids), dtype=np.int64)
        self.local[np.array(sids, dtype=np.int64)] = local
        self.sids.extend(sids)
        has = np.array([f is not None for f in families], bool)
        if has.any() and hasattr(self.detector, "set_families"):
            self.detector.set_families(local[has], np.array([f for f in families if f is not None], np.int64))

    def registered(self, sids: np.ndarray) -> np.ndarray:
        """Which of the stream series ``sids`` this runner watches."""
        n = self.local.shape[0]
        if n == 0:
            return np.zeros(sids.shape[0], bool)
        return (sids < n) & (self.local[np.minimum(sids, n - 1)] >= 0)

    def run(self, sids: np.ndarray, t: np.ndarray, x: np.ndarray):
        if self.local.shape[0] == 0 or sids.size == 0:
            return []
        m = self.registered(sids)
        if not m.any():
            return []
        return self.detector.update_many(self.local[sids[m]], t[m], x[m])


class StreamState:
    """What an engine keeps per input stream: its series, their clock and how each is read."""

    def __init__(self, stream: Stream, lateness: float):
        self.stream = stream
        self.series = SeriesTable(stream.series_fields)
        self.clock = EventClock(3600.0, lateness)
        self.info: list[SeriesInfo] = []
        self.examples: dict[int, list] = {}  # sid -> newest (t, trace_id) pairs
        self._cols: tuple[np.ndarray, np.ndarray] | None = None
        self._families = np.zeros(0, np.int64)  # family (app/intent) id per series
        self._families_of: list | None = None  # the key list they were read from

    def families_of(self, families: SeriesTable, sids: np.ndarray) -> np.ndarray:
        """The (app, intent) family ids of the series ``sids``, from a per-series array (the
        family is looked up once per series, not per event); -1 for a stream without both."""
        keys = self.series.keys
        if self._families_of is not keys:  # a restored state brings a new key list
            self._families, self._families_of = np.zeros(0, np.int64), keys
        done = self._families.shape[0]
        if done < len(keys):
            fields = self.series.fields
            if "app" in fields and "intent" in fields:
                a, i = fields.index("app"), fields.index("intent")
                more = families.lookup([k[a] for k in keys[done:]], [k[i] for k in keys[done:]])[0]
            else:
                more = np.full(len(keys) - done, -1, np.int64)
            self._families = np.concatenate([self._families, more])
        return self._families[sids]

    def columns(self, sids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Value kind and ``(lo, hi, higher_is_better)`` of the series ``sids``."""
        if self._cols is None or self._cols[0].shape[0] != len(self.info):
            kinds = np.array([i.kind for i in self.info], dtype=object)
            scale = np.array([(i.lo, i.hi, i.higher_is_better) for i in self.info], dtype=np.float64).reshape(-1, 3)
            self._cols = (kinds, scale)
        kinds, scale = self._cols
        return (kinds[sids] if sids.size else np.zeros(0, object)), scale[sids]

    def remember_examples(self, batch, idx: np.ndarray, sids: np.ndarray, t: np.ndarray) -> None:
        """Keep each series' newest trace ids (up to :data:`MAX_EXAMPLES`)."""
        objs = batch.objs
        if not idx.size or getattr(objs[int(idx[-1])], "trace_id", None) is None and \
                getattr(objs[int(idx[0])], "trace_id", None) is None:
            return
        # the last MAX_EXAMPLES events of each series in the batch, in event order
        order = np.lexsort((np.arange(sids.size), sids))
        s = sids[order]
        last = np.r_[s[1:] != s[:-1], True]
        ends = np.flatnonzero(last)
        starts = np.r_[0, ends[:-1] + 1]
        rank = np.arange(s.size) - np.repeat(starts, ends - starts + 1)
        size = np.repeat(ends - starts + 1, ends - starts + 1)
        take = order[size - rank <= MAX_EXAMPLES]
        tids = batch.trace_ids(idx[take])
        for sid, tt, tid in zip(sids[take].tolist(), t[take].tolist(), tids):
            if tid is None:
                continue
            ex = self.examples.setdefault(sid, [])
            ex.append((tt, tid))
            if len(ex) > MAX_EXAMPLES:
                del ex[0]

    def examples_in(self, sid: int, start: float, end: float, batch=None) -> list[str]:
        """Trace ids of the series' newest events inside ``[start, end)``: from the batch being
        processed (``(batch, idx, sids, t)``), then from the ones remembered before it."""
        out: list[str] = []
        if batch is not None:
            b, idx, sids, t = batch
            pos = np.flatnonzero((sids == sid) & (t >= start) & (t < end))
            if pos.size:
                pos = pos[np.argsort(t[pos], kind="stable")[::-1]]
                out = [x for x in b.trace_ids(idx[pos[: 4 * MAX_EXAMPLES]]) if x is not None][:MAX_EXAMPLES]
        for tt, tid in reversed(self.examples.get(sid, [])):
            if len(out) >= MAX_EXAMPLES:
                break
            if start <= tt < end and tid not in out:
                out.append(tid)
        return out


Event = Mapping[str, Any]


class Engine:
    """Streaming drift engine (see the module docstring).

    Parameters
    ----------
    settings : Settings, optional
        Rules, dimensions and engine limits (default: :func:`~drift.core.config.load_settings`
        with no file, i.e. the SPEC's defaults).
    now : callable
        Wall clock, for far-future screening and the alerts' CloudEvent ``time``.
    golden : dict, optional
        Golden sets for the query rules: ``{"*": set}`` or ``{app: set}``.
    encoder_factory : callable, optional
        Builds the text encoder the first time a query event carries text.
    streams : mapping, optional
        The input streams (default: every registered one).
    """

    def __init__(self, settings: Settings | None = None, now: Callable[[], float] = time.time,
                 golden: dict | None = None, encoder_factory: Callable[[], Any] | None = None,
                 streams: Mapping[str, Stream] | None = None):
        self.settings = settings = settings if settings is not None else load_settings()
        self.golden = dict(golden or {})
        self.encoder_factory = encoder_factory
        self.encoder: Any = None
        self._embed_cache: dict[str, np.ndarray] = {}
        self.now = now
        self.source = f"drift/{settings.service_name}"
        lat = settings.allowed_lateness
        self.streams = dict(STREAMS if streams is None else streams)
        self.state = {name: StreamState(s, lat) for name, s in self.streams.items()}
        self.families = SeriesTable(("app", "intent"))
        # detector rules per stream, in configuration order; runners are made per variant
        self.rules: dict[str, RuleSpec] = {}
        self.runners: dict[str, RuleRunner] = {}
        self._order: dict[str, int] = {}
        notice_rules: dict[str, list[RuleSpec]] = {}
        tracker_params: dict[str, Any] = {}
        for i, (name, spec) in enumerate(settings.rules.items()):
            self._order[name] = i
            kind = RULE_KINDS[spec.kind]
            if kind.detector is None:  # notice rules (change_tracker)
                tracker_params = tracker_params or dict(spec.params)
                if spec.enabled:
                    notice_rules.setdefault(spec.stream, []).append(spec)
                continue
            if spec.enabled and spec.stream in self.streams:
                self.rules[name] = spec
        self.notice_rules = notice_rules
        self.trackers = {(s, attr): ChangeTracker(**tracker_params)
                         for s, stream in self.streams.items() for attr in stream.changes}
        self.counts: Counter = Counter()
        # the judge join (labels and feedback with the scores of their trace), when a rule needs it
        joined = [spec for spec in self.rules.values() if RULE_KINDS[spec.kind].values == "joined"]
        self.judge: JudgeJoin | None = None
        if joined and "scores" in self.streams:
            dims = {p["judge_dimension"] for spec in joined for p in (spec.params, *(o.params for o in spec.overrides))
                    if "judge_dimension" in p}
            self.judge = JudgeJoin(settings.join_max_age, settings.join_max_entries, dims)
        # the streams whose clocks bound the join's expiry: the scores and the joined rules' streams
        self.join_streams = ["scores"] + sorted({spec.stream for spec in joined if spec.stream in self.streams})
        # (app, intent, dimension) -> (kappa, since): judges a judge_agreement_drop holds untrusted
        self.untrusted: dict[tuple[str, str, str], tuple[float, float]] = {}
        self.escalations: list[tuple[float, str, str, str]] = []  # (t, app, intent, trace_id), drained by the caller
        # the cost rules: one record per request (trace) out of the score events, per app/intent
        cost_rules = [spec for spec in self.rules.values() if RULE_KINDS[spec.kind].values == "cost"]
        self.cost: TraceCost | None = None
        self.cost_state: StreamState | None = None
        self.cost_quality_dimension = ""
        if cost_rules and "scores" in self.streams:
            self.cost = TraceCost(lat)
            self.cost_state = StreamState(CostStream(), lat)
            self.cost_quality_dimension = str(cost_rules[0].params.get("quality_dimension", "") or "")

    # -- set-up ---------------------------------------------------------------------------------
    def decoder(self) -> EventDecoder:
        """An :class:`EventDecoder` validating against these settings' dimensions and limits."""
        def scale_of(dim):
            spec = self.settings.dimension(dim)
            return spec.lo, spec.hi, spec.binary
        dims = {int(g.dim) for g in self.golden.values()}
        return EventDecoder(scale_of, self.settings.retrieval_scale, dims.pop() if len(dims) == 1 else None,
                            self.settings.max_message_bytes, streams=self.streams)

    @property
    def newest_event_time(self) -> float:
        """The newest event time accepted on any stream (-inf before the first)."""
        return float(max([st.clock.max_t.max() if st.clock.max_t.size else -np.inf
                          for st in self.state.values()] or [-np.inf]))

    def fingerprint(self) -> str:
        """Rule configuration plus golden sets: what a state checkpoint must match."""
        golden = ",".join(f"{k}:{g.checksum}" for k, g in sorted(self.golden.items()))
        return self.settings.fingerprint() + (("+" + hashlib.sha256(golden.encode()).hexdigest()[:12]) if golden else "")

    def _runner(self, spec: RuleSpec, labels: Mapping[str, str], stream: Stream) -> RuleRunner | None:
        """The runner of ``spec`` that watches the series ``labels`` (made on first use)."""
        kind = RULE_KINDS[spec.kind]
        found = stream.series_params(self, kind, labels)
        if found is None:
            return None
        variant, extra = found
        override, params = spec.params_for(labels)
        key = f"{spec.name}\x1f{override}\x1f{variant}"
        runner = self.runners.get(key)
        if runner is None:
            runner = RuleRunner(spec, kind, params, self.settings.allowed_lateness, override, variant, extra)
            self.runners[key] = runner
            self._sort_runners()
        return runner

    def _sort_runners(self) -> None:
        self.runners = dict(sorted(self.runners.items(), key=lambda kv: (
            self._order[kv[1].spec.name], kv[1].override, kv[1].variant)))

    def _register(self, name: str, st: StreamState, new: list[int]) -> None:
        stream = st.stream
        todo: dict[int, tuple[RuleRunner, list[int], list[int | None]]] = {}  # per runner, in order
        labels_of = [st.series.labels(sid) for sid in new]
        families: list[int | None] = [None] * len(new)
        if "app" in st.series.fields and "intent" in st.series.fields:
            families = self.families.lookup([lb["app"] for lb in labels_of], [lb["intent"] for lb in labels_of])[0].tolist()
        for sid, labels, fam in zip(new, labels_of, families):
            info = stream.describe(self, labels)
            st.info.append(info)
            for spec in self.rules.values():
                if spec.stream != name or info.kind not in spec.kinds or not spec.matches(labels):
                    continue
                runner = self._runner(spec, labels, stream)
                if runner is not None:
                    _, sids, fams = todo.setdefault(id(runner), (runner, [], []))
                    sids.append(sid)
                    fams.append(fam)
        for runner, sids, fams in todo.values():
            runner.register_many(sids, fams)

    def _screen(self, stream, batch, sids, clock) -> tuple[np.ndarray, list[EventRejection]]:
        """Late and far-future events: mask of the ones to keep, and their rejections."""
        t = batch.ts
        # far future: ahead of the wall clock by more than max_future (a skewed or bogus producer
        # clock). Event time may lag the wall clock by anything (replays, quiet weekends).
        future = t > self.now() + self.settings.max_future
        late = np.zeros(t.shape[0], bool)
        keep_f = ~future
        late[keep_f] = clock.observe(sids[keep_f], t[keep_f])
        keep = ~(future | late)
        rejected = []
        for i in np.flatnonzero(~keep):
            ev = int(batch.idx[i])
            if future[i]:
                cls, why = "FutureEvent", (f"event time {format_time(t[i])} is more than "
                                           f"{self.settings.max_future:g} s ahead of the wall clock")
            else:
                cls, why = "LateEvent", (f"event time {format_time(t[i])} is behind the series' "
                                         f"watermark by more than the allowed lateness "
                                         f"({self.settings.allowed_lateness:g} s)")
            rejected.append(EventRejection(stream, int(batch.msg[i]), None if ev < 0 else ev, cls,
                                           why, batch.event_json(int(i))))
        self.counts[f"{stream}.late"] += int(late.sum())
        self.counts[f"{stream}.future"] += int(future.sum())
        return keep, rejected

    # -- processing -------------------------------------------------------------------------
    def run(self, decoded: Decoded) -> tuple[list[Alert], list[EventRejection]]:
        """Run one decoded batch; return the alerts and the events refused as late/future."""
        alerts: list[Alert] = []
        rejected: list[EventRejection] = []
        for name, batch in decoded.batches.items():
            if name in self.state and len(batch):
                a, r = self._process_stream(name, batch)
                alerts += a
                rejected += r
        if self.judge is not None:
            alerts += self._run_joined()
        if self.cost is not None:
            alerts += self._run_cost()
        for alert in alerts:
            self.counts[f"alerts.{alert.rule}.{alert.status}"] += 1
        return alerts, rejected

    def process(self, decoded: Decoded) -> tuple[list[dict], list[EventRejection]]:
        """:meth:`run`, with the alerts as CloudEvents (the ``llm.alerts`` format)."""
        alerts, rejected = self.run(decoded)
        now = self.now()
        return [_alerts.to_cloudevent(a, now) for a in alerts], rejected

    def feed(self, events: Iterable[Event] | Mapping[str, Any], stream: str | None = None) -> list[Alert]:
        """The in-memory API: run Python events (mappings as in the SPEC, or a mapping of
        columns: ``{"ts": [...], "app": [...], ...}``) and return the alerts.

        Events are validated like Kafka messages; bad ones raise :class:`ValueError` with the
        reason (use :meth:`decoder` and :meth:`run` to route them elsewhere instead). ``stream``
        forces the stream (else each event's fields say which it is).
        """
        if isinstance(events, Mapping):
            cols = {k: list(v) for k, v in events.items()}
            n = len(next(iter(cols.values()))) if cols else 0
            events = [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]
        events = list(events)
        if not events:
            return []
        d = self.decoder().decode_objects(events, kind=stream)
        if d.rejected:
            r = d.rejected[0]
            where = f"event {r.message}" + (f"[{r.event}]" if r.event is not None else "")
            raise ValueError(f"{where}: {r.error_class}: {r.reason}")
        alerts, late = self.run(d)
        if late:
            lr = late[0]
            raise ValueError(f"event {lr.message}: {lr.error_class}: {lr.reason}")
        return alerts

    def _process_stream(self, name: str, b) -> tuple[list[Alert], list[EventRejection]]:
        st = self.state[name]
        stream = st.stream
        sids, new = st.series.lookup(*(getattr(b, f) for f in stream.series_fields))
        if new:
            self._register(name, st, new)
        keep, rejected = self._screen(name, b, sids, st.clock)
        idx = np.flatnonzero(keep)
        sids, t = sids[idx], b.ts[idx]
        self.counts[f"{name}.events"] += int(idx.size)
        out: list[tuple[float, Alert]] = []
        if stream.changes and idx.size:
            fams = st.families_of(self.families, sids)
            notices = {attr: spec for spec in self.notice_rules.get(name, ()) for attr in spec.kinds}
            for attr, column in stream.changes.items():
                for f in self.trackers[(name, attr)].update_many(fams, t, getattr(b, column)[idx]):
                    spec = notices.get(attr)
                    if spec is not None:
                        out.append((f.at, _alerts.change_notice(
                            spec.name, self.families.labels(f.series), f, attr, severity=spec.severity,
                            first_action=spec.first_action, source=self.source)))
        runners = [r for r in self.runners.values() if r.spec.stream == name and r.kind.values != "cost"]
        found = []
        ctx = (b, idx, sids, t)
        for runner, rs, rt, x in stream.feed(self, st, b, idx, sids, t, runners):
            for f in runner.run(rs, rt, x):
                found.append((f.at, self._alert(st, runner, f, ctx)))
        st.remember_examples(b, idx, sids, t)
        # detector alerts in time order, then the notices (as before: the sort is stable)
        found += out
        found.sort(key=lambda p: p[0])
        return [a for _, a in found], rejected

    # -- the judge join --------------------------------------------------------------------------
    def _watermark(self, stream: str, key: tuple) -> float:
        st = self.state.get(stream)
        if st is None:
            return -np.inf
        sid = st.series.ids.get(key)
        if sid is None or sid >= st.clock.max_t.shape[0]:
            return -np.inf
        return float(st.clock.max_t[sid]) - self.settings.allowed_lateness

    def _pair_watermark(self, kind: str, app: str, intent: str, dim: str) -> float:
        right = (app, intent, dim) if kind == "labels" else (app, intent)
        return min(self._watermark("scores", (app, intent, dim)), self._watermark(kind, right))

    def _run_joined(self) -> list[Alert]:
        """Release the judge join's pairs that every watermark passed and run the rules on them."""
        judge = self.judge
        assert judge is not None
        # entries expire by the slowest joined stream's clock; while one has delivered nothing yet
        # (on a live service, its partition may simply not have been fetched), nothing expires by
        # time and the size bound alone holds the buffer
        newest = [float(self.state[name].clock.max_t.max()) if self.state[name].clock.max_t.size else -np.inf
                  for name in self.join_streams]
        judge.expire(min(newest) - self.settings.allowed_lateness)
        rows = judge.release(self._pair_watermark)
        for key in ("labels.joined", "labels.unjoined", "labels.too_far_apart", "feedback.joined",
                    "feedback.unjoined", "feedback.too_far_apart", "evicted_lefts"):
            if judge.counts[key]:
                self.counts[f"judge.{key}"] = judge.counts[key]
        if not rows:
            return []
        cols = pairs_columns(rows)
        found: list[tuple[float, Alert]] = []
        for name in ("labels", "feedback"):
            st = self.state.get(name)
            sel = np.flatnonzero(cols["kind"] == name)
            if st is None or not sel.size:
                continue
            fields = [cols[f][sel] for f in st.stream.series_fields]
            sids, new = st.series.lookup(*fields)
            if new:  # (a pair's series exists: its label or feedback event made it)
                self._register(name, st, new)
            t, judge_v, human = cols["tau"][sel], cols["judge"][sel], cols["human"][sel]
            dims = cols["dimension"][sel]
            for runner in self.runners.values():
                if runner.spec.stream != name or runner.kind.values != "joined":
                    continue
                good = float(runner.rule_params.get("good", 0.5))
                if name == "labels":
                    m = np.ones(sel.size, bool)
                    x = np.column_stack([(judge_v >= good), (human >= good)]).astype(np.float64)
                else:
                    m = dims == runner.rule_params.get("judge_dimension")
                    x = (judge_v >= good).astype(np.float64)
                if not m.any():
                    continue
                for f in runner.run(sids[m], t[m], x[m]):
                    alert = self._alert(st, runner, f)
                    found.append((f.at, alert))
                    if runner.kind.name == "kappa_drop":
                        self._judge_trust(st.series.labels(runner.sids[f.series]), f)
        found.sort(key=lambda p: p[0])
        return [a for _, a in found]

    # -- the cost rules ---------------------------------------------------------------------------
    def _run_cost(self) -> list[Alert]:
        """Run the cost rules on the request records that every event of their trace has reached."""
        cost, st = self.cost, self.cost_state
        assert cost is not None and st is not None
        fams, t, x = cost.release()
        for key, v in cost.counts.items():
            if v:
                self.counts[key] = v
        if not fams.size:
            return []
        keys = [self.families.keys[f] for f in fams.tolist()]
        sids, new = st.series.lookup([k[0] for k in keys], [k[1] for k in keys])
        for sid in new:
            labels = st.series.labels(sid)
            st.info.append(SeriesInfo("cost"))
            for spec in self.rules.values():
                if RULE_KINDS[spec.kind].values == "cost" and spec.matches(labels):
                    runner = self._runner(spec, labels, st.stream)
                    if runner is not None:
                        runner.register(sid)
        found: list[tuple[float, Alert]] = []
        for runner in self.runners.values():
            if runner.kind.values != "cost":
                continue
            for f in runner.run(sids, t, x):
                for side in ("model_window", "model_reference"):  # model codes to names
                    if side in f.extra:
                        f.extra[side] = cost.model_name(f.extra[side])
                found.append((f.at, self._alert(st, runner, f)))
        found.sort(key=lambda p: p[0])
        return [a for _, a in found]

    def _judge_trust(self, labels: Mapping[str, str], f) -> None:
        key = (labels["app"], labels["intent"], labels["dimension"])
        if f.status == "firing":
            self.untrusted[key] = (float(f.extra.get("kappa", np.nan)), float(f.episode_start))
        elif f.status == "resolved":
            self.untrusted.pop(key, None)

    def escalated(self, app, intent, t, trace_ids) -> None:
        """Escalated traces (feedback ``escalate``): kept for the caller to report, so a judge
        sampler can evaluate them at 100 %."""
        for a, i, tt, tid in zip(app.tolist(), intent.tolist(), t.tolist(), trace_ids):
            self.escalations.append((tt, a, i, tid))
        self.counts["feedback.escalations"] += len(trace_ids)

    def take_escalations(self) -> list[tuple[float, str, str, str]]:
        out, self.escalations = self.escalations, []
        return out

    def _alert(self, st: StreamState, runner: RuleRunner, f, batch=None) -> Alert:
        sid = runner.sids[f.series]
        stream = st.stream
        labels = {"stream": stream.name, **st.series.labels(sid)}
        spec = runner.spec
        display = stream.display(self, st, sid, runner.kind)
        examples = None
        if f.status == "firing" and f.window is not None:
            examples = st.examples_in(sid, f.window.start, f.window.end, batch)
        alert = _alerts.from_finding(
            spec.name, labels, f, window_seconds=runner.detector.window if hasattr(runner.detector, "window")
            else spec.params.get("window", 0.0), kind=runner.kind.name, severity=spec.severity,
            to_display=display or (lambda v: v), cause=stream.cause(self, labels, f, spec),
            evidence=stream.evidence(self, f), example_trace_ids=examples or None,
            first_action=spec.first_action, source=self.source, value_kind=st.info[sid].kind)
        if self.untrusted and stream.name == "scores" and f.status == "firing":
            distrust = self.untrusted.get((labels.get("app", ""), labels.get("intent", ""), labels.get("dimension", "")))
            if distrust is not None:  # the id stays a function of rule, series and episode start
                alert.labels["judge"] = "untrusted"
                alert.summary += (f" [judge untrusted: its agreement with human labels on {labels.get('dimension')} "
                                  f"is kappa {distrust[0]:.2f}, below the bar since {format_time(distrust[1])}]")
        return alert

    def changes_near(self, stream: str, attr: str, labels: Mapping[str, str], f, spec: RuleSpec) -> list:
        """Changes of ``attr`` for the series' app/intent shortly before an episode started."""
        key = self.families.ids.get((labels.get("app"), labels.get("intent")))
        tracker = self.trackers.get((stream, attr))
        if key is None or tracker is None:
            return []
        change_at = (f.extra or {}).get("change_at")
        search_from = (f.extra or {}).get("cause_search_from")
        if search_from is not None:
            # the detector says where to look (a re-fire continues its predecessor's search)
            start = search_from - CAUSE_WINDOW
        elif change_at is not None:
            # sequential rules estimate when the change happened; the estimate (the CUSUM's last
            # zero) is less sure the longer detection took, so the search reaches back as far
            # again before it
            start = change_at - CAUSE_WINDOW - max(0.0, f.episode_start - change_at)
        else:
            start = f.episode_start - spec.params.get("window", 0.0) - CAUSE_WINDOW
        return tracker.changes_between(key, start, f.episode_start)

    def embed(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``texts`` (cached by text) and which were embedded.

        At most ``max_texts_per_batch`` new texts are embedded per batch: when text arrives
        faster than that, a deterministic sample (by text hash) is embedded and the rest is
        counted in ``queries.sampled_out``.
        """
        dim = next(iter(self.golden.values())).dim
        out = np.full((len(texts), dim), np.nan, np.float32)
        ok = np.zeros(len(texts), bool)
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            v = self._embed_cache.get(t)
            if v is not None:
                out[i] = v
                ok[i] = True
            else:
                missing.setdefault(t, []).append(i)
        if missing:
            cap = self.settings.max_texts_per_batch
            chosen = sorted(missing, key=lambda t: hashlib.sha1(t.encode()).digest())[:cap]
            if self.encoder is None:
                if self.encoder_factory is None:
                    raise RuntimeError("query events carry text but no encoder is configured")
                self.encoder = self.encoder_factory()
            vecs = self.encoder.encode(chosen)
            for t, v in zip(chosen, vecs):
                if len(self._embed_cache) >= 200_000:
                    self._embed_cache.pop(next(iter(self._embed_cache)))
                self._embed_cache[t] = v
                out[missing[t]] = v
                ok[missing[t]] = True
            skipped = sum(len(missing[t]) for t in missing if t not in self._embed_cache)
            self.counts["queries.sampled_out"] += skipped
            self.counts["queries.embedded"] += len(chosen)
        return out, ok


    # -- operator commands -------------------------------------------------------------------
    def reset_baseline(self, rule: str, app: str, intent: str | None = None, dimension: str | None = None,
                       at: float | None = None, by: str = "", reason: str = "") -> list[Alert]:
        """Accept the new normal: an operator's baseline reset of ``rule`` on the series of
        ``app`` (optionally one ``intent``, one ``dimension``), at event time ``at``.

        Every matching series that is firing resolves now (same alert id as its firing alert);
        then the rule forgets what it learned about the series and re-learns its baseline from
        the data that follows, as for a new series (:meth:`BucketedDetector.reset
        <detectors.bucketed.BucketedDetector.reset>`). Each reset series is recorded as an info
        alert ``baseline_reset`` (its id is a function of the rule, the series and ``at``, so a
        command delivered twice yields the same id). Returns the alerts: resolutions first.

        ``at`` defaults to the newest event time the engine has seen (else the wall clock).
        Raises :class:`ValueError` for a rule that is not configured here or cannot be reset.
        """
        if rule not in self.rules:
            known = ", ".join(sorted(self.rules)) or "none"
            raise ValueError(f"rule: {rule!r} is not an enabled rule of this configuration (rules: {known})")
        if at is None:
            newest = self.newest_event_time
            at = newest if np.isfinite(newest) else self.now()
        want = {"app": app, "intent": intent, "dimension": dimension}
        want = {k: v for k, v in want.items() if v is not None}
        resolved: list[Alert] = []
        notices: dict[str, Alert] = {}
        for runner in list(self.runners.values()):
            if runner.spec.name != rule:
                continue
            if not hasattr(runner.detector, "reset"):
                raise ValueError(f"rule: {rule!r} ({runner.kind.name}) keeps no baseline to reset")
            st = self.cost_state if runner.kind.values == "cost" else self.state.get(runner.spec.stream)
            if st is None:
                continue
            local, labels_of = [], {}
            for sid in runner.sids:
                labels = st.series.labels(sid)
                if all(labels.get(k) == v for k, v in want.items()):
                    local.append(int(runner.local[sid]))
                    labels_of[int(runner.local[sid])] = {"stream": st.stream.name, **labels}
            if not local:
                continue
            for f in runner.detector.reset(np.array(local, np.int64), float(at)):
                alert = self._alert(st, runner, f)
                alert.summary = _alerts.reset_summary(rule, labels_of[f.series], float(at), by, reason)
                resolved.append(alert)
                if runner.kind.name == "kappa_drop":
                    self._judge_trust(labels_of[f.series], f)
            for lo in local:
                n = _alerts.reset_notice(rule, labels_of[lo], float(at), by=by, reason=reason, source=self.source)
                notices[n.alert_id] = n
        out = resolved + list(notices.values())
        for alert in out:
            self.counts[f"alerts.{alert.rule}.{alert.status}"] += 1
        self.counts["control.baseline_resets"] += len(notices)
        return out

    def control(self, command: Mapping[str, Any]) -> list[Alert]:
        """Run one operator command (a ``drift.control`` message, see :func:`parse_command`)."""
        cmd = parse_command(command)
        return self.reset_baseline(cmd["rule"], cmd["app"], cmd.get("intent"), cmd.get("dimension"),
                                   at=cmd["ts"], by=cmd.get("by", ""), reason=cmd.get("reason", ""))

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "streams": {name: {"series": st.series.state_dict(), "clock": st.clock.state_dict(),
                               "examples": {int(k): [list(p) for p in v] for k, v in st.examples.items()}}
                        for name, st in self.state.items()},
            "families": self.families.state_dict(),
            "runners": [{"rule": r.spec.name, "override": r.override, "variant": r.variant,
                         "detector": r.detector.state_dict(), "local": r.local.copy(), "sids": list(r.sids)}
                        for r in self.runners.values()],
            "trackers": {f"{s}/{a}": tr.state_dict() for (s, a), tr in self.trackers.items()},
            "counts": dict(self.counts),
            "judge": None if self.judge is None else self.judge.state_dict(),
            "untrusted": [[*k, *v] for k, v in self.untrusted.items()],
            "escalations": [list(e) for e in self.escalations],
            "cost": None if self.cost is None or self.cost_state is None else {
                "records": self.cost.state_dict(), "series": self.cost_state.series.state_dict()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"engine state has layout version {state.get('version', 1)}, this engine "
                             f"reads {STATE_VERSION}")
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError("engine state was written with another rule configuration or golden set "
                             f"({state.get('fingerprint')} != {self.fingerprint()})")
        self.families.load_state(state["families"])
        for name, ss in state["streams"].items():
            st = self.state[name]
            st.series.load_state(ss["series"])
            st.clock.load_state(ss["clock"])
            st.examples = {int(k): [tuple(p) for p in v] for k, v in ss.get("examples", {}).items()}
            st.info = [st.stream.describe(self, st.series.labels(sid)) for sid in range(len(st.series))]
            st._cols = None
        self.runners = {}
        for rs in state["runners"]:
            spec = self.rules[rs["rule"]]
            kind = RULE_KINDS[spec.kind]
            runner = RuleRunner.__new__(RuleRunner)
            runner.spec, runner.kind = spec, kind
            runner.override, runner.variant = int(rs["override"]), rs["variant"]
            accepted = set(getattr(kind.detector, "_params", ()))
            runner.params = {k: v for k, v in runner.rule_params.items() if k in accepted or not accepted}
            assert kind.detector is not None
            runner.detector = kind.detector.from_state(rs["detector"])
            runner.local = np.array(rs["local"], dtype=np.int64)
            runner.sids = list(rs["sids"])
            self.runners[runner.key] = runner
        self._sort_runners()
        for key, st_ in state["trackers"].items():
            s, a = key.split("/", 1)
            self.trackers[(s, a)] = ChangeTracker.from_state(st_)
        self.counts = Counter(state.get("counts", {}))
        if self.judge is not None and state.get("judge") is not None:
            self.judge.load_state(state["judge"])
        self.untrusted = {(a, i, d): (float(k), float(t)) for a, i, d, k, t in state.get("untrusted", [])}
        self.escalations = [(float(t), a, i, tid) for t, a, i, tid in state.get("escalations", [])]
        if self.cost is not None and self.cost_state is not None and state.get("cost") is not None:
            self.cost.load_state(state["cost"]["records"])
            st = self.cost_state
            st.series.load_state(state["cost"]["series"])
            st.info = [SeriesInfo("cost") for _ in range(len(st.series))]

