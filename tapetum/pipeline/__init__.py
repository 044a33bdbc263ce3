"""The stream runtime: bounded queues, cross-stream batching, per-stream tracking, sinks,
and the scheduler of detection intervals."""

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
from tapetum.pipeline.scheduler import IntervalPolicy, Priority, SchedulerConfig
from tapetum.pipeline.stats import LatencyRecorder, LatencySummary

__all__ = [
    "BoundedQueue",
    "DropPolicy",
    "Enricher",
    "EnricherFactory",
    "IntervalPolicy",
    "LatencyRecorder",
    "LatencySummary",
    "Pipeline",
    "PipelineConfig",
    "PipelineStats",
    "Priority",
    "QueueClosed",
    "SchedulerConfig",
    "StreamStats",
]
