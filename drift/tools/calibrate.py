"""``drift calibrate LABELS``: does the LLM judge agree with the humans well enough to be trusted?

Reads items labelled by the judge and by one or more humans (CSV or JSONL: ``id``, ``judge``,
``human``, more raters ``human_2``, ``human_3`` ..., optional ``dimension`` and ``intent``) and
reports, per dimension (``"all"`` without a ``dimension`` column) and with ``by_intent`` per
intent inside each dimension, Cohen's kappa of the judge against ``human`` (the first rater; the
others only feed ``human_human``) with a stratified bootstrap confidence interval and a verdict:
``untrusted`` below 0.6, ``workable`` from 0.6, ``high_stakes`` from 0.8.

Input
-----
* Format by extension: ``.csv`` is CSV (header row), ``.jsonl`` / ``.ndjson`` / ``.json`` one
  JSON object per line; without one of those (and for ``-``, stdin) the first non-blank
  character decides (``{``: JSONL, else CSV).
* Labels: binary (``0``/``1``, ``true``/``false``), categorical strings, or ordinal numbers
  (e.g. 1-5). ``"1"`` in a CSV and ``1`` in JSON are the same label. A label one rater uses and
  the other never does (e.g. a judge's ``unparsable``) is simply one more class.
* Numeric judge scores become labels with a :class:`ScoreMapping`: ``threshold`` (score >= X is
  1, else 0) or ``bins`` (``np.digitize(score, bins)``: class ``i`` holds
  ``bins[i-1] <= score < bins[i]``, so a score on an edge goes to the class above it; classes
  ``0 .. len(bins)``). Human labels are used as given unless ``map_human``.
* Coding of a dimension's labels: numbers are ordinal levels (integers fill the range from the
  smallest to the largest label, so an unused middle level keeps its place for weighted kappa;
  other numbers are ranked); as soon as one label is not a number, all are categories (strings,
  sorted). Weighted kappa (``linear``/``quadratic``) needs numeric labels.
* Streaming: rows are read one at a time; per (dimension, intent) only one ``int8`` code per
  item and rater is kept (``array('b')``), plus the ids of each dimension to reject duplicates.

Bad input (:class:`CalibrateError`, exit 2) names the file, line and column: a missing file, a
missing ``id``/``judge``/``human`` column, an empty value, a non-numeric judge score with a
mapping, a duplicate id within a dimension, more than 127 distinct labels in a dimension, no rows,
bytes that are not UTF-8; and options out of range (``--min-kappa``, ``--n-boot``, ``--seed``).
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
import json
import math
import re
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from detectors.agreement import (
    Weights,
    confusion,
    kappa_from_confusion,
    stratified_bootstrap_kappa,
    weight_matrix,
)
from drift.tools.tabular import jsonl_rows, open_lines

__all__ = [
    "CalibrateError",
    "ScoreMapping",
    "LabelSet",
    "read_labels",
    "calibrate",
    "verdict",
    "n_more",
    "gate_failures",
    "render_table",
    "run",
    "WORKABLE_FROM",
    "HIGH_STAKES_FROM",
    "TARGET_HALF_WIDTH",
    "MIN_BOOT",
    "departure_interval",
]

WORKABLE_FROM = 0.6
"""Kappa from which a judge is ``workable`` (below: ``untrusted``); also ``--min-kappa``'s default."""
HIGH_STAKES_FROM = 0.8
"""Kappa from which a judge is trusted for ``high_stakes`` decisions."""
TARGET_HALF_WIDTH = 0.10
"""The confidence interval half-width that ``n_more`` plans for."""
MIN_BOOT = 200
"""The fewest bootstrap resamples (``--n-boot``): each 2.5 % tail of the 95 % percentile interval
then holds at least 5 resamples; fewer give ends that are single draws, or an interval of one
resample that need not contain kappa."""
MAX_LABELS = 127
"""Distinct labels per dimension (one signed byte per item and rater)."""

_RATER = re.compile(r"^human_(\d+)$")
_MISSING = -1  # code of an item a secondary rater did not label
_SEEN_MAX = 4096  # distinct raw cells remembered per dimension (spellings of at most 127 labels)


class CalibrateError(ValueError):
    """Bad input: a one-line message naming the file, line and column."""


@dataclasses.dataclass(frozen=True)
class ScoreMapping:
    """How numeric judge scores become labels: ``threshold`` or ``bins`` (not both).

    ``threshold=X``: ``1`` when ``score >= X``, else ``0``. ``bins=(b1, ..., bm)`` (strictly
    increasing): class ``np.digitize(score, bins)`` in ``0 .. m``, i.e. class ``i`` holds
    ``b_i <= score < b_(i+1)``: an edge value goes to the class above (as with the threshold,
    which is ``bins=(X,)``). ``map_human`` maps the human columns the same way (when they are
    scores on the judge's scale too).
    """

    threshold: float | None = None
    bins: tuple[float, ...] | None = None
    map_human: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and self.bins is not None:
            raise CalibrateError("give --threshold or --bins, not both")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise CalibrateError(f"--threshold must be a finite number, got {self.threshold}")
        if self.bins is not None:
            edges = np.asarray(self.bins, dtype=np.float64)
            if edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise CalibrateError(f"--bins must be finite, strictly increasing numbers, got {list(self.bins)}")
            if edges.size + 1 > MAX_LABELS:
                raise CalibrateError(f"--bins gives at most {MAX_LABELS} classes")
        if self.map_human and not self.active:
            raise CalibrateError("--map-human needs --threshold or --bins")

    @property
    def active(self) -> bool:
        return self.threshold is not None or self.bins is not None

    @property
    def edges(self) -> tuple[float, ...]:
        return (self.threshold,) if self.threshold is not None else (self.bins or ())

    def classes(self) -> list[int]:
        """All classes the mapping can produce (kept in the scale even where unused)."""
        return list(range(len(self.edges) + 1)) if self.active else []

    def apply(self, score: float) -> int:
        """The class of one score: ``bisect_right`` on the edges, which is ``np.digitize``."""
        return bisect.bisect_right(self.edges, score)


Label = int | float | str


def _parse_label(value: Any) -> Label | None:
    """A raw cell as a label: None when empty; numbers (also numeric strings) as int when whole."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return int(value) if value.is_integer() else value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a label (a string, a number or true/false)")
    text = value.strip()
    if not text:
        return None
    low = text.lower()
    if low in ("true", "false"):
        return int(low == "true")
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return int(number) if number.is_integer() else number


class _Group:
    """Codes of one (dimension, intent): judge, human and any further raters, one byte each."""

    __slots__ = ("judge", "human", "extra")

    def __init__(self) -> None:
        self.judge = array("b")
        self.human = array("b")
        self.extra: dict[str, array] = {}

    def append(self, judge: int, human: int, extra: dict[str, int]) -> None:
        n = len(self.judge)
        self.judge.append(judge)
        self.human.append(human)
        for name, codes in self.extra.items():
            codes.append(extra.get(name, _MISSING))
        for name, code in extra.items():
            if name not in self.extra:
                self.extra[name] = array("b", [_MISSING] * n)
                self.extra[name].append(code)


@dataclasses.dataclass
class _Dimension:
    labels: dict[Label, int] = dataclasses.field(default_factory=dict)  # label -> provisional code
    groups: dict[str, _Group] = dataclasses.field(default_factory=dict)  # intent -> codes
    ids: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> line of first sight
    seen: dict[Any, int] = dataclasses.field(default_factory=dict)  # raw cell -> code (unmapped cells)


@dataclasses.dataclass(frozen=True)
class Codes:
    """One group's labels as codes ``0 .. k-1`` of its dimension's scale (``-1``: not labelled)."""

    judge: np.ndarray
    human: np.ndarray
    extra: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DimensionLabels:
    """A dimension's scale and the codes of each intent (intent ``""`` when there is none)."""

    levels: tuple[Label, ...]
    numeric: bool
    groups: dict[str, Codes]

    @property
    def k(self) -> int:
        return len(self.levels)


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """What :func:`read_labels` read: per dimension, the scale and the codes."""

    source: str
    n_rows: int
    has_intent: bool
    raters: tuple[str, ...]  # "human", "human_2", ... as seen
    dimensions: dict[str, DimensionLabels]


def _open(path: str) -> tuple[Iterator[str], str, IO[str] | None]:
    return open_lines(path, CalibrateError)


def _csv_rows(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise CalibrateError(f"{where}: empty input (no header row)")
    header = [h.strip() for h in header]
    for col in ("id", "judge", "human"):
        if col not in header:
            raise CalibrateError(f"{where}, line 1: no `{col}` column (columns: {', '.join(header) or 'none'})")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise CalibrateError(f"{where}, line {reader.line_num}: {len(row)} fields for {len(header)} columns")
        yield reader.line_num, dict(zip(header, row))


def _jsonl_rows(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return jsonl_rows(lines, where, CalibrateError)


class _RowError(Exception):
    """A bad cell: the column and the message (the reader adds the file and line)."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def _code(dim: _Dimension, dim_name: str, row: dict[str, Any], column: str, mapping: ScoreMapping,
          mapped: bool) -> int | None:
    """The provisional code of one cell (None when empty), adding a new label to the dimension."""
    raw = row.get(column)
    if not mapped and type(raw) in (str, int):
        hit = dim.seen.get(raw)  # the few distinct cells of a label column, parsed once
        if hit is not None:
            return hit
    label: Label | None
    if mapped and raw is not None and not (isinstance(raw, str) and not raw.strip()):
        not_a_number = f"{raw!r} is not a number (--threshold/--bins need numeric scores)"
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise _RowError(column, not_a_number)
        try:
            score = float(raw)
        except ValueError:
            raise _RowError(column, not_a_number) from None
        if not math.isfinite(score):
            raise _RowError(column, f"{raw!r} is not a finite number")
        label = mapping.apply(score)
    else:
        try:
            label = _parse_label(raw)
        except ValueError as exc:
            raise _RowError(column, str(exc)) from None
    if label is None:
        return None
    found = dim.labels.get(label)
    if found is None:
        if len(dim.labels) >= MAX_LABELS:
            raise _RowError(column, f"more than {MAX_LABELS} distinct labels in dimension {dim_name!r}: "
                                    "scores rather than labels? map them with --threshold or --bins")
        found = dim.labels[label] = len(dim.labels)
    if not mapped and type(raw) in (str, int) and len(dim.seen) < _SEEN_MAX:
        dim.seen[raw] = found
    return found


def _rater_columns(columns: Iterable[str]) -> tuple[str, ...]:
    """The further raters' columns (``human_2``, ``human_3``, ...) among ``columns``."""
    return tuple(c for c in columns if (m := _RATER.match(str(c))) and int(m.group(1)) >= 2)


def _add_row(dims: dict[str, _Dimension], row: dict[str, Any], line_no: int, mapping: ScoreMapping,
             rater_columns: tuple[str, ...]) -> None:
    """File one row's codes under its dimension and intent; :class:`_RowError` on a bad cell."""
    item_id = row.get("id")
    if item_id is None or not str(item_id).strip():
        raise _RowError("id", "missing id" if "id" not in row else "empty id")
    item_id = str(item_id).strip()
    dim_name = str(row.get("dimension") or "").strip() or "all"
    intent = str(row.get("intent") or "").strip()
    dim = dims.get(dim_name)
    if dim is None:
        dim = dims[dim_name] = _Dimension()
        for cls in mapping.classes():
            dim.labels[cls] = len(dim.labels)
    first = dim.ids.setdefault(item_id, line_no)
    if first != line_no:
        raise _RowError("id", f"duplicate id {item_id!r} in dimension {dim_name!r} (first on line {first})")
    codes: dict[str, int] = {}
    for column, mapped in (("judge", mapping.active), ("human", mapping.map_human)):
        value = _code(dim, dim_name, row, column, mapping, mapped)
        if value is None:
            raise _RowError(column, "missing value" if column not in row else "empty value")
        codes[column] = value
    extra: dict[str, int] = {}
    for column in rater_columns:
        value = _code(dim, dim_name, row, column, mapping, mapping.map_human)
        if value is not None:
            extra[column] = value
    group = dim.groups.get(intent)
    if group is None:
        group = dim.groups[intent] = _Group()
    group.append(codes["judge"], codes["human"], extra)


def read_labels(path: str, mapping: ScoreMapping | None = None) -> LabelSet:
    """Read a label file (``-``: stdin) into per-dimension codes, one row at a time.

    Raises
    ------
    CalibrateError
        On bad input; the message names the file, the line and the column.
    """
    mapping = mapping or ScoreMapping()
    lines, fmt, handle = _open(path)
    where = "<stdin>" if path == "-" else path
    dims: dict[str, _Dimension] = {}
    raters: dict[str, None] = {"human": None}
    has_intent = False
    n_rows = 0
    columns: dict[frozenset[str], tuple[str, ...]] = {}  # key set -> its raters (a CSV has one key set)
    try:
        rows = _csv_rows(lines, where) if fmt == "csv" else _jsonl_rows(lines, where)
        for line_no, row in rows:
            n_rows += 1
            keys = frozenset(row)
            rater_columns = columns.get(keys)
            if rater_columns is None:
                rater_columns = _rater_columns(sorted(keys))
                if len(columns) < _SEEN_MAX:
                    columns[keys] = rater_columns
                raters.update(dict.fromkeys(rater_columns))
                has_intent |= "intent" in keys
            try:
                _add_row(dims, row, line_no, mapping, rater_columns)
            except _RowError as exc:
                raise CalibrateError(f"{where}, line {line_no}, column {exc.column}: {exc}") from None
    finally:
        if handle is not None:
            handle.close()
    if n_rows == 0:
        raise CalibrateError(f"{where}: empty input (no labelled rows)")
    rater_order = sorted(raters, key=lambda r: 1 if r == "human" else int(r.split("_")[1]))
    return LabelSet(source=where, n_rows=n_rows, has_intent=has_intent, raters=tuple(rater_order),
                    dimensions={name: _finish(dims[name]) for name in sorted(dims)})


def _finish(dim: _Dimension) -> DimensionLabels:
    """Order a dimension's labels into its scale and recode every group to ``0 .. k-1``."""
    labels = list(dim.labels)
    numeric = all(not isinstance(lab, str) for lab in labels)
    levels: list[Label]
    if numeric:
        values = sorted(labels)  # all int | float here
        whole = all(isinstance(v, int) for v in values)
        if whole and int(values[-1]) - int(values[0]) < MAX_LABELS:
            levels = list(range(int(values[0]), int(values[-1]) + 1))
        else:
            levels = values
    else:
        levels = sorted({str(lab) for lab in labels})
    index = {lab: i for i, lab in enumerate(levels)}
    lookup = np.empty(len(labels) + 1, dtype=np.int64)
    lookup[-1] = _MISSING  # provisional -1 indexes the last slot
    for lab, provisional in dim.labels.items():
        lookup[provisional] = index[lab if numeric else str(lab)]
    groups = {}
    for intent, g in dim.groups.items():
        groups[intent] = Codes(judge=lookup[np.frombuffer(g.judge, dtype=np.int8)],
                               human=lookup[np.frombuffer(g.human, dtype=np.int8)],
                               extra={r: lookup[np.frombuffer(c, dtype=np.int8)] for r, c in g.extra.items()})
    return DimensionLabels(levels=tuple(levels), numeric=numeric, groups=groups)


def verdict(kappa: float) -> str:
    """``untrusted`` < 0.6 <= ``workable`` < 0.8 <= ``high_stakes``; ``undefined`` for NaN."""
    if not math.isfinite(kappa):
        return "undefined"
    if kappa < WORKABLE_FROM:
        return "untrusted"
    return "workable" if kappa < HIGH_STAKES_FROM else "high_stakes"


def n_more(n: int, ci_low: float, ci_high: float, target: float = TARGET_HALF_WIDTH) -> int | None:
    """How many more labelled items would bring the CI half-width down to ``target``.

    A confidence interval's width shrinks like ``1 / sqrt(n)``, so the half-width ``hw`` at ``n``
    items becomes ``hw * sqrt(n / (n + m))`` at ``n + m``; the smallest such ``m`` with a
    half-width of at most ``target`` is ``ceil(n * (hw / target)^2 - n)``, 0 when already there,
    None when the interval is undefined or has zero width (every resample gave the same kappa, as
    with perfect agreement on a few items: the bootstrap cannot measure the uncertainty there).

    The width is driven by the minority class: kappa's error comes mostly from how the few items
    of the rare class are labelled, so with a prevalence of 5 % the items that matter are about
    one in twenty, and ``m`` is large. Labelling more items *of the minority class* (when they can
    be found, e.g. by sampling items the judge flags) narrows the interval far faster than
    labelling at random.

    Examples
    --------
    >>> n_more(200, 0.55, 0.85)  # half-width 0.15
    250
    >>> n_more(200, 0.70, 0.85)
    0
    """
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)) or n <= 0 or ci_high <= ci_low:
        return None
    half = (ci_high - ci_low) / 2.0
    if half <= target:
        return 0
    # round away float noise (e.g. 0.15 / 0.10 = 1.4999999999999998) before the ceiling
    return max(0, math.ceil(round(n * (half / target) ** 2 - n, 9)))


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _stats(dim: DimensionLabels, codes: Codes, human_classes: np.ndarray, weights: Weights,
           n_boot: int, seed: int) -> dict[str, Any]:
    k = dim.k
    judge, human = codes.judge, codes.human
    n = int(judge.size)
    table = confusion(judge, human, k)
    kappa = kappa_from_confusion(table, weights)
    low, high = stratified_bootstrap_kappa(judge, human, k, weights, n_boot=n_boot, seed=seed)
    if not math.isfinite(kappa):
        low = high = math.nan
    degenerate = math.isfinite(kappa) and high <= low
    if degenerate:
        low, high = departure_interval(table, weights)
    human_counts = table.sum(axis=0)
    if dim.numeric and k == 2:
        prevalence = human_counts[1] / n  # binary: the share of the higher label (1 / true)
    else:
        prevalence = human_counts.max() / n  # otherwise the human's most common label
    out: dict[str, Any] = {
        "kappa": _num(kappa), "ci_low": _num(low), "ci_high": _num(high), "n": n, "verdict": verdict(kappa)}
    if not math.isfinite(kappa):
        only = dim.levels[int(human[0])]
        out["reason"] = (f"the judge and the human gave all {n} items the label {str(only)!r}: "
                         "kappa is undefined (no disagreement is expected by chance); label items of other classes")
    elif degenerate:
        out["reason"] = (f"on these {n} items the judge gives one label to each of the human's classes, so every "
                         "bootstrap resample has the same kappa; the interval bounds kappa by the exact binomial "
                         f"bound on how often the judge departs from those labels (0 of {n} seen); label more items")
    h2 = codes.extra.get("human_2")
    human_human = None
    if h2 is not None:
        both = h2 != _MISSING
        if both.any():
            human_human = _num(kappa_from_confusion(confusion(human[both], h2[both], k), weights))
    out.update({
        "agreement": float(np.trace(table) / n),
        "prevalence": float(prevalence),
        "minority_n": int(human_counts[human_classes].min()),
        "n_more": n_more(n, low, high),
        "human_human": human_human,
        "weights": weights or "none",
    })
    return out


def departure_interval(table: np.ndarray, weights: Weights = None) -> tuple[float, float]:
    """A 95 % interval for kappa where the bootstrap has none: the judge gave one label to each of
    the human's classes, so resampling within those classes always gives the same kappa (perfect
    agreement on a few items gives ``[1, 1]``, which measures nothing).

    What is unknown is how often the judge departs from the label it gave a class; none of the
    ``n`` items did, so the exact (Clopper-Pearson) 95 % bound on that share is
    ``u = 1 - 0.025 ** (1 / n)``. Up to ``u n`` departures move the observed disagreement ``D_o``
    by at most ``u`` times the largest disagreement weight, and the disagreement expected by
    chance, ``D_e = sum_i r_i g_i / n^2`` (judge label counts ``r``, ``g = w @ human counts``), by
    at most ``u (max g - min g) / n``. Kappa ``1 - D_o / D_e`` at the worse of both ends bounds
    every such table, within [-1, 1]: conservative where the two worst cases cannot meet.

    >>> [round(x, 3) for x in departure_interval(np.array([[1, 0], [0, 1]]))]  # 2 agreeing items
    [-0.684, 1.0]
    >>> [round(x, 3) for x in departure_interval(np.array([[250, 0], [0, 250]]))]  # 500
    [0.985, 1.0]
    >>> [round(x, 3) for x in departure_interval(np.array([[18, 0], [0, 2]]))]  # 20, a rare class
    [-1.0, 1.0]
    """
    table = np.asarray(table, dtype=np.float64)
    n = table.sum()
    w = weight_matrix(table.shape[0], weights)
    g = w @ table.sum(axis=0)  # D_e's weight of each judge label
    d_o = float((w * table).sum() / n)
    d_e = float(table.sum(axis=1) @ g / (n * n))
    u = 1.0 - 0.025 ** (1.0 / n)
    moved_o, moved_e = u * float(w.max()), u * float(g.max() - g.min()) / n
    low_e = d_e - moved_e
    low = 1.0 - (d_o + moved_o) / low_e if low_e > 0 else -1.0
    high = 1.0 - max(d_o - moved_o, 0.0) / (d_e + moved_e)
    return float(min(max(low, -1.0), 1.0)), float(min(max(high, -1.0), 1.0))


def _merge(codes: Iterable[Codes]) -> Codes:
    parts = list(codes)
    names = sorted({r for c in parts for r in c.extra})
    return Codes(judge=np.concatenate([c.judge for c in parts]), human=np.concatenate([c.human for c in parts]),
                 extra={r: np.concatenate([c.extra.get(r, np.full(c.judge.size, _MISSING)) for c in parts])
                        for r in names})


def calibrate(labels: LabelSet, *, weights: Weights = None, by_intent: bool = False, n_boot: int = 2000,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """The report: per dimension (and with ``by_intent`` per intent inside it) kappa and friends.

    Keys of each dimension's object: ``kappa``, ``ci_low``, ``ci_high`` (stratified bootstrap,
    95 %, resampling within the human's classes), ``n``, ``verdict`` (``reason`` when
    ``undefined``, and where the bootstrap's interval has no width and :func:`departure_interval`
    gives it), ``agreement`` (raw share of items the two agree on), ``prevalence`` (binary
    numeric labels: the share of the human's higher label, 1/true; otherwise of the human's most
    common label), ``minority_n`` (the count of the human's rarest class, over the classes the
    human used in the dimension; both classes of a binary scale), ``n_more`` (:func:`n_more`),
    ``human_human`` (kappa of ``human`` vs ``human_2`` on the items both labelled; None without
    ``human_2``), ``weights``; with ``by_intent``, ``intents``: intent -> an object of the same
    keys (less ``intents``). The judge is compared with ``human``, the first rater only.

    Raises
    ------
    CalibrateError
        Weighted kappa asked for categorical (non-numeric) labels.
    """
    if by_intent and not labels.has_intent:
        raise CalibrateError(f"{labels.source}: --by intent needs an `intent` column")
    report: dict[str, dict[str, Any]] = {}
    for name, dim in labels.dimensions.items():
        if weights is not None and not dim.numeric:
            shown = ", ".join(repr(lab) for lab in dim.levels[:6]) + (" ..." if dim.k > 6 else "")
            raise CalibrateError(f"{labels.source}: --weights {weights} needs ordinal (numeric) labels; "
                                 f"dimension {name!r} has categories {shown}")
        merged = _merge(dim.groups[i] for i in sorted(dim.groups))
        used = np.flatnonzero(np.bincount(merged.human, minlength=dim.k))
        if dim.numeric and dim.k == 2:
            used = np.arange(2)
        entry = _stats(dim, merged, used, weights, n_boot, seed)
        if by_intent:
            entry["intents"] = {intent or "(none)": _stats(dim, dim.groups[intent], used, weights, n_boot, seed)
                                for intent in sorted(dim.groups)}
        report[name] = entry
    return report


def gate_failures(report: dict[str, dict[str, Any]], *, min_kappa: float = WORKABLE_FROM, strict: bool = False,
                  gates: Sequence[str] | None = None) -> list[str]:
    """The gated dimensions that fail: kappa (``strict``: the CI's lower end) below ``min_kappa``.

    An undefined kappa fails too: agreement that cannot be measured is not shown. ``gates``
    restricts the gate to those dimensions (default: all). ``min_kappa`` must lie in [-1, 1].

    Examples
    --------
    >>> rep = {"tone": {"kappa": 0.72, "ci_low": 0.58}, "safety": {"kappa": 0.9, "ci_low": 0.84}}
    >>> gate_failures(rep), gate_failures(rep, strict=True), gate_failures(rep, strict=True, gates=["safety"])
    ([], ['tone'], [])
    """
    _check_min_kappa(min_kappa)
    names = list(report) if not gates else list(dict.fromkeys(gates))
    unknown = [g for g in names if g not in report]
    if unknown:
        raise CalibrateError(f"--gate {unknown[0]}: no such dimension (dimensions: {', '.join(report)})")
    key = "ci_low" if strict else "kappa"
    return [g for g in names if report[g][key] is None or report[g][key] < min_kappa]


def _check_min_kappa(min_kappa: float) -> None:
    if not (math.isfinite(min_kappa) and -1.0 <= min_kappa <= 1.0):
        raise CalibrateError(f"--min-kappa must be a number from -1 to 1 (a kappa), got {min_kappa:g}")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_table(report: dict[str, dict[str, Any]]) -> str:
    """The report as an aligned text table (one row per dimension, intents indented below)."""
    head = ("dimension", "n", "kappa", "95% CI", "verdict", "agree", "prev", "minority", "n_more", "human-human")
    rows: list[tuple[str, ...]] = [head]

    def row(label: str, e: dict[str, Any]) -> tuple[str, ...]:
        ci = "-" if e["ci_low"] is None else f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]"
        return (label, str(e["n"]), _fmt(e["kappa"]), ci, e["verdict"], _fmt(e["agreement"]),
                _fmt(e["prevalence"]), str(e["minority_n"]), "-" if e["n_more"] is None else str(e["n_more"]),
                _fmt(e["human_human"]))

    for name, entry in report.items():
        rows.append(row(name, entry))
        for intent, sub in entry.get("intents", {}).items():
            rows.append(row(f"  {intent}", sub))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    numeric_cols = {1, 2, 5, 6, 7, 8, 9}
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in numeric_cols else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(path: str, *, mapping: ScoreMapping | None = None, weights: Weights = None, by_intent: bool = False,
        n_boot: int = 2000, seed: int = 0, min_kappa: float = WORKABLE_FROM, strict: bool = False,
        gates: Sequence[str] | None = None, as_json: bool = False, out: IO[str] | None = None) -> int:
    """Read, report, gate; the exit code of ``drift calibrate`` (0 pass, 1 gate failed).

    Raises :class:`CalibrateError` on bad input (the command prints it and exits 2).
    """
    out = out or sys.stdout
    if n_boot < MIN_BOOT:
        raise CalibrateError(f"--n-boot must be at least {MIN_BOOT} (resamples of a 95% percentile interval), "
                             f"got {n_boot}")
    if seed < 0:
        raise CalibrateError(f"--seed must be a non-negative integer, got {seed}")
    _check_min_kappa(min_kappa)
    labels = read_labels(path, mapping)
    report = calibrate(labels, weights=weights, by_intent=by_intent, n_boot=n_boot, seed=seed)
    failures = gate_failures(report, min_kappa=min_kappa, strict=strict, gates=gates)
    if as_json:
        out.write(json.dumps(report, indent=1) + "\n")
        return 1 if failures else 0
    text = io.StringIO()
    more = f" (more raters: {', '.join(labels.raters[1:])}; human-human is human vs human_2)" if len(labels.raters) > 1 else ""
    text.write(f"{labels.source}: {labels.n_rows:,} labelled items\n"
               f"Cohen's kappa of the judge vs `human`{more}, weights {weights or 'none'}\n"
               f"95% CI: bootstrap within the human's classes, {n_boot} resamples, seed {seed}\n\n")
    text.write(render_table(report) + "\n\n")
    ordinal = [n for n, d in labels.dimensions.items() if d.numeric and d.k > 2]
    if weights is None and ordinal:
        text.write(f"note: the labels of {', '.join(ordinal)} are numbers with more than 2 levels: if they are an "
                   "ordered scale (e.g. 1-5), use --weights linear or quadratic\n")
    gated = list(dict.fromkeys(gates)) if gates else list(report)
    what = "ci_low" if strict else "kappa"
    if failures:
        text.write(f"gate: FAIL: {', '.join(failures)} with {what} below {min_kappa:g} (or undefined)\n")
    else:
        text.write(f"gate: pass: {what} >= {min_kappa:g} on {', '.join(gated)}\n")
    out.write(text.getvalue())
    return 1 if failures else 0
