from pathlib import Path

import numpy as np
import pytest

from ferkit.core.labels import EMOTIONS, PREFIXES
from ferkit.errors import DataError
from ferkit.training.data import detect_layout, load_faces, stratified_split


def test_class_folders_layout(class_folders: Path, faces_arrays):
    images, labels = faces_arrays
    fs = load_faces(class_folders, "train", progress=False)
    assert len(fs) == len(labels)
    assert fs.images.shape == (len(labels), 48, 48) and fs.images.dtype == np.uint8
    assert fs.counts() == {e: 6 for e in EMOTIONS}
    # labels follow the folder names
    for src, lab in zip(fs.sources, fs.labels):
        assert Path(src).parent.name == EMOTIONS[lab]


def test_csv_layout_maps_original_ids_and_usage(fer_csv: Path, faces_arrays):
    images, labels = faces_arrays
    train = load_faces(fer_csv, "train")
    val = load_faces(fer_csv, "val")
    test = load_faces(fer_csv, "test")
    assert len(train) + len(val) + len(test) == len(labels)
    # rows alternate Training/PublicTest/PrivateTest: row i keeps its label and pixels
    np.testing.assert_array_equal(train.labels, labels[0::3])
    np.testing.assert_array_equal(val.images, images[1::3])


def test_prefix_layout(prefix_folder: Path, faces_arrays):
    _, labels = faces_arrays
    fs = load_faces(prefix_folder, progress=False)
    assert detect_layout(prefix_folder) == "prefix"
    assert sorted(fs.labels.tolist()) == sorted(labels.tolist())
    for src, lab in zip(fs.sources, fs.labels):
        assert PREFIXES[Path(src).name[:2]] == EMOTIONS[lab]


def test_resizes_non_48_images(tmp_path: Path):
    import cv2

    d = tmp_path / "happy"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.zeros((100, 80), np.uint8))
    fs = load_faces(tmp_path, progress=False)
    assert fs.images.shape == (1, 48, 48)


def test_unknown_class_raises_or_skips(class_folders: Path):
    bad = class_folders / "train" / "contempt"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="contempt"):
        load_faces(class_folders, "train", progress=False)
    fs = load_faces(class_folders, "train", skip_bad=True, progress=False)
    assert len(fs) == 42 and any("contempt" in s for s in fs.skipped)


def test_unreadable_image_names_the_file(class_folders: Path):
    broken = class_folders / "train" / "happy" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_faces(class_folders, "train", progress=False)
    fs = load_faces(class_folders, "train", skip_bad=True, progress=False)
    assert len(fs) == 42 and len(fs.skipped) == 1


def test_a_device_in_a_class_folder_is_refused_not_read(class_folders: Path):
    link = class_folders / "train" / "happy" / "endless.png"
    link.symlink_to("/dev/zero")  # reading it whole would never end
    with pytest.raises(DataError, match="endless.png: is a device, not a file"):
        load_faces(class_folders, "train", progress=False)
    fs = load_faces(class_folders, "train", skip_bad=True, progress=False)
    assert len(fs) == 42 and len(fs.skipped) == 1 and fs.skipped[0].startswith(f"{link}: is a device")


def test_empty_and_missing(tmp_path: Path):
    with pytest.raises(DataError, match="no such"):
        load_faces(tmp_path / "nope")
    (tmp_path / "happy").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_faces(tmp_path, progress=False)


def test_cache_is_reused_and_invalidated(class_folders: Path, monkeypatch):
    a = load_faces(class_folders, "val", progress=False)
    import ferkit.training.data as data

    monkeypatch.setattr(data, "_load_files", lambda *a, **k: pytest.fail("decoded again despite cache"))
    b = load_faces(class_folders, "val", progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    monkeypatch.undo()
    import cv2

    cv2.imwrite(str(class_folders / "val" / "sad" / "new.png"), np.zeros((48, 48), np.uint8))
    assert len(load_faces(class_folders, "val", progress=False)) == len(a) + 1


def test_stratified_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(7), [100, 10, 50, 200, 80, 60, 40])
    tr, va = stratified_split(labels, 0.1, seed=3)
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    counts = np.bincount(labels[va], minlength=7)
    np.testing.assert_array_equal(counts, [10, 1, 5, 20, 8, 6, 4])
