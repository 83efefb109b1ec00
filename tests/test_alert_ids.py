"""The refactored engine gives exactly the alert ids of the engine before it (fixtures/alert_ids.json).

Recorded with ``python tests/alert_id_fixture.py --demo`` on the engine as it was before the
rules, streams and sinks became plug-ins: every ``drift simulate`` scenario, seeds 0-2, 30 days,
volume 1 (query events unmonitored: no golden set), and the demo's offline run (checked by
``test_demo.py`` on the live run, which must give the same ids). A detection change regenerates
the fixture in a commit of its own.
"""

import json

import pytest

from alert_id_fixture import DAYS, FIXTURE, JUDGE_SCENARIOS, SEEDS, ids_of
from drift.tools.simulate import SCENARIOS
from scenario_harness import run_scenario

pytestmark = pytest.mark.slow

EXPECTED = json.loads(FIXTURE.read_text())


# test_scenarios.py checks the ids of the scenarios it runs anyway (same seeds, 30 days, volume 1)
CHECKED_IN_TEST_SCENARIOS = {"prompt_cleanup", "provider_update", "rag_staleness", "truncation", "refusal_spike"}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - CHECKED_IN_TEST_SCENARIOS - set(JUDGE_SCENARIOS)))
def test_alert_ids_are_unchanged(scenario, seed):
    _, alerts, rejected = run_scenario(scenario, seed, days=DAYS, volume=1.0)
    assert rejected == []
    assert ids_of(alerts) == EXPECTED[f"simulate/{scenario}/seed{seed}"]


def test_the_fixture_covers_every_scenario_and_the_demo():
    import test_scenarios

    assert CHECKED_IN_TEST_SCENARIOS <= set(SCENARIOS) and test_scenarios.EXPECTED_IDS == EXPECTED
    assert {k for k in EXPECTED if k.startswith("simulate/")} == {
        f"simulate/{s}/seed{n}" for s in SCENARIOS if s not in JUDGE_SCENARIOS for n in SEEDS}
    assert len(EXPECTED["demo/offline/seed0"]) > 0
