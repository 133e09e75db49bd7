"""What video's views in turn cost in accuracy: each view of a runtime-views model alone, the mean of their
probabilities (what a face that holds still gets from the video loop) and the runtime's own average of
their logits (the photo path), on a labelled face set.

    python benchmarks/views_in_turn.py --data ../shared/fer2013 [--model fernet-m-q8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ferkit.core.classification import EmotionClassifier
from ferkit.core.settings import DEFAULT_MODEL
from ferkit.training.data import load_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    faces = load_faces(Path(args.data), args.split, progress=False)
    labels = np.asarray(faces.labels)
    clf = EmotionClassifier(args.model)
    if clf.runtime_views < 2:
        raise SystemExit(f"{clf.name}: its views are inside its graph; video runs them all on every classification")
    n = len(labels)
    views = [clf.predict(faces.images, [v] * n) for v in range(clf.runtime_views)]
    print(f"{clf.name} on {args.data}/{args.split} (n = {n}):")
    for v, p in enumerate(views):
        print(f"  view {v} alone: {(p.argmax(1) == labels).mean():.2%}")
    print(f"  mean of the views' probabilities (video, a face holding still): "
          f"{(np.mean(views, 0).argmax(1) == labels).mean():.2%}")
    both = clf.predict(faces.images)
    print(f"  the runtime's average of their logits (photos): {(both.argmax(1) == labels).mean():.2%}")


if __name__ == "__main__":
    main()
