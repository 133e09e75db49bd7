"""The one pipeline of ferkit: detect → crop/align → quality gate → classify.

The CLI, the HTTP service and the video loop all call :meth:`Recognizer.analyze`.
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.core.classification import DEFAULT_MODEL, EmotionClassifier
from ferkit.core.detection import DEFAULT_DETECTOR, Detection, FaceDetector, create_detector
from ferkit.core.images import MAX_PIXELS, as_bgr
from ferkit.core.preprocess import crop_face, to_grey
from ferkit.core.quality import QualityGate
from ferkit.core.results import Analysis, Face
from ferkit.errors import ConfigError, ModelError


class Recognizer:
    """Finds every face in an image and labels each readable one with an emotion.

    Models load once, here; :meth:`analyze` is then cheap to call repeatedly.

    Args:
        model: shipped classifier name or path to an ``.onnx`` file.
        detector: detector name (``ferkit.core.detection.list_detectors()``) or a :class:`FaceDetector`.
        quality: a :class:`QualityGate`, a dict of its fields, or None for the defaults.
        max_pixels: refuse larger images (decompression-bomb guard).
        threads: onnxruntime threads for the classifier (None = default).

    Raises:
        ferkit.errors.ModelError: ``model`` or ``detector`` is not a name, path or detector, or cannot load.
        ferkit.errors.ConfigError: ``quality``, ``max_pixels`` or ``threads`` cannot be used.

    Example:
        >>> from ferkit import Recognizer
        >>> result = Recognizer().analyze("group.jpg")
        >>> [(f.emotion, f.confidence) for f in result.faces]
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, detector: str | FaceDetector = DEFAULT_DETECTOR,
                 quality: QualityGate | dict | None = None, max_pixels: int = MAX_PIXELS,
                 threads: int | None = None):
        _check_int("max_pixels", max_pixels, low=1)
        if threads is not None:
            _check_int("threads", threads, low=0)
        self.quality = _quality_gate(quality)
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ModelError(f"model must be a shipped model name (see `ferkit models`) or a path to an .onnx "
                             f"file, got {model!r}")
        if isinstance(detector, str):
            detector_obj = create_detector(detector)
        elif callable(getattr(detector, "detect", None)):
            detector_obj = detector
        else:
            raise ModelError(f"detector must be a detector name (see `ferkit models`) or an object with a "
                             f"detect(image) method, got {type(detector).__name__}")
        self.classifier = EmotionClassifier(model, threads=threads)
        self.detector = detector_obj
        self.max_pixels = int(max_pixels)

    @property
    def model_name(self) -> str:
        return self.classifier.name

    @property
    def detector_name(self) -> str:
        return getattr(self.detector, "name", type(self.detector).__name__)

    def analyze(self, image: Any, detections: list[Detection] | None = None, source: str | None = None) -> Analysis:
        """Analyse one image.

        Args:
            image: path, encoded bytes, numpy BGR/BGRA/grey array or PIL image.
            detections: faces already located (e.g. by a video tracker); skips detection.
            source: name recorded in the result (defaults to the path when ``image`` is one).

        Returns:
            :class:`~ferkit.core.results.Analysis` with one :class:`~ferkit.core.results.Face` per detection.

        Raises:
            ferkit.errors.ImageError: the input cannot be read as an image (see :mod:`ferkit.core.images`
                for the rules on arrays and PIL images).
        """
        t0 = time.perf_counter()
        bgr, path = as_bgr(image, self.max_pixels)
        source = source or path
        t1 = time.perf_counter()
        if detections is None:
            detections = self.detector.detect(bgr)
        t2 = time.perf_counter()
        faces = self.classify(bgr, detections)
        t3 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return Analysis(faces=faces, width=bgr.shape[1], height=bgr.shape[0], source=source,
                        model=self.model_name, detector=self.detector_name, timings_ms=timings)

    def classify(self, bgr: np.ndarray, detections: list[Detection]) -> list[Face]:
        """Crop, gate and classify given detections on a BGR image (one batched model call)."""
        if not detections:
            return []
        grey = to_grey(bgr)
        size = self.classifier.input_size
        crops = [crop_face(grey, d.box, d.landmarks, size) for d in detections]
        qualities = [self.quality.assess(d, c) for d, c in zip(detections, crops)]
        readable = [i for i, q in enumerate(qualities) if q.readable]
        probs = self.classifier.predict([crops[i] for i in readable]) if readable else np.zeros((0, 7))
        by_index = dict(zip(readable, probs))
        return [Face(box=tuple(float(v) for v in d.box), score=float(d.score), landmarks=d.landmarks,
                     quality=q, probabilities=by_index.get(i))
                for i, (d, q) in enumerate(zip(detections, qualities))]


def _check_int(name: str, value: Any, low: int) -> None:
    """ConfigError unless ``value`` is an integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _quality_gate(quality: Any) -> QualityGate:
    """A QualityGate from None (defaults), a QualityGate or a dict of its fields; ConfigError otherwise."""
    if quality is None:
        return QualityGate()
    if isinstance(quality, QualityGate):
        return quality
    if not isinstance(quality, dict):
        raise ConfigError(f"quality must be a QualityGate, a dict of its fields or None, got {type(quality).__name__}")
    known = {f.name for f in fields(QualityGate)}
    unknown = sorted(str(k) for k in quality if k not in known)
    if unknown:
        raise ConfigError(f"unknown quality setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    for k, v in quality.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"quality setting {k} must be a number, got {v!r}")
    return QualityGate(**quality)
