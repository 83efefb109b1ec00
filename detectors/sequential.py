"""Sequential change detection with a false-alarm budget stated in time: CUSUM on rates and means.

A windowed test looked at every hour spends its alpha again at every look, and a window that a
low-volume series never fills never fires. A CUSUM accumulates evidence event by event until
it is enough, at any volume, and its false-alarm rate has an analytic bound:

* the statistic is ``S_n = max(0, S_{n-1} + g(x_n))`` with increments whose exponential has
  expectation at most 1 under the reference distribution (a likelihood ratio, or an
  exponentially tilted one); then every excursion from 0 reaches ``h`` with probability at most
  ``e^-h`` and the run length to a false alarm is at least ``e^h`` events (Lorden 1971);
* so ``h_k = log(N / (w_k r))`` keeps false alarms at or below ``r`` per series-year, where
  ``N`` is the series' events per year (estimated from its reference, so the threshold adapts
  to the traffic volume) and ``w_k`` the share of the budget given to CUSUM ``k`` of those run
  side by side (one per design alternative; the shares add up to 1, a weighted union bound).

The reference (rate, or mean and the tilted moments) comes from a frozen rolling baseline that
lags the present by ``guard`` (buckets that left the guard window while nothing was firing), so
a change does not leak into its own reference before it is detected. Estimation error of the
reference is covered by using an upper confidence bound (``z`` standard errors) where the bound
needs one, so the ``e^-h`` guarantee holds with high probability, not only for a known reference.

:class:`RateCusum` watches a Bernoulli rate (flags, check failures) for a rise by ``ratio``;
:class:`MeanCusum` watches a mean on [0, 1] (higher is better) for a drop by ``threshold``.
The minimum effect is the design alternative, and a bank of alternatives at 1, 2 and 4 times it
reacts faster to large changes. The finding reports the estimated change time (where the
winning CUSUM last left 0) and the effect measured since then.

Examples
--------
A format-failure rate that rises from 1 % to 5 % on day 14, at 20 checked responses an hour:

>>> import numpy as np
>>> from detectors.sequential import RateCusum
>>> rng = np.random.default_rng(11)
>>> t = np.sort(rng.uniform(0, 21 * 86400, 21 * 24 * 20))
>>> x = (rng.random(t.size) < np.where(t < 14 * 86400, 0.01, 0.05)).astype(float)
>>> det = RateCusum(ratio=2.0, min_rate=0.01)
>>> f = det.update_many(np.zeros(t.size, np.int64), t, x)
>>> [(a.status, round((a.at - 14 * 86400) / 3600)) for a in f]
[('firing', 19)]
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors.base import YEAR, Finding, Side, check_positive
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.windows import WindowedAggregate, grow_rows

__all__ = ["RateCusum", "MeanCusum", "grouped_cusum", "cusum_threshold", "YEAR"]


ALTERNATIVES = (1.0, 2.0, 4.0)  # design alternatives, in multiples of the minimum effect
MIN_ESS = 100  # tilted reference moments must rest on at least this effective sample size
LAMBDAS = tuple(2.0 ** k for k in range(-1, 9))  # tilts for MeanCusum: 0.5 .. 256 (the last for variances)


DESIGN_EVERY = 6  # buckets between refreshes of a CUSUM's design from its reference
DRIFT_FLOOR = 1e-3  # the run-length refinement never lowers h by more than log(1 / DRIFT_FLOOR)


def cusum_threshold(events_per_year, false_alarm_rate, k=1, drift=None):
    """``h`` such that ``k`` CUSUMs on a series with ``events_per_year`` events raise at most
    ``false_alarm_rate`` false alarms per year.

    Lorden's bound (every excursion reaches ``h`` with probability ``<= e^-h``) gives
    ``h = log(k N / r)``. With ``drift``, the per-event drift ``D = -E0[g]`` of the increments
    under the reference, Siegmund's approximation of the mean run length to a false alarm,
    ``ARL0 ~ e^h / D`` events (diffusion limit, overshoot ignored, which only lengthens it), is
    used instead: ``h = log(k N D / r)`` for ``D < 1``. Each event of a low-information stream
    (a 2 % flag rate, a 5 % drop of a noisy score) moves the statistic little, so the bound's
    ``e^h`` is far below the real run length; ``D`` is floored at :data:`DRIFT_FLOOR`.

    >>> round(float(cusum_threshold(365_000, 1e-4)), 2), round(float(cusum_threshold(365_000, 1e-4, drift=0.0064)), 2)
    (22.02, 16.97)
    """
    n = np.maximum(np.asarray(events_per_year, dtype=np.float64), 1.0)
    d = 1.0 if drift is None else np.clip(np.asarray(drift, dtype=np.float64), DRIFT_FLOOR, 1.0)
    return np.log(k * n * d / false_alarm_rate)


def grouped_cusum(series, g, s0):
    """CUSUM paths of several series at once.

    ``series`` (n,) ids in event order, ``g`` (n, K) increments, ``s0`` (G, K) the statistics
    before the batch of each *group* (the distinct ids in order of ``np.unique``). Returns
    ``(order, groups, starts, S)``: the stable order by series, the group index of each
    ordered event, the start of each group and the statistic after each ordered event, using
    ``S_n = C_n - min(0, min_k<=n C_k)`` with ``C_n = S_0 + g_1 + ... + g_n``.
    """
    order = np.argsort(series, kind="stable")
    s = series[order]
    go = g[order]
    first = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    groups = np.cumsum(first) - 1
    cs = np.cumsum(go, axis=0)
    before = np.where(starts[:, None] > 0, cs[np.maximum(starts - 1, 0)], 0.0)
    c = cs - before[groups] + s0[groups]
    low = np.minimum(c, 0.0)
    # a running minimum inside each group: shift group j down by j * big so that earlier
    # groups never undercut it, accumulate, shift back
    big = 2.0 * float(np.abs(low).max(initial=0.0)) + 1.0
    shift = (groups * big)[:, None]
    run = np.minimum.accumulate(low - shift, axis=0) + shift
    return order, groups, starts, np.maximum(c - run, 0.0)


class _Cusum(BucketedDetector):
    """Shared machinery: reference aggregate, per-event grouped CUSUM bank, alarms at closes."""

    alternatives: tuple[float, ...] = ALTERNATIVES
    weights: tuple[float, ...] = (0.8, 0.1, 0.1)  # share of the false-alarm budget of each alternative
    _compact_from: int  # the baseline ring's first log-stored column (see WindowedAggregate's compact)

    # -- hooks of the two kinds ---------------------------------------------------------------
    def _rows(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _increments(self, series: np.ndarray, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _adjust(self, series: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The values the CUSUM sees (the raw ones, or with a daily cycle taken out)."""
        return x

    def _grow_design(self, n: int) -> None:
        raise NotImplementedError

    def _design(self, series: np.ndarray, b: int) -> None:
        raise NotImplementedError

    def _reference(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _effect(self, value: np.ndarray, ref: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _min_effect(self) -> float:
        raise NotImplementedError

    def _clear(self, win_value: np.ndarray, win_n: np.ndarray, ref: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _effect_upper(self, series: np.ndarray, value: np.ndarray, n: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """The effect of ``n`` values with mean ``value`` at its upper bound (``effect_z`` standard errors)."""
        raise NotImplementedError

    _cusum_state = ("S", "smax", "zero_t", "since_n", "since_sum", "h", "design_ok", "first_t", "drift",
                    "ep_change", "ep_search", "resolved_at")
    # added after checkpoint format 3 was released: a checkpoint without them loads with these unset
    _optional_state = ("ep_change", "ep_search", "resolved_at")
    _extra_state = ("agg",)

    freeze_at = 0.25  # share of h above which (at a bucket's close) the reference stops taking buckets
    effect_z = 1.0  # the effect since the change must reach the minimum effect at this many standard errors
    freeze_nats = 3.0  # ... or this many nats, whichever is lower (exceeded under H0 < 5 % of the time)

    def _init_cusum(self, bucket, guard, baseline, lateness, false_alarm_rate, z, min_ref_n, min_n,
                    for_buckets, resolve_after, resolve_ratio, row, recovery, phases=0):
        check_positive("false_alarm_rate", false_alarm_rate)
        check_positive("z", z)
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self._w = _buckets("guard", guard, bucket)
        self._bl = _buckets("baseline", baseline, bucket)
        self._rec = _buckets("recovery", recovery, bucket)
        if self._rec > self._w:
            raise ValueError(f"recovery ({recovery} s) must not be longer than guard ({guard} s)")
        self.agg = WindowedAggregate(self._w, self._bl, self.clock.ahead, row, np.float64, recent=(self._rec,),
                                     phases=phases, phase_of=self._hour_of_bucket if phases else None,
                                     compact=self._compact_from)
        k = len(self.alternatives)
        self.S = np.zeros((0, k))
        self.smax = np.zeros((0, k))
        self.zero_t = np.full((0, k), np.nan)
        self.since_n = np.zeros((0, k))
        self.since_sum = np.zeros((0, k))
        self.h = np.full(0, np.inf)
        self.design_ok = np.zeros((0, k), bool)
        self.first_t = np.full(0, np.nan)  # first event time of each series (or since its reset)
        self.drift = np.ones((0, k))  # -E0[g] of each CUSUM's increments under the reference
        # the last episode of each series: its estimated change, the start of its cause search
        # (see _finding) and when it resolved
        self.ep_change = np.full(0, np.nan)
        self.ep_search = np.full(0, np.nan)
        self.resolved_at = np.full(0, np.nan)

    def _hour_of_bucket(self, b):
        """UTC hour of the day at which bucket ``b`` starts."""
        start = np.asarray(b, dtype=np.int64) * self.clock.bucket
        return (np.floor(np.mod(start, 86400.0) / 3600.0).astype(np.int64)) % 24

    def _ensure(self, n):
        self.agg.ensure(n)
        for name in self._cusum_state:
            a = getattr(self, name)
            fill = np.nan if name in ("zero_t", "first_t", *self._optional_state) else (np.inf if name == "h" else (1 if name == "drift" else 0))
            setattr(self, name, grow_rows(a, n, fill))
        self._grow_design(n)

    def _add(self, series, t, x):
        x = np.asarray(x, dtype=np.float64)
        self.agg.add(series, self.clock.bucket_of(t), rows=self._rows(x))
        np.fmin.at(self.first_t, series, t)
        live = ~self.firing[series]
        if not live.any():
            return
        if not live.all():
            series, t, x = series[live], t[live], x[live]
        x = self._adjust(series, t, x)
        g = self._increments(series, x)  # (n, K); 0 where the design is off
        uniq = np.unique(series)
        idx = np.searchsorted(uniq, series)
        order, groups, starts, s = grouped_cusum(idx, g, self.S[uniq])
        ends = np.r_[starts[1:], idx.size] - 1
        self.S[uniq] = s[ends]
        self.smax[uniq] = np.maximum(self.smax[uniq], np.maximum.reduceat(s, starts, axis=0))
        # since the last time each CUSUM was at 0: events, their sum, and when that was
        xo, to = x[order], t[order]
        zero = s <= 1e-9 * (1.0 + float(np.abs(s).max(initial=0.0)))
        pos = np.arange(idx.size)[:, None]
        lz = np.maximum.reduceat(np.where(zero, pos, -1), starts, axis=0)  # (G, K) last zero, or -1
        had = lz >= 0
        lzc = np.maximum(lz, 0)
        # counts and sums since the last zero, added event by event in order (np.add.at), so
        # they do not depend on how the events were batched
        prev_n, prev_sum, prev_t = self.since_n[uniq], self.since_sum[uniq], self.zero_t[uniq]
        n_new = np.where(had, 0.0, prev_n)
        sum_new = np.where(had, 0.0, prev_sum)
        ev, col = np.nonzero(pos > lz[groups])
        np.add.at(n_new, (groups[ev], col), 1.0)
        np.add.at(sum_new, (groups[ev], col), xo[ev])
        nxt = np.minimum(lzc + 1, idx.size - 1)
        zt_had = np.where(lz < ends[:, None], to[nxt], np.nan)  # no event after the zero yet: unset
        self.since_n[uniq] = n_new
        self.since_sum[uniq] = sum_new
        self.zero_t[uniq] = np.where(had, zt_had, np.where(np.isnan(prev_t), to[starts][:, None], prev_t))

    def _close(self, series, b, frozen):
        # the reference also stands still while evidence builds up (a CUSUM past freeze_at * h):
        # a change must not leak into its own reference before it is detected
        building = (np.where(self.design_ok[series], self.S[series], 0.0)
                    > np.minimum(self.freeze_at * self._thresholds(series), self.freeze_nats)).any(axis=1)
        self.agg.close(series, b, frozen | building)
        # a 14-day reference barely moves in an hour: the design (tilts, moments, offsets,
        # thresholds) is refreshed every DESIGN_EVERY buckets (event time, so batch sizes do not
        # matter); a new series waits at most that long for its first one
        if b % DESIGN_EVERY == 0:
            self._design(series, b)

    def _reset(self, series):
        self.S[series] = 0.0
        self.smax[series] = 0.0
        self.since_n[series] = 0.0
        self.since_sum[series] = 0.0
        self.zero_t[series] = np.nan

    def _spans(self, series):
        """The reference reaches ``min_ref_span`` past the series' first event: daily and weekly
        cycles (in volume, mean or rate) are in it, not only the hours a young series has seen."""
        pushes = self.agg.base_pushes[series]
        last = self.agg.base_bucket[series, np.maximum(pushes - 1, 0) % self._bl]
        end = (last + 1).astype(np.float64) * self.clock.bucket
        with np.errstate(invalid="ignore"):
            return (pushes > 0) & (end - self.first_t[series] >= self.min_ref_span)

    def _volume(self, series):
        """Events per year of ``series``, from its reference."""
        n = self.agg.base_sum[series, 0]
        filled = np.minimum(self.agg.base_pushes[series], self._bl)
        span = np.maximum(filled, 1) * self.clock.bucket
        return n / span * YEAR

    def _thresholds(self, series):
        """(G, K) thresholds: the budget split over the alternatives by ``weights``, each refined
        by its increments' drift under the reference (:func:`cusum_threshold`)."""
        d = np.clip(self.drift[series], DRIFT_FLOOR, 1.0)
        return self.h[series][:, None] - np.log(np.asarray(self.weights))[None, :] + np.log(d)

    def _evaluate(self, series, b) -> Evaluation:
        end = float(self.clock.bucket_end(b))
        hk = self._thresholds(series)
        smax = np.where(self.design_ok[series], self.smax[series], 0.0)
        best = np.argmax(smax - hk, axis=1)
        rows = np.arange(series.size)
        top = smax[rows, best]
        h = hk[rows, best]
        hit = top >= h
        n_since = self.since_n[series, best]
        mean_since = np.divide(self.since_sum[series, best], n_since, out=np.full(series.size, np.nan),
                               where=n_since > 0)
        ref_n, ref_value = self._reference(series)
        value = self._effect(mean_since, ref_value)
        # evidence and effect: the change since the CUSUM left 0 must be consistent with the
        # minimum effect (its upper bound at effect_z standard errors reaches it), so a real change
        # exactly at the minimum effect fires even when its estimate falls a little below, and
        # a lasting change well below it (which a CUSUM also detects, eventually) does not
        with np.errstate(invalid="ignore"):
            hit &= self._effect_upper(series, mean_since, n_since, ref_value) >= self._min_effect()
        win_value, win_n = self._window(series)
        self._clear_series = series
        clear = self._clear(win_value, win_n, ref_value)
        change = self.zero_t[series, best]
        self._last_change = dict(zip(series.tolist(), np.where(np.isfinite(change), change, end).tolist()))
        self._last_top = dict(zip(series.tolist(), zip(top.tolist(), h.tolist())))
        # the next bucket starts a fresh maximum; a series that fires starts over
        self.smax[series] = self.S[series]
        if hit.any():
            self._reset(series[hit & ~self.firing[series]])
        start = np.where(np.isfinite(change), change, end)
        return Evaluation(hit=hit, clear=clear, value=value, p_value=np.full(series.size, np.nan),
                          win_start=start, win_end=np.full(series.size, end), win_n=n_since,
                          win_value=mean_since, ref_n=ref_n, ref_value=ref_value,
                          ref_kind=np.zeros(series.size, np.int64), threshold=self._min_effect(),
                          statistic=self.statistic)

    def _finding(self, s, status, at, ep, ev: Evaluation, j) -> Finding:
        f = super()._finding(s, status, at, ep, ev, j)
        top, h = self._last_top.get(s, (np.nan, np.nan))
        extra = {"cusum": round(float(top), 3), "cusum_threshold": round(float(h), 3)}
        if status == "firing":
            change = float(self._last_change.get(s, at))
            extra["change_at"] = change
            # where the search for a suspected cause starts: the change estimate, less as much
            # again as detection took (the estimate is less sure the longer that was) ...
            search = change - max(0.0, ep - change)
            # ... or, when the evidence started building within a guard of the series' last
            # resolution, that episode's search: a degradation that looked resolved on a thin
            # window and came back is the same incident, and its cause is the same
            if np.isfinite(self.resolved_at[s]) and change - self.resolved_at[s] <= self._w * self.clock.bucket:
                search = min(search, float(self.ep_search[s]))
                extra["continues_from"] = float(self.ep_change[s])
                change = min(change, float(self.ep_change[s]))
            extra["cause_search_from"] = search
            self.ep_change[s], self.ep_search[s] = change, search
        else:  # resolved: the window the recovery was judged on
            self.resolved_at[s] = at
            win_value, win_n = self._window(np.array([s]))
            f = Finding(series=f.series, status=status, at=at, episode_start=ep, statistic=f.statistic,
                        value=float(self._effect(win_value, np.array([ev.ref_value[j]]))[0]),
                        threshold=f.threshold, window=Side(at - self._rec * self.clock.bucket, at, int(win_n[0]),
                                                           float(win_value[0])),
                        reference=f.reference, reference_kind=f.reference_kind)
        return Finding(**{**f.__dict__, "extra": extra})

    def _window(self, series):
        """Mean (or rate) and count of the recovery window (the latest ``recovery`` seconds)."""
        rows = self.agg.recent(series, 0)
        n = rows[:, 0]
        return np.divide(rows[:, 1], n, out=np.full(series.size, np.nan), where=n > 0), n

    @classmethod
    def from_state(cls, state: dict):
        n = len(state.get("first_t", ()))
        missing = [name for name in cls._optional_state if name not in state]
        obj = super().from_state({**state, **{name: np.full(n, np.nan) for name in missing}})
        return obj

    def reset_baseline(self, series):
        series = np.asarray(series, dtype=np.int64)
        self.agg.reset_baseline(series)
        self._reset(series)
        self.ep_change[series] = np.nan
        self.ep_search[series] = np.nan
        self.resolved_at[series] = np.nan
        self.h[series] = np.inf
        self.design_ok[series] = False
        self.first_t[series] = np.nan


class RateCusum(_Cusum):
    """A rise of a Bernoulli rate (1 = flagged or failed) by at least ``ratio``, sequentially.

    Parameters
    ----------
    ratio : float
        Minimum effect: the rate at least ``ratio`` times the reference rate. The CUSUMs are
        designed for 1, 2 and 4 times the minimum effect in log-ratio.
    false_alarm_rate : float
        False alarms allowed per series-year on data like the reference (1e-4: one per 10,000
        series-years).
    bucket, guard, baseline, recovery, lateness : float
        Seconds of event time: evaluation cadence; how far the reference lags the present
        (``guard``); the reference span; the window a recovery is judged on (at most ``guard``);
        lateness.
    min_ref_n : int
        Events the reference needs before the CUSUM runs.
    min_ref_span : float
        Seconds of event time from the series' first event to the end of its reference before
        the CUSUM runs (default a week: daily and weekly cycles are in the reference).
    min_rate : float
        The reference rate is taken as at least this (a series that never failed still gets a
        meaningful alternative: ``ratio * min_rate``).
    z : float
        The null rate in the likelihood ratio is the reference's upper confidence bound at
        ``z`` standard errors (Clopper-Pearson), so a reference estimated from few events
        cannot make false alarms likelier than the budget says.
    min_n, for_buckets, resolve_after, resolve_ratio
        Recovery: resolve after ``resolve_after`` consecutive evaluations at which the
        ``recovery`` window has ``min_n`` events, a rate below ``1 + resolve_ratio * (ratio - 1)``
        times the reference, and an upper bound (``z`` standard errors) below ``ratio`` times it.

    Notes
    -----
    H0: events are Bernoulli with the reference rate ``p0``. Increment ``g = x log(p1/p0u) +
    (1-x) log((1-p1)/(1-p0u))`` with ``p0u`` the upper bound of ``p0`` and ``p1`` the design
    alternative; ``E0[e^g] <= 1`` whenever the true rate is at most ``p0u``. Alarm when one of the
    CUSUMs (alternatives 1, 2 and 4 times the minimum effect, with 80 %, 10 % and 10 % of the
    budget) reaches its ``h_k = log(N / (w_k false_alarm_rate))``.
    """

    _params = ("ratio", "false_alarm_rate", "bucket", "guard", "baseline", "recovery", "lateness", "min_ref_n", "min_ref_span",
               "min_rate", "z", "min_n", "for_buckets", "resolve_after", "resolve_ratio")
    _state = BucketedDetector._state + _Cusum._cusum_state + ("p0", "p0u", "llr")

    _compact_from = 2  # counts and flags: float32 holds them exactly

    def __init__(self, ratio=2.0, false_alarm_rate=1e-4, bucket=3600.0, guard=2 * 86400.0,
                 baseline=14 * 86400.0, recovery=86400.0, lateness=600.0, min_ref_n=200, min_rate=0.005,
                 z=2.0, min_n=20, for_buckets=1, resolve_after=24, resolve_ratio=0.5, min_ref_span=7 * 86400.0):
        self.min_ref_span = float(min_ref_span)
        if not ratio > 1:
            raise ValueError(f"ratio must be > 1, got {ratio!r}")
        self.ratio, self.false_alarm_rate, self.bucket, self.guard = ratio, false_alarm_rate, bucket, guard
        self.baseline, self.lateness, self.min_ref_n, self.min_rate = baseline, lateness, int(min_ref_n), min_rate
        self.recovery, self.z, self.min_n = recovery, z, int(min_n)
        self.for_buckets, self.resolve_after, self.resolve_ratio = for_buckets, resolve_after, resolve_ratio
        self.statistic = "rate_ratio"
        self._init_cusum(bucket, guard, baseline, lateness, false_alarm_rate, z, min_ref_n, min_n,
                         for_buckets, resolve_after, resolve_ratio, (2,), recovery)
        self.p0 = np.zeros(0)
        self.p0u = np.zeros(0)
        self.llr = np.zeros((0, 2, len(self.alternatives)))

    def _grow_design(self, n):
        self.p0 = grow_rows(self.p0, n, 0.0)
        self.p0u = grow_rows(self.p0u, n, 0.0)
        self.llr = grow_rows(self.llr, n, 0.0)

    def _rows(self, x):
        return np.stack([np.ones_like(x), x], axis=1)

    def _increments(self, series, x):
        llr = self.llr[series]  # (n, 2, K): the increment for x = 0 and x = 1
        return np.where(x[:, None] > 0.5, llr[:, 1], llr[:, 0])

    def _design(self, series, b):
        n, k = self.agg.base_sum[series, 0], self.agg.base_sum[series, 1]
        ok = (n >= self.min_ref_n) & self._spans(series)
        p0 = np.where(n > 0, k / np.maximum(n, 1), 0.0)
        # Clopper-Pearson upper bound at the one-sided level of z standard normal errors
        level = special.ndtr(-self.z)
        p0u = np.where(k < n, special.betaincinv(k + 1, np.maximum(n - k, 1e-9), 1 - level), 1.0)
        p0u = np.maximum(p0u, p0)
        base = np.maximum(p0, self.min_rate)
        alts = np.exp(np.log(self.ratio) * np.asarray(self.alternatives))[None, :] * base[:, None]  # (G, K)
        p1 = np.minimum(alts, 0.999)
        on = ok[:, None] & (p1 > p0u[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            l1 = np.log(p1 / p0u[:, None])
            l0 = np.log((1 - p1) / (1 - p0u[:, None]))
        llr = np.stack([np.where(on, l0, 0.0), np.where(on, l1, 0.0)], axis=1)
        self.llr[series] = llr
        # drift under the bound p0u: KL(p0u || p1) per event (more negative still below it)
        q = p0u[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = -(q * l1 + (1 - q) * l0)
        self.drift[series] = np.where(on, np.nan_to_num(kl, nan=1.0, posinf=1.0), 1.0)
        self.design_ok[series] = on
        self.p0[series], self.p0u[series] = p0, p0u
        self.h[series] = np.where(ok, cusum_threshold(self._volume(series), self.false_alarm_rate), np.inf)

    def _reference(self, series):
        return self.agg.base_sum[series, 0], self.p0[series]

    def _effect(self, rate, ref):
        return np.divide(rate, np.maximum(ref, self.min_rate), out=np.full(rate.shape, np.nan),
                         where=np.isfinite(rate))

    def _min_effect(self):
        return self.ratio

    def _effect_upper(self, series, rate, n, ref):
        # Wilson upper bound of the rate since the change
        z = self.effect_z
        z2 = z * z
        k = np.nan_to_num(rate) * n
        with np.errstate(invalid="ignore", divide="ignore"):
            upper = (k + z2 / 2 + z * np.sqrt(np.maximum(k * (n - k) / np.maximum(n, 1), 0.0) + z2 / 4)) / (n + z2)
        return self._effect(np.where(n > 0, upper, np.nan), ref)

    def _clear(self, win_rate, win_n, ref):
        # recovered: the window's rate is near the reference, and even its upper bound (z
        # standard errors) is below the minimum effect, so noise in a thin window cannot end
        # an episode that is still going on
        with np.errstate(invalid="ignore", divide="ignore"):
            se = np.sqrt(np.maximum(win_rate * (1 - win_rate), 1e-12) / np.maximum(win_n, 1))
        upper = self._effect(win_rate + self.z * se, ref)
        return ((win_n >= self.min_n) & (self._effect(win_rate, ref) < 1 + self.resolve_ratio * (self.ratio - 1))
                & (upper < self.ratio))


class MeanCusum(_Cusum):
    """A drop of a mean on [0, 1] (higher is better) by at least ``threshold``, sequentially.

    Parameters
    ----------
    threshold : float
        Minimum effect: the mean at least ``threshold`` (relative, 0.05 = 5 %) below the
        reference mean. The CUSUMs are designed for 1, 2 and 4 times it.
    false_alarm_rate, bucket, guard, baseline, lateness, min_ref_n, min_ref_span, z, min_n,
    for_buckets, resolve_after, resolve_ratio
        As in :class:`RateCusum`; a recovery is a ``recovery`` window whose mean is less than
        ``resolve_ratio * threshold`` below the reference, and less than ``threshold`` below it
        even at its lower bound (``z`` standard errors).
    min_ref_n : int
        Default 300 (a rate's Clopper-Pearson bound is exact; a mean's tilted moment is not): a
        rare low tail such as 3 % zero scores from failed answers must be in the reference, or
        the moment's standard error cannot see it (a reference of 100 such scores has no zero
        one time in twenty).
    seasonal : bool
        Take the series' hour-of-day cycle out: the reference is kept per UTC hour, each
        value enters the CUSUM minus its hour's offset from the reference mean, and the
        reference moments are those of the adjusted values. The offsets are shrunk towards 0
        by how much of their spread the reference's noise explains (empirical Bayes), so a
        series without a cycle gets offsets near 0. Buckets longer than an hour blur it.

    Notes
    -----
    H0: values are drawn from the reference distribution, whatever its shape (a share of zeros
    from failed answers included). The increment is the exponentially tilted likelihood ratio
    ``g = -lambda x - log m(lambda)`` with ``m(lambda)`` the reference's ``E[e^(-lambda X)]``
    (its upper confidence bound), so ``E0[e^g] <= 1`` without assuming normality. ``lambda`` is
    the tilt closest (on a factor-2 grid) to the Gaussian-optimal ``delta / sigma^2`` for each
    design drop ``delta`` (1 and 2 times the minimum effect, with 90 % and 10 % of the budget),
    or the largest smaller one whose moment the reference estimates well (effective sample
    size ``n m_j^2 / m_(j+1)`` at least :data:`MIN_ESS`; a smaller tilt is still a valid test).
    Alarm when one of them reaches its ``h_k = log(N / (w_k false_alarm_rate))``.

    With ``seasonal``, hour ``j``'s offset is ``d_j = r_j tau^2 / (tau^2 + s^2 / n_j)`` with
    ``r_j`` the hour's raw difference from the reference mean, ``s^2`` the within-hour variance
    and ``tau^2`` the spread of the ``r_j`` beyond their noise; the offsets are centred (their
    count-weighted mean is 0), so the reference mean is unchanged. A level shift of the whole
    distribution by hour is removed exactly; the tilted moments are computed from the adjusted
    values, bucket by bucket (all values of a bucket share its hour).
    """

    _params = ("threshold", "false_alarm_rate", "bucket", "guard", "baseline", "recovery", "lateness",
               "min_ref_n", "min_ref_span", "z", "min_n", "for_buckets", "resolve_after", "resolve_ratio", "seasonal")
    alternatives = (1.0, 2.0)
    weights = (0.9, 0.1)
    _state = BucketedDetector._state + _Cusum._cusum_state + ("lam", "logm", "mu0", "sd0", "offset")

    _compact_from = 3  # count, sum, square in float32; the tilted moments as logs

    def __init__(self, threshold=0.05, false_alarm_rate=1e-4, bucket=3600.0, guard=2 * 86400.0,
                 baseline=14 * 86400.0, recovery=86400.0, lateness=600.0, min_ref_n=300, z=2.0, min_n=30,
                 for_buckets=1, resolve_after=24, resolve_ratio=0.5, seasonal=True, min_ref_span=7 * 86400.0):
        self.min_ref_span = float(min_ref_span)
        check_positive("threshold", threshold)
        self.seasonal = bool(seasonal)
        self.threshold, self.false_alarm_rate, self.bucket, self.guard = threshold, false_alarm_rate, bucket, guard
        self.baseline, self.lateness, self.min_ref_n, self.z = baseline, lateness, int(min_ref_n), z
        self.recovery = recovery
        self.min_n, self.for_buckets, self.resolve_after, self.resolve_ratio = int(min_n), for_buckets, resolve_after, resolve_ratio
        self.statistic = "pct_drop"
        self._init_cusum(bucket, guard, baseline, lateness, false_alarm_rate, z, min_ref_n, min_n,
                         for_buckets, resolve_after, resolve_ratio, (3 + len(LAMBDAS),), recovery,
                         phases=24 if self.seasonal else 0)
        k = len(self.alternatives)
        self.offset = np.zeros((0, 24))
        self.lam = np.zeros((0, k))
        self.logm = np.zeros((0, k))
        self.mu0 = np.zeros(0)
        self.sd0 = np.zeros(0)

    def _grow_design(self, n):
        self.lam = grow_rows(self.lam, n, 0.0)
        self.logm = grow_rows(self.logm, n, 0.0)
        self.mu0 = grow_rows(self.mu0, n, 0.0)
        self.offset = grow_rows(self.offset, n, 0.0)
        self.sd0 = grow_rows(self.sd0, n, 0.0)

    def _rows(self, x):
        x = np.clip(x, 0.0, 1.0)
        return np.column_stack([np.ones_like(x), x, x * x] + [np.exp(-lam * x) for lam in LAMBDAS])

    def _adjust(self, series, t, x):
        x = np.clip(x, 0.0, 1.0)
        if not self.seasonal:
            return x
        hour = (np.floor(np.mod(t, 86400.0) / 3600.0).astype(np.int64)) % 24
        return x - self.offset[series, hour]

    def _increments(self, series, x):
        return -self.lam[series] * x[:, None] - self.logm[series]

    def _seasonal_rows(self, series):
        """Reference rows of the hour-adjusted values, and the hour offsets (G, 24)."""
        ph = self.agg.phase_sum[series]  # (G, 24, R): the reference summed by UTC hour
        n_h, s_h, q_h = ph[..., 0], ph[..., 1], ph[..., 2]
        n = np.maximum(n_h.sum(axis=1), 1.0)
        mu = s_h.sum(axis=1) / n
        has = n_h >= 2
        with np.errstate(divide="ignore", invalid="ignore"):
            m_h = np.where(n_h > 0, s_h / np.maximum(n_h, 1e-300), mu[:, None])
            dof = np.maximum(n - (n_h > 0).sum(axis=1), 1.0)
            within = np.maximum((q_h - s_h * m_h).sum(axis=1), 0.0) / dof  # pooled within-hour variance
            raw = np.where(n_h > 0, m_h - mu[:, None], 0.0)
            se2 = np.where(has, within[:, None] / np.maximum(n_h, 1.0), np.inf)
            excess = np.where(has, raw * raw - se2, 0.0)
            tau2 = np.maximum(excess.sum(axis=1) / np.maximum(has.sum(axis=1), 1), 0.0)
            d = np.where(has, raw * tau2[:, None] / (tau2[:, None] + se2), 0.0)
        d = np.nan_to_num(d)
        d -= (n_h * d).sum(axis=1, keepdims=True) / n[:, None]  # centred: the reference mean stays
        rows = np.empty((ph.shape[0], ph.shape[2]))
        rows[:, 0] = n_h.sum(axis=1)
        rows[:, 1] = s_h.sum(axis=1) - np.einsum("gh,gh->g", n_h, d)
        rows[:, 2] = q_h.sum(axis=1) - 2.0 * np.einsum("gh,gh->g", s_h, d) + np.einsum("gh,gh->g", n_h, d * d)
        rows[:, 3:] = np.einsum("ghj,ghj->gj", ph[..., 3:], np.exp(d[..., None] * np.asarray(LAMBDAS)))
        return rows, d

    def _design(self, series, b):
        if self.seasonal:
            rows, self.offset[series] = self._seasonal_rows(series)
        else:
            rows = self.agg.base_sum[series]
        n = rows[:, 0]
        ok = (n >= self.min_ref_n) & self._spans(series)
        nn = np.maximum(n, 2)
        mu = rows[:, 1] / nn
        var = np.maximum(rows[:, 2] / nn - mu * mu, 1e-6) * nn / (nn - 1)
        m = rows[:, 3:] / nn[:, None]  # E[e^-lambda_j X], j = 0 .. J
        lam = np.asarray(LAMBDAS)
        # the sd of e^(-lambda_j X) uses E[e^(-2 lambda_j X)] = m_(j+1) on the factor-2 grid
        sd = np.sqrt(np.maximum(m[:, 1:] - m[:, :-1] ** 2, 0.0))
        mu_ucb = m[:, :-1] + self.z * sd / np.sqrt(nn)[:, None]
        want = (np.asarray(self.alternatives)[None, :] * self.threshold * mu[:, None]) / var[:, None]  # (G, K)
        j_want = np.clip(np.rint(np.log2(np.maximum(want, 1e-12)) + 1).astype(np.int64), 0, len(LAMBDAS) - 2)
        rr = np.arange(series.size)[:, None]
        # a tilt rests on the reference's low tail; where that tail is too thin to estimate
        # its moment (effective sample size n m_j^2 / m_(j+1) below MIN_ESS) a smaller tilt is
        # taken (still a valid test, a less efficient one); with none left the CUSUM is off
        with np.errstate(divide="ignore", invalid="ignore"):
            ess = nn[:, None] * m[:, :-1] ** 2 / m[:, 1:]  # (G, J - 1)
        good = ess >= MIN_ESS
        grid = np.arange(len(LAMBDAS) - 1)
        # of the tilts whose moment is well estimated, the one with the largest expected increment
        # under the design drop delta (a location shift): lambda delta - (lambda mu + log m(lambda)),
        # m at its upper bound. For Gaussian scores that is the grid value nearest delta / sigma^2
        # (``want``); for skewed ones (a mean near 1 with a long low tail) the reference's low tail
        # makes steep tilts costly, and the Gaussian choice can even drift the wrong way
        with np.errstate(divide="ignore", invalid="ignore"):
            d0 = lam[None, :-1] * mu[:, None] + np.log(np.maximum(mu_ucb, 1e-300))  # (G, J - 1)
        delta = np.asarray(self.alternatives)[None, :] * self.threshold * mu[:, None]  # (G, K)
        gain = lam[None, None, :-1] * delta[:, :, None] - d0[:, None, :]  # (G, K, J - 1)
        usable = good[:, None, :] & (grid[None, None, :] <= j_want[:, :, None] + 1)  # at most one step steeper
        score = np.where(usable, gain, -np.inf)
        j = np.argmax(score, axis=2)
        on = ok[:, None] & usable.any(axis=2)
        self.lam[series] = np.where(on, lam[j], 0.0)
        with np.errstate(divide="ignore"):
            self.logm[series] = np.where(on, np.log(np.maximum(mu_ucb[rr, j], 1e-300)), 0.0)
        self.design_ok[series] = on
        # drift under the reference: lambda mu + log m(lambda) >= 0 (Jensen), m at its upper bound
        self.drift[series] = np.where(on, self.lam[series] * mu[:, None] + self.logm[series], 1.0)
        self.mu0[series] = mu
        self.sd0[series] = np.sqrt(var)
        self.h[series] = np.where(ok, cusum_threshold(self._volume(series), self.false_alarm_rate), np.inf)

    def _reference(self, series):
        return self.agg.base_sum[series, 0], self.mu0[series]

    def _effect(self, mean, ref):
        return np.divide(ref - mean, np.abs(ref), out=np.full(mean.shape, np.nan),
                         where=np.isfinite(mean) & (np.abs(ref) > 0))

    def _min_effect(self):
        return self.threshold

    def _effect_upper(self, series, mean, n, ref):
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._effect(mean - self.effect_z * self.sd0[series] / np.sqrt(n), ref)

    def _clear(self, win_mean, win_n, ref):
        # recovered: the window's drop is small, and even at its lower confidence bound (z
        # standard errors) the drop stays below the minimum effect
        rows = self.agg.recent(np.asarray(self._clear_series), 0)
        n = np.maximum(rows[:, 0], 2)
        var = np.maximum(rows[:, 2] / n - (rows[:, 1] / n) ** 2, 0.0) * n / (n - 1)
        worst = self._effect(win_mean - self.z * np.sqrt(var / n), ref)
        return ((win_n >= self.min_n) & (self._effect(win_mean, ref) < self.resolve_ratio * self.threshold)
                & (worst < self.threshold))
