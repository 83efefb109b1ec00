"""Golden sets: the embedded queries an application was built for (``drift golden build``).

A golden set is the fixed reference of the ``query_centroid_shift`` rule: its centroid is what
the rolling query centroid is compared with, and its faiss index answers "how close is this
query to anything we built for" (coverage). On disk it is a folder::

    golden.json     metadata: format, encoder id, dimension, count, sha256 of the vectors,
                    created time, source files (path, sha256, format, split, domains, count)
    vectors.npy     (count, dim) float32, unit rows, little-endian
    centroid.npy    (dim,) float64, the normalised mean of the vectors
    index.faiss     faiss IndexFlatIP over the vectors (for other tools)

:meth:`GoldenSet.load` verifies the checksum and refuses a set built with another encoder or
dimension. The centroid and the index are rebuilt from the verified vectors (a flat index is
exactly its vectors), so the other two files can never disagree with them.

Query files (:func:`read_queries`): plain text (one query per line), JSONL (one object with a
``text`` field per line, or an array of them; objects without ``text``, e.g. score events, are
skipped) and JSON: the CLINC150 ``data_full.json`` format (splits of ``[text, intent]`` pairs,
selected with ``split`` and, through the ``domains.json`` beside it, ``domains``), or a list of
strings or objects with ``text``.

Real data (CLINC150, Larson et al. 2019, CC BY 3.0) lives in the repository's ``data/`` folder
with its licence; ``$DRIFT_DATA_DIR`` overrides it (:func:`data_dir`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GoldenSet", "load_golden_sets", "read_queries", "main_build", "data_dir",
           "clinc150_dir", "load_clinc150", "clinc150_queries", "FORMAT", "DATA_ENV"]

FORMAT = "llm-drift-golden/1"
DATA_ENV = "DRIFT_DATA_DIR"
NEAREST_CANDIDATES = 4  # faiss candidates whose similarity nearest_similarity recomputes exactly
_REPO = Path(__file__).resolve().parents[2]


# --- real data ---------------------------------------------------------------------------------

def data_dir() -> Path:
    """The data folder: ``$DRIFT_DATA_DIR``, else the repository's ``data/`` (CLINC150 and
    COVID-QA with their licences). Raises ``FileNotFoundError`` naming the place it looked."""
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
        raise FileNotFoundError(f"{DATA_ENV}={env} is not a folder (it should hold clinc150/)")
    tried = [_REPO / "data"]
    for p in tried:
        if p.is_dir():
            return p
    raise FileNotFoundError(
        "data folder not found (looked in " + ", ".join(map(str, tried))
        + f"); set {DATA_ENV} to the folder that holds clinc150/")


def clinc150_dir() -> Path:
    """The CLINC150 folder (``data_full.json`` and ``domains.json``), or ``FileNotFoundError``."""
    d = data_dir() / "clinc150"
    missing = [f for f in ("data_full.json", "domains.json") if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"CLINC150 data incomplete: {', '.join(missing)} missing in {d} "
                                f"(set {DATA_ENV} to the folder that holds clinc150/)")
    return d


@functools.lru_cache(maxsize=4)
def _load_clinc(path: str) -> tuple[dict, dict | None]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    dom_path = Path(path).with_name("domains.json")
    domains = None
    if dom_path.is_file():
        with open(dom_path, encoding="utf-8") as f:
            domains = json.load(f)
    return data, domains


def load_clinc150(path: str | os.PathLike | None = None) -> tuple[dict, dict | None]:
    """``(splits, domains)`` of CLINC150: ``splits[name]`` is a list of ``[text, intent]``,
    ``domains[domain]`` a list of intents (None if there is no ``domains.json`` beside it).
    Cached; treat the result as read-only."""
    p = Path(path) if path is not None else clinc150_dir() / "data_full.json"
    return _load_clinc(str(p.resolve()))


def _is_clinc(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(v, list) for v in obj.values())
            and any(v for v in obj.values())
            and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                    for v in obj.values() for p in v[:3]))


def _select_clinc(data: dict, domains_map: dict | None, domains: Sequence[str] | None,
                  split: str | None, where: str, per_intent: int | None = None) -> list[str]:
    split = split or "train"
    if split not in data:
        raise ValueError(f"{where}: no split {split!r} (splits: {', '.join(sorted(data))})")
    pairs = data[split]
    if per_intent is not None:
        seen: dict[str, int] = {}
        kept = []
        for p in pairs:
            seen[p[1]] = seen.get(p[1], 0) + 1
            if seen[p[1]] <= per_intent:
                kept.append(p)
        pairs = kept
    if domains:
        if domains_map is None:
            raise ValueError(f"{where}: domains given but no domains.json beside it")
        unknown = [d for d in domains if d not in domains_map]
        if unknown:
            raise ValueError(f"{where}: unknown domain(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(domains_map))})")
        intents = {i for d in domains for i in domains_map[d]}
        pairs = [p for p in pairs if p[1] in intents]
        if not pairs:
            raise ValueError(f"{where}: split {split!r} has no queries of domains "
                             f"{', '.join(domains)} (out-of-scope splits have none)")
    return [p[0] for p in pairs]


def clinc150_queries(domains: Sequence[str] | None = None, split: str = "train",
                     path: str | os.PathLike | None = None, per_intent: int | None = None) -> list[str]:
    """Query texts of CLINC150 ``split`` (all, or those of the intents of ``domains``; at most
    the first ``per_intent`` of each intent when given), in file order."""
    data, dmap = load_clinc150(path)
    return _select_clinc(data, dmap, domains, split, "CLINC150", per_intent)


# --- query files -------------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _texts_of(items: Iterable, where: str) -> list[str]:
    out = []
    for k, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            if "text" not in item:
                continue  # not a query (e.g. a score event in a replay file)
            if not isinstance(item["text"], str):
                raise ValueError(f"{where}, item {k}: 'text' must be a string, "
                                 f"got {type(item['text']).__name__}")
            out.append(item["text"])
        else:
            raise ValueError(f"{where}, item {k}: expected a string or an object with 'text', "
                             f"got {type(item).__name__}")
    return out


def _read_one(path: str, domains, split) -> tuple[list[str], dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"query file not found: {path}")
    suffix = p.suffix.lower()
    info: dict[str, Any] = {"path": str(p), "sha256": _file_sha256(p)}
    if suffix in (".jsonl", ".ndjson"):
        texts: list[str] = []
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
                texts.extend(_texts_of(obj if isinstance(obj, list) else [obj], f"{path}:{lineno}"))
        info["format"] = "jsonl"
    elif suffix == ".json":
        with open(p, encoding="utf-8") as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        if _is_clinc(obj):
            data, dmap = _load_clinc(str(p.resolve()))
            texts = _select_clinc(data, dmap, domains, split, path)
            info.update(format="clinc150", split=split or "train", domains=list(domains or []))
        elif isinstance(obj, list):
            texts = _texts_of(obj, path)
            info["format"] = "json"
        else:
            raise ValueError(f"{path}: expected the CLINC150 format (splits of [text, intent]) "
                             "or a list of queries")
    else:
        with open(p, encoding="utf-8") as f:
            texts = [line.strip() for line in f]
        texts = [t for t in texts if t]
        info["format"] = "text"
    texts = [t.strip() for t in texts]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path}: no queries found")
    info["count"] = len(texts)
    return texts, info


def read_queries(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                 domains: Sequence[str] | None = None, split: str | None = None,
                 with_sources: bool = False):
    """Read query texts from files (see the module docstring for the formats).

    ``domains`` and ``split`` select from CLINC150-format files (``split`` defaults to
    ``"train"``); giving them when no file is in that format is an error. Blank queries are
    dropped. Returns the texts, or ``(texts, sources)`` with ``with_sources=True``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    texts: list[str] = []
    sources: list[dict] = []
    for path in paths:
        t, info = _read_one(os.fspath(path), domains, split)
        texts.extend(t)
        sources.append(info)
    if (domains or split) and not any(s["format"] == "clinc150" for s in sources):
        raise ValueError("domains/split only select from CLINC150-format .json files, "
                         "and none was given")
    return (texts, sources) if with_sources else texts


# --- the golden set ----------------------------------------------------------------------------

def _checksum(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class GoldenSet:
    """Embedded golden queries: unit vectors, their centroid, a faiss index and metadata.

    Parameters
    ----------
    vectors : array_like, shape (count, dim)
        Unit-length query embeddings (stored as float32).
    encoder_id : str
        Encoder that produced them (``Encoder.encoder_id``).
    sources : list of dict, optional
        Where the queries came from (see :func:`read_queries` ``with_sources``).
    created : str, optional
        RFC 3339 creation time (default: now).
    encoder_dtype : str, optional
        Precision the encoder ran in (``"fp32"`` / ``"bf16"``), for the record.

    Attributes
    ----------
    vectors : ndarray (count, dim) float32
    centroid : ndarray (dim,) float64
        Normalised mean of the vectors.
    resultant : float
        Length of the (unnormalised) mean vector: 1 if all queries were identical, near 0 if
        they point every way. A concentrated set makes centroid shifts easier to see.
    """

    def __init__(self, vectors, *, encoder_id: str, sources: Sequence[dict] = (),
                 created: str | None = None, encoder_dtype: str | None = None):
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(f"golden vectors must be a non-empty (count, dim) array, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("golden vectors must be finite")
        norms = np.sqrt(np.einsum("ij,ij->i", v.astype(np.float64), v.astype(np.float64)))
        if np.abs(norms - 1).max() > 1e-3:
            raise ValueError("golden vectors must be L2-normalised (unit rows)")
        self.vectors = v
        self.encoder_id = str(encoder_id)
        self.encoder_dtype = encoder_dtype
        self.sources = [dict(s) for s in sources]
        self.created = created or _now()
        mean = v.astype(np.float64).sum(axis=0) / v.shape[0]
        self.resultant = float(np.sqrt((mean * mean).sum()))
        self.centroid = mean / self.resultant
        self.checksum = _checksum(v)
        self._index = None
        self._loo: np.ndarray | None = None  # leave-one-out nearest similarities (not saved)
        self._novelty: dict[float, float] = {}

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def metadata(self) -> dict:
        return {"format": FORMAT, "encoder_id": self.encoder_id, "encoder_dtype": self.encoder_dtype,
                "dim": self.dim, "count": self.count, "sha256": self.checksum,
                "created": self.created, "resultant": self.resultant, "sources": self.sources}

    def __repr__(self) -> str:
        return (f"GoldenSet(count={self.count}, dim={self.dim}, encoder_id={self.encoder_id!r}, "
                f"sha256={self.checksum[:12]}…)")

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, texts: Sequence[str], encoder, *, sources: Sequence[dict] = (),
              progress=None) -> GoldenSet:
        """Embed ``texts`` with ``encoder`` (an :class:`drift.embeddings.encoder.Encoder`)."""
        texts = list(texts)
        if not texts:
            raise ValueError("no queries to build a golden set from")
        vectors = encoder.encode(texts, progress=progress)
        return cls(vectors, encoder_id=encoder.encoder_id, sources=sources,
                   encoder_dtype=getattr(encoder, "dtype", None))

    # -- the index -----------------------------------------------------------------------------
    @property
    def index(self):
        """faiss ``IndexFlatIP`` over the vectors (built on first use)."""
        if self._index is None:
            import faiss

            index = faiss.IndexFlatIP(self.dim)
            index.add(self.vectors)
            self._index = index
        return self._index

    def search(self, vectors, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """faiss top-``k`` inner products and golden row ids of each query vector."""
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"query vectors have shape {x.shape}, the golden set has dimension {self.dim}")
        if x.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return self.index.search(x, k)

    def nearest_similarity(self, vectors) -> np.ndarray:
        """Top-1 inner product (cosine, for unit vectors) of each query with the golden set.

        faiss finds the :data:`NEAREST_CANDIDATES` best candidates; their inner products are
        then recomputed row by row in float64 and the largest is returned as float32. faiss's
        own scores depend (in the last bit) on how many queries are searched together; these
        do not, so coverage counts are the same whatever the batching.
        """
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        k = min(NEAREST_CANDIDATES, self.count)
        _, ids = self.search(x, k)
        out = np.empty(x.shape[0], np.float32)
        g = self.vectors
        for a in range(0, x.shape[0], 4096):
            cand = g[ids[a:a + 4096]].astype(np.float64)  # (m, k, dim)
            q = x[a:a + 4096].astype(np.float64)[:, None, :]
            out[a:a + 4096] = (cand * q).sum(axis=2).max(axis=1)
        return out

    def loo_similarities(self) -> np.ndarray:
        """Each golden vector's cosine similarity to its most similar *other* golden vector.

        Computed like :meth:`nearest_similarity` (faiss candidates, inner products recomputed in
        float64, returned as float32) with the vector itself left out, so the values are those a
        new query from the golden set's own distribution would get. Computed once and cached on
        the object (not written to disk: golden-set files and checksums are unchanged). Empty
        for a set of one vector.
        """
        if self._loo is None:
            n = self.count
            out = np.empty(n if n > 1 else 0, np.float32)
            if n > 1:
                _, ids = self.search(self.vectors, min(NEAREST_CANDIDATES + 1, n))
                g = self.vectors
                for a in range(0, n, 4096):
                    cid = ids[a:a + 4096]
                    sim = (g[cid].astype(np.float64) * g[a:a + 4096].astype(np.float64)[:, None, :]).sum(axis=2)
                    sim[(cid == np.arange(a, a + cid.shape[0])[:, None]) | (cid < 0)] = -np.inf
                    out[a:a + 4096] = sim.max(axis=1)
            self._loo = out
        return self._loo

    def novelty_threshold(self, q: float = 0.01) -> float:
        """The ``q``-quantile of :meth:`loo_similarities`: a query whose nearest golden neighbour
        is less similar than this is *novel* (``query_novelty_rise``); a query from the golden
        set's own distribution is novel with probability about ``q``. Cached per ``q``; ``-inf``
        (nothing is novel) for a set of one vector.

        >>> import numpy as np
        >>> g = GoldenSet(np.eye(3, dtype=np.float32), encoder_id="toy")
        >>> g.novelty_threshold(0.5)  # every vector's nearest other one is orthogonal to it
        0.0
        """
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q!r}")
        q = float(q)
        if q not in self._novelty:
            loo = self.loo_similarities()
            self._novelty[q] = float(np.quantile(loo.astype(np.float64), q)) if loo.size else -np.inf
        return self._novelty[q]

    def null_distances(self, window_size: int, n_draws: int = 200, seed: int = 0) -> np.ndarray:
        """Cosine distances between the golden centroid and centroids of in-distribution windows.

        Each of the ``n_draws`` windows holds ``window_size`` queries drawn at random, with
        replacement, from the golden set (i.i.d. draws from the distribution it stands for), so
        sizes beyond ``count`` work too. Seeded: the same arguments give the same distances.
        """
        from detectors.centroid import cosine_distance

        if isinstance(window_size, bool) or int(window_size) != window_size or window_size < 1:
            raise ValueError(f"window_size must be a positive integer, got {window_size!r}")
        if isinstance(n_draws, bool) or int(n_draws) != n_draws or n_draws < 1:
            raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(int(window_size), np.full(self.count, 1.0 / self.count),
                                 size=int(n_draws))
        sums = counts.astype(np.float64) @ self.vectors.astype(np.float64)
        return cosine_distance(sums, self.centroid)

    # -- files ---------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the golden set into ``directory`` (created; refuses to replace one unless
        ``overwrite``). Returns the folder."""
        d = Path(directory)
        if (d / "golden.json").exists() and not overwrite:
            raise FileExistsError(f"{d} already holds a golden set (overwrite to replace it)")
        d.mkdir(parents=True, exist_ok=True)
        import faiss

        def atomic(name, write):
            tmp = d / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, d / name)

        def write_npy(arr):
            def w(tmp):
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
            return w

        atomic("vectors.npy", write_npy(self.vectors.astype("<f4")))
        atomic("centroid.npy", write_npy(self.centroid.astype("<f8")))
        atomic("index.faiss", lambda tmp: faiss.write_index(self.index, str(tmp)))
        # metadata last: a folder with golden.json is complete
        atomic("golden.json", lambda tmp: tmp.write_text(json.dumps(self.metadata, indent=2) + "\n",
                                                         encoding="utf-8"))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, expect_encoder_id: str | None = None,
             expect_dim: int | None = None) -> GoldenSet:
        """Read a golden set, refusing (``ValueError``) one whose encoder or dimension differs
        from the expected ones, or whose vectors fail their checksum."""
        d = Path(directory)
        meta_path = d / "golden.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no golden set in {d} (golden.json missing); "
                                    "build one with `drift golden build`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"golden set {d}: golden.json is not JSON ({exc.msg})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"golden set {d}: format {got!r}, expected {FORMAT!r}")
        missing = [k for k in ("encoder_id", "dim", "count", "sha256") if k not in meta]
        if missing:
            raise ValueError(f"golden set {d}: golden.json lacks {', '.join(missing)}")
        if expect_encoder_id is not None and meta["encoder_id"] != expect_encoder_id:
            raise ValueError(
                f"golden set {d} was built with encoder {meta['encoder_id']!r}, but queries are "
                f"embedded with {expect_encoder_id!r}: vectors of different encoders are not "
                "comparable; rebuild it with `drift golden build`")
        if expect_dim is not None and int(meta["dim"]) != int(expect_dim):
            raise ValueError(
                f"golden set {d} has dimension {meta['dim']}, but query embeddings have "
                f"dimension {expect_dim}; rebuild it with the encoder that makes them")
        vec_path = d / "vectors.npy"
        if not vec_path.is_file():
            raise FileNotFoundError(f"golden set {d}: vectors.npy missing")
        try:
            vectors = np.load(vec_path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"golden set {d}: vectors.npy is unreadable ({exc})") from None
        if vectors.dtype != np.dtype("<f4") or vectors.shape != (int(meta["count"]), int(meta["dim"])):
            raise ValueError(
                f"golden set {d}: vectors.npy holds {vectors.dtype} {vectors.shape}, golden.json "
                f"says float32 ({meta['count']}, {meta['dim']})")
        got = _checksum(vectors)
        if got != meta["sha256"]:
            raise ValueError(
                f"golden set {d}: checksum mismatch: vectors.npy has sha256 {got[:16]}…, "
                f"golden.json records {str(meta['sha256'])[:16]}…; the files are corrupt or were "
                "modified; rebuild the golden set")
        return cls(vectors, encoder_id=meta["encoder_id"], sources=meta.get("sources", ()),
                   created=meta.get("created"), encoder_dtype=meta.get("encoder_dtype"))


def load_golden_sets(directory: str | os.PathLike, expect_encoder_id: str | None = None,
                     expect_dim: int | None = None) -> dict[str, GoldenSet]:
    """Golden sets of a folder: ``{"*": set}`` when it is one golden set (for every app), or
    ``{app: set}`` for each ``<directory>/<app>/`` subfolder that holds one.

    Apps with different purposes need their own golden sets: a window of one app's queries is
    far from the centroid of a set pooled over several apps even when nothing changed.
    """
    d = Path(directory)
    if (d / "golden.json").is_file():
        return {"*": GoldenSet.load(d, expect_encoder_id, expect_dim)}
    subs = sorted(p for p in d.iterdir() if (p / "golden.json").is_file()) if d.is_dir() else []
    if not subs:
        raise FileNotFoundError(f"no golden set in {d} (neither {d}/golden.json nor "
                                f"{d}/<app>/golden.json); build one with `drift golden build`")
    return {p.name: GoldenSet.load(p, expect_encoder_id, expect_dim) for p in subs}


# --- `drift golden build` ----------------------------------------------------------------------

def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drift golden build",
        description="Embed a golden set of queries -- the queries your application was built to\n"
        "answer -- with all-MiniLM-L6-v2 (on the CPU, offline) and write its vectors, centroid,\n"
        "faiss index and metadata to DIR. The query_centroid_shift rule compares the rolling\n"
        "centroid of production queries with it (config: queries.golden = DIR).",
        epilog="query files:\n"
        "  .txt    one query per line\n"
        "  .jsonl  objects with a \"text\" field (others, e.g. score events, are skipped)\n"
        "  .json   a list of queries, or the CLINC150 data_full.json format (--split, --domains)\n"
        "\nexamples:\n"
        "  drift golden build faq_queries.txt --out golden/support-bot\n"
        "  drift golden build data/clinc150/data_full.json --domains banking credit_cards "
        "--split train --out golden/support-bot",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("queries", nargs="+", metavar="QUERIES", help="query files (.txt, .jsonl, .json)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the golden set to")
    p.add_argument("--domains", nargs="+", metavar="DOMAIN",
                   help="CLINC150 files only: keep the intents of these domains (space- or "
                   "comma-separated)")
    p.add_argument("--split", metavar="NAME",
                   help="CLINC150 files only: which split to read (default: train)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="texts per forward pass "
                   "(default: 64)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="precision; bf16 is used only if it matches fp32 to cosine 0.9999 on a "
                   "self-check (default: fp32)")
    p.add_argument("--force", action="store_true", help="replace a golden set already in DIR")
    return p


def main_build(argv: Sequence[str] | None = None) -> int:
    """``drift golden build QUERIES… --out DIR [--domains …] [--split train]``; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    domains = [d for item in (args.domains or []) for d in item.split(",") if d] or None

    def fail(msg: str) -> int:
        print(f"drift golden build: error: {msg}", file=sys.stderr)
        return 1

    out = Path(args.out)
    if (out / "golden.json").exists() and not args.force:
        return fail(f"{out} already holds a golden set (use --force to replace it)")
    try:
        texts, sources = read_queries(args.queries, domains=domains, split=args.split,
                                      with_sources=True)
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    print(f"read {len(texts)} queries from {len(sources)} file(s); loading the encoder…",
          file=sys.stderr)
    from drift.embeddings.encoder import Encoder, stderr_progress

    try:
        encoder = Encoder(threads=args.threads, batch_size=args.batch_size, dtype=args.dtype)
    except (ImportError, OSError, ValueError) as exc:
        return fail(str(exc))
    if encoder.fallback_reason:
        print(f"note: {encoder.fallback_reason}", file=sys.stderr)
    golden = GoldenSet.build(texts, encoder, sources=sources, progress=stderr_progress("embedding"))
    golden.save(out, overwrite=args.force)
    q = np.quantile(golden.null_distances(500), [0.5, 0.95])
    print(f"wrote golden set to {out}: {golden.count} queries, dim {golden.dim}, "
          f"encoder {golden.encoder_id} ({encoder.dtype}), sha256 {golden.checksum[:12]}…, "
          f"null distance at 500 queries: median {q[0]:.4f}, 95% {q[1]:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_build())


def golden_for_settings(settings):
    """Golden sets of ``settings.golden`` and the encoder class, refused at start-up (as a
    :class:`~drift.core.config.ConfigError` naming ``queries.golden``) if they do not match."""
    from drift.core.config import ConfigError
    from drift.embeddings.encoder import Encoder, default_encoder_id

    if not settings.golden:
        return {}, None
    try:
        golden = load_golden_sets(settings.golden, expect_encoder_id=default_encoder_id())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"queries.golden: {exc}") from None
    dims = {g.dim for g in golden.values()}
    if len(dims) > 1:
        raise ConfigError(f"queries.golden: the golden sets have different dimensions {sorted(dims)}")
    return golden, Encoder
