"""The one preprocessing path shared by training, export checks and inference.

A face reaches the classifier as a ``size × size`` 8-bit grey crop (FER2013's
own form: 48×48). :func:`normalize` maps it to the float input every model
sees; training applies the same function to its uint8 batches (it works on
numpy arrays and torch tensors alike), so the two can never drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from ferkit.errors import ConfigError

if TYPE_CHECKING:  # inference runs without torch; training passes tensors
    import torch

INPUT_SIZE = 48
# Fixed constants (close to FER2013's pixel mean/std) rather than per-data-set
# statistics, so a model's input contract does not depend on what it was trained on.
MEAN = 0.5
STD = 0.25


def normalize(grey_uint8: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """uint8 grey pixels (numpy array or torch tensor, any shape) → float32 model input."""
    return (grey_uint8 / 255.0 - MEAN) / STD


# Test-time augmentation: views per face of each mode (``ferkit evaluate --tta``, ``ferkit export --tta``).
TTA_VIEWS = {"none": 1, "flip": 2, "tencrop": 10}


def tta_views(images: np.ndarray, tta: str, size: int) -> list[np.ndarray]:
    """Test-time views of ``size × size`` faces held in the last two axes (uint8 crops ``(N, S, S)`` or model
    input ``(N, 1, S, S)``): the faces themselves (``none``), and their mirrors (``flip``), or the 4 corner
    and centre crops at 90 % of the side, resized back, and their mirrors (``tencrop``).

    This is the numpy form of the views; :mod:`ferkit.training.views` builds the same ones into exported
    graphs (a test checks they agree).

    Raises:
        ferkit.errors.ConfigError: an unknown ``tta``.
    """
    if tta not in TTA_VIEWS:
        raise ConfigError(f"unknown tta {tta!r}; choose {', '.join(TTA_VIEWS)}")
    if tta != "tencrop":
        return [images, images[..., ::-1]] if tta == "flip" else [images]
    c = int(round(size * 0.9))
    flat = images.reshape(-1, size, size)
    views = []
    for y, x in tencrop_offsets(size):
        crop = np.empty_like(flat)
        for i, im in enumerate(flat):
            crop[i] = cv2.resize(im[y:y + c, x:x + c], (size, size), interpolation=cv2.INTER_LINEAR)
        crop = crop.reshape(images.shape)
        views += [crop, crop[..., ::-1]]
    return views


def tencrop_offsets(size: int) -> list[tuple[int, int]]:
    """(top, left) of the 4 corner and the centre crop of ten-crop TTA; each crop is 90 % of ``size``."""
    c = int(round(size * 0.9))
    return [(0, 0), (0, size - c), (size - c, 0), (size - c, size - c), ((size - c) // 2, (size - c) // 2)]


def to_grey(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or grey uint8 image → 2-D grey uint8."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def prepare_batch(crops: list[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Grey face crops (any sizes) → ``(N, 1, size, size)`` float32 model input."""
    out = np.empty((len(crops), 1, size, size), np.float32)
    for i, crop in enumerate(crops):
        grey = to_grey(crop)
        if grey.shape != (size, size):
            interp = cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_LINEAR
            grey = cv2.resize(grey, (size, size), interpolation=interp)
        out[i, 0] = normalize(grey.astype(np.float32))
    return out


# Where a FER2013 face's five landmarks sit in its 48×48 frame (left eye, right
# eye, nose, left/right mouth corner; image-left first). Measured by running a
# detector on up-scaled FER2013 training images and taking the median
# (benchmarks/calibrate_crop.py: mtcnn, 1,318 of 1,500 images), so inference crops frame a
# face as training did. Re-measured with retinaface (the default since issue 11): eyes and
# nose within 0.3 px, mouth corners 1.4 px higher; aligning to that template moved fernet-m's
# accuracy on 1,442 detected val faces from 70.39 % to 70.11 % (noise), so this one was kept
# (docs/detectors.md).
FER_TEMPLATE = np.array([[15.2, 18.81], [33.12, 18.56], [24.25, 28.78], [16.7, 37.91], [31.7, 37.64]], np.float32)
# Without landmarks: the FER frame relative to the detector box (centre offset
# as a fraction of box size, side as a multiple of the box's longer side).
FER_BOX_FRAME = (0.007, -0.006, 0.954)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping src → dst points, as a 2×3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s**2).sum()
    if var < 1e-9:
        raise ValueError("degenerate landmarks")
    a = (s * d).sum() / var  # scale·cos
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var  # scale·sin
    m = np.array([[a, -b, 0.0], [b, a, 0.0]])
    m[:, 2] = md - m[:, :2] @ ms
    return m


def face_transform(box: tuple[float, float, float, float], landmarks: np.ndarray | None,
                   size: int = INPUT_SIZE) -> np.ndarray:
    """2×3 matrix mapping image pixels into the ``size``×``size`` FER frame of one face."""
    if landmarks is not None:
        try:
            return similarity_transform(landmarks, FER_TEMPLATE * (size / 48.0))
        except ValueError:
            pass  # collapsed landmarks: fall back to the box
    x, y, w, h = box
    dx, dy, k = FER_BOX_FRAME
    side = max(w, h) * k
    cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
    s = size / max(side, 1e-6)
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])


def crop_face(grey: np.ndarray, box: tuple[float, float, float, float], landmarks: np.ndarray | None = None,
              size: int = INPUT_SIZE) -> np.ndarray:
    """Aligned ``size``×``size`` uint8 grey crop of one face, framed like FER2013.

    De-rotates using the landmarks when given. Large faces are first shrunk
    with area averaging so the warp does not alias.
    """
    m = face_transform(box, landmarks, size)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    src = grey
    if scale < 0.5:
        # Shrink only the region the warp reads, by area averaging, then warp from that.
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        h, w = grey.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = scale * 2.0  # keep twice the target resolution for the final warp
            roi = grey[y0:y1, x0:x1]
            nw, nh = max(2, int(round(roi.shape[1] * f))), max(2, int(round(roi.shape[0] * f)))
            src = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / roi.shape[1], nh / roi.shape[0]
            # image → roi-scaled coordinates: p' = (p - (x0, y0)) * (fx, fy); compose with m
            back = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
            m = m @ back
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
