"""The judge join and its rules: labels and feedback meet the scores of their trace.

Checked here on seeded streams with known change points: Cohen's kappa and its standard error
against scikit-learn and statsmodels, the join's independence from arrival order and batching
(the property that gives replay/serve parity), checkpoints mid-stream, bad input with reasons,
and the quality alerts that say the judge is untrusted.
"""

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from detectors.kappa import KappaDrop, binary_kappa
from drift import Engine
from drift.core.config import load_settings

T0 = 1767225600.0  # 2026-01-01
DAY = 86400.0


def judged_stream(days=90, per_day=20, change_day=45, flip_before=0.05, flip_after=0.35, seed=0,
                  feedback=False, blind_from=None):
    """Score events of a pass/fail judge dimension, a label for each an hour later and (optionally)
    feedback on a `relevance` score. Returns (scores, labels, feedback) lists of events."""
    rng = np.random.default_rng(seed)
    scores, labels, fb = [], [], []
    n = days * per_day
    for k in range(n):
        t = T0 + k * DAY / per_day
        tid = f"{seed:02d}{k:08d}"
        j = int(rng.random() < 0.5)
        flip = rng.random() < (flip_before if t < T0 + change_day * DAY else flip_after)
        rel = float(np.round(rng.beta(17, 3), 4))
        scores.append({"ts": t, "app": "bot", "intent": "billing", "dimension": "correctness", "score": float(j),
                       "trace_id": tid})
        scores.append({"ts": t, "app": "bot", "intent": "billing", "dimension": "relevance", "score": rel,
                       "trace_id": tid})
        labels.append({"ts": t + 3600 + 60 * rng.random(), "stream": "labels", "app": "bot", "intent": "billing",
                       "dimension": "correctness", "label": 1 - j if flip else j, "trace_id": tid, "rater": "r1"})
        if feedback:
            blind = blind_from is not None and t >= T0 + blind_from * DAY
            p_down = (0.9 if rel < 0.7 else 0.01) + (0.1 if blind else 0.0)
            u = rng.random()
            kind = "thumbs_down" if u < p_down else ("regenerate" if u < p_down + 0.03 else "thumbs_up")
            fb.append({"ts": t + 30 + 300 * rng.random(), "stream": "feedback", "app": "bot", "intent": "billing",
                       "kind": kind, "trace_id": tid})
    return scores, labels, fb


def by_time(*streams):
    return sorted([e for s in streams for e in s], key=lambda e: e["ts"])


def ids(alerts):
    return sorted(a.alert_id for a in alerts)


# --------------------------------------------------------------------------- statistics
def test_binary_kappa_matches_sklearn_and_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(5, 400))
        a = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
        b = np.where(rng.random(n) < rng.uniform(0, 0.6), 1 - a, a)
        c = [((a == 1) & (b == 1)).sum(), ((a == 1) & (b == 0)).sum(), ((a == 0) & (b == 1)).sum(),
             ((a == 0) & (b == 0)).sum()]
        k, se = binary_kappa(*c)
        if len(set(a) | set(b)) < 2:
            assert np.isnan(k)
            continue
        assert abs(k - cohen_kappa_score(a, b)) < 1e-12
        ref = sm.cohens_kappa(np.array([[c[0], c[1]], [c[2], c[3]]]))
        # (a rater with one class only: kappa 0 and a variance of 0 up to rounding, which
        # statsmodels leaves negative and turns into a NaN standard error)
        assert abs(se - np.sqrt(max(ref.var_kappa, 0.0))) < 1e-10
    # one class only on both sides: undefined, not an error
    assert np.isnan(binary_kappa(10, 0, 0, 0)[0])


def test_upper_bound_widens_at_low_volume_for_the_false_alarm_budget():
    det = KappaDrop()
    # the same observed kappa (0.5) on 60 pairs and on 200: the bound is wider on fewer pairs
    ucb = []
    for n in (60, 200):
        k, se = binary_kappa(0.375 * n, 0.125 * n, 0.125 * n, 0.375 * n)
        z = max(det.z_min, det.z_alpha - (det.healthy - det.bar) / se)
        ucb.append(k + z * se)
        # a judge at `healthy` with this standard error crosses the bound at most at the per-look level
        from scipy import stats
        assert stats.norm.cdf(-(det.healthy - det.bar) / se - z) <= 1.0001 * stats.norm.sf(det.z_alpha)
    assert ucb[0] > ucb[1] > 0.6 - 1e-9 or ucb[0] > ucb[1]


def test_kappa_drop_fires_after_the_change_and_not_before():
    s, lab, _ = judged_stream(days=120, change_day=60)
    alerts = Engine().feed(by_time(s, lab))
    fired = [a for a in alerts if a.rule == "judge_agreement_drop" and a.status == "firing"]
    assert len(fired) == 1
    start = (np.datetime64(fired[0].starts_at.rstrip("Z")) - np.datetime64("2026-01-01")) / np.timedelta64(1, "D")
    assert 60 <= start <= 74
    a = fired[0]
    assert a.severity == "critical" and a.labels == {"stream": "labels", "app": "bot", "intent": "billing",
                                                     "dimension": "correctness"}
    assert "re-rate the gold set" in a.first_action and "kappa" in a.summary


@pytest.mark.parametrize("seed", range(1))  # 9 series x 180 days more: test_judge_scenarios.py
def test_a_healthy_judge_raises_nothing_in_180_days(seed):
    s, lab, _ = judged_stream(days=180, change_day=10_000, flip_before=0.1, seed=seed)  # kappa 0.8
    alerts = Engine().feed(by_time(s, lab))
    assert [a.rule for a in alerts if a.rule == "judge_agreement_drop"] == []


# --------------------------------------------------------------------------- the join
def _run_batches(engine, batches):
    out = []
    for b in batches:
        if b:
            d = engine.decoder().decode([json.dumps(e).encode() for e in b])
            assert not d.rejected, d.rejected[:1]
            alerts, late = engine.run(d)
            assert not late
            out += alerts
    return out


def test_join_is_independent_of_arrival_order_and_batching():
    s, lab, fb = judged_stream(days=100, change_day=50, feedback=True, blind_from=60)
    reference = Engine().feed(by_time(s, lab, fb))
    assert {a.rule for a in reference} >= {"judge_agreement_drop"}
    # labels and feedback read far ahead of the scores (a live service reading topics at its own
    # pace): every stream in time order within itself, interleaved in chunks of very different sizes
    order = []
    i = j = 0
    side = by_time(lab, fb)
    while i < len(s) or j < len(side):
        order.append(side[j:j + 700])
        j += 700
        order.append(s[i:i + 173])
        i += 173
    e = Engine()
    shuffled = _run_batches(e, order)
    assert ids(shuffled) == ids(reference)
    assert e.counts["judge.labels.joined"] == len(lab)


def test_a_checkpoint_mid_stream_loses_no_join():
    s, lab, fb = judged_stream(days=100, change_day=50, feedback=True, blind_from=60)
    events = by_time(s, lab, fb)
    reference = Engine().feed(events)
    # labels arrive before their scores at the cut: they wait in the join, and the state carries them
    cut = len(events) // 2
    first, rest = events[:cut], events[cut:]
    late_scores = [e for e in first if "score" in e and e["ts"] > first[-1]["ts"] - 7200]
    moved = {id(e) for e in late_scores}
    first = [e for e in first if id(e) not in moved]
    rest = late_scores + rest
    e1 = Engine()
    a1 = _run_batches(e1, [first])
    waiting = e1.judge.n_rights
    state = json.loads(json.dumps(e1.state_dict(), default=lambda o: o.tolist()))
    e2 = Engine()
    e2.load_state(_arrays(state, e1.state_dict()))
    a2 = _run_batches(e2, [rest])
    assert waiting > 0
    assert ids(a1 + a2) == ids(reference)
    assert e2.counts["judge.labels.joined"] == len(lab)


def _arrays(plain, like):
    """Undo the JSON round trip for numpy arrays (the checkpoint codec keeps them as arrays)."""
    if isinstance(like, np.ndarray):
        return np.array(plain, dtype=like.dtype).reshape(like.shape)
    if isinstance(like, dict):
        return {k: _arrays(plain[k if k in plain else str(k)], v) for k, v in like.items()}
    if isinstance(like, list) and like and isinstance(plain, list) and len(plain) == len(like):
        return [_arrays(p, v) for p, v in zip(plain, like)]
    return plain


def test_labels_without_scores_are_counted_not_lost():
    s, lab, _ = judged_stream(days=20, change_day=1000)
    e = Engine()
    e.feed(by_time(s[:200], lab))  # the scores of most labelled traces never come
    assert e.counts["judge.labels.joined"] == 100
    assert e.counts["judge.labels.unjoined"] > 0 or e.judge.n_rights > 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("event, cls, words", [
    ({"stream": "labels", "app": "a", "intent": "b", "dimension": "relevance", "label": 1.5, "trace_id": "t"},
     "OutOfScale", "outside the scale"),
    ({"stream": "labels", "app": "a", "intent": "b", "dimension": "relevance", "label": "meh", "trace_id": "t"},
     "OutOfScale", "not a number"),
    ({"stream": "labels", "app": "a", "intent": "b", "dimension": "refusal", "label": 0.5, "trace_id": "t"},
     "OutOfScale", "takes 0 or 1"),
    ({"stream": "labels", "app": "a", "intent": "b", "label": 1, "trace_id": "t"}, "SchemaError", "`dimension`"),
    ({"stream": "labels", "app": "a", "intent": "b", "dimension": "relevance", "label": 1}, "SchemaError", "`trace_id`"),
    ({"stream": "feedback", "app": "a", "intent": "b", "kind": "meh", "trace_id": "t"}, "SchemaError", "thumbs_down"),
    ({"stream": "feedback", "app": "a", "intent": "b", "kind": "thumbs_down"}, "SchemaError", "`trace_id`"),
])
def test_bad_labels_and_feedback_are_rejected_with_the_reason(event, cls, words):
    d = Engine().decoder().decode([json.dumps({"ts": "2026-01-05T00:00:00Z", **event}).encode()])
    assert len(d.rejected) == 1
    assert d.rejected[0].error_class == cls and words in d.rejected[0].reason


def test_labels_and_feedback_are_told_apart_by_their_fields():
    d = Engine().decoder().decode([
        b'{"ts": 1767225600, "app": "a", "intent": "b", "dimension": "relevance", "label": "good", "trace_id": "t"}',
        b'{"ts": 1767225600, "app": "a", "intent": "b", "kind": "escalate", "trace_id": "t"}'])
    assert not d.rejected and len(d.batches["labels"]) == 1 and len(d.batches["feedback"]) == 1


# --------------------------------------------------------------------------- feedback rules and trust
def test_blind_spot_fires_judge_user_disagreement_and_escalations_are_kept():
    s, _, fb = judged_stream(days=60, per_day=200, change_day=10_000, feedback=True, blind_from=35)
    fb[5]["kind"] = "escalate"
    e = Engine()
    alerts = e.feed(by_time(s, fb))
    rules = {a.rule for a in alerts if a.status == "firing"}
    assert "judge_user_disagreement" in rules and "negative_feedback_spike" in rules
    dis = next(a for a in alerts if a.rule == "judge_user_disagreement")
    start = (np.datetime64(dis.starts_at.rstrip("Z")) - np.datetime64("2026-01-01")) / np.timedelta64(1, "D")
    assert 35 <= start <= 40
    assert "blind spot" in dis.summary
    assert [x[3] for x in e.take_escalations()] == [fb[5]["trace_id"]]


def test_no_feedback_alerts_on_stable_feedback():
    s, _, fb = judged_stream(days=60, per_day=200, change_day=10_000, feedback=True)
    alerts = Engine().feed(by_time(s, fb))
    assert [a.rule for a in alerts if a.rule in ("judge_user_disagreement", "negative_feedback_spike")] == []


def test_quality_alerts_say_the_judge_is_untrusted_while_agreement_is_low():
    settings = load_settings()
    s, lab, _ = judged_stream(days=100, per_day=100, change_day=40)
    # the correctness scores collapse on day 80, after the judge became untrusted on correctness
    for e in s:
        if e["dimension"] == "correctness" and e["ts"] >= T0 + 80 * DAY:
            e["score"] = 0.0
    events = by_time(s, lab)
    day = np.array([int((e["ts"] - T0) // DAY) for e in events])
    # a day at a time, as a service reads them (the mark says what the engine knows when it alerts)
    alerts = _run_batches(Engine(settings), [[events[i] for i in np.flatnonzero(day == d)] for d in range(101)])
    drop = [a for a in alerts if a.rule == "quality_drop" and a.status == "firing"
            and a.labels["dimension"] == "correctness"]
    assert drop and drop[0].labels.get("judge") == "untrusted" and "judge untrusted" in drop[0].summary
    plain = Engine(settings)
    ref = plain.feed(by_time(s))  # without labels: same id, no mark
    same = [a for a in ref if a.alert_id == drop[0].alert_id]
    assert same and "judge" not in same[0].labels


def test_the_join_store_expires_bounds_and_round_trips():
    from drift.core.judge import JudgeJoin

    j = JudgeJoin(max_age=100.0, max_entries=50, feedback_dims=("relevance",))
    dims = np.array(["correctness"] * 30, dtype=object)
    j.offer_scores(dims, np.arange(30.0), np.ones(30), [f"t{i}" for i in range(30)])
    j.offer_labels(np.array(["a"] * 2, dtype=object), np.array(["b"] * 2, dtype=object),
                   np.array(["correctness"] * 2, dtype=object), np.array([5.0, 500.0]), np.array([1.0, 0.0]),
                   ["t3", "t99"])  # t3 joins at once; t99 waits
    assert j.counts["labels.joined"] == 1 and j.n_rights == 1 and len(j) == 31
    state = j.state_dict()
    k = JudgeJoin(100.0, 50, ("relevance",))
    k.load_state(state)
    assert k.lefts == j.lefts and k.rights == j.rights and len(k) == 31
    # the bound: 30 more lefts evict the oldest batch whole (30 lefts), never the waiting label
    k.offer_scores(dims, 1000.0 + np.arange(30.0), np.zeros(30), [f"u{i}" for i in range(30)])
    assert len(k) == 31 and k.counts["evicted_lefts"] == 30 and k.n_rights == 1
    # expiry: the waiting label is counted as unjoined once the cutoff passes it
    k.expire(2000.0)
    assert k.counts["labels.unjoined"] == 1 and len(k) == 0
    # a label far from its score in event time does not pair
    k.offer_scores(dims[:1], np.array([3000.0]), np.ones(1), ["v"])
    k.offer_labels(np.array(["a"], dtype=object), np.array(["b"], dtype=object), dims[:1], np.array([3200.0]),
                   np.ones(1), ["v"])
    assert k.counts["labels.too_far_apart"] == 1


def test_replay_summary_counts_labels_and_feedback_waiting_for_their_score(tmp_path, capsys):
    """No labels at all: nothing is waiting on the labels' side (joined pairs held for release
    count as joined, not as waiting); a thumbs-down without a score is waiting on its own side."""
    from drift.cli import main

    s, _, fb = judged_stream(days=3, per_day=30, change_day=1000, feedback=True, seed=5)
    down = next(f for f in fb if f["kind"] == "thumbs_down")
    lost = {**down, "ts": fb[-1]["ts"], "trace_id": "no-such-trace"}
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in by_time(s, fb, [lost])))
    assert main(["replay", str(path), "--quiet"]) == 0  # thumbs-downs meet the `relevance` score by default
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("judge join"))
    assert "labels joined 0 (never joined 0, waiting for their score 0)" in line, line
    assert "(waiting for their score 1)" in line and "thumbs-downs joined 0 " not in line, line


def test_replay_reports_the_join_and_writes_escalated_traces(tmp_path, capsys):
    from drift.cli import main

    s, lab, fb = judged_stream(days=20, per_day=30, change_day=1000, feedback=True, seed=4)
    fb[3]["kind"] = fb[9]["kind"] = "escalate"
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in by_time(s, lab, fb)))
    esc = tmp_path / "esc.jsonl"
    assert main(["replay", str(path), "--quiet", "--escalations", str(esc)]) == 0
    out = capsys.readouterr().out
    assert f"labels {len(lab):,}" in out and f"feedback {len(fb):,}" in out
    assert "judge join        labels joined" in out and "escalated traces 2" in out
    rows = [json.loads(x) for x in esc.read_text().splitlines()]
    assert [r["trace_id"] for r in rows] == [fb[3]["trace_id"], fb[9]["trace_id"]]


def test_the_compared_judge_dimension_is_configurable(tmp_path):
    cfg = tmp_path / "drift.toml"
    cfg.write_text('[rules.judge_user_disagreement]\njudge_dimension = "helpfulness"\ngood = 0.6\n'
                   '[rules.judge_agreement_drop]\npairs = 100\nmin_pairs = 30\n')
    s = load_settings(str(cfg))
    e = Engine(s)
    assert e.judge.feedback_dims == ("helpfulness",) and s.rules["judge_user_disagreement"].match == {}
    assert s.rules["judge_agreement_drop"].params["pairs"] == 100
    from drift.core.params import ConfigError
    cfg.write_text('[rules.judge_agreement_drop]\nhealthy = 0.5\n')
    with pytest.raises(ConfigError, match="rules.judge_agreement_drop: healthy must be in"):
        load_settings(str(cfg))
