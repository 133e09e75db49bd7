"""Per-frame analysis shared by video files and live cameras: detection schedule, tracks, classification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferkit.apps.video.appearance import SceneCutDetector
from ferkit.apps.video.options import VideoOptions
from ferkit.apps.video.schedule import DetectionSchedule
from ferkit.apps.video.smoothing import Smoother, make_smoother
from ferkit.apps.video.tracking import FaceTracker, Track
from ferkit.core.results import Face, Quality


@dataclass
class TrackSample:
    """One tracked face on one frame: what is drawn and what goes into the table."""

    face: Face  # smoothed probabilities (None when unreadable), track_id set
    raw: np.ndarray | None  # classifier's measurement on this frame (split views: with the other views' latest);
    # None when not classified here or unreadable
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
    next_view: int = 0
    views: dict[int, np.ndarray] = field(default_factory=dict)  # latest probabilities measured on each view

    def measure(self, view: int | None, probs: np.ndarray | None, n_views: int) -> np.ndarray | None:
        """One classification's measurement: with split views, the mean of the latest of each view."""
        if view is None or probs is None:
            self.views.clear()  # unreadable: the face may come back changed
            return probs
        self.views[view] = probs
        self.next_view = (view + 1) % n_views
        return np.mean(list(self.views.values()), axis=0)


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
        self.tracker = FaceTracker(frame_size=frame_size, min_hits=options.confirm_hits,
                                   confirm_score=options.confirm_score, max_age=options.keep_lost)
        self.schedule = DetectionSchedule(options.detect_every, options.adaptive)
        self.cuts = SceneCutDetector()  # a hard cut: positions mean nothing, faces are found again by appearance
        self._states: dict[int, _TrackState] = {}
        self.detector_runs = 0
        self.classified_faces = 0
        self._credit = 0.0
        self.lang = getattr(getattr(recognizer, "settings", None), "lang", "en")  # of the labels, as for photos
        runtime_views = getattr(getattr(recognizer, "classifier", None), "runtime_views", 1)
        #: test-time views that take turns on a track's classifications (1 = all views every time)
        self.split_views = runtime_views if options.split_views else 1

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
        if self.cuts.update(frame):
            ended.extend(self.tracker.scene_cut(index))
        detected = self.schedule.due(index, self.tracker)
        if detected:
            found = [d for d in self.recognizer.detector.detect(frame) if d.score >= self.options.track_score]
            update = self.tracker.update(found, index, image=frame)
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
            views = [self._states[t.id].next_view for t in due] if self.split_views > 1 else None
            analysis = self.recognizer.analyze(frame, detections=[t.detection() for t in due], views=views)
            self.classified_faces += len(due)
            for i, (t, f) in enumerate(zip(due, analysis.faces)):
                st = self._states[t.id]
                st.quality = f.quality
                measured = st.measure(None if views is None else views[i], f.probabilities, self.split_views)
                st.smoothed = st.smoother.update(index, measured)
                st.last_classified = index
                raw[t.id] = measured
        samples = []
        for t in visible:
            st = self._states[t.id]
            face = Face(box=t.box, score=t.score, landmarks=t.landmarks, quality=st.quality,
                        probabilities=st.smoothed, track_id=t.id, lang=self.lang)
            samples.append(TrackSample(face=face, raw=raw.get(t.id), classified=t.id in raw,
                                       detected=detected and t.detected_now))
        return FrameResult(index=index, detected=detected, samples=samples, ended=[t.id for t in ended])

    def finish(self) -> list[int]:
        """End every remaining track; returns their ids."""
        ids = [t.id for t in self.tracker.flush()]
        self._states.clear()
        return ids

