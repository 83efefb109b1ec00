"""llm-drift: streaming statistical drift detection for LLM applications.

The library API, for notebooks, CI gates and services of your own::

    from drift import Engine, Settings, Alert, load_settings

    engine = Engine(load_settings("drift.toml"))        # or Engine() for the SPEC's defaults
    alerts = engine.feed([{"ts": "2026-01-05T10:00:00Z", "app": "bot", "intent": "billing",
                           "dimension": "format", "score": 0.91}, ...])
    for a in alerts:
        print(a.rule, a.labels, a.summary)

Layout: :mod:`drift.core` (events, config, rules, streams, engine, alerts, sinks: no I/O),
:mod:`drift.runtime` (``drift serve``, checkpoints, HTTP, ``drift replay``),
:mod:`drift.embeddings` (encoder, golden sets) and :mod:`drift.tools` (simulator, demo, embedded
broker, scorecard, plots). The statistics live in the top-level package :mod:`detectors`.
"""

from drift.core.alerts import Alert, from_cloudevent, render, to_cloudevent
from drift.core.config import ConfigError, RuleSpec, Settings, load_settings
from drift.core.engine import Engine
from drift.core.events import EventDecoder
from drift.core.rules import RULE_KINDS, RULES, Rule, RuleKind, register
from drift.core.sinks import DeliveryError, MemorySink, Sink, register_sink
from drift.core.streams import STREAMS, ScalarStream, Stream, register_stream

__all__ = [
    "Alert", "ConfigError", "DeliveryError", "Engine", "EventDecoder", "MemorySink", "RULES", "RULE_KINDS",
    "Rule", "RuleKind", "RuleSpec", "STREAMS", "ScalarStream", "Settings", "Sink", "Stream", "from_cloudevent",
    "load_settings", "register", "register_sink", "register_stream", "render", "to_cloudevent",
]
__version__ = "0.2.0"
