"""Detector-state checkpoints, one per input partition, tagged with the input offset they cover.

The commit order (``Service.checkpoint``), each step finished before the next starts:

1. **Alerts and DLQ records produced** for every input record before ``next_offset`` (they were
   sent while processing);
2. **flush and confirm delivery** (``acks=all``): any failed send stops the checkpoint, and nothing
   below happens;
3. **write the state** of each partition to ``drift.state``: the chunks that changed since the
   last checkpoint (keys ``{group}/{topic}/{partition}/{chunk}``, each at most 1 MB), confirmed,
   then the *manifest* (key ``{group}/{topic}/{partition}``) tagged with ``next_offset``, listing
   the epoch and digest of every chunk, confirmed (co-partitioned joined topics — scores, labels,
   feedback — share one engine per partition number: its state is keyed by the scores
   partition, with every member's offset in ``offsets``);
4. **commit** ``next_offset`` to the consumer group.

Offsets are never committed ahead of what was delivered. After a crash between any two steps the
restarted service restores the newest state (its ``next_offset`` is the source of truth, not the
committed offset) and re-reads from there: alerts repeat only with the same ``alert_id``.

The format is safe to read from a shared topic (no pickle): ``MAGIC``, a format version byte,
the SHA-256 of the payload, then the zlib-compressed msgpack payload, in which numpy arrays are
``{"__nd__": [dtype, shape, bytes]}``. Format 1 holds the whole engine state in that payload;
format 2 (:class:`ChunkWriter`, what ``drift serve`` writes) holds a chunk table instead, and each
chunk record is ``CHUNK_MAGIC``, the format byte, its epoch (8 bytes), the xxh3-128 digest of its
raw bytes and those bytes zlib-compressed. Both formats are read.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import time
import zlib
from typing import Any

import msgspec
import numpy as np
import xxhash

__all__ = ["Checkpoint", "CheckpointError", "encode_checkpoint", "decode_checkpoint", "state_key", "new_checkpoint",
           "FORMAT_VERSION", "ChunkWriter", "ChunkWrite", "chunk_key", "checkpoints_from_records"]

MAGIC = b"DRST"
FORMAT_VERSION = 2  # 2: a manifest whose state is in chunk records; 1: the whole state in one record
WHOLE_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, another format, another configuration)."""


@dataclasses.dataclass
class Checkpoint:
    group: str
    topic: str
    partition: int
    next_offset: int
    fingerprint: str
    written_at: float
    engine: dict[str, Any]
    offsets: dict[str, int] = dataclasses.field(default_factory=dict)  # topic -> next offset, joined partitions
    chunks: dict[str, Any] | None = None  # format 2: the manifest's chunk table (epoch, pieces)

    def offset_of(self, topic: str) -> int | None:
        """Where ``topic``'s partition resumes (None: this state has not read it)."""
        if self.offsets:
            return self.offsets.get(topic)
        return self.next_offset if topic == self.topic else None


def state_key(group: str, topic: str, partition: int) -> bytes:
    return f"{group}/{topic}/{partition}".encode()


def _to_plain(obj):
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype == object:
            return {"__list__": [_to_plain(v) for v in arr.tolist()]}
        return {"__nd__": [arr.dtype.str, list(arr.shape), arr.tobytes()]}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_plain(obj):
    if isinstance(obj, dict):
        if "__nd__" in obj and len(obj) == 1:
            dtype, shape, raw = obj["__nd__"]
            return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_plain(v) for v in obj]
    return obj


def encode_checkpoint(cp: Checkpoint) -> bytes:
    """The whole state in one record (format 1): what ``drift ingest`` and ``drift replay
    --write-state`` write; ``drift serve`` writes chunks (:class:`ChunkWriter`)."""
    payload = msgspec.msgpack.encode(_to_plain(dataclasses.asdict(cp)))
    body = zlib.compress(payload, 3)
    return MAGIC + bytes([WHOLE_FORMAT]) + hashlib.sha256(body).digest() + body


def decode_checkpoint(raw: bytes, *, fingerprint: str | None = None,
                      chunks: dict[str, bytes] | None = None) -> Checkpoint:
    """Read a checkpoint; :class:`CheckpointError` says exactly why one is unusable.

    A format-2 manifest's state is assembled from ``chunks`` (chunk id -> newest record value);
    without them the manifest alone is returned (``engine`` None)."""
    if raw is None or len(raw) < 37 or raw[:4] != MAGIC:
        raise CheckpointError("not a drift checkpoint (bad magic)")
    if raw[4] not in (WHOLE_FORMAT, FORMAT_VERSION):
        raise CheckpointError(f"checkpoint format {raw[4]} is not one this version reads "
                              f"({WHOLE_FORMAT} or {FORMAT_VERSION})")
    digest, body = raw[5:37], raw[37:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checkpoint checksum mismatch (corrupted)")
    try:
        doc = _from_plain(msgspec.msgpack.decode(zlib.decompress(body)))
        cp = Checkpoint(**doc)
    except Exception as exc:  # a checksummed body that still fails to parse
        raise CheckpointError(f"checkpoint payload unreadable: {exc}") from None
    if fingerprint is not None and cp.fingerprint != fingerprint:
        raise CheckpointError(f"checkpoint was written with another rule configuration "
                              f"(fingerprint {cp.fingerprint}, this service {fingerprint})")
    if raw[4] == FORMAT_VERSION and chunks is not None:
        if cp.chunks is None:
            raise CheckpointError("a format-2 checkpoint without its chunk table")
        try:
            cp.engine = _assemble(cp, chunks)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"checkpoint chunks unreadable: {exc}") from None
    return cp


def new_checkpoint(group, topic, partition, next_offset, engine, offsets=None) -> Checkpoint:
    return Checkpoint(group, topic, int(partition), int(next_offset), engine.fingerprint(),
                      time.time(), engine.state_dict(), {k: int(v) for k, v in (offsets or {}).items()})


# -- chunked, incremental checkpoints (format 2) ----------------------------------------------------
PIECE = 64 * 1024  # raw bytes per chunk: small, so a checkpoint rewrites little beyond the rows that moved
BLOB_MIN = 16 * 1024  # arrays at least this large travel in chunks; smaller ones stay in the skeleton
MAX_RECORD = 1 << 20
CHUNK_MAGIC = b"DRCK"
SLOTS = "ab"


def _split(state) -> tuple[bytes, dict[str, np.ndarray]]:
    """The engine state as msgpack with every large array replaced by a reference into the
    returned blobs (named by their order: the state's layout is stable between checkpoints)."""
    blobs: dict[str, np.ndarray] = {}

    def hook(obj):
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                return {"__list__": obj.tolist()}
            arr = np.ascontiguousarray(obj)
            if arr.nbytes >= BLOB_MIN:
                name = str(len(blobs) + 1)
                blobs[name] = arr
                return {"__blob__": [name, arr.dtype.str, list(arr.shape)]}
            return {"__nd__": [arr.dtype.str, list(arr.shape), arr.tobytes()]}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot checkpoint a {type(obj).__name__}")

    return msgspec.msgpack.Encoder(enc_hook=hook).encode(state), blobs


def _join(skel, blobs: dict):
    if isinstance(skel, dict):
        if "__blob__" in skel and len(skel) == 1:
            path, dtype, shape = skel["__blob__"]
            return blobs[path].view(np.dtype(dtype)).reshape(shape)  # the array owns its buffer
        if "__nd__" in skel and len(skel) == 1:
            return _from_plain(skel)
        return {k: _join(v, blobs) for k, v in skel.items()}
    if isinstance(skel, list):
        return [_join(v, blobs) for v in skel]
    return skel


def _row_groups(blobs: dict[str, np.ndarray]) -> list[tuple[str, list[str], int]]:
    """How the blobs are cut: ``(path, member blob names, rows per chunk)``; rows 0 = flat pieces.

    Consecutive blobs with the same number of rows (a detector's per-series arrays, in the order
    its state lists them) form a *row group*, path ``"{first}-{last}"``: a chunk holds the same
    rows (series) of every member, as many as fit in :data:`PIECE`, so a series that moved
    rewrites about ``PIECE`` bytes, not a piece of every array it has a row in (an 8-byte
    per-series array's 64 KB piece covers 8,192 series). A blob whose one row is larger than
    ``PIECE`` is cut into flat pieces under its own name."""
    out: list[tuple[str, list[str], int]] = []
    group: list[str] = []
    width = 0

    def close():
        nonlocal width
        if group:
            out.append((f"{group[0]}-{group[-1]}", list(group), max(1, PIECE // width)))
            group.clear()
        width = 0

    for name, arr in blobs.items():
        row = arr.nbytes // arr.shape[0] if arr.ndim and arr.shape[0] else 0
        if not row or row > PIECE:
            close()
            out.append((name, [name], 0))
            continue
        if group and (arr.shape[0] != blobs[group[0]].shape[0] or width + row > PIECE):
            close()
        group.append(name)
        width += row
    close()
    return out


def _rows2d(arr: np.ndarray) -> np.ndarray:
    """``arr``'s bytes (C-contiguous, rows of at least one byte), one row per first-axis index."""
    return arr.reshape(arr.shape[0], -1).view(np.uint8)


def chunk_key(base: bytes, chunk: str) -> bytes:
    """``{group}/{topic}/{partition}/{chunk}``: the record of one chunk of ``base``'s state."""
    return base + b"/" + chunk.encode()


def _chunk_value(epoch: int, digest: bytes, piece) -> bytes:
    return CHUNK_MAGIC + bytes([FORMAT_VERSION]) + epoch.to_bytes(8, "big") + digest + zlib.compress(piece, 1)


@dataclasses.dataclass
class ChunkWrite:
    """What one checkpoint of one partition writes: its changed chunks, then its manifest."""

    chunks: list[tuple[str, bytes]]  # (chunk id, record value)
    manifest: bytes
    table: dict  # the writer's table once the manifest is delivered
    epoch: int
    full_bytes: int  # raw bytes of the whole state (for the ratio: written / full)
    written_by: dict[str, int]  # raw bytes of the chunks written, per unit ("" the skeleton)

    @property
    def written_bytes(self) -> int:
        """Raw bytes of the chunks written."""
        return sum(self.written_by.values())

    @property
    def records(self) -> list[tuple[str | None, bytes]]:
        return [*self.chunks, (None, self.manifest)]


class ChunkWriter:
    """Incremental checkpoints of one partition's engine (format 2).

    The state is cut into chunks of at most :data:`PIECE` raw bytes: each large array's bytes
    (the per-series rows of the detectors), and the msgpack *skeleton* holding everything else.
    A checkpoint writes only the chunks whose xxh3-128 digest differs from the one last written,
    then a *manifest* (key ``{group}/{topic}/{partition}``) listing, for every chunk, the epoch and
    digest it must have. A chunk is written to the one of its two keys (slots ``a``/``b``) that the
    delivered manifest does **not** reference, so a crash before the new manifest is delivered
    leaves the previous checkpoint whole, on a compacted topic too: restore reads only the newest
    record per key.
    """

    def __init__(self, table: dict | None = None, epoch: int = 0):
        # (path, piece) -> [chunk number, slot, epoch, digest]
        self.table: dict[tuple[str, int], list] = dict(table or {})
        self.epoch = int(epoch)

    @classmethod
    def from_checkpoint(cls, cp: Checkpoint | None) -> ChunkWriter:
        """The writer that continues restored checkpoint ``cp`` (a fresh one for None or format 1)."""
        if cp is None or cp.chunks is None or "table" not in cp.chunks:
            return cls()
        return cls(cp.chunks["table"], int(cp.chunks["epoch"]))

    def prepare(self, cp: Checkpoint) -> ChunkWrite:
        """The records of checkpoint ``cp`` (its ``engine`` the state dict). Nothing changes in
        the writer until :meth:`commit` (call it once the records are delivered)."""
        epoch = self.epoch + 1
        skel, blobs = _split(cp.engine)
        used = {v[0] for v in self.table.values()}
        free = (n for n in itertools.count() if n not in used)
        table: dict[tuple[str, int], list] = {}
        chunks: list[tuple[str, bytes]] = []
        full = 0
        written_by: dict[str, int] = {}
        cols: dict[str, Any] = {"epoch": epoch, "paths": [], "n": [], "slot": [], "epochs": [], "rows": []}
        units = [("", [memoryview(skel)], 0)]
        for path, names, rows in _row_groups(blobs):
            if rows:
                units.append((path, [_rows2d(blobs[nm]).data for nm in names], rows))
            else:
                units.append((path, [blobs[path].reshape(-1).view(np.uint8).data], 0))
        for path, parts, rows in units:
            if rows:  # a row group: rows [i * rows, (i + 1) * rows) of every member
                count = max(1, -(-len(parts[0]) // rows))
                pieces = ([m[i * rows:(i + 1) * rows] for m in parts] for i in range(count))
            else:
                mv = parts[0]
                count = max(1, -(-len(mv) // PIECE))
                pieces = ([mv[i * PIECE:(i + 1) * PIECE]] for i in range(count))
            ns, slots, epochs = np.zeros(count, np.int64), np.zeros(count, np.uint8), np.zeros(count, np.int64)
            for i, members in enumerate(pieces):
                h = xxhash.xxh3_128()
                size = 0
                for m in members:
                    h.update(m)
                    size += m.nbytes
                digest = h.digest()
                full += size
                old = self.table.get((path, i))
                if old is not None and old[3] == digest:
                    entry = old
                else:
                    n = old[0] if old is not None else next(free)
                    slot = 1 - old[1] if old is not None else 0
                    entry = [n, slot, epoch, digest]
                    piece = members[0] if len(members) == 1 else b"".join(members)
                    chunks.append((f"{n}{SLOTS[slot]}", _chunk_value(epoch, digest, piece)))
                    written_by[path] = written_by.get(path, 0) + size
                table[(path, i)] = entry
                ns[i], slots[i], epochs[i] = entry[0], entry[1], entry[2]
            cols["paths"].append(path)
            cols["n"].append(ns)
            cols["slot"].append(slots)
            cols["epochs"].append(epochs)
            cols["rows"].append(rows)
        head = {f.name: getattr(cp, f.name) for f in dataclasses.fields(cp) if f.name not in ("engine", "chunks")}
        head["engine"] = None
        head["chunks"] = cols
        body = zlib.compress(msgspec.msgpack.encode(_to_plain(head)), 6)
        manifest = MAGIC + bytes([FORMAT_VERSION]) + hashlib.sha256(body).digest() + body
        if len(manifest) > MAX_RECORD:
            raise CheckpointError(f"the checkpoint manifest is {len(manifest):,} bytes, over {MAX_RECORD:,}")
        return ChunkWrite(chunks, manifest, table, epoch, full, written_by)

    def commit(self, write: ChunkWrite) -> None:
        self.table, self.epoch = write.table, write.epoch


def _assemble(cp: Checkpoint, chunks: dict[str, bytes]) -> dict:
    """The engine state of manifest ``cp`` from its chunk records (``chunk id -> newest value``).

    Each array is decompressed piece by piece into its own buffer (no joined copies): restoring
    100,000 series must not need several times their state in memory. The skeleton comes first:
    its references give the shapes a row group's chunks are cut back into."""
    assert cp.chunks is not None
    table = {}  # (path, piece) -> [chunk number, slot, epoch, digest]: what a writer continues from
    units = list(zip(cp.chunks["paths"], cp.chunks["n"], cp.chunks["slot"], cp.chunks["epochs"],
                     cp.chunks.get("rows") or [0] * len(cp.chunks["paths"])))

    def pieces(path, ns, slots, epochs):
        """Each chunk of unit ``path``, decompressed and checked, in order."""
        for i, (n, slot, epoch) in enumerate(zip(ns.tolist(), slots.tolist(), epochs.tolist())):
            cid = f"{n}{SLOTS[slot]}"
            raw = chunks.get(cid)
            if raw is None:
                raise CheckpointError(f"chunk {cid} of checkpoint epoch {cp.chunks['epoch']} is missing")
            if raw[:4] != CHUNK_MAGIC or len(raw) < 29 or raw[4] != FORMAT_VERSION:
                raise CheckpointError(f"chunk {cid} is not a drift checkpoint chunk of format {FORMAT_VERSION}")
            got = int.from_bytes(raw[5:13], "big")
            if got != epoch:
                raise CheckpointError(f"chunk {cid} holds epoch {got}, the checkpoint needs epoch {epoch} "
                                      "(overwritten by a later checkpoint)")
            try:
                piece = zlib.decompress(raw[29:])
            except zlib.error as exc:
                raise CheckpointError(f"chunk {cid} unreadable: {exc}") from None
            digest = bytes(raw[13:29])
            if xxhash.xxh3_128_digest(piece) != digest:
                raise CheckpointError(f"chunk {cid} checksum mismatch (corrupted)")
            table[(path, i)] = [n, slot, epoch, digest]
            yield piece

    def flat(unit) -> np.ndarray:
        buf = np.empty(len(unit[1]) * PIECE, np.uint8)
        at = 0
        for piece in pieces(*unit[:4]):
            buf[at:at + len(piece)] = np.frombuffer(piece, np.uint8)
            at += len(piece)
        return buf[:at]

    skel_unit = next(u for u in units if u[0] == "")
    skel = msgspec.msgpack.decode(flat(skel_unit).tobytes())
    refs: dict[str, tuple[str, list[int]]] = {}
    _blob_refs(skel, refs)
    blobs: dict[str, np.ndarray] = {}
    for unit in units:
        path, rows = unit[0], int(unit[4])
        if path == "":
            continue
        if not rows:
            blobs[path] = flat(unit)
            continue
        first, last = (int(x) for x in path.split("-"))
        names = [str(k) for k in range(first, last + 1)]
        arrays = {nm: np.empty(refs[nm][1], np.dtype(refs[nm][0])) for nm in names}
        parts = [_rows2d(arrays[nm]) for nm in names]
        for i, piece in enumerate(pieces(*unit[:4])):
            at, lo = 0, i * rows
            for m in parts:
                block = m[lo:lo + rows]
                if block.nbytes > len(piece) - at:
                    raise CheckpointError(f"a chunk of {path} is shorter than its rows")
                block[...] = np.frombuffer(piece, np.uint8, block.nbytes, at).reshape(block.shape)
                at += block.nbytes
        for nm, arr in arrays.items():
            blobs[nm] = arr.reshape(-1).view(np.uint8)
    cp.chunks["table"] = table
    return _join(skel, blobs)


def _blob_refs(skel, out: dict) -> None:
    """Every ``__blob__`` reference of a decoded skeleton: name -> (dtype, shape)."""
    if isinstance(skel, dict):
        if "__blob__" in skel and len(skel) == 1:
            name, dtype, shape = skel["__blob__"]
            out[name] = (dtype, list(shape))
            return
        for v in skel.values():
            _blob_refs(v, out)
    elif isinstance(skel, list):
        for v in skel:
            _blob_refs(v, out)


def checkpoints_from_records(records, group: str | None = None) -> dict[bytes, Checkpoint]:
    """The newest whole checkpoint per state key from ``drift.state`` records (objects with
    ``key`` and ``value``, oldest first), chunks assembled; ``group`` keeps only its keys."""
    manifests: dict[bytes, list[bytes]] = collections.defaultdict(list)
    chunks: dict[bytes, dict[str, bytes]] = collections.defaultdict(dict)
    for r in records:
        if group is not None and not r.key.startswith(group.encode() + b"/"):
            continue
        if r.value[:4] == CHUNK_MAGIC:
            base, cid = r.key.rsplit(b"/", 1)
            chunks[base][cid.decode()] = r.value
        else:
            manifests[r.key].append(r.value)
    out = {}
    for key, values in manifests.items():
        for raw in reversed(values):
            try:
                out[key] = decode_checkpoint(raw, chunks=chunks.get(key, {}))
                break
            except CheckpointError:
                continue
    return out
