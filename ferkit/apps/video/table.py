"""The per-frame, per-track results table (CSV and/or JSON Lines), written row by row."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any

from ferkit.apps.video.analyzer import FrameResult
from ferkit.core.labels import EMOTIONS
from ferkit.errors import OutputError

TABLE_COLUMNS = ["frame", "time_s", "track_id", "x", "y", "w", "h", "score", "detected", "classified", "readable",
                 "reason", "emotion", "confidence", *EMOTIONS, *(f"raw_{e}" for e in EMOTIONS)]


def _r(v: float, nd: int = 4) -> float:
    return round(float(v), nd)


class TrackTable:
    """Per-frame, per-track rows written as they come (CSV and/or JSON Lines), flushed about once a second.

    CSV columns: :data:`TABLE_COLUMNS` — the seven emotion columns hold the smoothed probabilities,
    ``raw_<emotion>`` the classifier's measurement on that frame before smoothing (with views in turn, the
    mean of this frame's view and the face's latest other view; empty where it did not run or the face
    was unreadable). JSON Lines holds the same fields with ``box``, ``probabilities`` and
    ``raw_probabilities`` nested.
    """

    def __init__(self, base: Path, fmt: str = "csv", flush_every: int = 30):
        self.paths: list[Path] = []
        self._csv_fh: IO[str] | None = None
        self._csv: Any = None
        self._jsonl: IO[str] | None = None
        self.flush_every = max(1, flush_every)
        self._since_flush = 0
        self.rows = 0
        try:
            if fmt in ("csv", "both"):
                p = base.with_name(base.name + ".tracks.csv")
                self._csv_fh = open(p, "w", newline="")
                self._csv = csv.writer(self._csv_fh)
                self._csv.writerow(TABLE_COLUMNS)
                self.paths.append(p)
            if fmt in ("jsonl", "both"):
                p = base.with_name(base.name + ".tracks.jsonl")
                self._jsonl = open(p, "w")
                self.paths.append(p)
        except OSError as e:
            self.close()
            raise OutputError(f"{e.filename}: cannot write the results table ({e.strerror or e})") from None

    def write(self, result: FrameResult, time_s: float) -> None:
        """Append one frame's rows."""
        try:
            for s in result.samples:
                f = s.face
                x, y, w, h = f.box
                probs = f.probabilities
                if self._csv is not None:
                    row = [result.index, _r(time_s), f.track_id, _r(x, 1), _r(y, 1), _r(w, 1), _r(h, 1),
                           _r(f.score), int(s.detected), int(s.classified), int(f.readable),
                           f.quality.reason or "", f.emotion or "",
                           "" if f.confidence is None else _r(f.confidence)]
                    row.extend([""] * 7 if probs is None else [_r(p) for p in probs])
                    row.extend([""] * 7 if s.raw is None else [_r(p) for p in s.raw])
                    self._csv.writerow(row)
                if self._jsonl is not None:
                    rec = {"frame": result.index, "time_s": _r(time_s), "track_id": f.track_id,
                           "box": [_r(x, 1), _r(y, 1), _r(w, 1), _r(h, 1)], "score": _r(f.score),
                           "detected": s.detected, "classified": s.classified, "readable": f.readable,
                           "reason": f.quality.reason, "emotion": f.emotion,
                           "confidence": None if f.confidence is None else _r(f.confidence),
                           "probabilities": None if probs is None else dict(zip(EMOTIONS, map(_r, probs))),
                           "raw_probabilities": None if s.raw is None else dict(zip(EMOTIONS, map(_r, s.raw)))}
                    self._jsonl.write(json.dumps(rec) + "\n")
                self.rows += 1
            self._since_flush += 1
            if self._since_flush >= self.flush_every:
                self.flush()
        except OSError as e:
            raise OutputError(f"{self.paths[0]}: write failed ({e.strerror or e})") from None

    def flush(self) -> None:
        self._since_flush = 0
        for fh in (self._csv_fh, self._jsonl):
            if fh is not None:
                fh.flush()

    def close(self) -> None:
        for fh in (self._csv_fh, self._jsonl):
            if fh is not None and not fh.closed:
                fh.close()

