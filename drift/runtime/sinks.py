"""The alert topic as a sink: alerts as CloudEvents on ``llm.alerts``, keyed by ``alert_id``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from drift.core.alerts import Alert, encode

if TYPE_CHECKING:  # pragma: no cover
    from drift.runtime.service import Service

__all__ = ["KafkaAlertSink"]


class KafkaAlertSink:
    """Produces each alert to the alert topic through the service's producer; ``confirm``
    flushes and checks every record the producer has in flight (alerts and DLQ records),
    re-sending what the broker did not confirm (same keys and values, so ids stay the same)."""

    name = "kafka"

    def __init__(self, service: Service):
        self.service = service

    def emit(self, alerts: Sequence[Alert]) -> None:
        topic = self.service.settings.topics["alerts"]
        for a in alerts:
            self.service._send(topic, a.alert_id.encode(), encode(a))

    def confirm(self) -> None:
        self.service._confirm()

    def close(self) -> None:
        """The producer belongs to the service, which closes it."""
