"""Detectors on seeded streams with known change points: exact detection points and behaviours."""

import numpy as np
import pytest

from detectors.drop import PercentDrop
from detectors.rate import RateRatio
from detectors.shift import KsShift

DAY = 86400.0


def one_series(n, days, seed, value_of_t):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, days * DAY, n))
    return np.zeros(n, np.int64), t, value_of_t(t, rng)


def statuses(findings):
    return [(f.status, round(f.at / DAY, 3)) for f in findings]


def test_mean_drop_fires_at_the_exact_seeded_point():
    s, t, x = one_series(40_000, 40, 7, lambda t, r: np.clip(r.normal(np.where(t < 20 * DAY, 0.9, 0.8), 0.05), 0, 1))
    f = PercentDrop(stat="mean").update_many(s, t, x)
    assert statuses(f) == [("firing", 23.083)]
    assert f[0].reference_kind == "baseline" and f[0].value >= 0.05 and f[0].p_value < 1e-3
    assert f[0].window.n > 5000 and f[0].reference.value == pytest.approx(0.9, abs=0.005)


def test_stable_stream_never_fires():
    s, t, x = one_series(60_000, 90, 1, lambda t, r: np.clip(r.normal(0.85 + 0.01 * np.sin(t / DAY * 2 * np.pi), 0.08), 0, 1))
    for det in (PercentDrop(stat="mean"), PercentDrop(stat="median", bucket=6 * 3600, window=3 * DAY, baseline=7 * DAY),
                KsShift()):
        assert det.update_many(s, t, x) == []


def test_baseline_is_frozen_while_firing_so_a_degraded_level_keeps_firing():
    # 0.9 → 0.8 on day 20 and it stays there for 50 days: without the freeze the baseline
    # would absorb 0.8 after 7 + 14 days and the alert would resolve.
    s, t, x = one_series(70_000, 70, 3, lambda t, r: np.clip(r.normal(np.where(t < 20 * DAY, 0.9, 0.8), 0.05), 0, 1))
    det = PercentDrop(stat="mean")
    f = det.update_many(s, t, x)
    assert [x.status for x in f] == ["firing"]
    first, last = det.agg.base_span(np.array([0]))
    assert last[0] * 3600 < 20 * DAY  # nothing after the change entered the baseline


def test_recovery_resolves_once_without_flapping():
    def v(t, r):
        bad = (t >= 20 * DAY) & (t < 30 * DAY)
        return np.clip(r.normal(np.where(bad, 0.75, 0.9), 0.05), 0, 1)
    s, t, x = one_series(60_000, 60, 4, v)
    f = PercentDrop(stat="mean").update_many(s, t, x)
    assert [x.status for x in f] == ["firing", "resolved"]
    assert f[1].episode_start == f[0].episode_start
    assert 30 * DAY < f[1].at < 40 * DAY


def test_slow_decline_is_caught_by_the_long_term_reference_only():
    # 0.9 for four weeks, then -0.35 % a day for 40 days: the rolling baseline follows
    # the decline (its gap to the window stays about 3.7 %), the accepted stable period does not.
    def v(t, r):
        d = t / DAY
        return np.clip(r.normal(0.9 - 0.0035 * 0.9 * np.clip(d - 28, 0, None), 0.04), 0, 1)
    s, t, x = one_series(80_000, 68, 5, v)
    with_ref = PercentDrop(stat="mean").update_many(s, t, x)
    without = PercentDrop(stat="mean", long_term=False).update_many(s, t, x)
    assert without == []
    assert [f.status for f in with_ref] == ["firing"]
    assert with_ref[0].reference_kind == "long_term"
    assert with_ref[0].reference.value == pytest.approx(0.9, abs=0.005)


def test_too_few_samples_is_insufficient_data_not_an_alert():
    s, t, x = one_series(300, 40, 6, lambda t, r: np.where(t < 20 * DAY, 0.9, 0.1))
    assert PercentDrop(stat="mean").update_many(s, t, x) == []
    assert RateRatio().update_many(s, t, (x < 0.5).astype(float)) == []


def test_late_events_are_counted_and_ignored():
    det = PercentDrop(stat="mean", lateness=600)
    det.update_many(np.zeros(3, np.int64), np.array([0.0, 5000.0, 10000.0]), np.array([0.5, 0.5, 0.5]))
    det.update_many(np.zeros(1, np.int64), np.array([1000.0]), np.array([0.5]))
    assert det.late == 1


def test_rate_ratio_fires_on_a_tripled_refusal_rate():
    s, t, x = one_series(30_000, 30, 3, lambda t, r: (r.random(t.size) < np.where(t < 20 * DAY, 0.02, 0.06)).astype(float))
    f = RateRatio(window=DAY, baseline=7 * DAY).update_many(s, t, x)
    assert statuses(f) == [("firing", 20.458)]
    assert f[0].value >= 2 and f[0].window.value == pytest.approx(0.06, abs=0.02)


def test_rate_ratio_min_rate_floor_blocks_spikes_from_zero():
    # a reference with no flags at all: two flags a day must not be "infinitely" many times it
    s, t, x = one_series(20_000, 20, 8, lambda t, r: np.where(t < 10 * DAY, 0.0, (r.random(t.size) < 0.002)).astype(float))
    assert RateRatio(window=DAY, baseline=7 * DAY).update_many(s, t, x) == []


def test_ks_shift_sees_a_spread_change_that_the_mean_drop_misses():
    s, t, x = one_series(40_000, 40, 11, lambda t, r: np.clip(r.normal(0.7, np.where(t < 20 * DAY, 0.05, 0.15)), 0, 1))
    assert statuses(KsShift().update_many(s, t, x)) == [("firing", 23.0)]
    assert PercentDrop(stat="mean").update_many(s, t, x) == []


def test_ks_family_correction_counts_series_with_data():
    det = KsShift(alpha=0.01)
    det.set_families(np.arange(4), np.array([0, 0, 0, 1]))
    det.update_many(np.arange(4), np.zeros(4), np.full(4, 0.5))
    np.testing.assert_array_equal(det._family_size(np.arange(4)), [3, 3, 3, 1])


@pytest.mark.parametrize("bad", [dict(stat="mode"), dict(threshold=-1), dict(alpha=0), dict(window=5000.0),
                                 dict(lo=1, hi=0)])
def test_bad_parameters_raise_clear_errors(bad):
    with pytest.raises(ValueError):
        PercentDrop(**bad)


def test_short_windows_catch_a_step_within_hours_and_report_their_window():
    # 0.90 -> 0.84 (6.7 %) at day 20, 10:00: the 7-day mean needs days to move 5 %;
    # a 6-hour window is past the step in about 6 hours.
    change = 20 * DAY + 10 * 3600
    s, t, x = one_series(80_000, 40, 12, lambda t, r: np.clip(r.normal(np.where(t < change, 0.9, 0.84), 0.05), 0, 1))
    slow = PercentDrop(stat="mean").update_many(s, t, x)
    fast = PercentDrop(stat="mean", short_windows=(6 * 3600, DAY)).update_many(s, t, x)
    assert [f.status for f in slow] == [f.status for f in fast] == ["firing"]
    assert slow[0].at - change > 2 * DAY
    assert 0 < fast[0].at - change <= 7 * 3600
    w = fast[0].window
    assert w.end - w.start == 6 * 3600 and w.end == fast[0].at
    assert fast[0].value >= 0.05 and fast[0].p_value < 1e-3 / 3  # Bonferroni over three windows
    assert 0.83 < w.value <= 0.9 * 0.95 + 0.002  # the 6-hour mean, mostly after the step


def test_short_windows_keep_a_stable_stream_quiet_and_resolve_after_recovery():
    s, t, x = one_series(60_000, 90, 1, lambda t, r: np.clip(r.normal(0.85 + 0.01 * np.sin(t / DAY * 2 * np.pi), 0.08), 0, 1))
    assert PercentDrop(stat="mean", short_windows=(6 * 3600, DAY)).update_many(s, t, x) == []

    def v(t, r):
        bad = (t >= 20 * DAY) & (t < 30 * DAY)
        return np.clip(r.normal(np.where(bad, 0.75, 0.9), 0.05), 0, 1)
    s, t, x = one_series(60_000, 60, 4, v)
    f = PercentDrop(stat="mean", short_windows=(6 * 3600, DAY)).update_many(s, t, x)
    assert [x.status for x in f] == ["firing", "resolved"]
    assert 20 * DAY < f[0].at < 20.5 * DAY and 30 * DAY < f[1].at < 40 * DAY


@pytest.mark.parametrize("short", [(5000.0,), (7 * DAY,), (8 * DAY,)])
def test_short_windows_must_be_whole_buckets_shorter_than_the_window(short):
    with pytest.raises(ValueError, match="short_windows"):
        PercentDrop(short_windows=short)


def test_a_short_window_too_quiet_to_judge_does_not_block_resolution():
    # ~8 events an hour: the 6-hour window never holds min_n = 100, so only the 7-day window
    # decides; the episode must still resolve after the recovery on day 30.
    def v(t, r):
        bad = (t >= 20 * DAY) & (t < 30 * DAY)
        return np.clip(r.normal(np.where(bad, 0.75, 0.9), 0.05), 0, 1)
    s, t, x = one_series(60 * 24 * 8, 60, 4, v)
    det = PercentDrop(stat="mean", short_windows=(6 * 3600,))
    f = det.update_many(s, t, x)
    assert [x.status for x in f] == ["firing", "resolved"]
    assert f[0].window.end - f[0].window.start == 7 * DAY  # raised by the whole window
    assert 30 * DAY < f[1].at < 40 * DAY


def test_a_lagging_long_window_does_not_resolve_what_a_short_window_raised():
    # A lasting step down at day 20: the 6-hour window raises the alert within hours, while the
    # 7-day mean is still within half the threshold of its baseline; nights are too quiet for
    # the 6-hour window. The alert must stay up (it would resolve on the first quiet night if
    # the lagging 7-day window could clear it).
    rng = np.random.default_rng(21)
    hours = np.arange(40 * 24)
    per_hour = np.where((hours % 24) < 8, 2, 40)  # quiet nights
    t = np.concatenate([h * 3600 + np.sort(rng.uniform(0, 3600, k)) for h, k in zip(hours, per_hour)])
    x = np.clip(rng.normal(np.where(t < 20 * DAY + 12 * 3600, 0.9, 0.82), 0.05), 0, 1)
    det = PercentDrop(stat="mean", short_windows=(6 * 3600,))
    f = det.update_many(np.zeros(t.size, np.int64), t, x)
    assert [x.status for x in f] == ["firing"]
    assert f[0].window.end - f[0].window.start == 6 * 3600
    assert f[0].at - (20 * DAY + 12 * 3600) <= 7 * 3600
