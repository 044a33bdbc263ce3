"""The one conversion between the REST schemas (pydantic, :mod:`tapetum.serve.schemas`) and
the gRPC messages (protobuf, ``proto/tapetum/v1/tapetum.proto``), both ways.

Each ``*_to_proto`` has a ``*_from_proto`` inverse, and a round trip either way gives back
an equal value (``tests/unit/serve/test_serve_mapping.py``): proto floats are doubles, and
``None`` maps to an absent ``optional`` field, never to ``0`` or ``""``. ``*_from_proto``
validates like the REST API does (a negative width raises ``pydantic.ValidationError``).

Example:
    >>> from tapetum.serve.schemas import Box
    >>> box_from_proto(box_to_proto(Box(x1=1.5, y1=2, x2=30, y2=40))) == Box(
    ...     x1=1.5, y1=2, x2=30, y2=40)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.schemas import (
    BatchDetectResponse,
    BatchItem,
    Box,
    DetectionOut,
    DetectResponse,
    Health,
    ImageSize,
    ModelInfo,
    ModelList,
    ModelReload,
)
from tapetum.serve.streams import (
    StreamInfo,
    StreamOptions,
    StreamScheduler,
    StreamStateName,
    StreamStatsOut,
)

__all__ = [
    "batch_detect_response_from_proto",
    "batch_detect_response_to_proto",
    "batch_item_from_proto",
    "batch_item_to_proto",
    "box_from_proto",
    "box_to_proto",
    "detect_response_from_proto",
    "detect_response_to_proto",
    "detection_from_proto",
    "detection_to_proto",
    "frame_record_to_proto",
    "health_from_proto",
    "health_to_proto",
    "image_size_from_proto",
    "image_size_to_proto",
    "model_info_from_proto",
    "model_info_to_proto",
    "model_list_from_proto",
    "model_list_to_proto",
    "model_reload_from_proto",
    "model_reload_to_proto",
    "start_options_from_proto",
    "stream_info_from_proto",
    "stream_info_to_proto",
    "stream_list_from_proto",
    "stream_list_to_proto",
    "stream_options_from_proto",
    "stream_options_to_proto",
    "stream_scheduler_from_proto",
    "stream_scheduler_to_proto",
    "stream_stats_from_proto",
    "stream_stats_to_proto",
]

_HealthStatus = Literal["ok", "loading", "failed"]
_STATUS_TO_PROTO: dict[_HealthStatus, pb.HealthResponse.Status] = {
    "ok": pb.HealthResponse.STATUS_OK,
    "loading": pb.HealthResponse.STATUS_LOADING,
    "failed": pb.HealthResponse.STATUS_FAILED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_STATE_TO_PROTO: dict[StreamStateName, pb.StreamInfo.State] = {
    "running": pb.StreamInfo.STATE_RUNNING,
    "finished": pb.StreamInfo.STATE_FINISHED,
    "stopped": pb.StreamInfo.STATE_STOPPED,
    "failed": pb.StreamInfo.STATE_FAILED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}


def box_to_proto(box: Box) -> pb.Box:
    return pb.Box(x1=box.x1, y1=box.y1, x2=box.x2, y2=box.y2)


def box_from_proto(msg: pb.Box) -> Box:
    return Box(x1=msg.x1, y1=msg.y1, x2=msg.x2, y2=msg.y2)


def detection_to_proto(det: DetectionOut) -> pb.Detection:
    msg = pb.Detection(
        box=box_to_proto(det.box),
        confidence=det.confidence,
        class_id=det.class_id,
        class_name=det.class_name,
    )
    if det.track_id is not None:
        msg.track_id = det.track_id
    if det.label is not None:
        msg.label = det.label
    if det.label_confidence is not None:
        msg.label_confidence = det.label_confidence
    if det.label_votes is not None:
        msg.label_votes = det.label_votes
    return msg


def detection_from_proto(msg: pb.Detection) -> DetectionOut:
    return DetectionOut(
        box=box_from_proto(msg.box),
        confidence=msg.confidence,
        class_id=msg.class_id,
        class_name=msg.class_name,
        track_id=msg.track_id if msg.HasField("track_id") else None,
        label=msg.label if msg.HasField("label") else None,
        label_confidence=msg.label_confidence if msg.HasField("label_confidence") else None,
        label_votes=msg.label_votes if msg.HasField("label_votes") else None,
    )


def image_size_to_proto(size: ImageSize) -> pb.ImageSize:
    return pb.ImageSize(width=size.width, height=size.height)


def image_size_from_proto(msg: pb.ImageSize) -> ImageSize:
    return ImageSize(width=msg.width, height=msg.height)


def detect_response_to_proto(resp: DetectResponse) -> pb.DetectResponse:
    msg = pb.DetectResponse(
        model=resp.model,
        image=image_size_to_proto(resp.image),
        detections=[detection_to_proto(d) for d in resp.detections],
        timings_ms=resp.timings_ms,
    )
    if resp.session_id is not None:
        msg.session_id = resp.session_id
    return msg


def detect_response_from_proto(msg: pb.DetectResponse) -> DetectResponse:
    return DetectResponse(
        model=msg.model,
        image=image_size_from_proto(msg.image),
        detections=[detection_from_proto(d) for d in msg.detections],
        session_id=msg.session_id if msg.HasField("session_id") else None,
        timings_ms=dict(msg.timings_ms),
    )


def batch_item_to_proto(item: BatchItem) -> pb.BatchItem:
    return pb.BatchItem(
        image=image_size_to_proto(item.image),
        detections=[detection_to_proto(d) for d in item.detections],
    )


def batch_item_from_proto(msg: pb.BatchItem) -> BatchItem:
    return BatchItem(
        image=image_size_from_proto(msg.image),
        detections=[detection_from_proto(d) for d in msg.detections],
    )


def batch_detect_response_to_proto(resp: BatchDetectResponse) -> pb.BatchDetectResponse:
    return pb.BatchDetectResponse(
        model=resp.model,
        results=[batch_item_to_proto(r) for r in resp.results],
        timings_ms=resp.timings_ms,
    )


def batch_detect_response_from_proto(msg: pb.BatchDetectResponse) -> BatchDetectResponse:
    return BatchDetectResponse(
        model=msg.model,
        results=[batch_item_from_proto(r) for r in msg.results],
        timings_ms=dict(msg.timings_ms),
    )


def model_info_to_proto(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        family=info.family,
        path=info.path,
        input_width=info.input_width,
        input_height=info.input_height,
        num_classes=info.num_classes,
        providers=info.providers,
    )


def model_info_from_proto(msg: pb.ModelInfo) -> ModelInfo:
    # ``family`` is validated by pydantic (only "yolox" today); pass the raw string.
    return ModelInfo.model_validate(
        {
            "name": msg.name,
            "family": msg.family,
            "path": msg.path,
            "input_width": msg.input_width,
            "input_height": msg.input_height,
            "num_classes": msg.num_classes,
            "providers": list(msg.providers),
        }
    )


def model_list_to_proto(models: ModelList) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(models=[model_info_to_proto(m) for m in models.models])


def model_list_from_proto(msg: pb.ListModelsResponse) -> ModelList:
    return ModelList(models=[model_info_from_proto(m) for m in msg.models])


def model_reload_to_proto(reload: ModelReload) -> pb.ModelReload:
    msg = pb.ModelReload(
        name=reload.name,
        changed=reload.changed,
        version=reload.version,
        alias=reload.alias,
        sha256=reload.sha256,
    )
    if reload.previous_version is not None:
        msg.previous_version = reload.previous_version
    if reload.swap_seconds is not None:
        msg.swap_seconds = reload.swap_seconds
    return msg


def model_reload_from_proto(msg: pb.ModelReload) -> ModelReload:
    return ModelReload(
        name=msg.name,
        changed=msg.changed,
        version=msg.version,
        previous_version=msg.previous_version if msg.HasField("previous_version") else None,
        alias=msg.alias,
        sha256=msg.sha256,
        swap_seconds=msg.swap_seconds if msg.HasField("swap_seconds") else None,
    )


def health_to_proto(health: Health) -> pb.HealthResponse:
    msg = pb.HealthResponse(
        status=_STATUS_TO_PROTO[health.status], model_loaded=health.model_loaded
    )
    if health.detail is not None:
        msg.detail = health.detail
    return msg


def health_from_proto(msg: pb.HealthResponse) -> Health:
    """Raises ``ValueError`` for ``STATUS_UNSPECIFIED`` (a message that never set it)."""
    status = _STATUS_FROM_PROTO.get(msg.status)
    if status is None:
        raise ValueError(f"health status {msg.status} is not ok, loading or failed")
    return Health(
        status=status,
        model_loaded=msg.model_loaded,
        detail=msg.detail if msg.HasField("detail") else None,
    )


def stream_scheduler_to_proto(scheduler: StreamScheduler) -> pb.StreamScheduler:
    return pb.StreamScheduler(
        latency_budget_ms=scheduler.latency_budget_ms, max_interval=scheduler.max_interval
    )


def stream_scheduler_from_proto(msg: pb.StreamScheduler) -> StreamScheduler:
    """Absent fields take the REST defaults."""
    fields: dict[str, Any] = {}
    if msg.HasField("latency_budget_ms"):
        fields["latency_budget_ms"] = msg.latency_budget_ms
    if msg.HasField("max_interval"):
        fields["max_interval"] = msg.max_interval
    return StreamScheduler(**fields)


def stream_options_to_proto(options: StreamOptions) -> pb.StreamOptions:
    msg = pb.StreamOptions(
        tracker=options.tracker, realtime=options.realtime, detect_every=options.detect_every
    )
    if options.conf is not None:
        msg.conf = options.conf
    if options.scheduler is not None:
        msg.scheduler.CopyFrom(stream_scheduler_to_proto(options.scheduler))
    return msg


def stream_options_from_proto(msg: pb.StreamOptions) -> StreamOptions:
    """``detect_every`` 0 (unset) is 1. Raises ``pydantic.ValidationError`` as the REST
    body would (e.g. both a fixed interval and a scheduler)."""
    return _options(msg, msg.tracker)


def start_options_from_proto(request: pb.StartStreamRequest) -> StreamOptions:
    """The options of a ``StartStreamRequest`` (an empty tracker: ``bytetrack``); raises
    ``pydantic.ValidationError`` as the REST body would."""
    return _options(request, request.tracker or "bytetrack")


def _options(msg: pb.StreamOptions | pb.StartStreamRequest, tracker: str) -> StreamOptions:
    return StreamOptions(
        tracker=tracker,
        conf=msg.conf if msg.HasField("conf") else None,
        realtime=msg.realtime,
        detect_every=msg.detect_every or 1,
        scheduler=(
            stream_scheduler_from_proto(msg.scheduler) if msg.HasField("scheduler") else None
        ),
    )


def stream_stats_to_proto(stats: StreamStatsOut) -> pb.StreamStats:
    msg = pb.StreamStats(
        frames_read=stats.frames_read,
        frames_processed=stats.frames_processed,
        frames_dropped=stats.frames_dropped,
        frames_corrupt=stats.frames_corrupt,
        frames_failed=stats.frames_failed,
        reconnects=stats.reconnects,
        fps=stats.fps,
        subscribers=stats.subscribers,
        results_dropped=stats.results_dropped,
        detector_frames=stats.detector_frames,
        tracker_frames=stats.tracker_frames,
        interval=stats.interval,
    )
    if stats.p50_end_to_end_ms is not None:
        msg.p50_end_to_end_ms = stats.p50_end_to_end_ms
    if stats.p99_end_to_end_ms is not None:
        msg.p99_end_to_end_ms = stats.p99_end_to_end_ms
    return msg


def stream_stats_from_proto(msg: pb.StreamStats) -> StreamStatsOut:
    return StreamStatsOut(
        frames_read=msg.frames_read,
        frames_processed=msg.frames_processed,
        frames_dropped=msg.frames_dropped,
        frames_corrupt=msg.frames_corrupt,
        frames_failed=msg.frames_failed,
        reconnects=msg.reconnects,
        fps=msg.fps,
        p50_end_to_end_ms=(msg.p50_end_to_end_ms if msg.HasField("p50_end_to_end_ms") else None),
        p99_end_to_end_ms=(msg.p99_end_to_end_ms if msg.HasField("p99_end_to_end_ms") else None),
        subscribers=msg.subscribers,
        results_dropped=msg.results_dropped,
        detector_frames=msg.detector_frames,
        tracker_frames=msg.tracker_frames,
        interval=msg.interval or 1,
    )


def stream_info_to_proto(info: StreamInfo) -> pb.StreamInfo:
    msg = pb.StreamInfo(
        stream_id=info.stream_id,
        uri=info.uri,
        owner=info.owner,
        state=_STATE_TO_PROTO[info.state],
        is_live=info.is_live,
        created_at=info.created_at,
        options=stream_options_to_proto(info.options),
        stats=stream_stats_to_proto(info.stats),
    )
    if info.error is not None:
        msg.error = info.error
    if info.full_uri is not None:
        msg.full_uri = info.full_uri
    return msg


def stream_info_from_proto(msg: pb.StreamInfo) -> StreamInfo:
    """Raises ``ValueError`` for ``STATE_UNSPECIFIED`` (a message that never set it)."""
    state = _STATE_FROM_PROTO.get(msg.state)
    if state is None:
        raise ValueError(f"stream state {msg.state} is not running, finished, stopped or failed")
    return StreamInfo(
        stream_id=msg.stream_id,
        uri=msg.uri,
        owner=msg.owner,
        state=state,
        is_live=msg.is_live,
        created_at=msg.created_at,
        options=stream_options_from_proto(msg.options),
        stats=stream_stats_from_proto(msg.stats),
        error=msg.error if msg.HasField("error") else None,
        full_uri=msg.full_uri if msg.HasField("full_uri") else None,
    )


def stream_list_to_proto(streams: list[StreamInfo]) -> pb.ListStreamsResponse:
    return pb.ListStreamsResponse(streams=[stream_info_to_proto(s) for s in streams])


def stream_list_from_proto(msg: pb.ListStreamsResponse) -> list[StreamInfo]:
    return [stream_info_from_proto(s) for s in msg.streams]


def frame_record_to_proto(record: Mapping[str, Any], results_dropped: int = 0) -> pb.FrameResult:
    """One JSONL frame record (``FrameResult.to_record()``, as a stream's subscribers get
    it) → a ``FrameResult`` message. Tracks become detections with their ``track_id``
    (a negative id, an untracked object, is left absent); ``predicted`` is set on a frame
    the detector skipped."""
    detections = []
    for track in record["tracks"]:
        x1, y1, x2, y2 = track["xyxy"]
        det = pb.Detection(
            box=pb.Box(x1=x1, y1=y1, x2=x2, y2=y2),
            confidence=track["confidence"],
            class_id=track["class_id"],
            class_name=track["class_name"],
        )
        track_id = track.get("track_id")
        if track_id is not None and track_id >= 0:
            det.track_id = track_id
        detections.append(det)
    msg = pb.FrameResult(
        source_id=record["source_id"],
        frame_index=record["frame_index"],
        timestamp_s=record["timestamp_s"],
        detections=detections,
        results_dropped=results_dropped,
        predicted=bool(record.get("predicted", False)),
    )
    e2e = record.get("end_to_end_ms")
    if e2e is not None:
        msg.end_to_end_ms = e2e
    return msg
