"""``detectors.agreement`` (Cohen's kappa, its standard error, the stratified bootstrap) against
sklearn and statsmodels, and ``drift calibrate`` end to end, on synthetic labels and on the
PandaLM human-vs-judge test set in ``data/pandalm/``.

Tolerances: kappa 1e-12 of ``sklearn.metrics.cohen_kappa_score``; standard error 1e-10 of
statsmodels' ``std_kappa``; bootstrap interval ends within 0.02 of statsmodels' asymptotic
interval at n >= 200 (2,000 resamples; the bootstrap's own Monte Carlo error is ~0.005).
"""

from __future__ import annotations

import csv
import doctest
import io
import itertools
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa

import drift.tools.calibrate as calibrate_module
from detectors.agreement import (
    confusion,
    kappa_from_confusion,
    kappa_many,
    kappa_se,
    stratified_bootstrap_kappa,
    weight_matrix,
)
from drift.cli import main
from drift.tools.calibrate import ScoreMapping, departure_interval, n_more, read_labels

ROOT = Path(__file__).resolve().parents[1]
PANDALM = ROOT / "data" / "pandalm"
WEIGHTS = [None, "linear", "quadratic"]
DIM_KEYS = {"kappa", "ci_low", "ci_high", "n", "verdict", "agreement", "prevalence", "minority_n", "n_more",
            "human_human", "weights"}


def _rater_pair(rng, k, n, skew, accuracy):
    """Human labels with class shares from Dirichlet(skew); the judge copies them with prob. accuracy."""
    human = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, skew)))
    judge = np.where(rng.random(n) < accuracy, human, rng.integers(0, k, n))
    return judge, human


def _sklearn(a, b, k, weights):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return cohen_kappa_score(a, b, labels=np.arange(k), weights=weights)


# ---------------------------------------------------------------- kappa against sklearn


def test_kappa_matches_sklearn_on_random_label_sets():
    rng = np.random.default_rng(20240611)
    checked = 0
    for _ in range(240):
        k = int(rng.integers(2, 8))
        n = int(rng.choice([3, 10, 50, 200, 1000]))
        skew = float(rng.choice([0.1, 0.5, 1.0, 5.0]))  # 0.1: one class dominates
        judge, human = _rater_pair(rng, k, n, skew, float(rng.uniform(0, 1)))
        c = confusion(judge, human, k)
        assert c.sum() == n and c.dtype == np.int64
        for w in WEIGHTS:
            ours, ref = kappa_from_confusion(c, w), _sklearn(judge, human, k, w)
            if np.isnan(ref):
                assert np.isnan(ours)
            else:
                assert abs(ours - ref) <= 1e-12, (k, n, skew, w, ours, ref)
            checked += 1
    assert checked == 720


def test_confusion_counts_pairs():
    c = confusion([0, 2, 2, 1, 2], [0, 2, 1, 1, 2], 3)
    assert c.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 2]]
    with pytest.raises(ValueError, match="0 .. 2"):
        confusion([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        confusion([0, 1], [0], 2)


def test_kappa_many_is_kappa_per_table():
    rng = np.random.default_rng(3)
    tables = rng.integers(0, 30, size=(4, 5, 3, 3))
    for w in WEIGHTS:
        many = kappa_many(tables, w)
        assert many.shape == (4, 5)
        assert np.allclose(many, [[kappa_from_confusion(t, w) for t in row] for row in tables], rtol=0, atol=1e-15)


def test_degenerate_label_sets():
    # one class only, both raters: undefined here (nan), and sklearn says so too
    ones = np.ones(20, dtype=int)
    for w in WEIGHTS:
        assert np.isnan(kappa_from_confusion(confusion(ones, ones, 2), w))
        assert np.isnan(kappa_se(confusion(ones, ones, 2), w))
        with pytest.warns(UndefinedMetricWarning), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "A single label was found", UserWarning)
            assert np.isnan(cohen_kappa_score(ones, ones, weights=w))
    assert np.isnan(kappa_from_confusion(np.zeros((3, 3))))  # no items
    assert stratified_bootstrap_kappa([], [], 2) != stratified_bootstrap_kappa([], [], 2)  # (nan, nan)
    # perfect agreement: 1; all disagreement: as sklearn (-1 with two balanced classes)
    a = np.array([0, 1, 2, 1, 0, 2, 2])
    for w in WEIGHTS:
        assert kappa_from_confusion(confusion(a, a, 3), w) == 1.0 == _sklearn(a, a, 3, w)
    flip = np.array([0, 1, 0, 1, 0, 1])
    assert kappa_from_confusion(confusion(flip, 1 - flip, 2)) == -1.0 == cohen_kappa_score(flip, 1 - flip)
    shifted = (a + 1) % 3
    for w in WEIGHTS:
        assert abs(kappa_from_confusion(confusion(shifted, a, 3), w) - _sklearn(shifted, a, 3, w)) <= 1e-12
    # a constant judge against a varying human: kappa 0, defined
    assert kappa_from_confusion(confusion(np.zeros(6, int), flip, 2)) == 0.0 == cohen_kappa_score(np.zeros(6), flip)


def test_weight_matrix_and_bad_weights():
    assert weight_matrix(3, "quadratic").tolist() == [[0, 1, 4], [1, 0, 1], [4, 1, 0]]
    assert weight_matrix(2, None).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="weights"):
        kappa_from_confusion(np.eye(2), "cubic")  # type: ignore[arg-type]


# ---------------------------------------------------------------- standard error and intervals


def test_kappa_se_matches_statsmodels():
    rng = np.random.default_rng(11)
    for _ in range(60):
        k = int(rng.integers(2, 6))
        judge, human = _rater_pair(rng, k, int(rng.integers(30, 800)), 2.0, float(rng.uniform(0.3, 0.95)))
        c = confusion(judge, human, k)
        for w in WEIGHTS:
            ref = cohens_kappa(c, wt=w) if w else cohens_kappa(c)
            assert abs(kappa_from_confusion(c, w) - ref.kappa) <= 1e-12
            assert abs(kappa_se(c, w) - ref.std_kappa) <= 1e-10, (k, w, kappa_se(c, w), ref.std_kappa)


# (seed, k, n, human class shares, judge accuracy, weights): prevalence from 20 % up
CI_CASES = [
    (1, 2, 400, [0.7, 0.3], 0.85, None),
    (2, 2, 250, [0.5, 0.5], 0.75, None),
    (3, 3, 300, [0.5, 0.3, 0.2], 0.8, None),
    (4, 4, 600, [0.25, 0.25, 0.25, 0.25], 0.6, None),
    (5, 5, 500, [0.1, 0.2, 0.4, 0.2, 0.1], 0.7, "linear"),
    (6, 5, 1000, [0.2, 0.2, 0.2, 0.2, 0.2], 0.5, "quadratic"),
    (7, 2, 200, [0.8, 0.2], 0.9, None),
]


@pytest.mark.parametrize("seed, k, n, shares, accuracy, weights", CI_CASES)
def test_bootstrap_interval_matches_asymptotic(seed, k, n, shares, accuracy, weights):
    rng = np.random.default_rng(seed)
    human = rng.choice(k, size=n, p=shares)
    judge = np.where(rng.random(n) < accuracy, human, rng.integers(0, k, n))
    ref = cohens_kappa(confusion(judge, human, k), wt=weights) if weights else cohens_kappa(confusion(judge, human, k))
    low, high = stratified_bootstrap_kappa(judge, human, k, weights, n_boot=2000, seed=seed)
    assert low < ref.kappa < high
    assert abs(low - ref.kappa_low) < 0.02 and abs(high - ref.kappa_upp) < 0.02, (low, high, ref.kappa_low, ref.kappa_upp)
    # and the width, tighter: 0.94-1.00 of 2 * 1.96 SE here (a 90 % interval would be ~0.84)
    assert 0.9 < (high - low) / (2 * 1.959964 * ref.std_kappa) < 1.1


def test_bootstrap_keeps_the_human_counts_and_is_narrower_under_heavy_skew():
    """With 5 % prevalence the human's class counts carry much of kappa's variance: the interval
    that holds them fixed (the default) is narrower than statsmodels' unconditional one, while
    resampling all items as one stratum matches it."""
    rng = np.random.default_rng(23)
    n = 1449
    human = (rng.random(n) < 0.05).astype(int)
    judge = np.where(rng.random(n) < 0.76, human, rng.integers(0, 2, n))
    ref = cohens_kappa(confusion(judge, human, 2))
    low, high = stratified_bootstrap_kappa(judge, human, 2, seed=0, strata=np.zeros(n, int))
    assert abs(low - ref.kappa_low) < 0.02 and abs(high - ref.kappa_upp) < 0.02
    s_low, s_high = stratified_bootstrap_kappa(judge, human, 2, seed=0)
    assert s_high - s_low < high - low


def test_bootstrap_equals_resampling_rows_within_strata():
    """The multinomial draw per stratum is resampling rows within it: same interval as the slow loop."""
    rng = np.random.default_rng(5)
    judge, human = _rater_pair(rng, 3, 300, 1.0, 0.7)
    slow = []
    for _ in range(2000):
        idx = np.concatenate([rng.choice(np.flatnonzero(human == s), size=int((human == s).sum()))
                              for s in np.unique(human)])
        c = confusion(judge[idx], human[idx], 3)
        assert (c.sum(axis=0) == np.bincount(human, minlength=3)).all()  # the human's counts are kept
        slow.append(kappa_from_confusion(c))
    slow_ci = np.quantile(slow, [0.025, 0.975])
    fast_ci = stratified_bootstrap_kappa(judge, human, 3, seed=1)
    assert np.allclose(fast_ci, slow_ci, atol=0.02)


def test_bootstrap_is_seeded_and_checks_its_arguments():
    rng = np.random.default_rng(0)
    judge, human = _rater_pair(rng, 2, 300, 1.0, 0.8)
    assert stratified_bootstrap_kappa(judge, human, 2, seed=4) == stratified_bootstrap_kappa(judge, human, 2, seed=4)
    assert stratified_bootstrap_kappa(judge, human, 2, seed=4) != stratified_bootstrap_kappa(judge, human, 2, seed=5)
    low90, high90 = stratified_bootstrap_kappa(judge, human, 2, seed=4, level=0.9)
    low95, high95 = stratified_bootstrap_kappa(judge, human, 2, seed=4)
    assert low95 < low90 < high90 < high95
    with pytest.raises(ValueError):
        stratified_bootstrap_kappa(judge, human, 2, n_boot=0)
    with pytest.raises(ValueError):
        stratified_bootstrap_kappa(judge, human, 2, strata=[0, 1])


def test_n_more_formula():
    assert n_more(200, 0.55, 0.85) == 250  # half-width 0.15: 200 * 1.5^2 - 200
    assert n_more(200, 0.70, 0.85) == 0
    assert n_more(100, 0.4, 0.62) == 21  # 100 * 1.1^2 - 100 is 21.000000000000014 in floats: still 21
    assert n_more(10, 1.0, 1.0) is None  # a zero-width interval measures nothing
    assert n_more(10, float("nan"), float("nan")) is None


def test_calibrate_doctests():
    finder, runner = doctest.DocTestFinder(exclude_empty=True), doctest.DocTestRunner()
    tests = finder.find(calibrate_module, "drift.tools.calibrate")
    attempted = 0
    for t in tests:
        result = runner.run(t)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 3


# ---------------------------------------------------------------- the command


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["calibrate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, *argv) -> tuple[int, dict]:
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc in (0, 1), err
    return rc, json.loads(out)


def _labels(seed: int, n: int, accuracy: float, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    human = rng.choice(k, size=n, p=np.full(k, 1 / k))
    judge = np.where(rng.random(n) < accuracy, human, rng.integers(0, k, n))
    return judge, human


@pytest.fixture
def two_dims(tmp_path) -> Path:
    """Two dimensions, four intents: `safety` agrees well (kappa ~0.9), `tone` does not (~0.4)."""
    rows = []
    for dim, acc, seed in (("safety", 0.95, 1), ("tone", 0.45, 2)):
        judge, human = _labels(seed, 400, acc)
        for i, (j, h) in enumerate(zip(judge, human)):
            rows.append([f"r{i}", dim, ["billing", "refunds", "shipping", "account"][i % 4], int(j), int(h)])
    return _write_csv(tmp_path / "labels.csv", ["id", "dimension", "intent", "judge", "human"], rows)


def test_json_shape_and_numbers(capsys, two_dims):
    rc, rep = _json(capsys, two_dims)
    assert rc == 1  # tone is below 0.6
    assert list(rep) == ["safety", "tone"]
    rows = list(csv.DictReader(open(two_dims, encoding="utf-8")))
    for dim, entry in rep.items():
        assert set(entry) == DIM_KEYS
        sub = [r for r in rows if r["dimension"] == dim]
        judge, human = [r["judge"] for r in sub], [r["human"] for r in sub]
        assert entry["n"] == len(sub) == 400
        assert abs(entry["kappa"] - cohen_kappa_score(judge, human)) <= 1e-12
        assert entry["agreement"] == np.mean(np.array(judge) == np.array(human))
        assert entry["prevalence"] == np.mean(np.array(human) == "1")
        assert entry["minority_n"] == min(Counter(human).values())
        assert entry["ci_low"] < entry["kappa"] < entry["ci_high"]
        assert entry["human_human"] is None and entry["weights"] == "none"
        half = (entry["ci_high"] - entry["ci_low"]) / 2
        assert entry["n_more"] == (0 if half <= 0.1 else int(np.ceil(400 * (half / 0.1) ** 2 - 400)))
    assert rep["safety"]["verdict"] == "high_stakes" and rep["tone"]["verdict"] == "untrusted"


def test_by_intent(capsys, two_dims):
    _, rep = _json(capsys, two_dims, "--by", "intent")
    rows = list(csv.DictReader(open(two_dims, encoding="utf-8")))
    for dim, entry in rep.items():
        assert set(entry) == DIM_KEYS | {"intents"}
        assert list(entry["intents"]) == ["account", "billing", "refunds", "shipping"]
        assert sum(e["n"] for e in entry["intents"].values()) == entry["n"]
        for intent, e in entry["intents"].items():
            assert set(e) == DIM_KEYS
            sub = [r for r in rows if r["dimension"] == dim and r["intent"] == intent]
            assert abs(e["kappa"] - cohen_kappa_score([r["judge"] for r in sub], [r["human"] for r in sub])) <= 1e-12


def test_table_output(capsys, two_dims):
    rc, out, _ = _run(capsys, two_dims, "--by", "intent")
    assert rc == 1
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dimension"))
    assert lines[header + 1].startswith("safety") and lines[header + 2].startswith("  account")
    assert "high_stakes" in lines[header + 1] and "untrusted" in out
    assert "gate: FAIL: tone" in out


def test_gate_exit_codes_strict_min_kappa_and_gate(capsys, two_dims):
    assert _run(capsys, two_dims)[0] == 1
    assert _run(capsys, two_dims, "--gate", "safety")[0] == 0
    assert _run(capsys, two_dims, "--gate", "tone")[0] == 1
    assert _run(capsys, two_dims, "--min-kappa", "0.3")[0] == 0
    _, rep = _json(capsys, two_dims)
    tone = rep["tone"]
    # between ci_low and kappa: passes on kappa, fails with --strict
    mid = (tone["ci_low"] + tone["kappa"]) / 2
    assert _run(capsys, two_dims, "--gate", "tone", "--min-kappa", mid)[0] == 0
    assert _run(capsys, two_dims, "--gate", "tone", "--min-kappa", mid, "--strict")[0] == 1
    rc, _, err = _run(capsys, two_dims, "--gate", "nope")
    assert rc == 2 and "--gate nope: no such dimension" in err


def test_csv_jsonl_and_stdin_agree(capsys, two_dims, tmp_path, monkeypatch):
    rows = list(csv.DictReader(open(two_dims, encoding="utf-8")))
    lines = [json.dumps({"id": r["id"], "dimension": r["dimension"], "intent": r["intent"],
                         "judge": int(r["judge"]), "human": r["human"] == "1"}) for r in rows]  # ints and booleans
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")  # no extension: sniffed
    _, from_csv = _json(capsys, two_dims, "--by", "intent")
    assert _json(capsys, tmp_path / "labels.jsonl", "--by", "intent")[1] == from_csv
    assert _json(capsys, tmp_path / "labels.txt", "--by", "intent")[1] == from_csv
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert _json(capsys, "-", "--by", "intent")[1] == from_csv


def test_threshold(tmp_path, capsys):
    rng = np.random.default_rng(8)
    human = rng.integers(0, 2, 300)
    scores = np.clip(human * 0.5 + rng.normal(0.25, 0.2, 300), 0, 1).round(2)
    scores[:5] = 0.5  # on the threshold: label 1
    path = _write_csv(tmp_path / "s.csv", ["id", "judge", "human"], [[i, s, h] for i, (s, h) in enumerate(zip(scores, human))])
    _, rep = _json(capsys, path, "--threshold", "0.5")
    assert list(rep) == ["all"]
    assert abs(rep["all"]["kappa"] - cohen_kappa_score((scores >= 0.5).astype(int), human)) <= 1e-12
    labels = read_labels(str(path), ScoreMapping(threshold=0.5))
    assert (labels.dimensions["all"].groups[""].judge[:5] == 1).all()
    # a non-numeric score is named by line and column
    rows = [[i, s, h] for i, (s, h) in enumerate(zip(scores, human))]
    rows[6][1] = "high"
    bad = _write_csv(tmp_path / "bad.csv", ["id", "judge", "human"], rows)
    rc, _, err = _run(capsys, bad, "--threshold", "0.5")
    assert rc == 2 and f"{bad}, line 8, column judge: 'high' is not a number" in err and len(err.splitlines()) == 1


def test_bins_ordinal_weighted(tmp_path, capsys):
    rng = np.random.default_rng(9)
    human = rng.integers(0, 5, 400)
    scores = np.clip((human + rng.normal(0.5, 0.7, 400)) / 5, 0, 1).round(3)
    scores[:4] = [0.2, 0.4, 0.6, 0.8]  # the edges: each goes to the class above
    edges = [0.2, 0.4, 0.6, 0.8]
    path = _write_csv(tmp_path / "b.csv", ["id", "judge", "human"], [[i, s, h] for i, (s, h) in enumerate(zip(scores, human))])
    classes = np.digitize(scores, edges)
    assert classes[:4].tolist() == [1, 2, 3, 4]
    for w in ("linear", "quadratic"):
        _, rep = _json(capsys, path, "--bins", ",".join(map(str, edges)), "--weights", w)
        assert abs(rep["all"]["kappa"] - cohen_kappa_score(classes, human, labels=range(5), weights=w)) <= 1e-12
        assert rep["all"]["weights"] == w
    # --map-human: human scores on the same scale go through the same bins
    path2 = _write_csv(tmp_path / "b2.csv", ["id", "judge", "human"], [[i, s, h / 5 + 0.1] for i, (s, h) in enumerate(zip(scores, human))])
    _, rep2 = _json(capsys, path2, "--bins", ",".join(map(str, edges)), "--map-human", "--weights", "linear")
    assert rep2["all"]["kappa"] == _json(capsys, path, "--bins", ",".join(map(str, edges)), "--weights", "linear")[1]["all"]["kappa"]


def test_ordinal_scale_keeps_unused_levels(tmp_path, capsys):
    """1-5 ratings where nobody used 3: the distance 2 -> 4 is still 2 levels."""
    rng = np.random.default_rng(10)
    human = rng.choice([1, 2, 4, 5], 300)
    judge = np.clip(human + rng.choice([-1, 0, 0, 1], 300), 1, 5)
    judge[judge == 3] = 4
    path = _write_csv(tmp_path / "o.csv", ["id", "judge", "human"], [[i, j, h] for i, (j, h) in enumerate(zip(judge, human))])
    _, rep = _json(capsys, path, "--weights", "quadratic")
    assert abs(rep["all"]["kappa"] - cohen_kappa_score(judge, human, labels=[1, 2, 3, 4, 5], weights="quadratic")) <= 1e-12
    assert rep["all"]["minority_n"] == min(Counter(human.tolist()).values())  # over the classes the human used


def test_human_human_with_gaps(tmp_path, capsys):
    rng = np.random.default_rng(12)
    judge, human = _labels(12, 300, 0.8, k=3)
    second = np.where(rng.random(300) < 0.9, human, rng.integers(0, 3, 300))
    rated = rng.random(300) < 0.5  # the second rater labelled about half the items
    rows = [[i, "c" + str(j), "c" + str(h), "c" + str(s) if r else ""] for i, (j, h, s, r) in
            enumerate(zip(judge, human, second, rated))]
    path = _write_csv(tmp_path / "h.csv", ["id", "judge", "human", "human_2"], rows)
    _, rep = _json(capsys, path)
    assert abs(rep["all"]["human_human"] - cohen_kappa_score(human[rated], second[rated])) <= 1e-12
    assert abs(rep["all"]["kappa"] - cohen_kappa_score(judge, human)) <= 1e-12  # against `human`, the first rater
    rc, _, err = _run(capsys, path, "--weights", "linear")
    assert rc == 2 and "needs ordinal (numeric) labels" in err


def test_undefined_kappa(tmp_path, capsys):
    path = _write_csv(tmp_path / "u.csv", ["id", "judge", "human"], [[i, "pass", "pass"] for i in range(30)])
    rc, rep = _json(capsys, path)
    assert rc == 1  # agreement that cannot be measured does not pass the gate
    entry = rep["all"]
    assert entry["kappa"] is None and entry["ci_low"] is None and entry["verdict"] == "undefined"
    assert "all 30 items the label 'pass'" in entry["reason"] and "undefined" in entry["reason"]
    assert entry["agreement"] == 1.0 and entry["n_more"] is None


def test_label_only_one_rater_uses_is_fine(tmp_path, capsys):
    rows = [[0, "1", "1"], [1, "2", "2"], [2, "unparsable", "1"], [3, "2", "1"], [4, "1", "1"], [5, "2", "2"]]
    path = _write_csv(tmp_path / "x.csv", ["id", "judge", "human"], rows)
    rc, rep = _json(capsys, path, "--min-kappa", "0")
    assert rc == 0
    j, h = [r[1] for r in rows], [r[2] for r in rows]
    assert abs(rep["all"]["kappa"] - cohen_kappa_score(j, h)) <= 1e-12


@pytest.mark.parametrize("content, argv, message", [
    (None, [], "no such file"),
    ("id,judge\n1,1\n", [], "line 1: no `human` column"),
    ("id,human\n1,1\n", [], "line 1: no `judge` column"),
    ("judge,human\n1,1\n", [], "no `id` column"),
    ("id,judge,human\n", [], "empty input (no labelled rows)"),
    ("", [], "empty input"),
    ("id,judge,human\n1,1,1\n2,,0\n", [], "line 3, column judge: empty value"),
    ("id,judge,human\n1,1,1\n1,0,0\n", [], "line 3, column id: duplicate id '1' in dimension 'all' (first on line 2)"),
    ("id,judge,human\n1,1,nan\n", [], "line 2, column human: 'nan' is not a finite number"),
    ('{"id": 1, "judge": 1, "human": 1}\n{"id": 2, "judge": 1}\n', [], "line 2, column human: missing value"),
    ('{"id": 1, "judge": 1, "human": 1}\nnot json\n', [], "line 2: invalid JSON"),
    ("id,judge,human\n1,1,1\n", ["--by", "intent"], "--by intent needs an `intent` column"),
    ("id,judge,human\n1,0.3,1\n", ["--bins", "0.5,0.2"], "strictly increasing"),
    ("id,judge,human\n1,0.3,1\n", ["--bins", "a,b"], "comma-separated numbers"),
    ("id,judge,human\n1,0.3,1\n", ["--map-human"], "--map-human needs --threshold or --bins"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, argv, message):
    path = tmp_path / ("in.jsonl" if content and content.startswith("{") else "in.csv")
    if content is not None:
        path.write_text(content)
    rc, out, err = _run(capsys, path, *argv)
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_duplicate_ids_in_different_dimensions_are_fine(tmp_path, capsys):
    rows = [[i, d, i % 2, i % 2] for d in ("a", "b") for i in range(10)]
    path = _write_csv(tmp_path / "d.csv", ["id", "dimension", "judge", "human"], rows)
    rc, rep = _json(capsys, path)
    assert rc == 0 and rep["a"]["kappa"] == rep["b"]["kappa"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--min-kappa", "nan"], "--min-kappa must be a number from -1 to 1"),
    (["--min-kappa", "inf"], "--min-kappa must be a number from -1 to 1"),
    (["--min-kappa", "1.5"], "--min-kappa must be a number from -1 to 1"),
    (["--min-kappa", "-1.01"], "--min-kappa must be a number from -1 to 1"),
    (["--n-boot", "1"], "--n-boot must be at least 200"),
    (["--n-boot", "199"], "--n-boot must be at least 200"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path, capsys, argv, message):
    path = _write_csv(tmp_path / "in.csv", ["id", "judge", "human"], [[i, i % 2, i % 3 % 2] for i in range(40)])
    rc, out, err = _run(capsys, path, *argv)
    assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    assert _run(capsys, path, "--n-boot", "200", "--seed", "3", "--min-kappa", "-1")[0] == 0  # the bounds pass


@pytest.mark.parametrize("name, data, line", [
    ("latin1.csv", "id,judge,human\n1,1,1\n2,0,0\n3,caf\u00e9,1\n".encode("latin-1"), 4),
    ("latin1.jsonl", '{"id": 1, "judge": 1, "human": 1}\n{"id": 2, "judge": "caf\u00e9", "human": 1}\n'
                     .encode("latin-1"), 2),
    ("binary.dat", b"\x7fELF\x02\x01\x01\x00" + bytes(range(128, 256)) * 4, 1),
])
def test_input_that_is_not_utf8_exits_2_naming_file_and_line(tmp_path, capsys, name, data, line):
    path = tmp_path / name
    path.write_bytes(data)
    rc, out, err = _run(capsys, path)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{path}, line {line}: not UTF-8 text" in err


def test_where_every_resample_agrees_the_interval_is_the_exact_departure_bound(tmp_path, capsys):
    """2 agreeing items: kappa 1 in every resample, a bootstrap interval [1, 1] that measures
    nothing. The interval is the exact binomial bound on how often the judge departs from its
    labels instead: [-0.68, 1] for 2 items (``--strict`` fails), narrow for 500."""
    path = _write_csv(tmp_path / "two.csv", ["id", "judge", "human"], [[1, 1, 1], [2, 0, 0]])
    rc, out, _ = _run(capsys, path, "--strict", "--min-kappa", "0.8")
    assert rc == 1 and "gate: FAIL: all with ci_low below 0.8" in out
    assert _run(capsys, path)[0] == 0  # gating on kappa, as documented: 1.0
    rc, rep = _json(capsys, path, "--strict")
    entry = rep["all"]
    assert rc == 1 and entry["ci_high"] == entry["kappa"] == 1.0
    assert entry["ci_low"] == pytest.approx(1 - (1 - 0.025 ** 0.5) / 0.5, abs=1e-12)  # -0.68
    assert "exact binomial bound" in entry["reason"] and entry["n_more"] > 0
    # 500 agreeing items: 0 departures of 500 is at most 0.74 % (Clopper-Pearson), kappa >= 0.985
    path = _write_csv(tmp_path / "many.csv", ["id", "judge", "human"], [[i, i % 2, i % 2] for i in range(500)])
    rc, rep = _json(capsys, path, "--strict", "--min-kappa", "0.98")
    u = 1 - 0.025 ** (1 / 500)
    assert rc == 0 and rep["all"]["ci_low"] == pytest.approx(1 - u / 0.5, abs=1e-12)
    assert scipy.stats.beta.ppf(0.975, 1, 500) == pytest.approx(u, rel=1e-9)  # the Clopper-Pearson upper end
    # the lower end bounds every table the allowed departures reach (a rare class: chance agreement moves too)
    for table in ([[18, 0], [0, 2]], [[6, 0], [0, 7]], [[40, 0, 0], [0, 5, 0], [0, 0, 3]]):
        table = np.array(table)
        k, n = table.shape[0], int(table.sum())
        allowed = int((1 - 0.025 ** (1 / n)) * n)
        for weights in (None, "linear"):
            low, _ = departure_interval(table, weights)
            worst = 1.0
            # every way to move up to ``allowed`` items of each human class to another judge label
            off = [(c, j) for c in range(k) for j in range(k) if c != j]
            for moves in itertools.product(range(allowed + 1), repeat=len(off)):
                if sum(moves) > allowed:
                    continue
                t = table.astype(float).copy()
                for (c, j), m in zip(off, moves):  # m items of human class c the judge now calls j
                    t[c, c] -= m
                    t[j, c] += m
                if (t < 0).any():
                    continue
                kappa = kappa_from_confusion(t, weights)
                worst = min(worst, kappa) if np.isfinite(kappa) else worst
            assert low <= worst + 1e-12, (table.tolist(), weights, low, worst)
    # one disagreement: the bootstrap's own interval, gated as before
    path = _write_csv(tmp_path / "one_miss.csv", ["id", "judge", "human"],
                      [[i, i % 2, i % 2] for i in range(12)] + [[12, 0, 1]])
    rc, rep = _json(capsys, path, "--min-kappa", "0")
    assert rc == 0 and rep["all"]["ci_low"] < rep["all"]["ci_high"] and "reason" not in rep["all"]


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("Exit codes: 0", "1 a gated dimension", "2 bad input", "--threshold", "--bins", "linear or quadratic",
                   "human_2", "first rater"):
        assert needle in text.replace("\n", " ") or needle in text


# ---------------------------------------------------------------- the PandaLM test set


def _pandalm(judge: str) -> list[dict[str, str]]:
    with open(PANDALM / f"{judge}.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_pandalm_file_is_the_published_test_set():
    """The README of WeOpenML/PandaLM publishes the annotators' pairwise Cohen's kappa
    (0.85, 0.88, 0.86) and the label distribution (105 / 422 / 472 for 0 / 1 / 2, the majority
    of the three); the bundled files reproduce them."""
    for judge in ("gpt-3.5-turbo", "pandalm-7b"):
        rows = _pandalm(judge)
        assert len(rows) == 999 and len({r["id"] for r in rows}) == 999
        a1, a2, a3 = ([r[c] for r in rows] for c in ("human", "human_2", "human_3"))
        assert round(cohen_kappa_score(a1, a2), 2) == 0.85
        assert round(cohen_kappa_score(a1, a3), 2) == 0.88
        assert round(cohen_kappa_score(a2, a3), 2) == 0.86
        majority = Counter(Counter(v).most_common(1)[0][0] for v in zip(a1, a2, a3))
        assert majority == {"0": 105, "1": 422, "2": 472}
    assert Counter(r["judge"] for r in _pandalm("gpt-3.5-turbo")) == {"2": 476, "1": 460, "0": 38, "garbage": 25}


@pytest.mark.parametrize("judge, kappa", [("gpt-3.5-turbo", 0.4619), ("pandalm-7b", 0.4191)])
def test_pandalm_report(capsys, judge, kappa):
    rows = _pandalm(judge)
    rc, rep = _json(capsys, PANDALM / f"{judge}.csv", "--by", "intent")
    assert rc == 1 and list(rep) == ["preference"]  # both judges are below 0.6
    entry = rep["preference"]
    j, h, h2 = ([r[c] for r in rows] for c in ("judge", "human", "human_2"))
    assert abs(entry["kappa"] - cohen_kappa_score(j, h)) <= 1e-12 and round(entry["kappa"], 4) == kappa
    assert abs(entry["human_human"] - cohen_kappa_score(h, h2)) <= 1e-12
    assert entry["agreement"] == np.mean(np.array(j) == np.array(h))
    assert entry["n"] == 999 and entry["verdict"] == "untrusted"
    assert entry["minority_n"] == Counter(h)["0"] == 97
    se = kappa_se(confusion(*_codes(j, h), k=len(set(j) | set(h))))
    assert abs(entry["ci_low"] - (entry["kappa"] - 1.96 * se)) < 0.02 and abs(entry["ci_high"] - (entry["kappa"] + 1.96 * se)) < 0.02
    intents = entry["intents"]
    assert sum(e["n"] for e in intents.values()) == 999 and len(intents) == len({r["intent"] for r in rows})
    for intent, e in intents.items():
        sub = [r for r in rows if r["intent"] == intent]
        ref = _sklearn_or_nan([r["judge"] for r in sub], [r["human"] for r in sub])
        assert (e["kappa"] is None and np.isnan(ref)) or abs(e["kappa"] - ref) <= 1e-12, intent


def _codes(a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    levels = sorted(set(a) | set(b))
    return np.array([levels.index(x) for x in a]), np.array([levels.index(x) for x in b])


def _sklearn_or_nan(a, b) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b))
