"""Video files: :func:`process_video` streams a file through the analyzer into video, table, plots and summary."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.apps.video.analyzer import FrameAnalyzer, FrameResult
from ferkit.apps.video.io import (
    VideoInfo,
    _BackgroundWriter,
    _open_writer,
    _Prefetcher,
    check_outputs,
    default_outputs,
    open_video,
    opencv_threads,
)
from ferkit.apps.video.options import VideoOptions
from ferkit.apps.video.report import TrackSummary, VideoReport, _save_track_plot, _TrackLog
from ferkit.apps.video.table import TrackTable
from ferkit.core.settings import MAX_PIXELS, Settings
from ferkit.errors import OutputError, VideoError


class _TrackBook:
    """The per-track logs of one video: opened at a track's first reported frame, summarised (and
    plotted) when it ends. Tracks that were never reported (unconfirmed) leave no trace."""

    def __init__(self, folder: Path, stem: str, fps: float):
        self.folder, self.stem, self.fps = folder, stem, fps
        self.logs: dict[int, _TrackLog] = {}
        self.summaries: list[TrackSummary] = []
        self.plot_errors: list[str] = []

    def add(self, index: int, result: FrameResult) -> None:
        """Log one frame's reported faces and end the tracks that ended on it."""
        for tid in result.ended:
            self.end(tid)
        for s in result.samples:
            log = self.logs.get(s.face.track_id)
            if log is None:
                log = self.logs[s.face.track_id] = _TrackLog(s.face.track_id, index)
            log.add(index, self.fps, s.face.probabilities)

    def end(self, track_id: int) -> None:
        """Summarise a track and write its plot (a plot that cannot be written is reported at the end)."""
        log = self.logs.pop(track_id, None)
        if log is None:
            return
        s = log.summary(self.fps)
        if log.readable:
            try:
                s.plot = str(_save_track_plot(self.folder / f"{self.stem}.track{track_id}.png", log, self.stem))
            except OutputError as e:
                self.plot_errors.append(str(e))
        self.summaries.append(s)

    def finish(self, ids: list[int]) -> list[TrackSummary]:
        """End ``ids`` and every track still open; the summaries by id."""
        for tid in [*ids, *list(self.logs)]:
            self.end(tid)
        return sorted(self.summaries, key=lambda s: s.track_id)


def _open(src: Path, video_path: Path, folder: Path, output: Any, results_dir: Any, recognizer: Any,
          options: VideoOptions, write_video: bool):
    """Open the input, read its first frame, check and open the outputs (everything closed on failure)."""
    cap, info = open_video(src, getattr(recognizer, "max_pixels", MAX_PIXELS))
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"{src}: contains no decodable frames (empty or damaged video)")
        check_outputs(src, output, results_dir, write_video)
        h, w = frame.shape[:2]
        if recognizer is None:
            recognizer = Settings.profile("video", frame_size=(w, h)).build()
        elif not hasattr(recognizer, "analyze"):  # a factory of the frame size (the Ray worker's)
            recognizer = recognizer(w, h)
        table = TrackTable(folder / src.stem, options.table_format, flush_every=max(1, round(info.fps)))
        try:
            writer = (_BackgroundWriter(_open_writer(video_path, info.fps, (w, h)), options.bars)
                      if write_video else None)
        except BaseException:
            table.close()
            raise
    except BaseException:
        cap.release()
        raise
    return cap, info, frame, recognizer, table, writer


@contextlib.contextmanager
def _ctrl_c_between_frames() -> Iterator[threading.Event]:
    """Turn the first Ctrl-C into an event the frame loop checks between frames.

    A KeyboardInterrupt raised anywhere in a frame's work could land after its picture went to the video
    and before its row reached the table (seen: 78 frames against 77 rows). With this, each frame's
    outputs are written together or not at all; a second Ctrl-C raises at once. Signal handlers can only
    be set from the main thread, and a host program's own handler is left alone: there the event never
    fires and Ctrl-C raises as before.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield stop
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _loop(frame: np.ndarray, reader: _Prefetcher, analyzer: FrameAnalyzer, book: _TrackBook, table: TrackTable,
          writer: _BackgroundWriter | None, options: VideoOptions, fps: float, bar: Any,
          on_frame: Callable[[int, np.ndarray, FrameResult], None] | None) -> tuple[int, str]:
    """Analyse, log, draw and write frames until the end; returns (frames written, status)."""
    h, w = frame.shape[:2]
    index = 0
    try:
        with _ctrl_c_between_frames() as stop:
            while not stop.is_set():
                frame, result = _frame(frame, index, h, w, analyzer, book, table, writer, fps, bar)
                index += 1  # counted once written, so the report matches the finalised outputs
                if on_frame is not None:
                    on_frame(index - 1, frame, result)
                if options.max_frames is not None and index >= options.max_frames:
                    return index, "max_frames"
                frame = reader.get()
                if frame is None:
                    return index, "complete"
            return index, "interrupted"
    except KeyboardInterrupt:
        return index, "interrupted"


def _frame(frame: np.ndarray, index: int, h: int, w: int, analyzer: FrameAnalyzer, book: _TrackBook,
           table: TrackTable, writer: _BackgroundWriter | None, fps: float, bar: Any) -> tuple[np.ndarray, FrameResult]:
    """One frame's work: analyse it, log it, hand it to the writer and the table; returns (frame, result)."""
    if frame.shape[:2] != (h, w):  # mid-stream size change: keep the output consistent
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    result = analyzer.process(frame, index)
    book.add(index, result)
    if writer is not None:
        writer.put(frame, result.faces)  # drawn and encoded on the writer thread
    table.write(result, index / fps)
    bar.update(1)
    return frame, result


def _write_summary(report: VideoReport, path: Path, plot_errors: list[str]) -> None:
    report.summary = str(path)
    try:
        path.write_text(json.dumps(report.to_dict(), indent=2))
    except OSError as e:
        raise OutputError(f"{path}: cannot write the summary ({e.strerror or e})") from None
    if plot_errors:
        raise OutputError(plot_errors[0])


def _final_status(status: str, index: int, info: VideoInfo) -> str:
    if status == "complete" and info.frame_count and index < info.frame_count - max(2, info.frame_count // 100):
        # Containers report their length; decoding far short of it means the file is cut or damaged.
        return "truncated"
    return status


def process_video(input_path: str | Path, output: str | Path | None = None, results_dir: str | Path | None = None,
                  recognizer: Any = None, options: VideoOptions | None = None, write_video: bool = True,
                  progress: bool = True,
                  on_frame: Callable[[int, np.ndarray, FrameResult], None] | None = None) -> VideoReport:
    """Annotate a video file and write its per-frame table, per-track plots and summary.

    Outputs (``<stem>`` = input file name without suffix): the annotated video ``output`` (default
    ``ferkit_results/<stem>.annotated.mp4``; ``.avi`` writes MJPG, anything else mp4v; no audio), and in
    ``results_dir`` (default: the video's folder) ``<stem>.tracks.csv``/``.jsonl``, ``<stem>.track<ID>.png``
    and ``<stem>.summary.json``. Only confirmed tracks appear in any of them.

    Ctrl-C (KeyboardInterrupt) stops the loop; everything written so far is finalised — the video
    playable, the table complete up to that frame — and the report has status ``interrupted``. A file
    that ends early (truncated, damaged) is processed up to the damage and reported as ``truncated``.

    Args:
        input_path: any container/codec OpenCV's FFmpeg reads.
        output: annotated video path (ignored when ``write_video`` is False).
        results_dir: folder for the table, plots and summary.
        recognizer: a :class:`~ferkit.Recognizer`, used as given, or a callable ``(width, height) ->
            Recognizer`` called once with the frame size (default: the ``video`` profile built for it,
            ``Settings.profile("video", frame_size=(w, h)).build()``).
        options: :class:`VideoOptions`.
        write_video: write the annotated video.
        progress: show a tqdm progress bar (frames/s) on stderr when it is a terminal.
        on_frame: called as ``on_frame(index, frame, result)`` after each frame is written.

    Raises:
        ferkit.errors.VideoError: the input is missing, not a video, or has no frames.
        ferkit.errors.OutputError: an output cannot be written.
    """
    from tqdm import tqdm

    options = options or VideoOptions()
    options.validate()
    src = Path(input_path)
    video_path, folder = default_outputs(src, output, results_dir)
    cap, info, frame, recognizer, table, writer = _open(src, video_path, folder, output, results_dir, recognizer,
                                                        options, write_video)
    h, w = frame.shape[:2]
    analyzer = FrameAnalyzer(recognizer, options, (w, h))
    book = _TrackBook(folder, src.stem, info.fps)
    total = info.frame_count or None
    if options.max_frames is not None:
        total = min(total or options.max_frames, options.max_frames)
    bar = tqdm(total=total, desc=src.name, unit="frame", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    reader = _Prefetcher(cap)  # decodes the next frames while this one is analysed
    try:
        with opencv_threads(1):
            index, status = _loop(frame, reader, analyzer, book, table, writer, options, info.fps, bar, on_frame)
    finally:
        elapsed = time.perf_counter() - t0
        bar.close()
        reader.close()
        cap.release()
        try:
            if writer is not None:
                writer.close()  # drains queued frames and writes the MP4 index: playable even after Ctrl-C
        finally:
            table.close()
    o = asdict(options)
    o.update(detector=getattr(recognizer, "detector_name", None), model=getattr(recognizer, "model_name", None),
             detect_size=getattr(getattr(recognizer, "detector", None), "max_side", None))
    report = VideoReport(input=str(src), status=_final_status(status, index, info), frames=index, fps=info.fps,
                         width=w, height=h, expected_frames=info.frame_count,
                         video=str(video_path) if writer is not None else None,
                         tables=[str(p) for p in table.paths], summary=None,
                         tracks=book.finish(analyzer.finish()), elapsed_s=elapsed,
                         detector_runs=analyzer.detector_runs, classified_faces=analyzer.classified_faces,
                         options=o, fps_assumed=info.fps_assumed)
    _write_summary(report, folder / f"{src.stem}.summary.json", book.plot_errors)
    return report
