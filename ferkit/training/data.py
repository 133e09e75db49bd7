"""FER2013 in the three forms users have, loaded into one in-memory form.

* class folders: ``ROOT/<emotion>/*.jpg`` (Kaggle re-packaging, ``../shared/fer2013``);
* the original ``fer2013.csv`` (``emotion,pixels,Usage``);
* the tutorial's flat folder, the class in the file-name prefix (``HA0001.jpg``).

Every loader returns a :class:`FaceSet`: uint8 grey images ``(N, S, S)``, int64
labels in :data:`ferkit.EMOTIONS` order and the source of each sample. Decoded
sets are cached as ``.npz`` so an epoch is not bound by JPEG decoding.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ferkit.core.files import check_input_file, read_bounded
from ferkit.core.images import IMAGE_SUFFIXES, max_file_bytes
from ferkit.core.labels import CSV_IDS, EMOTIONS, PREFIXES, canonical
from ferkit.core.preprocess import INPUT_SIZE
from ferkit.core.runtime import cache_dir
from ferkit.errors import ConfigError, DataError

CSV_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


@dataclass
class FaceSet:
    """Grey face images with labels (index into :data:`EMOTIONS`)."""

    images: np.ndarray  # (N, S, S) uint8
    labels: np.ndarray  # (N,) int64
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason" of samples left out

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Number of samples per emotion."""
        return {e: int((self.labels == i).sum()) for i, e in enumerate(EMOTIONS)}

    def subset(self, idx: np.ndarray) -> FaceSet:
        return FaceSet(self.images[idx], self.labels[idx], [self.sources[i] for i in idx] if self.sources else [])


def _read_grey(path: Path, size: int) -> np.ndarray:
    check_input_file(path, DataError, "an image")  # a link to /dev/zero in a class folder would never end
    with open(path, "rb") as fh:
        data = np.frombuffer(read_bounded(fh, max_file_bytes(), str(path), DataError), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image")
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _load_files(items: list[tuple[Path, int]], size: int, skip_bad: bool, progress: bool) -> FaceSet:
    images = np.empty((len(items), size, size), np.uint8)
    labels = np.empty(len(items), np.int64)
    sources, skipped = [], []
    n = 0
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc="decoding images", unit="img", leave=False)
    for path, label in it:
        try:
            images[n] = _read_grey(path, size)
        except DataError as e:
            if not skip_bad:
                raise DataError(f"{e} (pass skip_bad=True / --skip-bad to leave such files out)") from None
            skipped.append(str(e))
            continue
        labels[n] = label
        sources.append(str(path))
        n += 1
    return FaceSet(images[:n], labels[:n], sources, skipped)


def _list_class_folders(root: Path, skip_bad: bool) -> tuple[list[tuple[Path, int]], list[str]]:
    items, skipped = [], []
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    for d in subdirs:
        emo = canonical(d.name)
        if emo is None:
            msg = f"{d}: unknown class folder {d.name!r}; expected one of {', '.join(EMOTIONS)}"
            if not skip_bad:
                raise DataError(msg + " (or pass --skip-bad)")
            skipped.append(msg)
            continue
        label = EMOTIONS.index(emo)
        items += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return items, skipped


def _list_prefix_folder(root: Path, skip_bad: bool) -> tuple[list[tuple[Path, int]], list[str]]:
    items, skipped = [], []
    for f in sorted(root.iterdir()):
        if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        emo = PREFIXES.get(f.name[:2].upper())
        if emo is None:
            msg = f"{f}: file name does not start with a class prefix ({', '.join(PREFIXES)})"
            if not skip_bad:
                raise DataError(msg + " (or pass --skip-bad)")
            skipped.append(msg)
            continue
        items.append((f, EMOTIONS.index(emo)))
    return items, skipped


def detect_layout(path: str | Path) -> str:
    """``"csv"``, ``"folders"`` (class sub-folders) or ``"prefix"`` (flat, prefixed names)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{p}: expected a folder of images or a fer2013.csv file")
    if any(x.is_dir() for x in p.iterdir()):
        return "folders"
    return "prefix"


def load_faces(path: str | Path, split: str | None = None, size: int = INPUT_SIZE, skip_bad: bool = False,
               cache: bool = True, progress: bool = True) -> FaceSet:
    """Load a FER2013-style data set in any of the three layouts.

    Args:
        path: class-folder root, flat prefixed folder, or ``fer2013.csv``. For a
            folder with ``train/`` / ``val/`` / ``test/`` sub-folders, pass ``split``.
        split: ``train``, ``val`` or ``test``; for CSV selects the ``Usage`` rows
            (Training / PublicTest / PrivateTest), for folders the sub-folder.
        skip_bad: leave out (and count in ``FaceSet.skipped``) unreadable images and
            unknown class names instead of raising :class:`DataError`.
        cache: keep a decoded ``.npz`` copy under ``$FERKIT_CACHE`` (default ``~/.cache/ferkit``).
    """
    p = Path(path)
    layout = detect_layout(p)
    if layout == "csv":
        return _load_csv(p, split, size)
    if split is not None and (p / split).is_dir():
        p = p / split
    elif split is not None and canonical(split) is None and not any(canonical(d.name) for d in p.iterdir()):
        raise DataError(f"{p}: has no {split!r} sub-folder")
    layout = detect_layout(p)
    items, skipped = (_list_class_folders if layout == "folders" else _list_prefix_folder)(p, skip_bad)
    if not items:
        raise DataError(f"{p}: no images found ({layout} layout)")
    key = hashlib.sha1(repr((str(p.resolve()), size, skip_bad, len(items),
                             [(str(f), f.stat().st_size, lab) for f, lab in items])).encode()).hexdigest()[:16]
    cache_file = cache_dir() / f"faces-{key}.npz"
    if cache and cache_file.exists():
        z = np.load(cache_file, allow_pickle=False)
        fs = FaceSet(z["images"], z["labels"], list(z["sources"]), list(z["skipped"]))
    else:
        fs = _load_files(items, size, skip_bad, progress)
        fs.skipped = skipped + fs.skipped
        if cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(tmp, images=fs.images, labels=fs.labels, sources=np.array(fs.sources),
                     skipped=np.array(fs.skipped, dtype=str))
            tmp.replace(cache_file)
    if len(fs) == 0:
        raise DataError(f"{p}: no readable images")
    return fs


def _load_csv(path: Path, split: str | None, size: int) -> FaceSet:
    usage = CSV_USAGE.get(split, split) if split else None
    images, labels, sources = [], [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected emotion,pixels,Usage")
        for row_no, row in enumerate(reader, start=2):
            if usage and row.get("Usage") != usage:
                continue
            try:
                label = EMOTIONS.index(CSV_IDS[int(row["emotion"])])
                px = np.array(row["pixels"].split(), dtype=np.uint8)
                side = int(round(len(px) ** 0.5))
                img = px.reshape(side, side)
            except (KeyError, ValueError) as e:
                raise DataError(f"{path}, line {row_no}: bad row ({e})") from None
            if img.shape != (size, size):
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            images.append(img)
            labels.append(label)
            sources.append(f"{path.name}:{row_no}")
    if not images:
        raise DataError(f"{path}: no rows" + (f" with Usage={usage}" if usage else ""))
    return FaceSet(np.stack(images), np.array(labels, np.int64), sources)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (train, val) keeping each class's share in val at ``fraction``."""
    if not 0 < fraction < 1:
        raise ConfigError("fraction must be between 0 and 1")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
