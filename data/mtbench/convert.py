"""Rebuild the ``drift gate`` runs of this folder from a FastChat checkout with MT-Bench judgments.

    git clone https://github.com/alvarobartt/FastChat && git -C FastChat checkout b25947e5
    python data/mtbench/convert.py FastChat/fastchat/llm_judge/data/mt_bench data/mtbench

Reads ``question.jsonl`` (the 80 MT-Bench questions and their category) and
``model_judgment/gpt-4_single.jsonl`` (GPT-4's 1-10 score of each model's answer to each turn)
and writes one CSV per model with the columns ``id, slice, turn1, turn2``: the question id, its
category and GPT-4's score of the first and second turn. A score of -1 (FastChat's mark for a
judgment it could not parse) is written as an empty cell ("not scored"). No text of the
questions, answers or judgments is copied.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

MODELS = ("mistral-orpo-capybara", "mistral-orpo-trl")


def convert(src: Path, out: Path) -> None:
    category = {}
    with open(src / "question.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            category[q["question_id"]] = q["category"]
    scores: dict[str, dict[tuple[int, int], float]] = {m: {} for m in MODELS}
    with open(src / "model_judgment" / "gpt-4_single.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["model"] in scores:
                key = (r["question_id"], r["turn"])
                assert key not in scores[r["model"]], (r["model"], key)  # one judgment per answer
                scores[r["model"]][key] = r["score"]
    for model, got in scores.items():
        assert {q for q, _ in got} == set(category), model
        with open(out / f"{model}.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "slice", "turn1", "turn2"])
            for qid in sorted(category):
                w.writerow([qid, category[qid], *("" if got.get((qid, t), -1) < 0 else got[(qid, t)] for t in (1, 2))])


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
