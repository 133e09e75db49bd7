"""HTTP service tests: every endpoint, every error path, limits, auth, and `ferkit serve` itself.

Success paths run the real default pipeline (shipped model + default detector); slow, failing or
counting behaviour is injected with a fake recognizer so that 503/504 are deterministic.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette ≥ 1.x nags about httpx vs httpx2; both work
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from ferkit.apps.service.app import (  # noqa: E402
    ServiceSettings,
    check_bind,
    create_app,
    is_loopback,
    sniff_format,
)
from ferkit.apps.service.limits import Admission  # noqa: E402
from ferkit.core.detection import DEFAULT_DETECTOR  # noqa: E402
from ferkit.core.recognizer import Recognizer  # noqa: E402
from ferkit.core.results import Analysis, Face, Quality  # noqa: E402
from ferkit.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronauts.jpg"


# ----------------------------------------------------------------------------- fixtures and fakes

class FakeDetector:
    """The one face FakeRecognizer reports readable, for the live-stream tracker."""

    name = "fake-detector"

    def detect(self, image):
        from ferkit.core.detection import Detection

        return [Detection((1.0, 2.0, 30.0, 30.0), 0.99)]


class FakeRecognizer:
    """Stands in for Recognizer: one readable and one unreadable face; can block, sleep or fail on demand."""

    model_name = "fake-model"
    detector_name = "fake-detector"

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None):
        self.gate = gate
        self.error = error
        self.started = threading.Event()
        self.calls = 0
        self.detector = FakeDetector()

    def analyze(self, image, source=None, detections=None, views=None):
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        h, w = image.shape[:2]
        probs = np.array([0.05, 0.0, 0.05, 0.7, 0.1, 0.05, 0.05])
        faces = [
            Face(box=(1.0, 2.0, 30.0, 30.0), score=0.99, landmarks=None, probabilities=probs,
                 quality=Quality(True, None, 30.0, 120.0, None, 0.99)),
            Face(box=(40.0, 2.0, 10.0, 10.0), score=0.9, landmarks=None,
                 quality=Quality(False, "too_small", 10.0, 80.0, None, 0.9)),
        ]
        if detections is not None:  # the live-stream tracker's faces: each gets the readable face's answer
            faces = [Face(box=d.box, score=d.score, landmarks=None, probabilities=probs, quality=faces[0].quality)
                     for d in detections]
        return Analysis(faces=faces, width=w, height=h, source=source, model=self.model_name,
                        detector=self.detector_name, timings_ms={"decode": 0.0, "detect": 1.0, "classify": 1.0,
                                                                 "total": 2.0})


@pytest.fixture(scope="module")
def real_recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture(scope="module")
def real_client(real_recognizer):
    with TestClient(create_app(real_recognizer, ServiceSettings(workers=2))) as client:
        yield client


def make_client(recognizer=None, **settings) -> TestClient:
    return TestClient(create_app(recognizer or FakeRecognizer(), ServiceSettings(**settings)))


@pytest.fixture
def fake_client():
    with make_client() as client:
        yield client


@pytest.fixture(scope="module")
def example_bytes() -> bytes:
    return EXAMPLE.read_bytes()


def encode(ext: str, w: int = 64, h: int = 48) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(img, (5, 5), (w - 5, h - 5), (0, 200, 255), -1)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def png_header_bomb(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w × h pixels (what a decompression bomb looks like before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def jpeg_header_bomb(w: int, h: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0" + sof + \
        b"\0" * 64 + b"\xff\xd9"


def assert_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body


# ----------------------------------------------------------------------------- success paths (real pipeline)

def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("timings_ms", "source")}


def test_analyze_multipart_matches_library(real_client, real_recognizer, example_bytes):
    resp = real_client.post("/v1/analyze", files={"file": ("astronauts.jpg", example_bytes, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    expected = real_recognizer.analyze(example_bytes).to_dict()
    assert set(got) == set(expected)
    assert _strip(got) == _strip(expected)  # exactly Analysis.to_dict()
    assert got["source"] == "astronauts.jpg"
    assert set(got["timings_ms"]) == {"decode", "detect", "classify", "total"}
    faces = got["faces"]
    assert len(faces) >= 2
    assert any(f["readable"] for f in faces) and any(not f["readable"] for f in faces)
    for f in faces:
        if f["readable"]:
            assert f["emotion"] in got["emotions"] and abs(sum(f["probabilities"].values()) - 1) < 1e-2
        else:
            assert f["reason"] and f["emotion"] is None and f["probabilities"] is None


def test_analyze_raw_bytes_and_base64_agree(real_client, example_bytes):
    raw = real_client.post("/v1/analyze", content=example_bytes, headers={"Content-Type": "image/jpeg"})
    b64 = real_client.post("/v1/analyze", json={"image": base64.b64encode(example_bytes).decode()})
    url = real_client.post("/v1/analyze", json={
        "image": "data:image/jpeg;base64," + base64.b64encode(example_bytes).decode(), "name": "../x/a.jpg"})
    octet = real_client.post("/v1/analyze", content=example_bytes,
                             headers={"Content-Type": "application/octet-stream"})
    for r in (raw, b64, url, octet):
        assert r.status_code == 200, r.text
    assert raw.json()["source"] is None
    assert url.json()["source"] == "a.jpg"  # path stripped from a client-supplied name
    assert _strip(raw.json()) == _strip(b64.json()) == _strip(url.json()) == _strip(octet.json())


@pytest.mark.parametrize("ext,mime", [(".png", "image/png"), (".webp", "image/webp"), (".bmp", "image/bmp"),
                                      (".jpg", "image/jpeg")])
def test_analyze_accepts_each_format(fake_client, ext, mime):
    resp = fake_client.post("/v1/analyze", content=encode(ext), headers={"Content-Type": mime})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["width"], resp.json()["height"]) == (64, 48)


def test_annotate_jpeg_png_and_bars(real_client, example_bytes):
    jpg = real_client.post("/v1/annotate", files={"file": ("a.jpg", example_bytes, "image/jpeg")})
    assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
    assert jpg.content[:3] == b"\xff\xd8\xff"
    n = int(jpg.headers["x-faces"])
    assert n >= 2 and 0 < int(jpg.headers["x-readable-faces"]) < n
    img = cv2.imdecode(np.frombuffer(jpg.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (720, 1280, 3)
    png = real_client.post("/v1/annotate?format=png&bars=true", content=example_bytes,
                           headers={"Content-Type": "image/jpeg"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    plain = cv2.imdecode(np.frombuffer(real_client.post("/v1/annotate?format=png", content=example_bytes,
                         headers={"Content-Type": "image/jpeg"}).content, np.uint8), cv2.IMREAD_COLOR)
    barred = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(example_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert np.any(plain != original)  # boxes drawn
    assert np.any(barred != plain)  # bars drawn on top


def test_annotate_bad_format_is_json_422(fake_client):
    body = assert_error(fake_client.post("/v1/annotate?format=gif", content=encode(".png"),
                                         headers={"Content-Type": "image/png"}), 422, "validation_error")
    assert "format" in body["detail"]


def test_models(real_client):
    resp = real_client.get("/v1/models")
    assert resp.status_code == 200
    body = resp.json()
    names = [m["name"] for m in body["models"]]
    assert body["default_model"] in names
    default = next(m for m in body["models"] if m["default"])
    assert 0 < default["val_accuracy"] < 1
    detectors = [d["name"] for d in body["detectors"]]
    assert body["default_detector"] in detectors
    assert body["loaded"] == {"model": body["default_model"], "detector": body["default_detector"]}
    assert body["limits"]["max_upload_bytes"] > 0
    assert "file" not in json.dumps(body["models"])  # no server paths leaked
    from ferkit.core.runtime import resolve_runtime

    assert real_client.get("/healthz").json()["runtime"] == resolve_runtime()  # what the loaded models run on


def test_healthz_page_static_and_docs(fake_client):
    health = fake_client.get("/healthz").json()
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["model"] == "fake-model"
    page = fake_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="file"' in page.text and "/static/app.js" in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = fake_client.get(f"/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    docs = fake_client.get("/docs")  # offline: every script and style it loads is served here
    assert docs.status_code == 200 and "http" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', docs.text))
    assert "'/openapi.json'" in docs.text
    for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs.text):
        assert fake_client.get(asset).status_code == 200
    spec = fake_client.get("/openapi.json").json()
    assert {"/v1/analyze", "/v1/annotate", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]


# ----------------------------------------------------------------------------- input errors

def test_413_declared_and_streamed_size():
    with make_client(max_upload_bytes=1000) as c:
        big = encode(".png", 400, 400) + b"\0" * 2000
        assert_error(c.post("/v1/analyze", content=big, headers={"Content-Type": "image/png"}), 413,
                     "payload_too_large")

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(10):
                yield b"\x89PNG\r\n\x1a\n" + b"\0" * 500

        streamed = assert_error(c.post("/v1/analyze", content=chunks(), headers={"Content-Type": "image/png"}), 413)
        assert streamed["detail"].startswith("image is over the 1000 bytes limit")
        assert_error(c.post("/v1/analyze", files={"file": ("a.png", big, "image/png")}), 413)
        b64 = base64.b64encode(big).decode()
        assert_error(c.post("/v1/analyze", json={"image": b64}), 413)
        assert c.get("/healthz").json()["in_flight"] == 0  # every refused request gave its slot back


@pytest.mark.parametrize("body,headers,files", [
    (b"hello", {"Content-Type": "text/plain"}, None),
    (b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, None),
    (b"GIF-ish but not", {}, None),
    (b"not an image at all", {"Content-Type": "image/jpeg"}, None),  # magic bytes decide
    (encode(".tiff"), {"Content-Type": "image/tiff"}, None),  # size not readable from header → refused
    (encode(".tiff"), {"Content-Type": "application/octet-stream"}, None),
    (None, None, {"file": ("a.txt", b"just text", "text/plain")}),
    (None, None, {"file": ("a.jpg", b"just text", "image/jpeg")}),
])
def test_415_type_and_magic(fake_client, body, headers, files):
    if files:
        resp = fake_client.post("/v1/analyze", files=files)
    else:
        resp = fake_client.post("/v1/analyze", content=body, headers=headers)
    assert_error(resp, 415, "unsupported_media_type")


def test_415_data_url_of_other_type(fake_client):
    data = base64.b64encode(b"hello").decode()
    assert_error(fake_client.post("/v1/analyze", json={"image": f"data:text/plain;base64,{data}"}), 415)


@pytest.mark.parametrize("bomb", [png_header_bomb(100_000, 100_000), jpeg_header_bomb(65_000, 65_000)])
def test_decompression_bomb_refused_from_header(bomb):
    rec = FakeRecognizer()
    with make_client(rec) as c:
        body = assert_error(c.post("/v1/analyze", content=bomb, headers={"Content-Type": "image/png"}), 413,
                            "too_many_pixels")
        assert "MP" in body["detail"]
    assert rec.calls == 0


def test_real_image_over_pixel_cap():
    with make_client(max_pixels=1_000_000) as c:
        assert_error(c.post("/v1/analyze", content=encode(".png", 1200, 1000), headers={"Content-Type": "image/png"}),
                     413, "too_many_pixels")
        assert c.post("/v1/analyze", content=encode(".png", 1000, 1000),
                      headers={"Content-Type": "image/png"}).status_code == 200


def test_422_truncated_and_corrupt(fake_client, example_bytes):
    assert_error(fake_client.post("/v1/analyze", content=example_bytes[:20000],
                                  headers={"Content-Type": "image/jpeg"}), 422, "unreadable_image")
    png = encode(".png", 200, 200)
    corrupt = png[:40] + bytes(len(png) - 40)
    assert_error(fake_client.post("/v1/analyze", content=corrupt, headers={"Content-Type": "image/png"}), 422)
    assert_error(fake_client.post("/v1/analyze", content=b"\x89PNG\r\n\x1a\n\0\0",
                                  headers={"Content-Type": "image/png"}), 422, "unreadable_image")


@pytest.mark.parametrize("payload,code", [
    ({"image": "!!!! not base64 ????"}, "bad_base64"),
    ({"image": "data:image/png,notbase64"}, "bad_base64"),
    ({"image": "QUJDR"}, "bad_base64"),  # truncated
    ({"picture": "abc"}, "bad_json"),
    ({"image": 42}, "bad_json"),
    ([1, 2], "bad_json"),
])
def test_400_bad_json_and_base64(fake_client, payload, code):
    assert_error(fake_client.post("/v1/analyze", json=payload), 400, code)


def test_400_malformed_bodies(fake_client):
    assert_error(fake_client.post("/v1/analyze", content=b"{not json", headers={"Content-Type": "application/json"}),
                 400, "bad_json")
    for ctype in ("image/jpeg", "application/json", "multipart/form-data; boundary=x"):
        assert_error(fake_client.post("/v1/analyze", content=b"", headers={"Content-Type": ctype}), 400,
                     "empty_body")
    assert_error(fake_client.post("/v1/analyze", json={"image": ""}), 400, "empty_body")
    assert_error(fake_client.post("/v1/analyze", data={"name": "x"}, files={"other": ("", b"")}), 400)
    assert_error(fake_client.post("/v1/analyze", content=b"--x\r\nbroken",
                                  headers={"Content-Type": "multipart/form-data"}), 400)


# ----------------------------------------------------------------------------- routing errors and auth

def test_404_405_json(fake_client):
    body = assert_error(fake_client.get("/v2/nothing"), 404, "not_found")
    assert "/docs" in body["detail"]
    assert_error(fake_client.get("/static/missing.js"), 404)
    resp = fake_client.get("/v1/analyze")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"


def test_500_is_json_without_traceback():
    rec = FakeRecognizer(error=RuntimeError("secret internal state"))
    with TestClient(create_app(rec, ServiceSettings()), raise_server_exceptions=False) as c:
        body = assert_error(c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}), 500)
        assert "secret" not in body["detail"]


def test_api_key():
    with make_client(api_key="s3cret-key-0123456789") as c:
        png = {"content": encode(".png"), "headers": {"Content-Type": "image/png"}}
        assert_error(c.post("/v1/analyze", **png), 401, "unauthorized")
        assert_error(c.post("/v1/analyze", content=png["content"],
                            headers={"Content-Type": "image/png", "X-API-Key": "wrong"}), 401)
        assert_error(c.get("/v1/models"), 401)
        assert_error(c.post("/v1/annotate", **png), 401)
        ok = c.post("/v1/analyze", content=png["content"],
                    headers={"Content-Type": "image/png", "X-API-Key": "s3cret-key-0123456789"})
        assert ok.status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret-key-0123456789"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes need no key
        assert c.get("/").status_code == 200  # the page asks for the key itself


def test_host_allow_list():
    with make_client(allowed_hosts=("127.0.0.1", "localhost", "::1")) as c:
        assert_error(c.get("/healthz"), 400, "bad_host")  # TestClient sends Host: testserver
        assert_error(c.get("/", headers={"Host": "evil.example:8000"}), 400, "bad_host")
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200


# ----------------------------------------------------------------------------- saturation and timeouts

def _post_in_thread(client: TestClient, results: list) -> threading.Thread:
    def run():
        results.append(client.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}))
    t = threading.Thread(target=run)
    t.start()
    return t


def test_503_when_saturated():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    with make_client(rec, workers=1, max_queue=0, retry_after_s=2) as c:
        results: list = []
        t = _post_in_thread(c, results)
        try:
            assert rec.started.wait(10)  # the only slot is now busy
            resp = c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"})
            assert_error(resp, 503, "busy")
            assert resp.headers["retry-after"] == "2"
            assert c.get("/healthz").json()["in_flight"] == 1
        finally:
            gate.set()
            t.join(10)
        assert results[0].status_code == 200
        assert c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}).status_code == 200


def test_queue_waits_instead_of_503():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    with make_client(rec, workers=1, max_queue=1) as c:
        results: list = []
        t1 = _post_in_thread(c, results)
        assert rec.started.wait(10)
        t2 = _post_in_thread(c, results)  # queued behind the first
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["in_flight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert_error(c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}), 503)
        gate.set()
        t1.join(10)
        t2.join(10)
        assert [r.status_code for r in results] == [200, 200]


def test_504_timeout_keeps_slot_until_work_ends():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    with make_client(rec, workers=1, max_queue=0, timeout_s=0.2) as c:
        try:
            t0 = time.monotonic()
            assert_error(c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}), 504,
                         "timeout")
            assert time.monotonic() - t0 < 5
            # The abandoned inference still runs: its slot is not handed out again until it ends.
            assert c.get("/healthz").json()["in_flight"] == 1
            assert_error(c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"}), 503)
        finally:
            gate.set()
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("/healthz").json()["in_flight"] == 0


# ----------------------------------------------------------------------------- no disk, helpers, CLI

def test_nothing_written_to_disk(monkeypatch, tmp_path):
    import tempfile

    import starlette.formparsers

    def refuse(*a, **k):
        raise AssertionError("the service must not create files")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    monkeypatch.chdir(tmp_path)
    # Over 1 MiB: Starlette's own form parser would spill this to a temporary file.
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), np.uint8)
    big = cv2.imencode(".png", noise)[1].tobytes()
    assert len(big) > 1024 * 1024
    with make_client() as c:
        assert c.post("/v1/analyze", files={"file": ("big.png", big, "image/png")}).status_code == 200
        assert c.post("/v1/annotate", files={"file": ("big.png", big, "image/png")}).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_sniff_and_loopback_helpers():
    assert sniff_format(encode(".jpg")) == "jpeg" and sniff_format(encode(".png")) == "png"
    assert sniff_format(encode(".webp")) == "webp" and sniff_format(b"GIF89a....") == "gif"
    assert sniff_format(b"hello") is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    assert check_bind("127.0.0.1", None) == []
    with pytest.raises(Exception, match="API key"):
        check_bind("0.0.0.0", None)
    assert check_bind("0.0.0.0", None, insecure=True)  # allowed, with a warning
    assert check_bind("0.0.0.0", "a-long-enough-random-key-123")  # TLS warning
    with pytest.raises(ValueError):
        ServiceSettings(timeout_s=0)


def test_cli_refuses_public_host_without_key(capsys, monkeypatch):
    from ferkit.apps.cli import main

    monkeypatch.delenv("FERKIT_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    assert "API key" in capsys.readouterr().err
    assert main(["serve", "--workers", "-1"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_end_to_end(example_bytes, tmp_path):
    """`ferkit serve` in a subprocess: real default pipeline, API key from the environment, clean Ctrl+C."""
    import httpx

    port = _free_port()
    env = {**os.environ, "FERKIT_API_KEY": "test-key-abcdefghijklmnop", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ferkit", "serve", "--port", str(port), "--workers", "2",
                             "--log-level", "warning"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        headers = {"X-API-Key": "test-key-abcdefghijklmnop", "Content-Type": "image/jpeg"}
        r = httpx.post(f"{base}/v1/analyze", content=example_bytes, headers=headers, timeout=30)
        assert r.status_code == 200 and len(r.json()["faces"]) >= 2
        assert r.json()["detector"] == DEFAULT_DETECTOR
        assert httpx.post(f"{base}/v1/analyze", content=example_bytes, headers={"Content-Type": "image/jpeg"},
                          timeout=30).status_code == 401
        assert "server" not in {k.lower() for k in r.headers}  # no version banner
    finally:
        proc.send_signal(2)  # SIGINT = Ctrl+C
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "starting http://127.0.0.1" in err
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


# ----------------------------------------------------------------------------- issue 13: queue, budget, inputs

def _hold(client: TestClient, n: int, results: list, **post) -> list[threading.Thread]:
    """Start ``n`` requests in threads and wait until the service has admitted all of them."""
    threads = []
    for _ in range(n):
        threads.append(_post_in_thread(client, results))
    deadline = time.monotonic() + 10
    while client.get("/healthz").json()["in_flight"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/healthz").json()["in_flight"] == n
    return threads


def test_retry_after_is_computed_from_the_queue():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    app = create_app(rec, ServiceSettings(workers=1, max_queue=1, timeout_s=60))
    app.state.admission.record(4.0)  # as if one analysis had taken 4 s
    with TestClient(app) as c:
        results: list = []
        threads = _hold(c, 2, results)  # one running, one queued
        try:
            resp = c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"})
            assert_error(resp, 503, "busy")
            assert resp.headers["retry-after"] == "8"  # 2 in the queue × 4 s ÷ 1 worker
            assert c.get("/healthz").json()["retry_after_s"] == 8
        finally:
            gate.set()
            for t in threads:
                t.join(10)
        assert [r.status_code for r in results] == [200, 200]


def test_request_that_would_time_out_in_the_queue_is_refused_at_once():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    app = create_app(rec, ServiceSettings(workers=1, max_queue=8, timeout_s=5))
    app.state.admission.record(4.0)
    with TestClient(app) as c:
        results: list = []
        threads = _hold(c, 1, results)
        try:  # it would wait 4 s for the running one, then take 4 s itself: over the 5 s timeout
            resp = c.post("/v1/analyze", content=encode(".png"), headers={"Content-Type": "image/png"})
            assert_error(resp, 503, "busy")
            assert resp.headers["retry-after"] == "4"
        finally:
            gate.set()
            for t in threads:
                t.join(10)


def test_admission_estimate():
    a = Admission(limit=4, workers=2, floor_s=1)
    assert a.retry_after() == 1  # nothing measured yet: the floor
    a.record(3.0)
    assert a.try_acquire() and a.try_acquire() and a.try_acquire()
    assert a.retry_after() == 5  # ceil(3 × 3 s ÷ 2)
    assert not a.try_acquire(budget_s=2.0)  # would start after 3 s
    a.record(1.0)
    assert a.mean_s == pytest.approx(3.0 + 0.2 * (1.0 - 3.0))
    for _ in range(3):
        a.release()
    assert a.active == 0 and a.retry_after() == 1
    a.record(1000.0)  # analyses slower than any budget: a free worker still takes the next request
    assert a.try_acquire(budget_s=30.0) and a.try_acquire(budget_s=30.0)
    assert not a.try_acquire(budget_s=30.0)  # but nobody is queued behind them to time out


def test_body_memory_budget_refuses_with_503():
    gate = threading.Event()
    rec = FakeRecognizer(gate=gate)
    noise = np.random.default_rng(1).integers(0, 255, (17, 17, 3), np.uint8)
    png = cv2.imencode(".png", noise)[1].tobytes()
    assert 900 < len(png) < 1000  # base64: ~1270 bytes, two of them over the 2400-byte budget
    body = {"image": base64.b64encode(png).decode()}
    settings = ServiceSettings(workers=1, max_queue=4, max_upload_bytes=1000, max_body_memory_bytes=2400)
    with TestClient(create_app(rec, settings)) as c:
        results: list = []
        t = threading.Thread(target=lambda: results.append(c.post("/v1/analyze", json=body)))
        t.start()
        try:
            assert rec.started.wait(10)
            assert c.app.state.inference.budget.used > 1200  # held while its analysis runs
            assert_error(c.post("/v1/analyze", json=body), 503, "busy")
        finally:
            gate.set()
            t.join(10)
        assert results[0].status_code == 200
        assert c.app.state.inference.budget.used == 0
        assert c.post("/v1/analyze", json=body).status_code == 200


def test_upload_with_exif_orientation_is_analysed_upright():
    from tests.test_images import jpeg_with_orientation

    wide = np.zeros((48, 96, 3), np.uint8)
    cv2.rectangle(wide, (10, 10), (40, 30), (0, 200, 255), -1)
    data = jpeg_with_orientation(wide, 6)  # stored 48 wide × 96 high, shown 96 × 48
    rec = FakeRecognizer()
    with make_client(rec) as c:
        resp = c.post("/v1/analyze", content=data, headers={"Content-Type": "image/jpeg"})
        assert resp.status_code == 200, resp.text
        assert (resp.json()["width"], resp.json()["height"]) == (96, 48)


def test_motion_photo_upload_is_accepted(fake_client, example_bytes):
    motion = example_bytes + b"\0\0\0\x18ftypmp42" + bytes(100_000)
    resp = fake_client.post("/v1/analyze", content=motion, headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["width"], resp.json()["height"]) == (1280, 720)


def test_settings_are_checked_and_the_cli_uses_their_defaults():
    for bad in ({"body_timeout_s": 0}, {"header_timeout_s": -1}, {"max_connections_per_client": -1},
                {"max_body_memory_bytes": 10}):
        with pytest.raises(ConfigError):
            ServiceSettings(**bad)
    from ferkit.apps.cli import build_parser

    args = build_parser().parse_args(["serve"])
    d = ServiceSettings
    assert (args.queue, args.timeout, args.body_timeout, args.header_timeout, args.max_client_connections) == (
        d.max_queue, d.timeout_s, d.body_timeout_s, d.header_timeout_s, d.max_connections_per_client)
    assert args.max_upload_mb * 2**20 == d.max_upload_bytes and args.max_megapixels * 1e6 == d.max_pixels


def test_limits_are_published(fake_client):
    limits = fake_client.get("/v1/models").json()["limits"]
    assert limits["body_timeout_s"] == ServiceSettings.body_timeout_s
    assert limits["max_connections_per_client"] == ServiceSettings.max_connections_per_client


# ----------------------------------------------------------------------------- live streams (/v1/stream/{id})

def _stream_frames(n: int, step: int = 6) -> list[bytes]:
    """JPEG frames 480×360 of the example's grey-background astronaut face sliding right."""
    photo = cv2.imread(str(EXAMPLE))
    head = cv2.resize(photo[60:360, 40:300], (130, 150), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        img = np.full((360, 480, 3), 110, np.uint8)
        img[100:250, 40 + step * i:170 + step * i] = head
        frames.append(cv2.imencode(".jpg", img)[1].tobytes())
    return frames


def test_a_live_stream_tracks_its_face_like_ferkit_camera(real_client):
    # One face sliding across 12 frames: reported once confirmed, always as track 1; the detector runs on
    # a schedule (not on every frame); probabilities are smoothed over time.
    answers = []
    for frame in _stream_frames(12):
        r = real_client.post("/v1/stream/page-test-0001", content=frame, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert [a["frame"] for a in answers] == list(range(12))
    tracked = [a for a in answers if a["faces"]]
    assert len(tracked) >= 8 and {f["track_id"] for a in tracked for f in a["faces"]} == {1}
    assert all(len(a["faces"]) == 1 and a["faces"][0]["readable"] for a in tracked)
    assert 2 <= sum(a["detected"] for a in answers) < 12  # predicted between detections
    xs = [a["faces"][0]["box"][0] for a in tracked]
    assert xs == sorted(xs)  # the box follows the face
    assert real_client.get("/healthz").json()["live_streams"] >= 1
    # Another stream id is another tracker: its face is new there, so it is not reported on its first frame.
    other = real_client.post("/v1/stream/page-test-0002", content=_stream_frames(1)[0],
                             headers={"Content-Type": "image/jpeg"}).json()
    assert other["frame"] == 0 and other["faces"] == []


def test_live_stream_ids_and_limits():
    with make_client(max_streams=1) as client:
        frame = encode(".jpg")
        bad = client.post("/v1/stream/x", content=frame, headers={"Content-Type": "image/jpeg"})
        assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
        empty = client.post("/v1/stream/stream-aaaa", content=b"", headers={"Content-Type": "image/jpeg"})
        assert empty.status_code == 400
        garbage = client.post("/v1/stream/stream-aaaa", content=b"\xff\xd8\xff" + b"x" * 200,
                              headers={"Content-Type": "image/jpeg"})
        assert garbage.status_code == 422 and garbage.json()["error"] == "unreadable_image"


def test_live_streams_are_bounded_and_serialised():
    from ferkit.apps.service.streams import StreamTable
    from ferkit.apps.service.upload import ServiceError

    class Analyzer:
        def __init__(self, *_):
            self.gate = threading.Event()

        def process(self, frame, index):
            self.gate.wait(5)
            from ferkit.apps.video.analyzer import FrameResult

            return FrameResult(index=index, detected=True, samples=[], ended=[])

    table = StreamTable(recognizer=None, max_streams=2, idle_s=0.2)
    import ferkit.apps.video as video

    original = video.FrameAnalyzer
    video.FrameAnalyzer = Analyzer
    try:
        frame = np.zeros((48, 64, 3), np.uint8)
        table._stream("stream-one", (64, 48)).analyzer.gate.set()
        assert table.analyze("stream-one", frame)["frame"] == 0
        assert table.analyze("stream-one", frame)["frame"] == 1  # the same stream goes on
        table._stream("stream-two", (64, 48))
        with pytest.raises(ServiceError) as full:
            table._stream("stream-three", (64, 48))
        assert full.value.status == 503 and "Retry-After" in full.value.headers
        # A frame of another size starts the stream afresh.
        assert table._stream("stream-one", (32, 24)).frames == 0
        # Two frames of one stream at once: the second is refused, not queued behind the first.
        busy = table._stream("stream-two", (64, 48))
        t = threading.Thread(target=table.analyze, args=("stream-two", frame))
        t.start()
        while not busy.busy.locked():
            time.sleep(0.01)
        with pytest.raises(ServiceError) as second:
            table.analyze("stream-two", frame)
        assert second.value.status == 409
        busy.analyzer.gate.set()
        t.join()
        time.sleep(0.3)  # both idle past idle_s: forgotten, so a new stream fits
        table._stream("stream-three", (64, 48))
        assert len(table) == 1
    finally:
        video.FrameAnalyzer = original


@pytest.mark.parametrize("value", ["", "bytes=", "bytes=5-2", "bytes=999999-", "items=0-1", "bytes=0-1"])
def test_page_files_are_sent_whole_whatever_the_range_header(fake_client, value):
    # Starlette would answer the malformed ones with plain-text 400/416 instead of the JSON errors.
    whole = fake_client.get("/static/app.js")
    r = fake_client.get("/static/app.js", headers={"Range": value})
    assert r.status_code == 200 and r.content == whole.content and "accept-ranges" not in r.headers
