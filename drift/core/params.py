"""Typed, validated parameters: one declaration gives the defaults, the checks and the error text.

A rule kind declares its tunable parameters as a frozen dataclass whose fields are made with
:func:`param`; :func:`parse_params` turns a TOML table into a validated ``dict`` and every
mistake becomes a :class:`ConfigError` that names the field, e.g.
``rules.quality_drop.threshold: must be a positive number, got -1``.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Example:
...     window: float = param(3600.0, "duration", "the rolling window")
...     alpha: float = param(0.01, "unit", "significance level")
>>> parse_params(Example, {"window": "2h"}, "rules.example")
{'window': 7200.0, 'alpha': 0.01}
>>> parse_params(Example, {"alpha": 3}, "rules.example")
Traceback (most recent call last):
...
drift.core.params.ConfigError: rules.example.alpha: must be in (0, 1], got 3
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "param", "parse_params", "param_defaults", "parse_duration", "as_int",
           "as_float", "as_bool", "check_bucket_multiples", "CHECKS"]


class ConfigError(ValueError):
    """A configuration mistake; the message names the field."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value, field: str) -> float:
    """``"7d"``, ``"1h"``, ``"10m"``, ``"30s"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration like '7d' or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{field}: expected a duration like '7d', '1h', '10m' or seconds, got {value!r}")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not math.isfinite(seconds):
        raise ConfigError(f"{field}: must be a finite duration, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{field}: must not be negative, got {value!r}")
    return seconds


def as_int(value, field, lo=None, hi=None) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = int(value)
        if isinstance(value, float) and v != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{field}: expected an integer, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{field}: must be between {lo} and {hi}, got {v}")
    return v


def as_float(value, field, positive=False, unit=False) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: expected a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"{field}: must be finite, got {value!r}")
    if positive and v <= 0:
        raise ConfigError(f"{field}: must be a positive number, got {value!r}")
    if unit and not 0 < v <= 1:
        raise ConfigError(f"{field}: must be in (0, 1], got {value!r}")
    return v


def as_bool(value, field) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{field}: expected true or false, got {value!r}")


def _duration(v, f, meta):
    s = parse_duration(v, f)
    if s < 1:
        raise ConfigError(f"{f}: must be at least 1 second, got {v!r}")
    return s


def _durations(v, f, meta):
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{f}: expected a list of durations like ['6h', '1d'], got {v!r}")
    return tuple(parse_duration(x, f"{f}[{i}]") for i, x in enumerate(v))


def _choice(v, f, meta):
    choices = meta["choices"]
    if v not in choices:
        raise ConfigError(f"{f}: expected {' or '.join(repr(c) for c in choices)}, got {v!r}")
    return v


def _cosine(v, f, meta):
    x = as_float(v, f)
    if not -1 <= x <= 1:
        raise ConfigError(f"{f}: must be a cosine similarity in [-1, 1], got {v!r}")
    return x


# check name -> validator(value, field, metadata) -> parsed value
CHECKS = {
    "duration": _duration,
    "durations": _durations,
    "unit": lambda v, f, m: as_float(v, f, unit=True),
    "positive": lambda v, f, m: as_float(v, f, positive=True),
    "number": lambda v, f, m: as_float(v, f),
    "count": lambda v, f, m: as_int(v, f, 1),
    "bool": lambda v, f, m: as_bool(v, f),
    "choice": _choice,
    "cosine": _cosine,
    "name": lambda v, f, m: _name(v, f),
    "optional_name": lambda v, f, m: "" if v == "" else _name(v, f),
}


def _name(v, f) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{f}: expected a non-empty name, got {v!r}")
    return v


def param(default: Any, check: str, doc: str = "", *, choices: tuple = ()) -> Any:
    """A dataclass field for a rule parameter: its default, how it is checked, what it means."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r} (known: {', '.join(CHECKS)})")
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc, "choices": choices})


def param_defaults(cls) -> dict[str, Any]:
    """The defaults of a parameter dataclass, by name."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def parse_params(cls, values: Mapping[str, Any], field: str, base: Mapping[str, Any] | None = None,
                 ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate ``values`` against the parameter dataclass ``cls`` on top of ``base`` (default:
    the dataclass defaults). Keys in ``ignore`` are skipped (the caller handles them)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(param_defaults(cls) if base is None else base)
    unknown = sorted(set(values) - set(fields) - set(ignore))
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}: unknown key (known: {', '.join(sorted(set(fields) | set(ignore)))})")
    for k, v in values.items():
        if k in ignore:
            continue
        meta = fields[k].metadata
        out[k] = CHECKS[meta["check"]](v, f"{field}.{k}", meta)
    return out


def check_bucket_multiples(params: Mapping[str, Any], field: str) -> None:
    """``window``, ``baseline`` and each of ``short_windows`` must be whole multiples of
    ``bucket`` (short windows also shorter than ``window``)."""
    if "bucket" not in params:
        return
    spans = [(k, params[k], "") for k in ("window", "baseline") if k in params]
    spans += [(f"short_windows[{i}]", v, f" and shorter than {field}.window ({params['window']:g} s)")
              for i, v in enumerate(params.get("short_windows", ()))]
    for k, v, also in spans:
        ratio = v / params["bucket"]
        if abs(ratio - round(ratio)) > 1e-9 or ratio < 1 or (also and v >= params["window"]):
            raise ConfigError(f"{field}.{k}: must be a whole multiple of {field}.bucket "
                              f"({params['bucket']:g} s){also}, got {v:g} s")
