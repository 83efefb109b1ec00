"""The judge join: human labels and user feedback meet the judge's score of the same trace.

``llm.labels`` and ``llm.feedback`` are co-partitioned with ``llm.scores`` (same key,
``{app}/{intent}``, same partition count), so each partition's engine holds one
:class:`~drift.ingest.join.JoinBuffer` in which

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

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from drift.ingest.join import JoinBuffer

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
        self.buffer = JoinBuffer(int(max_entries), self.max_age)
        self.feedback_dims = tuple(sorted(set(feedback_dims)))
        # completed pairs waiting for release: [tau, seq, kind, app, intent, dim, judge, human]
        self.pending: list[list] = []
        self.seq = 0
        self.counts: Counter = Counter()

    # -- the two sides -------------------------------------------------------------------------
    def offer_scores(self, dim, t, verdict, trace_ids) -> None:
        """Score events (accepted, with their judge verdicts) as left records."""
        put = self.buffer.put_left
        for d, tt, v, tid in zip(dim.tolist(), t.tolist(), verdict.tolist(), trace_ids):
            if tid is None:
                continue
            for right in put(tid, d, tt, [tt, v]):
                self._pair(right, tt, v)

    def offer_labels(self, app, intent, dim, t, value, trace_ids) -> None:
        """Label events (accepted; ``value`` on the verdict scale) as right records."""
        for a, i, d, tt, v, tid in zip(app.tolist(), intent.tolist(), dim.tolist(), t.tolist(),
                                       value.tolist(), trace_ids):
            self._right(tid, d, ["labels", tt, a, i, d, v])

    def offer_feedback(self, app, intent, t, trace_ids) -> None:
        """Thumbs-down events as right records, one per compared judge dimension."""
        for a, i, tt, tid in zip(app.tolist(), intent.tolist(), t.tolist(), trace_ids):
            for d in self.feedback_dims:
                self._right(tid, d, ["feedback", tt, a, i, d, math.nan])

    def _right(self, tid, d, value) -> None:
        left = self.buffer.put_right(tid, d, value[1], value)
        if left is not None:
            self._pair(value, left[0], left[1])

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
        """Drop entries older than ``watermark - max_age``; count the rights that never joined."""
        if not math.isfinite(watermark):
            lefts, rights = self.buffer.take_evicted()
        else:
            lefts, rights = self.buffer.expire(watermark)
        for r in rights:
            self.counts[f"{r[0]}.unjoined"] += 1

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "pending": [list(r) for r in self.pending], "seq": self.seq,
                "counts": dict(self.counts), "feedback_dims": list(self.feedback_dims)}

    def load_state(self, state: dict) -> None:
        self.buffer = JoinBuffer.from_state(state["buffer"])
        self.pending = [list(r) for r in state["pending"]]
        self.seq = int(state["seq"])
        self.counts = Counter(state.get("counts", {}))


def pairs_columns(rows: list[list]) -> dict[str, np.ndarray]:
    """Released rows as columns (``tau``, ``kind``, ``app``, ``intent``, ``dimension``, ``judge``, ``human``)."""
    return {"tau": np.array([r[0] for r in rows], np.float64),
            "kind": np.array([r[2] for r in rows], dtype=object),
            "app": np.array([r[3] for r in rows], dtype=object),
            "intent": np.array([r[4] for r in rows], dtype=object),
            "dimension": np.array([r[5] for r in rows], dtype=object),
            "judge": np.array([r[6] for r in rows], np.float64),
            "human": np.array([r[7] for r in rows], np.float64)}
