"""Live camera: overlay window or JSON lines, with the same scheduling and tracking as video files."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

import cv2
import numpy as np

from ferkit.apps.video.analyzer import FrameAnalyzer, FrameResult
from ferkit.apps.video.io import open_camera
from ferkit.apps.video.options import VideoOptions
from ferkit.errors import VideoError

#: What to do instead when no window can open (ferkit installs the headless OpenCV, which has none).
NO_WINDOW_HINT = ("use `ferkit camera --headless` for JSON lines, `ferkit serve` and its web page's camera mode, or "
                  "opt into a window with `pip uninstall -y opencv-python-headless && pip install opencv-python`")


def window_unavailable() -> str | None:
    """None when OpenCV can open a window here, else why not (its build has no GUI, or there is no display)."""
    build = cv2.getBuildInformation()
    gui = next((ln.split(":", 1)[1].strip() for ln in build.splitlines() if ln.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE"):
        return "this OpenCV has no window support (the headless build ferkit installs)"
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return "no display to open a window on ($DISPLAY and $WAYLAND_DISPLAY are unset)"
        return _probe_window()
    return None


def _probe_window(timeout: float = 15.0) -> str | None:
    """Open and close a window in a child process: None if that worked, else the child's last stderr line.

    Qt aborts the whole process (SIGABRT, uncatchable) when $DISPLAY names a display it cannot reach or its
    platform plugin cannot load; a child that dies instead of ferkit turns that into a message.
    """
    import subprocess

    code = "import cv2; cv2.namedWindow('ferkit-probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"a test window did not open ({e})"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    first = next((ln for ln in lines if "display" in ln.lower()), lines[0] if lines else f"exit {proc.returncode}")
    return f"a test window did not open ({first})"


def display_available() -> bool:
    """Whether OpenCV can open a window here (GUI build, and on Linux a display to show it on)."""
    return window_unavailable() is None


def _camera_frames(cap: cv2.VideoCapture, name: str) -> Iterator[np.ndarray]:
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            if n == 0:
                raise VideoError(f"{name}: opened but sends no frames (in use by another program?)")
            return
        n += 1
        yield frame


class FrameRate:
    """Achieved frames/s over the last ``window`` seconds (what the live paths show)."""

    def __init__(self, window: float = 2.0):
        self.window = float(window)
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> float:
        """Record a finished frame; returns the current rate."""
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.window:
            self._times.popleft()
        return self.value

    @property
    def value(self) -> float:
        """Frames/s over the window (0 until two frames are done)."""
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


def _show(window: str, frame: np.ndarray, result: FrameResult, bars: bool, fps: float) -> bool:
    """Draw one frame with its achieved frames/s in the window; True when the user asked to quit."""
    from ferkit.core.drawing import draw_analysis

    try:
        img = draw_analysis(frame, result.faces, bars=bars)
        cv2.putText(img, f"{fps:.1f} frames/s", (8, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imshow(window, img)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error as e:  # GUI back-end broken at run time (e.g. a missing Qt plugin)
        detail = " ".join(str(e).split())[-200:]  # OpenCV's messages span lines; keep one
        raise VideoError(f"cannot open a camera window ({detail}); {NO_WINDOW_HINT}") from None
    return key in (ord("q"), 27) or closed


def run_camera(recognizer: Any, device: int | str = 0, options: VideoOptions | None = None, headless: bool = False,
               max_frames: int | None = None, out: IO[str] | None = None, window: str = "ferkit") -> int:
    """Live camera: overlay in a window (q or Esc to quit), or one JSON line per frame when headless.

    The same :class:`~ferkit.apps.video.analyzer.FrameAnalyzer` as video files: detection on schedule plus on
    evidence, prediction between, faces reported once confirmed. The window shows the achieved frames/s;
    each JSON line carries it as ``fps``.

    Returns the number of frames processed; Ctrl-C propagates as KeyboardInterrupt after the camera is
    released.

    Raises:
        ferkit.errors.VideoError: a window was asked for where none can open (the message says what to use
            instead — checked before the camera is opened), or the camera is absent, busy, or stops before
            the first frame.
    """
    options = options or VideoOptions()
    out = out or sys.stdout
    name = f"camera {device}" if isinstance(device, int) else str(device)
    if not headless:
        why = window_unavailable()
        if why is not None:
            # An error, not a silent switch to JSON: a stream of JSON lines is not what `ferkit camera` asked for.
            raise VideoError(f"cannot open a camera window: {why}; {NO_WINDOW_HINT}")
    cap = open_camera(device)
    analyzer: FrameAnalyzer | None = None
    rate = FrameRate()
    n = 0
    t0 = time.perf_counter()
    try:
        for frame in _camera_frames(cap, name):
            if analyzer is None:
                analyzer = FrameAnalyzer(recognizer, options, (frame.shape[1], frame.shape[0]))
            result = analyzer.process(frame, n)
            n += 1
            fps = rate.tick()
            if not headless and _show(window, frame, result, options.bars, fps):
                break
            if headless:
                rec = {"frame": n - 1, "time_s": round(time.perf_counter() - t0, 3), "fps": round(fps, 2),
                       "faces": [f.to_dict() for f in result.faces]}
                out.write(json.dumps(rec) + "\n")
                out.flush()
            if max_frames is not None and n >= max_frames:
                break
    finally:
        cap.release()
        if not headless:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    return n
