"""``--engine ray`` for ``ferkit analyze`` and ``ferkit video``: the flags and the two entry points.

The engine itself (workers, exactly-once commits) is :mod:`ferkit.apps.distributed`; Ray is imported
only when ``--engine ray`` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ferkit.apps.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, UsageError, err, settings_from_args
from ferkit.apps.distributed import DEFAULT_BATCH_SIZE  # no Ray import: that waits for --engine ray
from ferkit.core.writers import DEFAULT_OUTPUT


def add_engine_arguments(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """``--engine/--address/--workers/--batch-size`` (used by ``ferkit analyze`` and ``ferkit video``)."""
    g = p.add_argument_group("distributed engine (pip install 'ferkit[ray]'; see docs/scale.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a pool of Ray workers, resumable")
    g.add_argument("--address", default=None, help="Ray cluster to join, e.g. 10.0.0.5:6379 or auto (default: "
                   "$RAY_ADDRESS, else start Ray on this machine)")
    g.add_argument("--workers", type=int, default=None, help="Ray worker actors, one CPU each (default: every "
                   "CPU of the cluster)")
    if batch:
        g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"inputs per Ray task, the "
                       f"unit of commit and retry (default {DEFAULT_BATCH_SIZE})")


def _report(summary: Any, what: str) -> int:
    now = f" ({summary.per_second:.2f}/s on {summary.workers} worker(s))" if summary.analysed else ""
    print(f"{summary.inputs} {what}: {summary.analysed} analysed now{now}, {summary.skipped} done before, "
          f"{summary.failed} failed"
          + (f", {summary.missing} not done (rerun to finish)" if summary.missing else "")
          + f"; results: {summary.results}", file=sys.stderr)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if summary.failed or summary.missing or summary.errors else EXIT_OK


def _check_usage(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if getattr(args, "batch_size", 1) < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if getattr(args, "format", "jsonl") not in ("jsonl", "parquet"):
        raise UsageError(f"--format {args.format}: --engine ray writes jsonl or parquet")


def analyze_main(args: argparse.Namespace) -> int:
    """``ferkit analyze --engine ray``: see :func:`ferkit.apps.distributed.analyze_photos`."""
    from ferkit.apps.distributed import analyze_photos

    _check_usage(args)
    summary = analyze_photos(
        args.paths, args.output, address=args.address, workers=args.workers, batch_size=args.batch_size,
        settings=settings_from_args(args, "worker"), images=not args.no_images,
        bars=args.bars, fmt=args.format, on_error=err,
        on_record=(lambda r: print(r, flush=True)) if args.json else None)
    return _report(summary, "photos")


def video_main(args: argparse.Namespace) -> int:
    """``ferkit video --engine ray VIDEO... -o DIR``: see :func:`ferkit.apps.distributed.analyze_videos`."""
    from ferkit.apps.distributed import analyze_videos
    from ferkit.apps.video import options_from_args

    _check_usage(args)
    if args.results:
        raise UsageError("--results: with --engine ray each video's results go beside it in the -o folder")
    from ferkit.apps.batch import VIDEO_INPUT_SUFFIXES

    if args.output and Path(args.output).suffix.lower() in VIDEO_INPUT_SUFFIXES:
        raise UsageError(f"-o {args.output}: with --engine ray, -o is a folder for all the videos' outputs")
    options = options_from_args(args, max_frames=args.max_frames, table_format=args.table_format)
    options.validate()
    settings = settings_from_args(args, "video")
    if args.threads is None:  # each actor has one CPU (and process_video's decode/encode threads beside it)
        settings = settings.replace(threads=1)
    summary = analyze_videos(args.input, args.output or DEFAULT_OUTPUT, address=args.address,
                             workers=args.workers, settings=settings,
                             options=options, write_video=not args.no_video,
                             progress=not args.no_progress, on_error=err, per_video_size=args.detect_size is None)
    return _report(summary, "videos")
