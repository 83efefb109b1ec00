"""notebooks/nine_words.ipynb executes end to end with the venv's kernel and shows what it claims.

The notebook is executed with nbclient in a temporary working directory (it writes its pictures
and an embedding cache there), with the ``python3`` kernel, which jupyter_client starts with this
interpreter. After the notebook's own cells, one extra cell (added to the in-memory copy only)
reports the values the checks need. The committed file must carry no outputs, and must drive the
engine through its in-memory API (``Engine.feed``, typed ``drift.Alert`` objects): those two checks
read the file only, so they run without sentence-transformers too.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "nine_words.ipynb"

_PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    "ks_d": D, "ks_p": P, "scipy_d": float(ref.statistic), "scipy_p": float(ref.pvalue),
    "ks_loc": LOC, "scipy_loc": float(ref.statistic_location), "d_hist": float(d_hist),
    "null_d": D0, "null_p": P0, "null_scipy_d": float(null_ref.statistic),
    "null_scipy_p": float(null_ref.pvalue),
    "n_before": int(before.size), "n_after": int(after.size),
    "alert_types": sorted({type(a).__module__ + "." + type(a).__name__ for a in alerts + q_alerts}),
    "alerts": [[a.rule, a.status, a.labels, a.starts_at, a.suspected_cause] for a in alerts],
    "alert_ids": [a.alert_id for a in alerts],
    "cloudevent_ids": [to_cloudevent(a)["data"]["alert_id"] for a in alerts],
    "spike_examples": list(spike.example_trace_ids or []),
    "change_at": change["at"], "hash_from": change["from"], "hash_to": change["to"],
    "q_alerts": [[a.rule, a.status, a.labels.get("app"), a.starts_at, a.statistic.value] for a in q_alerts],
    "q_recomputed": [float(cosine_distance(vectors[(qt >= parse_time(a.window.start))
                                                   & (qt < parse_time(a.window.end))]
                                           .astype(np.float64).sum(0), golden.centroid))
                     for a in fires],
    "sampled_out": int(qengine.counts["queries.sampled_out"]),
    "files": sorted(p.name for p in WORKDIR.iterdir()),
}))
"""


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            out.append(o.get("data", {}).get("text/plain", ""))
    return "".join(out)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    pytest.importorskip("sentence_transformers",
                        reason="the query part of the notebook embeds text: sentence-transformers is "
                               "not installed (`make test` installs it)")
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    probe = json.loads(re.search(r"^PROBE (.*)$", text, re.M).group(1))
    return nb, text, probe, seconds, work


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert NOTEBOOK.stat().st_size < 100_000


def test_notebook_uses_the_in_memory_api():
    # the engine is fed Python dicts (Engine.feed) and its alerts are drift.Alert objects: no
    # JSON bytes round trip through the decoder, and no CloudEvent dict access on engine alerts
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "engine.feed(" in code and "qengine.feed(" in code
    for old in (".decode(", ".decoder(", ".process(", "msgspec", 'a["data"]'):
        assert old not in code, f"the notebook still uses {old!r}"
    assert "from drift import Engine, load_settings, render, to_cloudevent" in code


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebook_runs_and_tells_the_story(executed):
    nb, text, probe, seconds, work = executed
    print(f"notebook executed in {seconds:.0f} s")
    # no cell raised (nbclient would have), and no traceback was printed
    assert "Traceback" not in text
    # engine.feed returned typed alerts (an invalid event would have raised ValueError in its cell)
    assert probe["alert_types"] == ["drift.core.alerts.Alert"]
    assert probe["cloudevent_ids"] == probe["alert_ids"]
    assert probe["spike_examples"] and all(isinstance(t, str) and t for t in probe["spike_examples"])

    # the readable alert lines: the hourly format check fires, with the hash change as the cause
    m = re.search(r"FIRING\s+\S+\s+format_failure_spike/support-bot/billing/format_valid.*\n"
                  r"\s+suspected cause: prompt_hash_change (\w+) → (\w+)", text)
    assert m, text[:3000]
    assert (m.group(1), m.group(2)) == (probe["hash_from"], probe["hash_to"])
    assert re.search(r"INFO\s+info\s+prompt_change/support-bot/billing/prompt_hash", text)
    rules = {(r, s, lab["intent"]) for r, s, lab, _, _ in probe["alerts"] if lab.get("app") == "support-bot"}
    assert {("format_failure_spike", "firing", "billing"), ("quality_drop", "firing", "billing")} <= rules
    assert all(lab.get("app") == "support-bot" and lab.get("intent") in ("billing", "refunds")
               for _, _, lab, _, _ in probe["alerts"]), "an alert outside the changed series"
    for _rule, status, _lab, starts, cause in probe["alerts"]:
        if status == "firing":
            assert cause["kind"] == "prompt_hash_change" and cause["to"] == probe["hash_to"]
            assert starts >= probe["change_at"]

    # KS: detectors.ks on the raw samples is scipy's statistic, bit for bit, and its p-value
    assert probe["n_before"] > 1000 and probe["n_after"] > 1000
    assert probe["ks_d"] == probe["scipy_d"]
    assert probe["ks_loc"] == probe["scipy_loc"]
    assert probe["ks_p"] == pytest.approx(probe["scipy_p"], rel=1e-9, abs=1e-300)
    assert probe["ks_d"] > 0.3  # a large shift over whole weeks
    assert probe["ks_d"] - 0.02 <= probe["d_hist"] <= probe["ks_d"] + 1e-12  # histogram path: slightly smaller at most
    assert "identical to scipy: D True, p True, location True" in text
    # the no-change pair: a small D and a p-value that does not underflow, both scipy's
    assert probe["null_d"] == probe["null_scipy_d"] < 0.1
    assert 1e-12 < probe["null_scipy_p"] and probe["null_p"] == pytest.approx(probe["null_scipy_p"], rel=1e-9)

    # the query part: the shifted app fires query_centroid_shift, once, after the shift, and the
    # notebook's recomputed window distance is the engine's statistic
    fires = [a for a in probe["q_alerts"] if a[1] == "firing" and a[0] == "query_centroid_shift"]
    assert [(a[0], a[2]) for a in fires] == [("query_centroid_shift", "support-bot")]
    assert {a[2] for a in probe["q_alerts"] if a[1] == "firing"} == {"support-bot"}  # and coverage, if it fired
    assert fires[0][3] > "2026-01-19T10:00:00Z" and fires[0][4] >= 0.15
    assert probe["q_recomputed"][0] == pytest.approx(fires[0][4], abs=1e-5)
    assert probe["sampled_out"] == 0
    assert re.search(r"FIRING\s+\S+\s+query_centroid_shift/support-bot", text)

    # three figures were shown, and written into the working directory
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 3
    for name in ("nine_words_timeline.png", "nine_words_ecdf.png", "nine_words_queries.png",
                 "nine_words_embeddings.npz"):
        assert name in probe["files"]
