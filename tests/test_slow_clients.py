"""Slow and abusive clients against a real uvicorn server on loopback, with real sockets.

The server runs in a thread with :func:`ferkit.apps.service.netguard.uvicorn_config` (what ``ferkit serve`` uses) and
the fake recognizer of ``test_service.py``. Clients that stall come from their own loopback addresses
(127.0.0.2, ...; Linux routes all of 127.0.0.0/8 to ``lo``) where the per-client cap must not be what
keeps the normal request working. Waits are bounded by socket and HTTP timeouts (hang guards), never
asserted as performance figures: those are in ``benchmarks/load_test.py --stalled``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from ferkit.apps.service.app import create_app  # noqa: E402
from ferkit.apps.service.limits import ServiceSettings  # noqa: E402
from tests.test_service import FakeRecognizer, encode  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux: clients bind 127.0.0.x source addresses")

PNG = encode(".png")
HANG_GUARD_S = 15  # generous bound on every wait below: only a hang would reach it


@contextlib.contextmanager
def live_server(recognizer=None, **settings) -> Iterator[tuple[int, object]]:
    """A real uvicorn server (port, app) on 127.0.0.1 with every limit of ``settings``."""
    import uvicorn

    from ferkit.apps.service.netguard import uvicorn_config

    s = ServiceSettings(**settings)
    app = create_app(recognizer or FakeRecognizer(), s)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, s, port=port, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_GUARD_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join(HANG_GUARD_S)
        sock.close()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def stalled_upload(port: int, source: str = "127.0.0.1", declared: int = 150_000, sent: int = 1024) -> socket.socket:
    """Headers and ``sent`` bytes of a body declared as ``declared`` bytes, then nothing."""
    s = connect(port, source)
    s.sendall(f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
              f"Content-Length: {declared}\r\n\r\n".encode() + PNG[:8] + bytes(sent - 8))
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def is_open(s: socket.socket) -> bool:
    """True while the server has neither closed nor answered this connection."""
    s.setblocking(False)
    try:
        s.recv(1)  # returns b"" once closed, or the first byte of an answer
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def normal_request(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/analyze", content=PNG, headers={"Content-Type": "image/png"},
                      timeout=HANG_GUARD_S)


def test_stalled_uploads_hold_no_inference_slot():
    """Issue 13: 20 clients stall mid-body; with one slot in all, a normal request is still served."""
    with live_server(workers=1, max_queue=0, body_timeout_s=60) as (port, app):
        stalled = [stalled_upload(port) for _ in range(20)]
        try:
            time.sleep(0.2)  # let the server read every stalled head and its first kilobyte
            resp = normal_request(port)
            assert resp.status_code == 200, resp.text
            assert all(is_open(s) for s in stalled)  # served while every stalled client still held its connection
            assert app.state.admission.active == 0
        finally:
            for s in stalled:
                s.close()


def test_fifty_stalled_clients_from_fifty_addresses():
    """The bar of issue 13: with 50 stalled clients holding connections, a normal request gets 200."""
    with live_server(body_timeout_s=60) as (port, _):
        stalled = [stalled_upload(port, source=f"127.0.0.{i}") for i in range(2, 52)]
        try:
            time.sleep(0.2)
            assert normal_request(port).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=HANG_GUARD_S).status_code == 200
            assert all(is_open(s) for s in stalled)
        finally:
            for s in stalled:
                s.close()


def test_half_sent_headers_are_closed_after_the_header_timeout():
    with live_server(header_timeout_s=0.5) as (port, _):
        half = []
        for _ in range(50):
            s = connect(port)
            s.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            half.append(s)
        silent = connect(port)  # a connection that never sends a byte
        try:
            for s in half:
                answer = read_all(s)  # returns once the server closes: a hang would hit the socket timeout
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert b'"header_timeout"' in answer
            assert read_all(silent) == b""  # closed without a word: it never started a request
            assert normal_request(port).status_code == 200
        finally:
            for s in [*half, silent]:
                s.close()


def test_a_slow_head_is_closed_even_if_it_keeps_trickling():
    with live_server(header_timeout_s=0.6) as (port, _):
        s = connect(port)
        t0 = time.monotonic()
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
                s.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - t0 > HANG_GUARD_S:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server while trickling: what should happen
        answer = read_all(s)
        s.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t0 < HANG_GUARD_S


def test_body_that_stops_arriving_gets_408_and_the_connection_closed():
    with live_server(body_timeout_s=0.5) as (port, app):
        s = stalled_upload(port)
        answer = read_all(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"connection: close" in answer.lower() and b'"request_timeout"' in answer
        assert app.state.inference.budget.used == 0  # its kilobyte of body memory was given back


def test_early_refusal_closes_a_connection_whose_body_was_not_read():
    with live_server(max_upload_bytes=1000) as (port, _):
        s = stalled_upload(port, declared=10_000_000)  # 413 from Content-Length, before the body is read
        answer = read_all(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()


def test_connections_per_client_address_are_capped():
    with live_server(max_connections_per_client=3, body_timeout_s=60) as (port, _):
        held = [stalled_upload(port, source="127.0.0.5") for _ in range(3)]
        try:
            time.sleep(0.1)
            extra = connect(port, "127.0.0.5")
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_all(extra)
            extra.close()
            assert answer.startswith(b"HTTP/1.1 429 "), answer[:80]
            assert b"retry-after:" in answer.lower() and b'"too_many_connections"' in answer
            other = connect(port, "127.0.0.6")  # another address is not affected
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert read_all(other).startswith(b"HTTP/1.1 200 ")
            other.close()
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + HANG_GUARD_S
        while True:  # once the held connections are gone, the address may connect again
            again = connect(port, "127.0.0.5")
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = read_all(again)
            again.close()
            if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_total_connections_are_capped():
    with live_server(max_connections=2, max_connections_per_client=0, body_timeout_s=60) as (port, _):
        held = [stalled_upload(port, source=f"127.0.0.{i}") for i in (7, 8)]
        try:
            time.sleep(0.1)
            extra = connect(port, "127.0.0.9")
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_all(extra).startswith(b"HTTP/1.1 503 ")
            extra.close()
        finally:
            for s in held:
                s.close()


def test_client_that_disconnects_mid_body_is_not_a_server_error(caplog):
    with caplog.at_level(logging.ERROR), live_server() as (port, app):
        for _ in range(5):
            stalled_upload(port).close()
        assert normal_request(port).status_code == 200
        deadline = time.monotonic() + HANG_GUARD_S
        while app.state.inference.budget.used and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.inference.budget.used == 0
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()]
