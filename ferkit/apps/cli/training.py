"""``ferkit train``, ``evaluate`` and ``export`` (the torch side; ``evaluate`` also runs without torch)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ferkit.apps.cli.common import EXIT_OK
from ferkit.errors import FerkitError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train an emotion classifier (needs ferkit[train])",
                       description="Train on FER2013 in class folders, fer2013.csv or a prefixed flat folder. "
                       "Checkpoints every epoch; --resume continues an interrupted run.")
    p.set_defaults(func=_cmd_train)
    _add_config_flags(p)


def _train_config_class():
    from ferkit.training.config import TrainConfig

    return TrainConfig


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    # Flags come straight from TrainConfig's fields, so the config and CLI cannot drift apart.
    import dataclasses
    import typing

    cls = _train_config_class()
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if hints[f.name] in (bool, bool | None):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=f"(default {'auto' if default is None else default})")
        else:
            typ = {int: int, float: float}.get(hints[f.name], str)
            p.add_argument(flag, type=typ, default=default, help=f"(default {default})")


def _cmd_train(args: argparse.Namespace) -> int:
    cls = _train_config_class()
    try:
        from ferkit.training.loop import train
    except ImportError as e:
        raise FerkitError(f"training needs PyTorch: pip install 'ferkit[train]' ({e})") from None

    cfg = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
    summary = train(cfg)
    print(f"best val accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}; "
          f"checkpoint {Path(cfg.out) / 'best.pt'}")
    return EXIT_OK


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, F1, confusion matrix and calibration on a labelled set")
    p.add_argument("--data", required=True, help="class-folder directory (or fer2013.csv with --split)")
    p.add_argument("--split", default=None, help="train/val/test sub-folder or CSV Usage")
    p.add_argument("--model", default=None, help="shipped name, .onnx file or training checkpoint .pt")
    p.add_argument("--tta", choices=("none", "flip", "tencrop"), default="none",
                   help="extra test-time augmentation on top of what the model file does")
    p.add_argument("--calibrate", action="store_true", help="fit a softmax temperature (2-fold cross-fitted) and "
                   "report ECE before/after")
    p.add_argument("--extra-views-below", type=float, default=None, metavar="P",
                   help="for a model whose views run outside its graph (the default): run the views after the "
                        "first only for faces whose first-view top probability is below P, as the Recognizer "
                        "does (default: the Recognizer's, EXTRA_VIEWS_BELOW; 1 = every view on every face)")
    from ferkit.core.runtime import RUNTIME_CHOICES

    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="inference runtime of .onnx models (default: the Recognizer's, auto)")
    p.add_argument("--out", default="ferkit_eval", help="folder for confusion_matrix.png and metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images / unknown classes (counted)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ferkit.core.settings import DEFAULT_MODEL, Settings
    from ferkit.training.evaluation import evaluate, print_report

    # validated like every setting; unset = the Recognizer's
    given = {"extra_views_below": args.extra_views_below, "runtime": args.runtime}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    report = evaluate(args.data, args.model or DEFAULT_MODEL, split=args.split, tta=args.tta,
                      calibrate=args.calibrate, out_dir=args.out, skip_bad=args.skip_bad,
                      extra_views_below=settings.extra_views_below, runtime=settings.runtime)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return EXIT_OK


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export checkpoint(s) to ONNX with parity and accuracy checks")
    p.add_argument("checkpoints", nargs="+", help="best.pt file(s); several are exported as one averaged ensemble")
    p.add_argument("-o", "--output", required=True, help="output .onnx path (model card written beside it)")
    p.add_argument("--val-data", default=None, help="class-folder set to measure accuracy and fit temperature")
    p.add_argument("--tta", choices=["none", "flip", "tencrop"], default="flip",
                   help="test-time views baked into the graph: the mirror (flip, default: 2x the work) or ten-crop "
                        "(4 corner + centre 90%% crops and their mirrors: 10x)")
    p.add_argument("--int8", action="store_true", help="also write a static int8 variant (needs --val-data)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store weights as float16 (half the file; onnxruntime casts them back once at load, "
                   "so inference stays float32)")
    p.add_argument("--int8-weights", action="store_true",
                   help="store weights as per-channel int8 (a quarter of the file; restored to float32 at load, "
                   "so inference stays float32 — check the measured accuracy)")
    p.add_argument("--note", default="", help="free text for the model card (how the members were chosen, ...)")
    p.set_defaults(func=_cmd_export)


def _export_command(args: argparse.Namespace) -> str:
    """The command that repeats this export, for its model card (the note is shown on the card itself)."""
    parts = ["ferkit export", *map(str, args.checkpoints), "-o", str(args.output), "--tta", args.tta]
    if args.val_data:
        parts += ["--val-data", str(args.val_data)]
    parts += [flag for flag, on in (("--int8", args.int8), ("--fp16-weights", args.fp16_weights),
                                    ("--int8-weights", args.int8_weights)) if on]
    return " ".join(parts)


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from ferkit.training.export import export_onnx
    except ImportError as e:
        raise FerkitError(f"export needs PyTorch and onnx: pip install 'ferkit[train]' ({e})") from None
    command = _export_command(args)
    r = export_onnx(args.checkpoints, args.output, val_data=args.val_data, tta=args.tta,
                    int8=args.int8, fp16_weights=args.fp16_weights, command=command,
                    note=args.note, int8_weights=args.int8_weights)
    msg = f"wrote {args.output} (parity {r['parity_max_abs_diff']:.1e})"
    if "val" in r:
        msg += f"; val accuracy {r['val']['accuracy']:.4f}, macro-F1 {r['val']['macro_f1']:.4f}"
    print(msg)
    return EXIT_OK


def add_parsers(sub) -> None:
    """Register ``train``, ``evaluate`` and ``export``."""
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
