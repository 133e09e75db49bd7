"""Face tracking for video: stable ids between detector runs.

The video loop runs the (expensive) face detector only every few frames. In between,
:class:`FaceTracker` predicts each face's box with a constant-velocity model; when the
detector runs again, detections are associated with the predicted tracks by an optimal
(Hungarian) assignment on IoU, with a centroid-distance fallback for fast faces whose
prediction no longer overlaps. An unmatched detection starts a *tentative* track, reported
only once the detector has found it on ``min_hits`` consecutive runs (a false detection that
flickers never becomes a track); a confirmed track the detector misses is kept hidden
("lost") for a while, moving on with its velocity, so that a briefly occluded face keeps its
id. After that, when it leaves the picture, or at a scene cut (:class:`SceneCutDetector`)
it is *dormant*: remembered by its appearance (:func:`appearance`: a grey thumbnail and a
colour histogram of the face), so a face that comes back later and looks like it gets its id
again. Appearance also gates matches made on weak evidence — a hidden face's guessed position,
a match on centre distance alone — so a hidden face's id is not handed to a different face
passing by. :class:`~ferkit.apps.video.schedule.DetectionSchedule` runs the detector
on a fixed interval plus on evidence (a face to confirm, lost, drifting from its prediction,
crossing another), with a token bucket so that evidence can never make it run every frame.

Appearance lives in :mod:`~ferkit.apps.video.appearance`, the assignment in
:mod:`~ferkit.apps.video.assignment`, smoothing of each track's probabilities in
:mod:`~ferkit.apps.video.smoothing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ferkit.apps.video.appearance import (
    APPEARANCE_GATE,
    APPEARANCE_RATE,
    APPEARANCE_WEIGHT,
    REID_DISTANCE,
    REID_RATIO,
    REID_WINDOW,
    _blend,
    appearance,
)
from ferkit.apps.video.assignment import linear_assignment
from ferkit.core.detection import Detection
from ferkit.core.geometry import iou_xywh
from ferkit.errors import ConfigError


@dataclass(eq=False)  # identity semantics: tracks hold numpy arrays
class Track:
    """One tracked face.

    The motion state is the box centre and size, ``(cx, cy, w, h)``, with a velocity in
    pixels per frame. A track starts *tentative* and is *confirmed* once the detector has found
    it on ``min_hits`` consecutive runs; only confirmed tracks found by the most recent run
    (``misses == 0``) are reported (:attr:`visible`). A confirmed track the detector misses is
    *lost*: kept hidden for re-identification, not reported.
    """

    id: int
    state: np.ndarray  # cx, cy, w, h at frame `frame`
    velocity: np.ndarray  # d(cx, cy, w, h) per frame
    score: float
    landmarks_rel: np.ndarray | None  # landmarks in box units (0..1), so they move and scale with the box
    first_frame: int
    frame: int  # frame the state refers to
    last_detected: int  # frame of the last matched detection
    detected_state: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(4))
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    best_score: float = 0.0  # highest detector score so far (confirmation needs one good detection)
    appearance: np.ndarray | None = field(repr=False, default=None)  # see :func:`appearance`
    appearance_n: int = 0  # clean detections that made it
    identified: int = 0  # clean detections it had when last compared with the hidden and gone faces

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Current box ``(x, y, w, h)``."""
        cx, cy, w, h = (float(v) for v in self.state)
        return cx - w / 2, cy - h / 2, w, h

    @property
    def landmarks(self) -> np.ndarray | None:
        """Landmarks of the last detection moved and scaled with the current box (None without landmarks)."""
        if self.landmarks_rel is None:
            return None
        x, y, w, h = self.box
        return (self.landmarks_rel * np.array([w, h]) + np.array([x, y])).astype(np.float32)

    @property
    def visible(self) -> bool:
        """Confirmed and found by the most recent detector run: the tracks that are reported."""
        return self.confirmed and self.misses == 0

    @property
    def tentative(self) -> bool:
        """Not yet confirmed: never reported, deleted at its first missed detector run."""
        return not self.confirmed

    @property
    def lost(self) -> bool:
        """Confirmed but missed by the latest detector run(s): kept hidden for re-identification."""
        return self.confirmed and self.misses > 0

    @property
    def detected_now(self) -> bool:
        """The current box is the detector's own (not a prediction)."""
        return self.last_detected == self.frame

    def detection(self) -> Detection:
        """The current box, score and landmarks as a :class:`~ferkit.core.detection.Detection` for the recognizer."""
        return Detection(self.box, self.score, self.landmarks)


def _state(box) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2, w, h], np.float64)


def _relative_landmarks(det: Detection) -> np.ndarray | None:
    if det.landmarks is None:
        return None
    x, y, w, h = det.box
    return (np.asarray(det.landmarks, np.float64) - [x, y]) / [max(w, 1e-6), max(h, 1e-6)]


@dataclass
class TrackUpdate:
    """What one detector run changed.

    ``matched``: tracks found again; ``new``: tentative tracks started; ``confirmed``: tracks confirmed by
    this run (also in ``matched``); ``removed``: tracks ended (tentative ones that were missed, lost ones
    past their re-identification time, tracks that left the picture); ``missed``: confirmed tracks the run
    did not find, kept for re-identification.
    """

    matched: list[Track]
    new: list[Track]
    removed: list[Track]
    missed: list[Track]
    confirmed: list[Track] = field(default_factory=list)
    reidentified: list[Track] = field(default_factory=list)  # confirmed tracks that took an earlier face's id


#: Added to the association cost of a lost (hidden) track, so a face that is tracked and visible wins a
#: detection both could take.
LOST_COST = 0.3
#: A hidden face's speed is multiplied by this at each detector run that misses it: it moves on as it did for
#: a short occlusion, but a long-lost prediction does not fly away (0.5 and 0.8 score the same on the
#: benchmark clips; 1.0, no decay, hands hidden faces to passing ones more often: IDF1 0.48 vs 0.70 on
#: ``enter_leave``).
LOST_VELOCITY_DECAY = 0.8


class FaceTracker:
    """Multi-face tracker: constant-velocity prediction between detector runs, Hungarian association at them.

    Args:
        iou_threshold: minimum IoU between a predicted track and a detection to match them.
        max_distance: fallback when IoU is too low (fast motion): match if the centre distance is below
            this fraction of the track's box size and the sizes differ by less than 2×. For a lost track
            the allowance grows with the time it has been hidden (up to twice), as its prediction ages.
        min_hits: consecutive detector runs that must find a new face before its track is confirmed and
            reported; a tentative track missed once is deleted, so a one-off false detection never shows.
        confirm_score: ... and at least one of its detections must score this much: a persistent but
            doubtful detection (a face-like patch the detector finds at 0.5-0.6) stays tentative, unreported.
        max_missed: detector runs a confirmed track may miss before it is dropped ...
        max_age: ... and frames since it was last seen (both must be exceeded): how long a lost face is
            predicted with its motion (and found again by position) before it becomes dormant.
        velocity_smoothing: weight of the newest velocity measurement (0..1).
        frame_size: ``(width, height)``; tracks predicted entirely outside it stop being predicted.
        max_dormant: how many faces that are gone (lost longer than ``max_age``, left the picture, or before a
            scene cut) are remembered by appearance: a new face that looks like one of them (within
            :data:`REID_DISTANCE`, clearly closer than to any other) takes its id when it is confirmed. The
            oldest is forgotten (its track ends) when more are gone. 0 = forget at once (ids by motion only).

    Appearance needs the frame: pass ``image=`` to :meth:`update`. Without it, tracks have no appearance and
    are matched by position and motion only, and a gone track ends.
    """

    def __init__(self, iou_threshold: float = 0.2, max_distance: float = 1.0, max_missed: int = 2,
                 max_age: int = 30, velocity_smoothing: float = 0.5,
                 frame_size: tuple[int, int] | None = None, min_hits: int = 3, confirm_score: float = 0.0,
                 max_dormant: int = 32):
        if min_hits < 1:
            raise ConfigError(f"min_hits must be >= 1, got {min_hits}")
        self.iou_threshold = float(iou_threshold)
        self.max_distance = float(max_distance)
        self.max_missed = int(max_missed)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.confirm_score = float(confirm_score)
        self.velocity_smoothing = float(velocity_smoothing)
        self.frame_size = frame_size
        self.max_dormant = int(max_dormant)
        self.tracks: list[Track] = []
        self.dormant: list[Track] = []  # gone faces remembered by appearance, oldest first
        self.cut_frame: int | None = None  # frame of the last scene cut (:meth:`scene_cut`)
        self._next_id = 1

    @property
    def visible_tracks(self) -> list[Track]:
        """Tracks to report on the current frame (confirmed and currently found), by id."""
        return [t for t in self.tracks if t.visible]

    @property
    def tentative_tracks(self) -> list[Track]:
        """Tracks not confirmed (not reported)."""
        return [t for t in self.tracks if t.tentative]

    @property
    def confirming_tracks(self) -> list[Track]:
        """Tentative tracks that more detections could still confirm (fewer than ``min_hits`` so far)."""
        return [t for t in self.tracks if t.tentative and t.hits < self.min_hits]

    @property
    def lost_tracks(self) -> list[Track]:
        """Confirmed tracks currently hidden, kept for re-identification."""
        return [t for t in self.tracks if t.lost]

    def predict(self, frame: int) -> list[Track]:
        """Move every track to ``frame`` with its velocity; returns (and removes) tracks that left the frame."""
        gone = []
        for t in self.tracks:
            dt = frame - t.frame
            if dt:
                t.state = t.state + t.velocity * dt
                t.state[2:] = np.maximum(t.state[2:], 2.0)
                t.frame = frame
            if self.frame_size is not None:
                x, y, w, h = t.box
                fw, fh = self.frame_size
                if x >= fw or y >= fh or x + w <= 0 or y + h <= 0:
                    gone.append(t)
        if gone:
            ids = {id(t) for t in gone}
            self.tracks = [t for t in self.tracks if id(t) not in ids]
        return self._retire(gone)

    def _retire(self, tracks: list[Track]) -> list[Track]:
        """Tracks that are gone: confirmed ones with an appearance are remembered (dormant); returns those that
        end (the others, and the oldest dormant ones beyond ``max_dormant``)."""
        ended = []
        for t in tracks:
            if t.confirmed and t.appearance is not None and self.max_dormant > 0:
                t.velocity = np.zeros(4)
                self.dormant.append(t)
            else:
                ended.append(t)
        while len(self.dormant) > self.max_dormant:
            ended.append(self.dormant.pop(0))
        return ended

    def scene_cut(self, frame: int) -> list[Track]:
        """A new shot starts on ``frame``: positions and motion no longer say anything. Every confirmed track
        becomes dormant (found again by appearance only), tentative ones are dropped; returns tracks that end."""
        self.cut_frame = frame
        gone, self.tracks = self.tracks, []
        return self._retire(gone)

    def update(self, detections: list[Detection], frame: int, image: np.ndarray | None = None) -> TrackUpdate:
        """Associate one detector run's faces with the tracks (predicted to ``frame`` first).

        Matched tracks take the detector's box (and refine their velocity) and are confirmed at ``min_hits``;
        unmatched detections start tentative tracks; an unmatched tentative track is deleted, an unmatched
        confirmed one is kept hidden until ``max_missed`` runs and ``max_age`` frames passed, then dormant.
        ``image``: the frame the detections come from, for the faces' appearance.
        """
        removed = self.predict(frame)
        descs, clean = self._descriptors(detections, image)
        pairs = self._associate(detections, frame, descs)
        matched_t = {ti for ti, _ in pairs}
        matched_d = {di for _, di in pairs}
        matched, confirmed = [], []
        for ti, di in pairs:
            t = self.tracks[ti]
            self._absorb(t, detections[di], frame, descs[di] if clean[di] else None)
            if not t.confirmed and t.hits >= self.min_hits and t.best_score >= self.confirm_score:
                t.confirmed = True
                confirmed.append(t)
            matched.append(t)
        missed, retired = [], []
        for i, t in enumerate(self.tracks):
            if i in matched_t:
                continue
            t.misses += 1
            # A hidden face keeps moving for a while (it went behind something, or the detector missed it),
            # slowing down; its size rate is damped, so a lost box does not grow or shrink away.
            t.velocity[2:] *= 0.5
            t.velocity[:2] *= LOST_VELOCITY_DECAY
            if t.tentative:
                removed.append(t)
            elif t.misses > self.max_missed and frame - t.last_detected > self.max_age:
                retired.append(t)
            else:
                missed.append(t)
        new = [self._start(d, frame, descs[di] if clean[di] else None)
               for di, d in enumerate(detections) if di not in matched_d]
        gone = {id(t) for t in removed + retired}
        self.tracks = [t for t in self.tracks if id(t) not in gone] + new
        removed += self._retire(retired)
        # A new face is compared with the hidden and gone ones from its confirmation on, at each new clean
        # detection until it has had REID_WINDOW of them (a face coming in at the picture's edge is only partly
        # seen at first). When found after it was reported under its new id, that id ends here.
        reidentified = []
        for t in matched:
            if not t.confirmed or t.appearance is None or t.identified >= min(t.appearance_n, REID_WINDOW):
                continue
            t.identified = t.appearance_n
            old = t.id
            if self._reidentify(t):
                reidentified.append(t)
                if t not in confirmed:
                    removed.append(replace(t, id=old))
        if reidentified:  # a lost track taken over is no longer missed
            alive = {id(x) for x in self.tracks}
            missed = [t for t in missed if id(t) in alive]
        return TrackUpdate(matched=matched, new=new, removed=removed, missed=missed, confirmed=confirmed,
                           reidentified=reidentified)

    def _reidentify(self, t: Track) -> bool:
        """A newly confirmed track that looks like a hidden or gone face takes over that face's id."""
        if t.appearance is None:
            return False
        cands = [c for c in self.tracks if c.lost and c.appearance is not None] + self.dormant
        if not cands:
            return False
        d = np.array([1.0 - float(c.appearance @ t.appearance) for c in cands])
        order = np.argsort(d)
        best = int(order[0])
        if d[best] > REID_DISTANCE or (len(d) > 1 and d[best] > REID_RATIO * d[order[1]]):
            return False
        c = cands[best]
        if c in self.dormant:
            self.dormant.remove(c)
        else:
            self.tracks.remove(c)
        t.id, t.first_frame = c.id, c.first_frame
        t.appearance = _blend(c.appearance, t.appearance, 0.5)
        t.appearance_n = c.appearance_n + t.appearance_n
        return True

    def _absorb(self, t: Track, d: Detection, frame: int, desc: np.ndarray | None = None) -> None:
        """Move track ``t`` onto detection ``d`` found on ``frame`` and update its velocity."""
        new_state = _state(d.box)
        dt = frame - t.last_detected
        if dt > 0:
            v = (new_state - t.detected_state) / dt
            a = 1.0 if t.hits == 1 or t.misses else self.velocity_smoothing
            t.velocity = a * v + (1 - a) * t.velocity
            t.velocity[2:] *= 0.5  # sizes change slowly; damp their noisy rate
        t.state = new_state
        t.detected_state = new_state.copy()
        t.score = float(d.score)
        t.best_score = max(t.best_score, t.score)
        t.landmarks_rel = _relative_landmarks(d)
        t.last_detected = frame
        t.frame = frame
        t.hits += 1
        t.misses = 0
        if desc is not None:
            t.appearance_n += 1
            t.appearance = _blend(t.appearance, desc, max(1.0 / t.appearance_n, APPEARANCE_RATE))

    def _descriptors(self, detections: list[Detection], image: np.ndarray | None
                     ) -> tuple[list[np.ndarray | None], list[bool]]:
        """Appearance of each detection (for matching), and whether it is clean enough to learn a track's
        appearance from: not overlapping another detection (the face in front would be mixed in), not touching
        the picture's border (the detector's box of a face cut off by it holds only part of the face) and
        scoring at least ``confirm_score``."""
        if image is None or not detections:
            return [None] * len(detections), [False] * len(detections)
        descs = [appearance(image, d.box) for d in detections]
        boxes = np.array([d.box for d in detections], np.float64)
        overlap = iou_xywh(boxes, boxes)
        np.fill_diagonal(overlap, 0)
        fh, fw = image.shape[:2]
        inside = ((boxes[:, 0] >= 1) & (boxes[:, 1] >= 1) & (boxes[:, 0] + boxes[:, 2] <= fw - 1)
                  & (boxes[:, 1] + boxes[:, 3] <= fh - 1))
        clean = [descs[i] is not None and inside[i] and overlap[i].max() <= 0 and d.score >= self.confirm_score
                 for i, d in enumerate(detections)]
        return descs, clean

    def _start(self, d: Detection, frame: int, desc: np.ndarray | None = None) -> Track:
        s = _state(d.box)
        t = Track(id=self._next_id, state=s, velocity=np.zeros(4), score=float(d.score),
                  landmarks_rel=_relative_landmarks(d), first_frame=frame, frame=frame, last_detected=frame,
                  detected_state=s.copy(), best_score=float(d.score),
                  confirmed=self.min_hits <= 1 and float(d.score) >= self.confirm_score,
                  appearance=desc, appearance_n=int(desc is not None))
        self._next_id += 1
        return t

    def flush(self) -> list[Track]:
        """Remove and return every track, dormant ones included (end of the video)."""
        out, self.tracks, self.dormant = self.tracks + self.dormant, [], []
        return out

    def _associate(self, detections: list[Detection], frame: int,
                   descs: list[np.ndarray | None] | None = None) -> list[tuple[int, int]]:
        if not self.tracks or not detections:
            return []
        tb = np.array([t.box for t in self.tracks], np.float64)
        db = np.array([d.box for d in detections], np.float64)
        iou = iou_xywh(tb, db)
        # Centre distance in units of the track's size: the fallback for faces that moved
        # further than the prediction guessed (no overlap left).
        tc, dc = tb[:, :2] + tb[:, 2:] / 2, db[:, :2] + db[:, 2:] / 2
        size = np.sqrt(tb[:, 2] * tb[:, 3])[:, None]
        dist = np.linalg.norm(tc[:, None] - dc[None], axis=2) / np.maximum(size, 1e-6)
        ratio = np.sqrt(db[:, 2] * db[:, 3])[None] / np.maximum(size, 1e-6)
        hidden = np.array([frame - t.last_detected if t.lost else 0 for t in self.tracks], np.float64)[:, None]
        reach = self.max_distance * np.minimum(1.0 + hidden / max(self.max_age, 1), 2.0)
        by_iou = iou >= self.iou_threshold
        by_dist = (dist <= reach) & (ratio > 0.5) & (ratio < 2.0)
        ok = by_iou | by_dist
        # IoU matches always beat distance-only ones (cost < 1 vs ≥ 1); visible tracks beat lost ones.
        cost = np.where(by_iou, 1.0 - iou, 1.0 + dist) + np.where(hidden > 0, LOST_COST, 0.0)
        app = self._appearance_distances(descs)
        if app is not None:
            known = ~np.isnan(app)
            # A hidden face's guessed position, or a match on distance alone, is weak evidence: the faces must
            # also look alike. Appearance breaks ties between candidates everywhere.
            weak = (hidden > 0) | ~by_iou
            ok &= ~(known & weak & (app > APPEARANCE_GATE))
            cost = cost + APPEARANCE_WEIGHT * np.where(known, app, 0.0)
        cost = np.where(ok, cost, 1e6)
        return [(ti, di) for ti, di in linear_assignment(cost) if ok[ti, di]]

    def _appearance_distances(self, descs: list[np.ndarray | None] | None) -> np.ndarray | None:
        """Track × detection appearance distances (NaN where either has none); None when nothing is known."""
        if descs is None or all(d is None for d in descs):
            return None
        app = np.full((len(self.tracks), len(descs)), np.nan)
        for ti, t in enumerate(self.tracks):
            if t.appearance is None:
                continue
            for di, d in enumerate(descs):
                if d is not None:
                    app[ti, di] = 1.0 - float(t.appearance @ d)
        return app
