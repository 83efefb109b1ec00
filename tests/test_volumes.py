"""Detection you can trust at every traffic volume (issue 12's must-shows), through the real
decoder and engine with the built-in rules and their default false-alarm budget.

* 180 stable days, with the simulator's hour-of-day cycles in the quality means, raise no alert
  at volumes 0.05 (about 30 events per series a day), 0.2 and 1: seed 0 here, seeds 1 and 2 in
  ``benchmarks/volumes.py``. At volume 5 (3,000 a day) 45 days here (every rule's reference is
  full and tested for a month), 180 days for seeds 0-2 in the benchmark (9 minutes a run).
* At volume 0.2 (about 120 events per series a day) over 60 days, every SPEC scenario is caught
  by its expected rule with the expected suspected cause, and nothing else fires: seed 0 here
  (``input_shift`` embeds every query with the real encoder), seeds 1 and 2 in the benchmark,
  and ``refusal_spike`` seed 1 here too (a re-fire that must name its cause).
* The stress traffic (per-series volumes over three orders of magnitude, 10x day/night, mean
  cycles on every app, 3 % zero scores, intent-mix changes) raises no alert in 90 days.
"""

from __future__ import annotations

import pytest

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.tools.scorecard import score
from drift.tools.simulate import simulate
from scenario_harness import run_streaming

pytestmark = pytest.mark.slow

SCENARIOS = ("prompt_cleanup", "provider_update", "rag_staleness", "truncation", "refusal_spike")


def _summaries(alerts):
    return [f"{a['data']['rule']} {a['data']['status']}: {a['data']['summary']}" for a in alerts]


@pytest.mark.parametrize("volume,days", [(0.05, 180), (0.2, 180), (1.0, 180), (5.0, 45)])
def test_stable_days_raise_no_alert(volume, days):
    sim = simulate("stable", seed=0, days=days, volume=volume)
    assert sim.truth["catalog"]["requests_per_hour_per_intent"] == 25.0 * volume
    alerts, rejected, engine = run_streaming(sim)
    assert rejected == []
    assert engine.counts["scores.events"] == sim.truth["counts"]["scores"]
    assert alerts == [], _summaries(alerts)


def _check(sim, alerts):
    card = score(sim.truth, alerts)
    assert not card.false_alerts, _summaries(card.false_alerts)
    assert card.changes
    for c in card.changes:
        assert c.detected, (c.what, c.missed_series, c.rules_fired)
        assert c.cause_ok, (c.what, c.causes, c.expected_cause)
    return card


# refusal_spike seed 1 was a known failure: at 120 refusal checks a day, docs-qa/install's tripled
# refusal rate takes 19 days to detect, the episode resolves on a thin day and the rate re-fires
# on 2026-03-01 with its CUSUM's change estimate on 2026-02-11, weeks after the model change.
# A re-fire whose evidence started within a guard of the last resolution continues that episode's
# cause search (detectors.sequential._Cusum._finding), so it names the model change again.
_CASES = [(sc, seed) for sc in SCENARIOS for seed in (0, 1) if seed == 0 or sc == "refusal_spike"]  # 1-2: benchmark


@pytest.mark.parametrize("scenario,seed", _CASES)
def test_every_scenario_at_volume_0_2_is_caught_with_its_cause_and_nothing_else(scenario, seed):
    sim = simulate(scenario, seed=seed, days=60, volume=0.2)
    alerts, rejected, _ = run_streaming(sim)
    assert rejected == []
    _check(sim, alerts)


def test_input_shift_at_volume_0_2_is_caught_by_a_query_rule():
    pytest.importorskip("sentence_transformers", reason="the embedding extra is not installed")
    from drift.embeddings.encoder import Encoder
    from drift.embeddings.golden import GoldenSet
    from drift.tools.simulate import QUERY_APPS, golden_texts

    encoder = Encoder()
    golden = {app: GoldenSet.build(golden_texts(app, per_intent=40), encoder) for app in QUERY_APPS}
    sim = simulate("input_shift", seed=0, days=60, volume=0.2)
    alerts, rejected, engine = run_streaming(sim, Engine(load_settings(), golden=golden,
                                                         encoder_factory=lambda: encoder))
    assert rejected == []
    assert engine.counts["queries.events"] == sim.truth["counts"]["queries"]
    assert engine.counts["queries.embedded"] > 0  # distinct texts, embedded once each
    card = _check(sim, alerts)
    assert set(card.changes[0].rules_fired) <= {"query_centroid_shift", "query_novelty_rise"}


def test_stress_traffic_raises_no_alert():
    sim = simulate("stable", seed=0, days=90, volume=0.2, stress=True)
    per_day = sim.truth["stress"]["requests_per_day"].values()
    assert max(per_day) / min(per_day) >= 900  # three orders of magnitude between series
    assert sim.truth["stress"]["mix_changes"]
    alerts, rejected, _ = run_streaming(sim)
    assert rejected == []
    assert alerts == [], _summaries(alerts)
