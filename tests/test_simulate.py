"""Tests of the synthetic traffic generator (drift.tools.simulate)."""

from __future__ import annotations

import datetime as dt
import doctest
import functools
import json
import math
import re
import time

import numpy as np
import pytest

import drift.tools.simulate as simmod
from drift.tools.simulate import SCENARIOS, Simulation, iter_events, simulate, write_jsonl

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DAY = 86400.0
SCORE_COLS = ("ts", "app", "intent", "dimension", "score", "prompt_hash", "prompt_version",
              "model", "trace_id", "cost_usd")
RETRIEVAL_COLS = ("ts", "app", "intent", "trace_id", "scores", "index_version")
EFFECT_DAYS = 20  # long enough for every scenario's change (and the 3-day ramp) to show


@functools.cache
def sim(scenario: str, days: int = EFFECT_DAYS, seed: int = 0, volume: float = 1.0) -> Simulation:
    return simulate(scenario, seed=seed, days=days, volume=volume)


def epoch(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def the_change(s: Simulation) -> dict:
    (change,) = s.truth["changes"]
    return change


def mean_of(s: Simulation, *, app, dimension, intents=None, t0=-math.inf, t1=math.inf):
    c = s.scores
    m = (c["app"] == app) & (c["dimension"] == dimension) & (c["ts"] >= t0) & (c["ts"] < t1)
    if intents is not None:
        m &= np.isin(c["intent"], intents)
    assert m.sum() > 500
    return float(c["score"][m].mean())


# ---------------------------------------------------------------------------------- API


def test_scenario_names():
    assert set(SCENARIOS) == {"input_shift", "stable", "prompt_cleanup", "provider_update", "rag_staleness",
                              "truncation", "refusal_spike"}
    assert all(isinstance(v, str) and v for v in SCENARIOS.values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate("nope", days=1)
    with pytest.raises(ValueError, match="day 11"):
        simulate("prompt_cleanup", days=11)
    with pytest.raises(ValueError):
        simulate("stable", days=0)
    with pytest.raises(ValueError):
        simulate("stable", days=1, volume=0)


def test_default_days_and_start():
    s = simulate("stable", volume=0.05)
    assert s.days == 30 and s.truth["days"] == 30
    assert s.start == epoch("2026-01-05T00:00:00Z")
    assert s.truth["start"] == "2026-01-05T00:00:00Z"
    assert s.scores["ts"].min() >= s.start and s.scores["ts"].max() < s.start + 30 * DAY


def test_determinism_by_seed():
    a = simulate("prompt_cleanup", seed=5, days=12, volume=0.3)
    b = simulate("prompt_cleanup", seed=5, days=12, volume=0.3)
    c = simulate("prompt_cleanup", seed=6, days=12, volume=0.3)
    for col in SCORE_COLS:
        np.testing.assert_array_equal(a.scores[col], b.scores[col])
    for col in RETRIEVAL_COLS:
        np.testing.assert_array_equal(a.retrieval[col], b.retrieval[col])
    assert a.truth == b.truth
    assert a.truth["changes"][0]["to"] != c.truth["changes"][0]["to"]
    assert a.scores["trace_id"][0] != c.scores["trace_id"][0]
    assert (len(a.scores["ts"]) != len(c.scores["ts"])
            or not np.array_equal(a.scores["score"], c.scores["score"]))


def test_generation_is_fast():
    t = time.perf_counter()
    s = simulate("prompt_cleanup", days=30)
    elapsed = time.perf_counter() - t
    assert s.truth["counts"]["scores"] > 700_000
    assert elapsed < 3.0, elapsed


def test_module_docstring_example():
    res = doctest.testmod(simmod, verbose=False)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------ arrays


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_arrays_are_well_formed(scenario):
    s = sim(scenario)
    sc, rt = s.scores, s.retrieval
    n, m = len(sc["ts"]), len(rt["ts"])
    assert s.truth["counts"]["scores"] == n and s.truth["counts"]["retrieval"] == m
    assert all(len(sc[c]) == n for c in SCORE_COLS)
    assert all(len(rt[c]) == m for c in RETRIEVAL_COLS)
    assert sc["ts"].dtype == np.float64 and sc["score"].dtype == np.float64
    assert np.all(np.diff(sc["ts"]) >= 0) and np.all(np.diff(rt["ts"]) >= 0)
    assert np.all(np.isfinite(sc["score"]))
    assert sc["score"].min() >= 0.0 and sc["score"].max() <= 1.0
    assert np.all(sc["cost_usd"] > 0) and np.all(np.isfinite(sc["cost_usd"]))
    flags = np.isin(sc["dimension"], ["refusal", "format_valid"])
    assert set(np.unique(sc["score"][flags])) <= {0.0, 1.0}
    r = rt["scores"]
    assert r.dtype == np.float64 and r.shape == (m, 5)
    assert np.all(np.diff(r, axis=1) <= 0)
    assert r.min() >= -1.0 and r.max() <= 1.0
    assert set(np.unique(rt["app"])) == {"support-bot", "docs-qa"}
    # faithfulness only for RAG apps; every request has each of its dimensions once
    faith = sc["dimension"] == "faithfulness"
    assert set(np.unique(sc["app"][faith])) == {"support-bot", "docs-qa"}
    fmt = sc["dimension"] == "format"
    assert len(np.unique(sc["trace_id"][fmt])) == fmt.sum()
    assert m == (fmt & (sc["app"] != "sales-assistant")).sum()
    json.dumps(s.truth)


def test_catalog_is_stable_and_seeded():
    a, b = (simulate("stable", seed=seed, days=2, volume=0.2) for seed in (0, 1))
    for s in (a, b):
        key = (s.scores["app"] + "/" + s.scores["intent"]).tolist()
        for col in ("prompt_hash", "prompt_version", "model"):
            assert len(set(zip(key, s.scores[col].tolist()))) == 9, col
        hashes = np.unique(s.scores["prompt_hash"])
        assert all(re.fullmatch(r"[0-9a-f]{12}", h) for h in hashes)
        assert all(re.fullmatch(r"v\d+", v) for v in np.unique(s.scores["prompt_version"]))
        assert len(np.unique(s.scores["model"])) == 3
    assert set(np.unique(a.scores["prompt_hash"])) != set(np.unique(b.scores["prompt_hash"]))


def test_stable_90_days_has_no_changes():
    s = simulate("stable", days=90, volume=0.25)
    assert s.truth["changes"] == [] and s.truth["days"] == 90
    assert s.scores["ts"].max() >= s.start + 89 * DAY
    key = s.scores["app"] + "/" + s.scores["intent"]
    for col in ("prompt_hash", "model", "prompt_version"):
        pairs = set(zip(key.tolist(), s.scores[col].tolist()))
        assert len(pairs) == 9, col


def test_seasonality():
    s = sim("stable", days=28)
    fmt = s.scores["dimension"] == "format"  # one per request
    t = s.scores["ts"][fmt] - s.start  # start is a Monday 00:00 UTC
    per_hour = np.bincount((t // 3600).astype(int), minlength=28 * 24).reshape(28, 24)
    weekday = np.arange(28) % 7 < 5
    night = per_hour[weekday][:, 2:5].mean()
    afternoon = per_hour[weekday][:, 14:17].mean()
    assert 0.18 < night / afternoon < 0.35  # ~0.4x vs ~1.6x
    per_day = per_hour.sum(1)
    assert 0.5 < per_day[~weekday].mean() / per_day[weekday].mean() < 0.7
    # ~25 requests per hour per intent on average on weekdays, 9 intents
    assert 180 < per_day[weekday].mean() / 24 < 270
    # retrieval values have no weekly pattern
    top1 = s.retrieval["scores"][:, 0]
    rday = ((s.retrieval["ts"] - s.start) // DAY).astype(int) % 7
    assert abs(np.median(top1[rday >= 5]) - np.median(top1[rday < 5])) < 0.005


def test_volume_scales_counts():
    lo, hi = simulate("stable", days=3, volume=0.5), simulate("stable", days=3, volume=2.0)
    ratio = len(hi.scores["ts"]) / len(lo.scores["ts"])
    assert 3.6 < ratio < 4.4


# ------------------------------------------------------------------------------ truth


EXPECTED = {
    "prompt_cleanup": ("prompt_hash_change", "support-bot", "scores",
                       ["format_failure_spike", "quality_drop"], "prompt_hash_change", 11),
    "provider_update": ("provider_update", "docs-qa", "scores",
                        ["quality_drop", "quality_shift"], "none", 15),
    "rag_staleness": ("index_staleness", "support-bot", "retrieval", ["retrieval_drop"],
                      "none", 14),
    "truncation": ("response_truncation", "sales-assistant", "scores",
                   ["quality_drop", "quality_shift"], "none", 13),
    "refusal_spike": ("model_change", "docs-qa", "scores", ["flag_rate_spike"],
                      "model_change", 12),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_truth_shape(scenario):
    s = sim(scenario)
    t = s.truth
    assert t["scenario"] == scenario and t["seed"] == 0 and t["days"] == EFFECT_DAYS
    assert t["volume"] == 1.0 and t["start"] == "2026-01-05T00:00:00Z"
    c = the_change(s)
    what, app, stream, rules, cause, day = EXPECTED[scenario]
    assert (c["what"], c["app"], c["stream"], c["expected_rules"], c["expected_cause"]) == (
        what, app, stream, rules, cause)
    assert epoch(c["at"]) == s.start + day * DAY + 10 * 3600
    assert c["description"]
    assert c.get("expected_any", False) == (scenario in ("provider_update", "truncation"))
    for key in ("intents", "dimensions", "series"):
        assert isinstance(c[key], list)


# ----------------------------------------------------------------- injected effects


def changed_rows(s: Simulation, base: Simulation, stream: str) -> dict[str, np.ndarray]:
    a, b = getattr(s, stream), getattr(base, stream)
    out = {}
    for col, arr in a.items():
        eq = arr == b[col]
        out[col] = ~(eq.all(axis=1) if eq.ndim == 2 else eq)
    return out


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_effect_confined_to_truth(scenario):
    """Same seed: every row outside the truth's place and time equals the stable run's."""
    s, base = sim(scenario), sim("stable")
    c = the_change(s)
    at = epoch(c["at"])
    for stream in ("scores", "retrieval"):
        cols = getattr(s, stream)
        assert len(cols["ts"]) == len(getattr(base, stream)["ts"])
        allowed = (cols["app"] == c["app"]) & np.isin(cols["intent"], c["intents"]) & (
            cols["ts"] >= at)
        if stream != c["stream"]:
            allowed &= False
        for col, diff in changed_rows(s, base, stream).items():
            if col in ("score", "scores"):
                where = allowed & (np.isin(cols["dimension"], c["dimensions"])
                                   if stream == "scores" else True)
                assert not (diff & ~where).any(), col
                assert diff.any() == (stream == c["stream"]), col
            elif col == "prompt_hash" or col == "prompt_version":
                assert diff.any() == (c["what"] == "prompt_hash_change"), col
                assert not (diff & ~allowed).any()
            elif col == "model":
                assert diff.any() == (c["what"] == "model_change")
                assert not (diff & ~allowed).any()
            else:
                assert not diff.any(), (stream, col)


def test_prompt_cleanup_effect():
    s = sim("prompt_cleanup")
    c = the_change(s)
    at = epoch(c["at"])
    aff, other = ["billing", "refunds"], ["shipping", "account"]
    kw = dict(app="support-bot", dimension="format")
    assert mean_of(s, intents=aff, t1=at, **kw) == pytest.approx(0.92, abs=0.01)
    assert mean_of(s, intents=aff, t0=at, **kw) == pytest.approx(0.70, abs=0.015)
    assert mean_of(s, intents=other, t0=at, **kw) == pytest.approx(0.92, abs=0.01)
    kw = dict(app="support-bot", dimension="format_valid")
    assert mean_of(s, intents=aff, t1=at, **kw) == pytest.approx(0.97, abs=0.01)
    assert mean_of(s, intents=aff, t0=at, **kw) == pytest.approx(0.72, abs=0.03)
    assert mean_of(s, intents=other, t0=at, **kw) == pytest.approx(0.97, abs=0.01)
    # the hash switches exactly at the change, in both intents, to the truth's value
    sc = s.scores
    m = (sc["app"] == "support-bot") & np.isin(sc["intent"], aff)
    assert set(sc["prompt_hash"][m & (sc["ts"] < at)]) == {c["from"]}
    assert set(sc["prompt_hash"][m & (sc["ts"] >= at)]) == {c["to"]}
    assert c["from"] != c["to"]
    assert set(sc["prompt_version"][m & (sc["ts"] >= at)]) == {c["prompt_version"]["to"]}
    assert c["series"] == ["support-bot/billing/format", "support-bot/billing/format_valid",
                           "support-bot/refunds/format", "support-bot/refunds/format_valid"]
    # relevance etc. of the affected intents do not move
    kw = dict(app="support-bot", dimension="relevance", intents=aff)
    assert mean_of(s, t0=at, **kw) == pytest.approx(mean_of(s, t1=at, **kw), abs=0.01)


def test_provider_update_effect():
    s = sim("provider_update")
    c = the_change(s)
    at = epoch(c["at"])
    before = mean_of(s, app="docs-qa", dimension="relevance", t1=at)
    after = mean_of(s, app="docs-qa", dimension="relevance", t0=at)
    assert 1 - after / before == pytest.approx(0.06, abs=0.01)
    for app in ("support-bot", "sales-assistant"):
        b = mean_of(s, app=app, dimension="relevance", t1=at)
        a = mean_of(s, app=app, dimension="relevance", t0=at)
        assert abs(1 - a / b) < 0.01
    sc = s.scores
    docs = sc["app"] == "docs-qa"
    assert len(np.unique(sc["model"][docs])) == 1
    for intent in c["intents"]:
        assert len(np.unique(sc["prompt_hash"][docs & (sc["intent"] == intent)])) == 1


def test_rag_staleness_effect():
    s = sim("rag_staleness")
    c = the_change(s)
    at, end = epoch(c["at"]), epoch(c["ramp_end"])
    assert end - at == 3 * DAY
    rt = s.retrieval
    top1, t = rt["scores"][:, 0], rt["ts"]
    sb = rt["app"] == "support-bot"
    before = np.median(top1[sb & (t < at)])
    after = np.median(top1[sb & (t >= end)])
    mid = np.median(top1[sb & (t >= at + 1.25 * DAY) & (t < at + 1.75 * DAY)])
    assert before == pytest.approx(0.72, abs=0.01)
    assert 1 - after / before == pytest.approx(0.12, abs=0.01)
    assert 1 - mid / before == pytest.approx(0.06, abs=0.015)  # linear ramp, half-way
    top5 = rt["scores"][:, 4]
    assert 1 - np.median(top5[sb & (t >= end)]) / np.median(top5[sb & (t < at)]) == (
        pytest.approx(0.12, abs=0.015))
    docs = rt["app"] == "docs-qa"
    assert abs(np.median(top1[docs & (t >= end)]) - np.median(top1[docs & (t < at)])) < 0.01
    np.testing.assert_array_equal(s.scores["score"], sim("stable").scores["score"])


def test_truncation_effect():
    s = sim("truncation")
    at = epoch(the_change(s)["at"])
    app = "sales-assistant"
    assert mean_of(s, app=app, dimension="coherence", t1=at) == pytest.approx(0.90, abs=0.01)
    assert mean_of(s, app=app, dimension="coherence", t0=at) == pytest.approx(0.72, abs=0.015)
    assert mean_of(s, app=app, dimension="relevance", t1=at) == pytest.approx(0.85, abs=0.01)
    assert mean_of(s, app=app, dimension="relevance", t0=at) == pytest.approx(0.76, abs=0.015)
    assert mean_of(s, app=app, dimension="format", t0=at) == pytest.approx(0.92, abs=0.01)
    for other in ("support-bot", "docs-qa"):
        assert mean_of(s, app=other, dimension="coherence", t0=at) == pytest.approx(
            0.90, abs=0.01)


def test_refusal_spike_effect():
    s = sim("refusal_spike")
    c = the_change(s)
    at = epoch(c["at"])
    before = mean_of(s, app="docs-qa", dimension="refusal", t1=at)
    after = mean_of(s, app="docs-qa", dimension="refusal", t0=at)
    assert before == pytest.approx(0.02, abs=0.005)
    assert 2.4 < after / before < 3.7
    for app in ("support-bot", "sales-assistant"):
        assert mean_of(s, app=app, dimension="refusal", t0=at) == pytest.approx(0.02, abs=0.006)
    sc = s.scores
    docs = sc["app"] == "docs-qa"
    assert set(sc["model"][docs & (sc["ts"] < at)]) == {c["from"]}
    assert set(sc["model"][docs & (sc["ts"] >= at)]) == {c["to"]}
    assert c["from"] != c["to"]
    for intent in c["intents"]:
        assert len(np.unique(sc["prompt_hash"][docs & (sc["intent"] == intent)])) == 1


# ------------------------------------------------------------------------------ events


SMALL = dict(days=2, volume=0.2)


def test_iter_events_spec_shape_and_order():
    s = simulate("prompt_cleanup", seed=3, days=12, volume=0.1)
    events = list(iter_events(s))
    assert len(events) == s.n_events
    n_ret = 0
    prev = ""
    for ev in events:
        assert TS_RE.match(ev["ts"])
        assert ev["ts"] >= prev  # same format, so string order is time order
        prev = ev["ts"]
        assert isinstance(ev["app"], str) and isinstance(ev["intent"], str)
        assert isinstance(ev["trace_id"], str) and len(ev["trace_id"]) == 32
        if "dimension" in ev:
            assert set(ev) == set(SCORE_COLS)
            assert isinstance(ev["score"], float) and math.isfinite(ev["score"])
            assert 0.0 <= ev["score"] <= 1.0
            assert ev["dimension"] in simmod.DIMENSIONS
            for k in ("prompt_hash", "prompt_version", "model"):
                assert isinstance(ev[k], str)
            assert isinstance(ev["cost_usd"], float) and ev["cost_usd"] > 0
        else:
            n_ret += 1
            assert set(ev) == set(RETRIEVAL_COLS)
            sc = ev["scores"]
            assert len(sc) == 5 and all(isinstance(x, float) for x in sc)
            assert all(a >= b for a, b in zip(sc, sc[1:]))
            assert isinstance(ev["index_version"], str)
    assert n_ret == len(s.retrieval["ts"])
    # times survive the string form at millisecond precision
    got = np.array([epoch(e["ts"]) for e in events if "dimension" in e])
    np.testing.assert_allclose(got, s.scores["ts"], rtol=0, atol=5e-4)


def test_write_jsonl_round_trip(tmp_path):
    s = simulate("refusal_spike", days=13, volume=0.03)
    expected = list(iter_events(s))
    p1, p100 = tmp_path / "ev.jsonl", tmp_path / "ev100.jsonl"
    assert write_jsonl(s, p1) == len(expected)
    assert write_jsonl(s, str(p100), batch=100) == len(expected)
    lines1 = p1.read_text().splitlines()
    assert len(lines1) == len(expected)
    got1 = [json.loads(line) for line in lines1]
    got100 = []
    lines100 = p100.read_text().splitlines()
    assert len(lines100) == math.ceil(len(expected) / 100)
    for line in lines100:
        arr = json.loads(line)
        assert isinstance(arr, list) and 1 <= len(arr) <= 100
        got100.extend(arr)
    assert got1 == expected
    assert got100 == expected
    truth = json.loads((tmp_path / "ev.truth.json").read_text())
    assert truth == json.loads(json.dumps(s.truth))
    assert truth["counts"]["scores"] + truth["counts"]["retrieval"] == len(expected)
    assert (tmp_path / "ev100.truth.json").exists()


def test_write_jsonl_stdout(capsysbinary, tmp_path, monkeypatch):
    s = simulate("stable", seed=2, **SMALL)
    monkeypatch.chdir(tmp_path)
    n = write_jsonl(s, "-", batch=7)
    out = capsysbinary.readouterr().out.decode().splitlines()
    assert sum(len(json.loads(line)) for line in out) == n == s.n_events
    assert list(tmp_path.iterdir()) == []  # no truth file for stdout


def test_quality_means_of_two_apps_follow_the_hour_of_the_day():
    sim = simulate("stable", seed=4, days=20, volume=2.0)
    s = sim.scores
    hour = (s["ts"] % 86400 // 3600).astype(int)
    for app, amplitude in (("docs-qa", 0.03), ("sales-assistant", 0.03), ("support-bot", 0.0)):
        m = (s["app"] == app) & (s["dimension"] == "relevance")
        night, afternoon = s["score"][m & (hour == 3)].mean(), s["score"][m & (hour == 15)].mean()
        assert (night - afternoon) / 0.85 == pytest.approx(2 * amplitude, abs=0.012), app


def test_stress_traffic_spans_three_decades_with_zeros_cycles_and_mix_changes():
    sim = simulate("stable", seed=1, days=40, volume=1.0, stress=True)
    st = sim.truth["stress"]
    per_day = st["requests_per_day"]
    assert max(per_day.values()) / min(per_day.values()) == pytest.approx(1000, rel=0.01)
    assert st["day_night_ratio"] == pytest.approx(10.0)
    s = sim.scores
    quality = np.isin(s["dimension"], ["format", "relevance", "coherence", "faithfulness"])
    assert np.mean(s["score"][quality] == 0.0) == pytest.approx(0.03, abs=0.005)
    # the measured requests a day of each series follow the truth, and each mix change shows
    req = s["dimension"] == "format"
    keys = np.char.add(np.char.add(s["app"][req].astype(str), "/"), s["intent"][req].astype(str))
    day = ((s["ts"][req] - sim.start) // 86400).astype(int)
    first = min(c["day"] for c in st["mix_changes"])
    for key, expected in per_day.items():
        n = np.sum((keys == key) & (day < first)) / first
        assert n == pytest.approx(expected, rel=0.25 if expected > 30 else 0.6), key
    for c in st["mix_changes"]:
        k = keys == c["series"]
        before = np.sum(k & (day >= c["day"] - 7) & (day < c["day"])) / 7
        after = np.sum(k & (day >= c["day"]) & (day < c["day"] + 7)) / 7
        if before > 50:
            assert after / before == pytest.approx(c["factor"], rel=0.3)
    assert simulate("stable", seed=1, days=40, volume=1.0).truth["stress"] is None
