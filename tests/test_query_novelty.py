"""query_novelty_rise: the share of an app's queries with no close golden-set neighbour, tested
sequentially (issue 12, item 4).

A query is *novel* when its nearest golden neighbour is less similar than the golden set's own
leave-one-out neighbours at their 1st percentile (``GoldenSet.novelty_threshold``); the rule is a
``RateCusum`` on that 0/1 flag against the series' own reference. Real data: support-bot's golden
set is CLINC150 ``banking`` + ``credit_cards`` (40 ``train`` queries per intent, 1,200), its
production queries their held-out ``test``/``val`` queries, 12 an hour. What was measured (seeded):

* threshold (1st percentile of the leave-one-out similarities) 0.554; novel share of held-out
  in-domain queries 3.1 % (the reference the CUSUM learns; ``min_rate`` floors it at 1 %), of
  ``small_talk`` / ``travel`` / ``utility`` / ``home`` test queries 93-98 %, of ``oos_test`` 94 %;
* a third of the queries from those domains and ``oos_test`` (half each) from day 14 on: the
  novel share goes 3.5 % → 34 %, the rule fires about 5 hours after the change (``change_at``
  within minutes of it), while the query centroid moves only 0.02-0.035 per day (threshold
  0.15), so ``query_centroid_shift`` stays silent;
* 21 days of held-out in-domain queries: no alert.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the embedding extra is not installed")
pytestmark = pytest.mark.slow

from detectors.centroid import cosine_distance  # noqa: E402
from drift.core.config import load_settings  # noqa: E402
from drift.core.engine import Engine  # noqa: E402
from drift.embeddings.golden import GoldenSet, clinc150_queries  # noqa: E402
from drift.tools.simulate import QUERY_APPS, golden_texts  # noqa: E402

APP = "support-bot"
LEFT_OUT = ("small_talk", "travel", "utility", "home")  # CLINC150 domains its golden set lacks
T0 = 1767225600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
SHIFT_DAY = 14
RATE = 12  # queries an hour


# ------------------------------------------------------------------ the threshold, no encoder


def _unit(rng, n, dim):
    v = rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_novelty_threshold_is_the_leave_one_out_quantile(tmp_path):
    rng = np.random.default_rng(3)
    # a clustered set with exact duplicates: a duplicate's nearest other vector is its twin
    centres = _unit(rng, 12, 24)
    v = centres[rng.integers(0, 12, 700)] + 0.35 * rng.normal(size=(700, 24))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    v[-20:] = v[:20]
    g = GoldenSet(v, encoder_id="toy@1")
    w = g.vectors.astype(np.float64)
    s = w @ w.T
    np.fill_diagonal(s, -np.inf)
    loo = s.max(axis=1)
    np.testing.assert_allclose(g.loo_similarities(), loo, rtol=0, atol=1e-6)
    assert np.all(g.loo_similarities()[:20] >= 1 - 1e-6)
    for q in (0.01, 0.05, 0.5):
        assert g.novelty_threshold(q) == pytest.approx(np.quantile(loo, q), abs=1e-6)
    assert g.loo_similarities() is g.loo_similarities()  # cached on the object
    # not written to disk: the files and the checksum stay as they were
    before = g.checksum
    g.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["centroid.npy", "golden.json", "index.faiss",
                                                                 "vectors.npy"]
    assert GoldenSet.load(tmp_path / "g").checksum == before
    # degenerate sets and bad quantiles
    assert GoldenSet(v[:1], encoder_id="toy@1").novelty_threshold() == -np.inf
    with pytest.raises(ValueError, match="q must be in"):
        g.novelty_threshold(1.0)


def test_query_novelty_rise_is_a_built_in_that_can_be_switched_off():
    settings = load_settings()
    spec = settings.rules["query_novelty_rise"]
    assert spec.enabled and spec.kind == "novelty_rate" and spec.stream == "queries"
    assert spec.params["ratio"] == 5.0
    off = load_settings(overrides={"rules": {"query_novelty_rise": {"enabled": False}}})
    assert not off.rules["query_novelty_rise"].enabled
    assert "query_novelty_rise" not in Engine(off).rules


# ------------------------------------------------------------------ the real encoder


class CachingEncoder:
    """The real encoder, each distinct text encoded once for the module (engines share it)."""

    def __init__(self):
        from drift.embeddings.encoder import Encoder

        self.inner = Encoder(batch_size=128)
        self.encoder_id, self.dim, self.dtype = self.inner.encoder_id, self.inner.dim, self.inner.dtype
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts, progress=None):
        texts = list(texts)
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, self.inner.encode(new)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@pytest.fixture(scope="module")
def world():
    enc = CachingEncoder()
    pools = {"held": [t for s in ("test", "val") for t in clinc150_queries(QUERY_APPS[APP], s)],
             "new": clinc150_queries(LEFT_OUT, "test", per_intent=10),
             "oos": clinc150_queries(None, "oos_test")[:500]}
    enc.encode([t for p in pools.values() for t in p])  # one call: the encoder sorts by length
    golden = GoldenSet.build(golden_texts(APP, per_intent=40), enc)
    return enc, golden, pools


def _stream(pools, seed, days=21, shift_day=None, share=1 / 3):
    """Poisson queries (``RATE`` an hour) of held-out in-domain texts; from ``shift_day`` on a
    ``share`` of them from the left-out domains and out-of-scope queries (half each)."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(RATE * 24 * days))
    ts = np.sort(rng.uniform(0, days * DAY, n))
    moved = np.zeros(n, bool) if shift_day is None else (ts >= shift_day * DAY) & (rng.random(n) < share)
    which = np.where(~moved, "held", np.where(rng.random(n) < 0.5, "oos", "new"))
    texts = [pools[w][rng.integers(len(pools[w]))] for w in which]
    return [{"ts": T0 + float(t), "app": APP, "text": x} for t, x in zip(ts, texts)], ts


def _run(enc, golden, events):
    settings = load_settings(overrides={"rules": {"query_novelty_rise": {"enabled": True}}})
    engine = Engine(settings, now=lambda: T0 + 365 * DAY, golden={APP: golden}, encoder_factory=lambda: enc)
    alerts = []
    for a in range(0, len(events), 1000):
        alerts += engine.feed(events[a:a + 1000])
    return alerts, engine


def _seconds(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_fires_on_a_third_of_queries_from_uncovered_domains_while_the_centroid_stays(world):
    enc, golden, pools = world
    events, ts = _stream(pools, seed=1, shift_day=SHIFT_DAY)
    thr = golden.novelty_threshold()
    assert 0.5 < thr < 0.6  # measured 0.554
    vectors = enc.encode([e["text"] for e in events]).astype(np.float64)
    novel = golden.nearest_similarity(vectors) < thr
    before, after = ts < SHIFT_DAY * DAY, ts >= SHIFT_DAY * DAY
    assert novel[before].mean() < 0.06 and 0.28 < novel[after].mean() < 0.40  # measured 3.5 %, 34 %

    alerts, engine = _run(enc, golden, events)
    assert engine.counts["queries.sampled_out"] == 0
    assert {a.rule for a in alerts} == {"query_novelty_rise"}  # query_centroid_shift silent
    (fire,) = [a for a in alerts if a.status == "firing"]
    assert fire.labels == {"stream": "queries", "app": APP} and fire.detector == "novelty_rate"
    shift_at = T0 + SHIFT_DAY * DAY
    starts, change = _seconds(fire.starts_at), _seconds(fire.change_at)
    assert shift_at < starts <= shift_at + DAY  # measured: 5 hours
    assert abs(change - shift_at) < 6 * 3600  # measured: 6 minutes after
    assert fire.statistic.name == "rate_ratio" and fire.statistic.value >= 5.0
    assert fire.summary.startswith(f"share of {APP}'s queries with no close golden-set neighbour rose to ")
    assert "sequential test" in fire.summary
    assert fire.suspected_cause["kind"] == "none" and "golden-set neighbour" in fire.suspected_cause["detail"]
    assert {"cusum", "cusum_threshold", "change_at", "texts_sampled_out"} <= set(fire.evidence)
    assert fire.window.value > 0.2 and fire.baseline.value < 0.06

    # the centroid moved far less than query_centroid_shift's 0.15, over any of its windows
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    dists = [float(cosine_distance(v[(ts >= lo) & (ts < lo + span)].sum(axis=0)[None], golden.centroid)[0])
             for span in (DAY, 2 * DAY, 7 * DAY) for lo in np.arange(SHIFT_DAY * DAY, 21 * DAY - span + 1, DAY)]
    assert max(dists) < 0.08  # measured 0.02-0.035


def test_silent_on_held_out_in_domain_queries(world):
    enc, golden, pools = world
    events, ts = _stream(pools, seed=2)
    alerts, engine = _run(enc, golden, events)
    assert alerts == []
    assert "query_novelty_rise" in engine.rules and engine.counts["queries.embedded"] > 0
