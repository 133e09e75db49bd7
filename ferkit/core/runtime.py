"""onnxruntime sessions, set up in one place for every network ferkit runs (classifiers and detectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferkit.errors import ModelError


def ort_session(model: Path | str | bytes, threads: int | None = None, spin: bool = True) -> Any:
    """A CPU onnxruntime session for ``model`` (a file path or the model's bytes).

    Args:
        threads: intra-op threads (None or 0 = onnxruntime's default, one per core).
        spin: let idle worker threads busy-wait for the next job. Good for one big batched call
            (the classifier); the small detector nets turn it off, since waking threads costs them
            less than the CPU that spinning takes from everything else on a small machine.

    Raises:
        ferkit.errors.ModelError: the file is missing or is not a model onnxruntime can load.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        where = "model bytes" if isinstance(model, bytes) else str(model)
        raise ModelError(f"{where}: cannot load ONNX model ({e})") from None
