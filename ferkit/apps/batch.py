"""Building blocks of batch analysis, shared by the local ``ferkit analyze`` loop and the Ray engine.

* :func:`analyze_input` is the per-image work of ``ferkit analyze`` (read the file, run
  :meth:`Recognizer.analyze <ferkit.core.recognizer.Recognizer.analyze>`); the local loop and every
  Ray worker call it, so there is one pipeline whichever engine runs it.
* :func:`list_inputs` expands local files, folders and globs (as ``ferkit analyze`` does) and
  object-store URIs (``s3://``, ``gs://``, ``hdfs://`` … through :mod:`pyarrow.fs`).
* :class:`ResultStore` is the restartable, exactly-once result store of a distributed run: each
  finished batch is committed as one part file (written to a temporary name, fsynced, renamed),
  a rerun skips every input a committed part holds, and :meth:`ResultStore.merge` writes one
  record per input, in input order, de-duplicated by input key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.core.files import read_bounded
from ferkit.core.images import IMAGE_SUFFIXES, decode_image, find_images, max_file_bytes, read_image
from ferkit.core.labels import EMOTIONS
from ferkit.core.results import Analysis
from ferkit.core.writers import ensure_writable_dir
from ferkit.errors import ConfigError, ImageError, ImageTooLargeError, OutputError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
VIDEO_INPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                        ".3gp", ".mts")
STORE_DIR = ".ferkit"
STORE_VERSION = 1


# ---------------------------------------------------------------- inputs

def is_uri(text: str | Path) -> bool:
    """True for ``scheme://…`` inputs other than ``file://`` (those are local paths)."""
    s = str(text)
    return bool(_URI.match(s)) and not s.startswith("file://")


@dataclass(frozen=True)
class InputItem:
    """One input of a batch run.

    Attributes:
        key: identity used for resuming and de-duplication: the absolute path, or the URI.
        source: the name written into the record, exactly as ``ferkit analyze`` writes it.
    """

    key: str
    source: str


@lru_cache(maxsize=32)
def _filesystem(root: str) -> Any:
    """pyarrow filesystem for ``scheme://bucket`` (cached: creating an S3 client costs a round trip)."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root)[0]


def _split_uri(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow import fs
    except ImportError:
        raise ImageError(f"{uri}: reading URIs needs pyarrow: pip install 'ferkit[ray]'") from None
    scheme, rest = uri.split("://", 1)
    root = f"{scheme}://{rest.split('/', 1)[0]}"
    try:
        return _filesystem(root), fs.FileSystem.from_uri(uri)[1]
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ValueError … depending on the scheme
        raise ImageError(f"{uri}: cannot open this location ({e})") from None


def list_uri(uri: str) -> tuple[list[str], str | None]:
    """Image URIs under ``uri`` (a file or a prefix, recursive); (uris, error line or None)."""
    try:
        filesystem, path = _split_uri(uri)
        from pyarrow import fs

        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return [uri], None
        if info.type != fs.FileType.Directory:
            return [], f"{uri}: no such file or folder"
        scheme = uri.split("://", 1)[0]
        found = sorted(f"{scheme}://{i.path}" for i in filesystem.get_file_info(fs.FileSelector(path, recursive=True))
                       if i.type == fs.FileType.File and Path(i.path).suffix.lower() in IMAGE_SUFFIXES)
    except (ImageError, OSError) as e:
        return [], str(e) if isinstance(e, ImageError) else f"{uri}: cannot list ({e})"
    return found, None if found else f"{uri}: folder contains no images ({', '.join(IMAGE_SUFFIXES)})"


def list_inputs(paths: Iterable[str | Path]) -> tuple[list[InputItem], list[str]]:
    """Expand inputs the way ``ferkit analyze`` does, plus URIs; duplicates are kept once.

    Returns (inputs in order, error lines for arguments that matched nothing).
    """
    items: list[InputItem] = []
    errors: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        raw = str(raw)
        if raw.startswith("file://"):
            raw = raw[len("file://"):]
        if is_uri(raw):
            found, error = list_uri(raw)
            pairs = [(u, u) for u in found]
        else:
            files, errs = find_images([raw])
            error = errs[0] if errs else None
            pairs = [(os.path.abspath(f), str(f)) for f in files]
        if error:
            errors.append(error)
        for key, source in pairs:
            if key not in seen:
                seen.add(key)
                items.append(InputItem(key, source))
    return items, errors


def find_videos(paths: Iterable[str | Path]) -> tuple[list[InputItem], list[str]]:
    """Video files from files, folders (recursive, by suffix) and globs; (inputs, error lines)."""
    import glob

    items: list[InputItem] = []
    errors: list[str] = []
    seen: set[str] = set()
    for raw in map(str, paths):
        p = Path(raw)
        if is_uri(raw):
            errors.append(f"{raw}: videos are read by OpenCV from files; copy or mount them first")
            continue
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_INPUT_SUFFIXES)
        elif p.exists():
            files = [p]
        else:
            files = sorted(Path(f) for f in glob.glob(raw, recursive=True) if Path(f).is_file())
        if not files:
            errors.append(f"{raw}: " + ("no such file or folder" if not p.is_dir() else
                                        f"folder contains no videos ({', '.join(VIDEO_INPUT_SUFFIXES)})"))
        for f in files:
            key = os.path.abspath(f)
            if key not in seen:
                seen.add(key)
                items.append(InputItem(key, str(f)))
    return items, errors


def video_targets(items: list[InputItem], out_dir: Path, write_video: bool) -> dict[str, dict]:
    """Annotated video and results folder per input: ``OUT/<stem>…``, or ``OUT/<stem>_<k>/`` for a repeated stem."""
    from collections import Counter

    stems = [Path(i.source).stem for i in items]
    count = Counter(stems)
    targets: dict[str, dict] = {}
    used: set[str] = set()
    for item, stem in zip(items, stems):
        folder = out_dir
        if count[stem] > 1:
            k = 1
            while f"{stem}_{k}" in used:
                k += 1
            used.add(f"{stem}_{k}")
            folder = out_dir / f"{stem}_{k}"
        targets[item.key] = {"video": str(folder / f"{stem}.annotated.mp4") if write_video else None,
                             "results": str(folder)}
    return targets


def read_input(source: str | Path, max_pixels: int) -> np.ndarray:
    """Read one image as BGR: a local path through :func:`ferkit.core.images.read_image`, a URI through pyarrow."""
    if not is_uri(source):
        return read_image(source, max_pixels)
    uri = str(source)
    filesystem, path = _split_uri(uri)
    try:
        with filesystem.open_input_stream(path) as fh:
            data = read_bounded(fh, max_file_bytes(max_pixels), uri, ImageTooLargeError)
    except (OSError, ValueError) as e:
        raise ImageError(f"{uri}: cannot read ({e})") from None
    return decode_image(data, uri, max_pixels)


def analyze_input(recognizer: Any, source: str | Path, read_from: str | None = None) -> tuple[np.ndarray, Analysis]:
    """The per-image work of ``ferkit analyze``: read ``source`` and analyse it.

    Both engines call this (the local loop in :mod:`ferkit.apps.cli` and the Ray workers in
    :mod:`ferkit.apps.distributed`), so their records are the same. ``read_from``: where to read the
    file when ``source`` (the name recorded) does not resolve here, e.g. its absolute path.

    Returns:
        (BGR image, analysis with ``source=str(source)``).

    Raises:
        ferkit.errors.ImageError: the input cannot be read as an image.
    """
    image = read_input(read_from or source, recognizer.max_pixels)
    return image, recognizer.analyze(image, source=str(source))


def error_record(source: str, message: str) -> dict:
    """Record of an input that could not be analysed: its name and the reason (the CLI's error line)."""
    return {"source": source, "error": message}


def is_error_record(record_json: str) -> bool:
    """Whether a record's JSON text is an :func:`error_record`.

    Exact for ``json.dumps`` output: an ``"error"`` key is written as ``"error": `` and a quote inside
    a string value is escaped (``\\"``), so only the error record's own key matches.
    """
    return '"error": ' in record_json


def batch_id(keys: list[str]) -> str:
    """Deterministic id of a batch (same inputs → same id), so a retried batch replaces itself."""
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:20]


# ---------------------------------------------------------------- result store

def part_line(key: str, record_json: str) -> str:
    """One line of a part file: the JSON-encoded key, a tab, the record exactly as written to results."""
    return json.dumps(key) + "\t" + record_json


def _split_line(line: str) -> tuple[str, str]:
    key, record = line.rstrip("\n").split("\t", 1)  # a JSON string holds no raw tab: the first one separates
    return json.loads(key), record


class ResultStore:
    """Exactly-once, restartable store of one output folder's results.

    Layout: ``OUT/.ferkit/<kind>/settings.json`` (the settings the results were made with; a rerun
    with other settings is refused) and ``OUT/.ferkit/<kind>/parts/part-<batch id>.jsonl``: a header
    line ``{"batch": id, "keys": [...]}`` then one :func:`part_line` per input. A part appears
    only complete (temporary file, fsync, atomic rename); a retried batch has the same id and
    replaces its part, and :meth:`merge` de-duplicates by key, so every input is there once.
    """

    def __init__(self, out_dir: str | Path, kind: str, settings: dict):
        self.out_dir = ensure_writable_dir(out_dir)
        self.dir = self.out_dir / STORE_DIR / kind
        self.parts = self.dir / "parts"
        self.settings = {"store_version": STORE_VERSION, "kind": kind, **settings}
        self._check_settings()

    def _check_settings(self) -> None:
        path = self.dir / "settings.json"
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            if path.exists():
                old = json.loads(path.read_text())
                if old != self.settings:
                    diff = ", ".join(f"{k} {old.get(k)!r} → {v!r}" for k, v in self.settings.items()
                                     if old.get(k) != v)
                    raise OutputError(f"{self.out_dir}: holds results made with other settings ({diff}); "
                                      f"use another output folder, or delete {self.dir} to start over")
            else:
                _atomic_write(path, json.dumps(self.settings, indent=2))
        except OSError as e:
            raise OutputError(f"{self.dir}: cannot use the result store ({e.strerror or e})") from None

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.jsonl"))

    def _header(self, part: Path) -> dict:
        with open(part) as fh:
            return json.loads(fh.readline())

    def done_keys(self) -> set[str]:
        """Keys of every input a committed part holds (read from the parts' header lines)."""
        done: set[str] = set()
        for part in self.part_files():
            done.update(self._header(part)["keys"])
        return done

    def commit(self, batch: str, keys: list[str], lines: list[str]) -> Path:
        """Write one finished batch atomically; ``lines`` are :func:`part_line` strings, one per key."""
        got = [_split_line(line)[0] for line in lines]
        if sorted(got) != sorted(keys):
            raise OutputError(f"batch {batch}: worker returned {len(got)} records for {len(keys)} inputs")
        path = self.parts / f"part-{batch}.jsonl"
        text = json.dumps({"batch": batch, "keys": keys}) + "\n" + "".join(line + "\n" for line in lines)
        try:
            _atomic_write(path, text)
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        return path

    def records(self, keys: list[str]) -> Iterator[tuple[str, str]]:
        """(key, record JSON) for each of ``keys`` a part holds, in the order of ``keys``, each once.

        Two passes, memory O(len(keys)) whatever the records weigh: an index of where each key's
        first line is (part, byte offset), then the lines in key order (parts stay open a while:
        consecutive keys mostly sit in the same part).
        """
        position = {k: i for i, k in enumerate(keys)}
        where = np.full(len(keys), -1, np.int64)
        offset = np.zeros(len(keys), np.int64)
        parts = self.part_files()
        for n, part in enumerate(parts):
            with open(part, "rb") as fh:
                at = len(fh.readline())
                for line in fh:
                    i = position.get(json.loads(line.split(b"\t", 1)[0]))
                    if i is not None and where[i] < 0:
                        where[i], offset[i] = n, at
                    at += len(line)
        handles: OrderedDict[int, Any] = OrderedDict()
        try:
            for i in np.flatnonzero(where >= 0):
                n = int(where[i])
                if n not in handles:
                    if len(handles) >= 32:
                        handles.popitem(last=False)[1].close()
                    handles[n] = open(parts[n], "rb")
                handles.move_to_end(n)
                fh = handles[n]
                fh.seek(int(offset[i]))
                yield keys[i], fh.readline().decode().rstrip("\n").split("\t", 1)[1]
        finally:
            for fh in handles.values():
                fh.close()

    def merge(self, keys: list[str], fmt: str = "jsonl", name: str = "results") -> tuple[Path, int, int]:
        """Write ``OUT/<name>.<fmt>`` (jsonl or parquet) from the parts, atomically.

        Returns (path, records written, error records among them).
        """
        path = self.out_dir / f"{name}.{fmt}"
        counts = [0, 0]

        def stream() -> Iterator[str]:
            for _, record in self.records(keys):
                counts[0] += 1
                counts[1] += is_error_record(record)
                yield record

        try:
            if fmt == "jsonl":
                _atomic_write(path, stream(), lines=True)
            elif fmt == "parquet":
                write_parquet((json.loads(r) for r in stream()), path)
            else:
                raise ConfigError(f"unknown results format {fmt!r}; use jsonl or parquet")
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        return path, counts[0], counts[1]


def _atomic_write(path: Path, content: str | Iterable[str], lines: bool = False) -> None:
    """Write to a temporary file beside ``path``, fsync it, rename it over ``path``: readers never see half.

    The folder is not fsynced: after a power cut a rename may be lost, which only means that batch
    is analysed again — never a half part or a duplicate (and it costs ~40 % of the commit rate).
    """
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with open(tmp, "w") as fh:
            if isinstance(content, str):
                fh.write(content)
            else:
                for chunk in content:
                    fh.write(chunk + "\n" if lines else chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------- Parquet

def parquet_schema() -> Any:
    """Arrow schema of a photo record: the fields of :meth:`Analysis.to_dict` plus ``error``."""
    import pyarrow as pa

    quality = pa.struct([("readable", pa.bool_()), ("reason", pa.string()), ("face_size", pa.float64()),
                         ("sharpness", pa.float64()), ("yaw", pa.float64()), ("score", pa.float64())])
    face = pa.struct([
        ("box", pa.list_(pa.float64())), ("score", pa.float64()), ("landmarks", pa.list_(pa.list_(pa.float64()))),
        ("readable", pa.bool_()), ("reason", pa.string()), ("quality", quality), ("emotion", pa.string()),
        ("label", pa.string()), ("confidence", pa.float64()),
        ("probabilities", pa.struct([(e, pa.float64()) for e in EMOTIONS])),
    ])
    return pa.schema([
        ("source", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("model", pa.string()),
        ("detector", pa.string()), ("emotions", pa.list_(pa.string())), ("faces", pa.list_(face)),
        ("timings_ms", pa.map_(pa.string(), pa.float64())), ("error", pa.string()),
    ])


def write_parquet(records: Iterable[dict], path: str | Path, row_group: int = 10_000) -> int:
    """Write photo records (JSON-ready dicts) to Parquet with :func:`parquet_schema`; returns the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    names = set(schema.names)
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(records, row_group):
                extra = {k for r in chunk for k in r} - names
                if extra:  # fail loudly rather than drop fields the JSON Lines file would have
                    raise OutputError(f"{path}: record fields {sorted(extra)} are not in the Parquet schema")
                rows = [{**r, "timings_ms": list(r.get("timings_ms", {}).items()) if "timings_ms" in r else None}
                        for r in chunk]
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                n += len(chunk)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def read_parquet_records(path: str | Path) -> list[dict]:
    """Records of a :func:`write_parquet` file as the JSON Lines dicts (absent fields dropped)."""
    import pyarrow.parquet as pq

    out = []
    for row in pq.read_table(path).to_pylist():
        if row.get("error") is not None:
            out.append({"source": row["source"], "error": row["error"]})
            continue
        row.pop("error", None)
        row["timings_ms"] = dict(row["timings_ms"] or [])
        out.append(row)
    return out


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive lists of at most ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]
