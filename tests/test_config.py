"""Configuration: precedence, defaults implementing the SPEC, errors naming the field, redaction."""

import pytest

from drift.core.config import ConfigError, load_settings, parse_duration


def write(tmp_path, text):
    p = tmp_path / "drift.toml"
    p.write_text(text)
    return str(p)


def test_defaults_implement_the_spec_rules():
    s = load_settings()
    assert s.bootstrap_servers == "localhost:9092" and s.group_id == "drift" and s.http_port == 9308
    assert s.topics["alerts"] == "llm.alerts" and s.topics["state"] == "drift.state" and s.golden is None
    r = s.rules
    assert r["quality_drop"].kind == "cusum_mean" and r["quality_drop"].params["threshold"] == 0.05
    assert r["retrieval_drop"].params["threshold"] == 0.10 and r["retrieval_drop"].params["window"] == 3 * 86400
    assert r["retrieval_drop"].params["stat"] == "median"
    assert r["flag_rate_spike"].params["ratio"] == 2.0 and r["flag_rate_spike"].severity == "critical"
    assert r["format_failure_spike"].kind == "cusum_rate" and r["format_failure_spike"].params["ratio"] == 2.0
    # every rule with a test states its false-alarm budget in time: one per 10,000 series-years
    assert {name: spec.params["false_alarm_rate"] for name, spec in r.items() if "false_alarm_rate" in spec.params} == {
        name: 1e-4 for name in ("quality_drop", "quality_shift", "retrieval_drop", "flag_rate_spike",
                                "format_failure_spike", "query_novelty_rise", "judge_agreement_drop",
                                "negative_feedback_spike", "judge_user_disagreement", "cost_per_quality_rise")}
    assert r["cost_per_quality_rise"].params["threshold"] == 0.30 and r["cost_per_quality_rise"].kind == "cost_ratio"
    assert r["judge_agreement_drop"].severity == "critical" and r["judge_agreement_drop"].params["bar"] == 0.6
    assert r["negative_feedback_spike"].params["ratio"] == 2.0
    assert s.topics["labels"] == "llm.labels" and s.topics["feedback"] == "llm.feedback"
    assert r["quality_shift"].params["alpha"] is None and r["retrieval_drop"].params["alpha"] is None
    assert r["prompt_change"].severity == "info"
    assert s.dimension("refusal").kind == "flag" and s.dimension("format_valid").kind == "check"
    assert s.dimension("whatever").kind == "quality"


def test_precedence_defaults_toml_env_flags(tmp_path):
    path = write(tmp_path, '[kafka]\nbootstrap_servers = "toml:9092"\ngroup_id = "g-toml"\n[http]\nport = 1111\n')
    s = load_settings(path)
    assert (s.bootstrap_servers, s.group_id, s.http_port) == ("toml:9092", "g-toml", 1111)
    env = {"DRIFT_KAFKA_BOOTSTRAP_SERVERS": "env:9092", "DRIFT_HTTP_PORT": "2222", "DRIFT_TOPICS_SCORES": "x.scores"}
    s = load_settings(path, env)
    assert (s.bootstrap_servers, s.group_id, s.http_port, s.topics["scores"]) == ("env:9092", "g-toml", 2222, "x.scores")
    s = load_settings(path, env, {"kafka": {"bootstrap_servers": "flag:9092", "group_id": None}})
    assert (s.bootstrap_servers, s.group_id) == ("flag:9092", "g-toml")
    assert s.source.endswith("environment < flags")


def test_rule_overrides_and_durations(tmp_path):
    path = write(tmp_path, '[rules.quality_drop]\nthreshold = 0.08\nguard = "3d"\nfalse_alarm_rate = 1e-3\n'
                           '[rules.quality_shift]\nenabled = false\n[dimensions.helpfulness]\nscale = [1, 10]\n')
    s = load_settings(path)
    assert s.rules["quality_drop"].params["threshold"] == 0.08
    assert s.rules["quality_drop"].params["guard"] == 3 * 86400
    assert s.rules["quality_drop"].params["false_alarm_rate"] == 1e-3
    assert not s.rules["quality_shift"].enabled
    assert (s.dimension("helpfulness").lo, s.dimension("helpfulness").hi) == (1.0, 10.0)
    s = load_settings(write(tmp_path, '[rules.retrieval_drop]\nshort_windows = ["12h", "1d"]\n'))
    assert s.rules["retrieval_drop"].params["short_windows"] == (43200.0, 86400.0)
    assert parse_duration("90m", "x") == 5400 and parse_duration(30, "x") == 30


@pytest.mark.parametrize("text,field", [
    ("[rules.quality_drop]\nthreshold = -1\n", "rules.quality_drop.threshold"),
    ("[rules.quality_drop]\nguard = \"soon\"\n", "rules.quality_drop.guard"),
    ("[rules.quality_drop]\nbaseline = \"90m\"\n", "rules.quality_drop.baseline"),
    ("[rules.quality_drop]\nthresold = 0.1\n", "rules.quality_drop.thresold"),
    ("[rules.quality_drop]\nfalse_alarm_rate = 0\n", "rules.quality_drop.false_alarm_rate"),
    ("[rules.quality_drop]\nshort_windows = [\"6h\"]\n", "rules.quality_drop.short_windows"),
    ("[rules.retrieval_drop]\nshort_windows = \"6h\"\n", "rules.retrieval_drop.short_windows"),
    ("[rules.retrieval_drop]\nshort_windows = [\"1d\", \"soon\"]\n", "rules.retrieval_drop.short_windows[1]"),
    ("[rules.retrieval_drop]\nshort_windows = [\"90m\"]\n", "rules.retrieval_drop.short_windows[0]"),
    ("[rules.retrieval_drop]\nshort_windows = [\"3d\"]\n", "rules.retrieval_drop.short_windows[0]"),
    ("[rules.no_such_rule]\n", "rules.no_such_rule"),
    ("[rules.quality_shift]\nalpha = 2\n", "rules.quality_shift.alpha"),
    ("[rules.flag_rate_spike]\nseverity = \"page\"\n", "rules.flag_rate_spike.severity"),
    ("[http]\nport = 99999\n", "http.port"),
    ("[http]\nport = \"eighty\"\n", "http.port"),
    ("[topics]\nalerts = \"bad topic!\"\n", "topics.alerts"),
    ("[topics]\nlogs = \"x\"\n", "topics.logs"),
    ("[dimensions.refusal]\nkind = \"flaggy\"\n", "dimensions.refusal.kind"),
    ("[dimensions.helpfulness]\nscale = [10, 1]\n", "dimensions.helpfulness.scale"),
    ("[engine]\nallowed_lateness = \"-5m\"\n", "engine.allowed_lateness"),
    ("[nonsense]\n", "config.nonsense"),
    ("[metrics]\nseries = \"maybe\"\n", "metrics.series"),
    ("[metrics]\nseries_limit = 0\n", "metrics.series_limit"),
    ("[metrics]\nseries_limit = \"lots\"\n", "metrics.series_limit"),
    ("[metrics]\nseries_cap = 5\n", "metrics.series_cap"),
])
def test_bad_config_fails_naming_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert str(err.value).startswith(field)


def test_missing_and_invalid_files():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/drift.toml")


def test_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[kafka\n"))


def test_kafka_client_settings_pass_through_and_secrets_are_redacted(tmp_path):
    path = write(tmp_path, '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
                           'sasl_plain_username = "svc"\nsasl_plain_password = "hunter2"\n')
    s = load_settings(path, {"DRIFT_KAFKA_SSL_PASSWORD": "s3cret"})
    cfg = s.kafka_config()
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_plain_password"] == "hunter2"
    shown = repr(s.describe())
    assert "hunter2" not in shown and "s3cret" not in shown and "svc" in shown


def test_fingerprint_tracks_rule_config(tmp_path):
    a = load_settings()
    b = load_settings(write(tmp_path, "[rules.quality_drop]\nthreshold = 0.1\n"))
    assert a.fingerprint() == load_settings().fingerprint() != b.fingerprint()


def test_metrics_section_defaults_toml_env_and_the_serve_flag(tmp_path, monkeypatch):
    import drift.cli
    import drift.runtime.service

    assert dict(load_settings().metrics) == {"series": False, "series_limit": 10000}
    path = write(tmp_path, "[metrics]\nseries = true\nseries_limit = 50\n")
    assert dict(load_settings(path).metrics) == {"series": True, "series_limit": 50}
    env = {"DRIFT_METRICS_SERIES": "false", "DRIFT_METRICS_SERIES_LIMIT": "7"}
    assert dict(load_settings(path, env).metrics) == {"series": False, "series_limit": 7}
    # not a rule setting: checkpoints stay valid when it changes
    assert load_settings(path).fingerprint() == load_settings().fingerprint()
    # drift serve --series-metrics turns the gauges on over the file and environment; without it
    # they stay as configured
    seen = []

    class FakeService:
        def __init__(self, settings, **kw):
            seen.append(dict(settings.metrics))

        def run(self):
            return 0

    monkeypatch.setattr(drift.runtime.service, "Service", FakeService)
    monkeypatch.setattr(drift.runtime.service, "setup_logging", lambda level: None)
    monkeypatch.setattr(drift.cli, "_golden", lambda settings: ({}, None))
    monkeypatch.setenv("DRIFT_METRICS_SERIES", "false")
    assert drift.cli.main(["serve", "--series-metrics"]) == 0
    assert drift.cli.main(["serve"]) == 0
    monkeypatch.delenv("DRIFT_METRICS_SERIES")
    assert drift.cli.main(["serve", "--config", path]) == 0
    assert seen == [{"series": True, "series_limit": 10000}, {"series": False, "series_limit": 10000},
                    {"series": True, "series_limit": 50}]
