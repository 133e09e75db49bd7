"""Tracking (association, ids, motion model, detection schedule) and temporal smoothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ferkit.apps.video.assignment import linear_assignment
from ferkit.apps.video.schedule import DetectionSchedule
from ferkit.apps.video.smoothing import EmaSmoother, NoSmoother, WindowSmoother, make_smoother
from ferkit.apps.video.tracking import FaceTracker
from ferkit.core.detection import Detection
from ferkit.core.geometry import iou_xywh

# ---------------------------------------------------------------------------- geometry and assignment


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]])
    m = iou_xywh(a, b)
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


def test_linear_assignment_matches_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")  # a dev dependency only (scikit-image's)
    rng = np.random.default_rng(7)
    for shape in [(1, 4), (6, 6), (8, 5), (3, 12)]:
        cost = rng.random(shape)
        rows, cols = scipy_optimize.linear_sum_assignment(cost)
        ours = linear_assignment(cost)
        assert sum(cost[i, j] for i, j in ours) == pytest.approx(cost[rows, cols].sum())


def test_linear_assignment_prefers_global_optimum_over_greedy():
    # Greedy would take the 0.1 pair and then be forced into 0.9; the optimum is 0.2 + 0.3.
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    assert linear_assignment(cost) == [(0, 1), (1, 0)]
    assert linear_assignment(np.zeros((0, 3))) == []


# ---------------------------------------------------------------------------- tracker


def _det(x, y, s=60.0, score=0.99, landmarks=None):
    return Detection((float(x), float(y), s, s), score, landmarks)


def _tracker(**kw):
    """A tracker that reports a face from its first detection (the association and motion tests)."""
    kw.setdefault("min_hits", 1)
    return FaceTracker(**kw)


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
    tracker = _tracker(frame_size=(640, 480))
    seen = _run(tracker, 5, frames)
    assert all(set(v) == {1, 2} for v in seen.values())
    # The constant-velocity prediction follows the motion between detections (after velocity is known).
    for f in range(11, 60):
        assert seen[f][1][0] == pytest.approx(20 + 4 * f, abs=1.0)
        assert seen[f][2][0] == pytest.approx(500 - 4 * f, abs=1.0)


def test_prediction_between_detections_follows_the_face():
    # Detected on frames 0 and 3 only: on frames 4-8 the reported box is the constant-velocity prediction.
    tracker = _tracker(frame_size=(640, 480))
    tracker.update([_det(100, 100)], 0)
    tracker.update([_det(112, 106)], 3)  # 4 px/frame right, 2 px/frame down
    for f in range(4, 9):
        tracker.predict(f)
        (t,) = tracker.visible_tracks
        assert not t.detected_now
        assert t.box[:2] == pytest.approx((100 + 4 * f, 100 + 2 * f))


def test_landmarks_move_with_the_predicted_box():
    lm = np.array([[20, 20], [40, 20], [30, 30], [22, 45], [38, 45]], np.float32)
    tracker = _tracker()
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
    tracker = _tracker(frame_size=(640, 480), max_missed=1, max_age=10)
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
    tracker = _tracker(frame_size=(640, 480))
    tracker.update([_det(300, 200)], 0)
    up = tracker.update([], 5)
    assert up.missed and not tracker.visible_tracks  # lost: kept, not reported
    assert tracker.lost_tracks
    tracker.update([_det(302, 201)], 10)
    assert [t.id for t in tracker.visible_tracks] == [1]


def test_track_predicted_out_of_the_frame_is_dropped():
    tracker = _tracker(frame_size=(200, 200))
    tracker.update([_det(100, 50, s=40)], 0)
    tracker.update([_det(120, 50, s=40)], 1)  # 20 px/frame to the right
    assert tracker.predict(4) == []  # x = 180: still partly inside
    gone = tracker.predict(6)  # x = 220 > 200
    assert [t.id for t in gone] == [1] and tracker.tracks == []


def test_fast_face_matched_by_centre_distance_when_iou_is_low():
    tracker = _tracker()
    tracker.update([_det(100, 100)], 0)
    tracker.update([_det(110, 100)], 1)  # 10 px/frame
    # Predicted x = 120; the face is at 168: 0.8 box sizes off, IoU 0.11 < 0.2 → matched by distance.
    tracker.update([_det(168, 100)], 2)
    assert [t.id for t in tracker.visible_tracks] == [1]
    tracker.update([_det(400, 100)], 3)  # far away: a different face
    assert [t.id for t in tracker.visible_tracks] == [2]


# ---------------------------------------------------------------------------- confirmation and re-identification


def test_new_face_is_reported_only_once_confirmed():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3)
    up = tracker.update([_det(300, 200)], 0)
    assert up.new and not tracker.visible_tracks and tracker.tentative_tracks
    tracker.update([_det(301, 200)], 1)
    assert not tracker.visible_tracks  # two detections: still tentative
    up = tracker.update([_det(302, 200)], 2)
    assert [t.id for t in up.confirmed] == [1]
    assert [t.id for t in tracker.visible_tracks] == [1]
    tracker.update([], 3)  # once confirmed, a miss only hides it
    assert tracker.lost_tracks and not tracker.tentative_tracks


def test_one_off_false_detection_never_becomes_a_track():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3)
    real = [_det(100, 100)]
    reported = set()
    for f in range(40):
        phantom = [_det(400 + 7 * f % 200, 300, s=30)] if f % 4 == 0 else []  # flickers somewhere else each time
        up = tracker.update(real + phantom, f)
        assert all(t.id == 1 for t in up.confirmed)
        reported |= {t.id for t in tracker.visible_tracks}
    assert reported == {1}
    assert len(tracker.tracks) == 1  # each phantom was deleted at its first miss


def test_doubtful_detection_is_not_confirmed_and_asks_for_no_more_runs():
    # A face-like patch the detector finds on every run, always at a low score: never reported, and once it
    # has had its min_hits detections the schedule stops running the detector early for it.
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3, confirm_score=0.75)
    s = DetectionSchedule(every=5)
    runs = _schedule_run(s, tracker, lambda f, r: [_det(400, 300), _det(100, 100, score=0.55)], 50)
    assert [t.id for t in tracker.visible_tracks] == [1] and len(tracker.tentative_tracks) == 1
    assert runs == [0, 1, 2, 7, 12, 17, 22, 27, 32, 37, 42, 47]
    tracker.update([_det(400, 300), _det(100, 100, score=0.9)], 50)  # one good detection confirms it
    assert [t.id for t in tracker.visible_tracks] == [1, 2]


def test_lost_face_is_re_identified_within_keep_time():
    # A face walks behind something for 20 frames (detector finds nothing) and comes out where it went in.
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3, max_age=30)
    for f in range(10):
        tracker.update([_det(100 + 2 * f, 100)], f)
    for f in range(10, 30):
        tracker.update([], f)
        assert not tracker.visible_tracks and [t.id for t in tracker.lost_tracks] == [1]
    up = tracker.update([_det(150, 100)], 30)
    assert [t.id for t in up.matched] == [1] and [t.id for t in tracker.visible_tracks] == [1]


def test_lost_face_gets_a_new_id_after_keep_time():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3, max_age=30)
    for f in range(5):
        tracker.update([_det(100, 100)], f)
    removed = []
    for f in range(5, 40):
        removed += [t.id for t in tracker.update([], f).removed]
    assert removed == [1]
    for f in range(40, 43):
        tracker.update([_det(100, 100)], f)
    assert [t.id for t in tracker.visible_tracks] == [2]


def test_visible_track_wins_a_detection_over_a_lost_one():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=1)
    tracker.update([_det(100, 100), _det(140, 100)], 0)
    tracker.update([_det(100, 100)], 1)  # face 2 lost (hidden) right next to face 1
    tracker.update([_det(100, 100)], 2)
    assert [t.id for t in tracker.visible_tracks] == [1] and [t.id for t in tracker.lost_tracks] == [2]


# ---------------------------------------------------------------------------- detection schedule


def _schedule_run(schedule, tracker, detections_on, frames):
    """Drive schedule + tracker; ``detections_on(frame, runs)`` gives the detector's output; returns run frames."""
    runs = []
    for f in range(frames):
        if schedule.due(f, tracker):
            runs.append(f)
            schedule.ran(f, tracker.update(detections_on(f, runs), f))
        else:
            tracker.predict(f)
    return runs


def test_schedule_fixed_interval_without_adaptation():
    s, tracker = DetectionSchedule(every=4, adaptive=False), FaceTracker()
    assert _schedule_run(s, tracker, lambda f, r: [_det(100, 100)], 12) == [0, 4, 8]


def test_schedule_confirms_new_faces_on_the_next_frames():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3)
    s = DetectionSchedule(every=8)
    runs = _schedule_run(s, tracker, lambda f, r: [_det(100, 100)], 20)
    assert runs[:3] == [0, 1, 2]  # confirmed as fast as possible
    assert runs[3:] == [10, 18]  # then the regular interval
    assert [t.id for t in tracker.visible_tracks] == [1]


def test_schedule_redetects_soon_when_a_face_is_lost_or_none_is_tracked():
    t2, s2 = FaceTracker(), DetectionSchedule(every=8)
    s2.ran(0, t2.update([], 0))
    assert not s2.due(3, t2) and s2.due(4, t2) and s2.reason(4, t2) == "lost"
    t3, s3 = FaceTracker(min_hits=1), DetectionSchedule(every=8)
    s3.ran(0, t3.update([_det(100, 100)], 0))
    s3.ran(1, t3.update([], 1))
    assert t3.lost_tracks and not s3.due(4, t3) and s3.due(5, t3)


def test_schedule_detects_crossing_faces_every_frame():
    t3, s3 = FaceTracker(min_hits=1), DetectionSchedule(every=8)
    for f in (0, 1):
        s3.ran(f, t3.update([_det(100, 100), _det(140, 100)], f))
    assert s3.due(2, t3) and s3.reason(2, t3) == "crossing"


def test_schedule_detects_when_a_face_moves_far_or_leaves():
    tracker = FaceTracker(frame_size=(640, 480), min_hits=1)
    s = DetectionSchedule(every=10, max_shift=0.35)
    s.ran(0, tracker.update([_det(100, 100)], 0))
    s.ran(1, tracker.update([_det(110, 100)], 1))  # 10 px/frame, box 60 → 21 px allowed
    assert not s.due(3, tracker)  # 20 px shift
    assert s.due(4, tracker) and s.reason(4, tracker) == "drift"  # 30 px shift
    t2, s2 = FaceTracker(frame_size=(640, 480), min_hits=1), DetectionSchedule(every=10, max_shift=10)
    s2.ran(0, t2.update([_det(560, 100)], 0))
    s2.ran(1, t2.update([_det(570, 100)], 1))
    assert not s2.due(2, t2)  # right edge at 640 exactly
    assert s2.due(3, t2)  # crossing the right edge while moving right


def test_false_detection_costs_at_most_one_extra_run_no_cascade():
    # A phantom shows on every regular run (never on the extra run that tries to confirm it). Each costs one
    # extra run; the schedule never degrades into detecting every frame, and the phantom is never reported.
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3)
    s = DetectionSchedule(every=5)

    def detector(f, runs):
        real = [_det(100, 100)]
        return real + ([_det(400, 300, s=30)] if f % 5 == 0 else [])

    reported = set()
    runs = []
    for f in range(300):
        if s.due(f, tracker):
            runs.append(f)
            s.ran(f, tracker.update(detector(f, runs), f))
        else:
            tracker.predict(f)
        reported |= {t.id for t in tracker.visible_tracks}
    assert reported == {1}
    regular = 300 // 5
    assert len(runs) <= 2 * regular + 3  # at most one extra run per regular run (plus the start-up burst)


def test_evidence_every_frame_is_capped_by_the_token_bucket():
    # A detector that returns a fresh, never-repeated phantom on every run: every run leaves a tentative track,
    # so every frame has evidence. The bucket caps extra runs at about one per interval.
    tracker = FaceTracker(frame_size=(640, 480), min_hits=3)
    s = DetectionSchedule(every=6, burst=3)
    runs = _schedule_run(s, tracker, lambda f, r: [_det(10 + 97 * len(r) % 500, 10 + 53 * len(r) % 400, s=30)],
                         600)
    assert len(runs) <= 600 // 6 * 2 + 3
    assert s.extra_runs <= 600 // 6 + 3
    assert not tracker.visible_tracks


def test_schedule_rejects_bad_interval():
    with pytest.raises(ValueError):
        DetectionSchedule(every=0)
    with pytest.raises(ValueError):
        FaceTracker(min_hits=0)


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
    assert isinstance(make_smoother("ema", alpha=0.1, window=9), EmaSmoother)
    assert isinstance(make_smoother("window", alpha=0.2, window=4), WindowSmoother)
    assert isinstance(make_smoother("none", alpha=0.2, window=9), NoSmoother)
    with pytest.raises(ValueError):
        make_smoother("kalman", alpha=0.2, window=9)
    with pytest.raises(ValueError):
        EmaSmoother(alpha=0)
    with pytest.raises(ValueError):
        WindowSmoother(window=0)
