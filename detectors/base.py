"""The detector contract shared by every detector, and its result objects.

Every detector in this package follows one small contract (river's shape, scipy's batched core):

* it is constructed with validated keyword arguments, kept as attributes under the same names;
* ``update_many(series, t, x)`` consumes a batch of events as arrays -- ``series`` (int64 series
  index), ``t`` (float64 event time, Unix seconds) and ``x`` (the values) -- and returns a list of
  :class:`Finding` in a deterministic order;
* ``state_dict()`` returns plain numpy arrays / numbers / strings, and ``from_state(state)``
  rebuilds an equal detector: feeding both the same events gives the same findings.

Findings depend only on the events and their order, never on how they were split into batches
(one batch of 10,000 events or 10,000 batches of one give the same findings).

Detectors do no I/O, read no environment and configure no logging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Finding",
    "Side",
    "Detector",
    "check_positive",
    "check_fraction",
    "check_probability",
    "check_level",
    "budget_alpha",
    "YEAR",
]

YEAR = 365.25 * 86400.0


@dataclasses.dataclass(frozen=True)
class Side:
    """Summary of one side of a comparison (the current window, or the reference it is held to).

    ``start`` and ``end`` are event times (Unix seconds), ``n`` the sample count and ``value`` the
    summary statistic (mean, median, rate...) of that side.
    """

    start: float
    end: float
    n: int
    value: float


@dataclasses.dataclass(frozen=True)
class Finding:
    """One state change of a detector on one series.

    Attributes
    ----------
    series : int
        Series index as given to ``update_many``.
    status : str
        ``"firing"`` when the condition starts holding, ``"resolved"`` when it has cleared,
        ``"info"`` for one-off notices (a prompt change), ``"drift"`` for detectors without
        episodes (river's).
    at : float
        Event time (Unix seconds) of the evaluation that produced it (a bucket boundary).
    episode_start : float
        Event time at which the episode began (equals ``at`` for ``firing``); part of alert ids.
    statistic : str
        Name of the test statistic, e.g. ``"pct_drop"``, ``"ks_d"``, ``"rate_ratio"``.
    value, threshold : float
        The statistic and the minimum effect it was held to.
    p_value : float or None
        Significance of the test, when the detector has one.
    window, reference : Side or None
        The current window and the reference it was compared with.
    reference_kind : str
        ``"baseline"`` (the frozen rolling baseline) or ``"long_term"`` (the accepted stable
        period), for drop and rate rules.
    extra : dict
        Detector-specific evidence (kept small, JSON-friendly).
    """

    series: int
    status: str
    at: float
    episode_start: float
    statistic: str
    value: float
    threshold: float
    p_value: float | None = None
    window: Side | None = None
    reference: Side | None = None
    reference_kind: str = "baseline"
    extra: dict = dataclasses.field(default_factory=dict)


class Detector:
    """Base class: parameter validation helpers, ``repr`` and the state round-trip.

    Subclasses list their constructor parameters in ``_params`` and their array state in
    ``_state``; ``state_dict``/``from_state`` then round-trip exactly.
    """

    _params: ClassVar[tuple[str, ...]] = ()
    _state: ClassVar[tuple[str, ...]] = ()

    def update_many(self, series: np.ndarray, t: np.ndarray, x: np.ndarray) -> list[Finding]:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, by name (river's ``_get_params``)."""
        return {name: getattr(self, name) for name in self._params}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"type": type(self).__name__, "params": self.get_params()}
        for name in self._state:
            value = getattr(self, name)
            state[name] = _snapshot(value) if isinstance(value, np.ndarray) else _copy_plain(value)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]):
        if state.get("type") != cls.__name__:
            raise ValueError(f"state is for {state.get('type')!r}, not {cls.__name__}")
        obj = cls(**state["params"])
        for name in cls._state:
            value = state[name]
            setattr(obj, name, value.copy() if isinstance(value, np.ndarray) else _copy_plain(value))
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


_VIEWS = [False]


@contextlib.contextmanager
def state_views():
    """Within this block ``state_dict()`` returns the detectors' own arrays instead of copies
    (for a reader that is done with the state before the detectors change again: a checkpoint
    written synchronously), and ``load_state`` takes the given state's writable arrays instead of
    copying them (for a state nobody else holds: a decoded checkpoint). Either way it saves a
    copy of the whole state."""
    _VIEWS[0] = True
    try:
        yield
    finally:
        _VIEWS[0] = False


def _snapshot(array: np.ndarray) -> np.ndarray:
    return array if _VIEWS[0] else array.copy()


def _adopt(value, dtype) -> np.ndarray:
    """``value`` as an array of ``dtype`` for a detector to own: itself within :func:`state_views`
    when it can be (writable, contiguous, that dtype), otherwise a copy."""
    if _VIEWS[0]:
        a = np.asarray(value, dtype=dtype)
        return a if a.flags.writeable and a.flags.c_contiguous else a.copy()
    return np.array(value, dtype=dtype)


def _copy_plain(value):
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_fraction(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def check_probability(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def check_level(alpha, false_alarm_rate) -> None:
    """A windowed test needs a level: ``alpha`` per test, or (``alpha=None``) a budget."""
    if alpha is None:
        if false_alarm_rate is None:
            raise ValueError("alpha or false_alarm_rate must be given")
        check_positive("false_alarm_rate", false_alarm_rate)
    else:
        check_probability("alpha", alpha)


def budget_alpha(false_alarm_rate: float, bucket: float, tests: int = 1) -> float:
    """Per-test level of a windowed rule from a false-alarm budget stated in time.

    The rule looks ``YEAR / bucket`` times a year and makes ``tests`` tests per look (windows
    times references); a union bound over all of them keeps false alarms at or below
    ``false_alarm_rate`` per series-year, whatever the overlap of the windows (which only makes
    it conservative).

    >>> f"{budget_alpha(1e-4, 3600.0, tests=2):.3g}"  # hourly looks, two tests each
    '5.7e-09'
    """
    return min(1.0, false_alarm_rate * bucket / YEAR / max(int(tests), 1))
