"""A detector that runs on another Tapetum node: ``RemoteDetector`` calls its gRPC API.

It satisfies the servers' ``DetectorLike`` protocol (``class_names``, ``input_hw``,
``model.path`` / ``model.providers``, ``__call__(images) -> list[Detections]``), so a node
can serve REST and gRPC with its inference done elsewhere. Images travel as JPEG (quality
90) in one ``DetectBatch`` call per ``max_batch`` images; answers come back as
array-backed :class:`~tapetum.core.detections.Detections` in source pixels.

Every RPC runs through a :class:`~tapetum.core.breaker.CircuitBreaker` (``.breaker``, for
metrics): DEADLINE_EXCEEDED, UNAVAILABLE (nothing listening, connection reset) and socket
errors count as failures; after ``failure_threshold`` of them in a row the breaker opens
and calls raise :class:`~tapetum.core.breaker.CircuitOpenError` at once, without touching
the network, until ``reset_timeout_s`` has passed and one trial call may go through. Any
other status means the node answered (a bad key, a rejected image): it is no failure of
availability, so it counts as a success and raises :class:`RemoteBackendError`.

Both errors are ``TapetumError``: the REST app answers them with 503
``service_unavailable`` and the gRPC server with UNAVAILABLE.

The upstream key needs the ``read`` scope (model info) and ``infer`` (detection).

Example:
    >>> remote = RemoteDetector("gpu-node:50051", api_key="tpk_...")   # doctest: +SKIP
    >>> detections = remote([cv2.imread("bus.jpg")])[0]                 # doctest: +SKIP
    >>> remote.breaker.state                                            # doctest: +SKIP
    <BreakerState.CLOSED: 0>
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from tapetum.core.breaker import CircuitBreaker, CircuitOpenError
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError, ModelLoadError, RemoteBackendError
from tapetum.serve.tls import grpc_channel_credentials, is_loopback_host

if TYPE_CHECKING:
    import grpc

    from tapetum.serve.grpc._gen import tapetum_pb2 as pb

__all__ = ["RemoteBackendError", "RemoteDetector", "RemoteModel", "detections_from_proto"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")

#: JPEG quality of the uploads: visually lossless for detection, ~10x smaller than PNG.
JPEG_QUALITY = 90


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """The upstream model, as the servers' model info needs it (``ModelInfo.path``,
    ``.providers``): the node's own model path and execution providers."""

    name: str
    path: Path
    providers: list[str]


@dataclass(frozen=True, slots=True)
class _UpstreamInfo:
    model: RemoteModel
    input_hw: tuple[int, int]
    class_names: tuple[str, ...]


def detections_from_proto(detections: Sequence[pb.Detection]) -> Detections:
    """One image's proto detections → :class:`Detections` (boxes in the image's pixels).

    Protobuf has no bulk accessor for repeated messages; each field is read into a
    preallocated array with ``np.fromiter`` (no intermediate list of objects).
    """
    n = len(detections)
    if n == 0:
        return Detections.empty()
    xyxy = np.fromiter(
        (v for d in detections for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)),
        np.float32,
        count=4 * n,
    ).reshape(n, 4)
    confidence = np.fromiter((d.confidence for d in detections), np.float32, count=n)
    class_id = np.fromiter((d.class_id for d in detections), np.int64, count=n)
    return Detections(xyxy=xyxy, confidence=confidence, class_id=class_id)


def _encode_jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ConfigError(f"cannot JPEG-encode an image of shape {image.shape}")
    return bytes(buf)


def _parse_target(target: str) -> tuple[str, bool]:
    """``host:port``, ``grpc://host:port`` (cleartext) or ``grpcs://host:port`` (TLS) →
    (address, TLS by the scheme)."""
    tls = target.startswith("grpcs://")
    address = target.removeprefix("grpcs://") if tls else target.removeprefix("grpc://")
    if not address or "/" in address or "://" in address:
        raise ConfigError(
            f"remote backend {target!r}: give host:port, grpc://host:port or grpcs://host:port"
        )
    return address, tls


def _host_of(address: str) -> str:
    if address.startswith("["):  # [::1]:50051
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] or address


class RemoteDetector:
    """A detector whose inference runs on another Tapetum node, over gRPC.

    Args:
        target: the node's gRPC API: ``grpcs://host:port`` (TLS), ``grpc://host:port`` or
            ``host:port`` (cleartext unless ``ca_file`` is given).
        api_key: sent as ``authorization: Bearer <key>``; needs ``read`` and ``infer``.
            None: the node runs without auth.
        ca_file: PEM CA bundle that signed the node's certificate (a private CA or a
            self-signed certificate); implies TLS. None with ``grpcs://``: the system roots.
        allow_insecure: send ``api_key`` over cleartext to a node that is not on loopback
            (refused otherwise: anyone on the path could copy the key).
        timeout_s: deadline of each RPC; a call that misses it counts as a breaker failure.
        breaker: the circuit breaker of this node (default: 5 failures, 30 s pause).
        conf_threshold: score threshold sent with every call (None: the node's default).
            Keep it at the local server's floor (``min_conf_threshold``, 0.1): the local
            server filters requests above it, and ByteTrack sessions need the low boxes.
        model_name: the node's model (``DescribeModel``); None: the only one it lists.
        class_names: the model's class names; None: COCO-80, checked against the node's
            class count (the gRPC API sends counts, not names).
        max_batch: most images per ``DetectBatch`` call (the node's ``max_batch``).
        recommended_workers: concurrent calls the local server should allow.
        channel_options: extra gRPC channel options.
        stub: a ``DetectorStub``-like object to call instead of one on a new channel
            (tests).

    The node's model info is fetched at construction; if the node is not up yet, on the
    first call or attribute access that needs it (``class_names``, ``input_hw``,
    ``model``), which raises :class:`CircuitOpenError` or :class:`RemoteBackendError`
    until the node answers.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None,
        timeout_s: float = 2.0,
        breaker: CircuitBreaker | None = None,
        *,
        conf_threshold: float | None = 0.1,
        model_name: str | None = None,
        class_names: Sequence[str] | None = None,
        max_batch: int = 16,
        recommended_workers: int = 4,
        channel_options: Sequence[tuple[str, Any]] = (),
        stub: Any | None = None,
        ca_file: Path | None = None,
        allow_insecure: bool = False,
    ) -> None:
        import grpc

        from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc

        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        if conf_threshold is not None and not 0.0 <= conf_threshold <= 1.0:
            raise ConfigError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        if max_batch < 1 or recommended_workers < 1:
            raise ConfigError("max_batch and recommended_workers must be ≥ 1")
        self.target, self.tls = _parse_target(target)
        self.tls = self.tls or ca_file is not None
        if (
            api_key
            and not self.tls
            and not allow_insecure
            and not is_loopback_host(_host_of(self.target))
        ):
            raise ConfigError(
                f"remote backend {target!r}: refusing to send the API key in cleartext to a "
                "host that is not loopback; use grpcs:// (with ca_file for a private CA) or "
                "allow_insecure"
            )
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker(f"remote:{self.target}")
        self.conf_threshold = conf_threshold
        self.model_name = model_name
        self.max_batch = max_batch
        self.recommended_workers = recommended_workers
        self._class_names = tuple(class_names) if class_names is not None else None
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        # Reconnect backoff capped below the breaker's pause: when a half-open trial comes,
        # the channel has retried the connection, so the trial sees the node's real state
        # and not a cached TRANSIENT_FAILURE from an old outage.
        max_backoff_ms = int(max(100.0, min(5.0, self.breaker.reset_timeout_s / 2) * 1000))
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", min(1000, max_backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", min(1000, max_backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *channel_options,
        ]
        self._grpc = grpc
        self._channel = (
            grpc.secure_channel(self.target, grpc_channel_credentials(ca_file), options=options)
            if self.tls
            else grpc.insecure_channel(self.target, options=options)
        )
        self._stub = stub or pb_grpc.DetectorStub(self._channel)  # type: ignore[no-untyped-call]
        self._info: _UpstreamInfo | None = None
        self._info_lock = threading.Lock()
        try:
            self._upstream()
        except CircuitOpenError as exc:
            log.warning("inference node %s not described yet: %s", self.target, exc)
        except RemoteBackendError as exc:
            if not exc.transient:  # a bad key or model name: say so at startup
                raise
            # The node may come up later: described on first use.
            log.warning("inference node %s not described yet: %s", self.target, exc)

    # ------------------------------------------------------------------ model info
    @property
    def class_names(self) -> tuple[str, ...]:
        return self._upstream().class_names

    @property
    def input_hw(self) -> tuple[int, int]:
        """The node's model input (height, width) in pixels."""
        return self._upstream().input_hw

    @property
    def model(self) -> RemoteModel:
        return self._upstream().model

    def _upstream(self) -> _UpstreamInfo:
        info = self._info
        if info is not None:
            return info
        with self._info_lock:
            if self._info is None:
                self._info = self._describe()
                log.info(
                    "inference node %s: model %s, input %dx%d, %d classes",
                    self.target,
                    self._info.model.name,
                    self._info.input_hw[1],
                    self._info.input_hw[0],
                    len(self._info.class_names),
                )
            return self._info

    def _describe(self) -> _UpstreamInfo:
        from tapetum.serve.grpc._gen import tapetum_pb2 as pb

        if self.model_name is not None:
            name = self.model_name
            msg = self._rpc(self._stub.DescribeModel, pb.DescribeModelRequest(name=name))
        else:
            listed = self._rpc(self._stub.ListModels, pb.ListModelsRequest())
            if len(listed.models) != 1:
                served = [m.name for m in listed.models]
                raise ModelLoadError(
                    f"inference node {self.target} serves {len(served)} models {served}; "
                    "name one (model_name)"
                )
            msg = listed.models[0]
        from tapetum.detect.classes import COCO80

        names = self._class_names if self._class_names is not None else COCO80
        if msg.num_classes != len(names):
            raise ModelLoadError(
                f"inference node {self.target}: model {msg.name!r} has {msg.num_classes} "
                f"classes, the class names given have {len(names)}"
            )
        return _UpstreamInfo(
            model=RemoteModel(name=msg.name, path=Path(msg.path), providers=list(msg.providers)),
            input_hw=(int(msg.input_height), int(msg.input_width)),
            class_names=names,
        )

    # ------------------------------------------------------------------ detection
    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect objects in BGR uint8 images on the node; boxes in each image's pixels.

        Raises:
            CircuitOpenError: the node failed repeatedly; no call was made.
            RemoteBackendError: the node refused the call, or did not answer in time
                (that also counts towards opening the breaker).
        """
        from tapetum.serve.grpc._gen import tapetum_pb2 as pb

        if not images:
            return []
        self._upstream()  # a node that was down at construction is described now
        out: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            request = pb.BatchDetectRequest(
                images=[
                    pb.ImageData(data=_encode_jpeg(img), content_type="image/jpeg") for img in chunk
                ]
            )
            if self.conf_threshold is not None:
                request.conf = self.conf_threshold
            response = self._rpc(self._stub.DetectBatch, request)
            if len(response.results) != len(chunk):
                raise RemoteBackendError(
                    self.target,
                    "OK",
                    f"{len(response.results)} results for {len(chunk)} images",
                    None,
                )
            out.extend(detections_from_proto(item.detections) for item in response.results)
        return out

    # ------------------------------------------------------------------ transport
    def _rpc(self, method: Callable[..., _R], request: object) -> _R:
        """One unary call through the breaker, with the deadline and the key."""
        grpc = self._grpc
        self.breaker.acquire()  # raises CircuitOpenError while open: no network
        try:
            response = method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            detail = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
            error = self._rpc_error(exc, code, detail)
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                self.breaker.record_failure(f"{code.name}: {detail}")
            else:
                self.breaker.record_success()  # the node is up; the call itself was refused
            raise error from exc
        except OSError as exc:
            self.breaker.record_failure(exc)
            raise RemoteBackendError(self.target, "CONNECTION", str(exc), None) from exc
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return response

    def _rpc_error(
        self, exc: grpc.RpcError, code: grpc.StatusCode, detail: str
    ) -> RemoteBackendError:
        trailing: Sequence[tuple[str, str | bytes]] = (
            exc.trailing_metadata() if isinstance(exc, self._grpc.Call) else None
        ) or ()
        error_code: str | None = None
        for key, value in trailing:
            if key == "tapetum-error-code":
                error_code = value if isinstance(value, str) else value.decode()
        return RemoteBackendError(self.target, code.name, detail, error_code)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the channel; calls in flight fail with CANCELLED."""
        self._channel.close()

    def __enter__(self) -> RemoteDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
