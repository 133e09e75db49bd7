"""Calibrate the quality gate's blur and size thresholds on FER2013 val/.

Degrades every val/ face (Gaussian blur of increasing sigma; down-scaling to s
pixels and back) and measures the shipped classifier's accuracy as a function
of the gate's own measurements. A face is "unreadable" where accuracy falls
below the midpoint between clean accuracy and the majority-class rate (what a
guess would score), so the gate rejects exactly the faces on which the model
would mostly be guessing.

    python benchmarks/calibrate_quality.py ../shared/fer2013 [--model fernet-e4] [--limit N]

``--limit N`` uses a seeded, class-stratified N-face subset of val/: the script
classifies val/ 20 times (10 blur levels, 10 sizes), 80 minutes for fernet-e4 here.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from ferkit.core.classification import DEFAULT_MODEL, EmotionClassifier
from ferkit.core.quality import sharpness
from ferkit.training.data import load_faces, stratified_split


def accuracy(clf: EmotionClassifier, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    probs = np.concatenate([clf.predict(list(images[i:i + 256])) for i in range(0, len(images), 256)])
    return probs.argmax(1) == labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--limit", type=int, default=0, help="use a stratified subset of this many val faces (0 = all)")
    args = ap.parse_args()
    fs = load_faces(args.data, "val")
    if 0 < args.limit < len(fs):
        fs = fs.subset(stratified_split(fs.labels, args.limit / len(fs), seed=0)[1])
        print(f"subset: {len(fs)} faces (stratified, seed 0)")
    clf = EmotionClassifier(args.model)
    clean = accuracy(clf, fs.images, fs.labels).mean()
    chance = np.bincount(fs.labels).max() / len(fs)
    target = (clean + chance) / 2
    print(f"clean accuracy {clean:.4f}; majority-class rate {chance:.4f}; 'readable' bar {target:.4f}")

    print("\nblur: sigma, median sharpness, accuracy")
    sharp_all, correct_all = [], []
    for sigma in (0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0):
        imgs = fs.images if sigma == 0 else np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in fs.images])
        sh = np.array([sharpness(im) for im in imgs])
        ok = accuracy(clf, imgs, fs.labels)
        sharp_all.append(sh)
        correct_all.append(ok)
        print(f"  {sigma:4.2f}  {np.median(sh):8.1f}  {ok.mean():.4f}")
    sh, ok = np.concatenate(sharp_all), np.concatenate(correct_all)
    edges = np.quantile(sh, np.linspace(0, 1, 31))
    print("\naccuracy by sharpness bin (all blur levels pooled):")
    threshold = None
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (sh >= lo) & (sh < hi)
        acc = ok[m].mean() if m.any() else float("nan")
        print(f"  [{lo:8.1f}, {hi:8.1f})  n={m.sum():5d}  acc {acc:.4f}")
        if threshold is None and acc >= target:
            threshold = lo
    print(f"\n=> min_sharpness ≈ {threshold:.0f} (first bin whose accuracy reaches the bar)")

    print("\nsize: frame side s px (down-scaled and back), accuracy, detector box side ≈ 0.81·s")
    size_threshold = None
    for s in (6, 8, 10, 12, 14, 16, 20, 24, 32, 48):
        imgs = np.stack([cv2.resize(cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA), (48, 48),
                                    interpolation=cv2.INTER_LINEAR) for im in fs.images])
        acc = accuracy(clf, imgs, fs.labels).mean()
        print(f"  {s:3d}  {acc:.4f}")
        if size_threshold is None and acc >= target:
            size_threshold = s
    # the detector's box is ~0.81 of the FER frame wide (benchmarks/calibrate_crop.py)
    print(f"\n=> min_face_size ≈ {0.81 * size_threshold:.0f} px box side (frame {size_threshold} px)")


if __name__ == "__main__":
    main()
