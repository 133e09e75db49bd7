"""`--engine ray` against a real local Ray cluster: a head and a second node, one CPU each, on loopback.

The cluster comes from .ci/run (``FERKIT_RAY_ADDRESS`` and ``FERKIT_RAY_TEMP_DIR``) or, when those are
not set, is started here with ``ray start`` (tests/ray_cluster.py) and stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.apps.cli import main
from ferkit.apps.distributed import PhotoWorker

from . import ray_cluster
from .conftest import EXAMPLE

FDDB = Path(__file__).resolve().parents[2] / "shared" / "facedet" / "images"
FAST = ["--model", "fernet-m"]  # the real-time model: same code path, a tenth of the time per face


@pytest.fixture(scope="module")
def cluster() -> tuple[str, str | None]:
    """(address, temp dir or None): the CI cluster, or a 2-node one started (and stopped) here."""
    if os.environ.get(ray_cluster.ENV_ADDRESS):
        pytest.importorskip("ray")
        yield os.environ[ray_cluster.ENV_ADDRESS], os.environ.get("FERKIT_RAY_TEMP_DIR")
        return
    temp_dir = tempfile.mkdtemp(prefix="ferkit-ray-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ray_cluster.auth_env(temp_dir)}
    # Before Ray is imported here: it reads RAY_AUTH_MODE once. The CLI subprocesses inherit it too.
    os.environ.update(ray_cluster.auth_env(temp_dir))
    try:
        if "ray" in sys.modules:  # imported earlier in this session: make it read the mode again
            from ray._raylet import Config

            Config.initialize("")
        pytest.importorskip("ray")
        address, _ = ray_cluster.start(nodes=2, cpus=1, temp_dir=temp_dir)
        yield address, temp_dir
    finally:
        ray_cluster.stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 real photos (the example's six portraits, rescaled, some mirrored; one in a sub-folder) + a bad file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    image = cv2.imread(str(EXAMPLE))
    for i in range(12):
        x = cv2.resize(image, None, fx=0.45 + 0.05 * i, fy=0.45 + 0.05 * i, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / ("sub" if i == 5 else "") / f"p{i:02d}.jpg"), cv2.flip(x, 1) if i % 3 == 0 else x)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


# ---------------------------------------------------------------- the result store (no Ray needed)

def test_store_commits_atomically_and_merges_each_input_once_in_input_order(tmp_path):
    from ferkit.apps.batch import ResultStore, batch_id, error_record, is_error_record, part_line
    from ferkit.errors import OutputError

    keys = [f"/in/{i}.jpg" for i in range(6)]

    def line(k: str) -> str:
        return part_line(k, json.dumps({"source": k, "faces": []}))

    store = ResultStore(tmp_path, "photos", {"model": "m"})
    for batch in ([keys[0], keys[3]], [keys[1]], [keys[0], keys[3]]):  # the last one: a retried batch
        store.commit(batch_id(batch), batch, [line(k) for k in batch])
    store.commit(batch_id(keys[4:]), keys[4:], [line(keys[4]), part_line(keys[5], json.dumps(
        error_record(keys[5], "bad")))])
    (store.parts / ".tmp-1-part-x.jsonl").write_text("torn write")  # a crash mid-write leaves only this
    assert len(store.part_files()) == 3 and store.done_keys() == {keys[i] for i in (0, 1, 3, 4, 5)}
    with pytest.raises(OutputError, match="2 records for 1 inputs"):
        store.commit("x", [keys[2]], [line(keys[2]), line(keys[2])])
    got = list(store.records(keys))
    assert [k for k, _ in got] == [keys[i] for i in (0, 1, 3, 4, 5)]  # input order, not commit order
    path, n, failed = store.merge(keys)
    assert (n, failed) == (5, 1) and path.read_text().splitlines() == [r for _, r in got]
    assert [is_error_record(r) for _, r in got] == [False] * 4 + [True]
    with pytest.raises(OutputError, match="other settings"):
        ResultStore(tmp_path, "photos", {"model": "other"})


def test_parquet_holds_the_json_lines_records(tmp_path, astronaut):
    pytest.importorskip("pyarrow")
    from ferkit.apps.batch import error_record, read_parquet_records, write_parquet
    from ferkit.core.recognizer import Recognizer

    result = Recognizer(model="fernet-m").analyze(astronaut, source="a.jpg")
    assert result.faces
    recs = [json.loads(json.dumps(result.to_dict())), error_record("b.jpg", "b.jpg: not an image")]
    write_parquet(recs, tmp_path / "r.parquet")
    assert read_parquet_records(tmp_path / "r.parquet") == recs


# ---------------------------------------------------------------- against the cluster

def cli(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def records(path: Path) -> list[dict]:
    out = [json.loads(line) for line in path.read_text().splitlines()]
    for r in out:
        r.pop("timings_ms", None)  # wall-clock times differ run to run; everything else must not
    return out


def assert_same_analysis(local: list[dict], remote: list[dict]) -> None:
    """Same inputs in the same order, same faces (boxes, readability, reasons, labels), probabilities ±1e-2.

    Not bit-equal: OpenVINO computes in bf16 where the CPU has it natively, and its bf16 results move with the
    batch a face lands in (local and Ray batch differently): up to 0.0024 on a 2-core Zen 4, 2026-12-05.
    """
    assert [r["source"] for r in remote] == [r["source"] for r in local]
    for a, b in zip(local, remote):
        assert len(a["faces"]) == len(b["faces"]), a["source"]
        for fa, fb in zip(a["faces"], b["faces"]):
            assert (fa["box"], fa["readable"], fa["reason"], fa["emotion"]) == \
                (fb["box"], fb["readable"], fb["reason"], fb["emotion"]), a["source"]
            if fa["probabilities"]:
                assert max(abs(fa["probabilities"][e] - fb["probabilities"][e]) for e in fa["probabilities"]) <= 1e-2


def test_ray_engine_gives_the_local_records_images_and_errors(cluster, photos, tmp_path, capsys):
    address, _ = cluster
    code_l, _, err_l = cli(["analyze", photos, *FAST, "-o", tmp_path / "local"], capsys)
    code_r, _, err_r = cli(["analyze", photos, *FAST, "-o", tmp_path / "ray", "--engine", "ray", "--address",
                            address, "--workers", "2", "--batch-size", "3"], capsys)
    assert code_l == code_r == 1  # the broken file fails in both, the batch goes on
    local, remote = records(tmp_path / "local" / "results.jsonl"), records(tmp_path / "ray" / "results.jsonl")
    errors = [r for r in remote if "error" in r]
    assert [r["source"] for r in errors] == [str(photos / "broken.jpg")]
    assert errors[0]["error"].startswith(f"{photos / 'broken.jpg'}: ")
    assert f"ferkit: error: {errors[0]['error']}" in err_l and f"ferkit: error: {errors[0]['error']}" in err_r
    remote_ok = [r for r in remote if "error" not in r]
    assert len(remote_ok) == len(local) == 12 and sum(len(r["faces"]) for r in local) >= 40
    assert_same_analysis(local, remote_ok)
    for name in ("p00.jpg", "p05.jpg", "p11.jpg"):  # annotated copies under the local names, same pixels
        a, b = cv2.imread(str(tmp_path / "local" / name)), cv2.imread(str(tmp_path / "ray" / name))
        assert a is not None and b is not None and (a == b).all(), name

    # A rerun into the same folder analyses nothing again; Parquet holds the same records.
    code, _, err = cli(["analyze", photos, *FAST, "-o", tmp_path / "ray", "--engine", "ray", "--address", address,
                        "--format", "parquet"], capsys)
    assert code == 1 and "0 analysed now" in err and "13 done before" in err
    from ferkit.apps.batch import read_parquet_records

    parquet = read_parquet_records(tmp_path / "ray" / "results.parquet")
    for r in parquet:
        r.pop("timings_ms", None)
    assert parquet == remote


def test_other_settings_into_the_same_folder_are_refused(cluster, photos, tmp_path, capsys):
    address, _ = cluster
    one = photos / "p01.jpg"
    assert cli(["analyze", one, *FAST, "-o", tmp_path, "--engine", "ray", "--address", address], capsys)[0] == 0
    code, _, err = cli(["analyze", one, "-o", tmp_path, "--engine", "ray", "--address", address], capsys)
    assert code == 1 and "other settings" in err and "fernet-m" in err


@pytest.mark.skipif(not FDDB.is_dir(), reason="FDDB photos not available (../shared/facedet/images)")
def test_at_least_100_real_photos_same_faces_and_labels_as_local(cluster, tmp_path, capsys):
    address, _ = cluster
    t = time.perf_counter()
    assert cli(["analyze", FDDB, *FAST, "--no-images", "-o", tmp_path / "local"], capsys)[0] == 0
    t_local = time.perf_counter() - t
    t = time.perf_counter()
    code, _, err = cli(["analyze", FDDB, *FAST, "--no-images", "-o", tmp_path / "ray", "--engine", "ray",
                        "--address", address, "--workers", "2"], capsys)
    t_ray = time.perf_counter() - t
    assert code == 0, err
    local, remote = records(tmp_path / "local" / "results.jsonl"), records(tmp_path / "ray" / "results.jsonl")
    assert len(local) >= 100
    assert_same_analysis(local, remote)
    print(f"{len(local)} photos: local {t_local:.1f} s, ray (2 workers, start-up included) {t_ray:.1f} s")


def test_killed_worker_loses_and_duplicates_nothing(cluster, photos, tmp_path):
    address, temp_dir = cluster
    if temp_dir is None:
        pytest.skip("FERKIT_RAY_TEMP_DIR not set: cannot tell this cluster's worker processes from others")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ferkit", "analyze", str(photos), "--no-images", "-o", str(out),
           "--engine", "ray", "--address", address, "--batch-size", "1"]  # default model: ~1 s per photo here
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        parts = out / ".ferkit" / "photos" / "parts"
        deadline = time.time() + 120
        while not list(parts.glob("part-*.jsonl")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        victims = ray_cluster.worker_pids(temp_dir, "PhotoWorker")
        done_at_kill = len(list(parts.glob("part-*.jsonl")))
        assert victims and proc.poll() is None and done_at_kill < 13, "run finished before the kill"
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # the broken file; everything else analysed
    assert not Path(f"/proc/{victims[0]}").exists()
    result = records(out / "results.jsonl")
    expected = sorted(str(p) for p in photos.rglob("*.jpg"))
    assert sorted(r["source"] for r in result) == expected  # every input exactly once
    keys = [json.loads(line.split("\t")[0]) for p in parts.glob("part-*.jsonl") for line in
            p.read_text().splitlines()[1:]]
    assert sorted(keys) == sorted(os.path.abspath(p) for p in expected)  # no input in two parts either
    assert "13 analysed now" in err


def test_rerun_finishes_only_the_rest(cluster, photos, tmp_path):
    from ferkit.apps.distributed import analyze_photos
    from ferkit.core.settings import Settings

    address, _ = cluster
    first = [photos / f"p{i:02d}.jpg" for i in range(4)]
    kw = {"address": address, "settings": Settings.profile("worker", model="fernet-m"), "images": False,
          "progress": False, "batch_size": 2}
    s1 = analyze_photos(first, tmp_path, **kw)
    assert (s1.inputs, s1.analysed, s1.skipped, s1.failed, s1.missing) == (4, 4, 0, 0, 0)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / ".ferkit" / "photos" / "parts").iterdir()}
    s2 = analyze_photos([photos], tmp_path, **kw)
    assert (s2.inputs, s2.analysed, s2.skipped, s2.failed, s2.missing) == (13, 9, 4, 1, 0)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # earlier parts untouched
    result = records(tmp_path / "results.jsonl")
    assert [r["source"] for r in result] == [str(p) for p in sorted(photos.rglob("*.jpg"))]  # input order, once


class PoisonWorker(PhotoWorker):
    """Photo worker whose process dies on any input named *poison* (as on a native crash or an OOM kill)."""

    def _one(self, item: dict) -> tuple[str, str | None]:
        if "poison" in item["source"]:
            os._exit(9)
        return super()._one(item)


def test_input_that_kills_its_worker_gets_an_error_record_and_the_rest_finish(cluster, photos, tmp_path,
                                                                              monkeypatch):
    import ray
    import ray.cloudpickle

    from ferkit.apps import distributed
    from ferkit.apps.batch import ResultStore, list_inputs
    from ferkit.core.detection import DEFAULT_DETECTOR

    address, _ = cluster
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "poison.jpg", "b.jpg"):
        (folder / name).write_bytes((photos / "p00.jpg").read_bytes())
    items, _ = list_inputs([folder])
    store = ResultStore(tmp_path / "out", "photos", {"test": 1})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(distributed, "MAX_ATTEMPTS", 2)
    workers, initialised = distributed.connect(address, 1)
    try:
        ctor = {"settings": {"model": "fernet-m", "detector": DEFAULT_DETECTOR}, "cwd": os.getcwd(),
                "out_dir": str(tmp_path)}
        distributed.run_batches(items, store, PoisonWorker, ctor, workers, batch_size=3)
    finally:
        if initialised:
            ray.shutdown()
    got = {json.loads(r)["source"]: json.loads(r) for _, r in store.records([i.key for i in items])}
    assert sorted(got) == sorted(str(folder / n) for n in ("a.jpg", "b.jpg", "poison.jpg"))
    assert "died 2 times" in got[str(folder / "poison.jpg")]["error"]
    assert got[str(folder / "a.jpg")]["faces"] and got[str(folder / "b.jpg")]["faces"]


def _portrait_clip(path: Path, frames: int = 10, size: tuple[int, int] = (320, 240)) -> Path:
    head = cv2.resize(cv2.imread(str(EXAMPLE))[60:360, 40:300], (130, 150), interpolation=cv2.INTER_AREA)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v")), 10.0,
                        size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 110, np.uint8)
        img[40:190, 20 + 5 * i:150 + 5 * i] = head
        w.write(img)
    w.release()
    return path


def test_videos_one_task_each_write_what_ferkit_video_writes(cluster, tmp_path, capsys):
    address, _ = cluster
    videos = tmp_path / "videos"
    for sub in ("a", "b"):
        (videos / sub).mkdir(parents=True)
        _portrait_clip(videos / sub / "clip.mp4")  # same name twice: each gets its own folder
    _portrait_clip(videos / "other.avi", frames=6, size=(800, 600))
    (videos / "empty.mp4").write_bytes(b"")
    code, _, err = cli(["video", videos / "a" / "clip.mp4", "-o", tmp_path / "local" / "clip.mp4", "--no-progress"],
                       capsys)
    assert code == 0, err
    out = tmp_path / "ray"
    code, _, err = cli(["video", videos, "-o", out, "--engine", "ray", "--address", address], capsys)
    assert code == 1 and "empty.mp4: file is empty" in err  # the broken file is reported, the others done
    recs = {Path(r.get("input") or r["source"]).name + ("" if "error" in r else f"@{Path(r['summary']).parent.name}"):
            r for r in map(json.loads, (out / "videos.jsonl").read_text().splitlines())}
    assert sorted(recs) == ["clip.mp4@clip_1", "clip.mp4@clip_2", "empty.mp4", "other.avi@ray"]
    assert (out / "clip_1" / "clip.tracks.csv").read_text() == (tmp_path / "local" / "clip.tracks.csv").read_text()
    local = json.loads((tmp_path / "local" / "clip.summary.json").read_text())
    for key in ("frames", "detector_runs", "classified_faces", "options"):
        assert recs["clip.mp4@clip_1"][key] == local[key], key
    assert [{**t, "plot": Path(t["plot"]).name} for t in recs["clip.mp4@clip_1"]["tracks"]] == \
        [{**t, "plot": Path(t["plot"]).name} for t in local["tracks"]]
    assert (out / "clip_2" / "clip.annotated.mp4").stat().st_size > 1000 and (out / "other.summary.json").exists()
    # as with `ferkit video`, the detector's input follows each video's frame size (3/4 of 800 px)
    assert recs["clip.mp4@clip_1"]["options"]["detect_size"] == 480
    assert recs["other.avi@ray"]["options"]["detect_size"] == 600
    assert list(out.glob("clip_1/clip.track*.png"))
    code, _, err = cli(["video", videos, "-o", out, "--engine", "ray", "--address", address], capsys)
    assert code == 1 and "0 analysed now" in err and "4 done before" in err
