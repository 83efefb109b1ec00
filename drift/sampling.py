"""Which requests the LLM judge evaluates: deterministic, stratified sampling by trace id.

An evaluation sidecar asks :meth:`Sampler.decide` (or :meth:`Sampler.decide_many` for a batch)
whether to send a request to the judge. The decision is a pure function of the trace id, an
optional salt and the rate of the request's app/intent:

* ``u = blake2b(trace_id, key=salt)`` read as a 64-bit integer and divided by ``2**64``, a
  uniform number in [0, 1) that every process, replay and language computes the same way (not
  Python's ``hash()``, which is salted per process); the request is sampled when ``u < rate``.
  So the judge, a replay and the join with user feedback agree on which traces were evaluated,
  and a trace sampled at a rate ``r`` is sampled at every rate above ``r``: raising a rate keeps
  every earlier evaluation (monotone).
* rates per intent (``"billing"``, any app), per app and intent (``"support-bot/billing"``) or
  per app (``"support-bot/*"``), the most specific match first, else ``default``;
* errored, escalated and flagged requests are always evaluated (100 %), whatever the rate.

``drift sample-plan --json`` writes a plan (rates chosen so that a 5 % quality drop in each intent
is detected within a target delay, at least cost) that :meth:`Sampler.from_plan` reads.

Examples
--------
>>> from drift.sampling import Sampler, uniform
>>> s = Sampler(rates={"billing": 0.5, "support-bot/refunds": 1.0}, default=0.02)
>>> s.rate_for("support-bot", "billing"), s.rate_for("support-bot", "refunds"), s.rate_for("docs-qa", "api")
(0.5, 1.0, 0.02)
>>> round(uniform("4bf92f3577b34da6a3ce929d0e0e4736"), 6)
0.150398
>>> s.decide("4bf92f3577b34da6a3ce929d0e0e4736", app="support-bot", intent="billing")
True
>>> s.decide("4bf92f3577b34da6a3ce929d0e0e4736", app="docs-qa", intent="api")
False
>>> s.decide("4bf92f3577b34da6a3ce929d0e0e4736", app="docs-qa", intent="api", errored=True)
True
>>> s.decide_many(["4bf92f3577b34da6a3ce929d0e0e4736"] * 3, app="docs-qa", intent=["api", "billing", "api"],
...               escalated=[False, False, True]).tolist()
[False, True, True]

A salt gives an independent sample (another experiment, another judge) with the same rates:

>>> round(uniform("4bf92f3577b34da6a3ce929d0e0e4736", salt="judge-v2"), 6)
0.975571
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Sampler", "uniform", "uniforms", "PLAN_KIND"]

PLAN_KIND = "drift.sample_plan"  # the "kind" field of a plan written by `drift sample-plan --json`
_SCALE = 2.0 ** -64
ANY = "*"


def _key(salt: str | bytes) -> bytes:
    key = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
    if len(key) > 64:  # blake2b takes keys of up to 64 bytes: a longer salt is hashed first
        key = hashlib.blake2b(key, digest_size=64).digest()
    return key


def uniform(trace_id: str | bytes, salt: str | bytes = "") -> float:
    """The trace's uniform number in [0, 1): ``blake2b(trace_id, key=salt, 8 bytes)`` as a
    big-endian integer over ``2**64``. Stable across processes, machines and versions.

    >>> uniform("abc") == uniform(b"abc")
    True
    >>> 0.0 <= uniform("abc", salt="x") < 1.0
    True
    """
    data = trace_id.encode("utf-8") if isinstance(trace_id, str) else bytes(trace_id)
    digest = hashlib.blake2b(data, digest_size=8, key=_key(salt)).digest()
    return int.from_bytes(digest, "big") * _SCALE


def uniforms(trace_ids: Iterable[Any], salt: str | bytes = ""):
    """:func:`uniform` of many trace ids, as a float64 numpy array.

    >>> uniforms(["abc", "def"]).round(6).tolist() == [round(uniform("abc"), 6), round(uniform("def"), 6)]
    True
    """
    import numpy as np

    key = _key(salt)
    blake = hashlib.blake2b
    digests = b"".join(blake(t.encode("utf-8") if isinstance(t, str) else bytes(t), digest_size=8, key=key).digest()
                       for t in trace_ids)
    return np.frombuffer(digests, dtype=">u8").astype(np.float64) * _SCALE


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: a rate must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name}: a rate must be a number in [0, 1], got {value!r}")
    return v


def _parse_key(key: Any) -> tuple[str, str]:
    """``"intent"`` → ``("*", "intent")``; ``"app/intent"``, ``"app/*"`` or ``(app, intent)`` as they are."""
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key):
        return key[0], key[1]
    if isinstance(key, str) and key:
        if "/" in key:
            app, intent = key.split("/", 1)
            return app or ANY, intent or ANY
        return ANY, key
    raise ValueError(f"rates: a key is 'intent', 'app/intent', 'app/*' or (app, intent), got {key!r}")


class Sampler:
    """Deterministic, stratified sampling of requests for the LLM judge.

    Parameters
    ----------
    rates : mapping, optional
        Sample rate in [0, 1] per ``"intent"`` (any app), ``"app/intent"``, ``"app/*"`` or
        ``(app, intent)``. The most specific key wins: app/intent, then intent, then app.
    default : float
        Rate of a request no key matches (default 0.02).
    salt : str
        Key of the hash: samplers with the same salt agree; another salt draws another sample.

    A request is sampled when its trace's :func:`uniform` is below its rate, or when it is
    errored, escalated or flagged (always evaluated).
    """

    def __init__(self, rates: Mapping[Any, float] | None = None, default: float = 0.02, salt: str = ""):
        self.default = _check_rate("default", default)
        self.salt = salt
        self._key = _key(salt)
        self.rates: dict[tuple[str, str], float] = {}
        for k, v in (rates or {}).items():
            self.rates[_parse_key(k)] = _check_rate(f"rates[{k!r}]", v)

    def __repr__(self) -> str:
        shown = {f"{a}/{i}" if a != ANY else i: r for (a, i), r in self.rates.items()}
        return f"Sampler(rates={shown!r}, default={self.default!r}, salt={self.salt!r})"

    @classmethod
    def from_plan(cls, plan: Mapping[str, Any] | str | os.PathLike, salt: str | None = None) -> Sampler:
        """A sampler with the rates of a plan written by ``drift sample-plan --json`` (a dict, or
        the path of the JSON file). ``salt`` overrides the plan's.

        >>> Sampler.from_plan({"kind": "drift.sample_plan", "rates": {"bot/billing": 0.1}, "default": 0.02})
        Sampler(rates={'bot/billing': 0.1}, default=0.02, salt='')
        """
        if not isinstance(plan, Mapping):
            with open(plan, encoding="utf-8") as fh:
                plan = json.load(fh)
        if not isinstance(plan, Mapping) or "rates" not in plan:
            raise ValueError("not a sample plan: no 'rates' (write one with `drift sample-plan --json`)")
        return cls(rates=plan["rates"], default=plan.get("default", 0.02),
                   salt=plan.get("salt", "") if salt is None else salt)

    def rate_for(self, app: str = "default", intent: str = "all") -> float:
        """The configured rate of an app/intent (errored and escalated requests aside)."""
        r = self.rates
        for key in ((app, intent), (ANY, intent), (app, ANY)):
            if key in r:
                return r[key]
        return self.default

    def uniform(self, trace_id: str | bytes) -> float:
        """This sampler's uniform number for ``trace_id`` (see :func:`uniform`)."""
        data = trace_id.encode("utf-8") if isinstance(trace_id, str) else bytes(trace_id)
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(), "big") * _SCALE

    def decide(self, trace_id: str | bytes, app: str = "default", intent: str = "all", *, errored: bool = False,
               escalated: bool = False, flagged: bool = False) -> bool:
        """Whether the judge evaluates this request."""
        if errored or escalated or flagged:
            return True
        return self.uniform(trace_id) < self.rate_for(app, intent)

    def rates_of(self, app: Any = "default", intent: Any = "all", n: int | None = None):
        """The rate of each request (``app``, ``intent``: a value or an array-like of ``n``)."""
        import numpy as np

        def col(v):
            if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
                return None
            return np.asarray(v, dtype=object)

        a, i = col(app), col(intent)
        if n is None:
            n = len(a) if a is not None else (len(i) if i is not None else 1)
        if a is None and i is None:
            return np.full(n, self.rate_for(app, intent))
        a = a if a is not None else np.full(n, app, dtype=object)
        i = i if i is not None else np.full(n, intent, dtype=object)
        if len(a) != n or len(i) != n:
            raise ValueError(f"app and intent must have one value per trace id ({n}), got {len(a)} and {len(i)}")
        pairs: dict[tuple[str, str], float] = {}
        out = np.empty(n)
        for k, (x, y) in enumerate(zip(a.tolist(), i.tolist())):
            r = pairs.get((x, y))
            if r is None:
                r = pairs[(x, y)] = self.rate_for(x, y)
            out[k] = r
        return out

    def decide_many(self, trace_ids: Iterable[Any], app: Any = "default", intent: Any = "all", *,
                    errored: Any = False, escalated: Any = False, flagged: Any = False):
        """:meth:`decide` for many requests at once: a boolean numpy array.

        ``app``, ``intent``, ``errored``, ``escalated`` and ``flagged`` are each one value for
        every request or an array-like with one value per trace id.
        """
        import numpy as np

        u = uniforms(trace_ids if hasattr(trace_ids, "__len__") else list(trace_ids), self._key_salt())
        n = u.size
        take = u < self.rates_of(app, intent, n)
        for flag in (errored, escalated, flagged):
            f = np.asarray(flag, dtype=bool)
            if f.ndim and f.size != n:
                raise ValueError(f"a flag array must have one value per trace id ({n}), got {f.size}")
            take |= f
        return take

    def _key_salt(self) -> bytes:
        return self._key
