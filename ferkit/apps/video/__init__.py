"""Video files and live cameras: tracked faces with temporally smoothed emotions.

Every frame goes through the one pipeline, :meth:`ferkit.Recognizer.analyze`, with the
tracker's boxes passed as ``detections``. To stay fast the detector runs only every few
frames (:class:`~ferkit.apps.video.tracking.DetectionSchedule`: on a fixed interval plus on evidence — a
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
:mod:`.args` (command-line options).

Audio is not copied: OpenCV reads and writes pictures only.
"""

from __future__ import annotations

import os

# FFmpeg prints its own decoder complaints ("moov atom not found", "partial file") on stderr;
# ferkit reports these conditions itself in one line. OpenCV reads these variables when its
# FFmpeg backend first opens a file; a user who set them keeps their choice.
if "OPENCV_FFMPEG_DEBUG" not in os.environ:
    os.environ["OPENCV_FFMPEG_DEBUG"] = "1"
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402  (after the variables above)

from ferkit.apps.video.analyzer import FrameAnalyzer, FrameResult, TrackSample  # noqa: E402
from ferkit.apps.video.args import add_tracking_arguments, options_from_args, use_video_detector  # noqa: E402
from ferkit.apps.video.camera import NO_WINDOW_HINT, display_available, run_camera, window_unavailable  # noqa: E402
from ferkit.apps.video.files import process_video  # noqa: E402
from ferkit.apps.video.io import (  # noqa: E402
    VideoInfo,
    check_outputs,
    default_outputs,
    open_camera,
    open_video,
    prepare_recognizer,
)
from ferkit.apps.video.options import (  # noqa: E402
    FALLBACK_FPS,
    TABLE_FORMATS,
    VIDEO_DETECT_SIZE,
    VIDEO_DETECTOR,
    VIDEO_SUFFIXES,
    VideoOptions,
    default_video_detector,
)
from ferkit.apps.video.report import TrackSummary, VideoReport, _Series, format_summary  # noqa: E402
from ferkit.apps.video.table import TABLE_COLUMNS, TrackTable  # noqa: E402

__all__ = [
    "FALLBACK_FPS", "NO_WINDOW_HINT", "TABLE_COLUMNS", "TABLE_FORMATS", "VIDEO_DETECTOR", "VIDEO_DETECT_SIZE",
    "VIDEO_SUFFIXES", "FrameAnalyzer", "FrameResult", "TrackSample", "TrackSummary", "TrackTable", "VideoInfo",
    "VideoOptions", "VideoReport", "_Series", "add_tracking_arguments", "check_outputs", "cv2",
    "default_outputs", "default_video_detector", "display_available", "format_summary", "open_camera",
    "open_video", "options_from_args", "prepare_recognizer", "process_video", "run_camera", "use_video_detector",
    "window_unavailable",
]
