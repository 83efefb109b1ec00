"""Accepting the new normal: ``Engine.reset_baseline`` and the ``drift.control`` command.

- A reset resolves the open episode (same alert id as its firing), records an info alert, and
  from then on the rule behaves on the reset series *exactly* as on a series that appeared at
  the reset: checked alert for alert against a fresh engine fed only the data after it, for every
  default rule on scores and retrieval (sequential mean and rate, KS, cost ratio, percent drop).
- The story the issue asks for, in event time: a drop fires, a reset accepts the lower level,
  the series stays quiet there for weeks, and a later real drop from that level fires again.
- A reset survives a checkpoint (state round trip), and commands are checked field by field.

The same through Kafka and ``drift serve`` is in tests/test_control_service.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from drift.core.config import load_settings
from drift.core.engine import Engine, parse_command

DAY = 86400.0
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def _stream(seed: int, days: float, level, per_hour: int = 12, apps=("bot", "other"), start: float = 0.0):
    """Score and retrieval events of ``apps`` x intents a/b, hour by hour, every hour covered.

    ``level(day) -> (relevance mean, format_valid pass rate, refusal rate, cost factor,
    retrieval top-1 mean)``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for h in range(int(start * 24), int(days * 24)):
        for i in range(per_hour):
            ts = T0 + h * 3600.0 + (i + rng.random()) * 3600.0 / per_hour
            rel, fmt, refusal, cost, top1 = level(ts / DAY - T0 / DAY)
            for app in apps:
                for intent in ("a", "b"):
                    tid = f"{app}-{intent}-{h}-{i}"
                    c = float(np.round(0.004 * cost * rng.lognormal(0, 0.3), 6))
                    q = float(rng.beta(rel * 20, (1 - rel) * 20))
                    common = {"ts": ts, "app": app, "intent": intent, "trace_id": tid, "model": "m",
                              "prompt_hash": "p1"}
                    out.append({**common, "dimension": "relevance", "score": q, "cost_usd": c})
                    out.append({**common, "dimension": "format_valid", "score": float(rng.random() < fmt),
                                "cost_usd": c})
                    out.append({**common, "dimension": "refusal", "score": float(rng.random() < refusal),
                                "cost_usd": c})
                    s1 = float(np.clip(rng.normal(top1, 0.05), 0, 1))
                    out.append({"ts": ts, "app": app, "intent": intent, "trace_id": tid,
                                "scores": [s1, s1 * 0.9, s1 * 0.8]})
    return out


def _key(a):
    return (a.rule, a.status, tuple(sorted(a.labels.items())), a.starts_at, a.ends_at)


def _steady(day):
    return 0.85, 0.97, 0.02, 1.0, 0.80


def _degraded_then(day, change=20.0):
    if day < change:
        return _steady(day)
    return 0.72, 0.80, 0.08, 1.6, 0.65


RULES = ("quality_drop", "quality_shift", "format_failure_spike", "flag_rate_spike", "cost_per_quality_rise",
         "retrieval_drop")


@pytest.mark.slow
def test_after_a_reset_each_rule_behaves_as_on_a_new_series():
    """Every rule on scores and retrieval: reset bot's series at day 26 (everything learned before
    is forgotten) and the alerts after it equal, one for one, a fresh engine's that only ever saw
    the data from day 26 on. The data degrade on day 20 and degrade again on day 40, so both
    engines have something to fire on."""
    def level(day):
        if day < 20:
            return _steady(day)
        if day < 40:
            return _degraded_then(day)
        return 0.60, 0.55, 0.20, 2.6, 0.50

    cut = 26.0
    before = _stream(1, cut, level)
    after = _stream(1, 60.0, level, start=cut)
    settings = load_settings()
    eng = Engine(settings)
    fired_before = eng.feed(before)
    open_ids = {}
    for a in fired_before:
        if a.labels.get("app") == "bot" and a.rule in RULES:
            if a.status == "firing":
                open_ids[a.alert_id] = a
            elif a.status == "resolved":
                open_ids.pop(a.alert_id, None)
    assert {a.rule for a in open_ids.values()} >= {"quality_drop", "format_failure_spike", "retrieval_drop"}
    out = []
    for rule in RULES:
        out += eng.reset_baseline(rule, "bot", at=T0 + cut * DAY, by="test")
    resolved = [a for a in out if a.status == "resolved"]
    # every open episode of bot resolves, with its firing alert's id and labels, nothing else
    assert {a.alert_id for a in resolved} == set(open_ids)
    for a in resolved:
        assert a.labels == open_ids[a.alert_id].labels and a.ends_at.startswith("2026-01-27")
        assert "resolved by a baseline reset by test" in a.summary
    notices = [a for a in out if a.status == "info"]
    assert {(a.labels["reset_rule"], a.labels["app"]) for a in notices} == {(r, "bot") for r in RULES}
    assert all(a.rule == "baseline_reset" and a.severity == "info" for a in notices)

    later_all = eng.feed(after)
    later = [a for a in later_all if a.labels.get("app") == "bot" and a.rule in RULES]
    fresh = [a for a in Engine(settings).feed([e for e in after if e["app"] == "bot"]) if a.rule in RULES]
    assert sorted(map(_key, later)) == sorted(map(_key, fresh))
    # and the test can fail: the day-40 drop fires in both, on several rules
    assert {a.rule for a in fresh if a.status == "firing"} >= {"quality_drop", "format_failure_spike"}
    # the other app was not touched: its alerts are those of an engine that never saw a reset
    never = [a for a in Engine(settings).feed(before + after) if a.labels.get("app") == "other"]
    mine = [a for a in fired_before + later_all if a.labels.get("app") == "other"]
    assert mine and sorted(map(_key, mine)) == sorted(map(_key, never))


@pytest.mark.slow
def test_reset_accepts_the_new_level_and_a_later_drop_fires_again():
    """relevance 0.85 -> 0.72 on day 20 fires quality_drop; the team accepts it on day 24; 30
    quiet days at 0.72; relevance 0.72 -> 0.62 on day 54 fires again, a new episode."""
    def level(day):
        rel = 0.85 if day < 20 else (0.72 if day < 54 else 0.62)
        return rel, 0.97, 0.02, 1.0, 0.80

    eng = Engine(load_settings())
    first = [a for a in eng.feed(_stream(2, 24.0, level, apps=("bot",))) if a.rule == "quality_drop"]
    fired = {a.alert_id: a for a in first if a.status == "firing"}
    assert {a.labels["intent"] for a in fired.values()} == {"a", "b"}
    assert not [a for a in first if a.status == "resolved"]  # the lower level does not recover
    out = eng.reset_baseline("quality_drop", "bot", at=T0 + 24 * DAY, by="alice", reason="new prompt v7 accepted")
    assert {a.alert_id for a in out if a.status == "resolved"} == set(fired)
    info = [a for a in out if a.status == "info"]
    assert len(info) == 2 and all("new prompt v7 accepted" in a.summary for a in info)
    quiet = [a for a in eng.feed(_stream(2, 54.0, level, apps=("bot",), start=24.0)) if a.rule == "quality_drop"]
    assert quiet == []
    again = [a for a in eng.feed(_stream(2, 64.0, level, apps=("bot",), start=54.0))
             if a.rule == "quality_drop" and a.status == "firing"]
    assert {a.labels["intent"] for a in again} == {"a", "b"}
    assert not {a.alert_id for a in again} & set(fired)
    assert all(a.starts_at >= "2026-02-24" for a in again)  # after the day-54 drop, not before it


def test_reset_of_a_quiet_series_and_unknown_rule():
    eng = Engine(load_settings())
    eng.feed(_stream(3, 2.0, _steady, apps=("bot",)))
    out = eng.reset_baseline("quality_drop", "bot", intent="a", dimension="relevance", at=T0 + 2 * DAY)
    assert [(a.status, a.labels["intent"], a.labels["dimension"]) for a in out] == [("info", "a", "relevance")]
    assert eng.reset_baseline("quality_drop", "nobody") == []
    with pytest.raises(ValueError, match="rule: 'nope' is not an enabled rule"):
        eng.reset_baseline("nope", "bot")
    # the same command twice gives the same info alert id (a re-delivered command is no new alert)
    again = eng.reset_baseline("quality_drop", "bot", intent="a", dimension="relevance", at=T0 + 2 * DAY)
    assert [a.alert_id for a in again] == [a.alert_id for a in out]


@pytest.mark.slow
def test_a_reset_survives_a_checkpoint():
    """Reset, write the state, restore it in a new engine: both go on to give the same alerts."""
    eng = Engine(load_settings())
    eng.feed(_stream(4, 24.0, _degraded_then, apps=("bot",)))
    assert eng.reset_baseline("quality_drop", "bot", at=T0 + 24 * DAY)
    restored = Engine(load_settings())
    restored.load_state(eng.state_dict())
    rest = _stream(4, 40.0, lambda d: (0.62, 0.97, 0.02, 1.0, 0.8) if d >= 32 else _degraded_then(d),
                   apps=("bot",), start=24.0)
    a, b = eng.feed(rest), restored.feed(rest)
    assert [x.alert_id for x in a] == [x.alert_id for x in b]
    assert any(x.rule == "quality_drop" and x.status == "firing" for x in a)


def test_parse_command_names_the_field():
    ok = parse_command(b'{"command": "baseline_reset", "rule": "quality_drop", "app": "bot", "intent": "a", '
                       b'"ts": "2026-01-02T00:00:00Z", "by": "alice"}')
    assert ok["ts"] == T0 + DAY and ok["intent"] == "a" and ok["by"] == "alice"
    for doc, message in [
        (b"{", "not JSON"),
        (b"[]", "a command is a JSON object"),
        ({"command": "baseline_reset", "app": "bot", "ts": 0}, "rule: required"),
        ({"command": "baseline_reset", "rule": "r", "ts": 0}, "app: required"),
        ({"command": "baseline_reset", "rule": "r", "app": "a"}, "ts: required"),
        ({"command": "baseline_reset", "rule": "r", "app": "a", "ts": "yesterday"}, "ts: not an RFC 3339"),
        ({"command": "baseline_reset", "rule": "r", "app": 3, "ts": 0}, "app: must be a non-empty string"),
        ({"command": "baseline_reset", "rule": "r", "app": "a", "ts": 0, "colour": "red"}, "colour: unknown field"),
        ({"command": "drop_table", "rule": "r", "app": "a", "ts": 0}, "command: must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_command(doc)


def test_cli_checks_the_rule_and_fields_before_sending(capsys):
    from drift.cli import main

    assert main(["baseline", "reset", "--rule", "nope", "--app", "bot"]) == 2
    assert "--rule: 'nope' is not a detector rule" in capsys.readouterr().err
    assert main(["baseline", "reset", "--rule", "query_novelty_rise", "--app", "bot", "--intent", "x"]) == 2
    assert "--intent: query_novelty_rise watches series by app" in capsys.readouterr().err
    assert main(["baseline", "reset", "--rule", "retrieval_drop", "--app", "bot", "--dimension", "x"]) == 2
    assert "--dimension: retrieval_drop watches series by app/intent" in capsys.readouterr().err
    # nothing listening: exit 1 with one line, no traceback
    assert main(["baseline", "reset", "--rule", "quality_drop", "--app", "bot", "--bootstrap-servers",
                 "127.0.0.1:1", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("drift baseline reset: could not deliver the command for quality_drop to drift.control")
    assert "Traceback" not in err
    # several rules: every one is checked before anything is sent
    assert main(["baseline", "reset", "--rule", "quality_drop", "--rule", "nope", "--app", "bot",
                 "--bootstrap-servers", "127.0.0.1:1", "--timeout", "2"]) == 2
    assert "--rule: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_cli_rejects_a_timeout_that_is_not_positive(capsys, timeout):
    from drift.cli import main

    assert main(["baseline", "reset", "--rule", "quality_drop", "--app", "bot", "--bootstrap-servers",
                 "127.0.0.1:1", "--timeout", timeout]) == 2
    err = capsys.readouterr().err
    assert err == f"drift baseline reset: --timeout must be a positive number of seconds, got {float(timeout):g}\n"


def test_reset_command_keys_like_the_series():
    from drift.runtime.control import reset_command

    s = load_settings()
    cmd, topic, key = reset_command(s, "quality_drop", "bot", "a", "format", by="alice", now=T0)
    assert (topic, key) == ("llm.scores", b"bot/a")
    assert {k: cmd[k] for k in ("command", "rule", "app", "intent", "dimension", "by", "ts")} == {
        "command": "baseline_reset", "rule": "quality_drop", "app": "bot", "intent": "a", "dimension": "format",
        "by": "alice", "ts": "2026-01-01T00:00:00.000Z"}
    assert parse_command(cmd)["ts"] == T0  # what the CLI writes, the service reads
    assert reset_command(s, "quality_drop", "bot")[1:] == ("llm.scores", None)  # every partition
    assert reset_command(s, "query_novelty_rise", "bot")[1:] == ("llm.queries", b"bot")
    assert reset_command(s, "judge_agreement_drop", "bot", "a")[1:] == ("llm.labels", b"bot/a")
