"""Rebuild the ``drift calibrate`` label files of this folder from a PandaLM checkout.

    git clone https://github.com/WeOpenML/PandaLM && git -C PandaLM checkout 3871806e
    python data/pandalm/convert.py PandaLM/data data/pandalm

Reads ``testset-v1.json`` (999 pairwise comparisons, each labelled by three human annotators),
``gpt-3.5-turbo-testset-v1.json`` and ``pandalm-7b-testset-v1.json`` (the two judges' verdicts on
the same items, joined on ``idx``) and writes one CSV per judge with the columns
``id, dimension, intent, judge, human, human_2, human_3``. No text of the items is copied.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

# gpt-3.5-turbo answered "Tie" where the human scheme says 0 (similar quality); its 25 "garbage"
# verdicts (answers the PandaLM authors could not parse) stay a label of their own.
_GPT_LABELS = {"1": "1", "2": "2", "Tie": "0", "garbage": "garbage"}


def convert(src: Path, out: Path) -> None:
    items = json.loads((src / "testset-v1.json").read_text(encoding="utf-8"))
    judges = {
        "gpt-3.5-turbo": {r["idx"]: _GPT_LABELS[r["gpt_result"]]
                          for r in json.loads((src / "gpt-3.5-turbo-testset-v1.json").read_text(encoding="utf-8"))},
        "pandalm-7b": {r["idx"]: str(r["pandalm_result"])
                       for r in json.loads((src / "pandalm-7b-testset-v1.json").read_text(encoding="utf-8"))},
    }
    for name, verdicts in judges.items():
        assert set(verdicts) == {it["idx"] for it in items}, name
        with open(out / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "dimension", "intent", "judge", "human", "human_2", "human_3"])
            for it in sorted(items, key=lambda it: it["idx"]):
                w.writerow([it["idx"], "preference", it["motivation_app"], verdicts[it["idx"]],
                            it["annotator1"], it["annotator2"], it["annotator3"]])


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
