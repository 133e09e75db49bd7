"""Reading an image upload from an HTTP request: multipart, raw bytes or JSON base64, validated up to decoding.

Everything happens in memory (Starlette's form parser would spill files over 1 MiB to disk; the
multipart body is parsed here with python-multipart's low-level parser). The body is read under a size
cap (413, from ``Content-Length`` before reading and while streaming) and under the service's
:class:`~ferkit.apps.service.limits.BodyBudget` (503); the magic bytes must be an accepted format (415); the pixel
size is read from the image's own header by :func:`ferkit.core.images.probe_image` — the same check the
library applies — before anything is decoded (413, or 422 when the header is corrupt or the file
truncated).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request

from ferkit.apps.service.limits import BodyTicket, ServiceSettings
from ferkit.core.image_headers import sniff_format
from ferkit.core.images import probe_image
from ferkit.errors import ImageError, ImageTooLargeError

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart < 0.0.13 names its module `multipart`
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

#: Formats accepted over HTTP, by magic bytes: the pixel cap covers every format ferkit reads, but the
#: network-facing service keeps to the five that browsers and phones send (fewer decoders exposed).
IMAGE_FORMATS = ("jpeg", "png", "webp", "bmp", "gif")
_MIME_ALIASES = {"jpg": "jpeg", "pjpeg": "jpeg", "x-png": "png", "x-ms-bmp": "bmp", "x-bmp": "bmp"}
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the file itself


class ServiceError(Exception):
    """An error answered as JSON ``{"error": code, "detail": detail}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def fmt_bytes(n: float) -> str:
    """A byte count for people: ``512 bytes``, ``1.5 KiB``, ``20.0 MiB``."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{int(n)} bytes"


def _check_declared_type(mime: str | None, where: str) -> None:
    """415 unless a declared content type is an accepted image type (or generic binary / absent)."""
    if not mime:
        return
    mime = mime.split(";")[0].strip().lower()
    if mime in ("application/octet-stream", "binary/octet-stream"):
        return
    major, _, minor = mime.partition("/")
    if major != "image":
        raise ServiceError(415, "unsupported_media_type",
                           f"{where} is declared as {mime!r}, not an image; send a JPEG, PNG, WebP, BMP or GIF")
    if _MIME_ALIASES.get(minor, minor) not in IMAGE_FORMATS:
        raise ServiceError(415, "unsupported_media_type",
                           f"{where} is declared as {mime!r}; accepted: JPEG, PNG, WebP, BMP, GIF "
                           "(convert HEIC/TIFF/AVIF photos to JPEG first)")


def _parse_multipart(body: bytes, content_type: str) -> tuple[bytes, str | None, str | None]:
    """(file bytes, file name, declared part type) of the ``file``/``image`` part, parsed in memory."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(400, "bad_request", "multipart body without a boundary in its Content-Type")
    parts: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    field: list[bytes] = []
    value: list[bytes] = []

    def on_part_begin() -> None:
        cur.clear()
        cur.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.append(data[start:end])

    def on_header_end() -> None:
        cur["headers"][b"".join(field).decode("latin-1").lower()] = b"".join(value).decode("latin-1")
        field.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append(dict(cur))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python-multipart raises its own errors for malformed bodies
        raise ServiceError(400, "bad_request", f"malformed multipart body ({e})") from None
    candidates = []
    for p in parts:
        _, disp = parse_options_header(p["headers"].get("content-disposition", ""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        candidates.append((name, None if filename is None else filename.decode("utf-8", "replace"), p))
    chosen = next((c for c in candidates if c[0] in ("file", "image")), None) or \
        next((c for c in candidates if c[1] is not None), None)
    if chosen is None:
        raise ServiceError(400, "bad_request", "multipart body has no 'file' part; send the image as field 'file'")
    _, filename, part = chosen
    name = Path(filename.replace("\\", "/")).name[:200] if filename else None
    return bytes(part["data"]), name or None, part["headers"].get("content-type")


def _decode_base64(text: str) -> tuple[bytes, str | None]:
    """Base64 or ``data:`` URL → (bytes, declared MIME type or None)."""
    mime = None
    text = text.strip()
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise ServiceError(400, "bad_base64", "data URL must look like 'data:image/jpeg;base64,<data>'")
        mime = header[5:-7] or None
    text = "".join(text.split())
    if "=" not in text:  # unpadded base64 (common from JavaScript/URL-safe encoders)
        text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii")), mime
        return base64.b64decode(text.encode("ascii"), validate=True), mime
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise ServiceError(400, "bad_base64", f"'image' is not valid base64 ({e})") from None


async def _read_body(request: Request, limit: int, what: str, ticket: BodyTicket | None) -> bytes:
    """The request body, refusing anything over ``limit`` bytes (413) or over the memory budget (503).

    ``Content-Length`` is checked before reading; the running total while the body streams in (chunked
    bodies, or a client that sends more than it declared).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ServiceError(400, "bad_request", f"bad Content-Length {declared!r}") from None
        if n > limit:
            raise ServiceError(413, "payload_too_large", f"{what} is {fmt_bytes(n)}, over the "
                               f"{fmt_bytes(limit)} limit; downscale or recompress the image")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise ServiceError(413, "payload_too_large", f"{what} is over the {fmt_bytes(limit)} limit; "
                                   "downscale or recompress the image")
            if ticket is not None and not ticket.take(len(chunk)):
                raise ServiceError(503, "busy", "the server is receiving too many uploads at once; retry shortly",
                                   {"Retry-After": "1"})
    except ClientDisconnect:
        raise ServiceError(400, "client_disconnected", "the client closed the connection before the body "
                           "arrived") from None
    return bytes(buf)


async def _read_payload(request: Request, settings: ServiceSettings,
                        ticket: BodyTicket | None) -> tuple[bytes, str | None]:
    """(image bytes, client-supplied name) from a multipart, JSON or raw request body, before any image check."""
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";")[0].strip().lower()
    cap = settings.max_upload_bytes
    name: str | None = None
    if mime == "multipart/form-data":
        body = await _read_body(request, cap + _MULTIPART_OVERHEAD, "upload", ticket)
        if not body:
            raise ServiceError(400, "empty_body", "request body is empty; send an image")
        data, name, declared = _parse_multipart(body, ctype)
        _check_declared_type(declared, "the uploaded file")
    elif mime == "application/json" or mime.endswith("+json"):
        body = await _read_body(request, settings.max_json_bytes, "JSON body", ticket)
        if not body:
            raise ServiceError(400, "empty_body", "request body is empty; send {\"image\": \"<base64>\"}")
        data, name = _parse_json(body)
    elif mime.startswith("image/") or mime in ("application/octet-stream", "binary/octet-stream"):
        _check_declared_type(mime, "the request body")
        data = await _read_body(request, cap, "image", ticket)
    else:
        raise ServiceError(415, "unsupported_media_type",
                           f"Content-Type {mime or '(none)'!r} not accepted; send multipart/form-data with a "
                           "'file' part, raw bytes with Content-Type image/jpeg (or image/png, ...), or JSON "
                           "{\"image\": \"<base64>\"}")
    return data, name


def _parse_json(body: bytes) -> tuple[bytes, str | None]:
    """(image bytes, optional path-stripped name) from a ``{"image": base64, "name": ...}`` body."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ServiceError(400, "bad_json", f"body is not valid JSON ({e})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise ServiceError(400, "bad_json", "JSON body must be an object with a string field 'image' "
                           "(base64 or a data: URL)")
    data, declared = _decode_base64(payload["image"])
    _check_declared_type(declared, "the data URL")
    name = None
    if isinstance(payload.get("name"), str):
        name = Path(payload["name"].replace("\\", "/")).name[:200] or None
    return data, name


async def read_image_upload(request: Request, settings: ServiceSettings,
                            ticket: BodyTicket | None = None) -> tuple[bytes, str | None]:
    """Image bytes and name from a multipart, raw ``image/*`` or JSON base64 request; validated up to decoding.

    Args:
        request: the request; its body is read here.
        settings: the service limits.
        ticket: this request's share of the body-memory budget (None = no budget).

    Raises:
        ServiceError: 400 malformed/empty, 413 too large (bytes or pixels), 415 not an accepted image,
            422 unreadable header or truncated file, 503 body-memory budget exhausted.
    """
    data, name = await _read_payload(request, settings, ticket)
    cap = settings.max_upload_bytes
    if not data:
        raise ServiceError(400, "empty_body", "the image is empty (0 bytes)")
    if len(data) > cap:
        raise ServiceError(413, "payload_too_large", f"image is {fmt_bytes(len(data))}, over the "
                           f"{fmt_bytes(cap)} limit; downscale or recompress it")
    if sniff_format(data) is None:
        raise ServiceError(415, "unsupported_media_type", "the data is not a JPEG, PNG, WebP, BMP or GIF image "
                           f"(it starts with {data[:8].hex(' ')}); convert it to JPEG or PNG")
    try:
        probe_image(data, "upload", settings.max_pixels)
    except ImageTooLargeError as e:
        raise ServiceError(413, "too_many_pixels", str(e)) from None
    except ImageError as e:
        raise ServiceError(422, "unreadable_image", str(e)) from None
    return data, name
