"""Parity check for the compiled trackers: same detections in, same tracks out, per frame.

Runs every tracker configuration below over the sequences the tracking bench uses
(``bench/track.py``: MOT17 train and MOT20-01 with detections simulated from the ground
truth, seed 0; MOT15 train with its public detections) and records, for every frame, the
detection rows each tracker reported with their ids, boxes, scores and classes, and a
digest of the tracker's whole state (every column of its live track rows: Kalman means
and covariances, embeddings, ages...). Outputs alone miss a change that has not yet
altered a decision (the embedding average off by 1e-4 changes no id on these data); the
digest catches it the frame it happens.

Configurations (each a fresh tracker per sequence, as the bench builds them):

* ``bytetrack``, ``botsort``: ``make_tracker`` defaults, no frames (no camera motion);
* ``ocsort``, ``ocsort-byte``: OC-SORT without and with its BYTE round;
* ``botsort-appearance``: BoT-SORT with appearance from synthetic embeddings (a seeded
  vector per ground-truth identity plus noise, a random one per false positive), so the
  gated appearance cost and the embedding moving average run on every MOT17/MOT20 frame;
* ``botsort-reid-cmc``: BoT-SORT with the OSNet embedder and sparse optical-flow camera
  motion on the MOT17 frames whose pictures are shipped (the camera-warp path).

Usage::

    python scripts/track_parity.py --reference /tmp/track_parity_ref.npz   # before a change
    python scripts/track_parity.py --compare /tmp/track_parity_ref.npz     # after it

To take the reference from a commit while the working tree holds other changes, run
the script against an exported copy of the package::

    git archive HEAD tapetum | tar -x -C /tmp/head
    PYTHONPATH=/tmp/head python scripts/track_parity.py --reference /tmp/track_parity_ref.npz

``--compare`` runs the trackers again, prints how many tracker-frames differ from the
reference, in outputs and in state, and exits 1 if any does (or a run is missing). Both
modes also print each run's per-frame ``update`` time p50 (a side-by-side hint only;
``bench/track.py`` is the benchmark).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import tapetum
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.eval import MotSequence, find_sequences, load_sequence, simulate_detections
from tapetum.eval.mot import frame_offsets
from tapetum.track import Tracker, make_tracker
from tapetum.track.botsort import BoTSortConfig, BoTSortTracker
from tapetum.track.ocsort import OCSortConfig, OCSortTracker

DATASETS = {"MOT15": "MOT15/train", "MOT17": "MOT17/train", "MOT20": "MOT20/train"}
#: MOT17 sequences with pictures in the assets (``img1/``), as ``bench/track.py`` uses.
IMAGE_SEQUENCES = ("MOT17-04-FRCNN", "MOT17-02-FRCNN")
EMBEDDING_DIM = 32
SEP = "::"  # run key: config::dataset::sequence
FIELDS = ("tracker_id", "xyxy", "confidence", "class_id")

TrackerFactory = Callable[[float], Tracker]
Frames = list[tuple[Detections, Frame | None]]


def _ocsort(use_byte: bool) -> TrackerFactory:
    return lambda fps: OCSortTracker(OCSortConfig(frame_rate=fps, use_byte=use_byte))


def _botsort_appearance(fps: float) -> Tracker:
    return BoTSortTracker(BoTSortConfig(frame_rate=fps, with_reid=True, cmc_method="none"))


MOTION_ONLY: dict[str, TrackerFactory] = {
    "bytetrack": lambda fps: make_tracker("bytetrack", fps),
    "botsort": lambda fps: make_tracker("botsort", fps),
    "ocsort": _ocsort(False),
    "ocsort-byte": _ocsort(True),
}


def _with_embeddings(seq: MotSequence, seed: int) -> tuple[list[Detections], list[Detections]]:
    """The bench's simulated detections, and the same with synthetic embeddings."""
    assert seq.gt is not None
    sim = simulate_detections(seq, seed=seed)
    plain = sim.per_frame()
    rng = np.random.default_rng(seed)
    ids = np.where(sim.gt_row >= 0, seq.gt.track_id[np.maximum(sim.gt_row, 0)], -1)
    unique, inverse = np.unique(ids, return_inverse=True)
    base = rng.normal(size=(unique.size, EMBEDDING_DIM))
    emb = base[inverse] + 0.5 * rng.normal(size=(ids.size, EMBEDDING_DIM))
    false_positive = ids < 0
    emb[false_positive] = rng.normal(size=(int(false_positive.sum()), EMBEDDING_DIM))
    emb32 = emb.astype(np.float32)
    offsets = frame_offsets(sim.frame, sim.length_frames)
    embedded = []
    for t, d in enumerate(plain):
        rows = emb32[offsets[t] : offsets[t + 1]]
        if len(d):
            embedded.append(Detections(d.xyxy, d.confidence, d.class_id, embeddings=rows))
        else:  # Detections cannot infer D from zero rows; set the (0, D) array after
            empty = Detections(d.xyxy, d.confidence, d.class_id)
            empty.embeddings = rows
            embedded.append(empty)
    return plain, embedded


def _runs(
    mot: Path, datasets: list[str], seed: int
) -> Iterator[tuple[str, TrackerFactory, float, Frames]]:
    """Every (key, tracker factory, fps, frames) to run."""
    for dataset in datasets:
        for path in find_sequences(mot / DATASETS[dataset]):
            seq = load_sequence(path)
            fps = seq.info.frame_rate_fps
            if dataset == "MOT15":
                plain, embedded = seq.public_detections(), None
            else:
                plain, embedded = _with_embeddings(seq, seed)
            for config, factory in MOTION_ONLY.items():
                yield (
                    f"{config}{SEP}{dataset}{SEP}{seq.name}",
                    factory,
                    fps,
                    [(d, None) for d in plain],
                )
            if embedded is not None:
                key = f"botsort-appearance{SEP}{dataset}{SEP}{seq.name}"
                yield key, _botsort_appearance, fps, [(d, None) for d in embedded]


def _image_runs(
    mot: Path, reid_model: Path, seed: int
) -> Iterator[tuple[str, TrackerFactory, float, Frames]]:
    """BoT-SORT with the real embedder and camera motion on the shipped MOT17 pictures."""
    import cv2

    from tapetum.track.reid import ReidEmbedder

    embedder = ReidEmbedder(reid_model, threads=1)
    for name in IMAGE_SEQUENCES:
        folder = mot / "MOT17" / "train" / name
        images = sorted((folder / "img1").glob("*.jpg"))
        if not images:
            continue
        seq = load_sequence(folder)
        fps = seq.info.frame_rate_fps
        dets = simulate_detections(seq, seed=seed).per_frame()[: len(images)]
        frames: Frames = [
            (d, Frame(name, i, np.asarray(cv2.imread(str(p)), np.uint8), i / fps, 0.0))
            for i, (p, d) in enumerate(zip(images, dets, strict=True))
        ]

        def factory(rate: float) -> Tracker:
            return BoTSortTracker(BoTSortConfig(frame_rate=rate, with_reid=True), embedder)

        yield f"botsort-reid-cmc{SEP}MOT17{SEP}{name}", factory, fps, frames


def state_digest(tracker: Tracker) -> int:
    """64-bit digest of every column of a tracker's live track rows.

    Reads the trackers' private state on purpose: this script checks that a kernel change
    leaves it bit for bit unchanged.
    """
    inside: Any = tracker
    if hasattr(inside, "_core"):  # ByteTrack, BoT-SORT: a ByteCore
        state, n = inside._core.state, inside._core.state.n
        names = [name for name in state.__slots__ if name != "n"]
    else:  # OC-SORT: its _TrackState and live count
        state, n = inside._state, inside._n_tracks
        names = list(state.__slots__)
    digest = hashlib.blake2b(digest_size=8)
    for name in names:
        digest.update(np.ascontiguousarray(getattr(state, name)[:n]).tobytes())
    return int.from_bytes(digest.digest(), "little")


def _run(factory: TrackerFactory, fps: float, frames: Frames) -> dict[str, npt.NDArray[Any]]:
    """Per-frame outputs, flattened: each field concatenated over frames plus offsets;
    the state digest and the ``update`` time of each frame."""
    tracker = factory(fps)
    outs: list[Detections] = []
    times_ms = np.empty(len(frames))
    digests = np.empty(len(frames), np.uint64)
    for t, (dets, frame) in enumerate(frames):
        start = time.perf_counter_ns()
        outs.append(tracker.update(dets, frame))
        times_ms[t] = (time.perf_counter_ns() - start) / 1e6
        digests[t] = state_digest(tracker)
    record: dict[str, npt.NDArray[Any]] = {
        name: np.concatenate([getattr(o, name) for o in outs]) for name in FIELDS
    }
    record["offsets"] = np.cumsum([0] + [len(o) for o in outs])
    record["times_ms"] = times_ms
    record["state_digest"] = digests
    return record


def collect(
    mot: Path, datasets: list[str], seed: int, reid_model: Path | None
) -> dict[str, npt.NDArray[Any]]:
    """Run everything; returns the flat ``{key::field: array}`` the .npz stores."""
    runs = list(_runs(mot, datasets, seed))
    if reid_model is not None and "MOT17" in datasets:
        runs += list(_image_runs(mot, reid_model, seed))
    out: dict[str, npt.NDArray[Any]] = {}
    for key, factory, fps, frames in runs:
        for field, arr in _run(factory, fps, frames).items():
            out[f"{key}{SEP}{field}"] = arr
    return out


def _keys(data: dict[str, npt.NDArray[Any]]) -> list[str]:
    return sorted({k.rsplit(SEP, 1)[0] for k in data})


def _frames(data: dict[str, npt.NDArray[Any]], key: str) -> int:
    return int(data[f"{key}{SEP}offsets"].size - 1)


def differing_frames(
    ref: dict[str, npt.NDArray[Any]], new: dict[str, npt.NDArray[Any]], key: str
) -> tuple[int, int]:
    """Frames of run ``key`` whose reported rows differ in any field (exact equality), and
    frames whose state digest differs."""
    ro, no = ref[f"{key}{SEP}offsets"], new[f"{key}{SEP}offsets"]
    if ro.size != no.size:
        frames = max(ro.size, no.size) - 1
        return frames, frames
    outputs = 0
    for t in range(ro.size - 1):
        for field in FIELDS:
            a = ref[f"{key}{SEP}{field}"][ro[t] : ro[t + 1]]
            b = new[f"{key}{SEP}{field}"][no[t] : no[t + 1]]
            if not np.array_equal(a, b):
                outputs += 1
                break
    state = int((ref[f"{key}{SEP}state_digest"] != new[f"{key}{SEP}state_digest"]).sum())
    return outputs, state


def _group(key: str) -> str:
    config, dataset, _ = key.split(SEP)
    return f"{config} {dataset}"


def _p50_by_group(data: dict[str, npt.NDArray[Any]]) -> dict[str, float]:
    groups: dict[str, list[npt.NDArray[Any]]] = {}
    for key in _keys(data):
        groups.setdefault(_group(key), []).append(data[f"{key}{SEP}times_ms"])
    return {g: float(np.percentile(np.concatenate(t), 50)) for g, t in groups.items()}


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--reference", type=Path, help="write the outputs to this .npz")
    mode.add_argument("--compare", type=Path, help="compare the outputs with this .npz")
    ap.add_argument("--mot", type=Path, default=assets / "mot")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument(
        "--reid-model", type=Path, default=assets / "models" / "osnet_x0_25_msmt17.onnx"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.mot.is_dir():
        print(f"error: MOT data not found at {args.mot}; set TAPETUM_ASSETS", file=sys.stderr)
        return 2
    reid_model = args.reid_model if args.reid_model.is_file() else None
    if reid_model is None:
        print(f"note: no ReID model at {args.reid_model}; skipping botsort-reid-cmc")

    print(f"tapetum from {Path(tapetum.__file__).parent}")
    new = collect(args.mot, args.datasets, args.seed, reid_model)
    if args.reference is not None:
        save: Any = np.savez_compressed  # numpy's stubs type **kwds as its own flags
        save(args.reference, **new)
        total = sum(_frames(new, k) for k in _keys(new))
        for group, p50 in _p50_by_group(new).items():
            print(f"{group:32s} p50 {1000 * p50:8.1f} us/frame")
        print(f"wrote {len(_keys(new))} runs, {total} tracker-frames to {args.reference}")
        return 0

    with np.load(args.compare) as npz:
        # Only the datasets asked for: a subset run compares against part of a reference.
        ref = {k: npz[k] for k in npz.files if k.split(SEP)[1] in args.datasets}
    missing = sorted(set(_keys(ref)) ^ set(_keys(new)))
    for key in missing:
        print(f"run only on one side: {key}")
    ref_p50, new_p50 = _p50_by_group(ref), _p50_by_group(new)
    by_group: dict[str, npt.NDArray[np.int64]] = {}  # outputs, state, frames
    for key in sorted(set(_keys(ref)) & set(_keys(new))):
        frames = _frames(ref, key)
        outputs, state = differing_frames(ref, new, key)
        if outputs or state:
            print(f"{key}: of {frames} frames, {outputs} differ in outputs, {state} in state")
        counts = by_group.setdefault(_group(key), np.zeros(3, np.int64))
        counts += (outputs, state, frames)
    print(f"{'run':28s} {'outputs':>7s} {'state':>6s} {'frames':>6s}  p50 us/frame ref -> now")
    for group, (outputs, state, frames) in by_group.items():
        print(
            f"{group:28s} {outputs:7d} {state:6d} {frames:6d}  "
            f"{1000 * ref_p50[group]:7.1f} -> {1000 * new_p50[group]:7.1f}"
        )
    outputs, state, total = (int(v) for v in sum(by_group.values(), np.zeros(3, np.int64)))
    print(
        f"{outputs} frames differ out of {total} tracker-frames "
        f"({state} with a different tracker state)"
    )
    return 1 if outputs or state or missing else 0


if __name__ == "__main__":
    sys.exit(main())
