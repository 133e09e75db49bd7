"""The one pipeline of ferkit: detect → crop/align → quality gate → classify.

The CLI, the HTTP service and the video loop all call :meth:`Recognizer.analyze`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .classification import DEFAULT_MODEL, EmotionClassifier
from .detection import DEFAULT_DETECTOR, Detection, FaceDetector, create_detector
from .images import MAX_PIXELS, as_bgr
from .preprocess import crop_face, to_grey
from .quality import QualityGate
from .results import Analysis, Face


class Recognizer:
    """Finds every face in an image and labels each readable one with an emotion.

    Models load once, here; :meth:`analyze` is then cheap to call repeatedly.

    Args:
        model: shipped classifier name or path to an ``.onnx`` file.
        detector: detector name (``ferkit.detection.list_detectors()``) or a :class:`FaceDetector`.
        quality: a :class:`QualityGate`, a dict of its fields, or None for the defaults.
        max_pixels: refuse larger images (decompression-bomb guard).
        threads: onnxruntime threads for the classifier (None = default).

    Example:
        >>> from ferkit import Recognizer
        >>> result = Recognizer().analyze("group.jpg")
        >>> [(f.emotion, f.confidence) for f in result.faces]
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, detector: str | FaceDetector = DEFAULT_DETECTOR,
                 quality: QualityGate | dict | None = None, max_pixels: int = MAX_PIXELS,
                 threads: int | None = None):
        self.classifier = EmotionClassifier(model, threads=threads)
        self.detector = create_detector(detector) if isinstance(detector, str) else detector
        if quality is None:
            quality = QualityGate()
        elif isinstance(quality, dict):
            quality = QualityGate(**quality)
        self.quality = quality
        self.max_pixels = max_pixels

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
            :class:`~ferkit.results.Analysis` with one :class:`~ferkit.results.Face` per detection.

        Raises:
            ferkit.errors.ImageError: the input cannot be read as an image.
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
