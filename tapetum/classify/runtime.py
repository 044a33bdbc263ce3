"""An ONNX image classifier on ONNX Runtime: crops in, class probabilities out.

Any model with one NCHW image input and one output of one score vector per image works:
ImageNet-style exports (logits or softmax over N classes, e.g. ``tapetum export
efficientnet_lite0``) and Ultralytics ``-cls`` exports. The session is the detector's
:class:`~tapetum.detect.runtime.OnnxModel` (same providers, fallback, thread settings and
batch-axis repair); the crop contract comes from the file's metadata
(:func:`~tapetum.classify.spec.classifier_meta`) or is given.

On load the model runs once on a batch of two: an output that is not one vector per image,
or whose width differs from the class names, is a :class:`~tapetum.errors.ClassifierError`
there, not a crash mid-stream.

Example:
    >>> clf = OnnxClassifier("efficientnet_lite0.onnx")          # doctest: +SKIP
    >>> probs, valid = clf.classify(image, boxes)                  # doctest: +SKIP
    >>> clf.class_names[int(probs[0].argmax())]                    # doctest: +SKIP
    'trolleybus'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import BoolArray, Float32Array, UInt8Array
from tapetum.classify.crops import crop_batch
from tapetum.classify.spec import ClassifierSpec, OutputKind, classifier_meta
from tapetum.detect.providers import SessionFactory
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.detect.spec import read_onnx_metadata
from tapetum.errors import ClassifierError

log = logging.getLogger(__name__)

__all__ = ["OnnxClassifier", "softmax"]


def softmax(logits: Float32Array) -> Float32Array:
    """Row-wise softmax of (M, K) scores, stable for large logits."""
    shifted: Float32Array = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class OnnxClassifier:
    """A crop classifier.

    Args:
        path: the ONNX file.
        spec: the crop contract; None = the file's metadata (Tapetum's block or
            Ultralytics'), else ImageNet's (RGB, ÷255, mean/std, stretch) with a warning.
        runtime: providers and threads (default: one intra-op thread, one worker: the
            classifier shares the CPU with the detector).
        class_names: names to use instead of the file's (checked against the output
            width).
        session_factory: replaces ORT's session constructor (tests).

    Attributes:
        class_names: one name per output column.
        spec: the crop contract in use.
        output_kind: what the raw output holds (logits are turned into probabilities).

    Raises:
        ModelLoadError: the file is missing or not an ONNX model with one image input.
        ClassifierError: the file is a detector, its output is not one vector per image,
            or the class names do not match its width.
    """

    def __init__(
        self,
        path: str | Path,
        spec: ClassifierSpec | None = None,
        runtime: RuntimeOptions | None = None,
        *,
        class_names: Sequence[str] | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.path = Path(path)
        declared = classifier_meta(read_onnx_metadata(self.path)) if self.path.is_file() else None
        if spec is None and declared is not None:
            spec = declared[0]
        self.model = OnnxModel(
            self.path,
            runtime or RuntimeOptions(intra_op_threads=1, workers=1),
            session_factory=session_factory,
            input_hw=spec.input_hw if spec is not None else None,
        )
        if spec is None:
            log.warning(
                "%s carries no preprocessing metadata: assuming ImageNet's (RGB, /255, "
                "mean/std, stretched crops at %s)",
                self.path.name,
                self.model.input_hw,
            )
            spec = ClassifierSpec.imagenet(self.model.input_hw, output=None)
        if spec.input_hw != self.model.input_hw:
            spec = spec.with_input_hw(self.model.input_hw)
        width, kind = self._probe(spec)
        names = (
            tuple(class_names)
            if class_names is not None
            else declared[1]
            if declared is not None and declared[1]
            else tuple(f"class{i}" for i in range(width))
        )
        if len(names) != width:
            raise ClassifierError(
                f"{self.path}: {len(names)} class names for an output of {width} scores"
            )
        self.spec = spec
        self.output_kind = spec.output or kind
        self.class_names: tuple[str, ...] = names

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.input_hw

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _probe(self, spec: ClassifierSpec) -> tuple[int, OutputKind]:
        """Run a batch of two noise images: the output width, and what it holds."""
        rng = np.random.default_rng(0)
        x = rng.normal(0.0, 1.0, (2, 3, *spec.input_hw)).astype(np.float32)
        try:
            out = self.model.run(x)
        except Exception as exc:
            raise ClassifierError(f"{self.path}: the model fails on a test batch: {exc}") from exc
        vectors = _as_vectors(np.asarray(out), 2)
        if vectors is None:
            raise ClassifierError(
                f"{self.path}: output {self.model.output_name} has shape "
                f"{list(np.shape(out))} for 2 images; a classifier gives one score vector "
                f"per image ([batch, classes])"
            )
        rows_sum_to_one = np.allclose(vectors.sum(axis=1), 1.0, atol=1e-3)
        is_prob = bool(rows_sum_to_one and (vectors >= 0).all())
        return vectors.shape[1], OutputKind.PROBABILITIES if is_prob else OutputKind.LOGITS

    def predict(self, tensor: Float32Array) -> Float32Array:
        """(M, 3, H, W) model input → (M, K) float32 probabilities (rows sum to 1).

        Raises:
            ClassifierError: the output is not one vector per image.
        """
        m = int(tensor.shape[0])
        if m == 0:
            return np.empty((0, self.num_classes), np.float32)
        vectors = _as_vectors(np.asarray(self.model.run(tensor)), m)
        if vectors is None or vectors.shape[1] != self.num_classes:
            raise ClassifierError(
                f"{self.path}: unexpected output shape for {m} crops (want [{m}, "
                f"{self.num_classes}])"
            )
        scores = np.asarray(vectors, np.float32)
        if self.output_kind is OutputKind.LOGITS:
            return softmax(scores.copy())
        return scores

    def classify(self, image: UInt8Array, xyxy: Float32Array) -> tuple[Float32Array, BoolArray]:
        """Probabilities of the crops of ``xyxy`` (N, 4) in ``image`` (BGR frame).

        Returns:
            (M, K) probabilities for the M boxes that could be cropped, and the (N,) mask
            saying which (see :func:`~tapetum.classify.crops.crop_batch`).
        """
        batch = crop_batch(image, np.asarray(xyxy, np.float32), self.spec)
        return self.predict(batch.tensor), batch.valid


def _as_vectors(out: Any, batch: int) -> Float32Array | None:
    """``out`` as (batch, K) when it is one vector per image ((B, K), (B, K, 1, 1),
    (B, 1, K)), else None."""
    arr = np.asarray(out)
    if arr.ndim < 2 or arr.shape[0] != batch:
        return None
    rest = [d for d in arr.shape[1:] if d != 1]
    if len(rest) != 1 or not np.issubdtype(arr.dtype, np.floating):
        return None
    return arr.reshape(batch, rest[0]).astype(np.float32, copy=False)
