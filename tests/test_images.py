import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from ferkit.core.images import (
    apply_orientation,
    as_bgr,
    decode_image,
    find_images,
    image_size_from_header,
    max_file_bytes,
    normalize_array,
    probe_image,
    read_image,
)
from ferkit.errors import ImageError, ImageTooLargeError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronauts.jpg"


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w×h (a decompression-bomb stand-in: no pixel data needed)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def tiff_header_only(w: int, h: int) -> bytes:
    """A TIFF whose first IFD claims w×h 8-bit grey pixels in one strip that is not there."""
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 122), (278, 4, h),
               (279, 4, w * h)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, 1, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, 1, value, 0)
        for tag, typ, value in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(1000)


def jpeg_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """``bgr`` stored so that a viewer applying EXIF ``orientation`` shows it upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    inverse = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    im = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    if inverse[orientation] is not None:
        im = im.transpose(inverse[orientation])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"])
def test_header_size_matches_encoded_size(ext: str):
    ok, buf = cv2.imencode(ext, np.zeros((37, 81) if ext == ".pgm" else (37, 81, 3), np.uint8))
    assert image_size_from_header(buf.tobytes()) == (81, 37)
    info = probe_image(buf.tobytes())
    assert (info.width, info.height, info.orientation) == (81, 37, 1)


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


def test_devices_and_broken_links_are_refused_before_opening(tmp_path: Path):
    # reading /dev/zero whole never ends (it grew to 9.7 GB in 20 s before this check)
    link = tmp_path / "photo.jpg"
    link.symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), link):
        with pytest.raises(ImageError, match="is a device, not a file"):
            read_image(path)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageError, match="broken link"):
        read_image(dangling)


def test_an_image_through_a_pipe_is_read_and_an_endless_pipe_is_cut_off(tmp_path: Path, astronaut):
    import os
    import threading

    ok, buf = cv2.imencode(".png", astronaut)
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)

    def feed(data: bytes, chunks: int = 1) -> threading.Thread:
        def run():
            try:
                with open(fifo, "wb") as fh:
                    for _ in range(chunks):
                        fh.write(data)
            except BrokenPipeError:  # the reader stopped at its bound
                pass
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    feed(buf.tobytes())
    assert read_image(fifo).shape == astronaut.shape  # e.g. `ferkit analyze <(curl ...)`
    feed(b"\0" * 2**20, chunks=80)  # 80 MiB into a reader bounded at 64 MiB + 8 bytes a pixel
    with pytest.raises(ImageTooLargeError, match="more than 64 MiB"):
        read_image(fifo, max_pixels=10)


def test_a_file_too_large_for_any_image_within_the_cap_is_refused_unread(tmp_path: Path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:
        fh.truncate(max_file_bytes(1000) + 1)  # sparse: no disk used, and nothing is read
    with pytest.raises(ImageTooLargeError, match="the file is 64 MiB, more than an image within"):
        read_image(big, max_pixels=1000)


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


# ----------------------------------------------------------------------------- the rows of issue 13

def test_jpeg_with_bytes_after_its_end_is_accepted(tmp_path: Path):
    """Motion photos append a video after the JPEG's end marker: the picture is read, the rest ignored."""
    data = EXAMPLE.read_bytes()
    motion = data + b"\0\0\0\x18ftypmp42" + bytes(300_000)
    plain = decode_image(data)
    np.testing.assert_array_equal(decode_image(motion), plain)
    (tmp_path / "motion.jpg").write_bytes(motion)
    np.testing.assert_array_equal(read_image(tmp_path / "motion.jpg"), plain)
    np.testing.assert_array_equal(as_bgr(motion)[0], plain)
    assert probe_image(motion).end == len(data)
    with pytest.raises(ImageError, match="truncated"):  # no end marker at all is still refused
        decode_image(data[:-2])


def test_every_format_is_size_checked_before_decoding():
    """TIFF (and any format Pillow reads) is refused from its header, like PNG and JPEG."""
    with pytest.raises(ImageTooLargeError, match="20000×20000"):
        decode_image(tiff_header_only(20000, 20000), "bomb.tiff")
    with pytest.raises(ImageTooLargeError, match="over the 0.0 MP limit"):
        decode_image(cv2.imencode(".tiff", np.zeros((40, 40, 3), np.uint8))[1].tobytes(), max_pixels=1000)
    for fmt in ("GIF", "TGA", "JPEG2000", "QOI"):  # decoded by Pillow: same cap from Pillow's header reading
        buf = io.BytesIO()
        Image.new("RGB", (50, 40), (10, 200, 30)).save(buf, fmt)
        assert decode_image(buf.getvalue()).shape == (40, 50, 3)
        with pytest.raises(ImageTooLargeError):
            decode_image(buf.getvalue(), max_pixels=1999)


def test_formats_without_a_known_size_are_refused():
    with pytest.raises(ImageError, match="not an image ferkit can read"):
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")  # EPS would run Ghostscript
    with pytest.raises(ImageError, match="PNG is truncated"):
        decode_image(cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))[1].tobytes()[:-20])


def test_uint16_array_and_16_bit_png_read_as_the_same_picture(astronaut):
    wide = astronaut.astype(np.uint16) * 257  # the same picture at 16 bits
    np.testing.assert_array_equal(as_bgr(wide)[0], astronaut)
    png16 = cv2.imencode(".png", wide)[1].tobytes()
    np.testing.assert_array_equal(decode_image(png16), astronaut)
    grey16 = Image.open(io.BytesIO(cv2.imencode(".png", wide[:, :, 1])[1].tobytes()))
    assert grey16.mode == "I;16"
    np.testing.assert_array_equal(as_bgr(grey16)[0][:, :, 1], astronaut[:, :, 1])


def test_float_rule_0_1_versus_0_255(astronaut):
    unit = astronaut.astype(np.float64) / 255
    np.testing.assert_array_equal(as_bgr(unit)[0], astronaut)
    np.testing.assert_array_equal(as_bgr(astronaut.astype(np.float32))[0], astronaut)
    np.testing.assert_array_equal(as_bgr(astronaut.astype(np.float16) / 255)[0].shape, astronaut.shape)
    np.testing.assert_array_equal(as_bgr(astronaut.astype(np.int64))[0], astronaut)  # ints in 0..255


@pytest.mark.parametrize("bad,match", [
    (np.zeros((8, 8), bool), "boolean"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8), np.inf), "infinite"),
    (np.full((8, 8), -0.5), "float images must lie in"),
    (np.full((8, 8), 300.0), "float images must lie in"),
    (np.full((8, 8), 4096, np.int32), "integer images"),
    (np.full((8, 8), -3, np.int8), "integer images"),
    (np.zeros((8, 8), np.complex64), "dtype complex64"),
    (np.zeros((8, 8), object), "dtype object"),
    (np.array(7, np.uint8), "shape ()"),
    (np.zeros(8, np.uint8), "shape (8,)"),
    (np.zeros((8, 8, 2), np.uint8), "shape (8, 8, 2)"),
    (np.zeros((2, 8, 8, 3), np.uint8), "shape (2, 8, 8, 3)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
])
def test_arrays_that_are_not_images_are_refused_with_a_reason(bad, match):
    with pytest.raises(ImageError, match=match.replace("(", r"\(").replace(")", r"\)")):
        as_bgr(bad)


def test_array_pixel_cap_is_checked_before_conversion():
    big = np.broadcast_to(np.float64(0.5), (3000, 3000, 3))  # no memory behind it: the cap comes first
    with pytest.raises(ImageTooLargeError):
        normalize_array(big, max_pixels=1_000_000)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA",
                                  "La", "PA", "RGBX", "RGBa", "I;16", "I;16B", "I;16L"])
def test_pil_images_in_every_mode(mode: str, astronaut):
    rgb = Image.fromarray(np.ascontiguousarray(astronaut[::8, ::8, ::-1]))
    im = Image.new(mode, rgb.size, 40000) if mode.startswith("I;16") else rgb.convert(mode)
    out, _ = as_bgr(im)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    if mode in ("RGB", "RGBX", "CMYK", "YCbCr"):
        assert np.abs(out.astype(int) - astronaut[::8, ::8]).mean() < 8
    if mode.startswith("I;16"):
        assert int(out[0, 0, 0]) == round(40000 * 255 / 65535)


def test_truncated_file_behind_a_pil_image_is_an_image_error():
    data = EXAMPLE.read_bytes()
    lazy = Image.open(io.BytesIO(data[: len(data) // 3]))  # Pillow opens lazily: the damage shows at load()
    with pytest.raises(ImageError, match="truncated"):
        as_bgr(lazy)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied_for_every_input_kind(orientation: int, tmp_path: Path, astronaut):
    data = jpeg_with_orientation(astronaut, orientation)
    assert probe_image(data).orientation == orientation
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    by_path = read_image(path)
    assert by_path.shape == astronaut.shape
    assert np.abs(by_path.astype(int) - astronaut).mean() < 3  # upright again (JPEG noise only)
    np.testing.assert_array_equal(as_bgr(data)[0], by_path)
    np.testing.assert_array_equal(as_bgr(Image.open(path))[0], by_path)
    np.testing.assert_array_equal(as_bgr(str(path))[0], by_path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation: int):
    img = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    im = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))[:, :, ::-1]
    np.testing.assert_array_equal(apply_orientation(img, orientation), expected)
