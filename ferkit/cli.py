"""Command line: ``ferkit analyze | video | camera | serve | train | evaluate | export | models``.

The CLI only parses arguments, calls the library and writes results. Library
errors (:class:`~ferkit.errors.FerkitError`) become one line on stderr and a
non-zero exit code, never a traceback. Exit codes: 0 all inputs succeeded,
1 some inputs failed, 2 usage error, 130 interrupted, 141 stdout closed early
(``ferkit analyze ... --json | head -1``: processing stops quietly, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .errors import FerkitError

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: 128 + SIGPIPE: what a shell reports for a program stopped because its output pipe closed (`yes | head -1`).
EXIT_STDOUT_CLOSED = 141


def _err(msg: str) -> None:
    print(f"ferkit: error: {msg}", file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad combination of arguments (exit code 2)."""


class StdoutClosed(Exception):
    """Nobody reads stdout any more (``| head -1``): stop quietly with :data:`EXIT_STDOUT_CLOSED`."""


def _emit(lines: list[str]) -> None:
    """Print result lines to stdout at once (flushed, so a pipe sees each image as it is done).

    Raises:
        StdoutClosed: the reading end of stdout has gone away.
    """
    from tqdm import tqdm

    try:
        for line in lines:
            tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a closed pipe stays silent."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (e.g. captured in tests)
        pass


# ---------------------------------------------------------------- shared options

def _add_recognizer_options(p: argparse.ArgumentParser, realtime: bool = False) -> None:
    from .classification import DEFAULT_MODEL, REALTIME_MODEL
    from .detection import DEFAULT_DETECTOR

    model = REALTIME_MODEL if realtime else DEFAULT_MODEL
    g = p.add_argument_group("models and quality gate")
    g.add_argument("--model", default=model, help=f"classifier name or .onnx path (default {model}; "
                   "`ferkit models` lists them)")
    g.add_argument("--detector", default=DEFAULT_DETECTOR, help=f"face detector (default {DEFAULT_DETECTOR}); "
                   "see `ferkit models`")
    g.add_argument("--min-face-size", type=float, help="px; smaller faces are reported as too_small")
    g.add_argument("--min-sharpness", type=float, help="Laplacian variance of the 48×48 crop; below = blurry")
    g.add_argument("--max-yaw", type=float, help="0 frontal … 1 profile; above = turned_away")
    g.add_argument("--min-score", type=float, help="detector confidence; below = low_score")


def build_recognizer(args: argparse.Namespace, threads: int | None = None):
    """Recognizer from the shared command-line options (used by analyze, video, camera, serve).

    ``threads``: onnxruntime threads for the classifier (None/0 = onnxruntime's default).
    """
    from .quality import QualityGate
    from .recognizer import Recognizer

    gate = QualityGate()
    for name in ("min_face_size", "min_sharpness", "max_yaw", "min_score"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(gate, name, value)
    return Recognizer(model=args.model, detector=args.detector, quality=gate, threads=threads)


# ---------------------------------------------------------------- analyze

def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="find faces and label emotions in photos",
                       description="Analyse image files, folders (recursive) or glob patterns.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", default="ferkit_results", help="folder for annotated images and the "
                   "results file (default ferkit_results)")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl", help="results file format "
                   "(parquet: --engine ray)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image to stdout")
    p.add_argument("--no-images", action="store_true", help="do not write annotated images")
    p.add_argument("--bars", action="store_true", help="draw probability bars beside each face")
    _add_recognizer_options(p)
    from .distributed import add_engine_arguments

    add_engine_arguments(p)
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    if args.engine == "ray":  # same per-image function on Ray workers, resumable: ferkit/distributed.py
        from .distributed import analyze_main

        return analyze_main(args)
    if args.format == "parquet":
        raise UsageError("--format parquet needs --engine ray")
    from tqdm import tqdm

    from .batch import analyze_input
    from .drawing import draw_analysis
    from .images import find_images
    from .plots import save_png
    from .writers import ResultWriter, annotated_path, face_line

    files, errors = find_images(args.paths)
    for e in errors:
        _err(e)
    if not files:
        _err("nothing to analyse")
        return EXIT_SOME_FAILED
    failed = len(errors)
    out_dir = Path(args.output)
    writer = None
    try:
        writer = ResultWriter(out_dir, args.format)
    except FerkitError as e:
        _err(f"{e}; results will only be printed")
        failed += 1
    rec = build_recognizer(args)
    used: set[str] = set()
    bar = tqdm(files, desc="analysing", unit="img", disable=len(files) < 2 or None, file=sys.stderr)
    try:
        for path in bar:
            try:
                image, result = analyze_input(rec, path)
            except FerkitError as e:
                bar.clear()
                _err(str(e))
                failed += 1
                continue
            if args.json:
                _emit([json.dumps(result.to_dict())])
            else:  # a closed stdout stops the batch here: the results file holds the images before this one
                _emit([face_line(str(path), i, face) for i, face in enumerate(result.faces, 1)]
                      or [f"{path}: no faces found"])
            if writer is not None:
                try:
                    writer.write(result)
                    if not args.no_images:
                        save_png(annotated_path(out_dir, path, used), draw_analysis(image, result, bars=args.bars))
                except FerkitError as e:
                    _err(str(e))
                    failed += 1
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is not None and not args.json:
        print(f"results: {writer.path}" + ("" if args.no_images else f"; annotated images: {out_dir}/"),
              file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


# ---------------------------------------------------------------- models

def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list shipped emotion models and face detectors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .classification import DEFAULT_MODEL, REALTIME_MODEL, list_models, resolve_model
    from .detection import DEFAULT_DETECTOR, detector_install, detector_missing, list_detectors

    models = []
    for name in list_models():
        info = resolve_model(name)
        meta = info.meta or {}
        models.append({"name": name, "default": name == DEFAULT_MODEL, "video_default": name == REALTIME_MODEL,
                       "val_accuracy": meta.get("val", {}).get("accuracy"), "params": meta.get("params"),
                       "mmacs_per_face": meta.get("mmacs_per_face"), "file": str(info.path)})
    dets = []
    for d in list_detectors():
        missing = detector_missing(d)  # looks for the package/files without loading anything
        dets.append({"name": d, "default": d == DEFAULT_DETECTOR, "installed": missing is None,
                     "install": detector_install(d) or None, "missing": missing})
    if args.json:
        print(json.dumps({"models": models, "detectors": dets}, indent=2))
        return EXIT_OK
    print("emotion models:")
    for m in models:
        acc = f"{m['val_accuracy']:.1%} val" if m["val_accuracy"] else "no val figure"
        cost = f", {m['mmacs_per_face']:.0f} MMACs/face" if m["mmacs_per_face"] else ""
        role = " (default)" if m["default"] else " (video/camera default)" if m["video_default"] else ""
        print(f"  {m['name']}{role}: {acc}{cost}")
    print("face detectors:")
    for d in dets:
        state = "" if d["installed"] else f" — not installed ({d['install'] or d['missing']})"
        print(f"  {d['name']}{' (default)' if d['default'] else ''}{state}")
    return EXIT_OK


# ---------------------------------------------------------------- train / evaluate / export

def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train an emotion classifier (needs ferkit[train])",
                       description="Train on FER2013 in class folders, fer2013.csv or a prefixed flat folder. "
                       "Checkpoints every epoch; --resume continues an interrupted run.")
    p.set_defaults(func=_cmd_train)
    _add_config_flags(p)


def _train_config_class():
    from .config import TrainConfig

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
        from .training import train
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
    p.add_argument("--out", default="ferkit_eval", help="folder for confusion_matrix.png and metrics.json")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images / unknown classes (counted)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .classification import DEFAULT_MODEL
    from .evaluation import evaluate, print_report

    report = evaluate(args.data, args.model or DEFAULT_MODEL, split=args.split, tta=args.tta,
                      calibrate=args.calibrate, out_dir=args.out, skip_bad=args.skip_bad)
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


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from .export import export_onnx
    except ImportError as e:
        raise FerkitError(f"export needs PyTorch and onnx: pip install 'ferkit[train]' ({e})") from None
    argv = sys.argv[2:]
    if "--note" in argv:  # the card shows the note itself; the command line stays readable
        i = argv.index("--note")
        argv = argv[:i] + argv[i + 2:]
    command = "ferkit export " + " ".join(argv)
    r = export_onnx(args.checkpoints, args.output, val_data=args.val_data, tta=args.tta,
                    int8=args.int8, fp16_weights=args.fp16_weights, command=command,
                    note=args.note, int8_weights=args.int8_weights)
    msg = f"wrote {args.output} (parity {r['parity_max_abs_diff']:.1e})"
    if "val" in r:
        msg += f"; val accuracy {r['val']['accuracy']:.4f}, macro-F1 {r['val']['macro_f1']:.4f}"
    print(msg)
    return EXIT_OK


# ---------------------------------------------------------------- video / camera / serve

def _add_video(sub) -> None:
    from .video import TABLE_FORMATS, VideoOptions, add_tracking_arguments, use_video_detector

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
    _add_recognizer_options(p, realtime=True)
    use_video_detector(p)
    from .distributed import add_engine_arguments

    add_engine_arguments(p, batch=False)
    p.set_defaults(func=_cmd_video)


def _cmd_video(args: argparse.Namespace) -> int:
    from .video import check_outputs, format_summary, open_video, options_from_args, prepare_recognizer, process_video

    if args.engine == "ray":  # one Ray task per video, each running process_video: ferkit/distributed.py
        from .distributed import video_main

        return video_main(args)
    if len(args.input) > 1:
        raise UsageError("one video at a time with the local engine; several videos or a folder need --engine ray")
    args.input = args.input[0]
    options = options_from_args(args, max_frames=args.max_frames, table_format=args.table_format)
    options.validate()  # ValueError → usage error (exit 2) before any model loads
    open_video(args.input)[0].release()  # bad input or output fails fast, before the models load
    check_outputs(args.input, args.output, args.results, write_video=not args.no_video)
    rec = prepare_recognizer(build_recognizer(args, threads=args.threads),
                             threads=args.threads, detect_size=args.detect_size)
    report = process_video(args.input, args.output, args.results, recognizer=rec, options=options,
                           write_video=not args.no_video, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in format_summary(report):
            print(line)
        written = ([report.video] if report.video else []) + report.tables + [report.summary]
        print("wrote " + ", ".join(written) + (f" and {sum(1 for t in report.tracks if t.plot)} track plot(s)"
                                               if report.tracks else ""), file=sys.stderr)
    if report.status == "interrupted":
        _err(report.message())
        return EXIT_INTERRUPTED
    if report.status == "truncated":
        _err(report.message())
        return EXIT_SOME_FAILED
    return EXIT_OK


def _add_camera(sub) -> None:
    from .video import add_tracking_arguments, use_video_detector

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
    _add_recognizer_options(p, realtime=True)
    use_video_detector(p)
    p.set_defaults(func=_cmd_camera)


def _cmd_camera(args: argparse.Namespace) -> int:
    from .video import open_camera, options_from_args, prepare_recognizer, run_camera

    options = options_from_args(args)
    options.validate()
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    device = int(args.device) if args.device.strip().isdigit() else args.device
    open_camera(device).release()  # an absent or busy camera fails fast, before the models load
    rec = prepare_recognizer(build_recognizer(args, threads=args.threads),
                             threads=args.threads, detect_size=args.detect_size)
    try:
        n = run_camera(rec, device, options, headless=args.headless, max_frames=args.max_frames)
    except KeyboardInterrupt:
        _err("interrupted")  # camera already released by run_camera
        return EXIT_INTERRUPTED
    print(f"{n} frames", file=sys.stderr)
    return EXIT_OK


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page (needs ferkit[serve])",
                       description="Serve the JSON API (/v1/analyze, /v1/annotate, /v1/models, /healthz, docs at "
                       "/docs) and the web page (/) with uvicorn. Models load once at start-up.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                   "only); any other needs an API key or --insecure")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    from .limits import ServiceSettings as S  # the one definition of every service default (no FastAPI import)

    p.add_argument("--workers", type=int, default=S.workers, help="inference threads (default: CPU cores, at most 4)")
    p.add_argument("--queue", type=int, default=S.max_queue, help="requests whose body has arrived that may wait "
                   f"for a worker; beyond workers + queue the service answers 503 (default {S.max_queue})")
    p.add_argument("--timeout", type=float, default=S.timeout_s, help="seconds from the end of the body to the "
                   f"answer before 504 (default {S.timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=S.body_timeout_s, help="seconds for the request body to "
                   f"arrive before 408 (default {S.body_timeout_s:g})")
    p.add_argument("--header-timeout", type=float, default=S.header_timeout_s, help="seconds for a request head "
                   f"to arrive before the connection is closed (default {S.header_timeout_s:g})")
    p.add_argument("--max-client-connections", type=int, default=S.max_connections_per_client,
                   help="open connections per client address before 429 (default "
                   f"{S.max_connections_per_client}; 0 = no cap, e.g. behind a reverse proxy)")
    p.add_argument("--max-upload-mb", type=float, default=S.max_upload_bytes / 2**20, help="largest image file "
                   f"in MiB (default {S.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-megapixels", type=float, default=S.max_pixels / 1e6, help="largest image in "
                   f"megapixels, checked from the header before decoding (default {S.max_pixels / 1e6:g})")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per inference (default 1: "
                   "parallelism comes from --workers; 0 = onnxruntime's default)")
    p.add_argument("--api-key", default=None, help="require this X-API-Key header on /v1/ requests (default: "
                   "env FERKIT_API_KEY; prefer the variable, arguments are visible to other users)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--allow-host", action="append", metavar="NAME", help="accept this Host header too (repeatable; "
                   "on a loopback --host only localhost/127.0.0.1/::1 are accepted, against DNS rebinding — add "
                   "the public name when a reverse proxy forwards its Host)")
    p.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM): browsers allow the camera only "
                   "over https or on localhost")
    p.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    _add_recognizer_options(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from . import service
    except ImportError as e:
        raise FerkitError(f"serve needs FastAPI and uvicorn: pip install 'ferkit[serve]' ({e})") from None
    from .detection import create_detector

    for flag, value, low in (("--port", args.port, 0), ("--workers", args.workers, 0), ("--queue", args.queue, 0),
                             ("--threads", args.threads, 0)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535 or args.timeout <= 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise UsageError("--port must be <= 65535; --timeout, --max-upload-mb and --max-megapixels must be > 0")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise UsageError("--ssl-certfile and --ssl-keyfile go together")
    api_key = args.api_key or os.environ.get("FERKIT_API_KEY") or None
    for warning in service.check_bind(args.host, api_key, args.insecure):
        print(f"ferkit: warning: {warning}", file=sys.stderr, flush=True)
    try:
        settings = service.ServiceSettings(
            workers=args.workers, max_queue=args.queue, timeout_s=args.timeout, body_timeout_s=args.body_timeout,
            header_timeout_s=args.header_timeout, max_connections_per_client=args.max_client_connections,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_megapixels * 1_000_000),
            api_key=api_key)
    except ValueError as e:  # ConfigError from the settings' own checks
        raise UsageError(f"{e} (see ferkit serve --help)") from None
    if args.allow_host:
        settings.allowed_hosts = service.LOOPBACK_HOSTS + tuple(args.allow_host)
    threads = args.threads or None
    # Workers share one Recognizer; one onnxruntime thread per inference keeps N workers on N cores
    # instead of N × cores threads fighting (measured in docs/service.md).
    rec_args = argparse.Namespace(**vars(args))
    if isinstance(args.detector, str):
        try:
            rec_args.detector = create_detector(args.detector, threads=threads)
        except TypeError:  # a detector without a threads option
            rec_args.detector = create_detector(args.detector)
    rec = build_recognizer(rec_args, threads=threads)
    rec.max_pixels = settings.max_pixels
    print(f"ferkit: starting http{'s' if args.ssl_certfile else ''}://{args.host}:{args.port}/ "
          f"(model {rec.model_name}, detector {rec.detector_name}, {settings.workers} workers, "
          f"API key {'required' if api_key else 'off'}); API docs at /docs, Ctrl+C to stop",
          file=sys.stderr, flush=True)
    service.serve(rec, settings, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
                  ssl_keyfile=args.ssl_keyfile, log_level=args.log_level)
    return EXIT_OK


# ---------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ferkit", description="Facial expression recognition toolkit.")
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_analyze, _add_video, _add_camera, _add_serve, _add_train, _add_evaluate, _add_export,
                _add_models):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the process exit status)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except FerkitError as e:
        _err(str(e))
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except StdoutClosed:
        _silence_stdout()
        return EXIT_STDOUT_CLOSED
    except ValueError as e:  # bad option values surfacing from the library (e.g. unknown schedule)
        _err(str(e))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
