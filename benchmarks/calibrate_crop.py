"""Measure where FER2013's faces sit in their 48×48 frame, as a detector sees them.

Runs the detector on up-scaled (and border-padded) FER2013 training images and
prints the median landmark positions and the median box in 48×48 coordinates.
These are ferkit.core.preprocess.FER_TEMPLATE and FER_BOX_FRAME: aligning detected
faces to them makes inference crops look like the training crops. Different
detectors put their five points in different places (RetinaFace's mouth corners
sit ~1.4 px higher than MTCNN's), so re-run this when the default detector changes.

``--check-model NAME`` then measures what the template is for: the classifier's
accuracy on val/ faces that went through detection and alignment (up-scaled and
padded like above), with the shipped template and with the one just measured.

    python benchmarks/calibrate_crop.py ../shared/fer2013 --n 1500 [--detector retinaface] \\
        [--check-model fernet-m --check-n 1500]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from ferkit.core import preprocess
from ferkit.core.detection import DEFAULT_DETECTOR, FaceDetector, create_detector
from ferkit.training.data import load_faces


def upscaled(face48: np.ndarray, scale: int) -> tuple[np.ndarray, int]:
    """A 48×48 grey face → BGR image ``scale`` times larger with a replicated border; returns it and the pad."""
    pad = 48 * scale // 2
    big = cv2.resize(face48, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), pad


def check_accuracy(det: FaceDetector, model: str, data: str, n: int, scale: int,
                   templates: dict[str, np.ndarray]) -> None:
    """Print the classifier's val accuracy through detection + alignment with each template."""
    from ferkit.core.classification import EmotionClassifier

    fs = load_faces(data, "val")
    idx = np.random.default_rng(1).choice(len(fs), min(n, len(fs)), replace=False)
    clf = EmotionClassifier(model)
    direct = clf.predict(list(fs.images[idx])).argmax(1) == fs.labels[idx]
    crops: dict[str, list[np.ndarray]] = {k: [] for k in templates}
    found = []
    for i in idx:
        bgr, _ = upscaled(fs.images[i], scale)
        dets = det.detect(bgr)
        if not dets or dets[0].landmarks is None:
            continue
        found.append(i)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        for name, template in templates.items():
            preprocess.FER_TEMPLATE = template  # crop_face reads the module constant
            crops[name].append(preprocess.crop_face(grey, dets[0].box, dets[0].landmarks))
    labels = fs.labels[np.array(found)]
    on_found = np.isin(idx, found)
    print(f"\n{model} on {len(found)}/{len(idx)} val faces the detector found (seed 1): "
          f"the 48×48 originals directly {direct[on_found].mean():.4f}")
    for name, cs in crops.items():
        acc = (clf.predict(cs).argmax(1) == labels).mean()
        print(f"  detected + aligned to the {name} template: {acc:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="FER2013 class-folder root")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--check-model", default=None, help="also measure this classifier's accuracy with each template")
    ap.add_argument("--check-n", type=int, default=1500, help="val faces for --check-model (default 1500)")
    args = ap.parse_args()
    fs = load_faces(args.data, "train")
    idx = np.random.default_rng(0).choice(len(fs), min(args.n, len(fs)), replace=False)
    det = create_detector(args.detector)
    s = args.scale
    lms, boxes = [], []
    for i in idx:
        bgr, pad = upscaled(fs.images[i], s)
        found = det.detect(bgr)
        if not found:
            continue
        d = found[0]
        x, y, w, h = d.box
        boxes.append([(x - pad) / s, (y - pad) / s, w / s, h / s])
        if d.landmarks is not None:
            lms.append((d.landmarks - pad) / s)
    boxes = np.array(boxes)
    print(f"{args.detector}: detected a face in {len(boxes)}/{len(idx)} images")
    bx, by, bw, bh = np.median(boxes, 0)
    print(f"median box in the 48 frame: x={bx:.2f} y={by:.2f} w={bw:.2f} h={bh:.2f}")
    cx, cy = bx + bw / 2, by + bh / 2
    print(f"FER_BOX_FRAME = ({(24 - cx) / bw:.3f}, {(24 - cy) / bh:.3f}, {48 / max(bw, bh):.3f})")
    if lms:
        med = np.round(np.median(np.array(lms), 0), 2)
        print("FER_TEMPLATE =", [[round(float(v), 2) for v in p] for p in med])
        if args.check_model:
            templates = {"shipped": preprocess.FER_TEMPLATE.copy(), "measured": med.astype(np.float32)}
            check_accuracy(det, args.check_model, args.data, args.check_n, s, templates)


if __name__ == "__main__":
    main()
