"""cost_per_quality_rise: spend per quality point, week over week.

The detector against numpy/scipy references on seeded streams with known change points, the
request records out of score events, and the rule end to end on the simulator's context-bloat
(must fire) and model-swap (must not: quality_drop fires instead) scenarios. 180 stable days at
four volumes are in tests/test_volumes.py (every default rule, this one included).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.cost import CostRatio, log_ratio_var
from drift.core.config import load_settings
from drift.core.cost import TraceCost
from drift.core.engine import Engine

DAY = 86400.0


def _stream(seed, days=35, per_day=300, change_day=21.0, cost_factor=1.4, quality_factor=1.0, series=1,
            sigma=0.6):
    rng = np.random.default_rng(seed)
    n = int(days * per_day * series)
    t = np.sort(rng.uniform(0, days * DAY, n))
    s = rng.integers(0, series, n)
    after = t >= change_day * DAY
    cost = 0.004 * np.where(after, cost_factor, 1.0) * np.exp(sigma * rng.standard_normal(n))
    m = 0.85 * np.where(after, quality_factor, 1.0)
    q = rng.beta(m * 20, (1 - m) * 20)
    return s.astype(np.int64), t, np.column_stack([cost, q, np.zeros(n)])


def _reference(t, x, at, window=7 * DAY):
    """Ratio, z and one-sided p-value at ``at`` computed from the raw requests (numpy/scipy)."""
    w = (t >= at - window) & (t < at)
    r = (t >= at - 2 * window) & (t < at - window)
    out = []
    for m in (w, r):
        c, q = x[m, 0], x[m, 1]
        S = np.cov(c, q)
        v = (S[0, 0] / c.mean() ** 2 + S[1, 1] / q.mean() ** 2 - 2 * S[0, 1] / (c.mean() * q.mean())) / m.sum()
        out.append((c.sum() / q.sum(), v))
    ratio = out[0][0] / out[1][0]
    z = np.log(ratio) / np.sqrt(out[0][1] + out[1][1])
    return ratio, z, stats.norm.sf(z)


def test_log_ratio_var_matches_numpy_covariance():
    rng = np.random.default_rng(1)
    c, q = rng.lognormal(-5, 0.6, 500), rng.beta(17, 3, 500)
    S = np.cov(c, q)
    ref = (S[0, 0] / c.mean() ** 2 + S[1, 1] / q.mean() ** 2 - 2 * S[0, 1] / (c.mean() * q.mean())) / 500
    got = log_ratio_var(500, c.sum(), q.sum(), (c * c).sum(), (q * q).sum(), (c * q).sum())
    assert got == pytest.approx(ref, rel=1e-10)
    # and it is the variance it claims: the spread of log(sum c / sum q) over many samples, against
    # the population value (e^s2 - 1) / n + Var(q) / (E q)^2 / n (independent c and q)
    logs = [np.log(rng.lognormal(-5, 0.6, 500).sum() / rng.beta(17, 3, 500).sum()) for _ in range(4000)]
    theory = (np.exp(0.36) - 1) / 500 + (0.85 * 0.15 / 21) / 0.85 ** 2 / 500
    assert np.var(logs) == pytest.approx(theory, rel=0.08)
    assert ref == pytest.approx(theory, rel=0.25)


def test_a_context_bloat_fires_with_the_reference_ratio_and_p_value():
    s, t, x = _stream(seed=3)
    det = CostRatio(short_windows=())  # whole weeks only; the last day is checked below
    f = det.update_many(s, t, x)
    assert [a.status for a in f] == ["firing"]
    a = f[0]
    # the change is at day 21; a week-over-week ratio of 1.3 needs >= 5.25 of the 7 days after it
    assert 25 * DAY < a.at <= 28 * DAY
    ratio, z, p = _reference(t, x[:, :2], a.at)
    assert a.value == pytest.approx(ratio, rel=1e-12)
    assert a.p_value == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert a.value >= 1.3 and z > det.z
    assert a.window.value == pytest.approx(x[(t >= a.at - 7 * DAY) & (t < a.at), 0].sum()
                                           / x[(t >= a.at - 7 * DAY) & (t < a.at), 1].sum(), rel=1e-12)
    e = a.extra
    assert e["cost_per_request_ratio"] == pytest.approx(a.value, rel=0.05)
    assert abs(e["quality_ratio"] - 1) < 0.02 and e["model_window"] == e["model_reference"] == 0
    assert e["same_model_cost_per_request_ratio"] > 1.2
    # with the default short window, the last day against the baseline week fires first
    det = CostRatio()
    g = det.update_many(s, t, x)
    assert [a.status for a in g] == ["firing"] and 21 * DAY < g[0].at < a.at and g[0].extra["window_days"] == 1
    day = (t >= g[0].at - DAY) & (t < g[0].at)
    ref = (t >= g[0].at - 14 * DAY) & (t < g[0].at - 7 * DAY)
    r1, r0 = x[day, 0].sum() / x[day, 1].sum(), x[ref, 0].sum() / x[ref, 1].sum()
    assert g[0].value == pytest.approx(r1 / r0, rel=1e-12)
    v = [(np.cov(x[m, 0], x[m, 1]), x[m, 0].mean(), x[m, 1].mean(), m.sum()) for m in (day, ref)]
    se = np.sqrt(sum((S[0, 0] / c ** 2 + S[1, 1] / q ** 2 - 2 * S[0, 1] / (c * q)) / n for S, c, q, n in v))
    assert g[0].p_value == pytest.approx(stats.norm.sf(np.log(r1 / r0) / se), rel=1e-6)
    assert det.z == pytest.approx(stats.norm.isf(1e-4 / 365.25 / 2), rel=1e-9)


def test_a_rise_below_the_minimum_effect_is_not_reported():
    # the model swap of the issue: cost per request +3.5 %, quality -10 %: spend per point +15 %
    s, t, x = _stream(seed=4, per_day=2000, cost_factor=1.035, quality_factor=0.9)
    assert CostRatio().update_many(s, t, x) == []
    # the same rise with a lower bar is seen: the silence above is the minimum effect, not blindness
    f = CostRatio(threshold=0.10, short_windows=()).update_many(s, t, x)
    assert [a.status for a in f] == ["firing"] and 1.1 <= f[0].value < 1.3


def test_no_false_alerts_on_stable_series_at_low_and_high_volume():
    for per_day, series in ((10, 300), (1000, 20)):
        s, t, x = _stream(seed=per_day, days=180, per_day=per_day, series=series, cost_factor=1.0)
        assert CostRatio().update_many(s, t, x) == [], per_day


def test_low_volume_needs_a_larger_rise():
    # 20 requests a day: +40 % is not distinguishable from noise at the budget, x2.5 is
    quiet = _stream(seed=5, per_day=20, cost_factor=1.4, days=42, series=50)
    loud = _stream(seed=5, per_day=20, cost_factor=2.5, days=42, series=50)
    n_quiet = len({a.series for a in CostRatio().update_many(*quiet) if a.status == "firing"})
    n_loud = len({a.series for a in CostRatio().update_many(*loud) if a.status == "firing"})
    assert n_quiet < 25 and n_loud >= 45


def test_findings_do_not_depend_on_batching_and_state_round_trips():
    s, t, x = _stream(seed=6, series=3)
    whole = CostRatio().update_many(s, t, x)
    det = CostRatio()
    parts = []
    cuts = np.linspace(0, t.size, 23).astype(int)
    for a, b in zip(cuts[:-1], cuts[1:]):
        parts += det.update_many(s[a:b], t[a:b], x[a:b])
        if a == cuts[10]:
            det = CostRatio.from_state(det.state_dict())
    assert [(f.series, f.status, f.at, f.value) for f in parts] == [(f.series, f.status, f.at, f.value) for f in whole]
    assert {f.series for f in whole} == {0, 1, 2}


def test_model_slots_tell_the_models_apart():
    s, t, x = _stream(seed=7, cost_factor=1.0)
    after = t >= 21 * DAY
    x[after, 2] = 1  # another model from day 21, three times as expensive per request
    x[after, 0] *= 3
    f = CostRatio().update_many(s, t, x)
    from drift.core.rules import _moved

    # fired a day after the switch: the old model still serves most of the week, yet the mix moved
    e = f[0].extra
    assert f[0].at == 22 * DAY and e["model_reference"] == 0 and 0.1 < e["model_mix_shift"] < 0.2
    assert abs(e["same_model_cost_per_request_ratio"] - 1) < 0.1
    assert "price (model" in _moved(e) and "tokens per request" not in _moved(e)


# --------------------------------------------------------------------------- request records
def test_trace_cost_counts_each_request_once_and_averages_its_quality():
    tc = TraceCost(lateness=600.0)
    n = 6  # one request, six dimensions: four quality scores and two flags
    tc.offer(np.zeros(n, np.int64), np.full(n, 100.0), np.array(["t1"] * n, object), np.full(n, 0.02),
             np.array([0.9, 0.8, 0.7, 0.6, np.nan, np.nan]), np.array(["m"] * n, object))
    tc.offer(np.zeros(1, np.int64), np.array([2000.0]), np.array(["t2"], object), np.array([0.01]),
             np.array([0.5]), np.array(["m"], object))
    fams, times, x = tc.release()
    assert x.tolist() == [[0.02, pytest.approx(0.75), 0.0]] and times.tolist() == [100.0]
    # a late event of a released request is late for cost too; no double count
    tc.offer(np.zeros(1, np.int64), np.array([100.0]), np.array(["t1"], object), np.array([0.02]),
             np.array([0.9]), np.array(["m"], object))
    assert tc.counts["cost.late"] == 1


def test_trace_cost_records_do_not_depend_on_batching():
    rng = np.random.default_rng(8)
    k = 2000
    tid = np.repeat(np.array([f"t{i}" for i in range(k)], object), 5)
    t = np.repeat(np.sort(rng.uniform(0, 5 * DAY, k)), 5) + rng.uniform(0, 30, 5 * k)  # judge a bit later
    fam = np.repeat(rng.integers(0, 3, k), 5).astype(np.int64)
    cost = np.repeat(rng.lognormal(-5, 0.6, k), 5)
    q = np.where(np.tile(np.arange(5), k) < 4, rng.random(5 * k), np.nan)
    model = np.array(["m"] * (5 * k), object)
    order = np.argsort(t, kind="stable")
    tid, t, fam, cost, q, model = (a[order] for a in (tid, t, fam, cost, q, model))

    def run(chunks):
        tc = TraceCost(lateness=600.0)
        out = []
        for a, b in zip(chunks[:-1], chunks[1:]):
            tc.offer(fam[a:b], t[a:b], tid[a:b], cost[a:b], q[a:b], model[a:b])
            out.append(tc.release())
        f = np.concatenate([o[0] for o in out])
        return f, np.concatenate([o[1] for o in out]), np.concatenate([o[2] for o in out])

    one = run([0, t.size])
    many = run(np.unique(np.r_[0, rng.integers(0, t.size, 300), t.size]))
    # the same records, each family's in the same (time) order; families interleave by batching
    for fam_id in range(3):
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a[one[0] == fam_id], b[many[0] == fam_id])
        assert (np.diff(one[1][one[0] == fam_id]) >= 0).all()
    # every released request has its cost once and the mean of its four quality scores
    assert one[2].shape[0] > 0.95 * k and np.isin(one[2][:, 0], cost).all()


# --------------------------------------------------------------------------- the rule, end to end
def _alerts(name, seed=0):
    from scenario_harness import run_scenario

    sim, alerts, rejected = run_scenario(name, seed)
    assert rejected == []
    return sim, [a["data"] for a in alerts]


@pytest.mark.slow
def test_context_bloat_fires_the_cost_rule_and_nothing_else():
    sim, alerts = _alerts("context_bloat")
    change = sim.truth["changes"][0]
    fired = [a for a in alerts if a["status"] == "firing"]
    assert {a["rule"] for a in fired} == {"cost_per_quality_rise"}
    assert sorted(a["labels"]["intent"] for a in fired) == sorted(change["intents"])
    for a in fired:
        assert a["labels"]["app"] == "docs-qa" and "dimension" not in a["labels"]
        assert a["suspected_cause"]["kind"] == "none"
        assert "tokens per request" in a["summary"] and "against its baseline week" in a["summary"]
        assert a["statistic"]["value"] >= 1.3 and a["detector"] == "spend_per_point"
    delays = [(np.datetime64(a["window"]["end"][:-1]) - np.datetime64(change["at"][:-1])) / np.timedelta64(1, "D")
              for a in fired]
    assert all(0.5 < d < 7 for d in delays), delays


@pytest.mark.slow
def test_model_swap_fires_quality_drop_not_the_cost_rule():
    sim, alerts = _alerts("model_swap")
    fired = [a for a in alerts if a["status"] == "firing"]
    rules = {a["rule"] for a in fired}
    assert "cost_per_quality_rise" not in rules and "quality_drop" in rules
    assert rules <= {"quality_drop", "quality_shift"}
    drops = [a for a in fired if a["rule"] == "quality_drop"]
    assert {a["labels"]["intent"] for a in drops} == set(sim.truth["changes"][0]["intents"])
    assert all(a["suspected_cause"]["kind"] == "model_change" for a in drops)


def test_cost_rule_in_the_engine_uses_one_cost_per_trace():
    # two apps, the same per-request cost; app b repeats cost_usd on six dimensions, app a on one:
    # their spend per quality point must be equal if the cost is counted once per trace
    settings = load_settings(None, {})
    eng = Engine(settings)
    rng = np.random.default_rng(9)
    t0 = 1767225600.0
    events = []
    for day in range(21):
        for i in range(80):
            ts = t0 + day * DAY + i * 1000.0
            cost = float(np.round(0.004 * (1.5 if day >= 14 else 1.0) * rng.lognormal(0, 0.3), 6))
            for app, dims in (("a", ("relevance",)), ("b", ("relevance", "coherence", "format", "faithfulness",
                                                             "refusal", "format_valid"))):
                for d in dims:
                    score = 0.0 if d == "refusal" else 1.0 if d == "format_valid" else float(rng.beta(17, 3))
                    events.append({"ts": ts, "app": app, "intent": "x", "dimension": d, "score": score,
                                   "trace_id": f"{app}{day}-{i}", "cost_usd": cost, "model": "m"})
    alerts = eng.feed(events)
    cost_alerts = [a for a in alerts if a.rule == "cost_per_quality_rise"]
    assert {a.labels["app"] for a in cost_alerts} == {"a", "b"}
    per_point = {a.labels["app"]: a.window.value for a in cost_alerts}
    # the same costs; quality means of ~0.85 either way: the two apps' spend per point agree
    assert per_point["a"] == pytest.approx(per_point["b"], rel=0.05)
    assert eng.cost is not None
    assert eng.counts["cost.requests"] + len(eng.cost.open) == 2 * 21 * 80


def test_trace_cost_folds_runs_exactly_as_event_by_event():
    rng = np.random.default_rng(11)
    k = 3000
    dims = rng.integers(1, 10, k)  # runs of 1 to 9 events (8 and 9 go event by event)
    tid = np.repeat(np.array([f"t{i % 2500}" for i in range(k)], object), dims)  # some ids recur
    n = tid.size
    t = np.repeat(np.sort(rng.uniform(0, 3 * DAY, k)), dims) + rng.uniform(0, 900, n)  # some spans > lateness
    fam = np.repeat(rng.integers(0, 2, k), dims).astype(np.int64)
    cost = np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(-5, 0.6, n))
    q = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
    model = np.where(rng.random(n) < 0.1, None, np.array(["a", "b"], object)[rng.integers(0, 2, n)])
    folded, one_by_one = TraceCost(600.0), TraceCost(600.0)
    folded.offer(fam, t, tid, cost, q, model)
    late = one_by_one.clock.observe(fam, t)
    keep = ~late
    one_by_one._fold_events(tid[keep], fam[keep], t[keep], cost[keep], q[keep], model[keep])
    assert list(folded.open) == list(one_by_one.open) and len(folded._ready) == len(one_by_one._ready) > 0
    for a, b in zip(list(folded.open.values()) + folded._ready, list(one_by_one.open.values()) + one_by_one._ready):
        np.testing.assert_array_equal(np.array(a, float), np.array(b, float))  # bit for bit, NaN where NaN
