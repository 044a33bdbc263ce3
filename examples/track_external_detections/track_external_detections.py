"""Track boxes that another detector produced, frame by frame, and write MOT results.

Reads a MOTChallenge sequence folder (``seqinfo.ini`` and ``det/det.txt``, rows
``frame,-1,x,y,w,h,score``: here the MOT17 Faster R-CNN public detections), builds one
``tapetum.Detections`` per frame, runs it through a Tapetum tracker and writes
``frame,id,x,y,w,h,score,-1,-1,-1`` rows. With ``--eval`` and a ``gt/gt.txt`` it scores the
result with TrackEval (HOTA, MOTA, IDF1).

    python examples/track_external_detections/track_external_detections.py \
        ../shared/assets/mot/MOT17/train/MOT17-09-FRCNN --out runs/MOT17-09-FRCNN.txt --eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tapetum
from tapetum.eval import (
    evaluate_runs,
    load_sequence,
    normalize_detection_scores,
    read_seqinfo,
    write_tracks,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sequence", type=Path, help="folder with seqinfo.ini and det/det.txt")
    parser.add_argument("--tracker", default="bytetrack", help="bytetrack, ocsort or botsort")
    parser.add_argument("--out", type=Path, default=Path("tracks.txt"), help="MOT results file")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    parser.add_argument("--eval", action="store_true", help="score against gt/gt.txt")
    args = parser.parse_args()

    if not (args.sequence / "det" / "det.txt").is_file():
        parser.error(f"no det/det.txt in {args.sequence}")
    info = read_seqinfo(args.sequence / "seqinfo.ini")
    n_frames = min(args.max_frames or info.length_frames, info.length_frames)
    if args.eval and n_frames < info.length_frames:
        parser.error("--eval scores the whole sequence: leave out --max-frames")

    # Any detector's output will do: one row per box, (N, 7) float64, sorted by frame.
    rows = np.loadtxt(args.sequence / "det" / "det.txt", delimiter=",", ndmin=2)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    frame = rows[:, 0].astype(np.int64)
    xyxy = np.column_stack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]]).astype(np.float32)
    # Trackers split detections at fixed confidences (ByteTrack: 0.1 / 0.5 / 0.6), so
    # scores must lie in [0, 1]; MOT17's do, raw scores (MOT15's) are mapped to their ranks.
    score = normalize_detection_scores(rows[:, 6])
    # Rows of frame t are starts[t - 1]:starts[t].
    starts = np.searchsorted(frame, np.arange(1, n_frames + 2))

    tracker = tapetum.make_tracker(args.tracker, frame_rate=info.frame_rate_fps)
    tracks: list[tapetum.Detections] = []
    for t in range(1, n_frames + 1):
        rows_t = slice(starts[t - 1], starts[t])
        detections = tapetum.Detections(
            xyxy=xyxy[rows_t],
            confidence=score[rows_t],
            class_id=np.zeros(rows_t.stop - rows_t.start, np.int64),  # all persons
        )
        tracks.append(tracker.update(detections))

    written = write_tracks(args.out, tracks)
    ids = np.unique(np.concatenate([d.tracker_id for d in tracks]))
    print(f"{info.name}: {n_frames} frames, {int(starts[-1])} detections in")
    print(f"{written} rows, {ids.size} tracks -> {args.out}")

    if args.eval:
        scores = evaluate_runs([(load_sequence(args.sequence), tracks)]).combined
        print(
            f"HOTA {scores.hota:.3f}  MOTA {scores.mota:.3f}  IDF1 {scores.idf1:.3f}  "
            f"ID switches {scores.id_switches}"
        )


if __name__ == "__main__":
    main()
