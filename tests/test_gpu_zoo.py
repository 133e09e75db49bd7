"""scripts/gpu_zoo.py: the packed arrays must come back as exactly the same FER2013 through fer2013.csv."""

import importlib.util
import lzma
from pathlib import Path

import numpy as np

from ferkit.data import load_faces

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
    from ferkit.models import list_models

    zoo = _zoo()
    for name, flags in zoo.ZOO.items():
        assert flags[flags.index("--model") + 1] in list_models(), name
    assert set(zoo.SHIP) <= set(zoo.ZOO)
