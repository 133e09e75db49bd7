"""Ray engine: the same analysis as ``ferkit analyze`` / ``ferkit video`` spread over a Ray cluster.

Needs ``pip install 'ferkit[ray]'``. Photos: the inputs become a Ray dataset of batches; a pool of
actors (one CPU each) maps it, each actor loading the :class:`~ferkit.core.recognizer.Recognizer` once
and running every image through :func:`ferkit.apps.batch.analyze_input` — the per-image function of the
local loop — and, when annotated images are asked for, the same drawing. The driver commits each
returned batch to a :class:`~ferkit.apps.batch.ResultStore` and finally merges one record per input
(``Analysis.to_dict()``, or ``{"source", "error"}``) into ``results.jsonl`` or ``results.parquet``.
Videos: one task per video, each calling :func:`ferkit.apps.video.process_video`.

Exactly once: a batch whose worker is killed was never returned, so never committed; Ray retries
it on a restarted actor, and the driver commits each batch id once. A batch whose worker dies
:data:`MAX_ATTEMPTS` times is split into single inputs, and an input that still kills its worker
gets an error record. A rerun into the same folder skips every committed input. See docs/scale.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferkit.core.settings import Settings
from ferkit.core.writers import DEFAULT_OUTPUT
from ferkit.errors import ConfigError, InputError

DEFAULT_BATCH_SIZE = 16
#: Tries of one batch (first run plus retries on a restarted actor) before it is split up.
MAX_ATTEMPTS = 3


@dataclass
class RunSummary:
    """Outcome of :func:`analyze_photos` / :func:`analyze_videos`.

    Attributes:
        inputs: distinct inputs found; ``skipped`` of them were done by an earlier run into the same
            folder, ``analysed`` by this one; ``failed`` records (earlier or now) are errors; ``missing``
            inputs have no record yet (the run was interrupted: rerun to finish).
        results: the merged results file; ``errors``: error lines of this run (listing and inputs);
        ``interrupted``: stopped by Ctrl-C (what was committed is merged; rerun to finish).
    """

    inputs: int
    skipped: int
    analysed: int
    failed: int
    missing: int
    results: str
    elapsed_s: float
    workers: int
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def per_second(self) -> float:
        """Inputs analysed per second of this run (start-up included)."""
        return self.analysed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "per_second": round(self.per_second, 3)}


# ---------------------------------------------------------------- workers (run inside Ray actors)

def _build_recognizer(settings: dict) -> Any:
    """The Recognizer that ``settings`` (:meth:`Settings.to_dict`, sent by the driver) describe."""
    from ferkit.core.settings import Settings

    return Settings(**settings).build()


class _Worker:
    """Base of the actors: moves to the driver's folder, then maps batches of inputs to part lines."""

    def __init__(self, cwd: str):
        import cv2

        cv2.setNumThreads(1)
        try:  # same folder as the driver (same machine or shared file system): relative names resolve alike
            os.chdir(cwd)
            self.same_cwd = True
        except OSError:
            self.same_cwd = False

    def _one(self, item: dict) -> tuple[str, str | None]:
        """(record JSON, error line or None) for one input."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from ferkit.apps.batch import error_record, part_line

        out: dict[str, list[str]] = {"batch": [], "lines": [], "errors": []}
        for bid, items in zip(batch["batch"], batch["items"]):
            lines, errors = [], []
            for item in json.loads(str(items)):
                try:
                    record, error = self._one(item)
                except Exception as e:  # a bug must not stop a million-input run; the reason is kept
                    error = f"{item['source']}: internal error ({type(e).__name__}: {e})"
                    record = json.dumps(error_record(item["source"], error))
                lines.append(part_line(item["key"], record))
                if error:
                    errors.append(error)
            out["batch"].append(str(bid))
            out["lines"].append("\n".join(lines))
            out["errors"].append(json.dumps(errors))
        return out


class PhotoWorker(_Worker):
    """Ray actor for photos: one Recognizer, :func:`ferkit.apps.batch.analyze_input` per image."""

    def __init__(self, settings: dict, cwd: str, out_dir: str, bars: bool = False):
        super().__init__(cwd)
        self.rec = _build_recognizer(settings)
        self.out_dir = Path(out_dir)
        self.bars = bars

    def _one(self, item: dict) -> tuple[str, str | None]:
        from ferkit.apps.batch import analyze_input, error_record
        from ferkit.core.drawing import draw_analysis
        from ferkit.core.plots import save_png
        from ferkit.errors import FerkitError

        source = item["source"]
        try:
            image, result = analyze_input(self.rec, source, None if self.same_cwd else item["key"])
        except FerkitError as e:
            return json.dumps(error_record(source, str(e))), str(e)
        error = None
        if item.get("image"):
            try:
                save_png(self.out_dir / item["image"], draw_analysis(image, result, bars=self.bars))
            except FerkitError as e:
                error = str(e)
        return json.dumps(result.to_dict()), error


class VideoWorker(_Worker):
    """Ray actor for videos: :func:`ferkit.apps.video.process_video` per file, with a Recognizer set up for video.

    With ``per_video_size`` the detector's input follows each video's frame size
    (:func:`~ferkit.core.settings.video_detect_size`), as ``ferkit video`` does; the Recognizers of the
    last few sizes are kept, so a run over many videos of a few sizes loads the models a few times.
    """

    KEEP = 4  # recognizers kept, one per detector input size (a few MB each)

    def __init__(self, settings: dict, cwd: str, options: dict, write_video: bool, per_video_size: bool = False):
        super().__init__(cwd)
        self.settings = settings
        self.per_video_size = per_video_size
        self._recs: dict[int | None, Any] = {}
        self.options = options
        self.write_video = write_video

    def _recognizer(self, width: int, height: int) -> Any:
        """The Recognizer for a video of this frame size (process_video calls it once it has read a frame)."""
        from ferkit.core.settings import video_detect_size

        size = video_detect_size(width, height) if self.per_video_size else None
        if size not in self._recs:
            if len(self._recs) >= self.KEEP:
                self._recs.pop(next(iter(self._recs)))
            self._recs[size] = _build_recognizer({**self.settings, **({"detect_size": size} if size else {})})
        return self._recs[size]

    def _one(self, item: dict) -> tuple[str, str | None]:
        from ferkit.apps.batch import error_record
        from ferkit.apps.video import VideoOptions, process_video
        from ferkit.errors import FerkitError

        source = item["source"] if self.same_cwd else item["key"]
        try:
            report = process_video(source, item["video"], item["results"], recognizer=self._recognizer,
                                   options=VideoOptions(**self.options), write_video=self.write_video,
                                   progress=False)
        except FerkitError as e:
            return json.dumps(error_record(item["source"], str(e))), str(e)
        return json.dumps(report.to_dict()), report.message()


# ---------------------------------------------------------------- driver

def connect(address: str | None = None, workers: int | None = None) -> tuple[int, bool]:
    """Join (or start) Ray; returns (worker actors to use, whether this call initialised Ray).

    Raises:
        ferkit.errors.ConfigError: Ray is not installed, or ``workers`` is more than the cluster's CPUs.
    """
    try:
        import ray
    except ImportError:

        raise ConfigError("--engine ray needs Ray: pip install 'ferkit[ray]'") from None

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    initialised = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **kw)
        initialised = True
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers is not None and workers > cpus:
        if initialised:
            ray.shutdown()
        raise ConfigError(f"--workers {workers}: the Ray cluster has only {cpus} CPU(s) (one per worker)")
    return workers or max(cpus, 1), initialised


def _payload(item: Any, extra: dict | None) -> dict:
    return {"key": item.key, "source": item.source, **(extra or {})}


def run_batches(pending: list, store: Any, worker: type, ctor: dict, workers: int, batch_size: int,
                extra: dict[str, dict] | None = None, on_commit: Any = None) -> None:
    """Map ``pending`` inputs over an actor pool and commit each returned batch to ``store``.

    A batch whose actor dies :data:`MAX_ATTEMPTS` times is skipped by Ray Data; its inputs are
    retried one per task, and an input whose actor still dies gets an error record.
    ``on_commit(lines, errors)`` is called after each commit (progress, printing).
    """
    import ray.data

    from ferkit.apps.batch import batch_id, chunked, error_record, part_line

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # ferkit draws its own bar; failures still show
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = -1  # a poison batch must not stop the run: it is split up below
    todo, size = list(pending), batch_size
    while todo:
        batches = chunked(todo, size)
        expected = {batch_id([i.key for i in b]): [i.key for i in b] for b in batches}
        rows = [{"batch": bid, "items": json.dumps([_payload(i, (extra or {}).get(i.key)) for i in b])}
                for bid, b in zip(expected, batches)]
        with warnings.catch_warnings():  # retries have no named parameter in Ray 2.60 (hence ray<2.64)
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                worker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
                num_cpus=1, fn_constructor_kwargs=ctor, max_restarts=-1, max_task_retries=MAX_ATTEMPTS - 1)
        committed: set[str] = set()
        for row in ds.iter_rows():
            bid = str(row["batch"])
            if bid in committed or bid not in expected:  # a duplicate delivery replaces nothing
                continue
            lines = str(row["lines"]).split("\n") if row["lines"] else []
            store.commit(bid, expected[bid], lines)
            committed.add(bid)
            if on_commit is not None:
                on_commit(lines, json.loads(str(row["errors"])))
        todo = [i for b, bid in zip(batches, expected) if bid not in committed for i in b]
        if size == 1:
            break
        size = 1
    for item in todo:
        message = (f"{item.source}: the worker process died {MAX_ATTEMPTS} times analysing this input "
                   "(crash or out of memory); see the Ray worker logs")
        line = part_line(item.key, json.dumps(error_record(item.source, message)))
        store.commit(batch_id([item.key]), [item.key], [line])
        if on_commit is not None:
            on_commit([line], [message])


def _progress(total: int, done: int, unit: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="analysing (ray)", unit=unit, file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True, smoothing=0.05)


def _run(items: list, store: Any, worker: type, ctor: dict, *, address: str | None, workers: int | None,
         batch_size: int, extra: dict | None, unit: str, progress: bool, on_error: Any, on_record: Any) -> tuple:
    """Skip what ``store`` holds, run the rest on Ray.

    Returns (skipped, analysed, workers used, error lines, interrupted). Ctrl-C stops the run with
    every committed batch kept (the caller still merges them; a rerun finishes the rest).
    """
    from ferkit.apps.batch import is_error_record

    done = store.done_keys()
    pending = [i for i in items if i.key not in done]
    errors: list[str] = []
    if not pending:
        return len(items), 0, 0, errors, False
    n_workers, initialised = connect(address, workers)
    bar = _progress(len(items), len(items) - len(pending), unit, progress)
    analysed = [0]

    def on_commit(lines: list[str], errs: list[str]) -> None:
        bar.update(len(lines))
        analysed[0] += len(lines)
        for e in errs:
            errors.append(e)
            if on_error is not None:
                bar.clear()
                on_error(e)
        if on_record is not None:
            for line in lines:
                record = line.split("\t", 1)[1]
                if not is_error_record(record):
                    on_record(record)

    interrupted = False
    try:
        run_batches(pending, store, worker, ctor, n_workers, batch_size, extra, on_commit)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if initialised:
            import ray

            ray.shutdown()  # this driver's actors go with it
    return len(items) - len(pending), analysed[0], n_workers, errors, interrupted


def _summary(store: Any, items: list, fmt: str, name: str, t0: float, errors: list[str], skipped: int,
             analysed: int, n_workers: int, run_errors: list[str], interrupted: bool) -> RunSummary:
    """Merge the store into ``OUT/<name>.<fmt>`` and sum the run up."""
    path, written, failed = store.merge([i.key for i in items], fmt, name=name)
    return RunSummary(len(items), skipped, analysed, failed, len(items) - written, str(path),
                      time.perf_counter() - t0, n_workers, errors + run_errors, interrupted)


def analyze_photos(paths: list[str | Path], out_dir: str | Path = DEFAULT_OUTPUT, *, address: str | None = None,
                   workers: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, settings: Settings | None = None,
                   images: bool = True,
                   bars: bool = False, fmt: str = "jsonl", progress: bool = True, on_error: Any = None,
                   on_record: Any = None) -> RunSummary:
    """Analyse photos (files, folders, globs, ``s3://``/``gs://`` URIs) on Ray; resumable, exactly once.

    Writes ``out_dir/results.jsonl`` (or ``.parquet``): one record per distinct input, in input
    order — ``Analysis.to_dict()`` as ``ferkit analyze`` writes it, or ``{"source", "error"}`` — and,
    with ``images``, the annotated copies under the names ``ferkit analyze`` gives them. ``out_dir``
    must be visible to every worker (a shared file system) when the cluster has several machines.

    Args:
        settings: the pipeline of every worker (default: the ``worker`` profile, one thread each).
        address: Ray cluster (None: ``$RAY_ADDRESS``, else a Ray started here for this call).
        workers: actors, one CPU each (None: all CPUs of the cluster).
        on_error: called with each error line as it happens; on_record: with each record's JSON.
    """
    from ferkit.apps.batch import ResultStore, list_inputs
    from ferkit.core.writers import annotated_path

    if fmt not in ("jsonl", "parquet"):
        raise ConfigError(f"--engine ray writes jsonl or parquet, not {fmt!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    items, errors = _found(list_inputs(paths), on_error, "nothing to analyse")
    settings = _portable(settings or Settings.profile("worker"))
    store = ResultStore(out_dir, "photos", {**settings, "images": images, "bars": bars})
    used: set[str] = set()
    extra = {i.key: {"image": annotated_path(store.out_dir, i.source, used).name} for i in items} if images else None
    ctor = {"settings": settings, "cwd": os.getcwd(), "out_dir": str(store.out_dir.resolve()), "bars": bars}
    run = _run(items, store, PhotoWorker, ctor, address=address, workers=workers, batch_size=batch_size,
               extra=extra, unit="img", progress=progress, on_error=on_error, on_record=on_record)
    return _summary(store, items, fmt, "results", t0, errors, *run)


def analyze_videos(paths: list[str | Path], out_dir: str | Path = DEFAULT_OUTPUT, *, address: str | None = None,
                   workers: int | None = None, settings: Settings | None = None, options: Any = None,
                   write_video: bool = True, progress: bool = True, on_error: Any = None,
                   per_video_size: bool | None = None) -> RunSummary:
    """Run :func:`ferkit.apps.video.process_video` on every video, one Ray task per video; resumable, exactly once.

    Each video writes what ``ferkit video`` writes (annotated video, per-frame table, track plots,
    summary JSON) into ``out_dir``; ``out_dir/videos.jsonl`` gets one record per video: its summary
    (``VideoReport.to_dict()``) or ``{"source", "error"}``.

    Args:
        settings: the pipeline of every worker (default: the ``video`` profile with one thread, as each
            actor has one CPU).
        options: :class:`ferkit.apps.video.VideoOptions`.
        per_video_size: the detector's input follows each video's frame size, as with ``ferkit video``
            (:func:`~ferkit.core.settings.video_detect_size`), instead of ``settings.detect_size``;
            default: True when ``settings`` are not given.
    """
    from ferkit.apps.batch import ResultStore, find_videos, video_targets
    from ferkit.apps.video import VideoOptions

    t0 = time.perf_counter()
    options = options or VideoOptions()
    options.validate()
    items, errors = _found(find_videos(paths), on_error, "no videos to analyse")
    per_video_size = settings is None if per_video_size is None else per_video_size
    # one thread per inference: each actor has one CPU, and process_video decodes and encodes beside it
    settings = _portable(settings or Settings.profile("video", threads=1))
    if per_video_size:
        settings.pop("detect_size", None)  # each worker sets it per video; not part of the run's identity
    store = ResultStore(out_dir, "videos", {**settings, "options": asdict(options), "write_video": write_video,
                                            "per_video_size": per_video_size})
    extra = video_targets(items, store.out_dir.resolve(), write_video)
    for t in extra.values():
        Path(t["results"]).mkdir(parents=True, exist_ok=True)
    ctor = {"settings": settings, "cwd": os.getcwd(), "options": asdict(options), "write_video": write_video,
            "per_video_size": per_video_size}
    run = _run(items, store, VideoWorker, ctor, address=address, workers=workers, batch_size=1, extra=extra,
               unit="video", progress=progress, on_error=on_error, on_record=None)
    return _summary(store, items, "jsonl", "videos", t0, errors, *run)


def _found(found: tuple[list, list[str]], on_error: Any, nothing: str) -> tuple[list, list[str]]:
    """The inputs found and the error lines of those that cannot be read (reported as they are known).

    Raises:
        InputError: nothing to work on; the message lists the errors unless ``on_error`` has had them.
    """
    items, errors = found
    for e in errors if on_error is not None else ():
        on_error(e)
    if not items:
        raise InputError(nothing + ("" if on_error else "".join(f"; {e}" for e in errors)))
    return items, errors


def _portable(settings: Settings) -> dict:
    """``settings`` as plain values a worker elsewhere rebuilds the same pipeline from (model paths made absolute)."""
    if not isinstance(settings.detector, str):
        raise ConfigError("--engine ray needs a detector name: a detector object cannot be sent to the workers")
    if Path(settings.model).suffix.lower() == ".onnx":
        settings = settings.replace(model=os.path.abspath(settings.model))
    return settings.to_dict()
