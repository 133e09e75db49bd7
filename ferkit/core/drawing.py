"""Drawing results on images: emotion-coloured boxes with legible labels.

Readable faces get a solid box in their emotion's colour and a label such as
``happy 87%``; unreadable faces get a dashed grey box labelled with the reason.
Sizes scale with the image and the face so labels stay legible from thumbnails
to 4K frames; labels are kept inside the picture.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.core.labels import EMOTIONS, REASONS
from ferkit.core.results import Analysis, Face

#: BGR colour per emotion, chosen to be distinguishable and readable with black or white text.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 60),
    "fear": (160, 60, 150),
    "happy": (0, 200, 255),
    "neutral": (200, 200, 200),
    "sad": (200, 110, 30),
    "surprise": (0, 140, 255),
}
UNREADABLE_COLOR = (128, 128, 128)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Fonts with Chinese glyphs where systems usually keep them (Linux packages, macOS, Windows).
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc", "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/simhei.ttf",
)


def font_path(lang: str) -> str | None:
    """A font file that has ``lang``'s glyphs: ``$FERKIT_FONT`` if set, else a known system font; None for
    English (OpenCV's own font draws it) or when none is found (pictures then keep English labels)."""
    if lang == "en":
        return None
    chosen = os.environ.get("FERKIT_FONT")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    return next((f for f in CJK_FONTS if Path(f).is_file()), None)


FONT_HINT = ("no font with Chinese glyphs found, so labels on pictures stay in English (text and JSON are "
             "translated); install one (e.g. fonts-noto-cjk) or set FERKIT_FONT=/path/to/font.ttc")


@lru_cache(maxsize=32)
def _pil_font(path: str, size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def face_label(face: Face, lang: str = "en") -> str:
    """Label text for one face: ``happy 87%`` or ``unreadable: blurry`` (track id prefixed if any), in ``lang``."""
    prefix = f"#{face.track_id} " if face.track_id is not None else ""
    words = REASONS.get(lang, REASONS["en"])
    if face.probabilities is None:
        return f"{prefix}{words['unreadable']}: {words.get(face.quality.reason or '', face.quality.reason)}"
    return f"{prefix}{face.label if lang == face.lang else face.emotion} {face.confidence:.0%}"


def _dashed_rect(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color, thickness: int) -> None:
    dash = max(4, 3 * thickness)
    (x0, y0), (x1, y1) = p0, p1
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False),
                                    (y0, y1, x1, False)):
        for s in range(a, b, 2 * dash):
            e = min(s + dash, b)
            if horizontal:
                cv2.line(img, (s, fixed), (e, fixed), color, thickness, cv2.LINE_AA)
            else:
                cv2.line(img, (fixed, s), (fixed, e), color, thickness, cv2.LINE_AA)


def _put_label(img: np.ndarray, text: str, x: int, y_top: int, y_bottom: int, color, scale: float,
               thickness: int, font: str | None = None) -> None:
    """Filled label above the box (or below it when there is no room), kept inside the image.

    ``font``: a TrueType/OpenType file for text OpenCV's own font cannot draw (Chinese), rendered with Pillow.
    """
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    if font is not None:
        pil_font = _pil_font(font, max(8, int(round(th * 1.6))))
        x0, y0, x1, y1 = pil_font.getbbox(text)
        tw, th, base = x1 - x0, y1 - y0, 0
    pad = max(2, int(th * 0.3))
    bh = th + base + 2 * pad
    top = y_top - bh if y_top - bh >= 0 else min(y_bottom, h - bh)
    top = max(0, top)
    left = int(np.clip(x, 0, max(0, w - tw - 2 * pad)))
    cv2.rectangle(img, (left, top), (left + tw + 2 * pad, top + bh), color, -1)
    if font is None:
        cv2.putText(img, text, (left + pad, top + pad + th), FONT, scale, _text_color(color), thickness, cv2.LINE_AA)
        return
    from PIL import Image, ImageDraw

    patch = img[top:top + bh, left:left + tw + 2 * pad]
    pic = Image.fromarray(np.ascontiguousarray(patch[:, :, ::-1]))
    ImageDraw.Draw(pic).text((pad - x0, pad - y0), text, font=pil_font, fill=_text_color(color)[::-1])
    patch[:] = np.asarray(pic)[:, :, ::-1]


def _draw_bars(img: np.ndarray, probs: np.ndarray, x: int, y: int, width: int, scale: float,
               thickness: int) -> None:
    """Seven small probability bars, one per emotion, starting at (x, y)."""
    h, w = img.shape[:2]
    (_, th), _ = cv2.getTextSize("Mg", FONT, scale * 0.7, max(1, thickness - 1))
    row = th + 6
    label_w = cv2.getTextSize("surprise", FONT, scale * 0.7, max(1, thickness - 1))[0][0] + 6
    total_w = label_w + width
    x = int(np.clip(x, 0, max(0, w - total_w)))
    y = int(np.clip(y, 0, max(0, h - row * len(EMOTIONS))))
    overlay = img.copy()
    cv2.rectangle(overlay, (x, y), (x + total_w, y + row * len(EMOTIONS)), (0, 0, 0), -1)
    cv2.addWeighted(overlay, 0.5, img, 0.5, 0, dst=img)
    for i, (emo, p) in enumerate(zip(EMOTIONS, probs)):
        ry = y + i * row
        cv2.putText(img, emo, (x + 3, ry + th + 2), FONT, scale * 0.7, (255, 255, 255), max(1, thickness - 1),
                    cv2.LINE_AA)
        cv2.rectangle(img, (x + label_w, ry + 3), (x + label_w + int(width * float(p)), ry + row - 3),
                      COLORS[emo], -1)


def draw_face(img: np.ndarray, face: Face, bars: bool = False, landmarks: bool = False) -> None:
    """Draw one face onto ``img`` in place, labelled in its language when a font for it is found."""
    h, w = img.shape[:2]
    x, y, bw, bh = face.box
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = int(round(x + bw)), int(round(y + bh))
    # Sizes follow both the image and the face so small faces in big photos stay legible.
    base = max(min(h, w) / 600.0, min(bw, bh) / 160.0)
    scale = float(np.clip(base * 0.6, 0.35, 3.0))
    thickness = max(1, int(round(scale * 2)))
    if face.probabilities is None:
        color = UNREADABLE_COLOR
        _dashed_rect(img, (x0, y0), (x1, y1), color, thickness)
    else:
        color = COLORS[face.emotion]
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    font = font_path(face.lang)
    lang = face.lang if font is not None else "en"
    _put_label(img, face_label(face, lang), x0, y0, y1, color, scale, thickness, font)
    if landmarks and face.landmarks is not None:
        for px, py in face.landmarks:
            cv2.circle(img, (int(px), int(py)), max(1, thickness), (255, 255, 0), -1, cv2.LINE_AA)
    if bars and face.probabilities is not None:
        _draw_bars(img, face.probabilities, x1 + thickness * 2, y0, max(40, int(bw * 0.6)), scale, thickness)


def draw_analysis(image: np.ndarray, analysis: Analysis | list[Face], bars: bool = False,
                  landmarks: bool = False) -> np.ndarray:
    """Annotated copy of a BGR image: one labelled box per face (largest drawn first, so small ones stay on top)."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    faces = analysis.faces if isinstance(analysis, Analysis) else analysis
    for face in sorted(faces, key=lambda f: -f.box[2] * f.box[3]):
        draw_face(out, face, bars=bars, landmarks=landmarks)
    return out
