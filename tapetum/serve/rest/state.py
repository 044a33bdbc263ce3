"""What one REST app owns, built by :func:`~tapetum.serve.app.create_app` and handed to
its routers; also ``app.state.tapetum`` (``tapetum serve`` shares ``streams`` and
``breakers`` with the gRPC server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tapetum.core.breaker import BreakerRegistry
from tapetum.serve.rest.metrics import Metrics
from tapetum.serve.service import DetectionService
from tapetum.serve.settings import ServeSettings
from tapetum.serve.streams import StreamManager

if TYPE_CHECKING:
    from tapetum.experiments.serving import ServerExperiment
    from tapetum.serve.follow import ModelFollower

__all__ = ["AppState"]


@dataclass(slots=True)
class AppState:
    """One app's settings, metrics, detection service, breakers and streams, the A/B
    experiment it runs (if any), and the registry alias its default model follows (if
    any)."""

    settings: ServeSettings
    metrics: Metrics
    service: DetectionService
    breakers: BreakerRegistry
    streams: StreamManager
    experiment: ServerExperiment | None = None
    follower: ModelFollower | None = None
