"""``drift gate RUN [--baseline RUN]``: a golden-set gate for CI.

Compares a candidate evaluation run (per-item scores, one column per metric) with absolute floors
(``--min METRIC=VALUE``) and, optionally, with a baseline run of the same items, paired by item id
(``--baseline RUN --max-drop PCT``). Exit 0 when every metric passes, 1 when one fails, 2 on bad
input.

Input
-----
* CSV (header row) or JSONL (one object per line), by extension (``.csv``; ``.jsonl``,
  ``.ndjson``, ``.json``); otherwise, and for ``-`` (stdin), the first non-blank character
  decides (``{``: JSONL).
* ``id`` (required, unique within a run), optional ``slice``, and every other column is a metric
  (``metrics=`` restricts the metrics to those named; other columns are then ignored).
* A value is a number (also a numeric string; ``true``/``false`` are 1/0). An empty cell, a JSON
  ``null`` or a JSONL row without the key means "not scored": such an item is reported like a
  missing item for that metric. Anything else (text, NaN, infinity, a list) is bad input.
* Streaming: rows are read one at a time into one ``array('d')`` per metric (NaN: not scored),
  one slice code per row and the ids; the statistics are vectorised numpy/scipy.

Statistics (per metric, and per slice)
--------------------------------------
* ``mean``: the candidate's mean over the items it scored, with ``mean_ci``, a Student-t interval
  at ``confidence``; ``baseline_mean``: the baseline's mean over the items it scored.
* Paired comparison on the items both runs scored (``n_paired``): ``d = candidate - baseline``;
  ``effect`` = mean of ``d`` (metric units; negative = the candidate is lower), ``effect_pct`` =
  ``100 * effect / |paired baseline mean|``; ``ci_low``/``ci_high`` = the Student-t interval of
  the mean paired difference at ``confidence`` (``ci_pct``: the same in percent of the paired
  baseline mean, which is held fixed). Without missing items the paired means are ``mean`` and
  ``baseline_mean``.
* ``p_value``: one-sided paired test of "candidate lower": the Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon(d, alternative="less")``, zeros dropped, scipy's default method: the
  exact null distribution up to 50 items without ties or zeros, an exact permutation over all sign
  flips up to 13 items with them, otherwise the normal approximation with continuity correction),
  or with ``test="sign"`` the sign test (``binomtest(#d<0, #d!=0, 0.5, "greater")``); both are
  reported (``p_wilcoxon``, ``p_sign``). With no non-zero difference the p-value is 1.

Fail rules
----------
* Floor: the metric fails when its point ``mean`` is below the floor (``mean_ci`` is reported
  beside it; a floor is what users state as "faithfulness falls below 0.85").
* Regression: the metric fails when the relative drop of the paired mean exceeds ``max_drop`` %
  AND the one-sided paired test is significant (``p_value < alpha``): a large drop that noise on a
  small golden set explains does not fail a build, nor does a tiny but significant one.
* A metric the candidate scored on no item fails; so does one with a baseline but no paired item.
  A metric the baseline lacks altogether is checked against its floor only (noted).
* ``require_all``: any missing or not-scored item (either side) fails the metric.
* Slices (a ``slice`` column; an item's slice is the candidate's, the baseline's for items only
  the baseline has) get the same statistics and verdicts; they fail the metric only with
  ``gate_slices`` (otherwise they are reported, small slices being noisy).

Bad input (:class:`GateError`, exit 2) names the file, line and column/field.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import sys
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np
from scipy import stats

from drift.tools.tabular import jsonl_rows, open_lines

__all__ = [
    "GateError",
    "Run",
    "read_run",
    "parse_floor",
    "gate",
    "render_table",
    "render_markdown",
    "render_junit",
    "run",
]

_RESERVED = ("id", "slice")
N_IDS = 5
"""How many ids of missing items are shown."""


class GateError(ValueError):
    """Bad input: a one-line message naming the file, line and column/field."""


@dataclasses.dataclass
class Run:
    """One evaluation run as read: ids in file order, one float array per metric (NaN: not scored)."""

    source: str
    ids: list[str]
    index: dict[str, int]  # id -> row
    values: dict[str, np.ndarray]  # metric -> float64, one per row
    slices: np.ndarray  # int code per row (-1: no slice)
    slice_names: list[str]
    has_slice: bool


def _open(path: str) -> tuple[Iterator[str], str, IO[str] | None]:
    return open_lines(path, GateError)


def _csv_rows(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise GateError(f"{where}: empty input (no header row)")
    header = [h.strip() for h in header]
    if "id" not in header:
        raise GateError(f"{where}, line 1: no `id` column (columns: {', '.join(header) or 'none'})")
    seen: set[str] = set()
    for i, h in enumerate(header, 1):
        if not h:
            raise GateError(f"{where}, line 1, column {i}: empty column name")
        if h in seen:
            raise GateError(f"{where}, line 1, column {h}: duplicate column name")
        seen.add(h)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise GateError(f"{where}, line {reader.line_num}: {len(row)} fields for {len(header)} columns")
        yield reader.line_num, dict(zip(header, row))


def _jsonl_rows(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return jsonl_rows(lines, where, GateError)


def _number(raw: Any) -> float:
    """A cell as a float; NaN for "not scored" (empty, null); ValueError when not a number."""
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            return math.nan
        low = text.lower()
        if low in ("true", "false"):
            return float(low == "true")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    else:
        raise ValueError(f"{json.dumps(raw)[:40]} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number (leave it empty for not scored)")
    return value


def _item_id(raw: Any) -> str:
    if raw is None or isinstance(raw, bool | dict | list):
        raise ValueError("missing id" if raw is None else f"{json.dumps(raw)[:40]} is not an id")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = str(raw).strip()
    if not text:
        raise ValueError("empty id")
    return text


def read_run(path: str, metrics: Sequence[str] | None = None) -> Run:
    """Read one run (``-``: stdin) row by row.

    ``metrics``: only these columns are metrics (the others are ignored); default: every column
    but ``id`` and ``slice``.

    Raises
    ------
    GateError
        On bad input; the message names the file, the line and the column (CSV) or field (JSONL).
    """
    lines, fmt, handle = _open(path)
    where = "<stdin>" if path == "-" else path
    kind = "column" if fmt == "csv" else "field"
    wanted = set(metrics) if metrics else None
    ids: list[str] = []
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    values: dict[str, array] = {}
    slices = array("i")
    slice_codes: dict[str, int] = {}
    has_slice = False
    n = 0
    try:
        rows = _csv_rows(lines, where) if fmt == "csv" else _jsonl_rows(lines, where)
        for line_no, row in rows:
            column = "id"
            try:
                item = _item_id(row.get("id"))
                if item in index:
                    raise ValueError(f"duplicate id {item!r} (first on line {first_line[item]})")
                column = "slice"
                raw_slice = row.get("slice")
                if raw_slice is not None:
                    has_slice = True
                    if isinstance(raw_slice, dict | list):
                        raise ValueError(f"{json.dumps(raw_slice)[:40]} is not a slice name")
                    name = str(raw_slice).strip()
                    code = slice_codes.setdefault(name, len(slice_codes)) if name else -1
                else:
                    code = -1
                for column, raw in row.items():
                    if column in _RESERVED or (wanted is not None and column not in wanted):
                        continue
                    column = str(column)
                    value = _number(raw)
                    col = values.get(column)
                    if col is None:  # a metric first seen on this row: earlier rows did not score it
                        col = values[column] = array("d", itertools.repeat(math.nan, n))
                    col.append(value)
            except ValueError as exc:
                raise GateError(f"{where}, line {line_no}, {kind} {column}: {exc}") from None
            index[item] = n
            first_line[item] = line_no
            ids.append(item)
            slices.append(code)
            n += 1
            for col in values.values():  # metrics this row lacks (JSONL): not scored
                if len(col) < n:
                    col.append(math.nan)
    finally:
        if handle is not None:
            handle.close()
    if n == 0:
        raise GateError(f"{where}: empty input (no rows)")
    return Run(source=where, ids=ids, index=index,
               values={m: np.frombuffer(c, dtype=np.float64).copy() for m, c in values.items()},
               slices=np.frombuffer(slices, dtype=np.int32).astype(np.int64), slice_names=list(slice_codes),
               has_slice=has_slice)


def parse_floor(text: str) -> tuple[str, float]:
    """``METRIC=VALUE`` as ``(metric, value)``; :class:`GateError` when malformed.

    >>> parse_floor("faithfulness=0.85")
    ('faithfulness', 0.85)
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    try:
        floor = float(value)
    except ValueError:
        floor = math.nan
    if not sep or not name or not math.isfinite(floor):
        raise GateError(f"--min {text!r}: give METRIC=VALUE with a finite number, e.g. faithfulness=0.85")
    return name, floor


@dataclasses.dataclass(frozen=True)
class _Settings:
    floors: dict[str, float]
    max_drop: float
    alpha: float
    test: str
    confidence: float
    require_all: bool
    gate_slices: bool


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _t_interval(x: np.ndarray, confidence: float) -> list[float] | None:
    """Student-t interval of the mean of ``x``; None below 2 values."""
    n = x.size
    if n < 2:
        return None
    m = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return [m - half, m + half]


_PERMUTATION_MAX = 13  # scipy's "auto" enumerates all 2**n sign flips up to here when there are ties or zeros


def _wilcoxon_less(d: np.ndarray) -> float:
    """``scipy.stats.wilcoxon(d, alternative="less").pvalue``, the small tied case vectorised.

    With ties or zeros among at most 13 differences scipy's default is an exact permutation test
    over all sign flips, run one resample at a time (~0.4 s each on 10 items); here the same null
    distribution of the positive rank sum is one matrix product over the ``2**k`` sign vectors of
    the ``k`` non-zero differences (flipping a zero changes nothing, so the share is the same).
    Rank sums are multiples of 0.5, exact in float64, so the p-value is scipy's exactly.
    """
    nonzero = d[d != 0]
    k = nonzero.size
    ranks = stats.rankdata(np.abs(nonzero))  # average ranks of ties, as scipy
    tied = np.unique(ranks).size < k
    if d.size > _PERMUTATION_MAX or not (tied or k < d.size):
        return float(stats.wilcoxon(d, alternative="less").pvalue)
    observed = float(ranks[nonzero > 0].sum())
    flips = (np.arange(2**k)[:, None] >> np.arange(k)) & 1  # every assignment of signs, 1 = positive
    null = flips.astype(np.float64) @ ranks
    return float(np.count_nonzero(null <= observed + abs(1e-14 * observed)) / 2**k)


def paired_p_values(d: np.ndarray) -> tuple[float, float]:
    """One-sided p-values of "candidate lower" from the paired differences ``d``: (Wilcoxon, sign).

    Both are 1 when no difference is non-zero (nothing shows the candidate lower).
    """
    below = int(np.count_nonzero(d < 0))
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return 1.0, 1.0
    p_w = _wilcoxon_less(d)
    p_s = float(stats.binomtest(below, nonzero, 0.5, alternative="greater").pvalue)
    return p_w, p_s


def _missing(ids: np.ndarray, mask: np.ndarray, absent: np.ndarray) -> dict[str, Any]:
    where = np.flatnonzero(mask)
    return {"n": int(where.size), "absent": int(np.count_nonzero(absent[where])),
            "not_scored": int(np.count_nonzero(~absent[where])), "ids": [str(i) for i in ids[where[:N_IDS]]]}


def _entry(metric: str, cand: np.ndarray, base: np.ndarray | None, in_c: np.ndarray, in_b: np.ndarray | None,
           ids: np.ndarray, settings: _Settings, in_base_run: bool, in_cand_run: bool) -> dict[str, Any]:
    """Statistics and verdict of one metric over one set of items (all, or one slice)."""
    scored_c = np.isfinite(cand)
    x = cand[scored_c]
    floor = settings.floors.get(metric)
    out: dict[str, Any] = {"verdict": "pass", "n": int(x.size), "mean": _f(x.mean()) if x.size else None,
                           "mean_ci": _t_interval(x, settings.confidence), "baseline_mean": None,
                           "effect": None, "effect_pct": None, "ci_low": None, "ci_high": None, "ci_pct": None,
                           "p_value": None, "p_wilcoxon": None, "p_sign": None, "n_paired": None, "floor": floor}
    reasons: list[str] = []
    notes: list[str] = []
    if not in_cand_run:
        reasons.append("not in the candidate run")
    elif x.size == 0:
        reasons.append("no item scored in the candidate")
    if floor is not None and x.size and out["mean"] < floor:
        reasons.append(f"mean {out['mean']:.4g} below the floor {floor:g}")
    missing: dict[str, Any] = {}
    if base is not None and in_b is not None:
        out["max_drop"] = settings.max_drop
        out["alpha"] = settings.alpha
        out["test"] = settings.test
        scored_b = np.isfinite(base)
        y_all = base[scored_b]
        out["baseline_mean"] = _f(y_all.mean()) if y_all.size else None
        both = scored_c & scored_b
        out["n_paired"] = int(np.count_nonzero(both))
        missing["candidate"] = _missing(ids, scored_b & ~scored_c, ~in_c)
        missing["baseline"] = _missing(ids, scored_c & ~scored_b, ~in_b)
        if not in_base_run:
            notes.append("not in the baseline run: regression not checked")
        elif out["n_paired"] == 0:
            reasons.append("no item scored in both runs")
        else:
            xc, yb = cand[both], base[both]
            d = xc - yb
            effect = float(d.mean())
            ref = float(yb.mean())
            out["paired_mean"], out["paired_baseline_mean"] = float(xc.mean()), ref
            out["effect"] = effect
            ci = _t_interval(d, settings.confidence)
            if ci is not None:
                out["ci_low"], out["ci_high"] = ci
            if ref != 0:
                out["effect_pct"] = 100.0 * effect / abs(ref)
                if ci is not None:
                    out["ci_pct"] = [100.0 * c / abs(ref) for c in ci]
            p_w, p_s = paired_p_values(d)
            out["p_wilcoxon"], out["p_sign"] = p_w, p_s
            p = p_w if settings.test == "wilcoxon" else p_s
            out["p_value"] = p
            # a zero baseline mean has no relative drop: any drop counts as exceeding --max-drop
            drop = -out["effect_pct"] if out["effect_pct"] is not None else (math.inf if effect < 0 else 0.0)
            if drop > settings.max_drop and p < settings.alpha:
                shown = f"{drop:.1f}%" if math.isfinite(drop) else "from a zero mean"
                reasons.append(f"drop {shown} > {settings.max_drop:g}% and p={p:.3g} < {settings.alpha:g} "
                               f"({settings.test})")
    else:
        missing["candidate"] = _missing(ids, in_c & ~scored_c, ~in_c)
    out["missing"] = missing
    n_missing = sum(m["n"] for m in missing.values())
    if settings.require_all and n_missing:
        reasons.append(f"{n_missing} item(s) missing or not scored (--require-all)")
    out["reasons"] = reasons
    if notes:
        out["notes"] = notes
    if reasons:
        out["verdict"] = "fail"
    return out


def gate(candidate: Run, baseline: Run | None = None, *, floors: dict[str, float] | None = None,
         max_drop: float = 0.0, alpha: float = 0.05, test: str = "wilcoxon", confidence: float = 0.95,
         require_all: bool = False, gate_slices: bool = False) -> dict[str, dict[str, Any]]:
    """The report: an object keyed by metric (see the module docstring for the keys and rules).

    Raises
    ------
    GateError
        A floor names a metric neither run has; a setting is out of range.
    """
    floors = dict(floors or {})
    if not 0 < alpha < 1:
        raise GateError(f"--alpha must be between 0 and 1, got {alpha:g}")
    if not 0 < confidence < 1:
        raise GateError(f"--confidence must be between 0 and 1, got {confidence:g}")
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise GateError(f"--max-drop must be a percentage >= 0, got {max_drop:g}")
    if test not in ("wilcoxon", "sign"):
        raise GateError(f"--test must be wilcoxon or sign, got {test!r}")
    metrics = list(candidate.values) + [m for m in (baseline.values if baseline else {}) if m not in candidate.values]
    for name in floors:
        if name not in metrics:
            raise GateError(f"--min {name}: no such metric in {candidate.source} "
                            f"(metrics: {', '.join(metrics) or 'none'})")
    settings = _Settings(floors, max_drop, alpha, test, confidence, require_all, gate_slices)
    # the items: the candidate's rows, then the baseline's rows the candidate lacks
    n_c = len(candidate.ids)
    if baseline is not None:
        partner = np.fromiter((baseline.index.get(i, -1) for i in candidate.ids), dtype=np.int64, count=n_c)
        only_b = np.ones(len(baseline.ids), dtype=bool)
        only_b[partner[partner >= 0]] = False
        extra = np.flatnonzero(only_b)
        rows_b = np.concatenate([partner, extra])
    else:
        extra = np.zeros(0, dtype=np.int64)
        rows_b = np.full(n_c, -1, dtype=np.int64)
    n_items = n_c + extra.size
    ids = np.array(candidate.ids + ([baseline.ids[j] for j in extra] if baseline is not None else []), dtype=object)
    rows_c = np.concatenate([np.arange(n_c), np.full(extra.size, -1)])
    in_c = rows_c >= 0
    in_b = rows_b >= 0 if baseline is not None else None
    # slices by name: the candidate's, else the baseline's
    names = list(candidate.slice_names)
    if baseline is not None:
        names += [s for s in baseline.slice_names if s not in names]
    lookup = {s: k for k, s in enumerate(names)}
    slice_of = np.full(n_items, -1, dtype=np.int64)
    slice_of[:n_c] = candidate.slices
    if baseline is not None and extra.size:
        recode = np.array([lookup[s] for s in baseline.slice_names] + [-1], dtype=np.int64)
        slice_of[n_c:] = recode[baseline.slices[extra]]  # -1 indexes the trailing -1
    has_slice = candidate.has_slice or (baseline is not None and baseline.has_slice)

    def column(run: Run | None, rows: np.ndarray, metric: str) -> np.ndarray | None:
        if run is None:
            return None
        out = np.full(n_items, np.nan)
        src = run.values.get(metric)
        if src is not None:
            ok = rows >= 0
            out[ok] = src[rows[ok]]
        return out

    report: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        c = column(candidate, rows_c, metric)
        assert c is not None
        b = column(baseline, rows_b, metric)
        in_base_run = baseline is not None and metric in baseline.values
        in_cand_run = metric in candidate.values
        entry = _entry(metric, c, b, in_c, in_b, ids, settings, in_base_run, in_cand_run)
        if has_slice:
            sub: dict[str, Any] = {}
            order = sorted(range(len(names)), key=lambda k: names[k])
            groups = [(names[k], slice_of == k) for k in order]
            if np.any(slice_of < 0):
                groups.append(("(none)", slice_of < 0))
            for name, mask in groups:
                e = _entry(metric, c[mask], None if b is None else b[mask], in_c[mask],
                           None if in_b is None else in_b[mask], ids[mask], settings, in_base_run, in_cand_run)
                e["gated"] = gate_slices
                sub[name] = e
            failed = [s for s, e in sub.items() if e["verdict"] == "fail"]
            if gate_slices and failed:
                entry["reasons"].append(f"slice(s) failing: {', '.join(failed)} (--gate-slices)")
                entry["verdict"] = "fail"
            entry["slices"] = sub
        report[metric] = entry
    return report


# ---------------------------------------------------------------- output


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def _ci(e: dict[str, Any], with_baseline: bool) -> str:
    if with_baseline:
        c = e.get("ci_pct")
        return "-" if c is None else f"[{c[0]:+.1f}%, {c[1]:+.1f}%]"
    c = e.get("mean_ci")
    return "-" if c is None else f"[{c[0]:.3f}, {c[1]:.3f}]"


def _rows(report: dict[str, dict[str, Any]], with_baseline: bool) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(metric, slice, entry, gated) in display order."""
    out = []
    for metric, e in report.items():
        out.append((metric, "all", e, True))
        for name, s in e.get("slices", {}).items():
            out.append((metric, name, s, bool(s.get("gated"))))
    return out


def _verdict_text(e: dict[str, Any], gated: bool) -> str:
    v = "FAIL" if e["verdict"] == "fail" else "pass"
    return v if gated else f"({v.lower()})"


def render_table(report: dict[str, dict[str, Any]], with_baseline: bool) -> str:
    """The report as an aligned text table: one row per metric, its slices below it."""
    ci_head = "effect 95% CI" if with_baseline else "mean 95% CI"
    head = ("metric", "slice", "n", "mean", "baseline", "effect", ci_head, "p", "floor", "verdict")
    rows: list[tuple[str, ...]] = [head]
    for metric, name, e, gated in _rows(report, with_baseline):
        rows.append((metric if name == "all" else "", name if name == "all" else f"  {name}", str(e["n"]),
                     _num(e["mean"]), _num(e["baseline_mean"]), _pct(e["effect_pct"]), _ci(e, with_baseline),
                     _p(e["p_value"]), "-" if e["floor"] is None else f"{e['floor']:g}", _verdict_text(e, gated)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {2, 3, 4, 5, 7, 8}
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def _missing_lines(report: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for metric, e in report.items():
        for side, m in e["missing"].items():
            if m["n"]:
                what = ("scored in the baseline, not in the candidate" if side == "candidate" and "baseline" in e["missing"]
                        else "in the candidate run but not scored" if side == "candidate"
                        else "scored in the candidate, not in the baseline")
                more = " …" if m["n"] > len(m["ids"]) else ""
                lines.append(f"{metric}: {m['n']} item(s) {what} ({m['absent']} absent, {m['not_scored']} not scored): "
                             f"{', '.join(m['ids'])}{more}")
    return lines


def _rule(settings: dict[str, Any]) -> str:
    parts = []
    if settings.get("baseline"):
        parts.append(f"regression: fail when the paired mean drops more than {settings['max_drop']:g}% AND the "
                     f"one-sided {settings['test']} test gives p < {settings['alpha']:g}")
    if settings.get("floors"):
        parts.append("floors: fail when the mean is below " +
                     ", ".join(f"{m} {v:g}" for m, v in settings["floors"].items()))
    return "; ".join(parts) or "no floor and no baseline: nothing is gated"


def _failures(report: dict[str, dict[str, Any]]) -> list[str]:
    return [m for m, e in report.items() if e["verdict"] == "fail"]


def render_markdown(report: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    """A Markdown summary (for ``$GITHUB_STEP_SUMMARY``): a headline, the rule, a ✅/❌ table."""
    with_baseline = bool(settings.get("baseline"))
    failed = _failures(report)
    head = (f"### drift gate: ❌ {len(failed)} of {len(report)} metric(s) fail: {', '.join(failed)}" if failed
            else f"### drift gate: ✅ all {len(report)} metric(s) pass")
    cand = f"`{settings['candidate']}`" + (f" vs baseline `{settings['baseline']}`" if with_baseline else "")
    lines = [head, "", f"{cand}. {_rule(settings)}.", "",
             "| metric | slice | n | mean | baseline mean | effect | " + ("effect 95% CI" if with_baseline else "mean 95% CI")
             + " | p | floor | verdict |", "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for metric, name, e, gated in _rows(report, with_baseline):
        mark = "❌" if e["verdict"] == "fail" else "✅"
        verdict = f"{mark} {e['verdict']}" + ("" if gated else " (not gated)")
        why = f" ({'; '.join(e['reasons'])})" if e["reasons"] and gated else ""
        lines.append(f"| {metric} | {name} | {e['n']} | {_num(e['mean'])} | {_num(e['baseline_mean'])} | "
                     f"{_pct(e['effect_pct'])} | {_ci(e, with_baseline)} | {_p(e['p_value'])} | "
                     f"{'-' if e['floor'] is None else format(e['floor'], 'g')} | {verdict}{why} |")
    missing = _missing_lines(report)
    if missing:
        lines += ["", "Missing items:", ""] + [f"- {m}" for m in missing]
    return "\n".join(lines) + "\n"


def render_junit(report: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    """JUnit XML: one testsuite "drift gate", one testcase per metric and per metric/slice.

    A gated failure is a ``<failure message=...>``; the numbers are in ``<system-out>``. Slices that
    are not gated (no ``--gate-slices``) never fail; their verdict is in their ``<system-out>``.
    """
    rows = _rows(report, bool(settings.get("baseline")))
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="drift gate", tests=str(len(rows)), errors="0", skipped="0",
                          failures=str(sum(1 for _, _, e, g in rows if g and e["verdict"] == "fail")), time="0")
    props = ET.SubElement(suite, "properties")
    for key in ("candidate", "baseline", "max_drop", "alpha", "test", "confidence", "require_all", "gate_slices"):
        if settings.get(key) is not None:
            ET.SubElement(props, "property", name=key, value=str(settings[key]))
    for metric, floor in (settings.get("floors") or {}).items():
        ET.SubElement(props, "property", name=f"floor.{metric}", value=f"{floor:g}")
    for metric, name, e, gated in rows:
        case = ET.SubElement(suite, "testcase", classname="drift gate", name=metric if name == "all" else f"{metric}/{name}",
                             time="0")
        if gated and e["verdict"] == "fail":
            failure = ET.SubElement(case, "failure", message="; ".join(e["reasons"]), type="drift.gate")
            failure.text = "; ".join(e["reasons"])
        numbers = {k: e.get(k) for k in ("verdict", "n", "mean", "mean_ci", "baseline_mean", "n_paired", "effect",
                                         "effect_pct", "ci_low", "ci_high", "p_value", "p_wilcoxon", "p_sign", "floor")}
        text = "\n".join(f"{k}={json.dumps(v)}" for k, v in numbers.items())
        text += f"\nmissing={json.dumps(e['missing'])}"
        if not gated:
            text += "\ngated=false (slices fail the metric only with --gate-slices)"
        if e["reasons"]:
            text += "\nreasons=" + "; ".join(e["reasons"])
        ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _write(path: str, text: str, out: IO[str], append: bool = False) -> None:
    if path == "-":
        out.write(text)
        return
    try:
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise GateError(f"{path}: cannot write ({exc.strerror})") from None


def run(candidate: str, *, baseline: str | None = None, floors: Sequence[str] = (), max_drop: float | None = None,
        alpha: float = 0.05, test: str = "wilcoxon", confidence: float = 0.95, metrics: Sequence[str] | None = None,
        require_all: bool = False, gate_slices: bool = False, as_json: bool = False, junit: str | None = None,
        markdown: str | None = None, out: IO[str] | None = None) -> int:
    """Read, compare, report; the exit code of ``drift gate`` (0 every metric passes, 1 one fails).

    Raises :class:`GateError` on bad input (the command prints it and exits 2). ``--markdown FILE``
    is appended to (as ``$GITHUB_STEP_SUMMARY`` expects); ``--junit FILE`` is overwritten; ``-``
    writes either to stdout instead of the table.
    """
    out = out or sys.stdout
    to_stdout = [name for name, v in (("--json", as_json), ("--junit -", junit == "-"), ("--markdown -", markdown == "-"))
                 if v]
    if len(to_stdout) > 1:
        raise GateError(f"{' and '.join(to_stdout)} would both write to stdout: give a file for one of them")
    if baseline is None and max_drop is not None:
        raise GateError("--max-drop needs --baseline RUN")
    if candidate == "-" and baseline == "-":
        raise GateError("only one of RUN and --baseline can be '-' (stdin)")
    parsed: dict[str, float] = {}
    for spec in floors:
        name, value = parse_floor(spec)
        parsed[name] = value
    cand = read_run(candidate, metrics)
    base = read_run(baseline, metrics) if baseline is not None else None
    if metrics:
        seen = set(cand.values) | set(base.values if base else {})
        unknown = [m for m in metrics if m not in seen]
        if unknown:
            raise GateError(f"--metrics {unknown[0]}: no such column in {cand.source}")
    report = gate(cand, base, floors=parsed, max_drop=max_drop or 0.0, alpha=alpha, test=test,
                  confidence=confidence, require_all=require_all, gate_slices=gate_slices)
    settings = {"candidate": cand.source, "baseline": base.source if base else None, "floors": parsed,
                "max_drop": (max_drop or 0.0) if base else None, "alpha": alpha if base else None,
                "test": test if base else None, "confidence": confidence, "require_all": require_all,
                "gate_slices": gate_slices}
    if junit is not None:
        _write(junit, render_junit(report, settings), out)
    if markdown is not None:
        _write(markdown, render_markdown(report, settings), out, append=True)
    failed = _failures(report)
    if as_json:
        out.write(json.dumps(report, indent=1) + "\n")
    elif "-" not in (junit, markdown):
        text = io.StringIO()
        n_b = f", baseline {base.source}: {len(base.ids)} items" if base else ""
        text.write(f"{cand.source}: {len(cand.ids)} items{n_b}\n{_rule(settings)}\n")
        if base:
            text.write(f"effect: paired mean difference in % of the paired baseline mean; its {confidence:.0%} CI: "
                       f"Student-t; p: one-sided {test} (candidate lower)\n")
        text.write("\n" + render_table(report, base is not None) + "\n")
        missing = _missing_lines(report)
        if missing:
            text.write("\nmissing items:\n" + "".join(f"  {m}\n" for m in missing))
        if any("slices" in e for e in report.values()) and not gate_slices:
            text.write("\nslices are reported, not gated (verdicts in parentheses; --gate-slices gates them)\n")
        text.write("\n")
        for m in failed:
            text.write(f"gate: FAIL: {m}: {'; '.join(report[m]['reasons'])}\n")
        if not failed:
            text.write(f"gate: pass: {', '.join(report)}\n")
        out.write(text.getvalue())
    return 1 if failed else 0
