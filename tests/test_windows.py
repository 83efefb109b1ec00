"""Event-time clock and windowed aggregates."""

import numpy as np
import pytest

from detectors.windows import EventClock, WindowedAggregate


def reference_clock(series, t, bucket, lateness):
    """Plain-Python per-series clock: late flags and closed bucket after each event."""
    max_t, late, closed = {}, [], []
    for s, ti in zip(series.tolist(), t.tolist()):
        m = max_t.get(s, -np.inf)
        is_late = ti < m - lateness
        late.append(is_late)
        if not is_late:
            max_t[s] = max(m, ti)
        closed.append(int(np.floor((max_t[s] - lateness) / bucket)) - 1 if s in max_t else None)
    return np.array(late), max_t


def test_late_mask_matches_reference_on_out_of_order_stream():
    rng = np.random.default_rng(0)
    n = 5000
    series = rng.integers(0, 7, n)
    t = np.arange(n) * 1.0 + rng.normal(0, 40, n)
    late_ref, max_ref = reference_clock(series, t, 60.0, 30.0)
    for sizes in ([n], [1] * n, [313] * 15 + [n - 313 * 15]):
        clock = EventClock(60.0, 30.0)
        late, i = [], 0
        for k in sizes:
            late.append(clock.plan(series[i:i + k], t[i:i + k]).late)
            i += k
        late = np.concatenate(late)
        assert late.sum() > 100  # the stream really is out of order
        np.testing.assert_array_equal(late, late_ref)
        for s, m in max_ref.items():
            assert clock.max_t[s] == m


def test_observe_agrees_with_plan():
    rng = np.random.default_rng(1)
    series = rng.integers(0, 3, 1000)
    t = np.arange(1000) + rng.normal(0, 20, 1000)
    a, b = EventClock(60.0, 10.0), EventClock(60.0, 10.0)
    np.testing.assert_array_equal(a.observe(series, t), b.plan(series, t).late)
    np.testing.assert_array_equal(a.max_t, b.max_t)


def test_rounds_close_every_bucket_once_and_in_order():
    clock = EventClock(10.0, 0.0)
    series = np.array([0, 1, 0, 1, 0])
    t = np.array([1.0, 2.0, 25.0, 55.0, 61.0])
    closes = {0: [], 1: []}
    for r in clock.plan(series, t).rounds:
        for s in r.close_series.tolist():
            closes[s].append(r.closed)
    assert closes == {0: [0, 1, 2, 3, 4, 5], 1: [0, 1, 2, 3, 4]}


def test_windowed_aggregate_window_baseline_and_freeze():
    agg = WindowedAggregate(window=2, baseline=3, ahead=2, row=(1,), dtype=np.float64)
    agg.ensure(1)
    s = np.array([0])
    for b in range(8):
        agg.add(s, np.array([b]), rows=np.array([[float(b)]]))
        agg.close(s, b, frozen=np.array([b >= 5]))
        assert agg.win[0, 0] == b + (b - 1 if b >= 1 else 0)  # the last two buckets
    # buckets 0..2 left the window unfrozen at closes 2..4; closes 5..7 were frozen
    assert agg.base_sum[0, 0] == 0 + 1 + 2
    first, last = agg.base_span(s)
    assert (first[0], last[0]) == (0, 2)
    agg.accept_reference(s)
    assert agg.has_ref[0] and agg.ref[0, 0] == 3


def test_state_round_trip_keeps_layout_checked():
    agg = WindowedAggregate(window=2, baseline=3, ahead=2, row=(4,), dtype=np.uint32)
    agg.ensure(3)
    agg.add(np.array([1, 2]), np.array([0, 0]), bins=np.array([3, 1]))
    other = WindowedAggregate(window=2, baseline=3, ahead=2, row=(4,), dtype=np.uint32)
    other.load_state(agg.state_dict())
    np.testing.assert_array_equal(other.ring, agg.ring)
    wrong = WindowedAggregate(window=3, baseline=3, ahead=2, row=(4,), dtype=np.uint32)
    try:
        wrong.load_state(agg.state_dict())
    except ValueError as exc:
        assert "layout" in str(exc)
    else:
        raise AssertionError("a state of another layout must be refused")


def test_histogram_baseline_ring_is_kept_in_the_ring_dtype_and_old_states_load():
    """The baseline ring holds single buckets, as the ring does: a histogram of small counts is
    kept as uint8 with int32 sums; a state written with the old int64 ring loads narrow and goes
    on to the same numbers."""
    rng = np.random.default_rng(3)

    def run(agg, start, stop):
        s = np.arange(2)
        for b in range(start, stop):
            for k in range(2):
                agg.add(np.full(50, k), np.full(50, b), bins=rng.integers(0, 8, 50))
            agg.close(s, b, frozen=np.array([False, b % 5 == 0]))

    agg = WindowedAggregate(window=3, baseline=4, ahead=2, row=(8,), dtype=np.uint32)
    agg.ensure(2)
    assert agg.base_ring.dtype == np.uint8 and agg.base_sum.dtype == np.int32  # narrow until counts need more
    run(agg, 0, 12)
    old = agg.state_dict()
    old["base_ring"] = old["base_ring"].astype(np.int64)  # as checkpoints before the change hold it
    restored = WindowedAggregate(window=3, baseline=4, ahead=2, row=(8,), dtype=np.uint32)
    restored.load_state(old)
    assert restored.base_ring.dtype == np.uint8
    state = rng.bit_generator.state
    run(agg, 12, 30)
    rng.bit_generator.state = state
    run(restored, 12, 30)
    for name in WindowedAggregate._arrays:
        np.testing.assert_array_equal(getattr(restored, name), getattr(agg, name))
    np.testing.assert_array_equal(agg.base_sum, agg.base_ring.sum(axis=1))  # the ring still sums exactly


@pytest.mark.parametrize("batch", [97, 5_000, 250_000])
def test_histogram_counts_widen_exactly_when_a_bucket_outgrows_its_type(batch):
    """Unsigned buckets start as uint8 and widen (uint16, uint32, with int64 sums) the moment a
    count would not fit: the counts equal those of an int64 aggregate fed the same events, at
    every close, whatever the batch size; a state saved narrow or wide loads and continues."""
    rng = np.random.default_rng(batch)
    narrow = WindowedAggregate(window=3, baseline=4, ahead=2, row=(4,), dtype=np.uint32)
    exact = WindowedAggregate(window=3, baseline=4, ahead=2, row=(4,), dtype=np.int64)
    narrow.ensure(2)
    exact.ensure(2)
    seen = set()
    for b in range(14):
        # one busy series (bin 0 takes most of it: 100,000 events a bucket by the end) and a quiet one
        n = 40 if b < 4 else 600 if b < 8 else 100_000
        series = np.r_[np.zeros(n, np.int64), np.ones(5, np.int64)]
        bins = np.r_[np.where(rng.random(n) < 0.9, 0, rng.integers(0, 4, n)), rng.integers(0, 4, 5)]
        order = rng.permutation(series.size)
        for lo in range(0, series.size, batch):
            part = order[lo:lo + batch]
            for agg in (narrow, exact):
                agg.add(series[part], np.full(part.size, b), bins=bins[part])
        for agg in (narrow, exact):
            agg.close(np.arange(2), b, frozen=np.zeros(2, bool))
        seen.add(narrow.ring.dtype.name)
        for name in WindowedAggregate._arrays:
            np.testing.assert_array_equal(getattr(narrow, name), getattr(exact, name), err_msg=name)
        if b == 6:  # restored mid-way, while uint16
            again = WindowedAggregate(window=3, baseline=4, ahead=2, row=(4,), dtype=np.uint32)
            again.load_state(narrow.state_dict())
            assert again.ring.dtype == narrow.ring.dtype == np.uint16 and again.win.dtype == np.int32
            narrow = again
    assert seen == {"uint8", "uint16", "uint32"}
    assert narrow.win.dtype == narrow.base_sum.dtype == np.int64


def test_a_long_term_reference_from_a_busier_past_keeps_wide_sums_when_a_quiet_state_loads():
    """The rings of a state may hold small counts while its accepted reference holds the sums of a
    busier past: loading it narrow must not wrap the reference into int32."""
    agg = WindowedAggregate(window=2, baseline=400, ahead=2, row=(2,), dtype=np.uint32)
    agg.ensure(1)
    agg.add(np.zeros(70_000, np.int64), np.zeros(70_000, np.int64), bins=np.zeros(70_000, np.int64))
    assert agg.ring.dtype == np.uint32  # one busy bucket widened the buckets
    for b in range(3):
        agg.close(np.zeros(1, np.int64), b, frozen=np.zeros(1, bool))
    agg.accept_reference(np.zeros(1, np.int64))
    agg.ref[0, 0] = 2_400_000_000  # a reference summed over a busier baseline than int32 holds
    for b in range(3, 410):  # quiet since: the rings hold counts of at most 1
        agg.add(np.zeros(1, np.int64), np.full(1, b), bins=np.ones(1, np.int64))
        agg.close(np.zeros(1, np.int64), b, frozen=np.zeros(1, bool))
    back = WindowedAggregate(window=2, baseline=400, ahead=2, row=(2,), dtype=np.uint32)
    back.load_state(agg.state_dict())
    assert back.ref[0, 0] == 2_400_000_000 and back.ref.dtype == np.int64
    with pytest.raises(TypeError, match="counts bins"):
        back.add(np.zeros(1, np.int64), np.full(1, 500), rows=np.ones((1, 2)))
