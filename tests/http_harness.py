"""Loopback HTTP helpers for tests: a free port, and a webhook receiver that records what it is sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """A webhook receiver on loopback: every JSON body posted to it, parsed (Alertmanager's
    notifications at ``url``; a client that appends its own path uses ``base``)."""

    def __init__(self):
        self.notifications: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status=None, **labels) -> list[dict]:
        """Alerts of every notification so far (optionally: the notification's status and labels)."""
        return [a for n in list(self.notifications) if status is None or n["status"] == status
                for a in n["alerts"] if all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait(self, predicate, timeout=20.0, what="a notification"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; got {json.dumps(self.notifications)[:2000]}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()
