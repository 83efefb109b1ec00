"""Percent drop of a series' mean or median against its frozen baseline and long-term reference.

Examples
--------
A quality score that falls from 0.90 to 0.80 on day 20; the 7-day mean is 5 % down three days
later (hourly buckets):

>>> import numpy as np
>>> from detectors.drop import PercentDrop
>>> rng = np.random.default_rng(7)
>>> t = np.sort(rng.uniform(0, 40 * 86400, 40_000))
>>> x = np.clip(rng.normal(np.where(t < 20 * 86400, 0.90, 0.80), 0.05), 0, 1)
>>> det = PercentDrop(stat="mean", window=7 * 86400, baseline=14 * 86400)
>>> f = det.update_many(np.zeros(t.size, np.int64), t, x)
>>> [(x.status, round(x.at / 86400, 2), round(x.value, 3)) for x in f]
[('firing', 23.08, 0.05)]
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors.base import budget_alpha, check_level, check_positive
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.windows import WindowedAggregate

__all__ = ["PercentDrop", "welch_less_pvalue", "sign_test_greater_pvalue", "hist_quantile"]


def welch_less_pvalue(n1, m1, v1, n0, m0, v0):
    """One-sided Welch t-test p-value for ``mean1 < mean0`` from summary statistics.

    Same as ``scipy.stats.ttest_ind_from_stats(m1, sqrt(v1), n1, m0, sqrt(v0), n0,
    equal_var=False, alternative="less").pvalue``, vectorized.
    """
    n1, m1, v1, n0, m0, v0 = (np.asarray(a, dtype=np.float64) for a in (n1, m1, v1, n0, m0, v0))
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = v1 / n1, v0 / n0
        se2 = a + b
        t = (m1 - m0) / np.sqrt(se2)
        df = se2 * se2 / (a * a / (n1 - 1) + b * b / (n0 - 1))
        p = special.stdtr(df, t)
    degenerate = ~(se2 > 0)
    return np.where(degenerate, np.where(m1 < m0, 0.0, 1.0), p)


def sign_test_greater_pvalue(k, n):
    """P(X >= k) for X ~ Binomial(n, 1/2): the sign test that more than half lie below a median."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    valid = np.isfinite(k) & np.isfinite(n) & (n >= 0)
    ki = np.where(valid, k, 0).astype(np.int64)
    ni = np.where(valid, n, 0).astype(np.int64)
    p = special.bdtrc(ki - 1, ni, 0.5)
    return np.where(valid, np.where(ki <= 0, 1.0, p), np.nan)


def hist_quantile(hist, q, lo, hi):
    """Quantile ``q`` of binned data (rows of ``hist``), linear within the bin. NaN when empty."""
    hist = np.asarray(hist, dtype=np.float64)
    bins = hist.shape[-1]
    width = (hi - lo) / bins
    cum = np.cumsum(hist, axis=-1)
    n = cum[..., -1]
    target = q * n
    j = np.minimum((cum < target[..., None]).sum(axis=-1), bins - 1)
    below = np.take_along_axis(cum, j[..., None], -1)[..., 0] - np.take_along_axis(hist, j[..., None], -1)[..., 0]
    inbin = np.take_along_axis(hist, j[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(inbin > 0, (target - below) / inbin, 0.5)
        return np.where(n > 0, lo + (j + frac) * width, np.nan)


def hist_count_below(hist, value, lo, hi):
    """How many of the binned data lie below ``value`` (uniform within a bin)."""
    hist = np.asarray(hist, dtype=np.float64)
    bins = hist.shape[-1]
    pos = np.clip(np.nan_to_num((value - lo) / (hi - lo) * bins), 0, bins)
    j = np.minimum(np.floor(pos).astype(np.int64), bins - 1)
    cum = np.cumsum(hist, axis=-1)
    below = np.take_along_axis(cum, j[..., None], -1)[..., 0] - np.take_along_axis(hist, j[..., None], -1)[..., 0]
    inbin = np.take_along_axis(hist, j[..., None], -1)[..., 0]
    return below + inbin * (pos - j)


class PercentDrop(BucketedDetector):
    """Relative drop of the window's mean (or median) below a frozen baseline.

    Parameters
    ----------
    stat : {"mean", "median"}
        Statistic compared. ``mean`` keeps count/sum/sum of squares per bucket and tests with a
        one-sided Welch t-test; ``median`` keeps a ``bins``-bin histogram on ``[lo, hi]`` per
        bucket and tests with a sign test (are more than half of the window's values below the
        reference median?).
    bucket, window, baseline, lateness : float
        Seconds of event time: bucket width (evaluation cadence), current window, baseline span
        (made of buckets that left the window while nothing was firing) and allowed lateness.
        ``window`` and ``baseline`` must be multiples of ``bucket``.
    threshold : float
        Minimum relative drop, ``(reference - window) / |reference|`` (0.05 = 5 %).
    alpha : float or None
        Significance level of the one-sided test. ``None``: derived from ``false_alarm_rate``.
    false_alarm_rate : float or None
        With ``alpha=None``: false alarms allowed per series-year; every test of a look
        (windows times references) runs at :func:`~detectors.base.budget_alpha`.
    min_n : int
        Minimum samples on both sides.
    lo, hi : float
        Declared scale; for ``median`` the histogram range.
    bins : int
        Histogram bins (``median`` only).
    higher_is_better : bool
        When False the scale is mirrored (``lo + hi - x``) so a rise counts as a drop.
    long_term : bool
        Also compare with the long-term reference (the best full baseline seen while stable),
        so a slow decline that the rolling baseline follows still fires.
    short_windows : tuple of float
        Seconds (multiples of ``bucket``, shorter than ``window``): the most recent part of the
        window is also tested on its own, so a step change fires once a short window is past
        it instead of when it has moved the whole window's mean by ``threshold``. Every window
        is tested at ``alpha / (1 + len(short_windows))`` (Bonferroni) with the same
        ``threshold`` and ``min_n``.
    for_buckets, resolve_after, resolve_ratio
        Hysteresis: fire after ``for_buckets`` consecutive hits; resolve after ``resolve_after``
        consecutive evaluations with the drop below ``resolve_ratio * threshold`` (and at least
        ``min_n`` values) in the window that raised the alert, and in every other window that
        has ``min_n`` values.

    Notes
    -----
    H0: the window's values come from the reference distribution (no drop). Fires when the drop
    is at least ``threshold`` **and** the one-sided test rejects H0 at ``alpha``, with at least
    ``min_n`` samples on both sides. The finding reports the window that fired (the full one
    first, then the short ones in the order given) and the reference it was measured against.
    """

    _params = ("stat", "bucket", "window", "baseline", "lateness", "threshold", "alpha", "false_alarm_rate", "min_n",
               "lo", "hi", "bins", "higher_is_better", "long_term", "short_windows", "for_buckets",
               "resolve_after", "resolve_ratio")
    _extra_state = ("agg",)

    def __init__(self, stat="mean", bucket=3600.0, window=7 * 86400.0, baseline=14 * 86400.0,
                 lateness=600.0, threshold=0.05, alpha=1e-3, min_n=100, lo=0.0, hi=1.0, bins=256,
                 higher_is_better=True, long_term=True, short_windows=(), for_buckets=1,
                 resolve_after=3, resolve_ratio=0.5, false_alarm_rate=None):
        if stat not in ("mean", "median"):
            raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")
        check_positive("threshold", threshold)
        check_level(alpha, false_alarm_rate)
        self.false_alarm_rate = false_alarm_rate
        if not hi > lo:
            raise ValueError(f"hi must be > lo, got lo={lo!r} hi={hi!r}")
        self.stat, self.bucket, self.window, self.baseline = stat, bucket, window, baseline
        self.lateness, self.threshold, self.alpha, self.min_n = lateness, threshold, alpha, min_n
        self.lo, self.hi, self.bins = lo, hi, int(bins)
        self.higher_is_better, self.long_term = higher_is_better, long_term
        self.for_buckets, self.resolve_after, self.resolve_ratio = for_buckets, resolve_after, resolve_ratio
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self.statistic = "pct_drop"
        w, bl = _buckets("window", window, bucket), _buckets("baseline", baseline, bucket)
        self._w = w
        short = self._init_short_windows(short_windows, window, bucket)
        if stat == "mean":
            self.agg = WindowedAggregate(w, bl, self.clock.ahead, (3,), np.float64, recent=short)
        else:
            self.agg = WindowedAggregate(w, bl, self.clock.ahead, (self.bins,), np.uint32, recent=short)

    def _ensure(self, n):
        self.agg.ensure(n)

    def _values(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x if self.higher_is_better else self.lo + self.hi - x

    def _add(self, series, t, x):
        b = self.clock.bucket_of(t)
        x = self._values(x)
        if self.stat == "mean":
            self.agg.add(series, b, rows=np.stack([np.ones_like(x), x, x * x], axis=1))
        else:
            pos = np.floor((x - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64)
            self.agg.add(series, b, bins=np.clip(pos, 0, self.bins - 1))

    def _close(self, series, b, frozen):
        self.agg.close(series, b, frozen)

    def _summary(self, rows):
        """(n, value, variance-or-None) of aggregate rows."""
        if self.stat == "mean":
            n = rows[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                m = rows[:, 1] / n
                v = np.maximum(rows[:, 2] - rows[:, 1] * m, 0.0) / (n - 1)
            return n, m, v
        n = rows.sum(axis=1).astype(np.float64)
        return n, hist_quantile(rows, 0.5, self.lo, self.hi), None

    def _test(self, win_rows, n1, m1, v1, ref_rows, n0, m0, v0):
        if self.stat == "mean":
            return welch_less_pvalue(n1, m1, v1, n0, m0, v0)
        k = np.round(hist_count_below(win_rows, m0, self.lo, self.hi))
        return sign_test_greater_pvalue(k, n1)

    def _evaluate(self, series, b) -> Evaluation:
        end = float(self.clock.bucket_end(b))
        windows = self._windows(series)
        firing = self.firing[series]
        refs = [(kind, rows, valid, *self._summary(rows)) for kind, (rows, valid) in
                enumerate(self._references(series))]
        alpha = (self.alpha / len(windows) if self.alpha is not None
                 else budget_alpha(self.false_alarm_rate, self.bucket, len(windows) * len(refs)))
        sides, window_clear, window_quiet = [], [], []
        for k, win in windows:
            n1, m1, v1 = self._summary(win)
            clear = np.ones(series.size, bool)
            for kind, rows, valid, n0, m0, v0 in refs:
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    pct = (m0 - m1) / np.abs(m0)  # non-finite where the reference is ~0: not enough
                enough = valid & (n1 >= self.min_n) & (n0 >= self.min_n) & np.isfinite(pct)
                # the test only where the effect is there (or a finding may report it)
                big = enough & (pct >= self.threshold)
                p = _where(big | firing, self._test, win, n1, m1, v1, rows, n0, m0, v0)
                clear &= ~valid | (enough & (pct < self.resolve_ratio * self.threshold))
                sides.append({"hit": big & (p < alpha), "value": pct, "p": p,
                              "n": n0, "ref": m0, "kind": kind, "win_n": n1, "win_value": m1,
                              "win_start": end - k * self.clock.bucket})
            window_clear.append(clear)
            window_quiet.append(n1 < self.min_n)
        hit = np.logical_or.reduce([sd["hit"] for sd in sides])
        # report the first side that fired (full window and baseline first), else the first
        chosen = np.argmax(np.stack([sd["hit"] for sd in sides]), axis=0)
        clear = self._windows_clear(series, hit, chosen // len(refs), window_clear, window_quiet)
        pick = self._picker(sides, chosen)
        unmirror = (lambda v: v) if self.higher_is_better else (lambda v: self.lo + self.hi - v)
        return Evaluation(
            hit=hit, clear=clear, value=pick("value"), p_value=pick("p"),
            win_start=pick("win_start"), win_end=np.full(series.size, end), win_n=pick("win_n"),
            win_value=unmirror(pick("win_value")), ref_n=pick("n"), ref_value=unmirror(pick("ref")),
            ref_kind=pick("kind").astype(np.int64), threshold=self.threshold, statistic=self.statistic)

    def _accept_reference(self, series):
        if not self.long_term:
            return
        agg = self.agg
        full = series[agg.base_full(series)]
        if full.size == 0:
            return
        _, mb, _ = self._summary(agg.base_sum[full])
        _, mr, _ = self._summary(agg.ref[full])
        better = ~agg.has_ref[full] | (mb >= mr)
        agg.accept_reference(full[better])

    def reset_baseline(self, series):
        self.agg.reset_baseline(np.asarray(series, dtype=np.int64))


def _where(mask, test, *columns):
    """``test(*columns)`` evaluated on the rows in ``mask`` only; NaN elsewhere (None columns pass)."""
    out = np.full(mask.shape[0], np.nan)
    if mask.all():
        return test(*columns)
    if mask.any():
        out[mask] = test(*(None if c is None else c[mask] for c in columns))
    return out
