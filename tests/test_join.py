"""JoinBuffer: both arrival orders, expiry in event time, the size bound, checkpoints.

A model-based check runs random operation sequences against a naive reference buffer.
"""

from __future__ import annotations

import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import drift.ingest.join as join_module
from drift.ingest.join import JoinBuffer


def test_module_examples_run():
    result = doctest.testmod(join_module)
    assert result.attempted > 0 and result.failed == 0


def test_right_first_waits_then_joins_when_left_arrives():
    buf = JoinBuffer(max_entries=10, max_age=60.0)
    assert buf.put_right("t1", "span:a", 10.0, "r1") is None
    assert buf.put_right("t1", "span:a", 11.0, "r2") is None
    assert buf.put_right("t1", "span:b", 11.0, "other-key") is None
    assert buf.put_right("t2", "span:a", 11.0, "other-trace") is None
    assert (len(buf), buf.n_left, buf.n_right) == (4, 0, 4)
    assert buf.put_left("t1", "span:a", 9.0, "L") == ["r1", "r2"]  # in arrival order, removed
    assert (buf.n_left, buf.n_right) == (1, 2)
    assert buf.put_left("t1", "span:a", 9.0, "L") == []  # nothing left waiting
    assert buf.get_left("t1", "span:a") == "L"
    assert buf.get_left("t1", "span:b") is None


def test_left_first_joins_every_later_right_and_stays():
    buf = JoinBuffer(max_entries=10, max_age=60.0)
    assert buf.put_left("t1", "k", 5.0, {"app": "bot"}) == []
    assert buf.put_right("t1", "k", 6.0, "r1") == {"app": "bot"}
    assert buf.put_right("t1", "k", 7.0, "r2") == {"app": "bot"}
    assert (buf.n_left, buf.n_right) == (1, 0)  # joined rights are not stored
    assert buf.put_right("t1", "other", 7.0, "r3") is None
    buf.put_left("t1", "k", 8.0, {"app": "new"})  # a newer left replaces the older one
    assert buf.put_right("t1", "k", 9.0, "r4") == {"app": "new"}
    assert buf.n_left == 1


def test_expire_drops_by_event_time_and_reports_rights():
    buf = JoinBuffer(max_entries=10, max_age=100.0)
    buf.put_left("t1", "a", 0.0, "L-old")
    buf.put_left("t1", "b", 50.0, "L-new")
    buf.put_right("t2", "x", 10.0, "R-old")
    buf.put_right("t2", "y", 60.0, "R-new")
    assert buf.expire(100.0) == (0, [])  # cutoff 0: an entry exactly at the cutoff stays
    assert buf.expire(120.0) == (1, ["R-old"])  # cutoff 20
    assert buf.get_left("t1", "a") is None and buf.get_left("t1", "b") == "L-new"
    assert buf.expire(120.0) == (0, [])
    assert buf.put_left("t2", "y", 61.0, "L") == ["R-new"]
    assert buf.expire(1000.0) == (2, [])
    assert len(buf) == 0


def test_refreshed_left_expires_by_its_new_time():
    buf = JoinBuffer(max_entries=10, max_age=10.0)
    buf.put_left("t", "k", 0.0, "v1")
    buf.put_left("t", "k", 50.0, "v2")
    assert buf.expire(55.0) == (0, [])  # the stale heap entry of v1 is not a live entry
    assert buf.get_left("t", "k") == "v2"
    assert buf.expire(61.0) == (1, [])


def test_bound_evicts_oldest_by_event_time_and_counts_it():
    buf = JoinBuffer(max_entries=3, max_age=1e9)
    buf.put_right("t", "a", 30.0, "R30")
    buf.put_right("t", "b", 10.0, "R10")  # oldest in event time, though not the first stored
    buf.put_left("t", "c", 20.0, "L20")
    assert len(buf) == 3 and buf.take_evicted() == (0, [])
    buf.put_right("t", "d", 40.0, "R40")
    assert len(buf) == 3
    assert buf.take_evicted() == (0, ["R10"])
    assert buf.take_evicted() == (0, [])  # reported once
    buf.put_right("t", "e", 50.0, "R50")  # evicts the left at 20
    assert buf.get_left("t", "c") is None
    assert buf.expire(0.0) == (1, [])  # evictions not yet taken are reported by expire
    assert len(buf) == 3


def test_state_round_trips_through_json_and_behaves_the_same():
    def ops(buf):
        out = [buf.put_right("t1", "a", 100.0, {"d": "x", "s": 0.5})]
        out.append(buf.put_left("t1", "a", 101.0, {"app": "bot", "ts": 101.0}))
        out.append(buf.put_right("t3", "c", 99.5, ["list", 1]))
        out.append(buf.expire(250.0))
        out.append(buf.put_left("t3", "c", 260.0, "L"))
        out.append(buf.expire(10_000.0))
        return out

    a = JoinBuffer(max_entries=4, max_age=100.0)
    a.put_left("t1", "z", 50.0, {"app": "bot"})
    a.put_right("t2", "b", 120.0, {"d": "y", "s": 1.0})
    a.put_right("t2", "b", 121.0, {"d": "z", "s": 0.0})
    a.put_right("t9", "q", 1.0, "evicted-soon")
    a.put_right("t9", "r", 2.0, "evicts")  # 5 entries > 4: the right at 1.0 is evicted, not yet taken
    state = json.loads(json.dumps(a.state_dict()))
    b = JoinBuffer.from_state(state)
    assert b.state_dict() == a.state_dict()
    assert len(b) == len(a) == 4
    assert ops(b) == ops(a)
    assert b.state_dict() == a.state_dict()


@pytest.mark.parametrize("state", [
    {}, {"version": 2}, {"version": 1, "max_entries": 3, "max_age": 1.0, "seq": 0, "entries": [[0, "middle", "t", "k", 1.0, None]]},
    {"version": 1, "max_entries": 3, "max_age": 1.0, "seq": 0, "entries": 5},
    {"version": 1, "max_entries": 0, "max_age": 1.0, "seq": 0, "entries": []},
])
def test_malformed_state_raises_value_error(state):
    with pytest.raises(ValueError):
        JoinBuffer.from_state(state)


@pytest.mark.parametrize("kw", [dict(max_entries=0, max_age=1.0), dict(max_entries=1.5, max_age=1.0),
                                dict(max_entries=True, max_age=1.0), dict(max_entries=1, max_age=-1.0),
                                dict(max_entries=1, max_age=float("nan"))])
def test_bad_bounds_are_rejected(kw):
    with pytest.raises(ValueError):
        JoinBuffer(**kw)


def test_non_finite_time_is_rejected():
    buf = JoinBuffer(1, 1.0)
    with pytest.raises(ValueError, match="t:"):
        buf.put_right("t", "k", float("nan"), 1)


# -- model-based: random operations against a naive reference -------------------------------------

class Reference:
    """The documented semantics, written the slow and obvious way."""

    def __init__(self, max_entries, max_age):
        self.max_entries, self.max_age = max_entries, max_age
        self.entries = []  # [t, seq, side, trace, key, value]
        self.seq = 0
        self.ev_left, self.ev_right = 0, []

    def _add(self, side, tr, k, t, v):
        self.entries.append([t, self.seq, side, tr, k, v])
        self.seq += 1

    def _bound(self):
        while len(self.entries) > self.max_entries:
            e = min(self.entries, key=lambda e: (e[0], e[1]))
            self.entries.remove(e)
            if e[2] == "left":
                self.ev_left += 1
            else:
                self.ev_right.append(e[5])

    def put_left(self, tr, k, t, v):
        self.entries = [e for e in self.entries if not (e[2] == "left" and e[3] == tr and e[4] == k)]
        self._add("left", tr, k, t, v)
        waiting = sorted((e for e in self.entries if e[2] == "right" and e[3] == tr and e[4] == k), key=lambda e: e[1])
        self.entries = [e for e in self.entries if e not in waiting]
        self._bound()
        return [e[5] for e in waiting]

    def put_right(self, tr, k, t, v):
        for e in self.entries:
            if e[2] == "left" and e[3] == tr and e[4] == k:
                return e[5]
        self._add("right", tr, k, t, v)
        self._bound()
        return None

    def expire(self, wm):
        cutoff = wm - self.max_age
        old = sorted((e for e in self.entries if e[0] < cutoff), key=lambda e: (e[0], e[1]))
        self.entries = [e for e in self.entries if e[0] >= cutoff]
        lefts = self.ev_left + sum(e[2] == "left" for e in old)
        rights = self.ev_right + [e[5] for e in old if e[2] == "right"]
        self.ev_left, self.ev_right = 0, []
        return lefts, rights


_op = st.tuples(st.sampled_from(["left", "right", "expire", "checkpoint"]), st.sampled_from(["t1", "t2"]),
                st.sampled_from(["a", "b", "c"]), st.integers(0, 50).map(float))


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=40), max_entries=st.integers(1, 5), max_age=st.sampled_from([0.0, 5.0, 20.0]))
def test_matches_reference_model(ops, max_entries, max_age):
    buf, ref = JoinBuffer(max_entries, max_age), Reference(max_entries, max_age)
    for i, (op, tr, k, t) in enumerate(ops):
        if op == "left":
            assert buf.put_left(tr, k, t, f"L{i}") == ref.put_left(tr, k, t, f"L{i}")
        elif op == "right":
            assert buf.put_right(tr, k, t, f"R{i}") == ref.put_right(tr, k, t, f"R{i}")
        elif op == "expire":
            assert buf.expire(t) == ref.expire(t)  # evicted first, then expired oldest first
        else:
            buf = JoinBuffer.from_state(json.loads(json.dumps(buf.state_dict())))
        assert len(buf) == len(ref.entries)
        assert len(buf) <= max_entries
