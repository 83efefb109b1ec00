"""Seeded, network-free workloads shared by the benchmarks."""

from __future__ import annotations

import numpy as np

DAY = 86400.0


def keyed_scores(n_series: int, days: int, per_series_per_day: int, seed: int = 0, shift_at: float | None = None):
    """Events of ``n_series`` score series in time order: ``(series, t, x)``.

    Scores are Beta(17, 3) (mean 0.85); with ``shift_at`` (fraction of the span) every tenth
    series moves to Beta(14, 6) from then on.
    """
    rng = np.random.default_rng(seed)
    n = n_series * days * per_series_per_day
    t = np.sort(rng.uniform(0, days * DAY, n))
    series = rng.integers(0, n_series, n)
    x = rng.beta(17, 3, n)
    if shift_at is not None:
        moved = (series % 10 == 0) & (t >= shift_at * days * DAY)
        x[moved] = rng.beta(14, 6, int(moved.sum()))
    return series.astype(np.int64), t, x


def flags(n_series: int, days: int, per_series_per_day: int, rate: float = 0.02, seed: int = 1):
    series, t, _ = keyed_scores(n_series, days, per_series_per_day, seed)
    rng = np.random.default_rng(seed + 100)
    return series, t, (rng.random(t.size) < rate).astype(np.float64)
