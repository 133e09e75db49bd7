"""Video files and camera: outputs, table contents, tracking through the pipeline, bad input, interruption, CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.apps.cli import main
from ferkit.apps.video import TABLE_COLUMNS, FrameAnalyzer, VideoOptions, _Series, process_video
from ferkit.core.detection import Detection, FaceDetector
from ferkit.core.labels import EMOTIONS
from ferkit.errors import OutputError, VideoError

from .conftest import ASTRONAUT_FACE

FPS = 10.0
W, H = 240, 180
FACE_W, FACE_H = 64, 80
ROW_A, ROW_B = 8, 96  # y of the two faces: one moves right on top, one left below
CONFIRM = VideoOptions().confirm_hits  # detections before a face is reported


def _face(astronaut: np.ndarray) -> np.ndarray:
    x, y, w, h = ASTRONAUT_FACE
    return cv2.resize(astronaut[y:y + h, x:x + w], (FACE_W, FACE_H), interpolation=cv2.INTER_AREA)


def _frame(i: int, face: np.ndarray, faces: int = 2) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    span = W - FACE_W - 20
    step = (4 * i) % (2 * span)
    step = step if step <= span else 2 * span - step  # back and forth for long clips
    xa = 10 + step
    img[ROW_A:ROW_A + FACE_H, xa:xa + FACE_W] = face
    if faces > 1:
        xb = W - FACE_W - 10 - step
        img[ROW_B:ROW_B + FACE_H, xb:xb + FACE_W] = face[:, ::-1]
    return img


def make_clip(path: Path, face: np.ndarray, n: int = 30, faces: int = 2) -> Path:
    """Tiny MJPG AVI: faces on black moving 4 px/frame (AVI so truncating it leaves decodable frames)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert w.isOpened()
    for i in range(n):
        w.write(_frame(i, face, faces))
    w.release()
    return path


class BlobDetector(FaceDetector):
    """Deterministic stand-in detector: every bright blob on the black background is a face."""

    name = "blobs"

    def __init__(self):
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 25).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        return [Detection((float(x), float(y), float(w), float(h)), 0.99)
                for x, y, w, h, area in stats[1:] if area > 500]


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    return _face(astronaut)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, face) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "two.avi", face)


@pytest.fixture(scope="module")
def rec():
    from ferkit.core.recognizer import Recognizer

    return Recognizer(detector=BlobDetector(), threads=1)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        r = csv.DictReader(fh)
        return list(r.fieldnames or []), list(r)


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- outputs and table


def test_video_writes_table_plots_summary_and_video(tmp_path, clip, rec):
    out = tmp_path / "out" / "two.mp4"
    report = process_video(clip, out, tmp_path / "res", recognizer=rec,
                           options=VideoOptions(detect_every=3, table_format="both"), progress=False)
    assert report.status == "complete" and report.frames == 30 and report.fps == FPS
    # Table: the documented columns, one row per face per frame, times = frame / fps.
    cols, rows = read_csv(tmp_path / "res" / "two.tracks.csv")
    assert cols == TABLE_COLUMNS
    # A face is reported once confirmed: from its CONFIRM-th detection (frames 0, 1, 2 → from frame 2).
    first = CONFIRM - 1
    assert len(rows) == 2 * (30 - first)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(first, 30))
    for r in rows:
        assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / FPS, abs=1e-4)
        if r["readable"] == "1":
            smoothed = [float(r[e]) for e in EMOTIONS]
            assert sum(smoothed) == pytest.approx(1.0, abs=1e-3) and r["emotion"] in EMOTIONS
        if r["classified"] == "1" and r["readable"] == "1":
            assert sum(float(r[f"raw_{e}"]) for e in EMOTIONS) == pytest.approx(1.0, abs=1e-3)
        else:
            assert all(r[f"raw_{e}"] == "" for e in EMOTIONS)  # raw only where the classifier ran
    # Ids are stable and follow their face: track 1 is the top face moving right, track 2 the bottom one.
    by_track: dict[str, list[dict]] = {}
    for r in rows:
        by_track.setdefault(r["track_id"], []).append(r)
    assert set(by_track) == {"1", "2"} and all(len(v) == 30 - first for v in by_track.values())
    top = by_track["1"] if float(by_track["1"][0]["y"]) < 50 else by_track["2"]
    xs = [float(r["x"]) for r in top]
    assert all(abs(float(r["y"]) - ROW_A) < 6 for r in top)
    assert xs[-1] - xs[0] == pytest.approx(4 * (29 - first), abs=8)  # followed the motion, also between detections
    # The detector ran only on some frames (every 3rd, plus adaptive extras).
    assert 10 <= report.detector_runs < 30
    assert sum(r["detected"] == "1" for r in top) == report.detector_runs - first  # not the unconfirmed runs
    # JSON Lines: same records.
    lines = (tmp_path / "res" / "two.tracks.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (30 - first)
    rec0 = json.loads(lines[0])
    assert {"frame", "time_s", "track_id", "box", "probabilities", "raw_probabilities"} <= set(rec0)
    # Summary and plots.
    summary = json.loads((tmp_path / "res" / "two.summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 30
    assert [t["track_id"] for t in summary["tracks"]] == [1, 2]
    for t in summary["tracks"]:
        assert t["duration_s"] == pytest.approx((30 - first) / FPS) and t["frames"] == 30 - first
        if t["readable_frames"]:
            assert t["dominant_emotion"] in EMOTIONS
            assert sum(t["emotion_share"].values()) == pytest.approx(1.0, abs=1e-3)
            assert Path(t["plot"]).is_file() and cv2.imread(t["plot"]) is not None
    # Annotated video: every frame, same size.
    assert count_frames(out) == 30
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)


def test_recognizer_factory_is_called_once_with_the_frame_size(tmp_path, clip, rec):
    """process_video accepts ``(width, height) -> Recognizer`` (the Ray worker's per-size cache), called once
    with the size of the frames it has read, so the video is opened once."""
    calls = []

    def factory(width: int, height: int):
        calls.append((width, height))
        return rec

    cap = cv2.VideoCapture(str(clip))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    report = process_video(clip, tmp_path / "a.mp4", tmp_path, recognizer=factory, progress=False)
    assert calls == [size] and report.frames > 0


def test_classifier_runs_every_nth_frame_and_within_budget(tmp_path, clip, rec):
    opts = VideoOptions(detect_every=5, classify_every=3, classify_budget=0)
    report = process_video(clip, None, tmp_path, recognizer=rec, options=opts, write_video=False, progress=False)
    assert report.video is None and not list(tmp_path.glob("*.mp4"))
    # Two faces, each every 3rd frame (new faces at once): about 2 * 30 / 3.
    assert 18 <= report.classified_faces <= 24
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    for tid in ("1", "2"):
        frames = [int(r["frame"]) for r in rows if r["track_id"] == tid and r["classified"] == "1"]
        assert frames[0] == CONFIRM - 1 and max(np.diff(frames)) <= 4  # classified once confirmed
    # A budget of 1 face per frame caps the work: every face every 2nd frame, not every frame.
    report = process_video(clip, None, tmp_path, recognizer=rec, write_video=False, progress=False,
                           options=VideoOptions(classify_every=1, classify_budget=1.0))
    reported = 30 - (CONFIRM - 1)  # frames on which the two faces are reported
    assert reported - 1 <= report.classified_faces <= reported + 2


def test_smoothing_off_reports_raw_values(tmp_path, clip, rec):
    opts = VideoOptions(classify_every=1, classify_budget=0, smooth="none", max_frames=6)
    report = process_video(clip, None, tmp_path, recognizer=rec, options=opts, write_video=False, progress=False)
    assert report.status == "max_frames" and report.frames == 6
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    assert len(rows) == 2 * (6 - (CONFIRM - 1))
    for r in rows:
        if r["readable"] == "1":
            assert [r[e] for e in EMOTIONS] == [r[f"raw_{e}"] for e in EMOTIONS]


def test_frame_analyzer_faces_carry_track_ids(face, rec):
    analyzer = FrameAnalyzer(rec, VideoOptions(detect_every=2), (W, H))
    for i in range(6):
        result = analyzer.process(_frame(i, face), i)
    assert sorted(f.track_id for f in result.faces) == [1, 2]
    assert all(f.quality is not None for f in result.faces)
    assert analyzer.finish() == [1, 2]


def _spy_on_views(rec, monkeypatch) -> list[tuple[list[int] | None, list]]:
    """Record the views and the faces' probabilities of every analyze call the video loop makes."""
    calls: list[tuple[list[int] | None, list]] = []
    original = rec.analyze

    def spy(image, detections=None, source=None, views=None):
        analysis = original(image, detections=detections, source=source, views=views)
        calls.append((views, [f.probabilities for f in analysis.faces]))
        return analysis

    monkeypatch.setattr(rec, "analyze", spy)
    return calls


def test_a_face_s_views_take_turns_and_its_measurement_averages_them(face, rec, monkeypatch):
    # The default model's mirror view runs outside its graph: each classification of a face runs one
    # view, in turn, and what is reported is the mean of the face's latest measurement of each view.
    assert rec.classifier.runtime_views == 2
    calls = _spy_on_views(rec, monkeypatch)
    still = _frame(0, face, faces=1)
    analyzer = FrameAnalyzer(rec, VideoOptions(classify_every=1, classify_budget=0, smooth="none"), (W, H))
    results = [analyzer.process(still, i) for i in range(CONFIRM + 5)]
    views = [v[0] for v, _ in calls]
    assert len(views) >= 5 and views == [i % 2 for i in range(len(views))]
    first, previous, last = calls[0][1][0], calls[-2][1][0], calls[-1][1][0]
    reported = [s for r in results for s in r.samples if s.classified]
    np.testing.assert_allclose(reported[0].raw, first)  # one view so far: its own answer
    np.testing.assert_allclose(reported[-1].raw, (previous + last) / 2)
    np.testing.assert_allclose(reported[-1].face.probabilities, (previous + last) / 2)


def test_all_views_on_every_classification_when_asked(face, rec, monkeypatch):
    calls = _spy_on_views(rec, monkeypatch)
    analyzer = FrameAnalyzer(rec, VideoOptions(classify_every=1, classify_budget=0, split_views=False), (W, H))
    for i in range(CONFIRM + 2):
        analyzer.process(_frame(i, face), i)
    assert calls and all(v is None for v, _ in calls)


def test_tracked_faces_are_labelled_in_the_recognizer_s_language(face):
    from ferkit.core.labels import label
    from ferkit.core.recognizer import Recognizer

    rec = Recognizer(detector=BlobDetector(), threads=1, lang="zh")
    analyzer = FrameAnalyzer(rec, VideoOptions(), (W, H))
    faces = [f for i in range(CONFIRM + 2) for f in analyzer.process(_frame(i, face), i).faces if f.emotion]
    assert faces and all(f.lang == "zh" and f.label == label(f.emotion, "zh") != f.emotion for f in faces)
    assert faces[-1].to_dict()["label"] == label(faces[-1].emotion, "zh")


class PhantomDetector(BlobDetector):
    """The blob detector plus a false face at a new place on every ``every``-th call."""

    def __init__(self, every: int = 2):
        super().__init__()
        self.every = every

    def detect(self, image: np.ndarray) -> list[Detection]:
        out = super().detect(image)
        if self.calls % self.every == 1:
            # In the gap between the two rows of faces, somewhere new each time.
            out.append(Detection((float(10 + (37 * self.calls) % 200), 89.0, 6.0, 6.0), 0.9))
        return out


def test_phantom_detections_are_never_reported_and_cause_no_cascade(face, rec, tmp_path):
    # A phantom on every other detector run: never confirmed, so never in the table, summary or drawing, and
    # the detector runs at most about twice as often as the schedule (no run-every-frame cascade).
    detector = PhantomDetector(every=2)
    original = rec.detector
    rec.detector = detector
    try:
        clip = make_clip(tmp_path / "two.avi", face, n=60)
        report = process_video(clip, None, tmp_path, recognizer=rec, write_video=False, progress=False,
                               options=VideoOptions(detect_every=5))
    finally:
        rec.detector = original
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    assert {r["track_id"] for r in rows} == {"1", "2"}  # the two real faces only
    assert [t.track_id for t in report.tracks] == [1, 2]
    assert detector.calls == report.detector_runs <= 2 * 60 // 5 + 3


class ScoredDetector(BlobDetector):
    """The blob detector with every face at one detection score."""

    def __init__(self, score: float):
        super().__init__()
        self.score = score

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [Detection(d.box, self.score) for d in super().detect(image)]


@pytest.mark.parametrize("score, tracked", [(0.45, False), (0.5, True), (0.9, True)])
def test_detections_under_track_score_neither_start_nor_update_tracks(face, rec, score, tracked):
    original = rec.detector
    rec.detector = ScoredDetector(score)
    try:  # confirm_score 0 isolates track_score: any detection that reaches the tracker is confirmed
        analyzer = FrameAnalyzer(rec, VideoOptions(detect_every=1, confirm_score=0.0, track_score=0.5), (W, H))
        results = [analyzer.process(_frame(i, face), i) for i in range(CONFIRM + 3)]
    finally:
        rec.detector = original
    assert bool(results[-1].faces) is tracked


def test_frame_analyzer_predicts_between_detections(face, rec):
    detector = BlobDetector()
    original = rec.detector
    rec.detector = detector
    try:
        analyzer = FrameAnalyzer(rec, VideoOptions(detect_every=6), (W, H))
        results = [analyzer.process(_frame(i, face), i) for i in range(30)]
    finally:
        rec.detector = original
    predicted = [s for r in results for s in r.samples if not s.detected]
    assert len(predicted) > 20 and detector.calls < 15
    # The top face moves 4 px/frame; its box keeps the same offset from the true position on every frame,
    # detected or predicted (the constant-velocity model follows it between detections).
    offsets = [top.face.box[0] - (10 + 4 * r.index) for r in results[CONFIRM:]
               for top in r.samples if top.face.box[1] < 50]
    assert len(offsets) == 30 - CONFIRM and max(offsets) - min(offsets) <= 3


def test_series_memory_is_bounded():
    s = _Series(max_points=10)
    for i in range(5000):
        s.add(i / 30, None if i % 7 == 0 else np.full(7, 1 / 7))
    t, v = s.arrays()
    assert len(t) <= 20 and v.shape == (len(t), 7)
    assert np.all(np.diff(t) > 0) and t[0] < 10 and t[-1] > 150  # covers the whole span, bins averaged


# ---------------------------------------------------------------------------- interruption


def test_interrupt_leaves_readable_table_and_playable_video(tmp_path, clip, rec):
    def stop_at_10(index, frame, result):
        if index == 9:
            raise KeyboardInterrupt

    out = tmp_path / "cut.mp4"
    report = process_video(clip, out, tmp_path, recognizer=rec, on_frame=stop_at_10, progress=False)
    assert report.status == "interrupted" and report.frames == 10
    assert "interrupted at frame 10" in report.message()
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    assert sorted({int(r["frame"]) for r in rows}) == list(range(CONFIRM - 1, 10))
    assert count_frames(out) == 10  # the MP4 index was written: playable
    assert json.loads((tmp_path / "two.summary.json").read_text())["status"] == "interrupted"


def test_ctrl_c_between_a_frames_picture_and_its_row_keeps_video_and_table_in_step(tmp_path, clip, rec,
                                                                                     monkeypatch):
    from ferkit.apps.video.io import _BackgroundWriter

    original = _BackgroundWriter.put

    def put(self, frame, faces):  # a real SIGINT right after frame 5's picture is queued, before its row
        original(self, frame, faces)
        if put.calls == 5:
            os.kill(os.getpid(), signal.SIGINT)
        put.calls += 1

    put.calls = 0
    monkeypatch.setattr(_BackgroundWriter, "put", put)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop's handler replaces it
    out = tmp_path / "cut.mp4"
    report = process_video(clip, out, tmp_path, recognizer=rec, progress=False)
    assert report.status == "interrupted" and report.frames == 6
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    assert max(int(r["frame"]) for r in rows) + 1 == 6 == count_frames(out)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # and is put back


def test_cli_interrupt_exits_130_with_finalised_outputs(tmp_path, clip, capsys, monkeypatch):
    original = FrameAnalyzer.process

    def process(self, frame, index):
        if index == 5:
            raise KeyboardInterrupt  # as Ctrl-C arriving during analysis
        return original(self, frame, index)

    monkeypatch.setattr(FrameAnalyzer, "process", process)
    out = tmp_path / "v.mp4"
    code, _, err = run_cli(["video", str(clip), "-o", str(out), "--no-progress"], capsys)
    assert code == 130
    assert "interrupted at frame 5" in err and "Traceback" not in err
    assert count_frames(out) == 5
    _, rows = read_csv(tmp_path / "two.tracks.csv")
    assert max(int(r["frame"]) for r in rows) == 4


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_to_a_running_cli_finalises_outputs(tmp_path, face):
    long_clip = make_clip(tmp_path / "long.avi", face, n=1500, faces=1)
    out, table = tmp_path / "out.mp4", tmp_path / "long.tracks.csv"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    # A shell without job control starts background jobs with SIGINT ignored, and Python then never installs
    # its Ctrl-C handler; give the child the default disposition so the test does not depend on how it was run.
    proc = subprocess.Popen([sys.executable, "-m", "ferkit", "video", str(long_clip), "-o", str(out),
                             "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if table.exists() and table.stat().st_size > 2000:  # flushed about once a second of video
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)  # generous: a loaded CI machine finalises slowly
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at frame" in err
    _, rows = read_csv(table)
    frames = count_frames(out)
    assert 0 < frames < 1500
    assert max(int(r["frame"]) for r in rows) + 1 == frames


# ---------------------------------------------------------------------------- bad input and output


def test_truncated_video_is_processed_up_to_the_damage(tmp_path, face, rec, capsys):
    full = make_clip(tmp_path / "full.avi", face, n=40)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    report = process_video(cut, tmp_path / "o.mp4", tmp_path, recognizer=rec, progress=False)
    assert report.status == "truncated" and 5 < report.frames < 40 and report.expected_frames == 40
    assert f"stopped at frame {report.frames} ({report.frames / FPS:.2f} s) of 40" in report.message()
    _, rows = read_csv(tmp_path / "cut.tracks.csv")
    assert max(int(r["frame"]) for r in rows) == report.frames - 1
    assert count_frames(tmp_path / "o.mp4") == report.frames
    # CLI: one error line naming the place, exit 1.
    code, _, err = run_cli(["video", str(cut), "-o", str(tmp_path / "c.mp4"), "--no-progress"], capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("ferkit: error:")]
    assert code == 1 and len(errors) == 1 and "truncated" in errors[0] and "stopped at frame" in errors[0]
    assert "Traceback" not in err


def _zero_frame_avi(path: Path) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    w.release()
    return path


@pytest.mark.parametrize("kind, expected", [
    ("missing", "no such file"),
    ("empty", "empty (0 bytes)"),
    ("text", "cannot be read as a video"),
    ("zero_frames", "no decodable frames"),
    ("folder", "is a folder"),
    ("device", "is a device, not a file"),
])
def test_bad_inputs_give_one_error_line(tmp_path, capsys, kind, expected):
    path = {"missing": tmp_path / "nope.mp4", "empty": tmp_path / "empty.mp4", "text": tmp_path / "notes.mp4",
            "zero_frames": tmp_path / "zero.avi", "folder": tmp_path, "device": tmp_path / "clip.mp4"}[kind]
    if kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a text file, not a video\n" * 50)
    elif kind == "zero_frames":
        _zero_frame_avi(path)
    code, _, err = run_cli(["video", str(path), "-o", str(tmp_path / "o.mp4"), "--no-progress"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferkit: error:") and expected in lines[0], err
    with pytest.raises(VideoError):
        process_video(path, tmp_path / "o.mp4", recognizer=object(), progress=False)


def test_frames_over_the_pixel_cap_are_refused_before_decoding(clip):
    from ferkit.apps.video.io import open_video

    with pytest.raises(VideoError, match=f"frames are {W}×{H} = 0.0 MP, over the 0.0 MP limit"):
        open_video(clip, max_pixels=W * H - 1)
    cap, info = open_video(clip, max_pixels=W * H)
    cap.release()
    assert (info.width, info.height) == (W, H)


def test_a_frame_size_the_codec_cannot_take_is_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    wide = tmp_path / "wide.avi"  # MJPG takes 9000 px wide frames, mp4v does not
    w = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (9000, 16))
    for _ in range(2):
        w.write(np.zeros((16, 9000, 3), np.uint8))
    w.release()
    # a process of its own: OpenCV and FFmpeg log to fd 2 from C, and FFmpeg's level is fixed when it loads
    cmd = [sys.executable, "-m", "ferkit", "video", str(wide), "-o", str(tmp_path / "o.mp4"), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot write a 9000×16 video at 10 fps with the mp4v codec" in done.stderr
    done = subprocess.run([*cmd, "--no-video"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_unwritable_outputs_give_one_error_line(tmp_path, clip, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for args in (["-o", str(blocker / "out.mp4")],  # folder cannot be created under a file
                 ["-o", str(tmp_path / "o.mp4"), "--results", str(blocker / "res")],
                 ["-o", str(clip)],  # would overwrite the input
                 ["-o", str(tmp_path / "o.webm")]):  # no writer for that type
        code, _, err = run_cli(["video", str(clip), "--no-progress", *args], capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("ferkit: error:"), (args, err)
    with pytest.raises(OutputError):
        process_video(clip, blocker / "o.mp4", recognizer=object(), progress=False)


def test_bad_option_values_are_usage_errors(tmp_path, clip, capsys):
    for bad in (["--alpha", "0"], ["--detect-every", "0"], ["--window", "0"], ["--classify-every", "0"]):
        code, _, err = run_cli(["video", str(clip), "-o", str(tmp_path / "o.mp4"), *bad], capsys)
        assert code == 2 and "ferkit: error:" in err, bad


# ---------------------------------------------------------------------------- CLI with the real detectors


@pytest.fixture(scope="module")
def portrait_clip(tmp_path_factory, astronaut) -> Path:
    """The astronaut portrait drifting over a grey background (real detectors need real context)."""
    path = tmp_path_factory.mktemp("portrait") / "portrait.mp4"
    head = cv2.resize(astronaut[0:300, 100:360], (130, 150), interpolation=cv2.INTER_AREA)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (320, 240))
    for i in range(12):
        img = np.full((240, 320, 3), 110, np.uint8)
        img[40:190, 20 + 5 * i:150 + 5 * i] = head
        w.write(img)
    w.release()
    return path


def test_cli_video_with_default_detector(tmp_path, portrait_clip, capsys):
    from ferkit.apps.video import open_video
    from ferkit.core.detection import DEFAULT_DETECTOR
    from ferkit.core.settings import video_detect_size

    out = tmp_path / "annotated.mp4"
    code, stdout, err = run_cli(["video", str(portrait_clip), "-o", str(out), "--no-progress", "--detector",
                                 DEFAULT_DETECTOR, "--detect-every", "4"], capsys)
    assert code == 0, err
    assert "track 1:" in stdout and "12 frames" in stdout
    _, rows = read_csv(tmp_path / "portrait.tracks.csv")
    assert len(rows) == 12 - (CONFIRM - 1) and {r["track_id"] for r in rows} == {"1"}
    assert sum(r["readable"] == "1" for r in rows) >= 6
    assert count_frames(out) == 12
    summary = json.loads((tmp_path / "portrait.summary.json").read_text())
    assert summary["options"]["detector"] == DEFAULT_DETECTOR and summary["tracks"][0]["dominant_emotion"]
    cap, info = open_video(portrait_clip)
    cap.release()
    assert summary["options"]["detect_size"] == video_detect_size(info.width, info.height)


def test_cli_video_json_summary_with_video_detector(tmp_path, portrait_clip, capsys):
    code, stdout, _ = run_cli(["video", str(portrait_clip), "-o", str(tmp_path / "a.avi"), "--no-progress",
                               "--json", "--table-format", "jsonl", "--smooth", "window", "--window", "5"], capsys)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["frames"] == 12 and summary["options"]["smooth"] == "window"
    assert summary["tables"] == [str(tmp_path / "portrait.tracks.jsonl")]
    assert count_frames(tmp_path / "a.avi") == 12


# ---------------------------------------------------------------------------- camera


def test_camera_absent_is_one_error_line(capsys):
    code, _, err = run_cli(["camera", "--device", "57", "--headless"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "camera 57" in lines[0] and "cannot be opened" in lines[0]


def test_camera_headless_prints_json_lines(portrait_clip, capsys):
    # A file stands in for the camera device: same loop, deterministic frames.
    code, stdout, _ = run_cli(["camera", "--device", str(portrait_clip), "--headless", "--max-frames", "5"], capsys)
    assert code == 0
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(5))
    # Reported once confirmed (CONFIRM detections on consecutive frames), then on every frame.
    assert all(not r["faces"] for r in records[:CONFIRM - 1])
    assert all(r["faces"] and r["faces"][0]["track_id"] == 1 for r in records[CONFIRM - 1:])
    assert all(r["fps"] >= 0 for r in records)


def test_camera_without_window_is_one_error_line(portrait_clip, capsys, monkeypatch):
    # Headless OpenCV (what ferkit installs) or no display: one line naming the alternatives, no traceback,
    # no JSON stream nobody asked for. --headless still works (test above).
    import ferkit.apps.video as video

    monkeypatch.setattr(video.cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    code, stdout, err = run_cli(["camera", "--device", str(portrait_clip), "--max-frames", "2"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and stdout == "" and len(lines) == 1, err
    assert "no window support" in lines[0]
    assert all(hint in lines[0] for hint in ("--headless", "ferkit serve", "pip install opencv-python"))

    monkeypatch.setattr(video.camera, "window_unavailable", lambda: "no display to open a window on")
    code, _, err = run_cli(["camera", "--device", str(portrait_clip)], capsys)
    assert code == 1 and err.count("\n") == 1 and "no display" in err
