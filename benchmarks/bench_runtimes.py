"""The default classifier on each inference runtime: FER2013 val accuracy and faces/s, measured alike.

For each runtime (``--runtimes``, default: every one installed) and model (default: the shipped
default): accuracy, macro-F1 and ECE on val exactly as ``ferkit evaluate`` scores it (the
Recognizer's adaptive views), then faces/s over consecutive batches of real val faces at batches of
1, 15 and 64 on ``--threads`` threads (median batch time; real faces, since the mirror view runs only
for faces the first view is unsure of). The detector's side:

    python benchmarks/bench_detectors.py ../shared/facedet --variant "rf_ov=retinaface:runtime='openvino',threads=2" \
        --variant "rf_ort=retinaface:runtime='onnxruntime',threads=2"

The classifier's:

    OMP_NUM_THREADS=2 python benchmarks/bench_runtimes.py --data ../shared/fer2013 [--models fernet-m-q8 fernet-m]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from adaptive_views import faces_per_s  # noqa: E402

from ferkit.core.machine import describe_cpu  # noqa: E402
from ferkit.core.preprocess import prepare_batch  # noqa: E402
from ferkit.core.runtime import available_runtimes  # noqa: E402
from ferkit.core.settings import DEFAULT_MODEL, EXTRA_VIEWS_BELOW  # noqa: E402
from ferkit.training.data import load_faces  # noqa: E402
from ferkit.training.evaluation import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL])
    ap.add_argument("--runtimes", nargs="+", default=available_runtimes())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-accuracy", action="store_true", help="time only")
    args = ap.parse_args()
    print(f"CPU: {describe_cpu()}; {args.threads} threads; extra views below {EXTRA_VIEWS_BELOW}")
    x = prepare_batch(list(load_faces(args.data, split="val", progress=False).images), 48)
    print("| model | runtime | val acc | macro-F1 | ECE | faces/s at batch 1 / 15 / 64 |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for runtime in args.runtimes:
            acc = "" if args.no_accuracy else evaluate(args.data, model, split="val", runtime=runtime)
            score = "| | |" if not acc else f"{acc['accuracy']:.2%} | {acc['macro_f1']:.4f} | {acc['ece']:.4f} |"
            speed = [faces_per_s(model, x, EXTRA_VIEWS_BELOW, b, args.threads, runtime=runtime) for b in (1, 15, 64)]
            print(f"| {model} | {runtime} | {score} " + " / ".join(f"{v:.0f}" for v in speed) + " |", flush=True)


if __name__ == "__main__":
    main()
