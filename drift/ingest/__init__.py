"""Ingestion adapters: outside telemetry to the engine's events (pure; no Kafka).

:mod:`drift.ingest.otlp` maps OpenTelemetry export requests (the Collector's Kafka exporter,
``otlp_proto`` or ``otlp_json``) to ScoreEvents and RetrievalEvents; :mod:`drift.ingest.join`
holds the bounded, checkpointable join buffer that pairs evaluations with their spans.
"""

from drift.ingest.join import JoinBuffer
from drift.ingest.otlp import (
    MapResult,
    OtlpError,
    OtlpMapper,
    OtlpMapping,
    decode_logs,
    decode_traces,
    encode_json,
    split_by_trace,
)

__all__ = ["JoinBuffer", "MapResult", "OtlpError", "OtlpMapper", "OtlpMapping", "decode_logs",
           "decode_traces", "encode_json", "split_by_trace"]
