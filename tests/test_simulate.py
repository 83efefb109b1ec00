"""Tests of the synthetic traffic generator (drift.tools.simulate)."""

from __future__ import annotations

import datetime as dt
import doctest
import functools
import hashlib
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
                              "truncation", "refusal_spike", "judge_drift", "blind_spot", "context_bloat",
                              "model_swap"}
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
    s = sim(scenario) if scenario != "judge_drift" else sim(scenario, days=81, volume=0.25)
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


# ------------------------------------------------------- human labels and user feedback

LABEL_COLS = ("ts", "app", "intent", "trace_id", "dimension", "label", "rater", "request_ts", "judge")
FEEDBACK_COLS = ("ts", "app", "intent", "trace_id", "kind", "request_ts", "relevance")
KINDS = {"thumbs_up", "thumbs_down", "regenerate", "escalate"}


def digest(s: Simulation) -> str:
    h = hashlib.sha256()
    for stream in ("scores", "retrieval"):
        cols = getattr(s, stream)
        for k in sorted(cols):
            a = cols[k]
            h.update(k.encode())
            h.update(a.tobytes() if a.dtype != object else "\n".join(a.tolist()).encode())
    return h.hexdigest()[:16]


def test_flags_off_arrays_are_those_of_before_labels_and_feedback():
    """Recorded with the generator as it was before labels and feedback existed (numpy 2.4)."""
    for scenario, expected in (("stable", "ea8a67660bab9886"), ("prompt_cleanup", "7552f9f3a43d5803"),
                               ("refusal_spike", "ed629a0328aad113")):
        s = simulate(scenario, seed=1, days=16, volume=0.1)
        assert digest(s) == expected, scenario
        assert s.labels == {} and s.feedback == {}
        assert "labels" not in s.truth and "feedback" not in s.truth
        assert "correctness" not in set(s.scores["dimension"])
    assert digest(simulate("stable", seed=1, days=16, volume=0.1, stress=True)) == "cd7cc52107454f33"


@pytest.mark.parametrize("scenario", ["stable", "prompt_cleanup", "truncation", "rag_staleness"])
def test_labels_and_feedback_leave_the_other_streams_as_they_were(scenario):
    off = simulate(scenario, seed=2, days=16, volume=0.1)
    on = simulate(scenario, seed=2, days=16, volume=0.1, labels=True, feedback=True)
    keep = on.scores["dimension"] != "correctness"
    for col in SCORE_COLS:
        np.testing.assert_array_equal(on.scores[col][keep], off.scores[col])
    for col in RETRIEVAL_COLS:
        np.testing.assert_array_equal(on.retrieval[col], off.retrieval[col])
    # correctness is one more score event per request, right after the request's others
    fmt = on.scores["dimension"] == "format"
    corr = on.scores["dimension"] == "correctness"
    np.testing.assert_array_equal(on.scores["trace_id"][corr], on.scores["trace_id"][fmt])
    nxt = np.flatnonzero(corr)[:-1] + 1
    assert set(on.scores["dimension"][nxt]) == {"format"}
    assert set(np.unique(on.scores["score"][corr])) == {0.0, 1.0}
    assert on.truth["counts"]["scores"] == len(on.scores["ts"]) == len(off.scores["ts"]) + corr.sum()
    assert on.n_events == off.n_events + corr.sum() + len(on.labels["ts"]) + len(on.feedback["ts"])
    assert on.truth["counts"]["labels"] == len(on.labels["ts"]) > 0
    assert on.truth["counts"]["feedback"] == len(on.feedback["ts"]) > 0
    assert on.truth["catalog"]["dimensions"]["correctness"]["pass_rate"] == 0.75
    # the flags are independent: each stream is the same with the other flag on or off
    only_l = simulate(scenario, seed=2, days=16, volume=0.1, labels=True)
    only_f = simulate(scenario, seed=2, days=16, volume=0.1, feedback=True)
    for col in LABEL_COLS:
        np.testing.assert_array_equal(only_l.labels[col], on.labels[col])
    for col in FEEDBACK_COLS:
        np.testing.assert_array_equal(only_f.feedback[col], on.feedback[col])
    json.dumps(on.truth)


def test_label_and_feedback_events_join_their_requests():
    s = simulate("stable", seed=5, days=10, volume=0.3, labels=True, feedback=True)
    sc, lab, fb = s.scores, s.labels, s.feedback
    end = s.start + 10 * DAY
    corr = sc["dimension"] == "correctness"
    by_trace = {t: (a, i, ts, v) for t, a, i, ts, v in zip(
        sc["trace_id"][corr].tolist(), sc["app"][corr].tolist(), sc["intent"][corr].tolist(),
        sc["ts"][corr].tolist(), sc["score"][corr].tolist())}
    rel = sc["dimension"] == "relevance"
    relevance = dict(zip(sc["trace_id"][rel].tolist(), sc["score"][rel].tolist()))
    for cols, names in ((lab, LABEL_COLS), (fb, FEEDBACK_COLS)):
        n = len(cols["ts"])
        assert n > 0 and all(len(cols[c]) == n for c in names)
        assert np.all(np.diff(cols["ts"]) >= 0)
        assert cols["ts"].min() >= s.start and cols["ts"].max() < end
    # labels: the request's app/intent/ts, a 0/1 label 1-24 h later, on correctness, rater r1
    assert len(set(lab["trace_id"].tolist())) == len(lab["ts"])
    for t, a, i, rts, j in zip(lab["trace_id"].tolist(), lab["app"].tolist(), lab["intent"].tolist(),
                               lab["request_ts"].tolist(), lab["judge"].tolist()):
        assert by_trace[t] == (a, i, rts, j)
    delay = lab["ts"] - lab["request_ts"]
    assert delay.min() >= 3600 and delay.max() <= DAY
    assert set(lab["dimension"]) == {"correctness"} and set(lab["rater"]) == {"r1"}
    assert set(np.unique(lab["label"])) == {0.0, 1.0}
    # 20 labelled requests per app/intent and day (the last day's late ones not yet labelled)
    day = ((lab["request_ts"] - s.start) // DAY).astype(int)
    key = lab["app"] + "/" + lab["intent"]
    for k in np.unique(key):
        counts = np.bincount(day[key == k], minlength=10)
        assert np.all(counts[:9] == 20), (k, counts)
        assert 0 < counts[9] <= 20
    # feedback: the request's app/intent, 5 s - 10 min later, one per request at most
    assert len(set(fb["trace_id"].tolist())) == len(fb["ts"])
    for t, a, i, rts, r in zip(fb["trace_id"].tolist(), fb["app"].tolist(), fb["intent"].tolist(),
                               fb["request_ts"].tolist(), fb["relevance"].tolist()):
        assert by_trace[t][:3] == (a, i, rts) and relevance[t] == r
    delay = fb["ts"] - fb["request_ts"]
    assert delay.min() >= 5 and delay.max() <= 600
    assert set(fb["kind"]) == KINDS


def test_label_and_feedback_events_are_in_time_order_and_counted(tmp_path):
    s = simulate("blind_spot", seed=3, days=16, volume=0.1, labels=True)
    events = list(iter_events(s, chunk=4096))
    assert len(events) == s.n_events
    ts = [e["ts"] for e in events]
    assert all(TS_RE.match(t) for t in ts) and ts == sorted(ts)
    by_stream: dict[str, list[dict]] = {}
    for e in events:
        by_stream.setdefault(e.get("stream", "scores" if "dimension" in e else "retrieval"), []).append(e)
    assert len(by_stream["labels"]) == len(s.labels["ts"]) == s.truth["counts"]["labels"]
    assert len(by_stream["feedback"]) == len(s.feedback["ts"]) == s.truth["counts"]["feedback"]
    assert len(by_stream["scores"]) == len(s.scores["ts"])
    assert all(list(e) == ["stream", "ts", "trace_id", "app", "intent", "dimension", "label", "rater"]
               for e in by_stream["labels"])
    assert all(list(e) == ["stream", "ts", "trace_id", "app", "intent", "kind"] for e in by_stream["feedback"])
    assert all(isinstance(e["label"], float) for e in by_stream["labels"])
    assert {e["kind"] for e in by_stream["feedback"]} == KINDS
    score_traces = {e["trace_id"] for e in by_stream["scores"]}
    assert all(e["trace_id"] in score_traces for e in by_stream["labels"] + by_stream["feedback"])
    got = np.array([epoch(e["ts"]) for e in by_stream["labels"]])
    np.testing.assert_allclose(got, s.labels["ts"], rtol=0, atol=5e-4)
    p = tmp_path / "ev.jsonl"
    assert write_jsonl(s, p, batch=50) == len(events)
    assert [e for line in p.read_text().splitlines() for e in json.loads(line)] == events


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two 0/1 vectors."""
    po = np.mean(a == b)
    pe = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return float((po - pe) / (1 - pe))


def test_own_kappa_is_sklearns():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.7).astype(float)
    b = np.where(rng.random(500) < 0.2, 1 - a, a)
    assert kappa(a, b) == pytest.approx(metrics.cohen_kappa_score(a, b), abs=1e-12)


def target_kappa(t_days: np.ndarray, p: float = 0.75) -> float:
    """Population kappa of a block of labels from the scenario's definition (0.8 until day 20
    10:00, linear to 0.3 at day 80 10:00): the judge verdict is flipped with probability e(kappa),
    and po = 1 - e, pe = p^2 + (1-p)^2 - e (1-2p)^2 are linear in e, so a block's kappa is that
    of its mean flip probability."""
    k = 0.8 - 0.5 * np.clip((t_days - (20 + 10 / 24)) / 60, 0, 1)
    e = 2 * p * (1 - p) * (1 - k) / (1 - (1 - 2 * p) ** 2 * (1 - k))
    e_bar = e.mean()
    po, pe = 1 - e_bar, p ** 2 + (1 - p) ** 2 - e_bar * (1 - 2 * p) ** 2
    return float((po - pe) / (1 - pe))


def test_judge_drift_kappa_follows_its_curve():
    """Measured judge-human kappa per 10-day block (3 seeds pooled: ~5,400 pairs a block) within
    4 standard errors (0.009-0.014) of the target: tight enough to tell the closed-form flip
    probability from a naive e = (1 - kappa) / 2 (kappa 0.75 instead of 0.8 at p = 0.75)."""
    judge, label, t_days, judge_all, t_all = [], [], [], [], []
    for seed in (0, 1, 2):
        s = simulate("judge_drift", seed=seed, volume=0.2)
        assert s.days == 90
        lab, sc = s.labels, s.scores
        corr = sc["dimension"] == "correctness"
        judge_of = dict(zip(sc["trace_id"][corr].tolist(), sc["score"][corr].tolist()))
        judge.append(np.array([judge_of[t] for t in lab["trace_id"].tolist()]))  # the engine's join
        label.append(lab["label"])
        t_days.append((lab["request_ts"] - s.start) / DAY)
        judge_all.append(sc["score"][corr])
        t_all.append((sc["ts"][corr] - s.start) / DAY)
    j, h, t = (np.concatenate(x) for x in (judge, label, t_days))
    measured = []
    for b in range(9):
        m = (t >= 10 * b) & (t < 10 * b + 10)
        n = int(m.sum())
        # 20 a day x 9 series x 10 days x 3 seeds (the last block: labels due after the end dropped)
        assert n == 5400 if b < 8 else 4800 < n < 5400
        k, target = kappa(j[m], h[m]), target_kappa(t[m])
        # large-sample standard error of kappa: sqrt(po (1 - po) / n) / (1 - pe)
        po = np.mean(j[m] == h[m])
        pe = j[m].mean() * h[m].mean() + (1 - j[m].mean()) * (1 - h[m].mean())
        se = math.sqrt(po * (1 - po) / n) / (1 - pe)
        assert abs(k - target) < 4 * se, (b, k, target, se)
        measured.append(k)
    assert measured[0] > 0.77 and measured[1] > 0.77 and measured[-1] < 0.34
    # the judge itself does not move: its pass rate is 0.75 before and after
    ja, ta = np.concatenate(judge_all), np.concatenate(t_all)
    for m in (ta < 20, ta >= 80):
        assert ja[m].mean() == pytest.approx(0.75, abs=0.01)


def test_judge_drift_truth_and_its_stable_twin():
    s = simulate("judge_drift", seed=4, volume=0.05)
    assert s.truth["days"] == 90 and s.truth["labels"]["dimension"] == "correctness"
    changes = s.truth["changes"]
    assert [c["app"] for c in changes] == ["support-bot", "docs-qa", "sales-assistant"]
    series = [x for c in changes for x in c["series"]]
    assert len(series) == 9 and all(x.endswith("/correctness") for x in series)
    for c in changes:
        assert c["what"] == "judge_drift" and c["stream"] == "labels"
        assert c["expected_rules"] == ["judge_agreement_drop"] and c["allowed_rules"] == []
        assert epoch(c["at"]) == s.start + 20 * DAY + 10 * 3600
        assert epoch(c["ramp_end"]) == s.start + 80 * DAY + 10 * 3600
        assert c["crossing"]["kappa"] == 0.45
        assert epoch(c["crossing"]["at"]) == s.start + 62 * DAY + 10 * 3600
        assert epoch(c["expected_by"]) == epoch(c["crossing"]["at"]) + 14 * DAY
        assert c["effect"]["kappa"]["before"] == 0.8 and c["effect"]["kappa"]["after"] == 0.3
    # the same seed with labels on elsewhere: same scores, same labels until the drift starts
    base = simulate("stable", seed=4, days=90, volume=0.05, labels=True)
    for col in SCORE_COLS:
        np.testing.assert_array_equal(s.scores[col], base.scores[col])
    for col in LABEL_COLS:
        if col != "label":
            np.testing.assert_array_equal(s.labels[col], base.labels[col])
    at = epoch(changes[0]["at"])
    diff = s.labels["label"] != base.labels["label"]
    assert diff.any() and not diff[s.labels["request_ts"] < at].any()
    with pytest.raises(ValueError, match="days > 80"):
        simulate("judge_drift", days=80)
    assert simulate("judge_drift", days=81, volume=0.02).days == 81


def thumbs_stats(fb: dict, mask: np.ndarray) -> tuple[float, float, int]:
    """(negative share of feedback, share of thumbs-downs with relevance >= 0.7, thumbs-downs)."""
    kind = fb["kind"][mask]
    td = kind == "thumbs_down"
    neg = np.isin(kind, ["thumbs_down", "regenerate"]).mean()
    return float(neg), float(np.mean(fb["relevance"][mask][td] >= 0.7)), int(td.sum())


def test_feedback_baseline_model():
    s = simulate("stable", seed=6, days=30, volume=1.0, feedback=True)
    fb = s.feedback
    n_req = int((s.scores["dimension"] == "format").sum())
    expected = simmod.feedback_expectation()
    assert len(fb["ts"]) / n_req == pytest.approx(expected["feedback_rate"], abs=0.003)
    assert 0.075 < len(fb["ts"]) / n_req < 0.09  # ~8 % of requests
    kind = fb["kind"]
    assert np.mean(kind == "escalate") == pytest.approx(0.01, abs=0.003)
    assert np.mean(kind == "regenerate") == pytest.approx(0.05, abs=0.006)
    neg, good, n_td = thumbs_stats(fb, np.ones(len(kind), bool))
    assert neg == pytest.approx(expected["negative_share"], abs=0.015)
    assert 0.2 <= good <= 0.35 and good < 1 / 1.5
    # thumbs-down strongly decreasing in the judge's relevance score
    r = fb["relevance"]
    low, high = r < 0.6, r >= 0.8
    assert np.mean(kind[low] == "thumbs_down") > 10 * np.mean(kind[high] == "thumbs_down")
    # every app/intent has enough feedback for a 14-day reference of >= 200 events
    day = (fb["request_ts"] - s.start) // DAY
    key = fb["app"] + "/" + fb["intent"]
    for k in np.unique(key):
        assert np.sum((key == k) & (day < 14)) >= 400, k


def test_blind_spot_effect():
    s = simulate("blind_spot", seed=0, volume=1.0)
    (c,) = s.truth["changes"]
    assert (c["what"], c["app"], c["intents"], c["stream"]) == ("judge_blind_spot", "support-bot", ["billing"],
                                                                "feedback")
    assert c["series"] == ["support-bot/billing"] and c["allowed_rules"] == []
    assert c["expected_rules"] == ["judge_user_disagreement", "negative_feedback_spike"]
    at = epoch(c["at"])
    assert at == s.start + 15 * DAY + 10 * 3600
    fb = s.feedback
    billing = (fb["app"] == "support-bot") & (fb["intent"] == "billing")
    before, after = fb["request_ts"] < at, fb["request_ts"] >= at
    neg0, good0, n0 = thumbs_stats(fb, billing & before)
    neg1, good1, n1 = thumbs_stats(fb, billing & after)
    assert n0 >= 50 and n1 >= 300
    assert 0.15 < good0 < 0.45 and good1 >= 0.75  # ~0.30 -> ~0.86
    assert good1 / good0 >= 1.5 * 1.3
    assert neg1 / neg0 >= 2.0  # ~0.16 -> ~0.51
    assert c["effect"]["negative_share"]["after"] / c["effect"]["negative_share"]["before"] >= 2.5
    # elsewhere nothing moves
    other = (fb["app"] == "support-bot") & (fb["intent"] == "shipping")
    neg_o0, _, _ = thumbs_stats(fb, other & before)
    neg_o1, _, _ = thumbs_stats(fb, other & after)
    assert neg_o1 / neg_o0 < 1.5
    # the judge sees nothing: scores equal stable's; feedback equals stable's outside billing-after
    base = simulate("stable", seed=0, volume=1.0, feedback=True)
    for col in SCORE_COLS:
        np.testing.assert_array_equal(s.scores[col], base.scores[col])
    mine = ~(billing & after)
    bf = base.feedback
    theirs = ~((bf["app"] == "support-bot") & (bf["intent"] == "billing") & (bf["request_ts"] >= at))
    for col in FEEDBACK_COLS:
        np.testing.assert_array_equal(fb[col][mine], bf[col][theirs])


def test_cli_simulate_labels_and_feedback_flags(tmp_path):
    from drift.cli import main

    out = tmp_path / "f.jsonl"
    assert main(["simulate", "stable", "--days", "3", "--volume", "0.05", "--labels", "--feedback",
                 "--out", str(out)]) == 0
    streams = {json.loads(line).get("stream") for line in out.read_text().splitlines()}
    assert streams == {None, "labels", "feedback"}
    truth = json.loads((tmp_path / "f.truth.json").read_text())
    assert truth["counts"]["labels"] > 0 and truth["counts"]["feedback"] > 0
    assert main(["simulate", "judge_drift", "--days", "30", "--out", str(tmp_path / "x.jsonl")]) == 2


@pytest.mark.slow
def test_cli_simulate_judge_drift(tmp_path):
    from drift.cli import main

    out = tmp_path / "f.jsonl"
    assert main(["simulate", "judge_drift", "--days", "90", "--volume", "0.2", "--out", str(out)]) == 0
    truth = json.loads((tmp_path / "f.truth.json").read_text())
    n_labels = n = 0
    prev = ""
    with out.open() as fh:
        for line in fh:
            e = json.loads(line)
            n += 1
            n_labels += e.get("stream") == "labels"
            assert e["ts"] >= prev
            prev = e["ts"]
    assert n_labels == truth["counts"]["labels"] > 15_000
    assert n == sum(v for k, v in truth["counts"].items() if k != "requests")
    assert len(truth["changes"]) == 3
