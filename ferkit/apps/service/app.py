"""HTTP service: a JSON API and a small web page over one :class:`~ferkit.core.recognizer.Recognizer`.

Endpoints (see ``/docs`` for the OpenAPI description):

- ``POST /v1/analyze``: an image as multipart ``file``, raw bytes (``Content-Type: image/*``) or JSON
  ``{"image": "<base64 or data URL>"}`` → :meth:`ferkit.core.results.Analysis.to_dict` JSON.
- ``POST /v1/annotate?format=jpeg|png&bars=false``: same inputs → the annotated image.
- ``POST /v1/stream/{id}``: one frame of a live stream (the web page's camera mode): same inputs → the
  frame's tracked faces, as ``ferkit camera`` tracks them (:mod:`ferkit.apps.service.streams`).
- ``GET /v1/models``: shipped models (with validation accuracy), detectors, defaults, limits.
- ``GET /healthz``: liveness and load.
- ``GET /``: the web page (``ferkit/apps/service/static/``).

Design (limits and their defaults: :class:`ferkit.apps.service.limits.ServiceSettings`, ``docs/service.md``):

- Models load once, before the server starts listening; inference runs off the event loop in a
  bounded :class:`~concurrent.futures.ThreadPoolExecutor` (both inference runtimes release the GIL). All
  workers share one Recognizer: its sessions are safe to run concurrently (:mod:`ferkit.core.runtime`), and measured
  on 2 cores one shared Recognizer was as fast as one per thread and faster than a lock.
- A request's body is read first, under a deadline (408) and a memory budget shared by all requests
  (503); only then does it take an inference slot (:class:`~ferkit.apps.service.limits.Admission`), so clients that
  stall mid-upload hold no slot. At most ``workers + max_queue`` requests are admitted; the next gets 503
  with a ``Retry-After`` computed from the queue and the measured mean service time, as does one whose
  predicted wait is longer than ``timeout_s``. A slot is held until its inference really ends, even
  after a 504.
- Connection-level limits (request-head timeout, open connections per client address and in all) live
  in :mod:`ferkit.apps.service.netguard`; :func:`serve` runs uvicorn with them.
- Nothing touches the disk: bodies (multipart included) are parsed in memory (:mod:`ferkit.apps.service.upload`);
  images are decoded from memory by :func:`ferkit.core.images.decode_image`, the library's one decoding path.
- Image safety: size cap (413) before and while reading, content type and magic bytes (415), pixel cap
  from the image's own header before decoding (413), decode errors (422), per-request timeout (504).
- Every error is JSON ``{"error": "<code>", "detail": "<what went wrong and what to do>"}``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from ferkit.apps.service.limits import Admission, BodyBudget, BodyTicket, ServiceSettings, default_workers
from ferkit.apps.service.netguard import HttpGuard
from ferkit.apps.service.streams import STREAM_ID, StreamTable
from ferkit.core.images import decode_image
from ferkit.errors import FerkitError, ImageTooLargeError, InputError

try:  # FastAPI is the optional extra `ferkit[serve]`.
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi import Path as PathParam
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import APIKeyHeader
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise FerkitError(f"the HTTP service needs FastAPI and uvicorn: pip install 'ferkit[serve]' ({e})") from None

from ferkit.apps.service.pages import add_docs_routes, add_page_routes
from ferkit.apps.service.upload import IMAGE_FORMATS, ServiceError, read_image_upload
from ferkit.core.image_headers import sniff_format

__all__ = ["ServiceSettings", "ServiceError", "Admission", "create_app", "serve", "check_bind", "is_loopback",
           "sniff_format", "read_image_upload", "default_workers", "IMAGE_FORMATS", "LOOPBACK_HOSTS"]

log = logging.getLogger("ferkit.apps.service.app")

API_KEY_HEADER = "X-API-Key"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body every failure of the service uses."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- the app

def _models_payload(recognizer: Any, settings: ServiceSettings) -> dict:
    from ferkit.core.catalog import detector_entries, model_entries
    from ferkit.core.settings import DEFAULT_DETECTOR, DEFAULT_MODEL

    models = [{k: m[k] for k in ("name", "default", "most_accurate", "val_accuracy", "val_macro_f1", "params",
                                 "input_size")} for m in model_entries()]
    detectors = [{k: d[k] for k in ("name", "default", "installed")} for d in detector_entries()]
    return {
        "models": models,
        "detectors": detectors,
        "default_model": DEFAULT_MODEL,
        "default_detector": DEFAULT_DETECTOR,
        "loaded": {"model": getattr(recognizer, "model_name", None),
                   "detector": getattr(recognizer, "detector_name", None)},
        "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                   "timeout_s": settings.timeout_s, "body_timeout_s": settings.body_timeout_s,
                   "header_timeout_s": settings.header_timeout_s, "workers": settings.workers,
                   "max_in_flight": settings.max_in_flight,
                   "max_connections_per_client": settings.max_connections_per_client,
                   "formats": list(IMAGE_FORMATS)},
    }


def _snake(phrase: str) -> str:
    return "_".join(phrase.lower().replace("-", " ").split()) or "error"


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error", "detail"}`` JSON: ours, Starlette's (404/405), validation, and bugs (500)."""

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


class Inference:
    """Reads a request's image, admits it to a worker thread and waits for the analysis, under every limit.

    Args:
        recognizer: shared by all workers (must be thread-safe; the shipped pipeline is).
        settings: the service limits.
    """

    def __init__(self, recognizer: Any, settings: ServiceSettings):
        self.recognizer = recognizer
        self.settings = settings
        self.admission = Admission(settings.max_in_flight, settings.workers, settings.retry_after_s)
        self.budget = BodyBudget(settings.max_body_memory_bytes)
        self.streams = StreamTable(recognizer, settings.max_streams, settings.stream_idle_s)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> ThreadPoolExecutor:
        """The worker pool, created on first use."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="ferkit-infer")
            return self._executor

    def shutdown(self) -> None:
        """Stop the pool without waiting for abandoned work."""
        with self._lock:
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    def timed(self, job: Callable[[bytes, str | None], Any], data: bytes, name: str | None) -> Any:
        """Run ``job`` in a worker thread, recording its service time for the queue's ``Retry-After``."""
        t0 = time.perf_counter()
        try:
            return job(data, name)
        finally:
            self.admission.record(time.perf_counter() - t0)

    def analyze_sync(self, data: bytes, name: str | None, annotate: dict | None = None) -> Any:
        """Decode, analyse and (for /v1/annotate) draw and encode: the job of those two endpoints."""
        t0 = time.perf_counter()
        bgr = decode_image(data, name or "upload", self.settings.max_pixels)
        decode_ms = (time.perf_counter() - t0) * 1e3
        analysis = self.recognizer.analyze(bgr, source=name)
        timings = getattr(analysis, "timings_ms", None)
        if isinstance(timings, dict):  # decoding happened here, not inside analyze()
            timings["total"] = timings.get("total", 0.0) - timings.get("decode", 0.0) + decode_ms
            timings["decode"] = decode_ms
        if annotate is None:
            return analysis.to_dict()
        import cv2

        from ferkit.core.drawing import draw_analysis

        out = draw_analysis(bgr, analysis, bars=annotate["bars"])
        if annotate["format"] == "png":
            ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        else:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        if not ok:
            raise RuntimeError("image encoding failed")
        return buf.tobytes(), len(analysis.faces), sum(1 for f in analysis.faces if f.readable)

    async def read(self, request: Request, ticket: BodyTicket) -> tuple[bytes, str | None]:
        """The validated image upload, within ``body_timeout_s`` (408 and the connection closed after it)."""
        s = self.settings
        try:
            return await asyncio.wait_for(read_image_upload(request, s, ticket), s.body_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(408, "request_timeout", f"the request body did not arrive within "
                               f"{s.body_timeout_s:g} s", {"Connection": "close"}) from None

    def busy(self) -> ServiceError:
        """The 503 for a full queue, with ``Retry-After`` from the queue's measured pace."""
        wait = self.admission.retry_after()
        return ServiceError(503, "busy", f"{self.admission.active} requests are queued or running (limit "
                            f"{self.settings.max_in_flight}); retry in {wait} s", {"Retry-After": str(wait)})

    def stream_sync(self, stream_id: str) -> Callable[[bytes, str | None], Any]:
        """The job of ``/v1/stream/{stream_id}``: decode one frame and run it through the stream's tracker."""

        def job(data: bytes, name: str | None) -> dict:
            return self.streams.analyze(stream_id, decode_image(data, name or "frame", self.settings.max_pixels))

        return job

    async def run(self, request: Request, job: Callable[[bytes, str | None], Any]) -> Any:
        """Answer one image request with ``job(body, name)`` run in the worker pool, under every limit."""
        s = self.settings
        ticket = BodyTicket(self.budget)
        handed_off = False
        try:
            data, name = await self.read(request, ticket)
            # The slot is taken only now that the whole body is here: a stalled upload holds none.
            if not self.admission.try_acquire(budget_s=s.timeout_s):
                raise self.busy()
            deadline = time.monotonic() + s.timeout_s
            try:
                fut: Future = self.executor().submit(self.timed, job, data, name)
            except RuntimeError:  # the pool was shut down: the server is stopping
                self.admission.release()
                raise ServiceError(503, "shutting_down", "the server is stopping; retry shortly",
                                   {"Retry-After": str(s.retry_after_s)}) from None
            # Slot and body memory are held until the work really ends, even after a 504.
            fut.add_done_callback(self.admission.release)
            fut.add_done_callback(ticket.close)
            handed_off = True
            return await self._wait(fut, deadline)
        finally:
            if not handed_off:
                ticket.close()

    async def _wait(self, fut: Future, deadline: float) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServiceError(504, "timeout", f"analysis did not finish within {self.settings.timeout_s:g} s; "
                               "try a smaller image or retry later") from None
        except ServiceError:  # the job's own answer (a live stream's 409 or 503)
            raise
        except ImageTooLargeError as e:
            raise ServiceError(413, "too_many_pixels", str(e)) from None
        except InputError as e:
            raise ServiceError(422, "unreadable_image", str(e)) from None
        except FerkitError as e:
            raise ServiceError(500, "analysis_failed", str(e)) from None


def _openapi_extras() -> tuple[dict, dict]:
    """(request-body description, error responses) of the two image endpoints, for /openapi.json."""
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
        (422, "image cannot be decoded; invalid query parameter"),
        (503, "saturated; see Retry-After"), (504, "analysis timed out"))}
    return image_body, error_responses


def _add_api_routes(app: FastAPI, inference: Inference, require_key: Callable) -> None:
    """/v1/analyze, /v1/annotate, /v1/stream/{id}, /v1/models and /healthz."""
    from ferkit import __version__

    recognizer, settings, admission = inference.recognizer, inference.settings, inference.admission
    image_body, error_responses = _openapi_extras()

    @app.post("/v1/analyze", tags=["api"], dependencies=[Depends(require_key)], openapi_extra=image_body,
              responses=error_responses,
              summary="Find faces and label emotions",
              response_description="`Analysis.to_dict()`: image size, model, detector, one entry per face "
                                   "(box, landmarks, readable + reason, quality measures, emotion, probabilities) "
                                   "and timings")
    async def analyze(request: Request) -> JSONResponse:
        """Analyse one image; the JSON is exactly :meth:`ferkit.core.results.Analysis.to_dict`."""
        return JSONResponse(await inference.run(request, inference.analyze_sync))

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
        job = functools.partial(inference.analyze_sync, annotate={"format": fmt, "bars": bars})
        body, n_faces, n_readable = await inference.run(request, job)
        return Response(body, media_type=f"image/{fmt}",
                        headers={"X-Faces": str(n_faces), "X-Readable-Faces": str(n_readable)})

    @app.post("/v1/stream/{stream_id}", tags=["api"], dependencies=[Depends(require_key)],
              openapi_extra=image_body,
              responses={409: {"description": "the stream's previous frame is still being analysed"},
                         **error_responses},
              summary="One frame of a live stream, tracked")
    async def stream(request: Request,
                     stream_id: str = PathParam(..., pattern=STREAM_ID,
                                                description="the client's own id for its stream, 8-64 of "
                                                            "A-Z a-z 0-9 _ -")) -> JSONResponse:
        """One frame of a live camera stream, analysed as ``ferkit camera`` analyses its frames.

        Each stream id keeps its own face tracker: faces keep ``track_id`` across frames, the detector runs
        on a schedule and on evidence (``detected`` says whether it ran on this frame), faces are classified
        on a budget and their probabilities smoothed over time. Send one frame at a time (409 otherwise);
        a stream idle for a while, or sending frames of another size, starts afresh.
        """
        return JSONResponse(await inference.run(request, inference.stream_sync(stream_id)))

    models_payload = _models_payload(recognizer, settings)

    @app.get("/v1/models", tags=["api"], dependencies=[Depends(require_key)],
             summary="Shipped models, detectors, defaults and limits")
    async def models() -> dict:
        """Shipped emotion models with validation accuracy, face detectors, defaults, loaded pair, limits."""
        return models_payload

    @app.get("/healthz", tags=["ops"], summary="Liveness and load")
    async def healthz() -> dict:
        """Always 200 while the process serves; reports the load (no API key needed)."""
        mean = admission.mean_s
        return {"status": "ok", "version": __version__, "model": getattr(recognizer, "model_name", None),
                "detector": getattr(recognizer, "detector_name", None),
                "runtime": getattr(recognizer, "runtime_name", None), "workers": settings.workers,
                "in_flight": admission.active, "max_in_flight": settings.max_in_flight,
                "live_streams": len(inference.streams),
                "mean_service_ms": None if mean is None else round(mean * 1e3, 1),
                "retry_after_s": admission.retry_after()}


def create_app(recognizer: Any = None, settings: ServiceSettings | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        recognizer: a loaded :class:`~ferkit.core.recognizer.Recognizer` (or any object with a compatible
            ``analyze(image, source=...)``), shared by all worker threads, so it must be thread-safe
            (the shipped models and detectors are). None loads the default models now.
        settings: limits and options; None = :class:`ServiceSettings` defaults.

    Returns:
        The app (``app.state.admission`` holds the queue); run it with :func:`serve`, or with uvicorn and
        :func:`ferkit.apps.service.netguard.uvicorn_config` for the connection-level limits, or test it with
        ``fastapi.testclient``.
    """
    from ferkit import __version__

    settings = settings or ServiceSettings()
    if recognizer is None:
        from ferkit.core.settings import Settings

        recognizer = Settings.profile("service", max_pixels=settings.max_pixels).build()
    inference = Inference(recognizer, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        inference.executor()
        yield
        inference.shutdown()

    app = FastAPI(
        title="ferkit", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Facial expression recognition: find every face, judge whether it can be read, label seven "
                    "emotions. Send an image as multipart `file`, raw bytes with `Content-Type: image/jpeg` (or "
                    "png, webp, bmp, gif) or JSON `{\"image\": \"<base64 or data URL>\"}`. Errors are JSON "
                    "`{\"error\": code, \"detail\": message}`."
                    + (" Every /v1/ request needs the `X-API-Key` header." if settings.api_key else ""),
    )
    app.state.settings = settings
    app.state.recognizer = recognizer
    app.state.admission = inference.admission
    app.state.inference = inference
    app.add_middleware(HttpGuard, allowed_hosts=settings.allowed_hosts)
    _install_error_handlers(app)

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                                  description="required when the server was started with an API key")

    async def require_key(key: str | None = Depends(api_key_header)) -> None:
        if settings.api_key is None:
            return
        if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise ServiceError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header",
                               {"WWW-Authenticate": API_KEY_HEADER})

    _add_api_routes(app, inference, require_key)
    add_page_routes(app)
    add_docs_routes(app)
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
    """Run the service with uvicorn until interrupted (binding the socket first, for a clear error).

    uvicorn runs with every limit of ``settings``: keep-alive and request-head timeouts, the largest
    request head, and the open-connection caps (:func:`ferkit.apps.service.netguard.uvicorn_config`).
    """
    import socket

    import uvicorn

    from ferkit.apps.service.netguard import uvicorn_config

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
    config = uvicorn_config(app, settings, host=host, port=sock.getsockname()[1], log_level=log_level,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, server_header=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after a graceful shutdown: that is a normal stop
        pass
    finally:
        sock.close()
