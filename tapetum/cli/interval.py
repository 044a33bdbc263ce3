"""``tapetum run``'s detection interval options: ``--detect-every K|auto``,
``--latency-budget-ms``, ``--max-interval`` and ``--priority STREAM=LEVEL``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.detect.base import StagedDetector
    from tapetum.pipeline import PipelineStats, SchedulerConfig

__all__ = ["check_interval_options", "parse_interval_options", "print_interval_summary"]


def parse_interval_options(
    detect_every: str,
    latency_budget_ms: float,
    max_interval: int,
    priorities: Sequence[str],
) -> tuple[int, SchedulerConfig | None]:
    """The fixed interval and the scheduler the options ask for.

    Returns:
        ``(k, None)`` for ``--detect-every K``; ``(1, scheduler)`` for ``auto``.

    Raises:
        ConfigError: naming the option and the value at fault.
    """
    from tapetum.pipeline.scheduler import SchedulerConfig, parse_priorities

    value = detect_every.strip().lower()
    if value != "auto":
        try:
            every = int(value)
        except ValueError:
            every = 0
        if every < 1:
            raise ConfigError(
                f"--detect-every must be a whole number of frames ≥ 1 or 'auto', "
                f"got {detect_every!r}"
            )
        if priorities:
            raise ConfigError("--priority needs --detect-every auto (the scheduler)")
        return every, None
    if not latency_budget_ms > 0:
        raise ConfigError(f"--latency-budget-ms must be > 0, got {latency_budget_ms:g}")
    if max_interval < 1:
        raise ConfigError(f"--max-interval must be ≥ 1 frame, got {max_interval}")
    return 1, SchedulerConfig(
        latency_budget_ms=latency_budget_ms,
        max_interval=max_interval,
        priorities=parse_priorities(list(priorities)),
    )


def check_interval_options(
    scheduler: SchedulerConfig, stream_ids: Sequence[str], detector: StagedDetector
) -> None:
    """Before anything runs: the priorities name real streams and the budget is not below
    the model's own latency on this machine.

    Raises:
        ConfigError: naming the option and the value at fault.
    """
    import numpy as np

    from tapetum.pipeline.runtime import model_latency_ms

    unknown = sorted(set(scheduler.priorities) - set(stream_ids))
    if unknown:
        raise ConfigError(
            f"--priority names an unknown stream {unknown[0]!r}; streams: " + ", ".join(stream_ids)
        )
    h, w = detector.input_hw
    detector.infer(np.zeros((1, 3, h, w), np.float32))  # warm-up: not the model's latency
    latency = model_latency_ms(detector)
    if scheduler.latency_budget_ms < latency:
        raise ConfigError(
            f"--latency-budget-ms {scheduler.latency_budget_ms:g} is below the model's own "
            f"latency ({latency:.1f} ms for one frame on this machine): no schedule can meet "
            "it; raise the budget or use a faster model"
        )


def print_interval_summary(stats: PipelineStats, out: Console) -> None:
    """One line per stream that gave up detector frames, and the scheduler's account."""
    lines = [
        f"{s.source_id}: detector on {s.detector_frames} of "
        f"{s.detector_frames + s.tracker_frames} frames ({100 * s.detector_share:.0f} %), "
        f"interval up to {s.interval_max}, now {s.interval}"
        for s in stats.streams
        if s.tracker_frames
    ]
    sched = stats.scheduler
    if sched is not None:
        ticks = ", ".join(f"{n} {state}" for state, n in sorted(sched["ticks"].items()))
        changes = ", ".join(
            f"{n} {reason}" for reason, n in sorted(sched["interval_changes"].items())
        )
        out.print(
            f"scheduler: budget {sched['latency_budget_ms']:g} ms, ticks: {ticks or 'none'}; "
            f"interval changes: {changes or 'none'}",
            highlight=False,
            markup=False,
        )
        if not lines:
            out.print("scheduler: no stream was degraded", highlight=False, markup=False)
    for line in lines:
        out.print(f"degraded {line}", highlight=False, markup=False)
