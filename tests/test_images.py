import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.errors import ImageError
from ferkit.images import as_bgr, decode_image, find_images, image_size_from_header, read_image


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w×h (a decompression-bomb stand-in: no pixel data needed)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_header_size_matches_encoded_size(ext: str):
    ok, buf = cv2.imencode(ext, np.zeros((37, 81, 3), np.uint8))
    assert image_size_from_header(buf.tobytes()) == (81, 37)


def test_read_errors_are_specific(tmp_path: Path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_image(text)
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_truncated_jpeg_is_refused(tmp_path: Path, astronaut):
    ok, buf = cv2.imencode(".jpg", astronaut)
    data = buf.tobytes()
    assert decode_image(data).shape == astronaut.shape
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2], "half.jpg")


def test_huge_image_refused_before_decoding():
    with pytest.raises(ImageError, match="20000×20000"):
        decode_image(png_header_only(20000, 20000), "bomb.png")


def test_as_bgr_accepts_the_usual_forms(astronaut):
    from PIL import Image

    rgb = cv2.cvtColor(astronaut, cv2.COLOR_BGR2RGB)
    out, _ = as_bgr(Image.fromarray(rgb))
    np.testing.assert_array_equal(out, astronaut)
    grey, _ = as_bgr(astronaut[:, :, 0])
    assert grey.shape == astronaut.shape
    bgra, _ = as_bgr(cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA))
    np.testing.assert_array_equal(bgra, astronaut)
    f, _ = as_bgr(astronaut.astype(np.float32) / 255.0)
    assert f.dtype == np.uint8 and np.abs(f.astype(int) - astronaut).max() <= 1
    with pytest.raises(ImageError, match="not an image"):
        as_bgr(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ImageError, match="type"):
        as_bgr(12345)


def test_find_images_expands_folders_and_globs(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "sub/b.png", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    files, errors = find_images([str(tmp_path)])
    assert [f.name for f in files] == ["a.jpg", "b.png"] and not errors
    files, errors = find_images([str(tmp_path / "*.jpg"), str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")])
    assert [f.name for f in files] == ["a.jpg"]
    assert len(errors) == 2 and "no such file" in errors[0] and "matched no files" in errors[1]
    (tmp_path / "empty").mkdir()
    assert "no images" in find_images([str(tmp_path / "empty")])[1][0]
