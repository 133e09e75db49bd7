"""Opening videos, cameras and output files; background decoding and encoding; recognizer set-up."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.apps.video.options import FALLBACK_FPS, VIDEO_SUFFIXES
from ferkit.core.files import check_input_file
from ferkit.core.results import Face
from ferkit.core.settings import MAX_PIXELS
from ferkit.core.writers import DEFAULT_OUTPUT, ensure_writable_dir
from ferkit.errors import OutputError, VideoError


@dataclass
class VideoInfo:
    """What the container says about a video (``frame_count`` 0 = unknown)."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    fps_assumed: bool = False


class _QuietOpenCV:
    """Silence OpenCV's own warnings (e.g. "can't be used to capture by name") while opening a source or
    sink; ``level`` also silences its errors where ferkit reports the failure itself."""

    def __init__(self, level: int = cv2.utils.logging.LOG_LEVEL_ERROR):
        self._quiet = level

    def __enter__(self):
        self._level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(self._quiet)

    def __exit__(self, *exc):
        cv2.utils.logging.setLogLevel(self._level)


class _Prefetcher:
    """Decodes frames on a background thread into a small bounded queue (constant memory).

    OpenCV releases the GIL while decoding, so this overlaps decoding with analysis on a second core.
    """

    _END = object()

    def __init__(self, cap: cv2.VideoCapture, depth: int = 4):
        self._cap = cap
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ferkit-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    break
                self._put(frame)
        except Exception as e:  # re-raised on the main thread by get()
            self._put(e)
        finally:
            self._put(self._END)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> np.ndarray | None:
        """Next frame, or None at the end of the stream (or where decoding failed)."""
        item = self._q.get()
        if item is self._END:
            self._q.put(self._END)  # stay at the end if called again
            return None
        if isinstance(item, Exception):
            raise VideoError(f"decoding failed: {item}")
        return item

    def close(self) -> None:
        """Stop decoding; the capture may be released afterwards."""
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


class _BackgroundWriter:
    """Draws and encodes annotated frames on a background thread, through a small bounded queue."""

    def __init__(self, writer: cv2.VideoWriter, bars: bool = False, depth: int = 4):
        self._writer = writer
        self._bars = bars
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ferkit-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ferkit.core.drawing import draw_analysis

        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so put() never blocks
            try:
                frame, faces = item
                self._writer.write(draw_analysis(frame, faces, bars=self._bars))
            except Exception as e:
                self._error = e

    def put(self, frame: np.ndarray, faces: list[Face]) -> None:
        """Queue one frame (blocks while the queue is full, so at most ``depth`` frames wait)."""
        if self._error is not None:
            raise OutputError(f"writing the annotated video failed: {self._error}")
        self._q.put((frame, faces))

    def close(self) -> None:
        """Write what is queued, then finalise the file."""
        self._q.put(None)
        self._thread.join()
        self._writer.release()
        if self._error is not None:
            raise OutputError(f"writing the annotated video failed: {self._error}")


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's own decoder complaints ("moov atom not found") off stderr: ferkit reports these
    conditions itself in one line. OpenCV reads the variables when its FFmpeg back-end first opens a
    file, so this runs just before; a user who set them keeps their choice."""
    if "OPENCV_FFMPEG_DEBUG" not in os.environ:
        os.environ["OPENCV_FFMPEG_DEBUG"] = "1"
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def open_video(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file for reading; its frames may have at most ``max_pixels`` pixels (as images).

    Raises:
        ferkit.errors.VideoError: missing, a folder, a device, empty, or not a video OpenCV can decode.
    """
    p = Path(path)
    check_input_file(p, VideoError, "a video")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: permission denied (not readable)")
    quiet_ffmpeg()
    # FFmpeg explicitly: OpenCV's fallback back-ends would otherwise try an image-sequence reading of the name.
    api = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    with _QuietOpenCV():
        cap = cv2.VideoCapture(str(p), api)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{p}: cannot be read as a video — not a video file, a codec OpenCV lacks, or "
                         "damaged (an MP4 cut short loses its index); try re-encoding it, e.g. with ffmpeg")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    assumed = not (0 < fps < 1000) or math.isnan(fps)
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    width, height = frame_size(cap)
    if width * height > max_pixels:
        cap.release()
        raise VideoError(f"{p}: frames are {width}×{height} = {width * height / 1e6:.1f} MP, over the "
                         f"{max_pixels / 1e6:.1f} MP limit; downscale it first (ffmpeg -i IN -vf scale=1920:-2 OUT)")
    info = VideoInfo(path=str(p), width=width, height=height, fps=FALLBACK_FPS if assumed else fps,
                     frame_count=int(count) if count and count > 0 and math.isfinite(count) else 0,
                     fps_assumed=assumed)
    return cap, info


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own thread pool at ``n`` threads for the block, as it was after (it is process-wide).

    The video loop's parallelism is its decode, analysis and encode threads; OpenCV's pool on top of them
    only contends for the same cores (on 2 cores, 640×480: about 1 ms less CPU per frame on each of the
    analysis and decode/encode threads with 1 thread than with 2).
    """
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def frame_size(cap: cv2.VideoCapture) -> tuple[int, int]:
    """(width, height) the capture reports for its frames (0, 0 when it does not say)."""
    return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))


def open_camera(device: int | str) -> cv2.VideoCapture:
    """Open a camera by index (``0``) or a stream/file by name, and check it delivers a frame.

    Raises:
        ferkit.errors.VideoError: no such camera, busy, or not delivering frames.
    """
    name = f"camera {device}" if isinstance(device, int) else str(device)
    quiet_ffmpeg()
    with _QuietOpenCV():
        cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{name}: cannot be opened — no such camera, no permission, or in use by another "
                         "program (close it); list cameras with `ls /dev/video*` on Linux, try --device 1")
    return cap


def _fourcc_for(path: Path) -> str:
    return "MJPG" if path.suffix.lower() == ".avi" else "mp4v"


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    codec = _fourcc_for(path)
    with _QuietOpenCV(cv2.utils.logging.LOG_LEVEL_SILENT):  # the error below says it in one line
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise OutputError(f"{path}: cannot write a {size[0]}×{size[1]} video at {fps:g} fps with the {codec} codec "
                          "(a frame size it cannot take, the folder not writable, or the disk full); "
                          "try --no-video, or downscale the input")
    return writer


def default_outputs(input_path: str | Path, output: str | Path | None = None,
                    results_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Annotated-video path and results folder: ``ferkit_results/<stem>.annotated.mp4`` and its folder."""
    stem = Path(input_path).stem
    video = Path(output) if output is not None else Path(DEFAULT_OUTPUT) / f"{stem}.annotated.mp4"
    folder = Path(results_dir) if results_dir is not None else video.parent
    return video, folder


def check_outputs(input_path: str | Path, output: str | Path | None = None, results_dir: str | Path | None = None,
                  write_video: bool = True) -> tuple[Path, Path]:
    """Validate the output paths before any work: video type, not the input itself, folders writable.

    Returns the annotated-video path and the results folder (see :func:`default_outputs`).

    Raises:
        ferkit.errors.OutputError: an output cannot be written.
    """
    video_path, folder = default_outputs(input_path, output, results_dir)
    if write_video:
        if video_path.suffix.lower() not in VIDEO_SUFFIXES:
            raise OutputError(f"{video_path}: unsupported output video type {video_path.suffix or '(none)'!r}; "
                              "use .mp4 or .avi")
        if video_path.resolve() == Path(input_path).resolve():
            raise OutputError(f"{video_path}: output would overwrite the input video; choose another -o")
        ensure_writable_dir(video_path.parent)
    ensure_writable_dir(folder)
    return video_path, folder

