"""Input streams as plug-ins: what a stream's events look like and how the engine reads them.

A :class:`Stream` is declared once and registered: its name (also its ``[topics]`` key and the
``stream`` field that names it in files), the fields that make a series, how its events are
told apart in files, validated and turned into columns, which value kind each series has (what
rules select with ``kinds``), the values each rule's detector gets, the change attributes that
are tracked per app/intent, and the suspected cause of its alerts. The engine runs one generic
loop over the registered streams; ``scores``, ``retrieval`` and ``queries`` are declarations at
the bottom of this file.

A new input is one subclass plus :func:`register_stream` (and its topic in ``[topics]``)::

    class Latency(Stream):
        name = "latency"
        series_fields = ("app", "intent")
        kinds = ("latency",)

        def claims(self, events):            # in files: events with a `latency_ms` field
            ...
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from drift.core.events import (
    AnyEvent,
    QueryBatch,
    RetrievalBatch,
    ScoreBatch,
    _Columns,
    column,
    factorize,
    format_time,
    take_events,
)
from drift.core.rules import NOVELTY_QUANTILE, RULE_KINDS

if TYPE_CHECKING:  # pragma: no cover
    from drift.core.engine import Engine, RuleRunner, StreamState

__all__ = ["Stream", "ScalarStream", "ScoresStream", "RetrievalStream", "QueriesStream", "LabelsStream",
           "FeedbackStream", "CostStream", "STREAMS", "register_stream", "SeriesInfo", "Columns", "FEEDBACK_KINDS",
           "NEGATIVE_FEEDBACK", "label_value"]


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """How a stream reads one series: its value kind (what rules select) and its scale."""

    kind: str
    lo: float = 0.0
    hi: float = 1.0
    higher_is_better: bool = True


class Stream:
    """Base class of an input stream (see the module docstring). Class attributes:

    ``name``            stream name, ``[topics]`` key and ``stream`` field value
    ``topic``           its default Kafka topic (``llm.<name>``)
    ``series_fields``   batch columns whose values make a series (labels of its alerts)
    ``kinds``           value kinds its series can have (``Rule.kinds`` selects among them)
    ``changes``         change attribute -> batch column, tracked per app/intent
    ``cause_kinds``     change attribute -> ``suspected_cause.kind`` when it changed near an alert
    ``no_cause``        ``suspected_cause.detail`` when nothing changed
    ``precedence``      when several streams claim an event in a file, the highest wins
    ``event_type``      the msgspec struct of its events (``AnyEvent`` by default)
    """

    name: str = ""
    topic: str = ""
    series_fields: tuple[str, ...] = ("app", "intent")
    kinds: tuple[str, ...] = ()
    changes: Mapping[str, str] = {}
    cause_kinds: Mapping[str, str] = {}
    no_cause: str = "no change recorded: input drift"
    precedence: int = 0
    event_type: type = AnyEvent

    # -- decoding ---------------------------------------------------------------------------
    def claims(self, events: list) -> np.ndarray:
        """Which events (decoded structs) look like this stream's, in files without ``stream``."""
        return np.zeros(len(events), bool)

    def schema_error(self, event) -> str | None:
        """Why one event lacks what this stream needs (None: it is fine)."""
        return None

    def schema_errors(self, events: list) -> dict[int, str]:
        """:meth:`schema_error` of the events that have one, by position in ``events`` (a
        stream may find the candidates column-wise first: see :func:`missing`)."""
        out = {}
        for j, e in enumerate(events):
            why = self.schema_error(e)
            if why:
                out[j] = why
        return out

    def build(self, decoder, events: list, msg: np.ndarray, idx: np.ndarray):
        """Columns of the accepted events (a ``_Columns`` subclass)."""
        raise NotImplementedError

    def check(self, decoder, batch) -> list:
        """Column checks: ``(message, error_class, reason, event_index)`` of the first bad event
        of each bad message (the message is then rejected whole)."""
        return decoder._check_time(batch)

    # -- the engine -------------------------------------------------------------------------
    def describe(self, engine: Engine, labels: Mapping[str, str]) -> SeriesInfo:
        """How ``engine`` reads the series ``labels`` (called once per new series)."""
        return SeriesInfo(self.kinds[0] if self.kinds else self.name)

    def series_params(self, engine: Engine, kind, labels: Mapping[str, str]) -> tuple[str, dict] | None:
        """``(variant, extra detector arguments)`` for a rule of ``kind`` on this series, or None
        when the series cannot be watched (a query app without a golden set)."""
        return "", {}

    def feed(self, engine: Engine, state: StreamState, batch, idx: np.ndarray, sids: np.ndarray,
             t: np.ndarray, runners: list[RuleRunner]) -> Iterator[tuple[RuleRunner, np.ndarray, np.ndarray, Any]]:
        """``(runner, series ids, times, values)`` for each runner, from the accepted events
        ``idx`` of ``batch`` (``sids`` and ``t`` already taken at ``idx``)."""
        raise NotImplementedError

    def display(self, engine: Engine, state: StreamState, sid: int, kind) -> Any:
        """Map a detector's value back to the series' own scale (for the alert's sides)."""
        return None

    def cause(self, engine: Engine, labels: Mapping[str, str], finding, spec) -> dict | None:
        """Suspected cause of a firing alert: the latest tracked change near the degradation."""
        if finding.status != "firing":
            return None
        for attr, kind in self.cause_kinds.items():
            found = engine.changes_near(self.name, attr, labels, finding, spec)
            if found:
                at, frm, to = found[-1]
                return {"kind": kind, "from": frm, "to": to, "at": format_time(at)}
        return {"kind": "none", "detail": self.no_cause}

    def evidence(self, engine: Engine, finding) -> dict | None:
        """Extra evidence for the alert's ``evidence`` field (None: none)."""
        return None


def _obj(values) -> np.ndarray:
    return np.array(values, dtype=object)


def missing(events: list, *fields: str) -> np.ndarray:
    """Positions of the events that lack (have None in) any of ``fields``, read column-wise."""
    bad = np.zeros(len(events), bool)
    for f in fields:
        bad |= np.equal(column(events, f), None)  # type: ignore[call-overload]  # numpy's stubs refuse None
    return np.flatnonzero(bad)


@dataclasses.dataclass
class Columns(_Columns):
    """A batch of a plug-in stream: the common columns plus ``cols`` (name -> array)."""

    cols: dict

    def __getattr__(self, name):
        cols = self.__dict__.get("cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    def take(self, mask: np.ndarray):
        return Columns(self.msg[mask], self.idx[mask], self.ts[mask], self.app[mask], self.intent[mask],
                       take_events(self.objs, mask), {k: v[mask] for k, v in self.cols.items()})


class ScalarStream(Stream):
    """A stream with one number per event (``value_field``) and label fields; subclass it and
    set ``name``, ``event_type`` (a msgspec struct with ``ts``, ``app``, ``intent`` and the
    fields below), ``value_field``, ``label_fields`` (string columns, e.g. ``series_fields``
    beyond app and intent) and ``kinds``."""

    value_field: str = "value"
    label_fields: tuple[str, ...] = ()

    def claims(self, events):
        stream = column(events, "stream")
        return (np.not_equal(column(events, self.value_field), None)
                & (np.equal(stream, None) | (stream == self.name)))

    def schema_error(self, e):
        if getattr(e, self.value_field, None) is None:
            return f"missing required field `{self.value_field}`"
        return None

    def schema_errors(self, events):
        return {j: self.schema_error(events[j]) for j in missing(events, self.value_field).tolist()}

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        cols = {self.value_field: column(evs, self.value_field).astype(np.float64)}
        for f in self.label_fields:
            cols[f] = column(evs, f)
        return Columns(msg, idx, ts, app, intent, evs, cols)

    def check(self, decoder, b):
        out = decoder._check_time(b)
        v = b.cols[self.value_field]
        return out + decoder._first_bad(b, ~np.isfinite(v), "NonFiniteValue",
                                        lambda j: f"{self.value_field} is {float(v[j])!r}")

    def feed(self, engine, state, b, idx, sids, t, runners):
        x = b.cols[self.value_field][idx]
        for runner in runners:
            yield runner, sids, t, x


class ScoresStream(Stream):
    """``llm.scores``: judge and heuristic scores per (app, intent, dimension)."""

    name = "scores"
    series_fields = ("app", "intent", "dimension")
    kinds = ("quality", "flag", "check")
    changes = {"prompt_hash": "prompt_hash", "model": "model"}
    cause_kinds = {"prompt_hash": "prompt_hash_change", "model": "model_change"}
    no_cause = "no template change: provider-side or input drift"
    precedence = 3

    def claims(self, events):
        return np.not_equal(column(events, "dimension"), None)

    def schema_error(self, e):
        if e.dimension is None:
            return "missing required field `dimension`"
        if e.score is None:
            return "missing required field `score`"
        return None

    def schema_errors(self, events):
        return {j: self.schema_error(events[j]) for j in missing(events, "dimension", "score").tolist()}

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        return ScoreBatch(msg, idx, ts, app, intent, evs, column(evs, "dimension"),
                          column(evs, "score").astype(np.float64), column(evs, "prompt_hash"), column(evs, "model"))

    def check(self, decoder, b):
        out = decoder._check_time(b)
        finite = np.isfinite(b.score)
        out += decoder._first_bad(b, ~finite, "NonFiniteValue", lambda j: f"score is {float(b.score[j])!r}")
        dims, inv = factorize(b.dimension)
        spec = np.array([decoder._scale(d) for d in dims], dtype=np.float64).reshape(-1, 3)
        lo, hi, binary = spec[inv, 0], spec[inv, 1], spec[inv, 2] > 0
        outside = finite & ((b.score < lo) | (b.score > hi))
        out += decoder._first_bad(b, outside, "OutOfScale", lambda j: (
            f"score {float(b.score[j])!r} is outside the declared scale [{lo[j]:g}, {hi[j]:g}] of "
            f"dimension `{b.dimension[j]}`"))
        notbin = finite & ~outside & binary & (b.score != 0) & (b.score != 1)
        out += decoder._first_bad(b, notbin, "OutOfScale", lambda j: (
            f"dimension `{b.dimension[j]}` is a flag/check and takes 0 or 1, got {float(b.score[j])!r}"))
        return out

    def describe(self, engine, labels):
        spec = engine.settings.dimension(labels["dimension"])
        return SeriesInfo(spec.kind, spec.lo, spec.hi, spec.higher_is_better)

    def feed(self, engine, state, b, idx, sids, t, runners):
        score = b.score[idx]
        kind, scale = state.columns(sids)
        flag, check = kind == "flag", kind == "check"
        lo, hi, hib = scale[:, 0], scale[:, 1], scale[:, 2] > 0
        # detectors see values on [0, 1], higher is better; flags and check failures as 1 = bad
        x = (score - lo) / (hi - lo)
        x = np.where(hib, x, 1.0 - x)
        x = np.where(check, 1.0 - score, np.where(flag, score, x))
        if engine.judge is not None:
            # the judge's verdicts wait in the join for the labels and feedback of their trace,
            # on the scale the labels are read on (quality: higher is better; flags/checks as sent)
            verdict = np.where(flag | check, score, x)
            engine.judge.offer_scores(b.dimension[idx], t, verdict, b.trace_ids(idx))
        if engine.cost is not None and idx.size:
            # one record per request for the cost rules: its cost, its quality and its model
            qd = engine.cost_quality_dimension
            is_q = (b.dimension[idx] == qd) if qd else (kind == "quality")
            fams = state.families_of(engine.families, sids)
            good = np.where(check, score, np.where(flag, 1.0 - score, x))  # 1 = good
            engine.cost.offer(fams, t, b.trace_ids(idx), b.costs(idx), np.where(is_q, good, np.nan), b.model[idx])
        for runner in runners:
            yield runner, sids, t, (score if runner.kind.values == "raw" else x)

    def display(self, engine, state, sid, kind):
        info = state.info[sid]
        if kind.values == "raw" or info.kind != "quality":
            return None  # raw values, or rates
        lo, hi = info.lo, info.hi
        return (lambda v: lo + v * (hi - lo)) if info.higher_is_better else (lambda v: hi - v * (hi - lo))


class CostStream(Stream):
    """The requests of ``llm.scores`` (one per trace: its cost, quality and model), per
    (app, intent): the series of the cost rules. Not an input of its own (no topic): the engine
    derives it from the score events (:mod:`drift.core.cost`), and its alerts say ``stream:
    scores``. Their suspected cause is a prompt or model change of the app/intent."""

    name = "scores"
    series_fields = ("app", "intent")
    kinds = ("cost",)
    changes = {}
    cause_kinds = {"model": "model_change", "prompt_hash": "prompt_hash_change"}
    no_cause = "no prompt or model change recorded: longer inputs or contexts"


class RetrievalStream(Stream):
    """``llm.retrieval``: top-k retrieval similarities per (app, intent); rules watch top-1."""

    name = "retrieval"
    kinds = ("top1",)
    changes = {"index_version": "index_version"}
    cause_kinds = {"index_version": "index_version_change"}
    no_cause = "no index change: stale corpus or shifted queries"
    precedence = 2

    def claims(self, events):
        return (np.not_equal(column(events, "scores"), None)
                | np.not_equal(column(events, "score"), None))

    def schema_error(self, e):
        if e.scores is None and e.score is None:
            return "missing required field `scores` (or `score`)"
        if e.scores is not None and len(e.scores) == 0:
            return "`scores` is empty"
        return None

    def schema_errors(self, events):
        scores = column(events, "scores")
        has = np.flatnonzero(np.not_equal(scores, None))
        empty = has[np.fromiter(map(len, scores[has]), np.intp, has.size) == 0]
        neither = np.flatnonzero(np.equal(scores, None) & np.equal(column(events, "score"), None))
        return {j: self.schema_error(events[j]) for j in np.union1d(neither, empty).tolist()}

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        scores = column(evs, "scores")
        top1 = column(evs, "score").copy()
        finite = np.ones(len(evs), bool)
        has = np.flatnonzero(np.not_equal(scores, None))
        if has.size:  # the top-k lists, flat: one max and one finiteness test per list (none is empty)
            size = np.fromiter(map(len, scores[has]), np.intp, has.size)
            flat = np.fromiter(itertools.chain.from_iterable(scores[has]), np.float64, int(size.sum()))
            starts = np.cumsum(size) - size
            top1[has] = np.maximum.reduceat(flat, starts)
            finite[has] = np.logical_and.reduceat(np.isfinite(flat), starts)
        b = RetrievalBatch(msg, idx, ts, app, intent, evs, top1.astype(np.float64), column(evs, "index_version"))
        b._all_finite = finite
        return b

    def check(self, decoder, b):
        out = decoder._check_time(b)
        finite = np.isfinite(b.top1) & b._all_finite if len(b) else np.zeros(0, bool)
        out += decoder._first_bad(b, ~finite, "NonFiniteValue", lambda j: "retrieval score is not finite")
        lo, hi = decoder.retrieval_scale
        outside = finite & ((b.top1 < lo) | (b.top1 > hi))
        out += decoder._first_bad(b, outside, "OutOfScale", lambda j: (
            f"retrieval score {float(b.top1[j])!r} is outside [{lo:g}, {hi:g}]"))
        return out

    def series_params(self, engine, kind, labels):
        lo, hi = engine.settings.retrieval_scale
        return "", {"lo": lo, "hi": hi}

    def feed(self, engine, state, b, idx, sids, t, runners):
        x = b.top1[idx]
        for runner in runners:
            yield runner, sids, t, x


class QueriesStream(Stream):
    """``llm.queries``: user queries (text or embeddings) per app, held to the app's golden set."""

    name = "queries"
    series_fields = ("app",)
    kinds = ("queries",)
    precedence = 1

    def claims(self, events):
        return (np.not_equal(column(events, "text"), None)
                | np.not_equal(column(events, "embedding"), None)
                | np.not_equal(column(events, "embedding_b64"), None))

    def schema_error(self, e):
        if e.text is None and e.embedding is None and e.embedding_b64 is None:
            return "needs one of `text`, `embedding` or `embedding_b64`"
        return None

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        dim = decoder.embedding_dim
        errors = np.zeros(len(evs), dtype=object)
        rows = []
        has = np.zeros(len(evs), bool)
        for i, e in enumerate(evs):
            v = None
            if e.embedding_b64 is not None:
                try:
                    raw = base64.b64decode(e.embedding_b64, validate=True)
                    if len(raw) % 4:
                        raise ValueError("length is not a multiple of 4 bytes")
                    v = np.frombuffer(raw, dtype="<f4")
                except (binascii.Error, ValueError) as exc:
                    errors[i] = f"`embedding_b64` is not base64 of float32: {exc}"
            elif e.embedding is not None:
                v = np.asarray(e.embedding, dtype=np.float32)
            if v is not None:
                has[i] = True
            rows.append(v)
        # without a golden set the query rules are off: embeddings are checked for form only
        width = dim or 0
        vectors = np.full((len(evs), width), np.nan, np.float32)
        for i, r in enumerate(rows):
            if r is None or not dim:
                continue
            if r.shape[0] != width:
                errors[i] = f"embedding has {r.shape[0]} dimensions, the golden set has {width}"
            else:
                vectors[i] = r
        b = QueryBatch(msg, idx, ts, app, intent, evs, _obj([e.text for e in evs]), vectors, has)
        b._errors = errors
        return b

    def check(self, decoder, b):
        out = decoder._check_time(b)
        err = np.not_equal(b._errors, 0) if len(b) else np.zeros(0, bool)
        out += decoder._first_bad(b, err, "BadEmbedding", lambda j: str(b._errors[j]))
        finite = (np.isfinite(b.vectors).all(axis=1) if b.vectors.shape[1] else np.ones(len(b), bool)) | ~b.has_vector
        out += decoder._first_bad(b, ~finite & ~err, "NonFiniteValue", lambda j: "embedding has NaN or inf")
        return out

    def series_params(self, engine, kind, labels):
        app = labels["app"]
        key = app if app in engine.golden else ("*" if "*" in engine.golden else None)
        if key is None:
            return None
        g = engine.golden[key]
        return key, {"centroid": tuple(float(v) for v in g.centroid), "dim": int(g.dim), "golden_n": int(g.count)}

    def feed(self, engine, state, b, idx, sids, t, runners):
        monitored = np.zeros(idx.size, bool)
        for runner in runners:
            monitored |= runner.registered(sids)
        engine.counts["queries.unmonitored"] += int((~monitored).sum())
        if not monitored.any():
            return
        idx, sids, t = idx[monitored], sids[monitored], t[monitored]
        vectors = b.vectors[idx].astype(np.float32) if b.vectors.shape[1] else None
        todo = np.flatnonzero(~b.has_vector[idx])
        if todo.size:
            vecs, ok = engine.embed([b.text[idx[j]] for j in todo])
            if vectors is None:
                vectors = np.full((idx.size, vecs.shape[1]), np.nan, np.float32)
            vectors[todo] = vecs
            drop = todo[~ok]
            if drop.size:  # sampled out: counted, not evaluated
                keep = np.ones(idx.size, bool)
                keep[drop] = False
                vectors, sids, t = vectors[keep], sids[keep], t[keep]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            vectors = vectors / norms
        sims: dict[tuple[str, bytes], np.ndarray] = {}  # one search per golden set and selection
        for runner in sorted(runners, key=lambda r: r.variant):
            sel = runner.registered(sids)
            if not sel.any():
                continue
            v = vectors[sel]
            golden = engine.golden[runner.variant]
            key = (runner.variant, sel.tobytes())
            if key not in sims:
                sims[key] = golden.nearest_similarity(v).astype(np.float64)
            sim = sims[key]
            if runner.kind.values == "novelty":
                # 1 = no golden neighbour as close as the golden set's own leave-one-out neighbours
                novel = sim < golden.novelty_threshold(NOVELTY_QUANTILE)
                yield runner, sids[sel], t[sel], novel.astype(np.float64)
            else:
                yield runner, sids[sel], t[sel], np.column_stack([v.astype(np.float64), sim])

    def cause(self, engine, labels, f, spec):
        if f.status != "firing":
            return None
        kind = RULE_KINDS.get(spec.kind)
        if kind is not None and kind.values == "novelty":  # the share of novel queries since the change
            share, which = (f.window.value if f.window is not None else 0.0), "queries since the estimated change"
        else:
            share, which = f.extra.get("uncovered_share") or 0.0, "window's queries"
        return {"kind": "none", "detail": (
            f"input drift: {100 * share:.0f}% of the {which} have no close golden-set neighbour "
            "(users ask things the golden set does not cover)")}

    def evidence(self, engine, f):
        return {**f.extra, "texts_sampled_out": int(engine.counts["queries.sampled_out"])}


# --------------------------------------------------------------------------- labels and feedback
_GOOD_WORDS = {"good": 1.0, "pass": 1.0, "passed": 1.0, "yes": 1.0, "true": 1.0, "correct": 1.0,
               "bad": 0.0, "fail": 0.0, "failed": 0.0, "no": 0.0, "false": 0.0, "incorrect": 0.0}


def label_value(label, lo: float, hi: float, higher_is_better: bool, binary: bool) -> float | str:
    """A human label on the scale the judge's verdict is read on ([0, 1], higher is better for
    quality; 0/1 as sent for flags and checks), or the reason it cannot be read.

    >>> label_value(4, 1, 5, True, False), label_value("pass", 0, 1, True, True), label_value(7, 1, 5, True, False)
    (0.75, 1.0, 'label 7 is outside the scale [1, 5] of the dimension')
    """
    if isinstance(label, str):
        v = _GOOD_WORDS.get(label.strip().lower())
        if v is None:
            return (f"label {label!r} is not a number on the dimension's scale nor one of "
                    f"{', '.join(sorted(_GOOD_WORDS))}")
        return v if (binary or higher_is_better) else 1.0 - v
    v = float(label)
    if not np.isfinite(v):
        return f"label is {v!r}"
    if not lo <= v <= hi:
        return f"label {v:g} is outside the scale [{lo:g}, {hi:g}] of the dimension"
    if binary:
        return v if v in (0.0, 1.0) else f"the dimension is a flag/check and takes 0 or 1, got {v:g}"
    u = (v - lo) / (hi - lo)
    return u if higher_is_better else 1.0 - u


class LabelsStream(Stream):
    """``llm.labels``: human labels of scored responses, joined with the judge's score of the same
    ``trace_id`` and ``dimension`` (the engine's judge join); rules see the joined pairs."""

    name = "labels"
    series_fields = ("app", "intent", "dimension")
    kinds = ("labels",)
    precedence = 4

    def claims(self, events):
        return np.not_equal(column(events, "label"), None)

    def schema_error(self, e):
        for f in ("trace_id", "dimension", "label"):
            if getattr(e, f) is None:
                return f"missing required field `{f}`"
        return None

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        return Columns(msg, idx, ts, app, intent, evs, {
            "dimension": _obj([e.dimension for e in evs]), "label": _obj([e.label for e in evs]),
            "trace_id": _obj([e.trace_id for e in evs])})

    def check(self, decoder, b):
        out = decoder._check_time(b)
        why: dict[int, str] = {}
        for j, (dim, lab) in enumerate(zip(b.cols["dimension"], b.cols["label"])):
            lo, hi, binary = decoder._scale(dim)
            v = label_value(lab, lo, hi, True, bool(binary))
            if isinstance(v, str):
                why[j] = v
        bad = np.zeros(len(b), bool)
        bad[list(why)] = True
        return out + decoder._first_bad(b, bad, "OutOfScale", why.__getitem__)

    def feed(self, engine, state, b, idx, sids, t, runners):
        if engine.judge is not None and idx.size:
            dims = b.cols["dimension"][idx]
            values = np.empty(idx.size)
            for j, (dim, lab) in enumerate(zip(dims, b.cols["label"][idx])):
                spec = engine.settings.dimension(dim)
                values[j] = label_value(lab, spec.lo, spec.hi, spec.higher_is_better, spec.binary)
            engine.judge.offer_labels(b.app[idx], b.intent[idx], dims, t, values, b.cols["trace_id"][idx].tolist())
        return iter(())  # its rules see the joined pairs (Engine._run_joined)


FEEDBACK_KINDS = ("thumbs_up", "thumbs_down", "regenerate", "escalate")
NEGATIVE_FEEDBACK = ("thumbs_down", "regenerate")


class FeedbackStream(Stream):
    """``llm.feedback``: users' reactions to responses per (app, intent). Rules see the negative
    share (thumbs-down and regenerate among all feedback events), and thumbs-downs joined with
    the judge's score of their trace (does the judge call them good?)."""

    name = "feedback"
    kinds = ("feedback",)
    precedence = 4
    no_cause = "no template change recorded for this stream: compare with the scores' prompt and model timeline"

    def claims(self, events):
        return (np.not_equal(column(events, "kind"), None)
                & np.equal(column(events, "dimension"), None))

    def schema_error(self, e):
        if e.trace_id is None:
            return "missing required field `trace_id`"
        if e.kind is None:
            return "missing required field `kind`"
        if e.kind not in FEEDBACK_KINDS:
            return f"kind: expected one of {', '.join(FEEDBACK_KINDS)}, got {e.kind!r}"
        return None

    def build(self, decoder, evs, msg, idx):
        msg, idx, ts, app, intent = decoder._common(evs, msg, idx)
        return Columns(msg, idx, ts, app, intent, evs, {
            "kind": _obj([e.kind for e in evs]), "trace_id": _obj([e.trace_id for e in evs])})

    def feed(self, engine, state, b, idx, sids, t, runners):
        kind = b.cols["kind"][idx]
        if engine.judge is not None and idx.size:
            down = np.flatnonzero(kind == "thumbs_down")
            if down.size:
                engine.judge.offer_feedback(b.app[idx][down], b.intent[idx][down], t[down],
                                            b.cols["trace_id"][idx][down].tolist())
            esc = np.flatnonzero(kind == "escalate")
            if esc.size:
                engine.escalated(b.app[idx][esc], b.intent[idx][esc], t[esc], b.cols["trace_id"][idx][esc].tolist())
        negative = np.isin(kind, NEGATIVE_FEEDBACK).astype(np.float64)
        for runner in runners:
            if runner.kind.values != "joined":
                yield runner, sids, t, negative


STREAMS: dict[str, Stream] = {}


def register_stream(stream: Stream) -> Stream:
    """Register an input stream (an instance); the engine and the decoder pick it up."""
    if not stream.name:
        raise ValueError("a stream needs a name")
    if not stream.topic:
        stream.topic = f"llm.{stream.name}"
    STREAMS[stream.name] = stream
    return stream


for _s in (ScoresStream(), RetrievalStream(), QueriesStream(), LabelsStream(), FeedbackStream()):
    register_stream(_s)
