"""Ship a static-int8 (QDQ) copy of a shipped single-model classifier, with its own sidecar and model card.

The shipped file's members are rebuilt in PyTorch (`ferkit.training.onnx_weights`), exported
again with the given test-time views, quantized by onnxruntime (per-channel int8
weights, uint8 activations) calibrated on 512 FER2013 *training* faces, scored on
val through the runtime the Recognizer uses, and written as ``ferkit/weights/NAME.onnx``.

    python scripts/quantize_shipped.py fernet-m fernet-m-q8 --data ../shared/fer2013 [--tta flip] [--runtime-views]

``--runtime-views`` writes a one-view graph and a sidecar saying ``"tta_in_graph": false``: the runtime
then runs the ``--tta`` views around it (the same arithmetic and cost), and the video loop can run one
view per classification (ferkit/core/classification.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferkit.core.classification import WEIGHTS_DIR, EmotionClassifier, resolve_model
from ferkit.core.preprocess import normalize
from ferkit.training.export import calibration_images, evaluate_onnx, model_card, quantize_static_int8, to_onnx
from ferkit.training.onnx_weights import members_from_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("name")
    ap.add_argument("--data", default="../shared/fer2013")
    ap.add_argument("--tta", default="flip")
    ap.add_argument("--runtime-views", action="store_true", help="views run by the runtime, not in the graph")
    args = ap.parse_args()
    info = resolve_model(args.source)
    val = Path(args.data) / "val"
    calib = calibration_images(val)
    members = members_from_onnx(info.path, info.meta["architecture"], calib, info.input_size)
    out = WEIGHTS_DIR / f"{args.name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"  # the float graph with the views inside: the parity reference
        to_onnx(members, fp32, tta=args.tta, input_size=info.input_size)
        graph = fp32
        if args.runtime_views:
            graph = Path(tmp) / "one-view.onnx"
            to_onnx(members, graph, tta="none", input_size=info.input_size)
        # the runtime shows a one-view graph both views, so it is calibrated on both
        seen = np.concatenate([calib, calib[:, :, ::-1]]) if args.runtime_views else calib
        quantize_static_int8(graph, out, seen, info.input_size)
        if args.runtime_views:  # the sidecar must say so before the runtime loads the file for the check
            out.with_suffix(".json").write_text(json.dumps({"tta": args.tta, "tta_in_graph": False}))
        x = normalize(calib[:64, None].astype(np.float32))
        diff = np.abs(EmotionClassifier(out, calibrated=False, extra_views_below=1.0).logits(x)
                      - EmotionClassifier(fp32, calibrated=False).logits(x))
    report = {k: v for k, v in info.meta.items() if k not in ("val", "temperature", "int8")}
    report.update({"name": args.name, "file": out.name, "tta": args.tta, "tta_in_graph": not args.runtime_views,
                   "fp16_weights": False, "int8_weights": False, "int8_qdq": True,
                   "parity_max_abs_diff": float(diff.max()), "exported": dt.date.today().isoformat(),
                   "command": "python scripts/quantize_shipped.py " + " ".join(sys.argv[1:]),
                   "note": f"{args.source} quantized to static int8 (onnxruntime QDQ: per-channel 7-bit weights, "
                           "so that CPUs without VNNI compute the same integers as those with it, "
                           "uint8 activations, calibrated on 512 FER2013 training faces); int8 arithmetic. "
                           + ("The graph holds one view, calibrated on those faces and their mirrors; the "
                              "runtime runs it on each face and its mirror and "
                              "averages the logits, as a graph with the views inside would, so video can run "
                              "one view per classification. " if args.runtime_views else "") +
                           "The parity figure is the largest logit difference from the float32 graph on "
                           "64 calibration faces."})
    report.update(evaluate_onnx(out, val, progress=False))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(model_card(report))
    print(f"{out}: val {report['val']['accuracy']:.2%}, macro-F1 {report['val']['macro_f1']:.3f}, "
          f"T {report['temperature']}, parity {report['parity_max_abs_diff']:.3f}")


if __name__ == "__main__":
    main()
