"""The two inference runtimes behind :func:`ferkit.core.runtime.open_session`: same files, same answers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ferkit import Recognizer, Settings
from ferkit.core import runtime
from ferkit.core.runtime import RUNTIMES, open_session, resolve_runtime
from ferkit.errors import ConfigError, ModelError
from tests.conftest import EXAMPLE

onnx = pytest.importorskip("onnx", reason="the tiny test graphs are written with onnx (the train extra)")


def tiny_graph(path, metadata: dict[str, str] | None = None, factor: float = 2.0):
    """``y = factor * x`` on ``(N, 3)`` float input, with ``metadata`` in the file's metadata_props."""
    from onnx import TensorProto, helper

    const = helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, metadata or {})
    onnx.save(model, str(path))
    return path


installed = runtime.available_runtimes()
both = pytest.mark.skipif(len(installed) < 2, reason=f"needs both runtimes; installed: {installed}")


def test_auto_takes_the_first_installed_runtime(monkeypatch):
    monkeypatch.setattr(runtime, "available_runtimes", lambda: ["onnxruntime"])
    assert resolve_runtime("auto") == "onnxruntime"
    with pytest.raises(ConfigError, match="not installed: pip install openvino"):
        resolve_runtime("openvino")
    monkeypatch.setattr(runtime, "available_runtimes", lambda: [])
    with pytest.raises(ConfigError, match="no inference runtime"):
        resolve_runtime("auto")


def test_unknown_runtime_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="onnxruntime"):
        resolve_runtime("tensorrt")
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        Settings(runtime="tensorrt")


@pytest.mark.parametrize("name", installed)
def test_session_runs_names_outputs_and_reads_metadata(tmp_path, name):
    path = tiny_graph(tmp_path / "t.onnx", {"ferkit_landmarks": "none", "note": "x"}, factor=3.0)
    s = open_session(path, threads=1, runtime=name)
    assert s.runtime == name and s.inputs == ["x"] and s.outputs == ["y"]
    assert s.metadata == {"ferkit_landmarks": "none", "note": "x"}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(s.run(x)[0], 3 * x)
    np.testing.assert_array_equal(s.run(x, ["y"])[0], 3 * x)
    # the returned array is the caller's: the next call must not overwrite it
    first = s.run(x)[0]
    s.run(x + 1)
    np.testing.assert_array_equal(first, 3 * x)


@pytest.mark.parametrize("name", installed)
def test_missing_and_broken_files_raise_model_error(tmp_path, name):
    with pytest.raises(ModelError, match="not found"):
        open_session(tmp_path / "nope.onnx", runtime=name)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=f"cannot load ONNX model with {name}"):
        open_session(bad, runtime=name)


@pytest.mark.parametrize("name", installed)
def test_one_thread_sessions_serve_concurrent_callers(tmp_path, name):
    """The service and Ray workers share a 1-thread session between threads: every caller gets its own answer."""
    s = open_session(tiny_graph(tmp_path / "t.onnx"), threads=1, runtime=name)
    errors: list[str] = []

    def call(k: int) -> None:
        for i in range(200):
            x = np.full((4, 3), k * 1000 + i, np.float32)
            y = s.run(x)[0]
            if not np.array_equal(y, 2 * x):
                errors.append(f"caller {k} call {i}: got {y[0, 0]}, expected {2 * x[0, 0]}")

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@both
def test_both_runtimes_give_the_same_faces_and_labels():
    """The default pipeline on the example photo: same detections, same labels, probabilities within 0.05."""
    a, b = (Recognizer(runtime=r).analyze(str(EXAMPLE)) for r in RUNTIMES)
    assert len(a.faces) == len(b.faces) >= 4
    for fa, fb in zip(a.faces, b.faces):
        np.testing.assert_allclose(fa.box, fb.box, atol=2.0)
        assert fa.quality.readable == fb.quality.readable
        if fa.quality.readable:
            assert fa.emotion == fb.emotion
            np.testing.assert_allclose(fa.probabilities, fb.probabilities, atol=0.05)


@both
def test_evaluation_reports_the_runtime_it_ran(class_folders):
    from ferkit.training.evaluation import evaluate

    for name in RUNTIMES:
        assert evaluate(class_folders, "fernet-m-q8", split="val", runtime=name)["runtime"] == name


@pytest.mark.parametrize("name", installed)
def test_cli_runs_on_the_chosen_runtime(capsys, tmp_path, name):
    from ferkit.apps.cli import main

    assert main(["analyze", str(EXAMPLE), "--runtime", name, "-o", str(tmp_path)]) == 0
    assert "face 1:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(EXAMPLE), "--runtime", "tensorrt"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_models_lists_the_runtimes_and_which_auto_takes(capsys):
    import json

    from ferkit.apps.cli import main

    assert main(["models", "--json"]) == 0
    rts = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runtimes"]}
    assert set(rts) == set(RUNTIMES)
    assert [r for r in rts if rts[r]["default"]] == installed[:1]
    assert all(rts[r]["installed"] == (r in installed) for r in rts)


@both
def test_auto_runs_a_graph_openvino_cannot_load_on_onnxruntime(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("op not supported")

    monkeypatch.setattr(runtime, "_OpenVinoSession", refuse)
    path = tiny_graph(tmp_path / "t.onnx")
    with pytest.warns(RuntimeWarning, match=r"openvino \(op not supported\); running it on onnxruntime"):
        s = open_session(path, runtime="auto")
    assert s.runtime == "onnxruntime"
    np.testing.assert_array_equal(s.run(np.ones((1, 3), np.float32))[0], 2 * np.ones((1, 3)))
    with pytest.raises(ModelError, match="cannot load ONNX model with openvino .op not supported"):
        open_session(path, runtime="openvino")  # asked for by name: no fallback


@both
def test_auto_does_not_fall_back_for_a_file_that_is_no_model(tmp_path):
    import warnings

    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00" * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "running it on onnxruntime instead" for a file neither can read
        with pytest.raises(ModelError, match="cannot load ONNX model with openvino"):
            open_session(bad, runtime="auto")


@pytest.mark.parametrize("name", installed)
def test_a_model_given_as_bytes_runs_like_its_file(tmp_path, name):
    path = tiny_graph(tmp_path / "t.onnx", {"k": "v"}, factor=5.0)
    s = open_session(path.read_bytes(), runtime=name)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(s.run(x)[0], 5 * x)
    assert s.metadata == {"k": "v"}


@pytest.mark.skipif("openvino" not in installed, reason="OpenVINO not installed")
def test_openvino_is_loaded_without_its_usage_telemetry(tmp_path):
    """Importing the openvino package would send a usage event and write a client id under ~/intel; ferkit
    loads it with OpenVINO's own no-op stub instead, and leaves its model-conversion API working."""
    import os
    import subprocess
    import sys

    code = ("import sys\n"
            "from ferkit import Recognizer\n"
            "assert Recognizer().runtime_name == 'openvino'\n"
            "assert not [m for m in sys.modules if m.startswith('openvino_telemetry')]\n"
            "import openvino.tools.ovc.telemetry_utils as t\n"
            "assert t.tm.__name__.endswith('telemetry_stub'), t.tm\n"
            "from openvino import convert_model\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert not (tmp_path / "intel").exists()
