"""Face-detection scores (numpy only): VOC all-point AP, recall, false positives per image.

The definition is the one of ``../shared/facedet/eval_facedet.py`` (re-implemented, not imported):
all detections of all images sorted by score (descending, ties in input order); a detection is a
true positive when its best-IoU ground-truth box in the same image has IoU ≥ the threshold and was
not taken by a higher-scored detection, else a false positive; precision is made monotone and
integrated over every recall step. Boxes are ``[x, y, w, h]`` continuous pixel rectangles; the
IoU is :func:`ferkit.core.geometry.iou_xywh`, the one overlap NMS and the tracker use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ferkit.core.geometry import iou_xywh


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated average precision (PASCAL VOC 2010+)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def detection_scores(ground_truth: Mapping[str, np.ndarray], predictions: Mapping[str, Sequence],
                     iou: float = 0.5, min_score: float = 0.0) -> dict:
    """Score detections against ground truth at one IoU threshold.

    ground_truth: image key → ``(M, 4)`` boxes; predictions: image key → rows ``[x, y, w, h, score]``
    (a missing key = no detections; keys not in ``ground_truth`` are ignored). AP uses every
    detection; recall and false positives per image only those scored ≥ ``min_score``.
    Returns ``ap, recall, fp_per_image, tp, fp, n_gt, n_images, n_detections, iou, min_score`` and
    the curve (``curve_recall``, ``curve_precision``, ``curve_score``: numpy arrays, score order).
    """
    gt = {k: np.asarray(v, np.float64).reshape(-1, 4) for k, v in ground_truth.items()}
    n_gt = int(sum(len(v) for v in gt.values()))
    dets = []
    for key in gt:
        for d in predictions.get(key, []) or []:
            dets.append((float(d[4]), len(dets), key, [float(v) for v in d[:4]]))
    dets.sort(key=lambda t: (-t[0], t[1]))
    taken = {k: np.zeros(len(v), bool) for k, v in gt.items()}
    tp = np.zeros(len(dets))
    for i, (_, _, key, box) in enumerate(dets):
        g = gt[key]
        if len(g):
            ious = iou_xywh(np.asarray([box]), g)[0]
            j = int(np.argmax(ious))
            if ious[j] >= iou and not taken[key][j]:
                taken[key][j] = True
                tp[i] = 1
    fp = 1 - tp
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / max(n_gt, 1)
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    scores = np.array([d[0] for d in dets])
    keep = scores >= min_score
    n_img = len(gt)
    return {
        "ap": voc_ap(rec, prec) if dets else 0.0,
        "recall": int(tp[keep].sum()) / max(n_gt, 1),
        "fp_per_image": int(fp[keep].sum()) / max(n_img, 1),
        "tp": int(tp[keep].sum()), "fp": int(fp[keep].sum()), "n_gt": n_gt, "n_images": n_img,
        "n_detections": int(keep.sum()), "iou": float(iou), "min_score": float(min_score),
        "curve_recall": rec, "curve_precision": prec, "curve_score": scores,
    }
