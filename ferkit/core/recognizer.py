"""The one pipeline of ferkit: detect → crop/align → quality gate → classify.

The CLI, the HTTP service and the video loop all call :meth:`Recognizer.analyze`.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import numpy as np

from ferkit.core.classification import EmotionClassifier
from ferkit.core.detection import Detection, FaceDetector, create_detector
from ferkit.core.images import as_bgr
from ferkit.core.preprocess import crop_face, to_grey
from ferkit.core.quality import QualityGate
from ferkit.core.results import Analysis, Face
from ferkit.core.settings import Settings
from ferkit.errors import ConfigError


class Recognizer:
    """Finds every face in an image and labels each readable one with an emotion.

    Models load once, here; :meth:`analyze` is then cheap to call repeatedly.

    Args:
        settings: how to set the pipeline up (:class:`~ferkit.core.settings.Settings`; None = the defaults).
        **overrides: fields of :class:`~ferkit.core.settings.Settings` to change, as a shorthand:
            ``Recognizer(model="fernet-e4")`` is ``Recognizer(Settings(model="fernet-e4"))``.

    Raises:
        ferkit.errors.ModelError: the model or detector is not a name, path or detector, or cannot load.
        ferkit.errors.ConfigError: a setting cannot be used (says which).

    Example:
        >>> from ferkit import Recognizer
        >>> result = Recognizer().analyze("group.jpg")
        >>> [(f.emotion, f.confidence) for f in result.faces]
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any):
        if settings is not None and not isinstance(settings, Settings):
            raise ConfigError(f"settings must be a ferkit.Settings, got {type(settings).__name__} "
                              "(pass model=..., detector=... as keywords)")
        try:
            settings = (settings or Settings()).replace(**overrides)
        except TypeError as e:  # an unknown keyword
            raise ConfigError(f"{e}; the settings are {', '.join(f.name for f in fields(Settings))}") from None
        self.settings = settings
        self.quality = QualityGate(**settings.quality)
        self.detector = _build_detector(settings)
        self.classifier = EmotionClassifier(settings.model, threads=settings.threads or None, spin=settings.spin,
                                            extra_views_below=settings.extra_views_below, runtime=settings.runtime)

    @property
    def max_pixels(self) -> int:
        """Larger images are refused before decoding (``Settings.max_pixels``)."""
        return self.settings.max_pixels

    @property
    def model_name(self) -> str:
        return self.classifier.name

    @property
    def runtime_name(self) -> str:
        """The inference runtime the classifier runs on (``openvino`` or ``onnxruntime``)."""
        return self.classifier.session.runtime

    @property
    def detector_name(self) -> str:
        return getattr(self.detector, "name", type(self.detector).__name__)

    def analyze(self, image: Any, detections: list[Detection] | None = None, source: str | None = None,
                views: list[int] | None = None) -> Analysis:
        """Analyse one image.

        Args:
            image: path, encoded bytes, numpy BGR/BGRA/grey array or PIL image.
            detections: faces already located (e.g. by a video tracker); skips detection.
            source: name recorded in the result (defaults to the path when ``image`` is one).
            views: with ``detections``, classify each face on one of the model's test-time views only
                (0 = as is, 1 = mirrored) at a fraction of the cost; for models whose views run outside
                their graph (``recognizer.classifier.runtime_views > 1``, the default model). The video
                loop uses it to spread the views over consecutive frames of a track.

        Returns:
            :class:`~ferkit.core.results.Analysis` with one :class:`~ferkit.core.results.Face` per detection.

        Raises:
            ferkit.errors.ImageError: the input cannot be read as an image (see :mod:`ferkit.core.images`
                for the rules on arrays and PIL images).
            ferkit.errors.ConfigError: ``views`` without ``detections``, or not one valid view per face.
        """
        if views is not None and detections is None:
            raise ConfigError("views are given per face, so they need the faces' detections")
        t0 = time.perf_counter()
        bgr, path = as_bgr(image, self.max_pixels)
        source = source or path
        t1 = time.perf_counter()
        if detections is None:
            detections = self.detector.detect(bgr)
        t2 = time.perf_counter()
        faces = self.classify(bgr, detections, views)
        t3 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return Analysis(faces=faces, width=bgr.shape[1], height=bgr.shape[0], source=source,
                        model=self.model_name, detector=self.detector_name, timings_ms=timings)

    def classify(self, bgr: np.ndarray, detections: list[Detection], views: list[int] | None = None) -> list[Face]:
        """Crop, gate and classify given detections on a BGR image (one batched model call;
        ``views``: see :meth:`analyze`)."""
        if views is not None and len(views) != len(detections):
            raise ConfigError(f"views must give one view per face: {len(views)} for {len(detections)} faces")
        if not detections:
            return []
        grey = to_grey(bgr)
        size = self.classifier.input_size
        crops = [crop_face(grey, d.box, d.landmarks, size) for d in detections]
        qualities = [self.quality.assess(d, c) for d, c in zip(detections, crops)]
        readable = [i for i, q in enumerate(qualities) if q.readable]
        chosen = None if views is None else [views[i] for i in readable]
        probs = self.classifier.predict([crops[i] for i in readable], chosen) if readable else np.zeros((0, 7))
        by_index = dict(zip(readable, probs))
        return [Face(box=tuple(float(v) for v in d.box), score=float(d.score), landmarks=d.landmarks,
                     quality=q, probabilities=by_index.get(i), lang=self.settings.lang)
                for i, (d, q) in enumerate(zip(detections, qualities))]


def _build_detector(settings: Settings) -> FaceDetector:
    """The settings' detector: built by name with their input size and threads, or the given object as is.

    Detection and classification run one after the other on an image, so both may use every core.
    """
    if not isinstance(settings.detector, str):
        return settings.detector
    kwargs: dict[str, Any] = {"threads": settings.threads or None, "runtime": settings.runtime}
    if settings.detect_size is not None:
        kwargs["max_side"] = settings.detect_size
    return create_detector(settings.detector, **kwargs)
