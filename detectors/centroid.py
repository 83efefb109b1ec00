"""Query-embedding drift: cosine distance between the rolling query centroid and a golden centroid.

The reference is a *golden set*: embeddings of the queries an application was built for, fixed
when it was built (``drift golden build``). Its centroid is the only thing this detector needs of
it. Each series (an app) keeps, per event-time bucket, the sum of its query vectors, the number
of queries and how many of them were *uncovered* (nearest golden neighbour less similar than
``coverage_sim``; the engine finds that neighbour with faiss and passes its similarity in).

Sums are kept in fixed point (``int64``, unit-vector components times 2**32), so they are exact:
the window sums, and therefore every finding, are the same whatever the batch sizes and
whatever the order of events inside a bucket. The quantisation step, 2.3e-10 per component, is
far below float32 resolution of the input vectors.

Examples
--------
Queries around one direction; from day 10 on, 60 % of them come from elsewhere:

>>> import numpy as np
>>> from detectors.centroid import CentroidShift
>>> rng = np.random.default_rng(1)
>>> dim, n = 16, 20_000
>>> t = np.sort(rng.uniform(0, 20 * 86400, n))
>>> home, away = np.eye(dim)[0], np.eye(dim)[1]
>>> moved = (t >= 10 * 86400) & (rng.random(n) < 0.6)
>>> v = np.where(moved[:, None], away, home) + rng.normal(0, 0.3, (n, dim))
>>> v /= np.linalg.norm(v, axis=1, keepdims=True)
>>> sim = v @ home  # stand-in for each query's nearest-golden similarity
>>> det = CentroidShift(centroid=home, dim=dim, window=2 * 86400)
>>> f = det.update_many(np.zeros(n, np.int64), t, np.column_stack([v, sim]))
>>> [(x.status, round(x.at / 86400, 2), round(x.value, 3)) for x in f]
[('firing', 11.29, 0.163)]
>>> round(f[0].extra["coverage"], 3)
0.522
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from detectors.base import check_positive
from detectors.bucketed import BucketedDetector, Evaluation, _buckets
from detectors.windows import WindowedAggregate

__all__ = ["CentroidShift", "cosine_distance", "FIXED_POINT_SCALE"]

FIXED_POINT_SCALE = 2.0 ** 32  # unit-vector components are summed as round(v * 2**32) in int64


_CHUNK = 1 << 20  # rows per call of the fixed-point sums: |sum| < 2**52, exact in float64
_BLOCK = 1024  # rows quantised at a time: the block stays in cache between its passes


def _fixed_point_group_sums(v, scale, slot):
    """Per distinct ``slot``: the sum of the rows ``rint(v * scale)``, as int64.

    Each term is an integer below 2**32 in magnitude held in float64, and at most 2**20 of them
    are summed, so every partial sum is exact whatever the order: the per-block sums below give
    the same integers as summing one event at a time. No BLAS (its thread pool stalls on a
    busy machine). Returns the sorted distinct slots and their sums.
    """
    slots, inv = np.unique(slot, return_inverse=True)
    sums = np.zeros((slots.size, v.shape[1]))
    buf = np.empty((min(_BLOCK, v.shape[0]), v.shape[1]))
    for lo in range(0, v.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, v.shape[0])
        q = buf[: hi - lo]
        np.multiply(v[lo:hi], scale[lo:hi, None], out=q)
        np.rint(q, out=q)
        g = inv[lo:hi]
        if (g == g[0]).all():
            sums[g[0]] += q.sum(axis=0)
            continue
        present = np.unique(g)
        if present.size <= 32:
            for k in present:
                sums[k] += q[g == k].sum(axis=0)
        else:
            order = np.argsort(g, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(g[order]) != 0])
            sums[present] += np.add.reduceat(q[order], starts, axis=0)
    return slots, sums.astype(np.int64)


def cosine_distance(sums: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``1 - cos`` between each row of ``sums`` and the unit vector ``unit`` (1 for zero rows).

    Row by row (no BLAS), so a row's value does not depend on the other rows.
    """
    s = np.asarray(sums, dtype=np.float64)
    dot = (s * unit).sum(axis=-1)
    norm = np.sqrt((s * s).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norm > 0, dot / norm, 0.0)
    return np.clip(1.0 - cos, 0.0, 2.0)


@dataclasses.dataclass
class _CentroidEvaluation(Evaluation):
    known: np.ndarray | None = None
    uncovered: np.ndarray | None = None
    coverage: np.ndarray | None = None
    null_q: np.ndarray | None = None
    null_n: np.ndarray | None = None


class CentroidShift(BucketedDetector):
    """Rolling query centroid moving away from the golden-set centroid.

    Parameters
    ----------
    centroid : array_like, shape (dim,)
        Golden-set centroid (any length; it is normalised). Kept as given (a tuple of floats)
        so the parameters stay plain data.
    dim : int
        Embedding dimension; ``update_many`` takes ``x`` of shape ``(n, dim + 1)``.
    bucket, window, lateness : float
        Seconds of event time: bucket width (evaluation cadence), rolling window (a multiple of
        ``bucket``) and allowed lateness.
    threshold : float
        Minimum cosine distance ``1 - cos(window centroid, golden centroid)`` to fire.
    min_n : int
        Minimum queries in the window, both to fire and to resolve. The default 200 keeps
        in-distribution noise far below ``threshold`` even for a diffuse golden set: on
        CLINC150 the distance of held-out in-domain windows reached 0.147 at 50 queries
        (golden resultant 0.33) but at most 0.042 at 200.
    coverage_sim : float
        A query is *covered* when its nearest golden neighbour has inner product (cosine, for
        unit vectors) at least this. Coverage is evidence in the finding, not a firing
        condition. The default 0.5 separates held-out queries of the golden set's own domains
        from new ones: on CLINC150 with all-MiniLM-L6-v2 and golden sets of two or three
        domains, 95-99.7 % of held-out in-domain queries are covered, 3-25 % of queries of
        other domains and 8-19 % of out-of-scope ones (``tests/test_embedding_drift.py``).
    golden_n : int
        Size of the golden set (reported as the reference's ``n``).
    short_windows : tuple of float
        Seconds (multiples of ``bucket``, shorter than ``window``): the most recent part of the
        window is also compared with the golden centroid on its own, with the same
        ``threshold`` and ``min_n``, so a shift fires once a short window is past it rather
        than once it has moved the whole window's centroid. The finding reports the window
        that fired (the full one first).
    for_buckets, resolve_after, resolve_ratio
        Hysteresis: fire after ``for_buckets`` consecutive hits; resolve after
        ``resolve_after`` consecutive evaluations with at least ``min_n`` queries and the
        distance below ``resolve_ratio * threshold`` in the window that raised the alert, and
        in every other window that has ``min_n`` queries.

    Notes
    -----
    ``x[:, :dim]`` are query vectors (normalised here, row by row; rows that are not finite
    or are zero are counted in ``invalid`` and ignored), ``x[:, dim]`` each query's
    nearest-golden similarity (NaN when unknown: such queries count for the centroid but not
    for coverage).

    H0: the window's queries are drawn from the golden set's distribution. The window centroid
    of ``n`` such queries is the golden centroid plus noise whose cosine distance shrinks like
    ``1/n`` (CLINC150, banking + credit_cards golden set: 99th percentile 0.050 at n = 50, 0.013
    at n = 200, 0.0032 at n = 800), so the fixed ``threshold`` is the effect-size rule and, with
    ``min_n`` queries or more, also far in the tail of H0. When a null distribution is given
    (:meth:`set_null`), each finding also reports the empirical p-value of the observed
    distance (``p_value``) and its quantile (``extra["null_quantile"]``); firing does not
    depend on them. That null is optimistic for large windows: held-out queries of the golden
    domains sit slightly further out than golden-set subsamples (0.011 against 0.007 at 200
    queries), so at 7-day volumes any window looks "unusual" and only the effect size decides.

    Sensitivity: the centroid moves slowly with the share of new queries. On CLINC150 a window
    needs 55-60 % of its queries from one or two new domains to reach a distance of 0.15 (about
    38 % for 0.05, 50 % for 0.10), and about 75 % when the new queries are diffuse
    (out-of-scope); coverage falls in proportion to the share from the start.

    The golden set is a fixed reference: there is no rolling baseline to freeze or reset.
    Memory per series is ``(window / bucket + ahead + 2 + len(short_windows)) * (dim + 3)``
    int64, about 0.54 MB for a 7-day window of hourly buckets of 384-dimensional vectors.
    """

    _params = ("centroid", "dim", "bucket", "window", "lateness", "threshold", "min_n",
               "coverage_sim", "golden_n", "short_windows", "for_buckets", "resolve_after",
               "resolve_ratio")
    _state = BucketedDetector._state + ("null_sizes", "null_dist", "invalid")
    _extra_state = ("agg",)

    def __init__(self, centroid, dim, bucket=3600.0, window=7 * 86400.0, lateness=600.0,
                 threshold=0.15, min_n=200, coverage_sim=0.5, golden_n=0, short_windows=(),
                 for_buckets=1, resolve_after=3, resolve_ratio=0.5):
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        c = np.asarray(centroid, dtype=np.float64).ravel()
        if c.shape != (int(dim),):
            raise ValueError(f"centroid has {c.size} components, expected dim={dim}")
        norm = float(np.sqrt((c * c).sum()))
        if not (math.isfinite(norm) and norm > 0):
            raise ValueError("centroid must be finite and non-zero")
        check_positive("threshold", threshold)
        if threshold > 2:
            raise ValueError(f"threshold is a cosine distance in (0, 2], got {threshold!r}")
        if isinstance(min_n, bool) or int(min_n) != min_n or min_n < 1:
            raise ValueError(f"min_n must be a positive integer, got {min_n!r}")
        if not (isinstance(coverage_sim, (int, float)) and -1 <= coverage_sim <= 1):
            raise ValueError(f"coverage_sim must be in [-1, 1], got {coverage_sim!r}")
        self.centroid = tuple(float(v) for v in c)
        self.dim = int(dim)
        self.bucket, self.window, self.lateness = bucket, window, lateness
        self.threshold, self.min_n, self.coverage_sim = threshold, int(min_n), coverage_sim
        self.golden_n = int(golden_n)
        self.for_buckets, self.resolve_after, self.resolve_ratio = for_buckets, resolve_after, resolve_ratio
        self._init_bucketed(bucket, lateness, for_buckets, resolve_after, resolve_ratio)
        self.statistic = "cosine_distance"
        self._unit = c / norm
        self._w = _buckets("window", window, bucket)
        self._width = self.dim + 3  # vector sum, count, similarity known, uncovered
        # baseline=1: the aggregate's baseline ring is unused (every close is "frozen")
        self.agg = WindowedAggregate(self._w, 1, self.clock.ahead, (self._width,), np.int64,
                                     recent=self._init_short_windows(short_windows, window, bucket))
        self.null_sizes = np.zeros(0)
        self.null_dist = np.zeros((0, 0))
        self.invalid = 0

    # -- the null distribution ---------------------------------------------------------------
    def set_null(self, sizes, distances) -> None:
        """Give the distances of in-distribution windows (e.g. ``GoldenSet.null_distances``).

        ``sizes``: window sizes (a number, or one per row); ``distances``: one row of null
        distances per size. A window of ``n`` queries is compared with the row of the nearest
        size (in log scale), its distances scaled by ``size / n`` (they shrink like ``1/n``).
        """
        sizes = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
        dist = np.asarray(distances, dtype=np.float64)
        if dist.ndim == 1:
            dist = dist[None, :]
        if sizes.ndim != 1 or dist.ndim != 2 or dist.shape[0] != sizes.size or dist.shape[1] < 1:
            raise ValueError("set_null needs one row of distances per window size")
        if not (np.all(np.isfinite(sizes)) and np.all(sizes >= 1)):
            raise ValueError("null window sizes must be finite and >= 1")
        if not (np.all(np.isfinite(dist)) and np.all(dist >= 0)):
            raise ValueError("null distances must be finite and >= 0")
        self.null_sizes = sizes.copy()
        self.null_dist = np.sort(dist, axis=1)

    def _null(self, n, dist):
        """Empirical p-value and quantile of ``dist`` for windows of ``n`` queries (NaN if no null)."""
        p = np.full(n.shape, np.nan)
        q = np.full(n.shape, np.nan)
        ref = np.full(n.shape, np.nan)
        if self.null_sizes.size == 0:
            return p, q, ref
        ok = (n > 0) & np.isfinite(dist)
        if not ok.any():
            return p, q, ref
        m = self.null_dist.shape[1]
        logn = np.log(np.maximum(n, 1.0))
        r = np.argmin(np.abs(logn[:, None] - np.log(self.null_sizes)[None, :]), axis=1)
        for k in np.unique(r[ok]):
            sel = ok & (r == k)
            eff = dist[sel] * n[sel] / self.null_sizes[k]  # the observed distance at the null's size
            below = np.searchsorted(self.null_dist[k], eff, side="left")
            p[sel] = (1.0 + (m - below)) / (1.0 + m)
            q[sel] = below / m
            ref[sel] = self.null_sizes[k]
        return p, q, ref

    # -- BucketedDetector hooks ----------------------------------------------------------------
    def update_many(self, series, t, x):
        x = np.asarray(x, dtype=np.float64)
        if np.asarray(series).size and (x.ndim != 2 or x.shape[1] != self.dim + 1):
            raise ValueError(f"x must have shape (n, dim + 1) = (n, {self.dim + 1}): unit vectors "
                             f"and the nearest-golden similarity; got {x.shape}")
        return super().update_many(series, t, x)

    def _ensure(self, n):
        self.agg.ensure(n)

    def _add(self, series, t, x):
        v = x[:, :self.dim]
        sim = x[:, self.dim]
        norm = np.sqrt(np.einsum("ij,ij->i", v, v))
        good = np.isfinite(norm) & (norm > 0)
        if not good.all():
            self.invalid += int((~good).sum())
            series, t, v, sim, norm = series[good], t[good], v[good], sim[good], norm[good]
            if series.size == 0:
                return
        slot = series * self.agg.cap + self.clock.bucket_of(t) % self.agg.cap
        known = np.isfinite(sim)
        uncovered = known & (sim < self.coverage_sim)
        flat = self.agg.ring.reshape(-1, self._width)
        for lo in range(0, series.size, _CHUNK):
            hi = min(lo + _CHUNK, series.size)
            slots, sums = _fixed_point_group_sums(v[lo:hi], FIXED_POINT_SCALE / norm[lo:hi], slot[lo:hi])
            inv = np.searchsorted(slots, slot[lo:hi])
            flat[slots, :self.dim] += sums
            flat[slots, self.dim] += np.bincount(inv, minlength=slots.size)
            flat[slots, self.dim + 1] += np.bincount(inv, weights=known[lo:hi], minlength=slots.size).astype(np.int64)
            flat[slots, self.dim + 2] += np.bincount(inv, weights=uncovered[lo:hi], minlength=slots.size).astype(np.int64)

    def _close(self, series, b, frozen):
        self.agg.close(series, b, np.ones(series.size, bool))

    def _evaluate(self, series, b) -> Evaluation:
        d = self.dim
        end = float(self.clock.bucket_end(b))
        windows = self._windows(series)
        sides = []
        for k, win in windows:
            n = win[:, d].astype(np.float64)
            dist = np.where(n > 0, cosine_distance(win[:, :d], self._unit), np.nan)
            enough = n >= self.min_n
            gone = dist < self.resolve_ratio * self.threshold
            sides.append({"hit": enough & (dist >= self.threshold), "n": n, "dist": dist,
                          "clear": enough & gone, "quiet": ~enough,
                          "known": win[:, d + 1].astype(np.float64),
                          "unc": win[:, d + 2].astype(np.float64), "start": end - k * self.clock.bucket})
        hit = np.logical_or.reduce([sd["hit"] for sd in sides])
        chosen = np.argmax(np.stack([sd["hit"] for sd in sides]), axis=0)  # first that fired, else full
        clear = self._windows_clear(series, hit, chosen, [sd["clear"] for sd in sides],
                                    [sd["quiet"] for sd in sides])
        pick = self._picker(sides, chosen)
        n, dist, known, unc = pick("n"), pick("dist"), pick("known"), pick("unc")
        with np.errstate(invalid="ignore", divide="ignore"):
            coverage = np.where(known > 0, (known - unc) / known, np.nan)
        p, q, ref = self._null(n, dist)
        return _CentroidEvaluation(
            hit=hit, clear=clear, value=dist, p_value=p, win_start=pick("start"),
            win_end=np.full(series.size, end), win_n=n, win_value=coverage,
            ref_n=np.full(series.size, float(self.golden_n)), ref_value=np.ones(series.size),
            ref_kind=np.zeros(series.size, np.int64), threshold=self.threshold,
            statistic=self.statistic, known=known, uncovered=unc, coverage=coverage,
            null_q=q, null_n=ref)

    def _reference_span(self, s, kind):
        return np.nan, np.nan  # the golden set has no event-time span

    def _finding(self, s, status, at, ep, ev, j):
        f = super()._finding(s, status, at, ep, ev, j)

        def num(v):
            v = float(v)
            return None if math.isnan(v) else v

        cov = num(ev.coverage[j])
        extra = {"coverage": cov, "uncovered_share": None if cov is None else 1.0 - cov,
                 "coverage_sim": float(self.coverage_sim), "uncovered": int(ev.uncovered[j]),
                 "similarity_known": int(ev.known[j])}
        if self.null_sizes.size:
            extra.update(null_p_value=num(ev.p_value[j]), null_quantile=num(ev.null_q[j]),
                         null_window_n=num(ev.null_n[j]))
        return dataclasses.replace(f, reference_kind="golden", extra=extra)

    def reset_baseline(self, series) -> None:
        """Nothing to reset: the reference is the golden set (rebuild it to change it)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "centroid")
        return f"CentroidShift(centroid=<{self.dim} floats>, {args})"
