"""End-to-end speed of ferkit.Recognizer on photos with several faces.

Prints: import time, model load time, end-to-end ms per photo at 640×480 and
1280×720 (4 faces each, built from the public-domain NASA portrait), the
detector's share, batched classifier throughput (faces/s) and peak RSS.

    python benchmarks/bench_pipeline.py [--detector mtcnn] [--runs 30]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def scene(width: int, height: int, faces: int = 4) -> np.ndarray:
    """A width×height photo with ``faces`` astronaut portraits side by side."""
    import cv2
    from skimage import data

    src = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    canvas = np.full((height, width, 3), 90, np.uint8)
    side = min(width // faces, height)
    tile = cv2.resize(src, (side, side), interpolation=cv2.INTER_AREA)
    for i in range(faces):
        canvas[(height - side) // 2:(height - side) // 2 + side, i * side:(i + 1) * side] = (
            tile if i % 2 == 0 else cv2.flip(tile, 1))
    return canvas


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="mtcnn")
    ap.add_argument("--model", default="fernet-e4", help="classifier (default: the shipped default, fernet-e4)")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ferkit"], capture_output=True, text=True)
    import_ms = sum(int(line.split("|")[1]) for line in imp.stderr.splitlines()
                    if line.startswith("import time:") and line.split("|")[2].strip() == "ferkit") / 1e3
    t = time.perf_counter()
    from ferkit import Recognizer

    rec = Recognizer(model=args.model, detector=args.detector)
    load_s = time.perf_counter() - t
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
          f"detector {args.detector}, model {args.model}")
    print(f"import ferkit: {import_ms:.1f} ms; Recognizer() load: {load_s:.2f} s")
    for w, h in ((640, 480), (1280, 720)):
        img = scene(w, h)
        n = len(rec.analyze(img).faces)
        total = median_ms(lambda img=img: rec.analyze(img), args.runs)
        det = median_ms(lambda img=img: rec.detector.detect(img), args.runs)
        print(f"{w}×{h}, {n} faces: end-to-end {total:.1f} ms/photo ({1e3 / total:.0f} photos/s); "
              f"detector {det:.1f} ms")
    crops = list(np.random.default_rng(0).integers(0, 255, (64, 48, 48), dtype=np.uint8))
    for batch in (1, 8, 64):
        ms = median_ms(lambda b=batch: rec.classifier.predict(crops[:b]), args.runs)
        print(f"classifier batch {batch:2d}: {batch * 1e3 / ms:.0f} faces/s ({ms:.2f} ms/batch)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
