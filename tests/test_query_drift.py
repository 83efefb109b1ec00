"""query_centroid_shift through the engine on real CLINC150 queries (the input_shift scenario)."""

import json
import subprocess
import sys

import msgspec
import pytest

pytest.importorskip("sentence_transformers", reason="the embedding extra is not installed")
pytestmark = pytest.mark.slow

from drift.core.config import load_settings  # noqa: E402
from drift.core.engine import Engine  # noqa: E402
from drift.embeddings.encoder import Encoder, to_b64  # noqa: E402
from drift.embeddings.golden import GoldenSet  # noqa: E402
from drift.tools.scorecard import score  # noqa: E402
from drift.tools.simulate import QUERY_APPS, golden_texts, iter_events, simulate  # noqa: E402
from scenario_harness import run_lines  # noqa: E402

enc = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


@pytest.fixture(scope="module")
def golden(encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    sets = {}
    for app in QUERY_APPS:
        g = GoldenSet.build(golden_texts(app, per_intent=40), encoder)
        g.save(root / app)
        sets[app] = g
    return root, sets


@pytest.fixture(scope="module")
def shift_run(golden, encoder):
    root, sets = golden
    sim = simulate("input_shift", seed=0, days=28)
    events = list(iter_events(sim))
    engine = Engine(load_settings(), golden=sets, encoder_factory=lambda: encoder)
    alerts, rejected, engine = run_lines([enc.encode(e) for e in events], engine=engine)
    return sim, events, alerts, rejected, engine


def test_input_shift_fires_query_centroid_shift_only_on_the_shifted_app(shift_run):
    sim, events, alerts, rejected, engine = shift_run
    assert rejected == []
    card = score(sim.truth, alerts)
    assert not card.false_alerts, [a["data"]["summary"] for a in card.false_alerts]
    (change,) = card.changes
    assert change.detected and "query_centroid_shift" in change.rules_fired
    assert set(change.rules_fired) <= {"query_centroid_shift", "query_novelty_rise"}
    fire = [a for a in alerts if a["data"]["status"] == "firing"]
    assert {a["data"]["labels"]["app"] for a in fire} == {"support-bot"}
    d = next(a["data"] for a in fire if a["data"]["rule"] == "query_centroid_shift")
    assert d["statistic"]["name"] == "cosine_distance" and d["statistic"]["value"] >= 0.15
    assert d["suspected_cause"]["kind"] == "none" and "golden" in d["suspected_cause"]["detail"]
    ev = d["evidence"]
    assert 0 < ev["coverage"] < 0.8 and ev["texts_sampled_out"] == 0
    assert "hello" not in json.dumps(d).lower()  # no query text in the alert
    assert engine.counts["queries.embedded"] > 0


def test_same_alerts_from_embedding_b64_and_embedding_lists(shift_run, golden):
    sim, events, alerts, _, engine = shift_run
    _, sets = golden
    cache = engine._embed_cache
    as_b64, as_list = [], []
    for e in events:
        if "text" in e:
            v = cache[e["text"]]
            e64 = {k: v_ for k, v_ in e.items() if k != "text"}
            e64["embedding_b64"] = to_b64(v)[0]
            as_b64.append(e64)
            as_list.append({**{k: v_ for k, v_ in e.items() if k != "text"}, "embedding": v.tolist()})
        else:
            as_b64.append(e)
            as_list.append(e)
    ids = sorted(a["id"] for a in alerts)
    for variant in (as_b64, as_list):
        got, rejected, _ = run_lines([enc.encode(e) for e in variant], engine=Engine(load_settings(), golden=sets))
        assert rejected == []
        assert sorted(a["id"] for a in got) == ids


def test_wrong_dimension_goes_to_the_dlq(golden):
    _, sets = golden
    engine = Engine(load_settings(), golden=sets)
    d = engine.decoder().decode([enc.encode({"ts": 1767607200, "app": "support-bot", "embedding": [0.1] * 10})])
    assert [r.error_class for r in d.rejected] == ["BadEmbedding"]
    assert "384" in d.rejected[0].reason


def test_mismatched_golden_set_is_refused_at_start_up(golden, tmp_path):
    root, _ = golden
    bad = tmp_path / "golden"
    import shutil

    shutil.copytree(root, bad)
    meta_path = bad / "support-bot" / "golden.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder_id"] = "some-other-encoder@1"
    meta_path.write_text(json.dumps(meta))
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps({"ts": 1767607200, "app": "support-bot", "text": "hello"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "drift.cli", "replay", str(events), "--golden", str(bad)],
                       capture_output=True, timeout=120)
    assert r.returncode == 2
    assert b"queries.golden" in r.stderr and b"encoder" in r.stderr
