"""Run simulated scenarios through the real decoder and engine (in memory, JSON bytes)."""

from __future__ import annotations

import msgspec

from drift.core.config import load_settings
from drift.core.engine import Engine
from drift.tools.simulate import iter_events, simulate

_enc = msgspec.json.Encoder()


def scenario_lines(name: str, seed: int = 0, days: int | None = None, volume: float = 1.0):
    sim = simulate(name, seed=seed, days=days, volume=volume)
    return sim, [_enc.encode(e) for e in iter_events(sim)]


def run_lines(lines, settings=None, chunk: int = 50_000, engine: Engine | None = None):
    engine = engine or Engine(settings or load_settings())
    dec = engine.decoder()
    alerts, rejected = [], []
    for i in range(0, len(lines), chunk):
        d = dec.decode(lines[i:i + chunk])
        rejected += d.rejected
        a, r = engine.process(d)
        alerts += a
        rejected += r
    return alerts, rejected, engine


def run_scenario(name: str, seed: int = 0, days: int | None = None, volume: float = 1.0,
                 chunk: int = 50_000, settings=None):
    sim, lines = scenario_lines(name, seed, days, volume)
    alerts, rejected, engine = run_lines(lines, settings, chunk)
    return sim, alerts, rejected



def run_streaming(sim, engine: Engine | None = None, chunk: int = 100_000):
    """A simulation through the decoder and engine, a chunk at a time (long, high-volume runs)."""
    from drift.tools.scorecard import replay_simulation

    return replay_simulation(sim, engine, chunk)
