"""Chunked, incremental checkpoints (issue 17): every record at most 1 MB, a checkpoint writes only
the chunks that changed, restore from the newest record per key (as on a compacted topic) gives
back the engine exactly, and a crash between the chunks and the manifest leaves the previous
checkpoint whole."""

from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.runtime import checkpoint
from drift.runtime.checkpoint import (
    MAX_RECORD,
    CheckpointError,
    ChunkWriter,
    checkpoints_from_records,
    chunk_key,
    decode_checkpoint,
    encode_checkpoint,
    new_checkpoint,
    state_key,
)

T0 = 1767225600.0
DIMS = ("relevance", "coherence", "format_valid")


def _arrays_as_bytes(obj):
    if isinstance(obj, np.ndarray):
        return obj.tobytes()
    raise TypeError(type(obj))


def _cols(pairs, hours, start_h=0, seed=0, only=None):
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("ts", "app", "intent", "dimension", "score", "trace_id")}
    which = range(pairs) if only is None else only
    for h in range(start_h, start_h + hours):
        for k in range(2):
            for j in which:
                for d in DIMS:
                    cols["ts"].append(T0 + h * 3600.0 + k * 1700.0 + rng.random() * 60)
                    cols["app"].append(f"app{j // 10}")
                    cols["intent"].append(f"i{j % 10}")
                    cols["dimension"].append(d)
                    cols["score"].append(float(rng.random() < 0.97) if d == "format_valid" else float(rng.beta(17, 3)))
                    cols["trace_id"].append(f"{h}-{k}-{j}")
    return cols


def _same_state(a, b, path=""):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and (a.tobytes() == b.tobytes()), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{path}/{i}")
    else:
        assert a == b or (a != a and b != b), path


class _Topic:
    """drift.state as records (key, value), oldest first; ``compacted()`` keeps the newest per key."""

    def __init__(self):
        self.records = []

    def write(self, base, write):
        for cid, value in write.records:
            self.records.append(SimpleNamespace(key=base if cid is None else chunk_key(base, cid), value=value))

    def compacted(self):
        newest = {}
        for r in self.records:
            newest.pop(r.key, None)
            newest[r.key] = r
        return list(newest.values())


@pytest.fixture(scope="module")
def engine_and_checkpoint():
    eng = Engine(load_settings())
    eng.feed(_cols(120, 40))
    return eng


def test_every_record_is_small_and_restore_gives_the_engine_back(engine_and_checkpoint):
    eng = engine_and_checkpoint
    base = state_key("g", "llm.scores", 0)
    w = ChunkWriter()
    write = w.prepare(new_checkpoint("g", "llm.scores", 0, 17, eng))
    w.commit(write)
    assert write.full_bytes > 10 * MAX_RECORD  # a state that would not fit one record
    assert all(len(v) <= MAX_RECORD for _, v in write.records) and len(write.chunks) > 20
    topic = _Topic()
    topic.write(base, write)
    cp = checkpoints_from_records(topic.compacted())[base]
    assert cp.next_offset == 17 and cp.fingerprint == eng.fingerprint()
    _same_state(cp.engine, eng.state_dict())
    restored = Engine(load_settings())
    restored.load_state(cp.engine)
    more = _cols(120, 30, start_h=40, seed=1)
    assert [a.id for a in restored.feed(dict(more))] == [a.id for a in eng.feed(dict(more))]


def test_a_checkpoint_writes_only_what_moved_and_a_crash_before_the_manifest_keeps_the_last_one():
    eng = Engine(load_settings())
    eng.feed(_cols(200, 40))
    base = state_key("g", "llm.scores", 3)
    topic, w = _Topic(), ChunkWriter()
    first = w.prepare(new_checkpoint("g", "llm.scores", 3, 100, eng))
    w.commit(first)
    topic.write(base, first)
    same = w.prepare(new_checkpoint("g", "llm.scores", 3, 100, eng))
    assert same.chunks == [] and same.written_bytes == 0  # nothing moved: only the manifest
    # 2 of 200 app/intents (1 %) get an hour of events
    eng.feed(_cols(200, 1, start_h=40, seed=2, only=[17, 18]))
    second = w.prepare(new_checkpoint("g", "llm.scores", 3, 110, eng))
    # the detectors' chunks that moved stay within 5 % of the state; the judge join (a FIFO of
    # recent score events, bounded by join_max_entries) expires from its front and is rewritten
    join = len(msgspec.msgpack.encode(eng.judge.state_dict(), enc_hook=_arrays_as_bytes))
    assert 0 < second.written_bytes <= 0.05 * second.full_bytes + join
    expected = eng.state_dict()
    # a crash after the chunks, before the manifest: the newest manifest is the first checkpoint
    # and the topic is compacted: the first checkpoint is still whole
    crashed = _Topic()
    crashed.records = list(topic.records)
    for cid, value in second.chunks:
        crashed.records.append(SimpleNamespace(key=chunk_key(base, cid), value=value))
    cp = checkpoints_from_records(crashed.compacted())[base]
    assert cp.next_offset == 100
    # delivered: the second checkpoint restores exactly
    w.commit(second)
    topic.write(base, second)
    cp = checkpoints_from_records(topic.compacted())[base]
    assert cp.next_offset == 110
    _same_state(cp.engine, expected)
    # a writer continuing a restored checkpoint writes to the other slot, not over it
    w2 = ChunkWriter.from_checkpoint(cp)
    eng.feed(_cols(200, 1, start_h=41, seed=3, only=[17]))
    third = w2.prepare(new_checkpoint("g", "llm.scores", 3, 120, eng))
    referenced = {f"{n}{'ab'[s]}" for n, s, _, _ in w2.table.values()}
    assert third.chunks and not referenced & {cid for cid, _ in third.chunks}


def test_unusable_chunks_are_named(engine_and_checkpoint):
    eng = engine_and_checkpoint
    w = ChunkWriter()
    write = w.prepare(new_checkpoint("g", "t", 0, 1, eng))
    chunks = dict(write.chunks)
    cid = write.chunks[3][0]
    with pytest.raises(CheckpointError, match=f"chunk {cid} of checkpoint epoch 1 is missing"):
        decode_checkpoint(write.manifest, chunks={k: v for k, v in chunks.items() if k != cid})
    bad = dict(chunks)
    bad[cid] = bad[cid][:-8] + bytes(8)
    with pytest.raises(CheckpointError, match=f"chunk {cid} (checksum mismatch|unreadable)"):
        decode_checkpoint(write.manifest, chunks=bad)
    old = dict(chunks)
    old[cid] = old[cid][:5] + (7).to_bytes(8, "big") + old[cid][13:]
    with pytest.raises(CheckpointError, match="holds epoch 7, the checkpoint needs epoch 1"):
        decode_checkpoint(write.manifest, chunks=old)
    with pytest.raises(CheckpointError, match="another rule configuration"):
        decode_checkpoint(write.manifest, fingerprint="other", chunks=chunks)


def test_a_whole_state_record_of_format_1_still_restores(engine_and_checkpoint):
    eng = engine_and_checkpoint
    raw = encode_checkpoint(new_checkpoint("g", "t", 0, 5, eng))
    assert raw[4] == 1
    cp = checkpoints_from_records([SimpleNamespace(key=b"g/t/0", value=raw)])[b"g/t/0"]
    _same_state(cp.engine, eng.state_dict())
    assert ChunkWriter.from_checkpoint(cp).table == {}


def test_a_series_that_moved_rewrites_its_rows_of_each_detector_and_flat_manifests_still_restore(monkeypatch):
    """Chunks cut by rows: one app/intent that moved rewrites the chunks holding its rows of each
    detector's arrays, a fraction of what cutting every array into flat 64 KB pieces rewrites (a
    piece of an 8-byte-per-series array covers 8,192 series); manifests of the flat layout (the
    first format-2 checkpoints) still restore to the same state."""
    monkeypatch.setattr(checkpoint, "BLOB_MIN", 1024)  # every per-series array in chunks, none in the skeleton
    eng = Engine(load_settings())
    eng.feed(_cols(600, 40))
    before = eng.state_dict()

    def moved(writer):
        first = writer.prepare(new_checkpoint("g", "t", 0, 1, eng))
        writer.commit(first)
        probe = Engine(load_settings())
        probe.load_state(before)
        probe.feed(_cols(600, 1, start_h=40, seed=2, only=[17]))
        return first, writer.prepare(new_checkpoint("g", "t", 0, 2, probe)), probe

    first, rows, probe = moved(ChunkWriter())
    records = {cid: v for cid, v in first.chunks}
    cp = decode_checkpoint(first.manifest, chunks=records)
    _same_state(cp.engine, before)
    with monkeypatch.context() as m:  # every array in flat pieces, as the first format-2 writer cut them
        m.setattr(checkpoint, "_row_groups", lambda blobs: [(name, [name], 0) for name in blobs])
        flat_first, flat, _ = moved(ChunkWriter())
    arrays = lambda w: w.written_bytes - w.written_by.get("", 0)  # noqa: E731  (the skeleton holds the join)
    assert 0 < arrays(rows) < arrays(flat) / 2, (arrays(rows), arrays(flat))  # measured: 255 KB vs 786 KB
    cp = decode_checkpoint(flat_first.manifest, chunks=dict(flat_first.chunks))
    _same_state(cp.engine, before)
    # a writer continuing the flat manifest moves to rows: it rewrites what it cuts differently
    w = ChunkWriter.from_checkpoint(cp)
    again = w.prepare(new_checkpoint("g", "t", 0, 3, probe))
    topic = {**dict(flat_first.chunks), **dict(again.chunks)}
    _same_state(decode_checkpoint(again.manifest, chunks=topic).engine, probe.state_dict())


def test_a_state_saved_by_the_previous_version_restores_and_fires_the_same_alerts():
    """``fixtures/state_v5_c86ced3.drst``: a format-1 checkpoint written by commit c86ced3 (CUSUM
    baseline rings in float64, histograms in uint32, bucket numbers in int64): ``provider_update``
    at volume 0.2, seed 0, only docs-qa/api, its first 14 days. Restored by this version, which
    keeps that state compact, and fed the remaining days, it raises the same alerts with the same
    ids as this version running all 30 days (a quality drop and a quality shift)."""
    from alert_id_fixture import ids_of
    from scenario_harness import run_lines, scenario_lines

    _, lines = scenario_lines("provider_update", 0, 30, 0.2)
    lines = [x for x in lines if b'"app":"docs-qa"' in x and b'"intent":"api"' in x]
    cp = decode_checkpoint((Path(__file__).parent / "fixtures" / "state_v5_c86ced3.drst").read_bytes())
    restored = Engine(load_settings())
    restored.load_state(cp.engine)
    kinds = {r.kind.name: r.detector for r in restored.runners.values()}
    assert kinds["cusum_mean"].agg.base_ring.dtype == np.float32 and kinds["ks"].agg.ring.dtype == np.uint8
    later, rejected, _ = run_lines(lines[cp.next_offset:], engine=restored)
    whole, _, _ = run_lines(lines)
    assert rejected == [] and len(whole) == 2
    assert ids_of(later) == ids_of(whole)
