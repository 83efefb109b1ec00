"""Detector-state checkpoints, one per input partition, tagged with the input offset they cover.

The commit order (``Service.checkpoint``), each step finished before the next starts:

1. **Alerts and DLQ records produced** for every input record before ``next_offset`` (they were
   sent while processing);
2. **flush and confirm delivery** (``acks=all``): any failed send stops the checkpoint, and nothing
   below happens;
3. **write the state** of each partition to ``drift.state``, key ``{group}/{topic}/{partition}``,
   tagged with ``next_offset``, and confirm its delivery (co-partitioned joined topics —
   scores, labels, feedback — share one engine per partition number: its state is one record,
   keyed by the scores partition, with every member's offset in ``offsets``);
4. **commit** ``next_offset`` to the consumer group.

Offsets are never committed ahead of what was delivered. After a crash between any two steps the
restarted service restores the newest state (its ``next_offset`` is the source of truth, not the
committed offset) and re-reads from there: alerts repeat only with the same ``alert_id``.

The format is safe to read from a shared topic (no pickle): ``MAGIC``, a format version byte,
the SHA-256 of the payload, then the zlib-compressed msgpack payload, in which numpy arrays are
``{"__nd__": [dtype, shape, bytes]}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import zlib
from typing import Any

import msgspec
import numpy as np

__all__ = ["Checkpoint", "CheckpointError", "encode_checkpoint", "decode_checkpoint", "state_key", "new_checkpoint",
           "FORMAT_VERSION"]

MAGIC = b"DRST"
FORMAT_VERSION = 1


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
    payload = msgspec.msgpack.encode(_to_plain(dataclasses.asdict(cp)))
    body = zlib.compress(payload, 3)
    return MAGIC + bytes([FORMAT_VERSION]) + hashlib.sha256(body).digest() + body


def decode_checkpoint(raw: bytes, *, fingerprint: str | None = None) -> Checkpoint:
    """Read a checkpoint; :class:`CheckpointError` says exactly why one is unusable."""
    if raw is None or len(raw) < 37 or raw[:4] != MAGIC:
        raise CheckpointError("not a drift checkpoint (bad magic)")
    if raw[4] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {raw[4]} is not this version's format {FORMAT_VERSION}")
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
    return cp


def new_checkpoint(group, topic, partition, next_offset, engine, offsets=None) -> Checkpoint:
    return Checkpoint(group, topic, int(partition), int(next_offset), engine.fingerprint(),
                      time.time(), engine.state_dict(), {k: int(v) for k, v in (offsets or {}).items()})
