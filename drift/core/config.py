"""Frozen settings: defaults < TOML file < environment (``DRIFT_…``) < command-line flags.

Built once at the edge (the CLI) and passed in; nothing else reads ``os.environ``. Every
mistake fails at start-up with a :class:`ConfigError` that names the field, e.g.
``rules.quality_drop.threshold: must be a positive number, got -1``.

Sections
--------
``[kafka]``        ``bootstrap_servers``, ``group_id``; every other key passes through to the
                   kafka-python clients (``security_protocol``, ``sasl_mechanism``,
                   ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``, …).
``[topics]``       ``scores``, ``retrieval``, ``queries``, ``alerts``, ``dlq``, ``state``, ``escalations``,
                   ``control`` (operator commands such as a baseline reset; ``drift.control``).
``[http]``         ``port``.
``[queries]``      ``golden`` (a golden-set directory, one set or one per app in ``DIR/<app>/``;
                   query rules are off without one), ``max_texts_per_batch`` (texts embedded per
                   batch; beyond it a deterministic sample is embedded and the rest counted).
``[engine]``       ``allowed_lateness``, ``max_future``, ``max_message_bytes``, ``service_name``,
                   ``retrieval_scale``, ``join_max_age`` (how far apart in event time a label or
                   feedback event and the score of its trace may be; 7 days) and
                   ``join_max_entries`` (the judge join's bound per partition; 200,000).
``[service]``      ``drift serve`` loop: ``checkpoint_interval``, ``max_poll_records``,
                   ``session_timeout_ms``, ``dlq_max_fraction``, ``dlq_min_messages``, ``dlq_window``,
                   ``livez_timeout``, ``restore_timeout``, ``delivery_timeout``, ``connect_timeout``,
                   ``startup_timeout``.
``[otlp]``         ``drift ingest otlp``: ``spans_topic``, ``logs_topic``, ``encoding`` (``otlp_proto`` |
                   ``otlp_json``), ``app_attribute``, ``intent_attribute``, ``score_prefix``,
                   ``prompt_hash_attributes``, ``prompt_version_attributes``, ``model_attributes``,
                   ``truncation_reasons``, ``label_values`` and ``prices`` (tables), ``join_max_age``,
                   ``join_max_entries`` (the mapping: :class:`drift.ingest.otlp.OtlpMapping`),
                   ``repartition_topic``, ``repartition_partitions`` (0: as many as ``topics.scores``),
                   ``max_ahead_s`` and ``group_id`` (default ``<kafka.group_id>-ingest``).
``[alertmanager]`` the Alertmanager sink (:mod:`drift.runtime.alertmanager`): ``urls`` (a list or a
                   comma-separated string; none: no sink), ``resend_interval`` (30 s–3 min, 60 s),
                   ``runbook_url`` and ``generator_url`` (templates with ``{rule}``, ``{app}``, …),
                   ``timeout``, ``confirm_timeout``, ``grace_period``, ``username``/``password``,
                   ``bearer_token``, ``ca_file``, ``cert_file``, ``key_file``, ``insecure_skip_verify``.
``[metrics]``      ``drift serve``'s ``/metrics`` (:mod:`drift.runtime.series_metrics`): ``series``
                   (``drift_series_value`` gauges per watched series; off by default) and
                   ``series_limit`` (the most series those gauges hold; 10,000).
``[dimensions.NAME]`` ``kind`` (``quality``, ``flag``, ``check``), ``scale = [lo, hi]``,
                   ``higher_is_better``.
``[rules.NAME]``   ``enabled``, ``severity`` and the rule's detector parameters (durations as
                   ``"7d"``, ``"1h"``, ``"10m"``, ``"30s"`` or seconds; ``short_windows`` as a
                   list of them).

Environment variables map ``DRIFT_<SECTION>_<KEY>`` onto the scalar keys of ``kafka``,
``topics``, ``http``, ``queries``, ``engine``, ``service``, ``otlp``, ``alertmanager`` and ``metrics``
(``DRIFT_KAFKA_BOOTSTRAP_SERVERS``, ``DRIFT_TOPICS_SCORES``, ``DRIFT_HTTP_PORT``, ``DRIFT_QUERIES_GOLDEN``,
``DRIFT_METRICS_SERIES=true``,
``DRIFT_SERVICE_CHECKPOINT_INTERVAL``, ``DRIFT_OTLP_ENCODING``, …); the ``[otlp]`` lists take a
comma-separated value and its tables a JSON object (``DRIFT_OTLP_LABEL_VALUES='{"pass": 1}'``);
``DRIFT_ALERTMANAGER_URLS`` takes a comma-separated list.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from typing import Any

from drift.core import rules as _rules
from drift.core.params import (
    ConfigError,
    check_bucket_multiples,
    param_defaults,
    parse_duration,
    parse_params,
)
from drift.core.params import as_bool as _as_bool
from drift.core.params import as_float as _as_float
from drift.core.params import as_int as _as_int
from drift.core.streams import STREAMS

__all__ = ["ConfigError", "Settings", "RuleSpec", "DimensionSpec", "load_settings",
           "parse_duration", "DEFAULT_RULES", "SECRET_KEYS", "redact"]


# Kafka client settings whose values never appear in logs or config dumps.
SECRET_KEYS = ("password", "secret", "token", "sasl_plain_password", "ssl_password",
               "sasl_oauth_token_provider", "ssl_keyfile")


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``mapping`` with secret values replaced by ``'***'``."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif any(s in k.lower() for s in SECRET_KEYS) and v is not None:
            out[k] = "***"
        else:
            out[k] = v
    return out


@dataclasses.dataclass(frozen=True)
class DimensionSpec:
    """How a score dimension is read: its kind and declared scale."""

    name: str
    kind: str = "quality"  # quality | flag | check
    lo: float = 0.0
    hi: float = 1.0
    higher_is_better: bool = True

    @property
    def binary(self) -> bool:
        return self.kind in ("flag", "check")


DEFAULT_DIMENSIONS = {
    "refusal": DimensionSpec("refusal", "flag"),
    "hallucination": DimensionSpec("hallucination", "flag"),
    "safety": DimensionSpec("safety", "flag"),
    "format_valid": DimensionSpec("format_valid", "check"),
}



def default_rules() -> dict[str, dict[str, Any]]:
    """The registered rules (built-ins and plug-ins) as plain tables: kind, stream, series
    kinds, severity and the full default parameters."""
    out = {}
    for name, rule in _rules.RULES.items():
        kind = _rules.RULE_KINDS[rule.kind_name]
        out[name] = {"detector": kind.name, "stream": rule.stream, "kinds": list(rule.kinds),
                     "severity": rule.severity, "params": {**param_defaults(kind.params), **rule.params}}
    return out


# The built-in rules (drift.core.rules): these defaults implement SPEC's rule table.
DEFAULT_RULES: dict[str, dict[str, Any]] = default_rules()
_SEVERITIES = _rules.SEVERITIES
_MATCH_KEYS = ("app", "intent", "dimension")


@dataclasses.dataclass(frozen=True)
class Override:
    """Parameters of a rule for the series that ``match`` selects (``{"app": ("a",), ...}``)."""

    match: Mapping[str, tuple[str, ...]]
    params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """A configured rule: its kind (``detector``), stream, series selection and parameters.

    ``match`` restricts the rule to some series (``app``, ``intent``, ``dimension``: tuples of
    accepted values); ``overrides`` give other parameters to some of them (first match wins).
    """

    name: str
    detector: str  # the rule kind (drift.core.rules.RULE_KINDS)
    stream: str
    kinds: tuple[str, ...]
    severity: str
    enabled: bool
    params: Mapping[str, Any]
    match: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    first_action: str | None = None

    @property
    def kind(self) -> str:
        return self.detector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) in v for k, v in self.match.items())

    def params_for(self, labels: Mapping[str, str]) -> tuple[int, Mapping[str, Any]]:
        """(variant, parameters) for a series: 0 and the rule's own, or 1 + the override's index."""
        for i, o in enumerate(self.overrides):
            if all(labels.get(k) in v for k, v in o.match.items()):
                return i + 1, o.params
        return 0, self.params


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the engine and the service are configured with (immutable)."""

    bootstrap_servers: str = "localhost:9092"
    group_id: str = "drift"
    kafka_client: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    topics: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOPICS))
    http_port: int = 9308
    golden: str | None = None
    max_texts_per_batch: int = 20000
    service_name: str = "drift"
    allowed_lateness: float = 600.0
    max_future: float = 86400.0
    max_message_bytes: int = 1_000_000
    retrieval_scale: tuple[float, float] = (-1.0, 1.0)
    # the judge join (labels and feedback with the scores of the same trace): how far apart in
    # event time a label (or feedback) and its score may be, and the most entries per partition
    join_max_age: float = 7 * 86400.0
    join_max_entries: int = 200_000
    service: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SERVICE))
    dimensions: Mapping[str, DimensionSpec] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DIMENSIONS))
    rules: Mapping[str, RuleSpec] = dataclasses.field(default_factory=dict)
    otlp: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_OTLP))
    source: str = "defaults"
    # the Alertmanager sink ([alertmanager]); no urls: no sink. Not in repr (it holds secrets)
    alertmanager: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_ALERTMANAGER),
                                                        repr=False)
    # drift serve's opt-in metrics ([metrics]): per-series value gauges and their cap
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_METRICS))

    def dimension(self, name: str) -> DimensionSpec:
        """Spec of a dimension (unlisted names are quality dimensions on [0, 1])."""
        return self.dimensions.get(name) or DimensionSpec(name)

    def rule(self, name: str) -> RuleSpec:
        return self.rules[name]

    def fingerprint(self) -> str:
        """Hash of everything that shapes detector state (rules, dimensions, lateness)."""
        doc = {"rules": {k: dataclasses.asdict(v) for k, v in sorted(self.rules.items())},
               "dimensions": {k: dataclasses.asdict(v) for k, v in sorted(self.dimensions.items())},
               "allowed_lateness": self.allowed_lateness, "retrieval_scale": list(self.retrieval_scale),
               "join_max_age": self.join_max_age}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()[:16]

    @property
    def ingest_group_id(self) -> str:
        """Consumer group of ``drift ingest otlp`` (``otlp.group_id``, else ``<group_id>-ingest``)."""
        return self.otlp.get("group_id") or f"{self.group_id}-ingest"

    def otlp_mapping(self) -> dict[str, Any]:
        """The ``[otlp]`` keys that configure the span/log mapping (``OtlpMapping.from_dict``);
        keys left unset are left out, so the mapping's own defaults apply."""
        return {k: v for k, v in self.otlp.items() if k in _OTLP_MAPPING_KEYS and v is not None}

    def kafka_config(self) -> dict[str, Any]:
        """kafka-python client settings (bootstrap servers plus the pass-through keys)."""
        return {"bootstrap_servers": self.bootstrap_servers.split(","), **self.kafka_client}

    def describe(self) -> dict[str, Any]:
        """A loggable view of the settings, secrets redacted."""
        out = {"bootstrap_servers": self.bootstrap_servers, "group_id": self.group_id,
               "kafka": redact(self.kafka_client), "topics": dict(self.topics),
               "http_port": self.http_port, "golden": self.golden, "source": self.source,
               "rules": {k: {"enabled": v.enabled, **v.params} for k, v in self.rules.items()}}
        if self.alertmanager.get("urls"):  # only when configured: the default view is unchanged
            am = redact(self.alertmanager)
            am["urls"] = [redact_url(u) for u in self.alertmanager["urls"]]
            out["alertmanager"] = am
        return out


DEFAULT_TOPICS: dict[str, str] = {"scores": "llm.scores", "retrieval": "llm.retrieval", "queries": "llm.queries",
                                  "alerts": "llm.alerts", "dlq": "llm.dlq", "state": "drift.state",
                                  "escalations": "drift.escalations", "control": "drift.control"}

_ENV_SECTIONS = ("kafka", "topics", "http", "queries", "engine", "service", "otlp", "alertmanager", "metrics")

# drift serve's opt-in metrics ([metrics]; drift.runtime.series_metrics)
DEFAULT_METRICS: dict[str, Any] = {
    "series": False,        # drift_series_value{rule,app,intent,dimension,stat} per watched series
    "series_limit": 10000,  # the most series those gauges hold; the rest counted in drift_series_dropped_total
}

# The Alertmanager sink ([alertmanager]; drift.runtime.alertmanager). Durations in seconds.
DEFAULT_ALERTMANAGER: dict[str, Any] = {
    "urls": [],                     # Alertmanager base URLs (an HA set: every one is sent to); none: no sink
    "resend_interval": 60.0,        # firing alerts are re-sent this often (30 s - 3 min), endsAt = now + 4x
    "runbook_url": None,            # template of the runbook_url annotation, e.g. https://runbooks.example/{rule}
    "generator_url": None,          # template of generatorURL (none: left out)
    "timeout": 10.0,                # one HTTP request
    "confirm_timeout": 5.0,         # how long confirm() waits for acceptance before the commit order skips a turn
    "grace_period": 60.0,           # undeliverable this long: /readyz reports not ready, with the reason
    "username": None,               # basic auth
    "password": None,
    "bearer_token": None,           # Authorization: Bearer (instead of basic auth)
    "ca_file": None,                # TLS: CA bundle to verify the server with
    "cert_file": None,              # TLS client certificate (with key_file)
    "key_file": None,
    "insecure_skip_verify": False,  # TLS without certificate verification (tests only)
}
# placeholders the runbook_url / generator_url templates may use
AM_TEMPLATE_FIELDS = ("rule", "severity", "app", "intent", "dimension", "stream", "alert_id", "status")


def redact_url(url: str) -> str:
    """``url`` without the password of its userinfo (``http://user:***@host``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

# `drift ingest otlp` ([otlp]); None: the OTLP mapping's own default (drift.ingest.otlp.OtlpMapping)
DEFAULT_OTLP: dict[str, Any] = {
    "spans_topic": "otlp_spans",        # OTLP trace export requests in
    "logs_topic": "otlp_logs",          # OTLP log export requests in (gen_ai.evaluation.result events)
    "encoding": "otlp_proto",           # otlp_proto | otlp_json (the Collector Kafka exporter's encodings)
    "app_attribute": "service.name",    # resource attribute naming the app
    "intent_attribute": "intent",       # span attribute naming the intent
    "score_prefix": "quality.score.",   # span attributes quality.score.<dimension> = score
    "prompt_hash_attributes": None,     # lists of attribute names, first present wins
    "prompt_version_attributes": None,
    "model_attributes": None,
    "label_values": None,               # evaluation label -> score, e.g. {"pass": 1, "fail": 0}
    "prices": None,                     # model -> [input, output] USD per 1M tokens, for cost_usd
    "truncation_reasons": None,         # finish reasons that mean "cut off by the length limit"
    "join_max_age": 3600.0,             # seconds an evaluation waits for its span (event time)
    "join_max_entries": 100000,         # bound of the join buffer per partition
    "repartition_topic": "drift.otlp.by_trace",  # internal topic, keyed by trace id
    "repartition_partitions": 0,        # partitions when it is created; 0: as many as topics.scores
    "max_ahead_s": 300.0,               # release input records at most this far past the slowest partition (event time)
    "group_id": None,                   # consumer group; default <kafka.group_id>-ingest
}
_OTLP_MAPPING_KEYS = ("encoding", "app_attribute", "intent_attribute", "score_prefix", "prompt_hash_attributes",
                      "prompt_version_attributes", "model_attributes", "label_values", "prices", "join_max_age",
                      "join_max_entries", "truncation_reasons")

# `drift serve` loop settings ([service]); durations in seconds.
DEFAULT_SERVICE: dict[str, Any] = {
    "checkpoint_interval": 10.0,   # seconds between checkpoints (alerts flushed, state written, offsets committed)
    "max_poll_records": 5000,      # records per poll
    "session_timeout_ms": 10000,   # consumer-group session timeout
    "dlq_max_fraction": 0.5,       # stop when more than this share of recent messages is rejected…
    "dlq_min_messages": 1000,      # …over at least this many messages (within dlq_window)
    "dlq_window": 60.0,            # seconds of recent traffic the share is computed over
    "livez_timeout": 120.0,        # /livez fails when the loop has not turned for this long
    "restore_timeout": 60.0,       # seconds to read drift.state when partitions are assigned
    "delivery_timeout": 600.0,     # keep retrying unconfirmed records this long (broker outage) before exiting 1
    "connect_timeout": 5.0,        # one attempt to reach the brokers at start-up (and each client's bootstrap)
    "startup_timeout": 300.0,      # keep retrying start-up connections this long before exiting 1
}
_ENGINE_KEYS = {"allowed_lateness", "max_future", "max_message_bytes", "service_name", "retrieval_scale",
                "join_max_age", "join_max_entries"}


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith("DRIFT_"):
            continue
        rest = name[len("DRIFT_"):].lower()
        for section in _ENV_SECTIONS:
            if rest.startswith(section + "_"):
                layer.setdefault(section, {})[rest[len(section) + 1:]] = value
                break
    return layer


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Build :class:`Settings` from defaults < TOML ``path`` < ``env`` < ``overrides`` (flags).

    ``overrides`` uses the TOML layout, e.g. ``{"kafka": {"bootstrap_servers": "h:9092"}}``.
    """
    doc: dict[str, Any] = {}
    sources = ["defaults"]
    if path:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
        sources.append(path)
    if env:
        layer = _env_layer(env)
        if layer:
            doc = _merge(doc, layer)
            sources.append("environment")
    if overrides:
        clean = {s: {k: v for k, v in sec.items() if v is not None} for s, sec in overrides.items()}
        doc = _merge(doc, clean)
        sources.append("flags")
    return _build(doc, " < ".join(sources))


def _section(doc, name) -> dict:
    sec = doc.get(name, {})
    if not isinstance(sec, Mapping):
        raise ConfigError(f"{name}: expected a table, got {sec!r}")
    return dict(sec)


def _unknown(section: str, keys, allowed) -> None:
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{section}.{extra[0]}: unknown key (known: {', '.join(sorted(allowed))})")


def _scale(value, field) -> tuple[float, float]:
    if isinstance(value, str):
        value = [p for p in re.split(r"[,\s\[\]]+", value) if p]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{field}: expected [lo, hi], got {value!r}")
    lo, hi = _as_float(value[0], field), _as_float(value[1], field)
    if not hi > lo:
        raise ConfigError(f"{field}: hi must be greater than lo, got {value!r}")
    return lo, hi


def _build(doc: Mapping[str, Any], source: str) -> Settings:
    _unknown("config", doc.keys(), ("kafka", "topics", "http", "queries", "engine", "service", "otlp", "dimensions",
                                    "rules", "alertmanager", "metrics"))
    kafka = _section(doc, "kafka")
    bootstrap = str(kafka.pop("bootstrap_servers", "localhost:9092"))
    group_id = str(kafka.pop("group_id", "drift"))
    if not bootstrap.strip():
        raise ConfigError("kafka.bootstrap_servers: must not be empty")
    topics_doc = _section(doc, "topics")
    default_topics = {**DEFAULT_TOPICS, **{n: s.topic for n, s in STREAMS.items() if n not in DEFAULT_TOPICS}}
    _unknown("topics", topics_doc, default_topics)
    topics = {**default_topics, **{k: str(v) for k, v in topics_doc.items()}}
    for k, v in topics.items():
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ConfigError(f"topics.{k}: {v!r} is not a valid Kafka topic name")
    http = _section(doc, "http")
    _unknown("http", http, ("port",))
    port = _as_int(http.get("port", 9308), "http.port", 0, 65535)
    queries = _section(doc, "queries")
    _unknown("queries", queries, ("golden", "max_texts_per_batch"))
    max_texts = _as_int(queries.get("max_texts_per_batch", 20000), "queries.max_texts_per_batch", 1)
    engine = _section(doc, "engine")
    _unknown("engine", engine, _ENGINE_KEYS)
    lateness = parse_duration(engine.get("allowed_lateness", 600), "engine.allowed_lateness")
    max_future = parse_duration(engine.get("max_future", 86400), "engine.max_future")
    max_bytes = _as_int(engine.get("max_message_bytes", 1_000_000), "engine.max_message_bytes", 1)
    rscale = _scale(engine.get("retrieval_scale", [-1.0, 1.0]), "engine.retrieval_scale")
    join_age = parse_duration(engine.get("join_max_age", 7 * 86400), "engine.join_max_age")
    join_entries = _as_int(engine.get("join_max_entries", 200_000), "engine.join_max_entries", 1)

    service_doc = _section(doc, "service")
    _unknown("service", service_doc, DEFAULT_SERVICE)
    service = dict(DEFAULT_SERVICE)
    for k, v in service_doc.items():
        f = f"service.{k}"
        if k in ("checkpoint_interval", "dlq_window", "livez_timeout", "restore_timeout", "delivery_timeout",
                 "connect_timeout", "startup_timeout"):
            service[k] = parse_duration(v, f)
            if service[k] <= 0:
                raise ConfigError(f"{f}: must be a positive duration, got {v!r}")
        elif k == "dlq_max_fraction":
            service[k] = _as_float(v, f, unit=True)
        else:
            service[k] = _as_int(v, f, 1)

    dims = dict(DEFAULT_DIMENSIONS)
    for name, spec in _section(doc, "dimensions").items():
        field = f"dimensions.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{field}: expected a table, got {spec!r}")
        _unknown(field, spec, ("kind", "scale", "higher_is_better"))
        kind = spec.get("kind", dims.get(name, DimensionSpec(name)).kind)
        if kind not in ("quality", "flag", "check"):
            raise ConfigError(f"{field}.kind: expected quality, flag or check, got {kind!r}")
        lo, hi = _scale(spec.get("scale", [0.0, 1.0]), f"{field}.scale")
        if kind != "quality" and (lo, hi) != (0.0, 1.0):
            raise ConfigError(f"{field}.scale: {kind} dimensions take 0 or 1; the scale must be [0, 1]")
        dims[name] = DimensionSpec(name, kind, lo, hi,
                                   _as_bool(spec.get("higher_is_better", True), f"{field}.higher_is_better"))

    otlp = _otlp(_section(doc, "otlp"))
    alertmanager = _alertmanager(_section(doc, "alertmanager"))
    metrics_doc = _section(doc, "metrics")
    _unknown("metrics", metrics_doc, DEFAULT_METRICS)
    metrics = {"series": _as_bool(metrics_doc.get("series", DEFAULT_METRICS["series"]), "metrics.series"),
               "series_limit": _as_int(metrics_doc.get("series_limit", DEFAULT_METRICS["series_limit"]),
                                       "metrics.series_limit", 1)}
    rules = _rules_of(_section(doc, "rules"))
    for k, v in kafka.items():
        if isinstance(v, Mapping):
            raise ConfigError(f"kafka.{k}: expected a value, got a table")
    return Settings(bootstrap_servers=bootstrap, group_id=group_id, kafka_client=kafka,
                    topics=topics, http_port=port, golden=queries.get("golden"), max_texts_per_batch=max_texts,
                    service_name=str(engine.get("service_name", "drift")),
                    allowed_lateness=lateness, max_future=max_future, max_message_bytes=max_bytes,
                    retrieval_scale=rscale, join_max_age=join_age, join_max_entries=join_entries,
                    service=service, dimensions=dims, rules=rules, otlp=otlp, source=source,
                    alertmanager=alertmanager, metrics=metrics)


def _alertmanager(sec: dict[str, Any]) -> dict[str, Any]:
    """``[alertmanager]``: every key checked, naming the field."""
    import os

    _unknown("alertmanager", sec, DEFAULT_ALERTMANAGER)
    out = dict(DEFAULT_ALERTMANAGER)
    for k, v in sec.items():
        f = f"alertmanager.{k}"
        if k == "urls":
            urls = [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v
            if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
                raise ConfigError(f"{f}: expected a list of URLs (or a comma-separated string), got {v!r}")
            for u in urls:
                parts = urllib.parse.urlsplit(u.strip())
                if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                    raise ConfigError(f"{f}: expected http(s)://host[:port][/path], got {redact_url(u)!r}")
                try:
                    parts.port  # noqa: B018 (raises on a bad port)
                except ValueError:
                    raise ConfigError(f"{f}: bad port in {redact_url(u)!r}") from None
            out[k] = [u.strip().rstrip("/") for u in urls]
            if len(set(out[k])) != len(out[k]):
                raise ConfigError(f"{f}: a URL is listed twice")
        elif k == "resend_interval":
            out[k] = parse_duration(v, f)
            if not 30 <= out[k] <= 180:
                raise ConfigError(f"{f}: must be between 30s and 3m, got {v!r}")
        elif k in ("timeout", "confirm_timeout", "grace_period"):
            out[k] = parse_duration(v, f)
            if out[k] <= 0:
                raise ConfigError(f"{f}: must be a positive duration, got {v!r}")
        elif k in ("runbook_url", "generator_url"):
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{f}: expected a URL template such as 'https://runbooks.example/{{rule}}', "
                                  f"got {v!r}")
            try:
                v.format_map({n: "x" for n in AM_TEMPLATE_FIELDS})
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{f}: bad template {v!r} ({type(exc).__name__}: {exc}; "
                                  f"placeholders: {', '.join('{' + n + '}' for n in AM_TEMPLATE_FIELDS)})") from None
            out[k] = v.strip()
        elif k == "insecure_skip_verify":
            out[k] = _as_bool(v, f)
        elif k in ("ca_file", "cert_file", "key_file"):
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{f}: expected a file path, got {v!r}")
            if not os.path.isfile(v):
                raise ConfigError(f"{f}: file {v!r} does not exist")
            out[k] = v
        else:  # username, password, bearer_token
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{f}: expected a non-empty string" + ("" if k != "username" else f", got {v!r}"))
            out[k] = v
    if out["key_file"] and not out["cert_file"]:
        raise ConfigError("alertmanager.key_file: needs alertmanager.cert_file (the client certificate)")
    if out["bearer_token"] and (out["username"] or out["password"]):
        raise ConfigError("alertmanager.bearer_token: give either bearer_token or username/password, not both")
    if out["password"] and not out["username"]:
        raise ConfigError("alertmanager.password: needs alertmanager.username")
    return out


def _otlp(sec: dict[str, Any]) -> dict[str, Any]:
    """``[otlp]``: checked here as far as types go; the mapping's own checks run when
    ``drift ingest otlp`` builds it (and name the field the same way)."""
    _unknown("otlp", sec, DEFAULT_OTLP)
    out = dict(DEFAULT_OTLP)
    for k, v in sec.items():
        f = f"otlp.{k}"
        if k in ("spans_topic", "logs_topic", "repartition_topic"):
            if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
                raise ConfigError(f"{f}: {v!r} is not a valid Kafka topic name")
            out[k] = v
        elif k == "encoding":
            if v not in ("otlp_proto", "otlp_json"):
                raise ConfigError(f"{f}: expected otlp_proto or otlp_json, got {v!r}")
            out[k] = v
        elif k in ("app_attribute", "intent_attribute", "score_prefix", "group_id"):
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{f}: expected a non-empty name, got {v!r}")
            out[k] = v
        elif k.endswith("_attributes") or k == "truncation_reasons":
            names = [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v
            if not isinstance(names, (list, tuple)) or not names or not all(isinstance(x, str) and x for x in names):
                raise ConfigError(f"{f}: expected a list of attribute names, got {v!r}")
            out[k] = list(names)
        elif k in ("label_values", "prices"):
            if isinstance(v, str):  # from the environment
                try:
                    v = json.loads(v)
                except ValueError:
                    raise ConfigError(f"{f}: expected a table (a JSON object in the environment), got {v!r}") from None
            if not isinstance(v, Mapping):
                raise ConfigError(f"{f}: expected a table, got {v!r}")
            out[k] = copy.deepcopy(dict(v))
        elif k in ("join_max_age", "max_ahead_s"):
            out[k] = parse_duration(v, f)
            if out[k] <= 0:
                raise ConfigError(f"{f}: must be a positive duration, got {v!r}")
        elif k == "join_max_entries":
            out[k] = _as_int(v, f, 1)
        elif k == "repartition_partitions":
            out[k] = _as_int(v, f, 0, 100000)
    return out


def _match(table: Mapping[str, Any], field: str) -> dict[str, tuple[str, ...]]:
    out = {}
    for k in _MATCH_KEYS:
        if k in table:
            v = table[k]
            values = (v,) if isinstance(v, str) else v
            if not isinstance(values, (list, tuple)) or not values or not all(isinstance(x, str) for x in values):
                raise ConfigError(f"{field}.{k}: expected a name or a list of names, got {v!r}")
            out[k] = tuple(values)
    return out


def _check_detector(kind: _rules.RuleKind, params: Mapping[str, Any], field: str) -> None:
    """Build a throw-away detector so that combinations the detector refuses fail here."""
    if kind.detector is None:
        return
    accepted = set(getattr(kind.detector, "_params", ()))
    if accepted:  # the others are the stream's (a join's dimension)
        params = {k: v for k, v in params.items() if k in accepted}
    try:
        kind.detector(**params, **kind.probe)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{field}: {exc}") from None


def _rules_of(rules_doc: Mapping[str, Any]) -> dict[str, RuleSpec]:
    """``[rules.NAME]`` tables: tune a registered rule, or declare a new one with ``kind``."""
    rules: dict[str, RuleSpec] = {}
    names = list(_rules.RULES) + [n for n in rules_doc if n not in _rules.RULES]
    for name in names:
        field = f"rules.{name}"
        user = rules_doc.get(name, {})
        if not isinstance(user, Mapping):
            raise ConfigError(f"{field}: expected a table, got {user!r}")
        builtin = _rules.RULES.get(name)
        kind: _rules.RuleKind | None
        if builtin is not None:
            if "kind" in user and user["kind"] != builtin.kind_name:
                raise ConfigError(f"{field}.kind: {name} is a built-in {builtin.kind_name} rule; "
                                  f"declare a new rule under another name for kind {user['kind']!r}")
            kind = _rules.RULE_KINDS[builtin.kind_name]
            stream, kinds, severity = builtin.stream, tuple(builtin.kinds), builtin.severity
            base = {**param_defaults(kind.params), **builtin.params}
        else:
            if "kind" not in user:
                raise ConfigError(f"{field}: not a built-in rule (built-ins: {', '.join(_rules.RULES)}); "
                                  f"a new rule needs kind = one of {', '.join(sorted(_rules.RULE_KINDS))}")
            kind = _rules.RULE_KINDS.get(user["kind"])
            if kind is None:
                raise ConfigError(f"{field}.kind: unknown rule kind {user['kind']!r} "
                                  f"(known: {', '.join(sorted(_rules.RULE_KINDS))})")
            allowed = kind.streams or tuple(STREAMS)
            stream = user.get("stream", allowed[0])
            if stream not in allowed or stream not in STREAMS:
                raise ConfigError(f"{field}.stream: a {kind.name} rule watches "
                                  f"{' or '.join(s for s in allowed if s in STREAMS)}, got {stream!r}")
            kinds = _default_kinds(stream, user)
            severity = "warning"
            base = param_defaults(kind.params)
        meta = {"enabled", "severity", "kind", "stream", "kinds", "first_action", "override"} | set(_MATCH_KEYS)
        params = parse_params(kind.params, user, field, base, ignore=tuple(meta))
        check_bucket_multiples(params, field)
        _check_detector(kind, params, field)
        if "kinds" in user:
            v = user["kinds"]
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{field}.kinds: expected a list of names, got {v!r}")
            kinds = tuple(v)
        severity = user.get("severity", severity)
        if severity not in _SEVERITIES:
            raise ConfigError(f"{field}.severity: expected one of {', '.join(_SEVERITIES)}, got {severity!r}")
        first_action = user.get("first_action")
        if first_action is not None and not isinstance(first_action, str):
            raise ConfigError(f"{field}.first_action: expected a sentence, got {first_action!r}")
        overrides = []
        raw = user.get("override", [])
        if not isinstance(raw, list):
            raise ConfigError(f"{field}.override: expected [[{field}.override]] tables, got {raw!r}")
        for i, o in enumerate(raw):
            of = f"{field}.override[{i}]"
            if not isinstance(o, Mapping):
                raise ConfigError(f"{of}: expected a table, got {o!r}")
            m = _match(o, of)
            if not m:
                raise ConfigError(f"{of}: needs app, intent or dimension to say which series it is for")
            op = parse_params(kind.params, o, of, params, ignore=_MATCH_KEYS)
            check_bucket_multiples(op, of)
            _check_detector(kind, op, of)
            overrides.append(Override(m, op))
        rules[name] = RuleSpec(name, kind.name, stream, kinds, severity,
                               _as_bool(user.get("enabled", builtin.enabled if builtin else True),
                                        f"{field}.enabled"), params,
                               _match(user, field), tuple(overrides), first_action)
    return rules


def _default_kinds(stream: str, user: Mapping[str, Any]) -> tuple[str, ...]:
    """The value kinds a new rule watches: every kind of its stream when it names dimensions,
    else the stream's first (scores: quality)."""
    kinds = STREAMS[stream].kinds or (stream,)
    return tuple(kinds) if "dimension" in user else (kinds[0],)
