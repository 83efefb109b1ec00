"""Timeline pictures: score series with their baseline band and alert markers (matplotlib, PNG).

Used by ``drift demo`` and the notebook. Renders with the Agg canvas without touching pyplot's
global backend; matplotlib is imported lazily.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np

__all__ = ["Panel", "binned", "timeline_png", "RULE_COLORS"]

RULE_COLORS = {
    "quality_drop": "#d62728", "quality_shift": "#9467bd", "format_failure_spike": "#ff7f0e",
    "retrieval_drop": "#8c564b", "flag_rate_spike": "#e377c2", "query_centroid_shift": "#17becf",
    "prompt_change": "#2ca02c",
}


@dataclasses.dataclass
class Panel:
    """One subplot: a series over event time, an optional baseline band, and alert markers."""

    title: str
    t: np.ndarray  # Unix seconds
    y: np.ndarray
    ylabel: str = ""
    band: tuple[float, float] | None = None  # baseline mean ± spread, drawn as a band
    band_until: float | None = None  # the band covers the time before this (the baseline period)
    alerts: Sequence[dict] = ()  # alert CloudEvents for this series
    changes: Sequence[tuple[float, str]] = ()  # ground-truth change times and labels


def binned(t: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` per ``width``-second bin of ``t`` (bins without data are dropped)."""
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if t.size == 0:
        return t, y
    b = np.floor(t / width).astype(np.int64)
    b0 = b.min()
    idx = b - b0
    n = np.bincount(idx)
    s = np.bincount(idx, weights=y)
    keep = n > 0
    centres = (np.flatnonzero(keep) + b0 + 0.5) * width
    return centres, s[keep] / n[keep]


def _dates(t):
    return [dt.datetime.fromtimestamp(v, dt.UTC) for v in np.asarray(t, dtype=np.float64)]


def _parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def timeline_png(path: str, panels: Sequence[Panel], title: str = "") -> str:
    """Draw ``panels`` one above the other into a PNG at ``path``; return the path."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # the object API: no global backend switch, so notebooks keep displaying their own figures
    fig = Figure(figsize=(11, 2.4 * len(panels) + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        ax.plot(_dates(p.t), p.y, color="#1f77b4", lw=1.0, label="observed")
        if p.band is not None:
            lo, hi = p.band
            start = p.t.min() if len(p.t) else 0
            end = p.band_until if p.band_until is not None else (p.t.max() if len(p.t) else 0)
            ax.fill_between(_dates([start, end]), [lo, lo], [hi, hi], color="#1f77b4", alpha=0.12, lw=0,
                            label="baseline band")
        for when, label in p.changes:
            ax.axvline(_dates([when])[0], color="black", lw=1.0, ls="--")
            ax.annotate(label, (_dates([when])[0], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8)
        seen = set()
        for a in p.alerts:
            d = a["data"]
            if d["status"] not in ("firing", "info") or not d.get("starts_at"):
                continue
            when = _parse(d["starts_at"])
            color = RULE_COLORS.get(d["rule"], "gray")
            rule_label = d["rule"] if d["rule"] not in seen else None
            seen.add(d["rule"])
            ax.axvline(_dates([when])[0], color=color, lw=2.0, alpha=0.8, label=rule_label)
        ax.set_title(p.title, fontsize=10, loc="left")
        ax.set_ylabel(p.ylabel, fontsize=9)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="best", ncol=4, framealpha=0.8)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
