"""Re-identification by appearance: faces that leave and come back, hidden faces, scene cuts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferkit.apps.video.appearance import APPEARANCE_GATE, REID_DISTANCE, SceneCutDetector, appearance
from ferkit.apps.video.schedule import DetectionSchedule
from ferkit.apps.video.tracking import FaceTracker
from ferkit.core.detection import Detection

W, H = 640, 480
FACE = (80, 96)


def _face(seed: int) -> np.ndarray:
    """A textured colour patch standing for one person's face (each seed another person)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (FACE[1], FACE[0], 3)).astype(np.float32), (0, 0), 5)
    noise /= max(float(np.abs(noise).max()), 1e-6)
    base = rng.uniform(60, 200, 3)
    return np.clip(base + 55 * noise, 0, 255).astype(np.uint8)


def _background() -> np.ndarray:
    return np.full((H, W, 3), 110, np.uint8)


def _frame(faces: dict[int, tuple[int, int]], bg: np.ndarray | None = None) -> tuple[np.ndarray, list[Detection]]:
    """A frame with face ``seed`` pasted at each ``(x, y)``, and the detector's boxes of the visible ones."""
    img = (_background() if bg is None else bg).copy()
    dets = []
    for seed, (x, y) in faces.items():
        patch = _face(seed)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + FACE[0], W), min(y + FACE[1], H)
        if x1 <= x0 or y1 <= y0:
            continue
        img[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]
        if (x1 - x0) * (y1 - y0) >= 0.5 * FACE[0] * FACE[1]:
            dets.append(Detection((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), 0.99))
    return img, dets


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b)


def test_appearance_same_face_close_other_faces_far():
    img, _ = _frame({1: (100, 100), 2: (300, 100), 3: (500, 300)})
    a1, a2, a3 = (appearance(img, (x, y, *FACE)) for x, y in [(100, 100), (300, 100), (500, 300)])
    # The same face larger and brighter (zoomed in, lit differently).
    big = cv2.resize(_face(1), (120, 144))
    bright = np.clip(big.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    img2 = _background()
    img2[50:194, 60:180] = bright
    same = appearance(img2, (60, 50, 120, 144))
    assert np.linalg.norm(a1) == pytest.approx(1.0, abs=1e-3)
    assert _dist(a1, same) < REID_DISTANCE
    assert min(_dist(a1, a2), _dist(a1, a3), _dist(a2, a3)) > APPEARANCE_GATE
    # A box mostly outside the picture has no appearance (a cut-off face does not look like itself).
    assert appearance(img, (600, 100, 80, 96)) is None
    assert appearance(img[:, :, 0], (100, 100, 80, 96)) is None  # grey frames: none either


def _run(tracker: FaceTracker, frames, start: int = 0, image: bool = True) -> dict[int, list[int]]:
    """Detector on every frame; returns {frame: visible track ids}."""
    seen = {}
    for k, faces in enumerate(frames):
        f = start + k
        img, dets = _frame(faces)
        tracker.update(dets, f, image=img if image else None)
        seen[f] = sorted(t.id for t in tracker.visible_tracks)
    return seen


def test_face_that_leaves_and_comes_back_keeps_its_id():
    # Face 1 walks out at the right, stays away 3 s (longer than max_age), and walks back in.
    out = [{1: (400 + 10 * f, 200)} for f in range(30)]  # x reaches 690: gone after ~24 frames
    away = [{} for _ in range(90)]
    back = [{1: (640 - 5 * f, 210)} for f in range(30)]
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    seen = _run(tracker, out + away + back)
    assert seen[10] == [1] and seen[100] == []
    assert seen[149] == [1]  # found again, same id
    assert not tracker.dormant
    # It came in cut off by the picture's edge: reported under a new id (2) until its first clean detection
    # (whole face inside the picture, x <= 560), then recognised; id 2 ends there.
    assert seen[133] == [2] and seen[137] == [1]
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    ended = {}
    for f, faces in enumerate(out + away + back):
        img, dets = _frame(faces)
        up = tracker.update(dets, f, image=img)
        ended.update({t.id: f for t in up.removed})
        if up.reidentified:
            assert [t.id for t in up.reidentified] == [1] and ended == {2: f}
    # Without the frames (no appearance) the returning face is a new one, as before.
    plain = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    assert _run(plain, out + away + back, image=False)[149] == [2]


def test_other_face_entering_gets_a_new_id():
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    out = [{1: (400 + 10 * f, 200)} for f in range(30)]
    other = [{} for _ in range(60)] + [{2: (640 - 5 * f, 210)} for f in range(30)]
    seen = _run(tracker, out + other)
    assert seen[119] == [2]  # another person where person 1 left: not person 1's id
    assert [t.id for t in tracker.dormant] == [1]


def test_hidden_face_does_not_take_a_different_face_at_its_predicted_place():
    # Face 1 moves right and is hidden for 12 frames; meanwhile face 2 appears just where face 1's prediction
    # goes and moves on. Face 2 gets its own id; face 1, when it shows again (a little back), gets its own.
    frames = [{1: (100 + 4 * f, 200)} for f in range(10)]
    frames += [{} for _ in range(4)] + [{2: (160 + 4 * f, 200)} for f in range(8)]
    frames += [{1: (100, 200), 2: (192 + 4 * f, 200)} for f in range(6)]
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    seen = _run(tracker, frames)
    assert seen[9] == [1]
    assert 1 not in seen[21] and len(seen[21]) == 1  # face 2 has its own (new) id
    new_id = seen[21][0]
    assert seen[len(frames) - 1] == sorted([1, new_id])
    boxes = {t.id: t.box for t in tracker.visible_tracks}
    assert boxes[1][0] == pytest.approx(100) and boxes[new_id][0] == pytest.approx(212)


def test_scene_cut_detector():
    cuts = SceneCutDetector()
    bg = cv2.GaussianBlur(np.random.default_rng(0).normal(110, 40, (H, W + 200, 3)).astype(np.float32), (0, 0), 3)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    pan = [np.ascontiguousarray(bg[:, 4 * f:4 * f + W]) for f in range(40)]  # a steady pan: no cut
    assert not any(cuts.update(f) for f in pan)
    other = np.full((H, W, 3), 30, np.uint8)
    other[100:300, 200:500] = (200, 180, 40)
    assert cuts.update(other)  # the hard cut
    assert not cuts.update(other)  # the new shot goes on


def test_scene_cut_forgets_positions_but_remembers_faces():
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30)
    schedule = DetectionSchedule(5)
    _run(tracker, [{1: (200, 150)} for _ in range(5)])
    schedule.ran(4)
    assert tracker.scene_cut(5) == []  # nothing ends: face 1 is remembered by appearance
    assert not tracker.tracks and [t.id for t in tracker.dormant] == [1]
    assert schedule.reason(5, tracker) == "cut"  # the detector runs on the new shot at once
    # The new shot has another person at the same place: a new id, not person 1's.
    seen = _run(tracker, [{2: (200, 150)} for _ in range(5)], start=5)
    assert seen[9] == [2]
    # Cut back to the first shot: person 1 gets id 1 again.
    tracker.scene_cut(10)
    seen = _run(tracker, [{1: (210, 150)} for _ in range(5)], start=10)
    assert seen[14] == [1]


def test_dormant_faces_are_bounded():
    tracker = FaceTracker(frame_size=(W, H), min_hits=3, max_age=30, max_dormant=2)
    ended = []
    for k, seed in enumerate((1, 2, 3)):
        for f in range(5):
            img, dets = _frame({seed: (100 + 150 * k, 200)})
            ended += tracker.update(dets, 10 * k + f, image=img).removed
        ended += tracker.scene_cut(10 * k + 5)
    assert [t.id for t in ended] == [1]  # the oldest is forgotten, and its track ends
    assert [t.id for t in tracker.dormant] == [2, 3]
    assert {t.id for t in tracker.flush()} == {2, 3}
