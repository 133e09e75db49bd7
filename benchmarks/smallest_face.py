"""Smallest face each detector finds: the floor below which a face is not reported at all.

Pastes scikit-image's public-domain NASA portrait (one frontal face, 110 px wide in the 512 px original)
at shrinking sizes onto a plain 640×480 canvas and runs each installed detector on it. A face the
detector finds is then judged by the quality gate (``too_small`` under ``QualityGate.min_face_size``);
a face below the detector's floor never reaches the gate, so ferkit cannot report it.

    python benchmarks/smallest_face.py                 # every installed detector
    python benchmarks/smallest_face.py --detector mtcnn
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACE = (165, 70, 110, 140)  # x, y, w, h of the face in skimage.data.astronaut() (tests/conftest.py)


def scene(portrait: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The portrait resized to ``side`` px on a grey canvas, and where its face now is."""
    canvas = np.full((480, 640, 3), 110, np.uint8)
    x0, y0 = 200, 150
    canvas[y0:y0 + side, x0:x0 + side] = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_AREA)
    k = side / 512
    return canvas, (x0 + FACE[0] * k, y0 + FACE[1] * k, FACE[2] * k, FACE[3] * k)


def found(detections, face) -> bool:
    fx, fy, fw, fh = face
    cx, cy = fx + fw / 2, fy + fh / 2
    return any(d.box[0] <= cx <= d.box[0] + d.box[2] and d.box[1] <= cy <= d.box[1] + d.box[3] for d in detections)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from skimage import data

    from ferkit.core.detection import create_detector, list_detectors
    from ferkit.errors import FerkitError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", action="append", help="detector name (repeatable; default: all installed)")
    args = p.parse_args(argv)
    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    sides = sorted({int(round(320 * 0.92 ** i)) for i in range(40) if 320 * 0.92 ** i >= 24}, reverse=True)
    for name in args.detector or list_detectors():
        try:
            det = create_detector(name)
        except FerkitError as e:
            print(f"{name}: not available ({e})")
            continue
        hits = []
        for side in sides:  # largest first
            img, face = scene(portrait, side)
            hits.append((face[2], found(det.detect(img), face)))
        all_above = min((w for i, (w, _) in enumerate(hits) if all(h for _, h in hits[:i + 1])), default=None)
        smallest = min((w for w, h in hits if h), default=None)
        print(f"{name}: every face from {all_above:.0f} px wide up found; smallest found {smallest:.0f} px"
              if all_above else f"{name}: missed even a {hits[0][0]:.0f} px face")
    return 0


if __name__ == "__main__":
    sys.exit(main())
