"""`ferkit analyze ... --json | head -1`: no traceback, exit 141, the batch stops, the results file is whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ferkit.apps.cli import EXIT_STDOUT_CLOSED, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "astronauts.jpg"


@pytest.fixture()
def photos(tmp_path: Path) -> list[str]:
    small = cv2.resize(cv2.imread(str(EXAMPLE)), (320, 180))
    paths = []
    for i in range(30):
        p = tmp_path / f"p{i:02d}.jpg"
        cv2.imwrite(str(p), small)
        paths.append(str(p))
    return paths


def test_closed_stdout_stops_quietly(photos: list[str], tmp_path: Path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ferkit", "analyze", *photos, "--json", "--model", "fernet-m",
                             "--no-images", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # what `head -1` reads before it exits
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert json.loads(first)["source"] == photos[0]
    assert proc.returncode == EXIT_STDOUT_CLOSED == 141, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert 1 <= len(lines) < len(photos)  # the batch stopped; every line written is whole
    assert [json.loads(line)["source"] for line in lines] == photos[:len(lines)]


def test_closed_stdout_in_process(photos: list[str], tmp_path: Path, monkeypatch):
    class ClosesAfterOneLine:
        def __init__(self) -> None:
            self.lines = 0

        def write(self, s: str) -> int:
            if self.lines >= 1:
                raise BrokenPipeError(32, "Broken pipe")
            self.lines += s.count("\n")
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", ClosesAfterOneLine())
    code = main(["analyze", *photos[:3], "--model", "fernet-m", "--no-images", "-o", str(tmp_path / "r")])
    assert code == EXIT_STDOUT_CLOSED
