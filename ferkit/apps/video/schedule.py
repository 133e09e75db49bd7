"""When the video loop runs the face detector: a fixed interval plus evidence, paid from a token bucket."""

from __future__ import annotations

import numpy as np

from ferkit.apps.video.tracking import FaceTracker, Track, TrackUpdate
from ferkit.core.geometry import iou_xywh
from ferkit.errors import ConfigError


class DetectionSchedule:
    """Decides on which frames to run the detector: every ``every`` frames, and sooner on evidence.

    Evidence (``adaptive=True``; :meth:`reason` names it), each a reason new faces may have appeared or
    ids are at risk:

    - ``cut``: :meth:`FaceTracker.scene_cut` was called since the last run (a new shot) → now;
    - ``confirm``: a tentative track waits for confirmation → next frame;
    - ``crossing``: two visible faces overlap → every frame until they separate;
    - ``drift``: a face moved more than ``max_shift`` of its size since it was last detected (the
      constant-velocity guess gets unreliable), or is leaving the picture → now;
    - ``lost``: a confirmed face was missed, or no face is tracked → after ``every // 2`` frames.

    Runs on evidence are paid from a token bucket: it holds at most ``burst`` runs and refills at
    ``extra_rate`` runs per frame (default ``1 / every``), so however often false detections or
    flickering faces ask, the detector runs at most about twice as often as the schedule — one false
    detection costs at most one extra run (its confirmation fails and the tentative track is deleted),
    never a cascade. Runs on the regular schedule are always made and cost no token.
    """

    def __init__(self, every: int = 5, adaptive: bool = True, max_shift: float = 0.35, burst: float = 3.0,
                 extra_rate: float | None = None):
        if every < 1:
            raise ConfigError(f"detect every must be >= 1 frame, got {every}")
        self.every = int(every)
        self.adaptive = bool(adaptive)
        self.max_shift = float(max_shift)
        self.burst = float(burst)
        self.extra_rate = 1.0 / self.every if extra_rate is None else float(extra_rate)
        self.last: int | None = None
        self.extra_runs = 0
        self._tokens = self.burst
        self._extra = False

    def tokens(self, frame: int) -> float:
        """Runs on evidence available on ``frame``."""
        if self.last is None:
            return self.burst
        return min(self.burst, self._tokens + (frame - self.last) * self.extra_rate)

    def due(self, frame: int, tracker: FaceTracker) -> bool:
        """Whether to run the detector on ``frame`` (before :meth:`FaceTracker.predict` for it)."""
        self._extra = False
        if self.last is None or frame - self.last >= self.every:
            return True
        if not self.adaptive or self.tokens(frame) < 1.0:
            return False
        self._extra = self.reason(frame, tracker) is not None
        return self._extra

    def reason(self, frame: int, tracker: FaceTracker) -> str | None:
        """Why the detector should run before its regular time on ``frame`` (None: no reason)."""
        since = frame - (self.last if self.last is not None else frame - self.every)
        if since < 1:
            return None
        if tracker.cut_frame is not None and tracker.cut_frame > (self.last if self.last is not None else -1):
            return "cut"
        if tracker.confirming_tracks:  # not the doubtful ones that have had their chance
            return "confirm"
        visible = tracker.visible_tracks
        if _overlapping(visible, frame):
            return "crossing"
        if any(self._drifting(t, frame, tracker.frame_size) for t in visible):
            return "drift"
        if (tracker.lost_tracks or not visible) and since >= max(1, self.every // 2):
            return "lost"
        return None

    def _drifting(self, t: Track, frame: int, frame_size: tuple[int, int] | None) -> bool:
        pcx, pcy, pw, ph = _predicted_state(t, frame)
        size = np.sqrt(max(pw * ph, 1.0))
        if np.hypot(pcx - t.detected_state[0], pcy - t.detected_state[1]) > self.max_shift * size:
            return True
        if frame_size is None:
            return False
        fw, fh = frame_size
        vx, vy = t.velocity[0], t.velocity[1]
        return bool((pcx - pw / 2 < 0 and vx < 0) or (pcx + pw / 2 > fw and vx > 0)
                    or (pcy - ph / 2 < 0 and vy < 0) or (pcy + ph / 2 > fh and vy > 0))

    def ran(self, frame: int, update: TrackUpdate | None = None) -> None:
        """Record a detector run on ``frame`` (``update``: what it changed, kept for callers' logs)."""
        self._tokens = self.tokens(frame) - (1.0 if self._extra else 0.0)
        if self._extra:
            self.extra_runs += 1
        self._extra = False
        self.last = frame


def _overlapping(tracks: list[Track], frame: int) -> bool:
    if len(tracks) < 2:
        return False
    boxes = np.array([_predicted_box(t, frame) for t in tracks])
    iou = iou_xywh(boxes, boxes)
    np.fill_diagonal(iou, 0)
    return bool(iou.max() > 0)


def _predicted_state(t: Track, frame: int) -> np.ndarray:
    return t.state + t.velocity * (frame - t.frame)


def _predicted_box(t: Track, frame: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = _predicted_state(t, frame)
    return cx - w / 2, cy - h / 2, w, h
