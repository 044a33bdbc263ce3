"""The stream runtime: bounded queues, cross-stream batching, per-stream tracking, sinks."""

from tapetum.errors import QueueClosed
from tapetum.pipeline.queues import BoundedQueue, DropPolicy
from tapetum.pipeline.runtime import (
    Enricher,
    EnricherFactory,
    Pipeline,
    PipelineConfig,
    PipelineStats,
    StreamStats,
)
from tapetum.pipeline.stats import LatencyRecorder, LatencySummary

__all__ = [
    "BoundedQueue",
    "DropPolicy",
    "Enricher",
    "EnricherFactory",
    "LatencyRecorder",
    "LatencySummary",
    "Pipeline",
    "PipelineConfig",
    "PipelineStats",
    "QueueClosed",
    "StreamStats",
]
