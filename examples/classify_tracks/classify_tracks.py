"""Label every track of a video with a second model, through the Python API.

    python examples/classify_tracks/classify_tracks.py VIDEO --model yolox_nano.onnx \
        --classifier effnet_lite0.onnx --classes person --every 10 --frames 150

Prints one line per track (its final label, the label's mean probability, the number of
classifications behind it, and how often its label changed along the way), then the
classifier's counters.
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict
from pathlib import Path

import tapetum
from tapetum.classify import ClassificationEnricher, ClassifierService, ClassifyConfig
from tapetum.detect.classes import resolve_class_filter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("--model", type=Path, required=True, help="ONNX detector")
    ap.add_argument("--classifier", type=Path, required=True, help="ONNX classifier")
    ap.add_argument("--classes", default=None, help="detector classes to label (default: all)")
    ap.add_argument("--every", type=int, default=10, help="frames between classifications")
    ap.add_argument("--labels", default=None, help="label map (YAML/JSON, or 'vehicles')")
    ap.add_argument("--frames", type=int, default=0, help="stop after this many (0: all)")
    args = ap.parse_args()

    detector = tapetum.load_detector(args.model)
    classifier = tapetum.OnnxClassifier(args.classifier)
    label_map = (
        tapetum.classify.load_label_map(args.labels, classifier.class_names)
        if args.labels
        else None
    )
    class_ids = resolve_class_filter(
        detector.class_names, args.classes.split(",") if args.classes else None
    )
    config = ClassifyConfig(class_ids=class_ids, every=args.every)
    history: dict[int, list[str]] = defaultdict(list)
    final: dict[int, tuple[str, float, int]] = {}
    with ClassifierService(classifier, label_map, max_wait_ms=0) as service:
        pipe = tapetum.Pipeline(
            [tapetum.open_source(str(args.video))],
            detector,
            enrichers=[lambda src: ClassificationEnricher(service, config)],
        )
        for n, result in enumerate(pipe, start=1):
            det = result.detections
            rows = zip(
                det.tracker_id.tolist(),
                det.data["label"].tolist(),
                det.data["label_confidence"].tolist(),
                det.data["label_votes"].tolist(),
                strict=True,
            )
            for track_id, label, confidence, votes in rows:
                if label is not None:
                    history[track_id].append(label)
                    final[track_id] = (label, confidence, votes)
            if args.frames and n >= args.frames:
                break
        stats = service.stats.as_dict()
    for track_id in sorted(final):
        label, confidence, votes = final[track_id]
        seen = history[track_id]
        changes = sum(a != b for a, b in itertools.pairwise(seen))
        print(
            f"track {track_id:4d}  {label:<24} p={confidence:.2f}  votes={votes:3d}  "
            f"label changes={changes}"
        )
    print(
        f"{len(final)} tracks labelled; {stats['crops_classified']} crops in "
        f"{stats['calls']} model calls, {stats['crops_skipped']} skipped"
    )


if __name__ == "__main__":
    main()
