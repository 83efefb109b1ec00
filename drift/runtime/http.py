"""One small HTTP port for the service: ``/metrics``, ``/livez``, ``/readyz``.

Metrics take an injected ``prometheus_client`` registry (tests use a fresh one). Names are in base
units with low-cardinality labels.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "Health", "HttpServer"]


class Metrics:
    """The service's Prometheus metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("drift_messages_consumed_total", "Input messages consumed", ["topic"], registry=r)
        self.events = Counter("drift_events_consumed_total", "Input events accepted", ["topic"], registry=r)
        self.dlq = Counter("drift_dlq_total", "Rejected messages and events sent to the DLQ", ["reason"], registry=r)
        self.alerts = Counter("drift_alerts_total", "Alert events produced", ["rule", "status"], registry=r)
        self.lag = Gauge("drift_consumer_lag", "Records behind the partition's high watermark",
                         ["topic", "partition"], registry=r)
        self.checkpoint_age = Gauge("drift_checkpoint_age_seconds", "Seconds since the last checkpoint", registry=r)
        self.checkpoints = Counter("drift_checkpoints_total", "Checkpoints completed", registry=r)
        self.state_bytes = Counter("drift_state_bytes_written_total",
                                   "Raw bytes of engine state written to the state topic (changed chunks only)",
                                   registry=r)
        self.state_chunks = Counter("drift_state_chunks_written_total",
                                    "State chunk records written (a checkpoint writes the chunks that changed)",
                                    registry=r)
        self.restores = Counter("drift_state_restores_total", "Partition states restored", ["result"], registry=r)
        self.batch = Histogram("drift_batch_seconds", "Time to process one polled batch", registry=r,
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.multi_partition = Counter("drift_series_on_several_partitions_total",
                                       "Series seen on more than one input partition (bad producer keys)",
                                       registry=r)
        self.assigned = Gauge("drift_assigned_partitions", "Input partitions assigned", registry=r)
        self.escalations = Counter("drift_escalations_total", "Escalated traces reported to the escalations topic",
                                   registry=r)
        self.control = Counter("drift_control_commands_total", "Operator commands run (drift.control)", ["command"],
                               registry=r)
        self.judge_join = Gauge("drift_judge_join_entries", "Scores, labels and feedback held by the judge join",
                                ["state"], registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Liveness (the loop turns) and readiness (assigned and restored) of the service."""

    def __init__(self, livez_timeout: float = 120.0):
        self.livez_timeout = livez_timeout
        self.last_beat = time.monotonic()
        self.ready = False
        self.reason = "starting: not yet assigned partitions"
        self.lock = threading.Lock()
        # more readiness conditions (e.g. an alert sink that cannot deliver): each returns the
        # reason it is not ready, or None
        self.checks: list[Callable[[], str | None]] = []

    def readiness(self) -> tuple[bool, str]:
        """What ``/readyz`` answers: the loop's own state, then every extra check."""
        with self.lock:
            ok, why = self.ready, self.reason
        if ok:
            for check in self.checks:
                problem = check()
                if problem:
                    return False, problem
        return ok, why

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self.lock:
            self.ready, self.reason = ready, reason

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_beat
        if idle > self.livez_timeout:
            return False, f"the consume loop has not turned for {idle:.0f} s"
        return True, "ok"


class HttpServer:
    """Serves the endpoints on ``host:port`` (port 0 picks a free one) in a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, host: str = "0.0.0.0", port: int = 9308):
        m, h = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, m.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/livez":
                    ok, why = h.live()
                    self._send(200 if ok else 503, json.dumps({"live": ok, "reason": why}).encode())
                elif path == "/readyz":
                    ok, why = h.readiness()
                    self._send(200 if ok else 503, json.dumps({"ready": ok, "reason": why}).encode())
                else:
                    self._send(404, b'{"error": "not found: try /metrics, /livez or /readyz"}')

            def _send(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: the service logs in JSON
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="drift-http", daemon=True)

    def start(self) -> HttpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
