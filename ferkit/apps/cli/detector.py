"""``ferkit train-detector | evaluate-detector | export-detector`` (face-detector training side).

Training and export need the ``train`` extra (torch, onnx); ``evaluate-detector`` runs on the core
install. Library errors are :class:`~ferkit.errors.FerkitError`\\ s: the CLI's ``main`` prints them
as one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ferkit.apps.cli.common import emit
from ferkit.errors import FerkitError


def add_parsers(sub) -> None:
    """Register the three detector commands on the CLI's subparsers."""
    from ferkit.training.detector.config import HELP, DetectorTrainConfig

    p = sub.add_parser("train-detector", help="train a face detector (BlazeFace from scratch, or fine-tune the "
                       "shipped RetinaFace); needs ferkit[train]",
                       description="Train on annotations.json, WIDER FACE, FDDB or VOC face boxes. Checkpoint "
                       "every epoch (out/last.pt), log.csv, --resume, --time-budget.")
    for f in fields(DetectorTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        typ = {"int": int, "float": float}.get(str(f.type), str)
        p.add_argument(flag, type=typ, default=default, required=f.default is MISSING,
                       help=f"{HELP.get(f.name, '')} (default {default!r})".strip())
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt with its own settings "
                   "(--epochs and --time-budget may change)")
    p.set_defaults(func=_cmd_train_detector)

    p = sub.add_parser("evaluate-detector", help="AP@0.3/0.5/0.7, recall, FP/img, ms/img of a face detector "
                       "on face boxes; precision-recall PNG")
    p.add_argument("--data", required=True, help="annotations.json (or its folder), WIDER FACE, FDDB or VOC root")
    p.add_argument("--detector", default="retinaface", help="detector name (`ferkit models`) or an .onnx file "
                   "in the RetinaFace head contract (e.g. from export-detector); default retinaface")
    p.add_argument("--folds", default=None, help="score these folds only, e.g. 4,5")
    p.add_argument("--split", default="val", help="WIDER FACE split (default val)")
    p.add_argument("--format", default=None, choices=("json", "wider", "fddb", "voc"), help="default: guessed")
    p.add_argument("--threshold", type=float, default=0.02, help="detector score threshold: low, so AP sees "
                   "the whole precision-recall curve (default 0.02)")
    p.add_argument("--min-score", type=float, default=0.5, help="score cut for recall and FP/img (default 0.5)")
    p.add_argument("--plot", default="detector_pr.png", help="precision-recall PNG ('' = none)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_evaluate_detector)

    p = sub.add_parser("export-detector", help="train-detector checkpoint → ONNX (RetinaFace head contract) "
                       "with parity check and model card; needs ferkit[train]")
    p.add_argument("checkpoint", help="a train-detector .pt (last.pt or best.pt)")
    p.add_argument("-o", "--out", required=True, help="output .onnx (card written beside it as .md and .json)")
    p.add_argument("--data", default=None, help="measure AP on this data set for the card (with --folds)")
    p.add_argument("--folds", default=None, help="folds of --data to measure on, e.g. 4,5")
    p.add_argument("--note", default="", help="free text for the model card")
    p.set_defaults(func=_cmd_export_detector)


def _need_torch(what: str):
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise FerkitError(f"{what} needs PyTorch: pip install 'ferkit[train]' ({e})") from None


def _cmd_train_detector(args: argparse.Namespace) -> int:
    from ferkit.training.detector.config import DetectorTrainConfig

    _need_torch("train-detector")
    from ferkit.training.detector.loop import train_detector

    cfg = DetectorTrainConfig(**{f.name: getattr(args, f.name) for f in fields(DetectorTrainConfig)})
    s = train_detector(cfg, resume=args.resume)
    line = (f"{s['epochs_done']} epochs ({s['steps']} steps, {s['elapsed']:.0f} s) on {s['n_train_images']} images"
            + (", stopped by --time-budget" if s["stopped_by_budget"] else "") + f"; checkpoint {s['checkpoint']}")
    if "best_val_ap50" in s:
        line += f"; best val AP@0.5 {s['best_val_ap50']:.4f}"
    emit([line])
    return 0


def _cmd_evaluate_detector(args: argparse.Namespace) -> int:
    from ferkit.training.detector.evaluate import evaluate_detector, format_result, to_json

    if not Path(args.data).exists():
        raise FerkitError(f"{args.data}: no such file or folder")
    r = evaluate_detector(args.data, args.detector, args.folds, args.split, args.format, args.threshold,
                          args.min_score, plot=args.plot or None, progress=sys.stderr.isatty())
    emit([to_json(r)] if args.json else format_result(r))
    return 0


def _cmd_export_detector(args: argparse.Namespace) -> int:
    _need_torch("export-detector")
    from ferkit.training.detector.export import export_detector

    command = " ".join(["ferkit", "export-detector", *map(shlex.quote, sys.argv[2:])]) if len(sys.argv) > 2 else ""
    f = export_detector(args.checkpoint, args.out, args.data, args.folds, args.note, command)
    line = f"wrote {args.out} ({f['bytes']:,} bytes; parity {f['parity_max_abs_diff']:.1e})"
    if "evaluation" in f:
        e = f["evaluation"]
        line += f"; AP@0.5 {e['ap@0.5']:.4f} (0.3: {e['ap@0.3']:.4f}, 0.7: {e['ap@0.7']:.4f})"
    emit([line + f"; card {Path(args.out).with_suffix('.md')}"])
    return 0
