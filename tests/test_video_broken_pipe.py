"""`ferkit video ... | head -1` and `ferkit camera --headless | head -1`: no traceback, exit 141 (as `analyze`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.apps.cli import EXIT_STDOUT_CLOSED, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronauts.jpg"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A face drifting over a grey background, 60 frames (long enough to outlive the reader)."""
    path = tmp_path_factory.mktemp("pipe") / "drift.mp4"
    img = cv2.imread(str(EXAMPLE))
    scale = 150 / img.shape[0]
    head = cv2.resize(img, (int(img.shape[1] * scale), 150), interpolation=cv2.INTER_AREA)[:, :130]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    for i in range(60):
        frame = np.full((240, 320, 3), 110, np.uint8)
        x = 20 + (i % 30) * 5
        frame[40:190, x:x + 130] = head
        w.write(frame)
    w.release()
    return path


class ClosesAfterOneLine:
    """A stdout whose reader goes away after the first line (what `head -1` does)."""

    def __init__(self) -> None:
        self.lines = 0
        self.text = ""

    def write(self, s: str) -> int:
        if self.lines >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines += s.count("\n")
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("json_out", [True, False])
def test_video_summary_to_a_closed_stdout(clip: Path, tmp_path: Path, monkeypatch, json_out: bool):
    monkeypatch.setattr(sys, "stdout", ClosesAfterOneLine())
    args = ["video", str(clip), "--no-video", "--results", str(tmp_path), "--no-progress", "--max-frames", "10"]
    assert main(args + (["--json"] if json_out else [])) == EXIT_STDOUT_CLOSED
    assert (tmp_path / "drift.summary.json").exists()  # the outputs were written before the summary was printed


def test_camera_headless_piped_into_head(clip: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ferkit", "camera", "--device", str(clip), "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # what `head -1` reads before it exits
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert json.loads(first)["frame"] == 0
    assert proc.returncode == EXIT_STDOUT_CLOSED == 141, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
