"""Follow a registry alias from Python: a pipeline on ``models:/NAME@champion`` that swaps
in each newly promoted version while it runs.

The script makes its own throwaway registry (a SQLite store in a temporary folder),
registers the model and an FP16 copy as its child, promotes the first, starts a pipeline on
a video paced like a camera, and promotes the second part-way through. An
``AliasWatcher`` notices, loads and warms the new version and calls
``Pipeline.swap_detector``; frames already read finish on the old model, tracks keep their
ids. This is the hook a server or any long-running process uses.

    python examples/registry_follow/follow_champion.py ../shared/assets/video/crowd_720p.avi \\
        --model ../shared/assets/models/yolox_nano.onnx --promote-after 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import tapetum
from tapetum.detect.quantize import convert_fp16
from tapetum.errors import TapetumError
from tapetum.registry import AliasWatcher, ModelRegistry, ResolvedModel, resolve_model_uri

NAME = "people-detector"


def detector_for(model: ResolvedModel) -> tapetum.OnnxDetector:
    """How this process turns a registered version into a detector (same settings each time)."""
    config = tapetum.DetectorConfig(conf_threshold=0.1)
    return tapetum.load_detector(model.path, config=config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--promote-after", type=int, default=60, help="Frames before v2.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tapetum-example-") as tmp:
        work = Path(tmp)
        registry = ModelRegistry(f"sqlite:///{work / 'registry.db'}", artifacts=work / "art")
        v1 = registry.register(args.model, NAME, description="example: the original")
        fp16 = work / "fp16.onnx"
        convert_fp16(args.model, fp16)
        v2 = registry.register(fp16, NAME, parent=v1.ref)
        registry.promote(NAME, v1.version, reason="first version")

        first = resolve_model_uri(f"models:/{NAME}@champion", registry=registry, cache_dir=work)
        ids_seen: dict[int, set[int]] = {}

        def remember(result: tapetum.FrameResult) -> None:
            ids_seen[result.frame.index] = {int(t) for t in result.detections.tracker_id}

        source = tapetum.open_source(str(args.video), realtime=True)
        pipe = tapetum.Pipeline(
            [source], detector_for(first), sinks=[tapetum.CallbackSink(remember)]
        )
        swapped_at: list[int] = []

        def swap(new: ResolvedModel) -> None:  # runs in the watcher's thread
            pipe.swap_detector(detector_for(new))  # warms it, then swaps it in
            swapped_at.append(pipe.stats().frames_read)
            print(f"swapped to {new.describe()} at frame {swapped_at[-1]}", flush=True)

        watcher = AliasWatcher(
            f"{NAME}@champion", swap, poll_s=0.5, registry=registry, cache_dir=work, current=first
        )
        pipe.start()
        watcher.start()
        while pipe.stats().frames_processed < args.promote_after and not pipe.finished:
            time.sleep(0.05)
        registry.promote(NAME, v2.version, reason="FP16 copy")
        pipe.join()
        watcher.stop()

    stats = pipe.stats()
    print(f"frames: {stats.frames_processed} processed, {stats.frames_dropped} dropped, "
          f"{stats.frames_failed} failed; detector swaps: {stats.detector_swaps}")  # fmt: skip
    if swapped_at:
        k = swapped_at[0]
        before = ids_seen.get(k - 1, set())
        after = ids_seen.get(k + 10, set())
        print(f"tracks kept across the swap: {len(before & after)} of {len(before)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TapetumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
