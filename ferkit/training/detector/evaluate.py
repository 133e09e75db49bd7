"""``ferkit evaluate-detector``: AP@0.3/0.5/0.7, recall, false positives per image and ms per image
of any detector (a registered name or an ``.onnx`` file in the RetinaFace head contract) on a
face-box data set, plus a precision-recall picture. No torch: it runs on the core install.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.core.detection.base import FaceDetector, create_detector
from ferkit.core.detection.metrics import detection_scores
from ferkit.core.plots import FONT, save_png
from ferkit.errors import DataError
from ferkit.training.detector.data import load_boxes, parse_folds

IOUS = (0.3, 0.5, 0.7)
_CURVE_COLORS = {0.3: (60, 160, 60), 0.5: (200, 90, 30), 0.7: (40, 40, 200)}


def make_detector(spec: str, threshold: float, threads: int | None = 1) -> FaceDetector:
    """``create_detector(spec)`` at a low score threshold (for the whole precision-recall curve).

    Detectors without a ``threshold`` (or ``threads``) argument are built with their defaults.
    """
    for kwargs in ({"threshold": threshold, "threads": threads}, {"threshold": threshold}, {}):
        try:
            return create_detector(spec, **kwargs)
        except TypeError:
            continue
    return create_detector(spec)


def run_detector(detector: FaceDetector, samples: list, progress: bool = True) -> tuple[dict[str, list], float]:
    """Detections of every sample (``key → [[x, y, w, h, score], ...]``) and the mean ms per image.

    The first image is run once before timing (session warm-up); decoding the file is not timed.
    """
    preds: dict[str, list] = {}
    total = 0.0
    for i, s in enumerate(samples):
        img = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{s.path}: cannot read image")
        if i == 0:
            detector.detect(img)
        t0 = time.perf_counter()
        faces = detector.detect(img)
        total += time.perf_counter() - t0
        preds[s.key] = [[*map(float, f.box), float(f.score)] for f in faces]
        if progress:
            print(f"\r{i + 1}/{len(samples)} images", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return preds, 1000 * total / max(len(samples), 1)


def evaluate_detector(data: str | Path, detector: str = "retinaface", folds: str | None = None, split: str = "val",
                      fmt: str | None = None, threshold: float = 0.02, min_score: float = 0.5,
                      threads: int | None = 1, plot: str | Path | None = None, progress: bool = True) -> dict:
    """Score ``detector`` on ``data`` (see :func:`~ferkit.training.detector.data.load_boxes`).

    threshold: the detector's own score cut (low, so AP sees the whole curve); min_score: the cut
    for recall and false positives per image. Returns ``{"iou": {0.3: {...}, 0.5: ..., 0.7: ...},
    "ms_per_image", "n_images", "n_faces", ...}``; writes the precision-recall PNG to ``plot``.
    """
    samples = load_boxes(data, split, parse_folds(folds), fmt)
    det = make_detector(detector, threshold, threads)
    preds, ms = run_detector(det, samples, progress)
    gt = {s.key: s.boxes for s in samples}
    scores = {iou: detection_scores(gt, preds, iou, min_score) for iou in IOUS}
    result = {
        "data": str(data), "detector": detector, "folds": folds or "", "threshold": threshold, "min_score": min_score,
        "n_images": len(samples), "n_faces": int(sum(len(s.boxes) for s in samples)), "ms_per_image": ms,
        "iou": {iou: {k: v for k, v in m.items() if not k.startswith("curve_")} for iou, m in scores.items()},
        "mean_box_aspect": _aspects(gt, preds),
    }
    if plot:
        title = f"{Path(detector).name} on {Path(data).name}" + (f" folds {folds}" if folds else "")
        result["plot"] = str(save_png(plot, pr_curve_image(scores, title)))
    return result


def _aspects(gt: dict, preds: dict) -> dict:
    """Mean height/width of the ground-truth boxes and of the detections scored ≥ 0.5 (box shape check)."""
    g = np.concatenate([np.asarray(v, np.float64).reshape(-1, 4) for v in gt.values()] or [np.zeros((0, 4))])
    p = np.asarray([d for v in preds.values() for d in v if d[4] >= 0.5], np.float64).reshape(-1, 5)
    ratio = lambda b: float(np.mean(b[:, 3] / np.maximum(b[:, 2], 1e-9))) if len(b) else float("nan")  # noqa: E731
    return {"ground_truth": ratio(g), "detections": ratio(p)}


def pr_curve_image(scores: dict[float, dict], title: str = "", size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """Precision (y) over recall (x), one monotone curve per IoU threshold, AP in the legend (OpenCV)."""
    w, h = size
    left, right, top, bottom = 60, 20, 56, 50
    pw, ph = w - left - right, h - top - bottom
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, title[:70], (10, 22), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(6):
        y = top + ph - int(ph * k / 5)
        x = left + int(pw * k / 5)
        cv2.line(img, (left, y), (left + pw, y), (225, 225, 225), 1)
        cv2.line(img, (x, top), (x, top + ph), (235, 235, 235), 1)
        cv2.putText(img, f"{k / 5:.1f}", (22, y + 4), FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        cv2.putText(img, f"{k / 5:.1f}", (x - 10, top + ph + 18), FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (150, 150, 150), 1)
    cv2.putText(img, "recall", (left + pw // 2 - 20, h - 10), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, "precision", (4, top - 8), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    for idx, (iou, m) in enumerate(sorted(scores.items())):
        rec, prec = np.asarray(m["curve_recall"]), np.asarray(m["curve_precision"])
        color = _CURVE_COLORS.get(iou, (0, 0, 0))
        if len(rec):
            prec = np.maximum.accumulate(prec[::-1])[::-1]  # the interpolated curve AP integrates
            xs = np.concatenate([[0.0], rec, [rec[-1]]])
            ys = np.concatenate([[prec[0]], prec, [0.0]])
            pts = np.stack([left + xs * pw, top + ph - ys * ph], 1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
        ly = top + ph - 20 - idx * 20
        cv2.line(img, (left + 12, ly - 4), (left + 36, ly - 4), color, 3)
        cv2.putText(img, f"IoU {iou:.1f}: AP {m['ap']:.3f}", (left + 42, ly), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def format_result(r: dict) -> list[str]:
    """Human-readable lines of :func:`evaluate_detector`'s result."""
    lines = [f"{r['detector']} on {r['data']}" + (f" folds {r['folds']}" if r["folds"] else "")
             + f": {r['n_images']} images, {r['n_faces']} faces, {r['ms_per_image']:.1f} ms/image"]
    for iou, m in sorted(r["iou"].items()):
        lines.append(f"AP@{iou:.1f}={m['ap']:.4f}  recall={m['recall']:.4f}  FP/img={m['fp_per_image']:.3f}  "
                     f"(score >= {m['min_score']:g}: tp={m['tp']} fp={m['fp']} of {m['n_gt']} faces)")
    a = r["mean_box_aspect"]
    lines.append(f"mean box height/width: ground truth {a['ground_truth']:.2f}, detections {a['detections']:.2f}")
    if r.get("plot"):
        lines.append(f"precision-recall curve: {r['plot']}")
    return lines


def to_json(r: dict) -> str:
    """An evaluation result as indented JSON (IoU thresholds as one-decimal keys)."""
    return json.dumps({**r, "iou": {f"{k:.1f}": v for k, v in r["iou"].items()}}, indent=1)
