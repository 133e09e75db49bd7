"""HTTP service: a JSON API and a small web page over one :class:`~ferkit.recognizer.Recognizer`.

Endpoints (see ``/docs`` for the OpenAPI description):

- ``POST /v1/analyze``: an image as multipart ``file``, raw bytes (``Content-Type: image/*``) or JSON
  ``{"image": "<base64 or data URL>"}`` → :meth:`ferkit.results.Analysis.to_dict` JSON.
- ``POST /v1/annotate?format=jpeg|png&bars=false``: same inputs → the annotated image.
- ``GET /v1/models``: shipped models (with validation accuracy), detectors, defaults, limits.
- ``GET /healthz``: liveness and load.
- ``GET /``: the web page (``ferkit/static/``).

Design:

- Models load once, before the server starts listening; inference runs off the event loop in a
  bounded :class:`~concurrent.futures.ThreadPoolExecutor` (onnxruntime releases the GIL). All
  workers share one Recognizer: onnxruntime sessions are safe to run concurrently, and measured
  on 2 cores one shared Recognizer was as fast as one per thread and faster than a lock
  (``docs/service.md``).
- Admission control: at most ``workers + max_queue`` requests are admitted at once (counted from
  before the body is read until their inference really ends, even after a timeout); the next one
  gets 503 with ``Retry-After``. Memory is therefore bounded by that count × ``max_upload_bytes``.
- Nothing touches the disk: bodies (multipart included) are read into memory with a size cap and
  parsed there; images are decoded with OpenCV from memory.
- Image safety: size cap (413) before and while reading, content type and magic bytes (415; JPEG,
  PNG, WebP, BMP and GIF only — formats whose pixel size can be read from the header), pixel cap
  from the header before decoding (413), decode errors (422), per-request timeout (504).
- Every error is JSON ``{"error": "<code>", "detail": "<what went wrong and what to do>"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FerkitError, InputError
from .images import MAX_PIXELS, decode_image, image_size_from_header

try:  # FastAPI is the optional extra `ferkit[serve]`.
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.security import APIKeyHeader
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise FerkitError(f"the HTTP service needs FastAPI and uvicorn: pip install 'ferkit[serve]' ({e})") from None

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart < 0.0.13 names its module `multipart`
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

log = logging.getLogger("ferkit.service")

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
#: Formats accepted, by magic bytes. All have their pixel size in a header ferkit can read before decoding.
IMAGE_FORMATS = ("jpeg", "png", "webp", "bmp", "gif")
_MIME_ALIASES = {"jpg": "jpeg", "pjpeg": "jpeg", "x-png": "png", "x-ms-bmp": "bmp", "x-bmp": "bmp"}
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the file itself


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{int(n)} bytes"


def default_workers() -> int:
    """Inference threads by default: one per CPU core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class ServiceSettings:
    """Limits and options of the HTTP service (all have safe defaults).

    Attributes:
        workers: inference threads (requests analysed at the same time).
        max_queue: admitted requests that may wait for a free worker; beyond ``workers + max_queue``
            requests in flight the service answers 503 with ``Retry-After``.
        timeout_s: per-request limit, from arrival to the end of inference (504; 408 if the body
            itself has not arrived by then).
        max_upload_bytes: largest accepted image file (413); a base64 JSON body may be 4/3 of it.
        max_pixels: largest accepted image in pixels, read from the header before decoding (413).
        api_key: when set, every ``/v1/`` request must send it in the ``X-API-Key`` header (401).
        jpeg_quality: quality of ``/v1/annotate`` JPEGs.
        retry_after_s: ``Retry-After`` value sent with 503.
        allowed_hosts: when set, requests whose ``Host`` header (port removed) is not one of these get
            400 — on a loopback bind this stops DNS-rebinding pages from reading the API
            (:func:`serve` sets it to the loopback names). None = no check.
    """

    workers: int = 0  # 0 = default_workers()
    max_queue: int = 16
    timeout_s: float = 30.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    api_key: str | None = None
    jpeg_quality: int = 90
    retry_after_s: int = 1
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.workers <= 0:
            self.workers = default_workers()
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_upload_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_upload_bytes and max_pixels must be > 0")
        self.api_key = self.api_key or None  # empty string = no key

    @property
    def max_in_flight(self) -> int:
        """Requests admitted at once (running + waiting); the next one gets 503."""
        return self.workers + self.max_queue


class ServiceError(Exception):
    """An error answered as JSON ``{"error": code, "detail": detail}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body every failure of the service uses."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- admission control

class Admission:
    """Counts requests in flight and refuses new ones above a limit (thread-safe: released from workers)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot; False when all ``limit`` slots are taken."""
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self, *_: Any) -> None:
        """Give a slot back (also usable as a Future done-callback)."""
        with self._lock:
            self.active = max(0, self.active - 1)


# ----------------------------------------------------------------------------- reading the upload

def sniff_format(data: bytes) -> str | None:
    """Image format from magic bytes (one of :data:`IMAGE_FORMATS`), or None."""
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


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before or while it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ServiceError(400, "bad_request", f"bad Content-Length {declared!r}") from None
        if n > limit:
            raise ServiceError(413, "payload_too_large", f"{what} is {_fmt_bytes(n)}, over the "
                               f"{_fmt_bytes(limit)} limit; downscale or recompress the image")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ServiceError(413, "payload_too_large", f"{what} is over the {_fmt_bytes(limit)} limit; "
                               "downscale or recompress the image")
    return bytes(buf)


async def read_image_upload(request: Request, settings: ServiceSettings) -> tuple[bytes, str | None]:
    """Image bytes and name from a multipart, raw ``image/*`` or JSON base64 request; validated up to decoding.

    Raises:
        ServiceError: 400 malformed/empty, 413 too large (bytes or pixels), 415 not an accepted image,
            422 image size unreadable from its header.
    """
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";")[0].strip().lower()
    cap = settings.max_upload_bytes
    name: str | None = None
    if mime == "multipart/form-data":
        body = await _read_body(request, cap + _MULTIPART_OVERHEAD, "upload")
        if not body:
            raise ServiceError(400, "empty_body", "request body is empty; send an image")
        data, name, declared = _parse_multipart(body, ctype)
        _check_declared_type(declared, "the uploaded file")
    elif mime == "application/json" or mime.endswith("+json"):
        body = await _read_body(request, cap * 4 // 3 + 1024, "JSON body")
        if not body:
            raise ServiceError(400, "empty_body", "request body is empty; send {\"image\": \"<base64>\"}")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServiceError(400, "bad_json", f"body is not valid JSON ({e})") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ServiceError(400, "bad_json", "JSON body must be an object with a string field 'image' "
                               "(base64 or a data: URL)")
        data, declared = _decode_base64(payload["image"])
        _check_declared_type(declared, "the data URL")
        if isinstance(payload.get("name"), str):
            name = Path(payload["name"].replace("\\", "/")).name[:200] or None
    elif mime.startswith("image/") or mime in ("application/octet-stream", "binary/octet-stream"):
        _check_declared_type(mime, "the request body")
        data = await _read_body(request, cap, "image")
    else:
        raise ServiceError(415, "unsupported_media_type",
                           f"Content-Type {mime or '(none)'!r} not accepted; send multipart/form-data with a "
                           "'file' part, raw bytes with Content-Type image/jpeg (or image/png, ...), or JSON "
                           "{\"image\": \"<base64>\"}")
    if not data:
        raise ServiceError(400, "empty_body", "the image is empty (0 bytes)")
    if len(data) > cap:
        raise ServiceError(413, "payload_too_large", f"image is {_fmt_bytes(len(data))}, over the "
                           f"{_fmt_bytes(cap)} limit; downscale or recompress it")
    fmt = sniff_format(data)
    if fmt is None:
        raise ServiceError(415, "unsupported_media_type", "the data is not a JPEG, PNG, WebP, BMP or GIF image "
                           f"(it starts with {data[:8].hex(' ')}); convert it to JPEG or PNG")
    size = image_size_from_header(data)
    if size is None:
        raise ServiceError(422, "unreadable_image", f"cannot read the {fmt.upper()} image size from its header; "
                           "the file is corrupt or truncated")
    w, h = size
    if w * h > settings.max_pixels:
        raise ServiceError(413, "too_many_pixels", f"image is {w}×{h} = {w * h / 1e6:.1f} MP, over the "
                           f"{settings.max_pixels / 1e6:.1f} MP limit; downscale it first")
    if w == 0 or h == 0:
        raise ServiceError(422, "unreadable_image", f"image header says {w}×{h} pixels")
    return data, name


# ----------------------------------------------------------------------------- the app

def _models_payload(recognizer: Any, settings: ServiceSettings) -> dict:
    from .classification import DEFAULT_MODEL, list_models, resolve_model
    from .detection import DEFAULT_DETECTOR, list_detectors

    models = []
    for name in list_models():
        try:
            meta = resolve_model(name).meta or {}
        except FerkitError:
            meta = {}
        val = meta.get("val") or {}
        models.append({"name": name, "default": name == DEFAULT_MODEL, "val_accuracy": val.get("accuracy"),
                       "val_macro_f1": val.get("macro_f1"), "params": meta.get("params"),
                       "input_size": meta.get("input_size")})
    return {
        "models": models,
        "detectors": [{"name": d, "default": d == DEFAULT_DETECTOR} for d in list_detectors()],
        "default_model": DEFAULT_MODEL,
        "default_detector": DEFAULT_DETECTOR,
        "loaded": {"model": getattr(recognizer, "model_name", None),
                   "detector": getattr(recognizer, "detector_name", None)},
        "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                   "timeout_s": settings.timeout_s, "workers": settings.workers,
                   "max_in_flight": settings.max_in_flight, "formats": list(IMAGE_FORMATS)},
    }


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _host_name(host_header: str) -> str:
    """``Host`` header → host name without port (``[::1]:80`` → ``::1``), lower-case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Guard:
    """Pure ASGI middleware: ``Host`` allow-list (JSON 400) and conservative security headers (CSP on the page)."""

    PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None = None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
            if _host_name(host) not in self.allowed:
                resp = error_response(400, "bad_host", f"Host {host!r} is not served here; use "
                                      f"{' or '.join(sorted(self.allowed))}")
                await resp(scope, receive, send)
                return
        path = scope.get("path", "")
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", self.PAGE_CSP.encode()),
                                (b"permissions-policy", b"camera=(self), microphone=()"),
                                (b"cache-control", b"no-cache")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _snake(phrase: str) -> str:
    return "_".join(phrase.lower().replace("-", " ").split()) or "error"


def create_app(recognizer: Any = None, settings: ServiceSettings | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        recognizer: a loaded :class:`~ferkit.recognizer.Recognizer` (or any object with a compatible
            ``analyze(image, source=...)``), shared by all worker threads, so it must be thread-safe
            (the shipped models and detectors are). None loads the default models now.
        settings: limits and options; None = :class:`ServiceSettings` defaults.

    Returns:
        The app; run it with uvicorn (``ferkit serve`` does) or test it with ``fastapi.testclient``.
    """
    from . import __version__

    settings = settings or ServiceSettings()
    if recognizer is None:
        from .recognizer import Recognizer

        recognizer = Recognizer(max_pixels=settings.max_pixels)
    admission = Admission(settings.max_in_flight)
    state: dict[str, ThreadPoolExecutor | None] = {"executor": None}
    executor_lock = threading.Lock()

    def executor() -> ThreadPoolExecutor:
        with executor_lock:
            if state["executor"] is None:
                state["executor"] = ThreadPoolExecutor(settings.workers, thread_name_prefix="ferkit-infer")
            return state["executor"]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        executor()
        yield
        with executor_lock:
            ex, state["executor"] = state["executor"], None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="ferkit", version=__version__, lifespan=lifespan,
        description="Facial expression recognition: find every face, judge whether it can be read, label seven "
                    "emotions. Send an image as multipart `file`, raw bytes with `Content-Type: image/jpeg` (or "
                    "png, webp, bmp, gif) or JSON `{\"image\": \"<base64 or data URL>\"}`. Errors are JSON "
                    "`{\"error\": code, \"detail\": message}`."
                    + (" Every /v1/ request needs the `X-API-Key` header." if settings.api_key else ""),
    )
    app.state.settings = settings
    app.state.recognizer = recognizer
    app.state.admission = admission
    app.add_middleware(_Guard, allowed_hosts=settings.allowed_hosts)

    # -- errors: always {"error", "detail"} ------------------------------------------------------
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"{request.method} {request.url.path} does not exist; the API is described at /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
            detail = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        return error_response(exc.status_code, _snake(phrase), detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msgs.append(f"{loc}: {err.get('msg', 'invalid')}")
        return error_response(422, "validation_error", "; ".join(msgs) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")

    # -- auth ----------------------------------------------------------------------------------
    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                                  description="required when the server was started with an API key")

    async def require_key(key: str | None = Depends(api_key_header)) -> None:
        if settings.api_key is None:
            return
        if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise ServiceError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header",
                               {"WWW-Authenticate": API_KEY_HEADER})

    # -- inference ------------------------------------------------------------------------------
    def analyze_sync(data: bytes, name: str | None, annotate: dict | None) -> Any:
        t0 = time.perf_counter()
        bgr = decode_image(data, name or "upload", settings.max_pixels)
        decode_ms = (time.perf_counter() - t0) * 1e3
        analysis = recognizer.analyze(bgr, source=name)
        timings = getattr(analysis, "timings_ms", None)
        if isinstance(timings, dict):  # decoding happened here, not inside analyze()
            timings["total"] = timings.get("total", 0.0) - timings.get("decode", 0.0) + decode_ms
            timings["decode"] = decode_ms
        if annotate is None:
            return analysis.to_dict()
        import cv2

        from .drawing import draw_analysis

        out = draw_analysis(bgr, analysis, bars=annotate["bars"])
        if annotate["format"] == "png":
            ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        else:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
        if not ok:
            raise RuntimeError("image encoding failed")
        return buf.tobytes(), len(analysis.faces), sum(1 for f in analysis.faces if f.readable)

    async def run_inference(request: Request, annotate: dict | None) -> Any:
        if not admission.try_acquire():
            raise ServiceError(503, "busy", f"all {settings.max_in_flight} request slots are in use; retry in "
                               f"{settings.retry_after_s} s", {"Retry-After": str(settings.retry_after_s)})
        handed_off = False
        deadline = time.monotonic() + settings.timeout_s
        try:
            try:
                data, name = await asyncio.wait_for(read_image_upload(request, settings), settings.timeout_s)
            except asyncio.TimeoutError:
                raise ServiceError(408, "request_timeout", f"the request body did not arrive within "
                                   f"{settings.timeout_s:g} s") from None
            fut: Future = executor().submit(analyze_sync, data, name, annotate)
            # The slot is held until the work really ends, even if the client is answered 504 before.
            fut.add_done_callback(admission.release)
            handed_off = True
            try:
                return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ServiceError(504, "timeout", f"analysis did not finish within {settings.timeout_s:g} s; "
                                   "try a smaller image or retry later") from None
            except InputError as e:
                raise ServiceError(422, "unreadable_image", str(e)) from None
            except FerkitError as e:
                raise ServiceError(500, "analysis_failed", str(e)) from None
        finally:
            if not handed_off:
                admission.release()

    image_body = {
        "requestBody": {
            "required": True,
            "description": "The image: multipart field `file`, raw bytes, or JSON with base64.",
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"}}}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
                    "image": {"type": "string", "description": "base64 or data:image/...;base64,... URL"},
                    "name": {"type": "string", "description": "optional name echoed as `source`"}}}},
            },
        },
    }
    error_schema = {"content": {"application/json": {"schema": {"type": "object", "properties": {
        "error": {"type": "string"}, "detail": {"type": "string"}}}}}}
    error_responses = {code: {"description": text, **error_schema} for code, text in (
        (400, "malformed request, empty body, bad base64"), (401, "missing or wrong X-API-Key"),
        (408, "body did not arrive in time"),
        (413, "file or pixel count over the limit"), (415, "not a JPEG/PNG/WebP/BMP/GIF"),
        (422, "image cannot be decoded; invalid query parameter"), (503, "saturated; see Retry-After"),
        (504, "analysis timed out"))}

    @app.post("/v1/analyze", tags=["api"], dependencies=[Depends(require_key)], openapi_extra=image_body,
              responses=error_responses,
              summary="Find faces and label emotions",
              response_description="`Analysis.to_dict()`: image size, model, detector, one entry per face "
                                   "(box, landmarks, readable + reason, quality measures, emotion, probabilities) "
                                   "and timings")
    async def analyze(request: Request) -> JSONResponse:
        """Analyse one image; the JSON is exactly :meth:`ferkit.results.Analysis.to_dict`."""
        return JSONResponse(await run_inference(request, None))

    @app.post("/v1/annotate", tags=["api"], dependencies=[Depends(require_key)], openapi_extra=image_body,
              responses={200: {"content": {"image/jpeg": {}, "image/png": {}},
                               "description": "annotated image; X-Faces / X-Readable-Faces headers give counts"},
                         **error_responses},
              response_class=Response, summary="Annotated image")
    async def annotate(
        request: Request,
        fmt: str = Query("jpeg", alias="format", pattern="^(jpeg|jpg|png)$", description="jpeg (default) or png"),
        bars: bool = Query(False, description="draw probability bars beside each readable face"),
    ) -> Response:
        """The image with a labelled box per face (solid = readable, dashed grey = unreadable)."""
        fmt = "png" if fmt == "png" else "jpeg"
        body, n_faces, n_readable = await run_inference(request, {"format": fmt, "bars": bars})
        return Response(body, media_type=f"image/{fmt}",
                        headers={"X-Faces": str(n_faces), "X-Readable-Faces": str(n_readable)})

    models_payload = _models_payload(recognizer, settings)

    @app.get("/v1/models", tags=["api"], dependencies=[Depends(require_key)],
             summary="Shipped models, detectors, defaults and limits")
    async def models() -> dict:
        """Shipped emotion models with validation accuracy, face detectors, defaults, loaded pair, limits."""
        return models_payload

    @app.get("/healthz", tags=["ops"], summary="Liveness and load")
    async def healthz() -> dict:
        """Always 200 while the process serves; reports the load (no API key needed)."""
        return {"status": "ok", "version": __version__, "model": getattr(recognizer, "model_name", None),
                "detector": getattr(recognizer, "detector_name", None), "workers": settings.workers,
                "in_flight": admission.active, "max_in_flight": settings.max_in_flight}

    # -- web page ---------------------------------------------------------------------------------
    index = (STATIC_DIR / "index.html").read_bytes() if (STATIC_DIR / "index.html").is_file() else None

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        if index is None:
            raise ServiceError(404, "not_found", "web page files are missing from this installation")
        return HTMLResponse(index)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# ----------------------------------------------------------------------------- running it

def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure: bool = False) -> list[str]:
    """Refuse to expose the service beyond this machine without an API key.

    Returns warnings to print. Raises :class:`FerkitError` for a non-loopback host without a key,
    unless ``insecure``.
    """
    warnings = []
    if not is_loopback(host):
        if not api_key and not insecure:
            raise FerkitError(f"refusing to listen on {host} (reachable from other machines) without an API key: "
                              "set FERKIT_API_KEY (or --api-key), or pass --insecure to serve it open")
        if not api_key:
            warnings.append(f"serving on {host} WITHOUT an API key: anyone who can reach it can use it")
        else:
            warnings.append(f"serving on {host}: the API key travels in clear text unless TLS is on "
                            "(--ssl-certfile/--ssl-keyfile or a reverse proxy)")
    if api_key and len(api_key) < 16:
        warnings.append("the API key is shorter than 16 characters; use a long random one "
                        "(python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return warnings


def warm_up(recognizer: Any) -> None:
    """Run one small synthetic image through the recognizer so the first request is not slow."""
    import numpy as np

    img = np.full((160, 160, 3), 128, np.uint8)
    recognizer.analyze(img)


def serve(recognizer: Any, settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted (binding the socket first, for a clear error)."""
    import socket

    import uvicorn

    if is_loopback(host) and settings.allowed_hosts is None:
        settings.allowed_hosts = LOOPBACK_HOSTS
    app = create_app(recognizer, settings)
    warm_up(recognizer)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host.strip("[]"), port), family=family)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise FerkitError(f"cannot listen on {host}:{port} ({reason}); "
                          "pick another port with --port or stop the program using it") from None
    config = uvicorn.Config(app, host=host, port=sock.getsockname()[1], log_level=log_level,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, server_header=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after a graceful shutdown: that is a normal stop
        pass
    finally:
        sock.close()
