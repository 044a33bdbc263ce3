"""Model replicas over the available devices, each call sent to the least-loaded one.

* :func:`plan_placements` (pure): devices and a replica count → where each replica runs:
  one replica per GPU id (round-robin when there are more replicas than GPUs), or on CPU
  the cores split between the replicas (intra-op threads, optionally pinned).
* :class:`ReplicaPool`: holds the replicas; :meth:`ReplicaPool.call` routes to the replica
  with the fewest calls in flight, ties broken round-robin, and keeps per-replica stats.

Example:
    >>> pool = ReplicaPool.load("yolox_nano.onnx", replicas=2)        # doctest: +SKIP
    >>> raw = pool.run(batch)              # (B, 3, 416, 416) → (B, 3549, 85)  # doctest: +SKIP
    >>> [s.calls for s in pool.stats()]                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from tapetum.detect.providers import CPU, CUDA, GPU_PROVIDERS, TENSORRT
from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.detect.runtime import OnnxModel, RuntimeOptions

M = TypeVar("M")
R = TypeVar("R")

_WINDOW = 2048


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one replica runs.

    Attributes:
        index: replica number.
        provider: execution provider (a GPU provider, or ``CPUExecutionProvider``).
        device_id: GPU index; None on CPU.
        threads: intra-op threads of the replica's session.
        cpu_cores: the cores its threads are meant for (0-based); empty on GPU.
    """

    index: int
    provider: str
    device_id: int | None
    threads: int
    cpu_cores: tuple[int, ...]


def plan_placements(
    replicas: int = 0,
    gpus: Sequence[int] = (),
    cores: Sequence[int] | int = 1,
    gpu_provider: str = CUDA,
) -> list[Placement]:
    """Place ``replicas`` replicas (0 = one per GPU, or on CPU two when ≥ 2 cores).

    With GPUs, replica ``i`` runs on ``gpus[i % len(gpus)]`` with one host thread. Without,
    the cores (a list of ids, or a count meaning ``0..n-1``) are cut into ``replicas``
    contiguous groups as even as possible; with more replicas than cores each gets one
    core, shared round-robin.
    """
    core_ids = tuple(range(cores)) if isinstance(cores, int) else tuple(cores)
    if not core_ids:
        raise ConfigError("plan_placements needs at least one CPU core")
    if replicas < 0:
        raise ConfigError(f"replicas must be ≥ 0, got {replicas}")
    if gpus:
        if gpu_provider not in GPU_PROVIDERS:
            raise ConfigError(f"{gpu_provider} is not a GPU provider")
        n = replicas or len(gpus)
        return [Placement(i, gpu_provider, gpus[i % len(gpus)], 1, ()) for i in range(n)]
    n = replicas or (2 if len(core_ids) >= 2 else 1)
    if n >= len(core_ids):
        return [Placement(i, CPU, None, 1, (core_ids[i % len(core_ids)],)) for i in range(n)]
    base, extra = divmod(len(core_ids), n)
    out, start = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        group = core_ids[start : start + size]
        out.append(Placement(i, CPU, None, len(group), group))
        start += size
    return out


def available_gpus(available_providers: Sequence[str] | None = None) -> tuple[str, list[int]]:
    """``(provider, GPU ids)`` usable by ONNX Runtime here; ``(CPU, [])`` without a GPU.

    TensorRT is preferred over CUDA. GPUs are counted with ORT's device list when it has
    one, else ``CUDA_VISIBLE_DEVICES``, else assumed to be a single device 0.
    """
    import onnxruntime as ort

    installed = (
        ort.get_available_providers() if available_providers is None else available_providers
    )
    provider = next((p for p in (TENSORRT, CUDA) if p in installed), None)
    if provider is None:
        return CPU, []
    count = 0
    get_devices = getattr(ort, "get_ep_devices", None)
    if get_devices is not None:
        try:
            count = sum(
                1
                for d in get_devices()
                if d.ep_name in (TENSORRT, CUDA) and "GPU" in str(d.device.type)
            )
        except Exception:  # an older build or no driver: fall through to the env
            count = 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = len([v for v in visible.split(",") if v.strip()]) if visible else 1
    return provider, list(range(count))


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """Per-replica counters; latencies in milliseconds over the recent window."""

    index: int
    placement: Placement | None
    calls: int
    errors: int
    in_flight: int
    busy_s: float
    p50_ms: float
    p99_ms: float


class _RunsBatches(Protocol):
    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


class _Slot:
    __slots__ = ("busy_s", "calls", "errors", "in_flight", "times_ms")

    def __init__(self) -> None:
        self.in_flight = 0
        self.calls = 0
        self.errors = 0
        self.busy_s = 0.0
        self.times_ms: deque[float] = deque(maxlen=_WINDOW)


class ReplicaPool(Generic[M]):
    """Replicas of one model; thread-safe least-loaded routing (see the module docstring).

    Args:
        replicas: the loaded replicas (any objects; :meth:`run` needs a ``run`` method).
        placements: where each runs, for the stats (same length as ``replicas``).
    """

    def __init__(self, replicas: Sequence[M], placements: Sequence[Placement] | None = None):
        if not replicas:
            raise ConfigError("a replica pool needs at least one replica")
        if placements is not None and len(placements) != len(replicas):
            raise ConfigError("one placement per replica")
        self.replicas = list(replicas)
        self.placements = list(placements) if placements is not None else None
        self._slots = [_Slot() for _ in self.replicas]
        self._lock = threading.Lock()
        self._cursor = 0

    @classmethod
    def load(
        cls,
        path: str | Path,
        replicas: int = 0,
        options: RuntimeOptions | None = None,
        *,
        placements: Sequence[Placement] | None = None,
        pin_cores: bool = False,
        loader: Callable[[Path, RuntimeOptions], OnnxModel] | None = None,
    ) -> ReplicaPool[OnnxModel]:
        """Load ``replicas`` copies of an ONNX model placed by :func:`plan_placements` over
        this machine's GPUs (when ORT has a CUDA/TensorRT provider) or its cores.

        ``options`` is the base for every replica; threads, device and provider are set per
        placement. ``pin_cores`` also pins each CPU replica's threads to its cores.
        """
        from tapetum.detect.runtime import OnnxModel, RuntimeOptions, available_cores

        base = options or RuntimeOptions()
        if placements is None:
            provider, gpus = available_gpus()
            cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
            placements = plan_placements(
                replicas, gpus, cores or available_cores(), gpu_provider=provider
            )
        load = loader or OnnxModel
        models = []
        for place in placements:
            if place.device_id is not None:
                opts = dataclasses.replace(
                    base,
                    providers=(place.provider,),
                    provider_options=dataclasses.replace(
                        base.provider_options, device_id=place.device_id
                    ),
                    workers=1,
                )
            else:
                opts = dataclasses.replace(
                    base,
                    providers=(CPU,),
                    intra_op_threads=place.threads,
                    workers=1,
                    cpu_cores=place.cpu_cores if pin_cores else None,
                )
            models.append(load(Path(path), opts))
        return ReplicaPool(models, placements)

    def __len__(self) -> int:
        return len(self.replicas)

    def _pick(self) -> int:
        with self._lock:
            n = len(self._slots)
            order = [(self._cursor + k) % n for k in range(n)]
            chosen = min(order, key=lambda i: self._slots[i].in_flight)  # first min wins
            self._cursor = (chosen + 1) % n
            self._slots[chosen].in_flight += 1
            return chosen

    def _release(self, index: int, elapsed_s: float, failed: bool) -> None:
        with self._lock:
            slot = self._slots[index]
            slot.in_flight -= 1
            slot.calls += 1
            slot.errors += int(failed)
            slot.busy_s += elapsed_s
            slot.times_ms.append(elapsed_s * 1e3)

    @contextmanager
    def acquire(self) -> Iterator[tuple[int, M]]:
        """Hold the least-loaded replica for the ``with`` block: ``(index, replica)``."""
        index = self._pick()
        start = time.perf_counter()
        failed = True
        try:
            yield index, self.replicas[index]
            failed = False
        finally:
            self._release(index, time.perf_counter() - start, failed)

    def call(self, fn: Callable[[M], R]) -> R:
        """``fn(replica)`` on the least-loaded replica."""
        with self.acquire() as (_, replica):
            return fn(replica)

    def run(
        self: ReplicaPool[_RunsBatches], batch: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """``replica.run(batch)`` on the least-loaded replica."""
        with self.acquire() as (_, replica):
            return replica.run(batch)

    def stats(self) -> list[ReplicaStats]:
        with self._lock:
            return [
                ReplicaStats(
                    index=i,
                    placement=self.placements[i] if self.placements else None,
                    calls=s.calls,
                    errors=s.errors,
                    in_flight=s.in_flight,
                    busy_s=s.busy_s,
                    p50_ms=float(np.percentile(s.times_ms, 50)) if s.times_ms else 0.0,
                    p99_ms=float(np.percentile(s.times_ms, 99)) if s.times_ms else 0.0,
                )
                for i, s in enumerate(self._slots)
            ]


__all__ = [
    "Placement",
    "ReplicaPool",
    "ReplicaStats",
    "available_gpus",
    "plan_placements",
]
