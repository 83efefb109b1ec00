"""Alert sinks as plug-ins: where alerts go, and the delivery confirmation the commit order waits on.

A sink has two calls. ``emit(alerts)`` hands it the alerts of one polled batch (it may buffer
or send them asynchronously); ``confirm()`` returns once everything emitted so far is delivered,
or raises :class:`DeliveryError`; a sink that keeps retrying in the background (the Alertmanager
sink) may instead return ``False`` after a while: not delivered yet. ``drift serve`` calls ``confirm`` on every sink in step 2 of
the commit order (:mod:`drift.runtime.checkpoint`), before state and offsets move, so a sink
that cannot deliver delays the commit instead of losing alerts. The alert topic
(:class:`drift.runtime.sinks.KafkaAlertSink`) is always the first sink.

>>> from drift.core.sinks import MemorySink
>>> sink = MemorySink()
>>> sink.emit([])
>>> sink.confirm()
>>> sink.alerts
[]

Register a sink kind so configurations can name it::

    register_sink("my-webhook", lambda settings: MyWebhookSink(settings))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from drift.core.alerts import Alert
    from drift.core.config import Settings

__all__ = ["Sink", "MemorySink", "DeliveryError", "SINKS", "register_sink"]


class DeliveryError(RuntimeError):
    """A sink (or the Kafka producer) could not confirm delivery."""


@runtime_checkable
class Sink(Protocol):
    """Where alerts go. ``name`` labels its metrics and log lines."""

    name: str

    def emit(self, alerts: Sequence[Alert]) -> None:
        """Take the alerts of one batch (in order); may deliver asynchronously."""

    def confirm(self) -> bool | None:
        """Block until everything emitted is delivered; raise :class:`DeliveryError` if it
        cannot be (the commit order then stops before state and offsets move), or return
        ``False`` for "not yet" (that checkpoint is skipped: state and offsets stay, the
        service goes on and tries again at the next one)."""

    def close(self) -> None:
        """Release resources (called once, at shutdown, after a last ``confirm``)."""


class MemorySink:
    """Keeps alerts in a list (notebooks, tests); ``confirmed`` counts the alerts confirmed."""

    name = "memory"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.confirmed = 0

    def emit(self, alerts: Sequence[Alert]) -> None:
        self.alerts.extend(alerts)

    def confirm(self) -> None:
        self.confirmed = len(self.alerts)

    def close(self) -> None:
        pass


SINKS: dict[str, Callable[[Settings], Sink]] = {}


def register_sink(name: str, factory: Callable[[Settings], Sink]) -> Callable[[Settings], Sink]:
    """Register a sink kind: ``factory(settings)`` builds one for ``drift serve``."""
    SINKS[name] = factory
    return factory


register_sink("memory", lambda settings: MemorySink())
