"""GPU utilisation, memory and temperature through NVML, or nothing at all.

:class:`GpuCollector` asks NVML (``nvidia-ml-py``, imported as ``pynvml``) at scrape time.
Where there is no NVIDIA GPU, no driver or no ``nvidia-ml-py``, it exports **no** GPU
series: an absent series says "not measured", where a zero would claim an idle GPU and
hide a broken driver from an alert. ``tapetum_gpu_available`` (0 or 1) says which case
this is, and why is logged once.

Metrics, labelled ``gpu`` (the device index): ``tapetum_gpu_utilization_ratio`` (0–1, the
share of the last sample period a kernel ran), ``tapetum_gpu_memory_used_bytes``,
``tapetum_gpu_memory_total_bytes``, ``tapetum_gpu_temperature_celsius``.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> registry.register(GpuCollector(nvml=None))
    >>> registry.get_sample_value("tapetum_gpu_available")
    0.0
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["GpuCollector"]

log = logging.getLogger(__name__)

_UNSET: Any = object()


class GpuCollector:
    """Exports NVML readings of every GPU at scrape time; nothing where NVML is missing.

    Args:
        nvml: the NVML binding to use (tests pass a fake; None: none at all); default
            ``pynvml`` from ``nvidia-ml-py``, imported and initialised on first scrape.
    """

    def __init__(self, nvml: ModuleType | None = _UNSET) -> None:
        self._nvml: ModuleType | None = None
        self._given = nvml
        self._ready: bool | None = None
        self._lock = threading.Lock()

    def _init(self) -> bool:
        with self._lock:
            if self._ready is not None:
                return self._ready
            nvml = self._given
            if nvml is _UNSET:
                try:
                    nvml = importlib.import_module("pynvml")
                except ImportError:
                    log.info("GPU metrics off: nvidia-ml-py is not installed")
                    nvml = None
            if nvml is None:
                self._ready = False
                return False
            try:
                nvml.nvmlInit()
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:  # NVMLError: no driver, no device, no permission
                log.info("GPU metrics off: NVML did not start (%s)", exc)
                self._ready = False
                return False
            self._nvml = nvml
            self._ready = count > 0
            if not self._ready:
                log.info("GPU metrics off: NVML sees no GPU")
            return self._ready

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ready = self._init()
        available = GaugeMetricFamily(
            "tapetum_gpu_available",
            "1 if NVML reports GPUs (the tapetum_gpu_* series exist), 0 if not measured.",
        )
        available.add_metric([], float(ready))
        yield available
        if not ready or self._nvml is None:
            return
        nvml = self._nvml
        util = GaugeMetricFamily(
            "tapetum_gpu_utilization_ratio",
            "Share of the last sample period a kernel ran on the GPU (0-1).",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "tapetum_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "tapetum_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
        )
        temp = GaugeMetricFamily(
            "tapetum_gpu_temperature_celsius", "GPU core temperature.", labels=["gpu"]
        )
        try:
            for i in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                celsius = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                label = [str(i)]
                util.add_metric(label, float(rates.gpu) / 100.0)
                used.add_metric(label, float(mem.used))
                total.add_metric(label, float(mem.total))
                temp.add_metric(label, float(celsius))
        except Exception as exc:  # a GPU fell off the bus mid-scrape: skip this scrape
            log.warning("GPU metrics skipped this scrape: %s", exc)
            return
        yield from (util, used, total, temp)
