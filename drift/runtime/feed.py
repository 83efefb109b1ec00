"""``drift alerts``: subscribe to the alert topic and print alerts readably (or as JSON).

Reads without a consumer group (it never moves anybody's offsets). Without ``--from-beginning``
it starts at the current end of the topic; without ``--follow`` it stops once caught up.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable

from drift.core.alerts import render
from drift.core.config import Settings

__all__ = ["follow_alerts", "stop_on_signals"]


def stop_on_signals() -> Callable[[], bool]:
    """A ``stop()`` that turns true on SIGINT or SIGTERM (handlers installed where this is the
    main thread; elsewhere it stays false and the caller's own stop applies)."""
    stopping = [False]

    def _handler(*_):
        stopping[0] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _handler)
        except ValueError:  # not the main thread
            pass
    return lambda: stopping[0]


def follow_alerts(settings: Settings, *, from_beginning: bool = False, follow: bool = False,
                  as_json: bool = False, write: Callable[[str], None] | None = None,
                  stop: Callable[[], bool] | None = None, wait: float = 10.0) -> int:
    """Print alerts from ``settings.topics["alerts"]``; return how many were printed."""
    from kafka import KafkaConsumer, TopicPartition

    write = write or (lambda line: print(line, flush=True))
    topic = settings.topics["alerts"]
    consumer = KafkaConsumer(**settings.kafka_config(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    if stop is None:
        stop = stop_on_signals()
    shown = 0
    try:
        deadline = time.monotonic() + wait
        parts = consumer.partitions_for_topic(topic)
        while not parts:
            if time.monotonic() > deadline or stop():
                print(f"drift alerts: topic {topic!r} does not exist (yet) on {settings.bootstrap_servers}",
                      file=sys.stderr)
                return 0
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        if not from_beginning:
            # the end as fetches report it (the high watermark), then start there
            while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200, max_records=1)
            for tp in tps:
                consumer.seek(tp, consumer.highwater(tp) or 0)
        while not stop():
            batch = consumer.poll(timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    try:
                        ev = json.loads(r.value)
                        write(json.dumps(ev) if as_json else render(ev))
                    except (ValueError, KeyError, TypeError):
                        write(f"(unreadable alert record at {r.topic}/{r.partition}@{r.offset})")
                    shown += 1
            if not follow and all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                                  for tp in tps):
                break
    finally:
        consumer.close()
    return shown
