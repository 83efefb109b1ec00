"""The `drift` command: replay, simulate, help, config errors."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from drift.cli import main

GOOD = {"ts": "2026-01-05T10:00:00Z", "app": "a", "intent": "i", "dimension": "relevance", "score": 0.8}


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "drift.cli", *args], input=stdin, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def cleanup_events(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    out = d / "pc.jsonl"
    assert main(["simulate", "prompt_cleanup", "--out", str(out), "--days", "16", "--batch", "50"]) == 0
    return out


def test_simulate_writes_events_and_truth(cleanup_events):
    truth = json.loads(cleanup_events.with_name("pc.truth.json").read_text())
    assert truth["scenario"] == "prompt_cleanup" and truth["changes"][0]["what"] == "prompt_hash_change"
    first = json.loads(cleanup_events.open().readline())
    assert isinstance(first, list) and len(first) == 50


def test_replay_prints_alerts_summary_and_writes_cloudevents(cleanup_events, tmp_path):
    out = tmp_path / "alerts.jsonl"
    r = run_cli("replay", str(cleanup_events), "--out", str(out))
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert "FIRING" in text and "format_failure_spike/support-bot/billing/format_valid" in text
    assert "suspected cause: prompt_hash_change" in text
    assert "replay summary" in text and "rejected          0" in text
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events and all(e["specversion"] == "1.0" for e in events)
    assert {e["data"]["rule"] for e in events} >= {"format_failure_spike", "quality_drop"}


def test_replay_reports_bad_lines_with_line_numbers_and_goes_on(tmp_path):
    lines = [json.dumps(GOOD), "{not json", json.dumps({**GOOD, "score": 2}), "", json.dumps([GOOD, {**GOOD, "ts": "never"}]),
             json.dumps({**GOOD, "ts": "2026-01-05T12:00:00Z"}), json.dumps({**GOOD, "ts": "2026-01-05T08:00:00Z"})]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = run_cli("replay", str(f), "--quiet")
    assert r.returncode == 0
    err = r.stderr.decode()
    assert f"{f}:2: MalformedJSON" in err
    assert f"{f}:3: OutOfScale" in err and "declared scale" in err
    assert f"{f}:5[1]: BadTimestamp" in err
    assert f"{f}:7: LateEvent" in err
    out = r.stdout.decode()
    assert "rejected          4" in out and "scores 2" in out


def test_replay_from_stdin_json_mode(cleanup_events):
    r = run_cli("replay", "-", "--json", stdin=cleanup_events.read_bytes())
    assert r.returncode == 0
    events = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert events and all(e["type"].startswith("drift.alert.") for e in events)
    assert "replay summary" in r.stderr.decode()


def test_replay_ids_equal_across_chunking(cleanup_events):
    from drift.core.config import load_settings
    from drift.runtime.replay import replay

    a = replay([str(cleanup_events)], load_settings())
    b = replay([str(cleanup_events)], load_settings(), chunk=7)
    assert [x["id"] for x in a.alerts] == [x["id"] for x in b.alerts]


def test_help_explains_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("replay", "simulate", "demo", "broker"):
        assert cmd in r.stdout.decode()
    r = run_cli("replay", "--help")
    assert b"--out" in r.stdout and b"stdin" in r.stdout


def test_bad_config_fails_at_start_naming_the_field(tmp_path, cleanup_events):
    cfg = tmp_path / "drift.toml"
    cfg.write_text("[rules.quality_drop]\nthreshold = -3\n")
    r = run_cli("replay", str(cleanup_events), "--config", str(cfg))
    assert r.returncode == 2
    assert b"rules.quality_drop.threshold" in r.stderr


def test_simulate_list_and_unknown():
    r = run_cli("simulate", "--list")
    assert r.returncode == 0 and b"prompt_cleanup" in r.stdout
    assert run_cli("simulate", "nope", "--out", "x.jsonl").returncode == 2


def test_rules_lists_builtins_declared_rules_overrides_and_kinds(tmp_path):
    cfg = tmp_path / "drift.toml"
    cfg.write_text('[rules.faithfulness_floor]\nkind = "floor"\ndimension = "faithfulness"\n'
                   '[[rules.quality_drop.override]]\napp = "payments"\nthreshold = 0.03\n'
                   '[rules.quality_shift]\nenabled = false\n')
    r = run_cli("rules", "--config", str(cfg), "--kinds")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "on  faithfulness_floor" in out and "dimension=faithfulness" in out
    assert "override app=payments: {'threshold': 0.03}" in out and "off quality_shift" in out
    assert "cusum_rate — RateCusum" in out and "false_alarm_rate" in out
    doc = json.loads(run_cli("rules", "--config", str(cfg), "--json").stdout)
    assert doc["rules"]["faithfulness_floor"]["params"]["floor"] == 0.8
    assert doc["kinds"]["floor"]["params"]["floor"]["check"] == "number"
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules.mine]\nkind = "nope"\n')
    r = run_cli("rules", "--config", str(bad))
    assert r.returncode == 2 and b"rules.mine.kind" in r.stderr and b"Traceback" not in r.stderr


def test_replay_of_a_missing_file_or_a_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"drift replay: {tmp_path / 'nope.jsonl'}: no such file"
    assert main(["replay", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"drift replay: {tmp_path}: is a folder, not an events file"


def test_replay_reads_a_named_pipe(tmp_path, cleanup_events, capsys):
    """`drift replay <(zcat events.jsonl.gz)`: a pipe is not a regular file, and is read."""
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    data = Path(cleanup_events).read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    assert main(["replay", str(fifo), "--quiet"]) == 0
    writer.join()
    out = capsys.readouterr().out
    lines = data.count(b"\n")
    assert f"lines read        {lines:,}\n" in out and "rejected          0\n" in out
