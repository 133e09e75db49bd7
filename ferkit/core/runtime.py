"""Inference sessions, set up in one place for every network ferkit runs (classifiers and detectors).

Two runtimes read the same ``.onnx`` files:

- ``openvino`` (the default where it is installed): compiles the graph for the CPU it runs on, with
  bf16 arithmetic where the CPU does bf16 natively (AMX / AVX-512 bf16) and int8 kernels for the
  quantized classifier. On a 2-core Xeon with AMX (2026-12-04) it ran the default classifier 2.8x
  (batch 15) and the RetinaFace detector 2.1x (640×480) as fast as onnxruntime, with the same FER2013
  and FDDB accuracy within 3 faces (docs/runtime.md, ``benchmarks/bench_runtimes.py``).
- ``onnxruntime``: the reference runtime (exports are checked against it) and the fallback where
  OpenVINO has no wheel.

:func:`open_session` is the only place either is imported; every caller sees a :class:`Session`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.core.machine import usable_cores
from ferkit.core.settings import DEFAULT_RUNTIME
from ferkit.errors import ConfigError, ModelError

#: Runtimes :func:`open_session` knows, in the order ``auto`` tries them.
RUNTIMES = ("openvino", "onnxruntime")
#: What ``Settings.runtime`` and ``--runtime`` accept.
RUNTIME_CHOICES = ("auto", *RUNTIMES)


def cache_dir() -> Path:
    """ferkit's cache folder: ``$FERKIT_CACHE``, else ``~/.cache/ferkit`` (decoded data sets, compiled models)."""
    return Path(os.environ.get("FERKIT_CACHE", Path.home() / ".cache" / "ferkit"))


def available_runtimes() -> list[str]:
    """The runtimes that import here, best first."""
    import importlib.util

    return [r for r in RUNTIMES if importlib.util.find_spec(r) is not None]


def check_runtime_name(runtime: str) -> None:
    """ConfigError unless ``runtime`` is one of :data:`RUNTIME_CHOICES` (installed or not)."""
    if runtime not in RUNTIME_CHOICES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIME_CHOICES)}")


def resolve_runtime(runtime: str = DEFAULT_RUNTIME) -> str:
    """``auto`` → the best installed runtime; a named one is checked to be installed.

    Raises:
        ferkit.errors.ConfigError: unknown name, or a named runtime that is not installed.
    """
    check_runtime_name(runtime)
    have = available_runtimes()
    if runtime == "auto":
        if not have:
            raise ConfigError("no inference runtime installed: pip install openvino (or onnxruntime)")
        return have[0]
    if runtime not in have:
        raise ConfigError(f"runtime {runtime!r} is not installed: pip install {runtime}")
    return runtime


class Session:
    """One loaded network: named inputs and outputs, the file's metadata, and :meth:`run`.

    Safe to call from several threads at once (the service and the video loop do).
    """

    runtime: str
    inputs: list[str]
    outputs: list[str]
    #: the ONNX file's ``metadata_props`` (e.g. ``ferkit_landmarks`` of an exported detector)
    metadata: dict[str, str]
    #: each output's last dimension (None where the graph leaves it open)
    output_widths: list[int | None]

    def run(self, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        """Feed ``x`` to the first input; return the named outputs (all, in graph order, when None)."""
        raise NotImplementedError


def open_session(model: Path | str | bytes, threads: int | None = None, spin: bool = True,
                 runtime: str = DEFAULT_RUNTIME) -> Session:
    """A CPU session for ``model`` (a file path or the model's bytes) on ``runtime``.

    Args:
        threads: threads each call may use (None or 0 = one per core). With 1 thread, several
            callers run at once, one per core (the service, Ray workers).
        spin: let idle onnxruntime threads busy-wait for the next job (good for one big batched call;
            the detectors turn it off). OpenVINO's threads always sleep when idle.
        runtime: ``auto`` (:func:`resolve_runtime`; a model OpenVINO cannot load falls back to onnxruntime,
            with a warning), ``openvino`` or ``onnxruntime``.

    Raises:
        ferkit.errors.ModelError: the file is missing or is not a model the runtime can load.
        ferkit.errors.ConfigError: the runtime is unknown or not installed.
    """
    name = resolve_runtime(runtime)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelError(f"{model}: model file not found")
    try:
        return _load(name, model, threads, spin)
    except ModelError as e:
        # auto: a graph OpenVINO cannot convert (an op it lacks) still runs on onnxruntime, which runs every op
        if runtime != "auto" or name == RUNTIMES[-1] or RUNTIMES[-1] not in available_runtimes():
            raise
        try:
            session = _load(RUNTIMES[-1], model, threads, spin)
        except ModelError:
            raise e from None  # not a model at all: say what the first runtime said
        import warnings

        warnings.warn(f"{e}; running it on onnxruntime instead", RuntimeWarning, stacklevel=2)
        return session


def _load(name: str, model: Path | str | bytes, threads: int | None, spin: bool) -> Session:
    try:
        if name == "openvino":
            return _OpenVinoSession(model, threads)
        return _OrtSession(model, threads, spin)
    except Exception as e:  # both runtimes raise their own untyped errors for bad files
        where = "model bytes" if isinstance(model, bytes) else str(model)
        raise ModelError(f"{where}: cannot load ONNX model with {name} ({e})") from None


def _last_dim(shape: Any) -> int | None:
    last = shape[-1] if len(shape) else None
    return last if isinstance(last, int) else None


class _OrtSession(Session):
    runtime = "onnxruntime"

    def __init__(self, model: Path | str | bytes, threads: int | None, spin: bool):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                             providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self._session.get_inputs()]
        self.outputs = [o.name for o in self._session.get_outputs()]
        self.output_widths = [_last_dim(o.shape) for o in self._session.get_outputs()]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map or {})

    def run(self, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        return self._session.run(outputs, {self.inputs[0]: np.ascontiguousarray(x)})


#: Most OpenVINO streams of a 1-thread session: each holds its own copy of the network's buffers, and the
#: service runs at most 4 inference workers by default (``ServiceSettings.workers``).
MAX_STREAMS = 4
_ov_core: Any = None
_ov_lock = threading.Lock()


def _openvino_core() -> Any:
    """One ``openvino.Core`` per process (it holds the loaded plugins).

    Compiled models are cached under :func:`cache_dir` ``/openvino`` (a few MB, keyed by the model's
    bytes, the CPU and the settings): a process's first load of the detector and the default classifier
    takes ~75 ms from the cache against ~250 ms compiling (2-core Xeon). Where that folder cannot be
    written (a read-only home), models are compiled each time.
    """
    global _ov_core
    with _ov_lock:
        if _ov_core is None:
            _ov_core = _import_openvino().Core()
            folder = cache_dir() / "openvino"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if os.access(folder, os.W_OK):
                    _ov_core.set_property({"CACHE_DIR": str(folder)})
            except OSError:
                pass
        return _ov_core


def _import_openvino() -> Any:
    """``import openvino`` without its usage telemetry.

    Importing the ``openvino`` package sends an anonymous usage event to Google Analytics unless the user
    has opted out (``opt_in_out --opt_out``), and writes a client id under ``~/intel``. ferkit reads faces
    offline and sends nothing anywhere, so while it imports OpenVINO the ``openvino_telemetry`` package is
    hidden and OpenVINO falls back to its own no-op stub, as it does where that package is not installed
    (tests/test_runtime.py). An OpenVINO the host program imported itself is left as it is.
    """
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import an ImportError
    try:
        import openvino
    finally:
        if hide:
            del sys.modules["openvino_telemetry"]
    return openvino


class _OpenVinoSession(Session):
    """A compiled OpenVINO model with one infer request per calling thread.

    A compiled model runs one request per *stream* at a time, so callers that ask for 1 thread get
    one stream per core, at most :data:`MAX_STREAMS` (two threads calling at once then run at once, as
    onnxruntime sessions do); otherwise one stream with ``threads`` threads (all cores when None), for
    the lowest latency.
    """

    runtime = "openvino"

    def __init__(self, model: Path | str | bytes, threads: int | None):
        core = _openvino_core()
        if isinstance(model, bytes):
            net = core.read_model(model=model, weights=b"")  # ONNX bytes carry their weights
        else:
            net = core.read_model(str(model))
        streams = min(usable_cores(), MAX_STREAMS)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads == 1 and streams > 1:
            config = {"NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams}
        elif threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(net, "CPU", config)
        self._local = threading.local()
        self.inputs = [p.get_any_name() for p in self._compiled.inputs]
        self.outputs = [p.get_any_name() for p in self._compiled.outputs]
        self.output_widths = [_ov_last_dim(p.get_partial_shape()) for p in self._compiled.outputs]
        self.metadata = _ov_metadata(net)

    def run(self, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(x)})
        # copies: the request's buffers are overwritten by its next call
        if outputs is None:
            return [np.array(request.get_output_tensor(i).data) for i in range(len(self.outputs))]
        return [np.array(request.get_output_tensor(self.outputs.index(n)).data) for n in outputs]


def _ov_last_dim(shape: Any) -> int | None:
    if shape.rank.is_dynamic or len(shape) == 0:
        return None
    last = shape[len(shape) - 1]
    return last.get_length() if last.is_static else None


def _ov_metadata(net: Any) -> dict[str, str]:
    """ONNX ``metadata_props``, which OpenVINO keeps under the model's ``framework`` runtime info."""
    info = net.get_rt_info()
    if "framework" not in info.keys():
        return {}
    return {k: net.get_rt_info(["framework", k]).astype(str) for k in info["framework"]}
