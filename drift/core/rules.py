"""Rules: the registry of rule kinds and the built-in rules declared from them.

A **rule kind** (:class:`RuleKind`) is declared once: its detector class, a typed parameter
dataclass (defaults, validation and error text come from it, see :mod:`drift.core.params`),
the streams it can watch, the sentence that summarises an alert and the first thing the
on-call should do. A **rule** (:class:`Rule`) is a kind applied to a stream's series with its
own defaults, severity and wording: the SPEC's rules are declarations at the bottom of this
file. Users add rules in TOML from any kind, and override a rule's parameters for some series::

    [rules.faithfulness_floor]          # a new rule (the name is not a built-in)
    kind = "floor"
    dimension = "faithfulness"          # which series: app / intent / dimension (str or list)
    floor = 0.8
    bucket = "5m"
    window = "5m"

    [[rules.quality_drop.override]]     # stricter for one app
    app = "payments-bot"
    threshold = 0.03

Adding a detector is one file in ``detectors/`` plus one :func:`register` call:

>>> import dataclasses
>>> from detectors.floor import Floor
>>> from drift.core.params import param
>>> @dataclasses.dataclass(frozen=True)
... class CeilingParams:
...     floor: float = param(0.2, "number", "the highest acceptable mean")
...     below: bool = param(False, "bool")
...     bucket: float = param(3600.0, "duration")
...     window: float = param(3600.0, "duration")
...     alpha: float = param(0.01, "unit")
...     min_n: int = param(30, "count")
...     for_buckets: int = param(1, "count")
...     resolve_after: int = param(2, "count")
>>> kind = register(RuleKind("ceiling_demo", Floor, CeilingParams, alert_detector="floor"))
>>> RULE_KINDS["ceiling_demo"].detector.__name__
'Floor'
>>> _ = RULE_KINDS.pop("ceiling_demo")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from detectors.base import Finding
from detectors.centroid import CentroidShift
from detectors.changes import ChangeTracker
from detectors.cost import CostRatio
from detectors.drop import PercentDrop
from detectors.floor import Floor
from detectors.kappa import KappaDrop
from detectors.rate import RateRatio
from detectors.sequential import MeanCusum, RateCusum
from detectors.shift import KsShift
from drift.core.params import param

__all__ = ["RuleKind", "Rule", "SummaryContext", "RULE_KINDS", "RULES", "register", "rule_kind",
           "SEVERITIES", "NOVELTY_QUANTILE"]

SEVERITIES = ("info", "warning", "critical")


@dataclasses.dataclass(frozen=True)
class SummaryContext:
    """What a summary sentence may use: the rule, the series, the finding and the two sides as
    they appear in the alert (values on the series' own scale)."""

    rule: str
    labels: Mapping[str, str]
    finding: Finding
    window: Mapping[str, Any] | None
    baseline: Mapping[str, Any] | None
    window_seconds: float
    value_kind: str = ""  # the series' value kind (scores: quality, flag or check)

    @property
    def where(self) -> str:
        return f"{self.labels.get('app')}/{self.labels.get('intent')}"

    @property
    def dim(self) -> str:
        return self.labels.get("dimension", "")

    @property
    def ref(self) -> str:
        return "its long-term reference" if self.finding.reference_kind == "long_term" else "baseline"

    @property
    def span(self) -> str:
        """The span of the window that decided (a rule's short window, or the whole window)."""
        w = self.finding.window
        decided = w.end - w.start if w is not None and math.isfinite(w.end - w.start) and w.end > w.start else None
        return duration_text(decided if decided else self.window_seconds)

    @property
    def wv(self):
        return self.window["value"] if self.window else None

    @property
    def bv(self):
        return self.baseline["value"] if self.baseline else None


def duration_text(seconds: float) -> str:
    """``86400`` → ``"1 day"``, ``21600`` → ``"6 hours"``."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= unit and seconds % unit == 0:
            k = int(seconds // unit)
            return f"{k} {name}{'s' if k != 1 else ''}"
    return f"{seconds:g} s"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def generic_summary(c: SummaryContext) -> str:
    f = c.finding
    subject = "/".join([c.rule] + [v for k, v in c.labels.items() if k != "stream" and v])
    return f"{subject}: {f.statistic}={f.value:.3g} (threshold {f.threshold:g}) over {c.span}"


@dataclasses.dataclass(frozen=True)
class RuleKind:
    """A kind of rule: a detector, its parameters and how its alerts read.

    Attributes
    ----------
    name : str
        What TOML's ``kind = "..."`` names.
    detector : type
        A class of ``detectors/`` following the detector contract (``update_many``,
        ``state_dict``/``from_state``); ``None`` for notice kinds (``change_tracker``), which
        the engine runs on each stream's change attributes.
    params : type
        Frozen dataclass of the tunable parameters, fields made with :func:`~drift.core.params.param`.
    alert_detector : str
        The ``detector`` field of its alerts (defaults to ``name``).
    summary : callable
        ``summary(SummaryContext) -> str``: the alert's one sentence (rules may override it).
    first_action : str
        What the on-call should do first (rules may override it).
    streams : tuple of str
        Streams whose values it can watch (empty: any stream with scalar values).
    values : str
        ``"unit"``: the stream's values normalised to [0, 1], higher is better (flags and check
        failures as 1); ``"raw"``: the values as sent, on the series' own scale;
        ``"novelty"`` (queries): 1 for a query whose nearest golden neighbour is less similar
        than the golden set's own leave-one-out neighbours (below their
        :data:`NOVELTY_QUANTILE`), else 0; ``"joined"`` (labels, feedback): the pairs of the
        judge join (:mod:`drift.core.judge`), released in event time; ``"cost"`` (scores):
        one row per request (cost, quality, model code) from :mod:`drift.core.cost`, per
        (app, intent).
    probe : dict
        Engine-supplied arguments (scale, golden centroid, ...) to construct a throw-away
        detector when a configuration is checked, so bad combinations fail at start-up.
    """

    name: str
    detector: type[Any] | None
    params: type
    alert_detector: str = ""
    summary: Callable[[SummaryContext], str] = generic_summary
    first_action: str = ""
    streams: tuple[str, ...] = ("scores", "retrieval")
    values: str = "unit"
    probe: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.alert_detector:
            object.__setattr__(self, "alert_detector", self.name)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rule with a name: a kind applied to a stream's series, with defaults and wording.

    ``kinds`` selects series by the value kind their stream gives them (scores: the dimension's
    kind ``quality``/``flag``/``check``; retrieval: ``top1``; queries: ``queries``; for notice
    rules, the change attributes such as ``prompt_hash``). ``kind`` may be a :class:`RuleKind`,
    which is registered with the rule.
    """

    name: str
    kind: str | RuleKind
    stream: str
    kinds: tuple[str, ...]
    severity: str = "warning"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    summary: Callable[[SummaryContext], str] | None = None
    first_action: str | None = None
    enabled: bool = True  # a built-in that is off until [rules.NAME] enabled = true

    @property
    def kind_name(self) -> str:
        return self.kind if isinstance(self.kind, str) else self.kind.name


RULE_KINDS: dict[str, RuleKind] = {}
RULES: dict[str, Rule] = {}


def register(obj):
    """Register a :class:`RuleKind` or a :class:`Rule` (and the kind it carries); returns it.

    Rules registered before :func:`drift.core.config.load_settings` runs are built-ins: on by
    default, tunable in ``[rules.NAME]``.
    """
    if isinstance(obj, RuleKind):
        RULE_KINDS[obj.name] = obj
    elif isinstance(obj, Rule):
        if not isinstance(obj.kind, str):
            register(obj.kind)
        if obj.kind_name not in RULE_KINDS:
            raise ValueError(f"rule {obj.name!r}: unknown kind {obj.kind_name!r}")
        if obj.severity not in SEVERITIES:
            raise ValueError(f"rule {obj.name!r}: severity must be one of {SEVERITIES}")
        RULES[obj.name] = obj
    else:
        raise TypeError(f"expected a RuleKind or a Rule, got {type(obj).__name__}")
    return obj


def rule_kind(name: str) -> RuleKind:
    return RULE_KINDS[name]


# --------------------------------------------------------------------------- parameters
_BUCKET = "evaluation cadence (bucket width) in event time"
_HYST = ("for_buckets", "resolve_after", "resolve_ratio")
_BUDGET = ("false alerts allowed per series-year; with alpha unset every test runs at "
           "false_alarm_rate * bucket / year / (tests per look)")


@dataclasses.dataclass(frozen=True)
class PercentDropParams:
    stat: str = param("mean", "choice", "statistic compared", choices=("mean", "median"))
    bucket: float = param(3600.0, "duration", _BUCKET)
    window: float = param(7 * 86400.0, "duration", "current (rolling) window")
    baseline: float = param(14 * 86400.0, "duration", "frozen baseline span")
    threshold: float = param(0.05, "positive", "minimum relative drop")
    alpha: float | None = param(None, "unit", "per-test level; unset: derived from false_alarm_rate")
    false_alarm_rate: float = param(1e-4, "positive", _BUDGET)
    min_n: int = param(100, "count", "minimum samples on each side")
    bins: int = param(256, "count", "histogram bins (median)")
    long_term: bool = param(True, "bool", "also compare with the long-term reference")
    short_windows: tuple = param((), "durations", "recent parts of the window tested on their own")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(3, "count", "consecutive clear evaluations before resolving")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of the threshold")


@dataclasses.dataclass(frozen=True)
class KsParams:
    bucket: float = param(86400.0, "duration", _BUCKET)
    window: float = param(7 * 86400.0, "duration", "current window")
    baseline: float = param(14 * 86400.0, "duration", "frozen baseline span")
    alpha: float | None = param(None, "unit", "family-wise level; unset: derived from false_alarm_rate")
    false_alarm_rate: float = param(1e-4, "positive", _BUDGET)
    min_d: float = param(0.1, "positive", "minimum KS distance D")
    min_n: int = param(200, "count", "minimum samples on each side")
    bins: int = param(256, "count", "histogram bins")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(2, "count", "consecutive clear evaluations before resolving")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of min_d")


@dataclasses.dataclass(frozen=True)
class RateRatioParams:
    bucket: float = param(3600.0, "duration", _BUCKET)
    window: float = param(86400.0, "duration", "current window")
    baseline: float = param(7 * 86400.0, "duration", "frozen baseline span")
    ratio: float = param(2.0, "positive", "minimum rate ratio (window / reference)")
    alpha: float | None = param(None, "unit", "per-test level; unset: derived from false_alarm_rate")
    false_alarm_rate: float = param(1e-4, "positive", _BUDGET)
    min_n: int = param(20, "count", "minimum events in the window")
    min_ref_n: int = param(200, "count", "minimum events in the reference")
    min_events: int = param(5, "count", "minimum flagged events in the window")
    min_rate: float = param(0.005, "positive", "reference rate floor")
    long_term: bool = param(True, "bool", "also compare with the long-term reference")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(3, "count", "consecutive clear evaluations before resolving")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of the ratio's excess")


@dataclasses.dataclass(frozen=True)
class CentroidParams:
    bucket: float = param(3600.0, "duration", _BUCKET)
    window: float = param(7 * 86400.0, "duration", "current window")
    threshold: float = param(0.15, "positive", "minimum cosine distance to the golden centroid")
    min_n: int = param(200, "count", "minimum queries in a window")
    coverage_sim: float = param(0.5, "cosine", "a query is covered when its nearest golden neighbour is this similar")
    short_windows: tuple = param((), "durations", "recent parts of the window tested on their own")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(3, "count", "consecutive clear evaluations before resolving")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of the threshold")


@dataclasses.dataclass(frozen=True)
class FloorParams:
    floor: float = param(0.8, "number", "the level the window's mean must not fall below (or rise above)")
    below: bool = param(True, "bool", "true: a floor; false: a ceiling")
    bucket: float = param(300.0, "duration", _BUCKET)
    window: float = param(300.0, "duration", "rolling window")
    alpha: float = param(0.01, "unit", "significance of the one-sample t-test against the floor")
    min_n: int = param(30, "count", "minimum samples in the window")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(2, "count", "consecutive clear evaluations before resolving")


@dataclasses.dataclass(frozen=True)
class ChangeParams:
    max_values: int = param(64, "count", "distinct values remembered per app/intent")
    max_changes: int = param(32, "count", "changes remembered per app/intent")


# --------------------------------------------------------------------------- summaries
def _resolved(c: SummaryContext) -> str | None:
    if c.finding.status != "resolved":
        return None
    subject = "/".join([c.rule] + [c.labels[k] for k in ("app", "intent", "dimension") if c.labels.get(k)])
    return f"{subject} recovered: {c.finding.statistic} now {c.finding.value:.3g} (threshold {c.finding.threshold:g})"


def _summary(fn):
    def summary(c: SummaryContext) -> str:
        return _resolved(c) or fn(c)
    summary.__doc__ = fn.__doc__
    return summary


@_summary
def drop_summary(c):
    what = f"{c.dim} score" if c.dim else "mean"
    return f"{what} for {c.where} fell {_pct(c.finding.value)} below {c.ref} ({c.bv:.3g} → {c.wv:.3g}) over {c.span}"


@_summary
def retrieval_drop_summary(c):
    return (f"median top-1 retrieval similarity for {c.where} fell {_pct(c.finding.value)} below {c.ref} "
            f"({c.bv:.3g} → {c.wv:.3g}) over {c.span}")


@_summary
def ks_summary(c):
    f = c.finding
    return (f"{c.dim} score distribution for {c.where} shifted from {c.ref} (KS D={f.value:.3f}, "
            f"p={f.p_value:.2g}; median {c.bv:.3g} → {c.wv:.3g}) over {c.span}")


@_summary
def rate_summary(c):
    what = f"{c.dim} failure rate" if c.rule == "format_failure_spike" else f"{c.dim} rate"
    return (f"{what} for {c.where} rose to {c.finding.value:.1f}× {c.ref} ({_pct(c.bv)} → {_pct(c.wv)}) "
            f"over {c.span}")


@_summary
def centroid_summary(c):
    f = c.finding
    cov = (f.extra or {}).get("coverage")
    cov_text = f"; {100 * cov:.0f}% of them covered by the golden set" if cov is not None else ""
    n = c.window["n"] if c.window else 0
    return (f"queries of {c.labels.get('app')} moved away from the golden set: centroid cosine distance "
            f"{f.value:.3f} (threshold {f.threshold:g}) over {c.span} of {n:,} queries{cov_text}")


@_summary
def floor_summary(c):
    f = c.finding
    what = f"{c.dim} mean" if c.dim else "mean"
    side = "below its floor" if f.statistic == "mean_below_floor" else "above its ceiling"
    return f"{what} for {c.where} is {c.wv:.3g}, {side} {f.threshold:g} over {c.span} ({c.window['n']:,} samples)"


# --------------------------------------------------------------------------- kinds
PERCENT_DROP = register(RuleKind(
    "percent_drop", PercentDrop, PercentDropParams, summary=drop_summary,
    first_action="Pull traces from the degradation period; check the prompt hash timeline"))
KS = register(RuleKind(
    "ks", KsShift, KsParams, alert_detector="ks_2samp", summary=ks_summary, streams=("scores",),
    first_action="Compare score histograms before and after; pull traces from the shifted period"))
RATE_RATIO = register(RuleKind(
    "rate_ratio", RateRatio, RateRatioParams, summary=rate_summary, streams=("scores",),
    first_action="Sample flagged responses since the spike; check model and policy changes"))
CENTROID = register(RuleKind(
    "centroid", CentroidShift, CentroidParams, alert_detector="centroid_shift", summary=centroid_summary,
    streams=("queries",), probe={"centroid": (1.0, 0.0), "dim": 2},
    first_action="Review queries far from the golden set; extend the golden set or route the new intents"))
FLOOR = register(RuleKind(
    "floor", Floor, FloorParams, summary=floor_summary, values="raw", streams=(),
    first_action="Pull traces from the window; check recent prompt, model and retrieval changes"))
CHANGE_TRACKER = register(RuleKind(
    "change_tracker", None, ChangeParams, streams=("scores", "retrieval"),
    first_action="Watch quality for this app/intent over the next 48 hours"))
_ = ChangeTracker  # the engine runs ChangeTracker for notice kinds

# --------------------------------------------------------------------------- sequential kinds
@dataclasses.dataclass(frozen=True)
class SequentialParams:
    """What every sequential (CUSUM) kind shares: the budget, the reference and the recovery."""

    false_alarm_rate: float = param(1e-4, "positive", "false alerts allowed per series-year")
    bucket: float = param(3600.0, "duration", _BUCKET)
    guard: float = param(2 * 86400.0, "duration", "how far the reference lags the present")
    baseline: float = param(14 * 86400.0, "duration", "reference span")
    recovery: float = param(86400.0, "duration", "window a recovery is judged on (at most guard)")
    z: float = param(2.0, "positive", "the reference enters at its upper bound of z standard errors")
    min_ref_span: float = param(7 * 86400.0, "duration", "event time from a series' first event to the end of its reference before the test runs")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(24, "count", "consecutive clear evaluations before resolving (a day of hourly ones)")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of the minimum effect")


@dataclasses.dataclass(frozen=True)
class RateCusumParams(SequentialParams):
    ratio: float = param(2.0, "positive", "minimum effect: the rate at least this many times the reference")
    min_ref_n: int = param(200, "count", "events the reference needs")
    min_rate: float = param(0.005, "positive", "floor on the reference rate")
    min_n: int = param(20, "count", "events in the recovery window before resolving")


@dataclasses.dataclass(frozen=True)
class MeanCusumParams(SequentialParams):
    threshold: float = param(0.05, "positive", "minimum effect: relative drop of the mean")
    min_ref_n: int = param(300, "count", "events the reference needs (enough that a rare low tail, e.g. 3 % zeros, is in it)")
    min_n: int = param(30, "count", "events in the recovery window before resolving")
    seasonal: bool = param(True, "bool", "hold each UTC hour of the day to its own reference level")


@_summary
def cusum_rate_summary(c):
    f = c.finding
    what = f"{c.dim} failure rate" if c.value_kind == "check" else f"{c.dim or 'event'} rate"
    return (f"{what} for {c.where} rose to {f.value:.1f}× {c.ref} ({_pct(c.bv)} → {_pct(c.wv)}) "
            f"since {_when(f.extra.get('change_at'))} ({c.window['n'] if c.window else 0:,} events; "
            f"sequential test, {f.extra.get('cusum', 0):.1f} ≥ {f.extra.get('cusum_threshold', 0):.1f})")


@_summary
def cusum_mean_summary(c):
    f = c.finding
    what = f"{c.dim} score" if c.dim else "mean"
    return (f"{what} for {c.where} fell {_pct(f.value)} below {c.ref} ({c.bv:.3g} → {c.wv:.3g}) "
            f"since {_when(f.extra.get('change_at'))} ({c.window['n'] if c.window else 0:,} samples; "
            f"sequential test, {f.extra.get('cusum', 0):.1f} ≥ {f.extra.get('cusum_threshold', 0):.1f})")


def _when(t) -> str:
    import datetime as _dt

    if t is None or not math.isfinite(t):
        return "the change"
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


CUSUM_RATE = register(RuleKind(
    "cusum_rate", RateCusum, RateCusumParams, summary=cusum_rate_summary, streams=(),
    first_action="Sample flagged responses since the estimated change; check model and policy changes"))
CUSUM_MEAN = register(RuleKind(
    "cusum_mean", MeanCusum, MeanCusumParams, summary=cusum_mean_summary, streams=(),
    first_action="Pull traces since the estimated change; check the prompt hash and model timeline"))


# --------------------------------------------------------------------------- query novelty (coverage)
# A query is *novel* when its nearest golden neighbour is less similar than this quantile of the
# golden set's leave-one-out nearest-neighbour similarities (GoldenSet.novelty_threshold): a query
# from the golden set's own distribution is novel with probability about NOVELTY_QUANTILE.
NOVELTY_QUANTILE = 0.01


@dataclasses.dataclass(frozen=True)
class NoveltyRateParams(RateCusumParams):
    ratio: float = param(5.0, "positive", "minimum effect: the share of novel queries at least this many times the reference")
    min_ref_n: int = param(200, "count", "queries the reference needs")
    min_rate: float = param(NOVELTY_QUANTILE, "positive", "floor on the reference share of novel queries")
    min_n: int = param(20, "count", "queries in the recovery window before resolving")


@_summary
def novelty_summary(c):
    f = c.finding
    return (f"share of {c.labels.get('app')}'s queries with no close golden-set neighbour rose to {_pct(c.wv)} "
            f"(expected {_pct(c.bv)}) since {_when(f.extra.get('change_at'))} "
            f"({c.window['n'] if c.window else 0:,} queries; sequential test, "
            f"{f.extra.get('cusum', 0):.1f} ≥ {f.extra.get('cusum_threshold', 0):.1f})")


NOVELTY_RATE = register(RuleKind(
    "novelty_rate", RateCusum, NoveltyRateParams, summary=novelty_summary, streams=("queries",),
    values="novelty",
    first_action="Read a sample of the queries since the estimated change; extend the golden set or "
                 "route the new intents"))
# --------------------------------------------------------------------------- the SPEC's rules
# Every built-in states its false-alarm budget in time (false_alarm_rate, default 1e-4: one
# false alert per 10,000 series-years). The mean and rate rules are sequential (CUSUM, above:
# evidence accumulates at any volume); the shape and median rules are windowed, every test at
# the budget's share of its looks (detectors.base.budget_alpha).
register(Rule("quality_drop", "cusum_mean", "scores", ("quality",), "warning", {
    "threshold": 0.05, "false_alarm_rate": 1e-4, "bucket": 3600.0, "guard": 2 * 86400.0,
    "baseline": 14 * 86400.0, "seasonal": True}))
register(Rule("quality_shift", "ks", "scores", ("quality",), "warning", {
    "bucket": 86400.0, "window": 7 * 86400.0, "baseline": 14 * 86400.0, "alpha": None,
    "false_alarm_rate": 1e-4, "min_d": 0.1, "min_n": 200, "bins": 256, "for_buckets": 1,
    "resolve_after": 2, "resolve_ratio": 0.5}))
register(Rule("retrieval_drop", "percent_drop", "retrieval", ("top1",), "warning", {
    "stat": "median", "bucket": 6 * 3600.0, "window": 3 * 86400.0, "baseline": 7 * 86400.0,
    "threshold": 0.10, "alpha": None, "false_alarm_rate": 1e-4, "min_n": 100, "bins": 512,
    "long_term": True, "short_windows": (86400.0,), "for_buckets": 1, "resolve_after": 2,
    "resolve_ratio": 0.5},
    summary=retrieval_drop_summary,
    first_action="Check index freshness and ingestion jobs; compare recent queries with indexed documents"))
register(Rule("flag_rate_spike", "cusum_rate", "scores", ("flag",), "critical", {
    "ratio": 2.0, "min_rate": 0.005, "false_alarm_rate": 1e-4, "bucket": 3600.0,
    "guard": 2 * 86400.0, "baseline": 14 * 86400.0}))
register(Rule("format_failure_spike", "cusum_rate", "scores", ("check",), "warning", {
    "ratio": 2.0, "min_rate": 0.01, "false_alarm_rate": 1e-4, "bucket": 3600.0,
    "guard": 2 * 86400.0, "baseline": 14 * 86400.0},
    first_action="Diff the prompt template around the change; validate sample outputs against the schema"))
register(Rule("query_centroid_shift", "centroid", "queries", ("queries",), "warning", {
    "bucket": 3600.0, "window": 7 * 86400.0, "threshold": 0.15, "min_n": 200, "coverage_sim": 0.5,
    "short_windows": (86400.0, 2 * 86400.0), "for_buckets": 1, "resolve_after": 3, "resolve_ratio": 0.5}))
register(Rule("prompt_change", "change_tracker", "scores", ("prompt_hash", "model"), "info",
              {"max_values": 64, "max_changes": 32}))


register(Rule("query_novelty_rise", "novelty_rate", "queries", ("queries",), "warning", {
    "ratio": 5.0, "min_rate": NOVELTY_QUANTILE, "false_alarm_rate": 1e-4, "bucket": 3600.0,
    "guard": 2 * 86400.0, "baseline": 14 * 86400.0, "min_ref_n": 200}))


# --------------------------------------------------------------------------- the judge: labels and feedback
@dataclasses.dataclass(frozen=True)
class KappaParams:
    bar: float = param(0.6, "number", "the judge is untrusted below this Cohen's kappa")
    healthy: float = param(0.8, "number", "kappa of a healthy judge: the false-alarm budget holds for it")
    pairs: int = param(200, "count", "most recent labelled pairs the kappa is computed on")
    min_pairs: int = param(50, "count", "pairs needed before the rule tests")
    max_age: float = param(30 * 86400.0, "duration", "oldest labelled pair used")
    bucket: float = param(86400.0, "duration", _BUCKET)
    false_alarm_rate: float = param(1e-4, "positive", "false alerts allowed per series-year for a judge at `healthy`")
    z_min: float = param(1.645, "positive", "the upper bound is never narrower than this many standard errors (95 %, one-sided)")
    good: float = param(0.5, "unit", "judge verdicts and labels at or above this (on [0, 1], higher is better) count as good")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(3, "count", "consecutive evaluations with kappa back at the bar before resolving")


@dataclasses.dataclass(frozen=True)
class DisagreementParams(RateCusumParams):
    ratio: float = param(1.5, "positive", "minimum effect: the share at least this many times the reference")
    min_ref_n: int = param(50, "count", "thumbs-downs the reference needs")
    min_rate: float = param(0.05, "positive", "floor on the reference share")
    min_n: int = param(20, "count", "thumbs-downs in the recovery window before resolving")
    judge_dimension: str = param("relevance", "name", "the judge's score dimension compared with the users' verdict")
    good: float = param(0.7, "unit", "a score at or above this (on [0, 1], higher is better) means the judge called the response good")


@_summary
def kappa_summary(c):
    f = c.finding
    return (f"judge agreement with human labels on {c.dim} for {c.where} fell to kappa {f.extra.get('kappa', 0):.2f} "
            f"over the last {f.extra.get('pairs', 0)} labelled pairs (upper bound {f.value:.2f} < {f.threshold:g}): "
            f"scores on this dimension cannot be trusted")


@_summary
def disagreement_summary(c):
    f = c.finding
    return (f"users' thumbs-downs for {c.where} that the judge scored as good rose to {_pct(c.wv)} "
            f"(baseline {_pct(c.bv)}) since {_when(f.extra.get('change_at'))} "
            f"({c.window['n'] if c.window else 0:,} thumbs-downs; sequential test, "
            f"{f.extra.get('cusum', 0):.1f} ≥ {f.extra.get('cusum_threshold', 0):.1f}): the evaluation has a blind spot")


@_summary
def negative_feedback_summary(c):
    f = c.finding
    return (f"negative feedback (thumbs-down and regenerate) for {c.where} rose to {f.value:.1f}× {c.ref} "
            f"({_pct(c.bv)} → {_pct(c.wv)} of feedback events) since {_when(f.extra.get('change_at'))} "
            f"({c.window['n'] if c.window else 0:,} events; sequential test, "
            f"{f.extra.get('cusum', 0):.1f} ≥ {f.extra.get('cusum_threshold', 0):.1f})")


KAPPA = register(RuleKind(
    "kappa_drop", KappaDrop, KappaParams, alert_detector="cohen_kappa", summary=kappa_summary,
    streams=("labels",), values="joined",
    first_action="Suspend scoring trust; re-rate the gold set and update the rubric"))
DISAGREEMENT = register(RuleKind(
    "disagreement_rate", RateCusum, DisagreementParams, alert_detector="cusum_rate", summary=disagreement_summary,
    streams=("feedback",), values="joined",
    first_action="Read the thumbs-down responses the judge scored as good; add their failure mode to the rubric"))

register(Rule("judge_agreement_drop", "kappa_drop", "labels", ("labels",), "critical", {
    "bar": 0.6, "healthy": 0.8, "pairs": 200, "min_pairs": 50, "max_age": 30 * 86400.0, "bucket": 86400.0,
    "false_alarm_rate": 1e-4}))
register(Rule("negative_feedback_spike", "cusum_rate", "feedback", ("feedback",), "warning", {
    "ratio": 2.0, "min_rate": 0.01, "min_ref_n": 100, "false_alarm_rate": 1e-4, "bucket": 3600.0,
    "guard": 2 * 86400.0, "baseline": 14 * 86400.0},
    summary=negative_feedback_summary,
    first_action="Read a sample of the thumbs-down and regenerated responses since the change; check recent releases"))
register(Rule("judge_user_disagreement", "disagreement_rate", "feedback", ("feedback",), "warning", {
    "ratio": 1.5, "min_rate": 0.05, "min_ref_n": 50, "false_alarm_rate": 1e-4, "bucket": 3600.0,
    "guard": 2 * 86400.0, "baseline": 14 * 86400.0, "judge_dimension": "relevance", "good": 0.7}))


# --------------------------------------------------------------------------- cost per quality point
@dataclasses.dataclass(frozen=True)
class CostRatioParams:
    threshold: float = param(0.30, "positive", "minimum effect: spend per quality point at least this much (relative) above the baseline week")
    bucket: float = param(86400.0, "duration", _BUCKET)
    window: float = param(7 * 86400.0, "duration", "current window (this week)")
    baseline: float = param(7 * 86400.0, "duration", "baseline (the week before it, frozen while an episode is open)")
    alpha: float | None = param(None, "unit", "per-look level; unset: derived from false_alarm_rate")
    false_alarm_rate: float = param(1e-4, "positive", "false alerts allowed per series-year")
    min_n: int = param(50, "count", "requests each week needs")
    models: int = param(4, "count", "models told apart per app/intent in the summary (the rest pooled)")
    short_windows: tuple = param((86400.0,), "durations", "recent parts of the window also held to the baseline week on their own")
    quality_dimension: str = param("", "optional_name", "a pass/fail dimension whose score is a request's quality "
                                   "(spend per good answer); empty: the mean of its quality dimensions")
    for_buckets: int = param(1, "count", "consecutive hits before firing")
    resolve_after: int = param(2, "count", "consecutive clear evaluations before resolving")
    resolve_ratio: float = param(0.5, "positive", "clear below this share of the minimum effect")


def _moved(e: Mapping[str, Any]) -> str:
    """What moved between the two weeks, from :meth:`detectors.cost.CostRatio.breakdown`."""
    def pct(r):
        return f"{round(100 * (r - 1)):+d}%" if r is not None and math.isfinite(r) else "n/a"

    cpr, qr = e.get("cost_per_request_ratio"), e.get("quality_ratio")
    same = e.get("same_model_cost_per_request_ratio")
    mw, mr = e.get("model_window"), e.get("model_reference")
    causes = []
    # cost per request = (within each model) x (the mix of models): what is left of its rise once
    # the shared model's own rise is taken out is the mix, i.e. the price of other models
    mix = cpr / same if cpr is not None and same is not None and math.isfinite(cpr) and math.isfinite(same) \
        and same > 0 else float("nan")
    changed_model = mw != mr or (math.isfinite(mix) and mix >= 1.1)
    if changed_model:
        causes.append(f"price (model {mr or '?'} → {mw or '?'})")
    if same is not None and math.isfinite(same) and same >= 1.1:
        causes.append(f"tokens per request ({pct(same)} cost per request on {mr if not changed_model else 'the shared model'})")
    if qr is not None and math.isfinite(qr) and qr <= 0.95:
        causes.append(f"quality ({pct(qr)})")
    moved = ", ".join(causes) or "no single driver"
    return f"cost per request {pct(cpr)}, quality {pct(qr)}; moved: {moved}"


@_summary
def cost_summary(c):
    f = c.finding
    return (f"spend per quality point for {c.where} rose {100 * (f.value - 1):.0f}% over the last {c.span} "
            f"against its baseline week (${c.bv:.4g} → ${c.wv:.4g} per point, {c.window['n'] if c.window else 0:,} "
            f"requests): {_moved(f.extra)}")


COST_RATIO = register(RuleKind(
    "cost_ratio", CostRatio, CostRatioParams, alert_detector="spend_per_point", summary=cost_summary,
    streams=("scores",), values="cost",
    first_action="Compare prompt and context length and the model of recent requests with the week before"))
register(Rule("cost_per_quality_rise", "cost_ratio", "scores", ("cost",), "warning", {
    "threshold": 0.30, "bucket": 86400.0, "window": 7 * 86400.0, "baseline": 7 * 86400.0,
    "false_alarm_rate": 1e-4, "min_n": 50, "short_windows": (86400.0,), "quality_dimension": ""}))
