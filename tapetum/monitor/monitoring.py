"""Metrics, drift and the HTTP server for one pipeline: what ``tapetum run --metrics-port``
sets up, usable from Python too.

:class:`RunMonitoring` builds the monitoring sinks once the sources are open (their frame
rates set the video clock), attaches them to the pipeline, registers them on a fresh
registry and serves ``/metrics`` and ``/dashboard``.

Example:
    >>> mon = RunMonitoring(port=9400, drift=DriftProfile.load("cam1.json"))  # doctest: +SKIP
    >>> sources = [open_source("rtsp://cam1/stream")]                         # doctest: +SKIP
    >>> pipe = Pipeline(sources, detector, sinks=mon.sinks(sources))          # doctest: +SKIP
    >>> mon.start(pipe)  # or listen() before building, attach(pipe) after  # doctest: +SKIP
    'http://127.0.0.1:9400'
    >>> pipe.run(); mon.stop()                                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tapetum.errors import ConfigError
from tapetum.monitor.drift import DriftEventWriter, DriftMonitor
from tapetum.monitor.drift_profile import DriftProfile
from tapetum.monitor.metrics import CollectorGroup, PipelineMonitor, new_registry
from tapetum.monitor.server import MetricsServer

if TYPE_CHECKING:
    from tapetum.pipeline import Pipeline
    from tapetum.sinks.base import Sink
    from tapetum.sources.base import Source

__all__ = ["RunMonitoring", "file_model_info", "parse_drift_refs"]

log = logging.getLogger(__name__)


def file_model_info(path: Path) -> dict[str, str]:
    """``{"model": stem, "version": "sha256:<first 12>"}`` of a model file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"model": path.stem, "version": f"sha256:{digest.hexdigest()[:12]}"}


def parse_drift_refs(values: Sequence[str]) -> DriftProfile | dict[str, DriftProfile]:
    """``--drift-ref`` values: one ``PATH`` (every stream) or ``SOURCE_ID=PATH`` each.

    Raises:
        ConfigError: both forms mixed, or a source id given twice.
        DriftProfileError: a profile file is missing or invalid.
    """
    if len(values) == 1 and "=" not in values[0]:
        return DriftProfile.load(values[0])
    profiles: dict[str, DriftProfile] = {}
    for value in values:
        sid, sep, path = value.partition("=")
        if not sep or not sid or not path:
            raise ConfigError(
                f"drift reference {value!r}: with several, give each as SOURCE_ID=PATH"
            )
        if sid in profiles:
            raise ConfigError(f"drift reference for {sid!r} given twice")
        profiles[sid] = DriftProfile.load(path)
    return profiles


class RunMonitoring:
    """Metrics (and drift) of one pipeline, served over HTTP.

    Args:
        port: the metrics port (None: no server; the collectors still work).
        host: the address to listen on.
        drift: drift profiles (one for every stream, or by source id); None: no drift.
        drift_events: append drift events to this JSONL file.
        model_info: labels of ``tapetum_model_info`` (or a callable returning them).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        drift: DriftProfile | Mapping[str, DriftProfile] | None = None,
        drift_events: Path | None = None,
        model_info: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self._drift_profiles = drift
        self._drift_events = drift_events
        self._model_info = model_info
        self.metrics: PipelineMonitor | None = None
        self.drift: DriftMonitor | None = None
        self.registry = new_registry()
        self.server: MetricsServer | None = None
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"metrics port must be 0-65535, got {port}")

    def sinks(self, sources: Sequence[Source]) -> list[Sink]:
        """The monitoring sinks for a pipeline over ``sources``.

        Raises:
            ConfigError: a drift profile names a source id the run does not have.
        """
        fps = {s.source_id: float(s.fps or 25.0) for s in sources}
        self.metrics = PipelineMonitor(model_info=self._model_info, fps=fps)
        sinks: list[Sink] = [self.metrics]
        if self._drift_profiles is not None:
            if not isinstance(self._drift_profiles, DriftProfile):
                unknown = sorted(set(self._drift_profiles) - set(fps))
                if unknown:
                    raise ConfigError(
                        f"drift reference for unknown source {', '.join(unknown)} "
                        f"(the sources are {', '.join(sorted(fps))})"
                    )
            on_event = [DriftEventWriter(self._drift_events)] if self._drift_events else []
            self.drift = DriftMonitor(self._drift_profiles, fps=fps, on_event=on_event)
            sinks.append(self.drift)
        return sinks

    def listen(self) -> str | None:
        """Start the server (before anything else opens, so a taken port fails first);
        its URL, or None without a port. Until :meth:`attach`, only the process and GPU
        metrics are served.

        Raises:
            MetricsServerError: the port cannot be bound.
        """
        if self.port is None:
            return None
        self.server = MetricsServer(self.registry, self.host, self.port).start()
        return self.server.url

    def attach(self, pipeline: Pipeline) -> None:
        """Read ``pipeline``'s counters and serve the monitoring sinks' metrics."""
        if self.metrics is None:
            raise RuntimeError("call sinks() and build the pipeline with them first")
        members: list[object] = [self.metrics.attach(pipeline)]
        if self.drift is not None:
            members.append(self.drift)
        self.registry.register(CollectorGroup(members))

    def start(self, pipeline: Pipeline) -> str | None:
        """:meth:`attach` then :meth:`listen`; the server's URL."""
        self.attach(pipeline)
        return self.listen()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
