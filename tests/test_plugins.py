"""The engine is open: a new rule kind, a TOML-declared rule, an input stream and a sink, each
added from here without touching the engine, the config loader or the alerts module."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import pytest

import drift
from detectors.base import Detector, Finding, Side
from drift import Engine, MemorySink, Rule, RuleKind, load_settings, register, register_stream
from drift.core import rules as rules_mod
from drift.core import streams as streams_mod
from drift.core.params import param
from drift.core.streams import ScalarStream

T0 = 1767225600.0  # 2026-01-01T00:00:00Z


# ------------------------------------------------------------------ a new detector + one declaration
class BucketMax(Detector):
    """Toy detector: fires once per series when a closed bucket's largest value exceeds ``limit``."""

    _params = ("limit", "bucket", "lateness")
    _state = ("bucket_of", "peak", "fired")

    def __init__(self, limit=0.5, bucket=3600.0, lateness=0.0):
        self.limit, self.bucket, self.lateness = limit, bucket, lateness
        self.bucket_of = np.zeros(0, np.int64)
        self.peak = np.zeros(0)
        self.fired = np.zeros(0, bool)

    def update_many(self, series, t, x):
        out = []
        n = int(series.max()) + 1 if series.size else 0
        if n > self.peak.size:
            grow = n - self.peak.size
            self.bucket_of = np.r_[self.bucket_of, np.full(grow, -1, np.int64)]
            self.peak = np.r_[self.peak, np.full(grow, -np.inf)]
            self.fired = np.r_[self.fired, np.zeros(grow, bool)]
        for s, tt, v in zip(series.tolist(), t.tolist(), np.asarray(x, float).tolist()):
            b = int(tt // self.bucket)
            if b != self.bucket_of[s]:
                if self.bucket_of[s] >= 0 and self.peak[s] > self.limit and not self.fired[s]:
                    end = (self.bucket_of[s] + 1) * self.bucket
                    self.fired[s] = True
                    out.append(Finding(series=s, status="firing", at=end, episode_start=end,
                                       statistic="bucket_max", value=float(self.peak[s]), threshold=self.limit,
                                       window=Side(end - self.bucket, end, 1, float(self.peak[s]))))
                self.bucket_of[s], self.peak[s] = b, -np.inf
            self.peak[s] = max(self.peak[s], v)
        return out


@dataclasses.dataclass(frozen=True)
class BucketMaxParams:
    limit: float = param(0.5, "number", "largest acceptable value in a bucket")
    bucket: float = param(3600.0, "duration", "bucket width")


@pytest.fixture
def toy_rule():
    decl = register(Rule("toy_max", RuleKind("bucket_max", BucketMax, BucketMaxParams, streams=("scores",),
                                             first_action="Look at the worst response"),
                         "scores", ("quality",), "critical", {"limit": 0.95}))
    try:
        yield decl
    finally:
        rules_mod.RULES.pop("toy_max", None)
        rules_mod.RULE_KINDS.pop("bucket_max", None)


def scores(n, dimension="format", app="bot", value=0.9, start=T0, step=60.0, **extra):
    return [{"ts": start + step * i, "app": app, "intent": "billing", "dimension": dimension, "score": value,
             "trace_id": f"{app}-{dimension}-{i}", **extra} for i in range(n)]


def test_a_rule_kind_declared_here_runs_as_a_built_in_rule(toy_rule):
    settings = load_settings()
    assert settings.rules["toy_max"].params == {"limit": 0.95, "bucket": 3600.0}
    engine = Engine(settings)
    events = scores(90) + scores(1, value=0.99, start=T0 + 90 * 60) + scores(90, start=T0 + 91 * 60)
    alerts = [a for a in engine.feed(events) if a.rule == "toy_max"]
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.status, a.severity, a.detector, a.first_action) == ("firing", "critical", "bucket_max",
                                                                   "Look at the worst response")
    assert a.labels == {"stream": "scores", "app": "bot", "intent": "billing", "dimension": "format"}
    assert a.starts_at == "2026-01-01T02:00:00.000Z" and a.statistic.value == 0.99
    assert "toy_max/bot/billing/format: bucket_max=0.99" in a.summary
    # and it is tunable from TOML like every built-in, with errors naming the field
    engine2 = Engine(load_settings(overrides={"rules": {"toy_max": {"limit": 0.999}}}))
    assert not [a for a in engine2.feed(events) if a.rule == "toy_max"]
    with pytest.raises(drift.ConfigError, match=r"^rules\.toy_max\.limit: expected a number"):
        load_settings(overrides={"rules": {"toy_max": {"limit": "high"}}})


def test_state_of_a_plug_in_rule_round_trips(toy_rule):
    events = scores(90) + scores(1, value=0.99, start=T0 + 90 * 60) + scores(90, start=T0 + 91 * 60)
    whole = Engine()
    expected = [a.alert_id for a in whole.feed(events)]
    first = Engine()
    got = [a.alert_id for a in first.feed(events[:91])]
    second = Engine()
    second.load_state(first.state_dict())
    got += [a.alert_id for a in second.feed(events[91:])]
    assert got == expected and any(whole.feed([]) == [] for _ in [0])


# ------------------------------------------------------------------ rules declared in TOML
def write(tmp_path, text):
    p = tmp_path / "drift.toml"
    p.write_text(text)
    return str(p)


def test_a_toml_declared_floor_rule_fires_on_its_dimension_only(tmp_path):
    settings = load_settings(write(tmp_path, """
[rules.faithfulness_floor]
kind = "floor"
dimension = "faithfulness"
floor = 0.8
bucket = "5m"
window = "5m"
min_n = 20
severity = "critical"
first_action = "Check the retriever for the last hour"
"""))
    spec = settings.rules["faithfulness_floor"]
    assert (spec.kind, spec.stream, spec.match) == ("floor", "scores", {"dimension": ("faithfulness",)})
    engine = Engine(settings)
    rng = np.random.default_rng(1)
    events = []
    for i in range(2400):  # ten events a minute for 4 hours; faithfulness falls to ~0.7 after 2 hours
        t = T0 + 6 * i
        bad = i >= 1200
        events.append({"ts": t, "app": "rag", "intent": "faq", "dimension": "faithfulness",
                       "score": float(np.clip(rng.normal(0.7 if bad else 0.9, 0.05), 0, 1)), "trace_id": f"f{i}"})
        events.append({"ts": t, "app": "rag", "intent": "faq", "dimension": "relevance",
                       "score": float(np.clip(rng.normal(0.7, 0.05), 0, 1)), "trace_id": f"r{i}"})
    alerts = [a for a in engine.feed(events) if a.rule == "faithfulness_floor"]
    assert [a.status for a in alerts] == ["firing"]
    a = alerts[0]
    assert a.labels["dimension"] == "faithfulness" and a.severity == "critical"
    assert a.first_action == "Check the retriever for the last hour"
    assert a.starts_at == "2026-01-01T02:05:00.000Z"  # the first 5-minute window wholly after the fall
    assert a.summary.startswith("faithfulness mean for rag/faq is 0.69") and "below its floor 0.8 over 5 minutes" in a.summary
    assert a.example_trace_ids and all(x.startswith("f") for x in a.example_trace_ids)
    assert 0 < len(a.example_trace_ids) <= 5


@pytest.mark.parametrize("text,field", [
    ('[rules.mine]\nfloor = 0.8\n', "rules.mine"),                         # no kind
    ('[rules.mine]\nkind = "nope"\n', "rules.mine.kind"),
    ('[rules.mine]\nkind = "floor"\nfloor = "low"\n', "rules.mine.floor"),
    ('[rules.mine]\nkind = "floor"\nwindow = "7m"\nbucket = "5m"\n', "rules.mine.window"),
    ('[rules.mine]\nkind = "ks"\nstream = "queries"\n', "rules.mine.stream"),
    ('[rules.mine]\nkind = "floor"\ndimension = 3\n', "rules.mine.dimension"),
    ('[rules.quality_drop]\nkind = "floor"\n', "rules.quality_drop.kind"),
    ('[[rules.quality_drop.override]]\nthreshold = 0.1\n', "rules.quality_drop.override[0]"),
    ('[[rules.quality_drop.override]]\napp = "a"\nthreshold = -1\n', "rules.quality_drop.override[0].threshold"),
    ('[[rules.flag_rate_spike.override]]\napp = "a"\nratio = 0.5\n', "rules.flag_rate_spike.override[0]"),
])
def test_declared_rules_fail_naming_the_field(tmp_path, text, field):
    with pytest.raises(drift.ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert str(err.value).startswith(field), str(err.value)


def test_an_override_changes_a_rule_for_one_app_only(tmp_path):
    # quality falls 2.5%: half quality_drop's 5% everywhere, but one app asks for 2%
    settings = load_settings(write(tmp_path, """
[[rules.quality_drop.override]]
app = "strict-bot"
threshold = 0.02
"""))
    assert settings.rules["quality_drop"].overrides[0].params["threshold"] == 0.02
    rng = np.random.default_rng(5)
    events = []
    for app in ("strict-bot", "relaxed-bot"):
        t = T0 + np.arange(30 * 24 * 20) * 180.0  # 20 an hour for 30 days; -2.5 % from day 16
        x = np.clip(rng.normal(np.where(t < T0 + 16 * 86400, 0.85, 0.85 * 0.975), 0.05), 0, 1)
        events += [{"ts": float(a), "app": app, "intent": "all", "dimension": "relevance", "score": float(b)}
                   for a, b in zip(t, x)]
    events.sort(key=lambda e: e["ts"])
    fired = {a.labels["app"] for a in Engine(settings).feed(events) if a.rule == "quality_drop" and a.status == "firing"}
    assert fired == {"strict-bot"}


# ------------------------------------------------------------------ a new input stream
class LatencyEvent(msgspec.Struct):
    ts: float
    latency_ms: float
    app: str = "default"
    intent: str | None = None
    stream: str | None = None
    route: str = "main"
    trace_id: str | None = None


class LatencyStream(ScalarStream):
    name = "latency"
    series_fields = ("app", "intent", "route")
    kinds = ("latency",)
    event_type = LatencyEvent
    value_field = "latency_ms"
    label_fields = ("route",)


@pytest.fixture
def latency_stream():
    register_stream(LatencyStream())
    try:
        yield
    finally:
        streams_mod.STREAMS.pop("latency", None)


def latency_events(n, slow_from):
    return [{"ts": T0 + 30.0 * i, "app": "bot", "intent": "chat", "route": "gpu-a",
             "latency_ms": 2500.0 if i >= slow_from else 800.0, "trace_id": f"l{i}"} for i in range(n)]


def test_a_toy_input_stream_with_its_own_events_topic_and_rule(latency_stream, tmp_path):
    settings = load_settings(write(tmp_path, """
[rules.slow_responses]
kind = "floor"
stream = "latency"
below = false
floor = 2000
bucket = "10m"
window = "10m"
min_n = 10
"""))
    assert settings.topics["latency"] == "llm.latency"  # its topic entry, with the stream's default
    assert settings.rules["slow_responses"].kinds == ("latency",)
    events = latency_events(240, slow_from=120)
    # in memory (the stream forced), from Kafka-style bytes (the topic forces it) and from files
    # (the `stream` field says it): the same alerts
    a1 = Engine(settings).feed(events, stream="latency")
    eng = Engine(settings)
    d = eng.decoder().decode([msgspec.json.encode(e) for e in events], kind="latency")
    assert d.rejected == [] and len(d.latency) == 240
    a2 = eng.run(d)[0]
    eng3 = Engine(settings)
    d3 = eng3.decoder().decode([msgspec.json.encode({**e, "stream": "latency"}) for e in events])
    a3 = eng3.run(d3)[0]
    assert [a.alert_id for a in a1] == [a.alert_id for a in a2] == [a.alert_id for a in a3]
    assert [(a.rule, a.status) for a in a1] == [("slow_responses", "firing")]
    a = a1[0]
    assert a.labels == {"stream": "latency", "app": "bot", "intent": "chat", "route": "gpu-a"}
    assert "above its ceiling 2e+03" in a.summary or "above its ceiling 2000" in a.summary
    # bad input on the new stream is rejected with a reason, like any other
    bad = eng.decoder().decode([b'{"ts": 1767225600, "app": "bot"}', b'{"ts": "soon", "latency_ms": 1}'], kind="latency")
    assert [r.error_class for r in bad.rejected] == ["SchemaError", "BadTimestamp"]
    with pytest.raises(ValueError, match="latency_ms"):
        Engine(settings).feed([{"ts": T0, "app": "bot"}], stream="latency")


# ------------------------------------------------------------------ a sink (replay side; the
# service side, with the commit order on a real broker, is in test_service.py)
def test_memory_sink_and_typed_alerts_round_trip_through_the_cloudevents_codec():
    sink = MemorySink()
    engine = Engine()
    rng = np.random.default_rng(2)
    t = T0 + np.arange(40 * 24 * 30) * 120.0
    x = np.clip(rng.normal(np.where(t < T0 + 25 * 86400, 0.9, 0.8), 0.05), 0, 1)
    alerts = engine.feed({"ts": t.tolist(), "app": ["bot"] * t.size, "intent": ["billing"] * t.size,
                          "dimension": ["format"] * t.size, "score": x.tolist()})
    sink.emit(alerts)
    sink.confirm()
    assert sink.confirmed == len(alerts) > 0
    for a in alerts:
        ev = drift.to_cloudevent(a)
        assert ev["specversion"] == "1.0" and ev["id"] == f"{a.alert_id}/{a.status}"
        assert drift.from_cloudevent(ev).alert_id == a.alert_id
        assert msgspec.json.decode(msgspec.json.encode(ev))["data"]["summary"] == a.summary


# ------------------------------------------------------------------ a rule's kinds mean something
def test_a_notice_rule_s_kinds_choose_the_attributes_it_announces(tmp_path):
    events = (scores(5, prompt_hash="h1", model="m1") + scores(5, start=T0 + 300 * 60, prompt_hash="h2", model="m1")
              + scores(5, start=T0 + 600 * 60, prompt_hash="h2", model="m2"))
    both = [a.labels["attribute"] for a in Engine().feed(events) if a.rule == "prompt_change"]
    assert both == ["prompt_hash", "model"]
    only_model = load_settings(write(tmp_path, '[rules.prompt_change]\nkinds = ["model"]\n'))
    assert [a.labels["attribute"] for a in Engine(only_model).feed(events) if a.rule == "prompt_change"] == ["model"]


def test_data_ships_with_the_repository_and_the_environment_overrides_it(tmp_path, monkeypatch):
    from drift.embeddings import golden

    d = golden.data_dir()
    assert (d / "clinc150" / "data_full.json").is_file() and (d / "clinc150" / "LICENSE").is_file()
    assert (d / "covidqa" / "faq_covidbert.csv").is_file() and (d / "covidqa" / "LICENSE").is_file()
    assert d.parent == golden._REPO
    monkeypatch.setenv(golden.DATA_ENV, str(tmp_path))
    assert golden.data_dir() == tmp_path
    monkeypatch.setenv(golden.DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="DRIFT_DATA_DIR"):
        golden.data_dir()
