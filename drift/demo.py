"""``drift demo``: the nine-words story on simulated traffic, start to finish.

Simulates 30 days of traffic for three apps, in which nine words are removed from one prompt
template on day 11 (``prompt_cleanup``), replays it through the engine, prints each alert as it is
raised, and ends with a scorecard against the ground truth.
"""

from __future__ import annotations

import json
import os
import sys
import time

from drift.alerts import render
from drift.config import load_settings
from drift.replay import replay
from drift.scorecard import score
from drift.simulate import simulate, write_jsonl

__all__ = ["run_demo"]


def run_demo(args) -> int:
    workdir = args.workdir or os.path.join("out", "demo")
    os.makedirs(workdir, exist_ok=True)
    events = os.path.join(workdir, "prompt_cleanup.jsonl")
    alerts_path = os.path.join(workdir, "alerts.jsonl")
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    say("llm-drift demo: a prompt cleanup removes nine words from a template on day 11.")
    say("Latency, errors and spend stay green; only the score distributions move.\n")
    t0 = time.perf_counter()
    sim = simulate("prompt_cleanup", seed=args.seed)
    n = write_jsonl(sim, events, batch=100)
    say(f"simulated {n:,} events over {sim.days} days (3 apps, 9 intents, 6 score dimensions, "
        f"retrieval) in {time.perf_counter() - t0:.1f} s → {events}")
    say("replaying through the engine (the same one `drift serve` runs)…\n")
    settings = load_settings(getattr(args, "config", None), os.environ)
    tty = sys.stdout.isatty()
    last = [0.0]

    def progress(rep):
        if tty and time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            day = (rep.last_t - sim.start) / 86400 if rep.last_t else 0
            print(f"\r  day {day:5.1f}  {rep.n_events:>10,} events  {len(rep.alerts)} alerts",
                  end="", flush=True)

    with open(alerts_path, "w", encoding="utf-8") as out:
        def on_alert(ev):
            out.write(json.dumps(ev) + "\n")
            if tty:
                print("\r" + " " * 60 + "\r", end="")
            say(render(ev))

        report = replay([events], settings, on_alert=on_alert, on_progress=progress)
    if tty:
        print("\r" + " " * 60 + "\r", end="")
    say("")
    say(report.summary())
    card = score(sim.truth, report.alerts)
    say("\n── scorecard against the ground truth " + "─" * 30)
    say(card.table())
    say(f"\nalerts as CloudEvents: {alerts_path}")
    say("next: `drift replay` your own events, or `drift simulate --list` for other failures")
    return 0 if card.ok else 1
