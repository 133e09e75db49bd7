"""Face-box data sets in four layouts → one list of :class:`BoxSample` (numpy only, no torch).

- **ferkit JSON** (``annotations.json``, as ``../shared/facedet``):
  ``{"images": [{"file", "width", "height", "fold", "boxes": [[x, y, w, h], ...]}, ...]}``, ``file``
  relative to ``images/`` beside the JSON (or to the JSON's folder when there is no ``images/``).
- **WIDER FACE**: ``wider_face_split/wider_face_{train,val}_bbx_gt.txt`` and
  ``WIDER_{train,val}/images/<event>/<file>.jpg``; boxes flagged ``invalid`` are dropped.
- **FDDB**: ``FDDB-folds/FDDB-fold-XX-ellipseList.txt`` (or the lists at the top) and
  ``originalPics/<name>.jpg``; each head ellipse becomes its tight axis-aligned box, clipped to
  the image (the same conversion as ``../shared/facedet``'s README). The fold is ``XX``.
- **Pascal VOC**: ``Annotations/*.xml`` and ``JPEGImages/``; objects named ``face`` (any case), or
  every object when ``classes`` is empty; ``difficult`` objects are dropped.

Boxes are ``(x, y, w, h)`` pixels, top-left corner, float.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.errors import ConfigError, DataError

FORMATS = ("json", "wider", "fddb", "voc")


@dataclass
class BoxSample:
    """One annotated image: where it is, its key (path relative to the data root) and its face boxes."""

    path: Path
    key: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    fold: int | None = None


def parse_folds(text: str | None) -> list[int] | None:
    """``"1,2,3"`` or ``"1-3"`` → ``[1, 2, 3]``; None/empty → None (all folds)."""
    if not text:
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"--folds must be numbers like 1,2,3 or 1-3, got {text!r}") from None
    return sorted(set(out))


def detect_format(root: Path) -> str:
    """Which of :data:`FORMATS` the file or folder ``root`` is in.

    Raises:
        ferkit.errors.DataError: missing, or none of the four layouts.
    """
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "json"
        if root.name.endswith("ellipseList.txt"):
            return "fddb"
        raise DataError(f"{root}: not an annotations.json or an FDDB ellipse list")
    if (root / "annotations.json").is_file():
        return "json"
    if (root / "wider_face_split").is_dir():
        return "wider"
    if _fddb_lists(root):
        return "fddb"
    if (root / "Annotations").is_dir():
        return "voc"
    raise DataError(f"{root}: not a face-box data set (expected annotations.json, wider_face_split/, "
                    "FDDB-fold-XX-ellipseList.txt files or VOC Annotations/ + JPEGImages/)")


def load_boxes(root: str | Path, split: str = "train", folds: list[int] | None = None, fmt: str | None = None,
               classes: tuple[str, ...] = ("face",)) -> list[BoxSample]:
    """Read a face-box data set (any of :data:`FORMATS`, guessed from the layout unless ``fmt``).

    split: WIDER FACE's ``train`` or ``val`` (ignored by the other layouts).
    folds: keep only these folds (ferkit JSON and FDDB carry folds; others raise ConfigError).

    Raises:
        ferkit.errors.DataError: missing, malformed or empty (after the fold selection).
        ferkit.errors.ConfigError: folds asked of a layout without folds; unknown ``fmt``.
    """
    root = Path(root)
    fmt = fmt or detect_format(root)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if fmt == "json":
        samples = _read_json(root / "annotations.json" if root.is_dir() else root)
    elif fmt == "wider":
        samples = _read_wider(root, split)
    elif fmt == "fddb":
        samples = _read_fddb(root)
    else:
        samples = _read_voc(root, classes)
    if folds is not None:
        if any(s.fold is None for s in samples):
            raise ConfigError(f"{root}: --folds needs a layout with folds (ferkit JSON or FDDB), not {fmt}")
        samples = [s for s in samples if s.fold in folds]
    if not samples:
        raise DataError(f"{root}: no annotated images" + (f" in folds {folds}" if folds else ""))
    return samples


def _boxes(rows, where: str) -> np.ndarray:
    try:
        b = np.asarray(rows, np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        raise DataError(f"{where}: boxes must be [[x, y, w, h], ...]") from None
    return b[(b[:, 2] > 0) & (b[:, 3] > 0)]


def _read_json(path: Path) -> list[BoxSample]:
    try:
        images = json.loads(path.read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a ferkit annotations.json ({e.__class__.__name__}: {e})") from None
    base = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    out = []
    for i, r in enumerate(images):
        if not isinstance(r, dict) or "file" not in r:
            raise DataError(f"{path}: images[{i}] has no \"file\"")
        fold = r.get("fold")
        out.append(BoxSample(base / r["file"], r["file"], _boxes(r.get("boxes", []), f"{path}: {r['file']}"),
                             None if fold is None else int(fold)))
    return out


def _read_wider(root: Path, split: str) -> list[BoxSample]:
    if split not in ("train", "val"):
        raise ConfigError(f"WIDER FACE split must be train or val, got {split!r}")
    gt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    images = root / f"WIDER_{split}" / "images"
    if not gt.is_file():
        raise DataError(f"{gt}: WIDER FACE annotation file not found")
    lines = [ln.strip() for ln in gt.read_text().splitlines()]
    out, i = [], 0
    try:
        while i < len(lines):
            if not lines[i]:
                i += 1
                continue
            name, n = lines[i], int(lines[i + 1])
            rows = [lines[i + 2 + k].split() for k in range(max(n, 1))]  # a face count of 0 still has one line
            i += 2 + max(n, 1)
            boxes = []
            for r in rows[:n]:
                x, y, w, h = (float(v) for v in r[:4])
                invalid = len(r) > 7 and r[7] == "1"
                if not invalid and w > 0 and h > 0:
                    boxes.append([x, y, w, h])
            out.append(BoxSample(images / name, name, _boxes(boxes, str(gt))))
    except (IndexError, ValueError):
        raise DataError(f"{gt}: malformed near line {i + 1}") from None
    return out


def _fddb_lists(root: Path) -> list[Path]:
    pattern = "FDDB-fold-*-ellipseList.txt"
    return sorted(root.glob(pattern)) + sorted(root.glob(f"FDDB-folds/{pattern}"))


def ellipse_to_box(major: float, minor: float, angle: float, cx: float, cy: float,
                   width: int | None = None, height: int | None = None) -> list[float]:
    """FDDB ellipse (major/minor *radius*, angle in radians, centre) → tight ``[x, y, w, h]``, clipped."""
    # FDDB's angle is the major axis's from the x axis (about ±π/2 for an upright head).
    hw = math.sqrt((major * math.cos(angle)) ** 2 + (minor * math.sin(angle)) ** 2)
    hh = math.sqrt((major * math.sin(angle)) ** 2 + (minor * math.cos(angle)) ** 2)
    x1, y1, x2, y2 = cx - hw, cy - hh, cx + hw, cy + hh
    if width is not None and height is not None:
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    return [x1, y1, x2 - x1, y2 - y1]


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:  # unreadable: the training loop reports the image when it loads it
        return None


def _read_fddb(root: Path) -> list[BoxSample]:
    lists = [root] if root.is_file() else _fddb_lists(root)
    base = root.parent if root.is_file() else root
    pics = base / "originalPics" if (base / "originalPics").is_dir() else base
    out = []
    for lst in lists:
        m = re.search(r"fold-(\d+)", lst.name)
        fold = int(m.group(1)) if m else None
        lines = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        i = 0
        try:
            while i < len(lines):
                name, n = lines[i], int(lines[i + 1])
                path = pics / f"{name}.jpg"
                size = _image_size(path)
                boxes = []
                for k in range(n):
                    major, minor, angle, cx, cy = (float(v) for v in lines[i + 2 + k].split()[:5])
                    boxes.append(ellipse_to_box(major, minor, angle, cx, cy, *(size or (None, None))))
                i += 2 + n
                out.append(BoxSample(path, f"{name}.jpg", _boxes(boxes, str(lst)), fold))
        except (IndexError, ValueError):
            raise DataError(f"{lst}: malformed near line {i + 1}") from None
    return out


def _read_voc(root: Path, classes: tuple[str, ...]) -> list[BoxSample]:
    wanted = {c.lower() for c in classes}
    out = []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
            name = tree.findtext("filename") or f"{xml.stem}.jpg"
            boxes = []
            for obj in tree.iter("object"):
                if wanted and (obj.findtext("name") or "").strip().lower() not in wanted:
                    continue
                if (obj.findtext("difficult") or "0").strip() == "1":
                    continue
                bb = obj.find("bndbox")
                x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                boxes.append([x1, y1, x2 - x1, y2 - y1])
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise DataError(f"{xml}: malformed VOC annotation ({e})") from None
        out.append(BoxSample(root / "JPEGImages" / name, name, _boxes(boxes, str(xml))))
    return out
