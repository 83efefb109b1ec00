"""``deploy/``: the Prometheus rules, configs and Grafana dashboard for monitoring ``drift serve``.

Static checks run Debian's ``promtool`` (package ``prometheus``) and ``amtool`` (package
``prometheus-alertmanager``) on the files. The live test starts a REAL Prometheus on loopback
(storage in tmp) scraping a ``drift serve`` started against the embedded broker, loads the rules
file, and runs every PromQL expression of the dashboard against it: each must return data.
Without the binaries these tests skip, saying how to install them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from http_harness import Webhook, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "drift-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "drift-rules.test.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "drift-dashboard.json"

INSTALL = "apt-get install prometheus, as `make test` does when it runs as root"
PROMETHEUS = os.environ.get("DRIFT_PROMETHEUS_BINARY", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("DRIFT_PROMTOOL_BINARY", "/usr/bin/promtool")
AMTOOL = os.environ.get("DRIFT_AMTOOL_BINARY", "/usr/bin/amtool")

# what Grafana substitutes before a query reaches Prometheus
GRAFANA_VARS = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m", "__range_s": "300",
                "__range_ms": "300000", "instance": ".*", "rule": ".*", "app": ".*", "intent": ".*"}


def _binary(path: str, name: str, install: str = INSTALL) -> str:
    found = path if os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed ({path}): {install}")
    return found


def _run(*cmd: str, stderr: bool = True) -> str:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout + (p.stderr if stderr else "")


def _exported_metrics() -> set[str]:
    """Every metric name the service's code registers (Counter/Gauge/Histogram first argument, and
    the GaugeMetricFamily of a custom collector)."""
    names: set[str] = set()
    for src in (ROOT / "drift" / "runtime").glob("*.py"):
        text = src.read_text()
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*\"(drift_\w+)\"", text):
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in doc["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in sub.get("targets", [])]
    return exprs


def _substitute(expr: str) -> str:
    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: GRAFANA_VARS[m.group(1) or m.group(2)], expr)
    assert "$" not in out, out
    return out


def _rules_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------ static checks
def test_files_use_only_metrics_the_service_exports():
    exported = _exported_metrics()
    assert {"drift_messages_consumed_total", "drift_alertmanager_pending", "drift_batch_seconds_bucket",
            "drift_series_value", "drift_alert_firing", "drift_series_dropped_total"} <= exported
    for where, exprs in (("rules", _rules_exprs()), ("dashboard", _dashboard_exprs())):
        used = {n for e in exprs for n in re.findall(r"\bdrift_\w+", e)}
        assert used and used <= exported, f"{where} uses metrics the service does not export: {used - exported}"


def test_dashboard_shape():
    doc = json.loads(DASHBOARD.read_text())
    assert 36 <= doc["schemaVersion"] <= 41
    assert "DS_PROMETHEUS" in {v["name"] for v in doc["templating"]["list"]}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in p["targets"]), p["title"]
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for word in ("up", "lag", "messages consumed", "events", "checkpoint", "dlq", "alerts emitted", "alertmanager",
                 "firing alerts", "current vs baseline"):
        assert word in titles, word
    # the quality panels filter by the variables they use
    names = {v["name"] for v in doc["templating"]["list"]}
    assert {"instance", "rule", "app", "intent"} <= names


def test_rules_labels_and_annotations():
    doc = yaml.safe_load(RULES.read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert {"DriftServiceDown", "DriftConsumerLagGrowing", "DriftCheckpointTooOld", "DriftDLQRateHigh",
            "DriftAlertmanagerPending", "DriftAlertmanagerDeliveryFailing"} <= {a["alert"] for a in alerts}
    for a in alerts:
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert {"summary", "description", "runbook_url"} <= set(a["annotations"]), a["alert"]
    # every alerting rule has a firing and a not-firing case in the promtool unit tests
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for a in alerts:
        mine = [c for c in cases if c["alertname"] == a["alert"]]
        assert any(c.get("exp_alerts") for c in mine) and any(not c.get("exp_alerts") for c in mine), a["alert"]


def test_promtool_check_and_unit_test_rules():
    promtool = _binary(PROMTOOL, "promtool")
    assert "SUCCESS" in _run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in _run(promtool, "test", "rules", str(RULE_TESTS))
    # prometheus.yml names its rules file relative to itself
    assert "SUCCESS: 1 rule files found" in _run(promtool, "check", "config", str(PROM_CONFIG))


def test_amtool_check_config_and_routing():
    amtool = _binary(AMTOOL, "amtool", "apt-get install prometheus-alertmanager, as `make test` does when it "
                     "runs as root")
    _run(amtool, "check-config", str(AM_CONFIG))
    route = [amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}"]
    assert _run(*route, "severity=critical", "app=a", "intent=b", stderr=False).split() == ["pager"]
    assert _run(*route, "severity=warning", "app=a", "intent=b", stderr=False).split() == ["chat"]


# ------------------------------------------------------------------------------ a real Prometheus
def _api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.kafka
def test_real_prometheus_scrapes_serve_loads_rules_and_answers_every_dashboard_query(
        broker, topic_factory, format_events, tmp_path):
    from kafka_harness import ServeProcess, messages_of, produce

    prometheus = _binary(PROMETHEUS, "prometheus")
    topics = {name: topic_factory(1, name) for name in
              ("scores", "retrieval", "queries", "labels", "feedback", "alerts", "dlq", "state")}
    msgs = messages_of(format_events, max_batch=200)
    msgs.append(("scores", "support-bot/billing", b"this is not JSON"))  # a DLQ record: drift_dlq_total moves
    # the first message alone: its batch makes the engine and its rules' detectors, which the series
    # gauges observe from the next batch on; the rest after it (its evaluations are observed)
    produce(broker.bootstrap, topics, msgs[:1])
    am = Webhook()  # accepts every POST /api/v2/alerts, so the drift_alertmanager_* metrics exist
    # series metrics on: the quality panels (drift_series_value); the feed's format_failure_spike fires
    # and stays firing (drift_alert_firing)
    svc = ServeProcess(broker.bootstrap, f"g-{uuid.uuid4().hex[:6]}", topics, {"DRIFT_ALERTMANAGER_URLS": am.base,
                                                                              "DRIFT_METRICS_SERIES": "true"})
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "drift", "static_configs": [{"targets": [f"127.0.0.1:{svc.port}"]}]}]}))
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)

    def prom_log() -> str:
        return (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]

    try:
        svc.wait_consumed(1, timeout=60)
        produce(broker.bootstrap, topics, msgs[1:])
        svc.wait_consumed(len(msgs), timeout=60)
        success = 'drift_alertmanager_sent_total{result="success",url="' + am.base + '"}'
        svc.wait_for(lambda: svc.metric("drift_alerts_total") >= 1 and svc.metric("drift_dlq_total") >= 1
                     and svc.metric(success) >= 1, 30,
                     "an alert, a DLQ record and an Alertmanager post")
        exprs = {e: _substitute(e) for e in _dashboard_exprs()}
        rule_names = {r.get("record") or r.get("alert")
                      for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
        deadline = time.monotonic() + 40
        empty, unhealthy = dict(exprs), set(rule_names)
        while (empty or unhealthy) and time.monotonic() < deadline:
            assert prom.poll() is None, f"prometheus exited ({prom.returncode}):\n{prom_log()}"
            try:
                for raw, q in list(empty.items()):
                    res = _api(port, "/api/v1/query", query=q)
                    assert res["status"] == "success", (q, res)
                    if res["data"]["result"]:
                        del empty[raw]
                groups = _api(port, "/api/v1/rules")["data"]["groups"]
                unhealthy = rule_names - {r["name"] for g in groups for r in g["rules"] if r["health"] == "ok"}
            except OSError:  # not listening yet
                pass
            time.sleep(0.5)
        assert not empty, f"dashboard queries with no data: {sorted(empty.values())}\n{prom_log()}"
        assert not unhealthy, f"rules not loaded or not healthy: {sorted(unhealthy)}\n{prom_log()}"
        up = _api(port, "/api/v1/query", query='up{job="drift"}')["data"]["result"]
        assert [r["value"][1] for r in up] == ["1"]
        firing = _api(port, "/api/v1/query", query='ALERTS{alertstate="firing", alertname="DriftServiceDown"}')
        assert firing["data"]["result"] == []
        # the quality gauges as Prometheus stored them: the firing series, and its current value
        # above its baseline (a failure-rate spike)
        quality = _api(port, "/api/v1/query", query='drift_alert_firing{rule="format_failure_spike"}')["data"]["result"]
        assert [({k: r["metric"][k] for k in ("app", "intent", "dimension", "severity")}, r["value"][1])
                for r in quality] == [({"app": "support-bot", "intent": "billing", "dimension": "format_valid",
                                        "severity": "warning"}, "1")]
        values = {r["metric"]["stat"]: float(r["value"][1]) for r in _api(
            port, "/api/v1/query", query='drift_series_value{rule="format_failure_spike"}')["data"]["result"]}
        assert set(values) == {"current", "baseline", "statistic"}
        assert values["current"] > 2 * values["baseline"] > 0 and values["statistic"] > 2, values
    finally:
        prom.terminate()
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(10)
        log.close()
        am.close()
        assert svc.stop() == 0
