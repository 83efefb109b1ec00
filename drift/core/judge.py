"""The judge join: human labels and user feedback meet the judge's score of the same trace.

``llm.labels`` and ``llm.feedback`` are co-partitioned with ``llm.scores`` (same key,
``{app}/{intent}``, same partition count), so each partition's engine holds one join (the
two-sided buffer of :class:`~drift.ingest.join.JoinBuffer`, specialised: every score event is a
left, so lefts are stored a batch at a time with C-level dict updates) in which

* every score event with a ``trace_id`` is a *left* record keyed ``(trace_id, dimension)``,
  holding the judge's verdict on the scale labels are read on (quality scores on [0, 1], higher
  is better; flags and checks 0/1 as sent);
* a label is a *right* record keyed ``(trace_id, its dimension)``;
* a thumbs-down is a right record keyed ``(trace_id, d)`` for each judge dimension ``d`` a
  ``judge_user_disagreement`` rule compares with (``relevance`` by default).

Either side may come first. A joined pair counts when its two event times are at most
``max_age`` apart (``[engine] join_max_age``), a condition on the pair alone, so it does not
depend on arrival order.

**Order.** The rules downstream are event-time detectors, and pairs complete in arrival order,
which on a live service is not event-time order (the labels topic is read at its own pace).
Pairs therefore wait in :attr:`JudgeJoin.pending` and are *released in event time*: a pair's
time is the later of its two events, and it is released once both of its series' watermarks
(newest event time minus the allowed lateness, of the score series and of the label or feedback
series) have passed it. Any pair completed later has a time at or after those watermarks (its
second event was not late), so every series receives its pairs in time order, whatever the
batching, partition reading order or restarts: ``drift replay`` and ``drift serve`` feed the
rules the same pairs in the same order.

Entries expire (event time) when the watermark of every joined stream (the scores and the
streams of the enabled judge rules) is more than ``max_age`` past them. While one of those
streams has delivered nothing yet (a live service may not have fetched its partition yet, or
nobody produces labels), nothing expires by time and the size bound (``join_max_entries``) alone
holds the buffer: expiring by the other streams' clocks would drop scores the first labels still
need. Rights that expire without their left are counted (``labels.unjoined``,
``feedback.unjoined``), like those the size bound evicts, never silently dropped.
"""

from __future__ import annotations

import collections
import math
import operator
from collections import Counter
from collections.abc import Iterable

import numpy as np

__all__ = ["JudgeJoin"]


class JudgeJoin:
    """The labels/feedback ⋈ scores join of one engine (see the module docstring).

    Parameters
    ----------
    max_age : float
        Seconds of event time a label or feedback event and its score may be apart.
    max_entries : int
        Bound of the join buffer (lefts and waiting rights together).
    feedback_dims : iterable of str
        Judge dimensions a thumbs-down is compared with.
    """

    def __init__(self, max_age: float, max_entries: int, feedback_dims: Iterable[str] = ()):
        self.max_age = float(max_age)
        self.max_entries = int(max_entries)
        self.feedback_dims = tuple(sorted(set(feedback_dims)))
        # left records: "trace_id\x1fdimension" -> (t, verdict), stored a batch at a time (dict
        # updates in C: every score event passes here, so no per-event Python work); ``chunks``
        # remembers each batch's keys and newest time, oldest first, for expiry and the bound
        self.lefts: dict[str, tuple[float, float]] = {}
        self.chunks: collections.deque = collections.deque()  # [newest t, keys]
        # right records waiting for their left: key -> [[kind, t, app, intent, dim, human], ...]
        self.rights: dict[str, list[list]] = {}
        self.n_rights = 0
        # completed pairs waiting for release: [tau, seq, kind, app, intent, dim, judge, human]
        self.pending: list[list] = []
        self.seq = 0
        self.counts: Counter = Counter()

    def __len__(self) -> int:
        return len(self.lefts) + self.n_rights

    # -- the two sides -------------------------------------------------------------------------
    def offer_scores(self, dim, t, verdict, trace_ids) -> None:
        """Score events (accepted, with their judge verdicts) as left records."""
        keep = [i for i, tid in enumerate(trace_ids) if tid is not None] if None in trace_ids else None
        if keep is not None:
            trace_ids = [trace_ids[i] for i in keep]
            dim, t, verdict = dim[keep], t[keep], verdict[keep]
        if not trace_ids:
            return
        keys = list(map(operator.add, trace_ids, [f"\x1f{d}" for d in dim.tolist()]))
        tl, vl = t.tolist(), verdict.tolist()
        self.lefts.update(zip(keys, zip(tl, vl)))
        self.chunks.append([max(tl), keys])
        if self.rights:
            for j in [j for j, k in enumerate(keys) if k in self.rights]:
                for right in self.rights.pop(keys[j]):
                    self.n_rights -= 1
                    self._pair(right, tl[j], vl[j])
        self._bound()

    def offer_labels(self, app, intent, dim, t, value, trace_ids) -> None:
        """Label events (accepted; ``value`` on the verdict scale) as right records."""
        for a, i, d, tt, v, tid in zip(app.tolist(), intent.tolist(), dim.tolist(), t.tolist(),
                                       value.tolist(), trace_ids):
            self._right(f"{tid}\x1f{d}", ["labels", tt, a, i, d, v])

    def offer_feedback(self, app, intent, t, trace_ids) -> None:
        """Thumbs-down events as right records, one per compared judge dimension."""
        for a, i, tt, tid in zip(app.tolist(), intent.tolist(), t.tolist(), trace_ids):
            for d in self.feedback_dims:
                self._right(f"{tid}\x1f{d}", ["feedback", tt, a, i, d, math.nan])

    def _right(self, key: str, value: list) -> None:
        left = self.lefts.get(key)
        if left is not None:
            self._pair(value, left[0], left[1])
            return
        self.rights.setdefault(key, []).append(value)
        self.n_rights += 1
        self._bound()

    def _pair(self, right: list, t_left: float, verdict: float) -> None:
        kind, t_right, app, intent, dim, human = right
        if abs(t_right - t_left) > self.max_age:
            self.counts[f"{kind}.too_far_apart"] += 1
            return
        self.pending.append([max(t_right, t_left), self.seq, kind, app, intent, dim, verdict, human])
        self.seq += 1
        self.counts[f"{kind}.joined"] += 1

    # -- release and expiry --------------------------------------------------------------------
    def release(self, watermark_of) -> list[list]:
        """The pending pairs both of whose series' watermarks passed them, in event-time order.

        ``watermark_of(kind, app, intent, dim)`` gives ``min`` of the score series' and the
        label/feedback series' watermarks (``-inf`` for a series not seen yet).
        """
        if not self.pending:
            return []
        marks: dict[tuple, float] = {}
        out: list[list] = []
        keep: list[list] = []
        for row in self.pending:
            key = (row[2], row[3], row[4], row[5])
            w = marks.get(key)
            if w is None:
                w = marks[key] = watermark_of(*key)
            (out if row[0] < w else keep).append(row)
        self.pending = keep
        out.sort(key=lambda r: (r[0], r[1]))
        return out

    def expire(self, watermark: float) -> None:
        """Drop entries older than ``watermark - max_age``; count the rights that never joined.

        A batch of lefts goes once its newest entry is past the cutoff (a key stored again by a
        later batch stays). Waiting rights go one by one."""
        if not math.isfinite(watermark):
            return
        cutoff = watermark - self.max_age
        while self.chunks and self.chunks[0][0] < cutoff:
            self._drop_chunk(self.chunks.popleft()[1], cutoff)
        if self.rights:
            for key in [k for k, rs in self.rights.items() if any(r[1] < cutoff for r in rs)]:
                rs = self.rights[key]
                gone = [r for r in rs if r[1] < cutoff]
                for r in gone:
                    self.counts[f"{r[0]}.unjoined"] += 1
                rest = [r for r in rs if r[1] >= cutoff]
                self.n_rights -= len(gone)
                if rest:
                    self.rights[key] = rest
                else:
                    del self.rights[key]

    def _drop_chunk(self, keys: list, cutoff: float) -> int:
        lefts = self.lefts
        n = 0
        for k in keys:
            v = lefts.get(k)
            if v is not None and v[0] <= cutoff:
                del lefts[k]
                n += 1
        return n

    def _bound(self) -> None:
        """Beyond ``max_entries``, the oldest batches of lefts go first, then the oldest rights."""
        while len(self) > self.max_entries and self.chunks:
            self.counts["evicted_lefts"] += self._drop_chunk(self.chunks.popleft()[1], math.inf)
        while len(self) > self.max_entries and self.rights:
            key = min(self.rights, key=lambda k: self.rights[k][0][1])
            r = self.rights[key].pop(0)
            if not self.rights[key]:
                del self.rights[key]
            self.n_rights -= 1
            self.counts[f"{r[0]}.unjoined"] += 1

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        keys = list(self.lefts)
        tv = np.array(list(self.lefts.values()), np.float64).reshape(-1, 2)
        chunk_keys = [k for c in self.chunks for k in c[1]]
        return {"version": 2, "left_keys": _pack(keys), "left_t": tv[:, 0].copy(), "left_v": tv[:, 1].copy(),
                "chunks": np.array([[c[0], len(c[1])] for c in self.chunks], np.float64).reshape(-1, 2),
                "chunk_keys": _pack(chunk_keys),
                "rights": {k: [list(r) for r in rs] for k, rs in self.rights.items()},
                "pending": [list(r) for r in self.pending], "seq": self.seq, "counts": dict(self.counts),
                "feedback_dims": list(self.feedback_dims)}

    def load_state(self, state: dict) -> None:
        if state.get("version") != 2:
            raise ValueError(f"judge join state version {state.get('version')!r}, this engine reads 2")
        self.lefts = dict(zip(_unpack(state["left_keys"]), zip(np.asarray(state["left_t"]).tolist(),
                                                               np.asarray(state["left_v"]).tolist())))
        keys = _unpack(state["chunk_keys"])
        self.chunks = collections.deque()
        i = 0
        for newest, n in np.asarray(state["chunks"]).reshape(-1, 2).tolist():
            self.chunks.append([float(newest), keys[i:i + int(n)]])
            i += int(n)
        self.rights = {k: [list(r) for r in rs] for k, rs in state["rights"].items()}
        self.n_rights = sum(len(rs) for rs in self.rights.values())
        self.pending = [list(r) for r in state["pending"]]
        self.seq = int(state["seq"])
        self.counts = Counter(state.get("counts", {}))


_SEP = "\x1e"


def _pack(keys: list[str]) -> str | list[str]:
    """Many keys as one string (a checkpoint encodes one string far faster than 200,000), or the
    list itself when a key holds the separator."""
    joined = _SEP.join(keys)
    return joined if joined.count(_SEP) == max(len(keys) - 1, 0) else keys


def _unpack(packed) -> list[str]:
    if isinstance(packed, list):
        return packed
    return packed.split(_SEP) if packed else []


def pairs_columns(rows: list[list]) -> dict[str, np.ndarray]:
    """Released rows as columns (``tau``, ``kind``, ``app``, ``intent``, ``dimension``, ``judge``, ``human``)."""
    return {"tau": np.array([r[0] for r in rows], np.float64),
            "kind": np.array([r[2] for r in rows], dtype=object),
            "app": np.array([r[3] for r in rows], dtype=object),
            "intent": np.array([r[4] for r in rows], dtype=object),
            "dimension": np.array([r[5] for r in rows], dtype=object),
            "judge": np.array([r[6] for r in rows], np.float64),
            "human": np.array([r[7] for r in rows], np.float64)}
