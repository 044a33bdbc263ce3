"""REST schemas ↔ protobuf messages: a round trip either way gives back an equal value."""

from __future__ import annotations

import pytest

pytest.importorskip("google.protobuf")
pytest.importorskip("pydantic")

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tapetum.serve import mapping
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
)
from tapetum.serve.streams import StreamInfo, StreamOptions, StreamScheduler, StreamStatsOut

_INT32 = st.integers(min_value=0, max_value=2**31 - 1)
_POS_INT32 = st.integers(min_value=1, max_value=2**31 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=True)
_TEXT = st.text(max_size=20)

boxes = st.builds(Box, x1=_FLOAT, y1=_FLOAT, x2=_FLOAT, y2=_FLOAT)
detections = st.builds(
    DetectionOut,
    box=boxes,
    confidence=st.floats(0.0, 1.0),
    class_id=_INT32,
    class_name=_TEXT,
    track_id=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    label=st.none() | _TEXT,
    label_confidence=st.none() | st.floats(0.0, 1.0),
    label_votes=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
)
sizes = st.builds(ImageSize, width=_POS_INT32, height=_POS_INT32)
timings = st.dictionaries(_TEXT, _FLOAT, max_size=4)
detect_responses = st.builds(
    DetectResponse,
    model=_TEXT,
    image=sizes,
    detections=st.lists(detections, max_size=5),
    session_id=st.none() | _TEXT,
    timings_ms=timings,
)
batch_responses = st.builds(
    BatchDetectResponse,
    model=_TEXT,
    results=st.lists(
        st.builds(BatchItem, image=sizes, detections=st.lists(detections, max_size=3)),
        max_size=3,
    ),
    timings_ms=timings,
)
model_infos = st.builds(
    ModelInfo,
    name=_TEXT,
    path=_TEXT,
    input_width=_POS_INT32,
    input_height=_POS_INT32,
    num_classes=_POS_INT32,
    providers=st.lists(_TEXT, max_size=3),
)
model_lists = st.builds(ModelList, models=st.lists(model_infos, max_size=3))
healths = st.builds(
    Health,
    status=st.sampled_from(["ok", "loading", "failed"]),
    model_loaded=st.booleans(),
    detail=st.none() | _TEXT,
)
_COUNT = st.integers(min_value=0, max_value=2**63 - 1)
_OPT_MS = st.none() | st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
stream_schedulers = st.builds(
    StreamScheduler,
    latency_budget_ms=st.floats(1e-3, 60_000.0),
    max_interval=st.integers(1, 30),
)
stream_options = st.builds(
    StreamOptions,
    tracker=_TEXT,
    conf=st.none() | st.floats(0.0, 1.0),
    realtime=st.booleans(),
    detect_every=st.integers(1, 30),
) | st.builds(
    StreamOptions,
    tracker=_TEXT,
    conf=st.none() | st.floats(0.0, 1.0),
    realtime=st.booleans(),
    scheduler=stream_schedulers,
)
stream_stats = st.builds(
    StreamStatsOut,
    frames_read=_COUNT,
    frames_processed=_COUNT,
    frames_dropped=_COUNT,
    frames_corrupt=_COUNT,
    frames_failed=_COUNT,
    reconnects=_COUNT,
    fps=_FLOAT,
    p50_end_to_end_ms=_OPT_MS,
    p99_end_to_end_ms=_OPT_MS,
    subscribers=_COUNT,
    results_dropped=_COUNT,
    detector_frames=_COUNT,
    tracker_frames=_COUNT,
    interval=st.integers(1, 2**31 - 1),
)
stream_infos = st.builds(
    StreamInfo,
    stream_id=_TEXT,
    uri=_TEXT,
    state=st.sampled_from(["running", "finished", "stopped", "failed"]),
    is_live=st.booleans(),
    created_at=_FLOAT,
    options=stream_options,
    stats=stream_stats,
    error=st.none() | _TEXT,
)
stream_lists = st.lists(stream_infos, max_size=3)

CASES = [
    (detect_responses, mapping.detect_response_to_proto, mapping.detect_response_from_proto),
    (
        batch_responses,
        mapping.batch_detect_response_to_proto,
        mapping.batch_detect_response_from_proto,
    ),
    (model_infos, mapping.model_info_to_proto, mapping.model_info_from_proto),
    (model_lists, mapping.model_list_to_proto, mapping.model_list_from_proto),
    (healths, mapping.health_to_proto, mapping.health_from_proto),
    (stream_options, mapping.stream_options_to_proto, mapping.stream_options_from_proto),
    (stream_stats, mapping.stream_stats_to_proto, mapping.stream_stats_from_proto),
    (stream_infos, mapping.stream_info_to_proto, mapping.stream_info_from_proto),
    (stream_lists, mapping.stream_list_to_proto, mapping.stream_list_from_proto),
]
IDS = [
    "detect",
    "batch",
    "model_info",
    "model_list",
    "health",
    "stream_options",
    "stream_stats",
    "stream_info",
    "stream_list",
]


@pytest.mark.parametrize(("strategy", "to_proto", "from_proto"), CASES, ids=IDS)
def test_pydantic_to_proto_and_back(strategy, to_proto, from_proto) -> None:  # type: ignore[no-untyped-def]
    @given(strategy)
    def check(value: object) -> None:
        assert from_proto(to_proto(value)) == value

    check()


@pytest.mark.parametrize(("strategy", "to_proto", "from_proto"), CASES, ids=IDS)
def test_proto_to_pydantic_and_back(strategy, to_proto, from_proto) -> None:  # type: ignore[no-untyped-def]
    # Messages built from valid schema values, then serialised and parsed, as a client
    # would send them: the wire form must survive pydantic and come back identical.
    @given(strategy)
    def check(value: object) -> None:
        msg = to_proto(value)
        wire = type(msg).FromString(msg.SerializeToString())
        back = to_proto(from_proto(wire))
        assert back == wire
        assert back.SerializeToString(deterministic=True) == wire.SerializeToString(
            deterministic=True
        )

    check()


def test_absent_optionals_stay_none_and_zero_stays_zero() -> None:
    det = DetectionOut(
        box=Box(x1=0, y1=0, x2=1, y2=1), confidence=0.5, class_id=0, class_name="a", track_id=0
    )
    msg = mapping.detection_to_proto(det)
    assert msg.HasField("track_id") and msg.track_id == 0
    assert mapping.detection_from_proto(msg).track_id == 0
    untracked = mapping.detection_to_proto(det.model_copy(update={"track_id": None}))
    assert not untracked.HasField("track_id")
    assert mapping.detection_from_proto(untracked).track_id is None


def test_from_proto_validates_like_rest() -> None:
    with pytest.raises(ValidationError):
        mapping.image_size_from_proto(pb.ImageSize(width=0, height=10))
    with pytest.raises(ValidationError):
        mapping.model_info_from_proto(
            pb.ModelInfo(
                name="m", family="detr", path="p", input_width=1, input_height=1, num_classes=1
            )
        )
    with pytest.raises(ValueError, match="status"):
        mapping.health_from_proto(pb.HealthResponse())


def test_stream_info_state_unspecified_and_zero_latency() -> None:
    with pytest.raises(ValueError, match="state"):
        mapping.stream_info_from_proto(pb.StreamInfo())
    stats = StreamStatsOut(
        frames_read=0,
        frames_processed=0,
        frames_dropped=0,
        frames_corrupt=0,
        frames_failed=0,
        reconnects=0,
        fps=0.0,
        p50_end_to_end_ms=0.0,
        p99_end_to_end_ms=None,
        subscribers=0,
        results_dropped=0,
    )
    msg = mapping.stream_stats_to_proto(stats)
    assert msg.HasField("p50_end_to_end_ms") and not msg.HasField("p99_end_to_end_ms")
    assert mapping.stream_stats_from_proto(msg) == stats


def test_frame_record_to_proto() -> None:
    record = {
        "source_id": "abc",
        "frame_index": 7,
        "timestamp_s": 0.28,
        "tracks": [
            {
                "track_id": 3,
                "class_id": 0,
                "class_name": "person",
                "confidence": 0.9,
                "xyxy": [1.0, 2.0, 30.5, 40.25],
            },
            {
                "track_id": -1,
                "class_id": 2,
                "class_name": "car",
                "confidence": 0.5,
                "xyxy": [0, 0, 1, 1],
            },
        ],
        "end_to_end_ms": 41.2,
    }
    msg = mapping.frame_record_to_proto(record, results_dropped=2)
    assert (msg.source_id, msg.frame_index, msg.timestamp_s) == ("abc", 7, 0.28)
    assert msg.end_to_end_ms == 41.2 and msg.results_dropped == 2
    person, car = msg.detections
    assert person.track_id == 3 and person.box == pb.Box(x1=1.0, y1=2.0, x2=30.5, y2=40.25)
    assert (person.class_name, person.confidence) == ("person", 0.9)
    assert not car.HasField("track_id")
    assert not msg.predicted  # a detector frame's record has no "predicted" key
    del record["end_to_end_ms"]
    assert not mapping.frame_record_to_proto(record).HasField("end_to_end_ms")
    record["predicted"] = True  # the detector skipped the frame
    assert mapping.frame_record_to_proto(record).predicted


def test_start_request_options_defaults_and_refusals() -> None:
    plain = mapping.start_options_from_proto(pb.StartStreamRequest(uri="a.ts"))
    assert plain == StreamOptions()  # bytetrack, every frame, no scheduler
    adaptive = mapping.start_options_from_proto(
        pb.StartStreamRequest(uri="a.ts", scheduler=pb.StreamScheduler(max_interval=3))
    )
    assert adaptive.scheduler == StreamScheduler(latency_budget_ms=100.0, max_interval=3)
    with pytest.raises(ValidationError, match="not both"):
        mapping.start_options_from_proto(
            pb.StartStreamRequest(uri="a.ts", detect_every=2, scheduler=pb.StreamScheduler())
        )
    with pytest.raises(ValidationError, match="max_interval"):
        mapping.start_options_from_proto(
            pb.StartStreamRequest(uri="a.ts", scheduler=pb.StreamScheduler(max_interval=0))
        )
