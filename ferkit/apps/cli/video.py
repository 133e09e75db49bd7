"""``ferkit video`` (files) and ``ferkit camera`` (live)."""

from __future__ import annotations

import argparse
import json
import sys

from ferkit.apps.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    StdoutClosed,
    UsageError,
    add_pipeline_options,
    build_recognizer,
    emit,
    err,
    warn_missing_font,
)


def _add_video(sub) -> None:
    from ferkit.apps.video import TABLE_FORMATS, VideoOptions, add_tracking_arguments

    d = VideoOptions()
    p = sub.add_parser(
        "video", help="annotate a video file: tracked faces, smoothed emotions",
        description="Track and label every face of a video file. Writes an annotated video (boxes, track ids, "
        "smoothed emotions; the picture only — audio is not copied), a per-frame per-track table, one "
        "emotion-over-time PNG per track and a summary JSON, and prints the summary. Reads any container and "
        "codec OpenCV's FFmpeg reads. Ctrl-C stops early and still leaves a playable video and a complete "
        "table up to that frame (exit 130); a truncated file is processed up to the damage (exit 1).")
    p.add_argument("input", metavar="VIDEO", nargs="+", help="video file (several, or folders, with --engine ray)")
    p.add_argument("-o", "--output", metavar="OUT", help="annotated video: .mp4 (mp4v) or .avi (MJPG) "
                   "(default ferkit_results/<name>.annotated.mp4)")
    p.add_argument("--results", metavar="DIR", help="folder for <name>.tracks.csv/.jsonl, <name>.track<ID>.png "
                   "and <name>.summary.json (default: the output video's folder)")
    p.add_argument("--no-video", action="store_true", help="do not write the annotated video (table, plots and "
                   "summary only)")
    p.add_argument("--table-format", choices=TABLE_FORMATS, default=d.table_format,
                   help=f"per-frame table format (default {d.table_format})")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--bars", action="store_true", help="draw probability bars beside each face")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tracking_arguments(p)
    add_pipeline_options(p, "video")
    from ferkit.apps.cli.engine import add_engine_arguments

    add_engine_arguments(p, batch=False)
    p.set_defaults(func=_cmd_video)


def _cmd_video(args: argparse.Namespace) -> int:
    from ferkit.apps.video import (
        check_outputs,
        format_summary,
        open_video,
        options_from_args,
        process_video,
    )

    if args.engine == "ray":  # one Ray task per video, each running process_video: ferkit/apps/distributed.py
        from ferkit.apps.cli.engine import video_main

        return video_main(args)
    if len(args.input) > 1:
        raise UsageError("one video at a time with the local engine; several videos or a folder need --engine ray")
    args.input = args.input[0]
    options = options_from_args(args, max_frames=args.max_frames, table_format=args.table_format)
    options.validate()  # ConfigError → usage error (exit 2) before any model loads
    cap, info = open_video(args.input)  # bad input or output fails fast, before the models load
    cap.release()
    check_outputs(args.input, args.output, args.results, write_video=not args.no_video)
    rec = build_recognizer(args, "video", frame_size=(info.width, info.height))
    warn_missing_font(rec.settings, pictures=not args.no_video)
    report = process_video(args.input, args.output, args.results, recognizer=rec, options=options,
                           write_video=not args.no_video, progress=not args.no_progress)
    # Through emit, like `ferkit analyze`: `| head -1` ends with exit 141 and no traceback (outputs are written).
    if args.json:
        emit([json.dumps(report.to_dict(), indent=2)])
    else:
        emit(list(format_summary(report)))
        written = ([report.video] if report.video else []) + report.tables + [report.summary]
        print("wrote " + ", ".join(written) + (f" and {sum(1 for t in report.tracks if t.plot)} track plot(s)"
                                               if report.tracks else ""), file=sys.stderr)
    if report.status == "interrupted":
        err(report.message())
        return EXIT_INTERRUPTED
    if report.status == "truncated":
        err(report.message())
        return EXIT_SOME_FAILED
    return EXIT_OK


def _add_camera(sub) -> None:
    from ferkit.apps.video import add_tracking_arguments

    p = sub.add_parser(
        "camera", help="live camera with overlay (or JSON lines when headless)",
        description="Live emotion overlay from a camera in a window (q or Esc to quit; needs a display and an "
        "OpenCV with GUI support, see docs/detectors.md), or with --headless one JSON line per frame on stdout. "
        "Ctrl-C stops cleanly (exit 130).")
    p.add_argument("--device", default="0", help="camera index (default 0), or a video file / stream URL")
    p.add_argument("--headless", action="store_true", help="no window: print one JSON line per frame")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--bars", action="store_true", help="draw probability bars beside each face")
    add_tracking_arguments(p)
    add_pipeline_options(p, "video")
    p.set_defaults(func=_cmd_camera)


def _cmd_camera(args: argparse.Namespace) -> int:
    from ferkit.apps.video import frame_size, open_camera, options_from_args, run_camera

    options = options_from_args(args)
    options.validate()
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    device = int(args.device) if args.device.strip().isdigit() else args.device
    cap = open_camera(device)  # an absent or busy camera fails fast, before the models load
    size = frame_size(cap)
    cap.release()
    rec = build_recognizer(args, "video", frame_size=size)
    warn_missing_font(rec.settings, pictures=not args.headless)
    try:
        n = run_camera(rec, device, options, headless=args.headless, max_frames=args.max_frames)
    except KeyboardInterrupt:
        err("interrupted")  # camera already released by run_camera
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `ferkit camera --headless | head -1`: stop quietly (exit 141), camera released
        raise StdoutClosed from None
    print(f"{n} frames", file=sys.stderr)
    return EXIT_OK


def add_parsers(sub) -> None:
    """Register ``video`` and ``camera``."""
    _add_video(sub)
    _add_camera(sub)
