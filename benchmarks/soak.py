"""Soak: `drift serve` under sustained simulated traffic; memory and lag over time.

``python -m benchmarks.soak --minutes 30`` starts the embedded broker (Tansu, in memory, on
loopback), runs ``drift serve`` as a subprocess with its defaults (consumer group, 10 s
checkpoints), and produces simulated traffic at a sustained rate for the given duration: events
in event-time order, keyed ``{app}/{intent}`` like a real producer, in messages of 1 to
``--max-batch`` events per key (a run of one is a single JSON object, longer runs are arrays),
with event time running ``--volume``-dependent thousands of times faster than the wall clock.
Traffic is ``--scenario`` (default ``prompt_cleanup``) generated in consecutive 16-day chunks,
each with its own seed, so every chunk brings new prompt hashes and a prompt regression that
fires and later resolves alerts: the engine's episodes, change tracking and windows all turn
over many times in one run.

Every ``--sample-every`` seconds it reads the service's resident memory (``VmRSS`` of
``/proc/PID/status``) and ``drift_consumer_lag`` (summed over partitions, from ``/metrics``), and
prints a progress line. After the producer stops it waits (bounded) for the service to drain,
then stops the service (SIGTERM, expecting exit 0) and the broker, prints a summary and writes it
with every sample to ``--out`` (default ``benchmarks/soak.json``).

Verdicts in the summary:

* ``rss_growth_ok``: RSS at the end is less than ``--max-growth`` percent (default 5) above the
  warm-up RSS, taken at the first sample after ``--warmup`` (default 10 %) of the run;
* ``lag_bounded``: after warm-up, neither ``drift_consumer_lag`` nor the backlog seen from the
  producer's side (messages produced minus ``drift_messages_consumed_total``; the gauge is only as
  fresh as the service's last fetch) exceeded ``--lag-limit-s`` seconds of traffic (default 30 s
  worth of messages), and at the end the lag was 0 and everything produced was consumed.

Exit status: 0 when both hold, 1 when either does not, 2 when the run itself failed. Everything
listens on and talks to 127.0.0.1 only; every wait has a deadline; all children are stopped on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

from drift.core.events import kafka_key, stream_of

TOPICS = {"scores": 3, "retrieval": 3, "queries": 3, "alerts": 1, "dlq": 1, "state": 1}
CHUNK_DAYS = 16  # prompt_cleanup's change (day 11) must fall inside a chunk
START = "2026-01-05T00:00:00Z"


# --------------------------------------------------------------------------- traffic


def traffic(scenario: str, volume: float, seed: int):
    """Endless time-ordered events: consecutive ``CHUNK_DAYS``-day simulations, seeds seed, seed+1, …"""
    from drift.tools.simulate import iter_events, simulate

    t0 = _dt.datetime.fromisoformat(START.replace("Z", "+00:00")).timestamp()
    k = 0
    while True:
        sim = simulate(scenario, seed=seed + k, days=CHUNK_DAYS, volume=volume,
                       start=_dt.datetime.fromtimestamp(t0 + k * CHUNK_DAYS * 86400, _dt.UTC))
        yield from iter_events(sim)
        k += 1


class Batcher:
    """Per-key runs of 1..max_batch events (as :func:`drift.tools.demo.keyed_messages` with a seed, keyed
    by :func:`drift.core.events.kafka_key`), built incrementally and flushed when full or older than
    ``max_hold`` seconds of wall time, so per-key order is kept and nothing waits long."""

    def __init__(self, max_batch: int, max_hold: float, seed: int):
        self.rng = np.random.default_rng(seed)
        self.max_batch = max_batch
        self.max_hold = max_hold
        self.buffers: dict[tuple[str, str], list] = {}
        self.born: dict[tuple[str, str], float] = {}
        self.target: dict[tuple[str, str], int] = {}

    def _size(self) -> int:
        return int(self.rng.integers(1, self.max_batch + 1))

    def add(self, event: dict, now: float):
        k = (stream_of(event), kafka_key(event))
        buf = self.buffers.setdefault(k, [])
        if not buf:
            self.born[k] = now
        buf.append(event)
        if len(buf) >= self.target.setdefault(k, self._size()):
            yield self._take(k)

    def _take(self, k):
        buf = self.buffers[k]
        self.buffers[k] = []
        self.target[k] = self._size()
        return k[0], k[1], (buf[0] if len(buf) == 1 else buf), len(buf)

    def due(self, now: float, everything: bool = False):
        for k, buf in list(self.buffers.items()):
            if buf and (everything or now - self.born[k] >= self.max_hold):
                yield self._take(k)


# --------------------------------------------------------------------------- the service


class Serve:
    """``drift serve`` in a subprocess; its JSON log drained into a bounded buffer."""

    def __init__(self, bootstrap: str, group: str, topics: dict[str, str], env_extra: dict | None = None):
        env = dict(os.environ)
        env.update({f"DRIFT_TOPICS_{k.upper()}": v for k, v in topics.items()})
        env.update({"PYTHONUNBUFFERED": "1"})
        env.update(env_extra or {})
        cmd = [sys.executable, "-m", "drift.cli", "serve", "--bootstrap-servers", bootstrap,
               "--group-id", group, "--http-port", "0"]
        from drift.tools.broker import _pdeathsig_hook  # SIGTERM to the service if this process is killed

        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=_pdeathsig_hook())
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.levels: collections.Counter[str] = collections.Counter()
        self.notable: collections.Counter[str] = collections.Counter()  # warning/error messages
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, name="serve-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("drift serve did not start:\n" + "\n".join(self.tail))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            level = doc.get("level", "?")
            self.levels[level] += 1
            if level in ("warning", "error", "critical"):
                self.notable[f"{level}: {doc.get('msg', '')}"[:200]] += 1
            if doc.get("msg") == "starting":
                self.port = doc.get("http_port")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics summed over its labels: ``{name: total}``."""
        _, text = self.get("/metrics")
        out: dict[str, float] = collections.defaultdict(float)
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m:
                try:
                    out[m.group(1)] += float(m.group(3))
                except ValueError:
                    pass
        return out

    def rss_kb(self) -> int | None:
        return rss_kb(self.proc.pid)

    def cpu_s(self) -> float | None:
        return cpu_s(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(5)
        return code


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (``/proc/PID/stat`` fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, log=print) -> dict:
    import msgspec
    from kafka import KafkaProducer

    from drift.tools.broker import EmbeddedBroker, create_topics

    duration = args.minutes * 60.0
    enc = msgspec.json.Encoder()
    result: dict = {"args": vars(args).copy(), "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()}}
    samples: list[dict] = []
    broker = EmbeddedBroker(log_path=args.broker_log) if args.broker_log else EmbeddedBroker()
    svc: Serve | None = None
    producer = None
    try:
        broker.start()
        tag = uuid.uuid4().hex[:6]
        topics = {k: f"soak-{k}-{tag}" for k in TOPICS}
        create_topics(broker.bootstrap, {topics[k]: n for k, n in TOPICS.items()})
        group = f"soak-{tag}"
        svc = Serve(broker.bootstrap, group, topics, dict(kv.split("=", 1) for kv in args.serve_env))
        ready_deadline = time.monotonic() + 90
        while svc.get("/readyz")[0] != 200:
            if svc.proc.poll() is not None or time.monotonic() > ready_deadline:
                raise RuntimeError("drift serve did not become ready:\n" + "\n".join(svc.tail))
            time.sleep(0.1)
        log(f"soak: broker {broker.bootstrap} (pid {broker.pid}), drift serve pid {svc.proc.pid} ready; "
            f"{args.rate:,.0f} events/s for {args.minutes:g} min, sampling every {args.sample_every:g} s")

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=256 * 1024,
                                 acks="all")
        events = traffic(args.scenario, args.volume, args.seed)
        batcher = Batcher(args.max_batch, args.max_hold, args.seed)
        produced_events = produced_msgs = 0
        first_ts = last_ts = None

        def send(stream, key, value, n):
            nonlocal produced_events, produced_msgs
            producer.send(topics[stream], key=key.encode(), value=enc.encode(value))
            produced_events += n
            produced_msgs += 1

        added = 0
        t0 = time.monotonic()
        next_sample = t0
        warmup_at = t0 + args.warmup * duration
        end = t0 + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            want = int((now - t0) * args.rate)
            while added < want:
                e = next(events)
                added += 1
                if first_ts is None:
                    first_ts = e["ts"]
                last_ts = e["ts"]
                for m in batcher.add(e, now):
                    send(*m)
            for m in batcher.due(now):
                send(*m)
            if now >= next_sample:
                samples.append(_sample(svc, now - t0, produced_events, produced_msgs, phase="run"))
                log(_progress(samples[-1]))
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"drift serve exited ({svc.proc.returncode}):\n" + "\n".join(svc.tail))
                next_sample += args.sample_every
            time.sleep(max(0.0, min(args.tick, end - time.monotonic())))
        for m in batcher.due(time.monotonic(), everything=True):
            send(*m)
        producer.flush(timeout=60)
        producer.close(timeout=10)
        producer = None
        produced_at = time.monotonic()
        log(f"soak: producer stopped after {produced_at - t0:.0f} s: {produced_events:,} events in "
            f"{produced_msgs:,} messages; waiting for the service to drain")

        # drain: everything produced consumed and the lag gauge at zero (bounded wait)
        drain_deadline = produced_at + args.drain_timeout
        while True:
            now = time.monotonic()
            s = _sample(svc, now - t0, produced_events, produced_msgs, phase="drain")
            done = s["messages_consumed"] >= produced_msgs and s["lag"] == 0
            if done or now > drain_deadline or svc.proc.poll() is not None:
                samples.append(s)
                log(_progress(s))
                break
            if now >= next_sample:
                samples.append(s)
                log(_progress(s))
                next_sample += args.sample_every
            time.sleep(0.5)
        drained_s = time.monotonic() - produced_at
        final = samples[-1]
        final_metrics = svc.metrics()
        exit_code = svc.stop()
        svc_notable = dict(svc.notable)
        svc = None

        run_samples = [s for s in samples if s["rss_kb"] is not None]
        warm = next((s for s in run_samples if s["t_s"] >= warmup_at - t0), run_samples[-1])
        after_warm = [s for s in samples if s["t_s"] >= warm["t_s"]]
        lag_limit = args.lag_limit_s * produced_msgs / max(produced_at - t0, 1e-9)
        growth = (final["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"] * 100.0
        span_days = None
        if first_ts and last_ts:
            span_days = (_parse_ts(last_ts) - _parse_ts(first_ts)) / 86400.0
        result.update({
            "duration_s": round(produced_at - t0, 1),
            "drain_s": round(drained_s, 1),
            "rate_target_events_per_s": args.rate,
            "rate_events_per_s": round(produced_events / max(produced_at - t0, 1e-9), 1),
            "events_produced": produced_events,
            "messages_produced": produced_msgs,
            "events_consumed": int(final["events_consumed"]),
            "messages_consumed": int(final["messages_consumed"]),
            "dlq": int(final_metrics.get("drift_dlq_total", 0)),
            "alerts": int(final_metrics.get("drift_alerts_total", 0)),
            "checkpoints": int(final_metrics.get("drift_checkpoints_total", 0)),
            "event_time_first": first_ts, "event_time_last": last_ts,
            "event_time_span_days": None if span_days is None else round(span_days, 2),
            "event_time_acceleration": None if span_days is None else round(span_days * 86400 / max(produced_at - t0, 1e-9)),
            "rss_start_mb": round(run_samples[0]["rss_kb"] / 1024, 1),
            "rss_warmup_mb": round(warm["rss_kb"] / 1024, 1),
            "rss_warmup_at_s": warm["t_s"],
            "rss_final_mb": round(final["rss_kb"] / 1024, 1),
            "rss_max_mb": round(max(s["rss_kb"] for s in run_samples) / 1024, 1),
            "rss_growth_pct": round(growth, 2),
            "service_cpu_pct": (None if final["cpu_s"] is None or run_samples[0]["cpu_s"] is None else
                                round(100 * (final["cpu_s"] - run_samples[0]["cpu_s"]) / max(final["t_s"] - run_samples[0]["t_s"], 1e-9), 1)),
            "lag_max": max(s["lag"] for s in samples),
            "lag_max_after_warmup": max(s["lag"] for s in after_warm),
            "lag_limit": round(lag_limit),
            "lag_final": final["lag"],
            "backlog_max": max(s["backlog"] for s in samples),
            "backlog_max_after_warmup": max(s["backlog"] for s in after_warm),
            "service_exit_code": exit_code,
            "service_log_warnings": svc_notable,
        })
        result["rss_growth_ok"] = growth < args.max_growth
        result["lag_bounded"] = (max(result["lag_max_after_warmup"], result["backlog_max_after_warmup"]) <= lag_limit
                                 and final["lag"] == 0
                                 and result["messages_consumed"] >= produced_msgs)
        result["ok"] = bool(result["rss_growth_ok"] and result["lag_bounded"] and exit_code == 0)
        result["samples"] = samples
        return result
    finally:
        if producer is not None:
            producer.close(timeout=5)
        if svc is not None:
            svc.stop(timeout=30)
        broker.stop()


def _parse_ts(ts: str) -> float:
    return _dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _sample(svc: Serve, t: float, produced_events: int, produced_msgs: int, phase: str) -> dict:
    try:
        m = svc.metrics()
    except OSError:
        m = {}
    consumed = int(m.get("drift_messages_consumed_total", 0))
    cpu = svc.cpu_s()
    return {"t_s": round(t, 1), "phase": phase, "rss_kb": svc.rss_kb(),
            "cpu_s": None if cpu is None else round(cpu, 2),
            "lag": int(m.get("drift_consumer_lag", -1)),
            "backlog": produced_msgs - consumed,
            "messages_consumed": consumed,
            "events_consumed": int(m.get("drift_events_consumed_total", 0)),
            "events_produced": produced_events, "messages_produced": produced_msgs,
            "checkpoint_age_s": round(m.get("drift_checkpoint_age_seconds", -1), 1)}


def _progress(s: dict) -> str:
    rss = "?" if s["rss_kb"] is None else f"{s['rss_kb'] / 1024:7.1f}"
    return (f"[{s['phase']:5}] t={s['t_s']:7.1f}s  rss={rss} MB  lag={s['lag']:6d}  "
            f"backlog={s['backlog']:6d} msgs  "
            f"produced={s['events_produced']:>11,} ev / {s['messages_produced']:>9,} msgs  "
            f"consumed={s['events_consumed']:>11,} ev / {s['messages_consumed']:>9,} msgs")


def summary(r: dict) -> str:
    yes = lambda b: "yes" if b else "NO"  # noqa: E731
    return "\n".join([
        f"soak: {r['duration_s']:.0f} s at {r['rate_events_per_s']:,.0f} events/s "
        f"(target {r['rate_target_events_per_s']:,.0f}); event time {r['event_time_first']} -> "
        f"{r['event_time_last']} ({r['event_time_span_days']} days, x{r['event_time_acceleration']:,})",
        f"  events produced {r['events_produced']:,} in {r['messages_produced']:,} messages; consumed "
        f"{r['events_consumed']:,} events in {r['messages_consumed']:,} messages; DLQ {r['dlq']}, "
        f"alerts {r['alerts']}, checkpoints {r['checkpoints']}; drained in {r['drain_s']} s",
        f"  RSS: start {r['rss_start_mb']} MB, warm-up {r['rss_warmup_mb']} MB (at {r['rss_warmup_at_s']} s), "
        f"final {r['rss_final_mb']} MB, max {r['rss_max_mb']} MB; growth after warm-up "
        f"{r['rss_growth_pct']:+.2f}% (< {r['args']['max_growth']:g}%: {yes(r['rss_growth_ok'])})",
        f"  lag: max {r['lag_max']}, max after warm-up {r['lag_max_after_warmup']} (limit {r['lag_limit']}), "
        f"final {r['lag_final']}; bounded: {yes(r['lag_bounded'])}; produced-minus-consumed backlog: max "
        f"{r['backlog_max']} messages ({r['backlog_max_after_warmup']} after warm-up)",
        f"  drift serve CPU: {r['service_cpu_pct']}% of one core on average",
        f"  drift serve exit code {r['service_exit_code']}; log warnings/errors: "
        f"{r['service_log_warnings'] or 'none'}",
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long the producer runs (default 30)")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second produced (default 2000)")
    p.add_argument("--volume", type=float, default=0.5,
                   help="simulated traffic volume (requests per hour relative to `drift simulate`); "
                        "with --rate it sets the event-time acceleration: ~15,800 events per simulated "
                        "day at 0.5, so 2000 events/s is ~11 simulated days a minute (default 0.5)")
    p.add_argument("--scenario", default="prompt_cleanup", help="simulated scenario, repeated in 16-day chunks "
                   "(default prompt_cleanup)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first chunk (default 0)")
    p.add_argument("--max-batch", type=int, default=60, help="most events per message (default 60)")
    p.add_argument("--max-hold", type=float, default=1.0,
                   help="seconds a key's partial run may wait before it is sent (default 1)")
    p.add_argument("--tick", type=float, default=0.05, help="producer pacing step in seconds (default 0.05)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--warmup", type=float, default=0.1,
                   help="fraction of the run after which the warm-up RSS is taken (default 0.1)")
    p.add_argument("--max-growth", type=float, default=5.0,
                   help="RSS growth after warm-up, in percent, that still passes (default 5)")
    p.add_argument("--lag-limit-s", type=float, default=30.0,
                   help="lag after warm-up must stay under this many seconds of traffic (default 30)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait for the service to catch up after the producer stops (default 120)")
    p.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for drift serve, e.g. DRIFT_SERVICE_CHECKPOINT_INTERVAL=5s; repeatable")
    p.add_argument("--broker-log", default=None, help="append the broker's log here (default: discarded at exit)")
    p.add_argument("--out", default="benchmarks/soak.json", help="JSON results file (default benchmarks/soak.json)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("minutes", "rate", "volume", "sample_every", "tick", "max_hold"):
        if getattr(args, name) <= 0:
            build_parser().error(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= args.warmup < 1:
        build_parser().error("--warmup must be in [0, 1)")
    bad = [kv for kv in args.serve_env if "=" not in kv]
    if bad:
        build_parser().error(f"--serve-env takes NAME=VALUE, got {bad[0]!r}")

    stop = {"sig": None}

    def on_signal(signum, frame):  # Ctrl-C / SIGTERM: unwind through the finally blocks
        stop["sig"] = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = run(args, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("soak: interrupted; everything it started was stopped", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported, children already stopped
        print(f"soak: failed: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    print(summary(result), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
        print(f"soak: results in {args.out}", flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
