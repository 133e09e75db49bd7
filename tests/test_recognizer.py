"""The whole pipeline on real faces (public-domain NASA portrait) with the committed model."""

import json

import cv2
import numpy as np
import pytest

from ferkit import EMOTIONS, Recognizer
from ferkit.core.detection import Detection
from ferkit.core.quality import QualityGate
from ferkit.errors import ImageError, ModelError

from .conftest import ASTRONAUT_FACE, EXAMPLE


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer()


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def test_single_face_is_found_and_labelled(rec, astronaut):
    result = rec.analyze(astronaut)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.5
    assert face.readable and face.quality.reason is None
    assert face.probabilities.shape == (7,) and np.isclose(face.probabilities.sum(), 1.0, atol=1e-5)
    assert face.emotion == EMOTIONS[int(np.argmax(face.probabilities))]
    assert face.landmarks.shape == (5, 2)
    assert result.width == 512 and result.height == 512


def test_all_input_forms_agree(rec, astronaut, tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), astronaut)
    ref = rec.analyze(astronaut).faces[0].probabilities
    for x in (path, str(path), path.read_bytes(), Image.fromarray(cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB))):
        np.testing.assert_allclose(rec.analyze(x).faces[0].probabilities, ref, atol=1e-5)
    assert rec.analyze(path).source == str(path)


def test_example_photo_has_readable_and_unreadable_faces(rec):
    result = rec.analyze(EXAMPLE)
    readable = [f for f in result.faces if f.readable]
    unreadable = [f for f in result.faces if not f.readable]
    assert len(readable) >= 3
    assert unreadable, "the example's tiny/blurred faces must be reported unreadable"
    for f in unreadable:
        assert f.emotion is None and f.probabilities is None and f.quality.reason
    d = json.loads(json.dumps(result.to_dict()))  # JSON-ready
    assert d["emotions"] == list(EMOTIONS) and len(d["faces"]) == len(result.faces)
    assert set(d["faces"][0]["probabilities"]) == set(EMOTIONS)


def test_mirrored_face_gets_nearly_the_same_emotion(rec, astronaut):
    a = rec.analyze(astronaut).faces[0].probabilities
    b = rec.analyze(cv2.flip(astronaut, 1)).faces[0].probabilities
    assert np.abs(a - b).max() < 0.1  # flip TTA inside the model makes it nearly symmetric


def test_batched_classification_matches_single(rec, astronaut):
    tiled = np.vstack([np.hstack([astronaut, astronaut]), np.hstack([astronaut, astronaut])])
    result = rec.analyze(tiled)
    assert len(result.faces) == 4
    single = rec.analyze(astronaut).faces[0].probabilities
    for f in result.faces:
        np.testing.assert_allclose(f.probabilities, single, atol=2e-2)


def test_shipped_models_classify_in_bounded_chunks(astronaut):
    """Large batches are split so a ten-crop model's memory stays bounded; the split changes nothing."""
    from ferkit.core.classification import EmotionClassifier
    from ferkit.core.settings import ACCURATE_MODEL, DEFAULT_MODEL

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (7, 48, 48), dtype=np.uint8)
    for name in (DEFAULT_MODEL, ACCURATE_MODEL):
        clf = EmotionClassifier(name)
        views = {"flip": 2, "tencrop": 10}[clf.info.meta["tta"]]
        assert clf.chunk * views <= 64
        whole = clf.predict(faces)
        clf.chunk = 3  # 3 + 3 + 1
        np.testing.assert_allclose(clf.predict(faces), whole, atol=1e-5)
        assert whole.shape == (7, len(EMOTIONS))


def test_default_model_runs_its_mirror_view_at_runtime_and_one_view_on_request():
    """The default model's graph holds one view and the runtime adds the mirror: all views averaged
    (with ``extra_views_below=1``), or one chosen view per face at half the cost (what video uses)."""
    from ferkit.core.classification import EmotionClassifier
    from ferkit.core.preprocess import prepare_batch
    from ferkit.core.settings import DEFAULT_MODEL

    clf = EmotionClassifier(DEFAULT_MODEL, calibrated=False, extra_views_below=1.0)
    assert clf.runtime_views == 2 and clf.tta == "flip"
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    x = prepare_batch(list(faces), 48)
    own, mirror = clf.logits(x, views=[0] * 5), clf.logits(x, views=[1] * 5)
    np.testing.assert_allclose(clf.logits(x), (own + mirror) / 2, atol=1e-5)
    np.testing.assert_allclose(mirror, clf.logits(np.ascontiguousarray(x[..., ::-1]), views=[0] * 5), atol=1e-5)
    mixed = clf.logits(x, views=[0, 1, 1, 0, 1])
    np.testing.assert_allclose(mixed[[0, 3]], own[[0, 3]], atol=1e-5)
    np.testing.assert_allclose(mixed[[1, 2, 4]], mirror[[1, 2, 4]], atol=1e-5)
    assert not np.allclose(own, mirror, atol=1e-3)  # the views differ, so the choice is real


def test_mirror_view_runs_only_for_faces_the_first_view_is_unsure_of(astronaut):
    """Faces whose first view reaches ``extra_views_below`` keep its logits; the others get the mean of both
    views; 0 and 1 give the first view only and both views everywhere."""
    from ferkit.core.classification import EmotionClassifier, softmax
    from ferkit.core.preprocess import prepare_batch, to_grey

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    grey = cv2.resize(to_grey(astronaut)[30:230, 140:340], (48, 48), interpolation=cv2.INTER_AREA)
    x = prepare_batch([grey, grey[:, ::-1], *noise], 48)  # a real face and pixel noise: sure and unsure
    every = EmotionClassifier(calibrated=False, extra_views_below=1.0)
    own, both = every.logits(x, views=[0] * len(x)), every.logits(x)
    sure = softmax(own, every.info.temperature).max(1)
    threshold = float(np.median(sure))  # half the faces above it, half below
    runs = []
    clf = EmotionClassifier(calibrated=False, extra_views_below=threshold)
    clf._run = lambda batch, run=clf._run: runs.append(len(batch)) or run(batch)
    out = clf.logits(x)
    unsure = sure < threshold
    assert 0 < unsure.sum() < len(x)
    np.testing.assert_allclose(out[unsure], both[unsure], atol=1e-5)
    np.testing.assert_allclose(out[~unsure], own[~unsure], atol=1e-5)
    assert runs == [len(x), int(unsure.sum())]  # the mirror view only for the unsure faces
    np.testing.assert_allclose(EmotionClassifier(calibrated=False, extra_views_below=0.0).logits(x), own, atol=1e-5)


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.8"])
def test_extra_views_below_must_be_a_probability(value):
    from ferkit import Settings
    from ferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="extra_views_below"):
        Settings(extra_views_below=value)


@pytest.mark.parametrize("views", [[0, 1], [0, 2, 0], [-1, 0, 0]])
def test_bad_view_choices_are_refused(views):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.errors import ConfigError

    x = np.zeros((3, 1, 48, 48), np.float32)
    with pytest.raises(ConfigError, match="one view in 0..1 per face"):
        EmotionClassifier().logits(x, views=views)


def test_views_of_a_model_with_views_inside_its_graph_are_refused(rec, astronaut):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.errors import ConfigError

    clf = EmotionClassifier("fernet-m")  # flip inside the graph
    assert clf.runtime_views == 1
    with pytest.raises(ConfigError, match="inside its graph"):
        clf.logits(np.zeros((1, 1, 48, 48), np.float32), views=[0])
    with pytest.raises(ConfigError, match="need the faces' detections"):
        rec.analyze(astronaut, views=[0])


def test_one_view_per_face_through_the_recognizer(rec, astronaut):
    det = Detection(box=ASTRONAUT_FACE, score=0.99, landmarks=None)
    both = rec.analyze(astronaut, detections=[det]).faces[0].probabilities
    own, mirror = (rec.analyze(astronaut, detections=[det], views=[v]).faces[0].probabilities for v in (0, 1))
    assert not np.allclose(own, mirror, atol=1e-4)
    assert np.abs(both - (own + mirror) / 2).max() < 0.05  # logits averaged vs probabilities: close, not equal
    assert both.argmax() == ((own + mirror) / 2).argmax()


def test_given_detections_skip_the_detector(rec, astronaut):
    det = Detection(box=ASTRONAUT_FACE, score=0.99, landmarks=None)
    result = rec.analyze(astronaut, detections=[det])
    assert len(result.faces) == 1 and result.faces[0].box == tuple(float(v) for v in ASTRONAUT_FACE)


def test_quality_gate_is_configurable(astronaut):
    strict = Recognizer(quality=QualityGate(min_face_size=1000))
    face = strict.analyze(astronaut).faces[0]
    assert not face.readable and face.quality.reason == "too_small" and face.emotion is None
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 6)
    res = Recognizer(quality={"min_face_size": 0}).analyze(blurred)
    assert res.faces and res.faces[0].quality.reason == "blurry"


def test_no_faces(rec):
    assert rec.analyze(np.full((240, 320, 3), 127, np.uint8)).faces == []


def test_errors(rec, tmp_path):
    with pytest.raises(ImageError):
        rec.analyze(tmp_path / "missing.jpg")
    with pytest.raises(ModelError, match="unknown model"):
        Recognizer(model="no-such-model")
    with pytest.raises(ModelError, match="unknown detector"):
        Recognizer(detector="no-such-detector")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, ferkit; print(any(m in sys.modules for m in ('cv2', 'onnxruntime', 'torch')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
