"""Operator commands on ``drift.control``: ``drift baseline reset``.

A command is one JSON object (see :func:`drift.core.engine.parse_command`). ``drift serve``
consumes ``drift.control`` in its consumer group, co-partitioned with the input topics: the
command on control partition ``p`` is run by every engine of the instance that holds input
partition ``p`` (the shared scores/labels/feedback engine, and the retrieval and queries
engines of that number), and its offset is committed with their state, in the commit order.

Routing: a command is keyed like the series it names (``app/intent``; ``app`` for query rules),
so Kafka's default partitioner puts it on the partition number its events use. A command that
names no intent (every intent of an app), or a control topic whose partition count differs
from the input topic's, is sent to every partition instead: each engine applies it to the
matching series it holds, and the rest ignore it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from drift.core.config import ConfigError, Settings
from drift.core.events import format_time
from drift.core.rules import RULE_KINDS
from drift.core.streams import STREAMS

__all__ = ["reset_command", "send_command", "ensure_control_topic"]


def reset_command(settings: Settings, rule: str, app: str, intent: str | None = None, dimension: str | None = None,
                  by: str = "", reason: str = "", now: float | None = None) -> tuple[dict[str, Any], str, bytes | None]:
    """The ``baseline_reset`` command, the input topic whose partitioning it follows and its key
    (``None``: it must go to every partition). Raises :class:`ConfigError` naming the field."""
    spec = settings.rules.get(rule)
    if spec is None or RULE_KINDS[spec.detector].detector is None:
        known = ", ".join(n for n, s in settings.rules.items() if RULE_KINDS[s.detector].detector is not None)
        raise ConfigError(f"--rule: {rule!r} is not a detector rule of this configuration (rules: {known})")
    if not spec.enabled:
        raise ConfigError(f"--rule: {rule!r} is disabled in this configuration: it has no baseline to reset")
    stream = STREAMS[spec.stream]
    fields = stream.series_fields
    if intent is not None and "intent" not in fields:
        raise ConfigError(f"--intent: {rule} watches series by {'/'.join(fields)}; it has no intent")
    if dimension is not None and "dimension" not in fields:
        raise ConfigError(f"--dimension: {rule} watches series by {'/'.join(fields)}; it has no dimension")
    for name, value in (("--app", app), ("--intent", intent), ("--dimension", dimension)):
        if value is not None and not value.strip():
            raise ConfigError(f"{name}: must not be empty")
    cmd: dict[str, Any] = {"command": "baseline_reset", "rule": rule, "app": app, "ts": format_time(
        time.time() if now is None else now), "id": uuid.uuid4().hex}
    if intent is not None:
        cmd["intent"] = intent
    if dimension is not None:
        cmd["dimension"] = dimension
    if by:
        cmd["by"] = by
    if reason:
        cmd["reason"] = reason
    topic = settings.topics[spec.stream]
    if fields == ("app",):
        key: bytes | None = app.encode()
    elif intent is not None:
        key = f"{app}/{intent}".encode()
    else:
        key = None
    return cmd, topic, key


def ensure_control_topic(settings: Settings, admin, partitions: int) -> bool:
    """Create the control topic with ``partitions`` partitions if the cluster lacks it."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    name = settings.topics["control"]
    if name in set(admin.list_topics()):
        return False
    try:
        admin.create_topics([NewTopic(name, max(1, int(partitions)), -1)])
    except TopicAlreadyExistsError:
        return False
    return True


def send_command(settings: Settings, cmd: dict[str, Any], input_topic: str, key: bytes | None,
                 timeout: float = 30.0) -> dict[str, Any]:
    """Produce ``cmd`` to the control topic (creating it like ``input_topic`` if missing) and wait
    for the broker's acknowledgement. Returns where it went."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    cfg = dict(settings.kafka_config())
    cfg.setdefault("client_id", f"drift-{settings.service_name}-control")
    cfg.setdefault("bootstrap_timeout_ms", int(timeout * 1000))
    topic = settings.topics["control"]
    consumer = KafkaConsumer(**cfg)
    try:
        input_parts = consumer.partitions_for_topic(input_topic) or set()
        admin = KafkaAdminClient(**cfg)
        try:
            created = ensure_control_topic(settings, admin, len(input_parts) or 1)
        finally:
            admin.close()
        deadline = time.monotonic() + timeout
        control_parts = consumer.partitions_for_topic(topic)
        while not control_parts and time.monotonic() < deadline:
            time.sleep(0.2)
            consumer.topics()  # refresh metadata
            control_parts = consumer.partitions_for_topic(topic)
        if not control_parts:
            raise TimeoutError(f"topic {topic} has no partitions after {timeout:g} s")
    finally:
        consumer.close()
    same = len(control_parts) == len(input_parts)
    value = json.dumps(cmd).encode()
    producer = KafkaProducer(acks="all", **cfg)
    try:
        if key is not None and same:
            meta = producer.send(topic, key=key, value=value).get(timeout=timeout)
            partitions = [meta.partition]
        else:
            partitions = sorted(control_parts)
            futures = [producer.send(topic, key=key, value=value, partition=p) for p in partitions]
            for f in futures:
                f.get(timeout=timeout)
        producer.flush(timeout=timeout)
    finally:
        producer.close(timeout=timeout)
    return {"topic": topic, "partitions": partitions, "key": None if key is None else key.decode(),
            "created_topic": created, "co_partitioned": same, "command": cmd}
