"""Reading images safely: paths, bytes, numpy arrays and PIL images → BGR uint8, one path for all.

Files and bytes go through :func:`probe_image` first: the size is read from the image's own header —
by :func:`ferkit.core.image_headers.header_size` (PNG, JPEG, GIF, BMP, WebP, TIFF, Netpbm, HDR) and by
Pillow's lazy ``Image.open`` (every format on :data:`PILLOW_FORMATS`) — and an image over the pixel
cap is refused before any pixel is decoded. Only then is it decoded: by OpenCV for the formats ferkit
has always decoded with it (:data:`OPENCV_FORMATS`), by Pillow for the rest. Every input kind ends in
:func:`normalize_array` (one rule per dtype and range) and gets its EXIF orientation applied
(:func:`apply_orientation`) — path, bytes, PIL image and HTTP upload alike; a numpy array carries no
metadata and is taken as it is.

Array rule (:func:`normalize_array`): ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)``
BGRA (alpha ignored); ``uint8`` as is; ``uint16`` spans 0–65535 (as a 16-bit PNG does) and is scaled
by 255/65535; other integer types must hold 0–255; floats are read as [0, 1] when every value lies in
[0, 1], else as [0, 255], and must be finite and within [0, 255]. Anything else — bool, complex,
object, strings, 0-d, other shapes, NaN or ±inf — is an :class:`~ferkit.errors.ImageError` saying
what to do.

Every failure is an :class:`~ferkit.errors.ImageError` (over the pixel cap:
:class:`~ferkit.errors.ImageTooLargeError`) naming the input and the reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.core.files import check_input_file, read_bounded
from ferkit.core.image_headers import header_size, jpeg_scan, png_problem
from ferkit.core.settings import MAX_PIXELS
from ferkit.errors import ImageError, ImageTooLargeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm",
                  ".jp2", ".gif", ".avif")
#: Formats Pillow may open (a smaller attack surface than all of its plugins: no EPS/Ghostscript, no
#: stubs that need outside handlers). Names are Pillow's.
PILLOW_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "JPEG2000", "AVIF",
                  "ICO", "TGA", "SUN", "SGI", "PCX", "QOI", "PSD")
#: Decoded by OpenCV (as before Pillow read the headers); every other accepted format is decoded by Pillow.
#: PAM, PFM and HDR are formats only OpenCV reads, their sizes come from ferkit's own header parser.
OPENCV_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "PPM", "PAM", "PFM", "HDR")
_OWN_ONLY_FORMATS = ("PAM", "PFM", "HDR")  # read by ferkit's header parser and OpenCV, not by Pillow
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an encoded image says (:func:`probe_image`).

    Attributes:
        format: Pillow's format name (``"JPEG"``, ``"PNG"``, ``"TIFF"``, ...) or ``"PAM"``/``"PFM"``/``"HDR"``.
        width, height: stored size in pixels (before EXIF orientation).
        orientation: EXIF orientation 1–8 (1 = as stored).
        end: for JPEG, the offset just past the end-of-image marker (later bytes are not image data).
    """

    format: str
    width: int
    height: int
    orientation: int = 1
    end: int | None = None


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise ImageError(f"reading images needs Pillow: pip install pillow ({e})") from None
    return Image


def _allowed_formats() -> tuple[str, ...]:
    Image = _pil()
    Image.init()
    return tuple(f for f in PILLOW_FORMATS if f in Image.OPEN)


def check_pixels(name: str, width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageTooLargeError` when ``width × height`` is over ``max_pixels``, ImageError when 0."""
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{name}: image is {width}×{height} = {width * height / 1e6:.1f} MP, over the "
                                 f"{max_pixels / 1e6:.1f} MP limit; downscale it first")
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image header says {width}×{height} pixels; the file is corrupt")


def _orientation(im: Any, header_only: bool = False) -> int:
    """EXIF orientation of a PIL image (1 when absent); ``header_only``: never make Pillow decode pixels."""
    try:
        if header_only and getattr(im, "format", None) == "PNG" and "exif" not in im.info:
            return 1  # Pillow would decode the whole PNG to look for an eXIf chunk after the pixels
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF is not a reason to refuse the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _pil_open(data: bytes, name: str) -> Any | None:
    """Pillow's lazy open (header only) restricted to :data:`PILLOW_FORMATS`; None when not identified."""
    Image = _pil()
    try:
        return Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.UnidentifiedImageError:
        return None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"{name}: {e} (Pillow's Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); "
                                 "downscale it first") from None
    except Exception as e:  # Pillow's plugins raise many types for malformed headers
        raise ImageError(f"{name}: not an image ferkit can read ({type(e).__name__}: {e})") from None


def probe_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Format, size and orientation from the header; refuses over-limit, truncated and unknown data.

    Nothing is decoded. The size is checked against ``max_pixels`` twice: from ferkit's own header
    parser before Pillow sees the bytes, and from Pillow's reading (every format it opens).

    Raises:
        ferkit.errors.ImageTooLargeError: width × height over ``max_pixels``.
        ferkit.errors.ImageError: empty, not an image, corrupt header, truncated JPEG/PNG.
    """
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    own = header_size(data)
    if own is not None:
        check_pixels(name, own[1], own[2], max_pixels)
    im = _pil_open(data, name)
    if im is None and own is None:
        raise ImageError(f"{name}: not an image ferkit can read (it starts with {bytes(data[:8]).hex(' ')}); "
                         "convert it to JPEG or PNG")
    if im is None and own[0] not in _OWN_ONLY_FORMATS:  # Pillow reads this format, yet refused the header
        raise ImageError(f"{name}: {own[0]} header is corrupt; re-export or re-download it")
    fmt, w, h = (im.format, *im.size) if im is not None else own
    check_pixels(name, w, h, max_pixels)
    orientation = _orientation(im, header_only=True) if im is not None else 1
    end = None
    if fmt in ("JPEG", "MPO"):
        end = jpeg_scan(data)[1]
        if end is None:
            raise ImageError(f"{name}: JPEG is truncated (no end-of-image marker); re-export or re-download it")
    elif fmt == "PNG" and (problem := png_problem(data)) is not None:
        raise ImageError(f"{name}: PNG {problem}; re-export or re-download it")
    return ImageInfo(fmt, w, h, orientation, end)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes → BGR uint8 array, upright (EXIF orientation applied).

    Raises:
        ferkit.errors.ImageTooLargeError: over ``max_pixels`` (checked from the header, before decoding).
        ferkit.errors.ImageError: anything else that stops it being read.
    """
    import cv2

    info = probe_image(data, name, max_pixels)
    if info.format not in OPENCV_FORMATS:
        return _pil_decode(data, name, max_pixels)
    buf = np.frombuffer(data, np.uint8, count=info.end if info.end is not None else -1)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:  # OpenCV raises for some corrupt files instead of returning None
        raise ImageError(f"{name}: {info.format} data cannot be decoded (OpenCV: {str(e).strip()[-160:]})") from None
    if img is None:
        raise ImageError(f"{name}: {info.format} data is corrupt or truncated; re-export or re-download it")
    return apply_orientation(normalize_array(img, max_pixels, name), info.orientation)


def _pil_decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    im = _pil_open(data, name)
    if im is None:  # probe_image found it, so this only happens for data Pillow identified before
        raise ImageError(f"{name}: not an image ferkit can read")
    return pil_to_bgr(im, max_pixels, name)


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """The largest image file accepted with ``max_pixels``: 8 bytes a pixel (uncompressed 16-bit RGBA, the
    largest way to store one) plus 64 MiB for metadata and what phones append after a JPEG (motion photos).
    A larger file cannot hold an image within the cap, so it is refused before it is read."""
    return max_pixels * 8 + 64 * 2**20


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as upright BGR uint8 (see :func:`decode_image`).

    Raises:
        ferkit.errors.ImageError: missing, a folder, a device, empty, unreadable, or not an image.
        ferkit.errors.ImageTooLargeError: a file over :func:`max_file_bytes` or an image over ``max_pixels``.
    """
    p = Path(path)
    size, limit = check_input_file(p, ImageError, "an image"), max_file_bytes(max_pixels)
    if size is not None and size > limit:
        raise ImageTooLargeError(f"{p}: the file is {size / 2**20:.0f} MiB, more than an image within the "
                                 f"{max_pixels / 1e6:.1f} MP limit can take ({limit / 2**20:.0f} MiB)")
    try:
        with open(p, "rb") as fh:
            data = read_bounded(fh, limit, str(p), ImageTooLargeError)
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(p), max_pixels)


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``orientation`` (1–8) upright (what Pillow's ``exif_transpose`` does)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = arr.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = arr.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """The dtype/range rule of :func:`normalize_array` (shape already checked)."""
    kind = arr.dtype.kind
    if kind == "b":
        raise ImageError(f"{what} is a boolean array (a mask?), not an image; "
                         "pass mask.astype(np.uint8) * 255 to analyse it as black and white")
    if kind not in "uif":
        raise ImageError(f"{what} has dtype {arr.dtype}, not an image type; use uint8 (0–255), uint16 "
                         "(0–65535) or float ([0, 1] or [0, 255])")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"{what} is {arr.dtype} with values from {lo} to {hi}; integer images other than "
                             "uint8 and uint16 must hold 0–255 — scale it to uint8 first")
        return arr.astype(np.uint8)
    arr = arr.astype(np.float32) if arr.dtype.itemsize < 4 else arr
    finite = np.isfinite(arr)
    if not finite.all():
        bad = arr[~finite]
        raise ImageError(f"{what} contains {int(np.isnan(bad).sum())} NaN and {int(np.isinf(bad).sum())} "
                         "infinite values; replace them (e.g. np.nan_to_num) before analysing it")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        raise ImageError(f"{what} is {arr.dtype} with values from {lo:g} to {hi:g}; float images must lie in "
                         "[0, 1] or [0, 255] — clip or rescale it first (e.g. np.clip(a, 0, 1))")
    return np.rint(arr * (255.0 if hi <= 1.0 else 1.0)).astype(np.uint8)


def normalize_array(arr: np.ndarray, max_pixels: int = MAX_PIXELS, what: str = "array") -> np.ndarray:
    """Any supported numpy image → contiguous BGR uint8 ``(H, W, 3)`` (the rule is in the module docstring).

    Raises:
        ferkit.errors.ImageTooLargeError: more than ``max_pixels`` pixels.
        ferkit.errors.ImageError: a dtype, shape or value range that is not an image.
    """
    import cv2

    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{what} of shape {arr.shape} is not an image; expected (H, W) grey, (H, W, 3) BGR or "
                         "(H, W, 4) BGRA")
    if arr.size == 0:
        raise ImageError(f"{what} of shape {arr.shape} is empty")
    check_pixels(what, arr.shape[1], arr.shape[0], max_pixels)
    arr = _to_uint8(arr, what)
    if arr.ndim == 2 or arr.shape[2] == 1:
        arr = cv2.cvtColor(np.ascontiguousarray(arr.reshape(arr.shape[0], arr.shape[1])), cv2.COLOR_GRAY2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(arr)


def pil_to_bgr(im: Any, max_pixels: int = MAX_PIXELS, what: str = "PIL image") -> np.ndarray:
    """A PIL image in any mode → upright BGR uint8 (size checked before its pixels are loaded).

    16-bit modes (``I;16*``, and mode ``I`` holding values up to 65535) follow the uint16 rule, ``F``
    the float rule; palette, grey+alpha, CMYK, YCbCr, LAB and HSV are converted to RGB by Pillow.

    Raises:
        ferkit.errors.ImageTooLargeError: over ``max_pixels``.
        ferkit.errors.ImageError: truncated or corrupt file behind a lazily opened image, unconvertible mode.
    """
    w, h = im.size
    check_pixels(what, w, h, max_pixels)
    try:
        im.load()
        mode = im.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            arr = np.asarray(im)
            if mode == "I" and arr.size and 255 < int(arr.max()) <= 65535 and int(arr.min()) >= 0:
                arr = arr.astype(np.uint16)  # how Pillow opens some 16-bit files
            bgr = normalize_array(arr, max_pixels, what)
        else:
            rgb = np.asarray(_pil_rgb_or_grey(im))
            bgr = normalize_array(rgb[:, :, ::-1] if rgb.ndim == 3 else rgb, max_pixels, what)
    except ImageError:
        raise
    except Exception as e:  # truncated/corrupt data surfaces at load(); Pillow raises OSError, ValueError, ...
        reason = str(e) or type(e).__name__
        raise ImageError(f"{what} (mode {im.mode}) cannot be read: {reason}; re-export or re-download the file, "
                         "or convert it to RGB yourself") from None
    return apply_orientation(bgr, _orientation(im))


def _pil_rgb_or_grey(im: Any) -> Any:
    """A loaded PIL image as mode RGB or L (alpha dropped, as for arrays and decoded files)."""
    if im.mode in ("RGB", "L"):
        return im
    if im.mode in ("1", "LA"):
        return im.convert("L")
    if im.mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
        return im.convert("LA").convert("L")
    return im.convert("RGB")


def as_bgr(image: Any, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str | None]:
    """Path, bytes, numpy array or PIL image → (upright BGR uint8 array, source name or None)."""
    if isinstance(image, (str, Path)):
        return read_image(image, max_pixels), str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), "<bytes>", max_pixels), None
    if isinstance(image, np.ndarray):
        return normalize_array(np.asarray(image), max_pixels), None
    if hasattr(image, "convert") and hasattr(image, "size") and hasattr(image, "mode"):  # PIL, not imported
        return pil_to_bgr(image, max_pixels), None
    raise ImageError(f"cannot analyse an object of type {type(image).__name__}; "
                     "pass a path, bytes, a numpy BGR array or a PIL image")


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG/JPEG/GIF/BMP/WebP/TIFF/Netpbm/HDR file, or None."""
    found = header_size(data)
    return None if found is None else (found[1], found[2])


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
