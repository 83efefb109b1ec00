"""``drift gate``: a golden-set gate for CI, on the real MT-Bench runs in ``data/mtbench/`` and on
small synthetic runs.

The figures are checked against references computed here from the raw CSV cells with scipy:
``scipy.stats.wilcoxon(x, y, alternative="less")`` and ``binomtest`` on the paired items, means
with numpy, the intervals with ``ttest_rel(...).confidence_interval()`` and
``ttest_1samp(...).confidence_interval()`` (scipy's own t-intervals, not the gate's code path).
Tolerances: means, effects and p-values 1e-12; interval ends 1e-10.
"""

from __future__ import annotations

import csv
import doctest
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from junitparser import Failure, JUnitXml
from scipy import stats

from drift.cli import main

ROOT = Path(__file__).resolve().parents[1]
MTB = ROOT / "data" / "mtbench"
CAND = MTB / "mistral-orpo-capybara.csv"
BASE = MTB / "mistral-orpo-trl.csv"
METRICS = ("turn1", "turn2")
KEYS = {"verdict", "mean", "baseline_mean", "effect", "p_value"}


def _cells(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """id -> {metric: score} and id -> slice, straight from the CSV."""
    scores, slices = {}, {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            scores[row["id"]] = {m: float(row[m]) for m in METRICS}
            slices[row["id"]] = row["slice"]
    return scores, slices


@functools.cache
def _reference_stats(cand: Path, base: Path) -> dict[tuple[str, str], dict]:
    """(metric, slice) -> the expected figures, computed independently with scipy (once per pair of runs)."""
    c, c_slice = _cells(cand)
    b, _ = _cells(base)
    ids = sorted(set(c) & set(b), key=int)
    assert len(ids) == 80
    groups = {"all": ids}
    for i in ids:
        groups.setdefault(c_slice[i], []).append(i)
    out = {}
    for m in METRICS:
        for name, members in groups.items():
            x = np.array([c[i][m] for i in members])
            y = np.array([b[i][m] for i in members])
            d = x - y
            if np.count_nonzero(d):
                p_w = stats.wilcoxon(x, y, alternative="less").pvalue
                p_s = stats.binomtest(int((d < 0).sum()), int((d != 0).sum()), 0.5, alternative="greater").pvalue
            else:
                p_w = p_s = 1.0
            ci = stats.ttest_rel(x, y).confidence_interval(0.95)
            mci = stats.ttest_1samp(x, 0).confidence_interval(0.95)
            out[m, name] = {"n": x.size, "mean": x.mean(), "baseline_mean": y.mean(), "effect": d.mean(),
                            "effect_pct": 100 * d.mean() / abs(y.mean()), "p_wilcoxon": p_w, "p_sign": p_s,
                            "ci": (ci.low, ci.high), "mean_ci": (mci.low, mci.high)}
    return out


def _reference(cand: Path, base: Path, max_drop: float, alpha: float, test: str, floors: dict[str, float]):
    """The reference figures with the p-value of ``test`` and the verdict of the documented fail rule."""
    out = {}
    for (m, name), r in _reference_stats(cand, base).items():
        p = r["p_wilcoxon"] if test == "wilcoxon" else r["p_sign"]
        drop = -r["effect_pct"]
        fail = (drop > max_drop and p < alpha) or (m in floors and r["mean"] < floors[m])
        out[m, name] = {**r, "p_value": p, "verdict": "fail" if fail else "pass"}
    return out


def _gate_json(capsys, *args) -> tuple[int, dict]:
    code = main(["gate", *map(str, args), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


SETTINGS = [
    # (candidate, baseline, max_drop, test, floors, gate_slices)
    (CAND, BASE, 5.0, "wilcoxon", {"turn1": 6.0, "turn2": 6.0}, False),
    (CAND, BASE, 0.0, "sign", {}, False),
    (CAND, BASE, 20.0, "wilcoxon", {"turn2": 6.6}, True),
    (BASE, CAND, 5.0, "wilcoxon", {"turn1": 7.8}, True),  # the other way round: no drop to find
]


@pytest.mark.parametrize("cand, base, max_drop, test, floors, gate_slices", SETTINGS)
def test_real_runs_match_the_scipy_reference_per_metric_and_slice(capsys, cand, base, max_drop, test, floors,
                                                                   gate_slices):
    args = [cand, "--baseline", base, "--max-drop", max_drop, "--test", test]
    for m, v in floors.items():
        args += ["--min", f"{m}={v}"]
    if gate_slices:
        args.append("--gate-slices")
    code, report = _gate_json(capsys, *args)
    ref = _reference(cand, base, max_drop, 0.05, test, floors)
    assert set(report) == set(METRICS)
    expected_metric_fail = {}
    for m in METRICS:
        entry = report[m]
        assert KEYS <= set(entry) and KEYS <= set(entry["slices"]["coding"])
        assert set(entry["slices"]) == {"coding", "extraction", "humanities", "math", "reasoning", "roleplay", "stem",
                                        "writing"}
        for name, got in [("all", entry), *entry["slices"].items()]:
            want = ref[m, name]
            assert got["n"] == got["n_paired"] == want["n"]
            for key in ("mean", "baseline_mean", "effect", "effect_pct", "p_value", "p_wilcoxon", "p_sign"):
                assert got[key] == pytest.approx(want[key], abs=1e-12, rel=0), (m, name, key)
            assert got["ci_low"] == pytest.approx(want["ci"][0], abs=1e-10)
            assert got["ci_high"] == pytest.approx(want["ci"][1], abs=1e-10)
            assert got["mean_ci"] == pytest.approx(list(want["mean_ci"]), abs=1e-10)
            if name != "all":  # the metric's own verdict also counts its slices with --gate-slices (below)
                assert got["verdict"] == want["verdict"], (m, name, got["reasons"])
            assert got["floor"] == floors.get(m)
            assert got["missing"]["candidate"]["n"] == got["missing"]["baseline"]["n"] == 0
        slice_fails = any(ref[m, s]["verdict"] == "fail" for s in entry["slices"])
        expected_metric_fail[m] = ref[m, "all"]["verdict"] == "fail" or (gate_slices and slice_fails)
        assert (entry["verdict"] == "fail") == expected_metric_fail[m]
    assert code == (1 if any(expected_metric_fail.values()) else 0)


def test_jsonl_runs_give_the_same_report_as_csv(capsys, tmp_path):
    paths = []
    for src in (CAND, BASE):
        dst = tmp_path / (src.stem + ".jsonl")
        with open(src, newline="") as f, open(dst, "w") as out:
            for row in csv.DictReader(f):  # numbers as JSON numbers, ids as integers
                out.write(json.dumps({"id": int(row["id"]), "slice": row["slice"],
                                      **{m: float(row[m]) for m in METRICS}}) + "\n")
        paths.append(dst)
    a = _gate_json(capsys, CAND, "--baseline", BASE, "--max-drop", 5)
    b = _gate_json(capsys, paths[0], "--baseline", paths[1], "--max-drop", 5)
    assert a == b


# ---------------------------------------------------------------- JUnit and Markdown


def test_junit_reads_back_with_junitparser(tmp_path, capsys):
    xml = tmp_path / "gate.xml"
    code = main(["gate", str(CAND), "--baseline", str(BASE), "--max-drop", "5", "--min", "turn2=6.6",
                 "--junit", str(xml)])
    text = capsys.readouterr().out
    ref = _reference(CAND, BASE, 5.0, 0.05, "wilcoxon", {"turn2": 6.6})
    failing = {m for m in METRICS if ref[m, "all"]["verdict"] == "fail"}
    assert code == (1 if failing else 0)
    suites = list(JUnitXml.fromfile(str(xml)))
    assert len(suites) == 1
    suite = suites[0]
    assert suite.name == "drift gate"
    cases = {case.name: case for case in suite}
    slices = sorted({s for (_, s) in ref} - {"all"})
    assert set(cases) == set(METRICS) | {f"{m}/{s}" for m in METRICS for s in slices}
    assert suite.tests == len(cases) == 18
    failed = {name for name, case in cases.items() if any(isinstance(r, Failure) for r in case.result)}
    assert failed == failing  # slices are not gated without --gate-slices
    assert suite.failures == len(failing)
    for name in failing:
        (failure,) = [r for r in cases[name].result if isinstance(r, Failure)]
        assert failure.message and ("drop" in failure.message or "floor" in failure.message)
        assert f"gate: FAIL: {name}" in text
    out = cases["turn1"].system_out
    assert f"p_value={json.dumps(ref['turn1', 'all']['p_value'])}" in out
    assert "n=80" in out
    assert "gated=false" in cases["turn1/coding"].system_out


def test_junit_with_gated_slices_fails_slice_testcases(tmp_path, capsys):
    xml = tmp_path / "gate.xml"
    code = main(["gate", str(CAND), "--baseline", str(BASE), "--max-drop", "5", "--gate-slices", "--junit", str(xml)])
    capsys.readouterr()
    ref = _reference(CAND, BASE, 5.0, 0.05, "wilcoxon", {})
    suite = next(iter(JUnitXml.fromfile(str(xml))))
    failed = {case.name for case in suite if any(isinstance(r, Failure) for r in case.result)}
    fail_cases = {key for key, e in ref.items() if e["verdict"] == "fail"}
    # a failing slice fails its own testcase and, with --gate-slices, its metric's
    want = {f"{m}/{s}" for m, s in fail_cases if s != "all"} | {m for m, _ in fail_cases}
    assert want and failed == want
    assert code == 1


def test_markdown_appends_a_table_with_marks(tmp_path, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code = main(["gate", str(CAND), "--baseline", str(BASE), "--max-drop", "5", "--markdown", str(summary)])
    capsys.readouterr()
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, as $GITHUB_STEP_SUMMARY wants
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in text.splitlines()
            if line.startswith("| turn")}
    assert len(rows) == 18
    ref = _reference(CAND, BASE, 5.0, 0.05, "wilcoxon", {})
    for m in METRICS:
        mark = "❌" if ref[m, "all"]["verdict"] == "fail" else "✅"
        assert f"{mark} {ref[m, 'all']['verdict']}" in rows[m, "all"]
        assert f"{ref[m, 'all']['effect_pct']:+.1f}%" in rows[m, "all"]
    assert ("❌" in text) == (code == 1)


# ---------------------------------------------------------------- the README's CI step


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Gate a release on a golden set: `drift gate`")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_readme_ci_step_runs_as_documented(tmp_path):
    section = _readme_section()
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    lines = yaml_block.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "run: |")
    indent = len(lines[at]) - len(lines[at].lstrip())
    body = []
    for line in lines[at + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    script = "\n".join(line[indent + 2:] for line in body) + "\n"
    assert script.startswith("drift gate ")
    output = re.search(r"```\n(\$ drift gate .*?)```", section, re.S).group(1).splitlines()
    documented = int(output[output.index("$ echo $?") + 1])
    (tmp_path / "data").symlink_to(ROOT / "data")  # the step runs in a checkout: data/ beside it
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GITHUB_STEP_SUMMARY": str(summary)}
    r = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == documented, r.stderr
    assert r.stderr == ""
    shown = [line for line in output[1:output.index("$ echo $?")] if line != "…"]
    got = r.stdout.splitlines()
    for line in shown:  # the figures shown in the README are the ones the step prints
        assert line in got, line
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "gate.xml"))))
    assert suite.name == "drift gate" and suite.tests == 18
    assert summary.read_text(encoding="utf-8").startswith("### drift gate: ")


# ---------------------------------------------------------------- missing items, exit codes


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_and_unscored_items_are_reported_everywhere(tmp_path, capsys):
    cand = _write(tmp_path / "cand.csv", "id,score,other\na,0.9,1\nb,0.8,\nc,0.7,1\nz,0.6,1\n")
    base = _write(tmp_path / "base.csv", "id,score,other\na,0.9,1\nb,0.8,1\nc,,1\nd,0.5,1\ne,0.5,1\n")
    code, report = _gate_json(capsys, cand, "--baseline", base)
    s = report["score"]
    assert s["n"] == 4 and s["n_paired"] == 2
    assert s["missing"]["candidate"] == {"n": 2, "absent": 2, "not_scored": 0, "ids": ["d", "e"]}
    assert s["missing"]["baseline"] == {"n": 2, "absent": 1, "not_scored": 1, "ids": ["c", "z"]}
    assert s["mean"] == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.6]), abs=1e-12)
    assert s["baseline_mean"] == pytest.approx(np.mean([0.9, 0.8, 0.5, 0.5]), abs=1e-12)
    assert s["effect"] == 0.0 and s["p_value"] == 1.0 and s["verdict"] == "pass"
    o = report["other"]
    assert o["missing"]["baseline"] == {"n": 1, "absent": 1, "not_scored": 0, "ids": ["z"]}
    assert o["missing"]["candidate"]["n"] == 3 and o["missing"]["candidate"]["not_scored"] == 1
    assert code == 0
    # the table, the Markdown and the JUnit XML name them too
    md, xml = tmp_path / "s.md", tmp_path / "g.xml"
    assert main(["gate", str(cand), "--baseline", str(base), "--markdown", str(md), "--junit", str(xml)]) == 0
    table = capsys.readouterr().out
    assert "score: 2 item(s) scored in the baseline, not in the candidate (2 absent, 0 not scored): d, e" in table
    assert "score: 2 item(s) scored in the candidate, not in the baseline (1 absent, 1 not scored): c, z" in table
    assert "d, e" in md.read_text() and "c, z" in md.read_text()
    case = next(c for c in next(iter(JUnitXml.fromfile(str(xml)))) if c.name == "score")
    assert '"ids": ["d", "e"]' in case.system_out
    # --require-all turns them into failures
    code, report = _gate_json(capsys, cand, "--baseline", base, "--require-all")
    assert code == 1 and report["score"]["verdict"] == "fail"
    assert "4 item(s) missing or not scored (--require-all)" in report["score"]["reasons"]


def test_floors_exit_codes_and_not_scored_without_baseline(tmp_path, capsys):
    run = _write(tmp_path / "run.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": 1, "faithfulness": 0.9, "slice": "x"}, {"id": 2, "faithfulness": 0.8, "slice": "y"},
        {"id": 3, "faithfulness": None, "slice": "y"}, {"id": 4, "faithfulness": 0.83, "relevance": 1, "slice": "x"}]) + "\n")
    mean = np.mean([0.9, 0.8, 0.83])
    code, report = _gate_json(capsys, run, "--min", f"faithfulness={mean}")  # at the floor: not below
    assert code == 0 and report["faithfulness"]["mean"] == pytest.approx(mean, abs=1e-12)
    assert report["faithfulness"]["missing"]["candidate"] == {"n": 1, "absent": 0, "not_scored": 1, "ids": ["3"]}
    assert report["relevance"]["n"] == 1 and report["relevance"]["missing"]["candidate"]["n"] == 3
    assert report["faithfulness"]["baseline_mean"] is None and report["faithfulness"]["p_value"] is None
    assert report["faithfulness"]["slices"]["y"]["n"] == 1
    code, report = _gate_json(capsys, run, "--min", "faithfulness=0.85")
    assert code == 1 and report["faithfulness"]["verdict"] == "fail"
    assert report["faithfulness"]["slices"]["x"]["verdict"] == "pass"  # 0.865 over its two items
    assert main(["gate", str(run), "--min", "faithfulness=0.85"]) == 1
    assert "gate: FAIL: faithfulness: mean 0.8433 below the floor 0.85" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input: exit 2, one line


def _bad(capsys, *args) -> str:
    assert main(["gate", *map(str, args)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == "" and err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_missing_file_is_one_line_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "drift.cli", "gate", str(tmp_path / "nope.csv")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"drift gate: {tmp_path / 'nope.csv'}: no such file\n"
    r = subprocess.run([sys.executable, "-m", "drift.cli", "gate", str(CAND), "--baseline", str(tmp_path / "b.csv")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "b.csv: no such file" in r.stderr and "Traceback" not in r.stderr


def test_input_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, capsys):
    run = tmp_path / "run.csv"
    run.write_bytes("id,faithfulness,slice\n1,0.9,a\n2,0.8,caf\u00e9\n".encode("latin-1"))
    err = _bad(capsys, run)
    assert err == f"drift gate: {run}, line 3: not UTF-8 text (byte 0xe9, column 10); save it as UTF-8\n"
    base = tmp_path / "base.bin"
    base.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(128, 256)))
    assert f"{base}, line 1: not UTF-8 text" in _bad(capsys, CAND, "--baseline", base)


def test_bad_input_names_file_line_and_field(tmp_path, capsys):
    dup = _write(tmp_path / "dup.csv", "id,score\na,1\nb,2\na,3\n")
    assert _bad(capsys, dup) == f"drift gate: {dup}, line 4, column id: duplicate id 'a' (first on line 2)\n"
    text = _write(tmp_path / "text.csv", "id,score\na,1\nb,high\n")
    assert _bad(capsys, text) == f"drift gate: {text}, line 3, column score: 'high' is not a number\n"
    nan = _write(tmp_path / "nan.csv", "id,score\na,nan\n")
    assert f"{nan}, line 2, column score: 'nan' is not a finite number" in _bad(capsys, nan)
    js = _write(tmp_path / "run.jsonl", '{"id": 1, "score": 0.5}\n\n{"id": 2, "score": "n/a"}\n')
    assert _bad(capsys, js) == f"drift gate: {js}, line 3, field score: 'n/a' is not a number\n"
    js_dup = _write(tmp_path / "dup.jsonl", '{"id": 1, "score": 0.5}\n{"id": "1", "score": 0.4}\n')
    assert f"{js_dup}, line 2, field id: duplicate id '1'" in _bad(capsys, js_dup)
    broken = _write(tmp_path / "broken.jsonl", '{"id": 1, "score": 0.5}\n{"id": 2,\n')
    assert f"{broken}, line 2: invalid JSON" in _bad(capsys, broken)
    no_id = _write(tmp_path / "noid.csv", "item,score\na,1\n")
    assert f"{no_id}, line 1: no `id` column" in _bad(capsys, no_id)
    ragged = _write(tmp_path / "ragged.csv", "id,score\na,1,2\n")
    assert f"{ragged}, line 2: 3 fields for 2 columns" in _bad(capsys, ragged)
    good = _write(tmp_path / "good.csv", "id,score\na,1\n")
    assert _bad(capsys, good, "--min", "faithfulness=0.8") == (
        f"drift gate: --min faithfulness: no such metric in {good} (metrics: score)\n")
    for malformed in ("score", "score=", "=0.8", "score=high", "score=nan"):
        assert f"--min {malformed!r}: give METRIC=VALUE" in _bad(capsys, good, "--min", malformed)
    assert "--max-drop needs --baseline" in _bad(capsys, good, "--max-drop", "5")
    assert "--max-drop must be a percentage" in _bad(capsys, good, "--baseline", good, "--max-drop", "-1")
    assert "would both write to stdout" in _bad(capsys, good, "--json", "--junit", "-")
    empty = _write(tmp_path / "empty.csv", "id,score\n")
    assert f"{empty}: empty input" in _bad(capsys, empty)


def test_stdin_run_and_help(tmp_path):
    base = _write(tmp_path / "base.csv", "id,score\na,0.9\nb,0.8\n")
    r = subprocess.run([sys.executable, "-m", "drift.cli", "gate", "-", "--baseline", str(base), "--json"],
                       input='{"id": "a", "score": 0.9}\n{"id": "b", "score": 0.7}\n', capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr  # a drop on 1 of 2 items is not significant
    assert json.loads(r.stdout)["score"]["effect"] == pytest.approx(-0.05, abs=1e-12)
    r = subprocess.run([sys.executable, "-m", "drift.cli", "gate", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for word in ("--baseline", "--min", "--max-drop", "--junit", "--markdown", "--json", "Wilcoxon", "Exit codes",
                 "Example", "2 bad input"):
        assert word in r.stdout, word
    r = subprocess.run([sys.executable, "-m", "drift.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert "gate" in r.stdout


def test_docstring_examples_run():
    import drift.tools.gate as gate_module

    result = doctest.testmod(gate_module)
    assert result.attempted >= 1 and result.failed == 0
