"""Face tracking and temporal smoothing for video: stable ids between detector runs.

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
passing by. :class:`DetectionSchedule` runs the detector
on a fixed interval plus on evidence (a face to confirm, lost, drifting from its prediction,
crossing another), with a token bucket so that evidence can never make it run every frame.

Each track's emotion probabilities are smoothed over time by a :class:`Smoother`
(:class:`EmaSmoother`, :class:`WindowSmoother` or :class:`NoSmoother`). Smoothing is
defined per *frame*, not per classifier call, so its strength does not change when the
classifier runs only every n-th frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ferkit.core.detection import Detection

# ---------------------------------------------------------------------------- geometry / assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)``; boxes x, y, w, h."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def linear_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment (Hungarian algorithm, O(n³)) of a rectangular cost matrix.

    Returns ``(row, col)`` pairs; every row is assigned when rows ≤ columns, else every column.
    Forbidden pairs should carry a large finite cost and be filtered by the caller.

    Same result as ``scipy.optimize.linear_sum_assignment`` (the tests check it against scipy), kept
    here because scipy is not a runtime dependency: it would add 143 MB to the install (113 MB package
    + 30 MB bundled libraries; ferkit's whole venv is 359 MB), about 49 MB of resident memory and 1.2-2.6 s
    to ``import scipy.optimize`` on the 2-core machine, for matrices that here are at most a few tens of
    tracks by detections (microseconds either way).
    """
    cost = np.asarray(cost, np.float64)
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost
    n, m = c.shape  # n <= m
    # Shortest augmenting path with potentials (e-maxx formulation), 1-based with a dummy column 0.
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, np.intp)  # p[j] = row assigned to column j
    way = np.zeros(m + 1, np.intp)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:  # augment along the path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(j, i) for i, j in pairs]
    return sorted(pairs)


# ---------------------------------------------------------------------------- appearance

#: The appearance descriptor of a face: an ``APPEARANCE_THUMB``² grey thumbnail of its box (zero mean, unit
#: norm: brightness and contrast do not count) and a hue × saturation histogram (``APPEARANCE_BINS``,
#: square-rooted so that the dot product is the Bhattacharyya coefficient), weighted 1 : 6 and joined into one
#: unit vector, so that ``1 - a · b`` is a distance in [0, 1] (about 0 for the same face). On the benchmark
#: clips' faces (detections ≥ 30 frames apart, no overlap): same face ≤ 0.068 for 99 % of pairs, different
#: faces ≥ 0.086 for 99.9 % — either part alone separates them less well (the thumbnail suffers from pose and
#: alignment, the histogram from similar skin and hair).
APPEARANCE_THUMB = 8
APPEARANCE_BINS = (8, 8)
APPEARANCE_HIST_WEIGHT = 6 / 7
#: A face found again (a new track when it is confirmed, or a lost track's motion match) takes an earlier id
#: only if its appearance distance to that track is at most this ...
REID_DISTANCE = 0.08
#: ... and clearly the closest: at most this fraction of the distance to the next candidate.
REID_RATIO = 0.7
#: A new face is compared with the hidden and gone ones at each of its first this many clean detections.
REID_WINDOW = 6
#: A lost face's prediction (or any match made on centre distance only) may take a detection only if their
#: appearances are within this distance: the 1st percentile of different faces' distances on the clips (0.123),
#: twice the 99th of the same face's. (0.08-0.18 score the same on the clips; without the gate a face sliding
#: over a hidden one hands the hidden one's id to a face in front: IDF1 0.70 instead of 0.95 on ``enter_leave``.)
APPEARANCE_GATE = 0.12
#: Weight of the appearance distance in the association cost (IoU-based costs are 0..1).
APPEARANCE_WEIGHT = 1.0
#: Weight of a new clean detection in a track's appearance (the first few are averaged).
APPEARANCE_RATE = 0.1


def appearance(image: np.ndarray, box) -> np.ndarray | None:
    """Appearance descriptor (unit float32 vector) of the face in ``box`` of the BGR ``image``; None when the
    box is mostly outside the picture or tiny (a cut-off face would not look like itself)."""
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        return None
    x, y, w, h = (float(v) for v in box)
    fh, fw = image.shape[:2]
    x0, y0, x1, y1 = int(max(x, 0)), int(max(y, 0)), int(min(x + w, fw)), int(min(y + h, fh))
    if x1 - x0 < 6 or y1 - y0 < 6 or (x1 - x0) * (y1 - y0) < 0.9 * w * h:
        return None
    # Everything from a 32 × 32 copy: the cost is the same (~20 µs) for any face size.
    crop = cv2.resize(image[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA)
    n = APPEARANCE_THUMB
    thumb = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (n, n), interpolation=cv2.INTER_AREA)
    thumb = thumb.astype(np.float32).ravel()
    thumb -= thumb.mean()
    thumb /= max(float(np.linalg.norm(thumb)), 1e-6)
    hist = cv2.calcHist([cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)], [0, 1], None, list(APPEARANCE_BINS),
                        [0, 180, 0, 256]).ravel()
    hist = np.sqrt(hist / max(float(hist.sum()), 1.0))
    return np.concatenate([np.sqrt(1 - APPEARANCE_HIST_WEIGHT) * thumb,
                           np.sqrt(APPEARANCE_HIST_WEIGHT) * hist]).astype(np.float32)


def _blend(old: np.ndarray | None, new: np.ndarray, weight: float) -> np.ndarray:
    if old is None:
        return new
    v = (1 - weight) * old + weight * new
    return v / max(float(np.linalg.norm(v)), 1e-6)


class SceneCutDetector:
    """Hard cuts: a frame that differs from the previous one far more than consecutive frames do.

    Compares ~40 × 30-pixel samples of consecutive frames (every ``n``-th pixel: a few microseconds) by the mean
    absolute grey difference, as a fraction of full scale. A cut is a difference above ``threshold`` that is also
    ``ratio`` times the recent level (a running mean), so steady fast motion does not count. On the benchmark
    clips: the hard cut 0.12-0.17; every other frame ≤ 0.035 (pans, zooms, a photo sliding in).
    """

    def __init__(self, threshold: float = 0.06, ratio: float = 4.0, width: int = 40):
        self.threshold, self.ratio, self.width = float(threshold), float(ratio), int(width)
        self._prev: np.ndarray | None = None
        self._level: float | None = None

    def update(self, image: np.ndarray) -> bool:
        """Whether ``image`` (the next frame) starts a new shot."""
        step = max(1, image.shape[1] // self.width)
        sample = image[::step, ::step].astype(np.float32)
        grey = sample.mean(axis=2) if sample.ndim == 3 else sample
        prev, self._prev = self._prev, grey
        if prev is None or prev.shape != grey.shape:
            return False
        d = float(np.abs(grey - prev).mean()) / 255.0
        cut = d > self.threshold and (self._level is None or d > self.ratio * self._level)
        if not cut:
            self._level = d if self._level is None else 0.9 * self._level + 0.1 * d
        return cut


# ---------------------------------------------------------------------------- tracks


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
            raise ValueError(f"min_hits must be >= 1, got {min_hits}")
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
        overlap = iou_matrix(boxes, boxes)
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
        iou = iou_matrix(tb, db)
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


# ---------------------------------------------------------------------------- detection schedule


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
            raise ValueError(f"detect every must be >= 1 frame, got {every}")
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
    iou = iou_matrix(boxes, boxes)
    np.fill_diagonal(iou, 0)
    return bool(iou.max() > 0)


def _predicted_state(t: Track, frame: int) -> np.ndarray:
    return t.state + t.velocity * (frame - t.frame)


def _predicted_box(t: Track, frame: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = _predicted_state(t, frame)
    return cx - w / 2, cy - h / 2, w, h


# ---------------------------------------------------------------------------- smoothing


class Smoother:
    """Temporal smoothing of one track's probabilities; ``update`` once per classifier measurement.

    ``update(frame, probs)`` takes the raw ``(7,)`` probabilities measured on ``frame`` (or None when the
    face was unreadable there) and returns the smoothed probabilities to report (None if unreadable).
    Between measurements the last smoothed value is carried; :attr:`value` holds it.
    """

    value: np.ndarray | None = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        raise NotImplementedError


class NoSmoother(Smoother):
    """No smoothing: the latest measurement as is."""

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        self.value = None if probs is None else np.asarray(probs, np.float64)
        return self.value


class EmaSmoother(Smoother):
    """Exponential moving average with weight ``alpha`` *per frame*.

    For measurements ``dt`` frames apart the new one gets weight ``1 - (1 - alpha) ** dt`` — the
    same result as per-frame updates with the value held constant in between — so the time constant
    (≈ 1/alpha frames) does not depend on how often the classifier runs. Unreadable frames report None
    but keep the state; the weight rule makes a long gap fade it out.
    """

    def __init__(self, alpha: float = 0.3):
        if not 0 < alpha <= 1:
            raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._state: np.ndarray | None = None
        self._frame: int | None = None
        self.value = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        if probs is None:
            self.value = None
            return None
        p = np.asarray(probs, np.float64)
        if self._state is None or self._frame is None:
            self._state = p.copy()
        else:
            dt = max(1, frame - self._frame)
            a = 1.0 - (1.0 - self.alpha) ** dt
            self._state = a * p + (1.0 - a) * self._state
        self._frame = frame
        self.value = self._state.copy()
        return self.value


class WindowSmoother(Smoother):
    """Mean of the readable measurements taken within the last ``window`` frames (inclusive of this one)."""

    def __init__(self, window: int = 9):
        if window < 1:
            raise ValueError(f"smoothing window must be >= 1 frame, got {window}")
        self.window = int(window)
        self._items: list[tuple[int, np.ndarray]] = []
        self.value = None

    def update(self, frame: int, probs: np.ndarray | None) -> np.ndarray | None:
        # Bounded by `window` entries: constant memory however long the track lives.
        self._items = [(f, p) for f, p in self._items if f > frame - self.window]
        if probs is None:
            self.value = None
            return None
        self._items.append((frame, np.asarray(probs, np.float64)))
        self.value = np.mean([p for _, p in self._items], axis=0)
        return self.value


SMOOTHING_METHODS = ("ema", "window", "none")


def make_smoother(method: str = "ema", alpha: float = 0.3, window: int = 9) -> Smoother:
    """Smoother by name: ``ema`` (``alpha``), ``window`` (``window`` frames) or ``none``."""
    if method == "ema":
        return EmaSmoother(alpha)
    if method == "window":
        return WindowSmoother(window)
    if method == "none":
        return NoSmoother()
    raise ValueError(f"unknown smoothing {method!r}; choose one of {', '.join(SMOOTHING_METHODS)}")
