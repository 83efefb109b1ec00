"""Shared fixtures: one embedded Kafka-compatible broker (Tansu) per test session.

``broker``         session-scoped, a started :class:`drift.tools.broker.EmbeddedBroker`
                   on a free loopback port (in-memory storage); stopped at the end.
``topic_factory``  ``topic_factory(partitions=1) -> name``: creates a uniquely named
                   topic on that broker and waits until all its partitions are usable.

The broker is a real one, with Tansu's quirks (see ``drift/broker.py``).  Test-side
rules that follow from them:

* use a fresh topic and a fresh ``group_id`` per test (the broker is shared);
* consumer-group join takes ~session_timeout_ms / 2: use ``session_timeout_ms=6000``;
* stop the members of a group one at a time, and let the group finish rebalancing
  before the next (or last) one leaves, or the group can wedge;
* read the end of a partition with ``consumer.highwater(tp)`` after a poll, not
  ``end_offsets()`` / ``seek_to_end()`` / ``auto_offset_reset="latest"``.

A missing broker binary is an error (with the package to install), never a skip.
"""

from __future__ import annotations

import re
import uuid

import pytest

from drift.tools.broker import BrokerError, EmbeddedBroker, create_topics


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0.12 loads its protocol schemas with the deprecated
    # importlib.resources.read_text/open_text: ~200 warnings per run, none ours.
    for api in ("read_text", "open_text"):
        config.addinivalue_line("filterwarnings", f"ignore:{api} is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    b = EmbeddedBroker(log_path=log)
    try:
        b.start()
    except BrokerError as exc:
        pytest.fail(f"the embedded Kafka broker could not start: {exc}", pytrace=False)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topic_factory(broker: EmbeddedBroker, request: pytest.FixtureRequest):
    """Return ``make(partitions=1, prefix=None) -> topic name`` (created and ready)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80] or "t"

    def make(partitions: int = 1, prefix: str | None = None) -> str:
        name = f"{prefix or stem}-{uuid.uuid4().hex[:8]}"
        counts = create_topics(broker.bootstrap, {name: partitions})
        assert counts == {name: partitions}, counts
        return name

    return make


# a small input that fires one alert (the Alertmanager and deploy/ service tests)
@pytest.fixture(scope="module")
def format_events():
    """support-bot/billing format_valid over 12 days of prompt_cleanup: one format_failure_spike."""
    from drift.tools.simulate import iter_events, simulate

    sim = simulate("prompt_cleanup", seed=0, days=12)
    return [e for e in iter_events(sim) if e.get("app") == "support-bot" and e.get("intent") == "billing"
            and e.get("dimension") == "format_valid"]
