"""``drift sample-plan``: which judge sample rate per intent detects a 5 % quality drop in time, at what cost.

Input
-----
A file of requests, by extension (``.csv``; anything else is JSON lines, one object or a JSON array
of objects per line):

* **events** (JSONL as ``drift simulate --out`` writes them, or CSV with a ``trace_id`` column):
  one request per distinct ``trace_id`` per ``app``/``intent`` (an event without a ``trace_id``
  counts as the request of its app, intent and ``ts``); ``cost_usd`` (inference cost) once per
  request; quality scores (events with ``dimension`` and ``score``; flag and check dimensions are
  left out, other scales normalised as the engine does) give each intent's score distribution;
  a request whose events carry a true ``errored``, ``escalated`` or ``flagged`` field, or that
  has a feedback event of kind ``escalate``, is *forced*: always evaluated. Retrieval events count
  their request; label and query events are skipped. Requests per day = requests / the span of
  the timestamps (rounded to the hour, at least one hour), or ``--days``.
* **a summary** (CSV with a ``requests`` column, or JSONL objects with ``requests``): rows of
  ``app,intent,requests[,cost_usd][,forced][,day]``: requests (and their inference cost in USD,
  and how many of them are forced) per day; rows of the same app/intent are added up and divided
  by the number of distinct ``day`` values (or ``--days``, default 1). Without scores the
  quality distribution is the default Beta (``--score-mean`` 0.85, ``--score-concentration`` 20,
  the simulator's relevance).

The delay model
---------------
The engine's ``quality_drop`` rule is :class:`detectors.sequential.MeanCusum`. For an intent whose
judge scores ``E`` requests a day (sampled + forced) the model follows its design step by step,
with the rule's configured parameters:

* reference: ``n = E * baseline`` events (14 days); the rule cannot run below ``min_ref_n`` (300),
  nor when no tilt has an effective sample size of 100; the reference's count is Poisson around
  ``n``, and where it falls below ``min_ref_n`` the rule is off (counted as never: the share
  ``P(Poisson(n) < min_ref_n)``, which matters just above ``min_ref_n / 14`` a day);
* tilt ``lambda`` as ``MeanCusum._design`` picks it (:func:`_tilt`): of the grid tilts whose
  moment has an effective sample size of at least 100 and which are at most one grid step
  steeper than the Gaussian ``alt * threshold * mu / sigma^2``, the one with the largest
  expected increment under the design drop ``delta = alt * threshold * mu``:
  ``lambda delta - (lambda mu + log m_ucb)``, for each alternative (1x and 2x); the moment
  ``m = E[e^(-lambda X)]`` of the score distribution (from the data, hour-of-day cycle taken
  out as the rule does, or the Beta) at its upper bound ``m + z sd / sqrt(n)``;
* increments ``g = -lambda x - log m_ucb``: drift ``D = lambda mu + log m_ucb`` under the
  reference, ``lambda * drop * mu - D`` per event after a drop by ``drop``; threshold
  ``h_k = log(E * 365.25 / r) - log w_k + log D`` (:func:`detectors.sequential.cusum_threshold`);
* events to the alarm: Siegmund's mean for a CUSUM (``b = h - S0 + 0.583 sd(g)``, ``S0`` the
  pre-change statistic's stationary mean) with an inverse-Gaussian spread, the reference's own
  estimation noise on ``m`` (``sd / (m sqrt(n))`` on the drift per event) and the day-to-day
  variation of the mean (sd ``tau``, the between-day variance of the input's daily means beyond
  their sampling noise when it spans 2 days or more, else :data:`DEFAULT_DAY_SD`): ``lambda tau``
  on the drift per event, averaged over the reference's 14 days and over the days to the alarm
  (at least one: a day's shift is common to its events), both a per-series shift of the drift
  (quadrature), and a change at any time of day; events become time through the hour-of-day
  (a week of input: hour-of-week) traffic profile (from the input's timestamps, else flat) and
  the alarm is stamped at the end of the hour that fired (the rule evaluates hourly).

The plan reports the median of that distribution, the chance of never detecting included (a
median only where the alarm comes with probability above one half). ``benchmarks/sampling.py``
checks it against the real engine on simulated traffic. Not modelled: the reference taking in
changed scores after ``guard`` (2 days) while the statistic is below the rule's freeze level,
which slows detection further only just above the rule's minimum volume (about 22 scores a day,
delays past ~10 days).

Allocation
----------
1. every intent gets at least ``--min-rate``; forced requests are always paid for;
2. *coverage*: each intent's target rate is the smallest rate (a multiple of 1e-4, at most
   ``--max-rate``) whose predicted delay is at most ``--target-days``; intents get their target
   rate cheapest first while the budget lasts (the most intents covered);
3. *spread*: what is left lowers the worst predicted delay: the smallest delay ``d`` whose
   rates (each intent's cheapest rate reaching ``d``, never below what it has, capped at
   ``--max-rate``) the budget pays for (``--no-spread`` keeps the rest of the budget);
4. intents whose delay still exceeds the target, or where the rule cannot run, are listed as
   not covered, with the reason.

Cost per month = evaluations per day x ``--judge-cost`` x 30.44 (365.25 / 12).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from detectors.sequential import DRIFT_FLOOR, LAMBDAS, MIN_ESS, MeanCusum

__all__ = ["PlanError", "RuleModel", "ScoreModel", "Prediction", "IntentLoad", "predict_delay", "read_requests",
           "make_plan", "render", "run", "DAYS_PER_MONTH"]

DAYS_PER_MONTH = 365.25 / 12
DAY = 86400.0
RATE_STEP = 1e-4  # rates are multiples of this
_QUANT = 21  # quadrature points of the reference's estimation noise
_CHANGE_TIMES = 24  # change times over the day
_MAX_DAYS = 400.0  # a delay beyond this counts as never
# day-to-day sd of a score's daily mean (absolute, scores on [0, 1]) when the input cannot tell
# (a summary, or scores from less than 2 days): 0.003, the simulator's +-0.005 uniform per-day shift
DEFAULT_DAY_SD = 0.003


class PlanError(Exception):
    """Bad input: the message names the file, line and field."""


# --------------------------------------------------------------------------------------- model

@dataclasses.dataclass(frozen=True)
class RuleModel:
    """The ``quality_drop`` rule's parameters that its detection delay depends on."""

    threshold: float = 0.05
    false_alarm_rate: float = 1e-4
    bucket: float = 3600.0
    baseline: float = 14 * DAY
    z: float = 2.0
    min_ref_n: int = 300
    alternatives: tuple[float, ...] = MeanCusum.alternatives
    weights: tuple[float, ...] = MeanCusum.weights

    @classmethod
    def from_settings(cls, settings, rule: str = "quality_drop") -> RuleModel:
        """The rule as configured (its base parameters; overrides for some series are not applied)."""
        spec = settings.rules[rule]
        p = dict(spec.params)
        return cls(threshold=float(p["threshold"]), false_alarm_rate=float(p["false_alarm_rate"]),
                   bucket=float(p["bucket"]), baseline=float(p["baseline"]), z=float(p["z"]),
                   min_ref_n=int(p["min_ref_n"]))

    @property
    def min_events_per_day(self) -> float:
        """Evaluations a day below which the reference never holds ``min_ref_n`` events."""
        return self.min_ref_n / (self.baseline / DAY)


@dataclasses.dataclass(frozen=True)
class ScoreModel:
    """A quality score's distribution as the rule sees it: mean, variance and the moments
    ``E[e^(-lambda X)]`` on the rule's tilt grid (:data:`detectors.sequential.LAMBDAS`).

    >>> s = ScoreModel.beta(0.85, 20)
    >>> round(s.mean, 4), round(s.var ** 0.5, 4)
    (0.85, 0.0779)
    """

    mean: float
    var: float
    m: tuple[float, ...]
    n: int = 0  # scores it was estimated from (0: a model)
    source: str = "beta"
    day_sd: float = 0.0  # sd of the daily mean around the reference mean beyond sampling noise

    @classmethod
    def beta(cls, mean: float = 0.85, concentration: float = 20.0) -> ScoreModel:
        a, b = mean * concentration, (1 - mean) * concentration
        if not (0 < mean < 1 and concentration > 0):
            raise ValueError("a Beta score model needs 0 < mean < 1 and concentration > 0")
        from scipy import special

        k = 20000
        x = (np.arange(k) + 0.5) / k
        w = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - special.betaln(a, b)) / k
        w /= w.sum()
        mu = float(w @ x)
        var = float(w @ (x - mu) ** 2)
        m = tuple(float(w @ np.exp(-lam * x)) for lam in LAMBDAS)
        return cls(mu, var, m, 0, f"Beta(mean {mean:g}, concentration {concentration:g})", DEFAULT_DAY_SD)

    @classmethod
    def from_scores(cls, x: np.ndarray, t: np.ndarray | None = None) -> ScoreModel:
        """From scores on [0, 1] (and their times: an hour-of-day cycle of the mean is taken out
        as the seasonal rule does, offsets shrunk by empirical Bayes)."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        if t is not None and x.size:
            x = x - _hour_offsets(x, np.asarray(t, dtype=np.float64))
        mu = float(x.mean())
        var = float(x.var(ddof=1)) if x.size > 1 else 0.0
        m = tuple(float(np.exp(-lam * x).mean()) for lam in LAMBDAS)
        day_sd = _day_sd(x, None if t is None else np.asarray(t, dtype=np.float64))
        return cls(mu, max(var, 1e-6), m, int(x.size), f"{x.size:,} scores", DEFAULT_DAY_SD if day_sd is None else day_sd)


def _day_sd(x: np.ndarray, t: np.ndarray | None) -> float | None:
    """The sd of the UTC-daily means of ``x`` beyond their sampling noise (the between-day
    variance of the means less the mean of ``s^2 / n_d``, at least 0), from the days with at
    least 2 scores; None with fewer than 2 such days (or no times)."""
    if t is None or x.size < 4:
        return None
    day = np.floor(t / DAY).astype(np.int64)
    _, k = np.unique(day, return_inverse=True)
    n_d = np.bincount(k).astype(np.float64)
    s_d = np.bincount(k, weights=x)
    q_d = np.bincount(k, weights=x * x)
    ok = n_d >= 2
    if ok.sum() < 2:
        return None
    n_d, s_d, q_d = n_d[ok], s_d[ok], q_d[ok]
    m_d = s_d / n_d
    within = float((q_d - s_d * m_d).sum()) / float((n_d - 1).sum())  # pooled within-day variance
    between = float(m_d.var(ddof=1))
    return math.sqrt(max(between - within * float(np.mean(1.0 / n_d)), 0.0))


def _hour_offsets(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each value's shrunk hour-of-day offset from the mean (as MeanCusum's seasonal reference)."""
    hour = (np.floor(np.mod(t, DAY) / 3600.0).astype(np.int64)) % 24
    n_h = np.bincount(hour, minlength=24).astype(np.float64)
    s_h = np.bincount(hour, weights=x, minlength=24)
    q_h = np.bincount(hour, weights=x * x, minlength=24)
    n = max(n_h.sum(), 1.0)
    mu = s_h.sum() / n
    has = n_h >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        m_h = np.where(n_h > 0, s_h / np.maximum(n_h, 1e-300), mu)
        dof = max(n - (n_h > 0).sum(), 1.0)
        within = max(float((q_h - s_h * m_h).sum()), 0.0) / dof
        raw = np.where(n_h > 0, m_h - mu, 0.0)
        se2 = np.where(has, within / np.maximum(n_h, 1.0), np.inf)
        excess = np.where(has, raw * raw - se2, 0.0)
        tau2 = max(float(excess.sum()) / max(int(has.sum()), 1), 0.0)
        d = np.nan_to_num(np.where(has, raw * tau2 / (tau2 + se2), 0.0))
    d -= (n_h * d).sum() / n
    return d[hour]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted detection of a drop: ``delay_days`` is the median (``inf``: never, or beyond
    400 days); ``can_run`` False when the rule cannot test at all at that volume."""

    events_per_day: float
    delay_days: float
    can_run: bool
    reason: str = ""
    lam: float = 0.0
    drift: float = 0.0  # per event after the drop (the median reference)
    h: float = 0.0
    events: float = math.inf  # median events to the alarm


_PROFILES: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _cum_profile(profile: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Hours (0 .. past _MAX_DAYS) and the days of traffic up to each (a day's traffic is 1), for an
    hour-of-day (24 values) or hour-of-week (168, Monday 00:00 UTC first) profile."""
    p = np.ones(24) if profile is None else np.maximum(np.asarray(profile, dtype=np.float64), 1e-6)
    p = p * (p.size / p.sum())  # mean 1 an hour
    key = p.tobytes()
    if key not in _PROFILES:
        reps = int((_MAX_DAYS + 8) * 24 // p.size) + 1
        hours = np.arange(p.size * reps + 1, dtype=np.float64)
        _PROFILES[key] = (hours, np.r_[0.0, np.cumsum(np.tile(p / 24.0, reps))])
    return _PROFILES[key]


def _ig_cdf(k: np.ndarray, mean: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """CDF of the inverse Gaussian (first passage of a Brownian motion with drift) at ``k``."""
    from scipy import special

    k = np.maximum(k, 1e-12)
    r = np.sqrt(shape / k)
    a = special.ndtr(r * (k / mean - 1.0))
    with np.errstate(over="ignore", under="ignore"):
        b = np.exp(2.0 * shape / mean + special.log_ndtr(-r * (k / mean + 1.0)))
    return np.clip(a + b, 0.0, 1.0)


def _tilt(m: np.ndarray, mu: float, var: float, n: float, alt: float, rule: RuleModel) -> int | None:
    """The grid index of the tilt ``MeanCusum._design`` takes for design drop ``alt * threshold``
    from a reference of ``n`` scores with mean ``mu``, variance ``var`` and moments ``m``: of the
    tilts whose moment is well estimated (effective sample size ``n m_j^2 / m_(j+1)`` at least
    ``MIN_ESS``) and at most one grid step steeper than the Gaussian ``delta / sigma^2``, the one
    with the largest expected increment under the drop, ``lambda delta - (lambda mu + log m_ucb)``;
    None when no tilt qualifies (the CUSUM is off)."""
    lam = np.asarray(LAMBDAS)
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = n * m[:-1] ** 2 / m[1:]
    good = ess >= MIN_ESS
    want = alt * rule.threshold * mu / var
    j_want = int(np.clip(np.rint(np.log2(max(want, 1e-12)) + 1), 0, len(LAMBDAS) - 2))
    usable = good & (np.arange(len(LAMBDAS) - 1) <= j_want + 1)
    if not usable.any():
        return None
    sd = np.sqrt(np.maximum(m[1:] - m[:-1] ** 2, 0.0))
    m_ucb = m[:-1] + rule.z * sd / math.sqrt(max(n, 2.0))
    with np.errstate(divide="ignore"):
        gain = lam[:-1] * alt * rule.threshold * mu - (lam[:-1] * mu + np.log(np.maximum(m_ucb, 1e-300)))
    return int(np.argmax(np.where(usable, gain, -np.inf)))


def predict_delay(events_per_day: float, scores: ScoreModel | None = None, rule: RuleModel | None = None,
                  drop: float = 0.05, profile: np.ndarray | None = None) -> Prediction:
    """Median delay (days) from a drop of the mean by ``drop`` (relative) to the ``quality_drop``
    alert (its bucket's end), for a series with ``events_per_day`` judge scores a day.

    >>> p = predict_delay(100, ScoreModel.beta(0.85, 20))
    >>> p.can_run, round(p.delay_days, 1), p.lam
    (True, 1.6, 4.0)
    >>> predict_delay(20, ScoreModel.beta(0.85, 20)).reason
    'the rule cannot run: 280 scores in its 14-day reference, it needs 300'
    """
    from scipy import stats

    scores = scores or ScoreModel.beta()
    rule = rule or RuleModel()
    e = float(events_per_day)
    days_ref = rule.baseline / DAY
    n = e * days_ref
    if n < rule.min_ref_n:
        return Prediction(e, math.inf, False, f"the rule cannot run: {n:,.0f} scores in its {days_ref:g}-day "
                                              f"reference, it needs {rule.min_ref_n}")
    m = np.asarray(scores.m)
    mu, var = scores.mean, scores.var
    z_q = stats.norm.ppf((np.arange(_QUANT) + 0.5) / _QUANT)  # the reference's noise, in its sd
    alts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (drift > 0, mean, shape) per noise point
    info: tuple[float, float, float] | None = None
    for alt, w in zip(rule.alternatives, rule.weights):
        j = _tilt(m, mu, var, n, alt, rule)
        if j is None:
            continue
        lam = LAMBDAS[j]
        sd_m = math.sqrt(max(m[j + 1] - m[j] ** 2, 0.0))
        m_ucb = m[j] + rule.z * sd_m / math.sqrt(n)
        d0 = lam * mu + math.log(m_ucb)  # drift under the reference (>= 0)
        h = (math.log(e * 365.25 / rule.false_alarm_rate) - math.log(w)
             + math.log(min(max(d0, DRIFT_FLOOR), 1.0)))
        mu1 = lam * drop * mu - d0  # drift per event after the drop
        v = lam * lam * var * (1 - drop) ** 2
        s_ref = sd_m / (m[j] * math.sqrt(n))  # sd of log m-hat: shifts the drift per event
        # day-to-day variation of the mean by tau: the reference averages days_ref days of it (a
        # fixed shift of the series), the post-change stretch the days until the alarm (the
        # nominal delay, at least one day: a day's shift is common to all its events); each moves
        # the drift per event by lambda times the shift
        nominal = (h / mu1 / e) if mu1 > 0 else days_ref
        tau = lam * scores.day_sd
        s_ref = math.sqrt(s_ref ** 2 + tau ** 2 * (1.0 / days_ref + 1.0 / max(nominal, 1.0)))
        s0 = v / (2 * max(d0, 1e-9))  # the pre-change statistic's stationary mean
        b = max(h + 0.583 * math.sqrt(v) - s0, 1.0)
        drifts = mu1 + z_q * s_ref
        pos = drifts > 0
        dd = np.where(pos, drifts, 1.0)
        # Siegmund: a CUSUM (reflected at 0) with this drift and variance reaches b in this mean
        mean = np.maximum(b / dd - v / (2 * dd * dd) * (1 - np.exp(-2 * dd * b / v)), 1.0)
        if pos.any():
            alts.append((pos, mean, np.full(_QUANT, b * b / v)))
        if info is None:
            info = (lam, mu1, h)
    if info is None:
        return Prediction(e, math.inf, False, "the rule cannot run: no tilt has enough effective sample size")
    lam, mu1, h = info
    if not alts:
        return Prediction(e, math.inf, True, "never: the reference's upper bound takes up the drop's drift per event",
                          lam, mu1, h)
    # the reference's count is Poisson around n: where it is below min_ref_n at the change the
    # rule is off (and the reference takes in the changed scores), counted as never
    p_ok = float(stats.poisson.sf(rule.min_ref_n - 1, n))
    hours, cum = _cum_profile(profile)
    bucket_h = rule.bucket / 3600.0
    period = 24.0 if profile is None else float(len(profile))
    c = (np.arange(_CHANGE_TIMES) + 0.5) * period / _CHANGE_TIMES  # change times over the period, hours
    c_cum = np.interp(c, hours, cum)

    def p_by(t_days: float) -> float:
        """P(alarm stamped within t_days of the change): the crossing before the last bucket end."""
        end = np.floor((c + 24.0 * t_days) / bucket_h) * bucket_h
        k = np.maximum(np.interp(end, hours, cum) - c_cum, 0.0) * e  # events by then, per change time
        best = np.zeros((_QUANT, c.size))
        for pos, mean, shape in alts:  # the alternatives' CUSUMs: comonotone, the first one alarms
            f = _ig_cdf(k[None, :], mean[:, None], shape[:, None])
            best = np.maximum(best, np.where(pos[:, None], f, 0.0))
        return p_ok * float(best.mean())

    if p_by(_MAX_DAYS) < 0.5:
        why = ("never: the reference's upper bound takes up the drop's drift per event" if mu1 <= 0
               else f"not within {_MAX_DAYS:g} days")
        return Prediction(e, math.inf, True, why, lam, mu1, h)
    lo, hi = 1e-3, _MAX_DAYS
    while hi / lo > 1.002:
        mid = math.sqrt(lo * hi)
        if p_by(mid) >= 0.5:
            hi = mid
        else:
            lo = mid
    return Prediction(e, hi, True, "", lam, mu1, h)


# --------------------------------------------------------------------------------------- input

QUALITY_SKIP = {"refusal", "hallucination", "safety", "format_valid"}
MIN_SCORES = 50  # scores of a dimension the model estimates its distribution from (else the default Beta)


@dataclasses.dataclass
class IntentLoad:
    """One app/intent's traffic per day and its score distribution."""

    app: str
    intent: str
    requests: float  # per day
    forced: float = 0.0  # per day, always evaluated
    cost_usd: float = 0.0  # inference cost per day
    scores: dict[str, ScoreModel] = dataclasses.field(default_factory=dict)  # per quality dimension


def _num(v: Any, where: str, field: str) -> float:
    if isinstance(v, bool) or v is None or v == "":
        raise PlanError(f"{where}: field '{field}': expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise PlanError(f"{where}: field '{field}': expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise PlanError(f"{where}: field '{field}': expected a finite number, got {v!r}")
    return x


def _time(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            t = _dt.datetime.fromisoformat(v.strip())
        except ValueError:
            try:
                return float(v)
            except ValueError:
                raise PlanError(f"{where}: field 'ts': not a time: {v!r}") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return t.timestamp()
    raise PlanError(f"{where}: field 'ts': not a time: {v!r}")


def _records(path: str) -> Iterable[tuple[str, dict]]:
    """(where, record) of a CSV or JSONL file."""
    if path != "-" and not os.path.exists(path):
        raise PlanError(f"{path}: no such file")
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.lower().endswith(".csv"):
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise PlanError(f"{path}: empty CSV (no header)")
            for row in reader:
                yield f"{path}:{reader.line_num}", {k.strip(): (v.strip() if isinstance(v, str) else v)
                                                    for k, v in row.items() if k is not None}
            return
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                raise PlanError(f"{path}:{i}: malformed JSON") from None
            items = doc if isinstance(doc, list) else [doc]
            for k, item in enumerate(items):
                where = f"{path}:{i}" + (f"[{k}]" if isinstance(doc, list) else "")
                if not isinstance(item, dict):
                    raise PlanError(f"{where}: expected a JSON object, got {type(item).__name__}")
                yield where, item
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not UTF-8 text") from None
    finally:
        if fh is not sys.stdin:
            fh.close()


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, (int, float)) and v == 1) or (isinstance(v, str) and v.lower() in ("1", "true", "yes"))


def read_requests(path: str, days: float | None = None, dimension: str | None = None, settings=None,
                  rule: RuleModel | None = None) -> tuple[list[IntentLoad], np.ndarray | None, float]:
    """Read a file of events or a summary: ``(loads per app/intent, hour-of-day profile or None, days)``."""
    from drift.core.config import load_settings

    settings = settings or load_settings()
    summary: dict[tuple[str, str], list[float]] = {}
    summary_days: set[str] = set()
    traces: dict[tuple[str, str], dict[Any, list]] = {}  # (app, intent) -> trace -> [cost, forced]
    forced_traces: set[Any] = set()
    scores: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    times: list[float] = []
    kind = None
    for where, r in _records(path):
        this = "summary" if "requests" in r else "events"
        if kind is None:
            kind = this
        elif kind != this:
            raise PlanError(f"{where}: a {this} row in a file of {kind} (summary rows have 'requests')")
        app = str(r.get("app") or "default")
        intent = str(r.get("intent") or "all")
        if this == "summary":
            req = _num(r["requests"], where, "requests")
            cost = _num(r["cost_usd"], where, "cost_usd") if r.get("cost_usd") not in (None, "") else 0.0
            forced = _num(r["forced"], where, "forced") if r.get("forced") not in (None, "") else 0.0
            if req < 0 or cost < 0 or forced < 0 or forced > req:
                raise PlanError(f"{where}: requests, cost_usd and forced must be >= 0, forced <= requests")
            if r.get("day") not in (None, ""):
                summary_days.add(str(r["day"]))
            acc = summary.setdefault((app, intent), [0.0, 0.0, 0.0])
            acc[0] += req
            acc[1] += cost
            acc[2] += forced
            continue
        stream = r.get("stream")
        if stream in ("queries", "labels") or "text" in r or "embedding" in r or "embedding_b64" in r:
            continue
        if "ts" not in r:
            raise PlanError(f"{where}: missing field 'ts'")
        t = _time(r["ts"], where)
        trace = r.get("trace_id") or ("~", app, intent, t)
        if stream == "feedback":
            if r.get("kind") == "escalate":
                forced_traces.add((app, intent, trace))
            continue
        times.append(t)
        entry = traces.setdefault((app, intent), {}).setdefault(trace, [0.0, False])
        if r.get("cost_usd") not in (None, "") and not entry[0]:
            entry[0] = _num(r["cost_usd"], where, "cost_usd")
        if any(_truthy(r.get(f)) for f in ("errored", "escalated", "flagged")):
            entry[1] = True
        dim = r.get("dimension")
        if dim is not None and "score" in r:
            dim = str(dim)
            spec = settings.dimension(dim)
            if spec.kind != "quality" or dim in QUALITY_SKIP or (dimension and dim != dimension):
                continue
            x = _num(r["score"], where, "score")
            u = (x - spec.lo) / (spec.hi - spec.lo)
            scores.setdefault((app, intent, dim), []).append((t, u if spec.higher_is_better else 1.0 - u))
    if kind is None:
        raise PlanError(f"{path}: no requests in it")
    if kind == "summary":
        nd = float(days or len(summary_days) or 1)
        loads = [IntentLoad(a, i, v[0] / nd, v[2] / nd, v[1] / nd) for (a, i), v in sorted(summary.items())]
        return loads, None, nd
    if not times:
        raise PlanError(f"{path}: no requests in it (no score or retrieval events)")
    tt = np.asarray(times)
    span_h = (tt.max() - tt.min()) / 3600.0
    nd = float(days) if days else max(round(span_h), 1) / 24.0
    hour = (np.floor(np.mod(tt, DAY) / 3600.0).astype(np.int64)) % 24
    profile = None
    if nd >= 7:  # a week or more: the hour-of-week profile (weekends), Monday 00:00 UTC first
        week = (np.floor(np.mod(tt - 4 * DAY, 7 * DAY) / 3600.0).astype(np.int64)) % 168
        profile = np.bincount(week, minlength=168).astype(np.float64)
    elif nd >= 1:
        profile = np.bincount(hour, minlength=24).astype(np.float64)
    rule = rule or RuleModel()
    loads = []
    for (app, intent), tr in sorted(traces.items()):
        n_forced = sum(1 for k, v in tr.items() if v[1] or (app, intent, k) in forced_traces)
        load = IntentLoad(app, intent, len(tr) / nd, n_forced / nd, sum(v[0] for v in tr.values()) / nd)
        for (a, i, dim), vals in sorted(scores.items()):
            if (a, i) == (app, intent) and len(vals) >= MIN_SCORES:
                arr = np.asarray(vals)
                load.scores[dim] = ScoreModel.from_scores(arr[:, 1], arr[:, 0])
        loads.append(load)
    return loads, profile, nd


# --------------------------------------------------------------------------------------- plan

class _Curve:
    """An intent's predicted delay as a function of its rate (cached): the slowest of its quality
    dimensions (a drop in any of them is to be caught)."""

    GRID = 32  # rates scanned (geometric) before refining: the delay need not fall with the rate everywhere

    def __init__(self, load: IntentLoad, default_scores: ScoreModel, rule: RuleModel, drop: float, profile):
        self.load, self.rule, self.drop, self.profile = load, rule, drop, profile
        self.models = dict(load.scores) or {"": default_scores}
        self._cache: dict[int, tuple[Prediction, str]] = {}

    def events(self, rate: float) -> float:
        return self.load.forced + rate * (self.load.requests - self.load.forced)

    def at(self, rate: float) -> tuple[Prediction, str]:
        """The prediction at ``rate`` and the dimension it is for."""
        key = int(round(rate / RATE_STEP))
        got = self._cache.get(key)
        if got is None:
            e = self.events(key * RATE_STEP)
            preds = [(predict_delay(e, sm, self.rule, self.drop, self.profile), dim) for dim, sm in self.models.items()]
            got = self._cache[key] = max(preds, key=lambda pd: (not pd[0].can_run, pd[0].delay_days))
        return got

    def delay(self, rate: float) -> float:
        return self.at(rate)[0].delay_days

    def _grid(self, lo: float, hi: float) -> list[int]:
        a, b = int(math.ceil(lo / RATE_STEP - 1e-9)), int(math.floor(hi / RATE_STEP + 1e-9))
        if b <= a:
            return [b]
        g = np.geomspace(max(a, 1), b, self.GRID)
        return sorted({a, b, *np.rint(g).astype(int).tolist()})

    def rate_for(self, days: float, lo: float, hi: float) -> float | None:
        """The smallest rate in [lo, hi] (a multiple of RATE_STEP) with a delay of at most ``days``."""
        grid = self._grid(lo, hi)
        prev = None
        for k in grid:
            if self.delay(k * RATE_STEP) <= days:
                if prev is None:
                    return k * RATE_STEP
                a, b = prev, k
                while b - a > 1:  # locally, more scores detect sooner
                    mid = (a + b) // 2
                    if self.delay(mid * RATE_STEP) <= days:
                        b = mid
                    else:
                        a = mid
                return b * RATE_STEP
            prev = k
        return None

    def best_rate(self, lo: float, hi: float) -> float:
        """The rate in [lo, hi] (on the grid) with the shortest delay, the smallest of equals."""
        grid = self._grid(lo, hi)
        return min(grid, key=lambda k: (self.delay(k * RATE_STEP), k)) * RATE_STEP


def make_plan(loads: list[IntentLoad], judge_cost: float, budget: float | None = None, *, min_rate: float = 0.01,
              max_rate: float = 1.0, target_days: float = 7.0, drop: float = 0.05, rule: RuleModel | None = None,
              default_scores: ScoreModel | None = None, profile: np.ndarray | None = None, spread: bool = True,
              default_rate: float = 0.02, salt: str = "", days: float = 1.0) -> dict:
    """The plan (see the module docstring for the allocation rule), as the JSON document."""
    rule = rule or RuleModel()
    default_scores = default_scores or ScoreModel.beta()
    min_rate = max(min(min_rate, max_rate), 0.0)
    curves = [_Curve(ld, default_scores, rule, drop, profile) for ld in loads]
    per_month = judge_cost * DAYS_PER_MONTH
    limit = math.inf if budget is None else budget

    def cost(c: _Curve, rate: float) -> float:
        return c.events(rate) * per_month

    def total(rs: list[float]) -> float:
        return sum(cost(c, r) for c, r in zip(curves, rs))

    # 1. the floor; 2. coverage at the target, cheapest first
    rates = [min_rate for _ in curves]
    spent = total(rates)
    targets = [c.rate_for(target_days, min_rate, max_rate) for c in curves]
    order = sorted((i for i, t in enumerate(targets) if t is not None),
                   key=lambda i: (cost(curves[i], targets[i] or 0.0) - cost(curves[i], rates[i]), i))
    for i in order:
        t = targets[i] or 0.0
        extra = cost(curves[i], t) - cost(curves[i], rates[i])
        if t > rates[i] and spent + extra <= limit * (1 + 1e-12):
            rates[i], spent = t, spent + extra
    # 3. spread what is left over the worst delays: the smallest delay the budget pays for (bisection);
    # intents that no rate lets the rule test or detect are left out of it
    if spread and budget is not None:
        able = [c.delay(c.best_rate(r, max_rate)) < math.inf for c, r in zip(curves, rates)]

        def lift(d: float) -> list[float]:
            new = []
            for c, r, ok in zip(curves, rates, able):
                if not ok or c.delay(r) <= d:
                    new.append(r)
                else:
                    rr = c.rate_for(d, r, max_rate)
                    new.append(c.best_rate(r, max_rate) if rr is None else rr)
            return new

        worst = max([c.delay(r) for c, r, ok in zip(curves, rates, able) if ok], default=0.0)
        best: list[float] | None = None
        lo_d, hi_d = 1.0 / 24, min(worst, _MAX_DAYS)
        if hi_d > lo_d:
            cand = lift(lo_d)
            if total(cand) <= limit:
                best = cand
            else:
                while hi_d / lo_d > 1.01:
                    mid = math.sqrt(lo_d * hi_d)
                    cand = lift(mid)
                    if total(cand) <= limit:
                        best, hi_d = cand, mid
                    else:
                        lo_d = mid
        if best is not None:
            rates = best
    rows, uncovered = [], []
    for c, r in zip(curves, rates):
        p, dim = c.at(r)
        sm = c.models[dim]
        row: dict[str, Any] = {
            "app": c.load.app, "intent": c.load.intent, "requests_per_day": round(c.load.requests, 3),
            "forced_per_day": round(c.load.forced, 3), "rate": round(r, 4),
            "evaluations_per_day": round(c.events(r), 3),
            "delay_days": None if not math.isfinite(p.delay_days) else round(p.delay_days, 3),
            "can_run": p.can_run, "covered": p.can_run and p.delay_days <= target_days,
            "cost_usd_month": round(cost(c, r), 2), "inference_cost_usd_day": round(c.load.cost_usd, 4),
            "dimension": dim or None, "score_mean": round(sm.mean, 4), "score_sd": round(math.sqrt(sm.var), 4),
            "scores": sm.source}
        if not row["covered"]:
            if not p.can_run:
                row["reason"] = p.reason
            elif not math.isfinite(p.delay_days):
                row["reason"] = f"the rule does not detect a {100 * drop:g}% drop at this rate ({p.reason})"
            else:
                row["reason"] = f"predicted delay {p.delay_days:.1f} days > target {target_days:g}"
            need = c.rate_for(target_days, 0.0, max_rate)
            if need is None:
                row["reason"] += f"; no rate up to {max_rate:g} reaches the target"
            else:
                row["rate_needed"] = need
                row["reason"] += f"; needs rate {100 * need:.2f}% (${cost(c, need):,.2f} a month)"
            uncovered.append({"app": row["app"], "intent": row["intent"], "reason": row["reason"]})
        rows.append(row)
    spent = round(sum(r["cost_usd_month"] for r in rows), 2)
    return {"kind": "drift.sample_plan", "version": 1, "salt": salt, "default": default_rate,
            "always": ["errored", "escalated", "flagged"],
            "rates": {f"{r['app']}/{r['intent']}": r["rate"] for r in rows},
            "judge_cost_usd": judge_cost, "budget_usd_month": budget, "cost_usd_month": spent,
            "budget_left_usd_month": None if budget is None else round(budget - spent, 2),
            "target_days": target_days, "drop": drop, "min_rate": min_rate, "max_rate": max_rate,
            "input_days": days,
            "rule": {**dataclasses.asdict(rule), "alternatives": list(rule.alternatives), "weights": list(rule.weights)},
            "intents": rows, "uncovered": uncovered}


def _days(d: float | None) -> str:
    if d is None:
        return "never"
    return f"{d * 24:.1f} h" if d < 1 else f"{d:.1f} d"


def render(plan: dict) -> str:
    """The plan as a readable table."""
    lines = [f"Judge sample plan: detect a {100 * plan['drop']:g}% quality drop per intent within "
             f"{plan['target_days']:g} days (quality_drop rule, predicted median delay); judge ${plan['judge_cost_usd']:g} "
             f"per evaluation; errored, escalated and flagged requests always evaluated", ""]
    head = (f"{'app/intent':<32} {'requests/d':>10} {'rate':>7} {'evals/d':>9} {'delay':>8} {'judge $/month':>14} "
            f"{'inference $/d':>13}  dimension")
    lines += [head, "-" * len(head)]
    for r in plan["intents"]:
        mark = "" if r["covered"] else "  *"
        lines.append(f"{r['app'] + '/' + r['intent']:<32} {r['requests_per_day']:>10,.0f} {100 * r['rate']:>6.2f}% "
                     f"{r['evaluations_per_day']:>9,.1f} {_days(r['delay_days']):>8} {r['cost_usd_month']:>14,.2f} "
                     f"{r['inference_cost_usd_day']:>13,.2f}  {r['dimension'] or '-'}{mark}")
    lines.append("")
    lines.append(f"monthly judge cost of the plan: ${plan['cost_usd_month']:,.2f}")
    if plan["budget_usd_month"] is not None:
        left = plan["budget_left_usd_month"]
        lines.append(f"budget: ${plan['budget_usd_month']:,.2f} a month; "
                     + (f"leaves ${left:,.2f}" if left >= 0 else f"OVER by ${-left:,.2f} (the --min-rate floor)"))
    if plan["uncovered"]:
        lines.append("")
        lines.append(f"not covered (* above): {len(plan['uncovered'])} intent(s)")
        for u in plan["uncovered"]:
            lines.append(f"  {u['app']}/{u['intent']}: {u['reason']}")
    else:
        lines.append(f"every intent reaches the target of {plan['target_days']:g} days")
    return "\n".join(lines)


def run(args) -> int:
    """``drift sample-plan`` (arguments as parsed by :mod:`drift.cli`); exit 0, or 2 on bad input."""
    from drift.core.config import load_settings

    prog = "drift sample-plan"
    checks = [("--judge-cost", args.judge_cost, False), ("--budget", args.budget, True),
              ("--target-days", args.target_days, False), ("--drop", args.drop, False),
              ("--score-concentration", args.score_concentration, False)]
    for name, v, zero_ok in checks:
        if v is not None and not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0)):
            print(f"{prog}: {name} must be a {'non-negative' if zero_ok else 'positive'} number, got {v:g}",
                  file=sys.stderr)
            return 2
    for name, v in (("--min-rate", args.min_rate), ("--max-rate", args.max_rate), ("--default-rate", args.default_rate)):
        if not (0.0 <= v <= 1.0):
            print(f"{prog}: {name} must be in [0, 1], got {v:g}", file=sys.stderr)
            return 2
    if args.min_rate > args.max_rate or args.max_rate <= 0:
        print(f"{prog}: need 0 <= --min-rate <= --max-rate, --max-rate > 0", file=sys.stderr)
        return 2
    if not (0 < args.drop < 1) or not (0 < args.score_mean < 1):
        print(f"{prog}: --drop and --score-mean must be between 0 and 1", file=sys.stderr)
        return 2
    if args.days is not None and not args.days > 0:
        print(f"{prog}: --days must be positive", file=sys.stderr)
        return 2
    settings = load_settings(getattr(args, "config", None), os.environ)
    rule = RuleModel.from_settings(settings)
    try:
        loads, profile, days = read_requests(args.requests, args.days, args.dimension, settings, rule)
    except PlanError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    plan = make_plan(loads, args.judge_cost, args.budget, min_rate=args.min_rate, max_rate=args.max_rate,
                     target_days=args.target_days, drop=args.drop, rule=rule,
                     default_scores=ScoreModel.beta(args.score_mean, args.score_concentration), profile=profile,
                     spread=not args.no_spread, default_rate=args.default_rate, salt=args.salt, days=days)
    if args.json:
        print(json.dumps(plan, indent=1))
    else:
        print(render(plan))
    return 0
