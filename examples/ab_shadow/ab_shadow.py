"""A shadow A/B experiment from Python: the same detector at two confidence thresholds on
a video, every frame seen by both, only the control's results emitted; then the report
and the decision.

The experiment is a dict here (``experiment_from_dict``); ``load_experiment("exp.yaml")``
reads the same from a file. ``LiveExperiment`` gives the pipeline its pieces (the control's
detector, the trackers, a recorder sink, the shadow tap), ``build_report`` analyses what it
recorded (bootstrap intervals over the stream's windows) and ``write_report`` writes the
JSON and the self-contained HTML page.

    python examples/ab_shadow/ab_shadow.py ../shared/assets/video/crowd_720p.avi \\
        --model ../shared/assets/models/yolox_nano.onnx --out runs/ab-example
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tapetum
from tapetum.errors import TapetumError
from tapetum.experiments import (
    LiveExperiment,
    build_report,
    experiment_from_dict,
    load_arms,
    write_report,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--variant-conf", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("runs/ab-example"))
    args = parser.parse_args()
    try:
        spec = experiment_from_dict(
            {
                "name": "conf-threshold",
                "control": {"model": str(args.model), "conf": 0.1},
                "variants": [
                    {"name": "higher-conf", "model": str(args.model), "conf": args.variant_conf}
                ],
                "mode": "shadow",
                "guardrails": [{"metric": "error_rate", "max": 0.01}],
                "decision": {
                    "window_s": 0.5,
                    "rules": [
                        {"metric": "agreement_recall", "min_effect": 0.1},
                        {"metric": "track_length_frames", "relative": True, "min_effect": 0.1},
                    ],
                },
            }
        )
        arms = load_arms(spec)  # resolved, loaded and class-checked before any frame
        experiment = LiveExperiment(spec, arms, args.out, live=False)
        pipeline = tapetum.Pipeline(
            [tapetum.open_source(str(args.video))],
            experiment.detector,
            experiment.tracker_factory,
            sinks=[experiment.sink, tapetum.JsonlSink(args.out / "tracks.jsonl")],
            taps=experiment.taps,
        )
        experiment.start(pipeline)
        stats = pipeline.run()
        experiment.finish(stats)
        report = build_report(args.out)
        json_path, html_path = write_report(report, args.out)
    except TapetumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    effects = report.effects["higher-conf"]
    decision = report.decisions["higher-conf"]
    print(f"frames: {stats.frames_processed} (both arms), report: {html_path}")
    for metric in ("detections_per_frame", "agreement_recall", "track_length_frames"):
        e = effects[metric]
        lo, hi = e.diff_ci
        print(
            f"{metric}: control {e.control:.3f}, variant {e.variant:.3f}, "
            f"difference {e.diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        )
    print(f"decision: {decision.verdict.value} ({decision.summary})")
    print(f"json: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
