"""Frozen settings: defaults < TOML file < environment (``DRIFT_…``) < command-line flags.

Built once at the edge (the CLI) and passed in; nothing else reads ``os.environ``. Every
mistake fails at start-up with a :class:`ConfigError` that names the field, e.g.
``rules.quality_drop.threshold: must be a positive number, got -1``.

Sections
--------
``[kafka]``        ``bootstrap_servers``, ``group_id``; every other key passes through to the
                   kafka-python clients (``security_protocol``, ``sasl_mechanism``,
                   ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``, …).
``[topics]``       ``scores``, ``retrieval``, ``queries``, ``alerts``, ``dlq``, ``state``.
``[http]``         ``port``.
``[queries]``      ``golden`` (a golden-set directory, one set or one per app in ``DIR/<app>/``;
                   query rules are off without one), ``max_texts_per_batch`` (texts embedded per
                   batch; beyond it a deterministic sample is embedded and the rest counted).
``[engine]``       ``allowed_lateness``, ``max_future``, ``max_message_bytes``, ``service_name``,
                   ``retrieval_scale``.
``[service]``      ``drift serve`` loop: ``checkpoint_interval``, ``max_poll_records``,
                   ``session_timeout_ms``, ``dlq_max_fraction``, ``dlq_min_messages``, ``dlq_window``,
                   ``livez_timeout``, ``restore_timeout``, ``delivery_timeout``, ``connect_timeout``,
                   ``startup_timeout``.
``[dimensions.NAME]`` ``kind`` (``quality``, ``flag``, ``check``), ``scale = [lo, hi]``,
                   ``higher_is_better``.
``[rules.NAME]``   ``enabled``, ``severity`` and the rule's detector parameters (durations as
                   ``"7d"``, ``"1h"``, ``"10m"``, ``"30s"`` or seconds; ``short_windows`` as a
                   list of them).

Environment variables map ``DRIFT_<SECTION>_<KEY>`` onto the scalar keys of ``kafka``,
``topics``, ``http``, ``queries`` and ``engine`` (``DRIFT_KAFKA_BOOTSTRAP_SERVERS``,
``DRIFT_TOPICS_SCORES``, ``DRIFT_HTTP_PORT``, ``DRIFT_QUERIES_GOLDEN``,
``DRIFT_SERVICE_CHECKPOINT_INTERVAL``, …).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "Settings", "RuleSpec", "DimensionSpec", "load_settings",
           "parse_duration", "DEFAULT_RULES", "SECRET_KEYS", "redact"]


class ConfigError(ValueError):
    """A configuration mistake; the message names the field."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value, field: str) -> float:
    """``"7d"``, ``"1h"``, ``"10m"``, ``"30s"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration like '7d' or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{field}: expected a duration like '7d', '1h', '10m' or seconds, got {value!r}")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not math.isfinite(seconds):
        raise ConfigError(f"{field}: must be a finite duration, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{field}: must not be negative, got {value!r}")
    return seconds


# Kafka client settings whose values never appear in logs or config dumps.
SECRET_KEYS = ("password", "secret", "token", "sasl_plain_password", "ssl_password",
               "sasl_oauth_token_provider", "ssl_keyfile")


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``mapping`` with secret values replaced by ``'***'``."""
    out = {}
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

# Rule table: which detector, which stream and dimension kind, and its default parameters.
# Durations are seconds. These defaults implement SPEC's rule table.
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "quality_drop": {
        "detector": "percent_drop", "stream": "scores", "kinds": ["quality"], "severity": "warning",
        "params": {"stat": "mean", "bucket": 3600.0, "window": 7 * 86400.0, "baseline": 14 * 86400.0,
                   "threshold": 0.05, "alpha": 1e-3, "min_n": 100, "long_term": True,
                   "short_windows": (6 * 3600.0, 86400.0),
                   "for_buckets": 1, "resolve_after": 3, "resolve_ratio": 0.5},
    },
    "quality_shift": {
        "detector": "ks", "stream": "scores", "kinds": ["quality"], "severity": "warning",
        "params": {"bucket": 86400.0, "window": 7 * 86400.0, "baseline": 14 * 86400.0,
                   "alpha": 0.01, "min_d": 0.1, "min_n": 200, "bins": 256,
                   "for_buckets": 1, "resolve_after": 2, "resolve_ratio": 0.5},
    },
    "retrieval_drop": {
        "detector": "percent_drop", "stream": "retrieval", "kinds": ["top1"], "severity": "warning",
        "params": {"stat": "median", "bucket": 6 * 3600.0, "window": 3 * 86400.0,
                   "baseline": 7 * 86400.0, "threshold": 0.10, "alpha": 1e-3, "min_n": 100,
                   "bins": 512, "long_term": True, "short_windows": (86400.0,),
                   "for_buckets": 1, "resolve_after": 2,
                   "resolve_ratio": 0.5},
    },
    "flag_rate_spike": {
        "detector": "rate_ratio", "stream": "scores", "kinds": ["flag"], "severity": "critical",
        "params": {"bucket": 3600.0, "window": 86400.0, "baseline": 7 * 86400.0, "ratio": 2.0,
                   "alpha": 1e-5, "min_n": 50, "min_ref_n": 1000, "min_events": 5,
                   "min_rate": 0.005, "long_term": True, "for_buckets": 1, "resolve_after": 3,
                   "resolve_ratio": 0.5},
    },
    "format_failure_spike": {
        "detector": "rate_ratio", "stream": "scores", "kinds": ["check"], "severity": "warning",
        "params": {"bucket": 3600.0, "window": 3600.0, "baseline": 7 * 86400.0, "ratio": 2.0,
                   "alpha": 1e-6, "min_n": 20, "min_ref_n": 200, "min_events": 5,
                   "min_rate": 0.01, "long_term": True, "for_buckets": 1, "resolve_after": 3,
                   "resolve_ratio": 0.5},
    },
    "query_centroid_shift": {
        "detector": "centroid", "stream": "queries", "kinds": ["queries"], "severity": "warning",
        "params": {"bucket": 3600.0, "window": 7 * 86400.0, "threshold": 0.15, "min_n": 200,
                   "coverage_sim": 0.5, "short_windows": (86400.0, 2 * 86400.0), "for_buckets": 1,
                   "resolve_after": 3, "resolve_ratio": 0.5},
    },
    "prompt_change": {
        "detector": "change_tracker", "stream": "scores", "kinds": ["prompt_hash", "model"],
        "severity": "info", "params": {"max_values": 64, "max_changes": 32},
    },
}

_DURATION_PARAMS = {"bucket", "window", "baseline"}
_SEVERITIES = ("info", "warning", "critical")


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    name: str
    detector: str
    stream: str
    kinds: tuple[str, ...]
    severity: str
    enabled: bool
    params: Mapping[str, Any]


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
    service: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SERVICE))
    dimensions: Mapping[str, DimensionSpec] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DIMENSIONS))
    rules: Mapping[str, RuleSpec] = dataclasses.field(default_factory=dict)
    source: str = "defaults"

    def dimension(self, name: str) -> DimensionSpec:
        """Spec of a dimension (unlisted names are quality dimensions on [0, 1])."""
        return self.dimensions.get(name) or DimensionSpec(name)

    def rule(self, name: str) -> RuleSpec:
        return self.rules[name]

    def fingerprint(self) -> str:
        """Hash of everything that shapes detector state (rules, dimensions, lateness)."""
        doc = {"rules": {k: dataclasses.asdict(v) for k, v in sorted(self.rules.items())},
               "dimensions": {k: dataclasses.asdict(v) for k, v in sorted(self.dimensions.items())},
               "allowed_lateness": self.allowed_lateness, "retrieval_scale": list(self.retrieval_scale)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def kafka_config(self) -> dict[str, Any]:
        """kafka-python client settings (bootstrap servers plus the pass-through keys)."""
        return {"bootstrap_servers": self.bootstrap_servers.split(","), **self.kafka_client}

    def describe(self) -> dict[str, Any]:
        """A loggable view of the settings, secrets redacted."""
        return {"bootstrap_servers": self.bootstrap_servers, "group_id": self.group_id,
                "kafka": redact(self.kafka_client), "topics": dict(self.topics),
                "http_port": self.http_port, "golden": self.golden, "source": self.source,
                "rules": {k: {"enabled": v.enabled, **v.params} for k, v in self.rules.items()}}


DEFAULT_TOPICS = {"scores": "llm.scores", "retrieval": "llm.retrieval", "queries": "llm.queries",
                  "alerts": "llm.alerts", "dlq": "llm.dlq", "state": "drift.state"}

_ENV_SECTIONS = ("kafka", "topics", "http", "queries", "engine", "service")

# `drift serve` loop settings ([service]); durations in seconds.
DEFAULT_SERVICE = {
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
_ENGINE_KEYS = {"allowed_lateness", "max_future", "max_message_bytes", "service_name", "retrieval_scale"}


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


def _as_int(value, field, lo=None, hi=None) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = int(value)
        if isinstance(value, float) and v != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{field}: expected an integer, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{field}: must be between {lo} and {hi}, got {v}")
    return v


def _as_float(value, field, positive=False, unit=False) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: expected a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"{field}: must be finite, got {value!r}")
    if positive and v <= 0:
        raise ConfigError(f"{field}: must be a positive number, got {value!r}")
    if unit and not 0 < v <= 1:
        raise ConfigError(f"{field}: must be in (0, 1], got {value!r}")
    return v


def _as_bool(value, field) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{field}: expected true or false, got {value!r}")


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
    _unknown("config", doc.keys(), ("kafka", "topics", "http", "queries", "engine", "service", "dimensions", "rules"))
    kafka = _section(doc, "kafka")
    bootstrap = str(kafka.pop("bootstrap_servers", "localhost:9092"))
    group_id = str(kafka.pop("group_id", "drift"))
    if not bootstrap.strip():
        raise ConfigError("kafka.bootstrap_servers: must not be empty")
    topics_doc = _section(doc, "topics")
    _unknown("topics", topics_doc, DEFAULT_TOPICS)
    topics = {**DEFAULT_TOPICS, **{k: str(v) for k, v in topics_doc.items()}}
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

    rules_doc = _section(doc, "rules")
    _unknown("rules", rules_doc, DEFAULT_RULES)
    rules = {}
    for name, default in DEFAULT_RULES.items():
        user = rules_doc.get(name, {})
        field = f"rules.{name}"
        if not isinstance(user, Mapping):
            raise ConfigError(f"{field}: expected a table, got {user!r}")
        params = dict(default["params"])
        _unknown(field, user, set(params) | {"enabled", "severity"})
        for k, v in user.items():
            if k in ("enabled", "severity"):
                continue
            f = f"{field}.{k}"
            ref = params[k]
            if k == "short_windows":
                if not isinstance(v, (list, tuple)):
                    raise ConfigError(f"{f}: expected a list of durations like ['6h', '1d'], got {v!r}")
                params[k] = tuple(parse_duration(x, f"{f}[{i}]") for i, x in enumerate(v))
            elif k in _DURATION_PARAMS:
                params[k] = parse_duration(v, f)
                if params[k] < 1:
                    raise ConfigError(f"{f}: must be at least 1 second, got {v!r}")
            elif k in ("alpha",):
                params[k] = _as_float(v, f, unit=True)
            elif k == "coverage_sim":
                params[k] = _as_float(v, f)
                if not -1 <= params[k] <= 1:
                    raise ConfigError(f"{f}: must be a cosine similarity in [-1, 1], got {v!r}")
            elif k == "stat":
                if v not in ("mean", "median"):
                    raise ConfigError(f"{f}: expected 'mean' or 'median', got {v!r}")
                params[k] = v
            elif isinstance(ref, bool):
                params[k] = _as_bool(v, f)
            elif isinstance(ref, int):
                params[k] = _as_int(v, f, 1)
            else:
                params[k] = _as_float(v, f, positive=True)
        spans = [(k, params[k], "") for k in ("window", "baseline") if k in params]
        spans += [(f"short_windows[{i}]", v, f" and shorter than {field}.window ({params['window']:g} s)")
                  for i, v in enumerate(params.get("short_windows", ()))]
        for k, v, also in spans:
            ratio = v / params["bucket"]
            if abs(ratio - round(ratio)) > 1e-9 or ratio < 1 or (also and v >= params["window"]):
                raise ConfigError(f"{field}.{k}: must be a whole multiple of {field}.bucket "
                                  f"({params['bucket']:g} s){also}, got {v:g} s")
        severity = user.get("severity", default["severity"])
        if severity not in _SEVERITIES:
            raise ConfigError(f"{field}.severity: expected one of {', '.join(_SEVERITIES)}, got {severity!r}")
        rules[name] = RuleSpec(name, default["detector"], default["stream"], tuple(default["kinds"]),
                               severity, _as_bool(user.get("enabled", True), f"{field}.enabled"), params)
    for k, v in kafka.items():
        if isinstance(v, Mapping):
            raise ConfigError(f"kafka.{k}: expected a value, got a table")
    return Settings(bootstrap_servers=bootstrap, group_id=group_id, kafka_client=kafka,
                    topics=topics, http_port=port, golden=queries.get("golden"), max_texts_per_batch=max_texts,
                    service_name=str(engine.get("service_name", "drift")),
                    allowed_lateness=lateness, max_future=max_future, max_message_bytes=max_bytes,
                    retrieval_scale=rscale, service=service, dimensions=dims, rules=rules, source=source)
