"""A real retrieval setup for the demo: all-MiniLM-L6-v2 + faiss over the COVID-QA FAQ corpus.

The FAQ questions (213 public-health entries, deepset COVID-QA, Apache-2.0) are the indexed
documents; human paraphrases of them are real in-domain user questions, and CLINC150 queries
(CC BY 3.0) are real off-topic ones. Their top-k similarities are what a RAG app's retriever
would report, so a rising share of off-topic questions is an honest stale-knowledge drift.
"""

from __future__ import annotations

import csv

import numpy as np

from drift.embeddings.golden import clinc150_queries, data_dir

__all__ = ["faq_documents", "faq_paraphrases", "offtopic_queries", "similarity_pools"]

COVIDQA_SOURCE = "deepset COVID-QA (github.com/deepset-ai/COVID-QA), Apache-2.0"


def _covidqa(name: str):
    path = data_dir() / "covidqa" / name
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def faq_documents() -> list[str]:
    """The indexed documents: the FAQ's questions."""
    return [r["question"].strip() for r in _covidqa("faq_covidbert.csv") if r["question"].strip()]


def faq_paraphrases() -> list[str]:
    """Real in-domain user questions: human paraphrases of FAQ questions."""
    rows = _covidqa("eval_question_similarity_en.csv")
    return sorted({r["question_2"].strip() for r in rows if r.get("similar") == "1" and r["question_2"].strip()})


def offtopic_queries(n: int = 800, seed: int = 0) -> list[str]:
    """Real questions a COVID FAQ bot was not built for (CLINC150 travel, banking, small talk…)."""
    pool = clinc150_queries(["travel", "banking", "small_talk", "kitchen_and_dining", "utility"], "test")
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]


def similarity_pools(encoder, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` similarities (descending) of in-domain and off-topic questions against the FAQ."""
    import faiss

    docs = encoder.encode(faq_documents())
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    out = []
    for texts in (faq_paraphrases(), offtopic_queries(seed=seed)):
        q = np.ascontiguousarray(encoder.encode(texts), dtype=np.float32)
        sims, _ = index.search(q, k)
        out.append(np.clip(sims.astype(np.float64), -1.0, 1.0))
    return out[0], out[1]
