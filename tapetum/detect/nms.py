"""Non-maximum suppression (OpenCV's C++ implementation, class-aware or agnostic)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


def nms(
    xyxy: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    class_id: npt.NDArray[np.int64] | None,
    iou_threshold: float,
    max_detections: int = 300,
) -> npt.NDArray[np.int64]:
    """Greedy NMS.

    Args:
        xyxy: (N, 4) boxes in pixels.
        scores: (N,) scores; boxes are visited from highest to lowest.
        class_id: (N,) classes for per-class suppression, or None for class-agnostic.
        iou_threshold: a box is suppressed when its IoU with a kept box exceeds this.
        max_detections: keep at most this many (highest scores first).

    Returns:
        Indices of kept boxes, ordered by decreasing score.
    """
    if xyxy.shape[0] == 0:
        return np.empty(0, np.int64)
    xywh = xyxy.astype(np.float32, copy=True)
    xywh[:, 2:] -= xywh[:, :2]
    # OpenCV takes plain lists of boxes; score_threshold 0 because filtering happened upstream.
    if class_id is None:
        keep = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(iou_threshold))  # type: ignore[arg-type]
    else:
        keep = cv2.dnn.NMSBoxesBatched(
            xywh,  # type: ignore[arg-type]  # the stubs say lists; arrays are what it reads
            scores.astype(np.float32),  # type: ignore[arg-type]
            class_id.astype(np.int32),  # type: ignore[arg-type]
            0.0,
            float(iou_threshold),
        )
    idx = np.asarray(keep, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx[:max_detections]
