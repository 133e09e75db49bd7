"""Training, resume, export and evaluation on tiny generated data (seconds, not minutes)."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.errors import ConfigError, ModelError
from ferkit.training.config import TrainConfig
from ferkit.training.loop import augment, load_checkpoint, train


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
    import cv2

    curves = cv2.imread(str(out / "curves.png"))  # redrawn every epoch: accuracy and macro-F1 per epoch
    assert curves is not None and curves.shape == (360, 900, 3) and (curves < 250).any()
    model, loaded_cfg = load_checkpoint(out / "best.pt")
    assert loaded_cfg == cfg
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)


def test_resume_continues_where_it_stopped(class_folders: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=3, max_steps=5)  # 5 steps per epoch: stops after epoch 1
    train(cfg, progress=False)
    first = torch.load(out / "last.pt", weights_only=True)
    assert first["epoch"] == 0 and first["step"] == 5
    train(replace(cfg, resume=True, max_steps=0), progress=False)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [1, 2, 3]
    assert last["step"] == 5 * 3


def test_a_packed_run_resumes_elsewhere_as_the_original_would(class_folders: Path, tmp_path: Path):
    from ferkit.training.checkpoint import pack_run, unpack_run

    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=3, max_steps=5)  # stops after epoch 1
    train(cfg, progress=False)
    packed = pack_run(out, tmp_path / "carry" / "run.pt")
    assert packed.stat().st_size < 0.6 * ((out / "last.pt").stat().st_size + (out / "best.pt").stat().st_size)

    moved = unpack_run(packed, tmp_path / "elsewhere")  # another machine: only the packed file came along
    assert {p.name for p in moved.iterdir()} == {"last.pt", "best.pt", "config.json", "log.csv"}
    original, restored = (torch.load(d / "last.pt", weights_only=True) for d in (out, moved))
    for name, w in original["model"].items():
        assert restored["model"][name].dtype == w.dtype
        assert torch.allclose(restored["model"][name].float(), w.float(), rtol=1e-3, atol=1e-6)
    assert torch.equal(restored["generator"], original["generator"]) and restored["step"] == 5

    train(replace(cfg, out=str(moved), resume=True, max_steps=0), progress=False)
    last = torch.load(moved / "last.pt", weights_only=True)
    assert last["step"] == 15 and [h["epoch"] for h in last["history"]] == [1, 2, 3]
    assert [int(r["epoch"]) for r in csv.DictReader(open(moved / "log.csv"))] == [1, 2, 3]
    with pytest.raises(ModelError, match="already holds a run"):
        unpack_run(packed, moved)  # never over a run
    with pytest.raises(ModelError, match="not a packed ferkit run"):
        unpack_run(out / "last.pt", tmp_path / "third")


def test_a_run_packed_without_its_best_keeps_the_best_of_its_resumed_epochs(class_folders: Path, tmp_path: Path):
    from ferkit.training.checkpoint import pack_run, unpack_run

    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=2, max_steps=5)
    train(cfg, progress=False)
    moved = unpack_run(pack_run(out, tmp_path / "run.pt", best=False), tmp_path / "elsewhere")
    assert not (moved / "best.pt").exists()
    train(replace(cfg, out=str(moved), resume=True, max_steps=0), progress=False)
    assert torch.load(moved / "best.pt", weights_only=True)["epoch"] == 1  # the resumed epoch's own


def test_resume_refuses_a_different_run(class_folders: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(tiny_cfg(class_folders, out, epochs=1, max_steps=2), progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        train(tiny_cfg(class_folders, out, epochs=1, model="fernet_m", resume=True), progress=False)


@pytest.mark.parametrize("change", [dict(label_smoothing=0.0), dict(seed=1), dict(erase=0.0), dict(mixup=0.2)])
def test_resume_refuses_another_recipe(class_folders: Path, tmp_path: Path, change: dict):
    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=2, max_steps=2)
    train(cfg, progress=False)
    name = next(iter(change))
    with pytest.raises(ConfigError, match=f"cannot resume .*{name}="):
        train(replace(cfg, resume=True, max_steps=0, **change), progress=False)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2  # nothing was overwritten


def test_resume_follows_the_data_by_content_not_by_path(class_folders: Path, tmp_path: Path):
    import shutil

    out = tmp_path / "run"
    cfg = tiny_cfg(class_folders, out, epochs=2, max_steps=5)
    train(cfg, progress=False)
    moved = shutil.copytree(class_folders, tmp_path / "elsewhere")  # the same images on another machine
    train(replace(cfg, data=str(moved), resume=True, max_steps=0), progress=False)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1

    other = tmp_path / "other"
    shutil.copytree(class_folders, other)
    victim = next((other / "train").rglob("*.png"))
    victim.unlink()  # one training image fewer
    with pytest.raises(ConfigError, match="other images"):
        train(replace(cfg, data=str(other), epochs=2, resume=True, max_steps=0), progress=False)


def test_resume_refuses_another_teacher_file_but_not_another_path(class_folders: Path, tmp_path: Path):
    import shutil

    teacher = _tiny_export(class_folders, tmp_path)
    out = tmp_path / "student"
    cfg = tiny_cfg(class_folders, out, epochs=3, max_steps=5, teacher=str(teacher), kd_views="online")
    train(cfg, progress=False)
    copy = tmp_path / "copy" / teacher.name
    copy.parent.mkdir()
    shutil.copy(teacher, copy)
    shutil.copy(teacher.with_suffix(".json"), copy.with_suffix(".json"))
    train(replace(cfg, teacher=str(copy), resume=True, max_steps=10), progress=False)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1

    (tmp_path / "t2").mkdir()
    changed = _tiny_export(class_folders, tmp_path / "t2", fp16_weights=True)  # same name, other weights
    with pytest.raises(ConfigError, match="distilled from teacher.onnx"):
        train(replace(cfg, teacher=str(changed), resume=True, max_steps=0), progress=False)
    with pytest.raises(ConfigError, match="now from no teacher"):
        train(replace(cfg, teacher=None, resume=True, max_steps=0), progress=False)


def test_time_budget_picks_epochs_and_records_a_plain_run(class_folders: Path, tmp_path: Path):
    out = tmp_path / "run"
    # a budget far too small for even one epoch still trains one; a huge one is capped by --epochs
    cfg = tiny_cfg(class_folders, out, epochs=50, time_budget=1e-3)
    train(cfg, progress=False)
    assert cfg.epochs == 50 and cfg.time_budget == 1e-3  # the caller's config is left alone
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["time_budget"] == 0.0
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 1
    train(tiny_cfg(class_folders, tmp_path / "big", epochs=2, time_budget=1e6), progress=False)
    assert json.loads((tmp_path / "big" / "config.json").read_text())["epochs"] == 2


def test_ema_tracks_the_model_and_copies_counters():
    from ferkit.training.loop import EMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].num_batches_tracked += 3
    before = [p.clone() for p in ema.model.parameters()]
    ema.update(model, step=1000)  # decay 0.5 once warm: halfway between old and new
    for b, e, m in zip(before, ema.model.parameters(), model.parameters()):
        assert torch.allclose(e, (b + m) / 2)
    assert int(ema.model[1].num_batches_tracked) == 3


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
    from ferkit.core.preprocess import normalize

    g = torch.Generator().manual_seed(0)
    out = augment(x, off, g)
    flipped = normalize(x.float()).flip(3)
    same = [torch.allclose(out[i], normalize(x[i].float()), atol=1e-4) or
            torch.allclose(out[i], flipped[i], atol=1e-4) for i in range(4)]
    assert all(same)


def test_export_roundtrip_and_evaluate(class_folders: Path, tmp_path: Path):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.training.evaluation import evaluate
    from ferkit.training.export import export_onnx

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
    # (onnxruntime: the reference runtime, fp32 throughout; OpenVINO may compute in bf16, tests/test_runtime.py)
    np.testing.assert_allclose(EmotionClassifier(onnx_path, runtime="onnxruntime").logits(x), ref.numpy(), atol=1e-4)
    # evaluate the exported file and the checkpoint: same accuracy (flip TTA lives in the onnx graph)
    r_onnx = evaluate(class_folders, onnx_path, split="val", calibrate=True, out_dir=tmp_path / "ev",
                      runtime="onnxruntime")
    r_pt = evaluate(class_folders, tmp_path / "run" / "best.pt", split="val", tta="flip")
    assert abs(r_onnx["accuracy"] - r_pt["accuracy"]) < 1e-9
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    assert np.array(r_onnx["confusion"]).sum() == 42
    assert "ece_after" in r_onnx["calibration"]
    r_ten = evaluate(class_folders, onnx_path, split="val", tta="tencrop")
    assert r_ten["n"] == 42


def test_fp16_weight_export_halves_the_file_and_keeps_the_logits(class_folders: Path, tmp_path: Path):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.training.export import export_onnx

    train(tiny_cfg(class_folders, tmp_path / "run", epochs=1, max_steps=2), progress=False)
    ck = tmp_path / "run" / "best.pt"
    full, half = tmp_path / "full.onnx", tmp_path / "half.onnx"
    export_onnx([ck, ck], full, progress=False)  # two members: the ensemble path too
    report = export_onnx([ck, ck], half, fp16_weights=True, progress=False)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert report["fp16_weights"] and report["parity_max_abs_diff"] < 1e-2
    x = np.random.default_rng(1).normal(size=(4, 1, 48, 48)).astype(np.float32)
    a, b = EmotionClassifier(full).logits(x), EmotionClassifier(half).logits(x)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-2)
    assert "weights stored as float16" in half.with_suffix(".md").read_text()


def test_int8_weight_export_quarters_the_file_and_keeps_the_predictions(class_folders: Path, tmp_path: Path):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.training.export import export_onnx

    train(tiny_cfg(class_folders, tmp_path / "run", epochs=1, max_steps=2, model="fernet_m"), progress=False)
    ck = tmp_path / "run" / "best.pt"
    full, small = tmp_path / "full.onnx", tmp_path / "small.onnx"
    export_onnx(ck, full, progress=False)
    report = export_onnx(ck, small, int8_weights=True, progress=False)
    assert small.stat().st_size < 0.3 * full.stat().st_size
    assert report["int8_weights"] and not report["fp16_weights"]
    crops = np.random.default_rng(2).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    a, b = EmotionClassifier(full, calibrated=False), EmotionClassifier(small, calibrated=False)
    np.testing.assert_allclose(b.predict(crops), a.predict(crops), atol=0.02)
    assert "weights stored as int8" in small.with_suffix(".md").read_text()
    with pytest.raises(ModelError, match="choose one"):
        export_onnx(ck, tmp_path / "both.onnx", fp16_weights=True, int8_weights=True, progress=False)


def test_init_fine_tunes_from_a_checkpoint_and_keeps_its_lineage(class_folders: Path, tmp_path: Path):
    from dataclasses import asdict

    from ferkit.training.export import model_card, train_command

    train(tiny_cfg(class_folders, tmp_path / "a", epochs=1, max_steps=3), progress=False)
    parent = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    # lr 0: the fine-tuned conv weights must be exactly the parent's, so --init really loaded them
    cfg = tiny_cfg(class_folders, tmp_path / "b", epochs=1, max_steps=2, init=str(tmp_path / "a" / "best.pt"),
                   lr=0.0, ema=0, schedule="cosine")
    train(cfg, progress=False)
    child = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    conv = "features.0.0.weight"
    assert torch.equal(child["model"][conv], parent["model"][conv])
    assert [p["config"]["out"] for p in child["parents"]] == [str(tmp_path / "a")]
    assert child["device"].startswith("CPU")
    stages = child["parents"] + [{"config": child["config"], "epochs": 1, "best_epoch": 1, "wall_time_s": 1,
                                  "device": child["device"]}]
    card = model_card({"name": "x", "architecture": ["fernet_s"], "params": 1, "mmacs_per_face": 1,
                       "tta": "flip", "input_size": 48, "emotions": ["a"], "temperature": 1.0,
                       "parity_max_abs_diff": 0.0, "exported": "today", "training": [stages]})
    assert "fine-tuned from the run above" in card and f"--init {tmp_path / 'a' / 'best.pt'}" in card
    assert train_command(asdict(cfg)).startswith(f"ferkit train --data {class_folders} --model fernet_s --epochs 1")


def test_init_with_another_architecture_is_refused(class_folders: Path, tmp_path: Path):
    from ferkit.errors import DataError

    train(tiny_cfg(class_folders, tmp_path / "a", epochs=1, max_steps=1), progress=False)
    with pytest.raises(ValueError, match="does not fit model 'fernet_m'"):
        train(tiny_cfg(class_folders, tmp_path / "b", model="fernet_m", init=str(tmp_path / "a" / "best.pt")),
              progress=False)
    with pytest.raises(DataError, match="no such checkpoint"):
        train(tiny_cfg(class_folders, tmp_path / "c", init=str(tmp_path / "missing.pt")), progress=False)


def test_train_command_lists_only_what_differs():
    from dataclasses import asdict

    from ferkit.training.export import train_command

    cmd = train_command(asdict(TrainConfig(seed=3, bf16=False, resume=True, threads=2)))
    assert cmd == "ferkit train --data ../shared/fer2013 --model fernet_m --epochs 40 --seed 3 --no-bf16"


def test_ensemble_averages_member_probabilities_over_both_views():
    from ferkit.training.architectures import create_architecture
    from ferkit.training.export import _Ensemble

    torch.manual_seed(0)
    a, b = create_architecture("fernet_s").eval(), create_architecture("fernet_s").eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        za = (a(x) + a(x.flip(3))) / 2
        zb = (b(x) + b(x.flip(3))) / 2
        want = (torch.softmax(za, 1) + torch.softmax(zb, 1)) / 2
        got = torch.softmax(_Ensemble([a, b], tta="flip")(x), 1)
        single = _Ensemble([a], tta="flip")(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(single, za)  # one member: its flip-averaged logits, unchanged


def test_tencrop_in_the_graph_matches_the_evaluation_views(tmp_path: Path):
    """The ten views baked into an exported graph are the ones `ferkit evaluate --tta tencrop` makes."""
    from ferkit.core.preprocess import prepare_batch
    from ferkit.core.preprocess import tta_views as eval_views
    from ferkit.training.architectures import create_architecture
    from ferkit.training.export import _Ensemble, to_onnx
    from ferkit.training.views import tta_views as graph_views

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    x = torch.from_numpy(prepare_batch(list(faces), 48))
    want = [prepare_batch(list(v), 48) for v in eval_views(faces, "tencrop", 48)]
    got = [v.numpy() for v in graph_views(x, "tencrop")]
    assert len(got) == len(want) == 10
    step = float(np.abs(prepare_batch([np.full((48, 48), 1, np.uint8)], 48) - prepare_batch(
        [np.zeros((48, 48), np.uint8)], 48)).max())  # one grey level after normalisation
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= step  # OpenCV rounds its resize to whole grey levels; the graph does not

    torch.manual_seed(0)
    net = create_architecture("fernet_s").eval()
    to_onnx([net], tmp_path / "ten.onnx", tta="tencrop")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "ten.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = _Ensemble([net], tta="tencrop")(x).numpy()
        by_hand = torch.stack([net(v) for v in graph_views(x, "tencrop")]).mean(0).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, atol=1e-4)
    np.testing.assert_allclose(ref, by_hand, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown tta"):
        graph_views(x, "fivecrop")


@pytest.mark.parametrize("flags, device, expected", [
    ({"avx2", "fma"}, "cpu", False),  # AVX2-only EPYC: bf16 would be emulated (15× slower there)
    ({"avx512f", "avx512_bf16"}, "cpu", True),  # Zen 4/5, Cooper Lake and later
    ({"avx512f", "amx_bf16", "amx_tile"}, "cpu", True),  # Sapphire Rapids
    ({"avx512f", "avx512bw"}, "cpu", False),  # AVX-512 without its bf16 extension
    (set(), "cpu", False),  # flags unknown (not Linux): the safe choice
])
def test_precision_follows_what_the_cpu_does_natively(flags, device, expected):
    from ferkit.training.device import choose_precision

    use, why = choose_precision(torch.device(device), None, flags)
    assert use is expected and why.startswith("bf16" if expected else "fp32")


def test_precision_flag_forces_either_way():
    from ferkit.training.device import choose_precision

    assert choose_precision(torch.device("cpu"), True, {"avx2"}) == (True, "bf16 forced by --bf16")
    assert choose_precision(torch.device("cpu"), False, {"avx512_bf16"}) == (False, "fp32 forced by --no-bf16")


def test_auto_precision_is_recorded_as_what_ran(class_folders: Path, tmp_path: Path, monkeypatch):
    import ferkit.training.device as device

    monkeypatch.setattr(device, "cpu_info", lambda: ("Test CPU", {"avx2"}))
    train(tiny_cfg(class_folders, tmp_path / "run", epochs=1, max_steps=2, bf16=None), progress=False)
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ck["config"]["bf16"] is False and ck["precision"].startswith("fp32: the CPU has no native bf16")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["bf16"] is False
    assert "Test CPU" in ck["device"]


def _tiny_export(class_folders: Path, tmp_path: Path, **kw) -> Path:
    from ferkit.training.export import export_onnx

    train(tiny_cfg(class_folders, tmp_path / "teacher_run", epochs=1, max_steps=3), progress=False)
    path = tmp_path / "teacher.onnx"
    export_onnx(tmp_path / "teacher_run" / "best.pt", path, val_data=class_folders / "val", progress=False, **kw)
    return path


@pytest.mark.parametrize("weights", ["float", "int8"])
def test_members_rebuilt_from_onnx_compute_what_the_graph_does(class_folders: Path, tmp_path: Path, weights):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.core.preprocess import normalize
    from ferkit.training.export import _Ensemble
    from ferkit.training.onnx_weights import members_from_onnx

    path = _tiny_export(class_folders, tmp_path, int8_weights=weights == "int8")
    images = np.random.default_rng(1).integers(0, 255, (20, 48, 48), dtype=np.uint8)
    members = members_from_onnx(path, ["fernet_s"], images)
    x = normalize(images[:6, None].astype(np.float32))
    with torch.no_grad():
        ours = _Ensemble(members, "flip").eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, EmotionClassifier(path, calibrated=False, runtime="onnxruntime").logits(x),
                               atol=1e-4)
    # train mode on the images the statistics came from: BN then normalises by nearly the same mean/var
    for m in members[0].modules():  # BatchNorm in train mode; dropout stays off so only BN differs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        train_mode = members[0](torch.from_numpy(normalize(images[:, None].astype(np.float32))))
    members[0].eval()
    with torch.no_grad():
        eval_mode = members[0](torch.from_numpy(normalize(images[:, None].astype(np.float32))))
    np.testing.assert_allclose(train_mode.numpy(), eval_mode.numpy(), atol=1e-3)


def test_rebuilding_with_the_wrong_architecture_is_refused(class_folders: Path, tmp_path: Path):
    from ferkit.training.onnx_weights import members_from_onnx

    path = _tiny_export(class_folders, tmp_path)
    with pytest.raises(ModelError):
        members_from_onnx(path, ["fernet_m"], np.zeros((4, 48, 48), np.uint8))


def test_distillation_caches_the_teacher_once_and_learns_from_it(class_folders: Path, tmp_path: Path,
                                                                  monkeypatch):
    import ferkit.training.distill as distill

    teacher = _tiny_export(class_folders, tmp_path)
    cfg = tiny_cfg(class_folders, tmp_path / "student", epochs=1, max_steps=3, teacher=str(teacher),
                   kd_weight=0.5, kd_temperature=3.0, kd_views="flip")
    train(cfg, progress=False)
    cache = tmp_path / "student" / "teacher.npz"
    logits, prov = distill.load_cache(cache)
    assert logits.shape == (42, 7) and prov["teacher"] == str(teacher) and prov["views"] == "flip"
    assert prov["images_sha1"] and prov["teacher_sha256"] and prov["date"]
    ck = torch.load(tmp_path / "student" / "best.pt", weights_only=True)
    assert ck["teacher"]["teacher_sha256"] == prov["teacher_sha256"]
    assert ck["config"]["teacher"] == str(teacher) and ck["config"]["kd_weight"] == 0.5
    # the cache's logits are the teacher's own (same views as the graph: flip)
    from ferkit.training.data import load_faces
    from ferkit.training.evaluation import predict_logits

    train_images = load_faces(class_folders, "train").images
    np.testing.assert_allclose(logits, predict_logits(teacher, train_images), atol=1e-3)
    # a second run reuses it without running the teacher; a different teacher file is never reused silently
    def teacher_ran(*args, **kwargs):
        raise RuntimeError("teacher ran again")

    monkeypatch.setattr(distill, "compute_teacher_logits", teacher_ran)
    train(replace(cfg, out=str(tmp_path / "again"), teacher_cache=str(cache)), progress=False)
    other = tmp_path / "other.onnx"
    other.write_bytes(teacher.read_bytes() + b"\0")
    other.with_suffix(".json").write_text(teacher.with_suffix(".json").read_text())
    with pytest.raises(RuntimeError, match="teacher ran again"):
        train(replace(cfg, out=str(tmp_path / "third"), teacher=str(other), teacher_cache=str(cache)),
              progress=False)


def test_online_teacher_sees_exactly_the_augmented_batch_the_student_sees(class_folders: Path, tmp_path: Path):
    from ferkit.training.loop import _build, _train_step

    cfg = tiny_cfg(class_folders, tmp_path, teacher="unused", kd_views="online", kd_weight=1.0)
    student, opt, _ = _build(cfg, torch.device("cpu"))
    seen = {}
    student.register_forward_pre_hook(lambda m, args: seen.__setitem__("student", args[0].detach().clone()))

    class Teacher(torch.nn.Module):
        def forward(self, x):
            seen["teacher"] = x.detach().clone()
            return torch.zeros(len(x), 7)

    x = torch.randint(0, 256, (8, 1, 48, 48), dtype=torch.uint8)
    y = torch.zeros(8, dtype=torch.long)
    _train_step(student, opt, x, y, cfg, torch.Generator().manual_seed(0), None, False, 0, teacher=Teacher())
    assert torch.equal(seen["teacher"], seen["student"])
    from ferkit.core.preprocess import normalize
    assert not torch.allclose(seen["student"], normalize(x.float()))  # augmented, not the raw batch


def test_online_distillation_runs_the_teacher_per_batch_and_caches_nothing(class_folders: Path, tmp_path: Path):
    teacher = _tiny_export(class_folders, tmp_path)
    cfg = tiny_cfg(class_folders, tmp_path / "student", epochs=1, max_steps=2, teacher=str(teacher),
                   kd_views="online")
    train(cfg, progress=False)
    assert not (tmp_path / "student" / "teacher.npz").exists()
    ck = torch.load(tmp_path / "student" / "best.pt", weights_only=True)
    assert ck["teacher"]["views"] == "online" and ck["teacher"]["teacher_sha256"]
    from ferkit.core.machine import NATIVE_INT8_FLAGS, cpu_info
    from ferkit.core.runtime import available_runtimes

    runs_on = "OpenVINO" if "openvino" in available_runtimes() else "PyTorch"  # the faster one on a CPU
    assert f"run by {runs_on}" in ck["teacher"]["views_detail"]
    int8 = runs_on == "OpenVINO" and any(f in cpu_info()[1] for f in NATIVE_INT8_FLAGS)  # where int8 pays
    assert ("int8 calibrated on" in ck["teacher"]["views_detail"]) == int8


def test_compiled_teacher_computes_what_the_eager_teacher_does(class_folders: Path, tmp_path: Path):
    from ferkit.core.classification import resolve_model
    from ferkit.core.preprocess import normalize
    from ferkit.training.distill import CompiledTeacher, torch_teacher

    pytest.importorskip("openvino", reason="the compiled teacher runs on OpenVINO (pip install openvino)")
    teacher = _tiny_export(class_folders, tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    eager = torch_teacher(resolve_model(str(teacher)), images, "none")
    x = normalize(torch.from_numpy(images[:, None]).float())
    with torch.no_grad():
        want = eager(x)
    got = CompiledTeacher(eager, 48, threads=1)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    # OpenVINO may compute in bf16 where the CPU has it natively: close, not bit-equal
    assert torch.allclose(got, want, atol=0.05 * float(want.abs().max()) + 1e-3)
    assert CompiledTeacher(eager, 48)(x[:3]).shape == (3, 7)  # any batch size

    int8 = CompiledTeacher(eager, 48, threads=1, calib=images[:32])(x)  # static int8, calibrated on faces
    assert int8.shape == want.shape and int8.dtype == torch.float32
    p, q = torch.softmax(int8 / 2, 1), torch.softmax(want / 2, 1)  # soft targets at a KD temperature of 2
    assert float((p - q).abs().max()) < 0.1 and float((int8.argmax(1) == want.argmax(1)).float().mean()) >= 0.9


def test_kd_loss_is_zero_only_when_the_student_matches_the_teacher():
    from ferkit.training.loop import _kd_loss

    t = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 1.0]])
    assert float(_kd_loss(t.clone(), t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(_kd_loss(torch.zeros_like(t), t, 2.0)) > 0.01


def test_init_from_a_single_model_onnx_export(class_folders: Path, tmp_path: Path):
    from ferkit.core.classification import EmotionClassifier
    from ferkit.training.evaluation import predict_logits

    teacher = _tiny_export(class_folders, tmp_path)
    cfg = tiny_cfg(class_folders, tmp_path / "ft", epochs=1, max_steps=1, init=str(teacher), lr=0.0, ema=0,
                   schedule="cosine")
    train(cfg, progress=False)
    model, _ = load_checkpoint(tmp_path / "ft" / "best.pt")
    images = np.random.default_rng(2).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    from ferkit.core.preprocess import normalize

    x = torch.from_numpy(normalize(images[:, None].astype(np.float32)))
    with torch.no_grad():
        flip = ((model(x) + model(x.flip(3))) / 2).numpy()
    # lr 0 and one step: only BN running stats moved (momentum 0.1 on one batch), so outputs stay close
    ref = EmotionClassifier(teacher, calibrated=False).logits(x.numpy())
    assert (flip.argmax(1) == ref.argmax(1)).mean() >= 0.6
    assert predict_logits(teacher, images).shape == (5, 7)


def test_views_run_by_the_runtime_match_views_inside_the_graph(tmp_path: Path):
    """A one-view graph whose sidecar says ``"tta_in_graph": false`` gives the logits of the same network
    exported with the views inside, for flip and ten-crop."""
    from ferkit.core.classification import EmotionClassifier
    from ferkit.core.preprocess import prepare_batch
    from ferkit.training.architectures import create_architecture
    from ferkit.training.export import to_onnx

    torch.manual_seed(0)
    net = create_architecture("fernet_s").eval()
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    x = prepare_batch(list(faces), 48)
    to_onnx([net], tmp_path / "one.onnx", tta="none")
    for tta in ("flip", "tencrop"):
        to_onnx([net], tmp_path / f"{tta}.onnx", tta=tta)
        inside = EmotionClassifier(tmp_path / f"{tta}.onnx", runtime="onnxruntime").logits(x)
        (tmp_path / "one.json").write_text(json.dumps({"tta": tta, "tta_in_graph": False}))
        outside = EmotionClassifier(tmp_path / "one.onnx", runtime="onnxruntime")
        assert outside.runtime_views == {"flip": 2, "tencrop": 10}[tta]
        # ten-crop's resize is bilinear in both; OpenCV's and torch's differ in the last bits
        np.testing.assert_allclose(outside.logits(x), inside, atol=1e-4 if tta == "flip" else 2e-2)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what a hostile .pt does: any callable, here one that creates a file
        return open, (str(self.marker), "w")


def test_checkpoints_are_read_without_running_code(class_folders: Path, tmp_path: Path):
    from ferkit.training.checkpoint import read_checkpoint
    from ferkit.training.export import export_onnx

    out = tmp_path / "run"
    train(tiny_cfg(class_folders, out, epochs=1, max_steps=2), progress=False)
    ck = read_checkpoint(out / "best.pt")  # ferkit's own checkpoints hold only tensors and plain values
    marker = tmp_path / "code_ran"
    ck["note"] = _RunsCodeWhenUnpickled(marker)
    torch.save(ck, tmp_path / "hostile.pt")
    with pytest.raises(ModelError, match=r"refused: it holds Python objects .*\(io.open\)"):
        export_onnx(tmp_path / "hostile.pt", tmp_path / "m.onnx", progress=False)
    with pytest.raises(ModelError, match="refused"):
        train(tiny_cfg(class_folders, tmp_path / "ft", epochs=1, max_steps=1, init=str(tmp_path / "hostile.pt")),
              progress=False)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    ck["note"] = np.float64(0.5)  # numpy scalars are values: read back, nothing refused
    torch.save(ck, tmp_path / "numpy.pt")
    assert read_checkpoint(tmp_path / "numpy.pt")["note"] == 0.5
