"""Guards in front of the app: an ASGI middleware, and connection-level limits for uvicorn.

:class:`HttpGuard` (pure ASGI, in every app :func:`ferkit.apps.service.app.create_app` builds): ``Host``
allow-list against DNS rebinding, security headers, and ``Connection: close`` on any answer sent before
the request body was fully read.

uvicorn (0.27+, h11 protocol) has an idle keep-alive timeout but no limit on how long a client may take
to send a request head, and no per-client limit: 50 connections that stop half-way through their headers
were held open indefinitely. :func:`guarded_protocol` builds an ``H11Protocol`` subclass that

- closes a connection whose request head is not complete ``header_timeout_s`` after its first byte
  (or after the connection opened), answering 408 when part of a head had arrived;
- answers 429 (then closes) to a new connection from an address that already has
  ``max_connections_per_client`` open, and 503 to any beyond ``max_connections`` in all — the answer
  comes once that connection's request head has arrived, so the client can read it;

and :func:`uvicorn_config` wires it in with uvicorn's own limits (``timeout_keep_alive``, h11's largest
request head). The body deadline and inference slots are the app's business (:mod:`ferkit.apps.service.app`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferkit.apps.service.limits import ServiceSettings

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol


class ConnectionCounter:
    """Open connections, in all and per client address (touched only from the event loop's thread)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_address: dict[str, int] = {}

    def add(self, address: str) -> None:
        """Count one more open connection from ``address``."""
        self.total += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1

    def remove(self, address: str) -> None:
        """Count one connection from ``address`` as closed."""
        self.total = max(0, self.total - 1)
        left = self.by_address.get(address, 0) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)


def _json_reply(status: int, reason: str, code: str, detail: str, extra: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error body and ``Connection: close``."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in (extra or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def send_json(send: Callable, status: int, code: str, detail: str,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete ASGI response with the service's JSON error body."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def refusal_app(status: int, code: str, detail: str, retry_after: Callable[[], int]) -> Callable:
    """An ASGI app that answers every request with one JSON error, ``Retry-After`` and ``Connection: close``."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await send_json(send, status, code, detail,
                            [(b"retry-after", str(retry_after()).encode()), (b"connection", b"close")])

    return app


def _host_name(host_header: str) -> str:
    """``Host`` header → host name without port (``[::1]:80`` → ``::1``), lower-case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _has_body(scope: dict) -> bool:
    """True when the request announces a body (non-zero ``Content-Length`` or chunked encoding)."""
    for k, v in scope.get("headers", []):
        if k == b"content-length" and v.strip() not in (b"0", b""):
            return True
        if k == b"transfer-encoding":
            return True
    return False


class HttpGuard:
    """Pure ASGI middleware: ``Host`` allow-list (JSON 400), security headers (CSP on the page), and
    ``Connection: close`` on any answer sent before the request body was fully read — so a client
    still trickling an unwanted body cannot keep the connection."""

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
        body_done = not _has_body(scope)

        async def tracked_receive() -> dict:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done = True
            return message

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
                if not body_done and not any(k.lower() == b"connection" for k, _ in headers):
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        if self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
            if _host_name(host) not in self.allowed:
                await send_json(send_with_headers, 400, "bad_host", f"Host {host!r} is not served here; use "
                                f"{' or '.join(sorted(self.allowed))}")
                return
        await self.app(scope, tracked_receive, send_with_headers)


def guarded_protocol(settings: ServiceSettings, retry_after: Callable[[], int] | None = None,
                     counter: ConnectionCounter | None = None) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass enforcing the head timeout and connection caps of ``settings``.

    Args:
        settings: ``header_timeout_s``, ``max_connections``, ``max_connections_per_client``.
        retry_after: seconds for the ``Retry-After`` of refusals (default: ``settings.retry_after_s``).
        counter: shared connection counts (a new one by default; pass one to inspect it in tests).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    counts = counter if counter is not None else ConnectionCounter()
    wait = retry_after or (lambda: settings.retry_after_s)

    class GuardedH11Protocol(H11Protocol):
        _ferkit_address: str | None = None
        _ferkit_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else "?"
            per_client = settings.max_connections_per_client
            if counts.total >= settings.max_connections:
                self.app = refusal_app(503, "too_many_connections", f"the server has {counts.total} open "
                                       "connections, its limit; retry later", wait)
            elif per_client and counts.by_address.get(address, 0) >= per_client:
                self.app = refusal_app(429, "too_many_connections", f"{address} already has {per_client} open "
                                       "connections, the limit per client; reuse a connection or retry later", wait)
            counts.add(address)
            self._ferkit_address = address
            self._ferkit_arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._ferkit_disarm()
            if self._ferkit_address is not None:
                counts.remove(self._ferkit_address)
                self._ferkit_address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                self._ferkit_disarm()
            elif self._ferkit_awaiting_head():
                if self._ferkit_timer is None:  # the first byte of a request on a kept-alive connection
                    self._ferkit_arm()
            else:
                self._ferkit_disarm()

        def _ferkit_awaiting_head(self) -> bool:
            idle_cycle = self.cycle is None or self.cycle.response_complete
            return idle_cycle and self.conn.their_state is h11.IDLE

        def _ferkit_arm(self) -> None:
            self._ferkit_disarm()
            self._ferkit_timer = self.loop.call_later(settings.header_timeout_s, self._ferkit_head_timeout)

        def _ferkit_disarm(self) -> None:
            if self._ferkit_timer is not None:
                self._ferkit_timer.cancel()
                self._ferkit_timer = None

        def _ferkit_head_timeout(self) -> None:
            self._ferkit_timer = None
            if self.transport.is_closing() or not self._ferkit_awaiting_head():
                return
            if self.conn.trailing_data[0]:  # part of a head arrived: say why before closing
                self.transport.write(_json_reply(
                    408, "Request Timeout", "header_timeout",
                    f"the request head did not arrive within {settings.header_timeout_s:g} s"))
            self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(app: Any, settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000,
                   retry_after: Callable[[], int] | None = None, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` with every connection-level limit of ``settings`` applied.

    Extra keyword arguments go to ``uvicorn.Config`` (``log_level``, ``ssl_certfile``, ...).
    """
    import uvicorn

    if retry_after is None:
        admission = getattr(getattr(app, "state", None), "admission", None)
        retry_after = admission.retry_after if admission is not None else None
    return uvicorn.Config(app, host=host, port=port, http=guarded_protocol(settings, retry_after),
                          timeout_keep_alive=settings.keep_alive_s,
                          h11_max_incomplete_event_size=settings.max_header_bytes, **kwargs)
