from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("box", "confidence", "class_id", "class_name", "track_id", "label", "label_confidence", "label_votes")
    BOX_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_VOTES_FIELD_NUMBER: _ClassVar[int]
    box: Box
    confidence: float
    class_id: int
    class_name: str
    track_id: int
    label: str
    label_confidence: float
    label_votes: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., confidence: _Optional[float] = ..., class_id: _Optional[int] = ..., class_name: _Optional[str] = ..., track_id: _Optional[int] = ..., label: _Optional[str] = ..., label_confidence: _Optional[float] = ..., label_votes: _Optional[int] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("image", "content_type", "conf", "classes", "session_id", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    content_type: str
    conf: float
    classes: _containers.RepeatedScalarFieldContainer[str]
    session_id: str
    model: str
    def __init__(self, image: _Optional[bytes] = ..., content_type: _Optional[str] = ..., conf: _Optional[float] = ..., classes: _Optional[_Iterable[str]] = ..., session_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("model", "image", "detections", "session_id", "timings_ms")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: ImageSize
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    session_id: str
    timings_ms: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[ImageSize, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., session_id: _Optional[str] = ..., timings_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ImageData(_message.Message):
    __slots__ = ("data", "content_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class BatchDetectRequest(_message.Message):
    __slots__ = ("images", "conf", "classes", "model")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageData]
    conf: float
    classes: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, images: _Optional[_Iterable[_Union[ImageData, _Mapping]]] = ..., conf: _Optional[float] = ..., classes: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("image", "detections")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    image: ImageSize
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    def __init__(self, image: _Optional[_Union[ImageSize, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ...) -> None: ...

class BatchDetectResponse(_message.Message):
    __slots__ = ("model", "results", "timings_ms")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    results: _containers.RepeatedCompositeFieldContainer[BatchItem]
    timings_ms: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "family", "path", "input_width", "input_height", "num_classes", "providers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    family: str
    path: str
    input_width: int
    input_height: int
    num_classes: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., family: _Optional[str] = ..., path: _Optional[str] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., num_classes: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "path", "conf")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    conf: float
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., conf: _Optional[float] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelReload(_message.Message):
    __slots__ = ("name", "changed", "version", "previous_version", "alias", "sha256", "swap_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SWAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    changed: bool
    version: int
    previous_version: int
    alias: str
    sha256: str
    swap_seconds: float
    def __init__(self, name: _Optional[str] = ..., changed: _Optional[bool] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., alias: _Optional[str] = ..., sha256: _Optional[str] = ..., swap_seconds: _Optional[float] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "model_loaded", "detail")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[HealthResponse.Status]
        STATUS_OK: _ClassVar[HealthResponse.Status]
        STATUS_LOADING: _ClassVar[HealthResponse.Status]
        STATUS_FAILED: _ClassVar[HealthResponse.Status]
    STATUS_UNSPECIFIED: HealthResponse.Status
    STATUS_OK: HealthResponse.Status
    STATUS_LOADING: HealthResponse.Status
    STATUS_FAILED: HealthResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOADED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: HealthResponse.Status
    model_loaded: bool
    detail: str
    def __init__(self, status: _Optional[_Union[HealthResponse.Status, str]] = ..., model_loaded: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class StreamScheduler(_message.Message):
    __slots__ = ("latency_budget_ms", "max_interval")
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    latency_budget_ms: float
    max_interval: int
    def __init__(self, latency_budget_ms: _Optional[float] = ..., max_interval: _Optional[int] = ...) -> None: ...

class StreamOptions(_message.Message):
    __slots__ = ("tracker", "conf", "realtime", "detect_every", "scheduler")
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    REALTIME_FIELD_NUMBER: _ClassVar[int]
    DETECT_EVERY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    tracker: str
    conf: float
    realtime: bool
    detect_every: int
    scheduler: StreamScheduler
    def __init__(self, tracker: _Optional[str] = ..., conf: _Optional[float] = ..., realtime: _Optional[bool] = ..., detect_every: _Optional[int] = ..., scheduler: _Optional[_Union[StreamScheduler, _Mapping]] = ...) -> None: ...

class StartStreamRequest(_message.Message):
    __slots__ = ("uri", "tracker", "conf", "realtime", "detect_every", "scheduler")
    URI_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    REALTIME_FIELD_NUMBER: _ClassVar[int]
    DETECT_EVERY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    uri: str
    tracker: str
    conf: float
    realtime: bool
    detect_every: int
    scheduler: StreamScheduler
    def __init__(self, uri: _Optional[str] = ..., tracker: _Optional[str] = ..., conf: _Optional[float] = ..., realtime: _Optional[bool] = ..., detect_every: _Optional[int] = ..., scheduler: _Optional[_Union[StreamScheduler, _Mapping]] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("frames_read", "frames_processed", "frames_dropped", "frames_corrupt", "frames_failed", "reconnects", "fps", "p50_end_to_end_ms", "p99_end_to_end_ms", "subscribers", "results_dropped", "detector_frames", "tracker_frames", "interval")
    FRAMES_READ_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FAILED_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    P50_END_TO_END_MS_FIELD_NUMBER: _ClassVar[int]
    P99_END_TO_END_MS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FRAMES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    frames_read: int
    frames_processed: int
    frames_dropped: int
    frames_corrupt: int
    frames_failed: int
    reconnects: int
    fps: float
    p50_end_to_end_ms: float
    p99_end_to_end_ms: float
    subscribers: int
    results_dropped: int
    detector_frames: int
    tracker_frames: int
    interval: int
    def __init__(self, frames_read: _Optional[int] = ..., frames_processed: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., frames_corrupt: _Optional[int] = ..., frames_failed: _Optional[int] = ..., reconnects: _Optional[int] = ..., fps: _Optional[float] = ..., p50_end_to_end_ms: _Optional[float] = ..., p99_end_to_end_ms: _Optional[float] = ..., subscribers: _Optional[int] = ..., results_dropped: _Optional[int] = ..., detector_frames: _Optional[int] = ..., tracker_frames: _Optional[int] = ..., interval: _Optional[int] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("stream_id", "uri", "state", "is_live", "created_at", "options", "stats", "error", "owner", "full_uri")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[StreamInfo.State]
        STATE_RUNNING: _ClassVar[StreamInfo.State]
        STATE_FINISHED: _ClassVar[StreamInfo.State]
        STATE_STOPPED: _ClassVar[StreamInfo.State]
        STATE_FAILED: _ClassVar[StreamInfo.State]
    STATE_UNSPECIFIED: StreamInfo.State
    STATE_RUNNING: StreamInfo.State
    STATE_FINISHED: StreamInfo.State
    STATE_STOPPED: StreamInfo.State
    STATE_FAILED: StreamInfo.State
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IS_LIVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FULL_URI_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    uri: str
    state: StreamInfo.State
    is_live: bool
    created_at: float
    options: StreamOptions
    stats: StreamStats
    error: str
    owner: str
    full_uri: str
    def __init__(self, stream_id: _Optional[str] = ..., uri: _Optional[str] = ..., state: _Optional[_Union[StreamInfo.State, str]] = ..., is_live: _Optional[bool] = ..., created_at: _Optional[float] = ..., options: _Optional[_Union[StreamOptions, _Mapping]] = ..., stats: _Optional[_Union[StreamStats, _Mapping]] = ..., error: _Optional[str] = ..., owner: _Optional[str] = ..., full_uri: _Optional[str] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ...) -> None: ...

class StreamRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("source_id", "frame_index", "timestamp_s", "detections", "end_to_end_ms", "results_dropped", "predicted")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    END_TO_END_MS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    frame_index: int
    timestamp_s: float
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    end_to_end_ms: float
    results_dropped: int
    predicted: bool
    def __init__(self, source_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., timestamp_s: _Optional[float] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., end_to_end_ms: _Optional[float] = ..., results_dropped: _Optional[int] = ..., predicted: _Optional[bool] = ...) -> None: ...
