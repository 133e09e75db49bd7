"""Settings of the video loop (:class:`VideoOptions`) and the video defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ferkit.apps.video.smoothing import SMOOTHING_METHODS
from ferkit.errors import ConfigError

TABLE_FORMATS = ("csv", "jsonl", "both")
#: Output video types: ``.avi`` is written as MJPG, the others with the mp4v codec.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
FALLBACK_FPS = 30.0


@dataclass
class VideoOptions:
    """Settings of the video loop (the recognizer's own settings live in the Recognizer).

    Attributes:
        detect_every: run the face detector every this many frames; tracks are predicted in between.
        adaptive: run it sooner on evidence (a new face to confirm, a face lost, drifting from its
            prediction, crossing another or leaving the picture), at most about twice as often overall.
        confirm_hits: consecutive detections a new face needs before it is reported (table, plot,
            summary, drawing); a tentative face missed once is forgotten. 1 = report at once.
        confirm_score: ... and the best of those detections must score at least this (a face-like patch the
            detector keeps finding at 0.5-0.6 is not reported).
        track_score: detections scoring under this neither start nor update a track. The photo detector
            reports boxes from 0.4 (those under the quality gate's 0.85 as unreadable); on video the boxes
            between 0.4 and 0.5 fed a phantom track and cost IDF1 on the small-faces clip (docs/video.md).
        keep_lost: frames a confirmed face that the detector no longer finds is kept (hidden) for
            re-identification before it ends; a face found there later gets a new id.
        classify_every: classify each tracked face every this many frames (new faces at once);
            smoothing carries its probabilities in between. 1 = every frame.
        classify_budget: at most this many face classifications per frame on average (0 = no cap): with
            many faces each is classified less often, so the cost per frame stays bounded.
        split_views: where the model's test-time views run outside its graph (the default model: the face
            and its mirror), classify a face on one view at a time, in turn, and report the mean of its
            latest measurement of each view: the model's own two-view answer for a face that holds still,
            at half the cost per classification. False = each classification runs the views as a photo's
            faces do (the mirror where the first view is unsure: ``Settings.extra_views_below``).
        smooth: ``ema``, ``window`` or ``none``.
        alpha: EMA weight of one frame (smaller = smoother; memory ≈ 1/alpha frames).
        window: window length in frames for ``smooth="window"``.
        max_frames: stop after this many frames (None = whole video).
        table_format: ``csv``, ``jsonl`` or ``both``.
        bars: draw probability bars beside faces.
    """

    detect_every: int = 5
    adaptive: bool = True
    confirm_hits: int = 3
    confirm_score: float = 0.75
    track_score: float = 0.5
    keep_lost: int = 30
    classify_every: int = 2
    classify_budget: float = 1.0
    split_views: bool = True
    smooth: str = "ema"
    alpha: float = 0.2
    window: int = 9
    max_frames: int | None = None
    table_format: str = "csv"
    bars: bool = False

    def validate(self) -> None:
        """Raise ValueError for out-of-range settings (before any file is opened)."""
        if self.detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.confirm_hits < 1:
            raise ConfigError(f"confirm_hits must be >= 1, got {self.confirm_hits}")
        if not 0 <= self.confirm_score <= 1:
            raise ConfigError(f"confirm_score must be in [0, 1], got {self.confirm_score}")
        if not 0 <= self.track_score <= 1:
            raise ConfigError(f"track_score must be in [0, 1], got {self.track_score}")
        if self.keep_lost < 0:
            raise ConfigError(f"keep_lost must be >= 0, got {self.keep_lost}")
        if self.classify_every < 1:
            raise ConfigError(f"classify_every must be >= 1, got {self.classify_every}")
        if self.classify_budget < 0:
            raise ConfigError(f"classify_budget must be >= 0, got {self.classify_budget}")
        if self.smooth not in SMOOTHING_METHODS:
            raise ConfigError(f"unknown smoothing {self.smooth!r}; choose one of {', '.join(SMOOTHING_METHODS)}")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.window < 1:
            raise ConfigError(f"window must be >= 1, got {self.window}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.table_format not in TABLE_FORMATS:
            raise ConfigError(f"unknown table format {self.table_format!r}; choose one of {', '.join(TABLE_FORMATS)}")

