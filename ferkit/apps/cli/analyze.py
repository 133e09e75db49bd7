"""``ferkit analyze`` (photos, folders, archives) and ``ferkit models``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferkit.apps.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    UsageError,
    add_pipeline_options,
    build_recognizer,
    emit,
    err,
    warn_missing_font,
)
from ferkit.core.writers import DEFAULT_OUTPUT
from ferkit.errors import FerkitError


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="find faces and label emotions in photos",
                       description="Analyse image files, folders (recursive) or glob patterns.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="folder for annotated images and the "
                   f"results file (default {DEFAULT_OUTPUT})")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl", help="results file format "
                   "(parquet: --engine ray)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image to stdout")
    p.add_argument("--no-images", action="store_true", help="do not write annotated images")
    p.add_argument("--bars", action="store_true", help="draw probability bars beside each face")
    add_pipeline_options(p)
    from ferkit.apps.cli.engine import add_engine_arguments

    add_engine_arguments(p)
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    if args.engine == "ray":  # same per-image function on Ray workers, resumable: ferkit/apps/distributed.py
        from ferkit.apps.cli.engine import analyze_main

        return analyze_main(args)
    if args.format == "parquet":
        raise UsageError("--format parquet needs --engine ray")
    from tqdm import tqdm

    from ferkit.apps.batch import analyze_input
    from ferkit.core.drawing import draw_analysis
    from ferkit.core.images import find_images
    from ferkit.core.plots import save_png
    from ferkit.core.writers import ResultWriter, annotated_path, face_line

    files, errors = find_images(args.paths)
    for e in errors:
        err(e)
    if not files:
        err("nothing to analyse")
        return EXIT_SOME_FAILED
    failed = len(errors)
    out_dir = Path(args.output)
    writer = None
    try:
        writer = ResultWriter(out_dir, args.format)
    except FerkitError as e:
        err(f"{e}; results will only be printed")
        failed += 1
    rec = build_recognizer(args)
    warn_missing_font(rec.settings, pictures=writer is not None and not args.no_images)
    used: set[str] = set()
    bar = tqdm(files, desc="analysing", unit="img", disable=len(files) < 2 or None, file=sys.stderr)
    try:
        for path in bar:
            try:
                image, result = analyze_input(rec, path)
            except FerkitError as e:
                bar.clear()
                err(str(e))
                failed += 1
                continue
            if args.json:
                emit([json.dumps(result.to_dict())])
            else:  # a closed stdout stops the batch here: the results file holds the images before this one
                emit([face_line(str(path), i, face) for i, face in enumerate(result.faces, 1)]
                      or [f"{path}: no faces found"])
            if writer is not None:
                try:
                    writer.write(result)
                    if not args.no_images:
                        save_png(annotated_path(out_dir, path, used), draw_analysis(image, result, bars=args.bars))
                except FerkitError as e:
                    err(str(e))
                    failed += 1
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is not None and not args.json:
        print(f"results: {writer.path}" + ("" if args.no_images else f"; annotated images: {out_dir}/"),
              file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _add_models(sub) -> None:
    from ferkit.core.runtime import RUNTIME_CHOICES
    from ferkit.core.settings import DEFAULT_RUNTIME

    p = sub.add_parser("models", help="list shipped emotion models and face detectors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--speed", action="store_true", help="also time each emotion model on this machine "
                   "(faces/s at a batch of 15; a few seconds)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=DEFAULT_RUNTIME, help="runtime --speed times on")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from ferkit.core.catalog import detector_entries, measure_speed, model_entries
    from ferkit.core.machine import usable_cores
    from ferkit.core.runtime import RUNTIMES, available_runtimes, resolve_runtime

    models, dets = model_entries(), detector_entries()
    if args.speed:
        for m in models:
            m["faces_per_s"] = measure_speed(m["name"], args.runtime) if m["file"] else None
    have = available_runtimes()
    runtimes = [{"name": r, "installed": r in have, "default": bool(have) and r == have[0]} for r in RUNTIMES]
    if args.json:
        print(json.dumps({"models": models, "detectors": dets, "runtimes": runtimes}, indent=2))
        return EXIT_OK
    print("emotion models:")
    for m in models:
        acc = f"{m['val_accuracy']:.1%} val" if m["val_accuracy"] else "no val figure"
        cost = f", {m['mmacs_per_face']:.0f} MMACs/face" if m["mmacs_per_face"] else ""
        role = " (default)" if m["default"] else " (most accurate, slower)" if m["most_accurate"] else ""
        speed = f", {m['faces_per_s']:,.0f} faces/s here" if m.get("faces_per_s") else ""
        print(f"  {m['name']}{role}: {acc}{cost}{speed}")
    if args.speed:
        print(f"  (faces/s: batches of 15 random faces on this machine's {usable_cores()} cores, runtime "
              f"{resolve_runtime(args.runtime)}; random faces are all unsure, so the mirror view runs for "
              "every face: the worst case)")
    print("face detectors:")
    for d in dets:
        state = "" if d["installed"] else f" — not installed ({d['install'] or d['missing']})"
        print(f"  {d['name']}{' (default)' if d['default'] else ''}{state}")
    print("inference runtimes (--runtime; auto = the first installed):")
    for r in runtimes:
        state = " (auto)" if r["default"] else "" if r["installed"] else f" — not installed (pip install {r['name']})"
        print(f"  {r['name']}{state}")
    return EXIT_OK


def add_parsers(sub) -> None:
    """Register ``analyze`` and ``models``."""
    _add_analyze(sub)
    _add_models(sub)
