"""The real-video benchmark's scoring rule for unannotated real faces (MOT "ignore regions")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_real_video import _drop_ignored  # noqa: E402

TRUE_FACE = [100.0, 100.0, 50.0, 60.0]
IGNORED = [10.0, 100.0, 40.0, 60.0]


def test_a_report_on_an_unannotated_face_is_dropped():
    hyp = [(1, [11.0, 101.0, 40.0, 60.0])]
    assert _drop_ignored(hyp, [("a0", TRUE_FACE)], [IGNORED], 0.5) == []


def test_reports_on_true_faces_and_elsewhere_are_kept():
    on_truth = (1, [101.0, 99.0, 50.0, 60.0])
    elsewhere = (2, [300.0, 300.0, 40.0, 40.0])  # a false positive must still count as one
    kept = _drop_ignored([on_truth, elsewhere], [("a0", TRUE_FACE)], [IGNORED], 0.5)
    assert kept == [on_truth, elsewhere]


def test_a_report_barely_touching_an_ignore_region_still_counts():
    hyp = [(1, [40.0, 100.0, 40.0, 60.0])]  # IoU with the region 0.2
    assert _drop_ignored(hyp, [], [IGNORED], 0.5) == hyp


def test_frames_without_regions_or_reports_are_unchanged():
    hyp = [(1, TRUE_FACE)]
    assert _drop_ignored(hyp, [("a0", TRUE_FACE)], [], 0.5) == hyp
    assert _drop_ignored([], [], [IGNORED], 0.5) == []
