"""Synthetic LLM traffic with named, injected failures (``drift simulate``).

A seeded, vectorised generator of the two event streams the engine watches -- quality scores
(one ``ScoreEvent`` per request and dimension) and retrieval similarities (one
``RetrievalEvent`` per request of a RAG app) -- over several apps and intents, with daily and
weekly seasonality, Poisson noise and one named failure injected at a known time and place;
on request (or where the scenario needs them) also human labels of a judge dimension and user
feedback, joined to the scored requests by ``trace_id``. The ground truth (what changed, where,
when, and which rules should fire) comes with the data.

Traffic model
-------------
* Apps and intents: ``support-bot`` (billing, refunds, shipping, account; RAG), ``docs-qa``
  (install, api, troubleshooting; RAG) and ``sales-assistant`` (pricing, demo; no retrieval).
* Requests per hour and intent: Poisson with rate ``25 * volume * daily(h) * weekly(d)``, where
  ``daily`` runs from 0.4 (03:00 UTC) to 1.6 (15:00 UTC) and ``weekly`` is 0.6 on Saturday and
  Sunday (UTC) and 1 otherwise; request times are uniform within the hour (millisecond grid).
* Every request has a ``trace_id`` (32 hex digits), a ``cost_usd`` (lognormal per app model) and
  yields one score per dimension, all at the request's time: quality dimensions ``format``
  (mean 0.92), ``relevance`` (0.85), ``coherence`` (0.90) and, for RAG apps, ``faithfulness``
  (0.88), each Beta with concentration 20 and a per-day wiggle of the mean within +-0.005; the
  flag ``refusal`` (1 with probability 0.02) and the check ``format_valid`` (1 = passed,
  probability 0.97). Quality scores are rounded to 4 decimals.
* The quality means of ``docs-qa`` and ``sales-assistant`` follow the hour of the day: times
  ``1 + 0.03 cos(2 pi (h - 3) / 24)`` (night traffic from another region scores higher), a
  cycle the rules must not take for drift. ``stress=True`` adds harder failure-free traffic
  (see :func:`simulate`).
* RAG requests also yield the top-5 retrieval similarities: top-1 ~ N(0.72, 0.06) clipped into
  [-1, 1], the others below it by exponential gaps (mean 0.03), rounded to 4 decimals.
* Random streams are split by purpose, so for one ``(seed, days, volume, start)`` every scenario
  shares the same base traffic: outside the injected effect its arrays equal ``stable``'s.
* Human labels (``labels=True``; on in ``judge_drift``): every request gets one more judge
  dimension, the pass/fail ``correctness`` (1 with probability :data:`CORRECTNESS_PASS_RATE`,
  independent of the other scores), emitted after the others. Each UTC day, 20 requests per
  app/intent (all of them on a day with fewer), chosen uniformly, are labelled by a human
  (``LabelEvent`` on stream ``labels``, rater ``r1``) 1-24 h after the request (uniform). The
  label is the judge's verdict flipped with probability ``e``, where ``e`` solves
  ``kappa(e) = kappa_target`` in closed form for the judge's pass rate ``p``
  (:func:`label_flip_probability`): with ``H = J xor Bernoulli(e)``, ``p_o = 1 - e`` and
  ``p_e = p^2 + (1-p)^2 - e (1-2p)^2`` give ``e = 2p(1-p)(1-kappa) / (1 - (1-2p)^2 (1-kappa))``,
  so the population Cohen's kappa between judge and human is exactly the target (0.8 when
  stable; for a block of labels, kappa of the block's mean ``e``). The judge's scores never
  change: a drifting judge shows only in its disagreement with the humans.
* User feedback (``feedback=True``; on in ``blind_spot``): per request, one ``FeedbackEvent``
  (stream ``feedback``) 5 s-10 min after it (uniform) with per-request probabilities
  ``thumbs_down: d(s) = 0.003 + 0.6 * clip((0.7 - s) / 0.2, 0, 1)`` of the request's
  ``relevance`` score ``s`` (0.3 % for a good answer, 60 % at ``s <= 0.5``), ``regenerate``
  0.4 %, ``escalate`` 0.08 % (~1 % of feedback), ``thumbs_up`` ``max(0.08 - d(s) - 0.0048, 0)``,
  none otherwise: 8 % of requests with ``s >= 0.68`` give feedback (8.4 % overall). At baseline
  (relevance mean 0.85) ~11 % of feedback events are thumbs-down and ~16 % negative
  (thumbs-down or regenerate), and only ~30 % of the thumbs-downs fall on responses the judge
  scored ``>= 0.7``. See :data:`FEEDBACK_MODEL` and ``truth["feedback"]``.
* Labels and feedback come from random streams of their own, so the score, retrieval and query
  arrays of a scenario are the same with them or without (apart from the added ``correctness``
  score events), and their events never pass the end of the simulated period (later ones are
  dropped: not labelled or clicked yet).
* ``input_shift`` adds a third stream, user queries (``QueryEvent`` with real ``text`` from
  CLINC150, Larson et al. 2019, CC BY 3.0; see :data:`QUERY_APPS`): per app, Poisson with rate
  ``QUERY_RATE_PER_HOUR * volume`` and the same seasonality, drawn from the held-out
  ``test``/``val`` queries of the app's golden domains (the golden set itself is built from their
  ``train`` queries, :func:`golden_texts`). Other scenarios have no queries.

Examples
--------
>>> from drift.tools.simulate import SCENARIOS, simulate
>>> sorted(SCENARIOS)  # doctest: +NORMALIZE_WHITESPACE
['blind_spot', 'context_bloat', 'input_shift', 'judge_drift', 'model_swap', 'prompt_cleanup',
 'provider_update', 'rag_staleness', 'refusal_spike', 'stable', 'truncation']
>>> sim = simulate("prompt_cleanup", seed=7, days=14, volume=0.5)
>>> change = sim.truth["changes"][0]
>>> change["what"], change["at"], change["app"], change["intents"]
('prompt_hash_change', '2026-01-16T10:00:00Z', 'support-bot', ['billing', 'refunds'])
>>> simulate("prompt_cleanup", seed=7, days=14, volume=0.5).truth == sim.truth
True
>>> events = iter_events(sim)  # both streams, in event-time order
>>> sorted(next(events))  # a RAG request: its retrieval event comes before its scores
['app', 'index_version', 'intent', 'scores', 'trace_id', 'ts']
>>> sorted(next(events))  # doctest: +NORMALIZE_WHITESPACE
['app', 'cost_usd', 'dimension', 'intent', 'model', 'prompt_hash', 'prompt_version', 'score',
 'trace_id', 'ts']

Human labels and user feedback ride along with any scenario; they always name their stream:

>>> sim = simulate("stable", seed=7, days=2, volume=0.2, labels=True, feedback=True)
>>> one = {e["stream"]: e for e in iter_events(sim) if "stream" in e}  # one event of each
>>> sorted(one["labels"])
['app', 'dimension', 'intent', 'label', 'rater', 'stream', 'trace_id', 'ts']
>>> one["labels"]["dimension"], one["labels"]["rater"]
('correctness', 'r1')
>>> sorted(one["feedback"])
['app', 'intent', 'kind', 'stream', 'trace_id', 'ts']
>>> round(float(label_flip_probability(0.8, 0.75)), 4)  # judge pass rate 0.75, kappa 0.8
0.0789
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["SCENARIOS", "Simulation", "simulate", "iter_events", "write_jsonl", "golden_texts",
           "QUERY_APPS", "label_flip_probability", "judge_kappa", "feedback_expectation"]

SCENARIOS: dict[str, str] = {
    "stable": "nothing changes: seasonal, noisy traffic only",
    "prompt_cleanup": "day 11: support-bot billing/refunds template trimmed (new prompt_hash); "
    "format score 0.92 -> 0.70 and format_valid pass rate 0.97 -> 0.72",
    "provider_update": "day 15: docs-qa relevance drops 6% (0.85 -> 0.80) with the same "
    "prompt_hash and model (silent provider-side update)",
    "rag_staleness": "day 14: support-bot retrieval similarities decline linearly to 12% lower "
    "over 3 days, then stay there; generation scores unchanged",
    "truncation": "day 13: sales-assistant responses truncated: coherence 0.90 -> 0.72, "
    "relevance 0.85 -> 0.76",
    "refusal_spike": "day 12: docs-qa model update; refusal rate triples (0.02 -> 0.06)",
    "input_shift": "day 14: a share of support-bot's user queries rising to 80% over 3 days comes "
    "from domains its golden set does not cover (small talk, travel, utility, out-of-scope)",
    "judge_drift": "human labels on: from day 20 the LLM judge's pass/fail correctness verdicts "
    "agree less and less with the human labels (Cohen's kappa 0.8 falling linearly to 0.3 at day "
    "80, crossing 0.45 on day 62); judge scores unchanged; 90 days by default",
    "blind_spot": "user feedback on: day 15: support-bot billing gets a regression users see and "
    "the judge does not: thumbs-down probability +0.06 on every response whatever its relevance "
    "score (negative feedback share ~0.16 -> ~0.51); judge scores unchanged",
    "context_bloat": "day 14: docs-qa's retriever stuffs 40% more context into every prompt: "
    "tokens and cost per request +40% at the same model, prompt and quality (spend per quality "
    "point +40%)",
    "model_swap": "day 14: docs-qa moves to another model: cost per request +3.5%, every quality "
    "dimension 10% lower (spend per quality point +15%, below the 30% bar): a quality problem, "
    "not a cost one",
}
# Index of each scenario's effect stream: frozen, so adding a scenario leaves the others' data as is.
_EFFECT_STREAM = {name: k for k, name in enumerate(
    ("prompt_cleanup", "provider_update", "rag_staleness", "refusal_spike", "stable", "truncation",
     "input_shift", "judge_drift", "blind_spot", "context_bloat", "model_swap"))}

DEFAULT_DAYS = 30
DEFAULT_DAYS_OF = {"judge_drift": 90}  # scenarios that need longer than DEFAULT_DAYS
DEFAULT_START = "2026-01-05T00:00:00Z"

# --- the traffic model ---------------------------------------------------------------------
BASE_RATE_PER_HOUR = 25.0  # requests per hour and intent before seasonality
DAILY_AMPLITUDE = 0.6  # daily factor 1 +- 0.6: 0.4 at night, 1.6 in the afternoon
DAILY_PEAK_HOUR = 15.0  # UTC hour of the daily peak
WEEKEND_FACTOR = 0.6
CONCENTRATION = 20.0  # Beta(m * c, (1 - m) * c)
DAILY_WIGGLE = 0.005  # per-day shift of each quality mean, uniform in +-this
TOP_K = 5
TOP1_MEAN, TOP1_SD, GAP_MEAN = 0.72, 0.06, 0.03
CHANGE_HOUR = 10  # injected changes happen at 10:00 UTC on their day
# Hour-of-day cycle of the quality means (night traffic from another region): relative +-3 %,
# highest at 03:00 UTC, for the apps listed (every app under ``stress``).
MEAN_CYCLE = 0.03
MEAN_CYCLE_PEAK_HOUR = 3.0
MEAN_CYCLE_APPS = ("docs-qa", "sales-assistant")
# ``stress=True``: harder, still failure-free, traffic (see :func:`simulate`)
STRESS_DAILY_AMPLITUDE = 9.0 / 11.0  # 1 +- 9/11: the afternoon peak is 10x the night trough
STRESS_SPREAD = 1.5  # per-series volume factors 10**-1.5 .. 10**1.5: three orders of magnitude
STRESS_ZEROS = 0.03  # share of quality scores that are 0 (failed answers)
STRESS_MIX_EVERY = 10  # days between intent-mix changes (one series' volume x or / 2-3)

# (app, intents, RAG?, model, median cost USD)
_APPS: tuple[tuple[str, tuple[str, ...], bool, str, float], ...] = (
    ("support-bot", ("billing", "refunds", "shipping", "account"), True,
     "gpt-4o-2024-08-06", 0.004),
    ("docs-qa", ("install", "api", "troubleshooting"), True,
     "claude-3-5-sonnet-20241022", 0.006),
    ("sales-assistant", ("pricing", "demo"), False, "gpt-4o-mini-2024-07-18", 0.0006),
)
COST_SIGMA = 0.6
NEW_MODEL = {"docs-qa": "claude-3-7-sonnet-20250219"}
CONTEXT_BLOAT = 1.40  # context_bloat: tokens (and so cost) per request x 1.4
SWAP_COST, SWAP_QUALITY = 1.035, 0.90  # model_swap: cost per request x 1.035, quality x 0.9

# Score dimensions in the order each request's events are emitted.
DIMENSIONS: tuple[str, ...] = (
    "format", "relevance", "coherence", "faithfulness", "refusal", "format_valid",
)
QUALITY_MEANS: dict[str, float] = {
    "format": 0.92, "relevance": 0.85, "coherence": 0.90, "faithfulness": 0.88,
}
REFUSAL_RATE = 0.02
FORMAT_PASS_RATE = 0.97
DIMENSION_KIND = {
    "format": "quality", "relevance": "quality", "coherence": "quality",
    "faithfulness": "quality", "refusal": "flag", "format_valid": "check",
}
_RAG_ONLY = {"faithfulness"}

# --- human labels (``labels=True``) ---------------------------------------------------------
LABELLED_DIMENSION = "correctness"  # a pass/fail judge dimension, added when labels are on
CORRECTNESS_PASS_RATE = 0.75  # P(judge verdict = 1)
DIMENSION_KIND[LABELLED_DIMENSION] = "quality"  # the engine's default kind for a new name; 0/1
LABELS_PER_DAY = 20  # labelled requests per UTC day and app/intent
LABEL_DELAY_S = (3600, 86400)  # label time - request time, uniform
LABEL_RATER = "r1"
JUDGE_KAPPA = 0.8  # judge-human Cohen's kappa when nothing drifts
# judge_drift: kappa JUDGE_KAPPA until day 20 (10:00 UTC), then linear to 0.3 at day 80
JUDGE_DRIFT_DAYS = (20, 80)
JUDGE_DRIFT_KAPPA_END = 0.3
JUDGE_DRIFT_CROSSING = 0.45  # ... which it crosses on day 62; expected alert within 14 days
JUDGE_DRIFT_DETECT_DAYS = 14

# --- user feedback (``feedback=True``) -------------------------------------------------------
FEEDBACK_RATE = 0.08  # requests with a feedback event (those whose relevance >= ~0.68)
FEEDBACK_DELAY_S = (5, 600)  # feedback time - request time, uniform
# per-request probabilities; thumbs-down d(s) = floor + span * clip((hi - s) / (hi - lo), 0, 1)
# of the request's relevance score s; thumbs_up = max(FEEDBACK_RATE - d(s) - regen - esc, 0)
FEEDBACK_MODEL: dict[str, float] = {
    "thumbs_down_floor": 0.003, "thumbs_down_span": 0.6, "ramp_lo": 0.5, "ramp_hi": 0.7,
    "regenerate": 0.004, "escalate": 0.0008,
}
FEEDBACK_KINDS = ("thumbs_down", "regenerate", "escalate", "thumbs_up")
GOOD_RELEVANCE = 0.7  # "the judge scored it good" (judge_user_disagreement)
# blind_spot: from day 15, support-bot/billing's thumbs-down probability + 0.06, every response
BLIND_SPOT_BOOST = 0.06

# Prompt templates: billing and refunds share one "payments" template of support-bot.
_TEMPLATE_OF = {("support-bot", "billing"): "support-bot/payments",
                ("support-bot", "refunds"): "support-bot/payments"}

_HEX_LUT = np.array([f"{i:02x}" for i in range(256)], dtype="S2")
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000


@dataclasses.dataclass
class Simulation:
    """Generated traffic of one scenario, as column arrays, with its ground truth.

    ``scores`` columns: ``ts`` (float64 Unix seconds, millisecond grid), ``app``, ``intent``,
    ``dimension``, ``prompt_hash``, ``prompt_version``, ``model``, ``trace_id`` (object arrays of
    ``str``), ``score`` and ``cost_usd`` (float64). ``retrieval`` columns: ``ts``, ``app``,
    ``intent``, ``trace_id``, ``index_version`` and ``scores`` (float64, ``n x k``, each row
    descending). Both are sorted by ``ts``; a request's score events are consecutive, in
    :data:`DIMENSIONS` order. ``queries`` (``input_shift`` only, else empty) columns: ``ts``,
    ``app``, ``trace_id``, ``text`` and, as ground truth not emitted in events, ``domain`` (the
    CLINC150 domain of the query, ``"oos"`` for out-of-scope); sorted by ``ts``. ``labels``
    (``labels=True`` or ``judge_drift``, else empty) columns: ``ts``, ``app``, ``intent``,
    ``trace_id``, ``dimension``, ``label`` (float64, 0 or 1), ``rater`` and, not emitted,
    ``request_ts`` and ``judge`` (the judge's score of that trace and dimension). ``feedback``
    (``feedback=True`` or ``blind_spot``, else empty) columns: ``ts``, ``app``, ``intent``,
    ``trace_id``, ``kind`` and, not emitted, ``request_ts`` and ``relevance`` (the judge's
    relevance score of that trace). Both sorted by ``ts``. ``truth`` is JSON-serialisable.
    """

    scenario: str
    seed: int
    start: float
    days: int
    scores: dict[str, np.ndarray]
    retrieval: dict[str, np.ndarray]
    truth: dict
    queries: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    feedback: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def n_events(self) -> int:
        """Number of events of all streams."""
        return (len(self.scores["ts"]) + len(self.retrieval["ts"]) + len(self.queries.get("ts", ()))
                + len(self.labels.get("ts", ())) + len(self.feedback.get("ts", ())))


# --- helpers ---------------------------------------------------------------------------------

def _parse_start(start: str | float | _dt.datetime) -> float:
    if isinstance(start, _dt.datetime):
        dt = start
    elif isinstance(start, (int, float)) and not isinstance(start, bool):
        return float(start)
    elif isinstance(start, str):
        s = start.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        dt = _dt.datetime.fromisoformat(s)
    else:
        raise TypeError(f"start must be an RFC 3339 string, got {type(start).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.UTC)
    return dt.timestamp()


def _rfc3339(t: float) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (milliseconds added when not whole)."""
    ms = int(round(t * 1000))
    dt = _dt.datetime.fromtimestamp(ms // 1000, tz=_dt.UTC)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        s += f".{ms % 1000:03d}"
    return s + "Z"


def _ts_strings(ts: np.ndarray) -> list[str]:
    """Vectorised Unix seconds -> RFC 3339 with milliseconds and ``Z``."""
    ms = np.rint(np.asarray(ts, dtype=np.float64) * 1000.0).astype(np.int64)
    out = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return [s + "Z" for s in out.tolist()]


def _hex(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    """``n`` random lowercase hex strings of ``2 * nbytes`` digits, as an object array."""
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    pairs = np.ascontiguousarray(_HEX_LUT[raw])
    return pairs.view(f"S{2 * nbytes}").ravel().astype(f"U{2 * nbytes}").astype(object)


def _obj(values: list[str]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


# --- scenarios -------------------------------------------------------------------------------

def _change_at(t0: float, day: int) -> float:
    return t0 + day * 86400.0 + CHANGE_HOUR * 3600.0


_CHANGE_DAY = {"prompt_cleanup": 11, "provider_update": 15, "rag_staleness": 14,
               "truncation": 13, "refusal_spike": 12, "input_shift": 14,
               "judge_drift": JUDGE_DRIFT_DAYS[0], "blind_spot": 15, "context_bloat": 14, "model_swap": 14}
_LAST_DAY = {"judge_drift": JUDGE_DRIFT_DAYS[1]}  # scenarios whose change lasts beyond its day


def label_flip_probability(kappa: float | np.ndarray, prevalence: float) -> np.ndarray:
    """The probability ``e`` of flipping a binary judge verdict into the human label that gives
    a population Cohen's kappa of ``kappa`` between judge and human, when the judge says 1 with
    probability ``prevalence`` (``p``).

    With ``H = J xor F``, ``F ~ Bernoulli(e)``: observed agreement ``p_o = 1 - e``, human rate
    ``q = p + e (1 - 2p)``, chance agreement ``p_e = p q + (1-p)(1-q) = p^2 + (1-p)^2 -
    e (1-2p)^2``; solving ``kappa = (p_o - p_e) / (1 - p_e)`` for ``e`` gives
    ``e = 2p(1-p)(1-kappa) / (1 - (1-2p)^2 (1-kappa))`` (0 at kappa 1, 1/2 at kappa 0).

    >>> float(label_flip_probability(1.0, 0.75)), float(label_flip_probability(0.0, 0.75))
    (0.0, 0.5)
    """
    k = np.asarray(kappa, dtype=np.float64)
    p = float(prevalence)
    if not 0.0 < p < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence!r}")
    return 2.0 * p * (1.0 - p) * (1.0 - k) / (1.0 - (1.0 - 2.0 * p) ** 2 * (1.0 - k))


def judge_kappa(scenario: str, t: float | np.ndarray, start: float = 0.0) -> np.ndarray:
    """Target judge-human kappa of ``scenario`` at Unix time(s) ``t`` (day 0 at ``start``):
    :data:`JUDGE_KAPPA`, except in ``judge_drift`` where it falls linearly from day 20 10:00 UTC
    to :data:`JUDGE_DRIFT_KAPPA_END` at day 80 10:00 and stays there.

    >>> [round(float(judge_kappa("judge_drift", d * 86400.0 + 36000.0)), 3) for d in (0, 20, 62, 80, 89)]
    [0.8, 0.8, 0.45, 0.3, 0.3]
    """
    t = np.asarray(t, dtype=np.float64)
    if scenario != "judge_drift":
        return np.full(t.shape, JUDGE_KAPPA)
    a, b = (_change_at(start, d) for d in JUDGE_DRIFT_DAYS)
    frac = np.clip((t - a) / (b - a), 0.0, 1.0)
    return JUDGE_KAPPA + (JUDGE_DRIFT_KAPPA_END - JUDGE_KAPPA) * frac


def _thumbs_down_p(s: np.ndarray) -> np.ndarray:
    m = FEEDBACK_MODEL
    ramp = np.clip((m["ramp_hi"] - s) / (m["ramp_hi"] - m["ramp_lo"]), 0.0, 1.0)
    return m["thumbs_down_floor"] + m["thumbs_down_span"] * ramp


def feedback_expectation(relevance_mean: float = QUALITY_MEANS["relevance"],
                         boost: float = 0.0) -> dict[str, float]:
    """Expected feedback statistics of the model for relevance scores ~ Beta with mean
    ``relevance_mean`` (concentration 20) and a thumbs-down probability raised by ``boost``:
    the feedback rate and thumbs-down rate per request, the negative share (thumbs-down +
    regenerate over all feedback events) and the share of thumbs-downs on responses with
    relevance ``>= 0.7`` (numerical integration).

    >>> e = feedback_expectation()
    >>> round(e["negative_share"], 2), round(e["thumbs_down_good_share"], 2)
    (0.16, 0.3)
    """
    x = (np.arange(20_000) + 0.5) / 20_000
    a, b = relevance_mean * CONCENTRATION, (1.0 - relevance_mean) * CONCENTRATION
    w = np.exp((a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x))
    w /= w.sum()
    base = _thumbs_down_p(x)
    other = FEEDBACK_MODEL["regenerate"] + FEEDBACK_MODEL["escalate"]
    up = np.maximum(FEEDBACK_RATE - base - other, 0.0)
    td = base + boost
    td_rate = float(w @ td)
    rate = td_rate + other + float(w @ up)
    return {"feedback_rate": rate, "thumbs_down_rate": td_rate,
            "negative_share": (td_rate + FEEDBACK_MODEL["regenerate"]) / rate,
            "thumbs_down_good_share": float(w @ (td * (x >= GOOD_RELEVANCE))) / td_rate}


def simulate(
    scenario: str,
    *,
    seed: int = 0,
    days: int | None = None,
    start: str = DEFAULT_START,
    volume: float = 1.0,
    stress: bool = False,
    labels: bool = False,
    feedback: bool = False,
) -> Simulation:
    """Generate ``days`` of traffic for ``scenario`` (see :data:`SCENARIOS`).

    Parameters
    ----------
    scenario : str
        A key of :data:`SCENARIOS`.
    seed : int, default 0
        Seed of all randomness; the same arguments give identical arrays.
    days : int, optional
        Simulated days (default 30; ``judge_drift`` 90). The scenario's change must fall inside
        them (``judge_drift``: its kappa ramp, which ends on day 80).
    start : str, default ``"2026-01-05T00:00:00Z"``
        RFC 3339 start time (day 0); hours and weekdays of the seasonality are UTC.
    volume : float, default 1.0
        Multiplier of the request rate.
    stress : bool, default False
        Harder traffic with no failure in it: per-series volume factors spanning three orders
        of magnitude (``10**-1.5`` to ``10**1.5``, assigned at random), a 10x day/night volume
        cycle, the hour-of-day mean cycle on every app, a share of zero quality scores (failed
        answers, :data:`STRESS_ZEROS`) and intent-mix changes (every
        :data:`STRESS_MIX_EVERY` days one series' volume is multiplied or divided by 2-3).
        The injected change of ``scenario`` is the same. Described in ``truth["stress"]``.
    labels : bool, default False
        Add the pass/fail judge dimension ``correctness`` to every request and human labels of
        it (stream ``labels``, 20 a day per app/intent; see the module docstring). Always on in
        ``judge_drift``. Described in ``truth["labels"]``.
    feedback : bool, default False
        Add user feedback events (stream ``feedback``: thumbs up/down, regenerate, escalate on
        ~8 % of requests, thumbs-down concentrated on low-relevance responses). Always on in
        ``blind_spot``. Described in ``truth["feedback"]``.

    Returns
    -------
    Simulation
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    days = DEFAULT_DAYS_OF.get(scenario, DEFAULT_DAYS) if days is None else days
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    days = int(days)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    volume = float(volume)
    if not (math.isfinite(volume) and volume > 0):
        raise ValueError(f"volume must be a positive finite number, got {volume!r}")
    t0 = _parse_start(start)
    t0_ms = int(round(t0 * 1000))
    t0 = t0_ms / 1000.0
    if scenario in _CHANGE_DAY:
        need = _LAST_DAY.get(scenario, _CHANGE_DAY[scenario])
        if days <= need:
            if scenario == "judge_drift":
                raise ValueError(f"scenario 'judge_drift' lowers the judge-human kappa from day "
                                 f"{JUDGE_DRIFT_DAYS[0]} to day {need}: needs days > {need} "
                                 f"(default {DEFAULT_DAYS_OF[scenario]})")
            raise ValueError(f"scenario {scenario!r} changes on day {need}: needs days > {need}")
    labels = bool(labels) or scenario == "judge_drift"
    feedback = bool(feedback) or scenario == "blind_spot"

    # Independent random streams by purpose: base traffic is the same for every scenario.
    (r_traffic, r_ids, r_cost, r_catalog, r_wiggle, r_quality, r_refusal, r_format,
     r_retrieval) = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9))
    r_effect = np.random.default_rng(
        np.random.SeedSequence([seed, _EFFECT_STREAM[scenario]], spawn_key=(99,)))

    # ---- catalog: series (app, intent), templates, models
    s_app, s_intent, s_rag, s_app_idx = [], [], [], []
    for ai, (app, app_intents, app_rag, _model, _cost) in enumerate(_APPS):
        for intent in app_intents:
            s_app.append(app)
            s_intent.append(intent)
            s_rag.append(app_rag)
            s_app_idx.append(ai)
    n_series = len(s_app)
    s_rag_arr = np.array(s_rag)
    s_app_idx_arr = np.array(s_app_idx)
    templates = list(dict.fromkeys(_TEMPLATE_OF.get((a, i), f"{a}/{i}")
                                   for a, i in zip(s_app, s_intent)))
    t_hash = _hex(r_catalog, len(templates), 6).tolist()
    t_version = r_catalog.integers(2, 9, size=len(templates)).tolist()
    tmpl_of_series = [templates.index(_TEMPLATE_OF.get((a, i), f"{a}/{i}"))
                      for a, i in zip(s_app, s_intent)]
    s_hash = _obj([t_hash[k] for k in tmpl_of_series])
    s_version = _obj([f"v{t_version[k]}" for k in tmpl_of_series])
    app_names = _obj([a[0] for a in _APPS])
    app_models = _obj([a[3] for a in _APPS])
    start_date = _dt.datetime.fromtimestamp(t0_ms // 1000, tz=_dt.UTC).date()
    app_index_version = _obj([
        f"idx-{start_date - _dt.timedelta(days=4 + 3 * k):%Y-%m-%d}" if a[2] else ""
        for k, a in enumerate(_APPS)])

    # ---- requests: Poisson counts per (hour, series), uniform times within the hour
    n_hours = days * 24
    hour_start_ms = t0_ms + np.arange(n_hours, dtype=np.int64) * _MS_PER_HOUR
    mid = (hour_start_ms + _MS_PER_HOUR // 2) / 1000.0
    hod = (mid % 86400.0) / 3600.0
    amplitude = STRESS_DAILY_AMPLITUDE if stress else DAILY_AMPLITUDE
    daily = 1.0 + amplitude * np.cos(2.0 * np.pi * (hod - DAILY_PEAK_HOUR) / 24.0)
    weekday = (np.floor(mid / 86400.0).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    weekly = np.where(weekday >= 5, WEEKEND_FACTOR, 1.0)
    mix = np.ones((n_hours, n_series))
    stress_truth: dict[str, Any] = {}
    if stress:
        r_stress = np.random.default_rng(np.random.SeedSequence([seed], spawn_key=(77,)))
        spread = 10.0 ** r_stress.permutation(np.linspace(-STRESS_SPREAD, STRESS_SPREAD, n_series))
        mix *= spread[None, :]
        mix_changes = []
        for d0 in range(STRESS_MIX_EVERY, days, STRESS_MIX_EVERY):
            k = int(r_stress.integers(n_series))
            f = float(r_stress.uniform(2.0, 3.0)) ** (1 if r_stress.random() < 0.5 else -1)
            mix[d0 * 24:, k] *= f
            mix_changes.append({"day": d0, "series": f"{s_app[k]}/{s_intent[k]}", "factor": round(f, 3)})
        stress_truth = {
            "requests_per_day": {f"{s_app[k]}/{s_intent[k]}": round(float(
                BASE_RATE_PER_HOUR * volume * spread[k] * 24 * np.mean(daily * weekly)), 1) for k in range(n_series)},
            "day_night_ratio": round((1 + amplitude) / (1 - amplitude), 2), "zero_share": STRESS_ZEROS,
            "mean_cycle": {"amplitude": MEAN_CYCLE, "peak_hour_utc": MEAN_CYCLE_PEAK_HOUR, "apps": "all"},
            "mix_changes": mix_changes}
    lam = BASE_RATE_PER_HOUR * volume * (daily * weekly)[:, None] * mix
    counts = r_traffic.poisson(lam).ravel()
    n = int(counts.sum())
    series = np.repeat(np.tile(np.arange(n_series), n_hours), counts)
    hour = np.repeat(np.repeat(np.arange(n_hours), n_series), counts)
    ts_ms = hour_start_ms[hour] + r_traffic.integers(0, _MS_PER_HOUR, size=n)
    order = np.argsort(ts_ms, kind="stable")
    ts_ms, series = ts_ms[order], series[order]
    ts = ts_ms / 1000.0
    day = (ts_ms - t0_ms) // _MS_PER_DAY
    app_idx = s_app_idx_arr[series]
    rag = s_rag_arr[series]

    trace_id = _hex(r_ids, n, 16)
    cost_median = np.array([a[4] for a in _APPS])[app_idx]
    cost = np.round(np.maximum(cost_median * np.exp(COST_SIGMA * r_cost.standard_normal(n)),
                               1e-6), 6)

    # ---- base scores (n x dims)
    n_dims = len(DIMENSIONS)
    values = np.empty((n, n_dims))
    wiggle = r_wiggle.uniform(-DAILY_WIGGLE, DAILY_WIGGLE, size=(n_series, 4, days))
    quality_mean = {}
    cycle_apps = [k for k, a in enumerate(_APPS) if stress or a[0] in MEAN_CYCLE_APPS]
    cycle = np.where(np.isin(app_idx, cycle_apps), MEAN_CYCLE, 0.0) * np.cos(
        2.0 * np.pi * ((ts % 86400.0) / 3600.0 - MEAN_CYCLE_PEAK_HOUR) / 24.0)
    for d, dim in enumerate(DIMENSIONS[:4]):
        m = (QUALITY_MEANS[dim] + wiggle[series, d, day]) * (1.0 + cycle)
        quality_mean[dim] = m
        values[:, d] = r_quality.beta(m * CONCENTRATION, (1.0 - m) * CONCENTRATION)
    refusal_u = r_refusal.random(n)
    format_u = r_format.random(n)
    refusal_p = np.full(n, REFUSAL_RATE)
    format_p = np.full(n, FORMAT_PASS_RATE)

    top1 = np.clip(r_retrieval.normal(TOP1_MEAN, TOP1_SD, size=n), -1.0, 1.0)
    gaps = r_retrieval.exponential(GAP_MEAN, size=(n, TOP_K - 1))
    ret_scores = top1[:, None] - np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, 1)], 1)
    ret_scores = np.clip(ret_scores, -1.0, 1.0)

    req_hash = s_hash[series]
    req_version = s_version[series]
    req_model = app_models[app_idx]

    # ---- the injected change
    changes: list[dict[str, Any]] = []
    td_boost = np.zeros(n)  # blind_spot: added thumbs-down probability per request
    if scenario != "stable":
        at = _change_at(t0, _CHANGE_DAY[scenario])
        at_ms = int(round(at * 1000))
        after = ts_ms >= at_ms

        def where(app: str, intents: tuple[str, ...] | None = None) -> np.ndarray:
            sel = [k for k in range(n_series)
                   if s_app[k] == app and (intents is None or s_intent[k] in intents)]
            return np.isin(series, sel)

        def redraw(dim: str, mask: np.ndarray, new_mean: float) -> None:
            d = DIMENSIONS.index(dim)
            m = new_mean + (quality_mean[dim][mask] - QUALITY_MEANS[dim])  # keep the wiggle
            values[mask, d] = r_effect.beta(m * CONCENTRATION, (1.0 - m) * CONCENTRATION)

        def series_keys(app: str, intents: list[str], dims: list[str]) -> list[str]:
            if not dims:
                return [f"{app}/{i}" for i in intents]
            return [f"{app}/{i}/{d}" for i in intents for d in dims]

        base = {"at": _rfc3339(at)}
        if scenario == "prompt_cleanup":
            app, intents = "support-bot", ["billing", "refunds"]
            mask = after & where(app, tuple(intents))
            old_k = templates.index("support-bot/payments")
            old_hash, old_ver = t_hash[old_k], t_version[old_k]
            new_hash = old_hash
            while new_hash in t_hash:
                new_hash = str(_hex(r_effect, 1, 6)[0])
            req_hash[mask] = new_hash
            req_version[mask] = f"v{old_ver + 1}"
            redraw("format", mask, 0.70)
            format_p[mask] = 0.72
            dims = ["format", "format_valid"]
            changes.append({
                "what": "prompt_hash_change", **base, "app": app, "intents": intents,
                "stream": "scores", "dimensions": dims,
                "series": series_keys(app, intents, dims),
                "from": old_hash, "to": new_hash,
                "prompt_version": {"from": f"v{old_ver}", "to": f"v{old_ver + 1}"},
                "effect": {"format": {"stat": "mean", "before": 0.92, "after": 0.70},
                           "format_valid": {"stat": "pass_rate", "before": 0.97,
                                            "after": 0.72}},
                "expected_rules": ["format_failure_spike", "quality_drop"],
                "expected_cause": "prompt_hash_change",
                "allowed_rules": ["quality_shift", "prompt_change"],
                "description": "nine words removed from the shared payments template of "
                "support-bot (billing, refunds): new prompt_hash; the JSON-format judge score "
                "and the format_valid pass rate drop",
            })
        elif scenario == "provider_update":
            app = "docs-qa"
            intents = [s_intent[k] for k in range(n_series) if s_app[k] == app]
            mask = after & where(app)
            new = round(QUALITY_MEANS["relevance"] * 0.94, 4)
            redraw("relevance", mask, new)
            changes.append({
                "what": "provider_update", **base, "app": app, "intents": intents,
                "stream": "scores", "dimensions": ["relevance"],
                "series": series_keys(app, intents, ["relevance"]),
                "effect": {"relevance": {"stat": "mean", "before": QUALITY_MEANS["relevance"],
                                         "after": new, "pct_drop": 0.06}},
                "expected_rules": ["quality_drop", "quality_shift"], "expected_any": True,
                "expected_cause": "none",
                "allowed_rules": [],
                "description": "silent provider-side model update: same prompt_hash and model "
                "string, relevance mean 6% lower for every docs-qa intent",
            })
        elif scenario == "rag_staleness":
            app = "support-bot"
            intents = [s_intent[k] for k in range(n_series) if s_app[k] == app]
            ramp = 3 * 86400.0
            frac = np.clip((ts - at) / ramp, 0.0, 1.0)
            factor = np.where(where(app), 1.0 - 0.12 * frac, 1.0)
            ret_scores *= factor[:, None]
            changes.append({
                "what": "index_staleness", **base, "ramp_end": _rfc3339(at + ramp),
                "app": app, "intents": intents, "stream": "retrieval", "dimensions": [],
                "series": series_keys(app, intents, []),
                "effect": {"top1": {"stat": "median", "before": TOP1_MEAN,
                                    "after": round(TOP1_MEAN * 0.88, 4), "pct_drop": 0.12,
                                    "ramp": "linear over 3 days, then constant"}},
                "expected_rules": ["retrieval_drop"], "expected_cause": "none",
                "allowed_rules": [],
                "description": "the knowledge base of support-bot goes stale: all top-k "
                "retrieval similarities decline linearly to 12% lower over 3 days; index_version "
                "and generation scores unchanged",
            })
        elif scenario == "truncation":
            app = "sales-assistant"
            intents = [s_intent[k] for k in range(n_series) if s_app[k] == app]
            mask = after & where(app)
            redraw("coherence", mask, 0.72)
            redraw("relevance", mask, 0.76)
            dims = ["coherence", "relevance"]
            changes.append({
                "what": "response_truncation", **base, "app": app, "intents": intents,
                "stream": "scores", "dimensions": dims,
                "series": series_keys(app, intents, dims),
                "effect": {"coherence": {"stat": "mean", "before": 0.90, "after": 0.72},
                           "relevance": {"stat": "mean", "before": 0.85, "after": 0.76}},
                "expected_rules": ["quality_drop", "quality_shift"], "expected_any": True,
                "expected_cause": "none",
                "allowed_rules": [],
                "description": "sales-assistant responses are truncated (e.g. a lowered "
                "max_tokens): coherence and relevance fall; prompt_hash and model unchanged",
            })
        elif scenario == "refusal_spike":
            app = "docs-qa"
            intents = [s_intent[k] for k in range(n_series) if s_app[k] == app]
            mask = after & where(app)
            old_model, new_model = _APPS[1][3], NEW_MODEL[app]
            req_model[mask] = new_model
            refusal_p[mask] = 3 * REFUSAL_RATE
            changes.append({
                "what": "model_change", **base, "app": app, "intents": intents,
                "stream": "scores", "dimensions": ["refusal"],
                "series": series_keys(app, intents, ["refusal"]),
                "from": old_model, "to": new_model,
                "effect": {"refusal": {"stat": "rate", "before": REFUSAL_RATE,
                                       "after": 3 * REFUSAL_RATE, "ratio": 3.0}},
                "expected_rules": ["flag_rate_spike"], "expected_cause": "model_change",
                "allowed_rules": ["prompt_change"],
                "description": "docs-qa switches to a new model version; the refusal rate "
                "triples; prompt_hash unchanged",
            })
        elif scenario == "judge_drift":  # the labels below follow judge_kappa(); scores unchanged
            end = _change_at(t0, JUDGE_DRIFT_DAYS[1])
            crossing = at + (end - at) * (JUDGE_KAPPA - JUDGE_DRIFT_CROSSING) / (
                JUDGE_KAPPA - JUDGE_DRIFT_KAPPA_END)
            flip = label_flip_probability(
                np.array([JUDGE_KAPPA, JUDGE_DRIFT_KAPPA_END]), CORRECTNESS_PASS_RATE)
            for app, app_intents, *_ in _APPS:
                intents = list(app_intents)
                changes.append({
                    "what": "judge_drift", **base, "ramp_end": _rfc3339(end),
                    "app": app, "intents": intents, "stream": "labels",
                    "dimensions": [LABELLED_DIMENSION],
                    "series": series_keys(app, intents, [LABELLED_DIMENSION]),
                    "effect": {"kappa": {
                        "stat": "cohen_kappa", "before": JUDGE_KAPPA,
                        "after": JUDGE_DRIFT_KAPPA_END,
                        "ramp": f"linear from day {JUDGE_DRIFT_DAYS[0]} to day "
                        f"{JUDGE_DRIFT_DAYS[1]} (10:00 UTC), then constant",
                        "flip_probability": {"before": round(float(flip[0]), 6),
                                             "after": round(float(flip[1]), 6)}}},
                    "crossing": {"kappa": JUDGE_DRIFT_CROSSING, "at": _rfc3339(crossing)},
                    "expected_by": _rfc3339(crossing + JUDGE_DRIFT_DETECT_DAYS * 86400.0),
                    "expected_rules": ["judge_agreement_drop"], "expected_cause": "none",
                    "allowed_rules": [],
                    "description": f"the LLM judge of {app} drifts: its pass/fail correctness "
                    f"verdicts agree less and less with the human labels (kappa "
                    f"{JUDGE_KAPPA} -> {JUDGE_DRIFT_KAPPA_END}); judge_agreement_drop expected "
                    f"on every intent within {JUDGE_DRIFT_DETECT_DAYS} days of kappa crossing "
                    f"{JUDGE_DRIFT_CROSSING} (expected_by); the judge's scores do not change",
                })
        elif scenario == "blind_spot":
            app, intents = "support-bot", ["billing"]
            td_boost[after & where(app, tuple(intents))] = BLIND_SPOT_BOOST
            m = QUALITY_MEANS["relevance"]
            before_e, after_e = feedback_expectation(m), feedback_expectation(m, BLIND_SPOT_BOOST)

            def fx(key: str) -> dict[str, float]:
                b, a = before_e[key], after_e[key]
                return {"before": round(b, 4), "after": round(a, 4), "ratio": round(a / b, 3)}

            changes.append({
                "what": "judge_blind_spot", **base, "app": app, "intents": intents,
                "stream": "feedback", "dimensions": [], "judge_dimension": "relevance",
                "series": series_keys(app, intents, []),
                "effect": {"thumbs_down_rate": {"stat": "per request", **fx("thumbs_down_rate"),
                                                "boost": BLIND_SPOT_BOOST},
                           "negative_share": {"stat": "(thumbs_down + regenerate) / feedback",
                                              **fx("negative_share")},
                           "thumbs_down_good_share": {
                               "stat": f"share of thumbs-downs with relevance >= {GOOD_RELEVANCE}",
                               **fx("thumbs_down_good_share")}},
                "expected_rules": ["judge_user_disagreement", "negative_feedback_spike"],
                "expected_cause": "none",
                "allowed_rules": [],
                "description": "support-bot billing answers get worse in a way the judge does not "
                "see (e.g. a stale policy stated fluently): users' thumbs-down probability rises "
                f"by {BLIND_SPOT_BOOST} on every response whatever its relevance score; judge "
                "scores, retrieval and prompt unchanged, so no quality rule may fire",
            })

        elif scenario in ("context_bloat", "model_swap"):
            app = "docs-qa"
            intents = [s_intent[k] for k in range(n_series) if s_app[k] == app]
            mask = after & where(app)
            if scenario == "context_bloat":
                cost[mask] = np.round(cost[mask] * CONTEXT_BLOAT, 6)
                changes.append({
                    "what": "context_bloat", **base, "app": app, "intents": intents,
                    "stream": "scores", "dimensions": [], "series": series_keys(app, intents, []),
                    "effect": {"cost_per_request": {"stat": "mean", "ratio": CONTEXT_BLOAT},
                               "spend_per_quality_point": {"stat": "ratio of sums", "ratio": CONTEXT_BLOAT}},
                    "expected_rules": ["cost_per_quality_rise"], "expected_cause": "none",
                    "allowed_rules": [],
                    "description": "docs-qa's retriever adds 40% more context to every prompt: tokens "
                    "and cost per request +40%; model, prompt template and quality unchanged",
                })
            else:
                old_model, new_model = _APPS[1][3], NEW_MODEL[app]
                req_model[mask] = new_model
                cost[mask] = np.round(cost[mask] * SWAP_COST, 6)
                for dim in DIMENSIONS[:4]:
                    redraw(dim, mask, QUALITY_MEANS[dim] * SWAP_QUALITY)
                changes.append({
                    "what": "model_change", **base, "app": app, "intents": intents,
                    "stream": "scores", "dimensions": list(DIMENSIONS[:4]),
                    "series": series_keys(app, intents, list(DIMENSIONS[:4])),
                    "from": old_model, "to": new_model,
                    "effect": {"cost_per_request": {"stat": "mean", "ratio": SWAP_COST},
                               "quality": {"stat": "mean", "ratio": SWAP_QUALITY},
                               "spend_per_quality_point": {"stat": "ratio of sums",
                                                           "ratio": round(SWAP_COST / SWAP_QUALITY, 4)}},
                    "expected_rules": ["quality_drop"], "expected_cause": "model_change",
                    "allowed_rules": ["quality_shift", "prompt_change"],
                    "forbidden_rules": ["cost_per_quality_rise"],
                    "description": "docs-qa moves to another model: cost per request +3.5% and every "
                    "quality dimension 10% lower, so spend per quality point rises 15%, below the 30% "
                    "bar: quality_drop must fire, cost_per_quality_rise must not",
                })

    if stress:  # failed answers: a share of zero quality scores, before and after any change
        r_zero = np.random.default_rng(np.random.SeedSequence([seed], spawn_key=(78,)))
        values[:, :4] = np.where(r_zero.random((n, 4)) < STRESS_ZEROS, 0.0, values[:, :4])
    values[:, 4] = (refusal_u < refusal_p).astype(np.float64)
    values[:, 5] = (format_u < format_p).astype(np.float64)
    values[:, :4] = np.round(values[:, :4], 4)
    ret_scores = np.round(ret_scores, 4)
    dims_out = DIMENSIONS
    intent_names = _obj(s_intent)
    end_ms = t0_ms + days * _MS_PER_DAY

    # ---- human labels of the pass/fail judge dimension `correctness` (own random streams)
    label_cols: dict[str, np.ndarray] = {}
    if labels:
        r_corr, r_pick, r_delay, r_flip = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed, spawn_key=(80,)).spawn(4))
        judge = (r_corr.random(n) < CORRECTNESS_PASS_RATE).astype(np.float64)
        values = np.column_stack([values, judge])
        dims_out = DIMENSIONS + (LABELLED_DIMENSION,)
        # LABELS_PER_DAY requests per (series, UTC day), uniformly: rank by a random key
        group = series.astype(np.int64) * days + day
        order = np.lexsort((r_pick.random(n), group))
        g_sorted = group[order]
        rank = np.arange(n) - np.searchsorted(g_sorted, g_sorted, side="left")
        chosen = np.sort(order[rank < LABELS_PER_DAY])
        delay_ms = r_delay.integers(LABEL_DELAY_S[0] * 1000, LABEL_DELAY_S[1] * 1000 + 1, size=n)
        flip_u = r_flip.random(n)
        flip_p = label_flip_probability(judge_kappa(scenario, ts[chosen], t0),
                                        CORRECTNESS_PASS_RATE)
        human = np.where(flip_u[chosen] < flip_p, 1.0 - judge[chosen], judge[chosen])
        lab_ms = ts_ms[chosen] + delay_ms[chosen]
        keep = lab_ms < end_ms  # later ones are not labelled yet when the period ends
        o = np.argsort(lab_ms[keep], kind="stable")
        req_l = chosen[keep][o]
        n_l = len(req_l)
        label_cols = {
            "ts": lab_ms[keep][o] / 1000.0,
            "app": app_names[app_idx[req_l]],
            "intent": intent_names[series[req_l]],
            "trace_id": trace_id[req_l],
            "dimension": _obj([LABELLED_DIMENSION] * n_l),
            "label": human[keep][o],
            "rater": _obj([LABEL_RATER] * n_l),
            "request_ts": ts[req_l],
            "judge": judge[req_l],
        }

    # ---- user feedback: one event or none per request (own random streams)
    feedback_cols: dict[str, np.ndarray] = {}
    if feedback:
        r_kind, r_fdelay = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed, spawn_key=(81,)).spawn(2))
        u = r_kind.random(n)
        fdelay_ms = r_fdelay.integers(FEEDBACK_DELAY_S[0] * 1000, FEEDBACK_DELAY_S[1] * 1000 + 1,
                                      size=n)
        relevance = values[:, DIMENSIONS.index("relevance")]
        td_base = _thumbs_down_p(relevance)
        regen, esc = FEEDBACK_MODEL["regenerate"], FEEDBACK_MODEL["escalate"]
        up = np.maximum(FEEDBACK_RATE - td_base - regen - esc, 0.0)
        cum = np.cumsum(np.column_stack([td_base + td_boost, np.full(n, regen), np.full(n, esc),
                                         up]), axis=1)
        kind_idx = (u[:, None] >= cum).sum(axis=1)  # 0..3 a kind, 4 no feedback
        fb_ms = ts_ms + fdelay_ms
        sel = np.flatnonzero((kind_idx < len(FEEDBACK_KINDS)) & (fb_ms < end_ms))
        sel = sel[np.argsort(fb_ms[sel], kind="stable")]
        feedback_cols = {
            "ts": fb_ms[sel] / 1000.0,
            "app": app_names[app_idx[sel]],
            "intent": intent_names[series[sel]],
            "trace_id": trace_id[sel],
            "kind": _obj(list(FEEDBACK_KINDS))[kind_idx[sel]],
            "request_ts": ts[sel],
            "relevance": relevance[sel],
        }
        for ch in changes:  # a relevance drop makes users unhappier too
            if "relevance" in ch["dimensions"]:
                ch["allowed_rules"] = ch["allowed_rules"] + ["negative_feedback_spike"]

    # ---- flatten to events
    n_dims = len(dims_out)
    present = np.ones((n, n_dims), dtype=bool)
    present[:, DIMENSIONS.index("faithfulness")] = rag
    flat = np.flatnonzero(present.ravel())
    req, dim_idx = np.divmod(flat, n_dims)
    dim_names = _obj(list(dims_out))
    scores = {
        "ts": ts[req],
        "app": app_names[app_idx[req]],
        "intent": intent_names[series[req]],
        "dimension": dim_names[dim_idx],
        "score": values.ravel()[flat],
        "prompt_hash": req_hash[req],
        "prompt_version": req_version[req],
        "model": req_model[req],
        "trace_id": trace_id[req],
        "cost_usd": cost[req],
    }
    rreq = np.flatnonzero(rag)
    retrieval = {
        "ts": ts[rreq],
        "app": app_names[app_idx[rreq]],
        "intent": intent_names[series[rreq]],
        "trace_id": trace_id[rreq],
        "scores": np.ascontiguousarray(ret_scores[rreq]),
        "index_version": app_index_version[app_idx[rreq]],
    }

    catalog = {
        "apps": {
            a[0]: {
                "model": a[3], "rag": a[2],
                "index_version": app_index_version[k] if a[2] else None,
                "intents": {
                    s_intent[j]: {"prompt_hash": s_hash[j], "prompt_version": s_version[j]}
                    for j in range(n_series) if s_app[j] == a[0]},
            } for k, a in enumerate(_APPS)},
        "dimensions": {
            d: {"kind": DIMENSION_KIND[d],
                **({"mean": QUALITY_MEANS[d]} if d in QUALITY_MEANS else {}),
                **({"rate": REFUSAL_RATE} if d == "refusal" else {}),
                **({"pass_rate": FORMAT_PASS_RATE} if d == "format_valid" else {}),
                **({"rag_only": True} if d in _RAG_ONLY else {}),
                **({"pass_rate": CORRECTNESS_PASS_RATE, "scale": "pass/fail (0 or 1)",
                    "labelled": True} if d == LABELLED_DIMENSION else {})}
            for d in dims_out},
        "requests_per_hour_per_intent": BASE_RATE_PER_HOUR * volume,
        "retrieval": {"k": TOP_K, "top1_mean": TOP1_MEAN, "top1_sd": TOP1_SD},
    }
    truth: dict[str, Any] = {
        "scenario": scenario, "seed": seed, "start": _rfc3339(t0), "days": days,
        "volume": volume, "description": SCENARIOS[scenario], "stress": stress_truth or None,
        "end": _rfc3339(t0 + days * 86400.0),
        "counts": {"scores": int(len(flat)), "retrieval": int(len(rreq)), "requests": n},
        "changes": changes,
        "catalog": catalog,
    }
    queries: dict[str, np.ndarray] = {}
    if scenario == "input_shift":
        queries, q_truth, q_change = _query_stream(seed, t0_ms, days, volume, daily * weekly,
                                                   _change_at(t0, _CHANGE_DAY[scenario]))
        truth["counts"]["queries"] = len(queries["ts"])
        truth["queries"] = q_truth
        changes.append(q_change)
    if labels:
        truth["counts"]["labels"] = len(label_cols["ts"])
        truth["labels"] = {
            "dimension": LABELLED_DIMENSION, "judge_pass_rate": CORRECTNESS_PASS_RATE,
            "per_day_per_series": LABELS_PER_DAY, "rater": LABEL_RATER,
            "delay_seconds": list(LABEL_DELAY_S), "kappa": JUDGE_KAPPA,
            "model": "human label = the judge's verdict flipped with probability "
            "e = 2p(1-p)(1-kappa) / (1 - (1-2p)^2 (1-kappa)), p the judge's pass rate, kappa the "
            "target at the request's time: population Cohen's kappa = kappa",
        }
    if feedback:
        truth["counts"]["feedback"] = len(feedback_cols["ts"])
        truth["feedback"] = {
            "rate": FEEDBACK_RATE, "delay_seconds": list(FEEDBACK_DELAY_S),
            "model": {**FEEDBACK_MODEL,
                      "thumbs_down": "floor + span * clip((ramp_hi - relevance) / (ramp_hi - "
                      "ramp_lo), 0, 1) per request",
                      "thumbs_up": "max(rate - thumbs_down - regenerate - escalate, 0) per request"},
            "good_relevance": GOOD_RELEVANCE,
            "baseline": {k: round(v, 4) for k, v in feedback_expectation().items()},
        }
    return Simulation(scenario=scenario, seed=seed, start=t0, days=days, scores=scores,
                      retrieval=retrieval, truth=truth, queries=queries, labels=label_cols,
                      feedback=feedback_cols)


# --- the query stream (input_shift) ------------------------------------------------------------

# app -> CLINC150 domains its golden set covers (golden: their `train` queries; production:
# their held-out `test` and `val` queries)
QUERY_APPS: dict[str, tuple[str, ...]] = {
    "support-bot": ("banking", "credit_cards"),
    "travel-assistant": ("travel", "auto_and_commute"),
}
QUERY_RATE_PER_HOUR = 12.0  # queries per hour and app before seasonality
GOLDEN_SPLIT = "train"
PRODUCTION_SPLITS = ("test", "val")
SHIFT_APP = "support-bot"
SHIFT_DOMAINS = ("small_talk", "travel", "utility")  # where moved queries come from, with ...
SHIFT_OOS_SHARE = 0.5  # ... this share of them from CLINC150's out-of-scope `oos_test`
SHIFT_SHARE = 0.8  # share of the app's queries that moved, once the ramp is over
SHIFT_RAMP_DAYS = 3
CLINC150_SOURCE = ("CLINC150 \"oos-eval\" (Larson et al., 2019), github.com/clinc/oos-eval, "
                   "CC BY 3.0")


def golden_texts(app: str, split: str = GOLDEN_SPLIT, per_intent: int | None = None) -> list[str]:
    """The queries to build ``app``'s golden set from: CLINC150 ``split`` of its domains (at
    most ``per_intent`` per intent, e.g. 40 of the 100 for a quicker build in tests)."""
    from drift.embeddings.golden import clinc150_queries

    if app not in QUERY_APPS:
        raise ValueError(f"no query app {app!r}; one of {', '.join(QUERY_APPS)}")
    return clinc150_queries(QUERY_APPS[app], split, per_intent=per_intent)


def _clinc_pool(data: dict, dmap: dict, domains, splits) -> tuple[list[str], list[str]]:
    """Texts and domains of ``splits`` restricted to ``domains`` (``None``: out-of-scope)."""
    dom_of = {i: d for d, intents in dmap.items() for i in intents}
    texts, doms = [], []
    for split in splits:
        for text, intent in data[split]:
            d = dom_of.get(intent, "oos")
            if (domains is None and d == "oos") or (domains is not None and d in domains):
                texts.append(text)
                doms.append(d)
    return texts, doms


def _query_stream(seed, t0_ms, days, volume, season, at):
    from drift.embeddings.golden import load_clinc150

    data, dmap = load_clinc150()
    if dmap is None:
        raise FileNotFoundError("CLINC150 domains.json is missing beside data_full.json")
    r_traffic, r_ids, r_pick, r_shift = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed, spawn_key=(97,)).spawn(4))
    n_hours = days * 24
    hour_start_ms = t0_ms + np.arange(n_hours, dtype=np.int64) * _MS_PER_HOUR
    apps = list(QUERY_APPS)
    counts = r_traffic.poisson(QUERY_RATE_PER_HOUR * volume * season[:, None]
                               * np.ones(len(apps))).ravel()
    n = int(counts.sum())
    app_idx = np.repeat(np.tile(np.arange(len(apps)), n_hours), counts)
    hour = np.repeat(np.repeat(np.arange(n_hours), len(apps)), counts)
    ts_ms = hour_start_ms[hour] + r_traffic.integers(0, _MS_PER_HOUR, size=n)
    order = np.argsort(ts_ms, kind="stable")
    ts_ms, app_idx = ts_ms[order], app_idx[order]
    ts = ts_ms / 1000.0

    text = np.empty(n, dtype=object)
    domain = np.empty(n, dtype=object)
    u_pick = r_pick.random(n)
    for k, app in enumerate(apps):
        pool_t, pool_d = _clinc_pool(data, dmap, QUERY_APPS[app], PRODUCTION_SPLITS)
        m = app_idx == k
        j = np.minimum((u_pick[m] * len(pool_t)).astype(np.int64), len(pool_t) - 1)
        text[m] = _obj(pool_t)[j]
        domain[m] = _obj(pool_d)[j]
    # the shift: a growing share of SHIFT_APP's queries comes from elsewhere
    ramp = SHIFT_RAMP_DAYS * 86400.0
    share = SHIFT_SHARE * np.clip((ts - at) / ramp, 0.0, 1.0)
    u_move, u_oos, u_new = r_shift.random(n), r_shift.random(n), r_shift.random(n)
    moved = (app_idx == apps.index(SHIFT_APP)) & (u_move < share)
    dom_t, dom_d = _clinc_pool(data, dmap, SHIFT_DOMAINS, PRODUCTION_SPLITS)
    oos_t, oos_d = _clinc_pool(data, dmap, None, ("oos_test",))
    for (pt, pd), m in (((oos_t, oos_d), moved & (u_oos < SHIFT_OOS_SHARE)),
                        ((dom_t, dom_d), moved & (u_oos >= SHIFT_OOS_SHARE))):
        j = np.minimum((u_new[m] * len(pt)).astype(np.int64), len(pt) - 1)
        text[m] = _obj(pt)[j]
        domain[m] = _obj(pd)[j]

    queries = {"ts": ts, "app": _obj(apps)[app_idx], "trace_id": _hex(r_ids, n, 16),
               "text": text, "domain": domain}
    q_truth = {
        "source": CLINC150_SOURCE,
        "rate_per_hour_per_app": QUERY_RATE_PER_HOUR * volume,
        "apps": {app: {"golden_domains": list(QUERY_APPS[app]), "golden_split": GOLDEN_SPLIT,
                       "production_splits": list(PRODUCTION_SPLITS)} for app in apps},
    }
    change = {
        "what": "input_shift", "at": _rfc3339(at), "ramp_end": _rfc3339(at + ramp),
        "app": SHIFT_APP, "intents": [], "stream": "queries", "dimensions": [],
        "series": [SHIFT_APP],
        "effect": {"share_new": {"before": 0.0, "after": SHIFT_SHARE,
                                 "ramp": f"linear over {SHIFT_RAMP_DAYS} days, then constant"},
                   "new_sources": {"domains": list(SHIFT_DOMAINS), "splits": list(PRODUCTION_SPLITS),
                                   "oos_test_share": SHIFT_OOS_SHARE},
                   "golden_domains": list(QUERY_APPS[SHIFT_APP])},
        "expected_rules": ["query_centroid_shift", "query_novelty_rise"], "expected_any": True,
        "expected_cause": "none",
        "allowed_rules": [],
        "description": f"{SHIFT_APP}'s users start asking what it was not built for: a share of "
        f"its queries rising to {SHIFT_SHARE:.0%} over {SHIFT_RAMP_DAYS} days comes from CLINC150 "
        f"domains {', '.join(SHIFT_DOMAINS)} and out-of-scope queries, none covered by its "
        f"golden set ({', '.join(QUERY_APPS[SHIFT_APP])}); scores and retrieval unchanged",
    }
    return queries, q_truth, change


# --- events out --------------------------------------------------------------------------------

_SCORE_FIELDS = ("app", "intent", "dimension", "score", "prompt_hash", "prompt_version",
                 "model", "trace_id", "cost_usd")
_RETRIEVAL_FIELDS = ("app", "intent", "trace_id", "scores", "index_version")
_QUERY_FIELDS = ("app", "trace_id", "text")
_LABEL_FIELDS = ("trace_id", "app", "intent", "dimension", "label", "rater")
_FEEDBACK_FIELDS = ("trace_id", "app", "intent", "kind")


def iter_events(sim: Simulation, *, chunk: int = 65536) -> Iterator[dict]:
    """Yield every event of all streams as SPEC-shaped dicts, in event-time order.

    The merge is stable: at equal times retrieval events come before score events, then query,
    label and feedback events, and each stream keeps its own order. ``ts`` is RFC 3339 with
    milliseconds and a trailing ``Z``. Label and feedback events carry ``"stream"`` (a label has
    a ``dimension`` field too, so only ``stream`` tells it from a score).
    """
    # (columns, emitted fields, constant leading fields) per stream, in tie-break order
    streams: list[tuple[dict[str, np.ndarray], tuple[str, ...], dict[str, str]]] = [
        (sim.retrieval, _RETRIEVAL_FIELDS, {}), (sim.scores, _SCORE_FIELDS, {}),
        (sim.queries, _QUERY_FIELDS, {}), (sim.labels, _LABEL_FIELDS, {"stream": "labels"}),
        (sim.feedback, _FEEDBACK_FIELDS, {"stream": "feedback"})]
    streams = [s for s in streams if len(s[0].get("ts", ()))]
    if not streams:
        return
    ts_of = [np.asarray(cols.get("ts", ()), dtype=np.float64) for cols, _, _ in streams]
    offsets = np.cumsum([0] + [len(t) for t in ts_of])
    order = np.argsort(np.concatenate(ts_of), kind="stable")
    keys = [tuple(const) + ("ts",) + fields for _, fields, const in streams]
    for a in range(0, len(order), chunk):
        sel = order[a:a + chunk]
        kind = np.searchsorted(offsets, sel, side="right") - 1  # index into streams
        rows = []
        for k, (cols, fields, const) in enumerate(streams):
            idx = sel[kind == k] - offsets[k]
            m = len(idx)
            rows.append(zip(*([[v] * m for v in const.values()] + [_ts_strings(ts_of[k][idx])]
                              + [np.asarray(cols[f])[idx].tolist() for f in fields])))
        for k in kind.tolist():
            yield dict(zip(keys[k], next(rows[k])))


def _truth_path(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    return (p[:-len(".jsonl")] if p.endswith(".jsonl") else p) + ".truth.json"


def write_jsonl(sim: Simulation, path: str | os.PathLike, *, batch: int = 1) -> int:
    """Write :func:`iter_events` as JSON lines; return the number of events.

    ``batch > 1`` writes JSON arrays of up to ``batch`` events per line. ``path`` ``'-'`` is
    stdout. Beside a file, the ground truth goes to ``<path without .jsonl>.truth.json``.
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    try:
        import msgspec

        encode = msgspec.json.Encoder().encode
    except ImportError:  # pragma: no cover - msgspec is a dependency
        def encode(obj: Any) -> bytes:
            return json.dumps(obj, separators=(",", ":")).encode()

    to_stdout = os.fspath(path) == "-"
    if to_stdout:
        out = getattr(sys.stdout, "buffer", None)
        f: Any = out if out is not None else None
    else:
        f = open(path, "wb")
    n = 0
    buf: list[bytes] = []
    pending: list[dict] = []

    def emit(data: bytes) -> None:
        buf.append(data)
        if len(buf) >= 4096:
            flush()

    def flush() -> None:
        data = b"".join(buf)
        buf.clear()
        if f is None:
            sys.stdout.write(data.decode())
        else:
            f.write(data)

    try:
        for ev in iter_events(sim):
            n += 1
            if batch == 1:
                emit(encode(ev) + b"\n")
            else:
                pending.append(ev)
                if len(pending) >= batch:
                    emit(encode(pending) + b"\n")
                    pending.clear()
        if pending:
            emit(encode(pending) + b"\n")
        flush()
    finally:
        if to_stdout:
            if f is not None:
                f.flush()
            else:
                sys.stdout.flush()
        else:
            f.close()
    if not to_stdout:
        with open(_truth_path(path), "w", encoding="utf-8") as tf:
            json.dump(sim.truth, tf, indent=2)
            tf.write("\n")
    return n
