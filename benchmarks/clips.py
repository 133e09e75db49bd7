"""Benchmark clips made of real photos that move, with exact per-frame ground truth (FDDB, ``../shared/facedet``).

Each clip is a camera's view of whole FDDB photos laid out in a scene: panned across, zoomed into, sliding in
and out, crossing in front of each other, cut to another scene; faces from about 20 to 130 px. Every pasted
photo keeps its annotated face boxes, mapped through the same scale and offset, so every frame's true boxes are
known exactly. A face is in the ground truth on a frame when at least half of its box is inside the picture and
not covered by a photo in front of it. The photos are read in place, never copied into the repository; clips
are written to a work folder (mp4v, 30 frames/s) with a ``.gt.json`` beside each.

    python benchmarks/clips.py /tmp/ferkit_clips          # write every clip at 640×480 and 1280×720
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import FACEDET, load_annotations  # noqa: E402

#: One photo placed on one frame: (layer name, FDDB file, scale, x offset, y offset), in design coordinates
#: (a 640×480 view; other sizes scale it). Later placements are in front of earlier ones.
Placement = tuple[str, str, float, float, float]
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
FPS = 30.0
MIN_VISIBLE = 0.5  # fraction of a face box that must be inside the picture and uncovered to count
#: Real faces FDDB does not annotate, as ``[x, y, w, h]`` in the photo, found by running the detector over the
#: clips' photos and looking at each detection without a box: scored as MOT "ignore regions" (a reported face
#: there is neither a hit nor a false positive), since neither finding nor skipping them is wrong.
UNANNOTATED = {
    "2002/08/03/big/img_404.jpg": [[12, 106, 58, 96]],  # a blurred spectator in a cap, left of the singer
}


@dataclass
class Clip:
    """A benchmark clip: ``placements(frame)`` says where each photo is on each of ``frames`` frames."""

    name: str
    frames: int
    placements: Callable[[int], list[Placement]]
    description: str


def _ease(t: float) -> float:
    """0 → 1 → 0 smoothly over t in [0, 1] (a camera that goes and comes back)."""
    return 0.5 - 0.5 * math.cos(2 * math.pi * t)


# ---------------------------------------------------------------------------- the clips

A2 = "2002/07/19/big/img_356.jpg"  # 2 faces
B2 = "2002/07/19/big/img_426.jpg"  # 2 faces
C3 = "2002/08/02/big/img_630.jpg"  # 3 faces
D2 = "2002/07/19/big/img_135.jpg"  # 2 faces
E2 = "2002/07/19/big/img_414.jpg"  # 2 faces
F1 = "2002/07/19/big/img_392.jpg"  # 1 face
G1 = "2002/08/03/big/img_404.jpg"  # 1 face
H3 = "2002/08/01/big/img_1818.jpg"  # 3 faces
I2 = "2002/07/19/big/img_372.jpg"  # 2 faces (60, 44 px)
J2 = "2002/08/02/big/img_452.jpg"  # 2 faces
K2 = "2002/08/03/big/img_314.jpg"  # 2 faces
L1 = "2002/07/20/big/img_148.jpg"  # 1 face
M1 = "2002/08/01/big/img_1311.jpg"  # 1 face


def _pan(f: int) -> list[Placement]:
    # Two photos side by side, 1.15× (faces 80-105 px), world 1035 px wide: the camera pans right and back.
    off = -395 * _ease(f / 300)
    return [("a", A2, 1.15, off, 60), ("b", B2, 1.15, off + 520, 70)]


def _zoom(f: int) -> list[Placement]:
    # One photo, zoom 0.55× → 1.45× → 0.55× about the picture centre (faces 40-125 px).
    s = 0.55 + 0.9 * _ease(f / 300)
    return [("c", C3, s, 320 - 225 * s, 240 - 177 * s)]


def _enter_leave(f: int) -> list[Placement]:
    # One photo slides in from the left and out at the right; another comes in from the right and stops.
    out = [("d", D2, 0.8, -300 + 4.2 * f, 60)]
    if f >= 120:
        out.append(("e", E2, 0.8, max(640 - 4.0 * (f - 120), 360), 80))
    return out


def _crossing(f: int) -> list[Placement]:
    # Two one-face photos cross in opposite directions; the second passes in front of the first.
    return [("f", F1, 0.7, -120 + 2.6 * f, 120), ("g", G1, 0.6, 620 - 2.6 * f, 150)]


def _cut(f: int) -> list[Placement]:
    # Scene 1 (two photos drifting), then a hard cut at frame 150 to scene 2 (two other photos).
    if f < 150:
        return [("h", H3, 0.7, 10 + 0.3 * f, 80), ("j", J2, 0.6, 330, 150 - 0.2 * f)]
    g = f - 150
    return [("k", K2, 0.75, 20 + 0.4 * g, 60), ("l", L1, 0.8, 380 - 0.3 * g, 80)]


def _small(f: int) -> list[Placement]:
    # Faces of 20-35 px: four photos at a third of their size, drifting gently in their quadrants.
    t = f / 30
    return [("i", I2, 0.45, 60 + 30 * math.sin(0.8 * t), 40),
            ("m", M1, 0.28, 420 + 25 * math.sin(0.6 * t + 1), 60),
            ("l", L1, 0.3, 90 + 20 * math.sin(0.7 * t + 2), 300),
            ("f", F1, 0.3, 400 + 30 * math.sin(0.5 * t + 3), 310)]


def _slide5(f: int) -> list[Placement]:
    # The clip: two photos, 5 real faces (two of them small), sliding gently sideways.
    dx = 60 * math.sin(2 * math.pi * f / 300)
    return [("h", H3, 0.75, 40 + dx, 70), ("i", I2, 0.5, 380 + dx, 150)]


CLIPS = [
    Clip("pan", 300, _pan, "camera pans across two photos and back; faces leave and re-enter at the edges"),
    Clip("zoom", 300, _zoom, "zoom 0.55x to 1.45x and back on a three-face photo"),
    Clip("enter_leave", 300, _enter_leave, "a photo slides through the picture; another slides in and stops"),
    Clip("crossing", 300, _crossing, "two faces cross, one passing in front of the other"),
    Clip("cut", 300, _cut, "two photos, hard cut at frame 150 to two other photos"),
    Clip("small", 300, _small, "five faces of 20-35 px drifting"),
    Clip("slide5", 600, _slide5, "issue 12's clip: 5 real faces, two small, sliding gently sideways"),
]


# ---------------------------------------------------------------------------- rendering and ground truth


class _Photos:
    """FDDB photos and their boxes, read once."""

    def __init__(self, root: Path = FACEDET):
        self.root = root
        self.boxes = {e["file"]: e["boxes"] for e in load_annotations(root)}
        self._img: dict[str, np.ndarray] = {}

    def image(self, file: str) -> np.ndarray:
        if file not in self._img:
            img = cv2.imread(str(self.root / "images" / file), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"{self.root / 'images' / file}: cannot read (is ../shared/facedet here?)")
            self._img[file] = img
        return self._img[file]


def _background(w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(12)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 9)
    grey = 110 + 14 * noise / max(float(np.abs(noise).max()), 1e-6)
    return np.clip(np.repeat(grey[:, :, None], 3, 2), 0, 255).astype(np.uint8)


def _to_frame(p: Placement, size: tuple[int, int]) -> tuple[float, float, float]:
    """Design coordinates (640×480) → this size: scale by height, centre horizontally."""
    w, h = size
    k = h / 480
    _, _, s, ox, oy = p
    return s * k, ox * k + (w - 640 * k) / 2, oy * k


def _visible_fraction(box: np.ndarray, size: tuple[int, int], covers: list[np.ndarray]) -> float:
    """Share of ``box`` (x0, y0, x1, y1) inside the picture and not under any rectangle in ``covers``."""
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    w, h = size
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return 0.0
    mask = np.ones((int(math.ceil(cy1 - cy0)), int(math.ceil(cx1 - cx0))), bool)
    for c in covers:
        ix0, iy0 = int(max(c[0] - cx0, 0)), int(max(c[1] - cy0, 0))
        ix1, iy1 = int(max(min(c[2] - cx0, mask.shape[1]), 0)), int(max(min(c[3] - cy0, mask.shape[0]), 0))
        mask[iy0:iy1, ix0:ix1] = False
    return float(mask.sum()) / area


def render_frame(clip: Clip, f: int, size: tuple[int, int], photos: _Photos, bg: np.ndarray):
    """Frame ``f`` of ``clip`` at ``size``, its truth ``[(face id, [x, y, w, h]), ...]`` and its ignore regions."""
    frame = bg.copy()
    placed = []
    for p in clip.placements(f):
        s, ox, oy = _to_frame(p, size)
        img = photos.image(p[1])
        m = np.array([[s, 0, ox], [0, s, oy]], np.float32)
        cv2.warpAffine(img, m, size, dst=frame, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        rect = np.array([ox, oy, ox + img.shape[1] * s, oy + img.shape[0] * s])
        placed.append((p, s, ox, oy, rect))
    truth, ignore = [], []
    for i, (p, s, ox, oy, _) in enumerate(placed):
        covers = [r for *_, r in placed[i + 1:]]
        for j, (x, y, w, h) in enumerate(photos.boxes[p[1]]):
            box = _placed_box((x, y, w, h), s, ox, oy)
            if _visible_fraction(box, size, covers) >= MIN_VISIBLE:
                truth.append((f"{p[0]}{j}", _xywh(box)))
        for x, y, w, h in UNANNOTATED.get(p[1], []):
            box = _placed_box((x, y, w, h), s, ox, oy)
            if _visible_fraction(box, size, covers) > 0:
                ignore.append(_xywh(box))
    return frame, truth, ignore


def _placed_box(xywh, s: float, ox: float, oy: float) -> np.ndarray:
    """A photo's ``[x, y, w, h]`` box → corners in the frame, for a photo scaled by ``s`` at ``(ox, oy)``."""
    x, y, w, h = xywh
    return np.array([ox + x * s, oy + y * s, ox + (x + w) * s, oy + (y + h) * s])


def _xywh(box: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])]


def write_clip(clip: Clip, size_name: str, folder: Path, photos: _Photos | None = None) -> tuple[Path, Path]:
    """Write ``<folder>/<clip>_<size>.mp4`` and its ground truth ``.gt.json`` (skipped when both exist)."""
    size = SIZES[size_name]
    video = folder / f"{clip.name}_{size_name}.mp4"
    gt_path = video.with_suffix(".gt.json")
    if video.exists() and gt_path.exists() and "ignore" in json.loads(gt_path.read_text()):
        return video, gt_path
    folder.mkdir(parents=True, exist_ok=True)
    photos = photos or _Photos()
    bg = _background(*size)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {video}")
    frames, ignore = [], []
    for f in range(clip.frames):
        img, truth, unannotated = render_frame(clip, f, size, photos, bg)
        writer.write(img)
        frames.append(truth)
        ignore.append(unannotated)
    writer.release()
    gt = {"clip": clip.name, "size": size_name, "fps": FPS, "description": clip.description,
          "faces": sorted({fid for fr in frames for fid, _ in fr}), "frames": frames, "ignore": ignore}
    gt_path.write_text(json.dumps(gt))
    return video, gt_path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ferkit_clips")
    photos = _Photos()
    for size_name in SIZES:
        for clip in CLIPS:
            video, gt_path = write_clip(clip, size_name, folder, photos)
            gt = json.loads(gt_path.read_text())
            sizes = [b[2] for fr in gt["frames"] for _, b in fr]
            print(f"{video}: {clip.frames} frames, {len(gt['faces'])} faces, "
                  f"face widths {min(sizes):.0f}-{max(sizes):.0f} px")


if __name__ == "__main__":
    main()
