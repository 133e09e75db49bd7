"""Per-track statistics and plots, the run's :class:`VideoReport` and its printed summary."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ferkit.core.labels import EMOTIONS


class _Series:
    """Bounded-resolution time series: at most ``2 * max_points`` points, halving resolution when full.

    Keeps the emotion-over-time plot of an hour-long track as cheap as that of a short one.
    """

    def __init__(self, max_points: int = 450):
        self.max_points = max_points
        self.step = 1
        self.times: list[float] = []
        self.values: list[np.ndarray] = []
        self._t = 0.0
        self._sum = np.zeros(len(EMOTIONS))
        self._n = 0
        self._k = 0

    def add(self, t: float, probs: np.ndarray | None) -> None:
        self._t += t
        self._k += 1
        if probs is not None:
            self._sum += probs
            self._n += 1
        if self._k >= self.step:
            self._flush_bin()

    def _flush_bin(self) -> None:
        if not self._k:
            return
        self.times.append(self._t / self._k)
        self.values.append(self._sum / self._n if self._n else np.full(len(EMOTIONS), np.nan))
        self._t, self._sum, self._n, self._k = 0.0, np.zeros(len(EMOTIONS)), 0, 0
        if len(self.times) >= 2 * self.max_points:
            t = np.asarray(self.times)
            v = np.asarray(self.values)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN pair is NaN, on purpose
                self.times = list((t[0::2] + t[1::2]) / 2)
                self.values = list(np.nanmean(np.stack([v[0::2], v[1::2]]), axis=0))
            self.step *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self._flush_bin()
        return np.asarray(self.times), np.asarray(self.values).reshape(-1, len(EMOTIONS))


@dataclass
class TrackSummary:
    """One track over the whole video."""

    track_id: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    duration_s: float
    frames: int  # frames on which the face was reported
    readable_frames: int
    dominant_emotion: str | None  # most frequent (smoothed) emotion over the readable frames
    emotion_share: dict[str, float]  # fraction of readable frames showing each emotion
    mean_probabilities: dict[str, float] | None
    plot: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start_s", "end_s", "duration_s"):
            d[k] = round(d[k], 3)
        d["emotion_share"] = {k: round(v, 4) for k, v in self.emotion_share.items()}
        if self.mean_probabilities is not None:
            d["mean_probabilities"] = {k: round(v, 4) for k, v in self.mean_probabilities.items()}
        return d


class _TrackLog:
    def __init__(self, track_id: int, frame: int):
        self.track_id = track_id
        self.first = frame
        self.last = frame
        self.frames = 0
        self.readable = 0
        self.counts = np.zeros(len(EMOTIONS), np.int64)
        self.prob_sum = np.zeros(len(EMOTIONS))
        self.series = _Series()

    def add(self, frame: int, fps: float, probs: np.ndarray | None) -> None:
        for missing in range(self.last + 1, frame):  # frames the face was hidden: a gap in the plot
            self.series.add(missing / fps, None)
        self.last = frame
        self.frames += 1
        if probs is not None:
            self.readable += 1
            self.counts[int(np.argmax(probs))] += 1
            self.prob_sum += probs
        self.series.add(frame / fps, probs)

    def summary(self, fps: float) -> TrackSummary:
        share = {e: (float(c) / self.readable if self.readable else 0.0) for e, c in zip(EMOTIONS, self.counts)}
        return TrackSummary(
            track_id=self.track_id, first_frame=self.first, last_frame=self.last, start_s=self.first / fps,
            end_s=self.last / fps, duration_s=(self.last - self.first + 1) / fps, frames=self.frames,
            readable_frames=self.readable,
            dominant_emotion=EMOTIONS[int(np.argmax(self.counts))] if self.readable else None,
            emotion_share=share,
            mean_probabilities={e: float(p) for e, p in zip(EMOTIONS, self.prob_sum / self.readable)}
            if self.readable else None)




@dataclass
class VideoReport:
    """Outcome of :func:`process_video`.

    ``status``: ``complete``; ``max_frames`` (stopped at the requested limit); ``interrupted`` (Ctrl-C;
    outputs are finalised up to there); ``truncated`` (the file ended early or is damaged —
    ``stopped_at_frame``/``stopped_at_s`` say where).
    """

    input: str
    status: str
    frames: int
    fps: float
    width: int
    height: int
    expected_frames: int
    video: str | None
    tables: list[str]
    summary: str | None
    tracks: list[TrackSummary]
    elapsed_s: float
    detector_runs: int
    classified_faces: int
    options: dict = field(default_factory=dict)
    fps_assumed: bool = False

    @property
    def processing_fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def stopped_at_frame(self) -> int:
        return self.frames

    @property
    def stopped_at_s(self) -> float:
        return self.frames / self.fps

    def message(self) -> str | None:
        """One-line explanation when the video was not processed to its end, else None."""
        if self.status == "truncated":
            return (f"{self.input}: video is truncated or damaged: decoding stopped at frame {self.frames} "
                    f"({self.stopped_at_s:.2f} s) of {self.expected_frames}; results up to there were written")
        if self.status == "interrupted":
            return f"{self.input}: interrupted at frame {self.frames} ({self.stopped_at_s:.2f} s); outputs finalised"
        return None

    def to_dict(self) -> dict:
        return {
            "input": self.input, "status": self.status, "message": self.message(), "frames": self.frames,
            "expected_frames": self.expected_frames or None, "fps": round(self.fps, 3),
            "fps_assumed": self.fps_assumed, "duration_s": round(self.frames / self.fps, 3),
            "width": self.width, "height": self.height, "video": self.video, "tables": self.tables,
            "summary": self.summary, "processing_fps": round(self.processing_fps, 2),
            "elapsed_s": round(self.elapsed_s, 2), "detector_runs": self.detector_runs,
            "classified_faces": self.classified_faces, "options": self.options, "emotions": list(EMOTIONS),
            "tracks": [t.to_dict() for t in self.tracks],
        }


def _save_track_plot(path: Path, log: _TrackLog, stem: str) -> Path:
    from ferkit.core.plots import save_png, timeline_image

    times, values = log.series.arrays()
    title = f"{stem}: track {log.track_id}, frames {log.first}-{log.last}, smoothed emotion probabilities"
    return save_png(path, timeline_image(times, {e: values[:, i] for i, e in enumerate(EMOTIONS)}, title))

def format_summary(report: VideoReport) -> list[str]:
    """Human-readable lines: one per track with its time span, dominant emotion and emotion shares."""
    lines = [f"{report.input}: {report.frames} frames, {report.frames / report.fps:.1f} s at {report.fps:g} fps"
             f"{' (fps unknown, assumed)' if report.fps_assumed else ''}; {len(report.tracks)} track(s); "
             f"processed at {report.processing_fps:.1f} frames/s"]
    for t in report.tracks:
        head = f"  track {t.track_id}: {t.start_s:.2f}-{t.end_s:.2f} s ({t.duration_s:.2f} s)"
        if t.dominant_emotion is None:
            lines.append(f"{head}, never readable")
            continue
        shares = ", ".join(f"{e} {v:.0%}" for e, v in sorted(t.emotion_share.items(), key=lambda kv: -kv[1]) if v > 0)
        lines.append(f"{head}, mostly {t.dominant_emotion} ({shares}); readable {t.readable_frames}/{t.frames} "
                     "frames")
    return lines

