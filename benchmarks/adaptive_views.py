"""Adaptive test-time views: run the mirror view only for faces the first view is unsure of.

For each network (a shipped model name, its ensemble members one by one, or a
training checkpoint ``.pt``) this scores FER2013 val with the face alone, with the
face and its mirror (the default model's two views), and with the mirror run only
where the first view's top probability is under a threshold, and prints accuracy,
calibration error and the share of faces that needed the second view at each
threshold. A threshold is only trustworthy where accuracy is flat around it on
networks that did not pick it, hence the several networks.

    python benchmarks/adaptive_views.py --data ../shared/fer2013 fernet-m-q8 fernet-e4 runs/kd/best.pt
    OMP_NUM_THREADS=2 python benchmarks/adaptive_views.py --time fernet-m-q8   # + faces/s on val faces

``--time`` also measures faces/s of a shipped model whose views run outside its graph, at the
Recognizer's setting and with every view, on the val faces in batches of 1, 15 and 64
(real faces: on random pixels the first view's confidence would mean nothing).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ferkit.core.catalog import median_call_seconds
from ferkit.core.classification import EmotionClassifier, resolve_model, softmax
from ferkit.core.machine import describe_cpu
from ferkit.core.preprocess import prepare_batch
from ferkit.core.settings import EXTRA_VIEWS_BELOW
from ferkit.training.data import load_faces
from ferkit.training.export import calibration_images
from ferkit.training.metrics import expected_calibration_error

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


def one_view_graphs(candidate: str, calib: np.ndarray, tmp: Path) -> list[tuple[str, Path]]:
    """(label, one-view ONNX file) for each network in ``candidate``."""
    info = None if candidate.endswith(".pt") else resolve_model(candidate)
    if info is not None and info.meta.get("tta_in_graph", True) is False:
        return [(candidate, info.path)]  # already a one-view graph (the default model)
    from ferkit.training.export import to_onnx
    from ferkit.training.loop import load_checkpoint
    from ferkit.training.onnx_weights import members_from_onnx

    if info is None:
        model, cfg = load_checkpoint(candidate)
        members, archs = [model], [cfg.model]
    else:
        archs = info.meta["architecture"]
        members = members_from_onnx(info.path, archs, calib, info.input_size)
    out = []
    for i, (m, arch) in enumerate(zip(members, archs)):
        path = tmp / f"{Path(candidate).stem}-{i}.onnx"
        to_onnx([m], path, tta="none")
        out.append((f"{candidate} [{i}: {arch}]" if len(members) > 1 else candidate, path))
    return out


def report(label: str, first: np.ndarray, mirror: np.ndarray, y: np.ndarray) -> None:
    """Accuracy, ECE and second-view share per threshold for one network's two views' logits."""
    p1, both = softmax(first), softmax((first + mirror) / 2)
    print(f"\n{label}: one view {np.mean(p1.argmax(1) == y):.2%}, both views {np.mean(both.argmax(1) == y):.2%}")
    print("| second view when top probability < | faces given it | views per face | val acc | ECE |")
    print("|---|---|---|---|---|")
    for t in THRESHOLDS:
        need = p1.max(1) < t
        p = np.where(need[:, None], both, p1)
        print(f"| {t:.2f} | {need.mean():.1%} | {1 + need.mean():.2f} | {np.mean(p.argmax(1) == y):.2%} | "
              f"{expected_calibration_error(y, p):.4f} |")


def faces_per_s(model: str, x: np.ndarray, below: float, batch: int, threads: int, seconds: float = 3.0,
                runtime: str = "auto") -> float:
    """Faces/s of ``model`` over consecutive batches of val faces (median batch time)."""
    clf = EmotionClassifier(model, threads=threads, extra_views_below=below, runtime=runtime)
    batches = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]
    return batch / median_call_seconds(clf.logits, batches, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--time", action="store_true", help="also time the candidates whose views run outside the graph")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    val = load_faces(args.data, split="val", progress=False)
    x = prepare_batch(list(val.images), 48)
    calib = calibration_images(Path(args.data) / "val")  # training faces, for rebuilding members' BatchNorm
    with tempfile.TemporaryDirectory() as tmp:
        for cand in args.candidates:
            for label, path in one_view_graphs(cand, calib, Path(tmp)):
                clf = EmotionClassifier(path, calibrated=False)
                if clf.runtime_views > 1:
                    first, mirror = clf.logits(x, [0] * len(x)), clf.logits(x, [1] * len(x))
                else:
                    first, mirror = clf.logits(x), clf.logits(np.ascontiguousarray(x[..., ::-1]))
                report(label, first, mirror, val.labels)
                if args.time and clf.runtime_views > 1:
                    print(f"\nfaces/s of {label} on val faces, {args.threads} threads, CPU: {describe_cpu()}")
                    for below in (EXTRA_VIEWS_BELOW, 1.0):
                        speed = [faces_per_s(str(path), x, below, b, args.threads) for b in (1, 15, 64)]
                        print(f"  extra views below {below:.2f}: batch 1 / 15 / 64: "
                              + " / ".join(f"{v:.0f}" for v in speed))


if __name__ == "__main__":
    main()
