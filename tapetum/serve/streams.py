"""Server-owned streams: background pipelines started and stopped over the API.

:class:`StreamManager` owns one :class:`~tapetum.pipeline.Pipeline` per stream (one source
each, sharing the server's detector) and fans every frame result out to live
subscribers, each behind a bounded drop-oldest queue (a slow client loses the oldest
results, counted; it never slows the pipeline).

Streams belong to the principal that started them (see :mod:`tapetum.serve.ownership`):
the methods that take a :class:`~tapetum.serve.ownership.Caller` answer only about its own
streams (another's is :class:`UnknownStreamError`, as if it did not exist) unless it is an
admin; ``max_streams_per_owner`` and ``max_subscriptions_per_owner`` bound what one
principal holds, so one key cannot take every slot.

Before anything is opened, a :class:`~tapetum.serve.source_policy.SourcePolicy` decides
whether the URI may be opened at all (local paths only under the media roots, network
hosts only at public addresses unless allow-listed). Clients get generic reasons (a
refused source, or one that cannot be opened); the detail goes to the server log, so the
API cannot be used to learn which files exist or which internal ports answer.

A URI often carries credentials (``rtsp://user:password@cam``, ``?token=…``): listings,
logs and metrics show it without its user info, query string and fragment
(:func:`~tapetum.sources.video.display_url`); the full URI is in ``full_uri`` of the
answers about one stream (start, get, stop), which only its owner or an admin can see.
Breakers are named ``source:<hash>``, a keyed hash of the full URI, never the URI.

Opening a source goes through a per-URI :class:`~tapetum.core.breaker.CircuitBreaker`:
a URI that failed to open ``failure_threshold`` times in a row is refused at once
(:class:`~tapetum.core.breaker.CircuitOpenError`) until its reset timeout passes, so a
client retrying a dead camera does not tie up the server probing it.

Example:
    >>> manager = StreamManager(lambda: detector, max_streams=4)   # doctest: +SKIP
    >>> info = manager.start("rtsp://cam/101", StreamOptions(conf=0.4))  # doctest: +SKIP
    >>> sub = manager.subscribe(info.stream_id)                      # doctest: +SKIP
    >>> sub.get(timeout_s=1.0)   # JSON lines of frame results       # doctest: +SKIP
    >>> manager.stop(info.stream_id)                                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from tapetum.core.breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect.base import StagedDetector
from tapetum.errors import (
    ConfigError,
    SourceError,
    SourceNotAllowedError,
    StreamLimitError,
    SubscriptionLimitError,
    UnknownStreamError,
)
from tapetum.monitor.metrics import PipelineMonitor
from tapetum.pipeline import Enricher, Pipeline, PipelineConfig, SchedulerConfig
from tapetum.serve.ownership import ANONYMOUS, Caller
from tapetum.serve.source_policy import SourcePolicy
from tapetum.sources import Source, open_source
from tapetum.sources.video import display_url, url_scheme

if TYPE_CHECKING:
    from tapetum.serve.settings import ServeSettings

__all__ = [
    "StreamInfo",
    "StreamLimitError",
    "StreamManager",
    "StreamOptions",
    "StreamScheduler",
    "StreamStatsOut",
    "Subscription",
    "SubscriptionLimitError",
    "UnknownStreamError",
]

log = logging.getLogger(__name__)

#: What a client hears about a source that cannot be opened; the server log says why.
_CANNOT_OPEN = "the source cannot be opened (the server log has the reason)"

StreamStateName = Literal["running", "finished", "stopped", "failed"]


# ------------------------------------------------------------------------------ payloads


class StreamScheduler(BaseModel):
    """Adaptive detection intervals of one stream (:mod:`tapetum.pipeline.scheduler`)."""

    latency_budget_ms: float = Field(
        default=100.0,
        gt=0.0,
        le=60_000.0,
        description="End-to-end latency the scheduler keeps the stream under, ms. A budget "
        "below the model's own latency on the server is refused (422).",
    )
    max_interval: int = Field(
        default=4,
        ge=1,
        le=30,
        description="The largest interval: a detector frame at least every max_interval frames.",
    )


class StreamOptions(BaseModel):
    """How to run one stream (the body of ``POST /v1/streams`` less the URI)."""

    tracker: str = Field(default="bytetrack", description="Tracker name.", examples=["bytetrack"])
    conf: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Score threshold of reported tracks.",
        examples=[0.35],
    )
    realtime: bool = Field(
        default=False, description="Pace a file at its native frame rate, as a camera would."
    )
    detect_every: int = Field(
        default=1,
        ge=1,
        le=30,
        description="Run the detector on every k-th frame only; the tracker carries the "
        "tracks through the frames in between, whose results are marked `predicted`.",
        examples=[3],
    )
    scheduler: StreamScheduler | None = Field(
        default=None,
        description="Adapt the interval to the server's load instead: raised (up to "
        "max_interval) where the scene's motion allows while the stream is behind its "
        "latency budget, lowered again with headroom. detect_every must then be 1.",
    )

    @model_validator(mode="after")
    def _one_interval(self) -> StreamOptions:
        if self.scheduler is not None and self.detect_every != 1:
            raise ValueError(f"give detect_every ({self.detect_every}) or a scheduler, not both")
        return self

    def pipeline_config(self) -> PipelineConfig:
        """The stream's pipeline: one inference worker, no warm-up (the server's detector
        is warm), and the detection interval asked for."""
        sched = self.scheduler
        return PipelineConfig(
            warmup=False,
            inference_workers=1,
            detect_every=self.detect_every,
            scheduler=(
                None
                if sched is None
                else SchedulerConfig(
                    latency_budget_ms=sched.latency_budget_ms, max_interval=sched.max_interval
                )
            ),
        )


class StreamStatsOut(BaseModel):
    """Live counters of one stream."""

    frames_read: int
    frames_processed: int
    frames_dropped: int
    frames_corrupt: int
    frames_failed: int
    reconnects: int
    fps: float
    p50_end_to_end_ms: float | None
    p99_end_to_end_ms: float | None
    subscribers: int
    results_dropped: int = Field(description="Results dropped by slow live subscribers.")
    detector_frames: int = Field(default=0, description="Frames the detector saw.")
    tracker_frames: int = Field(
        default=0,
        description="Frames the tracker predicted alone (a detection interval); with "
        "detector_frames, frames_processed.",
    )
    interval: int = Field(default=1, description="The detection interval now (1: every frame).")


class StreamInfo(BaseModel):
    """One stream as the API shows it."""

    stream_id: str
    uri: str = Field(
        description="The source URI without user name, password, query string or fragment."
    )
    full_uri: str | None = Field(
        default=None,
        description="The URI as given, credentials included: only in answers about this one "
        "stream (start, get, stop), which only its owner or an admin receives; null in "
        "listings.",
    )
    owner: str = Field(
        default=ANONYMOUS,
        description="Who started it: an API key id, or `jwt:<subject>` for a bearer token.",
    )
    state: StreamStateName
    is_live: bool
    created_at: float = Field(description="Unix time the stream started.")
    options: StreamOptions
    stats: StreamStatsOut
    error: str | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "stream_id": "3f2a9c1b7d4e",
                    "uri": "rtsp://cam-7:554/Streaming/101",
                    "owner": "3f2a9c1b7d4e",
                    "state": "running",
                    "is_live": True,
                    "created_at": 1_764_000_000.0,
                    "options": {"tracker": "bytetrack", "conf": 0.35, "realtime": False},
                    "stats": {
                        "frames_read": 750,
                        "frames_processed": 748,
                        "frames_dropped": 2,
                        "frames_corrupt": 0,
                        "frames_failed": 0,
                        "reconnects": 0,
                        "fps": 24.9,
                        "p50_end_to_end_ms": 41.2,
                        "p99_end_to_end_ms": 88.0,
                        "subscribers": 1,
                        "results_dropped": 0,
                        "detector_frames": 748,
                        "tracker_frames": 0,
                        "interval": 1,
                    },
                }
            ]
        }
    }


# --------------------------------------------------------------------------- subscribers


class Subscription:
    """A bounded, drop-oldest queue of one subscriber's results (JSON strings).

    Filled from the stream's sink thread; read with ``get`` (blocking, any thread) or
    ``aget`` (on the event loop the subscription was made on).
    """

    def __init__(
        self,
        capacity: int,
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str = ANONYMOUS,
        max_duration_s: float | None = None,
    ) -> None:
        #: the principal that follows the stream (its subscriptions are counted).
        self.owner = owner
        self.released = False
        self._expires_at_s = None if max_duration_s is None else time.monotonic() + max_duration_s
        self._items: deque[str] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._ended = False
        self._loop = loop
        self._wakeup = asyncio.Event() if loop is not None else None
        #: results discarded because this subscriber fell behind.
        self.dropped = 0
        self.delivered = 0

    @property
    def expired(self) -> bool:
        """The subscription has lasted its maximum duration: the reader should end it
        (the client subscribes again if it still wants results)."""
        return self._expires_at_s is not None and time.monotonic() >= self._expires_at_s

    def push(self, item: str) -> None:
        with self._cond:
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
        self._wake()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def _take_locked(self) -> list[str] | None:
        if self._items:
            items = list(self._items)
            self._items.clear()
            self.delivered += len(items)
            return items
        return None if self._ended else []

    def get(self, timeout_s: float) -> list[str] | None:
        """Queued results (possibly none after ``timeout_s``); None once the stream ended
        and everything was taken."""
        with self._cond:
            if not self._items and not self._ended:
                self._cond.wait(timeout_s)
            return self._take_locked()

    async def aget(self, timeout_s: float) -> list[str] | None:
        """``get`` for the event loop the subscription was made on."""
        assert self._wakeup is not None, "subscribe with a loop to use aget"
        self._wakeup.clear()
        with self._cond:
            taken = self._take_locked()
        if taken != []:
            return taken
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        with self._cond:
            return self._take_locked()


class _FanOut:
    """The stream's sink: serialises each result once and hands it to every subscriber."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self.results_dropped_by_closed = 0

    def add(self, sub: Subscription) -> None:
        with self._lock:
            if self._closed:
                sub.end()
                return
            self._subs.append(sub)

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs)

    def write(self, result: FrameResult) -> None:
        subs = self.subscribers
        if not subs:
            return
        record: dict[str, Any] = result.to_record()
        e2e = result.timings_ms.get("end_to_end")
        if e2e is not None:
            record["end_to_end_ms"] = round(e2e, 2)
        line = json.dumps(record, separators=(",", ":"))
        for sub in subs:
            sub.push(line)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, []
        for sub in subs:
            sub.end()


def _conf_filter(conf: float) -> Callable[[Source], Enricher]:
    def make(_src: Source) -> Enricher:
        def keep(frame: Frame, detections: Detections) -> Detections:
            return detections[detections.confidence >= conf]

        return keep

    return make


# --------------------------------------------------------------------------------- manager


@dataclass(slots=True)
class _Managed:
    stream_id: str
    uri: str  # as displayed: no credentials
    options: StreamOptions
    source: Source
    pipeline: Pipeline
    fanout: _FanOut
    created_at: float
    stopped: bool = False
    dropped_by_gone: int = field(default=0)  # results dropped by subscribers now gone
    owner: str = ANONYMOUS
    full_uri: str = ""
    #: the stream's Prometheus metrics (a sink of its pipeline; see :meth:`monitors`).
    monitor: PipelineMonitor | None = None


class StreamManager:
    """Starts, lists, inspects and stops background pipelines.

    Args:
        detector_provider: returns the shared detector, or raises when it is not ready
            (its exception propagates from ``start``).
        max_streams: most streams running at once (finished ones do not count).
        breakers: where per-URI source breakers live (and are exported from); default a
            private registry with ``failure_threshold=3, reset_timeout_s=30``.
        subscriber_queue_size: results buffered per live subscriber before drop-oldest.
        max_finished: finished streams kept for inspection (oldest forgotten first).
        source_options: extra ``open_source`` options (e.g. ``reconnect_max_attempts``).
        max_streams_per_owner: most streams one principal runs at once (None: no own
            limit below ``max_streams``).
        max_subscriptions_per_owner: most live subscriptions one principal holds at once,
            over all streams (None: no limit).
        max_subscription_s: how long a subscription lasts at most before its reader ends
            it (see :attr:`Subscription.expired`; None: no limit).
        source_policy: what may be opened; default :class:`SourcePolicy()` (no local
            paths, public network hosts only).
    """

    def __init__(
        self,
        detector_provider: Callable[[], StagedDetector],
        max_streams: int = 8,
        breakers: BreakerRegistry | None = None,
        *,
        subscriber_queue_size: int = 64,
        max_finished: int = 32,
        source_options: dict[str, Any] | None = None,
        max_streams_per_owner: int | None = None,
        max_subscriptions_per_owner: int | None = None,
        source_policy: SourcePolicy | None = None,
        max_subscription_s: float | None = None,
    ) -> None:
        self._detector_provider = detector_provider
        self.max_streams = max_streams
        self.breakers = (
            breakers
            if breakers is not None
            else BreakerRegistry(failure_threshold=3, reset_timeout_s=30.0)
        )
        self.subscriber_queue_size = subscriber_queue_size
        self.max_finished = max_finished
        self._source_options = dict(source_options or {})
        self.max_streams_per_owner = max_streams_per_owner
        self.max_subscriptions_per_owner = max_subscriptions_per_owner
        self.max_subscription_s = max_subscription_s
        self.source_policy = source_policy if source_policy is not None else SourcePolicy()
        self._streams: dict[str, _Managed] = {}
        self._starting: dict[str, int] = {}  # owner → streams being opened
        self._subscriptions: dict[str, int] = {}  # owner → live subscriptions
        self._label_key = secrets.token_bytes(16)  # breaker names: keyed hashes of URIs
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: ServeSettings,
        detector_provider: Callable[[], StagedDetector],
        breakers: BreakerRegistry | None = None,
    ) -> StreamManager:
        """The manager a server's settings describe: its stream limits, per-key quotas
        and breakers (``breakers``: where they live, default a new registry)."""
        if breakers is None:
            breakers = BreakerRegistry(
                failure_threshold=settings.stream_breaker_failures,
                reset_timeout_s=settings.stream_breaker_reset_s,
            )
        return cls(
            detector_provider,
            max_streams=settings.max_streams,
            breakers=breakers,
            subscriber_queue_size=settings.stream_subscriber_queue,
            max_streams_per_owner=settings.max_streams_per_key,
            max_subscriptions_per_owner=settings.max_subscriptions_per_key,
            source_policy=SourcePolicy(
                media_roots=settings.media_roots, allowed=settings.allowed_sources
            ),
            max_subscription_s=settings.max_subscription_s,
        )

    # ----------------------------------------------------------------- helpers
    def breaker_name(self, uri: str) -> str:
        """``source:<12 hex>``: the name of ``uri``'s breaker (and its ``/metrics`` label),
        a hash keyed per manager, so neither the URI nor its credentials show."""
        digest = hmac.new(self._label_key, uri.encode("utf-8", "replace"), hashlib.sha256)
        return f"source:{digest.hexdigest()[:12]}"

    def breaker_for(self, uri: str) -> CircuitBreaker:
        return self.breakers.get(self.breaker_name(uri))

    def _running_locked(self, owner: str | None = None) -> int:
        """Streams running (and being opened), of ``owner`` only unless None."""
        running = sum(
            1
            for m in self._streams.values()
            if not m.pipeline.finished and (owner is None or m.owner == owner)
        )
        if owner is None:
            return running + sum(self._starting.values())
        return running + self._starting.get(owner, 0)

    def _reserve_locked(self, owner: str) -> None:
        """Count a stream of ``owner`` as opening, or refuse it over a limit."""
        running = self._running_locked()
        if running >= self.max_streams:
            raise StreamLimitError(
                f"this server runs at most {self.max_streams} streams and {running} are "
                "running; stop one (DELETE /v1/streams/{id}) or retry later"
            )
        per_owner = self.max_streams_per_owner
        if per_owner is not None and self._running_locked(owner) >= per_owner:
            raise StreamLimitError(
                f"this key already runs {per_owner} streams, the most one key may run; "
                "stop one (DELETE /v1/streams/{id}) or retry later"
            )
        self._starting[owner] = self._starting.get(owner, 0) + 1

    def _release_locked(self, owner: str) -> None:
        left = self._starting[owner] - 1
        if left:
            self._starting[owner] = left
        else:
            del self._starting[owner]

    def _forget_finished_locked(self) -> None:
        done = [k for k, m in self._streams.items() if m.pipeline.finished]
        for key in done[: max(0, len(done) - self.max_finished)]:
            del self._streams[key]

    def _managed(self, stream_id: str, caller: Caller | None = None) -> _Managed:
        """The stream, if ``caller`` (None: the server itself) may see it; else
        :class:`UnknownStreamError`, the same for another's stream as for none."""
        with self._lock:
            managed = self._streams.get(stream_id)
        if managed is None or (caller is not None and not caller.may_see(managed.owner)):
            raise UnknownStreamError(f"no stream {stream_id!r}")
        return managed

    def _target(self, uri: str, owner: str) -> str:
        """What to open for ``uri``: the policy's answer, or a refusal that says no more
        than it must (the detail is logged). A local path that is allowed but missing is
        refused here too, without touching the URI's breaker (which is for sources that
        fail when probed).

        Raises:
            SourceNotAllowedError: the policy refuses ``uri``.
            SourceError: the host does not resolve, or the local file is missing.
        """
        try:
            target = self.source_policy.check(uri)
        except SourceNotAllowedError as exc:
            log.warning(
                "stream source refused for %s: %s (%s)", owner, exc.reason, display_url(uri)
            )
            raise
        except SourceError as exc:
            log.warning("stream source refused for %s: %s", owner, exc)
            raise SourceError(_CANNOT_OPEN) from None
        if url_scheme(target) is None and not Path(target).exists():
            log.warning("stream source refused for %s: no such path %s", owner, target)
            raise SourceError(_CANNOT_OPEN)
        return target

    # ----------------------------------------------------------------- API
    def start(
        self, uri: str, options: StreamOptions | None = None, caller: Caller | None = None
    ) -> StreamInfo:
        """Open ``uri`` and start its pipeline in the background (blocks while the source
        is probed: call it off the event loop). The stream belongs to ``caller`` (None:
        :data:`~tapetum.serve.ownership.ANONYMOUS`).

        Raises:
            StreamLimitError: ``max_streams`` streams are running, or the caller runs
                ``max_streams_per_owner``.
            SourceNotAllowedError: the source policy refuses ``uri``.
            CircuitOpenError: this URI failed to open repeatedly; retry later.
            SourceError: the source cannot be opened (a generic reason; the server log
                has the detail); only failures of a probe count towards the breaker.
            ConfigError: an unknown tracker name, a tracker that cannot predict with a
                detection interval, or a scheduler's budget below the model's latency.
        """
        from tapetum.track import make_tracker

        options = options or StreamOptions()
        make_tracker(options.tracker, 30.0)  # a bad name fails before any work
        owner = caller.owner if caller is not None else ANONYMOUS
        target = self._target(uri, owner)
        detector = self._detector_provider()
        with self._lock:
            self._reserve_locked(owner)
        try:
            stream_id = uuid.uuid4().hex[:12]
            source = self._open(uri, target, stream_id, options.realtime, owner)
            fanout = _FanOut()
            monitor = PipelineMonitor(fps={stream_id: float(source.fps or 25.0)})
            tracker_name = options.tracker

            def tracker_factory(src: Source) -> Any:
                return make_tracker(tracker_name, src.fps or 30.0)

            try:
                pipeline = Pipeline(
                    [source],
                    detector,
                    tracker_factory,
                    # the monitor first: sinks close in order, and the subscribers'
                    # feeds must end only once the stream is as good as finished
                    sinks=[monitor, fanout],
                    config=options.pipeline_config(),
                    enrichers=[_conf_filter(options.conf)] if options.conf is not None else [],
                )
                pipeline.start()
            except BaseException:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
                raise
            managed = _Managed(
                stream_id,
                display_url(uri),
                options,
                source,
                pipeline,
                fanout,
                time.time(),
                owner=owner,
                full_uri=uri,
                monitor=monitor.attach(pipeline),
            )
            with self._lock:
                self._streams[stream_id] = managed
                self._forget_finished_locked()
        finally:
            with self._lock:
                self._release_locked(owner)
        if managed.pipeline.detector is not self._detector_provider():
            self.swap_detector()  # the server swapped its model while this one started
        log.info(
            "stream %s of %s started on %s (breaker %s)",
            stream_id,
            owner,
            managed.uri,
            self.breaker_name(uri),
        )
        return self._info(managed, full=True)

    def _open(self, uri: str, target: str, stream_id: str, realtime: bool, owner: str) -> Source:
        """Open ``target`` through ``uri``'s breaker; failures reach the client generic."""
        try:
            return self.breaker_for(uri).call(
                open_source,
                target,
                source_id=stream_id,
                realtime=realtime,
                **self._source_options,
            )
        except CircuitOpenError as exc:
            log.warning("stream source %s for %s: breaker open", exc.name, owner)
            raise CircuitOpenError(exc.name, exc.retry_after_s, _CANNOT_OPEN) from None
        except SourceError as exc:
            name = self.breaker_name(uri)
            log.warning("stream source for %s cannot be opened (breaker %s): %s", owner, name, exc)
            raise SourceError(_CANNOT_OPEN) from None

    def list(self, caller: Caller | None = None) -> list[StreamInfo]:
        """The streams ``caller`` may see (None: all)."""
        with self._lock:
            managed = [
                m for m in self._streams.values() if caller is None or caller.may_see(m.owner)
            ]
        return [self._info(m) for m in managed]

    def get(self, stream_id: str, caller: Caller | None = None) -> StreamInfo:
        """Raises UnknownStreamError (also for a stream ``caller`` may not see)."""
        return self._info(self._managed(stream_id, caller), full=True)

    def stop(
        self,
        stream_id: str,
        drain: bool = True,
        timeout_s: float = 10.0,
        *,
        caller: Caller | None = None,
    ) -> StreamInfo:
        """Stop reading the source, finish (``drain``) or drop what is queued, wait for the
        pipeline to end, and forget the stream. Returns its final state. Blocks: call it
        off the event loop. Raises UnknownStreamError (also for a stream ``caller`` may
        not see)."""
        managed = self._managed(stream_id, caller)
        managed.stopped = True
        managed.pipeline.stop(drain=drain)
        if not managed.pipeline.join(timeout_s):
            managed.pipeline.stop(drain=False)
            managed.pipeline.join(timeout_s)
        with self._lock:
            self._streams.pop(stream_id, None)
        info = self._info(managed, full=True)
        log.info(
            "stream %s stopped: %d frames processed, %d dropped",
            stream_id,
            info.stats.frames_processed,
            info.stats.frames_dropped,
        )
        return info

    def swap_detector(self) -> int:
        """Hand every running stream the detector the provider gives now (the server swapped
        its model): each pipeline takes it from its next frame read, frames already read
        finish on the old one, trackers keep their ids (:meth:`Pipeline.swap_detector`; no
        warm-up, the server warmed it). A stream that cannot take it (it forms larger
        batches than the new model takes) keeps its model, logged. Returns the streams
        swapped."""
        detector = self._detector_provider()
        with self._lock:
            running = [m for m in self._streams.values() if not m.pipeline.finished]
        swapped = 0
        for m in running:
            if m.pipeline.detector is detector:
                continue
            try:
                m.pipeline.swap_detector(detector, warmup=False)
            except ConfigError as exc:
                log.warning("stream %s keeps its model: %s", m.stream_id, exc)
                continue
            swapped += 1
        if swapped:
            log.info("model swap: %d running streams now use the new model", swapped)
        return swapped

    def stop_all(self, drain: bool = True, timeout_s: float = 10.0) -> int:
        """Stop every stream (server shutdown); returns how many were running."""
        with self._lock:
            managed = list(self._streams.values())
        running = [m for m in managed if not m.pipeline.finished]
        for m in managed:
            m.stopped = True
            m.pipeline.stop(drain=drain)
        deadline = time.monotonic() + timeout_s
        for m in managed:
            if not m.pipeline.join(max(0.0, deadline - time.monotonic())):
                m.pipeline.stop(drain=False)
        with self._lock:
            self._streams.clear()
        return len(running)

    def subscribe(
        self,
        stream_id: str,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        caller: Caller | None = None,
    ) -> Subscription:
        """A live feed of the stream's results from now on (ended when the stream ends);
        release it with :meth:`unsubscribe`.

        Raises:
            UnknownStreamError: no such stream, or one ``caller`` may not see.
            SubscriptionLimitError: the caller holds ``max_subscriptions_per_owner``.
        """
        managed = self._managed(stream_id, caller)
        owner = caller.owner if caller is not None else ANONYMOUS
        limit = self.max_subscriptions_per_owner
        with self._lock:
            held = self._subscriptions.get(owner, 0)
            if limit is not None and caller is not None and held >= limit:
                raise SubscriptionLimitError(
                    f"this key already follows {held} live result feeds, the most one key "
                    "may; close one first"
                )
            self._subscriptions[owner] = held + 1
        sub = Subscription(self.subscriber_queue_size, loop, owner, self.max_subscription_s)
        managed.fanout.add(sub)
        return sub

    def unsubscribe(self, stream_id: str, sub: Subscription) -> None:
        """Release a subscription (idempotent), whether or not its stream still exists."""
        with self._lock:
            if sub.released:
                return
            sub.released = True
            left = self._subscriptions.get(sub.owner, 1) - 1
            if left > 0:
                self._subscriptions[sub.owner] = left
            else:
                self._subscriptions.pop(sub.owner, None)
            managed = self._streams.get(stream_id)
        if managed is not None:
            managed.fanout.remove(sub)
            managed.dropped_by_gone += sub.dropped

    def monitors(self) -> tuple[PipelineMonitor, ...]:
        """The metrics of every stream the manager keeps (running, and finished ones kept
        for inspection), labelled by stream id; a forgotten stream's series go with it."""
        with self._lock:
            return tuple(m.monitor for m in self._streams.values() if m.monitor is not None)

    def __len__(self) -> int:
        """Streams running (opened, not finished)."""
        with self._lock:
            return sum(1 for m in self._streams.values() if not m.pipeline.finished)

    # ----------------------------------------------------------------- info
    def _info(self, m: _Managed, *, full: bool = False) -> StreamInfo:
        """The stream as the API shows it; ``full``: with ``full_uri`` (an answer about
        this one stream to a caller allowed to see it)."""
        stats = m.pipeline.stats()
        (s,) = stats.streams
        e2e = m.pipeline.recent_latency_ms("end_to_end")
        subs = m.fanout.subscribers
        state: StreamStateName
        if not stats.finished:
            state = "running"
        elif s.error is not None:
            state = "failed"
        elif m.stopped:
            state = "stopped"
        else:
            state = "finished"

        def ms(value: float) -> float | None:
            return round(value, 2) if math.isfinite(value) else None

        return StreamInfo(
            stream_id=m.stream_id,
            uri=m.uri,
            full_uri=m.full_uri if full else None,
            owner=m.owner,
            state=state,
            is_live=s.is_live,
            created_at=m.created_at,
            options=m.options,
            error=s.error,
            stats=StreamStatsOut(
                frames_read=s.frames_read,
                frames_processed=s.frames_processed,
                frames_dropped=s.frames_dropped,
                frames_corrupt=s.frames_corrupt,
                frames_failed=s.frames_failed,
                reconnects=s.reconnects,
                fps=round(s.fps, 2),
                p50_end_to_end_ms=ms(e2e.p50_ms),
                p99_end_to_end_ms=ms(e2e.p99_ms),
                subscribers=len(subs),
                results_dropped=m.dropped_by_gone + sum(sub.dropped for sub in subs),
                detector_frames=s.detector_frames,
                tracker_frames=s.tracker_frames,
                interval=s.interval,
            ),
        )
