"""Cost of every registry architecture at inference: params, MMACs per face and CPU faces/s.

Speed does not depend on the weights, so each model is exported with random
weights (flip TTA in the graph, as shipped) and timed in onnxruntime, batch 64.
Accuracy comes from training logs / model cards, not from here.

    python benchmarks/bench_classifiers.py [--models fernet_m vgg16 ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ferkit.core.classification import EmotionClassifier
from ferkit.core.preprocess import TTA_VIEWS
from ferkit.training.architectures import count_params, create_architecture, list_architectures
from ferkit.training.export import count_macs, to_onnx


def faces_per_s(onnx_path: Path, threads: int, batch: int = 64, runs: int = 20) -> float:
    clf = EmotionClassifier(onnx_path, threads=threads, calibrated=False)
    x = np.random.default_rng(0).standard_normal((batch, 1, 48, 48)).astype(np.float32)
    for _ in range(3):
        clf.logits(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        clf.logits(x)
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list_architectures())
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{'model':10s} {'params':>8s} {'MMACs/face':>10s} {'faces/s':>8s}  (batch 64, {args.threads} threads, "
          "flip TTA in graph)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = create_architecture(name).eval()
            path = Path(tmp) / f"{name}.onnx"
            to_onnx([model], path)
            print(f"{name:10s} {count_params(model) / 1e6:7.2f}M {TTA_VIEWS['flip'] * count_macs(model) / 1e6:10.0f} "
                  f"{faces_per_s(path, args.threads):8.0f}", flush=True)


if __name__ == "__main__":
    main()
