"""Rate ratio: has the share of flagged (or failed) events risen to a multiple of its baseline?

Examples
--------
A refusal rate that triples from 2 % to 6 % on day 20 (daily window evaluated hourly):

>>> import numpy as np
>>> from detectors.rate import RateRatio
>>> rng = np.random.default_rng(3)
>>> t = np.sort(rng.uniform(0, 30 * 86400, 30_000))
>>> x = (rng.random(t.size) < np.where(t < 20 * 86400, 0.02, 0.06)).astype(float)
>>> det = RateRatio(window=86400, baseline=7 * 86400)
>>> [(f.status, round(f.at / 86400, 2)) for f in det.update_many(np.zeros(t.size, np.int64), t, x)]
[('firing', 20.46)]
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors.base import budget_alpha, check_level, check_positive
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.drop import _where
from detectors.windows import WindowedAggregate

__all__ = ["RateRatio", "rate_ratio_pvalue"]


def rate_ratio_pvalue(k1, n1, k0, n0):
    """One-sided conditional test that the window's rate exceeds the reference rate.

    Given ``k1 + k0`` events, under H0 (equal rates) ``k1 ~ Binomial(k1 + k0, n1 / (n1 + n0))``;
    the p-value is ``P(X >= k1)``, equal to ``scipy.stats.binomtest(k1, k1 + k0, n1 / (n1 + n0),
    alternative="greater").pvalue``.
    """
    k1, n1, k0, n0 = (np.asarray(a, dtype=np.float64) for a in (k1, n1, k0, n0))
    valid = np.isfinite(k1 + n1 + k0 + n0) & (n1 + n0 > 0)
    k1i = np.where(valid, k1, 0).astype(np.int64)
    ki = np.where(valid, k1 + k0, 0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(valid, n1 / (n1 + n0), 0.5)
    p = special.bdtrc(k1i - 1, ki, q)
    return np.where(valid, np.where(k1i <= 0, 1.0, p), np.nan)


class RateRatio(BucketedDetector):
    """Flag or failure rate at least ``ratio`` times its baseline rate.

    Parameters
    ----------
    bucket, window, baseline, lateness : float
        Seconds of event time (see :class:`~detectors.drop.PercentDrop`).
    ratio : float
        Minimum ratio of the window rate to the reference rate.
    alpha : float or None
        Significance level of :func:`rate_ratio_pvalue`. ``None``: derived from
        ``false_alarm_rate`` (:func:`~detectors.base.budget_alpha`, one test per reference).
    false_alarm_rate : float or None
        False alarms allowed per series-year, with ``alpha=None``.
    min_n : int
        Minimum events in the window; the reference needs ``min_ref_n``.
    min_events : int
        Minimum flagged events in the window (a handful of flags is never a spike).
    min_rate : float
        Floor for the reference rate, so a reference with no flags does not make any flag a
        spike.
    long_term : bool
        Also compare with the long-term reference (the lowest full-baseline rate seen while
        stable).

    Notes
    -----
    Values are indicators: 1 = flagged (or failed), 0 = not. H0: the window rate equals the
    reference rate. Fires when ``rate / max(ref_rate, min_rate) >= ratio`` and the conditional
    binomial test rejects H0 at ``alpha``, with the minimum counts met.
    """

    _params = ("bucket", "window", "baseline", "lateness", "ratio", "alpha", "false_alarm_rate", "min_n", "min_ref_n",
               "min_events", "min_rate", "long_term", "for_buckets", "resolve_after", "resolve_ratio")
    _extra_state = ("agg",)

    def __init__(self, bucket=3600.0, window=86400.0, baseline=7 * 86400.0, lateness=600.0,
                 ratio=2.0, alpha=1e-4, min_n=20, min_ref_n=200, min_events=5, min_rate=0.005,
                 long_term=True, for_buckets=1, resolve_after=3, resolve_ratio=0.5, false_alarm_rate=None):
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio!r}")
        check_level(alpha, false_alarm_rate)
        self.false_alarm_rate = false_alarm_rate
        check_positive("min_rate", min_rate)
        self.bucket, self.window, self.baseline, self.lateness = bucket, window, baseline, lateness
        self.ratio, self.alpha, self.min_n, self.min_ref_n = ratio, alpha, min_n, min_ref_n
        self.min_events, self.min_rate, self.long_term = min_events, min_rate, long_term
        self.for_buckets, self.resolve_after, self.resolve_ratio = for_buckets, resolve_after, resolve_ratio
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self.statistic = "rate_ratio"
        self._w = _buckets("window", window, bucket)
        self.agg = WindowedAggregate(self._w, _buckets("baseline", baseline, bucket),
                                     self.clock.ahead, (2,), np.float64)

    def _ensure(self, n):
        self.agg.ensure(n)

    def _add(self, series, t, x):
        flag = (np.asarray(x, dtype=np.float64) >= 0.5).astype(np.float64)
        self.agg.add(series, self.clock.bucket_of(t), rows=np.stack([np.ones_like(flag), flag], 1))

    def _close(self, series, b, frozen):
        self.agg.close(series, b, frozen)

    def _evaluate(self, series, b) -> Evaluation:
        win = self.agg.win[series]
        n1, k1 = win[:, 0], win[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            r1 = k1 / n1
        sides = []
        firing = self.firing[series]
        refs = self._references(series)
        alpha = self.alpha if self.alpha is not None else budget_alpha(self.false_alarm_rate, self.bucket, len(refs))
        for rows, valid in refs:
            n0, k0 = rows[:, 0], rows[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                r0 = k0 / n0
                ratio = r1 / np.maximum(r0, self.min_rate)
            enough = valid & (n1 >= self.min_n) & (n0 >= self.min_ref_n)
            # the test only where the effect is there (or a finding may report it)
            big = enough & (k1 >= self.min_events) & (ratio >= self.ratio)
            p = _where(big | firing, rate_ratio_pvalue, k1, n1, k0, n0)
            sides.append({"hit": big & (p < alpha),
                          "clear": ~valid | (enough & (ratio - 1 < self.resolve_ratio * (self.ratio - 1))),
                          "value": ratio, "p": p, "n": n0, "ref": r0})
        hit, clear, kind, pick = self._combine(sides)
        ws, we = self._window_span(b, self._w, series.size)
        return Evaluation(
            hit=hit, clear=clear, value=pick("value"), p_value=pick("p"), win_start=ws, win_end=we,
            win_n=n1, win_value=r1, ref_n=pick("n"), ref_value=pick("ref"),
            ref_kind=kind, threshold=self.ratio, statistic=self.statistic)

    def _accept_reference(self, series):
        if not self.long_term:
            return
        agg = self.agg
        full = series[agg.base_full(series) & (agg.base_sum[series, 0] >= self.min_ref_n)]
        if full.size == 0:
            return
        rb = agg.base_sum[full, 1] / agg.base_sum[full, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            rr = agg.ref[full, 1] / agg.ref[full, 0]
        lower = ~agg.has_ref[full] | (rb <= rr)
        agg.accept_reference(full[lower])

    def reset_baseline(self, series):
        self.agg.reset_baseline(np.asarray(series, dtype=np.int64))
