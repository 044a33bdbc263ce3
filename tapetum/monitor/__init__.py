"""Monitoring: Prometheus metrics of pipelines, data and model drift, the live dashboard.

* Metrics: :class:`PipelineMonitor` (a sink and a collector per pipeline), the NVML
  :class:`GpuCollector`, :func:`new_registry` (process and GPU collectors on a fresh
  registry), :class:`MetricsServer` (``/metrics`` and ``/dashboard`` for ``tapetum run``).
* Drift: :class:`ProfileRecorder` builds a camera's :class:`DriftProfile`;
  :class:`DriftMonitor` scores live windows against it, with :class:`Hysteresis`, and
  emits :class:`DriftEvent`\\ s; the tests in :mod:`tapetum.monitor.drift_stats`.

Example:
    >>> from tapetum.monitor import Hysteresis, ks_statistic
    >>> ks_statistic([0.0, 1.0, 2.0], [10.0, 11.0])
    1.0
"""

from tapetum.monitor.drift import (
    DriftConfig,
    DriftEvent,
    DriftEventWriter,
    DriftMonitor,
    Hysteresis,
    SignalStatus,
)
from tapetum.monitor.drift_features import FeatureExtractor, image_features
from tapetum.monitor.drift_profile import DriftProfile, ProfileRecorder
from tapetum.monitor.drift_signals import SIGNALS, SignalKind, SignalSpec
from tapetum.monitor.drift_stats import ks_statistic, mmd2_rbf, psi
from tapetum.monitor.gpu import GpuCollector
from tapetum.monitor.metrics import CollectorGroup, PipelineMonitor, new_registry
from tapetum.monitor.server import MetricsServer
from tapetum.monitor.tracks import TrackEvents, TrackLedger

__all__ = [
    "SIGNALS",
    "CollectorGroup",
    "DriftConfig",
    "DriftEvent",
    "DriftEventWriter",
    "DriftMonitor",
    "DriftProfile",
    "FeatureExtractor",
    "GpuCollector",
    "Hysteresis",
    "MetricsServer",
    "PipelineMonitor",
    "ProfileRecorder",
    "SignalKind",
    "SignalSpec",
    "SignalStatus",
    "TrackEvents",
    "TrackLedger",
    "image_features",
    "ks_statistic",
    "mmd2_rbf",
    "new_registry",
    "psi",
]
