"""What can be run here: the shipped emotion models and the registered face detectors, with their roles.

One listing for ``ferkit models``, the service's ``/v1/models`` and the web page. Names do not
collide: *architectures* (``fernet_m``, with underscores) are training-side
(:func:`ferkit.training.architectures.list_architectures`), *shipped models* (``fernet-m``, with hyphens)
are ONNX files in ``ferkit/weights``, and *detectors* have their own registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ferkit.errors import FerkitError


def model_entries() -> list[dict[str, Any]]:
    """One entry per shipped classifier: name, role, validation figures, size and cost (from its sidecar)."""
    from ferkit.core.classification import list_models, resolve_model
    from ferkit.core.settings import ACCURATE_MODEL, DEFAULT_MODEL

    out = []
    for name in list_models():
        try:
            info = resolve_model(name)
            meta, path = info.meta or {}, str(info.path)
        except FerkitError:  # a damaged sidecar: still listed, without figures
            meta, path = {}, None
        val = meta.get("val") or {}
        out.append({"name": name, "default": name == DEFAULT_MODEL, "most_accurate": name == ACCURATE_MODEL,
                    "val_accuracy": val.get("accuracy"), "val_macro_f1": val.get("macro_f1"),
                    "params": meta.get("params"), "mmacs_per_face": meta.get("mmacs_per_face"),
                    "input_size": meta.get("input_size"), "file": path})
    return out


def detector_entries() -> list[dict[str, Any]]:
    """One entry per registered detector: name, whether it is the default, installed, and how to install it."""
    from ferkit.core.detection import detector_install, detector_missing, list_detectors
    from ferkit.core.settings import DEFAULT_DETECTOR

    out = []
    for name in list_detectors():
        missing = detector_missing(name)  # looks for the package/files without loading anything
        out.append({"name": name, "default": name == DEFAULT_DETECTOR, "installed": missing is None,
                    "install": detector_install(name) or None, "missing": missing})
    return out


def median_call_seconds(call: Callable[[Any], Any], inputs: list[Any], min_seconds: float = 1.0,
                        min_calls: int = 5) -> float:
    """Median wall time of ``call`` over ``inputs`` taken in turn, after one warm-up call, over at least
    ``min_seconds`` and ``min_calls`` calls (what ferkit's speed figures are made of)."""
    call(inputs[0])
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or len(times) < min_calls:
        t = time.perf_counter()
        call(inputs[len(times) % len(inputs)])
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure_speed(name: str, runtime: str = "auto", batch: int = 15, min_seconds: float = 1.0) -> float:
    """Faces per second of shipped model ``name`` on this machine (all cores, ``runtime``).

    Batches of ``batch`` random faces go through :class:`~ferkit.core.classification.EmotionClassifier`
    (:func:`median_call_seconds`). Random pixels leave every face unsure, so a model whose mirror view runs
    only for unsure faces runs it for all of them here: the worst case.
    """
    from ferkit.core.classification import EmotionClassifier

    clf = EmotionClassifier(name, runtime=runtime)
    faces = np.random.default_rng(0).integers(0, 256, (batch, clf.input_size, clf.input_size), dtype=np.uint8)
    return batch / median_call_seconds(clf.predict, [faces], min_seconds)
