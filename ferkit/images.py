"""Reading images safely: paths, bytes, numpy arrays and PIL images → BGR uint8.

Every failure is an :class:`~ferkit.errors.ImageError` naming the input and the
reason (missing, empty, not an image, truncated, too many pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import ImageError

#: Refuse images above this many pixels (decompression-bomb guard; 50 MP ≈ 8660×5770).
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".jp2")


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG/JPEG/GIF/BMP/WebP header without decoding pixels, or None if unknown."""
    import struct

    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if chunk == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                seg = struct.unpack(">H", data[i + 2:i + 4])[0]
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + seg
    except struct.error:
        return None
    return None


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes → BGR uint8 array (EXIF orientation applied)."""
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    size = image_size_from_header(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: image is {size[0]}×{size[1]} = {size[0] * size[1] / 1e6:.0f} MP, "
                         f"over the {max_pixels / 1e6:.0f} MP limit; downscale it first")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        # OpenCV silently fills a truncated JPEG with grey; we refuse to guess faces in it.
        raise ImageError(f"{name}: JPEG is truncated (no end-of-image marker); re-export or re-download it")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"{name}: not an image OpenCV can decode")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"{name}: image is {img.shape[1]}×{img.shape[0]}, over the "
                         f"{max_pixels / 1e6:.0f} MP limit; downscale it first")
    return img


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as BGR uint8."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(p), max_pixels)


def as_bgr(image: Any, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str | None]:
    """Path, bytes, numpy array (BGR/BGRA/grey) or PIL image → (BGR uint8 array, source name)."""
    if isinstance(image, (str, Path)):
        return read_image(image, max_pixels), str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), "<bytes>", max_pixels), None
    if isinstance(image, np.ndarray):
        arr = image
    elif hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL
        arr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    else:
        raise ImageError(f"cannot analyse an object of type {type(image).__name__}; "
                         "pass a path, bytes, a numpy BGR array or a PIL image")
    if arr.size == 0 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageError(f"array of {arr.shape[1]}×{arr.shape[0]} is over the {max_pixels / 1e6:.0f} MP limit")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2 or arr.shape[2] == 1:
        arr = cv2.cvtColor(arr.reshape(arr.shape[0], arr.shape[1]), cv2.COLOR_GRAY2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(arr), None


def find_images(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursive) and glob patterns into image files.

    Returns (image paths in order, error lines for inputs that matched nothing).
    A file named explicitly is kept whatever its suffix, so a bad one gets its
    own clear error later instead of silently disappearing.
    """
    import glob

    found: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                errors.append(f"{p}: folder contains no images ({', '.join(IMAGE_SUFFIXES)})")
            found += files
        elif p.exists():
            found.append(p)
        elif any(c in str(raw) for c in "*?["):
            files = sorted(Path(f) for f in glob.glob(str(raw), recursive=True) if Path(f).is_file())
            if not files:
                errors.append(f"{raw}: pattern matched no files")
            found += files
        else:
            errors.append(f"{p}: no such file or folder")
    return found, errors
