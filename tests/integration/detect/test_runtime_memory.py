"""A burst's working memory is bounded: ONNX Runtime's CPU arena (the default) keeps what
the largest batches needed and reuses it, so more bursts cost nothing more; without the
arena (``cpu_mem_arena=False``) it goes back to the OS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest

from tapetum.core.memory import release_free_memory
from tapetum.detect.runtime import OnnxModel, RuntimeOptions

pytestmark = pytest.mark.integration


def _rss_mb() -> float:
    release_free_memory()
    return float(psutil.Process().memory_info().rss) / 2**20


def _burst_costs_mb(path: Path, options: RuntimeOptions) -> tuple[float, float]:
    """RSS kept after three bursts (a batch of 16, then batch 1 again) over RSS at batch 1
    before; and what three more bursts add to that."""
    model = OnnxModel(path, options)
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, 3, *model.input_hw)).astype(np.float32)
    burst = rng.uniform(0, 255, (16, 3, *model.input_hw)).astype(np.float32)

    for _ in range(3):
        model.run(one)
    before = _rss_mb()
    rss = []
    for _ in range(2):
        for _ in range(3):
            model.run(burst)
            model.run(one)
        rss.append(_rss_mb())
    del model
    return rss[0] - before, rss[1] - rss[0]


@pytest.mark.skipif(not release_free_memory(), reason="needs glibc's malloc_trim")
def test_a_burst_batch_is_kept_bounded_with_the_arena_and_not_without(yolox_path: Path) -> None:
    kept_with_arena, more_with_arena = _burst_costs_mb(yolox_path, RuntimeOptions(1, 1))
    kept, _ = _burst_costs_mb(yolox_path, RuntimeOptions(1, 1, cpu_mem_arena=False))

    assert kept_with_arena > 100  # the arena keeps the batch of 16's activations…
    assert more_with_arena < 10, f"three more bursts added {more_with_arena:.0f} MB"  # …bounded
    assert kept < 25, f"{kept:.0f} MB of the burst stayed resident without the arena"
