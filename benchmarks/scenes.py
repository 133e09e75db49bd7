"""Test scenes made of real photos with known face boxes (FDDB, `../shared/facedet`), for benchmarks.

The photos are read in place, never copied into the repository. A scene is a grey
canvas with whole FDDB photos pasted on a grid, each scaled to its cell; the boxes
of every pasted face are mapped into the scene, so a scene's ground truth is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

FACEDET = Path(__file__).resolve().parents[1] / ".." / "shared" / "facedet"


def load_annotations(root: Path = FACEDET) -> list[dict]:
    """FDDB entries: ``{"file", "width", "height", "fold", "boxes": [[x, y, w, h], ...]}``."""
    return json.loads((root / "annotations.json").read_text())["images"]


def crowd_scene(width: int = 640, height: int = 480, min_faces: int = 15, min_face_px: float = 24,
                root: Path = FACEDET) -> tuple[np.ndarray, list[list[float]]]:
    """A ``width``×``height`` BGR scene of FDDB photos on a 2×2 grid holding at least ``min_faces`` faces
    whose boxes stay at least ``min_face_px`` wide after scaling; returns (image, [[x, y, w, h], ...]).

    Photos are taken in order of face count (most first, ties by file name), so the scene is the same on
    every machine that has the data.
    """
    entries = sorted(load_annotations(root), key=lambda e: (-len(e["boxes"]), e["file"]))
    canvas = np.full((height, width, 3), 110, np.uint8)
    cw, ch = width // 2, height // 2
    boxes: list[list[float]] = []
    cells = [(c % 2 * cw, c // 2 * ch) for c in range(4)]
    for entry, (x0, y0) in zip(entries, cells):
        img = cv2.imread(str(root / "images" / entry["file"]), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"{root / 'images' / entry['file']}: cannot read (is ../shared/facedet here?)")
        s = min(cw / img.shape[1], ch / img.shape[0])
        small = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        ox, oy = x0 + (cw - small.shape[1]) // 2, y0 + (ch - small.shape[0]) // 2
        canvas[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        boxes += [[ox + x * s, oy + y * s, w * s, h * s] for x, y, w, h in entry["boxes"] if w * s >= min_face_px]
    if len(boxes) < min_faces:
        raise ValueError(f"only {len(boxes)} faces of at least {min_face_px} px fit a {width}×{height} scene")
    return canvas, boxes
