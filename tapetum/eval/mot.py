"""MOTChallenge files: ``seqinfo.ini``, ``gt/gt.txt``, ``det/det.txt`` and tracker output.

Every text file is parsed in one ``np.loadtxt`` call into flat, frame-sorted arrays; per-frame
views are slices found with ``np.searchsorted``, never a Python loop over rows.

Row layouts (comma separated, frames and ids 1-based, boxes ``x, y, w, h`` in pixels with
``x, y`` the top-left corner):

* MOT16/17/20 ground truth, 9 columns:
  ``frame, id, x, y, w, h, consider, class, visibility``.
* MOT15 ground truth, 10 columns: ``frame, id, x, y, w, h, consider, X, Y, Z`` (world
  coordinates or -1). MOT15 has no classes: every row is a pedestrian, fully visible.
* detections and tracker output, 10 columns: ``frame, -1 | id, x, y, w, h, score, -1, -1, -1``.

Example:
    >>> from tapetum.eval.mot import load_sequence
    >>> seq = load_sequence("MOT15/train/TUD-Campus")  # doctest: +SKIP
    >>> seq.info.length_frames, seq.info.frame_rate_fps  # doctest: +SKIP
    (71, 25.0)
    >>> len(seq.public_detections()[0])  # detections in frame 1  # doctest: +SKIP
    5
"""

from __future__ import annotations

import configparser
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError

#: MOTChallenge benchmark a ground truth follows; TrackEval's preprocessing depends on it
#: (MOT15: no classes, no distractor removal; MOT20 also treats non-MOT vehicles as
#: distractors).
Benchmark = Literal["MOT15", "MOT16", "MOT17", "MOT20"]

#: MOTChallenge class id of a pedestrian, the only class evaluated.
PEDESTRIAN = 1


@dataclass(frozen=True, slots=True)
class SequenceInfo:
    """What ``seqinfo.ini`` says about one sequence.

    Attributes:
        name: sequence name (``TUD-Campus``, ``MOT17-02-FRCNN``).
        frame_rate_fps: frames per second.
        length_frames: number of frames; frames are numbered ``1 .. length_frames``.
        width_px: image width in pixels.
        height_px: image height in pixels.
    """

    name: str
    frame_rate_fps: float
    length_frames: int
    width_px: int
    height_px: int


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Every ground-truth row of one sequence, sorted by frame (stable).

    Attributes:
        frame: (M,) int64, 1-based frame number.
        track_id: (M,) int64, object identity.
        tlwh: (M, 4) float64, ``x, y, w, h`` in pixels, exactly as in the file.
        consider: (M,) bool, the file's ``consider`` flag (TrackEval's ``zero_marked``: rows
            with 0 are ignored by the evaluation).
        class_id: (M,) int64, MOTChallenge class (1 pedestrian, 2 person on vehicle, 7 static
            person, 8 distractor, ...); all 1 for MOT15.
        visibility: (M,) float32 in [0, 1]; all 1 for MOT15, which does not annotate it.
        benchmark: the layout the file follows (see :data:`Benchmark`).
    """

    frame: IntArray
    track_id: IntArray
    tlwh: Float64Array
    consider: BoolArray
    class_id: IntArray
    visibility: Float32Array
    benchmark: Benchmark

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @property
    def evaluated(self) -> BoolArray:
        """(M,) True for the rows the metrics count: pedestrians with ``consider == 1``."""
        mask: BoolArray = self.consider & (self.class_id == PEDESTRIAN)
        return mask

    def frame_offsets(self, length_frames: int) -> IntArray:
        """(length_frames + 1,) row offsets: frame ``t`` (1-based) is rows ``o[t-1]:o[t]``."""
        return frame_offsets(self.frame, length_frames)

    def as_tracks(self, length_frames: int) -> list[Detections]:
        """The evaluated rows as tracker output: what a perfect tracker would report.

        Returns:
            ``length_frames`` Detections (index 0 is frame 1) with ``tracker_id`` set to the
            ground-truth id and confidence 1.
        """
        keep = self.evaluated
        return split_by_frame(
            self.frame[keep],
            length_frames,
            xyxy=tlwh_to_xyxy(self.tlwh[keep]),
            confidence=np.ones(int(keep.sum()), np.float32),
            tracker_id=self.track_id[keep],
        )


@dataclass(frozen=True, slots=True)
class DetectionRows:
    """Every row of a ``det.txt``, sorted by frame (stable).

    Attributes:
        frame: (K,) int64, 1-based frame number.
        tlwh: (K, 4) float64, ``x, y, w, h`` in pixels.
        raw_score: (K,) float64, the detector's score as written (MOT15: unbounded ACF scores,
            see :func:`normalize_detection_scores`).
    """

    frame: IntArray
    tlwh: Float64Array
    raw_score: Float64Array

    def __len__(self) -> int:
        return int(self.frame.shape[0])


@dataclass(frozen=True, slots=True)
class MotSequence:
    """One MOTChallenge sequence: its info, ground truth and (if shipped) public detections.

    Attributes:
        info: frame rate, length and image size.
        gt: ground truth, or None where the folder has no ``gt/gt.txt`` (test splits).
        detections: public detections, or None where the folder has no ``det/det.txt``.
        path: the sequence folder, or None for sequences built in memory.
    """

    info: SequenceInfo
    gt: GroundTruth | None = None
    detections: DetectionRows | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def public_detections(self) -> list[Detections]:
        """The public detections per frame, scores normalised into [0, 1].

        Returns:
            ``length_frames`` Detections (index 0 is frame 1), class 0 (person), no
            ``tracker_id``. Scores go through :func:`normalize_detection_scores`.

        Raises:
            ConfigError: the sequence has no ``det/det.txt``.
        """
        det = self.detections
        if det is None:
            raise ConfigError(
                f"sequence {self.name} has no det/det.txt (public detections); "
                "use detections simulated from the ground truth instead (simulate_detections)"
            )
        return split_by_frame(
            det.frame,
            self.info.length_frames,
            xyxy=tlwh_to_xyxy(det.tlwh),
            confidence=normalize_detection_scores(det.raw_score),
        )


def normalize_detection_scores(raw_score: npt.ArrayLike) -> Float32Array:
    """Map a sequence's detector scores into [0, 1], the range tracker thresholds expect.

    MOTChallenge public detections are not calibrated: MOT17 DPM/FRCNN/SDP scores differ in
    range, and the MOT15 detections are raw ACF boosting sums (about -1 to 120; 0 is the
    detector's own threshold). Trackers such as ByteTrack split detections at fixed
    confidences (0.1 / 0.5 / 0.6), so raw scores must be brought into [0, 1].

    The choice: scores already inside [0, 1] are returned unchanged; otherwise each score is
    replaced by its **rank within the sequence** (empirical CDF, ``(rank + 0.5) / N``, ties
    share their mean rank). Why not the alternatives:

    * min-max scaling hangs on the single highest score (TUD-Campus's 117.9 puts the median
      detection at 0.31, so ByteTrack starts almost no tracks);
    * a fixed logistic needs a centre and slope that suit one detector and fit MOT15
      sequences badly (their median raw score ranges from 21 to 55).

    The rank keeps the detector's ordering, is monotone, has no free parameter, and means
    the same on every sequence: 0.5 is the median detection, so ByteTrack's 0.5 high/low
    split puts the better half in its first association.

    Args:
        raw_score: (N,) scores as written in ``det.txt``.

    Returns:
        (N,) float32 in (0, 1).
    """
    scores = np.asarray(raw_score, dtype=np.float64).reshape(-1)
    if scores.size == 0 or (scores.min() >= 0.0 and scores.max() <= 1.0):
        return scores.astype(np.float32)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Mean rank of each run of equal scores, so equal raw scores stay equal.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts - 1) / 2.0
    ranks = np.empty_like(scores)
    ranks[order] = np.repeat(mean_rank, counts)
    normalized: Float32Array = ((ranks + 0.5) / scores.size).astype(np.float32)
    return normalized


def read_seqinfo(path: str | Path) -> SequenceInfo:
    """Read a ``seqinfo.ini``.

    Raises:
        ConfigError: the file is missing or lacks a ``[Sequence]`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no seqinfo.ini at {path}")
    parser = configparser.ConfigParser()
    parser.read(path)
    try:
        section = parser["Sequence"]
        return SequenceInfo(
            name=section.get("name", path.parent.name),
            frame_rate_fps=float(section["frameRate"]),
            length_frames=int(section["seqLength"]),
            width_px=int(section["imWidth"]),
            height_px=int(section["imHeight"]),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid seqinfo.ini ({exc})") from None


def _load_rows(path: Path, min_columns: int) -> Float64Array:
    """(R, C) float64 rows of a comma-separated MOTChallenge file, sorted by frame."""
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        try:
            rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise ConfigError(f"{path}: not a MOTChallenge text file ({exc})") from None
    if rows.size == 0:
        return np.empty((0, min_columns), np.float64)
    if rows.shape[1] < min_columns:
        raise ConfigError(f"{path}: {rows.shape[1]} columns, expected at least {min_columns}")
    sorted_rows: Float64Array = rows[np.argsort(rows[:, 0], kind="stable")]
    return sorted_rows


def read_ground_truth(path: str | Path, benchmark: Benchmark | None = None) -> GroundTruth:
    """Read a ``gt.txt`` (MOT15 10-column or MOT16/17/20 9-column layout).

    Args:
        path: the ``gt.txt`` file.
        benchmark: the layout; None infers it: 9 columns is MOT17 (MOT20 when the file lies
            in a ``MOT20*`` sequence folder), anything else MOT15.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    path = Path(path)
    rows = _load_rows(path, min_columns=7)
    if benchmark is None:
        if rows.shape[1] == 9:
            in_mot20 = any(part.upper().startswith("MOT20") for part in path.parts)
            benchmark = "MOT20" if in_mot20 else "MOT17"
        else:
            benchmark = "MOT15"
    n = rows.shape[0]
    if benchmark == "MOT15":
        class_id = np.full(n, PEDESTRIAN, np.int64)
        visibility = np.ones(n, np.float32)
    else:
        if rows.shape[1] < 9:
            raise ConfigError(f"{path}: {benchmark} ground truth needs 9 columns")
        class_id = rows[:, 7].astype(np.int64)
        visibility = rows[:, 8].astype(np.float32)
    return GroundTruth(
        frame=rows[:, 0].astype(np.int64),
        track_id=rows[:, 1].astype(np.int64),
        tlwh=np.ascontiguousarray(rows[:, 2:6]),
        consider=rows[:, 6] != 0,
        class_id=class_id,
        visibility=visibility,
        benchmark=benchmark,
    )


def read_detections(path: str | Path) -> DetectionRows:
    """Read a ``det.txt`` of public detections (scores kept raw)."""
    rows = _load_rows(Path(path), min_columns=7)
    return DetectionRows(
        frame=rows[:, 0].astype(np.int64),
        tlwh=np.ascontiguousarray(rows[:, 2:6]),
        raw_score=np.ascontiguousarray(rows[:, 6]),
    )


def read_tracks(path: str | Path, length_frames: int) -> list[Detections]:
    """Read tracker output in MOTChallenge format.

    Returns:
        ``length_frames`` Detections (index 0 is frame 1) with ``tracker_id`` from column 2
        and the score column as confidence (clipped into [0, 1]; -1 becomes 0).
    """
    rows = _load_rows(Path(path), min_columns=6)
    score = rows[:, 6] if rows.shape[1] > 6 else np.ones(rows.shape[0])
    return split_by_frame(
        rows[:, 0].astype(np.int64),
        length_frames,
        xyxy=tlwh_to_xyxy(rows[:, 2:6]),
        confidence=np.clip(score, 0.0, 1.0).astype(np.float32),
        tracker_id=rows[:, 1].astype(np.int64),
    )


def write_tracks(path: str | Path, tracks: Sequence[Detections]) -> int:
    """Write tracker output in MOTChallenge format: ``frame,id,x,y,w,h,score,-1,-1,-1``.

    Args:
        path: output file (parent folders are created).
        tracks: one Detections per frame, index 0 is frame 1; every row needs a
            ``tracker_id``.

    Returns:
        Rows written.

    Raises:
        ValueError: a row has no ``tracker_id``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.fromiter((len(d) for d in tracks), np.int64, len(tracks))
    frame = np.repeat(np.arange(1, len(tracks) + 1, dtype=np.int64), counts)
    merged = Detections.merge(tracks)
    if np.any(merged.tracker_id < 0):
        raise ValueError("every tracked detection needs a tracker_id to be written")
    n = len(merged)
    table = np.empty((n, 10), np.float64)
    table[:, 0] = frame
    table[:, 1] = merged.tracker_id
    table[:, 2:6] = xyxy_to_tlwh(merged.xyxy)
    table[:, 6] = merged.confidence
    table[:, 7:] = -1.0
    fmt = ["%d", "%d", "%.3f", "%.3f", "%.3f", "%.3f", "%.4f", "%d", "%d", "%d"]
    np.savetxt(path, table, fmt=fmt, delimiter=",")
    return n


def load_sequence(folder: str | Path) -> MotSequence:
    """Load a MOTChallenge sequence folder (``seqinfo.ini``, optional gt and det files).

    Raises:
        ConfigError: the folder or its ``seqinfo.ini`` is missing, or a file is malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no such sequence folder: {folder}")
    info = read_seqinfo(folder / "seqinfo.ini")
    gt_path, det_path = folder / "gt" / "gt.txt", folder / "det" / "det.txt"
    gt = read_ground_truth(gt_path) if gt_path.is_file() else None
    det = read_detections(det_path) if det_path.is_file() else None
    checks = [
        ("gt", None if gt is None else gt.frame),
        ("det", None if det is None else det.frame),
    ]
    for label, frames in checks:
        if (
            frames is not None
            and frames.size
            and (frames[0] < 1 or frames[-1] > info.length_frames)
        ):
            raise ConfigError(
                f"{folder}: {label} frames {frames[0]}..{frames[-1]} outside "
                f"1..{info.length_frames} (seqLength)"
            )
    return MotSequence(info=info, gt=gt, detections=det, path=folder)


def find_sequences(path: str | Path) -> list[Path]:
    """Sequence folders under ``path``: itself if it holds a ``seqinfo.ini``, else its
    sub-folders that do (a split such as ``MOT15/train``), sorted by name.

    Raises:
        ConfigError: ``path`` is not a folder, or holds no sequence.
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"no such folder: {path}")
    if (path / "seqinfo.ini").is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / "seqinfo.ini").is_file())
    if not found:
        raise ConfigError(
            f"no MOTChallenge sequences in {path} (expected a folder with seqinfo.ini, "
            "or sub-folders that have one)"
        )
    return found


def frame_offsets(frame: IntArray, length_frames: int) -> IntArray:
    """Row offsets of sorted 1-based frame numbers.

    Args:
        frame: (R,) int64, ascending.
        length_frames: number of frames.

    Returns:
        (length_frames + 1,) int64: rows of frame ``t`` are ``o[t-1]:o[t]``.
    """
    offsets: IntArray = np.searchsorted(
        frame, np.arange(1, length_frames + 2, dtype=np.int64), side="left"
    ).astype(np.int64)
    return offsets


def split_by_frame(
    frame: IntArray,
    length_frames: int,
    *,
    xyxy: npt.ArrayLike,
    confidence: npt.ArrayLike,
    tracker_id: IntArray | None = None,
    class_id: int = 0,
) -> list[Detections]:
    """Cut flat, frame-sorted rows into one Detections per frame.

    Args:
        frame: (R,) int64, 1-based, ascending.
        length_frames: number of frames; rows outside ``1..length_frames`` are dropped.
        xyxy: (R, 4) boxes, pixels.
        confidence: (R,) scores in [0, 1].
        tracker_id: (R,) identities, or None for untracked detections.
        class_id: class written into every row (0: person in the detector's COCO order).

    Returns:
        ``length_frames`` Detections; index 0 is frame 1.
    """
    boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(confidence, np.float32).reshape(-1)
    ids = None if tracker_id is None else np.asarray(tracker_id, np.int64)
    o = frame_offsets(frame, length_frames)
    classes = np.full(boxes.shape[0], class_id, np.int64)
    return [
        Detections(
            xyxy=boxes[o[t] : o[t + 1]],
            confidence=scores[o[t] : o[t + 1]],
            class_id=classes[o[t] : o[t + 1]],
            tracker_id=np.empty(0, np.int64) if ids is None else ids[o[t] : o[t + 1]],
        )
        for t in range(length_frames)
    ]


def tlwh_to_xyxy(tlwh: npt.ArrayLike) -> Float64Array:
    """(N, 4) ``x, y, w, h`` → (N, 4) float64 ``x1, y1, x2, y2``."""
    boxes = np.asarray(tlwh, np.float64).reshape(-1, 4)
    out: Float64Array = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    return out


def xyxy_to_tlwh(xyxy: npt.ArrayLike) -> Float64Array:
    """(N, 4) ``x1, y1, x2, y2`` → (N, 4) float64 ``x, y, w, h``."""
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    out: Float64Array = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return out
