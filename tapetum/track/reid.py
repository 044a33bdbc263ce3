"""Person re-identification embeddings for appearance-aware tracking.

:class:`ReidEmbedder` runs an OSNet-style ONNX embedder (torchreid export: input
``[B, 3, 256, 128]`` float32 RGB, ``/255`` then ImageNet mean/std; output ``[B, D]``) on
the crops of one frame's detections in a single batched ONNX Runtime call and returns
L2-normalised embeddings, so the cosine similarity of two crops is a dot product.

Exports with the batch axis fixed at 1 are made dynamic when loaded (see
:class:`tapetum.detect.runtime.OnnxModel`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, UInt8Array
from tapetum.core.detections import Detections
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.errors import ModelLoadError

log = logging.getLogger(__name__)


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
        #: Length D of one embedding.
        self.embedding_dim = int(out[1])
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
        batch = self.preprocess(image, xyxy)
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
