"""Image sizes read from the first bytes of a file, without decoding pixels (pure Python, no imports).

:func:`header_size` knows PNG, JPEG, GIF, BMP, WebP, TIFF and the Netpbm family (PNM, PAM, PFM) plus
Radiance HDR; :mod:`ferkit.core.images` checks this size against the pixel cap before it lets Pillow look at
the file at all, then checks Pillow's reading of the header (every other format) too. :func:`jpeg_end`
walks a JPEG's segments to its end-of-image marker: bytes after it (phones' motion photos append a
video there) are ignored, and a JPEG without one is truncated. :func:`png_problem` walks a PNG's chunks
so that no decoder is handed a chunk length larger than the file.
"""

from __future__ import annotations

import re
import struct

#: A marker inside JPEG entropy-coded data: 0xFF followed by anything but stuffing (00), RSTn or fill (FF).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def sniff_format(data: bytes) -> str | None:
    """Format from the magic bytes of the formats the service accepts (jpeg, png, webp, bmp, gif), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of a known format, or None (unknown or too short)."""
    try:
        for parse in (_png, _gif, _bmp, _webp, _tiff, _netpbm, _hdr):
            found = parse(data)
            if found is not None:
                return found
        if data[:2] == b"\xff\xd8":
            jpeg = jpeg_scan(data)
            if jpeg[0] is not None:
                return ("JPEG", *jpeg[0])
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _png(d: bytes) -> tuple[str, int, int] | None:
    if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
        return ("PNG", *struct.unpack(">II", d[16:24]))
    return None


def _gif(d: bytes) -> tuple[str, int, int] | None:
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return ("GIF", *struct.unpack("<HH", d[6:10]))
    return None


def _bmp(d: bytes) -> tuple[str, int, int] | None:
    if d[:2] != b"BM":
        return None
    if struct.unpack("<I", d[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack("<HH", d[18:22])
    else:
        w, h = struct.unpack("<ii", d[18:26])
    return "BMP", abs(w), abs(h)


def _webp(d: bytes) -> tuple[str, int, int] | None:
    if d[:4] != b"RIFF" or d[8:12] != b"WEBP":
        return None
    chunk = d[12:16]
    if chunk == b"VP8X":
        return "WEBP", 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
    if chunk == b"VP8L":
        b = struct.unpack("<I", d[21:25])[0]
        return "WEBP", (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return "WEBP", w & 0x3FFF, h & 0x3FFF
    return None


def _tiff(d: bytes) -> tuple[str, int, int] | None:
    """Width and length of the first IFD of a classic (not Big) TIFF."""
    if d[:4] not in (b"II*\0", b"MM\0*"):
        return None
    e = "<" if d[:2] == b"II" else ">"
    off = struct.unpack(e + "I", d[4:8])[0]
    (n,) = struct.unpack(e + "H", d[off:off + 2])
    dims: dict[int, int] = {}
    for k in range(min(n, 4096)):
        tag, typ = struct.unpack(e + "HH", d[off + 2 + 12 * k: off + 6 + 12 * k])
        if tag in (256, 257):
            raw = d[off + 10 + 12 * k: off + 14 + 12 * k]
            dims[tag] = struct.unpack(e + "H", raw[:2])[0] if typ == 3 else struct.unpack(e + "I", raw)[0]
    if 256 in dims and 257 in dims:
        return "TIFF", dims[256], dims[257]
    return None


def _tokens(d: bytes, start: int, count: int) -> list[bytes]:
    """``count`` whitespace-separated tokens after ``start``, skipping ``#`` comments (Netpbm headers)."""
    text = re.sub(rb"#[^\n]*", b" ", d[start:start + 1024])
    return text.split(None, count)[:count]


def _netpbm(d: bytes) -> tuple[str, int, int] | None:
    magic = d[:2]
    if magic in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"PF", b"Pf") and d[2:3].isspace():
        w, h = (int(t) for t in _tokens(d, 2, 2))
        return ("PFM" if magic in (b"PF", b"Pf") else "PPM"), w, h
    if magic == b"P7" and d[2:3].isspace():
        fields = dict(re.findall(rb"(?m)^(WIDTH|HEIGHT)\s+(\d+)", d[:4096]))
        if b"WIDTH" in fields and b"HEIGHT" in fields:
            return "PAM", int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    return None


def _hdr(d: bytes) -> tuple[str, int, int] | None:
    if d[:10] != b"#?RADIANCE" and d[:6] != b"#?RGBE":
        return None
    m = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)", d[:65536])
    if m is None:
        return None
    first, second = int(m.group(3)), int(m.group(6))
    return ("HDR", second, first) if m.group(2) == b"Y" else ("HDR", first, second)


def jpeg_scan(data: bytes) -> tuple[tuple[int, int] | None, int | None]:
    """((width, height) of the first frame or None, offset just past the end-of-image marker or None).

    Segments are skipped by their lengths (an EXIF thumbnail inside APP1 is not mistaken for the end)
    and entropy-coded data is searched for the next real marker, so progressive JPEGs with many scans
    are walked correctly. An end of None means the data stops before the end-of-image marker.
    """
    n = len(data)
    i = 2
    size: tuple[int, int] | None = None
    while i + 1 < n:
        if data[i] != 0xFF:  # garbage between segments: libjpeg skips it too
            i = data.find(b"\xff", i)
            if i < 0:
                break
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return size, i + 2
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if i + 4 > n:
            break
        seg = (data[i + 2] << 8) | data[i + 3]
        if seg < 2:
            break
        if marker in _JPEG_SOF and size is None and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            size = (w, h)
        i += 2 + seg
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            m = _JPEG_MARKER.search(data, i)
            if m is None:
                break
            i = m.start()
    return size, None


def jpeg_end(data: bytes) -> int | None:
    """Offset just past a JPEG's first end-of-image marker, or None when the data is truncated."""
    return jpeg_scan(data)[1]


def png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure, or None when every chunk up to IEND fits in the data.

    Decoders trust chunk lengths: OpenCV allocated the 4 GB that one mutated length field of a 400-byte
    file claimed. Walking the chunks (12 bytes of overhead each, a few thousand in a large photo) first
    catches that, and truncation, cheaply. Bytes after IEND are allowed.
    """
    n = len(data)
    i = 8
    first = True
    while i + 12 <= n:
        length = struct.unpack(">I", data[i:i + 4])[0]
        kind = data[i + 4:i + 8]
        if first and kind != b"IHDR":
            return "does not start with an IHDR chunk"
        first = False
        if i + 12 + length > n:
            return f"is truncated ({kind.decode('latin-1')!r} chunk of {length} bytes runs past the end)"
        if kind == b"IEND":
            return None
        i += 12 + length
    return "is truncated (no IEND chunk)"
