"""The Alertmanager sink: the payload mapping, and delivery through a REAL Alertmanager.

Alertmanager is Debian's ``prometheus-alertmanager`` (``/usr/bin/prometheus-alertmanager``),
started per test on loopback with its whole routing tree pointed at a webhook receiver served
by the test (``http.server`` in a thread), short ``group_wait``/``group_interval``, storage in
tmp and no cluster gossip. Without the binary these tests skip, saying how to install it.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from drift.core.alerts import Alert, Side, Statistic
from drift.core.config import ConfigError, load_settings
from drift.runtime import alertmanager as am_mod
from drift.runtime.alertmanager import AlertmanagerSink, to_am_alert
from drift.runtime.http import Health
from http_harness import Webhook, free_port
from kafka_harness import committed, group_caught_up

AM_BINARY = os.environ.get("DRIFT_ALERTMANAGER_BINARY", "/usr/bin/prometheus-alertmanager")
# the alerts of `drift demo --offline` (seed 0), as CloudEvents: the demo's own alert list
DEMO_ALERTS = Path(__file__).resolve().parent / "fixtures" / "demo_alerts.jsonl"


# ------------------------------------------------------------------------------ helpers
def _alert(status="firing", rule="quality_drop", app="support-bot", intent="billing", dimension="format",
           starts_at="2026-01-16T13:00:00.000Z", ends_at=None, alert_id=None, extra_labels=None, **kw) -> Alert:
    labels = {"stream": "scores", "app": app, "intent": intent, "dimension": dimension, **(extra_labels or {})}
    return Alert(alert_id=alert_id or uuid.uuid4().hex[:24], status=status, rule=rule, detector="percent_drop",
                 severity=kw.pop("severity", "warning"), labels=labels, starts_at=starts_at, ends_at=ends_at,
                 window=Side(start="2026-01-09T13:00:00.000Z", end="2026-01-16T13:00:00.000Z", n=1840, value=0.84),
                 baseline=Side(start="2026-01-02T13:00:00.000Z", end="2026-01-09T13:00:00.000Z", n=3620, value=0.91,
                               kind="baseline"),
                 statistic=Statistic(name="pct_drop", value=0.077, threshold=0.05, p_value=1.2e-9),
                 suspected_cause={"kind": "prompt_hash_change", "from": "ab12", "to": "cd34",
                                  "at": "2026-01-16T10:00:00.000Z"},
                 first_action="Pull traces from the degradation period; check the prompt hash timeline",
                 summary="format score for support-bot/billing fell 7.7% below baseline", **kw)


class Alertmanager:
    """A real Alertmanager on loopback routing everything to ``webhook_url``; restartable
    (same port, same storage)."""

    def __init__(self, workdir, webhook_url: str):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: ['alertname', 'app', 'intent', 'dimension']\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: '{webhook_url}'\n"
            "        send_resolved: true\n")
        self.proc: subprocess.Popen | None = None
        self.log = open(workdir / "alertmanager.log", "ab")  # noqa: SIM115 (closed in stop)
        self.start()

    def start(self, timeout: float = 20.0):
        self.proc = subprocess.Popen(
            [AM_BINARY, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("alertmanager exited:\n" + (self.workdir / "alertmanager.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self):
        self.stop()
        self.log.close()


@pytest.fixture
def am_binary():
    if not os.path.exists(AM_BINARY) and not shutil.which("prometheus-alertmanager"):
        pytest.skip(f"Alertmanager not installed ({AM_BINARY}): apt-get install prometheus-alertmanager, "
                    "as `make test` does when it runs as root (or set DRIFT_ALERTMANAGER_BINARY)")
    return AM_BINARY


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def alertmanager(am_binary, webhook, tmp_path):
    made: list[Alertmanager] = []

    def make() -> Alertmanager:
        d = tmp_path / f"am{len(made)}"
        d.mkdir()
        made.append(Alertmanager(d, webhook.url))
        return made[-1]

    yield make
    for m in made:
        m.close()


def _settings(urls, **am):
    return load_settings(overrides={"alertmanager": {"urls": urls, **am}})


def _am_alerts(am: Alertmanager, **labels) -> list[dict]:
    """The alerts Alertmanager holds as active (``GET /api/v2/alerts``) with these labels."""
    query = "&".join("filter=" + urllib.parse.quote(f'{k}="{v}"') for k, v in labels.items())
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts?{query}", timeout=5) as r:
        return json.loads(r.read())


class Answering:
    """A loopback ``POST /api/v2/alerts`` that answers ``answer(alerts) -> (status, body)`` and
    keeps the alerts of every post (as the webhook receiver of ``http_harness``, with a status)."""

    def __init__(self, answer):
        self.posts: list[list[dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                alerts = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.posts.append(alerts)
                code, body = answer(alerts)
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _to_topic(bootstrap: str, topic: str, alerts, now: float | None = None, extra=()) -> None:
    """Write ``alerts`` to the alert topic as `drift serve` does (CloudEvents keyed by alert id)."""
    from drift.core.alerts import encode
    from kafka_harness import produce

    produce(bootstrap, {"alerts": topic}, [("alerts", a.alert_id, encode(a, now)) for a in alerts] + list(extra))


def _sink(urls, registry=None, settings=None, **kw) -> AlertmanagerSink:
    """A sink with short intervals; no rebuild from the alert topic unless ``restore=True``."""
    kw.setdefault("resend_interval", 2.0)
    kw.setdefault("confirm_timeout", 10.0)
    kw.setdefault("grace_period", 0.5)
    kw.setdefault("backoff_cap", 0.5)
    kw.setdefault("restore", False)
    return AlertmanagerSink(settings or _settings(urls), registry or CollectorRegistry(), **kw)


# ------------------------------------------------------------------------------ mapping (no server)
def test_payload_mapping_labels_annotations_and_times():
    a = _alert(extra_labels={"judge.trust": "untrusted", "9lives": "x", "empty": ""},
               example_trace_ids=["t1", "t2"])
    now = 1_790_000_000.0  # 2026-09: after the alert's event time
    out = to_am_alert(a, now=now, resend_interval=60, runbook_url="https://runbooks.example/{rule}?app={app}",
                      generator_url="http://drift:9308/metrics?alert={alert_id}")
    assert out["labels"] == {"alertname": "quality_drop", "severity": "warning", "stream": "scores",
                             "app": "support-bot", "intent": "billing", "dimension": "format",
                             "judge_trust": "untrusted", "_9lives": "x"}
    ann = out["annotations"]
    assert ann["summary"] == a.summary and ann["first_action"] == a.first_action
    assert ann["alert_id"] == a.alert_id
    assert ann["suspected_cause"] == "prompt_hash_change: ab12 → cd34 at 2026-01-16T10:00:00.000Z"
    assert ann["runbook_url"] == "https://runbooks.example/quality_drop?app=support-bot"
    assert "0.84 over 1,840 samples" in ann["description"] and "baseline" in ann["description"]
    assert "pct_drop = 0.077 (threshold 0.05, p = 1.2e-09)" in ann["description"]
    assert ann["example_trace_ids"] == "t1, t2"
    assert out["startsAt"] == "2026-01-16T13:00:00.000Z"
    assert am_mod.parse_time(out["endsAt"]) == pytest.approx(now + 240)  # 4 x resend_interval
    assert out["generatorURL"] == f"http://drift:9308/metrics?alert={a.alert_id}"
    # no template: no runbook_url annotation, no generatorURL
    plain = to_am_alert(a, now=now, resend_interval=30)
    assert "runbook_url" not in plain["annotations"] and "generatorURL" not in plain
    assert am_mod.parse_time(plain["endsAt"]) == pytest.approx(now + 120)
    # resolved: endsAt is the alert's ends_at
    r = to_am_alert(_alert(status="resolved", ends_at="2026-01-20T08:00:00.000Z", alert_id=a.alert_id),
                    now=now, resend_interval=60)
    assert r["endsAt"] == "2026-01-20T08:00:00.000Z" and r["startsAt"] == "2026-01-16T13:00:00.000Z"


def test_no_per_episode_labels_and_future_times_are_clamped():
    first = _alert(alert_id="a" * 24, starts_at="2026-01-16T13:00:00.000Z")
    again = _alert(alert_id="b" * 24, starts_at="2026-02-01T00:00:00.000Z")  # another episode
    now = 1_790_000_000.0
    l1 = to_am_alert(first, now=now, resend_interval=60)["labels"]
    assert l1 == to_am_alert(again, now=now, resend_interval=60)["labels"]
    assert not any(v in ("a" * 24, first.starts_at) for v in l1.values())
    # event time ahead of the wall clock (simulated future data): clamped, so Alertmanager
    # accepts it (startsAt <= endsAt) and a resolved alert is resolved there
    early = 1_700_000_000.0
    f = to_am_alert(first, now=early, resend_interval=60)
    assert am_mod.parse_time(f["startsAt"]) == early
    r = to_am_alert(_alert(status="resolved", ends_at="2026-01-20T08:00:00.000Z"), now=early, resend_interval=60)
    assert am_mod.parse_time(r["endsAt"]) == early and am_mod.parse_time(r["startsAt"]) <= early


def test_info_events_are_not_sent_and_module_doctest():
    sink = _sink(["http://127.0.0.1:9"], confirm_timeout=0.2)
    try:
        sink.emit([_alert(status="info")])
        assert sink.active() == [] and sink.confirm() is True
    finally:
        sink.close()
    assert doctest.testmod(am_mod, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_settings_layering_validation_and_redaction(tmp_path):
    s = load_settings(env={"DRIFT_ALERTMANAGER_URLS": "http://am-0:9093/, http://am-1:9093"})
    assert s.alertmanager["urls"] == ["http://am-0:9093", "http://am-1:9093"]
    toml = tmp_path / "drift.toml"
    toml.write_text('[alertmanager]\nurls = ["http://toml:9093"]\nresend_interval = "2m"\n'
                    'runbook_url = "https://runbooks.example/{rule}"\npassword = "hunter2"\nusername = "u"\n')
    s = load_settings(str(toml), env={"DRIFT_ALERTMANAGER_RESEND_INTERVAL": "45s"},
                      overrides={"alertmanager": {"urls": ["http://flag:9093"]}})
    assert s.alertmanager["urls"] == ["http://flag:9093"] and s.alertmanager["resend_interval"] == 45.0
    shown = json.dumps(s.describe()) + repr(s)
    assert "hunter2" not in shown and s.describe()["alertmanager"]["password"] == "***"
    s = load_settings(env={"DRIFT_ALERTMANAGER_URLS": "http://u:s3cret@am:9093",
                           "DRIFT_ALERTMANAGER_BEARER_TOKEN": "tok-xyz"})
    assert "s3cret" not in json.dumps(s.describe()) and "tok-xyz" not in json.dumps(s.describe())
    assert "alertmanager" not in load_settings().describe()  # the default view is unchanged
    bad = {"resend_interval": "10s", "urls": "ftp://x", "runbook_url": "https://r/{nope}", "timeout": "0s",
           "ca_file": str(tmp_path / "missing.pem"), "insecure_skip_verify": "maybe", "colour": "red"}
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=f"alertmanager.{key}"):
            load_settings(overrides={"alertmanager": {key: value}})
    with pytest.raises(ConfigError, match="alertmanager.password: needs alertmanager.username"):
        load_settings(env={"DRIFT_ALERTMANAGER_PASSWORD": "pw"})
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"DRIFT_ALERTMANAGER_BEARER_TOKEN": "tok-xyz", "DRIFT_ALERTMANAGER_USERNAME": "u"})
    assert "tok-xyz" not in str(exc.value)


def test_auth_headers_reach_the_server_and_are_not_logged(webhook, caplog):
    """Basic and bearer auth go in the Authorization header; an error log names the URL without secrets."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401 if len(seen) == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://bob:pa55word@127.0.0.1:{srv.server_address[1]}"
    sink = AlertmanagerSink(_settings([url]), CollectorRegistry(), resend_interval=5, backoff_cap=0.2, restore=False)
    try:
        with caplog.at_level("WARNING", logger="drift.alertmanager"):
            sink.emit([_alert()])
            assert sink.confirm(timeout=10)
        assert seen[0] == "Basic Ym9iOnBhNTV3b3Jk"  # base64("bob:pa55word")
        text = caplog.text + json.dumps([r.__dict__.get("errors") for r in caplog.records])
        assert "HTTP 401" in text and "pa55word" not in text and "bob:***@" in text
    finally:
        sink.close()
    s = _settings([f"http://127.0.0.1:{srv.server_address[1]}"], bearer_token="tok-abc")
    sink = AlertmanagerSink(s, CollectorRegistry(), restore=False)
    try:
        sink.emit([_alert()])
        assert sink.confirm(timeout=10)
        assert seen[-1] == "Bearer tok-abc"
    finally:
        sink.close()
        srv.shutdown()
        srv.server_close()


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _test_pki(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256,
    two days), made with the ``openssl`` CLI or else the ``cryptography`` package:
    ``{"ca", "server", "server_key", "client", "client_key"}`` (PEM files in ``d``)."""
    out = {k: d / f"{k}.pem" for k in ("ca", "ca_key", "server", "server_key", "client", "client_key")}
    openssl = shutil.which("openssl")
    if openssl:
        cnf = d / "openssl.cnf"
        cnf.write_text(_OPENSSL_CNF)
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)  # noqa: E731
        run("req", "-x509", "-config", cnf, "-extensions", "ca", *key, "-keyout", out["ca_key"], "-out", out["ca"],
            "-days", "2", "-subj", "/CN=drift test CA")
        for name, cn in (("server", "127.0.0.1"), ("client", "drift-client")):
            csr = d / f"{name}.csr"
            run("req", "-new", "-config", cnf, *key, "-keyout", out[f"{name}_key"], "-out", csr, "-subj", f"/CN={cn}")
            run("x509", "-req", "-in", csr, "-CA", out["ca"], "-CAkey", out["ca_key"], "-set_serial",
                str(uuid.uuid4().int >> 64), "-days", "2", "-extfile", cnf, "-extensions", name, "-out", out[name])
        return out
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        pytest.skip("no `openssl` CLI and no `cryptography` package to make a test certificate: "
                    "apt-get install openssl (or pip install cryptography)")
    import datetime
    import ipaddress

    now = datetime.datetime.now(datetime.UTC)

    def make(cn, issuer=None, issuer_key=None, ca=False, usage=None):
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False))
        if issuer_key is not None:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        if usage == "server":
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        elif usage == "client":
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return k, name, b.sign(issuer_key or k, hashes.SHA256())

    def write(stem, k, cert):
        out[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{stem}_key"].write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))

    ca_key, ca_name, ca_cert = make("drift test CA", ca=True)
    write("ca", ca_key, ca_cert)
    for stem, cn in (("server", "127.0.0.1"), ("client", "drift-client")):
        k, _, cert = make(cn, ca_name, ca_key, usage=stem)
        write(stem, k, cert)
    return out


def test_https_verification_ca_file_insecure_skip_verify_and_client_certificate(tmp_path):
    """The sink's TLS settings against an HTTPS ``POST /api/v2/alerts`` on loopback (a certificate
    of a throwaway CA, for 127.0.0.1; client certificates asked for, not required): without the
    CA the post fails verification (CERTIFICATE_VERIFY_FAILED in last_error and, past the grace
    period, in the readiness reason), nothing reaches the server and confirm() is False; with
    ``ca_file`` it is delivered; with ``insecure_skip_verify`` too (no CA); with
    ``cert_file``/``key_file`` and a ``bearer_token`` the server sees the client certificate and
    the token, and the settings dump shows the token as ``***``."""
    import ssl

    pki = _test_pki(tmp_path)
    seen: list[tuple[str, str | None, int]] = []  # (Authorization, client certificate CN, alerts)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            alerts = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            peer = self.connection.getpeercert()
            cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
            seen.append((self.headers.get("Authorization", ""), cn, len(alerts)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server"], pki["server_key"])
    ctx.load_verify_locations(pki["ca"])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"

    def deliver(**tls) -> tuple[bool, AlertmanagerSink]:
        sink = _sink([url], settings=_settings([url], **tls), confirm_timeout=1.0)
        try:
            sink.emit([_alert()])
            return sink.confirm(timeout=10 if tls else 1.0), sink
        finally:
            if tls:
                sink.close()

    try:
        ok, sink = deliver()  # the system CAs only: the throwaway CA is not among them
        try:
            assert ok is False and seen == []
            assert "CERTIFICATE_VERIFY_FAILED" in sink.last_error and url in sink.last_error
            time.sleep(0.6)  # past the grace period (0.5 s): readiness says why
            assert "CERTIFICATE_VERIFY_FAILED" in (sink.problem() or "")
        finally:
            sink.close()
        assert deliver(ca_file=str(pki["ca"]))[0] is True
        assert seen[-1] == ("", None, 1)
        assert deliver(insecure_skip_verify=True)[0] is True
        assert seen[-1] == ("", None, 1)
        tls = {"ca_file": str(pki["ca"]), "cert_file": str(pki["client"]), "key_file": str(pki["client_key"]),
               "bearer_token": "tok-tls-7"}
        assert deliver(**tls)[0] is True
        assert seen[-1] == ("Bearer tok-tls-7", "drift-client", 1)
        shown = _settings([url], **tls).describe()["alertmanager"]
        assert shown["bearer_token"] == "***" and "tok-tls-7" not in json.dumps(shown)
        assert shown["cert_file"] == str(pki["client"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_permanent_rejection_counts_as_delivered_and_outages_are_retried(caplog):
    """A 400 refuses the alert itself: logged with the alert and the (truncated) answer, counted,
    delivered for the commit order and not re-sent; 503, 429 and 401 are outages: retried."""
    mode = ["ok"]

    def answer(alerts):
        if mode[0] != "ok":
            return int(mode[0]), "try again later"
        if any(a["labels"]["app"] == "bad" for a in alerts):  # as Alertmanager: the valid ones are kept
            return 400, "{\"error\": \"invalid alert: " + "x" * 1000 + "\"}"
        return 200, ""

    srv = Answering(answer)
    registry = CollectorRegistry()
    sink = _sink([srv.url], registry, resend_interval=1.0, confirm_timeout=5.0)
    good, bad = _alert(app="good"), _alert(app="bad")
    try:
        with caplog.at_level("ERROR", logger="drift.alertmanager"):
            sink.emit([good, bad])
            assert sink.confirm() is True
        assert registry.get_sample_value("drift_alertmanager_rejected_total", {"url": srv.url}) == 1
        (err,) = [r for r in caplog.records if r.levelname == "ERROR"]
        assert err.alert_id == bad.alert_id and err.rule == "quality_drop" and err.labels["app"] == "bad"
        assert err.response.startswith('HTTP 400 {"error": "invalid alert: xxx') and len(err.response) <= 300
        assert registry.get_sample_value("drift_alertmanager_pending") == 0 and sink.problem() is None
        # the refused alert is not re-sent; the accepted one is, every resend_interval
        n = len(srv.posts)
        deadline = time.monotonic() + 10
        while len(srv.posts) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [[a["labels"]["app"] for a in post] for post in srv.posts[n:]][:2] == [["good"], ["good"]]
        assert [a["labels"]["app"] for a in sink.active()] == ["good"]
        # 5xx, 429 and 401 (credentials: every alert is refused) are outages, retried with backoff
        for code in ("503", "429", "401"):
            mode[0] = code
            sink.emit([_alert(app=f"during-{code}")])
            assert sink.confirm(timeout=1.0) is False
        assert registry.get_sample_value("drift_alertmanager_rejected_total", {"url": srv.url}) == 1
        assert registry.get_sample_value("drift_alertmanager_sent_total",
                                         {"url": srv.url, "result": "http_error"}) >= 3
        assert registry.get_sample_value("drift_alertmanager_pending") == 3
        mode[0] = "ok"
        assert sink.confirm(timeout=10) is True
        assert registry.get_sample_value("drift_alertmanager_rejected_total", {"url": srv.url}) == 1
    finally:
        sink.close()
        srv.close()


def test_an_alert_emitted_while_a_round_is_posting_goes_at_once_not_at_the_resend():
    """A change that arrives while a post is in flight is sent as soon as that post returns, not a
    resend interval later (the live demo's last alert waited 60 s for it and timed out)."""
    started = threading.Event()

    def answer(alerts):
        started.set()
        time.sleep(0.5)  # a slow Alertmanager: the next alert arrives mid-post
        return 200, ""

    srv = Answering(answer)
    sink = _sink([srv.url], CollectorRegistry(), resend_interval=60.0, confirm_timeout=5.0)
    try:
        sink.emit([_alert(app="first")])
        assert started.wait(5)
        sink.emit([_alert(app="second")])
        t0 = time.monotonic()
        assert sink.confirm(timeout=5.0) is True
        assert time.monotonic() - t0 < 5.0
        assert {a["labels"]["app"] for post in srv.posts for a in post} == {"first", "second"}
    finally:
        sink.close()
        srv.close()


# ------------------------------------------------------------------------------ a real Alertmanager
def test_firing_and_resolved_reach_the_webhook(alertmanager, webhook):
    am = alertmanager()
    registry = CollectorRegistry()
    sink = _sink([am.url], registry)
    try:
        a = _alert(extra_labels={"judge": "untrusted"})
        sink.emit([a])
        assert sink.confirm() is True
        webhook.wait(lambda: webhook.alerts("firing", alertname="quality_drop"), what="the firing notification")
        got = webhook.alerts("firing", alertname="quality_drop")[0]
        assert got["labels"] == {"alertname": "quality_drop", "severity": "warning", "stream": "scores",
                                 "app": "support-bot", "intent": "billing", "dimension": "format",
                                 "judge": "untrusted"}
        assert got["annotations"]["alert_id"] == a.alert_id
        assert got["annotations"]["suspected_cause"].startswith("prompt_hash_change")
        assert got["startsAt"].startswith("2026-01-16T13:00:00")
        # the engine marks a quality alert raised while its judge is distrusted (judge = untrusted)
        # but not its resolution: the sink resolves the label set it sent, or Alertmanager would
        # keep the firing one open
        sink.emit([_alert(status="resolved", alert_id=a.alert_id, ends_at="2026-01-20T08:00:00.000Z")])
        assert sink.confirm() is True
        webhook.wait(lambda: webhook.alerts("resolved", alertname="quality_drop"), what="the resolved notification")
        res = webhook.alerts("resolved", alertname="quality_drop")[0]
        assert res["status"] == "resolved" and res["endsAt"].startswith("2026-01-20T08:00:00")
        assert res["labels"] == got["labels"]
        assert registry.get_sample_value("drift_alertmanager_sent_total",
                                         {"url": am.url, "result": "success"}) >= 2
        assert registry.get_sample_value("drift_alertmanager_pending") == 0
        assert registry.get_sample_value("drift_alertmanager_last_success_timestamp_seconds") > time.time() - 60
    finally:
        sink.close()


def test_outage_confirm_false_then_everything_arrives(alertmanager, webhook):
    am = alertmanager()
    registry = CollectorRegistry()
    health = Health()
    health.set_ready(True, "ok")
    sink = _sink([am.url], registry, confirm_timeout=1.0)
    health.checks.append(sink.problem)
    try:
        sink.emit([_alert(app="before")])
        assert sink.confirm() is True
        webhook.wait(lambda: webhook.alerts("firing", app="before"), what="the alert before the outage")
        am.stop()
        during = [_alert(app="during", intent=f"i{i}") for i in range(3)]
        sink.emit(during)
        t0 = time.monotonic()
        assert sink.confirm() is False  # no crash, no endless wait: the commit order skips a turn
        assert time.monotonic() - t0 < 3
        assert sink.confirm() is False
        assert registry.get_sample_value("drift_alertmanager_pending") == 3
        assert registry.get_sample_value("drift_alertmanager_sent_total",
                                         {"url": am.url, "result": "connection_error"}) >= 3
        ok, why = health.readiness()
        assert not ok and why.startswith("alertmanager unavailable: 3 alert(s)") and am.url in why
        am.start()
        assert sink.confirm(timeout=15) is True
        webhook.wait(lambda: len({a["labels"]["intent"] for a in webhook.alerts("firing", app="during")}) == 3,
                     what="the alerts emitted during the outage")
        assert registry.get_sample_value("drift_alertmanager_pending") == 0
        assert health.readiness() == (True, "ok")
    finally:
        sink.close()


def test_two_instances_one_notification(alertmanager, webhook):
    """Two drift instances (or a repeat after a crash) send the same alert: same label set, so
    Alertmanager keeps one alert and the receiver gets ONE notification."""
    am = alertmanager()
    a = _alert(rule="format_failure_spike", dimension="format_valid")
    sinks = [_sink([am.url]), _sink([am.url])]
    try:
        for s in sinks:
            s.emit([a])
        for s in sinks:
            assert s.confirm() is True
        webhook.wait(lambda: webhook.alerts("firing", alertname="format_failure_spike"), what="the notification")
        time.sleep(4)  # two group_intervals and a resend from each instance: no second notification
        got = webhook.alerts(alertname="format_failure_spike")
        assert len(got) == 1 and len(webhook.notifications) == 1
    finally:
        for s in sinks:
            s.close()


def test_ha_pair_success_when_one_accepts(alertmanager, webhook):
    """Every URL is sent to; one URL down does not hold confirm() up."""
    am = alertmanager()
    dead = f"http://127.0.0.1:{free_port()}"
    registry = CollectorRegistry()
    sink = _sink([dead, am.url], registry)
    try:
        sink.emit([_alert(app="ha")])
        assert sink.confirm() is True
        webhook.wait(lambda: webhook.alerts("firing", app="ha"))
        assert registry.get_sample_value("drift_alertmanager_sent_total",
                                         {"url": dead, "result": "connection_error"}) >= 1
        assert sink.problem() is None
    finally:
        sink.close()


# ------------------------------------------------------------------------------ through drift serve
def _serve_topics(topic_factory):
    return {"scores": topic_factory(1, "scores"), "retrieval": topic_factory(1, "retrieval"),
            "queries": topic_factory(1, "queries"), "labels": topic_factory(1, "labels"),
            "feedback": topic_factory(1, "feedback"), "alerts": topic_factory(1, "alerts"),
            "dlq": topic_factory(1, "dlq"), "state": topic_factory(1, "state")}


@pytest.fixture(scope="module")
def format_rollback(format_events):
    """The continuation of ``format_events``: four days (from 2026-01-17) of the same series with
    the payments template rolled back (the old prompt_hash, format_valid pass rate 0.97 again;
    the base traffic of ``stable``). With the offline engine, the format_failure_spike of
    ``format_events`` resolves in it: ``(events, firing alert, resolved alert)`` (the data of
    each, as on the alert topic)."""
    import msgspec

    from drift.tools.simulate import iter_events, simulate
    from scenario_harness import run_lines

    sim = simulate("stable", seed=0, days=4, start="2026-01-17T00:00:00Z")
    events = [e for e in iter_events(sim) if e.get("app") == "support-bot" and e.get("intent") == "billing"
              and e.get("dimension") == "format_valid"]
    assert events[0]["prompt_hash"] == format_events[0]["prompt_hash"] != format_events[-1]["prompt_hash"]
    enc = msgspec.json.Encoder()
    alerts, rejected, _ = run_lines([enc.encode(e) for e in format_events + events])
    assert rejected == []
    spikes = [a["data"] for a in alerts if a["data"]["rule"] == "format_failure_spike"]
    assert [d["status"] for d in spikes] == ["firing", "resolved"], spikes
    assert spikes[0]["alert_id"] == spikes[1]["alert_id"] and spikes[1]["ends_at"] < events[-1]["ts"]
    return events, spikes[0], spikes[1]


@pytest.mark.kafka
def test_drift_serve_fires_and_resolves_through_alertmanager_across_its_restart(
        broker, topic_factory, alertmanager, webhook, format_events, format_rollback):
    """Issue 16, end to end: `drift serve` reads 12 days of prompt_cleanup (support-bot/billing
    format_valid) and its format_failure_spike reaches the webhook through Alertmanager's routing
    with the series' labels and the annotations (alert_id, runbook_url). Alertmanager is then
    stopped, and the stream goes on while it is down: four days with the template rolled back,
    in which the episode resolves (the engine's own resolution, not a reset). drift serve holds
    the resolution (pending) until Alertmanager is back (same port and storage), and then the
    receiver gets it: same labels and alert_id, endsAt = the engine's ends_at. Across the restart
    nothing is lost and nothing is repeated: ONE firing and ONE resolved notification for the
    label set, and Alertmanager holds no active alert."""
    from collections import Counter

    from kafka_harness import ServeProcess, messages_of, produce, read_topic

    rollback, fired, resolved = format_rollback
    am = alertmanager()
    topics = _serve_topics(topic_factory)
    n = produce(broker.bootstrap, topics, messages_of(format_events, max_batch=200))
    svc = ServeProcess(broker.bootstrap, f"g-{uuid.uuid4().hex[:6]}", topics,
                       {"DRIFT_ALERTMANAGER_URLS": am.url,
                        "DRIFT_ALERTMANAGER_RUNBOOK_URL": "https://runbooks.example/{rule}"})
    labels = {"alertname": "format_failure_spike", "severity": "warning", "stream": "scores",
              "app": "support-bot", "intent": "billing", "dimension": "format_valid"}
    pending = "drift_alertmanager_pending"
    try:
        webhook.wait(lambda: webhook.alerts("firing", alertname="format_failure_spike"), timeout=60,
                     what="format_failure_spike via Alertmanager")
        got = webhook.alerts("firing", alertname="format_failure_spike")[0]
        assert got["labels"] == labels
        assert got["annotations"]["alert_id"] == fired["alert_id"]
        assert got["annotations"]["runbook_url"] == "https://runbooks.example/format_failure_spike"
        assert got["startsAt"].startswith(fired["starts_at"][:19])
        success = 'drift_alertmanager_sent_total{result="success",url="' + am.url + '"}'
        svc.wait_for(lambda: svc.metric(success) >= 1, 20, "the success metric")
        assert svc.get("/readyz")[0] == 200

        # Alertmanager goes down (SIGTERM: it writes its notification log to its storage, which
        # remembers the firing notification; a resolution of a group it never notified is not
        # sent); the stream goes on, and the episode resolves meanwhile
        am.stop()
        n += produce(broker.bootstrap, topics, messages_of(rollback, max_batch=200, seed=1))
        svc.wait_consumed(n, timeout=60)

        def on_topic() -> list[dict]:
            return [d for d in (json.loads(r.value)["data"] for r in read_topic(broker.bootstrap, topics["alerts"]))
                    if d["rule"] == "format_failure_spike"]

        svc.wait_for(lambda: [d["status"] for d in on_topic()] == ["firing", "resolved"], 30,
                     "the resolution on the alert topic")
        assert on_topic()[1]["alert_id"] == fired["alert_id"] and on_topic()[1]["ends_at"] == resolved["ends_at"]
        svc.wait_for(lambda: svc.metric(pending) >= 1, 20, "the resolution held as pending")
        assert webhook.alerts("resolved") == []

        am.start()
        webhook.wait(lambda: webhook.alerts("resolved", alertname="format_failure_spike"), timeout=30,
                     what="the resolution after Alertmanager's restart")
        res = webhook.alerts("resolved", alertname="format_failure_spike")[0]
        assert res["labels"] == labels and res["annotations"]["alert_id"] == fired["alert_id"]
        assert res["endsAt"].startswith(resolved["ends_at"][:19])
        svc.wait_for(lambda: svc.metric(pending) == 0, 20, "nothing pending")
        time.sleep(3)  # group_wait + group_interval, and more: a repeat would be here
        per_label_set = Counter((n["status"], json.dumps(a["labels"], sort_keys=True))
                                for n in webhook.notifications for a in n["alerts"])
        key = json.dumps(labels, sort_keys=True)
        assert per_label_set == {("firing", key): 1, ("resolved", key): 1}, webhook.notifications
        assert len(webhook.notifications) == 2
        assert _am_alerts(am, alertname="format_failure_spike") == []
        assert svc.get("/readyz")[0] == 200
    finally:
        assert svc.stop() == 0


@pytest.mark.kafka
def test_drift_serve_alertmanager_outage_holds_offsets_then_delivers(broker, topic_factory, alertmanager, webhook,
                                                                     format_events):
    """Alertmanager down: drift serve keeps running, /readyz says why, offsets stay behind the
    alert; once it is back the alert arrives and the offsets move."""
    from kafka import TopicPartition

    from kafka_harness import ServeProcess, messages_of, produce, read_topic

    am = alertmanager()
    am.stop()
    topics = _serve_topics(topic_factory)
    msgs = messages_of(format_events, max_batch=200)
    produce(broker.bootstrap, topics, msgs)
    group = f"g-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topics["scores"], 0)
    svc = ServeProcess(broker.bootstrap, group, topics,
                       {"DRIFT_ALERTMANAGER_URLS": am.url, "DRIFT_ALERTMANAGER_CONFIRM_TIMEOUT": "0.5s",
                        "DRIFT_ALERTMANAGER_GRACE_PERIOD": "1s"})
    try:
        svc.wait_consumed(len(msgs), timeout=40)
        assert read_topic(broker.bootstrap, topics["alerts"])  # the alert topic got it
        svc.wait_for(lambda: "alertmanager unavailable" in svc.get("/readyz")[1], 20, "/readyz to report the outage")
        assert svc.get("/readyz")[0] == 503
        assert svc.metric("drift_alertmanager_pending") >= 1
        # a checkpoint may have run before the alert fired (a slow machine); none after it: the
        # committed offset stays behind the end of the input while the alert is undelivered
        assert (committed(broker.bootstrap, group, tp) or 0) < len(msgs)
        am.start()
        webhook.wait(lambda: webhook.alerts("firing", alertname="format_failure_spike"), timeout=30,
                     what="the alert after the outage")
        svc.wait_for(lambda: committed(broker.bootstrap, group, tp) == len(msgs), 30, "offsets committed after the outage")
        svc.wait_for(lambda: svc.get("/readyz")[0] == 200, 20, "ready again")
    finally:
        assert svc.stop() == 0


@pytest.mark.kafka
def test_drift_forward_follows_the_alert_topic(broker, topic_factory, alertmanager, webhook):
    from kafka import TopicPartition

    from drift.runtime.alertmanager import forward

    am = alertmanager()
    topic = topic_factory(1, "alerts")
    a = _alert(app="forwarded")
    _to_topic(broker.bootstrap, topic, [a])
    settings = load_settings(overrides={"kafka": {"bootstrap_servers": broker.bootstrap},
                                        "topics": {"alerts": topic}, "alertmanager": {"urls": [am.url]}})
    group = f"fwd-{uuid.uuid4().hex[:6]}"
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        forward(settings, group_id=group, from_beginning=True, stop=stop.is_set, registry=CollectorRegistry(),
                session_timeout_ms=6000)))
    t.start()
    try:
        webhook.wait(lambda: webhook.alerts("firing", app="forwarded"), timeout=30, what="the forwarded alert")
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + 20
        while committed(broker.bootstrap, group, tp) != 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert committed(broker.bootstrap, group, tp) == 1
    finally:
        stop.set()
        t.join(30)
    assert result == [0]


def _resolved(a: Alert, ends_at="2026-01-20T08:00:00.000Z", **kw) -> Alert:
    import msgspec

    return msgspec.structs.replace(a, status="resolved", ends_at=ends_at, **kw)


@pytest.mark.kafka
def test_restart_rebuilds_the_active_alerts_from_the_alert_topic(broker, topic_factory, alertmanager, webhook):
    """A restarted sink re-sends what is still firing on the alert topic (and resolutions of the
    last 15 minutes): Alertmanager keeps the alert past the endsAt the stopped process gave it,
    no resolution is sent; the episode's resolution on the topic then reaches the receiver."""

    am = alertmanager()
    topic = topic_factory(1, "alerts")
    settings = load_settings(overrides={"kafka": {"bootstrap_servers": broker.bootstrap}, "topics": {"alerts": topic},
                                        "alertmanager": {"urls": [am.url]}})
    now = time.time()
    fired = _alert(app="restart")
    ended = _alert(app="ended")          # resolved a minute ago: re-sent as resolved for the rest of 15 min
    old = _alert(app="old")              # resolved an hour ago: over
    records = [fired, ended, old, _alert(app="info", status="info"),
               _resolved(ended, time=now - 60), _resolved(old, time=now - 3600)]
    _to_topic(broker.bootstrap, topic, records, now - 120, extra=[("alerts", "x", b"not a CloudEvent")])
    # the process before the restart: it sent the alert with endsAt = its last post + 6 s
    before = _sink([am.url], resend_interval=1.5)
    before.emit([fired])
    assert before.confirm() is True
    webhook.wait(lambda: webhook.alerts("firing", app="restart"), what="the firing notification")
    before.close()
    stopped = time.time()
    (held,) = _am_alerts(am, app="restart")
    first_ends = am_mod.parse_time(held["endsAt"])
    assert first_ends <= stopped + 6.5

    after = _sink([am.url], settings=settings, resend_interval=2.0, restore=True)
    try:
        deadline = time.monotonic() + 30
        while after.restored is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert after.restored == {"firing": 1, "resolved": 1, "records": 7, "live": 0}
        active = {a["labels"]["app"]: a for a in after.active()}
        assert set(active) == {"restart", "ended"}
        assert active["ended"]["endsAt"] == "2026-01-20T08:00:00.000Z"
        assert after.confirm() is True
        time.sleep(max(0.0, first_ends + 2 - time.time()))  # past the endsAt the stopped process gave it
        (held,) = _am_alerts(am, app="restart")
        assert held["status"]["state"] == "active" and am_mod.parse_time(held["endsAt"]) > first_ends
        assert held["annotations"]["alert_id"] == fired.alert_id
        assert webhook.alerts("resolved", app="restart") == []
        # the episode ends (written by whichever instance holds the series): the resolution arrives
        _to_topic(broker.bootstrap, topic, [_resolved(fired)])
        webhook.wait(lambda: webhook.alerts("resolved", app="restart"), what="the resolution")
        assert webhook.alerts("resolved", app="restart")[0]["endsAt"].startswith("2026-01-20T08:00:00")
        assert _am_alerts(am, app="restart") == []
    finally:
        after.close()


@pytest.mark.kafka
def test_drift_serve_restart_keeps_firing_alerts_active(broker, topic_factory, alertmanager, webhook):
    """`drift serve` (re)started with an alert firing on llm.alerts re-sends it at start-up, so
    Alertmanager does not resolve it when the endsAt of the stopped process passes."""
    from drift.core.alerts import encode
    from kafka_harness import ServeProcess, produce

    am = alertmanager()
    topics = _serve_topics(topic_factory)
    a = _alert(app="serve-restart")
    produce(broker.bootstrap, topics, [("alerts", a.alert_id, encode(a))])
    before = _sink([am.url], resend_interval=1.5)  # the stopped process: endsAt = its last post + 6 s
    before.emit([a])
    assert before.confirm() is True
    before.close()
    (held,) = _am_alerts(am, app="serve-restart")
    first_ends = am_mod.parse_time(held["endsAt"])
    svc = ServeProcess(broker.bootstrap, f"g-{uuid.uuid4().hex[:6]}", topics, {"DRIFT_ALERTMANAGER_URLS": am.url})
    try:
        svc.wait_for(lambda: any(d.get("msg", "").startswith("rebuilt the active Alertmanager alerts")
                                 for d in svc.lines), 30, "the rebuild from llm.alerts")
        rebuilt = next(d for d in svc.lines if d.get("msg", "").startswith("rebuilt the active Alertmanager"))
        assert rebuilt["firing"] == 1 and rebuilt["topic"] == topics["alerts"]
        time.sleep(max(0.0, first_ends + 2 - time.time()))
        (held,) = _am_alerts(am, app="serve-restart")
        assert held["status"]["state"] == "active" and am_mod.parse_time(held["endsAt"]) > time.time() + 60
        webhook.wait(lambda: webhook.alerts("firing", app="serve-restart"), what="the firing notification")
        assert webhook.alerts("resolved", app="serve-restart") == []
    finally:
        assert svc.stop() == 0


@pytest.fixture(scope="module")
def truncation_events():
    """sales-assistant coherence over 14 days of truncation (half volume, ~7,400 events): two
    quality_drop alerts, one per intent, keys on different partitions of a 3-partition topic
    (``sales-assistant/demo`` on 0, ``sales-assistant/pricing`` on 2), both still firing at the end;
    with the offline engine's firing alerts (``alert_id -> labels``)."""
    import msgspec

    from drift.tools.simulate import iter_events, simulate
    from scenario_harness import run_lines

    sim = simulate("truncation", seed=0, days=14, volume=0.5)
    events = [e for e in iter_events(sim) if e.get("app") == "sales-assistant" and e.get("dimension") == "coherence"]
    enc = msgspec.json.Encoder()
    alerts, rejected, _ = run_lines([enc.encode(e) for e in events])
    assert rejected == []
    firing = {a["data"]["alert_id"]: a["data"]["labels"] for a in alerts if a["data"]["status"] == "firing"}
    assert all(a["data"]["status"] == "firing" for a in alerts)  # no resolution: one episode each
    return events, firing


def _last_assignment(svc, topic: str) -> set[int]:
    """The partitions of ``topic`` in the last assignment `drift serve` logged."""
    last = max((i for i, d in enumerate(svc.lines) if d.get("msg") == "partitions revoked"), default=-1)
    return {int(d["partition"].rsplit("/", 1)[1]) for d in svc.lines[last + 1:]
            if d.get("msg") in ("no state: reading from the beginning", "state restored")
            and d["partition"].rsplit("/", 1)[0] == topic}


@pytest.mark.kafka
def test_two_serve_instances_and_a_crash_repeat_page_once(broker, topic_factory, alertmanager, webhook,
                                                          truncation_events):
    """Issue 16: two `drift serve` instances split the partitions and both send alerts to the
    same Alertmanager; one is SIGKILLed after its alerts went out but before any checkpoint (its
    state and offsets never moved), so its replacement re-reads that input and emits the same
    alerts again (the alert topic holds them twice). Alertmanager sees the same label sets and
    the receiver gets exactly ONE firing notification per alert. (The fixture's repeat_interval
    is 1 h, far past this test: a second notification could only come from a label set that
    differs between the sends.)"""
    from collections import Counter

    from kafka_harness import ServeProcess, messages_of, produce, read_topic, service_topics

    events, expected = truncation_events
    am = alertmanager()
    topics = service_topics(topic_factory)
    group = f"g-{uuid.uuid4().hex[:6]}"
    env = {"DRIFT_ALERTMANAGER_URLS": am.url}
    # a never checkpoints by itself (1 h): what it emits is not covered by state or offsets
    a = ServeProcess(broker.bootstrap, group, topics, {**env, "DRIFT_SERVICE_CHECKPOINT_INTERVAL": "1h"})
    procs = [a]
    held = lambda s: s.metric("drift_assigned_partitions")  # noqa: E731
    try:
        a.wait_for(lambda: a.get("/readyz")[0] == 200, 60, "a ready")
        b = ServeProcess(broker.bootstrap, group, topics, env)
        procs.append(b)
        b.wait_for(lambda: held(a) > 0 and held(b) > 0 and held(a) + held(b) == 18, 90,
                   "partitions split between a and b")  # 5 inputs and the control topic, 3 partitions each
        msgs = messages_of(events, max_batch=200)
        produce(broker.bootstrap, topics, msgs)
        where = {r.key.decode(): r.partition for r in read_topic(broker.bootstrap, topics["scores"])}
        part_of = {i: where[f"{labels['app']}/{labels['intent']}"] for i, labels in expected.items()}
        mine_a = {i for i, p in part_of.items() if p in _last_assignment(a, topics["scores"])}
        mine_b = {i for i, p in part_of.items() if p in _last_assignment(b, topics["scores"])}
        assert mine_a and mine_b and mine_a | mine_b == set(expected), (part_of, mine_a, mine_b)

        def on_topic() -> Counter:
            return Counter(json.loads(r.value)["data"]["alert_id"]
                           for r in read_topic(broker.bootstrap, topics["alerts"])
                           if json.loads(r.value)["data"]["status"] == "firing")

        def notified() -> set[str]:
            return {x["annotations"]["alert_id"] for x in webhook.alerts("firing")}

        b.wait_for(lambda: held(a) + held(b) == 18 and a.metric("drift_messages_consumed_total")
                   + b.metric("drift_messages_consumed_total") >= len(msgs), 120, "every message consumed")
        b.wait_for(lambda: set(on_topic()) == set(expected), 60, "every alert on the alert topic")
        webhook.wait(lambda: notified() == set(expected), timeout=30, what="a notification for every alert")
        success = 'drift_alertmanager_sent_total{result="success",url="' + am.url + '"}'
        a.wait_for(lambda: a.metric(success) >= 1 and b.metric(success) >= 1, 20, "both instances posted")
        assert a.metric('drift_alerts_total{rule="quality_drop",status="firing"}') == len(mine_a)
        assert b.metric('drift_alerts_total{rule="quality_drop",status="firing"}') == len(mine_b)
        assert a.metric("drift_checkpoints_total") == 0  # nothing a emitted is covered by state/offsets
        assert all(n == 1 for n in on_topic().values())

        killed_at = time.time()
        assert a.kill() == -signal.SIGKILL
        c = ServeProcess(broker.bootstrap, group, topics, env)  # the replacement
        procs.append(c)
        # a's partitions have no state: read again from the beginning, a's alerts emitted again
        c.wait_for(lambda: all(on_topic()[i] >= 2 for i in mine_a), 120, "the repeat of a's alerts")
        c.wait_for(lambda: held(b) + held(c) == 18
                   and group_caught_up(broker.bootstrap, group, topics["scores"], set(where.values())),
                   120, "every input committed")

        def held_by_am(i: str) -> dict:
            labels = expected[i]
            (got,) = _am_alerts(am, alertname="quality_drop", app=labels["app"], intent=labels["intent"],
                                dimension=labels["dimension"])
            assert got["annotations"]["alert_id"] == i and got["status"]["state"] == "active"
            return got

        # Alertmanager got the repeats (posted after the crash) and holds one alert per label set
        c.wait_for(lambda: all(am_mod.parse_time(held_by_am(i)["updatedAt"]) > killed_at for i in expected), 30,
                   "every alert re-posted to Alertmanager after the crash")
        time.sleep(4)  # group_wait + group_interval, twice over: a second notification would be here
        firing = [n for n in webhook.notifications if n["status"] == "firing"]
        for i, labels in expected.items():
            with_id = [x for n in firing for x in n["alerts"] if x["annotations"]["alert_id"] == i]
            assert len(with_id) == 1, f"{i} ({labels}) notified {len(with_id)} times: {json.dumps(firing)[:3000]}"
            same = [n for n in firing if any(x["labels"] == with_id[0]["labels"] for x in n["alerts"])]
            assert len(same) == 1
        assert len(firing) == len(expected) and webhook.alerts("resolved") == []
        repeated = {i for i, n in on_topic().items() if n > 1}
        assert mine_a <= repeated <= set(expected)  # the repeat happened (same alert_id), yet one page each
    finally:
        # leave one at a time, each after the group settled (the embedded broker's rule)
        if a.proc.poll() is None:
            a.kill()
        live = [p for p in procs[1:] if p.proc.poll() is None]
        while live:
            assert live.pop().stop() == 0
            if live:
                live[-1].wait_for(lambda: held(live[-1]) == 18, 45, "the last one took over")


@pytest.mark.kafka
def test_drift_forward_resends_what_fired_before_it_started(broker, topic_factory, alertmanager, webhook):
    """A new forwarder group starts at the topic's end, yet the alert that was firing before it
    started reaches Alertmanager (the rebuild), and an alert resolved before does not fire."""
    from drift.runtime.alertmanager import forward

    am = alertmanager()
    topic = topic_factory(1, "alerts")
    a, gone = _alert(app="before-start"), _alert(app="gone-before-start")
    _to_topic(broker.bootstrap, topic, [a, gone, _resolved(gone)])
    settings = load_settings(overrides={"kafka": {"bootstrap_servers": broker.bootstrap},
                                        "topics": {"alerts": topic}, "alertmanager": {"urls": [am.url]}})
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        forward(settings, group_id=f"fwd-{uuid.uuid4().hex[:6]}", stop=stop.is_set, registry=CollectorRegistry(),
                session_timeout_ms=6000)))
    t.start()
    try:
        webhook.wait(lambda: webhook.alerts("firing", app="before-start"), timeout=30, what="the alert fired before")
        assert _am_alerts(am, app="gone-before-start") == []
        assert webhook.alerts(app="gone-before-start") == []
    finally:
        stop.set()
        t.join(30)
    assert result == [0]


def test_demo_delivers_its_alerts_to_alertmanager(alertmanager, webhook):
    """`drift demo --alertmanager URL`'s delivery on the demo's own alerts (those of `drift demo
    --offline`, seed 0; a full demo run takes minutes): every firing alert reaches the receiver
    with alertname = the rule and the series' app/intent/dimension labels; info events do not."""
    from drift.tools.demo import deliver_to_alertmanager

    am = alertmanager()
    events = [json.loads(line) for line in DEMO_ALERTS.read_text().splitlines()]
    firing = {(d["rule"], d["labels"].get("app"), d["labels"].get("intent"), d["labels"].get("dimension"))
              for d in (e["data"] for e in events) if d["status"] == "firing"}
    assert len(firing) >= 10
    registry = CollectorRegistry()
    assert deliver_to_alertmanager(_settings([am.url]), events, registry=registry) is True
    assert registry.get_sample_value("drift_alertmanager_pending") == 0

    def got():
        return {(a["labels"]["alertname"], a["labels"].get("app"), a["labels"].get("intent"),
                 a["labels"].get("dimension")) for a in webhook.alerts("firing")}

    webhook.wait(lambda: got() >= firing, timeout=30, what="every firing alert of the demo")
    assert got() == firing  # nothing else: the info events (prompt_change) stay out
    by_id = {a["annotations"]["alert_id"]: a for a in webhook.alerts("firing")}
    for d in (e["data"] for e in events if e["data"]["status"] == "firing"):
        assert by_id[d["alert_id"]]["labels"]["severity"] == d["severity"]


def test_cli_flags():
    from drift.cli import build_parser, main

    args = build_parser().parse_args(["serve", "--alertmanager", "http://a:9093", "--alertmanager", "http://b:9093"])
    assert args.alertmanager == ["http://a:9093", "http://b:9093"]
    assert build_parser().parse_args(["serve"]).alertmanager is None
    assert main(["forward"]) == 2  # no URL: a config error naming alertmanager.urls
    assert main(["forward", "--alertmanager", "ftp://x"]) == 2
    from drift.tools.demo import alertmanager_urls

    args = build_parser().parse_args(["demo", "--alertmanager", "http://a:9093,http://b:9093",
                                      "--alertmanager", "http://c:9093"])
    assert alertmanager_urls(args.alertmanager) == ["http://a:9093", "http://b:9093", "http://c:9093"]
    assert build_parser().parse_args(["demo"]).alertmanager is None
    assert main(["demo", "--alertmanager", "ftp://x"]) == 2  # checked before the demo's set-up
    assert "drift demo --alertmanager http://localhost:9093" in " ".join(build_parser()._subparsers._group_actions[0]
                                                                         .choices["demo"].format_help().split())


@pytest.mark.kafka
def test_drift_forward_cli_ctrl_c_is_clean(broker, topic_factory, alertmanager, webhook):
    import sys


    am = alertmanager()
    topic = topic_factory(1, "alerts")
    a = _alert(app="cli-forwarded")
    _to_topic(broker.bootstrap, topic, [a])
    env = {**os.environ, "DRIFT_TOPICS_ALERTS": topic, "PYTHONUNBUFFERED": "1",
           "DRIFT_SERVICE_SESSION_TIMEOUT_MS": "6000"}
    proc = subprocess.Popen([sys.executable, "-m", "drift.cli", "forward", "--alertmanager", am.url,
                             "--bootstrap-servers", broker.bootstrap, "--group-id", f"fwd-{uuid.uuid4().hex[:6]}",
                             "--from-beginning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        webhook.wait(lambda: webhook.alerts("firing", app="cli-forwarded"), timeout=30, what="the forwarded alert")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        err = proc.stderr.read().decode()
        assert '"msg": "stopped"' in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
