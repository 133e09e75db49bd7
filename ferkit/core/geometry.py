"""Box overlap, written once: NMS, the video tracker and detector evaluation all use :func:`overlap`."""

from __future__ import annotations

import numpy as np

from ferkit.errors import ConfigError


def corners(xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` boxes ``x, y, w, h`` → corners ``x1, y1, x2, y2``."""
    b = np.asarray(xywh, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def overlap(a: np.ndarray, b: np.ndarray, mode: str = "iou") -> np.ndarray:
    """Pairwise overlap ``(N, M)`` of corner boxes ``a (N, 4)`` and ``b (M, 4)`` (``x1, y1, x2, y2``).

    ``mode="iou"``: intersection over union; ``"min"``: intersection over the smaller area
    (MTCNN's last NMS stage uses it to drop a small box nested in a bigger one). Empty or
    degenerate boxes overlap nothing (0).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    if mode == "min":
        denom = np.minimum(area_a[:, None], area_b[None, :])
    elif mode == "iou":
        denom = area_a[:, None] + area_b[None, :] - inter
    else:
        raise ConfigError(f"unknown overlap mode {mode!r}; use iou or min")
    return np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of boxes given as ``x, y, w, h``."""
    return overlap(corners(a), corners(b))
