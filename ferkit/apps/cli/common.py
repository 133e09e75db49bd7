"""What every command shares: exit codes, the one error line, stdout handling and the pipeline options."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferkit.core.recognizer import Recognizer
    from ferkit.core.settings import Settings

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: 128 + SIGPIPE: what a shell reports for a program stopped because its output pipe closed (`yes | head -1`).
EXIT_STDOUT_CLOSED = 141


def err(msg: str) -> None:
    """Print one ``ferkit: error: ...`` line on stderr (the CLI's only way to report a failure)."""
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


#: Quality-gate flags: (flag field, help). Their defaults live in QualityGate only.
_QUALITY_FLAGS = (
    ("min_face_size", "px; smaller faces are reported as too_small"),
    ("min_sharpness", "Laplacian variance of the 48×48 crop; below = blurry"),
    ("max_yaw", "0 frontal … 1 profile; above = turned_away"),
    ("min_score", "detector confidence; below = low_score"),
)


def add_pipeline_options(p: argparse.ArgumentParser, profile: str = "photo") -> None:
    """The flags of :class:`~ferkit.core.settings.Settings`, with the defaults of settings ``profile``.

    Every flag defaults to None, meaning "the profile's value", so the defaults stay defined
    only in ``ferkit/core/settings.py`` and ``ferkit/core/quality.py``; the help shows them.
    """
    from ferkit.core.labels import LANGUAGES
    from ferkit.core.quality import QualityGate
    from ferkit.core.runtime import RUNTIME_CHOICES
    from ferkit.core.settings import VIDEO_DETECT_SIZE, Settings

    d, gate = Settings.profile(profile), QualityGate()
    size = "the detector's own" if d.detect_size is None else f"{d.detect_size}"
    if profile == "video":
        size = "3/4 of the frame's longer side, {}-{}".format(*VIDEO_DETECT_SIZE)
    g = p.add_argument_group("models, quality gate and labels")
    g.add_argument("--model", help=f"classifier name or .onnx path (default {d.model}; `ferkit models` lists them)")
    g.add_argument("--detector", help=f"face detector (default {d.detector}); see `ferkit models`")
    g.add_argument("--detect-size", type=int, metavar="PX", help=f"the detector sees images with the longer side "
                   f"at most PX (default {size}; 0 = full size); smaller is faster, small faces are missed")
    g.add_argument("--threads", type=int, help="inference threads, classifier and detector "
                   f"(default {d.threads or 'one per core'}; 0 = one per core)")
    g.add_argument("--runtime", choices=RUNTIME_CHOICES, help=f"inference runtime (default {d.runtime}: "
                   "openvino where installed, else onnxruntime)")
    g.add_argument("--lang", help=f"language of the emotion labels: {' or '.join(LANGUAGES)} (default {d.lang})")
    for name, text in _QUALITY_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), type=float, help=f"{text} (default {getattr(gate, name):g})")


def settings_from_args(args: argparse.Namespace, profile: str = "photo", **extra: Any) -> Settings:
    """The :class:`~ferkit.core.settings.Settings` that the flags of :func:`add_pipeline_options` describe.

    Raises:
        UsageError: a flag value the settings refuse (exit code 2).
    """
    from ferkit.core.settings import Settings
    from ferkit.errors import ConfigError

    quality = {name: getattr(args, name) for name, _ in _QUALITY_FLAGS if getattr(args, name, None) is not None}
    try:
        return Settings.profile(profile, model=args.model, detector=args.detector, detect_size=args.detect_size,
                                threads=args.threads, runtime=getattr(args, "runtime", None), lang=args.lang,
                                quality=quality or None, **extra)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def warn_missing_font(settings: Settings, pictures: bool) -> None:
    """One warning line when pictures will be drawn in a language no font on this machine has glyphs for."""
    from ferkit.core.drawing import FONT_HINT, font_path

    if pictures and settings.lang != "en" and font_path(settings.lang) is None:
        print(f"ferkit: warning: {FONT_HINT}", file=sys.stderr, flush=True)


def build_recognizer(args: argparse.Namespace, profile: str = "photo", **extra: Any) -> Recognizer:
    """Load the pipeline the flags describe (:func:`settings_from_args`, then the models)."""
    return settings_from_args(args, profile, **extra).build()
