"""Measure where FER2013's faces sit in their 48×48 frame, as the default detector sees them.

Runs the detector on up-scaled (and border-padded) FER2013 training images and
prints the median landmark positions and the median box in 48×48 coordinates.
These are ferkit.preprocess.FER_TEMPLATE and FER_BOX_FRAME: aligning detected
faces to them makes inference crops look like the training crops.

    python benchmarks/calibrate_crop.py ../shared/fer2013 --n 2000
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from ferkit.data import load_faces
from ferkit.detection import create_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="FER2013 class-folder root")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--detector", default="mtcnn")
    ap.add_argument("--scale", type=int, default=3)
    args = ap.parse_args()
    fs = load_faces(args.data, "train")
    idx = np.random.default_rng(0).choice(len(fs), min(args.n, len(fs)), replace=False)
    det = create_detector(args.detector)
    s, pad = args.scale, 48 * args.scale // 2
    lms, boxes = [], []
    for i in idx:
        big = cv2.resize(fs.images[i], None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = det.detect(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
        if not found:
            continue
        d = found[0]
        x, y, w, h = d.box
        boxes.append([(x - pad) / s, (y - pad) / s, w / s, h / s])
        if d.landmarks is not None:
            lms.append((d.landmarks - pad) / s)
    boxes = np.array(boxes)
    print(f"detected a face in {len(boxes)}/{len(idx)} images")
    bx, by, bw, bh = np.median(boxes, 0)
    print(f"median box in the 48 frame: x={bx:.2f} y={by:.2f} w={bw:.2f} h={bh:.2f}")
    cx, cy = bx + bw / 2, by + bh / 2
    print(f"FER_BOX_FRAME = ({(24 - cx) / bw:.3f}, {(24 - cy) / bh:.3f}, {48 / max(bw, bh):.3f})")
    if lms:
        med = np.median(np.array(lms), 0)
        print("FER_TEMPLATE =", np.round(med, 2).tolist())


if __name__ == "__main__":
    main()
