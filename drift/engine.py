"""The engine: routes decoded events to series and rules, runs the detectors, builds alerts.

One engine serves ``drift replay`` and ``drift serve``; only sources and sinks differ. Every
(app, intent, dimension) of the scores stream and every (app, intent) of the retrieval stream is
its own series, with its own event-time clock, so results never depend on how events were
batched or how Kafka keys were spread over partitions (all of a key's events share a partition
and keep their order).

Per batch and stream: map events to series ids → drop late events (older than the series'
watermark) and far-future ones (beyond ``max_future`` past the newest time seen) → track prompt
hash / model / index version changes per (app, intent) → feed each rule's detector the events of
its dimension kind → turn findings into alert CloudEvents, newest information last.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

import hashlib

from detectors.centroid import CentroidShift
from detectors.changes import ChangeTracker
from detectors.drop import PercentDrop
from detectors.rate import RateRatio
from detectors.shift import KsShift
from detectors.windows import EventClock
from drift.alerts import CAUSE_WINDOW, AlertFactory
from drift.config import RuleSpec, Settings
from drift.events import Decoded, EventDecoder, format_time

__all__ = ["Engine", "EventRejection", "SeriesTable"]


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
        """Ids of the keys formed by zipping ``columns``; also the ids that are new."""
        get = self.ids.get
        keys = list(zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in columns)))
        out = [get(k, -1) for k in keys]
        new = []
        if -1 in out:
            for i, k in enumerate(keys):
                if out[i] == -1:
                    sid = self.ids.get(k)
                    if sid is None:
                        sid = self.ids[k] = len(self.keys)
                        self.keys.append(k)
                        new.append(sid)
                    out[i] = sid
        return np.array(out, dtype=np.int64), new

    def labels(self, sid: int) -> dict[str, str]:
        return dict(zip(self.fields, self.keys[sid]))

    def state_dict(self):
        return {"fields": list(self.fields), "keys": [list(k) for k in self.keys]}

    def load_state(self, state):
        self.keys = [tuple(k) for k in state["keys"]]
        self.ids = {k: i for i, k in enumerate(self.keys)}


_DETECTORS = {"percent_drop": PercentDrop, "ks": KsShift, "rate_ratio": RateRatio, "centroid": CentroidShift}


class RuleRunner:
    """One rule: its detector and the map from stream series ids to detector-local ids."""

    def __init__(self, spec: RuleSpec, lateness: float, extra_params: dict | None = None):
        self.spec = spec
        params = {**spec.params, **(extra_params or {}), "lateness": lateness}
        self.detector = _DETECTORS[spec.detector](**params)
        self.local = np.full(0, -1, np.int64)
        self.sids: list[int] = []

    def register(self, sid: int, family: int | None = None) -> None:
        if self.local.shape[0] <= sid:
            grown = np.full(max(sid + 1, 2 * self.local.shape[0], 16), -1, np.int64)
            grown[: self.local.shape[0]] = self.local
            self.local = grown
        self.local[sid] = len(self.sids)
        self.sids.append(sid)
        if family is not None and hasattr(self.detector, "set_families"):
            self.detector.set_families(np.array([self.local[sid]]), family)

    def run(self, sids: np.ndarray, t: np.ndarray, x: np.ndarray):
        if self.local.shape[0] == 0 or sids.size == 0:
            return []
        loc = self.local[np.minimum(sids, self.local.shape[0] - 1)]
        loc = np.where(sids < self.local.shape[0], loc, -1)
        m = loc >= 0
        if not m.any():
            return []
        return self.detector.update_many(loc[m], t[m], x[m])


class Engine:
    """Streaming drift engine over decoded batches (see module docstring).

    Parameters
    ----------
    settings : Settings
        Rules, dimensions and engine limits.
    now : callable
        Wall clock for the alerts' CloudEvent ``time``.
    """

    def __init__(self, settings: Settings, now: Callable[[], float] = time.time,
                 golden: dict | None = None, encoder_factory: Callable[[], Any] | None = None):
        self.settings = settings
        # query rules: golden sets ({"*": set} or {app: set}) and a lazily built text encoder
        self.golden = dict(golden or {})
        self.encoder_factory = encoder_factory
        self.encoder = None
        self._embed_cache: dict[str, np.ndarray] = {}
        self.now = now
        self.factory = AlertFactory(settings.service_name, now)
        lat = settings.allowed_lateness
        self.score_series = SeriesTable(("app", "intent", "dimension"))
        self.retrieval_series = SeriesTable(("app", "intent"))
        self.app_intents = SeriesTable(("app", "intent"))
        self.score_clock = EventClock(3600.0, lat)
        self.retrieval_clock = EventClock(3600.0, lat)
        self.series_kind: list[str] = []  # per score series: quality | flag | check
        self.series_scale: list[tuple[float, float, bool]] = []
        self.rules: dict[str, RuleRunner] = {}
        self.query_series = SeriesTable(("app",))
        self.query_clock = EventClock(3600.0, lat)
        self.query_rule: dict[int, str] = {}  # query series id -> runner name (None: unmonitored)
        qspec = settings.rules.get("query_centroid_shift")
        for key, g in sorted(self.golden.items()):
            if qspec is not None and qspec.enabled:
                extra = {"centroid": tuple(float(v) for v in g.centroid), "dim": int(g.dim), "golden_n": int(g.count)}
                self.rules[f"query_centroid_shift@{key}"] = RuleRunner(qspec, lat, extra)
        for name, spec in settings.rules.items():
            if not spec.enabled or spec.detector not in _DETECTORS or spec.stream == "queries":
                continue
            extra = {}
            if spec.stream == "retrieval":
                extra = {"lo": settings.retrieval_scale[0], "hi": settings.retrieval_scale[1]}
            self.rules[name] = RuleRunner(spec, lat, extra)
        pc = settings.rules.get("prompt_change")
        tracker_params = dict(pc.params) if pc else {}
        self.notify_changes = bool(pc and pc.enabled)
        self.hash_tracker = ChangeTracker(**tracker_params)
        self.model_tracker = ChangeTracker(**tracker_params)
        self.index_tracker = ChangeTracker(**tracker_params)
        self.counts: Counter = Counter()

    def decoder(self) -> EventDecoder:
        """An :class:`EventDecoder` validating against these settings' dimensions and limits."""
        def scale_of(dim):
            spec = self.settings.dimension(dim)
            return spec.lo, spec.hi, spec.binary
        dims = {int(g.dim) for g in self.golden.values()}
        return EventDecoder(scale_of, self.settings.retrieval_scale, dims.pop() if len(dims) == 1 else None,
                            self.settings.max_message_bytes)

    @property
    def newest_event_time(self) -> float:
        """The newest event time accepted on any stream (-inf before the first)."""
        return float(max((c.max_t.max() if c.max_t.size else -np.inf)
                         for c in (self.score_clock, self.retrieval_clock, self.query_clock)))

    def fingerprint(self) -> str:
        """Rule configuration plus golden sets: what a state checkpoint must match."""
        golden = ",".join(f"{k}:{g.checksum}" for k, g in sorted(self.golden.items()))
        return self.settings.fingerprint() + (("+" + hashlib.sha256(golden.encode()).hexdigest()[:12]) if golden else "")

    # -- routing ----------------------------------------------------------------------------
    def _register_scores(self, new: list[int]) -> None:
        for sid in new:
            app, intent, dim = self.score_series.keys[sid]
            spec = self.settings.dimension(dim)
            self.series_kind.append(spec.kind)
            self.series_scale.append((spec.lo, spec.hi, spec.higher_is_better))
            fam, _ = self.app_intents.lookup([app], [intent])
            for runner in self.rules.values():
                if runner.spec.stream == "scores" and spec.kind in runner.spec.kinds:
                    runner.register(sid, int(fam[0]))

    def _register_retrieval(self, new: list[int]) -> None:
        for sid in new:
            for runner in self.rules.values():
                if runner.spec.stream == "retrieval":
                    runner.register(sid)

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
    def process(self, decoded: Decoded) -> tuple[list[dict], list[EventRejection]]:
        """Run one decoded batch; return alert CloudEvents and the events refused as late/future."""
        alerts: list[dict] = []
        rejected: list[EventRejection] = []
        if len(decoded.scores):
            a, r = self._process_scores(decoded.scores)
            alerts += a
            rejected += r
        if len(decoded.retrieval):
            a, r = self._process_retrieval(decoded.retrieval)
            alerts += a
            rejected += r
        if len(decoded.queries):
            a, r = self._process_queries(decoded.queries)
            alerts += a
            rejected += r
        for ev in alerts:
            self.counts[f"alerts.{ev['data']['rule']}.{ev['data']['status']}"] += 1
        return alerts, rejected

    def _process_scores(self, b):
        sids, new = self.score_series.lookup(b.app, b.intent, b.dimension)
        if new:
            self._register_scores(new)
        keep, rejected = self._screen("scores", b, sids, self.score_clock)
        sids, t, score = sids[keep], b.ts[keep], b.score[keep]
        self.counts["scores.events"] += int(keep.sum())
        keys, _ = self.app_intents.lookup(b.app[keep], b.intent[keep])
        notices = []
        for tracker, col, attr in ((self.hash_tracker, b.prompt_hash, "prompt_hash"),
                                   (self.model_tracker, b.model, "model")):
            for f in tracker.update_many(keys, t, col[keep]):
                if self.notify_changes:
                    notices.append((f.at, self.factory.change_notice(self.app_intents.labels(f.series), f, attr)))
        # values on [0, 1], higher is better; flags and check failures as 1 = bad
        kind = np.array(self.series_kind, dtype=object)[sids] if sids.size else np.zeros(0, object)
        scale = np.array(self.series_scale, dtype=np.float64).reshape(-1, 3)[sids]
        lo, hi, hib = scale[:, 0], scale[:, 1], scale[:, 2] > 0
        x = (score - lo) / (hi - lo)
        x = np.where(hib, x, 1.0 - x)
        x = np.where(kind == "check", 1.0 - score, np.where(kind == "flag", score, x))
        alerts = []
        for name, runner in self.rules.items():
            if runner.spec.stream != "scores":
                continue
            for f in runner.run(sids, t, x):
                alerts.append((f.at, self._score_alert(name, runner, f)))
        alerts += notices
        alerts.sort(key=lambda p: p[0])
        return [a for _, a in alerts], rejected

    def _process_retrieval(self, b):
        sids, new = self.retrieval_series.lookup(b.app, b.intent)
        if new:
            self._register_retrieval(new)
        keep, rejected = self._screen("retrieval", b, sids, self.retrieval_clock)
        sids, t = sids[keep], b.ts[keep]
        self.counts["retrieval.events"] += int(keep.sum())
        keys, _ = self.app_intents.lookup(b.app[keep], b.intent[keep])
        self.index_tracker.update_many(keys, t, b.index_version[keep])
        alerts = []
        for name, runner in self.rules.items():
            if runner.spec.stream != "retrieval":
                continue
            for f in runner.run(sids, t, b.top1[keep]):
                sid = runner.sids[f.series]
                lab = {"stream": "retrieval", **self.retrieval_series.labels(sid)}
                cause = self._cause(lab, f, runner, retrieval=True)
                alerts.append((f.at, self.factory.from_finding(
                    name, runner.spec.detector, runner.spec.severity, lab, f,
                    window_seconds=runner.spec.params["window"], cause=cause)))
        alerts.sort(key=lambda p: p[0])
        return [a for _, a in alerts], rejected

    def _process_queries(self, b):
        sids, new = self.query_series.lookup(b.app)
        for sid in new:
            (app,) = self.query_series.keys[sid]
            key = app if app in self.golden else ("*" if "*" in self.golden else None)
            name = f"query_centroid_shift@{key}" if key is not None else None
            if name in self.rules:
                self.rules[name].register(sid)
                self.query_rule[sid] = name
        keep, rejected = self._screen("queries", b, sids, self.query_clock)
        self.counts["queries.events"] += int(keep.sum())
        monitored = keep & np.array([self.query_rule.get(int(s)) is not None for s in sids], bool)
        self.counts["queries.unmonitored"] += int((keep & ~monitored).sum())
        if not monitored.any():
            return [], rejected
        idx = np.flatnonzero(monitored)
        vectors = b.vectors[idx].astype(np.float32) if b.vectors.shape[1] else None
        has = b.has_vector[idx]
        todo = np.flatnonzero(~has)
        if todo.size:
            vecs, ok = self._embed([b.text[idx[j]] for j in todo])
            if vectors is None:
                vectors = np.full((idx.size, vecs.shape[1]), np.nan, np.float32)
            vectors[todo] = vecs
            drop = todo[~ok]
            if drop.size:  # sampled out: counted, not evaluated
                keepq = np.ones(idx.size, bool)
                keepq[drop] = False
                idx, vectors = idx[keepq], vectors[keepq]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            vectors = vectors / norms
        alerts = []
        names = np.array([self.query_rule[int(s)] for s in sids[idx]], dtype=object)
        for name in sorted(set(names)):
            sel = names == name
            key = name.split("@", 1)[1]
            v = vectors[sel]
            sim = self.golden[key].nearest_similarity(v).astype(np.float64)
            x = np.column_stack([v.astype(np.float64), sim])
            runner = self.rules[name]
            for f in runner.run(sids[idx][sel], b.ts[idx][sel], x):
                sid = runner.sids[f.series]
                lab = {"stream": "queries", **self.query_series.labels(sid)}
                extra = {"evidence": {**f.extra, "texts_sampled_out": int(self.counts["queries.sampled_out"])}}
                alerts.append((f.at, self.factory.from_finding(
                    "query_centroid_shift", "centroid", runner.spec.severity, lab, f,
                    window_seconds=runner.spec.params["window"], extra=extra,
                    cause=None if f.status != "firing" else {
                        "kind": "none", "detail": (
                            f"input drift: {100 * (f.extra.get('uncovered_share') or 0):.0f}% of the window's "
                            "queries have no close golden-set neighbour (users ask things the golden set does "
                            "not cover)")})))
        alerts.sort(key=lambda p: p[0])
        return [a for _, a in alerts], rejected

    def _embed(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
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

    def _score_alert(self, name: str, runner: RuleRunner, f) -> dict:
        sid = runner.sids[f.series]
        app, intent, dim = self.score_series.keys[sid]
        lab = {"stream": "scores", "app": app, "intent": intent, "dimension": dim}
        lo, hi, hib = self.series_scale[sid]
        if self.series_kind[sid] == "quality":
            to_display = (lambda v: lo + v * (hi - lo)) if hib else (lambda v: hi - v * (hi - lo))
        else:
            to_display = lambda v: v  # noqa: E731  (rates)
        cause = self._cause(lab, f, runner)
        return self.factory.from_finding(name, runner.spec.detector, runner.spec.severity, lab, f,
                                         window_seconds=runner.spec.params["window"],
                                         to_display=to_display, cause=cause)

    def _cause(self, labels: dict, f, runner: RuleRunner, retrieval: bool = False) -> dict | None:
        """Suspected cause of a firing alert: the latest change near the degradation."""
        if f.status != "firing":
            return None
        key = self.app_intents.ids.get((labels["app"], labels["intent"]))
        start = f.episode_start - runner.spec.params["window"] - CAUSE_WINDOW
        trackers = ([("index_version_change", self.index_tracker)] if retrieval else
                    [("prompt_hash_change", self.hash_tracker), ("model_change", self.model_tracker)])
        if key is not None:
            for kind, tracker in trackers:
                found = tracker.changes_between(key, start, f.episode_start)
                if found:
                    at, frm, to = found[-1]
                    return {"kind": kind, "from": frm, "to": to, "at": format_time(at)}
        if retrieval:
            return {"kind": "none", "detail": "no index change: stale corpus or shifted queries"}
        return {"kind": "none", "detail": "no template change: provider-side or input drift"}

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint(),
            "score_series": self.score_series.state_dict(),
            "query_series": self.query_series.state_dict(),
            "query_clock": self.query_clock.state_dict(),
            "query_rule": {int(k): v for k, v in self.query_rule.items()},
            "retrieval_series": self.retrieval_series.state_dict(),
            "app_intents": self.app_intents.state_dict(),
            "score_clock": self.score_clock.state_dict(),
            "retrieval_clock": self.retrieval_clock.state_dict(),
            "rules": {name: {"detector": r.detector.state_dict(), "local": r.local.copy(),
                             "sids": list(r.sids)} for name, r in self.rules.items()},
            "trackers": {n: getattr(self, n).state_dict()
                         for n in ("hash_tracker", "model_tracker", "index_tracker")},
            "counts": dict(self.counts),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError("engine state was written with another rule configuration or golden set "
                             f"({state.get('fingerprint')} != {self.fingerprint()})")
        self.query_series.load_state(state["query_series"])
        self.query_clock.load_state(state["query_clock"])
        self.query_rule = {int(k): v for k, v in state["query_rule"].items()}
        self.score_series.load_state(state["score_series"])
        self.retrieval_series.load_state(state["retrieval_series"])
        self.app_intents.load_state(state["app_intents"])
        self.series_kind, self.series_scale = [], []
        for app, intent, dim in self.score_series.keys:
            spec = self.settings.dimension(dim)
            self.series_kind.append(spec.kind)
            self.series_scale.append((spec.lo, spec.hi, spec.higher_is_better))
        self.score_clock.load_state(state["score_clock"])
        self.retrieval_clock.load_state(state["retrieval_clock"])
        for name, rs in state["rules"].items():
            runner = self.rules[name]
            runner.detector = type(runner.detector).from_state(rs["detector"])
            runner.local = np.array(rs["local"], dtype=np.int64)
            runner.sids = list(rs["sids"])
        for n, st in state["trackers"].items():
            setattr(self, n, ChangeTracker.from_state(st))
        self.counts = Counter(state.get("counts", {}))
