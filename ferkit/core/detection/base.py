"""What every detector shares: the :class:`Detection` record, the base class, the registry,
input checking, downscaling, one non-maximum suppression and inference sessions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.core import runtime
from ferkit.core.geometry import overlap
from ferkit.core.settings import DEFAULT_DETECTOR
from ferkit.errors import InputError, ModelError


@dataclass
class Detection:
    """One face found by a detector.

    box: ``(x, y, w, h)`` in pixels of the input image (top-left corner, float).
    score: detector confidence in [0, 1].
    landmarks: ``(5, 2)`` float array — left eye, right eye, nose tip, left and
        right mouth corner, *as seen in the image* (image-left first) — or None.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


class FaceDetector:
    """Base class: subclasses implement :meth:`detect` (and :meth:`missing` when optional)."""

    name: str = "base"
    #: The command that installs this detector's package where it is optional ("" = always installed).
    install: str = ""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR uint8 ``(H, W, 3)`` image → detections sorted by score, highest first.

        Grey ``(H, W)`` / ``(H, W, 1)`` and BGRA ``(H, W, 4)`` uint8 images are accepted too.
        """
        raise NotImplementedError

    @classmethod
    def missing(cls) -> str | None:
        """None when this detector can be built here, else what to install (the ModelError's text).

        Cheap: looks for packages and files without importing or loading them.
        """
        return None


_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator adding a detector factory (usually the class) to the registry under ``name``."""

    def wrap(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        _DETECTORS[name] = factory
        return factory

    return wrap


def list_detectors() -> list[str]:
    """Names accepted by :func:`create_detector` (registered, not necessarily installed)."""
    return sorted(_DETECTORS)


def detector_install(name: str) -> str:
    """The command that installs detector ``name``'s optional package ("" when it ships with ferkit)."""
    return getattr(_factory(name), "install", "")


def detector_missing(name: str) -> str | None:
    """None when detector ``name`` is installed here, else the message saying what to install.

    Raises:
        ferkit.errors.ModelError: unknown name.
    """
    factory = _factory(name)
    check = getattr(factory, "missing", None)
    return check() if callable(check) else None


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> FaceDetector:
    """Build a detector by name (:data:`DEFAULT_DETECTOR` by default, see :func:`list_detectors`).

    ``name`` may also be the path of an ``.onnx`` file in the RetinaFace head contract (outputs
    ``loc``, ``conf``, ``landmarks`` over the default detector's anchors, e.g. one written by
    ``ferkit export-detector``): it is run by the ``retinaface`` detector with ``model_path=name``.

    Raises:
        ferkit.errors.ModelError: unknown name, or the detector's package/weights are not installed.
    """
    return _factory(name)(**kwargs)


def is_onnx_path(name: str) -> bool:
    """True when a detector ``name`` is a path to an ``.onnx`` file rather than a registered name."""
    return str(name).lower().endswith(".onnx")


def _onnx_factory(path: str) -> Callable[..., FaceDetector]:
    """The factory of an ``.onnx`` detector file (RetinaFace head contract), with ``missing``."""

    def build(**kwargs) -> FaceDetector:
        from ferkit.core.detection.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(model_path=path, **kwargs)

    def missing() -> str | None:
        return None if Path(path).is_file() else f"{path}: detector .onnx file not found"

    build.missing = missing  # type: ignore[attr-defined]
    build.install = ""  # type: ignore[attr-defined]
    return build


def _factory(name: str) -> Callable[..., FaceDetector]:
    if is_onnx_path(name):
        return _onnx_factory(str(name))
    try:
        return _DETECTORS[name]
    except KeyError:
        raise ModelError(f"unknown detector {name!r}; choose one of {', '.join(list_detectors())}") from None


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Grey, grey ``(H, W, 1)``, BGR or BGRA uint8 array → contiguous BGR uint8 ``(H, W, 3)``.

    Raises:
        ferkit.errors.InputError: not a numpy uint8 image of one of those shapes, or empty.
    """
    import cv2

    if not isinstance(image, np.ndarray):
        raise InputError(f"detector input must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"detector input must be uint8, got {image.dtype} (scale to 0-255 and cast first)")
    if image.ndim in (2, 3) and (image.shape[0] == 0 or image.shape[1] == 0):
        raise InputError(f"detector input is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        bgr = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 3:
        bgr = np.ascontiguousarray(image)
    else:
        raise InputError(f"detector input must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    return bgr


def downscale(bgr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``bgr`` so its longer side is at most ``max_side`` (0 = never); returns it and the zoom factor.

    Coordinates found on the result map back to the input by dividing by the zoom.
    """
    import cv2

    h, w = bgr.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return bgr, 1.0
    zoom = max_side / max(h, w)
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    # Down to half size bilinear reads every pixel's neighbourhood anyway and costs a fifth of area
    # averaging at a non-integer ratio (0.6 against 3.1 ms for 640×480 → 480×360, the video case); below
    # half it would skip pixels and alias, so area averaging there.
    interpolation = cv2.INTER_LINEAR if zoom >= 0.5 else cv2.INTER_AREA
    return cv2.resize(bgr, size, interpolation=interpolation), zoom


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    boxes: ``(N, 4)`` corners ``x1, y1, x2, y2`` (continuous pixels). A box is dropped when its
    overlap with a kept, higher-scored box exceeds ``threshold``; overlap is IoU, or with
    ``mode="min"`` intersection over the smaller area (MTCNN's last stage uses it to drop a
    small box nested in a bigger one). With IoU, empty boxes (no area) are dropped.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.intp)
    if mode != "min":
        return _nms_iou(boxes, scores, threshold)
    return _nms_greedy(boxes, scores, threshold, "min")


def _nms_greedy(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """The greedy pass in numpy, for any :func:`~ferkit.core.geometry.overlap` mode."""
    n = len(boxes)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    # All pairwise overlaps at once (callers keep N to at most ~1000), then one cheap pass in
    # score order: a Python loop per box but no numpy call per box unless it is kept.
    over = overlap(b, b, mode) > threshold
    suppressed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order[keep]


def _nms_iou(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """IoU NMS by OpenCV's ``NMSBoxes``: the boxes :func:`_nms_greedy` keeps with IoU, in the same order
    (tests/test_detection.py checks it), 14x faster on a crowd's 283 candidates (0.06 against 0.84 ms)."""
    import cv2

    xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    real = np.flatnonzero((xywh[:, 2] > 0) & (xywh[:, 3] > 0))  # NMSBoxes' treatment of empty ones is its own
    if real.size < len(xywh):
        return real[_nms_iou(boxes[real], np.asarray(scores)[real], threshold)]
    # NMSBoxes keeps only scores above a threshold >= 0: rank them instead (same order, ties included)
    order = np.argsort(-np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf), kind="stable")
    rank = np.empty(len(order), np.float32)
    rank[order] = np.arange(len(order), 0, -1)
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), rank.tolist(), 0.0, float(threshold))
    return np.asarray(kept, np.intp).reshape(-1)


def to_detections(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None, zoom: float,
                  width: int, height: int) -> list[Detection]:
    """Corner boxes (and ``(N, 5, 2)`` landmarks) found on a zoomed image → :class:`Detection` list.

    Maps back to the input image by dividing by ``zoom``, clips boxes to its ``width × height``,
    drops boxes under one pixel and sorts by score, highest first.
    """
    out = []
    for i in np.argsort(-scores, kind="stable"):
        b = boxes[i] / zoom
        x1, y1 = max(float(b[0]), 0.0), max(float(b[1]), 0.0)
        x2, y2 = min(float(b[2]), float(width)), min(float(b[3]), float(height))
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            lm = None if points is None else (points[i] / zoom).astype(np.float32)
            out.append(Detection((x1, y1, x2 - x1, y2 - y1), float(scores[i]), lm))
    return out


def detector_session(path: Path | str | bytes, threads: int | None, runtime_name: str) -> runtime.Session:
    """A session for a small detector net: :func:`ferkit.core.runtime.open_session` without spinning threads."""
    return runtime.open_session(path, threads, spin=False, runtime=runtime_name)
