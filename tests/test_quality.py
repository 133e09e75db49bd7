import cv2
import numpy as np
import pytest

from ferkit.core.detection import Detection
from ferkit.core.quality import QualityGate, estimate_yaw, sharpness

FRONTAL = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_sharpness_is_the_laplacian_variance_of_the_normalised_crop(seed):
    """The definition the thresholds were calibrated with (docs/quality.md), computed the long way."""
    rng = np.random.default_rng(seed)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (48, 48), dtype=np.uint8), (0, 0), 0.5 + seed)
    g = crop.astype(np.float32)
    g = (g - g.mean()) / g.std() * 50.0 + 128.0
    assert sharpness(crop) == pytest.approx(float(cv2.Laplacian(g, cv2.CV_32F, ksize=1).var()), rel=1e-4)
    assert sharpness(np.full((48, 48), 7, np.uint8)) == 0.0


def test_sharpness_drops_with_blur_and_ignores_contrast(astronaut):
    face = cv2.cvtColor(cv2.resize(astronaut[70:210, 165:275], (48, 48)), cv2.COLOR_BGR2GRAY)
    sharp = sharpness(face)
    assert sharpness(cv2.GaussianBlur(face, (0, 0), 2)) < sharp / 4
    dim = (face.astype(np.float32) * 0.3).astype(np.uint8)  # darker, lower contrast, same focus
    assert abs(sharpness(dim) - sharp) / sharp < 0.25
    assert sharpness(np.full((48, 48), 128, np.uint8)) == 0.0


def test_yaw_is_zero_frontal_and_signed_when_turned():
    assert abs(estimate_yaw(FRONTAL)) < 1e-6
    turned = FRONTAL.copy()
    turned[2, 0] += 15  # nose moves toward the right eye
    assert estimate_yaw(turned) > 0.5
    turned[2, 0] -= 30
    assert estimate_yaw(turned) < -0.5
    assert estimate_yaw(None) is None


def test_gate_reasons_in_order():
    gate = QualityGate(min_face_size=30, min_sharpness=10, max_yaw=0.5, min_score=0.9)
    crisp = np.tile(np.array([0, 255], np.uint8), (48, 24))
    flat = np.full((48, 48), 100, np.uint8)
    ok = gate.assess(Detection((0, 0, 100, 100), 0.99, FRONTAL), crisp)
    assert ok.readable and ok.reason is None
    assert gate.assess(Detection((0, 0, 20, 20), 0.99, FRONTAL), crisp).reason == "too_small"
    assert gate.assess(Detection((0, 0, 100, 100), 0.99, FRONTAL), flat).reason == "blurry"
    turned = FRONTAL.copy()
    turned[2, 0] += 18
    assert gate.assess(Detection((0, 0, 100, 100), 0.99, turned), crisp).reason == "turned_away"
    assert gate.assess(Detection((0, 0, 100, 100), 0.5, FRONTAL), crisp).reason == "low_score"
    # a size that fails two checks reports the first
    assert gate.assess(Detection((0, 0, 20, 20), 0.5, FRONTAL), flat).reason == "too_small"


def test_zero_disables_a_check():
    gate = QualityGate(min_face_size=0, min_sharpness=0, max_yaw=0, min_score=0)
    q = gate.assess(Detection((0, 0, 2, 2), 0.01, None), np.zeros((48, 48), np.uint8))
    assert q.readable
