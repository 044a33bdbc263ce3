"""A burst's working memory goes back: a session that once ran a large batch does not keep
that batch's activations resident (ONNX Runtime's CPU arena would, for good)."""

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


def _burst_cost_mb(path: Path, options: RuntimeOptions) -> float:
    """RSS after a batch of 16 and then batch 1 again, minus RSS at batch 1 before."""
    model = OnnxModel(path, options)
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, 3, *model.input_hw)).astype(np.float32)
    for _ in range(3):
        model.run(one)
    before = _rss_mb()
    model.run(rng.uniform(0, 255, (16, 3, *model.input_hw)).astype(np.float32))
    model.run(one)
    after = _rss_mb()
    del model
    return after - before


@pytest.mark.skipif(not release_free_memory(), reason="needs glibc's malloc_trim")
def test_a_burst_batch_does_not_stay_resident(yolox_path: Path) -> None:
    kept_with_arena = _burst_cost_mb(yolox_path, RuntimeOptions(1, 1, cpu_mem_arena=True))
    kept = _burst_cost_mb(yolox_path, RuntimeOptions(1, 1))

    assert kept_with_arena > 100  # the arena keeps the batch of 16's activations
    assert kept < 25, f"{kept:.0f} MB of the burst stayed resident"
