"""scripts/gpu_zoo.py: the packed arrays must come back as exactly the same FER2013 through fer2013.csv."""

import importlib.util
import lzma
from pathlib import Path

import numpy as np

from ferkit.training.data import load_faces

ROOT = Path(__file__).resolve().parents[1]


def _zoo():
    spec = importlib.util.spec_from_file_location("gpu_zoo", ROOT / "scripts" / "gpu_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_and_csv_roundtrip_is_lossless(class_folders: Path, tmp_path: Path):
    zoo = _zoo()
    packed = tmp_path / "packed"
    zoo.pack(class_folders, packed)
    csv_path = tmp_path / "fer2013.csv"
    zoo.write_csv(packed, csv_path)
    for split in ("train", "val"):
        ref = load_faces(class_folders, split, cache=False, progress=False)
        got = load_faces(csv_path, split, progress=False)
        assert np.array_equal(got.images, ref.images) and np.array_equal(got.labels, ref.labels)
        raw = lzma.decompress((packed / f"{split}_x.u8.xz").read_bytes())
        assert len(raw) == ref.images.size


def test_every_zoo_run_names_a_registry_model():
    from ferkit.training.architectures import list_architectures

    zoo = _zoo()
    for name, flags in zoo.ZOO.items():
        assert flags[flags.index("--model") + 1] in list_architectures(), name
    assert set(zoo.SHIP) <= set(zoo.ZOO)


def test_every_zoo_run_is_a_valid_train_command():
    from ferkit.apps.cli import build_parser
    from ferkit.core.classification import resolve_model
    from ferkit.training.config import TrainConfig

    for name, flags in _zoo().ZOO.items():  # what `run` adds to every entry, as it adds it
        args = build_parser().parse_args(["train", *flags, "--data", "x.csv", "--out", "o", "--time-budget", "60"])
        cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})
        assert cfg.model == flags[flags.index("--model") + 1], name
        if cfg.teacher:
            assert resolve_model(cfg.teacher).path.is_file(), name  # the teacher ships with the package


def test_run_ships_only_this_calls_runs(class_folders: Path, tmp_path: Path, monkeypatch):
    """A warm machine keeps the work folder: a previous call's checkpoint must not come back again."""
    import torch

    zoo = _zoo()
    packed, work, out = tmp_path / "packed", tmp_path / "work", tmp_path / "out"
    zoo.pack(class_folders, packed)
    stale = work / "fernet_m_s1"
    stale.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(2)}, "config": {}, "device": "old"}, stale / "best.pt")
    (work / "fernet_m_s0").mkdir()
    (work / "fernet_m_s0" / "last.pt").write_bytes(b"from an earlier call")  # would be resumed
    started = []

    class FakeTrain:  # stands in for `ferkit train`: writes the best checkpoint its --out names
        def __init__(self, cmd, **kw):
            run_dir = Path(cmd[cmd.index("--out") + 1])
            started.append(run_dir.name)
            run_dir.mkdir(parents=True)
            torch.save({"model": {"w": torch.ones(2)}, "config": {}, "device": "NVIDIA X"}, run_dir / "best.pt")
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(zoo.subprocess, "Popen", FakeTrain)
    zoo.run(packed, out, budget=60, work=work, only=["fernet_m_s0"])
    assert started == ["fernet_m_s0"]
    assert sorted(p.name for p in out.glob("*.pt")) == ["fernet_m_s0.pt"]
    assert not (work / "fernet_m_s0" / "last.pt").exists()
    ck = torch.load(out / "fernet_m_s0.pt", weights_only=True)
    assert ck["model"]["w"].dtype == torch.float16
    assert ck["device"] == "one NVIDIA X shared by 1 concurrent runs (scripts/gpu_zoo.py)"
