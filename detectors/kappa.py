"""Judge-vs-human agreement over the most recent labelled pairs: Cohen's kappa and its upper bound.

A judge is trusted while its agreement with human raters is at least ``bar`` (0.6: the usual line
between "moderate" and "substantial" agreement). :class:`KappaDrop` keeps, per series, the last
``pairs`` labelled pairs (judge verdict, human verdict; both binary) no older than ``max_age``,
and at every bucket boundary computes Cohen's kappa with its large-sample standard error
(Fleiss, Cohen & Everitt 1969). It fires when the upper confidence bound falls below ``bar``:

    ``UCB = kappa + z * SE < bar``

**Where ``z`` comes from.** The rule looks once per bucket; its false-alarm budget
(``false_alarm_rate`` per series-year) gives the per-look level ``alpha``
(:func:`detectors.base.budget_alpha`). A healthy judge sits at ``healthy`` (0.8, the bar for
high-stakes criteria), not at ``bar``: the rule must stay quiet for it. With the window's standard
error ``SE``, a judge at ``healthy`` crosses the bound with probability
``Phi(-(healthy - bar) / SE - z)``; that is at most ``alpha`` when

    ``z >= z_alpha - (healthy - bar) / SE``,

and ``z`` is never below ``z_min`` (1.645: a one-sided 95 % bound, the bound people quote). So
with many pairs the bound is the familiar 95 % one; with few pairs (a wide ``SE``) it widens on its
own until a healthy judge's false alarms fit the budget: the threshold follows the volume. A judge
between ``bar`` and ``healthy`` is the grey zone where the rule may fire (it is close to the bar).

The pairs arrive joined (label with its score) from the engine; kappa is undefined when both
raters used one class only (no alert), and a window with fewer than ``min_pairs`` pairs is not
tested.

>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> day = 86400.0
>>> t = np.arange(20 * 90) * (day / 20)                      # 20 labelled pairs a day, 90 days
>>> judge = (rng.random(t.size) < 0.5).astype(float)
>>> flip = rng.random(t.size) < np.where(t < 45 * day, 0.05, 0.35)   # agreement falls on day 45
>>> human = np.where(flip, 1 - judge, judge)
>>> det = KappaDrop()
>>> f = det.update_many(np.zeros(t.size, np.int64), t, np.column_stack([judge, human]))
>>> [(a.status, int(a.at // day)) for a in f]
[('firing', 50)]
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy import stats

from detectors.base import Finding, Side, budget_alpha, check_positive
from detectors.bucketed import BucketedDetector, Evaluation
from detectors.windows import grow_rows

__all__ = ["KappaDrop", "binary_kappa"]


def binary_kappa(n11, n10, n01, n00):
    """Cohen's kappa and its large-sample standard error from 2x2 counts (arrays broadcast).

    ``n10`` counts pairs the judge called 1 and the human 0. The standard error is the
    non-null one of Fleiss, Cohen & Everitt (1969), the one ``statsmodels``' ``cohens_kappa``
    reports as ``std_kappa``. Undefined (NaN) where the expected agreement is 1.

    >>> k, se = binary_kappa(40, 5, 10, 45)
    >>> round(float(k), 4), round(float(se), 4)
    (0.7, 0.0711)
    """
    n11, n10, n01, n00 = (np.asarray(v, dtype=np.float64) for v in (n11, n10, n01, n00))
    n = n11 + n10 + n01 + n00
    with np.errstate(invalid="ignore", divide="ignore"):
        p11, p10, p01, p00 = n11 / n, n10 / n, n01 / n, n00 / n
        r1, c1 = p11 + p10, p11 + p01  # judge's and human's share of 1
        r0, c0 = 1 - r1, 1 - c1
        po = p11 + p00
        pe = r1 * c1 + r0 * c0
        kappa = (po - pe) / (1 - pe)
        q = 1 - kappa
        a = p11 * (1 - (r1 + c1) * q) ** 2 + p00 * (1 - (r0 + c0) * q) ** 2
        b = q ** 2 * (p10 * (c1 + r0) ** 2 + p01 * (c0 + r1) ** 2)
        c = (kappa - pe * q) ** 2
        var = (a + b - c) / (n * (1 - pe) ** 2)
        se = np.sqrt(np.maximum(var, 0.0))
    undefined = ~(pe < 1 - 1e-12)
    return np.where(undefined, np.nan, kappa), np.where(undefined, np.nan, se)


class KappaDrop(BucketedDetector):
    """Cohen's kappa of the last ``pairs`` labelled pairs per series; fires when its upper
    confidence bound is below ``bar`` (see the module docstring).

    ``update_many(series, t, x)`` takes ``x`` of shape ``(n, 2)``: the judge's and the human's
    verdict (0 or 1) of each pair, in event time order within the allowed lateness.
    """

    _params: ClassVar[tuple[str, ...]] = ("bar", "healthy", "pairs", "min_pairs", "max_age", "bucket",
                                          "false_alarm_rate", "z_min", "for_buckets", "resolve_after",
                                          "resolve_ratio", "lateness")
    _state: ClassVar[tuple[str, ...]] = BucketedDetector._state + ("ring_t", "ring_x", "ring_pos")
    statistic = "kappa_ucb"

    def __init__(self, bar: float = 0.6, healthy: float = 0.8, pairs: int = 200, min_pairs: int = 50,
                 max_age: float = 30 * 86400.0, bucket: float = 86400.0, false_alarm_rate: float = 1e-4,
                 z_min: float = 1.645, for_buckets: int = 1, resolve_after: int = 3,
                 resolve_ratio: float = 0.0, lateness: float = 600.0):
        if not -1 < bar < 1:
            raise ValueError(f"bar must be in (-1, 1), got {bar!r}")
        if not bar < healthy <= 1:
            raise ValueError(f"healthy must be in (bar, 1], got {healthy!r} (bar {bar!r})")
        if int(pairs) < 2 or not 2 <= int(min_pairs) <= int(pairs):
            raise ValueError(f"need 2 <= min_pairs <= pairs, got min_pairs={min_pairs!r}, pairs={pairs!r}")
        check_positive("max_age", max_age)
        check_positive("false_alarm_rate", false_alarm_rate)
        check_positive("z_min", z_min)
        self.bar, self.healthy = float(bar), float(healthy)
        self.pairs, self.min_pairs = int(pairs), int(min_pairs)
        self.max_age, self.bucket = float(max_age), float(bucket)
        self.false_alarm_rate, self.z_min = float(false_alarm_rate), float(z_min)
        self.for_buckets, self.resolve_after = int(for_buckets), int(resolve_after)
        self.resolve_ratio, self.lateness = float(resolve_ratio), float(lateness)
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self.z_alpha = float(stats.norm.isf(budget_alpha(false_alarm_rate, bucket)))
        self.ring_t = np.full((0, self.pairs), -np.inf)
        self.ring_x = np.zeros((0, self.pairs), np.int8)  # 2 * judge + human
        self.ring_pos = np.zeros(0, np.int64)  # pairs written so far (the ring's next slot mod pairs)

    def _ensure(self, n: int) -> None:
        self.ring_t = grow_rows(self.ring_t, n, -np.inf)
        self.ring_x = grow_rows(self.ring_x, n, 0)
        self.ring_pos = grow_rows(self.ring_pos, n, 0)

    def _add(self, series, t, x) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 2)
        code = (2 * (x[:, 0] > 0.5) + (x[:, 1] > 0.5)).astype(np.int8)
        # rank of each pair within its series in this run, so all of a series' pairs land in order
        order = np.argsort(series, kind="stable")
        s = series[order]
        first = np.r_[True, s[1:] != s[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(s.size) - np.repeat(starts, np.diff(np.r_[starts, s.size]))
        slot = (self.ring_pos[s] + rank) % self.pairs
        self.ring_t[s, slot] = t[order]
        self.ring_x[s, slot] = code[order]
        np.add.at(self.ring_pos, s, 1)

    def _close(self, series, b, frozen) -> None:
        pass  # no baseline: the bar is absolute

    def _counts(self, series, b):
        end = float(self.clock.bucket_end(b))
        t = self.ring_t[series]
        live = (t >= end - self.max_age) & (t < end)
        x = self.ring_x[series]
        return [((x == c) & live).sum(axis=1) for c in (3, 2, 1, 0)], end

    def _evaluate(self, series, b) -> Evaluation:
        (n11, n10, n01, n00), end = self._counts(series, b)
        n = n11 + n10 + n01 + n00
        kappa, se = binary_kappa(n11, n10, n01, n00)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.maximum(self.z_min, self.z_alpha - (self.healthy - self.bar) / se)
        ucb = kappa + z * se
        enough = (n >= self.min_pairs) & np.isfinite(kappa)
        hit = enough & (ucb < self.bar)
        clear = enough & (kappa >= self.bar)
        nan = np.full(series.size, np.nan)
        return Evaluation(hit=hit, clear=clear, value=np.where(np.isfinite(ucb), ucb, nan), p_value=nan,
                          win_start=np.full(series.size, end - self.max_age), win_end=np.full(series.size, end),
                          win_n=n, win_value=kappa, ref_n=n, ref_value=nan, ref_kind=np.zeros(series.size, np.int64),
                          threshold=self.bar, statistic=self.statistic)

    def _finding(self, s, status, at, ep, ev: Evaluation, j) -> Finding:
        t = self.ring_t[s]
        live = t[(t >= at - self.max_age) & (t < at)]
        start = float(live.min()) if live.size else at - self.max_age
        k = float(ev.win_value[j])
        value = float(ev.value[j])
        return Finding(
            series=s, status=status, at=at, episode_start=ep, statistic=ev.statistic,
            value=value if math.isfinite(value) else k, threshold=float(ev.threshold), p_value=None,
            window=Side(start, float(at), int(ev.win_n[j]), k), reference=None, reference_kind="bar",
            extra={"kappa": k, "pairs": int(ev.win_n[j])})

    def reset_baseline(self, series) -> None:
        s = np.asarray(series, dtype=np.int64)
        self.ring_t[s] = -np.inf
        self.ring_pos[s] = 0
