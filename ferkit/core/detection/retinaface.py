"""``retinaface`` (default): RetinaFace with a MobileNet-0.25 backbone, 5 landmarks (OpenVINO or onnxruntime).

The weights ship inside ferkit (``ferkit/weights/detectors/retinaface-mnet025.onnx``, 1.7 MB, MIT;
provenance and licence in the ``.md`` beside it). The graph ends with the three heads —
per-anchor box offsets, face/background softmax and 5 landmark offsets — so the anchors
("priors"), their decoding, thresholding and NMS are done here, in numpy.

Model contract (Pytorch_Retinaface / yakhyo's re-training, which this file follows):
input ``(1, 3, H, W)`` float32 BGR minus the per-channel mean :data:`MEAN`, any H and W;
three levels with strides 8, 16, 32 and two square anchors each (16/32, 64/128, 256/512 px);
offsets encoded with variances 0.1 (centres, landmarks) and 0.2 (log sizes).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
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

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "detectors" / "retinaface-mnet025.onnx"
#: BGR channel means subtracted from the pixels (Pytorch_Retinaface's ``(104, 117, 123)``).
MEAN = np.array([104.0, 117.0, 123.0], np.float32)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTRE, VARIANCE_SIZE = 0.1, 0.2
# The net's input sides are padded (with the mean colour) up to a multiple of its coarsest stride: at
# least one cell at stride 32, and photos of slightly different sizes share an input shape. OpenVINO
# prepares its kernels once per input shape: over the 133 FDDB dev photos (100 sizes, 14 once padded) the
# first pass took 13.0 ms a photo unpadded and 7.3 padded, later passes 4.9-5.0 (2-core Xeon;
# benchmarks/first_pass.py). Dev AP@0.5 went from 0.973 to 0.977 with it (docs/runtime.md).
_SIDE_STEP = 32


def priors(height: int, width: int) -> np.ndarray:
    """Anchors of a ``height × width`` input as ``(N, 3)`` rows ``cx, cy, side`` in input pixels.

    Order is the heads' order: level by level (stride 8, 16, 32), then row-major over the
    level's ``ceil(H / stride) × ceil(W / stride)`` cells, then the level's two sizes.
    """
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
        cells = np.stack([cx.ravel(), cy.ravel()], 1)
        for_level = np.empty((len(cells), len(sizes), 3), np.float32)
        for_level[:, :, :2] = cells[:, None, :]
        for_level[:, :, 2] = np.asarray(sizes, np.float32)[None, :]
        out.append(for_level.reshape(-1, 3))
    return np.concatenate(out)


def decode(loc: np.ndarray, landmarks: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo the heads' encoding for the given anchors.

    loc: ``(N, 4)`` offsets ``dx, dy, dw, dh``; landmarks: ``(N, 10)`` offsets of 5 points;
    anchors: ``(N, 3)`` from :func:`priors`. Returns ``(N, 4)`` corner boxes ``x1, y1, x2, y2`` and
    ``(N, 5, 2)`` points, in input pixels.
    """
    centre, side = anchors[:, None, :2], anchors[:, 2:3]
    xy = anchors[:, :2] + loc[:, :2] * VARIANCE_CENTRE * side
    # exp of a clipped value: a garbage offset must not overflow to inf (the box is then dropped).
    wh = side * np.exp(np.clip(loc[:, 2:4] * VARIANCE_SIZE, -10.0, 10.0))
    boxes = np.hstack([xy - wh / 2, xy + wh / 2])
    points = centre + landmarks.reshape(-1, 5, 2) * VARIANCE_CENTRE * side[:, None]
    return boxes, points


@register_detector("retinaface")
class RetinaFaceDetector(FaceDetector):
    """RetinaFace MobileNet-0.25 (Deng et al. 2020; yakhyo/retinaface-pytorch weights): boxes, scores, 5 landmarks.

    One network pass per image at all scales (a feature pyramid), so the cost grows with pixels,
    not with the number of faces.

    Args:
        threshold: minimum face probability. 0.4: on the FDDB dev half AP@0.5 0.973 with 0.19 false boxes
            per photo, against 0.965 and 0.15 at 0.5 (docs/detectors.md); every box under the quality
            gate's ``min_score`` (0.85) is reported as unreadable (``low_score``), never labelled, and video
            tracks only detections of 0.5 and more (``VideoOptions.track_score``).
        nms_threshold: IoU above which a lower-scored box is dropped (RetinaFace's 0.4).
        max_side: images whose longer side exceeds this are downscaled to it first (0 = never).
            It sets the cost (pixels) and the smallest face found: faces smaller than ~16 px *after*
            downscaling are missed. 1280 keeps photos up to 1280×720 at full resolution (the
            example photo's 16 px face is found) and bounds time and memory on larger ones; 384
            is 2.5× faster at 640×480 with the same AP on the dev set but loses faces under ~27 px
            there (docs/detectors.md). Video sets its own (``ferkit video --detect-size``, 480).
        top_k: at most this many best-scored candidates go into NMS (bounds its N² memory).
        threads: inference threads (None = one per core). 1 here; the Recognizer passes its
            settings' ``threads`` (photos: every core, 31 → 21 ms at 640×480 on a 2-core Zen 3; video: 2
            threads that sleep between calls; the service: 1 per request).
        runtime: inference runtime (:func:`ferkit.core.runtime.open_session`; ``auto`` = the best installed).
        model_path: an ``.onnx`` file with the same contract (default: the shipped weights).
    """

    name = "retinaface"

    def __init__(self, threshold: float = 0.4, nms_threshold: float = 0.4, max_side: int = 1280, top_k: int = 1000,
                 threads: int | None = 1, model_path: str | Path | None = None, runtime: str = DEFAULT_RUNTIME):
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        path = Path(model_path) if model_path is not None else WEIGHTS
        if not path.is_file():
            raise ModelError(f"{path}: RetinaFace weights not found (reinstall ferkit, or pass model_path=)")
        self.threshold = float(threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.top_k = int(top_k)
        self._session = detector_session(path, threads, runtime)
        names = self._session.outputs
        if not {"loc", "conf", "landmarks"} <= set(names):
            raise ModelError(f"{path}: not a RetinaFace graph (outputs {names}; expected loc, conf, landmarks)")
        # A trained export says when its landmark head was never trained (``ferkit export-detector``
        # of a from-scratch net): its points would be anchor centres, so they are not reported.
        self.landmarks = self._session.metadata.get("ferkit_landmarks", "shipped") != "none"
        # (input shape, its anchors), replaced as one tuple so concurrent calls never see a mismatched pair.
        self._anchors: tuple[tuple[int, int], np.ndarray] = ((-1, -1), np.zeros((0, 3), np.float32))

    @classmethod
    def missing(cls) -> str | None:
        """None when the shipped weights are present (they are part of the package)."""
        return None if WEIGHTS.is_file() else f"{WEIGHTS}: RetinaFace weights not found (reinstall ferkit)"

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BGR (or grey/BGRA) uint8 image → faces with 5 landmarks, highest score first."""
        image = as_bgr_uint8(image)
        h, w = image.shape[:2]
        bgr, zoom = downscale(image, self.max_side)
        loc, conf, marks, anchors = self._run(bgr)
        score = conf[:, 1]
        cand = np.flatnonzero(score > self.threshold)
        if not cand.size:
            return []
        if cand.size > self.top_k:
            cand = cand[np.argpartition(-score[cand], self.top_k)[: self.top_k]]
        # Decode only the candidates: a 640×480 input has 12,600 anchors, a face a few dozen.
        boxes, points = decode(loc[cand], marks[cand], anchors[cand])
        keep = nms(boxes, score[cand], self.nms_threshold)
        return to_detections(boxes[keep], score[cand][keep], points[keep] if self.landmarks else None, zoom, w, h)

    def _run(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One network pass → per-anchor ``loc (N, 4)``, ``conf (N, 2)``, ``landmarks (N, 10)`` and the anchors."""
        h, w = bgr.shape[:2]
        ph, pw = (-(-side // _SIDE_STEP) * _SIDE_STEP for side in (h, w))
        # zero = the mean colour after subtraction; one pass per plane (0.44 against 0.68 ms at 640×480)
        x = (np.zeros if (ph, pw) != (h, w) else np.empty)((1, 3, ph, pw), np.float32)
        for c, plane in enumerate(cv2.split(bgr)):
            np.subtract(plane, MEAN[c], out=x[0, c, :h, :w], casting="unsafe")
        loc, conf, marks = self._session.run(x, ["loc", "conf", "landmarks"])
        shape, anchors = self._anchors
        if shape != (ph, pw):  # video frames share one size: build the anchors once
            anchors = priors(ph, pw)
            self._anchors = ((ph, pw), anchors)
        if loc.shape[1] != len(anchors):
            raise ModelError(f"RetinaFace returned {loc.shape[1]} anchors for a {pw}×{ph} input, expected "
                             f"{len(anchors)}: the .onnx file does not follow this decoder's contract")
        return loc[0], conf[0], marks[0], anchors
