"""End-to-end test of the web page in real headless Chromium (Playwright driving the system browser).

A real uvicorn server with the default pipeline runs on a free loopback port in a thread. Skipped
only when Chromium or Playwright is missing *and* the environment variable CI is unset; in CI a
missing browser is a failure. Set FERKIT_SCREENSHOT=path to also save a screenshot after the upload
(that is how docs/img/service.png is made).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronauts.jpg"
CHROMIUM = os.environ.get("FERKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The network is closed in CI: without the background-networking flags Chromium stalls on start-up.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # a fake camera for the live mode, allowed without a permission prompt
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def _requirements() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "fastapi/uvicorn are not installed (pip install 'ferkit[serve]')"
    return None


_missing = _requirements()
if _missing and not os.environ.get("CI"):
    pytest.skip(_missing, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    assert _missing is None, f"browser test cannot run in CI: {_missing}"
    import uvicorn

    from ferkit.apps.service.app import ServiceSettings, create_app
    from ferkit.core.recognizer import Recognizer

    port = _free_port()
    app = create_app(Recognizer(), ServiceSettings(workers=2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # one per module: the sync API cannot be nested
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


def test_upload_shows_table_and_annotated_image(server_url, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url + "/")
    page.wait_for_selector("body[data-state=ready]")
    page.wait_for_function("() => document.getElementById('model-info').textContent.includes('model')")
    page.set_input_files("#file", str(EXAMPLE))
    page.wait_for_selector("body[data-state=done]", timeout=30_000)

    rows = page.locator("#faces tbody tr")
    n = rows.count()
    assert n >= 2, "expected several faces in the example photo"
    readable = page.locator("#faces tbody tr[data-readable=true]").count()
    unreadable = page.locator("#faces tbody tr[data-readable=false]").count()
    assert readable >= 1 and unreadable >= 1 and readable + unreadable == n
    assert "unreadable:" in page.locator("#faces tbody tr[data-readable=false]").first.inner_text()
    assert page.locator("#faces tbody tr[data-readable=true] .probs").first.is_visible()
    summary = page.locator("#summary").inner_text()
    assert f"{n} faces" in summary and f"{readable} readable" in summary

    img = page.locator("#annotated")
    assert img.is_visible()
    natural = page.evaluate("[document.getElementById('annotated').naturalWidth, "
                            "document.getElementById('annotated').naturalHeight]")
    assert natural == [1280, 720]
    assert page.locator("#error").is_hidden()
    assert not errors, errors

    shot = os.environ.get("FERKIT_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot, full_page=True)
    page.close()


def test_phone_layout_and_bad_file(server_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    page.goto(server_url + "/")
    page.wait_for_selector("body[data-state=ready]")
    page.set_input_files("#file", str(EXAMPLE))
    page.wait_for_selector("body[data-state=done]", timeout=30_000)
    # Nothing wider than the phone screen except inside the scrollable table wrapper.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    box = page.locator("#annotated").bounding_box()
    assert box and box["width"] <= 390
    assert page.locator("#mode-camera").bounding_box()["height"] >= 44  # touch-sized

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert page.locator("#error").is_visible()
    assert page.locator("#error").inner_text().strip()
    page.close()


def _y4m_of_example(path: Path, frames: int = 3) -> Path:
    """A short Y4M video of the example photo: Chromium's fake camera plays (and loops) it."""
    import cv2

    img = cv2.resize(cv2.imread(str(EXAMPLE)), (640, 360), interpolation=cv2.INTER_AREA)
    yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as f:
        f.write(b"YUV4MPEG2 W640 H360 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv)
    return path


def test_camera_mode_streams_frames_and_draws_boxes(server_url, playwright, tmp_path):
    video = _y4m_of_example(tmp_path / "camera.y4m")
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={video}"])
    try:
        context = b.new_context(permissions=["camera"])
        page = context.new_page()
        streamed = []
        page.on("response", lambda r: streamed.append(r) if "/v1/stream/" in r.url and r.ok else None)
        page.goto(server_url + "/")
        page.wait_for_selector("body[data-state=ready]")
        page.click("#mode-camera")
        # Frames are sent one at a time and answered; the counter and frames/s move.
        page.wait_for_function("() => Number(document.getElementById('fps').dataset.frames || 0) >= 8",
                               timeout=60_000)
        assert page.locator("#fps").inner_text().endswith("frames/s")
        assert float(page.locator("#fps").inner_text().split()[0]) > 0
        assert "faces" in page.locator("#camera-status").inner_text()
        assert not page.locator("#camera-status").inner_text().startswith("0 faces")
        # The frames go to one live stream, tracked as `ferkit camera` tracks: each face keeps its id and
        # the detector does not run on every frame.
        answers = [r.json() for r in streamed[:8]]
        assert len({a["stream"] for a in answers}) == 1
        ids = {f["track_id"] for a in answers for f in a["faces"]}
        assert ids and len(ids) == max(len(a["faces"]) for a in answers)  # no face got a second id
        assert not all(a["detected"] for a in answers)
        # Boxes and labels drawn on the overlay canvas.
        painted = page.evaluate("""() => {
            const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            return n;
        }""")
        assert painted > 500
        assert page.locator("#error").is_hidden()
        page.click("#camera-stop")
        assert page.evaluate("document.getElementById('video').srcObject === null")
    finally:
        b.close()
