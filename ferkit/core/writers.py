"""Result writers: JSON Lines / CSV files and printed lines, separate from the pipeline.

Writers flush after every record so an interrupted batch keeps everything
already analysed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ferkit.core.labels import EMOTIONS, REASONS
from ferkit.core.results import Analysis, Face
from ferkit.errors import ConfigError, OutputError

CSV_COLUMNS = ["source", "face", "x", "y", "w", "h", "score", "readable", "reason", "emotion", "confidence",
               *EMOTIONS]


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check a file can be written there."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".ferkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{p}: output folder is not writable ({e.strerror or e})") from None
    return p


def face_row(source: str | None, index: int, face: Face) -> dict:
    """One CSV row for one face (probabilities empty when unreadable)."""
    x, y, w, h = face.box
    row = {"source": source, "face": index, "x": round(x, 1), "y": round(y, 1), "w": round(w, 1),
           "h": round(h, 1), "score": round(face.score, 4), "readable": face.readable,
           "reason": face.quality.reason or "", "emotion": face.emotion or "",
           "confidence": "" if face.confidence is None else round(face.confidence, 4)}
    for e, p in zip(EMOTIONS, face.probabilities if face.probabilities is not None else [""] * len(EMOTIONS)):
        row[e] = p if p == "" else round(float(p), 4)
    return row


#: Where results go when no output folder is named (``ferkit analyze``, ``ferkit video``, the Ray engine).
DEFAULT_OUTPUT = "ferkit_results"

#: Human result lines per label language: (readable, unreadable) templates.
LINE_TEMPLATES: dict[str, tuple[str, str]] = {
    "en": ("{source} face {index}: {label} {confidence:.2f}", "{source} face {index}: unreadable ({reason})"),
    # the tutorial's sentence: 识别第1个人脸的表情是SAD ("the expression of face 1 is ...")
    "zh": ("{source} 识别第{index}个人脸的表情是{label} {confidence:.2f}",
           "{source} 第{index}个人脸无法识别（{reason}）"),
}


def face_line(source: str, index: int, face: Face) -> str:
    """Human line: ``photo.jpg face 1: happy 0.87`` or ``photo.jpg face 2: unreadable (blurry)``,
    in the face's label language."""
    readable, unreadable = LINE_TEMPLATES.get(face.lang, LINE_TEMPLATES["en"])
    if face.probabilities is None:
        reason = face.quality.reason  # English lines keep the JSON's key (too_small), others say it in words
        if face.lang != "en":
            reason = REASONS[face.lang].get(reason or "", reason)
        return unreadable.format(source=source, index=index, reason=reason)
    return readable.format(source=source, index=index, label=face.label, confidence=face.confidence)


class ResultWriter:
    """Appends analyses to ``results.jsonl`` (one image per line) or ``results.csv`` (one face per row)."""

    def __init__(self, out_dir: str | Path, fmt: str = "jsonl"):
        if fmt not in ("jsonl", "csv"):
            raise ConfigError(f"unknown results format {fmt!r}; use jsonl or csv")
        self.fmt = fmt
        self.path = ensure_writable_dir(out_dir) / f"results.{fmt}"
        try:
            self._fh = open(self.path, "w", newline="")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._csv = csv.DictWriter(self._fh, fieldnames=CSV_COLUMNS) if fmt == "csv" else None
        if self._csv:
            self._csv.writeheader()

    def write(self, analysis: Analysis) -> None:
        try:
            if self._csv is not None:
                for i, face in enumerate(analysis.faces, 1):
                    self._csv.writerow(face_row(analysis.source, i, face))
            else:
                self._fh.write(json.dumps(analysis.to_dict()) + "\n")
            self._fh.flush()
        except OSError as e:
            raise OutputError(f"{self.path}: write failed ({e.strerror or e})") from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def annotated_path(out_dir: Path, source: str | Path, used: set[str]) -> Path:
    """Output path for an annotated copy; unique even when inputs share a file name."""
    src = Path(source)
    stem, suffix = src.stem, src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png") else ".jpg"
    name = f"{stem}{suffix}"
    k = 1
    while name in used:
        name = f"{stem}_{k}{suffix}"
        k += 1
    used.add(name)
    return out_dir / name
