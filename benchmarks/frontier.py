"""Accuracy per millisecond: every candidate classifier in every runtime form, measured the same way.

For each candidate (a training checkpoint ``.pt``, a shipped model name or an
``.onnx`` export) and each form — test-time views ``none``/``flip`` × float32 or
onnxruntime static int8 QDQ calibrated on 512 training faces — the candidate is
exported to ONNX, scored on the validation set through the runtime the
Recognizer uses, and timed at batches of 1, 15 and 64 faces.

    python benchmarks/frontier.py --data ../shared/fer2013 fernet-m runs/kd_m/best.pt [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from ferkit.core.catalog import median_call_seconds
from ferkit.core.classification import EmotionClassifier, resolve_model
from ferkit.core.machine import describe_cpu
from ferkit.core.preprocess import TTA_VIEWS
from ferkit.training.architectures import count_params
from ferkit.training.export import calibration_images, count_macs, evaluate_onnx, quantize_static_int8, to_onnx
from ferkit.training.loop import load_checkpoint
from ferkit.training.onnx_weights import members_from_onnx


def members_of(candidate: str, calib: np.ndarray) -> tuple[list[torch.nn.Module], list[str]]:
    if candidate.endswith(".pt"):
        model, cfg = load_checkpoint(candidate)
        return [model], [cfg.model]
    info = resolve_model(candidate)
    archs = info.meta["architecture"]
    return members_from_onnx(info.path, archs, calib, info.input_size), archs


def faces_per_s(path: Path, threads: int, batch: int, seconds: float = 2.0) -> float:
    clf = EmotionClassifier(path, threads=threads, calibrated=False)
    x = np.random.default_rng(0).standard_normal((batch, 1, 48, 48)).astype(np.float32)
    return batch / median_call_seconds(clf.logits, [x], seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--views", nargs="*", default=["none", "flip"])
    args = ap.parse_args()
    val = Path(args.data) / "val"
    calib = calibration_images(val)
    print(f"CPU: {describe_cpu()}; {args.threads} onnxruntime threads; int8 calibrated on {len(calib)} training "
          f"faces; scored on {val}")
    print("| candidate | views | weights | val acc | macro-F1 | params | MMACs/face | faces/s b1 | b15 | b64 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cand in args.candidates:
            members, archs = members_of(cand, calib)
            params = sum(count_params(m) for m in members)
            macs = sum(count_macs(m) for m in members)
            for views in args.views:
                fp32 = Path(tmp) / f"{Path(cand).stem}-{views}.onnx"
                to_onnx(members, fp32, tta=views)
                forms = [("fp32", fp32), ("int8 QDQ", quantize_static_int8(fp32, fp32.with_suffix(".int8.onnx"),
                                                                          calib, 48))]
                for form, path in forms:
                    v = evaluate_onnx(path, val, progress=False)["val"]
                    speed = [faces_per_s(path, args.threads, b) for b in (1, 15, 64)]
                    print(f"| {cand} ({'+'.join(archs)}) | {views} | {form} | {v['accuracy']:.2%} | "
                          f"{v['macro_f1']:.3f} | {params / 1e6:.2f} M | {macs * TTA_VIEWS[views] / 1e6:.0f} | "
                          + " | ".join(f"{s:.0f}" for s in speed) + " |", flush=True)


if __name__ == "__main__":
    main()
