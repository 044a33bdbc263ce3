"""Classification of tracked objects: a second model labels each track.

- :class:`OnnxClassifier` (``runtime``): any ONNX image classifier (ImageNet-style logits or
  softmax, Ultralytics ``-cls``), crops cut and normalised from the file's metadata.
- :class:`ClassifierService` (``service``): one classifier on a worker thread; crops of
  every stream queued (bounded, drop-oldest, counted) and batched into one call.
- :class:`ClassificationEnricher` (``enricher``): the pipeline stage: crops of the tracks
  due (first sighting, every N frames, a grown box), asynchronous by default, a running
  mean of probabilities per track → ``label``, ``label_confidence``, ``label_votes``.
- :class:`LabelMap` (``labels``): a classifier's classes grouped into the user's labels
  (``vehicles`` ships with Tapetum).
- ``tapetum.classify.export`` and ``tapetum.classify.train`` (torch, the ``export`` extra):
  the pretrained EfficientNet-Lite0 → ONNX, and fine-tuning on crops.

Example:
    >>> from tapetum.classify import ClassifierService, OnnxClassifier, load_label_map
    >>> clf = OnnxClassifier("effnet_lite0.onnx")                          # doctest: +SKIP
    >>> service = ClassifierService(clf, load_label_map("vehicles", clf.class_names))
    ... # doctest: +SKIP
"""

from tapetum.classify.crops import CropBatch, crop_batch
from tapetum.classify.enricher import (
    LABEL_COLUMNS,
    ClassificationEnricher,
    ClassificationObserver,
    ClassifyConfig,
    ClassifyStage,
    parse_classify_option,
)
from tapetum.classify.labels import BUILTIN_MAPS, LabelMap, load_label_map
from tapetum.classify.runtime import OnnxClassifier, softmax
from tapetum.classify.service import ClassifierService, ClassifyStats, CropClassifier
from tapetum.classify.spec import ClassifierSpec, CropFit, OutputKind, classifier_meta
from tapetum.classify.voting import TrackLabels

__all__ = [
    "BUILTIN_MAPS",
    "LABEL_COLUMNS",
    "ClassificationEnricher",
    "ClassificationObserver",
    "ClassifierService",
    "ClassifierSpec",
    "ClassifyConfig",
    "ClassifyStage",
    "ClassifyStats",
    "CropBatch",
    "CropClassifier",
    "CropFit",
    "LabelMap",
    "OnnxClassifier",
    "OutputKind",
    "TrackLabels",
    "classifier_meta",
    "crop_batch",
    "load_label_map",
    "parse_classify_option",
    "softmax",
]
