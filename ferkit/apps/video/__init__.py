"""Video files and live cameras: tracked faces with temporally smoothed emotions.

Every frame goes through the one pipeline, :meth:`ferkit.Recognizer.analyze`, with the
tracker's boxes passed as ``detections``. To stay fast the detector runs only every few
frames (:class:`~ferkit.apps.video.schedule.DetectionSchedule`: on a fixed interval plus on evidence — a
new face to confirm, a face lost, drifting or crossing another — paid from a token bucket so
it never degrades into detecting every frame); the tracker predicts boxes in between and
reports a face only once it is confirmed over several detections. Each tracked face is
classified every ``classify_every`` frames within a per-frame budget, all due faces in one
batched call; smoothing carries the values between. Decoding and drawing/encoding run on two
helper threads (OpenCV releases the GIL), overlapping the analysis.

Frames are streamed — read, analysed, drawn, written, forgotten — so memory stays
constant however long the video is: the per-frame table is written row by row, and each
track keeps only counters and a bounded-resolution series for its emotion-over-time plot,
written when the track ends.

Modules: :mod:`.options` (settings), :mod:`.analyzer` (per-frame loop shared by files and
cameras), :mod:`.files` (:func:`process_video`), :mod:`.camera` (:func:`run_camera`),
:mod:`.io` (opening inputs/outputs, background decode/encode), :mod:`.table`, :mod:`.report`,
:mod:`.args` (command-line options), :mod:`.tracking` (tracks and their association),
:mod:`.assignment` (Hungarian), :mod:`.appearance` (re-identification, scene cuts), :mod:`.schedule`
(when to detect) and :mod:`.smoothing` (per-track probabilities over time).

Audio is not copied: OpenCV reads and writes pictures only.
"""

from __future__ import annotations

import cv2

from ferkit.apps.video.analyzer import FrameAnalyzer, FrameResult, TrackSample
from ferkit.apps.video.args import add_tracking_arguments, options_from_args
from ferkit.apps.video.camera import NO_WINDOW_HINT, display_available, run_camera, window_unavailable
from ferkit.apps.video.files import process_video
from ferkit.apps.video.io import (
    VideoInfo,
    check_outputs,
    default_outputs,
    frame_size,
    open_camera,
    open_video,
)
from ferkit.apps.video.options import (
    FALLBACK_FPS,
    TABLE_FORMATS,
    VIDEO_SUFFIXES,
    VideoOptions,
)
from ferkit.apps.video.report import TrackSummary, VideoReport, _Series, format_summary
from ferkit.apps.video.table import TABLE_COLUMNS, TrackTable

__all__ = [
    "FALLBACK_FPS", "NO_WINDOW_HINT", "TABLE_COLUMNS", "TABLE_FORMATS",
    "VIDEO_SUFFIXES", "FrameAnalyzer", "FrameResult", "TrackSample", "TrackSummary", "TrackTable", "VideoInfo",
    "VideoOptions", "VideoReport", "_Series", "add_tracking_arguments", "check_outputs", "cv2",
    "default_outputs", "display_available", "format_summary", "frame_size", "open_camera",
    "open_video", "options_from_args", "process_video", "run_camera",
    "window_unavailable",
]
