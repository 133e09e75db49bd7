"""Tracking (association, ids, motion model, detection schedule) and temporal smoothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ferkit.detection import Detection
from ferkit.tracking import (
    DetectionSchedule,
    EmaSmoother,
    FaceTracker,
    NoSmoother,
    WindowSmoother,
    iou_matrix,
    linear_assignment,
    make_smoother,
)

# ---------------------------------------------------------------------------- geometry and assignment


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]])
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0)
    assert m[0, 1] == pytest.approx(50 / 150)  # half overlap: 50 / (100 + 100 - 50)
    assert m[0, 2] == 0 and m[1].sum() == 0


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (4, 4), (5, 3)])
def test_linear_assignment_is_optimal(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        pairs = linear_assignment(cost)
        n, m = shape
        assert len(pairs) == min(n, m)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        if n <= m:
            best = min(sum(cost[i, j] for i, j in zip(range(n), p)) for p in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[i, j] for i, j in zip(p, range(m))) for p in itertools.permutations(range(n), m))
        assert sum(cost[i, j] for i, j in pairs) == pytest.approx(best)


def test_linear_assignment_prefers_global_optimum_over_greedy():
    # Greedy would take the 0.1 pair and then be forced into 0.9; the optimum is 0.2 + 0.3.
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    assert linear_assignment(cost) == [(0, 1), (1, 0)]
    assert linear_assignment(np.zeros((0, 3))) == []


# ---------------------------------------------------------------------------- tracker


def _det(x, y, s=60.0, score=0.99, landmarks=None):
    return Detection((float(x), float(y), s, s), score, landmarks)


def _run(tracker, schedule_every, positions_by_frame, frame_size=(640, 480)):
    """Feed detections every `schedule_every` frames; returns {frame: {track_id: box}} of visible tracks."""
    out = {}
    for f, dets in enumerate(positions_by_frame):
        if f % schedule_every == 0:
            tracker.update(dets, f)
        else:
            tracker.predict(f)
        out[f] = {t.id: t.box for t in tracker.visible_tracks}
    return out


def test_ids_stable_for_moving_faces_with_sparse_detection():
    # Two faces moving at 4 px/frame in opposite directions, detected every 5th frame only.
    frames = [[_det(20 + 4 * f, 50), _det(500 - 4 * f, 300)] for f in range(60)]
    tracker = FaceTracker(frame_size=(640, 480))
    seen = _run(tracker, 5, frames)
    assert all(set(v) == {1, 2} for v in seen.values())
    # The constant-velocity prediction follows the motion between detections (after velocity is known).
    for f in range(11, 60):
        assert seen[f][1][0] == pytest.approx(20 + 4 * f, abs=1.0)
        assert seen[f][2][0] == pytest.approx(500 - 4 * f, abs=1.0)


def test_landmarks_move_with_the_predicted_box():
    lm = np.array([[20, 20], [40, 20], [30, 30], [22, 45], [38, 45]], np.float32)
    tracker = FaceTracker()
    tracker.update([_det(0, 0, landmarks=lm)], 0)
    tracker.update([_det(10, 0, landmarks=lm + [10, 0])], 1)
    tracker.predict(3)  # moving 10 px/frame → +20 px
    t = tracker.visible_tracks[0]
    assert t.box[0] == pytest.approx(30)
    np.testing.assert_allclose(t.landmarks, lm + [30, 0], atol=1e-4)
    assert t.detection().landmarks is not None


def test_crossing_faces_keep_their_ids():
    # A moves right, B moves left, slightly offset vertically: their boxes overlap heavily mid-way.
    # Detection runs every frame while they overlap (what DetectionSchedule asks for).
    def frame(f):
        return [_det(100 + 6 * f, 200), _det(400 - 6 * f, 215)]

    tracker = FaceTracker(frame_size=(640, 480))
    ids_a, ids_b = set(), set()
    for f in range(50):
        dets = frame(f)
        tracker.update(dets, f)
        for t in tracker.visible_tracks:
            # attribute each track to the ground-truth face it sits on
            (ids_a if abs(t.box[1] - 200) < 7 else ids_b).add(t.id)
    assert ids_a == {1} and ids_b == {2}


def test_crossing_faces_keep_ids_with_a_missed_detection_at_the_crossing():
    tracker = FaceTracker(frame_size=(640, 480))
    for f in range(50):
        a, b = _det(100 + 6 * f, 200), _det(400 - 6 * f, 215)
        dets = [a] if f == 25 else [a, b]  # at the crossing the detector sees only the front face
        tracker.update(dets, f)
    by_id = {t.id: t.box for t in tracker.visible_tracks}
    assert set(by_id) == {1, 2}
    assert by_id[1][0] == pytest.approx(100 + 6 * 49) and by_id[2][0] == pytest.approx(400 - 6 * 49)


def test_face_leaving_and_returning_gets_a_new_id():
    tracker = FaceTracker(frame_size=(640, 480), max_missed=1, max_age=10)
    removed = []
    for f in range(100):
        if f < 30 or f >= 70:
            dets = [_det(300, 200)]
        else:
            dets = []  # the face is gone for 40 frames
        removed += tracker.update(dets, f).removed
    assert [t.id for t in removed] == [1]
    assert [t.id for t in tracker.visible_tracks] == [2]


def test_brief_miss_keeps_the_id_but_hides_the_track():
    tracker = FaceTracker(frame_size=(640, 480))
    tracker.update([_det(300, 200)], 0)
    up = tracker.update([], 5)
    assert up.missed and not tracker.visible_tracks  # coasting: kept, not reported
    tracker.update([_det(302, 201)], 10)
    assert [t.id for t in tracker.visible_tracks] == [1]


def test_track_predicted_out_of_the_frame_is_dropped():
    tracker = FaceTracker(frame_size=(200, 200))
    tracker.update([_det(100, 50, s=40)], 0)
    tracker.update([_det(120, 50, s=40)], 1)  # 20 px/frame to the right
    assert tracker.predict(4) == []  # x = 180: still partly inside
    gone = tracker.predict(6)  # x = 220 > 200
    assert [t.id for t in gone] == [1] and tracker.tracks == []


def test_fast_face_matched_by_centre_distance_when_iou_is_low():
    tracker = FaceTracker()
    tracker.update([_det(100, 100)], 0)
    tracker.update([_det(110, 100)], 1)  # 10 px/frame
    # Predicted x = 120; the face is at 168: 0.8 box sizes off, IoU 0.11 < 0.2 → matched by distance.
    tracker.update([_det(168, 100)], 2)
    assert [t.id for t in tracker.visible_tracks] == [1]
    tracker.update([_det(400, 100)], 3)  # far away: a different face
    assert [t.id for t in tracker.visible_tracks] == [2]


# ---------------------------------------------------------------------------- detection schedule


def test_schedule_fixed_interval_without_adaptation():
    s, tracker = DetectionSchedule(every=4, adaptive=False), FaceTracker()
    runs = []
    for f in range(12):
        if s.due(f, tracker):
            runs.append(f)
            s.ran(f, tracker.update([_det(100, 100)], f))
        else:
            tracker.predict(f)
    assert runs == [0, 4, 8]


def test_schedule_adapts_to_new_missing_and_overlapping_faces():
    tracker = FaceTracker(frame_size=(640, 480))
    s = DetectionSchedule(every=8)
    # Frame 0: a new face → confirm on the next frame.
    s.ran(0, tracker.update([_det(100, 100)], 0))
    assert s.due(1, tracker)
    s.ran(1, tracker.update([_det(100, 100)], 1))
    assert not s.due(2, tracker)  # confirmed and settled
    assert s.due(9, tracker)  # regular interval
    # No face at all: new faces are likely → every K // 2 frames.
    t2, s2 = FaceTracker(), DetectionSchedule(every=8)
    s2.ran(0, t2.update([], 0))
    assert not s2.due(3, t2) and s2.due(4, t2)
    # Two overlapping (crossing) faces → every frame.
    t3, s3 = FaceTracker(), DetectionSchedule(every=8)
    for f in (0, 1):
        s3.ran(f, t3.update([_det(100, 100), _det(140, 100)], f))
    assert s3.due(2, t3)


def test_schedule_detects_when_a_face_moves_far_or_leaves():
    tracker = FaceTracker(frame_size=(640, 480))
    s = DetectionSchedule(every=10, max_shift=0.35)
    s.ran(0, tracker.update([_det(100, 100)], 0))
    s.ran(1, tracker.update([_det(110, 100)], 1))  # 10 px/frame, box 60 → 21 px allowed
    assert not s.due(3, tracker)  # 20 px shift
    assert s.due(4, tracker)  # 30 px shift
    t2, s2 = FaceTracker(frame_size=(640, 480)), DetectionSchedule(every=10, max_shift=10)
    s2.ran(0, t2.update([_det(560, 100)], 0))
    s2.ran(1, t2.update([_det(570, 100)], 1))
    assert not s2.due(2, t2)  # right edge at 640 exactly
    assert s2.due(3, t2)  # crossing the right edge while moving right


def test_schedule_rejects_bad_interval():
    with pytest.raises(ValueError):
        DetectionSchedule(every=0)


# ---------------------------------------------------------------------------- smoothing

A = np.array([1.0, 0, 0, 0, 0, 0, 0])
B = np.array([0, 0, 0, 1.0, 0, 0, 0])


def test_ema_per_frame_math():
    s = EmaSmoother(alpha=0.5)
    np.testing.assert_allclose(s.update(0, A), A)  # first value initialises
    np.testing.assert_allclose(s.update(1, B), 0.5 * A + 0.5 * B)
    np.testing.assert_allclose(s.update(2, B), 0.25 * A + 0.75 * B)
    assert s.value.sum() == pytest.approx(1.0)


def test_ema_gap_equals_holding_the_value_between_measurements():
    sparse, dense = EmaSmoother(0.3), EmaSmoother(0.3)
    sparse.update(0, A)
    dense.update(0, A)
    for f in (1, 2, 3):
        dense.update(f, B)  # the same measurement every frame …
    got = sparse.update(3, B)  # … equals one measurement 3 frames later: weight 1 - 0.7**3
    np.testing.assert_allclose(got, dense.value)
    np.testing.assert_allclose(got, 0.7**3 * A + (1 - 0.7**3) * B)


def test_ema_unreadable_reports_none_and_keeps_state():
    s = EmaSmoother(0.5)
    s.update(0, A)
    assert s.update(1, None) is None and s.value is None
    np.testing.assert_allclose(s.update(2, B), 0.25 * A + 0.75 * B)  # gap of 2 frames since the last value


def test_window_mean_of_last_frames():
    s = WindowSmoother(window=3)
    s.update(0, A)
    s.update(1, B)
    np.testing.assert_allclose(s.value, (A + B) / 2)
    np.testing.assert_allclose(s.update(2, B), (A + 2 * B) / 3)
    np.testing.assert_allclose(s.update(3, B), B)  # frame 0 has left the 3-frame window
    np.testing.assert_allclose(s.update(6, A), A)  # sparse measurements: only those inside the window count
    assert s.update(7, None) is None
    assert len(s._items) <= 3


def test_no_smoothing_passes_values_through():
    s = NoSmoother()
    np.testing.assert_allclose(s.update(0, A), A)
    np.testing.assert_allclose(s.update(1, B), B)
    assert s.update(2, None) is None


def test_make_smoother_by_name_and_errors():
    assert isinstance(make_smoother("ema", alpha=0.1), EmaSmoother)
    assert isinstance(make_smoother("window", window=4), WindowSmoother)
    assert isinstance(make_smoother("none"), NoSmoother)
    with pytest.raises(ValueError):
        make_smoother("kalman")
    with pytest.raises(ValueError):
        EmaSmoother(alpha=0)
    with pytest.raises(ValueError):
        WindowSmoother(window=0)
