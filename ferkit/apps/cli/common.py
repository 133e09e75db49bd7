"""What every command shares: exit codes, the one error line, stdout handling and the pipeline options."""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: 128 + SIGPIPE: what a shell reports for a program stopped because its output pipe closed (`yes | head -1`).
EXIT_STDOUT_CLOSED = 141



def err(msg: str) -> None:
    print(f"ferkit: error: {msg}", file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad combination of arguments (exit code 2)."""


class StdoutClosed(Exception):
    """Nobody reads stdout any more (``| head -1``): stop quietly with :data:`EXIT_STDOUT_CLOSED`."""


def emit(lines: list[str]) -> None:
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


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a closed pipe stays silent."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (e.g. captured in tests)
        pass


def add_pipeline_options(p: argparse.ArgumentParser, realtime: bool = False) -> None:
    from ferkit.core.classification import DEFAULT_MODEL, REALTIME_MODEL
    from ferkit.core.detection import DEFAULT_DETECTOR

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
    from ferkit.core.quality import QualityGate
    from ferkit.core.recognizer import Recognizer

    gate = QualityGate()
    for name in ("min_face_size", "min_sharpness", "max_yaw", "min_score"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(gate, name, value)
    return Recognizer(model=args.model, detector=args.detector, quality=gate, threads=threads)
