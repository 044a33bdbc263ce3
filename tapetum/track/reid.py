"""Person re-identification embeddings for appearance-aware tracking.

:class:`ReidEmbedder` runs an OSNet-style ONNX embedder (torchreid export: input
``[B, 3, 256, 128]`` float32 RGB, ``/255`` then ImageNet mean/std; output ``[B, D]``) on
the crops of one frame's detections in a single batched ONNX Runtime call and returns
L2-normalised embeddings, so the cosine similarity of two crops is a dot product.

Exports with the batch axis fixed at 1 are made dynamic when loaded (see
:class:`tapetum.detect.runtime.OnnxModel`). :class:`CrossStreamEmbedder` shares one
model between the streams of a pipeline and runs the crops of all their frames at the
same moment in one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, UInt8Array
from tapetum.core.detections import Detections
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.errors import ModelLoadError

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the trackers and the identity stage need of an appearance model."""

    @property
    def embedding_dim(self) -> int:
        """Length D of one embedding."""
        ...

    def embed(self, image: UInt8Array, xyxy: npt.ArrayLike) -> Float32Array:
        """(N, D) unit embeddings of the boxes ``xyxy`` (pixels) of the BGR ``image``."""
        ...


#: ImageNet channel statistics in RGB order, on the 0-1 scale (torchreid's defaults).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class ReidEmbedder:
    """Appearance embeddings of detected people, one batched model call per frame.

    Args:
        model_path: the ONNX embedder (e.g. ``osnet_x0_25_msmt17.onnx``).
        threads: ONNX Runtime intra-op threads (0 = all cores this process may use).
            Tracking runs after detection on the same cores; pin it deliberately.
        runtime: full runtime options; overrides ``threads`` when given.

    One instance may serve the trackers of several streams from several threads: it holds
    no per-call state, and ONNX Runtime sessions accept concurrent runs.

    Example:
        >>> embedder = ReidEmbedder("osnet_x0_25_msmt17.onnx", threads=1)  # doctest: +SKIP
        >>> detections = embedder(detections, frame.image)                 # doctest: +SKIP
        >>> detections.embeddings.shape                                    # doctest: +SKIP
        (35, 512)
    """

    def __init__(
        self,
        model_path: str | Path,
        threads: int = 0,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(
                f"re-identification model not found: {path} (pass the path to an OSNet "
                "ONNX export such as osnet_x0_25_msmt17.onnx)"
            )
        options = runtime or RuntimeOptions(intra_op_threads=threads, workers=1)
        self.model = OnnxModel(path, options)
        self.path = path
        out = self.model.output_shape()
        if len(out) != 2 or not isinstance(out[1], int):
            raise ModelLoadError(
                f"{path}: output shape {out} is not an embedding [B, D] (expected an "
                "OSNet-style re-identification export)"
            )
        self._dim = int(out[1])
        #: Crop size (height, width) in pixels the model takes.
        self.input_hw: tuple[int, int] = self.model.input_hw
        # (x/255 - mean)/std of every uint8 value, per channel: normalising a crop is then
        # one table lookup per pixel. Rows are in the frame's BGR order.
        std = np.asarray(IMAGENET_STD_RGB[::-1], np.float32).reshape(3, 1)
        mean = np.asarray(IMAGENET_MEAN_RGB[::-1], np.float32).reshape(3, 1)
        values = np.arange(256, dtype=np.float32).reshape(1, 256)
        self._lut_bgr: Float32Array = ((values / 255.0 - mean) / std).astype(np.float32)
        if self.model.max_batch == 1:
            log.warning(
                "%s: batch axis could not be made dynamic; crops run one at a time", path.name
            )

    @property
    def embedding_dim(self) -> int:
        """Length D of one embedding."""
        return self._dim

    def preprocess(self, image: UInt8Array, xyxy: npt.ArrayLike) -> Float32Array:
        """Crop, resize and normalise every box.

        Args:
            image: (H, W, 3) uint8 BGR frame.
            xyxy: (N, 4) boxes in pixels of ``image``; clipped to the frame, and a box
                with no pixel inside gets the nearest one-pixel crop.

        Returns:
            (N, 3, h, w) float32 model input, RGB, normalised.
        """
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        n = boxes.shape[0]
        h_img, w_img = image.shape[:2]
        out_h, out_w = self.input_hw
        if n == 0:
            return np.empty((0, 3, out_h, out_w), np.float32)
        # Integer crop windows, all at once: at least one pixel, inside the frame.
        x1 = np.clip(np.floor(boxes[:, 0]), 0, w_img - 1).astype(np.int64)
        y1 = np.clip(np.floor(boxes[:, 1]), 0, h_img - 1).astype(np.int64)
        x2 = np.maximum(np.clip(np.ceil(boxes[:, 2]), 0, w_img).astype(np.int64), x1 + 1)
        y2 = np.maximum(np.clip(np.ceil(boxes[:, 3]), 0, h_img).astype(np.int64), y1 + 1)
        crops = np.empty((n, out_h, out_w, 3), np.uint8)
        windows = zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist(), strict=True)
        for i, (a, b, c, d) in enumerate(windows):
            cv2.resize(
                image[b:d, a:c], (out_w, out_h), dst=crops[i], interpolation=cv2.INTER_LINEAR
            )
        batch = np.empty((n, 3, out_h, out_w), np.float32)
        for bgr_channel in range(3):  # NHWC BGR uint8 -> NCHW RGB float32
            batch[:, 2 - bgr_channel] = self._lut_bgr[bgr_channel][crops[..., bgr_channel]]
        return batch

    def embed(self, image: UInt8Array, xyxy: npt.ArrayLike) -> Float32Array:
        """(N, D) float32 L2-normalised embeddings of the boxes ``xyxy`` of ``image``.

        Args:
            image: (H, W, 3) uint8 BGR frame.
            xyxy: (N, 4) boxes in pixels of ``image``.
        """
        return self.run(self.preprocess(image, xyxy))

    def run(self, batch: Float32Array) -> Float32Array:
        """(N, D) unit embeddings of a preprocessed (N, 3, h, w) batch."""
        if batch.shape[0] == 0:
            return np.empty((0, self.embedding_dim), np.float32)
        raw = np.asarray(self.model.run(batch), np.float32).reshape(batch.shape[0], -1)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        # Guard: an all-zero output (possible after a final ReLU) stays zero, not NaN.
        embeddings: Float32Array = raw / np.maximum(norm, 1e-12)
        return embeddings

    def __call__(self, detections: Detections, image: UInt8Array) -> Detections:
        """Set ``detections.embeddings`` to the embeddings of its boxes and return it."""
        detections.embeddings = self.embed(image, detections.xyxy)
        return detections


@dataclass(eq=False)
class _Request:
    batch: Float32Array
    result: Float32Array | None = None
    error: BaseException | None = None
    done: bool = False
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.batch.shape[0])


class CrossStreamEmbedder:
    """One :class:`ReidEmbedder` shared by the streams of a pipeline, batching their crops.

    Each stream's tracking thread calls :meth:`embed` for its frame. Crops are cut and
    normalised in the caller's thread; the first caller of a round then waits up to
    ``max_wait_ms`` for the other ``streams - 1`` (or ``max_batch`` crops) and runs the
    model once for all of them, outside the lock, while the others wait for their rows.
    Streams of one pipeline move in step (their frames are detected in one batch), so a
    round usually fills without waiting the full ``max_wait_ms``.

    Args:
        embedder: the model.
        streams: callers expected per round (the pipeline's stream count).
        max_wait_ms: longest a round's first caller waits for the others.
        max_batch: crops that close a round early.

    Example:
        >>> shared = CrossStreamEmbedder(ReidEmbedder("osnet.onnx"), streams=2)  # doctest: +SKIP
        >>> shared.embed(frame.image, boxes).shape  # doctest: +SKIP
        (3, 512)
    """

    def __init__(
        self,
        embedder: ReidEmbedder,
        streams: int,
        max_wait_ms: float = 3.0,
        max_batch: int = 64,
    ) -> None:
        if streams < 1 or max_batch < 1 or max_wait_ms < 0:
            raise ModelLoadError(
                f"CrossStreamEmbedder needs streams ≥ 1, max_batch ≥ 1 and max_wait_ms ≥ 0, "
                f"got {streams}, {max_batch}, {max_wait_ms}"
            )
        self.embedder = embedder
        self.streams = streams
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        #: Model calls and crops embedded so far (crops per call = batching achieved).
        self.calls = 0
        self.crops = 0

    @property
    def embedding_dim(self) -> int:
        return self.embedder.embedding_dim

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.embedder.input_hw

    def embed(self, image: UInt8Array, xyxy: npt.ArrayLike) -> Float32Array:
        """(N, D) unit embeddings of the boxes of ``image``, computed in a shared batch."""
        request = _Request(self.embedder.preprocess(image, xyxy))
        if request.rows == 0:
            return np.empty((0, self.embedding_dim), np.float32)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                self._gather()
                work, self._pending = self._pending, []
                self._cond.release()
                try:
                    self._run(work)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _gather(self) -> None:
        """Wait (lock held, released while waiting) until the round is full or due."""
        deadline = time.monotonic() + self.max_wait_s
        while (
            len(self._pending) < self.streams
            and sum(r.rows for r in self._pending) < self.max_batch
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _run(self, work: list[_Request]) -> None:
        try:
            out = self.embedder.run(np.concatenate([r.batch for r in work]))
            self.calls += 1
            self.crops += out.shape[0]
            start = 0
            for r in work:
                r.result = out[start : start + r.rows]
                start += r.rows
        except BaseException as exc:  # every waiting stream gets the error, not a hang
            for r in work:
                r.error = exc
        finally:
            for r in work:
                r.done = True

    def __call__(self, detections: Detections, image: UInt8Array) -> Detections:
        """Set ``detections.embeddings`` to the embeddings of its boxes and return it."""
        detections.embeddings = self.embed(image, detections.xyxy)
        return detections
