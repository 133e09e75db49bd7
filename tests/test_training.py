"""Training, resume, export and evaluation on tiny generated data (seconds, not minutes)."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.config import TrainConfig
from ferkit.training import augment, load_checkpoint, train


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), model="fernet_s", epochs=2, batch_size=8, lr=0.05, out=str(out), ema=0.9,
                threads=1, bf16=False)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_checkpoints_and_log(class_folders: Path, tmp_path: Path):
    cfg = tiny_cfg(class_folders, tmp_path / "run", max_steps=6)
    summary = train(cfg, progress=False)
    out = Path(cfg.out)
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_acc", "val_macro_f1", "lr"} <= set(rows[0])
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["n"] == 42
    assert json.loads((out / "config.json").read_text())["model"] == "fernet_s"
    model, loaded_cfg = load_checkpoint(out / "best.pt")
    assert loaded_cfg == cfg
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)


def test_resume_continues_where_it_stopped(class_folders: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=3, max_steps=5)  # 5 steps per epoch: stops after epoch 1
    train(cfg, progress=False)
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["epoch"] == 0 and first["step"] == 5
    train(replace(cfg, resume=True, max_steps=0), progress=False)
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [1, 2, 3]
    assert last["step"] == 5 * 3


def test_resume_refuses_a_different_run(class_folders: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(tiny_cfg(class_folders, out, epochs=1, max_steps=2), progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        train(tiny_cfg(class_folders, out, epochs=1, model="fernet_m", resume=True), progress=False)


def test_training_learns_an_easy_task(class_folders: Path, tmp_path: Path):
    # the synthetic classes differ by a bright bar's height: a few epochs must beat chance (1/7) clearly
    cfg = tiny_cfg(class_folders, tmp_path / "run", epochs=8, lr=0.02, rotate=0, scale=0, shift=0, erase=0,
                   brightness=0, contrast=0, ema=0, batch_size=7, schedule="cosine", warmup_epochs=1)
    summary = train(cfg, progress=False)
    assert summary["accuracy"] > 0.5


def test_other_layouts_and_options(fer_csv: Path, prefix_folder: Path, tmp_path: Path):
    s = train(tiny_cfg(fer_csv, tmp_path / "a", epochs=1, optimizer="adamw", lr=1e-3, schedule="plateau",
                       mixup=0.2, class_balance=0.5), progress=False)
    assert s["n"] == 14  # PublicTest rows
    s = train(tiny_cfg(prefix_folder, tmp_path / "b", epochs=1, val_fraction=0.25), progress=False)
    assert s["n"] == 7 * 2  # seeded stratified 25 % of 6 per class, rounded


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"modle": "x"})


def test_augment_keeps_shape_and_is_seeded():
    x = torch.randint(0, 255, (4, 1, 48, 48), dtype=torch.uint8)
    a = augment(x, TrainConfig(), torch.Generator().manual_seed(1))
    b = augment(x, TrainConfig(), torch.Generator().manual_seed(1))
    assert a.shape == (4, 1, 48, 48) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    # with every augmentation off it is exactly the shared normalisation
    off = TrainConfig(rotate=0, scale=0, shift=0, brightness=0, contrast=0, erase=0)
    from ferkit.preprocess import normalize

    g = torch.Generator().manual_seed(0)
    out = augment(x, off, g)
    flipped = normalize(x.float()).flip(3)
    same = [torch.allclose(out[i], normalize(x[i].float()), atol=1e-4) or
            torch.allclose(out[i], flipped[i], atol=1e-4) for i in range(4)]
    assert all(same)


def test_export_roundtrip_and_evaluate(class_folders: Path, tmp_path: Path):
    from ferkit.classification import EmotionClassifier
    from ferkit.evaluation import evaluate
    from ferkit.export import export_onnx

    cfg = tiny_cfg(class_folders, tmp_path / "run", epochs=1, max_steps=3)
    train(cfg, progress=False)
    onnx_path = tmp_path / "tiny.onnx"
    report = export_onnx(tmp_path / "run" / "best.pt", onnx_path, val_data=class_folders / "val", int8=True,
                         progress=False)
    assert report["parity_max_abs_diff"] < 1e-4
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["val"]["n"] == 42 and 0 < meta["temperature"] < 100
    card = onnx_path.with_suffix(".md").read_text()
    assert "fernet_s" in card and "Validation" in card and "epochs" in card
    assert (tmp_path / "tiny-int8.onnx").is_file() and "val_accuracy" in meta["int8"]
    # the runtime loads exactly this file and agrees with torch
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    with torch.no_grad():
        ref = (model(torch.from_numpy(x)) + model(torch.from_numpy(x).flip(3))) / 2
    np.testing.assert_allclose(EmotionClassifier(onnx_path).logits(x), ref.numpy(), atol=1e-4)
    # evaluate the exported file and the checkpoint: same accuracy (flip TTA lives in the onnx graph)
    r_onnx = evaluate(class_folders, onnx_path, split="val", calibrate=True, out_dir=tmp_path / "ev")
    r_pt = evaluate(class_folders, tmp_path / "run" / "best.pt", split="val", tta="flip")
    assert abs(r_onnx["accuracy"] - r_pt["accuracy"]) < 1e-9
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    assert np.array(r_onnx["confusion"]).sum() == 42
    assert "ece_after" in r_onnx["calibration"]
    r_ten = evaluate(class_folders, onnx_path, split="val", tta="tencrop")
    assert r_ten["n"] == 42
