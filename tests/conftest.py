"""Shared fixtures: tiny synthetic FER-style data sets in the three layouts, and real faces
from scikit-image's public-domain NASA portrait."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.core.labels import CSV_IDS, EMOTIONS, PREFIXES


def synthetic_faces(n_per_class: int = 6, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey images whose class is visible (a bar at a class-specific height), so a tiny model can learn it."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(len(EMOTIONS)):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            y = 3 + c * (size - 6) // len(EMOTIONS)
            img[y:y + 4, 4:-4] = 230
            images.append(img)
            labels.append(c)
    return np.stack(images), np.array(labels)


@pytest.fixture(scope="session")
def faces_arrays():
    return synthetic_faces()


@pytest.fixture()
def class_folders(tmp_path: Path, faces_arrays) -> Path:
    """tmp/fer/{train,val}/<emotion>/*.jpg"""
    images, labels = faces_arrays
    root = tmp_path / "fer"
    for split in ("train", "val"):
        for i, (img, lab) in enumerate(zip(images, labels)):
            d = root / split / EMOTIONS[lab]
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{split}_{i}.png"), img)
    return root


@pytest.fixture()
def fer_csv(tmp_path: Path, faces_arrays) -> Path:
    images, labels = faces_arrays
    ids = {v: k for k, v in CSV_IDS.items()}
    path = tmp_path / "fer2013.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, (img, lab) in enumerate(zip(images, labels)):
            usage = ("Training", "PublicTest", "PrivateTest")[i % 3]
            w.writerow([ids[EMOTIONS[lab]], " ".join(map(str, img.ravel())), usage])
    return path


@pytest.fixture()
def prefix_folder(tmp_path: Path, faces_arrays) -> Path:
    images, labels = faces_arrays
    codes = {v: k for k, v in PREFIXES.items()}
    root = tmp_path / "flat"
    root.mkdir()
    for i, (img, lab) in enumerate(zip(images, labels)):
        cv2.imwrite(str(root / f"{codes[EMOTIONS[lab]]}{i:04d}.jpg"), img)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """BGR 512×512 portrait with one frontal face (public domain, NASA)."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


#: Hand-measured face box (x, y, w, h) in skimage.data.astronaut().
ASTRONAUT_FACE = (165, 70, 110, 140)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronauts.jpg"
