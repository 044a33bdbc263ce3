"""Freed memory goes back to the OS: a thread's arena full of freed blocks behind a live one
keeps its pages until it is trimmed."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from tapetum.core.memory import MemoryTrimmer, limit_malloc_arenas, release_free_memory

glibc = pytest.mark.skipif(not release_free_memory(), reason="needs glibc's malloc_trim")


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


@glibc
def test_a_trim_returns_the_free_pages_an_arena_kept() -> None:
    kept: list[np.ndarray] = []

    def churn() -> None:  # in a thread: its own arena, as a pipeline stage has
        blocks = [np.ones(64 * 1024 // 8) for _ in range(3200)]  # 200 MB of 64 KB blocks
        kept.append(blocks[-1])  # one live block at the top pins the arena's heap
        blocks.clear()

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = _rss_mb()
    assert release_free_memory()
    after = _rss_mb()

    assert before - after > 100  # most of the 200 MB freed was still resident
    assert kept[0].sum() == 64 * 1024 // 8


@glibc
def test_the_trimmer_trims_on_its_interval_until_stopped() -> None:
    trimmer = MemoryTrimmer(interval_s=0.05).start()
    time.sleep(0.5)
    trimmer.stop()
    done = trimmer.trims
    time.sleep(0.2)

    assert done >= 3
    assert trimmer.trims == done  # stopped means stopped
    assert trimmer.busy_s > 0


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        MemoryTrimmer(interval_s=0)


@glibc
def test_the_arena_cap_is_left_to_a_user_who_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_malloc_arenas(2)


@glibc
def test_the_arena_cap_is_set_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert limit_malloc_arenas(16)  # glibc's own default on two cores: changes nothing here
    with pytest.raises(ValueError, match="arenas"):
        limit_malloc_arenas(0)
