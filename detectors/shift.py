"""Distribution shift of a score series: two-sample KS, current window against the frozen baseline.

Examples
--------
A score whose spread widens on day 20 while its mean stays put (a drop rule would miss it):

>>> import numpy as np
>>> from detectors.shift import KsShift
>>> rng = np.random.default_rng(11)
>>> t = np.sort(rng.uniform(0, 40 * 86400, 40_000))
>>> x = np.clip(rng.normal(0.7, np.where(t < 20 * 86400, 0.05, 0.15)), 0, 1)
>>> det = KsShift()
>>> [(f.status, f.at / 86400, round(f.value, 2)) for f in det.update_many(np.zeros(t.size, np.int64), t, x)]
[('firing', 23.0, 0.11)]
"""

from __future__ import annotations

import numpy as np

from detectors.base import budget_alpha, check_fraction, check_level
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.drop import hist_quantile
from detectors.ks import ks_from_histograms, ks_pvalue, ks_pvalue_at_least
from detectors.windows import WindowedAggregate, grow_rows

__all__ = ["KsShift"]


class KsShift(BucketedDetector):
    """Two-sample Kolmogorov-Smirnov test of the window against the baseline, per series.

    Parameters
    ----------
    bucket, window, baseline, lateness : float
        Seconds of event time. The default daily bucket keeps a ``bins``-bin histogram per day.
    alpha : float or None
        Family-wise significance level. Each series is tested at ``alpha / m`` (Bonferroni),
        where ``m`` is the number of series with data in its family (see ``set_families``;
        by default every series is its own family). ``None``: each series is tested at
        :func:`~detectors.base.budget_alpha` of ``false_alarm_rate`` (a budget per series
        needs no family correction).
    false_alarm_rate : float or None
        False alarms allowed per series-year, with ``alpha=None``.
    min_d : float
        Minimum KS distance D (effect size).
    min_n : int
        Minimum samples on both sides.
    lo, hi, bins : float, float, int
        Histogram range and resolution (values outside are clipped into the edge bins).

    Notes
    -----
    H0: window and baseline samples come from one continuous distribution. The statistic is D
    of the binned samples (:func:`detectors.ks.ks_from_histograms`); the p-value is scipy's
    ``ks_2samp(method="asymp")`` (:func:`detectors.ks.ks_pvalue`). Fires when ``D >= min_d``
    and ``p < alpha / m``. The family is the dimensions of one (app, intent): one Kafka key, so
    the correction, like the rest of the state, never depends on how keys are partitioned.
    """

    _params = ("bucket", "window", "baseline", "lateness", "alpha", "false_alarm_rate", "min_d", "min_n", "lo", "hi",
               "bins", "for_buckets", "resolve_after", "resolve_ratio")
    _extra_state = ("agg",)

    def __init__(self, bucket=86400.0, window=7 * 86400.0, baseline=14 * 86400.0, lateness=600.0,
                 alpha=0.01, min_d=0.1, min_n=200, lo=0.0, hi=1.0, bins=256, for_buckets=1,
                 resolve_after=2, resolve_ratio=0.5, false_alarm_rate=None):
        check_level(alpha, false_alarm_rate)
        self.false_alarm_rate = false_alarm_rate
        check_fraction("min_d", min_d)
        self.bucket, self.window, self.baseline, self.lateness = bucket, window, baseline, lateness
        self.alpha, self.min_d, self.min_n = alpha, min_d, min_n
        self.lo, self.hi, self.bins = lo, hi, int(bins)
        self.for_buckets, self.resolve_after, self.resolve_ratio = for_buckets, resolve_after, resolve_ratio
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self.statistic = "ks_d"
        self._w = _buckets("window", window, bucket)
        self.agg = WindowedAggregate(self._w, _buckets("baseline", baseline, bucket),
                                     self.clock.ahead, (self.bins,), np.uint32)
        self.family = np.zeros(0, np.int64)
        self.has_data = np.zeros(0, bool)

    _state = BucketedDetector._state + ("family", "has_data")
    _reset_keep = ("family",)  # which series are tested together: configuration, kept by a reset

    def set_families(self, series, family) -> None:
        """Declare which series are tested together (Bonferroni family), e.g. one (app, intent)."""
        series = np.asarray(series, dtype=np.int64)
        if series.size:
            self.ensure(int(series.max()) + 1)
            self.family[series] = family

    def _ensure(self, n):
        old = self.family.shape[0]
        self.agg.ensure(n)
        self.family = grow_rows(self.family, n, -1)
        fresh = self.family[old:] == -1
        self.family[old:][fresh] = np.arange(old, self.family.shape[0])[fresh]
        self.has_data = grow_rows(self.has_data, n, False)

    def _add(self, series, t, x):
        pos = np.floor((np.asarray(x, np.float64) - self.lo) / (self.hi - self.lo) * self.bins)
        self.agg.add(series, self.clock.bucket_of(t), bins=np.clip(pos.astype(np.int64), 0, self.bins - 1))
        self.has_data[series] = True

    def _close(self, series, b, frozen):
        self.agg.close(series, b, frozen)

    def _family_size(self, series):
        fam = self.family[: self.n_series]
        counts = np.bincount(fam[self.has_data[: self.n_series]], minlength=fam.max() + 1)
        return np.maximum(counts[self.family[series]], 1)

    def _evaluate(self, series, b) -> Evaluation:
        win = self.agg.win[series]
        base = self.agg.base_sum[series]
        d, n1, n0 = ks_from_histograms(win, base)
        enough = (n1 >= self.min_n) & (n0 >= self.min_n)
        # The exact p-value costs up to a millisecond a series: only where a firing decision
        # needs it, and not where its cheap Kolmogorov limit already shows it cannot reject.
        # (Resolution is decided by the effect size, so resolved findings carry no p-value.)
        if self.alpha is None:
            level = np.full(series.size, budget_alpha(self.false_alarm_rate, self.bucket))
        else:
            level = self.alpha / self._family_size(series)
        need = enough & (d >= self.min_d) & ~self.firing[series]
        need[need] = ~ks_pvalue_at_least(d[need], n1[need], n0[need], level[need])
        p = np.full(series.size, np.nan)
        if need.any():
            p[need] = ks_pvalue(d[need], n1[need], n0[need])
        hit = need & (p < level)
        clear = enough & (d < self.resolve_ratio * self.min_d)
        ws, we = self._window_span(b, self._w, series.size)
        # medians are reported only by findings: computed for the series that may have one
        report = hit | (clear & self.firing[series])
        win_med, base_med = np.full(series.size, np.nan), np.full(series.size, np.nan)
        if report.any():
            win_med[report] = hist_quantile(win[report], 0.5, self.lo, self.hi)
            base_med[report] = hist_quantile(base[report], 0.5, self.lo, self.hi)
        return Evaluation(
            hit=hit, clear=clear, value=d, p_value=p, win_start=ws, win_end=we, win_n=n1,
            win_value=win_med, ref_n=n0, ref_value=base_med,
            ref_kind=np.zeros(series.size, np.int64), threshold=self.min_d,
            statistic=self.statistic)

    def reset_baseline(self, series):
        self.agg.reset_baseline(np.asarray(series, dtype=np.int64))
