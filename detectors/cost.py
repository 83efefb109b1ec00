"""Spend per quality point, this week against last week: a ratio of ratios with a delta-method bound.

Each input row is one **request** (one trace): what it cost and how good it was (the mean of its
quality scores on [0, 1], or 1/0 for a pass/fail dimension). Over a window of requests the spend
per quality point is ``R = sum(cost) / sum(quality)``: dollars per quality point, and per good
answer when quality is pass/fail. :class:`CostRatio` keeps daily sums per series and at every
bucket boundary compares the last ``window`` (7 days) with the ``baseline`` before it (the 7
days that left the window most recently, frozen while an episode is open): the rise is
``R_window / R_baseline``.

**The test.** Requests are the units, ``(c_i, q_i)`` pairs drawn independently. ``R`` is a ratio
of two means, so by the delta method

    ``Var(log R) ≈ (s_c² / c̄² + s_q² / q̄² - 2 s_cq / (c̄ q̄)) / n``

with the sample (co)variances of the requests, and ``log(R_w / R_b)`` has the sum of the two
sides' variances (the sides hold different requests). H0 is "no rise" (ratio ≤ 1); the rule
looks once per bucket, and its false-alarm budget (``false_alarm_rate`` per series-year) gives the
per-look level (:func:`detectors.base.budget_alpha`, 2.7e-7 for daily looks at 1e-4: ``z`` ≈ 5.0).
It fires when

    ``R_w / R_b ≥ 1 + threshold``  and  ``log(R_w / R_b) - z · SE > 0``,

both: the rise is at least the minimum effect (30 %) and it is not noise at the budget. So at low
volume a rise needs to be larger before it is believed (the bound widens by itself); at high volume
the minimum effect decides. Whole weeks are compared, so weekly and daily seasonality cancel.

**What moved.** Each side also keeps, per model (up to ``models`` distinct model codes per
series, the rest pooled in the last slot), its request count, spend and quality. A finding's
``extra`` says how cost per request, quality and the model mix moved, and how cost per request
moved for the model the two weeks share (at an unchanged price, that is tokens per request).

>>> import numpy as np
>>> rng = np.random.default_rng(5)
>>> day = 86400.0
>>> t = np.sort(rng.uniform(0, 35 * day, 35 * 300))          # 300 requests a day, 35 days
>>> bloat = np.where(t >= 21 * day, 1.4, 1.0)                 # day 21: +40 % tokens per request
>>> cost = 0.004 * bloat * np.exp(0.6 * rng.standard_normal(t.size))
>>> quality = rng.beta(17, 3, t.size)
>>> x = np.column_stack([cost, quality, np.zeros(t.size)])
>>> f = CostRatio(short_windows=()).update_many(np.zeros(t.size, np.int64), t, x)   # whole weeks only
>>> [(a.status, int(a.at // day), round(a.value, 2)) for a in f]
[('firing', 26, 1.35)]
>>> f = CostRatio().update_many(np.zeros(t.size, np.int64), t, x)       # and the last day
>>> [(a.status, int(a.at // day), round(a.value, 2), a.extra["window_days"]) for a in f]
[('firing', 22, 1.42, 1.0)]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy import special

from detectors.base import Finding, budget_alpha, check_level, check_positive
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.windows import WindowedAggregate

__all__ = ["CostRatio", "log_ratio_var"]

# columns of one bucket's row: requests, spend, quality, and their second moments; then per model
# slot: requests, spend, quality
_N, _C, _Q, _CC, _QQ, _CQ = range(6)
_BASE = 6


def log_ratio_var(n, c, q, cc, qq, cq):
    """Delta-method variance of ``log(sum(c) / sum(q))`` from sums over ``n`` requests.

    ``c``, ``q`` are the sums of cost and quality, ``cc``, ``qq``, ``cq`` the sums of their squares
    and products. Sample (co)variances use ``n - 1``. NaN where ``n < 2`` or a mean is 0.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> c, q = rng.lognormal(0, 0.5, 400), rng.beta(8, 2, 400)
    >>> v = log_ratio_var(400, c.sum(), q.sum(), (c * c).sum(), (q * q).sum(), (c * q).sum())
    >>> S = np.cov(c, q)          # the same from numpy's covariance matrix
    >>> ref = (S[0, 0] / c.mean() ** 2 + S[1, 1] / q.mean() ** 2 - 2 * S[0, 1] / (c.mean() * q.mean())) / 400
    >>> bool(abs(v - ref) < 1e-15)
    True
    """
    n, c, q, cc, qq, cq = (np.asarray(a, dtype=np.float64) for a in (n, c, q, cc, qq, cq))
    with np.errstate(divide="ignore", invalid="ignore"):
        mc, mq = c / n, q / n
        scc = (cc - n * mc * mc) / (n - 1)
        sqq = (qq - n * mq * mq) / (n - 1)
        scq = (cq - n * mc * mq) / (n - 1)
        v = (scc / (mc * mc) + sqq / (mq * mq) - 2 * scq / (mc * mq)) / n
    ok = (n >= 2) & (mc > 0) & (mq > 0)
    return np.where(ok, np.maximum(v, 0.0), np.nan)


class CostRatio(BucketedDetector):
    """Spend per quality point of the last ``window`` against the ``baseline`` before it.

    ``update_many(series, t, x)`` takes ``x`` of shape ``(n, 3)``: each request's cost, its
    quality (on [0, 1], higher is better) and a model code (a small non-negative integer the
    caller maps to model names; -1 for unknown), in event-time order within the lateness.

    Parameters
    ----------
    threshold : float
        Minimum effect: the ratio at least ``1 + threshold`` (0.30).
    bucket, window, baseline : float
        Evaluation cadence, current window and baseline span, seconds (1, 7 and 7 days).
    alpha, false_alarm_rate
        Per-look level, or (``alpha=None``) the budget in false alerts per series-year.
    min_n : int
        Requests each side needs.
    models : int
        Model slots kept per series (the last one pools the rest).
    short_windows : tuple of float
        Recent parts of the window (default ``(86400.0,)``: the last day) also held to the baseline
        week on their own, with the same minimum effect; the budget is split over the tests.
        Faster on a step change at high volume; a single day also carries its weekday's mix.
    for_buckets, resolve_after, resolve_ratio
        Hysteresis; an episode clears when the ratio is below ``1 + resolve_ratio * threshold``.
    """

    _params: ClassVar[tuple[str, ...]] = ("threshold", "bucket", "window", "baseline", "alpha",
                                          "false_alarm_rate", "min_n", "models", "short_windows", "for_buckets",
                                          "resolve_after", "resolve_ratio", "lateness")
    _state: ClassVar[tuple[str, ...]] = BucketedDetector._state + ("agg", "slot_code")
    statistic = "spend_per_point_ratio"

    def __init__(self, threshold: float = 0.30, bucket: float = 86400.0, window: float = 7 * 86400.0,
                 baseline: float = 7 * 86400.0, alpha: float | None = None, false_alarm_rate: float = 1e-4,
                 min_n: int = 50, models: int = 4, short_windows: tuple = (86400.0,), for_buckets: int = 1,
                 resolve_after: int = 2,
                 resolve_ratio: float = 0.5, lateness: float = 600.0):
        check_positive("threshold", threshold)
        check_level(alpha, false_alarm_rate)
        if int(min_n) < 2:
            raise ValueError(f"min_n must be at least 2, got {min_n!r}")
        if int(models) < 1:
            raise ValueError(f"models must be at least 1, got {models!r}")
        self.threshold, self.bucket, self.window, self.baseline = float(threshold), float(bucket), float(window), float(baseline)
        self.alpha, self.false_alarm_rate = alpha, false_alarm_rate
        self.min_n, self.models = int(min_n), int(models)
        self.for_buckets, self.resolve_after, self.resolve_ratio = int(for_buckets), int(resolve_after), float(resolve_ratio)
        self.lateness = float(lateness)
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self._w = _buckets("window", window, bucket)
        nb = _buckets("baseline", baseline, bucket)
        short = self._init_short_windows(short_windows, window, bucket)
        tests = 1 + len(short)
        self.level = float(alpha) / tests if alpha is not None else budget_alpha(false_alarm_rate, bucket, tests)
        self.z = float(-special.ndtri(self.level))
        self.agg = WindowedAggregate(self._w, nb, self.clock.ahead, (_BASE + 3 * self.models,), recent=short)
        self._chosen: dict[int, int] = {}
        self.slot_code = np.full((0, self.models), -2, np.int64)  # model code held by each slot (-2: free)

    def _ensure(self, n: int) -> None:
        self.agg.ensure(n)
        grown = np.full((n, self.models), -2, np.int64)
        grown[: self.slot_code.shape[0]] = self.slot_code
        self.slot_code = grown

    def _slots(self, series: np.ndarray, code: np.ndarray) -> np.ndarray:
        """Each event's model slot: the slot holding its code, else the next free one, else the last."""
        out = np.empty(series.size, np.int64)
        pairs, inv = np.unique(np.column_stack([series, code]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        first = np.full(pairs.shape[0], series.size, np.int64)
        np.minimum.at(first, inv, np.arange(series.size))
        slot_of = np.empty(pairs.shape[0], np.int64)
        for j in np.argsort(first, kind="stable"):  # first appearance order: batching-independent
            s, c = int(pairs[j, 0]), int(pairs[j, 1])
            row = self.slot_code[s]
            hit = np.flatnonzero(row == c)
            if hit.size:
                slot_of[j] = hit[0]
                continue
            free = np.flatnonzero(row == -2)
            k = int(free[0]) if free.size else self.models - 1
            if free.size:
                row[k] = c
            slot_of[j] = k
        out[:] = slot_of[inv]
        return out

    def _add(self, series, t, x) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        c, q = x[:, 0], x[:, 1]
        code = np.where(np.isfinite(x[:, 2]), x[:, 2], -1).astype(np.int64)
        slot = self._slots(series, code)
        n = series.size
        rows = np.zeros((n, _BASE + 3 * self.models))
        rows[:, _N] = 1.0
        rows[:, _C], rows[:, _Q] = c, q
        rows[:, _CC], rows[:, _QQ], rows[:, _CQ] = c * c, q * q, c * q
        ar = np.arange(n)
        rows[ar, _BASE + 3 * slot] = 1.0
        rows[ar, _BASE + 3 * slot + 1] = c
        rows[ar, _BASE + 3 * slot + 2] = q
        self.agg.add(series, self.clock.bucket_of(t), rows)

    def _close(self, series, b, frozen) -> None:
        self.agg.close(series, b, frozen)

    def _sides(self, series, k: int = 0):
        """Rows of window ``k`` (0: the whole window, j > 0: short window j - 1) and of the baseline."""
        win = self.agg.win[series] if k == 0 else self.agg.recent(series, k - 1)
        return win, self.agg.base_sum[series]

    def _evaluate(self, series, b) -> Evaluation:
        ref = self.agg.base_sum[series]
        full = self.agg.base_full(series)
        end = float(self.clock.bucket_end(b))
        with np.errstate(divide="ignore", invalid="ignore"):
            r0 = ref[:, _C] / ref[:, _Q]
        v0 = log_ratio_var(*(ref[:, k] for k in range(6)))
        sides, window_clear, window_quiet = [], [], []
        for j, (nb, win) in enumerate(self._windows(series)):
            with np.errstate(divide="ignore", invalid="ignore"):
                r1 = win[:, _C] / win[:, _Q]
                ratio = r1 / r0
                zstat = np.log(ratio) / np.sqrt(log_ratio_var(*(win[:, k] for k in range(6))) + v0)
            p = np.where(np.isfinite(zstat), special.ndtr(-np.nan_to_num(zstat, nan=0.0)), np.nan)
            enough = full & (win[:, _N] >= self.min_n) & (ref[:, _N] >= self.min_n) & np.isfinite(ratio) \
                & np.isfinite(zstat)
            sides.append({"hit": enough & (ratio >= 1 + self.threshold) & (zstat > self.z), "value": ratio, "p": p,
                          "win_n": win[:, _N], "win_value": r1, "win_start": end - nb * self.clock.bucket, "j": j})
            window_clear.append(enough & (ratio < 1 + self.resolve_ratio * self.threshold))
            window_quiet.append(~enough)
        hit = np.logical_or.reduce([sd["hit"] for sd in sides])
        chosen = np.argmax(np.stack([sd["hit"] for sd in sides]), axis=0)
        clear = self._windows_clear(series, hit, chosen, window_clear, window_quiet)
        pick = self._picker(sides, chosen)
        self._chosen = dict(zip(series.tolist(), chosen.tolist()))
        return Evaluation(hit=hit, clear=clear, value=pick("value"), p_value=pick("p"),
                          win_start=pick("win_start"), win_end=np.full(series.size, end), win_n=pick("win_n"),
                          win_value=pick("win_value"), ref_n=ref[:, _N], ref_value=r0,
                          ref_kind=np.zeros(series.size, np.int64), threshold=1 + self.threshold,
                          statistic=self.statistic)

    def _finding(self, s, status, at, ep, ev: Evaluation, j) -> Finding:
        f = super()._finding(s, status, at, ep, ev, j)
        j = self._chosen.get(s, 0)
        win, ref = (a[0] for a in self._sides(np.array([s]), j))
        extra = self.breakdown(win, ref, self.slot_code[s])
        extra["z"] = self.z
        extra["window_days"] = round((f.window.end - f.window.start) / 86400.0, 3) if f.window else None
        return Finding(series=f.series, status=f.status, at=f.at, episode_start=f.episode_start,
                       statistic=f.statistic, value=f.value, threshold=f.threshold, p_value=f.p_value,
                       window=f.window, reference=f.reference, reference_kind=f.reference_kind, extra=extra)

    def breakdown(self, win: np.ndarray, ref: np.ndarray, codes: np.ndarray) -> dict:
        """How the two sides differ: cost per request, quality, model mix, and cost per request of
        the model both sides use most (JSON-friendly)."""
        def per_model(row):
            out = {}
            for k, code in enumerate(codes.tolist()):
                n = float(row[_BASE + 3 * k])
                if n > 0:
                    out[int(code)] = (n, float(row[_BASE + 3 * k + 1]), float(row[_BASE + 3 * k + 2]))
            return out

        mw, mr = per_model(win), per_model(ref)
        cpr = (win[_C] / win[_N]) / (ref[_C] / ref[_N]) if win[_N] and ref[_N] else float("nan")
        qr = (win[_Q] / win[_N]) / (ref[_Q] / ref[_N]) if win[_N] and ref[_N] and ref[_Q] else float("nan")
        top_w = max(mw, key=lambda m: mw[m][0]) if mw else None
        top_r = max(mr, key=lambda m: mr[m][0]) if mr else None
        share_w = {m: v[0] / win[_N] for m, v in mw.items()}
        share_r = {m: v[0] / ref[_N] for m, v in mr.items()}
        mix_shift = 0.5 * sum(abs(share_w.get(m, 0.0) - share_r.get(m, 0.0)) for m in set(share_w) | set(share_r))
        shared = [m for m in mw if m in mr]
        same_model_cpr = float("nan")
        if shared:
            m = max(shared, key=lambda m: min(mw[m][0], mr[m][0]))
            same_model_cpr = (mw[m][1] / mw[m][0]) / (mr[m][1] / mr[m][0]) if mr[m][1] > 0 else float("nan")
        return {"cost_per_request_ratio": float(cpr), "quality_ratio": float(qr),
                "model_window": top_w, "model_reference": top_r, "model_mix_shift": float(mix_shift),
                "same_model_cost_per_request_ratio": float(same_model_cpr)}

    def reset_baseline(self, series) -> None:
        self.agg.reset_baseline(np.asarray(series, dtype=np.int64))
