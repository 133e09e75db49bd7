"""Property-based fuzzing (hypothesis): hostile bytes, arrays, PIL images and HTTP requests.

Properties, for every generated input:

- decoders (:func:`ferkit.core.images.decode_image`, :func:`~ferkit.core.images.as_bgr`): an upright BGR uint8
  image within the pixel cap, or an :class:`~ferkit.errors.ImageError` — never another exception;
  a header that claims a huge image is refused with little memory allocated (tracemalloc);
- the HTTP app (FastAPI test client, real decoding, fake recognizer): a 2xx or a 4xx with the JSON error
  body — never a 5xx, never a non-JSON error.

A hang is caught by a watchdog (``faulthandler``: tracebacks, then the run stops) and by hypothesis'
per-example deadline. The bounded run (the default, part of ``pytest`` and ``.ci/run``) generates about
6,600 inputs in all (3,600 encoded images, 1,400 arrays and PIL images, 1,600 HTTP requests);
``FERKIT_FUZZ_SCALE=40 pytest tests/test_fuzz.py`` multiplies every test's number of examples
(documented in docs/service.md, "Fuzzing"). Failures print a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import base64
import contextlib
import faulthandler
import io
import json
import os
import struct
import sys
import tracemalloc
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from PIL import Image

from ferkit.core.images import as_bgr, decode_image
from ferkit.errors import ImageError, ImageTooLargeError

SCALE = float(os.environ.get("FERKIT_FUZZ_SCALE", "1"))
CAP = 2_000_000  # pixel cap used while fuzzing: a mutated header may claim up to this much
WATCHDOG_S = 600 * max(1.0, SCALE)  # per test; only a hang gets near it


def fuzz(n: int, deadline_s: float = 10.0):
    """Hypothesis settings for one fuzz test: ``n`` × FERKIT_FUZZ_SCALE examples, no example database."""
    return settings(max_examples=max(1, int(n * SCALE)), deadline=timedelta(seconds=deadline_s), database=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                            HealthCheck.filter_too_much])


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _quiet_pillow():
    with warnings.catch_warnings():  # Pillow warns about odd EXIF/metadata in mutated files; not our failure
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- seeds: one small image per format

def _picture(w: int = 24, h: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 10 % 256, y * 15 % 256, (x + y) * 7 % 256], axis=2).astype(np.uint8)


def _pil_bytes(fmt: str, mode: str = "RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_picture()[:, :, ::-1].copy()).convert(mode).save(buf, fmt, **kw)
    return buf.getvalue()


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _pil_bytes("JPEG", exif=exif.tobytes())


SEEDS: dict[str, bytes] = {
    "jpeg": cv2.imencode(".jpg", _picture())[1].tobytes(),
    "jpeg_progressive": _pil_bytes("JPEG", progressive=True),
    "jpeg_exif": _exif_jpeg(),
    "png": cv2.imencode(".png", _picture())[1].tobytes(),
    "png16": cv2.imencode(".png", _picture().astype(np.uint16) * 257)[1].tobytes(),
    "png_palette": _pil_bytes("PNG", "P"),
    "tiff": cv2.imencode(".tiff", _picture())[1].tobytes(),
    "tiff_deflate": _pil_bytes("TIFF", compression="tiff_adobe_deflate"),
    "webp": cv2.imencode(".webp", _picture())[1].tobytes(),
    "bmp": cv2.imencode(".bmp", _picture())[1].tobytes(),
    "gif": _pil_bytes("GIF", "P"),
    "ppm": cv2.imencode(".ppm", _picture())[1].tobytes(),
    "tga": _pil_bytes("TGA"),
}


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with up to five random edits, biased towards its header (where sizes and lengths live)."""
    b = bytearray(data)
    for _ in range(draw(st.integers(0, 5))):
        if not b:
            break
        pos = draw(st.one_of(st.integers(0, min(63, len(b) - 1)), st.integers(0, len(b) - 1)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "int16", "int32"]))
        if op == "flip":
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del b[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del b[pos:]
        else:
            size = 2 if op == "int16" else 4
            value = draw(st.sampled_from([0, 1, 255, 0x7FFF, 0xFFFF, 20000, 65500, 0x7FFFFFFF, 0xFFFFFFFF]))
            b[pos:pos + size] = (value % (1 << (8 * size))).to_bytes(size, draw(st.sampled_from(["big", "little"])))
    return bytes(b)


@contextlib.contextmanager
def address_space_cap(headroom: int = 1 << 30) -> Iterator[None]:
    """Let the process map at most ``headroom`` more bytes meanwhile (Linux ``RLIMIT_AS``; elsewhere a no-op).

    A decoder that trusts a length field then fails to allocate instead of exhausting the machine.
    """
    try:
        import resource

        status = Path("/proc/self/status").read_text()
    except (ImportError, OSError):
        yield
        return
    vm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:"))) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + headroom if hard == resource.RLIM_INFINITY else min(hard, vm + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def native_stderr(into: list[str]) -> Iterator[None]:
    """Collect what C/C++ code writes to file descriptor 2 meanwhile (OpenCV logs the errors it swallows)."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            into.append(tmp.read().decode("utf-8", "replace"))


#: What OpenCV logs when an allocation failed inside it (it then returns None: a silent memory bomb).
ALLOCATION_FAILURES = ("unknown exception", "Failed to allocate", "Insufficient memory", "bad_alloc")
RSS_GROWTH_LIMIT = 256 * 2**20  # a new high-water mark this far above the last one is a memory bomb


def _max_rss() -> int:
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def assert_decoded_or_image_error(data: bytes) -> None:
    """The decoder's property: an image within the cap or an ImageError, without a memory bomb."""
    logged: list[str] = []
    before = _max_rss()
    try:
        with native_stderr(logged), address_space_cap():
            out = decode_image(data, "fuzz", CAP)
    except ImageError:
        out = None
    grown = _max_rss() - before
    assert grown < RSS_GROWTH_LIMIT, f"decoding took {grown / 2**20:.0f} MiB more memory than before"
    assert not any(m in logged[0] for m in ALLOCATION_FAILURES), f"allocation failed inside a decoder: {logged[0]}"
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
        assert 0 < out.shape[0] * out.shape[1] <= CAP


# ----------------------------------------------------------------------------- decoders

@fuzz(500)
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes):
    assert_decoded_or_image_error(data)


@fuzz(200)
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda k: st.tuples(st.just(k), st.binary(min_size=1, max_size=512))))
def test_valid_header_then_garbage(seed_and_tail):
    name, tail = seed_and_tail
    head = SEEDS[name][: max(8, len(SEEDS[name]) // 4)]
    assert_decoded_or_image_error(head + tail)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_mutated_images(seed: str):
    data = SEEDS[seed]
    assert decode_image(data, seed, CAP).shape[2] == 3  # the unmutated seed decodes

    @fuzz(200)
    @given(mutated(data))
    def run(blob: bytes):
        assert_decoded_or_image_error(blob)

    run()


def _claim_size(data: bytes, fmt: str, w: int, h: int) -> bytes:
    """``data`` with the size fields of its header rewritten to w × h."""
    b = bytearray(data)
    if fmt == "png":
        b[16:24] = struct.pack(">II", w, h)
    elif fmt == "bmp":
        b[18:26] = struct.pack("<ii", w, h)
    elif fmt == "gif":
        b[6:10] = struct.pack("<HH", min(w, 65535), min(h, 65535))
    elif fmt == "jpeg":
        i = b.find(b"\xff\xc0")
        b[i + 5:i + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
    elif fmt == "tiff":  # classic TIFF written by OpenCV: rewrite ImageWidth/ImageLength entries
        off = struct.unpack("<I", b[4:8])[0]
        for k in range(struct.unpack("<H", b[off:off + 2])[0]):
            e = off + 2 + 12 * k
            tag, typ = struct.unpack("<HH", b[e:e + 4])
            if tag in (256, 257):
                value = w if tag == 256 else h
                b[e + 8:e + 12] = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
    return bytes(b)


@pytest.mark.parametrize("fmt", ["png", "bmp", "gif", "jpeg", "tiff"])
def test_header_bombs_are_refused_with_little_memory(fmt: str):
    data = _claim_size(SEEDS[fmt], fmt, 60000 if fmt == "tiff" else 65000, 50000 if fmt == "tiff" else 65000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError):
            decode_image(data, "bomb", CAP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB allocated before refusing a {fmt} bomb"


@fuzz(300)
@given(st.sampled_from(["png", "bmp", "gif", "jpeg", "tiff"]), st.integers(1, 65535), st.integers(1, 65535))
def test_claimed_sizes(fmt: str, w: int, h: int):
    """Any size a header claims: refused over the cap, else decoded (or refused as corrupt) within it."""
    data = _claim_size(SEEDS[fmt], fmt, w, h)
    try:
        out = decode_image(data, "claimed", CAP)
    except ImageTooLargeError:
        assert w * h > CAP
        return
    except ImageError:
        return
    assert out.shape[0] * out.shape[1] <= CAP


# ----------------------------------------------------------------------------- arrays and PIL images

ARRAY_DTYPES = st.one_of(npst.scalar_dtypes(), npst.byte_string_dtypes(max_len=4),
                         npst.unicode_string_dtypes(max_len=4), st.just(np.dtype(object)),
                         npst.boolean_dtypes(), npst.integer_dtypes(endianness="="),
                         npst.unsigned_integer_dtypes(endianness="<"), npst.floating_dtypes(endianness=">"))


def _elements(dtype: np.dtype):
    if dtype.kind == "O":
        return st.sampled_from([None, 1, "x", 2.5])
    if dtype.kind == "f":
        return st.floats(allow_nan=True, allow_infinity=True, width=min(64, dtype.itemsize * 8))
    return None


@fuzz(500)
@given(ARRAY_DTYPES.flatmap(lambda dt: npst.arrays(dt, npst.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                         max_side=9), elements=_elements(dt))))
def test_arrays_of_any_dtype_shape_and_values(arr: np.ndarray):
    try:
        out, _ = as_bgr(arr, CAP)
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.shape == (arr.shape[0], arr.shape[1], 3)


@fuzz(300)
@given(npst.arrays(np.float64, npst.array_shapes(min_dims=2, max_dims=2, max_side=9),
                   elements=st.floats(0, 1, allow_nan=False)))
def test_float_unit_range_rule(arr: np.ndarray):
    out, _ = as_bgr(arr, CAP)
    np.testing.assert_array_equal(out[:, :, 0], np.rint(arr * 255).astype(np.uint8))


@fuzz(200)
@given(npst.arrays(np.uint16, npst.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9).filter(
    lambda s: s[2] == 3)))
def test_uint16_rule(arr: np.ndarray):
    out, _ = as_bgr(arr, CAP)
    assert np.abs(out.astype(np.int64) - arr.astype(np.int64) * 255 / 65535).max() <= 0.5 + 1e-9


PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "La", "PA", "RGBX",
             "RGBa", "I;16", "I;16B", "I;16L"]


@fuzz(400)
@given(st.sampled_from(PIL_MODES), st.integers(1, 12), st.integers(1, 12), st.binary(min_size=0, max_size=2400),
       st.integers(0, 10))
def test_pil_images_of_any_mode_content_and_orientation(mode: str, w: int, h: int, raw: bytes, orientation: int):
    try:
        im = Image.frombytes(mode, (w, h), raw.ljust(w * h * 8, b"\x80"))
    except ValueError:  # a mode Pillow cannot build from raw bytes
        return
    im.getexif()[0x0112] = orientation  # also out-of-range values: treated as "no orientation"
    try:
        out, _ = as_bgr(im, CAP)
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.shape[2] == 3 and sorted(out.shape[:2]) == sorted((h, w))


# ----------------------------------------------------------------------------- HTTP

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    pytest.importorskip("fastapi")
    import httpx  # noqa: E402
    from fastapi.testclient import TestClient  # noqa: E402

from ferkit.apps.service.app import ServiceSettings, create_app  # noqa: E402
from tests.test_service import FakeRecognizer  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(FakeRecognizer(), ServiceSettings(workers=2, max_pixels=CAP, max_upload_bytes=2**20)),
                    raise_server_exceptions=False) as c:
        yield c


def assert_no_server_error(resp, method: str = "POST") -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and method != "HEAD":
        body = resp.json()
        assert set(body) == {"error", "detail"} and isinstance(body["detail"], str), body


CONTENT_TYPES = st.one_of(
    st.sampled_from(["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/heic",
                     "application/octet-stream", "application/json", "text/plain", "multipart/form-data",
                     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "image/",
                     "application/vnd.api+json", "image/jpeg; charset=utf-8"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
IMAGE_BLOBS = st.one_of(st.binary(max_size=2048), st.sampled_from(sorted(SEEDS)).flatmap(lambda k: mutated(SEEDS[k])))
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.text(max_size=8), kids, max_size=4), max_leaves=12)


@fuzz(500)
@given(CONTENT_TYPES, IMAGE_BLOBS, st.sampled_from(["/v1/analyze", "/v1/annotate", "/v1/annotate?format=png&bars=1",
                                                    "/v1/stream/fuzz-stream-1"]))
def test_http_raw_bodies(client, ctype: str, blob: bytes, path: str):
    resp = client.post(path, content=blob, headers={"Content-Type": ctype})
    assert_no_server_error(resp)


@fuzz(400)
@given(st.one_of(
    IMAGE_BLOBS.map(lambda b: {"image": base64.b64encode(b).decode()}),
    IMAGE_BLOBS.map(lambda b: {"image": "data:image/png;base64," + base64.urlsafe_b64encode(b).decode().rstrip("=")}),
    st.fixed_dictionaries({"image": st.text(max_size=64)}, optional={"name": JSON_VALUES}),
    JSON_VALUES))
def test_http_json_bodies(client, payload):
    resp = client.post("/v1/analyze", content=json.dumps(payload), headers={"Content-Type": "application/json"})
    assert_no_server_error(resp)


@fuzz(300)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"'), min_size=1, max_size=30),
       st.lists(st.tuples(st.sampled_from(["Content-Disposition", "Content-Type", "X-Other", "content-disposition"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)), max_size=3),
       IMAGE_BLOBS, st.booleans())
def test_http_multipart_bodies(client, boundary: str, part_headers, blob: bytes, close: bool):
    head = "".join(f"{k}: {v}\r\n" for k, v in part_headers) or 'Content-Disposition: form-data; name="file"\r\n'
    body = f"--{boundary}\r\n{head}\r\n".encode() + blob + (f"\r\n--{boundary}--\r\n".encode() if close else b"")
    resp = client.post("/v1/analyze", content=body,
                       headers={"Content-Type": f'multipart/form-data; boundary="{boundary}"'})
    assert_no_server_error(resp)


HEADER_NAMES = st.one_of(st.sampled_from(["Content-Length", "Content-Type", "Transfer-Encoding", "X-API-Key", "Host",
                                          "Expect", "Connection", "Accept", "Cookie", "Range"]),
                         st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12))
HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@fuzz(400)
@given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       st.one_of(st.sampled_from(["/", "/healthz", "/v1/models", "/v1/analyze", "/v1/annotate", "/static/app.js",
                                  "/static/../pyproject.toml", "/docs", "/openapi.json", "/v1/annotate?format=gif",
                                  "/v1/annotate?bars=maybe", "/%2e%2e/%00", "/static/%00", "/v1/stream/fuzz-stream-2",
                                  "/v1/stream/%00%00%00%00%00%00%00%00", "/v1/stream/" + "a" * 65]),
                 st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"), max_size=30)
                 .map(lambda t: "/" + t)),
       st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4), st.binary(max_size=256))
def test_http_methods_paths_and_headers(client, method: str, path: str, headers: dict, body: bytes):
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "transfer-encoding", "connection")}
    try:
        resp = client.request(method, path, headers=headers, content=body if method not in ("GET", "HEAD") else None)
    except (UnicodeError, ValueError, httpx.InvalidURL):  # the test client itself refuses some header values and
        # paths ("//::" reads as a host and port): nothing was sent
        return
    assert_no_server_error(resp, method)
