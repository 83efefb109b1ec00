"""The ``drift`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

from drift.core.config import ConfigError, load_settings

__all__ = ["main"]

_EPILOG = """Configuration precedence: defaults < TOML file (--config) < environment (DRIFT_...) < flags.
With no config file the defaults implement every rule of the specification."""


def _common_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (see README)")


def _settings(args, overrides=None):
    return load_settings(getattr(args, "config", None), os.environ, overrides)


def _cmd_replay(args) -> int:
    from drift.core.alerts import render
    from drift.runtime.replay import replay

    if not args.write_state and (args.bootstrap_servers or args.group_id):
        print("drift replay: --bootstrap-servers and --group-id apply only with --write-state", file=sys.stderr)
        return 2
    for path in args.events:  # a file, or a pipe (`<(zcat ev.jsonl.gz)`, /dev/stdin); not a folder
        if path != "-" and (os.path.isdir(path) or not os.path.exists(path)):
            what = "is a folder, not an events file" if os.path.isdir(path) else "no such file"
            print(f"drift replay: {path}: {what}", file=sys.stderr)
            return 2
    settings = _settings(args, {**_kafka_overrides(args), "queries": {"golden": args.golden}})
    golden, encoder = _golden(settings)
    from drift.core.engine import Engine

    engine = Engine(settings, golden=golden, encoder_factory=encoder)
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    shown = [0]
    tty = sys.stderr.isatty() and not args.quiet
    last = [0.0]

    def on_alert(ev):
        if out:
            out.write(json.dumps(ev, ensure_ascii=False) + "\n")
        if args.json:
            sys.stdout.write(json.dumps(ev, ensure_ascii=False) + "\n")
        elif not args.quiet:
            print(render(ev), flush=True)

    def on_reject(r):
        shown[0] += 1
        if shown[0] <= args.max_errors:
            print(f"rejected {r}", file=sys.stderr)
        elif shown[0] == args.max_errors + 1:
            print("rejected: more lines rejected; counts in the summary", file=sys.stderr)

    def on_progress(rep):
        now = time.monotonic()
        if tty and now - last[0] > 1.0:
            last[0] = now
            from drift.core.events import format_time
            print(f"\r  {rep.n_events:,} events, up to {format_time(rep.last_t)}, "
                  f"{rep.n_events / max(rep.seconds, 1e-9):,.0f} events/s, {len(rep.alerts)} alerts",
                  end="", file=sys.stderr, flush=True)

    try:
        if args.write_state:  # re-seed the group's state from the archive (drift/runtime/reseed.py)
            from drift.runtime.reseed import ReseedError, reseed

            try:
                report: Any = reseed(args.events, settings, golden=golden, encoder_factory=encoder,
                                on_alert=on_alert, on_reject=on_reject)
            except ReseedError as exc:
                print(f"drift replay --write-state: {exc}", file=sys.stderr)
                return exc.code
        else:
            report = replay(args.events, settings, on_alert=on_alert, on_reject=on_reject,
                            on_progress=on_progress, engine=engine)
    finally:
        if out:
            out.close()
    if tty:
        print("\r" + " " * 78 + "\r", end="", file=sys.stderr)
    if args.escalations:
        from drift.core.events import format_time

        with open(args.escalations, "w", encoding="utf-8") as fh:
            for t, app, intent, trace_id in report.escalations:
                fh.write(json.dumps({"trace_id": trace_id, "app": app, "intent": intent, "ts": format_time(t),
                                    "reason": "escalate"}) + "\n")
    print(report.summary(), file=sys.stderr if args.json else sys.stdout)
    return 0


def _golden(settings):
    from drift.embeddings.golden import golden_for_settings

    return golden_for_settings(settings)


def _kafka_overrides(args) -> dict:
    return {"kafka": {"bootstrap_servers": getattr(args, "bootstrap_servers", None),
                      "group_id": getattr(args, "group_id", None)},
            "http": {"port": getattr(args, "http_port", None)},
            "queries": {"golden": getattr(args, "golden", None)}}


def _cmd_serve(args) -> int:
    from drift.runtime.service import Service, setup_logging

    settings = _settings(args, {**_kafka_overrides(args), "alertmanager": {"urls": args.alertmanager},
                                "metrics": {"series": args.series_metrics}})
    setup_logging(args.log_level)
    golden, encoder = _golden(settings)
    # DRIFT_FAULT_INJECT is a test hook (see Service): it makes the process exit abruptly at a
    # step of the commit order, to prove the restart loses nothing
    return Service(settings, fault=os.environ.get("DRIFT_FAULT_INJECT"), golden=golden,
                   encoder_factory=encoder).run()


def _cmd_forward(args) -> int:
    from drift.runtime.alertmanager import forward
    from drift.runtime.service import setup_logging

    overrides = _kafka_overrides(args)
    overrides["kafka"]["group_id"] = None  # --group-id names the forwarder's own group
    settings = _settings(args, {**overrides, "alertmanager": {"urls": args.alertmanager}})
    if not settings.alertmanager["urls"]:
        raise ConfigError("alertmanager.urls: drift forward needs --alertmanager URL "
                          "(or [alertmanager] urls, DRIFT_ALERTMANAGER_URLS)")
    setup_logging(args.log_level)
    return forward(settings, group_id=args.group_id, from_beginning=args.from_beginning)


_FORWARD = """Follow the alert topic (llm.alerts) as a consumer group and deliver every firing and resolved
alert to Alertmanager (POST /api/v2/alerts to every URL given: an HA set), for teams that keep
delivery apart from `drift serve`. Same mapping, resend and retry as `drift serve` with
[alertmanager] urls (see README, "Alerts to Alertmanager"). Offsets are committed only once
some Alertmanager accepted every alert read so far, so an outage delays the commit and loses
nothing. --from-beginning applies to a group without committed offsets; a new group otherwise
starts at the topic's end. Either way, at start-up the alerts still firing on the topic (and
those resolved less than 15 minutes ago) are re-sent, so a restart does not let Alertmanager
resolve them. SIGINT/SIGTERM (Ctrl-C): confirm, commit what was accepted, exit 0."""

_FORWARD_EPILOG = """Exit codes: 0 stopped; 1 Kafka unreachable; 2 configuration error.

Example:
  drift forward --alertmanager http://am-0:9093 --alertmanager http://am-1:9093 --from-beginning
  DRIFT_ALERTMANAGER_BEARER_TOKEN=... drift forward --alertmanager https://am.example --config drift.toml"""


def _cmd_ingest_otlp(args) -> int:
    from drift.runtime.ingest import IngestService
    from drift.runtime.service import setup_logging

    settings = _settings(args, {**_kafka_overrides(args),
                                "otlp": {"encoding": args.encoding, "group_id": args.group}})
    setup_logging(args.log_level)
    # DRIFT_FAULT_INJECT: the test hook of `drift serve`, at the same steps of the commit order
    return IngestService(settings, fault=os.environ.get("DRIFT_FAULT_INJECT")).run()


_INGEST_OTLP = """Read OpenTelemetry spans and gen_ai.evaluation.result log records that the Collector's Kafka
exporter writes (otlp_proto or otlp_json) and turn them into the ScoreEvents and RetrievalEvents
`drift serve` consumes. Runs beside `drift serve`, as its own consumer group
(default <kafka.group_id>-ingest).

  otlp_spans, otlp_logs ─ stage 1: decode, split each export request by trace id
     (undecodable records to llm.dlq with x-error-* headers)
  ─> drift.otlp.by_trace (internal, keyed by hex trace id, otlp_proto; created with as many
     partitions as llm.scores unless [otlp] repartition_partitions says otherwise)
  ─> stage 2, per internal partition: map spans (quality.score.* attributes, finish reasons,
     retrieval scores), join evaluation records with their span (either may come first; an
     evaluation whose span does not come within [otlp] join_max_age of event time is dropped
     and counted)
  ─> llm.scores / llm.retrieval as JSON arrays keyed "{app}/{intent}"

Each stage releases fetched records across its input partitions in event time (at most
[otlp] max_ahead_s, 300 s, past the slowest partition that still has records to read), so a
backlog reaches drift serve in time order, not partition by partition. Commit order as
`drift serve`: produce, confirm delivery, write the join state to drift.state, commit offsets (at least once; repeats after a crash are counted
in drift_ingest_replayed_events_total). Serves /metrics (drift_ingest_*), /livez and /readyz.
SIGTERM/SIGINT: finish the batch, checkpoint, leave the group, exit 0.

Settings: [otlp] spans_topic, logs_topic, encoding, app_attribute, intent_attribute,
score_prefix, prompt_hash_attributes, prompt_version_attributes, model_attributes,
truncation_reasons, label_values, prices, join_max_age, join_max_entries, repartition_topic,
repartition_partitions, max_ahead_s, group_id (environment: DRIFT_OTLP_<KEY>).
Exit codes: 0 clean stop, 1 delivery or Kafka failure, 2 configuration error, 3 stopped
because most input was undecodable."""


def _event_time(text: str) -> float:
    from drift.core.engine import parse_command

    try:
        return parse_command({"command": "baseline_reset", "rule": "r", "app": "a", "ts": text})["ts"]
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an RFC 3339 time or epoch seconds: {text!r}") from None


def _cmd_baseline_reset(args) -> int:
    from drift.runtime.control import reset_command, send_command

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        print(f"drift baseline reset: --timeout must be a positive number of seconds, got {args.timeout:g}",
              file=sys.stderr)
        return 2
    settings = _settings(args, _kafka_overrides(args))
    by = args.by if args.by is not None else os.environ.get("USER", "")
    now = args.at if args.at is not None else time.time()
    # every rule checked before anything is sent: all of them or none
    commands = [reset_command(settings, rule, args.app, args.intent, args.dimension, by=by,
                              reason=args.reason or "", now=now) for rule in dict.fromkeys(args.rule)]
    where = "/".join(v for v in (args.app, args.intent, args.dimension) if v)
    scope = "" if args.intent else " (every intent)"
    for cmd, input_topic, key in commands:
        try:
            sent = send_command(settings, cmd, input_topic, key, timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001 - Kafka unreachable, topic missing, not acknowledged
            print(f"drift baseline reset: could not deliver the command for {cmd['rule']} to "
                  f"{settings.topics['control']}: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(sent))
            continue
        parts = ", ".join(str(p) for p in sent["partitions"])
        print(f"baseline reset of {cmd['rule']} on {where}{scope} sent to {sent['topic']} partition(s) {parts}"
              f" at {cmd['ts']}: drift serve resolves its open episodes and re-learns the baseline from then on "
              "(an info alert baseline_reset records it)")
    return 0


_BASELINE_RESET = """Accept the new normal after a deliberate change (a new prompt, a new model): the rule's
baseline for the series stays frozen while an alert fires, so without a reset it fires for as
long as the change stands. This sends a baseline_reset command on the control topic
(drift.control, keyed like the series so it reaches the partition, and so the `drift serve`
instance, that holds them; without --intent it goes to every partition). The service resolves
the open episodes (the same alert ids, so Alertmanager and the topic see them end), forgets what
the rule learned about the series and re-learns the baseline from the data after the reset, as
for a new series: the rule is quiet at the new level and fires again on a real drop from it,
once it has re-learned (its baseline span). Each reset series is recorded as an info alert
`baseline_reset`. Silencing is Alertmanager's job: this is for changes you accept."""

_BASELINE_RESET_EPILOG = """Exit codes: 0 sent and acknowledged by the broker; 1 Kafka unreachable or not acknowledged;
2 usage or configuration error (an unknown or disabled rule, --intent/--dimension the rule's
series do not have).

Examples:
  drift baseline reset --rule quality_drop --app support-bot --intent billing --dimension format \
      --reason "prompt v7: shorter answers accepted"
  drift baseline reset --rule retrieval_drop --app docs-qa        # every intent of docs-qa
  drift baseline reset --rule quality_drop --rule quality_shift --app support-bot --intent billing"""


def _cmd_alerts(args) -> int:
    from drift.runtime.feed import follow_alerts

    settings = _settings(args, _kafka_overrides(args))
    follow_alerts(settings, from_beginning=args.from_beginning, follow=args.follow, as_json=args.json)
    return 0


def _cmd_simulate(args) -> int:
    from drift.tools.simulate import SCENARIOS, simulate, write_jsonl

    if args.list:
        for name, desc in SCENARIOS.items():
            print(f"{name:<16} {desc}")
        return 0
    if not args.scenario or not args.out:
        print("drift simulate: give a SCENARIO and --out (or --list)", file=sys.stderr)
        return 2
    if args.scenario not in SCENARIOS:
        print(f"drift simulate: unknown scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        sim = simulate(args.scenario, seed=args.seed, days=args.days, volume=args.volume, start=args.start,
                       stress=args.stress, labels=args.labels, feedback=args.feedback)
    except ValueError as exc:  # a bad --days/--seed/--volume/--start for this scenario
        print(f"drift simulate: {exc}", file=sys.stderr)
        return 2
    n = write_jsonl(sim, args.out, batch=args.batch)
    if args.out != "-":
        truth = args.out[:-6] if args.out.endswith(".jsonl") else args.out
        print(f"wrote {n:,} events over {sim.days} days to {args.out} "
              f"and the ground truth to {truth}.truth.json ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr)
    return 0


def _cmd_demo(args) -> int:
    from drift.tools.demo import run_demo

    return run_demo(args)


def _cmd_rules(args) -> int:
    """The configured rules (built-ins, TOML-declared ones, overrides) and the rule kinds."""
    import dataclasses

    from drift.core.rules import RULE_KINDS

    settings = _settings(args)
    if args.json:
        doc = {"rules": {n: {"kind": r.kind, "stream": r.stream, "kinds": list(r.kinds), "severity": r.severity,
                             "enabled": r.enabled, "match": {k: list(v) for k, v in r.match.items()},
                             "params": dict(r.params),
                             "overrides": [{"match": {k: list(v) for k, v in o.match.items()}, "params": dict(o.params)}
                                           for o in r.overrides]}
                         for n, r in settings.rules.items()},
               "kinds": {n: {"streams": list(k.streams) or ["any"], "detector": k.detector.__name__ if k.detector else None,
                             "params": {f.name: {"default": f.default, "check": f.metadata["check"],
                                                 "doc": f.metadata["doc"]} for f in dataclasses.fields(k.params)}}
                         for n, k in sorted(RULE_KINDS.items())}}
        print(json.dumps(doc, indent=1, default=list))
        return 0
    print(f"rules ({settings.source}):")
    for name, r in settings.rules.items():
        state = "on " if r.enabled else "off"
        where = " ".join(f"{k}={'|'.join(v)}" for k, v in r.match.items())
        watches = f"{r.stream}/{','.join(r.kinds)}"
        print(f"  {state} {name:<24} {r.kind:<15} {watches:<28} {r.severity:<8} {where}".rstrip())
        for o in r.overrides:
            changed = {k: v for k, v in o.params.items() if r.params.get(k) != v}
            print(f"      override {' '.join(f'{k}={chr(124).join(v)}' for k, v in o.match.items())}: {changed}")
    if args.kinds:
        print("\nrule kinds ([rules.NAME] kind = ...):")
        for n, k in sorted(RULE_KINDS.items()):
            det = k.detector.__name__ if k.detector else "(notices)"
            print(f"  {n} — {det}; streams: {', '.join(k.streams) or 'any'}")
            for f in dataclasses.fields(k.params):
                print(f"      {f.name:<18} {f.default!s:<22} {f.metadata['doc']}")
    return 0


_SAMPLE_PLAN = """Which share of requests the LLM judge should evaluate per app/intent so that the engine's
quality_drop rule detects a quality drop (default 5%) in each intent within a target delay, at
what monthly judge cost, within a budget.

REQUESTS is a day (or more) of traffic: the engine's events as JSONL (as `drift simulate --out`
writes them: one request per distinct trace_id per app/intent, cost_usd per request, quality
scores give each intent's score distribution), or a CSV/JSONL summary with rows
app,intent,requests[,cost_usd][,forced][,day] per day (forced: errored/escalated/flagged
requests, always evaluated). The predicted delay models the rule's own CUSUM (tilt, threshold
from the false-alarm budget, its reference's 300-score minimum and upper bound) at the judge's
evaluations per day; the plan gives every intent its cheapest rate reaching --target-days
(cheapest intents first while the budget lasts), then spends what is left lowering the worst
delay (see README, "Sampling for the judge"). Intents the budget cannot cover are listed."""

_SAMPLE_PLAN_EPILOG = """Exit codes: 0 a plan (even one that covers no intent); 2 bad input (a one-line message names
the file, line and field; a missing file).

Example:
  drift simulate stable --days 7 --out week.jsonl
  drift sample-plan week.jsonl --judge-cost 0.002 --budget 50 --target-days 7
  drift sample-plan week.jsonl --judge-cost 0.002 --budget 50 --json > plan.json
  python -c "from drift.sampling import Sampler; print(Sampler.from_plan('plan.json'))"
"""


def _cmd_sample_plan(args) -> int:
    from drift.tools.sample_plan import run

    return run(args)


_CALIBRATE = """Agreement of the LLM judge with human labels: Cohen's kappa per dimension (and per intent
with --by intent), with a 95% confidence interval and a verdict:
untrusted < 0.6 <= workable < 0.8 <= high_stakes (undefined, with the reason, when kappa is).

LABELS is CSV or JSONL (by extension; '-' reads stdin; otherwise the first character decides)
with the columns id, judge, human, optionally dimension ("all" without it), intent, and more
raters human_2, human_3, ... The judge is compared with `human`, the first rater; `human_2`
gives the human-human kappa, the ceiling a judge can be expected to reach. Ids are unique per
dimension. Labels may be binary (0/1, true/false), categories (strings) or ordinal numbers
(e.g. 1-5); numeric judge scores become labels with --threshold or --bins.

The interval is a percentile bootstrap that resamples items within each of the human's classes
(so the count of the minority class, which drives the width, is kept); where the judge gave one
label to each class and every resample has the same kappa (perfect agreement on a few items),
it is the exact binomial bound on how often the judge departs from those labels. The report also gives
raw agreement, the human's prevalence, the minority class count and n_more: how many more
labelled items would bring the interval's half-width to 0.10."""

_CALIBRATE_EPILOG = """Exit codes: 0 every gated dimension passes; 1 a gated dimension's kappa (with --strict: the
interval's lower end) is below --min-kappa, or undefined; 2 bad input (a one-line message
names the file, line and column: missing file or column, a file that is not UTF-8, empty value, non-numeric score with --threshold/--bins,
duplicate id, no rows; or the option: --min-kappa outside [-1, 1], --n-boot below 200, a
negative --seed).

Example: drift calibrate data/pandalm/gpt-3.5-turbo.csv --by intent --json"""


def _cmd_calibrate(args) -> int:
    from drift.tools.calibrate import CalibrateError, ScoreMapping, run

    try:
        bins = tuple(float(b) for b in args.bins.split(",")) if args.bins else None
    except ValueError:
        print(f"drift calibrate: --bins {args.bins!r}: give comma-separated numbers, e.g. 0.2,0.4,0.6,0.8",
              file=sys.stderr)
        return 2
    try:
        mapping = ScoreMapping(threshold=args.threshold, bins=bins, map_human=args.map_human)
        return run(args.labels, mapping=mapping, weights=None if args.weights == "none" else args.weights,
                   by_intent=args.by == "intent", n_boot=args.n_boot, seed=args.seed, min_kappa=args.min_kappa,
                   strict=args.strict, gates=args.gate, as_json=args.json)
    except CalibrateError as exc:
        print(f"drift calibrate: {exc}", file=sys.stderr)
        return 2


_GATE = """Gate a release on a golden set: compare a candidate evaluation run with absolute floors
(--min METRIC=VALUE) and, with --baseline, with a baseline run of the same items paired by id.

RUN and --baseline are CSV or JSONL (by extension; '-' reads stdin; otherwise the first character
decides): a column `id` (unique), one numeric column per metric, optionally `slice` (e.g. the
category: every metric is also reported per slice). An empty cell or null means "not scored".
Items missing on either side, or not scored, are reported (counts and a few ids), never dropped.

Statistics per metric and slice: n and the candidate's mean with a Student-t 95% interval; with a
baseline, on the items both runs scored: the effect (mean paired difference candidate - baseline,
also in % of the paired baseline mean) with its Student-t interval, and a one-sided paired test of
"candidate lower": the Wilcoxon signed-rank test (scipy.stats.wilcoxon, zeros dropped) or, with
--test sign, the sign test (both p-values are in --json).

Fail rules: a floor fails when the point mean is below it (the interval is shown beside it). A
regression fails when the mean drops by more than --max-drop percent AND the paired test is
significant at --alpha, so noise on a small golden set does not fail a build. A metric the
candidate scored on no item fails; --require-all makes any missing item fail. Slices are reported,
and fail their metric only with --gate-slices."""

_GATE_EPILOG = """Exit codes: 0 every metric passes; 1 a metric fails (floor, regression, no scored items,
--require-all, --gate-slices); 2 bad input (a one-line message names the file, line and
column/field: missing file or id column, duplicate id, non-numeric value, an unknown metric in
--min or a malformed --min).

Example (a CI step; the Markdown summary goes to the GitHub job page):
  drift gate data/mtbench/mistral-orpo-capybara.csv --baseline data/mtbench/mistral-orpo-trl.csv \\
      --max-drop 5 --min turn1=6 --min turn2=6 --junit gate.xml --markdown "$GITHUB_STEP_SUMMARY\""""


def _cmd_gate(args) -> int:
    from drift.tools.gate import GateError, run

    try:
        return run(args.run, baseline=args.baseline, floors=args.min or (), max_drop=args.max_drop, alpha=args.alpha,
                   test=args.test, confidence=args.confidence,
                   metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
                   require_all=args.require_all, gate_slices=args.gate_slices, as_json=args.json, junit=args.junit,
                   markdown=args.markdown)
    except GateError as exc:
        print(f"drift gate: {exc}", file=sys.stderr)
        return 2


def _command_group(sub, name: str, metavar: str, **kw):
    """A command with subcommands (``drift ingest otlp``, ``drift baseline reset``): alone it prints
    its help and exits 2. Returns its subparsers."""
    p = sub.add_parser(name, **kw)
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(), 2)[1])
    return p.add_subparsers(dest=metavar.lower(), metavar=metavar)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drift",
        description="Streaming statistical drift detection for LLM applications: quality scores, "
                    "retrieval similarities and query embeddings in, alerts out.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="the long-lived consumer service (Kafka in, alerts out)",
                       description="Consume llm.scores, llm.retrieval, llm.queries, llm.labels and llm.feedback "
                                   "as a consumer group, run the engine per input partition (partition p of the "
                                   "co-partitioned llm.scores, llm.labels and llm.feedback share one, so human labels "
                                   "and user feedback join the judge's scores of their trace), produce alerts to "
                                   "llm.alerts (CloudEvents, "
                                   "key alert_id), reject bad input to llm.dlq with reasons, send escalated traces to "
                                   "drift.escalations, run operator commands from drift.control (`drift baseline reset`), "
                                   "checkpoint state to drift.state, and serve /metrics, /livez and /readyz. SIGTERM/SIGINT: finish the "
                                   "batch, checkpoint, leave the group, exit 0. Never starts a broker: for local work "
                                   "run `drift broker` first.", epilog=_EPILOG)
    _common_config(p)
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]", help="Kafka bootstrap servers (default localhost:9092)")
    p.add_argument("--group-id", help="consumer group (default drift)")
    p.add_argument("--http-port", type=int, help="port for /metrics, /livez, /readyz (default 9308; 0 = any free)")
    p.add_argument("--golden", metavar="DIR", help="golden set for the query rules (off without one)")
    p.add_argument("--alertmanager", action="append", metavar="URL",
                   help="also send alerts to this Alertmanager (repeatable: an HA set; see [alertmanager])")
    p.add_argument("--series-metrics", action="store_const", const=True, default=None,
                   help="export drift_series_value{rule,app,intent,dimension,stat} per watched series "
                        "(current, baseline, statistic; see [metrics])")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_serve)

    ingest = _command_group(sub, "ingest", "SOURCE", help="turn OpenTelemetry traces into events: `drift ingest otlp`",
                            description="Ingest adapters that feed llm.scores and llm.retrieval.")
    p = ingest.add_parser("otlp", help="OTLP spans and evaluation logs from Kafka to llm.scores / llm.retrieval",
                          description=_INGEST_OTLP, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_config(p)
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]", help="Kafka bootstrap servers (default localhost:9092)")
    p.add_argument("--encoding", choices=["otlp_proto", "otlp_json"],
                   help="encoding of the OTLP records (the exporter's `encoding`; default otlp_proto)")
    p.add_argument("--group", metavar="GROUP", help="consumer group (default <kafka.group_id>-ingest, drift-ingest)")
    p.add_argument("--http-port", type=int, default=9309,
                   help="port for /metrics, /livez, /readyz (default 9309, beside `drift serve`'s 9308; 0 = any free)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_ingest_otlp)

    p = sub.add_parser("alerts", help="subscribe to the alert topic and print alerts",
                       description="Print alerts from llm.alerts readably (--json for the CloudEvents). Starts at "
                                   "the current end unless --from-beginning; stops once caught up unless --follow. "
                                   "Uses no consumer group.", epilog=_EPILOG)
    _common_config(p)
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts until Ctrl-C")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest alert kept")
    p.add_argument("--json", action="store_true", help="print the CloudEvents as JSON lines")
    p.set_defaults(func=_cmd_alerts)

    p = sub.add_parser("replay", help="run the engine offline over JSONL event files",
                       description="Run the same engine as `drift serve` over JSONL files (one event "
                                   "or JSON array per line; '-' is stdin). Prints alerts readably and a "
                                   "summary; rejected lines are reported with line number and reason. "
                                   "Exits 0 even when lines were rejected.", epilog=_EPILOG)
    p.add_argument("events", nargs="+", metavar="EVENTS.jsonl", help="event files, '-' for stdin")
    _common_config(p)
    p.add_argument("--golden", metavar="DIR", help="golden set(s) for the query rule (see `drift golden build`)")
    p.add_argument("--out", metavar="FILE", help="also write one alert CloudEvent JSON per line here")
    p.add_argument("--json", action="store_true", help="print alert CloudEvents as JSON lines instead")
    p.add_argument("--escalations", metavar="FILE",
                   help="write the escalated traces (feedback kind `escalate`) here, one JSON object per line, "
                        "for a judge sampler to evaluate at 100%% (drift serve sends them to topics.escalations)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--max-errors", type=int, default=20, metavar="N",
                   help="print at most N rejected lines (all are counted; default 20)")
    p.add_argument("--write-state", action="store_true",
                   help="re-seed the consumer group's state (topics.state) from this archive of the input, "
                        "with checkpoints at the input topics' current end, as drift serve writes them: a service "
                        "started afterwards restores them and reads only newer input (README, \"Re-seeding state\"). "
                        "Alerts raised are history: printed, not produced")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]", help="with --write-state: Kafka bootstrap servers")
    p.add_argument("--group-id", metavar="GROUP", help="with --write-state: the consumer group of drift serve "
                                                       "(default kafka.group_id, drift)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("simulate", help="write synthetic LLM traffic with an injected failure",
                       description="Synthetic traffic for several apps and intents with daily and weekly "
                                   "seasonality, with a named injected failure; writes the ground truth "
                                   "beside the events as <name>.truth.json.")
    p.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    p.add_argument("--out", metavar="EVENTS.jsonl", help="output file ('-' for stdout)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=int, default=None, help="simulated days (default 30; judge_drift 90)")
    p.add_argument("--volume", type=float, default=1.0, help="traffic multiplier (default 1.0)")
    p.add_argument("--batch", type=int, default=1, help="events per line (JSON array when > 1)")
    p.add_argument("--labels", action="store_true",
                   help="add the pass/fail judge dimension 'correctness' and human labels of it (stream "
                        "'labels', 20 a day per app/intent; always on in judge_drift)")
    p.add_argument("--feedback", action="store_true",
                   help="add user feedback events (stream 'feedback': thumbs_up/thumbs_down/regenerate/"
                        "escalate on ~8%% of requests; always on in blind_spot)")
    p.add_argument("--start", default="2026-01-05T00:00:00Z", help="first simulated day (RFC 3339)")
    p.add_argument("--stress", action="store_true",
                   help="harder failure-free traffic: per-series volumes over three orders of magnitude, "
                        "10x day/night, hour-of-day mean cycles on every app, 3%% zero scores, intent-mix "
                        "changes (described in the ground truth)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="the whole story, live on an embedded broker",
                       description="A simulated month of LLM traffic with four quiet failures injected at once "
                                   "(a prompt cleanup, a provider update, an input shift on real CLINC150 queries, "
                                   "a stale RAG index with real all-MiniLM-L6-v2 + faiss scores over COVID-QA). Starts "
                                   "a broker unless one is configured, runs `drift serve`, streams the month, prints "
                                   "alerts as they arrive and ends with a scorecard and a timeline picture.",
                       epilog=_EPILOG)
    _common_config(p)
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="use this Kafka instead of an embedded broker")
    p.add_argument("--offline", action="store_true", help="no Kafka: run the same events through the replay engine")
    p.add_argument("--otel", action="store_true",
                   help="send the scores as OpenTelemetry spans and gen_ai.evaluation.result log records "
                        "(otlp_proto, as the Collector's Kafka exporter) and run `drift ingest otlp` beside "
                        "`drift serve`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    p.add_argument("--workdir", default=None, help="where to write golden sets, alerts and the picture (default ./out/demo)")
    p.add_argument("--alertmanager", action="append", metavar="URL",
                   help="also deliver the demo's firing and resolved alerts to this Alertmanager as they arrive "
                        "(repeatable or comma-separated: an HA set; default [alertmanager] urls), through the same "
                        "sink as `drift serve --alertmanager`; the demo waits until every alert was accepted, e.g. "
                        "drift demo --alertmanager http://localhost:9093")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("rules", help="list the configured rules (and, with --kinds, every rule kind)",
                       description="The rules this configuration runs: built-ins, rules declared in TOML "
                                   "([rules.NAME] kind = ...), the series they watch and their overrides. With "
                                   "--kinds, every registered rule kind with its parameters, defaults and meaning.",
                       epilog=_EPILOG)
    _common_config(p)
    p.add_argument("--kinds", action="store_true", help="also list the rule kinds and their parameters")
    p.add_argument("--json", action="store_true", help="everything as JSON")
    p.set_defaults(func=_cmd_rules)

    p = sub.add_parser("sample-plan", help="judge sample rates per intent: detection delay of a 5%% drop and cost",
                       description=_SAMPLE_PLAN, epilog=_SAMPLE_PLAN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("requests", metavar="REQUESTS", help="events (JSONL) or a per-day summary (CSV/JSONL); '-' for stdin")
    _common_config(p)
    p.add_argument("--judge-cost", type=float, required=True, metavar="USD", help="judge cost per evaluated request")
    p.add_argument("--budget", type=float, metavar="USD", help="monthly judge budget (default: none, the target at least cost)")
    p.add_argument("--target-days", type=float, default=7.0, metavar="D", help="detection delay to reach (default 7)")
    p.add_argument("--drop", type=float, default=0.05, help="relative quality drop to detect (default 0.05)")
    p.add_argument("--min-rate", type=float, default=0.01, help="floor of every intent's rate (default 0.01)")
    p.add_argument("--max-rate", type=float, default=1.0, help="cap of every intent's rate (default 1)")
    p.add_argument("--no-spread", action="store_true", help="keep the budget left after the target is reached")
    p.add_argument("--dimension", metavar="DIM", help="plan for this quality dimension (default: each intent's slowest)")
    p.add_argument("--days", type=float, help="days the input covers (default: the span of its timestamps, or 1)")
    p.add_argument("--score-mean", type=float, default=0.85, help="score mean without scores in the input (default 0.85)")
    p.add_argument("--score-concentration", type=float, default=20.0,
                   help="Beta concentration of the scores without scores in the input (default 20: sd 0.078)")
    p.add_argument("--default-rate", type=float, default=0.02, help="the plan's rate for intents not in the input (0.02)")
    p.add_argument("--salt", default="", help="the sampler's hash salt written into the plan (default none)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (what drift.sampling.Sampler.from_plan reads)")
    p.set_defaults(func=_cmd_sample_plan)

    p = sub.add_parser("calibrate", help="agreement of the LLM judge with human labels (Cohen's kappa)",
                       description=_CALIBRATE, epilog=_CALIBRATE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", metavar="LABELS", help="labelled items, CSV or JSONL ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the report as JSON, an object keyed by dimension")
    p.add_argument("--by", choices=["intent"], help="also report each intent inside each dimension")
    p.add_argument("--weights", choices=["none", "linear", "quadratic"], default="none",
                   help="kappa weights (default none, for binary and categorical labels); ordinal scales such "
                        "as 1-5 should use linear or quadratic, so a near miss counts as partial agreement")
    mapping = p.add_mutually_exclusive_group()
    mapping.add_argument("--threshold", type=float, metavar="X",
                         help="numeric judge scores: >= X is label 1, below is 0")
    mapping.add_argument("--bins", metavar="E1,E2,…",
                         help="numeric judge scores to ordinal classes 0..m for m edges (np.digitize): class 0 "
                              "is score < E1, class i is E_i <= score < E_i+1, class m is score >= Em; a score "
                              "equal to an edge goes to the class above. Human labels must use the same class "
                              "numbers (or see --map-human)")
    p.add_argument("--map-human", action="store_true",
                   help="map the human columns with --threshold/--bins too (when they are scores on the same scale)")
    p.add_argument("--min-kappa", type=float, default=0.6, metavar="K",
                   help="gate: exit 1 when a gated dimension's kappa is below K, a number in [-1, 1] (default 0.6)")
    p.add_argument("--strict", action="store_true", help="gate on the interval's lower end instead of kappa")
    p.add_argument("--gate", action="append", metavar="DIM",
                   help="gate only this dimension (repeatable; default: all dimensions)")
    p.add_argument("--n-boot", type=int, default=2000, metavar="N",
                   help="bootstrap resamples (default 2000; at least 200, so that each 2.5%% tail of the 95%% "
                        "percentile interval holds at least 5 resamples)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed, a non-negative integer (default 0)")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("gate", help="gate a release on a golden set: floors and a paired regression test vs a baseline",
                       description=_GATE, epilog=_GATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="the candidate's per-item scores, CSV or JSONL ('-' for stdin)")
    p.add_argument("--baseline", metavar="RUN", help="the baseline's per-item scores on the same items (paired by id)")
    p.add_argument("--min", action="append", metavar="METRIC=VALUE",
                   help="floor: fail when METRIC's mean is below VALUE (repeatable)")
    p.add_argument("--max-drop", type=float, metavar="PCT",
                   help="regression: fail when the mean drops by more than PCT percent of the baseline's and the "
                        "paired test is significant (needs --baseline; default 0: any significant drop)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired test (default 0.05)")
    p.add_argument("--test", choices=["wilcoxon", "sign"], default="wilcoxon",
                   help="the one-sided paired test that decides (default wilcoxon: signed-rank)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the Student-t intervals (default 0.95)")
    p.add_argument("--metrics", metavar="M1,M2,…", help="only these columns are metrics (others are ignored)")
    p.add_argument("--require-all", action="store_true",
                   help="fail a metric when any item is missing or not scored on either side")
    p.add_argument("--gate-slices", action="store_true", help="a failing slice fails its metric")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON: an object keyed by metric (verdict, mean, baseline_mean, effect, "
                        "p_value, n, ci_low, ci_high, floor, reasons, missing, slices …)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (testsuite 'drift gate', a testcase per metric "
                                                   "and metric/slice); '-' for stdout")
    p.add_argument("--markdown", metavar="FILE", help="append a Markdown summary with ✅/❌ (e.g. \"$GITHUB_STEP_SUMMARY\"); "
                                                      "'-' for stdout")
    p.set_defaults(func=_cmd_gate)

    p = sub.add_parser("forward", help="follow llm.alerts and deliver the alerts to Alertmanager",
                       description=_FORWARD, epilog=_FORWARD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_config(p)
    p.add_argument("--alertmanager", action="append", metavar="URL",
                   help="Alertmanager base URL (repeatable: an HA set, every one is sent to)")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]", help="Kafka bootstrap servers (default localhost:9092)")
    p.add_argument("--group-id", metavar="GROUP", help="consumer group (default <kafka.group_id>-alertmanager)")
    p.add_argument("--from-beginning", action="store_true",
                   help="a group without committed offsets starts at the oldest alert kept (default: the end)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_forward)

    baseline = _command_group(sub, "baseline", "ACTION", help="operator commands on baselines: `drift baseline reset`",
                              description="Operator commands on the rules' baselines (sent to drift serve on "
                                          "drift.control).")
    p = baseline.add_parser("reset", help="accept a series' new level: resolve its episode, re-learn the baseline",
                            description=_BASELINE_RESET, epilog=_BASELINE_RESET_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_config(p)
    p.add_argument("--rule", required=True, action="append",
                   help="the rule (as in `drift rules`), e.g. quality_drop; repeatable (a new prompt usually "
                        "means quality_drop and quality_shift)")
    p.add_argument("--app", required=True, help="the app whose series are reset")
    p.add_argument("--intent", help="only this intent (default: every intent of the app)")
    p.add_argument("--dimension", help="only this dimension (score rules; default: every dimension)")
    p.add_argument("--reason", help="why (kept in the info alert and the log), e.g. 'prompt v7 accepted'")
    p.add_argument("--by", help="who (default: $USER)")
    p.add_argument("--at", type=_event_time, metavar="TIME",
                   help="event time of the reset, RFC 3339 or epoch seconds (default: now; for backfills, "
                        "where the service is reading old input: it applies the reset once it has read up to TIME)")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,…]", help="Kafka bootstrap servers (default localhost:9092)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the broker, more than 0 (default 30)")
    p.add_argument("--json", action="store_true", help="print where the command went as JSON")
    p.set_defaults(func=_cmd_baseline_reset)

    sub.add_parser("golden", help="golden sets of queries: `drift golden build QUERIES… --out DIR`",
                   add_help=False)
    # `drift broker ...` is dispatched before parsing (see main); listed here for --help
    sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) for local work",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["broker"]:  # its own parser, options included
        from drift.tools import broker

        return int(broker.main(argv[1:]) or 0)
    if argv[:2] == ["golden", "build"]:
        from drift.embeddings.golden import main_build

        return int(main_build(argv[2:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"drift: config error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
