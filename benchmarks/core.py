"""Detector-core benchmarks: ours against the competitor, in the same run.

Each function returns a result dict: ``name``, ``ours`` (events/s), ``competitor`` (its name),
``competitor_rate`` (events/s), ``ratio`` (ours / competitor) and ``notes``.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.workloads import DAY, flags, keyed_scores


def _timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def result(name, n, ours_s, competitor, comp_n, comp_s, notes=""):
    ours = n / ours_s
    comp = comp_n / comp_s
    return {"name": name, "events": n, "ours": ours, "competitor": competitor, "competitor_events": comp_n,
            "competitor_rate": comp, "ratio": ours / comp, "notes": notes}


def bench_ks(quick: bool) -> list[dict]:
    """Windowed KS (daily buckets, 7-day window vs 14-day baseline) over 1,000 keyed series.

    Competitors, in the same run:

    * ``scipy.stats.ks_2samp(window, baseline, method="asymp")`` per series at a daily boundary,
      on raw samples kept in per-series arrays (the same decisions);
    * river ``KSWIN`` (defaults) per series, updated with every event (its own sliding windows and
      a scipy KS test per update) on the first events of the same stream.

    Also checks that the p-values of our findings equal scipy's pinned method on their counts.
    """
    from river import drift as rdrift
    from scipy import stats

    from detectors.shift import KsShift

    n_series, days, per_day = (200, 22, 20) if quick else (1000, 22, 100)
    series, t, x = keyed_scores(n_series, days, per_day, shift_at=0.8)
    ours_s, findings = _timed(lambda: KsShift(min_n=50).update_many(series, t, x), repeat=1 if quick else 3)
    # competitor: scipy at each day boundary, every series, on the raw samples (a sample of the days)
    day = (t // DAY).astype(np.int64)
    order = np.lexsort((t, series))
    s_sorted, d_sorted, x_sorted = series[order], day[order], x[order]
    eval_days = list(range(21, days)) if quick else [21]
    pvals = []

    def scipy_loop():
        for d_end in eval_days:
            for s in range(n_series):
                lo_s, hi_s = np.searchsorted(s_sorted, [s, s + 1])
                dd, xx = d_sorted[lo_s:hi_s], x_sorted[lo_s:hi_s]
                win = xx[(dd > d_end - 7) & (dd <= d_end)]
                base = xx[(dd > d_end - 21) & (dd <= d_end - 7)]
                pvals.append(stats.ks_2samp(win, base, method="asymp").pvalue)

    comp_s, _ = _timed(scipy_loop)
    # the scipy loop did len(eval_days) of the `days` evaluations: scale its rate to the same events
    comp_events_equiv = t.size * len(eval_days) / days
    # the p-value of every finding that carries one, against scipy's asymp p for its D and sizes
    fired = [f for f in findings if f.p_value is not None]
    worst = max((abs(f.p_value - stats.kstwo.sf(f.value, round(f.window.n * f.reference.n
                                                                / (f.window.n + f.reference.n))))
                 for f in fired), default=0.0)
    # river KSWIN, one per series, every event (a scipy KS test per update once its 100-value
    # window is full): all events of the first few series, so every window fills
    k = 4 if quick else 20
    few = series < k
    m = int(few.sum())
    xs, ss = x[few].tolist(), series[few].tolist()

    def kswin_loop():
        dets = {}
        for s, v in zip(ss, xs):
            d = dets.get(s)
            if d is None:
                d = dets[s] = rdrift.KSWIN(seed=1)
            d.update(v)

    kswin_s, _ = _timed(kswin_loop)
    notes = (f"{n_series} series, {days} days, {len(findings)} findings; max |p - scipy kstwo.sf| over "
             f"{len(fired)} finding p-values = {worst:.1e}")
    return [result("ks_shift", t.size, ours_s, "scipy.stats.ks_2samp loop", comp_events_equiv, comp_s, notes),
            result("ks_vs_kswin", t.size, ours_s, "river KSWIN per series", m, kswin_s,
                   f"{n_series} series; KSWIN (defaults) on all {m:,} events of {k} of them")]


def bench_drop_rate(quick: bool) -> list[dict]:
    """The quality_drop and flag_rate_spike rules as shipped (the sequential MeanCusum and
    RateCusum, default parameters) vs river ADWIN and PageHinkley updates per event, over 1,000
    keyed series."""
    from river import drift as rdrift

    from drift.core.rules import RULE_KINDS

    n_series, days, per_day = (100, 22, 50) if quick else (1000, 22, 200)
    series, t, x = keyed_scores(n_series, days, per_day, shift_at=0.8)
    fs, ft, fx = flags(n_series, days, per_day)
    from drift.core.config import DEFAULT_RULES

    # the rules as shipped (detector kind and parameters from the defaults)
    def shipped(rule):
        spec = DEFAULT_RULES[rule]
        return lambda: RULE_KINDS[spec["detector"]].detector(**spec["params"])

    drop_det, rate_det = shipped("quality_drop"), shipped("flag_rate_spike")
    repeat = 1 if quick else 3
    ours_drop, _ = _timed(lambda: drop_det().update_many(series, t, x), repeat)
    ours_rate, _ = _timed(lambda: rate_det().update_many(fs, ft, fx), repeat)
    m = min(t.size, 200_000 if not quick else 50_000)
    xs, ss = x[:m].tolist(), series[:m].tolist()

    def river_loop(cls):
        dets = {}
        for s, v in zip(ss, xs):
            d = dets.get(s)
            if d is None:
                d = dets[s] = cls()
            d.update(v)

    adwin_s, _ = _timed(lambda: river_loop(rdrift.ADWIN))
    ph_s, _ = _timed(lambda: river_loop(rdrift.PageHinkley))
    return [result("quality_drop", t.size, ours_drop, "river ADWIN", m, adwin_s,
                   f"{n_series} series; quality_drop as shipped (cusum_mean, hour-of-day reference)"),
            result("flag_rate_spike", ft.size, ours_rate, "river PageHinkley", m, ph_s,
                   f"{n_series} series; flag_rate_spike as shipped (cusum_rate)")]


def bench_decode(quick: bool) -> dict:
    """Decoding + validation of JSON lines into columns vs plain ``json.loads`` of the same lines."""
    import json

    import msgspec

    from drift.core.config import load_settings
    from drift.core.engine import Engine
    from drift.tools.simulate import iter_events, simulate

    sim = simulate("stable", days=3 if quick else 10)
    enc = msgspec.json.Encoder()
    lines = [enc.encode(e) for e in iter_events(sim)]
    dec = Engine(load_settings()).decoder()
    ours_s, d = _timed(lambda: dec.decode(lines), repeat=2)
    assert not d.rejected
    comp_s, _ = _timed(lambda: [json.loads(line) for line in lines], repeat=2)
    return result("decode", len(lines), ours_s, "json.loads (no validation, no columns)", len(lines), comp_s,
                  "one event per line")


def bench_replay(quick: bool, tmpdir: str) -> dict:
    """`drift replay` end to end (JSONL file to alerts) vs only reading the file's lines."""
    import os

    from drift.core.config import load_settings
    from drift.runtime.replay import iter_lines, replay
    from drift.tools.simulate import simulate, write_jsonl

    path = os.path.join(tmpdir, "bench_replay.jsonl")
    sim = simulate("prompt_cleanup", days=12 if quick else 30, volume=0.3 if quick else 1.0)
    n = write_jsonl(sim, path, batch=100)
    ours_s, rep = _timed(lambda: replay([path], load_settings()))
    comp_s, _ = _timed(lambda: sum(1 for _ in iter_lines([path])))
    r = result("replay", n, ours_s, "reading the lines only", n, comp_s, f"{len(rep.alerts)} alerts, 100 events per line")
    return r
