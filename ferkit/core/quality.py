"""Quality gate: decide whether a detected face can be read at all.

A face is *unreadable* — reported with its reason, never given a guessed
emotion — when it is too small, too blurry, too turned away or detected with
too low a score. The checks run on the same normalised 48×48 crop the
classifier sees, so a threshold means the same thing at any photo size.

Default thresholds come from ``benchmarks/calibrate_quality.py``, which
degrades FER2013 ``val/`` faces (Gaussian blur, down-scaling) and measures
where the shipped classifier's accuracy falls to halfway between its clean accuracy
and a majority-class guess; see docs/quality.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ferkit.core.detection import Detection
from ferkit.core.results import Quality


@dataclass
class QualityGate:
    """Thresholds of the quality gate (all configurable; 0 disables a check)."""

    min_face_size: float = 16.0  # px, shorter side of the detector box (calibrated)
    min_sharpness: float = 48.0  # variance of the Laplacian on the normalised 48×48 crop (calibrated)
    max_yaw: float = 0.6  # |landmark yaw|, 0 frontal … 1 profile (geometric, see docs/quality.md)
    min_score: float = 0.85  # detector confidence

    def assess(self, detection: Detection, crop48: np.ndarray) -> Quality:
        """Measure one face (its 48×48 uint8 aligned crop) and decide readability."""
        x, y, w, h = detection.box
        size = float(min(w, h))
        sharp = sharpness(crop48)
        yaw = estimate_yaw(detection.landmarks)
        reason = None
        if self.min_face_size and size < self.min_face_size:
            reason = "too_small"
        elif self.min_sharpness and sharp < self.min_sharpness:
            reason = "blurry"
        elif self.max_yaw and yaw is not None and abs(yaw) > self.max_yaw:
            reason = "turned_away"
        elif self.min_score and detection.score < self.min_score:
            reason = "low_score"
        return Quality(readable=reason is None, reason=reason, face_size=size, sharpness=sharp, yaw=yaw,
                       score=float(detection.score))

    def to_dict(self) -> dict:
        return asdict(self)


def sharpness(crop48: np.ndarray) -> float:
    """Variance of the Laplacian of a grey crop after contrast normalisation.

    Normalising (zero mean, fixed std) first makes the measure about focus,
    not about how dark or low-contrast the photo is.
    """
    g = crop48.astype(np.float32)
    std = float(cv2.meanStdDev(g)[1][0, 0])
    if std < 1e-3:
        return 0.0
    # The Laplacian is linear and zero on constants (reflected borders), so normalising to std 50
    # scales its variance by (50 / std)²: the same figure as normalising first, in OpenCV's C++.
    lap_std = float(cv2.meanStdDev(cv2.Laplacian(g, cv2.CV_32F, ksize=1))[1][0, 0])
    return (lap_std * 50.0 / std) ** 2


def estimate_yaw(landmarks: np.ndarray | None) -> float | None:
    """Signed yaw proxy from five landmarks: nose offset from the eye/mouth midline.

    The offset is measured along the eye axis and divided by half the eye
    distance, so it is ≈0 for a frontal face and approaches ±1 as the nose
    reaches the outer eye (a near-profile view).
    """
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, np.float32)
    le, re, nose, lm_, rm = lm
    axis = re - le
    d = float(np.linalg.norm(axis))
    if d < 1e-6:
        return 1.0
    axis /= d
    mid = (le + re + lm_ + rm) / 4.0
    return float(np.dot(nose - mid, axis) / (d / 2))
