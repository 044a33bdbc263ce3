"""Crop classifier precision: EfficientNet-Lite0 FP32 vs INT8, speed and agreement side by side.

For each input size, ``tapetum export efficientnet_lite0`` (FP32) into a scratch folder and
one INT8 copy per quantisation setting (static QDQ, calibrated on 256 crops of coco128
train2017 boxes: :func:`tapetum.classify.quantize.quantize_classifier`), then:

- ``speed``: one ONNX Runtime thread, as the pipeline's classifier runs; batches of 1, 2, 8
  and 32 crops, every model's calls interleaved on the same batch; ms per call p50/p95/p99,
  ms per crop, and the speed-up of each INT8 copy over FP32 (p50 per call).
- ``agreement``: every coco128 val2017 box crop (a split the calibration never saw)
  through FP32 and INT8: share with the same top-1 ImageNet class, FP32's top-1 within
  INT8's top 5, and the same label after the ``vehicles`` map on the vehicle boxes.
- ``bus``: YOLOX-nano's bus box on bus.jpg: top-1 class and ``vehicles`` label of each.
- ``crops``: cutting and normalising the crops of one crowd frame (cv2.resize of the crop
  only, one vectorised pass into a reused buffer).

    python bench/classify.py                                  # → bench/results/classify_int8.json
    python bench/classify.py --sizes 224,128 --settings 0:tail,3:head
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import machine_info, pct, write_result

from tapetum.classify import OnnxClassifier, load_label_map
from tapetum.classify.crops import cut_crops, normalize_batch
from tapetum.classify.datasets import load_crop_set
from tapetum.classify.export import export_classifier
from tapetum.classify.quantize import crop_pixels, quantize_classifier, top1_agreement
from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector

BATCHES = (1, 2, 8, 32)
VEHICLES = ("car", "van", "truck", "bus")


def build_models(
    size: int, settings: list[tuple[int, str]], coco: Path, scratch: Path
) -> dict[str, dict[str, Any]]:
    """FP32 and one INT8 copy per (float_stem, float_head) setting, at ``size``."""
    fp32 = scratch / f"effnet_lite0_{size}.onnx"
    export_classifier("efficientnet_lite0", fp32, imgsz=size)
    models: dict[str, dict[str, Any]] = {"fp32": {"path": fp32}}
    for stem, head in settings:
        name = f"int8_stem{stem}_{head}"
        out = scratch / f"effnet_lite0_{size}_{name}.onnx"
        print(f"quantizing {size}x{size} ({name})…", flush=True)
        q = quantize_classifier(
            fp32, out, coco, split="train2017", float_stem=stem, float_head=head, check_crops=0
        )
        models[name] = {
            "path": out,
            "float_nodes": len(q.report.float_nodes),
            "quantize_s": round(q.report.seconds, 1),
        }
    one_thread = RuntimeOptions(intra_op_threads=1, workers=1)
    for entry in models.values():
        entry["classifier"] = OnnxClassifier(entry["path"], runtime=one_thread)
        entry["size_mb"] = round(entry["path"].stat().st_size / 1e6, 2)
    return models


def bench_speed(models: dict[str, dict[str, Any]], crops: np.ndarray, runs: int) -> dict[str, Any]:
    """ms per call of every model at each batch size, calls interleaved."""
    out: dict[str, Any] = {}
    for b in BATCHES:
        batch = np.ascontiguousarray(crops[:b])
        times: dict[str, list[float]] = {name: [] for name in models}
        for entry in models.values():  # warm-up
            entry["classifier"].predict(batch)
        n = max(5, runs // b)
        for _ in range(n):
            for name, entry in models.items():
                t0 = time.perf_counter()
                entry["classifier"].predict(batch)
                times[name].append((time.perf_counter() - t0) * 1e3)
        row: dict[str, Any] = {}
        for name, ms in times.items():
            p = pct(ms)
            row[name] = {**p, "ms_per_crop_p50": round(p["p50_ms"] / b, 3)}
        base = row["fp32"]["p50_ms"]
        for name in models:
            if name != "fp32":
                row[name]["speedup_vs_fp32"] = round(base / row[name]["p50_ms"], 2)
        out[f"batch_{b}"] = row
    return out


def predict_chunked(clf: OnnxClassifier, tensors: np.ndarray, chunk: int = 64) -> np.ndarray:
    return np.concatenate(
        [clf.predict(tensors[i : i + chunk]) for i in range(0, len(tensors), chunk)]
    )


def bench_agreement(
    models: dict[str, dict[str, Any]],
    tensors: np.ndarray,
    vehicle_rows: np.ndarray,
    vehicle_truth: list[str],
) -> dict[str, Any]:
    """INT8 vs FP32 on the same crops, and each model's zero-shot ``vehicles`` top-1 against
    COCO's class on the car, bus and truck boxes (the accuracy a user of the map sees)."""
    fp32 = models["fp32"]["classifier"]
    vehicles = load_label_map("vehicles", fp32.class_names)
    ref = predict_chunked(fp32, tensors)
    out: dict[str, Any] = {"crops": int(tensors.shape[0]), "vehicle_crops": int(vehicle_rows.size)}
    truth = np.array(vehicle_truth)

    def vehicles_top1(probs: np.ndarray) -> float:
        mapped = vehicles.project(probs[vehicle_rows]).argmax(axis=1)
        return round(float(np.mean(np.array(vehicles.labels)[mapped] == truth)), 4)

    out["fp32"] = {"vehicles_top1_vs_coco": vehicles_top1(ref)}
    for name, entry in models.items():
        if name == "fp32":
            continue
        probs = predict_chunked(entry["classifier"], tensors)
        top5 = np.argsort(-probs, axis=1)[:, :5]
        in_top5 = (top5 == ref.argmax(axis=1)[:, None]).any(axis=1)
        mapped = [vehicles.project(p[vehicle_rows]) for p in (ref, probs)]
        out[name] = {
            "top1_agreement": round(top1_agreement(ref, probs), 4),
            "fp32_top1_in_int8_top5": round(float(in_top5.mean()), 4),
            "vehicles_label_agreement": round(top1_agreement(*mapped), 4)
            if vehicle_rows.size
            else None,
            "vehicles_top1_vs_coco": vehicles_top1(probs),
            "top1_prob_abs_diff_mean": round(
                float(np.abs(ref.max(axis=1) - probs[np.arange(len(ref)), ref.argmax(1)]).mean()),
                4,
            ),
        }
    return out


def bench_bus(models: dict[str, dict[str, Any]], assets: Path) -> dict[str, Any]:
    image = cv2.imread(str(assets / "images" / "bus.jpg"))
    detector = load_detector(
        assets / "models" / "yolox_nano.onnx", config=DetectorConfig(conf_threshold=0.35)
    )
    found = detector([image])[0]
    bus = found[found.class_id == detector.class_names.index("bus")]
    out: dict[str, Any] = {"bus_boxes": len(bus)}
    for name, entry in models.items():
        clf = entry["classifier"]
        probs, _ = clf.classify(image, bus.xyxy[:1])
        vehicles = load_label_map("vehicles", clf.class_names)
        mapped = vehicles.project(probs)[0]
        out[name] = {
            "top1": clf.class_names[int(probs[0].argmax())],
            "top1_prob": round(float(probs[0].max()), 3),
            "label": vehicles.labels[int(mapped.argmax())],
            "label_prob": round(float(mapped.max()), 3),
        }
    return out


def bench_crops(clf: OnnxClassifier, assets: Path, runs: int) -> dict[str, Any]:
    """Cut + normalise the crops of one crowd frame's person boxes (like the stage does)."""
    cap = cv2.VideoCapture(str(assets / "video" / "crowd_720p.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    detector = load_detector(
        assets / "models" / "yolox_nano.onnx",
        config=DetectorConfig(conf_threshold=0.3, class_ids=frozenset({0})),
    )
    boxes = detector([frame])[0].xyxy[:2]  # the stage's ~2 crops per frame
    buf = np.empty((len(boxes), 3, *clf.spec.input_hw), np.float32)
    cut_ms, norm_ms = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        cut = cut_crops(frame, boxes, clf.spec)
        t1 = time.perf_counter()
        normalize_batch(cut.pixels, clf.spec, out=buf[: cut.pixels.shape[0]])
        t2 = time.perf_counter()
        cut_ms.append((t1 - t0) * 1e3)
        norm_ms.append((t2 - t1) * 1e3)
    return {"crops": len(boxes), "cut": pct(cut_ms), "normalise": pct(norm_ms)}


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="224", help="input sizes, comma-separated")
    ap.add_argument(
        "--settings",
        default="0:tail",
        help="INT8 settings FLOAT_STEM:FLOAT_HEAD, comma-separated (head: head, tail, none)",
    )
    ap.add_argument("--runs", type=int, default=200, help="timed crops per batch size and model")
    ap.add_argument("--out", type=Path, default=Path("bench/results/classify_int8.json"))
    args = ap.parse_args()
    coco = assets / "coco128"
    if not coco.is_dir():
        print(f"error: {coco} not found; set TAPETUM_ASSETS", file=sys.stderr)
        return 2
    settings = [(int(s.split(":")[0]), s.split(":")[1]) for s in args.settings.split(",")]
    val = load_crop_set(coco, split="val2017")
    vehicle_ids = [i for i, n in enumerate(val.class_names) if n in ("car", "bus", "truck")]
    vehicle_rows = np.flatnonzero(np.isin(val.labels, vehicle_ids))
    vehicle_truth = [val.class_names[int(c)] for c in val.labels[vehicle_rows]]
    result: dict[str, Any] = {
        "machine": machine_info(ort_threads=1),
        "calibration": "256 crops of coco128 train2017 boxes (seed 0)",
        "check": "every coco128 val2017 box crop",
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"exporting efficientnet_lite0 at {size}x{size}…", flush=True)
            models = build_models(size, settings, coco, Path(tmp))
            fp32 = models["fp32"]["classifier"]
            tensors = normalize_batch(crop_pixels(val, fp32.spec), fp32.spec)
            print(f"{size}: speed…", flush=True)
            speed = bench_speed(models, tensors, args.runs)
            print(f"{size}: agreement on {len(val)} val2017 crops…", flush=True)
            section = {
                "models": {
                    name: {k: v for k, v in e.items() if k not in ("path", "classifier")}
                    for name, e in models.items()
                },
                "speed": speed,
                "agreement": bench_agreement(models, tensors, vehicle_rows, vehicle_truth),
                "bus": bench_bus(models, assets),
                "crops": bench_crops(fp32, assets, 200),
            }
            result["sizes"][f"{size}x{size}"] = section
            print_section(size, section)
    write_result(result, args.out)
    print(f"wrote {args.out}")
    return 0


def print_section(size: int, section: dict[str, Any]) -> None:
    fp32_top1 = section["agreement"]["fp32"]["vehicles_top1_vs_coco"]
    print(
        f"{size}x{size} fp32: vehicles top-1 vs COCO {fp32_top1}; bus → "
        f"{section['bus']['fp32']['top1']} / {section['bus']['fp32']['label']}"
    )
    for name, agree in section["agreement"].items():
        if not isinstance(agree, dict) or name == "fp32":
            continue
        speed = ", ".join(
            f"b{b.split('_')[1]} {row[name]['speedup_vs_fp32']}x"
            for b, row in section["speed"].items()
        )
        print(
            f"{size}x{size} {name}: speed-up {speed}; top-1 agreement {agree['top1_agreement']}, "
            f"vehicles {agree['vehicles_label_agreement']}, vehicles top-1 vs COCO "
            f"{agree['vehicles_top1_vs_coco']}; bus → {section['bus'][name]['top1']} "
            f"/ {section['bus'][name]['label']}"
        )
    for b, row in section["speed"].items():
        print(f"  {b}: " + ", ".join(f"{n} {r['p50_ms']} ms" for n, r in row.items()))


if __name__ == "__main__":
    sys.exit(main())
