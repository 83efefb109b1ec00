"""A bounded, checkpointable two-sided join buffer keyed by trace id.

Records of two kinds meet here: *left* records (the thing being referred to: a span, a scored
response) and *right* records (the things that refer to it: an evaluation, a human label, user
feedback). Both are keyed by ``(trace_id, key)``, the secondary ``key`` saying which record of
the trace (``"span:<span id>"``, ``"resp:<response id>"``, …). Either side may arrive first:

- :meth:`JoinBuffer.put_left` stores (or refreshes) the left record and hands back the right
  values that were waiting for it, removing them; the left stays, so later rights join too.
- :meth:`JoinBuffer.put_right` hands back the matching left value, or buffers the right value
  until its left arrives.

Nothing waits forever. Every entry carries an event time ``t``; :meth:`JoinBuffer.expire` drops
the entries older than ``watermark - max_age`` (event time, so a replay expires exactly like the
live run). The buffer never holds more than ``max_entries`` entries (lefts and rights
together): a put beyond the bound evicts the oldest entries by event time at once, and the
evicted ones are reported by the next :meth:`JoinBuffer.take_evicted` or
:meth:`JoinBuffer.expire`, so they are counted, not lost silently.

Values are whatever the caller stores; for :meth:`JoinBuffer.state_dict` to be a JSON
document they must be JSON values (dicts of strings and numbers, say). The buffer is
deterministic: the same calls in the same order give the same results and the same state.

>>> buf = JoinBuffer(max_entries=10, max_age=60.0)
>>> buf.put_right("t1", "span:a", 100.0, {"score": 0.9}) is None   # no left yet: buffered
True
>>> buf.put_left("t1", "span:a", 99.0, {"app": "bot"})               # the waiting right joins
[{'score': 0.9}]
>>> buf.put_right("t1", "span:a", 101.0, {"score": 0.4})             # later rights join at once
{'app': 'bot'}
>>> buf.expire(200.0)                                                # (expired lefts, dropped rights)
(1, [])
"""

from __future__ import annotations

import heapq
import math
from typing import Any

__all__ = ["JoinBuffer"]

_LEFT, _RIGHT = "left", "right"


class JoinBuffer:
    """Two-sided join buffer keyed by ``(trace_id, key)``, bounded in age and in size.

    Parameters
    ----------
    max_entries : int
        Most entries (lefts and rights together) held at once; the oldest by event time are
        evicted beyond it.
    max_age : float
        Seconds of event time an entry is kept: :meth:`expire` drops entries with
        ``t < watermark - max_age``.
    """

    def __init__(self, max_entries: int, max_age: float):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries: expected a positive integer, got {max_entries!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) \
                or not math.isfinite(max_age) or max_age < 0:
            raise ValueError(f"max_age: expected a non-negative number of seconds, got {max_age!r}")
        self.max_entries = max_entries
        self.max_age = float(max_age)
        self._left: dict[tuple[str, str], tuple[float, int, Any]] = {}
        self._right: dict[tuple[str, str], list[tuple[float, int, Any]]] = {}
        # (t, seq, side, trace_id, key); entries whose seq is no longer live are skipped (lazy delete)
        self._heap: list[tuple[float, int, str, str, str]] = []
        self._live: set[int] = set()
        self._seq = 0
        self._evicted_lefts = 0
        self._evicted_rights: list[Any] = []

    # -- the two sides -----------------------------------------------------------------------

    def put_left(self, trace_id: str, key: str, t: float, value: Any) -> list:
        """Store the left record of ``(trace_id, key)`` (replacing an older one).

        Returns
        -------
        list
            The right values that were waiting for it, oldest first; they leave the buffer.
        """
        k = (trace_id, key)
        old = self._left.get(k)
        if old is not None:
            self._live.discard(old[1])
        seq = self._push(_LEFT, trace_id, key, t)
        self._left[k] = (float(t), seq, value)
        waiting = self._right.pop(k, None)
        out = []
        if waiting:
            for _, s, v in waiting:
                self._live.discard(s)
                out.append(v)
        self._bound()
        return out

    def put_right(self, trace_id: str, key: str, t: float, value: Any) -> Any | None:
        """Join a right record with its left one, or buffer it until the left arrives.

        Returns
        -------
        object or None
            The matched left value (which stays, for more rights), or ``None`` when the right
            value was buffered.
        """
        left = self._left.get((trace_id, key))
        if left is not None:
            return left[2]
        seq = self._push(_RIGHT, trace_id, key, t)
        self._right.setdefault((trace_id, key), []).append((float(t), seq, value))
        self._bound()
        return None

    def pop_right(self, trace_id: str, key: str) -> list:
        """Remove and return the right values waiting for ``(trace_id, key)``, oldest first,
        without storing a left (for a record that joins only when someone is waiting)."""
        waiting = self._right.pop((trace_id, key), None)
        if not waiting:
            return []
        for _, s, _v in waiting:
            self._live.discard(s)
        return [v for _, _, v in waiting]

    def get_left(self, trace_id: str, key: str) -> Any | None:
        """The left value stored for ``(trace_id, key)``, or ``None``."""
        left = self._left.get((trace_id, key))
        return None if left is None else left[2]

    # -- expiry and the bound ----------------------------------------------------------------

    def expire(self, watermark: float) -> tuple[int, list]:
        """Drop every entry older than ``watermark - max_age``.

        Returns
        -------
        tuple of (int, list)
            The number of left entries dropped and the right values dropped (their left never
            came), including those evicted by the size bound since the last report.
        """
        cutoff = float(watermark) - self.max_age
        lefts, rights = self.take_evicted()
        heap = self._heap
        while heap and heap[0][0] < cutoff:
            t, seq, side, trace_id, key = heapq.heappop(heap)
            if seq not in self._live:
                continue
            if self._remove(side, trace_id, key, seq, rights):
                lefts += 1
        self._compact()
        return lefts, rights

    def take_evicted(self) -> tuple[int, list]:
        """The entries evicted by the size bound since the last call: (left count, right values)."""
        out = (self._evicted_lefts, self._evicted_rights)
        self._evicted_lefts, self._evicted_rights = 0, []
        return out

    def __len__(self) -> int:
        return len(self._live)

    @property
    def n_left(self) -> int:
        """Left entries held."""
        return len(self._left)

    @property
    def n_right(self) -> int:
        """Right entries held (waiting for their left)."""
        return len(self._live) - len(self._left)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """A JSON document of the whole buffer (its values must be JSON values)."""
        entries = []
        for (trace_id, key), (t, seq, value) in self._left.items():
            entries.append([seq, _LEFT, trace_id, key, t, value])
        for (trace_id, key), items in self._right.items():
            for t, seq, value in items:
                entries.append([seq, _RIGHT, trace_id, key, t, value])
        entries.sort(key=lambda e: e[0])
        return {
            "version": 1, "max_entries": self.max_entries, "max_age": self.max_age, "seq": self._seq,
            "entries": entries, "evicted_lefts": self._evicted_lefts, "evicted_rights": list(self._evicted_rights),
        }

    @classmethod
    def from_state(cls, state: dict) -> JoinBuffer:
        """Rebuild a buffer from :meth:`state_dict` (after a JSON round trip, say)."""
        try:
            if state.get("version") != 1:
                raise ValueError(f"version: expected 1, got {state.get('version')!r}")
            buf = cls(int(state["max_entries"]), float(state["max_age"]))
            buf._seq = int(state["seq"])
            for seq, side, trace_id, key, t, value in state["entries"]:
                seq, t = int(seq), float(t)
                if side == _LEFT:
                    buf._left[(trace_id, key)] = (t, seq, value)
                elif side == _RIGHT:
                    buf._right.setdefault((trace_id, key), []).append((t, seq, value))
                else:
                    raise ValueError(f"entries: unknown side {side!r}")
                buf._live.add(seq)
                buf._heap.append((t, seq, side, trace_id, key))
                buf._seq = max(buf._seq, seq + 1)
            heapq.heapify(buf._heap)
            buf._evicted_lefts = int(state.get("evicted_lefts", 0))
            buf._evicted_rights = list(state.get("evicted_rights", []))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"join buffer state is malformed: {exc!r}") from None
        return buf

    # -- internals ---------------------------------------------------------------------------

    def _push(self, side: str, trace_id: str, key: str, t: float) -> int:
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t: expected a finite event time, got {t!r}")
        seq = self._seq
        self._seq += 1
        self._live.add(seq)
        heapq.heappush(self._heap, (t, seq, side, trace_id, key))
        return seq

    def _remove(self, side: str, trace_id: str, key: str, seq: int, rights: list) -> bool:
        """Remove the live entry ``seq``; a right's value goes to ``rights``. True for a left."""
        self._live.discard(seq)
        k = (trace_id, key)
        if side == _LEFT:
            self._left.pop(k, None)
            return True
        items = self._right.get(k, [])
        for i, (_, s, value) in enumerate(items):
            if s == seq:
                rights.append(value)
                del items[i]
                break
        if not items:
            self._right.pop(k, None)
        return False

    def _bound(self) -> None:
        heap = self._heap
        while len(self._live) > self.max_entries and heap:
            _, seq, side, trace_id, key = heapq.heappop(heap)
            if seq in self._live and self._remove(side, trace_id, key, seq, self._evicted_rights):
                self._evicted_lefts += 1
        self._compact()

    def _compact(self) -> None:
        # Lazily deleted heap entries (joined rights, replaced lefts) pile up; rebuild when they dominate.
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if e[1] in self._live]
            heapq.heapify(self._heap)
