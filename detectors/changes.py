"""Change tracking of a categorical attribute per key: prompt-template hashes, models, index versions.

Examples
--------
>>> import numpy as np
>>> from detectors.changes import ChangeTracker
>>> tr = ChangeTracker()
>>> keys = np.array([0, 0, 1, 0, 0])
>>> t = np.array([1.0, 2.0, 2.5, 3.0, 4.0])
>>> vals = np.array(["ab12", "ab12", "ff00", "cd34", "ab12"], dtype=object)
>>> [(f.series, f.at, f.extra["from"], f.extra["to"]) for f in tr.update_many(keys, t, vals)]
[(0, 3.0, 'ab12', 'cd34')]
>>> tr.changes_between(0, 0.0, 10.0)
[(3.0, 'ab12', 'cd34')]
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detector, Finding

__all__ = ["ChangeTracker"]


class ChangeTracker(Detector):
    """Reports a value never seen before for its key (the first value of a key is not a change).

    Parameters
    ----------
    max_values : int
        Distinct values remembered per key (oldest forgotten first). A key whose value changes
        on every event (a hash of the rendered prompt instead of the template, say) cannot grow
        memory without bound; ``overflow`` counts the forgotten values.
    max_changes : int
        Change records kept per key for :meth:`changes_between`.

    Notes
    -----
    A value counts as new in arrival order, so a canary that sends a share of traffic with a
    new hash fires once, not on every switch between old and new. Missing values (``None``)
    are ignored.
    """

    _params = ("max_values", "max_changes")
    _state = ("seen", "changes", "overflow")

    def __init__(self, max_values: int = 64, max_changes: int = 32):
        if max_values < 1 or max_changes < 1:
            raise ValueError("max_values and max_changes must be >= 1")
        self.max_values = int(max_values)
        self.max_changes = int(max_changes)
        self.seen: dict[int, list[str]] = {}
        self.changes: dict[int, list[list]] = {}
        self.overflow = 0

    def update_many(self, series, t, x) -> list[Finding]:
        keys = np.asarray(series, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        vals = np.asarray(x, dtype=object)
        present = np.not_equal(vals, None)  # type: ignore[call-overload]  # numpy's stubs refuse None
        if not present.all():
            keys, t, vals = keys[present], t[present], vals[present]
        if keys.size == 0:
            return []
        # only the first event of each run of equal (key, value) can bring a new value
        start = np.ones(keys.size, bool)
        start[1:] = (keys[1:] != keys[:-1]) | np.not_equal(vals[1:], vals[:-1])
        if not start.all():
            keys, t, vals = keys[start], t[start], vals[start]
        codes: dict = {}
        code = np.array([codes.setdefault(v, len(codes)) for v in vals.tolist()], dtype=np.int64)
        pair = keys * max(len(codes), 1) + code
        _, first = np.unique(pair, return_index=True)
        findings = []
        for i in np.sort(first):
            k, v = int(keys[i]), str(vals[i])
            seen = self.seen.setdefault(k, [])
            if v in seen:
                continue
            if seen:
                prev = seen[-1]
                rec = self.changes.setdefault(k, [])
                rec.append([float(t[i]), prev, v])
                del rec[: -self.max_changes]
                findings.append(Finding(series=k, status="info", at=float(t[i]),
                                        episode_start=float(t[i]), statistic="new_value",
                                        value=float(len(seen)), threshold=0.0,
                                        extra={"from": prev, "to": v}))
            seen.append(v)
            if len(seen) > self.max_values:
                del seen[0]
                self.overflow += 1
        return findings

    def changes_between(self, key: int, start: float, end: float) -> list[tuple[float, str, str]]:
        """Changes of ``key`` with ``start <= time <= end``, oldest first."""
        return [(c[0], c[1], c[2]) for c in self.changes.get(int(key), []) if start <= c[0] <= end]

    def current(self, key: int) -> str | None:
        seen = self.seen.get(int(key))
        return seen[-1] if seen else None
