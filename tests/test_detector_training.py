"""Detector training, export and evaluation on tiny generated data (seconds, not minutes).

Synthetic "photos": noise with bright ellipses as faces, annotated in the four supported layouts.
"""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ferkit.apps.cli import main  # noqa: E402
from ferkit.core.detection import create_detector  # noqa: E402
from ferkit.core.detection.metrics import detection_scores  # noqa: E402
from ferkit.core.detection.retinaface import WEIGHTS  # noqa: E402
from ferkit.errors import ConfigError, DataError  # noqa: E402
from ferkit.training.detector.anchors import anchor_boxes, encode, match, multibox_loss  # noqa: E402
from ferkit.training.detector.config import DetectorTrainConfig  # noqa: E402
from ferkit.training.detector.data import ellipse_to_box, load_boxes  # noqa: E402
from ferkit.training.detector.evaluate import evaluate_detector  # noqa: E402
from ferkit.training.detector.export import export_detector  # noqa: E402
from ferkit.training.detector.loop import (  # noqa: E402
    augment,
    load_detector_checkpoint,
    to_input,
    train_detector,
)
from ferkit.training.detector.models import (  # noqa: E402
    BlazeFaceNet,
    Exportable,
    RetinaFaceMNet,
    load_retinaface_onnx,
)

SIZE = 96


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these nets are tiny, and a second thread only waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photo(rng: np.random.Generator, boxes: list[list[float]]) -> np.ndarray:
    img = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
    for x, y, w, h in boxes:
        cv2.ellipse(img, (int(x + w / 2), int(y + h / 2)), (int(w / 2), int(h / 2)), 0, 0, 360, (200, 190, 230), -1)
        cv2.circle(img, (int(x + w * 0.3), int(y + h * 0.4)), max(1, int(w / 10)), (20, 20, 20), -1)
        cv2.circle(img, (int(x + w * 0.7), int(y + h * 0.4)), max(1, int(w / 10)), (20, 20, 20), -1)
    return img


def _layout(rng: np.random.Generator, n: int = 8) -> list[tuple[str, list[list[float]]]]:
    out = []
    for i in range(n):
        w = float(rng.integers(24, 44))
        x, y = float(rng.integers(2, SIZE - w - 2)), float(rng.integers(2, SIZE - w * 1.2 - 2))
        out.append((f"img_{i}.jpg", [[x, y, w, round(w * 1.2)]]))
    return out


@pytest.fixture(scope="module")
def json_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("facejson")
    (root / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (name, boxes) in enumerate(_layout(rng)):
        cv2.imwrite(str(root / "images" / "sub" / name), _photo(rng, boxes))
        images.append({"file": f"sub/{name}", "width": SIZE, "height": SIZE, "fold": 1 + i % 4, "boxes": boxes})
    (root / "annotations.json").write_text(json.dumps({"images": images}))
    return root


def test_json_reader_and_folds(json_set: Path):
    all_ = load_boxes(json_set)
    assert len(all_) == 8 and all(s.path.is_file() for s in all_)
    assert all_[0].key == "sub/img_0.jpg" and all_[0].boxes.shape == (1, 4)
    picked = load_boxes(json_set / "annotations.json", folds=[1, 2])
    assert sorted({s.fold for s in picked}) == [1, 2] and len(picked) == 4
    with pytest.raises(DataError):
        load_boxes(json_set, folds=[9])


def test_wider_reader(tmp_path: Path):
    (tmp_path / "wider_face_split").mkdir()
    img_dir = tmp_path / "WIDER_train" / "images" / "0--Parade"
    img_dir.mkdir(parents=True)
    for n in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(img_dir / n), np.zeros((SIZE, SIZE, 3), np.uint8))
    # x y w h blur expression illumination invalid occlusion pose; a 0-face image still has one row.
    (tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(
        "0--Parade/a.jpg\n2\n10 12 30 40 0 0 0 0 0 0\n50 50 8 8 0 0 0 1 0 0\n"
        "0--Parade/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    s = load_boxes(tmp_path)
    assert [x.key for x in s] == ["0--Parade/a.jpg", "0--Parade/b.jpg"]
    np.testing.assert_allclose(s[0].boxes, [[10, 12, 30, 40]])  # the invalid box is dropped
    assert s[1].boxes.shape == (0, 4) and s[0].path.is_file()
    with pytest.raises(ConfigError):
        load_boxes(tmp_path, folds=[1])  # WIDER has no folds
    with pytest.raises(DataError):
        load_boxes(tmp_path, split="val")


def test_fddb_reader_converts_ellipses(tmp_path: Path):
    (tmp_path / "FDDB-folds").mkdir()
    pic = tmp_path / "originalPics" / "2002" / "big"
    pic.mkdir(parents=True)
    cv2.imwrite(str(pic / "img_1.jpg"), np.zeros((SIZE, SIZE, 3), np.uint8))
    # major radius 30 (vertical: angle π/2), minor 20, centre (40, 45); a second one off the image edge.
    (tmp_path / "FDDB-folds" / "FDDB-fold-03-ellipseList.txt").write_text(
        f"2002/big/img_1\n2\n30 20 {math.pi / 2} 40 45 1\n20 10 0 90 10 1\n")
    s = load_boxes(tmp_path, folds=[3])
    assert s[0].fold == 3 and s[0].key == "2002/big/img_1.jpg"
    np.testing.assert_allclose(s[0].boxes[0], [20, 15, 40, 60], atol=1e-3)  # taller than wide
    np.testing.assert_allclose(s[0].boxes[1], [70, 0, 26, 20], atol=1e-3)  # clipped to the 96×96 image
    assert ellipse_to_box(30, 20, 0.0, 0, 0) == [-30, -20, 60, 40]


def test_voc_reader(tmp_path: Path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    cv2.imwrite(str(tmp_path / "JPEGImages" / "p.jpg"), np.zeros((SIZE, SIZE, 3), np.uint8))
    obj = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>5</ymin>" \
          "<xmax>40</xmax><ymax>50</ymax></bndbox></object>"
    (tmp_path / "Annotations" / "p.xml").write_text(
        "<annotation><filename>p.jpg</filename>" + obj.format("Face", 0, 10) + obj.format("car", 0, 1)
        + obj.format("face", 1, 2) + "</annotation>")
    s = load_boxes(tmp_path)
    np.testing.assert_allclose(s[0].boxes, [[10, 5, 30, 45]])
    assert s[0].path == tmp_path / "JPEGImages" / "p.jpg"


def test_matching_assigns_anchors():
    anchors = anchor_boxes(64, 64)  # stride 8: 8×8 cells × 2 sizes first
    target = anchors[10:11].clone()  # exactly one anchor's box (cell 5, 16 px)
    labels, loc = match(target, anchors)
    assert labels[10] == 1 and torch.allclose(loc[10], torch.zeros(4), atol=1e-5)
    far = (anchors[:, :2] + anchors[:, 2:]).div(2).sub(target[0, :2] + 8).abs().amax(1) > 40
    assert (labels[far] == 0).all()
    tiny = torch.tensor([[30.0, 30.0, 33.0, 33.0]])  # IoU < 0.35 with every anchor: its best one is forced
    labels, _ = match(tiny, anchors)
    assert int((labels == 1).sum()) == 1
    enc = encode(torch.tensor([[10.0, 10.0, 30.0, 40.0]]), torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    assert torch.allclose(enc, torch.tensor([[5.0, 7.5, 0.0, math.log(1.5) / 0.2]]), atol=1e-5)


def test_training_step_lowers_loss_on_fixed_batch(json_set: Path):
    torch.manual_seed(0)
    model = BlazeFaceNet(width=8)
    rng = np.random.default_rng(0)
    samples = load_boxes(json_set)[:4]
    views, boxes = zip(*(augment(cv2.imread(str(s.path)), np.hstack([s.boxes[:, :2], s.boxes[:, :2] + s.boxes[:, 2:]]),
                                 64, rng) for s in samples))
    x = torch.from_numpy(np.stack([to_input(v) for v in views]))
    anchors = anchor_boxes(64, 64)
    labels, targets = zip(*(match(torch.as_tensor(b), anchors) for b in boxes))
    labels, targets = torch.stack(labels), torch.stack(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loc, conf, _ = model(x)
        loss, _, _ = multibox_loss(loc, conf, labels, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    _, _, focal_cls = multibox_loss(loc, conf, labels, targets, cls_loss="focal")
    assert float(focal_cls) > 0


def _cfg(data: Path, out: Path, **kw) -> DetectorTrainConfig:
    base = dict(data=str(data), out=str(out), arch="blazeface", width=8, size=64, batch_size=4, epochs=1,
                threads=1, warmup_steps=1)
    return DetectorTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def blaze_run(json_set: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blaze")
    train_detector(_cfg(json_set, out, folds="1,2,3", val_folds="4"), progress=False)
    return out


def test_checkpoint_and_resume_continue(blaze_run: Path, json_set: Path):
    ck1 = torch.load(blaze_run / "last.pt", weights_only=False)
    assert ck1["epoch"] == 1 and (blaze_run / "best.pt").is_file()
    s = train_detector(_cfg(json_set, blaze_run, epochs=2, lr=0.5), resume=True, progress=False)
    rows = list(csv.DictReader(open(blaze_run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_ap50" in rows[0]
    assert s["resumed_from"] == 1 and s["steps"] == 2 * ck1["step"]
    model, cfg, ck = load_detector_checkpoint(blaze_run / "last.pt")
    assert cfg.lr == ck1["config"]["lr"] and cfg.folds == "1,2,3"  # its own settings, not the new --lr
    assert ck["landmarks"] == "none"
    assert all(not p.detach().any() for p in model.landmark_head.parameters())  # frozen at zero


def test_time_budget_stops_and_checkpoints(json_set: Path, tmp_path: Path):
    s = train_detector(_cfg(json_set, tmp_path, epochs=50, time_budget=1e-6), progress=False)
    assert s["stopped_by_budget"] and s["epochs_done"] == 1 and s["steps"] == 1
    assert (tmp_path / "last.pt").is_file()


def test_finetune_keeps_shipped_landmark_head(json_set: Path, tmp_path: Path):
    shipped = load_retinaface_onnx(RetinaFaceMNet(), WEIGHTS)
    train_detector(_cfg(json_set, tmp_path, arch="", init="retinaface", batch_size=2, folds="1", lr=1e-3),
                   progress=False)
    model, cfg, ck = load_detector_checkpoint(tmp_path / "last.pt")
    assert cfg.arch == "retinaface" and ck["landmarks"] == "shipped"
    for a, b in zip(model.landmark_head.parameters(), shipped.landmark_head.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(model.bbox_head.bbox_head[0].weight, shipped.bbox_head.bbox_head[0].weight)


def test_retinaface_torch_matches_shipped_onnx():
    import onnxruntime as ort

    model = load_retinaface_onnx(RetinaFaceMNet(), WEIGHTS).eval()
    img = _photo(np.random.default_rng(1), [[20, 20, 40, 48]])
    x = to_input(cv2.resize(img, (101, 75)))[None]  # odd size: the FPN upsampling rounds
    got = ort.InferenceSession(str(WEIGHTS), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        ref = Exportable(model)(torch.from_numpy(x))
    for a, b in zip(got, ref):
        assert a.shape == tuple(b.shape) and np.abs(a - b.numpy()).max() < 2e-4


def test_export_parity_card_and_detector_path(blaze_run: Path, json_set: Path, tmp_path: Path):
    out = tmp_path / "blaze.onnx"
    facts = export_detector(blaze_run / "last.pt", out, str(json_set), "4")
    assert facts["parity_max_abs_diff"] < 1e-4
    assert out.with_suffix(".md").is_file() and json.loads(out.with_suffix(".json").read_text())["arch"] == "blazeface"
    assert 0.0 <= facts["evaluation"]["ap@0.5"] <= 1.0
    assert "ferkit train-detector --data" in out.with_suffix(".md").read_text()
    det = create_detector(str(out), threshold=0.01)
    faces = det.detect(_photo(np.random.default_rng(2), [[20, 20, 40, 48]]))
    assert all(f.landmarks is None for f in faces)  # untrained landmark head: not reported
    r = evaluate_detector(json_set, str(out), "4", plot=tmp_path / "pr.png", progress=False)
    assert (tmp_path / "pr.png").is_file() and set(r["iou"]) == {0.3, 0.5, 0.7}


def test_ap_perfect_and_shifted():
    gt = {"a": np.array([[10, 10, 40, 50]]), "b": np.array([[0, 0, 20, 20], [50, 50, 30, 30]])}
    perfect = {k: [[*b, 0.9] for b in v.tolist()] for k, v in gt.items()}
    assert detection_scores(gt, perfect, 0.5)["ap"] == 1.0
    shifted = {k: [[b[0] + 0.3 * b[2], b[1], b[2], b[3], 0.9] for b in v.tolist()] for k, v in gt.items()}
    # A 30 % sideways shift: IoU 0.54, a hit at 0.5, a miss at 0.7.
    assert detection_scores(gt, shifted, 0.5)["ap"] == 1.0 and detection_scores(gt, shifted, 0.7)["ap"] == 0.0
    half = {"a": perfect["a"] + [[100, 100, 10, 10, 0.95]]}  # a higher-scored false positive, one image found
    m = detection_scores(gt, half, 0.5)
    assert 0 < m["ap"] < 1 and m["recall"] == pytest.approx(1 / 3) and m["fp_per_image"] == 0.5


def test_cli_missing_data_is_one_line_error(tmp_path: Path, capsys):
    for argv in (["train-detector", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                 ["evaluate-detector", "--data", str(tmp_path / "nope")]):
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("ferkit: error:") and "nope" in err and "\n" not in err and "Traceback" not in err


def test_evaluate_does_not_import_torch():
    code = ("import sys; import ferkit.training.detector.evaluate, ferkit.apps.cli.detector; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


def test_freeze_features_trains_only_box_and_class_heads():
    from ferkit.training.detector.loop import _trainable

    names = [n for n, _ in RetinaFaceMNet().named_parameters()]
    heads = {n for n in names if _trainable(n, "features")}
    assert heads and all(n.startswith(("bbox_head.", "class_head.")) for n in heads)
    assert not any(_trainable(n, "backbone") for n in names if n.startswith("fx."))
    assert _trainable("ssh1.conv3X3.0.weight", "backbone") and _trainable("fx.stage1.0.0.weight", "")
