"""Typed results of :meth:`ferkit.Recognizer.analyze`, with JSON-ready ``to_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkit.core.labels import EMOTIONS, label


@dataclass
class Quality:
    """Whether a face can be read, and the measurements behind the decision.

    ``reason`` is None for readable faces, else one of ``too_small``, ``blurry``,
    ``turned_away``, ``low_score`` (the first failing check, in that order).
    """

    readable: bool
    reason: str | None
    face_size: float  # shorter side of the box, pixels
    sharpness: float  # variance of the Laplacian of the normalised 48×48 crop
    yaw: float | None  # landmark asymmetry, 0 = frontal, ±1 ≈ profile; None without landmarks
    score: float  # detector confidence

    def to_dict(self) -> dict:
        return {"readable": self.readable, "reason": self.reason, "face_size": round(self.face_size, 1),
                "sharpness": round(self.sharpness, 1), "yaw": None if self.yaw is None else round(self.yaw, 3),
                "score": round(self.score, 4)}


@dataclass
class Face:
    """One detected face. ``emotion``/``probabilities`` are None when unreadable."""

    box: tuple[float, float, float, float]  # x, y, w, h in pixels
    score: float
    landmarks: np.ndarray | None
    quality: Quality
    probabilities: np.ndarray | None = None  # (7,) in EMOTIONS order, calibrated
    track_id: int | None = None
    lang: str = "en"  # language of ``label`` (Settings.lang); ``emotion`` stays the canonical English key

    @property
    def readable(self) -> bool:
        return self.quality.readable

    @property
    def emotion(self) -> str | None:
        """Most probable emotion, or None for an unreadable face."""
        return None if self.probabilities is None else EMOTIONS[int(np.argmax(self.probabilities))]

    @property
    def label(self) -> str | None:
        """The emotion's name in this face's language (``emotion`` itself when ``lang`` is ``en``)."""
        return None if self.emotion is None else label(self.emotion, self.lang)

    @property
    def confidence(self) -> float | None:
        return None if self.probabilities is None else float(np.max(self.probabilities))

    def to_dict(self) -> dict:
        d = {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
            "readable": self.readable,
            "reason": self.quality.reason,
            "quality": self.quality.to_dict(),
            "emotion": self.emotion,
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "probabilities": None if self.probabilities is None
            else {e: round(float(p), 4) for e, p in zip(EMOTIONS, self.probabilities)},
        }
        if self.track_id is not None:
            d["track_id"] = self.track_id
        return d


@dataclass
class Analysis:
    """All faces of one image, in detection-score order."""

    faces: list[Face]
    width: int
    height: int
    source: str | None = None
    model: str = ""
    detector: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.faces)

    def __iter__(self):
        return iter(self.faces)

    @property
    def readable_faces(self) -> list[Face]:
        return [f for f in self.faces if f.readable]

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "detector": self.detector,
            "emotions": list(EMOTIONS),
            "faces": [f.to_dict() for f in self.faces],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
