"""The scorecard that matches alerts to a simulation's ground truth."""

from drift.tools.scorecard import score

TRUTH = {"changes": [{"what": "prompt_hash_change", "at": "2026-01-16T10:00:00Z", "series": ["a/b/format", "a/b/format_valid"],
                      "expected_rules": ["format_failure_spike", "quality_drop"], "allowed_rules": ["quality_shift"],
                      "expected_cause": "prompt_hash_change"}]}


def alert(rule, series, start, cause="prompt_hash_change", status="firing"):
    app, intent, dim = series.split("/")
    return {"id": f"{rule}{series}{start}/{status}", "data": {
        "rule": rule, "status": status, "starts_at": start, "suspected_cause": {"kind": cause},
        "labels": {"app": app, "intent": intent, "dimension": dim}}}


def test_detected_with_delay_and_cause():
    card = score(TRUTH, [alert("format_failure_spike", "a/b/format_valid", "2026-01-16T11:00:00Z"),
                         alert("quality_drop", "a/b/format", "2026-01-17T18:00:00Z")])
    (c,) = card.changes
    assert c.detected and c.cause_ok and card.ok
    assert c.delay == 3600 and c.rules_fired["quality_drop"] == 32 * 3600


def test_missing_rule_wrong_cause_and_false_alerts():
    card = score(TRUTH, [alert("format_failure_spike", "a/b/format_valid", "2026-01-16T11:00:00Z", cause="none"),
                         alert("quality_drop", "a/c/format", "2026-01-17T18:00:00Z"),
                         alert("quality_drop", "a/b/format", "2026-01-15T18:00:00Z")])  # before the change
    (c,) = card.changes
    assert not c.detected and c.missed_series == ["a/b/format"]
    assert not c.cause_ok
    assert len(card.false_alerts) == 2 and not card.ok
    assert "false alerts: 2" in card.table()
