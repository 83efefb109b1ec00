"""An absolute floor on a series' mean: "faithfulness mean below 0.8 over 5 minutes".

Examples
--------
Scores around 0.9 that fall to 0.7 at minute 30; the 5-minute mean is held to a floor of 0.8:

>>> import numpy as np
>>> from detectors.floor import Floor
>>> rng = np.random.default_rng(3)
>>> t = np.sort(rng.uniform(0, 3600, 3000))
>>> x = np.clip(rng.normal(np.where(t < 1800, 0.9, 0.7), 0.05), 0, 1)
>>> det = Floor(floor=0.8, bucket=300, window=300, min_n=30)
>>> [(f.status, int(f.at // 60), round(f.window.value, 2)) for f in det.update_many(np.zeros(t.size, np.int64), t, x)]
[('firing', 35, 0.7)]
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors.base import Finding, Side, check_probability
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.windows import WindowedAggregate

__all__ = ["Floor", "mean_below_pvalue"]


def mean_below_pvalue(n, mean, var, floor):
    """One-sided one-sample t-test p-value for ``mean < floor`` from summary statistics.

    Same as ``scipy.stats.ttest_1samp(x, floor, alternative="less").pvalue``, vectorized.
    """
    n, mean, var = (np.asarray(a, dtype=np.float64) for a in (n, mean, var))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean - floor) / np.sqrt(var / n)
        p = special.stdtr(n - 1, t)
    return np.where(var > 0, p, np.where(mean < floor, 0.0, 1.0))


class Floor(BucketedDetector):
    """The window's mean held to a fixed floor (or, with ``below=False``, a ceiling).

    Parameters
    ----------
    floor : float
        The level the window's mean must not fall below (``below=True``) or rise above.
    below : bool
        ``True``: fire when the mean is below ``floor``; ``False``: when it is above.
    bucket, window, lateness : float
        Seconds of event time: evaluation cadence, rolling window (a multiple of ``bucket``),
        allowed lateness.
    alpha : float
        Significance of the one-sided one-sample t-test against ``floor``.
    min_n : int
        Minimum samples in the window.
    for_buckets, resolve_after : int
        Hysteresis: fire after ``for_buckets`` consecutive hits; resolve after ``resolve_after``
        consecutive evaluations with the mean back on the right side of ``floor``.

    Notes
    -----
    H0: the window's mean is at or above ``floor`` (below it for a ceiling). Fires when the
    window's mean is past ``floor`` **and** the t-test rejects H0 at ``alpha``, with at least
    ``min_n`` samples. Resolves when the mean is back past ``floor`` with ``min_n`` samples.
    """

    _params = ("floor", "below", "bucket", "window", "lateness", "alpha", "min_n", "for_buckets",
               "resolve_after")
    _extra_state = ("agg",)

    def __init__(self, floor=0.8, below=True, bucket=300.0, window=300.0, lateness=600.0,
                 alpha=0.01, min_n=30, for_buckets=1, resolve_after=2):
        check_probability("alpha", alpha)
        self.floor, self.below = float(floor), bool(below)
        self.bucket, self.window, self.lateness = bucket, window, lateness
        self.alpha, self.min_n = alpha, int(min_n)
        self.for_buckets, self.resolve_after = for_buckets, resolve_after
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, 0.0)
        self.statistic = "mean_below_floor" if self.below else "mean_above_ceiling"
        self._w = _buckets("window", window, bucket)
        self.agg = WindowedAggregate(self._w, 1, self.clock.ahead, (3,), np.float64)

    def _ensure(self, n):
        self.agg.ensure(n)

    def _add(self, series, t, x):
        x = np.asarray(x, dtype=np.float64)
        if not self.below:  # a ceiling is a floor on -x
            x = -x
        self.agg.add(series, self.clock.bucket_of(t), rows=np.stack([np.ones_like(x), x, x * x], axis=1))

    def _close(self, series, b, frozen):
        self.agg.close(series, b, frozen)

    def _evaluate(self, series, b) -> Evaluation:
        rows = self.agg.win[series]
        n = rows[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            m = rows[:, 1] / n
            v = np.maximum(rows[:, 2] - rows[:, 1] * m, 0.0) / (n - 1)
        level = self.floor if self.below else -self.floor
        enough = n >= self.min_n
        past = enough & (m < level)
        p = np.full(series.size, np.nan)
        if past.any():
            p[past] = mean_below_pvalue(n[past], m[past], v[past], level)
        sign = 1.0 if self.below else -1.0
        start, end = self._window_span(b, self._w, series.size)
        return Evaluation(hit=past & (p < self.alpha), clear=enough & ~past, value=sign * m,
                          p_value=p, win_start=start, win_end=end, win_n=n, win_value=sign * m,
                          ref_n=np.zeros(series.size), ref_value=np.full(series.size, self.floor),
                          ref_kind=np.zeros(series.size, np.int64), threshold=self.floor,
                          statistic=self.statistic)

    def _finding(self, s, status, at, ep, ev: Evaluation, j) -> Finding:
        p = float(ev.p_value[j])
        return Finding(series=s, status=status, at=at, episode_start=ep, statistic=ev.statistic,
                       value=float(ev.value[j]), threshold=self.floor,
                       p_value=None if np.isnan(p) else p,
                       window=Side(float(ev.win_start[j]), float(ev.win_end[j]), int(ev.win_n[j]),
                                   float(ev.win_value[j])),
                       reference=None, reference_kind="floor")

    def reset_baseline(self, series):
        """A floor has no baseline: nothing to forget."""
