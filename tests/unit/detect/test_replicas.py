"""ReplicaPool: placement planning (pure, GPU lists without a GPU) and least-loaded routing,
the latter on real CPU replicas of YOLOX-nano when the shared assets are present."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tapetum.detect.providers import CPU, CUDA, TENSORRT
from tapetum.detect.replicas import Placement, ReplicaPool, available_gpus, plan_placements
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.errors import ConfigError

# ----------------------------------------------------------------------------- placement


def test_one_replica_per_gpu_by_default() -> None:
    plan = plan_placements(0, gpus=[0, 1, 2], cores=16)
    assert [(p.provider, p.device_id, p.threads) for p in plan] == [
        (CUDA, 0, 1),
        (CUDA, 1, 1),
        (CUDA, 2, 1),
    ]


def test_more_replicas_than_gpus_go_round_robin() -> None:
    plan = plan_placements(5, gpus=[2, 3], cores=8, gpu_provider=TENSORRT)
    assert [p.device_id for p in plan] == [2, 3, 2, 3, 2]
    assert {p.provider for p in plan} == {TENSORRT}
    assert all(p.cpu_cores == () for p in plan)


def test_cpu_cores_are_split_between_replicas() -> None:
    plan = plan_placements(3, cores=[0, 1, 2, 3, 4, 5, 6, 7])
    assert [p.cpu_cores for p in plan] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert [p.threads for p in plan] == [3, 3, 2]
    assert {p.provider for p in plan} == {CPU} and {p.device_id for p in plan} == {None}


def test_cpu_default_is_two_single_core_replicas_on_two_cores() -> None:
    assert plan_placements(0, cores=2) == [
        Placement(0, CPU, None, 1, (0,)),
        Placement(1, CPU, None, 1, (1,)),
    ]
    assert len(plan_placements(0, cores=1)) == 1


def test_more_cpu_replicas_than_cores_share_cores() -> None:
    plan = plan_placements(4, cores=[4, 5])
    assert [p.cpu_cores for p in plan] == [(4,), (5,), (4,), (5,)]
    assert all(p.threads == 1 for p in plan)


def test_bad_plans_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        plan_placements(-1, cores=2)
    with pytest.raises(ConfigError):
        plan_placements(1, cores=[])
    with pytest.raises(ConfigError):
        plan_placements(1, gpus=[0], gpu_provider=CPU)


def test_no_gpu_provider_means_no_gpus() -> None:
    assert available_gpus([CPU]) == (CPU, [])
    provider, gpus = available_gpus([CUDA, CPU])
    assert provider == CUDA and len(gpus) >= 1


# ------------------------------------------------------------------------------ routing


class Fake:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def run(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return batch


def test_ties_go_round_robin_and_busy_replicas_are_avoided() -> None:
    pool = ReplicaPool([Fake(0), Fake(0), Fake(0)])
    order = [pool.call(pool.replicas.index) for _ in range(6)]
    assert order == [0, 1, 2, 0, 1, 2]
    with pool.acquire() as (held, _):
        # while one is held, the others are chosen
        assert all(pool.call(pool.replicas.index) != held for _ in range(4))
    assert [s.in_flight for s in pool.stats()] == [0, 0, 0]


def test_errors_are_counted_and_released() -> None:
    pool = ReplicaPool([Fake(0)])

    def boom(_: Fake) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        pool.call(boom)
    stats = pool.stats()[0]
    assert stats.errors == 1 and stats.calls == 1 and stats.in_flight == 0


def _hammer(pool: ReplicaPool[OnnxModel], x: np.ndarray, callers: int, seconds: float) -> None:
    stop = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < stop:
            pool.run(x)

    threads = [threading.Thread(target=work) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


@pytest.mark.integration
def test_real_cpu_replicas_share_concurrent_calls(yolox_path: Path) -> None:
    pool = ReplicaPool.load(yolox_path, replicas=2)
    assert len(pool) == 2
    assert [m.threads for m in pool.replicas] == [p.threads for p in pool.placements or []]
    x = np.full((1, 3, 416, 416), 114, np.float32)
    _hammer(pool, x, callers=4, seconds=1.0)
    calls = [s.calls for s in pool.stats()]
    assert min(calls) > 0.25 * sum(calls)  # both replicas took a real share
    np.testing.assert_allclose(pool.run(x), pool.replicas[0].run(x), atol=1e-4)


class Slowed:
    """A real replica made slower by a sleep after each run."""

    def __init__(self, model: OnnxModel, extra_s: float) -> None:
        self.model, self.extra_s = model, extra_s

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.model.run(batch)
        time.sleep(self.extra_s)
        return out


@pytest.mark.integration
def test_a_slow_replica_gets_fewer_calls(yolox_path: Path) -> None:
    opts = RuntimeOptions(intra_op_threads=1, workers=1)
    fast, slow = OnnxModel(yolox_path, opts), OnnxModel(yolox_path, opts)
    x = np.full((1, 3, 416, 416), 114, np.float32)
    fast.run(x)  # the first run sets the session up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fast.run(x)
        times.append(time.perf_counter() - start)
    run_s = sorted(times)[1]
    # the slow replica is slow relative to this machine's own speed, not by a fixed 0.1 s a
    # busy machine can outgrow; 8 runs' worth, so that a fast replica slowed 3x by other
    # jobs on the machine still takes more than twice the calls
    pool = ReplicaPool([Slowed(fast, 0.0), Slowed(slow, max(0.1, 8 * run_s))])
    _hammer(pool, x, callers=3, seconds=max(1.5, 30 * run_s))
    fast_calls, slow_calls = (s.calls for s in pool.stats())
    assert slow_calls > 0
    assert fast_calls > 2 * slow_calls
