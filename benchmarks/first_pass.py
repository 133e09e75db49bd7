"""What a new input shape costs on each runtime: the detector over photos of many sizes, first pass
against later passes, and the classifier's first call at each batch size against its second.

OpenVINO prepares its kernels once per input shape; onnxruntime does not. The RetinaFace input is
padded to a multiple of 32 px so that photos of similar sizes share a shape (docs/runtime.md).

    OMP_NUM_THREADS=2 python benchmarks/first_pass.py ../shared/facedet [--runtimes openvino onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.core.classification import EmotionClassifier
from ferkit.core.detection import create_detector
from ferkit.core.machine import describe_cpu
from ferkit.core.runtime import available_runtimes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("facedet", type=Path, help="folder with annotations.json and images/ (../shared/facedet)")
    ap.add_argument("--runtimes", nargs="+", default=available_runtimes())
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    files = [a["file"] for a in json.loads((args.facedet / "annotations.json").read_text())["images"]]
    photos = [cv2.imread(str(args.facedet / "images" / f)) for f in files]
    print(f"CPU: {describe_cpu()}; {len(photos)} photos, {len({p.shape for p in photos})} sizes")
    for runtime in args.runtimes:
        det = create_detector("retinaface", threads=2, runtime=runtime)
        for k in range(args.passes):
            ms = []
            for p in photos:
                t = time.perf_counter()
                det.detect(p)
                ms.append(1e3 * (time.perf_counter() - t))
            print(f"{runtime} detector pass {k + 1}: mean {statistics.mean(ms):.1f} ms a photo, median "
                  f"{statistics.median(ms):.1f}, max {max(ms):.1f}")
        clf = EmotionClassifier(threads=2, runtime=runtime)
        for k in range(2):
            ms = []
            for batch in range(1, 33):
                x = np.random.default_rng(batch).random((batch, 1, 48, 48), np.float32)
                t = time.perf_counter()
                clf.logits(x, [0] * batch)
                ms.append(1e3 * (time.perf_counter() - t))
            print(f"{runtime} classifier, batches 1..32, call {k + 1} of each: batch 1 {ms[0]:.1f} ms, "
                  f"batch 16 {ms[15]:.1f} ms, all 32 sizes {sum(ms):.0f} ms")


if __name__ == "__main__":
    main()
